"""Activation scales per group of channels (`act_group`, the ISA's `agroup`) on the simulated overlay: the program's structure, its agreement with its own float emulation (on chip, staged, with every schedule option), what the compiler refuses, and the program file's recipe."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flightllm_overlay.compiler import compile_compressed
from flightllm_overlay.compress import CompressionConfig, Emulator, compress
from flightllm_overlay.errors import CompileError
from flightllm_overlay.model import load_checkpoint
from flightllm_overlay.model.testing import make_tiny_llama
from flightllm_overlay.spec import isa
from prompt_runs import PROMPT, run_prompt as _run
from staged_target import staging_target

GROUP = 32
QUANT = isa.MISC_OPS.index("quant")


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """A tiny LLaMA whose linear inputs are whole groups of 32 (dim 96, FFN 192), compressed
    as the FlightLLM setting (q/k at 70%, mixed 4/8 bits) with activation scales per 32
    channels, and the same bytes with one scale per row."""
    ckpt = load_checkpoint(make_tiny_llama(tmp_path_factory.mktemp("tiny") / "t", seed=0,
                                           hidden_dim=192))
    tokens = np.random.default_rng(3).integers(3, 300, 512).tolist()
    cfg = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=512, act_group=GROUP)
    cm = compress(ckpt, tokens, cfg, progress=False)
    return cm


def test_the_config_takes_the_device_groups_only():
    assert CompressionConfig().act_group is None
    assert "act_group" not in CompressionConfig().to_dict()      # older files read the same
    for name in ("flightllm", "dense4", "paper", "w8a8"):
        assert CompressionConfig.preset(name).act_group == GROUP
    assert CompressionConfig.preset("flightllm-wide").act_group is None
    cfg = CompressionConfig.flightllm().but(act_group=64)
    assert CompressionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(CompileError, match="act_group"):
        CompressionConfig.flightllm().but(act_group=48)


def test_a_grouped_program_quantises_and_multiplies_per_group(grouped):
    """Every linear input's quant writes a scale per 32 channels (rows x K/32 of them) and
    every MPE on HQ reads them (`agroup`); q/k/v and the probabilities keep one scale per
    row; without act_group nothing carries the field."""
    idx = isa.ACT_GROUPS.index(GROUP)
    for name in ("prefill", "decode"):
        insns = isa.decode_stream(compile_compressed(grouped, ctx=256, all_logits=True)
                                  .step(name).streams()[0])
        quants = [i for i in insns if i.op == "MISC" and i.fields.get("op") == QUANT]
        assert quants and {i.fields.get("agroup", 0) for i in quants} == {0, idx}
        assert all(i.fields["k"] % GROUP == 0 for i in quants if i.fields.get("agroup"))
        mpes = [i for i in insns if i.op in ("MM", "MV")]
        assert {i.fields.get("agroup", 0) for i in mpes} == {0, idx}   # attention: per row
        per_row = compile_compressed(dataclasses.replace(grouped, config=grouped.config.but(
            act_group=None)), ctx=256).step(name).streams()[0]
        assert not any(i.fields.get("agroup") for i in isa.decode_stream(per_row))


def test_a_grouped_program_matches_its_float_emulation(grouped, sim_overlay):
    """The device's logits are as close to the emulation with per-group scales as the per-row
    program's are to its own (tests/test_compressed_overlay.py's tolerances), in prefill and
    decode, and closer to it than to the per-row emulation."""
    got, step = _run(sim_overlay, compile_compressed(grouped, ctx=256, all_logits=True))
    emu, row = Emulator(grouped), Emulator(grouped, act_group=0)
    want, want_row = emu(PROMPT), row(PROMPT)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    rel = np.abs(got - want).max(1) / np.abs(want).max(1)
    assert cos.min() > 0.98 and np.median(cos) > 0.995 and np.median(rel) < 0.1
    dist = lambda x, y: float(np.abs(x - y).mean())  # noqa: E731
    assert dist(got, want) < dist(got, want_row)
    want_step = emu(PROMPT[:48])[40:48]
    assert float(np.median((step * want_step).sum(1) / np.linalg.norm(step, axis=1)
                           / np.linalg.norm(want_step, axis=1))) > 0.995


def test_staged_prefill_and_split_reductions_compute_the_same_groups(grouped, sim_overlay):
    """The staged prefill (row blocks through HBM) and every schedule option (split
    reductions are left out: their one-pass quant has a row maximum, not a group's) give the
    on-chip program's results."""
    on_chip = _run(sim_overlay, compile_compressed(grouped, ctx=256, all_logits=True))
    staged = compile_compressed(grouped, target=staging_target(), ctx=256, all_logits=True)
    assert any(i.fields.get("agroup") for i in isa.decode_stream(staged.step("prefill").streams()[0]))
    got = _run(sim_overlay, staged)
    assert np.array_equal(got[0], on_chip[0]) and np.array_equal(got[1], on_chip[1])
    split = _run(sim_overlay, compile_compressed(grouped, ctx=256, all_logits=True,
                                                 schedule="all"))
    np.testing.assert_allclose(split[1], on_chip[1], atol=0.02 * np.abs(on_chip[1]).max())


def test_a_model_that_is_not_whole_groups_runs_one_scale_per_row(tiny_ckpt):
    """The standard tiny LLaMA's FFN is 200 wide: compressed with groups of 32 asked for, it runs
    one scale per row, and the report says why; asked for explicitly, the compiler refuses."""
    from flightllm_overlay.compiler import compile_quantized
    from flightllm_overlay.compiler.quantize import quantized_from_compressed
    cm = compress(tiny_ckpt, None, CompressionConfig.flightllm().but(avg_bits=5.5,
                                                                     calib_tokens=128),
                  progress=False)
    assert cm.config.act_group == GROUP and cm.act_group is None
    assert "groups of 32 asked for, but the linear inputs' widths (96, 96, 200)" in cm.report()
    words = compile_compressed(cm, ctx=64).step("decode").streams()[0]
    assert not any(i.fields.get("agroup") for i in isa.decode_stream(words))
    qm = dataclasses.replace(quantized_from_compressed(cm), act_group=GROUP)
    with pytest.raises(CompileError, match="whole groups"):
        compile_quantized(qm, ctx=64)


def test_wide_points_keep_one_scale_per_row_beside_groups(grouped, sim_overlay):
    """With wide points too, those linear inputs run two per-row planes (their quants and MPEs
    without agroup) and the others groups; the device follows its emulation."""
    cm = dataclasses.replace(grouped, config=grouped.config.but(wide_points=("ffn_mid",)))
    insns = isa.decode_stream(compile_compressed(cm, ctx=256).step("decode").streams()[0])
    quants = [i for i in insns if i.op == "MISC" and i.fields.get("op") == QUANT]
    assert all(not i.fields.get("agroup") for i in quants if i.fields.get("residual"))
    assert any(i.fields.get("agroup") for i in quants)
    got, _ = _run(sim_overlay, compile_compressed(cm, ctx=256, all_logits=True))
    want = Emulator(cm)(PROMPT)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.98 and np.median(cos) > 0.995


def test_a_program_file_keeps_its_activation_groups(grouped, tmp_path):
    """A loaded program compiles its other buckets from the placement recipe, which carries
    the group (files without the key read as one scale per row)."""
    from flightllm_overlay.compiler.buckets import builder_of
    from flightllm_overlay.compiler.program import Program
    back = Program.load(compile_compressed(grouped, ctx=256).save(tmp_path / "g.fllm"))
    assert back.recipe.act_group == GROUP
    assert builder_of(back) is not None


def test_the_hls_kernels_compute_the_grouped_program_bit_for_bit(csim, tmp_path, grouped):
    """The HLS C simulation (the quant's per-group scales, the MPE feeder's pass per group)
    and the Python simulator agree on every byte of the grouped program's prefill, decode and
    a second prefill chunk (sparse q/k, mixed 4/8-bit weights)."""
    from hls_harness import check_model_steps
    check_model_steps(csim, tmp_path, compile_compressed(grouped, ctx=64))
