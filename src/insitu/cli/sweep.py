"""``insitu sweep``: design-space sweeps (model x scheme x knobs x lanes x board) on Dask.

The spec (a TOML file, or flags) names the values of each dimension; the sweep takes their
grid, or ``random`` points of it.  Every point is two tasks (:mod:`.sweep_tasks`): the model
stage (shared by the points of one model, scheme, knobs and tuning) and the point stage
(compile, cycle model, optional Yosys + nextpnr).  They run on a ``dask.distributed``
cluster: a ``LocalCluster`` of one single-threaded worker process per core by default, or an
existing scheduler (``--scheduler tcp://HOST:8786``).

Every finished point is written at once to ``DIR/results.jsonl`` (one JSON row per line, the
record a re-run resumes from) and the tables ``results.parquet``, ``results.csv`` and
``results.json`` are rewritten from it.  A row is keyed by a hash of the point's whole
configuration and the tool versions: a re-run skips finished points (failed ones too,
unless ``--retry-failed``).  A point that fails is a row with its error; the sweep goes on.
A worker that dies loses its running task, which Dask runs again elsewhere.

Dask and pyarrow are optional dependencies (the ``sweep`` extra, installed by ``make
setup``); this module imports them when a sweep runs.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import random
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..boards.fpga import BOARDS
from ..gen import schemes as registry
from ..gen.util import unknown, write_atomic
from . import sweep_report
from .common import UserError
from .sweep_tasks import (
    MODELS,
    checkpoint_digest,
    config_key,
    model_config,
    model_stage,
    point_stage,
    tool_versions,
)

__all__ = ["SweepSpec", "expand", "run_sweep", "Results", "register", "STAGES"]

#: Optional stages of a point (compile always runs).
STAGES = ("accuracy", "synth")
BLAS_ENV = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


@dataclass
class SweepSpec:
    """What to sweep.  ``knobs``: knob name -> list of values, applied to each scheme that
    has the knob.  ``tune``: ``auto`` (committed fine-tuned checkpoints where they exist for
    the knobs, post-training quantisation otherwise), ``ptq``, or a number of fine-tuning
    epochs.  ``random``: sample that many points of the grid (0: the whole grid)."""
    models: list = field(default_factory=lambda: ["cnn"])
    schemes: list = field(default_factory=lambda: list(registry.NAMES))
    lanes: list = field(default_factory=lambda: [8])
    boards: list = field(default_factory=list)
    knobs: dict = field(default_factory=dict)
    stages: list = field(default_factory=lambda: ["accuracy"])
    tune: str = "auto"
    limit: int | None = None
    random: int = 0
    seed: int = 0
    timeout: float | None = None

    def check(self) -> "SweepSpec":
        """One-line ``UserError`` for the first bad value."""
        def listed(name, values, choices):
            if not values:
                raise UserError(f"Sweep needs at least one value of {name}")
            for v in values:
                if v not in choices:
                    raise UserError(unknown(name.rstrip("s") if name != "lanes" else name, v, choices))
        listed("models", self.models, MODELS)
        listed("schemes", self.schemes, registry.NAMES)
        for b in self.boards:
            if b not in BOARDS:
                raise UserError(unknown("board", b, BOARDS))
        for s in self.stages:
            if s not in STAGES:
                raise UserError(unknown("stage", s, STAGES))
        if "synth" in self.stages and not self.boards:
            raise UserError("The synth stage needs --boards")
        if not self.lanes:
            raise UserError("Sweep needs at least one value of lanes")
        for n in self.lanes:
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 64:
                raise UserError(f"Lanes must be integers in 1..64, not {n!r}")
        for name, values in self.knobs.items():
            owners = [s for s in self.schemes if name in _knob_names(s)]
            if not owners:
                raise UserError(f"No scheme of the sweep has a knob '{name}' (schemes: "
                                f"{', '.join(self.schemes)})")
            for s in owners:
                for v in values:
                    try:
                        registry.get(s).config({name: v})
                    except (TypeError, ValueError) as exc:
                        raise UserError(f"{s} knob {name}={v}: {exc}") from None
        if self.tune not in ("auto", "ptq") and not (str(self.tune).isdigit() and int(self.tune) > 0):
            raise UserError(f"--tune must be auto, ptq or a positive number of epochs, not {self.tune!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise UserError(f"--limit must be a positive number of test images, not {self.limit!r}")
        if not isinstance(self.random, int) or self.random < 0:
            raise UserError(f"random must be a non-negative number of points, not {self.random!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise UserError(f"--timeout must be a positive number of seconds, not {self.timeout!r}")
        return self


def _knob_names(scheme: str) -> list[str]:
    return [f.name for f in fields(registry.get(scheme).Config)]


def load_spec(path) -> SweepSpec:
    """A ``SweepSpec`` from a TOML file (keys as the dataclass fields; ``[knobs]`` a table of
    lists)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"Sweep spec '{path}' cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"Sweep spec '{path}' is not valid TOML ({exc})") from None
    data = data.get("sweep", data)
    names = {f for f in SweepSpec.__dataclass_fields__}
    for key in data:
        if key not in names:
            raise UserError(unknown("sweep spec key", key, sorted(names)))
    spec = SweepSpec(**{k: v for k, v in data.items()})
    spec.knobs = {k: v if isinstance(v, list) else [v] for k, v in spec.knobs.items()}
    spec.tune = str(spec.tune)
    return spec


