"""Simulate a compiled design folder in cocotb against the golden network model.

``simulate(DIR)`` checks that the folder's Verilog and memory images agree with its manifest
(the golden model is recomputed from the decoded images, not taken from the compiler), runs
``insitu.sim.tb_engine`` on Icarus (or Verilator) over the inputs, and writes
``DIR/sim_report.json`` with the keys of architecture.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..gen.cycles import estimate_cycles
from ..gen.design import FLASH, TOP, canonical_outputs, golden_vectors, load_plan
from ..gen.model import ModelError, float_reference
from ..gen.util import cache_dir, write_atomic
from .hdl_bench import run_bench
from .runner import run_cocotb

__all__ = ["simulate", "summarize", "bar_text", "BENCHES"]


def summarize(plan, summary: dict) -> dict:
    """Report keys from the testbench's ``engine.json``."""
    per = summary.get("counters", [])
    n = summary.get("vectors", 0)
    first = per[0] if per else {}
    L = plan.lanes * plan.cpar                  # MAC slots per cycle
    cyc = first.get("cycles", 0)
    issue = first.get("issue_cycles", 0)
    slots = first.get("mac_slots", 0)
    return {
        "bit_exact": bool(n) and summary.get("mismatches", 1) == 0 and len(per) == n,
        "vectors": n,
        "mismatches": summary.get("mismatches", n),
        "cycles": cyc,
        "cycles_max": max((c["cycles"] for c in per), default=0),
        "mac_utilization": slots / (L * issue) if issue else 0.0,
        "mac_utilization_overall": slots / (L * cyc) if cyc else 0.0,
        "macs_per_inference": plan.macs,
        "mac_slots": slots,
        "weight_bits_read": first.get("weight_bits", 0),
        "weight_bits_planned": plan.weight_bits_per_inference,
        "dense_int8_bits_read": 8 * plan.weights,
        "read_ratio_vs_int8": 8 * plan.weights / first["weight_bits"] if first.get("weight_bits") else 0.0,
        "weight_memory_bits": plan.weight_memory_bits,
        "lanes": plan.lanes,
        "cpar": plan.cpar,
        "scheme": plan.scheme,
        "first_mismatches": summary.get("first_mismatches", []),
        **({"flash": summary["flash"]} if "flash" in summary else {}),
    }


def cycle_budget(plan) -> int:
    """A generous bound on one inference's cycles (terms + tile generation + post-processing,
    and at least the cycle model's figure: a slow weight port)."""
    total = 0
    for ly in plan.layers:
        total += ly.tiles * (ly.oh * ly.ow * (ly.terms + plan.lanes + 8) + ly.terms * plan.lanes + 64)
    return max(total, estimate_cycles(plan).cycles) + 1000


def as_u8(x: np.ndarray) -> np.ndarray:
    """Inputs as the engine takes them: u8 integers as they are, floats in [0, 1] quantised as
    ``round(x * 255)`` (the quantisation contract); anything else is an error."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
            raise ModelError("Float inputs must be in [0, 1] (they are quantised as "
                             "round(x * 255)); give u8 integers otherwise")
        return np.round(x * 255).astype(np.int64)
    if not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() > 255:
        raise ModelError("Inputs must be unsigned 8-bit integers (0..255) or floats in [0, 1]")
    return x.astype(np.int64)


#: Simulated cycles per second before this machine has measured its own (2-core machine),
#: per simulator and bench.
DEFAULT_RATES = {"verilator": 3_500_000, "icarus": 10_000,
                 "verilator-cocotb": 200_000, "icarus-cocotb": 3_000}


def _rate_key(sim: str, bench: str) -> str:
    return sim if bench == "hdl" else f"{sim}-{bench}"


def _rate_file() -> Path:
    return cache_dir() / "sim_rates.json"


def sim_rate(sim: str) -> tuple[float, bool]:
    """``(cycles per second, measured here)``: the last run's rate, else the default."""
    try:
        return float(json.loads(_rate_file().read_text())[sim]), True
    except (OSError, ValueError, KeyError, TypeError):
        return float(DEFAULT_RATES[sim]), False


def _remember_rate(sim: str, rate: float) -> None:
    path = _rate_file()
    try:
        rates = json.loads(path.read_text()) if path.exists() else {}
        rates[sim] = round(rate)
        write_atomic(path, json.dumps(rates) + "\n")
    except (OSError, ValueError):
        pass                                     # an estimate only: never fail a run for it


