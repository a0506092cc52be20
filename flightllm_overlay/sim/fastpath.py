"""Fast execution of an instruction image: each instruction prepared once, stream-only checks done once.

The reference executor (`functional._RunContext.run_phase`) decodes the fields of every
instruction, moves dependency tokens and resolves buffer views and HBM addresses on every run.
None of that depends on the data or on the run-time parameters for a static instruction, so a
`Plan` does it once per (image, channel bindings, memory) and keeps, per core and SYS-delimited
phase, one prepared step per instruction:

- the dependency-token discipline, the SYS barriers and the instruction counts depend only on
  the streams: `schedule_ok` checks them once (a stream that fails runs on the reference
  executor, which raises at the right instruction);
- static LD/remote LD: source and destination views made once; static weight loads keep the
  reference's snapshot path (versions are checked every run);
- static dense MM/MV: operand views made once, the work is the reference's `mpe_execute`;
- everything else (dynamic lengths, packed and sparse weights, ST, MISC) runs the reference
  handler itself, so it is the same code.

Counters of the static steps are added in bulk at the end of a run.  Errors carry the same
core, word and message as on the reference executor.  Tests hold the two equal byte for byte
over every instruction kind and both model families (tests/test_sim_fastpath.py).
"""
from __future__ import annotations

import numpy as np

from ..config import UNITS
from ..errors import AddressError, FlightLLMError
from ..spec import isa
from ..spec.semantics import dyn_rows, live_rows
from .memory import PAGE as _PAGE
from .core_buffers import _copy_rows, _region, _strided
from .misc_unit import dynamic as misc_dynamic, misc_action, operation as misc_operation
from .snapshots import snapshot_key

_UNIT_INDEX = {u: i for i, u in enumerate(UNITS)}
_HANDLER = {"LD": "ld", "ST": "st", "MM": "mpe", "MV": "mpe", "MISC": "misc"}
_REFERENCE = object()       # "run the reference handler for this one"


def schedule_ok(streams) -> bool:
    """True when every check of the reference executor that depends on the streams alone
    passes: each wait meets an earlier release on its core, no SYS releases, every core passes
    the same SYS barriers up to its SYS end, and no token is left at the end."""
    n = len(UNITS)
    stops_of = []
    for stream in streams:
        tokens = [[0] * n for _ in range(n)]
        stops = []
        for op, f, _ in stream:
            unit = _UNIT_INDEX.get(op)
            if unit is None:
                return False
            wait, rel = f.get("wait", 0), f.get("release", 0)
            for src in range(n):
                if wait >> src & 1:
                    if tokens[src][unit] == 0:
                        return False
                    tokens[src][unit] -= 1
            if op == "SYS":
                sop = f.get("op", 0)
                if rel or sop >= len(isa.SYS_OPS):
                    return False
                stops.append(isa.SYS_OPS[sop])
                if stops[-1] == "end":
                    break
                continue
            for dst in range(n):
                if rel >> dst & 1:
                    tokens[unit][dst] += 1
        else:
            return False                    # ran off its end without SYS end
        if any(any(row) for row in tokens):
            return False
        stops_of.append(stops)
    return all(s == stops_of[0] for s in stops_of)


