"""The engine's activation memory: two ping-pong buffers and the input loader."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["ActivationMemory"]


class ActivationMemory(wiring.Component):
    """Two u8 activation buffers: layer ``i`` reads buffer ``i % 2`` and writes ``(i + 1) % 2``.

    The input image is written into buffer 0 from ``i_x`` while the engine is idle; ``loaded``
    pulses when its last value is taken.  Reads go to both buffers at one address; ``rd_buf``
    (given with the address's data, one cycle after the address) selects which one
    ``rd.data`` shows.

    Parameters
    ----------
    depth : int
        Words per buffer (the largest layer input or hidden output).
    in_size : int
        Values per input image.

    Members
    -------
    i_x : ``In(stream.Signature(8))``
        Input activations in ``[C, H, W]`` order; taken only while ``enable`` is high.
    enable : ``In(1)``
    loaded : ``Out(1)``
        The last input value was taken this cycle.
    wb : ``Out(WritePort.Signature(addr_width=ceil_log2(depth), shape=8))``
        Layer-output write port; ``wb_buf`` picks the buffer.  It wins over the loader.
    wb_buf : ``In(1)``
    rd : ``Out(ReadPort.Signature(addr_width=ceil_log2(depth), shape=8))``
        Read port of both buffers; ``rd_buf`` picks which one ``rd.data`` shows.
    rd_buf : ``In(1)``

    Raises
    ------
    ValueError
        If ``depth`` or ``in_size`` is not a positive integer, or ``in_size > depth``.
    """

    def __init__(self, *, depth: int, in_size: int):
        for name, v in (("depth", depth), ("in_size", in_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if in_size > depth:
            raise ValueError(f"in_size must be at most depth ({depth}), not {in_size}")
        self.depth, self.in_size = depth, in_size
        aw = ceil_log2(depth)
        super().__init__({
            "i_x": In(stream.Signature(8)),
            "enable": In(1),
            "loaded": Out(1),
            "wb": Out(WritePort.Signature(addr_width=aw, shape=8)),
            "wb_buf": In(1),
            "rd": Out(ReadPort.Signature(addr_width=aw, shape=8)),
            "rd_buf": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.act0 = act0 = Memory(shape=8, depth=self.depth, init=[])
        m.submodules.act1 = act1 = Memory(shape=8, depth=self.depth, init=[])
        w0, w1 = act0.write_port(), act1.write_port()
        r0, r1 = act0.read_port(), act1.read_port()

        in_addr = Signal(range(self.in_size + 1))
        m.d.comb += self.i_x.ready.eq(self.enable)
        with m.If(self.i_x.valid & self.enable):
            m.d.comb += [w0.addr.eq(in_addr), w0.data.eq(self.i_x.payload), w0.en.eq(1)]
            with m.If(in_addr == self.in_size - 1):
                m.d.sync += in_addr.eq(0)
                m.d.comb += self.loaded.eq(1)
            with m.Else():
                m.d.sync += in_addr.eq(in_addr + 1)

        wb = self.wb
        m.d.comb += [w1.addr.eq(wb.addr), w1.data.eq(wb.data), w1.en.eq(wb.en & self.wb_buf)]
        with m.If(wb.en & ~self.wb_buf):
            m.d.comb += [w0.addr.eq(wb.addr), w0.data.eq(wb.data), w0.en.eq(1)]

        for r in (r0, r1):
            m.d.comb += [r.addr.eq(self.rd.addr), r.en.eq(self.rd.en)]
        m.d.comb += self.rd.data.eq(Mux(self.rd_buf, r1.data, r0.data))
        return m
