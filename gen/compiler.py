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
from .buffers import allocate
from .layer import Layer, ModelError
from .plan import CPARS, LayerPlan, Plan, check_post_lanes, post_lanes_for, resolve
from .quantise import golden_entry, quantise

__all__ = ["LayerPlan", "Plan", "compile_model", "compress_layers", "golden_layers", "rebuilt_weights",
           "dense_int8", "MAX_LANES", "CPARS", "check_cpar", "post_lanes_for"]

MAX_LANES = 64


def check_lanes(lanes) -> int:
    """The one lane-count rule (compiler, engine, CLI): an integer in 1..MAX_LANES."""
    if not isinstance(lanes, int) or isinstance(lanes, bool) or not 1 <= lanes <= MAX_LANES:
        raise ModelError(f"Lanes must be an integer in 1..{MAX_LANES}, not {lanes!r}")
    return lanes


def check_cpar(cpar, lanes: int, scheme) -> int:
    """The channels-per-cycle rule (compiler, CLI): one of :data:`CPARS`, dividing the lanes,
    with a scheme whose fill can place a tile row's channels (``Scheme.cpar_ok``)."""
    if not isinstance(cpar, int) or isinstance(cpar, bool) or cpar not in CPARS:
        raise ModelError(f"Channels per cycle (cpar) must be one of "
                         f"{', '.join(map(str, CPARS))}, not {cpar!r}")
    if cpar > 1 and lanes % cpar:
        raise ModelError(f"Channels per cycle (cpar) {cpar} must divide the lanes ({lanes})")
    if cpar > 1 and not scheme.cpar_ok:
        raise ModelError(f"Scheme '{scheme.name}' takes one channel per cycle (cpar 1), not "
                         f"{cpar}")
    return cpar


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
        if ly.pool:
            out.append(None)
            continue
        W, sw = sch.int_weights(c)
        out.append((W * sw[:, None]).reshape(ly.weight.shape))
    return out


def compress_layers(layers: list[Layer], scheme: str, knobs: dict | None = None,
                    progress=None) -> list:
    """Each layer compressed by ``scheme`` (None for pools): what ``compile_model`` takes as
    ``compressed``."""
    sch = _scheme(scheme)
    cfg = sch.config(knobs or {})
    compressed = []
    n_weighted = sum(not ly.pool for ly in layers)
    done = 0
    for ly in layers:
        if ly.pool:
            compressed.append(None)
            continue
        done += 1
        if progress:
            progress(f"[{done}/{n_weighted}] compress {scheme}: {ly.name}")
        compressed.append(sch.compress(ly, cfg))
    return compressed


