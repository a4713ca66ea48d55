"""``insitu bench memory``: weight bits per inference against accuracy, per scheme and budget.

For each digits model and each scheme, a sweep of the scheme's budget knobs: the model is
fine-tuned quantisation-aware for that budget (cached), compiled, and measured:

* ``bits_per_weight`` / ``weight_bits_read``: the bits the engine reads from its weight
  memories per inference (``Plan.weight_bits_per_inference``, equal to the engine's counter in
  the tests): the compiled image once (MLG keeps a layer's basis kernels and its
  tile-invariant coefficient words in the fill's caches across the layer's tiles; a partly
  filled last tile skips its padding words; ``weight_bits_stored`` is the image size);
* ``accuracy_hw``: accuracy of the integer golden network on the held-out split (the engine
  is bit-exact with it: ``insitu demo`` / ``insitu simulate`` check that in RTL);
* the dense baselines: int8 (per-channel weights, same activation path) and fp32.

Writes ``bench_memory.json``, ``bench_memory.md`` and ``bench_memory.png``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from ..gen import schemes as registry
from ..gen.compiler import compile_model, dense_int8, golden_layers
from ..gen.digits import ARCHS, accuracy, load_digits_split
from ..gen.network import forward_int
from .demo import scheme_model, trained_model
from .plots import finish_axes, save_figure, write_bench

__all__ = ["SWEEPS", "run_bench_memory"]

SWEEPS = {name: list(s.sweep) for name, s in registry.SCHEMES.items()}


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _int_accuracy(golden, x_u8, y, shape) -> float:
    out = forward_int(golden, x_u8.reshape((-1,) + shape)).reshape(len(x_u8), -1)
    return float(np.mean(np.argmax(out, axis=1) == y))


def run_bench_memory(out_dir, archs=("cnn", "mlp"), schemes=registry.NAMES,
                     lanes=8) -> dict:
    out_dir = Path(out_dir)
    data = load_digits_split()
    xtr, ytr, xte, yte = data
    x_u8 = np.round(xte * 255).astype(np.uint8)
    rows, base = [], {}
    t0 = time.monotonic()
    for arch in archs:
        shape = ARCHS[arch]["input_shape"]
        calib = xtr[:256].reshape((-1,) + shape)
        model, _ = trained_model(arch, data)
        weights = sum(ly.weight.size for ly in model)
        acc8 = _int_accuracy(dense_int8(model, input_shape=shape, calib=calib), x_u8, yte, shape)
        base[arch] = {"weights": weights, "accuracy_float": accuracy(model, xte, yte, shape),
                      "accuracy_int8_dense": acc8, "dense_int8_bits": 8 * weights,
                      "fp32_bits": 32 * weights}
        for scheme in schemes:
            for knobs in SWEEPS[scheme]:
                t1 = time.monotonic()
                layers, compressed, _ = scheme_model(arch, data, scheme, knobs)
                plan = compile_model(layers, scheme, lanes=lanes, input_shape=shape,
                                     calib=calib, knobs=knobs, compressed=compressed)
                bits, stored = plan.weight_bits_per_inference, plan.weight_memory_bits
                acc = _int_accuracy(golden_layers(plan), x_u8, yte, shape)
                row = {"model": arch, "scheme": scheme, "knobs": knobs,
                       "weight_bits_read": bits,
                       "weight_bits_stored": stored,
                       "storage_ratio_vs_int8": 8 * weights / stored,
                       "bits_per_weight": bits / weights,
                       "memory_ratio_vs_int8": 8 * weights / bits,
                       "memory_ratio_vs_fp32": 32 * weights / bits, "accuracy_hw": acc,
                       "accuracy_drop_vs_float": base[arch]["accuracy_float"] - acc}
                rows.append(row)
                _log(f"[{arch}/{scheme}] {knobs}: {row['bits_per_weight']:.2f} bits/weight "
                     f"(x{row['memory_ratio_vs_int8']:.2f} vs int8), accuracy {100 * acc:.1f}% "
                     f"({time.monotonic() - t1:.1f} s)")
    best = {}
    for arch in archs:
        ok = [r for r in rows if r["model"] == arch and r["accuracy_drop_vs_float"] <= 0.01]
        if ok:
            b = max(ok, key=lambda r: r["memory_ratio_vs_int8"])
            best[arch] = {"scheme": b["scheme"], "knobs": b["knobs"],
                          "memory_ratio_vs_int8": b["memory_ratio_vs_int8"],
                          "accuracy_drop_vs_float": b["accuracy_drop_vs_float"]}
    report = {"baselines": base, "runs": rows, "best_within_1_point": best,
              "seconds": round(time.monotonic() - t0, 1)}
    write_bench(out_dir, "bench_memory", report, markdown, _plot)
    return report




def markdown(report: dict) -> str:
    lines = ["# Weight memory read per inference vs accuracy (digits, held-out split)", ""]
    for arch, b in report["baselines"].items():
        lines.append(f"**{arch}**: {b['weights']} weights; float {100 * b['accuracy_float']:.1f}%, "
                     f"dense int8 {100 * b['accuracy_int8_dense']:.1f}% at 8 bits/weight "
                     f"({b['dense_int8_bits']} bits), fp32 {b['fp32_bits']} bits.")
    lines += ["", "| model | scheme | knobs | bits read/weight | x int8 | stored x int8 | accuracy | drop vs float |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        knobs = ", ".join(f"{k}={v}" for k, v in r["knobs"].items())
        lines.append(f"| {r['model']} | {r['scheme']} | {knobs} | "
                     f"{r['bits_per_weight']:.2f} | {r['memory_ratio_vs_int8']:.2f} | "
                     f"{r['storage_ratio_vs_int8']:.2f} | {100 * r['accuracy_hw']:.1f}% | "
                     f"{100 * r['accuracy_drop_vs_float']:+.1f} |")
    lines += ["", "Best memory ratio within 1 point of float:"]
    for arch, b in report["best_within_1_point"].items():
        lines.append(f"- {arch}: {b['scheme']} {b['knobs']} x{b['memory_ratio_vs_int8']:.2f} vs "
                     f"int8 (drop {100 * b['accuracy_drop_vs_float']:+.1f} points)")
    return "\n".join(lines) + "\n"


def _plot(report: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    archs = list(report["baselines"])
    fig, axes = plt.subplots(1, len(archs), figsize=(6 * len(archs), 4.2), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        b = report["baselines"][arch]
        for scheme, marker in ((s.name, s.marker) for s in registry.SCHEMES.values()):
            pts = [r for r in report["runs"] if r["model"] == arch and r["scheme"] == scheme]
            if pts:
                pts.sort(key=lambda r: r["bits_per_weight"])
                ax.plot([r["bits_per_weight"] for r in pts], [100 * r["accuracy_hw"] for r in pts],
                        marker=marker, linestyle="-", label=scheme)
        ax.scatter([8], [100 * b["accuracy_int8_dense"]], marker="*", s=120, color="k",
                   label="dense int8", zorder=3)
        ax.scatter([32], [100 * b["accuracy_float"]], marker="D", color="gray", label="fp32",
                   zorder=3)
        ax.set_xscale("log", base=2)
        finish_axes(ax, "weight bits read per weight (log2)", f"digits {arch}")
    save_figure(fig, path, dpi=110)
