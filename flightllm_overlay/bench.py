"""Predicted U280 performance of a compiled program for a [prefill, decode] workload (timing model).

Every figure here is a prediction of the timing model (`sim/timing.py`), not a measurement on a
card.  Prefill runs the prompt in launches of the prefill step's rows through the 128-wide
buckets; decode runs one token per launch through the 16-wide buckets, as the runtime does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .compiler.buckets import BucketTable
from .sim.timing import TimingModel
from .spec.counters import CounterField, Counters


@dataclass
class StepFigures:
    """Predicted figures of the runs of one step kind: the timing model's counters summed over
    them, the MPE's MAC slots as scheduled in passes, and stalls (unit, cause) -> cycles."""

    runs: int = 0
    counters: Counters = field(default_factory=Counters)
    mpe_slots: int = 0            # MAC slots the configurable chain spent
    mpe_slots_fixed: int = 0      # ... a fixed dense chain would spend on the same work
    stalls: dict = field(default_factory=dict)

    cycles = CounterField()
    hbm_bytes = CounterField()
    macs = CounterField()

    def dsp_utilisation(self, fixed: bool = False) -> float:
        slots = self.mpe_slots_fixed if fixed else self.mpe_slots
        return self.macs / slots if slots else 0.0


@dataclass
class BenchResult:
    """Predicted figures of one workload."""

    model: str
    prefill_tokens: int
    decode_tokens: int
    clock_hz: float
    prefill: StepFigures
    decode: StepFigures
    channels: int
    hbm_bytes_per_cycle: float
    mm_peak: int
    mv_peak: int
    fused: bool = True
    decode_stride: int = 1
    decode_curve: list = field(default_factory=list)     # (context length, cycles per token)

    @property
    def prefill_seconds(self) -> float:
        return self.prefill.cycles / self.clock_hz

    @property
    def decode_ms_per_token(self) -> float:
        return 1e3 * self.decode.cycles / self.clock_hz / max(self.decode_tokens, 1)

    @property
    def decode_tokens_per_second(self) -> float:
        return 1e3 / self.decode_ms_per_token if self.decode.cycles else 0.0

    def bandwidth_utilisation(self, step: StepFigures) -> float:
        return step.hbm_bytes / (step.cycles * self.channels * self.hbm_bytes_per_cycle)

    def mpe_utilisation(self, step: StepFigures, peak: int) -> float:
        return step.macs / (step.cycles * peak)

    def roofline(self, step: StepFigures, peak: int) -> tuple:
        return (step.hbm_bytes / (self.channels * self.hbm_bytes_per_cycle) / self.clock_hz,
                step.macs / peak / self.clock_hz)

    def report(self) -> str:
        p, d = self.prefill, self.decode
        pm, pc = self.roofline(p, self.mm_peak)
        dm, dc = self.roofline(d, self.mv_peak)
        lines = [
            f"PREDICTED by the timing model (not measured on a card): {self.model}, "
            f"workload [{self.prefill_tokens}, {self.decode_tokens}], "
            f"{'fused (always-on-chip decode)' if self.fused else 'unfused ablation'}",
            f"prefill  {self.prefill_seconds * 1e3:10.2f} ms   ({p.runs} launches)  "
            f"roofline: memory {pm * 1e3:.2f} ms, compute {pc * 1e3:.2f} ms",
            f"decode   {self.decode_ms_per_token:10.3f} ms/token = "
            f"{self.decode_tokens_per_second:.1f} tokens/s  roofline per token: memory "
            f"{dm * 1e3 / max(self.decode_tokens, 1):.3f} ms, compute "
            f"{dc * 1e3 / max(self.decode_tokens, 1):.3f} ms",
            f"HBM bandwidth utilisation ({self.channels} pseudo-channels): prefill "
            f"{self.bandwidth_utilisation(p):.1%}, decode {self.bandwidth_utilisation(d):.1%}",
            f"MPE utilisation: prefill {self.mpe_utilisation(p, self.mm_peak):.1%} of MM peak, "
            f"decode {self.mpe_utilisation(d, self.mv_peak):.1%} of MV peak",
            f"DSP utilisation (useful MACs / MAC slots of the MPE passes): decode "
            f"{d.dsp_utilisation():.1%} configurable sparse chain vs "
            f"{d.dsp_utilisation(fixed=True):.1%} fixed dense chain "
            f"({d.mpe_slots_fixed / max(d.mpe_slots, 1):.2f}x); prefill "
            f"{p.dsp_utilisation():.1%} vs {p.dsp_utilisation(fixed=True):.1%}",
            "decode stalls (unit waited on -> share of stalled cycles):"]
        total = sum(d.stalls.values()) or 1
        for (unit, cause), cyc in sorted(d.stalls.items(), key=lambda kv: -kv[1])[:8]:
            lines.append(f"  {unit:5s} <- {cause:12s} {cyc / total:6.1%}")
        return "\n".join(lines)


