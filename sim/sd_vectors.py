"""Stimulus for the power-of-2 decoder and the SmartDeal weight generator (pure numpy).

A "layer" here is ``(elemmask, sgn, expu)`` arrays ``[n, 3]`` of raw codes; exponent codes may be
out of range on purpose.  :func:`decoder_words` gives the words the decoder reads for a list of
layers, :func:`decoder_expected` the golden rows.
"""

from __future__ import annotations

import numpy as np

from ..gen.golden import SdFormat, sd_layer_stream, sd_unpack
from ..rtl.pow2 import pow2_row_layout

__all__ = ["random_rows", "adversarial_layers", "decoder_words", "decoder_expected",
           "unpack_decoded_row"]


def random_rows(rng, n: int, fmt: SdFormat, density: float = 0.5, bad: float = 0.0):
    m = (rng.random((n, 3)) < density).astype(np.int64)
    s = rng.integers(0, 2, (n, 3)) * m
    e = rng.integers(0, fmt.expu_max + 1, (n, 3)) * m
    if bad:
        hi = (1 << fmt.exp_bits) - 1
        if hi > fmt.expu_max:
            flip = (rng.random((n, 3)) < bad) & (m == 1)
            e = np.where(flip, rng.integers(fmt.expu_max + 1, hi + 1, (n, 3)), e)
    return m, s, e


def adversarial_layers(rng, fmt: SdFormat):
    """Max / min exponents, all-zero rows and chunks, fully dense rows, the longest chunk
    (192 rows), single-row layers, runs of empty rows, and out-of-range exponent codes."""
    n = 192
    dense = np.ones((n, 3), dtype=np.int64)
    layers = [
        (dense, rng.integers(0, 2, (n, 3)), np.full((n, 3), fmt.expu_max)),     # max exponent
        (dense, rng.integers(0, 2, (n, 3)), np.zeros((n, 3), dtype=np.int64)),  # min exponent
        (np.zeros((n, 3), dtype=np.int64),) * 3,                                # all-zero chunk
        (dense[:1], np.ones((1, 3), dtype=np.int64), np.full((1, 3), fmt.expu_max)),
        random_rows(rng, 100, fmt, density=0.05),                               # mostly empty
        random_rows(rng, 60, fmt, density=0.9, bad=0.1),                        # bad codes
    ]
    return [tuple(np.asarray(a, dtype=np.int64) for a in layer) for layer in layers]


def decoder_words(layers, fmt: SdFormat) -> list[int]:
    words = []
    for m, s, e in layers:
        words += sd_layer_stream(m, s, e, fmt)
    return words


def decoder_expected(layers, fmt: SdFormat) -> list[dict]:
    """Golden decoded rows, one dict per row, in stream order."""
    out = []
    for m, s, e in layers:
        stream = sd_layer_stream(m, s, e, fmt)
        M, S, E, err = sd_unpack(stream[1:], stream[0], fmt)
        for r in range(len(M)):
            out.append({"mask": [int(v) for v in M[r]], "sign": [int(v) for v in S[r]],
                        "expu": [int(v) for v in E[r]], "err": int(err[r]),
                        "last": int(r == len(M) - 1)})
    return out


def unpack_decoded_row(fmt: SdFormat, word: int) -> dict:
    """A decoder output word (``rtl.pow2.pow2_row_layout``) as the dict :func:`decoder_expected`
    gives."""
    lay = pow2_row_layout(fmt)
    eb = fmt.exp_bits

    def field(name, width):
        return (word >> lay[name].offset) & ((1 << width) - 1)
    expu = field("expu", 3 * eb)
    return {"mask": [(field("mask", 3) >> j) & 1 for j in range(3)],
            "sign": [(field("sign", 3) >> j) & 1 for j in range(3)],
            "expu": [(expu >> (j * eb)) & ((1 << eb) - 1) for j in range(3)],
            "err": field("err", 1), "last": field("last", 1)}
