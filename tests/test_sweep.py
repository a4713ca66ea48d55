"""``insitu sweep`` on a LocalCluster of two worker processes: results keyed and resumable,
a failing point recorded as a row with its error, a worker killed mid-sweep costs nothing
but its task, the fronts and ``--best``; and one-line errors for bad specs."""

import json
import os
import shutil
import signal
import threading
import time

import pytest
from dask import distributed  # the sweep extra, installed by make setup

from insitu.cli import main
from insitu.cli.common import UserError
from insitu.cli.sweep import Results, SweepSpec, expand, load_spec, run_sweep
from insitu.cli.sweep_report import best, fronts, pareto

SPEC = dict(models=["mlp"], schemes=["asm", "int8", "smartdeal"], lanes=[4, 8], limit=100)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=50)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _lines(out):
    return [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]


def test_sweep_rerun_does_no_work_and_a_failing_point_is_a_row(build_dir, client):
    out = build_dir / "sweep"
    shutil.rmtree(out, ignore_errors=True)
    spec = SweepSpec(**SPEC)
    s1 = run_sweep(spec, out, client=client, quiet=True)
    assert s1["points"] == 6 and s1["ran"] == 6 and s1["failed"] == 0
    rows = _lines(out)
    assert len(rows) == 6 and len({r["key"] for r in rows}) == 6
    for r in rows:
        assert r["status"] == "ok" and r["cycles"] > 0 and 0 < r["accuracy_hw"] <= 1
        assert (out / "points" / r["key"] / "design" / "engine.v").exists()
    # lanes do not change the golden accuracy (one model stage per scheme)
    by = {}
    for r in rows:
        by.setdefault(r["scheme"], set()).add(r["accuracy_hw"])
    assert all(len(v) == 1 for v in by.values())
    assert len(list((out / "models").iterdir())) == 3
    # a re-run does no work
    s2 = run_sweep(SweepSpec(**SPEC), out, client=client, quiet=True)
    assert s2["ran"] == 0 and s2["skipped"] == 6 and len(_lines(out)) == 6
    # a point that raises (its synthesis times out): a row with the error; the rest go on
    bad = SweepSpec(**{**SPEC, "schemes": ["asm"], "lanes": [4]}, boards=["icebreaker"],
                    stages=["accuracy", "synth"], timeout=0.01)
    s3 = run_sweep(bad, out, client=client, quiet=True)
    assert s3["ran"] == 1 and s3["failed"] == 1
    row = _lines(out)[-1]
    assert row["status"] == "error" and "timed out" in row["error"] and row["board"] == "icebreaker"
    tables = json.loads((out / "results.json").read_text())
    assert len(tables) == 7 and (out / "results.parquet").stat().st_size > 0
    assert "Failed points" in (out / "pareto.md").read_text()
    # --best: the smallest weight memory at the accuracy asked for
    ok = [r for r in tables if r["status"] == "ok"]
    top = max(r["accuracy_hw"] for r in ok)
    b = best(tables, f"acc>={top}")
    assert b["accuracy_hw"] == top
    assert b["weight_kb"] == min(r["weight_kb"] for r in ok if r["accuracy_hw"] == top)
    assert main(["sweep", "--best", f"acc>={top},scheme={b['scheme']}", str(out)]) == 0
    assert main(["sweep", "--best", "acc>=100.5", str(out)]) == 2


def test_killed_worker_loses_only_its_task(build_dir, client):
    out = build_dir / "sweep"
    shutil.rmtree(out, ignore_errors=True)
    spec = SweepSpec(**{**SPEC, "lanes": [2, 4, 8], "schemes": ["asm", "int8", "mlg"]})
    n = len(expand(spec))
    result = {}
    th = threading.Thread(target=lambda: result.update(run_sweep(spec, out, client=client,
                                                                 quiet=True)))
    th.start()
    killed = None
    t0 = time.monotonic()
    while killed is None and time.monotonic() - t0 < 120 and th.is_alive():
        busy = {w: [str(k)[6:] for k in keys if str(k).startswith("point-")]
                for w, keys in client.processing().items()}
        busy = {w: keys for w, keys in busy.items() if keys}
        if busy:
            w, keys = next(iter(busy.items()))
            pid = client.run(os.getpid, workers=[w])[w]
            os.kill(pid, signal.SIGKILL)
            killed, lost = pid, keys
        time.sleep(0.05)
    th.join(timeout=600)
    assert killed is not None, "no point task was seen running"
    assert result["points"] == n and result["failed"] == 0
    rows = _lines(out)
    assert len(rows) == n and len({r["key"] for r in rows}) == n       # none lost, none twice
    assert all(r["status"] == "ok" for r in rows)
    # the tasks the killed worker held were run again by a live worker
    again = [r for r in rows if r["key"] in lost]
    assert again and all(r["worker_pid"] != killed for r in again)


