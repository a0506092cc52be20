"""Answer-level quality: a prompt set of our own, greedy answers, and their agreement with the float model's.

Perplexity can barely move while the answers change (a compressed SmolLM2 answered "What is the
capital of France?" in broken French at +2% perplexity), so each compression setting is also
judged by what it says: for every prompt, the greedy answer (chat template, `NEW_TOKENS` new
tokens) of the compressed model against the float model's, as

* **first sentence identical** (the answer up to its first '.', '!', '?' or line break), and
* **token agreement**: the share of the float answer's positions where the compressed answer has
  the same token (positions after a stop token count as disagreement when only one stopped).

Both follow each model's own answer, so one near tie early in an answer (the float model itself
opens "What is the capital of France?" with "The" only 0.08 logits ahead of "L'") decides the
whole of it: over 23 prompts they move by 10-20 points between settings that differ by noise.
`forced_agreement` measures the same thing teacher-forced, along the float model's answers:
at every new token, whether the model's top choice is the float model's, and the KL divergence
of its next-token distribution from the float model's; one near tie then changes one position.
`float_margins` says how firmly the float model decides each first sentence (its smallest top-1
margin over the sentence's tokens); `Answers.agreement(ref, margins)` then also counts the
first sentences of the prompts float decides by at least `DECIDED` logits, where a difference
is the compression's and not arithmetic noise.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

#: (kind, prompt): facts, lists, short reasoning, definitions, instructions, longer prompts
PROMPTS = (
    ("fact", "What is the capital of France?"),
    ("fact", "Who wrote the play Romeo and Juliet?"),
    ("fact", "What is the largest planet in our solar system?"),
    ("fact", "In which year did the Second World War end?"),
    ("fact", "What is the chemical symbol for gold?"),
    ("fact", "Which ocean lies between Europe and North America?"),
    ("list", "List three primary colors."),
    ("list", "Name four animals that live in the sea."),
    ("list", "Give three tips for sleeping better."),
    ("list", "What are the first five prime numbers?"),
    ("reasoning", "If a train travels 60 kilometres in one hour, how far does it travel in three "
                  "hours?"),
    ("reasoning", "Tom is taller than Anna, and Anna is taller than Ben. Who is the shortest?"),
    ("reasoning", "I have two apples and buy three more. How many apples do I have?"),
    ("reasoning", "Is a whale a fish or a mammal? Explain briefly."),
    ("definition", "What is photosynthesis?"),
    ("definition", "Define the word 'democracy' in one sentence."),
    ("definition", "What does a compiler do?"),
    ("definition", "What is gravity?"),
    ("instruction", "Write a short greeting for a birthday card."),
    ("instruction", "Translate 'good morning' into Spanish."),
    ("long", "I am planning a trip to Italy in the spring and I would like to see some famous "
             "historical places. I have one week and I will travel by train. Which cities would "
             "you suggest I visit, and why?"),
    ("long", "My small garden gets sun only in the morning, and the soil stays wet for days "
             "after rain. I would like to grow some vegetables there this year. What would you "
             "recommend, and what should I do to prepare the soil?"),
    ("long", "Explain to a ten-year-old why the sky is blue during the day and often red or "
             "orange at sunset, using a simple comparison they would understand."),
)
NEW_TOKENS = 32
#: float's smallest top-1 margin (logits) over a first sentence from which the prompt counts as
#: decided: twice the most that float16 arithmetic alone moved a margin along SmolLM2's answers
#: to the prompt set (0.050 logits; bfloat16 moved them by up to 0.57, 0.15 at the 90th
#: percentile)
DECIDED = 0.1
_SENTENCE_END = re.compile(r"[.!?\n]")
_LIST_NUMBER = re.compile(r"\s*\d{1,3}")


def first_sentence(text: str) -> str:
    """The text up to and including its first sentence end ('.', '!', '?' or a line break),
    whitespace-normalised; a '.' between digits (3.5) does not end a sentence, nor the '.' of a
    list number opening a line ("1. Dolphins" is one sentence, not "1.", which every numbered
    list would share)."""
    text = text.strip()
    for m in _SENTENCE_END.finditer(text):
        i = m.start()
        if text[i] == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
            continue
        if text[i] == "." and _LIST_NUMBER.fullmatch(text[text.rfind("\n", 0, i) + 1:i]):
            continue
        return " ".join(text[:i + 1].split())
    return " ".join(text.split())


def token_agreement(ref: list, other: list) -> float:
    """Share of positions of the longer answer where both have the same token."""
    n = max(len(ref), len(other))
    if n == 0:
        return 1.0
    return sum(a == b for a, b in zip(ref, other)) / n


def chat_ids(tokenizer, prompt: str) -> list:
    """The prompt as a user turn in the model's chat template, ready for generation."""
    if tokenizer.chat_template is None:
        return tokenizer.encode(prompt)
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                         add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


