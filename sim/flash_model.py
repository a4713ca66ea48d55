"""A cocotb model of a SPI NOR flash (W25Q128-style reads) on a design's pins.

It answers the two read commands :class:`insitu.rtl.flash.FlashReader` uses, in SPI mode 0:
Fast Read ``0x0B`` (data on DQ1) and Fast Read Quad Output ``0x6B`` (data on DQ3..DQ0), both
with a 24-bit address and 8 dummy clocks, the address wrapping at the end of the memory.
It samples DQ0 on SCK's rising edge and changes its output after the falling edge, as a
flash does; chip select high ends a command at any point.  Anything else it sees (another
command, a clock edge with chip select high) is recorded in ``errors``.

``base``: the address of the image's first byte (a board puts the weights after its
bitstream).  ``flip``: ``(byte index, bit)`` of a read to corrupt, counting bytes from the
first read (a planted error, to show a bench can fail).
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge, First, RisingEdge

# The W25Q128 datasheet's values, written here and not imported from the reader, so the
# model checks the RTL's commands instead of sharing them.
READ, READ_QUAD = 0x0B, 0x6B          # Fast Read, Fast Read Quad Output
DUMMY_CLOCKS = 8                      # dummy clocks of both reads
ADDR_BITS = 24

__all__ = ["SpiFlash"]


class SpiFlash:
    """``image`` (bytes) behind the pins ``sck``, ``cs_n``, ``dq_o``/``dq_oe`` (driven by the
    design) and ``dq_i`` (driven here)."""

    def __init__(self, dut, image: bytes, *, prefix: str = "", flip=None, base: int = 0):
        self.image, self.base = bytes(image), base
        self.sck = getattr(dut, f"{prefix}sck")
        self.cs_n = getattr(dut, f"{prefix}cs_n")
        self.dq_o = getattr(dut, f"{prefix}dq_o")
        self.dq_i = getattr(dut, f"{prefix}dq_i")
        self.flip = flip
        self.errors: list[str] = []
        self.commands: list[tuple[int, int, int]] = []      # (command, address, bytes read)
        self.bytes_read = 0
        self.dq_i.value = 0

    def summary(self) -> dict:
        """What the benches report: reads seen, bytes sent, the first errors."""
        return {"reads": len(self.commands), "bytes_read": self.bytes_read,
                "errors": self.errors[:5]}

    def start(self):
        return cocotb.start_soon(self._run())

    def _deselected(self) -> bool:
        """Chip select high, or not driven yet (X / Z before the design's reset)."""
        v = self.cs_n.value
        return not v.is_resolvable or bool(int(v))

    async def _run(self):
        while True:
            if self._deselected():
                await FallingEdge(self.cs_n)
                if self._deselected():
                    continue
            await self._command()
            if not self._deselected():
                await RisingEdge(self.cs_n)
            self.dq_i.value = 0

    async def _clock(self, edge):
        """Wait for ``edge`` of SCK; False when chip select rose first."""
        await First(edge(self.sck), RisingEdge(self.cs_n))
        return not self._deselected()

    def _dq0(self, i: int) -> int:
        """DQ0 as the design drives it (the other lines may float: they are not its input);
        an undriven DQ0 is recorded in ``errors``."""
        v = self.dq_o.value
        bit = v[0] if len(v) > 1 else v
        if not bit.is_resolvable:
            self.errors.append(f"DQ0 not driven ({bit}) at command bit {i}")
            return 0
        return int(bit)

    async def _command(self):
        word = 0
        for i in range(8 + ADDR_BITS):
            if not await self._clock(RisingEdge):
                return
            word = (word << 1) | self._dq0(i)
        cmd, addr = word >> ADDR_BITS, word & ((1 << ADDR_BITS) - 1)
        if cmd not in (READ, READ_QUAD):
            self.errors.append(f"unknown command 0x{cmd:02x}")
            return
        for _ in range(DUMMY_CLOCKS):
            if not await self._clock(RisingEdge):
                return
        per = 4 if cmd == READ_QUAD else 1
        count = 0
        while True:                     # bytes until chip select rises
            value = self.image[(addr - self.base + count) % len(self.image)]
            if self.flip is not None and self.bytes_read == self.flip[0]:
                value ^= 1 << self.flip[1]
            for k in range(8 // per):
                # each chunk goes out after a falling edge (the first after the last
                # dummy clock's) and is sampled on the next rising edge
                if not await self._clock(FallingEdge):
                    self.commands.append((cmd, addr, count))
                    return
                chunk = (value >> (8 - per * (k + 1))) & ((1 << per) - 1)
                self.dq_i.value = chunk if per == 4 else chunk << 1
                if k == 0:
                    self.bytes_read += 1
            count += 1
