"""Timing model: schedules instruction streams over each core's unit queues and predicts U280 cycles.

Every number comes from the target (`targets/u280.json`: clock, MPE parallelism, MISC width, HBM
pseudo-channel bandwidth and access efficiency, and the `timing` block whose entries each state
their source).  No correction factor is applied.

Model.  Each core has six in-order queues (LD, ST, MM, MV, MISC, SYS); MM and MV share the one
MPE.  An instruction starts when (1) its unit (for MM/MV: the MPE) is free, (2) it has been
fetched from DDR (the three cores share the instruction bank's bandwidth), (3) every token it
waits for has been released, i.e. the producing instruction has finished, and (4) for LD/ST,
its HBM pseudo-channel is free (a channel is busy while data moves; the access latency only
delays the data, as requests are pipelined).  SYS barrier: every core drains, then all continue together (a compute-only barrier lets HBM loads
run across it by one barrier; `schedule`).
Streams are walked in program order, which is exact for in-order queues whose tokens only come
from earlier instructions (the functional simulator enforces that); HBM channel contention is
resolved in program order, an approximation.

Lengths: instructions whose rows or columns depend on the run-time parameters are charged at
their compiled capacity, as the hardware processes a whole length bucket and masks the rest
(FlightLLM's length-adaptive compilation, docs/isa.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import UNITS, Target
from ..hw.design import CODE_SUM_TREES
from ..spec import isa
from ..spec.counters import CounterField, Counters
from ..spec.semantics import mpe_operand, rows_at_capacity, stripe_channels

_MPE = ("MM", "MV")
_TWO_PHASE = ("softmax", "rmsnorm", "layernorm", "quant")


def _passes(mop: str, f: dict) -> int:
    """Passes a MISC op makes over its rows: two for the two-phase ops (a reduction first), one
    for a quantisation whose row maxima are given (`given_max`)."""
    return 2 if mop in _TWO_PHASE and not (mop == "quant" and f.get("given_max", 0)) else 1


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class Event:
    """One instruction on the timeline (cycles from the start of the run)."""

    core: int
    unit: str
    op: str
    pc: int
    start: int
    end: int
    channel: int = -1
    hbm_bytes: int = 0
    macs: int = 0


@dataclass
class Timeline:
    """The schedule of one run and what it adds up to: `counters` as the registers would count
    the run (predicted, lengths at capacity), HBM bytes per pseudo-channel, the MPE's MAC slots
    as scheduled in passes, and the stalls."""

    events: list
    clock_hz: float
    counters: Counters = field(default_factory=Counters)   # what the registers would count
    stalls: dict = field(default_factory=dict)     # (unit, cause) -> cycles waited
    hbm_bytes: dict = field(default_factory=dict)  # channel -> bytes
    mpe_slots: int = 0                             # MAC slots the MPE spent (passes x width)
    mpe_slots_fixed: int = 0                       # ... a fixed dense chain would spend

    cycles = CounterField()
    macs = CounterField()                          # MACs on kept weights (useful work)

    def dsp_utilisation(self, fixed: bool = False) -> float:
        """Useful MACs / MAC slots of the MPE's passes: the configurable sparse chain as
        scheduled, or (`fixed`) a dense chain fed the same work, which multiplies the zeros."""
        slots = self.mpe_slots_fixed if fixed else self.mpe_slots
        return self.macs / slots if slots else 0.0

    @property
    def seconds(self) -> float:
        return self.cycles / self.clock_hz

    def busy(self, unit: str) -> int:
        return sum(e.end - e.start for e in self.events if e.unit == unit)

    def hbm_bandwidth_utilisation(self, target: Target, channels=None) -> float:
        """Bytes moved over (theoretical bandwidth of `channels` x run time)."""
        chs = channels or [c for cs in target.core_channels for c in cs]
        peak = len(chs) * target.hbm_bytes_per_cycle * self.cycles
        return sum(self.hbm_bytes.values()) / peak if peak else 0.0


class TimingModel:
    """Predicts the cycles of instruction streams on `target`."""

    def __init__(self, target: Target):
        self.t = target
        tm = target.timing
        self.hbm_latency = tm.hbm_latency_cycles
        self.remote_bpc = tm.remote_bytes_per_cycle
        self.remote_latency = tm.remote_latency_cycles
        self.misc_latency = tm.misc_latency_cycles
        self.mpe_latency = tm.mpe_latency_cycles
        self.barrier = tm.barrier_cycles
        self.ddr_bpc = tm.ddr_gbps * 1e9 / target.clock_hz
        self.burst = tm.axi_burst_bytes

    # -- per-instruction costs ----------------------------------------------------------------
    def hbm_cycles(self, nbytes: int, contiguous: bool) -> int:
        eff = self.t.hbm_same_channel_efficiency if contiguous else \
            self.t.hbm_cross_channel_efficiency
        return self.hbm_latency + math.ceil(nbytes / (self.t.hbm_bytes_per_cycle * eff))

    def issue_cycles(self, f: dict) -> int:
        """Cycles an LD/ST holds its queue: one per AXI burst.  Rows that follow each other
        in HBM and on chip (strides equal to the row) form one linear transfer, cut into
        bursts of at most `axi_burst_bytes`; strided rows need bursts of their own."""
        g = f.get
        rows, rb = max(1, rows_at_capacity(f)), g("row_bytes", 0)
        hs, bs = g("hbm_stride", 0), g("buf_stride", 0)
        if rows == 1 or (hs in (0, rb) and bs in (0, rb)):
            return max(1, _ceil(rows * rb, self.burst))
        return rows * max(1, _ceil(rb, self.burst))

    def mpe_passes(self, op: str, m: int, n: int, k: int, kept: int | None = None,
                   code_group: int = 0) -> tuple:
        """(passes, MAC slots per pass) of an MPE instruction.  A dense operand takes
        ceil(n/pn) * ceil(k/pk) passes per row block; a sparse one (``kept`` weights in N:16
        blocks) keeps the configurable chain full, so its kept weights fill pn * pk slots a pass
        (paper §3.2: the chain is reconfigured per block so that no DSP multiplies a zero).

        Codes in groups of `code_group` columns (`wcodes`): each chain output's combine DSP does
        M * P and B * A once per group, so groups shorter than two passes (G < 2 pk) halve the
        rate; and a row block's first output pass waits for its rows' group sums, made by
        `hw.design.CODE_SUM_TREES` adder trees (a block of more rows than trees takes that pass
        ceil(rows / trees) times)."""
        pm, pn, pk = self.t.mm_parallel if op == "MM" else self.t.mv_parallel
        inner = _ceil(n, pn) * _ceil(k, pk) if kept is None else _ceil(kept, pn * pk)
        passes = _ceil(m, pm) * inner
        if code_group:
            if code_group < 2 * pk:
                passes *= 2
            full, rest = divmod(m, pm)
            waits = full * (_ceil(pm, CODE_SUM_TREES) - 1) + (
                _ceil(rest, CODE_SUM_TREES) - 1 if rest else 0)
            passes += waits * _ceil(k, pk)
        return passes, pm * pn * pk

    def mpe_cycles(self, op: str, m: int, n: int, k: int, kept: int | None = None,
                   code_group: int = 0) -> int:
        return self.mpe_latency + self.mpe_passes(op, m, n, k, kept, code_group)[0]

    def mpe_slots(self, op: str, f: dict) -> tuple:
        """MAC slots of an MPE instruction: (configurable sparse chain, fixed dense chain)."""
        m, n, k, kept = mpe_operand(f)
        passes, width = self.mpe_passes(op, m, n, k, kept, isa.code_group(f.get("wcodes", 0)))
        return passes * width, self.mpe_passes(op, m, n, k)[0] * width

    def misc_elements(self, f: dict) -> int:
        """Elements a MISC instruction processes at capacity (two-pass ops read them twice)."""
        mop = isa.MISC_OPS[f.get("op", 0)] if f.get("op", 0) < len(isa.MISC_OPS) else "?"
        return _passes(mop, f) * f.get("rows", 0) * f.get("k", 0)

    def misc_cycles(self, mop: str, rows: int, k: int, f: dict | None = None) -> int:
        passes = _passes(mop, f or {})
        return self.misc_latency + passes * _ceil(rows * k, self.t.misc_elements_per_cycle)

    def cost(self, op: str, f: dict, ports=()):
        """(cycles, [HBM channels], HBM bytes, MACs) of one instruction at capacity; `ports`
        are the core's channels (a striped LD uses `stripe` of them at once)."""
        g = f.get
        if op in ("LD", "ST"):
            rows, rb = rows_at_capacity(f), g("row_bytes", 0)
            nbytes = rows * rb
            if g("remote", 0):
                return self.remote_latency + _ceil(nbytes, int(self.remote_bpc)), [], 0, 0
            chans = stripe_channels(f, ports)
            contiguous = rows <= 1 or g("hbm_stride", 0) == rb
            return self.hbm_cycles(nbytes // len(chans), contiguous), chans, nbytes, 0
        if op in _MPE:
            m, n, k, kept = mpe_operand(f)
            return (self.mpe_cycles(op, m, n, k, kept, isa.code_group(g("wcodes", 0))), [], 0,
                    m * (n * k if kept is None else kept))
        if op == "MISC":
            mop = isa.MISC_OPS[g("op", 0)] if g("op", 0) < len(isa.MISC_OPS) else "?"
            return self.misc_cycles(mop, g("rows", 0), g("k", 0), f), [], 0, 0
        return self.barrier, [], 0, 0

    # -- scheduling -----------------------------------------------------------------------------
    def schedule(self, streams: list, keep_events: bool = True) -> Timeline:
        """Schedule per-core streams of (op, fields[, word]) tuples; returns the Timeline.

        A SYS barrier with `fence=all` drains every queue.  One with `fence=compute` drains the
        compute queues (MM, MV, MISC), ST and remote LDs, and the HBM loads issued before the
        previous barrier: an HBM load may run across one barrier (docs/isa.md), waiting only for
        its tokens and the barrier before that."""
        n_cores = len(streams)
        pcs = [0] * n_cores
        words = [0] * n_cores                      # instruction bytes fetched so far, per core
        t0 = 0                                      # start of the current phase
        t_prev = 0                                  # ... and of the one before (HBM loads)
        events, stalls, hbm, macs = [], {}, {}, 0
        slots = [0, 0]                              # configurable, fixed
        tally = {"written": 0, "fixed_chain_macs": 0, "misc_elements": 0}
        insns = {}                                  # op -> instructions
        fetch_bpc = self.ddr_bpc / n_cores          # the cores share the instruction bank
        chan_free = {}
        ports = [self.t.channels_of(c) if c < self.t.cores else () for c in range(n_cores)]
        done = [False] * n_cores
        fifos = [{} for _ in range(n_cores)]        # tokens live across compute-only barriers
        ld_free = [0] * n_cores                     # LD queue: free to issue the next load
        ld_open = [0] * n_cores                     # last HBM-load end of the current phase
        ld_carry = 0                                # ... of the phase before, all cores
        fence_prev = False                          # the barrier that opened this phase
        while not all(done):
            phase_end = t0
            fence = 0
            ld_last = 0
            for c in range(n_cores):
                if done[c]:
                    continue
                unit_free = {u: t0 for u in UNITS}
                if fence_prev:
                    unit_free["LD"] = max(ld_free[c], t_prev)
                fifo = fifos[c]
                stream = streams[c]
                ld_open[c] = 0
                while pcs[c] < len(stream):
                    item = stream[pcs[c]]
                    op, f = item[0], item[1]
                    pc = item[2] if len(item) > 2 else pcs[c]
                    pcs[c] += 1
                    words[c] += 4 * isa.FORMATS[op].words
                    insns[op] = insns.get(op, 0) + 1
                    if op == "SYS":
                        if f.get("op", 0) == 1:
                            done[c] = True
                        else:
                            fence = f.get("fence", 0)
                        break
                    unit = op
                    res = "MPE" if op in _MPE else unit
                    cycles, chans, nbytes, mac = self.cost(op, f, ports[c])
                    ready = {"unit": unit_free.get(res, t0), "fetch": int(words[c] / fetch_bpc)}
                    if op == "LD" and (f.get("remote", 0) or not fence_prev):
                        ready["barrier"] = t0
                    wait = f.get("wait", 0)
                    for p, src in enumerate(UNITS):
                        if wait >> p & 1:
                            q = fifo.get((src, unit))
                            ready["wait " + src] = q.pop(0) if q else t0
                    for ch in chans:
                        ready["hbm channel"] = max(ready.get("hbm channel", 0),
                                                   chan_free.get(ch, 0))
                    start = max(ready.values())
                    base = ready["unit"]
                    if start > base:
                        cause = max(ready, key=ready.get)
                        key = (unit, cause)
                        stalls[key] = stalls.get(key, 0) + start - base
                    end = start + cycles
                    # The memory controller pipelines requests: an LD/ST occupies its queue
                    # only while issuing (one AXI burst request per cycle); the channels stay
                    # busy until the data has moved, and tokens are released then.
                    unit_free[res] = start + self.issue_cycles(f) if chans else end
                    # The MPE pipelines instructions: it takes the next one after the last
                    # pass; the result (and the tokens) come mpe_latency cycles later (RTL).
                    if op in _MPE:
                        unit_free[res] = end - self.mpe_latency
                    # A pseudo-channel is busy while its data moves; the access latency
                    # overlaps the transfer of the request before (AXI reads are pipelined).
                    for ch in chans:
                        chan_free[ch] = end - self.hbm_latency
                        hbm[ch] = hbm.get(ch, 0) + nbytes // len(chans)
                        tally["written"] += nbytes // len(chans) if op == "ST" else 0
                    macs += mac
                    tally["misc_elements"] += self.misc_elements(f) if op == "MISC" else 0
                    if op in _MPE:
                        conf, fixed = self.mpe_slots(op, f)
                        slots[0] += conf
                        slots[1] += fixed
                        m, n, k, _ = mpe_operand(f)
                        tally["fixed_chain_macs"] += m * n * k
                    rel = f.get("release", 0)
                    for p, dst in enumerate(UNITS):
                        if rel >> p & 1:
                            fifo.setdefault((unit, dst), []).append(end)
                    if keep_events:
                        events.append(Event(c, unit, op, pc, start, end,
                                            chans[0] if chans else -1, nbytes, mac))
                    if op == "LD" and chans:
                        ld_open[c] = max(ld_open[c], end)
                    else:
                        phase_end = max(phase_end, end)
                ld_free[c] = unit_free["LD"]
                # (an LD's issue ends before its data has moved: ld_open / the events count it)
                phase_end = max(phase_end, max(v for u, v in unit_free.items() if u != "LD"))
                ld_last = max(ld_last, ld_open[c])
            if fence and not all(done):
                # loads of this phase may run on; those of the phase before may not
                phase_end = max(phase_end, ld_carry)
                ld_carry = ld_last
            else:
                phase_end = max(phase_end, ld_carry, ld_last)
                ld_carry = 0
            fence_prev = fence and not all(done)
            t_prev, t0 = t0, phase_end + self.barrier
        read = sum(hbm.values()) - tally["written"]
        totals = Counters(instructions=sum(insns.values()),
                          mpe_instructions=sum(insns.get(u, 0) for u in _MPE),
                          misc_instructions=insns.get("MISC", 0), macs=macs,
                          fixed_chain_macs=tally["fixed_chain_macs"],
                          misc_elements=tally["misc_elements"], hbm_bytes_read=read,
                          hbm_bytes_written=tally["written"], cycles=t0)
        return Timeline(events, self.t.clock_hz, totals, stalls, hbm, *slots)

    def schedule_image(self, image, keep_events: bool = True) -> Timeline:
        """Schedule a packed instruction image (uint32 array) as compiled (`keep_events`: keep
        the per-instruction events a Gantt chart draws; the figures are the same without)."""
        table = isa.image_table(image)
        streams = []
        for off, n in table:
            streams.append([(i.op, i.fields) for i in isa.decode_stream(image[off:off + n])])
        return self.schedule(streams, keep_events)

    def schedule_step(self, step) -> Timeline:
        """Schedule a StepProgram without events: from the instructions it was compiled from
        when it still has them (no decoding), else from its image."""
        streams = getattr(step, "compiled_streams", None)
        return self.schedule(streams, keep_events=False) if streams else \
            self.schedule_image(step.image, keep_events=False)


def roofline_cycles(target: Target, hbm_bytes: int, macs: int, mpe_macs_per_cycle=None,
                    channels: int | None = None) -> tuple:
    """(memory bound, compute bound) in cycles: bytes / peak bandwidth, MACs / peak MPE rate."""
    chs = channels or sum(len(c) for c in target.core_channels)
    mem = hbm_bytes / (chs * target.hbm_bytes_per_cycle)
    rate = mpe_macs_per_cycle or target.cores * target.mm_macs_per_cycle
    return mem, macs / rate
