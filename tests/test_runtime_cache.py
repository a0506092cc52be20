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
