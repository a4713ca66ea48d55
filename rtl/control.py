"""The engine's sequencers: which tile the fill builds next, and which term the MAC array
takes next (address generation / im2col)."""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .util import layer_const

__all__ = ["TileScheduler", "Controller", "running_max"]


def _tile_lanes(m, sel, tk, layers, lanes, prefix, registered=False):
    """``(tile tk is the layer's last, lanes of tile tk, those lanes - 1)`` of layer ``sel``
    (the last tile may be partial); the per-layer constants as ``layer_const`` makes them
    (``registered``: for a consumer whose layer only changes while it is idle).  The
    constants are the values compared, so no subtractor sits before the comparators."""
    def const(name, fn, shape):
        return layer_const(m, sel, layers, f"{prefix}_{name}", fn, shape, registered)
    tiles_m1 = const("tiles_m1", lambda ly: ly.tiles - 1, range(1 << 16))
    last = const("last_lanes", lambda ly: ly.last_tile_lanes(lanes), range(lanes + 1))
    last_m1 = const("last_lanes_m1", lambda ly: ly.last_tile_lanes(lanes) - 1, range(lanes))
    is_last = Signal(name=f"{prefix}_tile_last")
    m.d.comb += is_last.eq(tk == tiles_m1)
    return is_last, Mux(is_last, last, lanes), Mux(is_last, last_m1, lanes - 1)


def _check_layers(layers, lanes):
    if not layers:
        raise ValueError("layers must not be empty")
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise ValueError(f"lanes must be a positive integer, not {lanes!r}")



def running_max(first, x, run):
    """A max-pool window's maximum so far: ``x`` on the window's first term, else the larger
    of ``x`` and ``run`` (unsigned; the formal proof ``maxpool`` unrolls it over a window)."""
    return Mux(first | (x > run), x, run)

class TileScheduler(wiring.Component):
    """Walks (layer, tile) for the tile fill and tracks which of the two tile slots is full.

    The fill builds tile ``k + 1`` into one slot while the MAC array reads tile ``k`` from
    the other.  The first tile of an inference waits for ``start``; after that, a slot is
    filled as soon as the controller frees it.

    Parameters
    ----------
    layers : list of ``gen.plan.LayerPlan``
    lanes : int

    Members
    -------
    start : ``In(1)``
        An inference starts.
    fill_done : ``In(1)``
        The fill completed the tile it was given.
    clr : ``In(2)``
        Slots the controller has finished reading.
    go : ``Out(1)``
        Fill tile ``tile`` of layer ``layer`` (``lanes`` lanes) into ``slot``.
    layer, tile, lanes, slot : ``Out(...)``
    full : ``Out(2)``
        Slots holding a complete tile.

    Raises
    ------
    ValueError
        If ``layers`` is empty or ``lanes`` is not a positive integer.
    """

    def __init__(self, *, layers, lanes: int):
        _check_layers(layers, lanes)
        self._layers, self._lanes = list(layers), lanes
        super().__init__({
            "start": In(1), "fill_done": In(1), "clr": In(2),
            "go": Out(1),
            "layer": Out(range(max(2, len(layers)))),
            "tile": Out(range(max(2, max(ly.tiles for ly in layers)))),
            "lanes": Out(range(lanes + 1)),
            "slot": Out(1),
            "full": Out(2),
        })

    def elaborate(self, platform):
        m = Module()
        nl = len(self._layers)
        set_full = Signal(2)
        m.d.sync += self.full.eq((self.full | set_full) & ~self.clr)
        pending = Signal()                  # an inference started and its first tile is due
        active = Signal()                   # filling a tile
        with m.If(self.start):
            m.d.sync += pending.eq(1)
        tile_last, lanes, _ = _tile_lanes(m, self.layer, self.tile, self._layers, self._lanes, "g")
        m.d.comb += self.lanes.eq(lanes)
        first = (self.layer == 0) & (self.tile == 0)
        with m.If(~active & (pending | ~first) & ~self.full.bit_select(self.slot, 1)):
            m.d.comb += self.go.eq(1)
            m.d.sync += active.eq(1)
            with m.If(first):
                m.d.sync += pending.eq(0)
        with m.If(active & self.fill_done):
            m.d.sync += [active.eq(0), self.slot.eq(~self.slot)]
            m.d.comb += set_full.eq(Mux(self.slot, 0b10, 0b01))
            with m.If(tile_last):
                m.d.sync += self.tile.eq(0)
                m.d.sync += self.layer.eq(Mux(self.layer == nl - 1, 0, self.layer + 1))
            with m.Else():
                m.d.sync += self.tile.eq(self.tile + 1)
        return m


