"""SmolLM2 perplexity per compression setting (float emulation of the device's weights and INT8 activations).

    PYTHONPATH=. python benchmarks/compression_quality.py [--tokens 8192] [--window 512]
        [--settings float w8a8 flightllm magnitude] [--save DIR] [--jobs 4]

From one run: the float reference, W8A8, the default FlightLLM-style setting (q/k at 70% density in
N:16 blocks, at most 4 average weight bits, INT8 activations) and magnitude pruning at the same
budget, on the first --tokens tokens of the bundled evaluation text (enwiki prose, CC BY-SA) in
non-overlapping --window-token windows.  Calibration uses the bundled calibration text (disjoint).
Slow (minutes on 2 cores): a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flightllm_overlay.compress import (CompressionConfig, Emulator, calibration_tokens,  # noqa: E402
                                        compress, perplexity, reference_runner)
from flightllm_overlay.data import text  # noqa: E402
from flightllm_overlay.model import load_checkpoint  # noqa: E402

GRID_NOTE = ("SmolLM2's linear weights already sit on a 4-bit group-32 grid (Q4_1 GGUF), so "
             "4-bit group-32 codes can hold them almost exactly; the flightllm setting smooths "
             "with one factor per 32 input channels, which keeps that grid (scaled), and so its "
             "4-bit figure is flattered by the grid (per-channel smoothing, which moves the "
             "weights off it, gave +49% instead of +6% on 512 tokens)")


def run_setting(name, model, tokens, window, save, progress=True):
    """(name, perplexity, code bits (+groups), HBM bits/w, density, seconds) of one setting."""
    t0 = time.perf_counter()
    ckpt = load_checkpoint(model)
    ids = ckpt.tokenizer.encode(text("eval"))[:tokens]
    if name == "float":
        ppl = perplexity(reference_runner(ckpt), ids, window, progress=progress, desc=name)
        return (name, ppl, "32 (float)", "32", "1.000", time.perf_counter() - t0), ""
    cm = compress(ckpt, calibration_tokens(ckpt, 512), CompressionConfig.preset(name),
                  progress=progress)
    if save:
        Path(save).mkdir(parents=True, exist_ok=True)
        cm.save(Path(save) / f"{name}.safetensors")
    ppl = perplexity(Emulator(cm), ids, window, progress=progress, desc=name)
    t = cm.totals()
    return (name, ppl, f"{t['code_bits']:.2f} ({t['weight_bits']:.2f})", f"{t['hbm_bits']:.2f}",
            f"{t['density']:.3f}", time.perf_counter() - t0), cm.report()


def _table(rows, args) -> int:
    ref = next((r[1] for r in rows if r[0] == "float"), None)
    print(f"\nSmolLM2 perplexity, first {args.tokens} tokens of the bundled enwiki text, "
          f"{args.window}-token windows (float emulation of the device weights, INT8 activations)")
    print(f"{'setting':10s} {'ppl':>8s} {'vs float':>9s}  {'code bits (+groups)':>20s} "
          f"{'HBM bits/w':>10s} {'density':>8s} {'s':>6s}")
    for name, ppl, bits, hbm, dens, sec in rows:
        rel = f"{100 * (ppl / ref - 1):+.1f}%" if ref else "-"
        print(f"{name:10s} {ppl:8.3f} {rel:>9s}  {bits:>20s} {hbm:>10s} {dens:>8s} {sec:6.0f}")
    print(f"\nnote: {GRID_NOTE}.")
    return 0


def _parallel(args) -> int:
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(args.jobs) as pool:
        futs = [pool.submit(run_setting, n, args.model, args.tokens, args.window, args.save, False)
                for n in args.settings]
        rows = []
        for fut in futs:
            row, report = fut.result()
            if report:
                print(report)
            print(f"{row[0]}: perplexity {row[1]:.3f} ({row[5]:.0f} s)", flush=True)
            rows.append(row)
    return _table(rows, args)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--settings", nargs="+", default=["float", "w8a8", "flightllm", "magnitude"])
    ap.add_argument("--save", default=None, help="folder to write each compressed checkpoint to")
    ap.add_argument("--jobs", type=int, default=1,
                    help="settings evaluated in parallel worker processes (about 3 GB each)")
    args = ap.parse_args(argv)
    if args.jobs > 1:
        return _parallel(args)
    rows = []
    for name in args.settings:
        row, report = run_setting(name, args.model, args.tokens, args.window, args.save)
        if report:
            print(report)
        print(f"{name}: perplexity {row[1]:.3f}", flush=True)
        rows.append(row)
    return _table(rows, args)


if __name__ == "__main__":
    sys.exit(main())
