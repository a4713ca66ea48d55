"""Compress a model with one scheme, account its memory and write the compressed images.

``compress_model`` returns the per-layer compressed objects and the report whose keys
architecture.md fixes (``scheme``, ``layers``, ``weights``, ``weight_bits``,
``bits_per_weight``, ``dense_int8_bits``, ``memory_ratio_vs_int8``, ``memory_ratio_vs_fp32``,
``rel_error``).  Bits are the stored bits of the packed images (codes, bitmaps, bases, scales),
counted from each format and equal to the images' sizes.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from . import schemes
from .model import Layer
from .util import atomic_dir


def make_config(scheme: str, knobs: dict | None = None):
    """Scheme config from ``{name: text or value}``; unknown names raise ValueError."""
    return schemes.get(scheme).config(knobs)


def rel_error(ref: np.ndarray, approx: np.ndarray) -> float:
    den = float(np.linalg.norm(ref))
    return float(np.linalg.norm(approx - ref)) / den if den else 0.0


def compress_model(layers: list[Layer], scheme: str, config=None, progress=None):
    """``(compressed_layers, report)``."""
    sch = schemes.get(scheme)
    config = config if config is not None else sch.config()
    out, rows = [], []
    tot_w = tot_bits = 0
    err_num = err_den = 0.0
    for i, layer in enumerate(layers):
        if progress:
            progress(f"[{i + 1}/{len(layers)}] {scheme}: {layer.name} {tuple(layer.weight.shape)}")
        c = sch.compress(layer, config)
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
