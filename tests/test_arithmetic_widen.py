"""The MISC arithmetic with FP16 widened by table lookup equals its plain `astype` formulas bit for bit, edge values included."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.spec import arithmetic as U

F16, F32 = np.float16, np.float32


# -- the formulas as they were written before the table (the definitions, one astype per step) --
def eadd_plain(a, b):
    return (a.astype(F32) + b.astype(F32)).astype(F16)


def emul_plain(a, b):
    return (a.astype(F32) * b.astype(F32)).astype(F16)


def silu_plain(a):
    a = np.asarray(a, F16)
    x = a.astype(F32)
    return (x / (F32(1) + U._silu_exp_table()[a.view(np.uint16)])).astype(F16)


def rmsnorm_plain(a, gamma, eps):
    x = a.astype(F32)
    ms = U.row_sum(x * x)[:, None] / F32(x.shape[-1])
    r = F32(1) / np.sqrt(ms + F32(eps))
    return (x * r * gamma.astype(F32)).astype(F16)


def layernorm_plain(a, gamma, beta, eps):
    x = a.astype(F32)
    k = F32(x.shape[-1])
    d = x - U.row_sum(x)[:, None] / k
    var = U.row_sum(d * d)[:, None] / k
    r = F32(1) / np.sqrt(var + F32(eps))
    return ((d * r) * gamma.astype(F32) + beta.astype(F32)).astype(F16)


def softmax_plain(a, scale, valid=None):
    x = a.astype(F32) * F32(scale)
    if valid is not None:
        x = np.where(valid, x, F32(-np.inf))
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, F32(0))
    e = U.exp32(x - m)
    s = U.row_sum(e)[..., None]
    s = np.where(s > 0, s, F32(1))
    return (e / s).astype(F16)


def rope_plain(x, table):
    h = x.shape[-1] // 2
    cos, sin = table[:, :h].astype(F32), table[:, h:].astype(F32)
    x1, x2 = x[:, :h].astype(F32), x[:, h:].astype(F32)
    c1, c2 = (x1 * cos).astype(F16), (x2 * cos).astype(F16)
    s1, s2 = (-x2 * sin).astype(F16), (x1 * sin).astype(F16)
    out = np.empty(x.shape, F16)
    out[:, :h] = (c1.astype(F32) + s1.astype(F32)).astype(F16)
    out[:, h:] = (c2.astype(F32) + s2.astype(F32)).astype(F16)
    return out


def quantize_rows_plain(a, amax=None):
    x = a.astype(F32)
    if amax is not None:
        amax = np.asarray(amax, F32).copy()
    else:
        amax = np.abs(x).max(axis=-1) if x.shape[-1] else np.zeros(x.shape[0], F32)
    scale = amax / F32(U.QMAX)
    scale[amax == 0] = 1
    q = np.rint(x / scale[:, None], out=x)
    return q.astype(np.int8), scale


def row_absmax_plain(x):
    return np.abs(x.astype(F32)).max(axis=-1)


# -- inputs ----------------------------------------------------------------------------------
#: FP16 bit patterns worth a case of their own: zeros, the smallest and largest subnormals and
#: normals, one, values next to ties, the largest finite, infinities, quiet and signalling NaNs
#: with payloads.
EDGES = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x3c00, 0xbc00, 0x3c01,
                  0x3bff, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00, 0xfe00, 0x7c01, 0x7d55,
                  0xffff, 0x0200, 0x5bff, 0x1400], np.uint16).view(F16)


def fp16_rows(rng, rows, k, edges=True, scale=4.0):
    """(rows, k) FP16: normal values of a few magnitudes, some raw bit patterns (every class of
    FP16 value), and the edge values scattered in."""
    x = (rng.standard_normal((rows, k)) * scale * rng.choice([1e-4, 1.0, 30.0], (rows, 1)))
    x = x.astype(F16)
    if edges:
        raw = rng.integers(0, 1 << 16, (rows, k), dtype=np.uint32).astype(np.uint16).view(F16)
        pick = rng.random((rows, k))
        x = np.where(pick < 0.1, raw, x)
        mask = pick > 0.97
        x[mask] = rng.choice(EDGES, int(mask.sum()))
    return x


def same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    g, w = got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}")
    bad = np.flatnonzero(g != w)
    assert not bad.size, (f"{bad.size} elements differ, first at {bad[0]}: "
                          f"{g.reshape(-1)[bad[0]]:#x} != {w.reshape(-1)[bad[0]]:#x}")


SEEDS = range(6)


def test_widening_is_numpys_cast_for_every_fp16_bit_pattern():
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(F16)
    same_bits(U.f32(every), every.astype(F32))
    strided = every.reshape(256, 256)[::3, 1::2]          # a non-contiguous view
    same_bits(U.f32(strided), strided.astype(F32))
    f = np.linspace(-3, 3, 7, dtype=F32)
    widened = U.f32(f)
    same_bits(widened, f)
    assert widened is not f and not np.shares_memory(widened, f)


def test_widened_table_is_not_a_no_op():
    """The check above could not pass with a broken table: the table differs from a plain
    reinterpretation of the bits."""
    assert U._F16_BITS_TO_F32[0x3c00] == 1.0 and U._F16_BITS_TO_F32[0x8001] == -2.0 ** -24
    assert np.isinf(U._F16_BITS_TO_F32[0xfc00]) and U._F16_BITS_TO_F32[0xfc00] < 0


@pytest.mark.parametrize("seed", SEEDS)
def test_elementwise_ops_equal_their_plain_formulas(seed):
    rng = np.random.default_rng(seed)
    a, b = fp16_rows(rng, 17, 96), fp16_rows(rng, 17, 96)
    b32 = (rng.standard_normal((17, 96)) * 8).astype(F32)
    with np.errstate(all="ignore"):
        same_bits(U.eadd(a, b), eadd_plain(a, b))
        same_bits(U.emul(a, b), emul_plain(a, b))
        same_bits(U.eadd(a, b[:1]), eadd_plain(a, b[:1]))           # a broadcast row
        same_bits(U.emul(a, b32), emul_plain(a, b32))               # an FP32 operand
        same_bits(U.eadd(a[:, ::2], b[:, 1::2]), eadd_plain(a[:, ::2], b[:, 1::2]))
        same_bits(U.silu(a), silu_plain(a))
        same_bits(U.row_absmax(a), row_absmax_plain(a))


def test_sums_that_round_to_ties_and_overflow_equal_their_plain_formulas():
    """Every pair of a few hundred FP16 values near ties, the overflow threshold and the
    subnormal range: the FP16 rounding of the FP32 result is the cast's."""
    vals = np.concatenate([EDGES, np.array([65504, 32768, 2048, 2049, 1 / 3, 6.1e-5, 6e-8],
                                           F16),
                           np.arange(0x7b00, 0x7c00, 9, dtype=np.uint16).view(F16),
                           np.arange(0x0000, 0x0500, 13, dtype=np.uint16).view(F16)])
    vals = np.concatenate([vals, -vals])
    a, b = np.meshgrid(vals, vals)
    with np.errstate(all="ignore"):
        same_bits(U.eadd(a, b), eadd_plain(a, b))
        same_bits(U.emul(a, b), emul_plain(a, b))


