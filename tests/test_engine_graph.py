# amaranth: UnusedElaboratable=no
"""Layer graphs on the engine (Amaranth simulator) against the golden model: stride 2, a
1x1 shortcut (signed, no ReLU) from a max-pool, residual adds of a signed and an unsigned
tensor, depthwise 3x3, average and global pooling, Linear; buffers placed by liveness."""

import copy

import numpy as np
import pytest
import torch
from test_engine import check_invalid_code_flagged

from insitu import from_torch
from insitu.boards.protocol import io_sizes
from insitu.gen import schemes
from insitu.gen.buffers import buffer_report
from insitu.gen.compiler import (
    CPARS,
    MAX_LANES,
    compile_model,
    golden_layers,
    post_lanes_for,
)
from insitu.gen.cycles import estimate_cycles
from insitu.gen.design import golden_vectors
from insitu.gen.layer import Layer, ModelError
from insitu.gen.lower import lower
from insitu.gen.memmap import POST
from insitu.gen.network import forward_int
from insitu.gen.zoo import dscnn, resnet8
from insitu.sim.amaranth_tb import run_engine


def graph_net(rng, c=3):
    """Every layer feature in 10 layers on a 3x8x8 input."""
    n = rng.normal
    return [
        Layer("stem", "conv3x3", n(size=(4, c, 3, 3)), n(size=4) * .1, pad=1, relu=True),
        Layer("s2", "conv3x3", n(size=(6, 4, 3, 3)), n(size=6) * .1, pad=1, relu=True, stride=2),
        Layer("mp", "maxpool", None, relu=True, window=2, channels=4, src="stem"),
        Layer("short", "conv1x1", n(size=(6, 4, 1, 1)), n(size=6) * .1, relu=False),
        Layer("c2", "conv3x3", n(size=(6, 6, 3, 3)), n(size=6) * .1, pad=1, relu=True, src="s2",
              residual="short"),
        Layer("dw", "conv3x3", n(size=(6, 1, 3, 3)), n(size=6) * .1, pad=1, relu=True, groups=6),
        Layer("c3", "conv3x3", n(size=(6, 6, 3, 3)), n(size=6) * .1, pad=1, relu=True,
              residual="c2"),
        Layer("avg", "avgpool", None, relu=True, window=2, channels=6),
        Layer("gap", "gap", None, relu=True, window=2, channels=6),
        Layer("fc", "linear", n(size=(5, 6)), n(size=5) * .1),
    ]


def _plan(scheme, lanes=4, seed=0):
    rng = np.random.default_rng(seed)
    return compile_model(graph_net(rng), scheme, lanes=lanes, input_shape=(3, 8, 8),
                         calib=rng.random((16, 3, 8, 8))), rng


@pytest.mark.parametrize("scheme", schemes.NAMES)
@pytest.mark.parametrize("stalls", [False, True])
def test_graph_bit_exact(scheme, stalls):
    plan, rng = _plan(scheme)
    x = np.concatenate([np.zeros((1, 192)), np.full((1, 192), 255),
                        rng.integers(0, 256, (3, 192))]).astype(np.int64)
    exp = golden_vectors(plan, x)
    got, counters = run_engine(plan, x, seed=2, p_gap=0.3 if stalls else 0,
                               p_stall=0.4 if stalls else 0)
    assert (got == exp).all()
    for c in counters:
        assert c["mac_slots"] == plan.macs and c["err"] == 0
        assert c["weight_bits"] == plan.weight_bits_per_inference


def test_graph_planted_residual_error_is_caught():
    plan, rng = _plan("int8")
    x = rng.integers(0, 256, (3, 192))
    got, _ = run_engine(plan, x, seed=1)
    bad = copy.deepcopy(plan)
    c2 = next(lp for lp in bad.layers if lp.name == "c2")
    for co in range(c2.cout):                           # drop the residual's contribution
        e = POST.unpack(bad.post_words[c2.post_base + co])
        bad.post_words[c2.post_base + co] = POST.pack(**{**e, "mr": 0})
    assert (got == golden_vectors(plan, x)).all()
    assert (got != golden_vectors(bad, x)).any()       # the residual's multiplier matters


