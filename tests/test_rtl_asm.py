# amaranth: UnusedElaboratable=no
"""ASM RTL (rtl/asm.py) in the Amaranth simulator: fast, bit-exact against gen.golden."""

import itertools

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Shape
from amaranth.sim import Simulator

from insitu.gen import golden
from insitu.gen.golden import AsmCodeFormat
from insitu.rtl.asm import AsmMacArray, AsmProduct, PrecomputeBank, asm_code_layout
from insitu.sim.amaranth_tb import simulate_streams
from insitu.sim.asm_vectors import (
    bad_code_case,
    encode_weights,
    expected,
    make_accumulations,
)

CLK = 1e-8


def run_mac(dut, accs_codes, *, seed=0, p_gap=0.0, p_stall=0.0):
    """Drive ``[(x[T], codes[T][lanes]), ...]`` through ``dut``; return unpacked outputs."""
    words = []
    for x, codes in accs_codes:
        for t in range(len(x)):
            words.append(dut.io.pack_input(int(x[t]), codes[t], t == len(x) - 1))
    # Bounded: a stall or a lost result fails the test instead of hanging it.
    got = simulate_streams(dut, {dut.i: words}, dut.o, len(accs_codes), np.random.default_rng(seed),
                           p_gap, p_stall)
    return [dut.io.unpack_output(w) for w in got]


def check(results, exp):
    for k, (r, e) in enumerate(zip(results, exp, strict=True)):
        assert not r["bad_code"] and not r["overrun"], f"accumulation {k}: flags set {r}"
        assert r["acc"] == e, f"accumulation {k}: RTL {r['acc']} != golden {e}"


def encoded(p, accs):
    return [(x, encode_weights(p, w)) for x, w in accs]


GRID = list(itertools.product(["A1", "A2", "A4", "A8"], [4, 8, 12], [False, True]))


@pytest.mark.parametrize("alphabet, weight_bits, act_signed", GRID)
def test_mac_matches_golden_under_stalls(alphabet, weight_bits, act_signed):
    lanes = [1, 3, 8, 5][GRID.index((alphabet, weight_bits, act_signed)) % 4]
    dut = AsmMacArray(alphabet=alphabet, weight_bits=weight_bits, act_bits=8,
                      act_signed=act_signed, lanes=lanes, acc_len=20)
    p = dut.params()
    accs = make_accumulations(p, seed=weight_bits + lanes, n_random=10, max_len=12)
    results = run_mac(dut, encoded(p, accs), seed=3, p_gap=0.3, p_stall=0.4)
    check(results, expected(p, accs))


class _FewProductsPerCopy(AsmMacArray):
    PRODUCTS_PER_COPY = 2           # copies of the bank's stage-1 register at a few lanes


@pytest.mark.parametrize("lanes, copies", [(5, 2), (8, 4)])
def test_bank_register_copies_bit_exact(lanes, copies):
    """Lanes read the bank through ``copies`` stage-1 register copies (``MacPipeline.copies``;
    2 at 16 x 8 and 4 at 16 x 16 in the engine; from 4 the copies hold the activations and
    each lane group has its own bank): each lane group's copy holds its term under input
    gaps and output stalls."""
    dut = _FewProductsPerCopy(alphabet="A4", weight_bits=8, lanes=lanes, acc_len=20)
    assert dut.copies == copies and AsmMacArray(lanes=lanes).copies == 1
    text = rtlil.convert(dut)
    reg = "x" if copies >= dut.LOCAL_BANKS else "mult"        # from 4 copies, banks per group
    assert [k for k in range(copies + 1) if f"s1_{reg}_copy{k} " in text] == list(range(copies))
    p = dut.params()
    accs = make_accumulations(p, seed=lanes, n_random=10, max_len=12)
    check(run_mac(dut, encoded(p, accs), seed=5, p_gap=0.3, p_stall=0.4), expected(p, accs))


def test_planted_wrong_weight_fails():
    """The check can fail: one flipped weight-code bit gives a detected mismatch."""
    dut = AsmMacArray(alphabet="A2", weight_bits=8, lanes=3, acc_len=8)
    p = dut.params()
    accs = make_accumulations(p, seed=1, n_random=4, max_len=6)
    sent = encoded(p, accs)
    sent[0][1][0][1] ^= 1 << 2            # accumulation 0, term 0, lane 1: flip a select bit
    with pytest.raises(AssertionError, match=r"accumulation 0: RTL"):
        check(run_mac(dut, sent), expected(p, accs))


