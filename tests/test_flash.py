# amaranth: UnusedElaboratable=no
"""The SPI / quad-SPI flash reader against the cocotb flash model (W25Q128-style reads):
random runs of bytes under valid gaps and ready stalls (SCK stops, nothing is lost), the
streaming rate, and a planted bit flip in the model that the bench must catch."""

import json
import random

import pytest

from insitu.gen import tools
from insitu.rtl.emit import time0_safe, to_verilog
from insitu.rtl.flash import FlashReader
from insitu.sim.runner import read_summary, run_cocotb

pytestmark = pytest.mark.cocotb
needs_icarus = pytest.mark.skipif(tools.iverilog() is None and tools.skips_allowed(),
                                  reason="needs iverilog (make setup)")

TB = "insitu.sim.tb_flash"


def _reads(seed=3, n=12):
    rng = random.Random(seed)
    reads = [[rng.randrange(1 << 16), rng.randint(1, 40)] for _ in range(n)]
    reads.append([(1 << 16) - 3, 6])              # wraps at the end of the image
    reads.append([0, 1])
    return reads


def _run(build_dir, quad, divider, sim="icarus", plant=""):
    dut = FlashReader(quad=quad, divider=divider)
    env = {"FLASH_READS": json.dumps(_reads()), "FLASH_SEED": "7", "PLANT": plant}
    return run_cocotb(time0_safe(to_verilog(dut, "flash_reader")), "flash_reader", TB, build_dir, sim=sim,
                      extra_env=env)


@needs_icarus
@pytest.mark.parametrize("quad, divider", [(True, 1), (True, 3), (False, 1), (False, 2)])
def test_reader_against_flash_model(build_dir, quad, divider):
    res = _run(build_dir, quad, divider)
    assert res.tests == 3 and res.failed == 0, res.results_file
    for name in ("reads_flat", "reads_stalls", "streaming_rate"):
        s = read_summary(res.build_dir, f"flash_{name}")
        assert s["vectors"] > 0 and s["mismatches"] == 0
    rate = json.loads((res.build_dir / "flash_rate.json").read_text())
    ideal = FlashReader(quad=quad, divider=divider).bits_per_cycle
    assert rate["streaming_bits_per_cycle"] == pytest.approx(ideal, rel=0.02)


@pytest.mark.skipif(not tools.have_verilator() and tools.skips_allowed(),
                    reason="needs verilator (make setup)")
def test_reader_on_verilator(build_dir):
    res = _run(build_dir, True, 2, sim="verilator")
    assert res.tests == 3 and res.failed == 0, res.results_file


@needs_icarus
def test_planted_bit_flip_fails(build_dir):
    res = _run(build_dir, True, 1, plant="flip")
    assert res.failed == 2                         # both checked runs see the flipped byte
    s = read_summary(res.build_dir, "flash_reads_flat")
    assert s["mismatches"] == 1


def test_bad_parameters():
    with pytest.raises(ValueError, match="divider must be an integer in 1..255"):
        FlashReader(divider=0)
    with pytest.raises(ValueError, match="quad must be a bool"):
        FlashReader(quad=1)
