"""cocotb testbench of a board top's host link (``insitu.boards.hostlink.HostLink``), driven
only through its UART pins by a bit-level UART model.  The host is the protocol's own host
session (``insitu.boards.protocol.Host``, the code ``insitu run`` drives over a serial port),
here driven over the simulated wire.

Environment:
``BOARD_VECTORS``: an ``.npz`` with ``x`` (u8 inputs), ``y`` (golden outputs in engine order),
``ident`` (the expected identify payload), ``plan`` (the plan as JSON), ``divisor`` (clock
cycles per UART bit), ``budget`` (cycles of one inference), ``timeout_bits``,
``wbits`` / ``macs`` (expected counters per inference), ``preloaded`` (the weight memory is
initialised by the bitstream).
``BOARD_GAPS``: probability of an idle gap (1-3 bit times) before each byte the host sends.
``BOARD_FAULTS``: ``kind:runs[,kind:runs...]`` runs the fault campaign instead (test
``board_faults``; needs a ``rst`` pin).
``BOARD_FLASH``: the flash image of a link whose engine streams its weights from a flash
(``flash__*`` pins): a :class:`~insitu.sim.flash_model.SpiFlash` answers on them, with the
image at ``BOARD_FLASH_BASE`` (the board's flash offset; 0 by default).
``BOARD_POWERUP``: "1": the first frame after reset is an inference (no identify, no load, no
verify): the board must infer with what the bitstream and the flash hold.

Writes ``board.json`` (the normal run) or ``faults.json`` (the campaign).
"""

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, Timer

from insitu.boards import protocol as P
from insitu.gen.plan import Plan
from insitu.sim.board_sim import FAULT_KINDS
from insitu.sim.flash_model import SpiFlash

VEC = np.load(os.environ["BOARD_VECTORS"])
GAPS = float(os.environ.get("BOARD_GAPS", "0"))
FAULTS = os.environ.get("BOARD_FAULTS", "")
PLANT = os.environ.get("BOARD_PLANT", "")
FLASH = os.environ.get("BOARD_FLASH", "")
POWERUP = os.environ.get("BOARD_POWERUP", "") == "1"
D = int(VEC["divisor"])
TIMEOUT = int(VEC["timeout_bits"])
PERIOD = 10                                          # ns per clock cycle


def cycles(n: int):
    """A wait of ``n`` clock cycles as one timer (the bench keeps to falling edges)."""
    return Timer(PERIOD * n, unit="ns")
PLAN = Plan.from_json(str(VEC["plan"]))


