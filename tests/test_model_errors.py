"""load_checkpoint on bad inputs: each failure is a CheckpointError that names the problem and the fix."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from flightllm_overlay.errors import CheckpointError, FlightLLMError
from flightllm_overlay.model import load_checkpoint
from flightllm_overlay.model.gguf_writer import write_gguf
from flightllm_overlay.model.testing import make_tiny_llama

import gguf


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A good tiny folder and a good GGUF of it, copied by each test before breaking it."""
    root = tmp_path_factory.mktemp("good")
    folder = make_tiny_llama(root / "hf", n_layers=2, hidden_dim=128)
    write_gguf(load_checkpoint(folder), root / "tiny.gguf", "Q8_0")
    return folder, root / "tiny.gguf"


@pytest.fixture
def folder(source, tmp_path):
    return shutil.copytree(source[0], tmp_path / "hf")


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_is_a_flightllm_error():
    assert issubclass(CheckpointError, FlightLLMError)


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="No such file or folder.*smollm2-135m-instruct"):
        load_checkpoint(tmp_path / "nope")


def test_folder_without_config(source, tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)
    shutil.copy(source[1], tmp_path / "x.gguf")
    with pytest.raises(CheckpointError, match="pass that file instead"):
        load_checkpoint(tmp_path)


def test_unparsable_config(folder):
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="Cannot parse.*config.json"):
        load_checkpoint(folder)


def test_folder_without_safetensors(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors"):
        load_checkpoint(folder)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors(folder, damage):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(b"\x13\x37" * 40 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file.*corrupt or truncated"):
        load_checkpoint(folder)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "header"])
def test_corrupt_gguf(source, tmp_path, damage):
    data = source[1].read_bytes()
    bad = {"garbage": b"NOPE" + data[4:], "truncated": data[: len(data) * 2 // 3], "header": data[:100]}[damage]
    (tmp_path / "bad.gguf").write_bytes(bad)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "bad.gguf")


def test_corrupt_tokenizer(folder):
    (folder / "tokenizer.json").write_text('{"model": ')
    with pytest.raises(CheckpointError, match="tokenizer.json.*Replace it"):
        load_checkpoint(folder)


def test_missing_tensor(folder):
    weights = load_file(folder / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing.*model.layers.1.mlp.up_proj.weight"):
        load_checkpoint(folder)


def test_shape_mismatch(folder):
    _edit_config(folder, intermediate_size=96)
    with pytest.raises(CheckpointError, match=r"shape \(128, 96\).*implies \(96, 96\)"):
        load_checkpoint(folder)


def test_unexpected_tensor(folder):
    _edit_config(folder, num_hidden_layers=1)
    with pytest.raises(CheckpointError, match="Unexpected tensor.*model.layers.1"):
        load_checkpoint(folder)


def test_sharded_folder_loads_and_missing_shard_fails(folder, source):
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: weights[k] for k in keys}, folder / shard)
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    ckpt = load_checkpoint(folder)
    good = load_checkpoint(source[0])
    assert all(torch.equal(ckpt.weights[k], good.weights[k]) for k in good.weights)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing.*model-00002-of-00002.*Download"):
        load_checkpoint(folder)


@pytest.mark.parametrize("config", [
    {"architectures": ["MistralForCausalLM"], "model_type": "mistral"},
    {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"},
])
def test_unsupported_hf_architecture(folder, config):
    _edit_config(folder, **config)
    with pytest.raises(CheckpointError, match="Unsupported architecture.*supported: LlamaForCausalLM"):
        load_checkpoint(folder)


def _minimal_gguf(path, arch="llama", qtype=None):
    """A GGUF with llama-style keys and a token embedding of type ``qtype`` (raw zero bytes)."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in [("context_length", 64), ("embedding_length", 32), ("block_count", 1),
                       ("feed_forward_length", 64), ("attention.head_count", 2)]:
        writer.add_uint32(f"{arch}.{key}", value)
    if qtype is None:
        writer.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    else:
        n_el, size = gguf.GGML_QUANT_SIZES[qtype]
        writer.add_tensor("token_embd.weight", np.zeros((8, 32 // n_el * size), np.uint8), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_unsupported_gguf_architecture(tmp_path):
    with pytest.raises(CheckpointError, match="architecture 'qwen2' is not supported; supported: llama"):
        load_checkpoint(_minimal_gguf(tmp_path / "q.gguf", arch="qwen2"))


def test_unsupported_gguf_tensor_type(tmp_path):
    path = _minimal_gguf(tmp_path / "iq.gguf", qtype=gguf.GGMLQuantizationType.IQ4_NL)
    with pytest.raises(CheckpointError, match="token_embd.weight has GGUF type IQ4_NL.*Supported: F32, F16"):
        load_checkpoint(path)


def test_incomplete_gguf(tmp_path):
    with pytest.raises(CheckpointError, match="missing.*model.layers.0"):
        load_checkpoint(_minimal_gguf(tmp_path / "small.gguf"))


def test_not_a_model_file(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match="neither a folder nor a .gguf"):
        load_checkpoint(tmp_path / "weights.bin")
