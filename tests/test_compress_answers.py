"""Answer-level quality: the prompt set, first-sentence and token agreement, the emulator's cached greedy decoding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flightllm_overlay.compress import CompressionConfig, Emulator, compress
from flightllm_overlay.compress.answers import (PROMPTS, Answers, answers, chat_ids,
                                                first_sentence, reference_greedy, token_agreement)


def test_prompt_set_is_varied_and_large_enough():
    kinds = [k for k, _ in PROMPTS]
    assert len(PROMPTS) >= 20 and len({p for _, p in PROMPTS}) == len(PROMPTS)
    for kind in ("fact", "list", "reasoning", "definition", "long"):
        assert kinds.count(kind) >= 3 if kind != "long" else kinds.count(kind) >= 2
    assert PROMPTS[0][1] == "What is the capital of France?"


def test_first_sentence_and_token_agreement():
    assert first_sentence("  The capital of France is Paris. It is big.") == \
        "The capital of France is Paris."
    assert first_sentence("Pi is 3.14 roughly! Yes") == "Pi is 3.14 roughly!"
    assert first_sentence("1. Red\n2. Blue") == "1. Red"                 # a list item is one
    assert first_sentence("1. Red\n2. Blue") != first_sentence("1. Blue\n2. Red")
    assert first_sentence("Colours:\n 2. Red. Then") == "Colours:"
    assert first_sentence("It has 2. Then") == "It has 2."          # not opening a line
    assert first_sentence("no end at all  here") == "no end at all here"
    assert token_agreement([1, 2, 3, 4], [1, 2, 9, 4]) == 0.75
    assert token_agreement([1, 2, 3, 4], [1, 2]) == 0.5                  # stopped early
    assert token_agreement([], []) == 1.0
    ref = Answers([[1, 2], [3]], ["Paris. Yes", "Blue."])
    got = Answers([[1, 2], [4]], ["Paris. No", "Red."]).agreement(ref)
    assert got["same"] == [True, False] and got["first_sentence"] == 0.5
    assert got["tokens"] == 0.5


@pytest.fixture(scope="module")
def tiny_cm(tiny_ckpt):
    return compress(tiny_ckpt, None, CompressionConfig.flightllm().but(avg_bits=5.5,
                                                                       calib_tokens=128),
                    progress=False)


def test_emulator_cached_decoding_matches_the_full_window(tiny_cm, tiny_ckpt):
    emu = Emulator(tiny_cm)
    prompt = chat_ids(tiny_ckpt.tokenizer, "What is the capital of France?")
    out = emu.greedy(prompt, 8)
    seq = list(prompt)
    for tok in out:                                  # the same choices from whole windows
        logits = emu(seq)[-1]
        top2 = np.sort(logits)[-2:]
        assert int(np.argmax(logits)) == tok or top2[1] - top2[0] < 1e-4
        seq.append(tok)
    cache = emu.new_cache()
    a = emu.forward(seq[:-3], cache)
    b = emu.forward(seq[-3:], cache)
    whole = emu.forward(seq, emu.new_cache())
    # the cached steps multiply other shapes (other float32 summation orders), which may move
    # an FP16 rounding by one step (2^-11 relative) and carry it on; a broken cache is O(1) off
    scale = float(whole.abs().max())
    assert torch.allclose(torch.cat([a, b]), whole, atol=2e-3 * scale)


def test_answers_of_the_float_model_agree_with_themselves(tiny_ckpt, tiny_cm):
    prompts = PROMPTS[:3]
    ref = answers(reference_greedy(tiny_ckpt), tiny_ckpt.tokenizer, prompts, 6)
    assert [len(t) for t in ref.tokens] == [6, 6, 6] or any(
        t[-1] in tiny_ckpt.tokenizer.stop_ids for t in ref.tokens)
    again = answers(reference_greedy(tiny_ckpt), tiny_ckpt.tokenizer, prompts, 6)
    assert again.agreement(ref) == {"first_sentence": 1.0, "tokens": 1.0, "same": [True] * 3}
    emu = answers(Emulator(tiny_cm).greedy, tiny_ckpt.tokenizer, prompts, 6)
    agree = emu.agreement(ref)
    assert 0.0 <= agree["tokens"] <= 1.0 and len(agree["same"]) == 3


def test_benchmark_summary_without_answers_and_rescore(tmp_path):
    """compression_quality.py: --prompts 0 rows (perplexity only) and --rescore of a saved file."""
    import json
    cq = _benchmark("compression_quality")
    base = {"code_bits": None, "hbm_bits": 32.0, "density": 1.0, "seconds": 1.0}
    rows = cq.summarise([{**base, "name": "float", "ppl": 20.0, "texts": [], "tokens": []},
                         {**base, "name": "w8a8", "ppl": 21.0, "texts": [], "tokens": []}])
    assert rows[1]["ppl_vs_float"] == 0.05 and rows[1]["first_sentence"] is None
    assert rows[1]["paris"] is None and rows[1]["first_sentence_decided"] is None
    answered = cq.summarise([{**base, "name": "float", "ppl": 20.0, "texts": ["A.", "B."],
                              "tokens": [[1], [2]], "margins": [0.02, 0.5]},
                             {**base, "name": "x", "ppl": 21.0, "texts": ["A.", "C."],
                              "tokens": [[1], [3]]}])
    assert answered[1]["first_sentence"] == 0.5 and answered[1]["decided_prompts"] == 1
    assert answered[1]["first_sentence_decided"] == 0.0      # the decided prompt is the miss
    texts = {"float": ["Paris.", "1. Whales\n2. Seals"], "x": ["Paris!", "1. Seals\n2. Whales"]}
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps({"rows": [{**base, "setting": s, "ppl": 20.0, "ppl_vs_float": 0.0,
                                           "first_sentence": 1.0, "token_agreement": 1.0,
                                           "paris": True} for s in texts],
                                 "answers": texts,
                                 "answer_tokens": {"float": [[1], [2, 3]], "x": [[1], [3, 2]]}}))
    res = cq.rescore(saved)
    x = res["rows"][1]
    assert x["first_sentence"] == 0.0 and x["paris"] is True      # "1." alone no longer agrees
    assert x["token_agreement"] == 0.5 and "rescored" in json.loads(saved.read_text())
    assert x["first_sentence_decided"] is None              # no float margins saved


def test_float_margins_cover_the_first_sentence_only(tiny_ckpt):
    """sentence_tokens: the tokens up to the first sentence's end; float_margins: float's
    smallest top-1 margin over exactly those positions (a near tie after the sentence does not
    count); agreement(ref, margins): the decided prompts and their share."""
    from flightllm_overlay.compress.answers import DECIDED, float_margins, sentence_tokens
    tok = tiny_ckpt.tokenizer
    first, rest = tok.encode("Paris is big.", add_special_tokens=False), \
        tok.encode(" Yes it is", add_special_tokens=False)
    assert sentence_tokens(tok, first + rest) == len(first)
    assert sentence_tokens(tok, rest) == len(rest)                # no end: the whole answer
    prompts = (("fact", "A?"), ("fact", "B?"))
    ref = Answers([first + rest, first + rest], ["Paris is big. Yes it is"] * 2)
    starts = [len(chat_ids(tok, p)) for _, p in prompts]

    def logits(ids):             # margin 1 everywhere, 0.05 at one chosen answer position
        out = np.zeros((len(ids), 50))
        out[:, 0] = 1.0
        tie = len(first) - 1 if ids[:starts[0]] == chat_ids(tok, "A?") else len(first) + 1
        row = starts[0] - 1 + tie
        if row < len(ids):
            out[row, 1] = 0.95
        return out
    margins = float_margins(logits, tok, ref, prompts)
    assert margins == pytest.approx([0.05, 1.0])       # B's tie lies after its first sentence
    got = Answers([first, first], ["Paris is big.", "Rome is big."]).agreement(ref, margins)
    assert margins[1] >= DECIDED > margins[0]
    assert got["decided"] == [1] and got["first_sentence_decided"] == 0.0
    assert got["first_sentence"] == 0.5
    assert "decided" not in Answers([first], ["x."]).agreement(ref)      # no margins given


def test_the_reference_in_bfloat16_is_a_nearby_but_different_model(tiny_ckpt):
    """The benchmark's yardsticks: the float model with bfloat16 / float16 weights and arithmetic
    stays close to the float32 logits (within the 7- / 10-bit mantissas' reach) but not equal."""
    from flightllm_overlay.compress.emulate import reference_runner
    ids = list(range(3, 40))
    ref = reference_runner(tiny_ckpt)(ids)
    spread = float(np.abs(ref).max())
    for dtype, lo, hi in ((torch.bfloat16, 1e-4, 0.1), (torch.float16, 1e-6, 0.02)):
        got = reference_runner(tiny_ckpt, dtype)(ids)
        assert got.dtype == np.float32 and got.shape == ref.shape
        err = float(np.abs(got - ref).max()) / spread
        assert lo < err < hi, (dtype, err)
        out = reference_greedy(tiny_ckpt, dtype)(ids[:5], 4, ())
        assert len(out) == 4
    assert tiny_ckpt.weights["model.norm.weight"].dtype == torch.float32   # not cast in place


def test_forced_agreement_follows_the_float_answers(tiny_ckpt, tiny_cm):
    """Teacher-forced along the float model's answers: the float model agrees with itself
    everywhere with no divergence; the compressed emulation has a KL above zero; a model that
    differs from float at one position only loses exactly that position."""
    from flightllm_overlay.compress.answers import forced_agreement
    from flightllm_overlay.compress.emulate import reference_runner
    tok, prompts = tiny_ckpt.tokenizer, PROMPTS[:3]
    ref = answers(reference_greedy(tiny_ckpt), tok, prompts, 6)
    runner = reference_runner(tiny_ckpt)
    n = sum(len(t) for t in ref.tokens)
    same = forced_agreement(runner, runner, tok, ref, prompts)
    assert same["top1"] == 1.0 and abs(same["kl"]) < 1e-9
    emu = forced_agreement(Emulator(tiny_cm), runner, tok, ref, prompts)
    assert 0.0 <= emu["top1"] <= 1.0 and emu["kl"] > 1e-5
    first = chat_ids(tok, prompts[0][1])

    def one_off(ids):               # the float logits, but a different top token at one place
        out = np.array(runner(ids), np.float64)
        if ids[:len(first)] == first:
            row = out[len(first) - 1]
            row[(int(row.argmax()) + 1) % row.size] = row.max() + 5.0
        return out
    off = forced_agreement(one_off, runner, tok, ref, prompts)
    assert off["top1"] == pytest.approx(1.0 - 1 / n) and off["kl"] > 0


def test_a_float_head_emulation_holds_the_float_embedding(tiny_cm):
    """Emulator(float_head=True): the LM head's weights as the checkpoint holds them; the
    default: the device's INT8 rows (which differ from them)."""
    head = np.asarray(tiny_cm.embed if tiny_cm.lm_head is None else tiny_cm.lm_head, np.float32)
    assert np.array_equal(Emulator(tiny_cm, float_head=True).head.numpy(), head)
    int8 = Emulator(tiny_cm).head.numpy()
    assert not np.array_equal(int8, head)
    assert np.abs(int8 - head).max() <= np.abs(head).max(1).max() / 127


def test_the_activation_points_benchmark_runs_its_rows(tiny_cm, tiny_folder, tmp_path):
    """benchmarks/activation_points.py on the tiny model: the chosen rows (and the weights-only
    row) with perplexity, first sentences against weights only and float, and teacher-forced
    agreement; an unknown row name is refused."""
    import json
    ap = _benchmark("activation_points")
    ck, out = tmp_path / "cm.safetensors", tmp_path / "r.json"
    tiny_cm.save(ck)
    assert ap.main(["--model", str(tiny_folder), "--load", str(ck), "--tokens", "64",
                    "--window", "32", "--prompts", "2", "--new-tokens", "3", "--rows",
                    "wide linear inputs, q, k", "every point, float head", "--json",
                    str(out)]) == 0
    rows = {r["row"]: r for r in json.loads(out.read_text())["results"]}
    assert list(rows) == ["weights only", "every point, float head", "wide linear inputs, q, k"]
    assert rows["wide linear inputs, q, k"]["wide"] == ["attn_in", "q", "k", "attn_out",
                                                         "ffn_in", "ffn_mid", "head_in"]
    assert rows["every point, float head"]["float_head"] and not rows["weights only"]["wide"]
    assert rows["weights only"]["first_sentence"] == 2          # against itself
    for r in rows.values():
        assert 0 <= r["forced_top1"] <= 1 and r["forced_kl"] >= 0 and r["ppl"] > 1
    with pytest.raises(SystemExit):
        ap.main(["--model", str(tiny_folder), "--load", str(ck), "--rows", "no such row"])


def test_the_overlay_answers_benchmark_runs_on_the_device(tiny_cm, tiny_folder, tmp_path):
    """benchmarks/overlay_answers.py on the tiny model: every point wide on the simulated
    overlay, agreement figures in range, and each miss's float margin at its first differing
    token (the random model's answers differ from float's)."""
    import json
    from flightllm_overlay.compress.config import WIDE_POINTS
    oa = _benchmark("overlay_answers")
    ck, out = tmp_path / "cm.safetensors", tmp_path / "r.json"
    tiny_cm.save(ck)
    assert oa.main(["--model", str(tiny_folder), "--load", str(ck), "--wide", "all",
                    "--prompts", "3", "--new-tokens", "4", "--ctx", "128",
                    "--json", str(out)]) == 0
    row = json.loads(out.read_text())["results"][0]
    assert row["wide"] == list(WIDE_POINTS) and len(row["texts"]) == 3
    assert 0 <= row["first_sentence"] <= 1 and 0 <= row["forced_top1"] <= 1
    assert row["forced_kl"] >= 0
    assert len(row["misses"]) == round(3 * (1 - row["first_sentence"])) >= 1
    for m in row["misses"]:
        assert m["float_margin"] >= 0 and 0 <= m["at"] <= 4
    margins = json.loads(out.read_text())["float_margins"]
    assert len(margins) == 3 and row["decided"] == [i for i, m in enumerate(margins) if m >= 0.1]


def _benchmark(name: str):
    """benchmarks/<name>.py loaded as a module (the folder is not a package)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
