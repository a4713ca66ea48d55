"""The engine's activation memory: every live tensor at its own base address, and the input
loader."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["ActivationMemory"]


class ActivationMemory(wiring.Component):
    """One 8-bit memory holding the network's live tensors (``gen.buffers`` places them).

    The input image is written from ``i_x`` at ``in_base`` while the engine is idle;
    ``loaded`` pulses when its last value is taken.  Layers read through ``rd`` (the
    controller) and ``rr`` (the post-processor's residual) and write through ``wb``, which
    wins over the loader.

    Parameters
    ----------
    depth : int
        Words of the memory (the peak of the live tensors).
    in_size : int
        Values per input image.
    in_base : int
        Address of the input image.
    residual : bool
        Build the residual read port ``rr``.

    Members
    -------
    i_x : ``In(stream.Signature(8))``
        Input activations in ``[C, H, W]`` order; taken only while ``enable`` is high.
    enable : ``In(1)``
    loaded : ``Out(1)``
        The last input value was taken this cycle.
    wb : ``Out(WritePort.Signature(addr_width=ceil_log2(depth), shape=8))``
        Layer-output write port.
    rd : ``Out(ReadPort.Signature(addr_width=ceil_log2(depth), shape=8))``
        Layer-input read port.
    rr : ``Out(ReadPort.Signature(addr_width=ceil_log2(depth), shape=8))``
        Residual read port (only with ``residual``).

    Raises
    ------
    ValueError
        If ``depth`` or ``in_size`` is not a positive integer, ``in_base`` is negative, or the
        input does not fit (``in_base + in_size > depth``).
    """

    def __init__(self, *, depth: int, in_size: int, in_base: int = 0, residual: bool = False):
        for name, v in (("depth", depth), ("in_size", in_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if not isinstance(in_base, int) or in_base < 0:
            raise ValueError(f"in_base must be a non-negative integer, not {in_base!r}")
        if in_base + in_size > depth:
            raise ValueError(f"the input ({in_size} values at {in_base}) must fit depth "
                             f"({depth})")
        self.depth, self.in_size, self.in_base = depth, in_size, in_base
        aw = max(1, ceil_log2(depth))
        members = {
            "i_x": In(stream.Signature(8)),
            "enable": In(1),
            "loaded": Out(1),
            "wb": Out(WritePort.Signature(addr_width=aw, shape=8)),
            "rd": Out(ReadPort.Signature(addr_width=aw, shape=8)),
        }
        if residual:
            members["rr"] = Out(ReadPort.Signature(addr_width=aw, shape=8))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.act = act = Memory(shape=8, depth=max(2, self.depth), init=[])
        wr = act.write_port()
        in_addr = Signal(range(self.in_base + self.in_size + 1), init=self.in_base)
        m.d.comb += self.i_x.ready.eq(self.enable)
        with m.If(self.i_x.valid & self.enable):
            m.d.comb += [wr.addr.eq(in_addr), wr.data.eq(self.i_x.payload), wr.en.eq(1)]
            with m.If(in_addr == self.in_base + self.in_size - 1):
                m.d.sync += in_addr.eq(self.in_base)
                m.d.comb += self.loaded.eq(1)
            with m.Else():
                m.d.sync += in_addr.eq(in_addr + 1)
        with m.If(self.wb.en):
            m.d.comb += [wr.addr.eq(self.wb.addr), wr.data.eq(self.wb.data), wr.en.eq(1)]
        wiring.connect(m, wiring.flipped(self.rd), act.read_port())
        if "rr" in self.signature.members:
            wiring.connect(m, wiring.flipped(self.rr), act.read_port())
        return m
