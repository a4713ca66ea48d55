"""ASM golden model (algorithms.md section 3): alphabet sets, representable magnitudes,
nearest-representable rounding, the per-quartet weight code (:class:`AsmCodeFormat`) and the
MAC reference :func:`asm_mac` (an ordinary product, never the select/shift/add datapath)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .common import act_range, check_width, signed_bits_for

__all__ = ["ALPHABETS", "parse_alphabet", "alphabet_name", "quartet_ok", "representable",
           "nearest_lut", "asm_quantize", "AsmCodeFormat", "asm_product_bound", "asm_acc_bits",
           "asm_mac", "asm_mul_shift_add"]

ALPHABETS: dict[str, tuple[int, ...]] = {
    "A1": (1,),
    "A2": (1, 3),
    "A4": (1, 3, 5, 7),
    "A8": tuple(range(1, 16, 2)),
}


def parse_alphabet(alphabet) -> tuple[int, ...]:
    """Normalise an alphabet given as a name (``"A2"``), a string (``"1,3"``) or a sequence.

    Returns a sorted tuple of distinct odd integers in 1..15 that contains 1.
    Raises :class:`ValueError` with one sentence naming the bad value otherwise.
    """
    original = alphabet
    if isinstance(alphabet, str):
        key = alphabet.strip().upper()
        if key in ALPHABETS:
            return ALPHABETS[key]
        try:
            alphabet = [int(part) for part in alphabet.replace(" ", "").split(",") if part != ""]
        except ValueError:
            raise ValueError(f"Alphabet must be one of {', '.join(ALPHABETS)} or a comma-separated "
                             f"list of odd integers, not {original!r}") from None
    try:
        values = list(alphabet)
    except TypeError:
        raise ValueError(f"Alphabet must be a set of odd integers in 1..15, not {original!r}") from None
    if (not values or any(not isinstance(a, (int, np.integer)) or isinstance(a, bool) for a in values)
            or any(a < 1 or a > 15 or a % 2 == 0 for a in values)):
        raise ValueError(f"Alphabet must contain odd integers in 1..15, not {original!r}")
    values = sorted({int(a) for a in values})
    if values[0] != 1:
        raise ValueError(f"Alphabet must contain 1, not {original!r}")
    return tuple(values)


def alphabet_name(alphabet) -> str:
    """``"A2"`` for a named set, else the values joined by commas."""
    values = parse_alphabet(alphabet)
    for name, named in ALPHABETS.items():
        if named == values:
            return name
    return ",".join(str(a) for a in values)


def _ctz(q: int) -> int:
    return (q & -q).bit_length() - 1


def quartet_ok(q: int, alphabet) -> bool:
    """A quartet value 0..15 is supported iff it is 0 or its odd part is in the alphabet."""
    alphabet = parse_alphabet(alphabet)
    return q == 0 or (q >> _ctz(q)) in alphabet


def _check_weight_bits(weight_bits) -> int:
    if not isinstance(weight_bits, int) or isinstance(weight_bits, bool) or weight_bits < 4:
        raise ValueError(f"Weight magnitude bits must be a positive multiple of 4, not {weight_bits!r}")
    if weight_bits % 4:
        raise ValueError(f"Weight magnitude bits must be a multiple of 4, not {weight_bits!r}")
    return weight_bits


@lru_cache(maxsize=None)
def _representable(weight_bits: int, alphabet: tuple[int, ...]) -> np.ndarray:
    nq = weight_bits // 4
    ok = [quartet_ok(q, alphabet) for q in range(16)]
    values = [m for m in range(1 << weight_bits)
              if all(ok[(m >> (4 * i)) & 15] for i in range(nq))]
    out = np.array(values, dtype=np.int64)
    out.setflags(write=False)
    return out


def representable(weight_bits: int, alphabet) -> np.ndarray:
    """Sorted magnitudes of ``weight_bits`` bits whose every quartet is supported."""
    return _representable(_check_weight_bits(weight_bits), parse_alphabet(alphabet))


@lru_cache(maxsize=None)
def _nearest_lut(weight_bits: int, alphabet: tuple[int, ...]) -> np.ndarray:
    rep = _representable(weight_bits, alphabet)
    lut = np.empty(1 << weight_bits, dtype=np.int64)
    # For each magnitude m: the nearest representable value, ties to the smaller one.
    # rep is sorted, so searchsorted gives the first value >= m; compare with the one below.
    m = np.arange(1 << weight_bits, dtype=np.int64)
    hi_idx = np.searchsorted(rep, m, side="left")
    hi_idx_c = np.minimum(hi_idx, len(rep) - 1)
    lo_idx = np.maximum(hi_idx - 1, 0)
    hi = rep[hi_idx_c]
    lo = rep[lo_idx]
    use_hi = (hi >= m) & ((hi - m) < (m - lo))          # strict: ties go to the smaller (lo)
    exact = hi == m
    lut[:] = np.where(exact | use_hi, hi, lo)
    lut.setflags(write=False)
    return lut


def nearest_lut(weight_bits: int, alphabet) -> np.ndarray:
    """The 2^N-entry table over the whole magnitude: nearest representable, ties to smaller."""
    return _nearest_lut(_check_weight_bits(weight_bits), parse_alphabet(alphabet))


def asm_quantize(w, scale: float, weight_bits: int, alphabet):
    """Offline projection of float weights onto the ASM grid (algorithms.md 3.3, M2).

    ``|w| / scale`` is rounded half-to-even to an N-bit integer, clipped, then mapped
    through :func:`nearest_lut`.  ``scale`` is one number or one per output channel (axis 0
    of ``w``).  Returns ``(sign, magnitude)`` int64 arrays; the real weight is
    ``(-1)**sign * magnitude * scale``.
    """
    w = np.asarray(w, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError("Weights must be finite, but contain NaN or inf")
    arr = np.asarray(scale, dtype=np.float64)
    if not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
        raise ValueError(f"Quantiser scale must be a positive finite number, not {scale!r}")
    scale = arr
    if scale.ndim:
        scale = scale.reshape((-1,) + (1,) * (w.ndim - 1))
    lut = nearest_lut(weight_bits, alphabet)
    q = np.minimum(np.rint(np.abs(w) / scale), (1 << weight_bits) - 1).astype(np.int64)
    mag = lut[q]
    sign = ((w < 0) & (mag != 0)).astype(np.int64)
    return sign, mag


# --------------------------------------------------------------------------------------------
# ASM weight code
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AsmCodeFormat:
    """Bit layout of one ASM weight code: sign + per-quartet (select, shift[, zero]).

    Each 4-bit quartet ``q`` of the magnitude is ``alphabet[sel] << shift`` (shift 0..3) or 0.
    Fields, least significant first::

        quartet 0: shift (2 bits) [| sel (sel_bits, absent for a 1-member alphabet)] [| zero (1 bit)]
        quartet 1: ...
        sign (1 bit, 1 = negative)

    Zero quartets: when some (sel, shift) pair is unusable because ``alphabet[sel] << shift``
    exceeds 15 (any alphabet with a member >= 3), the pair ``(sel = len(alphabet) - 1,
    shift = 3)`` is reserved as the zero code and no zero bit is stored; alphabet {1} needs
    the explicit zero bit.  Any other pair that exceeds 15 is an *invalid* code: the
    decoder rejects it and the hardware flags it.

    Widths: A1 3, A2 3, A4 4, A8 5 bits per quartet, plus one sign bit.
    """

    weight_bits: int
    alphabet: tuple[int, ...]

    def __post_init__(self):
        _check_weight_bits(self.weight_bits)
        object.__setattr__(self, "alphabet", parse_alphabet(self.alphabet))

    @property
    def quartets(self) -> int:
        return self.weight_bits // 4

    @property
    def sel_bits(self) -> int:
        return (len(self.alphabet) - 1).bit_length()

    @property
    def has_zero_bit(self) -> bool:
        return (self.alphabet[-1] << 3) <= 15

    @property
    def zero_quartet_code(self) -> int:
        """Quartet code of the value 0: the zero bit, or the reserved ``(last sel, shift 3)``."""
        if self.has_zero_bit:
            return 1 << (2 + self.sel_bits)
        return 3 | ((len(self.alphabet) - 1) << 2)

    @property
    def quartet_bits(self) -> int:
        return 2 + self.sel_bits + int(self.has_zero_bit)

    @property
    def width(self) -> int:
        return self.quartets * self.quartet_bits + 1

    @property
    def sign_offset(self) -> int:
        return self.quartets * self.quartet_bits

    def quartet_fields(self) -> list[tuple[str, int]]:
        """``[(name, width), ...]`` of one quartet, least significant first."""
        fields = [("shift", 2)]
        if self.sel_bits:                  # alphabet {1} has nothing to select: no field
            fields.append(("sel", self.sel_bits))
        if self.has_zero_bit:
            fields.append(("zero", 1))
        return fields

    # -- one quartet ---------------------------------------------------------------------
    def encode_quartet(self, q: int) -> int:
        q = int(q)
        if not 0 <= q <= 15:
            raise ValueError(f"Quartet value must be in 0..15, not {q!r}")
        if q == 0:
            return self.zero_quartet_code
        shift = _ctz(q)
        odd = q >> shift
        if odd not in self.alphabet:
            raise ValueError(f"Quartet value {q} is not representable with alphabet "
                             f"{alphabet_name(self.alphabet)}")
        return shift | (self.alphabet.index(odd) << 2)

    def decode_quartet(self, code: int) -> int:
        code = int(code)
        if not 0 <= code < (1 << self.quartet_bits):
            raise ValueError(f"Quartet code must be in 0..{(1 << self.quartet_bits) - 1}, not {code}")
        shift = code & 3
        sel = (code >> 2) & ((1 << self.sel_bits) - 1)
        if self.has_zero_bit:
            if code >> (2 + self.sel_bits):
                return 0
        elif sel == len(self.alphabet) - 1 and shift == 3:
            return 0
        if sel >= len(self.alphabet):
            raise ValueError(f"Quartet code {code:#x} selects alphabet entry {sel}, but alphabet "
                             f"{alphabet_name(self.alphabet)} has {len(self.alphabet)}")
        value = self.alphabet[sel] << shift
        if value > 15:
            raise ValueError(f"Quartet code {code:#x} decodes to {self.alphabet[sel]}<<{shift} = "
                             f"{value}, which does not fit a quartet")
        return value

    # -- whole weight ------------------------------------------------------------------
    def encode(self, sign: int, magnitude: int) -> int:
        """Code of the weight ``(-1)**sign * magnitude``."""
        magnitude = int(magnitude)
        if not 0 <= magnitude < (1 << self.weight_bits):
            raise ValueError(f"Weight magnitude must be in 0..{(1 << self.weight_bits) - 1}, "
                             f"not {magnitude}")
        code = 0
        for i in range(self.quartets):
            code |= self.encode_quartet((magnitude >> (4 * i)) & 15) << (i * self.quartet_bits)
        return code | (int(bool(sign)) << self.sign_offset)

    def encode_value(self, w: int) -> int:
        """Code of a signed integer weight."""
        return self.encode(int(w) < 0, abs(int(w)))

    def decode(self, code: int) -> tuple[int, int]:
        """``(sign, magnitude)`` of a code; raises :class:`ValueError` for an invalid code."""
        code = int(code)
        if not 0 <= code < (1 << self.width):
            raise ValueError(f"Weight code must be in 0..{(1 << self.width) - 1}, not {code}")
        mask = (1 << self.quartet_bits) - 1
        mag = 0
        for i in range(self.quartets):
            mag |= self.decode_quartet((code >> (i * self.quartet_bits)) & mask) << (4 * i)
        return (code >> self.sign_offset) & 1, mag

    def decode_value(self, code: int) -> int:
        sign, mag = self.decode(code)
        return -mag if sign else mag

    def is_valid(self, code: int) -> bool:
        try:
            self.decode(code)
        except ValueError:
            return False
        return True

    def invalid_quartet_codes(self) -> list[int]:
        """Every quartet code that decodes to no value (the hardware must flag these)."""
        return [c for c in range(1 << self.quartet_bits) if not self._quartet_valid(c)]

    def _quartet_valid(self, c: int) -> bool:
        try:
            self.decode_quartet(c)
        except ValueError:
            return False
        return True


# --------------------------------------------------------------------------------------------
# ASM MAC reference
# --------------------------------------------------------------------------------------------





def asm_product_bound(act_bits: int, act_signed: bool, weight_bits: int, alphabet) -> int:
    """Largest |x * w| over every activation and every representable weight."""
    lo, hi = act_range(act_bits, act_signed)
    return max(-lo, hi) * int(representable(weight_bits, alphabet)[-1])


def asm_acc_bits(act_bits: int, act_signed: bool, weight_bits: int, alphabet, acc_len: int) -> int:
    """Accumulator width that cannot overflow for ``acc_len`` terms of any valid operands."""
    bound = acc_len * asm_product_bound(act_bits, act_signed, weight_bits, alphabet)
    return signed_bits_for(-bound, bound)




def asm_mac(x, w, *, acc_bits: int | None = None, act_bits: int | None = None,
            act_signed: bool = False, weight_bits: int | None = None, alphabet=None):
    """MAC reference: ``acc[lane] = sum_t x[t] * w[t, lane]`` with a plain product.

    ``x``: ``[T]`` activations; ``w``: ``[T, lanes]`` signed integer weights.  When
    ``act_bits``/``weight_bits``/``alphabet`` are given, operands are checked to be in range
    and representable; when ``acc_bits`` is given every partial sum is checked against it.
    Python integers are used throughout, so nothing can wrap.
    """
    x = [int(v) for v in np.asarray(x).reshape(-1)]
    w = np.asarray(w)
    if w.ndim == 1:
        w = w.reshape(-1, 1)
    if w.shape[0] != len(x):
        raise ValueError(f"Weights have {w.shape[0]} terms but activations have {len(x)}")
    if act_bits is not None:
        lo, hi = act_range(act_bits, act_signed)
        bad = [v for v in x if not lo <= v <= hi]
        if bad:
            raise OverflowError(f"Activation {bad[0]} exceeds {act_bits}-bit "
                                f"{'signed' if act_signed else 'unsigned'} range")
    if weight_bits is not None:
        rep = set(int(v) for v in (representable(weight_bits, alphabet) if alphabet is not None
                                   else range(1 << weight_bits)))
        for v in w.reshape(-1):
            if abs(int(v)) not in rep:
                raise ValueError(f"Weight {int(v)} is not representable in {weight_bits} magnitude "
                                 f"bits" + (f" with alphabet {alphabet_name(alphabet)}"
                                            if alphabet is not None else ""))
    lanes = w.shape[1]
    acc = [0] * lanes
    for t, xv in enumerate(x):
        for lane in range(lanes):
            acc[lane] += xv * int(w[t, lane])
        if acc_bits is not None:
            check_width(acc, acc_bits, f"Accumulator after term {t}")
    return np.array(acc, dtype=object if acc_bits is None or acc_bits > 63 else np.int64)


def asm_mul_shift_add(x: int, sign: int, magnitude: int, alphabet, weight_bits: int) -> int:
    """The select/shift/add datapath of algorithms.md 3.6, for documentation and tests only.

    Tests check it equals ``x * w``; the MAC reference :func:`asm_mac` does not use it.
    """
    alphabet = parse_alphabet(alphabet)
    pre = {a: a * x for a in alphabet}
    p = 0
    for i in range(weight_bits // 4):
        q = (magnitude >> (4 * i)) & 15
        if q:
            s = _ctz(q)
            a = q >> s
            if a not in pre:
                raise ValueError(f"Quartet {q} is not supported by alphabet {alphabet_name(alphabet)}")
            p += (pre[a] << s) << (4 * i)
    return -p if sign else p
