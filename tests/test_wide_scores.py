"""Two-plane q and k (wide attention scores) on the simulated overlay: the program's structure (second planes quantised, cached and scored: hi.hi + hi.lo + lo.hi), its logits moving toward the weights-only emulation as the emulation's do, staged and on-chip prefill agreeing, split reductions, the KV cache's size, program files."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flightllm_overlay.compiler import compile_compressed, compile_quantized
from flightllm_overlay.compiler.fit import footprint
from flightllm_overlay.compiler.placement import kv_history_bytes, slot_bytes
from flightllm_overlay.compiler.opt import quantize_opt
from flightllm_overlay.compiler.quantize import quantized_from_compressed
from flightllm_overlay.compress import CompressionConfig, Emulator, compress
from flightllm_overlay.compress import config as compress_config
from flightllm_overlay.config import load_target
from flightllm_overlay.spec import isa
from prompt_runs import PROMPT, run_prompt as _run
from staged_target import staging_target

QK = ("q", "k")
QUANT, EADD = isa.MISC_OPS.index("quant"), isa.MISC_OPS.index("eadd")


@pytest.fixture(scope="module")
def models(tiny_ckpt):
    """The tiny LLaMA compressed (dense q/k, mixed 4/8-bit): plain, with q and k wide, and with
    only k wide."""
    tokens = np.random.default_rng(3).integers(3, 300, 512).tolist()
    cfg = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=512, density_qk=1.0)
    cm = compress(tiny_ckpt, tokens, cfg, progress=False)
    return [dataclasses.replace(cm, config=cm.config.but(wide_points=w))
            for w in ((), QK, ("k",))]


def _count(insns, kind, **fields):
    return sum(1 for i in insns if i.op == kind and all(i.fields.get(k, 0) == v
                                                         for k, v in fields.items()))


def test_wide_scores_quantise_cache_and_score_second_planes(models):
    """Per layer and core: the q and k heads' quant writes its residual and a second quant
    rounds it (one run: q's and k's heads sit side by side); each KV head appends and loads a
    second K plane with its scales; each attention pass scores three times (hi.hi, hi.lo,
    lo.hi) with an eadd after each extra pass.  With only k wide: two passes."""
    plain, both, k_only = models
    for name in ("prefill", "decode"):
        base, wide, konly = (compile_compressed(m, ctx=256, all_logits=True).step(name)
                             for m in models)
        for words, words_base, words_k in zip(wide.streams(), base.streams(), konly.streams()):
            insns, ref, kin = (isa.decode_stream(w) for w in (words, words_base, words_k))
            layers = plain.args.n_layers
            scores = lambda ins: sum(1 for i in ins if i.op in ("MM", "MV")          # noqa: E731
                                     and i.fields.get("dyn_n"))
            if not scores(ref):                 # a core without attention heads
                assert len(insns) == len(ref)
                continue
            residual = _count(insns, "MISC", op=QUANT, residual=1)
            assert residual >= layers and residual == _count(kin, "MISC", op=QUANT, residual=1)
            # (+1 a layer: v's heads are quantised on their own; +1: the second plane)
            assert _count(insns, "MISC", op=QUANT) == _count(ref, "MISC", op=QUANT) + 2 * residual
            st = _count(insns, "ST") - _count(ref, "ST")
            ld = _count(insns, "LD") - _count(ref, "LD")
            assert st > 0 and st % (2 * layers) == 0 and ld == st
            assert _count(kin, "ST") - _count(ref, "ST") == st       # q's plane is not cached
            assert scores(insns) == 3 * scores(ref) and scores(kin) == 2 * scores(ref)
            assert _count(insns, "MISC", op=EADD) == _count(ref, "MISC", op=EADD) + 2 * scores(ref)


def test_wide_scores_move_toward_the_weights_only_emulation(models, sim_overlay):
    """The float emulation's logits move toward the weights-only emulation (no activation
    quantisation) with q and k wide; the device's move the same way by about as much, in
    prefill and over 8 decode steps."""
    cm, cmw, _ = models
    ref = Emulator(cm, act_quant=False)
    want, want_step = ref(PROMPT), ref(PROMPT[:48])[40:48]
    dist = lambda x, y: float(np.abs(x - y).mean())  # noqa: E731
    emu = [dist(Emulator(m)(PROMPT), want) for m in (cm, cmw)]
    assert emu[1] < 0.97 * emu[0]
    (got, step), (got_w, step_w) = (_run(sim_overlay, compile_compressed(
        m, ctx=256, all_logits=True)) for m in (cm, cmw))
    ratio = dist(got_w, want) / dist(got, want)
    assert ratio < 0.97
    assert dist(step_w, want_step) < 0.97 * dist(step, want_step)
    print("emulation", emu[1] / emu[0], "device prefill", ratio)


def test_staged_and_on_chip_prefill_agree_with_wide_scores(models, sim_overlay):
    """The staged prefill (residual stream through HBM) scores the same second planes."""
    cmw = models[1]
    on_chip = _run(sim_overlay, compile_compressed(cmw, ctx=256, all_logits=True))
    staged = compile_compressed(cmw, target=staging_target(), ctx=256, all_logits=True)
    got = _run(sim_overlay, staged)
    assert np.array_equal(got[0], on_chip[0]) and np.array_equal(got[1], on_chip[1])


def test_wide_scores_with_split_reductions(models, sim_overlay):
    """With every schedule option (score buffers alternating between heads, one-pass
    quantisations) the program computes what it computes without them."""
    cmw = models[1]
    plain = _run(sim_overlay, compile_compressed(cmw, ctx=256, all_logits=True))
    split = _run(sim_overlay, compile_compressed(cmw, ctx=256, all_logits=True, schedule="all",
                                                 weight_slots=512))
    np.testing.assert_allclose(split[1], plain[1], atol=0.02 * np.abs(plain[1]).max())


def test_a_wide_k_cache_is_counted_where_it_is_placed(models, tiny_ckpt):
    """A wide k's second plane: one more INT8 row and FP32 scale per cached key, in the HBM
    footprint, in the weight buffer's history slot (so its weight slots are smaller) and in
    each KV head's regions."""
    cm, cmw, _ = models
    a, tgt = cm.args, load_target("u280")
    assert kv_history_bytes(a, 256, QK) - kv_history_bytes(a, 256) == 256 * (a.head_dim + 4)
    assert slot_bytes(tgt, a, 256, 2, QK) < slot_bytes(tgt, a, 256, 2)
    plain, wide = (footprint(quantized_from_compressed(m), tgt, 256) for m in (cm, cmw))
    assert wide.kv_cache - plain.kv_cache == a.n_layers * a.n_kv_heads * 256 * (a.head_dim + 4)
    assert wide.weights == plain.weights
    place = lambda m: compile_compressed(m, ctx=256).recipe        # noqa: E731
    assert place(cmw).wide_points == QK and place(cm).wide_points == ()


