"""Test fixtures: a deterministic random tiny LLaMA or OPT written as a Hugging Face folder (weights + tokenizer)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from .args import ModelArgs
from .family import model_family

#: Shape of the default tiny model: GQA, odd sizes, a few layers.
TINY_ARGS = ModelArgs(name="tiny-llama", dim=96, n_layers=3, n_heads=6, n_kv_heads=2, head_dim=16, hidden_dim=200,
                      vocab_size=300, norm_eps=1e-5, rope_theta=10000.0, max_seq_len=256, tie_embeddings=False)
#: Shape of the default tiny OPT: MHA, odd FFN width, tied LM head (as every OPT).
TINY_OPT_ARGS = ModelArgs(name="tiny-opt", arch="opt", dim=96, n_layers=3, n_heads=6, hidden_dim=200, vocab_size=300,
                          norm_eps=1e-5, max_seq_len=256, tie_embeddings=True)

#: Special tokens of the tiny vocabulary, with SmolLM2's ids.
TINY_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A field programmable gate array runs the model.
Large language models predict the next token from the tokens before it, one step at a time.
The key and value cache holds every earlier position, so decoding reads it again and again.
In 2024 the board had 8 GB of HBM and 32 channels; the clock ran at 225 MHz.
What is the capital of France? The capital of France is Paris. Hello, world! How are you today?
Sparse matrices skip zeros; mixed precision stores weights in four bits and activations in eight.
"""


def random_weights(args: ModelArgs, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 weights with Hugging Face names and a realistic scale.

    Linear weights have std ``1.5 / sqrt(in_features)`` (0.1-0.15 for the tiny shape), the
    embedding std 0.2, norm weights ``1 + 0.1 * N(0, 1)``; OPT's biases (linear and LayerNorm)
    and its learned position table have std 0.1. With these, greedy decoding of the tiny
    model wanders over many tokens (tied or not) instead of repeating one; smaller linear weights
    let the residual copy of the input embedding win and a tied model then echoes its input.
    """
    from .checkpoint import expected_shapes

    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in expected_shapes(args).items():
        if name == "lm_head.weight" and args.tie_embeddings:
            continue
        if name.endswith(".bias") or name.endswith("embed_positions.weight"):
            w = 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:
            w = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith("embed_tokens.weight"):
            w = 0.2 * torch.randn(shape, generator=gen)
        else:
            w = torch.randn(shape, generator=gen) * (1.5 / shape[1] ** 0.5)
        weights[name] = w.float().contiguous()
    if args.tie_embeddings:
        weights["lm_head.weight"] = weights[model_family(args).embed_name]
    return weights


@lru_cache(maxsize=8)
def tiny_tokenizer_json(vocab_size: int) -> str | None:
    """A byte-level BPE ``tokenizer.json`` with at most ``vocab_size`` entries (None if under 259).

    Ids 0-2 are ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``; then the 256 bytes; then merges
    learned from a fixed paragraph (deterministic).
    """
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(TINY_SPECIALS):
        return None
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(TINY_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    return backend.to_str()


def make_tiny_llama(folder: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """Write a random tiny LLaMA as a Hugging Face folder and return its path.

    Parameters
    ----------
    folder : str or Path
        Created if needed; ``config.json``, ``model.safetensors``, ``generation_config.json`` and,
        when the vocabulary has room for it, ``tokenizer.json`` + ``tokenizer_config.json`` go there.
    seed : int
        Same seed and overrides give byte-identical weights.
    **overrides
        `ModelArgs` fields to change from `TINY_ARGS` (e.g. ``tie_embeddings=True``, ``n_layers=1``).

    Returns
    -------
    Path
        The folder, loadable by `load_checkpoint` and by ``transformers.LlamaForCausalLM.from_pretrained``.
    """
    return write_hf_folder(TINY_ARGS.replace(**overrides), folder, seed)


def make_tiny_opt(folder: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """Write a random tiny OPT (`TINY_OPT_ARGS` with `overrides`) as a Hugging Face folder.

    Loadable by `load_checkpoint` and by ``transformers.OPTForCausalLM.from_pretrained``; same
    seed and overrides give byte-identical weights.
    """
    return write_hf_folder(TINY_OPT_ARGS.replace(**overrides), folder, seed)


def write_hf_folder(args: ModelArgs, folder: str | Path, seed: int = 0) -> Path:
    """Random weights of `args` (see `random_weights`), its config and the tiny tokenizer, in `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = random_weights(args, seed)
    if args.tie_embeddings:
        weights = {k: v for k, v in weights.items() if k != "lm_head.weight"}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = args.to_hf_config()
    tok = tiny_tokenizer_json(args.vocab_size)
    if tok is not None:
        config.update(bos_token_id=1, eos_token_id=2)
        (folder / "tokenizer.json").write_text(tok, encoding="utf-8")
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
            "pad_token": "<|im_end|>", "chat_template": TINY_CHAT_TEMPLATE,
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": args.max_seq_len,
        }, indent=2), encoding="utf-8")
        (folder / "generation_config.json").write_text(
            json.dumps({"bos_token_id": 1, "eos_token_id": 2}, indent=2), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder
