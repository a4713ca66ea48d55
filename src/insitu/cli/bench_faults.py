"""``insitu bench faults``: link faults and resets injected through the board's UART pins.

For each fault kind, ``runs`` sessions of the host protocol (identify, load, verify, infer
every vector) run in cocotb against the host link's Verilog (engine included), each with one
injected fault at a random point: a flipped bit (in any byte, or in an input byte), a dropped
or duplicated byte, a break, a gap
longer than the frame timeout, garbage before the first command, a reset in the middle of
the load or of an inference.  Each run ends bit-exact (the host retried or reloaded as
needed) or with a reported error; a run whose outputs differ from the golden model without an
error is a *silent wrong answer*, the figure that must stay 0.

A control run of ``--control`` sessions with input-byte flips against a link that does not
check frame CRCs shows what the bench catches when the protection is missing.

Writes ``bench_faults.json``, ``bench_faults.md`` and ``bench_faults.png``.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..sim.board_sim import FAULT_KINDS, fault_campaign, link_test_plan
from .plots import finish_axes, save_figure, write_bench

__all__ = ["run_bench_faults"]

OUTCOMES = ("bit_exact", "error", "silent_wrong")


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _row(kind: str, runs: list) -> dict:
    out = Counter(r["outcome"] for r in runs)
    causes = Counter()
    for r in runs:
        causes.update(r["causes"])
    return {"kind": kind, "runs": len(runs), **{o: out.get(o, 0) for o in OUTCOMES},
            "fault_injected": sum(r.get("fired", True) for r in runs),
            "recovered": sum(r["outcome"] == "bit_exact" and r["retries"] > 0 for r in runs),
            "retries_mean": round(float(np.mean([r["retries"] for r in runs])), 2) if runs else 0,
            "retry_causes": dict(causes.most_common()),
            "errors": sorted({r["error"] for r in runs if r["error"]})[:5]}


def run_bench_faults(out_dir, *, runs: int = 200, kinds=FAULT_KINDS, control: int = 50,
                     sim: str = "verilator", seed: int = 1) -> dict:
    out = Path(out_dir)
    t0 = time.monotonic()
    plan = link_test_plan()
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(2, 16))
    x[0] = 255                                       # an extreme vector and a random one
    rows, all_runs = [], []
    for i, kind in enumerate(kinds):
        t = time.monotonic()
        res = fault_campaign(plan, x, out / "sim", {kind: runs}, sim=sim, seed=seed + i)
        got = res["runs"]
        if len(got) != runs:
            raise RuntimeError(f"the {kind} campaign stopped after {len(got)} of {runs} runs "
                               f"(see {out / 'sim'})")
        rows.append(_row(kind, got))
        all_runs += got
        r = rows[-1]
        _log(f"[{i + 1}/{len(kinds)}] {kind}: {runs} runs, {r['bit_exact']} bit-exact "
             f"({r['recovered']} after retries), {r['error']} reported errors, "
             f"{r['silent_wrong']} silent wrong ({time.monotonic() - t:.0f} s)")
    ctl = None
    if control:
        res = fault_campaign(plan, x, out / "control", {"flip_input": control}, sim=sim,
                             seed=seed, check_frames=False)
        ctl = _row("flip_input (control: link without CRC checks)", res["runs"])
        _log(f"control: {control} flips against a link that ignores frame CRCs: "
             f"{ctl['silent_wrong']} silent wrong answers")
    rep = {"model": "link test network (conv3x3 1->3 on 4x4, linear 48->4; MLG, 8 lanes)",
           "load_words": sum(len(w) for w in (plan.weight_words, plan.aux_words,
                                                plan.post_words, plan.coef_words)),
           "vectors_per_run": len(x), "runs_per_kind": runs, "sim": sim, "kinds": rows,
           "silent_wrong_total": sum(r["silent_wrong"] for r in rows),
           "control": ctl, "seconds": round(time.monotonic() - t0, 1)}
    write_bench(out, "bench_faults", rep, markdown, plot)
    return rep


def markdown(rep: dict) -> str:
    lines = [f"# Link faults through the UART pins ({rep['runs_per_kind']} runs per kind)", "",
             f"Each run: identify, load {rep['load_words']} words, verify, "
             f"{rep['vectors_per_run']} inferences, with one injected fault; {rep['sim']}.", "",
             "| fault | runs | fault injected | bit-exact | of which after retries | "
             "reported error | silent wrong | retries per run | retry causes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    rows = rep["kinds"] + ([rep["control"]] if rep.get("control") else [])
    for r in rows:
        causes = ", ".join(f"{k} {v}" for k, v in list(r["retry_causes"].items())[:4])
        lines.append(f"| {r['kind']} | {r['runs']} | {r['fault_injected']} | {r['bit_exact']} | "
                     f"{r['recovered']} | "
                     f"{r['error']} | {r['silent_wrong']} | {r['retries_mean']} | {causes} |")
    lines += ["", f"Silent wrong answers with the protocol's checks: "
              f"**{rep['silent_wrong_total']}**.", ""]
    errs = sorted({e for r in rep["kinds"] for e in r["errors"]})
    if errs:
        lines += ["Reported errors (host side):", ""] + [f"- {e}" for e in errs] + [""]
    return "\n".join(lines)


def plot(rep: dict, path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = rep["kinds"] + ([rep["control"]] if rep.get("control") else [])
    names = [r["kind"].replace(" (control: link without CRC checks)", "\n(no CRC)")
             for r in rows]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    bottom = np.zeros(len(rows))
    for outcome, color in zip(OUTCOMES, ("tab:green", "tab:orange", "tab:red")):
        vals = np.array([r[outcome] / max(r["runs"], 1) * 100 for r in rows])
        ax.bar(names, vals, bottom=bottom, color=color, label=outcome.replace("_", " "))
        bottom += vals
    finish_axes(ax, "fault kind", "outcome of each run with one injected fault",
                "runs (%)", legend=8)
    ax.tick_params(axis="x", labelsize=8)
    save_figure(fig, path)
    return True
