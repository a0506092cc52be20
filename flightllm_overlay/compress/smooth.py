"""Calibration statistics and SmoothQuant-style smoothing of a checkpoint's linear layers.

Outlier input channels are migrated into the weights (alpha: 0.5 by default, 0.9 in the presets
that smooth by groups of channels): each linear input channel j
is divided by s_j and the weight column multiplied by s_j, with s folded into the operation that
produces the input (an RMSNorm gain, v_proj rows, up_proj rows), so the float function is
unchanged and the device runs no extra instruction.
"""
from __future__ import annotations

import numpy as np
import torch

from .calibrate import HF_NAMES, model_with  # noqa: F401  (HF_NAMES: re-exported)

LINEARS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


def tensor(weights, name) -> np.ndarray:
    """A checkpoint tensor as float32 numpy."""
    t = weights[name]
    return (t.detach().float().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float32))


def calibration_stats(ckpt, tokens, progress: bool = False) -> list:
    """Per layer, absmax of each linear group's input channels over the calibration tokens.

    Runs the float reference once with hooks, in float64 (the maxima are rounded to float32 once,
    so they do not depend on the CPU: see `calibrate`); returns [{"qkv", "o", "gate_up", "down"}:
    (K,)].
    """
    model = model_with(ckpt, float_layers(ckpt), torch.float64)
    stats = [dict() for _ in range(ckpt.args.n_layers)]

    def amax(x):
        return x.detach().abs().reshape(-1, x.shape[-1]).amax(0).float().numpy()

    def put(layer, key, m):
        old = stats[layer].get(key)
        stats[layer][key] = m if old is None else np.maximum(old, m)

    def hook(name, layer, x):
        if name == "attn_in":
            put(layer, "qkv", amax(x))
        elif name == "attn":
            put(layer, "o", amax(x))
        elif name == "ffn_in":
            put(layer, "gate_up", amax(x))
        elif name == "ffn_mid":
            put(layer, "down", amax(x))

    tokens = list(tokens)
    window = min(256, ckpt.args.max_seq_len)
    from tqdm.auto import tqdm
    for start in tqdm(range(0, len(tokens), window), desc="smoothing stats", unit="window",
                      disable=not progress):
        model.reset()
        model.forward(torch.as_tensor(tokens[start:start + window], dtype=torch.long), 0,
                      hook=hook, logits=False)
    return stats


def _smooth_scale(act_max, w_cols_max, alpha, group=None):
    a = np.maximum(np.asarray(act_max, np.float64), 1e-5)        # float64, rounded to float32
    w = np.maximum(np.asarray(w_cols_max, np.float64), 1e-5)     # once at the end

    s = np.clip(a ** alpha / w ** (1 - alpha), 1e-2, 1e3)
    if group and s.shape[-1] % group == 0:    # one factor per group of input channels
        g = s.reshape(*s.shape[:-1], -1, group)
        s = np.broadcast_to(np.exp(np.log(g).mean(-1, keepdims=True)), g.shape).reshape(s.shape)
    return s.astype(np.float32)


def float_layers(ckpt) -> list:
    """Per layer: ({linear name: (N, K) float32}, attn_norm gain, ffn_norm gain)."""
    W = ckpt.weights
    out = []
    for i in range(ckpt.args.n_layers):
        p = f"model.layers.{i}."
        out.append(({k: tensor(W, p + HF_NAMES[k] + ".weight") for k in LINEARS},
                     tensor(W, p + "input_layernorm.weight"),
                     tensor(W, p + "post_attention_layernorm.weight")))
    return out


def smooth_layer(args, lin: dict, attn_norm, ffn_norm, st: dict, alpha: float = 0.5,
                 group: int | None = None):
    """Smooth one layer in place of copies: returns (lin, attn_norm, ffn_norm), same function.

    group: use one factor (the geometric mean) per `group` consecutive input channels, so that
    weights on a group-wise low-bit grid (GGUF Q4_1: groups of 32) stay on a scaled grid."""
    lin = dict(lin)
    g, d = args.n_heads // args.n_kv_heads, args.head_dim
    # q/k/v share the attention RMSNorm's output: fold 1/s into its gain.
    s = _smooth_scale(st["qkv"], np.max([np.abs(lin[k]).max(0) for k in ("wq", "wk", "wv")], 0),
                      alpha, group)
    attn_norm = attn_norm / s
    for k in ("wq", "wk", "wv"):
        lin[k] = lin[k] * s[None, :]
    # gate/up share the FFN RMSNorm's output.
    s = _smooth_scale(st["gate_up"],
                      np.max([np.abs(lin[k]).max(0) for k in ("w_gate", "w_up")], 0), alpha, group)
    ffn_norm = ffn_norm / s
    for k in ("w_gate", "w_up"):
        lin[k] = lin[k] * s[None, :]
    # down's input is silu(gate) * up: fold 1/s into up's rows.
    s = _smooth_scale(st["down"], np.abs(lin["w_down"]).max(0), alpha, group)
    lin["w_up"] = lin["w_up"] / s[:, None]
    lin["w_down"] = lin["w_down"] * s[None, :]
    # o's input is the attention output, linear in v: fold 1/s into v's rows.  Query heads that
    # share a KV head must share s, so take the group-wise maximum.
    act = st["o"].reshape(args.n_kv_heads, g, d).max(1)
    wmax = np.abs(lin["wo"]).max(0).reshape(args.n_kv_heads, g, d).max(1)
    s_kv = _smooth_scale(act, wmax, alpha, group)                # (n_kv_heads, d)
    lin["wv"] = lin["wv"] / s_kv.reshape(-1)[:, None]
    s_o = np.repeat(s_kv[:, None, :], g, axis=1).reshape(-1)     # (n_heads * d,)
    lin["wo"] = lin["wo"] * s_o[None, :]
    return lin, attn_norm, ffn_norm


def smoothed_layers(ckpt, calibration_tokens=None, alpha: float = 0.5,
                    group: int | None = None, progress: bool = False) -> list:
    """`float_layers`, smoothed from calibration statistics when tokens are given (see
    `smooth_layer` for `group`)."""
    layers = float_layers(ckpt)
    if calibration_tokens is None:
        return layers
    stats = calibration_stats(ckpt, calibration_tokens, progress)
    return [smooth_layer(ckpt.args, lin, an, fn, st, alpha, group)
            for (lin, an, fn), st in zip(layers, stats)]
