"""MLG, multi-level in situ generation: low-bit basis kernels ``Wb``, intra-kernel
coefficients ``U`` (level 1) and cross-kernel coefficients ``V`` (level 2), all odd integer
codes; the hardware builds ``W1 = U . Wb`` and ``W = V . W1`` per tile, reading every image
word once per inference (the basis kernels and, with level 2, the ``cin x Bo`` coefficient
words are kept in the fill's caches across a layer's tiles).

Images: weight memory = basis words (``Wb[o]``: ``Bi x K2`` codes, or, level 1 bypassed,
``Wb[o, ci]`` rows of ``K2`` codes, several to a word, in the order the fill walks them);
coefficient memory = ``U[o, ci]`` (``Bi`` codes, ``[ci][o]`` order); aux memory = ``V`` per
tile (``V[tile lanes, o]``, ``[tile][o]``).  The compressor is :mod:`insitu.gen.mlg`.
"""

from __future__ import annotations

import numpy as np

from .. import mlg
from ..fields import Fields
from ..golden import mlg_bits, mlg_generate
from ..layer import ModelError
from .base import Scheme

__all__ = ["SCHEME", "kernel_codes"]


def _codes(q: int, n: int) -> Fields:
    return Fields(("c", q, False, n))


def kernel_codes(plan) -> int:
    """Codes per basis kernel in the images (``K2``: 9 when any layer is 3x3, else 1).
    ``ModelError`` for a plan compiled before the fill generated one weight per tile-buffer
    row (its tile rows held a whole kernel)."""
    if "K2" not in plan.params or plan.group != 1:
        raise ModelError("this MLG design was compiled by an older insitu (tile-buffer rows of "
                         "whole kernels): compile it again")
    return plan.params["K2"]


