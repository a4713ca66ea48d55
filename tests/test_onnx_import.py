"""ONNX import: insitu's float forward equals onnxruntime's on the same inputs (1e-4 relative),
for the real-network topologies and for hand-built graphs of every accepted operation; every
unsupported input gets one line naming the node, the operation and the attribute."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from insitu import from_torch
from insitu.gen.layer import ModelError
from insitu.gen.onnx_import import graph_from_onnx, load_onnx
from insitu.gen.zoo import dscnn, resnet8


def _ort(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


def _close(a, b):
    return np.abs(a - b).max() <= 1e-4 * max(1e-6, np.abs(b).max())


def _random_bn(model):
    torch.manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("make", [resnet8, dscnn])
@pytest.mark.parametrize("fold_bn", [True, False])
def test_real_networks_match_onnxruntime(make, fold_bn, tmp_path):
    torch.manual_seed(0)
    model = _random_bn(make())
    path = tmp_path / "m.onnx"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 1, 32, 32), str(path), dynamo=False,
                          do_constant_folding=fold_bn, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    onnx_model = onnx.load(str(path))
    ops = {n.op_type for n in onnx_model.graph.node}
    assert ("BatchNormalization" in ops) == (not fold_bn)
    g = load_onnx(path)
    assert g.input_shape == (1, 32, 32)
    x = np.random.default_rng(2).random((3, 1, 32, 32))
    assert _close(g.forward(x), _ort(onnx_model, x))
    assert _close(from_torch(model, (1, 32, 32)).forward(x),
                  model(torch.from_numpy(x).float()).detach().numpy())
    kinds = [n.op for n in g.nodes]
    if make is resnet8:
        assert kinds.count("add") == 3 and kinds.count("gap") == 1
        assert sum(n.weight.size for n in g.nodes if n.weight is not None) == 77072
        assert sorted({n.stride for n in g.nodes if n.op == "conv"}) == [1, 2]
    else:
        assert sum(n.op == "conv" and n.groups == 64 for n in g.nodes) == 4


def _model(nodes, inits, in_shape, out_shape, opset=13):
    in_shape, out_shape = ["N", *in_shape[1:]], ["N", *out_shape[1:]]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          [numpy_helper.from_array(v.astype(np.float32 if v.dtype.kind == "f" else np.int64), k)
                           for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_every_operation_matches_onnxruntime():
    rng = np.random.default_rng(0)
    inits = {"w1": rng.normal(size=(4, 2, 3, 3)), "b1": rng.normal(size=4),
             "s": rng.uniform(0.5, 1.5, 4), "beta": rng.normal(size=4),
             "mu": rng.normal(size=4), "var": rng.uniform(0.5, 2, 4),
             "lo": np.array(0.0), "hi": np.array(6.0),
             "w2": rng.normal(size=(4, 4, 1, 1)), "w3": rng.normal(size=(4, 1, 3, 3)),
             "shape": np.array([0, -1]), "mm": rng.normal(size=(16, 5)), "mb": rng.normal(size=5)}
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
        N("BatchNormalization", ["c1", "s", "beta", "mu", "var"], ["bn"], name="bn1", epsilon=1e-3),
        N("Clip", ["bn", "lo", "hi"], ["r6"], name="clip"),
        N("Conv", ["r6", "w2"], ["c2"], name="pw"),
        N("Conv", ["r6", "w3"], ["c3"], name="dw", group=4, pads=[1, 1, 1, 1]),
        N("Add", ["c2", "c3"], ["sum"], name="add"),
        N("Relu", ["sum"], ["r"], name="relu"),
        N("MaxPool", ["r"], ["mp"], name="mp", kernel_shape=[2, 2], strides=[2, 2]),
        N("AveragePool", ["r"], ["ap"], name="ap", kernel_shape=[2, 2], strides=[2, 2]),
        N("Add", ["mp", "ap"], ["pools"], name="add2"),
        N("Reshape", ["pools", "shape"], ["flat"], name="reshape"),
        N("MatMul", ["flat", "mm"], ["lin"], name="mm"),
        N("Add", ["lin", "mb"], ["y"], name="bias"),
    ]
    model = _model(nodes, inits, [1, 2, 8, 8], [1, 5])
    onnx.checker.check_model(model)
    g = graph_from_onnx(model)
    assert [n.op for n in g.nodes] == ["conv", "relu6", "conv", "conv", "add", "relu", "maxpool",
                                       "avgpool", "add", "flatten", "linear"]
    x = rng.random((2, 2, 8, 8)) * 4
    assert _close(g.forward(x), _ort(model, x))
    gap = _model([N("GlobalAveragePool", ["x"], ["g"]), N("Flatten", ["g"], ["y"])], {},
                 [1, 3, 5, 5], [1, 3])
    assert _close(graph_from_onnx(gap).forward(x[:, :, :5, :5].repeat(2, 1)[:, :3]),
                  _ort(gap, x[:, :, :5, :5].repeat(2, 1)[:, :3]))


def _conv(**attrs):
    w = np.ones((2, 1, 3, 3))
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], name="c", **attrs)], {"w": w},
                  [1, 1, 8, 8], [1, 2, 8, 8])


@pytest.mark.parametrize("model, msg", [
    (_conv(strides=[3, 3]), r"ONNX node 'c' \(Conv\): attribute 'strides' = \[3, 3\] is not supported"),
    (_conv(dilations=[2, 2]), r"ONNX node 'c' \(Conv\): attribute 'dilations' = \[2, 2\]"),
    (_conv(pads=[1, 0, 1, 0]), r"ONNX node 'c' \(Conv\): attribute 'pads' = \[1, 0, 1, 0\] is asymmetric"),
    (_model([helper.make_node("Sigmoid", ["x"], ["y"], name="sig")], {}, [1, 1, 4, 4], [1, 1, 4, 4]),
     r"ONNX node 'sig' \(Sigmoid\): operation not supported"),
    (_model([helper.make_node("Relu", ["x"], ["y"], name="r")], {}, [1, 1, "H", 4], [1, 1, 4, 4]),
     r"ONNX input 'x': dimension 2 is dynamic \('H'\)"),
    (_model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="cl")],
            {"lo": np.array(-1.0), "hi": np.array(1.0)}, [1, 1, 4, 4], [1, 1, 4, 4]),
     r"ONNX node 'cl' \(Clip\): attribute 'min'/'max' = -1.0/1.0 is not supported"),
    (_model([helper.make_node("Add", ["x", "w"], ["y"], name="a")], {"w": np.ones(4)},
            [1, 1, 4, 4], [1, 1, 4, 4]), r"ONNX node 'a' \(Add\): a constant may only be added"),
])
def test_unsupported_input_is_one_line(model, msg):
    with pytest.raises(ModelError, match=msg) as exc:
        graph_from_onnx(model)
    assert "\n" not in str(exc.value)


def test_mismatched_add_shapes(tmp_path):
    N = helper.make_node
    model = _model([N("Conv", ["x", "w"], ["c"], name="c", strides=[2, 2]),
                    N("Add", ["c", "x"], ["y"], name="add")], {"w": np.ones((1, 1, 1, 1))},
                   [1, 1, 4, 4], [1, 1, 4, 4])
    with pytest.raises(ModelError, match=r"Node 'add' \(add\): branch shapes \(1, 2, 2\) and "
                                         r"\(1, 4, 4\) differ"):
        graph_from_onnx(model)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match="is not a readable ONNX file"):
        load_onnx(bad)
