"""The engine plan: the layer table, the memory images and the scheme's parameters.

A :class:`Plan` is what :class:`insitu.rtl.engine.Engine` is built from and what
``manifest.json`` holds.  Scheme-specific values live in ``Plan.params`` (per design) and
``LayerPlan.extra`` (per layer); only the scheme's own module (``gen.schemes``) and its RTL
fill component read them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field

from .buffers import allocate
from .layer import POOLS, Layer, ModelError
from .util import conv_out

__all__ = ["LayerPlan", "Plan", "layer_shapes", "resolve", "IMAGES", "CPARS", "post_lanes_for",
           "check_post_lanes", "PRODUCTS_PER_COPY", "LOCAL_BANKS", "mac_copies", "mac_stages"]

#: Input channels per MAC lane per cycle that the engine takes (``Plan.cpar``).
CPARS = (1, 2, 4, 8, 16)


#: Products per cycle for each copy of the MAC array's shared stage-1 registers (what every
#: lane reads: the activations, the ASM bank's multiples); each copy feeds its own lane group.
PRODUCTS_PER_COPY = 64
#: From this many copies the ASM array registers the activations and computes each lane
#: group's banks one stage later (short wires to each group; one more cycle of latency).
LOCAL_BANKS = 4


def mac_copies(lanes: int, cpar: int, per_copy: int = PRODUCTS_PER_COPY) -> int:
    """Copies of the MAC array's shared stage-1 registers: one per ``per_copy`` products per
    cycle (1 up to 64, 2 at 16 lanes x 8 channels, 4 at 16 x 16), at most one per lane."""
    return max(1, min(lanes, lanes * cpar // per_copy))


def mac_stages(mac: str, lanes: int, cpar: int) -> int:
    """Pipeline stages of the MAC array beyond the three of one product per lane: one to sum
    ``cpar > 1`` products, one for the ASM array's per-group banks (:data:`LOCAL_BANKS`)."""
    return int(cpar > 1) + int(mac == "asm" and mac_copies(lanes, cpar) >= LOCAL_BANKS)


