# amaranth: UnusedElaboratable=no
"""Gate-level simulation: the same cocotb benches on Yosys synth_ice40 / synth_ecp5 netlists,
simulated with the cell models shipped with Yosys, bit-exact with the golden model."""

import pytest

from insitu.boards.yosys import CELL_DEFINES, cell_models, synth_netlist
from insitu.rtl.asm import AsmMacArray
from insitu.rtl.emit import to_verilog
from insitu.rtl.pow2 import Pow2Decoder
from insitu.rtl.weightgen import MlgWeightGen, SdWeightGen
from insitu.sim.runner import read_summary, run_cocotb

pytestmark = [pytest.mark.cocotb, pytest.mark.synth]


def run_gate_level(build_dir, dut, name, tb, params, family, extra_env=None):
    netlist = synth_netlist(to_verilog(dut, name), name, family, build_dir / f"{name}_{family}.v")
    return run_cocotb(None, name, tb, build_dir, sources=[netlist, cell_models(family, build_dir)],
                      defines=CELL_DEFINES[family],
                      extra_env={"DUT_PARAMS": params, "NUM_RANDOM": "8", **(extra_env or {})})


def assert_clean(result, summaries):
    for name in summaries:
        s = read_summary(result.build_dir, name)
        assert s and s["vectors"] > 0 and s["mismatches"] == 0, (name, s)
    assert result.tests > 0 and result.failed == 0, f"{result.failed} failed, see {result.results_file}"


@pytest.mark.parametrize("family", ["ice40", "ecp5"])
def test_asm_mac_netlist(build_dir, family):
    dut = AsmMacArray(alphabet="A4", weight_bits=8, act_signed=True, lanes=3, acc_len=24)
    r = run_gate_level(build_dir, dut, "asm_mac", "insitu.sim.tb_asm_mac", dut.params(), family)
    assert_clean(r, ["asm_mac_random_and_extremes_flat", "asm_mac_random_and_extremes_stalls"])


def test_asm_mac_netlist_planted_error_fails(build_dir):
    dut = AsmMacArray(alphabet="A2", weight_bits=8, lanes=2, acc_len=24)
    r = run_gate_level(build_dir, dut, "asm_mac", "insitu.sim.tb_asm_mac", dut.params(), "ice40",
                       {"PLANT": "weight"})
    assert r.failed >= 1
    assert read_summary(r.build_dir, "asm_mac_random_and_extremes_flat")["mismatches"] >= 1


@pytest.mark.parametrize("family", ["ice40", "ecp5"])
def test_pow2_decoder_netlist(build_dir, family):
    p = {"e_min": -8, "e_max": 5, "word_bits": 32}
    r = run_gate_level(build_dir, Pow2Decoder(**p), "pow2_decoder", "insitu.sim.tb_pow2_decoder", p, family)
    assert_clean(r, ["pow2_decoder_flat", "pow2_decoder_stalls"])


@pytest.mark.parametrize("family", ["ice40", "ecp5"])
def test_sd_weight_gen_netlist(build_dir, family):
    dut = SdWeightGen(requant=True)
    r = run_gate_level(build_dir, dut, "weight_gen", "insitu.sim.tb_weight_gen",
                       {"scheme": "smartdeal", **dut.params()}, family, {"SD_FILTERS": "2"})
    assert_clean(r, ["weight_gen_sd_layers_flat", "weight_gen_sd_adversarial"])


def test_mlg_weight_gen_netlist(build_dir):
    dut = MlgWeightGen(Bi=2, Bo=5, K2=9, qb=3, qu=6, qv=3)
    r = run_gate_level(build_dir, dut, "weight_gen", "insitu.sim.tb_weight_gen",
                       {"scheme": "mlg", **dut.params()}, "ice40", {"MLG_FILTERS": "6"})
    assert_clean(r, ["weight_gen_mlg_flat", "weight_gen_mlg_stalls"])


def _engine_plan(scheme):
    import numpy as np

    from insitu.gen.compiler import compile_model
    from insitu.gen.model import Layer
    rng = np.random.default_rng(11)
    layers = [Layer("conv", "conv3x3", rng.normal(size=(3, 1, 3, 3)), rng.normal(size=3) * 0.1, pad=1),
              Layer("fc", "linear", rng.normal(size=(4, 3 * 3 * 3)), rng.normal(size=4) * 0.1)]
    return compile_model(layers, scheme, lanes=2, input_shape=(1, 3, 3))


@pytest.mark.parametrize("scheme, family", [("asm", "ice40"), ("smartdeal", "ecp5-nodsp")])
def test_engine_netlist(build_dir, scheme, family):
    """The whole layer engine (memories, generator, controller, MAC array, post-processing)
    synthesized and simulated gate by gate with the same cocotb bench: bit-exact."""
    import numpy as np
    from amaranth.back import verilog

    from insitu.gen.design import TOP, golden_vectors
    from insitu.rtl.emit import time0_safe
    from insitu.rtl.engine import Engine
    plan = _engine_plan(scheme)
    x = np.array([np.zeros(9), np.full(9, 255), [0, 255] * 4 + [0]] +
                 [np.random.default_rng(3).integers(0, 256, 9)], dtype=np.uint8)
    np.savez(build_dir / "vectors.npz", x=x, y=golden_vectors(plan, x))
    text = time0_safe(verilog.convert(Engine(plan), name=TOP, emit_src=False))
    netlist = synth_netlist(text, TOP, family, build_dir / f"engine_{family}.v")
    r = run_cocotb(None, TOP, "insitu.sim.tb_engine", build_dir,
                   sources=[netlist, cell_models(family, build_dir)], defines=CELL_DEFINES[family],
                   extra_env={"ENGINE_VECTORS": str(build_dir / "vectors.npz"),
                              "ENGINE_STALLS": "0.3", "ENGINE_BUDGET": "20000"})
    s = read_summary(r.build_dir, "engine")
    assert s and s["vectors"] == 4 and s["mismatches"] == 0, s
    assert r.tests == 1 and r.failed == 0
