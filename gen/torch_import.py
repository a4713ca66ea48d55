"""Read PyTorch ``.pt`` / ``.pth`` files without PyTorch.

``torch.save`` writes a zip archive: ``<root>/data.pkl`` (a pickle whose tensors refer, by a
persistent id, to raw storages ``<root>/data/<key>``), ``<root>/byteorder`` and
``<root>/version``.  This reader unpickles with an allow-list: tensors and parameters become
numpy arrays, ``collections.OrderedDict`` stays itself, and ``torch.nn`` modules become plain
records of their attributes (no PyTorch code runs, nothing else can be constructed).

Two file kinds are understood:
* a ``state_dict`` (``torch.save(model.state_dict())``): layers in key order, Linear for 2-D
  weights and Conv2d for 4-D; padding 0 and a ReLU after every layer but the last (save the
  whole ``nn.Sequential`` to state padding and activations);
* a whole ``nn.Sequential`` (``torch.save(model)``) of Linear, Conv2d (stride 1, padding 0/1,
  3x3 or 1x1, no groups/dilation), ReLU and Flatten.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .layer import Layer, ModelError, check_layer, kind_of

__all__ = ["load_torch"]

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "BFloat16Storage": None, "LongStorage": np.int64, "IntStorage": np.int32,
           "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
           "BoolStorage": np.bool_}


class _Storage:
    def __init__(self, name):
        self.name = name


class _Module:
    """A ``torch.nn`` module's attributes (``_modules``, ``_parameters``, ``padding``, ...)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple):                     # (dict, slots)
            state = {k: v for part in state if isinstance(part, dict) for k, v in part.items()}
        self.__dict__.update(state if isinstance(state, dict) else {})


def _module_class(name):
    return type(name, (_Module,), {"torch_name": name})


def _rebuild_tensor(storage, offset, size, stride, *rest):
    arr, = storage
    size, stride = tuple(size), tuple(stride)
    if not size:
        return arr[offset:offset + 1].reshape(())
    itemsize = arr.itemsize
    return np.lib.stride_tricks.as_strided(arr[offset:], shape=size,
                                           strides=[s * itemsize for s in stride]).copy()


