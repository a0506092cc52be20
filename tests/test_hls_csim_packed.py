"""HLS C simulation of packed weights against the Python FunctionalSimulator, bit for bit: the packed LD (dequantisation unit, N:16 tiles), the sparse MM/MV, and a mixed-precision sparse model's steps."""
from __future__ import annotations

import numpy as np
import pytest
from flightllm_overlay.spec import isa
from flightllm_overlay.spec.isa import Instruction
from flightllm_overlay.spec import wformat as WF

from hls_harness import CORES, F32, I8, Bench, check_model_steps

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")


# ---------------------------------------------------------------------------------------------
# Tiles: random codes, group parameters over their whole range (clamping included), N:16 masks
# ---------------------------------------------------------------------------------------------
def random_tile(rng, rows, k, bits, group, sparse, code=None) -> WF.PackedWeight:
    """A packed matrix with random codes; sparse blocks get `code` (or random N:16 codes) and
    N random kept columns per row.  M and B are half small, half anywhere in their 16-bit range,
    so the dequantisation unit's clamp and floor are exercised."""
    block_n = mask = None
    if sparse:
        shape = (rows // 16, k // 16)
        block_n = (np.full(shape, code, np.uint8) if code is not None
                   else rng.choice(WF.FSB_CODES, shape).astype(np.uint8))
        keys = rng.random((rows // 16, 16, k // 16, 16))
        rank = keys.argsort(-1).argsort(-1)
        mask = (rank < block_n[:, None, :, None]).reshape(rows, k)
    q = rng.integers(0, 1 << bits, (rows, k), dtype=np.int64).astype(np.uint8)
    if mask is not None:
        q[~mask] = 0
    mult = offset = None
    if bits < 8:
        gshape = (rows, k // group)
        small = rng.random(gshape) < 0.5
        mult = np.where(small, rng.integers(0, 4096, gshape), rng.integers(0, 65536, gshape))
        offset = np.where(small, rng.integers(-4096, 4096, gshape),
                          rng.integers(-32768, 32768, gshape))
        mult, offset = mult.astype(np.uint16), offset.astype(np.int16)
    scale = rng.uniform(1e-3, 1e-1, rows).astype(F32)
    return WF.PackedWeight(bits, group, q, mult, offset, scale, block_n, mask)


def put_tile(b: Bench, core, blob, stripe, first=1, pad=0, at=128):
    """Place a blob (plus `pad` bytes) on `core`'s ports: whole on port `first`, or in `stripe`
    equal chunks at the same offset of consecutive ports.  Returns (offset, row_bytes)."""
    rng = np.random.default_rng(blob.size)
    tile = np.concatenate([blob, rng.integers(0, 256, pad, dtype=np.uint8)])
    chunks = max(1, stripe)
    tile = np.concatenate([tile, np.zeros(-tile.size % chunks, np.uint8)])
    part = tile.size // chunks
    for i in range(chunks):
        ch = b.port(core, (first + i) % 8)
        b.cursor[ch] = at
        b.put(ch, tile[i * part:(i + 1) * part])
    return at, tile.size


def packed_ld(b: Bench, core, pw: WF.PackedWeight, buf_addr, fsb_addr=0, meta_addr=0, stripe=0,
              first=1, pad=0, at=128, **override) -> Instruction:
    lay = pw.layout()
    off, row_bytes = put_tile(b, core, pw.blob(), stripe, first, pad, at)
    rows, k = pw.shape
    f = dict(buf="wbuf", wfmt="packed", wk=k, wbits=WF.BITS.index(pw.bits),
             wgroup=WF.GROUPS.index(pw.group), sparse=int(pw.sparse), channel=b.port(core, first),
             stripe=stripe, hbm_addr=off, buf_addr=buf_addr, rows=rows, row_bytes=row_bytes,
             fsb_addr=fsb_addr if pw.sparse else 0, meta_addr=meta_addr if pw.sparse else 0,
             wn=lay["kept"] // 16 if pw.sparse else 0, wmeta=lay["meta"] if pw.sparse else 0)
    f.update(override)
    insn = Instruction("LD", **f)
    b.add(core, insn)
    return insn


def mpe_on(op, pw: WF.PackedWeight, m, w_addr, fsb_addr=0, meta_addr=0, **kw) -> Instruction:
    """An MM/MV over the tile a packed LD put at w_addr (scales right after the kept weights)."""
    lay = pw.layout()
    f = dict(m=m, n=pw.shape[0], k=pw.shape[1], a_addr=0, a_scale=60_000, w_addr=w_addr,
             w_scale=w_addr + lay["kept"], out_addr=0)
    if pw.sparse:
        f.update(sparse=1, fsb_addr=fsb_addr, meta_addr=meta_addr, nnz=lay["kept"] // 16,
                 meta_len=lay["meta"])
    f.update(kw)
    return Instruction(op, **f)


def load_activations(b: Bench, core, rng, m, k, a_stride=0):
    a = rng.integers(-128, 128, (m, max(k, a_stride)), dtype=np.int64).astype(I8)
    a[0, :] = -128
    b.load(core, "abuf", 0, a.reshape(1, -1), k=0)
    b.load(core, "abuf", 60_000, rng.uniform(1e-3, 1e-1, (1, m)).astype(F32), k=0)


# ---------------------------------------------------------------------------------------------
# The packed LD: every width, several groups, dense and sparse, striped or not; an MM then uses it
# ---------------------------------------------------------------------------------------------
LD_CASES = [
    # bits, group, sparse, stripe, rows, k, pad
    (2, 16, False, 0, 3, 64, 0),
    (3, 32, False, 3, 5, 96, 7),
    (4, 64, False, 8, 4, 128, 3),
    (8, 16, False, 2, 6, 40, 0),
    (3, 128, False, 0, 2, 256, 1),
    (2, 32, True, 8, 16, 64, 0),
    (3, 16, True, 0, 32, 48, 5),
    (4, 128, True, 5, 48, 128, 9),
    (8, 16, True, 2, 32, 32, 0),
]


@pytest.mark.parametrize("case", LD_CASES, ids=[f"{c[0]}bit-g{c[1]}-{'sparse' if c[2] else 'dense'}"
                                                f"-x{max(1, c[3])}-{c[4]}x{c[5]}" for c in LD_CASES])
def test_packed_ld_then_mm(csim, tmp_path, case):
    bits, group, sparse, stripe, rows, k, pad = case
    rng = np.random.default_rng(bits * 1000 + rows * k)
    b = Bench(channel_bytes=1 << 18)
    tiles = []
    for core in range(CORES):
        pw = random_tile(rng, rows, k, bits, group, sparse)
        tiles.append(pw)
        w_addr, fsb_addr, meta_addr = 256 + 64 * core, 7 * core, 100 + 33 * core
        packed_ld(b, core, pw, w_addr, fsb_addr, meta_addr, stripe=stripe, first=1 + core, pad=pad)
        load_activations(b, core, rng, 3, k)
        b.add(core, mpe_on("MM", pw, 3, w_addr, fsb_addr, meta_addr, out_addr=128 * core))
    py, _ = b.run(csim, tmp_path, what=str(case))
    for core, pw in enumerate(tiles):          # the buffers hold what the format says
        lay = pw.layout()
        w_addr = 256 + 64 * core
        wb = py.buffers[core]["wbuf"]
        np.testing.assert_array_equal(wb[w_addr:w_addr + lay["kept"]].view(I8),
                                      pw.int8().reshape(-1)[WF.block_order(pw.mask)]
                                      if sparse else pw.int8().reshape(-1))
        if sparse:
            assert py.buffers[core]["fsb"][7 * core:7 * core + lay["fsb"]].tolist() == \
                pw.block_n.reshape(-1).tolist()
    kept = tiles[0].layout()["kept"]
    assert py.counters["core0_macs"] == 3 * kept
    assert py.counters["core0_fixed_macs"] == 3 * rows * k


def test_two_packed_tiles_side_by_side_in_every_buffer(csim, tmp_path):
    """Two sparse tiles of different widths one after the other in wbuf, fsb and meta; an MV over
    each, then an LD that overwrites the first with a dense 8-bit tile and an MM over it."""
    rng = np.random.default_rng(17)
    b = Bench(channel_bytes=1 << 18)
    for core in range(CORES):
        first = random_tile(rng, 32, 64, 4, 32, True)
        second = random_tile(rng, 16, 64, 2, 16, True)
        dense = random_tile(rng, 8, 64, 8, 16, False)
        l1 = first.layout()
        w2, f2, m2 = 64 + l1["kept"] + 4 * 32, l1["fsb"], 8 + l1["meta"]
        packed_ld(b, core, first, 64, 0, 8, first=2, at=0)
        packed_ld(b, core, second, w2, f2, m2, first=3, at=0)
        load_activations(b, core, rng, 4, 64, a_stride=80)
        b.add(core, mpe_on("MV", first, 4, 64, 0, 8, a_stride=80),
              mpe_on("MV", second, 2, w2, f2, m2, out_addr=512, no_wscale=1, out_stride=80))
        packed_ld(b, core, dense, 64, first=4, at=0)
        b.add(core, mpe_on("MM", dense, 4, 64, out_addr=4096, a_stride=80))
    b.run(csim, tmp_path)
    b.run(csim, tmp_path, schedule="decoupled")


# ---------------------------------------------------------------------------------------------
# The sparse MM/MV: every N of N:16, mixed codes, several shapes and strides
# ---------------------------------------------------------------------------------------------
SPARSE_SHAPES = [
    # op, m, n, k, extra fields
    ("MM", 5, 32, 48, {}),
    ("MM", 33, 16, 64, {"a_stride": 80, "out_stride": 64}),
    ("MV", 1, 64, 96, {}),
    ("MV", 16, 32, 32, {"no_wscale": 1}),
]


@pytest.mark.parametrize("code", [2, 4, 8, 16, None], ids=["N2", "N4", "N8", "N16", "mixed"])
@pytest.mark.parametrize("shape", SPARSE_SHAPES,
                         ids=[f"{s[0]}-{s[1]}x{s[2]}x{s[3]}" for s in SPARSE_SHAPES])
def test_sparse_mpe(csim, tmp_path, shape, code):
    op, m, n, k, extra = shape
    rng = np.random.default_rng(m * n * k + (code or 0))
    b = Bench(channel_bytes=1 << 18)
    nnz = []
    for core in range(CORES):
        bits = (8, 4, 3)[core]
        pw = random_tile(rng, n, k, bits, 16, True, code)
        nnz.append(pw.layout()["kept"] // 16)
        packed_ld(b, core, pw, 1024, 5 + core, 40 + core, stripe=core, first=core)
        load_activations(b, core, rng, m, k, extra.get("a_stride", 0))
        b.add(core, mpe_on(op, pw, m, 1024, 5 + core, 40 + core, out_addr=256 * core, **extra))
    schedule = "decoupled" if code is None else "program"
    py, _ = b.run(csim, tmp_path, schedule=schedule)
    assert py.counters["core0_macs"] == m * 16 * nnz[0]
    assert py.counters["core0_fixed_macs"] == m * n * k
    if code is not None:
        assert py.counters["core0_macs"] * 16 == py.counters["core0_fixed_macs"] * code


# ---------------------------------------------------------------------------------------------
# A compiled model with mixed 2/3/4/8-bit, sparse and dense weights: its step images, both ways
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed64(tiny_ckpt):
    from flightllm_overlay.compiler import compile_quantized
    from test_packed_weights import MIXED, packed_model
    qm, _ = packed_model(tiny_ckpt, MIXED)
    program = compile_quantized(qm, ctx=64)
    assert program.meta["weight_bits"] == [2, 3, 4, 8] and program.meta["sparse"]
    return program


def test_mixed_precision_sparse_model_steps_are_bit_exact(csim, tmp_path, mixed64):
    counters = check_model_steps(csim, tmp_path, mixed64)
    for c in counters:           # the sparse layers ran on the sparse chain
        assert sum(c[f"core{i}_macs"] for i in range(CORES)) < \
            sum(c[f"core{i}_fixed_macs"] for i in range(CORES))
    assert any(insn.op == "LD" and insn["wfmt"] and insn["sparse"]
               for stream in _streams(mixed64) for insn in stream)


def _streams(program):
    from flightllm_overlay.compiler import BucketTable
    from flightllm_overlay.config import load_target
    step, _ = BucketTable(program, load_target("u280")).step("decode", 13)
    table = isa.image_table(step.image)
    return [isa.decode_stream(step.image[off:off + n]) for off, n in table]
