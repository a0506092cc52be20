"""Yosys maps one configurable sparse DSP chain to 16 cascaded DSP48E2s, and hw/resources.py's per-DSP estimate agrees with it within 20%.

One chain takes ~20 s of Yosys CPU; the 1/16-size MPE is benchmarks/mpe_rtl_synth.py.  Without
Yosys the test fails and names .ci/install-hw.
"""
from __future__ import annotations

import pytest

from flightllm_overlay.hw import resources as R
from flightllm_overlay.hw import yosys as Y


def test_one_chain_maps_to_cascaded_dsp48e2(tmp_path):
    try:
        Y.yosys_cmd()
    except Y.RTLToolError as e:
        pytest.fail(str(e), pytrace=False)
    rep = Y.synth("csd_chain", {"L": 16, "DSP_PRIM": 1}, tmp_path)
    assert rep.dsp == 16                               # one DSP48E2 per packed MAC pair
    assert rep.cascades == 15                          # every DSP but the first takes PCIN from PCOUT
    est = R.CHAIN_DSP * 16
    lut = rep.lut + rep.srl
    assert abs(lut / est.lut - 1) <= 0.2, (lut, est.lut)
    assert abs(rep.ff / est.ff - 1) <= 0.2, (rep.ff, est.ff)
