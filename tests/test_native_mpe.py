"""The MPE's native kernels (sim/native_mpe.cpp) equal their numpy definition bit for bit: random and extreme operands, and whole tiny models."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.overlay import FlightLLMOverlay
from flightllm_overlay.runtime import Session
from flightllm_overlay.sim import mpe_native, native
from flightllm_overlay.sim.device import SimulatedU280
from flightllm_overlay.sim.functional import FunctionalSimulator
from flightllm_overlay.spec import arithmetic as U


@pytest.fixture
def lib():
    lib = mpe_native.kernels()
    if lib is None:
        pytest.skip(f"no native kernels here: {native.status()}")
    return lib


def _operands(rng, m, k, n, wt, pad, scaled, a_codes=None, w_codes=None):
    """INT8 activations (row stride k + pad), weights in a byte buffer at an odd offset with
    row stride cols + pad, FP32 weight scales (random, or the values `scaled` cycled) behind
    them at an offset that is not 4-aligned."""
    a_rows = rng.integers(-128, 128, (m, k + pad)).astype(np.int8)
    a = a_rows[:, :k]
    if a_codes is not None:
        a[...] = a_codes
    rows, cols = (k, n) if wt else (n, k)
    w = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
    if w_codes is not None:
        w[...] = w_codes
    off = 3
    s_off = off + rows * (cols + pad) + 1
    buf = rng.integers(0, 256, s_off + 4 * n + 5).astype(np.uint8)
    np.ndarray((rows, cols), np.int8, buffer=buf, offset=off, strides=(cols + pad, 1))[...] = w
    w_scale = None
    if scaled is True:
        w_scale = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    elif scaled is not None:
        w_scale = np.resize(np.array(scaled, np.float32), n)
    if w_scale is not None:
        buf[s_off:s_off + 4 * n] = w_scale.view(np.uint8)
    w_t = (w if wt else w.T).astype(np.float32)
    return a, w_t, w_scale, (buf, off, cols + pad, wt, *((buf, s_off) if w_scale is not None
                                                          else (None, 0)))


def _numpy(a, w_t, a_scale, w_scale, out, live):
    """What mpe_execute's numpy path writes."""
    with np.errstate(over="ignore", invalid="ignore"):
        if live is None:
            out[...] = U.mpe_fast(a, w_t, a_scale, w_scale)
        else:
            out[live] = U.mpe_fast(a[live], w_t, a_scale[live], w_scale)


def _both(lib, a, w_t, a_scale, w_scale, wargs, live, out_pad=0):
    """(ok, output) of the INT8 kernel, of the epilogue on numpy's FP32 product, and numpy's
    output (uint16 bit patterns)."""
    m, n = a.shape[0], w_t.shape[1]
    outs = [np.full((m, n + out_pad), 0x7777, np.uint16)[:, :n] for _ in range(3)]
    ok = mpe_native.mpe(lib, a, a_scale, live, *wargs, outs[0].view(np.float16), n, a.shape[1])
    acc = U.mpe_fp32_acc(a if live is None else a[live], w_t)
    ok_e = mpe_native.epilogue(lib, acc, a_scale, live, *wargs[4:], outs[1].view(np.float16))
    _numpy(a, w_t, a_scale, w_scale, outs[2].view(np.float16), live)
    return (ok, outs[0]), (ok_e, outs[1]), outs[2]


SHAPES = [(1, 576, 193), (2, 1536, 65), (3, 10, 64), (16, 577, 31), (17, 1031, 9),
          (100, 64, 100), (130, 2049, 7), (5, 1, 1), (64, 3, 1001)]


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("wt", [0, 1])
def test_random_operands_equal_numpy(lib, m, k, n, wt):
    rng = np.random.default_rng(m * 7919 + k * 31 + n + wt)
    for scaled, pad, live in [(True, 0, None), (None, 5, None), (True, 3, "half")]:
        a, w_t, w_scale, wargs = _operands(rng, m, k, n, wt, pad, scaled)
        a_scale = (rng.random(m) * 1e-2).astype(np.float32)
        rows = None if live is None else np.flatnonzero(np.arange(m) % 2 == 0)
        *got, want = _both(lib, a, w_t, a_scale, w_scale, wargs, rows, out_pad=pad)
        for ok, out in got:
            assert ok
            assert np.array_equal(out, want)


