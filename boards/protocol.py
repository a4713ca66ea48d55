"""The UART host protocol of the board tops, version 2 (pure Python; shared by the host
driver, the board-level cocotb test and the RTL's constants).

Every message in both directions is a frame::

    code(1)  length(2, little-endian)  payload(length)  crc(2, big-endian)

``crc`` is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, not reflected, no
final XOR; ``binascii.crc_hqx(data, 0xFFFF)``) over code, length and payload, so a whole
frame run through the CRC leaves 0.  Numbers are little-endian.

=======  ==========================================  =========================================
command  payload                                     answer (code: payload)
=======  ==========================================  =========================================
``I``    -                                           ``I``: version scheme lanes n_in(2)
                                                     n_out(2) load_bytes plan_id(4)
``L``    mem(1) addr(2) data(load_bytes)             ``K``: mem addr(2) (the word is written)
``V``    -                                           ``V``: per memory (weight, aux, post,
                                                     coef) its crc32(4); flags (bit 0: every
                                                     memory matches the compiled image)
``X``    n_in input bytes (u8, [C, H, W] order)      ``Y``: n_out outputs, int32 each (engine
                                                     order; see ``output_order``)
``C``    -                                           ``C``: cycles weight_bits (4 bytes
                                                     each), status
=======  ==========================================  =========================================

A refused frame is answered with an error code and no payload (:data:`ERRORS`).
A frame whose bytes stop for :data:`TIMEOUT_BITS` bit times is dropped (``T``), so a lost
byte costs that frame only; after a wrong length (``W``) the board drops bytes until the line
is quiet for the same time.  An ``X`` frame that fails is still run to its end inside the
engine, and its outputs are discarded.

Loads are sequential per memory: address 0 restarts a memory, each next address extends it,
a repeated address (a retry whose ``K`` was lost) is acknowledged without a write, a gap is
refused (``G``).  The board keeps the word count and a running CRC-32 (``zlib.crc32``) of the
``load_bytes``-byte data fields of each memory; it infers only while every memory matches
the image it was built from (memories initialised by the bitstream match at power-up; the
UP5K's SPRAM starts empty).

``status``: bit 0 engine busy, bit 1 engine error (bad weight code, sticky until the next
input), bit 2 UART receive error (framing or overrun, sticky), bit 3 memories verified.
"""

from __future__ import annotations

import binascii
import struct
import zlib
from collections import Counter

from ..gen import schemes
from ..gen.memmap import (
    MEM_AUX,
    MEM_COEF,
    MEM_POST,
    MEM_WEIGHT,
    MEMORIES,
    load_data_bits,
)

VERSION = 2
SCHEME_IDS = {name: i for i, name in enumerate(schemes.NAMES)}    # registry order
#: The engine counters a board reports (the others are checked in simulation; leaving them
#: out saves their registers and the answer's bytes on the small FPGAs).
COUNTERS = ("cycles", "weight_bits")
COUNTER_BYTES = 4
IDENT_LEN = 12
STATUS_LEN = len(COUNTERS) * COUNTER_BYTES + 1
VERIFY_LEN = 4 * 4 + 1
N_MEMORIES = 4
#: Bit times without a byte after which the board drops a frame it is receiving (the
#: default; ``insitu synth --frame-timeout`` builds another, within :data:`TIMEOUT_RANGE`).
TIMEOUT_BITS = 64
TIMEOUT_RANGE = (8, 1 << 20)


def check_frame_timeout(bits) -> int:
    """``bits`` if it is a frame timeout a board can be built with, else a ``ValueError``."""
    lo, hi = TIMEOUT_RANGE
    if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= hi:
        raise ValueError(f"frame timeout must be {lo}..{hi} bit times, not {bits!r}")
    return bits


def resync_seconds(frame_timeout: int, baud: int) -> float:
    """How long the host waits for a quiet line after an error: twice the board's frame
    timeout, and at least 20 ms (a USB serial adapter's latency)."""
    return max(0.02, 2 * frame_timeout / baud)

#: Answer codes for a refused frame, with the host's one-line reading of each.
ERRORS = {
    "R": "bad CRC (frame discarded)",
    "T": "frame timed out (its bytes stopped)",
    "W": "frame length wrong for the command",
    "?": "unknown command",
    "A": "load address out of range",
    "G": "load out of order",
    "N": "memories not verified: load them before inferring",
    "E": "engine busy",
}
#: Why an inference has no results when the engine flagged it (``err``: the board spoils the
#: ``Y`` answer's CRC).
ENGINE_ERROR = ("the engine flagged the inference (weight stream CRC mismatch, invalid weight "
                "code or memory conflict): no results")
