"""The `flightllm` command: generate, info, compile, disasm, selftest, bench, compress, ppl."""
from __future__ import annotations

import argparse
import sys
import time

from .errors import FlightLLMError

DEFAULT_PROMPT = "What is the capital of France?"


def _model_arg(p):
    p.add_argument("--model", default=None,
                   help="'smollm2-135m-instruct' (default), a Hugging Face folder "
                        "(config.json + safetensors) or a .gguf file")


def _add_generate(sub):
    p = sub.add_parser("generate", help="stream text from a model on the overlay",
                       description="Generate text on the FlightLLM overlay (the simulated U280 "
                                   "when no card is present), streaming tokens as they come.")
    p.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, help="the prompt text")
    _model_arg(p)
    p.add_argument("--program", default=None, help="a program file from `flightllm compile` "
                                                   "(skips compiling; the model still gives the tokenizer)")
    p.add_argument("--compressed", default=None,
                   help="a checkpoint from `flightllm compress` to run instead of W8A8 (the model "
                        "still gives the tokenizer)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ctx", type=int, default=None, help="KV-cache capacity in tokens")
    p.add_argument("--no-chat", action="store_true", help="do not wrap the prompt in the chat template")
    p.add_argument("--stats", action="store_true", help="print run statistics at the end")
    p.add_argument("--no-cache", action="store_true",
                   help="compile afresh instead of using the program cache "
                        "($FLIGHTLLM_CACHE or ~/.cache/flightllm_overlay)")
    p.set_defaults(func=cmd_generate)


def _add_info(sub):
    p = sub.add_parser("info", help="show the device, its compute units and memories",
                       description="Load the overlay and describe the device, the IPs (with "
                                   "VLNVs and drivers) and the memory banks.")
    p.set_defaults(func=cmd_info)


def _add_compile(sub):
    p = sub.add_parser("compile", help="compile a model into a program file",
                       description="Quantise (W8A8) and compile a checkpoint for the target; "
                                   "write a program file that `generate --program` and `disasm` read.")
    _model_arg(p)
    p.add_argument("-o", "--output", required=True, help="program file to write")
    p.add_argument("--target", default="u280")
    p.add_argument("--ctx", type=int, default=None, help="KV-cache capacity in tokens")
    p.add_argument("--all-logits", action="store_true",
                   help="prefill writes logits for every position (for perplexity)")
    p.add_argument("--all-buckets", action="store_true",
                   help="compile every length bucket now (128-token prefill, 16-token decode) "
                        "instead of on first use, and report instruction storage")
    p.set_defaults(func=cmd_compile)


def _add_disasm(sub):
    p = sub.add_parser("disasm", help="disassemble a program file",
                       description="Print the instructions of a program file, per step and core.")
    p.add_argument("program", help="program file from `flightllm compile`")
    p.add_argument("--step", default=None, help="only this step (prefill or decode)")
    p.add_argument("--core", type=int, default=None, help="only this core")
    p.add_argument("--head", type=int, default=0, help="print at most this many lines (0: all)")
    p.set_defaults(func=cmd_disasm)


