"""Stream driver and collector for cocotb benches of Amaranth-generated Verilog.

A stream port ``<p>`` of an Amaranth component appears as ``<p>__payload``, ``<p>__valid`` and
``<p>__ready``.  Inputs change just after a rising edge; handshakes are sampled in the
read-only phase before the next edge.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, with_timeout


def port(dut, prefix, member):
    return getattr(dut, f"{prefix}__{member}")


async def start(dut, inputs=(), outputs=()):
    """Start the clock, hold reset for 2 cycles with every stream idle."""
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for p in inputs:
        port(dut, p, "valid").value = 0
    for p in outputs:
        port(dut, p, "ready").value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def drive(dut, prefix, words, rng: random.Random, p_gap=0.0):
    """Send ``words`` on stream ``prefix``, idling ``valid`` with probability ``p_gap``."""
    valid, payload, ready = (port(dut, prefix, m) for m in ("valid", "payload", "ready"))
    for word in words:
        while rng.random() < p_gap:
            valid.value = 0
            await RisingEdge(dut.clk)
        payload.value = word
        valid.value = 1
        while True:
            await ReadOnly()
            taken = bool(ready.value)
            await RisingEdge(dut.clk)
            if taken:
                break
    valid.value = 0


async def collect(dut, prefix, count, rng: random.Random, p_stall=0.0):
    """Receive ``count`` payload words on stream ``prefix`` (as ints), dropping ``ready``
    with probability ``p_stall``."""
    valid, payload, ready = (port(dut, prefix, m) for m in ("valid", "payload", "ready"))
    got = []
    while len(got) < count:
        r = rng.random() >= p_stall
        ready.value = int(r)
        await ReadOnly()
        if r and valid.value:
            got.append(payload.value.to_unsigned())
        await RisingEdge(dut.clk)
    ready.value = 0
    return got


async def transfer(dut, sends: dict, out_prefix, count, rng, p_gap=0.0, p_stall=0.0):
    """Drive every ``{prefix: words}`` concurrently and collect ``count`` outputs, bounded."""
    for prefix, words in sends.items():
        cocotb.start_soon(drive(dut, prefix, words, rng, p_gap))
    budget = 12 * (sum(len(w) for w in sends.values()) + count) + 200
    return await with_timeout(collect(dut, out_prefix, count, rng, p_stall), budget * 10, "ns")


async def interrupt_with_reset(dut, sends: dict, out_prefix, cycles: int, rng):
    """Start sending ``sends`` and receiving on ``out_prefix`` under random stalls, then after
    ``cycles`` cycles -- mid-transfer -- abandon everything and pulse reset for 2 cycles.
    What came out before the reset is returned (and is not checked)."""
    tasks = [cocotb.start_soon(drive(dut, p, w, rng, 0.3)) for p, w in sends.items()]
    got = []

    async def partial():
        got.extend(await collect(dut, out_prefix, 10**9, rng, 0.5))
    tasks.append(cocotb.start_soon(partial()))
    await ClockCycles(dut.clk, cycles)
    for t in tasks:
        t.cancel()
    for p in sends:
        port(dut, p, "valid").value = 0
    port(dut, out_prefix, "ready").value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    return got


def report(dut, name, exp, got, describe=lambda k: f"item {k}"):
    """Compare, write ``<name>.json`` (vectors, mismatches) and fail on any mismatch."""
    mismatches = [{"index": k, "rtl": g, "golden": e} for k, (g, e) in enumerate(zip(got, exp)) if g != e]
    if len(got) != len(exp):
        mismatches.append({"index": -1, "rtl": f"{len(got)} items", "golden": f"{len(exp)} items"})
    Path(f"{name}.json").write_text(json.dumps({"test": name, "vectors": len(exp),
                                                "mismatches": len(mismatches),
                                                "first_mismatches": mismatches[:3]}, indent=1))
    for mm in mismatches[:5]:
        dut._log.error("%s: RTL %s != golden %s", describe(mm["index"]), mm["rtl"], mm["golden"])
    assert not mismatches, f"{len(mismatches)} of {len(exp)} items differ from the golden model"
