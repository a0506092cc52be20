"""Beats of the MPE's AXI4-Stream links (docs/mpe_stream.md, and the parallel-pass kinds of docs/mpe_rtl.md) for the RTL MPE kernel.

``program_beats`` turns a Program (hw/mpe_model.py) into `op` beats: INSN, ACT and PASS (the
parallel format, one activation tile then weight-only beats); ``operand_beats`` gives the
one-chain OPERAND beats of docs/mpe_stream.md for an instruction; ``result_words`` joins the
`res` beats of each result tile.  Byte 63 of an `op` beat is its KIND; fields are little-endian.
"""
from __future__ import annotations

import numpy as np

from .mpe_model import BLOCK, MPEOp, MPEParams, Pass, Program

BEAT = 64
KIND_INSN, KIND_OPERAND, KIND_ACT, KIND_PASS, KIND_END = 0x01, 0x02, 0x03, 0x04, 0x0F
SLOT_BYTES = 26                  # W[16], IDX[8], code|en|dj, r0|kval-1


def _beat(kind: int) -> bytearray:
    b = bytearray(BEAT)
    b[63] = kind
    return b


def _nibbles(idx) -> bytes:
    i8 = np.asarray(idx, np.uint8)
    return (i8[0::2] | (i8[1::2] << 4)).astype(np.uint8).tobytes()


def insn_beat(macs: int, fixed_macs: int, mode: int, parallel: bool, pc: int = 0) -> bytes:
    b = _beat(KIND_INSN)
    b[0:8] = int(macs).to_bytes(8, "little")
    b[8:16] = int(fixed_macs).to_bytes(8, "little")
    b[16:20] = int(pc).to_bytes(4, "little")
    b[20] = mode
    b[21] = int(parallel)
    return bytes(b)


def act_beat(ld) -> bytes:
    mv, bank, row, j, data = ld
    b = _beat(KIND_ACT)
    b[0:16] = data
    b[56] = row
    b[57:59] = int(j).to_bytes(2, "little")
    b[59] = bank | (mv << 1)
    return bytes(b)


def pass_beats(p: MPEParams, ps: Pass) -> list[tuple[bytes, bool]]:
    """The PASS beats of one pass: slot pairs (s0, s0 + 1) that hold a chain-beat; TLAST on the last."""
    pairs = sorted({s - s % 2 for s in ps.slots}) or [0]
    out = []
    for n, s0 in enumerate(pairs):
        b = _beat(KIND_PASS)
        for h in range(2):
            cb = ps.slots.get(s0 + h)
            if cb is None:
                continue
            o = h * SLOT_BYTES
            b[o:o + 16] = np.asarray(cb.w, np.int8).tobytes()
            b[o + 16:o + 24] = _nibbles(cb.idx)
            dj = cb.j - ps.j0[(s0 + h) // p.mv_team] if ps.mode == 1 else 0
            b[o + 24] = cb.code | (cb.en << 2) | (dj << 3)
            b[o + 25] = cb.r0 | ((cb.kval - 1) << 4)
        b[52] = ps.mode | (int(ps.last) << 1) | (ps.bank << 2)
        b[53:55] = int(ps.j).to_bytes(2, "little")
        b[55] = ps.row
        b[56:58] = int(ps.lanes).to_bytes(2, "little")
        b[58] = s0
        j0 = ps.j0[s0 // p.mv_team] if ps.mode == 1 else 0
        b[59:61] = int(j0).to_bytes(2, "little")
        out.append((bytes(b), n == len(pairs) - 1))
    return out


def program_beats(prog: Program, end: bool = True) -> list[tuple[bytes, bool]]:
    """(TDATA, TLAST) of every `op` beat of a program in the parallel format, then END."""
    out = []
    for kind, item in prog.items:
        if kind == "insn":
            mc, fx = item.macs()
            out.append((insn_beat(mc, fx, int(item.op == "MV"), True), False))
        elif kind == "load":
            out.append((act_beat(item), False))
        else:
            out += pass_beats(prog.params, item)
    if end:
        out.append((bytes(_beat(KIND_END)), True))
    return out


def operand_beats(op: MPEOp) -> tuple[list[tuple[bytes, bool]], list[np.ndarray]]:
    """One instruction in docs/mpe_stream.md's one-chain format: INSN then OPERAND beats, one pass
    per (row pair, block-row); with the expected result of each pass as (2, 16) INT32."""
    mc, fx = op.macs()
    beats = [(insn_beat(mc, fx, int(op.op == "MV"), False), False)]
    exp = op.expected()
    results = []
    nbr = -(-op.n // BLOCK)
    for i in range(0, op.m, 2):
        a = op.a[i]
        b = op.a[i + 1] if i + 1 < op.m else np.zeros_like(a)
        for jb in range(nbr):
            cbs = op.block_row_beats(jb)
            for q, cb in enumerate(cbs):
                t = _beat(KIND_OPERAND)
                t[0:16] = np.asarray(cb.w, np.int8).tobytes()
                t[16:24] = _nibbles(cb.idx)
                for o, row in ((24, a), (40, b)):
                    blk = np.zeros(BLOCK, np.int8)
                    seg = row[BLOCK * cb.j:BLOCK * (cb.j + 1)]
                    blk[:seg.size] = seg
                    t[o:o + 16] = blk.tobytes()
                t[56] = cb.code
                t[57] = cb.r0
                beats.append((bytes(t), q == len(cbs) - 1))
            r = np.zeros((2, BLOCK), np.int32)
            blk = exp[i:i + 2, BLOCK * jb:BLOCK * (jb + 1)]
            r[:blk.shape[0], :blk.shape[1]] = blk
            results.append(r)
    return beats, results


def result_words(p: MPEParams, beats: list[bytes], tile_beats: list[int]) -> list[np.ndarray]:
    """Join `res` beats into tiles of tile_beats[t] beats each (INT32 words)."""
    out, pos = [], 0
    for nb in tile_beats:
        out.append(np.frombuffer(b"".join(beats[pos:pos + nb]), np.int32).copy())
        pos += nb
    return out
