"""A compiled program made resident on an overlay: HBM/DDR buffers, one call per step, logits back.

Only the overlay's drivers and pynq buffers are used here, so the same code runs on the
simulated U280 and on a card.  Per step the host writes the new tokens' embeddings into each
core's input region, syncs just that slice, runs the scheduler with pos/len, then syncs back just
the logits slice of each core.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import pynq

from ..compiler.buckets import BucketTable
from ..compiler.program import Program
from ..errors import ContextLengthError, DeviceError, FlightLLMError
from ..spec.counters import CounterField, Counters


@dataclass
class StepStats:
    """Counters accumulated over runs (from the compute units' registers), and where they ran."""

    counters: Counters = field(default_factory=Counters)   # summed over the runs
    runs: int = 0
    per_step: dict = field(default_factory=dict)     # step kind -> runs
    buckets: dict = field(default_factory=dict)      # bucket step name -> runs
    bucket_hits: int = 0         # runs whose bucket stream was already in DDR
    bucket_misses: int = 0       # runs that first had to load (and maybe compile) their bucket
    bucket_compiles: int = 0     # bucket streams compiled during this session
    step_cycles: dict = field(default_factory=dict)  # step name -> device cycles

    instructions = CounterField()
    macs = CounterField()
    fixed_chain_macs = CounterField()
    hbm_bytes = CounterField()
    device_cycles = CounterField("cycles")

    def add(self, name: str, stats: Counters) -> None:
        """Count one run of step `name` (`stats`: the run's counters, e.g. a RunStats)."""
        self.runs += 1
        self.counters = self.counters + stats
        self.per_step[name] = self.per_step.get(name, 0) + 1
        self.step_cycles[name] = self.step_cycles.get(name, 0) + stats.cycles

    def copy(self) -> "StepStats":
        """The counters as they are now (for `since`): numbers and one level of dicts."""
        out = StepStats(**{f.name: getattr(self, f.name) for f in fields(self)})
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                setattr(out, f.name, dict(value))
        return out

    def since(self, before: "StepStats") -> "StepStats":
        """What was counted after `before` (a copy taken earlier): field by field differences
        (`counters` by `Counters` subtraction)."""
        out = StepStats()
        for f in fields(self):
            now, then = getattr(self, f.name), getattr(before, f.name)
            if isinstance(now, dict):
                diff = {k: v - then.get(k, 0) for k, v in now.items()}
                setattr(out, f.name, {k: v for k, v in diff.items() if v})
            else:
                setattr(out, f.name, now - then)
        return out


class Session:
    """`program` loaded on `overlay`; `run(step, token_ids, pos)` returns logits.

    What is shared: the overlay (and its device) may serve several Sessions, also from several
    threads; it runs one program at a time (`FlightLLMOverlay.run_lock`).  What is not: a
    Session owns its buffers (weights, KV cache, I/O regions, instruction images) and holds one
    sequence, so use each Session from one thread at a time.  The Program is read-only once
    loaded, except that compiling a missing bucket adds it to `program.steps`."""

    def __init__(self, overlay, program: Program, timeout: float = 60.0):
        if program.meta.get("shape_only"):
            raise DeviceError("this program was compiled from shapes alone (no weights): it is "
                              "for timing and storage studies; compile a checkpoint to run it")
        if program.target != overlay.target.name:
            raise DeviceError(f"program was compiled for target {program.target!r}; the overlay "
                              f"is {overlay.target.name!r}: recompile for it")
        self.overlay, self.program, self.timeout = overlay, program, timeout
        self.buckets = BucketTable(program, overlay.target)
        self.stats = StepStats()
        self._buffers = []
        self.channels = {}
        try:
            for ch, size in sorted(program.channel_size.items()):
                buf = self._alloc(size, self._bank(f"HBM{ch}"))
                static = program.channel_static.get(ch)
                n = 0 if static is None else static.size
                if n:
                    buf[:n] = static
                if not getattr(getattr(buf, "memory", None), "zeroed", False):
                    buf[n:] = 0
                    buf.sync_to_device()
                elif n:                             # the rest is zeros on both sides already
                    buf[:n].sync_to_device()
                self.channels[ch] = buf
            self.images = {}
            self._insn_bank = self._bank(f"DDR{overlay.target.instruction_bank}")
        except Exception:
            self.close()
            raise

    def _bank(self, name):
        try:
            return getattr(self.overlay, name)
        except AttributeError:
            raise DeviceError(f"the overlay has no memory bank {name}; its banks are "
                              f"{sorted(self.overlay.mem_dict)}") from None

    def _alloc(self, nbytes, bank):
        buf = pynq.allocate((int(nbytes),), np.uint8, target=bank)
        self._buffers.append(buf)
        return buf

    def image(self, kind: str, end: int, exact: bool = False):
        """The DDR buffer holding the bucket stream for a `kind` step ending at `end`, loaded
        (and compiled) on first use: one stream per bucket, loaded once and reused.  With
        `exact`, a stream compiled for exactly `end` positions instead (for comparisons)."""
        st, compiled = (self.buckets.exact if exact else self.buckets.step)(kind, end)
        self.stats.bucket_compiles += compiled
        buf = self.images.get(st.name)
        if buf is None:
            self.stats.bucket_misses += 1
            buf = self._alloc(st.image.nbytes, self._insn_bank)
            buf[:] = st.image.view(np.uint8)
            buf.sync_to_device()
            self.images[st.name] = buf
        else:
            self.stats.bucket_hits += 1
        return st, buf

    def _region(self, ch: int, offset: int, nbytes: int):
        return self.channels[ch][offset:offset + nbytes]

    def run(self, step: str, token_ids, pos: int, exact: bool = False) -> np.ndarray:
        """Run one step on `token_ids` placed at positions pos..; returns (rows, vocab) float32
        logits: every row for a step compiled with all_logits, else the last row only."""
        p = self.program
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        n = ids.size
        rows = p.step(step).rows
        if not 1 <= n <= rows:
            raise ContextLengthError(f"step {step!r} runs 1..{rows} tokens at a time, got {n}")
        if pos < 0 or pos + n > p.ctx:
            raise ContextLengthError(f"positions {pos}..{pos + n - 1} exceed the program's "
                                     f"context of {p.ctx} tokens; shorten the prompt or "
                                     f"compile with a larger context")
        if ids.min() < 0 or ids.max() >= p.vocab_size:
            raise FlightLLMError(f"token id out of range 0..{p.vocab_size - 1}")
        st, image = self.image(step, pos + n, exact)
        # the rows the stream reads: the tokens, then zeros up to the step's rows
        rows_in = np.zeros((max(st.rows, n), p.dim), np.float16)
        rows_in[:n] = p.embedding[ids]
        raw = rows_in.view(np.uint8).reshape(-1)
        for io in p.io:
            region = self._region(io.input_channel, io.input_offset, raw.size)
            region[:] = raw
            region.sync_to_device()
        stats = self.overlay.run(image, pos, n, self.channels, timeout=self.timeout)
        self.stats.add(step, stats)
        self.stats.buckets[st.name] = self.stats.buckets.get(st.name, 0) + 1
        rows = n if st.all_logits else 1
        logits = np.zeros((rows, p.vocab_size), np.float32)   # the cores' ranges cover it
        for io in p.io:
            vc = io.vocab_stop - io.vocab_start
            region = self._region(io.logits_channel, io.logits_offset, rows * vc * 2)
            region.sync_from_device()
            logits[:, io.vocab_start:io.vocab_stop] = np.asarray(region).view(np.float16).reshape(rows, vc)
        return logits

    def trace(self, ckpt, prompt, chat: bool = True, progress: bool | None = None):
        """Layer-by-layer errors of `prompt` on this overlay against `ckpt`'s float reference
        (a `trace.TraceReport`); runs a traced copy of this session's program in its own
        buffers.  The program must be compiled from `ckpt` (or its compressed form), here or
        into the program file it was loaded from.  progress: a bar over the three stages
        (default: in a terminal or a notebook, see `compiler.show_progress`)."""
        from tqdm.auto import tqdm

        from ..compiler import show_progress
        from .trace import trace, trace_program
        with tqdm(total=3, desc="trace", unit="stage", disable=not show_progress(progress)) as bar:
            bar.set_postfix_str("traced streams")
            program = trace_program(self.program)
            bar.update()
            with Session(self.overlay, program, self.timeout) as traced:
                return trace(traced, ckpt, prompt, chat, bar)

    def close(self) -> None:
        for buf in self._buffers:
            try:
                buf.freebuffer()
            except Exception:       # already freed: freeing twice is harmless here
                pass
        self._buffers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
