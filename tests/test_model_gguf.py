"""GGUF loading: dequantizers checked against independent decoders, and write -> load round trips of a tiny model."""
import numpy as np
import pytest
import torch

from flightllm_overlay.model import Transformer, load_checkpoint
from flightllm_overlay.model.gguf_loader import SUPPORTED_TYPES, permute_qk, unpermute_qk
from flightllm_overlay.model.gguf_writer import WRITABLE_TYPES, write_gguf
from flightllm_overlay.model.testing import make_tiny_llama

import gguf
Q = gguf.GGMLQuantizationType


# ---------------------------------------------------------------------------- independent block decoders
def _nibbles(qs):  # (nb, 16) uint8 -> (nb, 32): low nibbles are elements 0..15, high ones 16..31
    return np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.float32)


def _fifth_bit(qh):  # (nb, 4) uint8 -> (nb, 32) bit j of the little-endian uint32
    bits = qh.copy().view("<u4")[:, 0]
    return ((bits[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.float32)


def _f16(blocks, at):
    return blocks[:, at:at + 2].copy().view(np.float16).astype(np.float32)  # (nb, 1)


def reference_dequant(raw: np.ndarray, qtype) -> np.ndarray:
    """ggml's block formats written out from ggml-common.h, for the 32-element types."""
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    b = raw.reshape(-1, size)
    if qtype == Q.Q8_0:
        return _f16(b, 0) * b[:, 2:].view(np.int8)
    if qtype == Q.Q4_0:
        return _f16(b, 0) * (_nibbles(b[:, 2:]) - 8)
    if qtype == Q.Q4_1:
        return _f16(b, 0) * _nibbles(b[:, 4:]) + _f16(b, 2)
    if qtype == Q.Q5_0:
        return _f16(b, 0) * (_nibbles(b[:, 6:]) + 16 * _fifth_bit(b[:, 2:6]) - 16)
    if qtype == Q.Q5_1:
        return _f16(b, 0) * (_nibbles(b[:, 8:]) + 16 * _fifth_bit(b[:, 4:8])) + _f16(b, 2)
    raise AssertionError(qtype)


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_gguf_dequantize_matches_block_format(name):
    qtype = Q[name]
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    raw = gguf.quants.quantize(x, qtype)
    ours = gguf.quants.dequantize(raw, qtype).reshape(-1)
    assert np.array_equal(ours, reference_dequant(raw, qtype).reshape(-1))
    assert np.abs(ours - x.reshape(-1)).max() < 0.5  # and it is a quantization of x


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1"])
def test_fast_block_decoder_equals_gguf_bit_for_bit(name):
    """gguf_loader.dequantize_blocks (whole-tensor passes) against gguf's decoder and the
    independent one above, on random bytes (any scale, NaN and infinity included) and on
    quantised data."""
    from flightllm_overlay.model.gguf_loader import dequantize_blocks
    qtype, rng = Q[name], np.random.default_rng(7)
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    raw = rng.integers(0, 256, (64, 4 * size), dtype=np.uint8)
    quantised = gguf.quants.quantize(rng.standard_normal((8, 128)).astype(np.float32), qtype)
    for data in (raw, quantised):
        with np.errstate(all="ignore"):
            ours = dequantize_blocks(data, name)
            theirs = gguf.quants.dequantize(data, qtype).reshape(-1)
            independent = reference_dequant(data, qtype).reshape(-1)
        assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))
        assert np.array_equal(ours, independent, equal_nan=True)


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_gguf_dequantize_matches_transformers(name):
    """K-quants have no quantizer in gguf-py: decode random blocks with both libraries instead."""
    import transformers.integrations.gguf.dequant as dq
    qtype = Q[name]
    n_el, size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (16, size), dtype=np.uint8)
    halves = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2],
              "Q5_K": [0, 2], "Q6_K": [208]}[name]
    for at in halves:  # finite, moderate fp16 scales
        raw[:, at:at + 2] = rng.uniform(-0.1, 0.1, (16, 1)).astype(np.float16).view(np.uint8)
    ours = gguf.quants.dequantize(raw, qtype).reshape(-1)
    ref = dq.dequantize(torch.from_numpy(raw.reshape(-1)), int(qtype)).numpy()
    assert ours.shape == (16 * n_el,) and np.isfinite(ours).all()
    assert np.allclose(ours, ref, rtol=1e-6, atol=1e-7)


