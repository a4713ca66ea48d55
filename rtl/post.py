"""The engine's post-processor: MAC results -> requantised activations or final outputs."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..gen.memmap import BIAS_BITS, M_BITS, OUT_BITS, POST, POST_BITS, S_BITS
from .layouts import struct_layout
from .util import layer_const
from .weightmem import post_ports

__all__ = ["PostProcessor", "post_layout", "output_layout", "round_last", "saturate",
           "shift_split"]


# The requantisation's arithmetic after the products, one function per pipeline step (the
# formal proofs ``requant`` / ``avgpool_divide`` compose the same functions).
# Rounding half up without a 2**(S-1) constant: for S >= 1,
# floor((p + 2**(S-1)) / 2**S) == floor((floor(p / 2**(S-1)) + 1) / 2).

def shift_split(s):
    """``(s == 0, S - 1 or 0)``: the first shift and whether there is a rounding step."""
    return s == 0, Mux(s == 0, 0, s - 1)


def round_last(t, s0):
    """``t = p >> (S - 1)`` -> ``(p + 2**(S-1)) >> S`` (``p`` itself when ``S == 0``)."""
    return Mux(s0, t, (t + 1) >> 1)


def saturate(rounded, relu, signed_out):
    """``(hidden, final)``: the hidden value saturated to u8 (ReLU) or s8 (``signed_out``),
    and the final value saturated to int32 (then ReLU'd when ``relu``).  Bit tests (OR/AND
    trees) instead of carry-chain compares (Fmax)."""
    neg = rounded[-1]
    u8 = Mux(neg, 0, Mux(rounded[8:].any(), 255, rounded[:8]))
    top7 = rounded[7:]
    s8 = Mux(top7.all() | ~top7.any(), rounded[:8], Mux(neg, 0x80, 0x7F))
    lo32, hi32 = -(1 << (OUT_BITS - 1)), (1 << (OUT_BITS - 1)) - 1
    top = rounded[OUT_BITS - 1:]
    fits = top.all() | ~top.any()
    s32 = Mux(fits, rounded[:OUT_BITS].as_signed(), Mux(neg, lo32, hi32))
    return Mux(signed_out, s8, u8), Mux(relu & neg, 0, s32)


def post_layout() -> data.StructLayout:
    """One output channel's post-processing entry (``gen.memmap.POST``)."""
    return struct_layout(POST)


def output_layout() -> data.StructLayout:
    """One final-layer value on ``o_y``: the int32 value and ``last`` of the inference."""
    return data.StructLayout({"value": signed(OUT_BITS), "last": 1})


