"""`compress(ckpt, tokens, config)`: smoothing, calibration, N:16 pruning, bit allocation and packing of every linear."""
from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ..errors import FlightLLMError
from .calibrate import INPUT_OF, collect, snap
from .compressed import LINEARS, CompressedModel
from .config import CompressionConfig
from .fisher import output_fisher
from .gptq import gptq, output_error, rtn
from .grid import find_grid, grid_error, grid_pack
from .mixed import GROUP_PARAM_BITS, Option, allocate, candidates, score_options
from .prune import block_mask, choose_block_n_joint, prune
from .qkscore import AttentionImportance, attention_scores
from .refit import refit_groups
from .sequential import pack_in_order
from .smooth import float_layers, smoothed_layers, tensor


def _grid_record(grid, pw, on_grid: bool, kept: bool) -> dict:
    """What became of a linear's source grid: its name, whether it was kept (its row scales and
    group parameters; `moved`: the share of kept weights whose code error feedback changed),
    and (in the grid's format) how exactly the device holds it (`grid.grid_error`)."""
    rec = {"grid": grid.name, "kept": kept}
    if on_grid:
        err = grid_error(grid, pw)
        live = np.ones(pw.shape, bool) if pw.mask is None else pw.mask
        moved = float(np.mean(pw.q[live] != grid.codes[live])) if kept else 1.0
        rec.update({k: round(err[k], 4) for k in ("rms_steps", "max_steps", "exact")},
                   lossless=err["lossless"], moved=round(moved, 5))
    return rec


def _qk_masks(layers, attn, cfg) -> dict:
    """{(layer, 'wq'|'wk'): (mask, block_n)} of the attention-aware q/k pruning: per linear at
    cfg.density_qk, or at that density over each layer's q_proj and k_proj together (qk_budget
    'layer': k_proj, whose every weight feeds a KV head's query heads, may keep more than q_proj)
    or over every q/k weight of the model (qk_budget 'model'), blocks ranked by their predicted
    attention KL."""
    keys = [(i, k) for i in range(len(layers)) for k in ("wq", "wk")]

    def score(i, k):
        return attention_scores(layers[i][0][k], snap((attn.q if k == "wq" else attn.k)[i]))
    if cfg.qk_budget == "linear":
        return {(i, k): prune(layers[i][0][k], cfg.density_qk, score=score(i, k))
                for i, k in keys}
    scores = [score(i, k) for i, k in keys]
    if cfg.qk_budget == "layer":
        codes = [c for i in range(0, len(keys), 2)
                 for c in choose_block_n_joint(scores[i:i + 2], cfg.density_qk, energy=True)]
    else:
        codes = choose_block_n_joint(scores, cfg.density_qk, energy=True)
    return {key: (block_mask(sc, c), c.astype(np.uint8))
            for key, sc, c in zip(keys, scores, codes)}


