"""Length-adaptive compilation: one instruction stream per length bucket, compiled once, reused.

FlightLLM groups lengths into buckets (128 wide for prefill, 16 wide for decode) and serves a
whole bucket with one stream; what varies inside a bucket (the real length, the KV-cache end)
comes from the scheduler's run-time parameters `pos` and `len`, not from new instructions.  A
bucket's stream is compiled for the bucket's end as its context capacity: the timing model
charges that capacity, the functional simulator masks what lies beyond pos + len.
"""
from __future__ import annotations

from ..errors import CompileError, ContextLengthError, ProgramError
from ..spec import isa
from .program import CoreIO, StepProgram

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
    """Compiles the stream of any bucket for one placed model (kept by a compiled Program, or
    made for a loaded one by `builder_of`, so that buckets can be compiled on first use)."""

    def __init__(self, plan, rows: int, all_logits: bool, fused: bool = True):
        self.plan, self.rows, self.all_logits, self.fused = plan, rows, all_logits, fused

    def build(self, kind: str, ctx: int, name: str | None = None) -> StepProgram:
        from .families import compiler_family
        rows, all_l = (self.rows, self.all_logits) if kind == "prefill" else (1, False)
        gen = compiler_family(self.plan.args).codegen(self.plan, rows, ctx, all_l, self.fused)
        insns = [gen.core_stream(cp) for cp in self.plan.cores]
        streams = [isa.encode_stream(s) for s in insns]
        step = StepProgram(name or step_name(kind, ctx), rows, ctx, all_l, isa.pack_image(streams))
        # the streams as compiled, for a timing model that schedules them before anyone decodes
        # the image (bench.py takes them once: not part of the program)
        step.compiled_streams = [[(i.op, i.fields) for i in s] for s in insns]
        return step


def core_io(plan) -> list:
    """Where the host writes each core's input rows and reads its logits, in a placement."""
    return [CoreIO(cp.input.channel, cp.input.offset, cp.logits.channel, cp.logits.offset,
                   cp.vocab_rows[0], cp.vocab_rows[1]) for cp in plan.cores]


def builder_of(program):
    """The StepBuilder of `program`: the one it was compiled with or, for a program loaded from
    a file, one that re-runs the placement from the file's recipe (kept in `program.builder`);
    None for a program that has neither."""
    if program.builder is None and program.recipe is not None:
        try:
            program.builder = _replay(program)
        except ProgramError as exc:
            entry = getattr(program, "cache_entry", None)
            if entry is None:
                raise
            try:                     # a cache entry that cannot compile its buckets: drop it
                entry.unlink(missing_ok=True)
                done = f"the cache entry {entry.name} is removed: run again to recompile it"
            except OSError:
                done = f"remove the cache entry {entry} and run again"
            raise ProgramError(f"{exc.args[0]}; {done}") from None
    return program.builder


def _replay(program) -> StepBuilder:
    """Re-run the placement of a loaded program from its recipe, and check that it gives the
    file's own HBM layout, I/O map and whole-context streams, instruction for instruction."""
    from ..config import load_target
    from ..model.args import ModelArgs
    from .families import compiler_family
    from .placement import slot_bytes
    args, target, recipe = ModelArgs(**program.model), load_target(program.target), program.recipe
    family = compiler_family(args)
    try:
        plan = family.placement(recipe.model(family.shape_only(args)), target, program.ctx,
                                program.rows, slot_bytes(target, args, program.ctx,
                                                         recipe.weight_slots,
                                                         recipe.wide_points),
                                recipe.weight_slots, recipe.schedule)
        builder = StepBuilder(plan, program.rows, program.step("prefill").all_logits, recipe.fused)
        used = {ch: img for ch, img in plan.layout.images.items() if img.size}
        checks = {
            "HBM channel sizes": ({ch: img.size for ch, img in used.items()}, program.channel_size),
            "static HBM images": ({ch: len(img.static) for ch, img in used.items()},
                                  {ch: v.size for ch, v in program.channel_static.items()}),
            "I/O map": (core_io(plan), program.io)}
        for kind in KINDS:
            image = builder.build(kind, program.ctx, kind).image
            checks[f"{kind} stream"] = (image.tobytes(), program.step(kind).image.tobytes())
    except CompileError as exc:
        raise ProgramError(f"the program's placement cannot be re-run ({exc}); recompile "
                           f"it") from None
    wrong = [what for what, (got, want) in checks.items() if got != want]
    if wrong:
        raise ProgramError(f"re-running the program's placement does not give its own "
                           f"{', '.join(wrong)} (was it compiled by another version?); "
                           f"recompile it to compile its buckets")
    return builder


class BucketTable:
    """The length-bucket policy of one program on one target: which stream serves a step, and
    each bucket's stream compiled on first use and kept in the program (also in a program loaded
    from a file: `builder_of`), and exact-length streams for comparisons."""

    def __init__(self, program, target):
        self.program, self.target = program, target

    def name(self, kind: str, end: int) -> str:
        """The stream serving a `kind` step that ends at position `end` (exclusive)."""
        return step_name(kind, bucket_of(self.target, kind, end, self.program.ctx))

    def ends(self, kind: str) -> list:
        return buckets(self.target, kind, self.program.ctx)

    def _build(self, kind: str, ctx: int, name: str) -> StepProgram:
        builder = builder_of(self.program)
        if builder is None:
            raise ProgramError(f"this program holds no stream {name!r} and cannot compile it "
                               f"(it has no placement recipe); recompile the model")
        step = self.program.steps[name] = builder.build(kind, ctx, name)
        return step

    def step(self, kind: str, end: int) -> tuple:
        """(StepProgram, compiled_now) for the bucket serving a `kind` step ending at `end`."""
        name = self.name(kind, end)
        if name in self.program.steps:
            return self.program.steps[name], False
        return self._build(kind, int(name.split("@")[1]), name), True

    def exact(self, kind: str, length: int) -> tuple:
        """(StepProgram, compiled_now) compiled for exactly `length` positions (comparisons)."""
        name = f"{kind}#exact{length}"
        if name in self.program.steps:
            return self.program.steps[name], False
        return self._build(kind, length, name), True

    def compile_all(self, progress: bool = False) -> int:
        """Compile every bucket now (what `flightllm compile --all-buckets` does); returns how
        many were compiled."""
        from tqdm.auto import tqdm
        todo = [(k, b) for k in KINDS for b in self.ends(k)]
        made = 0
        for kind, b in tqdm(todo, desc="buckets", disable=not progress):
            made += self.step(kind, b)[1]
        return made
