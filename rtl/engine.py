"""The layer engine: a whole network on one MAC array, weights rebuilt on chip.

Data flow (one inference)::

    i_x (u8 pixels) -> activation memory --> controller (im2col addresses) --> MAC array --> post
                       (live tensors, by     ^                                  (bias, x M [+ res x Mr]
                        liveness)            |                                   >> S, clamp)
    weight memory -> tile fill -> tile buffer+          hidden layers -> activation memory
                                                        final layer ------------> o_y (int32)

* **Weight memory** (``lib.memory``, initialised from the compiled images, writable through
  ``i_load`` while the engine is idle) holds only the compact form of each scheme.
* **Weight generator** (the scheme's tile fill, ``rtl/fill.py``) turns one *tile* (``lanes`` output
  channels of one layer) into MAC-ready weights in a double-buffered **tile buffer**: ASM
  copies code words (the ASM array reads codes), SmartDeal runs the power-of-2 sparse
  decoder and the basis shift-add rebuild (:class:`~.weightgen.SdWeightGen`, int8
  requantised), MLG runs the two-level generator.  The generator fills tile ``k + 1`` while
  the MAC array works on tile ``k``; every weight-memory word it reads is counted.
* **Controller**: per layer, per tile, per output pixel, one term ``(ci, kh, kw)`` per cycle:
  the activation address (stride, zero outside the image: padding), the tile-buffer row and
  column, ``last`` on the pixel's final term.  Linear layers are 1x1 "images" with ``cin``
  channels; depthwise layers and pools run lane-serially (in groups of ``Plan.cpar`` lanes).
* **MAC array**: :class:`~.asm.AsmMacArray` (ASM codes) or :class:`~.baseline.ExactMacArray`
  (rebuilt integer weights), ``lanes`` output channels per term.
* **Post-processor**, one lane per cycle: ``r = (acc + bias) * M [+ res * Mr]``,
  ``(r + 2**(S-1)) >> S`` (round half up, arithmetic), then saturation to u8 (ReLU) or s8 (no
  activation) for hidden layers, or to int32 (final layer); ``bias``, ``M``, ``Mr`` (unsigned
  16 bits) and ``S`` (1..47) per output channel.  Golden: ``gen.network.forward_int``.

Hidden-layer outputs go to their tensor's place in the activation memory in ``[C, H, W]``
order (what later layers and Flatten expect); the final layer's values leave on ``o_y`` in
issue order (tile, pixel, lane; ``gen.network.output_order``), ``last`` on the inference's
final value.

Counters (``cycles``, ``issue_cycles``, ``mac_terms``, ``mac_slots``, ``weight_bits``) are
cleared when an inference starts and hold their values after it.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

from amaranth.hdl import EnableInserter, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..gen import schemes
from ..gen.buffers import memory_words
from ..gen.compiler import MAX_LANES
from ..gen.cycles import port_capacity
from ..gen.flashimage import flash_image, parse_flash
from ..gen.memmap import MEM_POST, load_data_bits
from .actmem import ActivationMemory
from .asm import AsmMacArray
from .baseline import ExactMacArray
from .control import Controller, TileScheduler
from .counters import NAMES as COUNTERS
from .counters import Counters
from .fill import FILLS
from .post import PostProcessor, output_layout, post_layout
from .skid import RegisterSlice, SkidBuffer
from .weightmem import WeightMemory, load_addr_bits, load_layout, post_ports
from .weightport import WeightPort
from .weightstream import FLASH_PINS, WeightStream

__all__ = ["Engine", "load_layout", "post_layout", "MACS", "ISSUE"]

#: What can sit between the controller and the MAC array (``Engine(issue=...)``).
ISSUE = ("skid", "slice", "direct")

#: MAC array by ``Scheme.mac`` name.
MACS = {"asm": AsmMacArray, "exact": ExactMacArray}


class Engine(wiring.Component):
    """Multi-layer inference engine built from a compiled plan (``gen.compiler.Plan``).

    Built from connected components: :class:`~.weightmem.WeightMemory` (compact images, host
    loads), the scheme's tile fill (:data:`~.fill.FILLS`) driven by a
    :class:`~.control.TileScheduler`, the double-buffered tile buffer (``lib.memory``), the
    :class:`~.control.Controller` (im2col addresses), the MAC array (:data:`MACS`), the
    :class:`~.post.PostProcessor`, the :class:`~.actmem.ActivationMemory` and the
    :class:`~.counters.Counters`.

    Parameters
    ----------
    plan : ``gen.plan.Plan``
    weight_ram : ``"block"`` or ``"huge"``, keyword-only
        ``"huge"`` asks synthesis to put the weight memory in the large single-port RAM of
        the device (iCE40 UP5K SPRAM).  Such RAM is not initialised by the bitstream: the
        weight memory then starts empty and the host writes it over ``i_load``.
    counter_bits : int, keyword-only
        Width of the counters, 16..64 (48 by default; the board tops use 32).
    flash_offset : int, keyword-only
        With ``plan.weight_flash``: the flash address of the weight stream (0 by default).
    boot_check : bool, keyword-only
        With ``plan.weight_flash``: after reset, read the whole stream once and check its
        CRC-32 before the first inference (the board tops do).  Inputs are taken meanwhile;
        an inference whose inputs are complete waits for the check.  A bad image raises
        ``err`` for good (until the next reset), so no inference is ever answered as good.
    issue : ``"skid"``, ``"slice"`` or ``"direct"``, keyword-only
        What sits between the controller and the MAC array.  ``"skid"`` (the default): a
        :class:`~.skid.SkidBuffer`, so the post-processor's stall reaches the controller's
        issue enable through a register, at the cost of a multiplexer on the
        activation-to-MAC data path (same cycles as ``"direct"``).  ``"slice"``: a
        :class:`~.skid.RegisterSlice`, which cuts that data path (the activation read and
        its masks end at a register) for one more cycle per layer.  Which path limits Fmax
        depends on the FPGA family (the board tops choose, ``Family.issue``).

    Members
    -------
    i_x : ``In(stream.Signature(8))``, the input activations (u8) in ``[C, H, W]`` order; the
        inference starts when the last one is taken.
    o_y : ``Out(stream.Signature({"value": signed(32), "last": 1}))``, the final layer.
    i_load : ``In(stream.Signature(load_layout(...)))``, memory writes, taken only when idle.
    busy : ``Out(1)``, an inference (or the power-up image check) is running.
    err : ``Out(1)``, sticky until the next start: a bad weight code, an overrun, a memory
        conflict or a flash read with a wrong CRC was seen (or the power-up check failed).
    image_bad : ``Out(1)``, only with ``boot_check``: the power-up check of the flash image
        failed (a permanent error until reset; always 0 without the check).
    cycles, issue_cycles, mac_terms, mac_slots, weight_bits : ``Out(counter_bits)`` counters.
    flash : ``Out(FLASH_PINS)``, only with ``plan.weight_flash``: the weight memory is a SPI
        NOR flash holding ``gen.flashimage.flash_image(plan)`` at ``flash_offset``, read once
        per inference (:class:`~.weightstream.WeightStream`); nothing of it is kept on chip.
        Every read is checked against the stream's CRC-32: a mismatch raises ``err``.

    Raises
    ------
    ValueError
        If the plan's scheme is unknown, its lanes are outside 1..MAX_LANES, it has no
        layers, or ``weight_ram`` / ``counter_bits`` is out of range (one message each).
    """

    def __init__(self, plan, *, weight_ram: str = "block", counter_bits: int = 48,
                 flash_offset: int = 0, boot_check: bool = False, issue: str = "skid"):
        self._plan = plan
        if issue not in ISSUE:
            raise ValueError(f"issue must be one of {', '.join(map(repr, ISSUE))}, not {issue!r}")
        self.issue = issue
        self._check(plan)
        self.flash_offset = flash_offset
        self.boot_check = bool(boot_check and plan.weight_flash)
        self._scheme = schemes.get(plan.scheme)
        if weight_ram not in ("block", "huge"):
            raise ValueError(f"weight_ram must be 'block' or 'huge', not {weight_ram!r}")
        if not isinstance(counter_bits, int) or isinstance(counter_bits, bool) or not 16 <= counter_bits <= 64:
            raise ValueError(f"counter_bits must be an integer in 16..64, not {counter_bits!r}")
        self.weight_ram, self._counter_bits = weight_ram, counter_bits
        self._load_bits, self._addr_bits = load_data_bits(plan), load_addr_bits(plan)
        super().__init__({
            "i_x": In(stream.Signature(8)),
            "o_y": Out(stream.Signature(output_layout())),
            "i_load": In(stream.Signature(load_layout(self._load_bits, self._addr_bits))),
            "busy": Out(1),
            "err": Out(1),
            "image_bad": Out(1),
            **{name: Out(counter_bits) for name in COUNTERS},
            **({"flash": Out(FLASH_PINS)} if plan.weight_flash else {}),
        })
        self.lanes = plan.lanes

    plan = property(lambda self: self._plan)
    load_data_bits = property(lambda self: self._load_bits)
    load_addr_bits = property(lambda self: self._addr_bits)

    @staticmethod
    def _check(plan):
        if plan.scheme not in schemes.NAMES:
            raise ValueError(f"Engine scheme must be one of {', '.join(schemes.NAMES)}, not {plan.scheme!r}")
        if not isinstance(plan.lanes, int) or isinstance(plan.lanes, bool) or not 1 <= plan.lanes <= MAX_LANES:
            raise ValueError(f"Engine lanes must be an integer in 1..{MAX_LANES}, not {plan.lanes!r}")
        if not plan.layers:
            raise ValueError("Engine plan has no layers")
        if plan.weight_flash:
            parse_flash(plan.weight_flash)
            if plan.weight_port_bits:
                raise ValueError("Engine weights come from a flash or through a weight port, "
                                 "not both")

    def elaborate(self, platform):
        m = Module()
        plan, L = self._plan, self._plan.lanes
        layers = plan.layers
        weighted = [ly for ly in layers if not ly.pool]      # the layers that need tiles
        G = plan.group                          # terms per tile-buffer row (SmartDeal 3, else 1)
        wbits = plan.tile_weight_bits           # bits per weight (or code) in the tile buffer
        rmax = plan.tile_rows
        P = plan.cpar
        act_depth = memory_words(layers, plan.input_shape, P)

        running, idle = Signal(), Signal()
        # the power-up image check (boot_check): from reset until the check's read is over
        booting = Signal(init=int(self.boot_check))
        boot_bad = Signal()                     # the check failed: err until reset
        m.d.comb += [idle.eq(~running), self.busy.eq(running | booting)]

        m.submodules.weights = wmem = WeightMemory(
            plan, weight_ram="flash" if plan.weight_flash else self.weight_ram)
        wiring.connect(m, wiring.flipped(self.i_load), wmem.i_load)
        m.d.comb += wmem.enable.eq(idle)

        c, h, w = plan.input_shape
        first = next(ly for ly in layers if ly.src == -1)
        m.submodules.act = act = ActivationMemory(
            depth=act_depth, in_size=c * h * w, in_base=first.in_base,
            residual=any(ly.res >= 0 for ly in layers), bank_words=plan.act_bank_words,
            cpar=P, in_pixels=h * w, window=first.window, in_width=w)
        wiring.connect(m, wiring.flipped(self.i_x), act.i_x)
        if self.boot_check:
            # Inputs complete during the check wait for it (and take no more bytes).
            start, waiting = Signal(), Signal()
            m.d.comb += [start.eq((act.loaded | waiting) & ~booting),
                         act.enable.eq(idle & ~waiting)]
            m.d.sync += waiting.eq((waiting | act.loaded) & booting)
        else:
            m.d.comb += act.enable.eq(idle)
            start = act.loaded

        # Weight side: the scheduler picks the tile, the scheme's fill builds it (the
        # weighted layers only: pools have no tiles).
        fplan = replace(plan, layers=weighted)
        m.submodules.tile = tile = Memory(shape=unsigned(L * G * P * wbits), depth=2 * rmax, init=[])
        m.submodules.sched = sched = TileScheduler(layers=weighted, lanes=L)
        fill = FILLS[self._scheme.fill](fplan, rmax=rmax, depths=wmem.depths)
        t_wr = tile.write_port(granularity=wbits)
        fill_start, fill_go = Signal(), Signal()
        en = 1                          # the fill's clock enable (a link may hold it)
        if plan.weight_flash:
            # The weight memory is a flash read once per inference: the fill advances when
            # it takes no weight word or the next one has arrived.
            quad, divider = parse_flash(plan.weight_flash)
            image = flash_image(plan)
            m.submodules.wstream = ws = WeightStream(
                word_bits=plan.weight_word_bits, count=len(image), offset=self.flash_offset,
                quad=quad, divider=divider, crc=zlib.crc32(image))
            wiring.connect(m, ws.flash, wiring.flipped(self.flash))
            en = Signal()
            m.d.comb += [en.eq(~fill.w_take | ws.ready), ws.start.eq(start),
                         ws.take.eq(fill.w_take & en)]
            if self.boot_check:
                kick = Signal(init=1)               # the first cycle after reset
                m.d.sync += kick.eq(0)
                m.d.comb += ws.check.eq(kick)
                with m.If(booting & ~kick & ~ws.busy):         # the check's verdict
                    m.d.sync += [booting.eq(0), boot_bad.eq(ws.bad)]
        elif plan.weight_port_bits:
            # A weight link of weight_port_bits bits per cycle: a credit counter raises the
            # enable when the bits the fill reads have arrived.
            m.submodules.port = port = WeightPort(
                bits=plan.weight_port_bits,
                capacity=port_capacity(plan, plan.weight_port_bits))
            en = port.go
            m.d.comb += port.want.eq(fill.wbits)
        if not (plan.weight_flash or plan.weight_port_bits):
            m.submodules.fill = fill
            m.d.comb += [fill_start.eq(start), fill_go.eq(sched.go)]
        else:
            # The fill runs under the clock enable; what it drives outside (tile writes, read
            # enables, done, counts) is gated by the same enable, and its one-cycle commands
            # wait for an enabled cycle.
            m.submodules.fill = EnableInserter(en)(fill)
            held_start, held_go = Signal(), Signal()
            m.d.sync += [held_start.eq((held_start | start) & ~en),
                         held_go.eq((held_go | sched.go) & ~en)]
            m.d.comb += [fill_start.eq(start | held_start), fill_go.eq(sched.go | held_go)]
        m.d.comb += [t_wr.addr.eq(fill.t_wr.addr), t_wr.data.eq(fill.t_wr.data),
                     t_wr.en.eq(Mux(en, fill.t_wr.en, 0))]
        for name in ("w_rd", "a_rd", "c_rd"):
            src, dst = getattr(fill, name), getattr(wmem, name)
            m.d.comb += [dst.addr.eq(src.addr), dst.en.eq(src.en & en), src.data.eq(dst.data)]
        if plan.weight_flash:
            m.d.comb += fill.w_rd.data.eq(ws.data)
        fill_done, fill_wbits, fill_err = fill.done & en, Mux(en, fill.wbits, 0), fill.err & en
        m.d.comb += [sched.start.eq(start), sched.fill_done.eq(fill_done),
                     fill.start.eq(fill_start), fill.go.eq(fill_go), fill.layer.eq(sched.layer),
                     fill.tile.eq(sched.tile), fill.lanes.eq(sched.lanes), fill.slot.eq(sched.slot)]

        # Issue side: controller -> MAC array -> post-processor -> activations / o_y.
        m.submodules.mac = mac = MACS[self._scheme.mac](
            act_bits=8, act_signed=False, lanes=L, acc_len=plan.terms_max,
            **({"ways": P} if P > 1 else {}), **self._scheme.mac_params(plan))
        m.submodules.ctrl = ctrl = Controller(
            layers=layers, lanes=L, group=G, wbits=wbits, rmax=rmax, act_depth=act_depth,
            mac_in=mac.signature.members["i"].signature.flip(),  # an In member's is flipped
            unit=mac.unit, cpar=P, zero=mac.zero)
        if self.issue != "direct":
            # skid: the MAC array's stall (the post-processor's ready) reaches the
            # controller's issue enable through a register, not combinationally; slice: the
            # activations and weights reach the MAC array from a register (Fmax)
            part = {"skid": SkidBuffer, "slice": RegisterSlice}[self.issue]
            m.submodules[self.issue] = reg = part(mac.signature.members["i"].signature.flip())
            wiring.connect(m, ctrl.o, reg.i)
            wiring.connect(m, reg.o, mac.i)
        else:
            wiring.connect(m, ctrl.o, mac.i)
        wiring.connect(m, ctrl.act_rd, act.rd)
        wiring.connect(m, ctrl.t_rd, tile.read_port())
        m.d.comb += [ctrl.start.eq(start), ctrl.full.eq(sched.full), sched.clr.eq(ctrl.clr)]

        m.submodules.post = post = PostProcessor(
            layers=layers, lanes=L, acc_bits=mac.acc_bits,
            result=mac.signature.members["o"].signature, act_depth=act_depth,
            post_depth=wmem.depths[MEM_POST], banked=bool(plan.act_bank_words), cpar=P,
            post_lanes=plan.post_lanes)
        wiring.connect(m, mac.o, post.i)
        for name in post_ports(plan.post_lanes):
            wiring.connect(m, getattr(post, name), getattr(wmem, name))
        wiring.connect(m, post.wb, act.wb)
        if post.residual:
            wiring.connect(m, post.rr, act.rr)
        wiring.connect(m, post.o_y, wiring.flipped(self.o_y))
        m.d.comb += ctrl.row_done.eq(post.row_done)

        with m.If(start):
            m.d.sync += running.eq(1)
        with m.If(post.done):
            m.d.sync += running.eq(0)

        m.submodules.counters = cnt = Counters(lanes=L * P, counter_bits=self._counter_bits)
        flash_bad = ws.bad if plan.weight_flash else 0
        m.d.comb += [cnt.start.eq(start), cnt.running.eq(running), cnt.issuing.eq(ctrl.issuing),
                     cnt.mac_fire.eq(ctrl.o.valid & ctrl.o.ready), cnt.lanes.eq(ctrl.lanes_used),
                     cnt.wbits.eq(fill_wbits), cnt.err_now.eq(fill_err | post.err | act.conflict | flash_bad),
                     self.err.eq(cnt.err | boot_bad), self.image_bad.eq(boot_bad)]
        m.d.comb += [getattr(self, name).eq(getattr(cnt, name)) for name in COUNTERS]
        return m
