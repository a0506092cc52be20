"""The MPE's call into its native kernel (`fllm_mpe` of sim/native_mpe.cpp): the ctypes signature and the operands' addresses."""
from __future__ import annotations

import ctypes

import numpy as np

from . import native

_P, _I = ctypes.c_void_p, ctypes.c_int64
_ARGTYPES = [_P, _I, _P, _I, _P, _I, _P, _I, ctypes.c_int, _P, _P, _I, _I, _I]
_ADDRESSES = {}          # id(array) -> (array, address of its first byte)


def address(x: np.ndarray) -> int:
    """The address of x's first byte (cached: the simulator's buffers, snapshots and operand
    views live long and are asked for again at every instruction)."""
    hit = _ADDRESSES.get(id(x))
    if hit is not None and hit[0] is x:
        return hit[1]
    if len(_ADDRESSES) > 100_000:
        _ADDRESSES.clear()
    addr = x.ctypes.data
    _ADDRESSES[id(x)] = (x, addr)
    return addr


def kernel():
    """fllm_mpe with its signature, or None when the native kernels are off or unavailable."""
    lib = native.library()
    if lib is None:
        return None
    fn = lib.fllm_mpe
    if fn.argtypes is None:
        fn.argtypes, fn.restype = _ARGTYPES, ctypes.c_int
    return fn


def mpe(fn, a, a_scale, live, w_bytes, w_offset, w_stride, wt, s_bytes, s_offset, out,
        n, k) -> bool:
    """out[rows] = the MPE of INT8 activations `a` (m, k) and the INT8 weights at
    w_bytes[w_offset:] ((n, k) rows, or (k, n) when `wt`, row stride w_stride bytes), the FP32
    weight scales at s_bytes[s_offset:] (s_bytes None: none); rows: `live`, or all.  False
    when a result is a NaN: the numpy definition must then redo the instruction."""
    m = a.shape[0]
    live_ptr, nlive = (None, 0) if live is None else (address(live), len(live))
    s_ptr = None if s_bytes is None else address(s_bytes) + s_offset
    return fn(address(a), a.strides[0], address(a_scale), m, live_ptr, nlive,
              address(w_bytes) + w_offset, w_stride, wt, s_ptr, address(out), out.strides[0],
              n, k) == 0
