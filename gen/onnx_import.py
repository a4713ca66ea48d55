"""ONNX import: the graphs ``torch.onnx.export`` writes for Conv/BN/ReLU/pool/Add/Linear
networks, as a :class:`~insitu.gen.graph.Graph`.

Accepted operations: Conv (``group``, ``strides``, ``pads``, ``auto_pad``), BatchNormalization
(folded into the Conv or Gemm before it), Relu, Clip (0..6: ReLU6; 0..inf: ReLU), Add (of two
tensors, or of a constant bias after MatMul), MaxPool, AveragePool, GlobalAveragePool,
ReduceMean over the spatial axes (global average pooling),
Flatten, Reshape to ``[N, -1]``, Gemm, MatMul (+ Add), Identity, Dropout and Constant.  The
input shape is read from the file (the batch dimension may be symbolic).  Anything else is
rejected with one line naming the node, the operation and the attribute.

``onnx`` is an optional dependency, imported when a file is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .graph import Graph, Node
from .layer import ModelError

__all__ = ["load_onnx", "graph_from_onnx"]


def load_onnx(path) -> Graph:
    """The :class:`Graph` of an ``.onnx`` file."""
    try:
        import onnx
    except ImportError:
        raise ModelError("Reading ONNX files needs the 'onnx' package (pip install onnx, or "
                         "'make setup')") from None
    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:                              # protobuf's DecodeError and friends
        raise ModelError(f"Model file '{path}' is not a readable ONNX file ({exc})") from None
    return graph_from_onnx(model)


class _Importer:
    def __init__(self, model):
        from onnx import numpy_helper
        self._np = numpy_helper
        g = model.graph
        self.const = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
        self.alias = {}                 # ONNX tensor name -> graph tensor name
        self.nodes = []
        self.by_name = {}
        inputs = [i for i in g.input if i.name not in self.const]
        if len(inputs) != 1:
            raise ModelError(f"ONNX graph has {len(inputs)} inputs; one image input is supported")
        self.input = inputs[0].name
        dims = inputs[0].type.tensor_type.shape.dim
        shape = []
        for i, d in enumerate(dims[1:], 1):
            if not d.HasField("dim_value") or d.dim_value < 1:
                raise ModelError(f"ONNX input '{self.input}': dimension {i} is dynamic "
                                 f"('{d.dim_param}'); export with a fixed input shape")
            shape.append(d.dim_value)
        if len(shape) not in (1, 3):
            raise ModelError(f"ONNX input '{self.input}': shape {shape} is not [C, H, W] or [F]")
        self.input_shape = tuple(shape)
        self.alias[self.input] = self.input
        self.graph_nodes = list(g.node)
        self.outputs = [o.name for o in g.output]

    # -- helpers ---------------------------------------------------------------------------
    def fail(self, nd, what):
        raise ModelError(f"ONNX node '{nd.name or nd.output[0]}' ({nd.op_type}): {what}")

    def attrs(self, nd) -> dict:
        from onnx import helper
        return {a.name: helper.get_attribute_value(a) for a in nd.attribute}

    def value(self, nd, name):
        """A constant input (initializer or Constant output)."""
        if name not in self.const:
            self.fail(nd, f"input '{name}' must be a constant")
        return self.const[name]

    def src(self, nd, name):
        if name not in self.alias:
            self.fail(nd, f"input '{name}' is not produced by a supported node")
        return self.alias[name]

    def add(self, nd, node: Node):
        node.name = self._unique(node.name, node.op)
        self.nodes.append(node)
        self.by_name[node.name] = node
        self.alias[nd.output[0]] = node.name

    def _unique(self, name, op="node"):
        # "/stack2/conv1/Conv" (torch.onnx's scope/op names) -> "stack2.conv1"; "/0/Conv" -> "conv0"
        parts = [p for p in name.split("/") if p]
        if len(parts) > 1:
            parts = parts[:-1]
        name = ".".join(parts) or op
        if name[0].isdigit():
            name = f"{op}{name}"
        base, i = name, 1
        while name in self.by_name or name == self.input:
            i += 1
            name = f"{base}_{i}"
        return name

    def uses(self, tensor) -> int:
        return sum(tensor in nd.input for nd in self.graph_nodes) + (tensor in self.outputs)

    # -- operations ------------------------------------------------------------------------
    def run(self) -> Graph:
        for nd in self.graph_nodes:
            handler = getattr(self, f"op_{nd.op_type}", None)
            if handler is None:
                self.fail(nd, "operation not supported (supported: Conv, BatchNormalization, "
                              "Relu, Clip, Add, MaxPool, AveragePool, GlobalAveragePool, ReduceMean, "
                              "Flatten, Reshape, Gemm, MatMul)")
            handler(nd, self.attrs(nd))
        if len(self.outputs) != 1 or self.outputs[0] not in self.alias:
            raise ModelError(f"ONNX graph outputs {self.outputs}: one output produced by a "
                             f"supported node is needed")
        graph = Graph(self.input, self.input_shape, self.nodes, self.alias[self.outputs[0]])
        graph.shapes()
        return graph

    def op_Constant(self, nd, a):
        if "value" not in a:
            self.fail(nd, f"attribute {sorted(a)} is not supported (only 'value')")
        self.const[nd.output[0]] = self._np.to_array(a["value"]).astype(np.float64)

    def op_Identity(self, nd, a):
        if nd.input[0] in self.const:
            self.const[nd.output[0]] = self.const[nd.input[0]]
        else:
            self.alias[nd.output[0]] = self.src(nd, nd.input[0])

    op_Dropout = op_Identity

    def _window(self, nd, a, kernel):
        strides = list(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            self.fail(nd, f"attribute 'dilations' = {list(a['dilations'])} is not supported (1)")
        if len(set(strides)) != 1 or strides[0] not in (1, 2):
            self.fail(nd, f"attribute 'strides' = {strides} is not supported (1 or 2)")
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            if strides[0] != 1 or kernel % 2 == 0:
                self.fail(nd, f"attribute 'auto_pad' = {auto} is supported only for stride 1 "
                              f"and odd kernels")
            pads = [kernel // 2] * 4
        elif auto == "VALID":
            pads = [0] * 4
        elif auto != "NOTSET":
            self.fail(nd, f"attribute 'auto_pad' = {auto} is not supported")
        if len(set(pads)) != 1:
            self.fail(nd, f"attribute 'pads' = {pads} is asymmetric (not supported)")
        if pads[0] not in (0, 1):
            self.fail(nd, f"attribute 'pads' = {pads} is not supported (0 or 1)")
        return strides[0], pads[0]

    def op_Conv(self, nd, a):
        w = self.value(nd, nd.input[1])
        b = self.value(nd, nd.input[2]) if len(nd.input) > 2 and nd.input[2] else None
        if w.ndim != 4 or w.shape[2] != w.shape[3] or w.shape[2] not in (1, 3):
            self.fail(nd, f"attribute 'kernel_shape' = {list(w.shape[2:])} is not supported "
                          f"(1x1 or 3x3)")
        stride, pad = self._window(nd, a, w.shape[2])
        self.add(nd, Node(nd.name or nd.output[0], "conv", (self.src(nd, nd.input[0]),),
                          weight=w, bias=b, k=w.shape[2], stride=stride, pad=pad,
                          groups=int(a.get("group", 1))))

    def op_BatchNormalization(self, nd, a):
        prev = self.by_name.get(self.alias.get(nd.input[0]))
        if prev is None or prev.op not in ("conv", "linear") or self.uses(nd.input[0]) != 1:
            self.fail(nd, "BatchNormalization must follow a Conv or Gemm whose output it alone "
                          "uses (it is folded into that layer)")
        scale, beta, mean, var = (self.value(nd, i) for i in nd.input[1:5])
        f = scale / np.sqrt(var + float(a.get("epsilon", 1e-5)))
        prev.weight = prev.weight * f.reshape((-1,) + (1,) * (prev.weight.ndim - 1))
        bias = prev.bias if prev.bias is not None else np.zeros(len(f))
        prev.bias = (bias - mean) * f + beta
        self.alias[nd.output[0]] = prev.name

    def op_Relu(self, nd, a):
        self.add(nd, Node(nd.name or nd.output[0], "relu", (self.src(nd, nd.input[0]),)))

    def op_Clip(self, nd, a):
        lo = a.get("min", -np.inf)
        hi = a.get("max", np.inf)
        if len(nd.input) > 1 and nd.input[1]:
            lo = float(self.value(nd, nd.input[1]))
        if len(nd.input) > 2 and nd.input[2]:
            hi = float(self.value(nd, nd.input[2]))
        if lo != 0 or hi not in (6, np.inf):
            self.fail(nd, f"attribute 'min'/'max' = {lo}/{hi} is not supported (0/6: ReLU6, "
                          f"0/inf: ReLU)")
        op = "relu6" if hi == 6 else "relu"
        self.add(nd, Node(nd.name or nd.output[0], op, (self.src(nd, nd.input[0]),)))

    def op_Add(self, nd, a):
        x, y = nd.input
        if x in self.const or y in self.const:
            t, c = (y, x) if x in self.const else (x, y)
            prev = self.by_name.get(self.alias.get(t))
            bias = self.const[c].reshape(-1)
            if prev is None or prev.op != "linear" or self.uses(t) != 1 or \
                    bias.size != prev.weight.shape[0]:
                self.fail(nd, "a constant may only be added as the bias of the MatMul before it")
            prev.bias = bias if prev.bias is None else prev.bias + bias
            self.alias[nd.output[0]] = prev.name
            return
        self.add(nd, Node(nd.name or nd.output[0], "add", (self.src(nd, x), self.src(nd, y))))

    def _pool(self, nd, a, op):
        k = list(a.get("kernel_shape", []))
        if len(k) != 2 or k[0] != k[1]:
            self.fail(nd, f"attribute 'kernel_shape' = {k} is not supported (square)")
        if a.get("ceil_mode", 0):
            self.fail(nd, "attribute 'ceil_mode' = 1 is not supported")
        strides = list(a.get("strides", k))
        if len(set(strides)) != 1:
            self.fail(nd, f"attribute 'strides' = {strides} is not supported (square)")
        if any(a.get("pads", [0])) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            self.fail(nd, f"attribute 'pads' = {list(a.get('pads', []))} is not supported "
                          f"(pooling without padding)")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            self.fail(nd, f"attribute 'dilations' = {list(a['dilations'])} is not supported (1)")
        self.add(nd, Node(nd.name or nd.output[0], op, (self.src(nd, nd.input[0]),),
                          k=k[0], stride=strides[0]))

    def op_MaxPool(self, nd, a):
        if len(nd.output) > 1 and nd.output[1]:
            self.fail(nd, "output 'Indices' is not supported")
        self._pool(nd, a, "maxpool")

    def op_AveragePool(self, nd, a):
        self._pool(nd, a, "avgpool")

    def op_GlobalAveragePool(self, nd, a):
        self.add(nd, Node(nd.name or nd.output[0], "gap", (self.src(nd, nd.input[0]),)))

    def op_ReduceMean(self, nd, a):
        axes = a.get("axes")
        if axes is None and len(nd.input) > 1 and nd.input[1]:
            axes = [int(v) for v in self.value(nd, nd.input[1]).reshape(-1)]
        if sorted(int(v) % 4 for v in (axes or [])) != [2, 3]:
            self.fail(nd, f"attribute 'axes' = {axes} is not supported (only [2, 3]: global "
                          f"average pooling)")
        node = Node(nd.name or nd.output[0], "gap", (self.src(nd, nd.input[0]),))
        self.add(nd, node)
        if a.get("keepdims", 1):
            return
        flat = Node(node.name + ".flatten", "flatten", (node.name,))
        self.nodes.append(flat)
        self.by_name[flat.name] = flat
        self.alias[nd.output[0]] = flat.name

    def op_Flatten(self, nd, a):
        if a.get("axis", 1) != 1:
            self.fail(nd, f"attribute 'axis' = {a['axis']} is not supported (1)")
        self.add(nd, Node(nd.name or nd.output[0], "flatten", (self.src(nd, nd.input[0]),)))

    def op_Reshape(self, nd, a):
        shape = [int(v) for v in self.value(nd, nd.input[1]).reshape(-1)]
        if len(shape) != 2 or shape[1] not in (-1,) and shape[0] not in (0, 1, -1):
            self.fail(nd, f"input 'shape' = {shape} is not supported (only [N, -1]: Flatten)")
        self.add(nd, Node(nd.name or nd.output[0], "flatten", (self.src(nd, nd.input[0]),)))

    def op_Gemm(self, nd, a):
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            self.fail(nd, "attributes 'transA'/'alpha'/'beta' other than 0/1/1 are not supported")
        w = self.value(nd, nd.input[1])
        w = w if a.get("transB", 0) else w.T
        b = self.value(nd, nd.input[2]).reshape(-1) if len(nd.input) > 2 and nd.input[2] else None
        self.add(nd, Node(nd.name or nd.output[0], "linear", (self.src(nd, nd.input[0]),),
                          weight=w, bias=b))

    def op_MatMul(self, nd, a):
        w = self.value(nd, nd.input[1])
        if w.ndim != 2:
            self.fail(nd, f"input 'B' of shape {list(w.shape)} is not supported (2-D)")
        self.add(nd, Node(nd.name or nd.output[0], "linear", (self.src(nd, nd.input[0]),),
                          weight=w.T))


def graph_from_onnx(model) -> Graph:
    """The :class:`Graph` of a loaded ``onnx.ModelProto``."""
    return _Importer(model).run()
