"""Answers of compressed checkpoints on the simulated overlay against the float model: first sentences, token agreement, teacher-forced top-1 and KL, and each miss's float margin.

    PYTHONPATH=. python benchmarks/overlay_answers.py --load CKPT [CKPT ...]
        [--wide model|none|all|POINT ...] [--prompts 23] [--new-tokens 32] [--ctx 512]
        [--json FILE]

Each checkpoint (`compression_quality.py --save` wrote them) is compiled with every logit row
(`compile_compressed`, its own wide points, or those --wide names: `none`, `all` =
`config.WIDE_POINTS`, or point names, as `flightllm compress --wide`) and run on the
simulated U280: greedy answers to the prompt set (`compress.answers.PROMPTS`, a Generator's
prefill then decode steps, as a user's generation runs), compared with the float model's
(first sentence identical, token agreement over --new-tokens), the teacher-forced agreement
along float's answers (`answers.forced_agreement`), and for each answer whose first sentence differs: where it leaves
float's, float's own margin there (its top token's logit minus the runner-up's) and the
device's margin between the two tokens.  A miss at a float margin of a few hundredths of a
logit is a near tie the float model itself barely decides; "decided" counts the first sentences
of the prompts float decides by at least `answers.DECIDED` logits (`answers.float_margins`).
Minutes per checkpoint on 2 cores: a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flightllm_overlay.compress import CompressedModel  # noqa: E402
from flightllm_overlay.compress.answers import (DECIDED, PROMPTS, answers,  # noqa: E402
                                                chat_ids, first_sentence, float_margins,
                                                forced_agreement, reference_greedy)
from flightllm_overlay.compress.config import wide_points_named  # noqa: E402
from flightllm_overlay.compress.emulate import reference_runner  # noqa: E402
from flightllm_overlay.model import load_checkpoint  # noqa: E402


def wide_points(spec, cm) -> tuple:
    """The wide points --wide names for `cm` (`model`: its own)."""
    return tuple(cm.config.wide_points) if spec in (None, ["model"]) else wide_points_named(spec)


def greedy_on(gen):
    """greedy(prompt ids, n, stop ids) -> new token ids (the stop token included when hit)
    through a Generator's prefill and decode steps, for `answers.answers`."""
    def greedy(ids, n: int, stop) -> list:
        logits, out = gen.prefill(list(ids)), []
        for pos in range(len(ids), len(ids) + n):
            tok = int(np.argmax(logits))
            out.append(tok)
            if tok in stop:
                break
            logits = gen.decode_one(tok, pos)
        return out
    return greedy


def misses(run, ref_run, tokenizer, prompts, ref, got) -> list:
    """Per answer whose first sentence differs from float's: the prompt, the token position
    where it leaves float's answer, both tokens, float's own top-1 margin there and the
    device's margin (float's token minus the device's)."""
    rows = []
    for (_, prompt), a, b, same in zip(prompts, ref.tokens, got.tokens,
                                       got.agreement(ref)["same"]):
        if same:
            continue
        j = next((n for n in range(min(len(a), len(b))) if a[n] != b[n]), min(len(a), len(b)))
        ids = chat_ids(tokenizer, prompt) + list(a[:j])
        lf, ld = np.asarray(ref_run(ids))[-1], np.asarray(run(ids))[-1]
        top = np.sort(lf)[::-1]
        row = dict(prompt=prompt, at=j, float_margin=float(top[0] - top[1]))
        if j < min(len(a), len(b)):
            row.update(float_token=tokenizer.decode([a[j]]), device_token=tokenizer.decode([b[j]]),
                       device_margin=float(ld[a[j]] - ld[b[j]]))
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--load", nargs="+", required=True, help="compressed checkpoints")
    ap.add_argument("--wide", nargs="+", default=None,
                    help="model (default), none, all, or point names")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from flightllm_overlay.compiler import compile_compressed
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.runtime import Generator, Session
    from flightllm_overlay.runtime.perplexity import device_runner
    from flightllm_overlay.sim.device import SimulatedU280
    ckpt = load_checkpoint(args.model)
    tok, prompts = ckpt.tokenizer, PROMPTS[:args.prompts]
    ref_run = reference_runner(ckpt)
    ref = answers(reference_greedy(ckpt), tok, prompts, args.new_tokens)
    margins = float_margins(ref_run, tok, ref, prompts)
    overlay = FlightLLMOverlay(device=SimulatedU280())
    out = dict(command=" ".join(sys.argv), prompts=len(prompts), new_tokens=args.new_tokens,
               float_margins=margins, decided_at=DECIDED, results=[])
    for path in args.load:
        t0 = time.perf_counter()
        cm = CompressedModel.load(path)
        wide = wide_points(args.wide, cm)
        cm = dataclasses.replace(cm, config=cm.config.but(wide_points=wide))
        program = compile_compressed(cm, ctx=args.ctx, all_logits=True)
        with Session(overlay, program) as s:
            logits = device_runner(s)
            forced = forced_agreement(logits, ref_run, tok, ref, prompts)
            got = answers(greedy_on(Generator(s, tok)), tok, prompts, args.new_tokens)
            agree = got.agreement(ref, margins)
            miss = misses(logits, ref_run, tok, prompts, ref, got)
        row = dict(checkpoint=path, setting=cm.config.name, wide=list(wide),
                   first_sentence=agree["first_sentence"], tokens=agree["tokens"],
                   first_sentence_decided=agree["first_sentence_decided"],
                   decided=agree["decided"],
                   forced_top1=forced["top1"], forced_kl=forced["kl"],
                   paris="Paris" in got.texts[0] if prompts else None, misses=miss,
                   texts=got.texts, first_sentences=[first_sentence(t) for t in got.texts],
                   seconds=round(time.perf_counter() - t0, 1))
        out["results"].append(row)
        n = len(prompts)
        print(f"{cm.config.name} wide {list(wide) or 'none'}: first sentence "
              f"{round(agree['first_sentence'] * n)}/{n} (decided prompts "
              f"{sum(agree['same'][i] for i in agree['decided'])}/{len(agree['decided'])}), "
              f"tokens {100 * agree['tokens']:.1f}%, "
              f"teacher-forced top-1 {100 * forced['top1']:.1f}% KL {forced['kl']:.5f}, "
              f"Paris {row['paris']} ({row['seconds']:.0f} s)", flush=True)
        for m in miss:
            print(f"    miss at token {m['at']}: float {m.get('float_token', 'END')!r} by "
                  f"{m['float_margin']:.3f} logits, the device {m.get('device_token', 'END')!r}"
                  f" ({m.get('device_margin', float('nan')):+.3f}): {m['prompt'][:60]!r}",
                  flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
