"""Host speed of the simulated overlay on exact group arithmetic (ISA `wcodes`) against INT8 weights: one MV kernel, and a compressed program's prefill and decode, side by side.

    PYTHONPATH=. python benchmarks/code_path_speed.py [--load CKPT] [--rounds 3] [--steps 16]

The MV: 1 x 576 activations against 1,536 rows (SmolLM2's gate_proj shape), the native INT8
kernel (`fllm_mpe`) against the native code kernel (`fllm_mpe_codes`, codes and (M, B) per
group of 32), interleaved, 200 calls a round.  With --load (a compressed checkpoint, e.g. the
FlightLLM preset's), the same checkpoint compiled twice, its dense low-bit linears on INT8
weights and on exact group arithmetic, each run as a 40-token prefill and --steps decode steps
on the simulated U280, interleaved round by round.  Machines are noisy: read the ratios.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flightllm_overlay.sim import mpe_native  # noqa: E402


def mv_kernels(rounds: int) -> dict:
    """Median microseconds per call of the INT8 and the code MV kernels."""
    rng = np.random.default_rng(0)
    n, k, g = 1536, 576, 32
    a = rng.integers(-127, 128, (1, k)).astype(np.int8)
    scale, w_scale = np.ones(1, np.float32), rng.random(n).astype(np.float32)
    w8 = rng.integers(-127, 128, (n, k)).astype(np.int8).view(np.uint8).reshape(-1)
    row = k + 4 * (k // g)
    codes = rng.integers(0, 16, (n, row)).astype(np.uint8)
    out = np.zeros((1, n), np.float16)
    fns = mpe_native.kernels()
    if fns is None:
        raise SystemExit("the native kernels are off or did not build")
    s_bytes = w_scale.view(np.uint8)
    calls = {
        "int8": lambda: mpe_native.mpe(fns, a, scale, None, w8, 0, k, 0, s_bytes, 0, out, n, k),
        "codes": lambda: mpe_native.mpe_codes(fns, a, scale, None, 0, None, codes.reshape(-1),
                                              0, row, g, s_bytes, 0, out, n, k)}
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            t0 = time.perf_counter()
            for _ in range(200):
                call()
            times[name].append((time.perf_counter() - t0) / 200 * 1e6)
    return {name: float(np.median(t)) for name, t in times.items()}


def programs(path: str, rounds: int, steps: int) -> dict:
    """Median (prefill seconds, decode tokens/s) of the checkpoint on INT8 weights and exact."""
    from flightllm_overlay.compiler import compile_compressed
    from flightllm_overlay.compress import CompressedModel
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.runtime import Session
    from flightllm_overlay.sim.device import SimulatedU280
    cm = CompressedModel.load(path)

    def on(exact: bool):
        return dataclasses.replace(cm, layers=[
            {k: dataclasses.replace(pw, exact=exact and pw.bits < 8 and not pw.sparse)
             for k, pw in layer.items()} for layer in cm.layers])
    overlay = FlightLLMOverlay(device=SimulatedU280())
    progs = {name: compile_compressed(on(exact), ctx=256)
             for name, exact in (("int8", False), ("codes", True))}
    ids = list(range(100, 140))
    times = {name: [] for name in progs}
    for _ in range(rounds):
        for name, program in progs.items():
            with Session(overlay, program) as s:
                t0 = time.perf_counter()
                s.run("prefill", ids, 0)
                t1 = time.perf_counter()
                for i in range(steps):
                    s.run("decode", [5], len(ids) + i)
                times[name].append((t1 - t0, steps / (time.perf_counter() - t1)))
    return {name: tuple(float(np.median(col)) for col in zip(*t)) for name, t in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", default=None, help="a compressed checkpoint (optional)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args(argv)
    mv = mv_kernels(max(args.rounds, 5))
    print(f"MV 1x576 @ 576x1536: INT8 {mv['int8']:.1f} us, codes {mv['codes']:.1f} us "
          f"(codes / INT8 {mv['codes'] / mv['int8']:.2f}x)", flush=True)
    if args.load:
        p = programs(args.load, args.rounds, args.steps)
        print(f"prefill-40: INT8 {p['int8'][0]:.2f} s, codes {p['codes'][0]:.2f} s "
              f"(codes / INT8 {p['codes'][0] / p['int8'][0]:.2f}x); decode: INT8 "
              f"{p['int8'][1]:.1f} tok/s, codes {p['codes'][1]:.1f} tok/s (codes / INT8 "
              f"{p['codes'][1] / p['int8'][1]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
