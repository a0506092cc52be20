"""The float reference on a random tiny LLaMA: transformers parity, KV cache, shapes table, test fixture."""
import hashlib

import pytest
import torch

from flightllm_overlay.errors import CheckpointError, ContextLengthError
from flightllm_overlay.model import MODEL_TABLE, ModelArgs, Transformer, load_checkpoint
from flightllm_overlay.model.llama import rms_norm, rope, rope_tables
from flightllm_overlay.model.testing import TINY_ARGS, make_tiny_llama

import transformers  # the independent oracle (tests extra); missing means a broken install

PROMPT = "What is the capital of France? 2024 was"


def hf_model(folder):
    return transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def tiny(request, tmp_path_factory):
    folder = make_tiny_llama(tmp_path_factory.mktemp("tiny"), seed=3, tie_embeddings=request.param)
    return folder, load_checkpoint(folder), hf_model(folder)


def test_logits_match_transformers(tiny):
    folder, ckpt, hf = tiny
    ids = ckpt.tokenizer.encode(PROMPT)
    assert len(ids) > 10
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]  # (T, vocab)
    ours = Transformer.from_checkpoint(ckpt).forward(torch.tensor(ids), 0)
    assert ours.shape == (len(ids), ckpt.args.vocab_size) and ours.dtype == torch.float32
    assert ref.abs().max() > 1.0  # logits are not trivially small
    assert (ours - ref).abs().max().item() < 1e-4


def test_greedy_matches_transformers_generate(tiny):
    folder, ckpt, hf = tiny
    ids = ckpt.tokenizer.encode(PROMPT)
    ours = Transformer.from_checkpoint(ckpt).greedy(ids, 24)
    ref = hf.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, min_new_tokens=24,
                      pad_token_id=0)[0, len(ids):].tolist()
    assert ours == ref
    assert len(set(ours)) >= 8, "random tiny model should not decode one token over and over"


def test_kv_cache_decode_equals_full_recompute(tiny):
    _, ckpt, _ = tiny
    ids = ckpt.tokenizer.encode(PROMPT)
    full = Transformer.from_checkpoint(ckpt).forward(ids, 0)  # (T, vocab)
    m = Transformer.from_checkpoint(ckpt)
    step = [m.prefill(ids[:5])] + [m.decode_one(t) for t in ids[5:]]
    assert torch.allclose(torch.stack(step), full[4:], atol=1e-4, rtol=0)
    # chunked prefill, and rewinding to an earlier position, give the same logits again
    m.reset()
    chunks = torch.cat([m.forward(ids[:3], 0), m.forward(ids[3:8], 3), m.forward(ids[8:], 8)])
    assert torch.allclose(chunks, full, atol=1e-4, rtol=0)
    assert torch.allclose(m.forward(ids[6:], 6), full[6:], atol=1e-4, rtol=0)
    assert m.pos == len(ids)


def test_cache_grows_and_context_limit(tiny):
    _, ckpt, _ = tiny
    m = Transformer.from_checkpoint(ckpt, max_seq_len=300)
    with pytest.raises(ValueError):
        m.forward([1, 2], 5)  # gap after the cache
    ids = [(7 * i) % 300 for i in range(260)]
    m.prefill(ids[:200])
    assert m.k_cache.shape[2] == 256  # allocated as needed, then doubled up to max_seq_len
    grown = m.forward(ids[200:], 200)
    full = Transformer.from_checkpoint(ckpt, max_seq_len=300).forward(ids, 0)
    assert torch.allclose(grown, full[200:], atol=1e-4, rtol=0)
    assert m.k_cache.shape == (ckpt.args.n_layers, ckpt.args.n_kv_heads, 300, ckpt.args.head_dim)
    with pytest.raises(ContextLengthError):
        m.forward(list(range(120)), m.pos)


def test_hook_sees_every_stage(tiny):
    _, ckpt, _ = tiny
    seen = {}
    logits = Transformer.from_checkpoint(ckpt).forward([5, 6, 7], 0, hook=lambda n, i, t: seen.__setitem__((n, i), t))
    a = ckpt.args
    assert seen[("q", 0)].shape == (3, a.n_heads, a.head_dim)
    assert seen[("k", a.n_layers - 1)].shape == (3, a.n_kv_heads, a.head_dim)
    assert torch.equal(seen[("logits", -1)], logits)
    assert seen[("ffn_mid", 1)].shape == (3, a.hidden_dim)
    assert len(seen) == 3 + 10 * a.n_layers
    # without logits (calibration): the same blocks, the same cache, no head
    model, early = Transformer.from_checkpoint(ckpt), {}
    assert model.forward([5, 6, 7], 0, hook=lambda n, i, t: early.__setitem__((n, i), t),
                         logits=False) is None
    assert set(seen) - set(early) == {("final_norm", -1), ("logits", -1)} and model.pos == 3
    assert all(torch.equal(early[k], seen[k]) for k in early)


