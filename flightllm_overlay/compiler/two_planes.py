"""Two-plane INT8 activations (a compression's wide points) in a step's instructions: the quantisation with its residual, a linear over both planes, the planes' outputs added.

A mixin of `codegen.StepCodegen`.  A wide point's hi quant writes the residual over its input
and a second quant rounds it into the rows after the hi plane (about 15 bits); a linear runs
each loaded weight tile on both planes and eadd adds the outputs (docs/design.md).
"""
from __future__ import annotations

from ..spec.isa import Instruction


class TwoPlanes:
    """The wide points' quantisation and plane sums of `StepCodegen`."""

    def planes(self, point: str) -> int:
        """INT8 planes of a linear input: 2 at the model's wide points (hi, then the residual's
        lo at its own scale), else 1."""
        return 2 if point in self.p.wide_points else 1

    def _act_quant(self, s, point, a_addr, rows, k, r0=0, total=None, a_stride=None,
                   copy_core=None, **f):
        """Rows [r0, r0 + rows) of a linear's input, `total` rows in all (default `rows`), at
        a_addr quantised into HQ (row stride k) with their scales at HS.  A wide point's
        residual plane follows the hi plane as rows [total + r0, ...): the hi quant writes the
        residual over a (first copied to WS when other cores still read a: `copy_core`, the
        executing core, makes the copy a local LD) and a second quant rounds it.  The MPE then
        runs on 2 * total rows and `_plane_sum` adds the two outputs."""
        total = rows if total is None else total
        if self.planes(point) == 1:
            return self._quant(s, a_addr, rows, k, self.HQ + r0 * k,
                               self.HS + r0 * self.act_scale_bytes(k), a_stride=a_stride,
                               agroup=self.point_agroup(point), **f)
        stride = a_stride or 2 * k
        if copy_core is not None:
            s.append(Instruction("LD", buf="gbuf", remote=1, remote_core=copy_core,
                                 hbm_addr=a_addr, hbm_stride=stride, buf_addr=self.WS,
                                 buf_stride=2 * k, rows=rows, row_bytes=2 * k))
            a_addr, stride = self.WS, 2 * k
        self._quant(s, a_addr, rows, k, self.HQ + r0 * k, self.HS + 4 * r0, a_stride=stride,
                    residual=1, **f)
        self._quant(s, a_addr, rows, k, self.HQ + (total + r0) * k, self.HS + 4 * (total + r0),
                    a_stride=stride)

    def _planes_linear(self, s, point, tiles, k, out, cols, stride):
        """A linear on the T rows of its input at HQ (k columns; two planes at a wide `point`)
        into `cols` FP16 columns at `out`, rows `stride` bytes apart, the planes' outputs added."""
        n = self.planes(point)
        self._linear(s, tiles, self.HQ, k, n * self.T, [(0, cols, out, stride)],
                     agroup=self.point_agroup(point))
        if n == 2:
            self._plane_sum(s, out, self.T, cols, stride)

    def _plane_sum(self, s, out, rows, cols, stride, lo=None, **f):
        """A wide product's output: rows [0, rows) (the hi plane's) += the residual plane's,
        `cols` FP16 columns from `out`, rows `stride` bytes apart; the residual plane's rows
        follow (rows [rows, 2 rows)) or sit at `lo` with the same layout."""
        if cols:
            self._misc(s, "eadd", a_addr=out, b_addr=out + rows * stride if lo is None else lo,
                       out_addr=out, rows=rows, k=cols, a_stride=stride, b_stride=stride,
                       out_stride=stride, **f)

    def _head_plane_sum(self, s, h0, h1):
        """A wide attn_in: heads [h0, h1) of the q/k/v rows at Q += their second plane's at
        Q_LO (T rows of d columns a head, head-major)."""
        if self.planes("attn_in") == 2 and h1 > h0:
            d, T = self.d, self.T
            off = 2 * d * T * h0
            self._plane_sum(s, self.Q + off, (h1 - h0) * T, d, 2 * d, lo=self.Q_LO + off)

    def _ffn_plane_sum(self, s, gate, gate_lo, up, up_lo, fc, j0, j1):
        """A wide ffn_in: FFN columns [j0, j1) of gate and up (T rows, stride 2 fc) += their
        second plane's."""
        if self.planes("ffn_in") == 2 and j1 > j0:
            for a, b in ((gate, gate_lo), (up, up_lo)):
                self._plane_sum(s, a + 2 * j0, self.T, j1 - j0, 2 * fc, lo=b + 2 * j0)
