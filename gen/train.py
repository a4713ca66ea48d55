"""Small numpy trainer for the demo: the handwritten-digits set that ships with scikit-learn.

Models are chains of Conv2d (3x3, stride 1, padding 0/1) / Linear layers with ReLU between
them and an implied Flatten, trained with Adam on softmax cross-entropy, deterministic for a
seed.  Quantisation-aware fine-tuning uses a straight-through estimator: the forward pass uses
the scheme's rebuilt weights (``project``), the gradient updates the float weights.
"""

from __future__ import annotations

import numpy as np

from .golden import odd
from .model import Layer
from .network import im2col
from .plan import layer_shapes

__all__ = ["ARCHS", "load_digits_split", "init_layers", "train", "accuracy", "predict",
           "train_mlg_factors"]

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
    caches = []
    n = len(x)
    for i, (ly, W) in enumerate(zip(layers, weights)):
        c, h, w = shapes[i]
        x4 = x.reshape(n, c, h, w)
        cols = im2col(x4, ly.k, ly.pad)                      # [N, P, T]
        z = cols @ W.reshape(ly.cout, -1).T + ly.bias        # [N, P, Cout]
        relu = i < len(layers) - 1
        a = np.maximum(z, 0) if relu else z
        caches.append((cols, z, relu, (c, h, w)))
        oh, ow = h + 2 * ly.pad - ly.k + 1, w + 2 * ly.pad - ly.k + 1
        x = a.transpose(0, 2, 1).reshape(n, ly.cout, oh, ow)
    return x.reshape(n, -1), caches


def _col2im(dcols, shape, k, pad):
    n = dcols.shape[0]
    c, h, w = shape
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    d = dcols.reshape(n, oh, ow, c, k, k)
    dx = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    for kh in range(k):
        for kw in range(k):
            dx[:, :, kh:kh + oh, kw:kw + ow] += d[:, :, :, :, kh, kw].transpose(0, 3, 1, 2)
    return dx[:, :, pad:pad + h, pad:pad + w] if pad else dx


def _backward(layers, weights, caches, dout):
    grads = [None] * len(layers)
    n = dout.shape[0]
    d = dout
    for i in range(len(layers) - 1, -1, -1):
        ly, W = layers[i], weights[i]
        cols, z, relu, shape = caches[i]
        P = cols.shape[1]
        dz = d.reshape(n, ly.cout, P).transpose(0, 2, 1)     # [N, P, Cout]
        if relu:
            dz = dz * (z > 0)
        gW = np.einsum("npo,npt->ot", dz, cols).reshape(W.shape)
        gb = dz.sum(axis=(0, 1))
        grads[i] = (gW, gb)
        if i:
            dcols = dz @ W.reshape(ly.cout, -1)
            d = _col2im(dcols, shape, ly.k, ly.pad)
    return grads


def _ce_grads(layers, weights, xb, yb, shapes):
    """``[(dW, db)]`` per layer of the mean softmax cross-entropy of a batch."""
    logits, caches = _forward(layers, weights, xb, shapes)
    logits = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=1, keepdims=True)
    prob[np.arange(len(yb)), yb] -= 1
    return _backward(layers, weights, caches, prob / len(yb))


def predict(layers, x, input_shape, weights=None) -> np.ndarray:
    weights = weights if weights is not None else [ly.weight for ly in layers]
    logits, _ = _forward(layers, weights, np.asarray(x, dtype=np.float64),
                         _shapes(layers, input_shape))
    return logits


def accuracy(layers, x, y, input_shape, weights=None) -> float:
    return float(np.mean(np.argmax(predict(layers, x, input_shape, weights), axis=1) == y))


def train(layers: list[Layer], x, y, input_shape, *, epochs=30, lr=3e-3, batch=64, seed=0,
          project=None, project_every=1, progress=None) -> list[Layer]:
    """Adam on cross-entropy; ``project(layers) -> weights`` (QAT, straight-through)."""
    rng = np.random.default_rng(seed)
    shapes = _shapes(layers, input_shape)
    params = [p for ly in layers for p in (ly.weight, ly.bias)]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    step = 0
    weights = None
    for ep in range(epochs):
        if project is not None and ep % project_every == 0:
            weights = project(layers)
        perm = rng.permutation(len(x))
        for s in range(0, len(x), batch):
            idx = perm[s:s + batch]
            ws = weights if weights is not None else [ly.weight for ly in layers]
            grads = _ce_grads(layers, ws, x[idx], y[idx], shapes)
            step += 1
            flat = [g for pair in grads for g in pair]
            for j, (p, g) in enumerate(zip(params, flat)):
                m1[j] = b1 * m1[j] + (1 - b1) * g
                m2[j] = b2 * m2[j] + (1 - b2) * g * g
                p -= lr * (m1[j] / (1 - b1 ** step)) / (np.sqrt(m2[j] / (1 - b2 ** step)) + eps)
        if progress:
            progress(ep + 1, epochs)
    return layers


