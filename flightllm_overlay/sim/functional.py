"""Functional simulator: executes instruction images bit-accurately over device memory, with counters.

The simulated U280 calls `FunctionalSimulator.run` when the scheduler is started.  Each core's
stream runs in program order (a valid schedule: every `wait` must be met by an earlier `release`);
cores run phase by phase between SYS barriers.  Arithmetic is defined in `spec/arithmetic.py`.

Speed: each image is decoded once (cached by address and memory version), and static weight
loads into the weight buffer are tracked by reference to an immutable snapshot of the HBM bytes,
so that a decode step does not copy or convert every weight again.  A snapshot is refreshed
whenever the device reports that the HBM range changed, and the weight buffer's bytes are
materialised whenever anything reads them other than the MPE.
"""
from __future__ import annotations

import os

import numpy as np

from ..config import UNITS, Target
from ..errors import AddressError, FlightLLMError, IllegalInstructionError, ProgramError
from ..spec import arithmetic as U
from ..spec import isa
from ..spec import wformat as WF
from ..spec.semantics import Dyn, dyn_rows, live_rows, stripe_channels, stripe_count
from . import fastpath as _fastpath
from . import mpe_codes as _mpe_codes
from . import mpe_groups as _mpe_groups
from . import mpe_native as _mpe_native
from .counters import CoreCounters, RunCounters
from .misc_unit import dynamic as misc_dynamic, misc_action, operation as misc_operation
from .mpe_weights import WeightReads
from .snapshots import SnapshotCache, memory_version, snapshot_key
from .core_buffers import _F16, _F32, _I8, Core as _Core, Snapshot as _Snapshot, _array, _copy_rows, \
    _region, _strided

_UNIT_INDEX = {u: i for i, u in enumerate(UNITS)}


