"""The mpe kernel alone in C simulation against a numpy model of its AXI4-Stream beat format (docs/mpe_stream.md)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from hls_harness import CXXFLAGS, HINT, SHIM, SRC, hls_include

INSN, OPERAND, END = 0x01, 0x02, 0x0F


@pytest.fixture(scope="module")
def mpe_tb(tmp_path_factory):
    for h in ("ap_int.h", "hls_stream.h"):
        if not (hls_include() / h).is_file():
            pytest.fail(f"HLS header {h} not found in {hls_include()}: {HINT}", pytrace=False)
    exe = tmp_path_factory.mktemp("mpe_tb") / "flightllm_mpe_tb"
    cmd = (["g++"] + CXXFLAGS + [f"-I{SRC}", "-isystem", str(hls_include()), "-isystem", str(SHIM),
                                 "-o", str(exe)]
           + [str(SRC / s) for s in ("mpe_tb.cpp", "mpe.cpp", "fllm_common.cpp")])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return exe


def beat(kind, last=0, **fields) -> np.ndarray:
    """One 65-byte beat (64 TDATA bytes, TLAST) with the named fields of the format page."""
    b = np.zeros(65, np.uint8)
    b[63], b[64] = kind, last
    if "w" in fields:
        b[0:16] = np.asarray(fields["w"], np.int8).view(np.uint8)
    if "idx" in fields:
        idx = np.asarray(fields["idx"], np.uint8)
        b[16:24] = idx[0::2] | (idx[1::2] << 4)
    for name, at in (("a", 24), ("b", 40)):
        if name in fields:
            b[at:at + 16] = np.asarray(fields[name], np.int8).view(np.uint8)
    if "code" in fields:
        b[56] = fields["code"]
    if "row0" in fields:
        b[57] = fields["row0"]
    for name, at in (("macs", 0), ("fixed", 8)):
        if name in fields:
            b[at:at + 8] = np.frombuffer(np.uint64(fields[name]).tobytes(), np.uint8)
    return b


def model(beats) -> tuple:
    """The page's semantics: result beats (int32 x 16 per lane) and the counters."""
    results, insns, macs, fixed = [], 0, 0, 0
    acc, fresh = np.zeros((2, 16), np.int64), True
    for b in beats:
        kind = b[63]
        if kind == INSN:
            insns += 1
            macs += int(b[0:8].view(np.uint64)[0])
            fixed += int(b[8:16].view(np.uint64)[0])
            continue
        if kind != OPERAND:
            break
        if fresh:
            acc[:] = 0
        n, row0 = 2 << (b[56] & 3), b[57] & 15
        w = b[0:16].view(np.int8).astype(np.int64)
        idx = np.stack([b[16:24] & 15, b[16:24] >> 4], 1).reshape(-1)
        lanes = np.stack([b[24:40].view(np.int8), b[40:56].view(np.int8)]).astype(np.int64)
        prods = w[None, :] * lanes[:, idx]
        for s in range(16 // n):
            acc[:, row0 + s] += prods[:, s * n:(s + 1) * n].sum(1)
        fresh = bool(b[64])
        if fresh:
            results += [acc[0].astype(np.int32).copy(), acc[1].astype(np.int32).copy()]
    return results, (insns, macs, fixed)


def run_tb(exe, tmp_path, beats) -> tuple:
    (tmp_path / "op.bin").write_bytes(np.concatenate(beats).tobytes())
    subprocess.run([str(exe), str(tmp_path / "op.bin"), str(tmp_path / "res.bin"),
                    str(tmp_path / "regs.txt")], check=True, capture_output=True, timeout=60)
    raw = np.fromfile(tmp_path / "res.bin", np.uint8).reshape(-1, 65)
    lasts = raw[:, 64].tolist()
    results = [r[:64].view(np.int32).copy() for r in raw]
    insns, macs, fixed, unread = (int(x) for x in (tmp_path / "regs.txt").read_text().split())
    return results, lasts, (insns, macs, fixed), unread


def random_pass(rng, extreme=False) -> list:
    """One pass: a few column blocks, each with beats of random codes and ROW0 groups."""
    beats = []
    for _ in range(int(rng.integers(1, 4))):
        code = int(rng.integers(0, 4))
        n = 2 << code
        for row0 in range(0, 16, 16 // n) if rng.random() < 0.5 else [int(rng.integers(0, 16 // n)) * (16 // n)]:
            w = np.full(16, -128) if extreme else rng.integers(-128, 128, 16)
            a = np.full(16, -128) if extreme else rng.integers(-128, 128, 16)
            idx = np.concatenate([np.sort(rng.choice(16, n, replace=False)) for _ in range(16 // n)])
            beats.append(beat(OPERAND, w=w, idx=idx, a=a, b=rng.integers(-128, 128, 16), code=code,
                              row0=row0))
    beats[-1][64] = 1
    return beats


def test_beats_against_the_format_page(mpe_tb, tmp_path):
    rng = np.random.default_rng(12)
    beats = [beat(INSN, macs=1000, fixed=4096)]
    for _ in range(20):
        beats += random_pass(rng)
    beats += [beat(INSN, macs=7, fixed=9)] + random_pass(rng, extreme=True) + [beat(END, 1)]
    want, counters = model(beats)
    got, lasts, regs, unread = run_tb(mpe_tb, tmp_path, beats)
    assert len(got) == len(want) == 42
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert lasts == [0, 1] * 21                    # lane A, then lane B with TLAST
    assert regs == counters == (2, 1007, 4105) and unread == 0
    assert np.any(np.stack(want) != 0)


def test_dense_rows_one_beat_each_is_a_dot_product(mpe_tb, tmp_path):
    """Dense weights as the feeder sends them (CODE 3, IDX = t, one beat per row): plain A @ W.T."""
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (2, 48))
    w = rng.integers(-128, 128, (5, 48))
    beats = []
    for cb in range(3):
        for r in range(5):
            beats.append(beat(OPERAND, w=w[r, 16 * cb:16 * cb + 16], idx=np.arange(16),
                              a=a[0, 16 * cb:16 * cb + 16], b=a[1, 16 * cb:16 * cb + 16], code=3,
                              row0=r, last=int(cb == 2 and r == 4)))
    got, _, _, _ = run_tb(mpe_tb, tmp_path, beats + [beat(END, 1)])
    np.testing.assert_array_equal(np.stack(got)[:, :5], a @ w.T)
    assert not np.stack(got)[:, 5:].any()


def test_a_beat_of_unknown_kind_stops_the_kernel(mpe_tb, tmp_path):
    rng = np.random.default_rng(2)
    first, second = random_pass(rng), random_pass(rng)
    got, _, regs, unread = run_tb(mpe_tb, tmp_path, first + [beat(0x55, 1)] + second + [beat(END, 1)])
    assert len(got) == 2 and unread == len(second) + 1
    want, _ = model(first)
    np.testing.assert_array_equal(got[0], want[0])
