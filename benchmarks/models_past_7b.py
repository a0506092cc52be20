"""Predicted decode of models past 7B on one U280 (timing model), beside LLaMA2-7B and each model's memory roofline; LLaMA2-70B's does-not-fit error.

Every figure is a PREDICTION of the timing model.  4-bit weights (groups of 128), dense, all 32
pseudo-channels dealt over the 3 cores (11/11/10: 13B-class models need all of them) and every
schedule option (`compiler/schedule.py`); one decode step at a context of 384 tokens (the mean
context of the paper's [128, 512] workload).  The check printed last: 13B decode lies between
0.45x the 7B figure and 13B's own HBM roofline.

    python benchmarks/models_past_7b.py [--models llama2-7b llama2-13b llama3-8b opt-13b]
"""
from __future__ import annotations

import argparse
import time

from flightllm_overlay.compiler import BucketTable, compile_shapes
from flightllm_overlay.compiler.fit import ModelTooLargeError
from flightllm_overlay.errors import CompileError
from flightllm_overlay.config import load_target
from flightllm_overlay.model.args import ModelArgs
from flightllm_overlay.sim.timing import TimingModel, roofline_cycles

from paper_u280 import all_channels

CONTEXT = 384


def decode_step(model: str, target):
    """(tokens/s, memory-roofline tokens/s, max MiB on one channel) of one decode step."""
    program = compile_shapes(ModelArgs.from_name(model), target, weight_bits=4, schedule="all")
    step, _ = BucketTable(program, target).step("decode", CONTEXT)
    tl = TimingModel(target).schedule(step.compiled_streams, keep_events=False)
    memory, _ = roofline_cycles(target, sum(tl.hbm_bytes.values()), tl.macs)
    return (target.clock_hz / tl.cycles, target.clock_hz / memory,
            max(program.channel_size.values()) / 2**20)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+",
                    default=["llama2-7b", "llama2-13b", "llama3-8b", "opt-13b"])
    args = ap.parse_args()
    target = all_channels(load_target("u280"))
    rows = {}
    failed = {}
    for model in args.models:
        t0 = time.perf_counter()
        try:
            rows[model] = decode_step(model, target)
        except CompileError as exc:          # e.g. one pseudo-channel overflows
            failed[model] = str(exc)
        print(f"[{model}] compiled and scheduled in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\nDecode at context {CONTEXT}, U280 with all 32 pseudo-channels, 4-bit weights, every "
          f"schedule option (PREDICTED by the timing model)")
    print(f"{'model':>12s} {'tok/s':>7s} {'HBM roofline tok/s':>19s} {'fraction':>8s} "
          f"{'fullest channel MiB':>20s}")
    for model, (tps, roof, mib) in rows.items():
        print(f"{model:>12s} {tps:7.1f} {roof:19.1f} {tps / roof:8.1%} {mib:20.1f}")
    for model, why in failed.items():
        print(f"{model:>12s} does not compile: {why}")
    if "llama2-7b" in rows and "llama2-13b" in rows:
        r7, r13 = rows["llama2-7b"][0], rows["llama2-13b"]
        ok = 0.45 * r7 <= r13[0] <= r13[1]
        print(f"\nllama2-13b decode {r13[0]:.1f} tok/s: 0.45 x 7B = {0.45 * r7:.1f}, its roofline "
              f"{r13[1]:.1f}: {'between them' if ok else 'OUTSIDE the expected range'} "
              f"(13B / 7B = {r13[0] / r7:.2f})")
    try:
        compile_shapes(ModelArgs.from_name("llama2-70b"), target, weight_bits=4, schedule="all")
        print("\nllama2-70b: compiled (unexpected)")
    except ModelTooLargeError as exc:
        print(f"\nllama2-70b: {exc}")


if __name__ == "__main__":
    main()