class Plan:
    """Prepared steps of one decoded image for one set of channel bindings on one memory."""

    def __init__(self, ctx, streams):
        sim = ctx.sim
        self.allocs = []                    # device buffers the prepared views point into
        self.static_read = {}               # HBM channel -> bytes the static loads read per run
        self.counts = []                    # per core: unit -> instructions per run
        self.rounds = []                    # [phase][core] -> (steps, words, ops)
        per_core = []
        for core, stream in zip(sim.cores, streams):
            counts = {u: 0 for u in UNITS}
            phases, steps, words, ops = [], [], [], []
            for op, f, word in stream:
                counts[op] += 1
                if op == "SYS":
                    phases.append((steps, words, ops))
                    steps, words, ops = [], [], []
                    if isa.SYS_OPS[f.get("op", 0)] == "end":
                        break
                    continue
                step = self._prepare(ctx, core, op, f)
                if step is not None:
                    steps.append(step)
                    words.append(word)
                    ops.append(op)
            self.counts.append(counts)
            per_core.append(phases)
        self.rounds = [list(r) for r in zip(*per_core)]

    def usable(self) -> bool:
        """False once a device buffer the prepared views point into has been freed."""
        return not any(a.freed for a in self.allocs)

    # -- preparing one instruction ------------------------------------------------------------
    def _prepare(self, ctx, core, op, f):
        """A callable step(ctx) doing what the reference does for this instruction, or None
        when it does nothing."""
        step = _REFERENCE
        try:
            if op == "LD" and not f.get("wfmt", 0) and not f.get("dyn", 0):
                step = self._prepare_ld(ctx, core, f)
            elif op in ("LD", "ST") and f.get("dyn", 0) and not f.get("wfmt", 0) \
                    and not f.get("remote", 0) and not f.get("stripe", 0):
                step = self._prepare_dyn_move(ctx, core, op, f)
            elif op == "MISC" and not misc_dynamic(f):
                step = self._prepare_misc(ctx, core, f)
            elif op == "MISC":
                step = self._prepare_dyn_misc(ctx, core, f)
            elif op in ("MM", "MV") and not (f.get("dyn_n", 0) or f.get("dyn_k", 0)
                                             or f.get("sparse", 0)):
                step = self._prepare_mpe(ctx, core, op, f)
            elif op in ("MM", "MV") and not f.get("sparse", 0):
                step = self._prepare_dyn_mpe(ctx, core, op, f)
        except FlightLLMError:
            step = _REFERENCE               # the reference handler raises it when it runs
        if step is not _REFERENCE:
            return step
        handler, ci = getattr(type(ctx), _HANDLER[op]), core.index

        def reference(ctx):
            handler(ctx, core, f, ctx.counters.per_core[ci], op)
        return reference

    def _prepare_ld(self, ctx, core, f):
        rows, off, row_bytes, bstride, bname, buf, addr, end = ctx._move_operands(core, f, "LD")
        if not rows or not row_bytes:
            return None
        if f.get("remote", 0):
            if bname == "wbuf":
                return _REFERENCE
            other, src_addr, src_stride = ctx._remote_source(core, f, rows, row_bytes, bname)
            src = _strided(other.bufs[bname], src_addr, rows, row_bytes, src_stride)
            dst = _strided(buf, addr, rows, row_bytes, bstride)
            def remote_load(ctx):
                dst[...] = src
            return remote_load
        find = getattr(ctx.memory, "find", None)
        if find is None:                    # no way to know when a view goes stale
            return _REFERENCE
        parts = ctx._hbm(core, f, rows, off)
        for p in parts:
            if p[2]:
                self.allocs.append(find(p[1], p[2]))
            self.static_read[p[0]] = self.static_read.get(p[0], 0) + p[3] * p[4]
        if bname == "wbuf" and bstride == row_bytes:
            return self._prepare_weight_load(ctx, core, f, parts, rows, row_bytes, addr, end)
        views = [ctx._view(p) for p in parts]
        dst = _strided(buf, addr, rows, row_bytes, bstride)
        if len(views) == 1:
            src = views[0]
            if bname == "wbuf":
                def load(ctx):
                    core.materialize(addr, end)
                    dst[...] = src
            else:
                def load(ctx):
                    dst[...] = src
            return load

        def striped_load(ctx):
            if bname == "wbuf":
                core.materialize(addr, end)
            dst[...] = np.concatenate(views, 1)
        return striped_load

    def _prepare_weight_load(self, ctx, core, f, parts, rows, row_bytes, addr, end):
        """A static load into the weight buffer: the reference's snapshot, whose version check
        reads the page versions of the device buffers directly (what `DeviceMemory.version`
        returns, without finding the buffer again)."""
        key, snaps = snapshot_key(parts, rows, row_bytes, f), ctx.sim._snapshots
        pages = []
        for p in parts:
            alloc = ctx.memory.find(p[1], max(p[2], 1))
            if getattr(alloc, "pages", None) is None or not hasattr(ctx.memory, "version"):
                pages = None
                break
            off = p[1] - alloc.address
            pages.append((alloc.pages, off // _PAGE, (off + max(p[2], 1) - 1) // _PAGE + 1))
        if pages is None:
            def weight_load(ctx):
                core.replace_tags(addr, end, ctx.wbuf_snapshot(parts, rows, row_bytes, f))
            return weight_load

        def weight_load(ctx):
            snap = snaps.get(key)
            if snap is None or snap.version != tuple(
                    pg[a] if b == a + 1 else pg[a:b].max() for pg, a, b in pages):
                snap = ctx.wbuf_snapshot(parts, rows, row_bytes, f)
            core.replace_tags(addr, end, snap)
        return weight_load

    def _prepare_dyn_move(self, ctx, core, op, f):
        """An LD or ST whose rows and HBM offset follow pos/len (the KV cache): the channel
        checks are static; rows, offset and the bounds checks are the reference's, per run."""
        ch, row_bytes, stride = f.get("channel", 0), f.get("row_bytes", 0), f.get("hbm_stride", 0)
        base = ctx._channel(core, ch)
        bstride, bname = f.get("buf_stride", 0), isa.BUFFERS[f.get("buf", 0)]
        buf, addr = core.bufs[bname], f.get("buf_addr", 0)
        limit, memory, what = ctx.sim.target.hbm_channel_bytes, ctx.memory, f"{op} of {bname}"
        load, wbuf = op == "LD", bname == "wbuf"
        # the device buffer at the compiled address (the KV cache), found once: a range inside it
        # is sliced directly, any other asks the memory (which raises what the reference raises)
        alloc = None
        if hasattr(memory, "find") and hasattr(memory, "touch"):
            try:
                alloc = memory.find(base + f.get("hbm_addr", 0))
            except FlightLLMError:
                alloc = None
        if alloc is not None and (getattr(alloc, "pages", None) is None
                                  or not hasattr(alloc, "stamp")):
            alloc = None
        if alloc is not None:
            self.allocs.append(alloc)
            start0 = base - alloc.address

        def hbm_range(off, extent):
            if alloc is not None and 0 <= start0 + off and start0 + off + extent <= alloc.nbytes:
                return alloc.device[start0 + off:start0 + off + extent], True
            return memory.view(base + off, extent), False

        def move(ctx):
            rows, off = dyn_rows(f, ctx.P, ctx.L)
            end = _region(buf, addr, rows, row_bytes, bstride, what)
            if not rows or not row_bytes:
                return
            extent = (rows - 1) * stride + row_bytes
            if off + extent > limit:
                raise AddressError(f"HBM address {off:#x}+{extent:#x} is past the end of pseudo-"
                                   f"channel {ch} ({limit:#x} bytes)")
            view, inside = hbm_range(off, extent)
            hbm = _strided(view, 0, rows, row_bytes, stride)
            if wbuf:
                core.materialize(addr, end)
            if load:
                hr = ctx.counters.hbm_read
                hr[ch] = hr.get(ch, 0) + rows * row_bytes
                _copy_rows(buf, addr, bstride, hbm)
                return
            hbm[...] = _strided(buf, addr, rows, row_bytes, bstride)
            hw = ctx.counters.hbm_written
            hw[ch] = hw.get(ch, 0) + rows * row_bytes
            if inside:
                alloc.stamp(start0 + off, extent)
                return
            try:
                memory.touch(base + off, extent)
            except TypeError:
                memory.touch(base + off)
        return move

    def _prepare_misc(self, ctx, core, f):
        """A static MISC: its action prepared by the reference on the first run, then called."""
        handler, ci, plans, box = type(ctx).misc, core.index, ctx.sim._misc_plans, []

        def misc(ctx):
            if box:
                box[0]()
                ctx.counters.per_core[ci].misc_elements += box[1]
                return
            handler(ctx, core, f, ctx.counters.per_core[ci], "MISC")
            plan = plans.get((ci, id(f)))
            if plan is not None and plan[0] is f:
                box[:] = plan[1:]
        return misc

    def _prepare_dyn_misc(self, ctx, core, f):
        """A MISC whose work follows the run: its row length K is pos + len (`dyn_k`: decode's
        attention, softmax, the probabilities' scaling and quant) or its rows are the prompt's
        (`dyn_rows`: prefill).  The reference binds its operands again every run; here it is
        bound once (for the compiled K) and run with each run's K, pos and rows, when it has a
        native kernel and, with `dyn_k`, no operand's row stride follows K (explicit strides,
        or one row).  Anything else (K past the compiled one, a kernel that declines) is the
        reference's."""
        rows, kmax, dyn_k = f.get("rows", 0), f.get("k", 0), f.get("dyn_k", 0)
        mop = misc_operation(f)
        per_row = [("a_stride", True), ("out_stride", mop != "amax"),
                   ("b_stride", mop in ("eadd", "emul") and not f.get("bcast_b", 0))]
        if not rows or not kmax or mop is None or dyn_k and (
                mop in ("rope", "layernorm", "rmsnorm") or rows > 1 and any(
                    used and not f.get(name, 0) for name, used in per_row)):
            return _REFERENCE
        action, elements, _ = misc_action(core, f, mop, rows, kmax, max(1, f.get("groups", 0)),
                                          0, None)
        at = getattr(action, "at", None)
        if at is None:
            return _REFERENCE
        handler, ci, per_element = type(ctx).misc, core.index, elements // (rows * kmax)

        def dyn_misc(ctx):
            k = ctx.P + ctx.L if dyn_k else kmax
            live = live_rows(f, rows, ctx.L)
            if 0 < k <= kmax and at(k, ctx.P, live):
                done = rows if live is None else len(live)
                ctx.counters.per_core[ci].misc_elements += per_element * done * k
            else:                   # raises, does nothing, or runs the numpy definition
                handler(ctx, core, f, ctx.counters.per_core[ci], "MISC")
        return dyn_misc

    def _prepare_mpe(self, ctx, core, op, f):
        dims = ctx.mpe_dims(f, op)
        if dims is None:
            return None
        operands = ctx.mpe_operands(core, f, *dims)
        execute, ci = type(ctx).mpe_execute, core.index

        def mpe(ctx):
            execute(ctx, core, f, ctx.counters.per_core[ci], operands)
        return mpe

    def _prepare_dyn_mpe(self, ctx, core, op, f):
        """A dense MM/MV whose N or K is pos + len (the attention's products with the KV
        history): bound once for the compiled N and K when no row stride follows them (explicit
        activation, output and weight strides); each run takes the views' first N and K columns.
        Anything else (a length past the compiled one, nothing to do) is the reference's."""
        m, nmax, kmax = f.get("m", 0), f.get("n", 0), f.get("k", 0)
        dyn_n, dyn_k = f.get("dyn_n", 0), f.get("dyn_k", 0)
        if not (m and nmax and kmax and f.get("w_stride", 0)) or (dyn_k and not f.get(
                "a_stride", 0)) or (dyn_n and not f.get("out_stride", 0)) or (
                op == "MV" and m > isa.MV_MAX_ROWS):
            return _REFERENCE
        (m, _, _, a, a_scale, out, _, _, w_stride, _, sparse, w_addr, wt, no_wscale,
         s_addr) = ctx.mpe_operands(core, f, m, nmax, kmax)
        execute, handler, ci = type(ctx).mpe_execute, type(ctx).mpe, core.index

        def dyn_mpe(ctx):
            eff = ctx.P + ctx.L
            n, k = (eff if dyn_n else nmax), (eff if dyn_k else kmax)
            if not 0 < eff or n > nmax or k > kmax:     # the reference raises or does nothing
                handler(ctx, core, f, ctx.counters.per_core[ci], op)
                return
            rows, cols = (k, n) if wt else (n, k)
            execute(ctx, core, f, ctx.counters.per_core[ci],
                    (m, n, k, a[:, :k], a_scale, out[:, :n], rows, cols, w_stride,
                     w_addr + (rows - 1) * w_stride + cols, sparse, w_addr, wt, no_wscale,
                     s_addr))
        return dyn_mpe

    # -- running ------------------------------------------------------------------------------
    def run(self, ctx) -> None:
        """Execute every step in the reference's order (phase by phase, core by core)."""
        for rnd in self.rounds:
            for ci, (steps, words, ops) in enumerate(rnd):
                i = 0
                try:
                    for i, step in enumerate(steps):
                        step(ctx)
                except FlightLLMError as exc:
                    if getattr(exc, "core", None) is None:
                        exc.core, exc.pc = ci, words[i]
                        exc.args = (f"core {ci}, word {words[i]} ({ops[i]}): {exc.args[0]}",)
                    raise
        counters = ctx.counters
        for cc, counts in zip(counters.per_core, self.counts):
            ins = cc.instructions
            for u, n in counts.items():
                ins[u] += n
        hr = counters.hbm_read
        for ch, n in self.static_read.items():
            hr[ch] = hr.get(ch, 0) + n