@dataclass
class Answers:
    """Greedy answers of one model to the prompt set: token ids and text per prompt."""

    tokens: list
    texts: list

    def agreement(self, ref: "Answers", margins=None) -> dict:
        """{'first_sentence': share identical, 'tokens': mean token agreement, 'same': list of
        bool per prompt} of these answers against `ref`'s (the float model's).  margins: float's
        per prompt (`float_margins`); adds 'decided' (the prompts float decides by at least
        `DECIDED` logits, their indices) and 'first_sentence_decided' (the share of those whose
        first sentence is identical; None when there are none)."""
        same = [first_sentence(a) == first_sentence(b) for a, b in zip(self.texts, ref.texts)]
        tok = [token_agreement(r, a) for r, a in zip(ref.tokens, self.tokens)]
        out = {"first_sentence": sum(same) / len(same), "tokens": sum(tok) / len(tok),
               "same": same}
        if margins is not None:
            decided = [i for i, m in enumerate(margins[:len(same)]) if m >= DECIDED]
            out.update(decided=decided, first_sentence_decided=(
                sum(same[i] for i in decided) / len(decided) if decided else None))
        return out


def answers(greedy, tokenizer, prompts=PROMPTS, new_tokens: int = NEW_TOKENS,
            progress: bool = False, desc: str = "answers") -> Answers:
    """Greedy answers: greedy(prompt_ids, n, stop_ids) -> new token ids (`Emulator.greedy`, or
    `reference_greedy` for the float model)."""
    from tqdm.auto import tqdm
    toks, texts = [], []
    stop = tokenizer.stop_ids
    for _, prompt in tqdm(prompts, desc=desc, unit="prompt", disable=not progress):
        out = greedy(chat_ids(tokenizer, prompt), new_tokens, stop)
        toks.append(out)
        texts.append(tokenizer.decode([t for t in out if t not in stop], skip_special_tokens=True))
    return Answers(toks, texts)


def forced_agreement(logits, ref_logits, tokenizer, ref: Answers, prompts=PROMPTS) -> dict:
    """Teacher-forced agreement along the float model's answers `ref` (`answers` of the float
    model for `prompts`): logits / ref_logits map token ids to (T, vocab) logits (`Emulator`,
    `emulate.reference_runner`).  {'top1': share of the answers' positions where `logits`' top
    token is the float answer's, 'kl': mean KL(float || model) of the next-token distributions
    there, in nats}."""
    agree = n = 0
    kl = 0.0
    for (_, prompt), out in zip(prompts, ref.tokens):
        if not out:
            continue
        ids = chat_ids(tokenizer, prompt)
        full, at = ids + list(out), slice(len(ids) - 1, len(ids) + len(out) - 1)
        got = _log_softmax(np.asarray(logits(full), np.float64)[at])
        want = _log_softmax(np.asarray(ref_logits(full), np.float64)[at])
        agree += int((got.argmax(-1) == np.asarray(out)).sum())
        kl += float((np.exp(want) * (want - got)).sum())
        n += len(out)
    return {"top1": agree / max(n, 1), "kl": kl / max(n, 1)}


def sentence_tokens(tokenizer, out: list) -> int:
    """How many of an answer's tokens its first sentence takes (the whole answer when the
    sentence does not end within it)."""
    stop = tokenizer.stop_ids
    words = lambda n: tokenizer.decode([t for t in out[:n] if t not in stop],
                                       skip_special_tokens=True)
    whole = first_sentence(words(len(out)))
    return next((n for n in range(1, len(out)) if first_sentence(words(n)) == whole), len(out))


def float_margins(ref_logits, tokenizer, ref: Answers, prompts=PROMPTS) -> list:
    """Per prompt, how firmly the float model decides its first sentence: the smallest margin
    (logits, its top token's minus the runner-up's) over the sentence's tokens, teacher-forced
    along its answers `ref` (ref_logits: `emulate.reference_runner`).  A prompt whose margin is
    a few hundredths of a logit changes its first sentence under any arithmetic that is not
    float's own (float16's moves margins by up to 0.05): `DECIDED`.  inf for an empty answer."""
    out = []
    for (_, prompt), toks in zip(prompts, ref.tokens):
        n = sentence_tokens(tokenizer, toks) if toks else 0
        if n == 0:
            out.append(float("inf"))
            continue
        ids = chat_ids(tokenizer, prompt)
        logits = np.asarray(ref_logits(ids + list(toks[:n])), np.float64)[len(ids) - 1:][:n]
        top2 = np.sort(logits, -1)[:, -2:]
        out.append(float((top2[:, 1] - top2[:, 0]).min()))
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference_greedy(ckpt, dtype=None):
    """The float reference's greedy(prompt_ids, n, stop_ids), for `answers` (dtype: see
    `emulate.reference_model`)."""
    from .emulate import reference_model
    model = reference_model(ckpt, dtype)
    return lambda ids, n, stop: model.greedy(ids, n, stop)
