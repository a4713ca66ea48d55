"""Board tops: the layer engine behind the UART host link, on amaranth-boards platforms.

Boards (``BOARDS``): ``icebreaker`` (iCE40 UP5K), ``ulx3s`` (ECP5-85F) and ``versa`` (Lattice
ECP5 Versa, ECP5-45F).  The top drives its ``sync`` domain from the board oscillator, through
the PLL when a clock other than the oscillator's is asked for; reset is held until the PLL
locks.  On the UP5K the weight memory (the code / coefficient stream) goes to SPRAM when its
word fits the four 16-bit SPRAM blocks; bases, tile buffers and activations stay in EBR.
LED 0 shows ``busy``, LED 1 an engine or UART error.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.build import Attrs, Pins, PinsN, Resource, Subsignal
from amaranth.hdl import (
    Cat,
    ClockDomain,
    ClockSignal,
    Const,
    Elaboratable,
    Instance,
    Module,
    Signal,
)
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from ..gen import schemes
from ..gen.buffers import banks_used, memory_words
from ..gen.flashimage import parse_flash, stream_bits
from ..gen.memmap import POST_BITS
from . import protocol as P
from .fpga import BOARDS, get_board
from .hostlink import HostLink

__all__ = ["BOARDS", "BoardTop", "Placement", "board_platform", "place_memories",
           "spram_memories", "check_flash"]

#: SPRAM on the UP5K: 4 blocks of 16 bits x 16K words.
SPRAM_BLOCKS, SPRAM_BITS, SPRAM_DEPTH = 4, 16, 16384


def board_platform(board: str):
    """The amaranth-boards platform of ``board`` (``ValueError`` for an unknown board)."""
    return get_board(board).platform()


@dataclass(frozen=True)
class Placement:
    """Where a plan's memories go on a board.

    ``plan``: the plan as the board builds it (activations in banks when they are in SPRAM);
    ``weight_ram``: ``"block"`` (block RAM, initialised by the bitstream), ``"huge"`` (SPRAM,
    loaded by the host) or ``"flash"`` (the board's SPI flash, ``Plan.weight_flash``);
    ``act_ram``: ``"block"`` or ``"huge"`` (SPRAM banks of 16K bytes, one tensor per bank);
    ``issue``: what sits on the engine's issue path (``Engine(issue=...)``, the family's
    choice)."""
    plan: object
    weight_ram: str
    act_ram: str
    block_bytes: int               # what the plan's memories need of the block RAM
    sprams: int                    # SPRAM blocks used
    issue: str = "skid"

    @property
    def engine_kwargs(self) -> dict:
        """The engine's options as the board builds it (weights in the flash: no weight RAM)."""
        return {"weight_ram": "block" if self.weight_ram == "flash" else self.weight_ram,
                "issue": self.issue}

    def describe(self) -> str:
        w = {"block": "block RAM", "huge": "SPRAM (host-loaded)", "flash": "SPI flash"}
        a = {"block": "block RAM", "huge": f"SPRAM ({self.sprams_act} banks)"}
        return f"weights in {w[self.weight_ram]}, activations in {a[self.act_ram]}"

    @property
    def sprams_act(self) -> int:
        return banks_used(self.plan.layers, self.plan.input_shape, SPRAM_DEPTH) \
            if self.act_ram == "huge" else 0


