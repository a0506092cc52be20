"""Shape-only compilation: real instruction streams and layout without weights, for the timing
model and storage accounting of models not at hand."""
from __future__ import annotations

import pytest

from flightllm_overlay.compiler import compile_model, compile_shapes
from flightllm_overlay.errors import CompileError, DeviceError
from flightllm_overlay.model.args import ModelArgs


def test_shape_only_streams_equal_the_real_compile(tiny_ckpt):
    real = compile_model(tiny_ckpt, ctx=64, smooth=False)
    shapes = compile_shapes(tiny_ckpt.args, ctx=64)
    assert shapes.meta["shape_only"] and not shapes.channel_static
    assert shapes.channel_size == real.channel_size
    for name in ("prefill", "decode"):
        assert (shapes.steps[name].image == real.steps[name].image).all()


def test_big_model_prefill_keeps_128_rows_staged_or_falls_back_to_fewer():
    """LLaMA stages a prefill that does not fit on chip through HBM at the MM's 128 rows;
    OPT, whose layer body is not staged, runs fewer rows per launch instead."""
    llama = compile_shapes(ModelArgs.from_name("llama2-7b").replace(n_layers=2))
    assert llama.rows == 128 and llama.steps["prefill"].rows == 128
    opt = compile_shapes(ModelArgs.from_name("opt-6.7b").replace(n_layers=2))
    assert opt.rows < 128 and opt.steps["prefill"].rows == opt.rows


def test_llama2_7b_at_8_bits_does_not_fit_24_pseudo_channels():
    # before any placement, with the numbers: bytes needed, bytes owned, cards it would take
    with pytest.raises(CompileError, match=r"needs 6\.\d\d GiB .* own 6\.00 GiB; it fits one card "
                                           r"with all 32 pseudo-channels"):
        compile_shapes(ModelArgs.from_name("llama2-7b"))


def test_llama2_70b_says_how_many_cards_it_would_take():
    from flightllm_overlay.compiler.fit import ModelTooLargeError
    with pytest.raises(ModelTooLargeError, match=r"needs 34\.\d\d GiB .* 5 cards of 8 GiB"):
        compile_shapes(ModelArgs.from_name("llama2-70b"), weight_bits=4)


def test_a_shape_only_program_cannot_run(sim_overlay, tiny_ckpt):
    from flightllm_overlay.runtime import Session
    with pytest.raises(DeviceError, match="shapes alone"):
        Session(sim_overlay, compile_shapes(tiny_ckpt.args, ctx=64))
