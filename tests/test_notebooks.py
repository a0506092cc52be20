"""The notebooks run headless in fast mode (tiny model): no cell errors, under a minute each."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
LIMIT_S = 60.0                      # whole notebook, kernel start included

# notebook -> strings its outputs must contain (it did what it says, not only "no error")
EXPECT = {
    "00_quickstart.ipynb": ["SIMULATED", "simulated: True", "MemoryControllerDriver",
                            "scheduler status: DONE", "register transactions",
                            "W scheduler.CTRL", "generated tokens", "tokens/s"],
    "demo_streaming.ipynb": ["tiny random LLaMA", "tok/s (host)", "generated tokens",
                             "(stopped)"],
}


def _text_outputs(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o.get("text", ""))
            elif "data" in o:
                out.append(str(o["data"].get("text/plain", "")))
                out.append(str(o["data"].get("text/markdown", "")))
    return "\n".join(out)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_notebook_runs_headless_in_fast_mode(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FLIGHTLLM_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("FLIGHTLLM_SIMULATOR", "1")            # never reach for a card in tests
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=int(LIMIT_S), kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()                                           # raises on any cell error
    elapsed = time.perf_counter() - t0
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    text = _text_outputs(nb)
    missing = [s for s in EXPECT[name] if s not in text]
    assert not missing, f"{name}: outputs lack {missing}"
    assert elapsed < LIMIT_S, f"{name} took {elapsed:.1f} s headless; keep it under {LIMIT_S:g} s"
    assert list(tmp_path.iterdir()) == [], "the notebook wrote into its working directory"
