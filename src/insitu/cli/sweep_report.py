"""The reports of ``insitu sweep``: Pareto fronts (PNG and Markdown) and ``--best``.

Three fronts over the finished points:

* accuracy vs weight memory (KB), per model: the most accurate point for its memory;
* LUT4 vs latency, per model and board (synthesised points);
* accuracy vs latency per model and board, among the points within the board's LUT count.
"""

from __future__ import annotations

import json
import operator
import re
from pathlib import Path

from ..boards.fpga import BOARDS
from ..gen import schemes as registry
from ..gen.util import write_atomic
from .common import UserError
from .plots import finish_axes, save_figure

__all__ = ["load_rows", "pareto", "fronts", "write_reports", "front_text", "best_text",
           "parse_query"]

#: Short names accepted by ``--best`` for the result columns.
ALIASES = {"acc": "accuracy_hw", "accuracy": "accuracy_hw", "kb": "weight_kb",
           "latency": "latency_ms", "lut": "luts", "lut4": "luts", "fmax": "fmax_mhz"}
OPS = {">=": operator.ge, "<=": operator.le, "!=": operator.ne, "==": operator.eq,
       "=": operator.eq, ">": operator.gt, "<": operator.lt}


def load_rows(path) -> list[dict]:
    """The rows of a sweep folder (``results.json``) or of a results file (.parquet, .json,
    .csv through its folder's JSON)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq
            return pq.read_table(p).to_pylist()
        if p.suffix == ".csv":
            p = p.with_suffix(".json")
        rows = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"No sweep results at '{path}' ({exc})") from None
    if not isinstance(rows, list):
        raise UserError(f"'{p}' is not a sweep results table")
    return rows


def pareto(rows: list[dict], better_x, better_y, x: str, y: str) -> list[dict]:
    """Rows not dominated in (x, y); ``better_*`` is ``min`` or ``max``.  Sorted by x."""
    def at_least(a, b, better):
        return a <= b if better is min else a >= b
    pts = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    front = []
    for r in pts:
        dominated = any(
            at_least(q[x], r[x], better_x) and at_least(q[y], r[y], better_y)
            and (q[x] != r[x] or q[y] != r[y]) for q in pts)
        if not dominated:
            front.append(r)
    uniq = {}
    for r in front:                    # equal points (e.g. lanes that cost nothing): first
        uniq.setdefault((r[x], r[y]), r)
    return sorted(uniq.values(), key=lambda r: r[x])


def fronts(rows: list[dict]) -> dict:
    """``{title: front rows}`` of the three fronts (empty fronts left out)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    out = {}
    for model in dict.fromkeys(r["model"] for r in ok):
        mine = [r for r in ok if r["model"] == model and r.get("accuracy_hw") is not None]
        f = pareto(mine, min, max, "weight_kb", "accuracy_hw")
        if f:
            out[f"{model}: accuracy vs weight KB"] = f
    for model, board in dict.fromkeys((r["model"], r["board"]) for r in ok if r.get("board")):
        mine = [r for r in ok if r["model"] == model and r.get("board") == board
                and r.get("latency_ms")]
        f = pareto(mine, min, min, "luts", "latency_ms")
        if f:
            out[f"{model} on {board}: LUT4 vs latency"] = f
        cap = BOARDS[board].device.capacity["luts"] if board in BOARDS else None
        within = [r for r in mine if r.get("accuracy_hw") is not None
                  and (cap is None or r["luts"] <= cap)]
        f = pareto(within, min, max, "latency_ms", "accuracy_hw")
        if f:
            out[f"{model} on {board}: accuracy vs latency (at most {cap} LUT4)"] = f
    return out


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _row_cells(r: dict) -> list[str]:
    knobs = ", ".join(f"{k}={v}" for k, v in json.loads(r.get("knobs") or "{}").items())
    acc = "-" if r.get("accuracy_hw") is None else f"{100 * r['accuracy_hw']:.2f}%"
    return [r["model"], r["scheme"], knobs or "-", str(r["lanes"]), r.get("board") or "-", acc,
            _fmt(r.get("weight_kb"), ".1f"), _fmt(r.get("cycles"), ","), _fmt(r.get("luts"), "d"),
            _fmt(r.get("fmax_mhz"), ".1f"), _fmt(r.get("latency_ms"), ".3f")]


HEAD = ["model", "scheme", "knobs", "lanes", "board", "accuracy", "weight KB", "cycles",
        "LUT4", "Fmax MHz", "latency ms"]


def markdown(rows: list[dict]) -> str:
    ok = sum(r.get("status") == "ok" for r in rows)
    lines = ["# Sweep: Pareto fronts", "",
             f"{len(rows)} points, {ok} finished, {len(rows) - ok} failed.", ""]
    for title, front in fronts(rows).items():
        lines += [f"## {title}", "", "| " + " | ".join(HEAD) + " |",
                  "|" + "---|" * len(HEAD)]
        lines += ["| " + " | ".join(_row_cells(r)) + " |" for r in front]
        lines.append("")
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        lines += ["## Failed points", ""]
        lines += [f"- {r['model']}/{r['scheme']} {r.get('knobs') or '{}'} x{r['lanes']} "
                  f"{r.get('board') or ''}: {r.get('error')}" for r in failed]
    return "\n".join(lines) + "\n"


