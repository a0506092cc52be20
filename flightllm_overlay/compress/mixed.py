"""Mixed precision: per linear, the (bits, group) format under an average-bits budget, by calibrated output error.

Each linear's candidates are scored by round-to-nearest on its pruning mask (through the
arithmetic each will run on: the unit's INT8, or the exact group arithmetic): with the loss
sensitivity of its output rows (`fisher.output_fisher`, the default: `allocation='fisher'`) by
the predicted loss increase sum_r F_r dW_r H dW_r^T, comparable between linears; otherwise by
its relative output error tr(dW H dW^T) / tr(W H W^T).  The allocator picks one
candidate per linear minimising the summed error such that the average bits per kept weight
(code bits plus the 32 bits of each group's (M, B), counted exactly as packed; 8-bit weights carry
no group parameters) stay
within the budget: a Lagrangian sweep, then greedy upgrades into what budget is left.  By
default the budget counts code bits only (the usual "average bits"); with group_bits=True it
also counts the group parameters, which makes the group size a real trade-off.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CompileError
from ..spec.wformat import BITS, GROUPS
from .gptq import rtn

GROUP_PARAM_BITS = 32        # one uint16 multiplier + one int16 offset per group


def weight_bits(bits: int, group: int) -> float:
    """Bits per weight of a dense matrix: the code plus its share of the group parameters (a
    sparse matrix keeps the group parameters of its dense shape, so pays more per kept weight)."""
    return float(bits) if bits >= 8 else bits + GROUP_PARAM_BITS / group


def candidates(k: int, bit_choices, group_choices) -> list:
    """(bits, group) formats a linear with K inputs can take (group must divide K).

    When no allowed group divides K the linear stays INT8 (8, 0), as in the compiler's W4 pass.
    """
    out = []
    for b in sorted(set(bit_choices)):
        if b not in BITS:
            raise CompileError(f"weights of {b} bits are not supported; choose from {BITS}")
        if b == 8:
            out.append((8, 0))
            continue
        for g in sorted(set(group_choices)):
            if g not in GROUPS:
                raise CompileError(f"group size {g} is not supported; choose from {GROUPS}")
            if k % g == 0:
                out.append((b, g))
    return out or [(8, 0)]


@dataclass
class Option:
    bits: int
    group: int
    cost: float          # bits of codes and group parameters
    error: float         # relative output error
    kept: int            # weights kept


def score_options(w, hessian, mask, block_n, cands, group_bits: bool = False,
                  grid=None, fisher=None, exact_groups: bool = False) -> list:
    """An Option per candidate format for one linear (cost: code bits, plus the group
    parameters when group_bits).  grid: the weight's source grid (`grid.SourceGrid`), whose own
    format is scored with the grid's codes kept (`grid.grid_pack`) when that is better.
    fisher: (rows,) loss sensitivity of the output rows: the error is then the predicted loss
    increase sum_r fisher_r dW_r H dW_r^T; without it, the relative output error.
    exact_groups: the candidates below 8 bits of a dense linear are scored on the exact group
    arithmetic they will run on (`CompressionConfig.exact_for`, `PackedWeight.exact`)."""
    from .grid import grid_pack
    if fisher is None:
        w64 = w.astype(np.float64)
        energy = max(float(((w64 @ hessian) * w64).sum()), 1e-30)
    else:
        fisher = np.asarray(fisher, np.float64)

    def error(pw):
        d = (pw.float() - w).astype(np.float64)
        per_row = (d @ hessian) * d
        return float(per_row.sum()) / energy if fisher is None else float(per_row.sum(1) @ fisher)

    kept = w.size if mask is None else int(mask.sum())
    out = []
    for bits, group in cands:
        exact = exact_groups and bits < 8 and block_n is None
        pw = rtn(w, bits, group or 32, mask, block_n, exact)
        err = error(pw)
        if grid is not None and (bits, group) == (grid.bits, grid.group):
            err = min(err, error(grid_pack(grid, mask, block_n, exact)))
        lay = pw.layout()
        out.append(Option(bits, group, 8.0 * (lay["codes"] + group_bits * lay["groups"]),
                          err, kept))
    return out


def allocate(options: list, avg_bits: float) -> list:
    """Index of the chosen Option per linear so that sum(cost) / sum(kept) <= avg_bits.

    options: per linear, a list of Option.  Raises CompileError when
    even the cheapest formats exceed the budget.
    """
    kept = np.array([o[0].kept for o in options], np.float64)
    budget = avg_bits * kept.sum()
    cost = [np.array([x.cost for x in o]) for o in options]
    err = [np.nan_to_num(np.array([x.error for x in o], np.float64), nan=np.inf) for o in options]
    cheapest = sum(c.min() for c in cost)
    if cheapest > budget * (1 + 1e-9):
        floor = cheapest / kept.sum()
        raise CompileError(f"average weight bits {avg_bits:g} cannot be met: the cheapest "
                           f"formats allowed need {floor:.3f} bits per weight; raise the budget "
                           f"or allow fewer bits / larger groups")

    def pick(lam):
        return [int(np.argmin(e + lam * c)) for e, c in zip(err, cost)]

    def total(choice):
        return sum(c[i] for c, i in zip(cost, choice))

    lo, hi = 0.0, 1.0
    while total(pick(hi)) > budget:
        hi *= 10
        if hi > 1e30:
            break
    choice = pick(hi)
    if total(pick(lo)) <= budget:
        return pick(lo)
    for _ in range(100):
        mid = (lo + hi) / 2
        if total(pick(mid)) <= budget:
            hi = mid
        else:
            lo = mid
    choice = pick(hi)
    # greedy upgrades into the budget left: best error reduction per extra bit first
    spent = total(choice)
    while True:
        best = None
        for li, (c, e) in enumerate(zip(cost, err)):
            i = choice[li]
            for j in range(len(c)):
                extra, gain = c[j] - c[i], e[i] - e[j]
                if extra > 0 and gain > 0 and spent + extra <= budget:
                    if best is None or gain / extra > best[0]:
                        best = (gain / extra, li, j, extra)
        if best is None:
            if spent > budget * (1 + 1e-9):
                raise CompileError(f"bit allocation failed to meet {avg_bits:g} average bits "
                                   f"({spent / kept.sum():.3f}); this is a bug, please report it")
            return choice
        _, li, j, extra = best
        choice[li] = j
        spent += extra
