"""Instruction generation of a LLaMA step's attention block: q/k/v projections, RoPE, their quantisation, the KV-cache appends and history loads, scores, softmax and P.V, per core.

A mixin of `codegen.StepCodegen` (it reads the step's buffer plan and emit helpers there).
Decode (one row) runs a query group per pass; with the schedule's sfu_split each head's epilogue
runs under the next tiles' MV and heads alternate between two score buffers.  Wide q or k
(`two_planes.py`): the scores are hi.hi + hi.lo + lo.hi.
"""
from __future__ import annotations

from ..spec.isa import f32_bits
from .quantize import softmax_scale


class AttentionCode:
    """The attention block of `StepCodegen` (and of the staged prefill, which calls it)."""

    def _attention(self, s, cp, li, wqkv):
        """q/k/v projections, RoPE, KV-cache append and attention for this core's heads."""
        a, d, T, C, G = self.a, self.d, self.T, self.C, self.p.group
        dim = a.dim
        nq, nk = len(cp.q_heads), len(cp.kv_heads)
        if not nk:
            return
        if T == 1:              # head-major equals token-major: one segment for q, k and v
            segments = [(0, (nq + 2 * nk) * d, self.Q, 2 * (nq + 2 * nk) * d)]
        else:                   # each head's rows to its own (T, d) block
            segments = [(h * d, (h + 1) * d, self.Q + h * T * d * 2, 2 * d)
                        for h in range(nq + 2 * nk)]
        done = [0]              # heads whose epilogue and quantisation are emitted

        def epilogue(s, end):
            """The q/k/v epilogue and quantisation of the heads computed (`end`: matrix rows)."""
            h0, h1 = done[0], min(end // d, nq + 2 * nk)
            if h1 <= h0:
                return
            done[0] = h1
            self._head_plane_sum(s, h0, h1)
            self._qkv_epilogue_heads(s, cp, nq, nk, h0, h1)
            self._qkv_quant(s, nq, nk, h0, h1)
            for h in range(max(h0, nq), h1):      # the k and v heads' KV-cache appends
                self._append_kv(s, cp, li, nq, nk, h - nq)
        lo = ([out - self.Q + self.Q_LO for _, _, out, _ in segments]
              if self.planes("attn_in") == 2 else None)      # a wide input's second plane
        if self.split:          # decode: per head, under the next tiles' MV
            self._linear(s, wqkv, self.HQ, dim, T, segments, after=epilogue, lo=lo,
                         agroup=self.point_agroup("attn_in"))
            epilogue(s, (nq + 2 * nk) * d)
        else:
            self._linear(s, wqkv, self.HQ, dim, T, segments, lo=lo,
                         agroup=self.point_agroup("attn_in"))
            self._head_plane_sum(s, 0, nq + 2 * nk)
            self._qkv_epilogue(s, cp, nq, nk)
            self._qkv_quant(s, nq, nk, 0, nq + 2 * nk)
        R = self.att_rows
        if not self.split:      # every head's KV append first: no history load of an early
            for j in range(nk):         # head holds up a later head's append
                self._append_kv(s, cp, li, nq, nk, j)
                self._append_kv(s, cp, li, nq, nk, nk + j)
        for j in range(nk):
            kv = cp.kv[li][j]
            slot = j % self.kv_slots
            # K rows, K scales, V rows, then a wide k's second plane: its rows and scales
            kc = self.kc0 + slot * self.kv_slot
            kcs, vc, vsc = kc + C * d, kc + C * d + 4 * C, self.VSC + 4 * C * slot
            klo, klos = vc + C * d, vc + 2 * C * d
            # K and V first: on two channels they stream at once (the LD queue is in order)
            self._ld(s, kv.k, "wbuf", kc, C, d, dyn="history")
            self._ld(s, kv.v, "wbuf", vc, C, d, dyn="history")
            self._ld(s, kv.k_scale, "wbuf", kcs, C, 4, dyn="history")
            self._ld(s, kv.v_scale, "gbuf", vsc, C, 4, dyn="history")
            if kv.k_lo is not None:
                self._ld(s, kv.k_lo, "wbuf", klo, C, d, dyn="history")
                self._ld(s, kv.k_lo_scale, "wbuf", klos, C, 4, dyn="history")
            # (sfu_split: heads alternate between two score and probability buffers)
            S, PQ, PS = (self.S_alt, self.PQ_alt, self.PS_alt) if j % 2 else \
                (self.S, self.PQ, self.PS)
            for g0 in range(0, G, R // T):
                hl = j * G + g0                            # first local q head of this pass
                h = cp.q_heads[hl]                         # its global index
                blk = self._block_pattern(li, h)
                q_hi, q_lo = (self.QQ + hl * T * d, self.QS + 4 * hl * T), \
                    (self.QL + hl * T * d, self.QLS + 4 * hl * T)
                passes = [(q_hi, (kc, kcs))]            # a wide q or k: hi.lo and lo.hi too
                if kv.k_lo is not None:
                    passes.append((q_hi, (klo, klos)))
                if "q" in self.p.wide_points:
                    passes.append((q_lo, (kc, kcs)))
                for i, ((qa, qs), (ka, ks)) in enumerate(passes):
                    self._mpe(s, R, n=C, k=d, a_addr=qa, a_scale=qs, a_stride=d, w_addr=ka,
                              w_scale=ks, w_stride=d, out_addr=self.S2 if i else S,
                              out_stride=2 * C, dyn_n=1, **blk)
                    if i:
                        self._plane_sum(s, S, R, C, 2 * C, lo=self.S2, dyn_k=1)
                self._misc(s, "softmax", a_addr=S, out_addr=S, rows=R, k=C,
                           a_stride=2 * C, out_stride=2 * C, dyn_k=1, causal=1, groups=T,
                           imm=f32_bits(softmax_scale(a)), **blk)
                self._misc(s, "emul", a_addr=S, b_addr=vsc, out_addr=S, rows=R,
                           k=C, a_stride=2 * C, out_stride=2 * C, dyn_k=1, bcast_b=1, b_f32=1)
                self._quant(s, S, R, C, PQ, PS, a_stride=2 * C, out_stride=C,
                            dyn_k=1, diffuse=1)       # probabilities: keep their mass
                out = self._att_out(cp, hl, h)
                self._mpe(s, R, n=d, k=C, a_addr=PQ, a_scale=PS, a_stride=C,
                          w_addr=vc, w_scale=0, w_stride=d, wt=1, no_wscale=1, dyn_k=1, **blk,
                          **out)
                if self.reductions:             # split reductions: these heads' row maxima
                    self._misc(s, "amax", a_addr=out["out_addr"], rows=R, k=d,
                               a_stride=out["out_stride"], out2_addr=self.AMXA + 4 * h)

    def _att_out(self, cp, local: int, head: int) -> dict:
        """Where the PV product of a query head goes: its columns of the whole attention output,
        or (staged prefill) of this core's compact slice."""
        d = self.d
        if self.staged:
            return dict(out_addr=self.ATT + local * d * 2, out_stride=len(cp.q_heads) * d * 2)
        hd = self.a.n_heads * d
        return dict(out_addr=self.ATT + head * d * 2, out_stride=2 * d if self.T == 1 else hd * 2)

    def _append_kv(self, s, cp, li, nq, nk, j):
        """The KV-cache append of local k head j (j < nk) or v head j - nk: its quantised rows
        and their scales, at the step's positions."""
        d, T = self.d, self.T
        kind, j = ("k", j) if j < nk else ("v", j - nk)
        kv = cp.kv[li][j]
        h = nq + j if kind == "k" else nq + nk + j           # its place among q, k, v heads
        self._st(s, getattr(kv, kind), "abuf", self.QQ + h * T * d, T, d, dyn="at_pos")
        self._st(s, getattr(kv, kind + "_scale"), "abuf", self.QS + 4 * h * T, T, 4,
                 dyn="at_pos")
        if kind == "k" and kv.k_lo is not None:          # a wide k's second plane
            self._st(s, kv.k_lo, "abuf", self.QL + h * T * d, T, d, dyn="at_pos")
            self._st(s, kv.k_lo_scale, "abuf", self.QLS + 4 * h * T, T, 4, dyn="at_pos")

    def _qkv_quant(self, s, nq, nk, h0, h1):
        """Quantise heads [h0, h1) of the q/k/v rows at Q (T rows a head, q then k then v
        heads) into QQ/QS; the heads of a wide q or k also get their residual's plane at QL/QLS
        (the same head order): the hi quant writes the residual over Q, a second rounds it."""
        d, T, wide = self.d, self.T, self.p.wide_points
        runs = []                               # (first head, end, wide), neighbours merged
        for a, b, point in ((h0, min(h1, nq), "q"), (max(h0, nq), min(h1, nq + nk), "k"),
                            (max(h0, nq + nk), h1, "v")):
            if b > a:
                if runs and runs[-1][2] == (point in wide) and runs[-1][1] == a:
                    runs[-1] = (runs[-1][0], b, runs[-1][2])
                else:
                    runs.append((a, b, point in wide))
        for a, b, two in runs:
            src, rows = self.Q + 2 * d * T * a, (b - a) * T
            self._quant(s, src, rows, d, self.QQ + d * T * a, self.QS + 4 * T * a,
                        **(dict(residual=1) if two else {}))
            if two:
                self._quant(s, src, rows, d, self.QL + d * T * a, self.QLS + 4 * T * a)

    def _block_pattern(self, layer: int, head: int) -> dict:
        """Block-sparse attention fields of a prefill pass (decode attention stays dense)."""
        pattern = self.p.attn_pattern
        if self.T == 1 or not pattern:
            return {}
        sink, window = pattern[layer][head]
        return dict(blk_sink=int(sink), blk_win=int(window)) if window else {}

    def _qkv_epilogue_heads(self, s, cp, nq, nk, h0, h1):
        """Decode, sfu_split: RoPE on heads [h0, h1) of the q/k/v row (the q and k heads)."""
        h1 = min(h1, nq + nk)
        if h1 > h0:
            d = self.d
            self._misc(s, "rope", a_addr=self.Q + 2 * d * h0, b_addr=self.RT,
                       out_addr=self.Q + 2 * d * h0, rows=h1 - h0, k=d, groups=1,
                       a_stride=2 * d, b_stride=2 * d, out_stride=2 * d)

    def _qkv_epilogue(self, s, cp, nq, nk):
        """After the q/k/v projections (head-major blocks at Q): RoPE on the q and k heads."""
        d, T = self.d, self.T
        self._misc(s, "rope", a_addr=self.Q, b_addr=self.RT, out_addr=self.Q,
                   rows=(nq + nk) * T, k=d, groups=T, a_stride=2 * d, b_stride=2 * d,
                   out_stride=2 * d)