def front_text(rows: list[dict]) -> str:
    """The fronts as plain-text tables (the command's output)."""
    out = []
    for title, front in fronts(rows).items():
        cells = [HEAD] + [_row_cells(r) for r in front]
        widths = [max(len(c[i]) for c in cells) for i in range(len(HEAD))]
        out.append(f"Pareto front, {title}:")
        out += ["  " + "  ".join(c[i].ljust(widths[i]) for i in range(len(HEAD))) for c in cells]
    return "\n".join(out) if out else "no finished points"


def plot(rows: list[dict], path: Path) -> None:
    """One row of panels per model: accuracy vs weight KB, and with synthesised points LUT4
    vs latency and accuracy vs latency (each scheme a marker, each board a colour shade of
    its front line)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [r for r in rows if r.get("status") == "ok"]
    models = list(dict.fromkeys(r["model"] for r in ok))
    panels = [("weight_kb", "accuracy_hw", "weight memory (KB)", "accuracy (%)",
               "accuracy vs weight KB")]
    if any(r.get("latency_ms") for r in ok):
        panels += [("luts", "latency_ms", "LUT4", "latency (ms)", "LUT4 vs latency"),
                   ("latency_ms", "accuracy_hw", "latency (ms)", "accuracy (%)",
                    "accuracy vs latency")]
    fig, axes = plt.subplots(len(models), len(panels), figsize=(5.2 * len(panels),
                                                               3.6 * len(models)), squeeze=False)
    fr = fronts(rows)
    for row_axes, model in zip(axes, models):
        mine = [r for r in ok if r["model"] == model]
        for ax, (x, y, xl, yl, tag) in zip(row_axes, panels):
            for scheme in registry.NAMES:
                pts = [r for r in mine if r["scheme"] == scheme and r.get(x) is not None
                       and r.get(y) is not None]
                if pts:
                    ax.scatter([r[x] for r in pts],
                               [100 * r[y] if y == "accuracy_hw" else r[y] for r in pts],
                               marker=registry.get(scheme).marker, label=scheme, alpha=0.7)
            for title, front in fr.items():
                if tag not in title or not title.startswith(f"{model}:") and \
                        not title.startswith(f"{model} on "):
                    continue
                fx, fy = [r[x] for r in front], [r[y] for r in front]
                ax.plot(fx, [100 * v if y == "accuracy_hw" else v for v in fy],
                        drawstyle="steps-post", linewidth=1, marker="o", mfc="none", ms=11,
                        label="front" + (f" ({front[0]['board']})" if x != "weight_kb" else ""))
            finish_axes(ax, xl, f"{model}: {tag}", yl, legend=7)
    save_figure(fig, path, dpi=100)


def write_reports(rows: list[dict], out: Path) -> None:
    write_atomic(out / "pareto.md", markdown(rows))
    if any(r.get("status") == "ok" for r in rows):
        plot(rows, out / "pareto.png")


def parse_query(expr: str) -> list[tuple[str, str, object]]:
    """``"acc>=0.91,board=icebreaker"`` -> ``[(column, op, value), ...]``."""
    clauses = []
    for part in expr.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|!=|==|=|>|<)\s*(.+)$", part)
        if not m:
            raise UserError(f"--best clause '{part}' is not NAME OP VALUE (e.g. acc>=0.91)")
        name, op, value = m.groups()
        col = ALIASES.get(name, name)
        try:
            val = float(value)
            if col == "accuracy_hw" and val > 1:
                val /= 100                              # acc>=91 means 91%
        except ValueError:
            val = value.strip()
        clauses.append((col, op, val))
    return clauses


def best(rows: list[dict], expr: str, objective: str = "auto") -> dict:
    clauses = parse_query(expr)
    columns = set().union(*(r.keys() for r in rows)) if rows else set()
    for col, _, _ in clauses:
        if col not in columns:
            raise UserError(f"--best names an unknown column '{col}' (columns: "
                            f"{', '.join(sorted(columns))}; or acc, kb, latency, luts, fmax)")
    ok = [r for r in rows if r.get("status") == "ok"]

    def meets(r):
        for col, op, val in clauses:
            v = r.get(col)
            if v is None:
                return False
            try:
                if not OPS[op](v, val if isinstance(v, (int, float)) else str(val)):
                    return False
            except TypeError:
                return False
        return True
    cands = [r for r in ok if meets(r)]
    if not cands:
        raise UserError(f"No finished point of the sweep meets '{expr}'")
    if objective == "auto":
        objective = "latency_ms" if any(r.get("latency_ms") for r in cands) else "weight_kb"
    objective = ALIASES.get(objective, objective)
    if objective not in columns:
        raise UserError(f"--objective '{objective}' is not a column of the results")
    cands = [r for r in cands if r.get(objective) is not None] or cands
    return min(cands, key=lambda r: (r.get(objective) or 0, r.get("luts") or 0,
                                     r.get("weight_kb") or 0)) | {"_objective": objective}


def _short(path: str) -> str:
    """``path`` relative to the working folder when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def best_text(rows: list[dict], expr: str, objective: str = "auto") -> str:
    r = best(rows, expr, objective)
    obj = r.pop("_objective")
    cells = dict(zip(HEAD, _row_cells(r)))
    board = r.get("board") or "BOARD"
    lines = [f"best point meeting '{expr}' (lowest {obj}):"]
    lines += [f"  {k:10s} {v}" for k, v in cells.items()]
    lines += [f"  key        {r['key']}", "build it:",
              f"  insitu synth {_short(r['design'])} --board {board} -o build/best-{board}"]
    return "\n".join(lines)
