"""Program cache on disk: programs keyed by a hash of their content, written atomically, bounded in size.

The key hashes everything a program depends on: the checkpoint's bytes (its files, or the bytes of
the weights when it has no file), its tokenizer, the target description, the compiler and ISA
versions, the source code of the compiler (`compiler_source_digest`: another compiler, even of
the same version, never finds this one's entries) and the compile options.  Finding an entry
needs no weights: `flightllm generate` opens the checkpoint lazily and reads its weights only on
a miss.  An entry is a program file (checked end to end, see `program_file`) whose metadata
repeats the key, so a broken entry or one stored under another key is detected at load, removed
with a one-line notice and recompiled, never executed.  Its placement recipe re-runs to its own
streams when it first compiles a bucket it lacks (`buckets.builder_of`); should it not (a
recipe edited by hand), that bucket is refused and the entry removed.  Writes go to a
unique temporary file that is renamed into place.  The cache holds at most
``$FLIGHTLLM_CACHE_MAX`` bytes (default 4G; suffixes K, M, G), evicting the least recently used
entries.  Location: ``$FLIGHTLLM_CACHE``, else the platform's user cache folder
(``~/.cache/flightllm_overlay`` on Linux, ``~/Library/Caches/flightllm_overlay`` on macOS,
``%LOCALAPPDATA%\\flightllm_overlay\\Cache`` on Windows).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

from .. import __version__
from ..spec import isa
from ..config import load_target
from ..errors import ConfigError, FlightLLMError, ProgramError
from ..paths import default_cache_dir  # noqa: F401  (re-exported)
from .identity import tokenizer_fingerprint, weights_digest
from .program import Program
from .program_file import FORMAT_VERSION

DEFAULT_MAX_BYTES = 4 << 30
_STALE_TMP_SECONDS = 3600


def cache_max_bytes(value: str | None = None) -> int:
    """The size cap: `value` or $FLIGHTLLM_CACHE_MAX (bytes, or a number with K/M/G/T)."""
    value = os.environ.get("FLIGHTLLM_CACHE_MAX") if value is None else value
    if value is None or value == "":
        return DEFAULT_MAX_BYTES
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ConfigError(f"FLIGHTLLM_CACHE_MAX={value!r} is not a size: give bytes or a number "
                          f"with K, M, G or T (e.g. 4G)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def checkpoint_digest(source: str) -> str:
    """SHA-256 over the names and SHA-256s of the checkpoint's files (a GGUF file, or a
    folder's config, tokenizer and weights); a file's own digest comes from the file index
    (`model.file_index`) while the file is unchanged."""
    from ..model.file_index import file_sha256
    path = Path(source)
    files = [path] if path.is_file() else sorted(
        p for p in path.glob("*") if p.suffix in (".json", ".safetensors", ".gguf", ".jinja"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + bytes.fromhex(file_sha256(f)))
    return h.hexdigest()


#: The parts of the package whose code decides what a compile produces.
_COMPILER_SOURCES = ("compiler", "compress", "model", "spec", "data", "config.py")
_SOURCE_DIGEST = None


def compiler_source_digest() -> str:
    """SHA-256 over the source files of the compiler and what it reads (`_COMPILER_SOURCES`),
    computed once per process (about 10 ms): part of every key, so that an entry is only ever
    found by the code that compiled it."""
    global _SOURCE_DIGEST
    if _SOURCE_DIGEST is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for name in _COMPILER_SOURCES:
            top = root / name
            files = [top] if top.is_file() else sorted(top.rglob("*.py")) + sorted(
                top.rglob("*.txt"))
            for f in files:
                h.update(f.relative_to(root).as_posix().encode() + b"\0")
                h.update(f.read_bytes())
        _SOURCE_DIGEST = h.hexdigest()
    return _SOURCE_DIGEST


def _checkpoint_part(ckpt) -> str:
    """The checkpoint's part of a key: its files' digest, or its weights' when it has no file."""
    on_disk = bool(ckpt.source) and Path(ckpt.source).exists()
    return checkpoint_digest(ckpt.source) if on_disk else weights_digest(ckpt.weights)


