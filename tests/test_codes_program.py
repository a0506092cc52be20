"""Compressed programs whose dense low-bit linears run on exact group arithmetic (`PackedWeight.exact`, the ISA's `wcodes`): the compiled loads and MPE operands, agreement with the float emulation on the simulated overlay, the program file's recipe, and the HLS C simulation."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.compiler import compile_compressed
from flightllm_overlay.compress import CompressionConfig, Emulator, compress
from flightllm_overlay.model import load_checkpoint
from flightllm_overlay.model.testing import make_tiny_llama
from flightllm_overlay.spec import isa
from prompt_runs import PROMPT, run_prompt as _run


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny LLaMA with whole groups of 32 at every linear input (activation groups on),
    compressed as the FlightLLM setting with 3- and 4-bit linears beside 8-bit ones and
    sparse q/k; (on the INT8 path, on exact group arithmetic: the preset)."""
    ckpt = load_checkpoint(make_tiny_llama(tmp_path_factory.mktemp("tiny") / "t", seed=0,
                                           hidden_dim=192))
    tokens = np.random.default_rng(3).integers(3, 300, 512).tolist()
    cfg = CompressionConfig.flightllm().but(avg_bits=4.5, calib_tokens=512)
    assert cfg.exact_groups
    return (compress(ckpt, tokens, cfg.but(exact_groups=False), progress=False),
            compress(ckpt, tokens, cfg, progress=False))


def _mpe_and_loads(program, step):
    insns = isa.decode_stream(program.step(step).streams()[0])
    return ([i for i in insns if i.op in ("MM", "MV")],
            [i for i in insns if i.op == "LD" and i.fields.get("wfmt")])


def test_exact_linears_load_codes_and_multiply_them_by_group(models):
    """Each exact tile's LD passes codes (wcodes=1) and its MPE reads rows of codes and
    parameters (wcodes = the group's index + 1, w_stride k + 4 k / 32); sparse and 8-bit
    tiles and the INT8-target model have none; the exact weights make the smaller errors
    against the float weights."""
    cm, ex = models
    assert any(pw.exact for layer in ex.layers for pw in layer.values())
    assert cm.act_group == 32
    for step in ("prefill", "decode"):
        mpes, loads = _mpe_and_loads(compile_compressed(ex, ctx=256), step)
        coded = [i for i in mpes if i.fields.get("wcodes")]
        assert coded and all(i.fields["wcodes"] == isa.WEIGHT_GROUPS.index(32) + 1
                             and i.fields["w_stride"] == i.fields["k"] * 9 // 8 for i in coded)
        assert all(not i.fields.get("sparse") for i in coded)
        assert any(i.fields.get("wcodes") for i in loads)
        assert all(not i.fields.get("wcodes") for i in loads if i.fields.get("sparse"))
        mpes0, loads0 = _mpe_and_loads(compile_compressed(cm, ctx=256), step)
        assert not any(i.fields.get("wcodes") for i in mpes0 + loads0)


def test_the_exact_program_follows_its_emulation(models, sim_overlay):
    """On the simulated overlay the exact program agrees with the float emulation of the same
    weights (`PackedWeight.float()` unrounded) as closely as the INT8-target program with
    its own (the W8A8 end-to-end tolerances of FP16 on-chip arithmetic); and each program is
    nearer its own weights' emulation than the other's (measured 6-8% nearer: the device's
    FP16 roundings are most of either distance)."""
    cm, ex = models
    got, _ = _run(sim_overlay, compile_compressed(ex, ctx=256, all_logits=True))
    want = Emulator(ex)(PROMPT)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.98 and np.median(cos) > 0.995
    got0, _ = _run(sim_overlay, compile_compressed(cm, ctx=256, all_logits=True))
    want0 = Emulator(cm)(PROMPT)
    dist = (lambda a, b: float(np.abs(a - b).mean()))
    assert dist(got, want) < 0.98 * dist(got, want0)
    assert dist(got0, want0) < 0.98 * dist(got0, want)


def test_a_program_file_keeps_the_exact_formats(models, tmp_path):
    """The placement recipe records exact weights ("packed/<bits>/32/exact"), and a loaded
    program re-runs its placement from them (its buckets compile as compiled)."""
    from flightllm_overlay.compiler.buckets import builder_of
    from flightllm_overlay.compiler.program import Program
    _, ex = models
    program = compile_compressed(ex, ctx=256)
    back = Program.load(program.save(tmp_path / "x.fllm"))
    texts = {fmt.text for layer in back.recipe.layers for fmt in layer.values()}
    assert any(t.endswith("/32/exact") for t in texts), texts
    assert builder_of(back) is not None


def test_the_hls_kernels_compute_the_exact_program_bit_for_bit(csim, tmp_path, models):
    """The HLS C simulation and the Python simulator agree on every byte of the exact program's
    prefill, decode and a second prefill chunk."""
    from hls_harness import check_model_steps
    check_model_steps(csim, tmp_path, compile_compressed(models[1], ctx=64))
