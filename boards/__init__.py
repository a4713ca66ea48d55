"""Board tops, synthesis runner and report parsing."""
