"""Packing for the MPE's exact group arithmetic (`CompressionConfig.exact_groups`, `PackedWeight.exact`): codes and parameters chosen for (q M + B) / 256, the flag through the pipeline and the checkpoint file."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from flightllm_overlay.compress import CompressedModel, CompressionConfig, compress
from flightllm_overlay.compress.gptq import gptq, output_error, rtn
from flightllm_overlay.compress.grid import (
    SourceGrid,
    fixed_point_bound,
    grid_error,
    grid_pack,
)
from flightllm_overlay.compress.mixed import score_options
from flightllm_overlay.compress.prune import prune
from flightllm_overlay.compress.refit import refit_groups, row_errors
from flightllm_overlay.errors import CheckpointError, CompileError
from flightllm_overlay.spec.wformat import PackedWeight

UNIT = 1 / 512          # (M, B)'s fixed point: half of 1/256 of an INT8 unit


def q4_1_grid(rng, rows=32, k=128, group=32) -> SourceGrid:
    """A GGUF Q4_1 matrix: per group of 32 an fp16 step d and minimum m, codes 0..15 (each group
    spanning its whole grid), groups of widely different ranges (as LLM rows have)."""
    ng = k // group
    codes = rng.integers(0, 16, (rows, k))
    codes[:, ::group], codes[:, 1::group] = 0, 15
    span = np.exp(rng.uniform(-4, 0, (rows, ng)))
    d = (span / 15).astype(np.float16).astype(np.float64)
    m = (-span * rng.uniform(0.2, 0.8, (rows, ng))).astype(np.float16).astype(np.float64)
    return SourceGrid(4, group, codes.astype(np.uint8), d, m)


def _hessian(rng, k, n=2048, quiet=()):
    x = rng.standard_normal((n, k)) @ (np.eye(k) + 0.2 * rng.standard_normal((k, k)))
    x[:, list(quiet)] *= 0.05
    h = x.T @ x
    return h, h + 0.01 * np.mean(np.diag(h)) * np.eye(k)


def _outlier_matrix(rng, r=64, k=256):
    """Small weights with one outlier per row (in the first group): the row scale is the
    outlier's, so most groups span a few INT8 units, where the unit's rounding shows."""
    w = 0.02 * rng.standard_normal((r, k))
    w[np.arange(r), rng.integers(0, 32, r)] = rng.choice([-1.0, 1.0], r)
    return w


# ---------------------------------------------------------------------------- config
def test_config_field_defaults_and_file_form():
    assert CompressionConfig().exact_groups is False
    on_exact = {name for name in ("flightllm", "flightllm-wide", "dense4", "paper", "w8a8",
                                  "magnitude") if CompressionConfig.preset(name).exact_groups}
    assert on_exact == {"flightllm", "flightllm-wide", "dense4", "magnitude"}   # paper: measured worse
    cfg = CompressionConfig.dense4().but(exact_groups=False)
    assert "exact_groups" not in cfg.to_dict()                 # files stay as they were
    assert CompressionConfig.from_dict(cfg.to_dict()) == cfg   # a missing key reads False
    on = cfg.but(exact_groups=True)
    assert on.to_dict()["exact_groups"] is True and CompressionConfig.from_dict(on.to_dict()) == on
    assert on.exact_for(4, False) and not on.exact_for(4, True) and not on.exact_for(8, False)
    assert not cfg.exact_for(4, False)
    with pytest.raises(CompileError, match="exact_groups"):
        cfg.but(exact_groups="yes")
    assert "exact_groups" in CompressionConfig.__doc__


# ---------------------------------------------------------------------------- grids
def test_exact_grid_pack_holds_a_q4_1_grid_to_the_fixed_point():
    rng = np.random.default_rng(0)
    grid = q4_1_grid(rng)
    w = grid.float()
    exact, int8 = grid_pack(grid, exact=True), grid_pack(grid)
    assert exact.exact and not int8.exact
    assert np.array_equal(exact.q, grid.codes) and np.array_equal(exact.mult, int8.mult)
    s = exact.scale.astype(np.float64)[:, None]
    err_exact = np.abs(exact.float().astype(np.float64) - w) / s        # INT8 units of the row
    err_int8 = np.abs(int8.float().astype(np.float64) - w) / s
    # each weight within (M, B)'s fixed point: B's 1/512 plus q times M's 1/512 (float32 hair)
    assert (err_exact <= fixed_point_bound(grid.codes) + 1e-5).all()
    assert (err_exact[grid.codes == 0] <= UNIT + 1e-5).all()
    assert err_exact.max() <= 16 * UNIT + 1e-5
    # the INT8 path rounds to the row's INT8 grid: up to half a unit
    assert 0.4 < err_int8.max() <= 0.5 + 15 * UNIT + 1e-6
    assert np.sqrt(np.mean(err_exact ** 2)) < 0.05 * np.sqrt(np.mean(err_int8 ** 2))
    rep, rep8 = grid_error(grid, exact), grid_error(grid, int8)
    assert rep["lossless"] and rep["exact"] == 1.0 and rep["max_steps"] < 0.2, rep
    assert not rep8["lossless"] and rep8["rms_steps"] > 10 * rep["rms_steps"]
    # the same blob either way; the flag comes back from the file's format, not the bytes
    assert np.array_equal(exact.blob(), int8.blob())
    back = PackedWeight.from_blob(exact.blob(), 32, 128, 4, 32, False, exact=True)
    assert back.exact and np.array_equal(back.float(), exact.float())
    # parameters off by more than the fixed point: not lossless
    off = grid_pack(grid, exact=True)
    off.mult[0, 1] += 2
    assert not grid_error(grid, off)["lossless"] and grid_error(grid, off)["exact"] < 1


def test_error_feedback_on_an_exact_grid_has_nothing_to_spread():
    """On INT8, error feedback on the grid's own parameters moves codes to spread the rounding;
    on exact arithmetic the grid's codes are already the source to the fixed point."""
    rng = np.random.default_rng(1)
    grid = q4_1_grid(rng, 64, 128)
    w = grid.float()
    h, hd = _hessian(rng, 128)
    kept8, kept = grid_pack(grid), grid_pack(grid, exact=True)
    fb8 = gptq(w, hd, 4, 32, fixed=kept8)
    fb = gptq(w, hd, 4, 32, fixed=kept)                     # exact follows the fixed packing
    assert fb.exact and not fb8.exact
    assert np.array_equal(fb.mult, kept.mult) and np.array_equal(fb.offset, kept.offset)
    assert np.array_equal(fb.q, kept.q) and np.mean(fb8.q != kept8.q) > 0.01   # nothing moved
    e_kept, e8 = output_error(w, kept, h), output_error(w, fb8, h)
    assert e8 < output_error(w, kept8, h) and e_kept < 0.01 * e8


