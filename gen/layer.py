"""The float layer every importer produces and every compressor starts from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ModelError", "KINDS", "POOLS", "Layer", "kind_of", "check_layer"]


class ModelError(ValueError):
    """A model file that cannot be used; the message is one sentence naming the problem."""


KINDS = ("linear", "conv3x3", "conv1x1")
#: Layers without stored weights (the engine applies unit weights or a maximum).
POOLS = ("avgpool", "gap", "maxpool")


@dataclass
class Layer:
    """One engine layer: a Linear or Conv2d (with its activation and an optional residual add
    fused in), or a pooling layer.

    ``src`` names the layer whose output it reads (``"input"``: the network input; ``None``:
    the previous layer in the list).  ``residual`` names a tensor of the output's shape added
    before the activation, with its own scale.  ``groups`` is 1 or the channel count
    (depthwise, ``weight [C, 1, k, k]``).  Pools have no weight: ``channels`` and ``window``
    (``gap``: the whole image)."""
    name: str
    kind: str
    weight: np.ndarray | None      # float64: [out, in] or [out, in/groups, k, k]; None: pools
    bias: np.ndarray | None = None
    pad: int = 0
    relu: bool | None = None       # None: the default (ReLU after every layer but the last)
    stride: int = 1
    groups: int = 1
    relu6: bool = False
    src: str | None = None
    residual: str | None = None
    window: int = 0
    channels: int = 0

    @property
    def pool(self) -> bool:
        return self.kind in POOLS

    @property
    def depthwise(self) -> bool:
        return self.groups > 1

    @property
    def cout(self) -> int:
        return self.channels if self.pool else self.weight.shape[0]

    @property
    def cin(self) -> int:
        """Input channels (all of them, also for a depthwise layer)."""
        if self.pool:
            return self.channels
        return self.weight.shape[1] * self.groups

    @property
    def k(self) -> int:
        if self.pool:
            return self.window
        return 1 if self.kind == "linear" else self.weight.shape[2]


def kind_of(name: str, w: np.ndarray, given: str | None) -> str:
    if w.ndim == 2:
        kind = "linear"
    elif w.ndim == 4 and w.shape[2] == w.shape[3] and w.shape[2] in (1, 3):
        kind = f"conv{w.shape[2]}x{w.shape[2]}"
    elif w.ndim == 4:
        raise ModelError(f"Layer '{name}': only 3x3 and 1x1 convolutions are supported, "
                         f"not kernel {w.shape[2]}x{w.shape[3]}")
    else:
        raise ModelError(f"Layer '{name}': weight must be 2-D (Linear) or 4-D (Conv2d), "
                         f"not shape {tuple(w.shape)}")
    if given is not None and given != kind:
        raise ModelError(f"Layer '{name}': kind '{given}' does not match weight shape "
                         f"{tuple(w.shape)}")
    return kind


def check_layer(layer: Layer) -> Layer:
    if layer.pool:
        return layer
    w = layer.weight
    if not np.all(np.isfinite(w)):
        raise ModelError(f"Layer '{layer.name}': weight contains NaN or inf")
    if min(w.shape) == 0:
        raise ModelError(f"Layer '{layer.name}': weight has an empty dimension {tuple(w.shape)}")
    if layer.bias is not None:
        if layer.bias.shape != (w.shape[0],):
            raise ModelError(f"Layer '{layer.name}': bias shape {tuple(layer.bias.shape)} does not "
                             f"match {w.shape[0]} outputs")
        if not np.all(np.isfinite(layer.bias)):
            raise ModelError(f"Layer '{layer.name}': bias contains NaN or inf")
    return layer
