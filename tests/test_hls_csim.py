"""HLS C simulation (flightllm_overlay/src) against the Python FunctionalSimulator, bit for bit: the generated header, FP primitives, the tiny model's steps and hand-written programs per instruction type.

The kernels are built with g++ and the Xilinx HLS headers that `.ci/install-hls` unpacks (see
tests/hls_harness.py); without them the tests FAIL (not skip) and name that script.
"""
from __future__ import annotations

import numpy as np
import pytest
import subprocess
from flightllm_overlay.spec import isa
from flightllm_overlay.hw import hls_header
from flightllm_overlay.spec.isa import Instruction
from flightllm_overlay.spec import arithmetic as U
from flightllm_overlay.sim.functional import FunctionalSimulator

from hls_harness import (
    BARRIER,
    Bench,
    CORES,
    CXXFLAGS,
    END,
    F16,
    F32,
    HEADERS,
    I8,
    SCHEDULES,
    SOURCES,
    SRC,
    TARGET,
    assert_same,
    check,
    check_model_steps,
    fp16_data,
    run_csim,
    run_python,
    sim_buffers)

# FP16 overflow to inf (and inf - inf) is part of the MISC/MPE definitions these cases exercise.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

# ---------------------------------------------------------------------------------------------
# The header is generated, never edited
# ---------------------------------------------------------------------------------------------
def test_header_is_generated_and_current():
    text = (SRC / "flightllm_hw.h").read_text()
    assert text == hls_header.render("u280"), ("flightllm_overlay/src/flightllm_hw.h is stale: run "
                                               "python -m flightllm_overlay.hw.hls_header --write")
    for fmt in isa.FORMATS.values():
        for name, off, bits in fmt.layout:
            key = f"FLLM_{fmt.name}_{name.upper()}"
            assert f"{key}_OFF = {off};" in text and f"{key}_W = {bits};" in text


def test_sources_start_with_a_one_line_comment():
    for name in SOURCES + HEADERS:
        first = (SRC / name).read_text().splitlines()[0]
        assert first.startswith("// ") and len(first) > 20, name


# ---------------------------------------------------------------------------------------------
# Arithmetic primitives against numpy (a small C++ harness over flightllm_fp.h)
# ---------------------------------------------------------------------------------------------
FP_HARNESS = r"""
#include <cstdio>
#include <vector>
#include "flightllm_fp.h"
int main(int argc, char** argv) {
    FILE* in = std::fopen(argv[1], "rb"); FILE* out = std::fopen(argv[2], "wb");
    std::vector<uint32_t> v; uint32_t x;
    while (std::fread(&x, 4, 1, in) == 1) v.push_back(x);
    for (uint32_t b : v) { uint16_t h = fllm_f32_to_f16(fllm_bits_f32(b)); std::fwrite(&h, 2, 1, out); }
    for (uint32_t b : v) { uint32_t e = fllm_f32_bits(fllm_exp32(fllm_bits_f32(b))); std::fwrite(&e, 4, 1, out); }
    for (uint32_t h = 0; h < 65536; h++) { uint32_t f = fllm_f32_bits(fllm_f16_to_f32((uint16_t)h)); std::fwrite(&f, 4, 1, out); }
    std::fclose(out); return 0;
}
"""


