"""A network as a DAG of float operations, and its float reference forward (plain numpy).

Importers (ONNX, PyTorch) produce a :class:`Graph`; the compiler lowers it onto the engine.
Tensors are ``[N, C, H, W]`` (or ``[N, F]`` after Flatten / Linear).  Operations:

========== ===================================================================================
``conv``   Conv2d: kernel 1x1 or 3x3, stride 1 or 2, zero padding 0 or 1 on every side,
           ``groups`` 1 or the channel count (depthwise); ``weight [O, I/groups, k, k]``
``linear`` ``y = x @ weight.T + bias`` (a 4-D input is flattened in ``[C, H, W]`` order)
``add``    element-wise sum of two tensors of one shape
``relu``   ``max(x, 0)``;  ``relu6``: ``min(max(x, 0), 6)``
``maxpool`` / ``avgpool``  ``k x k`` window, stride ``stride``, no padding
``gap``    global average pooling to ``[N, C, 1, 1]``
``flatten`` ``[N, C, H, W] -> [N, C*H*W]``
========== ===================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .layer import ModelError
from .util import conv_gemm, conv_out

__all__ = ["OPS", "Node", "Graph", "conv2d_float"]

OPS = ("conv", "linear", "add", "relu", "relu6", "maxpool", "avgpool", "gap", "flatten")


@dataclass
class Node:
    """One operation: ``inputs`` name earlier nodes (or the graph input)."""
    name: str
    op: str
    inputs: tuple
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    k: int = 1
    stride: int = 1
    pad: int = 0
    groups: int = 1
    attrs: dict = field(default_factory=dict)


@dataclass
class Graph:
    """Nodes in topological order; ``input`` is the input tensor's name, ``output`` the result's."""
    input: str
    input_shape: tuple
    nodes: list
    output: str

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def consumers(self, name: str) -> list:
        return [n for n in self.nodes if name in n.inputs]

    def shapes(self) -> dict:
        """Shape of every tensor (without the batch axis), checking every node on the way."""
        shapes = {self.input: tuple(self.input_shape)}
        for n in self.nodes:
            for i in n.inputs:
                if i not in shapes:
                    raise ModelError(f"Node '{n.name}' ({n.op}): input '{i}' is not produced "
                                     f"before it")
            shapes[n.name] = _out_shape(n, [shapes[i] for i in n.inputs])
        if self.output not in shapes:
            raise ModelError(f"Graph output '{self.output}' is not produced by any node")
        return shapes

    def forward(self, x: np.ndarray, *, keep: bool = False):
        """Float forward of ``x [N, *input_shape]``; with ``keep`` also every tensor."""
        vals = {self.input: np.asarray(x, dtype=np.float64).reshape((-1,) + tuple(self.input_shape))}
        for n in self.nodes:
            vals[n.name] = _forward(n, [vals[i] for i in n.inputs])
        return (vals[self.output], vals) if keep else vals[self.output]


def _out_shape(n: Node, ins: list) -> tuple:
    where = f"Node '{n.name}' ({n.op})"
    if n.op not in OPS:
        raise ModelError(f"{where}: unsupported operation (supported: {', '.join(OPS)})")
    if len(ins) != (2 if n.op == "add" else 1):
        raise ModelError(f"{where}: takes {2 if n.op == 'add' else 1} input(s), not {len(ins)}")
    s = ins[0]
    if n.op == "add":
        if ins[0] != ins[1]:
            raise ModelError(f"{where}: branch shapes {ins[0]} and {ins[1]} differ")
        return s
    if n.op in ("relu", "relu6"):
        return s
    if n.op == "flatten":
        return (int(np.prod(s)),)
    if n.op == "linear":
        feat = int(np.prod(s))
        if n.weight is None or n.weight.ndim != 2 or n.weight.shape[1] != feat:
            raise ModelError(f"{where}: weight {None if n.weight is None else n.weight.shape} "
                             f"does not take {feat} input features")
        return (n.weight.shape[0],)
    if len(s) != 3:
        raise ModelError(f"{where}: needs a [C, H, W] input, not {s}")
    c, h, w = s
    if n.op == "gap":
        return (c, 1, 1)
    if n.stride not in (1, 2) and not (n.op in ("maxpool", "avgpool") and n.stride == n.k):
        raise ModelError(f"{where}: stride {n.stride} is not supported (1 or 2"
                         f"{', or the window' if n.op != 'conv' else ''})")
    if n.pad not in (0, 1):
        raise ModelError(f"{where}: padding {n.pad} is not supported (0 or 1 on every side)")
    if n.op in ("maxpool", "avgpool"):
        if n.pad:
            raise ModelError(f"{where}: padded pooling is not supported")
        if n.k < 1 or n.k > min(h, w):
            raise ModelError(f"{where}: window {n.k} does not fit the {h}x{w} input")
        return (c, conv_out(h, n.k, 0, n.stride), conv_out(w, n.k, 0, n.stride))
    # conv
    wt = n.weight
    if wt is None or wt.ndim != 4 or wt.shape[2] != wt.shape[3] or wt.shape[2] not in (1, 3):
        raise ModelError(f"{where}: kernel {None if wt is None else wt.shape[2:]} is not "
                         f"supported (1x1 or 3x3)")
    if n.groups not in (1, c) or (n.groups == c != 1 and wt.shape[0] != c):
        raise ModelError(f"{where}: groups={n.groups} is not supported (1, or depthwise: "
                         f"groups = in = out channels = {c})")
    if wt.shape[1] * n.groups != c:
        raise ModelError(f"{where}: weight {wt.shape} does not take {c} input channels")
    if n.bias is not None and n.bias.shape != (wt.shape[0],):
        raise ModelError(f"{where}: bias shape {n.bias.shape} does not match {wt.shape[0]} outputs")
    for what, arr in (("weight", wt), ("bias", n.bias)):
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ModelError(f"{where}: {what} contains NaN or inf")
    k = wt.shape[2]
    oh, ow = conv_out(h, k, n.pad, n.stride), conv_out(w, k, n.pad, n.stride)
    if oh < 1 or ow < 1:
        raise ModelError(f"{where}: a {k}x{k} kernel does not fit the {h}x{w} input")
    return (wt.shape[0], oh, ow)


def conv2d_float(x: np.ndarray, w: np.ndarray, b, stride: int, pad: int, groups: int) -> np.ndarray:
    """Plain float Conv2d (cross-correlation, as PyTorch) of ``x [N, C, H, W]``."""
    n, c, h, wd = x.shape
    o, ig, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = conv_out(h, k, pad, stride), conv_out(wd, k, pad, stride)
    out = np.zeros((n, o, oh, ow))
    if groups > 1 and groups == c == o:                     # depthwise: one channel each
        for kh in range(k):
            for kw in range(k):
                patch = xp[:, :, kh:kh + stride * (oh - 1) + 1:stride, kw:kw + stride * (ow - 1) + 1:stride]
                out += patch * w[:, 0, kh, kw].reshape(1, -1, 1, 1)
        return out + (np.asarray(b).reshape(1, -1, 1, 1) if b is not None else 0)
    if groups == 1:
        out = conv_gemm(x, w, stride, pad)
        return out + (np.asarray(b).reshape(1, -1, 1, 1) if b is not None else 0)
    og = o // groups
    for g in range(groups):
        xs = xp[:, g * ig:(g + 1) * ig]
        ws = w[g * og:(g + 1) * og]
        for kh in range(k):
            for kw in range(k):
                patch = xs[:, :, kh:kh + stride * (oh - 1) + 1:stride, kw:kw + stride * (ow - 1) + 1:stride]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, kh, kw],
                                                         optimize=True)
    if b is not None:
        out += np.asarray(b).reshape(1, -1, 1, 1)
    return out


def _forward(n: Node, ins: list) -> np.ndarray:
    x = ins[0]
    if n.op == "conv":
        return conv2d_float(x, n.weight, n.bias, n.stride, n.pad, n.groups)
    if n.op == "linear":
        y = x.reshape(len(x), -1) @ n.weight.T
        return y + n.bias if n.bias is not None else y
    if n.op == "add":
        return x + ins[1]
    if n.op == "relu":
        return np.maximum(x, 0)
    if n.op == "relu6":
        return np.clip(x, 0, 6)
    if n.op == "flatten":
        return x.reshape(len(x), -1)
    if n.op == "gap":
        return x.mean(axis=(2, 3), keepdims=True)
    k, s = n.k, n.stride
    oh, ow = conv_out(x.shape[2], k, 0, s), conv_out(x.shape[3], k, 0, s)
    wins = np.stack([x[:, :, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s]
                     for i in range(k) for j in range(k)])
    return wins.max(axis=0) if n.op == "maxpool" else wins.mean(axis=0)
