# amaranth: UnusedElaboratable=no
"""A compiled two-layer model through the CLI: compile, then simulate (the HDL bench and the
cocotb bench, Icarus and Verilator) under random stalls and a reset mid-inference, bit-exact
with the golden model."""

import json

import numpy as np
import pytest

from insitu.cli import main
from insitu.gen import tools
from insitu.gen.model import Layer, save_model

pytestmark = pytest.mark.cocotb
needs_icarus = pytest.mark.skipif(tools.iverilog() is None and tools.skips_allowed(),
                                  reason="needs iverilog (make setup)")


def two_layer_model(path, seed=0):
    rng = np.random.default_rng(seed)
    save_model(path, [
        Layer("conv", "conv3x3", rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4) * 0.1, pad=1),
        Layer("fc", "linear", rng.normal(size=(5, 4 * 4 * 4)), rng.normal(size=5) * 0.1)])


def inputs(path, seed=1):
    rng = np.random.default_rng(seed)
    x = [np.zeros(32), np.full(32, 255), np.arange(32) % 2 * 255]
    x += [rng.integers(0, 256, 32) for _ in range(9)]
    np.save(path, np.array(x, dtype=np.uint8))


@needs_icarus
@pytest.mark.parametrize("scheme, sim, bench", [
    ("asm", "icarus", "hdl"), ("smartdeal", "icarus", "hdl"), ("mlg", "icarus", "hdl"),
    ("smartdeal", "verilator", "hdl"), ("int8", "verilator", "hdl"),
    ("mlg", "verilator", "cocotb"), ("asm", "icarus", "cocotb")])
def test_compile_and_simulate_two_layer_model(build_dir, capsys, scheme, sim, bench):
    if sim == "verilator" and not tools.have_verilator() and tools.skips_allowed():
        pytest.skip("needs verilator")
    model, xs, design = build_dir / "m.npz", build_dir / "x.npy", build_dir / "design"
    two_layer_model(model)
    inputs(xs)
    assert main(["compile", str(model), "--scheme", scheme, "--lanes", "3", "--input-shape",
                 "2,4,4", "--inputs", str(xs), "-o", str(design)]) == 0
    for f in ("engine.v", "manifest.json", "weight.hex", "post.hex", "vectors.npz",
              "compile_report.json"):
        assert (design / f).exists(), f
    assert main(["simulate", str(design), "--sim", sim, "--stalls", "0.3", "--reset",
                 "--bench", bench]) == 0
    rep = json.loads((design / "sim_report.json").read_text())
    assert rep["bit_exact"] is True and rep["vectors"] == 12 and rep["mismatches"] == 0
    assert rep["bench"] == bench
    man = json.loads((design / "manifest.json").read_text())
    comp = json.loads((design / "compile_report.json").read_text())
    assert rep["weight_bits_read"] == comp["weight_bits_read"] > 0
    if scheme != "mlg":
        assert rep["weight_bits_read"] == rep["weight_memory_bits"]
    assert rep["mac_slots"] == rep["macs_per_inference"] == 4 * 18 * 16 + 5 * 64
    assert 0 < rep["mac_utilization"] <= 1 and man["scheme"] == scheme
    assert "bit_exact true" in capsys.readouterr().out


@needs_icarus
def test_simulate_catches_image_that_differs_from_the_verilog(build_dir, capsys):
    """A flipped bit in the manifest's weight image is refused by its checksum; with the
    checksums rewritten too, the golden model follows the manifest while the Verilog still
    holds the old image, so the run must fail (the check can fail)."""
    from insitu.gen.design import write_checksums
    model, design = build_dir / "m.npz", build_dir / "design"
    two_layer_model(model, seed=2)
    assert main(["compile", str(model), "--scheme", "asm", "--lanes", "4", "--input-shape",
                 "2,4,4", "-o", str(design)]) == 0
    man = json.loads((design / "manifest.json").read_text())
    man["weight_words"][3] = format(int(man["weight_words"][3], 16) ^ 0b10, "x")
    (design / "manifest.json").write_text(json.dumps(man))
    assert main(["simulate", str(design)]) == 2
    assert "manifest.json' differs from the file compile wrote" in capsys.readouterr().err
    write_checksums(design)
    assert main(["simulate", str(design)]) == 1
    rep = json.loads((design / "sim_report.json").read_text())
    assert rep["bit_exact"] is False and rep["mismatches"] > 0


