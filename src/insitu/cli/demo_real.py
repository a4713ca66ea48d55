"""``insitu demo --model resnet8|dscnn``: the real networks on Fashion-MNIST.

For each scheme: compile the committed checkpoint (``models/<model>/model.onnx``, made by
``insitu train``; post-training quantisation on 256 training images), measure the float,
dense-int8 and hardware accuracy on the whole 10 000-image test split with the golden integer
model, simulate the first ``rtl_images`` test images through the RTL (Verilator, the
HDL bench, two simulations beside the golden model) and check them bit-exact,
and report memory, traffic, cycles, MAC utilisation and activation memory.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ..gen import schemes as registry
from ..gen.compiler import compile_model, golden_layers
from ..gen.datasets import fashion_mnist, pad_to
from ..gen.layer import ModelError
from ..gen.model import graph_network, load_network
from ..gen.network import forward_int
from ..gen.onnx_import import load_onnx
from ..gen.torch_qat import codes_from_arrays
from ..gen.util import write_atomic
from ..rtl.emit import write_design
from ..sim.engine_run import bar_text, simulate
from .plots import plot_demo

__all__ = ["run_real_demo", "REAL_MODELS", "REAL_DEMO_LANES", "checkpoint", "batched", "scheme_network",
           "real_plan", "checkpoint_knobs"]

REAL_MODELS = ("resnet8", "dscnn")
#: The real networks' default lanes: the MACs that keep ResNet-8's 16-channel stack busy, and
#: half the cycles (and RTL simulation time) of 8 lanes.
REAL_DEMO_LANES = 16
ROOT = Path(__file__).resolve().parents[3]


def checkpoint(model: str) -> Path:
    """The committed ONNX file of ``model`` (``models/<model>/model.onnx``)."""
    path = ROOT / "models" / model / "model.onnx"
    if not path.exists():
        raise ModelError(f"No checkpoint for '{model}' at {path}: make it with 'insitu train "
                         f"--model {model} -o models/{model}'")
    return path


def _train_report(model: str, scheme: str) -> dict | None:
    try:
        return json.loads((ROOT / "models" / f"{model}-{scheme}" / "train_report.json").read_text())
    except (OSError, ValueError):
        return None


def checkpoint_knobs(model: str, scheme: str, knobs=None) -> dict:
    """The knobs ``model`` compiles with under ``scheme``: the user's when given, else those
    its committed fine-tuned checkpoint was tuned with (``train_report.json``), else none
    (the scheme's defaults)."""
    if knobs:
        return dict(knobs)
    rep = _train_report(model, scheme) or {}
    return dict(rep.get("knobs") or {}) if rep.get("scheme") == scheme else {}


def tuned_checkpoint(model: str, scheme: str, knobs=None):
    """``(model.onnx, codes.npz or None)`` of the committed fine-tuned checkpoint of ``model``
    for ``scheme`` (``models/<model>-<scheme>``, made by ``insitu train --scheme``) when it
    was tuned with these knobs (none given: its own, :func:`checkpoint_knobs`) from the
    committed float checkpoint; else None."""
    d = ROOT / "models" / f"{model}-{scheme}"
    rep = _train_report(model, scheme)
    if rep is None:
        return None
    if (not (d / "model.onnx").exists() or rep.get("scheme") != scheme
            or (knobs and (rep.get("knobs") or {}) != dict(knobs))
            or Path(rep.get("from", "")).name != "model.onnx"
            or Path(rep.get("from", "")).parent.name != model):
        return None
    codes = d / "codes.npz"
    return d / "model.onnx", codes if codes.exists() else None


def scheme_network(model, scheme, knobs, layers):
    """``(layers, compressed or None, fine-tuned, knobs)`` that the demo compiles: the
    committed fine-tuned checkpoint of the scheme when there is one, else the float
    ``layers``; ``knobs`` as :func:`checkpoint_knobs` resolves them."""
    knobs = checkpoint_knobs(model, scheme, knobs)
    tuned = tuned_checkpoint(model, scheme, knobs)
    if tuned is None:
        return layers, None, False, knobs
    onnx_path, codes = tuned
    tl, _ = load_network(onnx_path)
    comp = None
    if codes is not None:
        with np.load(codes) as z:
            comp = codes_from_arrays(tl, scheme, knobs, z)
    return tl, comp, True, knobs


def real_plan(model: str, scheme: str, lanes: int, knobs=None, *, weight_flash: str = "",
              cpar: int = 1, post_lanes: int = 0):
    """The plan the demo compiles for ``model`` and ``scheme`` (the committed checkpoint, the
    scheme's fine-tuned one when there is one; 256 training images calibrate), with its
    ``(C, H, W)`` test inputs of the first ``16`` test images (u8)."""
    graph = load_onnx(checkpoint(model))
    layers, shape = graph_network(graph)
    data = fashion_mnist()
    calib = pad_to(data.x_train[:256], shape[1]) / 255.0
    net, codes, _, knobs = scheme_network(model, scheme, knobs, layers)
    plan = compile_model(net, scheme, lanes=lanes, input_shape=shape, calib=calib, knobs=knobs,
                         compressed=codes, cpar=cpar, post_lanes=post_lanes)
    plan.weight_flash = weight_flash
    return plan, pad_to(data.x_test[:16], shape[1]).reshape(16, -1)


class Progress:
    """Log lines and one progress bar of the RTL simulations running in the background,
    on stderr; the bar is redrawn under each log line (thread-safe)."""

    def __init__(self, total: int, width: int = 30):
        self.total, self.width, self.t0 = total, width, time.monotonic()
        self.done: dict[str, int] = {}
        self.bad: dict[str, int] = {}
        self.lock = threading.Lock()
        self.shown = -1.0

    def _bar(self) -> str:
        return bar_text("rtl", sum(self.done.values()), self.total, sum(self.bad.values()),
                        time.monotonic() - self.t0, unit="images", width=self.width)

    def log(self, msg: str) -> None:
        with self.lock:
            print(f"\r\033[K{msg}", file=sys.stderr, flush=True)
            if self.done:
                print(self._bar(), end="", file=sys.stderr, flush=True)

    def row(self, key: str):
        """The ``simulate`` progress callback of one design."""
        def update(done: int, total: int, mismatches: int) -> None:
            with self.lock:
                self.done[key], self.bad[key] = done, mismatches
                el = time.monotonic() - self.t0
                if el - self.shown >= 0.5 or sum(self.done.values()) == self.total:
                    self.shown = el
                    print(f"\r\033[K{self._bar()}", end="", file=sys.stderr, flush=True)
        return update

    def close(self) -> None:
        with self.lock:
            if self.done:
                print(file=sys.stderr, flush=True)


def batched(fn, x, batch=10):
    # small batches keep the golden model's im2col columns in cache: 3x faster than 500
    return np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def run_real_demo(out_dir, models=REAL_MODELS, schemes=registry.NAMES, *, lanes=REAL_DEMO_LANES,
                  rtl_images=300, limit=None, sim="verilator", knobs=None, jobs=2,
                  cpar=1) -> dict:
    """Every ``model`` x ``scheme``: golden accuracy on the test split in this process while
    up to ``jobs`` RTL simulations run beside it (each a Verilator process).  BLAS runs on
    one thread here: its second thread gains little on these small batches and spins on the
    cores the simulations need.  ``cpar``: channels per cycle of the schemes that take it
    (``Scheme.cpar_ok``; the others run at 1, and each row says which)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _run_real_demo(out_dir, models, schemes, lanes=lanes, rtl_images=rtl_images,
                              limit=limit, sim=sim, knobs=knobs, jobs=jobs, cpar=cpar)


def _run_real_demo(out_dir, models, schemes, *, lanes, rtl_images, limit, sim, knobs,
                   jobs, cpar) -> dict:
    out_dir = Path(out_dir)
    if isinstance(models, str):
        models = (models,)
    paths = {m: checkpoint(m) for m in models}
    data = fashion_mnist()
    t_all = time.monotonic()
    n_test = min(limit or len(data.y_test), len(data.y_test))
    rtl_n = min(rtl_images, n_test)
    prog = Progress(len(models) * len(schemes) * rtl_n)
    pending = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        try:
            for model in models:
                graph = load_onnx(paths[model])
                layers, shape = graph_network(graph)
                x_test = pad_to(data.x_test[:n_test], shape[1])
                y_test = data.y_test[:n_test]
                calib = pad_to(data.x_train[:256], shape[1]) / 255.0
                t0 = time.monotonic()
                y_float = batched(lambda x: graph.forward(x / 255.0), x_test)
                acc_float = float(np.mean(y_float.argmax(1) == y_test))
                prog.log(f"[{model}] float accuracy {100 * acc_float:.2f}% on {n_test} test "
                         f"images ({time.monotonic() - t0:.0f} s)")
                for scheme in schemes:
                    t0 = time.monotonic()
                    kn = knobs if len(schemes) == 1 else None
                    net, codes, tuned, kn = scheme_network(model, scheme, kn, layers)
                    plan = compile_model(net, scheme, lanes=lanes, input_shape=shape,
                                         calib=calib, knobs=kn, compressed=codes,
                                         cpar=cpar if registry.get(scheme).cpar_ok else 1)
                    golden = golden_layers(plan)
                    y_hw = batched(lambda x: forward_int(golden, x.astype(np.int64))
                                    .reshape(len(x), -1), x_test)
                    acc_hw = float(np.mean(y_hw.argmax(1) == y_test))
                    agree = float(np.mean(y_hw.argmax(1) == y_float.argmax(1)))
                    ddir = out_dir / f"{model}-{scheme}"
                    comp = write_design(plan, ddir, x_test[:rtl_n].reshape(rtl_n, -1))
                    prog.log(f"[{model}/{scheme}] golden accuracy {100 * acc_hw:.2f}% "
                             f"({time.monotonic() - t0:.0f} s); {rtl_n} images queued for the "
                             f"RTL ({sim})")
                    row = {
                        "model": model, "scheme": scheme, "lanes": lanes, "cpar": plan.cpar,
                        "checkpoint": (f"models/{model}-{scheme} (fine-tuned)" if tuned
                                       else f"models/{model} (post-training)"),
                        "fine_tuned": tuned,
                        "accuracy_float": acc_float, "accuracy_hw": acc_hw,
                        "top1_agreement": agree, "golden_vectors": n_test,
                        "macs": plan.macs, "weights": plan.weights,
                        "weight_bytes": comp["weight_memory_bits"] / 8,
                        "bits_per_weight": comp["bits_per_weight"],
                        "memory_ratio_vs_int8": comp["memory_ratio_vs_int8"],
                        "activation_bytes": comp["activation_bytes"],
                        "seconds": {"compile_golden": round(time.monotonic() - t0, 1)},
                        "design": str(ddir)}
                    fut = pool.submit(_timed, simulate, ddir, sim=sim,
                                      progress=prog.row(f"{model}/{scheme}"))
                    pending.append((row, fut, y_test[:rtl_n]))
            rows = []
            for row, fut, labels in pending:
                rep, seconds = fut.result()
                outs = rep.pop("outputs", None)
                row.update({
                    "rtl_vectors": rep["vectors"],
                    "rtl_correct": (int(np.sum(np.argmax(np.asarray(outs), axis=1) == labels))
                                    if outs is not None else 0),
                    "bit_exact": rep["bit_exact"], "mismatches": rep["mismatches"],
                    "cycles": rep["cycles"], "mac_utilization": rep["mac_utilization_overall"],
                    "weight_bits_read": rep["weight_bits_read"],
                    "read_ratio_vs_int8": rep["read_ratio_vs_int8"]})
                row["seconds"]["simulate"] = round(seconds, 1)
                rows.append(row)
        except BaseException:
            for _, fut, _ in pending:
                fut.cancel()
            raise
        finally:
            prog.close()
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        int8 = next((r for r in mine if r["scheme"] == registry.BASELINE.name), None)
        for r in mine:
            r["accuracy_int8_dense"] = int8["accuracy_hw"] if int8 else None
    report = {"dataset": f"Fashion-MNIST (Debian dataset-fashion-mnist), {n_test} test images",
              "models": list(models), "checkpoints": {m: str(p) for m, p in paths.items()},
              "bit_exact": all(r["bit_exact"] for r in rows) and bool(rows),
              "rtl_vectors": sum(r["rtl_vectors"] for r in rows),
              "golden_vectors": n_test, "runs": rows,
              "seconds": round(time.monotonic() - t_all, 1)}
    write_atomic(out_dir / "report.json", json.dumps(report, indent=1))
    plot_demo(rows, out_dir / "accuracy_vs_bits.png", "Fashion-MNIST")
    return report


def _timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    return fn(*args, **kwargs), time.monotonic() - t0


def real_table(report: dict) -> str:
    # the channels-per-cycle column only when a row takes more than one
    par = any(r.get("cpar", 1) > 1 for r in report["runs"])
    head = (f"{'model':8s} {'scheme':9s} {'tuned':5s} {'float':>6s} {'hw':>6s} {'agree':>6s} {'KB':>6s} "
            f"{'bits/w':>6s} {'read/w':>6s} {'x int8':>6s} " + (f"{'cpar':>4s} " if par else "")
            + f"{'cycles':>9s} {'MAC util':>8s} {'act KB':>6s} {'RTL':>4s} {'bit-exact':>9s}")
    lines = [head, "-" * len(head)]
    for r in report["runs"]:
        lines.append(
            f"{r['model']:8s} {r['scheme']:9s} {'QAT' if r.get('fine_tuned') else 'PTQ':5s} "
            f"{100 * r['accuracy_float']:5.2f}% "
            f"{100 * r['accuracy_hw']:5.2f}% {100 * r['top1_agreement']:5.1f}% "
            f"{r['weight_bytes'] / 1024:6.1f} {r['bits_per_weight']:6.2f} "
            f"{r['weight_bits_read'] / r['weights']:6.2f} {r['read_ratio_vs_int8']:6.2f} "
            + (f"{r.get('cpar', 1):4d} " if par else "")
            + f"{r['cycles']:9d} {100 * r['mac_utilization']:7.1f}% "
            f"{r['activation_bytes'] / 1024:6.1f} {r['rtl_vectors']:4d} "
            f"{'yes' if r['bit_exact'] else 'NO':>9s}")
    return "\n".join(lines)
