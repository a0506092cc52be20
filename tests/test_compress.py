"""Compression: N:16 block pruning under a budget, Wanda vs magnitude, bit allocation, error
feedback, float emulation, the compressed checkpoint file and its errors."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.compress import CompressedModel, CompressionConfig, Emulator, compress
from flightllm_overlay.compress.emulate import perplexity, reference_runner
from flightllm_overlay.compress.gptq import gptq, output_error, rtn
from flightllm_overlay.compress.mixed import allocate, score_options, weight_bits
from flightllm_overlay.compress.prune import choose_block_n, prune, scores
from flightllm_overlay.errors import CheckpointError, CompileError
from flightllm_overlay.spec.wformat import BLOCK, FSB_CODES, PackedWeight, quantize

TINY_CFG = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=128)


def _inputs(rng, n, k, outliers=4, gain=30.0):
    """(n, k) activations with a few outlier input channels, as LLM linears see."""
    x = rng.standard_normal((n, k))
    x[:, rng.choice(k, outliers, replace=False)] *= gain
    return x


@pytest.mark.parametrize("density", [0.7, 0.5, 0.3, 0.125])
def test_prune_keeps_exactly_n_per_block_row_within_budget(density):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 128))
    mask, block_n = prune(w, density, np.abs(rng.standard_normal(128)) + 0.1)
    assert set(np.unique(block_n).tolist()) <= set(FSB_CODES)
    per_row = mask.reshape(4, BLOCK, 8, BLOCK).sum(3)                 # (block row, row, block)
    assert (per_row == block_n[:, None, :]).all()
    assert mask.mean() <= density + 1e-9
    assert mask.mean() > density - 16 * BLOCK / mask.size             # within one block's step
    PackedWeight(8, 32, quantize(w, 8).q, None, None, np.ones(64, np.float32), block_n, mask)


def test_dense_budget_keeps_everything_and_mixed_codes_appear():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, 64)) * np.linspace(0.1, 3, 64)[None, :]
    assert prune(w, 1.0) == (None, None)
    codes = choose_block_n(scores(w, None, "magnitude"), 0.6)
    assert len(np.unique(codes)) > 1            # a per-block choice, not one N everywhere


@pytest.mark.parametrize("density", [0.1, 0.0, 1.5])
def test_unmeetable_density_is_a_clear_error(density):
    with pytest.raises(CompileError, match="cannot be met"):
        prune(np.ones((16, 16)), density)
    with pytest.raises(CompileError, match="cannot be met"):
        CompressionConfig(density_qk=density)


def test_bad_shapes_and_criteria_are_clear_errors():
    with pytest.raises(CompileError, match="whole 16x16 blocks"):
        prune(np.ones((20, 32)), 0.5, criterion="magnitude")
    with pytest.raises(CompileError, match="unknown pruning criterion"):
        CompressionConfig(criterion="random")
    with pytest.raises(CompileError, match="calibration"):
        prune(np.ones((16, 16)), 0.5, None, "wanda")
    with pytest.raises(CompileError, match="not supported"):       # an N the chain lacks
        PackedWeight(8, 32, np.zeros((16, 16), np.uint8), None, None, np.ones(16, np.float32),
                     np.array([[3]], np.uint8), np.zeros((16, 16), bool))


def test_wanda_beats_magnitude_with_outlier_input_channels():
    rng = np.random.default_rng(3)
    x = _inputs(rng, 512, 128, outliers=6, gain=20.0)
    w = rng.standard_normal((64, 128))
    sq = (x ** 2).sum(0)
    err = {}
    for crit in ("wanda", "magnitude"):
        mask, _ = prune(w, 0.5, sq, crit)
        err[crit] = np.linalg.norm(x @ (w * ~mask).T)
    assert err["wanda"] < 0.8 * err["magnitude"], err


def test_error_feedback_beats_round_to_nearest_on_correlated_inputs():
    rng = np.random.default_rng(4)
    x = _inputs(rng, 1024, 128) @ (np.eye(128) + 0.3 * rng.standard_normal((128, 128)))
    h = x.T @ x
    hd = h + 0.01 * np.mean(np.diag(h)) * np.eye(128)
    w = rng.standard_normal((48, 128))
    mask, block_n = prune(w, 0.5, np.diag(h))
    for bits, group, m, bn in [(3, 32, None, None), (4, 64, mask, block_n), (8, 32, mask, block_n)]:
        e_rtn = output_error(w, rtn(w, bits, group, m, bn), h)
        e_fb = output_error(w, gptq(w, hd, bits, group, m, bn), h)
        assert e_fb < 0.9 * e_rtn, (bits, e_fb, e_rtn)
    pw = gptq(w, hd, 3, 32, mask, block_n)
    assert (pw.int8()[~mask] == 0).all() and pw.density == mask.mean()
    back = PackedWeight.from_blob(pw.blob(), 48, 128, 3, 32, True)        # packs and unpacks
    assert np.array_equal(back.int8(), pw.int8())


def test_act_order_quantises_the_inputs_that_carry_most_first():
    """Columns in order of decreasing Hessian diagonal, group parameters chosen beforehand: the
    codes come back in the weight's column order (the packing reproduces w) and, on inputs whose
    scales differ widely, the output error is lower than in the given order."""
    rng = np.random.default_rng(6)
    x = _inputs(rng, 1024, 128, outliers=12, gain=8.0) * rng.uniform(0.2, 3.0, 128)
    h = x.T @ x
    hd = h + 0.01 * np.mean(np.diag(h)) * np.eye(128)
    w = rng.standard_normal((48, 128))
    mask, block_n = prune(w, 0.5, np.diag(h))
    for bits, m, bn in [(3, None, None), (2, None, None), (3, mask, block_n), (8, None, None)]:
        plain = gptq(w, hd, bits, 32, m, bn)
        ordered = gptq(w, hd, bits, 32, m, bn, act_order=True)
        assert ordered.shape == plain.shape and ordered.bits == bits
        if m is not None:
            assert (ordered.int8()[~m] == 0).all()
        rel = output_error(w, ordered, h) / float(((w @ h) * w).sum())
        assert rel < {2: 0.3, 3: 0.08, 8: 1e-3}[bits], (bits, rel)
        if bits < 8:
            assert output_error(w, ordered, h) < output_error(w, plain, h), bits
    # kept group parameters (a source grid's) stay as given in act order too
    fixed = rtn(w, 4, 32)
    kept = gptq(w, hd, 4, 32, fixed=fixed, act_order=True)
    assert np.array_equal(kept.mult, fixed.mult) and np.array_equal(kept.offset, fixed.offset)
    assert output_error(w, kept, h) <= output_error(w, fixed, h)


def test_allocator_meets_budget_and_gives_sensitive_layers_more_bits():
    rng = np.random.default_rng(5)
    h = np.eye(128)
    plain = rng.standard_normal((64, 128))
    spiky = rng.standard_normal((64, 128))
    spiky[rng.random(spiky.shape) < 0.03] *= 25                      # heavy-tailed weights
    cands = [(2, 32), (3, 32), (4, 32), (4, 64), (8, 0)]
    opts = [score_options(w, h, None, None, cands, group_bits=True)
            for w in (plain, spiky, plain.copy())]
    more = 0
    for budget in (3.5, 4.0, 4.5, 5.0, 6.0):
        pick = allocate(opts, budget)
        wb = [weight_bits(o[i].bits, o[i].group) for o, i in zip(opts, pick)]
        assert sum(wb) / 3 <= budget + 1e-9
        assert wb[1] >= wb[0] and wb[1] >= wb[2], (budget, wb)
        more += wb[1] > max(wb[0], wb[2])
    assert more >= 2                            # the spiky layer gets strictly more bits
    with pytest.raises(CompileError, match="cannot be met"):
        allocate(opts, 2.0)                      # cheapest 2-bit/32 costs 3 bits per weight


@pytest.fixture(scope="module")
def tiny_ids(tiny_ckpt):
    from flightllm_overlay.data import text
    return tiny_ckpt.tokenizer.encode(text("eval"))[:512]


@pytest.fixture(scope="module")
def tiny_compressed(tiny_ckpt):
    return compress(tiny_ckpt, None, TINY_CFG, progress=False)


def test_compressed_tiny_model_meets_its_budgets(tiny_compressed):
    cm = tiny_compressed
    for layer in cm.layers:                  # q/k: 70% of each layer's q_proj and k_proj
        q, k = layer["wq"], layer["wk"]
        size = lambda pw: pw.shape[0] * pw.shape[1]
        assert q.sparse and k.sparse
        assert q.density * size(q) + k.density * size(k) <= 0.7 * (size(q) + size(k)) + 1e-9
    assert all(not pw.sparse for _, name, pw in cm.linears() if name not in ("wq", "wk"))
    t = cm.totals()
    assert t["code_bits"] <= 5.5 + 1e-9 and t["density"] < 1
    assert t["weight_bits"] > t["code_bits"] and t["hbm_bits"] > t["code_bits"] * t["density"]
    text = cm.report()
    q0 = cm.layers[0]["wq"]
    assert f"{100 * q0.density:.0f}%" in text.splitlines()[2]     # layer 0's q density
    qk = [pw for _, name, pw in cm.linears() if name in ("wq", "wk")]
    share = sum(int(pw.mask.sum()) for pw in qk) / sum(pw.mask.size for pw in qk)
    assert f"q/k: {share:.3f} of their weights kept (layer budget)" in text
    assert text.count("\n") >= cm.args.n_layers + 3


def test_emulation_tracks_the_float_reference(tiny_ckpt, tiny_ids):
    """Given the smoothed float weights and no activation quantisation, the emulation computes
    the float reference's logits (smoothing preserves the function); with the W8A8 device
    weights and INT8 activations, perplexity stays within 3%."""
    import torch
    from flightllm_overlay.compress.calibrate import model_with
    from flightllm_overlay.compress.smooth import smoothed_layers
    cm = compress(tiny_ckpt, None, CompressionConfig.w8a8().but(calib_tokens=128), progress=False)
    layers = smoothed_layers(tiny_ckpt, tiny_ids[:128])
    emu = Emulator(cm, act_quant=False, fp16=False)
    emu.layers = [({k: torch.from_numpy(w) for k, w in lin.items()}, torch.from_numpy(an),
                   torch.from_numpy(fn)) for lin, an, fn in layers]
    emu.embed = tiny_ckpt.weights["model.embed_tokens.weight"]
    emu.head = tiny_ckpt.weights["lm_head.weight"]
    ref = reference_runner(tiny_ckpt)(tiny_ids[:64])
    smoothed = model_with(tiny_ckpt, layers)
    assert np.abs(smoothed.forward(tiny_ids[:64], 0).numpy() - ref).max() < 1e-3
    assert np.abs(emu(tiny_ids[:64]) - ref).max() < 1e-3
    p_ref = perplexity(reference_runner(tiny_ckpt), tiny_ids, 128)
    p_emu = perplexity(Emulator(cm), tiny_ids, 128)
    assert abs(p_emu / p_ref - 1) < 0.03, (p_ref, p_emu)


def test_emulation_rounds_to_fp16_where_the_device_does(tiny_compressed, tiny_ids):
    """fp16=True (default): the logits are FP16 values (an MPE output) and the RoPE chain is the
    device's own (`spec.arithmetic.rope`, bit for bit); fp16=False computes float32 throughout."""
    import torch
    from flightllm_overlay.compress.emulate import rope_fp16
    from flightllm_overlay.model.llama import rope_tables
    from flightllm_overlay.spec import arithmetic
    ids = tiny_ids[:32]
    on, off = Emulator(tiny_compressed)(ids), Emulator(tiny_compressed, fp16=False)(ids)
    assert np.array_equal(on, on.astype(np.float16).astype(np.float32))
    assert not np.array_equal(off, off.astype(np.float16).astype(np.float32))
    assert 0 < np.abs(on - off).max() < 0.1 * np.abs(off).max()
    a = tiny_compressed.args
    cos, sin = rope_tables(a, 64)
    x = torch.from_numpy(np.random.default_rng(2).normal(0, 3, (64, 2, a.head_dim))
                         .astype(np.float16).astype(np.float32))
    half = a.head_dim // 2
    table = torch.cat([cos[:, :half], sin[:, :half]], -1).half().numpy()   # [cos | sin] per row
    for h in range(2):
        want = arithmetic.rope(x[:, h].half().numpy(), table)
        assert np.array_equal(rope_fp16(x, cos, sin)[:, h].half().numpy(), want)


