"""PyTorch model files read without PyTorch (``insitu.gen.torch_import``).

PyTorch cannot be installed offline here (the PyPI wheel needs the CUDA libraries), so the
files are written by ``torch_like_save``: the archive layout and pickle of ``torch.save``
(``archive/data.pkl`` with ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` and
persistent storage ids, ``archive/data/<key>`` raw little-endian storages, modules as
``torch.nn.modules.*`` objects carrying ``_modules`` / ``_parameters`` and their attributes),
produced from stand-in classes registered under the torch names.
"""

import io
import pickle
import sys
import types
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from insitu.cli import main
from insitu.gen.model import ModelError, load_model


@pytest.fixture
def fake_torch(monkeypatch):
    """Stand-ins registered under the torch module names, so pickle writes torch's globals."""
    mods = {}
    for name in ("torch", "torch._utils", "torch.nn", "torch.nn.modules",
                 "torch.nn.modules.conv", "torch.nn.modules.linear",
                 "torch.nn.modules.activation", "torch.nn.modules.flatten",
                 "torch.nn.modules.container", "torch.nn.modules.pooling",
                 "torch.nn.modules.batchnorm"):
        mods[name] = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, mods[name])

    def define(modname, name, obj):
        obj.__module__, obj.__qualname__, obj.__name__ = modname, name, name
        setattr(mods[modname], name, obj)
        return obj

    def _rebuild_tensor_v2(*a):
        raise AssertionError("not called when writing")

    def _rebuild_parameter(*a):
        raise AssertionError("not called when writing")

    ns = types.SimpleNamespace()
    ns.rebuild_tensor = define("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2)
    ns.rebuild_param = define("torch._utils", "_rebuild_parameter", _rebuild_parameter)
    ns.FloatStorage = define("torch", "FloatStorage", type("FloatStorage", (), {}))
    ns.LongStorage = define("torch", "LongStorage", type("LongStorage", (), {}))

    class Module:
        def __init__(self, **attrs):
            self.training = False
            self._parameters = OrderedDict()
            self._buffers = OrderedDict()
            self._non_persistent_buffers_set = set()
            self._modules = OrderedDict()
            self.__dict__.update(attrs)

        def __setstate__(self, state):
            self.__dict__.update(state)

    for modname, cls in (("torch.nn.modules.conv", "Conv2d"), ("torch.nn.modules.linear", "Linear"),
                         ("torch.nn.modules.activation", "ReLU"),
                         ("torch.nn.modules.activation", "Sigmoid"),
                         ("torch.nn.modules.flatten", "Flatten"),
                         ("torch.nn.modules.container", "Sequential"),
                         ("torch.nn.modules.pooling", "MaxPool2d"),
                         ("torch.nn.modules.batchnorm", "BatchNorm2d")):
        setattr(ns, cls, define(modname, cls, type(cls, (Module,), {})))
    return ns


class _Tensor:
    def __init__(self, arr, param=False):
        self.arr, self.param = np.ascontiguousarray(arr, dtype=np.float32), param


def torch_like_save(obj, path, ns):
    storages = []

    class T:                                 # one tensor as torch pickles it
        def __init__(self, t):
            self.t = t

        def __reduce__(self):
            arr = self.t.arr
            storages.append(arr)
            st = ("storage", ns.FloatStorage, str(len(storages) - 1), "cpu", arr.size)
            strides = tuple(s // arr.itemsize for s in arr.strides)
            rebuilt = (ns.rebuild_tensor, (_Pid(st), 0, arr.shape, strides, False, OrderedDict()))
            if self.t.param:
                return (ns.rebuild_param, (_Rebuilt(rebuilt), False, OrderedDict()))
            return rebuilt

    class _Pid:
        def __init__(self, pid):
            self.pid = pid

    class _Rebuilt:
        def __init__(self, r):
            self.r = r

        def __reduce__(self):
            return self.r

    def wrap(o):
        if isinstance(o, _Tensor):
            return T(o)
        if isinstance(o, OrderedDict):
            return OrderedDict((k, wrap(v)) for k, v in o.items())
        if hasattr(o, "_modules"):
            o.__dict__.update({k: wrap(v) for k, v in o.__dict__.items()})
        return o

    class P(pickle.Pickler):
        def persistent_id(self, o):
            return o.pid if isinstance(o, _Pid) else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump(wrap(obj))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
        for i, arr in enumerate(storages):
            zf.writestr(f"archive/data/{i}", arr.astype("<f4").tobytes())


def _params(w, b=None):
    p = OrderedDict(weight=_Tensor(w, True))
    p["bias"] = _Tensor(b, True) if b is not None else None
    return p


def conv(ns, w, b, padding=(1, 1), stride=(1, 1)):
    return ns.Conv2d(_parameters=_params(w, b), padding=padding, stride=stride,
                     dilation=(1, 1), groups=1, padding_mode="zeros",
                     kernel_size=w.shape[2:], in_channels=w.shape[1], out_channels=w.shape[0])


def sequential(ns, *mods):
    return ns.Sequential(_modules=OrderedDict((str(i), m) for i, m in enumerate(mods)))


def test_sequential_file(tmp_path, fake_torch):
    ns, rng = fake_torch, np.random.default_rng(0)
    w1, b1 = rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4)
    w2 = rng.normal(size=(3, 4, 1, 1))
    w3, b3 = rng.normal(size=(5, 48)), rng.normal(size=5)
    seq = sequential(ns, conv(ns, w1, b1), ns.ReLU(), conv(ns, w2, None, padding=(0, 0)),
                     ns.ReLU(), ns.Flatten(), ns.Linear(_parameters=_params(w3, b3)))
    torch_like_save(seq, tmp_path / "m.pt", ns)
    layers = load_model(tmp_path / "m.pt")
    assert [(ly.name, ly.kind, ly.pad, ly.relu) for ly in layers] == [
        ("0", "conv3x3", 1, True), ("2", "conv1x1", 0, True), ("5", "linear", 0, False)]
    np.testing.assert_allclose(layers[0].weight, w1.astype(np.float32))
    np.testing.assert_allclose(layers[2].bias, b3.astype(np.float32))
    assert layers[1].bias is None
    # and it compiles for the engine
    assert main(["compile", str(tmp_path / "m.pt"), "--scheme", "asm", "--input-shape", "2,4,4",
                 "-o", str(tmp_path / "d")]) == 0


def test_state_dict_file_with_strided_tensor(tmp_path, fake_torch):
    rng = np.random.default_rng(1)
    w1 = rng.normal(size=(6, 4)).T                  # non-contiguous in numpy: stored as saved
    sd = OrderedDict([("fc1.weight", _Tensor(np.ascontiguousarray(w1))),
                      ("fc1.bias", _Tensor(rng.normal(size=4))),
                      ("fc2.weight", _Tensor(rng.normal(size=(3, 4))))])
    torch_like_save(sd, tmp_path / "s.pth", fake_torch)
    layers = load_model(tmp_path / "s.pth")
    assert [(ly.name, ly.kind, ly.weight.shape) for ly in layers] == [
        ("fc1", "linear", (4, 6)), ("fc2", "linear", (3, 4))]
    np.testing.assert_allclose(layers[0].weight, w1.astype(np.float32))


@pytest.mark.parametrize("build, message", [
    (lambda ns, r: sequential(ns, conv(ns, r.normal(size=(2, 1, 3, 3)), None), ns.Sigmoid()),
     "Sigmoid) is not supported"),
    (lambda ns, r: sequential(ns, conv(ns, r.normal(size=(2, 1, 3, 3)), None, stride=(3, 3))),
     "stride (3, 3)"),
    (lambda ns, r: sequential(ns, ns.BatchNorm2d()), "must follow a Conv2d"),
    (lambda ns, r: sequential(ns, conv(ns, r.normal(size=(2, 1, 3, 3)), None),
                              ns.MaxPool2d(kernel_size=3, stride=2, padding=0)),
     "only non-overlapping windows"),
    (lambda ns, r: sequential(ns, conv(ns, r.normal(size=(2, 1, 3, 3)), None, padding=(2, 2))),
     "padding (2, 2)"),
    (lambda ns, r: sequential(ns, conv(ns, r.normal(size=(2, 1, 5, 5)), None)), "3x3 and 1x1"),
    (lambda ns, r: OrderedDict([("0.weight", _Tensor(r.normal(size=(2, 1, 3, 3)))),
                                ("1.running_mean", _Tensor(r.normal(size=2)))]), "batch norm"),
    (lambda ns, r: OrderedDict(), "empty state_dict"),
])
def test_rejected_torch_models(tmp_path, fake_torch, build, message):
    torch_like_save(build(fake_torch, np.random.default_rng(2)), tmp_path / "bad.pt", fake_torch)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_model(tmp_path / "bad.pt")


def test_not_a_torch_archive_and_unsafe_pickle(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a PyTorch zip archive"):
        load_model(tmp_path / "junk.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(Evil(), protocol=2))
    with pytest.raises(ModelError, match="print, which a weights file does not need"):
        load_model(tmp_path / "evil.pt")


def test_real_torch_sequential_with_bn_pools_and_depthwise(tmp_path):
    """torch.save of a whole nn.Sequential (real PyTorch): BatchNorm2d folded, ReLU6, stride 2,
    depthwise, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1); the compiled golden model follows
    PyTorch's float output."""
    import torch
    from torch import nn

    from insitu.gen.compiler import compile_model, golden_layers
    from insitu.gen.network import forward_int
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6(),
                      nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.AvgPool2d(2),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.5, 2)
    torch.save(m, tmp_path / "m.pt")
    layers = load_model(tmp_path / "m.pt")
    assert [ly.kind for ly in layers] == ["conv3x3", "conv3x3", "maxpool", "conv1x1", "avgpool",
                                          "gap", "linear"]
    assert layers[0].stride == 2 and layers[0].relu6 and layers[1].depthwise
    x = np.round(np.random.default_rng(0).random((8, 1, 16, 16)) * 255)
    plan = compile_model(layers, "int8", lanes=4, input_shape=(1, 16, 16), calib=x / 255)
    y = forward_int(golden_layers(plan), x.astype(np.int64)).reshape(8, -1)
    ref = m(torch.from_numpy(x / 255).float()).detach().numpy()
    assert np.abs(y * plan.layers[-1].scale_out - ref).max() < 0.02 * np.abs(ref).max()
