"""MISC instructions on the native kernels (sim/native_misc.cpp): one C call per instruction, numpy when a kernel declines.

`native_action` turns the operands `misc_unit.misc_action` bound for an instruction into an
action that calls the kernel with the views' addresses and strides computed once.  A kernel
returns non-zero, having written nothing, for inputs it leaves to the numpy definition (NaN,
infinities, codes numpy's INT8 cast would wrap); the numpy action then runs.
"""
from __future__ import annotations

import ctypes

import numpy as np

from . import native

_P, _I, _i, _f = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
_ROWS = (_I, _I, _P, _I)                  # rows, k, live, nlive
PROTOTYPES = {
    "fllm_misc_eltwise": (_i, _P, _I, _P, _I, _i, _P, _I, *_ROWS, _P),
    "fllm_misc_unary": (_i, _P, _I, _P, _I, *_ROWS),
    "fllm_misc_rmsnorm": (_P, _I, _P, _i, _f, _P, _I, *_ROWS, _P),
    "fllm_misc_layernorm": (_P, _I, _P, _I, _i, _f, _P, _I, *_ROWS),
    "fllm_misc_softmax": (_P, _I, _P, _I, _I, _I, _f, _i, _I, _I, _I, _I, _P, _I),
    "fllm_misc_rope": (_P, _I, _P, _I, _I, _P, _I, *_ROWS),
    "fllm_misc_quant": (_P, _I, _P, _I, _P, _P, _I, _I, _i, _i, *_ROWS),
    "fllm_misc_amax": (_P, _I, _P, *_ROWS),
    "fllm_misc_quant_groups": (_P, _I, _P, _I, _P, _I, _I, *_ROWS),
}
_KERNEL = {"eadd": "fllm_misc_eltwise", "emul": "fllm_misc_eltwise", "silu": "fllm_misc_unary",
           "relu": "fllm_misc_unary", "rmsnorm": "fllm_misc_rmsnorm",
           "layernorm": "fllm_misc_layernorm", "softmax": "fllm_misc_softmax",
           "rope": "fllm_misc_rope", "quant": "fllm_misc_quant", "amax": "fllm_misc_amax"}


def kernels():
    """{name: ctypes function} of the MISC kernels, or None when the library is unavailable."""
    return native.functions(PROTOTYPES)


def _rows(view) -> tuple | None:
    """(address, row stride in bytes) of a 2-D view whose rows are contiguous, else None."""
    if view.ndim != 2 or (view.shape[1] > 1 and view.strides[1] != view.itemsize):
        return None
    return native.address(view), view.strides[0]


def quant_groups_action(a, q, scales, group: int, live, fallback):
    """The native action of a quant with shared-exponent groups (`agroup`) over the views a
    (FP16 rows), q (INT8 rows), scales (uint8 rows), or None when no kernel applies;
    `fallback` is the numpy action (also run when the kernel declines: a non-finite value)."""
    kern = kernels()
    fn = None if kern is None else kern.get("fllm_misc_quant_groups")
    views = [_rows(v) for v in (a, q, scales)]
    if fn is None or any(v is None for v in views):
        return None
    (pa, sa), (pq, sq), (ps, ss) = views
    rows, k = a.shape
    lv = None if live is None else np.ascontiguousarray(live, dtype=np.int64)
    lp, nl = (None, 0) if lv is None else (lv.ctypes.data, len(lv))

    def action():
        if fn(pa, sa, pq, sq, ps, ss, group, rows, k, lp, nl):
            fallback()
    return action


def native_action(mop, f, ops: dict, rows: int, k: int, groups: int, pos: int, live, fallback):
    """The native action for MISC `mop` with the bound views `ops` (a, b, out, out2, table,
    given, gb), or None when no kernel applies; `fallback` is the numpy action."""
    kern = kernels()
    if kern is None:
        return None
    views = {name: _rows(v) for name, v in ops.items() if isinstance(v, np.ndarray)}
    if any(v is None for v in views.values()):
        return None
    a, as_ = views["a"]
    out = views.get("out", (None, 0))
    amax = views["out2"][0] if "out2" in views and mop in ("eadd", "emul", "rmsnorm") else None
    b_f32 = int(bool(f.get("b_f32", 0)))
    kernel = kern.get(_KERNEL.get(mop))
    if kernel is None:
        return None

    def args(k, pos, live):
        """The kernel's arguments for row length k, position pos and rows `live` (an int64
        array, alive while the kernel runs)."""
        lp, nl = (None, 0) if live is None else (live.ctypes.data, len(live))
        tail = (rows, k, lp, nl)
        if mop in ("eadd", "emul"):
            b, bs = views["b"]
            if ops["b"].shape[0] == 1 and rows > 1:
                bs = 0                                      # broadcast row
            return (int(mop == "emul"), a, as_, b, bs, b_f32, *out, *tail, amax)
        if mop in ("silu", "relu"):
            return (int(mop == "relu"), a, as_, *out, *tail)
        if mop == "rmsnorm":
            return (a, as_, views["b"][0], b_f32, ops["imm"], *out, *tail, amax)
        if mop == "layernorm":
            return (a, as_, *views["gb"], b_f32, ops["imm"], *out, *tail)
        if mop == "softmax":
            return (a, as_, *out, rows, k, ops["imm"], int(bool(f.get("causal", 0))), pos,
                    groups, f.get("blk_sink", 0), f.get("blk_win", 0), lp, nl)
        if mop == "rope":
            return (a, as_, *views["table"], ops["table"].shape[0], *out, *tail)
        if mop == "quant":
            given = views.get("given", (None, 0))
            n_given = ops["given"].shape[1] if ops.get("given") is not None else 0
            return (a, as_, *views["q"], views["scales"][0], *given, n_given,
                    int(bool(f.get("diffuse", 0))), int(bool(f.get("residual", 0))), *tail)
        return (a, as_, views["out2"][0], *tail)            # amax

    if live is not None:
        live = np.ascontiguousarray(live, dtype=np.int64)
    bound = args(k, pos, live)

    def action():
        if kernel(*bound):
            fallback()

    def at(k_run: int, pos_run: int, live_run) -> bool:
        """Run for row length k_run <= k at position pos_run on rows live_run (None: all), on
        the same addresses (valid when no operand's row stride follows k); False when the
        kernel declined (nothing written: the caller runs the numpy definition)."""
        if live_run is not None:
            live_run = np.ascontiguousarray(live_run, dtype=np.int64)
        return kernel(*args(k_run, pos_run, live_run)) == 0
    action.at = at
    action.keep = (live, ops)                  # the views and rows the addresses point into
    return action
