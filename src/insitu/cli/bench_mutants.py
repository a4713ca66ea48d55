"""``insitu bench mutants``: the mutation run over ``rtl/`` (``insitu.sim.mutate``).

Samples up to ``--per-file`` mutants of each file (seeded), plants each in a copy of the tree
and runs that file's tests, ``--jobs`` mutants at a time.  Mutants listed as equivalent
(``insitu.sim.mutate.EQUIVALENT``, each with its reason) are recorded, not run, and left out
of the kill rate.  ``--rerun mutants.json`` runs an earlier run's survivors again (after new
tests) and keeps its killed ones.  Writes ``mutants.json`` (every
mutant, killed or not, with the test time) and ``mutants.md`` (kill rate per file, the
surviving mutants).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from ..gen.util import write_atomic
from ..sim import mutate
from .plots import write_bench

__all__ = ["run_bench_mutants"]


def run_bench_mutants(out_dir, *, files=None, per_file: int = 10, seed: int = 1, jobs: int = 1,
                      timeout: float = 600, rerun: list[dict] | None = None) -> dict:
    """Sample, run and report; ``rerun``: the results of an earlier run, whose surviving
    mutants run again (the others keep their outcome; a mutant whose line moved is found by
    its text, one whose line changed is dropped)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    results, kept, dropped = [], [], 0
    if rerun is not None:
        sites = {}
        for r in rerun:
            if r["file"] not in mutate.RTL_FILES:
                raise ValueError(f"mutant {r['file']}:{r['line']}: {r['old']} -> {r['new']}: "
                                 f"no file rtl/{r['file']}")
            mut = mutate.relocate(r)
            if mut is not None and mut.file not in sites:
                sites[mut.file] = set(mutate.mutants_of(mutate.ROOT / "rtl" / mut.file))
            # its line changed since that run, or it is no longer planted (an annotation)
            if mut is None or mut not in sites[mut.file]:
                dropped += 1
                continue
            r = {**r, **asdict(mut), "mutant": mut.describe()}
            (kept if r["killed"] else results).append(r)
        files = sorted({r["file"] for r in rerun})
        muts = [mutate.Mutant(r["file"], r["line"], r["col"], r["old"], r["new"])
                for r in results]
        results = []
    else:
        files = list(files or mutate.RTL_FILES)
        muts = mutate.sample(files, per_file, seed)
    # equivalent mutants (mutate.EQUIVALENT) are recorded with their reason, not run
    for mut in [m for m in muts if mutate.equivalent(m)]:
        results.append({**mutate.record(mut), "killed": False, "status": "equivalent",
                        "why": mutate.equivalent(mut), "seconds": 0.0})
    muts = [m for m in muts if not mutate.equivalent(m)]
    results += kept
    trees = [mutate.new_tree() for _ in range(min(jobs, max(1, len(muts))))]
    jobs = len(trees)

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
            k = sum(r["killed"] for r in mine)
            e = sum(r["status"] == "equivalent" for r in mine)
            per[name] = {"mutants": len(mine), "killed": k, "equivalent": e,
                         "kill_rate": round(k / (len(mine) - e), 3) if len(mine) > e else 1.0,
                         "sites": len(mutate.mutants_of(mutate.ROOT / "rtl" / name))}
    total = len(results)
    killed = sum(r["killed"] for r in results)
    equiv = sum(r["status"] == "equivalent" for r in results)
    rep = {"per_file": per, "mutants": total, "killed": killed, "equivalent": equiv,
           "survived": total - killed - equiv,
           "kill_rate": round(killed / (total - equiv), 3) if total > equiv else 0.0,
           "kill_rate_all": round(killed / total, 3) if total else 0.0,
           "per_file_sample": per_file, "dropped": dropped,
           "seed": seed, "tests": {f: mutate.tests_for(f) for f in files},
           "results": results, "seconds": round(time.monotonic() - t0, 1)}
    write_bench(out, "mutants", rep, markdown, lambda rep, path: False)
    return rep


def markdown(rep: dict) -> str:
    lines = [f"# Mutation run over rtl/ ({rep['mutants']} mutants, up to "
             f"{rep['per_file_sample']} per file, seed {rep['seed']})", "",
             f"Killed {rep['killed']} of the {rep['mutants'] - rep['equivalent']} mutants that "
             f"are not equivalent: **{100 * rep['kill_rate']:.1f}%** ({rep['equivalent']} "
             f"equivalent, {rep['survived']} survived; {100 * rep['kill_rate_all']:.1f}% of all).",
             "", "| file | mutation sites | sampled | equivalent | killed | kill rate |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, p in rep["per_file"].items():
        lines.append(f"| {name} | {p['sites']} | {p['mutants']} | {p['equivalent']} | "
                     f"{p['killed']} | {100 * p['kill_rate']:.0f}% |")
    surv = [r for r in rep["results"] if not r["killed"] and r["status"] != "equivalent"]
    if surv:
        lines += ["", "Surviving mutants:", ""] + [f"- `{r['mutant']}`" for r in surv]
    if rep.get("dropped"):
        lines += ["", f"{rep['dropped']} mutants of the earlier run were dropped: their lines "
                  "changed since, or the runner no longer plants them."]
    eq = [r for r in rep["results"] if r["status"] == "equivalent"]
    if eq:
        lines += ["", "Equivalent mutants (not run; `insitu.sim.mutate.EQUIVALENT`):", ""] + \
            [f"- `{r['mutant']}`: {r['why']}" for r in eq]
    return "\n".join(lines) + "\n"
