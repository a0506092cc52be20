"""The OPT family in the compiler: W8A8 quantisation with smoothing, HBM placement and the layer body's instructions.

An OPT block differs from a LLaMA block in four places, and this module holds all four:

- LayerNorm with a bias (MISC `layernorm`) instead of RMSNorm; the two LayerNorms of a layer and
  every bias the core needs live in one FP16 row per layer and core (`param_offsets`), loaded with
  one LD per layer;
- a bias on every linear layer: an `eadd` of the bias row broadcast over the step's rows, right
  after the MPE writes the core's output slice (before the cores exchange slices);
- a ReLU FFN of two matrices (fc1, MISC `relu`, fc2) instead of SwiGLU;
- learned absolute positions instead of RoPE: the step's rows of the position table (HF
  ``embed_positions`` from its offset 2) are loaded with ``dyn="at_pos"``, as the RoPE rows are,
  and added to the embeddings on the device.

Smoothing (SmoothQuant-style, alpha = 0.5, as for LLaMA) carries over: q/k/v and fc1 read a
LayerNorm output, so 1/s folds into that LayerNorm's gain and bias; fc2 reads relu(fc1 x + b1),
and relu(z / s) = relu(z) / s for s > 0, so 1/s folds into fc1's rows and bias; out_proj reads
the attention output, linear in v + b_v, so 1/s folds into v's rows and bias.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..spec.isa import f32_bits
from ..model.args import OPT_POSITION_OFFSET
from ..spec.arithmetic import quantize_weight
from .codegen import StepCodegen
from .placement import Placement
from .quantize import QuantizedModel, ShapeWeight, quantize_linear, shape_only_group

LINEARS = {"wq": "self_attn.q_proj", "wk": "self_attn.k_proj", "wv": "self_attn.v_proj",
           "wo": "self_attn.out_proj", "w_fc1": "fc1", "w_fc2": "fc2"}
BIASES = {"wq": "bq", "wk": "bk", "wv": "bv", "wo": "bo", "w_fc1": "b_fc1", "w_fc2": "b_fc2"}


@dataclass
class OptQuantizedModel(QuantizedModel):
    """`QuantizedModel` of an OPT: layers also hold "bq", "bk", "bv", "bo", "b_fc1", "b_fc2"
    (f16 biases) and "w_fc1", "w_fc2" instead of gate/up/down; "attn_norm", "ffn_norm" and
    `norm` are f16 (2, dim): LayerNorm gain, then bias."""

    positions: np.ndarray = None    # f16 (max_seq_len, dim): position p's row (offset removed)


# ============================================================================ quantisation
def _t(weights, name) -> np.ndarray:
    t = weights[name]
    return t.detach().float().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float32)


def _smooth_scale(act_max, w_cols_max, alpha):
    s = np.maximum(act_max, 1e-5) ** alpha / np.maximum(w_cols_max, 1e-5) ** (1 - alpha)
    return np.clip(s, 1e-2, 1e3).astype(np.float32)


def calibration_stats(ckpt, tokens) -> list:
    """Per layer, absmax of each linear group's input channels: [{"qkv", "o", "fc1", "fc2"}: (K,)]."""
    from ..model.opt import OPTTransformer
    model = OPTTransformer(ckpt.args, ckpt.weights)
    key = {"attn_in": "qkv", "attn": "o", "ffn_in": "fc1", "ffn_hidden": "fc2"}
    stats = [dict() for _ in range(ckpt.args.n_layers)]

    def hook(name, layer, x):
        if name in key:
            m = x.detach().abs().reshape(-1, x.shape[-1]).amax(0).float().numpy()
            old = stats[layer].get(key[name])
            stats[layer][key[name]] = m if old is None else np.maximum(old, m)

    tokens = list(tokens)
    window = min(256, ckpt.args.max_seq_len)
    for start in range(0, len(tokens), window):
        model.reset()
        model.forward(torch.as_tensor(tokens[start:start + window], dtype=torch.long), 0, hook=hook)
    return stats


def smooth_layer(lin, bias, ln1, ln2, st, alpha=0.5):
    """Fold smoothing scales into one layer (copies); the float function is unchanged."""
    lin, bias, (g1, b1), (g2, b2) = dict(lin), dict(bias), ln1, ln2
    s = _smooth_scale(st["qkv"], np.max([np.abs(lin[k]).max(0) for k in ("wq", "wk", "wv")], 0), alpha)
    g1, b1 = g1 / s, b1 / s
    for k in ("wq", "wk", "wv"):
        lin[k] = lin[k] * s[None, :]
    s = _smooth_scale(st["fc1"], np.abs(lin["w_fc1"]).max(0), alpha)
    g2, b2 = g2 / s, b2 / s
    lin["w_fc1"] = lin["w_fc1"] * s[None, :]
    s = _smooth_scale(st["fc2"], np.abs(lin["w_fc2"]).max(0), alpha)
    lin["w_fc1"], bias["w_fc1"] = lin["w_fc1"] / s[:, None], bias["w_fc1"] / s
    lin["w_fc2"] = lin["w_fc2"] * s[None, :]
    s = _smooth_scale(st["o"], np.abs(lin["wo"]).max(0), alpha)   # MHA: one scale per v row
    lin["wv"], bias["wv"] = lin["wv"] / s[:, None], bias["wv"] / s
    lin["wo"] = lin["wo"] * s[None, :]
    return lin, bias, (g1, b1), (g2, b2)


