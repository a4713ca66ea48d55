"""Dense int8: the baseline every memory and speed figure is compared against.

Weights are rounded to int8 with one symmetric scale per output channel (``max|w| / 127``);
the weight memory holds one int8 per weight (two's complement), packed as the ASM image is,
one word per (tile, term) with lane ``n`` in field ``n``; the tile fill copies words and the
exact multiplier MAC array computes ``sum x * w``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layer import Layer
from .base import Scheme
from .copy_words import pack_lanes, unpack_lanes

__all__ = ["Int8Config", "Int8Layer", "compress_layer", "SCHEME"]


@dataclass(frozen=True)
class Int8Config:
    """No knobs: int8, symmetric, per output channel."""


@dataclass
class Int8Layer:
    name: str
    kind: str
    shape: tuple
    weight: np.ndarray        # int8 values as int64, the layer's shape
    scales: np.ndarray        # [cout]

    def weight_int(self) -> np.ndarray:
        return self.weight

    def weight_float(self) -> np.ndarray:
        return self.weight * self.scales.reshape((-1,) + (1,) * (self.weight.ndim - 1))

    def image(self) -> dict[str, bytes]:
        return {"weights": self.weight.astype(np.int8).tobytes(),
                "scales": self.scales.astype(np.float32).tobytes()}

    def storage_bits(self) -> dict[str, int]:
        return {"weights": 8 * self.weight.size, "scales": 32 * len(self.scales)}


def compress_layer(layer: Layer, cfg: Int8Config = Int8Config()) -> Int8Layer:
    W = layer.weight.reshape(layer.cout, -1)
    s = np.max(np.abs(W), axis=1) / 127
    s = np.where(s > 0, s, 1.0)
    q = np.clip(np.rint(W / s[:, None]), -127, 127).astype(np.int64)
    return Int8Layer(layer.name, layer.kind, tuple(layer.weight.shape),
                     q.reshape(layer.weight.shape), s)


class Int8(Scheme):
    name = "int8"
    summary = "dense int8 weights (per-channel scale), exact multiply: the baseline"
    Config = Int8Config
    fill = "copy"
    mac = "exact"
    marker = "*"
    cpar_ok = True

    def compress(self, layer, cfg):
        return compress_layer(layer, cfg)

    def int_weights(self, c):
        return c.weight.reshape(c.shape[0], -1), np.asarray(c.scales, dtype=np.float64)

    def pack(self, plans, compressed, cfg, lanes, cpar: int = 1) -> dict:
        words = pack_lanes(plans, lambda i: compressed[i].weight & 0xFF, lanes, 8, 0, cpar)
        return {"group": 1, "tile_weight_bits": 8,
                "tile_rows_max": max(lp.steps for lp in plans),
                "weight_word_bits": lanes * cpar * 8, "weight_words": words, "params": {}}

    def unpack(self, plan, lp) -> np.ndarray:
        return unpack_lanes(plan, lp, 8, lambda code: code - 256 if code >= 128 else code)


SCHEME = Int8()
