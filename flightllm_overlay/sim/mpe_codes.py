"""The MPE on an operand of codes with exact group arithmetic (`wcodes`, docs/isa.md): rows of codes each followed by its groups' (M, B), native for few rows, else the numpy definition (spec/arithmetic.py)."""
from __future__ import annotations

import ctypes

import numpy as np

from ..spec import arithmetic as U
from ..spec import isa
from ..spec.semantics import code_row_bytes
from . import native
from .core_buffers import _F32, _region
from .mpe_native import BLAS_ROWS
from .native import address

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURE = {"fllm_mpe_codes": [_P, _I, _P, _I, _P, _I, _P, _I, _I, _P, _I, _I, _P, _P, _I,
                                 _I, _I]}


def operand_end(wbuf, f, n: int) -> int:
    """End of the n code rows (codes and parameters) at `w_addr`, checked against wbuf."""
    row = code_row_bytes(f)
    return _region(wbuf, f.get("w_addr", 0), n, row, f.get("w_stride", 0) or row,
                   "MPE code rows (codes and group parameters)")


def execute(ctx, core, f, operands, live, scales, agroup: int) -> None:
    """out[rows] of an MM/MV on codes: `operands` as `mpe_operands` gives them (a_scale the
    grouped scales' bytes with `agroup`), `scales` the weight scales' (bytes, offset)."""
    m, n, k, a, a_scale, out, _, _, _, w_end, _, w_addr, _, _, _ = operands
    group = isa.WEIGHT_GROUPS[f["wcodes"] - 1]
    row = code_row_bytes(f)
    stride = f.get("w_stride", 0) or row
    data, off = ctx._wbuf_bytes(core, w_addr, w_end)
    if agroup:
        row_scale, exps = U.split_group_scales(a_scale, agroup, k)
    else:
        row_scale, exps = a_scale, None
    s_bytes, s_off = scales
    fns = native.functions(_SIGNATURE)
    if fns is not None and (m if live is None else len(live)) < BLAS_ROWS:
        s_native = np.ascontiguousarray(row_scale / np.float32(128) if agroup else row_scale, _F32)
        e_rows = np.ascontiguousarray(np.asarray(a_scale)[:, 4:]) if agroup else None
        if fns["fllm_mpe_codes"](
                address(a), a.strides[0], address(s_native), m,
                *((None, 0) if live is None else (address(live), len(live))),
                None if e_rows is None else address(e_rows),
                0 if e_rows is None else e_rows.strides[0], agroup,
                address(data) + off, stride, group,
                None if s_bytes is None else address(s_bytes) + s_off,
                address(out), out.strides[0], n, k) == 0:
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
