"""notebooks/03_instruction_reuse.ipynb runs headless in fast mode (tiny model) and shows what it says."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "03_instruction_reuse.ipynb"
LIMIT_S = 60.0                      # whole notebook, kernel start included

EXPECT = [
    "decode@16 vs decode@32: identical opcodes",        # section 2: neighbouring streams
    "prefill@128 vs prefill@256: identical opcodes",
    "| MV | `n` |",                                      # the field table
    "instruction storage:", "reduction",                 # section 3: storage report
    "exact-length spot check: largest size difference from the bucket stream 0.00%",
    "predicted decode step (timing model)",              # section 4: staircase
    "16 distinct values over 256 lengths",
    "| bucket hits 0 | misses 1 | compiles 1",           # section 5: live counter lines
    "(final)", "bucket cache:",
    "second generation: bucket cache 40 hits, 0 misses, 0 compiles",
]


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o.get("text", ""))
            elif "data" in o:
                out.append(str(o["data"].get("text/plain", "")))
                out.append(str(o["data"].get("text/markdown", "")))
    return "\n".join(out)


def test_instruction_reuse_notebook_runs_headless_in_fast_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("FLIGHTLLM_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("FLIGHTLLM_SIMULATOR", "1")            # never reach for a card in tests
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(NOTEBOOK.parent.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                         if p]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=int(LIMIT_S), kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()                                           # raises on any cell error
    elapsed = time.perf_counter() - t0
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    text = _text(nb)
    missing = [s for s in EXPECT if s not in text]
    assert not missing, f"outputs lack {missing}"
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 1, "the staircase plot is missing"
    assert elapsed < LIMIT_S, f"took {elapsed:.1f} s headless; keep it under {LIMIT_S:g} s"
    assert list(tmp_path.iterdir()) == [], "the notebook wrote into its working directory"
