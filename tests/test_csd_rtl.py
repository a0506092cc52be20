"""Configurable sparse DSP chain RTL (src/rtl/csd_*.v): Verilog-2005 lint with Icarus, then the cocotb bench against the numpy model.

Needs Icarus Verilog and cocotb==2.1.0; when they are missing the tests FAIL (not skip) and say to run
.ci/install-hw.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RTL = ROOT / "flightllm_overlay" / "src" / "rtl"
BENCH = Path(__file__).resolve().parent / "rtl"
SOURCES = ["dsp48_packed.v", "dsp48_packed_prim.v", "dsp48e2.v", "csd_delay.v", "csd_oau.v", "csd_dg.v",
           "csd_rn.v", "csd_chain.v"]
HINT = "run `bash .ci/install-hw` (installs Icarus Verilog via apt-get and cocotb==2.1.0 into .venv)"


def _require_tools():
    missing = [t for t in ("iverilog", "vvp") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found on PATH: {HINT}", pytrace=False)
    for mod in ("cocotb", "cocotb_tools"):
        if importlib.util.find_spec(mod) is None:
            pytest.fail(f"Python package {mod} is not installed: {HINT}", pytrace=False)


def _run_bench(build_dir: Path, length: int, oau_min: int, model_oau_min: int, dsp_prim: int = 0):
    """Build csd_chain with Icarus and run the cocotb bench; returns (tests, failures)."""
    from cocotb_tools.runner import get_results, get_runner
    runner = get_runner("icarus")
    params = {"L": length, "OAU_MIN": oau_min, "DSP_PRIM": dsp_prim}
    runner.build(sources=[RTL / s for s in SOURCES], hdl_toplevel="csd_chain", parameters=params,
                 build_dir=build_dir, always=True, timescale=("1ns", "1ps"))
    results = build_dir / "results.xml"
    try:
        runner.test(hdl_toplevel="csd_chain", test_module="test_csd_chain_cocotb", test_dir=BENCH,
                    build_dir=build_dir, parameters=params, results_xml=str(results),
                    extra_env={"CSD_L": str(length), "CSD_MODEL_OAU_MIN": str(model_oau_min)})
    except SystemExit:                      # the runner exits when a cocotb test fails under pytest
        pass
    return get_results(results)


def test_rtl_files_start_with_a_comment():
    for name in SOURCES:
        assert (RTL / name).read_text().startswith("// "), name


@pytest.mark.parametrize("length", [16, 32])
def test_rtl_is_clean_verilog_2005(tmp_path, length):
    _require_tools()
    cmd = ["iverilog", "-g2005", "-Wall", f"-Pcsd_chain.L={length}", "-s", "csd_chain",
           "-o", str(tmp_path / "chain.vvp")] + [str(RTL / s) for s in SOURCES]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("length, dsp_prim", [(16, 0), (32, 0), (16, 1)])
def test_rtl_matches_numpy_model(tmp_path, length, dsp_prim):
    """dsp_prim = 1: the chain built on instantiated DSP48E2s (our model, dsp48e2.v) gives the same bits."""
    _require_tools()
    tests, fails = _run_bench(tmp_path / "build", length, oau_min=4, model_oau_min=4, dsp_prim=dsp_prim)
    assert tests == 2 and fails == 0, f"{fails} of {tests} cocotb tests failed (log above)"


def test_bench_catches_a_chain_without_oau(tmp_path):
    """RTL built without OAUs, bench expecting the exact chain: the extreme beats must fail it."""
    _require_tools()
    tests, fails = _run_bench(tmp_path / "build", 16, oau_min=255, model_oau_min=4)
    assert tests == 2 and fails == 2
