"""Stimulus and golden results for the weight generators (pure numpy + golden model)."""

from __future__ import annotations

import numpy as np

from ..gen.golden import SdFormat, requant_shift, sd_layer_stream, sd_rebuild, sd_unpack
from ..rtl.weightgen import MlgWeightGen, SdWeightGen, mlg_input_layout, sd_basis_layout
from .sd_vectors import random_rows

__all__ = ["trained_like", "sd_blocks_from_layer", "sd_stream", "sd_expected",
           "sd_adversarial_blocks", "sd_basis_words", "sd_unpack_rows", "mlg_terms",
           "mlg_input_words", "mlg_unpack_kernels"]


def trained_like(rng, shape, rank=4):
    """Weights shaped like trained ones: a low-rank part plus 10% noise, He-scaled."""
    fan = int(np.prod(shape[1:]))
    w = rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, fan))
    return ((w + 0.1 * rng.standard_normal(w.shape)) / np.sqrt(fan)).reshape(shape)


def _signed(v: int, width: int) -> int:
    return v - (1 << width) if v >> (width - 1) else v


def _field(word: int, field, width: int | None = None) -> int:
    return (word >> field.offset) & ((1 << (width or 1)) - 1)


def sd_blocks_from_layer(sd):
    """``[(B_int[3,3], shift, (mask, sgn, expu))]`` of a compressed ``SdLayer``, stream order."""
    blocks = []
    for co in range(sd.cout):
        for s in range(sd.n_chunks):
            blocks.append((sd.basis[co, s], int(sd.shifts[co]), sd.block_rows(co, s)))
    return blocks


def sd_adversarial_blocks(rng, fmt: SdFormat, basis_bits: int = 8):
    """Blocks at the extremes: the most negative and the most positive basis with every
    coefficient at the largest exponent (longest chunk, 192 dense rows), all-zero blocks,
    a zero basis, out-of-range exponent codes, single-row blocks and random blocks."""
    lo, hi = -(1 << (basis_bits - 1)), (1 << (basis_bits - 1)) - 1
    one = np.ones((192, 3), dtype=np.int64)
    zero = np.zeros((192, 3), dtype=np.int64)
    top = np.full((192, 3), fmt.expu_max)
    blocks = [
        (np.full((3, 3), lo), 16, (one, zero, top)),               # all +2^max * -128
        (np.full((3, 3), hi), 16, (one, one, top)),                # all -2^max * 127
        (np.full((3, 3), lo), 0, (one, one, top)),                 # saturates at +127
        (rng.integers(lo, hi + 1, (3, 3)), 3, (zero, zero, zero)),  # all-zero rows
        (np.zeros((3, 3), dtype=np.int64), 0, (one[:9], zero[:9], top[:9])),
        (rng.integers(lo, hi + 1, (3, 3)), 1, (one[:1], one[:1], zero[:1])),
    ]
    for shift in (0, 5, 11):
        m, s, e = random_rows(rng, 30, fmt, 0.6, bad=0.15)
        blocks.append((rng.integers(lo, hi + 1, (3, 3)), shift, (m, s, e)))
    return blocks


def sd_stream(blocks, fmt: SdFormat):
    """Coefficient words (header + rows) and basis entries ``(b[9], shift, rows)``."""
    m = np.concatenate([b[2][0] for b in blocks])
    s = np.concatenate([b[2][1] for b in blocks])
    e = np.concatenate([b[2][2] for b in blocks])
    words = sd_layer_stream(m, s, e, fmt)
    basis = [([int(v) for v in np.asarray(B).reshape(-1)], sh, len(rows[0])) for B, sh, rows in blocks]
    return words, basis


