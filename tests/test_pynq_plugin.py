"""pynq.Overlay('flightllm.xclbin') finds the simulated U280 and returns FlightLLMOverlay after a bare import."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FRESH = textwrap.dedent("""
    import warnings; warnings.simplefilter("ignore")
    {imports}
    import pynq
    print("devices", [d.name for d in pynq.Device.devices])
    ol = pynq.Overlay("flightllm.xclbin")
    print("class", type(ol).__module__, type(ol).__name__)
    print("driver", type(ol.mpe_0).__name__)
    print("keyword", type(pynq.Overlay("flightllm.xclbin", download=False)).__name__)
    try:
        pynq.Overlay("flightllm.xclbin", None, False)
    except Exception as exc:
        print("positional", type(exc).__name__)
    try:
        pynq.Overlay("some_other_design.xclbin")
    except Exception as exc:
        print("other", type(exc).__name__, exc)
""")


def _fresh(tmp_path, imports):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("FLIGHTLLM_SIMULATOR", None)
    out = subprocess.run([sys.executable, "-c", FRESH.format(imports=imports)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(line.split(" ", 1) for line in out.stdout.splitlines())


@pytest.mark.parametrize("imports", ["import flightllm_overlay", "import pynq, flightllm_overlay"])
def test_bare_pynq_overlay_is_ours_in_a_fresh_interpreter(tmp_path, imports):
    seen = _fresh(tmp_path, imports)
    assert seen["devices"] == "['xilinx_u280_sim']"          # pynq lists the simulated card
    assert seen["class"] == "flightllm_overlay.overlay.overlay FlightLLMOverlay"
    assert seen["driver"] == "MPEDriver"
    assert seen["keyword"] == "FlightLLMOverlay"
    assert seen["positional"] == "BitstreamError"            # pynq's 2nd positional is dtbo
    assert seen["other"].startswith("OSError")                # other files: pynq as before


def test_names_flightllm_xclbin():
    from flightllm_overlay.pynq_plugin import names_flightllm_xclbin
    assert names_flightllm_xclbin("flightllm.xclbin")
    assert names_flightllm_xclbin("/opt/x/flightllm.xilinx_u280_gen3x16_xdma_1_202211_1.xclbin")
    assert not names_flightllm_xclbin("base.xclbin")
    assert not names_flightllm_xclbin("flightllm.bit")
    assert not names_flightllm_xclbin(None)
