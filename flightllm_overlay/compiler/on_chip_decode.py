"""Always-on-chip decode (FlightLLM idea 2): the on-chip buffer plan that keeps a step's activations resident, and its ablation.

FlightLLM fuses the MPE and the special-function unit so that a decode step's activations never
leave the chip: only weights (and the KV history) stream from HBM.  Here that is a plan of the
three on-chip buffers for one step (`OnChipDecode.plan_buffers`): the weight buffer holds the
ping-pong weight slots and the K/V history slots; the global buffer the FP16 residual, normed
input, q/k/v, attention output, scores/FFN hidden/logits (aliased where lifetimes do not overlap);
the activation buffer the INT8 MPE inputs and their scales.  A step whose activations do not fit
is refused with a `CompileError` naming the buffer.

`OnChipDecode.unfuse` builds the ablation without it (`compile_model(..., fused=False)`): every
intermediate an MPE or MISC instruction produces is written to HBM and read back before anything
uses it.  Results are identical; HBM traffic is not.  The weight prefetch that keeps the weight
stream going across layer boundaries is `compiler/prefetch.py`.
"""
from __future__ import annotations

from ..errors import CompileError
from ..spec import isa
from ..spec.semantics import outputs
from .placement import kv_history_bytes


class _Arena:
    """Bump allocator of one on-chip buffer (byte addresses, 64-byte aligned)."""

    def __init__(self, name: str, size: int):
        self.name, self.size, self.top = name, size, 0

    def alloc(self, nbytes: int, what: str) -> int:
        addr = -(-self.top // 64) * 64
        if addr + nbytes > self.size:
            raise CompileError(f"on-chip {self.name} overflows placing {what}: needs "
                               f"{addr + nbytes} of {self.size} bytes; use a smaller step "
                               f"(rows) or context capacity")
        self.top = addr + nbytes
        return addr


class OnChipDecode:
    """The buffer plan and the unfused ablation of a step code generator (`StepCodegen`)."""

    def plan_weight_slots(self, plan, ctx: int) -> None:
        """The weight buffer's ping-pong weight slots and K/V history slots, and each core's
        slice of the heads, model rows and FFN rows (both plans use them)."""
        a, t = plan.args, plan.target
        self.a, self.d = a, a.head_dim
        wsize = t.buffer("wbuf").bytes
        kv_bytes = kv_history_bytes(a, ctx, plan.wide_points)
        self.w_half = plan.weight_half              # bytes of one weight slot
        n_slots = plan.weight_slots                 # 2: the paper's ping-pong halves
        if n_slots * self.w_half + kv_bytes > wsize:
            raise CompileError(f"weight buffer too small: {n_slots} x {self.w_half} + "
                               f"{kv_bytes} > {wsize}")
        self.w_ping = tuple(i * self.w_half for i in range(n_slots))
        nk = max(len(c.kv_heads) for c in plan.cores)
        # K/V history slots: the placement reserves room for one KV head at the program's full
        # context; a bucket of smaller capacity fits several, so the next heads' histories load
        # while this head's attention runs (heads rotate over the slots).
        self.kv_slot = kv_bytes
        self.kc0 = n_slots * self.w_half
        self.kv_slots = max(1, min(nk, (wsize - self.kc0) // kv_bytes))
        self.q_ranges = [(c.index, (c.q_heads[0] * self.d, (c.q_heads[-1] + 1) * self.d)
                          if c.q_heads else (0, 0)) for c in plan.cores]
        self.o_ranges = [(c.index, c.o_rows) for c in plan.cores]
        self.f_ranges = [(c.index, c.ffn_rows) for c in plan.cores]

    def plan_buffers(self, plan, rows: int, ctx: int) -> None:
        """Place one step's activations on chip, in gbuf and abuf (byte addresses as
        attributes: `X` residual, `H` normed input, `Q`/`GATE` q/k/v or gate/up, `ATT`, `O`,
        `S`/`FF`/`LG` scores or FFN hidden or logits, `HQ`/`HS`, ...); a `CompileError` naming
        the buffer when they do not fit."""
        a, t = plan.args, plan.target
        T, dim, hd = rows, a.dim, a.n_heads * self.d
        cp0 = plan.cores
        nq = max(len(c.q_heads) for c in cp0)
        nk = max(len(c.kv_heads) for c in cp0)
        ffn_c = max(c.ffn_rows[1] - c.ffn_rows[0] for c in cp0)
        g = _Arena("global buffer", t.buffer("gbuf").bytes)
        self.X = g.alloc(T * dim * 2, "residual")
        self.H = g.alloc(T * dim * 2, "normed input")
        self.ATT = g.alloc(T * hd * 2, "attention output")
        wide = set(plan.wide_points)
        o_planes = 2 if wide & {"attn_out", "ffn_mid"} else 1
        self.O = g.alloc(o_planes * T * dim * 2, "o_proj / down_proj output (and its second "
                         "plane's)" if o_planes == 2 else "o_proj / down_proj output")
        # a copy of the attention output / FFN hidden state to quantise with its residual (the
        # other cores still read the original)
        ws = max([hd] * ("attn_out" in wide) + [a.hidden_dim] * ("ffn_mid" in wide), default=0)
        self.WS = g.alloc(T * ws * 2, "two-plane quantisation's copy") if ws else 0
        r2 = max(2 * nk * T * self.d * 2 + nq * T * self.d * 2, 2 * T * ffn_c * 2)
        self.R2 = g.alloc(r2, "q/k/v or gate/up")
        self.Q = self.R2                        # then K, then V: per core (its head counts)
        self.GATE = self.R2                     # UP follows GATE; per core (its FFN slice)
        # a wide attn_in's / ffn_in's second plane of q/k/v or gate/up, laid out as R2
        self.Q_LO = self.GATE_LO = (g.alloc(r2, "q/k/v or gate/up of the second plane")
                                    if wide & {"attn_in", "ffn_in"} else 0)
        # One attention pass covers a whole query group when a step has one row (decode):
        # rows (g, t) are then also token-major, so the PV output lands in place.
        self.att_rows = plan.group if T == 1 else T
        # (decode also sizes it for whole lm_head tiles, so that small buckets do not cut the
        # logits into many small pieces)
        lm_cols = plan.tile_rows(a.dim) * (2 if "head_in" in wide else 1) if T == 1 else 0
        # (schedule option sfu_split: two score buffers, so that heads alternate between them)
        self.split = T == 1 and plan.schedule.sfu_split
        n_s = 2 if self.split else 1
        self.r1_bytes = r1 = max(n_s * self.att_rows * ctx * 2, T * a.hidden_dim * 2,
                                 2 * lm_cols)
        self.R1 = g.alloc(r1, "scores or FFN hidden or logits")
        self.S, self.FF, self.LG = self.R1, self.R1, self.R1
        self.S_alt = self.S + (self.att_rows * ctx * 2 if self.split else 0)
        # split reductions (LLaMA decode): partial row maxima for one-pass quantisations
        self.reductions = self.split and self.split_reductions and not plan.act_group
        self.max_groups = (1 << dict(isa.FORMATS["MISC"].fields)["groups"]) - 1
        self.AMXF_BYTES = 4 * self.max_groups
        self.AMX = g.alloc(4, "row maximum") if self.reductions else 0
        self.AMXA = g.alloc(4 * a.n_heads, "attention maxima") if self.reductions else 0
        self.AMXF = g.alloc(self.AMXF_BYTES, "FFN maxima") if self.reductions else 0
        self.RT = g.alloc(T * self.d * 2, "rope table rows")
        self.NORM = g.alloc(2 * dim * 2, "norm gains")
        self.VSC = g.alloc(4 * ctx * self.kv_slots, "V scales")
        qk_wide = wide & {"q", "k"}             # wide scores: a second pass's partial scores
        self.S2 = g.alloc(self.att_rows * ctx * 2, "partial scores") if qk_wide else 0
        ab = _Arena("activation buffer", t.buffer("abuf").bytes)
        kmax = max(dim, hd, a.hidden_dim)
        n = 2 if wide else 1                    # planes of the wide linear inputs
        self.HQ = ab.alloc(n * T * kmax, "quantised activations")
        self.HS = ab.alloc(n * T * self.act_scale_bytes(kmax), "activation scales")
        self.QQ = ab.alloc((nq + 2 * nk) * T * self.d, "quantised q, k, v")
        self.QS = ab.alloc(4 * (nq + 2 * nk) * T, "q, k, v scales")
        # a wide q's or k's second plane, in the q and k heads' order
        self.QL = ab.alloc((nq + nk) * T * self.d, "q, k second planes") if qk_wide else 0
        self.QLS = ab.alloc(4 * (nq + nk) * T, "q, k second planes' scales") if qk_wide else 0
        self.PQ = ab.alloc(n_s * self.att_rows * ctx, "quantised probabilities")
        self.PS = ab.alloc(n_s * 4 * self.att_rows, "probability scales")
        self.PQ_alt = self.PQ + (self.att_rows * ctx if self.split else 0)
        self.PS_alt = self.PS + (4 * self.att_rows if self.split else 0)
        self.gbuf_arena, self.abuf_arena = g, ab      # a family's codegen may place more

    def unfuse(self, s, cp) -> list:
        """The ablation without operator fusion: every intermediate an MPE or MISC instruction
        produces is written to HBM and read back before anything uses it, as a design without
        always-on-chip decode would do.  Results are unchanged; HBM traffic is not."""
        out = []
        gsize = self.p.target.buffer("gbuf").bytes
        for insn in s:
            out.append(insn)
            spans = outputs(insn.op, insn.fields)
            for buf, addr, rows, row_bytes, stride in spans:
                if not rows or not row_bytes:
                    continue
                base = addr + (0 if buf == "gbuf" else gsize)   # same layout in the spill area
                for op in ("ST", "LD"):
                    self._move(op, out, cp.spill, buf, addr, rows, row_bytes, hbm_stride=stride,
                               buf_stride=stride, extra=base)
        return out