def program_key(ckpt, target, ctx, all_logits, options=None) -> str:
    """The cache key of compiling `ckpt` for `target` with these settings (the checkpoint's
    weights are read only when it has no file to hash)."""
    tgt = load_target(target) if isinstance(target, str) else target
    parts = {
        "checkpoint": _checkpoint_part(ckpt),
        "args": ckpt.args.to_dict() if hasattr(ckpt.args, "to_dict") else repr(ckpt.args),
        "tokenizer": tokenizer_fingerprint(ckpt.tokenizer),
        "target": hashlib.sha256(json.dumps(dataclasses.asdict(tgt), sort_keys=True,
                                            default=repr).encode()).hexdigest(),
        "versions": [__version__, FORMAT_VERSION, isa.IMAGE_VERSION],
        "compiler": compiler_source_digest(),
        "ctx": ctx, "all_logits": bool(all_logits),
        "options": repr(sorted((options or {}).items())),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _notice(message: str) -> None:
    print(f"[flightllm] {message}", file=sys.stderr, flush=True)


class ProgramCache:
    """Compiled programs under `root` (default: see the module docstring).

    max_bytes: size cap (default $FLIGHTLLM_CACHE_MAX or 4 GiB); notice: called with a one-line
    message when an entry is removed because it is broken (default: printed to stderr)."""

    def __init__(self, root=None, max_bytes: int | None = None, notice=_notice):
        self.root = Path(root) if root else default_cache_dir()
        self.max_bytes = cache_max_bytes() if max_bytes is None else int(max_bytes)
        self.notice = notice
        self.hits = self.misses = self.rejected = self.evicted = 0

    def path(self, key: str) -> Path:
        return self.root / f"{key}.fllm"

    def entries(self) -> list:
        """(path, bytes, last use) of every entry (programs and compressed checkpoints), least
        recently used first."""
        out = []
        for p in [*self.root.glob("*.fllm"), *self.root.glob("*.fllmc")]:
            try:
                st = p.stat()
            except OSError:           # removed meanwhile by another process
                continue
            out.append((p, st.st_size, st.st_mtime))
        return sorted(out, key=lambda e: e[2])

    def load(self, key: str):
        """The cached program for `key`, or None (missing; or stale or broken: then removed,
        counted as rejected, and reported by `notice`).  Its placement is re-run (and checked)
        when it first compiles a bucket (`buckets.builder_of`), not here: a run whose buckets
        are all stored does not pay for it."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            program = Program.load(path)
            if program.meta.get("cache_key") != key:
                raise ProgramError(f"{path} was written for another key")
            program.cache_entry = path
        except (FlightLLMError, OSError) as exc:
            self._reject(path, exc, "recompiling")
            return None
        try:
            os.utime(path)            # last use, for least-recently-used eviction
        except OSError:
            pass
        return program

    def _reject(self, path: Path, exc: Exception, then: str) -> None:
        """Count, remove and report a broken entry."""
        self.rejected += 1
        try:
            path.unlink(missing_ok=True)
        except OSError:               # a folder or an unwritable place: leave it, compute anew
            pass
        self.notice(f"removed a broken cache entry {path.name} "
                    f"({str(exc).splitlines()[0][:160]}); {then}")

    def save(self, key: str, program: Program) -> Path:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProgramError(f"cannot create the program cache {self.root}: "
                               f"{exc.strerror or exc}; set FLIGHTLLM_CACHE to a writable "
                               f"folder") from None
        program.meta["cache_key"] = key
        path = program.save(self.path(key))          # atomic: unique temp file, then rename
        self.evict(keep=path)
        return path

    def evict(self, keep: Path | None = None) -> int:
        """Remove least recently used entries until the cache fits `max_bytes` (never `keep`),
        and temporary files left by crashed writers; returns the entries removed."""
        now, removed = time.time(), 0
        for tmp in self.root.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                    tmp.unlink()
            except OSError:
                pass
        entries = self.entries()
        total = sum(e[1] for e in entries)
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            if keep is not None and path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        self.evicted += removed
        return removed

    def get_or_compile(self, ckpt, target="u280", ctx=None, all_logits=False, **kw) -> Program:
        """The program for `ckpt`: from the cache when a valid entry exists, else compiled and
        stored.  Either way it compiles the buckets it lacks on first use (an entry from the
        placement recipe stored with it); `sync` stores them."""
        from . import compile_model, default_context
        tgt = load_target(target) if isinstance(target, str) else target
        ctx = default_context(ckpt.args, tgt, ctx)
        key = program_key(ckpt, tgt, ctx, all_logits, kw)
        program = self.load(key)
        if program is None:
            self.misses += 1
            program = compile_model(ckpt, tgt, ctx=ctx, all_logits=all_logits, **kw)
            try:
                program.cache_entry = self.save(key, program)
            except (FlightLLMError, OSError) as exc:     # a full or read-only cache: run anyway
                self.notice(f"could not store the program in the cache "
                            f"({str(exc).splitlines()[0][:160]}); continuing without it")
        else:
            self.hits += 1
            self.evict(keep=self.path(key))           # the cap may have been lowered
        program.meta["cache_key"] = key
        return program

    def get_or_compress(self, ckpt, config=None, tokens=None, progress: bool = True):
        """`compress.compress(ckpt, tokens, config)`, kept in the cache as a compressed
        checkpoint (``<key>.fllmc``, evicted with the programs): a pure function of the
        checkpoint's bytes, the settings, the calibration tokens and the compressor's code
        (`compiler_source_digest`), so it is computed once (minutes for SmolLM2) and read back
        in seconds.  A broken entry is removed with a notice and computed again."""
        from ..compress import CompressedModel, CompressionConfig, compress
        from ..errors import CheckpointError
        cfg = config or CompressionConfig.flightllm()
        parts = {
            "checkpoint": _checkpoint_part(ckpt),
            "config": cfg.to_dict(),
            "tokens": None if tokens is None else hashlib.sha256(
                json.dumps([int(t) for t in tokens]).encode()).hexdigest(),
            "versions": [__version__], "compiler": compiler_source_digest()}
        key = hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()
                             ).hexdigest()[:32]
        path = self.root / f"{key}.fllmc"
        if path.exists():
            try:
                cm = CompressedModel.load(path)
                if cm.info.get("cache_key") != key:
                    raise CheckpointError(f"{path} was written for another key")
                self.hits += 1
                os.utime(path)
                return cm
            except (FlightLLMError, OSError) as exc:
                self._reject(path, exc, "compressing again")
        self.misses += 1
        cm = compress(ckpt, tokens, cfg, progress=progress)
        cm.info["cache_key"] = key
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{path.name}.{os.getpid()}.tmp"
            cm.save(tmp)
            os.replace(tmp, path)                     # atomic, as the programs
            self.evict(keep=path)
        except OSError as exc:                        # a full or read-only cache: run anyway
            self.notice(f"could not store the compressed checkpoint in the cache "
                        f"({exc}); continuing without it")
        return cm

    def sync(self, program: Program) -> Path:
        """Store the program again with the buckets compiled since it was cached."""
        return self.save(program.meta["cache_key"], program)

