"""Compressed checkpoints on the simulated overlay: the compiled program matches its own float emulation
(the same packed weights, INT8 activations, block-sparse prefill attention) and round-trips through a file."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.compiler import compile_compressed
from flightllm_overlay.compress import CompressedModel, CompressionConfig, Emulator, compress
from flightllm_overlay.runtime import Session

COSINE_MIN, REL_MAX = 0.995, 0.12          # the W8A8 end-to-end test's tolerances


@pytest.fixture(scope="module")
def compressed(tiny_ckpt):
    rng = np.random.default_rng(3)
    tokens = rng.integers(3, 300, 512).tolist()
    cfg = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=512, attn_mass=0.9)
    return compress(tiny_ckpt, tokens, cfg, progress=False)


def close(got, want):
    cos = float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))
    return cos >= COSINE_MIN and np.abs(got - want).max() <= REL_MAX * np.abs(want).max()


def test_compressed_program_matches_its_float_emulation(compressed, sim_overlay):
    cm = compressed
    assert cm.info["attn_pattern"] and any(w for layer in cm.info["attn_pattern"] for _, w in layer)
    program = compile_compressed(cm, ctx=256, all_logits=True)
    assert program.meta["sparse"] and len(program.meta["weight_bits"]) >= 2
    prompt = np.random.default_rng(4).integers(3, 300, 200).tolist()
    emu = Emulator(cm)
    want = emu(prompt)
    with Session(sim_overlay, program) as s:
        got = np.concatenate([s.run("prefill", prompt[:128], 0), s.run("prefill", prompt[128:], 128)])
        stats = s.stats
        s.run("prefill", prompt[:40], 0)                  # inside the first 64-token block,
        step = s.run("decode", [9], 40)[-1]               # where any pattern keeps every key
    # FP16 on-chip arithmetic over 200 random tokens of a random model: measured cosine
    # min 0.986 / median 0.998, max error median 0.067 of the row maximum (as far as the dense
    # W8A8 program is from its reference on such prompts, tests/test_block_sparse_attention.py).
    # With the dense linears on exact group arithmetic (the preset since the fifth session) the
    # median is the same (0.9978) and one position, 166, reads 0.972: the position that is the
    # worst for every variant of these weights (0.9845 on the INT8 path, 0.9828 with the same
    # codes on it), where this random model amplifies the FP16 roundings most.
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    rel = np.abs(got - want).max(1) / np.abs(want).max(1)
    assert cos.min() > 0.96 and (cos < 0.98).sum() <= 2
    assert np.median(cos) > 0.995 and np.median(rel) < 0.1
    assert close(got[5], want[5])                      # short prefixes: the W8A8 tolerances
    assert close(step, emu(prompt[:40] + [9])[-1])
    assert stats.macs < stats.fixed_chain_macs         # the sparse chain skipped pruned weights


def test_compressed_checkpoint_compiles_after_a_round_trip(compressed, tmp_path):
    path = compressed.save(tmp_path / "tiny.fllmc")
    back = CompressedModel.load(path)
    a = compile_compressed(compressed, ctx=64)
    b = compile_compressed(back, ctx=64)
    assert all(np.array_equal(a.steps[k].image, b.steps[k].image) for k in a.steps)
    assert all(np.array_equal(a.channel_static[c], b.channel_static[c]) for c in a.channel_static)
