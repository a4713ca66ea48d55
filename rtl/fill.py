"""Tile fills: the per-scheme front end of the engine, one component per way of turning the
weight memory into one tile (``lanes`` output channels of one layer) of MAC-ready weights.

All fills share :class:`Fill`'s signature, so the engine builds whichever the scheme names
(``Scheme.fill``, looked up in :data:`FILLS`) and connects it the same way:

* command in: ``go`` (one cycle: fill tile ``tile`` of layer ``layer``, ``lanes`` lanes wide,
  into tile-buffer slot ``slot``) and ``start`` (an inference starts);
* out: ``t_wr``, the tile-buffer write port (rows of ``lanes x group`` weights, with a write
  enable per weight), ``done`` (the tile is complete), ``wbits`` (weight-memory bits read this
  cycle), ``w_take`` (the read on ``w_rd`` this cycle is one the fill uses: the next word of
  its read trace, ``Scheme.weight_trace``) and ``err`` (a bad code was seen);
* ``w_rd``, ``a_rd``, ``c_rd``: read ports of the weight, aux and coefficient memories.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..gen.memmap import MEM_AUX, MEM_COEF, MEM_WEIGHT
from ..gen.schemes.mlg import SCHEME as MLG
from ..gen.schemes.mlg import kernel_codes
from ..gen.schemes.smartdeal import basis_fields
from .util import layer_const
from .weightgen import SdWeightGen

__all__ = ["Fill", "CopyFill", "RebuildFill", "GenerateFill", "FILLS"]


class Fill(wiring.Component):
    """The shared tile-fill interface (see the module docstring).

    Parameters
    ----------
    plan : ``gen.plan.Plan``
        The compiled plan (layer table, image widths, the scheme's parameters).
    rmax : int
        Rows per tile-buffer slot (slot ``s`` holds rows ``s * rmax ..``).
    depths : dict
        Depth of each memory (``gen.memmap`` id -> words), for the read-port address widths.

    Members
    -------
    start, go : ``In(1)``
    layer, tile, lanes, slot : ``In(...)``, the tile to fill
    done, err, w_take : ``Out(1)``
    wbits : ``Out(16)``
    t_wr : ``In(WritePort.Signature(...))``, the tile-buffer write port (driven by the fill)
    w_rd, a_rd, c_rd : ``In(ReadPort.Signature(...))``, memory read ports (driven by the fill)

    Raises
    ------
    ValueError
        If ``rmax`` is not a positive integer.
    """

    def __init__(self, plan, *, rmax: int, depths: dict):
        if not isinstance(rmax, int) or rmax < 1:
            raise ValueError(f"Tile rows must be a positive integer, not {rmax!r}")
        self._plan, self._rmax = plan, rmax
        L, G, wb = plan.lanes, plan.group, plan.tile_weight_bits
        nl = len(plan.layers)
        super().__init__({
            "start": In(1),
            "go": In(1),
            "layer": In(range(max(2, nl))),
            "tile": In(range(max(2, max(ly.tiles for ly in plan.layers)))),
            "lanes": In(range(L + 1)),
            "slot": In(1),
            "done": Out(1),
            "wbits": Out(16),
            "w_take": Out(1),
            "err": Out(1),
            "t_wr": In(WritePort.Signature(addr_width=ceil_log2(2 * rmax),
                                           shape=unsigned(L * G * plan.cpar * wb), granularity=wb)),
            "w_rd": In(ReadPort.Signature(addr_width=ceil_log2(depths[MEM_WEIGHT]),
                                          shape=unsigned(plan.weight_word_bits))),
            "a_rd": In(ReadPort.Signature(addr_width=ceil_log2(depths[MEM_AUX]),
                                          shape=unsigned(plan.aux_word_bits))),
            "c_rd": In(ReadPort.Signature(addr_width=ceil_log2(depths[MEM_COEF]),
                                          shape=unsigned(plan.coef_word_bits))),
        })


class CopyFill(Fill):
    """ASM: the tile's code words are copied from the weight memory (one word per term).
    """

    def elaborate(self, platform):
        m = Module()
        plan, rmax = self._plan, self._rmax

        def lc_(name, fn, shape):
            return layer_const(m, self.layer, plan.layers, name, fn, shape)

        terms = lc_("g_terms", lambda ly: ly.steps, range(1 << 16))      # one word per step
        base = lc_("g_wbase", lambda ly: ly.wbase, range(1 << 24))
        r = Signal(range(rmax + 1))
        addr = Signal(range(1 << 24))
        active = Signal()
        v1 = Signal()
        r1 = Signal(range(rmax + 1))
        m.d.comb += [self.w_rd.addr.eq(addr), self.w_rd.en.eq(1)]
        # A layer's tiles are filled in order, each ``terms`` words after the one before: the
        # start address is an add, not ``base + tile * terms`` (a multiplier on this path; Fmax).
        start, tile_start = Signal(range(1 << 24)), Signal(range(1 << 24))
        m.d.comb += start.eq(Mux(self.tile == 0, base, tile_start + terms))
        with m.If(self.go):
            m.d.sync += [active.eq(1), r.eq(0), addr.eq(start), tile_start.eq(start)]
        with m.Elif(active):
            m.d.sync += [r.eq(r + 1), addr.eq(addr + 1)]
            with m.If(r == terms - 1):
                m.d.sync += active.eq(0)
        m.d.sync += [v1.eq(active), r1.eq(r)]
        m.d.comb += [self.t_wr.addr.eq(self.slot * rmax + r1), self.t_wr.data.eq(self.w_rd.data),
                     self.t_wr.en.eq(Mux(v1, (1 << len(self.t_wr.en)) - 1, 0))]      # every lane
        m.d.comb += self.done.eq(v1 & (r1 == terms - 1))
        m.d.comb += [self.wbits.eq(Mux(active, plan.weight_word_bits, 0)),
                     self.w_take.eq(active)]
        return m


class RebuildFill(Fill):
    """SmartDeal: the coefficient stream and the basis entries of every layer are read
once per inference, in (filter, chunk) order, through the power-of-2 decoder and the
rebuild engine; each rebuilt kernel row (3 int8 weights) is written into its lane.  A basis
entry with ``rep > 0`` (a depthwise layer's shared basis) goes to the next ``rep`` filters
too: read once more from the same address, counted once.
    """

    def elaborate(self, platform):
        m = Module()
        plan, rmax = self._plan, self._rmax

        def lc_(name, fn, shape):
            return layer_const(m, self.layer, plan.layers, name, fn, shape)

        L = plan.lanes
        gen = SdWeightGen(e_min=plan.params["e_min"], e_max=plan.params["e_max"], word_bits=plan.weight_word_bits,
                          basis_bits=8, requant=True)
        m.submodules.sdgen = gen
        # Coefficient reader: words 0..n-1 of the weight memory, once per inference.
        n_words = len(plan.weight_words)
        n_basis = len(plan.aux_words)
        takes = []
        rep_bits = plan.params.get("rep_bits", 0)
        rep_field = basis_fields(rep_bits=rep_bits)
        for rd, n, port, bits in ((self.w_rd, n_words, gen.i_coef, plan.weight_word_bits),
                                  (self.a_rd, n_basis, gen.i_basis, plan.aux_word_bits)):
            addr = Signal(range(n + 1))
            go = Signal()
            valid = Signal()
            with m.If(self.start):
                m.d.sync += go.eq(1)
            # A read issued at `addr` lands in rd.data next cycle; `valid` holds it until taken.
            can = ~valid | port.ready
            # A basis entry shared by `rep` more filters (depthwise) is offered again: the
            # same address is read once more and the stream stays valid.
            again = Signal(name=f"again_{len(takes)}")
            if port is gen.i_basis and rep_bits:
                sent = Signal(rep_bits, name="rep_sent")
                rep = rd.data[rep_field.offset("rep"):][:rep_bits]
                m.d.comb += again.eq(valid & (sent < rep))
                with m.If(valid & port.ready):
                    m.d.sync += sent.eq(Mux(again, sent + 1, 0))
            m.d.comb += [rd.addr.eq(Mux(again, addr - 1, addr)), rd.en.eq(can)]
            if rd is self.w_rd:
                m.d.comb += self.w_take.eq(can & go & (addr < n))
            with m.If(can & ~again):
                m.d.sync += valid.eq(go & (addr < n))
                with m.If(go & (addr < n)):
                    m.d.sync += addr.eq(addr + 1)
                with m.If(go & (addr == n)):
                    m.d.sync += [addr.eq(0), go.eq(0)]
            m.d.comb += [port.valid.eq(valid), port.payload.eq(rd.data)]
            # bits read from memory: a repeated entry counts once
            takes.append(Mux(port.valid & port.ready & ~again, bits, 0))
        m.d.comb += self.wbits.eq(takes[0] + takes[1])

        chunks = lc_("g_chunks", lambda ly: ly.extra["chunks"], range(1 << 12))
        active = Signal()
        lane = Signal(range(max(2, L)))
        chunk = Signal(range(1 << 12))
        row = Signal(range(rmax + 1))
        with m.If(self.go):
            m.d.sync += [active.eq(1), lane.eq(0), chunk.eq(0), row.eq(0)]
        o = gen.o
        m.d.comb += o.ready.eq(active)
        take = o.valid & active
        m.d.comb += [self.t_wr.addr.eq(self.slot * rmax + row),
                     self.t_wr.data.eq(o.payload.w.as_value().replicate(L)),
                     self.t_wr.en.eq(Mux(take, Const(0b111, 3 * L) << (lane * 3), 0))]
        with m.If(take):
            m.d.sync += row.eq(row + 1)
            with m.If(o.payload.err):
                m.d.comb += self.err.eq(1)
            with m.If(o.payload.last):
                with m.If(chunk == chunks - 1):
                    m.d.sync += [chunk.eq(0), row.eq(0), lane.eq(lane + 1)]
                    with m.If(lane == self.lanes - 1):
                        m.d.sync += active.eq(0)
                        m.d.comb += self.done.eq(1)
                with m.Else():
                    m.d.sync += chunk.eq(chunk + 1)
        return m


class GenerateFill(Fill):
    """MLG: per tile, V (one word per ``o``: the tile's lanes) is read into a small cache, and
    on a layer's first tile so are the level-1 basis kernels ``Wb[o]`` (kept for the layer's
    other tiles); then for each input channel ``ci`` and each ``o`` one coefficient word
    (``U[o, ci]``, or the level-1-bypassed basis row ``Wb[o, ci]``) is taken and held for
    ``k x k`` cycles, one kernel position ``t`` each: ``w1 = sum_b odd(U_b) odd(Wb[o, b, t])``
    and every lane accumulates ``odd(V[lane, o]) * w1`` into its accumulator of position
    ``t`` (a ``k x k``-deep rotating register).  During the last ``o`` each cycle's sums are
    the lanes' finished weights of term ``ci * k * k + t``: one tile-buffer row.  With level
    2 every tile walks the same ``cin x Bo`` coefficient words: the first tile reads them from
    the memories and stores them in the coefficient cache, later tiles read the cache
    (``Mlg.reuse``), so every image word is read once per inference.  Without level 2, ``o``
    walks the tile's own output channels and lane ``o - tile start`` takes ``w1`` as it is.
    """

    def elaborate(self, platform):
        m = Module()
        plan, rmax = self._plan, self._rmax

        def lc_(name, fn, shape):
            return layer_const(m, self.layer, plan.layers, name, fn, shape)

        L, wb = plan.lanes, plan.tile_weight_bits
        p = plan.params
        Bi, qb, qu, qv = p["Bi"], p["qb"], p["qu"], p["qv"]
        K2 = kernel_codes(plan)                            # codes per basis kernel (1 or 9)
        bo_max = max(ly.extra["Bo"] for ly in plan.layers)
        lc = {name: lc_(f"g_mlg_{name}", fn, shape) for name, fn, shape in [
            ("bo", lambda ly: ly.extra["Bo"], range(1 << 12)),
            ("l1", lambda ly: int(ly.extra["level1"]), 1),
            ("l2", lambda ly: int(ly.extra["level2"]), 1),
            ("k9", lambda ly: int(ly.k == 3), 1),
            ("cin", lambda ly: ly.cin, range(1 << 16)),
            ("wbase", lambda ly: ly.wbase, range(1 << 24)),
            ("cbase", lambda ly: ly.extra["cbase"], range(1 << 24)),
            ("vbase", lambda ly: ly.extra["vbase"], range(1 << 24)),
            ("per_word", lambda ly: ly.extra["per_word"], range(1 << 12)),
            ("k2qb", lambda ly: ly.k * ly.k * qb, range(1 << 12)),
            ("tile_words", lambda ly: ly.extra["tile_words"], range(1 << 20)),
            ("reuse", lambda ly: int(MLG.reuse(plan, ly)), 1),
        ]}
        caches = MLG.fill_caches(plan)
        c_width, c_depth = caches["coef"]
        n_o = Mux(lc["l2"], lc["bo"], self.lanes)            # o per input channel
        # Level-1-bypassed basis rows are packed per_word to a weight-memory word, in the
        # order the fill walks them; a word is fetched once, when its first row is due.
        p_addr = Signal(range(1 << 24), name="mlg_row_word")
        p_field = Signal(range(1 << 12), name="mlg_row_field")
        s_field = Signal.like(p_field)

        m.submodules.wbc = wbc = Memory(shape=unsigned(caches["basis"][0]), depth=caches["basis"][1], init=[])
        m.submodules.vc = vc = Memory(shape=unsigned(caches["v"][0]), depth=caches["v"][1], init=[])
        wr_, ar_, cr_ = self.w_rd, self.a_rd, self.c_rd
        wbc_w, vc_w = wbc.write_port(), vc.write_port()
        wbc_r = wbc.read_port(transparent_for=(wbc_w,))
        vc_r = vc.read_port(transparent_for=(vc_w,))

        phase = Signal(2)                    # 0 idle, 1 load caches, 2 generate
        o = Signal(range(max(2, bo_max + 1)))
        ci = Signal(range(max(2, max(ly.cin for ly in plan.layers))))
        t = Signal(range(max(2, K2)), name="mlg_t")     # the kernel position
        t_last = Signal(name="mlg_t_last")              # the layer's last kernel position
        m.d.comb += t_last.eq(Mux(lc["k9"], t == K2 - 1, 1))       # (K2 = 1: no 3x3 layer)
        # stage-1 flags (the reads issued last cycle)
        s_load, s_gen, s_first, s_last = Signal(), Signal(), Signal(), Signal()
        s_o, s_ci, s_t, s_t_last = Signal.like(o), Signal.like(ci), Signal.like(t), Signal()

        m.d.comb += [
            ar_.en.eq(1), cr_.en.eq(1), wbc_r.en.eq(1), vc_r.en.eq(1),
            vc_r.addr.eq(o),
        ]
        og = Signal(range(1 << 16), name="mlg_og")      # the global o (tile channel without level 2)
        m.d.comb += [og.eq(Mux(lc["l2"], o, self.tile * L + o)), wbc_r.addr.eq(Mux(phase == 2, og, o))]
        first = Signal(name="mlg_first_tile")
        cached = Signal(name="mlg_cached")      # this tile takes its (ci, o) words from the cache
        load_wb = Signal(name="mlg_load_wb")    # this tile loads the basis kernels
        m.d.comb += [first.eq(self.tile == 0), cached.eq(lc["reuse"] & ~first),
                     load_wb.eq(lc["l1"] & first)]
        need_load = lc["l2"] | load_wb
        s_load_wb, s_cached, s_store = Signal(), Signal(), Signal()
        cidx = Signal(range(max(2, c_depth)), name="mlg_cidx")   # ci * Bo + o
        s_cidx = Signal.like(cidx)
        w_row = Signal(range(max(2, rmax)), name="mlg_row")       # the next tile row written
        with m.If(phase != 2):
            m.d.comb += wr_.en.eq(1)
        with m.If(self.go):
            m.d.sync += [o.eq(0), ci.eq(0), t.eq(0), phase.eq(Mux(need_load, 1, 2)),
                         p_addr.eq(lc["wbase"] + Mux(lc["l2"], 0, self.tile * lc["tile_words"])),
                         p_field.eq(0), cidx.eq(0), w_row.eq(0)]
        m.d.sync += [s_load.eq(0), s_gen.eq(0)]
        with m.Switch(phase):
            with m.Case(1):
                # Wb[o] (level 1) from the weight memory, V[tile, o] from the aux memory.
                m.d.comb += [wr_.addr.eq(lc["wbase"] + o), ar_.addr.eq(lc["vbase"] + self.tile * lc["bo"] + o)]
                m.d.sync += [s_load.eq(1), s_load_wb.eq(load_wb), s_o.eq(o)]
                m.d.comb += self.w_take.eq(load_wb)
                m.d.comb += self.wbits.eq(Mux(load_wb, plan.weight_word_bits, 0)
                                         + Mux(lc["l2"], plan.aux_word_bits, 0))
                with m.If(o == lc["bo"] - 1):
                    m.d.sync += [o.eq(0), phase.eq(2)]
                with m.Else():
                    m.d.sync += o.eq(o + 1)
            with m.Case(2):
                # One coefficient word per (ci, o): U[o, ci] (level 1) or Wb[o, ci], read (and
                # counted) at t = 0 and held over the kernel positions.
                t0 = t == 0
                fetch = (p_field == 0) & ~cached & t0      # a basis-row word is due
                m.d.comb += [cr_.addr.eq(lc["cbase"] + ci * lc["bo"] + og), wr_.addr.eq(p_addr)]
                with m.If(~lc["l1"]):
                    m.d.comb += [wr_.en.eq(fetch), self.w_take.eq(fetch)]
                    with m.If(t_last):
                        with m.If(p_field == lc["per_word"] - 1):
                            m.d.sync += [p_field.eq(0), p_addr.eq(p_addr + 1)]
                        with m.Else():
                            m.d.sync += p_field.eq(p_field + 1)
                m.d.comb += self.wbits.eq(Mux(cached | ~t0, 0, Mux(
                    lc["l1"], plan.coef_word_bits, Mux(p_field == 0, plan.weight_word_bits, 0))))
                m.d.sync += [s_cidx.eq(cidx), s_cached.eq(cached),
                             s_store.eq(lc["reuse"] & first & t0)]
                m.d.sync += [s_gen.eq(1), s_o.eq(o), s_ci.eq(ci), s_t.eq(t), s_t_last.eq(t_last),
                             s_first.eq(o == 0), s_last.eq(o == n_o - 1), s_field.eq(p_field)]
                with m.If(~t_last):
                    m.d.sync += t.eq(t + 1)
                with m.Else():
                    m.d.sync += [t.eq(0), cidx.eq(cidx + 1)]
                    with m.If(o == n_o - 1):
                        m.d.sync += o.eq(0)
                        with m.If(ci == lc["cin"] - 1):
                            m.d.sync += [ci.eq(0), phase.eq(0)]
                        with m.Else():
                            m.d.sync += ci.eq(ci + 1)
                    with m.Else():
                        m.d.sync += o.eq(o + 1)
        # cache writes (load phase, data of last cycle's reads)
        m.d.comb += [wbc_w.addr.eq(s_o), wbc_w.data.eq(wr_.data), wbc_w.en.eq(s_load & s_load_wb),
                     vc_w.addr.eq(s_o), vc_w.data.eq(ar_.data), vc_w.en.eq(s_load)]

        # stage 2: level 1 at position s_t, level 2 accumulate, tile row write on the last o.
        def odd(v, q):
            """Stored code -> odd integer 2c - (2**q - 1)."""
            return v * 2 - ((1 << q) - 1)

        wbk = wbc_r.data
        row_bits = Signal(plan.weight_word_bits, name="mlg_row_bits")
        m.d.comb += row_bits.eq(wr_.data >> (s_field * lc["k2qb"]))
        # the (ci, o) word: from the memories, or (later tiles of a reusing layer) the cache
        u_src = Signal(max(plan.coef_word_bits, c_width), name="mlg_u")
        r_src = Signal(plan.weight_word_bits, name="mlg_row")
        if c_depth:
            m.submodules.cc = cc = Memory(shape=unsigned(c_width), depth=c_depth, init=[])
            cc_w, cc_r = cc.write_port(), cc.read_port()
            m.d.comb += [cc_r.en.eq(1), cc_r.addr.eq(cidx),
                         cc_w.addr.eq(s_cidx), cc_w.en.eq(s_gen & s_store),
                         cc_w.data.eq(Mux(lc["l1"], cr_.data, row_bits)),
                         u_src.eq(Mux(s_cached, cc_r.data, cr_.data)),
                         r_src.eq(Mux(s_cached, cc_r.data, row_bits))]
        else:
            m.d.comb += [u_src.eq(cr_.data), r_src.eq(row_bits)]

        def code_at(word, b):
            """Code ``s_t`` of the ``b``-th run of ``K2`` codes of ``word``."""
            run = word[b * K2 * qb:(b + 1) * K2 * qb]
            return run.word_select(s_t, qb) if K2 > 1 else run

        l1 = sum(odd(u_src[b * qu:(b + 1) * qu], qu) * odd(code_at(wbk, b), qb) for b in range(Bi))
        w1 = Signal(signed(p["w1_bits"]), name="mlg_w1")
        m.d.comb += w1.eq(Mux(lc["l1"], l1, odd(code_at(r_src, 0), qb)))
        # per lane, the partial sums of the K2 kernel positions; position s_t's is in front
        acc = [[Signal(signed(wb), name=f"mlg_acc{n}_{j}") for j in range(K2)] for n in range(L)]
        new = [Signal(signed(wb), name=f"mlg_new{n}") for n in range(L)]
        for n in range(L):
            v = odd(vc_r.data[n * qv:(n + 1) * qv], qv)
            term = Mux(lc["l2"], v * w1, Mux(s_o == n, w1, 0))
            m.d.comb += new[n].eq(Mux(s_first, 0, acc[n][0]) + term)
            with m.If(s_gen):
                with m.If(lc["k9"]):                        # rotate by one position
                    m.d.sync += [acc[n][j].eq(acc[n][j + 1]) for j in range(K2 - 1)]
                    m.d.sync += acc[n][K2 - 1].eq(new[n])
                with m.Else():
                    m.d.sync += acc[n][0].eq(new[n])
        # the last o: this cycle's sums are the tile row of term ci * k * k + t, in order
        P = plan.cpar
        if P > 1:
            # cpar channels per row: channel ci's weights go to column ci % cpar of rows
            # (ci // cpar) * k * k + t; the next channel of a group starts its rows again
            # (a depthwise layer's lanes run in groups of cpar, each on its channel's column:
            # lane n's weights in column n % cpar and zeros in the others)
            col = s_ci[:ceil_log2(P)]
            dw = lc_("g_mlg_dw", lambda ly: int(ly.depthwise), 1)
            zero = Const(0, wb)
            m.d.comb += [self.t_wr.addr.eq(self.slot * rmax + w_row),
                         self.t_wr.data.eq(Mux(dw, Cat(*[new[n] if j == n % P else zero
                                                         for n in range(L) for j in range(P)]),
                                               Cat(*[new[n] for n in range(L) for _ in range(P)])))]
            lane_cols = sum(1 << (n * P) for n in range(L))
            with m.If(s_gen & s_last):
                m.d.comb += self.t_wr.en.eq(Mux(dw, (1 << (L * P)) - 1,
                                                Const(lane_cols, L * P) << col))
                with m.If(s_t_last & (col != P - 1)):
                    m.d.sync += w_row.eq(w_row - Mux(lc["k9"], K2 - 1, 0))
                with m.Else():
                    m.d.sync += w_row.eq(w_row + 1)
                with m.If((s_ci == lc["cin"] - 1) & s_t_last):
                    m.d.comb += self.done.eq(1)
            return m
        m.d.comb += [self.t_wr.addr.eq(self.slot * rmax + w_row), self.t_wr.data.eq(Cat(*new))]
        with m.If(s_gen & s_last):
            m.d.comb += self.t_wr.en.eq((1 << L) - 1)
            m.d.sync += w_row.eq(w_row + 1)
            with m.If((s_ci == lc["cin"] - 1) & s_t_last):
                m.d.comb += self.done.eq(1)
        return m


#: Fill component by ``Scheme.fill`` name.
FILLS = {"copy": CopyFill, "rebuild": RebuildFill, "generate": GenerateFill}
