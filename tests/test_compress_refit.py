"""The least-squares re-fit of group parameters (`compress.refit`): exact where an exact fit exists, never worse per row, codes and sparsity kept."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.compress.gptq import gptq, output_error, rtn
from flightllm_overlay.compress.prune import prune
from flightllm_overlay.compress.refit import refit_groups, row_errors
from flightllm_overlay.spec.wformat import PackedWeight


def _hessian(rng, k, n=1024):
    """Damped Hessian of correlated inputs with a few outlier channels, and the plain one."""
    x = rng.standard_normal((n, k)) @ (np.eye(k) + 0.3 * rng.standard_normal((k, k)))
    x[:, rng.choice(k, 4, replace=False)] *= 12.0
    h = x.T @ x
    return h, h + 0.01 * np.mean(np.diag(h)) * np.eye(k)


def test_an_exactly_representable_matrix_gets_its_parameters_back():
    """w = s (M q + B) / 256 with M, B multiples of 256 (so the unit's INT8 rounding is exact):
    from deliberately wrong parameters, the re-fit recovers zero output error."""
    rng = np.random.default_rng(0)
    r, k, g = 24, 128, 32
    h, _ = _hessian(rng, k)
    q = rng.integers(0, 8, (r, k)).astype(np.uint8)
    mult = (rng.integers(1, 12, (r, k // g)) * 256).astype(np.uint16)
    offset = (rng.integers(-40, 40, (r, k // g)) * 256).astype(np.int16)
    scale = rng.uniform(0.5, 2.0, r).astype(np.float32)
    true = PackedWeight(3, g, q, mult, offset, scale, None, None)
    w = true.float().astype(np.float64)
    wrong = PackedWeight(3, g, q, (mult * 0.8).astype(np.uint16), offset + 300, scale, None, None)
    assert output_error(w, wrong, h) > 1.0
    fixed = refit_groups(w, wrong, h)
    assert output_error(w, fixed, h) == pytest.approx(0.0, abs=1e-6)
    assert np.array_equal(fixed.mult, mult) and np.array_equal(fixed.offset, offset)


@pytest.mark.parametrize("bits,sparse", [(2, False), (3, False), (4, True), (3, True)])
def test_refit_lowers_the_error_feedbacks_output_error_and_keeps_codes_and_mask(bits, sparse):
    rng = np.random.default_rng(bits + 10 * sparse)
    h, hd = _hessian(rng, 128)
    w = rng.standard_normal((48, 128))
    mask, block_n = prune(w, 0.5, np.diag(h)) if sparse else (None, None)
    pw = gptq(w, hd, bits, 32, mask, block_n, act_order=True)
    new = refit_groups(w, pw, hd)
    assert np.array_equal(new.q, pw.q) and np.array_equal(new.scale, pw.scale)
    if sparse:
        assert np.array_equal(new.mask, mask) and np.array_equal(new.block_n, pw.block_n)
        assert (new.int8()[~mask] == 0).all()
    before, after = row_errors(w, pw, h), row_errors(w, new, h)
    assert (after <= before * (1 + 1e-9) + 1e-9).all()        # no row worse
    assert after.sum() < 0.97 * before.sum(), (bits, after.sum() / before.sum())
    back = PackedWeight.from_blob(new.blob(), 48, 128, bits, 32, sparse)     # still packs
    assert np.array_equal(back.int8(), new.int8())


def test_a_row_whose_refit_is_worse_keeps_its_parameters_and_int8_passes_through():
    """A round-to-nearest packing of w measured under an unrelated Hessian: rows are re-fitted
    where that helps and left alone elsewhere; INT8 packings have no groups to re-fit."""
    rng = np.random.default_rng(3)
    h, _ = _hessian(rng, 64)
    w = rng.standard_normal((16, 64))
    pw = rtn(w, 3, 32)
    new = refit_groups(w, pw, h)
    assert (row_errors(w, new, h) <= row_errors(w, pw, h) + 1e-9).all()
    changed = (new.mult != pw.mult).any(1) | (new.offset != pw.offset).any(1)
    assert np.array_equal(changed, row_errors(w, new, h) < row_errors(w, pw, h))
    w8 = rtn(w, 8, 32)
    assert refit_groups(w, w8, h) is w8


def test_the_pipeline_refits_after_the_error_feedback_and_records_it(tiny_ckpt, tmp_path):
    """compress() with refit (the default) packs the same codes as without, with re-fitted
    group parameters in low-bit linears; the setting travels with the file, and a file written
    before the setting existed reads as packed without it."""
    from flightllm_overlay.compress import CompressedModel, CompressionConfig, compress
    cfg = CompressionConfig.flightllm().but(avg_bits=3.5, calib_tokens=128)
    assert cfg.refit and CompressionConfig().refit
    on = compress(tiny_ckpt, None, cfg, progress=False)
    off = compress(tiny_ckpt, None, cfg.but(refit=False), progress=False)
    low = 0
    for (i, name, a), (_, _, b) in zip(on.linears(), off.linears()):
        assert (a.bits, a.group) == (b.bits, b.group) and np.array_equal(a.q, b.q), (i, name)
        if a.bits < 8:
            low += 1
            assert not (np.array_equal(a.mult, b.mult) and np.array_equal(a.offset, b.offset))
    assert low > 0
    back = CompressedModel.load(on.save(tmp_path / "m.safetensors"))
    assert back.config.refit and back.config == on.config
    old = {k: v for k, v in cfg.to_dict().items() if k != "refit"}
    assert CompressionConfig.from_dict(old).refit is False


def test_degenerate_rows_and_dead_channels_stay_finite_and_exact():
    """An all-zero row, a constant row, a half-zero row and a dead input channel: the per-row
    systems are singular or nearly so; the re-fit stays finite and keeps exact rows exact."""
    rng = np.random.default_rng(0)
    k = 64
    x = rng.standard_normal((256, k))
    x[:, 5] = 0                                        # a channel the calibration never drives
    h = x.T @ x
    hd = h + 0.01 * np.mean(np.diag(h)) * np.eye(k)
    hd[5, 5] = 1.0
    w = rng.standard_normal((6, k))
    w[0], w[1], w[2, :32] = 0.0, 0.5, 0.0
    for bits in (2, 3, 4):
        pw = gptq(w, hd, bits, 32)
        new = refit_groups(w, pw, hd)
        assert np.isfinite(new.float()).all()
        assert (row_errors(w, new, h)[:2] == 0).all()           # zero and constant rows: exact
        assert (row_errors(w, new, h) <= row_errors(w, pw, h) + 1e-9).all()


def test_wide_inputs_are_solved_in_smaller_batches_with_the_same_result(monkeypatch):
    """The work arrays are bounded (LLaMA-7B's down_proj, K 11,008, goes two rows at a time);
    each row's system is its own, so the batch size does not change the result."""
    from flightllm_overlay.compress import refit as R
    assert R.batch_rows(1536, 32) == R.ROWS and R.batch_rows(11008, 32) == 2
    assert 2 * 8 * (11008 // 32) * 11008 * R.batch_rows(11008, 32) <= R.WORK_BYTES
    rng = np.random.default_rng(5)
    h, hd = _hessian(rng, 128)
    w = rng.standard_normal((40, 128))
    pw = gptq(w, hd, 3, 32, act_order=True)
    whole = refit_groups(w, pw, hd)
    monkeypatch.setattr(R, "WORK_BYTES", 2 * 8 * 4 * 128 * 3)         # three rows a batch
    assert R.batch_rows(128, 32) == 3
    split = refit_groups(w, pw, hd)
    assert np.allclose(row_errors(w, split, h), row_errors(w, whole, h), rtol=1e-6)
    assert (split.mult != whole.mult).mean() < 0.01
