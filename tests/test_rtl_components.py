# amaranth: UnusedElaboratable=no
"""Signatures and parameter checks of the engine's components (as amaranth's own tests do)."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from test_engine import small_net

from insitu.gen.compiler import compile_model
from insitu.gen.memmap import POST_BITS
from insitu.rtl.actmem import ActivationMemory
from insitu.rtl.asm import AsmMacArray
from insitu.rtl.control import Controller, TileScheduler
from insitu.rtl.counters import Counters
from insitu.rtl.engine import Engine
from insitu.rtl.post import PostProcessor, output_layout
from insitu.rtl.weightmem import WeightMemory, load_layout
from insitu.rtl.weightstream import FLASH_PINS, WeightStream


@pytest.fixture(scope="module")
def plan():
    return compile_model(small_net(np.random.default_rng(3)), "asm", lanes=3, input_shape=(2, 5, 5))


def test_counters_signature():
    sig = Counters(lanes=4, counter_bits=20).signature
    assert sig.members == wiring.Signature({
        "start": In(1), "running": In(1), "issuing": In(1), "mac_fire": In(1),
        "lanes": In(range(5)), "wbits": In(16), "err_now": In(1),
        "cycles": Out(20), "issue_cycles": Out(20), "mac_terms": Out(20), "mac_slots": Out(20),
        "weight_bits": Out(20), "err": Out(1)}).members


@pytest.mark.parametrize("kw, msg", [
    ({"lanes": 0}, "lanes must be a positive integer, not 0"),
    ({"lanes": 2, "counter_bits": 8}, "counter_bits must be an integer in 16..64, not 8"),
    ({"lanes": 2, "counter_bits": True}, "counter_bits must be an integer in 16..64, not True"),
])
def test_counters_wrong(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Counters(**kw)


def test_actmem_signature():
    members = {
        "i_x": In(stream.Signature(8)), "enable": In(1), "loaded": Out(1), "conflict": Out(1),
        "wb": Out(WritePort.Signature(addr_width=7, shape=8)),
        "rd": Out(ReadPort.Signature(addr_width=7, shape=8))}
    assert ActivationMemory(depth=100, in_size=50).signature.members == \
        wiring.Signature(members).members
    members["rr"] = Out(ReadPort.Signature(addr_width=7, shape=8))
    assert ActivationMemory(depth=100, in_size=50, in_base=50, residual=True).signature.members \
        == wiring.Signature(members).members


@pytest.mark.parametrize("kw, msg", [
    ({"depth": 0, "in_size": 1}, "depth must be a positive integer, not 0"),
    ({"depth": 4, "in_size": 2.0}, "in_size must be a positive integer, not 2.0"),
    ({"depth": 4, "in_size": 1, "in_base": -1}, "in_base must be a non-negative integer, not -1"),
    ({"depth": 4, "in_size": 3, "in_base": 2}, r"the input \(3 values at 2\) must fit depth \(4\)"),
    ({"depth": 4, "in_size": 1, "bank_words": 3}, "bank_words must be 0 or a power of two, not 3"),
    ({"depth": 64, "in_size": 64, "cpar": 1, "in_pixels": 64, "window": 3, "in_width": 8},
     r"window must be odd with cpar > 1 \(1\), .* not 3"),
    ({"depth": 64, "in_size": 64, "cpar": 8, "in_pixels": 64, "window": 3, "in_width": 8},
     r"the input \(64 values at 0\) must fit depth \(64\)"),
    ({"depth": 64, "in_size": 64, "cpar": 16, "in_pixels": 64, "window": 2, "in_width": 8},
     "window must be odd"),
    ({"depth": 64, "in_size": 64, "cpar": 16, "in_pixels": 32, "window": 3, "in_width": 8},
     r"one-channel input .* \(in_width 8, 64 values, 32 pixels\)"),
])
def test_actmem_wrong(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ActivationMemory(**kw)


def test_weightstream_signature_and_errors():
    ws = WeightStream(word_bits=20, count=30, offset=1 << 20)
    assert ws.signature.members == wiring.Signature({
        "start": In(1), "check": In(1), "take": In(1), "ready": Out(1), "data": Out(20),
        "bad": Out(1), "busy": Out(1), "flash": Out(FLASH_PINS)}).members
    with pytest.raises(ValueError, match="Weight stream count must be a positive integer, not 0"):
        WeightStream(word_bits=8, count=0)
    with pytest.raises(ValueError, match="does not fit a 24-bit flash address"):
        WeightStream(word_bits=8, count=2, offset=(1 << 24) - 1)


def test_weightmem_signature(plan):
    wm = WeightMemory(plan)
    aw = {k: (v - 1).bit_length() for k, v in wm.depths.items()}
    assert wm.signature.members == wiring.Signature({
        "i_load": In(stream.Signature(load_layout(wm.data_bits, wm.addr_bits))),
        "enable": In(1),
        "w_rd": Out(ReadPort.Signature(addr_width=aw[0], shape=plan.weight_word_bits)),
        "a_rd": Out(ReadPort.Signature(addr_width=aw[1], shape=plan.aux_word_bits)),
        "p_rd": Out(ReadPort.Signature(addr_width=aw[2], shape=POST_BITS)),
        "c_rd": Out(ReadPort.Signature(addr_width=aw[3], shape=plan.coef_word_bits)),
    }).members


def test_weightmem_wrong(plan):
    with pytest.raises(ValueError, match="weight_ram must be 'block', 'huge' or 'flash', not 'spram'"):
        WeightMemory(plan, weight_ram="spram")


def test_scheduler_signature(plan):
    sig = TileScheduler(layers=plan.layers, lanes=3).signature
    assert sig.members == wiring.Signature({
        "start": In(1), "fill_done": In(1), "clr": In(2), "go": Out(1),
        "layer": Out(range(3)), "tile": Out(range(max(2, max(ly.tiles for ly in plan.layers)))),
        "lanes": Out(range(4)), "slot": Out(1), "full": Out(2)}).members


def test_controller_signature(plan):
    mac = AsmMacArray(lanes=3, acc_len=plan.terms_max)
    mac_in = mac.signature.members["i"].signature.flip()
    sig = Controller(layers=plan.layers, lanes=3, group=1, wbits=8, rmax=20, act_depth=100,
                     mac_in=mac_in, unit=mac.unit).signature
    assert sig.members == wiring.Signature({
        "start": In(1), "full": In(2), "clr": Out(2),
        "act_rd": In(ReadPort.Signature(addr_width=7, shape=8)),
        "t_rd": In(ReadPort.Signature(addr_width=6, shape=unsigned(24))),
        "o": Out(mac_in), "row_done": In(1), "issuing": Out(1),
        "lanes_used": Out(range(4))}).members


@pytest.mark.parametrize("cls", [Controller, TileScheduler])
def test_sequencers_wrong(plan, cls):
    kw = {"group": 1, "wbits": 8, "rmax": 2, "act_depth": 4, "mac_in": None} if cls is Controller else {}
    with pytest.raises(ValueError, match="layers must not be empty"):
        cls(layers=[], lanes=3, **kw)
    with pytest.raises(ValueError, match="lanes must be a positive integer, not 0"):
        cls(layers=plan.layers, lanes=0, **kw)


def test_post_signature(plan):
    mac = AsmMacArray(lanes=3, acc_len=plan.terms_max)
    result = mac.signature.members["o"].signature
    sig = PostProcessor(layers=plan.layers, lanes=3, acc_bits=mac.acc_bits, result=result,
                        act_depth=100, post_depth=16).signature
    assert sig.members == wiring.Signature({
        "i": In(result),
        "p_rd": In(ReadPort.Signature(addr_width=4, shape=POST_BITS)),
        "wb": In(WritePort.Signature(addr_width=7, shape=8)),
        "o_y": Out(stream.Signature(output_layout())),
        "row_done": Out(1), "done": Out(1), "err": Out(1)}).members
    assert output_layout().members == {"value": signed(32), "last": 1}


def test_engine_signature(plan):
    eng = Engine(plan, counter_bits=32)
    assert eng.signature.members == wiring.Signature({
        "i_x": In(stream.Signature(8)),
        "o_y": Out(stream.Signature(output_layout())),
        "i_load": In(stream.Signature(load_layout(eng.load_data_bits, eng.load_addr_bits))),
        "busy": Out(1), "err": Out(1), "image_bad": Out(1),
        **{n: Out(32) for n in ("cycles", "issue_cycles", "mac_terms", "mac_slots",
                                "weight_bits")}}).members


@pytest.mark.parametrize("which", ["crc16", "crc32"])
def test_crc_register_matches_python(which):
    """The host link's CRC register over random bytes, with idle cycles and a clear between
    messages, equals binascii.crc_hqx / zlib.crc32 after every message."""
    import binascii
    import random
    import zlib

    from amaranth.sim import Simulator

    from insitu.rtl.crc import CRC16, CRC32, Crc
    spec = CRC16 if which == "crc16" else CRC32
    dut = Crc(spec)
    rng = random.Random(5)
    msgs = [bytes(rng.randrange(256) for _ in range(n)) for n in (0, 1, 7, 40)]
    got = []

    async def bench(ctx):
        for msg in msgs:
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for b in msg:
                while rng.random() < 0.3:
                    await ctx.tick()                 # en low: the register holds
                ctx.set(dut.byte, b)
                ctx.set(dut.en, 1)
                await ctx.tick()
                ctx.set(dut.en, 0)
            got.append(ctx.get(dut.value))
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    if spec is CRC16:
        assert got == [binascii.crc_hqx(m, 0xFFFF) for m in msgs]
    else:
        assert [g ^ 0xFFFFFFFF for g in got] == [zlib.crc32(m) for m in msgs]


def _through_slice(dut, words, *, offer, take, probe):
    """Drive ``words`` through a stream slice ``dut``: the source holds ``words[k]`` once
    ``offer(k)`` until it is taken, the sink is ready when ``take(k)``; ``probe(ctx,
    holding, word)`` checks a combinational path each cycle (``i`` as offered on entry and
    exit).  Returns the words the sink got, the
    cycles it got them and the cycles it was ready."""
    from amaranth.sim import Simulator
    got, take_cycles, ready_cycles = [], [], []

    async def bench(ctx):
        k, holding, cycle = 0, False, 0
        while len(got) < len(words) and cycle < 20 * len(words):    # a lost word: stop
            if not holding and k < len(words):
                holding = offer(k)
            word = words[k] if holding else 0
            ctx.set(dut.i.valid, holding)
            ctx.set(dut.i.payload, word)
            probe(ctx, holding, word)
            ready = take(k)
            ctx.set(dut.o.ready, ready)
            if ready:
                ready_cycles.append(cycle)
                if ctx.get(dut.o.valid):
                    got.append(ctx.get(dut.o.payload))
                    take_cycles.append(cycle)
            if holding and ctx.get(dut.i.ready):
                holding, k = False, k + 1
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, take_cycles, ready_cycles


@pytest.mark.parametrize("always_valid", [False, True])
def test_skid_buffer_order_ready_and_timing(always_valid):
    """Random valid/ready: the sink gets every word once, in order; ``i.ready`` does not
    follow ``o.ready`` within a cycle; with an always-valid source the sink takes words in
    exactly the cycles its ``ready`` is high (as over a direct connection)."""
    import random

    from insitu.rtl.skid import SkidBuffer
    dut = SkidBuffer(stream.Signature(unsigned(8)))
    rng = random.Random(11)
    words = [rng.randrange(256) for _ in range(300)]

    def probe(ctx, holding, word):
        ctx.set(dut.o.ready, 0)
        before = ctx.get(dut.i.ready)
        ctx.set(dut.o.ready, 1)
        assert ctx.get(dut.i.ready) == before       # registered: no path from o.ready

    got, take_cycles, ready_cycles = _through_slice(
        dut, words, offer=lambda k: always_valid or rng.random() >= 0.3,
        take=lambda k: rng.random() < 0.6, probe=probe)
    assert got == words
    if always_valid:
        assert take_cycles == ready_cycles[:len(words)]


def test_skid_buffer_wrong():
    with pytest.raises(TypeError, match="SkidBuffer needs a stream.Signature"):
        from insitu.rtl.skid import SkidBuffer
        SkidBuffer(8)


def test_register_slice_order_and_registered_payload():
    """Random valid/ready: the sink gets every word once, in order; ``o``'s payload and
    valid do not follow ``i`` within a cycle; an always-valid source and always-ready sink
    move one word per cycle."""
    import random

    from insitu.rtl.skid import RegisterSlice
    dut = RegisterSlice(stream.Signature(unsigned(8)))
    rng = random.Random(5)
    words = [rng.randrange(256) for _ in range(300)]

    def probe(ctx, holding, word):
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.i.payload, word ^ 0xFF)
        before = (ctx.get(dut.o.valid), ctx.get(dut.o.payload))
        ctx.set(dut.i.valid, holding)
        ctx.set(dut.i.payload, word)
        assert (ctx.get(dut.o.valid), ctx.get(dut.o.payload)) == before   # registered

    # the last 100 words: always valid and ready
    got, cycles, _ = _through_slice(
        dut, words, offer=lambda k: k >= 200 or rng.random() >= 0.3,
        take=lambda k: k >= 200 or rng.random() < 0.6, probe=probe)
    assert got == words
    tail = cycles[-90:]
    assert tail == list(range(tail[0], tail[0] + 90))
    with pytest.raises(TypeError, match="RegisterSlice needs a stream.Signature"):
        RegisterSlice(8)
