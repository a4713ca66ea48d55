"""cocotb testbench of the weight generators (``insitu.rtl.weightgen``).

``DUT_PARAMS``: JSON with ``scheme`` (``smartdeal`` or ``mlg``) and the generator's parameters.
SmartDeal: a real compressed conv and Linear layer plus adversarial blocks (extreme bases and
exponents, all-zero blocks, out-of-range codes), through decoder, basis register and rebuild,
against ``gen.golden.sd_rebuild`` / ``requant_shift``.  MLG: a compressed layer's terms against
``gen.golden.mlg_generate``.  ``PLANT=basis`` corrupts one basis element.
"""

import json
import os
import random

import cocotb
import numpy as np

from insitu.gen.golden import SdFormat, mlg_bits
from insitu.gen.mlg import MlgConfig
from insitu.gen.mlg import compress_layer as mlg_compress
from insitu.gen.model import Layer
from insitu.gen.smartdeal import SdConfig
from insitu.gen.smartdeal import compress_layer as sd_compress
from insitu.rtl.weightgen import SdWeightGen, mlg_input_layout, sd_basis_layout
from insitu.sim.cocotb_util import interrupt_with_reset, report, start, transfer
from insitu.sim.wg_vectors import (mlg_terms, sd_adversarial_blocks, sd_blocks_from_layer, sd_expected,
                                   sd_stream)

P = json.loads(os.environ["DUT_PARAMS"])
PLANT = os.environ.get("PLANT", "")


def trained_like(rng, shape, rank=4):
    fan = int(np.prod(shape[1:]))
    w = rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, fan))
    return ((w + 0.1 * rng.standard_normal(w.shape)) / np.sqrt(fan)).reshape(shape)


def signed(v, width):
    return v - (1 << width) if v >> (width - 1) else v


async def run_sd(dut, blocks, seed, stalls):
    fmt = SdFormat(P["e_min"], P["e_max"], P["word_bits"])
    words, basis = sd_stream(blocks, fmt)
    exp = sd_expected(blocks, fmt, P["requant"])
    blay = sd_basis_layout(P["basis_bits"])
    if PLANT == "basis":
        basis[0][0][0] ^= 1
    bwords = [blay.const({"b": b, "shift": sh, "rows": r}).as_bits() for b, sh, r in basis]
    got = await transfer(dut, {"i_coef": words, "i_basis": bwords}, "o", len(exp),
                         random.Random(seed), 0.3 if stalls else 0.0, 0.4 if stalls else 0.0)
    ob = 8 if P["requant"] else None
    lay = SdWeightGen.output_layout(ob or _exact_bits())
    width = ob or _exact_bits()
    rows = [{"w": [signed((w >> (lay["w"].offset + k * width)) & ((1 << width) - 1), width)
                   for k in range(3)],
             "err": (w >> lay["err"].offset) & 1, "last": (w >> lay["last"].offset) & 1,
             "end": (w >> lay["end"].offset) & 1} for w in got]
    return exp, rows


def _exact_bits():
    from insitu.gen.golden import sd_weight_bits
    return sd_weight_bits(P["basis_bits"], SdFormat(P["e_min"], P["e_max"], P["word_bits"]))


@cocotb.test(skip=P["scheme"] != "smartdeal")
@cocotb.parametrize(stalls=[False, True])
async def smartdeal_layers(dut, stalls):
    await start(dut, ["i_coef", "i_basis"], ["o"])
    rng = np.random.default_rng(21 + stalls)
    cfg = SdConfig(e_min=P["e_min"], e_max=P["e_max"], word_bits=P["word_bits"],
                   basis_bits=P["basis_bits"], threshold=0.02)
    blocks = []
    for kind, shape in (("conv3x3", (4, 70, 3, 3)), ("linear", (6, 40))):
        blocks += sd_blocks_from_layer(sd_compress(Layer("l", kind, trained_like(rng, shape)), cfg))
    exp, rows = await run_sd(dut, blocks, 3 + stalls, stalls)
    report(dut, f"weight_gen_sd_layers_{'stalls' if stalls else 'flat'}", exp, rows,
           lambda k: f"row {k}")


