"""SmartDeal: ``W = Ce . B`` with a small 3x3 basis per filter chunk and sparse power-of-2
coefficients; the hardware decodes the coefficient stream and rebuilds each kernel row by
shifts and adds (int8, one rounding shift per filter).

Images: the weight memory holds the packed coefficient stream of every layer (a row count,
then the rows, ``gen.golden.sd_pack``); the aux memory one :func:`basis_fields` entry per
(filter, chunk).  The compressor is :mod:`insitu.gen.smartdeal`.
"""

from __future__ import annotations

import numpy as np

from .. import smartdeal
from ..fields import Fields
from ..golden import SdFormat, requant_shift, sd_rebuild, sd_unpack
from ..layer import ModelError
from .base import Scheme

__all__ = ["basis_fields", "SCHEME"]

BASIS_BITS = 8


#: Width of the ``rep`` field when some layer shares basis entries (up to 64 filters).
REP_BITS = 6


def basis_fields(basis_bits: int = BASIS_BITS, rep_bits: int = 0) -> Fields:
    """One block's basis entry: the 3x3 basis (row-major), the rounding shift of its filter
    (int8 mode), the number of kernel rows in the block and, in images where filters share
    entries (``rep_bits`` > 0), how many more consecutive filters use the same entry."""
    rep = (("rep", rep_bits),) if rep_bits else ()
    return Fields(("b", basis_bits, True, 9), ("shift", 5), ("rows", 8), *rep)


class SmartDeal(Scheme):
    name = "smartdeal"
    summary = "SmartDeal W = Ce.B: sparse power-of-2 coefficients times a small basis"
    Config = smartdeal.SdConfig
    fill = "rebuild"
    mac = "exact"
    marker = "s"
    sweep = tuple({"threshold": t, "prune": p} for p in (0.0, 0.5) for t in (0.004, 0.03, 0.08))

    def random_knobs(self, rng) -> dict:
        e_min = int(rng.integers(-8, -2))
        return {"e_min": e_min, "e_max": e_min + int(rng.integers(3, 14)),
                "threshold": float(rng.uniform(0, 0.1)), "iters": 3}

    def compress(self, layer, cfg):
        return smartdeal.compress_layer(layer, cfg)

    def int_weights(self, c):
        W = c.weight_int8().reshape(c.shape[0], -1)           # int8 per filter: one shift each
        return W, c.scale * np.exp2(c.shifts.astype(np.float64))

    def pack(self, plans, compressed, cfg, lanes) -> dict:
        rep_bits = REP_BITS if any(c.share > 1 for c in compressed) else 0
        bf = basis_fields(rep_bits=rep_bits)
        words, basis = [], []
        rows_max = 0
        for lp, c in zip(plans, compressed):
            lp.wbase = len(words)
            lp.extra = {"chunks": c.n_chunks, "rows": list(c.rows), "entries": c.n_entries}
            rows_max = max(rows_max, sum(c.rows))
            words += c.coef_words()
            for g in c.entry_filters():
                for s in range(c.n_chunks):
                    basis.append(bf.pack(b=c.basis[g[0], s].reshape(-1),
                                         shift=int(c.shifts[g[0]]), rows=int(c.rows[s]),
                                         **({"rep": len(g) - 1} if rep_bits else {})))
        return {"group": 3, "tile_weight_bits": 8, "tile_rows_max": rows_max,
                "weight_word_bits": cfg.word_bits, "weight_words": words,
                "aux_word_bits": bf.width, "aux_words": basis,
                "params": {"e_min": cfg.e_min, "e_max": cfg.e_max, "rep_bits": rep_bits}}

    def tile_costs(self, plan, ly) -> list[tuple[int, int]]:
        """One rebuilt kernel row (3 weights) per cycle and lane; the layer's coefficient
        words and basis entries are read once, shared among its tiles by their lanes."""
        layers = plan.weighted
        i = layers.index(ly)
        end = layers[i + 1].wbase if i + 1 < len(layers) else len(plan.weight_words)
        bits = ((end - ly.wbase) * plan.weight_word_bits
                + ly.extra.get("entries", ly.cout * ly.extra["chunks"]) * plan.aux_word_bits)
        rows = sum(ly.extra["rows"])
        costs = []
        for tk in range(ly.tiles):
            c0, c1 = tk * plan.lanes, min(ly.cout, (tk + 1) * plan.lanes)
            costs.append(((c1 - c0) * rows, bits * c1 // ly.cout - bits * c0 // ly.cout))
        return costs

    def weight_trace(self, plan, ly) -> list[list[int]]:
        """The coefficient reader streams the whole weight memory once per inference, in
        address order, ahead of the tiles: the layer's words, shared among its tiles as in
        :meth:`tile_costs`."""
        layers = plan.weighted
        i = layers.index(ly)
        end = layers[i + 1].wbase if i + 1 < len(layers) else len(plan.weight_words)
        n = end - ly.wbase
        cuts = [ly.wbase + n * min(ly.cout, tk * plan.lanes) // ly.cout
                for tk in range(ly.tiles + 1)]
        return [list(range(a, b)) for a, b in zip(cuts, cuts[1:])]

    def unpack(self, plan, lp) -> np.ndarray:
        fmt = SdFormat(plan.params["e_min"], plan.params["e_max"], plan.weight_word_bits)
        bf = basis_fields(rep_bits=plan.params.get("rep_bits", 0))
        words = plan.weight_words
        layers = plan.weighted
        i = layers.index(lp)
        end = layers[i + 1].wbase if i + 1 < len(layers) else len(words)
        bpos = sum(p.extra.get("entries", p.cout * p.extra["chunks"]) for p in layers[:i])
        chunks, sd_rows = lp.extra["chunks"], lp.extra["rows"]
        n_rows = words[lp.wbase]
        R = sum(sd_rows)
        if n_rows != lp.cout * R:
            raise ModelError(f"Layer '{lp.name}': coefficient image has {n_rows} rows, the "
                             f"manifest says {lp.cout * R}")
        try:
            mask, sgn, expu, err = sd_unpack(words[lp.wbase + 1:end], n_rows, fmt)
        except ValueError as exc:
            raise ModelError(f"Layer '{lp.name}': {exc}") from None
        if err.any():
            raise ModelError(f"Layer '{lp.name}': coefficient image has an exponent out of range")
        n_entries = lp.extra.get("entries", lp.cout * chunks)
        if len(plan.aux_words) < bpos + n_entries:
            raise ModelError(f"Layer '{lp.name}': basis image is shorter than the manifest says")
        # the entries in the order the fill streams them: each one rep + 1 times
        stream = []
        for w in plan.aux_words[bpos:bpos + n_entries]:
            entry = bf.unpack(w)
            stream += [entry] * (entry.get("rep", 0) + 1)
        if len(stream) != lp.cout * chunks:
            raise ModelError(f"Layer '{lp.name}': basis entries cover {len(stream)} blocks, "
                             f"the manifest says {lp.cout * chunks}")
        rows = np.zeros((lp.cout, R, 3), dtype=np.int64)
        k = 0
        for co in range(lp.cout):
            start = 0
            for r in sd_rows:
                entry = stream[k]
                k += 1
                B = np.array(entry["b"], dtype=np.int64).reshape(3, 3)
                sl = slice(co * R + start, co * R + start + r)
                rows[co, start:start + r] = requant_shift(
                    sd_rebuild(B, mask[sl], sgn[sl], expu[sl]), int(entry["shift"]))
                start += r
        return rows.reshape(lp.cout, -1)[:, :lp.terms]


SCHEME = SmartDeal()
