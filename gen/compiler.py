"""Model compiler: float layers -> compressed codes -> engine plan (memory images, layer table,
requantisation constants) -> golden integer network.

The plan (``gen.plan.Plan``) is what :class:`insitu.rtl.engine.Engine` is built from and
what ``manifest.json`` holds; :func:`golden_layers` turns a plan back into integer weights
through the scheme's own image decoder (``Scheme.unpack``), so ``insitu simulate`` checks
the RTL against the images it actually runs, not against the compiler's intermediate arrays.
Quantisation: ``gen.quantise``.
"""

from __future__ import annotations

import numpy as np

from . import schemes
from .layer import Layer, ModelError
from .plan import LayerPlan, Plan, layer_shapes
from .quantise import golden_entry, quantise

__all__ = ["LayerPlan", "Plan", "compile_model", "golden_layers", "rebuilt_weights",
           "dense_int8", "MAX_LANES"]

MAX_LANES = 64


def check_lanes(lanes) -> int:
    """The one lane-count rule (compiler, engine, CLI): an integer in 1..MAX_LANES."""
    if not isinstance(lanes, int) or isinstance(lanes, bool) or not 1 <= lanes <= MAX_LANES:
        raise ModelError(f"Lanes must be an integer in 1..{MAX_LANES}, not {lanes!r}")
    return lanes


def _scheme(name: str):
    try:
        return schemes.get(name)
    except ValueError as exc:
        raise ModelError(str(exc)) from None


def rebuilt_weights(layers: list[Layer], compressed, scheme: str) -> list[np.ndarray]:
    """The float weights the hardware uses (integer weights times their scales)."""
    sch = _scheme(scheme)
    out = []
    for ly, c in zip(layers, compressed):
        W, sw = sch.int_weights(c)
        out.append((W * sw[:, None]).reshape(ly.weight.shape))
    return out


def compile_model(layers: list[Layer], scheme: str, *, lanes: int = 8, input_shape=None,
                  calib: np.ndarray | None = None, knobs: dict | None = None,
                  compressed=None, progress=None) -> Plan:
    """Compress (unless ``compressed`` is given), quantise and pack ``layers`` for the engine."""
    sch = _scheme(scheme)
    check_lanes(lanes)
    if input_shape is None:
        if layers[0].kind != "linear":
            raise ModelError(f"Layer '{layers[0].name}' is a convolution: give the input shape "
                             f"(--input-shape C,H,W)")
        input_shape = (layers[0].cin, 1, 1)
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ModelError(f"Input shape must be C,H,W with positive sizes, not {input_shape}")
    shapes = layer_shapes(layers, input_shape)
    for ly in layers[:-1]:
        if ly.relu is False:
            raise ModelError(f"Layer '{ly.name}': the engine's hidden activations are unsigned "
                             f"8-bit, so a hidden layer must be followed by ReLU")
    for ly, (cin, h, w, k, pad, oh, ow) in zip(layers, shapes):
        if cin * h * w > 1 << 16 or ly.cout * oh * ow > 1 << 16:
            raise ModelError(f"Layer '{ly.name}': activations larger than 65536 values do not "
                             f"fit the engine's buffers")
    cfg = sch.config(knobs or {})
    if compressed is None:
        compressed = []
        for i, ly in enumerate(layers):
            if progress:
                progress(f"[{i + 1}/{len(layers)}] compress {scheme}: {ly.name}")
            compressed.append(sch.compress(ly, cfg))

    ints = [sch.int_weights(c) for c in compressed]
    plans, post_words = quantise(layers, ints, shapes, calib, input_shape, lanes)
    images = sch.pack(plans, compressed, cfg, lanes)
    plan = Plan(scheme, lanes, plans, terms_max=max(lp.terms for lp in plans),
                post_words=post_words, input_shape=input_shape, knobs=dict(knobs or {}),
                **images)
    plan.bits_read = sch.bits_read(plan)
    return plan


def dense_int8(layers: list[Layer], *, input_shape=None, calib=None) -> list[dict]:
    """Golden integer layers of the dense int8 baseline (``schemes.BASELINE``'s weights, the
    same activation quantisation and post-processing as the engine)."""
    input_shape = tuple(input_shape or (layers[0].cin, 1, 1))
    shapes = layer_shapes(layers, input_shape)
    base = schemes.BASELINE
    cfg = base.config()
    ints = [base.int_weights(base.compress(ly, cfg)) for ly in layers]
    plans, post = quantise(layers, ints, shapes, calib, input_shape, 1)
    return [golden_entry(lp, W, post) for lp, (W, _) in zip(plans, ints)]


def golden_layers(plan: Plan) -> list[dict]:
    """Integer layers (``gen.network.forward_int``) decoded from the plan's memory images."""
    sch = _scheme(plan.scheme)
    return [golden_entry(lp, sch.unpack(plan, lp), plan.post_words) for lp in plan.layers]
