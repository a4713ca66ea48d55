"""Golden model of a whole network: per-layer integer operations on a DAG, plain numpy.

Per layer (``int64`` throughout, no wrapping: an intermediate that does not fit its declared
hardware width raises ``OverflowError``)::

    acc[co, p] = sum_{ci, kh, kw} W[co, ci, kh, kw] * x[ci, oy*s + kh - pad, ox*s + kw - pad]
                 (x = 0 outside the image; Linear: a 1x1 image with cin channels;
                  depthwise: ci = co only; avgpool / gap: W = 1 over the window;
                  maxpool: acc = max over the window)
    v = acc + bias[co]
    p = v * M[co] (+ r * Mr[co], r: the residual tensor's integer at the same place)
    q = (p + 2**(S[co] - 1)) >> S[co]                  # round half up, arithmetic shift
    hidden layer: y = clip(q, lo, hi)   (ReLU, ReLU6: 0..255; no activation: -128..127)
    final layer:  y = clip(q, int32), then ReLU if the layer has one

``x`` is the layer's source tensor (``src``: an earlier layer or the input), u8; a signed
tensor (no activation) only ever feeds a residual.  The weights ``W`` come from the stored
codes through the per-block golden decoders (``gen.golden``), never from the RTL's
factorisation.  The float helpers at the end are the training/calibration side.
"""

from __future__ import annotations

import numpy as np

from .util import conv_gemm, conv_out

__all__ = ["im2col", "forward_int", "output_order", "forward_float"]

INT32 = (-(1 << 31), (1 << 31) - 1)


def im2col(x: np.ndarray, k: int, pad: int) -> np.ndarray:
    """``x [N, C, H, W]`` -> ``[N, OH*OW, C*k*k]`` in ``(ci, kh, kw)`` term order."""
    n, c, h, w = x.shape
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    cols = np.empty((n, oh, ow, c, k, k), dtype=x.dtype)
    for kh in range(k):
        for kw in range(k):
            cols[:, :, :, :, kh, kw] = x[:, :, kh:kh + oh, kw:kw + ow].transpose(0, 2, 3, 1)
    return cols.reshape(n, oh * ow, c * k * k)


def requant(v: np.ndarray, M: np.ndarray, S: np.ndarray, relu: bool, final: bool, *,
            extra: np.ndarray | None = None, lo: int = 0, hi: int = 255) -> np.ndarray:
    """``(v * M [+ extra] + 2**(S-1)) >> S`` per channel (axis 1), then the hidden clamp
    ``lo..hi`` or int32 saturation (and ReLU) for the final layer."""
    shape = (1, -1) + (1,) * (v.ndim - 2)
    M = np.asarray(M, dtype=np.int64).reshape(shape)
    S = np.asarray(S, dtype=np.int64).reshape(shape)
    p = v * M
    if extra is not None:
        p = p + extra
    if np.any(np.abs(v) >= (1 << 47)) or np.any(np.abs(p) >= (1 << 62)):
        raise OverflowError("requantisation product does not fit 63 bits")
    r = (p + (np.int64(1) << (S - 1))) >> S
    if not final:
        return np.clip(r, lo, hi)
    r = np.clip(r, *INT32)
    return np.maximum(r, 0) if relu else r


