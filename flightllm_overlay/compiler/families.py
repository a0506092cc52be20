"""Model families in the compiler: each family's quantiser, HBM placement, step code generator and shape-only builder.

One row per `ModelArgs.arch`; adding a family is a row here and one in `model/family.py` (its
float reference and checkpoint names).  `compiler_family(args)` replaces branches on the
architecture everywhere in the compiler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import CompileError
from .codegen import StepCodegen
from .opt import OptPlacement, OptStepCodegen, quantize_opt, shape_only_opt
from .placement import Placement
from .quantize import quantize_model, shape_only_model


@dataclass(frozen=True)
class CompilerFamily:
    """How the compiler treats one model family."""

    name: str
    quantize: Callable       # (ckpt, calibration_tokens, weight_bits=) -> QuantizedModel
    placement: type          # Placement subclass: weights and KV caches over cores and channels
    codegen: type            # StepCodegen subclass: one step's per-core instruction streams
    shape_only: Callable     # (args, weight_bits, qk_density) -> QuantizedModel without weights


FAMILIES = {f.name: f for f in (
    CompilerFamily("llama", quantize_model, Placement, StepCodegen, shape_only_model),
    CompilerFamily("opt", quantize_opt, OptPlacement, OptStepCodegen, shape_only_opt),
)}


def compiler_family(args) -> CompilerFamily:
    """The compiler's row for `args.arch`; a clear error for an unsupported family."""
    try:
        return FAMILIES[args.arch]
    except KeyError:
        raise CompileError(f"the compiler supports the model families {sorted(FAMILIES)}; "
                           f"got {args.arch!r}") from None