def _odd_q(x, q):
    """Nearest odd integer in [-(2**q - 1), 2**q - 1] (MLG code values)."""
    top = (1 << q) - 1
    return np.clip(2 * np.round((x + top) / 2) - top, -top, top)


def train_mlg_factors(layers: list[Layer], compressed, x, y, input_shape, *, epochs=20, lr=0.02,
                      batch=64, seed=0, progress=None):
    """Quantisation-aware training of MLG factors (not of the weights they approximate).

    Each factor is kept as a float in code units (``odd(code)``), quantised to the odd grid in
    the forward pass (straight-through in the backward pass); ``W = scale * V . (U . Wb)``
    exactly as ``gen.golden.mlg_generate`` builds it.  Biases train along.  Returns new
    ``MlgLayer`` objects (codes from the trained factors, scales unchanged) and the layers with
    their trained biases.
    """
    import copy

    rng = np.random.default_rng(seed)
    shapes = _shapes(layers, input_shape)
    layers = copy.deepcopy(layers)
    facs = []
    for c in compressed:
        cfg = c.config
        f = {"B": odd(c.basis, cfg.qb).astype(np.float64),
             "U": None if c.coeff_in is None else odd(c.coeff_in, cfg.qu).astype(np.float64),
             "V": None if c.coeff_out is None else odd(c.coeff_out, cfg.qv).astype(np.float64)}
        facs.append(f)

    def build(i):
        c, f = compressed[i], facs[i]
        cfg = c.config
        cin, k2 = c.shape[1], c.k2
        Bq = _odd_q(f["B"], cfg.qb)
        Uq = None if f["U"] is None else _odd_q(f["U"], cfg.qu)
        Vq = None if f["V"] is None else _odd_q(f["V"], cfg.qv)
        W1 = (np.einsum("ocb,obt->oct", Uq, Bq) if Uq is not None
              else Bq.reshape(Bq.shape[0], cin, k2)).reshape(-1, cin * k2)
        W = Vq @ W1 if Vq is not None else W1
        return (W * c.scale).reshape(c.shape), (Bq, Uq, Vq, W1)

    def grads_of(i, gW, parts):
        c = compressed[i]
        Bq, Uq, Vq, W1 = parts
        cin, k2 = c.shape[1], c.k2
        gW = gW.reshape(c.shape[0], -1) * c.scale
        g = {}
        if Vq is not None:
            g["V"] = gW @ W1.T
            gW1 = Vq.T @ gW
        else:
            gW1 = gW
        if Uq is not None:
            gW1 = gW1.reshape(-1, cin, k2)
            g["U"] = np.einsum("oct,obt->ocb", gW1, Bq)
            g["B"] = np.einsum("oct,ocb->obt", gW1, Uq)
        else:
            g["B"] = gW1.reshape(Bq.shape)
        return g

    params = [(i, k) for i, f in enumerate(facs) for k in ("B", "U", "V") if f[k] is not None]
    m1 = {p: np.zeros_like(facs[p[0]][p[1]]) for p in params}
    m2 = {p: np.zeros_like(facs[p[0]][p[1]]) for p in params}
    bm1 = [np.zeros_like(ly.bias) for ly in layers]
    bm2 = [np.zeros_like(ly.bias) for ly in layers]
    b1, b2, eps, step = 0.9, 0.999, 1e-8, 0
    for ep in range(epochs):
        perm = rng.permutation(len(x))
        for s in range(0, len(x), batch):
            idx = perm[s:s + batch]
            built = [build(i) for i in range(len(layers))]
            grads = _ce_grads(layers, [w for w, _ in built], x[idx], y[idx], shapes)
            step += 1
            corr1, corr2 = 1 - b1 ** step, 1 - b2 ** step
            for i, (gW, gb) in enumerate(grads):
                for k, g in grads_of(i, gW, built[i][1]).items():
                    p = (i, k)
                    m1[p] = b1 * m1[p] + (1 - b1) * g
                    m2[p] = b2 * m2[p] + (1 - b2) * g * g
                    facs[i][k] -= lr * (m1[p] / corr1) / (np.sqrt(m2[p] / corr2) + eps)
                bm1[i] = b1 * bm1[i] + (1 - b1) * gb
                bm2[i] = b2 * bm2[i] + (1 - b2) * gb * gb
                layers[i].bias -= 1e-3 * (bm1[i] / corr1) / (np.sqrt(bm2[i] / corr2) + eps)
        if progress:
            progress(ep + 1, epochs)
    out = []
    for i, c in enumerate(compressed):
        Bq, Uq, Vq, _ = build(i)[1]
        out.append(_with_codes(c, Bq, Uq, Vq))
        layers[i].weight = build(i)[0]
    return layers, out


def _with_codes(c, Bq, Uq, Vq):
    import dataclasses
    cfg = c.config
    code = lambda v, q: ((v + (1 << q) - 1) // 2).astype(np.int64)
    return dataclasses.replace(c, basis=code(Bq, cfg.qb),
                               coeff_in=None if Uq is None else code(Uq, cfg.qu),
                               coeff_out=None if Vq is None else code(Vq, cfg.qv))
