"""The MPE with shared-exponent activation groups (`agroup`, docs/isa.md): its operand scales and its work, native for few rows, else the numpy definition (spec/arithmetic.py)."""
from __future__ import annotations

import numpy as np

from ..spec import arithmetic as U
from . import mpe_native as _mpe_native
from .core_buffers import _F32, _I8, _array


def scales_view(abuf, f, m: int, k: int, group: int) -> np.ndarray:
    """(m, W) uint8 rows at `a_scale`: each row's FP32 scale, then its groups' exponent bytes
    (the FP32 view checks the alignment and the region, as for one scale per row)."""
    width = U.group_scale_bytes(group, k)
    return _array(abuf, f.get("a_scale", 0), m, width // 4, _F32, width,
                  "MPE input scales").view(np.uint8)


def execute(ctx, core, operands, live, w_t, scales, group: int, lib) -> None:
    """out[rows] of a grouped MM/MV: `operands` as `mpe_operands` gives them (a_scale the
    `scales_view`), `w_t` None (dense weights in wbuf), the (N, K) INT8 or (K, N) float32 dense
    form of sparse ones; `scales` the weight scales' (bytes, offset)."""
    m, n, k, a, a_scale, out, rows, cols, w_stride, w_end, _, w_addr, wt, _, _ = operands
    m_live = m if live is None else len(live)
    if lib is not None and m_live < _mpe_native.BLAS_ROWS and (w_t is None or w_t.dtype == _I8):
        row_scale = np.ascontiguousarray(a_scale[:, :4]).view(_F32)[:, 0] / np.float32(128)
        weights = ((*ctx._wbuf_bytes(core, w_addr, w_end), w_stride, wt) if w_t is None
                   else (w_t.view(np.uint8).reshape(-1), 0, k, 0))
        if _mpe_native.mpe_grouped(lib, a, row_scale, np.ascontiguousarray(a_scale[:, 4:]),
                                   group, live, *weights, *scales, out, n, k):
            return
        if w_t is not None:             # a NaN: the numpy definition redoes it
            w_t = np.ascontiguousarray(w_t.T.astype(_F32))
    if w_t is None:
        w_t = ctx._weights_t(core, w_addr, w_end, rows, cols, w_stride, wt, keep=lib is None)
    s_bytes, s_off = scales
    w_scale = None if s_bytes is None else s_bytes[s_off:s_off + 4 * n].view(_F32)
    a_live, s_live = (a, a_scale) if live is None else (a[live], a_scale[live])
    row_scale, exps = U.split_group_scales(s_live, group, k)
    result = U.mpe_grouped(a_live, w_t, row_scale, exps, w_scale, group)
    if live is None:
        out[...] = result
    else:
        out[live] = result
