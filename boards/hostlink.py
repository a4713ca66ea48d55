"""The layer engine behind a UART command interpreter (the protocol of :mod:`.protocol`).

:class:`HostLink` has only pins (``rx``, ``tx``) and status outputs, so the same component is
the core of every board top and the device under test of the board-level cocotb test.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..rtl.engine import Engine
from ..rtl.uart import UartRx, UartTx
from . import protocol as P

__all__ = ["HostLink"]


def _const_bytes(data: bytes):
    return Const(int.from_bytes(data, "little"), 8 * len(data))


class HostLink(wiring.Component):
    """rx : ``In(1)``, tx : ``Out(1)``: the UART pins.  busy, err : ``Out(1)``: engine status
    (for LEDs).  ``divisor``: clock cycles per UART bit."""

    def __init__(self, plan, divisor: int, engine_kwargs: dict | None = None):
        self._plan = plan
        self.engine = Engine(plan, **{"counter_bits": 32, **(engine_kwargs or {})})
        if self.engine.load_addr_bits > 16:
            raise ValueError(f"memory of {1 << self.engine.load_addr_bits} words is larger "
                             f"than the host protocol's 16-bit address")
        self.divisor = divisor
        self.ident = P.ident(plan)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1),
                          "err": Out(1), "uart_err": Out(1)})

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        m.submodules.engine = eng = self.engine
        m.submodules.urx = urx = UartRx(self.divisor)
        m.submodules.utx = utx = UartTx(self.divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), self.busy.eq(eng.busy),
                     self.err.eq(eng.err), self.uart_err.eq(urx.error)]
        rx, tx = urx.o, utx.i

        ly0 = plan.layers[0]
        n_in = ly0.cin * ly0.h * ly0.w
        lb = (eng.load_data_bits + 7) // 8
        arg_bytes = 3 + lb                               # mem, addr(2), data

        # Answers sent byte by byte from one word (selected by `resp`), `count` bytes long.
        status = Cat(eng.busy, eng.err, urx.error, Const(0, 5))
        counters = Cat(*(Cat(getattr(eng, n), Const(0, 8 * P.COUNTER_BYTES))[:8 * P.COUNTER_BYTES]
                         for n in P.COUNTERS))
        answers = {
            "I": _const_bytes(self.ident),
            "C": Cat(Const(ord("C"), 8), counters, status),
            "K": Const(ord("K"), 8), "E": Const(ord("E"), 8), "?": Const(ord("?"), 8),
            "Y": Const(ord("Y"), 8),
        }
        sizes = {"I": P.IDENT_BYTES, "C": P.STATUS_BYTES}
        kinds = list(answers)
        resp = Signal(range(len(kinds)))
        count = Signal(range(max(P.STATUS_BYTES, P.IDENT_BYTES, arg_bytes, 4) + 1))
        idx = Signal.like(count)
        resp_byte = Signal(8)
        with m.Switch(resp):
            for i, k in enumerate(kinds):
                with m.Case(i):
                    w = answers[k]
                    m.d.comb += resp_byte.eq(w.word_select(idx, 8) if len(w) > 8 else w)

        def answer(kind, then="SEND"):
            m.d.sync += [resp.eq(kinds.index(kind)), idx.eq(0), count.eq(sizes.get(kind, 1))]
            m.next = then

        args = Signal(8 * arg_bytes)
        xin = Signal(range(n_in + 1))
        yval = Signal(32)
        ylast = Signal()
        after_send = Signal()                             # 0: back to IDLE, 1: next output

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    with m.Switch(rx.payload):
                        with m.Case(ord("I")):
                            answer("I")
                        with m.Case(ord("C")):
                            answer("C")
                        with m.Case(ord("L")):
                            m.d.sync += idx.eq(0)
                            m.next = "LOAD_ARGS"
                        with m.Case(ord("X")):
                            m.d.sync += xin.eq(0)
                            m.next = "X_DATA"
                        with m.Default():
                            answer("?")
            with m.State("LOAD_ARGS"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += [args.eq(Cat(args[8:], rx.payload)), idx.eq(idx + 1)]
                    with m.If(idx == arg_bytes - 1):
                        m.next = "LOAD"
            with m.State("LOAD"):
                ld = eng.i_load
                m.d.comb += [ld.payload.mem.eq(args[:2]), ld.payload.addr.eq(args[8:24]),
                             ld.payload.data.eq(args[24:]), ld.valid.eq(1)]
                with m.If(ld.ready):
                    answer("K")
                with m.Else():
                    answer("E")
            with m.State("X_DATA"):                       # bytes go straight to the engine
                m.d.comb += [eng.i_x.payload.eq(rx.payload), eng.i_x.valid.eq(rx.valid),
                             rx.ready.eq(eng.i_x.ready)]
                with m.If(rx.valid & eng.i_x.ready):
                    m.d.sync += xin.eq(xin + 1)
                    with m.If(xin == n_in - 1):
                        m.d.sync += after_send.eq(1)
                        answer("Y")
            with m.State("Y_WAIT"):
                m.d.comb += eng.o_y.ready.eq(1)
                with m.If(eng.o_y.valid):
                    m.d.sync += [yval.eq(eng.o_y.payload.value), ylast.eq(eng.o_y.payload.last),
                                 idx.eq(0)]
                    m.next = "Y_SEND"
            with m.State("Y_SEND"):
                m.d.comb += [tx.payload.eq(yval.word_select(idx[:2], 8)), tx.valid.eq(1)]
                with m.If(tx.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 3):
                        with m.If(ylast):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "Y_WAIT"
            with m.State("SEND"):
                m.d.comb += [tx.payload.eq(resp_byte), tx.valid.eq(1)]
                with m.If(tx.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == count - 1):
                        with m.If(after_send):
                            m.d.sync += after_send.eq(0)
                            m.next = "Y_WAIT"
                        with m.Else():
                            m.next = "IDLE"
        return m
