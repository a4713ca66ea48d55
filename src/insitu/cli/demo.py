"""``insitu demo``: the main job on the built-in default (scikit-learn's handwritten digits).

For each model (a small CNN and an MLP) and each scheme: train in float (seconds, seed 0,
cached), compress, fine-tune quantisation-aware where plain rounding loses accuracy, compile
the engine, simulate the whole held-out split through the RTL in cocotb, and report
accuracy (float / dense int8 / hardware), bits per weight, memory ratio, cycles per inference,
MAC utilisation and bit-exactness (``DIR/report.json``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..gen import schemes as registry
from ..gen.compiler import compile_model, dense_int8, rebuilt_weights
from ..gen.digits import ARCHS, accuracy, as_dataset, init_layers, load_digits_split
from ..gen.model import load_model, save_model
from ..gen.network import forward_int
from ..gen.torch_qat import codes_arrays, finetune, train_float  # torch when called
from ..gen.util import cache_dir, write_atomic
from ..rtl.emit import write_design
from ..sim.engine_run import simulate
from .plots import plot_demo

__all__ = ["run_demo", "cache_dir", "trained_model"]

EPOCHS, QAT_EPOCHS, SEED = 30, 10, 0


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _cache_stem(arch: str, tag: str, key: list) -> Path:
    """Cache path stem of a trained model: readable tag plus a hash of what determines it."""
    digest = hashlib.sha1(json.dumps([arch, tag, *key], sort_keys=True).encode()).hexdigest()
    return cache_dir() / f"digits-{arch}-{tag}-{digest[:10]}"




def trained_model(arch: str, data, *, scheme: str | None = None, knobs=None):
    """Float model (``scheme=None``) or its quantisation-aware fine-tuned version, cached."""
    xtr, ytr, _, _ = data
    shape = ARCHS[arch]["input_shape"]
    path = _cache_stem(arch, scheme or "float",
                       [EPOCHS, QAT_EPOCHS, SEED, "torch", knobs or {}]).with_suffix(".npz")
    if path.exists():
        try:
            return load_model(path), True
        except ValueError:
            path.unlink()
    dset = as_dataset(data, arch)
    if scheme is None:
        layers = train_float(init_layers(arch, SEED), dset, epochs=EPOCHS, seed=SEED)
    else:
        base, _ = trained_model(arch, data)
        proj = projector(scheme, knobs)
        ptq_acc = accuracy(base, xtr, ytr, shape, proj(base))
        tuned, _, _ = finetune(base, dset, scheme, knobs=knobs, epochs=QAT_EPOCHS,
                               seed=SEED + 1, batch=64, optimizer="adam", size=None,
                               augment=False)
        qat_acc = accuracy(tuned, xtr, ytr, shape, proj(tuned))
        # Fine-tuning only where plain rounding loses accuracy (judged on the training split).
        layers = tuned if qat_acc > ptq_acc else base
    write_atomic(path, lambda tmp: save_model(tmp, layers))
    return layers, False


FACTOR_QAT_EPOCHS = 40


def trained_factors(arch: str, data, scheme: str, knobs=None):
    """``(layers, compressed, cached)``: a scheme's codes trained quantisation-aware at the
    factor level (``gen.torch_qat.finetune``, e.g. MLG's V, U and Wb) when that beats plain
    compression on the training split; codes and biases cached next to the float model."""
    xtr, ytr, _, _ = data
    shape = ARCHS[arch]["input_shape"]
    sch = registry.get(scheme)
    cfg = sch.config(knobs or {})
    stem = _cache_stem(arch, scheme, [EPOCHS, FACTOR_QAT_EPOCHS, SEED, "factors", "torch",
                                         knobs or {}])
    path, cpath = stem.with_suffix(".npz"), stem.with_suffix(".codes.npz")
    base, _ = trained_model(arch, data)
    if path.exists() and cpath.exists():
        try:
            layers = load_model(path)
            with np.load(cpath) as z:
                comp = []
                for i, ly in enumerate(base):
                    arrays = {k.split(".", 1)[1]: z[k] for k in z.files if k.startswith(f"{i}.")}
                    comp.append(sch.codes_from_arrays(ly, cfg, arrays))
            return layers, comp, True
        except (ValueError, KeyError, OSError):
            path.unlink(missing_ok=True)
            cpath.unlink(missing_ok=True)
    comp = [sch.compress(ly, cfg) for ly in base]

    def acc_of(layers, cs):
        return accuracy(layers, xtr, ytr, shape, rebuilt_weights(layers, cs, scheme))
    tuned, tcomp, _ = finetune(base, as_dataset(data, arch), scheme, knobs=knobs,
                               epochs=FACTOR_QAT_EPOCHS, seed=SEED + 1, batch=64, size=None,
                               augment=False)
    if acc_of(tuned, tcomp) <= acc_of(base, comp):
        tuned, tcomp = copy.deepcopy(base), comp
    arrays = codes_arrays(scheme, tcomp)
    write_atomic(cpath, lambda tmp: np.savez(tmp, **arrays))
    write_atomic(path, lambda tmp: save_model(tmp, tuned))
    return tuned, tcomp, False


def scheme_model(arch: str, data, scheme: str, knobs=None):
    """``(layers, compressed or None, cached)`` of a scheme: what the compiler is given."""
    if registry.get(scheme).factor_qat:
        return trained_factors(arch, data, scheme, knobs)
    layers, cached = trained_model(arch, data, scheme=scheme, knobs=knobs)
    return layers, None, cached


def projector(scheme: str, knobs=None):
    """``layers -> rebuilt float weights`` of a scheme (what the hardware will use)."""
    sch = registry.get(scheme)
    cfg = sch.config(knobs or {})

    def project(layers):
        return rebuilt_weights(layers, [sch.compress(ly, cfg) for ly in layers], scheme)
    return project


def demo_plan(arch: str = "cnn", scheme: str = registry.BOARD_DEFAULT, lanes: int = 8, knobs=None):
    """The compiled plan of a digits demo model (trained, or from the cache)."""
    data = load_digits_split()
    shape = ARCHS[arch]["input_shape"]
    layers, compressed, cached = scheme_model(arch, data, scheme, knobs)
    _log(f"[{arch}/{scheme}] demo model {'from cache' if cached else 'trained'}")
    return compile_model(layers, scheme, lanes=lanes, input_shape=shape,
                         calib=data[0][:256].reshape((-1,) + shape), knobs=knobs,
                         compressed=compressed)


def run_demo(out_dir, schemes=registry.NAMES, archs=("cnn", "mlp"), *, lanes=8,
             limit: int | None = None, sim="icarus", knobs=None) -> dict:

    out_dir = Path(out_dir)
    data = load_digits_split()
    xtr, ytr, xte, yte = data
    if limit:
        xte, yte = xte[:limit], yte[:limit]
    x_u8 = np.round(xte * 255).astype(np.uint8)
    rows = []
    t_all = time.monotonic()
    for arch in archs:
        shape = ARCHS[arch]["input_shape"]
        t0 = time.monotonic()
        base, cached = trained_model(arch, data)
        _log(f"[{arch}] float model {'from cache' if cached else 'trained'} "
             f"({time.monotonic() - t0:.1f} s)")
        acc_float = accuracy(base, xte, yte, shape)
        dense = dense_int8(base, input_shape=shape, calib=xtr[:256].reshape((-1,) + shape))
        y8 = forward_int(dense, x_u8.reshape((-1,) + shape)).reshape(len(x_u8), -1)
        acc_int8 = float(np.mean(np.argmax(y8, axis=1) == yte))
        for scheme in schemes:
            t0 = time.monotonic()
            layers, compressed, cached = scheme_model(arch, data, scheme, knobs)
            _log(f"[{arch}/{scheme}] quantisation-aware model {'from cache' if cached else 'tuned'}"
                 f" ({time.monotonic() - t0:.1f} s)")
            t0 = time.monotonic()
            plan = compile_model(layers, scheme, lanes=lanes, input_shape=shape,
                                 calib=xtr[:256].reshape((-1,) + shape), knobs=knobs,
                                 compressed=compressed)
            ddir = out_dir / f"{arch}-{scheme}"
            comp = write_design(plan, ddir, x_u8)
            t_compile = time.monotonic() - t0
            _log(f"[{arch}/{scheme}] compiled to {ddir} ({t_compile:.1f} s); simulating "
                 f"{len(x_u8)} test images in the RTL ({sim})")
            t0 = time.monotonic()
            rep = simulate(ddir, sim=sim, progress=True)
            t_sim = time.monotonic() - t0
            outs = rep.pop("outputs", None)
            acc_hw = (float(np.mean(np.argmax(np.asarray(outs), axis=1) == yte))
                      if outs is not None and len(outs) == len(yte) else 0.0)
            rows.append({
                "model": arch, "scheme": scheme, "lanes": lanes,
                "accuracy_float": acc_float, "accuracy_int8_dense": acc_int8,
                "accuracy_hw": acc_hw, "bit_exact": rep["bit_exact"], "vectors": rep["vectors"],
                "mismatches": rep["mismatches"], "cycles": rep["cycles"],
                "mac_utilization": rep["mac_utilization"],
                "mac_utilization_overall": rep["mac_utilization_overall"],
                "weight_bits_read": rep["weight_bits_read"],
                "dense_int8_bits_read": rep["dense_int8_bits_read"],
                "bits_per_weight": comp["bits_per_weight"],
                "memory_ratio_vs_int8": comp["memory_ratio_vs_int8"],
                "memory_ratio_vs_fp32": comp["memory_ratio_vs_fp32"],
                "read_ratio_vs_int8": rep["read_ratio_vs_int8"],
                "seconds": {"compile": round(t_compile, 2), "simulate": round(t_sim, 2)},
                "design": str(ddir)})
    first = rows[0] if rows else {}
    report = {
        "dataset": "sklearn digits (8x8), held-out split",
        "bit_exact": all(r["bit_exact"] for r in rows) and bool(rows),
        "vectors": sum(r["vectors"] for r in rows),
        "mismatches": sum(r["mismatches"] for r in rows),
        "cycles": first.get("cycles", 0),
        "mac_utilization": first.get("mac_utilization", 0.0),
        "weight_bits_read": first.get("weight_bits_read", 0),
        "accuracy_float": first.get("accuracy_float", 0.0),
        "accuracy_int8_dense": first.get("accuracy_int8_dense", 0.0),
        "accuracy_hw": first.get("accuracy_hw", 0.0),
        "runs": rows,
        "seconds": round(time.monotonic() - t_all, 1),
    }
    write_atomic(out_dir / "report.json", json.dumps(report, indent=1))
    plot_demo(rows, out_dir / "accuracy_vs_bits.png", "digits")
    return report


def table(report: dict) -> str:
    head = (f"{'model':5s} {'scheme':9s} {'acc float':>9s} {'int8':>6s} {'hw':>6s} "
            f"{'bits/w':>6s} {'x int8':>6s} {'read/w':>6s} {'cycles':>7s} {'MAC util':>8s} "
            f"{'bit-exact':>9s}")
    lines = [head, "-" * len(head)]
    for r in report["runs"]:
        lines.append(f"{r['model']:5s} {r['scheme']:9s} {100 * r['accuracy_float']:8.1f}% "
                     f"{100 * r['accuracy_int8_dense']:5.1f}% {100 * r['accuracy_hw']:5.1f}% "
                     f"{r['bits_per_weight']:6.2f} {r['memory_ratio_vs_int8']:6.2f} "
                     f"{8 * r['weight_bits_read'] / r['dense_int8_bits_read']:6.2f} "
                     f"{r['cycles']:7d} {100 * r['mac_utilization']:7.1f}% "
                     f"{'yes' if r['bit_exact'] else 'NO':>9s}")
    return "\n".join(lines)
