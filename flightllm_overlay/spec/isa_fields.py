"""The ISA's bit-field tables: each format's fields (name, width, meaning) and the MISC flag rules; isa.py builds the formats from them."""
from __future__ import annotations

#: the fields every format starts with
HEADER = (
    ("opcode", 4, "format selector (the opcode in the heading); decoding reads it first"),
    ("wait", 6, "bit i set: before executing, pop one token that unit `UNITS[i]` released to this"
                " unit; the own unit's bit must be 0"),
    ("release", 6, "bit i set: after executing, push one token to unit `UNITS[i]`; the own unit's"
                   " bit must be 0 (SYS: must be 0 entirely)"),
)

MOVE_FIELDS = (
    ("buf", 3, "on-chip buffer (index into `BUFFERS`)"),
    ("dyn", 3, "dynamic mode (index into `DYN_MODES`): how `pos`/`len` change the rows and HBM "
               "address"),
    ("remote", 1, "LD only: 1 = an on-chip copy from core `remote_core`'s buffer `buf` instead "
                  "of HBM, its rows read at `hbm_addr` with stride `hbm_stride` there; ST: must "
                  "be 0"),
    ("remote_core", 2, "source core of a remote LD (must exist; the executing core itself makes "
                       "a local copy, whose source and destination must not overlap)"),
    ("channel", 5, "HBM pseudo-channel; the executing core must own it (`core_channels` of the "
                   "target)"),
    ("stripe", 5, "LD only: the number of channels one contiguous row is split over (0 and 1: "
                  "one), in equal chunks, starting at `channel` and going round the core's ports "
                  "at the same `hbm_addr`; needs rows <= 1 and no remote; ST: must be 0"),
    ("hbm_addr", 30, "byte offset of row 0 inside the pseudo-channel, before the dyn adjustment "
                     "(remote LD: byte address of row 0 in the source core's buffer)"),
    ("buf_addr", 22, "byte address of row 0 in the on-chip buffer"),
    ("rows", 16, "rows to copy; for dynamic modes, the compiled maximum"),
    ("row_bytes", 20, "bytes per row"),
    ("hbm_stride", 28, "bytes between consecutive rows in HBM (remote LD: in the source core's "
                       "buffer)"),
    ("buf_stride", 22, "bytes between consecutive rows in the on-chip buffer"),
    ("wfmt", 2, "LD only: weight format (index into `WEIGHT_FORMATS`); packed: `row_bytes` of a "
                "packed tile (spec/wformat.py) pass the dequantisation unit: `rows` rows of `wk` "
                "columns become INT8 kept weights plus FP32 row scales in wbuf (and, if sparse, "
                "FSB codes and indices in the fsb and meta buffers); static LD into wbuf only; "
                "ST: must be 0"),
    ("wk", 16, "packed: columns (K) of the weight rows (whole groups; whole 16-blocks if sparse);"
               " otherwise unused"),
    ("wbits", 2, "packed: code width, index into `WEIGHT_BITS`; otherwise unused"),
    ("wgroup", 2, "packed below 8 bits: columns per (M, B) group, index into `WEIGHT_GROUPS`; "
                  "otherwise unused"),
    ("sparse", 1, "packed: 1 = N:16 block-sparse tile (rows and wk multiples of 16); otherwise "
                  "unused"),
    ("meta_addr", 16, "packed sparse: meta-buffer byte address the 4-bit indices go to"),
    ("fsb_addr", 12, "packed sparse: fsb-buffer byte address the per-block N codes go to"),
    ("wn", 20, "packed sparse: kept weights / 16 (the sum of the tile's N codes); the INT8 values"
               " take 16 * wn bytes of wbuf, followed by the row scales"),
    ("wmeta", 16, "packed sparse: bytes of indices written to the meta buffer"),
    ("wcodes", 1, "packed below 8 bits, dense: the codes pass the dequantisation unit unchanged "
                  "for an MPE with `wcodes` (exact group arithmetic): wbuf gets per row its wk "
                  "codes (one byte each) followed by its (M uint16, B int16) group parameters "
                  "(wk + 4 wk / G bytes a row), then the FP32 row scales; must be 0 otherwise"),
)
MATRIX_FIELDS = (
    ("wt", 1, "0: weights stored (N, K) row-major; 1: stored (K, N) row-major (already "
              "transposed)"),
    ("dyn_n", 1, "1: N = pos + len at run time (`n` is the compiled maximum)"),
    ("dyn_k", 1, "1: K = pos + len at run time (`k` is the compiled maximum)"),
    ("no_wscale", 1, "1: no weight scale (the epilogue multiplies by the row scale only; "
                     "`w_scale` ignored)"),
    ("m", 8, "rows of A (tokens); MV: at most 16"),
    ("n", 16, "output columns"),
    ("k", 16, "reduction length"),
    ("a_addr", 22, "abuf byte address of the INT8 A matrix (M, K)"),
    ("a_scale", 22, "abuf byte address of M FP32 row scales (4-byte aligned)"),
    ("w_addr", 22, "wbuf byte address of the INT8 weight matrix"),
    ("w_scale", 22, "wbuf byte address of N FP32 column scales (4-byte aligned)"),
    ("out_addr", 22, "gbuf byte address of the FP16 output (M, N) (2-byte aligned)"),
    ("a_stride", 16, "bytes between rows of A; 0 = K (packed, run-time K)"),
    ("w_stride", 16, "bytes between stored weight rows; 0 = K (wt=0) or N (wt=1)"),
    ("out_stride", 16, "bytes between output rows; 0 = 2N"),
    ("sparse", 1, "1: the weights at `w_addr` are packed N:16 blocks (block-row by block-row, "
                  "block by block, row by row, kept columns ascending) read through the sparse "
                  "MUX with the codes at `fsb_addr` and indices at `meta_addr`; n, k multiples of"
                  " 16, wt = 0, w_stride = 0, no dynamic n/k"),
    ("meta_addr", 16, "sparse: meta-buffer byte address of the first block's indices"),
    ("fsb_addr", 12, "sparse: fsb-buffer byte address of the first block's N code"),
    ("nnz", 20, "sparse: kept weights / 16 over the n x k operand (the sum of its N codes)"),
    ("meta_len", 16, "sparse: bytes of indices the operand reads from the meta buffer"),
    ("blk_sink", 6, "with dyn_n or dyn_k (attention): sink blocks of the block-sparse pattern "
                    "(`isa.attention_block_keep`); the MPE skips masked key blocks, results "
                    "unchanged"),
    ("blk_win", 6, "with dyn_n or dyn_k: local window in 64-token blocks (0: dense attention)"),
    ("dyn_m", 1, "1: only the rows of A whose token (r mod `m_group`) is below `len` are "
                 "computed; the other output rows are not written (prefill rows past the "
                 "prompt)"),
    ("m_group", 8, "with dyn_m: tokens per group of A's rows (head-major blocks of tokens); "
                   "0 means `m`"),
    ("agroup", 2, "shared-exponent activation groups (index into `ACT_GROUPS`; 0: one scale per "
                  "row): each row of A has W = 4 + 4 ceil(K/G/4) bytes at `a_scale`, its FP32 "
                  "scale and an exponent byte e per G columns; each group's exact sum enters the "
                  "accumulator shifted by 7 - e, which is scaled by scale / 128; k a multiple of "
                  "G, static"),
    ("wcodes", 3, "0: INT8 weights; g > 0: each weight row at `w_addr` is k codes q (one "
                  "unsigned byte each) followed by its (M uint16, B int16) parameters per group "
                  "of G = `WEIGHT_GROUPS[g - 1]` columns, as an LD with `wcodes` leaves them "
                  "(w_stride 0: k + 4 k / G); the MPE accumulates exactly the sum over groups of "
                  "M * sum(q a) + B * sum(a) (no INT8 rounding of the weights) and scales it by "
                  "2^-8 before the epilogue; dense, wt = 0, static n and k, k a multiple of G"),
)
MISC_FIELDS = (
    ("op", 4, "operation (index into `MISC_OPS`)"),
    ("dyn_k", 1, "1: K = pos + len at run time (`k` is the compiled maximum)"),
    ("causal", 1, "softmax: key j of row r is valid only if j <= pos + (r mod groups)"),
    ("out_abuf", 1, "1: write the activation buffer; required by quant, illegal for every other "
                    "op"),
    ("bcast_b", 1, "eadd/emul: b is one row used for every row (b_stride ignored)"),
    ("b_f32", 1, "b elements are FP32 instead of FP16 (eadd, emul, rmsnorm gamma, layernorm "
                 "gamma/beta)"),
    ("rows", 16, "rows to process"),
    ("k", 16, "elements per row"),
    ("groups", 8, "tokens per group: row r belongs to token r mod groups (rope, causal softmax); "
                  "0 means 1"),
    ("a_addr", 22, "gbuf byte address of the FP16 input a (rows, K)"),
    ("b_addr", 22, "gbuf byte address of operand b: eadd/emul b, rmsnorm gamma, layernorm gamma "
                   "(beta one b_stride after it), rope table"),
    ("out_addr", 22, "byte address of the output: gbuf FP16, or abuf INT8 for quant"),
    ("out2_addr", 22, "quant: abuf byte address of the `rows` FP32 scales; amax (op or flag): "
                      "gbuf byte address of the `rows` FP32 row maxima"),
    ("a_stride", 16, "bytes between rows of a; 0 = 2K"),
    ("b_stride", 16, "bytes between rows of b; 0 = K elements packed"),
    ("out_stride", 16, "bytes between output rows; 0 = 2K (quant: K)"),
    ("imm", 32, "FP32 bit pattern: softmax scale, rmsnorm/layernorm epsilon; ignored by the other"
                " ops"),
    ("blk_sink", 6, "causal softmax: sink blocks of the block-sparse pattern; otherwise unused"),
    ("blk_win", 6, "causal softmax: local window in 64-token blocks; keys outside the pattern are"
                   " masked like future keys (0: dense causal)"),
    ("amax", 1, "rmsnorm, emul: also write each row's largest absolute FP16 result, as FP32, at "
                "`out2_addr` in gbuf (the amax op writes only that); must be 0 otherwise"),
    ("given_max", 1, "quant: a row's largest absolute value is the largest of `groups` FP32 "
                     "values at `b_addr` in gbuf (rows `b_stride` bytes apart; partial maxima "
                     "from amax) instead of a first pass over a: one pass; must be 0 otherwise"),
    ("diffuse", 1, "quant: an element that rounds to 0 is added to the row's FP32 running sum "
                   "of such elements and takes the step of that sum's rounding (-1, 0 or 1) as "
                   "its code (error diffusion of small values: they keep their total to half a "
                   "step; softmax probabilities before the PV product); must be 0 otherwise"),
    ("dyn_rows", 1, "1: only the rows whose token (r mod `groups`) is below `len` are processed; "
                    "the other rows of every output (scales and maxima included) are not "
                    "written (prefill rows past the prompt); not with given_max"),
    ("residual", 1, "quant: also overwrite a in gbuf (in place, rows `a_stride` apart) with the "
                    "FP16 residual fp16(x - fp32(q * scale)) of each element, which a second quant"
                    " makes the low plane of a two-plane activation; must be 0 otherwise"),
    ("agroup", 2, "quant: shared-exponent groups of G consecutive elements (index into "
                  "`ACT_GROUPS`; 0: one scale per row): the row's FP32 scale and, per group, the "
                  "largest e <= 7 its values allow, its step the row's / 2^e; W = 4 + 4 "
                  "ceil(K/G/4) bytes per row at `out2_addr`; K a multiple of G, static; not "
                  "with given_max, diffuse or residual; must be 0 otherwise"),
)
SYS_FIELDS = (
    ("op", 4, "operation (index into `SYS_OPS`)"),
    ("fence", 1, "barrier only (index into `SYS_FENCES`): `all` drains every queue; `compute` "
                 "drains MM, MV, MISC, ST, remote LDs and the HBM LDs issued before the previous "
                 "barrier (an HBM LD may run across one barrier)"),
)
SYS_FENCES = ("all", "compute")    # barrier `fence`: what it drains (docs/isa.md)
#: MISC flags legal with some operations only: flag -> (those operations, the refusal's reason)
MISC_FLAG_OPS = {
    "amax": (("rmsnorm", "emul"),
             "only rmsnorm and emul write their row maxima (the amax op does by itself)"),
    "given_max": (("quant",), "only quant takes given row maxima"),
    "diffuse": (("quant",), "only quant rounds with error diffusion"),
    "residual": (("quant",), "only quant writes the residual of its rounding"),
    "agroup": (("quant",), "only quant writes activation scales"),
}
#: MISC flags that exclude each other: (flag, flag) -> the refusal's reason
MISC_FLAG_CONFLICTS = {
    ("dyn_rows", "given_max"): "`groups` counts the given maxima there, not tokens per group",
    ("agroup", "given_max"): "given maxima are per row, not per group of channels",
    ("agroup", "diffuse"): "error diffusion runs along a whole row",
    ("agroup", "residual"): "a two-plane activation's planes have one scale per row",
}