def test_qk_permutation_is_inverted():
    w = np.arange(6 * 16 * 3).reshape(96, 3)
    assert np.array_equal(unpermute_qk(permute_qk(w, 6), 6), w)
    assert not np.array_equal(permute_qk(w, 6), w)
    # llama.cpp pairs rows (0, 8) of a 16-row head as rows (0, 1)
    assert np.array_equal(permute_qk(w, 6)[1], w[8])


def _step(w: np.ndarray, qtype: str) -> np.ndarray:
    """Largest error each element of ``w`` (rows, cols) may get from ``qtype`` (half a step, 32-blocks)."""
    if qtype in ("F32", "F16", "BF16"):
        return np.abs(w) * {"F32": 0, "F16": 2.0 ** -11, "BF16": 2.0 ** -8}[qtype]
    blocks = w.reshape(w.shape[0], -1, 32)
    amax, lo, hi = np.abs(blocks).max(-1), blocks.min(-1), blocks.max(-1)
    step = {"Q8_0": amax / 127, "Q4_0": 2 * amax / 8, "Q5_0": 2 * amax / 16,  # _0: clipping costs one step
            "Q4_1": (hi - lo) / 15, "Q5_1": (hi - lo) / 31}[qtype]
    slack = 1e-3 * amax  # fp16 rounding of the block's scale and minimum
    return np.repeat(step / 2 + slack, 32, axis=-1).reshape(w.shape)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = make_tiny_llama(tmp_path_factory.mktemp("tiny"), seed=5, hidden_dim=192, tie_embeddings=True)
    return load_checkpoint(folder)


@pytest.mark.parametrize("qtype", WRITABLE_TYPES)
def test_gguf_round_trip(tiny, qtype, tmp_path):
    path = write_gguf(tiny, tmp_path / f"tiny-{qtype}.gguf", qtype)
    back = load_checkpoint(path)
    assert back.args.replace(name="", norm_eps=1e-5) == tiny.args.replace(name="", norm_eps=1e-5)
    assert back.args.norm_eps == pytest.approx(tiny.args.norm_eps)
    assert set(back.weights) == set(tiny.weights)
    assert back.weights["lm_head.weight"] is back.weights["model.embed_tokens.weight"]
    for name, w in tiny.weights.items():
        got, src = back.weights[name].numpy(), w.numpy()
        assert got.dtype == np.float32 and got.shape == src.shape
        if src.ndim == 1:
            assert np.array_equal(got, src), name  # norms stay F32
        else:
            bound = _step(src, qtype) * 1.01 + 1e-7
            assert (np.abs(got - src) <= bound).all(), name
    # Q/K rows came back in HF order: the model equals the source with each weight quantized in place
    fake = {k: w if w.ndim == 1 else torch.from_numpy(_fake_quant(w.numpy(), qtype)) for k, w in tiny.weights.items()}
    fake["lm_head.weight"] = fake["model.embed_tokens.weight"]
    ids = tiny.tokenizer.encode("The capital of France is")
    ref = Transformer(tiny.args, fake).forward(ids, 0)
    assert (Transformer.from_checkpoint(back).forward(ids, 0) - ref).abs().max().item() < 1e-4


def _fake_quant(w: np.ndarray, qtype: str) -> np.ndarray:
    if qtype == "F32":
        return w
    raw = gguf.quants.quantize(w, Q[qtype])
    return gguf.quants.dequantize(raw, Q[qtype]).astype(np.float32).reshape(w.shape)


def test_gguf_tokenizer_round_trip(tiny, tmp_path):
    back = load_checkpoint(write_gguf(tiny, tmp_path / "t.gguf", "F16")).tokenizer
    texts = ["Hello, world!", "In 2024: 8 GB, 225 MHz", "héllo 日本 🤖", "<|im_start|>user\nhi<|im_end|>\n", "  x\n\n"]
    for text in texts:
        assert back.encode(text) == tiny.tokenizer.encode(text)
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    assert back.apply_chat_template(msgs) == tiny.tokenizer.apply_chat_template(msgs)
    assert (back.bos_id, back.eos_id, back.stop_ids) == (1, 2, {0, 2})


