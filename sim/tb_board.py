"""cocotb testbench of a board top's host link (``insitu.boards.hostlink.HostLink``), driven
only through its UART pins by a bit-level UART model, with the host protocol's own encoders
and decoders (``insitu.boards.protocol``, the same code ``insitu run`` uses).

Environment:
``BOARD_VECTORS``: an ``.npz`` with ``x`` (u8 inputs), ``y`` (golden outputs in engine order),
``ident`` (the expected answer to ``I``), ``loads`` (``[n, 3]``: mem, addr, value as text, since
a word can be wider than 64 bits), ``load_bytes``, ``divisor`` (clock cycles per UART bit),
``wbits`` / ``macs`` (expected counters per inference).
``BOARD_GAPS``: probability of an idle gap (1-3 bit times) before each byte the host sends.

Writes ``board.json``: answers, mismatches, counters, status flags.
"""

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from insitu.boards import protocol as P

VEC = np.load(os.environ["BOARD_VECTORS"])
GAPS = float(os.environ.get("BOARD_GAPS", "0"))
D = int(VEC["divisor"])


async def uart_send(dut, data: bytes, rng):
    for b in data:
        while rng.random() < GAPS:
            await ClockCycles(dut.clk, D * rng.randint(1, 3))
        for bit in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
            dut.rx.value = bit
            await ClockCycles(dut.clk, D)


class UartMonitor:
    """Decodes every byte on ``tx`` (sampling mid-bit) into ``self.bytes``."""

    def __init__(self, dut):
        self.dut, self.bytes, self.framing = dut, bytearray(), 0
        cocotb.start_soon(self.run())

    async def run(self):
        dut = self.dut
        while True:
            await FallingEdge(dut.tx)
            await ClockCycles(dut.clk, D // 2)
            if dut.tx.value:                     # not a start bit
                continue
            v = 0
            for i in range(8):
                await ClockCycles(dut.clk, D)
                v |= int(dut.tx.value) << i
            await ClockCycles(dut.clk, D)
            if not dut.tx.value:
                self.framing += 1
            self.bytes.append(v)

    async def take(self, n: int, timeout_cycles: int) -> bytes:
        waited = 0
        while len(self.bytes) < n and waited < timeout_cycles:
            await ClockCycles(self.dut.clk, D * 10)
            waited += D * 10
        out = bytes(self.bytes[:n])
        del self.bytes[:n]
        return out


@cocotb.test()
async def board_uart(dut):
    Clock(dut.clk, 10, unit="ns").start()
    dut.rx.value = 1
    if hasattr(dut, "rst"):                          # the board top has no reset pin
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
    else:
        await ClockCycles(dut.clk, 8)                # reset synchroniser after PLL lock
    await ClockCycles(dut.clk, 2 * D)
    mon = UartMonitor(dut)
    rng = random.Random(11)
    byte_time = 10 * D
    summary = {"mismatches": 0, "vectors": 0, "outputs": []}

    await uart_send(dut, b"I", rng)
    ident = await mon.take(P.IDENT_BYTES, byte_time * (P.IDENT_BYTES + 4))
    summary["ident_ok"] = ident == bytes(VEC["ident"])
    summary["ident"] = P.parse_ident(ident) if len(ident) == P.IDENT_BYTES else ident.hex()

    await uart_send(dut, b"Z", rng)                  # not a command
    summary["unknown"] = (await mon.take(1, byte_time * 4)).decode(errors="replace")

    lb = int(VEC["load_bytes"])
    acks = bytearray()
    for mem, addr, value in VEC["loads"]:
        await uart_send(dut, P.load_cmd(int(mem), int(addr), int(value), lb), rng)
        acks += await mon.take(1, byte_time * 4)
    summary["loads"] = len(VEC["loads"])
    summary["load_acks_ok"] = bytes(acks) == b"K" * len(VEC["loads"])

    counters = []
    for x, y in zip(VEC["x"], VEC["y"]):
        await uart_send(dut, P.input_cmd(x), rng)
        n_out = len(y)
        answer = await mon.take(1 + 4 * n_out, int(VEC["budget"]) + byte_time * (1 + 4 * n_out) * 2)
        try:
            got = P.parse_outputs(answer, n_out)
        except P.ProtocolError as exc:
            summary.setdefault("errors", []).append(str(exc))
            got = []
        summary["outputs"].append(got)
        summary["vectors"] += 1
        if got != [int(v) for v in y]:
            summary["mismatches"] += 1
        await uart_send(dut, b"C", rng)
        st = P.parse_status(await mon.take(P.STATUS_BYTES, byte_time * (P.STATUS_BYTES + 4)))
        counters.append(st)
    summary["counters"] = counters
    if hasattr(dut, "led0"):                         # LEDs: busy off, error off
        summary["leds"] = [int(dut.led0.value), int(dut.led1.value)]
    summary["counters_ok"] = all(c["weight_bits"] == int(VEC["wbits"]) and
                                 c["mac_slots"] == int(VEC["macs"]) and not c["busy"] and
                                 not c["err"] and not c["uart_err"] for c in counters)
    summary["framing_errors"] = mon.framing
    with open("board.json", "w") as f:
        json.dump(summary, f, indent=1, default=int)
    assert summary["ident_ok"], summary["ident"]
    assert summary["unknown"] == "?"
    assert summary["load_acks_ok"]
    assert summary["mismatches"] == 0, f"{summary['mismatches']} of {summary['vectors']} vectors differ"
    assert summary["counters_ok"], counters
    assert mon.framing == 0
