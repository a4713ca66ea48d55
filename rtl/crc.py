"""Byte-wise CRC step for the host link: one byte per clock, as an XOR network.

Two CRCs are used (see :mod:`insitu.boards.protocol`):

- ``CRC16``: CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, not reflected, no
  final XOR; Python's ``binascii.crc_hqx(data, 0xFFFF)``) guards every frame on the link;
- ``CRC32``: CRC-32/IEEE (reflected polynomial 0xEDB88320, initial value and final XOR
  0xFFFFFFFF; Python's ``zlib.crc32``) is the running check of each loaded memory.

:func:`crc_step` is the unrolled bit-serial definition (eight shift/XOR steps); the formal
proof ``crc16_step`` / ``crc32_step`` compares it with a table built by Python's own CRC
functions, for every state and byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CRC16", "CRC32", "Crc", "CrcSpec", "crc_step"]


@dataclass(frozen=True)
class CrcSpec:
    width: int
    poly: int            # in the bit order of the shift (reflected for a reflected CRC)
    init: int
    reflected: bool
    xorout: int


CRC16 = CrcSpec(16, 0x1021, 0xFFFF, False, 0)
CRC32 = CrcSpec(32, 0xEDB88320, 0xFFFFFFFF, True, 0xFFFFFFFF)


def crc_step(spec: CrcSpec, state, byte) -> Value:
    """The register after one more ``byte`` (an expression; no final XOR)."""
    w = spec.width
    bits = [state[i] for i in range(w)]
    for k in range(8):
        if spec.reflected:                       # LSB first: shift right
            fb = bits[0] ^ byte[k]
            bits = bits[1:] + [Const(0, 1)]
        else:                                    # MSB first: shift left
            fb = bits[w - 1] ^ byte[7 - k]
            bits = [Const(0, 1)] + bits[:-1]
        bits = [b ^ fb if (spec.poly >> i) & 1 else b for i, b in enumerate(bits)]
    return Cat(*bits)


class Crc(wiring.Component):
    """A CRC register: ``clear`` loads the initial value, else ``en`` takes ``byte``.
    ``value``: the register (no final XOR; for :data:`CRC16` a frame followed by its own CRC,
    high byte first, leaves it 0)."""

    def __init__(self, spec: CrcSpec):
        self.spec = spec
        super().__init__({"clear": In(1), "en": In(1), "byte": In(8),
                          "value": Out(spec.width, init=spec.init)})

    def elaborate(self, platform):
        m = Module()
        nxt = Signal(self.spec.width)
        m.d.comb += nxt.eq(crc_step(self.spec, self.value, self.byte))
        with m.If(self.clear):
            m.d.sync += self.value.eq(self.spec.init)
        with m.Elif(self.en):
            m.d.sync += self.value.eq(nxt)
        return m
