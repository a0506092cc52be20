"""Source grids: weights already on a k-bit group grid (GGUF Q4_0/Q4_1/Q2_K..Q4_K) kept through the dequantisation unit.

A GGUF checkpoint dequantised to float still sits on its grid: in each group of `group`
consecutive input columns of a row, every weight is ``low + step * q`` with an integer code
``0 <= q < 2**bits``.  `find_grid` recovers (codes, step, low) from the float weights (group
smoothing and row scaling keep a grid, scaled; per-channel smoothing does not), and `grid_pack`
keeps those codes in the device format: the dequantisation unit's (M, B) per group are
``256 * step / s`` and ``256 * low / s`` in units of the row scale ``s``, so the unit's output is
the source weight rounded to INT8 (the only loss: the INT8 target; (M, B) hold the grid to
1/512 of an INT8 step).  On the MPE's exact group arithmetic (`PackedWeight.exact`, ISA
`wcodes`: dense, below 8 bits) the device computes with (q M + B) / 256 unrounded, so the grid
is held to (M, B)'s fixed point: each weight within (q + 1) / 512 of an INT8 unit of its row
(`fixed_point_bound`).  `grid_error` says how close that is, per linear.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec.wformat import BITS, SHIFT, WMAX, PackedWeight, check_bits

#: a weight is on its group's grid when (w - low) / step is within TOL of an integer
TOL = 1e-3
#: "lossless": every kept weight reproduced within this fraction of its group's step (on the
#: exact group arithmetic: within (M, B)'s fixed point, `fixed_point_bound`)
LOSSLESS = 1e-4


@dataclass
class SourceGrid:
    """codes (R, K) uint8; step, low (R, K/group) float64: w = low + step * code per group."""

    bits: int
    group: int
    codes: np.ndarray
    step: np.ndarray
    low: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.bits}b/{self.group}"

    def float(self) -> np.ndarray:
        r, k = self.codes.shape
        q = self.codes.reshape(r, k // self.group, self.group).astype(np.float64)
        return (self.low[..., None] + self.step[..., None] * q).reshape(r, k)


def _fit(w: np.ndarray, bits: int, group: int):
    """(codes, step, low) when every group of w lies on a grid of 2**bits levels, else None.

    Each group's grid spans [min, max] in L steps, L = 2**bits - 1 first (the usual case:
    Q4_1 uses codes 0 and 15 in every group), then fewer for groups that do not fit that way
    (a symmetric Q4_0 group whose codes miss one end)."""
    r, k = w.shape
    g = w.reshape(r, k // group, group).astype(np.float64)
    lo, hi = g.min(-1), g.max(-1)
    span = hi - lo
    levels = (1 << bits) - 1
    codes = np.zeros(g.shape, np.int64)
    step = np.zeros(lo.shape)
    done = span <= 1e-30 + 1e-7 * np.abs(lo)           # a constant group: code 0 everywhere
    for n in range(levels, 0, -1):
        todo = ~done
        if not todo.any():
            break
        st = np.where(todo, span, 1.0) / n
        x = (g - lo[..., None]) / st[..., None]
        c = np.rint(x)
        fits = todo & (np.abs(x - c).max(-1) <= TOL)
        codes[fits] = c[fits]
        step[fits] = st[fits]
        done |= fits
    if not done.all():
        return None
    return codes.reshape(r, k).astype(np.uint8), step, lo


def find_grid(w, bit_choices=(2, 3, 4), group_choices=(128, 64, 32, 16)) -> SourceGrid | None:
    """The coarsest (fewest bits, largest group) k-bit group grid that all of w lies on, or None.

    A quick check on the first rows rejects most candidates before the whole matrix is fitted."""
    w = np.asarray(w, np.float32)
    r, k = w.shape
    for group in sorted(group_choices, reverse=True):
        if k % group:
            continue
        for bits in sorted(b for b in bit_choices if b < 8):
            check_bits(bits, group)
            if _fit(w[:8], bits, group) is None:
                continue
            fit = _fit(w, bits, group)
            if fit is not None:
                return SourceGrid(bits, group, *fit)
    return None


def grid_pack(grid: SourceGrid, mask=None, block_n=None, exact: bool = False) -> PackedWeight:
    """The grid's own codes in the device format (pruned weights: code 0, masked out).

    Row scale s = max |kept weight| / 127; per group M = rint(256 step / s), B = rint(256 low / s),
    so the dequantisation unit's INT8 is the source weight rounded to the row's INT8 grid; with
    `exact` (dense: the exact group arithmetic) the device computes with the source weight to
    (M, B)'s fixed point."""
    check_bits(grid.bits, grid.group)
    w = grid.float()
    kept = np.ones(w.shape, bool) if mask is None else np.asarray(mask, bool)
    amax = np.abs(np.where(kept, w, 0.0)).max(1)
    scale = np.where(amax > 0, amax / WMAX, 1.0).astype(np.float32)
    s = scale.astype(np.float64)[:, None]
    mult = np.clip(np.rint(grid.step / s * (1 << SHIFT)), 0, 65535).astype(np.uint16)
    offset = np.clip(np.rint(grid.low / s * (1 << SHIFT)), -32768, 32767).astype(np.int16)
    q = np.where(kept, grid.codes, 0).astype(np.uint8)
    return PackedWeight(grid.bits, grid.group, q, mult, offset, scale,
                        None if block_n is None else np.asarray(block_n, np.uint8),
                        None if mask is None else kept, exact)


def fixed_point_bound(q: np.ndarray) -> np.ndarray:
    """The most, in INT8 units of the row, that (q M + B) / 256 can miss a grid weight of code q
    when M and B are the grid's step and low rounded to the fixed point (each off by at most
    1/2 of 1/256): (q + 1) / 512."""
    return (np.asarray(q, np.float64) + 1) / (2 << SHIFT)


def grid_error(grid: SourceGrid, pw: PackedWeight) -> dict:
    """How exactly `pw` holds the grid on its kept weights: rms and max error in units of each
    group's step, the share of weights reproduced exactly, and `lossless` (all so).  Reproduced
    exactly: within LOSSLESS of the step; on the exact group arithmetic (`pw.exact`), within
    (M, B)'s fixed point (`fixed_point_bound` of the code the weight has)."""
    w = grid.float()
    kept = np.ones(w.shape, bool) if pw.mask is None else pw.mask
    step = np.repeat(np.where(grid.step > 0, grid.step, 1.0), grid.group, axis=1)
    diff = np.abs(pw.float(np.float64) - w)
    err = (diff / step)[kept]
    if pw.exact:        # (a float64 hair of the weight's size over the bound is still within)
        s = pw.scale.astype(np.float64)[:, None]
        held = (diff <= fixed_point_bound(pw.q) * s + 1e-12 * (np.abs(w) + s))[kept]
    else:
        held = err <= LOSSLESS
    return {"grid": grid.name, "rms_steps": float(np.sqrt(np.mean(err ** 2))),
            "max_steps": float(err.max()), "exact": float(np.mean(held)),
            "lossless": bool(held.all())}


def supported(grid: SourceGrid | None) -> bool:
    return grid is not None and grid.bits in BITS and grid.bits < 8
