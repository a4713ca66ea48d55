"""Model compiler: float layers -> compressed codes -> engine plan (memory images, layer table,
requantisation constants) -> golden integer network.

The plan is what :class:`insitu.rtl.engine.Engine` is built from and what ``manifest.json``
holds; :func:`golden_layers` turns a plan back into integer weights through the per-block
golden decoders (``gen.golden``), so ``insitu simulate`` checks the RTL against the images it
actually runs, not against the compiler's intermediate arrays.

Quantisation (documented contract):
* inputs are floats in ``[0, 1]`` mapped to u8 by ``round(x * 255)`` (input scale 1/255);
* weights: the scheme's integer weights with a per-output-channel scale ``sw[co]``;
* a hidden layer's output scale ``s_out`` is its largest float activation on the calibration
  inputs / 255; the final layer's is its largest |value| / 2**15;
* per output channel ``bias_int = round(bias / (sw * s_in))`` and ``M / 2**S ~ sw * s_in /
  s_out`` (16-bit ``M``, ``S`` <= 47), see ``gen.network.requant``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from .compress import COMPRESSORS, make_config
from .golden import (
    AsmCodeFormat,
    SdFormat,
    mlg_bits,
    mlg_generate,
    parse_alphabet,
    requant_shift,
    sd_rebuild,
    sd_unpack,
)
from .model import Layer, ModelError
from .network import forward_float, requant_params

__all__ = ["LayerPlan", "Plan", "compile_model", "golden_layers", "SCHEMES"]

SCHEMES = ("asm", "smartdeal", "mlg")
MAX_LANES = 64


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
    sd_chunks: int = 0      # SmartDeal blocks per filter
    sd_rows: list = field(default_factory=list)
    cbase: int = 0          # MLG: first coefficient (U) word
    vbase: int = 0          # MLG: first V word (aux memory)
    mlg_Bo: int = 0
    mlg_level1: bool = False
    mlg_level2: bool = False
    mlg_per_word: int = 1   # MLG, level 1 bypassed: basis rows per weight-memory word
    mlg_tile_words: int = 0  # MLG, neither level: words per tile
    scale_w: list = field(default_factory=list)   # per output channel weight scale
    scale_in: float = 1.0
    scale_out: float = 1.0


@dataclass
class Plan:
    scheme: str
    lanes: int
    layers: list
    group: int                      # terms per tile-buffer row
    tile_weight_bits: int           # bits per weight (or ASM code) in the tile buffer
    tile_rows_max: int
    terms_max: int
    weight_word_bits: int
    weight_words: list
    aux_word_bits: int = 1
    aux_words: list = field(default_factory=list)
    post_words: list = field(default_factory=list)
    coef_word_bits: int = 1
    coef_words: list = field(default_factory=list)
    alphabet: str = "A4"
    asm_weight_bits: int = 8
    e_min: int = -8
    e_max: int = 5
    input_shape: tuple = (1, 1, 1)
    knobs: dict = field(default_factory=dict)
    mlg_Bi: int = 0
    mlg_qb: int = 1
    mlg_qu: int = 1
    mlg_qv: int = 1
    mlg_w1_bits: int = 2

    # -- serialisation -------------------------------------------------------------------
    def to_json(self) -> str:
        d = asdict(self)
        for key in ("weight_words", "aux_words", "post_words", "coef_words"):
            d[key] = [format(int(v), "x") for v in d[key]]
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        d = json.loads(text)
        for key in ("weight_words", "aux_words", "post_words", "coef_words"):
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
        """Bits the engine reads from its weight memories per inference: the whole image once
        (ASM, SmartDeal); MLG reads V once and the basis/coefficient words once per tile."""
        if self.scheme != "mlg":
            return self.weight_memory_bits
        total = 0
        for ly in self.layers:
            for tk in range(ly.tiles):
                lanes = min(self.lanes, ly.cout - tk * self.lanes)
                if ly.mlg_level1 or ly.mlg_level2:
                    total += ly.mlg_Bo * ((self.weight_word_bits if ly.mlg_level1 else 0)
                                          + (self.aux_word_bits if ly.mlg_level2 else 0))
                n_o = ly.mlg_Bo if ly.mlg_level2 else lanes
                if ly.mlg_level1:
                    total += ly.cin * n_o * self.coef_word_bits
                else:
                    total += -(-ly.cin * n_o // ly.mlg_per_word) * self.weight_word_bits
        return total

    @property
    def macs(self) -> int:
        return sum(ly.cout * ly.terms * ly.oh * ly.ow for ly in self.layers)

    def output_pixels(self) -> int:
        ly = self.layers[-1]
        return ly.oh * ly.ow


def _shapes(layers: list[Layer], input_shape) -> list[tuple]:
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
            oh, ow = h + 2 * ly.pad - k + 1, w + 2 * ly.pad - k + 1
            if oh < 1 or ow < 1:
                raise ModelError(f"Layer '{ly.name}': a {k}x{k} kernel does not fit a "
                                 f"{h}x{w} input")
            out.append((c, h, w, k, ly.pad, oh, ow))
            c, h, w = ly.cout, oh, ow
    return out


def _int_weights(c, scheme: str):
    """``(W_int [cout, cin*k*k], sw [cout])`` of a compressed layer (golden decoders)."""
    if scheme == "smartdeal":                  # int8 per filter: one shift each
        W = c.weight_int8().reshape(c.shape[0], -1)
        return W, c.scale * np.exp2(c.shifts.astype(np.float64))
    W = c.weight_int().reshape(c.shape[0], -1)  # ASM, MLG: one scale per layer
    return W, np.full(c.shape[0], c.scale)


def rebuilt_weights(layers: list[Layer], compressed, scheme: str) -> list[np.ndarray]:
    """The float weights the hardware uses (integer weights times their scales)."""
    out = []
    for ly, c in zip(layers, compressed):
        W, sw = _int_weights(c, scheme)
        out.append((W * sw[:, None]).reshape(ly.weight.shape))
    return out


def compile_model(layers: list[Layer], scheme: str, *, lanes: int = 8, input_shape=None,
                  calib: np.ndarray | None = None, knobs: dict | None = None,
                  compressed=None, progress=None) -> Plan:
    """Compress (unless ``compressed`` is given), quantise and pack ``layers`` for the engine."""
    if scheme not in SCHEMES:
        raise ModelError(f"Unknown scheme '{scheme}' (schemes: {', '.join(SCHEMES)})")
    if not isinstance(lanes, int) or isinstance(lanes, bool) or not 1 <= lanes <= MAX_LANES:
        raise ModelError(f"Lanes must be an integer in 1..{MAX_LANES}, not {lanes!r}")
    if input_shape is None:
        if layers[0].kind != "linear":
            raise ModelError(f"Layer '{layers[0].name}' is a convolution: give the input shape "
                             f"(--input-shape C,H,W)")
        input_shape = (layers[0].cin, 1, 1)
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ModelError(f"Input shape must be C,H,W with positive sizes, not {input_shape}")
    shapes = _shapes(layers, input_shape)
    for ly in layers[:-1]:
        if ly.relu is False:
            raise ModelError(f"Layer '{ly.name}': the engine's hidden activations are unsigned "
                             f"8-bit, so a hidden layer must be followed by ReLU")
    for ly, (cin, h, w, k, pad, oh, ow) in zip(layers, shapes):
        if cin * h * w > 1 << 16 or ly.cout * oh * ow > 1 << 16:
            raise ModelError(f"Layer '{ly.name}': activations larger than 65536 values do not "
                             f"fit the engine's buffers")
    cfg = make_config(scheme, knobs or {})
    if compressed is None:
        compressed = []
        for i, ly in enumerate(layers):
            if progress:
                progress(f"[{i + 1}/{len(layers)}] compress {scheme}: {ly.name}")
            compressed.append(COMPRESSORS[scheme](ly, cfg))

    ints = [_int_weights(c, scheme) for c in compressed]
    plans, post_words = _quantize(layers, ints, shapes, calib, input_shape, lanes)

    terms_max = max(lp.terms for lp in plans)
    if scheme == "asm":
        fmt = AsmCodeFormat(cfg.weight_bits, parse_alphabet(cfg.alphabet))
        zero = fmt.encode_value(0)
        words = []
        for lp, c in zip(plans, compressed):
            lp.wbase = len(words)
            codes = c.codes().reshape(lp.cout, -1)
            for t0 in range(0, lp.cout, lanes):
                for t in range(lp.terms):
                    word = 0
                    for n in range(lanes):
                        co = t0 + n
                        code = int(codes[co, t]) if co < lp.cout else zero
                        word |= code << (n * fmt.width)
                    words.append(word)
        plan = Plan("asm", lanes, plans, 1, fmt.width, terms_max, terms_max,
                    lanes * fmt.width, words, post_words=post_words,
                    alphabet=cfg.alphabet if isinstance(cfg.alphabet, str) else
                    ",".join(str(a) for a in cfg.alphabet),
                    asm_weight_bits=cfg.weight_bits, input_shape=input_shape,
                    knobs=dict(knobs or {}))
    elif scheme == "mlg":
        plan = _pack_mlg(plans, compressed, cfg, lanes, terms_max, post_words, input_shape, knobs)
    else:
        words, basis = [], []
        rows_max = 0
        for lp, c in zip(plans, compressed):
            lp.wbase = len(words)
            lp.sd_chunks = c.n_chunks
            lp.sd_rows = list(c.rows)
            rows_max = max(rows_max, sum(c.rows))
            words += c.coef_words()
            for co in range(lp.cout):
                for s in range(c.n_chunks):
                    entry = 0
                    for j, v in enumerate(c.basis[co, s].reshape(-1)):
                        entry |= (int(v) & 0xFF) << (8 * j)
                    entry |= int(c.shifts[co]) << 72
                    entry |= int(c.rows[s]) << 77
                    basis.append(entry)
        plan = Plan("smartdeal", lanes, plans, 3, 8, rows_max, terms_max,
                    cfg.word_bits, words, aux_word_bits=85, aux_words=basis,
                    post_words=post_words, e_min=cfg.e_min, e_max=cfg.e_max,
                    input_shape=input_shape, knobs=dict(knobs or {}))
    return plan


def _quantize(layers, ints, shapes, calib, input_shape, lanes):
    """Layer table and post-processing words (bias, M, S per output channel) for integer
    weights ``ints`` = ``[(W_int [cout, terms], sw [cout])]``, calibrated on ``calib``."""
    # Calibration: float forward with the compressed weights.
    fl = []
    for ly, (W, sw), (cin, h, w, k, pad, oh, ow) in zip(layers, ints, shapes):
        fl.append({"W": W * sw[:, None], "bias": ly.bias if ly.bias is not None else np.zeros(ly.cout),
                   "k": k, "pad": pad, "relu": ly.relu if ly.relu is not None else ly is not layers[-1],
                   "in_shape": (cin, h, w)})
    if calib is None:
        calib = np.random.default_rng(0).random((64,) + input_shape)
    calib = np.round(np.clip(np.asarray(calib, dtype=np.float64), 0, 1) * 255) / 255
    _, outs = forward_float(fl, calib.reshape((calib.shape[0],) + input_shape))

    plans = []
    post_words = []
    s_in = 1.0 / 255
    for i, (ly, (W, sw), f, (cin, h, w, k, pad, oh, ow)) in enumerate(
            zip(layers, ints, fl, shapes)):
        final = i == len(layers) - 1
        peak = float(np.max(np.abs(outs[i]))) if outs[i].size else 0.0
        s_out = (peak or 1.0) / (2 ** 15 if final else 255)
        lp = LayerPlan(ly.name, ly.kind, cin, ly.cout, h, w, k, pad, bool(f["relu"]), oh, ow,
                       cin * k * k, -(-ly.cout // lanes), post_base=len(post_words),
                       scale_w=[float(v) for v in sw], scale_in=s_in, scale_out=s_out)
        bias = f["bias"]
        for co in range(ly.cout):
            b = int(round(bias[co] / (sw[co] * s_in))) if sw[co] > 0 else 0
            if not -(1 << 31) <= b < (1 << 31):
                raise ModelError(f"Layer '{ly.name}': bias {bias[co]:g} of channel {co} does not "
                                 f"fit 32 bits at this weight scale")
            M, S = requant_params(sw[co] * s_in / s_out)
            post_words.append((b & 0xFFFFFFFF) | (M << 32) | (S << 48))
        plans.append(lp)
        s_in = s_out

    return plans, post_words


def dense_int8(layers: list[Layer], *, input_shape=None, calib=None) -> list[dict]:
    """Golden integer layers of the dense int8 baseline (per-channel symmetric weights, the
    same activation quantisation and post-processing as the engine)."""
    input_shape = input_shape or (layers[0].cin, 1, 1)
    shapes = _shapes(layers, input_shape)
    ints = []
    for ly in layers:
        W = ly.weight.reshape(ly.cout, -1)
        s = np.max(np.abs(W), axis=1) / 127
        s = np.where(s > 0, s, 1.0)
        ints.append((np.clip(np.rint(W / s[:, None]), -127, 127).astype(np.int64), s))
    plans, post = _quantize(layers, ints, shapes, calib, tuple(input_shape), 1)
    return [_golden_entry(lp, W, post) for lp, (W, _) in zip(plans, ints)]


def _golden_entry(lp, W, posts) -> dict:
    words = posts[lp.post_base:lp.post_base + lp.cout]
    bias = np.array([((w & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000 for w in words], dtype=np.int64)
    M = np.array([(w >> 32) & 0xFFFF for w in words], dtype=np.int64)
    S = np.array([(w >> 48) & 0x3F for w in words], dtype=np.int64)
    return {"W": W, "bias": bias, "M": M, "S": S, "k": lp.k, "pad": lp.pad, "relu": lp.relu,
            "in_shape": (lp.cin, lp.h, lp.w)}


def _pack_mlg(plans, compressed, cfg, lanes, terms_max, post_words, input_shape, knobs) -> Plan:
    """MLG images: weight memory = basis words (``Wb[o]``: Bi x K2 codes, or, level 1
    bypassed, ``Wb[o, ci]``: K2 codes, ``[ci][o]`` order), coefficient memory = ``U[o, ci]``
    (Bi codes, ``[ci][o]``), aux memory = V per tile (``V[tile lanes, o]``, ``[tile][o]``)."""
    K2 = 9 if any(lp.k == 3 for lp in plans) else 1
    Bi = cfg.Bi
    wbits = 1
    w1_bits = 2
    for lp, c in zip(plans, compressed):
        b1, b = mlg_bits(max(c.Bi, 1), c.Bo, cfg.qb, cfg.qu, cfg.qv, c.level1, c.level2)
        w1_bits, wbits = max(w1_bits, b1), max(wbits, b)
    w_width = max(Bi * K2 * cfg.qb, K2 * cfg.qb)
    words, coefs, vwords = [], [], []
    for lp, c in zip(plans, compressed):
        k2 = lp.k * lp.k
        lp.mlg_Bo, lp.mlg_level1, lp.mlg_level2 = c.Bo, c.level1, c.level2
        lp.wbase, lp.cbase, lp.vbase = len(words), len(coefs), len(vwords)
        if c.level1:
            for o in range(c.Bo):
                word = 0
                for b in range(c.Bi):
                    for t in range(k2):
                        word |= int(c.basis[o, b, t]) << ((b * K2 + t) * cfg.qb)
                words.append(word)
            for ci in range(lp.cin):
                for o in range(c.Bo):
                    coefs.append(sum(int(c.coeff_in[o, ci, b]) << (b * cfg.qu) for b in range(c.Bi)))
        else:
            # Rows in fill order ([ci][o], or per tile [tile][ci][o in tile] without level 2),
            # per_word rows to a word; without level 2 each tile starts on a word.
            bas = c.basis.reshape(c.Bo, lp.cin, k2)
            lp.mlg_per_word = per = max(1, w_width // (k2 * cfg.qb))
            groups = ([[(ci, o) for ci in range(lp.cin) for o in range(c.Bo)]] if c.level2 else
                      [[(ci, o) for ci in range(lp.cin)
                        for o in range(t0, min(lp.cout, t0 + lanes))]
                       for t0 in range(0, lp.cout, lanes)])
            lp.mlg_tile_words = 0 if c.level2 else -(-lp.cin * lanes // per)
            for g, rows in enumerate(groups):
                start = len(words)
                for i in range(0, len(rows), per):
                    word = 0
                    for f, (ci, o) in enumerate(rows[i:i + per]):
                        for t in range(k2):
                            word |= int(bas[o, ci, t]) << ((f * k2 + t) * cfg.qb)
                    words.append(word)
                if not c.level2:
                    words += [0] * (start + lp.mlg_tile_words - len(words))
        if c.level2:
            for t0 in range(0, lp.cout, lanes):
                for o in range(c.Bo):
                    vwords.append(sum(int(c.coeff_out[t0 + n, o]) << (n * cfg.qv)
                                      for n in range(lanes) if t0 + n < lp.cout))
    rows_max = max(-(-lp.terms // K2) if lp.k == 1 else lp.cin for lp in plans)
    return Plan("mlg", lanes, plans, K2, wbits, rows_max, terms_max, w_width, words,
                aux_word_bits=lanes * cfg.qv, aux_words=vwords, post_words=post_words,
                coef_word_bits=max(1, Bi * cfg.qu), coef_words=coefs, input_shape=input_shape,
                knobs=dict(knobs or {}), mlg_Bi=Bi, mlg_qb=cfg.qb, mlg_qu=cfg.qu, mlg_qv=cfg.qv,
                mlg_w1_bits=w1_bits)


def _mlg_weights(plan: Plan, lp) -> np.ndarray:
    """Integer weights of one MLG layer decoded from the images (golden ``mlg_generate``)."""
    K2, k2 = plan.group, lp.k * lp.k
    Bo, qb, qu, qv = lp.mlg_Bo, plan.mlg_qb, plan.mlg_qu, plan.mlg_qv
    field_ = lambda word, i, q: (word >> (i * q)) & ((1 << q) - 1)
    try:
        if lp.mlg_level1:
            Bi = plan.mlg_Bi
            Bc = np.array([[[field_(plan.weight_words[lp.wbase + o], b * K2 + t, qb)
                             for t in range(k2)] for b in range(Bi)] for o in range(Bo)])
            Uc = np.zeros((Bo, lp.cin, Bi), dtype=np.int64)
            for ci in range(lp.cin):
                for o in range(Bo):
                    word = plan.coef_words[lp.cbase + ci * Bo + o]
                    Uc[o, ci] = [field_(word, b, qu) for b in range(Bi)]
        else:
            Bc = np.zeros((Bo, lp.cin, k2), dtype=np.int64)
            per = lp.mlg_per_word
            if lp.mlg_level2:
                groups = [(lp.wbase, [(ci, o) for ci in range(lp.cin) for o in range(Bo)])]
            else:
                groups = [(lp.wbase + tk * lp.mlg_tile_words,
                           [(ci, o) for ci in range(lp.cin)
                            for o in range(tk * plan.lanes, min(lp.cout, (tk + 1) * plan.lanes))])
                          for tk in range(lp.tiles)]
            for base, rows in groups:
                for i, (ci, o) in enumerate(rows):
                    word = plan.weight_words[base + i // per]
                    f = i % per
                    Bc[o, ci] = [field_(word, f * k2 + t, qb) for t in range(k2)]
            Bc = Bc.reshape(Bo, lp.cin * k2)
            Uc = None
        Vc = None
        if lp.mlg_level2:
            Vc = np.zeros((lp.cout, Bo), dtype=np.int64)
            for tk in range(lp.tiles):
                for o in range(Bo):
                    word = plan.aux_words[lp.vbase + tk * Bo + o]
                    for n in range(plan.lanes):
                        if tk * plan.lanes + n < lp.cout:
                            Vc[tk * plan.lanes + n, o] = field_(word, n, qv)
    except IndexError:
        raise ModelError(f"Layer '{lp.name}': MLG image is shorter than the manifest says") from None
    W = mlg_generate(Bc, Uc, Vc, qb, qu, qv, lp.cout, lp.cin, k2)
    return W.reshape(lp.cout, -1)


def golden_layers(plan: Plan) -> list[dict]:
    """Integer layers (``gen.network.forward_int``) decoded from the plan's memory images."""
    out = []
    L = plan.lanes
    posts = plan.post_words
    if plan.scheme == "smartdeal":
        fmt = SdFormat(plan.e_min, plan.e_max, plan.weight_word_bits)
        words = plan.weight_words
        ends = [lp.wbase for lp in plan.layers[1:]] + [len(words)]
        bpos = 0
    for i, lp in enumerate(plan.layers):
        if plan.scheme == "mlg":
            W = _mlg_weights(plan, lp)
        elif plan.scheme == "asm":
            fmt = AsmCodeFormat(plan.asm_weight_bits, parse_alphabet(plan.alphabet))
            W = np.zeros((lp.cout, lp.terms), dtype=np.int64)
            for tk in range(lp.tiles):
                for t in range(lp.terms):
                    word = plan.weight_words[lp.wbase + tk * lp.terms + t]
                    for n in range(L):
                        co = tk * L + n
                        if co < lp.cout:
                            code = (word >> (n * fmt.width)) & ((1 << fmt.width) - 1)
                            W[co, t] = fmt.decode_value(code)
        else:
            n_rows = words[lp.wbase]
            R = sum(lp.sd_rows)
            if n_rows != lp.cout * R:
                raise ModelError(f"Layer '{lp.name}': coefficient image has {n_rows} rows, the "
                                 f"manifest says {lp.cout * R}")
            try:
                mask, sgn, expu, err = sd_unpack(words[lp.wbase + 1:ends[i]], n_rows, fmt)
            except ValueError as exc:
                raise ModelError(f"Layer '{lp.name}': {exc}") from None
            if err.any():
                raise ModelError(f"Layer '{lp.name}': coefficient image has an exponent out of "
                                 f"range")
            if len(plan.aux_words) < bpos + lp.cout * lp.sd_chunks:
                raise ModelError(f"Layer '{lp.name}': basis image is shorter than the manifest says")
            rows = np.zeros((lp.cout, R, 3), dtype=np.int64)
            for co in range(lp.cout):
                start = 0
                for s, r in enumerate(lp.sd_rows):
                    entry = plan.aux_words[bpos]
                    bpos += 1
                    B = np.array([((entry >> (8 * j)) & 0xFF) for j in range(9)], dtype=np.int64)
                    B = np.where(B >= 128, B - 256, B).reshape(3, 3)
                    shift = (entry >> 72) & 0x1F
                    base = co * R + start
                    sl = slice(base, base + r)
                    rows[co, start:start + r] = requant_shift(
                        sd_rebuild(B, mask[sl], sgn[sl], expu[sl]), int(shift))
                    start += r
            W = rows.reshape(lp.cout, -1)[:, :lp.terms]
        out.append(_golden_entry(lp, W, posts))
    return out