def test_a_program_file_keeps_its_wide_scores(models, tmp_path):
    """A loaded program rebuilds its other buckets from the recipe (the K planes included)."""
    from flightllm_overlay.compiler.buckets import builder_of
    from flightllm_overlay.compiler.program import Program
    program = compile_compressed(models[1], ctx=256)
    back = Program.load(program.save(tmp_path / "wide_scores.fllm"))
    assert back.recipe.wide_points == QK
    assert builder_of(back) is not None    # the replay gives the file's own streams exactly


def test_the_emulation_and_opt_take_or_refuse_wide_scores(models, tiny_opt_ckpt):
    """The emulation widens q and k on request; OPT's code generator refuses them by name."""
    from flightllm_overlay.errors import CompileError
    cm = models[0]
    assert Emulator(cm, wide=QK).wide == set(QK)
    opt = dataclasses.replace(quantize_opt(tiny_opt_ckpt, None), wide_points=QK)
    with pytest.raises(CompileError, match="cannot run"):
        compile_quantized(opt, ctx=128)


NORM_INPUTS = ("attn_in", "ffn_in")


@pytest.fixture(scope="module")
def norm_wide(models):
    """The plain model with q/k/v's and gate/up's inputs wide, and with every point wide."""
    cm = models[0]
    return [dataclasses.replace(cm, config=cm.config.but(wide_points=w))
            for w in (NORM_INPUTS, compress_config.WIDE_POINTS)]


