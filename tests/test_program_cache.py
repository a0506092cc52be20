"""Program cache and storage accounting: entries keyed by content, corrupt or stale entries
recompiled and never executed, atomic writes, bucketed vs per-length instruction bytes."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.compiler.cache import ProgramCache, program_key
from flightllm_overlay.compiler.storage import storage_report
from flightllm_overlay.config import load_target
from flightllm_overlay.runtime import Session

U280 = load_target("u280")


def test_second_use_hits_and_runs_the_same(tmp_path, tiny_ckpt, sim_overlay):
    cache = ProgramCache(tmp_path)
    first = cache.get_or_compile(tiny_ckpt, ctx=64)
    second = cache.get_or_compile(tiny_ckpt, ctx=64)
    assert (cache.misses, cache.hits) == (1, 1)
    with Session(sim_overlay, first) as a, Session(sim_overlay, second) as b:
        np.testing.assert_array_equal(a.run("prefill", [3, 4, 5], 0), b.run("prefill", [3, 4, 5], 0))
        # the cached program still compiles a bucket it does not hold, lazily
        np.testing.assert_array_equal(a.run("decode", [9], 40), b.run("decode", [9], 40))
        assert b.stats.bucket_compiles >= 1
    assert not list(tmp_path.glob("*.tmp"))            # writes are atomic


def test_corrupt_entry_is_detected_and_recompiled(tmp_path, tiny_ckpt):
    cache = ProgramCache(tmp_path)
    cache.get_or_compile(tiny_ckpt, ctx=64)
    path = cache.path(program_key(tiny_ckpt, U280, 64, False))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40                           # flip one bit inside a section
    path.write_bytes(bytes(raw))
    again = ProgramCache(tmp_path)
    prog = again.get_or_compile(tiny_ckpt, ctx=64)
    assert (again.rejected, again.misses, again.hits) == (1, 1, 0)
    assert prog.meta["cache_key"] == path.stem
    assert ProgramCache(tmp_path).load(path.stem) is not None   # the rewritten entry is good


def test_stale_entry_for_another_key_is_not_used(tmp_path, tiny_ckpt):
    cache = ProgramCache(tmp_path)
    prog = cache.get_or_compile(tiny_ckpt, ctx=64)
    key = program_key(tiny_ckpt, U280, 64, False)
    other = program_key(tiny_ckpt, U280, 128, False)
    assert other != key
    cache.path(key).rename(cache.path(other))          # a file under the wrong name
    assert cache.load(other) is None and cache.rejected == 1
    assert prog.ctx == 64


def test_storage_report_counts_buckets_and_computes_per_length(tiny_program):
    rep = storage_report(tiny_program, U280)
    ctx, rows = tiny_program.ctx, rep.rows
    assert rep.streams == {"prefill": -(-ctx // 128), "decode": ctx // 16}
    dec = tiny_program.steps["decode@16"].image.nbytes
    assert rep.bucketed["decode"] == sum(
        tiny_program.steps[f"decode@{b}"].image.nbytes for b in range(16, ctx + 1, 16))
    assert rep.per_length_runtime["decode"] == ctx * dec    # every length's stream has that size
    assert rep.per_length_static["decode"] == rep.per_length_runtime["decode"]
    # the static baseline unrolls a prompt of L tokens into ceil(L / T) chunk streams
    assert rep.static_chunks["prefill"] == sum(-(-n // rows) for n in range(1, ctx + 1))
    pre = tiny_program.steps["prefill@128"].image.nbytes
    assert rep.per_length_static["prefill"] >= rep.static_chunks["prefill"] * pre
    assert rep.per_length_static["prefill"] > rep.per_length_runtime["prefill"]
    assert rep.reduction > rep.reduction_runtime > 1
    assert "reduction" in rep.table() and "per-length static" in rep.table()


def test_per_length_formula_equals_materialised_streams(tiny_ckpt):
    """The computed per-length bytes equal streams built for the exact lengths (both baselines),
    for lengths inside, at and across bucket ends and chunk boundaries."""
    from flightllm_overlay.compiler import compile_model
    from flightllm_overlay.compiler.storage import chunk_ends, materialised_bytes
    prog = compile_model(tiny_ckpt, ctx=256)
    prog.builder.rows = prog.steps["prefill"].rows = 32       # several chunks per prompt
    rep = storage_report(prog, U280)
    sizes = {k: {b: prog.steps[f"{k}@{b}"].image.nbytes for b in (16, 32, 128, 256)
                 if f"{k}@{b}" in prog.steps} for k in ("prefill", "decode")}

    def bucket_size(kind, end):
        width = 128 if kind == "prefill" else 16
        return prog.steps[f"{kind}@{-(-end // width) * width}"].image.nbytes

    assert chunk_ends(32, 70) == [32, 64, 70]
    for n in (1, 31, 33, 129, 250):
        for kind in ("prefill", "decode"):
            want = sum(bucket_size(kind, e) for e in
                       (chunk_ends(32, n) if kind == "prefill" else [n]))
            assert materialised_bytes(prog, kind, n) == want, (kind, n)
        assert materialised_bytes(prog, "prefill", n, static=False) == bucket_size("prefill", n)
    # and the report's totals are those per-length sums over every length
    assert rep.per_length_static["prefill"] == sum(
        bucket_size("prefill", e) for n in range(1, 257) for e in chunk_ends(32, n))
    assert rep.per_length_runtime["prefill"] == sum(
        bucket_size("prefill", n) for n in range(1, 257))
    assert sizes["decode"][16] * 256 == rep.per_length_runtime["decode"]


_COMPILED = {}


@pytest.fixture
def quick_compile(monkeypatch):
    """compile_model memoised per (checkpoint, ctx): these tests are about the cache, not the
    compiler; `calls` counts the compilations the cache asked for."""
    import copy

    import flightllm_overlay.compiler as compiler
    real, calls = compiler.compile_model, []

    def compile_model(ckpt, target="u280", ctx=None, **kw):
        calls.append(ctx)
        key = (id(ckpt), ctx)
        if key not in _COMPILED:
            _COMPILED[key] = real(ckpt, target, ctx=ctx, **kw)
        prog = copy.copy(_COMPILED[key])
        prog.meta = dict(prog.meta)
        return prog
    monkeypatch.setattr(compiler, "compile_model", compile_model)
    return calls


def _clone_with_weights(ckpt, scale):
    """Same names and shapes, other weights, and no file on disk."""
    import dataclasses
    weights = {k: v * scale for k, v in ckpt.weights.items()}
    return dataclasses.replace(ckpt, weights=weights, source="")


def test_in_memory_checkpoints_with_other_weights_get_other_keys(tmp_path, tiny_ckpt):
    """Finding 2: two in-memory checkpoints with the same names and shapes but other weights
    shared one key, so the second got the first's program."""
    a, b = _clone_with_weights(tiny_ckpt, 1.0), _clone_with_weights(tiny_ckpt, 0.5)
    assert program_key(a, U280, 64, False) != program_key(b, U280, 64, False)
    assert program_key(a, U280, 64, False) == program_key(_clone_with_weights(tiny_ckpt, 1.0),
                                                          U280, 64, False)
    cache = ProgramCache(tmp_path)
    pa, pb = cache.get_or_compile(a, ctx=64), cache.get_or_compile(b, ctx=64)
    assert cache.misses == 2 and cache.hits == 0
    assert any(not np.array_equal(pa.channel_static[c], pb.channel_static[c]) for c in pa.channel_static)


