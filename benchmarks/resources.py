"""Resource estimate of the accelerator (DSP, BRAM36, URAM, LUT, FF per kernel) beside the paper's U280 build and the U280's capacity.

An estimate from the target config (`flightllm_overlay/hw/resources.py` states every rule and
per-unit cost), not a synthesis report.  What-if studies change config numbers:

    python benchmarks/resources.py
    python benchmarks/resources.py --set mm_macs_per_cycle=8192 --buffer-depth-scale 2
"""
from __future__ import annotations

import argparse
from dataclasses import replace


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="u280", help="hardware target (default: u280)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=N",
                    help="override a numeric Target field, e.g. mm_macs_per_cycle=8192")
    ap.add_argument("--buffer-depth-scale", type=float, default=1.0,
                    help="multiply every on-chip buffer's depth (what-if)")
    args = ap.parse_args(argv)

    from flightllm_overlay.config import load_target
    from flightllm_overlay.hw.resources import estimate, format_report

    target = load_target(args.target)
    changes = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if not hasattr(target, name) or not value:
            ap.error(f"--set {item!r}: expected FIELD=N with FIELD a Target field")
        changes[name] = type(getattr(target, name))(float(value))
    if args.buffer_depth_scale != 1.0:
        changes["buffers"] = {k: replace(b, depth=int(b.depth * args.buffer_depth_scale))
                              for k, b in target.buffers.items()}
    if changes:
        target = target.with_overrides(**changes)
        print(f"what-if: {', '.join(args.set + ([f'buffer depth x{args.buffer_depth_scale:g}'] if 'buffers' in changes else []))}\n")
    est = estimate(target)
    print(format_report(est))
    return 0 if est.fits is not False else 1        # None: the target states no capacity


if __name__ == "__main__":
    raise SystemExit(main())
