"""Calibration statistics per linear input group: the Hessian X^T X and its diagonal (squared channel norms).

The calibration forward runs in float64 and every statistic is rounded to float32 once
(`snap`): CPUs with different vector units (AVX2, AVX-512) reduce in different orders and differ
in the last float64 bits, which the rounding absorbs (it flips only for a value within 1e-16 of a
float32 rounding boundary), so the compression's decisions -- and its bytes -- do not depend on
the CPU.  (A float32 forward differs across CPUs in the 7th digit, enough to flip codes.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import FlightLLMError

#: linear -> the input group it reads (linears of a group share one input and one Hessian)
INPUT_OF = {"wq": "qkv", "wk": "qkv", "wv": "qkv", "wo": "o", "w_gate": "gate_up",
            "w_up": "gate_up", "w_down": "down"}

#: our linear names -> the Hugging Face module names of a LLaMA layer
HF_NAMES = {"wq": "self_attn.q_proj", "wk": "self_attn.k_proj", "wv": "self_attn.v_proj",
            "wo": "self_attn.o_proj", "w_gate": "mlp.gate_proj", "w_up": "mlp.up_proj",
            "w_down": "mlp.down_proj"}


def snap(a) -> np.ndarray:
    """float64 statistics rounded once to float32 precision (see the module docstring)."""
    return np.asarray(a, np.float64).astype(np.float32).astype(np.float64)


@dataclass
class InputStats:
    """Second moments of one linear input over the calibration tokens."""

    hessian: np.ndarray     # (K, K) float64: sum over tokens of x x^T
    tokens: int

    @property
    def sq_norm(self) -> np.ndarray:
        """(K,) squared L2 norm of each input channel (Wanda's ||x_j||^2)."""
        return np.diag(self.hessian).copy()

    def damped(self, damp: float = 0.01) -> np.ndarray:
        """Hessian with `damp` x mean diagonal added, dead channels given a unit diagonal."""
        h = self.hessian.copy()
        dead = np.diag(h) <= 0
        h[dead, dead] = 1.0
        h[np.diag_indices_from(h)] += damp * np.mean(np.diag(h))
        return h


def model_with(ckpt, layers, dtype=torch.float32, cls=None):
    """The float reference (`model.Transformer`, or its subclass `cls`) over `layers`
    ([(linears, attn_norm, ffn_norm)]), computing in `dtype` (float64 for calibration: see the
    module docstring)."""
    from ..model.llama import Transformer
    npd = np.float64 if dtype == torch.float64 else np.float32
    cast = (lambda a: torch.from_numpy(np.asarray(a, npd)))
    weights = {k: (v.to(dtype) if isinstance(v, torch.Tensor) else cast(v))
               for k, v in ckpt.weights.items()}
    if ckpt.weights.get("lm_head.weight") is ckpt.weights.get("model.embed_tokens.weight"):
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    for i, (lin, an, fn) in enumerate(layers):
        p = f"model.layers.{i}."
        for k, w in lin.items():
            weights[p + HF_NAMES[k] + ".weight"] = cast(w)
        weights[p + "input_layernorm.weight"] = cast(an)
        weights[p + "post_attention_layernorm.weight"] = cast(fn)
    return (cls or Transformer)(ckpt.args, weights)


def collect(ckpt, layers, tokens, window: int = 256, progress: bool = True,
            hooks=()) -> list:
    """Per layer {"qkv", "o", "gate_up", "down"}: InputStats of the model over `layers`.

    tokens: calibration token ids (a few hundred suffice); run in windows of `window` tokens.
    hooks: more forward hooks to call on the same pass (e.g. `AttentionImportance.hook`).
    """
    tokens = list(tokens)
    if len(tokens) < 2:
        raise FlightLLMError(f"calibration needs token ids (got {len(tokens)}); pass a few "
                             f"hundred tokens of ordinary text")
    model = model_with(ckpt, layers, torch.float64)
    acc = [dict() for _ in range(ckpt.args.n_layers)]

    def add(layer, key, x):
        x = x.detach().reshape(-1, x.shape[-1]).double()
        h = (x.T @ x).numpy()
        st = acc[layer].get(key)
        acc[layer][key] = [h, x.shape[0]] if st is None else [st[0] + h, st[1] + x.shape[0]]

    def hook(name, layer, x):
        for extra in hooks:
            extra(name, layer, x)
        if name == "attn_in":
            add(layer, "qkv", x)
        elif name == "attn":
            add(layer, "o", x)
        elif name == "ffn_in":
            add(layer, "gate_up", x)
        elif name == "ffn_mid":
            add(layer, "down", x)

    window = min(window, ckpt.args.max_seq_len)
    starts = range(0, len(tokens), window)
    for start in tqdm(starts, desc="calibration", unit="window", disable=not progress):
        model.reset()
        model.forward(torch.as_tensor(tokens[start:start + window], dtype=torch.long), 0,
                      hook=hook, logits=False)
    return [{k: InputStats(snap(h), n) for k, (h, n) in layer.items()} for layer in acc]
