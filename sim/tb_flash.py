"""cocotb testbench of the flash reader (``insitu.rtl.flash.FlashReader``) against the flash
model (:mod:`insitu.sim.flash_model`).

Only imported inside the simulator.  Configuration from the environment:

- ``FLASH_READS``: JSON list of ``[addr, count]`` reads;
- ``FLASH_SEED``: seed of the flash image (64 KiB) and of the stalls;
- ``PLANT``: ``"flip"`` makes the model corrupt one bit of one byte (the bench must fail).

Every byte is compared with the image; ``flash_<test>.json`` has the counts, the model's
errors and the measured bits per cycle of the longest read.
"""

import json
import os
import random

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from insitu.sim.cocotb_util import collect, drive, report, start
from insitu.sim.flash_model import SpiFlash

READS = json.loads(os.environ["FLASH_READS"])
SEED = int(os.environ.get("FLASH_SEED", "1"))
PLANT = os.environ.get("PLANT", "")
IMAGE = random.Random(SEED).randbytes(1 << 16)


def expected():
    return [IMAGE[(a + k) % len(IMAGE)] for a, n in READS for k in range(n)]


async def run(dut, name, p_gap, p_stall):
    await start(dut, inputs=["i_cmd"], outputs=["o_data"])
    flash = SpiFlash(dut, IMAGE, flip=(5, 3) if PLANT == "flip" else None)
    flash.start()
    rng = random.Random(SEED + 1)
    cmds = [a | (n << 24) for a, n in READS]
    cocotb.start_soon(drive(dut, "i_cmd", cmds, rng, p_gap))
    exp = expected()
    got = await collect(dut, "o_data", len(exp), rng, p_stall)
    await ClockCycles(dut.clk, 20)
    assert not flash.errors, flash.errors
    report(dut, f"flash_{name}", exp, got, lambda k: f"byte {k}")


@cocotb.test()
async def reads_flat(dut):
    await run(dut, "reads_flat", 0.0, 0.0)


@cocotb.test()
async def reads_stalls(dut):
    await run(dut, "reads_stalls", 0.3, 0.5)


@cocotb.test()
async def streaming_rate(dut):
    """One long read with the output always ready: data bits per clock cycle, command
    and address included."""
    await start(dut, inputs=["i_cmd"], outputs=["o_data"])
    SpiFlash(dut, IMAGE).start()
    n = 256
    dut.o_data__ready.value = 1
    dut.i_cmd__payload.value = 100 | (n << 24)
    dut.i_cmd__valid.value = 1
    await RisingEdge(dut.clk)
    dut.i_cmd__valid.value = 0
    got, cycles, first = [], 0, None
    while len(got) < n:
        await ReadOnly()
        if dut.o_data__valid.value:
            got.append(dut.o_data__payload.value.to_unsigned())
            first = cycles if first is None else first
        await RisingEdge(dut.clk)
        cycles += 1
    report(dut, "flash_streaming_rate", list(IMAGE[100:100 + n]), got)
    with open("flash_rate.json", "w") as f:
        json.dump({"bytes": n, "cycles": cycles, "first_byte_cycles": first,
                   "bits_per_cycle": 8 * n / cycles,
                   "streaming_bits_per_cycle": 8 * (n - 1) / (cycles - first)}, f)