def expand(spec: SweepSpec) -> list[dict]:
    """The sweep's points, in a stable order (the grid, or ``random`` points of it)."""
    points = []
    boards = spec.boards or [None]
    digests = {}
    for model, scheme in itertools.product(spec.models, spec.schemes):
        mine = {k: v for k, v in spec.knobs.items() if k in _knob_names(scheme)}
        combos = [dict(zip(mine, vals)) for vals in itertools.product(*mine.values())] or [{}]
        for knobs in combos:
            digests[model, scheme, json.dumps(knobs, sort_keys=True)] = checkpoint_digest(
                model, scheme, knobs, spec.tune)
        for knobs, lanes, board in itertools.product(combos, spec.lanes, boards):
            points.append({"model": model, "scheme": scheme, "knobs": knobs, "lanes": lanes,
                           "board": board, "stages": sorted(spec.stages), "tune": spec.tune,
                           "limit": spec.limit, "timeout": spec.timeout,
                           "checkpoint": digests[model, scheme, json.dumps(knobs, sort_keys=True)]})
    if spec.random and spec.random < len(points):
        points = random.Random(spec.seed).sample(points, spec.random)
    return points


def point_key(point: dict, versions: dict) -> str:
    cfg = {k: v for k, v in point.items() if k != "timeout"}
    return config_key(cfg, versions)


class Results:
    """The results table of a sweep folder: ``results.jsonl`` (appended, one row per line)
    and the Parquet / CSV / JSON tables rewritten from it after every row."""

    COLUMNS = ("key", "status", "error", "model", "scheme", "knobs", "lanes", "board", "device",
               "tune", "tuning", "stages", "limit", "test_images", "accuracy_float",
               "accuracy_hw", "weights", "macs", "weight_kb", "bits_per_weight",
               "weight_bits_read", "read_ratio_vs_int8", "activation_kb", "cycles", "limit_by",
               "mac_utilization", "luts", "ffs", "brams", "dsps", "fmax_mhz", "clock_mhz",
               "timing_met", "latency_ms", "synth_seconds", "seconds", "worker_pid", "design")

    def __init__(self, folder):
        self.folder = Path(folder)
        self.log = self.folder / "results.jsonl"
        self.rows: dict[str, dict] = {}
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue                 # a line cut by a crash: that point runs again
                self.rows[row["key"]] = row

    def add(self, row: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[row["key"]] = row

    def table(self) -> list[dict]:
        return [{c: r.get(c) for c in self.COLUMNS} for r in self.rows.values()]

    def write_tables(self) -> None:
        rows = self.table()
        write_atomic(self.folder / "results.json", json.dumps(rows, indent=1))
        write_atomic(self.folder / "results.csv", _csv(rows, self.COLUMNS))
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            return
        cols = {c: [r[c] for r in rows] for c in self.COLUMNS}
        table = pa.table({c: pa.array(v, type=_arrow_type(pa, c, v)) for c, v in cols.items()})
        write_atomic(self.folder / "results.parquet", lambda tmp: pq.write_table(table, tmp))


def _arrow_type(pa, column, values):
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {bool}:
        return pa.bool_() if kinds else pa.string()
    if kinds <= {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    return pa.string()


def _csv(rows, columns) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns))
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


