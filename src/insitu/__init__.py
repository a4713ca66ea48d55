"""insitu: generator of memory-efficient DNN inference hardware.

Sub-packages, bottom to top: :mod:`insitu.gen` (numpy: formats, golden models, compressors,
compiler, importers), :mod:`insitu.rtl` (Amaranth components), :mod:`insitu.boards` (board
tops and synthesis), :mod:`insitu.sim` (cocotb testbenches and runners) and :mod:`insitu.cli`.

Python API for PyTorch users: ``insitu.from_torch(module, input_shape=(C, H, W))`` returns the
network as an :class:`insitu.gen.graph.Graph` (through ONNX export; PyTorch and onnx are
optional extras).
"""

__version__ = "0.1.0"

from .gen.zoo import from_torch  # noqa: E402

__all__ = ["from_torch", "__version__"]
