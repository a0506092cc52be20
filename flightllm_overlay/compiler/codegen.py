"""Instruction generation: one step (prefill chunk or decode token) of a LLaMA model, per core.

The step's on-chip buffer plan and the unfused ablation live in `on_chip_decode.py`, the
attention block in `attention_code.py`, the two-plane (wide point) helpers in `two_planes.py`.
(`compiler/opt.py` subclasses `StepCodegen` for the OPT family: its own prologue, layer body,
q/k/v epilogue and final norm; everything else is shared.)

A step program runs `len` new tokens (at most T, its row capacity) at positions pos..pos+len-1,
reading the KV cache for positions 0..pos+len-1 (at most C, its context capacity); `pos` and `len`
are the scheduler's run-time parameters, so one program serves every position.  The residual
stream stays in the global buffer of every core for the whole step; the cores exchange the slices
they computed through the remote-access LD after a SYS barrier.  Rows T > 16 use MM, else MV.
"""
from __future__ import annotations

from ..errors import CompileError
from ..spec import isa
from ..spec.semantics import act_scale_bytes
from ..spec.isa import Instruction, f32_bits
from .attention_code import AttentionCode
from .deps import insert_tokens
from .on_chip_decode import OnChipDecode
from .placement import Placement
from .recipe import WIDE_POINTS
from .prefetch import hoist_weight_loads
from .staged_prefill import StagedPrefill
from .two_planes import TwoPlanes

#: the largest token group `dyn_m` and `dyn_rows` can name (MM/MV `m_group`, MISC `groups`)
_MAX_TOKEN_GROUP = min((1 << dict(isa.FORMATS[op].fields)[name]) - 1
                       for op, name in (("MM", "m_group"), ("MISC", "groups")))


