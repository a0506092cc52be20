"""`compress(ckpt, tokens, config)`: smoothing, calibration, N:16 pruning, bit allocation and packing of every linear."""
from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ..errors import FlightLLMError
from .calibrate import INPUT_OF, collect
from .compressed import LINEARS, CompressedModel
from .config import CompressionConfig
from .gptq import gptq, rtn
from .mixed import GROUP_PARAM_BITS, Option, allocate, candidates, score_options
from .prune import prune
from .smooth import float_layers, smoothed_layers, tensor


def calibration_tokens(ckpt, n: int) -> list:
    """The first n tokens of the bundled calibration text (disjoint from the evaluation text)."""
    from ..data import text
    if ckpt.tokenizer is None:
        raise FlightLLMError("the checkpoint has no tokenizer; pass calibration token ids")
    return ckpt.tokenizer.encode(text("calibration"))[:n]


def compress(ckpt, tokens=None, config: CompressionConfig | None = None,
             progress: bool = True) -> CompressedModel:
    """Compress a float checkpoint into the device's packed formats under `config`'s budgets.

    tokens: calibration token ids (default: the bundled calibration text); the first
    config.calib_tokens are used.  Smoothing (function-preserving) comes first, so the packed
    weights are those of the smoothed model and the smoothed norm gains go with them.
    """
    cfg = config or CompressionConfig.flightllm()
    t0 = time.perf_counter()
    tokens = list(calibration_tokens(ckpt, cfg.calib_tokens) if tokens is None
                  else tokens)[:cfg.calib_tokens]
    args = ckpt.args
    layers = (smoothed_layers(ckpt, tokens, cfg.smooth_alpha, cfg.smooth_group)
              if cfg.smooth_alpha is not None
              else float_layers(ckpt))
    cands = {k: candidates(k, cfg.bit_choices, cfg.group_choices)
             for k in {w.shape[1] for lin, _, _ in layers for w in lin.values()}}
    sparse = cfg.density < 1 or cfg.density_qk < 1
    need_stats = cfg.error_feedback or sparse or any(len(c) > 1 for c in cands.values())
    stats = collect(ckpt, layers, tokens, progress=progress) if need_stats else None

    # pruning masks and the candidates' errors, then one global bit allocation
    plan, options = [], []
    steps = [(i, k) for i in range(args.n_layers) for k in LINEARS]
    for i, k in tqdm(steps, desc="prune + score", unit="linear", disable=not progress):
        w = layers[i][0][k]
        st = None if stats is None else stats[i][INPUT_OF[k]]
        mask, block_n = prune(w, cfg.density_of(k), None if st is None else st.sq_norm,
                              cfg.criterion)
        plan.append((i, k, mask, block_n))
        c = cands[w.shape[1]]
        if len(c) == 1:
            kept = w.size if mask is None else int(mask.sum())
            bits, group = c[0]
            params = (GROUP_PARAM_BITS * w.shape[0] * (w.shape[1] // group)
                      if bits < 8 and cfg.group_bits else 0)
            options.append([Option(bits, group, bits * kept + params, 0.0, kept)])
        else:
            options.append(score_options(w, st.hessian, mask, block_n, c, cfg.group_bits))
    choice = allocate(options, cfg.avg_bits)

    packed = [dict() for _ in range(args.n_layers)]
    for (i, k, mask, block_n), opts, j in tqdm(list(zip(plan, options, choice)), desc="pack",
                                               unit="linear", disable=not progress):
        w, opt = layers[i][0][k], opts[j]
        group = opt.group or 32
        if cfg.error_feedback:
            h = stats[i][INPUT_OF[k]].damped(cfg.damp)
            packed[i][k] = gptq(w, h, opt.bits, group, mask, block_n)
        else:
            packed[i][k] = rtn(w, opt.bits, group, mask, block_n)

    info = {"calibration_tokens": len(tokens)}
    if cfg.attn_mass is not None:
        from .attention import choose_patterns
        window = min(512, len(tokens) // 64 * 64, args.max_seq_len)
        pats = choose_patterns(ckpt, tokens, cfg.attn_mass,
                               length=min(2048, args.max_seq_len), window_tokens=window,
                               progress=progress)
        info.update(attn_pattern=pats.pattern, attn_density=round(pats.mean_density, 4))
    W = ckpt.weights
    embed = tensor(W, "model.embed_tokens.weight")
    head = None
    if not args.tie_embeddings and "lm_head.weight" in W:
        head = tensor(W, "lm_head.weight").astype(np.float16)
    return CompressedModel(
        args=args, config=cfg, layers=packed, attn_norm=[an for _, an, _ in layers],
        ffn_norm=[fn for _, _, fn in layers], embed=embed.astype(np.float16),
        norm=tensor(W, "model.norm.weight"), lm_head=head, source=str(ckpt.source),
        info={**info, "seconds": round(time.perf_counter() - t0, 1)})
