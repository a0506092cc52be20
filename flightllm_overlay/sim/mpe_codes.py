"""The MPE on an operand of codes with exact group arithmetic (`wcodes`, docs/isa.md): rows of codes each followed by its groups' (M, B), native for few rows, else the numpy definition (spec/arithmetic.py)."""
from __future__ import annotations

import numpy as np

from ..spec import arithmetic as U
from ..spec import isa
from ..spec.semantics import code_row_bytes
from . import mpe_native as _mpe_native
from .core_buffers import _F32, _region


def operand_end(wbuf, f, n: int) -> int:
    """End of the n code rows (codes and parameters) at `w_addr`, checked against wbuf."""
    row = code_row_bytes(f)
    return _region(wbuf, f.get("w_addr", 0), n, row, f.get("w_stride", 0) or row,
                   "MPE code rows (codes and group parameters)")


def execute(ctx, core, f, operands, live, scales, agroup: int, lib) -> None:
    """out[rows] of an MM/MV on codes: `operands` as `mpe_operands` gives them (a_scale the
    grouped scales' bytes with `agroup`), `scales` the weight scales' (bytes, offset), `lib`
    the native kernels (None: the numpy definition)."""
    m, n, k, a, a_scale, out, _, _, _, w_end, _, w_addr, _, _, _ = operands
    group = isa.code_group(f["wcodes"])
    row = code_row_bytes(f)
    stride = f.get("w_stride", 0) or row
    data, off = ctx._wbuf_bytes(core, w_addr, w_end)
    if agroup:
        row_scale, exps = U.split_group_scales(a_scale, agroup, k)
    else:
        row_scale, exps = a_scale, None
    s_bytes, s_off = scales
    if lib is not None and (m if live is None else len(live)) < _mpe_native.BLAS_ROWS:
        s_native = np.ascontiguousarray(row_scale / np.float32(128) if agroup else row_scale, _F32)
        e_rows = np.ascontiguousarray(np.asarray(a_scale)[:, 4:]) if agroup else None
        if _mpe_native.mpe_codes(lib, a, s_native, e_rows, agroup, live, data, off, stride,
                                 group, s_bytes, s_off, out, n, k):
            return
    rows = np.ndarray((n, row), np.uint8, buffer=data, offset=off, strides=(stride, 1))
    gp = np.ascontiguousarray(rows[:, k:]).view(np.int16).reshape(n, k // group, 2)
    w_int = U.code_weights(rows[:, :k], gp[..., 0].view(np.uint16), gp[..., 1], group)
    w_scale = None if s_bytes is None else s_bytes[s_off:s_off + 4 * n].view(_F32)
    pick = (lambda x: x) if live is None else (lambda x: None if x is None else x[live])
    result = U.mpe_codes(pick(a), w_int, pick(row_scale), w_scale, pick(exps), agroup)
    if live is None:
        out[...] = result
    else:
        out[live] = result
