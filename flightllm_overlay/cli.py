"""The `flightllm` command: generate, info, compile, disasm, selftest, bench, compress, ppl, trace.

This module parses and prints; what runs is in runtime/ (program sources, perplexity runners),
compiler/, compress/ and bench.  Arguments are checked while parsing (cli_types); a failure
later is a FlightLLMError, printed as one line with exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from . import cli_types as T
from .errors import FlightLLMError

DEFAULT_PROMPT = "What is the capital of France?"
MODEL_HELP = ("'smollm2-135m-instruct' (default), a Hugging Face folder (config.json + "
              "safetensors) or a .gguf file")


def _model_arg(p):
    p.add_argument("--model", default=None, type=T.model, help=MODEL_HELP)


def _log(line: str) -> None:
    print(f"[flightllm] {line}", file=sys.stderr, flush=True)


def _add_generate(sub):
    p = sub.add_parser("generate", help="stream text from a model on the overlay",
                       description="Generate text on the FlightLLM overlay (the simulated U280 "
                                   "when no card is present), streaming tokens as they come.")
    p.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, type=T.text, help="the prompt text")
    _model_arg(p)
    p.add_argument("--program", default=None, type=T.input_file,
                   help="a program file from `flightllm compile` (skips compiling; the model "
                        "still gives the tokenizer)")
    p.add_argument("--compressed", default=None, type=T.input_file,
                   help="a checkpoint from `flightllm compress` to run instead of W8A8 (the model "
                        "still gives the tokenizer)")
    p.add_argument("--max-new-tokens", type=T.positive, default=64)
    p.add_argument("--temperature", type=T.temperature, default=0.0,
                   help="0 = greedy (default), up to 100")
    p.add_argument("--top-k", type=T.non_negative, default=0, help="0 = no limit (default)")
    p.add_argument("--top-p", type=T.probability, default=1.0, help="in (0, 1]; 1 = off (default)")
    p.add_argument("--seed", type=T.seed, default=None)
    p.add_argument("--ctx", type=T.positive, default=None, help="KV-cache capacity in tokens")
    p.add_argument("--no-chat", action="store_true", help="do not wrap the prompt in the chat template")
    p.add_argument("--stats", action="store_true",
                   help="print the full run statistics at the end (by default one line: tokens, "
                        "tokens/s on this host and predicted U280 tokens/s)")
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
    p.add_argument("-o", "--output", required=True, type=T.output_file, help="program file to write")
    p.add_argument("--target", default="u280", type=T.text)
    p.add_argument("--ctx", type=T.positive, default=None, help="KV-cache capacity in tokens")
    p.add_argument("--all-logits", action="store_true",
                   help="prefill writes logits for every position (for perplexity)")
    p.add_argument("--all-buckets", action="store_true",
                   help="compile every length bucket now (128-token prefill, 16-token decode) "
                        "instead of on first use, and report instruction storage")
    p.set_defaults(func=cmd_compile)


def _add_disasm(sub):
    p = sub.add_parser("disasm", help="disassemble a program file",
                       description="Print the instructions of a program file, per step and core.")
    p.add_argument("program", type=T.input_file, help="program file from `flightllm compile`")
    p.add_argument("--step", default=None, type=T.text,
                   help="only this step (prefill, decode, or a bucket such as decode@32)")
    p.add_argument("--core", type=T.non_negative, default=None, help="only this core")
    p.add_argument("--head", type=T.non_negative, default=0,
                   help="print at most this many lines (0: all)")
    p.set_defaults(func=cmd_disasm)


def _add_bench(sub):
    p = sub.add_parser("bench", help="predicted U280 performance of a model (timing model)",
                       description="Compile a model and predict, with the timing model, prefill "
                                   "latency, decode ms/token and tokens/s, HBM bandwidth and MPE "
                                   "utilisation, roofline bounds and decode stalls for a "
                                   "[prefill, decode] workload. Predictions, not measurements.")
    _model_arg(p)
    p.add_argument("--shape", default=None, type=T.text,
                   help="compile a model of the shape table from its shapes alone instead "
                        "(e.g. smollm2-360m, tinyllama-1.1b)")
    p.add_argument("--workload", type=T.positive, nargs=2, default=[128, 512],
                   metavar=("PREFILL", "DECODE"))
    p.add_argument("--weight-bits", type=int, default=None, choices=(2, 3, 4, 8),
                   help="with --shape: linear weights in this many bits (default 8; the paper "
                        "runs LLaMA2-7B at 4)")
    p.add_argument("--qk-density", type=T.density, default=1.0,
                   help="with --shape: N:16 density of the Q and K projections, in [0.125, 1] "
                        "(the paper: 0.7)")
    p.add_argument("--target", default="u280", type=T.text)
    p.add_argument("--ctx", type=T.positive, default=None)
    p.add_argument("--schedule", default="paper", type=T.text,
                   help="schedule options: paper, all, or names joined by '+' "
                        "(stripe_all, compute_fence, balance_channels, mv_aligned_tiles, ...)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fused", dest="fused", action="store_true", default=True,
                   help="always-on-chip decode (default)")
    g.add_argument("--unfused", dest="fused", action="store_false",
                   help="ablation: every intermediate through HBM")
    p.add_argument("--gantt", default=None, type=T.output_file,
                   help="write a per-unit Gantt chart of one decode step to this PNG file")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from .bench import bench, gantt
    from .compiler import compile_model, compile_shapes
    from .config import load_target
    from .compiler.buckets import BucketTable
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
        from .runtime.sources import load_model
        ckpt = load_model(args.model, "be compiled from weights (bench --shape takes shapes)")
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
        step, _ = BucketTable(program, target).step("decode", pre + 1)
        print(f"wrote {gantt(TimingModel(target).schedule_image(step.image), args.gantt, f'{name}: one decode step ({step.name}), predicted')}")
    return 0


def _add_sweep(sub):
    from .sweep import add_parser      # the subcommand lives beside the sweep it runs
    add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="flightllm", description="FlightLLM overlay toolkit: "
                                     "run compressed LLMs on an Alveo U280 (or its simulation).")
    parser.add_argument("--device", choices=("auto", "sim", "card"), default=None,
                        help="run on the simulated U280, a U280 card (an error when none is "
                             "found), or auto: a card when XRT finds one (default: "
                             "$FLIGHTLLM_DEVICE, else auto)")
    parser.add_argument("--version", action="version", version=f"flightllm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_generate, _add_info, _add_compile, _add_disasm, _add_selftest, _add_bench,
                _add_compress, _add_ppl, _add_trace, _add_sweep):
        add(sub)
    return parser


def cmd_generate(args) -> int:
    from .overlay import FlightLLMOverlay
    from .runtime import Generator, Session
    from .runtime.sources import load_model, program_for
    from .sim import native
    t0 = time.perf_counter()
    native.prepare()                    # a first run builds the simulator's kernels meanwhile
    ckpt = load_model(args.model, "generate with", lazy=True)   # weights only to compile
    source = program_for(ckpt, args.program, args.compressed, args.ctx,
                         use_cache=not args.no_cache, log=_log)
    overlay = FlightLLMOverlay()
    _log(f"{overlay.describe().splitlines()[0]}; ready in {time.perf_counter() - t0:.1f} s")
    gen = Generator(Session(overlay, source.program), ckpt.tokenizer)
    for tok in gen.generate(args.prompt, args.max_new_tokens, chat=not args.no_chat,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            seed=args.seed):
        sys.stdout.write(tok.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()                  # the answer ends before the statistics start
    source.keep_new_buckets(gen.stats.bucket_compiles)
    _log(gen.stats.summary() if args.stats else _rate_line(gen.stats, overlay))
    return 0


def _rate_line(st, overlay) -> str:
    """The default last line of generate: tokens, host tokens/s, predicted U280 tokens/s."""
    where = "the simulator on this host" if overlay.is_simulated else "the card, host-timed"
    last = " (the last one the stop token)" if st.finish_reason == "stop token" else ""
    line = (f"{st.generated_tokens} tokens{last}, decode {st.decode_tokens_per_second:.1f} tok/s on "
            f"{where}")
    if st.predicted_decode_tokens_per_second:
        line += (f"; predicted U280 decode {st.predicted_decode_tokens_per_second:,.0f} tok/s "
                 f"(timing model)")
    return line + " (--stats for more)"


def cmd_info(args) -> int:
    from .overlay import FlightLLMOverlay
    ol = FlightLLMOverlay()
    print(ol.describe())
    if ol.is_simulated:
        from .sim import native
        print(f"Simulator arithmetic: {native.status()}")
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
    from .compiler import BucketTable, compile_model
    from .runtime.sources import load_model
    t0 = time.perf_counter()
    ckpt = load_model(args.model, "compile")
    program = compile_model(ckpt, target=args.target, ctx=args.ctx, all_logits=args.all_logits)
    if args.all_buckets:
        from .compiler.storage import storage_report
        from .config import load_target
        t1 = time.perf_counter()
        BucketTable(program, load_target(args.target)).compile_all(progress=True)
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
    from .spec import isa
    from .compiler import Program
    program = Program.load(args.program)
    if args.step is not None and args.step not in program.steps:
        raise FlightLLMError(f"{args.program} has no step {args.step!r}; it has "
                             f"{', '.join(program.steps)}")
    cores = len(next(iter(program.steps.values())).streams())
    if args.core is not None and args.core >= cores:
        raise FlightLLMError(f"--core {args.core}: {args.program} runs on cores 0..{cores - 1}")
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


def _add_selftest(sub):
    p = sub.add_parser("selftest", help="run the on-board self-test of the device",
                       description="Run small ISA programs and a decode step of a tiny random "
                                   "model on the device (the card, or the simulated U280) and on "
                                   "the reference simulator, and compare every output byte. "
                                   "Exit status 1 on a mismatch or error.")
    p.add_argument("--seed", type=T.seed, default=0, help="seed of the random data and model")
    p.add_argument("--no-model", action="store_true", help="skip the tiny model's decode step")
    p.add_argument("--timeout", type=T.seconds, default=None,
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


def _add_compress(sub):
    p = sub.add_parser("compress", help="compress a checkpoint: N:16 sparsity, mixed-precision weights",
                       description="Smooth, calibrate, prune (N:16 blocks) and quantise (2/3/4/8-bit "
                                   "with group parameters) every linear of a checkpoint under the "
                                   "given budgets; write a compressed checkpoint and print the "
                                   "per-layer report. Defaults: the FlightLLM-style setting.")
    p.add_argument("checkpoint", nargs="?", default=None, type=T.model,
                   help="the model, as --model (kept for older scripts)")
    _model_arg(p)
    p.add_argument("-o", "--output", required=True, type=T.output_file,
                   help="compressed checkpoint to write (.safetensors)")
    p.add_argument("--preset", default="flightllm",
                   help="starting setting: flightllm (default), flightllm-wide, dense4, paper, "
                        "w8a8 or magnitude (docs/compression.md compares them); the options "
                        "below override it")
    p.add_argument("--density-qk", type=T.finite, default=None,
                   help="fraction of q_proj/k_proj weights kept, in [0.125, 1] (flightllm: 0.7)")
    p.add_argument("--density", type=T.finite, default=None,
                   help="fraction of the other linears' weights kept (default 1: dense)")
    p.add_argument("--avg-bits", type=T.finite, default=None,
                   help="average code bits per kept weight (flightllm: 4)")
    p.add_argument("--group-bits", action="store_true",
                   help="count the group parameters (32 bits per group) in the --avg-bits budget")
    p.add_argument("--bits", type=int, nargs="+", default=None, choices=(2, 3, 4, 8),
                   help="bit widths allowed (2 3 4 8)")
    p.add_argument("--groups", type=int, nargs="+", default=None, choices=(16, 32, 64, 128),
                   help="group sizes allowed (16 32 64 128)")
    p.add_argument("--criterion", choices=["wanda", "magnitude"], default=None,
                   help="pruning scores (flightllm: wanda)")
    p.add_argument("--rtn", action="store_true",
                   help="round-to-nearest instead of the GPTQ-like error feedback")
    p.add_argument("--calib-tokens", type=T.positive, default=None,
                   help="calibration tokens from the bundled text (default: the "
                        "preset's, 2,048 for flightllm, 512 for w8a8)")
    p.add_argument("--sequential", action="store_true",
                   help="pack the layers in order, each linear's error feedback on the inputs "
                        "of the partly compressed model (GPTQ's order; not better on SmolLM2)")
    p.add_argument("--no-refit", action="store_true",
                   help="keep the group parameters the error feedback chose (default: re-fit "
                        "each row's (M, B) by least squares to its calibrated output error; "
                        "SmolLM2's FlightLLM setting about half a point better with it)")
    p.add_argument("--allocation", choices=["fisher", "relative"], default=None,
                   help="how the bit budget is shared between linears: fisher (default: by the "
                        "predicted loss increase, one backward pass over the calibration text) "
                        "or relative (each linear's relative output error)")
    p.add_argument("--act-group", type=int, choices=[0, 32, 64, 128], default=None,
                   help="shared-exponent INT8 activation groups of this many channels at every "
                        "linear input (the presets' 32; 0: one scale per row, the device's "
                        "former form: SmolLM2's FlightLLM setting +5.2%% instead of +3.7%% "
                        "over float, emulated)")
    p.add_argument("--attn-mass", type=T.finite, default=None,
                   help="block-sparse prefill attention keeping at least this share of each "
                        "head's calibration attention mass (e.g. 0.95; default: dense)")
    p.add_argument("--exact-groups", action=argparse.BooleanOptionalAction, default=None,
                   help="dense linears below 8 bits run on the MPE's exact group arithmetic "
                        "(ISA wcodes: (q M + B)/256 times the row scale, no rounding to INT8), "
                        "their codes chosen for it; --no-exact-groups: every weight through the "
                        "unit's INT8 (default: the preset's)")
    p.add_argument("--wide", nargs="+", default=None, metavar="POINT",
                   help="activation points the device runs as two INT8 planes (about 15 bits; "
                        "more MPE passes and MISC work: dense4's every point costs SmolLM2 34%% "
                        "more decode cycles): any of attn_in q k attn_out ffn_in ffn_mid "
                        "head_in, 'all' or 'none' (default: the preset's; dense4: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compress)


def _compression_config(args):
    from .compress import CompressionConfig
    cfg = CompressionConfig.preset(args.preset)
    changes = {"density_qk": args.density_qk, "density": args.density, "avg_bits": args.avg_bits,
               "bit_choices": args.bits, "group_choices": args.groups,
               "criterion": args.criterion, "calib_tokens": args.calib_tokens,
               "attn_mass": args.attn_mass, "allocation": args.allocation}
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.act_group is not None:
        changes["act_group"] = args.act_group or None
    if args.rtn:
        changes["error_feedback"] = False
    if args.group_bits:
        changes["group_bits"] = True
    if args.sequential:
        changes["sequential"] = True
    if args.no_refit:
        changes["refit"] = False
    if args.exact_groups is not None:
        changes["exact_groups"] = args.exact_groups
    if args.wide is not None:
        from .compress.config import wide_points_named
        changes["wide_points"] = wide_points_named(args.wide)
    return cfg.but(**changes) if changes else cfg


def cmd_compress(args) -> int:
    from .compress import compress
    from .runtime.sources import load_model
    if args.checkpoint is not None and args.model is not None and args.checkpoint != args.model:
        raise FlightLLMError(f"two models given: {args.checkpoint!r} and --model {args.model!r}; "
                             f"give one (--model)")
    cfg = _compression_config(args)
    ckpt = load_model(args.model or args.checkpoint, "be compressed")
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
    p.add_argument("--text", default=None, type=T.text,
                   help="a UTF-8 text file (default: the bundled text)")
    p.add_argument("--tokens", type=T.at_least_two, default=8192,
                   help="evaluate the first N tokens (8192)")
    p.add_argument("--window", type=T.at_least_two, default=512, help="window length in tokens (512)")
    p.add_argument("--compressed", default=None, type=T.input_file,
                   help="a checkpoint from `flightllm compress`")
    p.add_argument("--overlay", action="store_true",
                   help="also run the compiled program (the compressed checkpoint, else W8A8) "
                        "on the overlay (the simulated U280 without a card)")
    p.set_defaults(func=cmd_ppl)


def cmd_ppl(args) -> int:
    from .compress.emulate import compare
    from .runtime.sources import load_model, perplexity_runners, perplexity_text
    ckpt = load_model(args.model, "be evaluated")
    ids, where = perplexity_text(ckpt, args.text, args.tokens, args.window)
    runners = perplexity_runners(ckpt, args.compressed, args.window, args.overlay, log=_log)
    print(f"{ckpt.args.name}: {len(ids)} tokens of {where}, {args.window}-token windows")
    res = compare(runners, ids, args.window, progress=sys.stderr.isatty())
    ref = res["float reference"]
    for name, ppl in res.items():
        print(f"  {ppl:10.3f}  {100 * (ppl / ref - 1):+6.1f}%  {name}")
    return 0


def _add_trace(sub):
    p = sub.add_parser("trace", help="layer-by-layer error of one prompt: device vs float reference",
                       description="Compile the model with tracing, run one prompt through prefill "
                                   "on the overlay and through the float reference, and print per "
                                   "layer the max abs, relative and cosine error of the attention "
                                   "and FFN results and the residual stream, as the device wrote "
                                   "them to HBM: where quantisation or sparsity error enters.")
    p.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, type=T.text, help="the prompt text")
    _model_arg(p)
    p.add_argument("--compressed", default=None, type=T.input_file,
                   help="trace a checkpoint from `flightllm compress` (made from --model) "
                        "instead of W8A8")
    p.add_argument("--ctx", type=T.positive, default=None, help="KV-cache capacity in tokens")
    p.add_argument("--no-chat", action="store_true", help="do not wrap the prompt in the chat template")
    p.add_argument("--plot", default=None, type=T.output_file,
                   help="also write the errors per layer as a PNG plot")
    p.set_defaults(func=cmd_trace)


def cmd_trace(args) -> int:
    from .runtime.sources import load_model
    from .runtime.sources import trace_prompt
    ckpt = load_model(args.model, "be traced")
    report = trace_prompt(ckpt, args.prompt, args.compressed, args.ctx, chat=not args.no_chat,
                          log=_log)
    print(report.table())
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0


def main(argv=None) -> int:
    """Run the command; the exit status: 0 done, 1 a self-test mismatch, 2 an error the message
    explains (bad arguments included), 3 an internal error (a bug: please report it), 130 Ctrl-C."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:            # --help/--version exit 0 as usual; errors return
        if exc.code in (0, None):
            raise
        return int(exc.code)
    if args.device:                       # every FlightLLMOverlay() of this command reads it
        os.environ["FLIGHTLLM_DEVICE"] = args.device
    try:
        return args.func(args)
    except FlightLLMError as exc:
        print(f"flightllm: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:               # `flightllm disasm p.fllm | head`: the reader left
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit's final flush cannot fail again
        return 0
    except OSError as exc:                # a file the command reads or writes
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"flightllm: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:              # a bug: say so in one line, traceback on request
        if os.environ.get("FLIGHTLLM_DEBUG") == "1":
            raise
        print(f"flightllm: internal error: {type(exc).__name__}: {exc}. This is a bug; "
              f"FLIGHTLLM_DEBUG=1 shows the traceback to report", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
