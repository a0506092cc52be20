"""What each INT8 activation quantisation point of the device costs a compressed model: perplexity with the weights alone, every point, each point alone and all but each.

    PYTHONPATH=. python benchmarks/activation_points.py [--setting dense4] [--load FILE]
        [--tokens 2048] [--window 512] [--prompts 8] [--new-tokens 16] [--rows NAME ...]
        [--json FILE]

The model is compressed with --setting (or loaded from a checkpoint `compression_quality.py
--save` wrote) and run in the float emulation of the device (`compress.Emulator`), which takes
the set of points to quantise (`emulate.POINTS`: q/k/v's input, q, k, v, the softmax
probabilities, o's input, gate/up's input, down's input, the LM head's input).  Besides
perplexity on the bundled enwiki text, each row gives how many of the first --prompts answers
of the prompt set have the same first sentence as the weights-only emulation's, and against
the float model: the same share, and the teacher-forced top-1 agreement and KL along float's
answers (`answers.forced_agreement`: steadier than free-running answers, which one near tie
sends elsewhere).  Further rows widen every linear input to two INT8 planes, then leave q or k
unquantised or widen them too (every point the device can, `config.WIDE_POINTS`), or hold the
LM head's weights in float (`Emulator(float_head=True)`, which no program does: what the
head's INT8 rows cost).  Points do not add up: the loss of two
together is not the sum of each alone.  Slow (20-60 s per row on 2 cores): a benchmark, not a
test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flightllm_overlay.compress import CompressedModel, CompressionConfig, Emulator, compress  # noqa: E402
from flightllm_overlay.compress.answers import (PROMPTS, answers, forced_agreement,  # noqa: E402
                                                reference_greedy)
from flightllm_overlay.compress.emulate import (LINEAR_INPUTS, POINTS, WIDE_POINTS,  # noqa: E402
                                                perplexity, reference_runner)
from flightllm_overlay.data import text  # noqa: E402
from flightllm_overlay.model import load_checkpoint  # noqa: E402


def rows_to_run():
    """{row name: Emulator keywords} in the order printed (the first is the weights-only row
    the others' first sentences are also compared with)."""
    but = lambda *drop: tuple(p for p in POINTS if p not in drop)
    rows = {"weights only": dict(act_quant=())}
    rows["every point"] = dict(act_quant=POINTS)
    rows.update({f"only {p}": dict(act_quant=(p,)) for p in POINTS})
    rows.update({f"all but {p}": dict(act_quant=but(p)) for p in POINTS})
    rows["weights only, float head"] = dict(act_quant=(), float_head=True)
    rows["every point, float head"] = dict(act_quant=POINTS, float_head=True)
    lin = LINEAR_INPUTS
    rows["wide linear inputs"] = dict(act_quant=POINTS, wide=lin)
    rows["wide linear inputs, all but q"] = dict(act_quant=but("q"), wide=lin)
    rows["wide linear inputs, all but k"] = dict(act_quant=but("k"), wide=lin)
    rows["wide linear inputs, all but q, k"] = dict(act_quant=but("q", "k"), wide=lin)
    rows["wide linear inputs, all but q, k, float head"] = dict(act_quant=but("q", "k"),
                                                                wide=lin, float_head=True)
    rows["wide linear inputs, q, k"] = dict(act_quant=POINTS, wide=WIDE_POINTS)   # the device's
    rows["wide linear inputs, q, k, float head"] = dict(act_quant=POINTS, wide=WIDE_POINTS,
                                                        float_head=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--setting", default="dense4", help="a compression preset (CompressionConfig)")
    ap.add_argument("--load", default=None, help="a compressed checkpoint instead of compressing")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--rows", nargs="+", default=None,
                    help="only these rows (names as printed; the weights-only row always runs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    table = rows_to_run()
    unknown = sorted(set(args.rows or ()) - set(table))
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(table)}")
    ckpt = load_checkpoint(args.model)
    tok = ckpt.tokenizer
    cm = (CompressedModel.load(args.load) if args.load
          else compress(ckpt, None, CompressionConfig.preset(args.setting)))
    ids = tok.encode(text("eval"))[:args.tokens]
    prompts = PROMPTS[:args.prompts]
    results, ref = [], None
    float_run = reference_runner(ckpt)
    float_ans = answers(reference_greedy(ckpt), tok, prompts, args.new_tokens)
    print(f"{cm.config.name}: perplexity on {len(ids)} tokens ({args.window}-token windows); first "
          f"sentences of {len(prompts)} answers against the weights-only emulation's and the "
          f"float model's; teacher-forced along float's answers: top-1 agreement, KL (nats)",
          flush=True)
    for name, kw in table.items():
        if args.rows and name not in args.rows and name != "weights only":
            continue
        t0 = time.perf_counter()
        emu = Emulator(cm, **kw)
        ppl = perplexity(emu, ids, args.window)
        ans = answers(emu.greedy, tok, prompts, args.new_tokens)
        forced = forced_agreement(emu, float_run, tok, float_ans, prompts)
        ref = ref or (ppl, ans)
        same = sum(ans.agreement(ref[1])["same"]) if prompts else 0
        same_float = sum(ans.agreement(float_ans)["same"]) if prompts else 0
        results.append(dict(row=name, points=list(kw["act_quant"]),
                            wide=[p for p in WIDE_POINTS if p in kw.get("wide", ())],
                            float_head=bool(kw.get("float_head")), ppl=ppl, first_sentence=same,
                            first_sentence_float=same_float, forced_top1=forced["top1"],
                            forced_kl=forced["kl"], answer0=ans.texts[0] if prompts else None))
        print(f"{name:32s} ppl {ppl:8.3f} {100 * (ppl / ref[0] - 1):+6.2f}% vs weights only, "
              f"first sentence {same}/{len(prompts)}, vs float {same_float}/{len(prompts)}, "
              f"forced {100 * forced['top1']:5.1f}% KL {forced['kl']:.5f}  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(command=" ".join(sys.argv), setting=cm.config.name,
                                                   tokens=len(ids), window=args.window,
                                                   results=results), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
