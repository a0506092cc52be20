"""Arithmetic of the MPE and MISC units, defined once in numpy: the simulator and the tests use these.

MPE: INT8 x INT8 products accumulated exactly in INT32; the epilogue converts the accumulator
to FP32, multiplies by the row (activation) scale, then by the column (weight) scale, and rounds
to FP16 (round to nearest even).  MISC: FP16 in and out; arithmetic in FP32 with rounding to FP16
where each operation's definition says so (see docs/isa.md).

FP16 operands widen to FP32 through `f32`, a lookup in a table of numpy's own conversion of all
65,536 FP16 bit patterns (the same bits as ``astype(float32)``, in about half its time: numpy
1.26 converts FP16 one element at a time); intermediate FP32 results are updated in place, in
the order the definitions state.  tests/test_arithmetic_widen.py holds every MISC operation bit
for bit equal to its plain ``astype`` formula, edge values included.
"""
from __future__ import annotations

import numpy as np

F16, F32 = np.float16, np.float32
#: Largest K whose INT8 x INT8 partial sums are exact in FP32 (|sum| <= 1024 * 128 * 128 = 2**24).
EXACT_F32_K = 1024
QMAX = 127
#: FP32 value of every FP16 bit pattern, from numpy's own conversion (NaN payloads included).
_F16_BITS_TO_F32 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(F16).astype(F32)


def f32(x) -> np.ndarray:
    """A new FP32 array holding `x` widened exactly: FP16 through `_F16_BITS_TO_F32`, any other
    type by ``astype`` (FP32 operands are copied)."""
    x = np.asarray(x)
    if x.dtype == F16:
        return np.take(_F16_BITS_TO_F32, x.view(np.uint16), mode="clip")   # no index check
    return x.astype(F32)


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
    """fp32(acc) of the exact INT32 accumulator, in one FP32 product whenever that is exact.

    Every partial sum of a row, in any order, is bounded by 128 * sum(|a[m]|) (an INT8 weight
    has |w| <= 128); while that bound is at most 2**24, every partial sum is an integer FP32
    holds exactly, so one FP32 product (any BLAS, any CPU) equals fp32(acc).  K <= 1024 always
    meets it; longer rows meet it unless the activations are large, else the K-chunked path.
    """
    a = a.astype(F32)
    if a.shape[1] <= EXACT_F32_K or float(np.abs(a).sum(1, dtype=np.float64).max(
            initial=0)) * 128 <= 2 ** 24:
        return a @ w_t
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


#: Largest per-group exponent of `agroup`: a group's step is the row's divided by 2**e, e <= 7.
GROUP_EXP_MAX = 7


