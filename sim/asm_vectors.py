"""Stimulus for the ASM MAC array, shared by the Amaranth-simulator tests and the cocotb bench.

Pure numpy + golden model.  An accumulation is ``(x[T], w[T, lanes])`` of signed integer
weights; :func:`expected` gives the golden result of each.
"""

from __future__ import annotations

import numpy as np

from ..gen.golden import AsmCodeFormat, act_range, asm_mac, representable

__all__ = ["make_accumulations", "expected", "encode_weights", "bad_code_case"]


def _signed_rep(weight_bits, alphabet):
    rep = representable(weight_bits, alphabet)
    return np.concatenate([-rep[1:], rep])


def make_accumulations(p: dict, seed: int, n_random: int = 24, max_len: int = 24):
    """Seeded random accumulations followed by the extreme cases.

    Extremes: the longest sum (``acc_len`` terms) of max |x| times the max magnitude with
    both result signs, all-zero activations, all-zero weights, alternating signs over the
    longest sum, and single-term accumulations.
    """
    rng = np.random.default_rng(seed)
    lanes, acc_len = p["lanes"], p["acc_len"]
    lo, hi = act_range(p["act_bits"], p["act_signed"])
    srep = _signed_rep(p["weight_bits"], p["alphabet"])
    wmax = int(representable(p["weight_bits"], p["alphabet"])[-1])
    xbig = lo if p["act_signed"] else hi              # largest |x|
    accs = []

    def rand_w(t):
        return rng.choice(srep, size=(t, lanes))

    for _ in range(n_random):
        t = int(rng.integers(1, min(acc_len, max_len) + 1))
        accs.append((rng.integers(lo, hi + 1, size=t), rand_w(t)))
    # Longest sums at the extremes of the accumulator range, one sign per lane pattern.
    signs = np.where(np.arange(lanes) % 2 == 0, 1, -1)
    accs.append((np.full(acc_len, xbig), np.tile(signs * wmax, (acc_len, 1))))
    accs.append((np.full(acc_len, xbig), np.tile(-signs * wmax, (acc_len, 1))))
    if p["act_signed"]:
        accs.append((np.full(acc_len, hi), np.tile(signs * wmax, (acc_len, 1))))
    # All zeros: zero activations with random weights, zero weights with random activations.
    t = min(acc_len, 8)
    accs.append((np.zeros(t, dtype=np.int64), rand_w(t)))
    accs.append((rng.integers(lo, hi + 1, size=t), np.zeros((t, lanes), dtype=np.int64)))
    # Alternating signs over the longest sum (activations and weights both alternate).
    alt = np.where(np.arange(acc_len) % 2 == 0, 1, -1)
    xs = np.where(alt > 0, xbig, (hi if p["act_signed"] else 0))
    accs.append((xs, np.outer(alt, signs) * wmax))
    accs.append((np.full(acc_len, xbig), np.outer(alt, np.ones(lanes, dtype=np.int64)) * wmax))
    # Single-term accumulations back to back.
    for _ in range(4):
        accs.append((rng.integers(lo, hi + 1, size=1), rand_w(1)))
    return [(np.asarray(x, dtype=np.int64), np.asarray(w, dtype=np.int64)) for x, w in accs]


def expected(p: dict, accs) -> list[list[int]]:
    """Golden results (plain product, overflow-checked against ``acc_bits``)."""
    return [[int(v) for v in asm_mac(x, w, acc_bits=p["acc_bits"], act_bits=p["act_bits"],
                                     act_signed=p["act_signed"], weight_bits=p["weight_bits"],
                                     alphabet=p["alphabet"])]
            for x, w in accs]


def encode_weights(p: dict, w) -> list[list[int]]:
    """Weight codes ``[T][lanes]`` of signed integer weights."""
    fmt = AsmCodeFormat(p["weight_bits"], p["alphabet"])
    return [[fmt.encode_value(int(v)) for v in row] for row in np.asarray(w)]


def bad_code_case(p: dict, seed: int):
    """One accumulation in which lane 0 of term 1 carries an invalid quartet code.

    Returns ``(x, codes, expected_acc)`` where the bad weight counts as zero, or None when
    the alphabet has no invalid code (A1, A2: every code decodes).
    """
    fmt = AsmCodeFormat(p["weight_bits"], p["alphabet"])
    bad = fmt.invalid_quartet_codes()
    if not bad:
        return None
    rng = np.random.default_rng(seed)
    lo, hi = act_range(p["act_bits"], p["act_signed"])
    t = 3
    x = rng.integers(lo, hi + 1, size=t)
    w = rng.choice(_signed_rep(p["weight_bits"], p["alphabet"]), size=(t, p["lanes"]))
    codes = encode_weights(p, w)
    codes[1][0] = (codes[1][0] & ~((1 << fmt.quartet_bits) - 1)) | bad[0]
    w_eff = w.copy()
    w_eff[1, 0] = 0
    return x, codes, [int(v) for v in asm_mac(x, w_eff)]
