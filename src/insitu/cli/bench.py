"""Benchmark commands: ``bench fuzz``, ``memory``, ``hw``, ``sweep``, ``bandwidth``, ``board``,
``faults``, ``mutants``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..boards.fpga import BOARDS, DEVICES
from ..boards.yosys import ToolError
from ..gen import schemes as registry
from ..gen.compiler import CPARS, MAX_LANES
from ..gen.datasets import fashion_mnist, pad_to
from ..gen.digits import load_digits_split
from ..gen.flashimage import parse_flash
from ..gen.util import unknown as unknown_name
from ..gen.util import write_atomic
from ..sim import fuzz, mutate
from ..sim.board_sim import FAULT_KINDS
from . import bench_hw
from .bench_bandwidth import parse_config, run_bench_bandwidth
from .bench_board import run_bench_board
from .bench_faults import run_bench_faults
from .bench_memory import SWEEPS, markdown, run_bench_memory
from .bench_mutants import run_bench_mutants
from .bench_sweep import run_bench_sweep
from .board import board_plan
from .common import UserError, cpar_arg, post_lanes_arg, scheme_knobs


def _cmd_bench_fuzz(args) -> int:
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
    kinds = args.kinds.split(",")
    devices = args.devices.split(",")
    for k in kinds:
        if k not in bench_hw.KINDS:
            raise UserError(unknown_name("benchmark kind", k, bench_hw.KINDS))
    for d in devices:
        if d not in DEVICES:
            raise UserError(unknown_name("device", d, DEVICES))
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
    engine_knobs = scheme_knobs(registry.BOARD_DEFAULT, args.engine_set) or None
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


def _cmd_bench_sweep(args) -> int:
    if args.limit < 1:
        raise UserError(f"--limit must be a positive number of test images, not {args.limit}")
    boards = [] if args.no_synth else ["icebreaker", "ulx3s"]
    rep = run_bench_sweep(Path(args.output), limit=args.limit, boards=boards)
    print((Path(args.output) / "bench_sweep.md").read_text())
    print(f"wrote {Path(args.output) / 'bench_sweep.json'}, bench_sweep.md, bench_sweep.png",
          file=sys.stderr)
    return 0 if all(r["failed"] == 0 for r in rep["runs"].values()) else 1


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated integers, not {text!r}") from None
    if not vals or min(vals) < 1:
        raise UserError(f"{what} must be positive integers, not {text!r}")
    return vals


def _config(text: str):
    """``L`` or ``LxP`` -> ``(L, P)`` within the engine's rules, or None."""
    try:
        L, P = parse_config(text)
    except ValueError:
        return None
    return (L, P) if 1 <= L <= MAX_LANES and P in CPARS and L % P == 0 else None


def _cmd_bench_bandwidth(args) -> int:
    configs = []
    for item in args.lanes.split(","):
        cfg = _config(item)
        if cfg is None:
            raise UserError(f"--lanes expects lane counts 1..{MAX_LANES}, each optionally xP "
                            f"channels per cycle (P in {', '.join(map(str, CPARS))}, dividing "
                            f"the lanes), e.g. 8,64,64x8, not {item!r}")
        configs.append(cfg)
    bits = _ints(args.bits, "--bits")
    rtl = []
    for item in filter(None, (args.rtl or "").split(",")):
        c, _, b = item.partition(":")
        cfg = _config(c)
        if cfg is None or not (b.isdigit() and int(b) >= 1):
            raise UserError(f"--rtl expects LANES:BITS pairs, e.g. 8:2,64x8:2, not {item!r}")
        rtl.append((cfg[0], int(b), cfg[1]))
    rtl_flash = []
    for item in filter(None, (args.rtl_flash or "").split(",")):
        c, _, mode = item.partition(":")
        try:
            parse_flash(mode)
        except ValueError:
            mode = None
        cfg = _config(c)
        if not (cfg and mode):
            raise UserError(f"--rtl-flash expects LANES:qspi|spi pairs, e.g. 8:qspi, not {item!r}")
        rtl_flash.append((cfg[0], mode, cfg[1]))
    if args.limit < 1:
        raise UserError(f"--limit must be a positive number of test images, not {args.limit}")
    rep = run_bench_bandwidth(Path(args.output), lanes=configs, bits=bits, rtl=rtl,
                              rtl_flash=rtl_flash, limit=args.limit, sim=args.sim)
    print((Path(args.output) / "bench_bandwidth.md").read_text())
    print(f"wrote {Path(args.output) / 'bench_bandwidth.json'}, bench_bandwidth.md, "
          f"bench_bandwidth.png ({rep['seconds']:.0f} s)", file=sys.stderr)
    ok = (all(r["bit_exact"] for r in rep["rtl"] + rep["rtl_flash"])
          and rep["rtl_within_2_percent"])
    return 0 if ok else 1


