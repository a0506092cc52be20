"""Float emulation of a CompressedModel in PyTorch (the device's weights, INT8 fake-quant activations) and perplexity of any runner.

The emulation multiplies by exactly the weights the device holds (`PackedWeight.float()`: INT8
after the dequantisation unit, times the row scales) and quantises, as the device's MISC quant
does (symmetric, per row, scale = absmax / 127), every linear input (the attention output per
token row over all heads, as the compiled program's quant of it), q, k and v per token and
head; the softmax probabilities, times each key's V scale, per
row with the small values diffused (the quant's `diffuse`: values that round to 0 are summed
and the sum is rounded, so the many small probabilities of a long row keep their mass).  Where
the device rounds to FP16 (every MPE output, the norms, each op of the RoPE chain, the softmax,
SiLU and its product, each residual add) the emulation rounds too (`fp16=True`, the default);
between those points it computes in float32, as the device's FP32 arithmetic inside an op.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..model.llama import block_keep, rms_norm, rope, rope_tables
from ..spec.wformat import quantize
from .config import LINEAR_INPUTS, WIDE_POINTS

#: A runner maps one window of token ids (from position 0) to its (T, vocab) logits.
Runner = Callable[[Sequence[int]], np.ndarray]


def to_fp16(x: torch.Tensor) -> torch.Tensor:
    """x rounded to FP16 (nearest even) and held as float32: a value the device stores."""
    return x.half().float()


def rope_fp16(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE as the device's three-op chain (`spec.arithmetic.rope`): the FP16 tables,
    x * cos and rotate(x) * sin each rounded to FP16, then their sum."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return to_fp16(to_fp16(x * to_fp16(cos)[:, None, :]) + to_fp16(rotated * to_fp16(sin)[:, None, :]))


def fake_quant(x: torch.Tensor) -> torch.Tensor:
    """Symmetric INT8 per row (last dim), scale = absmax / 127, as the device's MISC quant."""
    q, s = quant(x)
    return q * s


def quant(x: torch.Tensor):
    """(INT8 codes as floats, scales (..., 1)) of `fake_quant`."""
    s = x.abs().amax(-1, keepdim=True).clamp_min(1e-30) / 127.0
    return torch.clamp(torch.round(x / s), -127, 127), s


def two_plane_quant(x: torch.Tensor) -> torch.Tensor:
    """x as two INT8 planes per row: hi = `quant(x)` and lo = `quant` of the residual
    x - s_hi * hi, with its own scale (about 15 bits: the residual is at most half a step of hi).
    A linear run on both planes and its two outputs added equals the linear of their sum."""
    hi, s = quant(x)
    r = x - hi * s
    return hi * s + fake_quant(r)


