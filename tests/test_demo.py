# amaranth: UnusedElaboratable=no
"""The main job and the memory benchmark from the CLI, on the small MLP (the full runs are
benchmarks: ``insitu demo``, ``insitu bench memory``)."""

import json

import pytest

from insitu.cli import main
from insitu.gen import tools

needs_icarus = pytest.mark.skipif(tools.iverilog() is None and tools.skips_allowed(),
                                  reason="needs iverilog (make setup)")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INSITU_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.cocotb
@needs_icarus
def test_demo_mlp_asm_limited(tmp_path, cache, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "mlp", "--scheme", "asm", "--limit", "12", "--sim", "icarus",
                 "-o", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    for key in ("bit_exact", "vectors", "mismatches", "cycles", "mac_utilization",
                "weight_bits_read", "accuracy_float", "accuracy_int8_dense", "accuracy_hw"):
        assert key in rep, key
    assert rep["bit_exact"] is True and rep["vectors"] == 12 and rep["mismatches"] == 0
    assert 0 <= rep["accuracy_hw"] <= 1 and rep["cycles"] > 0
    run = rep["runs"][0]
    assert run["weight_bits_read"] > 0 and run["dense_int8_bits_read"] == 8 * 2368
    assert "bit-exact" in capsys.readouterr().out
    assert any(p.name.startswith("digits-mlp-float") for p in cache.iterdir())   # cached model
    # second run: from the cache
    assert main(["demo", "--model", "mlp", "--scheme", "asm", "--limit", "2", "--sim", "icarus",
                 "-o", str(out)]) == 0
    assert "from cache" in capsys.readouterr().err


def test_bench_memory_mlp_asm(tmp_path, cache):
    out = tmp_path / "bm"
    assert main(["bench", "memory", "--model", "mlp", "--schemes", "asm", "-o", str(out)]) == 0
    rep = json.loads((out / "bench_memory.json").read_text())
    assert len(rep["runs"]) == 6 and set(rep["baselines"]) == {"mlp"}
    base = rep["baselines"]["mlp"]
    for r in rep["runs"]:
        assert r["weight_bits_read"] == r["weight_bits_stored"]        # ASM reads its image once
        assert r["memory_ratio_vs_int8"] == pytest.approx(base["dense_int8_bits"] / r["weight_bits_read"])
        assert 0.5 < r["accuracy_hw"] <= 1
    assert (out / "bench_memory.md").read_text().startswith("# Weight memory")
    assert (out / "bench_memory.png").stat().st_size > 1000
    assert main(["bench", "memory", "--schemes", "nope", "-o", str(out)]) == 2


@pytest.mark.cocotb
@pytest.mark.parametrize("model, scheme, weights, macs, cycles_per_mac", [
    ("resnet8", "int8", 77072, 12210816, 1.01 / 8),
    ("dscnn", "int8", 19904, 4948608, 0.35),        # depthwise and pooling run lane-serially
    ("dscnn", "smartdeal", 19904, 4948608, 0.35)])  # the fine-tuned checkpoint
def test_demo_committed_checkpoints(tmp_path, capsys, model, scheme, weights, macs,
                                    cycles_per_mac):
    """A committed checkpoint through the real-network demo: 200 test images in the golden
    model, two through the RTL (Verilator), bit-exact."""
    out = tmp_path / "demo"
    assert main(["demo", "--model", model, "--scheme", scheme, "--limit", "200",
                 "--rtl-images", "2", "-o", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    run = rep["runs"][0]
    assert rep["bit_exact"] is True and run["rtl_vectors"] == 2 and run["golden_vectors"] == 200
    assert run["fine_tuned"] is (scheme != "int8")
    if scheme == "smartdeal":
        assert run["bits_per_weight"] < 8        # fewer bits than dense int8
    # 200 images: int8 within 3 points of float, a fine-tuned scheme within 5
    tol = 0.03 if scheme == "int8" else 0.05
    assert run["accuracy_float"] > 0.85 and abs(run["accuracy_hw"] - run["accuracy_float"]) < tol
    assert run["weights"] == weights and run["macs"] == macs
    assert run["cycles"] < cycles_per_mac * run["macs"]
    for key in ("weight_bytes", "memory_ratio_vs_int8", "activation_bytes", "top1_agreement"):
        assert key in run
    assert f"{model:8s} {scheme:9s} {'QAT' if scheme != 'int8' else 'PTQ'}" in capsys.readouterr().out
    assert (out / "accuracy_vs_bits.png").stat().st_size > 1000


def test_real_table_shows_cpar_only_when_used():
    """The real-network table gains a ``cpar`` column only when a row takes more than one
    channel per cycle (the default run's table is unchanged)."""
    from insitu.cli.demo_real import real_table
    row = {"model": "resnet8", "scheme": "asm", "fine_tuned": True, "accuracy_float": 0.93,
           "accuracy_hw": 0.92, "top1_agreement": 0.99, "weight_bytes": 48400,
           "bits_per_weight": 5.0, "weight_bits_read": 390000, "weights": 78000,
           "read_ratio_vs_int8": 1.6, "cycles": 216105, "mac_utilization": 0.883,
           "activation_bytes": 49152, "rtl_vectors": 4, "bit_exact": True}
    one = real_table({"runs": [dict(row, cpar=1)]}).splitlines()
    four = real_table({"runs": [dict(row, cpar=4), dict(row, scheme="smartdeal", cpar=1)]})
    assert "cpar" not in one[0] and " 216105 " in one[2]
    head, _, asm, sd = four.splitlines()
    assert head.split()[11:13] == ["cpar", "cycles"]
    assert asm.split()[10:12] == ["4", "216105"] and sd.split()[10] == "1"
