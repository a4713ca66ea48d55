"""Lowering: a float :class:`~insitu.gen.graph.Graph` onto the engine's layer list.

Each engine layer is a Conv2d / Linear with what follows it fused in (an Add of a second
tensor, then ReLU or ReLU6), or a pooling layer.  Rules:

* a ReLU / ReLU6 is fused into the layer that produces its input, which must use it alone;
* an Add is fused into one of its inputs' producer: a Conv (or Linear) that the Add alone
  uses, with the other input (any earlier tensor: the block input, a shortcut conv) as its
  ``residual``; a ReLU after the Add is fused as well;
* Flatten is free (the engine keeps ``[C, H, W]`` order);
* a fused layer is emitted where its last fused node is, so the residual is ready.

The engine's MAC takes unsigned activations: every Conv / Linear / pool input must come from
a ReLU (or be the network input).  Anything that does not fit gets one line naming the node.
"""

from __future__ import annotations

from .graph import Graph
from .layer import Layer, ModelError

__all__ = ["lower"]


def _fail(n, what):
    raise ModelError(f"Node '{n.name}' ({n.op}): {what}")


def lower(graph: Graph) -> list[Layer]:
    """The engine layers of ``graph`` (topological order; the last one is the output)."""
    shapes = graph.shapes()
    alias = {graph.input: graph.input}          # tensor -> engine layer (or "input")
    signed = {graph.input: False}
    layers: dict[str, Layer] = {}
    order: list[str] = []
    pending: dict[str, Layer] = {}              # fused layers waiting for their last node
    owner: dict[str, str] = {}                  # graph tensor -> the pending/emitted layer

    def single(name):
        cons = graph.consumers(name)
        return cons[0] if len(cons) == 1 and name != graph.output else None

    def source(n, name):
        t = alias.get(name)
        if t is None:
            _fail(n, f"input '{name}' is not available here (it is fused into a later layer)")
        return "input" if t == graph.input else t

    for n in graph.nodes:
        if n.name in owner:                      # fused into a layer already started
            ly = layers[owner[n.name]]
            if n.op == "add":
                other = n.inputs[1] if owner.get(n.inputs[0]) == ly.name else n.inputs[0]
                ly.residual = source(n, other)
            elif n.op in ("relu", "relu6"):
                ly.relu, ly.relu6 = True, n.op == "relu6"
            nxt = single(n.name)
            if nxt is not None and nxt.op in ("relu", "relu6") and n.op == "add":
                owner[nxt.name] = ly.name
                continue
            alias[n.name] = ly.name
            signed[ly.name] = not ly.relu
            order.append(ly.name)
            pending.pop(ly.name, None)
            continue
        if n.op == "flatten":
            alias[n.name] = alias[n.inputs[0]]
            continue
        if n.op in ("add", "relu", "relu6"):
            _fail(n, "must follow a Conv or Linear that it alone uses (it is fused into it)")
        src = source(n, n.inputs[0])
        if signed.get(alias[n.inputs[0]], False):
            _fail(n, f"input '{n.inputs[0]}' is signed (no ReLU before it); the engine's MAC "
                     f"takes unsigned activations")
        c, *hw = shapes[n.inputs[0]]
        if n.op == "conv":
            kind = "conv3x3" if n.k == 3 else "conv1x1"
            ly = Layer(n.name, kind, n.weight, n.bias, pad=n.pad, relu=False, stride=n.stride,
                       groups=n.groups, src=src)
        elif n.op == "linear":
            ly = Layer(n.name, "linear", n.weight, n.bias, relu=False, src=src)
        elif n.op == "gap":
            ly = Layer(n.name, "gap", None, relu=True, src=src, window=hw[0], channels=c)
            if hw[0] != hw[1]:
                _fail(n, f"global pooling of a non-square {hw[0]}x{hw[1]} input is not supported")
        elif n.op in ("avgpool", "maxpool"):
            if n.stride != n.k:
                _fail(n, f"stride {n.stride} with a {n.k}x{n.k} window is not supported "
                         f"(non-overlapping windows: stride = window)")
            ly = Layer(n.name, n.op, None, relu=True, src=src, window=n.k, channels=c)
        else:
            _fail(n, "operation not supported by the engine")
        layers[ly.name] = ly
        nxt = single(n.name)
        fusable = nxt is not None and nxt.name not in owner and (
            nxt.op in ("relu", "relu6") or (nxt.op == "add" and n.op in ("conv", "linear")))
        if fusable and not ly.pool:
            owner[nxt.name] = ly.name
            owner[n.name] = ly.name
            pending[ly.name] = ly
            continue
        alias[n.name] = ly.name
        signed[ly.name] = not ly.relu and not ly.pool
        order.append(ly.name)
    if pending:
        name = next(iter(pending))
        raise ModelError(f"Layer '{name}': its fused Add / ReLU never completes")
    out = alias.get(graph.output)
    if out is None or out == graph.input:
        raise ModelError(f"Graph output '{graph.output}' is not produced by an engine layer")
    if order[-1] != out:
        raise ModelError(f"Graph output '{graph.output}' must be the last layer")
    result = [layers[name] for name in order]
    for ly in result[:-1]:
        if ly.relu is False and ly.name not in {x.residual for x in result}:
            raise ModelError(f"Layer '{ly.name}': a hidden layer without ReLU may only feed a "
                             f"residual Add")
    return result
