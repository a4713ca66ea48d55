"""Integer-width helpers shared by the golden models."""

from __future__ import annotations

import numpy as np

__all__ = ["signed_bits_for", "act_range", "check_width", "requant_shift"]


def signed_bits_for(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer in [lo, hi]."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def act_range(act_bits: int, act_signed: bool) -> tuple[int, int]:
    if act_signed:
        return -(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1
    return 0, (1 << act_bits) - 1


def check_width(values, bits: int, what: str) -> None:
    """Raise :class:`OverflowError` unless every value fits ``bits``-bit two's complement."""
    arr = np.asarray(values, dtype=object)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if arr.size and (min(arr.flat) < lo or max(arr.flat) > hi):
        raise OverflowError(f"{what} exceeds its declared {bits}-bit signed width")


def requant_shift(v, s: int, clip: int = 127):
    """Rounding right shift (round half up, arithmetic) then saturation to ``[-clip, clip]``."""
    v = np.asarray(v, dtype=np.int64)
    if s > 0:
        v = (v + (np.int64(1) << (s - 1))) >> s
    return np.clip(v, -clip, clip)
