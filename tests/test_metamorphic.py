"""Metamorphic checks of the timing model: relations that must hold whatever the numbers are.

No prediction beats its rooflines; doubling the HBM bandwidth speeds a memory-bound decode up and
leaves a compute-bound MM prefill alone; the compute-only fence and the schedule options never
make a step slower than the paper's schedule would on the same channels; a sampled decode
(`decode_stride`) is never optimistic."""
from __future__ import annotations

import pytest

from flightllm_overlay.bench import bench
from flightllm_overlay.compiler import BucketTable, compile_shapes
from flightllm_overlay.config import load_target
from flightllm_overlay.model.args import ModelArgs

U280 = load_target("u280")
MODEL = ModelArgs.from_name("smollm2-135m")


@pytest.fixture(scope="module")
def program():
    return compile_shapes(MODEL, U280, ctx=256, weight_bits=4)


@pytest.fixture(scope="module")
def base(program):
    return bench(program, U280, 128, 16, MODEL.name)


def test_no_prediction_beats_its_rooflines(program, base):
    assert program.step("prefill").rows == 128            # MM launches of 128 rows
    for step, peak, seconds in ((base.prefill, base.mm_peak, base.prefill_seconds),
                                (base.decode, base.mv_peak,
                                 base.decode.cycles / base.clock_hz)):
        memory, compute = base.roofline(step, peak)
        assert seconds >= max(memory, compute) > 0


def test_double_hbm_bandwidth_speeds_decode_not_mm_prefill(program, base):
    fast = U280.with_overrides(hbm_channel_gbps=2 * U280.hbm_channel_gbps)
    r = bench(program, fast, 128, 16, MODEL.name)
    assert r.decode_tokens_per_second > 1.25 * base.decode_tokens_per_second
    assert r.prefill.cycles > 0.9 * base.prefill.cycles          # compute-bound: under 10%
    memory, compute = base.roofline(base.prefill, base.mm_peak)
    assert compute > 3 * memory                                  # why: MM work dominates


def test_sampled_decode_is_never_optimistic(program):
    exact = bench(program, U280, 20, 100, MODEL.name)
    sampled = bench(program, U280, 20, 100, MODEL.name, decode_stride=3)
    assert sampled.decode.cycles >= exact.decode.cycles
    assert sampled.decode.cycles <= 1.1 * exact.decode.cycles


def test_compute_fence_is_never_slower(program):
    fenced = compile_shapes(MODEL, U280, ctx=256, weight_bits=4, schedule="compute_fence")
    for end in (32, 200):
        a, _ = BucketTable(program, U280).step("decode", end)
        b, _ = BucketTable(fenced, U280).step("decode", end)
        from flightllm_overlay.sim.timing import TimingModel
        tm = TimingModel(U280)
        assert tm.schedule_image(b.image).cycles <= tm.schedule_image(a.image).cycles


def test_13b_decode_lies_between_045x_7b_and_its_own_roofline():
    """LLaMA2-13B at 4 bits on one U280 (all 32 channels; 7.06 GiB needs them) decodes no
    faster than its HBM roofline and at least 0.45x as fast as LLaMA2-7B on the same card
    (13B / 7B = 0.52 of the bytes per token), one decode bucket each (PREDICTED)."""
    from flightllm_overlay.sim.timing import TimingModel
    target = U280.with_overrides(core_channels=tuple(
        tuple(range(c, U280.hbm_channels, U280.cores)) for c in range(U280.cores)))
    rates, rooflines = {}, {}
    for name in ("llama2-7b", "llama2-13b"):
        program = compile_shapes(ModelArgs.from_name(name), target, ctx=512, weight_bits=4,
                                 schedule="stripe_all+balance_channels")
        step, _ = BucketTable(program, target).step("decode", 384)
        tl = TimingModel(target).schedule(step.__dict__.pop("compiled_streams"),
                                          keep_events=False)
        rates[name] = tl.clock_hz / tl.cycles
        total = tl.counters.hbm_bytes_read + tl.counters.hbm_bytes_written
        rooflines[name] = target.hbm_channels * target.hbm_channel_gbps * 1e9 / total
    assert 0.45 * rates["llama2-7b"] <= rates["llama2-13b"] <= rooflines["llama2-13b"]
    assert rates["llama2-13b"] < 0.6 * rates["llama2-7b"]          # and not for free
