"""Attention-aware importance of q_proj/k_proj weights: how much pruning each one changes the attention distributions.

Wanda scores a weight by the change of its linear's *output*; for Q and K what the model uses is
the softmax over the scores s_tu = q_t . k_u / sqrt(d).  A change ds of the scores of query t
moves its attention distribution p_t by KL(p_t || p_t') ~ 1/2 Var_{u ~ p_t}(ds_tu) (second
order; the softmax ignores a shift common to all keys).  Summing that over the calibration
queries and keeping the diagonal (one weight at a time) gives, for a weight W_ij:

* q_proj (row i of head h):  I_ij = sum_t C_ti x_tj^2 with C_ti = Var_{u ~ p_t}(k_ui) / d, the
  spread of the (roped) keys the query attends to along dimension i (averaged over the RoPE pair
  of i, whose split the position's rotation decides);
* k_proj (row i of KV head h): I_ij = sum_t A_ti V_tij over the query heads of h, with
  A_ti = q_ti^2 / d (pair-averaged) and V_tij the spread of input channel j over the keys query
  t attends to, as key u's RoPE rotation by angle theta_i u turns it:
  V_tij = E_{u ~ p_t}(x_uj^2) - |E_{u ~ p_t}(e^{i theta_i u} x_uj)|^2, the second factor taken
  as |phi_t(theta_i)|^2 E_{u ~ p_t}(x_uj)^2 with phi_t the characteristic function of the
  attended positions (exact for a constant channel).  For a slowly rotating pair a key shift
  common to the attended keys is ignored by the softmax (V is the variance); for a fast one the
  rotation makes it differ from key to key (V tends to the second moment).

The pruning score is |W_ij| sqrt(I_ij) (Wanda's |W_ij| ||x_j|| with the attention weighting);
`prune.choose_block_n` then picks the N:16 codes.  Input channels that are large but nearly
constant over the attended keys (the "massive activations" of LLMs) get high Wanda scores but
matter little to the attention distribution through k_proj: that is where the two differ most.
"""
from __future__ import annotations

import numpy as np
import torch

def _pair_mean(a: torch.Tensor) -> torch.Tensor:
    """Average each rotate-half pair (i, i + d/2) along the last dim."""
    half = a.shape[-1] // 2
    m = (a[..., :half] + a[..., half:]) / 2
    return torch.cat([m, m], -1)


class AttentionImportance:
    """Accumulates q_proj/k_proj importances over calibration windows from the float model's
    hooks (``attn_in``, ``q``, ``k``); `q[i]`, `k[i]`: (rows, K) float64 numpy per layer."""

    def __init__(self, args):
        self.args = args
        n = args.n_layers
        self.q, self.k = [None] * n, [None] * n
        self._x, self._q = {}, {}
        d = args.head_dim
        self._theta = torch.from_numpy(1.0 / (args.rope_theta ** (np.arange(0, d, 2) / d)))

    def hook(self, name: str, layer: int, t: torch.Tensor) -> None:
        if name == "attn_in":
            self._x[layer] = t.detach().double()
        elif name == "q":
            self._q[layer] = t.detach().double()
        elif name == "k":
            self._add(layer, self._x.pop(layer), self._q.pop(layer), t.detach().double())

    def _add(self, layer: int, x, q, k) -> None:
        a = self.args
        T, H, d = q.shape
        g = H // a.n_kv_heads
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)
        x2 = x * x
        angle = torch.arange(T, dtype=torch.float64)[:, None] * self._theta[None, :]  # (T, d/2)
        iq = torch.zeros(H, d, x.shape[1], dtype=torch.float64)
        ik = torch.zeros(a.n_kv_heads, d, x.shape[1], dtype=torch.float64)
        for h in range(H):
            kv = h // g
            kh = k[:, kv]                                         # (T, d)
            s = (q[:, h] @ kh.T) * d ** -0.5
            p = torch.softmax(s.masked_fill(causal, float("-inf")), -1)      # (T, T)
            c = _pair_mean(p @ (kh * kh) - (p @ kh) ** 2).clamp_min(0) / d  # (T, d)
            iq[h] = c.T @ x2
            px2, px = p @ x2, p @ x                               # (T, K)
            phi2 = (p @ angle.cos()) ** 2 + (p @ angle.sin()) ** 2     # (T, d/2): |phi_t|^2
            aq = _pair_mean(q[:, h] ** 2) / d                     # (T, d)
            ik[kv] += aq.T @ px2 - (aq * torch.cat([phi2, phi2], -1)).T @ (px * px)
        iq, ik = iq.reshape(H * d, -1).numpy(), ik.reshape(a.n_kv_heads * d, -1).numpy()
        self.q[layer] = iq if self.q[layer] is None else self.q[layer] + iq
        self.k[layer] = ik if self.k[layer] is None else self.k[layer] + ik


def attention_scores(w: np.ndarray, importance: np.ndarray) -> np.ndarray:
    """(R, K) pruning scores |W_ij| sqrt(I_ij) of a q_proj or k_proj weight."""
    return np.abs(w) * np.sqrt(np.maximum(importance, 0.0))


def attention_kl(ckpt, qk: dict, tokens, window: int = 256) -> np.ndarray:
    """Per layer, the mean KL(p || p') over queries and heads between the float model's attention
    distributions and those with q_proj/k_proj replaced by qk[i] = (wq, wk) (float, e.g. pruned),
    each layer fed the float model's own inputs: the error pruning Q/K causes where it acts."""
    from ..model.llama import Transformer, rope
    a = ckpt.args
    model = Transformer.from_checkpoint(ckpt)
    out = np.zeros(a.n_layers)
    count = 0
    g = a.n_heads // a.n_kv_heads

    def hook(name, layer, x):
        if name != "attn_in" or layer not in qk:
            return
        T = x.shape[0]
        cos, sin = model.cos[:T], model.sin[:T]
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)
        logp = []
        for wq, wk in ((model.layers[layer].wq, model.layers[layer].wk),
                       tuple(torch.as_tensor(np.asarray(w, np.float32)) for w in qk[layer])):
            q = rope((x @ wq.T).view(T, a.n_heads, a.head_dim), cos, sin).double()
            k = rope((x @ wk.T).view(T, a.n_kv_heads, a.head_dim), cos, sin).double()
            k = k.repeat_interleave(g, 1)
            s = torch.einsum("thd,uhd->htu", q, k) * a.head_dim ** -0.5
            logp.append(torch.log_softmax(s.masked_fill(causal, float("-inf")), -1))
        p = logp[0].exp()
        kl = (p * (logp[0] - logp[1]).masked_fill(causal, 0.0)).sum(-1)     # (H, T)
        out[layer] += float(kl.sum()) / (a.n_heads * T)

    tokens = list(tokens)
    for start in range(0, len(tokens), window):
        model.reset()
        model.forward(torch.as_tensor(tokens[start:start + window], dtype=torch.long), 0,
                      hook=hook)
        count += 1
    return out / max(count, 1)
