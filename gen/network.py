"""Golden model of a whole network: the chain of per-layer integer operations, plain numpy.

Per layer (``int64`` throughout, no wrapping: an intermediate that does not fit its declared
hardware width raises ``OverflowError``)::

    acc[co, p] = sum_{ci, kh, kw} W[co, ci, kh, kw] * x[ci, oy + kh - pad, ox + kw - pad]
                 (x = 0 outside the image; Linear: a 1x1 image with cin channels)
    v = acc + bias[co]
    r = (v * M[co] + 2**(S[co] - 1)) >> S[co]          # round half up, arithmetic shift
    hidden layer: y = clip(r, 0, 255)  (ReLU + u8)      final layer: y = clip(r, int32)

The weights ``W`` come from the stored codes through the per-block golden decoders
(``gen.golden``), never from the RTL's factorisation.  The float helpers at the end are the
training/calibration side (not bit-exact).
"""

from __future__ import annotations

import numpy as np

__all__ = ["im2col", "forward_int", "output_order", "requant_params", "forward_float"]

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


def layer_acc(x: np.ndarray, W: np.ndarray, k: int, pad: int) -> np.ndarray:
    """Integer convolution / matrix product: ``[N, C, H, W]`` -> ``[N, Cout, OH, OW]``."""
    n, c, h, w = x.shape
    cols = im2col(x.astype(np.int64), k, pad)
    acc = np.einsum("npt,ot->nop", cols, W.reshape(W.shape[0], -1).astype(np.int64))
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    return acc.reshape(n, W.shape[0], oh, ow)


def requant(v: np.ndarray, M: np.ndarray, S: np.ndarray, relu: bool, final: bool) -> np.ndarray:
    """``(v * M + 2**(S-1)) >> S`` per channel (axis 1), then ReLU/u8 or int32 saturation."""
    shape = (1, -1) + (1,) * (v.ndim - 2)
    M = np.asarray(M, dtype=np.int64).reshape(shape)
    S = np.asarray(S, dtype=np.int64).reshape(shape)
    p = v * M
    if np.any(np.abs(v) >= (1 << 47)) or np.any(np.abs(p) >= (1 << 62)):
        raise OverflowError("requantisation product does not fit 63 bits")
    r = (p + (np.int64(1) << (S - 1))) >> S
    if not final:
        return np.clip(r, 0, 255)
    r = np.clip(r, *INT32)
    return np.maximum(r, 0) if relu else r


def forward_int(layers, x_u8: np.ndarray, *, acc_bits: int | None = None) -> np.ndarray:
    """Run ``x_u8 [N, C, H, W]`` (or ``[N, features]``) through integer layers.

    ``layers``: sequence of dicts with ``W`` (int, ``[cout, cin, k, k]`` or ``[cout, cin]``),
    ``bias``, ``M``, ``S`` (per output channel), ``k``, ``pad``, ``relu``, ``in_shape``
    (``(C, H, W)``).  Returns the final layer's values ``[N, cout, OH, OW]`` (int64).
    """
    x = np.asarray(x_u8, dtype=np.int64)
    if x.min(initial=0) < 0 or x.max(initial=0) > 255:
        raise ValueError("inputs must be unsigned 8-bit values (0..255)")
    for i, ly in enumerate(layers):
        x = x.reshape((x.shape[0],) + tuple(ly["in_shape"]))
        W = np.asarray(ly["W"], dtype=np.int64)
        W4 = W.reshape(W.shape[0], ly["in_shape"][0], ly["k"], ly["k"])
        acc = layer_acc(x, W4, ly["k"], ly["pad"])
        if acc_bits is not None and np.any(np.abs(acc) >= (1 << (acc_bits - 1))):
            raise OverflowError(f"layer {i}: accumulator exceeds {acc_bits} bits")
        v = acc + np.asarray(ly["bias"], dtype=np.int64).reshape(1, -1, 1, 1)
        x = requant(v, ly["M"], ly["S"], ly["relu"], i == len(layers) - 1)
    return x


def output_order(cout: int, pixels: int, lanes: int) -> np.ndarray:
    """Flat ``[cout, pixels]`` indices of the final layer's values in the order the engine
    emits them (tile, pixel, lane)."""
    order = []
    for t0 in range(0, cout, lanes):
        for p in range(pixels):
            for co in range(t0, min(cout, t0 + lanes)):
                order.append(co * pixels + p)
    return np.array(order, dtype=np.int64)


def requant_params(factor: float, *, m_bits: int = 16, s_max: int = 47) -> tuple[int, int]:
    """``(M, S)`` with ``M / 2**S`` closest to ``factor``, ``M < 2**m_bits``, ``1 <= S <= s_max``."""
    if not np.isfinite(factor) or factor < 0:
        raise ValueError(f"requantisation factor must be a finite non-negative number, not {factor}")
    if factor == 0:
        return 0, 1
    s = s_max
    while s > 1 and round(factor * 2 ** s) >= (1 << m_bits):
        s -= 1
    M = int(round(factor * 2 ** s))
    if M >= (1 << m_bits):
        raise ValueError(f"requantisation factor {factor:g} is too large for a {m_bits}-bit "
                         f"multiplier")
    return M, s


def forward_float(layers, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Float forward of ``layers`` (dicts with float ``W``, ``bias``, ``k``, ``pad``, ``relu``,
    ``in_shape``); returns the output and every layer's output (for calibration)."""
    outs = []
    x = np.asarray(x, dtype=np.float64)
    for ly in layers:
        x = x.reshape((x.shape[0],) + tuple(ly["in_shape"]))
        W = np.asarray(ly["W"], dtype=np.float64)
        W4 = W.reshape(W.shape[0], ly["in_shape"][0], ly["k"], ly["k"])
        cols = im2col(x, ly["k"], ly["pad"])
        y = np.einsum("npt,ot->nop", cols, W4.reshape(W4.shape[0], -1))
        n, c, h, w = x.shape
        oh, ow = h + 2 * ly["pad"] - ly["k"] + 1, w + 2 * ly["pad"] - ly["k"] + 1
        y = y.reshape(n, W.shape[0], oh, ow) + np.asarray(ly["bias"]).reshape(1, -1, 1, 1)
        if ly["relu"]:
            y = np.maximum(y, 0)
        outs.append(y)
        x = y
    return x, outs
