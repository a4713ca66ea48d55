"""The engine plan: the layer table, the memory images and the scheme's parameters.

A :class:`Plan` is what :class:`insitu.rtl.engine.Engine` is built from and what
``manifest.json`` holds.  Scheme-specific values live in ``Plan.params`` (per design) and
``LayerPlan.extra`` (per layer); only the scheme's own module (``gen.schemes``) and its RTL
fill component read them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .layer import Layer, ModelError
from .util import conv_out

__all__ = ["LayerPlan", "Plan", "layer_shapes", "IMAGES"]

IMAGES = ("weight_words", "aux_words", "post_words", "coef_words")


@dataclass
class LayerPlan:
    name: str
    kind: str               # linear | conv3x3 | conv1x1
    cin: int
    cout: int
    h: int
    w: int
    k: int
    pad: int
    relu: bool
    oh: int
    ow: int
    terms: int              # cin * k * k
    tiles: int              # ceil(cout / lanes)
    wbase: int = 0          # first weight-memory word of the layer
    post_base: int = 0      # first post-processing entry of the layer
    extra: dict = field(default_factory=dict)     # the scheme's per-layer values
    scale_w: list = field(default_factory=list)   # per output channel weight scale
    scale_in: float = 1.0
    scale_out: float = 1.0


@dataclass
class Plan:
    scheme: str
    lanes: int
    layers: list
    group: int                      # terms per tile-buffer row
    tile_weight_bits: int           # bits per weight (or code) in the tile buffer
    tile_rows_max: int
    terms_max: int
    weight_word_bits: int
    weight_words: list
    aux_word_bits: int = 1
    aux_words: list = field(default_factory=list)
    post_words: list = field(default_factory=list)
    coef_word_bits: int = 1
    coef_words: list = field(default_factory=list)
    input_shape: tuple = (1, 1, 1)
    knobs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)     # the scheme's design-wide values
    bits_read: int = 0              # weight-memory bits the engine reads per inference

    # -- serialisation -------------------------------------------------------------------
    def to_json(self) -> str:
        d = asdict(self)
        for key in IMAGES:
            d[key] = [format(int(v), "x") for v in d[key]]
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        d = json.loads(text)
        for key in IMAGES:
            d[key] = [int(v, 16) for v in d.get(key, [])]
        d["layers"] = [LayerPlan(**ly) for ly in d["layers"]]
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)

    # -- derived -------------------------------------------------------------------------
    @property
    def weights(self) -> int:
        return sum(ly.cout * ly.terms for ly in self.layers)

    @property
    def weight_memory_bits(self) -> int:
        return (len(self.weight_words) * self.weight_word_bits
                + len(self.aux_words) * self.aux_word_bits
                + len(self.coef_words) * self.coef_word_bits)

    @property
    def weight_bits_per_inference(self) -> int:
        """Bits the engine reads from its weight memories per inference (the scheme's
        count, ``Scheme.bits_read``, made when the plan was compiled)."""
        return self.bits_read

    @property
    def macs(self) -> int:
        return sum(ly.cout * ly.terms * ly.oh * ly.ow for ly in self.layers)

    def output_pixels(self) -> int:
        ly = self.layers[-1]
        return ly.oh * ly.ow


def layer_shapes(layers: list[Layer], input_shape) -> list[tuple]:
    """``(cin, h, w, k, pad, oh, ow)`` per layer, checking that each layer fits the last."""
    c, h, w = input_shape
    out = []
    for ly in layers:
        if ly.kind == "linear":
            if ly.cin != c * h * w:
                raise ModelError(f"Layer '{ly.name}': Linear expects {ly.cin} inputs but the "
                                 f"previous output has {c}x{h}x{w} = {c * h * w}")
            out.append((ly.cin, 1, 1, 1, 0, 1, 1))
            c, h, w = ly.cout, 1, 1
        else:
            k = ly.k
            if ly.cin != c:
                raise ModelError(f"Layer '{ly.name}': Conv2d expects {ly.cin} input channels "
                                 f"but gets {c}")
            oh, ow = conv_out(h, k, ly.pad), conv_out(w, k, ly.pad)
            if oh < 1 or ow < 1:
                raise ModelError(f"Layer '{ly.name}': a {k}x{k} kernel does not fit a "
                                 f"{h}x{w} input")
            out.append((c, h, w, k, ly.pad, oh, ow))
            c, h, w = ly.cout, oh, ow
    return out
