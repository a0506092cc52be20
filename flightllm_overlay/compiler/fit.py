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
    kv = a.n_layers * a.n_kv_heads * ctx * 2 * (a.head_dim + 4)     # INT8 K, V + FP32 scales
    owned = sum(len(c) for c in target.core_channels)
    return Footprint(weights, kv, owned * target.hbm_channel_bytes,
                     target.hbm_channels * target.hbm_channel_bytes)


def check_fits(qm, target, ctx: int) -> Footprint:
    """Raise ModelTooLargeError with the numbers if the model cannot fit the target's HBM."""
    fp = footprint(qm, target, ctx)
    if fp.needed > fp.available:
        gib = 2 ** 30
        owned = sum(len(c) for c in target.core_channels)
        more = ("" if owned == target.hbm_channels else
                f"; this target's cores own {owned} of its {target.hbm_channels} pseudo-channels "
                f"(dealing all of them gives {target.hbm_channels * target.hbm_channel_bytes / gib:.2f} GiB)")
        raise ModelTooLargeError(
            f"{a_name(qm)} does not fit one {target.board}: it needs {fp.needed / gib:.2f} GiB of "
            f"HBM ({fp.weights / gib:.2f} GiB weights + {fp.kv_cache / gib:.2f} GiB KV cache at "
            f"context {ctx}) and the target's cores own {fp.available / gib:.2f} GiB{more}; it "
            f"would take {fp.cards} cards of {fp.card / gib:.0f} GiB, which this toolkit does not "
            f"split a model over. Use fewer weight bits, a shorter context, or a smaller model.")
    return fp


def a_name(qm) -> str:
    return getattr(qm.args, "name", "") or "the model"