class PostProcessor(wiring.Component):
    """Bias, requantisation, ReLU and saturation, ``post_lanes`` lanes per cycle.

    For each MAC result word (``lanes`` accumulators of one output pixel), in the engine's
    issue order (layer, tile, pixel): ``r = (acc + bias) * M [+ res * Mr]``,
    ``(r + 2**(S-1)) >> S`` (round half up, arithmetic), then saturation to u8 (ReLU) or s8
    (no activation) for hidden layers, written back in ``[C, H, W]`` order, or to int32 (final
    layer, to ``o_y``).  Lane-serial layers (depthwise, pools) give one value per word, in
    (tile, lane, pixel) order (with ``cpar > 1``: a group's ``cpar`` values per word, in
    (tile, group, pixel, lane) order).  Six register stages (seven with a residual), each with at most
    one adder, a multiplier or the shifter per lane.

    Parameters
    ----------
    layers : list of ``gen.plan.LayerPlan``
    lanes : int
    acc_bits : int
        Accumulator width of the MAC array.
    result : ``stream.Signature``
        The MAC array's output stream signature (``acc``, ``bad_code``, ``overrun``).
    act_depth : int
        Words per activation buffer.
    post_depth : int
        Words of the post-processing memory.
    cpar : int
        Bytes per activation word (``Plan.cpar``, 1 by default): channel ``co`` of a pixel is
        byte ``co % cpar`` of word ``out_base + (co // cpar) * pixels + pixel``; the
        write-back enables that byte, the residual read takes it.
    banked : bool
        The activation memory is single-port banks (``rtl.actmem``): a layer's first value
        waits until the previous layer's values in the pipeline are written back, so its
        residual reads never meet those writes in one bank (a few cycles per layer).
    post_lanes : int
        Lanes taken per cycle (``Plan.post_lanes``, 1 by default; it divides ``cpar``, and
        is 1 with ``banked``): the values of one cycle are neighbouring bytes of one
        activation word, written back with their byte enables, their residuals from one
        read.  Each has its own requantisation pipeline and post-memory read port; final
        values leave ``o_y`` one at a time.

    Members
    -------
    i : ``In(result)``
        MAC results; ``ready`` is a register (set the cycle after the last lane was taken).
    p_rd : ``In(ReadPort.Signature(addr_width=ceil_log2(post_depth), shape=POST_BITS))``
        Post-processing memory read port (driven); ``p_rd1`` ... for the other lanes of a
        cycle (``post_lanes > 1``), at the next entries.
    wb : ``In(WritePort.Signature(addr_width=ceil_log2(act_depth), shape=8 * cpar, ...))``
        Hidden-layer write-back (driven), at ``out_base + co * pixels + pixel`` (cpar 1).
    rr : ``In(ReadPort.Signature(addr_width=ceil_log2(act_depth), shape=8 * cpar))``
        Residual read port (driven; only when a layer has a residual).
    o_y : ``Out(stream.Signature(output_layout()))``
        Final-layer values, through a 3-deep FIFO.
    row_done : ``Out(1)``
        The last lane of a result word was written back or queued.
    done : ``Out(1)``
        The inference's final value was queued.
    err : ``Out(1)``
        A result with ``bad_code`` or ``overrun`` was taken (the cycle before).
    """

    def __init__(self, *, layers, lanes: int, acc_bits: int, result, act_depth: int,
                 post_depth: int, banked: bool = False, cpar: int = 1, post_lanes: int = 1):
        self._layers, self._lanes, self.acc_bits = list(layers), lanes, acc_bits
        if (not isinstance(post_lanes, int) or isinstance(post_lanes, bool) or post_lanes < 1
                or cpar % post_lanes or (banked and post_lanes > 1)):
            raise ValueError(f"post_lanes must divide cpar ({cpar}) and be 1 with banks, not "
                             f"{post_lanes!r}")
        self._cpar, self._width = cpar, post_lanes
        self.banked = banked
        self._act_depth = act_depth
        self.residual = any(ly.res >= 0 for ly in layers)
        aw = max(1, ceil_log2(act_depth))
        members = {
            "i": In(result),
            **{name: In(ReadPort.Signature(addr_width=ceil_log2(post_depth), shape=POST_BITS))
               for name in post_ports(post_lanes)},
            "wb": In(WritePort.Signature(addr_width=aw, shape=8 * cpar,
                                         **({"granularity": 8} if cpar > 1 else {}))),
            "o_y": Out(stream.Signature(output_layout())),
            "row_done": Out(1),
            "done": Out(1),
            "err": Out(1),
        }
        if self.residual:
            members["rr"] = In(ReadPort.Signature(addr_width=aw, shape=8 * cpar))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        layers, L, act_depth, P = self._layers, self._lanes, self._act_depth, self._cpar
        W = self._width
        lw = W.bit_length() - 1                 # log2(post_lanes)
        nl = len(layers)
        serial = any(ly.depthwise for ly in layers)
        p_ly = Signal(range(max(2, nl)))
        p_tk = Signal(range(max(2, max(ly.tiles for ly in layers))))
        p_pix = Signal(range(max(2, max(ly.oh * ly.ow for ly in layers))))
        p_lane = Signal(range(max(2, L)))

        def const(name, fn, shape):
            return layer_const(m, p_ly, layers, f"p_{name}", fn, shape)

        n_pix = const("pix", lambda ly: ly.oh * ly.ow, range(1 << 22))
        # the post-table entry of the next layer's first channel (the counter `co` is absolute)
        after = {id(ly): layers[(k + 1) % nl].post_base for k, ly in enumerate(layers)}
        next_post_base = const("next_post_base", lambda ly: after[id(ly)], range(1 << 16))
        out_base = const("out_base", lambda ly: ly.out_base, range(1 << 20))
        tiles = const("tiles", lambda ly: ly.tiles, range(1 << 16))
        # the first lane of the last W of a word (the last tile's lanes may end part-way)
        def last_start_of(ly):
            return (ly.last_tile_lanes(L) - 1) // W * W
        last_start = const("last_start", last_start_of, range(L))
        p_tile_last = p_tk == tiles - 1
        p_last_start = Mux(p_tile_last, last_start, L - W)
        p_final = p_ly == nl - 1
        p_relu = const("relu", lambda ly: int(ly.relu), 1)
        p_signed = const("signed", lambda ly: int(ly.signed_out), 1)
        ser = const("serial", lambda ly: int(ly.depthwise), 1) if serial else 0

        # Final outputs go through a small FIFO whose "full" is a registered level: the
        # post-processor's stall does not depend on o_y.ready combinationally (Fmax).
        # (depth 3: a depth-2 buffered FIFO has a zero-width inner address, bad Verilog)
        m.submodules.ofifo = ofifo = SyncFIFOBuffered(width=W * OUT_BITS + (W if W > 1 else 0) + 1,
                                                    depth=3)
        if W > 1:
            # an entry holds a cycle's values, their mask (a prefix) and ``end``: o_y takes
            # them one at a time
            sel = Signal(range(W), name="o_sel")
            vals = ofifo.r_data[:W * OUT_BITS]
            omask = ofifo.r_data[W * OUT_BITS:W * (OUT_BITS + 1)]
            o_last = (sel == W - 1) | ~omask.bit_select(sel + 1, 1)     # the entry's last value
            m.d.comb += [self.o_y.payload.value.eq(vals.word_select(sel, OUT_BITS)),
                         self.o_y.payload.last.eq(ofifo.r_data[-1] & o_last),
                         self.o_y.valid.eq(ofifo.r_rdy), ofifo.r_en.eq(self.o_y.ready & o_last)]
            with m.If(self.o_y.valid & self.o_y.ready):
                m.d.sync += sel.eq(Mux(o_last, 0, sel + 1))
        else:
            m.d.comb += [self.o_y.payload.as_value().eq(ofifo.r_data),
                         self.o_y.valid.eq(ofifo.r_rdy), ofifo.r_en.eq(self.o_y.ready)]
        padv = Signal()
        m.d.comb += padv.eq(ofifo.w_rdy)
        prs = [getattr(self, name) for name in post_ports(W)]
        # The input's ready is a register (`ack`, set the cycle after the last lane was
        # taken), so this stall does not reach the MAC array combinationally (Fmax).  Costs
        # one cycle per result word.
        res = self.i.payload
        # banked: a new layer's first value (and its residual read) waits for the pipeline
        # to drain
        fresh, in_flight = Signal(init=1), Signal()
        hold = (fresh & in_flight) if self.banked else Const(0, 1)
        ack = Signal()
        m.d.comb += self.i.ready.eq(ack)
        m.d.sync += ack.eq(0)
        # stage Q1: lane select + post entry read
        q1_valid, q1_final, q1_relu, q1_lastlane, q1_end, q1_signed = (
            Signal(name=f"q1_{n}") for n in ("valid", "final", "relu", "lastlane", "end", "signed"))
        q1_acc = [Signal(signed(self.acc_bits), name=f"q1_acc{j or ''}") for j in range(W)]
        q1_addr = Signal(range(max(2, act_depth)))
        # Post-table entry and activation address (relative to out_base) of the current value,
        # kept as counters (no adder or multiplier before the reads): co = post_base + tile *
        # L + lane, addr = (tile * L + lane) * pixels + pixel.
        co = Signal(range(1 << 16), name="p_co", init=layers[0].post_base)
        co_base = Signal(range(1 << 16), name="p_co_base", init=layers[0].post_base)
        addr = Signal(range(max(2, act_depth)), name="p_addr")
        addr_base = Signal(range(max(2, act_depth)), name="p_addr_base")   # tile * L * pixels
        tile_step = const("tile_step", lambda ly: L // P * ly.oh * ly.ow, range(1 << 24))
        p_byte = Signal(range(max(2, P)), name="p_byte")   # co % cpar
        q1_byte = Signal.like(p_byte, name="q1_byte")
        byte_last = p_byte == P - W
        # Read port j's memory holds the table from entry j on (``weightmem.post_ports``): at
        # address co it reads entry co + j, the lane's.
        m.d.comb += [x for pr in prs for x in (pr.addr.eq(co), pr.en.eq(padv))]
        if self.residual:
            res_base = const("res_base", lambda ly: ly.res_base, range(1 << 20))
            # read only in layers with a residual (a banked memory sees no stray reads)
            has_res = const("has_res", lambda ly: int(ly.res >= 0), 1)
            m.d.comb += [self.rr.addr.eq(res_base + addr), self.rr.en.eq(padv & has_res & ~hold)]
        take = self.i.valid & ~ack & padv & ~hold
        with m.If(take):
            m.d.sync += fresh.eq(0)
        pix_last = p_pix == n_pix - 1
        lane_last = p_lane == p_last_start
        if W > 1:
            # the lanes of this cycle that exist (a prefix: the last tile may end part-way)
            last_mask = const("last_mask", lambda ly: (1 << (ly.last_tile_lanes(L)
                                                             - last_start_of(ly))) - 1, W)
            vmask = Mux(lane_last & p_tile_last, last_mask, (1 << W) - 1)
            q1_vmask = Signal(W, name="q1_vmask")
            accs = res.acc.as_value().word_select(p_lane >> lw, W * self.acc_bits)
            lane_acc = [accs[j * self.acc_bits:(j + 1) * self.acc_bits].as_signed()
                        for j in range(W)]
        else:
            lane_acc = [res.acc[p_lane]]
        if serial and P > 1:
            # a lane-serial word holds its group's cpar lanes (the channels of one word)
            word_last = Mux(ser, byte_last | lane_last, lane_last)
        else:
            word_last = Mux(ser, 1, lane_last) if serial else lane_last     # last value of the word
        with m.If(take & word_last):
            m.d.sync += ack.eq(1)
        with m.If(padv):
            m.d.sync += [q1_valid.eq(take), q1_final.eq(p_final), q1_relu.eq(p_relu),
                         q1_signed.eq(p_signed),
                         q1_lastlane.eq(word_last), *(a.eq(v) for a, v in zip(q1_acc, lane_acc)),
                         q1_addr.eq(out_base + addr), q1_byte.eq(p_byte),
                         q1_end.eq(lane_last & p_final & p_tile_last & pix_last)]
            if W > 1:
                m.d.sync += q1_vmask.eq(vmask)
        # a bad code or overrun, reported the next cycle (no path from the pipeline-drain
        # hold through `take` into the error flag)
        bad = Signal(name="p_bad")
        m.d.sync += bad.eq(take & (res.bad_code | res.overrun))
        m.d.comb += self.err.eq(bad)
        with m.If(take):
            layer_done = [p_tk.eq(0), p_ly.eq(Mux(p_ly == nl - 1, 0, p_ly + 1)), fresh.eq(1),
                          co.eq(next_post_base), co_base.eq(next_post_base), addr.eq(0),
                          addr_base.eq(0)]
            if P > 1:
                layer_done.append(p_byte.eq(0))
            def next_lane_serial():
                """A lane-serial value's last pixel: the next lane (or group), tile, layer."""
                m.d.sync += [p_pix.eq(0), co.eq(co + W)]
                if P > 1:
                    m.d.sync += p_byte.eq(0)
                with m.If(lane_last):
                    m.d.sync += p_lane.eq(0)
                    with m.If(p_tk == tiles - 1):
                        m.d.sync += layer_done
                    with m.Else():
                        m.d.sync += p_tk.eq(p_tk + 1)
                with m.Else():
                    m.d.sync += p_lane.eq(p_lane + W)
            with m.If(ser):
                if P > 1:
                    # (tile, group, pixel, lane in the group): a word's lanes are the bytes of
                    # one activation word
                    with m.If(~word_last):
                        m.d.sync += [p_lane.eq(p_lane + W), co.eq(co + W), p_byte.eq(p_byte + W)]
                    with m.Elif(~pix_last):         # the group's next pixel, its first lane
                        m.d.sync += [p_pix.eq(p_pix + 1), addr.eq(addr + 1), p_byte.eq(0),
                                     p_lane.eq(p_lane - p_byte), co.eq(co - p_byte)]
                    with m.Else():                  # the next group's word follows
                        m.d.sync += addr.eq(addr + 1)
                        next_lane_serial()
                else:
                    # (tile, lane, pixel) order: the address runs on by one.
                    m.d.sync += addr.eq(addr + 1)
                    with m.If(pix_last):
                        next_lane_serial()
                    with m.Else():
                        m.d.sync += p_pix.eq(p_pix + 1)
            with m.Elif(lane_last):
                m.d.sync += p_lane.eq(0)
                if P > 1:
                    m.d.sync += p_byte.eq(0)
                with m.If(pix_last):
                    m.d.sync += p_pix.eq(0)
                    with m.If(p_tk == tiles - 1):
                        m.d.sync += layer_done
                    with m.Else():
                        m.d.sync += [p_tk.eq(p_tk + 1), co.eq(co_base + L), co_base.eq(co_base + L),
                                     addr.eq(addr_base + tile_step),
                                     addr_base.eq(addr_base + tile_step)]
                with m.Else():
                    m.d.sync += [p_pix.eq(p_pix + 1), co.eq(co_base),
                                 addr.eq(addr_base + p_pix + 1)]
            with m.Else():
                m.d.sync += [p_lane.eq(p_lane + W), co.eq(co + W)]
                if P > 1:               # the next bytes, or the next group's word
                    m.d.sync += p_byte.eq(p_byte + W)
                    with m.If(byte_last):
                        m.d.sync += addr.eq(addr + n_pix)
                else:
                    m.d.sync += addr.eq(addr + n_pix)

        # Stages Q2..Q6: Q2 acc + bias, Q3 * M (and res * Mr), [Q3r the sum of the two],
        # Q4 >> (S - 1), Q5 + 1 >> 1 (rounding), Q6 clamp; then the write-back / output FIFO.
        # The tags ride along.
        ents = [post_layout()(pr.data) for pr in prs]
        vbits = max(self.acc_bits, BIAS_BITS) + 1
        pbits = vbits + M_BITS + 2
        tags = {"valid": q1_valid, "final": q1_final, "relu": q1_relu, "lastlane": q1_lastlane,
                "end": q1_end, "addr": q1_addr, "signed": q1_signed}
        if P > 1:
            tags["byte"] = q1_byte
        if W > 1:
            tags["vmask"] = q1_vmask
        if self.residual:
            q1_rsigned = Signal()
            with m.If(padv):
                m.d.sync += q1_rsigned.eq(const("res_signed", lambda ly: int(ly.res_signed), 1))

            def rvals(word, byte, signed_):
                """This cycle's residual values: the ``W`` neighbouring bytes of ``word`` at
                ``byte``, signed or not."""
                rbytes = word.word_select(byte >> lw, 8 * W) if P > W else word
                return [Mux(signed_, b.as_signed(), b.as_unsigned())
                        for b in (rbytes[8 * j:8 * j + 8] for j in range(W))]

        def stage(name, prev, values):
            """Register the tags of ``prev`` and ``values`` (name -> expression) on ``padv``."""
            cur = {k: Signal.like(v, name=f"{name}_{k}") for k, v in prev.items()}
            out = {k: Signal(shape, name=f"{name}_{k}") for k, (shape, _) in values.items()}
            with m.If(padv):
                m.d.sync += [cur[k].eq(v) for k, v in prev.items()]
                m.d.sync += [out[k].eq(values[k][1]) for k in values]
            return cur, out

        def per_lane(fn):
            """``fn(j, key)`` -> {key: (shape, value)} for each lane ``j`` (keys ``sum``,
            ``sum1``, ...)."""
            return {k: v for j in range(W) for k, v in fn(j, lambda n: f"{n}{j or ''}").items()}

        if self.residual and P == 1:            # one byte: the value goes in at Q2
            r_now = rvals(self.rr.data, 0, q1_rsigned)

        def q2_of(j, k):
            d = {k("sum"): (signed(vbits), q1_acc[j] + ents[j].bias),
                 k("m"): (unsigned(M_BITS), ents[j].m), k("s"): (unsigned(S_BITS), ents[j].s)}
            if self.residual:
                d[k("mr")] = (unsigned(M_BITS), ents[j].mr)
                if P == 1:
                    d[k("r")] = (signed(9), r_now[j])
            return d
        q2_values = per_lane(q2_of)
        if self.residual and P > 1:
            # The residual word is registered as read (the block RAM's clock-to-out and its
            # output mux fill the cycle); its bytes are picked (with P > W) and sign-extended
            # in Q3, before the multiply.
            q2_values["rword"] = (unsigned(8 * P), self.rr.data)
            q2_values["rsigned"] = (1, q1_rsigned)
        t2, v2 = stage("q2", tags, q2_values)
        if self.residual:
            rv = (rvals(v2["rword"], t2["byte"], v2["rsigned"]) if P > 1
                  else [v2[f"r{j or ''}"] for j in range(W)])
        flight = [tags, t2]                     # every stage's tags

        def q3_of(j, k):
            s0, sh = shift_split(v2[k("s")])
            d = {k("prod"): (signed(pbits), v2[k("sum")] * v2[k("m")]),
                 k("s0"): (1, s0), k("sh"): (unsigned(S_BITS), sh)}
            if self.residual:
                d[k("rprod")] = (signed(9 + M_BITS + 1), rv[j] * v2[k("mr")])
            return d
        t3, v3 = stage("q3", t2, per_lane(q3_of))
        flight.append(t3)
        if self.residual:
            def q3r_of(j, k):
                return {k("prod"): (signed(pbits), v3[k("prod")] + v3[k("rprod")]),
                        k("s0"): (1, v3[k("s0")]), k("sh"): (unsigned(S_BITS), v3[k("sh")])}
            t3, v3 = stage("q3r", t3, per_lane(q3r_of))
            flight.append(t3)
        t4, v4 = stage("q4", t3, per_lane(lambda j, k: {
            k("t"): (signed(pbits), v3[k("prod")] >> v3[k("sh")]), k("s0"): (1, v3[k("s0")])}))
        t5, v5 = stage("q5", t4, per_lane(lambda j, k: {
            k("r"): (signed(pbits), round_last(v4[k("t")], v4[k("s0")]))}))
        flight += [t4, t5]

        def q6_of(j, k):
            hidden, final = saturate(v5[k("r")], t5["relu"], t5["signed"])
            return {k("u8"): (unsigned(8), hidden), k("s32"): (signed(OUT_BITS), final)}
        q, v6 = stage("q6", t5, per_lane(q6_of))
        flight.append(q)
        u8s = Cat(*(v6[f"u8{j or ''}"] for j in range(W)))
        s32s = Cat(*(v6[f"s32{j or ''}"] for j in range(W)))

        m.d.comb += in_flight.eq(Cat(*(t["valid"] for t in flight)).any())
        wr_hidden = padv & q["valid"] & ~q["final"]
        if P > 1:
            ben = q["vmask"] if W > 1 else 1
            m.d.comb += [self.wb.addr.eq(q["addr"]), self.wb.data.eq(u8s.replicate(P // W)),
                         self.wb.en.eq(Mux(wr_hidden, ben << q["byte"], 0))]
        else:
            m.d.comb += [self.wb.addr.eq(q["addr"]), self.wb.data.eq(u8s),
                         self.wb.en.eq(wr_hidden)]
        if W > 1:
            m.d.comb += ofifo.w_data.eq(Cat(s32s, q["vmask"], q["end"]))
        else:
            m.d.comb += ofifo.w_data.eq(Cat(s32s, q["end"]))
        m.d.comb += [ofifo.w_en.eq(padv & q["valid"] & q["final"]),
                     self.row_done.eq(padv & q["valid"] & q["lastlane"]),
                     self.done.eq(padv & q["valid"] & q["end"])]
        return m
