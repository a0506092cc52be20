"""Weight prefetch: move each weight-tile LD up to the point where its weight-buffer slot is free.

Codegen emits a weight tile's LD just before the MPE instructions that use it, which keeps the
ping-pong of the weight-buffer halves going inside one linear layer.  Across the end of a linear
layer the next layer's first tiles would wait behind everything emitted in between: MISC chains,
the attention of every head and the SYS barriers (a SYS is a full fence, so nothing emitted after
it starts before it).  Weights are static, so a tile's LD depends on nothing but its slot of the
weight buffer: this pass moves every such LD to just after the last earlier instruction that
touches an overlapping weight-buffer range (in practice the MPE that read the tile two before),
across barriers too.  The LD then runs while the MPE and MISC finish the previous layer, and the
barrier waits for it (the fence still holds).  Results are unchanged: the move never crosses an
instruction it conflicts with; `deps.insert_tokens` derives the tokens afterwards.
"""
from __future__ import annotations

from ..spec import isa
from ..spec.semantics import Dyn, footprint
from .deps import conflict


def is_weight_load(insn) -> bool:
    """A static LD from HBM into the weight buffer: a weight tile (KV history loads are dyn)."""
    f = insn.fields.get
    return (insn.op == "LD" and isa.BUFFERS[f("buf", 0)] == "wbuf" and not f("remote", 0)
            and Dyn(f("dyn", 0)) is Dyn.STATIC)


def _barrier_to_pass(insn) -> bool:
    """What a weight LD may not move above besides a conflict: another weight LD (the LD queue
    keeps tiles in the order they are used) and a KV-history LD (attention is on the critical
    path; the tile follows it in the LD queue and streams during the attention's compute)."""
    if insn.op != "LD":
        return False
    return is_weight_load(insn) or Dyn(insn.fields.get("dyn", 0)) is not Dyn.STATIC


def hoist_weight_loads(stream: list, ctx_cap: int) -> tuple:
    """(the stream with every weight-tile LD moved as early as its buffer slot allows, the
    `spec.semantics.footprint` of each of its instructions)."""
    out, acc = [], []
    for insn in stream:
        a = footprint(insn, ctx_cap)
        at = len(out)
        if is_weight_load(insn):
            while at > 0 and not _barrier_to_pass(out[at - 1]) and not conflict(a, acc[at - 1]):
                at -= 1
        out.insert(at, insn)
        acc.insert(at, a)
    return out, acc
