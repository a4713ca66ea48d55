"""The multiply-accumulate pipeline every MAC array shares (ASM and the baselines).

A subclass says how a term's weights become products: ``_front`` (what stage 1 registers from
the input payload, e.g. the ASM precompute bank) and ``_products`` (per lane, from the stage-1
registers: ``(magnitude, negate, invalid)``).  The pipeline does the rest: stream handshake,
stage registers, the accumulator (``acc +/- magnitude`` folded into one adder), ``last``,
the ``bad_code``/``overrun`` flags and the output register.

What every lane reads (the activation, the ASM bank's multiples) is registered at stage 1 in
:meth:`MacPipeline.copies` copies, each feeding its own group of neighbouring lanes: one
register driving hundreds of lane inputs across the device is what the router cannot
finish at 256 products per cycle.  The copies are named ``s1_<name>_copy<k>``
(:data:`COPY_REGISTERS` selects them in Yosys); the board build marks them ``keep`` so that
synthesis does not merge them back into one.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.utils import ceil_log2

from ..gen.plan import PRODUCTS_PER_COPY, mac_copies

__all__ = ["mac_output_layout", "fold_add", "MacPipeline", "COPY_REGISTERS"]

#: A Yosys selection of the flip-flops of every copied stage-1 register (see the module text).
COPY_REGISTERS = "w:s1_*_copy* %ci1 t:$dff %i"


def mac_output_layout(acc_bits: int, lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(acc_bits), lanes),
        "bad_code": 1,
        "overrun": 1,
    })


def fold_add(m, acc, magnitude, negate, bits: int, name: str = "acc"):
    """``acc - magnitude`` if ``negate`` else ``acc + magnitude``, ``bits`` wide (wrapping).

    Computed as ``acc + (magnitude ^ negate...negate) + negate``: the conditional negation
    rides in the accumulator's adder (LUT inputs and carry-in) instead of costing its own
    adder.  Returns the signed sum signal."""
    ext = Signal(signed(bits), name=f"{name}_term")
    m.d.comb += ext.eq(magnitude)
    flip = Signal(signed(bits), name=f"{name}_term_x")
    m.d.comb += flip.eq(ext ^ negate.replicate(bits))
    total = Signal(signed(bits), name=f"{name}_sum")
    m.d.comb += total.eq(acc + flip + negate)
    return total


def _tree_sum(values):
    """Sum of ``values`` as a balanced tree of adders (a chain as long as the list would set
    the stage's depth)."""
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def _any(bits):
    """OR of 1-bit values, as one reduction (a chain of ORs as deep as the lanes makes a
    netlist whose depth overflows the synthesis tool's recursion at 256 products)."""
    return Cat(*bits).any()


class MacPipeline(wiring.Component):
    """Base of the MAC arrays: ``i`` (x, w[lanes], last) -> ``o`` (acc[lanes], flags).

    With ``ways > 1`` a term carries ``ways`` activations ``x[j]`` and ``ways`` weights per
    lane, ``_products`` gives ``ways`` products per lane, and one more stage sums them (a
    latency of 4).

    ``LATENCY`` = 3 cycles from a ``last`` term to ``o.valid`` (one more with ``ways > 1``
    and one more with a stage 1b: ``gen.plan.mac_stages``); ``THROUGHPUT`` = 1 term per
    cycle with no bubbles; the pipeline stalls only when a finished result meets a full
    output register.  Subclasses set ``_lanes``, ``_acc_bits``, ``_acc_len`` and implement
    ``_front`` and ``_products``.
    """

    LATENCY = 3
    THROUGHPUT = 1
    ways = 1            # products per lane and term (a subclass built with ways > 1 sets it)
    #: Stage-1 values that are per lane (one register); every other one is shared by the lanes.
    PER_LANE = ("w",)
    #: Products per cycle for each copy of a shared stage-1 register (``gen.plan``'s rule).
    PRODUCTS_PER_COPY = PRODUCTS_PER_COPY

    @property
    def copies(self) -> int:
        """Copies of each shared stage-1 register (``gen.plan.mac_copies``): one per
        ``PRODUCTS_PER_COPY`` products per cycle, at most one per lane."""
        return mac_copies(self._lanes, self.ways, self.PRODUCTS_PER_COPY)

    def copy_of(self, lane: int) -> int:
        """The copy of the shared stage-1 registers that ``lane`` reads."""
        return lane * self.copies // self._lanes

    def _front(self, m) -> list:
        """``[(name, value)]`` stage 1 registers from the input payload (and anything else)."""
        raise NotImplementedError

    def _between(self, m, s1: list) -> list | None:
        """``None``, or per lane ``{name: value}`` from the stage-1 registers that one more
        stage (1b, a cycle of latency) registers for the products; a value shared by several
        lanes (the same object) is registered once."""
        return None

    def _products(self, m, s1: list) -> tuple[list, object]:
        """``([(magnitude, negate, invalid) per lane], magnitude_shape)`` from the stage-1
        registers: ``s1[n]`` maps each name of ``_front`` to the register lane ``n`` reads."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        lanes, acc_bits, acc_len = self._lanes, self._acc_bits, self._acc_len

        stall = Signal()
        en = Signal()
        s1_valid, s1_last = Signal(), Signal()
        s2_valid, s2_last, s2_bad = Signal(), Signal(), Signal()

        # Stage 1: what the products need, registered with valid/last.
        copies = self.copies
        s1 = [{} for _ in range(lanes)]
        with m.If(en):
            m.d.sync += [s1_valid.eq(self.i.valid), s1_last.eq(self.i.payload.last)]
        for name, value in self._front(m):
            if name in self.PER_LANE or copies == 1:
                regs = [Signal.like(value, name=f"s1_{name}")]
            else:
                regs = [Signal.like(value, name=f"s1_{name}_copy{k}") for k in range(copies)]
            for n in range(lanes):
                s1[n][name] = regs[self.copy_of(n) if len(regs) > 1 else 0]
            with m.If(en):
                m.d.sync += [reg.eq(value) for reg in regs]

        between = self._between(m, s1)
        if between is not None:
            # Stage 1b: what ``_between`` makes of stage 1, registered with valid/last.
            b_valid, b_last = Signal(name="s1b_valid"), Signal(name="s1b_last")
            with m.If(en):
                m.d.sync += [b_valid.eq(s1_valid), b_last.eq(s1_last)]
            made, s1 = {}, [{} for _ in range(lanes)]
            for n, values in enumerate(between):
                for name, value in values.items():
                    if id(value) not in made:
                        made[id(value)] = reg = Signal.like(
                            value, name=f"s1b_{name}_{self.copy_of(n)}")
                        with m.If(en):
                            m.d.sync += reg.eq(value)
                    s1[n][name] = made[id(value)]
            s1_valid, s1_last = b_valid, b_last

        # Stage 2: per-lane products (magnitude and sign kept apart).
        lanes_out, mshape = self._products(m, s1)
        ways = self.ways
        if ways > 1:
            # ``ways`` products per lane: stage 2 registers each, stage 2b their signed sum
            # (the sign of each folded into the sum's adder), which the accumulator adds.
            c_mag = Signal(data.ArrayLayout(data.ArrayLayout(mshape, ways), lanes), name="s2c_mag")
            c_neg = Signal(data.ArrayLayout(ways, lanes), name="s2c_neg")
            # a bad code's flag per lane here, OR-ed over the lanes in stage 2b (one OR of
            # every product across the array was the 16 x 16 build's critical path)
            c_valid, c_last, c_bad = Signal(), Signal(), Signal(lanes)
            with m.If(en):
                m.d.sync += [c_valid.eq(s1_valid), c_last.eq(s1_last)]
                m.d.sync += [c_bad[n].eq(s1_valid & _any([inv for _, _, inv in cols]))
                             for n, cols in enumerate(lanes_out)]
                for n, cols in enumerate(lanes_out):
                    for j, (mag, neg, _) in enumerate(cols):
                        m.d.sync += [c_mag[n][j].eq(mag), c_neg[n][j].eq(neg)]
            sbits = mshape.width + 1 + ceil_log2(ways)
            lanes_out = []
            for n in range(lanes):
                flips = []
                for j in range(ways):
                    ext = Signal(signed(sbits), name=f"lane{n}_c{j}")
                    flip = Signal(signed(sbits), name=f"lane{n}_c{j}_x")
                    m.d.comb += [ext.eq(c_mag[n][j]),
                                 flip.eq(ext ^ c_neg[n][j].replicate(sbits))]
                    flips.append(flip)
                # -m = ~m + 1: the products' ones as one small term of the balanced sum
                ones = _tree_sum([c_neg[n][j].as_unsigned() for j in range(ways)])
                lanes_out.append((_tree_sum(flips[:-1] + [flips[-1] + ones]),
                                  Const(0, 1), Const(0, 1)))
            mshape = signed(sbits)
            s1_valid, s1_last = c_valid, c_last
            s2_bad_in = c_bad.any()
        else:
            s2_bad_in = s1_valid & _any([inv for _, _, inv in lanes_out])
        s2_mag = Signal(data.ArrayLayout(mshape, lanes), name="s2_mag")
        s2_neg = Signal(lanes, name="s2_neg")
        with m.If(en):
            m.d.sync += [
                s2_valid.eq(s1_valid),
                s2_last .eq(s1_last),
                s2_bad  .eq(s2_bad_in),
            ]
            for n, (mag, neg, _) in enumerate(lanes_out):
                m.d.sync += [s2_mag[n].eq(mag), s2_neg[n].eq(neg)]
        m.d.comb += [
            stall.eq(s2_valid & s2_last & self.o.valid & ~self.o.ready),
            en.eq(~stall),
            self.i.ready.eq(en),
        ]

        # Stage 3: accumulate; on `last` move the sums to the output register and clear.
        # acc -/+ mag in one adder (fold_add).
        acc = Signal(data.ArrayLayout(signed(acc_bits), lanes), name="acc")
        acc_sum = [fold_add(m, acc[n], s2_mag[n], s2_neg[n], acc_bits, name=f"lane{n}")
                   for n in range(lanes)]
        count = Signal(range(acc_len + 2))          # terms so far, saturating at acc_len + 1
        bad_r, over_r = Signal(), Signal()
        count_next = Mux(count == acc_len + 1, count, count + 1)
        over_next = over_r | (count >= acc_len)
        bad_next = bad_r | s2_bad

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(en & s2_valid):
            with m.If(s2_last):
                for n in range(lanes):
                    m.d.sync += [self.o.payload.acc[n].eq(acc_sum[n]), acc[n].eq(0)]
                m.d.sync += [
                    self.o.valid.eq(1),
                    self.o.payload.bad_code.eq(bad_next),
                    self.o.payload.overrun.eq(over_next),
                    count.eq(0), bad_r.eq(0), over_r.eq(0),
                ]
            with m.Else():
                for n in range(lanes):
                    m.d.sync += acc[n].eq(acc_sum[n])
                m.d.sync += [count.eq(count_next), bad_r.eq(bad_next), over_r.eq(over_next)]
        return m