def _rebuild_parameter(data, *rest):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh, archive: zipfile.ZipFile, root: str, path: Path):
        super().__init__(fh)
        self._zip, self._root, self._path = archive, root, path

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _DTYPES:
            return _Storage(name)
        if module.startswith("torch.nn.modules."):
            return _module_class(name)
        if module in ("builtins", "__builtin__") and name in ("set", "frozenset", "slice"):
            return {"set": set, "frozenset": frozenset, "slice": slice}[name]
        raise ModelError(f"Model file '{self._path}': refers to {module}.{name}, which a "
                         f"weights file does not need (only tensors and torch.nn layers are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise ModelError(f"Model file '{self._path}': unknown storage reference {pid!r}")
        _, kind, key, _location, _numel = pid[:5]
        dtype = _DTYPES.get(getattr(kind, "name", ""))
        if dtype is None:
            raise ModelError(f"Model file '{self._path}': tensor type "
                             f"{getattr(kind, 'name', kind)} is not supported")
        raw = self._zip.read(f"{self._root}/data/{key}")
        return (np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")),)


def _read(path: Path):
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl")]
            if not pkl:
                raise ModelError(f"Model file '{path}' is not a PyTorch zip archive (torch.save "
                                 f"of a state_dict or an nn.Sequential)")
            root = pkl[0][: -len("/data.pkl")]
            with zf.open(pkl[0]) as fh:
                return _Unpickler(fh, zf, root, path).load()
    except ModelError:
        raise
    except zipfile.BadZipFile:
        raise ModelError(f"Model file '{path}' is not a PyTorch zip archive (legacy torch.save "
                         f"formats are not read)") from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"Model file '{path}' cannot be read ({type(exc).__name__}: {exc})") from None


def _as_float(name, arr):
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ModelError(f"Layer '{name}': weight is {arr.dtype}, not floating point")
    return arr.astype(np.float64)


def _from_state_dict(sd: dict, path: Path) -> list[Layer]:
    layers = []
    names = []
    for key in sd:
        if not isinstance(key, str) or "." not in key:
            raise ModelError(f"Model file '{path}': key {key!r} is not '<layer>.weight' or "
                             f"'<layer>.bias'")
        name, part = key.rsplit(".", 1)
        if part not in ("weight", "bias"):
            raise ModelError(f"Model file '{path}': layer '{name}' has '{part}', which Linear and "
                             f"Conv2d do not (batch norm and similar layers are not supported)")
        if name not in names:
            names.append(name)
    for name in names:
        if f"{name}.weight" not in sd:
            raise ModelError(f"Layer '{name}' has no weight")
        w = _as_float(name, sd[f"{name}.weight"])
        b = sd.get(f"{name}.bias")
        kind = kind_of(name, w, None)
        layers.append(check_layer(Layer(name, kind, w, None if b is None else _as_float(name, b))))
    return layers


def _pair(v, name, what):
    v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(v) != 2 or v[0] != v[1]:
        raise ModelError(f"Layer '{name}': {what} {v} is not supported (square only)")
    return int(v[0])


def _fold_bn(layers, name, mod):
    """Fold a BatchNorm2d into the conv before it."""
    if not layers or layers[-1].pool or layers[-1].relu:
        raise ModelError(f"Layer '{name}' (BatchNorm2d) must follow a Conv2d (it is folded "
                         f"into it)")
    prev = layers[-1]
    params = getattr(mod, "_parameters", {}) or {}
    bufs = getattr(mod, "_buffers", {}) or {}
    mean, var = bufs.get("running_mean"), bufs.get("running_var")
    if mean is None or var is None:
        raise ModelError(f"Layer '{name}' (BatchNorm2d) has no running statistics")
    c = prev.cout
    gamma = params.get("weight")
    beta = params.get("bias")
    gamma = np.ones(c) if gamma is None else _as_float(name, gamma)
    beta = np.zeros(c) if beta is None else _as_float(name, beta)
    mean, var = _as_float(name, mean), _as_float(name, var)
    if not gamma.shape == beta.shape == mean.shape == var.shape == (c,):
        raise ModelError(f"Layer '{name}' (BatchNorm2d): {mean.shape[0]} channels do not match "
                         f"the {c} outputs of '{prev.name}'")
    f = gamma / np.sqrt(var + float(getattr(mod, "eps", 1e-5)))
    prev.weight = prev.weight * f.reshape(-1, 1, 1, 1)
    prev.bias = ((prev.bias if prev.bias is not None else np.zeros(c)) - mean) * f + beta


def _pool(name, kind, mod) -> Layer:
    if kind == "AdaptiveAvgPool2d":
        out = getattr(mod, "output_size", None)
        if out not in (1, (1, 1), [1, 1]):
            raise ModelError(f"Layer '{name}' (AdaptiveAvgPool2d): output size {out} is not "
                             f"supported (1: global average pooling)")
        return Layer(name, "gap", None, relu=True)
    k = _pair(getattr(mod, "kernel_size", 2), name, "kernel")
    stride = getattr(mod, "stride", None)
    stride = k if stride in (None, (), []) else _pair(stride, name, "stride")
    if stride != k or _pair(getattr(mod, "padding", 0), name, "padding") != 0 \
            or getattr(mod, "ceil_mode", False) \
            or _pair(getattr(mod, "dilation", 1), name, "dilation") != 1:
        raise ModelError(f"Layer '{name}' ({kind}): only non-overlapping windows without padding "
                         f"are supported (stride = kernel = {k})")
    return Layer(name, "maxpool" if kind == "MaxPool2d" else "avgpool", None, relu=True, window=k)


def _from_sequential(seq: _Module, path: Path) -> list[Layer]:
    mods = getattr(seq, "_modules", None)
    if not isinstance(mods, dict):
        raise ModelError(f"Model file '{path}': the saved object is a "
                         f"{getattr(seq, 'torch_name', type(seq).__name__)}, not an nn.Sequential")
    layers = []
    for name, mod in mods.items():
        kind = getattr(mod, "torch_name", type(mod).__name__)
        if kind in ("ReLU", "ReLU6"):
            if not layers or layers[-1].pool:
                raise ModelError(f"Layer '{name}': a {kind} must follow a Linear or Conv2d layer "
                                 f"(it is fused into it)")
            layers[-1].relu = True
            layers[-1].relu6 = kind == "ReLU6"
            continue
        if kind in ("Flatten", "Dropout", "Identity"):
            continue
        if kind == "BatchNorm2d":
            _fold_bn(layers, name, mod)
            continue
        if kind in ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"):
            layers.append(_pool(name, kind, mod))
            continue
        if kind not in ("Linear", "Conv2d"):
            raise ModelError(f"Layer '{name}' ({kind}) is not supported: use Linear, Conv2d, "
                             f"BatchNorm2d, ReLU, ReLU6, MaxPool2d, AvgPool2d, "
                             f"AdaptiveAvgPool2d(1) and Flatten")
        params = getattr(mod, "_parameters", {}) or {}
        w = params.get("weight")
        if w is None:
            raise ModelError(f"Layer '{name}' ({kind}) has no weight")
        w = _as_float(name, w)
        b = params.get("bias")
        pad, stride, groups = 0, 1, 1
        if kind == "Conv2d":
            stride_t = tuple(getattr(mod, "stride", (1, 1)))
            padding = getattr(mod, "padding", (0, 0))
            if isinstance(padding, str):
                raise ModelError(f"Layer '{name}' (Conv2d): padding '{padding}' is not supported; "
                                 f"use 0 or 1")
            padding = tuple(padding)
            if stride_t not in ((1, 1), (2, 2)):
                raise ModelError(f"Layer '{name}' (Conv2d): stride {stride_t} is not supported "
                                 f"(1 or 2)")
            if padding[0] != padding[1] or padding[0] not in (0, 1):
                raise ModelError(f"Layer '{name}' (Conv2d): padding {padding} is not supported "
                                 f"(0 or 1)")
            groups = int(getattr(mod, "groups", 1))
            if groups != 1 and not (w.shape[1] == 1 and groups == w.shape[0]):
                raise ModelError(f"Layer '{name}' (Conv2d): groups={groups} is not supported (1, "
                                 f"or depthwise: groups = in = out channels)")
            if tuple(getattr(mod, "dilation", (1, 1))) != (1, 1):
                raise ModelError(f"Layer '{name}' (Conv2d): dilation is not supported")
            if getattr(mod, "padding_mode", "zeros") != "zeros":
                raise ModelError(f"Layer '{name}' (Conv2d): padding mode "
                                 f"'{mod.padding_mode}' is not supported")
            pad, stride = padding[0], stride_t[0]
        layer = Layer(name, kind_of(name, w, None), w,
                      None if b is None else _as_float(name, b), pad, False, stride=stride,
                      groups=groups)
        layers.append(check_layer(layer))
    if not any(not ly.pool for ly in layers):
        raise ModelError(f"Model file '{path}': the nn.Sequential has no Linear or Conv2d layer")
    return layers


def load_torch(path) -> list[Layer]:
    """Layers of a PyTorch ``state_dict`` or ``nn.Sequential`` file."""
    path = Path(path)
    obj = _read(path)
    if isinstance(obj, dict):
        if not obj:
            raise ModelError(f"Model file '{path}' holds an empty state_dict")
        return _from_state_dict(obj, path)
    if isinstance(obj, _Module):
        return _from_sequential(obj, path)
    raise ModelError(f"Model file '{path}' holds a {type(obj).__name__}, not a state_dict or an "
                     f"nn.Sequential")
