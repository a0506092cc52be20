"""Fuzz every reader of untrusted bytes with >= 10,000 cases per target; prints the outcome counts.

    python benchmarks/fuzz.py                 # 10,000 cases per target, every target
    python benchmarks/fuzz.py -n 2000 -t program_bytes,xclbin_bytes --seed 7

A case is a random mutation of a good input (see `tests/fuzz_targets.py`).  Outcomes: rejected
(a documented error), accepted (read; for digested formats, identical to the good input), raw
exceptions, hangs (a case running past --timeout seconds) and silent wrong results (a digested
file read with other contents).  The last three must be 0; the exit status is 1 otherwise.
After the cases, the good input must still read as before.
"""
from __future__ import annotations

import argparse
import collections
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzz_targets as F  # noqa: E402


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def fuzz(name: str, n: int, seed: int, timeout: float, folder: Path) -> dict:
    target = F.TARGETS[name]
    state = target.setup(folder)
    rng = random.Random(seed)
    counts, examples = collections.Counter(), {}
    signal.signal(signal.SIGALRM, _alarm)
    t0 = time.perf_counter()
    for i in range(n):
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            out = F.run_case(target, state, rng)
        except _Hang:
            out = "hang"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        kind = "raw" if out.startswith("raw:") else out
        counts[kind] += 1
        if kind in ("raw", "hang", "wrong"):
            examples.setdefault(out, i)
    seconds = time.perf_counter() - t0
    good = F.good_still_works(target, state)
    return {"counts": counts, "examples": examples, "seconds": seconds, "good": good}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--cases", type=int, default=10_000)
    ap.add_argument("-t", "--targets", default=",".join(F.TARGETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before a case is a hang")
    args = ap.parse_args(argv)
    bad = 0
    print(f"{'target':22s} {'cases':>7s} {'rejected':>9s} {'accepted':>9s} {'raw':>5s} "
          f"{'hangs':>6s} {'wrong':>6s} {'good after':>10s} {'ms/case':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.targets.split(","):
            r = fuzz(name, args.cases, args.seed, args.timeout, Path(tmp))
            c = r["counts"]
            print(f"{name:22s} {args.cases:7d} {c['rejected']:9d} {c['accepted']:9d} {c['raw']:5d} "
                  f"{c['hang']:6d} {c['wrong']:6d} {'yes' if r['good'] else 'NO':>10s} "
                  f"{1e3 * r['seconds'] / args.cases:8.1f}", flush=True)
            for what, i in r["examples"].items():
                print(f"    case {i}: {what}")
            bad += c["raw"] + c["hang"] + c["wrong"] + (not r["good"])
    print("all clear: no raw exception, no hang, no silent wrong result" if not bad else
          f"{bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
