"""Prefill rows past the prompt (`dyn_m`, `dyn_rows`): skipped, with every logit, KV row and decode step unchanged."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from flightllm_overlay.compiler import compile_model
from flightllm_overlay.compiler.codegen import StepCodegen
from flightllm_overlay.runtime import Session
from flightllm_overlay.spec import isa
from flightllm_overlay.testing.pytest_plugin import TINY_CTX

CTX = TINY_CTX


@contextmanager
def _row_skip(on: bool):
    """Compile (and compile lazily, at a run's first bucket) with or without the row skip."""
    saved = StepCodegen.prefill_row_skip
    StepCodegen.prefill_row_skip = on
    try:
        yield
    finally:
        StepCodegen.prefill_row_skip = saved


@pytest.fixture(scope="module", params=["llama", "opt", "compressed", "wide", "all-options"])
def programs(request, tiny_ckpt, tiny_opt_ckpt):
    """The same model compiled with and without the row skip: W8A8 LLaMA, W8A8 OPT, a
    compressed LLaMA (N:16 sparse and low-bit weights, block-sparse prefill attention), the
    same with two-plane activations at every wide point, and the LLaMA with every schedule
    option."""
    if request.param in ("compressed", "wide"):
        from flightllm_overlay.compiler import compile_compressed
        from flightllm_overlay.compress import CompressionConfig, compress
        tokens = np.random.default_rng(3).integers(3, 300, 512).tolist()
        cfg = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=512, attn_mass=0.9)
        if request.param == "wide":
            cfg = cfg.but(wide_points=("attn_out", "ffn_mid", "head_in"))
        cm = compress(tiny_ckpt, tokens, cfg, progress=False)
        build = lambda: compile_compressed(cm, ctx=CTX)          # noqa: E731
    else:
        ckpt = tiny_opt_ckpt if request.param == "opt" else tiny_ckpt
        schedule = "all" if request.param == "all-options" else None
        build = lambda: compile_model(ckpt, ctx=CTX, schedule=schedule)   # noqa: E731
    out = []
    for on in (True, False):
        with _row_skip(on):
            out.append(build())
    return out


def _flags(program, step: str) -> dict:
    """How many MM/MV and MISC instructions of a step skip rows, and how many there are."""
    counts = {"dyn_m": 0, "dyn_rows": 0, "mpe": 0, "misc": 0}
    for words in program.step(step).streams():
        for ins in isa.decode_stream(words):
            if ins.op in ("MM", "MV"):
                counts["mpe"] += 1
                counts["dyn_m"] += bool(ins.fields.get("dyn_m"))
            elif ins.op == "MISC":
                counts["misc"] += 1
                counts["dyn_rows"] += bool(ins.fields.get("dyn_rows"))
    return counts


def _run(overlay, program, prompt, row_skip: bool, decode_steps=3):
    """Logits of every prefill chunk and of a few greedy decode steps, and the session's MACs."""
    out = []
    with _row_skip(row_skip), Session(overlay, program) as s:
        rows = program.step("prefill").rows
        for p0 in range(0, len(prompt), rows):
            out.append(s.run("prefill", prompt[p0:p0 + rows], p0).copy())
        pos, tok = len(prompt), int(out[-1][-1].argmax())
        for _ in range(decode_steps):
            out.append(s.run("decode", [tok], pos).copy())
            pos, tok = pos + 1, int(out[-1][-1].argmax())
        return out, s.stats.macs


@pytest.mark.parametrize("n", [1, 7, 12])
def test_skipping_the_rows_past_the_prompt_changes_no_result(sim_overlay, programs, n):
    skip, full = programs
    prompt = [int(t) for t in (np.arange(n) * 37 + 5) % min(skip.vocab_size, 250)]
    got, macs_skip = _run(sim_overlay, skip, prompt, True)
    want, macs_full = _run(sim_overlay, full, prompt, False)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.tobytes() == w.tobytes()
    assert macs_skip < macs_full                 # the padding rows were not computed


def test_a_prompt_over_several_prefill_chunks(sim_overlay, programs):
    skip, full = programs
    rows = skip.step("prefill").rows
    n = rows + 5                                 # a whole chunk, then 5 rows of the next
    if n + 3 > CTX:
        pytest.skip(f"the tiny program's context {CTX} holds no second prefill chunk")
    prompt = [int(t) for t in (np.arange(n) * 11 + 3) % min(skip.vocab_size, 250)]
    got, _ = _run(sim_overlay, skip, prompt, True)
    want, _ = _run(sim_overlay, full, prompt, False)
    for g, w in zip(got, want):
        assert g.tobytes() == w.tobytes()


def test_the_prefill_stream_marks_its_token_rows(programs):
    skip, full = programs
    with _row_skip(True):
        on = _flags(skip, "prefill")
    with _row_skip(False):
        off = _flags(full, "prefill")
    assert on["mpe"] - 3 <= on["dyn_m"] > 0      # all but the LM head's (the last row only)
    assert on["dyn_rows"] > 0.8 * on["misc"]
    assert off["dyn_m"] == off["dyn_rows"] == 0
    with _row_skip(True):
        dec = _flags(skip, "decode")
    assert dec["dyn_m"] == dec["dyn_rows"] == 0  # a decode step has one row: nothing to skip


def test_disassembly_names_the_flags():
    ins = isa.Instruction("MM", m=128, n=16, k=16, dyn_m=1, m_group=64)
    text = isa.disassemble_one(ins)
    assert "dyn_m" in text and "m_group=64" in text
    ins = isa.Instruction("MISC", op="rmsnorm", rows=256, k=64, groups=128, dyn_rows=1)
    assert "dyn_rows" in isa.disassemble_one(ins)


def test_dyn_rows_with_given_maxima_is_refused():
    from flightllm_overlay.errors import IllegalInstructionError
    with pytest.raises(IllegalInstructionError, match="given_max"):
        isa.encode(isa.Instruction("MISC", op="quant", rows=4, k=8, out_abuf=1, given_max=1,
                                   groups=2, dyn_rows=1))
