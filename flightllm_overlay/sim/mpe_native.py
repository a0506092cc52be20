"""The MPE's calls into its native kernels (`fllm_mpe`, `fllm_mpe_grouped`, `fllm_mpe_codes`, `fllm_mpe_epilogue` of sim/native_mpe.cpp): ctypes signatures and the operands' addresses."""
from __future__ import annotations

import ctypes

import numpy as np

from . import native
from .native import address

#: Processed rows from which an MPE takes FP32 BLAS for its product (then the native epilogue):
#: BLAS (multithreaded, FP32 FMA) beats the INT8 kernel there (benchmarks in the commit log).
BLAS_ROWS = 48

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {"fllm_mpe": [_P, _I, _P, _I, _P, _I, _P, _I, ctypes.c_int, _P, _P, _I, _I, _I],
               "fllm_mpe_grouped": [_P, _I, _P, _I, _P, _I, _P, _I, _I, _P, _I, ctypes.c_int,
                                    _P, _P, _I, _I, _I],
               "fllm_mpe_codes": [_P, _I, _P, _I, _P, _I, _P, _I, _I, _P, _I, _I, _P, _P, _I,
                                  _I, _I],
               "fllm_mpe_epilogue": [_P, _P, _I, _P, _I, _P, _P, _I, _I]}


def kernels():
    """{name: ctypes function} of the MPE's kernels, or None when the native kernels are off
    or unavailable."""
    return native.functions(_SIGNATURES)


def _rows(live):
    return (None, 0) if live is None else (address(live), len(live))


def _scales(s_bytes, s_offset):
    return None if s_bytes is None else address(s_bytes) + s_offset


def mpe(fns, a, a_scale, live, w_bytes, w_offset, w_stride, wt, s_bytes, s_offset, out,
        n, k) -> bool:
    """out[rows] = the MPE of INT8 activations `a` (m, k) and the INT8 weights at
    w_bytes[w_offset:] ((n, k) rows, or (k, n) when `wt`, row stride w_stride bytes), the FP32
    weight scales at s_bytes[s_offset:] (s_bytes None: none); rows: `live`, or all.  False
    when a result is a NaN: the numpy definition must then redo the instruction."""
    m = a.shape[0]
    return fns["fllm_mpe"](address(a), a.strides[0], address(a_scale), m, *_rows(live),
                           address(w_bytes) + w_offset, w_stride, wt,
                           _scales(s_bytes, s_offset), address(out), out.strides[0], n, k) == 0


def mpe_grouped(fns, a, a_scale, exps, group, live, w_bytes, w_offset, w_stride, wt, s_bytes,
                s_offset, out, n, k) -> bool:
    """`mpe` with shared-exponent activation groups: `a_scale` the rows' scales / 128 (float32,
    m), `exps` (m, >= k/group) uint8 exponent bytes, `group` columns each."""
    m = a.shape[0]
    return fns["fllm_mpe_grouped"](address(a), a.strides[0], address(a_scale), m, *_rows(live),
                                   address(exps), exps.strides[0], group,
                                   address(w_bytes) + w_offset, w_stride, wt,
                                   _scales(s_bytes, s_offset), address(out), out.strides[0],
                                   n, k) == 0


def mpe_codes(fns, a, a_scale, exps, agroup, live, w_bytes, w_offset, w_stride, group, s_bytes,
              s_offset, out, n, k) -> bool:
    """`mpe` on rows of codes and their groups' (M, B) (`wcodes`, groups of `group` columns) at
    w_bytes[w_offset:], w_stride apart: `a_scale` the rows' scales (/ 128 with agroup, float32,
    m), `exps` (m, >= k/agroup) uint8 exponent bytes or None (one scale per row)."""
    m = a.shape[0]
    return fns["fllm_mpe_codes"](address(a), a.strides[0], address(a_scale), m, *_rows(live),
                                 None if exps is None else address(exps),
                                 0 if exps is None else exps.strides[0], agroup,
                                 address(w_bytes) + w_offset, w_stride, group,
                                 _scales(s_bytes, s_offset), address(out), out.strides[0],
                                 n, k) == 0


def epilogue(fns, acc, a_scale, live, s_bytes, s_offset, out) -> bool:
    """out[rows] = the MPE epilogue of `acc`, fp32(acc) of the processed rows (float32, one
    row each); the other operands as for `mpe`."""
    acc = np.ascontiguousarray(acc, np.float32)
    m, n = out.shape
    return fns["fllm_mpe_epilogue"](acc.ctypes.data, address(a_scale), m, *_rows(live),
                                    _scales(s_bytes, s_offset), address(out),
                                    out.strides[0], n) == 0