def _board_bench_inputs(args, plan, n: int) -> np.ndarray:
    """u8 inputs: the compiled folder's vectors, or the demo model's test images."""
    if args.design:
        vec = Path(args.design) / "vectors.npz"
        if not vec.exists():
            raise UserError(f"'{args.design}' has no vectors.npz")
        with np.load(vec) as z:
            x = z["x"]
    elif args.model == "cnn":
        x = np.round(load_digits_split()[2] * 255)
    else:
        x = pad_to(fashion_mnist().x_test[:n], plan.input_shape[1])
    return np.asarray(x, dtype=np.int64).reshape(len(x), -1)[:n]


def _cmd_bench_board(args) -> int:
    if args.board not in BOARDS:
        raise UserError(unknown_name("board", args.board, BOARDS))
    if args.images < 1:
        raise UserError(f"--images must be a positive integer, not {args.images}")
    if args.clock is not None and not args.clock > 0:
        raise UserError(f"--clock must be a positive frequency in MHz, not {args.clock}")
    if args.lanes is None:
        args.lanes = BOARDS[args.board].demo_lanes
    if (not args.design and not args.set and args.scheme == registry.BOARD_DEFAULT
            and args.model == "cnn"):
        args.set = [f"{k}={v}" for k, v in BOARDS[args.board].demo_knobs.items()]
    plan = board_plan(args)
    x = _board_bench_inputs(args, plan, args.images)
    print(f"[bench board] {args.board}: {plan.scheme}, {plan.lanes} lanes"
          f"{f' x {plan.cpar} channels' if plan.cpar > 1 else ''}, {len(x)} images "
          f"through the pins ({'netlist, ' if args.netlist else 'complete top, ' if args.top else ''}"
          f"{'icarus' if args.top or args.netlist else args.sim}; a ResNet-8 image takes about "
          f"a minute on Verilator)...", file=sys.stderr, flush=True)
    try:
        rep = run_bench_board(Path(args.output), plan, x, board=args.board, top=args.top,
                              netlist=args.netlist, sim=args.sim, clock_mhz=args.clock)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print((Path(args.output) / "bench_board.md").read_text())
    print(f"wrote {Path(args.output) / 'bench_board.json'} and bench_board.md "
          f"({rep['sim_seconds']:.0f} s)", file=sys.stderr)
    return 0 if rep["bit_exact"] else 1


def _cmd_bench_faults(args) -> int:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad or not kinds:
        raise UserError(unknown_name("fault kind", bad[0] if bad else "", FAULT_KINDS))
    if args.runs < 1:
        raise UserError(f"--runs must be a positive integer, not {args.runs}")
    if args.control < 0:
        raise UserError(f"--control must be 0 or a positive integer, not {args.control}")
    rep = run_bench_faults(Path(args.output), runs=args.runs, kinds=kinds, control=args.control,
                           sim=args.sim, seed=args.seed)
    print((Path(args.output) / "bench_faults.md").read_text())
    print(f"wrote {Path(args.output) / 'bench_faults.json'}, bench_faults.md, bench_faults.png "
          f"({rep['seconds']:.0f} s)", file=sys.stderr)
    return 0 if rep["silent_wrong_total"] == 0 else 1


