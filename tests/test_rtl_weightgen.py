# amaranth: UnusedElaboratable=no
"""Weight generators (rtl/weightgen.py) in the Amaranth simulator, fed by the real compressors."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from insitu.gen.golden import SdFormat
from insitu.gen.mlg import MlgConfig
from insitu.gen.mlg import compress_layer as mlg_compress
from insitu.gen.model import Layer
from insitu.gen.smartdeal import SdConfig
from insitu.gen.smartdeal import compress_layer as sd_compress
from insitu.rtl.weightgen import MlgWeightGen, SdWeightGen
from insitu.sim.amaranth_tb import simulate_streams, stream_put_many
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

CLK = 1e-8


def run_sd(dut, words, basis, n_rows, seed=0, p_gap=0.0, p_stall=0.0):
    bwords = sd_basis_words(basis, dut.params()["basis_bits"])
    got = simulate_streams(dut, {dut.i_coef: words, dut.i_basis: bwords}, dut.o, n_rows,
                           np.random.default_rng(seed), p_gap, p_stall)
    return sd_unpack_rows(got, dut.out_bits)


def check(rows, exp):
    for k, (r, e) in enumerate(zip(rows, exp, strict=True)):
        assert r == e, f"row {k}: RTL {r} != golden {e}"


@pytest.mark.parametrize("requant", [True, False])
@pytest.mark.parametrize("kind, shape", [("conv3x3", (4, 70, 3, 3)), ("linear", (6, 40))])
def test_sd_generator_on_compressed_layer(requant, kind, shape):
    rng = np.random.default_rng(1)
    sd = sd_compress(Layer("l", kind, trained_like(rng, shape)), SdConfig(threshold=0.02))
    dut = SdWeightGen(requant=requant)
    blocks = sd_blocks_from_layer(sd)
    words, basis = sd_stream(blocks, sd.config.fmt)
    exp = sd_expected(blocks, sd.config.fmt, requant)
    check(run_sd(dut, words, basis, len(exp), seed=2, p_gap=0.2, p_stall=0.3), exp)
    if not requant:                       # the stream rebuilds exactly the compressor's weights
        W = np.array([r["w"] for r in exp]).reshape(sd.cout, -1, 3)
        np.testing.assert_array_equal(sd.rows_to_weight(W), sd.weight_fix())


@pytest.mark.parametrize("requant", [True, False])
def test_sd_generator_adversarial(requant):
    fmt = SdFormat()
    rng = np.random.default_rng(3)
    blocks = sd_adversarial_blocks(rng, fmt)
    dut = SdWeightGen(requant=requant)
    words, basis = sd_stream(blocks, fmt)
    exp = sd_expected(blocks, fmt, requant)
    assert any(r["err"] for r in exp)
    check(run_sd(dut, words, basis, len(exp), seed=4, p_gap=0.3, p_stall=0.4), exp)


def test_sd_generator_planted_wrong_basis_fails():
    rng = np.random.default_rng(5)
    fmt = SdFormat()
    blocks = sd_adversarial_blocks(rng, fmt)[-3:]
    words, basis = sd_stream(blocks, fmt)
    exp = sd_expected(blocks, fmt, False)
    basis[0][0][4] ^= 1                                   # one wrong basis element
    with pytest.raises(AssertionError, match=r"RTL .* != golden"):
        check(run_sd(SdWeightGen(requant=False), words, basis, len(exp)), exp)


def test_sd_generator_one_row_per_cycle():
    rng = np.random.default_rng(6)
    fmt = SdFormat()
    from insitu.sim.sd_vectors import random_rows
    blocks = [(rng.integers(-127, 128, (3, 3)), 2, random_rows(rng, 40, fmt, 0.9)) for _ in range(4)]
    words, basis = sd_stream(blocks, fmt)
    dut = SdWeightGen()
    bwords = sd_basis_words(basis, 8)
    cycles = []
    sim = Simulator(dut)
    sim.add_clock(CLK)

    async def coef(ctx):
        await stream_put_many(ctx, dut.i_coef, words)

    async def bases(ctx):
        await stream_put_many(ctx, dut.i_basis, bwords)

    async def out(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(cycles) < 160:
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            if valid:
                cycles.append(cycle)
            cycle += 1

    for tb in (coef, bases, out):
        sim.add_testbench(tb)
    sim.run_until(CLK * 600)
    steady = cycles[4:]
    assert steady == list(range(steady[0], steady[0] + len(steady)))   # no bubble at block edges


# -- MLG ---------------------------------------------------------------------------------------

def run_mlg(dut, terms, n_out, seed=0, p_gap=0.0, p_stall=0.0):
    p = dut.params()
    words = mlg_input_words(terms, p["Bi"], p["K2"], p["qb"], p["qu"], p["qv"], p["level1"], p["level2"])
    got = simulate_streams(dut, {dut.i: words}, dut.o, n_out, np.random.default_rng(seed), p_gap, p_stall)
    return mlg_unpack_kernels(got, p["K2"], dut.w_bits)


@pytest.mark.parametrize("kind, shape, cfg", [
    ("conv3x3", (12, 6, 3, 3), MlgConfig(2, 5, 3, 6, 3)),      # both levels
    ("conv3x3", (4, 3, 3, 3), MlgConfig(2, 44, 3, 6, 3)),      # level 2 bypassed
    ("linear", (10, 16), MlgConfig(2, 4, 4, 6, 4)),            # level 1 bypassed
    ("conv3x3", (6, 4, 3, 3), MlgConfig(1, 3, 8, 8, 8)),       # wide codes
])
def test_mlg_generator_on_compressed_layer(kind, shape, cfg):
    rng = np.random.default_rng(7)
    mlg = mlg_compress(Layer("l", kind, trained_like(rng, shape)), cfg)
    dut = MlgWeightGen(Bi=max(1, mlg.Bi), Bo=mlg.Bo, K2=mlg.k2, qb=cfg.qb, qu=cfg.qu, qv=cfg.qv,
                       level1=mlg.level1, level2=mlg.level2)
    terms, exp = mlg_terms(mlg)
    got = run_mlg(dut, terms, len(exp), seed=8, p_gap=0.2, p_stall=0.3)
    for k, (g, e) in enumerate(zip(got, exp, strict=True)):
        assert g == e, f"kernel {k}: RTL {g} != golden {e}"


def test_mlg_generator_extreme_codes():
    """All-max and all-min codes over the longest sum hit the derived width exactly."""
    Bi, Bo, K2, qb, qu, qv = 2, 6, 9, 3, 6, 3
    dut = MlgWeightGen(Bi=Bi, Bo=Bo, K2=K2, qb=qb, qu=qu, qv=qv)
    terms, exp = [], []
    for bc, uc, vc in [(7, 63, 7), (0, 63, 7), (7, 0, 0), (0, 0, 0)]:
        for o in range(Bo):
            terms.append({"b": [[bc] * K2] * Bi, "u": [uc] * Bi, "v": vc, "last": o == Bo - 1})
        val = Bo * (2 * vc - 7) * Bi * (2 * uc - 63) * (2 * bc - 7)
        exp.append([val] * K2)
    assert max(abs(e[0]) for e in exp) == Bo * 7 * Bi * 63 * 7
    assert run_mlg(dut, terms, len(exp), p_stall=0.5, seed=9) == exp


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"Bi": 0}, TypeError, r"^MLG Bi must be a positive integer, not 0$"),
    ({"qb": 17}, ValueError, r"^MLG qb must be at most 16 bits, not 17$"),
    ({"level1": 1}, TypeError, r"^MLG level1 must be a bool, not 1$"),
])
def test_mlg_bad_params(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        MlgWeightGen(**kwargs)


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"basis_bits": 1}, ValueError, r"^Basis bits must be an integer in 2\.\.16, not 1$"),
    ({"requant": "yes"}, TypeError, r"^Requant must be a bool, not 'yes'$"),
    ({"word_bits": 48}, ValueError, r"^Word bits must be a power of 2, not 48$"),
])
def test_sd_bad_params(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        SdWeightGen(**kwargs)
