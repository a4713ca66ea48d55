"""Images shared by the schemes whose weight memory holds one code per weight (ASM, int8):
one word per (tile, step), lane ``n``'s code of input channel ``ci`` in field ``n * cpar +
ci % cpar`` (``Plan.cpar`` channels per step: step ``(ci // cpar) * k * k + kernel
position``; a channel beyond ``cin`` holds the code of 0; a depthwise layer's lane ``n``,
which runs beside the other lanes of its word group, in field ``n * cpar + n % cpar``); the
copy fill moves words unchanged."""

from __future__ import annotations

import numpy as np

from ..fields import Fields
from ..layer import ModelError

__all__ = ["lane_fields", "pack_lanes", "unpack_lanes"]


def lane_fields(lanes: int, width: int, cpar: int = 1) -> Fields:
    return Fields(("code", width, False, lanes * cpar))


def _steps(lp, cpar: int, co: int):
    """``(step, column, term)`` of every weight of filter ``co`` of ``lp`` (term: ``ci * k *
    k + kernel position``, the golden order)."""
    k2 = lp.k * lp.k
    return [((ci // cpar) * k2 + t, co % cpar if lp.depthwise else ci % cpar, ci * k2 + t)
            for ci in range(lp.cin) for t in range(k2)]


def pack_lanes(plans, codes_of, lanes: int, width: int, zero: int, cpar: int = 1) -> list[int]:
    """Words of every layer (sets ``lp.wbase``); ``codes_of(i)`` -> ``[cout, terms]`` codes."""
    f = lane_fields(lanes, width, cpar)
    words = []
    for i, lp in enumerate(plans):
        lp.wbase = len(words)
        codes = codes_of(i).reshape(lp.cout, -1)
        for t0 in range(0, lp.cout, lanes):
            tile = [[zero] * (lanes * cpar) for _ in range(lp.steps)]
            for co in range(t0, min(t0 + lanes, lp.cout)):
                for s, j, t in _steps(lp, cpar, co):
                    tile[s][(co - t0) * cpar + j] = int(codes[co, t])
            words += [f.pack(code=row) for row in tile]
    return words


def unpack_lanes(plan, lp, width: int, decode) -> np.ndarray:
    cpar = plan.cpar
    f = lane_fields(plan.lanes, width, cpar)
    W = np.zeros((lp.cout, lp.terms), dtype=np.int64)
    for tk in range(lp.tiles):
        rows = [f.unpack(plan.weight_words[lp.wbase + tk * lp.steps + s])["code"]
                for s in range(lp.steps)]
        for co in range(tk * plan.lanes, min((tk + 1) * plan.lanes, lp.cout)):
            n = co - tk * plan.lanes
            for s, j, t in _steps(lp, cpar, co):
                W[co, t] = decode(rows[s][n * cpar + j])
            if lp.depthwise and cpar > 1:       # the lane's other columns meet other channels
                if any(decode(row[n * cpar + j]) for row in rows for j in range(cpar)
                       if j != co % cpar):
                    raise ModelError(f"Layer '{lp.name}': depthwise filter {co} has weights "
                                     f"outside its column")
    return W
