"""A program loaded from a file compiles its buckets from the saved placement recipe, instruction for instruction as compiled."""
from __future__ import annotations

import numpy as np
import pytest
from program_files import header_of, split, with_header

from flightllm_overlay.compiler import BucketTable, Program, compile_compressed, compile_model
from flightllm_overlay.config import load_target
from flightllm_overlay.errors import ProgramError
from flightllm_overlay.spec import isa

U280 = load_target("u280")


def _instructions(step) -> list:
    return [[(i.op, i.fields) for i in isa.decode_stream(words)] for words in step.streams()]


def _same_buckets(compiled, loaded):
    """Compile every bucket (and one exact-length stream) in both; compare them one by one."""
    assert set(loaded.steps) == {"prefill", "decode"} and loaded.builder is None
    made = BucketTable(loaded, U280).compile_all()
    assert made == BucketTable(compiled, U280).compile_all() > 0
    for table in (BucketTable(compiled, U280), BucketTable(loaded, U280)):
        table.exact("decode", 21)
        table.exact("prefill", 37)
    assert set(loaded.steps) == set(compiled.steps) and len(loaded.steps) > 4
    for name, step in compiled.steps.items():
        assert _instructions(loaded.steps[name]) == _instructions(step), name
        np.testing.assert_array_equal(loaded.steps[name].image, step.image)


@pytest.mark.parametrize("family", ["tiny_ckpt", "tiny_opt_ckpt"])
def test_loaded_bucket_streams_equal_the_compiled_ones(family, request, tmp_path):
    ckpt = request.getfixturevalue(family)
    compiled = compile_model(ckpt, ctx=128)
    loaded = Program.load(compiled.save(tmp_path / "p.fllm"))
    _same_buckets(compiled, loaded)


def test_schedule_options_slots_and_unfused_steps_are_replayed(tiny_ckpt, tmp_path):
    compiled = compile_model(tiny_ckpt, ctx=64, schedule="all", weight_slots=3, fused=False)
    loaded = Program.load(compiled.save(tmp_path / "p.fllm"))
    assert loaded.recipe.weight_slots == 3 and loaded.recipe.schedule.compute_fence
    _same_buckets(compiled, loaded)


@pytest.fixture(scope="module")
def compressed(tiny_ckpt):
    """Mixed 4- and 8-bit packed weights, N:16-sparse Q and K, block-sparse prefill attention."""
    from flightllm_overlay.compress import CompressionConfig, compress
    tokens = np.random.default_rng(3).integers(3, 300, 128).tolist()
    cfg = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=128, attn_mass=0.9)
    return compress(tiny_ckpt, tokens, cfg, progress=False)


def test_packed_sparse_weights_and_attention_patterns_are_replayed(compressed, tmp_path):
    compiled = compile_compressed(compressed, ctx=256, all_logits=True)
    path = compiled.save(tmp_path / "c.fllm")
    table, _ = split(path.read_bytes())
    assert "codes/0/wq" in table and "codes/0/wv" not in table       # the sparse weights' codes
    loaded = Program.load(path)
    formats = {f.text for layer in loaded.recipe.layers for f in layer.values()}
    assert {"packed/8", "packed/4/32/sparse"} <= formats
    assert loaded.recipe.attn_pattern == compiled.recipe.attn_pattern and any(
        w for heads in loaded.recipe.attn_pattern for _, w in heads)
    _same_buckets(compiled, loaded)


def test_generate_after_a_load_reports_the_buckets_it_compiled(tmp_path, tiny_folder, capsys):
    from flightllm_overlay.cli import main
    prog = tmp_path / "p.fllm"
    assert main(["compile", "--model", str(tiny_folder), "-o", str(prog), "--ctx", "128"]) == 0
    assert main(["generate", "hello", "--model", str(tiny_folder), "--program", str(prog),
                 "--max-new-tokens", "20", "--no-chat", "--stats"]) == 0
    err = capsys.readouterr().err
    # prefill@128, decode@16 and decode@32: compiled from the file's recipe, loaded, reused
    assert "buckets used 3 (compiled 3, loaded 3, reused 17)" in err


def test_a_cache_hit_compiles_buckets_without_compiling_the_model(tmp_path, tiny_ckpt,
                                                                  monkeypatch):
    import flightllm_overlay.compiler as compiler
    from flightllm_overlay.compiler.cache import ProgramCache
    cache = ProgramCache(tmp_path)
    compiled = cache.get_or_compile(tiny_ckpt, ctx=64)

    def refuse(*a, **kw):
        raise AssertionError("the model was compiled again")
    monkeypatch.setattr(compiler, "compile_model", refuse)
    hit = ProgramCache(tmp_path).get_or_compile(tiny_ckpt, ctx=64)
    step, made = BucketTable(hit, U280).step("decode", 40)
    assert made and step.name == "decode@48"
    assert _instructions(step) == _instructions(BucketTable(compiled, U280).step("decode", 40)[0])


@pytest.fixture(scope="module")
def plain_file(tiny_ckpt, tmp_path_factory):
    """A program saved right after compiling: whole-context streams only."""
    return compile_model(tiny_ckpt, ctx=64).save(tmp_path_factory.mktemp("plain") / "p.fllm")


def _tampered(raw: bytes, edit) -> bytes:
    h = header_of(raw)
    edit(h["placement"])
    return with_header(raw, h)


@pytest.mark.parametrize("edit, says", [
    (lambda p: p["weights"][0].update(wq="packed/8"), "prefill stream, decode stream"),
    (lambda p: p["schedule"].update(compute_fence=True), "prefill stream, decode stream"),
    (lambda p: p.update(weight_slots=3), "decode stream"),
    (lambda p: p["weights"][1].update(wo="packed/4/32"), "static HBM images"),
    (lambda p: p["weights"][0].update(w_fc1="int8"), "weights"),
])
def test_a_recipe_that_does_not_give_the_files_streams_is_refused(plain_file, tmp_path, edit,
                                                                   says):
    """A header whose recipe passes the schema but does not re-run to the file's own layout and
    whole-context streams (another compiler version, or a crafted file) loads, and refuses to
    compile a bucket: it says why and to recompile."""
    raw = plain_file.read_bytes()
    bad = tmp_path / "bad.fllm"
    bad.write_bytes(_tampered(raw, edit))
    loaded = Program.load(bad)
    with pytest.raises(ProgramError, match="recompile") as exc:
        BucketTable(loaded, U280).step("decode", 17)
    assert says in str(exc.value)
    assert BucketTable(Program.load(plain_file), U280).step("decode", 17)[1]
