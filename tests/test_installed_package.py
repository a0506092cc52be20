"""The package as pip installs it: get-notebooks, the pytest11 plugin, pynq's device list in a fresh process, declared deps.

One module-scoped install (about 7 s): a throw-away virtual environment that sees this
environment's site-packages as a plain path (so numpy, torch, pynq are not reinstalled, and the
editable install of the repository is not active there), with ``pip install --no-deps
--no-build-isolation`` of the repository into it: the wheel contents, entry points and the
``.pth`` start-up hook are exactly what a user gets.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(argv, cwd, timeout=300, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLIGHTLLM_SIMULATOR", "FLIGHTLLM_DEVICE")}
    env["MPLBACKEND"] = "Agg"
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Python of a fresh virtual environment with the repository pip-installed into it."""
    root = tmp_path_factory.mktemp("venv")
    venv = root / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     root).stdout.strip())
    (site / "_outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                "--no-build-isolation", str(REPO)], root)
    assert out.returncode == 0, out.stderr[-3000:]
    where = _run([str(python), "-c", "import flightllm_overlay; print(flightllm_overlay.__file__)"],
                 root).stdout
    assert where.startswith(str(site)), where            # the installed copy, not the checkout
    record = next(site.glob("flightllm_overlay-*.dist-info")) / "RECORD"
    assert (site / "flightllm_overlay_pynq.pth").is_file()
    assert "flightllm_overlay_pynq.pth," in record.read_text()   # pip uninstall removes it
    return python


def test_get_notebooks_delivers_into_a_folder(installed, tmp_path):
    # `pynq get-notebooks` runs this main in a process that never imports flightllm_overlay:
    # the device it probes first is the simulated U280, found through the .pth hook
    code = ("import sys, warnings; warnings.simplefilter('ignore'); "
            "sys.argv = ['pynq-get-notebooks', 'flightllm', '-p', sys.argv[1]]; "
            "from pynq._cli.get_notebooks import main; main()")
    out = _run([str(installed), "-c", code, str(tmp_path / "nbs")], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    delivered = sorted(p.name for p in (tmp_path / "nbs" / "flightllm").iterdir())
    assert delivered == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))  # only those
    nb = json.loads((tmp_path / "nbs" / "flightllm" / "00_quickstart.ipynb").read_text())
    assert nb["cells"], "delivered notebook is empty"


def test_fresh_pynq_lists_the_simulated_device_and_returns_our_overlay(installed, tmp_path):
    code = ("import warnings; warnings.simplefilter('ignore'); import pynq; "
            "print([d.name for d in pynq.Device.devices]); "
            "print(type(pynq.Overlay('flightllm.xclbin')).__name__)")
    out = _run([str(installed), "-c", code], tmp_path)
    assert out.stdout.splitlines() == ["['xilinx_u280_sim']", "FlightLLMOverlay"], out.stderr[-3000:]


USER_TEST = textwrap.dedent('''
    import numpy as np

    def test_tiny_program_runs_on_the_simulated_overlay(sim_overlay, tiny_program):
        assert sim_overlay.is_simulated
        assert "decode" in tiny_program.steps

    def test_tiny_generator_generates(tiny_generator):
        tokens = [t for t in tiny_generator.generate("hello", 3, temperature=0.0, stop_ids=())
                  if t.id >= 0]                     # id -1: the detokeniser's flushed tail
        assert len(tokens) == tiny_generator.stats.generated_tokens == 3
''')


def _readme_example() -> str:
    """The example test of the README's "Testing your own code" section."""
    text = (REPO / "README.md").read_text()
    start = text.index("```python\n# test_my_app.py") + len("```python\n")
    return text[start:text.index("```", start)]


def test_pytest_plugin_fixtures_from_a_test_outside_our_tests(installed, tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TEST)
    (tmp_path / "test_my_app.py").write_text(_readme_example())
    out = _run([str(installed), "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py",
                "test_my_app.py"], tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 passed" in out.stdout


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party module -> package modules importing it (from the source)."""
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, set[str]] = {}
    for path in (REPO / "flightllm_overlay").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and
                     node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top != "flightllm_overlay":
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


#: import name -> distribution name, where they differ
DIST = {"yaml": "pyyaml", "IPython": "ipython"}
#: imported only behind a guard that names the way to get it (module, the words the error says)
OPTIONAL = {"ipywidgets": "flightllm_overlay[notebooks]", "IPython": "flightllm_overlay[notebooks]",
            "pyxrt": "XRT", "ray": "flightllm_overlay[sweep]"}
#: imported only by a module that the importing tool itself loads (pytest loads its plugins)
LOADED_BY = {"pytest": {"flightllm_overlay/testing/pytest_plugin.py"}}


def test_every_imported_package_is_declared(installed, tmp_path):
    out = _run([str(installed), "-c", "import importlib.metadata as m, json; "
                "print(json.dumps(m.requires('flightllm_overlay')))"], tmp_path)
    reqs = json.loads(out.stdout)
    base = {r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
            for r in reqs if "extra ==" not in r}
    extras = {r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
              for r in reqs if "extra ==" in r}
    missing = []
    for module, users in _third_party_imports().items():
        dist = DIST.get(module, module).lower()
        if dist in base or users <= LOADED_BY.get(module, set()):
            continue
        if module in OPTIONAL and (dist in extras or module == "pyxrt"):
            for user in users:       # each optional import says how to get it
                assert OPTIONAL[module] in (REPO / user).read_text(), (module, user)
            continue
        missing.append((module, sorted(users)))
    assert not missing, f"imported but not in install_requires: {missing}"


def test_bench_gantt_runs_from_the_installed_command(installed, tmp_path):
    flightllm = installed.parent / "flightllm"
    out = _run([str(flightllm), "bench", "--shape", "smollm2-135m", "--workload", "16", "16",
                "--ctx", "256", "--gantt", str(tmp_path / "g.png")],
               tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "g.png").stat().st_size > 1000
