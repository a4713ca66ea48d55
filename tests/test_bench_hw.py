# amaranth: UnusedElaboratable=no
"""One small UP5K synthesis + place-and-route (the full sweep is `insitu bench hw`)."""

import json

import pytest

import insitu.cli as cli

pytestmark = pytest.mark.synth


def test_bench_hw_small_up5k(tmp_path, capsys):
    out = tmp_path / "hw"
    assert cli.main(["bench", "hw", "--kinds", "asm-A1,exact-lut", "--lanes", "1,2",
                     "-o", str(out)]) == 0
    data = json.loads((out / "bench_hw.json").read_text())
    rows = {(r["kind"], r["lanes"]): r for r in data["results"]}
    assert len(rows) == 4
    for r in rows.values():
        assert r["fits"] and r["fmax_mhz"] > 10 and r["luts"] > 0 and r["placed"]["SB_IO"] == 3
    # One A1 lane (select+shift, no multiplier) costs less logic than one exact 8x8 MAC lane.
    assert rows[("asm-A1", 2)]["lane_lut_ratio_vs_exact_lut"] < 1
    assert "| up5k | asm-A1 | 8 | 2 |" in (out / "bench_hw.md").read_text()


@pytest.mark.parametrize("args, msg", [
    (["--kinds", "asm-A3"], "Unknown benchmark kind 'asm-A3'"),
    (["--devices", "xc7"], "Unknown device 'xc7' (devices: up5k, ecp5-85f, ecp5-45f)"),
    (["--lanes", "a,b"], "--lanes expects comma-separated integers (and 'max'), not 'a,b'"),
    (["--lanes", "0"], "--lanes must be positive, not '0'"),
])
def test_bench_hw_bad_input(tmp_path, capsys, args, msg):
    assert cli.main(["bench", "hw", *args, "-o", str(tmp_path / "x")]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_largest_fit_search(monkeypatch):
    """The search brackets the largest lane count that fits to within ~12%, then stops."""
    from insitu.cli import bench_hw
    tried = []

    def fake_build(kind, lanes, device, weight_bits):
        tried.append(lanes)
        return {"kind": kind, "lanes": lanes, "device": device, "fits": lanes <= 37}
    monkeypatch.setattr(bench_hw, "build", fake_build)
    runs = bench_hw.largest_fit("pow2", "up5k", 8, [{"lanes": 8, "fits": True}, {"lanes": 32, "fits": False}])
    best = max(r["lanes"] for r in runs if r["fits"])
    assert tried == [20, 26, 29] and best == 29 and all(r["search"] for r in runs)
    tried.clear()
    runs = bench_hw.largest_fit("pow2", "up5k", 8, [{"lanes": 32, "fits": True}])
    assert tried[0] == 64 and 33 <= max(r["lanes"] for r in runs if r["fits"]) <= 37


def test_tool_failure_is_recorded_not_fatal(monkeypatch):
    """A Yosys crash in one configuration is a 'tool failed' row, not a lost sweep."""
    from insitu.boards.yosys import ToolError
    from insitu.cli import bench_hw

    def boom(cmd, cwd, what):
        raise ToolError(f"{what} failed: exit 1")
    monkeypatch.setattr(bench_hw, "_run", boom)
    r = bench_hw.build("asm-A1", 2, "up5k")
    assert r["luts"] is None and not r["fits"] and r["error"] == "Yosys failed: exit 1"
    rows = bench_hw.derive([r])
    assert "| up5k | asm-A1 | 8 | 2 | - | - | - | - | tool failed |" in bench_hw.markdown(rows)
