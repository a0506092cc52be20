"""How the RTL MPE (src/rtl/mpe_core.v) runs an MM/MV: its parameters, the passes an instruction takes, and the results expected.

An instruction's weights are cut into *chain-beats*, each feeding one 16-DSP configurable sparse
DSP chain (hw/sparse_dsp_chain.py) for one cycle: 16 kept INT8 weights with their 4-bit column
indices inside one 16-column block ``j``, the block's N:16 code and ``r0``, the first of the 16/N
output rows its segments compute (a dense block is N = 16: one output row per chain-beat).
Block-row ``i`` (outputs 16i .. 16i+15) is finished before the next one starts:

* **MM**: for each block of ``rows`` activation rows, block-row i's chain-beats in order (block
  j = 0, 1, ..; within a block, row groups in order) go ``cols`` at a time to the chains of one
  *team*, never mixing two blocks j in a pass; every team (a pair of activation rows) gets the same
  chain-beats.  Passes = ceil(m / rows) * sum_i sum_j ceil(beats_ij / cols), which for cols = 2 is
  the timing model's ceil(m/pm) * ceil(n/pn) * ceil(k/pk) (dense) or ceil(16 nnz / (pn pk)) (N:16).
* **MV**: for each activation row, ``mv_cols / mv_team`` block-rows at a time, one per team of
  ``mv_team`` chains; a team takes its block-row's chain-beats ``mv_team`` at a time, all inside a
  window of 8 consecutive blocks (one activation read per team; dense: one block per pass).  The teams' pass counts are
  padded to the longest.  With mv_team = 16 and mv_cols = 64 (the U280 target), a dense MV takes
  the timing model's ceil(n/64) * ceil(k/16) passes per row.
The expected results are the exact integer products the Python simulator's MPE forms (the dense
weights from ``sim/wformat.expand_sparse``, the operand the simulator's MPE multiplies), cut into
the tiles the RTL emits at the end of each block-row.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ProgramError
from ..spec import wformat as WF

BLOCK = 16
MV_WINDOW = 8                       # activation blocks a MV team reads per pass
CODE = {2: 0, 4: 1, 8: 2, 16: 3}


@dataclass(frozen=True)
class MPEParams:
    """Parameters of one mpe_core build (the Verilog parameters of the same names, upper case)."""
    rows: int = 8            # MM activation rows per pass (pm)
    cols: int = 2            # MM chains per team (pn)
    l: int = 16              # DSP48s per chain (pk)
    mv_cols: int = 32        # MV chains
    mv_team: int = 16        # MV chains per team (a team owns one block-row of 16 outputs)
    mv_rows: int = 16        # MV activation rows held
    kb: int = 16             # activation blocks held per row (k <= 16 kb)
    oau_min: int = 4
    dsp_prim: int = 0        # 1: chains on the DSP48E2 model

    def __post_init__(self):
        if self.l != BLOCK:
            raise ValueError(f"the MPE's chains take one 16-column block per beat: l must be 16, got {self.l}")
        if self.rows % 2 or self.rows < 2 or self.rows > 256:
            raise ValueError(f"rows must be an even number in 2..256, got {self.rows}")
        if self.mv_team % 2 or not 2 <= self.mv_team <= BLOCK or self.mv_cols % self.mv_team:
            raise ValueError(f"mv_team must be even, 2..16, and divide mv_cols; got {self.mv_team}, "
                             f"{self.mv_cols}")
        if self.kb < 4 or self.kb & (self.kb - 1):
            raise ValueError(f"kb must be a power of two >= 4, got {self.kb}")
        if self.mv_rows > 32:
            raise ValueError(f"mv_rows is at most 32 (5-bit row select), got {self.mv_rows}")

    @classmethod
    def from_target(cls, target, kb: int = 1024, **kw) -> "MPEParams":
        """The full-size MPE of a target: (pm, pn, pk) of MM and pn of MV from its config."""
        pm, pn, pk = target.mm_parallel
        return cls(rows=pm, cols=pn, l=pk, mv_cols=target.mv_parallel[1], mv_team=BLOCK, kb=kb, **kw)

    def verilog(self) -> dict:
        return {"ROWS": self.rows, "COLS": self.cols, "L": self.l, "MV_COLS": self.mv_cols,
                "MV_TEAM": self.mv_team, "MV_ROWS": self.mv_rows, "KB": self.kb, "OAU_MIN": self.oau_min,
                "DSP_PRIM": self.dsp_prim}

    # derived sizes (same formulas as mpe_core.v's localparams)
    @property
    def teams(self) -> int:
        return self.rows // 2

    @property
    def tmv(self) -> int:
        return self.mv_cols // self.mv_team

    @property
    def ns(self) -> int:
        return max(self.cols, self.mv_cols)

    @property
    def nres(self) -> int:
        return BLOCK * max(self.rows, self.tmv)

    @property
    def jw(self) -> int:
        return max(1, (self.kb - 1).bit_length())

    @property
    def chains(self) -> int:
        return max(self.teams * self.cols, self.mv_cols)

    def ports(self) -> list[tuple[str, int]]:
        """mpe_core's inputs after clk/rst, in the order the harness reads them, with widths."""
        ns, jw = self.ns, self.jw
        return [("ld_en", 1), ("ld_mv", 1), ("ld_bank", 1), ("ld_row", 8), ("ld_j", jw),
                ("ld_data", 128), ("in_valid", 1), ("in_mode", 1), ("in_direct", 1), ("in_last", 1),
                ("in_bank", 1), ("in_j", jw), ("in_j0", self.tmv * jw), ("in_row", 5),
                ("in_lanes", 9), ("in_act_a", 128), ("in_act_b", 128), ("in_w", ns * 128),
                ("in_idx", ns * 64), ("in_code", ns * 2), ("in_r0", ns * 4), ("in_dj", ns * 3),
                ("in_en", ns), ("in_kval", ns * 5)]

    @property
    def latency(self) -> int:
        """Cycles from the cycle a block-row's last pass is presented to the cycle its result is
        out (the chain's L + 3, the bank update, the team sum register): measured, see
        tests/test_mpe_rtl.py.  An instruction of P passes takes P + latency cycles from its first
        pass to its last result; the next one may start right after its last pass."""
        return self.l + 4


