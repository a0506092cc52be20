"""Grid-preserving quantisation: weights already on a low-bit group grid (GGUF Q4_1 style) keep their codes through the device format."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.compress import CompressionConfig, compress
from flightllm_overlay.compress.gptq import gptq, output_error, rtn
from flightllm_overlay.compress.grid import find_grid, grid_error, grid_pack
from flightllm_overlay.compress.smooth import HF_NAMES, LINEARS
from flightllm_overlay.spec.wformat import PackedWeight


def q4_1(w: np.ndarray, group: int = 32, bits: int = 4) -> np.ndarray:
    """w rounded as GGUF Q4_1 does: per group, fp16 step (max-min)/15 and fp16 minimum."""
    r, k = w.shape
    g = w.reshape(r, k // group, group)
    lo, hi = g.min(-1, keepdims=True), g.max(-1, keepdims=True)
    levels = (1 << bits) - 1
    d = ((hi - lo) / levels).astype(np.float16).astype(np.float32)
    m = lo.astype(np.float16).astype(np.float32)
    q = np.clip(np.rint((g - m) / np.where(d > 0, d, 1)), 0, levels)
    return (m + d * q).astype(np.float32).reshape(r, k)


def test_find_grid_recovers_q4_1_codes_and_survives_group_scaling():
    rng = np.random.default_rng(0)
    w = q4_1(rng.standard_normal((48, 128)).astype(np.float32))
    grid = find_grid(w)
    assert grid is not None and (grid.bits, grid.group) == (4, 32)
    assert np.abs(grid.float() - w).max() < 1e-6
    # one factor per 32 input channels (group smoothing) and per row: still a 4-bit/32 grid
    col = np.repeat(np.exp(rng.standard_normal(4)), 32).astype(np.float32)
    row = np.exp(rng.standard_normal(48)).astype(np.float32)
    assert find_grid(w * col[None, :] * row[:, None]).name == "4b/32"
    # per-channel smoothing moves it off the grid; plain float weights are on none
    assert find_grid(w * np.exp(rng.standard_normal(128)).astype(np.float32)) is None
    assert find_grid(rng.standard_normal((48, 128)).astype(np.float32)) is None
    # a 2-bit grid is found as 2-bit, not as the 4-bit grid that also holds it
    assert find_grid(q4_1(rng.standard_normal((16, 64)).astype(np.float32), 32, 2)).bits == 2


def test_grid_pack_keeps_the_codes_and_rounds_only_to_int8():
    rng = np.random.default_rng(1)
    w = q4_1(rng.standard_normal((32, 128)).astype(np.float32))
    grid = find_grid(w)
    pw = grid_pack(grid)
    assert np.array_equal(pw.q, grid.codes)
    err = np.abs(pw.float() - w) / pw.scale[:, None]          # in INT8 units of the row
    assert err.max() <= 0.5 + 15 / 512 + 1e-6                  # INT8 rounding + (M, B) precision
    rep = grid_error(grid, pw)
    assert not rep["lossless"] and rep["rms_steps"] < 0.2
    back = PackedWeight.from_blob(pw.blob(), 32, 128, 4, 32, False)
    assert np.array_equal(back.int8(), pw.int8())
    # the format's min/max round-to-nearest lands on the same grid for a dense Q4_1 group;
    # error feedback (GPTQ) keeps the codes but moves (M, B) off the grid: a larger error
    assert np.array_equal(rtn(w, 4, 32).int8(), pw.int8())
    x = rng.standard_normal((1024, 128)) @ (np.eye(128) + 0.3 * rng.standard_normal((128, 128)))
    h = x.T @ x
    e_fb = output_error(w, gptq(w, h + 0.01 * np.mean(np.diag(h)) * np.eye(128), 4, 32), h)
    assert output_error(w, pw, h) < 0.9 * e_fb


def test_error_feedback_on_the_grids_own_parameters_spreads_the_int8_rounding():
    """Codes re-chosen with error feedback, the grid's row scales and (M, B) kept: a few codes
    move by a step or two and the calibrated output error falls below the grid's own codes'."""
    rng = np.random.default_rng(4)
    # groups of very different ranges (as LLM rows have): the quiet ones' grid steps are a few
    # INT8 units of the row, where the INT8 rounding shows
    spread = np.repeat(np.exp(rng.uniform(-3.5, 0, (64, 4))), 32, axis=1)
    w = q4_1((rng.standard_normal((64, 128)) * spread).astype(np.float32))
    pw = grid_pack(find_grid(w))
    x = rng.standard_normal((2048, 128))
    x[:, rng.choice(128, 4, replace=False)] *= 20.0           # outlier input channels
    x = x @ (np.eye(128) + 0.3 * rng.standard_normal((128, 128)))
    h = x.T @ x
    fb = gptq(w, h + 0.01 * np.mean(np.diag(h)) * np.eye(128), 4, 32, fixed=pw)
    assert all(np.array_equal(a, b) for a, b in ((fb.scale, pw.scale), (fb.mult, pw.mult),
                                                  (fb.offset, pw.offset)))
    moved = fb.q.astype(int) - pw.q
    assert 0 < np.mean(moved != 0) < 0.2 and np.abs(moved).max() <= 2
    assert output_error(w, fb, h) < 0.9 * output_error(w, pw, h)
    from flightllm_overlay.errors import CompileError
    with pytest.raises(CompileError, match="cannot pack"):
        gptq(w, h, 4, 64, fixed=pw)


def test_a_grid_the_int8_target_can_hold_is_lossless():
    """Steps and minima that are whole INT8 units of the row scale: the unit reproduces them."""
    rng = np.random.default_rng(2)
    s = 0.01
    step = rng.integers(1, 8, (16, 4)) * s
    low = -rng.integers(0, 7, (16, 4)) * s
    step[:, 0], low[:, 0] = 8 * s, 7 * s                      # row maximum 7 + 8 * 15 = 127 units
    codes = rng.integers(0, 16, (16, 128))
    codes[:, ::32], codes[:, 1::32] = 0, 15                   # every group spans its grid
    w = (np.repeat(low, 32, 1) + np.repeat(step, 32, 1) * codes).astype(np.float32)
    grid = find_grid(w)
    assert grid is not None
    rep = grid_error(grid, grid_pack(grid))
    assert rep["lossless"] and rep["exact"] == 1.0, rep


def test_sparse_grid_pack_masks_and_keeps_the_rest():
    rng = np.random.default_rng(3)
    w = q4_1(rng.standard_normal((32, 64)).astype(np.float32))
    from flightllm_overlay.compress.prune import prune
    mask, block_n = prune(w, 0.5, criterion="magnitude")
    pw = grid_pack(find_grid(w), mask, block_n)
    assert pw.sparse and (pw.int8()[~mask] == 0).all()
    assert grid_error(find_grid(w), pw)["rms_steps"] < 0.2


@pytest.fixture(scope="module")
def q4_ckpt(tiny_folder):
    """The tiny model with its linear weights rounded as GGUF Q4_1 (groups of 32; down_proj,
    with 200 inputs, stays float and INT8)."""
    from flightllm_overlay.model import load_checkpoint
    import torch
    ckpt = load_checkpoint(tiny_folder)
    for i in range(ckpt.args.n_layers):
        for k in LINEARS:
            name = f"model.layers.{i}.{HF_NAMES[k]}.weight"
            if ckpt.weights[name].shape[1] % 32:
                continue
            ckpt.weights[name] = torch.from_numpy(q4_1(ckpt.weights[name].numpy()))
    return ckpt


def test_compress_keeps_the_source_grid_and_reports_it(q4_ckpt):
    """On the INT8 path (exact group arithmetic: the next test)."""
    cfg = CompressionConfig.flightllm().but(density_qk=1.0, avg_bits=5.0, bit_choices=(4,),
                                            group_choices=(32,), calib_tokens=128,
                                            exact_groups=False)
    cm = compress(q4_ckpt, None, cfg, progress=False)
    grids = cm.info["grids"]
    # group smoothing kept every grid but o_proj's: its input's factors are per KV head's 16
    # channels here (head_dim 16 < 32), so smoothing is per channel there (SmolLM2: 64)
    assert sorted({k.split(".")[1] for k in grids}) == ["w_gate", "w_up", "wk", "wq", "wv"]
    assert len(grids) == 5 * q4_ckpt.args.n_layers
    assert all(g["grid"] == "4b/32" and g["kept"] for g in grids.values())
    assert "15 of 21 linears on it, codes kept in 15" in cm.report()
    assert all(0 <= g["moved"] < 0.05 for g in grids.values())      # error feedback: few codes
    # requantised in column order (each group's parameters re-fitted on the error-updated
    # weights; act order's static groups, fitted on the weights as given, land on the grid too)
    off = compress(q4_ckpt, None, cfg.but(keep_grid=False, act_order=False, refit=False),
                   progress=False)
    assert not any(g["kept"] for g in off.info.get("grids", {}).values())
    # the same with the group parameters re-fitted to the output error (the default)
    refit = compress(q4_ckpt, None, cfg.but(keep_grid=False, act_order=False), progress=False)
    per_channel = compress(q4_ckpt, None, cfg.but(smooth_group=None), progress=False)
    assert len(per_channel.info["grids"]) < len(grids)        # per-channel smoothing breaks it
    # kept codes reproduce the source closer than error-feedback requantisation does
    from flightllm_overlay.compress.smooth import smoothed_layers
    from flightllm_overlay.compress.pipeline import calibration_tokens
    layers = smoothed_layers(q4_ckpt, calibration_tokens(q4_ckpt, 128), cfg.smooth_alpha,
                             cfg.smooth_group)
    for i, k in ((0, "wv"), (1, "wq"), (2, "w_up")):
        w = layers[i][0][k]
        e_kept = np.abs(cm.layers[i][k].float() - w).mean()
        e_gptq = np.abs(off.layers[i][k].float() - w).mean()
        assert e_kept < 0.9 * e_gptq, (i, k, e_kept, e_gptq)
        assert e_kept < np.abs(refit.layers[i][k].float() - w).mean(), (i, k)


def test_on_exact_group_arithmetic_the_kept_grid_is_lossless(q4_ckpt):
    """With exact_groups the dense linears on the grid keep its codes as they are (no error
    feedback to spread a rounding that is not there) and hold it to (M, B)'s fixed point."""
    cfg = CompressionConfig.dense4().but(avg_bits=5.0, calib_tokens=128, exact_groups=True)
    cm = compress(q4_ckpt, None, cfg, progress=False)
    grids = cm.info["grids"]
    assert len(grids) == 5 * q4_ckpt.args.n_layers
    assert all(g["kept"] and g["lossless"] and g["moved"] == 0 and g["exact"] == 1.0
               for g in grids.values())
    assert all(cm.layers[int(key.split(".")[0])][key.split(".")[1]].exact for key in grids)
    assert max(g["max_steps"] for g in grids.values()) < 0.05
    assert "codes kept in 15, lossless in 15 (15 on exact group arithmetic" in cm.report()
    assert "INT8 target rounds" not in cm.report()
    assert "(not in the 15 linears whose source grid runs on exact group arithmetic" in \
        cm.report()