def test_emulation_quantises_the_points_it_is_given(tiny_compressed, tiny_ids):
    from flightllm_overlay.compress.emulate import POINTS
    ids = tiny_ids[:32]
    none, every = Emulator(tiny_compressed, act_quant=False)(ids), Emulator(tiny_compressed)(ids)
    np.testing.assert_array_equal(Emulator(tiny_compressed, act_quant=())(ids), none)
    np.testing.assert_array_equal(Emulator(tiny_compressed, act_quant=POINTS)(ids), every)
    for point in POINTS:                  # each point is one the forward pass really quantises
        assert not np.array_equal(Emulator(tiny_compressed, act_quant=[point])(ids), none), point
    with pytest.raises(ValueError, match="unknown quantisation points"):
        Emulator(tiny_compressed, act_quant=["attn_in", "softmax"])


def test_two_plane_activations_are_fifteen_bits_and_move_the_model_toward_float(
        tiny_compressed, tiny_ids):
    """A wide point's two INT8 planes (hi, then the residual's lo at its own scale) are within
    1/254 step of hi of the input, element by element: about 255x finer than one plane; a model
    whose linear inputs are all wide is closer to the weights-only emulation than with one plane."""
    import torch
    from flightllm_overlay.compress.emulate import WIDE_POINTS, fake_quant, two_plane_quant
    x = torch.from_numpy(_inputs(np.random.default_rng(5), 16, 256).astype(np.float32))
    step = x.abs().amax(-1, keepdim=True) / 127
    one, two = (fake_quant(x) - x).abs(), (two_plane_quant(x) - x).abs()
    assert bool((one <= step / 2 * 1.0001).all()) and float((one / step).max()) > 0.45
    assert bool((two <= step / 254 * 1.0001).all())
    ids = tiny_ids[:64]
    # float32 between the points: the planes' precision, not FP16's (11 bits), is measured
    ref = Emulator(tiny_compressed, act_quant=False, fp16=False)(ids)
    err = lambda **kw: np.abs(Emulator(tiny_compressed, fp16=False, **kw)(ids) - ref).mean()  # noqa: E731
    assert err(wide=WIDE_POINTS) < 0.7 * err()                                  # 0.55
    assert err(act_quant=WIDE_POINTS, wide=WIDE_POINTS) < 0.02 * err(act_quant=WIDE_POINTS)
    with pytest.raises(ValueError, match="cannot be wide"):
        Emulator(tiny_compressed, wide=["p"])
    # by default the emulation widens what the model's config does (what its program runs)
    import dataclasses
    cm = dataclasses.replace(tiny_compressed, config=tiny_compressed.config.but(
        wide_points=("ffn_mid", "head_in")))
    np.testing.assert_array_equal(Emulator(cm)(ids), Emulator(tiny_compressed,
                                                            wide=("ffn_mid", "head_in"))(ids))
    assert not np.array_equal(Emulator(cm)(ids), Emulator(tiny_compressed)(ids))


