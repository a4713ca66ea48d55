"""``insitu bench mutants``: the mutation run over ``rtl/`` (``insitu.sim.mutate``).

Samples up to ``--per-file`` mutants of each file (seeded), plants each in a copy of the tree
and runs that file's tests, ``--jobs`` mutants at a time.  Writes ``mutants.json`` (every
mutant, killed or not, with the test time) and ``mutants.md`` (kill rate per file, the
surviving mutants).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..gen.util import write_atomic
from ..sim import mutate
from .plots import write_bench

__all__ = ["run_bench_mutants"]


def run_bench_mutants(out_dir, *, files=None, per_file: int = 10, seed: int = 1, jobs: int = 1,
                      timeout: float = 600) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    files = list(files or mutate.RTL_FILES)
    muts = mutate.sample(files, per_file, seed)
    trees = [mutate.new_tree() for _ in range(jobs)]
    results = []

    def work(i_tree):
        i, tree = i_tree
        res = []
        for k in range(i, len(muts), jobs):
            r = mutate.run_mutant(tree, muts[k], timeout)
            res.append(r)
            results.append(r)
            write_atomic(out / "mutants_partial.json", json.dumps(results, indent=1))
            print(f"[{len(results)}/{len(muts)}] {r['mutant']}: "
                  f"{'killed' if r['killed'] else 'SURVIVED'} ({r['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
        return res
    try:
        with ThreadPoolExecutor(jobs) as ex:
            list(ex.map(work, enumerate(trees)))
    finally:
        for t in trees:
            shutil.rmtree(t.parent, ignore_errors=True)
    results.sort(key=lambda r: (r["file"], r["line"], r["col"], r["new"]))
    per = {}
    for name in files:
        mine = [r for r in results if r["file"] == name]
        if mine:
            per[name] = {"mutants": len(mine), "killed": sum(r["killed"] for r in mine),
                         "kill_rate": round(sum(r["killed"] for r in mine) / len(mine), 3),
                         "sites": len(mutate.mutants_of(mutate.ROOT / "rtl" / name))}
    total = len(results)
    killed = sum(r["killed"] for r in results)
    rep = {"per_file": per, "mutants": total, "killed": killed,
           "kill_rate": round(killed / total, 3) if total else 0.0, "per_file_sample": per_file,
           "seed": seed, "tests": {f: mutate.tests_for(f) for f in files},
           "results": results, "seconds": round(time.monotonic() - t0, 1)}
    write_bench(out, "mutants", rep, markdown, lambda rep, path: False)
    return rep


def markdown(rep: dict) -> str:
    lines = [f"# Mutation run over rtl/ ({rep['mutants']} mutants, up to "
             f"{rep['per_file_sample']} per file, seed {rep['seed']})", "",
             f"Killed {rep['killed']} of {rep['mutants']}: **{100 * rep['kill_rate']:.1f}%**.", "",
             "| file | mutation sites | sampled | killed | kill rate |", "|---|---:|---:|---:|---:|"]
    for name, p in rep["per_file"].items():
        lines.append(f"| {name} | {p['sites']} | {p['mutants']} | {p['killed']} | "
                     f"{100 * p['kill_rate']:.0f}% |")
    surv = [r for r in rep["results"] if not r["killed"]]
    if surv:
        lines += ["", "Surviving mutants:", ""] + [f"- `{r['mutant']}`" for r in surv]
    return "\n".join(lines) + "\n"
