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
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, with_timeout

from insitu.rtl.asm import AsmMacIO
from insitu.sim.asm_vectors import bad_code_case, encode_weights, expected, make_accumulations

P = json.loads(os.environ["DUT_PARAMS"])
NUM_RANDOM = int(os.environ.get("NUM_RANDOM", "24"))
PLANT = os.environ.get("PLANT", "")
IO = AsmMacIO(alphabet=P["alphabet"], weight_bits=P["weight_bits"], act_bits=P["act_bits"],
              act_signed=P["act_signed"], lanes=P["lanes"], acc_bits=P["acc_bits"])


class TB:
    def __init__(self, dut, seed, p_gap=0.0, p_stall=0.0):
        self.dut = dut
        self.rng = random.Random(seed)
        self.p_gap, self.p_stall = p_gap, p_stall
        Clock(dut.clk, 10, unit="ns").start()

    async def reset(self):
        self.dut.rst.value = 1
        self.dut.i__valid.value = 0
        self.dut.o__ready.value = 0
        await ClockCycles(self.dut.clk, 2)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def drive(self, words):
        dut = self.dut
        for word in words:
            while self.rng.random() < self.p_gap:          # random valid gaps
                dut.i__valid.value = 0
                await RisingEdge(dut.clk)
            dut.i__payload.value = word
            dut.i__valid.value = 1
            while True:
                await ReadOnly()
                taken = bool(dut.i__ready.value)
                await RisingEdge(dut.clk)
                if taken:
                    break
        dut.i__valid.value = 0

    async def collect(self, count):
        dut = self.dut
        got = []
        while len(got) < count:
            ready = self.rng.random() >= self.p_stall      # random ready stalls
            dut.o__ready.value = int(ready)
            await ReadOnly()
            if ready and dut.o__valid.value:
                got.append(IO.unpack_output(dut.o__payload.value.to_unsigned()))
            await RisingEdge(dut.clk)
        dut.o__ready.value = 0
        return got

    async def run(self, accs_codes):
        words = [IO.pack_input(int(x[t]), codes[t], t == len(x) - 1)
                 for x, codes in accs_codes for t in range(len(x))]
        cocotb.start_soon(self.drive(words))
        budget = 10 * (len(words) + len(accs_codes)) + 100
        return await with_timeout(self.collect(len(accs_codes)), budget * 10, "ns")


def compare(dut, name, results, exp):
    mismatches = []
    for k, (r, e) in enumerate(zip(results, exp)):
        if r["acc"] != e or r["bad_code"] or r["overrun"]:
            mismatches.append({"accumulation": k, "rtl": r, "golden": e})
    summary = {"test": name, "params": P, "vectors": len(exp), "mismatches": len(mismatches),
               "first_mismatches": mismatches[:3]}
    Path(f"asm_mac_{name}.json").write_text(json.dumps(summary, indent=1))
    for mm in mismatches[:5]:
        dut._log.error("accumulation %d: RTL %s != golden %s", mm["accumulation"], mm["rtl"], mm["golden"])
    assert not mismatches, f"{len(mismatches)} of {len(exp)} accumulations differ from the golden model"


@cocotb.test()
@cocotb.parametrize(stalls=[False, True])
async def random_and_extremes(dut, stalls):
    """Seeded random accumulations plus extremes, with and without valid gaps / ready stalls."""
    seed = 1000 * P["lanes"] + P["weight_bits"] + (7 if stalls else 0)
    tb = TB(dut, seed, p_gap=0.3 if stalls else 0.0, p_stall=0.4 if stalls else 0.0)
    await tb.reset()
    accs = make_accumulations(P, seed, n_random=NUM_RANDOM)
    exp = expected(P, accs)
    sent = [(x, encode_weights(P, w)) for x, w in accs]
    if PLANT == "weight":
        sent[0][1][0][0] ^= 1 << 2                         # a wrong weight in lane 0, term 0
    results = await tb.run(sent)
    compare(dut, f"random_and_extremes_{'stalls' if stalls else 'flat'}", results, exp)


@cocotb.test()
async def flags(dut):
    """An invalid weight code is flagged and counts as zero; a too-long sum is flagged."""
    tb = TB(dut, 5, p_stall=0.3)
    await tb.reset()
    fmt = IO.fmt
    one = fmt.encode_value(1)
    over = ([1] * (P["acc_len"] + 1), [[one] * P["lanes"]] * (P["acc_len"] + 1))
    short = ([2, 3], [[one] * P["lanes"]] * 2)
    cases = [over, short]
    bad = bad_code_case(P, 3)
    if bad is not None:
        cases.append((bad[0], bad[1]))
    results = await tb.run(cases)
    assert results[0]["overrun"], "overrun not flagged"
    assert not results[1]["overrun"] and results[1]["acc"] == [5] * P["lanes"]
    if bad is not None:
        assert results[2]["bad_code"], "invalid code not flagged"
        assert results[2]["acc"] == bad[2]
