"""SmolLM2 quality per compression setting: perplexity and answer agreement with the float model (float emulation of the device).

    PYTHONPATH=. python benchmarks/compression_quality.py [--tokens 8192] [--window 512]
        [--settings float bf16 fp16 w8a8 dense4 flightllm flightllm-linear
         flightllm-model flightllm-wanda paper magnitude]
        [--new-tokens 32] [--prompts 23] [--json FILE] [--save DIR] [--load DIR] [--jobs 1]

For each setting: perplexity on the first --tokens tokens of the bundled evaluation text (enwiki
prose, CC BY-SA) in non-overlapping --window-token windows, and on the answer prompt set
(`compress.answers.PROMPTS`, our own: facts, lists, short reasoning, definitions, longer prompts)
the share of greedy answers whose first sentence is identical to the float model's and the
token agreement over --new-tokens new tokens; the same teacher-forced along the float model's
answers (top-1 agreement and KL per token: one near tie moves one position, not a whole answer,
`answers.forced_agreement`); the first sentences of the prompts the float model decides by at
least `answers.DECIDED` logits (column "decided": elsewhere a difference may be arithmetic
noise, `answers.float_margins`); plus whether it answers "Paris".  The compressed
models run in the float emulation of the device (its weights exactly, INT8 activations);
calibration uses the bundled calibration text (disjoint from the evaluation text).
Slow (minutes per setting on 2 cores): a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flightllm_overlay.compress import (CompressionConfig, Emulator, compress,  # noqa: E402
                                        perplexity, reference_runner)
from flightllm_overlay.compress.answers import (DECIDED, PROMPTS, Answers,  # noqa: E402
                                                answers, float_margins, forced_agreement,
                                                reference_greedy)
from flightllm_overlay.data import text  # noqa: E402
from flightllm_overlay.model import load_checkpoint  # noqa: E402

#: setting -> (config or None for the float model, what it is)
SETTINGS = {
    "float": (None, "the float reference (SmolLM2's Q4_1 weights dequantised)"),
    # yardsticks, not compression: the float model as GPUs run it (weights and arithmetic in
    # bfloat16 / float16, norms and softmax in float32)
    "bf16": ("bfloat16", "the float reference in bfloat16 (a yardstick: 7-bit mantissas)"),
    "fp16": ("float16", "the float reference in float16 (a yardstick: 10-bit mantissas)"),
    "w8a8": (CompressionConfig.w8a8(), "INT8 weights per row, INT8 activations"),
    "dense4": (CompressionConfig.dense4(), "4-bit groups of 32, dense (the Q4_1 source's grid)"),
    "flightllm": (CompressionConfig.flightllm(), "q/k 70% N:16 (attention-aware), <= 4 code bits"),
    "flightllm-wide": (CompressionConfig.flightllm_wide(),
                       "as flightllm, down_proj's and the LM head's inputs as two INT8 planes"),
    "flightllm-model": (CompressionConfig.flightllm().but(name="flightllm-model",
                                                          qk_budget="model"),
                        "as flightllm, q/k's 70% over the whole model (shared by layers)"),
    "flightllm-linear": (CompressionConfig.flightllm().but(name="flightllm-linear",
                                                           qk_budget="linear"),
                         "as flightllm, q/k at 70% in every linear (the preset until the "
                         "seventh session)"),
    "flightllm-wanda": (CompressionConfig.flightllm().but(name="flightllm-wanda",
                                                          qk_criterion=None, qk_budget="linear"),
                        "as flightllm, q/k pruned by Wanda scores, 70% in every linear"),
    "paper": (CompressionConfig.paper(), "q/k 70% N:16, <= 3.5 code bits (the paper's budget)"),
    "magnitude": (CompressionConfig.magnitude(), "flightllm budget, magnitude, round-to-nearest"),
}


def run_setting(name, model, tokens, window, new_tokens, n_prompts, save=None, progress=True,
                load=None, ref_tokens=None):
    """A result dict of one setting: perplexity, answers (token ids, texts), bits, seconds.
    load: a folder of checkpoints a previous --save wrote (<setting>.safetensors), reused.
    ref_tokens: the float model's answers (token ids): the teacher-forced agreement along
    them (`answers.forced_agreement`) is added."""
    t0 = time.perf_counter()
    ckpt = load_checkpoint(model)
    ids = ckpt.tokenizer.encode(text("eval"))[:tokens]
    cfg = SETTINGS[name][0]
    prompts = PROMPTS[:n_prompts]
    out = {"name": name, "what": SETTINGS[name][1]}
    if cfg is None or isinstance(cfg, str):
        import torch
        dtype = None if cfg is None else getattr(torch, cfg)
        runner, greedy = reference_runner(ckpt, dtype), reference_greedy(ckpt, dtype)
        out.update(code_bits=None, hbm_bits=32.0 if cfg is None else 16.0, density=1.0, report="")
    else:
        saved = Path(load or "") / f"{name}.safetensors"
        if load and saved.exists():
            from flightllm_overlay.compress import CompressedModel
            cm = CompressedModel.load(saved)
            out["loaded"] = str(saved)
        else:
            cm = compress(ckpt, None, cfg, progress=progress)
        out["compress_s"] = round(cm.info["seconds"], 1)
        out["compress_cpu_s"] = cm.info.get("cpu_seconds")   # process CPU time, all threads
        if save:
            Path(save).mkdir(parents=True, exist_ok=True)
            cm.save(Path(save) / f"{name}.safetensors")
        emu = Emulator(cm)
        runner, greedy = emu, emu.greedy
        t = cm.totals()
        out.update(code_bits=round(t["code_bits"], 3), hbm_bits=round(t["hbm_bits"], 3),
                   density=round(t["density"], 4), report=cm.report())
    out["ppl"] = perplexity(runner, ids, window, progress=progress, desc=name)
    ans = answers(greedy, ckpt.tokenizer, prompts, new_tokens, progress=progress, desc=name)
    if ref_tokens is not None and prompts:
        forced = forced_agreement(runner, reference_runner(ckpt), ckpt.tokenizer,
                                  Answers(ref_tokens, []), prompts)
        out.update(forced_top1=forced["top1"], forced_kl=forced["kl"])
    if cfg is None and prompts:          # how firmly float decides each first sentence
        out["margins"] = float_margins(runner, ckpt.tokenizer, ans, prompts)
    out.update(tokens=ans.tokens, texts=ans.texts, seconds=round(time.perf_counter() - t0, 1))
    return out


def summarise(results: list) -> list:
    """Rows (dicts) with each setting's perplexity change and agreement against 'float'."""
    ref = next(r for r in results if r["name"] == "float")
    ref_ans = Answers(ref["tokens"], ref["texts"])
    rows = []
    for r in results:
        agree = (Answers(r["tokens"], r["texts"]).agreement(ref_ans, ref.get("margins"))
                 if r["texts"] else {"first_sentence": None, "tokens": None})  # --prompts 0
        decided = agree.get("decided")
        rows.append({"setting": r["name"], "ppl": round(r["ppl"], 3),
                     "ppl_vs_float": round(r["ppl"] / ref["ppl"] - 1, 4),
                     "first_sentence": _round(agree["first_sentence"]),
                     "token_agreement": _round(agree["tokens"]),
                     "first_sentence_decided": _round(agree.get("first_sentence_decided")),
                     "decided_prompts": None if decided is None else len(decided),
                     "paris": ("Paris" in r["texts"][0]) if r["texts"] else None,
                     "forced_top1": _round(r.get("forced_top1"), 4),
                     "forced_kl": _round(r.get("forced_kl"), 5),
                     "code_bits": r["code_bits"], "hbm_bits": r["hbm_bits"],
                     "density": r["density"], "seconds": r["seconds"],
                     "compress_s": r.get("compress_s"), "compress_cpu_s": r.get("compress_cpu_s")})
    return rows


