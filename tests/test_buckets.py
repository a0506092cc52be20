"""Length-adaptive compilation: bucket streams give the logits of exact-length streams, buckets
are compiled and loaded once and reused, and the bucket arithmetic follows the target."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.compiler.buckets import bucket_of, buckets, step_name
from flightllm_overlay.config import load_target
from flightllm_overlay.errors import ContextLengthError, FlightLLMError
from flightllm_overlay.runtime import Generator, Session

U280 = load_target("u280")


def test_bucket_arithmetic():
    assert [bucket_of(U280, "decode", e, 2048) for e in (1, 16, 17, 2048)] == [16, 16, 32, 2048]
    assert [bucket_of(U280, "prefill", e, 2048) for e in (1, 128, 129)] == [128, 128, 256]
    assert bucket_of(U280, "decode", 250, 250) == 250          # a partial last bucket
    assert buckets(U280, "decode", 2048) == list(range(16, 2049, 16))
    assert buckets(U280, "prefill", 300) == [128, 256, 300]
    with pytest.raises(ContextLengthError):
        bucket_of(U280, "decode", 2049, 2048)


@pytest.fixture()
def fresh_session(sim_overlay, tiny_ckpt):
    from flightllm_overlay.compiler import compile_model
    with Session(sim_overlay, compile_model(tiny_ckpt, ctx=256)) as s:
        yield s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bucketed_logits_equal_exact_length_streams(fresh_session, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 60))
    ids = rng.integers(1, 300, n).tolist()
    got = fresh_session.run("prefill", ids, 0)
    want = fresh_session.run("prefill", ids, 0, exact=True)
    np.testing.assert_array_equal(got, want)
    # decode across a bucket boundary: steps ending at 15, 16 (bucket 16) and 17 (bucket 32)
    seq = (ids * 15)[:14] + [5, 6, 7]
    fresh_session.run("prefill", seq[:14], 0)
    for pos in range(14, 17):
        got = fresh_session.run("decode", [seq[pos]], pos)
        want = fresh_session.run("decode", [seq[pos]], pos, exact=True)
        np.testing.assert_array_equal(got, want)
    names = set(fresh_session.stats.buckets)
    assert {step_name("decode", 16), step_name("decode", 32)} <= names


def test_generator_compiles_each_bucket_at_most_once_and_reports_it(fresh_session, tiny_ckpt):
    gen = Generator(fresh_session, tiny_ckpt.tokenizer)
    list(gen.generate(list(range(1, 10)), 30, stop_ids=()))
    st = gen.stats
    # positions 9..38: decode buckets 16, 32, 48; prefill bucket 128
    assert set(st.buckets) == {"prefill@128", "decode@16", "decode@32", "decode@48"}
    assert st.bucket_compiles == 4 and st.bucket_misses == 4
    assert st.bucket_hits == sum(st.buckets.values()) - 4
    list(gen.generate(list(range(1, 10)), 30, stop_ids=()))
    assert gen.stats.bucket_compiles == 0 and gen.stats.bucket_misses == 0
    assert "compiled 0" in gen.stats.summary()


def test_bucket_streams_differ_only_in_capacities(tiny_program):
    from flightllm_overlay.spec import isa
    b = tiny_program.builder
    s16, s32 = b.build("decode", 16), b.build("decode", 32)
    a = isa.decode_stream(s16.streams()[0])
    c = isa.decode_stream(s32.streams()[0])
    assert [i.op for i in a] == [i.op for i in c]          # same instructions...
    assert any(x != y for x, y in zip(a, c))                # ...with other capacities


def test_bucket_table_owns_the_policy(tiny_ckpt, tmp_path):
    """BucketTable compiles a missing bucket once and keeps it in the program; so does a program
    loaded from a file (from its placement recipe), exact-length streams included; a program
    with neither builder nor recipe says so instead of running another stream."""
    from flightllm_overlay.compiler import BucketTable, Program, compile_model
    program = compile_model(tiny_ckpt, ctx=64)
    table = BucketTable(program, U280)
    assert table.ends("decode") == [16, 32, 48, 64] and table.name("decode", 17) == "decode@32"
    step, compiled = table.step("decode", 17)
    assert compiled and step.name == "decode@32" and program.steps["decode@32"] is step
    assert table.step("decode", 20) == (step, False)
    assert table.compile_all() == len(table.ends("prefill")) + len(table.ends("decode")) - 1
    loaded = Program.load(compile_model(tiny_ckpt, ctx=64).save(tmp_path / "p.fllm"))
    step, compiled = BucketTable(loaded, U280).step("decode", 17)
    assert compiled and step.name == "decode@32" and loaded.steps["decode@32"] is step
    np.testing.assert_array_equal(step.image, program.steps["decode@32"].image)
    assert BucketTable(loaded, U280).exact("decode", 17)[0].name == "decode#exact17"
    loaded.builder = loaded.recipe = None
    with pytest.raises(FlightLLMError, match="no placement recipe"):
        BucketTable(loaded, U280).step("decode", 60)
