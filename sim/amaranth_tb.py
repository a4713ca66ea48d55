"""Stream drivers for Amaranth-simulator testbenches (async ``add_testbench`` style).

``stream_put``/``stream_get`` follow the idiom of the Amaranth stream docs; the random
variants insert valid gaps and ready stalls from a seeded generator.
"""

from __future__ import annotations

import sys

from ..rtl.engine import Engine

CLK = 1e-8

# The Python simulator compiles each expression recursively; a wide MAC array's sums (int8,
# 32 lanes x 16 channels) go deeper than Python's default limit.  Raised on import, not inside
# a run: a test framework that checks the limit around each test (Hypothesis) sees no change.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))


def _bits(payload):
    """The payload as a plain value (a ``lib.data`` view or a signal)."""
    return payload.as_value() if hasattr(payload, "as_value") else payload


async def stream_put(ctx, stream, word: int):
    """Offer one payload word until it is taken."""
    ctx.set(_bits(stream.payload), word)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_put_many(ctx, stream, words, rng=None, p_gap: float = 0.0):
    """Send ``words`` in order, idling ``valid`` before a word with probability ``p_gap``."""
    for word in words:
        while rng is not None and rng.random() < p_gap:
            await ctx.tick()
        await stream_put(ctx, stream, word)


async def stream_get_many(ctx, stream, count: int, out: list, rng=None, p_stall: float = 0.0):
    """Collect ``count`` payload words into ``out``, dropping ``ready`` with probability ``p_stall``."""
    while len(out) < count:
        ready = not (rng is not None and rng.random() < p_stall)
        ctx.set(stream.ready, int(ready))
        _, _, valid, word = await ctx.tick().sample(stream.valid, _bits(stream.payload))
        if ready and valid:
            out.append(int(word))
    ctx.set(stream.ready, 0)


def simulate_streams(dut, sends: dict, out, n_out: int, rng=None, p_gap: float = 0.0,
                     p_stall: float = 0.0, budget: int | None = None) -> list[int]:
    """Run ``dut`` with one producer per ``{input stream: words}`` and a consumer of ``n_out``
    words on ``out``; bounded (``budget`` cycles, default from the word counts), so a stall
    fails instead of hanging.  Returns the output words."""
    from amaranth.sim import Simulator
    got = []
    sim = Simulator(dut)
    sim.add_clock(CLK)
    for port, words in sends.items():
        async def producer(ctx, port=port, words=words):
            await stream_put_many(ctx, port, words, rng, p_gap)
        sim.add_testbench(producer)

    async def consumer(ctx):
        await stream_get_many(ctx, out, n_out, got, rng, p_stall)
    sim.add_testbench(consumer)
    if budget is None:
        budget = 8 * (sum(len(w) for w in sends.values()) + n_out) + 64
    sim.run_until(CLK * budget)
    assert len(got) == n_out, f"only {len(got)}/{n_out} outputs arrived"
    return got


def run_engine(plan, x, *, seed=0, p_gap=0.0, p_stall=0.0, loads=(), budget=None,
               reset_mid=None, issue="skid"):
    """Outputs ``[N, n_out]`` (emission order) and the counters after each inference.

    ``reset_mid = (n_bytes, cycles)``: first an aborted inference: ``n_bytes`` input bytes
    (all of them: the engine starts computing), ``cycles`` more cycles, then a reset in the
    middle of it; the vectors ``x`` follow and must come out exact.  ``issue``: the
    engine's issue path (``Engine(issue=...)``)."""
    import random

    import numpy as np
    from amaranth.hdl import ResetInserter, Signal
    from amaranth.sim import Simulator

    dut = Engine(plan, issue=issue)
    n_out = plan.layers[-1].cout * plan.layers[-1].oh * plan.layers[-1].ow
    rng = random.Random(seed)
    got, counters = [], []
    rst = Signal()
    sim = Simulator(ResetInserter({"sync": rst})(dut))
    sim.add_clock(CLK)

    async def producer(ctx):
        if reset_mid is not None:
            n_bytes, wait = reset_mid
            await stream_put_many(ctx, dut.i_x, [rng.randrange(256) for _ in range(n_bytes)],
                                  rng, p_gap)
            await ctx.tick().repeat(max(1, wait))
            ctx.set(rst, 1)
            await ctx.tick().repeat(2)
            ctx.set(rst, 0)
            await ctx.tick()
        for mem, addr, data in loads:
            lay = dut.i_load.payload
            ctx.set(lay.mem, mem)
            ctx.set(lay.addr, addr)
            ctx.set(lay.data, data)
            ctx.set(dut.i_load.valid, 1)
            await ctx.tick().until(dut.i_load.ready)
            ctx.set(dut.i_load.valid, 0)
        for k, vec in enumerate(x):
            await stream_put_many(ctx, dut.i_x, [int(v) for v in vec], rng, p_gap)
            out = []
            await stream_get_many(ctx, dut.o_y, n_out, out, rng, p_stall)
            got.append(out)
            counters.append({c: ctx.get(getattr(dut, c)) for c in
                             ("cycles", "issue_cycles", "mac_slots", "mac_terms", "weight_bits",
                              "err")})
    sim.add_testbench(producer)
    cycles = budget or 20 * len(x) * (plan.macs // plan.lanes + 500)

    async def watchdog(ctx):                      # a hang fails instead of blocking
        for _ in range(0, cycles, 256):
            if len(got) == len(x):
                return
            await ctx.tick().repeat(256)
        raise AssertionError(f"engine did not finish {len(x)} inferences in {cycles} cycles")
    sim.add_testbench(watchdog)
    sim.run()
    assert len(got) == len(x), f"only {len(got)}/{len(x)} inferences finished"
    vals = np.array([[((w & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000 for w in o] for o in got])
    lasts = np.array([[(w >> 32) & 1 for w in o] for o in got])
    assert (lasts[:, -1] == 1).all() and (lasts[:, :-1] == 0).all()
    return vals, counters
