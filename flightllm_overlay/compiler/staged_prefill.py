"""Prefill at the MM's full 128 rows: the residual stream staged through HBM in row blocks, the cores' slices gathered row block by row block, on-chip buffers shared by lifetime.

Always-on-chip is FlightLLM's decode design; a 128-token prefill of LLaMA2-7B does not fit it (the
residual alone is 1 MiB of FP16 per core, the FFN hidden state 2.8 MB).  Halving the launch until
everything fits gives 16-row launches, which run on the MV unit and stream every weight eight
times per bucket.  This plan keeps the launch at the MM's 128 rows instead:

- the residual stream X lives in HBM (`cp.input` for the first layer, then `cp.scratch`); each
  RMSNorm and residual add runs over row blocks of `rb` rows (LD, MISC, ST);
- each core keeps only its own slice of the attention output, the o_proj/down_proj outputs and
  the FFN hidden state (compact, in its global buffer); a quantisation that needs whole rows
  first gathers a row block from every core (remote LD, the own slice by a local copy: LD with
  `remote_core` = the core itself) and quantises it into the activation buffer;
- gbuf and abuf regions are placed by lifetime (`_Lifetimes`): two regions share bytes only if
  no phase of the layer uses both.  A region other cores read after a barrier stays live until
  the next barrier; a region an HBM load writes is live one phase early (a compute-only fence
  lets HBM loads run ahead across one barrier).

Every instruction computes per row exactly what the on-chip plan computes, so the results are
the same bit for bit (tests/test_staged_prefill.py).  OPT keeps the on-chip plan (its
codegen sets `staged_prefill = False`).
"""
from __future__ import annotations

from ..errors import CompileError
from ..spec.isa import Instruction, f32_bits

# phases of one layer (a region's lifetime is a set of them; a layer's phases repeat per layer)
N0, QKV, ATTN, G_ATT, OPROJ, RES1, FFN, ACT, G_FF, DOWN, RES2, HEAD = range(12)
ALL = frozenset(range(12))


