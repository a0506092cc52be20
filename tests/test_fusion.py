"""Always-on-chip decode: the fused program and the unfused ablation (every intermediate through
HBM) give identical tokens, and the fused one moves fewer HBM bytes and is predicted faster."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.compiler import compile_model
from flightllm_overlay.runtime import Generator, Session
from flightllm_overlay.sim.timing import TimingModel

PROMPT = [5, 17, 42, 3, 99, 120, 7, 8]


@pytest.fixture(scope="module")
def both(tiny_ckpt, sim_overlay):
    fused = Session(sim_overlay, compile_model(tiny_ckpt, ctx=64, fused=True))
    unfused = Session(sim_overlay, compile_model(tiny_ckpt, ctx=64, fused=False))
    yield fused, unfused
    fused.close()
    unfused.close()


def test_identical_logits_and_tokens_fewer_hbm_bytes(both, tiny_ckpt):
    fused, unfused = both
    np.testing.assert_array_equal(fused.run("prefill", PROMPT, 0), unfused.run("prefill", PROMPT, 0))
    a = Generator(fused, tiny_ckpt.tokenizer)
    b = Generator(unfused, tiny_ckpt.tokenizer)
    ta = [t.id for t in a.generate(PROMPT, 6, stop_ids=())]
    tb = [t.id for t in b.generate(PROMPT, 6, stop_ids=())]
    assert ta == tb
    per_token_a = a.stats.hbm_bytes / a.stats.generated_tokens
    per_token_b = b.stats.hbm_bytes / b.stats.generated_tokens
    assert per_token_a < per_token_b


def test_unfused_decode_is_predicted_slower(both, sim_overlay):
    fused, unfused = both
    tm = TimingModel(sim_overlay.target)
    f = tm.schedule_image(fused.image("decode", 20)[0].image)
    u = tm.schedule_image(unfused.image("decode", 20)[0].image)
    assert u.cycles > f.cycles
    assert sum(u.hbm_bytes.values()) > sum(f.hbm_bytes.values())