#: Why no inference can ever succeed until the board is reset: its power-up check of the
#: flash's weight image failed (status bit 4).
IMAGE_BAD = ("the weight image in the flash failed the board's power-up CRC-32 check: program "
             "the flash with this folder's flash.bin (at the offset 'insitu synth' printed) "
             "and reset the board")
#: Refusals a retry can cure (a corrupted, cut or misaligned frame).
TRANSIENT = frozenset("RTWG")


class ProtocolError(RuntimeError):
    """The board answered something the protocol does not allow, or a frame kept failing."""


class Refused(ProtocolError):
    """The board refused a frame for good (``code``: one of :data:`ERRORS`)."""

    def __init__(self, cmd: str, code: str):
        super().__init__(f"the board refused the '{cmd}' frame: {ERRORS[code]}")
        self.code = code


class LinkFault(Exception):
    """An answer the host could not read (no answer, short, bad CRC): the host resyncs."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def crc16(data: bytes) -> int:
    return binascii.crc_hqx(bytes(data), 0xFFFF)


def frame(code: str | bytes, payload: bytes = b"") -> bytes:
    head = (code.encode() if isinstance(code, str) else bytes(code)) + \
        struct.pack("<H", len(payload))
    body = head + bytes(payload)
    return body + struct.pack(">H", crc16(body))


def parse_frame(data: bytes) -> tuple[str, bytes]:
    """``(code, payload)`` of one whole frame; :class:`LinkFault` when it is damaged."""
    if len(data) < 5:
        raise LinkFault("short answer")
    n = struct.unpack("<H", data[1:3])[0]
    if len(data) != 5 + n:
        raise LinkFault("answer length")
    if crc16(data) != 0:
        raise LinkFault("answer CRC")
    return chr(data[0]), bytes(data[3:3 + n])


def plan_id(plan) -> int:
    """A 32-bit fingerprint of a compiled plan (the board reports the one it was built with):
    the same for the plan as ``insitu compile`` writes it and as a board places it (its
    activations in banks), so the host can check a board against a compiled folder."""
    return zlib.crc32(plan.unbanked().to_json().encode()) & 0xFFFFFFFF


def load_bytes(plan) -> int:
    return (load_data_bits(plan) + 7) // 8


def io_sizes(plan) -> tuple[int, int]:
    c, h, w = plan.input_shape
    last = plan.layers[-1]
    return c * h * w, last.cout * last.oh * last.ow


def ident(plan) -> bytes:
    """The payload of the answer to ``I`` for a board built from ``plan``."""
    n_in, n_out = io_sizes(plan)
    return struct.pack("<BBBHHBI", VERSION, SCHEME_IDS[plan.scheme], plan.lanes & 0xFF,
                       n_in, n_out, load_bytes(plan), plan_id(plan))


def parse_ident(data: bytes) -> dict:
    if len(data) != IDENT_LEN:
        raise ProtocolError(f"bad identify answer {data.hex() or '(nothing)'}")
    v, scheme, lanes, n_in, n_out, lb, pid = struct.unpack("<BBBHHBI", data)
    names = {i: s for s, i in SCHEME_IDS.items()}
    return {"version": v, "scheme": names.get(scheme, f"#{scheme}"), "lanes": lanes, "n_in": n_in,
            "n_out": n_out, "load_bytes": lb, "plan_id": pid}


def load_payload(mem: int, addr: int, value: int, nbytes: int) -> bytes:
    return struct.pack("<BH", mem, addr) + int(value).to_bytes(nbytes, "little")


def parse_outputs(data: bytes, n_out: int) -> list[int]:
    if len(data) != 4 * n_out:
        raise ProtocolError(f"expected {n_out} outputs, got {len(data)} bytes")
    return list(struct.unpack(f"<{n_out}i", data))


def parse_status(data: bytes) -> dict:
    if len(data) != STATUS_LEN:
        raise ProtocolError(f"bad counters answer {data[:4].hex() or '(nothing)'}...")
    out = {}
    for i, name in enumerate(COUNTERS):
        off = i * COUNTER_BYTES
        out[name] = int.from_bytes(data[off:off + COUNTER_BYTES], "little")
    st = data[-1]
    out.update({"busy": bool(st & 1), "err": bool(st & 2), "uart_err": bool(st & 4),
                "verified": bool(st & 8), "image_bad": bool(st & 16)})
    return out


def parse_verify(data: bytes) -> dict:
    if len(data) != VERIFY_LEN:
        raise ProtocolError(f"bad verify answer {data.hex() or '(nothing)'}")
    crcs = list(struct.unpack(f"<{N_MEMORIES}I", data[:4 * N_MEMORIES]))
    return {"crc32": crcs, "verified": bool(data[-1] & 1)}


def memory_words(plan) -> list[list[int]]:
    """The words of each memory id (weight, aux, post, coef)."""
    out = [[] for _ in range(N_MEMORIES)]
    for mem, words in ((MEM_WEIGHT, plan.weight_words), (MEM_AUX, plan.aux_words),
                       (MEM_POST, plan.post_words), (MEM_COEF, plan.coef_words)):
        out[mem] = [int(v) for v in words]
    return out


def memory_checks(plan) -> list[tuple[int, int]]:
    """``(words, crc32)`` of each memory when it holds the compiled image (the board's verify
    answer reports the CRC)."""
    lb = load_bytes(plan)
    return [(len(ws), zlib.crc32(b"".join(w.to_bytes(lb, "little") for w in ws)))
            for ws in memory_words(plan)]


def load_words(plan):
    """Every memory word of ``plan`` as ``(mem, addr, value)`` (what ``insitu run`` sends)."""
    for mem, words in enumerate(memory_words(plan)):
        for addr, value in enumerate(words):
            yield mem, addr, value


# -- the host side, without I/O ---------------------------------------------------------------
# A session is a generator of requests, run by a driver that owns the wire: ``insitu run``'s
# serial driver (``insitu.boards.host``) and the board-level cocotb bench drive the same code.
#   ("write", data)     send bytes;                                    -> None
#   ("read", n, wait)   up to n bytes; fewer once the driver's timeout for ``wait`` ("answer"
#                       or "infer") passes;                            -> bytes
#   ("resync",)         wait until the line is quiet, drop whatever was received; -> None

class Host:
    """The host's half of the protocol: frames, answers, bounded retries, counts of each
    retry cause in ``stats``."""

    def __init__(self, plan, *, retries: int = 4, reloads: int = 2, window: int = 16,
                 words=None):
        self.plan, self.retries, self.reloads, self.window = plan, retries, reloads, window
        #: ``(mem, addr, value)`` to load: the plan's image unless a test plants an error.
        self.words = list(load_words(plan) if words is None else words)
        #: The CRC-32 of each memory holding the compiled image (the verify answer's).
        self.expected_crcs = [c for _, c in memory_checks(plan)]
        self.lb = load_bytes(plan)
        self.n_in, self.n_out = io_sizes(plan)
        self.stats: Counter = Counter()

    def _answer(self, wait: str = "answer"):
        head = yield ("read", 3, wait)
        if len(head) < 3:
            raise LinkFault("no answer")
        n = struct.unpack("<H", head[1:3])[0]
        if n > max(4 * self.n_out, STATUS_LEN, VERIFY_LEN, IDENT_LEN):
            raise LinkFault("answer length")
        # (a Y answer's head leaves when the inference starts, its outputs when it ends: the
        # rest of the frame gets the same wait)
        rest = yield ("read", n + 2, wait)
        return parse_frame(head + rest)

    def exchange(self, cmd: str, payload: bytes, want: str, wait: str = "answer"):
        """Send one frame until its answer is ``want`` (returns the payload); a transient
        refusal or an unreadable answer is retried after a resync, at most ``retries`` times."""
        last = ""
        for _ in range(self.retries + 1):
            yield ("write", frame(cmd, payload))
            try:
                code, body = yield from self._answer(wait)
            except LinkFault as fault:
                last = fault.kind
                if cmd == "X" and fault.kind == "answer CRC":
                    yield ("resync",)
                    last = (yield from self._engine_error()) or last
                    if last == IMAGE_BAD:           # permanent: no retry can cure it
                        self.stats[last] += 1
                        raise ProtocolError(IMAGE_BAD)
            else:
                if code == want:
                    return body
                if code not in ERRORS:
                    last = f"unexpected answer {code!r}"
                elif code in TRANSIENT:
                    last = ERRORS[code]
                else:
                    raise Refused(cmd, code)
            self.stats[last] += 1
            self.stats["retries"] += 1
            yield ("resync",)
        raise ProtocolError(f"the board did not take the '{cmd}' frame in {self.retries + 1} "
                            f"tries (last: {last})")

    def _engine_error(self):
        """After an unreadable ``Y`` answer: ``IMAGE_BAD`` if the board's status says its
        power-up image check failed, ``ENGINE_ERROR`` if it says the engine flagged that
        inference (the board then spoils the answer's CRC on purpose), else ``""`` (a damaged
        answer: retried as any other)."""
        yield ("write", frame("C"))
        try:
            code, body = yield from self._answer()
        except LinkFault:
            return ""
        if code == "C" and len(body) == STATUS_LEN:
            st = parse_status(body)
            if st["image_bad"]:
                return IMAGE_BAD
            if st["err"]:
                return ENGINE_ERROR
        return ""

    def identify(self):
        info = parse_ident((yield from self.exchange("I", b"", "I")))
        want = parse_ident(ident(self.plan))
        if info["plan_id"] != want["plan_id"]:
            raise ProtocolError(
                f"the board runs another design (plan {info['plan_id']:08x}, {info['scheme']}, "
                f"{info['lanes']} lanes); this folder's plan is {want['plan_id']:08x}: build and "
                f"program it with 'insitu synth'")
        return info

    def load(self, progress=None, memories=None):
        """Every word (of ``memories``, default all), ``window`` frames before reading their
        answers; after a refusal the host resyncs and resends from the first word without
        its ``K``."""
        words = [w for w in self.words if memories is None or w[0] in memories]
        tries = Counter()
        i = restarts = 0
        while i < len(words):
            part = words[i:i + self.window]
            yield ("write", b"".join(frame("L", load_payload(mm, a, v, self.lb))
                                     for mm, a, v in part))
            done, last = 0, ""
            for mm, a, _ in part:
                try:
                    code, body = yield from self._answer()
                except LinkFault as fault:
                    last = fault.kind
                    break
                if code == "K" and body == struct.pack("<BH", mm, a):
                    done += 1
                    continue
                if code in ERRORS and code not in TRANSIENT:
                    raise ProtocolError(f"the board refused the load of memory {mm} word {a}: "
                                        f"{ERRORS[code]}")
                last = ERRORS.get(code, f"unexpected answer {code!r}")
                break
            i += done
            if last == ERRORS["G"]:                 # the board lost the memory (a reset):
                restarts += 1                       # send it again from its first word
                if restarts > self.reloads:
                    raise ProtocolError(f"the board kept losing memory {words[i][0]} while "
                                        f"loading ({restarts} restarts)")
                mem = words[i][0]
                i = next(k for k, w in enumerate(words) if w[0] == mem)
            if done < len(part):
                tries[i] += 1
                self.stats[last] += 1
                self.stats["retries"] += 1
                if tries[i] > self.retries:
                    raise ProtocolError(f"the board did not take memory {words[i][0]} word "
                                        f"{words[i][1]} in {self.retries + 1} tries "
                                        f"(last: {last})")
                yield ("resync",)
            if progress:
                progress(i, len(words))
        return len(words)

    def verify(self) -> dict:
        v = parse_verify((yield from self.exchange("V", b"", "V")))
        v["expected"] = self.expected_crcs
        v["match"] = v["verified"] and v["crc32"] == v["expected"]
        return v

    def load_verified(self, load: bool, progress=None):
        """Verify; load (when ``load``) the memories that do not match the compiled image, and
        verify again, until every memory matches.  Returns the words loaded."""
        loaded = 0
        v = yield from self.verify()
        for attempt in range(self.reloads + 1):
            if v["match"]:
                return loaded
            if not load:
                raise ProtocolError("the board's memories do not match this folder's image "
                                    "(verify answer); run without --no-load")
            if attempt:
                self.stats["reloads"] += 1
            stale = {i for i, (g, e) in enumerate(zip(v["crc32"], v["expected"])) if g != e}
            loaded += yield from self.load(progress, stale or None)
            v = yield from self.verify()
        if v["match"]:
            return loaded
        names = {i: name for name, i in MEMORIES.items()}
        bad = [f"{names[i]} {g:08x} != {e:08x}" for i, (g, e)
               in enumerate(zip(v["crc32"], v["expected"])) if g != e]
        raise ProtocolError(f"the loaded memories do not verify after {self.reloads + 1} loads "
                            f"(crc32: {'; '.join(bad) or 'flag clear'})")

    def infer(self, x, load: bool = True):
        """One inference; a board that lost its memories (``N``: a reset) is reloaded."""
        payload = bytes(int(v) for v in x)
        for attempt in range(self.reloads + 1):
            try:
                return parse_outputs((yield from self.exchange("X", payload, "Y", "infer")),
                                     self.n_out)
            except Refused as exc:
                if exc.code != "N" or not load or attempt == self.reloads:
                    raise
            self.stats["reloads after a reset"] += 1
            yield from self.load_verified(load)

    def counters(self) -> dict:
        return parse_status((yield from self.exchange("C", b"", "C")))
