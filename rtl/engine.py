"""The layer engine: a whole network on one MAC array, weights rebuilt on chip.

Data flow (one inference)::

    i_x (u8 pixels) -> act[0] --+--> controller (im2col addresses) --> MAC array --> post
                                |                     ^                          (bias, x M >> S,
    weight memory -> weight generator -> tile buffer --+                          ReLU / clamp)
                                                                                    |
                           act[1 - b] <--------- next layer's input <---------------+
                                                     final layer ------------> o_y (int32)

* **Weight memory** (``lib.memory``, initialised from the compiled images, writable through
  ``i_load`` while the engine is idle) holds only the compact form of each scheme.
* **Weight generator** (one per scheme, ``gen_*``) turns one *tile* (``lanes`` output
  channels of one layer) into MAC-ready weights in a double-buffered **tile buffer**: ASM
  copies code words (the ASM array reads codes), SmartDeal runs the power-of-2 sparse
  decoder and the basis shift-add rebuild (:class:`~.weightgen.SdWeightGen`, int8
  requantised), MLG runs the two-level generator.  The generator fills tile ``k + 1`` while
  the MAC array works on tile ``k``; every weight-memory word it reads is counted.
* **Controller**: per layer, per tile, per output pixel, one term ``(ci, kh, kw)`` per cycle:
  the activation address (zero outside the image: padding), the tile-buffer row and column,
  ``last`` on the pixel's final term.  Linear layers are 1x1 "images" with ``cin`` channels.
* **MAC array**: :class:`~.asm.AsmMacArray` (ASM codes) or :class:`~.baseline.ExactMacArray`
  (rebuilt integer weights), ``lanes`` output channels per term.
* **Post-processor**, one lane per cycle: ``r = (acc + bias) * M``, ``(r + 2**(S-1)) >> S``
  (round half up, arithmetic), then ReLU and saturation to u8 (hidden layers) or to int32
  (final layer, no ReLU); ``bias``, ``M`` (unsigned 16 bits) and ``S`` (1..47) per output
  channel.  Golden: ``gen.network.forward_int``.

Hidden-layer outputs go to the other activation buffer in ``[C, H, W]`` order (what the next
layer and Flatten expect); the final layer's values leave on ``o_y`` in issue order (tile,
pixel, lane; ``gen.network.output_order``), ``last`` on the inference's final value.

Counters (``cycles``, ``issue_cycles``, ``mac_terms``, ``mac_slots``, ``weight_bits``) are
cleared when an inference starts and hold their values after it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..gen import schemes
from ..gen.compiler import MAX_LANES
from ..gen.fields import Fields
from ..gen.memmap import (
    BIAS_BITS,
    M_BITS,
    MEM_AUX,
    MEM_COEF,
    MEM_POST,
    MEM_WEIGHT,
    OUT_BITS,
    POST,
    POST_BITS,
    S_BITS,
    load_data_bits,
)
from .asm import AsmMacArray
from .baseline import ExactMacArray
from .fill import FILLS
from .layouts import struct_layout
from .util import layer_const as _layer_const

__all__ = ["Engine", "load_layout", "post_layout", "MACS"]

#: MAC array by ``Scheme.mac`` name.
MACS = {"asm": AsmMacArray, "exact": ExactMacArray}


def post_layout() -> data.StructLayout:
    """One output channel's post-processing entry (``gen.memmap.POST``)."""
    return struct_layout(POST)


def load_layout(data_bits: int, addr_bits: int) -> data.StructLayout:
    """One word on ``i_load``: which memory, the word address, the data (LSB-aligned)."""
    return struct_layout(Fields(("mem", 2), ("addr", addr_bits), ("data", data_bits)))


def _bits(n: int) -> int:
    return max(1, (max(0, n - 1)).bit_length())


