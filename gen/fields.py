"""Bit layouts declared once, as plain data, for both sides of a memory image.

A :class:`Fields` is an ordered list of named fields (LSB first), each ``width`` bits,
signed or not, optionally repeated ``count`` times (an array).  The packers in ``gen`` call
:meth:`Fields.pack` / :meth:`Fields.unpack`; the RTL turns the very same object into an
``amaranth.lib.data`` layout (``insitu.rtl.layouts.struct_layout``), so the two can not drift.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Field", "Fields"]


@dataclass(frozen=True)
class Field:
    name: str
    width: int
    signed: bool = False
    count: int = 0          # 0: a scalar; n: an array of n elements

    @property
    def bits(self) -> int:
        return self.width * max(1, self.count)


class Fields:
    """An ordered bit layout; ``Fields(("bias", 32, True), ("m", 16), ...)``.

    Each item is ``(name, width)``, ``(name, width, signed)`` or ``(name, width, signed,
    count)``.
    """

    def __init__(self, *items):
        self.fields = tuple(Field(*it) for it in items)
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"Field names must be unique, not {names}")
        for f in self.fields:
            if not isinstance(f.width, int) or f.width < 1:
                raise ValueError(f"Field '{f.name}' width must be a positive integer, not {f.width!r}")
        self._offsets = {}
        pos = 0
        for f in self.fields:
            self._offsets[f.name] = pos
            pos += f.bits
        self.width = pos

    def __iter__(self):
        return iter(self.fields)

    def offset(self, name: str) -> int:
        return self._offsets[name]

    def pack(self, **values) -> int:
        """One word from ``name=value`` (arrays as sequences); values must fit their field."""
        word = 0
        for f in self.fields:
            v = values.get(f.name, 0)
            elems = list(v) if f.count else [v]
            if f.count and len(elems) > f.count:
                raise ValueError(f"Field '{f.name}' holds {f.count} elements, not {len(elems)}")
            for i, e in enumerate(elems):
                e = int(e)
                lo, hi = ((-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1) if f.signed
                          else (0, (1 << f.width) - 1))
                if not lo <= e <= hi:
                    raise ValueError(f"Field '{f.name}' value {e} does not fit {f.width} "
                                     f"{'signed ' if f.signed else ''}bits")
                word |= (e & ((1 << f.width) - 1)) << (self._offsets[f.name] + i * f.width)
        return word

    def unpack(self, word: int) -> dict:
        """``{name: int or [ints]}`` of one word (signed fields sign-extended)."""
        out = {}
        for f in self.fields:
            elems = []
            for i in range(max(1, f.count)):
                e = (int(word) >> (self._offsets[f.name] + i * f.width)) & ((1 << f.width) - 1)
                if f.signed and e >> (f.width - 1):
                    e -= 1 << f.width
                elems.append(e)
            out[f.name] = elems if f.count else elems[0]
        return out