# ---------------------------------------------------------------------------- codes
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_error_feedback_on_exact_arithmetic_is_no_worse_than_on_int8(bits):
    rng = np.random.default_rng(bits)
    w = _outlier_matrix(rng)
    h, hd = _hessian(rng, 256, quiet=range(32))
    for act_order in (False, True):
        e8 = output_error(w, gptq(w, hd, bits, 32, act_order=act_order), h)
        pw = gptq(w, hd, bits, 32, act_order=act_order, exact=True)
        assert pw.exact and pw.bits == bits
        e = output_error(w, pw, h)
        assert e < {2: 1.0, 3: 0.9, 4: 0.6}[bits] * e8, (bits, act_order, e / e8)
        # the re-fit keeps the flag and judges rows on the exact arithmetic
        new = refit_groups(w, pw, hd)
        assert new.exact and np.array_equal(new.q, pw.q)
        assert (row_errors(w, new, hd) <= row_errors(w, pw, hd) * (1 + 1e-9) + 1e-12).all()
        assert output_error(w, new, h) < e8
    # round to nearest: the same parameters, each code nearest on the exact arithmetic
    r8, r = rtn(w, bits, 32), rtn(w, bits, 32, exact=True)
    assert r.exact and np.array_equal(r.mult, r8.mult) and np.array_equal(r.scale, r8.scale)
    assert np.abs(r.float() - w).mean() < np.abs(r8.float() - w).mean()


