"""Packed weights end to end: low-bit and N:16-sparse tiles through the LD's dequantisation unit and the
sparse MPE on the simulated overlay match their float emulation; tiles, counters and errors."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from flightllm_overlay.compiler import compile_model, compile_quantized
from flightllm_overlay.compiler.quantize import QuantizedModel
from flightllm_overlay.compress.smooth import HF_NAMES, float_layers, tensor
from flightllm_overlay.errors import CompileError
from flightllm_overlay.model.checkpoint import Checkpoint
from flightllm_overlay.model.llama import Transformer
from flightllm_overlay.runtime import Session
from flightllm_overlay.spec import wformat as WF
from flightllm_overlay.spec.arithmetic import quantize_weight

PROMPT = [5, 17, 42, 3, 99, 120, 7, 8, 64, 33, 2, 250]


def nm_mask(w, block_n):
    """Keep, in each row of each 16x16 block, the block's N largest-magnitude weights."""
    r, k = w.shape
    blocks = np.abs(w).reshape(r // 16, 16, k // 16, 16).transpose(0, 2, 1, 3)
    rank = np.argsort(np.argsort(-blocks, axis=-1, kind="stable"), axis=-1)
    keep = rank < block_n[:, :, None, None]
    return keep.transpose(0, 2, 1, 3).reshape(r, k)


#: linear -> (bits, group, density): sparse Q/K/O, mixed widths elsewhere (the tiny model's FFN
#: hidden width, 200, is not a whole number of 16-blocks, so gate/up/down stay dense).
MIXED = {"wq": (4, 16, 0.7), "wk": (8, 32, 0.5), "wv": (3, 32, 1.0), "wo": (2, 16, 0.3),
         "w_gate": (4, 32, 1.0), "w_up": (8, 32, 1.0), "w_down": (8, 32, 1.0)}


def packed_model(ckpt, spec):
    """(QuantizedModel with PackedWeights per `spec`, checkpoint of their float emulation)."""
    a, W = ckpt.args, ckpt.weights
    layers, emul = [], dict(W)
    for i, (lin, an, fn) in enumerate(float_layers(ckpt)):
        layer = {"attn_norm": an.astype(np.float16), "ffn_norm": fn.astype(np.float16)}
        for name, w in lin.items():
            bits, group, density = spec[name]
            block_n = WF.synthetic_codes(*w.shape, density)
            mask = None if block_n is None else nm_mask(w, block_n)
            pw = WF.quantize(w, bits, group, mask, block_n)
            layer[name] = (pw, None)
            emul[f"model.layers.{i}.{HF_NAMES[name]}.weight"] = torch.from_numpy(pw.float())
        layers.append(layer)
    emb = tensor(W, "model.embed_tokens.weight")
    head = tensor(W, "lm_head.weight") if "lm_head.weight" in W else emb
    q, s = quantize_weight(head)
    emul["lm_head.weight"] = torch.from_numpy(q.astype(np.float32) * s[:, None])
    qm = QuantizedModel(args=a, layers=layers, norm=tensor(W, "model.norm.weight").astype(np.float16),
                        lm_head=(q, s), embedding=emb.astype(np.float16))
    return qm, Checkpoint(a, emul, ckpt.tokenizer, ckpt.source)


def close(got, want):
    cos = float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))
    return cos > 0.995 and np.abs(got - want).max() < 0.12 * np.abs(want).max()


def run_both(program, emul_ckpt, sim_overlay):
    ref = Transformer.from_checkpoint(emul_ckpt)
    want = [ref.forward(PROMPT, 0).numpy()[-1], ref.forward([11], len(PROMPT)).numpy()[-1]]
    with Session(sim_overlay, program) as s:
        got = [s.run("prefill", PROMPT, 0)[-1], s.run("decode", [11], len(PROMPT))[-1]]
        stats = s.stats
    return got, want, stats


def test_mixed_precision_sparse_model_matches_its_float_emulation(tiny_ckpt, sim_overlay):
    qm, emul = packed_model(tiny_ckpt, MIXED)
    program = compile_quantized(qm, ctx=64)
    assert program.meta["weight_bits"] == [2, 3, 4, 8] and program.meta["sparse"]
    got, want, stats = run_both(program, emul, sim_overlay)
    for g, w in zip(got, want):
        assert close(g, w)
    # the sparse operands really are sparse on the device: kept-weight MACs < dense MAC slots
    assert 0 < stats.macs < stats.fixed_chain_macs


