"""Host driver of a board running an insitu bitstream: ``insitu run --port DEV DIR``.

Talks the protocol of :mod:`.protocol` over a serial port (pyserial; ``DEV`` may also be a
pyserial URL such as ``socket://host:port``): checks that the board was built from the
compiled folder (``I``), loads every weight word (``L``; required on the UP5K, whose SPRAM
starts empty), runs the inputs (``X``), reads the counters (``C``) and compares the outputs
with the golden model.
"""

from __future__ import annotations

import time

import numpy as np

from ..gen.design import canonical_outputs, golden_vectors
from . import protocol as P

__all__ = ["Board", "open_port", "run_board"]


def open_port(port: str, baud: int = 115200, timeout: float = 3.0):
    try:
        import serial
    except ImportError:
        raise P.ProtocolError("pyserial is missing: run 'make setup'") from None
    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=timeout)
    except (serial.SerialException, ValueError) as exc:
        raise P.ProtocolError(f"cannot open serial port '{port}': {exc}") from None


class Board:
    """One board on an open serial object (anything with ``write`` and ``read(n)``)."""

    def __init__(self, ser):
        self.ser = ser

    def _read(self, n: int, what: str) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.ser.read(n - len(data))
            if not chunk:
                raise P.ProtocolError(f"no answer from the board while reading {what} "
                                      f"({len(data)} of {n} bytes): wrong port, baud rate or "
                                      f"bitstream?")
            data += chunk
        return data

    def identify(self) -> dict:
        self.ser.write(b"I")
        return P.parse_ident(self._read(P.IDENT_BYTES, "the identify answer"))

    def load(self, words, nbytes: int, progress=None, chunk: int = 64) -> int:
        """Write ``(mem, addr, value)`` words, ``chunk`` commands before reading their acks."""
        words = list(words)
        for i in range(0, len(words), chunk):
            part = words[i:i + chunk]
            self.ser.write(b"".join(P.load_cmd(mm, a, v, nbytes) for mm, a, v in part))
            acks = self._read(len(part), "load acknowledgements")
            if acks != b"K" * len(part):
                bad = acks.replace(b"K", b"")[:1]
                raise P.ProtocolError(f"the board refused a load (answered {bad!r}: "
                                      f"{'engine busy' if bad == b'E' else 'protocol error'})")
            if progress:
                progress(i + len(part), len(words))
        return len(words)

    def infer(self, x, n_out: int) -> list[int]:
        self.ser.write(P.input_cmd(x))
        return P.parse_outputs(self._read(1 + 4 * n_out, "the outputs"), n_out)

    def counters(self) -> dict:
        self.ser.write(b"C")
        return P.parse_status(self._read(P.STATUS_BYTES, "the counters"))


def run_board(board: Board, plan, x, *, load: bool = True, progress=None) -> dict:
    """Check, load and run ``x`` (u8 vectors) on ``board``; returns a report with the
    outputs in the canonical (channel, pixel) order and a golden-model comparison."""
    say = progress or (lambda msg: None)
    t0 = time.monotonic()
    info = board.identify()
    want = P.parse_ident(P.ident(plan))
    if info["plan_id"] != want["plan_id"]:
        raise P.ProtocolError(f"the board runs another design (plan {info['plan_id']:08x}, "
                              f"{info['scheme']}, {info['lanes']} lanes); this folder's plan is "
                              f"{want['plan_id']:08x}: build and program it with 'insitu synth'")
    say(f"board: {info['scheme']} engine, {info['lanes']} lanes, {info['n_in']} inputs -> "
        f"{info['n_out']} outputs")
    loaded = 0
    if load:
        words = list(P.load_words(plan))
        loaded = board.load(words, info["load_bytes"],
                            lambda i, n: say(f"  loaded {i}/{n} memory words") if i == n or
                            i % 1024 == 0 else None)
    x = np.asarray(x, dtype=np.int64).reshape(len(x), -1)
    if x.shape[1] != info["n_in"]:
        raise P.ProtocolError(f"inputs have {x.shape[1]} values, the board takes {info['n_in']}")
    gold = golden_vectors(plan, x)
    outs, counters = [], []
    for i, v in enumerate(x):
        outs.append(board.infer(v, info["n_out"]))
        counters.append(board.counters())
        if progress and ((i + 1) % 50 == 0 or i + 1 == len(x)):
            say(f"  {i + 1}/{len(x)} inferences")
    outs_arr = np.asarray(outs, dtype=np.int64)
    bad = [i for i in range(len(x)) if not (outs_arr[i] == gold[i]).all()]
    return {"board": info, "vectors": len(x), "loaded_words": loaded,
            "bit_exact": not bad, "mismatches": len(bad), "first_mismatches": bad[:5],
            "cycles": counters[-1]["cycles"] if counters else 0,
            "cycles_per_inference": [c["cycles"] for c in counters],
            "weight_bits_read": counters[-1]["weight_bits"] if counters else 0,
            "engine_errors": sum(c["err"] for c in counters),
            "seconds": round(time.monotonic() - t0, 2), "outputs": canonical_outputs(plan, outs_arr)}
