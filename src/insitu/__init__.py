"""insitu: generator of memory-efficient DNN inference hardware.

Sub-packages: :mod:`insitu.rtl` (Amaranth components), :mod:`insitu.gen` (golden models,
compressors, compiler, CLI), :mod:`insitu.sim` (cocotb testbenches and runner helpers),
:mod:`insitu.boards` (board tops and synthesis).
"""

__version__ = "0.1.0"
