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
from ..spec import wformat as WF
from ..spec.arithmetic import quantize_weight

#: Group size of `quantize_model(weight_bits < 8)`: the GGUF Q4 grid's group.
LOWBIT_GROUP = 32
#: Group size of shape-only low-bit weights (models not at hand, e.g. LLaMA2-7B): 128, the usual
#: choice for 7B-class 4-bit models, costs 4 + 32/128 = 4.25 bits per weight with its (M, B).
SHAPE_ONLY_GROUP = 128


def shape_only_group(k: int) -> int:
    return SHAPE_ONLY_GROUP if k % SHAPE_ONLY_GROUP == 0 else LOWBIT_GROUP


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
    attn_pattern: list | None = None   # per layer, per query head: (sink, window) in 64-token
                                       # blocks for prefill attention (window 0: dense)
    wide_points: tuple = ()            # points quantised as two INT8 planes (hi and the
                                       # residual's lo): some of recipe.WIDE_POINTS
    act_group: int = 0                 # channels per activation scale at every linear input
                                       # (isa.ACT_GROUPS; 0: one scale per row)


def quantize_linear(w: np.ndarray, weight_bits: int):
    """One float linear weight in the device's formats: (INT8, row scales) at 8 bits, else
    (PackedWeight in groups of LOWBIT_GROUP, None); rows whose K is not a whole number of
    groups stay INT8."""
    if weight_bits in (2, 3, 4) and w.shape[1] % LOWBIT_GROUP == 0:
        return WF.quantize(w, weight_bits, LOWBIT_GROUP), None
    if weight_bits in (2, 3, 4, 8):
        return quantize_weight(w)
    raise CompileError(f"weight_bits must be 8, 4, 3 or 2, got {weight_bits}")


def quantize_model(ckpt, calibration_tokens=None, alpha: float = 0.5,
                   weight_bits: int = 8) -> QuantizedModel:
    """Quantise a float checkpoint to the device's W8A8 formats (smoothing if tokens are given)."""
    args, W = ckpt.args, ckpt.weights
    tokens = None if calibration_tokens is None else list(calibration_tokens)
    layers = []
    for lin, attn_norm, ffn_norm in smoothed_layers(ckpt, tokens, alpha):
        layer = {k: quantize_linear(v, weight_bits) for k, v in lin.items()}
        layer["attn_norm"] = attn_norm.astype(np.float16)
        layer["ffn_norm"] = ffn_norm.astype(np.float16)
        layers.append(layer)
    emb = tensor(W, "model.embed_tokens.weight")
    head = tensor(W, "lm_head.weight") if "lm_head.weight" in W else emb
    return QuantizedModel(
        args=args, layers=layers, norm=tensor(W, "model.norm.weight").astype(np.float16),
        lm_head=quantize_weight(head), embedding=emb.astype(np.float16),
        smoothing={"alpha": alpha, "tokens": len(tokens)} if tokens is not None else {})


def quantized_from_compressed(cm) -> QuantizedModel:
    """A `compress.CompressedModel` as the compiler's input: its packed weights and smoothed
    norms as they are, an INT8 LM head, its block-sparse attention pattern if it has one, and the
    linear inputs its config runs as two INT8 planes."""
    layers = [{**{k: (pw, None) for k, pw in layer.items()},
               "attn_norm": np.asarray(an).astype(np.float16),
               "ffn_norm": np.asarray(fn).astype(np.float16)}
              for layer, an, fn in zip(cm.layers, cm.attn_norm, cm.ffn_norm)]
    head = cm.embed if cm.lm_head is None else cm.lm_head
    return QuantizedModel(args=cm.args, layers=layers, norm=np.asarray(cm.norm).astype(np.float16),
                          lm_head=quantize_weight(np.asarray(head, np.float32)),
                          embedding=np.asarray(cm.embed).astype(np.float16),
                          smoothing={"compressed": cm.config.name},
                          attn_pattern=cm.info.get("attn_pattern"),
                          wide_points=tuple(cm.config.wide_points),
                          act_group=int(getattr(cm, "act_group", None) or 0))


