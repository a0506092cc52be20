"""What activation scales per group of channels (llama.cpp's Q8_1 blocks) would buy a compressed model: emulated perplexity and answers, per row against per group, side by side.

    PYTHONPATH=. python benchmarks/activation_groups.py --load CKPT [CKPT ...] [--groups 32 64]
        [--tokens 4096] [--skip 0] [--window 512] [--answers] [--device] [--json FILE]

The device quantises each linear input with one INT8 scale per row (per head for the attention
output).  This runs each checkpoint (`compression_quality.py --save` wrote them) in the float
emulation of the device (`compress.Emulator`, every INT8 point) as the device does it (its own
wide points), then with every group of G consecutive channels of a linear input on its own scale
(`Emulator(cm, act_group=G, wide=())`: one plane, no wide point), for each G of --groups
(docs/compression.md, "Activation scales per group of channels").  With --answers, also the 23 prompts' greedy answers against the
float model's (first sentence identical, token agreement).  With --device, each row whose group
the device takes (32, 64, 128; `act_group` in the config) is also compiled and run on the
simulated U280 (`wide_points.on_device`: perplexity, prefill-128 and decode cycles).  About
20 s per row and text on 2 cores; --answers adds about 90 s per row, --device about 40 s.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flightllm_overlay.compress import CompressedModel, Emulator  # noqa: E402
from flightllm_overlay.compress.answers import PROMPTS, answers, reference_greedy  # noqa: E402
from flightllm_overlay.compress.config import ACT_GROUPS as DEVICE_GROUPS  # noqa: E402
from flightllm_overlay.compress.emulate import perplexity, reference_runner  # noqa: E402
from flightllm_overlay.data import text  # noqa: E402
from flightllm_overlay.model import load_checkpoint  # noqa: E402
from wide_points import device_row, record  # noqa: E402  (this folder: run as a script)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--load", nargs="+", required=True, help="compressed checkpoints")
    ap.add_argument("--groups", nargs="+", type=int, default=[32, 64])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--skip", type=int, default=0, help="start this many tokens into the text")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--answers", action="store_true", help="also the prompts' greedy answers")
    ap.add_argument("--device", action="store_true", help="also on the simulated overlay")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    ckpt = load_checkpoint(args.model)
    ids = ckpt.tokenizer.encode(text("eval"))[args.skip:args.skip + args.tokens]
    if len(ids) < 2:
        ap.error(f"--skip {args.skip} leaves no text to score (the text has fewer tokens)")
    ref = perplexity(reference_runner(ckpt), ids, args.window)
    ref_ans = answers(reference_greedy(ckpt), ckpt.tokenizer) if args.answers else None
    print(f"float {ref:.3f} on {len(ids)} tokens from token {args.skip}", flush=True)
    out = dict(command=" ".join(sys.argv), tokens=len(ids), skip=args.skip, window=args.window,
               float=ref, prompts=len(PROMPTS) if args.answers else 0, results=[])
    for path in args.load:
        cm = CompressedModel.load(path)
        base = None
        for group in [None] + args.groups:
            t0 = time.perf_counter()
            emu = (Emulator(cm, act_group=0) if group is None
                   else Emulator(cm, act_group=group, wide=()))
            ppl = perplexity(emu, ids, args.window)
            base = base or ppl
            row = dict(setting=cm.config.name, act_group=group, ppl=ppl, vs_float=ppl / ref - 1,
                       vs_per_row=ppl / base - 1)
            line = (f"{cm.config.name:10s} {'per row' if group is None else f'groups of {group}':12s}"
                    f" ppl {ppl:8.3f} {100 * row['vs_float']:+6.2f}% vs float, "
                    f"{100 * row['vs_per_row']:+6.2f}% vs per row")
            if ref_ans is not None:
                agree = answers(emu.greedy, ckpt.tokenizer).agreement(ref_ans)
                row.update(first_sentence=agree["first_sentence"], tokens=agree["tokens"])
                line += (f"; first sentence {100 * agree['first_sentence']:.0f}%, tokens "
                         f"{100 * agree['tokens']:.0f}%")
            print(f"{line} ({time.perf_counter() - t0:.0f} s)", flush=True)
            if args.device and (group is None or group in DEVICE_GROUPS):
                import dataclasses
                dev = cm if group is None else dataclasses.replace(
                    cm, config=cm.config.but(act_group=group, wide_points=()))
                row["device"] = device_row(dev, ids, args.window, ref, 12)
            record(out, row, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
