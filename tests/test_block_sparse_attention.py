"""Block-sparse prefill attention: the pattern, its calibration, the device's softmax and MPE timing, end to end."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.spec import isa
from flightllm_overlay.compiler import BucketTable, compile_quantized, quantize_model
from flightllm_overlay.compress.attention import causal_blocks, choose_patterns
from flightllm_overlay.config import load_target
from flightllm_overlay.model.llama import Transformer
from flightllm_overlay.runtime import Session
from flightllm_overlay.sim.timing import TimingModel


def test_pattern_keeps_sinks_the_local_window_and_nothing_in_the_future():
    q = np.arange(300)[:, None]
    k = np.arange(300)[None, :]
    keep = isa.attention_block_keep(q, k, 1, 2)
    assert not (keep & (k > q)).any()
    assert keep[299, :64].all() and keep[299, 192:300].all()       # sink block, blocks 3 and 4
    assert not keep[299, 64:192].any()                             # blocks 1 and 2 are skipped
    assert (isa.attention_block_keep(q, k, 0, 0) == (k <= q)).all()  # window 0: dense causal
    assert causal_blocks(2048, 0, 0) == 32 * 33 // 2
    assert causal_blocks(2048, 1, 2) == 1 + 2 + 30 * 3                # sink + diagonal + one


def pattern_for(args, rng):
    return [[(int(rng.integers(0, 2)), int(rng.integers(1, 3))) for _ in range(args.n_heads)]
            for _ in range(args.n_layers)]


def test_prefill_with_a_block_pattern_matches_the_masked_reference(tiny_ckpt, sim_overlay):
    rng = np.random.default_rng(0)
    pattern = pattern_for(tiny_ckpt.args, rng)
    qm = quantize_model(tiny_ckpt)
    qm.attn_pattern = pattern
    program = compile_quantized(qm, ctx=256, all_logits=True)
    prompt = rng.integers(3, 300, 230).tolist()
    sparse_ref, dense_ref = Transformer.from_checkpoint(tiny_ckpt), Transformer.from_checkpoint(tiny_ckpt)
    sparse_ref.attn_pattern = pattern
    want = sparse_ref.forward(prompt, 0).numpy()
    dense = dense_ref.forward(prompt, 0).numpy()
    with Session(sim_overlay, program) as s:                   # two launches of 128 rows
        got = np.concatenate([s.run("prefill", prompt[:128], 0),
                              s.run("prefill", prompt[128:], 128)])
        step = s.run("decode", [7], len(prompt))[-1]            # decode attention stays dense
    assert got.shape == want.shape
    # W8A8 over 230 random tokens of a random model: the dense program is as far from the
    # dense reference (median 0.079 of the row maximum, row cosine >= 0.98, measured)
    err = np.abs(got - want).max(1) / np.abs(want).max(1)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert np.median(err) < 0.1 and cos.min() > 0.97
    # the mask matters: against the dense reference the same logits are far off
    far = slice(192, 230)
    assert np.abs(got[far] - want[far]).mean() < 0.2 * np.abs(got[far] - dense[far]).mean()
    want_step = sparse_ref.forward([7], len(prompt)).numpy()[-1]
    assert np.abs(step - want_step).max() < 0.12 * np.abs(want_step).max()


def test_block_pattern_shortens_predicted_prefill(tiny_ckpt):
    qm = quantize_model(tiny_ckpt, None)
    dense = compile_quantized(qm, ctx=256)
    qm.attn_pattern = [[(1, 1)] * tiny_ckpt.args.n_heads] * tiny_ckpt.args.n_layers
    sparse = compile_quantized(qm, ctx=256)
    sparse_target = load_target("u280")
    tm = TimingModel(sparse_target)
    cyc = [tm.schedule_image(BucketTable(p, sparse_target).step("prefill", 256)[0].image).macs
           for p in (dense, sparse)]
    assert cyc[1] < cyc[0]
    dec = [BucketTable(p, sparse_target).step("decode", 256)[0].image for p in (dense, sparse)]
    assert np.array_equal(dec[0], dec[1])                          # decode: dense in both


def test_calibration_meets_the_mass_target(tiny_ckpt):
    rng = np.random.default_rng(1)
    tokens = rng.integers(3, 300, 512).tolist()
    pats = choose_patterns(tiny_ckpt, tokens, mass=0.9, length=256, window_tokens=256,
                           progress=False)
    assert len(pats.pattern) == tiny_ckpt.args.n_layers
    assert all(len(h) == tiny_ckpt.args.n_heads for h in pats.pattern)
    assert (pats.kept_mass >= 0.9).all() and 0 < pats.mean_density <= 1
    strict = choose_patterns(tiny_ckpt, tokens, mass=0.999, length=256, window_tokens=256,
                             progress=False)
    assert strict.mean_density >= pats.mean_density
    with pytest.raises(ValueError, match="at least 256 tokens"):
        choose_patterns(tiny_ckpt, tokens[:100], window_tokens=256, progress=False)