class _Lifetimes:
    """Places regions of one on-chip buffer: the lowest 64-byte aligned offset that overlaps no
    region placed already whose phases intersect its own (largest regions first)."""

    def __init__(self, name: str, size: int):
        self.name, self.size, self.wanted = name, size, []

    def add(self, what: str, nbytes: int, phases) -> None:
        self.wanted.append((what, -(-nbytes // 64) * 64, frozenset(phases)))

    def place(self) -> dict:
        placed, at = [], {}
        for what, nbytes, phases in sorted(self.wanted, key=lambda w: -w[1]):
            addr = 0
            for a0, a1, ph in sorted((p for p in placed if p[2] & phases), key=lambda p: p[0]):
                if addr + nbytes <= a0:
                    break
                addr = max(addr, a1)
            if addr + nbytes > self.size:
                raise CompileError(f"on-chip {self.name} overflows placing {what} for a staged "
                                   f"prefill: needs {addr + nbytes} of {self.size} bytes; use a "
                                   f"smaller step (rows) or context capacity")
            placed.append((addr, addr + nbytes, phases))
            at[what] = addr
        return at


class StagedPrefill:
    """The staged plan and layer body of a LLaMA step code generator (`StepCodegen`)."""

    staged_prefill = True           # a family whose layer body is not staged sets False

    def plan_staged(self, plan, rows: int, ctx: int) -> None:
        """Place a staged prefill step's regions: the largest row block, then the widest block
        of logits columns, that fit."""
        vc = max(c.vocab_rows[1] - c.vocab_rows[0] for c in plan.cores)
        cols = min(-(-vc // 16) * 16, plan.tile_rows(plan.args.dim), 4096)
        last = None
        for rb in (32, 16, 8):
            lg = cols
            while lg >= 16:
                try:
                    return self._plan_staged(plan, rows, ctx, min(rb, rows), lg)
                except CompileError as exc:
                    last = exc
                lg = lg // 32 * 16
        raise last

    def _plan_staged(self, plan, T: int, C: int, rb: int, lg_cols: int) -> None:
        a, t, d = plan.args, plan.target, self.d
        dim, hd, hid = a.dim, a.n_heads * d, a.hidden_dim
        cores = plan.cores
        nq = max(len(c.q_heads) for c in cores)
        nk = max(len(c.kv_heads) for c in cores)
        oc = max(c.o_rows[1] - c.o_rows[0] for c in cores)
        fc = max(c.ffn_rows[1] - c.ffn_rows[0] for c in cores)
        wide = set(plan.wide_points)
        o1, o2 = (2 if p in wide else 1 for p in ("attn_out", "ffn_mid"))   # output planes
        g = _Lifetimes("global buffer", t.buffer("gbuf").bytes)
        g.add("RT", T * d * 2, ALL)
        g.add("NORM", 2 * dim * 2, ALL)
        g.add("VSC", 4 * C * self.kv_slots, ALL)
        g.add("XB", rb * dim * 2, {N0, OPROJ, RES1, DOWN, RES2, HEAD})     # HBM-loaded: early
        g.add("HB", rb * dim * 2, {N0, RES1, HEAD})
        g.add("Q", (nq + 2 * nk) * T * d * 2, {QKV})
        if "attn_in" in wide:                       # its second plane's q/k/v
            g.add("Q_LO", (nq + 2 * nk) * T * d * 2, {QKV})
        g.add("S", T * C * 2, {ATTN})
        qk_wide = wide & {"q", "k"}                 # wide scores: a second pass's partials
        if qk_wide:
            g.add("S2", T * C * 2, {ATTN})
        g.add("ATT", T * nq * d * 2, {ATTN, G_ATT, OPROJ})     # read by the others until B2
        g.add("GB_ATT", rb * hd * 2, {G_ATT})
        g.add("O1", o1 * T * oc * 2, {OPROJ, RES1})                 # read by the others until B2b
        g.add("GB_O1", rb * dim * 2, {RES1})
        g.add("GATE", T * fc * 2, {FFN, ACT, G_FF, DOWN})       # the FFN hidden slice: until B4
        g.add("UP", T * fc * 2, {FFN, ACT})
        if "ffn_in" in wide:                        # its second plane's gate/up
            g.add("GATE_LO", T * fc * 2, {FFN, ACT})
            g.add("UP_LO", T * fc * 2, {FFN, ACT})
        g.add("GB_FF", rb * hid * 2, {G_FF})
        g.add("O2", o2 * T * oc * 2, {DOWN, RES2, N0, QKV, ATTN, HEAD})    # until the next B1
        g.add("GB_O2", rb * dim * 2, {RES2})
        self.lg_bytes = (T * lg_cols * 2 if self.all_logits else lg_cols * 2) * (
            2 if "head_in" in wide else 1)
        g.add("LG", self.lg_bytes, {HEAD})
        at = g.place()
        ab = _Lifetimes("activation buffer", t.buffer("abuf").bytes)
        uses = {N0, QKV, G_ATT, OPROJ, RES1, FFN, G_FF, DOWN, HEAD}
        n = 2 if wide else 1                    # planes of the wide linear inputs
        ab.add("HQ", n * T * max(dim, hd, hid), uses)
        ab.add("HS", n * T * self.act_scale_bytes(max(dim, hd, hid)), uses)
        ab.add("QQ", (nq + 2 * nk) * T * d, {QKV, ATTN})
        ab.add("QS", 4 * (nq + 2 * nk) * T, {QKV, ATTN})
        if qk_wide:                                 # a wide q's or k's second plane
            ab.add("QL", (nq + nk) * T * d, {QKV, ATTN})
            ab.add("QLS", 4 * (nq + nk) * T, {QKV, ATTN})
        self.S2 = self.QL = self.QLS = self.Q_LO = self.GATE_LO = self.UP_LO = 0
        ab.add("PQ", T * C, {ATTN})
        ab.add("PS", 4 * T, {ATTN})
        at.update(ab.place())
        for name, addr in at.items():
            setattr(self, name, addr)
        self.rb, self.staged, self.att_rows, self.split, self.reductions = rb, True, T, False, \
            False
        self.S_alt, self.PQ_alt, self.PS_alt = self.S, self.PQ, self.PS
        self.r1_bytes = self.lg_bytes

    # -- the staged step --------------------------------------------------------------------------
    def _staged_stream(self, s, cp) -> None:
        self._prologue_rope(s, cp)
        self.x_src = cp.input               # the host's embeddings, then the staged residual
        for li, tiles in enumerate(cp.layers):
            self._staged_layer(s, cp, li, tiles)
        self._staged_head(s, cp)

    def _blocks(self):
        return [(r0, min(r0 + self.rb, self.T)) for r0 in range(0, self.T, self.rb)]

    def _rows_norm_quant(self, s, gain, x_addr, r0, r1, point="attn_in", total=None):
        """RMSNorm of rows [r0, r1) at x_addr (one block) into HB, quantised into HQ rows (of
        `total`, default T, for a wide `point`'s second plane)."""
        dim, n = self.a.dim, r1 - r0
        self._misc(s, "rmsnorm", a_addr=x_addr, b_addr=gain, out_addr=self.HB, rows=n, k=dim,
                   a_stride=2 * dim, out_stride=2 * dim, bcast_b=1,
                   imm=f32_bits(self.a.norm_eps))
        self._act_quant(s, point, self.HB, n, dim, r0=r0, total=self.T if total is None else total)

    def _load_x(self, s, r0, r1):
        dim = self.a.dim
        self._ld(s, self.x_src, "gbuf", self.XB, r1 - r0, dim * 2, extra=r0 * dim * 2)

    def _gather(self, s, gb, src, ranges, k, r0, r1):
        """Rows [r0, r1) of every core's compact slice at `src` (core c's columns c0..c1 with
        row stride 2 (c1 - c0)) into the row block at `gb` (row stride 2 k)."""
        for other, (c0, c1) in ranges:
            if c1 <= c0:
                continue
            w = 2 * (c1 - c0)
            s.append(Instruction("LD", buf="gbuf", remote=1, remote_core=other,
                                 hbm_addr=src + r0 * w, hbm_stride=w, buf_addr=gb + 2 * c0,
                                 rows=r1 - r0, row_bytes=w, buf_stride=2 * k))

    def _gather_quant(self, s, point, gb, src, ranges, k):
        """Whole rows of a sliced (T, k) FP16 array gathered block by block and quantised into
        HQ (row stride k) with their scales at HS (two planes at a wide `point`: the block is
        this core's own, so the residual overwrites it in place)."""
        for r0, r1 in self._blocks():
            self._gather(s, gb, src, ranges, k, r0, r1)
            self._act_quant(s, point, gb, r1 - r0, k, r0=r0, total=self.T)

    def _residual(self, s, cp, gb, src, gain=None):
        """X += the o_proj/down_proj output gathered from every core, block by block, stored
        back to HBM; with `gain`, the next RMSNorm and quantisation of the block too."""
        dim = self.a.dim
        for r0, r1 in self._blocks():
            self._load_x(s, r0, r1)
            self._gather(s, gb, src, self.o_ranges, dim, r0, r1)
            self._misc(s, "eadd", a_addr=self.XB, b_addr=gb, out_addr=self.XB, rows=r1 - r0,
                       k=dim, a_stride=2 * dim, b_stride=2 * dim, out_stride=2 * dim)
            self._st(s, cp.scratch, "gbuf", self.XB, r1 - r0, dim * 2, extra=r0 * dim * 2)
            if gain is not None:
                self._rows_norm_quant(s, gain, self.XB, r0, r1, "ffn_in")
        self.x_src = cp.scratch

    def _staged_layer(self, s, cp, li, tiles):
        """One LLaMA block over HBM-staged rows: the on-chip layer's instructions per row block
        where a MISC op needs whole rows, 128-row MM launches everywhere else."""
        a, T, d = self.a, self.T, self.d
        dim, hd, hid = a.dim, a.n_heads * d, a.hidden_dim
        self._ld(s, cp.norms[li], "gbuf", self.NORM, 1, 2 * dim * 2)
        for r0, r1 in self._blocks():                                   # N0
            self._load_x(s, r0, r1)
            self._rows_norm_quant(s, self.NORM, self.XB, r0, r1)
        self._attention(s, cp, li, tiles["wqkv"])                       # QKV, ATTN
        s.append(self._barrier())                                       # B1
        att_ranges = [(i, (c0, c1)) for i, (c0, c1) in self.q_ranges]
        self._gather_quant(s, "attn_out", self.GB_ATT, self.ATT, att_ranges, hd)  # G_ATT
        oc = cp.o_rows[1] - cp.o_rows[0]
        self._planes_linear(s, "attn_out", tiles["wo"], hd, self.O1, oc, 2 * oc)    # OPROJ
        s.append(self._barrier())                                       # B2
        self._residual(s, cp, self.GB_O1, self.O1, gain=self.NORM + 2 * dim)         # RES1
        s.append(self._barrier())                                       # B2b: O1 read by all
        fc = cp.ffn_rows[1] - cp.ffn_rows[0]
        self._linear(s, tiles["w_gate_up"], self.HQ, dim, T,                         # FFN
                     [(0, fc, self.GATE, 2 * fc), (fc, 2 * fc, self.UP, 2 * fc)],
                     agroup=self.point_agroup("ffn_in"),
                     lo=[self.GATE_LO, self.UP_LO] if self.planes("ffn_in") == 2 else None)
        self._ffn_plane_sum(s, self.GATE, self.GATE_LO, self.UP, self.UP_LO, fc, 0, fc)
        if fc:                                                                       # ACT
            self._misc(s, "silu", a_addr=self.GATE, out_addr=self.GATE, rows=T, k=fc,
                       a_stride=2 * fc, out_stride=2 * fc)
            self._misc(s, "emul", a_addr=self.GATE, b_addr=self.UP, out_addr=self.GATE, rows=T,
                       k=fc, a_stride=2 * fc, b_stride=2 * fc, out_stride=2 * fc)
        s.append(self._barrier())                                       # B3
        self._gather_quant(s, "ffn_mid", self.GB_FF, self.GATE, self.f_ranges, hid)  # G_FF
        self._planes_linear(s, "ffn_mid", tiles["w_down"], hid, self.O2, oc, 2 * oc)  # DOWN
        s.append(self._barrier())                                       # B4
        self._residual(s, cp, self.GB_O2, self.O2)                                   # RES2

    def _staged_head(self, s, cp):
        """Final RMSNorm of the rows the LM head needs (the last real one, or all of them for
        perplexity), read back from the staged residual, then the LM head."""
        dim = self.a.dim
        self._ld(s, cp.final_norm, "gbuf", self.NORM, 1, dim * 2)
        if self.all_logits:
            for r0, r1 in self._blocks():
                self._load_x(s, r0, r1)
                self._rows_norm_quant(s, self.NORM, self.XB, r0, r1, "head_in")
            rows = self.T
        else:
            self._ld(s, self.x_src, "gbuf", self.XB, 1, dim * 2, hbm_stride=dim * 2, dyn="last")
            self._rows_norm_quant(s, self.NORM, self.XB, 0, 1, "head_in", total=1)
            rows = 1
        self._lm_head(s, cp, rows, self.LG)
