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

from insitu.gen.golden import SdFormat, mlg_bits, sd_weight_bits
from insitu.gen.mlg import MlgConfig
from insitu.gen.mlg import compress_layer as mlg_compress
from insitu.gen.model import Layer
from insitu.gen.smartdeal import SdConfig
from insitu.gen.smartdeal import compress_layer as sd_compress
from insitu.sim.cocotb_util import interrupt_with_reset, report, start, transfer
from insitu.sim.wg_vectors import (
    mlg_input_words,
    mlg_terms,
    mlg_unpack_kernels,
    sd_adversarial_blocks,
    sd_basis_words,
    sd_blocks_from_layer,
    sd_expected,
    sd_stream,
    sd_unpack_rows,
    trained_like,
)

P = json.loads(os.environ["DUT_PARAMS"])
PLANT = os.environ.get("PLANT", "")


def out_bits():
    if P["requant"]:
        return 8
    return sd_weight_bits(P["basis_bits"], SdFormat(P["e_min"], P["e_max"], P["word_bits"]))


async def run_sd(dut, blocks, seed, stalls):
    fmt = SdFormat(P["e_min"], P["e_max"], P["word_bits"])
    words, basis = sd_stream(blocks, fmt)
    exp = sd_expected(blocks, fmt, P["requant"])
    if PLANT == "basis":
        basis[0][0][0] ^= 1
    got = await transfer(dut, {"i_coef": words, "i_basis": sd_basis_words(basis, P["basis_bits"])}, "o",
                         len(exp), random.Random(seed), 0.3 if stalls else 0.0, 0.4 if stalls else 0.0)
    return exp, sd_unpack_rows(got, out_bits())


@cocotb.test(skip=P["scheme"] != "smartdeal")
@cocotb.parametrize(stalls=[False, True])
async def smartdeal_layers(dut, stalls):
    await start(dut, ["i_coef", "i_basis"], ["o"])
    rng = np.random.default_rng(21 + stalls)
    cfg = SdConfig(e_min=P["e_min"], e_max=P["e_max"], word_bits=P["word_bits"],
                   basis_bits=P["basis_bits"], threshold=0.02)
    blocks = []
    filters = int(os.environ.get("SD_FILTERS", "4"))    # fewer for the slow gate-level runs
    for kind, shape in (("conv3x3", (filters, 70, 3, 3)), ("linear", (filters + 2, 40))):
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
    cout = int(os.environ.get("MLG_FILTERS", "12"))     # fewer for the slow gate-level run
    kind, shape = ("conv3x3", (cout, 6, 3, 3)) if P["K2"] == 9 else ("linear", (cout, 16))
    mlg = mlg_compress(Layer("l", kind, trained_like(rng, shape)), cfg)
    assert (mlg.level1, mlg.level2, mlg.Bo) == (P["level1"], P["level2"], P["Bo"]), "bench/DUT mismatch"
    terms, exp = mlg_terms(mlg)
    words = mlg_input_words(terms, P["Bi"], P["K2"], P["qb"], P["qu"], P["qv"], P["level1"], P["level2"])
    wb = mlg_bits(P["Bi"], P["Bo"], P["qb"], P["qu"], P["qv"], P["level1"], P["level2"])[1]

    def decode(got):
        return mlg_unpack_kernels(got, P["K2"], wb)
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
        await interrupt_with_reset(dut, {"i_coef": words, "i_basis": sd_basis_words(basis, P["basis_bits"])},
                                   "o", 23, rng)
        exp, rows = await run_sd(dut, blocks, 44, True)
        report(dut, "weight_gen_reset_mid_transfer", exp, rows, lambda k: f"row {k}")
    else:
        await start(dut, ["i"], ["o"])
        words, exp, decode = mlg_words()
        await interrupt_with_reset(dut, {"i": words}, "o", 17, rng)
        got = await transfer(dut, {"i": words}, "o", len(exp), rng, 0.2, 0.3)
        report(dut, "weight_gen_reset_mid_transfer", exp, decode(got), lambda k: f"kernel {k}")