def quantize_opt(ckpt, calibration_tokens=None, alpha: float = 0.5,
                 weight_bits: int = 8) -> OptQuantizedModel:
    """Quantise a float OPT checkpoint to the device's formats (smoothing if tokens are given)."""
    args, W = ckpt.args, ckpt.weights
    stats = calibration_stats(ckpt, calibration_tokens) if calibration_tokens is not None else None
    layers = []
    for i in range(args.n_layers):
        p = f"model.decoder.layers.{i}."
        lin = {k: _t(W, p + n + ".weight") for k, n in LINEARS.items()}
        bias = {k: _t(W, p + n + ".bias") for k, n in LINEARS.items()}
        ln1 = tuple(_t(W, p + "self_attn_layer_norm." + x) for x in ("weight", "bias"))
        ln2 = tuple(_t(W, p + "final_layer_norm." + x) for x in ("weight", "bias"))
        if stats is not None:
            lin, bias, ln1, ln2 = smooth_layer(lin, bias, ln1, ln2, stats[i], alpha)
        layer = {k: quantize_linear(v, weight_bits) for k, v in lin.items()}
        layer.update({BIASES[k]: v.astype(np.float16) for k, v in bias.items()})
        layer["attn_norm"], layer["ffn_norm"] = (np.stack(n).astype(np.float16) for n in (ln1, ln2))
        layers.append(layer)
    emb = _t(W, "model.decoder.embed_tokens.weight")
    head = _t(W, "lm_head.weight") if "lm_head.weight" in W else emb
    final = np.stack([_t(W, "model.decoder.final_layer_norm." + x) for x in ("weight", "bias")])
    return OptQuantizedModel(
        args=args, layers=layers, norm=final.astype(np.float16), lm_head=quantize_weight(head),
        embedding=emb.astype(np.float16),
        positions=_t(W, "model.decoder.embed_positions.weight")[OPT_POSITION_OFFSET:].astype(np.float16),
        smoothing={"alpha": alpha, "tokens": len(list(calibration_tokens))} if stats is not None else {})


def shape_only_opt(args, weight_bits: int = 8, qk_density: float = 1.0) -> OptQuantizedModel:
    """An OPT `QuantizedModel` of shapes only (LayerNorm rows, biases and positions are real
    zeros/ones); `qk_density` below 1 makes the Q and K projections N:16 sparse."""
    d, hd, f = args.dim, args.q_dim, args.hidden_dim

    def lin(n, k, bits=weight_bits, density=1.0):
        w = ShapeWeight(n, k, bits, density, group=shape_only_group(k))
        return (w, w)

    ln = np.stack([np.ones(d), np.zeros(d)]).astype(np.float16)
    zeros = lambda n: np.zeros(n, np.float16)      # noqa: E731
    layer = {"wq": lin(hd, d, density=qk_density), "wk": lin(hd, d, density=qk_density),
             "wv": lin(hd, d), "wo": lin(d, hd),
             "w_fc1": lin(f, d), "w_fc2": lin(d, f), "bq": zeros(hd), "bk": zeros(hd), "bv": zeros(hd),
             "bo": zeros(d), "b_fc1": zeros(f), "b_fc2": zeros(d), "attn_norm": ln, "ffn_norm": ln}
    return OptQuantizedModel(args=args, layers=[layer] * args.n_layers, norm=ln, lm_head=lin(args.vocab_size, d, 8),
                             embedding=np.broadcast_to(np.float16(0), (args.vocab_size, d)),
                             positions=np.zeros((args.max_seq_len, d), np.float16),
                             smoothing={"shape_only": True})


# ============================================================================ placement
def param_offsets(args, cp) -> dict:
    """Element offsets in a core's per-layer FP16 parameter row: the attention LayerNorm (gain,
    bias), the FFN LayerNorm (gain, bias), then this core's biases: q, k, v rows of its heads,
    out_proj and fc2 rows of its `o_rows`, fc1 rows of its `ffn_rows`."""
    dim, d = args.dim, args.head_dim
    oc, fc = cp.o_rows[1] - cp.o_rows[0], cp.ffn_rows[1] - cp.ffn_rows[0]
    off = {"ln1": 0, "ln2": 2 * dim, "bqkv": 4 * dim}
    off["bo"] = off["bqkv"] + (len(cp.q_heads) + 2 * len(cp.kv_heads)) * d
    off["b_fc1"] = off["bo"] + oc
    off["b_fc2"] = off["b_fc1"] + fc
    off["end"] = off["b_fc2"] + oc
    return off


