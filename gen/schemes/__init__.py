"""The weight-scheme registry: every scheme the compiler, the engine, the CLI, the fuzzer, the
demo and the benchmarks know, in one place.  A scheme is one module of this package
(:class:`~insitu.gen.schemes.base.Scheme`); adding one is that module plus one line here.
"""

from __future__ import annotations

from ..util import unknown
from . import asm, int8, mlg, smartdeal
from .base import Scheme

__all__ = ["SCHEMES", "NAMES", "BASELINE", "get", "Scheme"]

SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    asm.SCHEME,
    smartdeal.SCHEME,
    mlg.SCHEME,
    int8.SCHEME,
)}
NAMES = tuple(SCHEMES)
#: The dense baseline every memory, speed and accuracy figure is compared against.
BASELINE: Scheme = int8.SCHEME
#: The scheme of the board demo designs (insitu synth without a design folder).
BOARD_DEFAULT = asm.SCHEME.name


def get(name: str) -> Scheme:
    """The scheme called ``name``; ``ValueError`` with one line naming the choices."""
    if name not in SCHEMES:
        raise ValueError(unknown("scheme", name, NAMES))
    return SCHEMES[name]
