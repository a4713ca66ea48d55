"""Stream register slices for Fmax: the skid buffer cuts the ``ready`` path, the register
slice the payload path."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer", "RegisterSlice"]


class _Slice(wiring.Component):
    """A stream in (``i``) and the same stream out (``o``) of one ``stream.Signature``."""

    def __init__(self, signature: stream.Signature):
        if not isinstance(signature, stream.Signature):
            raise TypeError(f"{type(self).__name__} needs a stream.Signature, not {signature!r}")
        super().__init__({"i": In(signature), "o": Out(signature)})


class SkidBuffer(_Slice):
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


class RegisterSlice(_Slice):
    """Passes a stream through one register: ``o``'s valid and payload are flip-flops, so
    the source's payload logic ends at them instead of running on into the sink's.

    A word moves in whenever the register is empty or the sink takes its word
    (``i.ready = o.ready | ~o.valid``: the sink's ``ready`` still reaches the source
    combinationally).  The words and their order are unchanged; each arrives one cycle later,
    and a source that always has its next word ready keeps the sink fed every cycle.

    Parameters and members as :class:`SkidBuffer`.
    """

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(self.o.ready | ~self.o.valid)
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
        return m
