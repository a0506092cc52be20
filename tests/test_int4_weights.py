"""4-bit weights through the LD dequantisation unit: the format round-trips, the unit produces
INT8 within +-120, and a W4A8 tiny model on the simulated overlay matches its own float emulation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flightllm_overlay.compiler import compile_model
from flightllm_overlay.compiler.quantize import Int4Weight
from flightllm_overlay.compress.smooth import HF_NAMES as _HF, LINEARS
from flightllm_overlay.model.checkpoint import Checkpoint
from flightllm_overlay.model.llama import Transformer
from flightllm_overlay.runtime import Session
from flightllm_overlay.sim import units as U


def test_int4_format_round_trip():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (40, 96)).astype(np.float32)
    w[3] = 0                                            # an all-zero row stays exact
    blob = U.quantize_weight_int4(w)
    assert len(blob) == U.int4_tile_bytes(40, 96)
    w8, scales = U.dequant_int4(np.frombuffer(blob, np.uint8), 40, 96)
    assert np.abs(w8.astype(int)).max() <= 120 and w8.dtype == np.int8
    back = U.int4_float(np.frombuffer(blob, np.uint8), 40, 96)
    assert np.all(back[3] == 0)
    err = np.abs(back - w).reshape(40, 3, 32).max(-1)
    span = (np.maximum(w.reshape(40, 3, 32).max(-1), 0) - np.minimum(w.reshape(40, 3, 32).min(-1), 0))
    assert np.all(err <= span / 15 * 8 / 2 + 1e-7)      # half a (multiplied) step at most
    assert np.linalg.norm(back - w) / np.linalg.norm(w) < 0.12
    sl = Int4Weight.quantize(w)[5:9]
    np.testing.assert_array_equal(U.int4_float(sl.blob(), 4, 96), back[5:9])


def _emulated(ckpt):
    """The same checkpoint with every linear weight replaced by what its int4 tile holds."""
    w = dict(ckpt.weights)
    for i in range(ckpt.args.n_layers):
        for k in LINEARS:
            name = f"model.layers.{i}.{_HF[k]}.weight"
            if w[name].shape[1] % U.INT4_GROUP:           # the compiler keeps these INT8
                continue
            q = Int4Weight.quantize(w[name].float().numpy())
            w[name] = torch.from_numpy(U.int4_float(q.blob(), *q.shape))
    return Checkpoint(ckpt.args, w, ckpt.tokenizer, ckpt.source)


def test_w4a8_program_matches_its_float_emulation(tiny_ckpt, sim_overlay):
    prog = compile_model(tiny_ckpt, ctx=64, smooth=False, weight_bits=4)
    assert prog.meta["weight_bits"] == 4
    w8_bytes = compile_model(tiny_ckpt, ctx=64, smooth=False).weight_bytes
    assert prog.weight_bytes < 0.8 * w8_bytes           # tiny: INT8 lm_head and padding dilute it
    ref = Transformer.from_checkpoint(_emulated(tiny_ckpt))
    prompt = [5, 17, 42, 3, 99, 120, 7, 8]
    want = ref.forward(prompt, 0).numpy()[-1]
    with Session(sim_overlay, prog) as s:
        got = s.run("prefill", prompt, 0)[-1]
        got2 = s.run("decode", [11], len(prompt))[-1]
    want2 = ref.forward([11], len(prompt)).numpy()[-1]
    for g, w in ((got, want), (got2, want2)):
        cos = float(g @ w / np.linalg.norm(g) / np.linalg.norm(w))
        assert cos > 0.995 and np.abs(g - w).max() < 0.12 * np.abs(w).max()


def test_dequantising_load_is_illegal_outside_the_weight_buffer():
    from flightllm_overlay.errors import IllegalInstructionError
    from flightllm_overlay.isa import Instruction, encode
    with pytest.raises(IllegalInstructionError, match="dequantising"):
        encode(Instruction("LD", buf="gbuf", wfmt="int4", wk=64, rows=2, row_bytes=80))
    with pytest.raises(IllegalInstructionError, match="multiple of 32"):
        encode(Instruction("LD", buf="wbuf", wfmt="int4", wk=48, rows=2, row_bytes=80))
