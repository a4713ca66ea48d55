"""Board-level simulation: the host link's Verilog in cocotb, driven through its UART pins.

The device under test is :class:`~insitu.boards.hostlink.HostLink` (what every board top
instantiates; the top adds only the PLL, the pads and the LEDs), built with the UP5K's
SPRAM weight memory, which starts empty: the bench first loads every weight word over UART,
exactly as ``insitu run`` does on a board.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import protocol as P

TOP = "insitu_board"


def simulate_board(plan, x, build_dir, *, sim: str = "icarus", divisor: int = 8,
                   gaps: float = 0.0, weight_ram: str = "huge", corrupt=None) -> dict:
    """Run ``x`` (u8 vectors) through the board top's UART; returns the bench's summary plus
    ``passed``.  ``corrupt(loads)`` may change the load list (a planted error)."""
    from amaranth.back import verilog

    from ..gen.build import golden_vectors
    from ..gen.verilog import time0_safe
    from ..sim.engine_run import cycle_budget
    from ..sim.runner import run_cocotb
    from .hostlink import HostLink
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    link = HostLink(plan, divisor, {"weight_ram": weight_ram})
    text = time0_safe(verilog.convert(link, name=TOP, emit_src=False))
    x = np.asarray(x, dtype=np.int64).reshape(len(x), -1)
    y = golden_vectors(plan, x)
    loads = list(P.load_words(plan)) if weight_ram == "huge" else []
    if corrupt is not None:
        loads = corrupt(loads)
    vec = build_dir / "board_vectors.npz"
    np.savez(vec, x=x, y=y, ident=np.frombuffer(P.ident(plan), dtype=np.uint8),
             loads=np.array([[str(a) for a in t] for t in loads] or np.zeros((0, 3)), dtype=str),
             load_bytes=P.load_bytes(plan), divisor=divisor, budget=cycle_budget(plan),
             wbits=plan.weight_bits_per_inference, macs=plan.macs)
    res = run_cocotb(text, TOP, "insitu.sim.tb_board", build_dir / sim, sim=sim,
                     extra_env={"BOARD_VECTORS": str(vec.resolve()), "BOARD_GAPS": str(gaps)})
    f = res.build_dir / "board.json"
    summary = json.loads(f.read_text()) if f.exists() else {}
    summary["passed"] = res.passed
    return summary
