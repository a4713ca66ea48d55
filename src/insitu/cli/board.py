"""Board commands: ``synth`` (bitstream) and ``run`` (a compiled design over the UART)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..boards.fpga import BOARDS
from ..boards.host import Board, open_port, run_board
from ..boards.protocol import (
    TIMEOUT_BITS,
    ProtocolError,
    check_frame_timeout,
    resync_seconds,
)
from ..boards.synth import check_pnr, synth_board
from ..boards.yosys import ToolError
from ..gen import schemes as registry
from ..gen.compiler import MAX_LANES
from ..gen.design import load_plan
from ..gen.flashimage import parse_flash
from ..gen.model import ModelError
from ..gen.util import unknown as unknown_name
from ..gen.util import write_atomic
from .common import UserError, cpar_arg, load_array, post_lanes_arg, scheme_knobs
from .demo import demo_plan
from .demo_real import REAL_MODELS, real_plan


def board_plan(args):
    """The compiled folder's plan, or a demo model's: the digits CNN (trained or cached) or
    a real network's committed checkpoint (``--model resnet8|dscnn``)."""
    cpar = getattr(args, "cpar", 1)
    post_lanes = getattr(args, "post_lanes", 0)
    if args.design:
        if args.weight_flash or args.model != "cnn" or cpar != 1 or post_lanes:
            raise UserError("--model, --weight-flash, --cpar and --post-lanes are for the demo "
                            "models; a compiled folder has its own (insitu compile "
                            "--weight-flash, --cpar, --post-lanes)")
        try:
            return load_plan(args.design)
        except ModelError as exc:
            raise UserError(str(exc)) from None
    if args.scheme not in registry.NAMES:
        raise UserError(unknown_name("scheme", args.scheme, registry.NAMES))
    if not 1 <= args.lanes <= MAX_LANES:
        raise UserError(f"--lanes must be in 1..{MAX_LANES}, not {args.lanes}")
    if args.model not in ("cnn",) + REAL_MODELS:
        raise UserError(unknown_name("model", args.model, ("cnn",) + REAL_MODELS))
    if args.weight_flash:
        try:
            parse_flash(args.weight_flash)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    knobs = scheme_knobs(args.scheme, args.set) or None
    try:
        if args.model == "cnn":
            if cpar != 1 or post_lanes:
                raise UserError("--cpar and --post-lanes are for the real networks (--model "
                                "resnet8 or dscnn)")
            plan = demo_plan("cnn", args.scheme, args.lanes, knobs)
        else:
            plan = real_plan(args.model, args.scheme, args.lanes, knobs, cpar=cpar,
                             post_lanes=post_lanes)[0]
    except ModelError as exc:
        raise UserError(str(exc)) from None
    plan.weight_flash = args.weight_flash
    return plan


def _check_timeouts(args) -> None:
    try:
        check_frame_timeout(args.frame_timeout)
    except ValueError as exc:
        raise UserError(f"--frame-timeout: {exc}") from None
    for name in ("timeout", "infer_timeout"):
        value = getattr(args, name, None)
        if value is not None and not (value > 0 and np.isfinite(value)):
            raise UserError(f"--{name.replace('_', '-')} must be a positive number of seconds, "
                            f"not {value}")


