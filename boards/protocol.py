"""The UART host protocol of the board tops (pure Python; shared by the host driver, the
cocotb board test and the RTL's constants).

Every command is one ASCII byte, followed by its arguments; the board answers every command.
Numbers are little-endian.

=========  ==========================================  =========================================
command    arguments                                   answer
=========  ==========================================  =========================================
``I``      -                                           ``I`` version scheme lanes n_in(2) n_out(2)
                                                       load_bytes plan_id(4)  (13 bytes)
``L``      mem(1) addr(2) data(load_bytes)             ``K`` written, ``E`` engine busy
``X``      n_in input bytes (u8, [C, H, W] order)      ``Y`` then n_out outputs, 4 bytes each
                                                       (int32, engine order; see output_order)
``C``      -                                           ``C`` cycles issue_cycles mac_terms
                                                       mac_slots weight_bits (6 bytes each) status
other      -                                           ``?``
=========  ==========================================  =========================================

``status``: bit 0 engine busy, bit 1 engine error (bad weight code, sticky until the next
input), bit 2 UART receive error (framing or overrun, sticky).
"""

from __future__ import annotations

import struct
import zlib

from ..gen import schemes
from ..gen.memmap import MEM_AUX, MEM_COEF, MEM_POST, MEM_WEIGHT, load_data_bits

VERSION = 1
SCHEME_IDS = {name: i for i, name in enumerate(schemes.NAMES)}    # registry order
COUNTERS = ("cycles", "issue_cycles", "mac_terms", "mac_slots", "weight_bits")
COUNTER_BYTES = 6
IDENT_BYTES = 13
STATUS_BYTES = 1 + len(COUNTERS) * COUNTER_BYTES + 1


class ProtocolError(RuntimeError):
    """The board answered something the protocol does not allow."""


def plan_id(plan) -> int:
    """A 32-bit fingerprint of a compiled plan (the board reports the one it was built with)."""
    return zlib.crc32(plan.to_json().encode()) & 0xFFFFFFFF


def load_bytes(plan) -> int:
    return (load_data_bits(plan) + 7) // 8


def ident(plan) -> bytes:
    """The answer to ``I`` for a board built from ``plan``."""
    layers = plan.layers
    n_in = layers[0].cin * layers[0].h * layers[0].w
    n_out = layers[-1].cout * layers[-1].oh * layers[-1].ow
    return b"I" + struct.pack("<BBBHHBI", VERSION, SCHEME_IDS[plan.scheme], plan.lanes & 0xFF,
                              n_in, n_out, load_bytes(plan), plan_id(plan))


def parse_ident(data: bytes) -> dict:
    if len(data) != IDENT_BYTES or data[:1] != b"I":
        raise ProtocolError(f"bad identify answer {data.hex() or '(nothing)'}")
    v, scheme, lanes, n_in, n_out, lb, pid = struct.unpack("<BBBHHBI", data[1:])
    names = {i: s for s, i in SCHEME_IDS.items()}
    return {"version": v, "scheme": names.get(scheme, f"#{scheme}"), "lanes": lanes, "n_in": n_in,
            "n_out": n_out, "load_bytes": lb, "plan_id": pid}


def load_cmd(mem: int, addr: int, value: int, nbytes: int) -> bytes:
    return b"L" + struct.pack("<BH", mem, addr) + int(value).to_bytes(nbytes, "little")


def input_cmd(x) -> bytes:
    return b"X" + bytes(int(v) for v in x)


def parse_outputs(data: bytes, n_out: int) -> list[int]:
    if len(data) != 1 + 4 * n_out or data[:1] != b"Y":
        raise ProtocolError(f"expected 'Y' and {n_out} outputs, got {len(data)} bytes "
                            f"starting {data[:1].hex() or '(nothing)'}")
    return list(struct.unpack(f"<{n_out}i", data[1:]))


def parse_status(data: bytes) -> dict:
    if len(data) != STATUS_BYTES or data[:1] != b"C":
        raise ProtocolError(f"bad counters answer {data[:4].hex() or '(nothing)'}...")
    out = {}
    for i, name in enumerate(COUNTERS):
        off = 1 + i * COUNTER_BYTES
        out[name] = int.from_bytes(data[off:off + COUNTER_BYTES], "little")
    st = data[-1]
    out.update({"busy": bool(st & 1), "err": bool(st & 2), "uart_err": bool(st & 4)})
    return out


def load_words(plan):
    """Every memory word of ``plan`` as ``(mem, addr, value)`` (what ``insitu run --load`` sends)."""
    for mem, words in ((MEM_WEIGHT, plan.weight_words), (MEM_AUX, plan.aux_words),
                       (MEM_POST, plan.post_words), (MEM_COEF, plan.coef_words)):
        for addr, value in enumerate(words):
            yield mem, addr, int(value)