def _windows(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """``[k*k, N, C, OH, OW]`` views of every window position (zero padding)."""
    n, c, h, w = x.shape
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = conv_out(h, k, pad, stride), conv_out(w, k, pad, stride)
    return np.stack([x[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
                     for i in range(k) for j in range(k)])


def _acc(ly: dict, x: np.ndarray) -> np.ndarray:
    kind, k, stride, pad = ly.get("kind", "conv"), ly["k"], ly.get("stride", 1), ly["pad"]
    if kind in ("gap", "avgpool"):
        return _windows(x, k, k, 0).sum(axis=0)
    if kind == "maxpool":
        return _windows(x, k, k, 0).max(axis=0)
    W = np.asarray(ly["W"], dtype=np.int64)
    if ly.get("dw"):
        return _depthwise(x, W.reshape(W.shape[0], k, k), stride, pad)
    W4 = W.reshape(W.shape[0], x.shape[1], k, k)
    bound = int(np.abs(x).max(initial=0)) * int(np.abs(W4).max(initial=0)) * W4[0].size
    if bound >= 1 << 52:
        win = _windows(x, k, stride, pad)
        return np.einsum("tnchw,oct->nohw", win, W4.reshape(W.shape[0], x.shape[1], k * k))
    # float64 products of integers whose every partial sum is below 2**52: exact
    return np.rint(conv_gemm(x, W4, stride, pad)).astype(np.int64)


def _depthwise(x: np.ndarray, W: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Depthwise convolution (one ``k x k`` filter per channel) as ``k*k`` shifted
    multiply-adds in int64."""
    n, c, h, w = x.shape
    k = W.shape[1]
    oh, ow = conv_out(h, k, pad, stride), conv_out(w, k, pad, stride)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    acc = np.zeros((n, c, oh, ow), dtype=np.int64)
    for i in range(k):
        for j in range(k):
            acc += xp[:, :, i:i + stride * (oh - 1) + 1:stride,
                      j:j + stride * (ow - 1) + 1:stride] * W[:, i, j].reshape(1, c, 1, 1)
    return acc


def forward_int(layers, x_u8: np.ndarray, *, acc_bits: int | None = None) -> np.ndarray:
    """Run ``x_u8 [N, C, H, W]`` (or ``[N, features]``) through integer layers.

    ``layers``: sequence of dicts with ``W`` (int, ``[cout, cin, k, k]`` or ``[cout, cin]``),
    ``bias``, ``M``, ``S`` (per output channel), ``k``, ``pad``, ``relu``, ``in_shape``
    (``(C, H, W)``) and, for graphs, ``kind``, ``stride``, ``dw``, ``src``, ``res``, ``Mr``,
    ``lo``, ``hi``.  Returns the final layer's values ``[N, cout, OH, OW]`` (int64).
    """
    x = np.asarray(x_u8, dtype=np.int64)
    if x.min(initial=0) < 0 or x.max(initial=0) > 255:
        raise ValueError("inputs must be unsigned 8-bit values (0..255)")
    outs = {-1: x}
    for i, ly in enumerate(layers):
        src = ly.get("src", i - 1)
        x = outs[src].reshape((len(x_u8),) + tuple(ly["in_shape"]))
        acc = _acc(ly, x)
        if acc_bits is not None and np.any(np.abs(acc) >= (1 << (acc_bits - 1))):
            raise OverflowError(f"layer {i}: accumulator exceeds {acc_bits} bits")
        v = acc + np.asarray(ly["bias"], dtype=np.int64).reshape(1, -1, 1, 1)
        final = i == len(layers) - 1
        res = ly.get("res", -1)
        extra = None
        if res >= 0:
            extra = outs[res].reshape(v.shape) * np.asarray(ly["Mr"], dtype=np.int64).reshape(1, -1, 1, 1)
        outs[i] = requant(v, ly["M"], ly["S"], ly["relu"], final, extra=extra,
                          lo=ly.get("lo", 0), hi=ly.get("hi", 255))
    return outs[len(layers) - 1]


def output_order(cout: int, pixels: int, lanes: int) -> np.ndarray:
    """Flat ``[cout, pixels]`` indices of the final layer's values in the order the engine
    emits them (tile, pixel, lane)."""
    order = []
    for t0 in range(0, cout, lanes):
        for p in range(pixels):
            for co in range(t0, min(cout, t0 + lanes)):
                order.append(co * pixels + p)
    return np.array(order, dtype=np.int64)


def forward_float(layers, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Float forward of ``layers`` (dicts with float ``W``, ``bias``, ``k``, ``pad``, ``relu``,
    ``in_shape`` and, for graphs, ``kind``, ``stride``, ``dw``, ``src``, ``res``, ``relu6``);
    returns the output and every layer's output (for calibration)."""
    outs: list[np.ndarray] = []
    x0 = np.asarray(x, dtype=np.float64)
    for i, ly in enumerate(layers):
        src = ly.get("src", i - 1)
        x = (x0 if src < 0 else outs[src]).reshape((len(x0),) + tuple(ly["in_shape"]))
        kind, k, pad, stride = ly.get("kind", "conv"), ly["k"], ly["pad"], ly.get("stride", 1)
        if kind in ("gap", "avgpool"):
            y = _windows(x, k, k, 0).mean(axis=0)
        elif kind == "maxpool":
            y = _windows(x, k, k, 0).max(axis=0)
        else:
            W = np.asarray(ly["W"], dtype=np.float64)
            win = _windows(x, k, stride, pad)
            if ly.get("dw"):
                y = np.einsum("tnchw,ct->nchw", win, W.reshape(W.shape[0], k * k))
            else:
                y = np.einsum("tnchw,oct->nohw", win, W.reshape(W.shape[0], x.shape[1], k * k))
            y = y + np.asarray(ly["bias"]).reshape(1, -1, 1, 1)
        if ly.get("res", -1) >= 0:
            y = y + outs[ly["res"]].reshape(y.shape)
        if ly.get("relu6"):
            y = np.clip(y, 0, 6)
        elif ly["relu"]:
            y = np.maximum(y, 0)
        outs.append(y)
    return outs[-1], outs