def _cmd_synth(args) -> int:
    _check_timeouts(args)
    if args.board not in BOARDS:
        raise UserError(unknown_name("board", args.board, BOARDS))
    try:
        check_pnr(args.placer, args.router)         # before a demo model is built
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.lanes is None:
        args.lanes = BOARDS[args.board].demo_lanes
    if (not args.design and not args.set and args.scheme == registry.BOARD_DEFAULT
            and args.model == "cnn"):
        args.set = [f"{k}={v}" for k, v in BOARDS[args.board].demo_knobs.items()]
    plan = board_plan(args)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)   # noqa: E731
    try:
        rep = synth_board(args.board, plan, Path(args.output), clock_mhz=args.clock,
                          baud=args.baud, seed=args.seed, progress=say,
                          frame_timeout=args.frame_timeout, placer=args.placer,
                          router=args.router)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except ToolError as exc:
        print(f"insitu: error: {exc}", file=sys.stderr)
        print(f"insitu: logs kept in {args.output}.failed/", file=sys.stderr)
        return 1
    cap = rep["capacity"]
    lanes = f"{rep['lanes']} lanes" + (f" x {plan.cpar} channels" if plan.cpar > 1 else "")
    print(f"{rep['board']} ({rep['device']}): {rep['scheme']} engine, {lanes}; "
          f"{rep['luts']}/{cap['luts']} LC placed ({rep['synth_cells']['luts']} LUT4 in synthesis), "
          f"{rep['ffs']} FF, {rep['brams']}/{cap['brams']} BRAM, "
          f"{rep['sprams']}/{cap['sprams']} SPRAM, {rep['dsps']}/{cap['dsps']} DSP; "
          f"Fmax {rep['fmax_mhz']} MHz at a {rep['clock_mhz']} MHz clock "
          f"({'met' if rep['timing_met'] else 'NOT met'})")
    sec = rep["seconds"]
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in sec.items()))
    print(f"memories: {rep['placement']}; nextpnr {rep['placer']} placer, {rep['router']}")
    if "flash" in rep:
        fl = rep["flash"]
        print(f"weight stream: {fl['bytes']} bytes ({fl['mode']}) at flash offset 0x{fl['offset']:x}; "
              f"program it once with: cd {args.output} && {fl['program']}")
    print(f"wrote {args.output}/{rep['bitstream']} and synth_report.json", file=sys.stderr)
    if not rep["timing_met"]:
        print(f"insitu: warning: timing not met: Fmax {rep['fmax_mhz']} MHz < clock "
              f"{rep['clock_mhz']} MHz; rebuild with --clock {int(rep['fmax_mhz'] or 1)}",
              file=sys.stderr)
    return 0


def _cmd_run(args) -> int:
    if args.clock is not None and not args.clock > 0:
        raise UserError(f"--clock must be a positive frequency in MHz, not {args.clock}")
    _check_timeouts(args)
    try:
        plan = load_plan(args.design)
        if args.inputs:
            x = load_array(args.inputs, "Inputs file")
        else:
            vec = Path(args.design) / "vectors.npz"
            if not vec.exists():
                raise UserError(f"'{args.design}' has no vectors.npz: give --inputs X.npy")
            with np.load(vec) as z:
                x = z["x"]
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.integer) or x.size == 0 or x.min() < 0 or x.max() > 255:
            raise UserError("Inputs must be unsigned 8-bit integers (0..255)")
        ser = open_port(args.port, args.baud, timeout=args.timeout)
        board = Board(ser, infer_timeout=args.infer_timeout,
                      settle=resync_seconds(args.frame_timeout, args.baud))
        try:
            rep = run_board(board, plan, x.reshape(len(x), -1), load=not args.no_load,
                            progress=lambda msg: print(msg, file=sys.stderr, flush=True))
        finally:
            ser.close()
    except (ModelError, ProtocolError) as exc:
        raise UserError(str(exc)) from None
    out = rep.pop("outputs")
    cyc = rep["cycles_per_inference"]
    if args.clock:
        rep["clock_mhz"] = args.clock
        rep["latency_ms_per_inference"] = [c / args.clock / 1e3 for c in cyc]
    write_atomic(Path(args.design) / "board_outputs.npy", lambda tmp: np.save(tmp, out))
    write_atomic(Path(args.design) / "run_report.json", json.dumps(rep, indent=1) + "\n")
    print(f"bit_exact {str(rep['bit_exact']).lower()}: {rep['vectors']} vectors on the board, "
          f"{rep['mismatches']} mismatches; {rep['cycles']} cycles/inference, "
          f"{rep['weight_bits_read']} weight bits read/inference ({rep['seconds']:.1f} s)")
    if cyc:
        lat = (f"; latency {min(cyc) / args.clock / 1e3:.3f}..{max(cyc) / args.clock / 1e3:.3f} ms "
               f"at {args.clock:g} MHz" if args.clock else "")
        print(f"cycle counter per inference: {min(cyc)}..{max(cyc)}{lat}")
    return 0 if rep["bit_exact"] else 1


