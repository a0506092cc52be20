"""Prediction sweeps: a grid of (target x model x workload x schedule) timing-model predictions, on Ray or serially, cached by content hash.

Each grid point is a pure function of its inputs (the point, the target file, the compiler and
timing-model sources), so its result is stored under the SHA-256 of those and never computed twice.
Points run as Ray tasks: a local Ray started on demand, or an existing cluster (`address`); without
Ray installed they run one after another, and the sweep says how to install the `[sweep]` extra.
Every figure is a PREDICTION of the timing model.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .config import TARGETS_DIR

_SOURCES = ("compiler", "sim/timing.py", "bench.py", "isa.py", "model/args.py", "config.py")
COLUMNS = ("target", "model", "prefill", "decode", "schedule", "weight_bits", "qk_density",
           "all_channels", "prefill_s", "decode_tok_s", "decode_hbm_util", "decode_mem_roofline_tok_s")


@dataclass(frozen=True)
class GridPoint:
    """One prediction: a model of the shape table on a target for a [prefill, decode] workload."""

    target: str
    model: str
    prefill: int
    decode: int
    schedule: str = "paper"
    weight_bits: int = 4
    qk_density: float = 1.0
    all_channels: bool = False      # deal every pseudo-channel over the cores
    ctx: int = 0                    # 0: prefill + decode rounded up to a decode bucket
    decode_stride: int = 1


def grid(targets, models, workloads, schedules, **fixed) -> list:
    """Every combination, in a fixed order."""
    return [GridPoint(t, m, p, d, s, **fixed) for t in targets for m in models
            for p, d in workloads for s in schedules]


def _code_hash() -> str:
    root = Path(__file__).parent
    h = hashlib.sha256()
    for rel in _SOURCES:
        p = root / rel
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def point_key(point: GridPoint, code: str | None = None) -> str:
    """SHA-256 of the point, its target file and the code that predicts it."""
    target_file = Path(point.target) if Path(point.target).suffix else \
        TARGETS_DIR / f"{point.target}.json"
    blob = json.dumps(asdict(point), sort_keys=True).encode() + target_file.read_bytes()
    return hashlib.sha256(blob + (code or _code_hash()).encode()).hexdigest()


def predict(point: GridPoint) -> dict:
    """The figures of one grid point (a pure function of the point)."""
    from .bench import bench
    from .compiler import compile_shapes
    from .config import load_target
    from .model.args import ModelArgs
    target = load_target(point.target)
    if point.all_channels:
        target = target.with_overrides(core_channels=tuple(
            tuple(range(c, target.hbm_channels, target.cores)) for c in range(target.cores)))
    margs = ModelArgs.from_name(point.model)
    end = point.prefill + point.decode
    ctx = point.ctx or -(-end // target.decode_bucket) * target.decode_bucket
    program = compile_shapes(margs, target, ctx=ctx, weight_bits=point.weight_bits,
                             qk_density=point.qk_density, schedule=point.schedule)
    r = bench(program, target, point.prefill, point.decode, point.model,
              decode_stride=point.decode_stride)
    memory, _ = r.roofline(r.decode, r.mv_peak)
    row = {k: v for k, v in asdict(point).items() if k in COLUMNS}
    row.update(prefill_s=r.prefill_seconds, decode_tok_s=r.decode_tokens_per_second,
               decode_hbm_util=r.bandwidth_utilisation(r.decode),
               decode_mem_roofline_tok_s=point.decode / memory if memory else 0.0)
    return row


def _ray():
    try:
        import ray
    except ImportError:
        return None
    return ray


def run(points, cache_dir=None, address: str | None = None, serial: bool = False,
        log=print) -> list:
    """Rows of every point, in order: cached ones read back, the others computed on Ray (or
    serially) and cached."""
    code = _code_hash()
    cache = Path(cache_dir) if cache_dir else None
    rows, todo = [None] * len(points), []
    for i, p in enumerate(points):
        f = cache / f"{point_key(p, code)}.json" if cache else None
        if f is not None and f.exists():
            rows[i] = json.loads(f.read_text())
        else:
            todo.append(i)
    log(f"sweep: {len(points)} points, {len(points) - len(todo)} cached, {len(todo)} to predict")
    ray = None if serial else _ray()
    if todo and ray is None and not serial:
        log("sweep: Ray is not installed; predicting serially (pip install "
            "'flightllm_overlay[sweep]' to run the grid on Ray)")
    if todo and ray is not None:
        started = not ray.is_initialized()
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            task = ray.remote(predict)
            results = ray.get([task.remote(points[i]) for i in todo])
        finally:
            if started:
                ray.shutdown()
    else:
        results = [predict(points[i]) for i in todo]
    for i, row in zip(todo, results):
        rows[i] = row
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            (cache / f"{point_key(points[i], code)}.json").write_text(json.dumps(row))
    return rows


def write_csv(rows, path) -> str:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in COLUMNS})
    return str(path)


def plot(rows, path) -> str:
    """Predicted decode tokens/s of every point beside its memory roofline (PNG)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(max(6, 0.6 * len(rows)), 4))
    ax = fig.subplots()
    labels = [f"{r['target']}/{r['model']}\n{r['prefill']}+{r['decode']} {r['schedule']}"
              for r in rows]
    x = range(len(rows))
    ax.bar(x, [r["decode_tok_s"] for r in rows], label="decode tok/s (PREDICTED)")
    ax.plot(x, [r["decode_mem_roofline_tok_s"] for r in rows], "r_", markersize=20,
            label="HBM roofline")
    ax.set_xticks(list(x), labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("tokens/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return str(path)


def point_fields() -> tuple:
    return tuple(f.name for f in fields(GridPoint))
