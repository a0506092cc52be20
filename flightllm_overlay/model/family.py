"""Model families in the model layer: one registry row per `ModelArgs.arch` (reference, tensor names, shapes).

A family module (`llama.py`, `opt.py`) registers its row when it is imported; `model_family`
imports the family modules (by name, `FAMILY_MODULES`) the first time it is asked for a family
nobody registered yet, so that loading a checkpoint's shape and tokenizer does not import torch
(the float references need it; `flightllm generate` from the program cache does not).  The compiler keeps the matching
rows of its own (quantiser, placement, code generator) in `compiler/families.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import CheckpointError


def _same_name(name: str) -> str:
    return name


@dataclass(frozen=True)
class ModelFamily:
    """What the model layer needs to know about one family."""

    name: str                    # `ModelArgs.arch`
    reference: type              # the float reference, a `Transformer` (sub)class
    embed_name: str              # Hugging Face name of the token embedding
    expected_shapes: Callable    # args -> {tensor name: shape} of a complete checkpoint
    layer_prefix: str            # Hugging Face name prefix of decoder layer i: prefix + "i."
    hf_name: Callable = _same_name   # a safetensors tensor name -> ours (e.g. add a prefix)


_FAMILIES: dict = {}
#: Modules of this package that register families when imported.
FAMILY_MODULES = ("llama", "opt")


def register(family: ModelFamily) -> ModelFamily:
    _FAMILIES[family.name] = family
    return family


def model_family(args) -> ModelFamily:
    """The registry row of `args.arch`; a clear error for a family nobody registered."""
    if args.arch not in _FAMILIES:
        import importlib
        for name in FAMILY_MODULES:
            importlib.import_module(f"{__package__}.{name}")
    try:
        return _FAMILIES[args.arch]
    except KeyError:
        raise CheckpointError(f"no model family {args.arch!r} is registered; known families: "
                              f"{sorted(_FAMILIES)}") from None
