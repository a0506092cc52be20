"""Placement of a quantised model on the target: work split across cores, HBM regions per tensor.

Model parallelism over cores: each core owns a contiguous set of KV heads (and their query
heads), and a contiguous slice of the output rows of o_proj, gate/up, down and lm_head.  Weight
matrices are cut into tiles that fit half of the weight buffer (the other half is being loaded
meanwhile; more slots give deeper prefetch: `weight_slots`); each tile stores its INT8 rows followed by their FP32 scales, so one LD brings both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CompileError
from .layout import HBMLayout, Region, split_even
from .quantize import Int4Weight, QuantizedModel, ShapeWeight, rope_table


@dataclass
class Tile:
    """Rows [row0, row0 + rows) of a weight matrix with K columns, stored at `region`."""

    region: Region
    row0: int
    rows: int
    k: int
    fmt: int = 0            # isa.WEIGHT_FORMATS index: 0 int8, 1 int4 (dequantised by the LD)


@dataclass
class KVRegions:
    k: Region        # int8 (ctx, head_dim)
    k_scale: Region  # f32 (ctx,)
    v: Region
    v_scale: Region


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
    kv: list = None                  # per layer: [KVRegions per local kv head]
    input: Region = None             # f16 (t_max, dim), written by the host
    logits: Region = None            # f16 (t_max, vocab slice), read by the host
    scratch: Region = None           # f16 (t_max, dim)
    spill: Region = None             # the unfused ablation's HBM copy of on-chip intermediates


class Placement:
    """Places `qm` on `target` for contexts up to `ctx` and steps of up to `t_max` tokens."""

    def __init__(self, qm: QuantizedModel, target, ctx: int, t_max: int, weight_half: int,
                 weight_slots: int = 2):
        a = qm.args
        self.args, self.target, self.ctx, self.t_max = a, target, ctx, t_max
        self.weight_half = weight_half          # bytes of one weight-buffer slot
        self.weight_slots = weight_slots        # tiles in flight: 2 = ping-pong halves
        self.layout = HBMLayout(target, shape_only=isinstance(qm.lm_head[0], ShapeWeight))
        self.group = a.n_heads // a.n_kv_heads
        kv_split = split_even(a.n_kv_heads, target.cores)
        o_split = split_even(a.dim, target.cores, 16)
        f_split = split_even(a.hidden_dim, target.cores, 16)
        v_split = split_even(a.vocab_size, target.cores, 16)
        self.cores = []
        for c in range(target.cores):
            kvh = tuple(range(*kv_split[c]))
            qh = tuple(h for j in kvh for h in range(j * self.group, (j + 1) * self.group))
            self.cores.append(CorePlan(c, kvh, qh, o_split[c], f_split[c], v_split[c]))
        self._place_static(qm)
        self._place_mutable()

    # -- static data ----------------------------------------------------------------------------
    def tile_rows(self, k: int) -> int:
        """Rows per weight tile: as many as fit one weight-buffer slot once padded for
        striping over the core's channels."""
        pad = len(self.target.core_channels[0]) * 64
        rows = (self.weight_half - pad) // (k + 4)
        if rows < 1:
            raise CompileError(f"one weight row of {k} INT8 values does not fit one slot of "
                               f"the weight buffer ({self.weight_half} bytes); compile with "
                               f"fewer weight_slots")
        return rows if rows < 16 else rows // 16 * 16

    def _tiles(self, core: int, q: np.ndarray, s: np.ndarray, start: int, stop: int) -> list:
        k = q.shape[1]
        step = self.tile_rows(k)
        tiles = []
        for r0 in range(start, stop, step):
            r1 = min(stop, r0 + step)
            fmt = 0
            if isinstance(q, ShapeWeight):             # shape-only: sizes, no bytes
                blob, fmt = q.nbytes_of(r1 - r0), int(q.bits == 4)
            elif isinstance(q, Int4Weight):
                blob, fmt = q[r0:r1].blob(), 1
            else:
                blob = np.concatenate([q[r0:r1].reshape(-1).view(np.uint8),
                                       s[r0:r1].astype(np.float32).view(np.uint8)])
            tiles.append(Tile(self.layout.put_striped(core, blob), r0 - start, r1 - r0, k, fmt))
        return tiles

    def _fused(self, core: int, pieces: list) -> list:
        """Tiles of the row slices [(weight (q, scale), r0, r1), ...] stacked into one matrix."""
        if not pieces:
            return []
        first = pieces[0][0][0]
        if isinstance(first, ShapeWeight):
            rows = sum(r1 - r0 for _, r0, r1 in pieces)
            w = ShapeWeight(rows, first.shape[1], first.bits)
            return self._tiles(core, w, w, 0, rows)
        if isinstance(first, Int4Weight):
            w = Int4Weight.concat([p[0][r0:r1] for p, r0, r1 in pieces])
            return self._tiles(core, w, None, 0, w.shape[0])
        q = np.concatenate([w[0][r0:r1] for w, r0, r1 in pieces])
        scale = np.concatenate([w[1][r0:r1] for w, r0, r1 in pieces])
        return self._tiles(core, q, scale, 0, q.shape[0])

    def _place_static(self, qm: QuantizedModel) -> None:
        a, d = self.args, self.args.head_dim
        table = rope_table(a, self.ctx)
        for cp in self.cores:
            c = cp.index
            home = self.target.channels_of(c)[0]
            cp.rope = self.layout.put(home, table)
            cp.layers, cp.norms = [], []
            for layer in qm.layers:
                tiles = {}
                # q rows of this core's heads, then its k rows, then v rows: one fused matrix,
                # so that a decode step loads it with one LD and multiplies it with one MV.
                tiles["wqkv"] = self._fused(c, [
                    (layer[n], hs[0] * d, (hs[-1] + 1) * d) for n, hs in
                    (("wq", cp.q_heads), ("wk", cp.kv_heads), ("wv", cp.kv_heads)) if hs])
                q, s = layer["wo"]
                tiles["wo"] = self._tiles(c, q, s, *cp.o_rows)
                tiles["w_gate_up"] = self._fused(c, [(layer["w_gate"], *cp.ffn_rows),
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
            cp.kv, h = [], 0
            for _ in range(a.n_layers):
                regs = []
                for _j in cp.kv_heads:
                    # K and V of head h on channels 2h and 2h+1 (mod the core's channels), its
                    # K and V scales on the next two: the history loads of consecutive heads
                    # stream side by side over every channel of the core, and the small scale
                    # loads barely hold up the next head's K and V in the in-order LD queue.
                    regs.append(KVRegions(*(self.layout.reserve(chs[(2 * h + i) % len(chs)], n)
                                            for i, n in ((0, C * d), (2, 4 * C), (1, C * d),
                                                         (3, 4 * C)))))
                    h += 1
                cp.kv.append(regs)
            home = self.target.channels_of(c)[0]
            cp.input = self.layout.reserve(home, T * a.dim * 2)
            cp.logits = self.layout.reserve(home, T * (cp.vocab_rows[1] - cp.vocab_rows[0]) * 2)
            cp.scratch = self.layout.reserve(home, T * a.dim * 2)
            # where the unfused ablation spills every intermediate (gbuf and abuf sized)
            cp.spill = self.layout.reserve(home, self.target.buffer("gbuf").bytes
                                           + self.target.buffer("abuf").bytes)