def test_w4a8_program_matches_its_float_emulation_and_is_smaller(tiny_ckpt, sim_overlay):
    prog = compile_model(tiny_ckpt, ctx=64, smooth=False, weight_bits=4)
    assert prog.meta["weight_bits"] == [4, 8] and not prog.meta["sparse"]
    # (tiny: the INT8 lm_head, INT8 w_down and the stripe padding of small tiles dilute it)
    assert prog.weight_bytes < 0.85 * compile_model(tiny_ckpt, ctx=64, smooth=False).weight_bytes
    emul = dict(tiny_ckpt.weights)
    for i, (lin, _, _) in enumerate(float_layers(tiny_ckpt)):
        for name, w in lin.items():           # K not whole groups of 32 (w_down: 200) stays INT8
            if w.shape[1] % 32:
                q, s = quantize_weight(w)
                emul_w = q.astype(np.float32) * s[:, None]
            else:
                emul_w = WF.quantize(w, 4, 32).float()
            emul[f"model.layers.{i}.{HF_NAMES[name]}.weight"] = torch.from_numpy(emul_w)
    got, want, stats = run_both(prog, Checkpoint(tiny_ckpt.args, emul, None, None), sim_overlay)
    for g, w in zip(got, want):
        assert close(g, w)
    assert stats.macs == stats.fixed_chain_macs          # dense: both chains do the same work


def test_sparse_tiles_respect_the_meta_buffer_half(tiny_ckpt):
    from flightllm_overlay.compiler.placement import Placement
    from flightllm_overlay.config import Buffer, load_target
    qm, _ = packed_model(tiny_ckpt, dict(MIXED, wq=(4, 16, 0.5), wk=(4, 16, 0.5)))
    t = load_target("u280")
    small = t.with_overrides(buffers=dict(t.buffers, meta=Buffer("meta", 32, 16)))   # 512 B
    wide, plan = (Placement(qm, tt, 64, 16, 512 * 1024) for tt in (t, small))
    sparse = [tl for cp in plan.cores for lt in cp.layers for tl in lt["wqkv"] if tl.sparse]
    assert sparse and all(tl.meta_before(tl.rows) <= 256 for tl in sparse)
    n_wide = sum(len(lt["wqkv"]) for cp in wide.cores for lt in cp.layers)
    assert sum(len(lt["wqkv"]) for cp in plan.cores for lt in cp.layers) > n_wide


def test_sparse_weights_need_whole_blocks(tiny_ckpt):
    spec = dict(MIXED, w_gate=(4, 32, 0.5))          # FFN hidden 200: not whole 16-blocks
    with pytest.raises(CompileError, match="16x16 blocks"):
        packed_model(tiny_ckpt, spec)


def test_timing_model_charges_kept_weights_and_counts_both_chains():
    from flightllm_overlay.config import load_target
    from flightllm_overlay.sim.timing import TimingModel
    t = load_target("u280")
    end = ("SYS", {"op": 1})
    dense = dict(m=1, n=1024, k=4096)
    half = dict(dense, sparse=1, nnz=1024 * 4096 // 16 // 2)       # every block 8:16

    def run(f):
        return TimingModel(t).schedule([[("MV", f), end]] + [[end]] * (t.cores - 1))
    d, s = run(dense), run(half)
    assert s.macs * 2 == d.macs
    assert s.cycles < 0.6 * d.cycles                       # half the passes, plus latencies
    assert s.dsp_utilisation() > 0.99 and d.dsp_utilisation() > 0.99
    assert abs(s.dsp_utilisation(fixed=True) - 0.5) < 0.01  # the dense chain multiplies zeros
    assert s.mpe_slots_fixed == d.mpe_slots


def test_bench_prints_dsp_utilisation_of_both_chains(capsys):
    from flightllm_overlay.cli import main
    assert main(["bench", "--shape", "smollm2-135m", "--weight-bits", "4", "--qk-density", "0.5",
                 "--workload", "16", "4", "--ctx", "64"]) == 0
    out = capsys.readouterr().out
    assert "configurable sparse chain" in out and "fixed dense chain" in out
    conf, fixed = (float(x) for x in re.findall(
        r"decode ([\d.]+)% configurable sparse chain vs ([\d.]+)% fixed", out)[0])
    assert conf > fixed
