"""Attention-aware Q/K pruning: the importances are the attention distributions' second-order KL per weight, and the pipeline uses them."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flightllm_overlay.compress import CompressionConfig, compress
from flightllm_overlay.compress.qkscore import AttentionImportance, attention_kl
from flightllm_overlay.model.llama import rope, rope_tables

ARGS = SimpleNamespace(n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, rope_theta=10000.0)


def _inputs(rng, T=96, K=32):
    """Token inputs with one massive channel that is nearly constant (as LLMs' norm outputs
    have): Wanda ranks its weights first, yet through k_proj it only shifts every score of a
    query alike, which the softmax ignores."""
    x = rng.standard_normal((T, K))
    x[:, 0] = 25.0 + 0.01 * rng.standard_normal(T)
    return torch.from_numpy(x)


def _attention(x, wq, wk):
    T = x.shape[0]
    cos, sin = (t.double() for t in rope_tables(ARGS, T))
    q = rope((x @ wq.T).view(T, ARGS.n_heads, ARGS.head_dim), cos, sin)
    k = rope((x @ wk.T).view(T, ARGS.n_kv_heads, ARGS.head_dim), cos, sin)
    s = torch.einsum("thd,uhd->htu", q, k.expand(T, ARGS.n_heads, ARGS.head_dim)) / 4.0
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    return torch.log_softmax(s.masked_fill(causal, float("-inf")), -1), q, k


def _importance(rng):
    wq = torch.from_numpy(rng.standard_normal((32, 32)) / 32 ** 0.5)
    wk = torch.from_numpy(rng.standard_normal((16, 32)) / 32 ** 0.5)
    x = _inputs(rng)
    ref, q, k = _attention(x, wq, wk)
    imp = AttentionImportance(ARGS)
    imp.hook("attn_in", 0, x), imp.hook("q", 0, q), imp.hook("k", 0, k)
    return wq, wk, x, ref, imp


def _kl_sum(logp, logq):
    """KL(p || q) summed over heads and queries (the importances' units, times 1/2)."""
    causal = torch.ones(logp.shape[-1], logp.shape[-1], dtype=torch.bool).triu(1)
    return float((logp.exp() * (logp - logq).masked_fill(causal, 0.0)).sum())


def test_q_importance_is_the_second_order_kl_of_one_weight():
    """Changing q_proj weight (i, j) and its RoPE partner (i + d/2, j) by eps moves the
    attention distributions by KL = eps^2 / 2 (I_ij + I_i'j) (second order; exact for the pair
    sum, whose split the rotation decides)."""
    wq, wk, x, ref, imp = _importance(np.random.default_rng(0))
    eps = 1e-3
    for i, j in ((0, 3), (5, 0), (18, 7), (30, 31)):
        partner = i + 8 if i % 16 < 8 else i - 8
        kl = 0.0
        for r in (i, partner):
            w = wq.clone()
            w[r, j] += eps
            kl += _kl_sum(ref, _attention(x, w, wk)[0])
        want = eps ** 2 / 2 * (imp.q[0][i, j] + imp.q[0][partner, j])
        assert kl == pytest.approx(want, rel=0.02), (i, j, kl, want)


def test_k_importance_of_a_constant_channel_follows_the_rope_rotation():
    """The massive, nearly constant input channel: Wanda ranks its k_proj weights first.
    Through a slowly rotating RoPE pair it shifts every attended key alike and the attention
    barely changes; through a fast pair the rotation makes the shift differ from key to key.
    The importance predicts the KL of changing weight (i, 0) and its partner (i + d/2, 0)."""
    wq, wk, x, ref, imp = _importance(np.random.default_rng(1))
    sq = (x ** 2).sum(0).numpy()
    assert sq[0] > 50 * np.median(sq)                      # Wanda: channel 0 matters most
    eps = 1e-3
    got = []
    for i in range(8):                                     # the 8 RoPE pairs, fast to slow
        kl = 0.0
        for r in (i, i + 8):
            w = wk.clone()
            w[r, 0] += eps
            kl += _kl_sum(ref, _attention(x, wq, w)[0])
        want = eps ** 2 / 2 * (imp.k[0][i, 0] + imp.k[0][i + 8, 0])
        assert kl == pytest.approx(want, rel=0.1), (i, kl, want)
        got.append(kl)
    assert got[-1] < 0.01 * got[0]                         # slowest pair: almost no effect


def test_attention_criterion_in_the_pipeline(tiny_ckpt):
    cfg = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=128, density_qk=0.5,
                                            qk_budget="linear")
    assert cfg.qk_criterion == "attention"
    cm = compress(tiny_ckpt, None, cfg, progress=False)
    wanda = compress(tiny_ckpt, None, cfg.but(qk_criterion=None), progress=False)
    for i in range(tiny_ckpt.args.n_layers):
        for k in ("wq", "wk"):
            assert cm.layers[i][k].sparse and cm.layers[i][k].density <= 0.5 + 1e-9
    assert any(not np.array_equal(cm.layers[i][k].mask, wanda.layers[i][k].mask)
               for i in range(tiny_ckpt.args.n_layers) for k in ("wq", "wk"))
    # attention_kl of the masks applied to the float weights: finite, positive, per layer
    qk = {i: tuple(tiny_ckpt.weights[f"model.layers.{i}.self_attn.{n}_proj.weight"].numpy()
                   * cm.layers[i][w].mask for n, w in (("q", "wq"), ("k", "wk")))
          for i in range(tiny_ckpt.args.n_layers)}
    from flightllm_overlay.data import text
    kl = attention_kl(tiny_ckpt, qk, tiny_ckpt.tokenizer.encode(text("eval"))[:128], 128)
    assert kl.shape == (tiny_ckpt.args.n_layers,) and (kl > 0).all() and np.isfinite(kl).all()


