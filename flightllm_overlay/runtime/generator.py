"""Generator: prefill then decode on the accelerator, sampling and streaming tokens as they come."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ..compiler.identity import check_tokenizer
from ..errors import ContextLengthError
from ..spec.counters import CounterField, Counters
from .sampling import SamplingParams, sample
from .session import Session


@dataclass
class Token:
    """One generated token: its id and the text it adds (may be empty mid-character)."""

    id: int
    text: str
    index: int


@dataclass
class GenerationStats:
    """What one generate() call did, on the host and on the device."""

    clock_hz: float                  # the target's clock, for the predicted rates
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    counters: Counters = field(default_factory=Counters)   # the device's, this call's runs
    runs: dict = field(default_factory=dict)
    step_cycles: dict = field(default_factory=dict)
    buckets: dict = field(default_factory=dict)      # bucket stream -> runs
    bucket_hits: int = 0
    bucket_misses: int = 0
    bucket_compiles: int = 0
    finish_reason: str = ""

    instructions = CounterField()
    macs = CounterField()
    fixed_chain_macs = CounterField()
    hbm_bytes = CounterField()
    device_cycles = CounterField("cycles")

    @property
    def predicted_decode_tokens_per_second(self) -> float:
        """U280 decode rate the timing model predicts for the program that ran (a prediction:
        nothing has run on a card); 0 when the device reports no cycles."""
        runs, cycles = self.runs.get("decode", 0), self.step_cycles.get("decode", 0)
        return runs * self.clock_hz / cycles if cycles else 0.0

    @property
    def predicted_prefill_seconds(self) -> float:
        return self.step_cycles.get("prefill", 0) / self.clock_hz

    @property
    def decode_tokens_per_second(self) -> float:
        """Host wall-clock decode rate (on the simulator: simulation speed, not U280 speed)."""
        n = max(self.generated_tokens - 1, 0)
        return n / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"{self.prompt_tokens} prompt + {self.generated_tokens} generated tokens; "
                f"prefill {self.prefill_seconds:.2f} s, decode {self.decode_tokens_per_second:.1f} "
                f"tok/s (host); {self.instructions:,} instructions, {self.macs / 1e9:.2f} GMAC, "
                f"{self.hbm_bytes / 2**20:.1f} MiB HBM traffic; predicted U280: prefill "
                f"{self.predicted_prefill_seconds * 1e3:.2f} ms, decode "
                f"{self.predicted_decode_tokens_per_second:.0f} tok/s (timing model); "
                f"buckets used {len(self.buckets)} (compiled {self.bucket_compiles}, loaded "
                f"{self.bucket_misses}, reused {self.bucket_hits}); "
                f"stop: {self.finish_reason}")


class Generator:
    """Text generation with a compiled program on an overlay.

    Parameters
    ----------
    session : Session
        The program resident on an overlay (see `Generator.load` for the one-call way).
    tokenizer : flightllm_overlay.model.Tokenizer
        The tokenizer of the model the program was compiled from (another model's is refused).
    cache : ProgramCache, optional
        Where to store the bucket streams a generation compiles; by default the cache the
        program came from (``compile_model(..., cache=True)``), if any.

    Threads: a Generator and its Session serve one generation at a time; give each thread its
    own (they may share one overlay, which serialises the runs).  `stop` may be called from any
    thread.
    """

    def __init__(self, session: Session, tokenizer, cache=None):
        check_tokenizer(session.program, tokenizer)   # another model's tokenizer: an error
        self.session, self.tokenizer = session, tokenizer
        self.stats = GenerationStats(session.overlay.target.clock_hz)
        entry = getattr(session.program, "cache_entry", None)
        if cache is None and entry is not None:       # compile_model(..., cache=True)'s program
            from ..compiler.cache import ProgramCache
            cache = ProgramCache(entry.parent)
        self.cache = cache           # a ProgramCache holding session.program, or None
        self._stop = threading.Event()

    @classmethod
    def load(cls, model=None, overlay=None, ctx: int | None = None, progress: bool = True,
             cache=True):
        """Load a checkpoint (default SmolLM2-135M-Instruct), compile it, put it on an overlay
        (default: `FlightLLMOverlay()`, the simulated U280 when no card is present).

        cache: True (default) takes the program from the program cache ($FLIGHTLLM_CACHE or
        ~/.cache/flightllm_overlay), compiling and storing it on a miss, as `flightllm
        generate` does; a folder or a `ProgramCache` names another cache; False compiles."""
        from ..compiler import compile_model
        from ..compiler.cache import ProgramCache
        from ..model import load_checkpoint
        from ..overlay import FlightLLMOverlay
        from ..sim import native
        native.prepare()                            # built while the model compiles
        ckpt = load_checkpoint(model, lazy=True)    # weights read only if it compiles
        store = None
        if cache is not False and cache is not None:
            store = cache if isinstance(cache, ProgramCache) else \
                ProgramCache(None if cache is True else cache)
        program = compile_model(ckpt, ctx=ctx, progress=progress, cache=store or False)
        overlay = overlay or FlightLLMOverlay()
        return cls(Session(overlay, program), ckpt.tokenizer, cache=store)

    @property
    def context_length(self) -> int:
        return self.session.program.ctx

    def stop(self) -> None:
        """Ask a running generation to stop after the current token (thread-safe)."""
        self._stop.set()

    def encode_prompt(self, prompt, chat: bool = True, system: str | None = None) -> list:
        return self.tokenizer.encode_prompt(prompt, chat, system)

    def prefill(self, ids: list) -> np.ndarray:
        """Run the prompt through in chunks of the prefill step's rows; last row's logits."""
        rows = self.session.program.step("prefill").rows
        logits = None
        for start in range(0, len(ids), rows):
            logits = self.session.run("prefill", ids[start:start + rows], start)
        return logits[-1]

    def decode_one(self, token: int, pos: int) -> np.ndarray:
        return self.session.run("decode", [token], pos)[-1]

    def generate(self, prompt, max_new_tokens: int = 128, sampling: SamplingParams | None = None,
                 stop_ids=None, chat: bool = True, callback: Callable[[Token], None] | None = None,
                 **sampling_kw) -> Iterator[Token]:
        """Yield tokens as they are generated (also passed to `callback`).

        `prompt` is text (wrapped in the chat template when `chat` and the model has one) or a
        list of token ids.  Sampling: `sampling` or keywords temperature/top_k/top_p/seed.
        """
        sampling = sampling or SamplingParams(**sampling_kw)
        ids = self.encode_prompt(prompt, chat)
        ctx = self.context_length
        if not ids:
            raise ContextLengthError("the prompt is empty; give at least one token")
        if len(ids) >= ctx:
            raise ContextLengthError(f"the prompt has {len(ids)} tokens but the context holds "
                                     f"{ctx} (prompt plus at least one new token); shorten it or "
                                     f"compile with a larger context")
        stop = set(self.tokenizer.stop_ids if stop_ids is None else stop_ids)
        rng = np.random.default_rng(sampling.seed)
        self._stop.clear()
        st = self.stats = GenerationStats(prompt_tokens=len(ids),
                                          clock_hz=self.session.overlay.target.clock_hz)
        before = self.session.stats.copy()
        decoder = self.tokenizer.stream_decoder(skip_special_tokens=True)
        t0 = time.perf_counter()
        logits = self.prefill(ids)
        st.prefill_seconds = time.perf_counter() - t0
        pos = len(ids)
        t_dec = time.perf_counter()
        reason = "length"
        try:
            for i in range(max_new_tokens):
                tok = sample(logits, sampling, rng)
                st.generated_tokens += 1
                if tok in stop:
                    reason = "stop token"
                    break
                token = Token(tok, decoder.push(tok), i)
                if callback is not None:
                    callback(token)
                yield token
                if self._stop.is_set():
                    reason = "stopped"
                    break
                if pos >= ctx or i == max_new_tokens - 1:
                    reason = "context full" if pos >= ctx else "length"
                    break
                logits = self.decode_one(tok, pos)
                pos += 1
            tail = decoder.flush()
            if tail:
                token = Token(-1, tail, st.generated_tokens)
                if callback is not None:
                    callback(token)
                yield token
        finally:
            st.decode_seconds = time.perf_counter() - t_dec
            st.finish_reason = reason
            _accumulate(st, self.session.stats.since(before))
            if self.cache is not None and st.bucket_compiles:
                self.cache.sync(self.session.program)    # keep the buckets compiled on the way

    def generate_text(self, prompt, max_new_tokens: int = 128, **kw) -> str:
        """The whole completion as one string."""
        return "".join(t.text for t in self.generate(prompt, max_new_tokens, **kw))


def _accumulate(st: GenerationStats, d) -> None:
    """Copy the device counters of one generation (a StepStats difference) into `st`."""
    for name in ("counters", "step_cycles", "buckets", "bucket_hits", "bucket_misses",
                 "bucket_compiles"):
        setattr(st, name, getattr(d, name))
    st.runs = d.per_step
