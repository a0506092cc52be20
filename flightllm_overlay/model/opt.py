"""Float32 OPT reference in PyTorch (pre-LayerNorm, ReLU FFN, learned positions, biases): the oracle for OPT programs."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .args import OPT_POSITION_OFFSET, ModelArgs
from .family import ModelFamily, register
from .llama import Hook, Transformer, attention


# ============================================================================ weights
@dataclass
class OptLayerWeights:
    """One OPT block (views into the checkpoint dict, no copies)."""

    attn_norm: torch.Tensor    # (dim,)   self_attn_layer_norm gain
    attn_norm_b: torch.Tensor  # (dim,)   ... and bias
    wq: torch.Tensor           # (n_heads * head_dim, dim)
    bq: torch.Tensor           # (n_heads * head_dim,)
    wk: torch.Tensor           # (n_heads * head_dim, dim)
    bk: torch.Tensor
    wv: torch.Tensor           # (n_heads * head_dim, dim)
    bv: torch.Tensor
    wo: torch.Tensor           # (dim, n_heads * head_dim)   out_proj
    bo: torch.Tensor           # (dim,)
    ffn_norm: torch.Tensor     # (dim,)   final_layer_norm of the block
    ffn_norm_b: torch.Tensor   # (dim,)
    w_fc1: torch.Tensor        # (hidden_dim, dim)
    b_fc1: torch.Tensor        # (hidden_dim,)
    w_fc2: torch.Tensor        # (dim, hidden_dim)
    b_fc2: torch.Tensor        # (dim,)

    @classmethod
    def from_hf(cls, weights: dict[str, torch.Tensor], i: int) -> "OptLayerWeights":
        p = f"model.decoder.layers.{i}."
        a = p + "self_attn."
        return cls(
            attn_norm=weights[p + "self_attn_layer_norm.weight"], attn_norm_b=weights[p + "self_attn_layer_norm.bias"],
            wq=weights[a + "q_proj.weight"], bq=weights[a + "q_proj.bias"],
            wk=weights[a + "k_proj.weight"], bk=weights[a + "k_proj.bias"],
            wv=weights[a + "v_proj.weight"], bv=weights[a + "v_proj.bias"],
            wo=weights[a + "out_proj.weight"], bo=weights[a + "out_proj.bias"],
            ffn_norm=weights[p + "final_layer_norm.weight"], ffn_norm_b=weights[p + "final_layer_norm.bias"],
            w_fc1=weights[p + "fc1.weight"], b_fc1=weights[p + "fc1.bias"],
            w_fc2=weights[p + "fc2.weight"], b_fc2=weights[p + "fc2.bias"],
        )


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last dim in float32: ``(x - mean) / sqrt(var + eps) * weight + bias``."""
    return F.layer_norm(x.float(), x.shape[-1:], weight.float(), bias.float(), eps).to(x.dtype)


