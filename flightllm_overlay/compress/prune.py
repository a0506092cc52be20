"""N:16 block pruning: Wanda or magnitude scores, then a per-block N in {2, 4, 8, 16} under a density budget."""
from __future__ import annotations

import numpy as np

from ..errors import CompileError
from ..spec.wformat import BLOCK, FSB_CODES

CRITERIA = ("wanda", "magnitude")
MIN_DENSITY = min(FSB_CODES) / BLOCK          # every block keeps at least 2 of 16 per row


def scores(w: np.ndarray, sq_norm: np.ndarray | None, criterion: str = "wanda") -> np.ndarray:
    """(R, K) importance of each weight: Wanda |W_ij| * ||x_j||, or magnitude |W_ij|."""
    if criterion == "wanda":
        if sq_norm is None:
            raise CompileError("the Wanda criterion needs calibration statistics (input channel "
                               "norms); pass calibration tokens or use criterion='magnitude'")
        return np.abs(w) * np.sqrt(np.maximum(np.asarray(sq_norm, np.float64), 0.0))[None, :]
    if criterion == "magnitude":
        return np.abs(w).astype(np.float64)
    raise CompileError(f"unknown pruning criterion {criterion!r}; use one of {CRITERIA}")


def check_density(density: float, what: str = "a layer") -> None:
    if not MIN_DENSITY <= density <= 1.0:
        raise CompileError(f"density {density:g} for {what} cannot be met: N:16 blocks keep "
                           f"between {MIN_DENSITY:g} (2:16) and 1 (dense) of the weights; "
                           f"choose a density in that range")


def _kept_scores(score: np.ndarray) -> np.ndarray:
    """(R/16 * K/16, 4): per block, score kept with N = 2, 4, 8, 16 (top-N of each row, summed)."""
    r, k = score.shape
    blk = score.reshape(r // BLOCK, BLOCK, k // BLOCK, BLOCK).transpose(0, 2, 1, 3)
    srt = -np.sort(-blk, axis=-1)                        # descending along each block row
    csum = np.cumsum(srt, axis=-1)                       # (.., 16 rows, 16)
    kept = np.stack([csum[..., n - 1].sum(-1) for n in FSB_CODES], axis=-1)
    return kept.reshape(-1, len(FSB_CODES))


def _check_blocks(score: np.ndarray) -> None:
    r, k = score.shape
    if r % BLOCK or k % BLOCK:
        raise CompileError(f"N:16 pruning needs whole 16x16 blocks; the weight is {r} x {k}")


def choose_block_n(score: np.ndarray, density: float) -> np.ndarray:
    """(R/16, K/16) N:16 codes keeping at most `density` of the weights, losing the least score."""
    return choose_block_n_joint([score], density)[0]


def choose_block_n_joint(scores: list, density: float, energy: bool = False) -> list:
    """N:16 codes of several weights under one budget: at most `density` of all their weights
    kept together, losing the least score (`energy`: the least sum of squared scores, which for
    the attention-aware scores is the predicted attention KL, comparable across linears and
    layers).  One (R/16, K/16) array per weight.

    Greedy over steps 16->8->4->2 of every block, cheapest score lost per pruned weight first;
    a block's steps cost more the lower it goes, so the greedy order respects each block's chain.
    """
    for score in scores:
        _check_blocks(score)
    check_density(density)
    shapes = [(s.shape[0] // BLOCK, s.shape[1] // BLOCK) for s in scores]
    kept = np.concatenate([_kept_scores(np.square(s) if energy else s) for s in scores])
    nb = len(kept)
    codes = np.full(nb, BLOCK, np.int64)
    target = density * nb * BLOCK * BLOCK
    if codes.sum() * BLOCK > target + 1e-9:
        steps = []                                       # (cost per weight, level, block)
        for level in range(len(FSB_CODES) - 1, 0, -1):   # 16->8 is level 3, 8->4 level 2, ...
            hi, lo = FSB_CODES[level], FSB_CODES[level - 1]
            cost = (kept[:, level] - kept[:, level - 1]) / ((hi - lo) * BLOCK)
            steps.append((cost, np.full(nb, len(FSB_CODES) - level), np.arange(nb), lo))
        cost = np.concatenate([s[0] for s in steps])
        order_key = np.concatenate([s[1] for s in steps])
        blocks = np.concatenate([s[2] for s in steps])
        new_n = np.concatenate([np.full(nb, s[3]) for s in steps])
        total = codes.sum() * BLOCK
        for i in np.lexsort((order_key, cost)):
            b = blocks[i]
            if new_n[i] >= codes[b]:
                continue
            if FSB_CODES[FSB_CODES.index(codes[b]) - 1] != new_n[i]:
                continue                                 # a step out of its block's chain order
            total -= (codes[b] - new_n[i]) * BLOCK
            codes[b] = new_n[i]
            if total <= target + 1e-9:
                break
    out, at = [], 0
    for rb, kb in shapes:
        out.append(codes[at:at + rb * kb].reshape(rb, kb))
        at += rb * kb
    return out


def block_mask(score: np.ndarray, block_n: np.ndarray) -> np.ndarray:
    """(R, K) bool: in each row of each block, the block's N highest-scoring weights."""
    r, k = score.shape
    blk = score.reshape(r // BLOCK, BLOCK, k // BLOCK, BLOCK).transpose(0, 2, 1, 3)
    rank = np.argsort(np.argsort(-blk, axis=-1, kind="stable"), axis=-1)
    keep = rank < np.asarray(block_n)[:, :, None, None]
    return keep.transpose(0, 2, 1, 3).reshape(r, k)


def prune(w: np.ndarray, density: float, sq_norm=None, criterion: str = "wanda", score=None):
    """(mask, block_n) of an N:16 pruning of `w` at `density`; (None, None) when dense.

    score: (R, K) importances to use instead of the criterion's (e.g. `qkscore.attention_scores`).
    """
    check_density(density)
    if density >= 1.0:
        return None, None
    score = scores(w, sq_norm, criterion) if score is None else np.asarray(score, np.float64)
    block_n = choose_block_n(score, density)
    return block_mask(score, block_n), block_n.astype(np.uint8)
