"""The Python API uses the program cache: `Generator.load` and `compile_model(cache=...)` share the CLI's entry."""
from __future__ import annotations

from flightllm_overlay.compiler import compile_model
from flightllm_overlay.compiler.cache import ProgramCache
from flightllm_overlay.runtime import Generator


def test_generator_load_compiles_once_then_reads_the_cache(tiny_folder, sim_overlay, tmp_path):
    cache = ProgramCache(tmp_path / "cache")
    first = Generator.load(tiny_folder, overlay=sim_overlay, ctx=64, cache=cache)
    text = first.generate_text([5, 6, 7], max_new_tokens=20, chat=False)
    assert (cache.misses, cache.hits) == (1, 0)
    assert first.stats.bucket_compiles and len(list(cache.root.glob("*.fllm"))) == 1
    second = Generator.load(tiny_folder, overlay=sim_overlay, ctx=64, cache=cache)
    assert (cache.misses, cache.hits) == (1, 1)
    assert second.session.program.steps.keys() == first.session.program.steps.keys()
    assert second.generate_text([5, 6, 7], max_new_tokens=20, chat=False) == text
    assert second.stats.bucket_compiles == 0            # the buckets were stored back


def test_compile_model_with_cache_uses_the_entry_of_get_or_compile(tiny_ckpt, tmp_path):
    cache = ProgramCache(tmp_path / "cache")
    a = compile_model(tiny_ckpt, ctx=64, cache=cache)
    b = cache.get_or_compile(tiny_ckpt, ctx=64)
    assert (cache.misses, cache.hits) == (1, 1)
    assert a.meta["cache_key"] == b.meta["cache_key"]
    compile_model(tiny_ckpt, ctx=64, fused=False, cache=cache)       # another option: another key
    assert cache.misses == 2 and len(list(cache.root.glob("*.fllm"))) == 2


def _refuse(*_a, **_k):
    raise AssertionError("a cache hit read the weights")


def test_a_cache_hit_reads_no_weights(tiny_folder, sim_overlay, tmp_path, monkeypatch):
    """Generator.load and `flightllm generate` open the checkpoint lazily: on a hit neither the
    safetensors nor a GGUF's tensors are read (or dequantised); on a miss they are, once."""
    import flightllm_overlay.model.checkpoint as checkpoint
    import flightllm_overlay.model.gguf_loader as gguf_loader
    from flightllm_overlay.cli import main
    from flightllm_overlay.model import load_checkpoint
    from flightllm_overlay.model.gguf_writer import write_gguf
    cache = ProgramCache(tmp_path / "cache")
    text = Generator.load(tiny_folder, overlay=sim_overlay, ctx=64, cache=cache) \
        .generate_text([5, 6, 7], max_new_tokens=4, chat=False)
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "_read_safetensors", _refuse)
        again = Generator.load(tiny_folder, overlay=sim_overlay, ctx=64, cache=cache)
        assert again.generate_text([5, 6, 7], max_new_tokens=4, chat=False) == text
    assert cache.hits == 1
    lazy = load_checkpoint(tiny_folder, lazy=True)
    assert not lazy.weights_loaded and lazy.weights.keys() == load_checkpoint(tiny_folder).weights.keys()

    gguf = write_gguf(load_checkpoint(tiny_folder), tmp_path / "tiny.gguf", "Q8_0")
    monkeypatch.setenv("FLIGHTLLM_CACHE", str(tmp_path / "cli-cache"))
    args = ["generate", "hello", "--model", str(gguf), "--ctx", "64", "--max-new-tokens", "3",
            "--no-chat"]
    calls = []
    real = gguf_loader.dequantize_tensor
    monkeypatch.setattr(gguf_loader, "dequantize_tensor", lambda t: calls.append(1) or real(t))
    assert main(args) == 0 and calls                    # a miss: compiled from the weights
    monkeypatch.setattr(gguf_loader, "dequantize_tensor", _refuse)
    assert main(args) == 0                              # a hit: no tensor read


def test_a_lazy_checkpoint_validates_its_weights_when_read(tiny_folder, tmp_path):
    """Errors in the weights surface when they are read, as a CheckpointError naming them."""
    import shutil

    import pytest
    from safetensors.torch import load_file, save_file

    from flightllm_overlay.errors import CheckpointError
    from flightllm_overlay.model import load_checkpoint
    folder = tmp_path / "m"
    shutil.copytree(tiny_folder, folder)
    shard = next(folder.glob("*.safetensors"))
    weights = load_file(shard)
    name = next(k for k in weights if k.endswith("q_proj.weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, shard)
    lazy = load_checkpoint(folder, lazy=True)
    assert lazy.args.n_layers and lazy.tokenizer is not None
    with pytest.raises(CheckpointError, match="NaN"):
        lazy.weights


def test_a_generator_stores_new_buckets_in_the_cache_its_program_came_from(tiny_ckpt,
                                                                          sim_overlay, tmp_path):
    """The README's spelling (compile_model(..., cache=...) then Generator(Session(...))): the
    buckets the generation compiles go back into that cache entry, as with Generator.load."""
    from flightllm_overlay.runtime import Session
    prog = compile_model(tiny_ckpt, ctx=64, cache=tmp_path / "cache")
    gen = Generator(Session(sim_overlay, prog), tiny_ckpt.tokenizer)
    gen.generate_text([5, 6, 7], max_new_tokens=20, chat=False)
    assert gen.stats.bucket_compiles
    again = ProgramCache(tmp_path / "cache").get_or_compile(tiny_ckpt, ctx=64)
    assert set(again.steps) == set(prog.steps) and len(again.steps) > 2
