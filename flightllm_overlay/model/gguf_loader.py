"""GGUF -> float32 Hugging Face LLaMA weights, `ModelArgs` and tokenizer (llama.cpp names and layouts undone)."""
from __future__ import annotations

import math
import re
import sys
import warnings
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CheckpointError
from . import file_index
from .args import SUPPORTED_ARCHS, ModelArgs
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    import torch

# Imported lazily by the functions: `gguf` is only needed for .gguf files.
GGML_TOKEN_CONTROL, GGML_TOKEN_USER_DEFINED = 3, 4

#: Tensor types we dequantize. Each is checked against an independent decoder in tests/test_model_gguf.py.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                   "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")

#: llama.cpp tensor name -> Hugging Face name ("{i}" is the block index).
GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
HF_TO_GGUF = {hf: gg for gg, hf in GGUF_TO_HF.items()}

_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")

# tokenizer.ggml.pre -> split regex (None: the GPT-2 regex inside ByteLevel). Values follow llama.cpp.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_DIGITS_THEN_GPT2 = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")
_GPT2 = ("default", "gpt2", "gpt-2")
_SPLITS = {"llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT,
           "smaug-bpe": _LLAMA3_SPLIT, "dbrx": _LLAMA3_SPLIT, "falcon3": _LLAMA3_SPLIT,
           "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT}


def hf_name(gguf_name: str) -> str | None:
    """Hugging Face name of a llama.cpp tensor name, or None when it has none."""
    match = _BLOCK.match(gguf_name)
    key = f"blk.{{i}}.{match.group(2)}" if match else gguf_name
    target = GGUF_TO_HF.get(key)
    return target.format(i=match.group(1)) if (target and match) else target


def permute_qk(w: np.ndarray | torch.Tensor, n_heads: int):
    """HF rotate-half row order -> llama.cpp interleaved order (what ``convert_hf_to_gguf.py`` does).

    ``w``: (n_heads * head_dim, dim). Within a head, rows ``[0..hd/2)`` and ``[hd/2..hd)`` are the two
    halves rotated together; llama.cpp wants them interleaved pairwise.
    """
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray | torch.Tensor, n_heads: int):
    """Inverse of `permute_qk`: llama.cpp interleaved rows -> HF rotate-half rows."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------------------- reading
_READER = None


def _reader_class():
    """`gguf.GGUFReader`, with its key/value section read in bulk (`_BulkArrays`) when this
    version of gguf has the method that the subclass replaces."""
    global _READER
    if _READER is None:
        import gguf
        _READER = gguf.GGUFReader
        if callable(getattr(gguf.GGUFReader, "_build_fields", None)) and \
                callable(getattr(gguf.GGUFReader, "_get_field_parts", None)):
            _READER = type("BulkGGUFReader", (_BulkArrays, gguf.GGUFReader), {})
    return _READER


class _BulkArrays:
    """Mixin for `gguf.GGUFReader`: arrays of strings or numbers in the key/value section are
    read in one pass into Python lists (`array_values`) instead of two memory-mapped numpy
    slices per element.  gguf's own reader spends seconds on a 49k-token vocabulary; this takes
    a tenth of one.  Every other field (scalars, strings, nested arrays) is gguf's own
    `ReaderField`; tensors are gguf's own.  `metadata` merges both; tests/test_model_gguf.py
    checks that it equals what the plain reader gives."""

    _NUMPY = {0: "u1", 1: "i1", 2: "u2", 3: "i2", 4: "u4", 5: "i4", 6: "f4", 7: "?",
              10: "u8", 11: "i8", 12: "f8"}           # GGUFValueType -> numpy type
    _STRING, _ARRAY = 8, 9

    def _build_fields(self, offs: int, count: int) -> int:
        import struct

        from gguf import ReaderField
        self.array_values = {}
        raw = self.data.view(np.ndarray)
        view, size = memoryview(raw), raw.size
        swapped = getattr(self, "byte_order", "I") == "S"
        order = "<" if (sys.byteorder == "little") != swapped else ">"
        u32, u64, pair = struct.Struct(order + "I"), struct.Struct(order + "Q"), \
            struct.Struct(order + "IQ")

        def text(at: int) -> tuple:
            n, = u64.unpack_from(view, at)
            if at + 8 + n > size:
                raise ValueError(f"a string at offset {at} runs past the end of the file")
            return str(view[at + 8:at + 8 + n], "utf-8"), at + 8 + n

        for _ in range(int(count)):
            start = offs
            key, offs = text(offs)
            vtype, = u32.unpack_from(view, offs)
            if key in self.fields or key in self.array_values:
                raise KeyError(f"Duplicate {key} already in list at offset {start}")
            itype, n = pair.unpack_from(view, offs + 4) if vtype == self._ARRAY else (None, 0)
            if itype == self._STRING:
                at, values = offs + 16, []
                for _ in range(n):
                    value, at = text(at)
                    values.append(value)
                self.array_values[key], offs = values, at
                continue
            if itype in self._NUMPY:
                dtype = np.dtype(order + self._NUMPY[itype])
                end = offs + 16 + n * dtype.itemsize
                if end > size:
                    raise ValueError(f"array {key!r} runs past the end of the file")
                self.array_values[key] = raw[offs + 16:end].view(dtype).tolist()
                offs = end
                continue
            # scalars, strings and nested arrays: gguf's own parts (few and small)
            kv_klen, kv_kdata = self._get_str(start)
            raw_type = self._get(offs, np.uint32)
            parts = [kv_klen, kv_kdata, raw_type]
            fsize, fparts, fidxs, ftypes = self._get_field_parts(offs + 4, raw_type[0])
            self._push_field(ReaderField(start, key, parts + fparts,
                                         [i + len(parts) for i in fidxs], ftypes), skip_sum=True)
            offs += 4 + fsize
        return offs


def open_gguf(path: str | Path):
    """A `gguf.GGUFReader` on ``path`` (arrays of the metadata read in bulk, see `_BulkArrays`),
    with every read error turned into a `CheckpointError`."""
    try:
        return _reader_class()(str(path))
    except Exception as exc:  # ValueError (magic, version), IndexError/struct errors when truncated
        raise CheckpointError(
            f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc}). It is corrupt or truncated: "
            "download or convert it again."
        ) from exc


def metadata(reader) -> dict[str, Any]:
    """All key/value metadata of a GGUF as Python values (strings, numbers, lists), in the
    file's order for gguf's own fields, then the arrays read in bulk."""
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            out[key] = field.contents()
        except Exception as exc:
            raise CheckpointError(f"GGUF metadata key {key!r} is unreadable ({exc}); the file is corrupt.") from exc
    out.update(getattr(reader, "array_values", {}))
    return out


def args_from_metadata(meta: dict[str, Any], name: str, n_vocab_rows: int | None, tied: bool) -> ModelArgs:
    """`ModelArgs` from ``llama.*`` GGUF keys."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise CheckpointError(
            f"GGUF architecture {arch!r} is not supported; supported: {', '.join(SUPPORTED_ARCHS)}."
        )

    def key(k: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{k}", default)
        if value is None:
            raise CheckpointError(f"GGUF metadata lacks {arch}.{k}; the file is incomplete.")
        return value

    def integer(k: str, default: Any = None) -> int:
        value = key(k, default)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise CheckpointError(f"GGUF metadata {arch}.{k} = {value!r:.40} must be an integer; "
                                  "the file is corrupt.")
        return int(value)

    def number(k: str, default: Any = None) -> float:
        value = key(k, default)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or \
                not math.isfinite(float(value)):
            raise CheckpointError(f"GGUF metadata {arch}.{k} = {value!r:.40} must be a finite "
                                  "number; the file is corrupt.")
        return float(value)

    dim, n_heads = integer("embedding_length"), integer("attention.head_count")
    if dim <= 0 or n_heads <= 0:
        raise CheckpointError(f"GGUF metadata gives embedding_length={dim} and head_count={n_heads}; "
                              "both must be positive: the file is corrupt.")
    head_dim = integer("attention.key_length", 0) or dim // n_heads
    rot = meta.get(f"{arch}.rope.dimension_count")
    if rot is not None and integer("rope.dimension_count") != head_dim:
        raise CheckpointError(f"Partial RoPE ({rot} of {head_dim} dims) is not implemented.")
    scaling = meta.get(f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise CheckpointError(f"RoPE scaling {scaling!r:.40} is not implemented; only plain RoPE is.")
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = meta.get(f"{arch}.vocab_size") or n_vocab_rows or (len(tokens) if isinstance(tokens, list) else 0)
    if isinstance(vocab, bool) or not isinstance(vocab, (int, np.integer)):
        raise CheckpointError(f"GGUF metadata {arch}.vocab_size = {vocab!r:.40} must be an integer.")
    return ModelArgs(
        name=name, arch="llama", dim=dim, n_layers=integer("block_count"), n_heads=n_heads,
        n_kv_heads=integer("attention.head_count_kv", n_heads), head_dim=head_dim,
        hidden_dim=integer("feed_forward_length"), vocab_size=int(vocab),
        norm_eps=number("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta=number("rope.freq_base", 10000.0), max_seq_len=integer("context_length", 2048),
        tie_embeddings=tied,
    )


def dequantize_tensor(tensor) -> np.ndarray:
    """float32 array of one `gguf.ReaderTensor`, in row-major (out, in) shape."""
    import gguf

    qtype = tensor.tensor_type
    if qtype.name not in SUPPORTED_TYPES:
        raise CheckpointError(
            f"Tensor {tensor.name} has GGUF type {qtype.name}, which this loader does not dequantize. "
            f"Supported: {', '.join(SUPPORTED_TYPES)}; re-quantize the model to one of them."
        )
    shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dims fastest-first
    try:
        if qtype.name == "F32":
            out = np.array(tensor.data, dtype=np.float32)  # a copy: the reader's memmap is read-only
        elif qtype.name in _FAST_TYPES:
            out = dequantize_blocks(np.asarray(tensor.data), qtype.name)
        else:
            out = gguf.quants.dequantize(tensor.data, qtype)
        return np.ascontiguousarray(out, dtype=np.float32).reshape(shape)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"Tensor {tensor.name} ({qtype.name}, shape {shape}) is unreadable: {exc}. "
                              "The GGUF file is corrupt or truncated.") from exc


#: Block types `dequantize_blocks` decodes; (bytes per block of 32, bytes before the codes).
_FAST_TYPES = {"Q4_0": (18, 2), "Q4_1": (20, 4), "Q8_0": (34, 2)}


def dequantize_blocks(raw: np.ndarray, qtype: str) -> np.ndarray:
    """float32 values of Q4_0, Q4_1 or Q8_0 blocks, equal bit for bit to
    ``gguf.quants.dequantize`` (the same FP32 operations in the same order: d * q, then + m
    for Q4_1), in a few whole-tensor passes instead of gguf's groups of 16 rows (2 s for
    SmolLM2's weights, 0.6 s here).  Checked against gguf and against independent block
    decoders in tests/test_model_gguf.py."""
    size, head = _FAST_TYPES[qtype]
    blocks = np.ascontiguousarray(raw).reshape(-1, size)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)          # (nb, 1)
    if qtype == "Q8_0":
        out = blocks[:, head:].view(np.int8).astype(np.float32)
        out *= d
        return out.reshape(-1)
    qs = blocks[:, head:]                                                   # (nb, 16)
    out = np.empty((blocks.shape[0], 32), np.float32)
    np.bitwise_and(qs, 15, out=out[:, :16], casting="unsafe")               # elements 0..15
    np.right_shift(qs, 4, out=out[:, 16:], casting="unsafe")                # elements 16..31
    if qtype == "Q4_0":
        out -= np.float32(8)                                                # exact: |q - 8| <= 8
        out *= d
    else:
        out *= d
        out += blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    return out.reshape(-1)


def load_gguf(path: str | Path) -> tuple[ModelArgs, dict[str, torch.Tensor], Tokenizer | None]:
    """Read a llama GGUF file.

    Returns
    -------
    args : ModelArgs
    weights : dict[str, torch.Tensor]
        float32, Hugging Face names, Q/K rows in rotate-half order; ``lm_head.weight`` is the
        embedding tensor itself when the file has no ``output.weight``.
    tokenizer : Tokenizer or None
        None (with a warning) when the file's tokenizer is not byte-level BPE.
    """
    args, tokenizer, read_weights = open_gguf_checkpoint(path)
    return args, read_weights(), tokenizer


def open_gguf_checkpoint(path: str | Path, use_index: bool = False):
    """(args, tokenizer, read_weights) of a llama GGUF file: the metadata, tensor table and
    tokenizer are read now (a tenth of a second for SmolLM2), the weights by `read_weights()`
    (dequantised, as `load_gguf` returns them).  With `use_index`, the metadata and tensor
    shapes come from the file index (`file_index`, stored there on first use) while the file
    is unchanged, and the file itself is opened by `read_weights()` only."""
    path = Path(path)
    seen = file_index.identity(path)
    stored = file_index.read(path).get("gguf") if use_index else None
    reader = None
    if isinstance(stored, dict):
        meta, shapes = stored["metadata"], stored["tensors"]
    else:
        reader = open_gguf(path)
        meta = metadata(reader)
        shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}
    embd = shapes.get("token_embd.weight")
    name = meta.get("general.name") or path.stem
    args = args_from_metadata(meta, str(name)[:200], int(embd[-1]) if embd is not None else None,
                              tied="output.weight" not in shapes)
    unexpected = sorted(n for n in shapes if hf_name(n) is None)
    if unexpected:
        raise CheckpointError(
            f"{path.name} has tensors a plain LLaMA does not ({', '.join(unexpected[:5])}"
            f"{', ...' if len(unexpected) > 5 else ''}); this variant is not supported."
        )
    tokenizer = checked_tokenizer(meta, path.name)
    if use_index and reader is not None:
        file_index.update(path, seen, gguf={"metadata": meta, "tensors": shapes})

    def read_weights() -> dict:
        import torch
        nonlocal reader
        if reader is None:
            if file_index.identity(path) != seen:
                raise CheckpointError(f"{path} changed on disk after it was opened; open it "
                                      "again")
            reader = open_gguf(path)
        weights: dict[str, torch.Tensor] = {}
        for tensor in reader.tensors:
            w = dequantize_tensor(tensor)
            for suffix, heads in (("attn_q.weight", args.n_heads), ("attn_k.weight", args.n_kv_heads)):
                if tensor.name.endswith(suffix):
                    if w.ndim != 2 or w.shape[0] != heads * args.head_dim:
                        raise CheckpointError(
                            f"Tensor {tensor.name} has shape {tuple(w.shape)}, but the metadata's "
                            f"{heads} heads of {args.head_dim} imply {heads * args.head_dim} rows: "
                            "the head counts in the metadata are inconsistent with the weights.")
                    w = unpermute_qk(w, heads)
            weights[hf_name(tensor.name)] = torch.from_numpy(w)
        if args.tie_embeddings and "model.embed_tokens.weight" in weights:
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
        return weights

    return args, tokenizer, read_weights


