"""cocotb testbench of the layer engine (``insitu.rtl.engine.Engine``), whole network.

Environment:
``ENGINE_VECTORS``: an ``.npz`` with ``x`` (``[N, features]`` u8 inputs in ``[C, H, W]`` order)
and ``y`` (``[N, outputs]`` golden final-layer values in the engine's emission order), written
by ``insitu.sim.engine_run`` from the golden network model.
``ENGINE_STALLS``: probability of an idle input cycle and of a dropped ``o_y.ready``
(0 = stream as fast as the engine takes it).  ``ENGINE_RESET``: if "1", an inference is first
interrupted by a reset in the middle, then every vector runs.  ``ENGINE_PROGRESS``: print
progress to stderr.  ``ENGINE_FLASH``: the flash image of an engine whose weight memory is a
flash (``flash__*`` pins): a :class:`~insitu.sim.flash_model.SpiFlash` answers on them, and
the flash reads it saw go to ``engine.json``; ``ENGINE_FLASH_FLIP`` = ``byte,bit`` flips one
bit of the stream (a planted error).

Writes ``engine.json``: vectors, mismatches, the first mismatches, and the engine's counters
(``cycles``, ``issue_cycles``, ``mac_terms``, ``mac_slots``, ``weight_bits``) per inference.
"""

import json
import os
import random
import sys
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, with_timeout

from insitu.sim.cocotb_util import drive, port, start
from insitu.sim.flash_model import SpiFlash

VEC = np.load(os.environ["ENGINE_VECTORS"])
STALLS = float(os.environ.get("ENGINE_STALLS", "0"))
RESET = os.environ.get("ENGINE_RESET", "0") == "1"
PROGRESS = os.environ.get("ENGINE_PROGRESS", "0") == "1"
BUDGET = int(os.environ.get("ENGINE_BUDGET", "100000"))   # cycles one inference may take
FLASH = os.environ.get("ENGINE_FLASH")
FLASH_FLIP = os.environ.get("ENGINE_FLASH_FLIP")          # "byte,bit": a planted flash error
COUNTERS = ("cycles", "issue_cycles", "mac_terms", "mac_slots", "weight_bits")


def _signed(v, bits=32):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


async def collect_outputs(dut, count, rng, p_stall):
    """``count`` values from ``o_y``; idle stretches are skipped by waiting for ``valid``."""
    valid, payload, ready = (port(dut, "o_y", m) for m in ("valid", "payload", "ready"))
    got, last = [], []
    while len(got) < count:
        r = rng.random() >= p_stall
        ready.value = int(r)
        await ReadOnly()
        if not valid.value:
            if p_stall == 0:
                await RisingEdge(valid)
                await ReadOnly()
            else:
                await RisingEdge(dut.clk)
                continue
        if r:
            word = payload.value.to_unsigned()
            got.append(_signed(word))
            last.append(word >> 32 & 1)
        await RisingEdge(dut.clk)
    ready.value = 0
    return got, last


async def infer(dut, x, n_out, rng, p):
    feeder = cocotb.start_soon(drive(dut, "i_x", [int(v) for v in x], rng, p))
    got, last = await collect_outputs(dut, n_out, rng, p)
    await ReadOnly()
    counters = {c: int(getattr(dut, c).value) for c in COUNTERS}
    counters["err"] = int(dut.err.value)
    await RisingEdge(dut.clk)
    await feeder
    return got, last, counters


@cocotb.test()
async def engine_network(dut):
    flash = None
    if FLASH:
        with open(FLASH, "rb") as fh:
            flash = SpiFlash(dut, fh.read(), prefix="flash__",
                             flip=tuple(map(int, FLASH_FLIP.split(","))) if FLASH_FLIP else None)
        flash.start()
    await start(dut, ["i_x", "i_load"], ["o_y"])
    rng = random.Random(7)
    X, Y = VEC["x"], VEC["y"]
    n, n_out = len(X), Y.shape[1]
    if RESET and n:
        # Abandon an inference half way: reset, then everything below must still be exact.
        task = cocotb.start_soon(drive(dut, "i_x", [int(v) for v in X[0]], rng, 0.3))
        await ClockCycles(dut.clk, len(X[0]) + 50)
        task.cancel()
        dut.i_x__valid.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
    mismatches, per, outputs = [], [], []
    t0 = time.time()
    step = max(1, n // 20)
    for k in range(n):
        budget = 20 * BUDGET + 100 * len(X[k]) + 1000
        got, last, counters = await with_timeout(infer(dut, X[k], n_out, rng, STALLS),
                                                 budget * 10, "ns")
        per.append(counters)
        outputs.append(got)
        exp = [int(v) for v in Y[k]]
        if got != exp or last != [0] * (n_out - 1) + [1] or counters["err"]:
            bad = [i for i, (g, e) in enumerate(zip(got, exp)) if g != e]
            mismatches.append({"vector": k, "outputs": bad[:8], "rtl": [got[i] for i in bad[:8]],
                               "golden": [exp[i] for i in bad[:8]], "err": counters["err"]})
            dut._log.error("vector %d: %d outputs differ (first %s), err flag %d", k, len(bad),
                           bad[:4], counters["err"])
        if PROGRESS and (k + 1) % step == 0 or PROGRESS and k + 1 == n:
            el = time.time() - t0
            bar = "#" * int(30 * (k + 1) / n)
            print(f"\rsimulate [{bar:<30}] {k + 1}/{n} vectors, {len(mismatches)} mismatches, "
                  f"{el:.0f} s", end="" if k + 1 < n else "\n", file=sys.__stderr__, flush=True)
    summary = {"vectors": n, "mismatches": len(mismatches), "first_mismatches": mismatches[:5],
               "counters": per, "outputs": outputs, "seconds": round(time.time() - t0, 3)}
    if flash is not None:
        summary["flash"] = flash.summary()
    with open("engine.json", "w") as fh:
        json.dump(summary, fh)
    assert not mismatches, f"{len(mismatches)} of {n} inferences differ from the golden model"
    assert flash is None or not flash.errors, f"flash model: {flash.errors[:3]}"
