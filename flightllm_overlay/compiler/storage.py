"""Instruction storage accounting: bytes of the bucketed program vs one stream per exact length."""
from __future__ import annotations

from dataclasses import dataclass

from .buckets import KINDS, buckets


@dataclass
class StorageReport:
    """Instruction bytes, bucketed (counted) and per exact length (computed)."""

    max_length: int
    bucketed: dict          # kind -> bytes of every bucket stream, counted
    streams: dict           # kind -> number of bucket streams
    per_length: dict        # kind -> bytes if every length had its own stream, computed

    @property
    def bucketed_bytes(self) -> int:
        return sum(self.bucketed.values())

    @property
    def per_length_bytes(self) -> int:
        return sum(self.per_length.values())

    @property
    def reduction(self) -> float:
        return self.per_length_bytes / self.bucketed_bytes

    def table(self) -> str:
        rows = [f"{'kind':8s} {'streams':>8s} {'bucketed':>14s} {'per-length':>16s}"]
        for k in KINDS:
            rows.append(f"{k:8s} {self.streams[k]:8d} {self.bucketed[k]:14,d} "
                        f"{self.per_length[k]:16,d}")
        rows.append(f"{'total':8s} {sum(self.streams.values()):8d} {self.bucketed_bytes:14,d} "
                    f"{self.per_length_bytes:16,d}   reduction {self.reduction:.1f}x")
        return "\n".join(rows)


def storage_report(program, target) -> StorageReport:
    """Count the bytes of every bucket stream (compiling the missing ones) and compute what one
    stream per length 1..ctx would take.  The per-length figure is not materialised: inside a
    bucket, a stream compiled for an exact length has the bucket stream's instructions with other
    capacity values (tests/test_buckets.py; notebooks/03 spot-checks the sizes), so each length
    is counted at its bucket's size.  (Across buckets the size can change, e.g. where on-chip
    regions sized by the context start to dominate; that happens at bucket boundaries.)"""
    bucketed, streams, per_length = {}, {}, {}
    for kind in KINDS:
        ends = buckets(target, kind, program.ctx)
        sizes = {}
        for end in ends:
            step, _ = program.bucket_step(kind, end, target)
            sizes[end] = step.image.nbytes
        bucketed[kind] = sum(sizes.values())
        streams[kind] = len(ends)
        per_length[kind] = 0
        start = 0
        for end in ends:                       # lengths start+1..end share their bucket's size
            per_length[kind] += (end - start) * sizes[end]
            start = end
    return StorageReport(program.ctx, bucketed, streams, per_length)