def param_row(args, layer: dict, cp) -> np.ndarray:
    """The FP16 row `param_offsets` describes, for one layer and core."""
    d = args.head_dim
    qr = slice(cp.q_heads[0] * d, (cp.q_heads[-1] + 1) * d) if cp.q_heads else slice(0, 0)
    kr = slice(cp.kv_heads[0] * d, (cp.kv_heads[-1] + 1) * d) if cp.kv_heads else slice(0, 0)
    o, f = slice(*cp.o_rows), slice(*cp.ffn_rows)
    row = np.concatenate([layer["attn_norm"].reshape(-1), layer["ffn_norm"].reshape(-1), layer["bq"][qr],
                          layer["bk"][kr], layer["bv"][kr], layer["bo"][o], layer["b_fc1"][f], layer["b_fc2"][o]])
    assert row.size == param_offsets(args, cp)["end"]
    return row.astype(np.float16)


class OptPlacement(Placement):
    """`Placement` of an OPT: fc1 split by FFN rows, fc2 by output rows (as gate/up and down),
    one parameter row per layer (`param_row`), the position table and a block of zero rows (the
    positions of a step's rows past `len`) on each core's first channel."""

    def _place_static(self, qm: OptQuantizedModel) -> None:
        a, d = self.args, self.args.head_dim
        table = qm.positions[:self.ctx]
        if table.shape[0] < self.ctx:        # a context rounded up past the table: zero rows
            table = np.concatenate([table, np.zeros((self.ctx - table.shape[0], a.dim), np.float16)])
        for cp in self.cores:
            c = cp.index
            home = self.target.channels_of(c)[0]
            cp.positions = self.layout.put(home, table)
            cp.zero_rows = self.layout.put(home, np.zeros((self.t_max, a.dim), np.float16))
            cp.layers, cp.norms = [], []
            for layer in qm.layers:
                cp.layers.append({
                    "wqkv": self._stacked_tiles(c, [(layer[n], hs[0] * d, (hs[-1] + 1) * d) for n, hs in
                                            (("wq", cp.q_heads), ("wk", cp.kv_heads), ("wv", cp.kv_heads)) if hs]),
                    "wo": self._tiles(c, *layer["wo"], *cp.o_rows),
                    "w_fc1": self._tiles(c, *layer["w_fc1"], *cp.ffn_rows),
                    "w_fc2": self._tiles(c, *layer["w_fc2"], *cp.o_rows)})
                cp.norms.append(self.layout.put(home, param_row(a, layer, cp)))
            cp.final_norm = self.layout.put(home, qm.norm)
            cp.lm_head = self._tiles(c, *qm.lm_head, *cp.vocab_rows)


