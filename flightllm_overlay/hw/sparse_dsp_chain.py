"""Bit-accurate numpy model of FlightLLM's configurable sparse DSP chain, DSP48E2 by DSP48E2.

The configurable sparse DSP chain ("CSD chain", the name the RTL files ``src/rtl/csd_*.v`` carry) is
the paper's chain of packed INT8 DSP48E2s whose multiplexers skip the zeros of N:16 sparse weights.

What is modelled (paper §3.2, docs flightllm-facts §1.2-1.3; the RTL in ``src/rtl/csd_*.v`` mirrors it):

* **Packed dual INT8 MAC** (Xilinx WP486): activations ``a`` (lane A, upper) and ``b`` (lane B,
  lower) share the weight ``w``.  The pre-adder forms ``AD = (a << 18) + b`` (27 bits), the
  multiplier ``M = AD * w`` (45 bits), the ALU ``P = Z + M`` (48 bits, wraps mod 2**48) where the
  Z-MUX picks 0, PCIN (cascade) or C.  Lanes are read back with the WP486 sign correction:
  ``lane_B = sext(P[17:0])``, ``lane_A = sext(P[47:18]) + P[17]``.
* **DSP group (DG)**: two DSP48s with a fixed PCOUT->PCIN cascade; each DSP's **sparse MUX** picks
  its activation pair out of the M=16 inputs by a 4-bit index.
* **Reduction node (RN)** after every DG.  Per beat it is in one of three modes, set by the FSB code
  N (segments of N consecutive DSP48s form one output, so an L-DSP chain yields L/N outputs per lane):
  ``OUT``  - the DG closes a segment: emit both lanes (+ the MSPs received, see OAU), and the next DG
  restarts accumulation with Z-MUX = 0;  ``PASS`` - the next DG continues on PCIN;
  ``OAU``  - an overflow-adjust point (below).
* **Overflow adjust unit (OAU)** at every second DG boundary (every ``OAU_SPAN`` = 4 DSP48s) inside
  segments longer than ``oau_threshold`` DSP48s: each 18-bit lane is split into a 16-bit LSP
  (unsigned) and an MSP (``lane >> 16``).  The two LSPs are re-packed ``(lsp_A << 18) | lsp_B`` and
  cascade on through the next DSP's C port (Z-MUX = C); the MSPs go to the next DG's RN, which keeps
  adding them (8-bit accumulator per lane) until the segment's RN emits ``lane + (msp << 16)``.
  Bound: an LSP <= 65535 plus four products in [-16256, 16384] stays in [-65024, 131071], inside the
  signed 18-bit lane, so the chain is exact for the full INT8 range and any segment length.
  The paper skips the OAU for chains of <= 8 DSP48s; that holds for |x| <= 127, but eight products
  of (-128)*(-128) sum to 2**17 and overflow the lane by one LSB.  ``PAPER_OAU_THRESHOLD`` = 8
  reproduces the paper's rule (and that failure); the default threshold 4 is exact.

Counters: ``dsp_cycles`` (DSP48s x beats), ``useful_macs`` (non-zero weights x 2 lanes), from which
runtime DSP utilisation of the configurable chain is compared with a fixed dense chain (no sparse MUX,
no RN) fed the same N:16 blocks (``compare_utilisation``; the paper reports 1.6x).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..spec.wformat import BLOCK, FSB_CODES  # FSB blocks of 16 x 16 weights; N of N:16 (16: dense)

M = 16                               # activations a sparse MUX chooses from (the M of N:M)
DG_SIZE = 2                          # DSP48s per DSP group
LANE_BITS, LANE_SHIFT = 18, 18       # lane width; lane A sits at bit 18 of P
AD_BITS, P_BITS = 27, 48             # DSP48E2 pre-adder output and accumulator widths
LSP_BITS = 16                        # OAU: low part that keeps cascading
OAU_SPAN = 4                         # DSP48s between OAU points (every second DG)
MSP_BITS = 8                         # RN accumulator of MSPs, per lane
OUT_BITS = 32                        # RN result width, per lane
DEFAULT_OAU_THRESHOLD = 4            # OAU active in segments longer than this: exact for [-128, 127]
PAPER_OAU_THRESHOLD = 8              # the paper's rule: no OAU for chains of <= 8 DSP48s
ZSEL_ZERO, ZSEL_PCIN, ZSEL_C = 0, 1, 2
RN_PASS, RN_OAU, RN_OUT = "pass", "oau", "out"

I64 = np.int64
MASK48 = (1 << P_BITS) - 1


# ---------------------------------------------------------------------------------------------
# Bit helpers and the DSP48E2 packed dual MAC
# ---------------------------------------------------------------------------------------------
def sext(x, bits: int) -> np.ndarray:
    """Two's-complement value of the low ``bits`` bits of x (int64 arrays)."""
    x = np.asarray(x, I64) & ((1 << bits) - 1)
    return np.where(x >= (1 << (bits - 1)), x - (1 << bits), x)


