"""Length-adaptive compilation: one instruction stream per length bucket, compiled once, reused.

FlightLLM groups lengths into buckets (128 wide for prefill, 16 wide for decode) and serves a
whole bucket with one stream; what varies inside a bucket (the real length, the KV-cache end)
comes from the scheduler's run-time parameters `pos` and `len`, not from new instructions.  A
bucket's stream is compiled for the bucket's end as its context capacity: the timing model
charges that capacity, the functional simulator masks what lies beyond pos + len.
"""
from __future__ import annotations

from tqdm.auto import tqdm

from ..errors import ContextLengthError, ProgramError
from ..spec import isa
from .families import compiler_family
from .program import StepProgram

KINDS = ("prefill", "decode")


def bucket_width(target, kind: str) -> int:
    return target.prefill_bucket if kind == "prefill" else target.decode_bucket


def bucket_of(target, kind: str, end: int, ctx: int) -> int:
    """The bucket (its end position) serving a step that ends at position `end` (exclusive)."""
    if kind not in KINDS:
        raise ValueError(f"step kind must be one of {KINDS}, got {kind!r}")
    if not 1 <= end <= ctx:
        raise ContextLengthError(f"a step ending at position {end} is outside the program's "
                                 f"context of {ctx} tokens; shorten the input or compile with "
                                 f"a larger context")
    width = bucket_width(target, kind)
    return min(-(-end // width) * width, ctx)


def buckets(target, kind: str, ctx: int) -> list:
    """Every bucket end of one kind, up to the context (the last one may be partial)."""
    width = bucket_width(target, kind)
    ends = list(range(width, ctx + 1, width))
    if not ends or ends[-1] != ctx:
        ends.append(ctx)
    return ends


def step_name(kind: str, bucket: int) -> str:
    return f"{kind}@{bucket}"


class StepBuilder:
    """Compiles the stream of any bucket for one placed model (kept by a freshly compiled
    Program so that buckets can be compiled on first use)."""

    def __init__(self, plan, rows: int, all_logits: bool, fused: bool = True):
        self.plan, self.rows, self.all_logits, self.fused = plan, rows, all_logits, fused

    def build(self, kind: str, ctx: int, name: str | None = None) -> StepProgram:
        rows, all_l = (self.rows, self.all_logits) if kind == "prefill" else (1, False)
        gen = compiler_family(self.plan.args).codegen(self.plan, rows, ctx, all_l, self.fused)
        insns = [gen.core_stream(cp) for cp in self.plan.cores]
        streams = [isa.encode_stream(s) for s in insns]
        step = StepProgram(name or step_name(kind, ctx), rows, ctx, all_l, isa.pack_image(streams))
        # the streams as compiled, for a timing model that schedules them before anyone decodes
        # the image (bench.py takes them once: not part of the program)
        step.compiled_streams = [[(i.op, i.fields) for i in s] for s in insns]
        return step


class BucketTable:
    """The length-bucket policy of one program on one target: which stream serves a step, each
    bucket's stream compiled on first use and kept in the program, and exact-length streams for
    comparisons.  A program loaded from a file without a bucket uses its whole-context step for
    it, which gives the same results."""

    def __init__(self, program, target):
        self.program, self.target = program, target

    def name(self, kind: str, end: int) -> str:
        """The stream serving a `kind` step that ends at position `end` (exclusive)."""
        return step_name(kind, bucket_of(self.target, kind, end, self.program.ctx))

    def ends(self, kind: str) -> list:
        return buckets(self.target, kind, self.program.ctx)

    def step(self, kind: str, end: int) -> tuple:
        """(StepProgram, compiled_now) for the bucket serving a `kind` step ending at `end`."""
        name = self.name(kind, end)
        p = self.program
        if name in p.steps:
            return p.steps[name], False
        if p.builder is None:
            return p.step(kind), False
        step = p.steps[name] = p.builder.build(kind, int(name.split("@")[1]))
        return step, True

    def exact(self, kind: str, length: int) -> tuple:
        """(StepProgram, compiled_now) compiled for exactly `length` positions (comparisons)."""
        name = f"{kind}#exact{length}"
        p = self.program
        if name in p.steps:
            return p.steps[name], False
        if p.builder is None:
            raise ProgramError("exact-length streams need a freshly compiled program (this one "
                               "was loaded from a file)")
        step = p.steps[name] = p.builder.build(kind, length, name)
        return step, True

    def compile_all(self, progress: bool = False) -> int:
        """Compile every bucket now (what `flightllm compile --all-buckets` does); returns how
        many were compiled."""
        if self.program.builder is None:
            raise ProgramError("this program was loaded from a file: recompile the model to "
                               "add buckets")
        todo = [(k, b) for k in KINDS for b in self.ends(k)]
        made = 0
        for kind, b in tqdm(todo, desc="buckets", disable=not progress):
            made += self.step(kind, b)[1]
        return made
