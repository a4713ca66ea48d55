"""A SPI / quad-SPI NOR flash reader (W25Q128-style read commands) with a byte stream out.

One command on ``i_cmd`` (``addr``, ``count``) reads ``count`` bytes from ``addr``: chip select
low, the read command and the 24-bit address on DQ0 (MSB first), 8 dummy clocks, then the
data, MSB first, while chip select stays low:

* ``quad=False``: Fast Read ``0x0B``, data on DQ1 (MISO), one bit per SCK clock;
* ``quad=True``: Fast Read Quad Output ``0x6B``, data on DQ3..DQ0, four bits per SCK clock
  (the flash's QE bit must be set, as it is on the iCEBreaker's and ULX3S's flash for
  quad boot).

SPI mode 0: SCK idles low, the reader changes DQ0 while SCK is low and samples the flash's
output when SCK rises.  One SCK period is ``2 * divider`` clock cycles, so the link delivers
``4 / (2 * divider)`` (quad) or ``1 / (2 * divider)`` bits per cycle.  When ``o_data`` is
not taken, SCK stops low (the flash waits) until it is: no byte is ever dropped.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FlashReader", "READ", "READ_QUAD", "DUMMY_CLOCKS", "ADDR_BITS"]

READ, READ_QUAD = 0x0B, 0x6B
DUMMY_CLOCKS = 8
ADDR_BITS = 24


def command_layout() -> data.StructLayout:
    """One read: the first byte's address and the number of bytes (1 .. 2**24 - 1)."""
    return data.StructLayout({"addr": ADDR_BITS, "count": ADDR_BITS})