def preadd(a, b) -> np.ndarray:
    """DSP48E2 pre-adder output AD = A + D with A = a << 18, D = b (27-bit signed)."""
    return sext((np.asarray(a, I64) << LANE_SHIFT) + np.asarray(b, I64), AD_BITS)


def dsp48_packed(a, b, w, z) -> np.ndarray:
    """One DSP48E2 cycle: P = Z + (AD * B) mod 2**48, returned as the unsigned 48-bit pattern.

    a, b: int8 activations (lanes A, B); w: int8 weight on the B port; z: the Z-MUX operand
    (0, PCIN or C) as a 48-bit pattern.
    """
    m = sext(preadd(a, b) * np.asarray(w, I64), 45)          # 27 x 18 -> 45-bit product
    return (np.asarray(z, I64) + m) & MASK48


def pack_lanes(lane_a, lane_b) -> np.ndarray:
    """P pattern holding lane_a * 2**18 + lane_b (what a chain of packed MACs accumulates)."""
    return ((np.asarray(lane_a, I64) << LANE_SHIFT) + np.asarray(lane_b, I64)) & MASK48


def unpack_lanes(p) -> tuple[np.ndarray, np.ndarray]:
    """(lane_A, lane_B) of a P pattern, with WP486's sign correction of the upper lane."""
    p = np.asarray(p, I64)
    lane_b = sext(p, LANE_BITS)
    lane_a = sext(p >> LANE_SHIFT, P_BITS - LANE_SHIFT) + ((p >> (LANE_BITS - 1)) & 1)
    return lane_a, lane_b