class FunctionalSimulator:
    """Bit-accurate executor of FlightLLM instruction images for one target.

    Keep one instance per device: it holds the on-chip buffers of every core and the caches.
    """

    def __init__(self, target: Target, fast: bool | None = None):
        self.target = target
        #: Run validated images through prepared steps (sim/fastpath.py); False: the
        #: per-instruction reference executor only (also FLIGHTLLM_SIM_REFERENCE=1).
        self.fast = os.environ.get("FLIGHTLLM_SIM_REFERENCE", "") in ("", "0") \
            if fast is None else bool(fast)
        self._plans = {}         # (id(streams), bindings, id(memory)) -> (streams, memory, Plan)
        self.cores = [_Core(target, i) for i in range(target.cores)]
        self._decoded = {}       # (addr, version) -> per-core decoded streams
        self._snapshots = SnapshotCache()   # (phys, rows, row_bytes, stride) -> _Snapshot, LRU
        self._predictions = {}   # id(decoded streams) -> predicted cycles
        self._hbm_parts = {}     # (bindings, core, id(fields)) -> (fields, resolved HBM parts)
        self._misc_plans = {}    # (core, id(fields)) -> (fields, prepared action, elements)
        self._scratch = np.empty(0, _F32)   # FP32 weights of a first use (see _weights_t)

    # ------------------------------------------------------------------------------------------
    def decode_image(self, memory, program_addr: int) -> list:
        head = memory.view(program_addr, 4 * isa.IMAGE_HEADER_WORDS).view(np.uint32)
        total = int(head[3]) if head[0] == isa.IMAGE_MAGIC else isa.IMAGE_HEADER_WORDS
        nbytes = 4 * max(total, isa.IMAGE_HEADER_WORDS)
        key = (program_addr, nbytes, memory_version(memory, program_addr, nbytes))
        hit = self._decoded.get(key)
        if hit is not None:
            return hit
        words = np.array(memory.view(program_addr, nbytes).view(np.uint32))
        table = isa.image_table(words)
        if len(table) != self.target.cores:
            raise ProgramError(f"the program was compiled for {len(table)} cores; the "
                               f"{self.target.name} target has {self.target.cores}")
        streams = []
        for core, (off, n) in enumerate(table):
            seg = words[off:off + n].tolist()
            stream, pos = [], 0
            while pos < n:
                try:
                    insn, size = isa.decode_one(seg, pos)
                except FlightLLMError as exc:
                    exc.core, exc.pc = core, pos
                    raise
                stream.append((insn.op, insn.fields, pos))
                pos += size
            if not stream or stream[-1][0] != "SYS" or stream[-1][1].get("op") != 1:
                exc = ProgramError(f"core {core}'s stream does not end with SYS end")
                exc.core, exc.pc = core, n
                raise exc
            streams.append(stream)
        if len(self._decoded) > 64:
            self._decoded.clear()
            self._predictions.clear()
        self._decoded[key] = streams
        return streams

    def predicted_cycles(self, streams) -> int:
        """U280 cycles the timing model predicts for these streams (a prediction: nothing here
        has run on a card). Cached per decoded image: the model charges compiled capacities,
        so the figure does not depend on pos/len."""
        cycles = self._predictions.get(id(streams))
        if cycles is None:
            from .timing import TimingModel
            cycles = TimingModel(self.target).schedule(streams, keep_events=False).cycles
            if len(self._predictions) > 64:
                self._predictions.clear()
            self._predictions[id(streams)] = cycles
        return cycles

    def run(self, memory, program_addr: int, params: dict | None = None,
            channel_base: dict | None = None) -> RunCounters:
        """Execute the image at `program_addr`; returns counters. Raises FlightLLMError."""
        params = params or {}
        pos, length = int(params.get("pos", 0)), int(params.get("len", 0))
        streams = self.decode_image(memory, program_addr)
        counters = RunCounters([CoreCounters() for _ in self.cores])
        counters.cycles = self.predicted_cycles(streams)
        ctx = _RunContext(self, memory, pos, length, channel_base or {}, counters)
        for core in self.cores:
            core.tokens = [[0] * len(UNITS) for _ in UNITS]
        plan = self._plan(ctx, memory, streams) if self.fast else None
        if plan is not None:
            plan.run(ctx)
            return counters
        pcs = [0] * len(self.cores)
        while True:
            stops = []
            for c, core in enumerate(self.cores):
                pcs[c], stop = ctx.run_phase(core, streams[c], pcs[c])
                stops.append(stop)
            if len(set(stops)) != 1:
                bad = next(c for c, stop in enumerate(stops) if stop != stops[0])
                exc = ProgramError(f"cores disagree at a SYS instruction ({stops}): every core "
                                   f"must pass the same barriers before the end")
                exc.core, exc.pc = bad, streams[bad][pcs[bad] - 1][2]      # the SYS it reached
                raise exc
            if stops[0] == "end":
                break
        for c, core in enumerate(self.cores):
            left = [(UNITS[s], UNITS[d], n) for s, row in enumerate(core.tokens)
                    for d, n in enumerate(row) if n]
            if left:
                exc = ProgramError(f"core {c} ends with unconsumed dependency tokens {left}: "
                                   f"every release needs a matching wait")
                exc.core, exc.pc = c, streams[c][-1][2]
                raise exc
        return counters


    def _plan(self, ctx, memory, streams):
        """The prepared plan of these streams under these bindings (made on first use), or
        None when a stream-only check fails (the reference executor then reports it)."""
        key = (id(streams), ctx.base_key, id(memory))
        hit = self._plans.get(key)
        if hit is not None and hit[0] is streams and hit[1] is memory and \
                (hit[2] is None or hit[2].usable()):
            return hit[2]
        plan = _fastpath.Plan(ctx, streams) if _fastpath.schedule_ok(streams) else None
        if len(self._plans) > 64:
            self._plans.clear()
        self._plans[key] = (streams, memory, plan)
        return plan