class Mlg(Scheme):
    name = "mlg"
    summary = "multi-level in situ generation: W = V.(U.Wb) from low-bit odd codes"
    Config = mlg.MlgConfig
    fill = "generate"
    mac = "exact"
    cpar_ok = True
    factor_qat = True
    marker = "^"
    sweep = tuple([{"Bi": 2, "Bo": bo, "qb": 3, "qu": 6, "qv": 3} for bo in (4, 6, 44)]
                  + [{"Bi": 2, "Bo": 44, "qb": 2, "qu": 6, "qv": 3},
                     {"Bi": 2, "Bo": 44, "qb": 2, "qu": 8, "qv": 3},
                     {"Bi": 1, "Bo": 44, "qb": 3, "qu": 6, "qv": 3},
                     {"Bi": 2, "Bo": 8, "qb": 4, "qu": 6, "qv": 4}])

    def random_knobs(self, rng) -> dict:
        return {"Bi": int(rng.integers(1, 3)), "Bo": int(rng.integers(1, 6)),
                "qb": int(rng.integers(1, 5)), "qu": int(rng.integers(1, 6)),
                "qv": int(rng.integers(1, 5))}

    def compress(self, layer, cfg):
        return mlg.compress_layer(layer, cfg)

    # factor-level training and its cache (the demo)
    def codes_arrays(self, c) -> dict:
        out = {"basis": c.basis, "dims": np.array([c.Bo, c.Bi]), "scale": np.array(c.scale)}
        if c.coeff_in is not None:
            out["coeff_in"] = c.coeff_in
        if c.coeff_out is not None:
            out["coeff_out"] = c.coeff_out
        return out

    def codes_from_arrays(self, layer, cfg, z: dict):
        Bo, Bi = (int(v) for v in z["dims"])
        return mlg.MlgLayer(layer.name, layer.kind, tuple(layer.weight.shape), cfg, Bo, Bi,
                            z["basis"], z.get("coeff_in"), z.get("coeff_out"), float(z["scale"]))

    def pack(self, plans, compressed, cfg, lanes, cpar: int = 1) -> dict:
        # (cpar: the fill places each weight in its channel's column; the images are the same)
        K2 = 9 if any(lp.k == 3 for lp in plans) else 1
        Bi = cfg.Bi
        wbits, w1_bits = 1, 2
        for c in compressed:
            b1, b = mlg_bits(max(c.Bi, 1), c.Bo, cfg.qb, cfg.qu, cfg.qv, c.level1, c.level2)
            w1_bits, wbits = max(w1_bits, b1), max(wbits, b)
        w_width = max(Bi * K2 * cfg.qb, K2 * cfg.qb)
        words, coefs, vwords = [], [], []
        for lp, c in zip(plans, compressed):
            k2 = lp.k * lp.k
            lp.wbase = len(words)
            ex = lp.extra = {"Bo": c.Bo, "level1": c.level1, "level2": c.level2,
                             "per_word": 1, "tile_words": 0, "cbase": len(coefs),
                             "vbase": len(vwords)}
            if c.level1:
                basis = _codes(cfg.qb, Bi * K2)
                for o in range(c.Bo):
                    words.append(basis.pack(c=[int(c.basis[o, b, t]) if t < k2 else 0
                                               for b in range(c.Bi) for t in range(K2)]))
                ucodes = _codes(cfg.qu, c.Bi)
                for ci in range(lp.cin):
                    for o in range(c.Bo):
                        coefs.append(ucodes.pack(c=c.coeff_in[o, ci, :c.Bi]))
            else:
                # Rows in fill order ([ci][o], or per tile [tile][ci][o in tile] without
                # level 2), per_word rows to a word; without level 2 each tile starts on a word.
                bas = c.basis.reshape(c.Bo, lp.cin, k2)
                ex["per_word"] = per = max(1, w_width // (k2 * cfg.qb))
                row_word = _codes(cfg.qb, per * k2)
                groups = ([[(ci, o) for ci in range(lp.cin) for o in range(c.Bo)]] if c.level2 else
                          [[(ci, o) for ci in range(lp.cin)
                            for o in range(t0, min(lp.cout, t0 + lanes))]
                           for t0 in range(0, lp.cout, lanes)])
                ex["tile_words"] = 0 if c.level2 else -(-lp.cin * lanes // per)
                for rows in groups:
                    start = len(words)
                    for i in range(0, len(rows), per):
                        words.append(row_word.pack(c=[int(bas[o, ci, t]) for ci, o in
                                                      rows[i:i + per] for t in range(k2)]))
                    if not c.level2:
                        words += [0] * (start + ex["tile_words"] - len(words))
            if c.level2:
                vcodes = _codes(cfg.qv, lanes)
                for t0 in range(0, lp.cout, lanes):
                    for o in range(c.Bo):
                        vwords.append(vcodes.pack(c=[int(c.coeff_out[t0 + n, o])
                                                     for n in range(lanes) if t0 + n < lp.cout]))
        # the fill generates one weight per lane and cycle: one per tile-buffer row
        return {"group": 1, "tile_weight_bits": wbits,
                "tile_rows_max": max(lp.steps for lp in plans),
                "weight_word_bits": w_width, "weight_words": words,
                "aux_word_bits": lanes * cfg.qv, "aux_words": vwords,
                "coef_word_bits": max(1, Bi * cfg.qu), "coef_words": coefs,
                "params": {"Bi": Bi, "qb": cfg.qb, "qu": cfg.qu, "qv": cfg.qv,
                           "w1_bits": w1_bits, "K2": K2}}

    def unpack(self, plan, lp) -> np.ndarray:
        """Integer weights decoded from the images (golden ``mlg_generate``)."""
        p, ex = plan.params, lp.extra
        K2, k2 = kernel_codes(plan), lp.k * lp.k
        Bo, qb, qu, qv = ex["Bo"], p["qb"], p["qu"], p["qv"]
        try:
            if ex["level1"]:
                Bi = p["Bi"]
                basis = _codes(qb, Bi * K2)
                Bc = np.array([np.array(basis.unpack(plan.weight_words[lp.wbase + o])["c"])
                               .reshape(Bi, K2)[:, :k2] for o in range(Bo)])
                ucodes = _codes(qu, Bi)
                Uc = np.zeros((Bo, lp.cin, Bi), dtype=np.int64)
                for ci in range(lp.cin):
                    for o in range(Bo):
                        Uc[o, ci] = ucodes.unpack(plan.coef_words[ex["cbase"] + ci * Bo + o])["c"]
            else:
                Bc = np.zeros((Bo, lp.cin, k2), dtype=np.int64)
                per = ex["per_word"]
                row_word = _codes(qb, per * k2)
                if ex["level2"]:
                    groups = [(lp.wbase, [(ci, o) for ci in range(lp.cin) for o in range(Bo)])]
                else:
                    groups = [(lp.wbase + tk * ex["tile_words"],
                               [(ci, o) for ci in range(lp.cin)
                                for o in range(tk * plan.lanes, min(lp.cout, (tk + 1) * plan.lanes))])
                              for tk in range(lp.tiles)]
                for base, rows in groups:
                    for i, (ci, o) in enumerate(rows):
                        f = i % per
                        codes = row_word.unpack(plan.weight_words[base + i // per])["c"]
                        Bc[o, ci] = codes[f * k2:(f + 1) * k2]
                Bc = Bc.reshape(Bo, lp.cin * k2)
                Uc = None
            Vc = None
            if ex["level2"]:
                vcodes = _codes(qv, plan.lanes)
                Vc = np.zeros((lp.cout, Bo), dtype=np.int64)
                for tk in range(lp.tiles):
                    for o in range(Bo):
                        v = vcodes.unpack(plan.aux_words[ex["vbase"] + tk * Bo + o])["c"]
                        for n in range(plan.lanes):
                            if tk * plan.lanes + n < lp.cout:
                                Vc[tk * plan.lanes + n, o] = v[n]
        except IndexError:
            raise ModelError(f"Layer '{lp.name}': MLG image is shorter than the manifest says") from None
        W = mlg_generate(Bc, Uc, Vc, qb, qu, qv, lp.cout, lp.cin, k2)
        return W.reshape(lp.cout, -1)

    def bits_read(self, plan) -> int:
        """Every image word once: the fill keeps a layer's basis kernels and its tile-invariant
        coefficient stream on chip across the layer's tiles (:meth:`reuse`)."""
        return sum(bits for ly in plan.weighted for _, bits in self.tile_costs(plan, ly))

    @staticmethod
    def reuse(plan, ly) -> bool:
        """Whether tiles after the first of layer ``ly`` take the per-(ci, o) coefficient words
        (``U[o, ci]``, or the level-1-bypassed basis rows) from the fill's coefficient cache:
        with level 2 every tile walks the same ``cin x Bo`` words, so only tile 0 reads them."""
        return bool(ly.extra["level2"]) and ly.tiles > 1

    def fill_caches(self, plan) -> dict[str, tuple[int, int]]:
        """``(width, depth)`` of each cache of the generate fill (``rtl.fill.GenerateFill``):
        ``basis`` (the layer's basis kernels ``Wb[o]``), ``v`` (V of a tile) and ``coef`` (one
        entry per ``(ci, o)`` of the layers that :meth:`reuse` it: the ``Bi`` U codes or a
        basis row; depth 0 when no layer does)."""
        p = plan.params
        bo_max = max(2, max(ly.extra["Bo"] for ly in plan.weighted))
        users = [ly for ly in plan.weighted if self.reuse(plan, ly)]
        coef = ((max(p["Bi"] * p["qu"] if ly.extra["level1"] else ly.k * ly.k * p["qb"]
                     for ly in users),
                 max(ly.cin * ly.extra["Bo"] for ly in users)) if users else (0, 0))
        return {"basis": (max(1, p["Bi"] * kernel_codes(plan) * p["qb"]), bo_max),
                "v": (plan.lanes * p["qv"], bo_max), "coef": coef}

    def fill_cache_bits(self, plan) -> int:
        """On-chip bits of the generate fill's caches (:meth:`fill_caches`)."""
        return sum(width * depth for width, depth in self.fill_caches(plan).values())

    def tile_costs(self, plan, ly) -> list[tuple[int, int]]:
        """Per tile: the cache load (``Bo`` cycles: the basis kernels on tile 0 only, V of the
        tile's lanes on every tile) when a level is on, then one coefficient word (or one
        packed basis row) per input channel and ``o``, used for ``k x k`` cycles (one kernel
        position each).  The weight-memory words are those of
        :meth:`weight_trace`; with level 1 the coefficient words come from the coefficient
        memory on tile 0 and from the coefficient cache on later tiles of a reusing layer."""
        return [(sum(p[0] for p in ph), sum(p[1] for p in ph))
                for ph in self.tile_phases(plan, ly)]

    def tile_phases(self, plan, ly) -> list[list[tuple[int, int, int]]]:
        """:meth:`tile_costs` by phase, ``[(load cycles, bits, weight words), (generate
        cycles, bits, weight words)]`` per tile: a link delivers the load's burst before the
        generation's steady stream."""
        ex, costs = ly.extra, []
        reuse = self.reuse(plan, ly)
        for tk, words in enumerate(self.weight_trace(plan, ly)):
            n_o = ex["Bo"] if ex["level2"] else min(plan.lanes, ly.cout - tk * plan.lanes)
            load = ex["level2"] or (ex["level1"] and tk == 0)
            wbits = len(words) * plan.weight_word_bits
            # the load: the basis kernels (level 1, tile 0) and V (level 2)
            lbits = ((wbits if ex["level1"] else 0)
                     + (ex["Bo"] * plan.aux_word_bits if ex["level2"] else 0))
            gbits = 0 if ex["level1"] else wbits             # packed basis rows
            if ex["level1"] and not (reuse and tk):
                gbits += ly.cin * n_o * plan.coef_word_bits
            lw = len(words) if ex["level1"] else 0
            costs.append([(ex["Bo"] if load else 0, lbits, lw),
                          (ly.cin * n_o * ly.k * ly.k, gbits, len(words) - lw)])
        return costs

    def weight_trace(self, plan, ly) -> list[list[int]]:
        """Per tile: tile 0 reads the level-1 basis kernels (``Bo`` words from ``wbase``) into
        the cache; without level 1 a tile reads its packed basis rows, one word per
        ``per_word`` (ci, o) steps (the tile's own words without level 2; with level 2 tile 0
        reads them and later tiles take them from the coefficient cache)."""
        ex, trace = ly.extra, []
        for tk in range(ly.tiles):
            if ex["level1"]:
                trace.append(list(range(ly.wbase, ly.wbase + ex["Bo"])) if tk == 0 else [])
            elif self.reuse(plan, ly) and tk:
                trace.append([])
            else:
                lanes = min(plan.lanes, ly.cout - tk * plan.lanes)
                n_o = ex["Bo"] if ex["level2"] else lanes
                start = ly.wbase + (0 if ex["level2"] else tk * ex["tile_words"])
                trace.append(list(range(start, start + -(-ly.cin * n_o // ex["per_word"]))))
        return trace

    def mac_params(self, plan) -> dict:
        return {"weight_bits": plan.tile_weight_bits}


SCHEME = Mlg()