def oau_split(p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OAU: (re-packed LSPs for the C port, MSP of lane A, MSP of lane B).

    Both lanes are taken as 18-bit values (their valid range at an OAU point, see module doc);
    lane = msp * 2**16 + lsp with lsp in [0, 2**16).
    """
    lane_a, lane_b = unpack_lanes(p)
    lane_a, lane_b = sext(lane_a, LANE_BITS), sext(lane_b, LANE_BITS)
    lsp_mask = (1 << LSP_BITS) - 1
    lsp = ((lane_a & lsp_mask) << LANE_SHIFT) | (lane_b & lsp_mask)
    return lsp, lane_a >> LSP_BITS, lane_b >> LSP_BITS


def rn_mode(g: int, n: int, oau_threshold: int = DEFAULT_OAU_THRESHOLD) -> str:
    """Mode of the reduction node after DG g for FSB code n (same rule as csd_rn.v)."""
    end = DG_SIZE * (g + 1)                       # DSP48s up to and including DG g
    if end % n == 0:
        return RN_OUT
    if end % OAU_SPAN == 0 and n > oau_threshold:
        return RN_OAU
    return RN_PASS


# ---------------------------------------------------------------------------------------------
# N:16 blocks: kept elements + 4-bit indices per 16x16 block, one FSB code per block
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NMBlock:
    """One 16x16 weight block in N:16 form.

    n:       FSB code (2, 4, 8 or 16)
    values:  (16, n) int8 kept weights, row by row
    indices: (16, n) uint8 column of each kept weight, strictly increasing per row
    """
    n: int
    values: np.ndarray
    indices: np.ndarray

    def dense(self) -> np.ndarray:
        """(16, 16) int8 block with zeros where nothing is kept."""
        out = np.zeros((BLOCK, BLOCK), np.int8)
        np.put_along_axis(out, self.indices.astype(np.intp), self.values, axis=1)
        return out

    def meta_bytes(self) -> bytes:
        """4-bit indices, two per byte, low nibble first (half the bytes of the values); b'' if dense."""
        if self.n == BLOCK:
            return b""
        nib = self.indices.reshape(-1).astype(np.uint8)
        return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()

    @classmethod
    def from_meta(cls, n: int, values: np.ndarray, meta: bytes) -> "NMBlock":
        """Inverse of (values, meta_bytes()): rebuild a block from kept values (array or bytes) and meta."""
        _check_code(n)
        if n == BLOCK:
            idx = np.tile(np.arange(BLOCK, dtype=np.uint8), (BLOCK, 1))
        else:
            raw = np.frombuffer(meta, np.uint8)
            if raw.size != BLOCK * n // 2:
                raise ValueError(f"meta for a {n}:16 block has {BLOCK * n // 2} bytes, got {raw.size}")
            idx = np.stack([raw & 0xF, raw >> 4], axis=1).reshape(BLOCK, n)
        if isinstance(values, (bytes, bytearray, memoryview)):
            values = np.frombuffer(values, np.int8)
        return cls(n, np.asarray(values, np.int8).reshape(BLOCK, n), idx.astype(np.uint8))


def _check_code(n: int) -> None:
    if n not in FSB_CODES:
        raise ValueError(f"FSB code must be one of {FSB_CODES} (N of N:16), got {n}")


def pack_nm_block(block, n: int, prune: bool = False) -> NMBlock:
    """Keep the n largest-magnitude weights of each row of a 16x16 block (ties: lower column).

    Without ``prune``, a row with more than n non-zeros is an error (the block is not n:16).
    """
    _check_code(n)
    block = np.asarray(block)
    if block.shape != (BLOCK, BLOCK):
        raise ValueError(f"an FSB block is {BLOCK}x{BLOCK}, got {block.shape}")
    if not prune and (np.count_nonzero(block, axis=1) > n).any():
        raise ValueError(f"block has a row with more than {n} non-zeros; pass prune=True to prune")
    order = np.argsort(-np.abs(block.astype(I64)), axis=1, kind="stable")[:, :n]
    idx = np.sort(order, axis=1)
    return NMBlock(n, np.take_along_axis(block, idx, axis=1).astype(np.int8), idx.astype(np.uint8))


def pack_nm_matrix(w, codes) -> list[list[NMBlock]]:
    """(R, K) int8 matrix -> R/16 x K/16 grid of NMBlocks, block (i, j) pruned to codes[i][j]:16."""
    w = np.asarray(w)
    codes = np.asarray(codes)
    r, k = w.shape
    if r % BLOCK or k % BLOCK or codes.shape != (r // BLOCK, k // BLOCK):
        raise ValueError(f"need a (16i, 16j) matrix and an (i, j) code grid, got {w.shape}, {codes.shape}")
    return [[pack_nm_block(w[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK], int(codes[i, j]),
                           prune=True) for j in range(k // BLOCK)] for i in range(r // BLOCK)]


def reference_block(block: NMBlock, acts) -> np.ndarray:
    """Plain int64 reference: (2, 16) dot products of each block row's kept elements with acts (2, 16)."""
    acts = np.asarray(acts, I64)
    sel = acts[:, block.indices.astype(np.intp)]               # (2, 16, n)
    return (sel * block.values.astype(I64)[None]).sum(axis=2)


# ---------------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------------
@dataclass
class CSDChain:
    """An L-DSP48 configurable sparse DSP chain (L/2 DGs), one beat per cycle, with counters.

    length:        DSP48s in the chain (multiple of OAU_SPAN; 16 = one VPU with K = 16)
    oau_threshold: OAU active in segments longer than this many DSP48s (inf: no OAU)
    configurable:  False models a fixed dense chain: only n = 16 with identity indices
    """
    length: int = 16
    oau_threshold: float = DEFAULT_OAU_THRESHOLD
    configurable: bool = True
    dsp_cycles: int = field(default=0, init=False)     # sum over beats of DSP48s clocked
    useful_macs: int = field(default=0, init=False)    # non-zero-weight products, both lanes
    beats: int = field(default=0, init=False)

    def __post_init__(self):
        if self.length < OAU_SPAN or self.length % OAU_SPAN:
            raise ValueError(f"chain length must be a positive multiple of {OAU_SPAN}, got {self.length}")

    def supports(self, n: int) -> bool:
        return n in FSB_CODES and self.length % n == 0 and (self.configurable or n == BLOCK)

    def modes(self, n: int) -> list[str]:
        """RN mode after each DG for FSB code n."""
        return [rn_mode(g, n, self.oau_threshold) for g in range(self.length // DG_SIZE)]

    def reset_counters(self) -> None:
        self.dsp_cycles = self.useful_macs = self.beats = 0

    @property
    def utilisation(self) -> float:
        """Useful MACs / MAC slots (2 per DSP48 per cycle) so far."""
        return self.useful_macs / (2 * self.dsp_cycles) if self.dsp_cycles else 0.0

    def run(self, weights, indices, activations_pair, n: int) -> np.ndarray:
        """Run beats through the chain; returns (beats, 2, L/n) int64: lane A and lane B results.

        weights:          (beats, L) int8, DSP k's weight; segment j = DSPs j*n .. j*n+n-1
        indices:          (beats, L) 4-bit sparse-MUX selects (None: DSP k takes activation k % 16)
        activations_pair: (2, 16) or (beats, 2, 16) int8: lane A (row 0) and lane B (row 1)
        """
        if not self.supports(n):
            raise ValueError(f"a {'configurable' if self.configurable else 'fixed'} chain of "
                             f"{self.length} DSP48s cannot run {n}:16")
        w = np.atleast_2d(np.asarray(weights, I64))
        beats = w.shape[0]
        if w.shape != (beats, self.length):
            raise ValueError(f"weights must be (beats, {self.length}), got {w.shape}")
        if indices is None:
            idx = np.broadcast_to(np.arange(self.length) % M, w.shape)
        else:
            idx = np.broadcast_to(np.asarray(indices, np.intp), w.shape)
            if not self.configurable and (idx != np.arange(self.length) % M).any():
                raise ValueError("a fixed dense chain has no sparse MUX: indices must be k % 16")
            if (idx < 0).any() or (idx >= M).any():
                raise ValueError("sparse-MUX indices are 4-bit (0..15)")
        acts = np.broadcast_to(np.asarray(activations_pair, I64), (beats, 2, M))
        sel_a = np.take_along_axis(acts[:, 0], idx, axis=1)      # sparse MUX, (beats, L)
        sel_b = np.take_along_axis(acts[:, 1], idx, axis=1)

        modes = self.modes(n)
        outs = []
        z = np.zeros(beats, I64)
        msp_a = np.zeros(beats, I64)
        msp_b = np.zeros(beats, I64)
        for k in range(self.length):
            p = dsp48_packed(sel_a[:, k], sel_b[:, k], w[:, k], z)
            z = p                                                  # fixed cascade inside a DG
            if k % DG_SIZE == DG_SIZE - 1:
                mode = modes[k // DG_SIZE]
                if mode == RN_OUT:
                    lane_a, lane_b = unpack_lanes(p)
                    outs.append((sext(lane_a + (msp_a << LSP_BITS), OUT_BITS),
                                 sext(lane_b + (msp_b << LSP_BITS), OUT_BITS)))
                    z = np.zeros(beats, I64)                       # Z-MUX = 0: restart
                    msp_a = np.zeros(beats, I64)
                    msp_b = np.zeros(beats, I64)
                elif mode == RN_OAU:
                    z, ma, mb = oau_split(p)                       # LSPs on via C, MSPs to next RN
                    msp_a = sext(msp_a + ma, MSP_BITS)
                    msp_b = sext(msp_b + mb, MSP_BITS)
        self.dsp_cycles += beats * self.length
        self.useful_macs += 2 * int(np.count_nonzero(w))
        self.beats += beats
        res = np.array(outs, I64)                                  # (L/n, 2, beats)
        return res.transpose(2, 1, 0)

    def run_block(self, block: NMBlock, activations_pair) -> np.ndarray:
        """All 16 rows of one N:16 block against one activation pair: (2, 16) int64.

        The configurable chain maps L/n rows per beat (n beats per block for L = 16); a fixed chain
        expands the block to dense and takes L/16 rows per beat (16 beats for L = 16).
        """
        n = block.n if self.configurable else BLOCK
        values = block.values if self.configurable else block.dense()
        idx = block.indices if self.configurable else np.tile(np.arange(BLOCK), (BLOCK, 1))
        rows = self.length // n
        beats = -(-BLOCK // rows)
        w = np.zeros((beats * rows, n), I64)
        ix = np.tile(np.arange(n) % M, (beats * rows, 1))
        w[:BLOCK], ix[:BLOCK] = values, idx
        res = self.run(w.reshape(beats, self.length), ix.reshape(beats, self.length),
                       activations_pair, n)                        # (beats, 2, rows)
        return res.transpose(1, 0, 2).reshape(2, beats * rows)[:, :BLOCK]

    def matvec_pair(self, blocks: list[list[NMBlock]], acts) -> np.ndarray:
        """(2, R) = (2, K) activations times an N:16 block grid; per-block results summed in int64."""
        acts = np.asarray(acts, I64)
        out = np.zeros((2, BLOCK * len(blocks)), I64)
        for i, row in enumerate(blocks):
            for j, blk in enumerate(row):
                out[:, i * BLOCK:(i + 1) * BLOCK] += self.run_block(blk, acts[:, j * BLOCK:(j + 1) * BLOCK])
        return out


def compare_utilisation(blocks, acts, length: int = 16) -> dict:
    """Run the same N:16 blocks through a configurable and a fixed dense chain of ``length`` DSP48s.

    Returns both chains' counters, utilisations and the ratio (configurable / fixed), after
    checking that both produce identical results.
    """
    conf = CSDChain(length)
    fixed = CSDChain(length, configurable=False)
    flat = [b for row in blocks for b in row] if blocks and isinstance(blocks[0], list) else list(blocks)
    acts = np.asarray(acts, I64)
    for i, blk in enumerate(flat):
        pair = acts if acts.ndim == 2 else acts[i]
        if not np.array_equal(conf.run_block(blk, pair), fixed.run_block(blk, pair)):
            raise AssertionError("configurable and fixed chains disagree")
    report = {}
    for name, ch in (("configurable", conf), ("fixed", fixed)):
        report[name] = {"dsp_cycles": ch.dsp_cycles, "useful_macs": ch.useful_macs,
                        "beats": ch.beats, "utilisation": ch.utilisation}
    report["speedup"] = fixed.dsp_cycles / conf.dsp_cycles
    report["utilisation_ratio"] = report["configurable"]["utilisation"] / report["fixed"]["utilisation"]
    return report