class SweepProgress:
    """``sweep [####    ] done/total points, f failed, r running, s`` on stderr."""

    def __init__(self, total: int, skipped: int, quiet: bool = False, width: int = 30):
        self.total, self.skipped, self.quiet, self.width = total, skipped, quiet, width
        self.done = self.failed = self.running = 0
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last = ""

    def line(self) -> str:
        n = self.done + self.skipped
        bar = "#" * int(self.width * n / max(self.total, 1))
        return (f"sweep [{bar:<{self.width}}] {n}/{self.total} points, {self.failed} failed, "
                f"{self.running} running, {time.monotonic() - self.t0:.0f} s")

    def show(self) -> None:
        """Redraw when the line changed (a terminal: at most once a second; a log file: only
        when a count changed)."""
        line = self.line()
        key = line if self.tty else line.rsplit(",", 1)[0]
        if not self.quiet and key != self.last:
            self.last = key
            print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"\r\033[K{msg}", file=sys.stderr, flush=True)
            self.show()

    def close(self) -> None:
        if not self.quiet:
            print(file=sys.stderr, flush=True)


def _make_client(scheduler: str | None, workers: int | None):
    """``(client, cluster or None)``: the scheduler's client, or a new ``LocalCluster``."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise UserError("insitu sweep needs dask.distributed: run 'make setup' (or pip install "
                        "'insitu[sweep]')") from None
    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError) as exc:
            raise UserError(f"No Dask scheduler at {scheduler} ({exc})") from None
    n = workers or os.cpu_count() or 1
    os.environ.update(BLAS_ENV)          # the worker processes inherit one BLAS thread each
    try:
        import psutil
        memory = int(psutil.virtual_memory().total * 0.8 / n)
    except ImportError:
        memory = "auto"
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           memory_limit=memory, dashboard_address=":0", silence_logs=40)
    return Client(cluster), cluster


def run_sweep(spec: SweepSpec, out_dir, *, scheduler: str | None = None,
              workers: int | None = None, client=None, retry_failed: bool = False,
              verbose: bool = False, quiet: bool = False) -> dict:
    """Run ``spec`` into ``out_dir``; the summary (``points``, ``ran``, ``skipped``,
    ``failed``, ``seconds``, ``workers``, ``timeline``: seconds at each finished point).  ``client``: an existing Dask client to use."""
    out = Path(out_dir).resolve()
    spec.check()
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "spec.json", json.dumps(asdict(spec), indent=1))
    versions = tool_versions()
    points = expand(spec)
    keyed = [(point_key(p, versions), p) for p in points]
    res = Results(out)
    todo = [(k, p) for k, p in keyed
            if k not in res.rows or (retry_failed and res.rows[k].get("status") != "ok")]
    prog = SweepProgress(len(keyed), len(keyed) - len(todo), quiet=quiet)
    t0 = time.monotonic()
    own = client is None and bool(todo)
    cluster = None
    n_workers = 0
    timeline: list[float] = []
    if todo:
        if own:
            client, cluster = _make_client(scheduler, workers)
        try:
            n_workers = len(client.scheduler_info().get("workers", {}))
            _run_points(client, todo, out, res, prog, verbose, timeline, versions)
        finally:
            prog.close()
            if own:
                client.close()
                if cluster is not None:
                    cluster.close()
    res.write_tables()
    rows = [res.rows[k] for k, _ in keyed if k in res.rows]
    summary = {"points": len(keyed), "ran": len(todo), "skipped": len(keyed) - len(todo),
               "failed": sum(r.get("status") != "ok" for r in rows),
               "seconds": round(time.monotonic() - t0, 2), "workers": n_workers,
               "results": str(out / "results.parquet"),
               "timeline": [round(t - t0, 2) for t in timeline]}
    sweep_report.write_reports(rows, out)
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _run_points(client, todo, out: Path, res: Results, prog: SweepProgress, verbose: bool,
                timeline: list, versions: dict):
    root = str(out)
    stages, futures = {}, {}
    for key, p in todo:
        mcfg = model_config(p)
        mkey = "model-" + config_key(mcfg, versions)
        if mkey not in stages:
            stages[mkey] = client.submit(model_stage, mcfg, root, key=mkey, pure=False,
                                         retries=2)
        futures[client.submit(point_stage, p, stages[mkey], root, key, key="point-" + key,
                              pure=False, retries=2)] = (key, p)
    pending = set(futures)
    polled = 0.0
    prog.show()
    try:
        while pending:
            done = [f for f in pending if f.done()]
            pending -= set(done)
            for fut in done:
                key, p = futures[fut]
                try:
                    row = fut.result()
                except Exception as exc:                 # e.g. a worker killed too often
                    row = {"key": key, **{k: p[k] for k in ("model", "scheme", "lanes", "board")},
                           "knobs": json.dumps(p["knobs"], sort_keys=True), "status": "error",
                           "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
                res.add(row)
                res.write_tables()
                timeline.append(time.monotonic())
                prog.done += 1
                prog.failed += row["status"] != "ok"
                if verbose or row["status"] != "ok":
                    prog.log(_row_line(row))
            if time.monotonic() - polled > 2:
                polled = time.monotonic()
                try:
                    prog.running = sum(client.run(_executing).values())
                except Exception:               # a worker going away mid-call
                    pass
            prog.show()
            if pending and not done:
                time.sleep(0.3)
    except BaseException:
        for fut in pending:
            fut.cancel()
        raise


def _executing(dask_worker) -> int:
    """Tasks running on a worker (``client.run`` passes the worker)."""
    return dask_worker.state.executing_count


def _row_line(row: dict) -> str:
    what = f"[{row['model']}/{row['scheme']} {row.get('knobs') or '{}'} x{row['lanes']}" \
           f"{' ' + row['board'] if row.get('board') else ''}]"
    if row["status"] != "ok":
        return f"{what} error: {row['error']}"
    acc = f"{100 * row['accuracy_hw']:.2f}%" if row.get("accuracy_hw") is not None else "-"
    lat = f", {row['latency_ms']:.3f} ms" if row.get("latency_ms") else ""
    luts = f", {row['luts']} LUT4" if row.get("luts") else ""
    return (f"{what} {acc}, {row['weight_kb']:.1f} KB, {row['cycles']} cycles{luts}{lat} "
            f"({row['seconds']:.0f} s)")


# -- command line ----------------------------------------------------------------------------
def _split(text, conv=str, what="value"):
    out = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(conv(item))
        except ValueError:
            raise UserError(f"{what} must be a comma-separated list of integers, not {text!r}") from None
    return out


def spec_from_args(args) -> SweepSpec:
    spec = load_spec(args.spec) if args.spec else SweepSpec()
    if args.model:
        spec.models = _split(args.model)
    if args.schemes:
        spec.schemes = registry.NAMES if args.schemes == "all" else _split(args.schemes)
        spec.schemes = list(spec.schemes)
    if args.lanes:
        spec.lanes = _split(args.lanes, int, "--lanes")
    if args.boards is not None:
        spec.boards = _split(args.boards)
    if args.stages is not None:
        spec.stages = _split(args.stages)
    elif args.boards and "synth" not in spec.stages and not args.spec:
        spec.stages = sorted(set(spec.stages) | {"synth"})
    for item in args.set:
        if "=" not in item:
            raise UserError(f"--set expects KNOB=V1,V2,..., not {item!r}")
        k, v = item.split("=", 1)
        spec.knobs[k.strip()] = _split(v)
    for name in ("tune", "limit", "random", "seed", "timeout"):
        value = getattr(args, name)
        if value is not None:
            setattr(spec, name, str(value) if name == "tune" else value)
    return spec.check()


def _cmd_sweep(args) -> int:
    if args.best is not None:
        if not args.spec:
            raise UserError("--best needs the results: insitu sweep --best EXPR DIR")
        rows = sweep_report.load_rows(args.spec)
        print(sweep_report.best_text(rows, args.best, args.objective))
        return 0
    if not args.output:
        raise UserError("insitu sweep needs -o DIR")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be a positive integer, not {args.workers}")
    spec = spec_from_args(args)
    n = len(expand(spec))
    print(f"sweep: {n} points ({', '.join(spec.models)} x {', '.join(spec.schemes)} x lanes "
          f"{','.join(map(str, spec.lanes))}{' x ' + ','.join(spec.boards) if spec.boards else ''};"
          f" stages compile{''.join(',' + s for s in spec.stages)}) on "
          f"{args.scheduler or f'a LocalCluster of {args.workers or os.cpu_count()} workers'}",
          file=sys.stderr)
    summary = run_sweep(spec, args.output, scheduler=args.scheduler, workers=args.workers,
                        retry_failed=args.retry_failed, verbose=os.environ.get("INSITU_VERBOSE") == "1")
    rows = sweep_report.load_rows(args.output)
    print(sweep_report.front_text(rows))
    print(f"{summary['points']} points: {summary['ran']} run, {summary['skipped']} already done, "
          f"{summary['failed']} failed ({summary['seconds']:.0f} s); wrote {args.output}/results"
          f".parquet (.csv, .json), pareto.md and pareto.png")
    return 0


def register(sub) -> None:
    """``sweep``."""
    sw = sub.add_parser("sweep", help="design-space sweep on Dask: accuracy x memory x LUTs x latency")
    sw.add_argument("spec", nargs="?", metavar="SPEC.toml|RESULTS",
                    help="TOML sweep spec (flags override it); with --best, the sweep folder "
                         "or its results.parquet / .json")
    sw.add_argument("--model", help=f"models, comma-separated ({', '.join(MODELS)})")
    sw.add_argument("--schemes", help="schemes, comma-separated, or all (default: all)")
    sw.add_argument("--lanes", help="lane counts, comma-separated (default: 8)")
    sw.add_argument("--boards", help="boards, comma-separated (icebreaker, ulx3s, versa); "
                                     "adds the synth stage")
    sw.add_argument("--set", action="append", default=[], metavar="KNOB=V1,V2",
                    help="knob values, applied to every scheme with that knob; repeatable")
    sw.add_argument("--stages", help=f"optional stages, comma-separated ({', '.join(STAGES)}; "
                                     "default: accuracy, plus synth with --boards)")
    sw.add_argument("--tune", help="auto (committed fine-tuned checkpoints, default), ptq, or "
                                   "fine-tuning epochs")
    sw.add_argument("--limit", type=int, help="test images for the accuracy (default: all)")
    sw.add_argument("--random", type=int, metavar="N", help="sample N points of the grid")
    sw.add_argument("--seed", type=int, help="seed of --random (default: 0)")
    sw.add_argument("--timeout", type=float, metavar="S", help="seconds each synthesis tool "
                                                               "may run")
    sw.add_argument("--workers", type=int, help="LocalCluster workers (default: the cores)")
    sw.add_argument("--scheduler", metavar="tcp://HOST:8786", help="run on this Dask cluster")
    sw.add_argument("--retry-failed", action="store_true", help="run failed points again")
    sw.add_argument("--best", metavar="EXPR", help='print the best point meeting EXPR, e.g. '
                    '"acc>=0.91,board=icebreaker", and the command that builds it')
    sw.add_argument("--objective", default="auto",
                    help="what --best minimises: latency_ms, weight_kb, luts, cycles "
                         "(default: latency when synthesised, else weight_kb)")
    sw.add_argument("-o", "--output", metavar="DIR", help="sweep folder (results, reports)")
    sw.set_defaults(func=_cmd_sweep)
