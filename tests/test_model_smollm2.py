"""The default model (SmolLM2-135M-Instruct Q4_1 GGUF): our loader + reference vs transformers' GGUF loader."""
import pytest
import torch

from flightllm_overlay.errors import CheckpointError
from flightllm_overlay.model import MODEL_TABLE, Transformer, default_model_path, load_checkpoint

import transformers  # the independent oracle (tests extra); missing means a broken install

#: Max |logit difference| allowed between our fp32 reference and transformers' (seen: about 6e-5,
#: from a different summation order in attention; logits span about +-40).
LOGIT_TOL = 2e-4
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TEXTS = ["Hello, world!", "The year 2024 had 365 days; pi = 3.14159.", " 123 4567 x1y22 9.99$", "héllo wörld ñ",
         "日本語のテキスト 🤖🚀 emoji", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
         "  leading spaces\n\n\ttabs\r\n", "def f(x):\n    return x ** 2  # comment", "don't we'll I'M"]


@pytest.fixture(scope="module")
def gguf_path():
    try:
        return default_model_path()
    except CheckpointError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def ours(gguf_path):
    return load_checkpoint()


@pytest.fixture(scope="module")
def hf_model(gguf_path):
    return transformers.LlamaForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def hf_tok(gguf_path):
    return transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)


def test_args(ours):
    table = MODEL_TABLE["smollm2-135m"]
    assert ours.args.name == "smollm2-135m-instruct"
    assert ours.args.replace(name=table.name, norm_eps=table.norm_eps) == table
    assert ours.args.norm_eps == pytest.approx(1e-5)
    assert ours.weights["lm_head.weight"] is ours.weights["model.embed_tokens.weight"]
    assert all(w.dtype == torch.float32 for w in ours.weights.values())


def test_weights_equal_transformers_dequantized(ours, hf_model):
    state = hf_model.state_dict()
    for name, w in ours.weights.items():
        assert torch.equal(state[name], w) or torch.allclose(state[name], w, rtol=0, atol=1e-6), name


def test_logits_match_transformers(ours, hf_model):
    ids = ours.tokenizer.encode(ours.tokenizer.apply_chat_template(QUESTION))
    with torch.no_grad():
        ref = hf_model(torch.tensor([ids])).logits[0]  # (T, vocab)
    logits = Transformer.from_checkpoint(ours).forward(ids, 0)
    assert (logits - ref).abs().max().item() < LOGIT_TOL
    assert torch.equal(logits.argmax(-1), ref.argmax(-1))


def test_greedy_answer(ours):
    tok = ours.tokenizer
    ids = tok.encode(tok.apply_chat_template(QUESTION))
    out = Transformer.from_checkpoint(ours).greedy(ids, 16, tok.stop_ids)
    assert tok.decode(out) == "The capital of France is Paris.<|im_end|>"
    assert "".join(tok.decode_stream(out[:-1])) == "The capital of France is Paris."


def test_tokenizer_ids_match_transformers(ours, hf_tok):
    tok = ours.tokenizer
    for text in TEXTS:
        assert tok.encode(text) == hf_tok.encode(text), text
        assert tok.decode(tok.encode(text)) == text
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (1, 2, 49152)
    assert tok.stop_ids == {0, 2}
    assert tok.encode("2024") == [tok.token_to_id(c) for c in "2024"]
    # llama.cpp's "smollm" pre-tokenizer isolates each digit (no merge in this vocabulary could tell)
    pieces = [p for p, _ in tok.backend.pre_tokenizer.pre_tokenize_str("x 123")]
    assert pieces == ["x", "Ġ", "1", "2", "3"]


@pytest.mark.parametrize("gen", [True, False])
def test_chat_template_matches_transformers(ours, hf_tok, gen):
    convs = [QUESTION, [{"role": "system", "content": "Answer in French."}] + QUESTION,
             QUESTION + [{"role": "assistant", "content": "Paris."}, {"role": "user", "content": "Sûr ? 🤔"}]]
    for msgs in convs:
        text = ours.tokenizer.apply_chat_template(msgs, add_generation_prompt=gen)
        assert text == hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
    assert "You are a helpful AI assistant named SmolLM" in ours.tokenizer.apply_chat_template(QUESTION)
