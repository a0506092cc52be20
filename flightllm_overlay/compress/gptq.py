"""Low-bit quantisation onto the dequantisation unit's grid: round-to-nearest and GPTQ-like error feedback.

Both produce a `PackedWeight` whose `float()` is exactly what the device computes with: its
`int8()` times the row scales, or with `exact` (the MPE's exact group arithmetic, ISA `wcodes`)
the unrounded (q M + B) / 256 times the row scales; the codes are chosen through the arithmetic
the weight will run on.  The error feedback quantises one column at a time and spreads its
error (pruned weights' included, as in SparseGPT's reconstruction) over the columns not yet
quantised, using the inverse Hessian of the layer's calibration inputs (Frantar et al., GPTQ /
SparseGPT; our own implementation).
"""
from __future__ import annotations

import numpy as np

from ..errors import CompileError
from ..spec.wformat import (SHIFT, WMAX, PackedWeight, check_bits, codes_to_exact, codes_to_int8,
                            quantize)

#: shrink factors of a group's [min, max] range tried by the range search (1.0 = plain min/max)
SHRINK = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)


def row_scale(w: np.ndarray, mask=None) -> np.ndarray:
    """FP32 row scale: max |kept weight| / 127 (1 for an all-zero row)."""
    wk = w if mask is None else np.where(mask, w, 0.0)
    amax = np.abs(wk).max(1)
    return np.where(amax > 0, amax / WMAX, 1.0).astype(np.float32)


def group_params(g: np.ndarray, kept: np.ndarray, bits: int, h_diag=None, exact: bool = False):
    """(mult, offset) of each row's group: g (R, G) weights in INT8 units, kept (R, G) bool.

    The range [lo, hi] of the kept weights, optionally shrunk (clipping outliers) where that
    lowers the h_diag-weighted rounding error through the unit's arithmetic (`exact`: the exact
    group arithmetic's).
    """
    levels = (1 << bits) - 1
    lo = np.where(kept, g, np.inf).min(1)
    hi = np.where(kept, g, -np.inf).max(1)
    empty = ~np.isfinite(lo)
    lo, hi = np.where(empty, 0.0, lo), np.where(empty, 0.0, hi)
    best = None
    wgt = np.ones(g.shape[1]) if h_diag is None else np.asarray(h_diag, np.float64)
    for f in (SHRINK if h_diag is not None else (1.0,)):
        mid = (lo + hi) / 2
        l2, h2 = mid + (lo - mid) * f, mid + (hi - mid) * f
        mult = np.clip(np.rint((h2 - l2) / levels * (1 << SHIFT)), 0, 65535).astype(np.int64)
        offset = np.clip(np.rint(l2 * (1 << SHIFT)), -32768, 32767).astype(np.int64)
        _, deq = nearest(g, mult, offset, bits, exact)
        err = (((deq - g) ** 2) * kept * wgt[None, :]).sum(1)
        if best is None:
            best = [mult, offset, err]
        else:
            better = err < best[2]
            best = [np.where(better, mult, best[0]), np.where(better, offset, best[1]),
                    np.minimum(err, best[2])]
    return best[0], best[1]


def dequant(q, mult, offset, bits: int, exact: bool = False) -> np.ndarray:
    """The weights (INT8 units, float64) codes q stand for with their groups' (M, B) on the
    device: the unit's INT8 (`codes_to_int8`), or with `exact` the unrounded (q M + B) / 256."""
    if exact:
        return codes_to_exact(q, mult, offset)
    return codes_to_int8(q, mult, offset, bits).astype(np.float64)


def nearest(g, mult, offset, bits, exact: bool = False):
    """Codes whose weight on the device (`dequant`: through the unit's INT8 rounding, or with
    `exact` the exact group arithmetic) is nearest to g (R, G), and that weight."""
    levels = (1 << bits) - 1
    m, b = mult[:, None].astype(np.float64), offset[:, None].astype(np.float64)
    real = np.where(m > 0, (g * (1 << SHIFT) - b) / np.maximum(m, 1e-30), 0.0)
    base = np.clip(np.floor(real), 0, levels)
    out_q = out_v = None
    for cand in (base, np.minimum(base + 1, levels)):
        v = dequant(cand.astype(np.int64), mult[:, None], offset[:, None], bits, exact)
        if out_q is None:
            out_q, out_v = cand, v
        else:
            better = np.abs(v - g) < np.abs(out_v - g)
            out_q, out_v = np.where(better, cand, out_q), np.where(better, v, out_v)
    return out_q.astype(np.uint8), out_v


def rtn(w, bits: int, group: int, mask=None, block_n=None, exact: bool = False) -> PackedWeight:
    """Round-to-nearest packing (the format's own `quantize`); `exact` (dense, below 8 bits):
    the same row scales and group parameters, each code the nearest through the exact group
    arithmetic, marked `exact`."""
    if exact and (bits == 8 or mask is not None):
        raise CompileError("exact group arithmetic is for dense weights below 8 bits")
    pw = quantize(w, bits, group, mask, block_n)
    if not exact:
        return pw
    r, k = pw.shape
    g = (np.asarray(w, np.float64) / pw.scale.astype(np.float64)[:, None]).reshape(-1, group)
    q, _ = nearest(g, pw.mult.reshape(-1).astype(np.int64), pw.offset.reshape(-1).astype(np.int64),
                   bits, exact=True)
    return PackedWeight(bits, group, q.reshape(r, k), pw.mult, pw.offset, pw.scale, exact=True)


