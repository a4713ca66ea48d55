"""Activation quantisation and the post-processing constants of every layer.

Quantisation (documented contract, docs/quantisation.md):

* inputs are floats in ``[0, 1]`` mapped to u8 by ``round(x * 255)`` (input scale 1/255);
* weights: the scheme's integer weights with a per-output-channel scale ``sw[co]``; pools
  use unit weights (``sw = 1 / window**2`` for averages, exact for the maximum);
* every tensor has one scale: after ReLU / ReLU6 its largest float value on the calibration
  inputs / 255 (u8, ReLU6 at most 6 / 255); without an activation its largest |value| / 127
  (s8, only ever a residual); the final layer's largest |value| / 2**15; a max-pool keeps its
  input's scale;
* per output channel ``bias_int = round(bias / (sw * s_in))``, ``M / 2**S ~ sw * s_in /
  s_out`` and, with a residual of scale ``s_res``, ``Mr / 2**S ~ s_res / s_out`` (16-bit ``M``
  and ``Mr``, one ``S`` <= 47), see ``gen.network.requant``.
"""

from __future__ import annotations

import numpy as np

from .layer import ModelError
from .memmap import M_BITS, POST
from .network import forward_float
from .plan import LayerPlan

__all__ = ["quantise", "golden_entry", "float_layers", "shift_for"]


def shift_for(*factors: float, m_bits: int = M_BITS, s_max: int = 47) -> int:
    """The largest ``S`` <= ``s_max`` at which every ``round(f * 2**S)`` fits ``m_bits``."""
    for f in factors:
        if not np.isfinite(f) or f < 0:
            raise ValueError(f"requantisation factor must be a finite non-negative number, not {f}")
    s = s_max
    while s > 1 and any(round(f * 2 ** s) >= (1 << m_bits) for f in factors):
        s -= 1
    for f in factors:
        if round(f * 2 ** s) >= (1 << m_bits):
            raise ValueError(f"requantisation factor {f:g} is too large for a {m_bits}-bit multiplier")
    return s


def float_layers(layers, ints, resolved) -> list[dict]:
    """``gen.network.forward_float`` layers with the integer weights times their scales."""
    fl = []
    for i, (ly, (W, sw), r) in enumerate(zip(layers, ints, resolved)):
        fl.append({"W": None if ly.pool else W * np.asarray(sw)[:, None],
                   "bias": ly.bias if ly.bias is not None else np.zeros(ly.cout),
                   "k": r["k"], "pad": r["pad"], "stride": r["stride"], "dw": ly.depthwise,
                   "kind": ly.kind if ly.pool else "conv", "src": r["src"], "res": r["res"],
                   "relu": ly.relu if ly.relu is not None else i < len(layers) - 1,
                   "relu6": ly.relu6, "in_shape": (r["cin"], r["h"], r["w"])})
    return fl


def quantise(layers, ints, resolved, calib, input_shape, lanes):
    """Layer table and post-processing words (bias, M, S, Mr per output channel) for integer
    weights ``ints`` = ``[(W_int [cout, terms], sw [cout])]`` (pools: unit weights),
    calibrated on ``calib``."""
    fl = float_layers(layers, ints, resolved)
    if calib is None:
        calib = np.random.default_rng(0).random((64,) + input_shape)
    calib = np.round(np.clip(np.asarray(calib, dtype=np.float64), 0, 1) * 255) / 255
    _, outs = forward_float(fl, calib.reshape((calib.shape[0],) + input_shape))

    plans, post_words, scales = [], [], {-1: 1.0 / 255}
    for i, (ly, (W, sw), f, r) in enumerate(zip(layers, ints, fl, resolved)):
        final = i == len(layers) - 1
        s_in = scales[r["src"]]
        peak = float(np.max(np.abs(outs[i]))) if outs[i].size else 0.0
        if final:
            s_out, lo, hi = (peak or 1.0) / 2 ** 15, 0, 255
        elif ly.kind == "maxpool":
            s_out, lo, hi = s_in, 0, 255
        elif f["relu"] or f["relu6"]:
            s_out, lo, hi = (min(peak, 6.0) if f["relu6"] else peak or 1.0) / 255, 0, 255
            s_out = s_out or 1.0 / 255
        else:
            s_out, lo, hi = (peak or 1.0) / 127, -128, 127
        s_res = scales[r["res"]] if r["res"] >= 0 else 0.0
        cin_g = 1 if (ly.depthwise or ly.pool) else r["cin"]
        lp = LayerPlan(ly.name, ly.kind, cin_g, ly.cout, r["h"], r["w"], r["k"], r["pad"],
                       bool(f["relu"] or f["relu6"]), r["oh"], r["ow"], cin_g * r["k"] ** 2,
                       -(-ly.cout // lanes), post_base=len(post_words),
                       scale_w=[float(v) for v in sw], scale_in=s_in, scale_out=s_out,
                       stride=r["stride"], depthwise=ly.depthwise or ly.pool, src=r["src"],
                       res=r["res"], lo=lo, hi=hi,
                       res_signed=r["res"] >= 0 and plans[r["res"]].signed_out,
                       scale_res=s_res)
        bias = f["bias"]
        for co in range(ly.cout):
            b = int(round(bias[co] / (sw[co] * s_in))) if sw[co] > 0 else 0
            if not -(1 << 31) <= b < (1 << 31):
                raise ModelError(f"Layer '{ly.name}': bias {bias[co]:g} of channel {co} does not "
                                 f"fit 32 bits at this weight scale")
            fm, fr = sw[co] * s_in / s_out, s_res / s_out
            try:
                S = shift_for(fm, fr)
            except ValueError as exc:
                raise ModelError(f"Layer '{ly.name}', channel {co}: {exc}") from None
            if fm == 0 and fr == 0:
                S = 1
            M, Mr = int(round(fm * 2 ** S)), int(round(fr * 2 ** S))
            post_words.append(POST.pack(bias=b, m=M, s=S, mr=Mr))
        plans.append(lp)
        scales[i] = s_out
    return plans, post_words


def golden_entry(lp, W, posts) -> dict:
    """One layer of ``gen.network.forward_int`` from its weights and post-processing words."""
    ents = [POST.unpack(w) for w in posts[lp.post_base:lp.post_base + lp.cout]]
    cin_all = lp.cout if lp.depthwise else lp.cin
    k, pad = lp.k, lp.pad
    if lp.window:               # the convolution itself, not the loader's windows
        cin_all, k, pad = lp.cin // lp.window ** 2, lp.window, lp.window // 2
    return {"W": W,
            "bias": np.array([e["bias"] for e in ents], dtype=np.int64),
            "M": np.array([e["m"] for e in ents], dtype=np.int64),
            "S": np.array([e["s"] for e in ents], dtype=np.int64),
            "Mr": np.array([e["mr"] for e in ents], dtype=np.int64),
            "k": k, "pad": pad, "relu": lp.relu, "in_shape": (cin_all, lp.h, lp.w),
            "kind": lp.kind if lp.pool else "conv", "stride": lp.stride,
            "dw": lp.depthwise and not lp.pool, "src": lp.src, "res": lp.res,
            "lo": lp.lo, "hi": lp.hi}
