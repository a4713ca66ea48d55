# amaranth: UnusedElaboratable=no
"""cocotb runs of the power-of-2 decoder and the weight generators on Icarus (and Verilator)."""

import pytest

from insitu.gen import tools
from insitu.rtl.emit import to_verilog
from insitu.rtl.pow2 import Pow2Decoder
from insitu.rtl.weightgen import MlgWeightGen, SdWeightGen
from insitu.sim.runner import read_summary, run_cocotb

pytestmark = pytest.mark.cocotb
needs_icarus = pytest.mark.skipif(tools.iverilog() is None and tools.skips_allowed(),
                                  reason="needs iverilog (make setup)")
needs_verilator = pytest.mark.skipif(not tools.have_verilator() and tools.skips_allowed(),
                                     reason="needs verilator (make setup)")


def run(build_dir, dut, name, tb, params, sim="icarus", plant=None):
    env = {"DUT_PARAMS": params}
    if plant:
        env["PLANT"] = plant
    return run_cocotb(to_verilog(dut, name), name, tb, build_dir, sim=sim, extra_env=env)


def assert_clean(result, summaries):
    for name in summaries:
        s = read_summary(result.build_dir, name)
        assert s and s["vectors"] > 0 and s["mismatches"] == 0, (name, s)
    assert result.tests > 0 and result.failed == 0, f"{result.failed} failed, see {result.results_file}"


DEC = [(-8, 5, 32, "icarus"), (-4, 3, 32, "icarus"), (-8, 7, 64, "icarus"), (-8, 5, 32, "verilator")]


@needs_icarus
@pytest.mark.parametrize("e_min, e_max, word_bits, sim", DEC)
def test_pow2_decoder(build_dir, e_min, e_max, word_bits, sim):
    if sim == "verilator" and not tools.have_verilator() and tools.skips_allowed():
        pytest.skip("needs verilator")
    p = {"e_min": e_min, "e_max": e_max, "word_bits": word_bits}
    r = run(build_dir, Pow2Decoder(**p), "pow2_decoder", "insitu.sim.tb_pow2_decoder", p, sim)
    assert_clean(r, ["pow2_decoder_flat", "pow2_decoder_stalls", "pow2_decoder_reset_mid_transfer"])


@needs_icarus
@pytest.mark.parametrize("requant, basis_bits, sim", [(True, 8, "icarus"), (False, 8, "icarus"),
                                                      (True, 6, "icarus"), (True, 8, "verilator")])
def test_sd_weight_gen(build_dir, requant, basis_bits, sim):
    if sim == "verilator" and not tools.have_verilator() and tools.skips_allowed():
        pytest.skip("needs verilator")
    dut = SdWeightGen(requant=requant, basis_bits=basis_bits)
    p = {"scheme": "smartdeal", **dut.params()}
    r = run(build_dir, dut, "weight_gen", "insitu.sim.tb_weight_gen", p, sim)
    assert_clean(r, ["weight_gen_sd_layers_flat", "weight_gen_sd_layers_stalls", "weight_gen_sd_adversarial",
                     "weight_gen_reset_mid_transfer"])


@needs_icarus
@pytest.mark.parametrize("Bi, Bo, K2, qb, qu, qv, level1, level2", [
    (2, 5, 9, 3, 6, 3, True, True),
    (2, 12, 9, 3, 6, 3, True, False),      # Bo >= Cout: level 2 bypassed
    (2, 4, 1, 4, 6, 4, False, True),       # Linear: level 1 bypassed
])
def test_mlg_weight_gen(build_dir, Bi, Bo, K2, qb, qu, qv, level1, level2):
    dut = MlgWeightGen(Bi=Bi, Bo=Bo, K2=K2, qb=qb, qu=qu, qv=qv, level1=level1, level2=level2)
    p = {"scheme": "mlg", **dut.params()}
    r = run(build_dir, dut, "weight_gen", "insitu.sim.tb_weight_gen", p)
    assert_clean(r, ["weight_gen_mlg_flat", "weight_gen_mlg_stalls", "weight_gen_reset_mid_transfer"])


@needs_icarus
@pytest.mark.parametrize("which", ["decoder", "sd", "mlg"])
def test_planted_errors_are_caught(build_dir, which):
    if which == "decoder":
        p = {"e_min": -8, "e_max": 5, "word_bits": 32}
        r = run(build_dir, Pow2Decoder(**p), "pow2_decoder", "insitu.sim.tb_pow2_decoder", p, plant="bit")
        name = "pow2_decoder_flat"
    elif which == "sd":
        dut = SdWeightGen(requant=False)
        r = run(build_dir, dut, "weight_gen", "insitu.sim.tb_weight_gen",
                {"scheme": "smartdeal", **dut.params()}, plant="basis")
        name = "weight_gen_sd_layers_flat"
    else:
        dut = MlgWeightGen(Bi=2, Bo=5, K2=9, qb=3, qu=6, qv=3)
        r = run(build_dir, dut, "weight_gen", "insitu.sim.tb_weight_gen",
                {"scheme": "mlg", **dut.params()}, plant="basis")
        name = "weight_gen_mlg_flat"
    assert r.failed >= 1
    assert read_summary(r.build_dir, name)["mismatches"] >= 1
