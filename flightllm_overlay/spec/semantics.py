"""Instruction semantics every consumer shares: footprints, dynamic modes, stripe channels, capacity.

One definition of what an instruction touches and how the run-time parameters (`pos`, `len`)
change it, read by the compiler (dependency tokens, the unfused ablation), the functional
simulator and the timing model.  Fields are an instruction's field dict (`Instruction.fields`).
"""
from __future__ import annotations

from enum import IntEnum
from functools import lru_cache

import numpy as np

from ..errors import ProgramError
from . import isa, wformat
from .arithmetic import group_scale_bytes


class Dyn(IntEnum):
    """LD/ST `dyn`: how the run-time parameters change the rows and the HBM address."""

    STATIC = 0      # `rows` rows at `hbm_addr`
    AT_POS = 1      # `len` rows at HBM row `pos` (KV append, RoPE rows)
    HISTORY = 2     # `pos + len` rows from HBM row 0 (the whole KV history)
    STEP = 3        # `len` rows from HBM row 0 (this step's rows)
    LAST = 4        # 1 row: HBM row `len - 1` (the last real token of this step)


# ---------------------------------------------------------------------------------------------
# LD / ST
# ---------------------------------------------------------------------------------------------
_DYN = {int(d): d for d in Dyn}              # Dyn(value) without the enum call


def dyn_rows(f: dict, pos: int, length: int) -> tuple:
    """(rows, HBM byte offset) an LD/ST moves at run time, after its dynamic mode."""
    dyn, rows = f.get("dyn", 0), f.get("rows", 0)
    mode = _DYN[dyn] if dyn in _DYN else Dyn(dyn)       # an unknown mode raises ValueError
    if mode is Dyn.STATIC:
        return rows, f.get("hbm_addr", 0)
    if mode is Dyn.LAST:
        if length < 1 or rows < 1:
            raise ProgramError("dyn=last needs len >= 1 and rows >= 1")
        return 1, f.get("hbm_addr", 0) + (length - 1) * f.get("hbm_stride", 0)
    eff = pos + length if mode is Dyn.HISTORY else length
    if eff > rows:
        raise ProgramError(f"run-time length {eff} exceeds the {rows} rows this instruction "
                           f"was compiled for (pos={pos}, len={length}); pick a larger "
                           f"bucket or a shorter input")
    off = f.get("hbm_addr", 0) + (pos * f.get("hbm_stride", 0) if mode is Dyn.AT_POS else 0)
    return eff, off


def rows_at_capacity(f: dict) -> int:
    """Rows an LD/ST moves when charged at its compiled capacity: one for `dyn=last` and for a
    packed weight tile (one blob of `row_bytes`), otherwise `rows`."""
    if Dyn(f.get("dyn", 0)) is Dyn.LAST or f.get("wfmt", 0):
        return 1
    return f.get("rows", 0)


def stripe_count(f: dict) -> int:
    """Pseudo-channels a (striped) LD reads at once: the `stripe` count (0 and 1: one)."""
    return max(1, f.get("stripe", 0))


def stripe_channels(f: dict, ports) -> list:
    """The pseudo-channels of an LD, in chunk order: a striped LD goes round the executing
    core's ports from `channel` on; anything else uses `channel` alone.  A striped LD whose
    `channel` is not one of `ports` is reported as that channel (the simulator refuses it)."""
    ch, n = f.get("channel", 0), stripe_count(f)
    ports = list(ports)
    if n == 1 or ch not in ports:
        return [ch]
    first = ports.index(ch)
    return [ports[(first + i) % len(ports)] for i in range(n)]


