"""Scheme-aware fine-tuning of an imported network on PyTorch (CPU).

The network is the engine's own layer list (``gen.lower``: BatchNorm folded, ReLU / ReLU6 and
residual adds fused) run by :class:`LayerNet`, so what is trained is exactly what the compiler
compresses.  Two forms, chosen by the scheme:

* **weights, straight-through** (ASM, SmartDeal, int8): every ``project_every`` steps each
  layer's float weights are compressed by the scheme and rebuilt (``compiler.rebuilt_weights``:
  the values the hardware multiplies by); the forward pass uses those rebuilt weights and
  the gradient updates the float weights (straight-through estimator).  The tuned float
  weights are compressed again by ``insitu compile``.
* **factors** (MLG, ``Scheme.factor_qat``): the basis and coefficient codes of each layer are
  trained directly, as floats in code units rounded to their odd grids in the forward pass
  (straight-through), ``W = scale * V . (U . B)`` as ``golden.mlg_generate`` builds it.  The
  codes are saved (``codes.npz``) and compiled as they are.

Biases train along in both.  ``finetune`` is deterministic for a seed.  PyTorch is optional:
this module imports it when called.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np

from . import schemes as registry
from .compiler import rebuilt_weights
from .datasets import DataSet
from .golden import odd
from .layer import Layer, ModelError
from .torch_train import evaluate, fit
from .zoo import export_onnx

__all__ = ["LayerNet", "train_float", "finetune", "export_layers_onnx", "codes_arrays", "codes_from_arrays"]


def _torch():
    import torch
    return torch


def _layer_net_class():
    torch = _torch()
    F = torch.nn.functional

    class LayerNet(torch.nn.Module):
        """The engine's layer list as a PyTorch module (float), weights as parameters."""

        def __init__(self, layers: list[Layer]):
            super().__init__()
            self.meta = [dataclasses.replace(ly, weight=None, bias=None) for ly in layers]
            self.weights = torch.nn.ParameterList()
            self.biases = torch.nn.ParameterList()
            self.index = {}
            for i, ly in enumerate(layers):
                if ly.pool:
                    continue
                self.index[i] = len(self.weights)
                self.weights.append(torch.nn.Parameter(torch.tensor(ly.weight, dtype=torch.float32)))
                b = ly.bias if ly.bias is not None else np.zeros(ly.weight.shape[0])
                self.biases.append(torch.nn.Parameter(torch.tensor(b, dtype=torch.float32)))
            self.override = None             # a callable i -> weight tensor (QAT forms)

        def weight(self, i):
            return self.override(i) if self.override is not None else self.weights[self.index[i]]

        def _early(self):
            """``{j: i}``: layer ``i`` adds layer ``j``'s output as its residual and its own
            input is ready before ``j``; its convolution is computed just before ``j``'s, so
            that an exported graph lists it first and the importer fuses the Add into it
            again (the residual tensor stays the same one)."""
            early = {}
            names = [ly.name for ly in self.meta]
            for i, ly in enumerate(self.meta):
                if ly.residual is None or ly.residual not in names or ly.pool:
                    continue
                j = names.index(ly.residual)
                src = i - 1 if ly.src is None else (
                    -1 if ly.src == "input" else names.index(ly.src))
                if src < j and ly.src is not None:
                    early[j] = i
            return early

        def _pre(self, i, inp):
            """Layer ``i`` before its residual add and activation."""
            ly = self.meta[i]
            if ly.kind == "gap":
                return inp.mean(dim=(2, 3), keepdim=True)
            if ly.kind == "avgpool":
                return F.avg_pool2d(inp, ly.window)
            if ly.kind == "maxpool":
                return F.max_pool2d(inp, ly.window)
            j = self.index[i]
            if ly.kind == "linear":
                return F.linear(inp.flatten(1), self.weight(i), self.biases[j])
            return F.conv2d(inp, self.weight(i), self.biases[j], stride=ly.stride,
                            padding=ly.pad, groups=ly.groups)

        def forward(self, x):
            outs = {"input": x}
            prev = x
            last = len(self.meta) - 1
            early, pre = self._early(), {}
            for i, ly in enumerate(self.meta):
                if i in early:
                    k = early[i]
                    src = self.meta[k].src
                    pre[k] = self._pre(k, outs[src])
                inp = prev if ly.src is None else outs[ly.src]
                y = pre.pop(i) if i in pre else self._pre(i, inp)
                if ly.residual is not None:
                    y = y + outs[ly.residual]
                # pools pass on unsigned activations: no ReLU of their own (the importer
                # fuses a ReLU only into a Conv or Linear)
                relu = not ly.pool and (ly.relu if ly.relu is not None else i < last)
                if ly.relu6:
                    y = y.clamp(0, 6)
                elif relu:
                    y = F.relu(y)
                outs[ly.name] = y
                prev = y
            return prev

        def to_layers(self, weights=None) -> list[Layer]:
            """The layer list with this module's weights (or ``weights[i]``) and biases."""
            out = []
            for i, ly in enumerate(self.meta):
                if ly.pool:
                    out.append(copy.deepcopy(ly))
                    continue
                j = self.index[i]
                w = (weights[i] if weights is not None
                     else self.weights[j].detach().double().numpy())
                out.append(dataclasses.replace(ly, weight=np.array(w, dtype=np.float64),
                                               bias=self.biases[j].detach().double().numpy()))
            return out
    return LayerNet