def bench(program, target, prefill_tokens: int, decode_tokens: int, name: str = "",
          curve: bool = False, cache: dict | None = None, decode_stride: int = 1,
          progress: bool = False) -> BenchResult:
    """Predict a [prefill_tokens, decode_tokens] workload for `program` on `target`.
    `cache` (bucket name -> Timeline) can be shared between workloads of the same program.
    `decode_stride` k > 1 schedules every k-th decode bucket only and charges each decode step
    at the next scheduled bucket (a longer context: never an optimistic figure).  `progress`:
    a bar over the launches, naming each bucket stream as it is compiled and scheduled (the
    time goes there: seconds per bucket for a 7B model)."""
    if decode_stride < 1:
        raise ValueError(f"decode_stride must be at least 1, got {decode_stride}")
    from tqdm.auto import tqdm
    tm = TimingModel(target)
    cache = {} if cache is None else cache
    rows = program.step("prefill").rows
    bar = tqdm(total=-(-prefill_tokens // rows) + decode_tokens, unit="launch",
               desc=f"bench {name or program.model.get('name', '')}".strip(),
               disable=not progress)

    def timeline(kind, end):
        table = BucketTable(program, target)
        name = table.name(kind, end)
        if name not in cache:
            bar.set_postfix_str(f"compiling and scheduling {name}")
            step, _ = table.step(kind, end)
            streams = step.__dict__.pop("compiled_streams", None)
            cache[name] = (tm.schedule(streams, keep_events=False) if streams else
                           tm.schedule_image(step.image))
        return cache[name]

    def add(fig, tl):
        bar.update()
        fig.runs += 1
        fig.counters = fig.counters + tl.counters
        fig.mpe_slots += tl.mpe_slots
        fig.mpe_slots_fixed += tl.mpe_slots_fixed
        for k, v in tl.stalls.items():
            fig.stalls[k] = fig.stalls.get(k, 0) + v

    pre, dec = StepFigures(), StepFigures()
    for start in range(0, prefill_tokens, rows):
        add(pre, timeline("prefill", min(prefill_tokens, start + rows)))
    width, last = target.decode_bucket, prefill_tokens + decode_tokens
    for pos in range(prefill_tokens, last):
        end = pos + 1
        if decode_stride > 1:     # the next sampled bucket: k buckets wide, from the first one
            first = -(-(prefill_tokens + 1) // width)
            b = -(-end // width)
            b = first + -(-(b - first) // decode_stride) * decode_stride
            end = min(b * width, -(-last // width) * width, program.ctx)
        add(dec, timeline("decode", end))
    bar.close()
    points = []
    if curve:
        for end in range(1, program.ctx + 1):
            points.append((end, timeline("decode", end).cycles))
    chs = sum(len(c) for c in target.core_channels)
    return BenchResult(name or program.model.get("name", "?"), prefill_tokens, decode_tokens,
                       target.clock_hz, pre, dec, chs, target.hbm_bytes_per_cycle,
                       target.cores * target.mm_macs_per_cycle,
                       target.cores * target.mv_macs_per_cycle,
                       bool(program.meta.get("fused", True)), decode_stride, points)


def gantt(timeline, path, title: str = "") -> str:
    """Per-unit Gantt chart of one step (PNG).  Uses a bare matplotlib Figure, so it neither
    needs a display nor changes the pyplot backend of a notebook that calls it."""
    from matplotlib.figure import Figure
    units = ["LD", "ST", "MM", "MV", "MISC"]
    cores = sorted({e.core for e in timeline.events})
    fig = Figure(figsize=(12, 1 + 0.35 * len(units) * len(cores)))
    ax = fig.subplots()
    colors = dict(zip(units, ["tab:blue", "tab:orange", "tab:green", "tab:olive", "tab:red"]))
    labels = []
    for ci, c in enumerate(cores):
        for ui, u in enumerate(units):
            y = ci * len(units) + ui
            bars = [(e.start, max(e.end - e.start, 1)) for e in timeline.events
                    if e.core == c and e.unit == u]
            ax.broken_barh(bars, (y - 0.4, 0.8), color=colors[u])
            labels.append(f"core{c} {u}")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("cycles (predicted)")
    ax.set_title(title or "predicted schedule")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return str(path)

