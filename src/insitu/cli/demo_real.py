"""``insitu demo --model resnet8|dscnn``: the real networks on Fashion-MNIST.

For each scheme: compile the committed checkpoint (``models/<model>/model.onnx``, made by
``insitu train``; post-training quantisation on 256 training images), measure the float,
dense-int8 and hardware accuracy on the whole 10 000-image test split with the golden integer
model, simulate the first ``rtl_images`` test images through the RTL (Verilator) and check
them bit-exact, and report memory, traffic, cycles, MAC utilisation and activation memory.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..gen import schemes as registry
from ..gen.compiler import compile_model, golden_layers
from ..gen.datasets import fashion_mnist, pad_to
from ..gen.layer import ModelError
from ..gen.model import load_network
from ..gen.network import forward_int
from ..gen.onnx_import import load_onnx
from ..gen.util import write_atomic
from ..rtl.emit import write_design
from ..sim.engine_run import simulate
from .plots import plot_demo

__all__ = ["run_real_demo", "REAL_MODELS", "checkpoint"]

REAL_MODELS = ("resnet8", "dscnn")
ROOT = Path(__file__).resolve().parents[3]


def checkpoint(model: str) -> Path:
    """The committed ONNX file of ``model`` (``models/<model>/model.onnx``)."""
    path = ROOT / "models" / model / "model.onnx"
    if not path.exists():
        raise ModelError(f"No checkpoint for '{model}' at {path}: make it with 'insitu train "
                         f"--model {model} -o models/{model}'")
    return path


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _batched(fn, x, batch=500):
    return np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def run_real_demo(out_dir, model: str, schemes=registry.NAMES, *, lanes=8, rtl_images=8,
                  limit=None, sim="verilator", knobs=None) -> dict:
    out_dir = Path(out_dir)
    path = checkpoint(model)
    layers, shape = load_network(path)
    graph = load_onnx(path)
    data = fashion_mnist()
    x_test, y_test = pad_to(data.x_test, shape[1]), data.y_test
    if limit:
        x_test, y_test = x_test[:limit], y_test[:limit]
    calib = pad_to(data.x_train[:256], shape[1]) / 255.0
    t_all = time.monotonic()
    _log(f"[{model}] float accuracy on {len(x_test)} test images ...")
    y_float = _batched(lambda x: graph.forward(x / 255.0), x_test)
    acc_float = float(np.mean(y_float.argmax(1) == y_test))
    rows = []
    for scheme in schemes:
        t0 = time.monotonic()
        plan = compile_model(layers, scheme, lanes=lanes, input_shape=shape, calib=calib,
                             knobs=knobs if len(schemes) == 1 else None)
        golden = golden_layers(plan)
        y_hw = _batched(lambda x: forward_int(golden, x.astype(np.int64)).reshape(len(x), -1),
                        x_test)
        acc_hw = float(np.mean(y_hw.argmax(1) == y_test))
        agree = float(np.mean(y_hw.argmax(1) == y_float.argmax(1)))
        ddir = out_dir / f"{model}-{scheme}"
        comp = write_design(plan, ddir, x_test[:rtl_images].reshape(rtl_images, -1))
        _log(f"[{model}/{scheme}] golden accuracy {100 * acc_hw:.2f}% ({time.monotonic() - t0:.0f}"
             f" s); simulating {rtl_images} images in the RTL ({sim})")
        t1 = time.monotonic()
        rep = simulate(ddir, sim=sim, progress=True)
        outs = rep.pop("outputs", None)
        rtl_hits = (int(np.sum(np.argmax(np.asarray(outs), axis=1) == y_test[:rtl_images]))
                    if outs is not None else 0)
        rows.append({
            "model": model, "scheme": scheme, "lanes": lanes,
            "accuracy_float": acc_float, "accuracy_hw": acc_hw, "top1_agreement": agree,
            "rtl_vectors": rep["vectors"], "golden_vectors": len(x_test),
            "rtl_correct": rtl_hits, "bit_exact": rep["bit_exact"],
            "mismatches": rep["mismatches"], "cycles": rep["cycles"],
            "macs": plan.macs, "mac_utilization": rep["mac_utilization_overall"],
            "weights": plan.weights, "weight_bytes": comp["weight_memory_bits"] / 8,
            "bits_per_weight": comp["bits_per_weight"],
            "weight_bits_read": rep["weight_bits_read"],
            "memory_ratio_vs_int8": comp["memory_ratio_vs_int8"],
            "read_ratio_vs_int8": rep["read_ratio_vs_int8"],
            "activation_bytes": comp["activation_bytes"],
            "seconds": {"compile_golden": round(t1 - t0, 1),
                        "simulate": round(time.monotonic() - t1, 1)},
            "design": str(ddir)})
    int8 = next((r for r in rows if r["scheme"] == registry.BASELINE.name), None)
    for r in rows:
        r["accuracy_int8_dense"] = int8["accuracy_hw"] if int8 else None
    report = {"dataset": "Fashion-MNIST (Debian dataset-fashion-mnist), 10 000 test images",
              "model": model, "checkpoint": str(path),
              "bit_exact": all(r["bit_exact"] for r in rows) and bool(rows),
              "rtl_vectors": sum(r["rtl_vectors"] for r in rows),
              "golden_vectors": len(x_test), "runs": rows,
              "seconds": round(time.monotonic() - t_all, 1)}
    write_atomic(out_dir / "report.json", json.dumps(report, indent=1))
    plot_demo(rows, out_dir / "accuracy_vs_bits.png", "Fashion-MNIST")
    return report


def real_table(report: dict) -> str:
    head = (f"{'model':8s} {'scheme':9s} {'float':>6s} {'hw':>6s} {'agree':>6s} {'KB':>6s} "
            f"{'bits/w':>6s} {'read/w':>6s} {'x int8':>6s} {'cycles':>9s} {'MAC util':>8s} "
            f"{'act KB':>6s} {'RTL':>4s} {'bit-exact':>9s}")
    lines = [head, "-" * len(head)]
    for r in report["runs"]:
        lines.append(
            f"{r['model']:8s} {r['scheme']:9s} {100 * r['accuracy_float']:5.2f}% "
            f"{100 * r['accuracy_hw']:5.2f}% {100 * r['top1_agreement']:5.1f}% "
            f"{r['weight_bytes'] / 1024:6.1f} {r['bits_per_weight']:6.2f} "
            f"{r['weight_bits_read'] / r['weights']:6.2f} {r['read_ratio_vs_int8']:6.2f} "
            f"{r['cycles']:9d} {100 * r['mac_utilization']:7.1f}% "
            f"{r['activation_bytes'] / 1024:6.1f} {r['rtl_vectors']:4d} "
            f"{'yes' if r['bit_exact'] else 'NO':>9s}")
    return "\n".join(lines)
