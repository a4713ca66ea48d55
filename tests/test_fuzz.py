# amaranth: UnusedElaboratable=no
"""Property-based fuzzing of generator configurations (hypothesis draws the case seeds; each seed
fixes the parameters, the model and the stimulus, so a failure replays exactly)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import insitu.cli as cli
from insitu.sim import fuzz


@pytest.mark.parametrize("kind", fuzz.KINDS)
@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_fuzzed_configuration_matches_golden(kind, seed):
    result = fuzz.run_case(kind, seed)
    assert result["ok"], f"replay with: insitu bench fuzz --replay {kind}:{seed}\n{result['traceback']}"


def test_fuzz_detects_a_planted_error(monkeypatch):
    original = fuzz.expected
    monkeypatch.setattr(fuzz, "expected", lambda p, accs: [[v + 1 for v in e] for e in original(p, accs)])
    result = fuzz.run_case("asm", 3)
    assert not result["ok"] and "RTL" in result["error"]


def test_bench_fuzz_cli(tmp_path, capsys):
    assert cli.main(["bench", "fuzz", "--cases", "2", "-o", str(tmp_path / "f")]) == 0
    summary = json.loads((tmp_path / "f" / "fuzz_summary.json").read_text())
    assert summary["cases"] == 2 * len(fuzz.KINDS) and summary["failures"] == 0
    assert {c["kind"] for c in summary["results"]} == set(fuzz.KINDS)
    assert cli.main(["bench", "fuzz", "--replay", "mlg:5"]) == 0
    assert cli.main(["bench", "fuzz", "--replay", "nope:1"]) == 2


def test_graph_fuzz_detects_a_planted_error(monkeypatch):
    """The graph kind compares with the golden network: one golden value off by one fails
    the case, and names the vector and output."""
    original = fuzz.golden_vectors
    monkeypatch.setattr(fuzz, "golden_vectors", lambda plan, x: original(plan, x) + 1)
    result = fuzz.run_case("graph", 2)
    assert not result["ok"] and "RTL" in result["error"] and "golden" in result["error"]
