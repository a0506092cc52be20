"""Placement of a quantised model on the target: work split across cores, HBM regions per tensor.

Model parallelism over cores: each core owns a contiguous set of KV heads (and their query
heads), and a contiguous slice of the output rows of o_proj, gate/up, down and lm_head.  Weight
matrices are cut into tiles that fit half of the weight buffer (the other half is being loaded
meanwhile; more slots give deeper prefetch: `weight_slots`); each tile stores its INT8 rows followed by their FP32 scales, so one LD brings both.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import CompileError
from .layout import HBMLayout, Region, split_weighted
from ..spec.wformat import PackedWeight, block_row_sizes, code_row_bytes
from .quantize import QuantizedModel, ShapeWeight, rope_table
from .schedule import PAPER, ScheduleOptions


def wbuf_row_bytes(k: int, group: int, exact: bool) -> int:
    """Weight-buffer bytes of one dense row after its LD: k INT8 values, or (exact) k codes
    and 4 bytes per group."""
    return code_row_bytes(k, group) if exact else k


@dataclass
class Tile:
    """Rows [row0, row0 + rows) of a weight matrix with K columns, stored at `region`.

    fmt 0: raw INT8 rows then FP32 scales.  fmt 1: packed (spec/wformat.py) with `bits`,
    `group` and, when sparse, the N:16 codes `block_n` (rows/16, k/16); the LD leaves the kept
    INT8 weights (MPE order) and then the row scales in the weight buffer; `exact`: a dense tile
    whose LD leaves each row's codes and group parameters (`wcodes`, `row_bytes` a row)."""

    region: Region
    row0: int
    rows: int
    k: int
    fmt: int = 0
    bits: int = 8
    group: int = 32
    block_n: np.ndarray | None = None
    exact: bool = False

    @property
    def sparse(self) -> bool:
        return self.block_n is not None

    @property
    def row_bytes(self) -> int:
        return wbuf_row_bytes(self.k, self.group, self.exact)

    @cached_property
    def _prefix(self):
        """Kept weights and index bytes before each block-row (and in total)."""
        kept, meta = block_row_sizes(self.block_n)
        return np.concatenate([[0], np.cumsum(kept)]), np.concatenate([[0], np.cumsum(meta)])

    def values_before(self, r: int) -> int:
        """Weight-buffer bytes before local row r (a block-row start if sparse)."""
        return int(self._prefix[0][r // 16]) if self.sparse else r * self.row_bytes

    def meta_before(self, r: int) -> int:
        return int(self._prefix[1][r // 16]) if self.sparse else 0

    @property
    def kept(self) -> int:
        return self.values_before(self.rows)


@dataclass
class KVRegions:
    k: Region        # int8 (ctx, head_dim)
    k_scale: Region  # f32 (ctx,)
    v: Region
    v_scale: Region
    k_lo: Region | None = None        # a wide k's second plane: int8 (ctx, head_dim)
    k_lo_scale: Region | None = None  # and its f32 (ctx,) scales


def k_planes(wide_points) -> int:
    """INT8 planes of each cached key: 2 when k is a wide point (hi and the residual's lo)."""
    return 2 if "k" in wide_points else 1


def kv_history_bytes(args, ctx: int, wide_points=()) -> int:
    """Weight-buffer bytes of one KV head's history at `ctx`: its K planes' INT8 rows and FP32
    scales and its V rows (V's scales go to the global buffer)."""
    n = k_planes(wide_points)
    return (n + 1) * ctx * args.head_dim + 4 * ctx * n


@dataclass
class CorePlan:
    """What one core computes and where its data lives."""

    index: int
    kv_heads: tuple                  # global KV head indices
    q_heads: tuple                   # global query head indices (G per KV head, in order)
    o_rows: tuple                    # (start, stop) of dim for o_proj and down_proj outputs
    ffn_rows: tuple                  # (start, stop) of the FFN hidden dimension
    vocab_rows: tuple                # (start, stop) of the vocabulary for lm_head
    layers: list = None              # per layer: {"wqkv", "wo", "w_gate_up", "w_down": [Tile]}
    lm_head: list = None
    norms: list = None               # per layer: Region f16 (2, dim): attn gain, ffn gain
    final_norm: Region = None
    rope: Region = None              # f16 (ctx, head_dim)
    rope_zero: Region = None         # f16 (t_max, head_dim) zeros: RoPE rows of padding rows
    kv: list = None                  # per layer: [KVRegions per local kv head]
    input: Region = None             # f16 (t_max, dim), written by the host
    logits: Region = None            # f16 (t_max, vocab slice), read by the host
    scratch: Region = None           # f16 (t_max, dim)
    spill: Region = None             # the unfused ablation's HBM copy of on-chip intermediates


def slot_bytes(target, args, ctx: int, weight_slots: int, wide_points=()) -> int:
    """Bytes of one weight-buffer slot: what the KV history of one head (`kv_history_bytes`: ctx
    INT8 rows of K (two planes when k is wide) and V, K's FP32 scales) leaves of the weight
    buffer, split into `weight_slots`."""
    if weight_slots < 2:
        raise CompileError(f"weight_slots={weight_slots}: at least 2 (one tile loads while "
                           f"the MPE reads the other)")
    kv_bytes = kv_history_bytes(args, ctx, wide_points)
    return (target.buffer("wbuf").bytes - kv_bytes) // weight_slots // 64 * 64


class Placement:
    """Places `qm` on `target` for contexts up to `ctx` and steps of up to `t_max` tokens."""

    def __init__(self, qm: QuantizedModel, target, ctx: int, t_max: int, weight_half: int,
                 weight_slots: int = 2, schedule: ScheduleOptions = PAPER):
        a = qm.args
        self.schedule = schedule
        self.args, self.target, self.ctx, self.t_max = a, target, ctx, t_max
        self.weight_half = weight_half          # bytes of one weight-buffer slot
        self.weight_slots = weight_slots        # tiles in flight: 2 = ping-pong halves
        self.attn_pattern = qm.attn_pattern
        self.wide_points = tuple(getattr(qm, "wide_points", ()))   # two-plane linear inputs
        self.act_group = int(getattr(qm, "act_group", 0))     # channels per activation scale
        # the meta and fsb buffers are split into as many slots as the weight buffer
        self.meta_half = target.buffer("meta").bytes // weight_slots
        self.fsb_half = target.buffer("fsb").bytes // weight_slots
        self.layout = HBMLayout(target, shape_only=isinstance(qm.lm_head[0], ShapeWeight),
                                stripe_all=schedule.stripe_all)
        self.group = a.n_heads // a.n_kv_heads
        # each core's share of the work: equal, or (balance_channels) in proportion to the
        # pseudo-channels it streams its weights from, so that no core waits at the barriers
        share = ([len(target.channels_of(c)) for c in range(target.cores)]
                 if schedule.balance_channels else [1] * target.cores)
        kv_split = split_weighted(a.n_kv_heads, share)
        o_split = split_weighted(a.dim, share, 16)
        f_split = split_weighted(a.hidden_dim, share, 16)
        v_split = split_weighted(a.vocab_size, share, 16)
        self.cores = []
        for c in range(target.cores):
            kvh = tuple(range(*kv_split[c]))
            qh = tuple(h for j in kvh for h in range(j * self.group, (j + 1) * self.group))
            self.cores.append(CorePlan(c, kvh, qh, o_split[c], f_split[c], v_split[c]))
        self._place_static(qm)
        self._place_mutable()

    # -- static data ----------------------------------------------------------------------------
    def tile_rows(self, k: int, row_bytes: int | None = None) -> int:
        """Rows per weight tile: as many as fit one weight-buffer slot once padded for
        striping over the core's channels (`row_bytes` per row on chip besides its scale,
        default k)."""
        pad = len(self.target.core_channels[0]) * 64
        rows = (self.weight_half - pad) // ((row_bytes or k) + 4)
        if rows < 1:
            raise CompileError(f"one weight row of {k} INT8 values does not fit one slot of "
                               f"the weight buffer ({self.weight_half} bytes); compile with "
                               f"fewer weight_slots")
        align = self.target.mv_parallel[1] if self.schedule.mv_aligned_tiles else 16
        if rows >= align:
            return rows // align * align        # whole MV passes: no output lane idles
        return rows if rows < 16 else rows // 16 * 16

    def _tiles(self, core: int, q, s, start: int, stop: int, row0: int = 0) -> list:
        """Tiles of rows [start, stop) of a weight: (INT8, scales), PackedWeight or ShapeWeight;
        `row0` offsets the tiles' rows inside a stacked matrix."""
        k = q.shape[1]
        packed = isinstance(q, PackedWeight) or (isinstance(q, ShapeWeight) and q.packed)
        tiles = []
        for r0, r1 in (self._packed_cuts(q, start, stop) if packed else
                       ((r, min(stop, r + self.tile_rows(k)))
                        for r in range(start, stop, self.tile_rows(k)))):
            if isinstance(q, ShapeWeight):             # shape-only: sizes, no bytes
                blob = q[r0:r1].nbytes_of()
            elif packed:
                blob = q[r0:r1].blob()
            else:
                blob = np.concatenate([q[r0:r1].reshape(-1).view(np.uint8),
                                       s[r0:r1].astype(np.float32).view(np.uint8)])
            fmt = dict(fmt=1, bits=q.bits, group=q.group, exact=bool(getattr(q, "exact", False)),
                       block_n=None if q.block_n is None else q[r0:r1].block_n) if packed else {}
            tiles.append(Tile(self.layout.put_striped(core, blob), row0 + r0 - start, r1 - r0, k,
                              **fmt))
        return tiles

    def _packed_cuts(self, q, start: int, stop: int) -> list:
        """Row ranges of packed tiles: whole block-rows of a sparse weight while the kept
        weights + row scales fit half of the weight buffer, and the indices and codes half of
        the meta and fsb buffers; dense packed weights cut like INT8 ones."""
        k = q.shape[1]
        if q.block_n is None:
            step = self.tile_rows(k, wbuf_row_bytes(k, q.group, getattr(q, "exact", False)))
            return [(r, min(stop, r + step)) for r in range(start, stop, step)]
        if start % 16:
            raise CompileError(f"a sparse weight is cut at multiples of 16 rows, not {start}")
        wcap = self.weight_half - len(self.target.core_channels[0]) * 64
        mcap, fcap = self.meta_half, self.fsb_half
        row_kept, row_meta = block_row_sizes(q.block_n)
        cuts, r0, kept, meta = [], start, 0, 0
        for br in range(start // 16, -(-stop // 16)):
            r = br * 16
            rows_after = min(stop, r + 16) - r0
            k_i, m_i = int(row_kept[br]), int(row_meta[br])
            f_after = (rows_after + 15) // 16 * (k // 16)
            if r > r0 and (kept + k_i + 4 * rows_after > wcap or meta + m_i > mcap
                           or f_after > fcap):
                cuts.append((r0, r))
                r0, kept, meta = r, 0, 0
                rows_after = min(stop, r + 16) - r0
            if kept + k_i + 4 * rows_after > wcap or meta + m_i > mcap or k // 16 > fcap:
                raise CompileError(f"one block-row of a sparse {k}-column weight does not fit "
                                   f"half of the weight, meta or fsb buffer")
            kept, meta = kept + k_i, meta + m_i
        cuts.append((r0, stop))
        return cuts

    def _stacked_tiles(self, core: int, pieces: list) -> list:
        """Tiles of the row slices [(weight (q, scale), r0, r1), ...] stacked into one matrix;
        packed slices of one format share tiles, a change of format starts new ones."""
        tiles, row0, i = [], 0, 0
        while i < len(pieces):
            first = pieces[i][0][0]
            if isinstance(first, (PackedWeight, ShapeWeight)):
                j = i
                while j < len(pieces) and type(pieces[j][0][0]) is type(first) \
                        and pieces[j][0][0].format_key == first.format_key:
                    j += 1
                w = type(first).concat([p[0][r0:r1] for p, r0, r1 in pieces[i:j]])
                tiles += self._tiles(core, w, w, 0, w.shape[0], row0)
            else:
                j = i
                while j < len(pieces) and isinstance(pieces[j][0][0], np.ndarray):
                    j += 1
                q = np.concatenate([w[0][r0:r1] for w, r0, r1 in pieces[i:j]])
                scale = np.concatenate([w[1][r0:r1] for w, r0, r1 in pieces[i:j]])
                tiles += self._tiles(core, q, scale, 0, q.shape[0], row0)
            row0 += sum(r1 - r0 for _, r0, r1 in pieces[i:j])
            i = j
        return tiles

    def _place_static(self, qm: QuantizedModel) -> None:
        a, d = self.args, self.args.head_dim
        table = rope_table(a, self.ctx)
        for cp in self.cores:
            c = cp.index
            home = self.target.channels_of(c)[0]
            cp.rope = self.layout.put(home, table)
            cp.rope_zero = self.layout.put(home, np.zeros((self.t_max, d), np.float16))
            cp.layers, cp.norms = [], []
            for layer in qm.layers:
                tiles = {}
                # q rows of this core's heads, then its k rows, then v rows: one fused matrix,
                # so that a decode step loads it with one LD and multiplies it with one MV.
                tiles["wqkv"] = self._stacked_tiles(c, [
                    (layer[n], hs[0] * d, (hs[-1] + 1) * d) for n, hs in
                    (("wq", cp.q_heads), ("wk", cp.kv_heads), ("wv", cp.kv_heads)) if hs])
                q, s = layer["wo"]
                tiles["wo"] = self._tiles(c, q, s, *cp.o_rows)
                tiles["w_gate_up"] = self._stacked_tiles(c, [(layer["w_gate"], *cp.ffn_rows),
                                                     (layer["w_up"], *cp.ffn_rows)])
                q, s = layer["w_down"]
                tiles["w_down"] = self._tiles(c, q, s, *cp.o_rows)
                cp.layers.append(tiles)
                cp.norms.append(self.layout.put(home, np.stack([layer["attn_norm"],
                                                                layer["ffn_norm"]])))
            cp.final_norm = self.layout.put(home, qm.norm)
            cp.lm_head = self._tiles(c, *qm.lm_head, *cp.vocab_rows)

    # -- mutable data ---------------------------------------------------------------------------
    def _place_mutable(self) -> None:
        a, d, C, T = self.args, self.args.head_dim, self.ctx, self.t_max
        for cp in self.cores:
            c = cp.index
            chs = self.target.channels_of(c)
            idle = chs[self.layout.stripe_width(c):]
            if self.schedule.kv_off_weights and idle:
                chs = idle          # the channels the weight stream never reads
            cp.kv, h = [], 0
            for _ in range(a.n_layers):
                regs = []
                for _j in cp.kv_heads:
                    # K and V of head h on channels 2h and 2h+1 (mod the core's channels), its
                    # K and V scales on the next two: the history loads of consecutive heads
                    # stream side by side over every channel of the core, and the small scale
                    # loads barely hold up the next head's K and V in the in-order LD queue.
                    # (a wide k's second plane and its scales beside the first's)
                    spans = ((0, C * d), (2, 4 * C), (1, C * d), (3, 4 * C)) + (
                        ((0, C * d), (2, 4 * C)) if k_planes(self.wide_points) == 2 else ())
                    regs.append(KVRegions(*(self.layout.reserve(chs[(2 * h + i) % len(chs)], n)
                                            for i, n in spans)))
                    h += 1
                cp.kv.append(regs)
            home = self.target.channels_of(c)[0]
            cp.input = self.layout.reserve(home, T * a.dim * 2)
            cp.logits = self.layout.reserve(home, T * (cp.vocab_rows[1] - cp.vocab_rows[0]) * 2)
            cp.scratch = self.layout.reserve(home, T * a.dim * 2)
            # where the unfused ablation spills every intermediate (gbuf and abuf sized)
            cp.spill = self.layout.reserve(home, self.target.buffer("gbuf").bytes
                                           + self.target.buffer("abuf").bytes)
