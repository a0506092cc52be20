"""The packed weight format: blob round trips, the dequantisation unit, the sparse expansion, errors."""
import numpy as np
import pytest

from flightllm_overlay.errors import CompileError, ProgramError
from flightllm_overlay.spec import wformat as WF


def random_mask(rng, r, k, codes=WF.FSB_CODES):
    block_n = rng.choice(codes, size=(r // 16, k // 16)).astype(np.uint8)
    mask = np.zeros((r, k), bool)
    for i in range(r // 16):
        for j in range(k // 16):
            for row in range(16):
                cols = rng.choice(16, size=block_n[i, j], replace=False)
                mask[i * 16 + row, j * 16 + cols] = True
    return mask, block_n


@pytest.mark.parametrize("bits", WF.BITS)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("group", [16, 64])
def test_blob_round_trip_and_device_view(bits, sparse, group):
    rng = np.random.default_rng(bits * 10 + sparse + group)
    r, k = 48, 128
    w = rng.standard_normal((r, k)).astype(np.float32)
    w[3] = 0                                             # an all-zero row keeps a finite scale
    mask, block_n = random_mask(rng, r, k) if sparse else (None, None)
    pw = WF.quantize(w, bits, group, mask, block_n)
    blob = pw.blob()
    assert blob.size == pw.layout()["total"]
    back = WF.PackedWeight.from_blob(blob, r, k, bits, group, sparse)
    assert np.array_equal(back.q, pw.q)
    assert np.array_equal(back.int8(), pw.int8())
    assert np.array_equal(back.scale, pw.scale)
    if sparse:
        assert np.array_equal(back.mask, pw.mask) and np.array_equal(back.block_n, pw.block_n)
    # what the LD writes on chip, expanded the way the sparse MPE reads it, is the same matrix
    tile = WF.dequant_tile(blob, r, k, bits, group, sparse)
    if sparse:
        dense = WF.expand_sparse(tile.values, tile.fsb, tile.meta, r, k)
        assert tile.values.size == mask.sum()
    else:
        dense = tile.values.reshape(r, k)
    assert np.array_equal(dense, pw.int8())
    assert np.array_equal(tile.scales, pw.scale)


def test_quantisation_error_shrinks_with_bits():
    """Mean |error| / mean |w| of Gaussian weights, group 32: about step / 4, where the step is
    the group's range (about 4.1 sigma) over 2**bits - 1 levels (8 bits: max |w| / 127)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((32, 256)).astype(np.float32)
    errs = [np.abs(WF.quantize(w, b, 32).float() - w).mean() / np.abs(w).mean() for b in WF.BITS]
    expected = [4.1 / 3 / 4 / 0.8, 4.1 / 7 / 4 / 0.8, 4.1 / 15 / 4 / 0.8, 3.5 / 127 / 4 / 0.8]
    assert errs == sorted(errs, reverse=True)
    for e, x in zip(errs, expected):
        assert 0.6 * x < e < 1.25 * x


def test_dequantisation_unit_arithmetic_matches_its_definition():
    rng = np.random.default_rng(2)
    q = rng.integers(0, 16, 1000)
    m = rng.integers(0, 65536, 1000)
    b = rng.integers(-32768, 32768, 1000)
    got = WF.codes_to_int8(q, m, b, 4).astype(np.int64)
    want = np.clip(np.floor((q * m + b + 128) / 256), -127, 127)
    assert np.array_equal(got, want)


def test_low_bit_grid_of_a_4bit_source_is_kept():
    """Weights already on a 4-bit group grid come back within the INT8 rounding of the unit."""
    rng = np.random.default_rng(3)
    d = rng.uniform(0.01, 0.05, (16, 4, 1))
    mn = -rng.uniform(0.1, 0.3, (16, 4, 1))
    q = rng.integers(0, 16, (16, 4, 32))
    q[..., 0], q[..., 1] = 0, 15                          # every group spans the whole grid
    w = (q * d + mn).reshape(16, 128).astype(np.float32)
    pw = WF.quantize(w, 4, 32)
    # half an INT8 step, plus the fixed-point rounding of M and B (16 * 0.5 / 256 steps)
    assert (np.abs(pw.float() - w).max(1) <= 0.54 * pw.scale).all()


def test_tiles_slice_at_block_rows():
    rng = np.random.default_rng(4)
    mask, block_n = random_mask(rng, 64, 64)
    pw = WF.quantize(rng.standard_normal((64, 64)), 4, 32, mask, block_n)
    top = pw[16:48]
    assert np.array_equal(top.int8(), pw.int8()[16:48])
    with pytest.raises(CompileError, match="multiples of 16"):
        pw[8:24]


def test_bad_formats_are_named():
    w = np.zeros((16, 32), np.float32)
    with pytest.raises(CompileError, match="5 bits"):
        WF.quantize(w, 5, 32)
    with pytest.raises(CompileError, match="group size 48"):
        WF.quantize(w, 4, 48)
    mask = np.zeros((16, 32), bool)
    mask[:, :6] = True
    mask[:, 16:22] = True
    with pytest.raises(CompileError, match=r"N:16 codes \[6\]"):
        WF.quantize(w, 4, 32, mask, np.full((1, 2), 6, np.uint8))
    with pytest.raises(CompileError, match="exactly its block's N"):
        WF.quantize(w, 4, 32, mask, np.full((1, 2), 8, np.uint8))


def test_corrupt_tiles_are_detected():
    rng = np.random.default_rng(5)
    mask, block_n = random_mask(rng, 32, 32, codes=(4, 8))
    pw = WF.quantize(rng.standard_normal((32, 32)), 4, 16, mask, block_n)
    blob = pw.blob().copy()
    bad = blob.copy()
    bad[0] = 5                                           # an FSB code that is not N:16
    with pytest.raises(ProgramError, match="FSB codes"):
        WF.dequant_tile(bad, 32, 32, 4, 16, True)
    with pytest.raises(ProgramError, match="needs .* bytes"):
        WF.dequant_tile(blob[:-3], 32, 32, 4, 16, True)
    tile = WF.dequant_tile(blob, 32, 32, 4, 16, True)
    meta = tile.meta.copy()
    meta[0] = 0x00                                       # two equal indices in one row
    with pytest.raises(ProgramError, match="strictly"):
        WF.expand_sparse(tile.values, tile.fsb, meta, 32, 32)
