"""Board-level simulation: the host link's Verilog in cocotb, driven through its UART pins.

The device under test is :class:`~insitu.boards.hostlink.HostLink` (what every board top
instantiates; the top adds only the PLL, the pads and the LEDs), built with the UP5K's
SPRAM weight memory, which starts empty: the bench first loads and verifies every memory
word over UART with the protocol's host session, exactly as ``insitu run`` does on a board.
``fault_campaign`` injects link faults and resets and classifies every run's outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..boards import protocol as P
from ..boards.hostlink import HostLink
from ..boards.top import BOARDS, BoardTop, board_platform, spram_memories
from ..boards.yosys import CELL_DEFINES, cell_models, yosys_command
from ..gen.compiler import compile_model
from ..gen.design import FLASH, golden_vectors
from ..gen.flashimage import flash_image
from ..gen.model import Layer
from ..rtl.emit import time0_safe
from .engine_run import cycle_budget
from .runner import run_cocotb

TOP = "insitu_board"
#: Fault kinds of :func:`fault_campaign` (one injected fault per session).
#: ``flip`` hits any byte the host sends (load, input or command frames), ``flip_input`` only
#: the bytes of ``X`` frames.
FAULT_KINDS = ("flip", "flip_input", "drop", "dup", "break", "gap", "garbage", "reset_load",
               "reset_infer")


def _run_bench(plan, x, build_dir, *, preloaded, divisor, gaps, sim, toplevel,
               verilog_text=None, sources=(), defines=None, faults=None, seed=1,
               plant=None, powerup=False, flash_base: int = 0) -> dict:
    """Write the bench's vectors and run ``insitu.sim.tb_board`` on ``toplevel``: the normal
    run (``board.json`` plus ``passed``) or, with ``faults`` (``{kind: runs}``), the fault
    campaign (``{"runs": [...], "passed": ...}``)."""
    x = np.asarray(x, dtype=np.int64).reshape(len(x), -1)
    y = golden_vectors(plan, x)
    if plant == "golden":                             # a planted error in the expectation
        y = y.copy()
        y[0, 0] += 1
    vec = build_dir / "board_vectors.npz"
    np.savez(vec, x=x, y=y, ident=np.frombuffer(P.ident(plan), dtype=np.uint8),
             plan=plan.to_json(), divisor=divisor, budget=cycle_budget(plan),
             timeout_bits=P.TIMEOUT_BITS, preloaded=preloaded,
             wbits=plan.weight_bits_per_inference, macs=plan.macs)
    env = {"BOARD_VECTORS": str(vec.resolve()), "BOARD_GAPS": str(gaps),
           "BOARD_SEED": str(seed), "BOARD_PLANT": plant or "",
           "BOARD_POWERUP": "1" if powerup else ""}
    if plan.weight_flash:                             # the flash model on the link's pins
        image = bytearray(flash_image(plan))
        if plant == "flash":                          # a planted error in the flash
            image[len(image) // 2] ^= 0x10
        (build_dir / FLASH).write_bytes(bytes(image))
        image = build_dir / FLASH
        env["BOARD_FLASH"] = str(image.resolve())
        env["BOARD_FLASH_BASE"] = str(flash_base)
    name = "board.json"
    if faults:
        env["BOARD_FAULTS"] = ",".join(f"{k}:{n}" for k, n in faults.items())
        name = "faults.json"
    res = run_cocotb(verilog_text, toplevel, "insitu.sim.tb_board", build_dir / sim, sim=sim,
                     sources=sources, defines=defines, extra_env=env,
                     testcase="board_faults" if faults else "board_uart")
    f = res.build_dir / name
    summary = json.loads(f.read_text()) if f.exists() else {}
    if faults:
        summary = {"runs": summary or []}
    summary["passed"] = res.passed
    return summary


def link_test_plan(scheme: str = "mlg", lanes: int = 8):
    """A two-layer network (conv3x3 1->3 on 4x4, linear 48->4) whose image loads in a few
    dozen words: the fault campaign's payload, so a session is short."""
    rng = np.random.default_rng(5)
    net = [Layer("c1", "conv3x3", rng.normal(size=(3, 1, 3, 3)), rng.normal(size=3) * 0.2,
                 pad=1),
           Layer("fc", "linear", rng.normal(size=(4, 48)), rng.normal(size=4) * 0.2)]
    return compile_model(net, scheme, lanes=lanes, input_shape=(1, 4, 4))


