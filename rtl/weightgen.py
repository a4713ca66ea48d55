"""Basis-coefficient weight generators: weights rebuilt on chip instead of fetched whole.

* :class:`SdWeightGen` (SmartDeal): packed coefficient words -> :class:`~.pow2.Pow2Decoder` ->
  rebuild engine ``w[k] = sum_j (-1)**s_j (B[j, k] << expu_j)`` (per column: three shifters,
  conditional negation, a 3-input adder; no multiplier) -> optional per-filter rounding shift
  to int8.  Golden: ``gen.golden.sd_rebuild`` and ``requant_shift``.
* :class:`MlgWeightGen` (MLG): level 1 ``w1[t] = sum_b U_b * Wb[b, t]`` and level 2
  ``w[t] = sum_o V_o * w1_o[t]`` as small multiply-accumulate stages, either level bypassable.
  Golden: ``gen.golden.mlg_generate``.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..gen.golden import SdFormat, mlg_bits, sd_weight_bits
from ..gen.schemes.smartdeal import basis_fields
from .layouts import struct_layout
from .pow2 import Pow2Decoder, pow2_row_layout

__all__ = ["sd_basis_layout", "SdWeightGen", "SdRebuildRow", "mlg_input_layout", "MlgWeightGen"]

MAX_BLOCK_ROWS = 255


def sd_basis_layout(basis_bits: int) -> data.StructLayout:
    """One block's entry on ``i_basis``: the 3x3 basis (row-major ``b[j*3 + k]``), the rounding
    shift of its filter (int8 mode) and the number of kernel rows in the block; the same
    layout the packer uses (``gen.schemes.smartdeal.basis_fields``)."""
    return struct_layout(basis_fields(basis_bits))


class SdWeightGen(wiring.Component):
    """SmartDeal weight generator: power-of-2 sparse decoder + basis register + rebuild engine.

    ``i_coef`` carries the layer's coefficient words (header + packed rows, see
    :class:`~.pow2.Pow2Decoder`).  ``i_basis`` carries one entry per block, in the same
    (filter, chunk) order; an entry is taken when the previous block's last row is rebuilt (or
    at start), so block changes cost no cycle.  ``o`` carries one rebuilt kernel row (3
    weights) per decoded row: ``last`` ends a block, ``end`` ends the layer, ``err`` copies the
    decoder's flag (the bad coefficient was used as zero).

    ``requant=False``: exact ``W_fix`` (``sd_weight_bits`` wide, 23 bits for int8 bases and
    e in -8..5).  ``requant=True``: ``clip((W_fix + 2**(s-1)) >> s, -127, 127)`` with the
    block's shift ``s`` (int8).

    Timing: one row per cycle in steady state (the decoder's rate); latency 1 cycle from the
    decoder's output register.
    """

    def __init__(self, *, e_min=-8, e_max=5, word_bits=32, basis_bits=8, requant=True):
        self._fmt = self.validate(e_min=e_min, e_max=e_max, word_bits=word_bits,
                                  basis_bits=basis_bits, requant=requant)
        self._basis_bits, self._requant = basis_bits, requant
        self._exact_bits = sd_weight_bits(basis_bits, self._fmt)
        self._out_bits = 8 if requant else self._exact_bits
        super().__init__({
            "i_coef": In(stream.Signature(word_bits)),
            "i_basis": In(stream.Signature(sd_basis_layout(basis_bits))),
            "o": Out(stream.Signature(self.output_layout(self._out_bits))),
        })

    @staticmethod
    def validate(*, e_min=-8, e_max=5, word_bits=32, basis_bits=8, requant=True) -> SdFormat:
        """Check parameters without building anything (one-sentence errors)."""
        if not isinstance(basis_bits, int) or isinstance(basis_bits, bool) or not 2 <= basis_bits <= 16:
            raise ValueError(f"Basis bits must be an integer in 2..16, not {basis_bits!r}")
        if not isinstance(requant, bool):
            raise TypeError(f"Requant must be a bool, not {requant!r}")
        return Pow2Decoder.validate(e_min=e_min, e_max=e_max, word_bits=word_bits)

    @staticmethod
    def output_layout(out_bits: int) -> data.StructLayout:
        return data.StructLayout({"w": data.ArrayLayout(signed(out_bits), 3),
                                  "err": 1, "last": 1, "end": 1})

    fmt = property(lambda self: self._fmt)
    out_bits = property(lambda self: self._out_bits, doc="Width of each output weight.")
    exact_bits = property(lambda self: self._exact_bits, doc="Width of an exact rebuilt weight.")
    requant = property(lambda self: self._requant)

    def params(self) -> dict:
        return {"e_min": self._fmt.e_min, "e_max": self._fmt.e_max,
                "word_bits": self._fmt.word_bits, "basis_bits": self._basis_bits,
                "requant": self._requant}

    def elaborate(self, platform):
        m = Module()
        m.submodules.decoder = dec = Pow2Decoder(e_min=self._fmt.e_min, e_max=self._fmt.e_max,
                                                 word_bits=self._fmt.word_bits)
        wiring.connect(m, wiring.flipped(self.i_coef), dec.i)
        row = dec.o.payload

        # Basis register file: the current block's basis, its shift and rows still to come.
        basis = Signal(data.ArrayLayout(signed(self._basis_bits), 9), name="basis")
        shift = Signal(5)
        blk_left = Signal(range(MAX_BLOCK_ROWS + 1))
        can_out = ~self.o.valid | self.o.ready
        fire = Signal()
        m.d.comb += fire.eq(dec.o.valid & (blk_left != 0) & can_out)
        m.d.comb += dec.o.ready.eq(fire)
        take_basis = Signal()
        m.d.comb += [
            self.i_basis.ready.eq((blk_left == 0) | ((blk_left == 1) & fire)),
            take_basis.eq(self.i_basis.valid & self.i_basis.ready),
        ]
        with m.If(take_basis):
            m.d.sync += [basis.eq(self.i_basis.payload.b), shift.eq(self.i_basis.payload.shift),
                         blk_left.eq(self.i_basis.payload.rows)]
        with m.Elif(fire):
            m.d.sync += blk_left.eq(blk_left - 1)

        # Rebuild engine: per column k, three shifted basis elements, signs, one adder.
        m.submodules.rebuild = rebuild = SdRebuildRow(self._fmt, self._basis_bits)
        m.d.comb += [rebuild.basis.eq(basis), rebuild.row.eq(row)]
        exact = rebuild.w

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(fire):
            p = self.o.payload
            m.d.sync += [self.o.valid.eq(1), p.err.eq(row.err), p.last.eq(blk_left == 1),
                         p.end.eq(row.last)]
            for k in range(3):
                if self._requant:
                    # Rounding right shift (half up, arithmetic), then saturate to +-127.
                    half = (Const(1, 32) << shift) >> 1          # 2**(s-1), 0 for s = 0
                    r = Signal(signed(self._exact_bits + 1), name=f"round{k}")
                    m.d.comb += r.eq((exact[k] + half) >> shift)
                    m.d.sync += p.w[k].eq(Mux(r > 127, 127, Mux(r < -127, -127, r)))
                else:
                    m.d.sync += p.w[k].eq(exact[k])
        return m


# --------------------------------------------------------------------------------------------

def mlg_input_layout(Bi: int, K2: int, qb: int, qu: int, qv: int, level1: bool, level2: bool):
    """One term on :class:`MlgWeightGen`'s input: basis codes ``b[Bi][K2]`` (one row of K2
    codes when level 1 is bypassed), coefficient codes ``u[Bi]`` (level 1), ``v`` (level 2)
    and ``last`` (final term of the level-2 sum)."""
    fields = {"b": data.ArrayLayout(data.ArrayLayout(qb, K2), Bi if level1 else 1)}
    if level1:
        fields["u"] = data.ArrayLayout(qu, Bi)
    if level2:
        fields["v"] = qv
    fields["last"] = 1
    return data.StructLayout(fields)


class MlgWeightGen(wiring.Component):
    """MLG two-level weight generator (per output kernel: ``K2`` weights).

    For output channel ``co`` and input channel ``c`` the controller sends, for each
    ``o < Bo``, the term ``(Wb[o] codes, U[o, c, :] codes, V[co, o] code)``; the generator
    computes ``w1 = sum_b odd(U_b) * odd(Wb[b, :])`` (level 1) and accumulates
    ``odd(V) * w1`` (level 2); on ``last`` it emits ``W[co, c, :]``.  A bypassed level 1 passes
    ``odd(b)`` through; a bypassed level 2 emits every term (``last`` ignored).  Codes decode
    as ``odd(c) = 2c - (2**q - 1)``.

    Timing: ``LATENCY`` = 2 cycles from a ``last`` term to ``o.valid``; one term per cycle,
    stalling only when a finished kernel meets a full output register.
    """

    LATENCY = 2

    def __init__(self, *, Bi=2, Bo=44, K2=9, qb=3, qu=6, qv=3, level1=True, level2=True):
        self.validate(Bi=Bi, Bo=Bo, K2=K2, qb=qb, qu=qu, qv=qv, level1=level1, level2=level2)
        self._p = dict(Bi=Bi, Bo=Bo, K2=K2, qb=qb, qu=qu, qv=qv, level1=level1, level2=level2)
        self._w1_bits, self._w_bits = mlg_bits(Bi, Bo, qb, qu, qv, level1, level2)
        super().__init__({
            "i": In(stream.Signature(mlg_input_layout(Bi, K2, qb, qu, qv, level1, level2))),
            "o": Out(stream.Signature(self.output_layout(K2, self._w_bits))),
        })

    @staticmethod
    def output_layout(K2: int, w_bits: int) -> data.StructLayout:
        """One generated kernel (``K2`` weights) and the too-many-terms flag."""
        return data.StructLayout({"w": data.ArrayLayout(signed(w_bits), K2), "overrun": 1})

    @staticmethod
    def validate(*, Bi=2, Bo=44, K2=9, qb=3, qu=6, qv=3, level1=True, level2=True) -> None:
        """Check parameters without building anything (one-sentence errors)."""
        for name, v in (("Bi", Bi), ("Bo", Bo), ("K2", K2), ("qb", qb), ("qu", qu), ("qv", qv)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise TypeError(f"MLG {name} must be a positive integer, not {v!r}")
        for name, v in (("qb", qb), ("qu", qu), ("qv", qv)):
            if v > 16:
                raise ValueError(f"MLG {name} must be at most 16 bits, not {v!r}")
        for name, v in (("level1", level1), ("level2", level2)):
            if not isinstance(v, bool):
                raise TypeError(f"MLG {name} must be a bool, not {v!r}")

    w_bits = property(lambda self: self._w_bits, doc="Width of a generated weight.")
    w1_bits = property(lambda self: self._w1_bits, doc="Width of a level-1 weight.")

    def params(self) -> dict:
        return dict(self._p)

    def elaborate(self, platform):
        m = Module()
        p = self._p
        K2, Bi = p["K2"], p["Bi"]

        def odd(code, q):
            """Stored code -> signed odd integer 2c - (2**q - 1)."""
            return (code.as_value() if hasattr(code, "as_value") else code) * 2 - ((1 << q) - 1)

        stall = Signal()
        en = Signal()
        s1_valid, s1_last = Signal(), Signal()
        s1_w1 = Signal(data.ArrayLayout(signed(self._w1_bits), K2), name="s1_w1")
        s1_v = Signal(signed(p["qv"] + 1), name="s1_v")

        # Stage 1: decode codes; level 1 (Bi products per weight) or pass-through.
        ip = self.i.payload
        with m.If(en):
            m.d.sync += [s1_valid.eq(self.i.valid), s1_last.eq(ip.last | ~p["level2"])]
            for t in range(K2):
                if p["level1"]:
                    m.d.sync += s1_w1[t].eq(sum(odd(ip.u[b], p["qu"]) * odd(ip.b[b][t], p["qb"])
                                                for b in range(Bi)))
                else:
                    m.d.sync += s1_w1[t].eq(odd(ip.b[0][t], p["qb"]))
            if p["level2"]:
                m.d.sync += s1_v.eq(odd(ip.v, p["qv"]))

        # Stage 2: level-2 accumulation over o (or pass-through), output register.
        acc = Signal(data.ArrayLayout(signed(self._w_bits), K2), name="acc")
        count = Signal(range(p["Bo"] + 2))
        over = Signal()
        m.d.comb += [
            stall.eq(s1_valid & s1_last & self.o.valid & ~self.o.ready),
            en.eq(~stall),
            self.i.ready.eq(en),
        ]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(en & s1_valid):
            sums = []
            for t in range(K2):
                term = s1_v * s1_w1[t] if p["level2"] else s1_w1[t]
                s = Signal(signed(self._w_bits), name=f"sum{t}")
                m.d.comb += s.eq(acc[t] + term)
                sums.append(s)
            over_next = over | (count >= p["Bo"])
            with m.If(s1_last):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.overrun.eq(over_next),
                             count.eq(0), over.eq(0)]
                for t in range(K2):
                    m.d.sync += [self.o.payload.w[t].eq(sums[t]), acc[t].eq(0)]
            with m.Else():
                m.d.sync += [count.eq(Mux(count > p["Bo"], count, count + 1)), over.eq(over_next)]
                for t in range(K2):
                    m.d.sync += acc[t].eq(sums[t])
        return m


class SdRebuildRow(wiring.Component):
    """Combinational SmartDeal rebuild of one kernel row from a decoded row and the basis.

    ``w[k] = sum_j mask_j ? (-1)**sign_j * (basis[j*3 + k] << expu_j) : 0`` -- per column three
    barrel shifters, conditional negation and a 3-input adder; no multiplier.  Proven equal to
    the product form ``sum_j c_j * B[j, k]`` in ``insitu.sim.formal``.
    """

    def __init__(self, fmt: SdFormat, basis_bits: int):
        self._fmt, self._basis_bits = fmt, basis_bits
        self._bits = sd_weight_bits(basis_bits, fmt)
        super().__init__({
            "basis": In(data.ArrayLayout(signed(basis_bits), 9)),
            "row": In(pow2_row_layout(fmt)),
            "w": Out(data.ArrayLayout(signed(self._bits), 3)),
        })

    w_bits = property(lambda self: self._bits)

    def elaborate(self, platform):
        m = Module()
        row = self.row
        for k in range(3):
            terms = []
            for j in range(3):
                t = Signal(signed(self._bits), name=f"c{k}_t{j}")
                mag = self.basis[j * 3 + k] << row.expu[j]
                m.d.comb += t.eq(Mux(row.mask[j], Mux(row.sign[j], -mag, mag), 0))
                terms.append(t)
            m.d.comb += self.w[k].eq(terms[0] + terms[1] + terms[2])
        return m
