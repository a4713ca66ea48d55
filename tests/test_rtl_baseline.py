# amaranth: UnusedElaboratable=no
"""Baseline MAC arrays (rtl/baseline.py): bit-exact with the plain-product golden MAC."""

import numpy as np
import pytest

from insitu.gen.golden import asm_mac
from insitu.rtl.baseline import ExactMacArray, Pow2MacArray
from insitu.sim.amaranth_tb import simulate_streams


def run(dut, accs, pack, seed=0):
    lay = dut.i.payload.shape()
    words = [lay.const({"x": int(x[t]), "w": pack(w[t]), "last": int(t == len(x) - 1)}).as_bits()
             for x, w in accs for t in range(len(x))]
    got = simulate_streams(dut, {dut.i: words}, dut.o, len(accs), np.random.default_rng(seed), 0.3, 0.4)
    olay = dut.o.payload.shape()
    out = []
    for g in got:
        v = olay.from_bits(g)
        out.append([int(v.acc[n]) for n in range(len(accs[0][1][0]))])
    return out


@pytest.mark.parametrize("act_signed, lanes", [(False, 1), (True, 3), (False, 8)])
def test_exact_mac(act_signed, lanes):
    rng = np.random.default_rng(lanes)
    dut = ExactMacArray(weight_bits=8, act_bits=8, act_signed=act_signed, lanes=lanes, acc_len=16)
    lo, hi = (-128, 127) if act_signed else (0, 255)
    accs = [(rng.integers(lo, hi + 1, t), rng.integers(-128, 128, (t, lanes))) for t in (1, 5, 16)]
    accs.append((np.full(16, lo if act_signed else hi), np.full((16, lanes), -128)))
    got = run(dut, accs, lambda row: [int(v) for v in row])
    assert got == [[int(v) for v in asm_mac(x, w, acc_bits=dut.acc_bits)] for x, w in accs]


@pytest.mark.parametrize("act_signed, lanes", [(False, 1), (True, 4)])
def test_pow2_mac(act_signed, lanes):
    rng = np.random.default_rng(lanes + 10)
    dut = Pow2MacArray(exp_bits=3, act_bits=8, act_signed=act_signed, lanes=lanes, acc_len=16)
    lo, hi = (-128, 127) if act_signed else (0, 255)
    accs = []
    for t in (1, 7, 16):
        x = rng.integers(lo, hi + 1, t)
        zero = rng.random((t, lanes)) < 0.2
        sign = rng.integers(0, 2, (t, lanes))
        exp = rng.integers(0, 8, (t, lanes))
        accs.append((x, (zero, sign, exp)))
    def weights(z, s, e):
        return np.where(z, 0, np.where(s == 1, -1, 1) * (1 << e))
    packed = [(x, [[{"zero": int(z[t, n]), "sign": int(s[t, n]), "exp": int(e[t, n])} for n in range(lanes)]
                   for t in range(len(x))]) for x, (z, s, e) in accs]
    got = run(dut, packed, lambda row: row)
    assert got == [[int(v) for v in asm_mac(x, weights(*zse), acc_bits=dut.acc_bits)] for x, zse in accs]


def test_baseline_bad_params():
    with pytest.raises(TypeError, match=r"^Lane count must be a positive integer, not 0$"):
        ExactMacArray(lanes=0)
    with pytest.raises(TypeError, match=r"^Exponent bits must be an integer in 1\.\.5, not 9$"):
        Pow2MacArray(exp_bits=9)