@cocotb.test(skip=P["scheme"] != "smartdeal")
async def smartdeal_adversarial(dut):
    await start(dut, ["i_coef", "i_basis"], ["o"])
    fmt = SdFormat(P["e_min"], P["e_max"], P["word_bits"])
    blocks = sd_adversarial_blocks(np.random.default_rng(23), fmt, P["basis_bits"])
    exp, rows = await run_sd(dut, blocks, 4, True)
    report(dut, "weight_gen_sd_adversarial", exp, rows, lambda k: f"row {k}")


def mlg_words():
    """Input words, golden kernels and an output decoder for a compressed MLG layer."""
    rng = np.random.default_rng(31)
    cfg = MlgConfig(P["Bi"], P["Bo"], P["qb"], P["qu"], P["qv"])
    kind, shape = ("conv3x3", (12, 6, 3, 3)) if P["K2"] == 9 else ("linear", (12, 16))
    mlg = mlg_compress(Layer("l", kind, trained_like(rng, shape)), cfg)
    assert (mlg.level1, mlg.level2, mlg.Bo) == (P["level1"], P["level2"], P["Bo"]), "bench/DUT mismatch"
    terms, exp = mlg_terms(mlg)
    lay = mlg_input_layout(P["Bi"], P["K2"], P["qb"], P["qu"], P["qv"], P["level1"], P["level2"])
    words = []
    for t in terms:
        value = {"b": t["b"], "last": int(t["last"])}
        if P["level1"]:
            value["u"] = t["u"]
        if P["level2"]:
            value["v"] = t["v"]
        words.append(lay.const(value).as_bits())
    wb = mlg_bits(P["Bi"], P["Bo"], P["qb"], P["qu"], P["qv"], P["level1"], P["level2"])[1]

    def decode(got):
        return [[signed((w >> (t * wb)) & ((1 << wb) - 1), wb) for t in range(P["K2"])] for w in got]
    return words, exp, decode


@cocotb.test(skip=P["scheme"] != "mlg")
@cocotb.parametrize(stalls=[False, True])
async def mlg_layer(dut, stalls):
    await start(dut, ["i"], ["o"])
    words, exp, decode = mlg_words()
    if PLANT == "basis":
        words[0] ^= 1
    got = await transfer(dut, {"i": words}, "o", len(exp), random.Random(7 + stalls),
                         0.3 if stalls else 0.0, 0.4 if stalls else 0.0)
    report(dut, f"weight_gen_mlg_{'stalls' if stalls else 'flat'}", exp, decode(got),
           lambda k: f"kernel {k}")


@cocotb.test()
async def reset_mid_transfer(dut):
    """A reset in the middle of a transfer: the next layer is generated exactly."""
    rng = random.Random(41)
    if P["scheme"] == "smartdeal":
        await start(dut, ["i_coef", "i_basis"], ["o"])
        fmt = SdFormat(P["e_min"], P["e_max"], P["word_bits"])
        blocks = sd_adversarial_blocks(np.random.default_rng(43), fmt, P["basis_bits"])[-4:]
        words, basis = sd_stream(blocks, fmt)
        blay = sd_basis_layout(P["basis_bits"])
        bwords = [blay.const({"b": b, "shift": sh, "rows": r}).as_bits() for b, sh, r in basis]
        await interrupt_with_reset(dut, {"i_coef": words, "i_basis": bwords}, "o", 23, rng)
        exp, rows = await run_sd(dut, blocks, 44, True)
        report(dut, "weight_gen_reset_mid_transfer", exp, rows, lambda k: f"row {k}")
    else:
        await start(dut, ["i"], ["o"])
        words, exp, decode = mlg_words()
        await interrupt_with_reset(dut, {"i": words}, "o", 17, rng)
        got = await transfer(dut, {"i": words}, "o", len(exp), rng, 0.2, 0.3)
        report(dut, "weight_gen_reset_mid_transfer", exp, decode(got), lambda k: f"kernel {k}")
