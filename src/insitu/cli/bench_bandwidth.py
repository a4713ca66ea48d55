"""``insitu bench bandwidth``: the memory-bound benchmark.

ResNet-8 (the demo's checkpoints: the committed fine-tuned one of each scheme) under each
scheme, with its weights read through a link of B bits per cycle (``Plan.weight_port_bits``;
nothing is kept on chip between inferences: every tile's words come through the link each
inference).  For every lane count, scheme and B: weight bits read per inference, cycles per
inference, the speed-up over dense int8 at the same lanes and B, and what limits it (the MAC
array, the weight generator or the link).  A configuration ``LxP`` is L lanes taking P input
channels per cycle (``Plan.cpar``; a scheme that takes one channel per cycle runs at P = 1
there, and its rows say so).

The grid comes from the plan's cycle model (``gen.cycles``).  The RTL points (``--rtl``,
LANES:B pairs) are compiled with the link in the engine and simulated on Verilator (one test
image, bit-exact against the golden model); their cycle counters must be within 2% of the
model.  B = 2 and 4 are the QSPI class: a quad-SPI flash clocked at half or the whole engine
clock.

The flash rows (``flash``: ``qspi`` and ``spi`` at a flash clock of half the engine clock, 2
and 0.5 bits per cycle) are the engine as boards build it with ``--weight-flash``: the weight
memory streams from the flash in the fill's read order (``gen.flashimage``: words padded to
whole bytes, every word once) while the small aux / coefficient memories stay
in block RAM.  Their RTL points (``--rtl-flash``, LANES:MODE pairs) run the cocotb engine bench
with the SPI flash model on the engine's pins.

Writes ``bench_bandwidth.json``, ``bench_bandwidth.md`` and ``bench_bandwidth.png``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ..gen import schemes as registry
from ..gen.compiler import compile_model, golden_layers
from ..gen.cycles import estimate_cycles
from ..gen.datasets import fashion_mnist, pad_to
from ..gen.flashimage import flash_bits_per_cycle, stream_bits
from ..gen.model import load_network
from ..gen.network import forward_int
from ..rtl.emit import write_design
from ..sim.engine_run import simulate
from .demo_real import batched, checkpoint, scheme_network
from .plots import finish_axes, save_figure, write_bench

__all__ = ["run_bench_bandwidth", "BITS", "QSPI", "config_label", "parse_config"]

BITS = (1, 2, 4, 16, 64)
#: Link widths of a quad-SPI flash at half and at the full engine clock.
QSPI = (2, 4)
ORDER = ("int8", "asm", "smartdeal", "mlg")


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def config_label(lanes: int, cpar: int = 1) -> str:
    """``"64"`` or ``"64x8"``: lanes, and the channels each takes per cycle when more than 1."""
    return f"{lanes}" if cpar == 1 else f"{lanes}x{cpar}"


def parse_config(text: str) -> tuple[int, int]:
    """``"64"`` -> ``(64, 1)``, ``"64x8"`` -> ``(64, 8)``; ``ValueError`` otherwise."""
    lanes, _, cpar = text.strip().partition("x")
    if not lanes.isdigit() or (cpar and not cpar.isdigit()):
        raise ValueError(text)
    return int(lanes), int(cpar or 1)


def _title(cfg) -> str:
    lanes, cpar = cfg
    return f"{lanes} lanes" + (f" x {cpar} channels" if cpar > 1 else "")


#: Flash modes of the grid (at a flash clock of half the engine clock).
FLASH_MODES = ("qspi", "spi")


def run_bench_bandwidth(out_dir, *, model: str = "resnet8", lanes=(8, 32, 64), bits=BITS,
                        rtl=((8, 2), (64, 2)), rtl_flash=((8, "qspi"), (64, "qspi")),
                        limit: int = 10000, sim: str = "verilator") -> dict:
    out = Path(out_dir)
    t_all = time.monotonic()
    layers, shape = load_network(checkpoint(model))
    data = fashion_mnist()
    calib = pad_to(data.x_train[:256], shape[1]) / 255.0
    n = min(limit, len(data.y_test))
    x_test = pad_to(data.x_test[:n], shape[1]).astype(np.int64)
    schemes = [s for s in ORDER if s in registry.NAMES]
    configs = [(c, 1) if isinstance(c, int) else tuple(c) for c in lanes]

    def cpar_of(scheme, P):
        return P if registry.get(scheme).cpar_ok else 1
    nets, accuracy, rows, rtl_rows = {}, {}, [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for scheme in schemes:
            net, codes, tuned, kn = scheme_network(model, scheme, None, layers)
            nets[scheme] = (net, codes, kn)
            plan = compile_model(net, scheme, lanes=8, input_shape=shape, calib=calib,
                                 knobs=kn or None, compressed=codes)
            golden = golden_layers(plan)
            y = batched(lambda x: forward_int(golden, x).reshape(len(x), -1), x_test)
            accuracy[scheme] = float(np.mean(y.argmax(1) == data.y_test[:n]))
            _log(f"[{model}/{scheme}] {'fine-tuned' if tuned else 'post-training'} checkpoint, "
                 f"accuracy {100 * accuracy[scheme]:.2f}% on {n} test images")
    plans = {}

    def plan_for(L, P, scheme):
        if (L, P, scheme) not in plans:
            net, codes, kn = nets[scheme]
            plans[L, P, scheme] = compile_model(net, scheme, lanes=L, input_shape=shape,
                                                calib=calib, knobs=kn or None, compressed=codes,
                                                cpar=cpar_of(scheme, P))
        return plans[L, P, scheme]

    for L, P in configs:
        for scheme in schemes:
            plan = plan_for(L, P, scheme)
            where = {"lanes": L, "cpar": plan.cpar, "config": config_label(L, P)}
            for B in (*bits, None):
                est = estimate_cycles(plan, B)
                rows.append({**where, "scheme": scheme, "port_bits": B,
                             "qspi": B in QSPI, "weight_bits_read": est.weight_bits,
                             "bits_per_weight_read": est.weight_bits / plan.weights,
                             "cycles": est.cycles, "limit": est.limit,
                             "port_stall_cycles": est.bound_cycles["port"],
                             "fill_stall_cycles": est.bound_cycles["fill"],
                             "accuracy_hw": accuracy[scheme]})
            for mode in FLASH_MODES:
                plan.weight_flash = mode
                est = estimate_cycles(plan)
                plan.weight_flash = ""
                rows.append({**where, "scheme": scheme, "port_bits": None, "flash": mode,
                             "flash_bits_per_cycle": flash_bits_per_cycle(mode),
                             "flash_bytes": stream_bits(plan) // 8,
                             "weight_bits_read": est.weight_bits, "cycles": est.cycles,
                             "limit": est.limit, "port_stall_cycles": est.bound_cycles["port"],
                             "fill_stall_cycles": est.bound_cycles["fill"],
                             "accuracy_hw": accuracy[scheme]})
    for r in rows:
        base = next(q for q in rows if q["config"] == r["config"]
                    and q["port_bits"] == r["port_bits"] and q.get("flash") == r.get("flash")
                    and q["scheme"] == registry.BASELINE.name)
        r["speedup_vs_int8"] = base["cycles"] / r["cycles"]

    def rtl_point(plan, name, P):
        """Compile and simulate ``plan`` on one test image: the row's shared fields."""
        t0 = time.monotonic()
        ddir = out / "designs" / name
        write_design(plan, ddir, x_test[:1].reshape(1, -1))
        rep = simulate(ddir, sim=sim, progress=False)
        est = estimate_cycles(plan)
        return rep, {"lanes": plan.lanes, "cpar": plan.cpar,
                     "config": config_label(plan.lanes, P), "scheme": plan.scheme,
                     "rtl_cycles": rep["cycles"],
                     "model_cycles": est.cycles,
                     "error": (est.cycles - rep["cycles"]) / rep["cycles"],
                     "bit_exact": rep["bit_exact"], "seconds": round(time.monotonic() - t0, 1)}

    for L, B, *rest in rtl:
        P = rest[0] if rest else 1
        for scheme in schemes:
            plan = plan_for(L, P, scheme)
            plan.weight_port_bits = B
            rep, row = rtl_point(plan, f"{scheme}-L{config_label(L, P)}-B{B}", P)
            plan.weight_port_bits = 0
            rtl_rows.append({**row, "port_bits": B, "weight_bits_read": rep["weight_bits_read"]})
            _log(f"[rtl {scheme} L{row['config']} B{B}] {row['rtl_cycles']} cycles (model "
                 f"{row['model_cycles']}, {100 * row['error']:+.2f}%), bit-exact {row['bit_exact']}")
    flash_rows = []
    for L, mode, *rest in rtl_flash:
        P = rest[0] if rest else 1
        for scheme in schemes:
            plan = plan_for(L, P, scheme)
            plan.weight_flash = mode
            rep, row = rtl_point(plan, f"{scheme}-L{config_label(L, P)}-{mode.replace(':', '-')}", P)
            flash_bytes = stream_bits(plan) // 8
            plan.weight_flash = ""
            read = rep.get("flash", {}).get("bytes_read", 0)
            flash_rows.append({**row, "flash": mode, "flash_bytes_read": read,
                               "flash_bytes": flash_bytes})
            _log(f"[rtl {scheme} L{row['config']} {mode} flash] {row['rtl_cycles']} cycles (model "
                 f"{row['model_cycles']}, {100 * row['error']:+.2f}%), {read} flash bytes, "
                 f"bit-exact {row['bit_exact']}")
    for r in flash_rows:
        base = next((q for q in flash_rows if q["config"] == r["config"] and q["flash"] == r["flash"]
                     and q["scheme"] == registry.BASELINE.name), None)
        r["rtl_speedup_vs_int8"] = base["rtl_cycles"] / r["rtl_cycles"] if base else None
    report = {"model": model, "test_images": n, "accuracy_hw": accuracy,
              "lanes": [L for L, _ in configs], "configs": [list(c) for c in configs],
              "bits": list(bits), "qspi_bits": list(QSPI), "grid": rows, "rtl": rtl_rows,
              "flash_modes": list(FLASH_MODES), "rtl_flash": flash_rows,
              "rtl_within_2_percent": all(abs(r["error"]) <= 0.02 for r in rtl_rows + flash_rows),
              "seconds": round(time.monotonic() - t_all, 1)}
    write_bench(out, "bench_bandwidth", report, markdown, _plot)
    return report


