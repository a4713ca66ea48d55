"""Images shared by the schemes whose weight memory holds one code per weight (ASM, int8):
one word per (tile, term), lane ``n`` in field ``n``; the copy fill moves words unchanged."""

from __future__ import annotations

import numpy as np

from ..fields import Fields

__all__ = ["lane_fields", "pack_lanes", "unpack_lanes"]


def lane_fields(lanes: int, width: int) -> Fields:
    return Fields(("code", width, False, lanes))


def pack_lanes(plans, codes_of, lanes: int, width: int, zero: int) -> list[int]:
    """Words of every layer (sets ``lp.wbase``); ``codes_of(i)`` -> ``[cout, terms]`` codes."""
    f = lane_fields(lanes, width)
    words = []
    for i, lp in enumerate(plans):
        lp.wbase = len(words)
        codes = codes_of(i).reshape(lp.cout, -1)
        for t0 in range(0, lp.cout, lanes):
            for t in range(lp.terms):
                words.append(f.pack(code=[int(codes[co, t]) if co < lp.cout else zero
                                          for co in range(t0, t0 + lanes)]))
    return words


def unpack_lanes(plan, lp, width: int, decode) -> np.ndarray:
    f = lane_fields(plan.lanes, width)
    W = np.zeros((lp.cout, lp.terms), dtype=np.int64)
    for tk in range(lp.tiles):
        for t in range(lp.terms):
            codes = f.unpack(plan.weight_words[lp.wbase + tk * lp.terms + t])["code"]
            for n, code in enumerate(codes):
                co = tk * plan.lanes + n
                if co < lp.cout:
                    W[co, t] = decode(code)
    return W