def group_scale_bytes(group: int, k: int) -> int:
    """Bytes per row of an `agroup` quant's scales: the FP32 row scale, then one exponent byte
    per group, padded to 4 bytes (4 with one scale per row, group 0)."""
    return 4 if not group else 4 + 4 * -(-(k // group) // 4)


def split_group_scales(raw: np.ndarray, group: int, k: int):
    """(row scales float32 (R,), exponents int64 (R, K/group)) from the (R, group_scale_bytes)
    uint8 rows an `agroup` quant writes; an exponent is its byte's low three bits."""
    raw = np.ascontiguousarray(raw, np.uint8)
    scales = raw[:, :4].copy().view(F32)[:, 0]
    return scales, (raw[:, 4:4 + k // group] & GROUP_EXP_MAX).astype(np.int64)


def mpe_grouped(a: np.ndarray, w_t: np.ndarray, a_scale: np.ndarray, exps: np.ndarray, w_scale,
                group: int) -> np.ndarray:
    """MPE result with shared-exponent activation groups (`agroup`), FP32 before the FP16 output:
    acc = sum_g P_g * 2**(7 - e_g) exactly (P_g the exact integer sum over group g's columns),
    then fp32(acc) * fp32(a_scale / 128), then * w_scale.  a (M, K) INT8, w_t (K, N) with INT8
    values, a_scale (M,) the row scales, exps (M, K/group) the groups' exponents."""
    k = a.shape[1]
    a32 = a.astype(F32)
    acc = np.zeros((a.shape[0], w_t.shape[1]), np.float64)   # |acc| < 2**40: exact in float64
    shift = np.exp2(GROUP_EXP_MAX - np.asarray(exps, np.float64))
    for g in range(k // group):
        cols = slice(g * group, (g + 1) * group)
        part = a32[:, cols] @ w_t[cols]             # |P_g| <= group * 128 * 128: exact in FP32
        acc += part * shift[:, g:g + 1]
    out = acc.astype(F32)
    out *= (np.asarray(a_scale, F32) / F32(128))[:, None]
    if w_scale is not None:
        out *= w_scale[None, :]
    return out


def mpe_grouped_reference(a, w, a_scale, exps, w_scale, group: int) -> np.ndarray:
    """Slow, obviously-correct `mpe_grouped` (Python integers), FP16 out, for the tests."""
    m, k = a.shape
    acc = np.zeros((m, w.shape[0]), object)
    for g in range(k // group):
        cols = slice(g * group, (g + 1) * group)
        part = a[:, cols].astype(object) @ w[:, cols].astype(object).T
        acc += part * np.array([[1 << (GROUP_EXP_MAX - int(e))] for e in exps[:, g]], object)
    out = np.array(acc.tolist(), np.float64).astype(F32)     # exact ints -> one rounding
    out = (out * (np.asarray(a_scale, F32) / F32(128))[:, None]).astype(F32)
    if w_scale is not None:
        out = (out * np.asarray(w_scale, F32)[None, :]).astype(F32)
    return out.astype(F16)


#: An MPE on codes (`wcodes`) scales its exact accumulator by 2**-CODE_SHIFT before the epilogue
#: (the (M, B) fixed point of spec/wformat.py).
CODE_SHIFT = 8
_CODE_CHUNK = 1 << 14           # columns of one exact float64 product in `mpe_codes`


def code_weights(q: np.ndarray, mult: np.ndarray, offset: np.ndarray, group: int) -> np.ndarray:
    """(N, K) float64 integers M q + B of an operand of codes (q (N, K), mult/offset (N, K/G))."""
    n, k = q.shape
    w = (q.reshape(n, k // group, group).astype(np.int64) * mult.astype(np.int64)[..., None]
         + offset.astype(np.int64)[..., None])
    return w.reshape(n, k).astype(np.float64)


def mpe_codes(a: np.ndarray, w_int: np.ndarray, a_scale: np.ndarray, w_scale,
              exps: np.ndarray | None = None, agroup: int = 0) -> np.ndarray:
    """MPE result (FP32, before the FP16 output) of an operand of codes (`wcodes`).

    The hardware accumulates per group P = sum q a and A = sum a and adds M P + B A, shifted by
    7 - e of the activation group with `agroup`; that is acc = sum_j a_j 2**(7 - e_j) (M q_j + B)
    exactly, which float64 products of up to 2**14 columns compute without rounding:
    |a 2**(7-e)| <= 2**14 and |M q + B| < 2**24 (codes are bytes; 4-bit codes: < 2**20), so
    every partial sum is an integer below 2**52.  Then
    fp32(acc) * 2**-8, * a_scale (/ 128 with agroup), * w_scale.  a (M, K) INT8; w_int (N, K)
    from `code_weights`; exps (M, K/agroup) the activation groups' exponents."""
    a64 = a.astype(np.float64)
    if agroup:
        shift = np.exp2(GROUP_EXP_MAX - np.asarray(exps, np.float64))
        a64 = (a64.reshape(a.shape[0], -1, agroup) * shift[..., None]).reshape(a.shape)
    # codes the ISA allows are bytes: |M q + B| < 2**24, so partial sums of at most
    # _CODE_CHUNK columns stay below 2**52 (exact); longer rows add chunks in INT64
    if a.shape[1] <= _CODE_CHUNK:
        acc = a64 @ w_int.T
    else:
        acc = sum((a64[:, c:c + _CODE_CHUNK] @ w_int[:, c:c + _CODE_CHUNK].T).astype(np.int64)
                  for c in range(0, a.shape[1], _CODE_CHUNK))
    out = acc.astype(F32)
    out *= F32(2.0 ** -CODE_SHIFT)
    out *= (np.asarray(a_scale, F32) / F32(128) if agroup else np.asarray(a_scale, F32))[:, None]
    if w_scale is not None:
        out *= np.asarray(w_scale, F32)[None, :]
    return out


def mpe_codes_reference(a, q, mult, offset, group: int, a_scale, w_scale, exps=None,
                        agroup: int = 0) -> np.ndarray:
    """Slow, obviously-correct `mpe_codes` (Python integers, the hardware's P and A per group of
    min(group, agroup) columns), FP16 out, for the tests."""
    m, k = a.shape
    sub = min(group, agroup) if agroup else group
    acc = np.zeros((m, q.shape[0]), object)
    for s in range(k // sub):
        cols = slice(s * sub, (s + 1) * sub)
        g = s * sub // group
        p = a[:, cols].astype(object) @ q[:, cols].astype(object).T
        total = a[:, cols].astype(object).sum(1)[:, None]
        part = p * mult[:, g].astype(object)[None, :] + total * offset[:, g].astype(object)[None, :]
        if agroup:
            h = s * sub // agroup
            part = part * np.array([[1 << (GROUP_EXP_MAX - int(e))] for e in exps[:, h]], object)
        acc += part
    out = np.array(acc.tolist(), np.float64).astype(F32) * F32(2.0 ** -CODE_SHIFT)
    scale = np.asarray(a_scale, F32) / F32(128) if agroup else np.asarray(a_scale, F32)
    out = (out * scale[:, None]).astype(F32)
    if w_scale is not None:
        out = (out * np.asarray(w_scale, F32)[None, :]).astype(F32)
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
    """fp16(fp32(a) + fp32(b))."""
    return (f32(a) + f32(b)).astype(F16)


def emul(a, b):
    """fp16(fp32(a) * fp32(b))."""
    return (f32(a) * f32(b)).astype(F16)


# exp and row sums are defined exactly (not "numpy's exp" or "an FP32 sum in some order") so that
# the HLS kernels (flightllm_overlay/src, which take these constants from the generated header)
# reproduce them bit for bit.
#: exp32: the Taylor coefficients 1/k!, k = 0..13, as float64 bit patterns (Horner from the top).
EXP_COEFFS = ("0x1.0000000000000p+0", "0x1.0000000000000p+0", "0x1.0000000000000p-1",
              "0x1.5555555555555p-3", "0x1.5555555555555p-5", "0x1.1111111111111p-7",
              "0x1.6c16c16c16c17p-10", "0x1.a01a01a01a01ap-13", "0x1.a01a01a01a01ap-16",
              "0x1.71de3a556c734p-19", "0x1.27e4fb7789f5cp-22", "0x1.ae64567f544e4p-26",
              "0x1.1eed8eff8d898p-29", "0x1.6124613a86d09p-33")
EXP_LOG2E = "0x1.71547652b82fep+0"          # log2(e)
EXP_LN2_HI = "0x1.62e42fee00000p-1"         # ln 2 split (fdlibm): n * hi is exact for |n| < 2**20
EXP_LN2_LO = "0x1.a39ef35793c76p-33"
EXP_CLAMP = (-110.0, 89.0)                   # exp32 of x outside rounds to 0 / +inf anyway
_EC = np.array([float.fromhex(c) for c in EXP_COEFFS])
_LOG2E, _LN2_HI, _LN2_LO = (float.fromhex(c) for c in (EXP_LOG2E, EXP_LN2_HI, EXP_LN2_LO))


def exp32(x):
    """The MISC exponential: FP32 in, FP32 out, evaluated in float64 and rounded once.

    t = clip(x, -110, 89); n = rint(t * log2e); r = (t - n*ln2_hi) - n*ln2_lo;
    p = Horner(1/k!, k = 13..0) at r; exp32(x) = fp32(ldexp(p, n)); NaN stays NaN.
    Every step is one IEEE float64 operation (no fused multiply-add), so the result is
    reproducible; it is within about 1e-16 relative of exp before the final rounding.
    """
    x = np.asarray(x, F32)
    t = np.clip(x.astype(np.float64), *EXP_CLAMP)
    n = np.rint(t * _LOG2E)
    r = (t - n * _LN2_HI) - n * _LN2_LO
    p = np.full(r.shape, _EC[-1])
    for c in _EC[-2::-1]:
        p *= r
        p += c
    with np.errstate(over="ignore"):          # exp of x > ~88.72 is +inf by definition
        out = np.ldexp(p, np.nan_to_num(n).astype(np.int32)).astype(F32)
    return np.where(np.isnan(x), x, out)


def row_sum(x):
    """Sum of each row of FP32 values: left to right in float64, rounded once to FP32."""
    x = np.asarray(x, F32)
    if x.shape[-1] == 0:
        return np.zeros(x.shape[:-1], F32)
    return np.cumsum(x, axis=-1, dtype=np.float64)[..., -1].astype(F32)


_SILU_EXP = None


def _silu_exp_table():
    """exp32(-x) for every FP16 bit pattern x: SiLU's input is FP16, so the table holds exactly
    the values exp32 gives (computed once, 65,536 entries)."""
    global _SILU_EXP
    if _SILU_EXP is None:
        every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(F16)
        with np.errstate(invalid="ignore", over="ignore"):
            _SILU_EXP = exp32(-every.astype(F32))
    return _SILU_EXP


def silu(a):
    """x / (1 + exp32(-x)) in FP32, rounded to FP16 (exp32 taken from its table of FP16 inputs)."""
    a = np.asarray(a, F16)
    d = _silu_exp_table()[a.view(np.uint16)]
    d += F32(1)
    x = f32(a)
    x /= d
    return x.astype(F16)


def rmsnorm(a, gamma, eps: float):
    """Two-phase: mean of squares (row_sum of the FP32 squares, / K in FP32), then
    x * (1 / sqrt(ms + eps)) * gamma in FP32, rounded once to FP16."""
    x = f32(a)
    ms = row_sum(x * x)[:, None] / F32(x.shape[-1])
    r = F32(1) / np.sqrt(ms + F32(eps))
    x *= r
    x *= f32(gamma)
    return x.astype(F16)


def layernorm(a, gamma, beta, eps: float):
    """Two-phase LayerNorm of each row, the statistics from the row held in the unit:
    mean = row_sum(x) / K, d = x - mean, var = row_sum(d * d) / K (all FP32), then
    (d * (1 / sqrt(var + eps))) * gamma + beta in FP32, rounded once to FP16."""
    x = f32(a)
    k = F32(x.shape[-1])
    d = x - row_sum(x)[:, None] / k
    var = row_sum(d * d)[:, None] / k
    r = F32(1) / np.sqrt(var + F32(eps))
    d *= r
    d *= f32(gamma)
    d += f32(beta)
    return d.astype(F16)


def relu(a):
    """max(x, 0) on FP16: x <= 0 (either zero included) gives +0, NaN stays NaN."""
    a = np.asarray(a, F16)
    return np.where(a <= 0, F16(0), a)


def softmax(a, scale: float, valid: np.ndarray | None = None):
    """Row softmax of a * scale in FP32, FP16 out; `valid` (bool, broadcastable) masks keys."""
    x = f32(a)
    x *= F32(scale)
    if valid is not None:
        x = np.where(valid, x, F32(-np.inf))
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, F32(0))
    e = exp32(x - m)
    s = row_sum(e)[..., None]
    s = np.where(s > 0, s, F32(1))
    return (e / s).astype(F16)


def rope(x, table):
    """Rotate-half RoPE as the three-op chain: x*cos, rotate(x)*sin, add (FP16 after each).

    x:     (R, D) fp16, the rows of one head each
    table: (R, D) fp16, each row [cos_0..cos_{D/2-1}, sin_0..sin_{D/2-1}] for that row's position
    """
    h = x.shape[-1] // 2
    cs, v = f32(table), f32(x)              # cs = [cos | sin], v = [x1 | x2]
    rot = np.empty_like(v)                  # [-x2 | x1]
    np.negative(v[:, h:], out=rot[:, :h])
    rot[:, h:] = v[:, :h]
    v[:, :h] *= cs[:, :h]                   # [x1 * cos | x2 * cos]
    v[:, h:] *= cs[:, :h]
    rot[:, :h] *= cs[:, h:]                 # [-x2 * sin | x1 * sin]
    rot[:, h:] *= cs[:, h:]
    v = f32(v.astype(F16))                  # each product rounded to FP16
    v += f32(rot.astype(F16))
    return v.astype(F16)


def quantize_rows(a, amax=None, diffuse: bool = False):
    """Dynamic symmetric INT8 per row: scale = absmax / 127 (1.0 for an all-zero row).

    Returns (q int8 (R, K), scale float32 (R,)); q = clip(rint(fp32(x) / scale), -127, 127).
    `amax`: the rows' absolute maxima when already known (FP32; the MISC quant's given_max),
    which gives the same result as finding them when they are the true maxima.
    `diffuse` (the MISC quant's error diffusion of small values): an element whose own rounding
    is 0 is not dropped but added to the row's FP32 running sum of such elements, and its code
    is the step of that sum's rounding (-1, 0 or 1); see `_diffused`.
    """
    x = f32(a)
    if amax is not None:
        amax = np.asarray(amax, F32).copy()
    else:
        amax = np.abs(x).max(axis=-1) if x.shape[-1] else np.zeros(x.shape[0], F32)
    scale = amax / F32(QMAX)
    scale[amax == 0] = 1
    # |x / scale| <= 127 * (1 + 2**-23) by construction, so rint never leaves [-127, 127]:
    # the clip the definition states is a no-op and is not spent here.
    x /= scale[:, None]
    q = _diffused(x, np.rint(x)) if diffuse else np.rint(x, out=x)
    return q.astype(np.int8), scale


def quantize_groups(a, group: int):
    """The MISC quant with `agroup`: shared-exponent groups of `group` elements.  Each row has
    its scale s = absmax / 127 (1.0 for an all-zero row); group g of it the largest e_g <= 7
    with max|x_g| * 2**e_g <= absmax (7 for an all-zero group), and codes
    clip(rint(x / fp32(s * 2**-e_g)), -127, 127): a group of small values gets up to 2**7
    finer steps.  Returns (q int8 (R, K), scales float32 (R,), exponents int64 (R, K/group))."""
    x = f32(a)
    r, k = x.shape
    amax = np.abs(x).max(axis=-1) if k else np.zeros(r, F32)
    scale = amax / F32(QMAX)
    scale[amax == 0] = 1
    gmax = np.abs(x).reshape(r, k // group, group).max(axis=-1)
    exps = np.zeros(gmax.shape, np.int64)
    for e in range(1, GROUP_EXP_MAX + 1):           # exact: scaling by a power of two
        exps[gmax * F32(2.0 ** e) <= amax[:, None]] = e
    step = (scale[:, None] * np.exp2(-exps).astype(F32)).astype(F32)
    q = np.rint(x / np.repeat(step, group, axis=1))
    return np.clip(q, -QMAX, QMAX).astype(np.int8), scale, exps


def pack_group_scales(scales, exps, group: int, k: int) -> np.ndarray:
    """The (R, group_scale_bytes) uint8 rows a quant with `agroup` writes (its out2 region)."""
    r = len(scales)
    raw = np.zeros((r, group_scale_bytes(group, k)), np.uint8)
    raw[:, :4] = np.asarray(scales, F32).reshape(r, 1).view(np.uint8)
    raw[:, 4:4 + k // group] = np.asarray(exps, np.uint8)
    return raw


def quant_residual(a, q, scale):
    """The MISC quant's `residual`: fp16(fp32(a) - fp32(q * scale)) per element (one FP32
    rounding for the product, one for the difference, then FP16), the error of the row's codes
    `q` at `scale` that a second quant turns into a two-plane activation's low plane."""
    return (f32(a) - q.astype(F32) * np.asarray(scale, F32)[:, None]).astype(F16)


def _diffused(t, q):
    """Codes with the small values diffused: where rint(t) == 0, run = the FP32 running sum (left
    to right, one rounding per add, as the MISC's adder) of those t, and the code is
    rint(run) - rint(previous run); elsewhere rint(t).  Every prefix of the small values keeps
    its sum to half a step, so many small softmax probabilities keep their mass; the others
    round as before."""
    small = q == 0
    run = np.rint(np.cumsum(np.where(small, t, F32(0)), axis=-1, dtype=F32))
    steps = np.diff(run, axis=-1, prepend=F32(0))
    return np.where(small, steps, q)


def row_absmax(x):
    """Each row's largest absolute value, as FP32 (the MISC amax op and flag)."""
    return np.abs(f32(x)).max(axis=-1)


def quantize_weight(w: np.ndarray):
    """Symmetric INT8 per output channel (row) for a float weight (N, K): (q int8, scale f32)."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.max(np.abs(w), axis=1)
    scale = np.where(amax > 0, amax / QMAX, 1.0).astype(F32)
    q = np.clip(np.rint(w / scale[:, None]), -QMAX, QMAX).astype(np.int8)
    return q, scale