def group_quant(x: torch.Tensor, group: int | None) -> torch.Tensor:
    """INT8 with shared-exponent groups, as the MISC quant's `agroup` (`spec.arithmetic.
    quantize_groups`): the row's step absmax / 127, divided for each run of `group` channels by
    2**e, the largest e <= 7 with the group's max * 2**e <= absmax.  None, or a group as wide as
    the row: `fake_quant`."""
    *lead, k = x.shape
    if group is None or group >= k:
        return fake_quant(x)
    g = x.reshape(*lead, k // group, group)
    amax = x.abs().amax(-1, keepdim=True)[..., None]                  # (..., 1, 1)
    gmax = g.abs().amax(-1, keepdim=True)
    e = torch.zeros_like(gmax)
    for j in range(1, 8):
        e = torch.where(gmax * 2.0 ** j <= amax, torch.full_like(e, j), e)
    step = amax.clamp_min(1e-30) / 127.0 * torch.exp2(-e)
    return (torch.clamp(torch.round(g / step), -127, 127) * step).reshape(x.shape)


def diffused_quant(x: torch.Tensor) -> torch.Tensor:
    """INT8 per row with the small values diffused (the MISC quant's `diffuse`): a value that
    rounds to 0 is added to the row's running sum of such values, and its code is the step of
    that sum's rounding; the others round as `fake_quant`."""
    q, s = quant(x)
    small = q == 0
    run = torch.round(torch.cumsum(torch.where(small, x / s, torch.zeros_like(x)), -1))
    steps = torch.diff(run, dim=-1, prepend=torch.zeros_like(run[..., :1]))
    return torch.where(small, steps, q) * s


#: The device's activation quantisation points, in the order a layer meets them: the attention
#: RMSNorm's output (q/k/v's input), q, k, v, the softmax probabilities (times V's scales), the
#: attention output (o's input), the FFN RMSNorm's output (gate/up's input), silu(gate) * up
#: (down's input), the final RMSNorm's output (the LM head's input).
POINTS = ("attn_in", "q", "k", "v", "p", "attn_out", "ffn_in", "ffn_mid", "head_in")
# (config.LINEAR_INPUTS: the points that are a linear's input, where activation groups apply;
# config.WIDE_POINTS: those that can run as two INT8 planes, hi and the residual's lo, whose
# products are added: the linear inputs, q and k; the device runs them all)


class Emulator:
    """A Runner computing a CompressedModel's logits in float32 with the device's quantisation points.

    act_quant: True (every point of `POINTS`, as the device), False (none: the weights alone), or
    the names of the points to quantise (to measure what each costs).  wide: the points of
    `WIDE_POINTS` among them quantised as two INT8 planes (`two_plane_quant`) instead of one;
    None (default): the model's own (`cm.config.wide_points`, what its compiled program does).
    fp16: round to FP16 where the device does (default); False keeps float32 between the
    quantisation points (what the INT8 points and the weights cost without FP16's rounding:
    on SmolLM2's FlightLLM setting calibrated on 512 tokens, 4,096 tokens of text, +5.9% over
    float against +7.0% with it and +7.35% on the simulated U280).
    act_group: a channel count G gives every group of G consecutive channels of a linear
    input its own step, the row's divided by a power of two (`group_quant`, the ISA's
    `agroup`), 0 one scale per row; None (default): the model's own (`cm.act_group`, what its
    compiled program does).  Any G dividing the inputs may be emulated; the device takes
    32, 64 and 128.
    float_head: the LM head's weights in float32 instead of the device's INT8 rows (no compiled
    program does this: it measures what the head's rounding costs)."""

    def __init__(self, cm, act_quant=True, wide=None, fp16: bool = True,
                 act_group: int | None = None, float_head: bool = False):
        self.args = cm.args
        self.fp16 = fp16
        self.points = set(POINTS if act_quant is True else () if act_quant is False else act_quant)
        if self.points - set(POINTS):
            raise ValueError(f"unknown quantisation points {sorted(self.points - set(POINTS))}; "
                             f"choose from {POINTS}")
        if wide is None:
            wide = getattr(cm.config, "wide_points", ())
        self.wide = set(WIDE_POINTS if wide is True else () if wide is False else wide)
        if self.wide - set(WIDE_POINTS):
            raise ValueError(f"points {sorted(self.wide - set(WIDE_POINTS))} cannot be wide; "
                             f"choose from {WIDE_POINTS}")
        if act_group is None:
            act_group = getattr(cm, "act_group", None)
        act_group = act_group or None
        widths = set(cm.input_widths)
        if act_group is not None and (act_group < 1 or any(
                act_group < k and k % act_group for k in widths)):
            raise ValueError(f"act_group {act_group} does not divide the linear inputs' widths "
                             f"{sorted(widths)}; pick a common divisor (e.g. 32 or 64)")
        self.act_group = act_group
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))
        self.layers = [({k: t(pw.float()) for k, pw in layer.items()}, t(an), t(fn))
                       for layer, an, fn in zip(cm.layers, cm.attn_norm, cm.ffn_norm)]
        self.embed = t(np.asarray(cm.embed, np.float32))
        head = cm.embed if cm.lm_head is None else cm.lm_head
        head = np.asarray(head, np.float32)
        self.head = t(head if float_head else quantize(head, 8).float())    # INT8 per row
        self.norm = t(cm.norm)
        self.cos, self.sin = rope_tables(self.args, self.args.max_seq_len)
        self.pattern = cm.info.get("attn_pattern")       # block-sparse prefill attention

    def _keep(self, layer: int, T: int) -> torch.Tensor:
        """(KV, g, T, T) keys each query keeps under the layer's block pattern."""
        a = self.args
        return block_keep(self.pattern[layer], 0, T).view(a.n_kv_heads, a.n_heads // a.n_kv_heads,
                                                           T, T)

    def _q(self, point: str, x):
        if point not in self.points:
            return x
        if point in self.wide:
            return two_plane_quant(x)
        return group_quant(x, self.act_group if point in LINEAR_INPUTS else None)

    @torch.inference_mode()
    def __call__(self, tokens) -> np.ndarray:
        """(T, vocab) logits of one window of tokens from position 0."""
        return self.forward(tokens, self.new_cache()).numpy()

    def new_cache(self) -> list:
        """An empty KV cache: per layer [k (S, KV, d) quantised, v codes (S, KV, d), v scales
        (S, KV, 1)]."""
        return [[None, None, None] for _ in self.layers]

    @torch.inference_mode()
    def forward(self, tokens, cache: list) -> torch.Tensor:
        """Logits of `tokens` placed after the positions `cache` holds (which it then holds too).

        q, k, v are quantised per token and head and the softmax per query row, so running a
        sequence token by token gives the logits of running it at once (up to float32 sums)."""
        a = self.args
        tokens = torch.as_tensor(list(tokens), dtype=torch.long)
        T, H, KV, d = tokens.numel(), a.n_heads, a.n_kv_heads, a.head_dim
        start = 0 if cache[0][0] is None else cache[0][0].shape[0]
        S = start + T
        cos, sin = self.cos[start:S], self.sin[start:S]
        causal = torch.arange(S)[None, :] > torch.arange(start, S)[:, None]      # (T, S)
        r = to_fp16 if self.fp16 else (lambda x: x)      # FP16 where the device rounds
        rot = rope_fp16 if self.fp16 else rope
        h = r(self.embed[tokens])                                          # (T, dim)
        for li, (lin, an, fn) in enumerate(self.layers):
            masked = (causal if self.pattern is None or T == 1
                      else ~self._keep(li, S)[..., start:, :])
            x = self._q("attn_in", r(rms_norm(h, an, a.norm_eps)))
            q = self._q("q", rot(r(x @ lin["wq"].T).view(T, H, d), cos, sin))   # (T, H, d)
            k = self._q("k", rot(r(x @ lin["wk"].T).view(T, KV, d), cos, sin))  # (T, KV, d)
            v = r(x @ lin["wv"].T).view(T, KV, d)
            v, vs = quant(v) if "v" in self.points else (v, torch.ones(T, KV, 1))
            if cache[li][0] is not None:
                k, v, vs = (torch.cat([c, n]) for c, n in zip(cache[li], (k, v, vs)))
            cache[li][:] = k, v, vs                                   # (S, KV, d), (S, KV, 1)
            g = H // KV
            qg = q.view(T, KV, g, d).permute(1, 2, 0, 3)                  # (KV, g, T, d)
            sc = r(qg @ k.permute(1, 2, 0)[:, None]) * d ** -0.5         # (KV, g, T, S)
            # the device scales each key's probability by its V scale, then quantises the row
            p = r(r(torch.softmax(sc.masked_fill(masked, float("-inf")), -1))
                  * vs.permute(1, 2, 0)[:, None])                        # (KV, g, T, S)
            if "p" in self.points:
                p = diffused_quant(p)
            att = r(p @ v.permute(1, 0, 2)[:, None])                       # (KV, g, T, d)
            # o_proj's input is quantised per token row over every head, as the device does
            att = self._q("attn_out", att.permute(2, 0, 1, 3).reshape(T, H * d))
            h = r(h + r(att @ lin["wo"].T))
            x = self._q("ffn_in", r(rms_norm(h, fn, a.norm_eps)))
            y = self._q("ffn_mid", r(r(F.silu(r(x @ lin["w_gate"].T))) * r(x @ lin["w_up"].T)))
            h = r(h + r(y @ lin["w_down"].T))
        h = self._q("head_in", r(rms_norm(h, self.norm, a.norm_eps)))
        return r(h @ self.head.T)

    def greedy(self, prompt, max_new_tokens: int, stop_ids=()) -> list:
        """Greedy continuation of `prompt` (token ids), stop token included when hit."""
        cache = self.new_cache()
        logits = self.forward(prompt, cache)[-1]
        out, stop = [], set(stop_ids)
        for _ in range(max_new_tokens):
            tok = int(torch.argmax(logits))
            out.append(tok)
            if tok in stop:
                break
            logits = self.forward([tok], cache)[-1]
        return out


