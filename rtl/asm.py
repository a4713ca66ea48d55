"""Alphabet-set multiplier (ASM) datapath: precompute bank, per-weight product, MAC array.

A weight magnitude is split into 4-bit quartets, each either 0 or ``a << s`` with ``a`` in the
alphabet set and ``s`` in 0..3.  The multiples ``a * x`` of the activation are computed once
by a shared :class:`PrecomputeBank`; each weight then needs only a select, a 0..3 shift and
the quartet adder (``hi << 4 + lo``) -- no multiplier.  Arithmetic: ``gen.golden.asm_mac``;
code layout: ``gen.golden.AsmCodeFormat``; see ``shared/spec/algorithms.md`` section 3.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..gen.golden import (
    AsmCodeFormat,
    act_range,
    alphabet_name,
    asm_acc_bits,
    asm_product_bound,
    parse_alphabet,
    signed_bits_for,
)
from ..gen.plan import CPARS, LOCAL_BANKS
from .mac import MacPipeline, _any, mac_output_layout

__all__ = ["asm_code_layout", "bank_mult_shape", "magnitude_shape", "AsmMacIO", "PrecomputeBank", "AsmProduct", "AsmMacArray"]


def magnitude_shape(alphabet, weight_bits: int, act_bits: int, act_signed: bool):
    """Shape of ``AsmProduct.magnitude``, ``x * |w|``: signed for signed activations."""
    bound = asm_product_bound(act_bits, act_signed, weight_bits, parse_alphabet(alphabet))
    return signed(signed_bits_for(-bound, bound)) if act_signed else unsigned(bound.bit_length())


def asm_code_layout(fmt: AsmCodeFormat) -> data.StructLayout:
    """The ``lib.data`` layout of one weight code; bit-for-bit the golden ``AsmCodeFormat``."""
    quartet = data.StructLayout(dict(fmt.quartet_fields()))
    return data.StructLayout({
        "q": data.ArrayLayout(quartet, fmt.quartets),
        "sign": 1,
    })


def _check_act(act_bits, act_signed):
    if not isinstance(act_bits, int) or isinstance(act_bits, bool) or act_bits < 1:
        raise TypeError(f"Activation bits must be a positive integer, not {act_bits!r}")
    if act_bits > 32:
        raise ValueError(f"Activation bits must be at most 32, not {act_bits!r}")
    if act_signed and act_bits < 2:
        raise ValueError(f"Signed activations need at least 2 bits, not {act_bits!r}")
    if not isinstance(act_signed, bool):
        raise TypeError(f"Activation signedness must be a bool, not {act_signed!r}")


def _check_alphabet(alphabet):
    return parse_alphabet(alphabet)        # ValueError naming the bad value


def _check_weight_bits(weight_bits):
    if not isinstance(weight_bits, int) or isinstance(weight_bits, bool) or weight_bits <= 0:
        raise TypeError(f"Weight magnitude bits must be a positive integer, not {weight_bits!r}")
    if weight_bits % 4 or weight_bits > 16:
        raise ValueError(f"Weight magnitude bits must be 4, 8, 12 or 16, not {weight_bits!r}")


def _act_shape(act_bits, act_signed):
    return signed(act_bits) if act_signed else unsigned(act_bits)


def bank_mult_shape(alphabet, act_bits, act_signed):
    """Shape of one precompute-bank output: holds ``max(alphabet) * x`` for every ``x``."""
    lo, hi = act_range(act_bits, act_signed)
    amax = parse_alphabet(alphabet)[-1]
    if act_signed:
        return signed(signed_bits_for(amax * lo, amax * hi))
    return unsigned((amax * hi).bit_length())


class PrecomputeBank(wiring.Component):
    """Alphabet multiples ``a * x`` of one activation, shared by every lane that uses ``x``.

    Combinational.  Each multiple is one adder built from shifts and earlier multiples:
    ``3x = (x<<1)+x``, ``5x = (x<<2)+x``, ``7x = (x<<3)-x``, ``9x = (x<<3)+x``,
    ``11x = (x<<3)+3x``, ``13x = (x<<3)+5x``, ``15x = (x<<4)-x``; ``1x`` is a wire, so the
    bank of alphabet {1} costs nothing.

    Parameters
    ----------
    alphabet : str or sequence of int
        Alphabet set (``"A1"``, ``"A2"``, ``"A4"``, ``"A8"`` or odd integers in 1..15, with 1).
    act_bits : int
        Activation width.
    act_signed : bool
        Activation signedness.

    Members
    -------
    x : ``In(act_shape)``
    mult : ``Out(ArrayLayout(mult_shape, len(alphabet)))``, ``mult[k] == alphabet[k] * x``.
    """

    def __init__(self, *, alphabet="A4", act_bits=8, act_signed=False):
        self._alphabet = _check_alphabet(alphabet)
        _check_act(act_bits, act_signed)
        self._act_bits, self._act_signed = act_bits, act_signed
        self._mult_shape = mshape = bank_mult_shape(self._alphabet, act_bits, act_signed)
        super().__init__({
            "x": In(_act_shape(act_bits, act_signed)),
            "mult": Out(data.ArrayLayout(mshape, len(self._alphabet))),
        })

    alphabet = property(lambda self: self._alphabet, doc="Alphabet set, sorted.")
    mult_shape = property(lambda self: self._mult_shape, doc="Shape of one multiple.")

    @property
    def adders(self) -> int:
        """Adders in the bank: one per alphabet member other than 1 (none for A1)."""
        return len([a for a in self._alphabet if a != 1])

    def elaborate(self, platform):
        m = Module()
        x = self.x
        made = {}
        for k, a in enumerate(self._alphabet):
            if a == 1:
                value = x
            elif (a + 1) & a == 0:                          # a = 2^n - 1
                value = (x << (a + 1).bit_length() - 1) - x
            else:
                # a = 2^top + rest: reuse an earlier multiple for the remainder when there is one.
                top = a.bit_length() - 1
                rest = a - (1 << top)
                rest_x = made[rest] if rest in made else _shift_sum(x, rest)
                value = (x << top) + rest_x
            sig = Signal(self._mult_shape, name=f"x{a}")
            m.d.comb += sig.eq(value)
            made[a] = sig
            m.d.comb += self.mult[k].eq(sig)
        return m


class AsmProduct(wiring.Component):
    """One weight times one activation, from the shared bank: select, shift, quartet add, sign.

    Combinational.  For each quartet: ``zero ? 0 : mult[sel] << shift``; quartets are added
    with weights ``16**i``; the sign negates.  A quartet code that decodes to no value
    (``alphabet[sel] << shift > 15``, or ``sel`` past the alphabet) sets ``invalid`` and that
    weight contributes 0 -- it is never turned into a wrong weight silently.

    Members
    -------
    mult : ``In(bank.mult layout)``
    code : ``In(asm_code_layout(fmt))``
    magnitude : ``Out(magnitude_shape)``, ``x * |w|`` (0 for an invalid code).
    negate : ``Out(1)``, the weight is negative (and valid): subtract ``magnitude``.
    product : ``Out(signed(product_bits))``, ``x * w`` for every valid code, 0 for an invalid one.
        The MAC array accumulates ``magnitude`` with add/subtract instead, which folds the
        negation into the accumulator's adder; ``product`` is for tests and proofs.
    invalid : ``Out(1)``
    """

    def __init__(self, *, alphabet="A4", weight_bits=8, act_bits=8, act_signed=False):
        self._alphabet = _check_alphabet(alphabet)
        _check_weight_bits(weight_bits)
        _check_act(act_bits, act_signed)
        self._fmt = AsmCodeFormat(weight_bits, self._alphabet)
        self._mult_shape = bank_mult_shape(self._alphabet, act_bits, act_signed)
        bound = asm_product_bound(act_bits, act_signed, weight_bits, self._alphabet)
        self._product_bits = signed_bits_for(-bound, bound)
        self._magnitude_shape = magnitude_shape(self._alphabet, weight_bits, act_bits, act_signed)
        super().__init__({
            "mult": In(data.ArrayLayout(self._mult_shape, len(self._alphabet))),
            "code": In(asm_code_layout(self._fmt)),
            "magnitude": Out(self._magnitude_shape),
            "negate": Out(1),
            "product": Out(signed(self._product_bits)),
            "invalid": Out(1),
        })

    product_bits = property(lambda self: self._product_bits, doc="Width of ``product``.")
    magnitude_shape = property(lambda self: self._magnitude_shape, doc="Shape of ``magnitude``.")
    fmt = property(lambda self: self._fmt, doc="The golden code format.")

    def elaborate(self, platform):
        m = Module()
        fmt = self._fmt
        invalid_mask = 0
        for c in fmt.invalid_quartet_codes():
            invalid_mask |= 1 << c
        qbits = fmt.quartet_bits

        partials = []
        bad = []
        for i in range(fmt.quartets):
            q = self.code.q[i]
            raw = q.as_value()
            # Select unit: mult[sel]; sel values past the alphabet are invalid, gated below.
            sel_val = Signal(self._mult_shape, name=f"q{i}_sel")
            if len(self._alphabet) == 1:
                m.d.comb += sel_val.eq(self.mult[0])          # nothing to select (no field)
            else:
                with m.Switch(q.sel):
                    for k in range(len(self._alphabet)):
                        with m.Case(k):
                            m.d.comb += sel_val.eq(self.mult[k])
                    with m.Default():
                        m.d.comb += sel_val.eq(0)
            is_zero = q.zero if fmt.has_zero_bit else (raw == fmt.zero_quartet_code)
            is_bad = Signal(name=f"q{i}_invalid")
            m.d.comb += is_bad.eq(Const(invalid_mask, 1 << qbits).bit_select(raw, 1))
            mshape = self._mult_shape
            pp = Signal((signed if mshape.signed else unsigned)(mshape.width + 3), name=f"q{i}_pp")
            # Shifter 0..3, then zero gating.
            m.d.comb += pp.eq(Mux(is_zero, 0, sel_val << q.shift))
            partials.append(pp)
            bad.append(is_bad)

        # Quartet adder: sum of partials weighted 16**i.  An invalid code anywhere in the
        # weight zeroes the whole product (and is flagged).
        m.d.comb += [
            self.invalid.eq(_any(bad)),
            self.magnitude.eq(Mux(self.invalid, 0,
                                  sum(pp << (4 * i) for i, pp in enumerate(partials)))),
            self.negate.eq(self.code.sign & ~self.invalid),
            self.product.eq(Mux(self.negate, -self.magnitude, self.magnitude)),
        ]
        return m


def _shift_sum(x, constant):
    """``constant * x`` as a sum of shifted copies of ``x`` (constant > 0)."""
    terms = [x << b for b in range(constant.bit_length()) if constant >> b & 1]
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


class AsmMacIO:
    """Payload layouts of :class:`AsmMacArray` and their packing to/from plain integers.

    A plain object (not elaboratable), so testbenches and the compiler can pack stream
    words without building the component.  Packing follows the ``lib.data`` layouts exactly
    (the layouts are the single source of the bit positions).
    """

    def __init__(self, *, alphabet, weight_bits, act_bits, act_signed, lanes, acc_bits,
                 ways=1):
        self.fmt = AsmCodeFormat(weight_bits, parse_alphabet(alphabet))
        self.act_bits, self.act_signed = act_bits, act_signed
        self.lanes, self.acc_bits = lanes, acc_bits
        self.code_layout = asm_code_layout(self.fmt)
        xs = _act_shape(act_bits, act_signed)
        self.input_layout = data.StructLayout({
            "x": data.ArrayLayout(xs, ways) if ways > 1 else xs,
            "w": data.ArrayLayout(data.ArrayLayout(self.code_layout, ways) if ways > 1
                                  else self.code_layout, lanes),
            "last": 1,
        })
        self.output_layout = mac_output_layout(acc_bits, lanes)

    def pack_input(self, x: int, codes, last: bool) -> int:
        """Input word from an activation, one weight code per lane and ``last``."""
        lay = self.input_layout
        if len(codes) != self.lanes:
            raise ValueError(f"Expected {self.lanes} weight codes, not {len(codes)}")
        word = (int(x) & ((1 << self.act_bits) - 1)) << lay["x"].offset
        cw = self.code_layout.size
        for n, code in enumerate(codes):
            if not 0 <= int(code) < (1 << cw):
                raise ValueError(f"Weight code {code} does not fit {cw} bits")
            word |= int(code) << (lay["w"].offset + n * cw)
        return word | (int(bool(last)) << lay["last"].offset)

    def unpack_output(self, word: int) -> dict:
        """``{"acc": [signed per lane], "bad_code": bool, "overrun": bool}`` of an output word."""
        lay = self.output_layout
        acc = []
        for n in range(self.lanes):
            v = (word >> (lay["acc"].offset + n * self.acc_bits)) & ((1 << self.acc_bits) - 1)
            acc.append(v - (1 << self.acc_bits) if v >> (self.acc_bits - 1) else v)
        return {"acc": acc, "bad_code": bool(word >> lay["bad_code"].offset & 1),
                "overrun": bool(word >> lay["overrun"].offset & 1)}


class AsmMacArray(MacPipeline):
    """``lanes`` ASM multiply-accumulate lanes sharing one activation stream and one bank.

    Computes, per lane, ``acc[lane] = sum_t x[t] * w[t, lane]`` over each accumulation
    (``gen.golden.asm_mac``), where ``w`` is given as ASM weight codes.

    Stream protocol
    ---------------
    ``i`` carries one term per transfer: the activation ``x``, one weight code per lane ``w``
    and ``last``.  ``last`` marks the final term of an accumulation: the result of that
    accumulation (the sum of every term since the previous ``last``, or since reset) is
    emitted on ``o`` and the accumulators are cleared, so the next term starts a new sum.
    An accumulation may have 1 to ``acc_len`` terms.

    ``o`` carries one result vector per accumulation: ``acc`` (one signed value per lane),
    ``bad_code`` (some weight code of this accumulation decoded to no value; it was counted
    as zero) and ``overrun`` (the accumulation had more than ``acc_len`` terms, so ``acc`` may
    have wrapped).  Results are in input order.  Flags are clear in every valid use.

    Timing
    ------
    ``LATENCY`` = 3 cycles from the transfer of a ``last`` term to ``o.valid``.
    ``THROUGHPUT`` = 1 term per cycle in steady state, with no bubbles: the pipeline stalls
    only when a finished result reaches the output register while the previous result is
    still waiting there (``o.ready`` low), so ``o`` may be held for up to ``n - 1`` cycles
    with an ``n``-term accumulation behind it at no loss of throughput.

    Parameters
    ----------
    alphabet : str or sequence of int
        ``"A1"``, ``"A2"``, ``"A4"``, ``"A8"`` or odd integers in 1..15 including 1.
    weight_bits : int
        Weight magnitude bits: 4, 8, 12 or 16 (a sign bit comes on top).
    act_bits : int
        Activation width, 1..32.
    act_signed : bool
        Activations are two's complement if true, unsigned otherwise.
    lanes : int
        Output lanes (weights per activation), >= 1.
    acc_len : int
        Longest accumulation, >= 1; sizes the accumulator.
    acc_bits : int or None
        Accumulator width; derived from ``acc_len`` if None, else checked to be wide enough.
    ways : int
        Activations per term (one of ``gen.plan.CPARS``): with ``ways > 1``, ``x`` is ``ways``
        activations, each lane takes ``ways`` codes and adds ``sum_j x[j] * w[j]``; one
        precompute bank per activation, shared by the lanes (a latency of 4).

    Raises
    ------
    TypeError, ValueError
        One sentence naming the bad parameter and repeating its value.
    """

    def __init__(self, *, alphabet="A4", weight_bits=8, act_bits=8, act_signed=False,
                 lanes=8, acc_len=1024, acc_bits=None, ways=1):
        if ways not in CPARS:
            raise TypeError(f"Ways must be one of {', '.join(map(str, CPARS))}, not {ways!r}")
        self.ways = ways
        p = self.validate(alphabet=alphabet, weight_bits=weight_bits, act_bits=act_bits,
                          act_signed=act_signed, lanes=lanes, acc_len=acc_len * ways,
                          acc_bits=acc_bits)
        self._alphabet, acc_bits = p["alphabet"], p["acc_bits"]
        self._weight_bits, self._act_bits, self._act_signed = weight_bits, act_bits, act_signed
        self._lanes, self._acc_len, self._acc_bits = lanes, acc_len, acc_bits
        self._fmt = AsmCodeFormat(weight_bits, self._alphabet)
        self._io = AsmMacIO(alphabet=self._alphabet, weight_bits=weight_bits, act_bits=act_bits,
                            act_signed=act_signed, lanes=lanes, acc_bits=acc_bits, ways=ways)
        super().__init__({
            "i": In(stream.Signature(self._io.input_layout)),
            "o": Out(stream.Signature(self._io.output_layout)),
        })

    @staticmethod
    def validate(*, alphabet="A4", weight_bits=8, act_bits=8, act_signed=False, lanes=8,
                 acc_len=1024, acc_bits=None) -> dict:
        """Check parameters without building anything; returns them normalised.

        Raises the same one-sentence errors as the constructor (callers such as the CLI use it
        so that a rejected parameter leaves no half-built component behind).
        """
        alphabet = _check_alphabet(alphabet)
        _check_weight_bits(weight_bits)
        _check_act(act_bits, act_signed)
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise TypeError(f"Lane count must be a positive integer, not {lanes!r}")
        if not isinstance(acc_len, int) or isinstance(acc_len, bool) or acc_len < 1:
            raise TypeError(f"Accumulation length must be a positive integer, not {acc_len!r}")
        need = asm_acc_bits(act_bits, act_signed, weight_bits, alphabet, acc_len)
        if acc_bits is None:
            acc_bits = need
        elif not isinstance(acc_bits, int) or isinstance(acc_bits, bool) or acc_bits < 1:
            raise TypeError(f"Accumulator bits must be a positive integer, not {acc_bits!r}")
        elif acc_bits < need:
            raise ValueError(f"Accumulator bits must be at least {need} for {acc_len} terms, "
                             f"not {acc_bits!r}")
        return {"alphabet": alphabet, "weight_bits": weight_bits, "act_bits": act_bits,
                "act_signed": act_signed, "lanes": lanes, "acc_len": acc_len,
                "acc_bits": acc_bits}

    # -- parameters (read-only) ----------------------------------------------------------
    alphabet = property(lambda self: self._alphabet, doc="Alphabet set, sorted.")
    weight_bits = property(lambda self: self._weight_bits, doc="Weight magnitude bits.")
    act_bits = property(lambda self: self._act_bits, doc="Activation width.")
    act_signed = property(lambda self: self._act_signed, doc="Activation signedness.")
    lanes = property(lambda self: self._lanes, doc="Output lanes.")
    acc_len = property(lambda self: self._acc_len, doc="Longest accumulation.")
    acc_bits = property(lambda self: self._acc_bits, doc="Accumulator width.")
    fmt = property(lambda self: self._fmt, doc="Weight code format (gen.golden.AsmCodeFormat).")
    unit = property(lambda self: self._fmt.encode(0, 1), doc="The code of weight +1 (pools).")
    zero = property(lambda self: self._fmt.encode_value(0), doc="The code of weight 0.")

    def params(self) -> dict:
        """Constructor arguments that rebuild this array."""
        return {"alphabet": alphabet_name(self._alphabet), "weight_bits": self._weight_bits,
                "act_bits": self._act_bits, "act_signed": self._act_signed,
                "lanes": self._lanes, "acc_len": self._acc_len, "acc_bits": self._acc_bits}

    io = property(lambda self: self._io, doc="Payload layouts and packing (:class:`AsmMacIO`).")

    #: From this many copies of the shared stage-1 registers (256 products per cycle;
    #: ``gen.plan.LOCAL_BANKS``) the copies hold the activations and each lane group has its
    #: own banks, registered in one more stage (1b): 8 wires per activation cross the array
    #: to each group instead of the bank's 44.
    LOCAL_BANKS = LOCAL_BANKS

    def _activations(self):
        """``(suffix, activation)`` of each activation of a term: ``x<suffix>`` names its
        register, ``mult<suffix>`` its bank's multiples (suffix ``j``, or none at one way)."""
        if self.ways > 1:
            return [(str(j), self.i.payload.x[j]) for j in range(self.ways)]
        return [("", self.i.payload.x)]

    def _bank(self, m, name, x):
        """A precompute bank on ``x`` (submodule ``name``); returns its multiples."""
        m.submodules[name] = bank = PrecomputeBank(
            alphabet=self._alphabet, act_bits=self._act_bits, act_signed=self._act_signed)
        m.d.comb += bank.x.eq(x)
        return bank.mult

    def _front(self, m):
        acts, codes = self._activations(), [("w", self.i.payload.w)]
        if self.copies >= self.LOCAL_BANKS:     # the activations; the banks are in stage 1b
            return [(f"x{s}", x) for s, x in acts] + codes
        # Stage 1: one precompute bank per activation, registered with the codes.
        return [(f"mult{s}", self._bank(m, f"bank{s}", x)) for s, x in acts] + codes

    def _between(self, m, s1):
        if self.copies < self.LOCAL_BANKS:
            return None
        # Stage 1b: each lane group's banks on its copy of the activations.
        suffixes = [s for s, _ in self._activations()]
        banks, out = {}, []
        for n in range(self._lanes):
            g = self.copy_of(n)
            values = {"w": s1[n]["w"]}
            for s in suffixes:
                if (g, s) not in banks:
                    banks[g, s] = self._bank(m, f"bank{s}_group{g}", s1[n][f"x{s}"])
                values[f"mult{s}"] = banks[g, s]
            out.append(values)
        return out

    def _products(self, m, s1):
        # Stage 2: per lane select / shift / quartet add; the sign goes to the accumulator.
        out = []
        if self.ways > 1:
            for n in range(self._lanes):
                cols = []
                for j in range(self.ways):
                    prod = AsmProduct(weight_bits=self._weight_bits, alphabet=self._alphabet,
                                      act_bits=self._act_bits, act_signed=self._act_signed)
                    m.submodules[f"lane{n}_{j}"] = prod
                    m.d.comb += [prod.mult.eq(s1[n][f"mult{j}"]),
                                 prod.code.eq(s1[n]["w"][n][j])]
                    cols.append((prod.magnitude, prod.negate, prod.invalid))
                out.append(cols)
            return out, prod.magnitude_shape
        for n in range(self._lanes):
            prod = AsmProduct(weight_bits=self._weight_bits, alphabet=self._alphabet,
                              act_bits=self._act_bits, act_signed=self._act_signed)
            m.submodules[f"lane{n}"] = prod
            m.d.comb += [prod.mult.eq(s1[n]["mult"]), prod.code.eq(s1[n]["w"][n])]
            out.append((prod.magnitude, prod.negate, prod.invalid))
        return out, prod.magnitude_shape
