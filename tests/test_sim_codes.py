"""The functional simulator's weight loads and MM/MV on codes with exact group arithmetic (`wcodes`) against the arithmetic's definitions, bit for bit, and the ISA's refusals."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.errors import AddressError, IllegalInstructionError
from flightllm_overlay.spec import arithmetic as U
from flightllm_overlay.spec import isa
from flightllm_overlay.spec import wformat as WF
from flightllm_overlay.spec.isa import Instruction
from test_sim_functional import END, F16, F32, I8, Memory, Prog, bits, run


def _operands(rng, m, n, k, group, agroup):
    a = rng.integers(-127, 128, (m, k)).astype(I8)
    q = rng.integers(0, 16, (n, k)).astype(np.uint8)
    mult = rng.integers(0, 65536, (n, k // group)).astype(np.uint16)
    offset = rng.integers(-32768, 32768, (n, k // group)).astype(np.int16)
    scales = (rng.random(m) / 50).astype(F32)
    exps = rng.integers(0, 8, (m, k // agroup)) if agroup else None
    a_scale = U.pack_group_scales(scales, exps, agroup, k) if agroup else scales
    w_scale = (rng.random(n) / 4096).astype(F32)
    return a, q, mult, offset, scales, exps, a_scale, w_scale


@pytest.mark.parametrize("op, m", [("MV", 1), ("MV", 7), ("MM", 60)])   # native, numpy
@pytest.mark.parametrize("group, agroup", [(32, 0), (32, 32), (64, 32), (16, 64)])
def test_matmul_on_codes_is_exact_group_arithmetic(op, m, group, agroup):
    """MM/MV with wcodes: acc = sum over groups of M * sum(q a) + B * sum(a), each shifted by
    its activation group's 7 - e, exact; then fp32(acc) * 2**-8 * scales
    (arithmetic.mpe_codes_reference, Python integers), including parameters at the extremes of
    their 16 bits."""
    rng = np.random.default_rng(31 + m + group + agroup)
    n, k = 40, 256
    a, q, mult, offset, scales, exps, a_scale, w_scale = _operands(rng, m, n, k, group, agroup)
    mult[0, 0], offset[0, 0], offset[1, 0] = 65535, -32768, 32767
    params = np.stack([mult.view(np.int16), offset], -1).reshape(n, -1).view(np.uint8)
    stride = k + params.shape[1] + 8 * (m % 2)             # packed rows, or a gap between
    rows = np.zeros((n, stride), np.uint8)
    rows[:, :k], rows[:, k:k + params.shape[1]] = q, params
    mem = Memory()
    p = Prog(mem)
    p.load("abuf", 0x0, a)
    p.load("abuf", 0x20000, np.atleast_2d(a_scale))
    p.load("wbuf", 0x100, rows, ch_index=1)
    p.load("wbuf", 0x40000, w_scale, ch_index=1)
    p.insns.append(Instruction(op, m=m, n=n, k=k, a_addr=0, a_scale=0x20000, w_addr=0x100,
                               w_scale=0x40000, out_addr=0x800, w_stride=stride * (m % 2),
                               wcodes=isa.WEIGHT_GROUPS.index(group) + 1,
                               agroup=isa.ACT_GROUPS.index(agroup)))
    read = p.store("gbuf", 0x800, (m, n), F16)
    run(mem, {0: p.insns + [END]})
    want = U.mpe_codes_reference(a, q, mult, offset, group, scales, w_scale, exps, agroup)
    assert np.isfinite(want.astype(F32)).all()
    np.testing.assert_array_equal(bits(read()), bits(want))
    fast = U.mpe_codes(a, U.code_weights(q, mult, offset, group), scales, w_scale, exps, agroup)
    np.testing.assert_array_equal(bits(fast.astype(F16)), bits(want))


def test_a_packed_load_passes_codes_and_the_mpe_holds_the_grid():
    """LD wcodes writes per row its codes and its groups' (M, B), then the row scales; the MPE on them
    computes with the unrounded weights (q M + B) / 256: it equals the float product with
    `PackedWeight(exact=True).float()` where the INT8 path rounds every weight."""
    rng = np.random.default_rng(33)
    n, k, m = 48, 128, 3
    w = rng.standard_normal((n, k)).astype(F32)
    pw = WF.quantize(w, 4, 32)
    exact = WF.PackedWeight(4, 32, pw.q, pw.mult, pw.offset, pw.scale, exact=True)
    blob = pw.blob()
    a = rng.integers(-127, 128, (m, k)).astype(I8)
    scales = np.full(m, 1 / 64, F32)
    mem = Memory()
    p = Prog(mem)
    p.load("abuf", 0x0, a)
    p.load("abuf", 0x20000, scales)
    ch, off = p.place(blob, 1)
    base = 0x1000
    p.insns.append(Instruction("LD", buf=0, channel=ch, hbm_addr=off, buf_addr=base, rows=n,
                               row_bytes=blob.size, hbm_stride=blob.size, buf_stride=blob.size,
                               wfmt=1, wk=k, wbits=WF.BITS.index(4), wgroup=WF.GROUPS.index(32),
                               wcodes=1))
    row = WF.code_row_bytes(k, 32)
    s_addr = base + n * row
    p.insns.append(Instruction("MV", m=m, n=n, k=k, a_addr=0, a_scale=0x20000, w_addr=base,
                               w_scale=s_addr, out_addr=0x800, wcodes=WF.GROUPS.index(32) + 1))
    wbuf = p.store("wbuf", base, (1, exact.wbuf_bytes()), np.uint8)
    read = p.store("gbuf", 0x800, (m, n), F16)
    run(mem, {0: p.insns + [END]})
    raw = wbuf()[0]
    assert raw.size == s_addr - base + 4 * n
    rows = raw[:s_addr - base].reshape(n, row)
    np.testing.assert_array_equal(rows[:, :k], pw.q)
    gp = np.ascontiguousarray(rows[:, k:]).view(np.int16).reshape(n, k // 32, 2)
    np.testing.assert_array_equal(gp[..., 0].view(np.uint16), pw.mult)
    np.testing.assert_array_equal(gp[..., 1], pw.offset)
    np.testing.assert_array_equal(raw[s_addr - base:].view(F32), pw.scale)
    got = read().astype(np.float64)
    want = a.astype(np.float64) @ exact.float().astype(np.float64).T * scales[0]
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-3)
    rounded = a.astype(np.float64) @ pw.float().astype(np.float64).T * scales[0]
    assert np.abs(got - want).mean() < 0.05 * np.abs(rounded - want).mean()


@pytest.mark.parametrize("fields, why", [
    (dict(sparse=1, nnz=4), "sparse"), (dict(wt=1), "wt"), (dict(dyn_k=1), "dynamic"),
    (dict(k=48), "multiple"), (dict(wcodes=5), "legal"), (dict(w_stride=64), "w_stride")])
def test_the_isa_refuses_codes_it_cannot_group(fields, why):
    """wcodes needs dense (N, K) rows of whole groups and a static shape."""
    f = dict(m=1, n=16, k=64, wcodes=2)
    f.update(fields)
    with pytest.raises(IllegalInstructionError, match=why):
        isa.encode(Instruction("MV", **f))


@pytest.mark.parametrize("fields, why", [
    (dict(wbits=3), "8-bit"), (dict(sparse=1), "sparse"), (dict(wfmt=0), "no wfmt")])
def test_a_load_passes_codes_only_of_dense_low_bit_tiles(fields, why):
    f = dict(buf=0, rows=16, row_bytes=64, wfmt=1, wk=32, wbits=2, wgroup=1, wcodes=1)
    f.update(fields)
    with pytest.raises(IllegalInstructionError, match=why):
        isa.encode(Instruction("LD", **f))


def test_code_rows_past_the_weight_buffer_name_the_operand():
    """The code rows are checked with their parameters: rows that end past wbuf are an
    AddressError naming the group parameters, not a wrong result."""
    mem = Memory()
    p = Prog(mem)
    p.insns.append(Instruction("MV", m=1, n=16, k=64, wcodes=2, w_addr=(1 << 22) - 16 * 64 - 8,
                               no_wscale=1, out_addr=0x800))
    with pytest.raises(AddressError, match="group parameters"):
        run(mem, {0: p.insns + [END]})


def test_the_timing_model_charges_the_code_path_where_it_costs():
    """Codes in groups of 32 keep the chain's rate in decode (one row: its group sums keep pace);
    groups of 16 halve it (the combine DSP does two multiplies a group); a prefill block of 128
    rows waits for its group sums in 16 trees (7 more passes over k for the first output pass)."""
    from flightllm_overlay.config import load_target
    from flightllm_overlay.hw.design import CODE_SUM_TREES
    from flightllm_overlay.sim.timing import TimingModel
    tm = TimingModel(load_target("u280"))
    k, n = 576, 1536
    mv = dict(m=1, n=n, k=k)
    int8 = tm.cost("MV", mv)[0]
    assert tm.cost("MV", dict(mv, wcodes=2))[0] == int8
    assert tm.cost("MV", dict(mv, wcodes=1))[0] - tm.mpe_latency == 2 * (int8 - tm.mpe_latency)
    mm = dict(m=128, n=n, k=k)
    extra = tm.cost("MM", dict(mm, wcodes=2))[0] - tm.cost("MM", mm)[0]
    assert extra == (128 // CODE_SUM_TREES - 1) * (k // 16)
    assert tm.cost("MM", dict(mm, wcodes=2))[3] == tm.cost("MM", mm)[3]     # same MACs
