"""The notebooks run headless in fast mode (tiny or shape-only models): no cell errors, under a minute each."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import nbclient                     # from the tests extra (nbmake); missing means a broken install
import nbformat

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
LIMIT_S = 60.0                      # whole notebook, kernel start included

# notebook -> strings its outputs must contain (it did what it says, not only "no error")
EXPECT = {
    "00_quickstart.ipynb": ["SIMULATED", "simulated: True", "MemoryControllerDriver",
                            "scheduler status: DONE", "register transactions",
                            "W scheduler.CTRL", "generated tokens", "tokens/s",
                            "largest relative error"],                       # the trace
    "01_sparsity.ipynb": ["tiny random LLaMA, fast mode", "N= 2:  32 INT8 weights",
                          "outputs/cycle/lane", "configurable", "fixed dense", "speedup",
                          "HBM bits per weight", "FSB codes in q/k:",
                          "first sentence identical:", "token agreement", "perplexity: float",
                          "benchmarks/compression_quality.py"],
    "demo_streaming.ipynb": ["tiny random LLaMA", "tok/s (host)", "generated tokens",
                             "(stopped)"],
    "03_instruction_reuse.ipynb": [
        "decode@16 vs decode@32: identical opcodes",        # neighbouring streams
        "prefill@128 vs prefill@256: identical opcodes",
        "| MV | `n` |",                                      # the field table
        "instruction storage:", "reduction",                 # the storage report
        "exact-length spot check: largest size difference from the bucket stream 0.00%",
        "predicted decode step (timing model)",              # the staircase
        "16 distinct values over 256 lengths",
        "| bucket hits 0 | misses 1 | compiles 1",           # the live counter
        "(final)", "bucket cache:",
        "second generation: bucket cache 40 hits, 0 misses, 0 compiles"],
    "02_on_chip_decode.ipynb": [
        "| intermediate activations (spilled) | ST | 0 | 0 |",   # fused: nothing spilled
        "one decode layer, core 0: HBM bytes fused",
        "decode bandwidth utilisation", "PREDICTED by the timing model",
        "predicted step",                                       # the Gantt chart
        "decode latency changes at lengths [17, 33, 49, 65",    # the staircases
        "prefill latency changes at lengths [129]:",
        "decode tok/s at context 256 (PREDICTED)",              # tokens/s vs model size
        "decode at context 128 (PREDICTED) | tok/s | x paper schedule"],   # the ablation
}
PLOTS = {"01_sparsity.ipynb": 4, "02_on_chip_decode.ipynb": 4,   # notebook -> images its outputs
         "03_instruction_reuse.ipynb": 1}                     # must hold at least


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
def test_notebook_runs_headless_in_fast_mode(name, tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FLIGHTLLM_NOTEBOOK_FAST", "1")
    kernel_tmp = tmp_path_factory.mktemp("kernel-tmp")        # the kernel's tempfile folder
    monkeypatch.setenv("TMPDIR", str(kernel_tmp))
    monkeypatch.setenv("FLIGHTLLM_DEVICE", "sim")             # never reach for a card in tests
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
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= PLOTS.get(name, 0), f"{name}: a plot is missing"
    assert elapsed < LIMIT_S, f"{name} took {elapsed:.1f} s headless; keep it under {LIMIT_S:g} s"
    assert list(tmp_path.iterdir()) == [], "the notebook wrote into its working directory"
    left = sorted(p.name for p in kernel_tmp.iterdir())        # the kernel has stopped
    assert left == [], f"{name} left temporary files behind: {left}"
