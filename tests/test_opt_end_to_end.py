"""What only OPT has: its MISC streams, OPT smoothing, shape-only OPT (6.7B), bit-equal HLS C simulation
(accuracy on the simulated overlay, for every family: test_families_end_to_end.py)."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.spec import isa
from flightllm_overlay.compiler import BucketTable, compile_model, compile_shapes
from flightllm_overlay.errors import CompileError
from flightllm_overlay.model import ModelArgs

# Rows of a prefill step past `len` must stay finite too (stale position rows once fed back and
# overflowed to inf/NaN there): any numpy overflow or invalid-cast warning fails a test here.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

PROMPT = [5, 17, 42, 3, 99, 120, 7, 8, 9, 10, 200, 31]


@pytest.fixture(scope="module")
def opt_program(tiny_opt_ckpt):
    return compile_model(tiny_opt_ckpt, ctx=256)


def test_streams_are_opt_streams(opt_program):
    """LayerNorm, ReLU, bias eadds and an at_pos position load; no RMSNorm, RoPE or SiLU."""
    insns = [i for step in opt_program.steps.values() for off, n in isa.image_table(step.image)
             for i in isa.decode_stream(step.image[off:off + n])]
    ops = {isa.MISC_OPS[i["op"]] for i in insns if i.op == "MISC"}
    assert {"layernorm", "relu", "eadd", "softmax", "quant"} <= ops
    assert not ops & {"rmsnorm", "rope", "silu"}
    assert any(i.op == "LD" and isa.DYN_MODES[i["dyn"]] == "at_pos" for i in insns)


def test_smoothing_keeps_the_float_function(tiny_opt_ckpt):
    """Smoothing folds its scales into LayerNorms, fc1's rows and biases: the FFN computes the same."""
    from flightllm_overlay.compiler.opt import calibration_stats, quantize_opt, smooth_layer
    a = tiny_opt_ckpt.args
    w = {k: v.numpy().copy() for k, v in tiny_opt_ckpt.weights.items()}
    p = "model.decoder.layers.0."
    names = {"wq": "self_attn.q_proj", "wk": "self_attn.k_proj", "wv": "self_attn.v_proj",
             "wo": "self_attn.out_proj", "w_fc1": "fc1", "w_fc2": "fc2"}
    lin = {k: w[p + n + ".weight"] for k, n in names.items()}
    bias = {k: w[p + n + ".bias"] for k, n in names.items()}
    ln = [tuple(w[p + m + x] for x in (".weight", ".bias")) for m in ("self_attn_layer_norm", "final_layer_norm")]
    st = calibration_stats(tiny_opt_ckpt, PROMPT)[0]
    lin2, bias2, ln1, ln2 = smooth_layer(lin, bias, *ln, st)
    assert not np.allclose(lin2["w_fc2"], lin["w_fc2"])
    x = np.random.default_rng(0).standard_normal((4, a.dim)).astype(np.float32)

    def ffn(lin, bias, ln2):
        h = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + a.norm_eps) * ln2[0] + ln2[1]
        return np.maximum(h @ lin["w_fc1"].T + bias["w_fc1"], 0) @ lin["w_fc2"].T + bias["w_fc2"]
    np.testing.assert_allclose(ffn(lin2, bias2, ln2), ffn(lin, bias, ln[1]), rtol=1e-4, atol=1e-4)
    assert quantize_opt(tiny_opt_ckpt, PROMPT).smoothing["tokens"] == len(PROMPT)


def test_shape_only_streams_equal_the_real_compile(tiny_opt_ckpt):
    real = compile_model(tiny_opt_ckpt, ctx=64, smooth=False)
    shapes = compile_shapes(tiny_opt_ckpt.args, ctx=64)
    assert shapes.meta["shape_only"] and shapes.channel_size == real.channel_size
    for name in ("prefill", "decode"):
        assert (shapes.steps[name].image == real.steps[name].image).all()


def test_opt_6_7b_compiles_from_its_shapes_with_4_bit_weights():
    """Every linear of OPT-6.7B placed at 4 bits (the LM head at 8) on the 24 pseudo-channels."""
    a = ModelArgs.from_name("opt-6.7b")
    prog = compile_shapes(a, weight_bits=4)
    assert prog.meta["shape_only"] and prog.meta["weight_bits"] == [4] and prog.ctx == 2048
    per_layer = 4 * a.dim * a.dim + 2 * a.dim * a.hidden_dim
    int4 = a.n_layers * per_layer * (0.5 + 4 / 128) + a.vocab_size * a.dim      # codes + (M, B), LM head
    assert int4 < sum(prog.channel_size.values()) < 1.25 * int4 + 2 ** 30         # + KV cache, tables
    with pytest.raises(CompileError, match="HBM pseudo-channel"):
        compile_shapes(a.replace(n_layers=48), weight_bits=4)


def test_tiny_opt_steps_are_bit_exact_in_hls_csim(csim, tmp_path, tiny_opt_ckpt):
    """The HLS kernels (layernorm, relu, bias eadds included) run an OPT prefill and decode
    bit for bit like the Python simulator."""
    from hls_harness import TARGET, check_image
    from flightllm_overlay.sim.functional import FunctionalSimulator
    p = compile_model(tiny_opt_ckpt, ctx=64)
    channels = {}
    for ch, size in p.channel_size.items():
        channels[ch] = np.zeros(size, np.uint8)
        if ch in p.channel_static:
            channels[ch][:p.channel_static[ch].size] = p.channel_static[ch]
    sim = FunctionalSimulator(TARGET)
    for kind, ids, pos in (("prefill", PROMPT, 0), ("decode", [11], len(PROMPT))):
        step, _ = BucketTable(p, TARGET).step(kind, pos + len(ids))
        rows = np.zeros((p.rows, p.dim), np.float16)
        rows[:len(ids)] = p.embedding[np.asarray(ids)]
        for io in p.io:
            raw = rows.view(np.uint8).reshape(-1)
            channels[io.input_channel][io.input_offset:io.input_offset + raw.size] = raw
        py, cc = check_image(csim, tmp_path, step.image, channels, pos, len(ids), sim=sim,
                             what=f"OPT {kind} at {pos}")
        io = p.io[0]
        logits = cc.channels[io.logits_channel][io.logits_offset:io.logits_offset + 2 * 16].view(np.float16)
        assert np.isfinite(logits).all() and np.abs(logits).max() > 0.1
        channels = cc.channels
