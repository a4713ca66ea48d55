"""Training the real networks on PyTorch (CPU), reproducibly from a seed.

``train(model, data, epochs=..., seed=...)`` trains a :mod:`insitu.gen.zoo` topology on a
:class:`~insitu.gen.datasets.DataSet` (images zero-padded to the model's input size, scaled
to [0, 1] as the engine's u8 inputs are) with SGD + momentum, a cosine learning rate and
random crops / flips, and returns the module and its history.  The same seed, data and
PyTorch build give the same weights (deterministic algorithms, one thread order).

PyTorch is optional: this module imports it when called.
"""

from __future__ import annotations

import time

import numpy as np

from .datasets import DataSet, pad_to
from .zoo import MODELS, dscnn, resnet8

__all__ = ["train", "fit", "evaluate", "INPUT_SIZE", "build"]

INPUT_SIZE = 32


def build(name: str, in_channels: int = 1, classes: int = 10):
    """A fresh module of zoo topology ``name``."""
    if name not in MODELS:
        raise ValueError(f"Unknown model '{name}' (models: {', '.join(MODELS)})")
    return {"resnet8": resnet8, "dscnn": dscnn}[name](in_channels=in_channels, classes=classes)


def _prepare(x: np.ndarray, size: int | None = INPUT_SIZE) -> np.ndarray:
    """u8 ``[N, C, H, W]`` -> float32 in [0, 1], padded to ``size`` (None: as it is)."""
    return (pad_to(x, size) if size else x).astype(np.float32) / 255.0


def evaluate(module, x: np.ndarray, y: np.ndarray, batch: int = 1000,
             size: int | None = INPUT_SIZE) -> float:
    """Top-1 accuracy of ``module`` on u8 images ``x``."""
    import torch
    module.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(_prepare(x[i:i + batch], size))
            hits += int((module(xb).argmax(1).numpy() == y[i:i + batch]).sum())
    return hits / len(x)


def train(name: str, data: DataSet, *, epochs: int = 12, seed: int = 0, batch: int = 128,
          lr: float = 0.1, limit: int | None = None, progress=None):
    """Train topology ``name`` on ``data``; returns ``(module, history)``."""
    import torch

    torch.manual_seed(seed)
    module = build(name, data.shape[0], data.classes)
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4,
                          nesterov=True)
    n = min(limit or len(data.x_train), len(data.x_train))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr,
                                                total_steps=epochs * -(-n // batch))
    history = fit(module, data, opt, epochs=epochs, seed=seed, batch=batch, limit=limit,
                  sched=sched, progress=progress)
    return module.eval(), history


def fit(module, data: DataSet, opt, *, epochs: int, seed: int = 0, batch: int = 128,
        limit: int | None = None, sched=None, cosine: bool = False, before_step=None,
        before_eval=None, progress=None, size: int | None = INPUT_SIZE,
        augment: bool = True) -> list[dict]:
    """Cross-entropy epochs of ``module`` with optimiser ``opt`` (and ``sched``, or a cosine
    decay with ``cosine``) on images padded to ``size`` (None: as they are), with
    ``augment`` random 2-pixel shifts and flips; the test accuracy after each epoch.  ``before_step()`` runs before every step (e.g. a QAT projection),
    ``before_eval()`` before each evaluation.  Deterministic for a seed."""
    import torch
    import torch.nn.functional as F

    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    x_tr, y_tr = data.x_train, data.y_train
    if limit:
        x_tr, y_tr = x_tr[:limit], y_tr[:limit]
    xt = torch.from_numpy(_prepare(x_tr, size))
    yt = torch.from_numpy(y_tr)
    if cosine and sched is None:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * -(-len(xt) // batch))
    history = []
    say = progress or (lambda msg: None)
    for ep in range(epochs):
        module.train()
        t0 = time.monotonic()
        order = torch.from_numpy(rng.permutation(len(xt)))
        loss_sum = 0.0
        for i in range(0, len(xt), batch):
            idx = order[i:i + batch]
            xb = xt[idx]
            if augment:
                # random shifts of up to 2 pixels (the padding) and flips
                dx, dy = (int(v) for v in rng.integers(-2, 3, 2))
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
                if rng.random() < 0.5:
                    xb = xb.flip(3)
            if before_step:
                before_step()
            loss = F.cross_entropy(module(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += float(loss.detach()) * len(idx)
        if before_eval:
            before_eval()
        acc = evaluate(module, data.x_test, data.y_test, size=size)
        history.append({"epoch": ep + 1, "loss": loss_sum / len(xt), "test_accuracy": acc,
                        "seconds": round(time.monotonic() - t0, 1)})
        say(f"epoch {ep + 1}/{epochs}: loss {loss_sum / len(xt):.4f}, test accuracy "
            f"{100 * acc:.2f}% ({time.monotonic() - t0:.0f} s)")
    return history
