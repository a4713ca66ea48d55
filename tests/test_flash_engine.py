# amaranth: UnusedElaboratable=no
"""An engine whose weight memory is a SPI / QSPI NOR flash (``compile --weight-flash``): no
weight word on chip, the fill's read trace streamed from the cocotb flash model at every
inference.  Bit-exact under stalls and a reset mid-inference for every scheme, the flash read
once per inference, the cycle model within 2% of the RTL; a flipped bit in the flash fails."""

import json

import numpy as np
import pytest

from insitu.cli import main
from insitu.gen import schemes, tools
from insitu.gen.compiler import compile_model
from insitu.gen.flashimage import flash_image, parse_flash, weight_trace
from insitu.gen.model import Layer, save_model
from insitu.rtl.engine import Engine
from insitu.sim.engine_run import simulate

pytestmark = pytest.mark.cocotb
needs_verilator = pytest.mark.skipif(not tools.have_verilator() and tools.skips_allowed(),
                                     reason="needs verilator (make setup)")


def _layers(seed=0):
    rng = np.random.default_rng(seed)
    return [Layer("conv", "conv3x3", rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4) * 0.1,
                  pad=1),
            Layer("fc", "linear", rng.normal(size=(5, 4 * 4 * 4)), rng.normal(size=5) * 0.1)]


def _compile(build_dir, scheme, flash, lanes=3):
    model, xs, design = build_dir / "m.npz", build_dir / "x.npy", build_dir / "design"
    save_model(model, _layers())
    rng = np.random.default_rng(1)
    x = [np.zeros(32), np.full(32, 255)] + [rng.integers(0, 256, 32) for _ in range(4)]
    np.save(xs, np.array(x, dtype=np.uint8))
    assert main(["compile", str(model), "--scheme", scheme, "--lanes", str(lanes),
                 "--input-shape", "2,4,4", "--inputs", str(xs), "--weight-flash", flash,
                 "-o", str(design)]) == 0
    return design


@needs_verilator
@pytest.mark.parametrize("scheme, flash", [("asm", "qspi"), ("smartdeal", "spi:2"),
                                           ("mlg", "qspi:3"), ("int8", "qspi")])
def test_flash_engine_bit_exact(build_dir, scheme, flash):
    design = _compile(build_dir, scheme, flash)
    assert (design / "flash.bin").exists()
    rep = simulate(design, sim="verilator", stalls=0.3, reset=True, progress=False)
    assert rep["bit_exact"] and rep["mismatches"] == 0 and rep["vectors"] == 6
    comp = json.loads((design / "compile_report.json").read_text())
    fl = rep["flash"]
    # one read per inference (plus the one the reset cut), the whole stream each time
    assert fl["errors"] == [] and fl["reads"] in (6, 7)
    assert fl["bytes_read"] >= 6 * comp["flash_bytes"]
    assert abs(comp["cycles_model"] / rep["cycles"] - 1) < 0.02


@needs_verilator
def test_planted_flash_bit_flip_fails(build_dir):
    """A flipped bit in the second inference's read: that inference differs and raises err
    (the stream's CRC-32)."""
    design = _compile(build_dir, "asm", "qspi")
    n = json.loads((design / "compile_report.json").read_text())["flash_bytes"]
    rep = simulate(design, sim="verilator", progress=False, flash_flip=(n + 5, 2))
    assert not rep["bit_exact"] and rep["mismatches"] == 1
    assert rep["flash"]["bytes_read"] == 6 * n           # not one flash clock more per read
    assert rep["first_mismatches"][0]["vector"] == 1 and rep["first_mismatches"][0]["err"] == 1


@needs_verilator
def test_flash_crc_catches_a_flip_the_outputs_do_not_show(build_dir):
    """MLG words are 54 bits in 7 bytes: a flipped padding bit changes no weight, so the
    outputs stay right, but the read's CRC-32 differs and the engine raises err."""
    design = _compile(build_dir, "mlg", "qspi")
    assert json.loads((design / "manifest.json").read_text())["weight_word_bits"] % 8 != 0
    rep = simulate(design, sim="verilator", progress=False, flash_flip=(6, 7))
    bad = rep["first_mismatches"]
    assert rep["mismatches"] == 1 and bad[0]["outputs"] == [] and bad[0]["err"] == 1


@pytest.mark.parametrize("scheme", schemes.NAMES)
def test_stream_is_the_fill_trace(scheme):
    """The stream holds the weight words in trace order; the copy and rebuild fills read every
    word of the image (MLG's may skip words it does not use, and reads its level-1 basis once
    per tile)."""
    plan = compile_model(_layers(), scheme, lanes=3, input_shape=(2, 4, 4))
    trace, img = weight_trace(plan), flash_image(plan)
    nb = (plan.weight_word_bits + 7) // 8
    assert len(img) == nb * len(trace)
    assert set(trace) <= set(range(len(plan.weight_words)))
    if scheme != "mlg":
        assert trace == list(range(len(plan.weight_words)))
    for i in (0, len(trace) // 2, len(trace) - 1):
        assert int.from_bytes(img[i * nb:(i + 1) * nb], "little") == plan.weight_words[trace[i]]


@pytest.mark.parametrize("text, message", [
    ("ospi", "must be .qspi"),
    ("qspi:0", "divider must be an integer in 1..255"),
    ("spi:x", "divider must be an integer in 1..255")])
def test_bad_flash_setting(text, message):
    with pytest.raises(ValueError, match=message):
        parse_flash(text)


def test_flash_and_weight_port_exclude_each_other(build_dir, capsys):
    plan = compile_model(_layers(), "asm", lanes=3, input_shape=(2, 4, 4))
    plan.weight_flash, plan.weight_port_bits = "qspi", 4
    with pytest.raises(ValueError, match="flash or through a weight port, not both"):
        Engine(plan)
    save = build_dir / "m.npz"
    save_model(save, _layers())
    assert main(["compile", str(save), "--scheme", "asm", "--input-shape", "2,4,4", "--weight-flash", "qspi",
                 "--weight-port-bits", "4", "-o", str(build_dir / "d")]) != 0
    assert "exclude each other" in capsys.readouterr().err
    assert not (build_dir / "d").exists()