class FlashReader(wiring.Component):
    """Reads byte runs from a SPI NOR flash (see the module docstring).

    Parameters
    ----------
    quad : bool
        Quad-output reads (``0x6B``) instead of single-bit fast reads (``0x0B``).
    divider : int
        Clock cycles per half SCK period (1..255).
    fixed : ``(addr, count)`` or None
        Every read is this one (the engine's weight stream): ``i_cmd.payload`` is ignored and
        the command, address and byte count are constants (a smaller reader).

    Members
    -------
    i_cmd : ``In(stream.Signature(command_layout()))``
        Taken only while idle; ``count == 0`` is taken and ignored.
    o_data : ``Out(stream.Signature(8))``
        The bytes read, in address order.
    busy : ``Out(1)``
        A read is in progress (chip select low).
    sck, cs_n : ``Out(1)``
        Flash clock and chip select (active low).
    dq_o, dq_oe : ``Out(4)``
        Data pins driven by the reader, and their output enables (DQ0 during command and
        address; never DQ1..DQ3).
    dq_i : ``In(4)``
        Data pins as read.

    Raises
    ------
    ValueError
        If ``quad`` is not a bool, ``divider`` is not an integer in 1..255 or ``fixed`` is
        not an address and a positive count inside the 24-bit address space.
    """

    def __init__(self, *, quad: bool = True, divider: int = 1, fixed=None):
        self.check(quad=quad, divider=divider, fixed=fixed)
        self.quad, self.divider, self.fixed = quad, divider, fixed
        super().__init__({
            "i_cmd": In(stream.Signature(command_layout())),
            "o_data": Out(stream.Signature(8)),
            "busy": Out(1),
            "sck": Out(1), "cs_n": Out(1, init=1),
            "dq_o": Out(4), "dq_oe": Out(4), "dq_i": In(4),
        })

    @staticmethod
    def check(*, quad: bool = True, divider: int = 1, fixed=None) -> None:
        """The parameter checks of the constructor (``ValueError``), without building one."""
        if not isinstance(quad, bool):
            raise ValueError(f"quad must be a bool, not {quad!r}")
        if not isinstance(divider, int) or isinstance(divider, bool) or not 1 <= divider <= 255:
            raise ValueError(f"Flash clock divider must be an integer in 1..255, not {divider!r}")
        if fixed is not None:
            addr, count = fixed
            if not (0 <= addr and 1 <= count and addr + count <= 1 << ADDR_BITS):
                raise ValueError(f"Fixed flash read must be an address and a positive count "
                                 f"inside 24 bits, not {fixed!r}")

    @property
    def bits_per_cycle(self) -> float:
        """Data bits delivered per clock cycle while streaming."""
        return (4 if self.quad else 1) / (2 * self.divider)

    def elaborate(self, platform):
        m = Module()
        d = self.divider
        per_clock = 4 if self.quad else 1
        t = Signal(range(2 * d))              # position in the SCK period: low half, high half
        high = t == d                         # SCK's first high cycle: sample DQ here
        end = t == 2 * d - 1                  # SCK falls after this cycle
        n = Signal(range(33))                 # SCK clocks left in this phase
        opcode = READ_QUAD if self.quad else READ
        if self.fixed is None:
            out = Signal(32)                  # command + address, MSB first on DQ0
            out_bit = out[31]
            left = Signal(ADDR_BITS)          # bytes still to read
        else:                                 # the one command, bit n - 1 of it on DQ0
            out = None
            word = Const(opcode << ADDR_BITS | self.fixed[0], 32)
            out_bit = (word >> (n - 1)[:5])[0]
            left = Signal(range(self.fixed[1] + 1))
        byte = Signal(8)
        got = Signal(range(9))                # bits of `byte` received
        full = Signal()                       # `byte` is complete, waiting for o_data

        o = self.o_data
        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        # a complete byte moves to the output as soon as it is free
        leaving = Signal()
        m.d.comb += leaving.eq(full & (~o.valid | o.ready))
        with m.If(leaving):
            m.d.sync += [o.payload.eq(byte), o.valid.eq(1), full.eq(0)]

        # The pins are registers (no glitches on chip select or the clock): they show the
        # values of the cycle before, so SCK rises at the end of the `high` cycle, when DQ
        # is sampled, and falls at the end of the `end` cycle, when DQ0 shifts.
        sck, cs, send = Signal(), Signal(), Signal()
        m.d.sync += [self.sck.eq(sck), self.cs_n.eq(~cs), self.dq_o.eq(out_bit & send),
                     self.dq_oe.eq(send), self.busy.eq(cs)]
        m.d.comb += sck.eq(cs & (t >= d))
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i_cmd.ready.eq(1)
                if self.fixed is None:
                    with m.If(self.i_cmd.valid & (self.i_cmd.payload.count != 0)):
                        m.d.sync += [out.eq(Cat(self.i_cmd.payload.addr, Const(opcode, 8))),
                                     left.eq(self.i_cmd.payload.count), n.eq(32), t.eq(0)]
                        m.next = "SEND"
                else:
                    with m.If(self.i_cmd.valid):
                        m.d.sync += [left.eq(self.fixed[1]), n.eq(32), t.eq(0)]
                        m.next = "SEND"
            with m.State("SEND"):             # command and address on DQ0
                m.d.comb += [cs.eq(1), send.eq(1)]
                m.d.sync += t.eq(t + 1)
                with m.If(end):
                    m.d.sync += [t.eq(0), n.eq(n - 1)]
                    if out is not None:
                        m.d.sync += out.eq(out << 1)
                    with m.If(n == 1):
                        m.d.sync += n.eq(DUMMY_CLOCKS)
                        m.next = "DUMMY"
            with m.State("DUMMY"):
                m.d.comb += cs.eq(1)
                m.d.sync += t.eq(t + 1)
                with m.If(end):
                    m.d.sync += [t.eq(0), n.eq(n - 1), got.eq(0)]
                    with m.If(n == 1):
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += cs.eq(1)
                last = Signal()               # this SCK period completes the last byte
                # A new SCK period starts only when the previous byte leaves `byte` (its
                # bits are overwritten at the earliest one cycle later).
                with m.If((t != 0) | ~full | leaving):
                    m.d.sync += t.eq(t + 1)
                    with m.If(high):
                        sample = self.dq_i[:4] if self.quad else self.dq_i[1]
                        m.d.sync += [byte.eq(Cat(sample, byte)[:8]), got.eq(got + per_clock)]
                        with m.If(got + per_clock == 8):
                            m.d.sync += [full.eq(1), got.eq(0), left.eq(left - 1)]
                            m.d.comb += last.eq(left == 1)
                    with m.If(end):
                        m.d.sync += t.eq(0)
                        with m.If((left == 0) | last):
                            m.next = "GAP"
            with m.State("GAP"):              # chip select high for a while between reads
                m.d.sync += t.eq(t + 1)
                with m.If(end):
                    m.d.sync += t.eq(0)
                    m.next = "IDLE"
        return m
