"""Model identity: digests of a checkpoint's weights and tokenizer, recorded in programs and checked at run time.

A program records the name of the model it was compiled from and the fingerprint of that model's
tokenizer (`Tokenizer.fingerprint`).  `check_tokenizer` refuses to run a program with another
model's tokenizer: the ids would select the wrong embedding rows and the text would be garbage,
with no error.  `weights_digest` hashes the bytes of in-memory weights, for cache keys of
checkpoints that have no file.
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..errors import ProgramError


def weights_digest(weights: dict) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name]
        arr = t.detach().cpu().contiguous().numpy() if hasattr(t, "detach") else np.asarray(t)
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str | None:
    return None if tokenizer is None else tokenizer.fingerprint


def model_identity(name: str, tokenizer=None) -> dict:
    """What a program records about its model (`meta["identity"]`)."""
    return {"name": str(name), "tokenizer": tokenizer_fingerprint(tokenizer)}


def check_tokenizer(program, tokenizer) -> None:
    """Raise ProgramError when `tokenizer` is not the one of the model `program` was compiled
    from (or produces ids outside the program's vocabulary); the message names both models."""
    if tokenizer is None:
        return
    identity = program.meta.get("identity") or {}
    theirs = getattr(tokenizer, "name", None) or "another model"
    want = identity.get("tokenizer")
    if want is not None and tokenizer_fingerprint(tokenizer) != want:
        raise ProgramError(
            f"this program was compiled from model {identity.get('name')!r}, but the tokenizer "
            f"given is that of {theirs!r} (another vocabulary): its ids would pick the wrong "
            f"embeddings. Run it with {identity.get('name')!r} (`--model`), or compile "
            f"{theirs!r}")
    vocab = getattr(tokenizer, "vocab_size", 0)
    if vocab > program.vocab_size:
        raise ProgramError(
            f"the tokenizer of {theirs!r} has {vocab} ids but the program (model "
            f"{identity.get('name', program.model.get('name'))!r}) has {program.vocab_size} "
            f"embedding rows: run the program with its own model's tokenizer")
