"""Schedule options: the compile-time choices that go beyond the paper's schedule, one switch each.

Each option changes how a program moves data or where a fence sits, never what it computes: the
functional results of a program are the same with every combination (tests/test_schedule_options.py).
`PAPER` is the paper's schedule; `ALL` turns every improvement on.  The all-32-channel deal is a
target change (`all_channels`), not an option: a program is compiled for the channels it owns.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import CompileError


@dataclass(frozen=True)
class ScheduleOptions:
    """stripe_all: weight tiles striped over every channel a core owns (the LD `stripe` is a
    channel count), not over the largest power of two of them.
    compute_fence: the per-layer SYS barriers fence compute only (`fence=compute`): weight loads
    keep streaming across them, ordered by explicit tokens (docs/isa.md).
    kv_off_weights: a core's KV-history loads sit on the channels its weight stream leaves idle
    (the channels past its stripe, when the stripe does not cover them all).
    mv_aligned_tiles: weight tiles of a whole number of MV output passes (64 rows on the U280),
    so that no MV pass of a decode step runs with idle output lanes.
    balance_channels: each core's share of heads and rows in proportion to its pseudo-channels
    (11/11/10 when all 32 are dealt), so that no core's weight stream makes the others wait at
    the barriers.
    sfu_split: decode MISC work split into sub-vectors that overlap the matrix-vector work (the
    paper's section 3.3 SFU split): the q/k/v epilogue (RoPE, quantisation) of each head as soon
    as its weight tile is through the MPE, SiLU and the gate x up product per FFN tile, and the
    attention's scores and probabilities double-buffered so that one head's softmax runs while
    the MPE works on the next head; the residual add per slice; and (LLaMA) the whole-row
    quantisations in one pass from the partial row maxima their producers leave (MISC `amax`,
    `given_max`)."""

    stripe_all: bool = False
    compute_fence: bool = False
    kv_off_weights: bool = False
    mv_aligned_tiles: bool = False
    balance_channels: bool = False
    sfu_split: bool = False

    def describe(self) -> str:
        on = [f.name for f in fields(self) if getattr(self, f.name)]
        return "+".join(on) if on else "paper"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def parse(cls, spec) -> "ScheduleOptions":
        """From None, a ScheduleOptions, a dict, or a string: "paper", "all", or names joined by
        '+' / ','."""
        if spec is None:
            return PAPER
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, dict):
            bad = set(spec) - {f.name for f in fields(cls)}
            if bad:
                raise CompileError(f"unknown schedule options {sorted(bad)}; known: {NAMES}")
            return cls(**spec)
        text = str(spec).strip()
        if text == "paper":
            return PAPER
        if text == "all":
            return ALL
        names = [n for n in text.replace(",", "+").split("+") if n]
        bad = [n for n in names if n not in NAMES]
        if bad:
            raise CompileError(f"unknown schedule options {bad}; known: {NAMES}, 'paper', 'all'")
        return replace(PAPER, **{n: True for n in names})


NAMES = tuple(f.name for f in fields(ScheduleOptions))
PAPER = ScheduleOptions()
ALL = ScheduleOptions(**{n: True for n in NAMES})
