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
    ctx = tiny_program.ctx
    assert rep.streams == {"prefill": -(-ctx // 128), "decode": ctx // 16}
    dec = tiny_program.steps["decode@16"].image.nbytes
    assert rep.bucketed["decode"] == sum(
        tiny_program.steps[f"decode@{b}"].image.nbytes for b in range(16, ctx + 1, 16))
    assert rep.per_length["decode"] == ctx * dec        # every length's stream has that size
    assert rep.reduction > 1 and "reduction" in rep.table()
