"""MPE and MISC arithmetic (spec/arithmetic.py): exact INT8 matmul and epilogue, MISC vs float64."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flightllm_overlay.spec import arithmetic as U

F16, F32 = np.float16, np.float32


def f16_ulps(x, y) -> np.ndarray:
    """Distance between FP16 numbers in units in the last place (+0 and -0 are 0 apart)."""
    def ordered(v):
        i = np.asarray(v, F16).view(np.int16).astype(np.int32)
        return np.where(i < 0, -(i + 32768), i)
    return np.abs(ordered(x) - ordered(y))


def fp16_data(rng, shape, scale=4.0, specials=True) -> np.ndarray:
    """Random FP16 values, with zeros, signed zeros, subnormals and large values mixed in."""
    x = (rng.standard_normal(shape) * scale).astype(F16)
    if specials:
        flat = x.reshape(-1)
        picks = rng.choice(flat.size, size=min(flat.size, 12), replace=False)
        flat[picks] = np.array([0, -0.0, 6e-8, -6e-8, 1e-5, -3e-5, 1000, -2000, 0.5, -0.25,
                                65504, -65504], F16)[:len(picks)]
    return x


# ---------------------------------------------------------------------------------------------
# MPE
# ---------------------------------------------------------------------------------------------
def int8_operands(rng, m, k, n):
    """Random int8 operands in [-128, 127], with rows/columns pinned at the extremes."""
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    a[0], w[0] = -128, -128                  # acc[0, 0] = 16384 K, the largest magnitude
    if m > 1 and n > 1:
        a[1], w[1] = 127, -128               # acc[1, 1] = -16256 K
    return a, w


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (3, 100, 5), (4, 1024, 6), (4, 1025, 6),
                                     (5, 3000, 7), (2, 65535, 3)])
def test_int_matmul_is_exact(m, k, n):
    rng = np.random.default_rng(k)
    a, w = int8_operands(rng, m, k, n)
    exact = a.astype(np.int64) @ w.astype(np.int64).T
    for a_in in (a, a.astype(F32)):
        got = U.int_matmul(a_in, np.ascontiguousarray(w.T.astype(F32)))
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, exact)
    assert exact[0, 0] == 16384 * k


@pytest.mark.parametrize("m, k, n", [(64, 3000, 64), (4, 65535, 6)])
def test_int_matmul_is_exact_for_large_dense_sums(m, k, n):
    """Large odd partial sums: a single FP32 GEMM over all of K rounds (BLAS-dependent)."""
    a = np.full((m, k), 127, np.int8)
    w = np.full((n, k), 127, np.int8)
    w[:, ::2] = 126
    got = U.int_matmul(a, np.ascontiguousarray(w.T.astype(F32)))
    np.testing.assert_array_equal(got, a.astype(np.int64) @ w.astype(np.int64).T)


def test_int_matmul_is_exact_where_a_plain_fp32_sum_is_not():
    k = 3000
    a = np.full((1, k), 127, np.int8)
    w = np.where(np.arange(k) % 2, 127, 126).astype(np.int8)[None, :]     # odd and even products
    exact = int((a.astype(np.int64) @ w.astype(np.int64).T)[0, 0])
    fp32_running_sum = np.cumsum((a[0].astype(F32) * w[0].astype(F32)), dtype=F32)[-1]
    assert exact > 2 ** 24 and int(fp32_running_sum) != exact       # the hazard is real
    assert int(U.int_matmul(a, w.T.astype(F32))[0, 0]) == exact


def test_mpe_epilogue_is_the_definition():
    rng = np.random.default_rng(1)
    m, n = 6, 9
    acc = rng.integers(-2 ** 30, 2 ** 30, (m, n)).astype(np.int32)
    acc[0, :3] = [0, 2 ** 24 + 1, -(2 ** 24 + 3)]                   # FP32 conversion rounds
    a_scale = (rng.random(m) * 1e-5).astype(F32)
    w_scale = (rng.random(n) * 1e-2).astype(F32)
    want = np.empty((m, n), F16)
    want_no_w = np.empty((m, n), F16)
    for i in range(m):
        for j in range(n):
            row = F32(acc[i, j]) * a_scale[i]                          # float32 * float32
            want[i, j] = F16(row * w_scale[j])
            want_no_w[i, j] = F16(row)
    got = U.mpe_epilogue(acc, a_scale, w_scale)
    assert got.dtype == F16
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    np.testing.assert_array_equal(U.mpe_epilogue(acc, a_scale, None).view(np.uint16),
                                  want_no_w.view(np.uint16))


def test_mpe_epilogue_order_of_rounding_is_visible_and_kept():
    """fp16((fp32(acc) * a) * w): other association orders differ on some of these inputs."""
    rng = np.random.default_rng(3)
    m, n = 256, 256
    acc = rng.integers(-2 ** 30, 2 ** 30, (m, n)).astype(np.int32)
    a_scale = (rng.random(m) * 1e-4 + 1e-6).astype(F32)
    w_scale = (rng.random(n) * 1e-1 + 1e-3).astype(F32)
    acc32 = acc.astype(F32)
    want = ((acc32 * a_scale[:, None]) * w_scale[None, :]).astype(F16)   # IEEE FP32 per op
    other = (acc32 * (a_scale[:, None] * w_scale[None, :])).astype(F16)
    exact = (acc.astype(np.float64) * a_scale[:, None] * w_scale[None, :]).astype(F16)
    assert (want != other).any() and (want != exact).any()
    np.testing.assert_array_equal(U.mpe_epilogue(acc, a_scale, w_scale).view(np.uint16),
                                  want.view(np.uint16))


def test_mpe_epilogue_rounds_to_nearest_even_fp16():
    """Ties go to the even FP16 neighbour; values past 65504 overflow to inf."""
    acc = np.array([[1, 1, 1, 70000]], np.int32)
    a_scale = np.array([1.0], F32)
    w_scale = np.array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -10, 1.0], F32)   # ties, exact
    with np.errstate(over="ignore"):
        got = U.mpe_epilogue(acc, a_scale, w_scale)[0]
    assert got.tolist() == [1.0, 1 + 2 ** -9, 1 + 2 ** -10, np.inf]


def test_mpe_reference_matches_the_fast_path():
    rng = np.random.default_rng(2)
    a, w = int8_operands(rng, 7, 1500, 11)
    a_scale, w_scale = rng.random(7).astype(F32) / 100, rng.random(11).astype(F32) / 100
    fast = U.mpe_epilogue(U.int_matmul(a, w.T.astype(F32)), a_scale, w_scale)
    np.testing.assert_array_equal(U.mpe_reference(a, w, a_scale, w_scale).view(np.uint16),
                                  fast.view(np.uint16))


# ---------------------------------------------------------------------------------------------
# MISC against float64.  Tolerance: each op computes in FP32 (errors of a few FP32 ulps, far
# below half an FP16 ulp) and rounds to FP16 once, so its output is within 1 FP16 ulp of the
# correctly rounded float64 result; emul of two FP16 values is exact in FP32, so it is bit-exact.
# rope rounds three times (see its test).
# ---------------------------------------------------------------------------------------------
ONE_ULP = 1


@pytest.mark.parametrize("seed", range(3))
def test_eadd_and_emul(seed):
    """FP16 overflow is part of the definition: +-65504 sums and large products become inf."""
    rng = np.random.default_rng(seed)
    a, b = fp16_data(rng, (8, 64)), fp16_data(rng, (8, 64))
    b32 = (rng.standard_normal((1, 64)) * 3).astype(F32)
    a64, b64, b32_64 = a.astype(np.float64), b.astype(np.float64), b32.astype(np.float64)
    with np.errstate(over="ignore"):
        ref_add, ref_mul = (a64 + b64).astype(F16), (a64 * b64).astype(F16)
        ref_add32, ref_mul32 = (a64 + b32_64).astype(F16), (a64 * b32_64).astype(F16)
        add, mul, add32, mul32 = U.eadd(a, b), U.emul(a, b), U.eadd(a, b32), U.emul(a, b32)
    assert np.isinf(mul).any()
    assert f16_ulps(add, ref_add).max() <= ONE_ULP
    np.testing.assert_array_equal(mul.view(np.uint16), ref_mul.view(np.uint16))
    assert f16_ulps(add32, ref_add32).max() <= ONE_ULP
    assert f16_ulps(mul32, ref_mul32).max() <= ONE_ULP
    assert add.dtype == mul32.dtype == F16


@pytest.mark.parametrize("seed", range(3))
def test_silu(seed):
    x = fp16_data(np.random.default_rng(seed), (16, 128), scale=6.0)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        ref = (x64 / (1.0 + np.exp(-x64))).astype(F16)
        got = U.silu(x)
    assert got.dtype == F16 and f16_ulps(got, ref).max() <= ONE_ULP


@pytest.mark.parametrize("k", [8, 256, 4096])
def test_rmsnorm(k):
    rng = np.random.default_rng(k)
    x = fp16_data(rng, (6, k), specials=False)
    x[0] = 0                                                      # all-zero row: output 0
    gamma = (1 + rng.standard_normal(k) * 0.1).astype(F16)[None, :]
    eps = 1e-5
    x64 = x.astype(np.float64)
    ref = (x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + np.float64(F32(eps)))
           * gamma.astype(np.float64)).astype(F16)
    got = U.rmsnorm(x, gamma, eps)
    assert got.dtype == F16 and f16_ulps(got, ref).max() <= ONE_ULP
    assert not got[0].any()
    got32 = U.rmsnorm(x, gamma.astype(F32), eps)                 # FP32 gamma (b_f32)
    assert f16_ulps(got32, ref).max() <= ONE_ULP


@pytest.mark.parametrize("k", [8, 96, 4096])
def test_layernorm_against_float64(k):
    rng = np.random.default_rng(k + 1)
    x = fp16_data(rng, (6, k), specials=False)
    x[0] = 0                                                      # all-zero row: output = beta
    x[1] = (300 + rng.standard_normal(k)).astype(F16)             # mean >> spread: no cancellation
    gamma = (1 + rng.standard_normal(k) * 0.1).astype(F16)
    beta = (rng.standard_normal(k) * 0.1).astype(F16)
    eps = 1e-5
    x64 = x.astype(np.float64)
    d = x64 - x64.mean(-1, keepdims=True)
    std = np.sqrt((d * d).mean(-1, keepdims=True) + np.float64(F32(eps)))
    y = d / std * gamma
    ref = y + beta
    got = U.layernorm(x, gamma, beta, eps)
    # one FP16 rounding of the result, FP32 errors of its two terms (which may cancel), and the
    # FP32 mean's rounding seen through 1/std
    mean_err = 2.0 ** -22 * np.abs(x64.mean(-1, keepdims=True)) / std * np.abs(gamma)
    bound = 2.0 ** -11 * np.abs(ref) + 2.0 ** -20 * (np.abs(y) + np.abs(beta)) + mean_err + 2.0 ** -25
    assert got.dtype == F16 and (np.abs(got - ref) <= bound).all()
    assert (f16_ulps(got, ref.astype(F16)) <= ONE_ULP).mean() > 0.99
    np.testing.assert_array_equal(got[0], beta)
    assert np.abs(got[1].astype(np.float64)).std() > 0.5          # the row was normalised, not flattened


def test_relu_keeps_positives_and_nan_and_zeroes_the_rest():
    x = np.array([1.5, -2.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 6e-8, -6e-8], F16)
    got = U.relu(x)
    assert got.dtype == F16
    np.testing.assert_array_equal(got[[0, 4, 7]], x[[0, 4, 7]])
    assert np.isnan(got[6])
    assert (got[[1, 2, 3, 5, 8]].view(np.uint16) == 0).all()      # +0, never -0


def softmax64(x, scale, valid=None):
    z = x.astype(np.float64) * np.float64(F32(scale))
    if valid is not None:
        z = np.where(valid, z, -np.inf)
    m = np.max(z, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(z - m)
    s = e.sum(axis=-1, keepdims=True)
    return e / np.where(s > 0, s, 1)


@pytest.mark.parametrize("seed", range(3))
def test_softmax(seed):
    rng = np.random.default_rng(seed)
    rows, k = 12, 96
    x = (rng.standard_normal((rows, k)) * 8).astype(F16)
    scale = 0.125
    got = U.softmax(x, scale)
    ref = softmax64(x, scale)
    assert got.dtype == F16 and f16_ulps(got, ref.astype(F16)).max() <= ONE_ULP
    assert np.abs(got.astype(np.float64).sum(-1) - 1).max() < k * 2 ** -11


def test_causal_softmax_masks_keys_and_empty_rows_are_zero():
    rng = np.random.default_rng(5)
    rows, k = 6, 10
    x = (rng.standard_normal((rows, k)) * 4).astype(F16)
    valid = np.arange(k)[None, :] <= np.array([0, 3, 9, 2, 5, -1])[:, None]   # last row: none
    got = U.softmax(x, 0.5, valid)
    assert not got[~valid].any()
    assert not got[5].any()
    ref = softmax64(x, 0.5, valid)
    assert f16_ulps(got, ref.astype(F16)).max() <= ONE_ULP
    np.testing.assert_array_equal(got[0], np.eye(1, k, 0, F16)[0])


def rope_table(positions, d, base=10000.0):
    inv = base ** (-np.arange(0, d, 2) / d)
    ang = np.asarray(positions, np.float64)[:, None] * inv[None, :]
    return np.concatenate([np.cos(ang), np.sin(ang)], axis=1).astype(F16)


@pytest.mark.parametrize("d", [8, 64, 128])
def test_rope_matches_float64_rotate_half(d):
    rng = np.random.default_rng(d)
    rows = 9
    x = fp16_data(rng, (rows, d), scale=2.0, specials=False)
    table = rope_table(rng.integers(0, 4096, rows), d)
    h = d // 2
    x1, x2 = x[:, :h].astype(np.float64), x[:, h:].astype(np.float64)
    c, s = table[:, :h].astype(np.float64), table[:, h:].astype(np.float64)
    ref = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=1)
    # three FP16 roundings (two products, one sum): each at most 2^-11 relative to its value
    size = np.concatenate([np.abs(x1 * c) + np.abs(x2 * s), np.abs(x2 * c) + np.abs(x1 * s)], 1)
    got = U.rope(x, table)
    assert got.dtype == F16
    err = np.abs(got.astype(np.float64) - ref)
    assert (err <= 2 ** -10 * size + 2 ** -24).all(), err.max()


def test_rope_rotates_the_halves_the_right_way():
    x = np.array([[1, 2, 3, 4]], F16)
    quarter = np.array([[0, 0, 1, 1]], F16)          # cos 0, sin 1: a quarter turn
    np.testing.assert_array_equal(U.rope(x, quarter), np.array([[-3, -4, 1, 2]], F16))
    identity = np.array([[1, 1, 0, 0]], F16)
    np.testing.assert_array_equal(U.rope(x, identity), x)


# ---------------------------------------------------------------------------------------------
# Quantization
# ---------------------------------------------------------------------------------------------
FINITE_F16 = st.floats(width=16, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(F16, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                  elements=FINITE_F16))
def test_quantize_rows_properties(x):
    q, scale = U.quantize_rows(x)
    assert q.dtype == np.int8 and scale.dtype == F32 and scale.shape == (x.shape[0],)
    assert np.abs(q.astype(np.int32)).max() <= 127
    x32 = x.astype(F32)
    amax = np.abs(x32).max(axis=1)
    zero = amax == 0
    np.testing.assert_array_equal(scale[zero], 1.0)
    assert not q[zero].any()
    np.testing.assert_array_equal(scale[~zero], amax[~zero] / F32(127))
    err = np.abs(q.astype(np.float64) * scale[:, None] - x32.astype(np.float64))
    assert (err <= scale[:, None].astype(np.float64) * (0.5 + 1e-5)).all()
    peak = np.abs(q.astype(np.int32)).max(axis=1)
    assert (peak[~zero] == 127).all()


def _diffused_by_hand(x, amax):
    """The definition of the quant's diffusion of small values, one element at a time in FP32."""
    q = np.zeros(x.shape, np.int8)
    scale = np.where(amax > 0, amax / F32(127), F32(1)).astype(F32)
    for r in range(x.shape[0]):
        run, prev = F32(0), F32(0)
        for c in range(x.shape[1]):
            t = F32(F32(x[r, c]) / scale[r])
            code = np.rint(t)
            if code == 0:
                run = F32(run + t)
                cur = np.rint(run)
                code, prev = cur - prev, cur
            q[r, c] = np.clip(code, -127, 127)
    return q, scale


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(F16, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                  elements=FINITE_F16))
def test_diffused_quantisation_keeps_the_sum_of_small_values(x):
    q, scale = U.quantize_rows(x, diffuse=True)
    plain, plain_scale = U.quantize_rows(x)
    want_q, want_scale = _diffused_by_hand(x, np.abs(x.astype(F32)).max(axis=1))
    np.testing.assert_array_equal(scale, want_scale)
    np.testing.assert_array_equal(scale, plain_scale)
    np.testing.assert_array_equal(q, want_q)
    large = plain != 0                       # the large elements round as without the flag
    np.testing.assert_array_equal(q[large], plain[large])
    assert np.abs(q[~large].astype(np.int32)).max(initial=0) <= 1
    # every prefix of the small elements keeps their sum to half a step (plus the running sum's
    # FP32 rounding, at most one relative ulp of its magnitude per add)
    t = x.astype(np.float64) / scale[:, None]
    small_t = np.where(large, 0, t)
    got = np.cumsum(np.where(large, 0, q).astype(np.float64), axis=1)
    want = np.cumsum(small_t, axis=1)
    slack = np.cumsum(np.abs(small_t), axis=1) * 2.0 ** -23 * np.arange(1, x.shape[1] + 1)
    assert (np.abs(got - want) <= 0.5 + 1e-6 + slack).all()
    # given maxima (the one-pass form) give the same codes
    q2, s2 = U.quantize_rows(x, np.abs(x.astype(F32)).max(axis=1), diffuse=True)
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_array_equal(s2, scale)


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(F16, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                  elements=FINITE_F16))
def test_quant_residual_is_the_rounding_error_and_a_second_plane_is_fifteen_bits(x):
    q, scale = U.quantize_rows(x)
    rest = U.quant_residual(x, q, scale)
    x32 = x.astype(F32)
    for r in range(x.shape[0]):                     # the definition, one element at a time
        for c in range(x.shape[1]):
            back = F32(F32(q[r, c]) * scale[r])
            assert rest[r, c].view(np.uint16) == F16(F32(x32[r, c] - back)).view(np.uint16)
    q2, s2 = U.quantize_rows(rest)
    two = q.astype(np.float64) * scale[:, None] + q2.astype(np.float64) * s2[:, None]
    amax = np.abs(x32).max(axis=1, keepdims=True).astype(np.float64)
    # one plane: half a step of amax/127; two: half a step of the residual's max (<= half a
    # step of hi), plus the residual's FP16 rounding (2^-11 of it, or half a subnormal step)
    # and FP32 products
    assert (np.abs(two - x32) <= amax / 127 / 254 * (1 + 2 ** -9) + 2.0 ** -25
            + amax * 2 ** -30).all()


