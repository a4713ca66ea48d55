"""SmartDeal golden model (algorithms.md section 2): the packed power-of-2 coefficient stream
(:class:`SdFormat`), its decoder and the basis rebuild."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import signed_bits_for

__all__ = ["SdFormat", "sd_pack", "sd_layer_stream", "sd_unpack", "sd_rebuild", "sd_weight_bits"]


# --------------------------------------------------------------------------------------------
# Power-of-2 sparse coefficients and SmartDeal rebuild (algorithms.md section 2)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SdFormat:
    """Packed coefficient stream of SmartDeal: the bit layout shared by the packer, the golden
    decoder and the RTL decoder (``insitu.rtl.pow2.Pow2Decoder``).

    A layer's coefficients are one little-endian bitstream (bit 0 of word 0 first), rows back
    to back in (filter, chunk, row) order, padded with zero bits to a whole ``word_bits`` word
    at the end only.  Each kernel row of 3 coefficients is::

        nz (1 bit)                      0: the row is all zero, nothing follows
        mask (3 bits, bit j = c_j != 0) only when nz
        for each j with mask bit set, ascending:
            sign (1 bit, 1 = negative) | expu (exp_bits), e = expu + e_min

    ``expu > e_max - e_min`` is an invalid code: the decoder flags it and the coefficient is
    treated as zero.  In memory a layer's stream is preceded by one header word holding its
    row count (:func:`sd_layer_stream`).  Bases are stored apart, one int8 3x3 per block.
    """

    e_min: int = -8
    e_max: int = 5
    word_bits: int = 32

    def __post_init__(self):
        for name in ("e_min", "e_max", "word_bits"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"SmartDeal {name} must be an integer, not {v!r}")
        if self.e_max < self.e_min:
            raise ValueError(f"SmartDeal e_max must be >= e_min, not {self.e_max} < {self.e_min}")
        if self.e_max - self.e_min > 30:
            raise ValueError(f"SmartDeal exponent range must span at most 31 values, not "
                             f"{self.e_max - self.e_min + 1}")
        if self.word_bits < self.max_row_bits or self.word_bits % 8:
            raise ValueError(f"SmartDeal word_bits must be a multiple of 8 and at least "
                             f"{self.max_row_bits}, not {self.word_bits}")

    @property
    def exp_bits(self) -> int:
        return max(1, (self.e_max - self.e_min).bit_length())

    @property
    def expu_max(self) -> int:
        return self.e_max - self.e_min

    @property
    def code_bits(self) -> int:
        return 1 + self.exp_bits

    @property
    def max_row_bits(self) -> int:
        return 4 + 3 * (1 + max(1, (self.e_max - self.e_min).bit_length()))

    def row_bits(self, mask: int) -> int:
        return 1 if mask == 0 else 4 + bin(mask).count("1") * self.code_bits


def sd_pack(elemmask, sgn, expu, fmt: SdFormat) -> tuple[list[int], int]:
    """Pack rows (``elemmask/sgn/expu``: ``[N, 3]``) into words; returns ``(words, bits)``.

    A row whose mask is all zero is an empty row (1 bit).  ``bits`` is the payload length
    before the final padding.
    """
    elemmask = np.asarray(elemmask).astype(bool)
    sgn = np.asarray(sgn)
    expu = np.asarray(expu)
    acc = 0
    pos = 0
    for r in range(elemmask.shape[0]):
        mask = sum(1 << j for j in range(3) if elemmask[r, j])
        if mask == 0:
            pos += 1                                  # nz = 0
            continue
        acc |= (1 | (mask << 1)) << pos
        pos += 4
        for j in range(3):
            if mask >> j & 1:
                e = int(expu[r, j])
                if not 0 <= e < (1 << fmt.exp_bits):
                    raise ValueError(f"Exponent code {e} does not fit {fmt.exp_bits} bits")
                acc |= (int(sgn[r, j]) & 1 | (e << 1)) << pos
                pos += fmt.code_bits
    n_words = max(1, -(-pos // fmt.word_bits))
    mask_w = (1 << fmt.word_bits) - 1
    return [(acc >> (i * fmt.word_bits)) & mask_w for i in range(n_words)], pos


def sd_layer_stream(elemmask, sgn, expu, fmt: SdFormat) -> list[int]:
    """The words the decoder reads for one layer: a header word with the row count, then
    :func:`sd_pack`'s words."""
    words, _ = sd_pack(elemmask, sgn, expu, fmt)
    n_rows = int(np.asarray(elemmask).shape[0])
    if n_rows >= 1 << fmt.word_bits:
        raise ValueError(f"{n_rows} rows do not fit a {fmt.word_bits}-bit header")
    return [n_rows] + words


def sd_unpack(words, n_rows: int, fmt: SdFormat):
    """Golden decoder: ``(elemmask, sgn, expu, err)`` of ``n_rows`` rows, each ``[n_rows, 3]``
    (``err`` is ``[n_rows]``).  An out-of-range exponent sets ``err`` and zeroes that element;
    a stream too short for ``n_rows`` raises :class:`ValueError`.
    """
    stream = 0
    for i, w in enumerate(words):
        stream |= (int(w) & ((1 << fmt.word_bits) - 1)) << (i * fmt.word_bits)
    total = len(words) * fmt.word_bits
    elemmask = np.zeros((n_rows, 3), dtype=np.int64)
    sgn = np.zeros((n_rows, 3), dtype=np.int64)
    expu = np.zeros((n_rows, 3), dtype=np.int64)
    err = np.zeros(n_rows, dtype=np.int64)
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > total:
            raise ValueError(f"Coefficient stream ends after {total} bits, inside row {r}")
        v = (stream >> pos) & ((1 << n) - 1)
        pos += n
        return v

    for r in range(n_rows):
        if not take(1):
            continue
        mask = take(3)
        for j in range(3):
            if mask >> j & 1:
                s = take(1)
                e = take(fmt.exp_bits)
                if e > fmt.expu_max:
                    err[r] = 1
                    continue
                elemmask[r, j], sgn[r, j], expu[r, j] = 1, s, e
    return elemmask, sgn, expu, err


def sd_rebuild(B_int, elemmask, sgn, expu):
    """SmartDeal exact rebuild of one block: ``W_fix[r, k] = sum_j c[r, j] * B[j, k]``.

    ``c = (-1)**sgn * 2**expu`` where the element mask is set, else 0 (a plain integer matrix
    product, not the hardware's shift-add).  Real weight = ``W_fix * sB * 2**e_min``.
    """
    B = np.asarray(B_int, dtype=np.int64).reshape(3, 3)
    c = np.where(np.asarray(elemmask) != 0,
                 np.where(np.asarray(sgn) != 0, -1, 1) * (np.int64(1) << np.asarray(expu, dtype=np.int64)),
                 0).astype(np.int64)
    return c @ B




def sd_weight_bits(basis_bits: int, fmt: SdFormat) -> int:
    """Signed width of an exactly rebuilt SmartDeal weight: ``3 * 2**(basis_bits-1) << expu_max``."""
    bound = 3 * (1 << (basis_bits - 1)) << fmt.expu_max
    return signed_bits_for(-bound, bound)
