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
    Instance,
    Module,
    Signal,
)
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .hostlink import HostLink

__all__ = ["BOARDS", "BoardTop", "ice40_pll", "ecp5_pll", "board_platform"]

#: board -> platform class (module, name), FPGA family, device label, nextpnr/packer facts.
BOARDS = {
    "icebreaker": {"module": "icebreaker", "cls": "ICEBreakerPlatform", "family": "ice40",
                   "device": "iCE40UP5K-SG48", "osc_mhz": 12.0, "clock_mhz": 30.0,
                   "demo_lanes": 8, "demo_knobs": {"alphabet": "A2", "weight_bits": 4}},
    "ulx3s": {"module": "ulx3s", "cls": "ULX3S_85F_Platform", "family": "ecp5",
              "device": "LFE5U-85F-6BG381", "osc_mhz": 25.0, "clock_mhz": 75.0,
              "demo_lanes": 8, "demo_knobs": {}},
    "versa": {"module": "versa_ecp5", "cls": "VersaECP5Platform", "family": "ecp5",
              "device": "LFE5UM-45F-8BG381", "osc_mhz": 100.0, "clock_mhz": 75.0,
              "demo_lanes": 8, "demo_knobs": {}},
}

#: SPRAM on the UP5K: 4 blocks of 16 bits x 16K words.
SPRAM_BLOCKS, SPRAM_BITS, SPRAM_DEPTH = 4, 16, 16384


def board_platform(board: str):
    import importlib
    if board not in BOARDS:
        raise ValueError(f"Unknown board '{board}' (boards: {', '.join(BOARDS)})")
    b = BOARDS[board]
    return getattr(importlib.import_module(f"amaranth_boards.{b['module']}"), b["cls"])()


def ice40_pll(f_in: float, f_out: float) -> dict:
    """SB_PLL40 (SIMPLE feedback) divider settings closest to ``f_out`` MHz:
    f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ), PFD 10..133 MHz, VCO 533..1066 MHz."""
    best = None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                f = vco / 2 ** divq
                err = abs(f - f_out)
                if best is None or err < best[0] - 1e-9:
                    best = (err, divr, divf, divq, f, pfd, vco)
    if best is None:
        raise ValueError(f"no iCE40 PLL setting makes {f_out} MHz from {f_in} MHz")
    _, divr, divf, divq, f, pfd, vco = best
    filt = next(i for i, hi in enumerate((17, 26, 44, 66, 101, 1e9), 1) if pfd < hi)
    return {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filt, "mhz": f,
            "vco_mhz": vco}


def ecp5_pll(f_in: float, f_out: float) -> dict:
    """EHXPLLL (CLKOP feedback) settings closest to ``f_out`` MHz:
    f_out = f_in * CLKFB_DIV / CLKI_DIV, VCO = f_out * CLKOP_DIV in 400..800 MHz."""
    best = None
    for ki in range(1, 129):
        if f_in / ki < 3.125:
            break
        for fb in range(1, 81):
            f = f_in * fb / ki
            for op in range(1, 129):
                vco = f * op
                if 400 <= vco <= 800:
                    key = (abs(f - f_out), abs(vco - 600))
                    if best is None or key < best[0]:
                        best = (key, ki, fb, op, f, vco)
    if best is None:
        raise ValueError(f"no ECP5 PLL setting makes {f_out} MHz from {f_in} MHz")
    _, ki, fb, op, f, vco = best
    return {"CLKI_DIV": ki, "CLKFB_DIV": fb, "CLKOP_DIV": op, "CLKOP_CPHASE": max(0, op // 2 - 1),
            "mhz": f, "vco_mhz": vco}


def weight_ram_for(board: str, plan) -> str:
    """``huge`` (SPRAM) on the UP5K when the weight memory fits its four blocks, else ``block``."""
    if BOARDS[board]["family"] != "ice40":
        return "block"
    fits = (plan.weight_word_bits <= SPRAM_BLOCKS * SPRAM_BITS
            and len(plan.weight_words) <= SPRAM_DEPTH)
    return "huge" if fits else "block"


class BoardTop(Elaboratable):
    """The host link with its clock, reset, UART pins and LEDs on ``board``.

    ``clock_mhz``: the engine clock; ``None`` picks the board's default (``BOARDS``), the
    oscillator frequency uses no PLL.  ``baud``: the UART rate."""

    def __init__(self, plan, board: str, clock_mhz: float | None = None, baud: int = 115200):
        if board not in BOARDS:
            raise ValueError(f"Unknown board '{board}' (boards: {', '.join(BOARDS)})")
        b = BOARDS[board]
        self.board, self.plan = board, plan
        want = b["clock_mhz"] if clock_mhz is None else float(clock_mhz)
        if not 1 <= want <= 400:
            raise ValueError(f"clock must be 1..400 MHz, not {want}")
        self.pll = None
        if abs(want - b["osc_mhz"]) > 1e-6:
            self.pll = (ice40_pll if b["family"] == "ice40" else ecp5_pll)(b["osc_mhz"], want)
        self.clock_mhz = self.pll["mhz"] if self.pll else b["osc_mhz"]
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
        # The iCE40 PLL takes the clock straight from its pad (SB_PLL40_PAD): raw pin then.
        raw = self.pll is not None and b["family"] == "ice40"
        clk_pin = platform.request(platform.default_clk, 0, dir="-")
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
            p = self.pll
            if b["family"] == "ice40":
                m.submodules.pll = Instance(
                    "SB_PLL40_PAD",
                    p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"],
                    p_DIVQ=p["DIVQ"], p_FILTER_RANGE=p["FILTER_RANGE"],
                    i_PACKAGEPIN=clk_pin.io, i_RESETB=1, i_BYPASS=0,
                    o_PLLOUTGLOBAL=pll_clk, o_LOCK=locked)
            else:
                m.submodules.pll = Instance(
                    "EHXPLLL",
                    a_FREQUENCY_PIN_CLKI=str(b["osc_mhz"]), a_FREQUENCY_PIN_CLKOP=f"{p['mhz']:.3f}",
                    a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                    a_MFG_GMCREF_SEL="2",
                    p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                    p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                    p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
                    p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                    p_CLKFB_DIV=p["CLKFB_DIV"],
                    i_RST=0, i_STDBY=0, i_CLKI=clk_in.i, o_CLKOP=pll_clk,
                    i_CLKFB=pll_clk, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0,
                    i_PHASESTEP=0, i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0,
                    o_LOCK=locked)
        m.submodules.rst = ResetSynchronizer(~locked, domain="sync")

        m.submodules.link = link = HostLink(self.plan, self.divisor,
                                            {"weight_ram": self.weight_ram})
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.rx_buf = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx = io.Buffer("o", uart.tx)
        m.d.comb += [link.rx.eq(rx.i), tx.o.eq(link.tx)]
        outs = [(platform.request("led", i, dir="-"), v)
                for i, v in enumerate((link.busy, link.err | link.uart_err))]
        if self.board == "ulx3s":                       # the FTDI TX line is shared with the ESP32
            outs.append((platform.request("uart_tx_enable", 0, dir="-"), 1))
        for i, (pin, value) in enumerate(outs):
            m.submodules[f"out_buf{i}"] = buf = io.Buffer("o", pin)
            m.d.comb += buf.o.eq(value)
        return m