@dataclass
class ChainBeat:
    j: int                    # activation block
    w: np.ndarray             # (16,) int8
    idx: np.ndarray           # (16,) 0..15
    code: int                 # log2(N) - 1
    r0: int
    kval: int                 # valid columns of block j (counters)
    en: int = 1


@dataclass
class MPEOp:
    """One MM/MV as the MPE sees it: INT8 activations and either dense INT8 weights (n, k) or the
    packed N:16 operand (kept values in MPE order, the (n/16, k/16) code grid, 4-bit indices)."""
    op: str
    a: np.ndarray
    n: int
    k: int
    w: np.ndarray | None = None
    values: np.ndarray | None = None
    fsb: np.ndarray | None = None
    meta: np.ndarray | None = None

    def __post_init__(self):
        if self.op not in ("MM", "MV"):
            raise ValueError(f"op must be MM or MV, got {self.op!r}")
        self.a = np.asarray(self.a, np.int8)
        if self.a.ndim != 2 or self.a.shape[1] != self.k:
            raise ValueError(f"activations must be (m, {self.k}), got {self.a.shape}")
        if self.w is None and self.values is None:
            raise ValueError("give dense weights w or the packed sparse operand")
        if self.sparse and (self.n % BLOCK or self.k % BLOCK):
            raise ValueError(f"an N:16 operand has n and k multiples of 16, got {self.n} x {self.k}")

    @property
    def m(self) -> int:
        return self.a.shape[0]

    @property
    def sparse(self) -> bool:
        return self.values is not None

    def dense_weights(self) -> np.ndarray:
        """(n, k) INT8 weights the Python simulator's MPE multiplies by."""
        if not self.sparse:
            return np.asarray(self.w, np.int8).reshape(self.n, self.k)
        return WF.expand_sparse(np.asarray(self.values, np.int8), np.asarray(self.fsb, np.uint8),
                                np.asarray(self.meta, np.uint8), self.n, self.k)

    def expected(self) -> np.ndarray:
        """(m, n) INT32 accumulators: exact integer a @ W.T."""
        acc = self.a.astype(np.int64) @ self.dense_weights().astype(np.int64).T
        return acc.astype(np.int32)

    def macs(self) -> tuple[int, int]:
        """(macs, fixed_macs) the simulator counts for this instruction."""
        fixed = self.m * self.n * self.k
        if self.sparse:
            return self.m * BLOCK * int(np.asarray(self.fsb, np.int64).sum()), fixed
        return fixed, fixed

    # -- chain-beats ------------------------------------------------------------------------
    def block_row_beats(self, i: int) -> list[ChainBeat]:
        """Chain-beats of block-row i, block by block (j ascending)."""
        nbc = -(-self.k // BLOCK)
        beats = []
        if not self.sparse:
            w = self.dense_weights()
            rows = min(BLOCK, self.n - BLOCK * i)
            for j in range(nbc):
                kval = min(BLOCK, self.k - BLOCK * j)
                for r in range(rows):
                    wr = np.zeros(BLOCK, np.int8)
                    wr[:kval] = w[BLOCK * i + r, BLOCK * j:BLOCK * j + kval]
                    beats.append(ChainBeat(j, wr, np.arange(BLOCK), 3, r, kval))
            return beats
        vals, idxs = self._sparse_blocks()
        for j in range(nbc):
            v, ix = vals[i][j], idxs[i][j]
            n = v.shape[1]
            per = BLOCK // n                                   # rows per chain-beat
            for q in range(n):
                beats.append(ChainBeat(j, v[q * per:(q + 1) * per].reshape(-1),
                                       ix[q * per:(q + 1) * per].reshape(-1), CODE[n], q * per, BLOCK))
        return beats

    def _sparse_blocks(self):
        """Per block (i, j): kept values (16, N) and indices (16, N), cut as expand_sparse does."""
        if getattr(self, "_blocks", None) is not None:
            return self._blocks
        self.dense_weights()                                   # validates codes, sizes, index order
        nbr, nbc = self.n // BLOCK, self.k // BLOCK
        fsb = np.asarray(self.fsb, np.int64).reshape(nbr, nbc)
        vals = np.asarray(self.values, np.int8).reshape(-1)
        meta = np.asarray(self.meta, np.uint8).reshape(-1)
        nib = np.empty(2 * meta.size, np.uint8)
        nib[0::2], nib[1::2] = meta & 0xF, meta >> 4
        out_v = [[None] * nbc for _ in range(nbr)]
        out_i = [[None] * nbc for _ in range(nbr)]
        vpos = ipos = 0
        for i in range(nbr):
            for j in range(nbc):
                n = int(fsb[i, j])
                out_v[i][j] = vals[vpos:vpos + BLOCK * n].reshape(BLOCK, n)
                vpos += BLOCK * n
                if n == BLOCK:
                    out_i[i][j] = np.tile(np.arange(BLOCK), (BLOCK, 1))
                else:
                    out_i[i][j] = nib[ipos:ipos + BLOCK * n].reshape(BLOCK, n).astype(np.int64)
                    ipos += BLOCK * n
        self._blocks = (out_v, out_i)
        return self._blocks


# ---------------------------------------------------------------------------------------------
# Passes and the cycle program
# ---------------------------------------------------------------------------------------------
@dataclass
class Pass:
    mode: int                                   # 0 MM, 1 MV
    last: bool
    slots: dict                                 # slot -> ChainBeat
    bank: int = 0
    j: int = 0                                  # MM activation block
    j0: tuple = ()                              # MV: per team window start
    row: int = 0                                # MV activation row
    lanes: int = 2                              # MM: valid activation rows of the row block


@dataclass
class Program:
    """Cycle-by-cycle stimulus for mpe_core and the result tiles it must emit, in order."""
    params: MPEParams
    cycles: list = field(default_factory=list)  # per cycle: (load or None, Pass or None)
    tiles: list = field(default_factory=list)   # expected out_res words per result, (nres,) int32
    modes: list = field(default_factory=list)
    macs: int = 0
    fixed_macs: int = 0
    passes: int = 0
    items: list = field(default_factory=list)   # ("insn", op) / ("load", ld) / ("pass", Pass), in order
    first_pass: list = field(default_factory=list)   # cycle of each instruction's first pass
    last_pass: list = field(default_factory=list)    # cycle of each instruction's last pass


def mm_passes(p: MPEParams, op: MPEOp, i: int) -> list[list[ChainBeat]]:
    """Block-row i of an MM: chain-beats grouped into passes of <= cols, one block j per pass."""
    out, cur = [], []
    for b in op.block_row_beats(i):
        if cur and (len(cur) == p.cols or cur[0].j != b.j):
            out.append(cur)
            cur = []
        cur.append(b)
    if cur:
        out.append(cur)
    return out


def mv_team_passes(p: MPEParams, op: MPEOp, i: int) -> list[list[ChainBeat]]:
    """Block-row i of an MV: chain-beats in passes of <= mv_team inside a window of MV_WINDOW blocks
    (a dense operand: one block per pass, as the timing model's ceil(n/pn) * ceil(k/pk) counts)."""
    out, cur = [], []
    for b in op.block_row_beats(i):
        if cur and (len(cur) == p.mv_team or b.j - cur[0].j >= MV_WINDOW
                    or (not op.sparse and b.j != cur[0].j)):
            out.append(cur)
            cur = []
        cur.append(b)
    if cur:
        out.append(cur)
    return out


def instruction_passes(p: MPEParams, op: MPEOp) -> int:
    """Passes the RTL MPE takes for an instruction (what its compute cycles are, minus latency)."""
    nbr = -(-op.n // BLOCK)
    if op.op == "MM":
        per = sum(len(mm_passes(p, op, i)) for i in range(nbr))
        return -(-op.m // p.rows) * per
    groups = [range(g, min(g + p.tmv, nbr)) for g in range(0, nbr, p.tmv)]
    per = sum(max(len(mv_team_passes(p, op, i)) for i in grp) for grp in groups)
    return op.m * per


def _pack_act_row(a_row: np.ndarray, j: int) -> bytes:
    blk = np.zeros(BLOCK, np.int8)
    seg = a_row[BLOCK * j:BLOCK * (j + 1)]
    blk[:seg.size] = seg
    return blk.tobytes()


def build_program(p: MPEParams, ops: list[MPEOp], gap: int = 0) -> Program:
    """Loads and passes for a list of instructions, back to back (``gap`` idle cycles between
    instructions).  One activation block is written per cycle, beside the passes: MM row blocks
    (and MV instructions) alternate between two activation banks, so the next one loads while the
    current one computes; a pass waits for its loads, a load for the passes still reading its bank."""
    prog = Program(p)
    loads: list = []                 # (ld tuple, index of the last pass that must issue first)
    passes: list = []                # (Pass or None for an idle cycle, loads that must precede)
    last_reader = {}                 # buffer -> index of the last pass reading it so far
    bank = mvbank = 0
    firsts, lasts = [], []
    for op in ops:
        nbc = -(-op.k // BLOCK)
        if nbc > p.kb:
            raise ProgramError(f"k = {op.k} needs {nbc} activation blocks; this MPE holds {p.kb} (kb)")
        exp = op.expected()
        nbr = -(-op.n // BLOCK)
        mc, fx = op.macs()
        prog.macs += mc
        prog.fixed_macs += fx
        firsts.append(len(passes))
        prog.items.append(("insn", op))
        if op.op == "MM":
            for rb in range(0, op.m, p.rows):
                rows = op.a[rb:rb + p.rows]
                after = last_reader.get(("mm", bank), -1)
                loads += [((0, bank, r, j, _pack_act_row(rows[r], j)), after)
                          for r in range(rows.shape[0]) for j in range(nbc)]
                prog.items += [("load", ld) for ld, _ in loads[len(loads) - rows.shape[0] * nbc:]]
                need = len(loads)
                for i in range(nbr):
                    plist = mm_passes(p, op, i)
                    for q, beats in enumerate(plist):
                        passes.append((Pass(0, q == len(plist) - 1, dict(enumerate(beats)), bank=bank,
                                            j=beats[0].j, lanes=rows.shape[0]), need))
                        prog.items.append(("pass", passes[-1][0]))
                    tile = np.zeros((p.rows, BLOCK), np.int32)
                    blk = exp[rb:rb + p.rows, BLOCK * i:BLOCK * (i + 1)]
                    tile[:blk.shape[0], :blk.shape[1]] = blk
                    prog.tiles.append(_words(p, tile.reshape(-1)))
                    prog.modes.append(0)
                last_reader[("mm", bank)] = len(passes) - 1
                bank ^= 1
        else:
            if op.m > p.mv_rows:
                raise ProgramError(f"MV of {op.m} rows; this MPE holds {p.mv_rows} (mv_rows)")
            after = last_reader.get(("mv", mvbank), -1)
            loads += [((1, mvbank, r, j, _pack_act_row(op.a[r], j)), after)
                      for r in range(op.m) for j in range(nbc)]
            prog.items += [("load", ld) for ld, _ in loads[len(loads) - op.m * nbc:]]
            need = len(loads)
            for r in range(op.m):
                for g in range(0, nbr, p.tmv):
                    teams = [mv_team_passes(p, op, i) for i in range(g, min(g + p.tmv, nbr))]
                    npass = max(len(t) for t in teams)
                    for q in range(npass):
                        slots, j0 = {}, []
                        for t, tp in enumerate(teams):
                            j0.append(tp[q][0].j if q < len(tp) else 0)
                            if q < len(tp):
                                slots.update({t * p.mv_team + u: b for u, b in enumerate(tp[q])})
                        j0 += [0] * (p.tmv - len(j0))
                        passes.append((Pass(1, q == npass - 1, slots, bank=mvbank, j0=tuple(j0), row=r), need))
                        prog.items.append(("pass", passes[-1][0]))
                    prog.tiles.append(_words(p, exp[r, BLOCK * g:BLOCK * (g + p.tmv)]))
                    prog.modes.append(1)
            last_reader[("mv", mvbank)] = len(passes) - 1
            mvbank ^= 1
        lasts.append(len(passes) - 1)
        passes += [(None, 0)] * gap
    cycles, li, pi = [], 0, 0
    at = {}
    while li < len(loads) or pi < len(passes):
        ps = None
        if pi < len(passes) and li >= passes[pi][1]:
            ps = passes[pi][0]
            at[pi] = len(cycles)
            pi += 1
        ld = None
        if li < len(loads) and loads[li][1] <= pi - 1:
            ld = loads[li][0]
            li += 1
        cycles.append((ld, ps))
    prog.cycles = cycles
    prog.passes = sum(1 for ps, _ in passes if ps is not None)
    prog.first_pass = [at[i] for i in firsts]
    prog.last_pass = [at[i] for i in lasts]
    return prog


def _words(p: MPEParams, flat: np.ndarray) -> np.ndarray:
    out = np.zeros(p.nres, np.int32)
    out[:flat.size] = flat
    return out


# ---------------------------------------------------------------------------------------------
# Random instructions (tests and benchmarks)
# ---------------------------------------------------------------------------------------------
def random_op(rng, op: str, m: int, n: int, k: int, codes=None, extreme: bool = False) -> MPEOp:
    """An MM/MV with random INT8 operands: dense if ``codes`` is None, else N:16 with each block's
    N drawn from ``codes``.  ``extreme``: every value is -128 (the longest -128 x -128 chains)."""
    def ints(shape):
        return np.full(shape, -128, np.int8) if extreme else rng.integers(-128, 128, shape).astype(np.int8)
    a = ints((m, k))
    if codes is None:
        return MPEOp(op, a, n, k, w=ints((n, k)))
    nbr, nbc = n // BLOCK, k // BLOCK
    fsb = rng.choice(codes, (nbr, nbc)).astype(np.uint8)
    vals, nib = [], []
    for i in range(nbr):
        for j in range(nbc):
            c = int(fsb[i, j])
            vals.append(ints((BLOCK, c)).reshape(-1))
            if c < BLOCK:
                cols = np.sort(np.stack([rng.choice(BLOCK, c, replace=False) for _ in range(BLOCK)]), axis=1)
                nib.append(cols.reshape(-1).astype(np.uint8))
    nib = np.concatenate(nib) if nib else np.zeros(0, np.uint8)
    if nib.size % 2:
        nib = np.append(nib, 0)
    meta = (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)
    return MPEOp(op, a, n, k, values=np.concatenate(vals), fsb=fsb.reshape(-1), meta=meta)