def _add_bench(sub):
    p = sub.add_parser("bench", help="predicted U280 performance of a model (timing model)",
                       description="Compile a model and predict, with the timing model, prefill "
                                   "latency, decode ms/token and tokens/s, HBM bandwidth and MPE "
                                   "utilisation, roofline bounds and decode stalls for a "
                                   "[prefill, decode] workload. Predictions, not measurements.")
    _model_arg(p)
    p.add_argument("--shape", default=None,
                   help="compile a model of the shape table from its shapes alone instead "
                        "(e.g. smollm2-360m, tinyllama-1.1b)")
    p.add_argument("--workload", type=int, nargs=2, default=[128, 512],
                   metavar=("PREFILL", "DECODE"))
    p.add_argument("--weight-bits", type=int, default=None, choices=(2, 3, 4, 8),
                   help="with --shape: linear weights in this many bits (default 8; the paper "
                        "runs LLaMA2-7B at 4)")
    p.add_argument("--qk-density", type=float, default=1.0,
                   help="with --shape: N:16 density of the Q and K projections (the paper: 0.7)")
    p.add_argument("--target", default="u280")
    p.add_argument("--ctx", type=int, default=None)
    p.add_argument("--schedule", default="paper",
                   help="schedule options: paper, all, or names joined by '+' "
                        "(stripe_all, compute_fence, balance_channels, mv_aligned_tiles, ...)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fused", dest="fused", action="store_true", default=True,
                   help="always-on-chip decode (default)")
    g.add_argument("--unfused", dest="fused", action="store_false",
                   help="ablation: every intermediate through HBM")
    p.add_argument("--gantt", default=None, help="write a per-unit Gantt chart of one decode "
                                                  "step to this PNG file")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from .bench import bench, gantt
    from .compiler import compile_model, compile_shapes
    from .config import load_target
    from .sim.timing import TimingModel
    target = load_target(args.target)
    if args.shape:
        from .model.args import ModelArgs
        margs = ModelArgs.from_name(args.shape)
        program = compile_shapes(margs, target, ctx=args.ctx, fused=args.fused,
                                 weight_bits=args.weight_bits or 8, qk_density=args.qk_density,
                                 schedule=args.schedule)
        name = args.shape
    else:
        if args.qk_density < 1:
            from .errors import CompileError
            raise CompileError("--qk-density applies to --shape models; compress a checkpoint "
                               "with `flightllm compress` to make it sparse")
        from .model import load_checkpoint
        ckpt = load_checkpoint(args.model)
        program = compile_model(ckpt, target, ctx=args.ctx, fused=args.fused,
                                weight_bits=args.weight_bits or 8, schedule=args.schedule)
        name = ckpt.args.name
    pre, dec = args.workload
    if pre + dec > program.ctx:
        from .errors import ContextLengthError
        raise ContextLengthError(f"workload [{pre}, {dec}] exceeds the context {program.ctx}")
    result = bench(program, target, pre, dec, name)
    print(result.report())
    if args.gantt:
        step, _ = program.bucket_step("decode", pre + 1, target)
        print(f"wrote {gantt(TimingModel(target).schedule_image(step.image), args.gantt, f'{name}: one decode step ({step.name}), predicted')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flightllm", description="FlightLLM overlay toolkit: "
                                     "run compressed LLMs on an Alveo U280 (or its simulation).")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_generate, _add_info, _add_compile, _add_disasm, _add_selftest, _add_bench,
                _add_compress, _add_ppl, _add_sweep):
        add(sub)
    return parser