def compile_model(layers: list[Layer], scheme: str, *, lanes: int = 8, input_shape=None,
                  calib: np.ndarray | None = None, knobs: dict | None = None,
                  compressed=None, progress=None, cpar: int = 1, post_lanes: int = 0) -> Plan:
    """Compress (unless ``compressed`` is given), quantise and pack ``layers`` for the engine
    (``cpar``: input channels per MAC lane and cycle, ``Plan.cpar``; ``post_lanes``: the
    post-processor's lanes per cycle, ``Plan.post_par``, 0 for the default)."""
    sch = _scheme(scheme)
    check_lanes(lanes)
    check_cpar(cpar, lanes, sch)
    try:
        check_post_lanes(post_lanes, lanes, cpar)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    if input_shape is None:
        if layers[0].kind != "linear" or layers[0].src not in (None, "input"):
            raise ModelError(f"Layer '{layers[0].name}' is a convolution: give the input shape "
                             f"(--input-shape C,H,W)")
        input_shape = (layers[0].cin, 1, 1)
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ModelError(f"Input shape must be C,H,W with positive sizes, not {input_shape}")
    resolved = check_graph(layers, input_shape)
    if cpar > 1:
        shapes = {-1: input_shape, **{i: (ly.cout, r["oh"], r["ow"])
                                      for i, (ly, r) in enumerate(zip(layers, resolved))}}
        for ly, r in zip(layers, resolved):
            c, h, w = shapes[r["src"]]
            if ly.kind == "linear" and h * w > 1:
                raise ModelError(f"Layer '{ly.name}': with cpar {cpar} a Linear layer needs a "
                                 f"pooled input (1x1 pixels), not {c}x{h}x{w}")
    cfg = sch.config(knobs or {})
    if compressed is None:
        compressed = compress_layers(layers, scheme, knobs, progress)
    ints = [unit_weights(ly) if ly.pool else sch.int_weights(c)
            for ly, c in zip(layers, compressed)]
    plans, post_words = quantise(layers, ints, resolved, calib, input_shape, lanes)
    windowed(plans, cpar)
    for lp in plans:
        lp.steps = -(-lp.cin // cpar) * lp.k * lp.k
    pairs = [(lp, c) for lp, c in zip(plans, compressed) if c is not None]
    images = sch.pack([p for p, _ in pairs], [c for _, c in pairs], cfg, lanes,
                      **({"cpar": cpar} if cpar > 1 else {}))
    allocate(plans, input_shape, cpar=cpar)
    plan = Plan(scheme, lanes, plans, terms_max=max(lp.terms for lp in plans),
                post_words=post_words, input_shape=input_shape, knobs=dict(knobs or {}),
                cpar=cpar, post_par=post_lanes, **images)
    plan.bits_read = sch.bits_read(plan)
    plan.compressed_bits = sum(sum(c.storage_bits().values()) for c in compressed if c is not None)
    return plan


def unit_weights(ly: Layer):
    """A pool's integer weights (ones over the window) and scale (the average's 1 / window**2;
    a maximum is exact)."""
    k2 = ly.k * ly.k
    scale = 1.0 if ly.kind == "maxpool" else 1.0 / k2
    return np.ones((ly.cout, k2), dtype=np.int64), np.full(ly.cout, scale)


def windowed(plans: list[LayerPlan], cpar: int) -> None:
    """Run a k x k convolution (stride 1, same padding) of a one-channel input as conv1x1
    over ``k * k`` channels that the input loader writes (``LayerPlan.window``) when its window
    takes at most two activation words (``cpar >= 8`` for 3x3): ``ceil(k * k / cpar)`` steps
    per pixel instead of ``k * k``, the loader writing as many words per input value.  The
    weights' term order (``kh, kw``) is the new channel order, so codes and images are alike."""
    readers = [lp for lp in plans if lp.src == -1]
    if len(readers) != 1:
        return
    lp = readers[0]
    if (lp.kind == "conv3x3" and lp.cin == 1 and not lp.depthwise and lp.stride == 1
            and lp.pad == lp.k // 2 and lp.k * lp.k <= 2 * cpar):
        lp.kind, lp.window, lp.cin, lp.k, lp.pad = "conv1x1", lp.k, lp.k * lp.k, 1, 0


def check_graph(layers: list[Layer], input_shape) -> list[dict]:
    """Shapes and references of ``layers`` (``gen.plan.resolve``) plus the engine's rules:
    MAC inputs are unsigned, a layer without activation only feeds residuals."""
    resolved = resolve(layers, input_shape)
    signed = {-1: False}
    for i, (ly, r) in enumerate(zip(layers, resolved)):
        if signed[r["src"]]:
            src = layers[r["src"]].name
            raise ModelError(f"Layer '{ly.name}': its input '{src}' is not followed by ReLU "
                             f"(signed values); the engine's MAC takes unsigned 8-bit activations")
        signed[i] = ly.relu is False and not ly.pool and i < len(layers) - 1
        if ly.pool and r["res"] >= 0:
            raise ModelError(f"Layer '{ly.name}': a pool cannot take a residual")
        if ly.pool and ly.k > 8 and ly.kind != "gap":
            raise ModelError(f"Layer '{ly.name}': pool window {ly.k} is larger than 8")
        cin, h, w = r["cin"], r["h"], r["w"]
        if cin * h * w > 1 << 16 or ly.cout * r["oh"] * r["ow"] > 1 << 16:
            raise ModelError(f"Layer '{ly.name}': activations larger than 65536 values do not "
                             f"fit the engine's buffers")
    return resolved


def dense_int8(layers: list[Layer], *, input_shape=None, calib=None) -> list[dict]:
    """Golden integer layers of the dense int8 baseline (``schemes.BASELINE``'s weights, the
    same activation quantisation and post-processing as the engine)."""
    input_shape = tuple(input_shape or (layers[0].cin, 1, 1))
    resolved = check_graph(layers, input_shape)
    base = schemes.BASELINE
    cfg = base.config()
    ints = [unit_weights(ly) if ly.pool else base.int_weights(base.compress(ly, cfg))
            for ly in layers]
    plans, post = quantise(layers, ints, resolved, calib, input_shape, 1)
    return [golden_entry(lp, W, post) for lp, (W, _) in zip(plans, ints)]


def golden_layers(plan: Plan) -> list[dict]:
    """Integer layers (``gen.network.forward_int``) decoded from the plan's memory images."""
    sch = _scheme(plan.scheme)
    return [golden_entry(lp, unit_weights_of(lp) if lp.pool else sch.unpack(plan, lp),
                         plan.post_words) for lp in plan.layers]


def unit_weights_of(lp: LayerPlan) -> np.ndarray:
    return np.ones((lp.cout, lp.terms), dtype=np.int64)
