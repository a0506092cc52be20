"""What two-plane (hi + residual lo) INT8 activations at the worst points buy a compressed model: emulated perplexity per set of wide points.

    PYTHONPATH=. python benchmarks/wide_points.py --load CKPT [CKPT ...] [--tokens 2048]
        [--skip 0] [--window 512] [--rows NAME ...] [--device] [--no-float] [--json FILE]

Each checkpoint (`compression_quality.py --save` wrote them) runs in the float emulation of the
device (`compress.Emulator`, every INT8 point quantised) with no wide point, then with down's
input (`ffn_mid`), the LM head's input (`head_in`), both, q and k, the ones the device can run
wide (`config.WIDE_POINTS`: q, k, o_proj's, down_proj's and the LM head's inputs), every
linear's input (`emulate.LINEAR_INPUTS`), and those with q and k, as two INT8 planes; the
float reference and the weights alone
(no activation quantisation) are the bounds.  Slow (about 20 s per row on 2 cores).

With --device each row whose wide points the compiler can run (`config.WIDE_POINTS`, every
other point INT8) is also compiled (`compile_compressed`, every logit row, context 512) and run
on the simulated U280: its perplexity there (`runtime.perplexity.perplexity_device`), and the
timing model's cycles of one 128-row prefill launch and of one decode step at position 128.
About 1 to 3 minutes per row for 2,048 to 4,096 tokens.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flightllm_overlay.compress import CompressedModel, Emulator  # noqa: E402
from flightllm_overlay.compress.config import WIDE_POINTS as DEVICE_WIDE  # noqa: E402
from flightllm_overlay.compress.emulate import (LINEAR_INPUTS, WIDE_POINTS,  # noqa: E402
                                                perplexity, reference_runner)
from flightllm_overlay.data import text  # noqa: E402
from flightllm_overlay.model import load_checkpoint  # noqa: E402

#: (row name, act_quant, wide) in the order printed.
ROWS = (("weights only", False, ()),
        ("INT8 everywhere", True, ()),
        ("wide ffn_mid", True, ("ffn_mid",)),
        ("wide head_in", True, ("head_in",)),
        ("wide attn_out", True, ("attn_out",)),
        ("wide ffn_mid + head_in", True, ("ffn_mid", "head_in")),
        ("wide attn_out + ffn_mid + head_in", True, ("attn_out", "ffn_mid", "head_in")),
        ("wide q + k", True, ("q", "k")),
        ("wide q + k + attn_out + ffn_mid + head_in", True,
         ("q", "k", "attn_out", "ffn_mid", "head_in")),
        ("wide every linear input", True, LINEAR_INPUTS),
        ("wide every linear input + q + k", True, WIDE_POINTS))


def on_device(cm, ids, window: int) -> dict:
    """Perplexity of `cm` compiled and run on the simulated U280, and the timing model's cycles
    of a 128-row prefill launch (every logit row) and a decode step at position 128."""
    from flightllm_overlay.compiler import compile_compressed
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.runtime import Session
    from flightllm_overlay.runtime.perplexity import perplexity_device
    from flightllm_overlay.sim.device import SimulatedU280
    program = compile_compressed(cm, ctx=max(512, window), all_logits=True)
    with Session(FlightLLMOverlay(device=SimulatedU280()), program) as s:
        c0 = s.stats.device_cycles
        s.run("prefill", ids[:128], 0)
        c1 = s.stats.device_cycles
        s.run("decode", ids[128:129], 128)
        c2 = s.stats.device_cycles
        return dict(ppl=perplexity_device(s, ids, window), prefill_cycles=int(c1 - c0),
                    decode_cycles=int(c2 - c1))


def device_row(cm, ids, window: int, ref: float, width: int) -> dict:
    """`on_device` for one checkpoint, its line printed (label padded to `width`)."""
    t0 = time.perf_counter()
    d = on_device(cm, ids, window)
    print(f"{'':10s} {'  on the device':{width}s} ppl {d['ppl']:8.3f} "
          f"{100 * (d['ppl'] / ref - 1):+6.2f}% vs float; prefill-128 "
          f"{d['prefill_cycles']} cycles, decode {d['decode_cycles']} cycles "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return d


def record(out: dict, row: dict, path) -> None:
    """Add a result row and, with --json, rewrite the file (a long run leaves what it measured)."""
    out["results"].append(row)
    if path:
        Path(path).write_text(json.dumps(out, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--load", nargs="+", required=True, help="compressed checkpoints")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--skip", type=int, default=0,
                    help="start this many tokens into the text (e.g. 4096 with --tokens 4096: "
                         "a second, disjoint text)")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--rows", nargs="*", default=None, help="row names to run (default all)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", action="store_true", help="also run each row the device "
                    "can run on the simulated overlay")
    ap.add_argument("--no-float", action="store_true", help="skip the float reference (its "
                    "perplexity then reads as 1)")
    args = ap.parse_args(argv)
    ckpt = load_checkpoint(args.model)
    ids = ckpt.tokenizer.encode(text("eval"))[args.skip:args.skip + args.tokens]
    if len(ids) < 2:
        ap.error(f"--skip {args.skip} leaves no text to score (the text has fewer tokens)")
    t0 = time.perf_counter()
    ref = 1.0 if args.no_float else perplexity(reference_runner(ckpt), ids, args.window)
    print(f"float {ref:.3f} on {len(ids)} tokens from token {args.skip} ({args.window}-token windows) "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    out = dict(command=" ".join(sys.argv), tokens=len(ids), skip=args.skip, window=args.window,
               float=ref,
               results=[])
    for path in args.load:
        cm = CompressedModel.load(path)
        for name, act, wide in ROWS:
            if args.rows and name not in args.rows:
                continue
            t0 = time.perf_counter()
            ppl = perplexity(Emulator(cm, act_quant=act, wide=wide), ids, args.window)
            row = dict(setting=cm.config.name, row=name, wide=list(wide), ppl=ppl,
                       vs_float=ppl / ref - 1)
            print(f"{cm.config.name:10s} {name:26s} ppl {ppl:8.3f} {100 * (ppl / ref - 1):+6.2f}% "
                  f"vs float ({time.perf_counter() - t0:.0f} s)", flush=True)
            if args.device and act is True and set(wide) <= set(DEVICE_WIDE):
                row["device"] = device_row(dataclasses.replace(
                    cm, config=cm.config.but(wide_points=wide)), ids, args.window, ref, 26)
            record(out, row, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
