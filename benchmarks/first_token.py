"""Time to the first token of `flightllm generate`, with an empty program cache (cold) and a filled one (warm).

Each run is a fresh process, as a user starts it: `flightllm generate PROMPT --max-new-tokens 1`
with `FLIGHTLLM_CACHE` in a new temporary folder, first once on the empty folder (the program is
compiled and stored), then `--warm` times on the folder the first run filled.  The first token is
the first byte the process writes to stdout (the answer streams, so that is the moment the token
is printed); the process time adds the exit and, cold, storing the buckets compiled on the way.
Targets (2 quiet cores, SmolLM2-135M-Instruct W8A8): cold <= 15 s, warm <= 3 s.

    python benchmarks/first_token.py [--warm 3] [--model M] [--prompt TEXT] [--keep DIR]

Every figure depends on the machine and on what else runs on it: print `uptime` beside them.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

PROMPT = "What is the capital of France?"


def run_once(cache: str, model: str | None, prompt: str) -> tuple:
    """(seconds to the first byte on stdout, seconds to the exit, the text) of one process."""
    cmd = [sys.executable, "-m", "flightllm_overlay.cli", "generate", prompt, "--max-new-tokens", "1"]
    if model:
        cmd += ["--model", model]
    env = dict(os.environ, FLIGHTLLM_CACHE=cache)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.read(1)
    t1 = time.perf_counter()
    rest = proc.stdout.read()               # the rest of the answer (stderr: a few short lines)
    err = proc.stderr.read()
    proc.wait()
    t2 = time.perf_counter()
    if proc.returncode:
        raise SystemExit(f"flightllm generate failed ({proc.returncode}): {err.decode()[-400:]}")
    return t1 - t0, t2 - t0, (first + rest).decode().strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warm", type=int, default=3, help="warm runs after the cold one")
    ap.add_argument("--model", default=None, help="default: smollm2-135m-instruct")
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--keep", default=None, help="use (and keep) this cache folder instead of "
                                                 "a temporary one; it must be empty for a cold run")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flightllm-first-token-") as tmp:
        cache = args.keep or tmp
        print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        first, total, text = run_once(cache, args.model, args.prompt)
        print(f"cold: first token {first:6.2f} s, process {total:6.2f} s ({text!r})", flush=True)
        warm = []
        for _ in range(args.warm):
            first, total, text = run_once(cache, args.model, args.prompt)
            warm.append(first)
            print(f"warm: first token {first:6.2f} s, process {total:6.2f} s ({text!r})", flush=True)
        if warm:
            print(f"warm first token: best {min(warm):.2f} s, median "
                  f"{sorted(warm)[len(warm) // 2]:.2f} s")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
