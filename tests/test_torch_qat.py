"""Scheme-aware fine-tuning on PyTorch (``insitu.gen.torch_qat``, ``insitu train --scheme``)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from insitu.cli import main
from insitu.cli.demo_real import checkpoint, tuned_checkpoint
from insitu.gen.compiler import compile_model, golden_layers, rebuilt_weights
from insitu.gen.datasets import fashion_mnist, pad_to
from insitu.gen.model import float_reference, load_network
from insitu.gen.network import forward_int
from insitu.gen.torch_qat import (
    LayerNet,
    codes_from_arrays,
    export_layers_onnx,
    finetune,
)


@pytest.fixture(scope="module")
def small_data():
    d = fashion_mnist()
    return dataclasses.replace(d, x_train=d.x_train[:256], y_train=d.y_train[:256],
                               x_test=d.x_test[:64], y_test=d.y_test[:64])


@pytest.mark.parametrize("model", ["resnet8", "dscnn"])
def test_layer_net_is_the_imported_network(model, tmp_path):
    """The PyTorch mirror of the engine's layer list computes the ONNX file's float function,
    and exporting it gives back the same layer list."""
    layers, shape = load_network(checkpoint(model))
    x = np.random.default_rng(0).random((4,) + shape)
    with torch.no_grad():
        got = LayerNet(layers)(torch.tensor(x, dtype=torch.float32)).numpy()
    ref = float_reference(checkpoint(model), x, shape)
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    export_layers_onnx(layers, shape, tmp_path / "m.onnx")
    again, shape2 = load_network(tmp_path / "m.onnx")
    # the same layers in the same order, each Add fused into the same conv (so the same
    # tensor is stored as the residual)
    sig = lambda ls: [(a.kind, a.stride, a.groups, a.pad, a.relu, a.relu6,  # noqa: E731
                       a.residual is None, a.weight is None or a.weight.shape) for a in ls]
    assert shape2 == shape and sig(again) == sig(layers)
    assert np.allclose(float_reference(tmp_path / "m.onnx", x, shape), ref, atol=1e-4)


def test_weight_form_trains_through_the_rebuilt_weights(small_data):
    layers, _ = load_network(checkpoint("dscnn"))
    tuned, codes, hist = finetune(layers, small_data, "smartdeal", epochs=1, limit=256)
    assert codes is None and [h["epoch"] for h in hist] == [0, 1]
    moved = [np.abs(a.weight - b.weight).max() for a, b in zip(tuned, layers) if not a.pool]
    assert max(moved) > 0                       # the float weights were trained
    # the same seed gives the same weights
    again, _, _ = finetune(layers, small_data, "smartdeal", epochs=1, limit=256)
    assert all(np.array_equal(a.weight, b.weight) for a, b in zip(tuned, again) if not a.pool)


def test_factor_form_codes_compile_to_the_trained_weights(small_data, tmp_path):
    """MLG codes trained at the factor level: the weights the module used are exactly the
    codes' rebuilt weights, and the codes compile as they are."""
    layers, shape = load_network(checkpoint("dscnn"))
    tuned, codes, _ = finetune(layers, small_data, "mlg", epochs=1, limit=256)
    assert codes is not None and len(codes) == len(layers)
    for ly, w in zip(tuned, rebuilt_weights(tuned, codes, "mlg")):
        if w is not None:
            assert np.allclose(ly.weight, w)
    calib = pad_to(small_data.x_train[:16], 32) / 255.0
    plan = compile_model(tuned, "mlg", input_shape=shape, calib=calib, compressed=codes)
    x = pad_to(small_data.x_test[:2], 32).astype(np.int64)
    assert forward_int(golden_layers(plan), x).shape[0] == 2


def test_train_scheme_cli_writes_a_checkpoint_the_demo_uses(tmp_path, capsys, monkeypatch):
    out = tmp_path / "models" / "dscnn-mlg"
    assert main(["train", "--model", "dscnn", "--scheme", "mlg", "--epochs", "1", "--limit",
                 "128", "-o", str(out)]) == 0
    rep = json.loads((out / "train_report.json").read_text())
    assert rep["scheme"] == "mlg" and rep["knobs"] == {} and len(rep["history"]) == 2
    assert (out / "model.onnx").exists() and (out / "codes.npz").exists()
    assert "test accuracy with the scheme's weights" in capsys.readouterr().out
    layers, _ = load_network(out / "model.onnx")
    with np.load(out / "codes.npz") as z:
        codes = codes_from_arrays(layers, "mlg", {}, z)
    assert sum(c is not None for c in codes) == sum(not ly.pool for ly in layers)
    other, _ = load_network(checkpoint("resnet8"))
    with np.load(out / "codes.npz") as z, pytest.raises(Exception, match="rebuilds the weights "
                                                        "of no layer of the model"):
        codes_from_arrays(other, "mlg", {}, z)
    # the demo takes a fine-tuned checkpoint only for its scheme, knobs and float parent
    import insitu.cli.demo_real as demo_real
    monkeypatch.setattr(demo_real, "ROOT", tmp_path)
    assert tuned_checkpoint("dscnn", "mlg")[1].name == "codes.npz"
    assert tuned_checkpoint("dscnn", "mlg", {"qb": 2}) is None
    assert tuned_checkpoint("dscnn", "asm") is None
    assert tuned_checkpoint("resnet8", "mlg") is None
    # without knobs a model compiles with its checkpoint's knobs
    rep["knobs"] = {"Bo": 3}
    (out / "train_report.json").write_text(json.dumps(rep))
    assert demo_real.checkpoint_knobs("dscnn", "mlg") == {"Bo": 3}
    assert demo_real.checkpoint_knobs("dscnn", "mlg", {"Bo": 5}) == {"Bo": 5}
    assert demo_real.checkpoint_knobs("dscnn", "asm") == {}
    assert tuned_checkpoint("dscnn", "mlg") is not None
    assert tuned_checkpoint("dscnn", "mlg", {"Bo": 3}) is not None
    assert tuned_checkpoint("dscnn", "mlg", {"Bo": 5}) is None


def test_train_scheme_bad_input(capsys, tmp_path):
    from test_cocotb_engine import two_layer_model
    two_layer_model(tmp_path / "m.npz")
    assert main(["train", "--model", "dscnn", "--scheme", "asm", "--from",
                 str(tmp_path / "m.npz"), "-o", str(tmp_path / "o")]) == 2
    assert "--from must be an ONNX file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["train", "--model", "dscnn", "--scheme", "nope", "-o", "x"]) == 2
    assert "Unknown scheme 'nope'" in capsys.readouterr().err
    assert main(["train", "--model", "dscnn", "--scheme", "mlg", "--set", "Zz=1", "-o",
                 "x"]) == 2
    assert "has no knob 'Zz'" in capsys.readouterr().err
