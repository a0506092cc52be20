"""Record the MM/MV instructions a simulated run executes, with the operands the simulator's MPE reads, as MPEOps for the RTL MPE.

``with capture() as ops: session.run(...)`` appends one ``MPEOp`` per MPE instruction: the INT8
activations and either the dense INT8 weights or, for an N:16 operand, the kept values, codes and
indices exactly as they sit in the core's buffers.  It wraps the functional simulator's MPE
handler and the ``units.mpe_fast`` call it makes; inside the block the simulator runs its
reference executor (the fast path's prepared steps do not go through the handler) with the MPE's
native kernels off (they do not go through ``mpe_fast``); results are unchanged.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..sim import functional as F
from ..sim import mpe_native
from ..spec import arithmetic as U
from ..hw.mpe_model import MPEOp


@contextmanager
def capture(limit: int | None = None):
    """Collect the MPE instructions run inside the block (at most ``limit``)."""
    ops: list[MPEOp] = []
    state = {"op": None, "sparse": None}
    orig_mpe, orig_sparse, orig_fast = F._RunContext.mpe, F._RunContext._sparse_weights_t, U.mpe_fast
    orig_kernels, orig_plan = mpe_native.kernels, F.FunctionalSimulator._plan

    def mpe(self, core, f, cc, op):
        state["op"], state["sparse"] = op, None
        return orig_mpe(self, core, f, cc, op)

    def sparse(self, core, f, n, k):
        w_t = orig_sparse(self, core, f, n, k)
        nnz, w_addr = f.get("nnz", 0), f.get("w_addr", 0)
        fa, ma, ml = f.get("fsb_addr", 0), f.get("meta_addr", 0), f.get("meta_len", 0)
        core.materialize(w_addr, w_addr + 16 * nnz)
        state["sparse"] = (core.bufs["wbuf"][w_addr:w_addr + 16 * nnz].view(np.int8).copy(),
                           core.bufs["fsb"][fa:fa + (n // 16) * (k // 16)].copy(),
                           core.bufs["meta"][ma:ma + ml].copy())
        return w_t

    def fast(a, w_t, a_scale, w_scale):
        if state["op"] is not None and (limit is None or len(ops) < limit):
            k, n = w_t.shape
            a8 = np.asarray(a).astype(np.int8)
            if state["sparse"] is not None:
                vals, fsb, meta = state["sparse"]
                ops.append(MPEOp(state["op"], a8, n, k, values=vals, fsb=fsb, meta=meta))
            else:
                ops.append(MPEOp(state["op"], a8, n, k, w=np.asarray(w_t).T.astype(np.int8)))
        state["op"] = None
        return orig_fast(a, w_t, a_scale, w_scale)

    F._RunContext.mpe, F._RunContext._sparse_weights_t, U.mpe_fast = mpe, sparse, fast
    mpe_native.kernels = lambda: None
    F.FunctionalSimulator._plan = lambda self, ctx, memory, streams: None
    try:
        yield ops
    finally:
        F._RunContext.mpe, F._RunContext._sparse_weights_t, U.mpe_fast = orig_mpe, orig_sparse, orig_fast
        mpe_native.kernels, F.FunctionalSimulator._plan = orig_kernels, orig_plan