def test_key_covers_tokenizer_target_and_options(tiny_ckpt):
    import dataclasses
    base = program_key(tiny_ckpt, U280, 64, False)
    assert program_key(dataclasses.replace(tiny_ckpt, tokenizer=None), U280, 64, False) != base
    assert program_key(tiny_ckpt, U280.with_overrides(clock_mhz=200.0), 64, False) != base
    assert program_key(tiny_ckpt, U280, 64, False, {"weight_bits": 4}) != base
    assert program_key(tiny_ckpt, U280, 64, True) != base


@pytest.mark.parametrize("damage", ["truncate", "garbage", "header", "empty", "directory"])
def test_a_broken_entry_is_removed_with_a_notice_and_recompiled(tmp_path, tiny_ckpt, damage,
                                                                quick_compile):
    """Finding 6: a broken entry that raised something other than ProgramError was never
    deleted, so every later run failed.  Now it is removed, reported in one line, recompiled."""
    notices = []
    cache = ProgramCache(tmp_path, notice=notices.append)
    cache.get_or_compile(tiny_ckpt, ctx=64)
    path = cache.path(program_key(tiny_ckpt, U280, 64, False))
    raw = path.read_bytes()
    if damage == "directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes({"truncate": raw[:11], "garbage": b"\x10" + raw[1:], "empty": b"",
                          "header": raw[:8] + b"[" + raw[9:]}[damage])
    again = ProgramCache(tmp_path, notice=notices.append)
    assert again.get_or_compile(tiny_ckpt, ctx=64).ctx == 64
    assert again.rejected == 1 and "\n" not in notices[0] and "recompiling" in notices[0]
    assert len(quick_compile) == 2                      # compiled again once
    if damage == "directory":           # a folder in the way is not deleted; the run goes on
        assert len(notices) == 2 and "could not store" in notices[1] and path.is_dir()
    else:
        assert len(notices) == 1
        assert ProgramCache(tmp_path).load(path.stem) is not None