def _error_feedback(w, st, cfg, opt, group, mask, block_n, grid=None) -> tuple:
    """(packing, whether it keeps the grid) of one linear, GPTQ-like (columns in act order when
    cfg.act_order); on its source grid, the
    best on calibrated output error of: the grid's codes (only the INT8 target rounds), the
    codes re-chosen with error feedback on the grid's own group parameters (the INT8 rounding
    spread where the inputs least see it; pruned: SparseGPT's reconstruction on the grid), and
    (pruned) a free re-fit, which leaves the grid.  On the exact group arithmetic
    (`cfg.exact_for`: dense) the grid's codes are the source to (M, B)'s fixed point: no rounding
    to spread, nothing pruned to reconstruct, so they are kept as they are."""
    exact = cfg.exact_for(opt.bits, block_n is not None)
    if grid is not None and exact:
        return grid_pack(grid, mask, block_n, exact=True), True
    h = st.damped(cfg.damp)

    def fit(fixed=None):
        pw = gptq(w, h, opt.bits, group, mask, block_n, fixed=fixed, act_order=cfg.act_order,
                  exact=exact)
        return refit_groups(w, pw, h) if cfg.refit and fixed is None else pw
    if grid is None:
        return fit(), False
    kept = grid_pack(grid, mask, block_n)
    cands = [kept, fit(kept)]
    if mask is not None:
        cands.append(fit())
    best = int(np.argmin([output_error(w, c, st.hessian) for c in cands]))
    return cands[best], best < 2


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
    weights are those of the smoothed model and the smoothed norm gains go with them.  With
    config.exact_groups every dense linear below 8 bits is packed for, and marked to run on,
    the MPE's exact group arithmetic (`PackedWeight.exact`): its codes and group parameters are
    chosen, scored and re-fitted through that arithmetic instead of the unit's INT8 rounding.
    """
    cfg = config or CompressionConfig.flightllm()
    t0, c0 = time.perf_counter(), time.process_time()
    tokens = list(calibration_tokens(ckpt, cfg.calib_tokens) if tokens is None
                  else tokens)[:cfg.calib_tokens]
    args = ckpt.args
    layers = (smoothed_layers(ckpt, tokens, cfg.smooth_alpha, cfg.smooth_group, progress)
              if cfg.smooth_alpha is not None
              else float_layers(ckpt))
    cands = {k: candidates(k, cfg.bit_choices, cfg.group_choices)
             for k in {w.shape[1] for lin, _, _ in layers for w in lin.values()}}
    low = tuple(b for b in cfg.bit_choices if b < 8)
    grids = {}
    if cfg.keep_grid and low:
        for i, k in tqdm([(i, k) for i in range(args.n_layers) for k in LINEARS],
                         desc="source grids", unit="linear", disable=not progress):
            grids[i, k] = find_grid(layers[i][0][k], low, cfg.group_choices)
    sparse = cfg.density < 1 or cfg.density_qk < 1
    # calibration statistics: for pruning, for choosing formats, and for error feedback (on a
    # kept source grid too: it spreads the INT8 target's rounding)
    choosing = any(len(c) > 1 for c in cands.values())      # formats to allocate
    need_stats = sparse or choosing or cfg.error_feedback
    attn = (AttentionImportance(args) if cfg.density_qk < 1 and cfg.qk_criterion == "attention"
            else None)
    stats = (collect(ckpt, layers, tokens, progress=progress,
                     hooks=() if attn is None else (attn.hook,)) if need_stats else None)
    sensitivity = (output_fisher(ckpt, layers, tokens, progress=progress)
                   if choosing and cfg.allocation == "fisher" else {})

    # pruning masks and the candidates' errors, then one global bit allocation
    qk_masks = {} if attn is None else _qk_masks(layers, attn, cfg)
    plan, options = [], []
    steps = [(i, k) for i in range(args.n_layers) for k in LINEARS]
    for i, k in tqdm(steps, desc="prune + score", unit="linear", disable=not progress):
        w = layers[i][0][k]
        st = None if stats is None else stats[i][INPUT_OF[k]]
        if (i, k) in qk_masks:
            mask, block_n = qk_masks[i, k]
        else:
            mask, block_n = prune(w, cfg.density_of(k), None if st is None else st.sq_norm,
                                  cfg.criterion_of(k))
        plan.append((i, k, mask, block_n))
        c = cands[w.shape[1]]
        if len(c) == 1:
            kept = w.size if mask is None else int(mask.sum())
            bits, group = c[0]
            params = (GROUP_PARAM_BITS * w.shape[0] * (w.shape[1] // group)
                      if bits < 8 and cfg.group_bits else 0)
            options.append([Option(bits, group, bits * kept + params, 0.0, kept)])
        else:
            options.append(score_options(w, st.hessian, mask, block_n, c, cfg.group_bits,
                                         grids.get((i, k)), sensitivity.get((i, k)),
                                         cfg.exact_groups))
    choice = allocate(options, cfg.avg_bits)

    packed = [dict() for _ in range(args.n_layers)]
    grid_info = {}
    chosen = {(i, k): (mask, block_n, opts[j])
              for (i, k, mask, block_n), opts, j in zip(plan, options, choice)}

    def pack(i, k, st):
        """Pack linear k of layer i with the input statistics st (its error feedback's)."""
        w, (mask, block_n, opt) = layers[i][0][k], chosen[i, k]
        group = opt.group or 32
        grid = grids.get((i, k))
        on_grid = grid is not None and (opt.bits, opt.group) == (grid.bits, grid.group)
        exact = cfg.exact_for(opt.bits, block_n is not None)
        if cfg.error_feedback:              # (calibration statistics are then collected)
            pw, kept = _error_feedback(w, st, cfg, opt, group, mask, block_n,
                                       grid if on_grid else None)
        elif on_grid:                       # the source's codes
            pw, kept = grid_pack(grid, mask, block_n, exact), True
        else:
            pw, kept = rtn(w, opt.bits, group, mask, block_n, exact), False
        packed[i][k] = pw
        if grid is not None:
            grid_info[f"{i}.{k}"] = _grid_record(grid, pw, on_grid, kept)
        return pw

    if cfg.sequential and cfg.error_feedback:
        pack_in_order(ckpt, layers, tokens, lambda i, names, st: {
            k: pack(i, k, st).float() for k in names}, progress=progress)
    else:
        for i, k in tqdm(steps, desc="pack", unit="linear", disable=not progress):
            pack(i, k, None if stats is None else stats[i][INPUT_OF[k]])

    info = {"calibration_tokens": len(tokens)}
    if choosing:
        info["allocation"] = cfg.allocation
    if grids:
        info["grids"] = grid_info
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
        info={**info, "seconds": round(time.perf_counter() - t0, 1),
              "cpu_seconds": round(time.process_time() - c0, 1)})