def link_verilog(plan, *, divisor: int = 8, weight_ram: str = "huge", issue: str = "skid",
                 check_frames: bool = True) -> str:
    """The host link (engine included) as Verilog, as the board tops instantiate it (a plan
    whose weights stream from a flash has no weight memory: ``weight_ram`` is moot;
    ``issue``: the engine's issue path, ``Placement.issue``)."""
    from amaranth.back import verilog
    link = HostLink(plan, divisor, {"weight_ram": "block" if plan.weight_flash else weight_ram,
                                    "issue": issue},
                    check_frames=check_frames)
    return time0_safe(verilog.convert(link, name=TOP, emit_src=False))


def simulate_board(plan, x, build_dir, *, sim: str = "icarus", divisor: int = 8,
                   gaps: float = 0.0, weight_ram: str = "huge", issue: str = "skid",
                   plant=None, powerup: bool = False) -> dict:
    """Run ``x`` (u8 vectors) through the host link's UART pins with the protocol's host
    session; returns the bench's summary plus ``passed``.  ``plant``: ``"golden"`` (one
    expected output off by one) or ``"load"`` (one loaded weight word flipped), planted
    errors the bench must catch, or ``"flash"`` (one flipped bit in the flash image).  A plan
    whose weights stream from a flash gets the flash model on its pins.  ``powerup``: the
    inferences are the first frames after reset (no load, no verify; the weights must be in
    block RAM or the flash).  ``weight_ram``, ``issue``: the engine's options
    (``Placement.engine_kwargs``)."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    preloaded = weight_ram != "huge" or bool(plan.weight_flash)
    return _run_bench(plan, x, build_dir, preloaded=preloaded, divisor=divisor, powerup=powerup,
                      gaps=gaps, sim=sim, toplevel=TOP, plant=plant,
                      verilog_text=link_verilog(plan, divisor=divisor, weight_ram=weight_ram,
                                                issue=issue))


def fault_campaign(plan, x, build_dir, faults: dict, *, sim: str = "verilator",
                   divisor: int = 4, seed: int = 1, weight_ram: str = "huge",
                   check_frames: bool = True) -> dict:
    """``faults[kind]`` sessions per fault kind (:data:`FAULT_KINDS`) through the host link's
    pins, one injected fault each; every run's outcome (bit_exact / error / silent_wrong).
    ``check_frames=False`` builds the control: a link that ignores frame CRCs."""
    bad = [k for k in faults if k not in FAULT_KINDS]
    if bad:
        raise ValueError(f"Unknown fault kind '{bad[0]}' (kinds: {', '.join(FAULT_KINDS)})")
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    text = link_verilog(plan, divisor=divisor, weight_ram=weight_ram, check_frames=check_frames)
    return _run_bench(plan, x, build_dir, preloaded=weight_ram != "huge", divisor=divisor,
                      gaps=0.0, sim=sim, toplevel=TOP, faults=faults, seed=seed,
                      verilog_text=text)


HARNESS = """
module insitu_board_pins(input clk, input rx, output tx, output led0, output led1);
  top u_top(.clk12_0__io(clk), .uart_0__rx__io(rx), .uart_0__tx__io(tx),
            .led_0__io(led0), .led_1__io(led1));
endmodule
"""

#: The same with the iCEBreaker's quad-SPI flash pins: the flash model drives DQ weakly, so
#: the FPGA's pad wins whenever it drives (DQ0 during the command).
HARNESS_FLASH = """
module insitu_board_pins(input clk, input rx, output tx, output led0, output led1,
  output flash__sck, output flash__cs_n, output [3:0] flash__dq_o, input [3:0] flash__dq_i);
  wire [3:0] dq;
  assign (weak0, weak1) dq = flash__dq_i;
  assign flash__dq_o = dq;
  top u_top(.clk12_0__io(clk), .uart_0__rx__io(rx), .uart_0__tx__io(tx),
            .led_0__io(led0), .led_1__io(led1), .spi_flash_4x_0__cs__io(flash__cs_n),
            .spi_flash_4x_0__clk__io(flash__sck), .spi_flash_4x_0__dq__io(dq));
