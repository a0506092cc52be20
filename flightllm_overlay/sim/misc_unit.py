"""The MISC unit of the functional simulator: one instruction's operands bound once, as an action that computes it (spec/arithmetic.py) and can be called again."""
from __future__ import annotations

import numpy as np

from ..errors import IllegalInstructionError, ProgramError
from ..spec import arithmetic as U
from ..spec import isa
from .core_buffers import _F16, _F32, _I8, _array
from .misc_native import native_action, quant_groups_action


def dynamic(f) -> bool:
    """Whether a MISC instruction's work depends on the run-time `pos`/`len` (its K or its rows),
    so that an action bound for one run cannot serve the next."""
    return bool(f.get("dyn_k", 0) or f.get("dyn_rows", 0))


def operation(f):
    """The MISC operation's name (`isa.MISC_OPS`), None for an unknown opcode."""
    op = f.get("op", 0)
    return isa.MISC_OPS[op] if op < len(isa.MISC_OPS) else None


def misc_action(core, f, mop, rows: int, k: int, groups: int, pos: int, live=None) -> tuple:
    """(action, elements processed, dynamic) of a MISC instruction on `core` with its run-time
    K already applied; `dynamic` actions depend on `pos` or `len` and must not be reused.
    `live`: the rows processed (`semantics.live_rows`), None for all; the others are neither
    read nor written."""
    dyn = dynamic(f)
    g = core.bufs["gbuf"]
    a = _Rows(_array(g, f.get("a_addr", 0), rows, k, _F16, f.get("a_stride", 0) or 2 * k,
                     "MISC a"), live)
    sel = slice(None) if live is None else live
    ops = {"a": a.view}                       # the operands, for the native kernel

    def operand_b(cols, per_row=True):
        dt = _F32 if f.get("b_f32", 0) else _F16
        if f.get("bcast_b", 0) or not per_row:
            b = _Rows(_array(g, f.get("b_addr", 0), 1, cols, dt, dt.itemsize * cols,
                             "MISC b"), None)
        else:
            b = _Rows(_array(g, f.get("b_addr", 0), rows, cols, dt,
                             f.get("b_stride", 0) or dt.itemsize * cols, "MISC b"), live)
        ops["b"] = b.view
        return b

    def out_f16():
        if f.get("out_abuf", 0):
            raise ProgramError(f"MISC {mop} writes FP16 to the global buffer; only quant "
                               f"writes the activation buffer")
        ops["out"] = _array(g, f.get("out_addr", 0), rows, k, _F16,
                            f.get("out_stride", 0) or 2 * k, "MISC out")
        return ops["out"]

    imm = ops["imm"] = isa.bits_f32(f.get("imm", 0))
    elements = (rows if live is None else len(live)) * k

    def maxima():
        ops["out2"] = _array(g, f.get("out2_addr", 0), 1, rows, _F32, 4 * rows,
                             "MISC row maxima")
        return ops["out2"][0]

    if mop in ("eadd", "emul"):
        fn, b, out = (U.eadd if mop == "eadd" else U.emul), operand_b(k), out_f16()

        def action():
            out[sel] = fn(a(), b())
    elif mop in ("silu", "relu"):
        fn, out = (U.silu if mop == "silu" else U.relu), out_f16()

        def action():
            out[sel] = fn(a())
    elif mop == "rmsnorm":
        b, out = operand_b(k, per_row=False), out_f16()
        elements *= 2

        def action():
            out[sel] = U.rmsnorm(a(), b(), imm)
    elif mop == "layernorm":                  # gamma row, then beta one b_stride further
        dt = _F32 if f.get("b_f32", 0) else _F16
        gb = ops["gb"] = _array(g, f.get("b_addr", 0), 2, k, dt,
                                f.get("b_stride", 0) or dt.itemsize * k, "layernorm gain and bias")
        out = out_f16()
        elements *= 2

        def action():
            out[sel] = U.layernorm(a(), gb[0], gb[1], imm)
    elif mop == "softmax":
        out = out_f16()
        elements *= 2
        dyn = True                              # the mask depends on pos: never planned

        def action():
            valid = None
            if f.get("causal", 0):
                q_pos = pos + (np.arange(rows) if live is None else live)[:, None] % groups
                valid = isa.attention_block_keep(q_pos, np.arange(k)[None, :],
                                                 f.get("blk_sink", 0), f.get("blk_win", 0))
            out[sel] = U.softmax(a(), imm, valid)
    elif mop == "rope":
        if k % 2:
            raise ProgramError("rope needs an even row length (head dimension)")
        tokens = min(rows, groups)
        table = ops["table"] = _array(g, f.get("b_addr", 0), tokens, k, _F16,
                                      f.get("b_stride", 0) or 2 * k, "rope table")
        out = out_f16()
        which = (np.arange(rows) if live is None else live) % tokens

        def action():
            out[sel] = U.rope(a(), table[which])
    elif mop == "quant":
        if not f.get("out_abuf", 0):
            raise ProgramError("quant writes INT8 to the activation buffer: set out_abuf")
        ab = core.bufs["abuf"]
        out = ops["q"] = _array(ab, f.get("out_addr", 0), rows, k, _I8,
                                f.get("out_stride", 0) or k, "quant out")
        elements *= 2
        group = isa.ACT_GROUPS[f.get("agroup", 0)]
        if group:                       # shared-exponent groups (isa checked the rest)
            width = U.group_scale_bytes(group, k)
            scales = _array(ab, f.get("out2_addr", 0), rows, width // 4, _F32, width,
                            "quant scales").view(np.uint8)

            def action():
                q, s, e = U.quantize_groups(a(), group)
                out[sel], scales[sel] = q, U.pack_group_scales(s, e, group, k)
            return (quant_groups_action(a.view, out, scales, group, live, action) or action,
                    elements, dyn)
        ops["scales"] = _array(ab, f.get("out2_addr", 0), 1, rows, _F32, 4 * rows,
                               "quant scales")
        out2 = ops["scales"][0]
        diffuse = bool(f.get("diffuse", 0))

        given = None
        if f.get("given_max", 0):       # one pass: the row maxima are given
            n = max(1, groups)
            given = ops["given"] = _array(g, f.get("b_addr", 0), rows, n, _F32,
                                          f.get("b_stride", 0) or 4 * n, "quant row maxima")
            elements //= 2
        if f.get("residual", 0):        # the rounding's residual, in place over a

            def action():
                x = a()
                q, s = U.quantize_rows(x, None if given is None else given[sel].max(axis=1),
                                       diffuse)
                out[sel], out2[sel] = q, s
                a.view[sel] = U.quant_residual(x, q, s)
        elif given is not None:
            def action():
                out[sel], out2[sel] = U.quantize_rows(a(), given[sel].max(axis=1), diffuse)
        else:
            def action():
                out[sel], out2[sel] = U.quantize_rows(a(), diffuse=diffuse)
    elif mop == "amax":
        out2 = maxima()

        def action():
            out2[sel] = U.row_absmax(a())
    else:
        raise IllegalInstructionError(f"MISC operation {mop or f.get('op')} is not "
                                      f"implemented by this target")
    if f.get("amax", 0) and mop in ("rmsnorm", "emul"):    # and the rows' maxima
        out2, compute = maxima(), action

        def action():
            compute()
            out2[sel] = U.row_absmax(out[sel])
    action = native_action(mop, f, ops, rows, k, groups, pos, live, action) or action
    return action, elements, dyn


class _Rows:
    """An operand read when the action runs: the view itself, or a copy of its live rows."""
    __slots__ = ("view", "live")

    def __init__(self, view, live):
        self.view, self.live = view, live

    def __call__(self):
        return self.view if self.live is None else self.view[self.live]