def _weight_sprams(plan) -> int:
    """SPRAM blocks of the weight memory, 0 when it does not map to SPRAM."""
    if plan.weight_word_bits > SPRAM_BLOCKS * SPRAM_BITS or len(plan.weight_words) > SPRAM_DEPTH:
        return 0
    return -(-plan.weight_word_bits // SPRAM_BITS)


def place_memories(board: str, plan) -> Placement:
    """The first of these that fits the board: activations in block RAM with the weights in
    SPRAM (the host loads them) or block RAM, then activations in SPRAM banks with the weights
    in block RAM or SPRAM; a flash plan keeps its weights in the flash (:func:`check_flash`).
    ``ValueError`` (one line, each memory's need against what the device has) when none
    fits."""
    check_flash(board, plan)
    dev = get_board(board).device
    have_block = dev.capacity["brams"] * dev.family.bram_bits // 8
    have_spram = dev.capacity.get("sprams") or 0
    act = memory_words(plan.layers, plan.input_shape, plan.cpar) * plan.cpar       # bytes
    fixed = (plan.tile_buffer_bits + len(plan.post_words) * POST_BITS
             + len(plan.aux_words) * plan.aux_word_bits
             + len(plan.coef_words) * plan.coef_word_bits
             + schemes.get(plan.scheme).fill_cache_bits(plan)) // 8
    weights = len(plan.weight_words) * plan.weight_word_bits // 8
    wsp = _weight_sprams(plan)
    # (SPRAM banks hold one channel per word: not with several channels per cycle)
    banked = plan.banked(SPRAM_DEPTH) if have_spram and plan.cpar == 1 else None
    banks = banks_used(banked.layers, banked.input_shape, SPRAM_DEPTH) if banked else 0
    if plan.weight_flash:
        options = [("flash", "block"), ("flash", "huge")]
    else:
        options = [("huge", "block"), ("block", "block"), ("block", "huge"), ("huge", "huge")]
    for wram, aram in options:
        if aram == "huge" and not banked or wram == "huge" and not (have_spram and wsp):
            continue
        block = fixed + (act if aram == "block" else 0) + (weights if wram == "block" else 0)
        sprams = (banks if aram == "huge" else 0) + (wsp if wram == "huge" else 0)
        if block <= have_block and sprams <= have_spram:
            return Placement(banked if aram == "huge" else plan, wram, aram, block, sprams,
                             dev.family.issue)
    need = [f"activations {act} bytes", f"tile buffers, fill caches and post/aux/coefficient images "
            f"{fixed} bytes", f"weight memory {'in flash' if plan.weight_flash else f'{weights} bytes'}"]
    spram = (f", SPRAM {have_spram} x {SPRAM_DEPTH * SPRAM_BITS // 8} bytes (activations "
             + (f"take {banks} as banks of {SPRAM_DEPTH} bytes" if banked else
                f"go to SPRAM banks with cpar 1 only, not {plan.cpar}")
             + (f", the weight memory {wsp}" if wsp and not plan.weight_flash else "") + ")"
             if have_spram else "")
    hint = "" if plan.weight_flash else "; stream the weights from the flash (--weight-flash qspi)"
    raise ValueError(f"{plan.scheme} {'x'.join(map(str, plan.input_shape))} model does not fit "
                     f"{board} ({dev.part}): needs {', '.join(need)}; has block RAM "
                     f"{have_block} bytes{spram}{hint}")


def check_flash(board: str, plan) -> None:
    """``ValueError`` when ``plan`` streams its weights from a flash that ``board`` does not
    have, or that the stream does not fit after the bitstream."""
    if not plan.weight_flash:
        return
    fl = get_board(board).flash
    if fl is None:
        raise ValueError(f"board {board} has no SPI flash the weights can stream from")
    size = stream_bits(plan) // 8
    if fl.offset + size > fl.size:
        raise ValueError(f"the weight stream ({size} bytes at offset 0x{fl.offset:x}) does not "
                         f"fit the {fl.size >> 20} MB flash of {board}")


def spram_memories(top) -> list[str]:
    """Names of the memories of ``top`` that go to SPRAM (synthesis drops their initial
    contents: SPRAM has none)."""
    names = ["wmem"] if top.weight_ram == "huge" else []
    if top.placement.act_ram == "huge":
        names += [f"bank{k}" for k in range(top.placement.sprams_act)]
    return names


class BoardTop(Elaboratable):
    """The host link with its clock, reset, UART pins and LEDs on ``board``.

    ``clock_mhz``: the engine clock; ``None`` picks the board's default (``BOARDS``), the
    oscillator frequency uses no PLL.  ``baud``: the UART rate.  ``frame_timeout``: bit times
    of silence after which the link drops a half-received frame."""

    def __init__(self, plan, board: str, clock_mhz: float | None = None, baud: int = 115200,
                 frame_timeout: int = P.TIMEOUT_BITS):
        b = get_board(board)
        P.check_frame_timeout(frame_timeout)
        self.frame_timeout = frame_timeout
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
        self.placement = place_memories(board, plan)
        self.plan = self.placement.plan
        self.weight_ram = self.placement.weight_ram

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

        flash = self.weight_ram == "flash"
        m.submodules.link = link = HostLink(
            self.plan, self.divisor,
            {**self.placement.engine_kwargs,
             **({"flash_offset": b.flash.offset} if flash else {})},
            timeout_bits=self.frame_timeout)
        if flash:
            self._flash_pins(m, platform, b, link.flash)
        uart = platform.request("uart", 0, dir="-")
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

    def _flash_pins(self, m, platform, b, pins):
        """The engine's flash pins on the board's SPI flash: DQ0 both ways, DQ1 in; in quad
        mode DQ2/DQ3 in, else held high (WP#, HOLD# inactive); chip select; the clock on its
        pin or, on ECP5, through USRMCLK (the configuration clock).  The board's quad-SPI
        resource, or its own pins (``Flash.pins``) when that has no bidirectional lines."""
        quad = parse_flash(self.plan.weight_flash)[0]
        if b.flash.pins is not None:
            cs_pin, dq_pins, attrs = b.flash.pins
            platform.add_resources([Resource(
                "insitu_flash", 0, Subsignal("cs", PinsN(cs_pin, dir="o")),
                Subsignal("dq", Pins(dq_pins, dir="io")), Attrs(**attrs))])
            res = platform.request("insitu_flash", 0, dir="-")
            dq, clk = [res.dq[i] for i in range(4)], None
        else:
            res = platform.request("spi_flash_4x", 0, dir="-")
            dq, clk = [res.dq[i] for i in range(4)], res.clk
        if b.flash.usrmclk:             # the configuration clock pin: only through USRMCLK
            m.submodules.usrmclk = Instance("USRMCLK", i_USRMCLKI=pins.sck, i_USRMCLKTS=0)
        m.submodules.fl_cs = cs = io.Buffer("o", res.cs)         # cs is active low: inverted
        m.d.comb += cs.o.eq(~pins.cs_n)
        if clk is not None:
            m.submodules.fl_clk = ck = io.Buffer("o", clk)
            m.d.comb += ck.o.eq(pins.sck)
        m.submodules.fl_dq0 = d0 = io.Buffer("io", dq[0])
        m.submodules.fl_dq1 = d1 = io.Buffer("i", dq[1])
        m.d.comb += [d0.o.eq(pins.dq_o[0]), d0.oe.eq(pins.dq_oe[0])]
        ins = [d0.i, d1.i]
        for k in (2, 3):
            buf = io.Buffer("i" if quad else "o", dq[k])
            m.submodules[f"fl_dq{k}"] = buf
            if quad:
                ins.append(buf.i)
            else:
                m.d.comb += buf.o.eq(1)
                ins.append(Const(1, 1))
        m.d.comb += pins.dq_i.eq(Cat(*ins))
