"""The OPT float reference on a random tiny OPT: transformers parity, KV cache, loader names, variants refused."""
import json

import pytest
import torch

from flightllm_overlay.errors import CheckpointError, ContextLengthError
from flightllm_overlay.model import MODEL_TABLE, ModelArgs, Transformer, load_checkpoint
from flightllm_overlay.model.opt import OPTTransformer
from flightllm_overlay.model.testing import TINY_OPT_ARGS, make_tiny_opt

import transformers  # the independent oracle (tests extra); missing means a broken install

PROMPT = "What is the capital of France? 2024 was"


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def tiny(request, tmp_path_factory):
    folder = make_tiny_opt(tmp_path_factory.mktemp("opt") / "tiny-opt", seed=5, tie_embeddings=request.param)
    hf = transformers.OPTForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return folder, load_checkpoint(folder), hf


def test_logits_match_transformers_prefill_and_decode(tiny):
    folder, ckpt, hf = tiny
    ids = ckpt.tokenizer.encode(PROMPT)
    assert len(ids) > 10
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]                     # (T, vocab)
    model = Transformer.from_checkpoint(ckpt)
    assert isinstance(model, OPTTransformer)
    ours = torch.cat([model.forward(ids[:6], 0)] + [model.forward([t], 6 + i) for i, t in enumerate(ids[6:])])
    assert ours.shape == (len(ids), ckpt.args.vocab_size) and ours.dtype == torch.float32
    assert ref.abs().max() > 1.0
    assert (ours - ref).abs().max().item() < 1e-4


def test_greedy_matches_transformers_generate(tiny):
    _, ckpt, hf = tiny
    ids = ckpt.tokenizer.encode(PROMPT)
    ours = Transformer.from_checkpoint(ckpt).greedy(ids, 16)
    ref = hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, min_new_tokens=16,
                      pad_token_id=0)[0, len(ids):].tolist()
    assert ours == ref


def test_positions_matter_and_use_the_offset_of_two(tiny):
    """Shifting a prompt's start position changes the logits exactly as the table rows do."""
    _, ckpt, _ = tiny
    m = Transformer.from_checkpoint(ckpt)
    seen = []
    m.forward([7], 0, hook=lambda name, layer, x: seen.append(x.clone()) if name == "embed" else None)
    want = ckpt.weights["model.decoder.embed_tokens.weight"][7] + \
        ckpt.weights["model.decoder.embed_positions.weight"][2]
    assert torch.equal(seen[0][0], want)


def test_context_limit_is_the_position_table(tiny):
    _, ckpt, _ = tiny
    m = Transformer.from_checkpoint(ckpt)
    with pytest.raises(ContextLengthError, match="max_seq_len"):
        m.forward(list(range(ckpt.args.max_seq_len + 1)), 0)


def test_opt_model_names_without_the_model_prefix_load(tmp_path):
    """facebook/opt-* files hold OPTModel names (``decoder.layers.0...``)."""
    from safetensors.torch import load_file, save_file
    folder = make_tiny_opt(tmp_path / "a", seed=1, n_layers=1)
    w = load_file(str(folder / "model.safetensors"))
    save_file({k.removeprefix("model."): v for k, v in w.items()}, str(folder / "model.safetensors"))
    ckpt = load_checkpoint(folder)
    assert torch.equal(ckpt.weights["model.decoder.layers.0.fc1.bias"],
                       w["model.decoder.layers.0.fc1.bias"])
    assert ckpt.weights["lm_head.weight"] is ckpt.weights["model.decoder.embed_tokens.weight"]


@pytest.mark.parametrize("change, match", [
    ({"do_layer_norm_before": False}, "do_layer_norm_before=False"),
    ({"word_embed_proj_dim": 32}, "project_in/project_out"),
    ({"activation_function": "gelu"}, "activation_function='gelu'"),
    ({"enable_bias": False}, "enable_bias=False"),
])
def test_unsupported_opt_variants_are_refused_with_the_reason(tmp_path, change, match):
    folder = make_tiny_opt(tmp_path / "v", seed=0, n_layers=1)
    config = json.loads((folder / "config.json").read_text())
    config.update(change)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(folder)
    assert "Only pre-LayerNorm OPT" in str(info.value)


def test_missing_bias_is_named(tmp_path):
    from safetensors.torch import load_file, save_file
    folder = make_tiny_opt(tmp_path / "m", seed=0, n_layers=1)
    w = load_file(str(folder / "model.safetensors"))
    del w["model.decoder.layers.0.fc2.bias"]
    save_file(w, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="fc2.bias"):
        load_checkpoint(folder)


def test_shape_table_rows_and_config_round_trip():
    opt = ModelArgs.from_name("opt-6.7b")
    assert (opt.arch, opt.dim, opt.n_layers, opt.n_heads, opt.hidden_dim, opt.vocab_size, opt.max_seq_len) == \
        ("opt", 4096, 32, 32, 16384, 50272, 2048)
    assert 6.6e9 < opt.n_params < 6.9e9                       # "6.7B"
    assert 0.12e9 < MODEL_TABLE["opt-125m"].n_params < 0.13e9
    assert ModelArgs.from_hf_config(TINY_OPT_ARGS.to_hf_config(), name="tiny-opt") == TINY_OPT_ARGS
    hf = transformers.OPTConfig(**{k: v for k, v in opt.to_hf_config().items() if k != "architectures"})
    assert (hf.hidden_size, hf.ffn_dim, hf.num_attention_heads) == (4096, 16384, 32)
    with pytest.raises(CheckpointError, match="multi-head"):
        ModelArgs(arch="opt", dim=64, n_layers=1, n_heads=4, n_kv_heads=2, hidden_dim=64, vocab_size=10)