def test_buffers_by_liveness():
    plan, _ = _plan("int8")
    rep = buffer_report(plan.layers, plan.input_shape)
    span = {-1: [-1, -1]}                               # tensor -> [written, last read]
    span.update({i: [i, i] for i in range(len(plan.layers) - 1)})
    for i, lp in enumerate(plan.layers):
        for t in (lp.src,) + ((lp.res,) if lp.res >= 0 else ()):
            span[t][1] = max(span[t][1], i)
    place = {-1: (plan.layers[0].in_base, 192)}
    place.update({i: (lp.out_base, lp.cout * lp.oh * lp.ow)
                  for i, lp in enumerate(plan.layers[:-1])})
    for a in span:
        for b in span:
            if a < b and span[a][1] >= span[b][0]:      # alive at the same time
                (ba, sa), (bb, sb) = place[a], place[b]
                assert ba + sa <= bb or bb + sb <= ba, (a, b)
    assert rep["peak_bytes"] < rep["sum_bytes"]


@pytest.mark.parametrize("make, n_layers, n_res", [(resnet8, 11, 3), (dscnn, 11, 0)])
def test_real_topologies_compile_and_match_float(make, n_layers, n_res):
    torch.manual_seed(0)
    layers = lower(from_torch(make().eval(), (1, 32, 32)))
    assert len(layers) == n_layers and sum(ly.residual is not None for ly in layers) == n_res
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 32, 32))
    plan = compile_model(layers, "int8", lanes=8, input_shape=(1, 32, 32), calib=x)
    y = forward_int(golden_layers(plan), np.round(x * 255).astype(np.int64)).reshape(8, -1)
    torch.manual_seed(0)
    f = from_torch(make().eval(), (1, 32, 32)).forward(np.round(x * 255) / 255)
    err = np.abs(y * plan.layers[-1].scale_out - f).max() / np.abs(f).max()
    assert err < 0.05


def test_engine_rejects_what_it_cannot_run():
    rng = np.random.default_rng(0)
    net = [Layer("a", "conv3x3", rng.normal(size=(2, 1, 3, 3)), pad=1, relu=True),
           Layer("b", "conv3x3", rng.normal(size=(2, 2, 3, 3)), pad=1, relu=True, residual="x")]
    with pytest.raises(ModelError, match="Layer 'b': residual 'x' is not an earlier layer"):
        compile_model(net, "int8", input_shape=(1, 8, 8))
    net[1].residual, net[1].stride = "a", 2
    with pytest.raises(ModelError, match=r"Layer 'b': residual 'a' of shape \(2, 8, 8\) does not "
                                         r"match the output \(2, 4, 4\)"):
        compile_model(net, "int8", input_shape=(1, 8, 8))


def test_smartdeal_depthwise_filters_share_one_basis_entry():
    """The 6 depthwise filters (and the 1-channel-in layers) share one basis entry: the fill
    offers it rep + 1 times (bit-exact above); an entry whose rep disagrees with the layer is
    refused when the image is decoded."""
    from insitu.gen.schemes.smartdeal import basis_fields
    plan, _ = _plan("smartdeal")
    dw = next(lp for lp in plan.layers if lp.name == "dw")
    assert dw.extra["entries"] == 1 and dw.cout == 6
    bf = basis_fields(rep_bits=plan.params["rep_bits"])
    first = sum(lp.extra["entries"] for lp in plan.weighted[:plan.weighted.index(dw)])
    entry = bf.unpack(plan.aux_words[first])
    assert entry["rep"] == 5
    bad = copy.deepcopy(plan)
    bad.aux_words[first] = bf.pack(**{**entry, "rep": 4})
    with pytest.raises(ModelError, match="basis entries cover 5 blocks, the manifest says 6"):
        schemes.get("smartdeal").unpack(bad, next(lp for lp in bad.layers if lp.name == "dw"))


@pytest.mark.parametrize("scheme", ["int8", "mlg"])
def test_banked_activations_bit_exact(scheme):
    """Activations in single-port banks (UP5K SPRAM), one tensor per bank: bit-exact under
    stalls, no bank ever used twice in a cycle (err stays 0)."""
    plan, rng = _plan(scheme)
    banked = plan.banked(256)
    bases = {lp.out_base for lp in banked.layers[:-1]} | {lp.in_base for lp in banked.layers}
    assert all(b % 256 == 0 for b in bases) and len(bases) > 1
    x = np.concatenate([np.full((1, 192), 255), rng.integers(0, 256, (2, 192))]).astype(np.int64)
    got, counters = run_engine(banked, x, seed=3, p_gap=0.3, p_stall=0.4)
    assert (got == golden_vectors(plan, x)).all()
    assert all(c["err"] == 0 for c in counters)


