"""The ``insitu`` command line (also ``python -m insitu``): one module per command group
(:mod:`.blocks`, :mod:`.model`, :mod:`.bench`, :mod:`.board`), each with ``register(sub)``.

Every user-facing error is one line on stderr starting with ``insitu: error:`` and a
non-zero exit status (2 for bad input, 1 for a failed tool run).
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..sim.runner import SimulatorError
from . import bench, blocks, board, model, sweep, train
from .common import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="insitu", description="Generator of memory-efficient DNN "
                                "inference hardware (SmartDeal, MLG, ASM).")
    p.add_argument("--version", action="version", version=f"insitu {__version__}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show the simulator builds' compiler output and the cocotb runs' lines "
                   "(kept in build.log and sim.log otherwise)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for group in (blocks, model, train, bench, board, sweep):
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    if args.verbose:
        os.environ["INSITU_VERBOSE"] = "1"
    try:
        return args.func(args)
    except UserError as exc:
        print(f"insitu: error: {exc}", file=sys.stderr)
        return 2
    except SimulatorError as exc:
        print(f"insitu: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("insitu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
