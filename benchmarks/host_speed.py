"""Decode speed on the host: SmolLM2 on the simulated overlay vs the float reference, side by side.

Prints tokens/s of each and their ratio, measured interleaved in one run (machines are noisy: the
ratio is the figure to read).  The simulated overlay executes the real instruction stream.
Target (issue 2): simulated overlay at least 0.5x the float reference.

    python benchmarks/host_speed.py [--tokens 32] [--rounds 3]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32, help="decode tokens per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best is kept)")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    from flightllm_overlay.compiler import compile_model
    from flightllm_overlay.model import load_checkpoint
    from flightllm_overlay.model.llama import Transformer
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.runtime import Generator, Session

    ckpt = load_checkpoint(args.model)
    gen = Generator(Session(FlightLLMOverlay(), compile_model(ckpt)), ckpt.tokenizer)
    ref = Transformer.from_checkpoint(ckpt)
    prompt = gen.encode_prompt("Write a short story about a lighthouse keeper.")
    n = args.tokens

    def overlay_rate():
        logits = gen.prefill(prompt)
        tok, pos = int(np.argmax(logits)), len(prompt)
        t0 = time.perf_counter()
        for i in range(n):
            tok = int(np.argmax(gen.decode_one(tok, pos + i)))
        return n / (time.perf_counter() - t0)

    def reference_rate():
        ref.reset()
        tok = int(ref.forward(prompt, 0)[-1].argmax())
        t0 = time.perf_counter()
        for i in range(n):
            tok = int(ref.forward([tok], len(prompt) + i)[-1].argmax())
        return n / (time.perf_counter() - t0)

    overlay_rate(), reference_rate()                 # warm caches on both sides
    sim, flt = [], []
    for _ in range(args.rounds):
        sim.append(overlay_rate())
        flt.append(reference_rate())
    ratios = [s / f for s, f in zip(sim, flt)]
    print(f"model {ckpt.args.name}, prompt {len(prompt)} tokens, {n} decode tokens x {args.rounds} rounds")
    print(f"simulated overlay (W8A8, instruction stream executed): {max(sim):6.1f} tok/s (best)")
    print(f"float reference (PyTorch fp32):                          {max(flt):6.1f} tok/s (best)")
    print(f"ratio overlay / reference per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {np.median(ratios):.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
