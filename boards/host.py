"""Host driver of a board running an insitu bitstream: ``insitu run --port DEV DIR``.

Talks the protocol of :mod:`.protocol` over a serial port (pyserial; ``DEV`` may also be a
pyserial URL such as ``socket://host:port``): checks that the board was built from the
compiled folder (``I``), loads every memory word (``L``; required on the UP5K, whose SPRAM
starts empty), checks the board's word counts and CRC-32s against the image (``V``), runs the
inputs (``X``), reads the counters (``C``) and compares the outputs with the golden model.
Every frame is CRC-checked both ways; a refused or unreadable frame is resent (bounded).
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
    """One board on an open serial object (anything with ``write`` and ``read(n)``; pyserial's
    ``timeout`` bounds each read).  Runs :class:`~.protocol.Host` sessions on it."""

    def __init__(self, ser, *, infer_timeout: float = 10.0, settle: float = 0.02):
        self.ser, self.infer_timeout, self.settle = ser, infer_timeout, settle

    def _read(self, n: int, wait: str) -> bytes:
        old = getattr(self.ser, "timeout", None)
        if wait == "infer" and old is not None:
            self.ser.timeout = max(old, self.infer_timeout)
        try:
            data = b""
            while len(data) < n:
                chunk = self.ser.read(n - len(data))
                if not chunk:
                    break
                data += chunk
            return data
        finally:
            if wait == "infer" and old is not None:
                self.ser.timeout = old

    def _resync(self):
        """Wait until nothing more arrives, and drop it: the board is idle again."""
        old = getattr(self.ser, "timeout", None)
        if old is not None:
            time.sleep(self.settle)
            self.ser.timeout = self.settle
        try:
            while self.ser.read(4096):
                pass
        finally:
            if old is not None:
                self.ser.timeout = old

    def drive(self, session):
        """Run a session generator of :class:`~.protocol.Host` on this port."""
        reply = None
        while True:
            try:
                req = session.send(reply)
            except StopIteration as stop:
                return stop.value
            if req[0] == "write":
                self.ser.write(req[1])
                reply = None
            elif req[0] == "read":
                reply = self._read(req[1], req[2])
            else:
                self._resync()
                reply = None


def run_board(board: Board, plan, x, *, load: bool = True, progress=None,
              retries: int = 4) -> dict:
    """Check, load, verify and run ``x`` (u8 vectors) on ``board``; returns a report with the
    outputs in the canonical (channel, pixel) order, a golden-model comparison and the
    link's retry counts."""
    say = progress or (lambda msg: None)
    t0 = time.monotonic()
    host = P.Host(plan, retries=retries)
    info = board.drive(host.identify())
    say(f"board: {info['scheme']} engine, {info['lanes']} lanes, {info['n_in']} inputs -> "
        f"{info['n_out']} outputs")
    x = np.asarray(x, dtype=np.int64).reshape(len(x), -1)
    if x.shape[1] != info["n_in"]:
        raise P.ProtocolError(f"inputs have {x.shape[1]} values, the board takes {info['n_in']}")
    loaded = board.drive(host.load_verified(
        load, lambda i, n: say(f"  loaded {i}/{n} memory words") if i == n or i % 1024 == 0
        else None))
    say("memories verified (word counts and CRC-32 match the compiled image)")
    gold = golden_vectors(plan, x)
    outs, counters = [], []
    for i, v in enumerate(x):
        outs.append(board.drive(host.infer(v, load)))
        counters.append(board.drive(host.counters()))
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
            "link": {"retries": host.stats["retries"], "causes": {
                k: v for k, v in sorted(host.stats.items()) if k != "retries"}},
            "seconds": round(time.monotonic() - t0, 2), "outputs": canonical_outputs(plan, outs_arr)}