def test_bank_conflict_is_flagged():
    """The liveness placement packed into 64-word banks puts a layer's input and output in
    one bank: the engine raises err (a planted placement error)."""
    plan, rng = _plan("int8")
    bad = copy.deepcopy(plan)
    bad.act_bank_words = 64                 # banks, but the unbanked (packed) placement
    _, counters = run_engine(bad, rng.integers(0, 256, (1, 192)), seed=1)
    assert counters[0]["err"] == 1


@pytest.mark.parametrize("scheme, lanes, cpar, ask, post_lanes, issue",
                         [("asm", 4, 2, 0, 1, "skid"), ("mlg", 8, 4, 0, 1, "slice"),
                          ("int8", 16, 4, 0, 2, "slice"), ("asm", 32, 4, 0, 4, "skid"),
                          ("asm", 16, 16, 8, 8, "slice")])
def test_graph_cpar_bit_exact(scheme, lanes, cpar, ask, post_lanes, issue):
    """Several input channels per lane and cycle (``Plan.cpar``): activation words of cpar
    channels, cpar weights per lane and term; the 3-channel input and the depthwise layer
    and pools (their channel's byte in column 0) included, with stalls.  From 16 lanes the
    post-processor takes ``post_lanes`` lanes per cycle (the last tiles' 6 and 5 lanes end
    part-way through them; the final layer's values leave one at a time).  The golden model
    is the same integer network as with cpar 1, and the cycle model stays within 1%.  Each
    issue path the board tops use (``Engine(issue=...)``: skid, register slice) is on some;
    ``ask``: a post-processor width asked for (``--post-lanes``), wider than the default."""
    rng = np.random.default_rng(0)
    plan = compile_model(graph_net(rng), scheme, lanes=lanes, input_shape=(3, 8, 8),
                         calib=rng.random((16, 3, 8, 8)), cpar=cpar, post_lanes=ask)
    assert plan.post_lanes == post_lanes
    one = compile_model(graph_net(np.random.default_rng(0)), scheme, lanes=lanes,
                        input_shape=(3, 8, 8), calib=rng.random((16, 3, 8, 8)))
    for a, b in zip(golden_layers(plan), golden_layers(one)):
        assert (a["W"] == b["W"]).all()
    x = np.concatenate([np.full((1, 192), 255), rng.integers(0, 256, (2, 192))]).astype(np.int64)
    got, counters = run_engine(plan, x, seed=3, p_gap=0.3, p_stall=0.4, issue=issue)
    assert (got == golden_vectors(plan, x)).all()
    model = estimate_cycles(plan).cycles
    for c in counters:
        assert c["mac_slots"] == plan.macs and c["err"] == 0
        assert c["weight_bits"] == plan.weight_bits_per_inference
        assert abs(c["cycles"] - model) <= 0.01 * model
    assert counters[0]["cycles"] < 0.8 * estimate_cycles(one).cycles


def test_graph_cpar_flags_an_invalid_weight_code():
    """At several channels per cycle a weight code the golden decoder refuses (ASM A4 8-bit:
    a select/shift pair past 15) raises the engine's sticky ``err``: each lane's flag is
    registered, then OR-ed over the lanes a stage later."""
    rng = np.random.default_rng(0)
    plan = compile_model(graph_net(rng), "asm", lanes=4, input_shape=(3, 8, 8), cpar=4,
                         calib=rng.random((16, 3, 8, 8)), knobs={"weight_bits": 8})
    check_invalid_code_flagged(plan, rng.integers(0, 256, (1, 192)), plan.layers[1].wbase + 1)


@pytest.mark.parametrize("scheme, cpar, steps", [("asm", 16, 1), ("asm", 8, 2), ("mlg", 8, 2),
                                                  ("int8", 16, 1)])
