# amaranth: UnusedElaboratable=no
"""Layer engine in the Amaranth simulator: whole small networks against the golden model."""

import copy

import numpy as np
import pytest

from insitu.gen import schemes
from insitu.gen.compiler import Plan, compile_model, golden_layers
from insitu.gen.design import golden_vectors
from insitu.gen.memmap import MEM_POST, MEM_WEIGHT
from insitu.gen.model import Layer, ModelError
from insitu.gen.schemes import Scheme
from insitu.sim.amaranth_tb import run_engine


def small_net(rng, *, cin=2, hw=5):
    """conv3x3 pad 1 -> conv3x3 pad 0 -> Linear: padding, partial tiles, 3 layers."""
    return [Layer("c1", "conv3x3", rng.normal(size=(5, cin, 3, 3)), rng.normal(size=5) * 0.2, pad=1),
            Layer("c2", "conv3x3", rng.normal(size=(4, 5, 3, 3)), rng.normal(size=4) * 0.2, pad=0),
            Layer("fc", "linear", rng.normal(size=(7, 4 * (hw - 2) ** 2)), rng.normal(size=7) * 0.2)]


def extreme_inputs(rng, feat, n_random=3):
    xs = [np.zeros(feat), np.full(feat, 255), np.arange(feat) % 2 * 255,
          (np.arange(feat) + 1) % 2 * 255]
    xs += [rng.integers(0, 256, feat) for _ in range(n_random)]
    return np.array(xs, dtype=np.int64)


@pytest.mark.parametrize("scheme", schemes.NAMES)
@pytest.mark.parametrize("stalls", [False, True])
def test_engine_network_bit_exact(scheme, stalls):
    rng = np.random.default_rng(3)
    plan = compile_model(small_net(rng), scheme, lanes=3, input_shape=(2, 5, 5))
    x = extreme_inputs(rng, 50)
    exp = golden_vectors(plan, x)
    got, counters = run_engine(plan, x, seed=1, p_gap=0.3 if stalls else 0,
                               p_stall=0.4 if stalls else 0)
    assert (got == exp).all()
    for c in counters:
        assert c["weight_bits"] == plan.weight_bits_per_inference   # every word read as planned
        assert 0 < c["mac_terms"] <= c["issue_cycles"] <= c["cycles"]
        if type(schemes.get(scheme)).bits_read is Scheme.bits_read:
            assert c["weight_bits"] == plan.weight_memory_bits      # every stored bit once
        assert c["weight_bits"] <= plan.weight_memory_bits          # no word read twice
        assert c["mac_slots"] == plan.macs                  # every MAC done once
        assert c["err"] == 0
    if not stalls:
        assert len({c["cycles"] for c in counters}) == 1    # data-independent timing


@pytest.mark.parametrize("scheme, knobs", [("asm", {"alphabet": "A4", "weight_bits": 8}),
                                           ("smartdeal", None)])
def test_engine_flags_an_invalid_weight_code(scheme, knobs):
    """A weight word whose code the golden decoder refuses (ASM A4: a select/shift pair past
    15, not the zero code; SmartDeal: an exponent out of range, through the tile fill) raises
    the engine's sticky ``err`` for that inference."""
    rng = np.random.default_rng(4)
    plan = compile_model(small_net(rng), scheme, lanes=3, input_shape=(2, 5, 5), knobs=knobs)
    check_invalid_code_flagged(plan, extreme_inputs(rng, 50, n_random=0)[:1],
                               plan.layers[1].wbase + 5)


def check_invalid_code_flagged(plan, x, word: int):
    """Flip the first bit of weight word ``word`` that makes a code the golden decoder
    refuses; the engine raises ``err`` on that plan and not on ``plan``."""
    for bit in range(plan.weight_word_bits):
        bad = copy.deepcopy(plan)
        bad.weight_words[word] ^= 1 << bit
        try:
            golden_vectors(bad, x)
        except ValueError:                                     # an invalid code
            break
    else:
        pytest.fail("no single bit flip makes an invalid code")
    _, counters = run_engine(bad, x)
    _, good = run_engine(plan, x)
    assert counters[0]["err"] == 1 and good[0]["err"] == 0