def test_tied_lm_head_is_the_embedding(tiny):
    _, ckpt, _ = tiny
    same = ckpt.weights["lm_head.weight"] is ckpt.weights["model.embed_tokens.weight"]
    assert same == ckpt.args.tie_embeddings
    layer = ckpt.layer(2)
    assert sorted(layer) == ["down_proj", "gate_proj", "input_layernorm", "k_proj", "o_proj",
                             "post_attention_layernorm", "q_proj", "up_proj", "v_proj"]
    assert layer["q_proj"] is ckpt.weights["model.layers.2.self_attn.q_proj.weight"]


def test_rms_norm_and_rope_formulas():
    x = torch.randn(4, 8)
    w = torch.rand(8)
    ref = w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6)
    assert torch.allclose(rms_norm(x, w, 1e-6), ref, atol=1e-6)
    args = ModelArgs(dim=16, n_layers=1, n_heads=2, hidden_dim=8, vocab_size=4, rope_theta=500.0)
    cos, sin = rope_tables(args, 10)
    q = torch.randn(10, 2, 8)
    out = rope(q, cos, sin)
    # pair (j, j + 4) of each head is rotated by angle pos * theta^(-2j/8)
    pos, j = 7, 1
    ang = torch.tensor(pos * 500.0 ** (-2 * j / 8))
    a, b = q[pos, :, j], q[pos, :, j + 4]
    assert torch.allclose(out[pos, :, j], a * torch.cos(ang) - b * torch.sin(ang), atol=1e-5)
    assert torch.allclose(out[pos, :, j + 4], b * torch.cos(ang) + a * torch.sin(ang), atol=1e-5)
    # relative: <rope(q, m), rope(k, n)> depends on m - n only
    k = torch.randn(1, 2, 8).expand(10, 2, 8)
    q1 = q[3:4].expand(10, 2, 8)
    dots = (rope(q1, cos, sin)[:, None] * rope(k, cos, sin)[None]).sum(-1)  # (10, 10, 2)
    assert torch.allclose(dots[2, 0], dots[9, 7], atol=1e-5)


def test_make_tiny_llama_is_deterministic(tmp_path):
    digest = [hashlib.sha256((make_tiny_llama(tmp_path / n, seed=1) / "model.safetensors").read_bytes()).hexdigest()
              for n in ("a", "b")]
    assert digest[0] == digest[1]
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()
    other = make_tiny_llama(tmp_path / "c", seed=2, n_layers=1, vocab_size=128)
    ckpt = load_checkpoint(other)
    assert ckpt.args.n_layers == 1 and ckpt.tokenizer is None  # no room for a byte-level vocabulary
    w = load_checkpoint(tmp_path / "a").weights
    assert 0.05 < w["model.layers.0.self_attn.q_proj.weight"].std() < 0.2
    assert 0.05 < w["model.norm.weight"].std() < 0.2 and abs(w["model.norm.weight"].mean() - 1) < 0.1


def test_model_args_table_and_hf_config():
    smol = MODEL_TABLE["smollm2-135m"]
    assert (smol.n_params / 1e6) == pytest.approx(134.5, abs=0.1)
    assert MODEL_TABLE["llama2-7b"].n_params / 1e9 == pytest.approx(6.74, abs=0.01)
    assert smol.n_rep == 3 and smol.kv_dim == 192
    assert ModelArgs.from_hf_config(TINY_ARGS.to_hf_config(), name=TINY_ARGS.name) == TINY_ARGS
    with pytest.raises(CheckpointError, match="MODEL_TABLE"):
        ModelArgs.from_name("gpt-5")
    with pytest.raises(CheckpointError, match="n_kv_heads"):
        TINY_ARGS.replace(n_kv_heads=4)
    with pytest.raises(CheckpointError, match="RoPE scaling"):
        ModelArgs.from_hf_config({**TINY_ARGS.to_hf_config(), "rope_scaling": {"rope_type": "llama3"}})