@pytest.mark.parametrize("argv, message", [
    (["compile", "missing.npz", "--scheme", "asm", "-o", "OUT"], "does not exist"),
    (["compile", "MODEL", "--scheme", "asm", "-o", "OUT"], "input shape"),
    (["compile", "MODEL", "--scheme", "asm", "--input-shape", "2,x,4", "-o", "OUT"], "C,H,W"),
    (["compile", "MODEL", "--scheme", "asm", "--input-shape", "3,4,4", "-o", "OUT"],
     "expects 2 input channels"),
    (["compile", "MODEL", "--scheme", "mlg", "--set", "Bo=x", "--input-shape", "2,4,4", "-o",
      "OUT"], "Knob 'Bo'"),
    (["compile", "MODEL", "--scheme", "asm", "--lanes", "0", "--input-shape", "2,4,4", "-o", "OUT"],
     "Lanes"),
    (["simulate", "nowhere"], "not a compiled design folder"),
    (["simulate", "EMPTY"], "no manifest.json"),
    (["demo", "--scheme", "nope"], "Unknown scheme 'nope'"),
    (["demo", "--limit", "0"], "positive number"),
    (["demo", "--lanes", "65"], "--lanes must be in 1..64, not 65"),
    (["demo", "--set", "qb=2"], "--set needs one --scheme"),
    (["demo", "--scheme", "mlg", "--set", "Bx=1"], "has no knob 'Bx'"),
])
def test_engine_cli_bad_input(build_dir, capsys, argv, message):
    two_layer_model(build_dir / "m.npz")
    (build_dir / "empty").mkdir(exist_ok=True)
    subst = {"MODEL": str(build_dir / "m.npz"), "OUT": str(build_dir / "out"),
             "EMPTY": str(build_dir / "empty")}
    assert main([subst.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and message in err[-1] and err[-1].startswith("insitu: error:")
    assert not (build_dir / "out").exists()


def test_simulate_rejects_bad_inputs_file(build_dir, capsys):
    model, design = build_dir / "m.npz", build_dir / "design"
    two_layer_model(model)
    assert main(["compile", str(model), "--scheme", "asm", "--input-shape", "2,4,4",
                 "-o", str(design)]) == 0
    np.save(build_dir / "bad.npy", np.full((2, 32), 300))
    np.save(build_dir / "short.npy", np.zeros((31,), dtype=np.uint8))
    assert main(["simulate", str(design), "--inputs", str(build_dir / "bad.npy")]) == 2
    assert "0..255" in capsys.readouterr().err
    assert main(["simulate", str(design), "--inputs", str(build_dir / "short.npy")]) == 2
    assert "do not split" in capsys.readouterr().err


def tiny_residual_onnx(path):
    """A small ResNet/DS-CNN mix as PyTorch writes it: stride-2 shortcut, BN, ReLU6,
    depthwise, global average pooling."""
    import torch
    from torch import nn

    from insitu.gen.zoo import export_onnx

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU())
            self.conv1 = nn.Conv2d(4, 6, 3, 2, 1)
            self.conv2 = nn.Conv2d(6, 6, 3, 1, 1)
            self.short = nn.Conv2d(4, 6, 1, 2)
            self.dw = nn.Sequential(nn.Conv2d(6, 6, 3, 1, 1, groups=6), nn.ReLU6())
            self.fc = nn.Linear(6, 5)

        def forward(self, x):
            x = self.stem(x)
            y = (self.conv2(self.conv1(x).relu()) + self.short(x)).relu()
            return self.fc(self.dw(y).mean((2, 3)))

    torch.manual_seed(0)
    export_onnx(Tiny(), (1, 8, 8), path)


@pytest.mark.parametrize("scheme", ["asm", "mlg"])
def test_onnx_graph_through_the_cli(build_dir, capsys, scheme):
    model, design = build_dir / "tiny.onnx", build_dir / "design"
    tiny_residual_onnx(model)
    rng = np.random.default_rng(0)
    np.save(build_dir / "calib.npy", rng.random((16, 1, 8, 8)))
    assert main(["compile", str(model), "--scheme", scheme, "--lanes", "4", "--calib",
                 str(build_dir / "calib.npy"), "-o", str(design)]) == 0
    out = capsys.readouterr().out
    assert "stride 2" in out and "depthwise" in out and "+ short" in out
    comp = json.loads((design / "compile_report.json").read_text())
    assert comp["activation_bytes"] < sum(b["words"] for b in comp["activation_buffers"])
    assert main(["simulate", str(design), "--stalls", "0.2"]) == 0
    rep = json.loads((design / "sim_report.json").read_text())
    assert rep["bit_exact"] is True and rep["mismatches"] == 0
    assert rep["mac_slots"] == rep["macs_per_inference"]


def test_simulate_reports_accuracy_with_labels(build_dir, capsys):
    """--labels: float (the model copy compile keeps), golden and hardware accuracy and the
    top-1 agreement of the hardware with the float model; float inputs in [0, 1] work."""
    model, design = build_dir / "m.npz", build_dir / "design"
    two_layer_model(model)
    rng = np.random.default_rng(5)
    x = rng.random((6, 2, 4, 4))
    np.save(build_dir / "x.npy", x)
    assert main(["compile", str(model), "--scheme", "int8", "--lanes", "3", "--input-shape",
                 "2,4,4", "-o", str(design)]) == 0
    assert (design / "model.npz").exists()
    from insitu.gen.model import float_reference
    labels = float_reference(model, np.round(x * 255) / 255, (2, 4, 4)).argmax(1)
    labels[0] = (labels[0] + 1) % 5                             # one wrong label
    np.save(build_dir / "y.npy", labels)
    assert main(["simulate", str(design), "--inputs", str(build_dir / "x.npy"), "--labels",
                 str(build_dir / "y.npy")]) == 0
    rep = json.loads((design / "sim_report.json").read_text())
    assert rep["labels"] == 6 and rep["accuracy_float"] == pytest.approx(5 / 6)
    assert rep["accuracy_hw"] == rep["accuracy_golden"]
    assert 0 <= rep["top1_agreement_float"] <= 1
    assert "accuracy on 6 labels: float 83.33%" in capsys.readouterr().out
    np.save(build_dir / "bad.npy", labels[:3])
    assert main(["simulate", str(design), "--inputs", str(build_dir / "x.npy"), "--labels",
                 str(build_dir / "bad.npy")]) == 2
    assert "Labels must be 6 integers" in capsys.readouterr().err


@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_simulate_waves(build_dir, capsys, sim):
    model, design = build_dir / "m.npz", build_dir / "design"
    two_layer_model(model)
    assert main(["compile", str(model), "--scheme", "int8", "--lanes", "3", "--input-shape",
                 "2,4,4", "-o", str(design)]) == 0
    assert main(["simulate", str(design), "--sim", sim, "--waves"]) == 0
    rep = json.loads((design / "sim_report.json").read_text())
    from pathlib import Path
    assert rep["waves"] and Path(rep["waves"]).stat().st_size > 1000
    assert f"waves: {rep['waves']}" in capsys.readouterr().out
