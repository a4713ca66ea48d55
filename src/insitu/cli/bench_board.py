"""``insitu bench board``: a design as a board builds it, simulated through its pins.

The plan's memories are placed as ``insitu synth`` places them on the board
(:func:`insitu.boards.top.place_memories`: activations in block RAM or SPRAM banks, weights in
block RAM, SPRAM or the SPI flash), and the host link with the engine (or, with ``top``, the
complete iCEBreaker top with its pads, RTL or the synthesized netlist) runs the host's own
session over the UART pins, with the flash model on the flash pins.  A board whose memories
are all preloaded (block RAM, flash) is run from power-up: its inferences are the very first
frames.  Writes ``bench_board.json`` / ``.md``: bit-exact, the engine's cycle counter, the
flash bytes per inference and the latency at the board's clock.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..boards.fpga import get_board
from ..boards.top import place_memories
from ..gen.flashimage import flash_image
from ..sim.board_sim import simulate_board, simulate_board_top
from .plots import write_bench

#: How the report names the engine's issue path (``Placement.issue``).
ISSUE_TEXT = {"skid": "through the skid buffer", "slice": "through a register slice",
              "direct": "direct"}

__all__ = ["run_bench_board"]


def run_bench_board(out_dir, plan, x, *, board: str, top: bool = False, netlist: bool = False,
                    sim: str = "verilator", clock_mhz: float | None = None) -> dict:
    """Simulate ``x`` (u8 vectors) through ``board``'s pins; the report (also written)."""
    out = Path(out_dir)
    b = get_board(board)
    if (top or netlist) and board != "icebreaker":
        raise ValueError(f"the complete top (--top, --netlist) is simulated for the iCEBreaker "
                         f"only, not {board}")
    place = place_memories(board, plan)
    p = place.plan
    powerup = place.weight_ram != "huge"            # nothing to load: infer from power-up
    x = np.asarray(x, dtype=np.int64).reshape(len(x), -1)
    t0 = time.monotonic()
    work = out / "sim"
    if top or netlist:
        r = simulate_board_top(p, x, work, powerup=powerup, netlist=netlist)
    else:
        r = simulate_board(p, x, work, sim=sim, powerup=powerup, **place.engine_kwargs)
    seconds = time.monotonic() - t0
    counters = r.get("counters") or []
    cycles = counters[-1]["cycles"] if counters else None
    clock = float(clock_mhz) if clock_mhz else b.clock_mhz
    flash = r.get("flash")
    rep = {
        "board": board, "device": b.device.part, "scheme": plan.scheme, "lanes": plan.lanes,
        "cpar": plan.cpar,
        "placement": place.describe(), "issue": place.issue,
        "what": ("netlist of the complete top" if netlist else
                 "complete top (RTL)" if top else "host link and engine (RTL)"),
        "simulator": "icarus" if (top or netlist) else sim, "powerup": powerup,
        "images": len(x), "vectors": r.get("vectors", 0), "mismatches": r.get("mismatches"),
        "bit_exact": bool(r.get("passed")) and r.get("mismatches") == 0
        and r.get("vectors") == len(x),
        "error": r.get("error"), "cycles": cycles, "clock_mhz": clock,
        "latency_ms": round(cycles / clock / 1e3, 3) if cycles else None,
        "flash_bytes_per_inference": (flash["bytes_read"] // max(1, flash["reads"])
                                      if flash else None),
        "flash_image_bytes": len(flash_image(p)) if p.weight_flash else None,
        "error_led_at_boot": r.get("error_led_at_boot"),
        "sim_seconds": round(seconds, 1),
    }
    write_bench(out, "bench_board", rep, markdown, lambda rep, path: False)
    return rep


def markdown(rep: dict) -> str:
    lanes = f"{rep['lanes']} lanes" + (f" x {rep['cpar']} channels" if rep.get("cpar", 1) > 1 else "")
    lines = [f"# {rep['board']} ({rep['device']}): {rep['scheme']}, {lanes}", "",
             f"{rep['what']} on {rep['simulator']}; memories: {rep['placement']}; issue path "
             f"{ISSUE_TEXT[rep['issue']]}.", "",
             "| | |", "|---|---|",
             f"| images | {rep['images']} ({'from power-up' if rep['powerup'] else 'after a load'}) |",
             f"| bit-exact | {'yes' if rep['bit_exact'] else 'NO'} ({rep['mismatches']} mismatches"
             f"{'; ' + rep['error'] if rep['error'] else ''}) |",
             f"| cycles per inference | {rep['cycles']:,} |" if rep["cycles"] else
             "| cycles per inference | - |",
             f"| latency at {rep['clock_mhz']:g} MHz | {rep['latency_ms']} ms |"]
    if rep["flash_bytes_per_inference"] is not None:
        lines.append(f"| flash bytes per inference | {rep['flash_bytes_per_inference']:,} "
                     f"(image {rep['flash_image_bytes']:,}) |")
    lines.append(f"| simulation | {rep['sim_seconds']} s |")
    return "\n".join(lines) + "\n"