def sd_expected(blocks, fmt: SdFormat, requant: bool):
    """Golden output rows: ``{"w": [3], "err", "last", "end"}`` in order (codes decoded by the
    golden decoder first, so out-of-range exponents count as zero and set ``err``)."""
    words, _ = sd_stream(blocks, fmt)
    M, S, E, err = sd_unpack(words[1:], words[0], fmt)
    out = []
    r0 = 0
    for bi, (B, shift, rows) in enumerate(blocks):
        n = len(rows[0])
        W = sd_rebuild(B, M[r0:r0 + n], S[r0:r0 + n], E[r0:r0 + n])
        if requant:
            W = requant_shift(W, shift)
        for r in range(n):
            out.append({"w": [int(v) for v in W[r]], "err": int(err[r0 + r]), "last": int(r == n - 1),
                        "end": int(r0 + r == len(M) - 1)})
        r0 += n
    return out


def mlg_terms(mlg):
    """Input terms and golden kernels of a compressed ``MlgLayer``, in (co, c, o) order.

    Returns ``(terms, expected)``: each term is ``{"b": [[code]*K2]*rows, "u": [...], "v": code,
    "last": bool}``; ``expected`` is ``[[w]*K2]`` per (co, c).
    """
    cout, cin = mlg.shape[0], mlg.shape[1]
    K2 = mlg.k2
    W = mlg.weight_int().reshape(cout, cin, K2)
    terms, expected = [], []
    Bo = mlg.Bo
    for co in range(cout):
        for c in range(cin):
            o_range = range(Bo) if mlg.level2 else [co]
            for i, o in enumerate(o_range):
                if mlg.level1:
                    b = [[int(x) for x in mlg.basis[o, bb]] for bb in range(mlg.Bi)]
                    u = [int(x) for x in mlg.coeff_in[o, c]]
                else:
                    flat = mlg.basis.reshape(mlg.basis.shape[0], cin, K2)
                    b = [[int(x) for x in flat[o, c]]]
                    u = []
                v = int(mlg.coeff_out[co, o]) if mlg.level2 else 0
                terms.append({"b": b, "u": u, "v": v, "last": i == len(o_range) - 1})
            expected.append([int(x) for x in W[co, c]])
    return terms, expected


# -- stream words of the generators (layouts from rtl.weightgen) ------------------------------

def sd_basis_words(basis, basis_bits: int) -> list[int]:
    """``i_basis`` words of ``SdWeightGen`` for ``sd_stream``'s basis entries."""
    lay = sd_basis_layout(basis_bits)
    return [lay.const({"b": b, "shift": sh, "rows": r}).as_bits() for b, sh, r in basis]


def sd_unpack_rows(words, out_bits: int) -> list[dict]:
    """``SdWeightGen`` output words as the dicts :func:`sd_expected` gives."""
    lay = SdWeightGen.output_layout(out_bits)
    mask = (1 << out_bits) - 1
    return [{"w": [_signed((w >> (lay["w"].offset + k * out_bits)) & mask, out_bits) for k in range(3)],
             "err": _field(w, lay["err"]), "last": _field(w, lay["last"]),
             "end": _field(w, lay["end"])} for w in words]


def mlg_input_words(terms, Bi, K2, qb, qu, qv, level1, level2) -> list[int]:
    """``MlgWeightGen`` input words of :func:`mlg_terms`' terms."""
    lay = mlg_input_layout(Bi, K2, qb, qu, qv, level1, level2)
    words = []
    for t in terms:
        value = {"b": t["b"], "last": int(t["last"])}
        if level1:
            value["u"] = t["u"]
        if level2:
            value["v"] = t["v"]
        words.append(lay.const(value).as_bits())
    return words


def mlg_unpack_kernels(words, K2: int, w_bits: int) -> list[list[int]]:
    """``MlgWeightGen`` output words as kernels; raises if a word has ``overrun`` set."""
    lay = MlgWeightGen.output_layout(K2, w_bits)
    mask = (1 << w_bits) - 1
    out = []
    for w in words:
        if _field(w, lay["overrun"]):
            raise AssertionError("MLG generator flagged overrun")
        out.append([_signed((w >> (lay["w"].offset + t * w_bits)) & mask, w_bits) for t in range(K2)])
    return out