def post_lanes_for(lanes: int, cpar: int) -> int:
    """Lanes the post-processor takes per cycle (``Plan.post_lanes``): about one per 8 MAC
    lanes, so a 3x3 kernel's 9 steps per pixel keep up with it; a power of two of at most
    ``cpar``, so it divides ``cpar`` (the values of one cycle are bytes of one activation
    word)."""
    return 1 << (min(cpar, max(1, lanes // 8)).bit_length() - 1)


def check_post_lanes(post_lanes, lanes: int, cpar: int) -> int:
    """The post-processor width rule (compiler, CLI): 0 (:func:`post_lanes_for`'s choice) or
    a power of two dividing ``cpar`` (which divides the lanes)."""
    if (not isinstance(post_lanes, int) or isinstance(post_lanes, bool) or post_lanes < 0
            or post_lanes & (post_lanes - 1) or (post_lanes and cpar % post_lanes)):
        raise ValueError(f"Post-processor lanes must be a power of two dividing cpar ({cpar}), "
                         f"or 0 for {post_lanes_for(lanes, cpar)}, not {post_lanes!r}")
    return post_lanes


IMAGES = ("weight_words", "aux_words", "post_words", "coef_words")


@dataclass
class LayerPlan:
    """One engine layer.  ``cin`` is the input channels each output channel sees (1 for a
    depthwise layer or a pool, whose lane ``n`` reads channel ``tile * lanes + n``)."""
    name: str
    kind: str               # linear | conv3x3 | conv1x1 | gap | avgpool | maxpool
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
    stride: int = 1
    depthwise: bool = False  # lanes read their own channels (depthwise conv, pools)
    src: int = -1           # layer whose output this one reads (-1: the input)
    res: int = -1           # layer whose output is added before the activation (-1: none)
    lo: int = 0             # output clamp (hidden layers): ReLU, ReLU6 0..255 (ReLU6's
    hi: int = 255           # scale puts 6 at 255), none: -128..127 (signed)
    res_signed: bool = False
    in_base: int = 0        # activation-memory word of the input / output / residual tensor
    out_base: int = 0       # (placed by liveness, gen.buffers)
    res_base: int = 0
    scale_res: float = 1.0
    steps: int = 0          # MAC-array transfers per output pixel: terms, or with Plan.cpar
                            # channels per transfer ceil(cin / cpar) * k * k (0: terms)
    window: int = 0         # > 0: a window x window convolution (stride 1, same padding) of
                            # the one-channel input, run as conv1x1 over window**2 channels:
                            # the input loader writes each pixel's zero-padded window
                            # (rtl.actmem); cin = window**2, k = 1

    def __post_init__(self):
        if not self.steps:
            self.steps = self.terms

    @property
    def pool(self) -> bool:
        return self.kind in POOLS

    def last_tile_lanes(self, lanes: int) -> int:
        """Output channels of the layer's last tile of ``lanes`` (it may be partial)."""
        return self.cout - (self.tiles - 1) * lanes

    @property
    def signed_out(self) -> bool:
        return self.lo < 0


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
    compressed_bits: int = 0        # the codes alone (what ``insitu compress`` counts)
    weight_port_bits: int = 0       # > 0: the weight memories are read through a link of
                                    # this many bits per cycle (rtl.weightport); 0: at once
    act_bank_words: int = 0         # > 0: the activation memory is banks of this many words,
                                    # one tensor per bank (single-port RAM: gen.buffers)
    weight_flash: str = ""          # "qspi[:DIV]" / "spi[:DIV]": the weight memory is not on
                                    # chip, its read trace streams from a SPI NOR flash at
                                    # every inference (gen.flashimage, rtl.weightstream)
    cpar: int = 1                   # input channels each MAC lane takes per cycle (CPARS:
                                    # 1..16): activation words of cpar bytes (gen.buffers), tile
                                    # rows of cpar weights per lane, ceil(cin/cpar) k*k steps
    post_par: int = 0               # > 0: lanes the post-processor takes per cycle (a power
                                    # of two dividing cpar); 0: post_lanes_for(lanes, cpar)

    # -- serialisation -------------------------------------------------------------------
    def to_json(self) -> str:
        d = asdict(self)
        for key in IMAGES:
            d[key] = [format(int(v), "x") for v in d[key]]
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        d = json.loads(text)
        d.pop("post_lanes", None)       # derived from post_par (a field in older manifests)
        for key in IMAGES:
            d[key] = [int(v, 16) for v in d.get(key, [])]
        legacy = any("src" not in ly for ly in d["layers"])
        d["layers"] = [LayerPlan(**ly) for ly in d["layers"]]
        d["input_shape"] = tuple(d["input_shape"])
        plan = cls(**d)
        if legacy:                      # a manifest from before layer graphs: a chain
            for i, lp in enumerate(plan.layers):
                lp.src = i - 1
            allocate(plan.layers, plan.input_shape, cpar=plan.cpar)
        return plan

    def banked(self, bank_words: int) -> "Plan":
        """A copy of the plan with its activations placed in banks of ``bank_words`` words
        (``gen.buffers``); the arithmetic is unchanged."""
        plan = copy.deepcopy(self)
        plan.act_bank_words = bank_words
        allocate(plan.layers, plan.input_shape, bank_words, plan.cpar)
        return plan

    def unbanked(self) -> "Plan":
        """The plan as compiled, before a board placed its activations in banks (the
        inverse of :meth:`banked`; ``self`` when they are not banked)."""
        return self.banked(0) if self.act_bank_words else self

    # -- derived -------------------------------------------------------------------------
    @property
    def post_lanes(self) -> int:
        """Lanes the post-processor takes per cycle: ``post_par``, or :func:`post_lanes_for`."""
        return self.post_par or post_lanes_for(self.lanes, self.cpar)

    @property
    def weighted(self) -> list:
        """The layers with stored weights (not pools), in order: what the scheme packs."""
        return [ly for ly in self.layers if not ly.pool]

    @property
    def tile_rows(self) -> int:
        """Rows of one tile-buffer slot (the engine's tile buffer holds two)."""
        return max(max(-(-ly.steps // self.group) for ly in self.weighted), self.tile_rows_max)

    @property
    def tile_buffer_bits(self) -> int:
        """Bits of the engine's double-buffered tile buffer (block RAM)."""
        return 2 * self.tile_rows * self.lanes * self.group * self.cpar * self.tile_weight_bits

    @property
    def weights(self) -> int:
        return sum(ly.cout * ly.terms for ly in self.layers if not ly.pool)

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
        """MAC slots per inference (a max-pool output takes one: its maximum times 1)."""
        return sum(ly.cout * (1 if ly.kind == "maxpool" else ly.terms) * ly.oh * ly.ow
                   for ly in self.layers)

    def output_pixels(self) -> int:
        ly = self.layers[-1]
        return ly.oh * ly.ow


def resolve(layers: list[Layer], input_shape) -> list[dict]:
    """Per layer: ``src`` / ``res`` (indices, -1 = input / none), the input ``(cin, h, w)``
    (``cin``: all channels), ``k``, ``pad``, ``stride``, ``oh``, ``ow``, ``cout``; checking
    that every layer fits what it reads."""
    index = {"input": -1}
    shapes = {-1: tuple(input_shape)}
    out = []
    for i, ly in enumerate(layers):
        def ref(name, what):
            if name is None:
                return i - 1
            if name not in index:
                raise ModelError(f"Layer '{ly.name}': {what} '{name}' is not an earlier layer")
            return index[name]
        src = ref(ly.src, "input")
        res = ref(ly.residual, "residual") if ly.residual is not None else None
        c, h, w = shapes[src]
        if ly.pool and not ly.channels:          # imported pools learn their input here
            ly.channels = c
        if ly.kind == "gap" and not ly.window:
            if h != w:
                raise ModelError(f"Layer '{ly.name}': global pooling of a non-square {h}x{w} "
                                 f"input is not supported")
            ly.window = h
        if ly.kind == "linear":
            if ly.cin != c * h * w:
                raise ModelError(f"Layer '{ly.name}': Linear expects {ly.cin} inputs but the "
                                 f"previous output has {c}x{h}x{w} = {c * h * w}")
            r = {"cin": c * h * w, "h": 1, "w": 1, "k": 1, "pad": 0, "stride": 1, "oh": 1, "ow": 1}
        else:
            k, stride = ly.k, (ly.window if ly.pool else ly.stride)
            if ly.cin != c:
                raise ModelError(f"Layer '{ly.name}': expects {ly.cin} input channels but gets {c}")
            if ly.depthwise and ly.cout != c:
                raise ModelError(f"Layer '{ly.name}': a depthwise layer needs as many outputs as "
                                 f"inputs ({c}), not {ly.cout}")
            oh, ow = conv_out(h, k, ly.pad, stride), conv_out(w, k, ly.pad, stride)
            if oh < 1 or ow < 1:
                raise ModelError(f"Layer '{ly.name}': a {k}x{k} window does not fit a "
                                 f"{h}x{w} input")
            r = {"cin": c, "h": h, "w": w, "k": k, "pad": ly.pad, "stride": stride, "oh": oh, "ow": ow}
        r.update(src=src, res=-1 if res is None else res, cout=ly.cout)
        if res is not None and shapes[res] != (ly.cout, r["oh"], r["ow"]):
            raise ModelError(f"Layer '{ly.name}': residual '{ly.residual}' of shape "
                             f"{shapes[res]} does not match the output {(ly.cout, r['oh'], r['ow'])}")
        index[ly.name] = i
        shapes[i] = (ly.cout, r["oh"], r["ow"])
        out.append(r)
    return out


def layer_shapes(layers: list[Layer], input_shape) -> list[tuple]:
    """``(cin, h, w, k, pad, oh, ow)`` per layer, checking that each layer fits what it reads."""
    return [(r["cin"], r["h"], r["w"], r["k"], r["pad"], r["oh"], r["ow"])
            for r in resolve(layers, input_shape)]
