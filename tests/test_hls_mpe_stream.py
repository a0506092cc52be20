"""The mpe kernel alone in C simulation against the numpy reference of its AXI4-Stream beat format (hw/mpe_beats.py, docs/mpe_stream.md)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from flightllm_overlay.hw.mpe_beats import END, INSN, OPERAND, beat, read_beats, reference, results_of, write_beats
from hls_harness import CXXFLAGS, HINT, SHIM, SRC, hls_include

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


def run_tb(exe, tmp_path, beats) -> tuple:
    write_beats(tmp_path / "op.bin", beats)
    subprocess.run([str(exe), str(tmp_path / "op.bin"), str(tmp_path / "res.bin"),
                    str(tmp_path / "regs.txt")], check=True, capture_output=True, timeout=60)
    raw = read_beats(tmp_path / "res.bin")
    lasts = raw[:, 64].tolist()
    results = results_of(raw)
    insns, macs, fixed, unread = (int(x) for x in (tmp_path / "regs.txt").read_text().split())
    return results, lasts, (insns, macs, fixed), unread


def random_pass(rng, extreme=False) -> list:
    """One pass: a few column blocks, each with beats of random codes and ROW0 groups."""
    beats = []
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.choice([2, 4, 8, 16]))
        for row0 in range(0, 16, 16 // n) if rng.random() < 0.5 else [int(rng.integers(0, 16 // n)) * (16 // n)]:
            w = np.full(16, -128) if extreme else rng.integers(-128, 128, 16)
            a = np.full(16, -128) if extreme else rng.integers(-128, 128, 16)
            idx = np.concatenate([np.sort(rng.choice(16, n, replace=False)) for _ in range(16 // n)])
            beats.append(beat(OPERAND, w=w, idx=idx, a=a, b=rng.integers(-128, 128, 16), n=n,
                              row0=row0))
    beats[-1][64] = 1
    return beats


def test_beats_against_the_format_page(mpe_tb, tmp_path):
    rng = np.random.default_rng(12)
    beats = [beat(INSN, macs=1000, fixed=4096, pc=12)]
    for _ in range(20):
        beats += random_pass(rng)
    beats += [beat(INSN, macs=7, fixed=9, pc=40, mv=True)] + random_pass(rng, extreme=True) + [beat(END, 1)]
    want, counters, stop = reference(beats)
    got, lasts, regs, unread = run_tb(mpe_tb, tmp_path, beats)
    assert len(got) == len(want) == 42
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert lasts == [0, 1] * 21                    # lane A, then lane B with TLAST
    assert regs == counters == (2, 1007, 4105) and unread == 0 and stop == len(beats) - 1
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
                              a=a[0, 16 * cb:16 * cb + 16], b=a[1, 16 * cb:16 * cb + 16], n=16,
                              row0=r, last=int(cb == 2 and r == 4)))
    got, _, _, _ = run_tb(mpe_tb, tmp_path, beats + [beat(END, 1)])
    np.testing.assert_array_equal(np.stack(got)[:, :5], a @ w.T)
    assert not np.stack(got)[:, 5:].any()


def test_a_beat_of_unknown_kind_stops_the_kernel(mpe_tb, tmp_path):
    rng = np.random.default_rng(2)
    first, second = random_pass(rng), random_pass(rng)
    got, _, regs, unread = run_tb(mpe_tb, tmp_path, first + [beat(0x55, 1)] + second + [beat(END, 1)])
    assert len(got) == 2 and unread == len(second) + 1
    want, _, _ = reference(first)
    np.testing.assert_array_equal(got[0], want[0])


def test_bad_fields_are_refused_by_the_beat_writer():
    with pytest.raises(ValueError, match="N of N:16"):
        beat(OPERAND, n=3)
    with pytest.raises(ValueError, match="column indices"):
        beat(OPERAND, idx=[16] * 16)
