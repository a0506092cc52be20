"""Token sampling from logits: greedy, temperature, top-k, top-p (nucleus), with a seeded generator."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FlightLLMError


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. temperature 0 means greedy (argmax)."""

    temperature: float = 0.0
    top_k: int = 0                 # 0: no limit
    top_p: float = 1.0             # 1.0: no nucleus cut
    seed: int | None = None

    def __post_init__(self):
        if not 0 <= self.temperature < float("inf"):     # NaN fails this too
            raise FlightLLMError(f"temperature must be a finite number >= 0 (0 = greedy), got "
                                 f"{self.temperature}")
        if self.top_k < 0:
            raise FlightLLMError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise FlightLLMError(f"top_p must be in (0, 1], got {self.top_p}")


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Pick one token id from a (vocab,) logits vector."""
    logits = np.asarray(logits, dtype=np.float64)
    if params.temperature == 0:
        return int(np.argmax(logits))
    z = logits / params.temperature
    if params.top_k and params.top_k < z.size:
        kth = np.partition(z, -params.top_k)[-params.top_k]
        z = np.where(z >= kth, z, -np.inf)
    z = z - np.max(z)
    p = np.exp(z)
    p /= p.sum()
    if params.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, params.top_p) + 1)]
        mask = np.zeros_like(p, dtype=bool)
        mask[keep] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return int(rng.choice(p.size, p=p))