@pytest.mark.parametrize("alphabet", ["A4", "A8"])
def test_bad_code_flagged_and_zeroed(alphabet):
    dut = AsmMacArray(alphabet=alphabet, weight_bits=8, lanes=2, acc_len=8)
    p = dut.params()
    x, codes, exp_acc = bad_code_case(p, seed=2)
    good = make_accumulations(p, seed=3, n_random=2, max_len=3)[:2]
    results = run_mac(dut, [(x, codes)] + encoded(p, good), p_stall=0.3, seed=4)
    assert results[0]["bad_code"] and results[0]["acc"] == exp_acc
    check(results[1:], expected(p, good))          # the flag clears for the next accumulation


def test_overrun_flagged():
    dut = AsmMacArray(alphabet="A2", weight_bits=4, lanes=1, acc_len=4)
    fmt = dut.fmt
    five = ([1] * 5, [[fmt.encode_value(1)]] * 5)
    four = ([1] * 4, [[fmt.encode_value(1)]] * 4)
    results = run_mac(dut, [five, four])
    assert results[0]["overrun"] and not results[1]["overrun"]
    assert results[1]["acc"] == [4]


def test_throughput_and_latency():
    """One term per cycle with no bubbles; first result LATENCY cycles after its last term."""
    dut = AsmMacArray(alphabet="A4", weight_bits=8, lanes=4, acc_len=16)
    p = dut.params()
    accs = make_accumulations(p, seed=9, n_random=6, max_len=5)[:6]
    words = []
    for x, codes in encoded(p, accs):
        for t in range(len(x)):
            words.append(dut.io.pack_input(int(x[t]), codes[t], t == len(x) - 1))
    first_len = len(accs[0][0])
    log = {"accepted": [], "out": []}
    sim = Simulator(dut)
    sim.add_clock(CLK)

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        k = 0
        for cycle in range(len(words) + 20):
            if k < len(words):
                ctx.set(dut.i.payload.as_value(), words[k])
                ctx.set(dut.i.valid, 1)
            else:
                ctx.set(dut.i.valid, 0)
            _, _, iv, ir, ov = await ctx.tick().sample(dut.i.valid, dut.i.ready, dut.o.valid)
            if iv and ir:
                log["accepted"].append(cycle)
                k += 1
            if ov:
                log["out"].append(cycle)

    sim.add_testbench(tb)
    sim.run()
    assert log["accepted"] == list(range(len(words)))              # no bubbles
    assert log["out"][0] == first_len - 1 + AsmMacArray.LATENCY
    assert len(log["out"]) == len(accs)


def test_output_held_under_backpressure():
    """While o.ready is low the result stays valid and stable; nothing is lost or duplicated."""
    dut = AsmMacArray(alphabet="A1", weight_bits=8, lanes=2, acc_len=4)
    p = dut.params()
    accs = [a for a in make_accumulations(p, seed=5, n_random=8, max_len=4)][:8]
    results = run_mac(dut, encoded(p, accs), seed=11, p_stall=0.9)
    check(results, expected(p, accs))


# -- combinational blocks, exhaustively ----------------------------------------------------

@pytest.mark.parametrize("alphabet, signed", itertools.product(["A1", "A2", "A4", "A8", "1,9,11"], [False, True]))
def test_precompute_bank_exhaustive(alphabet, signed):
    bank = PrecomputeBank(alphabet=alphabet, act_bits=6, act_signed=signed)
    lo, hi = golden.act_range(6, signed)
    sim = Simulator(bank)

    async def tb(ctx):
        for x in range(lo, hi + 1):
            ctx.set(bank.x, x)
            for k, a in enumerate(bank.alphabet):
                assert ctx.get(bank.mult[k]) == a * x

    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("alphabet, signed", itertools.product(["A1", "A2", "A4", "A8"], [False, True]))