def test_diffused_quantisation_keeps_the_mass_of_small_probabilities():
    # one large probability and 400 small ones: rounding each loses them all (0.001 < half a
    # step of 0.6 / 127), diffusing them keeps their total to half a step
    p = np.full((1, 401), 0.001, F16)
    p[0, 0] = 0.6
    q, s = U.quantize_rows(p)
    qd, sd = U.quantize_rows(p, diffuse=True)
    small = p[0, 1:].astype(np.float64).sum()
    assert q[0, 1:].sum() == 0 and qd[0, 0] == q[0, 0] == 127
    assert abs(qd[0, 1:].astype(np.float64).sum() * sd[0] - small) <= sd[0] / 2


def test_quantize_rows_rounds_half_to_even():
    x = np.array([[127, 0.5, 1.5, 2.5, -0.5, -127]], F16)      # scale exactly 1
    q, scale = U.quantize_rows(x)
    assert scale.tolist() == [1.0] and q.tolist() == [[127, 0, 2, 2, 0, -127]]


def test_quantize_weight_per_output_channel():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((5, 33)).astype(F32)
    w[2] = 0
    q, scale = U.quantize_weight(w)
    assert q.dtype == np.int8 and scale[2] == 1.0 and not q[2].any()
    assert (np.abs(q.astype(np.int32)).max(axis=1)[[0, 1, 3, 4]] == 127).all()
    assert (np.abs(q * scale[:, None] - w) <= scale[:, None] * (0.5 + 1e-5)).all()


@pytest.mark.parametrize("k", [7, 1024, 1025, 3000])
def test_mpe_fast_path_equals_the_definition(k):
    """The simulator's fused MPE path gives the bits of epilogue(int_matmul(...))."""
    rng = np.random.default_rng(k)
    a = rng.integers(-128, 128, (5, k)).astype(np.int8)
    w = rng.integers(-128, 128, (9, k)).astype(np.int8)
    a_scale = rng.uniform(1e-4, 1e-1, 5).astype(np.float32)
    w_scale = rng.uniform(1e-4, 1e-1, 9).astype(np.float32)
    w_t = np.ascontiguousarray(w.T.astype(np.float32))
    want = U.mpe_epilogue(U.int_matmul(a, w_t), a_scale, w_scale)
    got = U.mpe_fast(a, w_t, a_scale, w_scale).astype(np.float16)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    got = U.mpe_fast(a, w_t, a_scale, None).astype(np.float16)
    np.testing.assert_array_equal(got.view(np.uint16),
                                  U.mpe_epilogue(U.int_matmul(a, w_t), a_scale, None).view(np.uint16))
