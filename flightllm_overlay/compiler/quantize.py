"""W8A8 quantisation pass: smoothing from calibration statistics, then INT8 weights per output row.

Activations are quantised on the device (MISC quant: INT8 per row, dynamic); outlier input
channels are first migrated into the weights (`compress.smooth`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..compress.smooth import smoothed_layers, tensor
from ..errors import CompileError
from ..sim.units import INT4_GROUP, int4_tile_bytes, quantize_weight, quantize_weight_int4


@dataclass
class QuantizedModel:
    """Everything the code generator places in HBM, already in device formats."""

    args: object
    layers: list                    # per layer: {"attn_norm": f16 (dim,), "ffn_norm": ...,
                                    #             "wq": (int8 (N, K), f32 scale (N,)), ...}
    norm: np.ndarray                # f16 (dim,)
    lm_head: tuple                  # (int8 (vocab, dim), f32 (vocab,))
    embedding: np.ndarray           # f16 (vocab, dim), gathered by the host
    smoothing: dict = field(default_factory=dict)   # description of what was calibrated


def quantize_model(ckpt, calibration_tokens=None, alpha: float = 0.5,
                   weight_bits: int = 8) -> QuantizedModel:
    """Quantise a float checkpoint to the device's W8A8 formats (smoothing if tokens are given)."""
    args, W = ckpt.args, ckpt.weights
    tokens = None if calibration_tokens is None else list(calibration_tokens)
    layers = []
    for lin, attn_norm, ffn_norm in smoothed_layers(ckpt, tokens, alpha):
        if weight_bits == 4:            # rows whose K is not a whole number of groups stay INT8
            layer = {k: (Int4Weight.quantize(v), None) if v.shape[1] % INT4_GROUP == 0
                     else quantize_weight(v) for k, v in lin.items()}
        elif weight_bits == 8:
            layer = {k: quantize_weight(v) for k, v in lin.items()}
        else:
            raise CompileError(f"weight_bits must be 8 or 4, got {weight_bits}")
        layer["attn_norm"] = attn_norm.astype(np.float16)
        layer["ffn_norm"] = ffn_norm.astype(np.float16)
        layers.append(layer)
    emb = tensor(W, "model.embed_tokens.weight")
    head = tensor(W, "lm_head.weight") if "lm_head.weight" in W else emb
    return QuantizedModel(
        args=args, layers=layers, norm=tensor(W, "model.norm.weight").astype(np.float16),
        lm_head=quantize_weight(head), embedding=emb.astype(np.float16),
        smoothing={"alpha": alpha, "tokens": len(tokens)} if tokens is not None else {})


def rope_table(args, length: int) -> np.ndarray:
    """FP16 table (length, head_dim): per position [cos_0..cos_{d/2-1}, sin_0..sin_{d/2-1}]."""
    d = args.head_dim
    inv = 1.0 / (args.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    ang = np.arange(length, dtype=np.float64)[:, None] * inv[None, :]
    return np.concatenate([np.cos(ang), np.sin(ang)], axis=1).astype(np.float16)


def softmax_scale(args) -> float:
    return 1.0 / math.sqrt(args.head_dim)


class Int4Weight:
    """An int4 weight matrix in the dequantisation unit's format, sliceable by rows.

    packed (rows, k/2) uint8, groups (rows, k/32) uint8, scales (rows,) f32; see
    `sim.units.quantize_weight_int4` for the format and `blob` for a tile's bytes."""

    def __init__(self, packed, groups, scales):
        self.packed, self.groups, self.scales = packed, groups, scales
        self.shape = (packed.shape[0], packed.shape[1] * 2)

    @classmethod
    def quantize(cls, w: np.ndarray) -> "Int4Weight":
        rows, k = w.shape
        raw = np.frombuffer(quantize_weight_int4(w), np.uint8)
        n_p, n_g = rows * k // 2, rows * k // INT4_GROUP
        return cls(raw[:n_p].reshape(rows, k // 2), raw[n_p:n_p + n_g].reshape(rows, -1),
                   raw[n_p + n_g:].view(np.float32))

    def __getitem__(self, rows: slice) -> "Int4Weight":
        return Int4Weight(self.packed[rows], self.groups[rows], self.scales[rows])

    @staticmethod
    def concat(parts) -> "Int4Weight":
        return Int4Weight(*(np.concatenate([getattr(p, n) for p in parts])
                            for n in ("packed", "groups", "scales")))

    def blob(self) -> np.ndarray:
        return np.concatenate([self.packed.reshape(-1), self.groups.reshape(-1),
                               self.scales.astype(np.float32).view(np.uint8)])


class ShapeWeight:
    """The shape of an INT8 weight (rows, k) with its row scales, but no data: what a
    shape-only compile places (timing and storage studies without the checkpoint)."""

    def __init__(self, rows: int, k: int, bits: int = 8):
        self.shape, self.bits = (int(rows), int(k)), bits

    def __getitem__(self, rows: slice) -> "ShapeWeight":
        return ShapeWeight(len(range(*rows.indices(self.shape[0]))), self.shape[1], self.bits)

    def nbytes_of(self, rows: int) -> int:
        k = self.shape[1]
        return int4_tile_bytes(rows, k) if self.bits == 4 else rows * (k + 4)


def shape_only_model(args, weight_bits: int = 8) -> QuantizedModel:
    """A QuantizedModel with the shapes of `args` and no weights (norm gains and the RoPE table
    are real, the rest is sizes only); `weight_bits` 4 sizes the linear layers as int4."""
    d, hd = args.dim, args.n_heads * args.head_dim
    kv = args.n_kv_heads * args.head_dim

    def lin(n, k, bits=weight_bits):
        w = ShapeWeight(n, k, bits)
        return (w, w)

    layer = {"wq": lin(hd, d), "wk": lin(kv, d), "wv": lin(kv, d), "wo": lin(d, hd),
             "w_gate": lin(args.hidden_dim, d), "w_up": lin(args.hidden_dim, d),
             "w_down": lin(d, args.hidden_dim),
             "attn_norm": np.ones(d, np.float16), "ffn_norm": np.ones(d, np.float16)}
    return QuantizedModel(args=args, layers=[layer] * args.n_layers,
                          norm=np.ones(d, np.float16), lm_head=lin(args.vocab_size, d, 8),
                          embedding=np.broadcast_to(np.float16(0), (args.vocab_size, d)),
                          smoothing={"shape_only": True})
