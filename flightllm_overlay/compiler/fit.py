"""Does a model fit the target's HBM?  The bytes it needs against the bytes the target's cores own.

`check_fits` runs before placement, so a model too large for one card fails with the numbers
(bytes needed, bytes available, the cards it would take) instead of a channel overflow deep in
the layout.  The estimate counts the weights in their device formats and the KV cache at the
compiled context; tables, norms and I/O (well under 1% for 7B-class models) are left out, so a
model that passes can still overflow one channel by a little: the layout then names the channel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CompileError
from .placement import k_planes


class ModelTooLargeError(CompileError):
    """The model's weights and KV cache need more HBM than the target's cores own."""


def weight_bytes(w) -> int:
    """HBM bytes of one weight in its device format: (INT8, FP32 scales), or a packed or
    shape-only weight."""
    if isinstance(w, tuple):
        q, s = w
        if hasattr(q, "nbytes_of"):             # packed or shape-only: scales included
            return int(q.nbytes_of())
        return int(np.asarray(q).nbytes + np.asarray(s).nbytes)
    return int(w.nbytes_of())


@dataclass(frozen=True)
class Footprint:
    weights: int
    kv_cache: int
    available: int
    card: int                      # HBM bytes of one card (all its pseudo-channels)

    @property
    def needed(self) -> int:
        return self.weights + self.kv_cache

    @property
    def cards(self) -> int:
        return -(-self.needed // self.card)


def footprint(qm, target, ctx: int) -> Footprint:
    a = qm.args
    weights = sum(weight_bytes(w) for layer in qm.layers for w in layer.values()
                  if isinstance(w, tuple) or hasattr(w, "nbytes_of"))
    weights += weight_bytes(qm.lm_head)
    # INT8 K (two planes when k is wide) and V, and their FP32 scales
    planes = k_planes(getattr(qm, "wide_points", ())) + 1
    kv = a.n_layers * a.n_kv_heads * ctx * planes * (a.head_dim + 4)
    owned = sum(len(c) for c in target.core_channels)
    return Footprint(weights, kv, owned * target.hbm_channel_bytes,
                     target.hbm_channels * target.hbm_channel_bytes)


def check_fits(qm, target, ctx: int) -> Footprint:
    """Raise ModelTooLargeError with the numbers if the model cannot fit the target's HBM."""
    fp = footprint(qm, target, ctx)
    if fp.needed > fp.available:
        gib = 2 ** 30
        owned = sum(len(c) for c in target.core_channels)
        if fp.needed <= fp.card:
            fix = (f"it fits one card with all {target.hbm_channels} pseudo-channels dealt over "
                   f"the cores ({fp.card / gib:.2f} GiB; this target's cores own {owned}): use a "
                   f"target whose core_channels cover them all, with schedule='stripe_all+"
                   f"balance_channels'")
        else:
            fix = (f"it would take {fp.cards} cards of {fp.card / gib:.0f} GiB, which this toolkit "
                   f"does not split a model over; use fewer weight bits, a shorter context or a "
                   f"smaller model")
        raise ModelTooLargeError(
            f"{a_name(qm)} does not fit the HBM of one {target.board}: it needs "
            f"{fp.needed / gib:.2f} GiB ({fp.weights / gib:.2f} GiB weights + "
            f"{fp.kv_cache / gib:.2f} GiB KV cache at context {ctx}) and the target's cores own "
            f"{fp.available / gib:.2f} GiB; {fix}")
    return fp


def a_name(qm) -> str:
    return getattr(qm.args, "name", "") or "the model"
