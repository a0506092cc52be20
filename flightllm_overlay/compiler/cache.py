"""Program cache on disk: programs and their bucket streams keyed by a content hash, written atomically.

The key hashes everything a program depends on: the checkpoint's bytes, the target description,
the compiler and ISA versions and the compile options.  An entry is a program file (versioned,
with a SHA-256 per section) whose metadata repeats the key, so a stale entry (other key) or a
corrupted one (checksum) is detected at load and recompiled, never executed.  Writes go to a
temporary file that is renamed into place, so a crash never leaves an entry that loads.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .. import __version__
from ..spec import isa
from ..config import load_target
from ..errors import ProgramError
from .program import FORMAT_VERSION, Program


def default_cache_dir() -> Path:
    return Path(os.environ.get("FLIGHTLLM_CACHE", Path.home() / ".cache" / "flightllm_overlay"))


def checkpoint_digest(source: str) -> str:
    """SHA-256 over the checkpoint's files (a GGUF file, or a folder's config and weights)."""
    path = Path(source)
    files = [path] if path.is_file() else sorted(
        p for p in path.glob("*") if p.suffix in (".json", ".safetensors", ".gguf"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def program_key(ckpt, target, ctx, all_logits, options=None) -> str:
    tgt = load_target(target) if isinstance(target, str) else target
    parts = {
        "checkpoint": checkpoint_digest(ckpt.source) if ckpt.source and Path(ckpt.source).exists()
        else hashlib.sha256(repr(sorted((k, tuple(v.shape)) for k, v in
                                        ckpt.weights.items())).encode()).hexdigest(),
        "target": hashlib.sha256(json.dumps(tgt.raw, sort_keys=True).encode()).hexdigest(),
        "versions": [__version__, FORMAT_VERSION, isa.IMAGE_VERSION],
        "ctx": ctx, "all_logits": bool(all_logits),
        "options": repr(sorted((options or {}).items())),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


class ProgramCache:
    """Compiled programs under `root` (default ~/.cache/flightllm_overlay or $FLIGHTLLM_CACHE)."""

    def __init__(self, root=None):
        self.root = Path(root) if root else default_cache_dir()
        self.hits = self.misses = self.rejected = 0

    def path(self, key: str) -> Path:
        return self.root / f"{key}.fllm"

    def load(self, key: str):
        """The cached program for `key`, or None (missing, stale or corrupt: counted as
        rejected and removed)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            program = Program.load(path)
            if program.meta.get("cache_key") != key:
                raise ProgramError(f"{path} was written for another key")
        except ProgramError:
            self.rejected += 1
            path.unlink(missing_ok=True)
            return None
        return program

    def save(self, key: str, program: Program) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        program.meta["cache_key"] = key
        return program.save(self.path(key))          # atomic: temp file, then rename

    def get_or_compile(self, ckpt, target="u280", ctx=None, all_logits=False, **kw) -> Program:
        """The program for `ckpt`: from the cache when a valid entry exists, else compiled and
        stored.  The result can compile further buckets (`sync` stores them)."""
        from . import compile_model, default_context
        tgt = load_target(target) if isinstance(target, str) else target
        ctx = default_context(ckpt.args, tgt, ctx)
        key = program_key(ckpt, tgt, ctx, all_logits, kw)
        program = self.load(key)
        if program is None:
            self.misses += 1
            program = compile_model(ckpt, tgt, ctx=ctx, all_logits=all_logits, **kw)
            self.save(key, program)
        else:
            self.hits += 1
            program.builder = _LazyBuilder(ckpt, tgt, ctx, all_logits, kw)
        program.meta["cache_key"] = key
        return program

    def sync(self, program: Program) -> Path:
        """Store the program again with the buckets compiled since it was cached."""
        return self.save(program.meta["cache_key"], program)


class _LazyBuilder:
    """Quantises and places the model only when a bucket missing from the cache is needed."""

    def __init__(self, ckpt, target, ctx, all_logits, kw):
        self.args = (ckpt, target, ctx, all_logits, kw)
        self._builder = None

    def build(self, kind, ctx, name=None):
        if self._builder is None:
            from . import compile_model
            ckpt, target, c, all_logits, kw = self.args
            self._builder = compile_model(ckpt, target, ctx=c, all_logits=all_logits,
                                          **kw).builder
        return self._builder.build(kind, ctx, name)
