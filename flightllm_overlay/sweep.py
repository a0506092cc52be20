"""Sweeps of timing-model predictions over (target x model shape x workload x compile options), on Ray or serially, cached by content hash.

A grid point is a pure function of its inputs: the target description (its JSON content, not its
name), the model's shapes, the workload, the compile options and the toolkit's own source code.
Its cache key is the SHA-256 of all of them, so a cached row is reused exactly when nothing that
could change it has changed.  Points sharing (target, model, options) are compiled once, as one
task; tasks run on Ray (a local Ray started on demand, or an existing cluster at `address`), or
serially in this process when Ray is not installed or `serial=True`.

    from flightllm_overlay.sweep import Grid, run_sweep
    grid = Grid(targets=("u280", "vhk158"), models=("smollm2-135m",),
                workloads=((128, 512),), options=({"weight_bits": 4},))
    result = run_sweep(grid, cache_dir="sweep-cache")
    result.write_csv("sweep.csv"); result.plot("sweep.png")

Every figure is a PREDICTION of the timing model, not a measurement on a card.
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError, FlightLLMError

PACKAGE_DIR = Path(__file__).resolve().parent
INSTALL_HINT = "pip install 'flightllm_overlay[sweep]'  (Ray 2.10 to 2.40: newer raylets give up on loaded machines)"

#: Columns of the table, in order: the point's inputs, then the predicted figures.
INPUT_COLUMNS = ("target", "model", "prefill", "decode", "options")
FIGURE_COLUMNS = ("prefill_s", "decode_ms_per_token", "decode_tokens_per_s", "hbm_util_decode",
                  "hbm_util_prefill", "mpe_util_prefill", "mpe_util_decode", "hbm_gbps",
                  "channels", "cores")


class SweepError(FlightLLMError):
    """A sweep could not be set up or one of its points failed."""


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------
def _options_key(options: dict) -> str:
    """Canonical text of a set of compile options (the CSV's `options` column)."""
    return ";".join(f"{k}={options[k]}" for k in sorted(options)) or "-"


@dataclass(frozen=True)
class Point:
    """One prediction: `model` compiled for `target` with `options`, run at [prefill, decode]."""

    target: str                  # a name in targets/ or a path to a target JSON file
    model: str                   # a shape-table name (model/args.py), `@field=value` overrides
    prefill: int
    decode: int
    options: tuple = ()          # sorted (name, value) pairs passed to compile_shapes

    @property
    def options_dict(self) -> dict:
        return dict(self.options)

    def row_inputs(self) -> dict:
        return {"target": self.target, "model": self.model, "prefill": self.prefill,
                "decode": self.decode, "options": _options_key(self.options_dict)}


@dataclass(frozen=True)
class Grid:
    """The cross product targets x models x workloads x options (each options entry is a dict of
    `compile_shapes` keyword arguments, e.g. {"weight_bits": 4, "qk_density": 0.7})."""

    targets: tuple
    models: tuple
    workloads: tuple             # ((prefill, decode), ...)
    options: tuple = ({},)

    def points(self) -> list:
        out = []
        for t, m, (p, d), o in itertools.product(self.targets, self.models, self.workloads,
                                                 self.options):
            out.append(Point(str(t), str(m), int(p), int(d), tuple(sorted(dict(o).items()))))
        return out


# ---------------------------------------------------------------------------------------------
# Content hash and cache
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """SHA-256 of the toolkit's Python sources and target files: a cached row is only reused by
    the same code."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*")):
        if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(PACKAGE_DIR)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def model_args(spec: str):
    """ModelArgs of a model spec: a shape-table name, optionally with field overrides after `@`
    (e.g. ``llama2-7b@n_layers=2,vocab_size=4096`` for a quick, smaller sweep)."""
    from dataclasses import fields
    from .model.args import ModelArgs
    name, _, rest = spec.partition("@")
    args = ModelArgs.from_name(name)
    if not rest:
        return args
    numeric = {f.name: type(getattr(args, f.name)) for f in fields(args)
               if type(getattr(args, f.name)) in (int, float)}
    changes = {}
    for item in rest.split(","):
        key, _, value = item.partition("=")
        if key not in numeric or not value:
            raise ConfigError(f"model spec {spec!r}: {item!r} is not NUMERIC_FIELD=VALUE; "
                              f"numeric fields: {sorted(numeric)}")
        changes[key] = numeric[key](value)
    return args.replace(name=spec, **changes)


def _target_raw(name: str) -> dict:
    from .config import load_target
    return load_target(name).raw


def _model_shape(spec: str) -> dict:
    return asdict(model_args(spec))


def point_key(point: Point) -> str:
    """The content hash of a point: what it computes from, not what it is called."""
    doc = {"target": _target_raw(point.target), "model": _model_shape(point.model),
           "workload": [point.prefill, point.decode], "options": [list(kv) for kv in point.options],
           "code": code_fingerprint()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


class Cache:
    """One JSON file per point, named by its content hash, in `folder`."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> dict | None:
        path = self.folder / f"{key}.json"
        try:
            return json.loads(path.read_text())["figures"]
        except (OSError, ValueError, KeyError):
            return None                       # absent or a torn write: recompute

    def put(self, key: str, point: Point, figures: dict) -> None:
        path = self.folder / f"{key}.json"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"point": point.row_inputs(), "figures": figures}, indent=1))
        tmp.replace(path)                     # atomic: a reader never sees half a file


