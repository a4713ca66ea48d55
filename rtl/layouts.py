"""``amaranth.lib.data`` layouts built from the bit layouts ``gen`` declares
(:class:`insitu.gen.fields.Fields`): one declaration serves the packer and the RTL."""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from ..gen.fields import Fields

__all__ = ["struct_layout"]


def struct_layout(fields: Fields) -> data.StructLayout:
    """The ``StructLayout`` of ``fields`` (same order, widths, signedness and arrays)."""
    members = {}
    for f in fields:
        shape = signed(f.width) if f.signed else unsigned(f.width)
        members[f.name] = data.ArrayLayout(shape, f.count) if f.count else shape
    return data.StructLayout(members)