EXTREME_SCALES = [  # (a_scale per row, w_scale cycled over columns): no inf times zero
    ([1.0, -1e-3, -7.0, 1e-38, 1e-45, np.inf], [1e30, -1e-30, 1e-40, 6e-8, 1.0, -2.0, 3e-5]),
    ([1.0, -1e-3, -7.0, 1e-38, 1e-45, 3e30], [0.0, -0.0, 1e30, 6e-8, -1.0, 2e-39, 3e-5])]


@pytest.mark.parametrize("wt", [0, 1])
@pytest.mark.parametrize("scales", EXTREME_SCALES)
def test_extreme_codes_and_scales_equal_numpy(lib, wt, scales):
    """-128 codes everywhere (|acc| = 2**14 k, above 2**24: FP32 rounds it), a zero row;
    scales huge (FP16 overflow to inf), tiny (FP16 subnormals and zeros), FP32 subnormal,
    zero, negative (-0.0 outputs) and infinite."""
    rng = np.random.default_rng(5)
    m, k, n = 6, 2051, 40
    a_codes = np.full((m, k), -128, np.int8)
    a_codes[1] = rng.integers(-128, 128, k)
    a_codes[2] = 0
    w_codes = np.full((k, n) if wt else (n, k), -128, np.int8)
    a, w_t, w_scale, wargs = _operands(rng, m, k, n, wt, 1, scales[1], a_codes, w_codes)
    a_scale = np.array(scales[0], np.float32)
    *got, want = _both(lib, a, w_t, a_scale, w_scale, wargs, None)
    for ok, out in got:
        assert ok
        assert np.array_equal(out, want)
    assert {0x7C00, 0xFC00, 0x8000, 0x0000} <= set(want.ravel().tolist())   # inf, -inf, -0, 0
    assert (want & 0x3FF)[(want & 0x7C00) == 0].any()                       # FP16 subnormals


@pytest.mark.parametrize("a_scale0,w_scale0", [(np.nan, 1.0), (1.0, np.nan), (np.inf, 0.0),
                                               (1e38, 0.0)])
def test_a_nan_result_leaves_the_instruction_to_numpy(lib, a_scale0, w_scale0):
    """NaN scales, inf * 0 and an FP32 overflow times a zero scale: the kernel says so."""
    rng = np.random.default_rng(9)
    a, w_t, w_scale, wargs = _operands(rng, 2, 33, 5, 0, 0, [w_scale0, 1.0], a_codes=1,
                                       w_codes=100)
    a_scale = np.array([a_scale0, 1.0], np.float32)
    *got, want = _both(lib, a, w_t, a_scale, w_scale, wargs, None)
    assert got[0][0] is False and got[1][0] is False
    assert np.isnan(want.view(np.float16)).any()


def _record(program, steps):
    """Logits of each run and every HBM byte at the end, on a fresh simulated card."""
    overlay = FlightLLMOverlay(device=SimulatedU280(
        simulator_factory=lambda target: FunctionalSimulator(target)))
    with Session(overlay, program) as s:
        logits = [s.run(step, ids, pos) for step, ids, pos in steps]
        hbm = {}
        for ch, buf in s.channels.items():
            buf.sync_from_device()
            hbm[ch] = np.array(buf)
    return logits, hbm


#: the first prefill has enough rows for the BLAS product, the second takes the INT8 kernel
RUNS = [("prefill", list(range(5, 5 + 2 * mpe_native.BLAS_ROWS)), 0), ("decode", [7], 96),
        ("prefill", list(range(60, 80)), 97), ("decode", [3], 117)]


@pytest.mark.parametrize("which", ["llama", "opt"])
def test_tiny_models_native_equals_numpy(which, lib, tiny_program, tiny_opt_ckpt,
                                         monkeypatch):
    from flightllm_overlay.compiler import compile_model
    program = tiny_program if which == "llama" else compile_model(tiny_opt_ckpt, ctx=128)
    calls = []
    for name in ("mpe", "epilogue"):
        real = getattr(mpe_native, name)
        monkeypatch.setattr(mpe_native, name, lambda *args, name=name, real=real:
                            calls.append(name) or real(*args))
    got = _record(program, RUNS)
    assert set(calls) == {"mpe", "epilogue"}
    monkeypatch.setenv("FLIGHTLLM_NATIVE", "0")
    native.reset()
    try:
        n_native = len(calls)
        want = _record(program, RUNS)
        assert len(calls) == n_native                  # numpy alone
    finally:
        monkeypatch.undo()
        native.reset()
    for x, y in zip(got[0], want[0]):
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32))
    assert got[1].keys() == want[1].keys()
    assert all(np.array_equal(got[1][ch], want[1][ch]) for ch in got[1])
    assert any(got[1][ch].any() for ch in got[1])