def checked_tokenizer(meta: dict[str, Any], where: str = "the GGUF file") -> Tokenizer | None:
    """`tokenizer_from_metadata`, with any failure on damaged tokenizer data a CheckpointError."""
    try:
        return tokenizer_from_metadata(meta)
    except CheckpointError:
        raise
    except Exception as exc:        # tokenizers and malformed lists raise many kinds
        raise CheckpointError(f"{where}: the tokenizer data (tokenizer.ggml.*) is corrupt "
                              f"({type(exc).__name__}: {str(exc)[:160]}); the file cannot be used. "
                              "Download or convert it again.") from None


# ---------------------------------------------------------------------------- tokenizer
def tokenizer_from_metadata(meta: dict[str, Any]) -> Tokenizer | None:
    """Rebuild the byte-level BPE tokenizer stored under ``tokenizer.ggml.*``."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
    from tokenizers import Tokenizer as Backend

    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if kind is None or not tokens:
        return None
    _check_tokenizer_metadata(meta)
    if kind != "gpt2":
        warnings.warn(f"GGUF tokenizer model {kind!r} is not byte-level BPE ('gpt2'); loading without a tokenizer.",
                      stacklevel=3)
        return None
    alphabet = frozenset(pre_tokenizers.ByteLevel.alphabet())
    byte_char = _bytes_to_unicode()
    # Tokens are stored in the byte-level alphabet, except some added tokens llama.cpp writes raw.
    spelled = [t if alphabet.issuperset(t) else "".join(byte_char[b] for b in t.encode("utf-8"))
               for t in tokens]
    vocab = {t: i for i, t in reversed(list(enumerate(spelled)))}  # first id wins on duplicates
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    backend = Backend(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    pre = meta.get("tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=bool(meta.get("tokenizer.ggml.add_space_prefix")),
                                          use_regex=pre not in _SPLITS)
    if pre in _DIGITS_THEN_GPT2:
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in _SPLITS:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"), byte_level])
    else:
        if pre not in _GPT2:
            warnings.warn(f"Unknown GGUF pre-tokenizer {pre!r}; using the GPT-2 split.", stacklevel=3)
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    types = list(meta.get("tokenizer.ggml.token_type") or [])
    # A control token is special; one not in the byte alphabet is a llama.cpp mislabel and is skipped.
    specials = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types)
                if ty == GGML_TOKEN_CONTROL and alphabet.issuperset(t)]
    user = [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types)
            if ty == GGML_TOKEN_USER_DEFINED]
    backend.add_special_tokens(specials)
    backend.add_tokens(user)
    bos = meta.get("tokenizer.ggml.bos_token_id")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    if meta.get("tokenizer.ggml.add_bos_token") and bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", pair=f"{tokens[bos]} $A $B", special_tokens=[(tokens[bos], int(bos))])
    return Tokenizer(backend, bos_id=None if bos is None else int(bos), eos_id=None if eos is None else int(eos),
                     chat_template=meta.get("tokenizer.chat_template"))


def _check_tokenizer_metadata(meta: dict[str, Any]) -> None:
    """Types and lengths of the ``tokenizer.ggml.*`` lists; CheckpointError on damaged data."""
    tokens = meta.get("tokenizer.ggml.tokens")
    types = meta.get("tokenizer.ggml.token_type")
    merges = meta.get("tokenizer.ggml.merges")
    problem = None

    def every(values, kind) -> bool:        # isinstance over the list, iterated in C
        return all(map(isinstance, values, repeat(kind)))
    if not isinstance(tokens, list) or not every(tokens, str):
        problem = "tokenizer.ggml.tokens is not a list of strings"
    elif types is not None and (not isinstance(types, list) or len(types) != len(tokens) or
                                not every(types, int)):
        problem = "tokenizer.ggml.token_type is not one integer per token"
    elif merges is not None and (not isinstance(merges, list) or not every(merges, str) or
                                 not all(map(str.__contains__, merges, repeat(" ")))):
        problem = "tokenizer.ggml.merges is not a list of 'left right' pairs"
    if problem:
        raise CheckpointError(f"The GGUF tokenizer data is corrupt: {problem}.")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))
