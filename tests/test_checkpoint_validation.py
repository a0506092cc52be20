"""Checkpoints are validated before anything large is allocated or built: config field types and
ranges, finite weights, GGUF head counts and tokenizer data, compressed-checkpoint metadata,
damaged xclbin files."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time

import numpy as np
import pytest
import torch

from flightllm_overlay.errors import BitstreamError, CheckpointError
from flightllm_overlay.model import load_checkpoint
from flightllm_overlay.model.args import ModelArgs


@pytest.fixture
def folder(tiny_folder, tmp_path):
    return shutil.copytree(tiny_folder, tmp_path / "hf")


def _edit(folder, config):
    (folder / "config.json").write_text(json.dumps(config))


def _config(folder):
    return json.loads((folder / "config.json").read_text())


# -- finding 5: NaN/inf weights and rope_theta 0 ------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(folder, bad):
    from safetensors.torch import load_file, save_file
    [path] = folder.glob("*.safetensors")
    weights = load_file(path)
    weights["model.layers.1.mlp.up_proj.weight"][3, 5] = bad
    save_file(weights, path)
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight .*NaN or infinite"):
        load_checkpoint(folder)


def test_non_finite_in_memory_weights_are_refused(tiny_ckpt):
    weights = dict(tiny_ckpt.weights)
    weights["model.norm.weight"] = weights["model.norm.weight"].clone()
    weights["model.norm.weight"][0] = float("nan")
    with pytest.raises(CheckpointError, match="model.norm.weight"):
        dataclasses.replace(tiny_ckpt, weights=weights).validate()


@pytest.mark.parametrize("theta", [0, -1.0, 1e300])
def test_rope_theta_zero_or_absurd_is_refused(folder, theta):
    _edit(folder, {**_config(folder), "rope_theta": theta})
    with pytest.raises(CheckpointError, match="rope_theta"):
        load_checkpoint(folder)


# -- finding 9: malformed config.json and GGUF metadata -----------------------------------------
@pytest.mark.parametrize("config", [[1, 2], "llama", 3, None])
def test_config_of_the_wrong_type(folder, config):
    _edit(folder, config)
    with pytest.raises(CheckpointError, match="object"):
        load_checkpoint(folder)


@pytest.mark.parametrize("field, value, match", [
    ("hidden_size", "96", "integer"), ("hidden_size", 96.5, "integer"),
    ("num_attention_heads", True, "integer"), ("vocab_size", None, "integer"),
    ("max_position_embeddings", 0, "max_seq_len"), ("max_position_embeddings", -16, "max_seq_len"),
    ("rms_norm_eps", "small", "finite"), ("rms_norm_eps", 0, "norm_eps"),
    ("tie_word_embeddings", "no", "true or false"), ("architectures", "Llama", "list"),
    ("rope_scaling", [1], "objects"), ("num_attention_heads", 0, "positive"),
    ("num_key_value_heads", 4, "multiple"),
])
def test_config_fields_of_the_wrong_type_or_range(folder, field, value, match):
    _edit(folder, {**_config(folder), field: value})
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(folder)


def test_huge_layer_count_is_refused_at_once(folder):
    """`num_hidden_layers` of 1e8 used to run for minutes building tensor names."""
    _edit(folder, {**_config(folder), "num_hidden_layers": 10**8})
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="n_layers"):
        load_checkpoint(folder)
    assert time.perf_counter() - t0 < 5


def test_more_layers_than_the_weights_hold_is_found_before_names(tiny_ckpt):
    args = tiny_ckpt.args.replace(n_layers=1000)
    with pytest.raises(CheckpointError, match="config gives 1000 layers but the weights.* hold 3"):
        from flightllm_overlay.model.checkpoint import check_weights
        check_weights(args, tiny_ckpt.weights)


@pytest.fixture(scope="module")
def gguf_meta(tiny_ckpt, tmp_path_factory):
    from flightllm_overlay.model.gguf_loader import metadata, open_gguf
    from flightllm_overlay.model.gguf_writer import write_gguf
    path = write_gguf(tiny_ckpt, tmp_path_factory.mktemp("g") / "t.gguf")
    return metadata(open_gguf(path))


@pytest.mark.parametrize("key, value, match", [
    ("llama.attention.head_count", 0, "positive"),          # was ZeroDivisionError
    ("llama.attention.head_count", "6", "integer"),
    ("llama.embedding_length", -96, "positive"),
    ("llama.attention.head_count_kv", 4, "multiple"),      # inconsistent head counts
    ("llama.block_count", 10**8, "n_layers"),
    ("llama.rope.freq_base", float("nan"), "finite"),
    ("llama.context_length", 0, "max_seq_len"),
])
def test_gguf_metadata_errors(gguf_meta, key, value, match):
    from flightllm_overlay.model.gguf_loader import args_from_metadata
    with pytest.raises(CheckpointError, match=match):
        args_from_metadata({**gguf_meta, key: value}, "t", 300, tied=False)


@pytest.mark.parametrize("key, value", [
    ("tokenizer.ggml.tokens", [1, 2, 3]), ("tokenizer.ggml.merges", ["a"]),
    ("tokenizer.ggml.bos_token_id", 10**6), ("tokenizer.ggml.token_type", "x"),
    ("tokenizer.chat_template", 7), ("tokenizer.ggml.eos_token_id", -1),
])
def test_corrupt_gguf_tokenizer_data_is_a_checkpoint_error(gguf_meta, key, value):
    from flightllm_overlay.model.gguf_loader import checked_tokenizer
    meta = {**gguf_meta, key: value}
    if key == "tokenizer.ggml.bos_token_id":
        meta["tokenizer.ggml.add_bos_token"] = True
    with pytest.raises(CheckpointError, match="tokenizer|token id|chat template"):
        checked_tokenizer(meta)


def test_inconsistent_head_count_in_a_gguf_file(tiny_ckpt, tmp_path, monkeypatch):
    """A head count the Q/K weights do not have: a CheckpointError, not a reshape error."""
    import gguf

    from flightllm_overlay.model.gguf_writer import write_gguf
    path = write_gguf(tiny_ckpt, tmp_path / "t.gguf")
    real = gguf.GGUFWriter.add_key_value

    def lie(self, key, val, vtype, sub_type=None):
        val = {"llama.attention.head_count": 4, "llama.attention.head_count_kv": 1,
               "llama.rope.dimension_count": 24}.get(key, val)
        return real(self, key, val, vtype, sub_type)
    monkeypatch.setattr(gguf.GGUFWriter, "add_key_value", lie)
    path = write_gguf(tiny_ckpt, tmp_path / "lie.gguf")
    with pytest.raises(CheckpointError, match="head"):
        load_checkpoint(path)


# -- finding 10: compressed checkpoints with a valid digest but inconsistent metadata -----------
@pytest.fixture(scope="module")
def compressed_parts(tiny_ckpt):
    from flightllm_overlay.compress import CompressionConfig, compress
    cm = compress(tiny_ckpt, None, CompressionConfig.w8a8().but(calib_tokens=32), progress=False)
    tensors, header = cm.tensors()
    return json.loads(json.dumps(header)), tensors


@pytest.mark.parametrize("edit", [
    lambda h, t: h["args"].update(n_layers=5),           # was IndexError
    lambda h, t: h["args"].update(colour=1),             # was TypeError
    lambda h, t: t.pop("embed"),                         # was KeyError
    lambda h, t: t.update(norm=np.zeros(7, np.float32)),
    lambda h, t: t.update(embed=np.full(t["embed"].shape, np.nan, np.float16)),
    lambda h, t: h["linears"]["layers.0.wq"].update(rows=64),
    lambda h, t: h["linears"]["layers.0.wq"].update(bits=5),
    lambda h, t: h["linears"].pop("layers.2.w_down"),
    lambda h, t: h.update(config={"nope": 1}),
    lambda h, t: h.update(args=[1]),
    lambda h, t: t.update(extra=np.zeros(3, np.float32)),
])
def test_inconsistent_compressed_metadata(tmp_path, compressed_parts, edit):
    from safetensors.numpy import save_file

    from flightllm_overlay.compress import CompressedModel
    from flightllm_overlay.compress.compressed import FORMAT, VERSION, _digest
    header, tensors = json.loads(json.dumps(compressed_parts[0])), dict(compressed_parts[1])
    edit(header, tensors)
    text = json.dumps(header, sort_keys=True)
    path = tmp_path / "c.fllmc"
    save_file(tensors, str(path), metadata={"format": FORMAT, "version": str(VERSION),
                                            "header": text, "sha256": _digest(text, tensors)})
    with pytest.raises(CheckpointError, match="inconsistent"):
        CompressedModel.load(path)


# -- finding 11: damaged xclbin files -----------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "section", "xml", "vlnv", "length", "reg-size",
                                    "cu-name"])
def test_damaged_xclbin_is_a_bitstream_error(tmp_path, damage):
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.sim.device import SimulatedU280
    from flightllm_overlay.sim.xclbin import build_xclbin
    from pynq._3rdparty import xclbin as X
    raw = bytearray(build_xclbin())
    xml_at = raw.find(b"<?xml")
    length_at = X.axlf.m_header.offset + X.axlf_header.m_length.offset
    section_at = X.axlf.m_sections.offset + X.axlf_section_header.m_sectionOffset.offset
    if damage == "truncate":
        raw = raw[:len(raw) * 2 // 3]
    elif damage == "section":
        raw[section_at:section_at + 8] = b"\xff" * 8      # the first section's offset
    elif damage == "xml":
        raw[xml_at + 40:xml_at + 48] = b"<<<<<<<<"
    elif damage == "vlnv":
        at = raw.find(b"flightllm:hls:scheduler")
        raw[at:at + 9] = b"fliehtllm"
    elif damage == "length":
        raw[length_at:length_at + 8] = (7).to_bytes(8, "little")
    elif damage == "reg-size":          # `len` 48 bits wide: the driver would write 32 of them
        at = raw.find(b'name="len"')
        at = raw.find(b'size="0x4"', at)
        raw[at:at + 10] = b'size="0x6"'
    else:                               # a compute unit of our kind the design does not have
        at = raw.find(b'instance name="memctrl_0"')
        raw[at + 16:at + 17] = b"J"
    path = tmp_path / "bad.xclbin"
    path.write_bytes(bytes(raw))
    dev = SimulatedU280()
    with pytest.raises(BitstreamError):
        FlightLLMOverlay(str(path), device=dev)
    assert FlightLLMOverlay(device=dev).scheduler is not None       # the good one still loads


def test_model_args_reject_wrong_types():
    with pytest.raises(CheckpointError, match="integer"):
        ModelArgs(dim=96.0, n_layers=1, n_heads=2, hidden_dim=8, vocab_size=10)
    with pytest.raises(CheckpointError, match="true or false"):
        ModelArgs(dim=96, n_layers=1, n_heads=2, hidden_dim=8, vocab_size=10, tie_embeddings=1)
    assert torch.isfinite(torch.tensor(ModelArgs(dim=96, n_layers=1, n_heads=2, hidden_dim=8,
                                                 vocab_size=10).rope_theta))


@pytest.mark.parametrize("name, content", [
    ("tokenizer_config.json", [1]), ("tokenizer_config.json", {"bos_token": 5}),
    ("tokenizer_config.json", {"chat_template": 3}),
    ("generation_config.json", {"eos_token_id": 5.0}),
    ("generation_config.json", {"eos_token_id": [10**9]}),
    ("tokenizer.json", {"model": "nonsense"}),
])
def test_damaged_tokenizer_files(folder, name, content):
    (folder / name).write_text(json.dumps(content))
    with pytest.raises(CheckpointError):
        load_checkpoint(folder)


def test_compression_settings_with_infinity(tmp_path, compressed_parts):
    """Found by benchmarks/fuzz.py: an infinite group size raised OverflowError."""
    from flightllm_overlay.compress import CompressedModel
    header, tensors = json.loads(json.dumps(compressed_parts[0])), dict(compressed_parts[1])
    header["config"]["group_choices"] = [float("inf")]
    with pytest.raises(CheckpointError, match="compression settings"):
        CompressedModel._from(header, tensors, "c.fllmc")