def register(sub) -> None:
    """``synth``, ``run``."""
    sy = sub.add_parser("synth", help="build a board bitstream (Yosys + nextpnr + pack, YoWASP)")
    sy.add_argument("design", nargs="?", metavar="DIR", help="folder written by 'insitu compile' "
                    "(default: the digits CNN demo model)")
    sy.add_argument("--board", required=True, help="icebreaker, ulx3s or versa")
    sy.add_argument("--model", default="cnn", help="demo model when no DIR is given: cnn (the "
                    "digits CNN), resnet8 or dscnn (the committed Fashion-MNIST checkpoints; "
                    "default: %(default)s)")
    sy.add_argument("--scheme", default=registry.BOARD_DEFAULT, help="demo model scheme when no DIR is given "
                    "(default: %(default)s)")
    sy.add_argument("--weight-flash", default="", metavar="qspi|spi[:DIV]", help="demo model: "
                    "stream the weights from the board's SPI flash at every inference (writes "
                    "flash.bin and prints the programming command)")
    sy.add_argument("--lanes", type=int, help="demo model lanes when no DIR is given "
                    "(default: 8)")
    cpar_arg(sy, "; a real network when no DIR is given")
    post_lanes_arg(sy)
    sy.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                    help="demo model compressor knob when no DIR is given (default ASM knobs: "
                    "iCEBreaker alphabet=A2 weight_bits=4, 4-bit codes so 16 lanes fit the "
                    "SPRAM word; ECP5 the demo's A4, 4-bit)")
    sy.add_argument("--clock", type=float, metavar="MHZ", help="engine clock (default: the "
                    "board's: 30 MHz iCEBreaker, 75 MHz ECP5; the oscillator's uses no PLL)")
    sy.add_argument("--baud", type=int, default=115200, help="UART baud rate (default: %(default)s)")
    sy.add_argument("--seed", type=int, default=1, help="nextpnr seed (default: %(default)s)")
    sy.add_argument("--placer", help="nextpnr placer: heap or static (default: heap; static "
                    "on ECP5 from 256 MAC products per cycle, where HeAP's placement does not "
                    "route)")
    sy.add_argument("--router", help="nextpnr router: router1 or router2 (default: router1; "
                    "router2 with the static placer's default)")
    sy.add_argument("--frame-timeout", type=int, default=TIMEOUT_BITS, metavar="BITS",
                    help="bit times of silence after which the board drops a half-received "
                    "frame (default: %(default)s)")
    sy.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    sy.set_defaults(func=_cmd_synth)

    rn = sub.add_parser("run", help="run a compiled design on a board over its UART")
    rn.add_argument("design", metavar="DIR", help="folder written by 'insitu compile'")
    rn.add_argument("--port", required=True, metavar="DEV", help="serial port (e.g. "
                    "/dev/ttyUSB1) or pyserial URL")
    rn.add_argument("--baud", type=int, default=115200, help="UART baud rate (default: %(default)s)")
    rn.add_argument("--inputs", metavar="X.npy", help="u8 inputs (default: DIR/vectors.npz)")
    rn.add_argument("--clock", type=float, metavar="MHZ", help="the board's engine clock "
                    "(synth_report.json's clock_mhz): report each inference's latency")
    rn.add_argument("--frame-timeout", type=int, default=TIMEOUT_BITS, metavar="BITS",
                    help="the board's frame timeout (synth --frame-timeout; default: "
                    "%(default)s): after an error the host waits twice that, at least 20 ms, "
                    "for a quiet line")
    rn.add_argument("--timeout", type=float, default=3.0, metavar="S",
                    help="seconds to wait for an answer (default: %(default)s)")
    rn.add_argument("--infer-timeout", type=float, default=10.0, metavar="S",
                    help="seconds to wait for an inference's outputs (default: %(default)s)")
    rn.add_argument("--no-load", action="store_true", help="do not write the weights first "
                    "(only when the board already holds them)")
    rn.set_defaults(func=_cmd_run)