@pytest.mark.parametrize("scheme", schemes.NAMES)
def test_engine_planted_weight_error_is_caught(scheme):
    rng = np.random.default_rng(4)
    plan = compile_model(small_net(rng), scheme, lanes=3, input_shape=(2, 5, 5))
    x = extreme_inputs(rng, 50, n_random=2)
    exp = golden_vectors(plan, x)
    i = plan.layers[1].wbase + 5
    for bit in range(2, plan.weight_word_bits):                # one flipped bit in layer 2
        bad = copy.deepcopy(plan)                              # that changes a weight
        bad.weight_words[i] ^= 1 << bit
        try:
            if not (golden_vectors(bad, x) == exp).all():
                break
        except ValueError:                                     # an invalid code: next bit
            continue
    got, _ = run_engine(bad, x)
    assert not (got == exp).all()
    assert (got == golden_vectors(bad, x)).all()               # and the RTL follows its image


def test_engine_load_stream_changes_weights_without_rebuild():
    rng = np.random.default_rng(5)
    plan = compile_model(small_net(rng), "asm", lanes=3, input_shape=(2, 5, 5))
    x = extreme_inputs(rng, 50, n_random=1)
    new = copy.deepcopy(plan)
    for i in range(plan.layers[2].wbase, plan.layers[2].wbase + 12):
        new.weight_words[i] = plan.weight_words[i + 20]
    loads = [(MEM_WEIGHT, i, new.weight_words[i]) for i in range(len(new.weight_words))
             if new.weight_words[i] != plan.weight_words[i]]
    assert loads
    got, _ = run_engine(plan, x, loads=loads)
    assert (got == golden_vectors(new, x)).all()
    assert not (golden_vectors(new, x) == golden_vectors(plan, x)).all()


def test_engine_load_reaches_every_post_memory_copy():
    """With several post-processor lanes each lane reads its own copy of the post memory: a
    host load of new entries (a layer's channels' entries rotated) reaches every copy."""
    rng = np.random.default_rng(6)
    net = [Layer("c1", "conv3x3", rng.normal(size=(8, 2, 3, 3)), rng.normal(size=8) * .2,
                 pad=1, relu=True),
           Layer("c2", "conv1x1", rng.normal(size=(8, 8, 1, 1)), rng.normal(size=8) * .2)]
    plan = compile_model(net, "asm", lanes=8, input_shape=(2, 4, 4), cpar=4, post_lanes=4,
                         calib=rng.random((8, 2, 4, 4)))
    assert plan.post_lanes == 4
    x = extreme_inputs(rng, 32, n_random=1)
    new = copy.deepcopy(plan)
    lp = plan.layers[0]
    for j in range(lp.cout):
        new.post_words[lp.post_base + j] = plan.post_words[lp.post_base + (j + 1) % lp.cout]
    loads = [(MEM_POST, i, w) for i, w in enumerate(new.post_words) if w != plan.post_words[i]]
    assert len(loads) == lp.cout
    got, _ = run_engine(plan, x, loads=loads)
    assert (got == golden_vectors(new, x)).all()
    assert not (golden_vectors(new, x) == golden_vectors(plan, x)).all()


def test_engine_mlg_levels_and_small_bases():
    """MLG with both levels (conv 8 -> 6 channels, Bi = 2), level 1 bypassed (1 input channel)
    and level 2 bypassed (Bo >= outputs), Bo = 1 (cache written and read in the same cycle)."""
    rng = np.random.default_rng(8)
    layers = [Layer("c1", "conv3x3", rng.normal(size=(8, 1, 3, 3)), rng.normal(size=8) * 0.2, pad=1),
              Layer("c2", "conv3x3", rng.normal(size=(6, 8, 3, 3)), rng.normal(size=6) * 0.2),
              Layer("fc", "linear", rng.normal(size=(5, 6 * 2 * 2)), rng.normal(size=5) * 0.2)]
    seen = set()
    for knobs in ({"Bo": 3, "Bi": 2, "qb": 3, "qu": 4, "qv": 3}, {"Bo": 1, "Bi": 1}, {"Bo": 44}):
        plan = compile_model(layers, "mlg", lanes=4, input_shape=(1, 4, 4), knobs=knobs)
        levels = [(ly.extra["level1"], ly.extra["level2"]) for ly in plan.layers]
        seen.update(levels)
        x = extreme_inputs(rng, 16, n_random=2)
        got, counters = run_engine(plan, x)
        assert (got == golden_vectors(plan, x)).all(), (knobs, levels)
        assert counters[0]["mac_slots"] == plan.macs
        assert counters[0]["weight_bits"] == plan.weight_bits_per_inference
        # later tiles take Wb and (with level 2) the (ci, o) words from the fill's caches
        assert counters[0]["weight_bits"] <= plan.weight_memory_bits
    # every combination of the two levels ran
    assert seen == {(True, True), (False, True), (True, False), (False, False)}, seen


