"""ASM, alphabet set multipliers: every weight's 4-bit quartets are ``alphabet x 2**s``; the
MAC array multiplies by select, shift and add from a shared ``{1,3,5,7}.x`` bank.

Image: the weight memory holds one code word per (tile, term), lane ``n``'s code
(:class:`~insitu.gen.golden.AsmCodeFormat`) in field ``n``; the tile fill copies words and
the ASM MAC array reads the codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..golden import (
    ALPHABETS,
    AsmCodeFormat,
    asm_quantize,
    parse_alphabet,
    representable,
)
from ..layer import Layer
from .base import Scheme
from .copy_words import pack_lanes, unpack_lanes

__all__ = ["AsmConfig", "AsmLayer", "compress_layer", "SCHEME"]


@dataclass(frozen=True)
class AsmConfig:
    alphabet: str = "A4"
    weight_bits: int = 4         # 4-bit A4 codes: 5 bits per weight, no worse than int8

    def __post_init__(self):
        AsmCodeFormat(self.weight_bits, parse_alphabet(self.alphabet))     # validates


@dataclass
class AsmLayer:
    name: str
    kind: str
    shape: tuple
    config: AsmConfig
    sign: np.ndarray
    mag: np.ndarray
    scale: np.ndarray           # one per output channel

    def weight_int(self) -> np.ndarray:
        return np.where(self.sign != 0, -self.mag, self.mag)

    def weight_float(self) -> np.ndarray:
        s = np.asarray(self.scale, dtype=np.float64)
        return self.weight_int().astype(np.float64) * s.reshape((-1,) + (1,) * (len(self.shape) - 1))

    @property
    def fmt(self) -> AsmCodeFormat:
        return AsmCodeFormat(self.config.weight_bits, self.config.alphabet)

    def codes(self) -> np.ndarray:
        fmt = self.fmt
        return np.array([fmt.encode(int(s), int(m)) for s, m in
                         zip(self.sign.reshape(-1), self.mag.reshape(-1))], dtype=np.int64)

    def image(self) -> dict[str, bytes]:
        width = self.fmt.width
        acc = 0
        codes = self.codes()
        for i, c in enumerate(codes):
            acc |= int(c) << (i * width)
        return {"codes": acc.to_bytes(-(-codes.size * width // 8), "little"),
                "scale": np.asarray(self.scale, dtype=np.float32).tobytes()}

    def storage_bits(self) -> dict[str, int]:
        return {"codes": 8 * (-(-self.mag.size * self.fmt.width // 8)),
                "scale": 32 * np.asarray(self.scale).size}


def compress_layer(layer: Layer, cfg: AsmConfig = AsmConfig()) -> AsmLayer:
    """Per output channel: scale = that channel's largest |weight| / the largest magnitude
    the codes represent (depthwise kernels and BN-folded filters differ by orders of
    magnitude), then the nearest representable magnitude."""
    top = int(representable(cfg.weight_bits, cfg.alphabet)[-1])
    peak = np.max(np.abs(layer.weight.reshape(layer.weight.shape[0], -1)), axis=1)
    scale = np.where(peak > 0, peak / top, 1.0)
    sign, mag = asm_quantize(layer.weight, scale, cfg.weight_bits, cfg.alphabet)
    return AsmLayer(layer.name, layer.kind, tuple(layer.weight.shape), cfg, sign, mag, scale)


class Asm(Scheme):
    name = "asm"
    summary = "alphabet set multipliers: quartets alphabet x 2^s, select/shift/add MACs"
    Config = AsmConfig
    fill = "copy"
    mac = "asm"
    marker = "o"
    cpar_ok = True
    sweep = tuple({"alphabet": a, "weight_bits": b} for b in (8, 4) for a in ("A4", "A2", "A1"))

    def random_knobs(self, rng) -> dict:
        return {"alphabet": str(rng.choice(list(ALPHABETS))), "weight_bits": int(rng.choice([4, 8]))}

    def compress(self, layer, cfg):
        return compress_layer(layer, cfg)

    def int_weights(self, c):
        return c.weight_int().reshape(c.shape[0], -1), np.asarray(c.scale, dtype=np.float64)

    def pack(self, plans, compressed, cfg, lanes, cpar: int = 1) -> dict:
        fmt = AsmCodeFormat(cfg.weight_bits, parse_alphabet(cfg.alphabet))
        words = pack_lanes(plans, lambda i: compressed[i].codes(), lanes, fmt.width,
                           fmt.encode_value(0), cpar)
        steps_max = max(lp.steps for lp in plans)
        alphabet = (cfg.alphabet if isinstance(cfg.alphabet, str)
                    else ",".join(str(a) for a in cfg.alphabet))
        return {"group": 1, "tile_weight_bits": fmt.width, "tile_rows_max": steps_max,
                "weight_word_bits": lanes * cpar * fmt.width, "weight_words": words,
                "params": {"alphabet": alphabet, "weight_bits": cfg.weight_bits}}

    @staticmethod
    def _fmt(plan) -> AsmCodeFormat:
        return AsmCodeFormat(plan.params["weight_bits"], parse_alphabet(plan.params["alphabet"]))

    def unpack(self, plan, lp) -> np.ndarray:
        fmt = self._fmt(plan)
        return unpack_lanes(plan, lp, fmt.width, fmt.decode_value)

    def mac_params(self, plan) -> dict:
        return {"alphabet": plan.params["alphabet"], "weight_bits": plan.params["weight_bits"]}


SCHEME = Asm()
