"""The MPE's weight operands as the simulator reads them: the weight buffer's bytes (a snapshot's when the range is one), sparse tiles expanded by their N:16 codes, FP32 forms kept per snapshot."""
from __future__ import annotations

import numpy as np

from ..errors import ProgramError
from ..spec import wformat as WF
from .core_buffers import _F32, _I8, _region

#: A snapshot's derived FP32 weights, used once and not kept (see `WeightReads._weights_t`).
_USED_ONCE = object()


class WeightReads:
    """Weight reads of the functional simulator's run context (`functional._RunContext`, which
    provides `sim`, the simulator whose scratch array the FP32 conversions reuse)."""

    def _weight_scale_bytes(self, core, addr, n):
        """(uint8 array, offset) of an MPE's n FP32 weight scales in the weight buffer."""
        if addr % 4:                    # the lazy path must check what _array checks
            raise ProgramError(f"MPE weight scales: address {addr:#x} / stride {4 * n} "
                               f"not aligned to 4-byte float32 elements")
        _region(core.bufs["wbuf"], addr, 1, 4 * n, 4 * n, "MPE weight scales")
        return self._wbuf_bytes(core, addr, addr + 4 * n)

    @staticmethod
    def _wbuf_bytes(core, start, end):
        """(uint8 array, offset) holding the weight buffer's bytes [start, end): the snapshot
        of a lazy range, else the buffer itself (materialised)."""
        tag = core.find_tag(start, end)
        if tag is None:
            core.materialize(start, end)
            return core.bufs["wbuf"], start
        t0, snap = tag
        return snap.data, start - t0

    def _sparse_weights_t(self, core, f, n, k, int8=False):
        """(K, N) float32 weights of a sparse MPE: kept INT8 values from wbuf placed by the
        N:16 codes (fsb buffer) and 4-bit indices (meta buffer), as the sparse MUX reads them;
        `int8`: (N, K) INT8 instead (for the native kernels)."""
        nnz, w_addr = f.get("nnz", 0), f.get("w_addr", 0)
        fa, ma, ml = f.get("fsb_addr", 0), f.get("meta_addr", 0), f.get("meta_len", 0)
        nb = (n // 16) * (k // 16)
        _region(core.bufs["fsb"], fa, 1, nb, 0, "sparse MPE codes (fsb)")
        _region(core.bufs["meta"], ma, 1, ml, 0, "sparse MPE indices (meta)")
        fsb = core.bufs["fsb"][fa:fa + nb].copy()
        meta = core.bufs["meta"][ma:ma + ml].copy()
        kept = int(fsb.astype(np.int64).sum()) if np.isin(fsb, WF.FSB_CODES).all() else -1
        if kept != nnz:
            raise ProgramError(f"sparse MPE: the N:16 codes at fsb {fa:#x} keep "
                               f"{'invalid' if kept < 0 else 16 * kept} weights, but nnz={nnz} "
                               f"(x16); the operand does not match the tile the LD brought in")
        end = _region(core.bufs["wbuf"], w_addr, 1, 16 * nnz, 0, "sparse MPE weights")
        tag = core.find_tag(w_addr, end)
        key = ("sparse", n, k, fsb.tobytes(), meta.tobytes())
        form = (lambda d: d) if int8 else (lambda d: np.ascontiguousarray(d.T.astype(_F32)))
        if tag is not None:
            t0, snap = tag
            key = (w_addr - t0, int8) + key
            w_t = snap.derived.get(key)
            if w_t is None:
                vals = snap.data[w_addr - t0:end - t0].view(_I8)
                w_t = snap.derived[key] = form(WF.expand_sparse(vals, fsb, meta, n, k))
            return w_t
        core.materialize(w_addr, end)
        vals = core.bufs["wbuf"][w_addr:end].view(_I8)
        return form(WF.expand_sparse(vals, fsb, meta, n, k))

    def _weights_t(self, core, addr, end, rows, cols, stride, wt, keep=True):
        """(K, N) float32 weights for the MPE, from a snapshot when the range is one.

        A snapshot keeps the FP32 matrix from its second use on (every decode step reuses
        it) when `keep`; its first use, usually the prefill's, and every use when not `keep`
        (the native kernels serve decode from the INT8 bytes) convert into the simulator's
        scratch array, so that the first token does not wait for FP32 copies of every weight
        (4 bytes of fresh memory per weight).  The matrix is only read by the product that
        follows."""
        tag = core.find_tag(addr, end)
        if tag is not None:
            t0, snap = tag
            key = (addr - t0, rows, cols, stride, wt)
            w_t = snap.derived.get(key)
            if w_t is not None and w_t is not _USED_ONCE:
                return w_t
            raw = np.ndarray((rows, cols), _I8, buffer=snap.data, offset=addr - t0,
                             strides=(stride, 1))
            # converted in the stored layout: a transposed view is as good to the FP32
            # product (exact, so the order of its sums does not matter) and saves a copy
            if w_t is _USED_ONCE and keep:
                w = raw.astype(_F32)
                w_t = snap.derived[key] = w if wt else w.T
                return w_t
            if keep:
                snap.derived[key] = _USED_ONCE
            w = self._scratch_f32(rows, cols)
            np.copyto(w, raw)
            return w if wt else w.T
        core.materialize(addr, end)
        raw = np.ndarray((rows, cols), _I8, buffer=core.bufs["wbuf"], offset=addr,
                         strides=(stride, 1))
        return (raw if wt else raw.T).astype(_F32)

    def _scratch_f32(self, rows, cols):
        """A (rows, cols) float32 array in memory reused from call to call (grown as needed)."""
        scratch = self.sim._scratch
        if scratch.size < rows * cols:
            scratch = self.sim._scratch = np.empty(rows * cols, _F32)
        return scratch[:rows * cols].reshape(rows, cols)
