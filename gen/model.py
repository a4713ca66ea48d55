"""Model files: the float layers a compressor or the compiler starts from.

``.npz`` format: for each layer, in order, ``<layer>.weight`` and optionally ``<layer>.bias``,
``<layer>.kind`` (a string: ``linear``, ``conv3x3`` or ``conv1x1``), ``<layer>.pad`` (Conv2d
zero padding, 0 or 1; default 0 as in PyTorch) and ``<layer>.relu`` (a ReLU follows; default:
after every layer but the last).  Without a kind the weight's shape decides: 2-D
``[out, in]`` is Linear, 4-D ``[out, in, k, k]`` is Conv2d.  A Flatten between a Conv2d and a
Linear layer is implied (``[C, H, W]`` order, as ``torch.flatten``).
Anything else is rejected up front with the layer's name.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .layer import KINDS, Layer, ModelError, check_layer, kind_of
from .lower import lower
from .network import forward_float
from .onnx_import import load_onnx
from .plan import resolve
from .quantise import float_layers
from .torch_import import load_torch

__all__ = ["ModelError", "KINDS", "Layer", "check_layer", "load_model", "load_network",
           "save_model", "float_reference", "graph_network"]


def load_network(path) -> tuple[list[Layer], tuple | None]:
    """Engine layers of a model file and its input shape when the file carries one (ONNX:
    the graph lowered by ``gen.lower``; ``.npz`` / ``.pt``: ``None``)."""
    path = Path(path)
    if path.suffix == ".onnx":
        if not path.exists():
            raise ModelError(f"Model file '{path}' does not exist")
        return graph_network(load_onnx(path))
    return load_model(path), None


def graph_network(graph) -> tuple[list[Layer], tuple]:
    """Engine layers of an imported graph and its ``(C, H, W)`` input shape (a flat input is
    ``(features, 1, 1)``)."""
    shape = graph.input_shape if len(graph.input_shape) == 3 else (graph.input_shape[0], 1, 1)
    return lower(graph), tuple(shape)


def load_model(path) -> list[Layer]:
    """Layers of an ``.npz``, ``.pt`` or ``.onnx`` model file, validated."""
    path = Path(path)
    if path.suffix == ".onnx":
        return load_network(path)[0]
    if not path.exists():
        raise ModelError(f"Model file '{path}' does not exist")
    if path.suffix in (".pt", ".pth"):
        return load_torch(path)
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            keys = list(npz.keys())
            arrays = {k: npz[k] for k in keys}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelError(f"Model file '{path}' is not a readable .npz file ({exc})") from None
    names = []
    for key in keys:
        if "." not in key:
            raise ModelError(f"Model file '{path}': key '{key}' is not '<layer>.weight', "
                             f"'<layer>.bias', '<layer>.kind', '<layer>.pad' or '<layer>.relu'")
        name, part = key.rsplit(".", 1)
        if part not in ("weight", "bias", "kind", "pad", "relu"):
            raise ModelError(f"Model file '{path}': key '{key}' is not '<layer>.weight', "
                             f"'<layer>.bias', '<layer>.kind', '<layer>.pad' or '<layer>.relu'")
        if name not in names:
            names.append(name)
    layers = []
    for name in names:
        if f"{name}.weight" not in arrays:
            raise ModelError(f"Layer '{name}' has no weight")
        w = arrays[f"{name}.weight"]
        if not np.issubdtype(w.dtype, np.number):
            raise ModelError(f"Layer '{name}': weight is not numeric ({w.dtype})")
        kind = arrays.get(f"{name}.kind")
        kind = str(kind) if kind is not None else None
        if kind is not None and kind not in KINDS:
            raise ModelError(f"Layer '{name}': unknown kind '{kind}' (kinds: {', '.join(KINDS)})")
        b = arrays.get(f"{name}.bias")
        pad = arrays.get(f"{name}.pad")
        relu = arrays.get(f"{name}.relu")
        try:
            pad = 0 if pad is None else int(pad)
            relu = None if relu is None else bool(int(relu))
        except (TypeError, ValueError):
            raise ModelError(f"Layer '{name}': pad and relu must be integers") from None
        if pad not in (0, 1):
            raise ModelError(f"Layer '{name}': padding must be 0 or 1, not {pad}")
        layer = Layer(name, kind_of(name, w, kind), w.astype(np.float64),
                      None if b is None else np.asarray(b, dtype=np.float64), pad, relu)
        if layer.kind == "linear" and pad:
            raise ModelError(f"Layer '{name}': a Linear layer has no padding")
        layers.append(check_layer(layer))
    if not layers:
        raise ModelError(f"Model file '{path}' holds no layers")
    return layers


def save_model(path, layers: list[Layer]) -> None:
    """Write layers in the ``.npz`` format :func:`load_model` reads."""
    arrays = {}
    for layer in layers:
        arrays[f"{layer.name}.weight"] = layer.weight
        if layer.bias is not None:
            arrays[f"{layer.name}.bias"] = layer.bias
        arrays[f"{layer.name}.kind"] = np.array(layer.kind)
        arrays[f"{layer.name}.pad"] = np.array(layer.pad)
        if layer.relu is not None:
            arrays[f"{layer.name}.relu"] = np.array(int(layer.relu))
    np.savez(path, **arrays)


def float_reference(path, x: np.ndarray, input_shape) -> np.ndarray:
    """The float model's outputs ``[N, values]`` for float inputs ``x`` in [0, 1] (the
    reference of the accuracy figures: before any compression or quantisation)."""
    path = Path(path)
    x = np.asarray(x, dtype=np.float64).reshape((-1,) + tuple(input_shape))
    if path.suffix == ".onnx":
        return load_onnx(path).forward(x).reshape(len(x), -1)
    layers = load_model(path)
    ints = [(None, None) if ly.pool else (ly.weight.reshape(ly.cout, -1), np.ones(ly.cout))
            for ly in layers]
    out, _ = forward_float(float_layers(layers, ints, resolve(layers, input_shape)), x)
    return out.reshape(len(x), -1)
