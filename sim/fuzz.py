"""Fuzzed configurations: random generator parameters and random models, elaborated, simulated
(Amaranth simulator, random valid gaps and ready stalls) and compared with the golden model.

Every case is a function of ``(kind, seed)`` alone, so a failure replays exactly:
``insitu bench fuzz --replay KIND:SEED``.  Kinds: ``asm`` (MAC array), ``smartdeal``
(compressor -> decoder + rebuild generator), ``mlg`` (compressor -> two-level generator),
``engine`` (random network, scheme, budget and lanes -> compiled engine), ``graph`` (a random
layer graph of the real networks' operations -- strides, depthwise, residual adds with identity
and strided shortcuts, max / average / global pooling -- with a random scheme, lanes and weight
link -> compiled engine).
"""

from __future__ import annotations

import time
import traceback
import warnings

import numpy as np

from ..gen import schemes
from ..gen.compiler import compile_model
from ..gen.cycles import estimate_cycles
from ..gen.design import golden_vectors
from ..gen.golden import ALPHABETS, representable
from ..gen.mlg import MlgConfig
from ..gen.mlg import compress_layer as mlg_compress
from ..gen.model import Layer
from ..gen.smartdeal import SdConfig
from ..gen.smartdeal import compress_layer as sd_compress
from ..gen.util import conv_out
from ..rtl.asm import AsmMacArray
from ..rtl.weightgen import MlgWeightGen, SdWeightGen
from .amaranth_tb import run_engine, simulate_streams
from .asm_vectors import encode_weights, expected
from .wg_vectors import (
    mlg_input_words,
    mlg_terms,
    mlg_unpack_kernels,
    sd_basis_words,
    sd_blocks_from_layer,
    sd_expected,
    sd_stream,
    sd_unpack_rows,
)

KINDS = ("asm", "smartdeal", "mlg", "engine", "graph")


def _random_weights(rng, shape):
    rank = int(rng.integers(1, 4))
    fan = int(np.prod(shape[1:]))
    w = rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, fan))
    w = w + float(rng.uniform(0, 0.5)) * rng.standard_normal(w.shape)
    return (w * float(rng.uniform(0.01, 2.0))).reshape(shape)


def case_asm(seed: int):
    rng = np.random.default_rng(seed)
    if rng.random() < 0.7:
        alphabet = str(rng.choice(list(ALPHABETS)))
    else:
        extra = rng.choice([3, 5, 7, 9, 11, 13, 15], size=int(rng.integers(0, 4)), replace=False)
        alphabet = ",".join(str(a) for a in sorted({1, *map(int, extra)}))
    signed = bool(rng.random() < 0.5)
    p = AsmMacArray.validate(alphabet=alphabet, weight_bits=int(rng.choice([4, 8, 12])),
                             act_bits=int(rng.integers(2, 11)), act_signed=signed,
                             lanes=int(rng.integers(1, 7)), acc_len=int(rng.integers(1, 13)))
    p["alphabet"] = alphabet
    lo, hi = (-(1 << (p["act_bits"] - 1)), (1 << (p["act_bits"] - 1)) - 1) if signed else (0, (1 << p["act_bits"]) - 1)
    rep = representable(p["weight_bits"], alphabet)
    srep = np.concatenate([-rep[1:], rep])
    accs = []
    for _ in range(int(rng.integers(1, 8))):
        t = int(rng.integers(1, p["acc_len"] + 1))
        x = rng.integers(lo, hi + 1, size=t)
        if rng.random() < 0.2:
            x = np.full(t, lo if signed else hi)
        w = rng.choice(srep, size=(t, p["lanes"]))
        if rng.random() < 0.2:
            w = np.full((t, p["lanes"]), int(rng.choice([-1, 1])) * int(rep[-1]))
        accs.append((x, w))
    dut = AsmMacArray(**p)
    words = []
    for x, w in accs:
        codes = encode_weights(p, w)
        words += [dut.io.pack_input(int(x[i]), codes[i], i == len(x) - 1) for i in range(len(x))]
    got = simulate_streams(dut, {dut.i: words}, dut.o, len(accs), rng, float(rng.uniform(0, 0.5)),
                           float(rng.uniform(0, 0.6)), 8 * len(words) + 4 * len(accs) + 64)
    exp = expected(p, accs)
    for k, (g, e) in enumerate(zip(got, exp)):
        r = dut.io.unpack_output(g)
        if r["acc"] != e or r["bad_code"] or r["overrun"]:
            raise AssertionError(f"accumulation {k}: RTL {r} != golden {e}")
    return p


