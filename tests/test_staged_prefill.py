"""Prefill staged through HBM (compiler/staged_prefill.py): 128-row MM launches whatever fits on chip, the same results bit for bit as the on-chip plan."""
from __future__ import annotations

import numpy as np
import pytest
from staged_target import staging_target

from flightllm_overlay.compiler import BucketTable, compile_model, compile_shapes
from flightllm_overlay.compiler.codegen import StepCodegen
from flightllm_overlay.compiler.staged_prefill import _Lifetimes
from flightllm_overlay.config import load_target
from flightllm_overlay.errors import CompileError
from flightllm_overlay.model.args import ModelArgs
from flightllm_overlay.runtime.session import Session
from flightllm_overlay.sim.timing import TimingModel
from flightllm_overlay.spec import isa

RUNS = [("prefill", 0, 128), ("prefill", 128, 200)]


def _ops(step, core=0):
    """[(op, fields)] of one core's stream of a step."""
    words = step.image.view(np.uint32)
    off, n = isa.image_table(words)[core]
    seg, pos, out = words[off:off + n].tolist(), 0, []
    while pos < n:
        insn, size = isa.decode_one(seg, pos)
        out.append((insn.op, insn.fields))
        pos += size
    return out


def _local_copies(ops, core=0):
    return [f for op, f in ops if op == "LD" and f.get("remote") and f.get("remote_core") == core]


@pytest.fixture(scope="module")
def on_chip_program(tiny_ckpt):
    return compile_model(tiny_ckpt, ctx=256, all_logits=True)


def test_a_prefill_too_large_for_the_chip_is_staged_not_shortened(staged_program,
                                                                   on_chip_program):
    plan = staged_program.builder.plan
    assert StepCodegen(plan, 128, 256, True).staged
    assert not StepCodegen(plan, 1, 256, False).staged             # decode stays on chip
    assert not StepCodegen(on_chip_program.builder.plan, 128, 256, True).staged
    assert staged_program.rows == on_chip_program.rows == 128
    ops = _ops(staged_program.step("prefill"))
    assert _local_copies(ops), "a staged step gathers the core's own slices by local copies"
    assert any(op == "MM" and f["m"] == 128 for op, f in ops)
    assert not any(op == "MV" for op, _ in ops)
    assert not _local_copies(_ops(on_chip_program.step("prefill")))


def _run(overlay, program, prompt):
    with Session(overlay, program) as s:
        got = [s.run(step, prompt[a:b], a) for step, a, b in RUNS]
        got.append(s.run("decode", [7], len(prompt)))     # reads the KV cache the prefill wrote
    return got


def test_staged_prefill_gives_the_on_chip_results_bit_for_bit(sim_overlay, staged_program,
                                                              on_chip_program):
    prompt = np.random.default_rng(1).integers(3, 300, 200).tolist()
    staged, on_chip = _run(sim_overlay, staged_program, prompt), \
        _run(sim_overlay, on_chip_program, prompt)
    for a, b in zip(staged, on_chip):
        assert a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert np.abs(staged[0]).max() > 0


def test_lifetimes_share_bytes_only_between_phases_that_do_not_meet():
    lt = _Lifetimes("global buffer", 4096)
    lt.add("a", 2048, {0, 1})
    lt.add("b", 2048, {2})          # never live with a: may take its bytes
    lt.add("c", 2000, {1, 2})       # meets both: after them
    at = lt.place()
    assert at["a"] == at["b"] == 0 and at["c"] == 2048
    lt.add("d", 64, {0, 1, 2})
    with pytest.raises(CompileError, match="overflows placing"):
        lt.place()


@pytest.fixture(scope="module")
def llama7b():
    t = load_target("u280")
    return t, compile_shapes(ModelArgs.from_name("llama2-7b"), t, weight_bits=4, qk_density=0.7)


def test_llama2_7b_prefill_runs_128_row_mm_launches_near_the_compute_bound(llama7b):
    """The paper's configuration on the paper's 24 channels: one 128-row launch per bucket,
    within 1.6x of the MM compute bound (PREDICTED by the timing model)."""
    t, program = llama7b
    assert program.rows == 128
    step, _ = BucketTable(program, t).step("prefill", 128)
    tl = TimingModel(t).schedule(step.__dict__.pop("compiled_streams"), keep_events=False)
    c = tl.counters
    bound = c.macs / (t.cores * t.mm_macs_per_cycle)
    assert c.mpe_instructions and bound <= c.cycles < 1.6 * bound


def test_staged_prefill_keeps_skipping_masked_key_blocks(sim_overlay, tiny_ckpt):
    """Block-sparse prefill attention (a (sink 1, window 1) pattern on every head) staged and
    on chip: the same logits bit for bit, and the staged stream still carries the pattern."""
    from flightllm_overlay.compiler import compile_quantized, quantize_model
    qm = quantize_model(tiny_ckpt, None)
    qm.attn_pattern = [[(1, 1)] * tiny_ckpt.args.n_heads] * tiny_ckpt.args.n_layers
    staged = compile_quantized(qm, staging_target(), ctx=256, all_logits=True)
    on_chip = compile_quantized(qm, ctx=256, all_logits=True)
    ops = _ops(BucketTable(staged, staging_target()).step("prefill", 200)[0])
    assert _local_copies(ops) and any(op == "MM" and f.get("blk_win") for op, f in ops)
    prompt = np.random.default_rng(2).integers(3, 300, 200).tolist()
    for a, b in zip(_run(sim_overlay, staged, prompt), _run(sim_overlay, on_chip, prompt)):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