def test_activation_scales_per_group_of_channels(tiny_compressed, tiny_ids):
    """act_group=G (any G in the emulation; the device takes 32, 64 and 128): the row's step,
    divided for each group of G channels by the largest power of two (up to 2**7) its values
    allow, as the device's quant (`arithmetic.quantize_groups`, bit for bit), so an outlier
    coarsens only its own group; a group as wide as every input is the per-row quantisation;
    the linear inputs alone quantised per group of 8 bring the model toward the weights-only
    emulation; a G that does not divide an input is refused."""
    import torch
    from flightllm_overlay.compress.emulate import WIDE_POINTS, fake_quant, group_quant
    from flightllm_overlay.spec import arithmetic as U
    x = _inputs(np.random.default_rng(6), 16, 256).astype(np.float32)
    got = group_quant(torch.from_numpy(x), 32).numpy()
    q, scale, exps = U.quantize_groups(x, 32)
    step = scale[:, None] * np.exp2(-exps).astype(np.float32)
    np.testing.assert_array_equal(got, q * np.repeat(step, 32, axis=1))
    assert exps.min() == 0 and exps.max() > 0                 # outlier groups keep the row step
    per_row = fake_quant(torch.from_numpy(x)).numpy()
    assert np.abs(got - x).mean() < 0.5 * np.abs(per_row - x).mean()
    assert (np.abs(got - x) <= np.abs(x).max(1, keepdims=True) / 254 * 1.0001).all()
    assert torch.equal(group_quant(torch.from_numpy(x), 256), torch.from_numpy(per_row))
    a = tiny_compressed.args
    ids = tiny_ids[:64]
    widest = max(a.dim, a.n_heads * a.head_dim, a.hidden_dim)
    np.testing.assert_array_equal(Emulator(tiny_compressed, act_group=widest, wide=())(ids),
                                  Emulator(tiny_compressed, wide=())(ids))
    ref = Emulator(tiny_compressed, act_quant=False, fp16=False)(ids)
    err = lambda **kw: np.abs(Emulator(tiny_compressed, act_quant=WIDE_POINTS, fp16=False,  # noqa: E731
                                       **kw)(ids) - ref).mean()
    assert err(act_group=8) < 0.85 * err()                                      # 0.75
    with pytest.raises(ValueError, match="does not divide"):
        Emulator(tiny_compressed, act_group=48)


