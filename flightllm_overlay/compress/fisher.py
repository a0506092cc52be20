"""Loss sensitivity of each linear's outputs: the diagonal Fisher that turns output errors into predicted loss, for the bit allocation.

A small error dy in linear l's output changes the calibration loss by about
1/2 sum_t sum_r g_tr^2 dy_tr^2 (second order, Fisher approximation of the Hessian), where g is
the gradient of the next-token loss at that output.  With the per-row sum F_r = sum_t g_tr^2 and
the quantisation error dW, that is about 1/2 sum_r F_r (dW_r H dW_r^T) / T: one number per
(linear, format) in the same units across linears, so the allocator can trade a sensitive
linear's bits against an insensitive one's (HAWQ / SqueezeLLM's use of the Fisher; our own
implementation).  Like the calibration statistics it runs in float64 and is rounded to float32
once (`calibrate.snap`), so the allocation does not depend on the CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import FlightLLMError
from ..model.llama import Transformer, rms_norm
from .calibrate import model_with, snap


class _Tapped(Transformer):
    """The float reference open to autograd: every linear's output gets a zero tap whose
    gradient is the loss's gradient there, and keys and values stay out of the in-place cache
    (one window from position 0)."""

    def linear(self, layer, name, x, w):
        y = F.linear(x, w)
        tap = torch.zeros_like(y, requires_grad=True)
        self.taps[layer, name] = tap
        return y + tap

    def cache_kv(self, layer, k, v, start_pos):
        return k.transpose(0, 1), v.transpose(0, 1)


def output_fisher(ckpt, layers, tokens, window: int = 512, progress: bool = True) -> dict:
    """{(layer, linear name): (rows,) float64}: per output row, the sum over the calibration
    tokens of the squared gradient of the summed next-token loss of the model over `layers`
    ([(linears, attn_norm, ffn_norm)]), in windows of `window` tokens."""
    tokens = list(tokens)
    if len(tokens) < 2:
        raise FlightLLMError(f"the loss sensitivity needs token ids (got {len(tokens)}); pass a "
                             f"few hundred tokens of ordinary text")
    model = model_with(ckpt, layers, torch.float64, _Tapped)
    args = ckpt.args
    window = min(window, args.max_seq_len)
    acc = {}
    starts = [s for s in range(0, len(tokens), window) if len(tokens[s:s + window]) >= 2]
    for start in tqdm(starts, desc="loss sensitivity", unit="window", disable=not progress):
        ids = torch.as_tensor(tokens[start:start + window], dtype=torch.long)
        model.taps = {}
        h = model.tok_embeddings[ids]
        for i in range(args.n_layers):
            h = model.block(i, h, 0)
        logits = F.linear(rms_norm(h, model.norm, args.norm_eps), model.output)
        loss = F.cross_entropy(logits[:-1], ids[1:], reduction="sum")
        keys = list(model.taps)
        grads = torch.autograd.grad(loss, [model.taps[k] for k in keys])
        for key, g in zip(keys, grads):
            sq = (g.reshape(-1, g.shape[-1]) ** 2).sum(0).numpy()
            acc[key] = sq if key not in acc else acc[key] + sq
    return {key: snap(v) for key, v in acc.items()}
