"""Golden models, compressors, the compiler and the command line."""