def test_an_entry_whose_recipe_does_not_replay_is_refused_and_removed_at_its_first_bucket(
        tmp_path, tiny_ckpt, quick_compile):
    """The placement of an entry re-runs when it first compiles a bucket, not at load (a warm
    run with its buckets stored never pays for it).  A recipe that does not re-run to the
    entry's streams (edited by hand: another compiler's entries have other keys) refuses that
    bucket, and the entry is removed, so the next run recompiles."""
    from program_files import header_of, with_header

    from flightllm_overlay.compiler import BucketTable
    from flightllm_overlay.errors import ProgramError
    cache = ProgramCache(tmp_path)
    cache.get_or_compile(tiny_ckpt, ctx=64)
    path = cache.path(program_key(tiny_ckpt, U280, 64, False))
    raw = path.read_bytes()
    header = header_of(raw)
    header["placement"]["schedule"]["compute_fence"] = True
    path.write_bytes(with_header(raw, header))
    again = ProgramCache(tmp_path)
    prog = again.get_or_compile(tiny_ckpt, ctx=64)
    assert again.hits == 1 and prog.builder is None and prog.cache_entry == path
    with pytest.raises(ProgramError, match=f"does not give its own .*{path.name} is removed"):
        BucketTable(prog, U280).step("decode", 40)
    assert not path.exists()
    third = ProgramCache(tmp_path)
    third.get_or_compile(tiny_ckpt, ctx=64)
    assert (third.misses, len(quick_compile)) == (1, 2)


def test_the_key_covers_the_compilers_source(tiny_ckpt, monkeypatch):
    """Entries written by other compiler code (another checkout, an edit) are never found."""
    import flightllm_overlay.compiler.cache as cache_mod
    base = program_key(tiny_ckpt, U280, 64, False)
    assert len(cache_mod.compiler_source_digest()) == 64
    monkeypatch.setattr(cache_mod, "_SOURCE_DIGEST", "0" * 64)
    assert program_key(tiny_ckpt, U280, 64, False) != base


def test_size_cap_evicts_least_recently_used(tmp_path, tiny_ckpt, quick_compile):
    import os
    cache = ProgramCache(tmp_path)
    for ctx in (64, 128, 192):
        cache.get_or_compile(tiny_ckpt, ctx=ctx)
    paths = {ctx: cache.path(program_key(tiny_ckpt, U280, ctx, False)) for ctx in (64, 128, 192)}
    for i, ctx in enumerate((128, 64, 192)):          # oldest use: 128
        os.utime(paths[ctx], (1000 + i, 1000 + i))
    cache.load(paths[64].stem)                          # a hit refreshes 64
    size = max(p.stat().st_size for p in paths.values())
    small = ProgramCache(tmp_path, max_bytes=2 * size + size // 2)
    assert small.evict() == 1
    assert not paths[128].exists() and paths[64].exists() and paths[192].exists()
    (tmp_path / ".old.fllm.x.tmp").write_bytes(b"x")    # left by a crashed writer long ago
    os.utime(tmp_path / ".old.fllm.x.tmp", (0, 0))
    ProgramCache(tmp_path, max_bytes=1).get_or_compile(tiny_ckpt, ctx=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == [paths[64].name]   # newest kept


def test_cache_location_and_cap_from_the_environment(monkeypatch, tmp_path):
    from flightllm_overlay.compiler.cache import cache_max_bytes, default_cache_dir
    from flightllm_overlay.errors import ConfigError
    monkeypatch.setenv("FLIGHTLLM_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FLIGHTLLM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "flightllm_overlay"
    assert cache_max_bytes("2G") == 2 << 30 and cache_max_bytes("512M") == 512 << 20
    assert cache_max_bytes("123") == 123
    monkeypatch.setenv("FLIGHTLLM_CACHE_MAX", "1K")
    assert ProgramCache(tmp_path).max_bytes == 1024
    with pytest.raises(ConfigError, match="FLIGHTLLM_CACHE_MAX"):
        cache_max_bytes("lots")


def test_compressed_checkpoints_are_cached_by_content(tmp_path, tiny_ckpt):
    """get_or_compress: computed once, read back equal; another setting is another entry; a
    damaged entry is removed with a notice and computed again; evicted with the programs."""
    from flightllm_overlay.compress import CompressionConfig
    tokens = np.random.default_rng(3).integers(3, 300, 128).tolist()
    cfg = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=128)
    notices = []
    cache = ProgramCache(tmp_path, notice=notices.append)
    first = cache.get_or_compress(tiny_ckpt, cfg, tokens, progress=False)
    again = cache.get_or_compress(tiny_ckpt, cfg, tokens, progress=False)
    assert (cache.misses, cache.hits) == (1, 1)
    a, b = first.tensors()[0], again.tensors()[0]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    cache.get_or_compress(tiny_ckpt, cfg.but(avg_bits=6.0), tokens, progress=False)
    entries = sorted(tmp_path.glob("*.fllmc"))
    assert cache.misses == 2 and len(entries) == 2
    raw = bytearray(entries[0].read_bytes())
    raw[len(raw) // 2] ^= 0x40
    entries[0].write_bytes(bytes(raw))
    for c in (cfg, cfg.but(avg_bits=6.0)):
        cache.get_or_compress(tiny_ckpt, c, tokens, progress=False)
    assert cache.rejected == 1 and "compressing again" in notices[0] and cache.misses == 3
    assert {p for p, _, _ in cache.entries()} == set(entries)
    assert ProgramCache(tmp_path, max_bytes=1).evict() == 2
