"""The handwritten-digits models of the small demo: data, topologies and float inference.

The 8x8 digits set ships with scikit-learn (no download).  ``ARCHS`` are a small CNN and an
MLP (chains of Conv2d 3x3 / Linear with ReLU between them and an implied Flatten); they are
trained on PyTorch like the real networks (``gen.torch_qat.train_float`` and
``finetune``).  ``predict`` / ``accuracy`` run a float model in numpy.
"""

from __future__ import annotations

import numpy as np

from .datasets import DataSet
from .model import Layer
from .network import im2col
from .plan import layer_shapes

__all__ = ["ARCHS", "load_digits_split", "init_layers", "accuracy", "predict", "as_dataset"]

# name, kind, cin, cout, pad
ARCHS = {
    "cnn": {"input_shape": (1, 8, 8),
            "layers": [("conv1", "conv3x3", 1, 8, 1), ("conv2", "conv3x3", 8, 8, 0),
                       ("fc", "linear", 8 * 6 * 6, 10, 0)]},
    "mlp": {"input_shape": (64, 1, 1),
            "layers": [("fc1", "linear", 64, 32, 0), ("fc2", "linear", 32, 10, 0)]},
}


def load_digits_split(test_frac: float = 0.2, seed: int = 0):
    """``(x_train, y_train, x_test, y_test)``; pixels scaled to [0, 1] (0..16 / 16)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = d.data.astype(np.float64) / 16.0
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_frac))
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


def init_layers(arch: str, seed: int = 0) -> list[Layer]:
    rng = np.random.default_rng(seed)
    out = []
    spec = ARCHS[arch]
    for i, (name, kind, cin, cout, pad) in enumerate(spec["layers"]):
        k = 3 if kind == "conv3x3" else 1
        fan_in = cin * k * k
        shape = (cout, cin, k, k) if kind != "linear" else (cout, cin)
        w = rng.normal(0, np.sqrt(2.0 / fan_in), size=shape)
        out.append(Layer(name, kind, w, np.zeros(cout), pad, None))
    return out


def _shapes(layers: list[Layer], input_shape):
    """Each layer's input ``(C, H, W)`` (Linear: ``(features, 1, 1)``)."""
    return [(cin, h, w) for cin, h, w, *_ in layer_shapes(layers, input_shape)]


def _forward(layers, weights, x, shapes):
    n = len(x)
    for i, (ly, W) in enumerate(zip(layers, weights)):
        c, h, w = shapes[i]
        cols = im2col(x.reshape(n, c, h, w), ly.k, ly.pad)   # [N, P, T]
        z = cols @ W.reshape(ly.cout, -1).T + ly.bias        # [N, P, Cout]
        a = np.maximum(z, 0) if i < len(layers) - 1 else z
        oh, ow = h + 2 * ly.pad - ly.k + 1, w + 2 * ly.pad - ly.k + 1
        x = a.transpose(0, 2, 1).reshape(n, ly.cout, oh, ow)
    return x.reshape(n, -1)


def predict(layers, x, input_shape, weights=None) -> np.ndarray:
    weights = weights if weights is not None else [ly.weight for ly in layers]
    return _forward(layers, weights, np.asarray(x, dtype=np.float64),
                    _shapes(layers, input_shape))


def accuracy(layers, x, y, input_shape, weights=None) -> float:
    return float(np.mean(np.argmax(predict(layers, x, input_shape, weights), axis=1) == y))


def as_dataset(data, arch: str) -> DataSet:
    """``load_digits_split()``'s arrays as a :class:`DataSet` of u8 ``[N, C, H, W]`` images
    in the model's input shape (``round(x * 255)``, as the engine takes them)."""
    xtr, ytr, xte, yte = data
    shape = ARCHS[arch]["input_shape"]
    u8 = lambda x: np.round(x * 255).astype(np.uint8).reshape((-1,) + shape)   # noqa: E731
    return DataSet("digits", u8(xtr), ytr, u8(xte), yte)