def _configs(rep: dict) -> list[tuple[int, int]]:
    """The report's (lanes, cpar) configurations (a report from before cpar: lanes alone)."""
    return [tuple(c) for c in rep.get("configs", [[L, 1] for L in rep["lanes"]])]


def markdown(rep: dict) -> str:
    acc = ", ".join(f"{s} {100 * a:.2f}%" for s, a in rep["accuracy_hw"].items())
    lines = [f"# Memory-bound benchmark: {rep['model']}, weights through a B-bit/cycle link", "",
             f"Accuracy on {rep['test_images']} test images: {acc}. Cycles per inference from "
             f"the cycle model; x int8 = int8 cycles / scheme cycles at the same lanes and B; "
             f"B marked * is QSPI-class (quad SPI at half or the whole engine clock); "
             f"'on chip' is no link; 'N% link' is the share of the cycles the MAC array "
             f"waits for the link (the rest it computes).", ""]
    for cfg in _configs(rep):
        label = config_label(*cfg)
        modes = rep.get("flash_modes", [])
        head = (["scheme", "bits read/weight"]
                + [f"B={b}{'*' if b in rep['qspi_bits'] else ''}" for b in rep["bits"]]
                + ["on chip"] + [f"{m} flash" for m in modes])
        lines += [f"## {_title(cfg)}", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for s in rep["accuracy_hw"]:
            mine = {r.get("flash") or r["port_bits"]: r for r in rep["grid"]
                    if r.get("config", str(r["lanes"])) == label and r["scheme"] == s}
            one = cfg[1] > 1 and mine[None].get("cpar", 1) == 1
            cells = [s + (" (1 channel/cycle)" if one else ""),
                     f"{mine[None]['bits_per_weight_read']:.2f}"]
            for b in (*rep["bits"], None, *modes):
                r = mine[b]
                stall = r["port_stall_cycles"] / r["cycles"]
                cells.append(f"{r['cycles']:,} (x{r['speedup_vs_int8']:.2f}"
                             + (f", {100 * stall:.0f}% link" if stall >= 0.005 else "") + ")")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if rep["rtl"]:
        lines += ["## RTL against the model (Verilator, one test image, bit-exact)", "",
                  "| lanes | B | scheme | RTL cycles | model cycles | error | bit-exact | bits read |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rep["rtl"]:
            lines.append(f"| {r.get('config', r['lanes'])} | {r['port_bits']} | {r['scheme']} | {r['rtl_cycles']:,} | "
                         f"{r['model_cycles']:,} | {100 * r['error']:+.2f}% | "
                         f"{'yes' if r['bit_exact'] else 'NO'} | {r['weight_bits_read']:,} |")
    if rep.get("rtl_flash"):
        lines += ["", "## RTL with the SPI flash model (cocotb + Verilator, one test image)", "",
                  "| lanes | flash | scheme | RTL cycles | model cycles | error | x int8 (RTL) | "
                  "flash bytes read | bit-exact |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rep["rtl_flash"]:
            sp = f"x{r['rtl_speedup_vs_int8']:.2f}" if r["rtl_speedup_vs_int8"] else "-"
            lines.append(f"| {r.get('config', r['lanes'])} | {r['flash']} | {r['scheme']} | {r['rtl_cycles']:,} | "
                         f"{r['model_cycles']:,} | {100 * r['error']:+.2f}% | {sp} | "
                         f"{r['flash_bytes_read']:,} | {'yes' if r['bit_exact'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def _plot(rep: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    configs = _configs(rep)
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 3.8), squeeze=False)
    for ax, cfg in zip(axes[0], configs):
        L = config_label(*cfg)
        mine = [r for r in rep["grid"] if r.get("config", str(r["lanes"])) == L]
        for s in rep["accuracy_hw"]:
            pts = [r for r in mine if r["scheme"] == s and r["port_bits"] is not None]
            fl = [r for r in mine if r["scheme"] == s and r.get("flash")]
            one = cfg[1] > 1 and pts and pts[0].get("cpar", 1) == 1
            line, = ax.plot([r["port_bits"] for r in pts], [r["cycles"] / 1e6 for r in pts],
                            marker=registry.get(s).marker, label=s + (" (x1)" if one else ""))
            ax.scatter([r["flash_bits_per_cycle"] for r in fl], [r["cycles"] / 1e6 for r in fl],
                       marker=registry.get(s).marker, facecolors="none",
                       edgecolors=line.get_color(), s=60, zorder=3)
        for r in rep["rtl"]:
            if r.get("config", str(r["lanes"])) == L:
                ax.scatter([r["port_bits"]], [r["rtl_cycles"] / 1e6], marker="x", color="k",
                           zorder=4, label="RTL" if r is rep["rtl"][0] else None)
        for r in rep.get("rtl_flash", []):
            if r.get("config", str(r["lanes"])) == L:
                ax.scatter([flash_bits_per_cycle(r["flash"])], [r["rtl_cycles"] / 1e6],
                           marker="+", color="r", s=80, zorder=5,
                           label="RTL + flash model" if r is rep["rtl_flash"][0] else None)
        ax.axvspan(min(rep["qspi_bits"]), max(rep["qspi_bits"]), color="gray", alpha=0.15,
                   label="QSPI class")
        ax.set_xscale("log", base=2)
        finish_axes(ax, "weight link (bits per cycle)", f"{rep['model']}, {_title(cfg)}",
                    "Mcycles per inference", legend=7)
    save_figure(fig, path, dpi=110)
