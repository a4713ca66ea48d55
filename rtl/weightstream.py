"""The weight memory of a flash-backed engine: a SPI / QSPI NOR flash read once per inference.

The flash holds the fill's weight stream (``gen.flashimage``: the words in the order the fill
takes them, ``ceil(bits / 8)`` bytes each, least significant byte first).  ``start`` issues
one read of the whole stream from ``offset``; bytes are gathered into a word, which waits
until the fill takes it (the flash clock stops meanwhile).  Nothing of the weight memory stays on
chip between inferences.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .crc import CRC32, Crc
from .flash import ADDR_BITS, FlashReader

__all__ = ["WeightStream", "FLASH_PINS"]

#: The flash pins as a design drives them (``dq_i`` comes from the pads).
FLASH_PINS = wiring.Signature({"sck": Out(1), "cs_n": Out(1, init=1), "dq_o": Out(4),
                               "dq_oe": Out(4), "dq_i": In(4)})


class WeightStream(wiring.Component):
    """Weight words from a flash, in stream order.

    Parameters
    ----------
    word_bits : int
        Bits of a weight word.
    count : int
        Bytes of the stream (one inference).
    offset : int
        Flash address of its first byte.
    quad, divider
        :class:`~.flash.FlashReader` settings.
    crc : int or None
        The CRC-32 (``zlib.crc32``) of the stream: every read is checked against it and
        ``bad`` pulses after a read whose bytes differ (a corrupt or wrongly programmed
        flash).

    Members
    -------
    start : ``In(1)``
        An inference starts: read the stream from its first byte.
    check : ``In(1)``
        Read the whole stream once and discard its words (a power-up check of the image:
        ``bad`` as for an inference's read).  Not while a read is running.
    busy : ``Out(1)``
        A read (an inference's or a check's) is running.
    take : ``In(1)``
        The fill takes the next word this cycle (only while ``ready``).
    ready : ``Out(1)``
        A word is waiting.
    data : ``Out(word_bits)``
        The word taken last (held until the next take), as a memory read port shows it.
    bad : ``Out(1)``
        One cycle after a read whose CRC-32 is not ``crc``.
    flash : ``Out(FLASH_PINS)``

    Raises
    ------
    ValueError
        If ``word_bits`` or ``count`` is not positive, or the stream does not fit the
        flash's 24-bit address space from ``offset``.
    """

    def __init__(self, *, word_bits: int, count: int, offset: int = 0, quad: bool = True,
                 divider: int = 1, crc: int | None = None):
        for name, v in (("word_bits", word_bits), ("count", count)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Weight stream {name} must be a positive integer, not {v!r}")
        if not isinstance(offset, int) or offset < 0 or offset + count > 1 << ADDR_BITS:
            raise ValueError(f"Weight stream of {count} bytes at offset {offset!r} does not fit "
                             f"a 24-bit flash address")
        self.word_bits, self.count, self.offset, self.crc = word_bits, count, offset, crc
        self.quad, self.divider = quad, divider
        FlashReader.check(quad=quad, divider=divider, fixed=(offset, count))
        super().__init__({"start": In(1), "check": In(1), "take": In(1), "ready": Out(1),
                          "data": Out(word_bits), "bad": Out(1), "busy": Out(1),
                          "flash": Out(FLASH_PINS)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = rd = FlashReader(quad=self.quad, divider=self.divider,
                                               fixed=(self.offset, self.count))
        nb = (self.word_bits + 7) // 8
        m.d.comb += [self.flash.sck.eq(rd.sck), self.flash.cs_n.eq(rd.cs_n),
                     self.flash.dq_o.eq(rd.dq_o), self.flash.dq_oe.eq(rd.dq_oe),
                     rd.dq_i.eq(self.flash.dq_i)]
        # one read of the whole stream per inference
        pend = Signal()
        m.d.comb += rd.i_cmd.valid.eq(pend)
        with m.If(rd.i_cmd.ready):
            m.d.sync += pend.eq(0)
        # bytes -> a word (the first byte ends up least significant); a complete word waits
        # in `buf` until the fill takes it into `data`, and the next one starts then
        buf = Signal(8 * nb)
        got = Signal(range(nb + 1))
        m.d.comb += self.ready.eq(got == nb)
        byte = rd.o_data
        m.d.comb += byte.ready.eq(got != nb)
        with m.If(byte.valid & byte.ready):
            m.d.sync += [buf.eq(Cat(buf[8:], byte.payload) if nb > 1 else byte.payload),
                         got.eq(got + 1)]
        draining = Signal()             # a check's read: complete words are dropped
        with m.If((self.take | draining) & self.ready):
            m.d.sync += got.eq(0)
            with m.If(~draining):
                m.d.sync += self.data.eq(buf[:self.word_bits])
        begin = self.start | self.check
        reading = Signal()
        over = reading & ~pend & rd.i_cmd.ready & ~byte.valid        # the reader went idle
        with m.If(begin):
            m.d.sync += [pend.eq(1), got.eq(0), draining.eq(self.check), reading.eq(1)]
        with m.Elif(over):
            m.d.sync += [reading.eq(0), draining.eq(0)]
        m.d.comb += self.busy.eq(reading)
        if self.crc is not None:
            # CRC-32 of the bytes as they arrive; checked once the read is over and its last
            # byte was taken
            m.submodules.crc = crc = Crc(CRC32)
            m.d.comb += [crc.clear.eq(begin), crc.byte.eq(byte.payload),
                         crc.en.eq(byte.valid & byte.ready)]
            with m.If(over):
                m.d.sync += self.bad.eq(crc.value != (self.crc ^ CRC32.xorout))
            with m.If(~reading):
                m.d.sync += self.bad.eq(0)
        return m