class _RunContext(WeightReads):
    """State of one run: parameters, memory, counters; executes instructions."""

    def __init__(self, sim, memory, pos, length, channel_base, counters):
        self.sim, self.memory, self.P, self.L = sim, memory, pos, length
        self.base, self.counters = channel_base, counters
        self.handlers = {"LD": self.ld, "ST": self.st, "MM": self.mpe, "MV": self.mpe,
                         "MISC": self.misc}
        self.base_key = tuple(sorted(self.base.items()))

    def run_phase(self, core: _Core, stream, pc: int):
        cc = self.counters.per_core[core.index]
        tokens = core.tokens
        handlers = self.handlers
        n = len(stream)
        while pc < n:
            op, f, word = stream[pc]
            pc += 1
            unit = _UNIT_INDEX[op if op != "SYS" else "SYS"]
            try:
                wait, rel = f.get("wait", 0), f.get("release", 0)
                if wait:
                    for src in range(len(UNITS)):
                        if wait >> src & 1:
                            if tokens[src][unit] == 0:
                                raise ProgramError(
                                    f"{op} waits for a token from {UNITS[src]} that no earlier "
                                    f"instruction released (the program order is not a valid "
                                    f"schedule)")
                            tokens[src][unit] -= 1
                cc.instructions[op] += 1
                if op == "SYS":
                    if rel:
                        raise ProgramError("SYS releases no tokens")
                    return pc, isa.SYS_OPS[f.get("op", 0)]
                handlers[op](core, f, cc, op)
                if rel:
                    for dst in range(len(UNITS)):
                        if rel >> dst & 1:
                            tokens[unit][dst] += 1
            except FlightLLMError as exc:
                if getattr(exc, "core", None) is None:
                    exc.core, exc.pc = core.index, word
                    exc.args = (f"core {core.index}, word {word} ({op}): {exc.args[0]}",)
                raise
        exc = ProgramError("stream ran off its end without SYS end")
        exc.core, exc.pc = core.index, stream[-1][2] if stream else 0
        raise exc

    # -- LD / ST --------------------------------------------------------------------------------
    def _channel(self, core, ch):
        if ch not in self.base:
            raise AddressError(f"HBM pseudo-channel {ch} is not bound to core {core.index} "
                               f"(bound: {sorted(self.base)})")
        if ch not in self.sim.target.channels_of(core.index):
            raise AddressError(f"core {core.index} has no port to HBM pseudo-channel {ch}; it "
                               f"owns {self.sim.target.channels_of(core.index)}")
        return self.base[ch]

    def _view(self, part):
        """The (rows, row_bytes) uint8 view of one HBM part (made only when bytes move)."""
        c, phys, extent, rows, row_bytes, stride = part
        view = self.memory.view(phys, extent) if extent else np.zeros(0, np.uint8)
        return _strided(view, 0, rows, row_bytes, stride) if rows else view.reshape(0, 0)

    def _hbm(self, core, f, rows, off):
        """[(channel, physical address, extent, rows, row bytes, stride)] of an LD/ST's HBM
        side: one part, or `stripe` equal chunks from consecutive ports of the core (LD only).
        Static instructions resolve to the same parts every run with the same bindings."""
        if f.get("dyn", 0):
            return self._resolve_hbm(core, f, rows, off)
        key = (self.base_key, core.index, id(f))
        parts = self.sim._hbm_parts.get(key)
        if parts is None or parts[0] is not f:
            if len(self.sim._hbm_parts) > 100_000:
                self.sim._hbm_parts.clear()
            parts = self.sim._hbm_parts[key] = (f, self._resolve_hbm(core, f, rows, off))
        return parts[1]

    def _resolve_hbm(self, core, f, rows, off):
        ch = f.get("channel", 0)
        row_bytes, stride = f.get("row_bytes", 0), f.get("hbm_stride", 0)
        stripe = stripe_count(f)
        if stripe > 1:
            ports = self.sim.target.channels_of(core.index)
            if ch not in ports:
                self._channel(core, ch)
            if stripe > len(ports):
                raise AddressError(f"LD stripe={stripe} exceeds the {len(ports)} pseudo-channels "
                                   f"of core {core.index}")
            rows, row_bytes, stride = 1, row_bytes // stripe, row_bytes // stripe
        chans = stripe_channels(f, self.sim.target.channels_of(core.index))
        extent = (rows - 1) * stride + row_bytes if rows else 0
        limit = self.sim.target.hbm_channel_bytes
        parts = []
        for c in chans:
            base = self._channel(core, c)
            if off + extent > limit:
                raise AddressError(f"HBM address {off:#x}+{extent:#x} is past the end of pseudo-"
                                   f"channel {c} ({limit:#x} bytes)")
            parts.append((c, base + off, extent, rows, row_bytes, stride))
        return parts

    def _move_operands(self, core, f, op):
        """(rows, hbm offset, row bytes, buffer stride, buffer name, buffer, address, end)."""
        rows, off = dyn_rows(f, self.P, self.L)
        row_bytes, bstride = f.get("row_bytes", 0), f.get("buf_stride", 0)
        bname = isa.BUFFERS[f.get("buf", 0)]
        buf = core.bufs[bname]
        addr = f.get("buf_addr", 0)
        end = _region(buf, addr, rows, row_bytes, bstride, f"{op} of {bname}")
        return rows, off, row_bytes, bstride, bname, buf, addr, end

    def _remote_source(self, core, f, rows, row_bytes, bname):
        """(source core, address, stride) of a remote LD (an on-chip copy; the source may be
        the executing core itself), its range checked in the source buffer."""
        rc = f.get("remote_core", 0)
        if rc >= len(self.sim.cores):
            raise AddressError(f"LD from remote core {rc}: cores are 0..{len(self.sim.cores) - 1}")
        other = self.sim.cores[rc]
        src_addr, src_stride = f.get("hbm_addr", 0), f.get("hbm_stride", 0)
        s_end = _region(other.bufs[bname], src_addr, rows, row_bytes, src_stride,
                        f"remote LD source (core {rc} {bname})")
        if other is core:
            d0 = f.get("buf_addr", 0)
            d_end = d0 + max(rows - 1, 0) * f.get("buf_stride", 0) + row_bytes
            if src_addr < d_end and d0 < s_end:
                raise AddressError(f"local copy in {bname}: source {src_addr:#x}..{s_end:#x} "
                                   f"overlaps destination {d0:#x}..{d_end:#x}")
        return other, src_addr, src_stride

    def ld_packed(self, core, f):
        """A weight load through the dequantisation unit (spec/wformat.py): a packed tile of
        `row_bytes` in HBM becomes INT8 kept weights (`wcodes`: the codes and their group
        parameters) + FP32 row scales in wbuf, and, if sparse, N:16 codes in the fsb buffer and
        4-bit indices in the meta buffer."""
        rows, k, addr = f.get("rows", 0), f.get("wk", 0), f.get("buf_addr", 0)
        if not rows or not k:
            return
        bits, group = isa.WEIGHT_BITS[f.get("wbits", 0)], isa.WEIGHT_GROUPS[f.get("wgroup", 0)]
        sparse, codes = bool(f.get("sparse", 0)), bool(f.get("wcodes", 0))
        parts = self._hbm(core, f, 1, f.get("hbm_addr", 0))
        hr = self.counters.hbm_read
        for p in parts:
            hr[p[0]] = hr.get(p[0], 0) + p[3] * p[4]
        key = ("packed", tuple(p[1] for p in parts), rows, k, bits, group, sparse, codes,
               f.get("row_bytes", 0))
        version = tuple(memory_version(self.memory, p[1], p[2]) for p in parts)
        snap = self.sim._snapshots.get(key)
        if snap is None or snap.version != version:
            blob = np.concatenate([self._view(p).reshape(-1) for p in parts])
            tile = WF.dequant_tile(blob, rows, k, bits, group, sparse, codes)
            snap = _Snapshot(version, tile.wbuf_bytes())
            snap.derived["tile"] = tile
            self.sim._snapshots[key] = snap
        tile = snap.derived["tile"]
        if sparse and (16 * f.get("wn", 0) != tile.values.size
                       or f.get("wmeta", 0) != tile.meta.size):
            raise ProgramError(f"sparse LD: the tile keeps {tile.values.size} weights with "
                               f"{tile.meta.size} index bytes, but the instruction says "
                               f"wn={f.get('wn', 0)} (x16) and wmeta={f.get('wmeta', 0)}")
        end = _region(core.bufs["wbuf"], addr, 1, snap.data.size, 0, "LD (packed) of wbuf")
        core.replace_tags(addr, end, snap)
        if sparse:
            for name, data, at in (("fsb", tile.fsb, f.get("fsb_addr", 0)),
                                   ("meta", tile.meta, f.get("meta_addr", 0))):
                _region(core.bufs[name], at, 1, data.size, 0, f"LD (packed) of {name}")
                core.bufs[name][at:at + data.size] = data

    def ld(self, core, f, cc, op):
        if f.get("wfmt", 0):
            return self.ld_packed(core, f)
        rows, off, row_bytes, bstride, bname, buf, addr, end = self._move_operands(core, f, op)
        if not rows or not row_bytes:
            return
        if f.get("remote", 0):
            other, src_addr, src_stride = self._remote_source(core, f, rows, row_bytes, bname)
            if bname == "wbuf":
                other.materialize(src_addr, src_addr + max(rows - 1, 0) * src_stride + row_bytes)
            src = _strided(other.bufs[bname], src_addr, rows, row_bytes, src_stride).copy()
            if bname == "wbuf":
                core.materialize(addr, end)
            _copy_rows(buf, addr, bstride, src)
            return
        parts = self._hbm(core, f, rows, off)
        hr = self.counters.hbm_read
        for p in parts:
            hr[p[0]] = hr.get(p[0], 0) + p[3] * p[4]

        if bname == "wbuf" and f.get("dyn", 0) == Dyn.STATIC and bstride == row_bytes:
            core.replace_tags(addr, end, self.wbuf_snapshot(parts, rows, row_bytes, f))
            return
        if bname == "wbuf":
            core.materialize(addr, end)
        _copy_rows(buf, addr, bstride, self._gathered(parts))

    def _gathered(self, parts):
        views = [self._view(p) for p in parts]
        return views[0] if len(views) == 1 else np.concatenate(views, 1)

    def wbuf_snapshot(self, parts, rows, row_bytes, f):
        """The snapshot of the HBM bytes a static weight load brings in (refreshed when the
        device reports the range written)."""
        key = snapshot_key(parts, rows, row_bytes, f)
        version = tuple(memory_version(self.memory, p[1], p[2]) for p in parts)
        snap = self.sim._snapshots.get(key)
        if snap is None or snap.version != version:
            # one copy of the HBM bytes: np.concatenate of a striped load's parts already is one
            data = self._gathered(parts)
            data = np.array(data, order="C") if len(parts) == 1 else np.ascontiguousarray(data)
            snap = _Snapshot(version, data.reshape(-1))
            self.sim._snapshots[key] = snap
        return snap

    def st(self, core, f, cc, op):
        rows, off, row_bytes, bstride, bname, buf, addr, end = self._move_operands(core, f, op)
        if not rows or not row_bytes:
            return
        if bname == "wbuf":
            core.materialize(addr, end)
        part, = self._hbm(core, f, rows, off)
        ch, phys, extent = part[:3]
        dst = self._view(part)
        dst[...] = _strided(buf, addr, rows, row_bytes, bstride)
        hw = self.counters.hbm_written
        hw[ch] = hw.get(ch, 0) + rows * row_bytes
        try:
            self.memory.touch(phys, extent)
        except TypeError:
            self.memory.touch(phys)

    # -- MPE ------------------------------------------------------------------------------------
    def mpe(self, core, f, cc, op):
        dims = self.mpe_dims(f, op)
        if dims is not None:
            self.mpe_execute(core, f, cc, self.mpe_operands(core, f, *dims))

    def mpe_dims(self, f, op):
        """(m, n, k) of an MM/MV after the run-time length; None when there is nothing to do."""
        m, n, k = f.get("m", 0), f.get("n", 0), f.get("k", 0)
        if f.get("dyn_n", 0) or f.get("dyn_k", 0):
            eff = self.P + self.L
            for flag, limit in (("dyn_n", n), ("dyn_k", k)):
                if f.get(flag, 0) and eff > limit:
                    raise ProgramError(f"run-time length {eff} exceeds the {limit} this {op} was "
                                       f"compiled for ({flag}); pick a larger bucket")
            if f.get("dyn_n", 0):
                n = eff
            if f.get("dyn_k", 0):
                k = eff
        if op == "MV" and m > isa.MV_MAX_ROWS:
            raise IllegalInstructionError(f"MV handles at most {isa.MV_MAX_ROWS} rows")
        if not (m and n and k):
            return None
        return m, n, k

    def mpe_operands(self, core, f, m, n, k):
        """Views of an MPE's operands (fixed for given fields and dims):
        (m, n, k, a, a_scale, out, dense weight rows, cols, stride, end)."""
        abuf, wbuf, gbuf = core.bufs["abuf"], core.bufs["wbuf"], core.bufs["gbuf"]
        a = _array(abuf, f.get("a_addr", 0), m, k, _I8, f.get("a_stride", 0) or k, "MPE input")
        group = isa.ACT_GROUPS[f.get("agroup", 0)]
        if group:                       # per row: FP32 scale, exponent bytes
            a_scale = _mpe_groups.scales_view(abuf, f, m, k, group)
        else:
            a_scale = _array(abuf, f.get("a_scale", 0), 1, m, _F32, 4 * m, "MPE input scales")[0]
        rows, cols = (k, n) if f.get("wt", 0) else (n, k)
        w_stride = f.get("w_stride", 0) or cols
        w_end = None
        if f.get("wcodes", 0):          # rows of codes and group parameters
            w_end = _mpe_codes.operand_end(wbuf, f, n)
        elif not f.get("sparse", 0):
            w_end = _region(wbuf, f.get("w_addr", 0), rows, cols, w_stride, "MPE weights")
        if not f.get("sparse", 0) and not f.get("no_wscale", 0) and f.get("w_scale", 0) % 4:
            raise ProgramError(f"MPE weight scales: address {f.get('w_scale', 0):#x} / stride "
                               f"{4 * n} not aligned to 4-byte float32 elements")
        out = _array(gbuf, f.get("out_addr", 0), m, n, _F16, f.get("out_stride", 0) or 2 * n,
                     "MPE output")
        return (m, n, k, a, a_scale, out, rows, cols, w_stride, w_end, f.get("sparse", 0),
                f.get("w_addr", 0), f.get("wt", 0), f.get("no_wscale", 0), f.get("w_scale", 0))

    def mpe_execute(self, core, f, cc, operands):
        """The MPE's work on resolved operands: weights (from a snapshot when the range is one),
        exact INT8 products, the FP32 epilogue, FP16 out."""
        m, n, k, a, a_scale, out, rows, cols, w_stride, w_end, sparse, w_addr, wt, no_wscale, \
            s_addr = operands
        live = live_rows(f, m, self.L)            # dyn_m: the prompt's rows only
        if live is not None:
            m = len(live)
        group = isa.ACT_GROUPS[f.get("agroup", 0)]
        lib = _mpe_native.kernels()
        if f.get("wcodes", 0):          # codes with exact group arithmetic
            cc.macs += m * n * k
            cc.fixed_chain_macs += m * n * k
            scales = (None, 0) if no_wscale else self._weight_scale_bytes(core, s_addr, n)
            _mpe_codes.execute(self, core, f, operands, live, scales, group, lib)
            return
        if sparse:
            grouped_native = group and lib is not None and m < _mpe_native.BLAS_ROWS
            w_t = self._sparse_weights_t(core, f, n, k, int8=grouped_native)
            cc.macs += m * 16 * f.get("nnz", 0)
        else:
            w_t = None
            cc.macs += m * n * k
        cc.fixed_chain_macs += m * n * k
        scales = (None, 0) if no_wscale else self._weight_scale_bytes(core, s_addr, n)
        if group:                       # shared-exponent activation groups
            _mpe_groups.execute(self, core, operands, live, w_t, scales, group, lib)
            return
        if w_t is None and lib is not None and m < _mpe_native.BLAS_ROWS and _mpe_native.mpe(
                lib, a, a_scale, live, *self._wbuf_bytes(core, w_addr, w_end), w_stride, wt,
                *scales, out, n, k):
            return
        if w_t is None:
            w_t = self._weights_t(core, w_addr, w_end, rows, cols, w_stride, wt,
                                  keep=lib is None)
        self._mpe_fp32(lib, a, a_scale, live, w_t, scales, out)

    @staticmethod
    def _mpe_fp32(lib, a, a_scale, live, w_t, scales, out):
        """The MPE from FP32 weights: one exact FP32 product, then the epilogue (native when
        the kernels are there and no result is a NaN)."""
        a_live, s_live = (a, a_scale) if live is None else (a[live], a_scale[live])
        if lib is not None and _mpe_native.epilogue(lib, U.mpe_fp32_acc(a_live, w_t), a_scale,
                                                    live, *scales, out):
            return
        s_bytes, s_off = scales
        w_scale = None if s_bytes is None else s_bytes[s_off:s_off + 4 * out.shape[1]].view(_F32)
        result = U.mpe_fast(a_live, w_t, s_live, w_scale)
        if live is None:
            out[...] = result
        else:
            out[live] = result

    # -- MISC -----------------------------------------------------------------------------------
    def misc(self, core, f, cc, op):
        if not misc_dynamic(f):                   # a static MISC runs its prepared plan
            plan = self.sim._misc_plans.get((core.index, id(f)))
            if plan is not None and plan[0] is f:
                plan[1]()
                cc.misc_elements += plan[2]
                return
        mop = misc_operation(f)
        rows, k, groups = f.get("rows", 0), f.get("k", 0), max(1, f.get("groups", 0))
        if f.get("dyn_k", 0):
            if self.P + self.L > k:
                raise ProgramError(f"run-time length {self.P + self.L} exceeds the {k} columns "
                                   f"this MISC {mop} was compiled for")
            k = self.P + self.L
        if not rows or not k:
            return
        action, elements, dyn = misc_action(core, f, mop, rows, k, groups, self.P,
                                            live_rows(f, rows, self.L))
        action()
        cc.misc_elements += elements
        if not dyn:
            if len(self.sim._misc_plans) > 100_000:
                self.sim._misc_plans.clear()
            self.sim._misc_plans[(core.index, id(f))] = (f, action, elements)