def test_emulated_probabilities_keep_their_mass(tiny_compressed):
    """The emulation's diffused quantisation is the device's (spec/arithmetic.py): the same
    codes on softmax rows up to FP32 sums, and the mass of many small probabilities kept."""
    import torch
    from flightllm_overlay.compress.emulate import diffused_quant
    from flightllm_overlay.spec import arithmetic as U
    rng = np.random.default_rng(3)
    e = np.exp(3 * rng.standard_normal((8, 500)))
    p = (e / e.sum(1, keepdims=True)).astype(np.float16).astype(np.float32)
    q, s = U.quantize_rows(p, diffuse=True)
    emu = diffused_quant(torch.from_numpy(p)).numpy()
    assert np.abs(emu - q * s[:, None]).max() <= s.max() * 1.0001     # at most one step apart
    assert np.mean(emu == q * s[:, None]) > 0.99
    assert np.abs(emu.sum(1) - p.sum(1)).max() <= s.max() * 64     # large ones: +-1/2 step each
    plain = U.quantize_rows(p)
    assert np.abs((plain[0] * plain[1][:, None]).sum(1) - p.sum(1)).max() > \
        2 * np.abs(emu.sum(1) - p.sum(1)).max()                        # small ones' mass kept


def test_save_load_round_trip(tiny_compressed, tiny_ids, tmp_path):
    path = tiny_compressed.save(tmp_path / "tiny.safetensors")
    back = CompressedModel.load(path)
    assert back.config == tiny_compressed.config and back.args == tiny_compressed.args
    for (_, _, a), (_, _, b) in zip(tiny_compressed.linears(), back.linears()):
        assert a.bits == b.bits and a.group == b.group and np.array_equal(a.int8(), b.int8())
        assert np.array_equal(a.scale, b.scale)
        assert (a.mask is None and b.mask is None) or np.array_equal(a.mask, b.mask)
    assert np.array_equal(Emulator(back)(tiny_ids[:32]), Emulator(tiny_compressed)(tiny_ids[:32]))


