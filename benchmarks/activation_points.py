"""What each INT8 activation quantisation point of the device costs a compressed model: perplexity with the weights alone, every point, each point alone and all but each.

    PYTHONPATH=. python benchmarks/activation_points.py [--setting dense4] [--load FILE]
        [--tokens 2048] [--window 512] [--prompts 8] [--new-tokens 16] [--json FILE]

The model is compressed with --setting (or loaded from a checkpoint `compression_quality.py
--save` wrote) and run in the float emulation of the device (`compress.Emulator`), which takes
the set of points to quantise (`emulate.POINTS`: q/k/v's input, q, k, v, the softmax
probabilities, o's input, gate/up's input, down's input, the LM head's input).  Besides
perplexity on the bundled enwiki text, each row gives how many of the first --prompts answers
of the prompt set have the same first sentence as the weights-only emulation's.  Points do not
add up: the loss of two together is not the sum of each alone.  Slow (about 20 s per row on 2
cores): a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flightllm_overlay.compress import CompressedModel, CompressionConfig, Emulator, compress  # noqa: E402
from flightllm_overlay.compress.answers import PROMPTS, answers  # noqa: E402
from flightllm_overlay.compress.emulate import POINTS, perplexity  # noqa: E402
from flightllm_overlay.data import text  # noqa: E402
from flightllm_overlay.model import load_checkpoint  # noqa: E402


def rows_to_run():
    """(row name, points quantised) in the order printed."""
    return ([("weights only", ()), ("every point", POINTS)]
            + [(f"only {p}", (p,)) for p in POINTS]
            + [(f"all but {p}", tuple(q for q in POINTS if q != p)) for p in POINTS])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--setting", default="dense4", help="a compression preset (CompressionConfig)")
    ap.add_argument("--load", default=None, help="a compressed checkpoint instead of compressing")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    ckpt = load_checkpoint(args.model)
    tok = ckpt.tokenizer
    cm = (CompressedModel.load(args.load) if args.load
          else compress(ckpt, None, CompressionConfig.preset(args.setting)))
    ids = tok.encode(text("eval"))[:args.tokens]
    prompts = PROMPTS[:args.prompts]
    results, ref = [], None
    print(f"{cm.config.name}: perplexity on {len(ids)} tokens ({args.window}-token windows), first "
          f"sentences of {len(prompts)} answers against the weights-only emulation's", flush=True)
    for name, points in rows_to_run():
        t0 = time.perf_counter()
        emu = Emulator(cm, act_quant=points)
        ppl = perplexity(emu, ids, args.window)
        ans = answers(emu.greedy, tok, prompts, args.new_tokens)
        ref = ref or (ppl, ans)
        same = sum(ans.agreement(ref[1])["same"]) if prompts else 0
        results.append(dict(row=name, points=list(points), ppl=ppl, first_sentence=same,
                            answer0=ans.texts[0] if prompts else None))
        print(f"{name:20s} ppl {ppl:8.3f} {100 * (ppl / ref[0] - 1):+6.2f}% vs weights only, "
              f"first sentence {same}/{len(prompts)}  ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(command=" ".join(sys.argv), setting=cm.config.name,
                                                   tokens=len(ids), window=args.window,
                                                   results=results), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
