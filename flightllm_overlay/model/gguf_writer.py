"""Checkpoint -> GGUF file the way llama.cpp's converter writes it (names, permuted Q/K, quantized, tokenizer)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from .checkpoint import Checkpoint
from .gguf_loader import GGML_TOKEN_CONTROL, HF_TO_GGUF, permute_qk

#: Types `write_gguf` can produce (``gguf.quants.quantize`` implements these).
WRITABLE_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
_NORMAL_TOKEN = 1


def gguf_name(hf: str) -> str:
    """llama.cpp name of a Hugging Face LLaMA tensor name."""
    parts = hf.split(".")
    if hf.startswith("model.layers."):
        key = ".".join(parts[:2] + ["{i}"] + parts[3:])
        return HF_TO_GGUF[key].format(i=parts[2])
    return HF_TO_GGUF[hf]


def write_gguf(ckpt: Checkpoint, path: str | Path, qtype: str = "F32", embed_qtype: str | None = None) -> Path:
    """Write ``ckpt`` as a llama GGUF.

    Parameters
    ----------
    ckpt : Checkpoint
    path : str or Path
    qtype : str
        Type of the 2-D weights (one of `WRITABLE_TYPES`). Norms stay F32. A weight whose row
        length is not a multiple of the block size falls back to F16, as llama.cpp's converter does.
    embed_qtype : str, optional
        Type of the token embedding (and an untied LM head); ``qtype`` when None.

    Returns
    -------
    Path
    """
    import gguf

    for t in (qtype, embed_qtype or qtype):
        if t not in WRITABLE_TYPES:
            raise CheckpointError(f"Cannot write GGUF type {t!r}; choose one of {', '.join(WRITABLE_TYPES)}.")
    args, path = ckpt.args, Path(path)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(args.name)
    writer.add_context_length(args.max_seq_len)
    writer.add_embedding_length(args.dim)
    writer.add_block_count(args.n_layers)
    writer.add_feed_forward_length(args.hidden_dim)
    writer.add_head_count(args.n_heads)
    writer.add_head_count_kv(args.n_kv_heads)
    if args.head_dim != args.dim // args.n_heads:
        writer.add_key_length(args.head_dim)
        writer.add_value_length(args.head_dim)
    writer.add_rope_dimension_count(args.head_dim)
    writer.add_rope_freq_base(args.rope_theta)
    writer.add_layer_norm_rms_eps(args.norm_eps)
    writer.add_vocab_size(args.vocab_size)
    if ckpt.tokenizer is not None:
        _add_tokenizer(writer, ckpt.tokenizer, args.vocab_size)

    for hf, w in ckpt.weights.items():
        if hf == "lm_head.weight" and args.tie_embeddings:
            continue
        data = w.detach().float().cpu().numpy()
        if hf.endswith("q_proj.weight"):
            data = permute_qk(data, args.n_heads)
        elif hf.endswith("k_proj.weight"):
            data = permute_qk(data, args.n_kv_heads)
        want = (embed_qtype or qtype) if hf in ("model.embed_tokens.weight", "lm_head.weight") else qtype
        _add_tensor(writer, gguf_name(hf), np.ascontiguousarray(data), "F32" if data.ndim == 1 else want)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_tensor(writer, name: str, data: np.ndarray, qtype: str) -> None:
    import gguf

    kind = gguf.GGMLQuantizationType[qtype]
    block = gguf.GGML_QUANT_SIZES[kind][0]
    if data.shape[-1] % block:
        kind = gguf.GGMLQuantizationType.F16
    if kind == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(name, data.astype(np.float32))
    elif kind == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, data.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """Store a byte-level BPE tokenizer under ``tokenizer.ggml.*`` (llama.cpp's "gpt2" model)."""
    spec = json.loads(tokenizer.backend.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        return
    specials = {t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
    n = max(vocab_size, tokenizer.vocab_size)
    tokens = [tokenizer.id_to_token(i) or f"[PAD{i}]" for i in range(n)]
    types = [GGML_TOKEN_CONTROL if t in specials else _NORMAL_TOKEN for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    digits = "Digits" in json.dumps(spec.get("pre_tokenizer"))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm" if digits else "default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if tokenizer.bos_id is not None:
        writer.add_bos_token_id(tokenizer.bos_id)
    if tokenizer.eos_id is not None:
        writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