def test_pareto_front():
    rows = [{"x": 1, "y": 0.5}, {"x": 2, "y": 0.9}, {"x": 3, "y": 0.8}, {"x": 2, "y": 0.9},
            {"x": 0.5, "y": 0.1}]
    assert [(r["x"], r["y"]) for r in pareto(rows, min, max, "x", "y")] == [(0.5, 0.1), (1, 0.5), (2, 0.9)]
    ok = {"status": "ok", "model": "m", "board": None, "accuracy_hw": 0.9, "weight_kb": 1.0}
    assert list(fronts([ok])) == ["m: accuracy vs weight KB"]


def test_spec_grid_and_random():
    spec = SweepSpec(models=["cnn"], schemes=["asm", "mlg"], lanes=[4, 8],
                     knobs={"alphabet": ["A1", "A2"], "Bo": [4, 8, 16]}).check()
    pts = expand(spec)
    assert len(pts) == (2 + 3) * 2
    assert {p["knobs"].get("alphabet") for p in pts if p["scheme"] == "asm"} == {"A1", "A2"}
    spec.random = 4
    assert len(expand(spec)) == 4 and expand(spec) == expand(spec)      # seeded


@pytest.mark.parametrize("args, message", [
    (["--model", "vgg"], "Unknown model 'vgg'"),
    (["--model", "mlp", "--schemes", "asm", "--set", "Bo=4"], "No scheme of the sweep has a knob 'Bo'"),
    (["--model", "mlp", "--lanes", "0"], "Lanes must be integers in 1..64"),
    (["--model", "mlp", "--lanes", "4,x"], "--lanes must be a comma-separated list"),
    (["--model", "mlp", "--stages", "synth"], "The synth stage needs --boards"),
    (["--model", "mlp", "--boards", "de10"], "Unknown board 'de10'"),
    (["--model", "mlp", "--tune", "fast"], "--tune must be auto, ptq or a positive number"),
])
def test_bad_spec_is_one_line(build_dir, capsys, args, message):
    assert main(["sweep", *args, "-o", str(build_dir / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (build_dir / "x").exists()


def test_toml_spec(build_dir):
    p = build_dir / "s.toml"
    p.write_text('[sweep]\nmodels = ["mlp"]\nschemes = ["mlg"]\nlanes = [4, 8]\n'
                 '[sweep.knobs]\nBo = [4, 6]\n')
    spec = load_spec(p).check()
    assert len(expand(spec)) == 4
    p.write_text('models = ["mlp"]\nlane = [4]\n')
    with pytest.raises(UserError, match="Unknown sweep spec key 'lane'"):
        load_spec(p)
    p.write_text('models = [')
    with pytest.raises(UserError, match="not valid TOML"):
        load_spec(p)


def test_results_resume_skips_a_torn_line(build_dir):
    out = build_dir / "r"
    shutil.rmtree(out, ignore_errors=True)
    res = Results(out)
    res.add({"key": "a", "status": "ok"})
    with open(out / "results.jsonl", "a") as f:
        f.write('{"key": "b", "sta')                  # a crash mid-write
    assert set(Results(out).rows) == {"a"}


def test_a_new_checkpoint_makes_a_new_point():
    """Real-model points are keyed by the checkpoint files they start from: the committed
    fine-tuned one (tune auto) is part of the key, the post-training one (ptq) is not."""
    from insitu.cli.sweep_tasks import checkpoint_digest
    auto = checkpoint_digest("resnet8", "mlg", {}, "auto")
    assert auto and auto == checkpoint_digest("resnet8", "mlg", {}, "auto")
    assert checkpoint_digest("resnet8", "mlg", {}, "ptq") != auto
    assert checkpoint_digest("resnet8", "mlg", {"Bo": 8}, "auto") == \
        checkpoint_digest("resnet8", "mlg", {}, "ptq")          # no checkpoint for these knobs
    assert checkpoint_digest("cnn", "mlg", {}, "auto") is None