def test_fp_primitives_match_numpy(csim, tmp_path):
    (tmp_path / "fp.cpp").write_text(FP_HARNESS)
    exe = tmp_path / "fp"
    subprocess.run(["g++"] + CXXFLAGS + [f"-I{SRC}", "-o", str(exe), str(tmp_path / "fp.cpp")],
                   check=True, capture_output=True)
    rng = np.random.default_rng(0)
    bits = np.concatenate([
        rng.integers(0, 2 ** 32, 300_000, dtype=np.uint64).astype(np.uint32),
        np.arange(0x33000000 - 64, 0x33000000 + 64, dtype=np.uint32),      # fp16 underflow
        np.arange(0x387FF000, 0x38801000, 7, dtype=np.uint32),             # subnormal/normal
        np.arange(0x477FE000, 0x47801000, 3, dtype=np.uint32),             # overflow edge
        (np.arange(-2 ** 16, 2 ** 16, dtype=np.int64) * 4096 + 0x3F800000).astype(np.uint32),
        np.array([0, 0x80000000, 0x7F800000, 0xFF800000], np.uint32),
    ])
    finite = bits[np.isfinite(bits.view(F32))]
    (tmp_path / "in.bin").write_bytes(finite.tobytes())
    subprocess.run([str(exe), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True)
    raw = np.fromfile(tmp_path / "out.bin", np.uint8)
    n = finite.size
    h = raw[:2 * n].view(np.uint16)
    e = raw[2 * n:6 * n].view(np.uint32)
    back = raw[6 * n:].view(np.uint32)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(h, finite.view(F32).astype(F16).view(np.uint16))
    np.testing.assert_array_equal(e, U.exp32(finite.view(F32)).view(np.uint32))
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(F16)
    ok = ~np.isnan(halves)
    np.testing.assert_array_equal(back[ok], halves[ok].astype(F32).view(np.uint32))


# ---------------------------------------------------------------------------------------------
# (a) The tiny model: prefill, decode and a second prefill chunk, both executors, same bits
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny64(tiny_ckpt):
    from flightllm_overlay.compiler import compile_model
    return compile_model(tiny_ckpt, ctx=64)


def test_tiny_model_steps_are_bit_exact(csim, tmp_path, tiny64):
    check_model_steps(csim, tmp_path, tiny64)


def test_every_schedule_option_is_bit_exact(csim, tmp_path, tiny_ckpt):
    """Every schedule option on (compute-only fences, striped tiles, the SFU split's MISC
    sub-vectors between MVs, per-slice residual adds), small tiles so the split has tiles to
    split after: both executors agree."""
    from flightllm_overlay.compiler import compile_model
    check_model_steps(csim, tmp_path, compile_model(tiny_ckpt, ctx=64, schedule="all",
                                                    weight_slots=512))


def test_staged_prefill_is_bit_exact(csim, tmp_path, staged_program):
    """A prefill staged through HBM (row blocks, slices gathered by remote and local copies),
    two launches and a decode step after them: both executors agree."""
    prompt = [int(t) for t in np.random.default_rng(5).integers(3, 300, 150)]
    check_model_steps(csim, tmp_path, staged_program, [("prefill", prompt[:128], 0, "program"),
                                                       ("prefill", prompt[128:], 128, "decoupled"),
                                                       ("decode", [11], 150, "program")])


def test_block_sparse_attention_prefill_is_bit_exact(csim, tmp_path, tiny_ckpt):
    """A (sink 1, window 1) pattern of 64-token blocks on every head: a 150-token prefill (two
    launches of the 128-row stream; the second one's queries, in block 2, lose key block 1) and a
    decode step; both executors agree."""
    from flightllm_overlay.compiler import BucketTable, compile_quantized, quantize_model
    qm = quantize_model(tiny_ckpt, None)
    qm.attn_pattern = [[(1, 1)] * tiny_ckpt.args.n_heads] * tiny_ckpt.args.n_layers
    program = compile_quantized(qm, ctx=256)
    image = BucketTable(program, TARGET).step("prefill", 150)[0].image
    off, n = isa.image_table(image)[0]
    assert any(i.op == "MISC" and i["blk_win"] for i in isa.decode_stream(image[off:off + n]))
    prompt = [int(t) for t in np.random.default_rng(4).integers(3, 300, 150)]
    rows = program.rows
    check_model_steps(csim, tmp_path, program, [("prefill", prompt[:rows], 0, "program"),
                                                 ("prefill", prompt[rows:], rows, "decoupled"),
                                                 ("decode", [11], 150, "program")])


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("pos, length", [(0, 3), (2, 4), (3, 5), (7, 1)])
def test_ld_st_every_buffer_and_dyn_mode(csim, tmp_path, pos, length, schedule):
    rng = np.random.default_rng(pos * 10 + length)
    b = Bench()
    rows, row_bytes = 8, 24
    for core in range(CORES):
        for bi, buf in enumerate(isa.BUFFERS):
            size = TARGET.buffer(buf).bytes
            data = rng.integers(0, 256, (rows, row_bytes + 16), dtype=np.uint8)
            ch = b.port(core, bi % 8)
            off = b.put(ch, data)
            hs, bs = row_bytes + 16, row_bytes + 8            # strides differ from the row size
            base = min(size - 6 * rows * bs - 64, 96 * core + 8 * bi)
            for mode in isa.DYN_MODES:
                b.add(core, Instruction("LD", buf=buf, dyn=mode, channel=ch, hbm_addr=off,
                                        buf_addr=base, rows=rows, row_bytes=row_bytes,
                                        hbm_stride=hs, buf_stride=bs))
                base += rows * bs
            st_ch = b.port(core, (bi + 3) % 8)
            for mode in isa.DYN_MODES:
                dst = b.put(st_ch, np.zeros(rows * 40, np.uint8))
                b.add(core, Instruction("ST", buf=buf, dyn=mode, channel=st_ch, hbm_addr=dst,
                                        buf_addr=base - rows * bs, rows=rows, row_bytes=row_bytes - 4,
                                        hbm_stride=40, buf_stride=bs))
    b.run(csim, tmp_path, pos, length, schedule)


@pytest.mark.parametrize("stripe, first", [(2, 0), (4, 3), (8, 0), (3, 6), (7, 5), (5, 2)])
def test_striped_ld_wraps_round_the_cores_ports(csim, tmp_path, stripe, first):
    rng = np.random.default_rng(stripe * 8 + first)
    b = Bench()
    for core in range(CORES):
        chunks = stripe               # a channel count, not only powers of two
        chunk = 96
        off = None
        for i in range(chunks):       # chunk i at the same offset of the i-th port after `first`
            ch = b.port(core, (first + i) % 8)
            b.cursor[ch] = 256
            o = b.put(ch, rng.integers(0, 256, chunk, dtype=np.uint8))
            assert off in (None, o)
            off = o
        for buf, addr in (("wbuf", 64 * core), ("gbuf", 1000 + core)):
            b.add(core, Instruction("LD", buf=buf, channel=b.port(core, first), stripe=stripe,
                                    hbm_addr=off, buf_addr=addr, rows=1, row_bytes=chunk * chunks,
                                    hbm_stride=chunk * chunks, buf_stride=chunk * chunks))
    b.run(csim, tmp_path)
    b.run(csim, tmp_path, schedule="decoupled")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_remote_ld_reads_another_cores_buffer_after_a_barrier(csim, tmp_path, schedule):
    rng = np.random.default_rng(3)
    b = Bench()
    for core in range(CORES):
        b.load(core, "gbuf", 4096 * core, rng.integers(0, 256, (6, 64), dtype=np.uint8))
        b.load(core, "abuf", 512 * core, rng.integers(0, 256, (2, 100), dtype=np.uint8))
        b.add(core, BARRIER)
    for core in range(CORES):
        other = (core + 1) % CORES
        b.add(core, Instruction("LD", buf="gbuf", remote=1, remote_core=other,
                                hbm_addr=4096 * other, hbm_stride=64,
                                buf_addr=4096 * other, rows=6, row_bytes=64, buf_stride=64),
              Instruction("LD", buf="abuf", dyn="step", remote=1, remote_core=other,
                          hbm_addr=512 * other, hbm_stride=100,
                          buf_addr=512 * other, rows=2, row_bytes=100, buf_stride=100),
              # a local copy (gathering the core's own slice) with other addresses and strides
              Instruction("LD", buf="gbuf", remote=1, remote_core=core, hbm_addr=4096 * core,
                          hbm_stride=64, buf_addr=16384, rows=3, row_bytes=40, buf_stride=128),
              Instruction("ST", buf="gbuf", channel=b.port(core, 2), hbm_addr=0,
                          buf_addr=4096 * other, rows=6, row_bytes=64, hbm_stride=64,
                          buf_stride=64),
              Instruction("ST", buf="gbuf", channel=b.port(core, 3), hbm_addr=0,
                          buf_addr=16384, rows=3, row_bytes=128, hbm_stride=128,
                          buf_stride=128))
    b.run(csim, tmp_path, pos=0, length=1, schedule=schedule)


MPE_CASES = [
    # op, m, n, k, flags, strides (a, w, out)
    ("MM", 5, 7, 9, {}, (0, 0, 0)),
    ("MM", 33, 20, 70, {"wt": 1}, (0, 0, 0)),
    ("MM", 4, 6, 1500, {}, (1504, 1510, 16)),          # K past the 1024 exact-FP32 chunk
    ("MM", 3, 5, 3000, {"wt": 1, "no_wscale": 1}, (0, 0, 0)),
    ("MM", 6, 12, 10, {"dyn_n": 1}, (10, 10, 32)),
    ("MM", 6, 12, 10, {"dyn_n": 1, "blk_sink": 1, "blk_win": 2}, (10, 10, 32)),
    ("MM", 6, 8, 12, {"wt": 1, "dyn_k": 1, "no_wscale": 1}, (12, 8, 16)),
    ("MV", 1, 64, 96, {}, (0, 0, 0)),
    ("MV", 16, 9, 40, {"wt": 1}, (48, 12, 20)),
    ("MV", 2, 12, 10, {"dyn_n": 1, "dyn_k": 1}, (10, 10, 24)),
    # dyn_m (len = 5): rows 0-4 and 8-11 of 12 in groups of 8; a group of 0 means m (rows 0-4)
    ("MM", 12, 20, 70, {"dyn_m": 1, "m_group": 8}, (0, 0, 0)),
    ("MM", 7, 9, 40, {"dyn_m": 1, "wt": 1}, (48, 12, 20)),
    ("MM", 16, 12, 10, {"dyn_m": 1, "m_group": 8, "dyn_n": 1}, (10, 10, 32)),
    ("MM", 6, 7, 9, {"dyn_m": 1, "m_group": 3}, (0, 0, 0)),     # len >= group: every row
    # agroup: A's scales per 32 / 64 / 128 columns (one pass per group)
    ("MM", 5, 20, 64, {"agroup": 1}, (0, 0, 0)),
    ("MV", 3, 24, 256, {"agroup": 2, "wt": 1}, (0, 0, 64)),
    ("MM", 12, 20, 256, {"agroup": 3, "dyn_m": 1, "m_group": 8, "no_wscale": 1}, (272, 0, 0)),
]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("case", MPE_CASES, ids=[f"{c[0]}-{c[1]}x{c[2]}x{c[3]}-{'-'.join(c[4]) or 'plain'}"
                                                 for c in MPE_CASES])
def test_mpe(csim, tmp_path, case, schedule):
    op, m, n, k, flags, (a_s, w_s, o_s) = case
    rng = np.random.default_rng(m * n * k)
    pos, length = 4, 5                       # dyn sizes: pos + len = 9 <= n, k of those cases
    b = Bench(channel_bytes=1 << 20)
    for core in range(CORES):
        kk, nn = (k if not flags.get("dyn_k") else pos + length), (n if not flags.get("dyn_n") else pos + length)
        a = rng.integers(-128, 128, (m, max(a_s, kk)), dtype=np.int64).astype(I8)
        a[0, :] = -128
        w_rows, w_cols = (kk, nn) if flags.get("wt") else (nn, kk)
        w = rng.integers(-128, 128, (w_rows, max(w_s, w_cols)), dtype=np.int64).astype(I8)
        w[0, :] = -128
        group = isa.ACT_GROUPS[flags.get("agroup", 0)]
        sa = rng.uniform(1e-4, 1e-1, m).astype(F32)
        if group:                       # per row: the FP32 scale, then exponent bytes
            sa = U.pack_group_scales(sa, rng.integers(0, 256, (m, k // group)), group, k).view(F32)
        sw = rng.uniform(1e-4, 1e-1, n).astype(F32)
        b.load(core, "abuf", 0, a.reshape(1, -1), k=1)
        b.load(core, "abuf", 400_000, sa[None, :], k=2)
        b.load(core, "wbuf", 0, w.reshape(1, -1), k=3)
        b.load(core, "wbuf", 1_800_000, sw[None, :], k=4)
        b.add(core, Instruction(op, m=m, n=n, k=k, a_addr=0, a_scale=400_000, w_addr=0,
                                w_scale=1_800_000, out_addr=64 * core, a_stride=a_s, w_stride=w_s,
                                out_stride=o_s, **flags))
    py, _ = b.run(csim, tmp_path, pos, length, schedule)
    assert py.counters["core0_macs"] > 0


MISC_CASES = {
    "eadd-rows": (dict(op="eadd", b_stride=200), 6, 64),
    "eadd-bcast-f32": (dict(op="eadd", bcast_b=1, b_f32=1), 5, 40),
    "emul-rows-f32": (dict(op="emul", b_f32=1), 4, 33),
    "emul-bcast": (dict(op="emul", bcast_b=1), 7, 64),
    "emul-in-place": (dict(op="emul", bcast_b=1, in_place=1), 7, 64),
    "silu": (dict(op="silu"), 9, 100),
    "relu": (dict(op="relu"), 5, 72),
    "layernorm": (dict(op="layernorm", imm=isa.f32_bits(1e-5)), 6, 96),
    "layernorm-f32-strided": (dict(op="layernorm", b_f32=1, b_stride=2400, imm=isa.f32_bits(0.25)), 3, 576),
    "rmsnorm": (dict(op="rmsnorm", imm=isa.f32_bits(1e-5)), 6, 96),
    "rmsnorm-f32-gamma": (dict(op="rmsnorm", b_f32=1, imm=isa.f32_bits(0.5)), 3, 576),
    "softmax": (dict(op="softmax", imm=isa.f32_bits(0.3)), 12, 96),
    "softmax-causal-dyn": (dict(op="softmax", causal=1, dyn_k=1, groups=3, imm=isa.f32_bits(0.25)), 6, 20),
    "softmax-causal-g0": (dict(op="softmax", causal=1, imm=isa.f32_bits(1.5)), 4, 16),
    "softmax-block-sparse": (dict(op="softmax", causal=1, groups=200, blk_sink=1, blk_win=1,
                                  imm=isa.f32_bits(0.5)), 200, 256),
    "softmax-block-sparse-wide": (dict(op="softmax", causal=1, groups=150, blk_sink=2, blk_win=3,
                                       imm=isa.f32_bits(0.7)), 150, 320),
    "rope": (dict(op="rope", groups=3, b_stride=160), 6, 32),
    "rope-g0": (dict(op="rope"), 4, 16),
    "quant": (dict(op="quant", out_abuf=1, out_stride=80), 5, 64),
    "quant-dyn": (dict(op="quant", out_abuf=1, dyn_k=1), 4, 20),
    "strided": (dict(op="eadd", a_stride=300, out_stride=260), 5, 64),
    "amax": (dict(op="amax", a_stride=300), 5, 64),
    "rmsnorm-amax": (dict(op="rmsnorm", amax=1, imm=isa.f32_bits(1e-5)), 6, 96),
    "emul-amax": (dict(op="emul", amax=1, bcast_b=1), 7, 64),
    "quant-given-max": (dict(op="quant", out_abuf=1, given_max=1, groups=3, b_stride=20), 5, 64),
    "quant-diffuse": (dict(op="quant", out_abuf=1, diffuse=1, out_stride=80), 5, 64),
    "quant-diffuse-dyn": (dict(op="quant", out_abuf=1, diffuse=1, dyn_k=1), 4, 20),
    "quant-diffuse-given-max": (dict(op="quant", out_abuf=1, diffuse=1, given_max=1, groups=3,
                                     b_stride=20), 5, 64),
    "quant-diffuse-probabilities": (dict(op="quant", out_abuf=1, diffuse=1), 6, 300),
    # dyn_rows (len = 6): rows whose token r mod groups is below 6
    "eadd-dyn-rows": (dict(op="eadd", dyn_rows=1, groups=8, b_stride=200), 16, 64),
    "silu-dyn-rows-all": (dict(op="silu", dyn_rows=1, groups=4), 9, 100),
    "rmsnorm-amax-dyn-rows": (dict(op="rmsnorm", amax=1, dyn_rows=1, groups=8,
                                   imm=isa.f32_bits(1e-5)), 12, 96),
    "layernorm-dyn-rows": (dict(op="layernorm", dyn_rows=1, groups=7, imm=isa.f32_bits(1e-5)),
                           14, 96),
    "softmax-causal-dyn-rows": (dict(op="softmax", causal=1, dyn_k=1, dyn_rows=1, groups=8,
                                     imm=isa.f32_bits(0.25)), 16, 20),
    "rope-dyn-rows": (dict(op="rope", groups=8, dyn_rows=1, b_stride=160), 16, 32),
    "quant-dyn-rows": (dict(op="quant", out_abuf=1, dyn_rows=1, groups=8, diffuse=1), 16, 64),
    "amax-dyn-rows": (dict(op="amax", dyn_rows=1, groups=8), 16, 64),
    "quant-residual": (dict(op="quant", out_abuf=1, residual=1, a_stride=160, out_stride=80), 5, 64),
    "quant-residual-dyn": (dict(op="quant", out_abuf=1, residual=1, dyn_k=1), 4, 20),
    "quant-residual-given-max": (dict(op="quant", out_abuf=1, residual=1, given_max=1, groups=3,
                                      b_stride=20), 5, 64),
    "quant-agroup": (dict(op="quant", out_abuf=1, agroup=1, out_stride=80), 5, 64),
    "quant-agroup-dyn-rows": (dict(op="quant", out_abuf=1, agroup=3, dyn_rows=1, groups=8), 16,
                              256),
}


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("name", list(MISC_CASES))
def test_misc(csim, tmp_path, name, schedule):
    fields, rows, k = MISC_CASES[name]
    fields = dict(fields)
    in_place = fields.pop("in_place", 0)
    rng = np.random.default_rng(len(name) * rows * k)
    pos, length = 3, 6                        # causal with pos > 0; dyn K = 9
    b = Bench(channel_bytes=1 << 18)
    a_stride = fields.get("a_stride", 0) or 2 * k
    for core in range(CORES):
        a = fp16_data(rng, (rows, a_stride // 2), scale=3.0)
        if fields["op"] in ("rmsnorm", "layernorm"):
            a[0] = 0                                          # an all-zero row
        if fields["op"] == "layernorm":
            a[1] = 40 + 0.5 * rng.standard_normal(a.shape[1])  # a mean that dwarfs the spread
        if fields["op"] == "relu":
            a[0, :4] = [0.0, -0.0, np.inf, -np.inf]
        if name in ("quant", "quant-diffuse", "quant-residual", "quant-agroup"):
            a[1] = 0
            a[2, :3] = [127, 0.5, -1.5]
        if name == "quant-diffuse-probabilities":     # softmax-like rows: many small values
            e = np.exp(rng.standard_normal(a.shape) * 3)
            a = (e / e.sum(axis=1, keepdims=True)).astype(F16)
        b.load(core, "gbuf", 0, a.reshape(1, -1))
        b_f32 = fields.get("b_f32", 0)
        if fields["op"] in ("eadd", "emul", "rmsnorm", "layernorm"):
            b_rows = 2 if fields["op"] == "layernorm" else 1 if (
                fields.get("bcast_b") or fields["op"] == "rmsnorm") else rows
            stride = fields.get("b_stride", 0) // (4 if b_f32 else 2) or k
            data = rng.standard_normal((b_rows, stride)) * 2
            if fields["op"] in ("rmsnorm", "layernorm"):
                data[0] = 1 + 0.1 * data[0]                   # gamma near 1 (beta as drawn)
            b.load(core, "gbuf", 100_000, data.astype(F32 if b_f32 else F16).reshape(1, -1), k=1)
        if fields.get("given_max"):           # the rows' true maxima, as partials over chunks
            n = fields["groups"]
            parts = np.array_split(np.abs(a[:, :k].astype(F32)), n, axis=1)
            maxima = np.zeros((rows, fields["b_stride"] // 4), F32)
            maxima[:, :n] = np.stack([p.max(axis=1) for p in parts], axis=1)
            b.load(core, "gbuf", 100_000, maxima.reshape(1, -1), k=1)
        if fields["op"] == "rope":
            tokens = min(rows, max(1, fields.get("groups", 0)))
            stride = fields.get("b_stride", 0) // 2 or k
            ang = rng.uniform(0, 6.3, (tokens, k // 2))
            table = np.zeros((tokens, stride), F16)
            table[:, :k] = np.concatenate([np.cos(ang), np.sin(ang)], axis=1).astype(F16)
            b.load(core, "gbuf", 100_000, table.reshape(1, -1), k=1)
        out = 0 if in_place else 200_000 + 2 * core
        b.add(core, Instruction("MISC", rows=rows, k=k, a_addr=0, b_addr=100_000, out_addr=out,
                                out2_addr=300_000 + 4 * core if fields["op"] == "quant" else
                                400_000 + 64 * core if fields["op"] == "amax" or fields.get("amax")
                                else 0,
                                **fields))
    py, _ = b.run(csim, tmp_path, pos, length, schedule)
    assert py.counters["core0_misc_elements"] > 0


def test_misc_special_values_and_overflow(csim, tmp_path):
    """+-inf from FP16 overflow, huge softmax logits, subnormal outputs: still bit for bit."""
    b = Bench()
    a = np.array([[60000, -60000, 300, -300, 1e-4, 6e-8, 0, -0.0]] * 2, F16)
    big = np.array([[60000, 59000, -65504, 0, 1, 2, 3, 4]] * 2, F16)
    b.load(0, "gbuf", 0, a)
    b.load(0, "gbuf", 64, big)
    b.add(0, Instruction("MISC", op="emul", rows=2, k=8, a_addr=0, b_addr=0, out_addr=1024),
          Instruction("MISC", op="eadd", rows=2, k=8, a_addr=0, b_addr=0, out_addr=1088),
          Instruction("MISC", op="softmax", rows=2, k=8, a_addr=64, out_addr=1152,
                      imm=isa.f32_bits(1.0)),
          Instruction("MISC", op="silu", rows=2, k=8, a_addr=0, out_addr=1216),
          Instruction("MISC", op="rmsnorm", rows=2, k=8, a_addr=64, b_addr=0, out_addr=1280,
                      imm=isa.f32_bits(1e-6)),
          Instruction("MISC", op="emul", rows=1, k=8, a_addr=1024, b_addr=0, out_addr=1344))
    py, _ = b.run(csim, tmp_path)
    out = py.buffers[0]["gbuf"][1024:1040].view(F16)
    assert np.isinf(out).any()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_multi_phase_program_with_tokens_and_barriers(csim, tmp_path, schedule):
    """A small layer: LD, quant, MM, softmax, ST over three phases on every core."""
    rng = np.random.default_rng(11)
    b = Bench(channel_bytes=1 << 18)
    for core in range(CORES):
        b.load(core, "gbuf", 0, fp16_data(rng, (4, 48)))
        b.load(core, "wbuf", 0, rng.integers(-127, 128, (1, 32 * 48), dtype=np.int64).astype(I8), k=1)
        b.load(core, "wbuf", 8192, rng.uniform(0.01, 0.02, (1, 32)).astype(F32), k=2)
        b.add(core, Instruction("MISC", op="quant", out_abuf=1, rows=4, k=48, a_addr=0, out_addr=0,
                                out2_addr=4096),
              BARRIER,
              Instruction("MM", m=4, n=32, k=48, a_addr=0, a_scale=4096, w_addr=0, w_scale=8192,
                          out_addr=8192),
              Instruction("MISC", op="softmax", rows=4, k=32, a_addr=8192, out_addr=8192,
                          imm=isa.f32_bits(0.125), causal=1, groups=4),
              BARRIER,
              Instruction("LD", buf="gbuf", remote=1, remote_core=(core + 2) % CORES,
                          hbm_addr=8192, hbm_stride=64, buf_addr=8192, rows=4, row_bytes=64,
                          buf_stride=64),
              Instruction("ST", buf="gbuf", dyn="step", channel=b.port(core, 5), hbm_addr=0,
                          buf_addr=8192, rows=4, row_bytes=64, hbm_stride=64, buf_stride=64))
    b.run(csim, tmp_path, pos=1, length=3, schedule=schedule)


def test_decoupled_schedule_honours_only_the_tokens(csim, tmp_path):
    """Without its wait, a MISC runs before the LD it reads in the decoupled schedule (consumers
    first): C++ then differs from the program-order result; with the tokens both agree."""
    rng = np.random.default_rng(5)
    data = fp16_data(rng, (2, 32))

    def bench():
        b = Bench()
        b.load(0, "gbuf", 0, data)
        b.add(0, Instruction("MISC", op="silu", rows=2, k=32, a_addr=0, out_addr=4096))
        return b

    bench().run(csim, tmp_path, schedule="decoupled", chain=True)
    b = bench()
    image = isa.pack_image([isa.encode_stream(b.streams[0] + [END])] + [isa.encode_stream([END])] * 2)
    sim = FunctionalSimulator(TARGET)
    before = sim_buffers(sim)
    py = run_python(sim, image, b.chan, 0, 0)
    racy = run_csim(csim, tmp_path / "racy", image, b.chan, 0, 0, before, "decoupled")
    assert racy.error is None
    assert not np.array_equal(racy.buffers[0]["gbuf"], py.buffers[0]["gbuf"])
    in_order = run_csim(csim, tmp_path / "ordered", image, b.chan, 0, 0, before, "program")
    assert_same(py, in_order, "program order")


def test_on_chip_buffers_persist_between_runs(csim, tmp_path):
    """A run that reads what an earlier run left in the buffers (SRAM keeps its contents)."""
    rng = np.random.default_rng(9)
    b = Bench()
    b.load(1, "gbuf", 0, fp16_data(rng, (3, 16)))
    sim = FunctionalSimulator(TARGET)
    check(csim, tmp_path, b.streams, b.chan, sim=sim)
    second = [[], [Instruction("MISC", op="silu", rows=3, k=16, a_addr=0, out_addr=512)]]
    check(csim, tmp_path, second, b.chan, sim=sim)