def reference_model(ckpt, dtype=None):
    """The float reference (`model.Transformer`); dtype (e.g. torch.bfloat16): its weights, and
    so its arithmetic, in that type (norms and softmax in float32), as a GPU user runs it."""
    from ..model.llama import Transformer
    if dtype is None or dtype == torch.float32:
        return Transformer.from_checkpoint(ckpt)
    weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ckpt.weights.items()}
    return Transformer.from_checkpoint(SimpleNamespace(args=ckpt.args, weights=weights))


def reference_runner(ckpt, dtype=None) -> Runner:
    """The float reference (`model.Transformer`, `reference_model`) as a Runner."""
    model = reference_model(ckpt, dtype)

    def run(tokens):
        model.reset()
        return model.forward(list(tokens), 0).numpy()
    return run


def perplexity(runner: Runner, ids, window: int = 512, progress: bool = False,
               desc: str = "perplexity") -> float:
    """exp(mean NLL) over non-overlapping windows of `window` tokens, each from position 0."""
    ids = list(ids)
    chunks = [ids[s:s + window] for s in range(0, len(ids) - 1, window)]
    chunks = [c for c in chunks if len(c) >= 2]
    nll, count = 0.0, 0
    for chunk in tqdm(chunks, desc=desc, unit="window", disable=not progress):
        logits = torch.from_numpy(np.asarray(runner(chunk))[:-1]).double()
        logp = torch.log_softmax(logits, -1)
        nll -= float(logp[torch.arange(len(chunk) - 1), torch.as_tensor(chunk[1:])].sum())
        count += len(chunk) - 1
    return math.exp(nll / count)


def compare(runners: dict, ids, window: int = 512, progress: bool = False) -> dict:
    """{name: perplexity} of each Runner on the same windows of `ids` (the float reference, the
    float emulation of a compressed model, a compiled program on the overlay, ...)."""
    return {name: perplexity(run, ids, window, progress, desc=name) for name, run in runners.items()}
