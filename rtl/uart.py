"""8N1 UART receiver and transmitter with ``lib.stream`` byte interfaces.

``divisor`` is the number of clock cycles per bit (clock frequency / baud rate, at least 4).
The receiver synchronises the pin, finds the start bit's falling edge, samples every bit in
its middle and checks the stop bit; a byte with a bad stop bit or one that arrives while the
previous byte is still waiting for ``ready`` is dropped and sets the sticky ``error``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "check_divisor"]


def check_divisor(divisor) -> int:
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"UART divisor (clock cycles per bit) must be an integer >= 4, "
                         f"not {divisor!r}")
    return divisor


class UartRx(wiring.Component):
    """rx : ``In(1)``, the pin (idle high).  o : ``Out(stream.Signature(8))``, received bytes.
    error : ``Out(1)``, sticky: a framing error or an overrun was seen."""

    def __init__(self, divisor: int):
        self.divisor = check_divisor(divisor)
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        pin = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, pin, init=1)
        timer = Signal(range(d + d // 2 + 1))
        bit = Signal(range(10))
        shreg = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~pin):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):                     # middle of the start bit
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(pin):                      # a glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], pin)), timer.eq(d - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(~pin):
                        m.d.sync += self.error.eq(1)   # framing error: byte dropped
                        m.next = "BREAK"
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.sync += self.error.eq(1)   # overrun: previous byte not taken
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"):                     # wait for the line to go idle again
                with m.If(pin):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """i : ``In(stream.Signature(8))``, bytes to send.  tx : ``Out(1)``, the pin (idle high)."""

    def __init__(self, divisor: int):
        self.divisor = check_divisor(divisor)
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        timer = Signal(range(d))
        bits = Signal(range(11))                       # bits still to send
        shreg = Signal(10, init=0x3FF)
        m.d.comb += [self.tx.eq(shreg[0]), self.i.ready.eq(bits == 0)]
        with m.If(bits == 0):
            with m.If(self.i.valid):
                m.d.sync += [shreg.eq(Cat(0, self.i.payload, 1)), bits.eq(10), timer.eq(d - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), bits.eq(bits - 1), timer.eq(d - 1)]
        return m
