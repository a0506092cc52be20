"""SmolLM2-135M-Instruct compiled to W8A8 and run on the simulated overlay: the Paris answer and
perplexity within 3% of the float reference on a fixed text slice."""
from __future__ import annotations

import pydoc_data.topics as topics
import pytest

from flightllm_overlay.compiler import compile_model
from flightllm_overlay.model import load_checkpoint
from flightllm_overlay.model.llama import Transformer
from flightllm_overlay.runtime import Generator, Session
from flightllm_overlay.runtime.perplexity import perplexity_device, perplexity_reference

PPL_RATIO_MAX = 1.03
EVAL_TOKENS = 1024          # Python's documentation topics, the half not used for calibration


@pytest.fixture(scope="module")
def smollm2():
    return load_checkpoint(None)


@pytest.fixture(scope="module")
def session(smollm2, sim_overlay):
    program = compile_model(smollm2, ctx=256, all_logits=True)
    with Session(sim_overlay, program) as s:
        yield s


def test_answers_paris_greedy_with_chat_template(session, smollm2):
    gen = Generator(session, smollm2.tokenizer)
    text = gen.generate_text("What is the capital of France?", 16)
    assert "Paris" in text, text
    assert gen.stats.finish_reason == "stop token"
    assert gen.stats.instructions > 0 and gen.stats.hbm_bytes > 0


def test_w8a8_perplexity_within_3_percent_of_float(session, smollm2):
    keys = sorted(topics.topics)
    text = "\n".join(topics.topics[k] for k in keys[0::2])
    ids = smollm2.tokenizer.encode(text)[:EVAL_TOKENS]
    ref = perplexity_reference(Transformer.from_checkpoint(smollm2), ids)
    dev = perplexity_device(session, ids)
    assert dev / ref <= PPL_RATIO_MAX, (dev, ref)
    assert dev / ref > 0.97          # a suspiciously better score means something is off


def test_compressed_4bit_model_answers_paris_on_the_overlay(smollm2, sim_overlay):
    """The FlightLLM-style compression with dense Q/K (mixed 2/3/4/8-bit weights at 4 code bits
    per weight, calibrated packing) compiled and run on the simulated overlay still answers.
    (With Q/K pruned to 70% -- or even 85% -- N:16 density SmolLM2 answers in French instead:
    see the issue 3 closing note; perplexity barely moves, the answer does.)"""
    from flightllm_overlay.compiler import compile_compressed
    from flightllm_overlay.compress import CompressionConfig, compress
    cm = compress(smollm2, None, CompressionConfig.flightllm().but(density_qk=1.0), progress=False)
    assert cm.totals()["code_bits"] <= 4.0
    with Session(sim_overlay, compile_compressed(cm, ctx=256)) as s:
        text = Generator(s, smollm2.tokenizer).generate_text("What is the capital of France?", 12)
    assert "Paris" in text, text
