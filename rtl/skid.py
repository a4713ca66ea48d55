"""A stream register slice that cuts the ``ready`` path (Fmax)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Passes a stream through with its source-side ``ready`` taken from a register, so the
    sink's ``ready`` reaches the source one cycle later instead of combinationally.

    While empty, the payload passes straight through (no latency).  When the sink does not
    take the word offered, the buffer keeps it and offers it first; its ``i.ready`` is low
    until the sink has taken it.  The words and their order are unchanged; with a source
    that always has its next word ready, the sink takes them in the same cycles as over a
    direct connection (the source itself runs at most one word ahead).

    Parameters
    ----------
    signature : ``stream.Signature``
        The stream's signature.

    Members
    -------
    i : ``In(signature)``
    o : ``Out(signature)``
    """

    def __init__(self, signature: stream.Signature):
        if not isinstance(signature, stream.Signature):
            raise TypeError(f"SkidBuffer needs a stream.Signature, not {signature!r}")
        super().__init__({"i": In(signature), "o": Out(signature)})

    def elaborate(self, platform):
        m = Module()
        full = Signal()
        kept = Signal.like(self.i.payload, name="kept")
        m.d.comb += [self.i.ready.eq(~full), self.o.valid.eq(full | self.i.valid)]
        with m.If(full):
            m.d.comb += self.o.payload.eq(kept)
            with m.If(self.o.ready):
                m.d.sync += full.eq(0)
        with m.Else():
            m.d.comb += self.o.payload.eq(self.i.payload)
            with m.If(self.i.valid & ~self.o.ready):
                m.d.sync += [kept.eq(self.i.payload), full.eq(1)]
        return m
