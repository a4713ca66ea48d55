# amaranth: UnusedElaboratable=no
"""The self-checking Verilog bench (``insitu.sim.hdl_bench``): it can fail (a planted wrong
golden value, a design that never answers), it agrees with the cocotb bench on outputs and
counters, and it replays the same stalls from the same seed."""

import numpy as np
import pytest
from test_cocotb_engine import two_layer_model

from insitu.cli import main
from insitu.gen import tools
from insitu.gen.design import TOP, golden_vectors, load_plan
from insitu.sim.engine_run import cycle_budget, simulate
from insitu.sim.hdl_bench import bench_source, run_bench

pytestmark = pytest.mark.cocotb


def _design(build_dir, scheme="asm"):
    model, design = build_dir / "m.npz", build_dir / "design"
    two_layer_model(model, seed=3)
    assert main(["compile", str(model), "--scheme", scheme, "--lanes", "3", "--input-shape",
                 "2,4,4", "-o", str(design)]) == 0
    plan = load_plan(design)
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (5, 32))
    x[0] = 255                                     # extremes too
    x[1] = 0
    return design, plan, x, golden_vectors(plan, x)


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_planted_wrong_golden_value_fails(build_dir, sim):
    design, plan, x, y = _design(build_dir)
    budget = 20 * cycle_budget(plan)
    ok = run_bench(design / "engine.v", TOP, x, y, build_dir / "ok", sim=sim, budget=budget,
                   stalls=0.25)
    assert ok["mismatches"] == 0 and len(ok["counters"]) == 5 and ok["outputs"] == y.tolist()
    y_bad = y.copy()
    y_bad[3, 2] += 1                               # one planted error in one value
    bad = run_bench(design / "engine.v", TOP, x, y_bad, build_dir / "bad", sim=sim,
                    budget=budget, stalls=0.25)
    assert bad["mismatches"] == 1
    mm = bad["first_mismatches"][0]
    assert mm["vector"] == 3 and mm["outputs"] == [2] and mm["golden"] == [mm["rtl"][0] + 1]


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_reset_mid_inference_happens_and_every_vector_is_exact(build_dir, sim):
    """``reset``: the pulse really falls inside the first inference (it is reported), and
    every vector afterwards is exact under stalls."""
    design, plan, x, y = _design(build_dir, "mlg")
    rep = run_bench(design / "engine.v", TOP, x, y, build_dir / sim, sim=sim,
                    budget=20 * cycle_budget(plan), stalls=0.3, reset=True)
    assert rep["resets"] == 1
    assert rep["mismatches"] == 0 and rep["outputs"] == y.tolist()
    plain = run_bench(design / "engine.v", TOP, x, y, build_dir / f"{sim}-plain", sim=sim,
                      budget=20 * cycle_budget(plan), stalls=0.3)
    assert plain["resets"] == 0


def test_design_that_does_not_finish_times_out(build_dir):
    design, plan, x, y = _design(build_dir, "int8")
    rep = run_bench(design / "engine.v", TOP, x, y, build_dir / "t", sim="icarus", budget=50)
    assert rep["mismatches"] == 5 and rep["first_mismatches"][0]["timeout_cycles"] == 50


def test_hdl_and_cocotb_benches_agree(build_dir):
    design, plan, x, y = _design(build_dir, "smartdeal")
    if not tools.have_verilator() and tools.skips_allowed():
        pytest.skip("needs verilator")
    hdl = simulate(design, x, bench="hdl", stalls=0.2, progress=False, build_dir=build_dir / "h")
    coco = simulate(design, x, bench="cocotb", progress=False, build_dir=build_dir / "c")
    assert hdl["bit_exact"] and coco["bit_exact"]
    assert hdl["outputs"].tolist() == coco["outputs"].tolist()
    for key in ("cycles", "mac_slots", "weight_bits_read", "mac_utilization"):
        assert hdl[key] == coco[key], key


def test_bench_source_is_seeded_and_checks_its_knobs():
    a = bench_source(TOP, vectors=2, features=4, outputs=3, budget=100, stalls=0.5, seed=1)
    assert a == bench_source(TOP, vectors=2, features=4, outputs=3, budget=100, stalls=0.5,
                             seed=1)
    assert a != bench_source(TOP, vectors=2, features=4, outputs=3, budget=100, stalls=0.5,
                             seed=2)
    with pytest.raises(ValueError, match="stalls must be in"):
        bench_source(TOP, vectors=2, features=4, outputs=3, budget=100, stalls=1.0)
    with pytest.raises(ValueError, match="Unknown bench"):
        simulate(".", bench="nope")


@pytest.mark.parametrize("name", ["weight.hex", "engine.v", "post.hex"])
def test_a_changed_shipped_file_is_refused(build_dir, capsys, name):
    """One hex digit changed in a shipped file: simulate, synth and run refuse the folder
    with one line naming the file (what is verified is what is shipped)."""
    design, _, _, _ = _design(build_dir, "int8")
    capsys.readouterr()
    path = design / name
    text = path.read_text()
    i = next(i for i, ch in enumerate(text) if ch in "0123456789abcdef" and
             (name != "engine.v" or text[i - 2:i] == "'h"))
    path.write_text(text[:i] + ("1" if text[i] == "0" else "0") + text[i + 1:])
    for argv in (["simulate", str(design)],
                 ["synth", str(design), "--board", "icebreaker", "-o", str(build_dir / "syn")],
                 ["run", str(design), "--port", "/dev/null"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"{name}' differs from the file compile wrote" in err and err.count("\n") == 1
    assert not (build_dir / "syn").exists()
