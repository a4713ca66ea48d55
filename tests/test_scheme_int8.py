"""The dense int8 baseline scheme: per-channel symmetric rounding, its images round-trip,
and the engine runs it bit-exact (the engine and cocotb runs are in test_engine.py and
test_cocotb_engine.py, parametrised over the registry)."""

import numpy as np
import pytest

from insitu.gen import schemes
from insitu.gen.compiler import compile_model, dense_int8, golden_layers
from insitu.gen.layer import Layer


def test_int8_is_registered_as_the_baseline():
    assert schemes.get("int8") is schemes.BASELINE
    assert schemes.BASELINE.fill == "copy" and schemes.BASELINE.mac == "exact"


def test_int8_quantisation_is_per_channel_symmetric():
    w = np.array([[0.5, -1.0, 0.25], [2.0, 0.0, -2.0], [0.0, 0.0, 0.0]])
    c = schemes.get("int8").compress(Layer("l", "linear", w), schemes.get("int8").config())
    np.testing.assert_array_equal(c.weight, [[64, -127, 32], [127, 0, -127], [0, 0, 0]])
    np.testing.assert_allclose(c.scales, [1 / 127, 2 / 127, 1.0])
    assert sum(c.storage_bits().values()) == 8 * 9 + 32 * 3


@pytest.mark.parametrize("lanes", [1, 3, 8])
def test_int8_images_round_trip_and_match_the_dense_baseline(lanes):
    rng = np.random.default_rng(7)
    layers = [Layer("c", "conv3x3", rng.normal(size=(5, 2, 3, 3)), rng.normal(size=5), pad=1),
              Layer("f", "linear", rng.normal(size=(4, 5 * 4 * 4)))]
    plan = compile_model(layers, "int8", lanes=lanes, input_shape=(2, 4, 4))
    assert plan.weight_word_bits == 8 * lanes and plan.tile_weight_bits == 8
    assert plan.weight_bits_per_inference == plan.weight_memory_bits
    assert len(plan.weight_words) == sum(lp.tiles * lp.terms for lp in plan.layers)
    got = golden_layers(plan)
    ref = dense_int8(layers, input_shape=(2, 4, 4))
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g["W"], r["W"])
        assert g["W"].min() >= -127 and g["W"].max() <= 127


def test_int8_has_no_knobs():
    with pytest.raises(ValueError, match=r"^Scheme 'int8' has no knob 'bits' \(knobs: none\)$"):
        schemes.get("int8").config({"bits": "4"})