class Engine(wiring.Component):
    """Multi-layer inference engine built from a compiled plan (``gen.compiler.Plan``).

    Members
    -------
    i_x : ``In(stream.Signature(8))``, the input activations (u8) in ``[C, H, W]`` order; the
        inference starts when the last one is taken.
    o_y : ``Out(stream.Signature({"value": signed(32), "last": 1}))``, the final layer.
    i_load : ``In(stream.Signature(load_layout(...)))``, memory writes, taken only when idle.
    busy : ``Out(1)``, an inference is running.
    err : ``Out(1)``, sticky until the next start: a bad weight code or an overrun was seen.
    cycles, issue_cycles, mac_terms, mac_slots, weight_bits : ``Out(counter_bits)`` counters
        (48 bits by default; the board tops use 32).

    ``weight_ram="huge"`` asks synthesis to put the weight memory (the coefficient stream) in
    the large single-port RAM of the device (iCE40 UP5K SPRAM, 16 bits x 16K per block).
    Such RAM is not initialised by the bitstream: the weight memory then starts empty and
    the host writes it over ``i_load`` before the first inference.
    """

    def __init__(self, plan, *, weight_ram: str = "block", counter_bits: int = 48):
        self._plan = plan
        self._check(plan)
        self._scheme = schemes.get(plan.scheme)
        if weight_ram not in ("block", "huge"):
            raise ValueError(f"weight_ram must be 'block' or 'huge', not {weight_ram!r}")
        if not isinstance(counter_bits, int) or isinstance(counter_bits, bool) or not 16 <= counter_bits <= 64:
            raise ValueError(f"counter_bits must be an integer in 16..64, not {counter_bits!r}")
        self.weight_ram = weight_ram
        lanes = plan.lanes
        self._mem_widths = {MEM_WEIGHT: plan.weight_word_bits, MEM_AUX: plan.aux_word_bits,
                            MEM_POST: POST_BITS, MEM_COEF: plan.coef_word_bits}
        self._mem_depths = {MEM_WEIGHT: max(2, len(plan.weight_words)),
                            MEM_AUX: max(2, len(plan.aux_words)),
                            MEM_POST: max(2, len(plan.post_words)),
                            MEM_COEF: max(2, len(plan.coef_words))}
        self._load_bits = load_data_bits(plan)
        self._addr_bits = _bits(max(self._mem_depths.values()))
        super().__init__({
            "i_x": In(stream.Signature(8)),
            "o_y": Out(stream.Signature(data.StructLayout({"value": signed(OUT_BITS),
                                                           "last": 1}))),
            "i_load": In(stream.Signature(load_layout(self._load_bits, self._addr_bits))),
            "busy": Out(1),
            "err": Out(1),
            "cycles": Out(counter_bits),
            "issue_cycles": Out(counter_bits),
            "mac_terms": Out(counter_bits),
            "mac_slots": Out(counter_bits),
            "weight_bits": Out(counter_bits),
        })
        self.lanes = lanes

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

    # ------------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        plan, L = self._plan, self._plan.lanes
        layers = plan.layers
        nl = len(layers)
        G = plan.group                          # terms per tile-buffer row (ASM 1, SD 3, MLG K2)
        wbits = plan.tile_weight_bits           # bits per weight (or code) in the tile buffer
        rmax = max(-(-ly.terms // G) for ly in layers)
        rmax = max(rmax, plan.tile_rows_max)
        act_depth = max(max(ly.cin * ly.h * ly.w for ly in layers),
                        max(ly.cout * ly.oh * ly.ow for ly in layers[:-1]) if nl > 1 else 1)

        # -- memories ----------------------------------------------------------------------
        m.submodules.act0 = act0 = Memory(shape=8, depth=act_depth, init=[])
        m.submodules.act1 = act1 = Memory(shape=8, depth=act_depth, init=[])
        m.submodules.tile = tile = Memory(shape=unsigned(L * G * wbits), depth=2 * rmax, init=[])
        m.submodules.wmem = wmem = Memory(shape=unsigned(plan.weight_word_bits),
                                          depth=self._mem_depths[MEM_WEIGHT],
                                          attrs=({"ram_style": "huge"}
                                                 if self.weight_ram == "huge" else None),
                                          # SPRAM has no initial contents: the host loads it
                                          init=[] if self.weight_ram == "huge"
                                          else plan.weight_words)
        m.submodules.amem = amem = Memory(shape=unsigned(plan.aux_word_bits),
                                          depth=self._mem_depths[MEM_AUX], init=plan.aux_words)
        m.submodules.pmem = pmem = Memory(shape=unsigned(POST_BITS),
                                          depth=self._mem_depths[MEM_POST], init=plan.post_words)
        m.submodules.cmem = cmem = Memory(shape=unsigned(plan.coef_word_bits),
                                          depth=self._mem_depths[MEM_COEF], init=plan.coef_words)

        # -- load port (idle only) -----------------------------------------------------------
        idle = Signal()
        ld = self.i_load
        m.d.comb += ld.ready.eq(idle)
        # The weight memory has one address for its read and write ports (the generator's
        # address, or the load address during a load), so it can map to single-port RAM
        # (iCE40 SPRAM); its read is disabled while writing.
        wrd = wmem.read_port()
        for sel, mem in ((MEM_WEIGHT, wmem), (MEM_AUX, amem), (MEM_POST, pmem), (MEM_COEF, cmem)):
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(wrd.addr if sel == MEM_WEIGHT else ld.payload.addr),
                         wp.data.eq(ld.payload.data),
                         wp.en.eq(ld.valid & idle & (ld.payload.mem == sel))]
            if sel == MEM_WEIGHT:
                w_loading = wp.en

        # -- run state, input loading, counters ---------------------------------------------
        running = Signal()
        start = Signal()
        done = Signal()
        m.d.comb += [idle.eq(~running), self.busy.eq(running)]
        in_size = layers[0].cin * layers[0].h * layers[0].w
        in_addr = Signal(range(in_size + 1))
        a0w, a1w = act0.write_port(), act1.write_port()
        m.d.comb += self.i_x.ready.eq(idle)
        with m.If(self.i_x.valid & idle):
            m.d.comb += [a0w.addr.eq(in_addr), a0w.data.eq(self.i_x.payload), a0w.en.eq(1)]
            with m.If(in_addr == in_size - 1):
                m.d.sync += [in_addr.eq(0), running.eq(1)]
                m.d.comb += start.eq(1)
            with m.Else():
                m.d.sync += in_addr.eq(in_addr + 1)
        with m.If(done):
            m.d.sync += running.eq(0)

        wbits_inc = Signal(16)              # weight-memory bits read this cycle
        issuing = Signal()
        mac_fire = Signal()
        lanes_now = Signal(range(L + 1))
        err_now = Signal()
        with m.If(start):
            m.d.sync += [self.cycles.eq(0), self.issue_cycles.eq(0), self.mac_terms.eq(0),
                         self.mac_slots.eq(0), self.weight_bits.eq(0), self.err.eq(0)]
        with m.Elif(running):
            m.d.sync += [
                self.cycles.eq(self.cycles + 1),
                self.issue_cycles.eq(self.issue_cycles + issuing),
                self.mac_terms.eq(self.mac_terms + mac_fire),
                self.mac_slots.eq(self.mac_slots + Mux(mac_fire, lanes_now, 0)),
                self.weight_bits.eq(self.weight_bits + wbits_inc),
            ]
            with m.If(err_now):
                m.d.sync += self.err.eq(1)

        # -- per-layer constants ---------------------------------------------------------------
        def layer_const(sel, name, fn, shape, registered=False):
            return _layer_const(m, sel, layers, name, fn, shape, registered)

        def tile_lanes(sel, tk, prefix):
            """``(tiles, lanes of tile tk)`` of layer ``sel`` (the last tile may be partial)."""
            tiles = layer_const(sel, f"{prefix}_tiles", lambda ly: ly.tiles, range(1 << 16))
            last = layer_const(sel, f"{prefix}_last_lanes",
                               lambda ly: ly.cout - (ly.tiles - 1) * L, range(L + 1))
            return tiles, Mux(tk == tiles - 1, last, L)

        # ======================================================================================
        # Weight generator side: (layer, tile) sequence, tile slots.
        full = Signal(2)
        set_full = Signal(2)
        clr_full = Signal(2)
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        g_ly = Signal(range(max(2, nl)))
        g_tk = Signal(range(max(2, max(ly.tiles for ly in layers))))
        g_slot = Signal()
        g_go = Signal()                     # an inference started and its first tile is due
        g_active = Signal()                 # filling a tile
        g_fill_start = Signal()
        g_fill_done = Signal()
        with m.If(start):
            m.d.sync += g_go.eq(1)
        g_tiles, g_lanes = tile_lanes(g_ly, g_tk, "g")
        g_first = (g_ly == 0) & (g_tk == 0)
        with m.If(~g_active & (g_go | ~g_first) & ~full.bit_select(g_slot, 1)):
            m.d.comb += g_fill_start.eq(1)
            m.d.sync += g_active.eq(1)
            with m.If(g_first):
                m.d.sync += g_go.eq(0)
        with m.If(g_active & g_fill_done):
            m.d.sync += [g_active.eq(0), g_slot.eq(~g_slot)]
            m.d.comb += set_full.eq(Mux(g_slot, 0b10, 0b01))
            with m.If(g_tk == g_tiles - 1):
                m.d.sync += g_tk.eq(0)
                m.d.sync += g_ly.eq(Mux(g_ly == nl - 1, 0, g_ly + 1))
            with m.Else():
                m.d.sync += g_tk.eq(g_tk + 1)

        tw = tile.write_port(granularity=wbits)
        gen_err = Signal()
        # The scheme's tile fill (rtl/fill.py), behind the one interface all fills share.
        m.submodules.fill = fill = FILLS[self._scheme.fill](plan, rmax=rmax, depths=self._mem_depths)
        wiring.connect(m, fill.t_wr, tw)
        wiring.connect(m, fill.w_rd, wrd)
        wiring.connect(m, fill.a_rd, amem.read_port())
        wiring.connect(m, fill.c_rd, cmem.read_port())
        m.d.comb += [fill.start.eq(start), fill.go.eq(g_fill_start), fill.layer.eq(g_ly),
                     fill.tile.eq(g_tk), fill.lanes.eq(g_lanes), fill.slot.eq(g_slot),
                     g_fill_done.eq(fill.done), wbits_inc.eq(fill.wbits), gen_err.eq(fill.err)]

        with m.If(w_loading):                   # after the generator: this assignment wins
            m.d.comb += [wrd.addr.eq(ld.payload.addr), wrd.en.eq(0)]

        # ======================================================================================
        # Controller: issue one term per cycle into stage S1 (memory reads) -> MAC input.
        mac = MACS[self._scheme.mac](act_bits=8, act_signed=False, lanes=L, acc_len=plan.terms_max,
                                     **self._scheme.mac_params(plan))
        m.submodules.mac = mac

        c_ly = Signal(range(max(2, nl)))
        c_tk = Signal(range(max(2, max(ly.tiles for ly in layers))))
        c_slot = Signal()
        c_oy = Signal(range(max(2, max(ly.oh for ly in layers))))
        c_ox = Signal(range(max(2, max(ly.ow for ly in layers))))
        c_ci = Signal(range(max(2, max(ly.cin for ly in layers))))
        c_kh = Signal(range(max(2, 3)))
        c_kw = Signal(range(max(2, 3)))
        c_row = Signal(range(max(2, rmax)))
        c_col = Signal(range(max(2, G)))
        c_ci_base = Signal(signed(24))
        c_oy_base = Signal(signed(24))        # (oy - pad) * W
        c_kh_w = Signal(signed(24))           # kh * W
        c_phase = Signal(2)                   # 0 idle, 1 wait layer input ready, 2 issue
        pending = Signal(range(1 << 16))      # accumulations issued, not yet written back
        pend_inc, pend_dec = Signal(), Signal()
        # The increment is registered first (it sits at the end of the issue logic's path);
        # the layer switch waits for it as well as for pending == 0.
        pend_inc_r = Signal()
        m.d.sync += [pend_inc_r.eq(pend_inc), pending.eq(pending + pend_inc_r - pend_dec)]

        # Registered: c_ly changes only at a start (to 0, long before the first term) or on
        # a layer switch, which waits at least two cycles for the previous layer's results.
        cf = {name: layer_const(c_ly, f"c_{name}", fn, shape, registered=True)
              for name, fn, shape in [
            ("h", lambda ly: ly.h, range(4096)),
            ("w", lambda ly: ly.w, range(4096)),
            ("hw", lambda ly: ly.h * ly.w, range(1 << 22)),
            ("pad", lambda ly: ly.pad, range(2)),
            # last index of each counter, so that "is last" is one equality test
            ("k_m1", lambda ly: ly.k - 1, range(4)),
            ("cin_m1", lambda ly: ly.cin - 1, range(1 << 16)),
            ("oh_m1", lambda ly: ly.oh - 1, range(4096)),
            ("ow_m1", lambda ly: ly.ow - 1, range(4096)),
        ]}
        cf["tiles"], c_lanes = tile_lanes(c_ly, c_tk, "c")

        iy = Signal(signed(16))
        ix = Signal(signed(16))
        m.d.comb += [iy.eq(c_oy + c_kh - cf["pad"]), ix.eq(c_ox + c_kw - cf["pad"])]
        inside = (iy >= 0) & (iy < cf["h"]) & (ix >= 0) & (ix < cf["w"])
        x_addr = Signal(signed(26))
        m.d.comb += x_addr.eq(c_ci_base + c_oy_base + c_kh_w + c_ox + c_kw - cf["pad"])
        t_last_k = (c_kw == cf["k_m1"]) & (c_kh == cf["k_m1"])
        t_last = t_last_k & (c_ci == cf["cin_m1"])
        p_last = (c_ox == cf["ow_m1"]) & (c_oy == cf["oh_m1"])
        tile_last = cf["tiles"] - 1 == c_tk
        pad_w = layer_const(c_ly, "c_pad_w", lambda ly: -ly.pad * ly.w, signed(16),
                            registered=True)                                 # at oy = 0

        s1_valid = Signal()
        s1_inside, s1_last, s1_col = Signal(), Signal(), Signal(range(max(2, G)))
        s1_lanes = Signal(range(L + 1))
        adv = Signal()
        m.d.comb += adv.eq(~s1_valid | mac.i.ready)

        ar = [act0.read_port(), act1.read_port()]
        tr = tile.read_port()
        c_buf = Signal()                        # activation buffer this layer reads
        m.d.comb += c_buf.eq(c_ly[0] if nl > 1 else 0)

        # Stage S0 registers the term's addresses (the counters' sums and compares stay out
        # of the memory-address path); S0 issues the reads; S1 holds what the data needs.
        can_issue = (c_phase == 2) & full.bit_select(c_slot, 1)
        s0_valid, s0_inside, s0_last, s0_buf = Signal(), Signal(), Signal(), Signal()
        s0_col = Signal.like(s1_col)
        s0_lanes = Signal.like(s1_lanes)
        s0_xaddr = Signal(range(max(2, act_depth)))
        s0_taddr = Signal(range(2 * rmax))
        s0_free = Signal(2)                     # the tile slot this (last) read frees
        c_free = Signal(2)
        with m.If(adv):
            m.d.sync += [s0_valid.eq(can_issue), s0_inside.eq(inside), s0_last.eq(t_last),
                         s0_col.eq(c_col), s0_lanes.eq(c_lanes), s0_buf.eq(c_buf),
                         s0_xaddr.eq(Mux(inside, x_addr, 0)),
                         s0_taddr.eq(c_slot * rmax + c_row), s0_free.eq(c_free)]
        m.d.comb += clr_full.eq(Mux(adv, s0_free, 0))
        for port in ar:
            m.d.comb += [port.addr.eq(s0_xaddr), port.en.eq(adv)]
        m.d.comb += [tr.addr.eq(s0_taddr), tr.en.eq(adv)]

        with m.If(adv):
            m.d.sync += [s1_valid.eq(s0_valid), s1_inside.eq(s0_inside), s1_last.eq(s0_last),
                         s1_col.eq(s0_col), s1_lanes.eq(s0_lanes)]
        m.d.comb += issuing.eq(c_phase == 2)
        s1_buf = Signal()
        with m.If(adv):                        # with the read data it selects, not before
            m.d.sync += s1_buf.eq(s0_buf)

        # MAC input from the read data.
        x_data = Mux(s1_buf, ar[1].data, ar[0].data)
        row_words = data.ArrayLayout(data.ArrayLayout(unsigned(wbits), G), L)
        trow = row_words(tr.data)
        mp = mac.i.payload
        m.d.comb += [mac.i.valid.eq(s1_valid), mp.x.eq(Mux(s1_inside, x_data, 0)),
                     mp.last.eq(s1_last)]
        for n in range(L):
            m.d.comb += mp.w[n].eq(trow[n].as_value().word_select(s1_col, wbits) if G > 1
                                   else trow[n][0])
        m.d.comb += [mac_fire.eq(mac.i.valid & mac.i.ready), lanes_now.eq(s1_lanes)]

        # Counter stepping.
        with m.Switch(c_phase):
            with m.Case(0):
                with m.If(start):
                    m.d.sync += [c_phase.eq(2), c_ly.eq(0)]
            with m.Case(1):
                with m.If((pending == 0) & ~pend_inc_r):
                    m.d.sync += c_phase.eq(2)
            with m.Case(2):
                with m.If(adv & full.bit_select(c_slot, 1)):
                    # term counters
                    with m.If(c_col == G - 1):
                        m.d.sync += [c_col.eq(0), c_row.eq(c_row + 1)]
                    with m.Else():
                        m.d.sync += c_col.eq(c_col + 1)
                    with m.If(c_kw == cf["k_m1"]):
                        m.d.sync += c_kw.eq(0)
                        with m.If(c_kh == cf["k_m1"]):
                            m.d.sync += [c_kh.eq(0), c_kh_w.eq(0)]
                            with m.If(c_ci == cf["cin_m1"]):
                                m.d.sync += [c_ci.eq(0), c_ci_base.eq(0)]
                            with m.Else():
                                m.d.sync += [c_ci.eq(c_ci + 1), c_ci_base.eq(c_ci_base + cf["hw"])]
                        with m.Else():
                            m.d.sync += [c_kh.eq(c_kh + 1), c_kh_w.eq(c_kh_w + cf["w"])]
                    with m.Else():
                        m.d.sync += c_kw.eq(c_kw + 1)
                    with m.If(t_last):
                        m.d.comb += pend_inc.eq(1)
                        m.d.sync += [c_row.eq(0), c_col.eq(0)]
                        # pixel counters
                        with m.If(c_ox == cf["ow_m1"]):
                            m.d.sync += c_ox.eq(0)
                            with m.If(c_oy == cf["oh_m1"]):
                                m.d.sync += [c_oy.eq(0), c_oy_base.eq(pad_w)]
                            with m.Else():
                                m.d.sync += [c_oy.eq(c_oy + 1), c_oy_base.eq(c_oy_base + cf["w"])]
                        with m.Else():
                            m.d.sync += c_ox.eq(c_ox + 1)
                        with m.If(p_last):
                            m.d.comb += c_free.eq(Mux(c_slot, 0b10, 0b01))
                            m.d.sync += c_slot.eq(~c_slot)
                            with m.If(tile_last):
                                m.d.sync += c_tk.eq(0)
                                with m.If(c_ly == nl - 1):
                                    m.d.sync += [c_phase.eq(0), c_ly.eq(0)]
                                with m.Else():
                                    m.d.sync += [c_phase.eq(1), c_ly.eq(c_ly + 1)]
                            with m.Else():
                                m.d.sync += c_tk.eq(c_tk + 1)
        # (oy - pad) * W of the layer about to run, set while not issuing.
        with m.If(c_phase != 2):
            m.d.sync += c_oy_base.eq(pad_w)

        # ======================================================================================
        # Post-processor: mirrors (layer, tile, pixel) of the MAC results; one lane per cycle.
        p_ly = Signal(range(max(2, nl)))
        p_tk = Signal(range(max(2, max(ly.tiles for ly in layers))))
        p_pix = Signal(range(max(2, max(ly.oh * ly.ow for ly in layers))))
        p_lane = Signal(range(max(2, L)))
        pf = {name: layer_const(p_ly, f"p_{name}", fn, shape) for name, fn, shape in [
            ("pix", lambda ly: ly.oh * ly.ow, range(1 << 22)),
            ("post_base", lambda ly: ly.post_base, range(1 << 20)),
        ]}
        pf["tiles"], p_lanes = tile_lanes(p_ly, p_tk, "p")
        p_final = p_ly == nl - 1
        p_relu = layer_const(p_ly, "p_relu", lambda ly: int(ly.relu), 1)

        # Final outputs go through a small FIFO whose "full" is a registered level: the
        # post-processor's stall no longer depends on o_y.ready combinationally (Fmax).
        # (depth 3: a depth-2 buffered FIFO has a zero-width inner address, bad Verilog)
        m.submodules.ofifo = ofifo = SyncFIFOBuffered(width=OUT_BITS + 1, depth=3)
        m.d.comb += [self.o_y.payload.as_value().eq(ofifo.r_data), self.o_y.valid.eq(ofifo.r_rdy),
                     ofifo.r_en.eq(self.o_y.ready)]
        o_full = ~ofifo.w_rdy
        padv = Signal()
        m.d.comb += padv.eq(~o_full)
        pr = pmem.read_port()
        # The MAC's output ready is a register (`ack`, set the cycle after the last lane was
        # taken), so the post-processor's stall does not reach the MAC array and the issue
        # counters combinationally (Fmax).  Costs one cycle per result word.
        res = mac.o.payload
        ack = Signal()
        m.d.comb += mac.o.ready.eq(ack)
        m.d.sync += ack.eq(0)
        # stage Q1: lane select + post entry read
        q1_valid, q1_final, q1_relu, q1_lastlane, q1_end = (Signal(name=f"q1_{n}") for n in
                                                           ("valid", "final", "relu", "lastlane", "end"))
        q1_acc = Signal(signed(mac.acc_bits), name="q1_acc")
        q1_addr = Signal(range(max(1, act_depth)))
        # Output channel and activation address of the current lane, kept as counters (no
        # multiplier): co = tile * L + lane, addr = co * pixels + pixel.
        co = Signal(range(1 << 16), name="p_co")
        co_base = Signal(range(1 << 16), name="p_co_base")
        addr = Signal(range(max(2, act_depth)), name="p_addr")
        addr_base = Signal(range(max(2, act_depth)), name="p_addr_base")   # tile * L * pixels
        tile_step = layer_const(p_ly, "p_tile_step", lambda ly: L * ly.oh * ly.ow, range(1 << 24))
        m.d.comb += [pr.addr.eq(pf["post_base"] + co), pr.en.eq(padv)]
        take = mac.o.valid & ~ack & padv
        lane_last = p_lane == p_lanes - 1
        with m.If(take & lane_last):
            m.d.sync += ack.eq(1)
        with m.If(padv):
            m.d.sync += [q1_valid.eq(take), q1_final.eq(p_final), q1_relu.eq(p_relu),
                         q1_lastlane.eq(lane_last), q1_acc.eq(res.acc[p_lane]),
                         q1_addr.eq(addr),
                         q1_end.eq(lane_last & p_final & (p_tk == pf["tiles"] - 1)
                                   & (p_pix == pf["pix"] - 1))]
        with m.If(take):
            with m.If(res.bad_code | res.overrun):
                m.d.comb += err_now.eq(1)
            with m.If(lane_last):
                m.d.sync += p_lane.eq(0)
                with m.If(p_pix == pf["pix"] - 1):
                    m.d.sync += p_pix.eq(0)
                    with m.If(p_tk == pf["tiles"] - 1):
                        m.d.sync += [p_tk.eq(0), p_ly.eq(Mux(p_ly == nl - 1, 0, p_ly + 1)),
                                     co.eq(0), co_base.eq(0), addr.eq(0), addr_base.eq(0)]
                    with m.Else():
                        m.d.sync += [p_tk.eq(p_tk + 1), co.eq(co_base + L), co_base.eq(co_base + L),
                                     addr.eq(addr_base + tile_step),
                                     addr_base.eq(addr_base + tile_step)]
                with m.Else():
                    m.d.sync += [p_pix.eq(p_pix + 1), co.eq(co_base),
                                 addr.eq(addr_base + p_pix + 1)]
            with m.Else():
                m.d.sync += [p_lane.eq(p_lane + 1), co.eq(co + 1), addr.eq(addr + pf["pix"])]

        # Stages Q2..Q6, one register level each so that no stage holds more than one adder,
        # the multiplier or the shifter (Fmax): Q2 acc + bias, Q3 * M, Q4 >> (S - 1),
        # Q5 + 1 >> 1 (rounding), Q6 clamp; then the write-back / output FIFO.  The tags
        # ride along.
        ent = post_layout()(pr.data)
        vbits = max(mac.acc_bits, BIAS_BITS) + 1
        pbits = vbits + M_BITS + 2
        q1_buf = Signal()
        with m.If(padv):
            m.d.sync += q1_buf.eq(~p_ly[0] if nl > 1 else 1)
        # A hidden layer writes the buffer the next layer reads: layer i reads act[i % 2] and
        # writes act[(i + 1) % 2].  act0's one write port is shared with the input loader.
        tags = {"valid": q1_valid, "final": q1_final, "relu": q1_relu, "lastlane": q1_lastlane,
                "end": q1_end, "addr": q1_addr, "buf": q1_buf}

        def stage(name, prev, values):
            """Register the tags of ``prev`` and ``values`` (name -> expression) on ``padv``."""
            cur = {k: Signal.like(v, name=f"{name}_{k}") for k, v in prev.items()}
            out = {}
            for k, (shape, expr) in values.items():
                out[k] = Signal(shape, name=f"{name}_{k}")
            with m.If(padv):
                m.d.sync += [cur[k].eq(v) for k, v in prev.items()]
                m.d.sync += [out[k].eq(values[k][1]) for k in values]
            return cur, out

        t2, v2 = stage("q2", tags, {"sum": (signed(vbits), q1_acc + ent.bias),
                                    "m": (unsigned(M_BITS), ent.m), "s": (unsigned(S_BITS), ent.s)})
        # Rounding half up without a 2**(S-1) constant: for S >= 1,
        # floor((p + 2**(S-1)) / 2**S) == floor((floor(p / 2**(S-1)) + 1) / 2).
        t3, v3 = stage("q3", t2, {"prod": (signed(pbits), v2["sum"] * v2["m"]),
                                  "s0": (1, v2["s"] == 0),
                                  "sh": (unsigned(S_BITS), Mux(v2["s"] == 0, 0, v2["s"] - 1))})
        t4, v4 = stage("q4", t3, {"t": (signed(pbits), v3["prod"] >> v3["sh"]), "s0": (1, v3["s0"])})
        t5, v5 = stage("q5", t4, {"r": (signed(pbits), Mux(v4["s0"], v4["t"], (v4["t"] + 1) >> 1))})
        # Saturation by bit tests (OR/AND trees) instead of carry-chain compares (Fmax).
        rounded = v5["r"]
        neg = rounded[-1]
        u8 = Mux(neg, 0, Mux(rounded[8:].any(), 255, rounded[:8]))
        lo32, hi32 = -(1 << (OUT_BITS - 1)), (1 << (OUT_BITS - 1)) - 1
        top = rounded[OUT_BITS - 1:]
        fits = top.all() | ~top.any()
        s32 = Mux(fits, rounded[:OUT_BITS].as_signed(), Mux(neg, lo32, hi32))
        s32 = Mux(t5["relu"] & neg, 0, s32)
        q, v6 = stage("q6", t5, {"u8": (unsigned(8), u8), "s32": (signed(OUT_BITS), s32)})

        wr_hidden = padv & q["valid"] & ~q["final"]
        m.d.comb += [a1w.addr.eq(q["addr"]), a1w.data.eq(v6["u8"]), a1w.en.eq(wr_hidden & q["buf"])]
        with m.If(wr_hidden & ~q["buf"]):
            m.d.comb += [a0w.addr.eq(q["addr"]), a0w.data.eq(v6["u8"]), a0w.en.eq(1)]
        m.d.comb += [ofifo.w_data.eq(Cat(v6["s32"], q["end"])),
                     ofifo.w_en.eq(padv & q["valid"] & q["final"])]
        with m.If(padv & q["valid"] & q["lastlane"]):
            m.d.comb += pend_dec.eq(1)
        with m.If(padv & q["valid"] & q["end"]):
            m.d.comb += done.eq(1)
        with m.If(gen_err):
            m.d.comb += err_now.eq(1)
        return m
