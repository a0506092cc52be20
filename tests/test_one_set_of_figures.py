"""Predicted figures do not depend on how a program was loaded: saved then loaded equals freshly compiled."""
from __future__ import annotations

from flightllm_overlay.compiler import BucketTable, Program
from flightllm_overlay.runtime import Generator, Session


def _predicted(overlay, program, ckpt):
    gen = Generator(Session(overlay, program), ckpt.tokenizer)
    gen.generate_text("hello there", 8, temperature=0.0, stop_ids=())
    gen.session.close()
    return gen.stats.predicted_decode_tokens_per_second, sorted(gen.stats.buckets)


def test_program_saved_with_its_buckets_predicts_as_compiled(sim_overlay, tiny_ckpt, tmp_path):
    from flightllm_overlay.compiler import compile_model
    from flightllm_overlay.config import load_target
    program = compile_model(tiny_ckpt, ctx=256)
    BucketTable(program, load_target("u280")).compile_all()
    loaded = Program.load(program.save(tmp_path / "all.fllm"))
    assert _predicted(sim_overlay, loaded, tiny_ckpt) == _predicted(sim_overlay, program, tiny_ckpt)


def test_program_saved_right_after_compiling_predicts_as_compiled(sim_overlay, tiny_ckpt, tmp_path):
    from flightllm_overlay.compiler import compile_model
    program = compile_model(tiny_ckpt, ctx=256)
    loaded = Program.load(program.save(tmp_path / "plain.fllm"))
    assert _predicted(sim_overlay, loaded, tiny_ckpt) == _predicted(sim_overlay, program, tiny_ckpt)
