"""Board tops: the layer engine behind the UART host link, on amaranth-boards platforms.

Boards (``BOARDS``): ``icebreaker`` (iCE40 UP5K), ``ulx3s`` (ECP5-85F) and ``versa`` (Lattice
ECP5 Versa, ECP5-45F).  The top drives its ``sync`` domain from the board oscillator, through
the PLL when a clock other than the oscillator's is asked for; reset is held until the PLL
locks.  On the UP5K the weight memory (the code / coefficient stream) goes to SPRAM when its
word fits the four 16-bit SPRAM blocks; bases, tile buffers and activations stay in EBR.
LED 0 shows ``busy``, LED 1 an engine or UART error.
"""

from __future__ import annotations

from amaranth.hdl import (
    ClockDomain,
    ClockSignal,
    Elaboratable,
    Module,
    Signal,
)
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .fpga import BOARDS, get_board
from .hostlink import HostLink

__all__ = ["BOARDS", "BoardTop", "board_platform", "weight_ram_for"]

#: SPRAM on the UP5K: 4 blocks of 16 bits x 16K words.
SPRAM_BLOCKS, SPRAM_BITS, SPRAM_DEPTH = 4, 16, 16384


def board_platform(board: str):
    """The amaranth-boards platform of ``board`` (``ValueError`` for an unknown board)."""
    return get_board(board).platform()


def weight_ram_for(board: str, plan) -> str:
    """``huge`` (SPRAM) on the UP5K when the weight memory fits its four blocks, else ``block``."""
    if not get_board(board).device.capacity.get("sprams"):
        return "block"
    fits = (plan.weight_word_bits <= SPRAM_BLOCKS * SPRAM_BITS
            and len(plan.weight_words) <= SPRAM_DEPTH)
    return "huge" if fits else "block"


class BoardTop(Elaboratable):
    """The host link with its clock, reset, UART pins and LEDs on ``board``.

    ``clock_mhz``: the engine clock; ``None`` picks the board's default (``BOARDS``), the
    oscillator frequency uses no PLL.  ``baud``: the UART rate."""

    def __init__(self, plan, board: str, clock_mhz: float | None = None, baud: int = 115200):
        b = get_board(board)
        self.board, self.plan = board, plan
        want = b.clock_mhz if clock_mhz is None else float(clock_mhz)
        if not 1 <= want <= 400:
            raise ValueError(f"clock must be 1..400 MHz, not {want}")
        self.pll = None
        if abs(want - b.osc_mhz) > 1e-6:
            self.pll = b.family.pll(b.osc_mhz, want)
        self.clock_mhz = self.pll["mhz"] if self.pll else b.osc_mhz
        self.baud = baud
        self.divisor = round(self.clock_mhz * 1e6 / baud)
        if self.divisor < 4 or abs(self.clock_mhz * 1e6 / self.divisor / baud - 1) > 0.02:
            raise ValueError(f"baud rate {baud} is not reachable from a {self.clock_mhz:.3f} MHz "
                             f"clock within 2%")
        self.weight_ram = weight_ram_for(board, plan)

    def elaborate(self, platform):
        m = Module()
        b = BOARDS[self.board]
        m.domains.sync = ClockDomain("sync")
        # A PLL that takes its clock straight from the pad (iCE40 SB_PLL40_PAD): raw pin then.
        raw = self.pll is not None and b.family.pll_from_pad
        clk_pin = platform.request(platform.default_clk, 0, dir="-")
        clk_in = None
        if not raw:
            m.submodules.clk_buf = clk_in = io.Buffer("i", clk_pin)
        if self.pll is None:
            m.d.comb += ClockSignal("sync").eq(clk_in.i)
            locked = Signal(init=1)
        else:
            locked = Signal()
            pll_clk = Signal()
            platform.add_clock_constraint(pll_clk, self.clock_mhz * 1e6)
            m.d.comb += ClockSignal("sync").eq(pll_clk)
            m.submodules.pll = b.family.pll_instance(self.pll, f_in=b.osc_mhz, clk_pad=clk_pin,
                                                     clk_in=clk_in, clk_out=pll_clk,
                                                     locked=locked)
        m.submodules.rst = ResetSynchronizer(~locked, domain="sync")

        m.submodules.link = link = HostLink(self.plan, self.divisor,
                                            {"weight_ram": self.weight_ram})
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.rx_buf = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx = io.Buffer("o", uart.tx)
        m.d.comb += [link.rx.eq(rx.i), tx.o.eq(link.tx)]
        outs = [(platform.request("led", i, dir="-"), v)
                for i, v in enumerate((link.busy, link.err | link.uart_err))]
        outs += [(platform.request(name, number, dir="-"), 1) for name, number in b.enables]
        for i, (pin, value) in enumerate(outs):
            m.submodules[f"out_buf{i}"] = buf = io.Buffer("o", pin)
            m.d.comb += buf.o.eq(value)
        return m
