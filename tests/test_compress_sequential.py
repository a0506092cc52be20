"""Sequential calibration: layers packed in order, each linear's Hessian from the partly compressed model."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.compress import CompressionConfig, compress
from flightllm_overlay.compress.calibrate import INPUT_OF, collect
from flightllm_overlay.compress.sequential import GROUPS, pack_in_order
from flightllm_overlay.compress.smooth import float_layers

TOKENS = np.random.default_rng(3).integers(3, 300, 300).tolist()     # two windows, one partial


def test_the_stream_unchanged_gives_the_one_pass_statistics(tiny_ckpt):
    """Packing nothing (each group's weights handed back as they were) leaves the model the float
    one: every group's statistics are `collect`'s, in the order q/k/v, o, gate/up, down."""
    layers = float_layers(tiny_ckpt)
    want = collect(tiny_ckpt, layers, TOKENS, progress=False)
    seen = []

    def pack(i, names, st):
        seen.append((i, tuple(names)))
        group = INPUT_OF[names[0]]
        assert {INPUT_OF[k] for k in names} == {group}
        assert st.tokens == len(TOKENS)
        np.testing.assert_allclose(st.hessian, want[i][group].hessian, rtol=1e-6,
                                   atol=1e-9 * np.abs(want[i][group].hessian).max())
        return {k: layers[i][0][k] for k in names}

    pack_in_order(tiny_ckpt, layers, TOKENS, pack, progress=False)
    order = [g for g, _ in GROUPS]
    assert [(i, INPUT_OF[n[0]]) for i, n in seen] == [(i, g) for i in range(len(layers))
                                                       for g in order]


def test_later_groups_and_layers_see_the_weights_packed_before_them(tiny_ckpt):
    """A packed o_proj of layer 0 (here halved) changes the statistics of gate/up's and down's
    inputs in layer 0 and of every group of layer 1, not those before it."""
    layers = float_layers(tiny_ckpt)
    want = collect(tiny_ckpt, layers, TOKENS, progress=False)
    moved = {}

    def pack(i, names, st):
        g = INPUT_OF[names[0]]
        ref = want[i][g].hessian
        moved[i, g] = float(np.abs(st.hessian - ref).max() / np.abs(ref).max())
        return {k: layers[i][0][k] * (0.5 if (i, k) == (0, "wo") else 1.0) for k in names}

    pack_in_order(tiny_ckpt, layers, TOKENS, pack, progress=False)
    assert moved[0, "qkv"] < 1e-6 and moved[0, "o"] < 1e-6
    for key in ((0, "gate_up"), (0, "down"), (1, "qkv"), (1, "o"), (1, "gate_up")):
        assert moved[key] > 1e-3, (key, moved)


def test_the_pipeline_packs_in_order_when_asked(tiny_ckpt):
    cfg = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=256, sequential=True)
    a = compress(tiny_ckpt, TOKENS, cfg, progress=False)
    b = compress(tiny_ckpt, TOKENS, cfg.but(sequential=False), progress=False)
    again = compress(tiny_ckpt, TOKENS, cfg, progress=False)
    # the masks and formats are chosen on the float model either way; the codes differ
    assert all(np.array_equal(x.mask, y.mask) and x.bits == y.bits
               for (_, _, x), (_, _, y) in zip(a.linears(), b.linears()))
    assert any(not np.array_equal(x.q, y.q) for (_, _, x), (_, _, y) in zip(a.linears(), b.linears()))
    assert all(np.array_equal(x.q, y.q) for (_, _, x), (_, _, y) in zip(a.linears(), again.linears()))
    assert "calibration: 256 tokens; error feedback layer by layer" in a.report()
    assert "calibration: 256 tokens; error feedback on the float model's inputs" in b.report()


@pytest.mark.parametrize("flag", [True, False])
def test_sequential_round_trips_through_a_checkpoint(tiny_ckpt, tmp_path, flag):
    from flightllm_overlay.compress import CompressedModel
    cfg = CompressionConfig.w8a8().but(calib_tokens=64, sequential=flag)
    cm = compress(tiny_ckpt, TOKENS, cfg, progress=False)
    assert CompressedModel.load(cm.save(tmp_path / "m.safetensors")).config.sequential is flag