def LayerNet(layers: list[Layer]):
    """A PyTorch module running ``layers`` (see the module docstring)."""
    return _layer_net_class()(layers)


def export_layers_onnx(layers: list[Layer], input_shape, path) -> None:
    """Write ``layers`` as an ONNX file that ``insitu.gen.onnx_import`` lowers back to the
    same layer list (Conv, Gemm, Relu, Clip, Add, pools)."""
    export_onnx(LayerNet(layers), input_shape, path)


# -- the weight form ------------------------------------------------------------------------
def _weight_ste(net, scheme: str, knobs, every: int):
    torch = _torch()
    sch = registry.get(scheme)
    cfg = sch.config(knobs or {})
    state = {"step": 0, "P": {}}

    def refresh():
        layers = net.to_layers()
        comp = [None if ly.pool else sch.compress(ly, cfg) for ly in layers]
        rebuilt = rebuilt_weights(layers, comp, scheme)
        state["P"] = {i: torch.tensor(w, dtype=torch.float32) for i, w in enumerate(rebuilt)
                      if w is not None}

    def weight(i):
        w = net.weights[net.index[i]]
        return w + (state["P"][i] - w).detach()

    def before_step():
        if state["step"] % every == 0:
            refresh()
        state["step"] += 1

    refresh()
    with torch.no_grad():
        # start from the representable point: the float weights move away from it only by
        # the steps taken, so each re-projection stays near the last
        for i, P in state["P"].items():
            net.weights[net.index[i]].copy_(P)
    refresh()
    net.override = weight
    return before_step, refresh


# -- the factor form (MLG) ------------------------------------------------------------------
def _odd_round(t, q: int):
    """Nearest odd integer in ``[-(2**q - 1), 2**q - 1]``, straight-through."""
    top = (1 << q) - 1
    r = (2 * _torch().round((t + top) / 2) - top).clamp(-top, top)
    return t + (r - t).detach()


