"""Model commands: ``compress``, ``compile``, ``simulate`` and ``demo``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from ..gen import schemes as registry
from ..gen.compiler import CPARS, MAX_LANES, compile_model
from ..gen.compress import compress_model, make_config, write_output
from ..gen.flashimage import parse_flash
from ..gen.model import ModelError, load_model, load_network
from ..gen.util import unknown as unknown_name
from ..rtl.emit import write_design
from ..sim.engine_run import BENCHES, simulate
from ..sim.runner import SimulatorMissing
from .common import (
    UserError,
    cpar_arg,
    load_array,
    parse_knobs,
    post_lanes_arg,
    scheme_args,
    scheme_knobs,
)
from .demo import run_demo, table
from .demo_real import REAL_DEMO_LANES, REAL_MODELS, real_table, run_real_demo


def _cmd_compress(args) -> int:
    try:
        config = make_config(args.scheme, parse_knobs(args.set))
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


#: What limits an inference, in words (``gen.cycles.CycleEstimate.limit``).
LIMITS = {"mac": "the MAC array", "fill": "the weight generator", "port": "the weight link"}


def _cmd_compile(args) -> int:
    t0 = time.monotonic()
    if args.weight_port_bits < 0 or args.weight_port_bits > 4096:
        raise UserError(f"--weight-port-bits must be 1..4096 bits per cycle (0: no link), not "
                        f"{args.weight_port_bits}")
    if args.weight_flash:
        try:
            parse_flash(args.weight_flash)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if args.weight_port_bits:
            raise UserError("--weight-flash and --weight-port-bits exclude each other (the flash "
                            "is the weight link)")
    try:
        knobs = parse_knobs(args.set)
        layers, shape = load_network(args.model)
        if args.input_shape:
            try:
                shape = tuple(int(v) for v in args.input_shape.replace("x", ",").split(","))
            except ValueError:
                raise UserError(f"--input-shape expects C,H,W, not {args.input_shape!r}") from None
        calib = load_array(args.calib, "Calibration file") if args.calib else None
        inputs = load_array(args.inputs, "Inputs file") if args.inputs else None
        if inputs is not None and (not np.issubdtype(inputs.dtype, np.integer)
                                   or inputs.min() < 0 or inputs.max() > 255):
            raise UserError("Inputs must be unsigned 8-bit integers (0..255)")
        if calib is not None and (not np.all(np.isfinite(calib)) or calib.min() < 0
                                  or calib.max() > 1):
            raise UserError("Calibration inputs must be floats in [0, 1]")
        if shape is None:           # the inputs show the shape: [N, C, H, W]
            shape = next((tuple(a.shape[1:]) for a in (calib, inputs)
                          if a is not None and a.ndim == 4), None)
        plan = compile_model(layers, args.scheme, lanes=args.lanes, input_shape=shape,
                             calib=calib, knobs=knobs, cpar=args.cpar,
                             post_lanes=args.post_lanes,
                             progress=lambda msg: print(msg, file=sys.stderr))
        plan.weight_port_bits = args.weight_port_bits
        plan.weight_flash = args.weight_flash
        if inputs is not None:
            feat = int(np.prod(plan.input_shape))
            if inputs.size % feat:
                raise UserError(f"Inputs of shape {inputs.shape} do not split into vectors of "
                                f"{feat} values")
            inputs = inputs.reshape(-1, feat)
        rep = write_design(plan, Path(args.output), inputs,
                           progress=lambda msg: print(msg, file=sys.stderr),
                           source=Path(args.model))
    except (ModelError, TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    width = max(10, *(len(ly["name"]) for ly in rep["layer_table"]))
    print(f"{'layer':{width}s} {'kind':8s} {'in':>10s} {'out':>10s} {'tiles':>5s}  notes")
    for ly in rep["layer_table"]:
        notes = " ".join(n for n in (f"stride {ly['stride']}" if ly["stride"] > 1 else "",
                                     "depthwise" if ly["depthwise"] else "",
                                     f"+ {ly['residual']}" if ly["residual"] else "",
                                     "" if ly["relu"] else "no ReLU") if n)
        print(f"{ly['name']:{width}s} {ly['kind']:8s} {ly['cin']:4d}x{ly['in'][0]}x{ly['in'][1]:<3d} "
              f"{ly['cout']:4d}x{ly['out'][0]}x{ly['out'][1]:<3d} {ly['tiles']:5d}  {notes}")
    lanes = f"{rep['lanes']} lanes" + (f" x {rep['cpar']} channels" if rep.get("cpar", 1) > 1 else "")
    print(f"scheme {rep['scheme']}, {lanes}: {rep['weights']} weights in "
          f"{rep['weight_memory_bits']} bits ({rep['bits_per_weight']:.2f} bits/weight, "
          f"x{rep['memory_ratio_vs_int8']:.2f} vs int8), {rep['macs_per_inference']} MACs/inference, "
          f"{rep['activation_bytes']} activation bytes (peak of the live buffers)")
    link = (f" through a {rep['weight_port_bits']}-bit/cycle weight link"
            if rep["weight_port_bits"] else "")
    if rep["weight_flash"]:
        link = (f" with the weight memory in a {rep['weight_flash']} flash "
                f"({rep['flash_bits_per_cycle']:g} bits/cycle, {rep['flash_bytes']} bytes read "
                f"per inference)")
    print(f"cycle model: {rep['cycles_model']} cycles/inference{link}, limited by "
          f"{LIMITS[rep['limited_by']]}")
    if rep["compressed_bits"] and rep["compressed_bits"] != rep["weight_memory_bits"]:
        print(f"  ('insitu compress' counts {rep['compressed_bits']} bits, "
              f"{rep['compressed_bits'] / rep['weights']:.2f} bits/weight: the codes and their "
              f"scales; the engine's image lays the codes out in tiles (idle lanes of partial "
              f"tiles, word alignment: {rep['layout_bits']:+d} bits) and folds the scales into "
              f"the post-processing entries)")
    if args.scheme != registry.BASELINE.name and rep["bits_per_weight"] > 8:
        print(f"insitu: warning: scheme {args.scheme} with these knobs stores "
              f"{rep['bits_per_weight']:.2f} bits per weight, more than dense int8's 8.00 "
              f"({rep['weight_memory_bits']} against {8 * rep['weights']} bits)", file=sys.stderr)
    print(f"wrote {args.output}/ (engine.v, manifest.json, *.hex, vectors.npz) in "
          f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


def _cmd_simulate(args) -> int:
    if not 0 <= args.stalls < 1:
        raise UserError(f"--stalls must be a probability in [0, 1), not {args.stalls}")
    try:
        inputs = load_array(args.inputs, "Inputs file") if args.inputs else None
        labels = load_array(args.labels, "Labels file") if args.labels else None
        rep = simulate(args.design, inputs, sim=args.sim, stalls=args.stalls, reset=args.reset,
                       labels=labels, waves=args.waves, bench=args.bench)
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
    if "accuracy_hw" in rep:
        fl = (f"float {100 * rep['accuracy_float']:.2f}%, " if "accuracy_float" in rep else "")
        agree = (f"; top-1 agreement with float {100 * rep['top1_agreement_float']:.1f}%"
                 if "top1_agreement_float" in rep else "")
        print(f"accuracy on {rep['labels']} labels: {fl}golden {100 * rep['accuracy_golden']:.2f}%, "
              f"hardware {100 * rep['accuracy_hw']:.2f}%{agree}")
    if args.waves:
        print(f"waves: {rep.get('waves') or 'none written (simulator build without tracing)'}")
    print(f"wrote {Path(args.design) / 'sim_report.json'}", file=sys.stderr)
    return 0 if rep["bit_exact"] else 1


def _cmd_demo(args) -> int:
    schemes = registry.NAMES if args.scheme == "all" else (args.scheme,)
    if args.scheme not in registry.NAMES + ("all",):
        raise UserError(unknown_name("scheme", args.scheme, registry.NAMES + ("all",)))
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be a positive number of test images, not {args.limit}")
    if args.rtl_images < 1:
        raise UserError(f"--rtl-images must be a positive integer, not {args.rtl_images}")
    if args.lanes is not None and not 1 <= args.lanes <= MAX_LANES:
        raise UserError(f"--lanes must be in 1..{MAX_LANES}, not {args.lanes}")
    if args.cpar != 1:
        if args.model not in REAL_MODELS + ("real",):
            raise UserError(f"--cpar is for the real networks (resnet8, dscnn, real), not "
                            f"{args.model}")
        lanes = REAL_DEMO_LANES if args.lanes is None else args.lanes
        if args.cpar not in CPARS or lanes % args.cpar:
            raise UserError(f"--cpar must be one of {', '.join(map(str, CPARS))} dividing the "
                            f"lanes ({lanes}), not {args.cpar}")
    if args.jobs < 1:
        raise UserError(f"--jobs must be a positive integer, not {args.jobs}")
    try:
        if args.set and len(schemes) != 1:
            raise UserError("--set needs one --scheme (knobs belong to a scheme)")
        knobs = scheme_knobs(schemes[0], args.set)
        if args.model in REAL_MODELS + ("real",):
            models = REAL_MODELS if args.model == "real" else (args.model,)
            rep = run_real_demo(Path(args.output), models, schemes,
                                lanes=REAL_DEMO_LANES if args.lanes is None else args.lanes,
                                cpar=args.cpar,
                                rtl_images=args.rtl_images, limit=args.limit, sim=args.sim,
                                knobs=knobs, jobs=args.jobs)
            print(real_table(rep))
            print(f"bit_exact: {str(rep['bit_exact']).lower()} over {rep['rtl_vectors']} "
                  f"RTL-simulated inferences; accuracy on {rep['golden_vectors']} test images "
                  f"({rep['seconds']:.0f} s); wrote {Path(args.output) / 'report.json'} and "
                  f"accuracy_vs_bits.png")
            return 0 if rep["bit_exact"] else 1
        archs = ("cnn", "mlp") if args.model == "digits" else (args.model,)
        rep = run_demo(Path(args.output), schemes, archs,
                       lanes=8 if args.lanes is None else args.lanes, limit=args.limit,
                       sim=args.sim, knobs=knobs)
    except (SimulatorMissing, ModelError) as exc:
        raise UserError(str(exc)) from None
    print(table(rep))
    print(f"bit_exact: {str(rep['bit_exact']).lower()} over {rep['vectors']} simulated inferences "
          f"({rep['seconds']:.0f} s); wrote {Path(args.output) / 'report.json'} and "
          f"accuracy_vs_bits.png")
    return 0 if rep["bit_exact"] else 1


def register(sub) -> None:
    """``compress``, ``compile``, ``simulate``, ``demo``."""
    c = sub.add_parser("compress", help="compress a model's weights and report memory and error")
    c.add_argument("model", metavar="MODEL", help=".npz model (<layer>.weight, <layer>.bias)")
    scheme_args(c)
    c.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    c.set_defaults(func=_cmd_compress)

    cp = sub.add_parser("compile", help="compile a model into the engine's Verilog, memory "
                        "images, manifest and golden vectors")
    cp.add_argument("model", metavar="MODEL", help=".npz model (see README: model files)")
    scheme_args(cp)
    cp.add_argument("--lanes", type=int, default=8, help="MAC lanes (default: %(default)s)")
    cpar_arg(cp)
    post_lanes_arg(cp)
    cp.add_argument("--weight-port-bits", type=int, default=0, metavar="B",
                    help="read the weight memories through a link of B bits per cycle (the "
                         "memory-bound configuration of 'insitu bench bandwidth'; default: "
                         "at once)")
    cp.add_argument("--weight-flash", metavar="qspi|spi[:DIV]", default="",
                    help="keep no weight memory on chip: stream it from a SPI NOR flash at every "
                         "inference (quad or single-bit reads, flash clock = clock / 2 / DIV; "
                         "writes flash.bin)")
    cp.add_argument("--input-shape", metavar="C,H,W", help="input shape (needed when the first "
                    "layer is a convolution)")
    cp.add_argument("--calib", metavar="X.npy", help="float calibration inputs in [0, 1] "
                    "(default: 64 uniform random inputs)")
    cp.add_argument("--inputs", metavar="X.npy", help="u8 inputs for the golden vectors "
                    "(default: 8 random inputs)")
    cp.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    cp.set_defaults(func=_cmd_compile)

    sm = sub.add_parser("simulate", help="simulate a compiled design against the golden model")
    sm.add_argument("design", metavar="DIR", help="folder written by 'insitu compile'")
    sm.add_argument("--inputs", metavar="X.npy", help="u8 inputs (default: DIR/vectors.npz)")
    sm.add_argument("--sim", default="verilator", choices=["icarus", "verilator"],
                    help="simulator (default: %(default)s)")
    sm.add_argument("--stalls", type=float, default=0.0, metavar="P",
                    help="probability of input gaps and output stalls (default: 0)")
    sm.add_argument("--reset", action="store_true", help="first interrupt an inference with a reset")
    sm.add_argument("--bench", default="hdl", choices=BENCHES,
                    help="hdl: the Verilog bench (fast); cocotb: the same checks "
                    "driven from Python (default: %(default)s)")
    sm.add_argument("--waves", action="store_true", help="write a waveform (VCD) of the run "
                    "into the folder's sim_build (large for long runs: use --inputs with a few "
                    "vectors)")
    sm.add_argument("--labels", metavar="Y.npy", help="class labels of the inputs: report the "
                    "float, golden and hardware accuracy and the top-1 agreement with float")
    sm.set_defaults(func=_cmd_simulate)

    dm = sub.add_parser("demo", help="compile ResNet-8 and DS-CNN (Fashion-MNIST) with every "
                        "scheme, measure accuracy and simulate them bit-exact in the RTL")
    dm.add_argument("--scheme", default="all", help=f"{', '.join(registry.NAMES)} or all "
                    "(default: %(default)s)")
    dm.add_argument("--model", default="real",
                    choices=["real", *REAL_MODELS, "digits", "cnn", "mlp"],
                    help="real: resnet8 and dscnn on Fashion-MNIST (the committed checkpoints); "
                    "digits: the small cnn and mlp models on 8x8 digits (default: %(default)s)")
    dm.add_argument("--rtl-images", type=int, default=300, metavar="N",
                    help="real networks: test images simulated in the RTL per row (default: "
                    "%(default)s; all 10 000 go through the golden model)")
    dm.add_argument("--jobs", type=int, default=2, metavar="N",
                    help="real networks: RTL simulations run at once (default: %(default)s)")
    dm.add_argument("--lanes", type=int, help=f"MAC lanes (default: {REAL_DEMO_LANES} for the "
                    "real networks, 8 for the digits models)")
    cpar_arg(dm, " (the other schemes run at 1); the real networks")
    dm.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                    help="compressor knob of the (single) scheme, e.g. qb=2")
    dm.add_argument("--limit", type=int, help="simulate only the first N test images")
    dm.add_argument("--sim", default="verilator", choices=["icarus", "verilator"],
                    help="simulator (default: %(default)s)")
    dm.add_argument("-o", "--output", default="build/demo", metavar="DIR",
                    help="output folder (default: %(default)s)")
    dm.set_defaults(func=_cmd_demo)