def case_smartdeal(seed: int):
    rng = np.random.default_rng(seed)
    e_min = int(rng.integers(-8, 1))
    e_max = e_min + int(rng.integers(0, 11))
    exp_bits = max(1, (e_max - e_min).bit_length())
    word_bits = 32 if 4 + 3 * (1 + exp_bits) <= 32 and rng.random() < 0.7 else 64
    cfg = SdConfig(e_min=e_min, e_max=e_max, word_bits=word_bits,
                   basis_bits=int(rng.integers(3, 9)), threshold=float(rng.uniform(0, 0.1)),
                   prune=float(rng.choice([0.0, 0.0, 0.3])), group=int(rng.integers(1, 5)),
                   iters=int(rng.integers(1, 8)))
    if rng.random() < 0.6:
        shape, kind = (int(rng.integers(1, 4)), int(rng.integers(1, 9)), 3, 3), "conv3x3"
    else:
        shape, kind = (int(rng.integers(1, 4)), int(rng.integers(1, 30))), "linear"
    sd = sd_compress(Layer("l", kind, _random_weights(rng, shape)), cfg)
    requant = bool(rng.random() < 0.5)
    params = {"e_min": e_min, "e_max": e_max, "word_bits": word_bits,
              "basis_bits": cfg.basis_bits, "requant": requant, "shape": list(shape)}
    dut = SdWeightGen(e_min=e_min, e_max=e_max, word_bits=word_bits, basis_bits=cfg.basis_bits,
                      requant=requant)
    blocks = sd_blocks_from_layer(sd)
    words, basis = sd_stream(blocks, cfg.fmt)
    exp = sd_expected(blocks, cfg.fmt, requant)
    bwords = sd_basis_words(basis, cfg.basis_bits)
    got = simulate_streams(dut, {dut.i_coef: words, dut.i_basis: bwords}, dut.o, len(exp), rng,
                           float(rng.uniform(0, 0.4)), float(rng.uniform(0, 0.5)),
                           8 * (len(words) + len(exp) + len(bwords)) + 64)
    for k, (r, e) in enumerate(zip(sd_unpack_rows(got, dut.out_bits), exp)):
        if r != e:
            raise AssertionError(f"row {k}: RTL {r} != golden {e}")
    return params


def case_mlg(seed: int):
    rng = np.random.default_rng(seed)
    cfg = MlgConfig(Bi=int(rng.integers(1, 4)), Bo=int(rng.integers(1, 7)),
                    qb=int(rng.integers(1, 7)), qu=int(rng.integers(1, 7)), qv=int(rng.integers(1, 7)))
    if rng.random() < 0.6:
        shape, kind = (int(rng.integers(1, 9)), int(rng.integers(1, 6)), 3, 3), "conv3x3"
    else:
        shape, kind = (int(rng.integers(1, 9)), int(rng.integers(1, 12))), "linear"
    mlg = mlg_compress(Layer("l", kind, _random_weights(rng, shape)), cfg)
    params = {"Bi": max(1, mlg.Bi), "Bo": mlg.Bo, "K2": mlg.k2, "qb": cfg.qb, "qu": cfg.qu,
              "qv": cfg.qv, "level1": mlg.level1, "level2": mlg.level2}
    dut = MlgWeightGen(**params)
    terms, exp = mlg_terms(mlg)
    words = mlg_input_words(terms, **{k: params[k] for k in ("Bi", "K2", "qb", "qu", "qv", "level1", "level2")})
    got = simulate_streams(dut, {dut.i: words}, dut.o, len(exp), rng, float(rng.uniform(0, 0.4)),
                           float(rng.uniform(0, 0.5)), 8 * (len(words) + len(exp)) + 64)
    for k, (r, e) in enumerate(zip(mlg_unpack_kernels(got, params["K2"], dut.w_bits), exp)):
        if r != e:
            raise AssertionError(f"kernel {k}: RTL {r} != golden {e}")
    return {**params, "shape": list(shape)}


