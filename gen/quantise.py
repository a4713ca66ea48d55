"""Activation quantisation and the post-processing constants of every layer.

Quantisation (documented contract, docs/quantisation.md):

* inputs are floats in ``[0, 1]`` mapped to u8 by ``round(x * 255)`` (input scale 1/255);
* weights: the scheme's integer weights with a per-output-channel scale ``sw[co]``;
* a hidden layer's output scale ``s_out`` is its largest float activation on the calibration
  inputs / 255; the final layer's is its largest |value| / 2**15;
* per output channel ``bias_int = round(bias / (sw * s_in))`` and ``M / 2**S ~ sw * s_in /
  s_out`` (16-bit ``M``, ``S`` <= 47), see ``gen.network.requant``.
"""

from __future__ import annotations

import numpy as np

from .layer import ModelError
from .memmap import POST
from .network import forward_float, requant_params
from .plan import LayerPlan

__all__ = ["quantise", "golden_entry"]


def quantise(layers, ints, shapes, calib, input_shape, lanes):
    """Layer table and post-processing words (bias, M, S per output channel) for integer
    weights ``ints`` = ``[(W_int [cout, terms], sw [cout])]``, calibrated on ``calib``."""
    # Calibration: float forward with the compressed weights.
    fl = []
    for ly, (W, sw), (cin, h, w, k, pad, oh, ow) in zip(layers, ints, shapes):
        fl.append({"W": W * sw[:, None], "bias": ly.bias if ly.bias is not None else np.zeros(ly.cout),
                   "k": k, "pad": pad, "relu": ly.relu if ly.relu is not None else ly is not layers[-1],
                   "in_shape": (cin, h, w)})
    if calib is None:
        calib = np.random.default_rng(0).random((64,) + input_shape)
    calib = np.round(np.clip(np.asarray(calib, dtype=np.float64), 0, 1) * 255) / 255
    _, outs = forward_float(fl, calib.reshape((calib.shape[0],) + input_shape))

    plans = []
    post_words = []
    s_in = 1.0 / 255
    for i, (ly, (W, sw), f, (cin, h, w, k, pad, oh, ow)) in enumerate(
            zip(layers, ints, fl, shapes)):
        final = i == len(layers) - 1
        peak = float(np.max(np.abs(outs[i]))) if outs[i].size else 0.0
        s_out = (peak or 1.0) / (2 ** 15 if final else 255)
        lp = LayerPlan(ly.name, ly.kind, cin, ly.cout, h, w, k, pad, bool(f["relu"]), oh, ow,
                       cin * k * k, -(-ly.cout // lanes), post_base=len(post_words),
                       scale_w=[float(v) for v in sw], scale_in=s_in, scale_out=s_out)
        bias = f["bias"]
        for co in range(ly.cout):
            b = int(round(bias[co] / (sw[co] * s_in))) if sw[co] > 0 else 0
            if not -(1 << 31) <= b < (1 << 31):
                raise ModelError(f"Layer '{ly.name}': bias {bias[co]:g} of channel {co} does not "
                                 f"fit 32 bits at this weight scale")
            M, S = requant_params(sw[co] * s_in / s_out)
            post_words.append(POST.pack(bias=b, m=M, s=S))
        plans.append(lp)
        s_in = s_out
    return plans, post_words


def golden_entry(lp, W, posts) -> dict:
    """One layer of ``gen.network.forward_int`` from its weights and post-processing words."""
    ents = [POST.unpack(w) for w in posts[lp.post_base:lp.post_base + lp.cout]]
    return {"W": W,
            "bias": np.array([e["bias"] for e in ents], dtype=np.int64),
            "M": np.array([e["m"] for e in ents], dtype=np.int64),
            "S": np.array([e["s"] for e in ents], dtype=np.int64),
            "k": lp.k, "pad": lp.pad, "relu": lp.relu, "in_shape": (lp.cin, lp.h, lp.w)}
