"""``insitu bench sweep``: how ``insitu sweep`` scales, and what a large sweep would cost.

1. **Scaling**: the same 40-point sweep (resnet8 x 20 scheme/knob settings x lanes 8, 16; no
   synthesis) on a ``LocalCluster`` of 1 worker, then of 2 workers, each into a fresh folder
   (no shared cache), in this run.  Each worker is one process with one thread and one BLAS
   thread.
2. **Scheduler overhead**: 1 000 empty tasks through the 2-worker cluster.
3. **Synthesis time per point**: one synthesised point per board (digits CNN, ASM, 8 lanes).
4. **Projection** of an N-point synthesis sweep on W workers::

       T(N, W) = ceil(M / W) * t_model + ceil(N / W) * (t_point + t_synth) + N * t_sched

   with M model stages (one per scheme and knob setting), the measured mean task times and
   the per-task scheduler overhead ``t_sched`` (serial in the scheduler).

Writes ``bench_sweep.json``, ``bench_sweep.md`` and ``bench_sweep.png`` (points finished
against time for each cluster size).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from .plots import finish_axes, save_figure, write_bench
from .sweep import BLAS_ENV, SweepSpec, expand, run_sweep

__all__ = ["scaling_spec", "run_bench_sweep", "project"]


def scaling_spec(limit: int = 1000) -> SweepSpec:
    """The 40-point scaling sweep: resnet8, 20 (scheme, knobs) settings x lanes 8 and 16."""
    return SweepSpec(models=["resnet8"], schemes=["asm", "smartdeal", "mlg", "int8"],
                     lanes=[8, 16], limit=limit, tune="ptq",
                     knobs={"alphabet": ["A1", "A2", "A4"], "weight_bits": [4, 8],
                            "threshold": [0.004, 0.03, 0.08], "prune": [0.0, 0.5],
                            "Bo": [4, 6, 8, 16, 24, 32, 44]})


def _noop(i):
    return i


def _cluster(n: int):
    from dask.distributed import Client, LocalCluster
    os.environ.update(BLAS_ENV)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=40)
    return Client(cluster), cluster


def project(n_points: int, workers: int, *, model_stages: int, t_model: float, t_point: float,
            t_synth: float, t_sched: float) -> float:
    """Seconds of an ``n_points`` synthesis sweep on ``workers`` (module docstring)."""
    return (math.ceil(model_stages / workers) * t_model
            + math.ceil(n_points / workers) * (t_point + t_synth) + n_points * t_sched)


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_bench_sweep(out_dir, *, limit: int = 1000, workers=(1, 2), boards=("icebreaker", "ulx3s"),
                    project_points: int = 1000, project_workers: int = 64) -> dict:
    out = Path(out_dir)
    spec = scaling_spec(limit)
    n = len(expand(spec))
    runs = {}
    for w in workers:
        folder = out / f"scaling-{w}w"
        shutil.rmtree(folder, ignore_errors=True)
        client, cluster = _cluster(w)
        try:
            _log(f"[scaling] {n} points on {w} worker{'s' if w > 1 else ''} ...")
            s = run_sweep(spec.__class__(**vars(spec)), folder, client=client)
            if w == max(workers):
                t0 = time.monotonic()
                client.gather(client.map(_noop, range(1000), pure=False))
                sched = (time.monotonic() - t0) / 1000
        finally:
            client.close()
            cluster.close()
        rows = [json.loads(ln) for ln in (folder / "results.jsonl").read_text().splitlines()]
        runs[w] = {"seconds": s["seconds"], "points": s["points"], "failed": s["failed"],
                   "timeline": s["timeline"]}
        _log(f"[scaling] {w} worker(s): {s['seconds']:.1f} s, {s['failed']} failed")
    stages = [json.loads(p.read_text()) for p in (out / f"scaling-{max(workers)}w" / "models").glob("*/stage.json")]
    t_model = sum(st["seconds"] for st in stages) / max(len(stages), 1)
    t_point = sum(r["seconds"] for r in rows) / max(len(rows), 1)
    # synthesis: one point per board
    synth = {}
    if boards:
        folder = out / "synth"
        shutil.rmtree(folder, ignore_errors=True)
        client, cluster = _cluster(max(workers))
        try:
            _log(f"[synth] digits cnn, asm, 8 lanes on {', '.join(boards)} ...")
            run_sweep(SweepSpec(models=["cnn"], schemes=["asm"], lanes=[8], boards=list(boards),
                                stages=["accuracy", "synth"], tune="ptq"), folder, client=client)
        finally:
            client.close()
            cluster.close()
        for r in json.loads((folder / "results.json").read_text()):
            synth[r["board"]] = {"synth_seconds": r.get("synth_seconds"), "status": r["status"],
                                 "error": r.get("error"), "luts": r.get("luts"),
                                 "fmax_mhz": r.get("fmax_mhz")}
    t_synth = max((v["synth_seconds"] or 0) for v in synth.values()) if synth else 0.0
    w1, w2 = min(workers), max(workers)
    speedup = runs[w1]["seconds"] / runs[w2]["seconds"] if runs[w2]["seconds"] else 0.0
    m = len(stages)
    proj = {"points": project_points, "workers": project_workers,
            "model_stages": m, "t_model": round(t_model, 2), "t_point": round(t_point, 2),
            "t_synth": round(t_synth, 2), "t_sched": round(sched, 5),
            "formula": "ceil(M/W)*t_model + ceil(N/W)*(t_point + t_synth) + N*t_sched",
            "seconds": round(project(project_points, project_workers, model_stages=m,
                                     t_model=t_model, t_point=t_point, t_synth=t_synth,
                                     t_sched=sched), 1),
            "seconds_one_worker": round(project(project_points, 1, model_stages=m,
                                                t_model=t_model, t_point=t_point,
                                                t_synth=t_synth, t_sched=sched), 1)}
    report = {"spec": vars(spec), "points": n, "cores": os.cpu_count(), "runs": runs,
              "speedup": round(speedup, 3), "scheduler_overhead_s": round(sched, 5),
              "synth": synth, "projection": proj}
    write_bench(out, "bench_sweep", report, markdown, _plot)
    return report


def markdown(rep: dict) -> str:
    p = rep["projection"]
    lines = ["# insitu sweep: scaling and projection", "",
             f"{rep['points']} points (resnet8 x 20 scheme/knob settings x lanes 8, 16; golden "
             f"accuracy on {rep['spec']['limit']} test images; compile and cycle model; no "
             f"synthesis), {rep['cores']} cores.", "",
             "| workers | seconds | points | failed |", "|---|---|---|---|"]
    for w, r in rep["runs"].items():
        lines.append(f"| {w} | {r['seconds']:.1f} | {r['points']} | {r['failed']} |")
    lines += ["", f"Speed-up of {max(map(int, rep['runs']))} workers over "
              f"{min(map(int, rep['runs']))}: **x{rep['speedup']:.2f}**.", "",
              f"Scheduler overhead: {1000 * rep['scheduler_overhead_s']:.2f} ms per task "
              f"(1 000 empty tasks).", ""]
    if rep["synth"]:
        lines += ["| board | synthesis + place and route (s) | LUT4 | Fmax MHz |", "|---|---|---|---|"]
        for b, s in rep["synth"].items():
            lines.append(f"| {b} | {s['synth_seconds']} | {s['luts']} | {s['fmax_mhz']} |")
        lines.append("")
    lines += [f"Projection of a {p['points']}-point synthesis sweep on {p['workers']} workers: "
              f"`T = {p['formula']}` with M = {p['model_stages']}, t_model = {p['t_model']} s, "
              f"t_point = {p['t_point']} s, t_synth = {p['t_synth']} s (the slowest board), "
              f"t_sched = {1000 * p['t_sched']:.2f} ms: **{p['seconds'] / 60:.1f} min** "
              f"({p['seconds_one_worker'] / 3600:.1f} h on one worker)."]
    return "\n".join(lines) + "\n"


def _plot(rep: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for w, r in rep["runs"].items():
        t = r["timeline"]
        ax.step([0] + t, range(len(t) + 1), where="post",
                label=f"{w} worker{'s' if int(w) > 1 else ''}: {r['seconds']:.0f} s")
    finish_axes(ax, "seconds", f"insitu sweep, {rep['points']} points (x{rep['speedup']:.2f})",
                "points finished")
    save_figure(fig, path, dpi=110)
