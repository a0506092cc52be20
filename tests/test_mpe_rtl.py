"""The RTL MPE (src/rtl/mpe_core.v, mpe_axis.v) against the Python simulator: bit for bit under Verilator and Icarus.

* Verilator (built once per session and cached, hw/mpe_verilator.py), both DSP variants (inferred
  multipliers and instantiated DSP48E2s on our model): a few hundred random MM/MV instructions
  (dense at and off the 16-column tile edges, every N:16 code, -128 x -128 chains, idle cycles
  between instructions) and the MM/MV instructions of a real compiled program run on the simulator;
  results and macs/fixed_macs counters must equal the simulator's, and the two variants each other.
* Icarus + cocotb: the kernel with its AXI4-Stream links and s_axilite block (tests/rtl/).
* Lint: Verilator -Wall and Icarus -g2005 -Wall report nothing.
Without Verilator/Icarus/cocotb the tests fail and name .ci/install-hw.  The 2,000-instruction run
is benchmarks/mpe_rtl_cycles.py --random 2000.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from flightllm_overlay.hw import mpe_model as M
from flightllm_overlay.hw import mpe_verilator as V
from test_csd_rtl import BENCH, RTL, _require_tools

SMALL = dict(rows=4, cols=2, mv_cols=4, mv_team=2, kb=16)     # 4 chains: quick to build
AXIS_SOURCES = ["mpe_axis.v"] + list(V.CORE_SOURCES)


def _require_verilator():
    try:
        V.verilator_cmd()
    except V.RTLToolError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session", params=[0, 1], ids=["inferred", "dsp48e2"])
def mpe_build(request):
    _require_verilator()
    p = M.MPEParams(**SMALL, dsp_prim=request.param)
    return p, V.build(p)


def random_ops(rng, count: int, p: M.MPEParams) -> list[M.MPEOp]:
    """Random MM/MV instructions: shapes at and off the 16-column edges, every N, extreme values."""
    ops = []
    kmax = 16 * p.kb
    for i in range(count):
        op = "MM" if i % 3 else "MV"
        m = int(rng.integers(1, 3 * p.rows + 2)) if op == "MM" else int(rng.integers(1, p.mv_rows + 1))
        extreme = i % 10 == 0
        if i % 2:
            codes = [(2,), (4,), (8,), (16,), (2, 4, 8, 16)][i % 5]
            ops.append(M.random_op(rng, op, m, 16 * int(rng.integers(1, 4)), 16 * int(rng.integers(1, kmax // 16 + 1)),
                                   codes=codes, extreme=extreme))
        else:
            edge = [16, 15, 17, 32, 1]
            n = int(rng.choice(edge)) if i % 4 == 0 else int(rng.integers(1, 50))
            k = int(rng.choice(edge)) if i % 8 == 0 else int(rng.integers(1, kmax + 1))
            ops.append(M.random_op(rng, op, m, n, k, extreme=extreme))
    return ops


def _check(prog, got):
    errs = V.compare(prog, got)
    assert not errs, "\n".join(errs)


def test_random_instructions_bit_exact(mpe_build, tmp_path):
    p, exe = mpe_build
    rng = np.random.default_rng(2026)
    ops = random_ops(rng, 240, p)
    prog = M.build_program(p, ops, gap=1)
    _check(prog, V.run(exe, prog, tmp_path))


def test_real_program_instructions_bit_exact(mpe_build, tiny_program, sim_overlay, tmp_path):
    from flightllm_overlay.testing.mpe_capture import capture
    from flightllm_overlay.runtime import Session
    p, exe = mpe_build
    with capture() as ops:
        with Session(sim_overlay, tiny_program) as s:
            s.run("prefill", list(range(3, 11)), 0)
            s.run("decode", [9], 8)
    kinds = {(o.op, o.sparse) for o in ops}
    assert ("MM", False) in kinds and ("MV", False) in kinds, kinds
    # one of each distinct shape keeps the run short; m is cut to the rows the prompt filled
    seen, picked = set(), []
    for o in ops:
        key = (o.op, o.n, o.k)
        if key not in seen:
            seen.add(key)
            picked.append(M.MPEOp(o.op, o.a[:12], o.n, o.k, w=o.w) if o.op == "MM" else o)
    prog = M.build_program(p, picked)
    _check(prog, V.run(exe, prog, tmp_path))


def test_both_dsp_variants_give_the_same_cycles_and_bits(tmp_path):
    """The instantiated-DSP48E2 and inferred builds on one stream: identical outputs, cycle for cycle."""
    _require_verilator()
    runs = []
    for prim in (0, 1):
        p = M.MPEParams(**SMALL, dsp_prim=prim)
        prog = M.build_program(p, random_ops(np.random.default_rng(9), 30, p))
        runs.append(V.run(V.build(p), prog, tmp_path / str(prim)))
    assert runs[0].cycles == runs[1].cycles
    assert all(np.array_equal(a, b) for a, b in zip(runs[0].tiles, runs[1].tiles))


def test_bench_catches_a_wrong_result(mpe_build, tmp_path):
    """The comparison can fail: a program whose expected tile is off by one is reported."""
    p, exe = mpe_build
    prog = M.build_program(p, [M.random_op(np.random.default_rng(1), "MM", 3, 16, 32)])
    prog.tiles[0] = prog.tiles[0].copy()
    prog.tiles[0][5] += 1
    errs = V.compare(prog, V.run(exe, prog, tmp_path))
    assert len(errs) == 1 and "word" in errs[0]


def test_result_latency_and_pipelining(mpe_build, tmp_path):
    """A pass's result comes latency cycles after it; back-to-back passes need no idle cycle."""
    p, exe = mpe_build
    op = M.random_op(np.random.default_rng(4), "MM", p.rows, 64, 16)        # 4 block-rows, 8 passes each
    prog = M.build_program(p, [op, op])
    got = V.run(exe, prog, tmp_path)
    _check(prog, got)
    first, last = prog.first_pass, prog.last_pass
    assert last[0] - first[0] + 1 == M.instruction_passes(p, op) == 32
    assert first[1] == last[0] + 1                      # the second instruction follows at once
    assert got.cycles[3] - last[0] == p.latency
    assert got.cycles[7] - got.cycles[3] == M.instruction_passes(p, op)    # initiation interval


