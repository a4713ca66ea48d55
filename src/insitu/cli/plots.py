"""The demo's plot: hardware accuracy against weight bits read per weight, per scheme."""

from __future__ import annotations

import json
from pathlib import Path

from ..gen import schemes as registry
from ..gen.util import write_atomic

__all__ = ["plot_demo", "finish_axes", "save_figure", "write_bench"]


def finish_axes(ax, xlabel: str, title: str, ylabel: str = "test accuracy (%)",
                legend: int = 8) -> None:
    """The labels, grid and legend every plot has."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=legend)


def save_figure(fig, path: Path, dpi: int = 100) -> None:
    """Write ``fig`` as a PNG atomically and release it."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)


def write_bench(out: Path, stem: str, report: dict, markdown, plot) -> None:
    """A benchmark's three files, each written atomically: ``stem.json`` (the report),
    ``stem.md`` (``markdown(report)``) and ``stem.png`` (``plot(report, path)``)."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{stem}.json", json.dumps(report, indent=1))
    write_atomic(out / f"{stem}.md", markdown(report))
    plot(report, out / f"{stem}.png")


def plot_demo(rows: list[dict], path: Path, dataset: str) -> bool:
    """One panel per model: each scheme's (bits read per weight, hardware accuracy), dense int8
    marked, the float accuracy as a line.  Returns False when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        for r in mine:
            sch = registry.get(r["scheme"])
            bits = 8 / r["read_ratio_vs_int8"] if r["read_ratio_vs_int8"] else 0
            base = sch is registry.BASELINE
            ax.scatter([bits], [100 * r["accuracy_hw"]], s=140 if base else 60,
                       marker="*" if base else sch.marker, color="k" if base else None,
                       label=f"{r['scheme']}{' (dense baseline)' if base else ''}", zorder=3)
        ax.axhline(100 * mine[0]["accuracy_float"], color="gray", linestyle="--", label="float")
        finish_axes(ax, "weight bits read per weight", f"{model} ({dataset})")
    save_figure(fig, path)
    return True