def estimate_seconds(plan, vectors: int, sim: str, bench: str = "hdl") -> tuple[float, float, bool]:
    """Estimated run time of ``vectors`` inferences: (seconds, rate, rate measured here)."""
    rate, measured = sim_rate(_rate_key(sim, bench))
    cycles = plan.macs / plan.lanes * 1.05 + 200
    return vectors * cycles / rate, rate, measured


BENCHES = ("hdl", "cocotb")


def bar_text(name: str, done: int, total: int, mismatches: int, seconds: float, *,
             unit: str = "vectors", width: int = 30) -> str:
    """``name [####      ] done/total unit, m mismatches, s``."""
    bar = "#" * int(width * done / max(total, 1))
    return (f"{name} [{bar:<{width}}] {done}/{total} {unit}, {mismatches} mismatches, "
            f"{seconds:.0f} s")


class ProgressBar:
    """:func:`bar_text` and the time left on stderr, redrawn in place."""

    def __init__(self, name: str, total: int, width: int = 30):
        self.name, self.total, self.width, self.t0 = name, total, width, time.monotonic()
        self.shown = 0.0

    def __call__(self, done: int, total: int, mismatches: int) -> None:
        el = time.monotonic() - self.t0
        if done < total and el - self.shown < 0.25:
            return                               # redraw at most four times a second
        self.shown = el
        eta = el / done * (total - done) if done else 0
        print("\r" + bar_text(self.name, done, total, mismatches, el, width=self.width)
              + (f", about {eta:.0f} s left" if done < total else ""),
              end="" if done < total else "\n", file=sys.stderr, flush=True)