def test_mpe_kernel_streams_under_icarus(tmp_path):
    _require_tools()
    from cocotb_tools.runner import get_results, get_runner
    runner = get_runner("icarus")
    params = {"ROWS": SMALL["rows"], "COLS": SMALL["cols"], "MV_COLS": SMALL["mv_cols"],
              "MV_TEAM": SMALL["mv_team"], "KB": 8}
    build = tmp_path / "build"
    runner.build(sources=[RTL / s for s in AXIS_SOURCES], hdl_toplevel="mpe_axis", parameters=params,
                 build_dir=build, always=True, timescale=("1ns", "1ps"))
    results = build / "results.xml"
    try:
        runner.test(hdl_toplevel="mpe_axis", test_module="test_mpe_axis_cocotb", test_dir=BENCH,
                    build_dir=build, parameters=params, results_xml=str(results),
                    extra_env={f"MPE_{k}": str(v) for k, v in params.items()})
    except SystemExit:
        pass
    tests, fails = get_results(results)
    assert tests == 3 and fails == 0, f"{fails} of {tests} cocotb tests failed (log above)"


@pytest.mark.parametrize("top, prim", [("mpe_axis", 0), ("mpe_axis", 1)])
def test_rtl_lints_clean(top, prim):
    _require_verilator()
    _require_tools()
    srcs = [str(RTL / s) for s in AXIS_SOURCES]
    lint = subprocess.run(V.verilator_cmd() + ["--lint-only", "-Wall", "--top-module", top, f"-GDSP_PRIM={prim}"]
                          + srcs, capture_output=True, text=True)
    assert lint.returncode == 0 and "%Warning" not in lint.stderr, lint.stderr[-3000:]
    iv = subprocess.run(["iverilog", "-g2005", "-Wall", "-s", top, f"-P{top}.DSP_PRIM={prim}", "-o", "/dev/null"]
                        + srcs, capture_output=True, text=True)
    assert iv.returncode == 0 and not (iv.stdout + iv.stderr).strip(), iv.stdout + iv.stderr
