"""CSD-chain model (hw/sparse_dsp_chain.py): packed DSP48 MAC, lanes, OAU exactness, N:16 packing, utilisation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flightllm_overlay.hw import sparse_dsp_chain as C

I64 = np.int64
int8s = st.one_of(st.sampled_from([-128, 127, -127, -1, 0, 1]), st.integers(-128, 127))


def reference_run(weights, indices, acts, n):
    """Plain int64 dot products of each n-long segment: (beats, 2, L/n)."""
    w = np.asarray(weights, I64)
    sel = np.stack([np.take_along_axis(np.broadcast_to(acts[:, lane], (w.shape[0], 16)).astype(I64),
                                       np.asarray(indices, np.intp), axis=1) for lane in (0, 1)], 1)
    prod = sel * w[:, None, :]
    return prod.reshape(w.shape[0], 2, -1, n).sum(axis=3)


def const_block(n, value):
    return C.NMBlock(n, np.full((16, n), value, np.int8),
                     np.tile(np.arange(n, dtype=np.uint8) * (16 // n), (16, 1)))


# ---------------------------------------------------------------------------------------------
# DSP48E2 packed dual MAC and WP486 lanes
# ---------------------------------------------------------------------------------------------
def test_dsp48_packed_product_is_two_int8_macs():
    a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
    for w in (-128, -77, -1, 0, 1, 127):
        p = C.dsp48_packed(a, b, w, 0)
        np.testing.assert_array_equal(p, ((a * w) * 2**18 + b * w) % 2**48)
        lane_a, lane_b = C.unpack_lanes(p)
        np.testing.assert_array_equal(lane_a, a * w)
        np.testing.assert_array_equal(lane_b, b * w)
    assert C.preadd(-128, -128) == -128 * 2**18 - 128          # fits the 27-bit pre-adder
    assert C.dsp48_packed(0, 0, 0, C.MASK48) + 0 == C.MASK48     # Z passes through, 48-bit


@given(st.integers(-(2**29) + 1, 2**29 - 1), st.integers(-(2**17), 2**17 - 1))
def test_wp486_sign_correction(lane_a, lane_b):
    p = C.pack_lanes(lane_a, lane_b)
    assert tuple(int(x) for x in C.unpack_lanes(p)) == (lane_a, lane_b)
    naive = int(C.sext(p >> 18, 30))                             # upper lane without correction
    assert naive == lane_a - (lane_b < 0)


@given(st.integers(-65024, 131071), st.integers(-65024, 131071))
def test_oau_split_recombines(lane_a, lane_b):
    lsp, msp_a, msp_b = C.oau_split(C.pack_lanes(lane_a, lane_b))
    lsp_a, lsp_b = (int(lsp) >> 18) & 0xFFFF, int(lsp) & 0xFFFF
    assert int(lsp) >> 34 == 0 and (int(lsp) >> 16) & 3 == 0     # C-port value: {lsp_a, 2'b0, lsp_b}
    assert int(msp_a) * 65536 + lsp_a == lane_a
    assert int(msp_b) * 65536 + lsp_b == lane_b
    assert -1 <= int(msp_a) <= 1 and -1 <= int(msp_b) <= 1


# ---------------------------------------------------------------------------------------------
# The chain: configuration and exactness
# ---------------------------------------------------------------------------------------------
def test_reduction_node_modes():
    ch = C.CSDChain(16)
    assert ch.modes(2) == ["out"] * 8
    assert ch.modes(4) == ["pass", "out"] * 4
    assert ch.modes(8) == ["pass", "oau", "pass", "out"] * 2
    assert ch.modes(16) == ["pass", "oau"] * 3 + ["pass", "out"]
    assert C.CSDChain(16, oau_threshold=C.PAPER_OAU_THRESHOLD).modes(8) == ["pass", "pass", "pass", "out"] * 2
    assert C.CSDChain(32).modes(16) == (["pass", "oau"] * 3 + ["pass", "out"]) * 2
    assert not C.CSDChain(8).supports(16) and C.CSDChain(8).supports(8)
    with pytest.raises(ValueError):
        C.CSDChain(16).run(np.zeros((1, 16)), None, np.zeros((2, 16)), 3)
    with pytest.raises(ValueError):
        C.CSDChain(6)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(C.FSB_CODES), st.sampled_from([16, 32]), st.data())
def test_chain_equals_int64_reference(n, length, data):
    beats = data.draw(st.integers(1, 4))
    w = data.draw(hnp.arrays(np.int8, (beats, length), elements=int8s))
    idx = data.draw(hnp.arrays(np.uint8, (beats, length), elements=st.integers(0, 15)))
    acts = data.draw(hnp.arrays(np.int8, (beats, 2, 16), elements=int8s))
    got = C.CSDChain(length).run(w, idx, acts, n)
    assert got.shape == (beats, 2, length // n)
    np.testing.assert_array_equal(got, reference_run(w, idx, acts, n))


@pytest.mark.parametrize("n", C.FSB_CODES)
@pytest.mark.parametrize("w, a", [(-128, -128), (127, -128), (-128, 127), (127, 127)])
def test_extreme_chains_are_exact(n, w, a):
    """All-extreme products: the 16:16 sum reaches 16 * 16384 = 2**18, twice the lane's range."""
    blk = const_block(n, w)
    acts = np.full((2, 16), a)
    expect = C.reference_block(blk, acts)
    np.testing.assert_array_equal(C.CSDChain(16).run_block(blk, acts), expect)
    np.testing.assert_array_equal(C.CSDChain(32).run_block(blk, acts), expect)