class StepCodegen(TwoPlanes, AttentionCode, OnChipDecode, StagedPrefill):
    """Emits the instruction streams of one step for every core: every activation on chip
    (decode, and prefill steps that fit), or a prefill of more rows than fit staged through HBM
    (`staged_prefill.py`)."""

    split_reductions = True         # sfu_split also splits the quantisations' row maxima
    prefill_row_skip = True         # prefill MPE/MISC work skips the rows past the prompt
    wide_points_supported = WIDE_POINTS   # linear inputs it can run as two INT8 planes
    act_groups_supported = True     # activation scales per group of channels (`agroup`)

    def __init__(self, plan: Placement, rows: int, ctx: int, all_logits: bool,
                 fused: bool = True):
        self.fused = fused
        if rows > plan.t_max or ctx > plan.ctx:
            raise CompileError(f"step of {rows} rows x {ctx} context exceeds the placement "
                               f"({plan.t_max} x {plan.ctx})")
        self.p, self.T, self.C, self.all_logits = plan, rows, ctx, all_logits
        unsupported = set(plan.wide_points) - set(self.wide_points_supported)
        if unsupported:
            raise CompileError(f"this model family's code generator cannot run "
                               f"{sorted(unsupported)} as two INT8 planes; it can "
                               f"{list(self.wide_points_supported) or 'none'}")
        self._check_act_group(plan)
        self.plan_weight_slots(plan, ctx)
        self.staged = False
        try:
            self.plan_buffers(plan, rows, ctx)
        except CompileError as exc:
            if not (self.staged_prefill and rows > isa.MV_MAX_ROWS and "on-chip" in str(exc)):
                raise
            self.plan_staged(plan, rows, ctx)

    def _check_act_group(self, plan) -> None:
        """`plan.act_group` channels per activation scale at every linear input (0: one per
        row): the ISA's `agroup` index, refused where this generator or the model cannot."""
        group = plan.act_group
        if group not in isa.ACT_GROUPS:
            raise CompileError(f"activation scales per {group} channels: the ISA takes "
                               f"{[g for g in isa.ACT_GROUPS if g]} (or 0, one per row)")
        a = plan.args
        widths = (a.dim, a.n_heads * a.head_dim, a.hidden_dim)
        if group and (not self.act_groups_supported or any(k % group for k in widths)):
            raise CompileError(
                f"activation groups of {group} channels need this model family's LLaMA code "
                f"generator and linear inputs {widths} that are whole groups; pick another "
                f"group or none")
        self.agroup = isa.ACT_GROUPS.index(group)

    def point_agroup(self, point: str) -> int:
        """The `agroup` of a linear input: the model's, or 0 at a wide point (its two planes
        have one scale per row each)."""
        return 0 if self.planes(point) == 2 else self.agroup

    def act_scale_bytes(self, k: int) -> int:
        """Bytes of scales per row of a linear input of k channels (HS holds rows of them): the
        FP32 row scale, and with activation groups an exponent byte per group."""
        return act_scale_bytes(self.agroup, k)

    # -- emit helpers -----------------------------------------------------------------------------
    def _barrier(self) -> Instruction:
        """The SYS barrier before the cores exchange slices: a full fence, or (schedule option
        `compute_fence`) one that fences compute only while weight loads stream on."""
        fence = "compute" if self.p.schedule.compute_fence else "all"
        return Instruction("SYS", op="barrier", fence=fence)

    def _move(self, op, s, region, buf, addr, rows, row_bytes, hbm_stride=None,
              buf_stride=None, dyn="static", extra=0, **more):
        stripe = region.stripe if region.stripe > 1 else 0     # a channel count
        s.append(Instruction(op, buf=buf, dyn=dyn, channel=region.channel, stripe=stripe, **more,
                             hbm_addr=region.offset + extra, buf_addr=addr, rows=rows,
                             row_bytes=row_bytes, hbm_stride=hbm_stride or row_bytes,
                             buf_stride=buf_stride or row_bytes))

    def _ld(self, s, region, buf, addr, rows, row_bytes, **kw):
        self._move("LD", s, region, buf, addr, rows, row_bytes, **kw)

    def _st(self, s, region, buf, addr, rows, row_bytes, **kw):
        self._move("ST", s, region, buf, addr, rows, row_bytes, **kw)

    def _token_rows(self, rows: int) -> bool:
        """Whether `rows` are whole head-major blocks of this prefill step's T token rows, whose
        rows past the prompt (token >= len) the MPE and MISC may skip (`dyn_m`, `dyn_rows`):
        their results are never read by the prompt's rows, nor stored (KV appends and logits
        follow `len`).  A staged prefill works on row ranges, so it keeps every row."""
        T = self.T
        return (self.prefill_row_skip and 1 < T <= _MAX_TOKEN_GROUP and not self.staged
                and rows > 0 and rows % T == 0)

    def _misc(self, s, op, **f):
        if self._token_rows(f.get("rows", 0)) and not f.get("given_max") \
                and f.get("groups", 0) in (0, self.T):
            f.update(groups=self.T, dyn_rows=1)
        s.append(Instruction("MISC", op=op, **f))

    def _quant(self, s, a_addr, rows, k, out, out2, a_stride=None, out_stride=None, **f):
        self._misc(s, "quant", a_addr=a_addr, rows=rows, k=k, out_addr=out, out2_addr=out2,
                   out_abuf=1, a_stride=a_stride or 2 * k, out_stride=out_stride or k, **f)

    def _mpe(self, s, m, **f):
        op = "MV" if m <= isa.MV_MAX_ROWS else "MM"
        tile = self.p.target.mm_rows
        if self._token_rows(m) and tile % self.T == 0:      # every tile starts a token block
            f = dict(f, dyn_m=1, m_group=self.T)
        for m0 in range(0, m, tile):
            mm = min(tile, m - m0)
            g = dict(f)
            g["a_addr"] = f["a_addr"] + m0 * f["a_stride"]
            g["a_scale"] = f["a_scale"] + m0 * (self.act_scale_bytes(f["k"]) if f.get("agroup")
                                                else 4)
            g["out_addr"] = f["out_addr"] + m0 * f["out_stride"]
            s.append(Instruction(op, m=mm, **g))

    def _linear(self, s, tiles, a_addr, k, rows, segments, after=None, agroup=None, lo=None):
        """MPE over weight tiles (round robin over the weight-buffer slots): rows [r0, r1) of the
        (tiled) matrix go to out_addr with out_stride, for each (r0, r1, out_addr, out_stride)
        in `segments`; A is `rows` x `k` INT8 at a_addr with scales at HS.  `after(s, end)`, if
        given, follows each tile: rows [0, end) of the matrix are then computed.  `agroup`: the
        input's activation groups (default the model's).  `lo`: a wide input's second plane (the
        `rows` rows after A, scales after A's) goes through each loaded tile too, into these
        out_addrs (one per segment, same strides)."""
        agroup = self.agroup if agroup is None else agroup
        planes = [(a_addr, self.HS, segments)]
        if lo is not None:              # (two planes: one scale per row each, no groups)
            planes.append((a_addr + rows * k, self.HS + 4 * rows,
                           [(r0, r1, o, st) for (r0, r1, _, st), o in zip(segments, lo)]))
        for tile in tiles:
            half = self._next_half()
            self._load_tile(s, tile, half)
            for a, scale, segs in planes:
                self._tile_mpes(s, tile, half, a, scale, k, rows, segs, agroup)
            if after is not None:
                after(s, tile.row0 + tile.rows)

    def _tile_mpes(self, s, tile, half, a_addr, a_scale, k, rows, segments, agroup):
        """The MPEs of one loaded tile: its rows of each output segment."""
        t0, t1 = tile.row0, tile.row0 + tile.rows
        for r0, r1, out, stride in segments:
            lo, hi = max(r0, t0), min(r1, t1)
            if lo >= hi:
                continue
            w = self._tile_operand(tile, half, lo - t0, hi - t0)
            self._mpe(s, rows, n=hi - lo, k=k, a_addr=a_addr, a_scale=a_scale, a_stride=k,
                      out_addr=out + 2 * (lo - r0), out_stride=stride, agroup=agroup, **w)

    def _tile_operand(self, tile, half, lo, hi) -> dict:
        """MPE weight fields for local rows [lo, hi) of a tile loaded at `half`: INT8 rows, or
        a sparse tile's kept weights, codes and indices from block-row lo / 16 on."""
        scales = half + tile.kept + 4 * lo
        if tile.exact:                  # rows of codes and group parameters
            return dict(w_addr=half + tile.values_before(lo), w_scale=scales,
                        w_stride=tile.row_bytes, wcodes=isa.WEIGHT_GROUPS.index(tile.group) + 1)
        if not tile.sparse:
            return dict(w_addr=half + lo * tile.k, w_scale=scales, w_stride=tile.k)
        if lo % 16 or (hi % 16 and hi != tile.rows):
            raise CompileError(f"a sparse tile is read in whole 16-row blocks; rows [{lo}, {hi}) "
                               f"of a tile split an output segment mid-block (head or slice "
                               f"widths must be multiples of 16 for sparse weights)")
        v0, v1 = tile.values_before(lo), tile.values_before(hi)
        m0, m1 = tile.meta_before(lo), tile.meta_before(hi)
        return dict(w_addr=half + v0, w_scale=scales, sparse=1, nnz=(v1 - v0) // 16,
                    meta_addr=self.meta_base + m0, meta_len=m1 - m0,
                    fsb_addr=self.fsb_base + lo // 16 * (tile.k // 16))

    def _load_tile(self, s, tile, half):
        """One striped LD of a weight tile; packed tiles pass the dequantisation unit, which
        writes the kept INT8 weights (exact tiles: each row's codes and group parameters) and
        then the FP32 row scales (and, if sparse, the N:16 codes and indices to the fsb and meta
        buffers of the same half)."""
        if not tile.fmt:
            return self._ld(s, tile.region, "wbuf", half, 1, tile.region.nbytes)
        sp = {}
        if tile.sparse:
            sp = dict(sparse=1, wn=tile.kept // 16, wmeta=tile.meta_before(tile.rows),
                      meta_addr=self.meta_base, fsb_addr=self.fsb_base)
        self._ld(s, tile.region, "wbuf", half, tile.rows, tile.region.nbytes, wfmt="packed",
                 wk=tile.k, wbits=isa.WEIGHT_BITS.index(tile.bits),
                 wgroup=isa.WEIGHT_GROUPS.index(tile.group) if tile.bits < 8 else 0,
                 wcodes=int(tile.exact), **sp)

    def _next_half(self):
        """The next weight slot, round robin (two slots: ping-pong halves), and the matching
        slots of the meta and fsb buffers."""
        self._half = (getattr(self, "_half", -1) + 1) % len(self.w_ping)
        self.meta_base = self._half * self.p.meta_half
        self.fsb_base = self._half * self.p.fsb_half
        return self.w_ping[self._half]

    def _exchange(self, s, cp, base, row_stride, ranges, elem=2):
        """After a barrier, fetch the other cores' column slices of a (T, ...) FP16 array."""
        for other, (c0, c1) in ranges:
            if other == cp.index or c1 <= c0:
                continue
            s.append(Instruction("LD", buf="gbuf", remote=1, remote_core=other,
                                 hbm_addr=base + elem * c0, hbm_stride=row_stride,
                                 buf_addr=base + elem * c0, rows=self.T,
                                 row_bytes=elem * (c1 - c0), buf_stride=row_stride))

    # -- the step ---------------------------------------------------------------------------------
    def core_stream(self, cp) -> list:
        s = []
        if self.staged:
            self._staged_stream(s, cp)
        else:
            self._prologue(s, cp)
            for li, tiles in enumerate(cp.layers):
                self._layer(s, cp, li, tiles)
            self._head(s, cp)
        s.append(Instruction("SYS", op="end"))
        if not self.fused:
            s = self.unfuse(s, cp)
        s, acc = hoist_weight_loads(s, self.C)
        return insert_tokens(s, self.C, acc)

    def _prologue(self, s, cp):
        """The step's inputs: the new tokens' embeddings (written by the host), RoPE rows."""
        self._ld(s, cp.input, "gbuf", self.X, self.T, self.a.dim * 2)
        self._prologue_rope(s, cp)

    def _prologue_rope(self, s, cp):
        """The RoPE table rows of the step's positions."""
        if self.T > 1:      # rows past `len` rotate by zeros, not by stale (maybe inf) rows
            self._ld(s, cp.rope_zero, "gbuf", self.RT, self.T, self.d * 2)
        self._ld(s, cp.rope, "gbuf", self.RT, self.T, self.d * 2, dyn="at_pos")

    def _layer(self, s, cp, li, tiles):
        """One LLaMA block: RMSNorm, attention, o_proj, residual; RMSNorm, SwiGLU, residual."""
        a, T = self.a, self.T
        dim, hd = a.dim, a.n_heads * a.head_dim
        barrier = self._barrier()
        # attention block
        self._ld(s, cp.norms[li], "gbuf", self.NORM, 1, 2 * dim * 2)
        self._norm_quant(s, self.NORM, "attn_in")
        self._attention(s, cp, li, tiles["wqkv"])
        s.append(barrier)
        self._exchange(s, cp, self.ATT, hd * 2, self.q_ranges)
        self._act_quant(s, "attn_out", self.ATT, T, hd, copy_core=cp.index,
                        **self._gather_maxima(s, cp, self.AMXA, self._head_maxima()))
        self._wide_o_linear(s, cp, "attn_out", tiles["wo"], hd)
        self._residual_add(s, cp, barrier)
        # feed-forward block
        self._norm_quant(s, self.NORM + 2 * dim, "ffn_in")
        fc = cp.ffn_rows[1] - cp.ffn_rows[0]
        up, up_lo = self.GATE + T * fc * 2, self.GATE_LO + T * fc * 2
        done = [0, 0]       # FFN columns whose SiLU x up product is emitted; sub-vectors
        maxima = self._ffn_maxima(li)

        def swiglu(s, end):
            """SiLU(gate) x up for the columns whose up row is computed (`end`: matrix rows);
            with split reductions, each sub-vector's row maximum to its slot for the quant."""
            j0, j1 = done[0], _up_columns_done(end, fc)
            if j1 <= j0:
                return
            done[0] = j1
            mx = dict(amax=1, out2_addr=self.AMXF + 4 * (maxima[cp.index][0] + done[1])) \
                if maxima else {}
            done[1] += 1
            self._ffn_plane_sum(s, self.GATE, self.GATE_LO, up, up_lo, fc, j0, j1)
            self._misc(s, "silu", a_addr=self.GATE + 2 * j0, out_addr=self.GATE + 2 * j0,
                       rows=T, k=j1 - j0, a_stride=2 * fc, out_stride=2 * fc)
            self._misc(s, "emul", a_addr=self.GATE + 2 * j0, b_addr=up + 2 * j0,
                       out_addr=self.FF + 2 * (cp.ffn_rows[0] + j0), rows=T, k=j1 - j0,
                       a_stride=2 * fc, b_stride=2 * fc, out_stride=2 * a.hidden_dim, **mx)
        self._linear(s, tiles["w_gate_up"], self.HQ, dim, T,
                     [(0, 2 * fc, self.GATE, 4 * fc)] if T == 1 else
                     [(0, fc, self.GATE, 2 * fc), (fc, 2 * fc, up, 2 * fc)],
                     after=swiglu if self.split else None, agroup=self.point_agroup("ffn_in"),
                     lo=(None if self.planes("ffn_in") == 1 else
                         [self.GATE_LO] if T == 1 else [self.GATE_LO, up_lo]))
        if fc:
            swiglu(s, 2 * fc)
        s.append(barrier)
        self._exchange(s, cp, self.FF, a.hidden_dim * 2, self.f_ranges)
        self._act_quant(s, "ffn_mid", self.FF, T, a.hidden_dim, copy_core=cp.index,
                        **self._gather_maxima(s, cp, self.AMXF, maxima))
        self._wide_o_linear(s, cp, "ffn_mid", tiles["w_down"], a.hidden_dim)
        self._residual_add(s, cp, barrier)

    def _wide_o_linear(self, s, cp, point, tiles, k):
        """o_proj or down_proj into this core's columns of O."""
        self._planes_linear(s, point, tiles, k, self.O + 2 * cp.o_rows[0],
                            cp.o_rows[1] - cp.o_rows[0], 2 * self.a.dim)

    # -- split reductions (sfu_split, decode): partial row maxima, one-pass quantisation ----------
    def _norm_quant(self, s, gain, point):
        """RMSNorm X -> H and its quantisation into HQ (two planes at a wide `point`, attn_in or
        ffn_in); with split reductions the RMSNorm writes the row maximum and the quantisation
        makes one pass (not a wide point's)."""
        dim, T, wide = self.a.dim, self.T, self.planes(point) == 2
        mx = dict(amax=1, out2_addr=self.AMX) if self.reductions and not wide else {}
        self._misc(s, "rmsnorm", a_addr=self.X, b_addr=gain, out_addr=self.H, rows=T, k=dim,
                   a_stride=2 * dim, out_stride=2 * dim, bcast_b=1,
                   imm=f32_bits(self.a.norm_eps), **mx)
        if wide:
            return self._act_quant(s, point, self.H, T, dim)
        self._quant(s, self.H, T, dim, self.HQ, self.HS, agroup=self.agroup,
                    **(dict(given_max=1, b_addr=self.AMX, groups=1) if mx else {}))

    def _head_maxima(self) -> list:
        """[(first slot, slots)] per core of the attention output's partial maxima (one per q
        head, global order), or [] without split reductions."""
        if not self.reductions:
            return []
        return [(c.q_heads[0], len(c.q_heads)) if c.q_heads else (0, 0) for c in self.p.cores]

    def _ffn_maxima(self, li: int) -> list:
        """[(first slot, slots)] per core of the FFN hidden state's partial maxima (one per
        SiLU x up sub-vector), or [] without split reductions or past the `groups` field."""
        if not self.reductions:
            return []
        out, n = [], 0
        for cp in self.p.cores:
            fc, prev, cuts = cp.ffn_rows[1] - cp.ffn_rows[0], 0, 0
            for tile in cp.layers[li]["w_gate_up"]:
                j1 = _up_columns_done(tile.row0 + tile.rows, fc)
                cuts, prev = cuts + (j1 > prev), max(prev, j1)
            out.append((n, cuts))
            n += cuts
        return out if 0 < n <= self.max_groups and 4 * n <= self.AMXF_BYTES else []

    def _gather_maxima(self, s, cp, base, slots) -> dict:
        """After a barrier: the other cores' partial maxima into this core's slots at `base`;
        the quant fields that use them (none without split reductions)."""
        if not slots:
            return {}
        for other, (first, n) in enumerate(slots):
            if other != cp.index and n:
                s.append(Instruction("LD", buf="gbuf", remote=1, remote_core=other,
                                     hbm_addr=base + 4 * first, hbm_stride=4 * n,
                                     buf_addr=base + 4 * first, buf_stride=4 * n, rows=1,
                                     row_bytes=4 * n))
        return dict(given_max=1, b_addr=base, groups=sum(n for _, n in slots))

    def _residual_add(self, s, cp, barrier):
        """X += O after the barrier and the exchange of the cores' O slices; with sfu_split the
        core adds its own slice before the barrier and each other slice as it arrives."""
        dim, T = self.a.dim, self.T

        def eadd(c0, c1):
            if c1 > c0:
                self._misc(s, "eadd", a_addr=self.X + 2 * c0, b_addr=self.O + 2 * c0,
                           out_addr=self.X + 2 * c0, rows=T, k=c1 - c0, a_stride=2 * dim,
                           b_stride=2 * dim, out_stride=2 * dim)
        if not self.split:
            s.append(barrier)
            self._exchange(s, cp, self.O, dim * 2, self.o_ranges)
            return eadd(0, dim)
        eadd(*cp.o_rows)
        s.append(barrier)
        for other, (c0, c1) in self.o_ranges:
            if other != cp.index:
                self._exchange(s, cp, self.O, dim * 2, [(other, (c0, c1))])
                eadd(c0, c1)

    def _final_norm(self, s, cp, rows):
        """The final RMSNorm of the rows kept for the LM head: X -> H."""
        dim = self.a.dim
        self._ld(s, cp.final_norm, "gbuf", self.NORM, 1, dim * 2)
        self._misc(s, "rmsnorm", a_addr=self.X, b_addr=self.NORM, out_addr=self.H, rows=rows,
                   k=dim, a_stride=2 * dim, out_stride=2 * dim, bcast_b=1,
                   imm=f32_bits(self.a.norm_eps))

    def _head(self, s, cp):
        T, dim = self.T, self.a.dim
        rows = T
        if not self.all_logits and T > 1:
            # keep only the last real token: out to HBM, back in by the run-time length
            self._st(s, cp.scratch, "gbuf", self.X, T, dim * 2)
            self._ld(s, cp.scratch, "gbuf", self.X, 1, dim * 2, hbm_stride=dim * 2, dyn="last")
            rows = 1
        self._final_norm(s, cp, rows)
        self._act_quant(s, "head_in", self.H, rows, dim)
        self._lm_head(s, cp, rows, self.LG)

    def _lm_head(self, s, cp, rows, lg):
        """Logits of `rows` quantised rows at HQ (two planes of them if the LM head's input is
        wide), column block by column block through `lg`."""
        dim, n = self.a.dim, self.planes("head_in")
        vc = cp.vocab_rows[1] - cp.vocab_rows[0]
        cols_max = self.r1_bytes // (2 * n * rows) // 16 * 16
        for tile in cp.lm_head:
            half = self._next_half()
            self._load_tile(s, tile, half)
            for c0 in range(0, tile.rows, cols_max):      # logits columns that fit on chip
                cols = min(cols_max, tile.rows - c0)
                self._mpe(s, n * rows, n=cols, k=dim, a_addr=self.HQ, a_scale=self.HS,
                          a_stride=dim, out_addr=lg, out_stride=2 * cols,
                          agroup=self.point_agroup("head_in"),
                          **self._tile_operand(tile, half, c0, c0 + cols))
                if n == 2:
                    self._plane_sum(s, lg, rows, cols, 2 * cols)
                self._st(s, cp.logits, "gbuf", lg, rows, 2 * cols, hbm_stride=2 * vc,
                         dyn="step" if rows > 1 else "static", extra=2 * (tile.row0 + c0))


def _up_columns_done(end: int, fc: int) -> int:
    """FFN columns whose up row is computed once rows [0, end) of the stacked [gate; up] matrix
    (fc rows each) are."""
    return min(max(end - fc, 0), fc)