def cmd_generate(args) -> int:
    from .compiler import Program, compile_model
    from .model import load_checkpoint
    from .overlay import FlightLLMOverlay
    from .runtime import Generator, Session
    err = sys.stderr
    t0 = time.perf_counter()
    ckpt = load_checkpoint(args.model)
    cache = None
    if args.program:
        program = Program.load(args.program)
    elif args.compressed:
        from .compiler import compile_compressed
        from .compress import CompressedModel
        cm = CompressedModel.load(args.compressed)
        if cm.args.dim != ckpt.args.dim or cm.args.vocab_size != ckpt.args.vocab_size:
            from .errors import CheckpointError
            raise CheckpointError(f"{args.compressed} was compressed from another model "
                                  f"({cm.source}); pass that model with --model")
        print(f"[flightllm] compiling {args.compressed} ({cm.config.name})...", file=err,
              flush=True)
        program = compile_compressed(cm, ctx=args.ctx)
    elif args.no_cache:
        print(f"[flightllm] compiling {ckpt.args.name} (W8A8)...", file=err, flush=True)
        program = compile_model(ckpt, ctx=args.ctx)
    else:
        from .compiler.cache import ProgramCache
        cache = ProgramCache()
        program = cache.get_or_compile(ckpt, ctx=args.ctx)
        print(f"[flightllm] program for {ckpt.args.name} (W8A8) "
              f"{'from the cache' if cache.hits else 'compiled and cached'} in {cache.root}",
              file=err, flush=True)
    overlay = FlightLLMOverlay()
    print(f"[flightllm] {overlay.describe().splitlines()[0]}; ready in "
          f"{time.perf_counter() - t0:.1f} s", file=err, flush=True)
    gen = Generator(Session(overlay, program), ckpt.tokenizer)
    for tok in gen.generate(args.prompt, args.max_new_tokens, chat=not args.no_chat,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            seed=args.seed):
        sys.stdout.write(tok.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if cache is not None and gen.stats.bucket_compiles:
        cache.sync(program)                       # keep the buckets compiled on the way
    if args.stats:
        print(f"[flightllm] {gen.stats.summary()}", file=err)
    return 0


def cmd_info(args) -> int:
    from .overlay import FlightLLMOverlay
    ol = FlightLLMOverlay()
    print(ol.describe())
    print("\nIPs:")
    for name, ip in sorted(ol.ip_dict.items()):
        driver = type(getattr(ol, name)).__name__
        print(f"  {name:12s} {ip.get('type', '?'):34s} @ {ip.get('phys_addr', 0):#x}  driver {driver}")
    print("\nMemories:")
    for name, mem in sorted(ol.mem_dict.items(), key=lambda kv: kv[1].get("base_address", 0)):
        if mem.get("used"):
            print(f"  {name:10s} base {mem.get('base_address', 0):#014x} size "
                  f"{mem.get('size', 0) // 2**20} MiB")
    return 0


def cmd_compile(args) -> int:
    from .compiler import compile_model
    from .model import load_checkpoint
    t0 = time.perf_counter()
    ckpt = load_checkpoint(args.model)
    program = compile_model(ckpt, target=args.target, ctx=args.ctx, all_logits=args.all_logits)
    if args.all_buckets:
        from .compiler.storage import storage_report
        from .config import load_target
        t1 = time.perf_counter()
        program.compile_all_buckets(load_target(args.target), progress=True)
        print(storage_report(program, load_target(args.target)).table())
        print(f"compiled {len(program.steps) - 2} bucket streams in "
              f"{time.perf_counter() - t1:.1f} s")
    path = program.save(args.output)
    counts = {n: sum(st.instruction_counts().values()) for n, st in program.steps.items()}
    print(f"wrote {path}: {ckpt.args.name} for {program.target}, context {program.ctx}, "
          f"{program.weight_bytes / 2**20:.1f} MiB of HBM data, instructions per step {counts} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_disasm(args) -> int:
    from . import isa
    from .compiler import Program
    program = Program.load(args.program)
    lines = []
    for name, st in program.steps.items():
        if args.step and name != args.step:
            continue
        for core, words in enumerate(st.streams()):
            if args.core is not None and core != args.core:
                continue
            lines.append(f"; step {name} (rows {st.rows}, ctx {st.ctx}): core {core}, "
                         f"{len(words)} words")
            lines.extend(isa.disassemble(words).splitlines())
    if args.head:
        lines = lines[:args.head]
    print("\n".join(lines))
    return 0


# --- selftest (issue 6): flightllm_overlay/selftest.py does the work -------------------------
def _add_selftest(sub):
    p = sub.add_parser("selftest", help="run the on-board self-test of the device",
                       description="Run small ISA programs and a decode step of a tiny random "
                                   "model on the device (the card, or the simulated U280) and on "
                                   "the reference simulator, and compare every output byte. "
                                   "Exit status 1 on a mismatch or error.")
    p.add_argument("--seed", type=int, default=0, help="seed of the random data and model")
    p.add_argument("--no-model", action="store_true", help="skip the tiny model's decode step")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds each run may take (default: the overlay's)")
    p.set_defaults(func=cmd_selftest)


def cmd_selftest(args) -> int:
    from .overlay import FlightLLMOverlay
    from .selftest import SelfTestReport, device_label, run_selftest
    overlay = FlightLLMOverlay()
    print(SelfTestReport(device_label(overlay)).header(), flush=True)
    report = run_selftest(overlay, seed=args.seed, model=not args.no_model, timeout=args.timeout,
                          progress=lambda result: print(result.row(), flush=True))
    print(report.summary())
    return 0 if report.passed else 1
# --- end of selftest ---------------------------------------------------------------------------


# --- compress and ppl (issue 3): flightllm_overlay/compress does the work ----------------------
def _add_compress(sub):
    p = sub.add_parser("compress", help="compress a checkpoint: N:16 sparsity, mixed-precision weights",
                       description="Smooth, calibrate, prune (N:16 blocks) and quantise (2/3/4/8-bit "
                                   "with group parameters) every linear of a checkpoint under the "
                                   "given budgets; write a compressed checkpoint and print the "
                                   "per-layer report. Defaults: the FlightLLM-style setting.")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="'smollm2-135m-instruct' (default), a Hugging Face folder or a .gguf file")
    p.add_argument("-o", "--output", required=True, help="compressed checkpoint to write (.safetensors)")
    p.add_argument("--preset", default="flightllm", choices=["flightllm", "w8a8", "magnitude"],
                   help="starting setting (default flightllm); the options below override it")
    p.add_argument("--density-qk", type=float, default=None,
                   help="fraction of q_proj/k_proj weights kept, in [0.125, 1] (flightllm: 0.7)")
    p.add_argument("--density", type=float, default=None,
                   help="fraction of the other linears' weights kept (default 1: dense)")
    p.add_argument("--avg-bits", type=float, default=None,
                   help="average code bits per kept weight (flightllm: 4)")
    p.add_argument("--group-bits", action="store_true",
                   help="count the group parameters (32 bits per group) in the --avg-bits budget")
    p.add_argument("--bits", type=int, nargs="+", default=None, help="bit widths allowed (2 3 4 8)")
    p.add_argument("--groups", type=int, nargs="+", default=None, help="group sizes allowed (16 32 64 128)")
    p.add_argument("--criterion", choices=["wanda", "magnitude"], default=None,
                   help="pruning scores (flightllm: wanda)")
    p.add_argument("--rtn", action="store_true",
                   help="round-to-nearest instead of the GPTQ-like error feedback")
    p.add_argument("--calib-tokens", type=int, default=None,
                   help="calibration tokens from the bundled text (default 512)")
    p.add_argument("--attn-mass", type=float, default=None,
                   help="block-sparse prefill attention keeping at least this share of each "
                        "head's calibration attention mass (e.g. 0.95; default: dense)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compress)


def _compression_config(args):
    from .compress import CompressionConfig
    cfg = CompressionConfig.preset(args.preset)
    changes = {"density_qk": args.density_qk, "density": args.density, "avg_bits": args.avg_bits,
               "bit_choices": args.bits, "group_choices": args.groups,
               "criterion": args.criterion, "calib_tokens": args.calib_tokens,
               "attn_mass": args.attn_mass}
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.rtn:
        changes["error_feedback"] = False
    if args.group_bits:
        changes["group_bits"] = True
    return cfg.but(**changes) if changes else cfg


def cmd_compress(args) -> int:
    from .compress import compress
    from .model import load_checkpoint
    cfg = _compression_config(args)
    ckpt = load_checkpoint(args.checkpoint)
    cm = compress(ckpt, None, cfg, progress=not args.quiet)
    path = cm.save(args.output)
    print(cm.report())
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {cm.info['seconds']} s)")
    return 0


def _add_ppl(sub):
    p = sub.add_parser("ppl", help="perplexity: float reference vs a compressed checkpoint",
                       description="Perplexity on a text file or on the bundled evaluation text "
                                   "(enwiki prose, CC BY-SA) of the float reference and, with "
                                   "--compressed, of the compressed weights in float emulation "
                                   "(device weights, INT8 activations).")
    _model_arg(p)
    p.add_argument("--text", default=None, help="a UTF-8 text file (default: the bundled text)")
    p.add_argument("--tokens", type=int, default=8192, help="evaluate the first N tokens (8192)")
    p.add_argument("--window", type=int, default=512, help="window length in tokens (512)")
    p.add_argument("--compressed", default=None, help="a checkpoint from `flightllm compress`")
    p.add_argument("--overlay", action="store_true",
                   help="also run the compiled program (the compressed checkpoint, else W8A8) "
                        "on the overlay (the simulated U280 without a card)")
    p.set_defaults(func=cmd_ppl)


def cmd_ppl(args) -> int:
    from pathlib import Path
    from .compress import CompressedModel, Emulator, reference_runner
    from .compress.emulate import compare
    from .errors import CheckpointError
    from .model import load_checkpoint
    if args.tokens < 2 or args.window < 2:
        raise FlightLLMError("--tokens and --window must be at least 2")
    ckpt = load_checkpoint(args.model)
    if ckpt.tokenizer is None:
        raise CheckpointError(f"{ckpt.source} has no tokenizer; perplexity needs one")
    if args.text:
        if not Path(args.text).is_file():
            raise FlightLLMError(f"text file {args.text} does not exist")
        body, where = Path(args.text).read_text(encoding="utf-8", errors="replace"), args.text
    else:
        from .data import text
        body, where = text("eval"), "the bundled evaluation text"
    ids = ckpt.tokenizer.encode(body)[:args.tokens]
    if len(ids) < 2:
        raise FlightLLMError(f"{where} gives {len(ids)} tokens; perplexity needs at least 2")
    if args.window > ckpt.args.max_seq_len:
        raise FlightLLMError(f"--window {args.window} exceeds the model's context "
                             f"{ckpt.args.max_seq_len}")
    runners = {"float reference": reference_runner(ckpt)}
    cm = None
    if args.compressed:
        cm = CompressedModel.load(args.compressed)
        if cm.args.n_layers != ckpt.args.n_layers or cm.args.dim != ckpt.args.dim:
            raise CheckpointError(f"{args.compressed} was compressed from another model "
                                  f"({cm.source}); pass that model with --model")
        t = cm.totals()
        runners[f"{cm.config.name} (float emulation, {t['code_bits']:.2f} code bits, "
                f"density {t['density']:.3f})"] = Emulator(cm)
    if args.overlay:
        runners.update(_overlay_runner(ckpt, cm, args.window))
    print(f"{ckpt.args.name}: {len(ids)} tokens of {where}, {args.window}-token windows")
    res = compare(runners, ids, args.window, progress=sys.stderr.isatty())
    ref = res["float reference"]
    for name, ppl in res.items():
        print(f"  {ppl:10.3f}  {100 * (ppl / ref - 1):+6.1f}%  {name}")
    return 0


def _overlay_runner(ckpt, cm, window: int) -> dict:
    """{label: runner} of the compiled program on the overlay, every position's logits."""
    from .compiler import compile_compressed, compile_model
    from .overlay import FlightLLMOverlay
    from .runtime import Session
    from .runtime.perplexity import device_runner
    print(f"[flightllm] compiling {'the compressed checkpoint' if cm else ckpt.args.name + ' (W8A8)'}"
          f" with all logits...", file=sys.stderr, flush=True)
    program = (compile_compressed(cm, ctx=window, all_logits=True) if cm is not None
               else compile_model(ckpt, ctx=window, all_logits=True))
    overlay = FlightLLMOverlay()
    session = Session(overlay, program)
    what = cm.config.name if cm is not None else "w8a8"
    where = "simulated U280" if overlay.is_simulated else "U280"
    return {f"{what} on the overlay ({where})": device_runner(session, window)}
# --- end of compress and ppl --------------------------------------------------------------------


def _add_sweep(sub):
    p = sub.add_parser("sweep", help="a grid of timing-model predictions, on Ray (CSV + plot)")
    p.add_argument("--targets", nargs="+", default=["u280"])
    p.add_argument("--models", nargs="+", default=["llama2-7b"])
    p.add_argument("--workloads", nargs="+", default=["128x512"], help="PREFILLxDECODE ...")
    p.add_argument("--schedules", nargs="+", default=["paper", "all"])
    p.add_argument("--all-channels", action="store_true", help="deal every pseudo-channel")
    p.add_argument("--decode-stride", type=int, default=1)
    p.add_argument("--address", default=None, help="an existing Ray cluster (default: local)")
    p.add_argument("--serial", action="store_true", help="no Ray: one point after another")
    p.add_argument("--cache", default=".flightllm-sweep", help="results by content hash")
    p.add_argument("--out", default="sweep.csv")
    p.add_argument("--plot", default="sweep.png")
    p.set_defaults(func=lambda a: _sweep(a))


def _sweep(args) -> int:
    from . import sweep
    work = [tuple(int(n) for n in w.split("x")) for w in args.workloads]
    points = sweep.grid(args.targets, args.models, work, args.schedules,
                        all_channels=args.all_channels, decode_stride=args.decode_stride)
    rows = sweep.run(points, args.cache, args.address, args.serial)
    print(f"PREDICTED (timing model): {sweep.write_csv(rows, args.out)}, "
          f"{sweep.plot(rows, args.plot)}")
    for r in rows:
        print(f"  {r['target']:8s} {r['model']:14s} [{r['prefill']}, {r['decode']}] "
              f"{r['schedule']:10s} decode {r['decode_tok_s']:8.1f} tok/s, prefill "
              f"{r['prefill_s'] * 1e3:9.1f} ms")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FlightLLMError as exc:
        print(f"flightllm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
