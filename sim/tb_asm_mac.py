"""cocotb testbench of the ASM MAC array (generated Verilog of ``insitu.rtl.asm.AsmMacArray``).

Only imported inside the simulator.  Configuration comes from the environment:

- ``DUT_PARAMS``: JSON of the array's parameters (``AsmMacArray.params()``);
- ``NUM_RANDOM``: random accumulations per test (default 24);
- ``PLANT``: ``"weight"`` flips one weight-code bit in what is sent, to show the check fails.

Every result is compared bit-exactly with ``gen.golden.asm_mac``; a summary with the
vector and mismatch counts is written to ``asm_mac_<test>.json`` in the test folder.
"""

import json
import os
import random

import cocotb

from insitu.rtl.asm import AsmMacIO
from insitu.sim.asm_vectors import (
    bad_code_case,
    encode_weights,
    expected,
    make_accumulations,
)
from insitu.sim.cocotb_util import interrupt_with_reset, report, start, transfer

P = json.loads(os.environ["DUT_PARAMS"])
NUM_RANDOM = int(os.environ.get("NUM_RANDOM", "24"))
PLANT = os.environ.get("PLANT", "")
IO = AsmMacIO(alphabet=P["alphabet"], weight_bits=P["weight_bits"], act_bits=P["act_bits"],
              act_signed=P["act_signed"], lanes=P["lanes"], acc_bits=P["acc_bits"])


async def run(dut, accs_codes, seed, p_gap=0.0, p_stall=0.0):
    words = [IO.pack_input(int(x[t]), codes[t], t == len(x) - 1)
             for x, codes in accs_codes for t in range(len(x))]
    got = await transfer(dut, {"i": words}, "o", len(accs_codes), random.Random(seed), p_gap, p_stall)
    return [IO.unpack_output(w) for w in got]


@cocotb.test()
@cocotb.parametrize(stalls=[False, True])
async def random_and_extremes(dut, stalls):
    """Seeded random accumulations plus extremes, with and without valid gaps / ready stalls."""
    seed = 1000 * P["lanes"] + P["weight_bits"] + (7 if stalls else 0)
    await start(dut, ["i"], ["o"])
    accs = make_accumulations(P, seed, n_random=NUM_RANDOM)
    exp = [{"acc": e, "bad_code": False, "overrun": False} for e in expected(P, accs)]
    sent = [(x, encode_weights(P, w)) for x, w in accs]
    if PLANT == "weight":
        sent[0][1][0][0] ^= 1 << 2                         # a wrong weight in lane 0, term 0
    results = await run(dut, sent, seed, 0.3 if stalls else 0.0, 0.4 if stalls else 0.0)
    report(dut, f"asm_mac_random_and_extremes_{'stalls' if stalls else 'flat'}", exp, results,
           lambda k: f"accumulation {k}")


@cocotb.test()
async def flags(dut):
    """An invalid weight code is flagged and counts as zero; a too-long sum is flagged."""
    await start(dut, ["i"], ["o"])
    one = IO.fmt.encode_value(1)
    over = ([1] * (P["acc_len"] + 1), [[one] * P["lanes"]] * (P["acc_len"] + 1))
    short = ([2, 3], [[one] * P["lanes"]] * 2)
    cases = [over, short]
    bad = bad_code_case(P, 3)
    if bad is not None:
        cases.append((bad[0], bad[1]))
    results = await run(dut, cases, 5, p_stall=0.3)
    assert results[0]["overrun"], "overrun not flagged"
    assert not results[1]["overrun"] and results[1]["acc"] == [5] * P["lanes"]
    if bad is not None:
        assert results[2]["bad_code"], "invalid code not flagged"
        assert results[2]["acc"] == bad[2]


@cocotb.test()
async def reset_mid_transfer(dut):
    """A reset in the middle of a transfer loses that work only: the next run is exact."""
    await start(dut, ["i"], ["o"])
    rng = random.Random(77)
    accs = make_accumulations(P, 77, n_random=6)
    words = [IO.pack_input(int(x[t]), codes[t], t == len(x) - 1)
             for x, w in accs for codes in [encode_weights(P, w)] for t in range(len(x))]
    await interrupt_with_reset(dut, {"i": words}, "o", max(3, len(words) // 2), rng)
    exp = [{"acc": e, "bad_code": False, "overrun": False} for e in expected(P, accs)]
    results = await run(dut, [(x, encode_weights(P, w)) for x, w in accs], 78, 0.2, 0.3)
    report(dut, "asm_mac_reset_mid_transfer", exp, results, lambda k: f"accumulation {k}")
