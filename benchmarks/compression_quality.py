"""SmolLM2 perplexity per compression setting (float emulation of the device's weights and INT8 activations).

    PYTHONPATH=. python benchmarks/compression_quality.py [--tokens 8192] [--window 512]
        [--settings float w8a8 flightllm magnitude] [--save DIR]

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

GRID_NOTE = ("SmolLM2's linear weights already sit on a 4-bit group-32 grid (Q4_1 GGUF); "
             "smoothing rescales columns, which moves them off it")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--settings", nargs="+", default=["float", "w8a8", "flightllm", "magnitude"])
    ap.add_argument("--save", default=None, help="folder to write each compressed checkpoint to")
    args = ap.parse_args(argv)
    ckpt = load_checkpoint(args.model)
    ids = ckpt.tokenizer.encode(text("eval"))[:args.tokens]
    calib = calibration_tokens(ckpt, 512)
    print(f"{ckpt.args.name}: {len(ids)} evaluation tokens in {args.window}-token windows; "
          f"{len(calib)} calibration tokens", flush=True)
    rows, ref = [], None
    for name in args.settings:
        t0 = time.perf_counter()
        if name == "float":
            ppl = perplexity(reference_runner(ckpt), ids, args.window, progress=True, desc=name)
            ref = ppl
            rows.append((name, ppl, "32 (float)", "32", "1.000", time.perf_counter() - t0))
        else:
            cm = compress(ckpt, calib, CompressionConfig.preset(name))
            print(cm.report(), flush=True)
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                cm.save(Path(args.save) / f"{name}.safetensors")
            ppl = perplexity(Emulator(cm), ids, args.window, progress=True, desc=name)
            t = cm.totals()
            rows.append((name, ppl, f"{t['code_bits']:.2f} ({t['weight_bits']:.2f})",
                         f"{t['hbm_bits']:.2f}", f"{t['density']:.3f}", time.perf_counter() - t0))
        print(f"{name}: perplexity {ppl:.3f}", flush=True)
    print()
    print(f"{'setting':10s} {'ppl':>8s} {'vs float':>9s}  {'code bits (+groups)':>20s} "
          f"{'HBM bits/w':>10s} {'density':>8s} {'s':>6s}")
    for name, ppl, bits, hbm, dens, sec in rows:
        rel = f"{100 * (ppl / ref - 1):+.1f}%" if ref else "-"
        print(f"{name:10s} {ppl:8.3f} {rel:>9s}  {bits:>20s} {hbm:>10s} {dens:>8s} {sec:6.0f}")
    print(f"\nnote: {GRID_NOTE}; figures near 4 bits are helped by that grid.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