def _run_checked(plan, x, seed: int, rng, reset_mid=None) -> list[dict]:
    """Run ``x`` through ``plan``'s engine under random gaps and stalls (drawn from ``rng``),
    after an inference aborted by a reset when ``reset_mid`` is given; ``AssertionError``
    naming the first output that differs from the golden network, or a counter that differs
    from the plan.  Returns the counters of each inference."""
    got, counters = run_engine(plan, x, seed=seed, p_gap=float(rng.uniform(0, 0.4)),
                               p_stall=float(rng.uniform(0, 0.5)), reset_mid=reset_mid)
    exp = golden_vectors(plan, x)
    bad = np.argwhere(got != exp)
    if len(bad):
        v, i = bad[0]
        raise AssertionError(f"vector {v} output {i}: RTL {got[v, i]} != golden {exp[v, i]}")
    for cnt in counters:
        if not cnt["mac_terms"] <= cnt["issue_cycles"] <= cnt["cycles"]:
            raise AssertionError(f"counters {cnt}: not terms <= issue cycles <= cycles")
        if cnt["weight_bits"] != plan.weight_bits_per_inference or cnt["mac_slots"] != plan.macs \
                or cnt["err"]:
            raise AssertionError(f"counters {cnt} != planned bits {plan.weight_bits_per_inference}, "
                                 f"MACs {plan.macs}")
    return counters


def case_engine(seed: int):
    """A random small network (1-3 layers: conv3x3 / conv1x1 with padding 0/1, Linear), a random
    scheme and budget, random lanes: compiled, run on the engine under random stalls, compared
    with the golden network on extreme and random inputs."""
    rng = np.random.default_rng(seed)
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(2, 6)), int(rng.integers(2, 6))
    linear = rng.random() < 0.25
    shape = (c * h * w, 1, 1) if linear else (c, h, w)
    if linear:
        c, h, w = shape
    layers = []
    for i in range(int(rng.integers(1, 4))):
        cout = int(rng.integers(1, 7))
        if linear or (h * w > 1 and rng.random() < 0.3 and i):
            if not linear:
                c, h, w, linear = c * h * w, 1, 1, True
            layers.append(Layer(f"l{i}", "linear", _random_weights(rng, (cout, c)),
                                rng.normal(size=cout) * 0.3))
        else:
            k = 3 if rng.random() < 0.7 else 1
            pad = int(rng.integers(0, 2)) if k == 3 else 0
            if conv_out(h, k, pad) < 1 or conv_out(w, k, pad) < 1:
                pad = 1
            layers.append(Layer(f"l{i}", f"conv{k}x{k}", _random_weights(rng, (cout, c, k, k)),
                                rng.normal(size=cout) * 0.3, pad=pad))
            h, w = conv_out(h, k, pad), conv_out(w, k, pad)
        c = cout
    scheme = str(rng.choice(list(schemes.NAMES)))
    knobs = schemes.get(scheme).random_knobs(rng)
    lanes = int(rng.integers(1, 6))
    plan = compile_model(layers, scheme, lanes=lanes, input_shape=shape, knobs=knobs)
    feat = int(np.prod(shape))
    x = np.array([np.zeros(feat), np.full(feat, 255), rng.integers(0, 256, feat),
                  rng.integers(0, 256, feat)], dtype=np.int64)
    _run_checked(plan, x, seed, rng)
    return {"scheme": scheme, "knobs": knobs, "lanes": lanes, "input_shape": list(shape),
            "layers": [[ly.kind, list(ly.weight.shape), ly.pad] for ly in layers]}


