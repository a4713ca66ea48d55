"""The real-network topologies, as PyTorch modules (PyTorch is optional: imported here only).

* :func:`resnet8`: the MLPerf Tiny image-classification ResNet-8: a 16-channel 3x3 stem, three
  stacks (16, 32, 64 channels) of two 3x3 convs with a residual add, stride 2 and a strided
  1x1 shortcut in stacks 2 and 3, global average pooling and Linear 64 -> classes.  Every conv
  but the shortcuts is followed by BatchNorm.
* :func:`dscnn`: the MLPerf Tiny DS-CNN structure on images: a strided 3x3 stem with 64
  channels, four blocks of depthwise 3x3 + pointwise 1x1 (64), each with BatchNorm and ReLU,
  global average pooling and Linear 64 -> classes.
"""

from __future__ import annotations

from .onnx_import import graph_from_onnx

__all__ = ["MODELS", "resnet8", "dscnn", "from_torch", "export_onnx"]

MODELS = ("resnet8", "dscnn")


def _torch():
    try:
        import torch
    except ImportError:
        raise RuntimeError("this needs PyTorch (an optional extra: 'make setup' installs it)") from None
    return torch


def resnet8(in_channels: int = 1, classes: int = 10):
    """MLPerf Tiny ResNet-8 (about 78k weights on 3 input channels, 12M MACs at 32x32)."""
    nn = _torch().nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = nn.Conv2d(cin, cout, 1, stride, 0) if stride != 1 else None

        def forward(self, x):
            y = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
            return (y + (self.short(x) if self.short is not None else x)).relu()

    class ResNet8(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(16), nn.ReLU())
            self.stack1 = Block(16, 16, 1)
            self.stack2 = Block(16, 32, 2)
            self.stack3 = Block(32, 64, 2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, classes)

        def forward(self, x):
            x = self.stack3(self.stack2(self.stack1(self.stem(x))))
            return self.fc(self.pool(x).flatten(1))

    return ResNet8()


def dscnn(in_channels: int = 1, classes: int = 10, width: int = 64, blocks: int = 4):
    """DS-CNN on images: strided stem, ``blocks`` x (depthwise 3x3 + pointwise 1x1)."""
    nn = _torch().nn
    layers = [nn.Conv2d(in_channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    for _ in range(blocks):
        layers += [nn.Conv2d(width, width, 3, 1, 1, groups=width, bias=False),
                   nn.BatchNorm2d(width), nn.ReLU(),
                   nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes)]
    return nn.Sequential(*layers)


def export_onnx(module, input_shape, path, *, fold_bn: bool = True) -> None:
    """Write ``module`` (eval mode) as an ONNX file with a symbolic batch dimension."""
    import warnings
    torch = _torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # the TorchScript exporter's deprecation notes
        torch.onnx.export(module.eval(), torch.zeros((1,) + tuple(input_shape)), str(path),
                          dynamo=False, do_constant_folding=fold_bn, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})


def from_torch(module, input_shape, *, fold_bn: bool = True):
    """A PyTorch module as a :class:`~insitu.gen.graph.Graph`, through ONNX export (eval mode).

    ``fold_bn=False`` keeps BatchNormalization nodes in the exported file (the importer folds
    them); the result is the same network.
    """
    import io
    import warnings

    import onnx
    torch = _torch()

    module = module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # the TorchScript exporter's deprecation notes
        torch.onnx.export(module, torch.zeros((1,) + tuple(input_shape)), buf, dynamo=False,
                          do_constant_folding=fold_bn, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return graph_from_onnx(onnx.load_from_string(buf.getvalue()))
