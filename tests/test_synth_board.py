# amaranth: UnusedElaboratable=no
"""One small UP5K synthesis, place-and-route and bitstream of a board top (the full
benchmark is `insitu bench hw --engine`)."""

import json

import numpy as np
import pytest
from test_engine import extreme_inputs, small_net

import insitu.cli as cli
from insitu.boards import synth
from insitu.boards.fpga import BOARDS
from insitu.gen.compiler import compile_model
from insitu.rtl.emit import write_design

pytestmark = pytest.mark.synth


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    rng = np.random.default_rng(3)
    plan = compile_model(small_net(rng), "asm", lanes=3, input_shape=(2, 5, 5))
    d = tmp_path_factory.mktemp("board") / "d"
    write_design(plan, d, extreme_inputs(rng, 50, 0))
    return d


def test_synth_icebreaker_small(design, tmp_path, capsys):
    out = tmp_path / "ice"
    assert cli.main(["synth", "--board", "icebreaker", str(design), "-o", str(out)]) == 0
    rep = json.loads((out / "synth_report.json").read_text())
    for key in ("board", "device", "lanes", "luts", "ffs", "brams", "sprams", "dsps", "fmax_mhz",
                "seconds"):
        assert key in rep
    assert rep["board"] == "icebreaker" and rep["lanes"] == 3
    assert 0 < rep["luts"] <= 5280 and rep["brams"] <= 30
    assert rep["sprams"] >= 1 and rep["weight_ram"] == "spram"     # the code stream in SPRAM
    assert rep["fmax_mhz"] > 12 and rep["pll"]["mhz"] == 30
    assert set(rep["seconds"]) == {"generate", "synth", "pnr", "pack", "total"}
    assert (rep["placer"], rep["router"]) == ("heap", "router1")      # the iCE40 default
    assert (out / "top.bin").stat().st_size > 100_000            # a UP5K bitstream
    printed = capsys.readouterr()
    assert "[3/4] pnr" in printed.err and "icebreaker (iCE40UP5K-SG48)" in printed.out
    assert "nextpnr heap placer, router1" in printed.out
    assert not (tmp_path / "ice.partial").exists()


def test_synth_ulx3s_small_static_placer(design, tmp_path, capsys):
    """``--placer static --router router2``, the ECP5 default from 256 MAC products per cycle
    (HeAP crowds those engines into a corner that no router clears), builds a bitstream."""
    out = tmp_path / "ulx"
    assert cli.main(["synth", "--board", "ulx3s", str(design), "--placer", "static",
                     "--router", "router2", "-o", str(out)]) == 0
    rep = json.loads((out / "synth_report.json").read_text())
    assert (rep["placer"], rep["router"]) == ("static", "router2")
    assert rep["fmax_mhz"] > 20 and (out / "top.bit").stat().st_size > 100_000
    assert "nextpnr static placer, router2" in capsys.readouterr().out
    ecp5, ice40 = BOARDS["ulx3s"].device.family, BOARDS["icebreaker"].device.family
    assert ecp5.pnr_flow(16 * 8) == ("heap", "router1")
    assert ecp5.pnr_flow(16 * 16) == ("static", "router2")
    assert ice40.pnr_flow(16 * 16) == ("heap", "router1")


def test_synth_tool_error_is_shown(design, tmp_path, capsys, monkeypatch):
    """A failing tool step prints the tool's own error line, exits 1, writes no OUT."""
    real = synth._commands

    def broken(script):
        cmds = real(script)
        return [(v, ["-p", "read_verilog no_such_file.v"] if v == "YOSYS" else a) for v, a in cmds]
    monkeypatch.setattr(synth, "_commands", broken)
    out = tmp_path / "bad"
    assert cli.main(["synth", "--board", "icebreaker", str(design), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "synth failed (exit 1): ERROR: File `no_such_file.v' not found" in err
    assert not out.exists() and (tmp_path / "bad.failed" / "synth.out").exists()


def test_abc9_crash_fallback_scripts():
    """YoWASP's ABC9 sometimes dies without a message; the retry maps LUTs without it."""
    from insitu.boards.yosys import abc_crashed, without_abc9
    assert abc_crashed("2.44.67.5. Executing ABC9.\nRunning ABC command: yosys-abc -s\n")
    assert not abc_crashed("Running ABC command\nERROR: something else\n")
    assert without_abc9("read_verilog a.v; synth_ice40 -dsp -top top; stat") == \
        "read_verilog a.v; synth_ice40 -dsp -top top -noabc; stat"
    assert without_abc9("read_rtlil t.il\nsynth_ecp5 -top top\nwrite_json t.json") == \
        ("read_rtlil t.il\nsynth_ecp5 -top top -run :map_luts; abc -lut 4; clean; "
         "synth_ecp5 -top top -run map_cells:\nwrite_json t.json")