@pytest.mark.parametrize("second", ["conv1x1", "conv3x3"])
def test_engine_layer_switch_under_mac_stall(second):
    """Found by the fuzzer: a one-term layer (1x1, one input channel) followed by a layer whose
    last term meets a stalled MAC array; the activation buffer select must follow the data."""
    rng = np.random.default_rng(9)
    k = 1 if second == "conv1x1" else 3
    layers = [Layer("a", "conv1x1", rng.normal(size=(3, 1, 1, 1))),
              Layer("b", second, rng.normal(size=(3, 3, k, k)))]
    plan = compile_model(layers, "asm", lanes=4, input_shape=(1, 4, 4))
    x = extreme_inputs(rng, 16, n_random=2)
    got, _ = run_engine(plan, x)
    assert (got == golden_vectors(plan, x)).all()


def test_engine_single_linear_layer_and_one_lane():
    rng = np.random.default_rng(6)
    layers = [Layer("fc", "linear", rng.normal(size=(3, 10)), None)]
    plan = compile_model(layers, "smartdeal", lanes=1)
    x = extreme_inputs(rng, 10, n_random=2)
    got, counters = run_engine(plan, x)
    assert (got == golden_vectors(plan, x)).all()


def test_plan_roundtrip_and_image_checks():
    rng = np.random.default_rng(7)
    plan = compile_model(small_net(rng), "smartdeal", lanes=4, input_shape=(2, 5, 5))
    again = Plan.from_json(plan.to_json())
    x = extreme_inputs(rng, 50, n_random=1)
    assert (golden_vectors(again, x) == golden_vectors(plan, x)).all()
    broken = copy.deepcopy(plan)
    broken.weight_words[plan.layers[1].wbase] += 1            # header row count != manifest
    with pytest.raises(ModelError, match="rows"):
        golden_layers(broken)
    short = copy.deepcopy(plan)
    short.aux_words = short.aux_words[:-1]
    with pytest.raises(ModelError, match="basis image"):
        golden_layers(short)


@pytest.mark.parametrize("layers, kwargs, match", [
    (lambda r: [Layer("c", "conv3x3", r.normal(size=(2, 1, 3, 3)))], {}, "input shape"),
    (lambda r: [Layer("a", "linear", r.normal(size=(4, 6)), relu=False),
                Layer("b", "linear", r.normal(size=(2, 4)))], {}, "followed by ReLU"),
    (lambda r: [Layer("a", "linear", r.normal(size=(4, 6))),
                Layer("b", "linear", r.normal(size=(2, 5)))], {}, "expects 5 inputs"),
    (lambda r: [Layer("c", "conv3x3", r.normal(size=(2, 1, 3, 3)))], {"input_shape": (1, 2, 2)},
     "does not fit"),
    (lambda r: [Layer("a", "linear", r.normal(size=(4, 6)))], {"lanes": 0}, "Lanes"),
    (lambda r: [Layer("a", "linear", r.normal(size=(4, 6)))], {"scheme": "nope"}, "Unknown scheme"),
])
def test_compile_rejects(layers, kwargs, match):
    kwargs = dict(kwargs)
    scheme = kwargs.pop("scheme", "asm")
    with pytest.raises(ModelError, match=match):
        compile_model(layers(np.random.default_rng(0)), scheme, **kwargs)