def test_corrupt_and_truncated_files_give_checkpoint_errors(tiny_compressed, tmp_path):
    good = tiny_compressed.save(tmp_path / "good.safetensors").read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF                                          # one byte in the data
    (tmp_path / "flip.safetensors").write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="checksum"):
        CompressedModel.load(tmp_path / "flip.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(good[:len(good) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        CompressedModel.load(tmp_path / "cut.safetensors")
    from safetensors.numpy import save_file
    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a FlightLLM compressed"):
        CompressedModel.load(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        CompressedModel.load(tmp_path / "missing.safetensors")


def test_group_smoothing_preserves_the_function_and_column_groups(tiny_ckpt, tiny_ids):
    """smooth_group=32: one factor per 32 input channels, so a group-wise 4-bit grid survives."""
    from flightllm_overlay.compress.calibrate import model_with
    from flightllm_overlay.compress.smooth import float_layers, smoothed_layers
    plain = float_layers(tiny_ckpt)
    grouped = smoothed_layers(tiny_ckpt, tiny_ids[:128], group=32)
    per_channel = smoothed_layers(tiny_ckpt, tiny_ids[:128])
    ratio = grouped[0][0]["wq"] / plain[0][0]["wq"]                     # (96, 96): s per column
    assert np.allclose(ratio, ratio[:1], rtol=1e-5)
    cols = ratio[0].reshape(3, 32)
    assert np.allclose(cols, cols[:, :1], rtol=1e-5) and not np.allclose(cols, 1.0)
    r2 = (per_channel[0][0]["wq"] / plain[0][0]["wq"])[0].reshape(3, 32)
    assert not np.allclose(r2, r2[:, :1], rtol=1e-3)                    # per channel differs
    ref = model_with(tiny_ckpt, plain).forward(tiny_ids[:48], 0).numpy()
    out = model_with(tiny_ckpt, grouped).forward(tiny_ids[:48], 0).numpy()
    assert np.abs(out - ref).max() < 1e-3