# ---------------------------------------------------------------------------------------------
# One task: compile once, predict each workload
# ---------------------------------------------------------------------------------------------
def evaluate(target: dict, model: str, options: tuple, workloads: tuple) -> list:
    """Figures of each workload for `model` compiled for the target described by `target` (its
    JSON content, so a worker needs no copy of the file) with `options`: a pure function."""
    from .bench import bench
    from .compiler import compile_shapes
    from .config import target_from_dict

    t = target_from_dict(target)
    ctx = max(p + d for p, d in workloads)
    ctx = -(-ctx // t.decode_bucket) * t.decode_bucket
    program = compile_shapes(model_args(model), t, ctx=ctx, **dict(options))
    cache, out = {}, []
    for p, d in workloads:
        r = bench(program, t, p, d, model, cache=cache)
        out.append({
            "prefill_s": r.prefill_seconds,
            "decode_ms_per_token": r.decode_ms_per_token,
            "decode_tokens_per_s": r.decode_tokens_per_second,
            "hbm_util_decode": r.bandwidth_utilisation(r.decode),
            "hbm_util_prefill": r.bandwidth_utilisation(r.prefill),
            "mpe_util_prefill": r.mpe_utilisation(r.prefill, r.mm_peak),
            "mpe_util_decode": r.mpe_utilisation(r.decode, r.mv_peak),
            "hbm_gbps": r.channels * t.hbm_channel_gbps,
            "channels": r.channels,
            "cores": t.cores,
        })
    return out


def _tasks(points: list) -> list:
    """Group points by (target, model, options), keeping the grid's order."""
    groups: dict = {}
    for p in points:
        groups.setdefault((p.target, p.model, p.options), []).append(p)
    return list(groups.items())


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """The table of a sweep: one row per grid point, in grid order."""

    rows: list
    hits: int = 0                # points read from the cache
    computed: int = 0            # points computed by this run
    backend: str = "serial"
    notes: list = field(default_factory=list)

    def write_csv(self, path) -> Path:
        path = Path(path)
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=INPUT_COLUMNS + FIGURE_COLUMNS)
            w.writeheader()
            for row in self.rows:
                w.writerow(row)
        return path

    def plot(self, path) -> Path:
        """Decode tokens/s and prefill seconds per (model, workload, options), a bar per target."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        targets = list(dict.fromkeys(r["target"] for r in self.rows))
        groups = list(dict.fromkeys((r["model"], r["prefill"], r["decode"], r["options"])
                                    for r in self.rows))
        by = {(r["target"], r["model"], r["prefill"], r["decode"], r["options"]): r
              for r in self.rows}
        fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 1.2 * len(groups) * len(targets)), 7),
                                 sharex=True)
        width = 0.8 / max(len(targets), 1)
        for i, t in enumerate(targets):
            xs = [g + (i - (len(targets) - 1) / 2) * width for g in range(len(groups))]
            for ax, col in zip(axes, ("decode_tokens_per_s", "prefill_s")):
                ax.bar(xs, [by.get((t,) + g, {}).get(col, 0) for g in groups], width, label=t)
        axes[0].set_ylabel("decode tokens/s")
        axes[1].set_ylabel("prefill s")
        axes[1].set_xticks(range(len(groups)))
        axes[1].set_xticklabels([f"{m}\n[{p}, {d}]\n{o}" for m, p, d, o in groups], fontsize=8)
        axes[0].legend(title="target")
        axes[0].set_title("PREDICTED by the timing model (not measured on a card)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _check(points: list) -> None:
    """Fail early, in the driver, on a name that is not a target or a model."""
    for name in {p.target for p in points}:
        _target_raw(name)                # ConfigError names the known targets
    for spec in {p.model for p in points}:
        model_args(spec)                 # CheckpointError names the known models


def _run_serial(tasks, progress):
    for (target, model, options), pts in tasks:
        try:
            figures = evaluate(_target_raw(target), model, options,
                               tuple((p.prefill, p.decode) for p in pts))
        except FlightLLMError as exc:
            raise SweepError(f"sweep: grid point {pts[0].row_inputs()} failed: {exc!r}") from exc
        progress(len(pts))
        yield pts, figures


def _run_ray(tasks, address, num_cpus, timeout_s, progress):
    import ray

    started = not ray.is_initialized()
    if started:
        if address:
            # the cluster's workers run this very package (the content hash assumes so); shipping
            # it needs the cluster's runtime-env agent (ray[default] on the cluster)
            ray.init(address=address, runtime_env={"py_modules": [str(PACKAGE_DIR)]},
                     log_to_driver=False)
        else:
            # local workers inherit the driver's environment: make them import this package
            saved = os.environ.get("PYTHONPATH")
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [str(PACKAGE_DIR.parent)] + ([saved] if saved else []))
            try:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            finally:
                if saved is None:
                    del os.environ["PYTHONPATH"]
                else:
                    os.environ["PYTHONPATH"] = saved
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(evaluate)
        pending = {}
        for (target, model, options), pts in tasks:
            ref = remote.remote(_target_raw(target), model, options,
                                tuple((p.prefill, p.decode) for p in pts))
            pending[ref] = pts
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout_s)
            if not done:
                raise SweepError(f"sweep: no grid task finished within {timeout_s} s; "
                                 f"{len(pending)} tasks still running (raise --timeout)")
            for ref in done:
                pts = pending.pop(ref)
                try:
                    figures = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:      # the prediction raised
                    raise SweepError(f"sweep: grid point {pts[0].row_inputs()} failed: "
                                     f"{exc.cause!r}") from None
                except ray.exceptions.RayError as exc:          # the worker died (e.g. OOM)
                    raise SweepError(
                        f"sweep: Ray lost the task of grid point {pts[0].row_inputs()}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0]}; the points finished "
                        f"so far are cached: rerun with fewer --num-cpus or --serial") from None
                progress(len(pts))
                yield pts, figures
    finally:
        if started:
            ray.shutdown()


def run_sweep(grid: Grid | list, cache_dir=None, serial: bool = False, address: str | None = None,
              num_cpus: int | None = None, timeout_s: float = 3600.0,
              show_progress: bool = False) -> SweepResult:
    """Predict every point of `grid` (a Grid or a list of Points).

    Cached points (by content hash, in `cache_dir`) are read, the rest computed: on Ray unless
    `serial` or Ray is not installed (then serially, with a note on how to install it); on the
    cluster at `address` if given, else on a local Ray of `num_cpus` CPUs started for this call.
    `timeout_s` bounds the wait for each next task to finish."""
    points = grid.points() if isinstance(grid, Grid) else list(grid)
    if not points:
        raise SweepError("sweep: the grid is empty (give at least one target, model, workload)")
    _check(points)
    cache = Cache(cache_dir) if cache_dir else None
    keys = {p: point_key(p) for p in points}
    figures = {}
    if cache:
        for p in points:
            hit = cache.get(keys[p])
            if hit is not None:
                figures[p] = hit
    hits = len(figures)
    todo = [p for p in points if p not in figures]
    result = SweepResult([], hits=hits)
    use_ray = not serial and bool(todo)
    if use_ray and not ray_available():
        use_ray = False
        result.notes.append(f"Ray is not installed: running serially. To run on Ray: "
                            f"{INSTALL_HINT}")
    if address and not use_ray and todo:
        raise SweepError(f"sweep: --address {address} needs Ray ({INSTALL_HINT})")
    result.backend = ("ray" if use_ray else "serial") if todo else "cache"

    bar = None
    if show_progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=f"sweep ({result.backend})", unit="point")

    def progress(n):
        if bar is not None:
            bar.update(n)

    tasks = _tasks(todo)
    runner = (_run_ray(tasks, address, num_cpus, timeout_s, progress) if use_ray
              else _run_serial(tasks, progress))
    try:
        for pts, figs in runner:
            for p, f in zip(pts, figs):
                figures[p] = f
                if cache:
                    cache.put(keys[p], p, f)
    finally:
        if bar is not None:
            bar.close()
    result.computed = len(todo)
    result.rows = [{**p.row_inputs(), **figures[p]} for p in points]
    return result


# ---------------------------------------------------------------------------------------------
# Command line: `flightllm sweep`
# ---------------------------------------------------------------------------------------------
def _workload(text: str) -> tuple:
    import argparse
    try:
        p, d = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not PREFILL,DECODE (e.g. 128,512)") \
            from None
    return p, d


def _option_sets(args) -> tuple:
    """The cross product of the option values given on the command line."""
    axes = [("weight_bits", args.weight_bits)]
    if args.qk_density:
        axes.append(("qk_density", args.qk_density))
    if args.unfused_too:
        axes.append(("fused", [True, False]))
    names = [n for n, _ in axes]
    return tuple(dict(zip(names, values)) for values in itertools.product(*(v for _, v in axes)))


def add_parser(sub) -> None:
    """The `sweep` subcommand of the `flightllm` CLI."""
    p = sub.add_parser(
        "sweep", help="predict a grid of targets x models x workloads x options (timing model)",
        description="Predict, with the timing model, every point of a grid of hardware targets, "
                    "model shapes, [prefill, decode] workloads and compile options; write one "
                    "CSV table and a plot. Runs on Ray (a local Ray, or a cluster with "
                    "--address) or serially; results are cached by content hash. Predictions, "
                    "not measurements.")
    p.add_argument("--targets", nargs="+", default=["u280", "u55c", "vhk158"])
    p.add_argument("--models", nargs="+", default=["smollm2-135m"],
                   help="shape-table names, optionally with overrides: llama2-7b@n_layers=2")
    p.add_argument("--workloads", nargs="+", type=_workload, default=[(128, 512)],
                   metavar="PREFILL,DECODE")
    p.add_argument("--weight-bits", nargs="+", type=int, default=[4], choices=(2, 3, 4, 8))
    p.add_argument("--qk-density", nargs="+", type=float, default=None,
                   help="N:16 densities of the Q and K projections (default dense; the paper: "
                        "0.7)")
    p.add_argument("--unfused-too", action="store_true",
                   help="also the unfused ablation (every intermediate through HBM)")
    p.add_argument("--out", default="sweep.csv", help="CSV table to write")
    p.add_argument("--plot", default=None, help="PNG plot to write (default: beside --out)")
    p.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache",
                                                   "flightllm", "sweep"),
                   help="cache folder (one file per point, named by its content hash)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--serial", action="store_true", help="run in this process, without Ray")
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster (e.g. auto or ray://head:10001); default: a "
                        "local Ray started for this sweep")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds to wait for the next grid task to finish")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    grid = Grid(tuple(args.targets), tuple(args.models), tuple(args.workloads),
                _option_sets(args))
    result = run_sweep(grid, cache_dir=None if args.no_cache else args.cache, serial=args.serial,
                       address=args.address, num_cpus=args.num_cpus, timeout_s=args.timeout,
                       show_progress=True)
    for note in result.notes:
        print(note)
    csv_path = result.write_csv(args.out)
    plot_path = result.plot(args.plot or Path(args.out).with_suffix(".png"))
    print(f"{len(result.rows)} points ({result.hits} from the cache, {result.computed} computed "
          f"on {result.backend}); PREDICTED by the timing model, not measured")
    print(f"wrote {csv_path} and {plot_path}")
    return 0