class Wire:
    """The host's UART: sends bytes with injected faults, decodes the board's ``tx``."""

    def __init__(self, dut, rng, fault=None):
        self.dut, self.rng, self.fault = dut, rng, fault
        self.rx_bytes, self.framing, self.sent = bytearray(), 0, 0
        self.fired = False
        self.busy_rx = False
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        dut = self.dut
        while True:
            await FallingEdge(dut.tx)
            self.busy_rx = True
            await cycles(D // 2)
            if dut.tx.value:                     # not a start bit
                self.busy_rx = False
                continue
            v = 0
            for i in range(8):
                await cycles(D)
                v |= int(dut.tx.value) << i
            await cycles(D)
            if not dut.tx.value:
                self.framing += 1
            self.rx_bytes.append(v)
            self.busy_rx = False

    async def _bits(self, b):
        for bit in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
            self.dut.rx.value = bit
            await cycles(D)

    async def send(self, data: bytes):
        rng, f = self.rng, self.fault
        for b in data:
            while rng.random() < GAPS:
                await cycles(D * rng.randint(1, 3))
            if f and not self.fired and self.sent == f["at"]:
                self.fired = True
                kind = f["kind"]
                if kind in ("flip", "flip_input"):
                    b ^= 1 << rng.randrange(8)
                elif kind == "drop":
                    self.sent += 1
                    continue
                elif kind == "dup":
                    await self._bits(b)
                elif kind == "break":                # the line held low through this byte
                    self.dut.rx.value = 0
                    await cycles(D * rng.randint(12, TIMEOUT + 40))
                    self.dut.rx.value = 1
                    await cycles(D * 2)
                    self.sent += 1
                    continue
                elif kind == "gap":
                    await cycles(D * (TIMEOUT + rng.randint(10, 60)))
                elif kind == "reset_load":
                    await reset(self.dut)
            self.sent += 1
            await self._bits(b)

    async def read(self, n: int, timeout_cycles: int) -> bytes:
        waited = 0
        while len(self.rx_bytes) < n and waited < timeout_cycles:
            await cycles(D * 10)
            waited += D * 10
        out = bytes(self.rx_bytes[:n])
        del self.rx_bytes[:n]
        return out

    async def resync(self):
        """Wait until neither side has moved for longer than the board's frame timeout."""
        while True:
            n = len(self.rx_bytes)
            await cycles(D * (TIMEOUT + 40))
            if len(self.rx_bytes) == n and not self.busy_rx:
                break
        self.rx_bytes.clear()


async def drive(wire: Wire, session):
    """Run a :class:`insitu.boards.protocol.Host` session over the simulated wire."""
    answer_cycles = D * (2 * TIMEOUT + 600)
    reply = None
    while True:
        try:
            req = session.send(reply)
        except StopIteration as stop:
            return stop.value
        if req[0] == "write":
            await wire.send(req[1])
            reply = None
        elif req[0] == "read":
            wait = answer_cycles + (2 * int(VEC["budget"]) if req[2] == "infer" else 0)
            reply = await wire.read(req[1], wait)
        else:
            await wire.resync()
            reply = None


async def reset(dut):
    dut.rst.value = 1
    await cycles(3)
    dut.rst.value = 0
    await cycles(2)


async def start(dut):
    Clock(dut.clk, PERIOD, unit="ns").start()
    dut.rx.value = 1
    await FallingEdge(dut.clk)
    if hasattr(dut, "rst"):                          # the board top has no reset pin
        await reset(dut)
    else:
        await cycles(8)                              # reset synchroniser after PLL lock
    await cycles(2 * D)


async def raw(wire: Wire, data: bytes, wait_bits: int = 0):
    """Send raw bytes and read one answer frame as ``(code, payload)``."""
    await wire.send(data)
    head = await wire.read(3, D * (2 * TIMEOUT + wait_bits + 200))
    n = int.from_bytes(head[1:3], "little") if len(head) == 3 else 0
    rest = await wire.read(n + 2, D * 10 * (n + 4))
    try:
        return P.parse_frame(head + rest)
    except P.LinkFault as exc:
        return ("!", str(exc).encode())


def _status(dut):
    """``(busy, error)`` as the board shows them (LED 0 and LED 1 of the top, active-low on
    the iCEBreaker; the link's status outputs)."""
    if hasattr(dut, "led1"):
        return 1 - int(dut.led0.value), 1 - int(dut.led1.value)
    return int(dut.busy.value), int(dut.err.value)


async def watch_boot(dut, s):
    """A flash board checks its image after reset: record the error LED when the engine
    first goes idle (before any inference ran)."""
    await FallingEdge(dut.clk)
    while _status(dut)[0]:
        await FallingEdge(dut.clk)
    s["error_led_at_boot"] = _status(dut)[1]


async def power_up(dut, wire, s, flash):
    """Inferences as the first frames after reset: nothing loaded, nothing verified."""
    host = P.Host(PLAN)
    if flash is not None:
        cocotb.start_soon(watch_boot(dut, s))
    try:
        for x, y in zip(VEC["x"], VEC["y"]):
            got = await drive(wire, host.infer(x, load=False))
            s["outputs"].append(got)
            s["vectors"] += 1
            s["mismatches"] += got != [int(v) for v in y]
        s["counters"] = [await drive(wire, host.counters())]
    except P.ProtocolError as exc:
        s["error"] = str(exc)
    s["host_stats"] = dict(host.stats)
    if hasattr(dut, "led1") or hasattr(dut, "err"):
        s["error_led"] = _status(dut)[1]
    if flash is not None:
        s["flash"] = flash.summary()
    with open("board.json", "w") as f:
        json.dump(s, f, indent=1, default=int)
    assert "error" not in s, s["error"]
    assert s["vectors"] == len(VEC["x"]) and s["mismatches"] == 0, s
    assert flash is None or not flash.errors, flash.errors[:3]


@cocotb.test()
async def board_uart(dut):
    """Identify, the protocol's refusals, load, verify, every vector bit-exact, counters."""
    if FAULTS:
        return
    flash = None
    if FLASH:
        with open(FLASH, "rb") as fh:
            flash = SpiFlash(dut, fh.read(), prefix="flash__",
                             base=int(os.environ.get("BOARD_FLASH_BASE", "0")))
        flash.start()
    await start(dut)
    wire = Wire(dut, random.Random(11))
    s = {"mismatches": 0, "vectors": 0, "outputs": []}
    if POWERUP:
        await power_up(dut, wire, s, flash)
        return
    words = list(P.load_words(PLAN))
    if PLANT == "load":                              # one flipped bit in one weight word
        i = len(PLAN.weight_words) // 2
        words[i] = (words[i][0], words[i][1], words[i][2] ^ 4)
    host = P.Host(PLAN, words=words)
    info = await drive(wire, host.identify())
    s["ident_ok"] = P.ident(PLAN) == bytes(VEC["ident"]) and info["version"] == P.VERSION

    # Refusals, each answered with its code and the command it refers to.
    lb = P.load_bytes(PLAN)
    n_words = len(PLAN.weight_words)
    bad_crc = bytearray(P.frame("C"))
    bad_crc[-1] ^= 1
    cases = {
        "bad_crc": (bytes(bad_crc), ("R", b"")),
        "unknown": (P.frame("Z"), ("?", b"")),
        "too_long": (P.frame("C", b"\0\0\0"), ("W", b"")),
        "address": (P.frame("L", P.load_payload(0, n_words, 1, lb)), ("A", b"")),
        "memory": (P.frame("L", P.load_payload(9, 0, 1, lb)), ("A", b"")),
        "gap": (P.frame("L", P.load_payload(0, 5, 1, lb)), ("G", b"")),
    }
    if not bool(VEC["preloaded"]):                   # the weight memory starts empty
        cases["not_verified"] = (P.frame("X", bytes(host.n_in)), ("N", b""))
    else:
        del cases["gap"]
    s["refusals"] = {}
    for name, (data, want) in cases.items():
        got = await raw(wire, data)
        s["refusals"][name] = [got[0], got[1].decode(errors="replace")]
        s.setdefault("refusals_ok", True)
        s["refusals_ok"] &= tuple(got) == want

    counters = []
    try:
        s["loads"] = await drive(wire, host.load_verified(True))
        for x, y in zip(VEC["x"], VEC["y"]):
            got = await drive(wire, host.infer(x))
            s["outputs"].append(got)
            s["vectors"] += 1
            s["mismatches"] += got != [int(v) for v in y]
            counters.append(await drive(wire, host.counters()))
    except P.ProtocolError as exc:                   # reported, and the test fails
        s["error"] = str(exc)
    s["counters"] = counters
    if hasattr(dut, "led0"):                         # LEDs: busy off, error off
        s["leds"] = [int(dut.led0.value), int(dut.led1.value)]
    s["counters_ok"] = bool(counters) and all(c["weight_bits"] == int(VEC["wbits"]) and
                           c["cycles"] > 0 and not c["busy"] and
                           not c["err"] and not c["uart_err"] and c["verified"]
                           for c in counters)
    s["retries"] = host.stats["retries"]
    s["framing_errors"] = wire.framing
    if flash is not None:
        s["flash"] = flash.summary()
    with open("board.json", "w") as f:
        json.dump(s, f, indent=1, default=int)
    assert "error" not in s, s["error"]
    assert s["ident_ok"], info
    assert s["refusals_ok"], s["refusals"]
    assert s["mismatches"] == 0, f"{s['mismatches']} of {s['vectors']} vectors differ"
    assert s["counters_ok"], counters
    assert wire.framing == 0 and s["retries"] == 0


def _session_bytes(host) -> tuple[int, int]:
    """(bytes the host sends before its first input, bytes of the whole clean session)."""
    lb = host.lb
    words = 0 if bool(VEC["preloaded"]) else len(PLAN.weight_words)    # the empty memory
    before = 5 + 5 + words * (8 + lb) + 5             # I, V, L frames, V
    return before, before + len(VEC["x"]) * (5 + host.n_in)


async def one_run(dut, wire: Wire, kind: str, rng: random.Random) -> dict:
    """One session (identify, load, verify, every vector) with one fault."""
    await reset(dut)
    host = P.Host(PLAN)
    before, total = _session_bytes(host)
    fault = {"kind": kind, "at": rng.randrange(5, total)}
    if kind == "reset_load":
        fault["at"] = rng.randrange(10, before - 5)
    elif kind == "flip_input":                       # inside the X frames
        fault["at"] = rng.randrange(before, total)
    wire.fault = None if kind in ("garbage", "reset_infer") else fault
    wire.fired, wire.sent = False, 0
    if kind == "garbage":
        await wire.send(bytes(rng.randrange(256) for _ in range(rng.randint(1, 24))))
    outs, err = [], ""
    try:
        await drive(wire, host.identify())
        await drive(wire, host.load_verified(True))
        for i, x in enumerate(VEC["x"]):
            if kind == "reset_infer" and i == 0:
                async def later():
                    await cycles(D * 10 * (host.n_in + 5) + rng.randrange(int(VEC["budget"])))
                    await reset(dut)
                cocotb.start_soon(later())
            outs.append(await drive(wire, host.infer(x)))
    except P.ProtocolError as exc:
        err = str(exc)
    exact = len(outs) == len(VEC["y"]) and all(
        o == [int(v) for v in y] for o, y in zip(outs, VEC["y"]))
    wrong = any(o != [int(v) for v in y] for o, y in zip(outs, VEC["y"]))
    await wire.resync()
    fired = wire.fired or kind in ("garbage", "reset_infer")
    return {"kind": kind, "at": fault["at"], "fired": fired, "outcome": "silent_wrong" if wrong else
            "bit_exact" if exact else "error", "error": err, "retries": host.stats["retries"],
            "causes": {k: v for k, v in host.stats.items() if k != "retries"}}


@cocotb.test()
async def board_faults(dut):
    """The fault campaign: ``runs`` sessions per fault kind, each outcome classified."""
    if not FAULTS:
        return
    await start(dut)
    rng = random.Random(int(os.environ.get("BOARD_SEED", "1")))
    wire = Wire(dut, rng)
    results = []
    for item in FAULTS.split(","):
        kind, runs = item.split(":")
        assert kind in FAULT_KINDS, kind
        for _ in range(int(runs)):
            results.append(await one_run(dut, wire, kind, rng))
            with open("faults.json", "w") as f:
                json.dump(results, f)
    assert not any(r["outcome"] == "silent_wrong" for r in results)
