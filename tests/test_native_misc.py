"""The native MISC kernels (sim/native_misc.cpp) write the same bytes as the numpy definitions, for every operation, flag and edge value."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from flightllm_overlay.sim import misc_native, misc_unit, native
from flightllm_overlay.spec import isa

GBUF, ABUF = 1 << 20, 1 << 18
#: the numpy definitions warn on the NaN and infinity inputs these tests give on purpose
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
A, B, OUT, OUT2, GIVEN = 0, 0x40000, 0x80000, 0xC0000, 0xD0000


@pytest.fixture(scope="module")
def kern():
    k = misc_native.kernels()
    if k is None:
        pytest.fail(f"the native kernels did not build: {native.status()} (install g++)",
                    pytrace=False)
    return k


def f16_values(rng, n, scale, specials, edges=True):
    """FP16 values: normal ones at `scale`, with subnormals, zeros, the largest finite values
    and exact FP16 ties sprinkled in (when `edges`); NaN and infinities too when `specials`."""
    x = (rng.standard_normal(n) * scale).astype(np.float16)
    if not edges:
        return x
    edge = np.array([0.0, -0.0, 6e-8, -6e-8, 1e-5, 65504.0, -65504.0, 2049.0, 0.5, -1.5],
                    np.float16)
    pick = rng.random(n) < 0.08
    x[pick] = rng.choice(edge, pick.sum())
    if specials:
        bad = rng.random(n) < 0.01
        x[bad] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float16), bad.sum())
    return x


def run(mop, f, rows, k, groups, pos, live, fill, native_on, fallbacks=None):
    """The buffers after one MISC instruction, on numpy or on the native kernel (counting in
    `fallbacks` the calls the kernel left to numpy)."""
    core = SimpleNamespace(bufs={"gbuf": np.zeros(GBUF, np.uint8), "abuf": np.zeros(ABUF, np.uint8)})
    fill(core.bufs)
    saved, bind = misc_native.kernels, misc_unit.native_action
    if not native_on:
        misc_native.kernels = lambda: None

    def counted(*args):
        numpy_action = args[-1]

        def fallback():
            if fallbacks is not None:
                fallbacks.append(mop)
            numpy_action()
        return bind(*args[:-1], fallback)
    misc_unit.native_action = counted
    try:
        action, _, _ = misc_unit.misc_action(core, f, mop, rows, k, groups, pos, live)
    finally:
        misc_native.kernels, misc_unit.native_action = saved, bind
    assert hasattr(action, "keep") == native_on, "the native kernel was (not) used"
    action()
    return core.bufs


def filler(seed, rows, k, scale, specials, b_f32=False, given=None, edges=True):
    def fill(bufs):
        rng = np.random.default_rng(seed)
        g = bufs["gbuf"]
        g[A:A + 4 * rows * k * 2] = f16_values(rng, 4 * rows * k, scale, specials,
                                               edges).view(np.uint8)
        if b_f32:
            g[B:B + 4 * rows * k * 4] = (rng.standard_normal(4 * rows * k) * 2).astype(
                np.float32).view(np.uint8)
        else:
            g[B:B + 4 * rows * k * 2] = f16_values(rng, 4 * rows * k, 2.0, specials,
                                                   edges).view(np.uint8)
        if given is not None:
            g[GIVEN:GIVEN + given.nbytes] = given.reshape(-1).view(np.uint8)
        bufs["abuf"][:] = rng.integers(0, 256, ABUF, dtype=np.uint8)
    return fill


def bits(x: float) -> int:
    return int(np.float32(x).view(np.uint32))


def check(mop, fields, rows, k, seed, scale=3.0, specials=False, groups=1, pos=0, live=None,
          given=None, native_computes=None, edges=True):
    """Both executions write the same bytes; the kernel computes itself (no numpy fallback)
    when `native_computes` (default: when no NaN or infinity is among the inputs)."""
    f = {"op": isa.MISC_OPS.index(mop), "a_addr": A, "b_addr": B, "out_addr": OUT,
         "out2_addr": OUT2, **fields}
    fill = filler(seed, rows, k, scale, specials, bool(f.get("b_f32")), given, edges)
    want = run(mop, f, rows, k, groups, pos, live, fill, False)
    fallbacks = []
    got = run(mop, f, rows, k, groups, pos, live, fill, True, fallbacks)
    for name in want:
        diff = np.flatnonzero(want[name] != got[name])
        assert not len(diff), f"{mop} {fields}: {name} differs at bytes {diff[:8]}"
    if native_computes is None:
        native_computes = not specials
    if native_computes:
        assert not fallbacks, f"{mop} {fields}: the kernel left finite inputs to numpy"


SHAPES = [(1, 576), (3, 7), (2, 64), (37, 40), (64, 576)]
LIVE = [None, "some"]


def live_rows(rows, which):
    return None if which is None or rows < 3 else np.array([0, rows - 1])


@pytest.mark.parametrize("mop", ["eadd", "emul"])
@pytest.mark.parametrize("shape,which", list(itertools.product(SHAPES, LIVE)))
@pytest.mark.parametrize("b_f32,bcast", [(0, 0), (1, 0), (0, 1)])
def test_eltwise(kern, mop, shape, which, b_f32, bcast):
    rows, k = shape
    for seed, specials in ((1, False), (2, True)):
        check(mop, {"b_f32": b_f32, "bcast_b": bcast}, rows, k, seed, specials=specials,
              live=live_rows(rows, which))
    check(mop, {"b_f32": b_f32, "bcast_b": bcast, "out_addr": A}, rows, k, 3)   # in place
    if mop == "emul":
        check(mop, {"b_f32": b_f32, "bcast_b": bcast, "amax": 1}, rows, k, 4, scale=300.0,
              live=live_rows(rows, which))


@pytest.mark.parametrize("mop", ["silu", "relu"])
@pytest.mark.parametrize("shape,which", list(itertools.product(SHAPES, LIVE)))
def test_unary(kern, mop, shape, which):
    rows, k = shape
    for seed, specials in ((5, False), (6, True)):
        check(mop, {}, rows, k, seed, specials=specials, live=live_rows(rows, which))


def test_silu_and_relu_on_every_fp16_value(kern):
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]
    k = 256
    for mop in ("silu", "relu"):
        def fill(bufs, mop=mop):
            bufs["gbuf"][A:A + finite.nbytes] = finite.view(np.uint8)
        rows = len(finite) // k
        f = {"op": isa.MISC_OPS.index(mop), "a_addr": A, "out_addr": OUT}
        want = run(mop, f, rows, k, 1, 0, None, fill, False)
        got = run(mop, f, rows, k, 1, 0, None, fill, True)
        assert np.array_equal(want["gbuf"], got["gbuf"]), mop


@pytest.mark.parametrize("shape,which", list(itertools.product(SHAPES, LIVE)))
@pytest.mark.parametrize("b_f32", [0, 1])
def test_rmsnorm_and_layernorm(kern, shape, which, b_f32):
    rows, k = shape
    live = live_rows(rows, which)
    for seed, scale, specials in ((7, 3.0, False), (8, 0.01, False), (9, 3.0, True)):
        check("rmsnorm", {"imm": bits(1e-5), "b_f32": b_f32}, rows, k, seed, scale, specials,
              live=live)
        check("rmsnorm", {"imm": bits(1e-6), "b_f32": b_f32, "amax": 1}, rows, k, seed, scale,
              specials, live=live)
        check("layernorm", {"imm": bits(1e-5), "b_f32": b_f32}, rows, k, seed, scale, specials,
              live=live)
    check("rmsnorm", {"imm": 0}, rows, k, 10, scale=0.0,     # eps 0 on zero rows: NaN, numpy's
          native_computes=False)


@pytest.mark.parametrize("shape,which", list(itertools.product(SHAPES, LIVE)))
@pytest.mark.parametrize("causal,sink,win,groups,pos", [(0, 0, 0, 1, 0), (1, 0, 0, 1, 30),
                                                        (1, 0, 0, 4, 3), (1, 1, 1, 2, 150)])
def test_softmax(kern, shape, which, causal, sink, win, groups, pos):
    rows, k = shape
    k = max(k, 1)
    fields = {"imm": bits(0.125), "causal": causal, "blk_sink": sink, "blk_win": win}
    for seed, scale, specials in ((11, 3.0, False), (12, 300.0, False), (13, 3.0, True)):
        check("softmax", fields, rows, k, seed, scale, specials, groups, pos,
              live_rows(rows, which))


@pytest.mark.parametrize("shape,which", list(itertools.product([(1, 64), (3, 8), (37, 64)], LIVE)))
@pytest.mark.parametrize("groups", [1, 2, 64])
def test_rope(kern, shape, which, groups):
    rows, k = shape
    live = live_rows(rows, which)
    check("rope", {}, rows, k, 14, 3.0, False, groups, live=live, edges=False)
    # the largest values overflow a product to infinity and a sum of two to NaN: numpy's
    check("rope", {}, rows, k, 14, 3.0, False, groups, live=live, native_computes=False)
    check("rope", {}, rows, k, 15, 3.0, True, groups, live=live)


@pytest.mark.parametrize("shape,which", list(itertools.product(SHAPES, LIVE)))
@pytest.mark.parametrize("diffuse,residual", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_quant(kern, shape, which, diffuse, residual):
    rows, k = shape
    live = live_rows(rows, which)
    fields = {"out_abuf": 1, "out_addr": 0x100, "out2_addr": 0x30000, "diffuse": diffuse,
              "residual": residual}
    for seed, scale, specials in ((16, 3.0, False), (17, 1e-4, False), (18, 3.0, True)):
        check("quant", fields, rows, k, seed, scale, specials, live=live)
    check("quant", fields, rows, k, 19, scale=0.0, live=live)          # all-zero rows: scale 1
    # given row maxima: not below the true ones, too small (numpy's INT8 cast wraps), infinite
    rng = np.random.default_rng(20)
    for given, computes in ((np.full((rows, 2), 7e4, np.float32), True),
                            (np.full((rows, 2), 0.5, np.float32), False),
                            (np.where(rng.random((rows, 2)) < 0.3, np.inf, 4.0).astype(np.float32),
                             False)):
        check("quant", {**fields, "given_max": 1, "b_addr": GIVEN}, rows, k, 21, scale=1.0,
              groups=2, live=live, given=given, native_computes=computes and k > 1)


@pytest.mark.parametrize("shape,which", list(itertools.product(SHAPES, LIVE)))
def test_amax(kern, shape, which):
    rows, k = shape
    for seed, specials in ((22, False), (23, True)):
        check("amax", {}, rows, k, seed, 3.0, specials, live=live_rows(rows, which))


def test_numpy_when_turned_off(monkeypatch):
    monkeypatch.setenv("FLIGHTLLM_NATIVE", "0")
    native.reset()
    try:
        assert native.library() is None and misc_native.kernels() is None
        assert "FLIGHTLLM_NATIVE=0" in native.status()
    finally:
        monkeypatch.delenv("FLIGHTLLM_NATIVE")
        native.reset()


def test_exp32_equals_the_definition(kern):
    """The kernels' vectorised exp32 (rint by the 1.5 * 2^52 shift, 2^n built from bits) against
    units.exp32 on every argument range: clamped, subnormal and overflowing results, ties."""
    import ctypes

    from flightllm_overlay.spec import arithmetic as U
    rng = np.random.default_rng(24)
    x = np.concatenate([rng.uniform(-120, 95, 200_000), rng.standard_normal(50_000),
                        np.arange(-160, 130) * np.log(2), np.arange(-400, 400) / 2 * np.log(2),
                        [0.0, -0.0, -np.inf, np.inf, -87.4, -103.9, 88.72, 88.73, 1e-30]])
    x = x.astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), -x])
    got = np.empty_like(x)
    fn = native.library().fllm_exp32_array
    fn.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    fn(x.ctypes.data, got.ctypes.data, len(x))
    with np.errstate(over="ignore"):
        want = U.exp32(x)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_built_in_the_background_into_the_cache(monkeypatch, tmp_path):
    """prepare() starts g++ at once; library() waits for it and loads the result; a second
    process (here: a reset) finds the built library by its key instead of building again."""
    monkeypatch.setenv("FLIGHTLLM_CACHE", str(tmp_path))
    monkeypatch.delenv("FLIGHTLLM_NATIVE", raising=False)
    native.reset()
    try:
        native.prepare()
        assert "build" in native._state
        lib = native.library()
        built = list((tmp_path / "native").iterdir())
        assert lib is not None and len(built) == 1 and built[0].suffix == ".so", built
        native.reset()
        mtime = built[0].stat().st_mtime_ns
        native.prepare()
        assert "build" not in native._state and native.library() is not None
        assert built[0].stat().st_mtime_ns == mtime
    finally:
        native.reset()


def test_a_failed_build_warns_and_runs_on_numpy(monkeypatch, tmp_path):
    monkeypatch.setenv("FLIGHTLLM_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    native.reset()
    try:
        with pytest.warns(RuntimeWarning, match="install g\\+\\+"):
            assert native.library() is None
        assert "numpy only" in native.status() and "no C++ compiler" in native.status()
        native.reset()
        monkeypatch.setenv("FLIGHTLLM_NATIVE", "1")
        with pytest.raises(native.NativeBuildError, match="unset FLIGHTLLM_NATIVE"):
            native.library()
    finally:
        native.reset()
