# amaranth: UnusedElaboratable=no
"""Power-of-2 sparse decoder (rtl/pow2.py) in the Amaranth simulator against gen.golden.sd_unpack."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from insitu.gen.golden import SdFormat
from insitu.rtl.pow2 import Pow2Decoder
from insitu.sim.amaranth_tb import simulate_streams, stream_put_many
from insitu.sim.sd_vectors import (
    adversarial_layers,
    decoder_expected,
    decoder_words,
    random_rows,
    unpack_decoded_row,
)

CLK = 1e-8


def run_decoder(dut, words, n_rows, *, seed=0, p_gap=0.0, p_stall=0.0):
    got = simulate_streams(dut, {dut.i: words}, dut.o, n_rows, np.random.default_rng(seed),
                           p_gap, p_stall)
    return [unpack_decoded_row(dut.fmt, w) for w in got]


def check(rows, exp):
    for k, (r, e) in enumerate(zip(rows, exp, strict=True)):
        assert r == e, f"row {k}: RTL {r} != golden {e}"


@pytest.mark.parametrize("e_min, e_max, word_bits", [(-8, 5, 32), (-4, 3, 32), (-8, 7, 64), (0, 0, 32)])
def test_decoder_matches_golden_under_stalls(e_min, e_max, word_bits):
    fmt = SdFormat(e_min, e_max, word_bits)
    dut = Pow2Decoder(e_min=e_min, e_max=e_max, word_bits=word_bits)
    rng = np.random.default_rng(word_bits + e_max)
    layers = adversarial_layers(rng, fmt) + [random_rows(rng, 40, fmt, d) for d in (0.3, 0.7)]
    exp = decoder_expected(layers, fmt)
    rows = run_decoder(dut, decoder_words(layers, fmt), len(exp), seed=1, p_gap=0.3, p_stall=0.3)
    check(rows, exp)
    assert any(r["err"] for r in exp) == (fmt.expu_max < (1 << fmt.exp_bits) - 1)


def test_decoder_one_row_per_cycle():
    """With words always available and the output always ready: one row every cycle, both for
    dense rows (19 bits) and runs of empty rows (1 bit)."""
    fmt = SdFormat()
    dut = Pow2Decoder()
    rng = np.random.default_rng(3)
    layers = [random_rows(rng, 150, fmt, 1.0), (np.zeros((150, 3), dtype=np.int64),) * 3]
    words = decoder_words(layers, fmt)
    n = 300
    cycles = []
    sim = Simulator(dut)
    sim.add_clock(CLK)

    async def producer(ctx):
        await stream_put_many(ctx, dut.i, words)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(cycles) < n:
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            if valid:
                cycles.append(cycle)
            cycle += 1

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run_until(CLK * 1000)
    assert len(cycles) == n
    # Steady state inside each layer: consecutive cycles (one header word between layers).
    first = cycles[5:145]
    assert first == list(range(first[0], first[0] + len(first)))
    second = cycles[155:295]
    assert second == list(range(second[0], second[0] + len(second)))


def test_planted_flipped_bit_is_caught():
    fmt = SdFormat()
    dut = Pow2Decoder()
    rng = np.random.default_rng(4)
    layers = [random_rows(rng, 30, fmt, 0.6)]
    words = decoder_words(layers, fmt)
    words[1] ^= 1 << 7
    with pytest.raises(AssertionError, match=r"RTL .* != golden"):
        check(run_decoder(dut, words, 30), decoder_expected(layers, fmt))


def test_bad_word_bits():
    with pytest.raises(ValueError, match=r"^Word bits must be a power of 2, not 48$"):
        Pow2Decoder(word_bits=48)
    with pytest.raises(ValueError, match=r"^SmartDeal e_max must be >= e_min, not -9 < -8$"):
        Pow2Decoder(e_max=-9)