def test_wide_norm_outputs_run_each_tile_on_both_planes(models, norm_wide):
    """A wide attn_in / ffn_in: the normed rows are quantised with their residual and the
    residual rounded into the rows after; q/k/v's and gate/up's tiles each run both planes
    (twice the MPE instructions there) and an eadd adds the second plane's outputs before
    RoPE and before SiLU."""
    for name in ("prefill", "decode"):
        base, wide = (compile_compressed(m, ctx=256, all_logits=True).step(name)
                      for m in (models[0], norm_wide[0]))
        for words, words_base in zip(wide.streams(), base.streams()):
            insns, ref = isa.decode_stream(words), isa.decode_stream(words_base)
            layers = models[0].args.n_layers
            residual = _count(insns, "MISC", op=QUANT, residual=1)
            assert residual == 2 * layers and _count(ref, "MISC", op=QUANT, residual=1) == 0
            linear = lambda ins: sum(1 for i in ins if i.op in ("MM", "MV")          # noqa: E731
                                     and not i.fields.get("dyn_n")
                                     and not i.fields.get("dyn_k"))
            assert linear(insns) > linear(ref)
            assert _count(insns, "MISC", op=EADD) > _count(ref, "MISC", op=EADD)


def test_wide_norm_outputs_and_every_point_move_toward_the_weights_only_emulation(
        models, norm_wide, sim_overlay):
    """Two planes at q/k/v's and gate/up's inputs, and at every point, bring the emulation's
    logits closer to the weights-only emulation's; the device's follow, in prefill and decode,
    and every point wide beats the linear inputs alone."""
    cm = models[0]
    ref = Emulator(cm, act_quant=False)
    want, want_step = ref(PROMPT), ref(PROMPT[:48])[40:48]
    dist = lambda x, y: float(np.abs(x - y).mean())  # noqa: E731
    base_emu = dist(Emulator(cm)(PROMPT), want)
    got, step = _run(sim_overlay, compile_compressed(cm, ctx=256, all_logits=True))
    base, base_step = dist(got, want), dist(step, want_step)
    for m in norm_wide:
        assert dist(Emulator(m)(PROMPT), want) < 0.97 * base_emu
        got_w, step_w = _run(sim_overlay, compile_compressed(m, ctx=256, all_logits=True))
        assert dist(got_w, want) < 0.97 * base and dist(step_w, want_step) < 0.97 * base_step


def test_staged_and_on_chip_prefill_agree_with_every_point_wide(norm_wide, sim_overlay):
    """The staged prefill runs the same two planes at every point (a global buffer of 240 KB
    instead of 160: the second planes' buffers; still too small for the on-chip plan)."""
    cmw = norm_wide[1]
    on_chip = compile_compressed(cmw, ctx=256, all_logits=True)
    staged = compile_compressed(cmw, target=staging_target(240 * 1024), ctx=256,
                                all_logits=True)
    residual = lambda p: _count(isa.decode_stream(p.step("prefill").streams()[0]),  # noqa: E731
                                "MISC", op=QUANT, residual=1)
    assert staged.step("prefill").rows == 128 and residual(staged) > residual(on_chip)
    on_chip = _run(sim_overlay, on_chip)
    got = _run(sim_overlay, staged)
    assert np.array_equal(got[0], on_chip[0]) and np.array_equal(got[1], on_chip[1])


def test_every_point_wide_with_split_reductions(norm_wide, sim_overlay):
    """Every schedule option (split reductions, alternating score buffers) with every point
    wide computes what the default schedule does."""
    cmw = norm_wide[1]
    plain = _run(sim_overlay, compile_compressed(cmw, ctx=256, all_logits=True))
    split = _run(sim_overlay, compile_compressed(cmw, ctx=256, all_logits=True, schedule="all",
                                                 weight_slots=512))
    np.testing.assert_allclose(split[1], plain[1], atol=0.02 * np.abs(plain[1]).max())
