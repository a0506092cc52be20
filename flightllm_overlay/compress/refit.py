"""Least-squares re-fit of a packing's group parameters (M, B) to the calibration inputs, codes kept.

After the error feedback has chosen the codes, each row's dequantised weights are linear in its
group parameters: kept weight j of group g is ``s (M_g q_j + B_g) / 256`` before the unit's INT8
rounding.  The (M, B) that minimise the row's output error ``(w - w') H (w - w')^T`` over the
calibration inputs solve one small linear system per row (2 unknowns per group; the groups are
coupled through H), where the error feedback fixed each group's parameters from the weights
before their codes were known.  The solution is rounded to the fixed point and checked through
the arithmetic the weight runs on (the unit's INT8 rounding, or for an `exact` packing the
MPE's exact group arithmetic, where the least squares are exact up to the fixed point): a row
keeps its old parameters where they are better.
"""
from __future__ import annotations

import numpy as np
import torch

from ..spec.wformat import SHIFT, PackedWeight

#: bytes of the two (groups, rows, K) float64 work arrays of one batch of rows
WORK_BYTES = 160 << 20
#: rows solved together at most
ROWS = 128


def batch_rows(k: int, group: int) -> int:
    """Rows per batch: at most ROWS, fewer where K is wide (SmolLM2's down_proj, K 1,536 in 48
    groups: 128; LLaMA-7B's, K 11,008 in 344 groups: 2), so the work arrays stay within
    WORK_BYTES."""
    return int(max(1, min(ROWS, WORK_BYTES // (2 * 8 * (k // group) * k))))


def row_errors(w: np.ndarray, pw: PackedWeight, hessian: np.ndarray) -> np.ndarray:
    """(R,) each row's squared output error d H d^T over the calibration inputs."""
    d = pw.float().astype(np.float64) - w
    return np.einsum("rk,rk->r", d @ hessian, d)


def _normal_equations(q, kept, W, H, group):
    """Per row the (2G, 2G) matrix and (2G,) right-hand side of the least-squares problem in
    (M_1..M_G, B_1..B_G) / 256, for codes q and kept weights (R, K), target W in INT8 units."""
    r, k = q.shape
    ng = k // group
    qa = (q * kept).reshape(r, ng, group)
    oa = kept.reshape(r, ng, group).astype(np.float64)
    h3 = H.reshape(ng, group, k)
    # H times each group's code column and its ones column: (G, R, K), one GEMM per group
    hq, ho = np.matmul(qa.transpose(1, 0, 2), h3), np.matmul(oa.transpose(1, 0, 2), h3)
    hq = hq.reshape(ng, r, ng, group)
    ho = ho.reshape(ng, r, ng, group)
    mm = np.einsum("gris,ris->rgi", hq, qa)
    mb = np.einsum("gris,ris->rgi", ho, qa)      # [r, g, i]: ones of g against codes of i
    bb = np.einsum("gris,ris->rgi", ho, oa)
    a = np.concatenate([np.concatenate([mm, mb.transpose(0, 2, 1)], 2),
                        np.concatenate([mb, bb], 2)], 1)
    hw = (W @ H).reshape(r, ng, group)
    rhs = np.concatenate([(qa * hw).sum(2), (oa * hw).sum(2)], 1)
    return a, rhs


def refit_groups(w, pw: PackedWeight, hessian, damp: float = 1e-9) -> PackedWeight:
    """`pw` with each row's (M, B) re-fitted to float `w` (R, K) under `hessian` (K, K), the
    codes, row scales, mask, N:16 codes and `exact` kept; rows whose re-fit is not better
    through the arithmetic the weight runs on (`PackedWeight.float`: the unit's INT8, or the
    exact group arithmetic) keep their parameters.  INT8 weights (no groups) come back as
    given."""
    if pw.bits == 8:
        return pw
    w = np.asarray(w, np.float64)
    H = np.asarray(hessian, np.float64)
    r, k = pw.shape
    ng = k // pw.group
    kept = np.ones((r, k), bool) if pw.mask is None else np.asarray(pw.mask, bool)
    W = w / pw.scale.astype(np.float64)[:, None]
    q = pw.q.astype(np.float64)
    mult, offset = pw.mult.copy(), pw.offset.copy()
    rows = batch_rows(k, pw.group)
    for r0 in range(0, r, rows):
        sl = slice(r0, min(r, r0 + rows))
        a, rhs = _normal_equations(q[sl], kept[sl], W[sl], H, pw.group)
        ridge = damp * np.trace(a, axis1=1, axis2=2) / (2 * ng) + 1e-30
        a[:, np.arange(2 * ng), np.arange(2 * ng)] += ridge[:, None]
        # (torch's batched solve: numpy's loops over the small systems ~50x slower here)
        theta = torch.linalg.solve(torch.from_numpy(a), torch.from_numpy(rhs)).numpy()
        theta *= 1 << SHIFT
        mult[sl] = np.clip(np.rint(theta[:, :ng]), 0, 65535).astype(np.uint16)
        offset[sl] = np.clip(np.rint(theta[:, ng:]), -32768, 32767).astype(np.int16)
    new = PackedWeight(pw.bits, pw.group, pw.q, mult, offset, pw.scale, pw.block_n, pw.mask,
                       pw.exact)
    better = row_errors(w, new, H) < row_errors(w, pw, H)
    return PackedWeight(pw.bits, pw.group, pw.q,
                        np.where(better[:, None], mult, pw.mult).astype(np.uint16),
                        np.where(better[:, None], offset, pw.offset).astype(np.int16),
                        pw.scale, pw.block_n, pw.mask, pw.exact)