# ---------------------------------------------------------------------------------------------
# MPE
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def kept_keys(rows: int, keys: int, sink: int, window: int) -> int:
    """Average keys per query row that a block-sparse attention pattern keeps, for `rows` queries
    at the last positions of a `keys`-long context (the capacity a bucket is charged at): the
    MPE skips the key blocks the pattern masks, the causal future included (docs/isa.md)."""
    p = np.arange(max(keys - rows, 0), keys)
    qb = p // isa.ATTN_BLOCK
    local = np.minimum(qb, window - 1)                     # whole blocks before the diagonal
    sinks = np.clip(np.minimum(sink, qb - local), 0, None)
    kept = (local + sinks) * isa.ATTN_BLOCK + p % isa.ATTN_BLOCK + 1
    return max(1, -(-int(kept.sum()) // max(len(p), 1)))


def live_rows(f: dict, rows: int, length: int):
    """Rows an MM/MV (`dyn_m`, groups of `m_group`) or MISC (`dyn_rows`, groups of `groups`)
    computes at run time: None for all of them, else the ascending indices r with
    r mod group < len (the tokens of the prompt in each head-major block; docs/isa.md)."""
    if f.get("dyn_m", 0):
        group = f.get("m_group", 0) or rows
    elif f.get("dyn_rows", 0):
        group = max(1, f.get("groups", 0))
    else:
        return None
    return _live(rows, group, length) if length < group else None


@lru_cache(maxsize=1024)
def _live(rows: int, group: int, length: int) -> np.ndarray:
    r = np.arange(rows)
    live = r[r % group < max(length, 0)]
    live.flags.writeable = False
    return live


def mpe_operand(f: dict) -> tuple:
    """(m, n, k, kept weights or None) an MPE instruction works on at capacity: key blocks a
    block-sparse attention pattern skips are left out, N:16 operands count kept weights."""
    g = f.get
    m, n, k = g("m", 0), g("n", 0), g("k", 0)
    if g("blk_win", 0) and (g("dyn_n", 0) or g("dyn_k", 0)):
        keys = kept_keys(m, n if g("dyn_n", 0) else k, g("blk_sink", 0), g("blk_win", 0))
        n, k = (keys, k) if g("dyn_n", 0) else (n, keys)
    return m, n, k, (16 * g("nnz", 0) if g("sparse", 0) else None)


# ---------------------------------------------------------------------------------------------
# Footprints
# ---------------------------------------------------------------------------------------------
def outputs(op: str, f: dict) -> list:
    """[(buffer, byte address, rows, row bytes, stride)] an MPE or MISC instruction writes."""
    g = f.get
    if op in ("MM", "MV"):
        n = g("n", 0)
        return [("gbuf", g("out_addr", 0), g("m", 0), 2 * n, g("out_stride", 0) or 2 * n)]
    if op == "MISC":
        k, rows = g("k", 0), g("rows", 0)
        if g("out_abuf", 0):
            res = [("gbuf", g("a_addr", 0), rows, 2 * k, g("a_stride", 0) or 2 * k)] \
                if g("residual", 0) else []          # quant's residual, in place over a
            scales = rows * act_scale_bytes(g("agroup", 0), k)
            return [("abuf", g("out_addr", 0), rows, k, g("out_stride", 0) or k),
                    ("abuf", g("out2_addr", 0), 1, scales, scales)] + res
        maxima = [("gbuf", g("out2_addr", 0), 1, 4 * rows, 4 * rows)]
        if isa.MISC_OPS[g("op", 0)] == "amax":
            return maxima
        out = [("gbuf", g("out_addr", 0), rows, 2 * k, g("out_stride", 0) or 2 * k)]
        return out + maxima if g("amax", 0) else out
    return []


def act_scale_bytes(agroup: int, k: int) -> int:
    """Bytes of activation scales per row of K channels under `agroup` (quant out, MPE input):
    the FP32 row scale, and with groups an exponent byte per group (`arithmetic.group_scale_bytes`)."""
    return group_scale_bytes(isa.ACT_GROUPS[agroup], k)


def packed_param_bytes(f: dict) -> int:
    """wbuf bytes of group parameters a packed LD writes beside the codes (`wcodes`), else 0."""
    if not f.get("wcodes", 0):
        return 0
    return 4 * f.get("rows", 0) * (f.get("wk", 0) // isa.WEIGHT_GROUPS[f.get("wgroup", 0)])


def code_row_bytes(f: dict) -> int:
    """Bytes of one weight row of an MPE with `wcodes`: k codes, then 4 bytes per group."""
    return wformat.code_row_bytes(f.get("k", 0), isa.code_group(f.get("wcodes", 0)))


def _span(start: int, rows: int, stride: int, row_bytes: int) -> tuple:
    return start, start + max(rows - 1, 0) * stride + row_bytes


def footprint(insn: isa.Instruction, ctx_cap: int) -> list:
    """[(resource, start, end, is_write)] one instruction touches, dynamic extents taken at
    capacity (`ctx_cap` rows for the modes that move a run-time number of rows).  A resource is
    an on-chip buffer name or ("hbm", channel); a striped LD is recorded against its first
    channel (only static weights are striped)."""
    f = insn.fields.get
    op = insn.op
    out = []
    if op in ("LD", "ST"):
        rows, rb = f("rows", 0), f("row_bytes", 0)
        buf = isa.BUFFERS[f("buf", 0)]
        b0 = f("buf_addr", 0)
        if f("wfmt", 0):                        # packed load: kept INT8 weights (or codes
            kept = 16 * f("wn", 0) if f("sparse", 0) else rows * f("wk", 0)   # and parameters)
            params = packed_param_bytes(insn.fields)
            out.append((buf, b0, b0 + kept + params + 4 * rows, True))
            if f("sparse", 0):                  # and the N:16 codes and indices
                out.append(("fsb", f("fsb_addr", 0),
                            f("fsb_addr", 0) + rows // 16 * (f("wk", 0) // 16), True))
                out.append(("meta", f("meta_addr", 0), f("meta_addr", 0) + f("wmeta", 0), True))
            rows = 1
        else:
            out.append((buf, *_span(b0, rows, f("buf_stride", 0), rb), op == "LD"))
        if f("remote", 0):                      # the source range; conservatively also
            # recorded against this core's buffer (a local copy reads it)
            out.append((buf, *_span(f("hbm_addr", 0), rows, f("hbm_stride", 0), rb), False))
        else:
            dyn = Dyn(f("dyn", 0))
            span = max(rows, ctx_cap if dyn in (Dyn.AT_POS, Dyn.LAST) else rows)
            chunk = rb // stripe_count(insn.fields)
            out.append((("hbm", f("channel", 0)),
                        *_span(f("hbm_addr", 0), span, f("hbm_stride", 0), chunk), op == "ST"))
    elif op in ("MM", "MV"):
        m, n, k = f("m", 0), f("n", 0), f("k", 0)
        out.append(("abuf", *_span(f("a_addr", 0), m, f("a_stride", 0) or k, k), False))
        out.append(("abuf", f("a_scale", 0),
                    f("a_scale", 0) + m * act_scale_bytes(f("agroup", 0), k), False))
        rows, cols = (k, n) if f("wt", 0) else (n, k)
        w0 = f("w_addr", 0)
        if f("sparse", 0):                      # kept weights, codes, indices
            out.append(("wbuf", w0, w0 + 16 * f("nnz", 0), False))
            out.append(("fsb", f("fsb_addr", 0), f("fsb_addr", 0) + n // 16 * (k // 16), False))
            out.append(("meta", f("meta_addr", 0), f("meta_addr", 0) + f("meta_len", 0), False))
        elif f("wcodes", 0):                    # code rows, each with its group parameters
            row = code_row_bytes(insn.fields)
            out.append(("wbuf", *_span(w0, n, f("w_stride", 0) or row, row), False))
        else:
            out.append(("wbuf", *_span(w0, rows, f("w_stride", 0) or cols, cols), False))
        if not f("no_wscale", 0):
            out.append(("wbuf", f("w_scale", 0), f("w_scale", 0) + 4 * n, False))
    elif op == "MISC":
        rows, k = f("rows", 0), f("k", 0)
        mop = isa.MISC_OPS[f("op", 0)]
        out.append(("gbuf", *_span(f("a_addr", 0), rows, f("a_stride", 0) or 2 * k, 2 * k),
                    False))
        if mop in ("eadd", "emul", "rmsnorm", "layernorm", "rope"):
            item = 4 if f("b_f32", 0) else 2
            brow = 2 if mop == "layernorm" else 1 if f("bcast_b", 0) or mop == "rmsnorm" else (
                min(rows, max(1, f("groups", 0))) if mop == "rope" else rows)
            out.append(("gbuf", *_span(f("b_addr", 0), brow, f("b_stride", 0) or item * k,
                                       item * k), False))
        if mop == "quant" and f("given_max", 0):     # the rows' partial maxima
            n = 4 * max(1, f("groups", 0))
            out.append(("gbuf", *_span(f("b_addr", 0), rows, f("b_stride", 0) or n, n), False))
    for buf, addr, rows, row_bytes, stride in outputs(op, insn.fields):
        out.append((buf, *_span(addr, rows, stride, row_bytes), True))
    return out
