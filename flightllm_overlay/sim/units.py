"""Arithmetic of the MPE and MISC units, defined once in numpy: the simulator and the tests use these.

MPE: INT8 x INT8 products accumulated exactly in INT32; the epilogue converts the accumulator
to FP32, multiplies by the row (activation) scale, then by the column (weight) scale, and rounds
to FP16 (round to nearest even).  MISC: FP16 in and out; arithmetic in FP32 with rounding to FP16
where each operation's definition says so (see docs/isa.md).
"""
from __future__ import annotations

import numpy as np

F16, F32 = np.float16, np.float32
#: Largest K whose INT8 x INT8 partial sums are exact in FP32 (|sum| <= 1024 * 128 * 128 = 2**24).
EXACT_F32_K = 1024
QMAX = 127


def int_matmul(a: np.ndarray, w_t: np.ndarray) -> np.ndarray:
    """Exact INT32 result of a @ w_t for integer-valued operands.

    a:   (M, K) int8 values (any dtype holding them exactly; float32 preferred)
    w_t: (K, N) int8 values as float32 (the weights, transposed)
    Partial products are summed in FP32 over K-chunks of at most EXACT_F32_K, where every
    partial sum is an integer below 2**24 and so exact; chunks are added in INT32.
    """
    a = a.astype(F32, copy=False)
    k = a.shape[1]
    if k <= EXACT_F32_K:
        return (a @ w_t).astype(np.int32)
    acc = None
    for k0 in range(0, k, EXACT_F32_K):
        part = (a[:, k0:k0 + EXACT_F32_K] @ w_t[k0:k0 + EXACT_F32_K]).astype(np.int32)
        acc = part if acc is None else acc + part
    return acc


def mpe_fp32_acc(a: np.ndarray, w_t: np.ndarray) -> np.ndarray:
    """fp32(acc) of the exact INT32 accumulator, without an INT32 round trip when K <= 1024
    (the FP32 sum is then exact, so it already equals fp32(acc))."""
    if a.shape[1] <= EXACT_F32_K:
        return a.astype(F32) @ w_t
    return int_matmul(a, w_t).astype(F32)


def mpe_fast(a: np.ndarray, w_t: np.ndarray, a_scale: np.ndarray, w_scale) -> np.ndarray:
    """MPE result, equal bit for bit to mpe_epilogue(int_matmul(a, w_t), a_scale, w_scale)."""
    out = mpe_fp32_acc(a, w_t)
    out *= a_scale[:, None]
    if w_scale is not None:
        out *= w_scale[None, :]
    return out


def mpe_epilogue(acc: np.ndarray, a_scale: np.ndarray, w_scale) -> np.ndarray:
    """FP16 output of the MPE: fp16((fp32(acc) * a_scale[m]) * w_scale[n])."""
    out = acc.astype(F32) * a_scale.astype(F32, copy=False)[:, None]
    if w_scale is not None:
        out *= w_scale.astype(F32, copy=False)[None, :]
    return out.astype(F16)


def mpe_reference(a: np.ndarray, w: np.ndarray, a_scale, w_scale) -> np.ndarray:
    """Slow, obviously-correct MPE reference (int64 accumulation) used by the tests."""
    acc = a.astype(np.int64) @ w.astype(np.int64).T
    assert np.abs(acc).max(initial=0) < 2 ** 31
    return mpe_epilogue(acc.astype(np.int32), a_scale, w_scale)


# ---------------------------------------------------------------------------------------------
# MISC (special function unit)
# ---------------------------------------------------------------------------------------------
def eadd(a, b):
    return (a.astype(F32) + b.astype(F32)).astype(F16)


def emul(a, b):
    return (a.astype(F32) * b.astype(F32)).astype(F16)


def silu(a):
    x = a.astype(F32)
    return (x / (F32(1) + np.exp(-x))).astype(F16)


def rmsnorm(a, gamma, eps: float):
    """Two-phase: mean of squares in FP32, then x * rsqrt(ms + eps) * gamma, rounded once."""
    x = a.astype(F32)
    ms = np.einsum("ij,ij->i", x, x)[:, None] / F32(x.shape[-1])
    r = F32(1) / np.sqrt(ms + F32(eps))
    return (x * r * gamma.astype(F32)).astype(F16)


def softmax(a, scale: float, valid: np.ndarray | None = None):
    """Row softmax of a * scale in FP32, FP16 out; `valid` (bool, broadcastable) masks keys."""
    x = a.astype(F32) * F32(scale)
    if valid is not None:
        x = np.where(valid, x, F32(-np.inf))
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, F32(0))
    e = np.exp(x - m)
    s = np.sum(e, axis=-1, keepdims=True, dtype=F32)
    s = np.where(s > 0, s, F32(1))
    return (e / s).astype(F16)


def rope(x, table):
    """Rotate-half RoPE as the three-op chain: x*cos, rotate(x)*sin, add (FP16 after each).

    x:     (R, D) fp16, the rows of one head each
    table: (R, D) fp16, each row [cos_0..cos_{D/2-1}, sin_0..sin_{D/2-1}] for that row's position
    """
    h = x.shape[-1] // 2
    cos, sin = table[:, :h].astype(F32), table[:, h:].astype(F32)
    x1, x2 = x[:, :h].astype(F32), x[:, h:].astype(F32)
    c1, c2 = (x1 * cos).astype(F16), (x2 * cos).astype(F16)
    s1, s2 = (-x2 * sin).astype(F16), (x1 * sin).astype(F16)
    out = np.empty(x.shape, F16)
    out[:, :h] = (c1.astype(F32) + s1.astype(F32)).astype(F16)
    out[:, h:] = (c2.astype(F32) + s2.astype(F32)).astype(F16)
    return out


def quantize_rows(a):
    """Dynamic symmetric INT8 per row: scale = absmax / 127 (1.0 for an all-zero row).

    Returns (q int8 (R, K), scale float32 (R,)); q = clip(rint(fp32(x) / scale), -127, 127).
    """
    x = a.astype(F32)
    amax = np.abs(x).max(axis=-1) if x.shape[-1] else np.zeros(x.shape[0], F32)
    scale = amax / F32(QMAX)
    scale[amax == 0] = 1
    q = np.rint(x / scale[:, None], out=x)
    np.minimum(q, QMAX, out=q)
    np.maximum(q, -QMAX, out=q)
    return q.astype(np.int8), scale


def quantize_weight(w: np.ndarray):
    """Symmetric INT8 per output channel (row) for a float weight (N, K): (q int8, scale f32)."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.max(np.abs(w), axis=1)
    scale = np.where(amax > 0, amax / QMAX, 1.0).astype(F32)
    q = np.clip(np.rint(w / scale[:, None]), -QMAX, QMAX).astype(np.int8)
    return q, scale
