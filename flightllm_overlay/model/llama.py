"""Float32 LLaMA reference in PyTorch: the oracle every lower layer (compiler, simulator, device) is checked against."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ContextLengthError
from .args import ModelArgs
from .family import ModelFamily, model_family, register

#: Called as ``hook(name, layer, tensor)`` at named points of the forward pass (layer -1: outside blocks).
Hook = Callable[[str, int, torch.Tensor], None]


# ============================================================================ weights
@dataclass
class LayerWeights:
    """One transformer block (views into the checkpoint dict, no copies)."""

    attn_norm: torch.Tensor  # (dim,)
    wq: torch.Tensor  # (n_heads * head_dim, dim), rotate-half row order
    wk: torch.Tensor  # (n_kv_heads * head_dim, dim)
    wv: torch.Tensor  # (n_kv_heads * head_dim, dim)
    wo: torch.Tensor  # (dim, n_heads * head_dim)
    ffn_norm: torch.Tensor  # (dim,)
    w_gate: torch.Tensor  # (hidden_dim, dim)
    w_up: torch.Tensor  # (hidden_dim, dim)
    w_down: torch.Tensor  # (dim, hidden_dim)

    @classmethod
    def from_hf(cls, weights: dict[str, torch.Tensor], i: int) -> "LayerWeights":
        p = f"model.layers.{i}."
        return cls(
            attn_norm=weights[p + "input_layernorm.weight"], wq=weights[p + "self_attn.q_proj.weight"],
            wk=weights[p + "self_attn.k_proj.weight"], wv=weights[p + "self_attn.v_proj.weight"],
            wo=weights[p + "self_attn.o_proj.weight"], ffn_norm=weights[p + "post_attention_layernorm.weight"],
            w_gate=weights[p + "mlp.gate_proj.weight"], w_up=weights[p + "mlp.up_proj.weight"],
            w_down=weights[p + "mlp.down_proj.weight"],
        )


# ============================================================================ building blocks
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim: ``weight * x / sqrt(mean(x^2) + eps)``. x: (..., dim)."""
    x32 = x.float() if x.dtype != torch.float64 else x  # float64 stays (deterministic calibration)
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope_tables(args: ModelArgs, n_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (n_pos, head_dim), HF rotate-half layout: ``[f0..f_{d/2-1}, f0..f_{d/2-1}]``."""
    hd = args.head_dim
    # in float64, then rounded: the float32 tables do not depend on the CPU's vector unit
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).double() / hd))  # (hd/2,)
    freqs = torch.outer(torch.arange(n_pos, dtype=torch.float64), inv_freq)  # (n_pos, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (n_pos, hd)
    return emb.cos().float(), emb.sin().float()


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE. x: (T, n_heads, head_dim); cos, sin: (T, head_dim)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # (T, H, hd)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start_pos: int,
              keep: torch.Tensor | None = None) -> torch.Tensor:
    """Causal grouped-query attention of T new queries over S cached positions.

    q: (T, n_heads, hd) at positions ``start_pos .. start_pos+T-1``; k, v: (n_kv_heads, S, hd) with
    ``S = start_pos + T``. Query head h reads KV head ``h // (n_heads // n_kv_heads)``.
    keep: optional (n_heads, T, S) bool, the keys each query may see (block-sparse attention).
    Returns (T, n_heads * hd).
    """
    T, H, hd = q.shape
    n_kv, S, _ = k.shape
    group = H // n_kv
    qg = q.view(T, n_kv, group, hd).permute(1, 2, 0, 3).reshape(n_kv, group * T, hd)  # (n_kv, group*T, hd)
    scores = (qg @ k.transpose(1, 2)) * hd ** -0.5  # (n_kv, group*T, S)
    q_pos = torch.arange(start_pos, start_pos + T).repeat(group)  # (group*T,)
    future = torch.arange(S)[None, :] > q_pos[:, None]  # (group*T, S)
    scores = scores.masked_fill(future, float("-inf"))
    if keep is not None:
        scores = scores.masked_fill(~keep.reshape(n_kv, group * T, S), float("-inf"))
    probs = torch.softmax(scores if scores.dtype == torch.float64 else scores.float(), dim=-1).to(q.dtype)
    out = probs @ v  # (n_kv, group*T, hd)
    return out.view(n_kv, group, T, hd).permute(2, 0, 1, 3).reshape(T, H * hd)


def block_keep(heads, start_pos: int, T: int) -> torch.Tensor:
    """(H, T, S) keys each of T queries at positions start_pos.. keeps under one layer's
    block-sparse attention pattern `heads` = [(sink, window)] per query head (S = start_pos + T)."""
    from ..spec.isa import attention_block_keep
    q_pos = np.arange(start_pos, start_pos + T)[:, None]
    k_pos = np.arange(start_pos + T)[None, :]
    return torch.from_numpy(np.stack([attention_block_keep(q_pos, k_pos, int(s), int(w))
                                      for s, w in heads]))


def feed_forward(x: torch.Tensor, lw: LayerWeights, on_mid: Callable | None = None,
                 linear: Callable | None = None) -> torch.Tensor:
    """SwiGLU: ``down(silu(gate(x)) * up(x))``. x: (T, dim) -> (T, dim).  `on_mid` is called
    with the down projection's input, ``silu(gate(x)) * up(x)`` (T, hidden_dim).  linear:
    ``linear(x, w, name)`` in place of ``F.linear(x, w)`` (name: 'w_gate', 'w_up', 'w_down')."""
    lin = linear or (lambda x, w, _name: F.linear(x, w))
    mid = F.silu(lin(x, lw.w_gate, "w_gate")) * lin(x, lw.w_up, "w_up")
    if on_mid is not None:
        on_mid(mid)
    return lin(mid, lw.w_down, "w_down")


# ============================================================================ model
class Transformer:
    """The float reference decoder with its own KV cache.

    Parameters
    ----------
    args : ModelArgs
    weights : dict[str, torch.Tensor]
        Hugging Face names (a `Checkpoint`'s ``weights``); used in place, not copied.
    max_seq_len : int, optional
        Cache capacity; defaults to ``args.max_seq_len``. Memory grows as the sequence does.
    """

    def __init__(self, args: ModelArgs, weights: dict[str, torch.Tensor], max_seq_len: int | None = None) -> None:
        self.args = args
        self.max_seq_len = int(max_seq_len or args.max_seq_len)
        self.tok_embeddings = weights["model.embed_tokens.weight"]  # (vocab, dim)
        self.layers = [LayerWeights.from_hf(weights, i) for i in range(args.n_layers)]
        self.norm = weights["model.norm.weight"]  # (dim,)
        self.output = weights.get("lm_head.weight", self.tok_embeddings)  # (vocab, dim), tied: same tensor
        dtype = self.tok_embeddings.dtype
        self.cos, self.sin = (t.to(dtype) for t in rope_tables(args, self.max_seq_len))  # (max_seq_len, hd)
        self.k_cache = torch.empty(0)  # (n_layers, n_kv_heads, capacity, head_dim)
        self.v_cache = torch.empty(0)  # (n_layers, n_kv_heads, capacity, head_dim)
        self.pos = 0  # positions held in the cache
        #: per layer, per query head: (sink, window) 64-token blocks of prefill attention, or None
        self.attn_pattern = None

    @classmethod
    def from_checkpoint(cls, ckpt, max_seq_len: int | None = None) -> "Transformer":
        """Build from a `Checkpoint`: `Transformer.from_checkpoint` gives the reference of the
        checkpoint's family (an OPT checkpoint gives `model.opt.OPTTransformer`)."""
        if cls is Transformer:
            cls = model_family(ckpt.args).reference
        return cls(ckpt.args, ckpt.weights, max_seq_len)

    # ------------------------------------------------------------------ cache
    def reset(self) -> None:
        """Forget the sequence (the cache memory is kept)."""
        self.pos = 0

    def _ensure_capacity(self, n: int) -> None:
        if n > self.max_seq_len:
            raise ContextLengthError(f"Sequence of {n} tokens exceeds max_seq_len={self.max_seq_len}; "
                                     "shorten the prompt or build the Transformer with a larger max_seq_len.")
        capacity = self.k_cache.shape[2] if self.k_cache.dim() == 4 else 0
        if n <= capacity:
            return
        a = self.args
        new = min(self.max_seq_len, max(n, 2 * capacity, 256))
        shape = (a.n_layers, a.n_kv_heads, new, a.head_dim)
        dtype = self.tok_embeddings.dtype
        k, v = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
        if capacity:
            k[:, :, :capacity], v[:, :, :capacity] = self.k_cache, self.v_cache
        self.k_cache, self.v_cache = k, v

    # ------------------------------------------------------------------ forward
    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor | Sequence[int], start_pos: int, hook: Hook | None = None,
                logits: bool = True) -> torch.Tensor | None:
        """Logits of ``tokens`` placed at positions ``start_pos..``, attending to the cache before them.

        Parameters
        ----------
        tokens : LongTensor (T,) or list of int
        start_pos : int
            Position of ``tokens[0]``; at most the number of cached positions (smaller rewinds).
        hook : callable, optional
            ``hook(name, layer, tensor)`` for intermediate values (names: ``embed``, ``attn_in``,
            ``q``, ``k``, ``v`` (after RoPE for q, k), ``attn``, ``attn_out``, ``ffn_in``, ``ffn_mid``
            (the down projection's input), ``ffn_out``, ``block_out``, ``final_norm``, ``logits``).
        logits : bool
            False: stop after the last block (fills the cache, calls the hooks up to
            ``block_out``; what calibration needs) and return None.

        Returns
        -------
        torch.Tensor
            (T, vocab) float32 logits.
        """
        tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)  # (T,)
        T = tokens.numel()
        if not 0 <= start_pos <= self.pos:
            raise ValueError(f"start_pos={start_pos} must be between 0 and the cached length {self.pos}.")
        end = start_pos + T
        self._ensure_capacity(end)
        a, emit = self.args, hook or (lambda *_: None)

        h = self.tok_embeddings[tokens]  # (T, dim)
        emit("embed", -1, h)
        for i in range(len(self.layers)):
            h = self.block(i, h, start_pos, hook)
        self.pos = end
        if not logits:
            return None
        h = rms_norm(h, self.norm, a.norm_eps)
        emit("final_norm", -1, h)
        out = F.linear(h, self.output).float()  # (T, vocab)
        emit("logits", -1, out)
        return out

    __call__ = forward

    def block(self, i: int, h: torch.Tensor, start_pos: int, hook: Hook | None = None,
              lw: LayerWeights | None = None) -> torch.Tensor:
        """Layer `i` on the residual stream `h` (T, dim) at positions ``start_pos..``: its K/V go
        into the cache (`cache_kv`), the new stream comes back.
        lw: weights in place of the layer's own (calibration runs a layer with some linears
        already compressed)."""
        a, emit = self.args, hook or (lambda *_: None)
        lw = lw or self.layers[i]
        T = h.shape[0]
        end = start_pos + T
        cos, sin = self.cos[start_pos:end], self.sin[start_pos:end]  # (T, hd)
        lin = (lambda x, w, name: self.linear(i, name, x, w))
        x = rms_norm(h, lw.attn_norm, a.norm_eps)  # (T, dim)
        emit("attn_in", i, x)
        q = rope(lin(x, lw.wq, "wq").view(T, a.n_heads, a.head_dim), cos, sin)  # (T, H, hd)
        k = rope(lin(x, lw.wk, "wk").view(T, a.n_kv_heads, a.head_dim), cos, sin)  # (T, n_kv, hd)
        v = lin(x, lw.wv, "wv").view(T, a.n_kv_heads, a.head_dim)  # (T, n_kv, hd)
        emit("q", i, q), emit("k", i, k), emit("v", i, v)
        keys, values = self.cache_kv(i, k, v, start_pos)
        keep = self._block_keep(i, start_pos, T) if T > 1 else None  # prefill only
        att = attention(q, keys, values, start_pos, keep)
        emit("attn", i, att)
        att = lin(att, lw.wo, "wo")  # (T, dim)
        emit("attn_out", i, att)
        h = h + att
        x = rms_norm(h, lw.ffn_norm, a.norm_eps)
        emit("ffn_in", i, x)
        ffn = feed_forward(x, lw, hook and (lambda mid: emit("ffn_mid", i, mid)), lin)  # (T, dim)
        emit("ffn_out", i, ffn)
        h = h + ffn
        emit("block_out", i, h)
        return h

    def linear(self, layer: int, name: str, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Linear `name` ('wq' .. 'w_down') of `layer` on x: ``F.linear(x, w)`` (a subclass may
        watch or perturb a linear's output, e.g. `compress.fisher`)."""
        return F.linear(x, w)

    def cache_kv(self, layer: int, k: torch.Tensor, v: torch.Tensor, start_pos: int) -> tuple:
        """Store the new keys and values (T, n_kv, hd) of `layer` at ``start_pos..`` (the cache
        grown as needed) and return all of them so far, each (n_kv, start_pos + T, hd)."""
        end = start_pos + k.shape[0]
        self._ensure_capacity(end)
        self.k_cache[layer, :, start_pos:end] = k.transpose(0, 1)
        self.v_cache[layer, :, start_pos:end] = v.transpose(0, 1)
        return self.k_cache[layer, :, :end], self.v_cache[layer, :, :end]

    def _block_keep(self, layer: int, start_pos: int, T: int) -> torch.Tensor | None:
        """(H, T, S) keys kept by the block-sparse attention pattern of `layer`, if one is set."""
        return block_keep(self.attn_pattern[layer], start_pos, T) if self.attn_pattern else None

    # ------------------------------------------------------------------ generation helpers
    def prefill(self, tokens: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Start a new sequence with ``tokens``; return the last position's logits, (vocab,)."""
        self.reset()
        return self.forward(tokens, 0)[-1]

    def decode_one(self, token: int) -> torch.Tensor:
        """Append one token to the sequence; return its logits, (vocab,)."""
        return self.forward([int(token)], self.pos)[-1]

    def greedy(self, prompt: Sequence[int], max_new_tokens: int, stop_ids: Iterable[int] = ()) -> list[int]:
        """Greedy continuation of ``prompt`` (stop token included when hit)."""
        stop = set(stop_ids)
        out: list[int] = []
        if max_new_tokens <= 0:
            return out
        logits = self.prefill(prompt)
        while True:
            token = int(torch.argmax(logits))
            out.append(token)
            if token in stop or len(out) >= max_new_tokens:
                return out
            logits = self.decode_one(token)


def llama_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Every weight of a ``LlamaForCausalLM`` checkpoint (HF names), with its (out, in) shape."""
    shapes = {"model.embed_tokens.weight": (args.vocab_size, args.dim), "model.norm.weight": (args.dim,),
              "lm_head.weight": (args.vocab_size, args.dim)}
    for i in range(args.n_layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (args.dim,),
            p + "self_attn.q_proj.weight": (args.q_dim, args.dim),
            p + "self_attn.k_proj.weight": (args.kv_dim, args.dim),
            p + "self_attn.v_proj.weight": (args.kv_dim, args.dim),
            p + "self_attn.o_proj.weight": (args.dim, args.q_dim),
            p + "post_attention_layernorm.weight": (args.dim,),
            p + "mlp.gate_proj.weight": (args.hidden_dim, args.dim),
            p + "mlp.up_proj.weight": (args.hidden_dim, args.dim),
            p + "mlp.down_proj.weight": (args.dim, args.hidden_dim),
        })
    return shapes


register(ModelFamily("llama", Transformer, "model.embed_tokens.weight", llama_shapes, "model.layers."))