def test_windowed_first_layer_bit_exact(scheme, cpar, steps):
    """A one-channel 3x3 first layer at 8 or 16 channels per cycle runs as conv1x1 over the 9
    taps the input loader writes (``LayerPlan.window``; two words per pixel at 8): one or two
    steps per pixel, not 9.  Bit-exact
    under input gaps and output stalls, the all-255 image (every tap at its extreme) and the
    zero padding of the borders included, back to back (the rows above the next image's first
    row are the previous image's zero rows); the golden model is the 3x3 convolution of the
    same weights (the 4-channel plan's, not windowed), and the cycle model stays within 1%."""
    rng = np.random.default_rng(0)
    kw = {"input_shape": (1, 8, 8), "calib": rng.random((16, 1, 8, 8))}
    plan = compile_model(graph_net(np.random.default_rng(0), c=1), scheme, lanes=16,
                         cpar=cpar, post_lanes=8, **kw)
    flat = compile_model(graph_net(np.random.default_rng(0), c=1), scheme, lanes=16, cpar=4,
                         **kw)
    lp = plan.layers[0]
    assert (lp.kind, lp.window, lp.cin, lp.steps) == ("conv1x1", 3, 9, steps)
    assert flat.layers[0].kind == "conv3x3" and not flat.layers[0].window
    assert io_sizes(plan) == io_sizes(flat) == (64, 5)      # the host sends the image
    x = np.concatenate([np.full((1, 64), 255), rng.integers(0, 256, (2, 64)),
                        np.full((1, 64), 255)]).astype(np.int64)
    want = golden_vectors(flat, x)
    assert (golden_vectors(plan, x) == want).all()
    got, counters = run_engine(plan, x, seed=5, p_gap=0.3, p_stall=0.4, issue="slice")
    assert (got == want).all()
    model = estimate_cycles(plan).cycles
    for c in counters:
        assert c["err"] == 0 and abs(c["cycles"] - model) <= 0.01 * model
    assert model < estimate_cycles(flat).cycles


def test_cpar_refusals():
    rng = np.random.default_rng(0)
    net = graph_net(rng)
    kw = {"input_shape": (3, 8, 8), "calib": rng.random((4, 3, 8, 8))}
    for scheme, lanes, cpar, msg in [
            ("asm", 4, 3, r"Channels per cycle \(cpar\) must be one of 1, 2, 4, 8, 16, not 3"),
            ("asm", 4, 8, r"Channels per cycle \(cpar\) 8 must divide the lanes \(4\)"),
            ("smartdeal", 4, 2, r"Scheme 'smartdeal' takes one channel per cycle \(cpar 1\), "
                                r"not 2")]:
        with pytest.raises(ModelError, match=msg):
            compile_model(net, scheme, lanes=lanes, cpar=cpar, **kw)
    for cpar, ask in [(4, 3), (2, 4), (4, -1)]:
        with pytest.raises(ModelError, match=rf"Post-processor lanes must be a power of two "
                                             rf"dividing cpar \({cpar}\), or 0 for 1, not {ask}"):
            compile_model(net, "asm", lanes=8, cpar=cpar, post_lanes=ask, **kw)
    flat = [Layer("c", "conv3x3", rng.normal(size=(2, 3, 3, 3)), pad=1, relu=True),
            Layer("fc", "linear", rng.normal(size=(4, 128)))]
    with pytest.raises(ModelError, match=r"Layer 'fc': with cpar 2 a Linear layer needs a "
                                         r"pooled input \(1x1 pixels\), not 2x8x8"):
        compile_model(flat, "int8", lanes=4, cpar=2, **kw)


def test_post_lanes_divide_cpar():
    """The post-processor's lanes per cycle: a power of two dividing cpar (so the lanes of a
    cycle are bytes of one activation word), about one per 8 lanes, 1 at cpar 1."""
    for P in CPARS:
        for lanes in range(P, MAX_LANES + 1, P):
            W = post_lanes_for(lanes, P)
            assert P % W == 0 and lanes % W == 0 and W & (W - 1) == 0
            assert W == min(P, 1 << (max(1, lanes // 8).bit_length() - 1))
    assert [post_lanes_for(L, P) for L, P in [(24, 8), (16, 16), (64, 8), (8, 4), (64, 1)]] == \
        [2, 2, 8, 1, 1]