def test_unknown_qk_criterion_is_a_clear_error():
    from flightllm_overlay.errors import CompileError
    with pytest.raises(CompileError, match="q/k pruning criterion"):
        CompressionConfig(qk_criterion="entropy")


def _energy_lost(score, codes):
    """Sum of squared scores of the weights a block code choice prunes."""
    from flightllm_overlay.compress.prune import block_mask
    return float((np.square(score) * ~block_mask(score, codes)).sum())


def test_one_budget_over_several_weights_prunes_the_unimportant_one_harder():
    from flightllm_overlay.compress.prune import choose_block_n, choose_block_n_joint
    rng = np.random.default_rng(3)
    quiet = np.abs(rng.standard_normal((32, 64))) * 0.1       # a layer whose q/k matter little
    loud = np.abs(rng.standard_normal((64, 64)))
    a, b = choose_block_n_joint([quiet, loud], 0.7, energy=True)
    assert a.shape == (2, 4) and b.shape == (4, 4)
    kept = (a.sum() + b.sum()) * 16
    total = quiet.size + loud.size
    assert kept <= 0.7 * total + 1e-9 and kept > 0.7 * total - 16 * 16
    assert a.mean() < 0.7 * 16 < b.mean()                     # the quiet weight gives up more
    separate = [choose_block_n(s, 0.7) for s in (quiet, loud)]
    assert (_energy_lost(quiet, a) + _energy_lost(loud, b)
            < 0.8 * sum(_energy_lost(s, c) for s, c in zip((quiet, loud), separate)))
    # one weight alone: the same codes as its own budget (score sums; energy ranks the blocks
    # by squared scores instead, which may differ)
    assert np.array_equal(choose_block_n_joint([loud], 0.7)[0], choose_block_n(loud, 0.7))


def test_model_wide_qk_budget_in_the_pipeline(tiny_ckpt):
    from flightllm_overlay.errors import CompileError
    cfg = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=128, density_qk=0.5,
                                            qk_budget="linear")
    per_linear = compress(tiny_ckpt, None, cfg, progress=False)
    cm = compress(tiny_ckpt, None, cfg.but(qk_budget="model"), progress=False)
    n = tiny_ckpt.args.n_layers
    masks = [cm.layers[i][k].mask for i in range(n) for k in ("wq", "wk")]
    kept = sum(int(m.sum()) for m in masks)
    assert kept <= 0.5 * sum(m.size for m in masks) + 1e-9
    dens = [m.mean() for m in masks]
    assert max(dens) - min(dens) > 0.02                       # not 0.5 in every linear
    assert all(per_linear.layers[i][k].density <= 0.5 + 1e-9 for i in range(n)
               for k in ("wq", "wk"))
    assert cm.config.qk_budget == "model"
    for budget in ("model", "layer"):
        with pytest.raises(CompileError, match="qk_criterion='attention'.*qk_budget='linear'"):
            CompressionConfig(density_qk=0.7, qk_budget=budget)
    with pytest.raises(CompileError, match="unknown q/k budget"):
        CompressionConfig(qk_budget="layers")


def test_per_layer_qk_budget_in_the_pipeline(tiny_ckpt):
    """qk_budget='layer' (the flightllm preset's): each layer's q_proj and k_proj together keep
    at most the density, q and k of a layer may differ, and every layer meets it on its own
    (the model-wide budget moves weights between layers; this one does not)."""
    cfg = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=128, density_qk=0.5)
    assert cfg.qk_budget == "layer"
    cm = compress(tiny_ckpt, None, cfg, progress=False)
    share = []
    for layer in cm.layers:
        q, k = layer["wq"].mask, layer["wk"].mask
        kept = (int(q.sum()) + int(k.sum())) / (q.size + k.size)
        assert 0.5 - 1 / 16 <= kept <= 0.5 + 1e-9
        share.append((q.mean(), k.mean()))
    assert any(abs(dq - dk) > 0.02 for dq, dk in share)      # not 0.5 in each linear
    assert "layer budget" in cm.report()
