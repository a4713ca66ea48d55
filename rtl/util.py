"""Small elaboration helpers shared by the engine's components."""

from __future__ import annotations

from amaranth.hdl import Signal

__all__ = ["layer_const"]


def layer_const(m, sel, layers, name, fn, shape, registered=False):
    """A per-layer constant ``fn(layer)`` selected by ``sel`` (a layer index signal);
    ``registered``: one cycle later (for a consumer whose layer only changes while it is
    idle), with the first layer's value at reset."""
    sig = Signal(shape, name=name)
    with m.Switch(sel):
        for i, ly in enumerate(layers):
            with (m.Case(i) if i < len(layers) - 1 else m.Default()):
                m.d.comb += sig.eq(fn(ly))
    if not registered:
        return sig
    reg = Signal(shape, name=f"{name}_r", init=fn(layers[0]))
    m.d.sync += reg.eq(sig)
    return reg
