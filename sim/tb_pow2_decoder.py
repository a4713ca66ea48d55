"""cocotb testbench of the power-of-2 sparse decoder (``insitu.rtl.pow2.Pow2Decoder``).

``DUT_PARAMS``: JSON ``{"e_min", "e_max", "word_bits"}``; ``PLANT=bit`` flips one stream bit.
Streams: several layers back to back (adversarial rows: max/min exponents, all-zero and
fully dense chunks, the longest chunk, runs of empty rows, out-of-range exponent codes) plus
rows of a real SmartDeal-compressed layer; compared with ``gen.golden.sd_unpack``.
"""

import json
import os
import random

import cocotb
import numpy as np

from insitu.gen.golden import SdFormat
from insitu.gen.model import Layer
from insitu.gen.smartdeal import SdConfig, compress_layer
from insitu.sim.cocotb_util import interrupt_with_reset, report, start, transfer
from insitu.sim.sd_vectors import (
    adversarial_layers,
    decoder_expected,
    decoder_words,
    random_rows,
    unpack_decoded_row,
)

P = json.loads(os.environ["DUT_PARAMS"])
FMT = SdFormat(P["e_min"], P["e_max"], P["word_bits"])
PLANT = os.environ.get("PLANT", "")


def layers(seed):
    rng = np.random.default_rng(seed)
    out = adversarial_layers(rng, FMT) + [random_rows(rng, 50, FMT, d) for d in (0.2, 0.8)]
    w = rng.standard_normal((8, 4)) @ rng.standard_normal((4, 16 * 9)) / 12
    sd = compress_layer(Layer("l", "conv3x3", w.reshape(8, 16, 3, 3)),
                        SdConfig(e_min=P["e_min"], e_max=P["e_max"], word_bits=P["word_bits"],
                                 threshold=0.02))
    out.append((sd.elemmask.reshape(-1, 3), sd.sgn.reshape(-1, 3), sd.expu.reshape(-1, 3)))
    return out


@cocotb.test()
@cocotb.parametrize(stalls=[False, True])
async def streams(dut, stalls):
    await start(dut, ["i"], ["o"])
    ls = layers(11 + stalls)
    exp = decoder_expected(ls, FMT)
    words = decoder_words(ls, FMT)
    if PLANT == "bit":
        words[1] ^= 1 << 3
    got = await transfer(dut, {"i": words}, "o", len(exp), random.Random(5 + stalls),
                         0.3 if stalls else 0.0, 0.4 if stalls else 0.0)
    report(dut, f"pow2_decoder_{'stalls' if stalls else 'flat'}", exp,
           [unpack_decoded_row(FMT, w) for w in got], lambda k: f"row {k}")


@cocotb.test()
async def reset_mid_transfer(dut):
    """Reset mid-stream (bits half consumed, a header pending): the next stream decodes exactly."""
    await start(dut, ["i"], ["o"])
    ls = layers(13)
    rng = random.Random(9)
    await interrupt_with_reset(dut, {"i": decoder_words(ls, FMT)}, "o", 37, rng)
    exp = decoder_expected(ls, FMT)
    got = await transfer(dut, {"i": decoder_words(ls, FMT)}, "o", len(exp), rng, 0.2, 0.3)
    report(dut, "pow2_decoder_reset_mid_transfer", exp, [unpack_decoded_row(FMT, w) for w in got],
           lambda k: f"row {k}")
