"""Program cache and storage accounting: entries keyed by content, corrupt or stale entries
recompiled and never executed, atomic writes, bucketed vs per-length instruction bytes."""
from __future__ import annotations

import numpy as np

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