def _cmd_bench_mutants(args) -> int:
    files = [f.strip() for f in args.files.split(",") if f.strip()] if args.files else None
    for f in files or ():
        if f not in mutate.RTL_FILES:
            raise UserError(unknown_name("rtl file", f, mutate.RTL_FILES))
    if args.per_file < 0 or args.jobs < 1:
        raise UserError("--per-file must be >= 0 (0: every mutant) and --jobs >= 1")
    rerun = None
    if args.rerun:
        try:
            rerun = json.loads(Path(args.rerun).read_text())
            if isinstance(rerun, dict):                  # mutants.json (the partial file: a list)
                args.per_file = rerun.get("per_file_sample", args.per_file)
                args.seed = rerun.get("seed", args.seed)
                rerun = rerun["results"]
            if not isinstance(rerun, list) or not all(isinstance(r, dict) for r in rerun):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"--rerun '{args.rerun}' is not a mutants.json of "
                            f"'insitu bench mutants'") from None
    try:
        rep = run_bench_mutants(Path(args.output), files=files, per_file=args.per_file,
                                seed=args.seed, jobs=args.jobs, rerun=rerun)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print((Path(args.output) / "mutants.md").read_text())
    print(f"wrote {Path(args.output) / 'mutants.json'} and mutants.md ({rep['seconds']:.0f} s)",
          file=sys.stderr)
    return 0


