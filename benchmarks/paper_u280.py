"""Predicted U280 figures (timing model) for LLaMA2-7B and OPT-6.7B at the paper's six workloads, beside the paper.

Every number printed for our design is a PREDICTION of the timing model, not a measurement on a
card.  The model is compiled from its shapes alone with 4-bit weights (dense: the sparse Q/K of the
paper's configuration is not in the compiler yet) on the U280 target as configured (3 cores, 24 of
32 pseudo-channels), and, as a second column, with every core owning more channels (all 32).
OPT-6.7B (LayerNorm, ReLU FFN, learned positions, biases; compiler/opt.py) is predicted the same
way; the paper publishes no absolute OPT-6.7B throughput (Fig. 11 is normalised), so its paper
and ratio columns are empty.

    python benchmarks/paper_u280.py [--quick]
"""
from __future__ import annotations

import argparse
import time

from flightllm_overlay.bench import bench
from flightllm_overlay.compiler import compile_shapes
from flightllm_overlay.config import load_target
from flightllm_overlay.model.args import ModelArgs

WORKLOADS = [(128, 512), (128, 1024), (128, 1536), (512, 512), (512, 1024), (512, 1536)]
PAPER_DECODE_TOKENS_PER_S = {"llama2-7b": 55.0,   # LLaMA2-7B on the U280 (facts 4.2); per-workload n/r
                             "opt-6.7b": None}    # not published in absolute terms
MODELS = ("llama2-7b", "opt-6.7b")


def all_channels(target):
    """The same target with the 32 pseudo-channels dealt over the cores (11/11/10)."""
    chans = tuple(tuple(range(c, target.hbm_channels, target.cores)) for c in range(target.cores))
    return target.with_overrides(core_channels=chans)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="first workload only")
    args = ap.parse_args()
    rows = []
    for model in MODELS:
        margs = ModelArgs.from_name(model)
        for label, target in (("24 PCs (paper config)", load_target("u280")),
                              ("32 PCs", all_channels(load_target("u280")))):
            t0 = time.perf_counter()
            program = compile_shapes(margs, target, weight_bits=4)
            cache = {}
            for w in WORKLOADS[:1] if args.quick else WORKLOADS:
                r = bench(program, target, *w, model, cache=cache)
                rows.append((model, label, w, r))
            print(f"[{model}, {label}] compiled and scheduled in {time.perf_counter() - t0:.0f} s")
    print("\n4-bit weights (dense), INT8 activations: PREDICTED by the timing model")
    print(f"{'model':10s} {'configuration':24s} {'workload':>12s} {'prefill ms':>11s} "
          f"{'decode tok/s':>13s} {'paper tok/s':>12s} {'ratio':>6s} {'HBM util':>9s}")
    for model, label, w, r in rows:
        paper = PAPER_DECODE_TOKENS_PER_S[model]
        ratio = f"{r.decode_tokens_per_second / paper:6.2f}" if paper else f"{'-':>6s}"
        print(f"{model:10s} {label:24s} {str(list(w)):>12s} {r.prefill_seconds * 1e3:11.1f} "
              f"{r.decode_tokens_per_second:13.1f} {f'{paper:.1f}' if paper else 'n/r':>12s} {ratio} "
              f"{r.bandwidth_utilisation(r.decode):9.1%}")
    print("\nThe paper publishes 55 tok/s (decode, LLaMA2-7B, U280) without per-workload latencies "
          "(facts 4.2); the ratio compares each prediction with that one figure. For OPT-6.7B it "
          "publishes only normalised bars (Fig. 11), so there is no absolute figure to compare.")


if __name__ == "__main__":
    main()