def _graph_layers(rng):
    """A random layer graph: a stem, 1-3 blocks (residual with an identity or strided 1x1
    shortcut, depthwise + pointwise, or a pool), then global pooling or not, and Linear."""
    n = rng.normal
    c, h = int(rng.integers(1, 4)), int(rng.integers(4, 10))
    shape = (c, h, h)
    ch = int(rng.integers(2, 7))
    layers = [Layer("stem", "conv3x3", _random_weights(rng, (ch, c, 3, 3)), n(size=ch) * .3,
                    pad=1, relu=True)]
    last = "stem"
    for b in range(int(rng.integers(1, 4))):
        kind = rng.choice(["res", "dw", "pool"])
        s = 2 if h >= 4 and rng.random() < 0.5 else 1
        if kind == "res":
            co = ch if s == 1 and rng.random() < 0.5 else int(rng.integers(2, 7))
            layers.append(Layer(f"r{b}a", "conv3x3", _random_weights(rng, (co, ch, 3, 3)),
                                n(size=co) * .3, pad=1, relu=True, stride=s, src=last))
            res = last
            if s != 1 or co != ch:
                layers.append(Layer(f"r{b}s", "conv1x1", _random_weights(rng, (co, ch, 1, 1)),
                                    n(size=co) * .3, relu=False, stride=s, src=last))
                res = f"r{b}s"
            layers.append(Layer(f"r{b}b", "conv3x3", _random_weights(rng, (co, co, 3, 3)),
                                n(size=co) * .3, pad=1, relu=True, src=f"r{b}a", residual=res))
            last, ch, h = f"r{b}b", co, conv_out(h, 3, 1, s)
        elif kind == "dw":
            layers.append(Layer(f"d{b}", "conv3x3", _random_weights(rng, (ch, 1, 3, 3)),
                                n(size=ch) * .3, pad=1, relu=True, stride=s, groups=ch, src=last))
            co = int(rng.integers(2, 7))
            layers.append(Layer(f"p{b}", "conv1x1", _random_weights(rng, (co, ch, 1, 1)),
                                n(size=co) * .3, relu=True))
            last, ch, h = f"p{b}", co, conv_out(h, 3, 1, s)
        elif h >= 2:
            pool = str(rng.choice(["maxpool", "avgpool"]))
            layers.append(Layer(f"m{b}", pool, None, relu=True, window=2, channels=ch, src=last))
            last, h = f"m{b}", h // 2
    if h > 1 and rng.random() < 0.6:
        layers.append(Layer("gap", "gap", None, relu=True, window=h, channels=ch, src=last))
        last, feat = "gap", ch
    else:
        feat = ch * h * h
    classes = int(rng.integers(2, 6))
    layers.append(Layer("fc", "linear", _random_weights(rng, (classes, feat)),
                        n(size=classes) * .3, src=last))
    return layers, shape


def case_graph(seed: int):
    """A random layer graph (:func:`_graph_layers`), scheme, budget, lanes and weight link:
    compiled, run on the engine under random stalls (half the cases after an inference cut by
    a reset, in its input or while it computes), compared with the golden network on extreme
    and random inputs; the counters and the cycle model's error are reported."""
    rng = np.random.default_rng(seed)
    layers, shape = _graph_layers(rng)
    scheme = str(rng.choice(list(schemes.NAMES)))
    knobs = schemes.get(scheme).random_knobs(rng)
    lanes = int(rng.integers(1, 9))
    calib = rng.random((8,) + shape)
    plan = compile_model(layers, scheme, lanes=lanes, input_shape=shape, knobs=knobs,
                         calib=calib)
    plan.weight_port_bits = int(rng.choice([0, 0, 1, 3, 8, 32]))
    feat = int(np.prod(shape))
    x = np.array([np.zeros(feat), np.full(feat, 255), rng.integers(0, 256, feat)],
                 dtype=np.int64)
    # Half the cases start with an inference cut by a reset: in the input, or while computing.
    reset_mid = None
    if rng.random() < 0.5:
        est0 = estimate_cycles(plan).cycles
        reset_mid = ((int(rng.integers(1, feat)), 1) if rng.random() < 0.5 else
                     (feat, int(rng.integers(1, max(2, est0)))))
    counters = _run_checked(plan, x, seed, rng, reset_mid)
    est = estimate_cycles(plan).cycles
    return {"scheme": scheme, "knobs": knobs, "lanes": lanes, "input_shape": list(shape),
            "weight_port_bits": plan.weight_port_bits,
            "reset_mid": list(reset_mid) if reset_mid else None,
            "layers": [[ly.name, ly.kind, ly.stride, ly.src, ly.residual] for ly in layers],
            "cycles": counters[-1]["cycles"], "cycle_model_error":
                round((est - counters[-1]["cycles"]) / counters[-1]["cycles"], 5)}


CASES = {"asm": case_asm, "smartdeal": case_smartdeal, "mlg": case_mlg, "engine": case_engine,
         "graph": case_graph}


def run_case(kind: str, seed: int) -> dict:
    """``{"kind", "seed", "ok", "params", "error", "seconds"}`` of one fuzz case."""
    t0 = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            params = CASES[kind](seed)
        return {"kind": kind, "seed": seed, "ok": True, "params": params, "error": None,
                "seconds": round(time.monotonic() - t0, 3)}
    except Exception as exc:                       # a failing case is data, not a crash
        return {"kind": kind, "seed": seed, "ok": False, "params": None,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=6),
                "seconds": round(time.monotonic() - t0, 3)}