class Controller(wiring.Component):
    """Issues one term ``(ci, kh, kw)`` per cycle to the MAC array, per layer, tile and pixel.

    Stage S0 registers the term's addresses (activation address ``in_base + ci*H*W +
    (oy*s + kh - pad)*W + ox*s + kw - pad``, zero outside the image: padding; tile-buffer
    row) and issues the reads; S1 holds what the read data needs (inside, column, ``last``
    on the pixel's final term) and drives the MAC input.  A layer starts only when every
    result of the previous one has been written back.

    Depthwise layers and pools run lane-serially: per tile, lane ``n`` (channel ``tile *
    lanes + n``) runs all its pixels before lane ``n + 1``; only that lane's sum is used
    (with ``cpar > 1``: a group of ``cpar`` lanes, the channels of one activation word, runs
    at once, each lane on its own column).
    Pools need no tile: every weight is the MAC's unit code.  Average pools sum the window; a
    max pool keeps the window's running maximum here and gives the MAC one term per output.

    Parameters
    ----------
    layers : list of ``gen.plan.LayerPlan``
    lanes : int
    group : int
        Terms per tile-buffer row.
    wbits : int
        Bits per weight (or code) in the tile buffer.
    rmax : int
        Rows per tile-buffer slot.
    act_depth : int
        Words of the activation memory.
    mac_in : ``stream.Signature``
        The MAC array's input stream signature (``x``, ``w[lanes]``, ``last``).
    unit : int
        The MAC's code of weight +1 (pools).
    cpar : int
        Input channels per term (``Plan.cpar``, 1 by default): an activation word holds
        ``cpar`` channels of a pixel (``gen.buffers``) and a term takes all of them, with
        ``cpar`` weights per lane from the tile row; columns beyond ``cin`` give 0.
        Lane-serial layers run ``cpar`` lanes at once, the channels of one word: lane ``n``'s
        weights sit in column ``n % cpar`` (0 elsewhere; pools: the unit code there).
    zero : int
        The MAC's code of weight 0 (pools, with ``cpar > 1``).

    Members
    -------
    start : ``In(1)``
    full : ``In(2)``
        Tile slots holding a complete tile.
    clr : ``Out(2)``
        Tile slots this cycle's read finished with.
    act_rd : ``In(ReadPort.Signature(addr_width=ceil_log2(act_depth), shape=8 * cpar))``
        Activation read port (driven).
    t_rd : ``In(ReadPort.Signature(addr_width=ceil_log2(2 * rmax), shape=lanes*group*cpar*wbits))``
        Tile-buffer read port (driven).
    o : ``Out(mac_in)``
        Terms to the MAC array.
    row_done : ``In(1)``
        One result word was written back (from the post-processor).
    issuing : ``Out(1)``
        In the issue phase.
    lanes_used : ``Out(range(lanes * cpar + 1))``
        Lanes times columns of the term on ``o`` that hold channels (lane-serial layers: 1, or
        the group's lanes with ``cpar > 1``).

    Raises
    ------
    ValueError
        If ``layers`` is empty or ``lanes`` is not a positive integer.
    """

    def __init__(self, *, layers, lanes: int, group: int, wbits: int, rmax: int,
                 act_depth: int, mac_in, unit: int = 1, cpar: int = 1, zero: int = 0):
        _check_layers(layers, lanes)
        self._layers, self._lanes, self._group, self._wbits = list(layers), lanes, group, wbits
        self._cpar, self._zero = cpar, zero
        self._rmax, self._act_depth, self._unit = rmax, act_depth, unit
        super().__init__({
            "start": In(1), "full": In(2), "clr": Out(2),
            "act_rd": In(ReadPort.Signature(addr_width=max(1, ceil_log2(act_depth)),
                                            shape=8 * cpar)),
            "t_rd": In(ReadPort.Signature(addr_width=ceil_log2(2 * rmax),
                                          shape=unsigned(lanes * group * cpar * wbits))),
            "o": Out(mac_in),
            "row_done": In(1),
            "issuing": Out(1),
            "lanes_used": Out(range(lanes * cpar + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        layers, L, G, wbits = self._layers, self._lanes, self._group, self._wbits
        rmax, act_depth, nl, P = self._rmax, self._act_depth, len(layers), self._cpar
        full = self.full
        kmax = max(ly.k for ly in layers)
        serial = any(ly.depthwise for ly in layers)       # elaborate lane-serial logic

        def groups(n):
            """Groups of ``cpar`` in ``n`` items (channels or lanes)."""
            return -(-n // P)

        def last_group(n):
            """Items in the last of those groups."""
            return n - (groups(n) - 1) * P

        c_ly = Signal(range(max(2, nl)))
        c_tk = Signal(range(max(2, max(ly.tiles for ly in layers))))
        c_slot = Signal()
        c_oy = Signal(range(max(2, max(ly.h + 2 for ly in layers))))     # oy * stride
        c_ox = Signal(range(max(2, max(ly.w + 2 for ly in layers))))     # ox * stride
        c_ci = Signal(range(max(2, max(ly.cin for ly in layers))))
        c_kh = Signal(range(max(2, kmax)))
        c_kw = Signal(range(max(2, kmax)))
        c_lane = Signal(range(max(2, L)))     # lane-serial layers: the lane running
        c_row = Signal(range(max(2, rmax)))
        c_col = Signal(range(max(2, G)))
        c_ci_base = Signal(signed(24))
        c_ch_base = Signal(signed(24))        # lane-serial: channel * H * W
        c_oy_base = Signal(signed(24))        # (oy * stride - pad) * W
        c_kh_w = Signal(signed(24))           # kh * W
        c_phase = Signal(2)                   # 0 idle, 1 wait layer input ready, 2 issue
        pending = Signal(range(1 << 16))      # accumulations issued, not yet written back
        pend_inc = Signal()
        # The increment is registered first (it sits at the end of the issue logic's path);
        # the layer switch waits for it as well as for pending == 0.
        pend_inc_r = Signal()
        m.d.sync += [pend_inc_r.eq(pend_inc),
                     pending.eq(pending + pend_inc_r - self.row_done)]

        # Registered: c_ly changes only at a start (to 0, long before the first term) or on
        # a layer switch, which waits at least two cycles for the previous layer's results.
        cf = {name: layer_const(m, c_ly, layers, f"c_{name}", fn, shape, registered=True)
              for name, fn, shape in [
            ("h", lambda ly: ly.h, range(4096)),
            ("w", lambda ly: ly.w, range(4096)),
            ("hw", lambda ly: ly.h * ly.w, range(1 << 22)),
            ("pad", lambda ly: ly.pad, range(2)),
            ("s", lambda ly: ly.stride, range(16)),
            ("sw", lambda ly: ly.stride * ly.w, range(1 << 16)),
            ("in_base", lambda ly: ly.in_base, range(1 << 20)),
            ("serial", lambda ly: int(ly.depthwise), 1),
            ("unit", lambda ly: int(ly.pool), 1),
            ("maxp", lambda ly: int(ly.kind == "maxpool"), 1),
            # last index of each counter, so that "is last" is one equality test
            ("k_m1", lambda ly: ly.k - 1, range(max(2, kmax))),
            ("cin_m1", lambda ly: groups(ly.cin) - 1, range(1 << 16)),    # channel groups
            ("oy_last", lambda ly: (ly.oh - 1) * ly.stride, range(4096)),
            ("ox_last", lambda ly: (ly.ow - 1) * ly.stride, range(4096)),
        ]}
        # (registered, as cf: the layer's tile count sat on the path from c_ly through the
        # last-tile / last-lane compares to the phase register)
        tile_last, c_lanes, c_lanes_m1 = _tile_lanes(m, c_ly, c_tk, layers, L, "c", registered=True)
        ser = cf["serial"] if serial else 0

        iy = Signal(signed(16))
        ix = Signal(signed(16))
        m.d.comb += [iy.eq(c_oy + c_kh - cf["pad"]), ix.eq(c_ox + c_kw - cf["pad"])]
        inside = (iy >= 0) & (iy < cf["h"]) & (ix >= 0) & (ix < cf["w"])
        x_addr = Signal(signed(26))
        m.d.comb += x_addr.eq(cf["in_base"] + c_ch_base + c_ci_base + c_oy_base + c_kh_w + c_ox
                              + c_kw - cf["pad"])
        t_last_k = (c_kw == cf["k_m1"]) & (c_kh == cf["k_m1"])
        t_last = t_last_k & (c_ci == cf["cin_m1"])
        p_last = (c_ox == cf["ox_last"]) & (c_oy == cf["oy_last"])
        lane_last = Signal()
        if serial and P > 1:
            # cpar > 1: lane-serial layers run a group of cpar lanes (the channels of one
            # activation word) at a time; c_lane counts the tile's groups
            grp_m1 = Signal(range(max(2, L // P)))
            last_grp_m1 = layer_const(m, c_ly, layers, "c_last_grp_m1",
                                      lambda ly: groups(ly.last_tile_lanes(L)) - 1,
                                      range(max(2, L // P)), registered=True)
            last_grp_lanes = layer_const(m, c_ly, layers, "c_last_grp_lanes",
                                         lambda ly: last_group(ly.last_tile_lanes(L)),
                                         range(P + 1), registered=True)
            m.d.comb += [grp_m1.eq(Mux(tile_last, last_grp_m1, L // P - 1)),
                         lane_last.eq(Mux(ser, c_lane == grp_m1, 1))]
        else:
            m.d.comb += lane_last.eq(Mux(ser, c_lane == c_lanes_m1, 1) if serial else 1)
        pad_w = layer_const(m, c_ly, layers, "c_pad_w", lambda ly: -ly.pad * ly.w, signed(16),
                            registered=True)                                 # at oy = 0

        s1_valid = Signal()
        s1_inside, s1_last, s1_col = Signal(), Signal(), Signal(range(max(2, G)))
        s1_lanes = Signal(range(L * P + 1))
        s1_unit, s1_first, s1_max = Signal(), Signal(), Signal()
        adv = Signal()
        m.d.comb += adv.eq(~s1_valid | self.o.ready)

        # Stage S0 registers the term's addresses (the counters' sums and compares stay out
        # of the memory-address path); S0 issues the reads; S1 holds what the data needs.
        have_tile = full.bit_select(c_slot, 1) | cf["unit"]
        can_issue = (c_phase == 2) & have_tile
        s0_valid, s0_inside, s0_last, s0_unit = Signal(), Signal(), Signal(), Signal()
        s0_first, s0_max = Signal(), Signal()
        s0_col = Signal.like(s1_col)
        s0_lanes = Signal.like(s1_lanes)
        s0_xaddr = Signal(range(max(2, act_depth)))
        # cpar > 1: the columns that hold channels (the last group may be partial; a
        # lane-serial layer's group uses every column)
        all_cols = (1 << P) - 1
        cols_last = layer_const(m, c_ly, layers, "c_cols_last",
                                lambda ly: (1 << last_group(ly.cin)) - 1, P, registered=True)
        ncols_last = layer_const(m, c_ly, layers, "c_ncols_last",
                                 lambda ly: last_group(ly.cin), range(P + 1), registered=True)
        s0_cols, s1_cols = Signal(P), Signal(P)
        # lanes x columns in use: a lane-serial group's lanes, else the tile's lanes x columns
        if serial and P > 1:
            used = Mux(ser, Mux(tile_last & lane_last, last_grp_lanes, P),
                       c_lanes * Mux(c_ci == cf["cin_m1"], ncols_last, P))
        else:
            used = Mux(ser, 1, c_lanes * Mux(c_ci == cf["cin_m1"], ncols_last, P))
        s0_taddr = Signal(range(2 * rmax))
        s0_free = Signal(2)                     # the tile slot this (last) read frees
        # The tile's last term frees its slot.  Not gated by `adv`: S0 takes it only on `adv`
        # (the stall path from the MAC array's ready stays off these compares; Fmax).
        c_free = Signal(2)
        m.d.comb += c_free.eq(Mux((c_phase == 2) & have_tile & t_last & p_last & lane_last
                                  & ~cf["unit"], Mux(c_slot, 0b10, 0b01), 0))
        with m.If(adv):
            m.d.sync += [s0_valid.eq(can_issue), s0_inside.eq(inside), s0_last.eq(t_last),
                         s0_col.eq(c_col), s0_lanes.eq(used),
                         s0_cols.eq(Mux((c_ci == cf["cin_m1"]) & ~ser, cols_last, all_cols)),
                         s0_unit.eq(cf["unit"]), s0_max.eq(cf["maxp"]),
                         s0_first.eq((c_kh == 0) & (c_kw == 0)),
                         s0_xaddr.eq(Mux(inside, x_addr, 0)),
                         s0_taddr.eq(c_slot * rmax + c_row), s0_free.eq(c_free)]
        m.d.comb += self.clr.eq(Mux(adv, s0_free, 0))
        # (a term in the padding or an idle stage reads nothing: its data is never used, and a
        # banked activation memory sees no stray reads)
        m.d.comb += [self.act_rd.addr.eq(s0_xaddr), self.act_rd.en.eq(adv & s0_valid & s0_inside),
                     self.t_rd.addr.eq(s0_taddr), self.t_rd.en.eq(adv)]

        with m.If(adv):
            m.d.sync += [s1_valid.eq(s0_valid), s1_inside.eq(s0_inside), s1_last.eq(s0_last),
                         s1_col.eq(s0_col), s1_lanes.eq(s0_lanes), s1_unit.eq(s0_unit),
                         s1_first.eq(s0_first), s1_max.eq(s0_max), s1_cols.eq(s0_cols)]
        m.d.comb += self.issuing.eq(c_phase == 2)

        # MAC input from the read data.
        row_words = data.ArrayLayout(data.ArrayLayout(unsigned(wbits), G * P), L)
        trow = row_words(self.t_rd.data)
        mp = self.o.payload
        rd = self.act_rd.data
        if P > 1:
            # the word's channels (columns past the layer's input channels give 0)
            xs = [Mux(s1_inside & s1_cols[j], rd[8 * j:8 * j + 8], 0) for j in range(P)]
        else:
            xs = [Mux(s1_inside, rd, 0)]
        mx = [mp.x[j] for j in range(P)] if P > 1 else [mp.x]
        if any(ly.kind == "maxpool" for ly in layers):
            # Max pooling (lane-serial, one channel at a time; cpar > 1: one per column): the
            # window's running maximum is kept here and only the window's last term goes to
            # the MAC, as max * 1.
            runs = [Signal(8, name=f"run{j}") for j in range(P)]
            x_max = [running_max(s1_first, x, r) for x, r in zip(xs, runs)]
            with m.If(adv & s1_valid):
                m.d.sync += [r.eq(v) for r, v in zip(runs, x_max)]
            m.d.comb += [self.o.valid.eq(s1_valid & (~s1_max | s1_last)),
                         *[t.eq(Mux(s1_max, v, x)) for t, v, x in zip(mx, x_max, xs)]]
        else:
            m.d.comb += [self.o.valid.eq(s1_valid), *[t.eq(x) for t, x in zip(mx, xs)]]
        m.d.comb += [mp.last.eq(s1_last), self.lanes_used.eq(s1_lanes)]
        for n in range(L):
            if P > 1:
                # a pool's lane n takes its channel's column (n % cpar) times 1, the others 0
                w = trow[n].as_value()
                if any(ly.pool for ly in layers):
                    unit = sum((self._unit if j == n % P else self._zero) << (j * wbits)
                               for j in range(P))
                    w = Mux(s1_unit, Const(unit, P * wbits), w)
                m.d.comb += mp.w[n].eq(w)
                continue
            w = trow[n].as_value().word_select(s1_col, wbits) if G > 1 else trow[n][0]
            m.d.comb += mp.w[n].eq(Mux(s1_unit, self._unit, w) if any(ly.pool for ly in layers)
                                   else w)

        # Counter stepping.
        with m.Switch(c_phase):
            with m.Case(0):
                with m.If(self.start):
                    m.d.sync += [c_phase.eq(2), c_ly.eq(0)]
            with m.Case(1):
                with m.If((pending == 0) & ~pend_inc_r):
                    m.d.sync += c_phase.eq(2)
            with m.Case(2):
                with m.If(adv & have_tile):
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
                        with m.If(c_ox == cf["ox_last"]):
                            m.d.sync += c_ox.eq(0)
                            with m.If(c_oy == cf["oy_last"]):
                                m.d.sync += [c_oy.eq(0), c_oy_base.eq(pad_w)]
                            with m.Else():
                                m.d.sync += [c_oy.eq(c_oy + cf["s"]),
                                             c_oy_base.eq(c_oy_base + cf["sw"])]
                        with m.Else():
                            m.d.sync += c_ox.eq(c_ox + cf["s"])
                        with m.If(p_last & ser):
                            m.d.sync += c_ch_base.eq(c_ch_base + cf["hw"])
                            with m.If(~lane_last):
                                m.d.sync += c_lane.eq(c_lane + 1)
                            with m.Else():
                                m.d.sync += c_lane.eq(0)
                        with m.If(p_last & lane_last):
                            with m.If(~cf["unit"]):
                                m.d.sync += c_slot.eq(~c_slot)
                            with m.If(tile_last):
                                m.d.sync += [c_tk.eq(0), c_ch_base.eq(0)]
                                with m.If(c_ly == nl - 1):
                                    m.d.sync += [c_phase.eq(0), c_ly.eq(0)]
                                with m.Else():
                                    m.d.sync += [c_phase.eq(1), c_ly.eq(c_ly + 1)]
                            with m.Else():
                                m.d.sync += c_tk.eq(c_tk + 1)
        # (-pad) * W of the layer about to run, set while not issuing.
        with m.If(c_phase != 2):
            m.d.sync += c_oy_base.eq(pad_w)
        return m