endmodule
"""

#: The iCE40 PLL's simulation model in Yosys is a black box: a pass-through stand-in (the
#: design then runs at the oscillator's clock; UART timing is counted in cycles, unchanged).
PLL_STANDIN = """
module SB_PLL40_PAD(input PACKAGEPIN, output PLLOUTCORE, output PLLOUTGLOBAL,
  input EXTFEEDBACK, input [7:0] DYNAMICDELAY, output LOCK, input BYPASS, input RESETB,
  input LATCHINPUTVALUE, output SDO, input SDI, input SCLK);
  parameter FEEDBACK_PATH = "SIMPLE";
  parameter DIVR = 0;
  parameter DIVF = 0;
  parameter DIVQ = 0;
  parameter FILTER_RANGE = 0;
  assign PLLOUTCORE = PACKAGEPIN;
  assign PLLOUTGLOBAL = PACKAGEPIN;
  assign LOCK = 1'b1;
endmodule
"""


def simulate_board_top(plan, x, build_dir, *, sim: str = "icarus", divisor: int = 8,
                       gaps: float = 0.0, powerup: bool = False, plant=None,
                       netlist: bool = False) -> dict:
    """The complete iCEBreaker top (PLL, reset synchroniser, SB_IO pads, LEDs, host link,
    engine with its SPRAM-style weight memory) from amaranth-boards' own build files, as
    Verilog with Yosys' iCE40 cell models, driven only through its clock, UART and LED pins
    (and, for a plan whose weights stream from the flash, its flash pins, with the flash model
    on them; Icarus, for the pads' drive strengths).  The top is built for a baud rate of
    clock / ``divisor`` so the run stays short.  ``netlist``: the top as ``insitu synth``
    maps it (Yosys ``synth_ice40 -dsp``: LUT4s, carries, flip-flops, EBR, SPRAM, DSPs, pads),
    simulated gate by gate."""
    import re
    import subprocess

    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    clock = BOARDS["icebreaker"].clock_mhz * 1e6
    top = BoardTop(plan, "icebreaker", baud=round(clock / divisor))
    if top.divisor != divisor:
        raise ValueError(f"divisor {divisor} is not reachable")
    bp = board_platform("icebreaker").prepare(top, name="top")
    (build_dir / "top.il").write_text(bp.files["top.il"])
    if netlist:
        fam = BOARDS["icebreaker"].family
        drop = "".join(f"delete */t:$meminit_v2 */r:MEMID=\\{name} %i; "
                       for name in spram_memories(top))
        script = (f"read_rtlil top.il; {drop}{fam.synth_command(dsp=True)} -top top; "
                  f"write_verilog -noattr top_sim.v")
    else:
        script = "read_rtlil top.il; proc; opt_clean; write_verilog -noattr top_sim.v"
    proc = subprocess.run([yosys_command(), "-q", "-p", script],
                          cwd=build_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"Yosys could not convert the board top: {proc.stderr[-400:]}")
    text = time0_safe((build_dir / "top_sim.v").read_text())
    harness = HARNESS_FLASH if plan.weight_flash else HARNESS
    (build_dir / "board_top.v").write_text(text + harness + PLL_STANDIN)
    models = cell_models("ice40", build_dir)
    text = re.sub(r"module SB_PLL40_PAD\b.*?endmodule", "", models.read_text(), flags=re.S)
    # SB_IO's input and output muxes are `always @*` blocks: they run first when an input
    # changes, so a pad that holds its time-0 value (a flash DQ0 until the first 1 bit it
    # sends, a DQ line until the flash first drives a 1) reads or drives X.  Evaluate both
    # once after time 0 as well.
    text = text.replace("\tassign D_IN_0 = din_0, D_IN_1 = din_1;",
                        "\tinitial #1 begin\n"
                        "\t\tdout = PIN_TYPE[3] ? (PIN_TYPE[2] ? !dout_q_0 : D_OUT_0) : dout_q_0;\n"
                        "\t\tif (!PIN_TYPE[1] || !LATCH_INPUT_VALUE)\n"
                        "\t\t\tdin_0 = PIN_TYPE[0] ? PACKAGE_PIN : din_q_0;\n"
                        "\tend\n\tassign D_IN_0 = din_0, D_IN_1 = din_1;", 1)
    models.write_text(text)
    return _run_bench(plan, x, build_dir, preloaded=top.weight_ram != "huge", divisor=divisor,
                      gaps=gaps, sim=sim, toplevel="insitu_board_pins", powerup=powerup,
                      plant=plant, flash_base=BOARDS["icebreaker"].flash.offset,
                      sources=[build_dir / "board_top.v", models],
                      defines=CELL_DEFINES["ice40"])