def simulate(design_dir, inputs=None, *, sim: str = "verilator", stalls: float = 0.0,
             reset: bool = False, progress=True, build_dir=None, labels=None,
             waves: bool = False, bench: str = "hdl", flash_flip=None) -> dict:
    """Run the folder's engine over ``inputs`` (u8 array or floats in [0, 1], default
    ``vectors.npz``); with ``labels`` also the accuracy of the float model (the copy compile
    keeps in the folder), the golden integer model and the RTL, and the RTL's top-1
    agreement with the float model.

    ``bench``: ``"hdl"`` (default) runs the Verilog bench of
    :mod:`insitu.sim.hdl_bench`, fast enough for hundreds of real-network inferences;
    ``"cocotb"`` runs the same checks from the Python bench ``insitu.sim.tb_engine``.
    ``progress``: True prints a progress bar, a callable ``(done, total, mismatches)`` is
    called instead, False is silent.  A folder whose weight memory is a flash
    (``Plan.weight_flash``) always runs the cocotb bench with the flash model on its pins;
    ``flash_flip = (byte, bit)`` plants a flipped bit in what the flash sends."""
    if bench not in BENCHES:
        raise ValueError(f"Unknown bench '{bench}' (benches: {', '.join(BENCHES)})")
    d = Path(design_dir)
    plan = load_plan(d)
    flash = d / FLASH
    if plan.weight_flash:
        if not flash.exists():
            raise ModelError(f"'{d}' has no {FLASH}: its weights stream from a flash; recompile")
        bench = "cocotb"                 # the flash is a cocotb model on the engine's pins
    vfile = d / "engine.v"
    if not vfile.exists():
        raise ModelError(f"'{d}' has no engine.v: compile a model into it first")
    if inputs is None:
        vec = d / "vectors.npz"
        if not vec.exists():
            raise ModelError(f"'{d}' has no vectors.npz: give --inputs X.npy")
        with np.load(vec) as z:
            x = z["x"]
    else:
        x = np.asarray(inputs)
    feat = int(np.prod(plan.input_shape))
    if x.ndim < 1 or x.size % feat or x.size == 0:
        raise ModelError(f"Inputs of shape {tuple(x.shape)} do not split into vectors of "
                         f"{feat} values ({'x'.join(map(str, plan.input_shape))})")
    x = as_u8(x)
    x = x.reshape(-1, feat)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(x) or not np.issubdtype(labels.dtype, np.integer):
            raise ModelError(f"Labels must be {len(x)} integers (one per input), not "
                             f"{labels.dtype} {tuple(labels.shape)}")
    y = golden_vectors(plan, x)
    est, rate, measured = estimate_seconds(plan, len(x), sim, bench)
    if progress is True and est > 20:
        print(f"simulate: {len(x)} inferences of about {plan.macs // plan.lanes} cycles on {sim}: "
              f"about {est:.0f} s at {rate:,.0f} cycles/s "
              f"({'measured here last run' if measured else 'a 2-core machine'})",
              file=sys.stderr, flush=True)
    work = Path(build_dir) if build_dir else d / "sim_build"
    work.mkdir(parents=True, exist_ok=True)
    t_sim = time.monotonic()
    if bench == "hdl":
        bar = progress if callable(progress) else (ProgressBar("simulate", len(x))
                                                   if progress else None)
        summary = run_bench(vfile, TOP, x, y, work / f"bench-{sim}", sim=sim,
                            budget=20 * cycle_budget(plan) + 100 * feat + 1000,
                            stalls=stalls, reset=reset,
                            waves=waves, progress=bar)
        dump_dir = work / f"bench-{sim}"
    else:
        np.savez(work / "vectors_in.npz", x=x, y=y)
        res = run_cocotb(None, TOP, "insitu.sim.tb_engine", work / sim, sim=sim,
                         sources=[vfile.resolve()], waves=waves,
                         extra_env={"ENGINE_VECTORS": str((work / "vectors_in.npz").resolve()),
                                    "ENGINE_STALLS": str(stalls),
                                    "ENGINE_RESET": "1" if reset else "0",
                                    "ENGINE_PROGRESS": "1" if progress else "0",
                                    "ENGINE_BUDGET": str(cycle_budget(plan)),
                                    **({"ENGINE_FLASH": str(flash.resolve())}
                                       if plan.weight_flash else {}),
                                    **({"ENGINE_FLASH_FLIP": "%d,%d" % tuple(flash_flip)}
                                       if flash_flip else {})})
        summ_file = res.build_dir / "engine.json"
        summary = (json.loads(summ_file.read_text()) if summ_file.exists()
                   else {"vectors": len(x)})
        dump_dir = res.build_dir
    report = summarize(plan, summary)
    if plan.weight_flash:
        fl = summary.get("flash", {})
        # every inference reads the whole stream once, and the flash saw nothing else
        report["bit_exact"] = report["bit_exact"] and not fl.get("errors", ["no flash record"])
    # the simulation's own time, from the bench; the build is not counted, nor are runs too
    # short to measure (start-up would dominate)
    seconds = summary.get("seconds") or (time.monotonic() - t_sim)
    if report["cycles"] and report["vectors"] and seconds >= 2:
        _remember_rate(_rate_key(sim, bench), report["cycles"] * report["vectors"] / seconds)
    report["simulator"] = sim
    report["bench"] = bench
    report["stalls"] = stalls
    if waves:
        dumps = sorted(p for ext in ("fst", "vcd") for p in dump_dir.rglob(f"*.{ext}"))
        report["waves"] = str(dumps[0]) if dumps else None
    write_atomic(d / "sim_report.json", json.dumps(report, indent=1))
    outs = summary.get("outputs")
    if outs and len(outs) == len(x) and all(len(o) == y.shape[1] for o in outs):
        canon = canonical_outputs(plan, outs)
        np.save(d / "outputs.npy", canon)
        report["outputs"] = canon
        if labels is not None:
            report.update(accuracy(d, plan, x, labels, canon, canonical_outputs(plan, y)))
            write_atomic(d / "sim_report.json", json.dumps(
                {k: v for k, v in report.items() if k != "outputs"}, indent=1))
    return report


def accuracy(d: Path, plan, x_u8, labels, hw, golden) -> dict:
    """Top-1 accuracy of the RTL, the golden model and (if the folder keeps the model file)
    the float model, and the RTL's agreement with the float model."""
    out = {"labels": len(labels),
           "accuracy_hw": float(np.mean(hw.argmax(1) == labels)),
           "accuracy_golden": float(np.mean(golden.argmax(1) == labels))}
    model = next((p for p in sorted(d.glob("model.*")) if p.suffix in (".npz", ".pt", ".pth",
                                                                        ".onnx")), None)
    if model is not None:
        f = float_reference(model, x_u8 / 255.0, plan.input_shape)
        out["accuracy_float"] = float(np.mean(f.argmax(1) == labels))
        out["top1_agreement_float"] = float(np.mean(f.argmax(1) == hw.argmax(1)))
    return out