def output_error(w: np.ndarray, pw: PackedWeight, hessian: np.ndarray) -> float:
    """tr(dW H dW^T): the squared output error over the calibration inputs."""
    d = (pw.float() - w).astype(np.float64)
    return float(((d @ hessian) * d).sum())


def _inverse_hessian_factor(h: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor U of H^-1 (H^-1 = U^T U), as GPTQ uses it."""
    try:
        hinv = np.linalg.inv(np.linalg.cholesky(h))
        hinv = hinv.T @ hinv
        return np.linalg.cholesky(hinv).T
    except np.linalg.LinAlgError as exc:
        raise CompileError("calibration Hessian is not positive definite even after damping; "
                           "use more calibration tokens or a larger damp") from exc


def gptq(w, hessian, bits: int, group: int, mask=None, block_n=None,
         block: int = 64, fixed: PackedWeight | None = None,
         act_order: bool = False, exact: bool | None = None) -> PackedWeight:
    """Error-feedback packing of float w (R, K) given the damped Hessian (K, K) of its inputs.

    fixed: a packing of w in this format whose row scales and group parameters are kept (e.g. a
    source grid's, `grid.grid_pack`): only the codes are chosen, with error feedback, so the
    dequantisation unit's INT8 rounding of the grid is spread where the inputs least see it.
    act_order: quantise the columns in order of decreasing Hessian diagonal (the inputs that
    carry most first, GPTQ's "act order"), each group's parameters chosen beforehand from the
    weights as given (static groups); else column by column, each group's parameters chosen
    when the quantiser reaches it.
    exact: the packing runs on the exact group arithmetic (`PackedWeight.exact`; dense, below
    8 bits): codes, group parameters and the errors fed back are those of (q M + B) / 256, not
    of the unit's INT8; None: as `fixed`, else False."""
    check_bits(bits, group)
    if exact is None:
        exact = bool(fixed is not None and fixed.exact)
    if exact and (bits == 8 or mask is not None):
        raise CompileError("exact group arithmetic is for dense weights below 8 bits")
    w = np.asarray(w, np.float64)
    r, k = w.shape
    if bits < 8 and k % group:
        raise CompileError(f"{bits}-bit weights in groups of {group} need K ({k}) to be a multiple")
    kept = np.ones((r, k), bool) if mask is None else np.asarray(mask, bool)
    if fixed is not None and (fixed.bits, fixed.group, fixed.shape) != (bits, group, (r, k)):
        raise CompileError(f"fixed group parameters of a {fixed.bits}-bit/{fixed.group} "
                           f"{fixed.shape} weight cannot pack a {bits}-bit/{group} {(r, k)} one")
    scale = row_scale(w, kept) if fixed is None else fixed.scale
    W = w / scale[:, None]                                # INT8 units, updated in place
    hessian = np.asarray(hessian, np.float64)
    hd = np.diag(hessian)
    ng = k // group if bits < 8 else 0
    if fixed is not None and bits < 8:                  # the given group parameters, kept
        mult, offset = fixed.mult.astype(np.int64), fixed.offset.astype(np.int64)
    else:                                               # chosen group by group (below)
        mult, offset = np.zeros((r, ng), np.int64), np.zeros((r, ng), np.int64)
    # the column order: as given, or by decreasing Hessian diagonal with static groups
    order = np.argsort(-hd, kind="stable") if act_order else np.arange(k)
    static = act_order and bits < 8 and fixed is None
    if static:
        for gi in range(ng):
            sl = slice(gi * group, (gi + 1) * group)
            mult[:, gi], offset[:, gi] = group_params(W[:, sl], kept[:, sl], bits, hd[sl],
                                                      exact)
    W, kept_o = W[:, order], kept[:, order]
    U = _inverse_hessian_factor(hessian[np.ix_(order, order)])
    q = np.zeros((r, k), np.uint8)                      # in the quantisation order
    bs = max(block, group if bits < 8 else 1)
    for b0 in range(0, k, bs):
        b1 = min(k, b0 + bs)
        Wb = W[:, b0:b1].copy()
        Err = np.zeros_like(Wb)
        Ub = U[b0:b1, b0:b1]
        for j in range(b1 - b0):
            col = b0 + j
            if bits < 8 and col % group == 0 and fixed is None and not static:
                gi = col // group
                sl = slice(j, j + group)
                mult[:, gi], offset[:, gi] = group_params(Wb[:, sl], kept[:, col:col + group],
                                                          bits, hd[col:col + group], exact)
            x = Wb[:, j]
            if bits == 8:
                qc = np.clip(np.rint(x), -WMAX, WMAX)
                v = qc
                qc = qc.astype(np.int64).astype(np.uint8)
            else:
                gi = order[col] // group
                qc, v = nearest(x[:, None], mult[:, gi], offset[:, gi], bits, exact)
                qc, v = qc[:, 0], v[:, 0]
            keep = kept_o[:, col]
            v = np.where(keep, v, 0.0)
            q[:, col] = np.where(keep, qc, 0)
            e = (x - v) / Ub[j, j]
            Wb[:, j + 1:] -= np.outer(e, Ub[j, j + 1:])
            Err[:, j] = e
        W[:, b1:] -= Err @ U[b0:b1, b1:]
    q[:, order] = q.copy()                              # back to the weight's column order
    if bits == 8:
        return PackedWeight(8, group, q, None, None, scale,
                            None if block_n is None else np.asarray(block_n, np.uint8), mask)
    return PackedWeight(bits, group, q, mult.astype(np.uint16), offset.astype(np.int16), scale,
                        None if block_n is None else np.asarray(block_n, np.uint8), mask, exact)
