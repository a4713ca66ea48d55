"""A weight port of limited bandwidth: the engine's weight memories as seen through a link
that delivers ``bits`` bits per cycle (an SPI / QSPI flash, a narrow bus).

The port is a credit counter: each cycle ``bits`` bits arrive into a buffer of ``capacity``
bits (one word of each memory: the most the fill takes in a cycle); the tile fill may advance
in a cycle only when the buffer holds the bits it reads in that cycle (``want``).  The engine
runs the fill under a clock enable (``go``), so a starved fill simply waits: its results are
those of the unthrottled fill, later.  The cycle model (``gen.cycles``) predicts the same.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["WeightPort"]


class WeightPort(wiring.Component):
    """Credit counter of a ``bits``-per-cycle weight link.

    Parameters
    ----------
    bits : int
        Bits the link delivers per cycle (positive).
    capacity : int
        Bits the buffer holds (at least ``bits`` and at least the largest ``want``).

    Members
    -------
    want : ``In(16)``
        Bits the fill reads if it advances this cycle (0 when it reads nothing).
    go : ``Out(1)``
        The fill may advance: ``want == 0`` or the buffer holds ``want`` bits.
    level : ``Out(range(capacity + 1))``
        Bits in the buffer.

    Raises
    ------
    ValueError
        If ``bits`` is not a positive integer or ``capacity`` is smaller than ``bits``.
    """

    def __init__(self, *, bits: int, capacity: int):
        if not isinstance(bits, int) or isinstance(bits, bool) or bits < 1:
            raise ValueError(f"Weight-port bits per cycle must be a positive integer, not {bits!r}")
        if not isinstance(capacity, int) or capacity < bits:
            raise ValueError(f"Weight-port capacity must be at least its {bits} bits per cycle, "
                             f"not {capacity!r}")
        self.bits, self.capacity = bits, capacity
        super().__init__({"want": In(16), "go": Out(1), "level": Out(range(capacity + 1))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.go.eq((self.want == 0) | (self.level >= self.want))
        after = Signal(range(self.capacity + self.bits + 1))
        m.d.comb += after.eq(self.level - Mux(self.go, self.want, 0) + self.bits)
        m.d.sync += self.level.eq(Mux(after > self.capacity, self.capacity, after))
        return m
