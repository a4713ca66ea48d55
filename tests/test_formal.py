"""Formal equivalence proofs (insitu.sim.formal) with Yosys' SAT solver, for every input value."""

import pytest

from insitu.gen.golden import SdFormat, asm_acc_bits
from insitu.rtl.crc import CRC16, CRC32
from insitu.sim.formal import (
    AsmAccBoundMiter,
    AsmLaneMiter,
    AvgPoolMiter,
    CrcStepMiter,
    DepthwiseLaneMiter,
    MacFoldMiter,
    MaxPoolMiter,
    Pow2RowMiter,
    RequantMiter,
    SdRebuildMiter,
    prove,
    standard_proofs,
)

PROOFS = standard_proofs()


@pytest.mark.parametrize("name", list(PROOFS))
def test_proof(name):
    result = prove(PROOFS[name](), name)
    assert result.proven, result.log[-2000:]


@pytest.mark.parametrize("name, factory", [
    ("asm_lane wrong table entry", lambda: AsmLaneMiter("A4", 8, 4, False, plant=True)),
    ("sd_rebuild wrong power", lambda: SdRebuildMiter(SdFormat(0, 4), 3, plant=True)),
    ("pow2_row wrong length", lambda: Pow2RowMiter(SdFormat(), plant=True)),
    ("requant wrong rounding constant", lambda: RequantMiter(plant=True)),
    ("avgpool_divide shift off by one", lambda: AvgPoolMiter(3, plant=True)),
    ("maxpool restarts mid-window", lambda: MaxPoolMiter(9, plant=True)),
    ("mac_fold subtracts one too many", lambda: MacFoldMiter(plant=True)),
    ("depthwise_lane sum carried across windows", lambda: DepthwiseLaneMiter(plant=True)),
    ("crc16_step wrong table entry", lambda: CrcStepMiter(CRC16, plant=True)),
    ("crc32_step wrong table entry", lambda: CrcStepMiter(CRC32, plant=True)),
    ("asm_acc one bit short", lambda: AsmAccBoundMiter("A2", 8, 4, True, 3,
                                                       acc_bits=asm_acc_bits(4, True, 8, "A2", 3) - 1)),
])
def test_proof_can_fail(name, factory):
    """Each kind of proof is real: a planted error (or a too-narrow width) is refuted."""
    result = prove(factory(), name)
    assert not result.proven and "proof did fail" in result.log


def test_cli_prove(capsys):
    import insitu.cli as cli
    assert cli.main(["prove", "pow2_row[e-8..5]", "asm_lane[A2,w8,x4s]"]) == 0
    assert capsys.readouterr().out.strip().endswith("2 proven, 0 failed")
    assert cli.main(["prove", "nope"]) == 2
