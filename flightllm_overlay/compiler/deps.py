"""Dependency tokens: derive each instruction's wait/release masks from the ranges it touches.

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

from .. import isa
from ..config import UNITS


def accesses(insn: isa.Instruction, ctx_cap: int) -> list:
    """[(resource, start, end, is_write)] for one instruction; dynamic extents taken at capacity."""
    f = insn.fields.get
    op = insn.op
    out = []
    if op in ("LD", "ST"):
        rows, rb = f("rows", 0), f("row_bytes", 0)
        buf = isa.BUFFERS[f("buf", 0)]
        b0 = f("buf_addr", 0)
        if f("wfmt", 0):                        # packed load: kept INT8 weights + row scales
            kept = 16 * f("wn", 0) if f("sparse", 0) else rows * f("wk", 0)
            out.append((buf, b0, b0 + kept + 4 * rows, True))
            if f("sparse", 0):                  # and the N:16 codes and indices
                out.append(("fsb", f("fsb_addr", 0),
                            f("fsb_addr", 0) + rows // 16 * (f("wk", 0) // 16), True))
                out.append(("meta", f("meta_addr", 0), f("meta_addr", 0) + f("wmeta", 0), True))
            rows = 1
        else:
            out.append((buf, b0, b0 + max(rows - 1, 0) * f("buf_stride", 0) + rb, op == "LD"))
        if not f("remote", 0):
            h0, hs = f("hbm_addr", 0), f("hbm_stride", 0)
            span = max(rows, ctx_cap if isa.DYN_MODES[f("dyn", 0)] in ("at_pos", "last") else rows)
            # a striped LD (static weights only) is recorded against its first channel
            rb = rb // max(1, f("stripe", 0))
            out.append((("hbm", f("channel", 0)), h0, h0 + max(span - 1, 0) * hs + rb, op == "ST"))
    elif op in ("MM", "MV"):
        m, n, k = f("m", 0), f("n", 0), f("k", 0)
        a0 = f("a_addr", 0)
        out.append(("abuf", a0, a0 + max(m - 1, 0) * (f("a_stride", 0) or k) + k, False))
        out.append(("abuf", f("a_scale", 0), f("a_scale", 0) + 4 * m, False))
        rows, cols = (k, n) if f("wt", 0) else (n, k)
        w0 = f("w_addr", 0)
        if f("sparse", 0):                      # kept weights, codes, indices
            out.append(("wbuf", w0, w0 + 16 * f("nnz", 0), False))
            out.append(("fsb", f("fsb_addr", 0), f("fsb_addr", 0) + n // 16 * (k // 16), False))
            out.append(("meta", f("meta_addr", 0), f("meta_addr", 0) + f("meta_len", 0), False))
        else:
            out.append(("wbuf", w0, w0 + max(rows - 1, 0) * (f("w_stride", 0) or cols) + cols,
                        False))
        if not f("no_wscale", 0):
            out.append(("wbuf", f("w_scale", 0), f("w_scale", 0) + 4 * n, False))
        o0 = f("out_addr", 0)
        out.append(("gbuf", o0, o0 + max(m - 1, 0) * (f("out_stride", 0) or 2 * n) + 2 * n, True))
    elif op == "MISC":
        rows, k = f("rows", 0), f("k", 0)
        mop = isa.MISC_OPS[f("op", 0)]
        a0 = f("a_addr", 0)
        out.append(("gbuf", a0, a0 + max(rows - 1, 0) * (f("a_stride", 0) or 2 * k) + 2 * k, False))
        if mop in ("eadd", "emul", "rmsnorm", "layernorm", "rope"):
            item = 4 if f("b_f32", 0) else 2
            b0 = f("b_addr", 0)
            brow = 2 if mop == "layernorm" else 1 if f("bcast_b", 0) or mop == "rmsnorm" else (
                min(rows, max(1, f("groups", 0))) if mop == "rope" else rows)
            out.append(("gbuf", b0, b0 + max(brow - 1, 0) * (f("b_stride", 0) or item * k)
                        + item * k, False))
        o0 = f("out_addr", 0)
        if mop == "quant":
            out.append(("abuf", o0, o0 + max(rows - 1, 0) * (f("out_stride", 0) or k) + k, True))
            out.append(("abuf", f("out2_addr", 0), f("out2_addr", 0) + 4 * rows, True))
        else:
            out.append(("gbuf", o0, o0 + max(rows - 1, 0) * (f("out_stride", 0) or 2 * k)
                        + 2 * k, True))
    return out


def insert_tokens(stream: list, ctx_cap: int, acc_of: list | None = None) -> list:
    """Return the stream with wait/release masks set so program order is respected across units.
    `acc_of`: the `accesses` of each instruction when the caller has them already."""
    n_units = len(UNITS)
    result = [insn.replace(wait=0, release=0) for insn in stream]
    history = [[] for _ in range(n_units)]      # per unit: [(index, accesses)] still in view
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
        acc = acc_of[j] if acc_of is not None else accesses(insn, ctx_cap)
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
    """Two instructions' accesses conflict: the same resource, overlapping bytes, one writes."""
    for ra, sa, ea, wa in a:
        for rb, sb, eb, wb in b:
            if ra == rb and (wa or wb) and sa < eb and sb < ea:
                return True
    return False
