"""The one-chain MPE beats of docs/mpe_stream.md in numpy: beats to write, beat files, and the reference results (what the HLS mpe kernel must answer).

An MPE implementation (the HLS kernel in src/mpe.cpp, or an RTL one) is checked by feeding it
beats made here and comparing its result beats with `reference`.  A beat is 65 bytes: the 64
TDATA bytes (byte b = bits 8b+7..8b) and TLAST; a beat file is beats back to back.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

INSN, OPERAND, END = 0x01, 0x02, 0x0F
BEAT_BYTES = 64
KIND_BYTE = 63
#: CODE byte of N:16 (log2(N) - 1, the CSD chain's in_code)
CODES = {2: 0, 4: 1, 8: 2, 16: 3}


def beat(kind: int, last: int = 0, *, w=None, idx=None, a=None, b=None, n: int | None = None,
         row0: int | None = None, macs: int | None = None, fixed: int | None = None,
         pc: int | None = None, mv: bool = False) -> np.ndarray:
    """One beat (65 bytes) with the fields of the format page that are given."""
    out = np.zeros(BEAT_BYTES + 1, np.uint8)
    out[KIND_BYTE], out[BEAT_BYTES] = kind, last
    if w is not None:
        out[0:16] = np.asarray(w, np.int64).astype(np.int8).view(np.uint8)
    if idx is not None:
        ix = np.asarray(idx, np.uint8)
        if ix.shape != (16,) or (ix > 15).any():
            raise ValueError(f"IDX is 16 column indices 0..15, not {ix.tolist()}")
        out[16:24] = ix[0::2] | (ix[1::2] << 4)
    for lane, at in ((a, 24), (b, 40)):
        if lane is not None:
            out[at:at + 16] = np.asarray(lane, np.int64).astype(np.int8).view(np.uint8)
    if n is not None:
        if n not in CODES:
            raise ValueError(f"N of N:16 is one of {sorted(CODES)}, not {n}")
        out[56] = CODES[n]
    if row0 is not None:
        out[57] = row0
    for value, at in ((macs, 0), (fixed, 8)):
        if value is not None:
            out[at:at + 8] = np.frombuffer(np.uint64(value).tobytes(), np.uint8)
    if pc is not None:
        out[16:20] = np.frombuffer(np.uint32(pc).tobytes(), np.uint8)
        out[20] = int(mv)
    return out


def reference(beats) -> tuple:
    """What an MPE must answer: (result beats as int32 arrays of 16, in order; (insns, macs,
    fixed_macs); index of the beat it stops at)."""
    results, insns, macs, fixed = [], 0, 0, 0
    acc, fresh = np.zeros((2, 16), np.int64), True
    for i, bt in enumerate(beats):
        kind = int(bt[KIND_BYTE])
        if kind == INSN:
            insns += 1
            macs += int(bt[0:8].view(np.uint64)[0])
            fixed += int(bt[8:16].view(np.uint64)[0])
            continue
        if kind != OPERAND:
            return results, (insns, macs, fixed), i
        if fresh:
            acc[:] = 0
        n, row0 = 2 << (int(bt[56]) & 3), int(bt[57]) & 15
        w = bt[0:16].view(np.int8).astype(np.int64)
        idx = np.stack([bt[16:24] & 15, bt[16:24] >> 4], 1).reshape(-1)
        lanes = np.stack([bt[24:40].view(np.int8), bt[40:56].view(np.int8)]).astype(np.int64)
        prods = w[None, :] * lanes[:, idx]
        for s in range(16 // n):
            if row0 + s < 16:
                acc[:, row0 + s] += prods[:, s * n:(s + 1) * n].sum(1)
        fresh = bool(bt[BEAT_BYTES])
        if fresh:
            results += [acc[0].astype(np.int32), acc[1].astype(np.int32)]
    return results, (insns, macs, fixed), len(beats)


def write_beats(path: Path | str, beats) -> None:
    Path(path).write_bytes(np.concatenate([np.asarray(b, np.uint8) for b in beats]).tobytes())


def read_beats(path: Path | str) -> np.ndarray:
    """A beat file as an (n, 65) array; raises ValueError if it is not whole beats."""
    raw = np.fromfile(path, np.uint8)
    if raw.size % (BEAT_BYTES + 1):
        raise ValueError(f"{path}: {raw.size} bytes is not a whole number of {BEAT_BYTES + 1}-byte beats")
    return raw.reshape(-1, BEAT_BYTES + 1)


def results_of(raw: np.ndarray) -> list:
    """Result beats (from read_beats) as int32 arrays of 16."""
    return [r[:BEAT_BYTES].view(np.int32).copy() for r in raw]
