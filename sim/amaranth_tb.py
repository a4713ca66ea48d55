"""Stream drivers for Amaranth-simulator testbenches (async ``add_testbench`` style).

``stream_put``/``stream_get`` follow the idiom of the Amaranth stream docs; the random
variants insert valid gaps and ready stalls from a seeded generator.
"""

from __future__ import annotations

CLK = 1e-8


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
