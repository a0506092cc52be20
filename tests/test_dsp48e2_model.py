"""Our behavioural DSP48E2 (src/rtl/dsp48e2.v): cycle-by-cycle against UG579's equations, per register set; unsupported modes stop it.

Needs Icarus Verilog and cocotb (bash .ci/install-hw); without them the tests fail and say so.
"""
from __future__ import annotations

import pytest

from test_csd_rtl import BENCH, RTL, _require_tools

USED = {"AREG": 0, "DREG": 0, "ADREG": 1, "BREG": 1, "MREG": 1, "PREG": 1, "CREG": 0}   # dsp48_packed_prim.v
ORDER = ("AREG", "DREG", "ADREG", "BREG", "MREG", "PREG", "CREG")


def _run(build_dir, regs: dict, extra: dict | None = None):
    from cocotb_tools.runner import get_results, get_runner
    runner = get_runner("icarus")
    params = {**regs, "AMULTSEL": '"AD"', "OPMODEREG": 0, "ALUMODEREG": 0, "INMODEREG": 0, **(extra or {})}
    runner.build(sources=[RTL / "dsp48e2.v"], hdl_toplevel="DSP48E2", parameters=params,
                 build_dir=build_dir, always=True, timescale=("1ns", "1ps"))
    results = build_dir / "results.xml"
    try:
        runner.test(hdl_toplevel="DSP48E2", test_module="test_dsp48e2_cocotb", test_dir=BENCH,
                    build_dir=build_dir, parameters=params, results_xml=str(results),
                    extra_env={"DSP_REGS": ",".join(str(regs[k]) for k in ORDER)})
    except SystemExit:
        pass
    return get_results(results)


@pytest.mark.parametrize("regs", [USED, dict.fromkeys(ORDER, 1), dict.fromkeys(ORDER, 0)],
                         ids=["as-used", "all-registered", "combinational"])
def test_dsp48e2_model_matches_ug579(tmp_path, regs):
    _require_tools()
    tests, fails = _run(tmp_path / "build", regs)
    assert tests == 2 and fails == 0, f"{fails} of {tests} cocotb tests failed (log above)"


def test_dsp48e2_model_refuses_an_unmodelled_mode(tmp_path):
    """SIMD mode is outside the model: it must stop the simulation, not compute something."""
    _require_tools()
    tests, fails = _run(tmp_path / "build", USED, {"USE_SIMD": '"TWO24"'})
    assert fails == tests and tests >= 1
