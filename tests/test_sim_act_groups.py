"""The functional simulator's quant and MM/MV with shared-exponent activation groups (`agroup`) against the arithmetic's definitions, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.spec import arithmetic as U
from flightllm_overlay.spec import isa
from flightllm_overlay.spec.isa import Instruction
from test_sim_functional import END, F16, F32, I8, Memory, Prog, bits, run, run_misc


@pytest.mark.parametrize("agroup", [1, 2, 3])
def test_quant_gives_each_group_of_channels_its_own_step(agroup):
    """quant with agroup: per row the FP32 scale absmax / 127, then per group of G channels an
    exponent byte e (the largest e <= 7 with the group's max * 2**e <= absmax; 7 for an
    all-zero group), and codes at the row's step divided by 2**e: an outlier keeps its group at
    the row step, the others get finer steps."""
    group = isa.ACT_GROUPS[agroup]
    rng = np.random.default_rng(21)
    a = (rng.standard_normal((5, 256)) * 3).astype(F16)
    a[1, :group] = 0
    a[3, 7] = 900
    q, raw = run_misc(a, None, op="quant", out_abuf=1, out2_addr=0x3000, agroup=agroup)
    scale, exps = U.split_group_scales(raw, group, 256)
    np.testing.assert_array_equal(scale, np.abs(a.astype(F32)).max(1) / F32(127))
    for r in range(5):
        for g in range(256 // group):
            x = a[r, g * group:(g + 1) * group].astype(F32)
            e = max([0] + [j for j in range(1, 8) if np.abs(x).max() * 2.0 ** j <= scale[r] * 127])
            assert exps[r, g] == e, (r, g)
            step = scale[r] * F32(2.0 ** -e)
            np.testing.assert_array_equal(q[r, g * group:(g + 1) * group],
                                          np.clip(np.rint(x / step), -127, 127))
    assert exps[1, 0] == 7 and exps[3, 0] == 0 and exps[3, 1:].min() >= 3
    assert raw.shape[1] == U.group_scale_bytes(group, 256)


@pytest.mark.parametrize("op, m", [("MM", 33), ("MV", 5), ("MM", 60)])   # native, numpy
@pytest.mark.parametrize("agroup", [1, 2])
@pytest.mark.parametrize("wt", [0, 1])
def test_matmul_with_shared_exponent_groups_is_bit_exact(op, m, agroup, wt):
    """MM/MV with agroup: acc = sum over groups of the exact group sum times 2**(7 - e), exact;
    then fp32(acc) * (row scale / 128) * weight scale (arithmetic.mpe_grouped_reference, Python
    integers); exponents taken from their bytes' low three bits."""
    group = isa.ACT_GROUPS[agroup]
    mem = Memory()
    rng = np.random.default_rng(22)
    n, k = 24, 384
    a = rng.integers(-127, 128, (m, k)).astype(I8)
    w = rng.integers(-127, 128, (n, k)).astype(I8)
    scales = (rng.random(m) / 50).astype(F32)
    exps = rng.integers(0, 8, (m, k // group))
    raw = U.pack_group_scales(scales, exps, group, k)
    raw[0, 4] |= 0xF8                                  # only the low three bits count
    w_scale = (rng.random(n) / 50).astype(F32)
    p = Prog(mem)
    p.load("abuf", 0x0, a)
    p.load("abuf", 0x20000, raw)
    p.load("wbuf", 0x100, np.ascontiguousarray(w.T if wt else w), ch_index=1)
    p.load("wbuf", 0x40000, w_scale, ch_index=1)
    p.insns.append(Instruction(op, m=m, n=n, k=k, wt=wt, a_addr=0, a_scale=0x20000, w_addr=0x100,
                               w_scale=0x40000, out_addr=0x800, agroup=agroup))
    read = p.store("gbuf", 0x800, (m, n), F16)
    run(mem, {0: p.insns + [END]})
    want = U.mpe_grouped_reference(a, w, scales, exps, w_scale, group)
    np.testing.assert_array_equal(bits(read()), bits(want))
    fast = U.mpe_grouped(a, w.T.astype(F32), scales, exps, w_scale, group).astype(F16)
    np.testing.assert_array_equal(bits(fast), bits(want))
    # exponents all 0 are the per-row epilogue, bit for bit
    np.testing.assert_array_equal(
        bits(U.mpe_grouped_reference(a, w, scales, 0 * exps, w_scale, group)),
        bits(U.mpe_reference(a, w, scales, w_scale)))