def test_untied_gguf_keeps_its_lm_head(tmp_path):
    ckpt = load_checkpoint(make_tiny_llama(tmp_path / "m", n_layers=1, hidden_dim=128))
    back = load_checkpoint(write_gguf(ckpt, tmp_path / "m.gguf", "Q8_0", embed_qtype="F32"))
    assert not back.args.tie_embeddings
    assert torch.equal(back.weights["model.embed_tokens.weight"], ckpt.weights["model.embed_tokens.weight"])
    assert not torch.equal(back.weights["lm_head.weight"], back.weights["model.embed_tokens.weight"])


def test_supported_types_cover_the_writable_ones():
    assert set(WRITABLE_TYPES) <= set(SUPPORTED_TYPES)


def test_bulk_metadata_equals_ggufs_own_reader(tiny, tmp_path):
    """The key/value section read in bulk (gguf_loader._BulkArrays) gives the values, types and
    tensors of gguf's own reader: on a tiny file and on the default model (49k-token vocabulary,
    merges, token types), including arrays of every kind the writer emits."""
    from flightllm_overlay.model.checkpoint import default_model_path
    from flightllm_overlay.model.gguf_loader import metadata, open_gguf
    path = write_gguf(tiny, tmp_path / "t.gguf", "Q8_0")
    w = gguf.GGUFWriter(str(tmp_path / "arrays.gguf"), "llama")
    w.add_array("test.ints", [1, -2, 3])
    w.add_array("test.floats", [0.5, 1.25])
    w.add_array("test.bools", [True, False])
    w.add_array("test.empty", [])
    w.add_array("test.strings", ["a", "", "日本 🤖"])
    w.add_string("test.text", "x y")
    w.add_uint32("test.u32", 7)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for p in (path, tmp_path / "arrays.gguf", default_model_path()):
        ours = open_gguf(p)
        assert type(ours).__name__ == "BulkGGUFReader"
        theirs = gguf.GGUFReader(str(p))
        want = {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
        got = metadata(ours)
        assert got == want and all(type(got[k]) is type(want[k]) for k in want), p
        for k in want:
            if isinstance(want[k], list):
                assert [type(v) for v in got[k]] == [type(v) for v in want[k]], (p, k)
        assert [(t.name, t.data_offset, t.n_bytes, t.tensor_type) for t in ours.tensors] == \
            [(t.name, t.data_offset, t.n_bytes, t.tensor_type) for t in theirs.tensors]
        assert ours.data_offset == theirs.data_offset
    # the default model's tokenizer, from either reader: the same vocabulary, rules and ids
    from flightllm_overlay.model.gguf_loader import tokenizer_from_metadata
    a, b = tokenizer_from_metadata(got), tokenizer_from_metadata(want)
    assert a.fingerprint == b.fingerprint
    for text in ["What is the capital of France?", "héllo 日本 🤖  x\n\n", "<|im_start|>user\nhi",
                 "def f(x):\n    return x ** 2  # 1234567"]:
        assert a.encode(text) == b.encode(text) and a.decode(a.encode(text)) == text


@pytest.mark.parametrize("meta, problem", [
    ({"tokenizer.ggml.tokens": ["a", 1]}, "not a list of strings"),
    ({"tokenizer.ggml.tokens": "ab"}, "not a list of strings"),
    ({"tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.token_type": [1]}, "one integer per token"),
    ({"tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.token_type": ["1"]}, "one integer per token"),
    ({"tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": ["ab"]}, "'left right' pairs"),
    ({"tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": [3]}, "'left right' pairs"),
    ({"tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.token_type": [1],
      "tokenizer.ggml.merges": ["a b"]}, None),
])
def test_damaged_tokenizer_lists_are_refused(meta, problem):
    from flightllm_overlay.errors import CheckpointError
    from flightllm_overlay.model.gguf_loader import _check_tokenizer_metadata
    if problem is None:
        _check_tokenizer_metadata(meta)
        return
    with pytest.raises(CheckpointError, match=problem):
        _check_tokenizer_metadata(meta)