def test_product_every_code(alphabet, signed):
    """Every 8-bit weight code times extreme and random activations: x*w, or flagged."""
    prod = AsmProduct(alphabet=alphabet, weight_bits=8, act_bits=5, act_signed=signed)
    fmt = prod.fmt
    alph = golden.parse_alphabet(alphabet)
    lo, hi = golden.act_range(5, signed)
    sim = Simulator(prod)

    async def tb(ctx):
        for x in (lo, hi, 1, -1 if signed else 2, 0):
            for k, a in enumerate(alph):
                ctx.set(prod.mult[k], a * x)
            for code in range(1 << fmt.width):
                ctx.set(prod.code.as_value(), code)
                if fmt.is_valid(code):
                    assert not ctx.get(prod.invalid)
                    assert ctx.get(prod.product) == x * fmt.decode_value(code), (x, code)
                    sign = -1 if ctx.get(prod.negate) else 1
                    assert sign * ctx.get(prod.magnitude) == x * fmt.decode_value(code), (x, code)
                else:
                    assert ctx.get(prod.invalid) and ctx.get(prod.product) == 0, (x, code)
                    assert ctx.get(prod.magnitude) == 0 and not ctx.get(prod.negate), (x, code)

    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("alphabet, bits", itertools.product(["A1", "A2", "A4", "A8"], [4, 8, 12]))
def test_code_layout_matches_golden_format(alphabet, bits):
    fmt = AsmCodeFormat(bits, alphabet)
    lay = asm_code_layout(fmt)
    assert lay.size == fmt.width
    assert lay["sign"].offset == fmt.sign_offset
    for i in range(fmt.quartets):
        q = lay["q"].offset + i * fmt.quartet_bits
        off = 0
        for name, width in fmt.quartet_fields():
            assert lay["q"].shape.elem_shape[name].offset == off
            assert Shape.cast(lay["q"].shape.elem_shape[name].shape).width == width
            off += width
        assert q == i * fmt.quartet_bits


# -- parameters ----------------------------------------------------------------------------

def test_properties_roundtrip():
    dut = AsmMacArray(alphabet="1,3", weight_bits=12, act_bits=6, act_signed=True, lanes=5,
                      acc_len=100)
    assert dut.params() == {"alphabet": "A2", "weight_bits": 12, "act_bits": 6,
                            "act_signed": True, "lanes": 5, "acc_len": 100,
                            "acc_bits": golden.asm_acc_bits(6, True, 12, "A2", 100)}
    assert AsmMacArray(**dut.params()).params() == dut.params()
    assert AsmMacArray(acc_bits=40).acc_bits == 40


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"alphabet": "2,4"}, ValueError, r"^Alphabet must contain odd integers in 1\.\.15, not '2,4'$"),
    ({"alphabet": (1, 4)}, ValueError, r"^Alphabet must contain odd integers in 1\.\.15, not \(1, 4\)$"),
    ({"lanes": 0}, TypeError, r"^Lane count must be a positive integer, not 0$"),
    ({"lanes": "8"}, TypeError, r"^Lane count must be a positive integer, not '8'$"),
    ({"weight_bits": 6}, ValueError, r"^Weight magnitude bits must be 4, 8, 12 or 16, not 6$"),
    ({"weight_bits": 20}, ValueError, r"^Weight magnitude bits must be 4, 8, 12 or 16, not 20$"),
    ({"weight_bits": 0}, TypeError, r"^Weight magnitude bits must be a positive integer, not 0$"),
    ({"act_bits": 0}, TypeError, r"^Activation bits must be a positive integer, not 0$"),
    ({"act_bits": 40}, ValueError, r"^Activation bits must be at most 32, not 40$"),
    ({"act_bits": 1, "act_signed": True}, ValueError, r"^Signed activations need at least 2 bits, not 1$"),
    ({"act_signed": 1}, TypeError, r"^Activation signedness must be a bool, not 1$"),
    ({"acc_len": 0}, TypeError, r"^Accumulation length must be a positive integer, not 0$"),
    ({"acc_bits": 0}, TypeError, r"^Accumulator bits must be a positive integer, not 0$"),
    ({"acc_bits": 20, "acc_len": 1024}, ValueError,
     r"^Accumulator bits must be at least 27 for 1024 terms, not 20$"),
])
def test_invalid_parameters(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        AsmMacArray(**kwargs)
