"""Baseline MAC arrays for the hardware benchmark, built by the same pipeline as the ASM array.

* :class:`ExactMacArray`: two's-complement weights times activations with an ordinary
  multiplier (``x * w``): LUTs by default, DSP blocks when synthesized with ``-dsp``.
* :class:`Pow2MacArray`: weights ``0`` or ``+-2**e`` (sign, exponent, zero flag): a barrel
  shift of the activation and an add/subtract -- the single-term power-of-2 MAC.

Both share :class:`~.mac.MacPipeline` (stream interface, 3-cycle latency, one term per cycle)
with :class:`~.asm.AsmMacArray`, so resource counts compare the product datapaths alone.
Golden: ``gen.golden.asm_mac`` (a plain product).
"""

from __future__ import annotations

from amaranth.hdl import Const, Mux, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from ..gen.golden import act_range, signed_bits_for
from ..gen.plan import CPARS
from .mac import MacPipeline, mac_output_layout

__all__ = ["ExactMacArray", "Pow2MacArray", "pow2_code_layout"]


def _check(lanes, act_bits, acc_len):
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise TypeError(f"Lane count must be a positive integer, not {lanes!r}")
    if not isinstance(act_bits, int) or isinstance(act_bits, bool) or not 1 <= act_bits <= 32:
        raise TypeError(f"Activation bits must be an integer in 1..32, not {act_bits!r}")
    if not isinstance(acc_len, int) or isinstance(acc_len, bool) or acc_len < 1:
        raise TypeError(f"Accumulation length must be a positive integer, not {acc_len!r}")


class ExactMacArray(MacPipeline):
    """``lanes`` exact MAC lanes: ``acc += x * w`` with a multiplier (``weight_bits`` signed).
    With ``ways > 1`` a term is ``ways`` activations and ``ways`` weights per lane: ``acc +=
    sum_j x[j] * w[j]``."""

    def __init__(self, *, weight_bits=8, act_bits=8, act_signed=False, lanes=8, acc_len=1024,
                 ways=1):
        _check(lanes, act_bits, acc_len)
        if ways not in CPARS:
            raise TypeError(f"Ways must be one of {', '.join(map(str, CPARS))}, not {ways!r}")
        self.ways = ways
        if not isinstance(weight_bits, int) or isinstance(weight_bits, bool) or not 2 <= weight_bits <= 32:
            raise TypeError(f"Weight bits must be an integer in 2..32, not {weight_bits!r}")
        lo, hi = act_range(act_bits, act_signed)
        bound = acc_len * ways * max(-lo, hi) * (1 << (weight_bits - 1))
        self._lanes, self._acc_len = lanes, acc_len
        self._acc_bits = signed_bits_for(-bound, bound)
        self._weight_bits, self._act_bits, self._act_signed = weight_bits, act_bits, act_signed
        self._pbits = signed_bits_for(-max(-lo, hi) * (1 << (weight_bits - 1)),
                                      max(-lo, hi) * (1 << (weight_bits - 1)))
        xs = signed(act_bits) if act_signed else unsigned(act_bits)
        ws = signed(weight_bits)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "x": data.ArrayLayout(xs, ways) if ways > 1 else xs,
                "w": data.ArrayLayout(data.ArrayLayout(ws, ways) if ways > 1 else ws, lanes),
                "last": 1}))),
            "o": Out(stream.Signature(mac_output_layout(self._acc_bits, lanes))),
        })

    acc_bits = property(lambda self: self._acc_bits)
    unit = 1                      # weight +1 (pools)
    zero = 0

    def params(self):
        return {"weight_bits": self._weight_bits, "act_bits": self._act_bits,
                "act_signed": self._act_signed, "lanes": self._lanes, "acc_len": self._acc_len}

    def _front(self, m):
        return [("x", self.i.payload.x), ("w", self.i.payload.w)]

    def _products(self, m, s1):
        shape = signed(self._pbits)
        if self.ways > 1:
            return [[(s1[n]["x"][j] * s1[n]["w"][n][j], Const(0), Const(0))
                     for j in range(self.ways)] for n in range(self._lanes)], shape
        return [(s1[n]["x"] * s1[n]["w"][n], Const(0), Const(0))
                for n in range(self._lanes)], shape


def pow2_code_layout(exp_bits: int) -> data.StructLayout:
    """A power-of-2 weight: ``0 if zero else (-1)**sign * 2**exp``."""
    return data.StructLayout({"exp": exp_bits, "sign": 1, "zero": 1})


class Pow2MacArray(MacPipeline):
    """``lanes`` power-of-2 MAC lanes: ``acc +/-= x << exp`` (no multiplier)."""

    def __init__(self, *, exp_bits=3, act_bits=8, act_signed=False, lanes=8, acc_len=1024):
        _check(lanes, act_bits, acc_len)
        if not isinstance(exp_bits, int) or isinstance(exp_bits, bool) or not 1 <= exp_bits <= 5:
            raise TypeError(f"Exponent bits must be an integer in 1..5, not {exp_bits!r}")
        lo, hi = act_range(act_bits, act_signed)
        top = max(-lo, hi) << ((1 << exp_bits) - 1)
        self._lanes, self._acc_len = lanes, acc_len
        self._acc_bits = signed_bits_for(-acc_len * top, acc_len * top)
        self._exp_bits, self._act_bits, self._act_signed = exp_bits, act_bits, act_signed
        self._mshape = signed(signed_bits_for(lo << ((1 << exp_bits) - 1), top)) if act_signed \
            else unsigned(top.bit_length())
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "x": signed(act_bits) if act_signed else unsigned(act_bits),
                "w": data.ArrayLayout(pow2_code_layout(exp_bits), lanes),
                "last": 1}))),
            "o": Out(stream.Signature(mac_output_layout(self._acc_bits, lanes))),
        })

    acc_bits = property(lambda self: self._acc_bits)

    def params(self):
        return {"exp_bits": self._exp_bits, "act_bits": self._act_bits,
                "act_signed": self._act_signed, "lanes": self._lanes, "acc_len": self._acc_len}

    def _front(self, m):
        return [("x", self.i.payload.x), ("w", self.i.payload.w)]

    def _products(self, m, s1):
        out = []
        for n in range(self._lanes):
            w = s1[n]["w"][n]
            out.append((Mux(w.zero, 0, s1[n]["x"] << w.exp), w.sign & ~w.zero, Const(0)))
        return out, self._mshape
