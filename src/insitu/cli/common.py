"""What every command group shares: the one-line user error, scheme arguments, .npy inputs."""

from __future__ import annotations

import numpy as np

from ..gen import schemes as registry
from ..gen.compress import make_config
from ..gen.util import parse_sets

__all__ = ["UserError", "SCHEME_HELP", "parse_knobs", "scheme_knobs", "load_array", "scheme_args"]

SCHEME_HELP = "; ".join(f"{s.name}: {s.summary}" for s in registry.SCHEMES.values())


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def parse_knobs(items) -> dict:
    try:
        return parse_sets(items)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def scheme_knobs(scheme: str, items) -> dict:
    """``--set`` items parsed and checked against ``scheme``'s compressor (one-line errors)."""
    knobs = parse_knobs(items)
    if knobs:
        try:
            make_config(scheme, knobs)
        except (TypeError, ValueError) as exc:
            raise UserError(str(exc)) from None
    return knobs


def load_array(path, what):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} '{path}' is not a readable .npy file ({exc})") from None


def cpar_arg(parser, what: str = "") -> None:
    """``--cpar P``: input channels each MAC lane takes per cycle."""
    parser.add_argument("--cpar", type=int, default=1, metavar="P",
                        help="input channels each MAC lane takes per cycle: 1, 2, 4, 8 or 16, "
                             "dividing the lanes (P x the MACs; asm, int8 and mlg" + what
                             + "; default: %(default)s)")


def post_lanes_arg(parser) -> None:
    """``--post-lanes N``: the post-processor's lanes per cycle."""
    parser.add_argument("--post-lanes", type=int, default=0, metavar="N",
                        help="lanes the post-processor (bias, requantisation, ReLU) takes per "
                             "cycle: a power of two dividing --cpar; wider keeps up with "
                             "1x1 convolutions and few-channel inputs at more logic (default: "
                             "about one per 8 lanes)")


def scheme_args(parser) -> None:
    """``--scheme`` (the registry's names) and its ``--set`` knobs."""
    parser.add_argument("--scheme", required=True, choices=registry.NAMES,
                        help="weight scheme: " + SCHEME_HELP)
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                        help="scheme knob, e.g. threshold=0.03 (smartdeal), Bo=32 (mlg), "
                             "alphabet=A2 (asm); repeatable")
