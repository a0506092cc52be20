"""Packaging facts users rely on: a light import without FPGA/XRT, pynq's own Overlay path by bare
name, the README's commands and .ci/run agreeing."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _py(code: str, cwd) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_is_light_and_needs_no_xrt(tmp_path):
    out = _py("import sys, flightllm_overlay as f; print(f.__version__, 'pynq' in sys.modules, "
              "'torch' in sys.modules, f.load_target().clock_mhz)", tmp_path)
    assert out.split() == ["0.1.0", "False", "False", "225.0"]


def test_plain_pynq_overlay_by_bare_name_binds_our_drivers(tmp_path):
    out = _py("import warnings; warnings.filterwarnings('ignore')\n"
              "import flightllm_overlay.overlay\n"
              "from pynq import Overlay\n"
              "ol = Overlay('flightllm.xclbin')\n"
              "print(type(ol.scheduler).__name__, type(ol.mpe_0).__name__, "
              "type(ol.misc_2).__name__, type(ol.memctrl_1).__name__, ol.device.name)", tmp_path)
    assert out.split() == ["SchedulerDriver", "MPEDriver", "MISCDriver", "MemoryControllerDriver",
                           "xilinx_u280_sim"]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    lines = [l.strip() for l in (ROOT / "README.md").read_text().splitlines() if l.startswith("    ")]
    assert lines[0].startswith("bash .ci/install && ") and "flightllm generate" in lines[0]
    assert lines[1].startswith("bash .ci/install && ") and "pytest" in lines[1]
    ci = (ROOT / ".ci/run").read_text()
    pattern = re.search(r"sed -n '(.*)' README.md", ci).group(1)
    out = subprocess.run(["sed", "-n", pattern, str(ROOT / "README.md")], capture_output=True,
                         text=True).stdout.splitlines()
    assert out and out[0] == lines[1]