def test_exact_is_for_dense_weights_below_8_bits():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, 64))
    h, hd = _hessian(rng, 64)
    mask, block_n = prune(w, 0.5, np.diag(h))
    for bits, m, bn in ((8, None, None), (4, mask, block_n)):
        with pytest.raises(CompileError, match="dense weights below 8 bits"):
            gptq(w, hd, bits, 32, m, bn, exact=True)
        with pytest.raises(CompileError, match="dense weights below 8 bits"):
            rtn(w, bits, 32, m, bn, exact=True)
    assert not gptq(w, hd, 4, 32, mask, block_n).exact      # the default: INT8


def test_refit_recovers_parameters_only_the_exact_arithmetic_can_hold():
    """w = s (M q + B) / 256 with M, B not multiples of 256: on exact arithmetic the re-fit
    gets back zero output error from wrong parameters (INT8 can only round it)."""
    rng = np.random.default_rng(3)
    r, k, g = 24, 128, 32
    h, _ = _hessian(rng, k)
    q = rng.integers(0, 8, (r, k)).astype(np.uint8)
    mult = rng.integers(100, 3000, (r, k // g)).astype(np.uint16)
    offset = rng.integers(-9000, 9000, (r, k // g)).astype(np.int16)
    scale = rng.uniform(0.5, 2.0, r).astype(np.float32)
    true = PackedWeight(3, g, q, mult, offset, scale, exact=True)
    w = true.float().astype(np.float64)
    wrong = PackedWeight(3, g, q, (mult * 0.8).astype(np.uint16), offset + 300, scale, exact=True)
    fixed = refit_groups(w, wrong, h)
    assert fixed.exact
    assert output_error(w, fixed, h) <= 1e-9 * output_error(w, wrong, h)
    assert np.array_equal(fixed.mult, mult) and np.array_equal(fixed.offset, offset)
    # the same packing on INT8 cannot reach it
    as_int8 = refit_groups(w, PackedWeight(3, g, q, mult, offset, scale), h)
    assert output_error(w, as_int8, h) > 1e3 * output_error(w, fixed, h)


def test_allocation_scores_the_candidates_on_the_arithmetic_they_run_on():
    rng = np.random.default_rng(4)
    w = _outlier_matrix(rng, 32, 128)
    h, _ = _hessian(rng, 128, quiet=range(32))
    cands = [(3, 32), (4, 32), (8, 0)]
    plain = score_options(w, h, None, None, cands)
    exact = score_options(w, h, None, None, cands, exact_groups=True)
    energy = float(((w @ h) * w).sum())
    for (bits, group), o8, oe in zip(cands, plain, exact):
        assert o8.cost == oe.cost
        if bits == 8:
            assert oe.error == o8.error
        else:
            assert oe.error == pytest.approx(output_error(w, rtn(w, bits, group, exact=True),
                                                         h) / energy)
            assert oe.error < o8.error
    # sparse candidates stay on INT8
    mask, block_n = prune(w, 0.5, np.diag(h))
    assert [o.error for o in score_options(w, h, mask, block_n, cands, exact_groups=True)] == \
        [o.error for o in score_options(w, h, mask, block_n, cands)]


# ---------------------------------------------------------------------------- pipeline, file
def _tensor_digest(cm) -> str:
    tensors, header = cm.tensors()
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(tensors[name]).tobytes())
    header = {**header, "info": {k: v for k, v in header["info"].items()
                                 if k not in ("seconds", "cpu_seconds")}}
    h.update(json.dumps(header, sort_keys=True).encode())
    return h.hexdigest()


CFG = CompressionConfig.flightllm().but(avg_bits=5.5, density_qk=0.5, bit_choices=(4, 8),
                                        calib_tokens=64, qk_criterion=None, exact_groups=False,
                                        qk_budget="linear")


@pytest.fixture(scope="module")
def exact_cm(tiny_ckpt):
    return compress(tiny_ckpt, None, CFG.but(exact_groups=True), progress=False)


def test_pipeline_marks_exactly_the_dense_low_bit_linears(exact_cm):
    cm = exact_cm
    kinds = {(pw.bits < 8, pw.sparse, pw.exact) for _, _, pw in cm.linears()}
    assert all(e == (low and not sparse) for low, sparse, e in kinds)
    assert (True, False, True) in kinds                       # some dense low-bit: exact
    assert any(sparse for _, sparse, _ in kinds)              # q/k: N:16, not exact
    n = sum(pw.exact for _, _, pw in cm.linears())
    assert f"exact group arithmetic (wcodes): {n} of {7 * len(cm.layers)} linears" in cm.report()


def test_the_checkpoint_carries_the_flag_and_old_files_read_int8(exact_cm, tmp_path):
    from safetensors.numpy import save_file

    from flightllm_overlay.compress.compressed import FORMAT, VERSION, _digest
    path = exact_cm.save(tmp_path / "exact.safetensors")
    back = CompressedModel.load(path)
    assert back.config.exact_groups is True
    for (_, _, a), (_, _, b) in zip(exact_cm.linears(), back.linears()):
        assert a.exact == b.exact and np.array_equal(a.float(), b.float())
    tensors, header = exact_cm.tensors()
    assert sum("exact" in f for f in header["linears"].values()) == \
        sum(pw.exact for _, _, pw in exact_cm.linears())

    def write(hdr, name):
        text = json.dumps(hdr, sort_keys=True)
        save_file(tensors, str(tmp_path / name), metadata={
            "format": FORMAT, "version": str(VERSION), "header": text,
            "sha256": _digest(text, tensors)})
        return tmp_path / name
    # a file from before the flag: no "exact" in the formats, no exact_groups in the config
    old = json.loads(json.dumps(header))
    for f in old["linears"].values():
        f.pop("exact", None)
    del old["config"]["exact_groups"]
    cm_old = CompressedModel.load(write(old, "old.safetensors"))
    assert cm_old.config.exact_groups is False
    assert not any(pw.exact for _, _, pw in cm_old.linears())
    assert "exact group arithmetic" not in cm_old.report()
    # "exact" where the datapath cannot take it, or not a bool: refused clearly
    key = next(k for k, f in header["linears"].items() if f["sparse"])
    for value in (True, 1):
        bad = json.loads(json.dumps(header))
        bad["linears"][key]["exact"] = value
        with pytest.raises(CheckpointError, match="invalid format"):
            CompressedModel.load(write(bad, "bad.safetensors"))


def test_exact_groups_off_is_the_compression_from_before(tiny_ckpt, exact_cm):
    """exact_groups=False packs exactly as a configuration without the setting (one read from
    a file of before it) does: the same bytes, the same header."""
    d = CFG.to_dict()
    assert "exact_groups" not in d
    absent = compress(tiny_ckpt, None, CompressionConfig.from_dict(d), progress=False)
    off = compress(tiny_ckpt, None, CFG.but(exact_groups=False), progress=False)
    assert _tensor_digest(off) == _tensor_digest(absent)
    assert not any(pw.exact for _, _, pw in off.linears())
    assert _tensor_digest(off) != _tensor_digest(exact_cm)


def test_the_emulation_computes_with_the_exact_weights(exact_cm):
    from flightllm_overlay.compress import Emulator
    emu = Emulator(exact_cm)
    for i, k, pw in exact_cm.linears():
        if pw.exact:
            held = emu.layers[i][0][k].numpy()
            assert np.array_equal(held, pw.float())
            assert not np.array_equal(held, pw.int8() * pw.scale[:, None])
            break
    else:
        pytest.fail("no exact linear")
