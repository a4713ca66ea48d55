"""Compress a model with one scheme, account its memory and write the compressed images.

``compress_model`` returns the per-layer compressed objects and the report whose keys
architecture.md fixes (``scheme``, ``layers``, ``weights``, ``weight_bits``,
``bits_per_weight``, ``dense_int8_bits``, ``memory_ratio_vs_int8``, ``memory_ratio_vs_fp32``,
``rel_error``).  Bits are the stored bits of the packed images (codes, bitmaps, bases, scales),
counted from each format and equal to the images' sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from . import mlg, smartdeal
from .golden import AsmCodeFormat, asm_quantize, parse_alphabet, representable
from .model import Layer
from .util import atomic_dir

SCHEMES = ("asm", "smartdeal", "mlg")


@dataclass(frozen=True)
class AsmConfig:
    alphabet: str = "A4"
    weight_bits: int = 8

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
    scale: float

    def weight_int(self) -> np.ndarray:
        return np.where(self.sign != 0, -self.mag, self.mag)

    def weight_float(self) -> np.ndarray:
        return self.weight_int().astype(np.float64) * self.scale

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
                "scale": np.float32(self.scale).tobytes()}

    def storage_bits(self) -> dict[str, int]:
        return {"codes": 8 * (-(-self.mag.size * self.fmt.width // 8)), "scale": 32}


def asm_compress_layer(layer: Layer, cfg: AsmConfig = AsmConfig()) -> AsmLayer:
    top = int(representable(cfg.weight_bits, cfg.alphabet)[-1])
    peak = float(np.max(np.abs(layer.weight)))
    scale = peak / top if peak > 0 else 1.0
    sign, mag = asm_quantize(layer.weight, scale, cfg.weight_bits, cfg.alphabet)
    return AsmLayer(layer.name, layer.kind, tuple(layer.weight.shape), cfg, sign, mag, scale)


CONFIGS = {"asm": AsmConfig, "smartdeal": smartdeal.SdConfig, "mlg": mlg.MlgConfig}
COMPRESSORS = {"asm": asm_compress_layer, "smartdeal": smartdeal.compress_layer,
               "mlg": mlg.compress_layer}


def make_config(scheme: str, knobs: dict | None = None):
    """Scheme config from ``{name: text or value}``; unknown names raise ValueError."""
    if scheme not in SCHEMES:
        raise ValueError(f"Unknown scheme '{scheme}' (schemes: {', '.join(SCHEMES)})")
    cls = CONFIGS[scheme]
    types = {f.name: f.type for f in fields(cls)}
    kwargs = {}
    for key, value in (knobs or {}).items():
        if key not in types:
            raise ValueError(f"Scheme '{scheme}' has no knob '{key}' (knobs: {', '.join(types)})")
        default = getattr(cls(), key)
        try:
            kwargs[key] = type(default)(value) if not isinstance(default, str) else str(value)
        except ValueError:
            raise ValueError(f"Knob '{key}' must be a {type(default).__name__}, not {value!r}") from None
    return cls(**kwargs)


def rel_error(ref: np.ndarray, approx: np.ndarray) -> float:
    den = float(np.linalg.norm(ref))
    return float(np.linalg.norm(approx - ref)) / den if den else 0.0


def compress_model(layers: list[Layer], scheme: str, config=None, progress=None):
    """``(compressed_layers, report)``."""
    config = config if config is not None else make_config(scheme)
    out, rows = [], []
    tot_w = tot_bits = 0
    err_num = err_den = 0.0
    for i, layer in enumerate(layers):
        if progress:
            progress(f"[{i + 1}/{len(layers)}] {scheme}: {layer.name} {tuple(layer.weight.shape)}")
        c = COMPRESSORS[scheme](layer, config)
        bits = sum(c.storage_bits().values())
        approx = c.weight_float()
        n = layer.weight.size
        rows.append({"name": layer.name, "kind": layer.kind, "shape": list(layer.weight.shape),
                     "weights": n, "weight_bits": bits, "bits_per_weight": bits / n,
                     "memory_ratio_vs_int8": 8 * n / bits, "rel_error": rel_error(layer.weight, approx),
                     "parts": c.storage_bits()})
        out.append(c)
        tot_w += n
        tot_bits += bits
        err_num += float(np.sum((approx - layer.weight) ** 2))
        err_den += float(np.sum(layer.weight ** 2))
    report = {
        "scheme": scheme,
        "config": {f.name: getattr(config, f.name) for f in fields(config)},
        "layers": rows,
        "weights": tot_w,
        "weight_bits": tot_bits,
        "bits_per_weight": tot_bits / tot_w,
        "dense_int8_bits": 8 * tot_w,
        "dense_fp32_bits": 32 * tot_w,
        "memory_ratio_vs_int8": 8 * tot_w / tot_bits,
        "memory_ratio_vs_fp32": 32 * tot_w / tot_bits,
        "rel_error": float(np.sqrt(err_num / err_den)) if err_den else 0.0,
    }
    return out, report


def write_output(out_dir: Path, compressed, report: dict) -> None:
    """Write images, integer codes and the report into ``out_dir`` all at once: everything goes
    to a temporary sibling folder first, which replaces ``out_dir`` only when complete."""
    with atomic_dir(out_dir) as tmp:
        codes = {}
        for c in compressed:
            for part, blob in c.image().items():
                (tmp / f"{c.name}.{part}.bin").write_bytes(blob)
            for key, value in vars(c).items():
                if isinstance(value, np.ndarray):
                    codes[f"{c.name}.{key}"] = value
        np.savez(tmp / "codes.npz", **codes)
        (tmp / "compress_report.json").write_text(json.dumps(report, indent=2) + "\n")