@pytest.mark.parametrize("seed", SEEDS)
def test_norms_equal_their_plain_formulas(seed):
    rng = np.random.default_rng(seed)
    edges = seed % 2 == 0                   # rows of plain values, and rows with edge values
    a = fp16_rows(rng, 13, 64, edges)
    gamma, beta = fp16_rows(rng, 1, 64, edges), fp16_rows(rng, 1, 64, edges)
    gamma32 = rng.standard_normal((1, 64)).astype(F32)
    with np.errstate(all="ignore"):
        for eps in (1e-5, 1e-6):
            same_bits(U.rmsnorm(a, gamma, eps), rmsnorm_plain(a, gamma, eps))
            same_bits(U.rmsnorm(a, gamma32, eps), rmsnorm_plain(a, gamma32, eps))
            same_bits(U.layernorm(a, gamma[0], beta[0], eps),
                      layernorm_plain(a, gamma[0], beta[0], eps))
        zero = np.zeros((3, 64), F16)
        same_bits(U.rmsnorm(zero, gamma, 1e-5), rmsnorm_plain(zero, gamma, 1e-5))


@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_equals_its_plain_formula(seed):
    rng = np.random.default_rng(seed)
    a = fp16_rows(rng, 11, 40, edges=seed % 2 == 0)
    valid = rng.random((11, 40)) < 0.7
    valid[0] = False                          # a row with no key
    with np.errstate(all="ignore"):
        for scale in (0.125, 1.0, 3.0):
            same_bits(U.softmax(a, scale), softmax_plain(a, scale))
            same_bits(U.softmax(a, scale, valid), softmax_plain(a, scale, valid))


@pytest.mark.parametrize("seed", SEEDS)
def test_rope_equals_its_plain_formula(seed):
    rng = np.random.default_rng(seed)
    x = fp16_rows(rng, 9, 64, edges=seed % 2 == 0)
    ang = rng.random((9, 32)) * 50
    table = np.concatenate([np.cos(ang), np.sin(ang)], 1).astype(F16)
    if seed % 2 == 0:
        table[0, :4] = EDGES[[0, 1, 12, 14]]  # zeros, inf and NaN in the table too
    with np.errstate(all="ignore"):
        same_bits(U.rope(x, table), rope_plain(x, table))
        same_bits(U.rope(x[:, ::-1], table[:, :]), rope_plain(x[:, ::-1], table))


@pytest.mark.parametrize("seed", SEEDS)
def test_quantize_rows_equals_its_plain_formula(seed):
    rng = np.random.default_rng(seed)
    a = fp16_rows(rng, 15, 48, edges=False)
    a[3] = 0                                 # an all-zero row: scale 1
    a[4, :5] = EDGES[[2, 3, 4, 5, 19]]       # subnormals in a row of small values
    q, s = U.quantize_rows(a)
    qp, sp = quantize_rows_plain(a)
    same_bits(q, qp)
    same_bits(s, sp)
    amax = row_absmax_plain(a)
    for got, want in zip(U.quantize_rows(a, amax), quantize_rows_plain(a, amax)):
        same_bits(got, want)
    ties = np.array([[127, 63.5, -0.5, 1.5, 2.5, -2.5]], F16)     # x / scale lands on .5
    for got, want in zip(U.quantize_rows(ties), quantize_rows_plain(ties)):
        same_bits(got, want)
