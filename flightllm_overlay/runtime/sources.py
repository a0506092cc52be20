"""Where a run's model and program come from: a checkpoint name, a program file, a compressed checkpoint, the cache.

The command line and the Python API make the same choice through these functions, so the
CLI only parses arguments and prints.  `log` is a callable taking one line (the CLI passes a
printer to stderr; the default is silent).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import CheckpointError, FlightLLMError


def _silent(_line: str) -> None:
    pass


def load_model(name_or_path, purpose: str = "run", lazy: bool = False):
    """load_checkpoint, with a hint when `name_or_path` is a shape-table name and no file.

    A name like ``smollm2-360m`` names shapes for predictions (``bench --shape``), not weights:
    it cannot be run or compiled into a program.  lazy: read the weights on first use (a run
    whose program comes from the cache or a file never reads them).
    """
    from ..model import load_checkpoint
    from ..model.args import MODEL_TABLE
    if name_or_path is not None and str(name_or_path) in MODEL_TABLE \
            and not Path(str(name_or_path)).expanduser().exists():
        raise CheckpointError(
            f"{name_or_path!r} is a shape from the shape table (shapes only, no weights), so it "
            f"cannot {purpose}: for predicted figures use `flightllm bench --shape "
            f"{name_or_path}`; to {purpose} a model pass 'smollm2-135m-instruct' (the default), "
            f"a Hugging Face folder or a .gguf file")
    return load_checkpoint(name_or_path, lazy=lazy)


@dataclass
class ProgramSource:
    """A program ready to run and what it came from (`cache` is set when the cache supplied it)."""

    program: object
    origin: str
    cache: object = None

    def keep_new_buckets(self, compiled: int) -> None:
        """Store the buckets compiled during a run back into the cache it came from."""
        if self.cache is not None and compiled:
            self.cache.sync(self.program)


def program_for(ckpt, program_path=None, compressed=None, ctx: int | None = None,
                use_cache: bool = True, log: Callable[[str], None] = _silent) -> ProgramSource:
    """The program a generation of `ckpt` runs.

    In order of precedence: a program file (`program_path`), a compressed checkpoint
    (`compressed`, compiled now; it must come from `ckpt`), the program cache, or a fresh W8A8
    compile (`use_cache=False`).
    """
    if program_path is not None and compressed is not None:
        raise FlightLLMError("give either a program file or a compressed checkpoint, not both: "
                             "a program file already holds its (compressed or W8A8) weights")
    if program_path is not None:
        from ..compiler import Program
        return ProgramSource(Program.load(program_path), f"program file {program_path}")
    if compressed is not None:
        from ..compiler import compile_compressed
        cm = load_compressed_for(ckpt, compressed)
        log(f"compiling {compressed} ({cm.config.name})...")
        return ProgramSource(compile_compressed(cm, ctx=ctx), f"{compressed} ({cm.config.name})")
    if not use_cache:
        from ..compiler import compile_model
        log(f"compiling {ckpt.args.name} (W8A8)...")
        return ProgramSource(compile_model(ckpt, ctx=ctx), f"{ckpt.args.name} (W8A8), compiled")
    from ..compiler.cache import ProgramCache
    cache = ProgramCache()
    program = cache.get_or_compile(ckpt, ctx=ctx)
    origin = (f"{ckpt.args.name} (W8A8) {'from the cache' if cache.hits else 'compiled and cached'}"
              f" in {cache.root}")
    log(f"program for {origin}")
    return ProgramSource(program, origin, cache)


def load_compressed_for(ckpt, compressed):
    """CompressedModel.load(compressed), checked to come from the model `ckpt`."""
    from ..compress import CompressedModel
    cm = CompressedModel.load(compressed)
    if (cm.args.n_layers, cm.args.dim, cm.args.vocab_size) != \
            (ckpt.args.n_layers, ckpt.args.dim, ckpt.args.vocab_size):
        raise CheckpointError(f"{compressed} was compressed from another model ({cm.source}), "
                              f"not {ckpt.args.name}; pass that model with --model")
    return cm


def perplexity_runners(ckpt, compressed=None, window: int = 512, on_overlay: bool = False,
                       log: Callable[[str], None] = _silent) -> dict:
    """{label: runner} for `compare`: the float reference, the compressed weights in float
    emulation (with `compressed`), and the compiled program on the overlay (`on_overlay`)."""
    from ..compress import Emulator, reference_runner
    runners = {"float reference": reference_runner(ckpt)}
    cm = None
    if compressed is not None:
        cm = load_compressed_for(ckpt, compressed)
        t = cm.totals()
        runners[f"{cm.config.name} (float emulation, {t['code_bits']:.2f} code bits, "
                f"density {t['density']:.3f})"] = Emulator(cm)
    if on_overlay:
        from ..compiler import compile_compressed, compile_model
        from ..overlay import FlightLLMOverlay
        from .perplexity import device_runner
        from .session import Session
        log(f"compiling {'the compressed checkpoint' if cm else ckpt.args.name + ' (W8A8)'} "
            f"with all logits...")
        program = (compile_compressed(cm, ctx=window, all_logits=True) if cm is not None
                   else compile_model(ckpt, ctx=window, all_logits=True))
        overlay = FlightLLMOverlay()
        what = cm.config.name if cm is not None else "w8a8"
        where = "simulated U280" if overlay.is_simulated else "U280"
        runners[f"{what} on the overlay ({where})"] = device_runner(Session(overlay, program),
                                                                    window)
    return runners


def perplexity_text(ckpt, text_path=None, tokens: int = 8192, window: int = 512):
    """(token ids, where they come from) for a perplexity run, checked against the model."""
    if ckpt.tokenizer is None:
        raise CheckpointError(f"{ckpt.source} has no tokenizer; perplexity needs one")
    if text_path is not None:
        path = Path(text_path)
        if not path.is_file():
            raise FlightLLMError(f"text file {text_path} does not exist")
        body, where = path.read_text(encoding="utf-8", errors="replace"), str(text_path)
    else:
        from ..data import text
        body, where = text("eval"), "the bundled evaluation text"
    ids = ckpt.tokenizer.encode(body)[:tokens]
    if len(ids) < 2:
        raise FlightLLMError(f"{where} gives {len(ids)} tokens; perplexity needs at least 2")
    if window > ckpt.args.max_seq_len:
        raise FlightLLMError(f"--window {window} exceeds the model's context "
                             f"{ckpt.args.max_seq_len}")
    return ids, where


def trace_prompt(ckpt, prompt, compressed=None, ctx: int | None = None, chat: bool = True,
                 overlay=None, log=lambda line: None):
    """Compile `ckpt` (W8A8, or the compressed checkpoint `compressed` made from it) with
    tracing, run `prompt` on `overlay` (default: FlightLLMOverlay()) and on the float reference;
    returns a `trace.TraceReport`."""
    from .session import Session
    from .trace import trace, trace_program
    if compressed is not None:
        from ..compiler import compile_compressed
        cm = load_compressed_for(ckpt, compressed)
        log(f"compiling {compressed} ({cm.config.name}) with tracing...")
        program = compile_compressed(cm, ctx=ctx)
    else:
        from ..compiler import compile_model
        log(f"compiling {ckpt.args.name} (W8A8) with tracing...")
        program = compile_model(ckpt, ctx=ctx)
    if overlay is None:
        from ..overlay import FlightLLMOverlay
        overlay = FlightLLMOverlay()
    with Session(overlay, trace_program(program)) as session:
        return trace(session, ckpt, prompt, chat)
