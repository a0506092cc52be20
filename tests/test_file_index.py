"""The checkpoint file index (model/file_index.py): a warm open equals a fresh one, and an entry is never used once the file has changed."""
from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest

from flightllm_overlay.compiler.cache import checkpoint_digest
from flightllm_overlay.errors import CheckpointError
from flightllm_overlay.model import file_index, gguf_loader, load_checkpoint
from flightllm_overlay.model.checkpoint import default_model_path
from flightllm_overlay.model.gguf_writer import write_gguf
from flightllm_overlay.model.testing import make_tiny_llama

TEXTS = ["Hello, world!", "In 2024: 8 GB, 225 MHz", "héllo 日本 🤖 naïve café", "  x\n\n\t y",
         "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>a<|im_end|>",
         "def f(x):\n    return x ** 2  # 12345678901234567890", "ÀÉÎõü ßøå 𝔘𝔫𝔦", ""]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("FLIGHTLLM_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    ckpt = load_checkpoint(make_tiny_llama(folder / "tinyindexmodel", seed=3, hidden_dim=128))
    return write_gguf(ckpt, folder / "tiny.gguf", "Q8_0")


def test_an_entry_is_parsed_once_per_process(cache, tiny_gguf, monkeypatch):
    load_checkpoint(tiny_gguf, lazy=True)
    file_index._READ.clear()
    loads = []
    real = file_index.json.load
    monkeypatch.setattr(file_index.json, "load", lambda f: loads.append(1) or real(f))
    load_checkpoint(tiny_gguf, lazy=True)
    checkpoint_digest(str(tiny_gguf))
    assert len(loads) == 1


def _no_reader(monkeypatch):
    def refuse(path):
        raise AssertionError(f"the file {path} was opened, not its index entry")
    monkeypatch.setattr(gguf_loader, "open_gguf", refuse)


def test_the_default_model_from_the_index_equals_a_fresh_open(cache, monkeypatch):
    path = default_model_path()
    fresh = load_checkpoint(path)                         # not lazy: no index involved
    assert not (cache / "checkpoints").exists()
    first = load_checkpoint(path, lazy=True)              # reads the file, writes the entry
    assert len(list((cache / "checkpoints").glob("*.json"))) == 1
    with monkeypatch.context() as m:
        _no_reader(m)
        warm = load_checkpoint(path, lazy=True)
    for ck in (first, warm):
        assert ck.args == fresh.args
        tok = ck.tokenizer
        assert tok.fingerprint == fresh.tokenizer.fingerprint
        assert (tok.bos_id, tok.eos_id, tok.stop_ids, tok.chat_template) == \
            (fresh.tokenizer.bos_id, fresh.tokenizer.eos_id, fresh.tokenizer.stop_ids,
             fresh.tokenizer.chat_template)
        for text in TEXTS:
            assert tok.encode(text) == fresh.tokenizer.encode(text), text
            assert tok.encode_prompt(text) == fresh.tokenizer.encode_prompt(text), text
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
        assert tok.apply_chat_template(msgs) == fresh.tokenizer.apply_chat_template(msgs)
        ids = list(range(0, 49152, 97)) + [0, 1, 2]
        assert tok.decode(ids) == fresh.tokenizer.decode(ids)


def test_the_stored_metadata_keeps_values_and_types(cache, tiny_gguf):
    from flightllm_overlay.model.gguf_loader import metadata, open_gguf
    load_checkpoint(tiny_gguf, lazy=True)
    stored = file_index.read(tiny_gguf)["gguf"]
    reader = open_gguf(tiny_gguf)
    want = metadata(reader)
    assert stored["metadata"] == want
    assert all(type(stored["metadata"][k]) is type(want[k]) for k in want)
    assert stored["tensors"] == {t.name: [int(d) for d in t.shape] for t in reader.tensors}


def test_weights_read_after_a_warm_open_are_the_files(cache, tiny_gguf, monkeypatch):
    fresh = load_checkpoint(tiny_gguf)
    load_checkpoint(tiny_gguf, lazy=True)
    warm = load_checkpoint(tiny_gguf, lazy=True)
    assert set(warm.weights) == set(fresh.weights)
    for k, w in fresh.weights.items():
        assert np.array_equal(warm.weights[k].numpy(), w.numpy()), k


def _rewrite_same_size(path, old: bytes, new: bytes, keep_mtime: bool):
    """Replace `old` by `new` (same length) inside the file, in place; optionally put the
    modification time back as it was."""
    st = os.stat(path)
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_a_changed_file_is_read_again(cache, tiny_gguf, tmp_path, keep_mtime):
    """An edit of the same size, even with the modification time put back, changes the file's
    identity (its change time): the entry is not used, and is rewritten for the new file."""
    path = tmp_path / "copy.gguf"
    shutil.copyfile(tiny_gguf, path)
    before = load_checkpoint(path, lazy=True)
    digest = checkpoint_digest(str(path))
    old_name = before.args.name.encode()
    _rewrite_same_size(path, old_name, b"Z" * len(old_name), keep_mtime)
    after = load_checkpoint(path, lazy=True)
    assert after.args.name == "Z" * len(old_name) != before.args.name
    assert file_index.read(path)["gguf"]["metadata"]["general.name"] == after.args.name
    changed = checkpoint_digest(str(path))
    assert changed != digest
    h = hashlib.sha256()
    h.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    assert changed == h.hexdigest()


def test_a_file_changed_after_a_warm_open_refuses_its_weights(cache, tiny_gguf, tmp_path):
    path = tmp_path / "copy.gguf"
    shutil.copyfile(tiny_gguf, path)
    load_checkpoint(path, lazy=True)
    warm = load_checkpoint(path, lazy=True)
    os.utime(path, ns=(1, 2))
    with pytest.raises(CheckpointError, match="changed on disk"):
        warm.weights  # noqa: B018


def test_an_entry_of_another_version_or_a_broken_one_is_ignored(cache, tiny_gguf):
    load_checkpoint(tiny_gguf, lazy=True)
    entry = file_index.entry_path(tiny_gguf)
    text = entry.read_text()
    entry.write_text(text.replace('"format": 1', '"format": 0'))
    file_index._READ.clear()                  # as another process finds it
    assert file_index.read(tiny_gguf) == {}
    entry.write_text(text[:100])
    assert file_index.read(tiny_gguf) == {}
    assert load_checkpoint(tiny_gguf, lazy=True).args.dim > 0       # and rewritten
    assert file_index.read(tiny_gguf)["format"] == file_index.FORMAT


def test_an_unwritable_cache_only_costs_time(tmp_path, monkeypatch, tiny_gguf):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FLIGHTLLM_CACHE", str(blocker))
    assert load_checkpoint(tiny_gguf, lazy=True).args.dim > 0
    assert checkpoint_digest(str(tiny_gguf)) == checkpoint_digest(str(tiny_gguf))
