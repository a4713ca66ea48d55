"""The mutation runner (``insitu.sim.mutate``, ``insitu bench mutants``): which mutants it
plants, the equivalent-mutant list, and a small run that kills, misses and reruns."""

import json

import pytest

import insitu.cli as cli
from insitu.cli.bench_mutants import run_bench_mutants
from insitu.sim import mutate

SOURCE = '''"""Docstring 1 + 2."""
from amaranth.hdl import Signal


def f(a: int | None, b=3) -> int | None:
    x: int | None = a
    if a < 0:
        raise ValueError(f"bad {a + 1}")
    assert b > 0, "b"
    s = Signal(a + 4)
    return (a + b) << 1 if a == b else a & b
'''


def test_mutants_of_skips_messages_checks_defaults_and_widths(tmp_path):
    path = tmp_path / "x.py"
    path.write_text(SOURCE)
    got = {(m.line, m.old, m.new) for m in mutate.mutants_of(path)}
    # line 11: the operators, the comparison and the constant are mutated
    assert {(11, "+", "-"), (11, "<<", ">>"), (11, "==", "!="), (11, "&", "|"),
            (11, "1", "2"), (11, "1", "0")} <= got
    # the docstring, the annotations, the check before a raise, the message, the assert,
    # the default and the Signal width are not
    assert not {ln for ln, _, _ in got} & {1, 5, 6, 7, 8, 9, 10}
    m = mutate.Mutant("x.py", 11, SOURCE.splitlines()[10].index("<<"), "<<", ">>")
    assert mutate.apply(SOURCE, m).splitlines()[10] == \
        "    return (a + b) >> 1 if a == b else a & b"
    with pytest.raises(ValueError, match="does not match the source"):
        mutate.apply(SOURCE, mutate.Mutant("x.py", 11, 0, "<<", ">>"))


def test_rerun_finds_a_moved_line():
    """A result records its source line: a rerun finds the mutant when the line moved and
    drops it when the line's text changed."""
    mut = mutate.mutants_of(mutate.ROOT / "rtl" / "crc.py")[3]
    rec = mutate.record(mut)
    assert mutate.relocate(rec) == mut
    moved = {**rec, "line": rec["line"] + 7, "col": rec["col"] - rec["indent"],
             "indent": 0}
    assert mutate.relocate(moved) == mut
    assert mutate.relocate({**moved, "source": rec["source"] + " # changed"}) is None


def test_every_equivalent_entry_names_a_mutant_of_today():
    """An entry whose line changed lapses: each one must still match a mutant of its file."""
    keys = {}
    for name in {k[0] for k in mutate.EQUIVALENT}:
        for m in mutate.mutants_of(mutate.ROOT / "rtl" / name):
            keys[mutate.key_of(m)] = m
    missing = [k for k in mutate.EQUIVALENT if k not in keys]
    assert not missing, missing
    assert all(mutate.equivalent(keys[k]) for k in mutate.EQUIVALENT)


def test_mutation_run_kills_misses_and_reruns(tmp_path, monkeypatch):
    """Two mutants of crc.py against its tests are killed; against a test selection that does
    not cover the file they survive (the run can report a miss); a listed equivalent mutant
    is recorded, not run; --rerun runs the survivors again with the real tests."""
    muts = mutate.sample(["crc.py"], 3, seed=4)
    equiv = muts[2]
    monkeypatch.setitem(mutate.EQUIVALENT, mutate.key_of(equiv), "planted for the test")
    rep = run_bench_mutants(tmp_path / "real", files=["crc.py"], per_file=3, seed=4)
    assert (rep["mutants"], rep["killed"], rep["equivalent"], rep["survived"]) == (3, 2, 1, 0)
    assert rep["kill_rate"] == 1.0 and rep["kill_rate_all"] == round(2 / 3, 3)
    eq = [r for r in rep["results"] if r["status"] == "equivalent"]
    assert eq[0]["mutant"] == equiv.describe() and eq[0]["seconds"] == 0.0
    md = (tmp_path / "real" / "mutants.md").read_text()
    assert "Killed 2 of the 2 mutants that are not equivalent: **100.0%**" in md
    assert f"`{equiv.describe()}`: planted for the test" in md

    monkeypatch.setitem(mutate.TESTS, "crc.py", ["tests/test_formal.py", "-k", "maxpool"])
    rep = run_bench_mutants(tmp_path / "blind", files=["crc.py"], per_file=3, seed=4)
    assert (rep["killed"], rep["survived"], rep["kill_rate"]) == (0, 2, 0.0)
    assert "Surviving mutants:" in (tmp_path / "blind" / "mutants.md").read_text()

    monkeypatch.undo()
    monkeypatch.setitem(mutate.EQUIVALENT, mutate.key_of(equiv), "planted for the test")
    saved = tmp_path / "blind" / "mutants.json"
    assert cli.main(["bench", "mutants", "--rerun", str(saved), "-o",
                     str(tmp_path / "rerun")]) == 0
    rep = json.loads((tmp_path / "rerun" / "mutants.json").read_text())
    assert (rep["killed"], rep["survived"], rep["equivalent"]) == (2, 0, 1)


def test_bench_mutants_bad_input(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    assert cli.main(["bench", "mutants", "--rerun", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "is not a mutants.json of 'insitu bench mutants'" in capsys.readouterr().err
    gone = tmp_path / "g.json"
    gone.write_text(json.dumps([{"file": "nope.py", "line": 1, "col": 0, "old": "<<",
                                 "new": ">>", "killed": False, "status": 0}]))
    assert cli.main(["bench", "mutants", "--rerun", str(gone), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "mutant nope.py:1: << -> >>: no file rtl/nope.py" in err and err.count("\n") == 1
    # a mutant whose line changed since is dropped, not run
    stale = tmp_path / "s.json"
    stale.write_text(json.dumps([{"file": "crc.py", "line": 1, "col": 0, "old": "<<",
                                  "new": ">>", "killed": False, "status": 0}]))
    assert cli.main(["bench", "mutants", "--rerun", str(stale), "-o", str(tmp_path / "o")]) == 0
    rep = json.loads((tmp_path / "o" / "mutants.json").read_text())
    assert rep["dropped"] == 1 and rep["mutants"] == 0
    assert cli.main(["bench", "mutants", "--files", "nope.py", "-o", str(tmp_path / "o")]) == 2