# ============================================================================ model
class OPTTransformer(Transformer):
    """The float OPT decoder with its own KV cache; the same interface as `Transformer`.

    ``forward`` emits the same hook names as the LLaMA reference (``q`` and ``k`` without RoPE,
    biases included), plus ``ffn_hidden``: the ReLU output that fc2 reads.
    """

    def __init__(self, args: ModelArgs, weights: dict[str, torch.Tensor], max_seq_len: int | None = None) -> None:
        self.args = args
        self.max_seq_len = int(max_seq_len or args.max_seq_len)
        self.tok_embeddings = weights["model.decoder.embed_tokens.weight"]  # (vocab, dim)
        self.pos_embeddings = weights["model.decoder.embed_positions.weight"]  # (max_seq_len + 2, dim)
        self.layers = [OptLayerWeights.from_hf(weights, i) for i in range(args.n_layers)]
        self.norm = weights["model.decoder.final_layer_norm.weight"]  # (dim,)
        self.norm_b = weights["model.decoder.final_layer_norm.bias"]  # (dim,)
        self.output = weights.get("lm_head.weight", self.tok_embeddings)  # (vocab, dim)
        self.k_cache = torch.empty(0)  # (n_layers, n_heads, capacity, head_dim)
        self.v_cache = torch.empty(0)
        self.pos = 0

    @torch.inference_mode()
    def forward(self, tokens, start_pos: int, hook: Hook | None = None) -> torch.Tensor:
        """Logits (T, vocab) float32 of ``tokens`` at positions ``start_pos..`` (see `Transformer.forward`)."""
        tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)  # (T,)
        T = tokens.numel()
        if not 0 <= start_pos <= self.pos:
            raise ValueError(f"start_pos={start_pos} must be between 0 and the cached length {self.pos}.")
        end = start_pos + T
        self._ensure_capacity(end)
        a, emit = self.args, hook or (lambda *_: None)
        off = OPT_POSITION_OFFSET
        h = self.tok_embeddings[tokens] + self.pos_embeddings[start_pos + off:end + off]  # (T, dim)
        emit("embed", -1, h)
        for i, lw in enumerate(self.layers):
            x = layer_norm(h, lw.attn_norm, lw.attn_norm_b, a.norm_eps)  # (T, dim)
            emit("attn_in", i, x)
            q = F.linear(x, lw.wq, lw.bq).view(T, a.n_heads, a.head_dim)  # (T, H, hd)
            k = F.linear(x, lw.wk, lw.bk).view(T, a.n_kv_heads, a.head_dim)
            v = F.linear(x, lw.wv, lw.bv).view(T, a.n_kv_heads, a.head_dim)
            emit("q", i, q), emit("k", i, k), emit("v", i, v)
            self.k_cache[i, :, start_pos:end] = k.transpose(0, 1)
            self.v_cache[i, :, start_pos:end] = v.transpose(0, 1)
            att = attention(q, self.k_cache[i, :, :end], self.v_cache[i, :, :end], start_pos)  # (T, H*hd)
            emit("attn", i, att)
            att = F.linear(att, lw.wo, lw.bo)  # (T, dim)
            emit("attn_out", i, att)
            h = h + att
            x = layer_norm(h, lw.ffn_norm, lw.ffn_norm_b, a.norm_eps)
            emit("ffn_in", i, x)
            hidden = F.relu(F.linear(x, lw.w_fc1, lw.b_fc1))  # (T, hidden_dim)
            emit("ffn_hidden", i, hidden)
            ffn = F.linear(hidden, lw.w_fc2, lw.b_fc2)  # (T, dim)
            emit("ffn_out", i, ffn)
            h = h + ffn
            emit("block_out", i, h)
        h = layer_norm(h, self.norm, self.norm_b, a.norm_eps)
        emit("final_norm", -1, h)
        logits = F.linear(h, self.output).float()  # (T, vocab)
        emit("logits", -1, logits)
        self.pos = end
        return logits

    __call__ = forward


def opt_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Every tensor of an ``OPTForCausalLM`` checkpoint (HF names, ``model.`` prefix), with its shape."""
    d, f = args.dim, args.hidden_dim
    shapes = {"model.decoder.embed_tokens.weight": (args.vocab_size, d),
              "model.decoder.embed_positions.weight": (args.max_seq_len + OPT_POSITION_OFFSET, d),
              "model.decoder.final_layer_norm.weight": (d,), "model.decoder.final_layer_norm.bias": (d,),
              "lm_head.weight": (args.vocab_size, d)}
    for i in range(args.n_layers):
        p = f"model.decoder.layers.{i}."
        for proj, (n, k) in (("q_proj", (args.q_dim, d)), ("k_proj", (args.kv_dim, d)),
                             ("v_proj", (args.kv_dim, d)), ("out_proj", (d, args.q_dim))):
            shapes[p + f"self_attn.{proj}.weight"], shapes[p + f"self_attn.{proj}.bias"] = (n, k), (n,)
        shapes.update({p + "fc1.weight": (f, d), p + "fc1.bias": (f,), p + "fc2.weight": (d, f), p + "fc2.bias": (d,)})
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[p + norm + ".weight"], shapes[p + norm + ".bias"] = (d,), (d,)
    return shapes


def _opt_hf_name(name: str) -> str:
    """facebook/opt-* files hold OPTModel names ("decoder.…"): add the ``model.`` prefix."""
    return "model." + name if name.startswith("decoder.") else name


register(ModelFamily("opt", OPTTransformer, "model.decoder.embed_tokens.weight", opt_shapes,
                     "model.decoder.layers.", _opt_hf_name))