def test_oau_is_what_makes_long_chains_exact():
    acts = np.full((2, 16), -128)
    dense = const_block(16, -128)
    assert (C.reference_block(dense, acts) == 16 * 16384).all()
    no_oau = C.CSDChain(16, oau_threshold=np.inf).run_block(dense, acts)
    assert (no_oau != 16 * 16384).all()                         # lane B wraps, lane A gets its borrow
    # The paper's rule (no OAU up to 8 DSP48s) misses 8 * (-128 * -128) = 2**17 by one LSB.
    half = const_block(8, -128)
    paper = C.CSDChain(16, oau_threshold=C.PAPER_OAU_THRESHOLD).run_block(half, acts)
    assert (paper != 8 * 16384).all()
    assert (C.CSDChain(16).run_block(half, acts) == 8 * 16384).all()
    # ... and is exact for symmetric INT8 (|x| <= 127), as the paper says.
    sym = const_block(8, -127)
    np.testing.assert_array_equal(
        C.CSDChain(16, oau_threshold=C.PAPER_OAU_THRESHOLD).run_block(sym, np.full((2, 16), -127)),
        np.full((2, 16), 8 * 127 * 127))


# ---------------------------------------------------------------------------------------------
# N:16 blocks: 4-bit indices, FSB codes
# ---------------------------------------------------------------------------------------------
@st.composite
def nm_dense_blocks(draw):
    n = draw(st.sampled_from(C.FSB_CODES))
    block = np.zeros((16, 16), np.int8)
    for r in range(16):
        cols = draw(st.lists(st.integers(0, 15), max_size=n, unique=True))
        for c in cols:
            block[r, c] = draw(int8s.filter(bool))
    return n, block


@settings(max_examples=100, deadline=None)
@given(nm_dense_blocks())
def test_nm_block_round_trip(nb):
    n, block = nb
    blk = C.pack_nm_block(block, n)
    assert blk.values.shape == blk.indices.shape == (16, n)
    assert (np.diff(blk.indices.astype(int), axis=1) > 0).all() and blk.indices.max() <= 15
    np.testing.assert_array_equal(blk.dense(), block)
    meta = blk.meta_bytes()
    assert len(meta) == (0 if n == 16 else blk.values.nbytes // 2)  # 4-bit indices: half the data
    back = C.NMBlock.from_meta(n, blk.values.tobytes(), meta)
    np.testing.assert_array_equal(back.dense(), block)
    np.testing.assert_array_equal(back.indices, blk.indices)


def test_pack_prunes_by_magnitude_and_rejects_bad_input():
    row = np.array([5, -9, 0, 3, 9, 1, 0, 0, 0, 0, 0, -128, 0, 0, 2, 0], np.int8)
    block = np.tile(row, (16, 1))
    with pytest.raises(ValueError):
        C.pack_nm_block(block, 4)
    blk = C.pack_nm_block(block, 4, prune=True)
    assert blk.indices[0].tolist() == [0, 1, 4, 11] and blk.values[0].tolist() == [5, -9, 9, -128]
    with pytest.raises(ValueError):
        C.pack_nm_block(block, 6, prune=True)
    with pytest.raises(ValueError):
        C.NMBlock.from_meta(4, blk.values, blk.meta_bytes()[:-1])


def test_matvec_pair_with_mixed_codes():
    rng = np.random.default_rng(3)
    w = rng.integers(-128, 128, (48, 64)).astype(np.int8)
    codes = rng.choice(C.FSB_CODES, (3, 4))
    blocks = C.pack_nm_matrix(w, codes)
    pruned = np.block([[b.dense() for b in row] for row in blocks]).astype(I64)
    acts = rng.integers(-128, 128, (2, 64))
    acts[:, :16] = -128
    np.testing.assert_array_equal(C.CSDChain(16).matvec_pair(blocks, acts), acts @ pruned.T)


# ---------------------------------------------------------------------------------------------
# Runtime DSP utilisation: configurable chain vs fixed dense chain
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", C.FSB_CODES)
def test_utilisation_single_code(n):
    rng = np.random.default_rng(n)
    blk = C.pack_nm_block(rng.integers(1, 128, (16, 16)) * rng.choice([-1, 1], (16, 16)), n, prune=True)
    rep = C.compare_utilisation([blk], rng.integers(-128, 128, (2, 16)))
    assert rep["configurable"]["dsp_cycles"] == 16 * n                # n beats of 16 DSP48s
    assert rep["fixed"]["dsp_cycles"] == 16 * 16                      # always 16 beats
    assert rep["configurable"]["useful_macs"] == rep["fixed"]["useful_macs"] == 2 * 16 * n
    assert rep["configurable"]["utilisation"] == 1.0
    assert rep["fixed"]["utilisation"] == n / 16
    assert rep["speedup"] == pytest.approx(16 / n)


def test_utilisation_mixed_workload_reaches_paper_ratio():
    """Half dense, half 4:16 blocks: fixed chain 62.5 % busy, configurable 100 %: the paper's 1.6x."""
    rng = np.random.default_rng(7)
    w = rng.integers(1, 128, (64, 64)) * rng.choice([-1, 1], (64, 64))
    codes = np.array([[16, 4] * 2, [4, 16] * 2] * 2)
    rep = C.compare_utilisation(C.pack_nm_matrix(w, codes), rng.integers(-128, 128, (2, 16)))
    assert rep["fixed"]["utilisation"] == pytest.approx(0.625)
    assert rep["configurable"]["utilisation"] == 1.0
    assert rep["utilisation_ratio"] == pytest.approx(1.6)


def test_fixed_chain_has_no_sparse_mux():
    fixed = C.CSDChain(16, configurable=False)
    assert not fixed.supports(4)
    with pytest.raises(ValueError):
        fixed.run(np.ones((1, 16)), np.zeros((1, 16), int), np.ones((2, 16)), 16)