def register(sub) -> None:
    """``bench fuzz``, ``bench memory``, ``bench hw``, ``bench sweep``, ``bench bandwidth``."""
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
    bh.add_argument("--devices", default="up5k", help=f"comma-separated: {', '.join(DEVICES)} (default: %(default)s)")
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
    bb = bsub.add_parser("bandwidth", help="resnet8 with its weights through a B-bit/cycle "
                         "link: cycles and speed-up over int8 per scheme (cycle model + RTL)")
    bb.add_argument("--lanes", default="8,32,64,64x8", help="lane counts, LxP: L lanes taking P "
                    "input channels per cycle (--cpar; default: %(default)s)")
    bb.add_argument("--bits", default="1,2,4,16,64", help="link bits per cycle (default: "
                    "%(default)s)")
    bb.add_argument("--rtl", default="8:2,64x8:2", metavar="LANES:B,...",
                    help="points simulated in RTL for every scheme (default: %(default)s; '' none)")
    bb.add_argument("--rtl-flash", default="8:qspi,64:qspi", metavar="LANES:MODE,...",
                    help="points simulated in RTL with the SPI flash model on the weight pins, "
                    "for every scheme (MODE qspi or spi, flash clock half the engine's; default: "
                    "%(default)s; '' none)")
    bb.add_argument("--limit", type=int, default=10000, help="test images for the accuracy "
                    "(default: %(default)s)")
    bb.add_argument("--sim", default="verilator", choices=["icarus", "verilator"],
                    help="simulator of the RTL points (default: %(default)s)")
    bb.add_argument("-o", "--output", default="build/bench_bandwidth", metavar="DIR",
                    help="output folder (default: %(default)s)")
    bb.set_defaults(func=_cmd_bench_bandwidth)
    bd = bsub.add_parser("board", help="a design as a board builds it (memory placement, "
                         "flash), simulated through its UART and flash pins: bit-exact, cycles, "
                         "flash bytes, latency")
    bd.add_argument("design", nargs="?", metavar="DIR", help="folder written by 'insitu "
                    "compile' (default: a demo model, --model)")
    bd.add_argument("--board", required=True, help="icebreaker, ulx3s or versa")
    bd.add_argument("--model", default="cnn", help="demo model when no DIR is given: cnn, "
                    "resnet8 or dscnn (default: %(default)s)")
    bd.add_argument("--scheme", default=registry.BOARD_DEFAULT, help="demo model scheme "
                    "(default: %(default)s)")
    bd.add_argument("--lanes", type=int, help="demo model lanes (default: the board's demo "
                    "lanes)")
    cpar_arg(bd, "; a real network when no DIR is given")
    post_lanes_arg(bd)
    bd.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                    help="demo model compressor knob")
    bd.add_argument("--weight-flash", default="", metavar="qspi|spi[:DIV]", help="demo model: "
                    "weights streamed from the SPI flash (the flash model on the pins)")
    bd.add_argument("--images", type=int, default=2, help="test images (default: %(default)s)")
    bd.add_argument("--top", action="store_true", help="the complete iCEBreaker top (PLL "
                    "stand-in, SB_IO pads, LEDs) on Icarus instead of the host link and engine")
    bd.add_argument("--netlist", action="store_true", help="the complete top's gate-level "
                    "netlist (synth_ice40 -dsp) on Icarus")
    bd.add_argument("--clock", type=float, metavar="MHZ", help="clock of the latency "
                    "(default: the board's: synth_report.json's clock_mhz)")
    bd.add_argument("--sim", default="verilator", choices=["icarus", "verilator"],
                    help="simulator of the host link and engine (default: %(default)s)")
    bd.add_argument("-o", "--output", default="build/bench_board", metavar="DIR",
                    help="output folder (default: %(default)s)")
    bd.set_defaults(func=_cmd_bench_board)
    bq = bsub.add_parser("faults", help="link faults and resets injected through the board's "
                         "UART pins: every run bit-exact or a reported error, never silent")
    bq.add_argument("--runs", type=int, default=200, help="runs per fault kind (default: "
                    "%(default)s)")
    bq.add_argument("--kinds", default=",".join(FAULT_KINDS), help="comma-separated fault "
                    "kinds (default: all: %(default)s)")
    bq.add_argument("--control", type=int, default=50, help="input-flip runs against a link "
                    "without frame CRC checks, to show what the bench catches (default: "
                    "%(default)s; 0 none)")
    bq.add_argument("--seed", type=int, default=1, help="first seed (default: %(default)s)")
    bq.add_argument("--sim", default="verilator", choices=["icarus", "verilator"],
                    help="simulator (default: %(default)s)")
    bq.add_argument("-o", "--output", default="build/bench_faults", metavar="DIR",
                    help="output folder (default: %(default)s)")
    bq.set_defaults(func=_cmd_bench_faults)
    bt = bsub.add_parser("mutants", help="mutation run over rtl/: operator and constant "
                         "mutants, each against its file's tests; kill rate per file")
    bt.add_argument("--files", default="", help="comma-separated rtl/ files (default: all)")
    bt.add_argument("--per-file", type=int, default=10, help="mutants sampled per file "
                    "(default: %(default)s; 0: every mutant)")
    bt.add_argument("--jobs", type=int, default=1, help="mutants run at a time (default: "
                    "%(default)s)")
    bt.add_argument("--seed", type=int, default=1, help="sampling seed (default: %(default)s)")
    bt.add_argument("--rerun", metavar="MUTANTS.json", help="run the surviving mutants of an "
                    "earlier run again (after new tests), keep its killed ones")
    bt.add_argument("-o", "--output", default="build/mutants", metavar="DIR",
                    help="output folder (default: %(default)s)")
    bt.set_defaults(func=_cmd_bench_mutants)
    bs = bsub.add_parser("sweep", help="insitu sweep on 1 and 2 Dask workers (40 resnet8 "
                         "points), scheduler overhead, synthesis time, a 1000-point projection")
    bs.add_argument("--limit", type=int, default=1000, help="test images per accuracy "
                    "(default: %(default)s)")
    bs.add_argument("--no-synth", action="store_true", help="skip the synthesis points")
    bs.add_argument("-o", "--output", default="build/bench_sweep", metavar="DIR",
                    help="output folder (default: %(default)s)")
    bs.set_defaults(func=_cmd_bench_sweep)
    b.set_defaults(func=lambda args: (b.print_help(sys.stderr), 2)[1])
