"""What a weight scheme is: the interface every plug-in in :mod:`insitu.gen.schemes` fills.

A scheme holds, side by side: its knobs (a validated config dataclass), ``compress`` (float
layer -> codes), ``int_weights`` (codes -> integer weights and scales, what the golden model
and the requantisation use), ``pack`` (codes -> the engine's memory images, through
:class:`~insitu.gen.fields.Fields` layouts the RTL builds its ``lib.data`` layouts from) next
to ``unpack`` (images -> integer weights, the golden check of what the RTL runs), and the
names of the RTL blocks that run it: ``fill`` (the tile-fill component of
``insitu.rtl.fill``) and ``mac`` (``"asm"``: the alphabet-set MAC array on codes, ``"exact"``:
the exact multiplier MAC array on integer weights).
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

__all__ = ["Scheme", "parse_knobs"]


def parse_knobs(scheme: str, cls, knobs: dict | None):
    """``cls(**knobs)`` with values converted from text to each knob's type; one-line
    ``ValueError`` naming the knob and the value."""
    types = {f.name for f in fields(cls)}
    default = cls()
    kwargs = {}
    for key, value in (knobs or {}).items():
        if key not in types:
            raise ValueError(f"Scheme '{scheme}' has no knob '{key}' (knobs: {', '.join(sorted(types)) or 'none'})")
        ref = getattr(default, key)
        try:
            kwargs[key] = type(ref)(value) if not isinstance(ref, str) else str(value)
        except ValueError:
            raise ValueError(f"Knob '{key}' must be a {type(ref).__name__}, not {value!r}") from None
    return cls(**kwargs)


class Scheme:
    """Base class of a weight scheme (one instance per scheme in the registry)."""

    name: str = ""
    summary: str = ""               # one line for help texts
    Config: type = None
    fill: str = "copy"              # RTL tile-fill component (insitu.rtl.fill.FILLS)
    mac: str = "exact"              # RTL MAC array: "asm" or "exact"
    factor_qat: bool = False        # the demo fine-tunes the factors (not the float weights)
    sweep: tuple = ({},)            # knob settings of the memory benchmark (insitu bench memory)
    marker: str = "o"               # its plot marker
    cpar_ok: bool = False           # pack takes cpar > 1 (several channels per tile row)

    def random_knobs(self, rng) -> dict:
        """Random valid knobs (the engine fuzzer)."""
        return {}

    # -- knobs and compression ------------------------------------------------------------
    def config(self, knobs: dict | None = None):
        return parse_knobs(self.name, self.Config, knobs)

    def compress(self, layer, cfg):
        raise NotImplementedError

    def int_weights(self, c) -> tuple[np.ndarray, np.ndarray]:
        """``(W_int [cout, cin*k*k], sw [cout])`` of a compressed layer: one scale per layer
        unless the scheme says otherwise."""
        W = c.weight_int().reshape(c.shape[0], -1)
        return W, np.full(c.shape[0], c.scale)

    # -- memory images --------------------------------------------------------------------
    def pack(self, plans, compressed, cfg, lanes) -> dict:
        """The plan's image fields (``weight_words``, ``weight_word_bits``, ``group``,
        ``tile_weight_bits``, ``tile_rows_max``, optional ``aux_*`` / ``coef_*``, ``params``);
        sets each layer's ``wbase`` and ``extra``."""
        raise NotImplementedError

    def unpack(self, plan, lp) -> np.ndarray:
        """Integer weights ``[cout, terms]`` of layer ``lp`` decoded from ``plan``'s images."""
        raise NotImplementedError

    def bits_read(self, plan) -> int:
        """Weight-memory bits read per inference: the whole image once by default."""
        return plan.weight_memory_bits

    def tile_costs(self, plan, ly) -> list[tuple[int, int]]:
        """``[(fill cycles, weight-memory bits read), ...]`` of each tile of layer ``ly``, for
        the cycle model (``gen.cycles``).  The copy fill: one word per step and cycle."""
        return [(ly.steps, ly.steps * plan.weight_word_bits)] * ly.tiles

    def tile_phases(self, plan, ly) -> list[list[tuple[int, int, int]]]:
        """:meth:`tile_costs` split into phases that read at different rates, ``[(cycles,
        bits, weight-memory words), ...]`` per tile (the cycle model with a link or a flash
        serves them in order): one phase unless the scheme says otherwise."""
        return [[(c, b, len(t))] for (c, b), t in zip(self.tile_costs(plan, ly),
                                                      self.weight_trace(plan, ly))]

    def weight_trace(self, plan, ly) -> list[list[int]]:
        """Per tile of layer ``ly``, the weight-memory addresses the fill reads, in the order it
        takes them (a word read twice appears twice): the order of the weight stream of a
        flash-backed engine (``gen.flashimage``).  The copy fill: one word per step."""
        return [list(range(ly.wbase + tk * ly.steps, ly.wbase + (tk + 1) * ly.steps))
                for tk in range(ly.tiles)]

    def fill_cache_bits(self, plan) -> int:
        """On-chip bits the scheme's tile fill keeps beyond the tile buffer (block RAM)."""
        return 0

    def mac_params(self, plan) -> dict:
        """Keyword arguments of the MAC array beyond lanes/act_bits/acc_len."""
        return {"weight_bits": plan.tile_weight_bits}