class _Factors:
    """The factor codes of every weighted layer as trainable floats (code units)."""

    def __init__(self, compressed):
        torch = _torch()
        self.comp, self.params = compressed, {}
        for i, c in enumerate(compressed):
            if c is None:
                continue
            cfg = c.config
            p = {"B": odd(c.basis, cfg.qb)}
            if c.coeff_in is not None:
                p["U"] = odd(c.coeff_in, cfg.qu)
            if c.coeff_out is not None:
                p["V"] = odd(c.coeff_out, cfg.qv)
            self.params[i] = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float32))
                              for k, v in p.items()}

    def quantised(self, i):
        c, p = self.comp[i], self.params[i]
        cfg = c.config
        B = _odd_round(p["B"], cfg.qb)
        U = _odd_round(p["U"], cfg.qu) if "U" in p else None
        V = _odd_round(p["V"], cfg.qv) if "V" in p else None
        return B, U, V

    def weight(self, i):
        torch = _torch()
        c = self.comp[i]
        cin, k2 = c.shape[1], c.k2
        B, U, V = self.quantised(i)
        W1 = (torch.einsum("ocb,obt->oct", U, B) if U is not None
              else B.reshape(B.shape[0], cin, k2)).reshape(-1, cin * k2)
        W = V @ W1 if V is not None else W1
        return (W * c.scale).reshape(c.shape)

    def codes(self) -> list:
        out = []
        for i, c in enumerate(self.comp):
            if c is None:
                out.append(None)
                continue
            cfg = c.config
            B, U, V = (None if t is None else t.detach().double().numpy().round().astype(np.int64)
                       for t in self.quantised(i))
            code = lambda v, q: ((v + (1 << q) - 1) // 2).astype(np.int64)   # noqa: E731
            out.append(dataclasses.replace(
                c, basis=code(B, cfg.qb), coeff_in=None if U is None else code(U, cfg.qu),
                coeff_out=None if V is None else code(V, cfg.qv)))
        return out


def codes_arrays(scheme: str, compressed) -> dict:
    """The codes of every weighted layer as ``{"<i>.<name>": array}`` (``codes.npz``)."""
    sch = registry.get(scheme)
    return {f"{i}.{k}": v for i, c in enumerate(compressed) if c is not None
            for k, v in sch.codes_arrays(c).items()}


def codes_from_arrays(layers: list[Layer], scheme: str, knobs, z) -> list:
    """Compressed layers (pools: ``None``) from :func:`codes_arrays`' output, each matched to
    the layer of ``layers`` whose weights its codes rebuild (an ONNX round trip may list
    the layers of a graph in another order)."""
    sch = registry.get(scheme)
    cfg = sch.config(knobs or {})
    entries: dict[int, dict] = {}
    for key in z.files:
        idx, name = key.split(".", 1)
        entries.setdefault(int(idx), {})[name] = z[key]
    out: list = [None] * len(layers)
    for idx in sorted(entries):
        for j, ly in enumerate(layers):
            if ly.pool or out[j] is not None:
                continue
            try:
                c = sch.codes_from_arrays(ly, cfg, entries[idx])
                w = c.weight_int() * c.scale
            except (ValueError, IndexError, KeyError):
                continue
            if w.shape == ly.weight.shape and np.allclose(
                    w, ly.weight, rtol=1e-5, atol=1e-6 * float(np.abs(w).max(initial=1))):
                out[j] = c
                break
        else:
            raise ModelError(f"codes entry {idx} rebuilds the weights of no layer of the model")
    missing = [ly.name for ly, c in zip(layers, out) if not ly.pool and c is None]
    if missing:
        raise ModelError(f"the codes have no entry for layer '{missing[0]}'")
    return out


def train_float(layers: list[Layer], data: DataSet, *, epochs: int, seed: int = 0,
                lr: float = 3e-3, batch: int = 64, size: int | None = None,
                augment: bool = False) -> list[Layer]:
    """Train ``layers`` (their initial weights) in float with Adam; the trained layers."""
    torch = _torch()
    torch.manual_seed(seed)
    net = LayerNet(layers)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    fit(net, data, opt, epochs=epochs, seed=seed, batch=batch, size=size, augment=augment)
    return net.to_layers()


def finetune(layers: list[Layer], data: DataSet, scheme: str, *, knobs=None,
             epochs: int = 2, seed: int = 0, lr: float | None = None, batch: int = 128,
             limit: int | None = None, project_every: int = 1, progress=None,
             optimizer: str = "sgd", size: int | None = 32, augment: bool = True):
    """Fine-tune ``layers`` for ``scheme``; ``(layers, compressed or None, history)``.

    ``compressed`` is the trained codes (factor form) or None (weight form: compile
    compresses the returned weights).  ``history`` has the test accuracy of the scheme's
    weights before and after each epoch.  The weight form uses SGD with momentum (or
    ``optimizer="adam"``), the factor form Adam; ``size`` / ``augment`` as in ``fit``."""
    torch = _torch()
    torch.manual_seed(seed)
    sch = registry.get(scheme)
    net = LayerNet(layers)
    say = progress or (lambda msg: None)
    if sch.factor_qat:
        cfg = sch.config(knobs or {})
        comp = [None if ly.pool else sch.compress(ly, cfg) for ly in layers]
        fac = _Factors(comp)
        net.override = fac.weight
        params = [{"params": [p for d in fac.params.values() for p in d.values()],
                   "lr": lr or 0.02},
                  {"params": list(net.biases), "lr": 1e-3}]
        opt = torch.optim.Adam(params)
        before = refresh = None
    else:
        before, refresh = _weight_ste(net, scheme, knobs, project_every)
        opt = (torch.optim.Adam(net.parameters(), lr=lr or 1e-3) if optimizer == "adam" else
               torch.optim.SGD(net.parameters(), lr=lr or 0.001, momentum=0.9, nesterov=True))
    t0 = time.monotonic()
    acc0 = evaluate(net, data.x_test, data.y_test, size=size)
    history = [{"epoch": 0, "test_accuracy": acc0}]
    say(f"{scheme}: test accuracy before fine-tuning {100 * acc0:.2f}% "
        f"({time.monotonic() - t0:.0f} s)")
    history += fit(net, data, opt, epochs=epochs, seed=seed, batch=batch, limit=limit,
                   before_step=before, before_eval=refresh, cosine=True, progress=say,
                   size=size, augment=augment)
    if sch.factor_qat:
        codes = fac.codes()
        tuned = net.to_layers([None if c is None else (c.weight_int() * c.scale)
                               for c in codes])
        return tuned, codes, history
    net.override = None
    return net.to_layers(), None, history