def rope_table(args, length: int) -> np.ndarray:
    """FP16 table (length, head_dim): per position [cos_0..cos_{d/2-1}, sin_0..sin_{d/2-1}]."""
    d = args.head_dim
    inv = 1.0 / (args.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    ang = np.arange(length, dtype=np.float64)[:, None] * inv[None, :]
    return np.concatenate([np.cos(ang), np.sin(ang)], axis=1).astype(np.float16)


def softmax_scale(args) -> float:
    return 1.0 / math.sqrt(args.head_dim)


class ShapeWeight:
    """The shape of a weight (rows, k) in a device format, with no data: what a shape-only
    compile places (timing and storage studies without the checkpoint).  8 bits dense is the
    raw INT8 format (unless `packed8`); fewer bits or a density below 1 is the packed format
    (spec/wformat.py), with N:16 codes spread evenly to the given density or given as
    `block_n`; `exact`: dense codes on the MPE's exact group arithmetic (`PackedWeight.exact`).
    A saved program's placement is re-run from such weights (compiler/recipe.py)."""

    def __init__(self, rows: int, k: int, bits: int = 8, density: float = 1.0,
                 group: int = 32, block_n=None, packed8: bool = False, exact: bool = False):
        self.shape, self.bits, self.group = (int(rows), int(k)), bits, group
        self.block_n = WF.synthetic_codes(rows, k, density) if block_n is None and density < 1 \
            else block_n
        self.packed8 = bool(packed8)    # 8 dense bits in the packed format (a PackedWeight's)
        self.exact = bool(exact)
        WF.check_bits(bits, group)
        if self.exact and (bits == 8 or self.block_n is not None):
            raise CompileError("exact group arithmetic (wcodes) is for dense weights below 8 "
                               "bits")

    @property
    def sparse(self) -> bool:
        return self.block_n is not None

    @property
    def packed(self) -> bool:
        return self.bits < 8 or self.sparse or self.packed8

    @property
    def format_key(self) -> tuple:
        return (self.bits, self.group if self.bits < 8 else 0, self.sparse, self.packed,
                self.exact)

    def __getitem__(self, rows: slice) -> "ShapeWeight":
        r0, r1, _ = rows.indices(self.shape[0])
        bn = None if self.block_n is None else self.block_n[r0 // 16:-(-r1 // 16)]
        return ShapeWeight(r1 - r0, self.shape[1], self.bits, group=self.group, block_n=bn,
                           packed8=self.packed8, exact=self.exact)

    @staticmethod
    def concat(parts) -> "ShapeWeight":
        first = parts[0]
        bn = None if not first.sparse else np.concatenate([p.block_n for p in parts])
        return ShapeWeight(sum(p.shape[0] for p in parts), first.shape[1], first.bits,
                           group=first.group, block_n=bn, packed8=first.packed8,
                           exact=first.exact)

    def layout(self) -> dict:
        return WF.tile_layout(*self.shape, self.bits, self.group, self.block_n)

    def nbytes_of(self, rows: int | None = None) -> int:
        """HBM bytes of the first `rows` rows (all by default) in this weight's format."""
        w = self if rows is None else self[:rows]
        return w.layout()["total"] if w.packed else w.shape[0] * (w.shape[1] + 4)


def shape_only_model(args, weight_bits: int = 8, qk_density: float = 1.0) -> QuantizedModel:
    """A QuantizedModel with the shapes of `args` and no weights (norm gains and the RoPE table
    are real, the rest is sizes only); `weight_bits` below 8 sizes the linear layers as packed
    weights in groups of `SHAPE_ONLY_GROUP`, `qk_density` below 1 makes the Q and K projections
    N:16 sparse."""
    d, hd = args.dim, args.n_heads * args.head_dim
    kv = args.n_kv_heads * args.head_dim

    def lin(n, k, bits=weight_bits, density=1.0):
        w = ShapeWeight(n, k, bits, density, group=shape_only_group(k))
        return (w, w)

    layer = {"wq": lin(hd, d, density=qk_density), "wk": lin(kv, d, density=qk_density),
             "wv": lin(kv, d), "wo": lin(d, hd),
             "w_gate": lin(args.hidden_dim, d), "w_up": lin(args.hidden_dim, d),
             "w_down": lin(d, args.hidden_dim),
             "attn_norm": np.ones(d, np.float16), "ffn_norm": np.ones(d, np.float16)}
    return QuantizedModel(args=args, layers=[layer] * args.n_layers,
                          norm=np.ones(d, np.float16), lm_head=lin(args.vocab_size, d, 8),
                          embedding=np.broadcast_to(np.float16(0), (args.vocab_size, d)),
                          smoothing={"shape_only": True})
