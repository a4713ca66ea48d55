# amaranth: UnusedElaboratable=no
"""cocotb runs of the ASM MAC array's generated Verilog on Icarus (and Verilator when present).

Each case regenerates Verilog for its parameters, runs ``insitu.sim.tb_asm_mac`` (seeded random
and extreme vectors, with and without random valid gaps and ready stalls, plus the error
flags) and requires zero mismatches against the golden model.
"""

import itertools

import pytest

from insitu.gen import tools
from insitu.rtl.asm import AsmMacArray
from insitu.rtl.emit import to_verilog
from insitu.sim.runner import read_summary, run_cocotb

pytestmark = pytest.mark.cocotb
# Outside CI a missing simulator skips; in CI (CI set) the test runs and fails instead.
needs_icarus = pytest.mark.skipif(tools.iverilog() is None and tools.skips_allowed(),
                                  reason="needs iverilog (make setup)")
needs_verilator = pytest.mark.skipif(not tools.have_verilator() and tools.skips_allowed(),
                                     reason="needs verilator (make setup)")

TB = "insitu.sim.tb_asm_mac"


def run_case(build_dir, sim, extra_env=None, **params):
    dut = AsmMacArray(acc_len=params.pop("acc_len", 24), **params)
    env = {"DUT_PARAMS": dut.params(), **(extra_env or {})}
    return run_cocotb(to_verilog(dut, "asm_mac"), "asm_mac", TB, build_dir, sim=sim,
                      extra_env=env), dut


def assert_clean(result):
    assert result.tests == 4, f"expected 4 cocotb tests, ran {result.tests}"
    for name in ("random_and_extremes_flat", "random_and_extremes_stalls", "reset_mid_transfer"):
        summary = read_summary(result.build_dir, f"asm_mac_{name}")
        assert summary["vectors"] > 0 and summary["mismatches"] == 0, summary
    assert result.failed == 0, f"{result.failed} cocotb tests failed, see {result.results_file}"


GRID = list(itertools.product(["A1", "A2", "A4"], [4, 8, 12], [False, True], [1, 3, 8]))


@needs_icarus
@pytest.mark.parametrize("alphabet, weight_bits, act_signed, lanes", GRID)
def test_icarus_grid(build_dir, alphabet, weight_bits, act_signed, lanes):
    result, _ = run_case(build_dir, "icarus", alphabet=alphabet, weight_bits=weight_bits,
                         act_signed=act_signed, lanes=lanes)
    assert_clean(result)


@needs_icarus
@pytest.mark.parametrize("alphabet, lanes, act_bits", [("A8", 5, 8), ("1,5", 2, 4), ("A4", 32, 8)])
def test_icarus_more(build_dir, alphabet, lanes, act_bits):
    """The exact alphabet, a custom one, a narrow activation and a wide array."""
    result, _ = run_case(build_dir, "icarus", alphabet=alphabet, weight_bits=8, act_bits=act_bits,
                         act_signed=False, lanes=lanes)
    assert_clean(result)


@needs_verilator
@pytest.mark.parametrize("alphabet, weight_bits, act_signed, lanes",
                         [("A1", 4, False, 1), ("A2", 8, True, 3), ("A4", 12, False, 8)])
def test_verilator(build_dir, alphabet, weight_bits, act_signed, lanes):
    result, _ = run_case(build_dir, "verilator", alphabet=alphabet, weight_bits=weight_bits,
                         act_signed=act_signed, lanes=lanes)
    assert_clean(result)


@needs_icarus
def test_planted_wrong_weight_is_caught(build_dir):
    """A test must be able to fail: one flipped weight-code bit is reported as a mismatch."""
    result, _ = run_case(build_dir, "icarus", extra_env={"PLANT": "weight"}, alphabet="A2",
                         weight_bits=8, act_signed=False, lanes=3)
    assert result.failed == 2                      # both stimulus variants catch it
    summary = read_summary(result.build_dir, "asm_mac_random_and_extremes_flat")
    assert summary["mismatches"] >= 1