def _round(x, digits=3):
    return None if x is None else round(x, digits)


def _pct(x, width) -> str:
    return f"{'-':>{width}s}" if x is None else f"{100 * x:{width - 1}.0f}%"


def table(rows, args) -> str:
    lines = [f"SmolLM2-135M-Instruct, float emulation of the device (INT8 activations): perplexity on "
             f"{args.tokens} tokens of the bundled enwiki text ({args.window}-token windows); greedy "
             f"answers to {args.prompts} prompts, {args.new_tokens} new tokens, against float; "
             f"teacher-forced along float's answers: top-1 agreement and KL (nats per token); "
             f"decided: the first sentences of the prompts float decides by >= {DECIDED} logits"
             + (f" ({rows[0]['decided_prompts']} of {args.prompts})"
                if rows and rows[0].get("decided_prompts") is not None else ""),
             f"{'setting':16s} {'ppl':>8s} {'vs float':>9s} {'1st sent.':>9s} {'decided':>7s} "
             f"{'tokens':>7s} "
             f"{'forced':>7s} {'KL':>7s} "
             f"{'Paris':>5s} {'code b':>6s} {'HBM b/w':>7s} {'density':>7s} {'compress s':>10s}"]
    for r in rows:
        top1, kl = r.get("forced_top1"), r.get("forced_kl")
        lines.append(f"{r['setting']:16s} {r['ppl']:8.3f} {100 * r['ppl_vs_float']:+8.1f}% "
                     f"{_pct(r['first_sentence'], 9)} {_pct(r.get('first_sentence_decided'), 7)} "
                     f"{_pct(r['token_agreement'], 7)} "
                     f"{'-' if top1 is None else format(100 * top1, '6.1f') + '%':>7s} "
                     f"{'-' if kl is None else format(kl, '.4f'):>7s} "
                     f"{'-' if r['paris'] is None else 'yes' if r['paris'] else 'NO':>5s} "
                     f"{'-' if r['code_bits'] is None else format(r['code_bits'], '.2f'):>6s} "
                     f"{r['hbm_bits']:7.2f} {r['density']:7.3f} "
                     f"{'-' if r['compress_s'] is None else format(r['compress_s'], '.0f'):>10s}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS),
                    help="answer the first this many prompts of the set (0: perplexity only)")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--json", default=None, help="write the summary and answers to this file")
    ap.add_argument("--save", default=None, help="folder to write each compressed checkpoint to")
    ap.add_argument("--load", default=None,
                    help="folder of checkpoints a previous --save wrote: reuse them")
    ap.add_argument("--jobs", type=int, default=1,
                    help="settings evaluated in parallel worker processes (about 3 GB each)")
    ap.add_argument("--show", action="store_true", help="print every answer that differs")
    ap.add_argument("--reference-from", default=None, metavar="JSON",
                    help="take the float model's perplexity from this earlier --json file (same "
                         "--tokens and --window) instead of recomputing it; with --prompts 0 only")
    ap.add_argument("--rescore", default=None, metavar="JSON",
                    help="only recompute the answer agreement of a saved --json file from its "
                         "saved answers (after a change to the agreement measure), and print it")
    args = ap.parse_args(argv)
    if args.rescore:
        res = rescore(args.rescore)
        ns = argparse.Namespace(tokens=res["tokens"], window=res["window"],
                                new_tokens=res["new_tokens"], prompts=len(res["prompts"]))
        print(f"{res['command']}\n{res['rescored']}")
        print(table(res["rows"], ns))
        return 0
    names = ["float"] + [n for n in args.settings if n != "float"]
    if args.reference_from:       # the float row of an earlier run on the same text
        names = names[1:]
        ref = json.loads(Path(args.reference_from).read_text())
        if (ref["tokens"], ref["window"]) != (args.tokens, args.window) or args.prompts:
            ap.error("--reference-from needs the same --tokens and --window, and --prompts 0")
        row = next(r for r in ref["rows"] if r["setting"] == "float")
        reference = [{"name": "float", "what": SETTINGS["float"][1] + f" (from {args.reference_from})",
                      "ppl": row["ppl"], "code_bits": None, "hbm_bits": 32.0, "density": 1.0,
                      "report": "", "tokens": [], "texts": [], "seconds": 0.0}]
    else:
        reference = []
    job = (lambda n, progress, ref_tokens=None: run_setting(
        n, args.model, args.tokens, args.window, args.new_tokens, args.prompts, args.save,
        progress, args.load, ref_tokens))
    # the float model's answers first: the others are also compared along them (teacher-forced)
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        first = reference or [job(names[0], False)]
        with ProcessPoolExecutor(args.jobs) as pool:
            futs = [pool.submit(run_setting, n, args.model, args.tokens, args.window,
                                args.new_tokens, args.prompts, args.save, False, args.load,
                                first[0]["tokens"] or None)
                    for n in names[len(first) - len(reference):]]
            results = first + [f.result() for f in futs]
    else:
        results = list(reference)
        for n in names:
            results.append(job(n, True, results[0]["tokens"] or None if results else None))
            print(f"{n}: perplexity {results[-1]['ppl']:.3f}, first answer: "
                  f"{(results[-1]['texts'] or [None])[0]!r}", flush=True)
            if args.json:      # after each setting: a run cut short leaves what it finished
                write_json(args.json, results, args, argv,
                           complete=len(results) == len(names) + len(reference))
    for r in results:
        if r["report"]:
            print(r["report"])
    rows = summarise(results)
    print(table(rows, args))
    ref = results[0]
    if args.show and ref["texts"]:
        for r in results[1:]:
            for p, a, b in zip(PROMPTS, ref["texts"], r["texts"]):
                if a != b:
                    print(f"[{r['name']}] {p[1]}\n   float: {a!r}\n   {r['name']}: {b!r}")
    if args.json:
        write_json(args.json, results, args, argv, complete=True)
    return 0


