"""Sequential calibration: each linear's error feedback weighs its error by the inputs the compressed layers before it produce.

One-pass calibration (`calibrate.collect`) gives every linear the float model's inputs.  Here
the layers are packed in order (q/k/v, o, gate/up, down within a layer, as GPTQ and SparseGPT
do), and each linear's Hessian comes from the partly compressed model (the linears before it
as the device holds them, float arithmetic), so its error feedback spends its accuracy where
the inputs it will really see lie.  The target stays the float weights: aiming instead at the
float model's outputs (``min ||X W^T - X~ Ŵ^T||``, ridge-regularised) measured worse on SmolLM2
(docs/compression.md).  As in `collect`, the forward runs in float64 and the statistics are
rounded once to float32, so the bytes do not depend on the CPU.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .calibrate import INPUT_OF, InputStats, model_with, snap

#: a layer's input groups in the order the forward meets them, with the hook point of each
GROUPS = (("qkv", "attn_in"), ("o", "attn"), ("gate_up", "ffn_in"), ("down", "ffn_mid"))


class _Capture:
    """Forward hook of one layer's block summing x^T x of one point over the windows it sees."""

    def __init__(self, point: str):
        self.point, self.h, self.n = point, 0.0, 0

    def __call__(self, name, layer, x):
        if name == self.point:
            x = x.detach().reshape(-1, x.shape[-1]).double()
            self.h, self.n = self.h + (x.T @ x).numpy(), self.n + x.shape[0]


def pack_in_order(ckpt, layers, tokens, pack: Callable, window: int = 256,
                  progress: bool = True) -> None:
    """Call ``pack(i, names, stats)`` for every layer i in order and each input group of it
    (q/k/v, o, gate/up, down): `names` the group's linears, `stats` the InputStats of their
    input in the model whose earlier linears are compressed; it returns {linear: the float
    weights the device will hold}, which the layer's later groups and later layers then see."""
    model = model_with(ckpt, layers, torch.float64)
    window = min(window, ckpt.args.max_seq_len)
    stream = [model.tok_embeddings[torch.as_tensor(tokens[s:s + window], dtype=torch.long)]
              for s in range(0, len(tokens), window)]       # the residual stream, per window
    names = {g: [k for k, v in INPUT_OF.items() if v == g] for g, _ in GROUPS}
    for i in tqdm(range(len(layers)), desc="pack (sequential)", unit="layer",
                  disable=not progress):
        lw = dataclasses.replace(model.layers[i])
        for g, point in GROUPS:
            cap = _Capture(point)
            for h in stream:
                model.block(i, h, 0, cap, lw=lw)
            held = pack(i, names[g], InputStats(snap(cap.h), cap.n))
            lw = dataclasses.replace(lw, **{k: torch.from_numpy(np.asarray(held[k], np.float64))
                                            for k in names[g]})
        stream = [model.block(i, h, 0, lw=lw) for h in stream]
