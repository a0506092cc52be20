"""What a warm start needs from a checkpoint file (its SHA-256, a GGUF's metadata and tensor shapes), kept in the program cache folder and keyed by the file's identity.

`flightllm generate` with its program in the cache needs no weights, but it needs the file's
digest (part of the program's cache key), the model's shape and its tokenizer.  Reading them
costs a SHA-256 over the whole file, importing `gguf` and walking the metadata's 98,000 strings
(about 0.3 s for SmolLM2).  This index keeps them in ``$FLIGHTLLM_CACHE/checkpoints/``, one JSON
file per checkpoint path, stamped with the file's identity: its resolved path, size,
modification and change times (nanoseconds), inode and device.  Any write, rename or
replacement of the file changes that identity, and an entry whose identity differs from the
file's now is ignored and rewritten, so a stale entry is never used.  The shape and tokenizer
are still derived from the stored metadata by the current code (`gguf_loader`), so the index
holds only what the file says.  Entries are written atomically; a cache folder that cannot be
written only costs the time saved.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

#: Version of the entry layout; entries of another version are ignored.
FORMAT = 1


def identity(path) -> list:
    """[resolved path, size, mtime_ns, ctime_ns, inode, device] of the file now."""
    st = os.stat(path)
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
            st.st_dev]


def entry_path(path) -> Path:
    """Where the entry of the checkpoint file `path` lives."""
    from ..paths import default_cache_dir
    name = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]
    return default_cache_dir() / "checkpoints" / f"{name}.json"


#: The last entry read or written per entry file, with the identity it holds: a process reads
#: one file's entry several times (metadata, then the digest) and parses its JSON once.
_READ: dict = {}


def read(path) -> dict:
    """The entry of `path` (a dict of what was stored), or {} when there is none, it is
    unreadable, or it was written for another identity of the file."""
    try:
        now, where = identity(path), entry_path(path)
        last = _READ.get(where)
        if last is not None and last["identity"] == now:
            return last
        with open(where, encoding="utf-8") as f:
            entry = json.load(f)
        if entry.get("format") == FORMAT and entry.get("identity") == now:
            _READ[where] = entry
            return entry
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def update(path, seen: list, **items) -> None:
    """Store `items` in the entry of `path`, when the file's identity is still `seen` (taken
    before reading what the items were computed from); other items of the same identity stay.
    Errors are ignored: the index only saves time."""
    try:
        if identity(path) != seen:
            return
        entry = read(path) or {"format": FORMAT, "identity": seen}
        entry.update(items)
        target = entry_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry), encoding="utf-8")
        os.replace(tmp, target)
        _READ[target] = entry
    except (OSError, ValueError, TypeError):
        pass


def file_sha256(path) -> str:
    """SHA-256 of the file's bytes, from the index when the file has not changed since."""
    seen = identity(path)
    digest = read(path).get("sha256")
    if isinstance(digest, str):
        return digest
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    update(path, seen, sha256=digest)
    return digest