def write_json(path, results, args, argv, complete: bool):
    """The summary rows, the answers and the command; complete=False: settings still to come."""
    import os
    import platform
    Path(path).write_text(json.dumps(
        {"command": "python benchmarks/compression_quality.py " + " ".join(argv or sys.argv[1:]),
         "complete": complete, "settings_requested": ["float"] + [n for n in args.settings
                                                               if n != "float"],
         "tokens": args.tokens, "window": args.window, "new_tokens": args.new_tokens,
         "machine": {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
                     "processor": platform.processor() or platform.machine(),
                     "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())},
         "prompts": [p for _, p in PROMPTS[:args.prompts]], "rows": summarise(results),
         "answers": {r["name"]: r["texts"] for r in results},
         "answer_tokens": {r["name"]: r["tokens"] for r in results},
         "float_margins": next((r.get("margins") for r in results if r["name"] == "float"),
                               None)}, indent=1))


def rescore(path) -> dict:
    """Recompute a saved result file's first-sentence agreement and Paris column from its saved
    answer texts with today's `first_sentence` (token agreement needs the token ids: recomputed
    only where the file has them), noting it in the file; returns the file's dict."""
    from flightllm_overlay.compress.answers import first_sentence
    res = json.loads(Path(path).read_text())
    ref = [first_sentence(t) for t in res["answers"]["float"]]
    for row in res["rows"]:
        texts = res["answers"][row["setting"]]
        if texts:
            row["first_sentence"] = round(sum(first_sentence(t) == r for t, r in zip(texts, ref))
                                          / len(ref), 3)
            row["paris"] = "Paris" in texts[0]
    if "answer_tokens" in res:
        rows = summarise([{**row, "name": row["setting"], "ppl": row["ppl"],
                           "tokens": res["answer_tokens"][row["setting"]],
                           "texts": res["answers"][row["setting"]],
                           "margins": res.get("float_margins")} for row in res["rows"]])
        for row, new in zip(res["rows"], rows):
            for key in ("token_agreement", "first_sentence_decided", "decided_prompts"):
                row[key] = new[key]
    res["rescored"] = ("first_sentence and paris recomputed from the saved answers by "
                       "`compression_quality.py --rescore`" + ("" if "answer_tokens" in res else
                       "; token_agreement as the run computed it (no token ids saved)"))
    Path(path).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.exit(main())
