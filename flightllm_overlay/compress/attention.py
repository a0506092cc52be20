"""Block-sparse prefill attention: a (sink, window) pattern of 64-token blocks per head, chosen from calibration.

For every layer and query head, the float reference's attention probabilities on calibration
windows are summed per (query block, key block).  A pattern keeps, for query block i, the key
blocks j <= i with j < sink or i - j < window.  Each head gets the cheapest pattern (fewest kept
blocks over a `length`-token prefill) whose kept share of the attention mass is at least `mass`
on every calibration window; decode attention stays dense, as in FlightLLM.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..spec.isa import ATTN_BLOCK, attention_block_keep

SINKS = (0, 1, 2)


@dataclass
class AttentionPatterns:
    """Chosen patterns and what they keep."""

    pattern: list          # per layer: [(sink, window)] per query head (window 0: dense)
    kept_mass: np.ndarray  # (layers, heads): worst calibration window's kept attention mass
    density: np.ndarray    # (layers, heads): kept share of the causal blocks at `length`
    length: int

    @property
    def mean_density(self) -> float:
        return float(self.density.mean())

    def table(self) -> str:
        rows = [f"{'layer':>5s}  (sink, window) per head; kept mass min; block density"]
        for li, heads in enumerate(self.pattern):
            pats = " ".join(f"{s},{w}" if w else "dense" for s, w in heads)
            rows.append(f"{li:5d}  {pats}  {self.kept_mass[li].min():.3f}  "
                        f"{self.density[li].mean():.2f}")
        rows.append(f"mean block density at {self.length} tokens: {self.mean_density:.2f}")
        return "\n".join(rows)


def causal_blocks(length: int, sink: int, window: int) -> int:
    """Key blocks a pattern computes over a `length`-token prefill (all causal ones if dense)."""
    nb = -(-length // ATTN_BLOCK)
    qb = np.arange(nb)[:, None]
    kb = np.arange(nb)[None, :]
    keep = kb <= qb
    if window:
        keep &= (kb < sink) | (qb - kb < window)
    return int(keep.sum())


def block_mass(probs: torch.Tensor) -> np.ndarray:
    """(heads, T, T) causal probabilities -> (heads, nb, nb) mean mass per (query, key) block."""
    h, t, _ = probs.shape
    nb = t // ATTN_BLOCK
    p = probs[:, :nb * ATTN_BLOCK, :nb * ATTN_BLOCK].reshape(h, nb, ATTN_BLOCK, nb, ATTN_BLOCK)
    return p.sum(-1).mean(2).double().numpy()


def kept_share(mass: np.ndarray, sink: int, window: int) -> np.ndarray:
    """(heads,) attention mass a pattern keeps, averaged over query blocks."""
    nb = mass.shape[-1]
    keep = attention_block_keep(np.arange(nb)[:, None] * ATTN_BLOCK,
                                np.arange(nb)[None, :] * ATTN_BLOCK, sink, window)
    return (mass * keep).sum(-1).mean(-1)


def choose_patterns(ckpt, tokens, mass: float = 0.95, length: int = 2048,
                    window_tokens: int = 512, progress: bool = True) -> AttentionPatterns:
    """Pick a (sink, window) pattern per layer and head from calibration `tokens`."""
    from ..model.llama import Transformer
    from tqdm.auto import tqdm
    a = ckpt.args
    if window_tokens < 2 * ATTN_BLOCK:
        raise ValueError(f"calibration windows need at least two {ATTN_BLOCK}-token blocks")
    tokens = list(tokens)
    windows = [tokens[i:i + window_tokens]
               for i in range(0, len(tokens) - window_tokens + 1, window_tokens)]
    if not windows:
        raise ValueError(f"block-sparse attention calibration needs at least {window_tokens} "
                         f"tokens, got {len(tokens)}")
    model = Transformer.from_checkpoint(ckpt)
    group = a.n_heads // a.n_kv_heads
    masses = [[] for _ in range(a.n_layers)]
    qs = {}

    def hook(name, layer, x):
        if name == "q":
            qs[layer] = x
        elif name == "k":
            q, k = qs.pop(layer), x                       # (T, H, hd), (T, n_kv, hd)
            k = k.repeat_interleave(group, dim=1)
            s = torch.einsum("thd,shd->hts", q.float(), k.float()) * a.head_dim ** -0.5
            t = s.shape[-1]
            s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
            masses[layer].append(block_mass(torch.softmax(s, -1)))

    for w in tqdm(windows, desc="attention statistics", disable=not progress):
        model.reset()
        model.forward(w, 0, hook=hook)
    nb_len = -(-length // ATTN_BLOCK)
    cands = sorted({(s, w) for s in SINKS for w in range(1, nb_len + 1) if s < nb_len},
                   key=lambda sw: causal_blocks(length, *sw))
    full = causal_blocks(length, 0, 0)
    pattern, kept, density = [], np.zeros((a.n_layers, a.n_heads)), np.ones((a.n_layers, a.n_heads))
    for li in range(a.n_layers):
        per = np.stack(masses[li])                       # (windows, heads, nb, nb)
        heads = []
        for h in range(a.n_heads):
            choice = (0, 0)
            kept[li, h] = 1.0
            for s, w in cands:
                share = min(kept_share(m[h:h + 1], s, w)[0] for m in per)
                if share >= mass:
                    choice, kept[li, h] = (s, w), share
                    density[li, h] = causal_blocks(length, s, w) / full
                    break
            heads.append(choice)
        pattern.append(heads)
    return AttentionPatterns(pattern, kept, density, length)
