"""Instruction storage accounting: bytes of the bucketed program vs one stream per exact length.

Three figures, for every prefill length and decode context length 1..ctx:

- **bucketed** (what we build, counted): one stream per 128-token prefill bucket and 16-token
  decode bucket; a stream reads the run-time parameters `pos` and `len` (docs/isa.md section 4),
  so a prompt longer than the step's row capacity T reruns the same stream chunk by chunk.
- **per length, static** (the paper's baseline, FlightLLM section 1: "naive per-length instruction
  generation"; computed): a stream per length with no run-time parameter at all.  A prompt of L
  tokens is the whole prefill unrolled: ceil(L / T) chunk launches one after the other, each with
  its positions and lengths baked in, i.e. the instructions of a chunk stream whose context ends
  at that chunk's end; and one decode stream per context length.
- **per length, run-time pos/len** (a second, smaller baseline; computed): a stream per length
  that still reads `pos`/`len`, so a prompt of L tokens needs only the chunk stream of its last
  chunk (prefill) and decode one stream per context length, as above.

Neither per-length figure is materialised: a stream compiled for an exact context end e has the
instructions of the stream of e's bucket with other capacity values (same count, same encoding
width), so each chunk is counted at its bucket stream's size.  `materialised_bytes` builds the
per-length streams of a few lengths for tests/test_program_cache.py, which holds the two equal.
"""
from __future__ import annotations

from dataclasses import dataclass

from .buckets import KINDS, BucketTable, bucket_of, buckets, builder_of


@dataclass
class StorageReport:
    """Instruction bytes: bucketed (counted) and per exact length (computed, two baselines)."""

    max_length: int
    rows: int               # T: the prefill step's row capacity (tokens per chunk launch)
    bucketed: dict          # kind -> bytes of every bucket stream, counted
    streams: dict           # kind -> number of bucket streams
    per_length_static: dict   # kind -> bytes, one stream per length without run-time params
    per_length_runtime: dict  # kind -> bytes, one stream per length reading pos/len
    static_chunks: dict     # kind -> chunk streams the static baseline holds in all

    @property
    def bucketed_bytes(self) -> int:
        return sum(self.bucketed.values())

    @property
    def per_length_static_bytes(self) -> int:
        return sum(self.per_length_static.values())

    @property
    def per_length_runtime_bytes(self) -> int:
        return sum(self.per_length_runtime.values())

    @property
    def reduction(self) -> float:
        """Against the paper's baseline (per-length streams without run-time parameters)."""
        return self.per_length_static_bytes / self.bucketed_bytes

    @property
    def reduction_runtime(self) -> float:
        """Against per-length streams that already read pos/len (chunked prefill)."""
        return self.per_length_runtime_bytes / self.bucketed_bytes

    def table(self) -> str:
        rows = [f"instruction storage, lengths 1..{self.max_length} (prefill chunk T = "
                f"{self.rows} rows)",
                f"{'kind':8s} {'streams':>8s} {'bucketed':>15s} {'per-length static':>19s} "
                f"{'per-length pos/len':>19s}"]
        for k in KINDS:
            rows.append(f"{k:8s} {self.streams[k]:8d} {self.bucketed[k]:15,d} "
                        f"{self.per_length_static[k]:19,d} {self.per_length_runtime[k]:19,d}")
        rows.append(f"{'total':8s} {sum(self.streams.values()):8d} {self.bucketed_bytes:15,d} "
                    f"{self.per_length_static_bytes:19,d} {self.per_length_runtime_bytes:19,d}")
        rows.append(f"reduction {self.reduction:.1f}x against per-length static streams (the "
                    f"paper's baseline), {self.reduction_runtime:.1f}x against per-length "
                    f"streams with run-time pos/len")
        return "\n".join(rows)


def chunk_ends(rows: int, length: int) -> list:
    """Where the chunk launches of a `length`-token prefill end (T = `rows` tokens each)."""
    return [min(length, e) for e in range(rows, length + rows, rows)]


def storage_report(program, target) -> StorageReport:
    """Count the bytes of every bucket stream (compiling the missing ones) and compute both
    per-length baselines for lengths 1..ctx (module docstring)."""
    rows = program.step("prefill").rows
    bucketed, streams, static, runtime, chunks = {}, {}, {}, {}, {}
    for kind in KINDS:
        ends = buckets(target, kind, program.ctx)
        sizes = {end: BucketTable(program, target).step(kind, end)[0].image.nbytes for end in ends}
        bucketed[kind], streams[kind] = sum(sizes.values()), len(ends)

        def size(end, kind=kind, sizes=sizes):
            return sizes[bucket_of(target, kind, end, program.ctx)]

        lengths = range(1, program.ctx + 1)
        runtime[kind] = sum(size(n) for n in lengths)
        if kind == "prefill":
            # prefix sums over chunk ends: length L holds the chunks ending at T, 2T, ..., and L
            full = [0]
            for e in range(rows, program.ctx + 1, rows):
                full.append(full[-1] + size(e))
            static[kind] = sum(full[(n - 1) // rows] + size(n) for n in lengths)
            chunks[kind] = sum(-(-n // rows) for n in lengths)
        else:
            static[kind], chunks[kind] = runtime[kind], program.ctx
    return StorageReport(program.ctx, rows, bucketed, streams, static, runtime, chunks)


def materialised_bytes(program, kind: str, length: int, static: bool = True) -> int:
    """Build the per-length stream(s) of one length with their exact context capacities and
    return their bytes (slow for big models: for spot checks of `storage_report`)."""
    builder = builder_of(program)
    if builder is None:
        raise ValueError("this program has no placement recipe: recompile the model to build "
                         "per-length streams")
    rows = program.step("prefill").rows
    ends = chunk_ends(rows, length) if kind == "prefill" and static else [length]
    return sum(builder.build(kind, e).image.nbytes for e in ends)
