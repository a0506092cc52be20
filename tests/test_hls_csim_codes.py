"""HLS C simulation of the exact group arithmetic (`wcodes`) against the Python FunctionalSimulator, bit for bit: the packed LD that passes codes and (M, B), the MM/MV on code rows (with and without activation groups), and their errors."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flightllm_overlay.spec import arithmetic as U
from flightllm_overlay.spec import isa
from flightllm_overlay.spec import wformat as WF
from flightllm_overlay.spec.isa import Instruction

from hls_harness import CORES, F32, I8, Bench, check
from test_hls_csim_packed import packed_ld, random_tile

# FP16 overflow to inf is part of the MPE's definition (M and B span their 16 bits here).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

A_SCALE = 60_000


def code_tile(rng, rows, k, bits, group) -> WF.PackedWeight:
    """A dense tile with random codes and (M, B) half small, half anywhere in their 16 bits
    (test_hls_csim_packed.random_tile), marked `exact`, row scales small enough that most
    results stay finite in FP16."""
    pw = random_tile(rng, rows, k, bits, group, False)
    pw.mult[0, 0], pw.offset[0, 0] = 65535, -32768          # the extremes of both fields
    if rows > 1:
        pw.offset[1, -1] = 32767
    scale = rng.uniform(1e-5, 1e-3, rows).astype(F32)
    return dataclasses.replace(pw, scale=scale, exact=True)


def load_activations(b: Bench, core, rng, m, k, agroup, a_stride=0):
    """INT8 rows of A at abuf 0 (row 0 all -128) and their scales at A_SCALE: one FP32 per row,
    or with `agroup` each row's FP32 scale then exponent bytes (random: the MPE takes 3 bits)."""
    a = rng.integers(-128, 128, (m, max(k, a_stride)), dtype=np.int64).astype(I8)
    a[0, :] = -128
    b.load(core, "abuf", 0, a.reshape(1, -1), k=0)
    scales = rng.uniform(1e-3, 3e-2, m).astype(F32)
    if agroup:
        raw = U.pack_group_scales(scales, rng.integers(0, 256, (m, k // agroup)), agroup, k)
        b.load(core, "abuf", A_SCALE, raw.reshape(1, -1), k=0)
    else:
        b.load(core, "abuf", A_SCALE, scales[None, :], k=0)


def mpe_on_codes(op, pw: WF.PackedWeight, m, w_addr, agroup=0, **kw) -> Instruction:
    """An MM/MV over the code rows a packed LD with wcodes put at w_addr (scales after them)."""
    n, k = pw.shape
    f = dict(m=m, n=n, k=k, a_addr=0, a_scale=A_SCALE, w_addr=w_addr,
             w_scale=w_addr + n * WF.code_row_bytes(k, pw.group), out_addr=0,
             wcodes=isa.WEIGHT_GROUPS.index(pw.group) + 1, agroup=isa.ACT_GROUPS.index(agroup))
    f.update(kw)
    return Instruction(op, **f)


# ---------------------------------------------------------------------------------------------
# A packed LD with wcodes, then an MV or MM on its code rows
# ---------------------------------------------------------------------------------------------
CASES = [
    # op, m, n, k, bits, weight group, agroup, stripe, extra MPE fields
    ("MV", 1, 40, 128, 4, 32, 0, 0, {}),
    ("MV", 7, 24, 256, 3, 64, 0, 3, {}),
    ("MV", 16, 18, 192, 2, 32, 0, 0, {"no_wscale": 1, "out_stride": 64}),
    ("MM", 5, 33, 128, 4, 32, 32, 0, {}),
    ("MM", 48, 20, 256, 4, 64, 32, 0, {}),        # weight group > activation group
    ("MM", 50, 17, 128, 3, 32, 0, 2, {"a_stride": 160}),
    ("MM", 52, 16, 256, 4, 32, 128, 0, {}),       # activation group > weight group
    ("MV", 3, 16, 256, 4, 16, 64, 0, {}),
    ("MV", 4, 20, 256, 4, 64, 64, 0, {}),
    ("MM", 12, 20, 256, 4, 128, 32, 0, {"dyn_m": 1, "m_group": 8}),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}x{c[2]}x{c[3]}-w{c[4]}g{c[5]}-a{c[6]}"
                                             f"{'-x' + str(c[7]) if c[7] else ''}"
                                             f"{'-' + '-'.join(c[8]) if c[8] else ''}" for c in CASES])
def test_packed_codes_ld_then_mpe(csim, tmp_path, case):
    op, m, n, k, bits, group, agroup, stripe, extra = case
    rng = np.random.default_rng(m * n * k + group + agroup)
    b = Bench(channel_bytes=1 << 18)
    tiles, w_addrs = [], []
    for core in range(CORES):
        pw = code_tile(rng, n, k, bits, group)
        w_addr = 1000 + 300 * core
        packed_ld(b, core, pw, w_addr, stripe=stripe, first=1 + core, pad=3 * core, wcodes=1)
        load_activations(b, core, rng, m, k, agroup, extra.get("a_stride", 0))
        b.add(core, mpe_on_codes(op, pw, m, w_addr, agroup, out_addr=4096 * core, **extra))
        tiles.append(pw)
        w_addrs.append(w_addr)
    py, _ = b.run(csim, tmp_path, pos=0, length=5, what=str(case))
    for core, (pw, w_addr) in enumerate(zip(tiles, w_addrs)):   # wbuf holds what the format says
        row = WF.code_row_bytes(k, group)
        raw = py.buffers[core]["wbuf"][w_addr:w_addr + pw.wbuf_bytes()]
        rows = raw[:n * row].reshape(n, row)
        np.testing.assert_array_equal(rows[:, :k], pw.q)
        gp = np.ascontiguousarray(rows[:, k:]).view(np.int16).reshape(n, k // group, 2)
        np.testing.assert_array_equal(gp[..., 0].view(np.uint16), pw.mult)
        np.testing.assert_array_equal(gp[..., 1], pw.offset)
        np.testing.assert_array_equal(raw[n * row:].view(F32), pw.scale)
    m_live = m if not extra.get("dyn_m") else 5 + (m - 8 if m > 8 else 0)
    assert py.counters["core0_macs"] == py.counters["core0_fixed_macs"] == m_live * n * k
    out = py.buffers[0]["gbuf"][:m * 2 * n].view(np.float16)
    assert np.isfinite(out).mean() > 0.9 and np.abs(out[np.isfinite(out)]).max() > 1


# ---------------------------------------------------------------------------------------------
# Code rows written by plain LDs: a row stride with a gap, parameters at their extremes, code
# bytes over their whole unsigned range (an LD writes 0..15; the MPE takes any byte), both
# schedules
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["program", "decoupled"])
@pytest.mark.parametrize("op, m, group, agroup", [("MV", 1, 32, 0), ("MV", 9, 64, 32),
                                                  ("MM", 49, 32, 64), ("MM", 3, 16, 64)])
def test_mpe_on_code_rows_with_a_stride(csim, tmp_path, op, m, group, agroup, schedule):
    rng = np.random.default_rng(7 * m + group + agroup)
    n, k = 24, 256
    b = Bench(channel_bytes=1 << 18)
    for core in range(CORES):
        q = rng.integers(0, 256, (n, k)).astype(np.uint8)
        mult = rng.integers(0, 65536, (n, k // group)).astype(np.uint16)
        offset = rng.integers(-32768, 32768, (n, k // group)).astype(np.int16)
        mult[0, 0], offset[0, 0], offset[1, 1] = 65535, -32768, 32767
        q[0, :group], q[1, :group] = 15, 255
        params = np.stack([mult.view(np.int16), offset], -1).reshape(n, -1).view(np.uint8)
        stride = k + params.shape[1] + 12
        rows = rng.integers(0, 256, (n, stride)).astype(np.uint8)    # the gaps hold junk
        rows[:, :k], rows[:, k:k + params.shape[1]] = q, params
        load_activations(b, core, rng, m, k, agroup)
        b.load(core, "wbuf", 64, rows.reshape(1, -1), k=2)
        b.load(core, "wbuf", 200_000, rng.uniform(1e-6, 1e-4, (1, n)).astype(F32), k=3)
        b.add(core, Instruction(op, m=m, n=n, k=k, a_addr=0, a_scale=A_SCALE, w_addr=64,
                                w_scale=200_000, out_addr=128 * core, w_stride=stride,
                                wcodes=isa.WEIGHT_GROUPS.index(group) + 1,
                                agroup=isa.ACT_GROUPS.index(agroup)))
    py, _ = b.run(csim, tmp_path, schedule=schedule)
    out = py.buffers[0]["gbuf"][:m * 2 * n].view(np.float16)
    assert np.isfinite(out).mean() > 0.9


# ---------------------------------------------------------------------------------------------
# Errors: the same code, core and pc in both executors
# ---------------------------------------------------------------------------------------------
def test_a_codes_ld_past_the_end_of_wbuf_is_refused_by_its_larger_layout(csim, tmp_path):
    """The INT8 layout of the tile would fit below the end of wbuf; its codes and (M, B) do not:
    an AddressError on core 2 at the LD, in both executors."""
    rng = np.random.default_rng(5)
    pw = code_tile(rng, 8, 128, 4, 16)
    lay = pw.layout()
    at = (2 << 20) - (lay["kept"] + 4 * 8) - 4
    b = Bench(channel_bytes=1 << 16)
    packed_ld(b, 2, pw, at, first=0, wcodes=1)
    py, _ = b.run(csim, tmp_path)
    assert py.error == (2, 2, 0), py.message
    b.streams[2][-1] = b.streams[2][-1].replace(wcodes=0)     # the INT8 layout fits
    py, _ = b.run(csim, tmp_path)
    assert py.error is None


def test_code_rows_past_the_end_of_wbuf_are_refused(csim, tmp_path):
    n, k = 16, 64
    row = WF.code_row_bytes(k, 32)
    mm = Instruction("MV", m=1, n=n, k=k, a_addr=0, a_scale=64, w_addr=(2 << 20) - n * row + 4,
                     no_wscale=1, out_addr=0, wcodes=2)
    py, _ = check(csim, tmp_path, [[], [mm]])
    assert py.error == (2, 1, 0), py.message
    py, _ = check(csim, tmp_path, [[], [mm.replace(w_addr=(2 << 20) - n * row)]])
    assert py.error is None