# ============================================================================ instructions
class OptStepCodegen(StepCodegen):
    """`StepCodegen` with the OPT block: positions added on the device, LayerNorms, biases, ReLU.
    Its prefill keeps every activation on chip (fewer rows per launch when they do not fit)."""

    staged_prefill = False
    split_reductions = False        # its layer body quantises in two passes
    wide_points_supported = ("head_in",)   # its layer body quantises one plane
    act_groups_supported = False    # its layer body quantises one scale per row

    def __init__(self, plan, rows, ctx, all_logits, fused=True):
        super().__init__(plan, rows, ctx, all_logits, fused)
        n = max(param_offsets(self.a, cp)["end"] for cp in plan.cores)
        self.PAR = self.gbuf_arena.alloc(2 * n, "OPT LayerNorm and bias row")

    def _layernorm(self, s, gain_addr, rows):
        dim = self.a.dim
        self._misc(s, "layernorm", a_addr=self.X, b_addr=gain_addr, out_addr=self.H, rows=rows, k=dim,
                   a_stride=2 * dim, b_stride=2 * dim, out_stride=2 * dim, imm=f32_bits(self.a.norm_eps))

    def _bias(self, s, addr, stride, k, bias_addr, rows=None):
        """out = out + bias, the bias row broadcast over the rows (in place)."""
        if k:
            self._misc(s, "eadd", a_addr=addr, b_addr=bias_addr, out_addr=addr, rows=rows or self.T, k=k,
                       a_stride=stride, out_stride=stride, bcast_b=1)

    def _prologue(self, s, cp):
        """Embeddings (from the host) plus the step's rows of the learned position table."""
        T, dim = self.T, self.a.dim
        self._ld(s, cp.input, "gbuf", self.X, T, dim * 2)
        if T > 1:   # rows past `len` get zero positions (not stale ones that would feed back)
            self._ld(s, cp.zero_rows, "gbuf", self.O, T, dim * 2)
        self._ld(s, cp.positions, "gbuf", self.O, T, dim * 2, dyn="at_pos")
        self._misc(s, "eadd", a_addr=self.X, b_addr=self.O, out_addr=self.X, rows=T, k=dim,
                   a_stride=2 * dim, b_stride=2 * dim, out_stride=2 * dim)

    def _qkv_epilogue_heads(self, s, cp, nq, nk, h0, h1):
        """Decode, sfu_split: the q/k/v biases of heads [h0, h1) of the row."""
        d = self.d
        b = self.PAR + 2 * param_offsets(self.a, cp)["bqkv"]
        self._bias(s, self.Q + 2 * d * h0, 2 * (h1 - h0) * d, (h1 - h0) * d, b + 2 * d * h0)

    def _qkv_epilogue(self, s, cp, nq, nk):
        """q/k/v biases (no RoPE: positions were added to the embeddings)."""
        d, T = self.d, self.T
        b = self.PAR + 2 * param_offsets(self.a, cp)["bqkv"]
        if T == 1:                      # one row [q heads, k heads, v heads], as the bias row
            self._bias(s, self.Q, 2 * (nq + 2 * nk) * d, (nq + 2 * nk) * d, b)
        else:                           # head-major (T, d) blocks
            for h in range(nq + 2 * nk):
                self._bias(s, self.Q + h * T * d * 2, 2 * d, d, b + 2 * h * d)

    def _final_norm(self, s, cp, rows):
        self._ld(s, cp.final_norm, "gbuf", self.NORM, 1, 2 * self.a.dim * 2)
        self._layernorm(s, self.NORM, rows)

    def _layer(self, s, cp, li, tiles):
        """One OPT block: LayerNorm, attention (+ biases), out_proj + bias, residual; LayerNorm,
        fc1 + bias, ReLU, fc2 + bias, residual."""
        a, T, P = self.a, self.T, self.PAR
        dim, hd, hidden = a.dim, a.q_dim, a.hidden_dim
        off = param_offsets(a, cp)
        (o0, o1), (f0, f1) = cp.o_rows, cp.ffn_rows
        barrier = self._barrier()
        # attention block
        self._ld(s, cp.norms[li], "gbuf", P, 1, cp.norms[li].nbytes)
        self._layernorm(s, P + 2 * off["ln1"], T)
        self._quant(s, self.H, T, dim, self.HQ, self.HS)
        self._attention(s, cp, li, tiles["wqkv"])
        s.append(barrier)
        self._exchange(s, cp, self.ATT, hd * 2, self.q_ranges)
        self._quant(s, self.ATT, T, hd, self.HQ, self.HS)
        self._linear(s, tiles["wo"], self.HQ, hd, T, [(0, o1 - o0, self.O + 2 * o0, 2 * dim)])
        self._bias(s, self.O + 2 * o0, 2 * dim, o1 - o0, P + 2 * off["bo"])
        s.append(barrier)
        self._exchange(s, cp, self.O, dim * 2, self.o_ranges)
        self._misc(s, "eadd", a_addr=self.X, b_addr=self.O, out_addr=self.X, rows=T, k=dim,
                   a_stride=2 * dim, b_stride=2 * dim, out_stride=2 * dim)
        # feed-forward block
        self._layernorm(s, P + 2 * off["ln2"], T)
        self._quant(s, self.H, T, dim, self.HQ, self.HS)
        self._linear(s, tiles["w_fc1"], self.HQ, dim, T, [(0, f1 - f0, self.FF + 2 * f0, 2 * hidden)])
        self._bias(s, self.FF + 2 * f0, 2 * hidden, f1 - f0, P + 2 * off["b_fc1"])
        if f1 > f0:
            self._misc(s, "relu", a_addr=self.FF + 2 * f0, out_addr=self.FF + 2 * f0, rows=T, k=f1 - f0,
                       a_stride=2 * hidden, out_stride=2 * hidden)
        s.append(barrier)
        self._exchange(s, cp, self.FF, hidden * 2, self.f_ranges)
        self._quant(s, self.FF, T, hidden, self.HQ, self.HS)
        self._linear(s, tiles["w_fc2"], self.HQ, hidden, T, [(0, o1 - o0, self.O + 2 * o0, 2 * dim)])
        self._bias(s, self.O + 2 * o0, 2 * dim, o1 - o0, P + 2 * off["b_fc2"])
        s.append(barrier)
        self._exchange(s, cp, self.O, dim * 2, self.o_ranges)
        self._misc(s, "eadd", a_addr=self.X, b_addr=self.O, out_addr=self.X, rows=T, k=dim,
                   a_stride=2 * dim, b_stride=2 * dim, out_stride=2 * dim)

