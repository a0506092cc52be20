"""Dependency tokens: derive each instruction's wait/release masks from the ranges it touches
(`spec.semantics.footprint`).

Units run their own queues in order; between units, an instruction must wait for the latest
earlier instruction of another unit that touches an overlapping range of the same resource
(read after write, write after read, write after write).  Tokens are FIFO counts per unit pair,
so the k-th release from unit p to unit u is consumed by the k-th wait of u on p: pairs are only
added in increasing order on both sides, and each producer releases at most once per consumer.
A SYS instruction with `fence=all` is a full fence (docs/isa.md), so tracking restarts after it;
one with `fence=compute` lets loads run across it by one barrier, so the instructions of the
phase before it stay in view (tokens order a load against them) until the next barrier.
"""
from __future__ import annotations

from ..config import UNITS
from ..spec.semantics import footprint


def insert_tokens(stream: list, ctx_cap: int, acc_of: list | None = None) -> list:
    """Return the stream with wait/release masks set so program order is respected across units.
    `acc_of`: the `footprint` of each instruction when the caller has them already."""
    n_units = len(UNITS)
    result = [insn.replace(wait=0, release=0) for insn in stream]
    history = [[] for _ in range(n_units)]      # per unit: [(index, footprint)] still in view
    synced = [[-1] * n_units for _ in range(n_units)]   # synced[p][u]: last p-index u waited on
    waits = [0] * len(result)
    releases = [0] * len(result)
    phase_start = 0                             # index of the first instruction of this phase
    for j, insn in enumerate(result):
        u = UNITS.index(insn.unit)
        if insn.op == "SYS":
            if insn.fields.get("fence", 0) and insn.fields.get("op", 0) == 0:
                # compute-only barrier: keep the phase that just ended in view, drop older ones
                history = [[(i, a) for i, a in h if i >= phase_start] for h in history]
            else:
                history = [[] for _ in range(n_units)]
                synced = [[-1] * n_units for _ in range(n_units)]
            phase_start = j + 1
            continue
        acc = acc_of[j] if acc_of is not None else footprint(insn, ctx_cap)
        for p in range(n_units):
            if p == u:
                continue
            floor = synced[p][u]
            for i, other in reversed(history[p]):
                if i <= floor:
                    break
                if conflict(acc, other):
                    waits[j] |= 1 << p
                    releases[i] |= 1 << u
                    synced[p][u] = i
                    break
        history[u].append((j, acc))
    return [insn.replace(wait=waits[j], release=releases[j]) if waits[j] or releases[j] else insn
            for j, insn in enumerate(result)]


def conflict(a: list, b: list) -> bool:
    """Two instructions' footprints conflict: the same resource, overlapping bytes, one writes."""
    for ra, sa, ea, wa in a:
        for rb, sb, eb, wb in b:
            if ra == rb and (wa or wb) and sa < eb and sb < ea:
                return True
    return False
