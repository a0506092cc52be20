"""Compiler: LLaMA or OPT checkpoint -> W8A8 quantisation -> HBM placement -> per-core instruction images.

Importing the package is light (programs, buckets, the cache): the quantiser, placement and code
generators (and torch, which calibration needs) are imported when something is compiled, so a
run that takes its program from the cache does not pay for them.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from ..config import load_target
from ..errors import CompileError
from ..spec import isa
from .buckets import KINDS, BucketTable, StepBuilder, core_io
from .identity import model_identity
from .program import Program, StepProgram
from .schedule import ScheduleOptions

if TYPE_CHECKING:                   # the quantiser (and torch) load on first use
    from .quantize import QuantizedModel


def __getattr__(name):
    if name in ("QuantizedModel", "quantize_model"):
        from . import quantize
        return getattr(quantize, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["BucketTable", "compile_model", "compile_compressed", "compile_quantized", "compile_shapes", "Program", "StepProgram", "quantize_model",
           "QuantizedModel"]


def show_progress(progress: bool | None) -> bool:
    """`progress`, or by default: True in a terminal or a notebook (where a silent wait of
    seconds looks like a hang), False under pytest and in pipes."""
    if progress is not None:
        return bool(progress)
    import sys
    return "ipykernel" in sys.modules or bool(getattr(sys.stderr, "isatty", lambda: False)())


def compile_model(ckpt, target="u280", ctx: int | None = None, all_logits: bool = False,
                  calibration_tokens=None, smooth: bool = True, fused: bool = True,
                  weight_bits: int = 8, weight_slots: int = 2, schedule=None,
                  progress: bool | None = None, cache=False) -> Program:
    """Compile a float checkpoint for `target`.

    ctx: KV-cache capacity in tokens (default: the smaller of the target's maximum length and
    the model's context).  all_logits: prefill writes logits for every row (for perplexity).
    calibration_tokens: token ids for smoothing statistics (default: a built-in text).
    weight_slots: weight tiles the weight buffer holds at once (2: the paper's ping-pong
    halves; more: deeper prefetch with smaller tiles).
    schedule: `ScheduleOptions` (or "paper", "all", "stripe_all+compute_fence", ...): the
    schedule improvements beyond the paper (compiler/schedule.py); default the paper's.
    progress: show a progress bar (default: in a terminal or a notebook, see `show_progress`).
    cache: True takes the program from the program cache ($FLIGHTLLM_CACHE or the platform's
    cache folder; the entry `flightllm generate` uses), compiling and storing it on a miss; a
    folder or a `ProgramCache` names another cache.  A program from the cache compiles the
    buckets it lacks from its placement recipe, as this program would; `Generator` stores them
    back into the cache.
    """
    if cache is not False and cache is not None:
        from .cache import ProgramCache
        store = cache if isinstance(cache, ProgramCache) else \
            ProgramCache(None if cache is True else cache)
        given = dict(calibration_tokens=calibration_tokens, smooth=smooth, fused=fused,
                     weight_bits=weight_bits, weight_slots=weight_slots, schedule=schedule)
        defaults = dict(calibration_tokens=None, smooth=True, fused=True, weight_bits=8,
                        weight_slots=2, schedule=None)
        options = {k: v for k, v in given.items()
                   if not (v is defaults[k] or isinstance(v, (bool, int)) and v == defaults[k])}
        return store.get_or_compile(ckpt, target, ctx=ctx, all_logits=all_logits, **options)
    from tqdm.auto import tqdm

    from .families import compiler_family
    bar = tqdm(total=3, desc="compile", unit="stage", disable=not show_progress(progress))
    try:
        bar.set_postfix_str("calibrate + quantize")
        if calibration_tokens is None and smooth:
            calibration_tokens = default_calibration_tokens(ckpt)
        qm = compiler_family(ckpt.args).quantize(ckpt, calibration_tokens if smooth else None,
                                                 weight_bits=weight_bits)
        bar.update()
        program = compile_quantized(qm, target, ctx=ctx, all_logits=all_logits, fused=fused,
                                    weight_slots=weight_slots, schedule=schedule, bar=bar)
        program.meta["identity"] = model_identity(ckpt.args.name, ckpt.tokenizer)
        return program
    finally:
        bar.close()


def compile_quantized(qm: QuantizedModel, target="u280", ctx: int | None = None,
                      all_logits: bool = False, fused: bool = True,
                      weight_slots: int = 2, schedule=None, bar=None) -> Program:
    from .families import compiler_family
    from .fit import check_fits
    from .placement import slot_bytes
    from .recipe import PlacementRecipe
    tgt = load_target(target) if isinstance(target, str) else target
    isa.check_target(tgt)
    schedule = ScheduleOptions.parse(schedule)
    a = qm.args
    place = compiler_family(a).placement
    ctx = default_context(a, tgt, ctx)
    check_fits(qm, tgt, ctx)
    half = slot_bytes(tgt, a, ctx, weight_slots, qm.wide_points)
    # Rows per prefill run: the 128-row MM tile when the step's activations fit on chip, else
    # fewer (a 128-token bucket then runs as several launches of the same stream).
    rows = min(tgt.prefill_bucket, ctx)
    while True:
        if bar is not None:
            bar.set_postfix_str("place weights in HBM")
        plan = place(qm, tgt, ctx, rows, half, weight_slots, schedule)
        builder = StepBuilder(plan, rows, all_logits, fused)
        if bar is not None:
            bar.update(max(0, 2 - bar.n))
            bar.set_postfix_str("instruction streams")
        try:
            steps = {kind: builder.build(kind, ctx, kind) for kind in KINDS}  # whole context
            break
        except CompileError as exc:
            if "on-chip" not in str(exc) or rows == 1:
                raise
            rows //= 2
    if bar is not None:
        bar.update(bar.total - bar.n)
    images = plan.layout.images
    io = core_io(plan)
    program = Program(
        model=asdict(a), target=tgt.name, ctx=ctx, rows=rows, steps=steps,
        channel_static={} if plan.layout.shape_only else
        {ch: bytes_to_array(img.static) for ch, img in images.items() if img.size},
        channel_size={ch: img.size for ch, img in images.items() if img.size},
        io=io, embedding=qm.embedding, meta={"quantization": "W8A8 per-row weights, dynamic "
                                             "per-row INT8 activations", **{
                                                 "smoothing": qm.smoothing}})
    program.builder = builder
    program.recipe = PlacementRecipe.of(qm, weight_slots, schedule, fused)
    program.meta["fused"] = fused
    tiles = [t for cp in plan.cores for lt in cp.layers for ts in lt.values() for t in ts]
    program.meta["weight_slots"] = weight_slots
    program.meta["schedule"] = schedule.as_dict()
    program.meta["weight_bits"] = sorted({t.bits for t in tiles}) if tiles else []
    program.meta["sparse"] = any(t.sparse for t in tiles)
    if plan.layout.shape_only:
        program.meta["shape_only"] = True
    return program


def compile_compressed(cm, target="u280", ctx: int | None = None, all_logits: bool = False,
                       fused: bool = True, weight_slots: int = 2, schedule=None) -> Program:
    """Compile a `compress.CompressedModel` (packed low-bit / N:16-sparse weights, smoothed
    norms, optional block-sparse attention) for `target`."""
    from .quantize import quantized_from_compressed
    program = compile_quantized(quantized_from_compressed(cm), target, ctx=ctx,
                                all_logits=all_logits, fused=fused, weight_slots=weight_slots,
                                schedule=schedule)
    program.meta["quantization"] = f"compressed ({cm.config.name}), dynamic per-row INT8 activations"
    program.meta["identity"] = model_identity(cm.args.name)
    return program


def compile_shapes(args, target="u280", ctx: int | None = None, fused: bool = True,
                   weight_bits: int = 8, qk_density: float = 1.0,
                   weight_slots: int = 2, schedule=None) -> Program:
    """Compile a model from its shapes alone (no weights): the instruction streams and HBM
    layout are those of the real model, the HBM images are sizes only.  For the timing model
    and storage accounting of models not at hand (e.g. LLaMA2-7B); it cannot run.
    `qk_density` below 1 makes the Q and K projections N:16 sparse (the paper's setting: 0.7)."""
    from .families import compiler_family
    qm = compiler_family(args).shape_only(args, weight_bits, qk_density)
    return compile_quantized(qm, target, ctx=ctx, fused=fused, weight_slots=weight_slots,
                             schedule=schedule)


def default_context(args, target, ctx=None) -> int:
    """The KV-cache capacity to compile for: `ctx`, or the smaller of the target's maximum
    length and the model's context, rounded up to a decode bucket."""
    ctx = ctx or min(target.max_length, args.max_seq_len)
    if ctx > target.max_length:
        raise CompileError(f"context {ctx} exceeds the target's maximum length "
                           f"{target.max_length}")
    return -(-ctx // target.decode_bucket) * target.decode_bucket


def bytes_to_array(b: bytearray):
    import numpy as np
    return np.frombuffer(bytes(b), dtype=np.uint8).copy()


def default_calibration_tokens(ckpt, n: int = 512):
    """Token ids of a fixed built-in English text (Python's own documentation topics)."""
    import pydoc_data.topics as topics
    if ckpt.tokenizer is None:
        return None
    keys = sorted(topics.topics)
    text = "\n".join(topics.topics[k] for k in keys[1::2])
    ids = ckpt.tokenizer.encode(text)
    return ids[:n]
