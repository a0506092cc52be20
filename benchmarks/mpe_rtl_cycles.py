"""RTL MPE cycles beside the timing model's MPE cost, per instruction shape, measured under Verilator; and the 2,000-instruction bit-exactness run.

    python benchmarks/mpe_rtl_cycles.py                 # the cycle table (markdown)
    python benchmarks/mpe_rtl_cycles.py --random 2000   # + 2,000 random MM/MV, both DSP variants
    python benchmarks/mpe_rtl_cycles.py --no-table --real   # MM/MV of compiled programs

The RTL is built at 1/16 of the U280 MPE (8 activation rows, 2 chains per team, one MV team of 16
chains: 16 chains of 16 DSP48s) and each shape is run scaled to it: an MM keeps its number of
128-row blocks (m' = 8 per block), an MV its number of 64-output groups (n' = 16 per group).  The
RTL's pass schedule (hw/mpe_model.py, the code that drives the RTL) gives the scaled shape exactly
the passes the full-size MPE takes for the full shape: the benchmark checks that for every row
before printing it.  Columns: "timing" = sim/timing.py's MPE cost (cycles the MPE is charged),
"RTL" = first pass presented to last result out, "II" = cycles between the last results of two
back-to-back copies (the issue interval), both measured.  No Vivado run: these are RTL cycles at
the kernel clock, not a placed-and-routed timing.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = dict(rows=8, cols=2, mv_cols=16, mv_team=16, kb=128)
SCALE_ROWS = BENCH["rows"]

#: (op, m, n, k, N or None): SmolLM2-135M linears (dim 576, hidden 1536, 9 heads of 64, 3 KV heads)
#: and attention in prefill (128-row blocks) and decode, a LLaMA-7B-width MV, and tile-edge shapes.
SHAPES = [
    ("MM", 128, 576, 576, None), ("MM", 128, 192, 576, None), ("MM", 128, 1536, 576, None),
    ("MM", 128, 576, 1536, None), ("MM", 128, 128, 64, None), ("MM", 128, 64, 128, None),
    ("MM", 256, 576, 576, None), ("MM", 100, 17, 40, None), ("MM", 128, 16, 10, None),
    ("MM", 128, 576, 576, 8), ("MM", 128, 1536, 576, 4), ("MM", 128, 576, 1536, 2),
    ("MV", 1, 576, 576, None), ("MV", 1, 1536, 576, None), ("MV", 1, 576, 1536, None),
    ("MV", 1, 128, 64, None), ("MV", 3, 64, 128, None), ("MV", 1, 4096, 576, None),
    ("MV", 1, 80, 96, None),
    ("MV", 1, 576, 576, 8), ("MV", 1, 1536, 576, 4), ("MV", 1, 576, 1536, 2),
]


def _op(M, rng, op, m, n, k, code):
    return M.random_op(rng, op, m, n, k, codes=None if code is None else (code,))


def scaled(M, rng, shape, full, small):
    """The shape at the small build, and the pass counts of (full shape, full MPE) and (scaled, small)."""
    op, m, n, k, code = shape
    if op == "MM":
        ms, ns = -(-m // full.rows) * small.rows, n
    else:
        ms, ns = m, -(-n // (full.tmv * 16)) * 16 * small.tmv
    big = _op(M, rng, op, m, n, k, code)
    little = _op(M, rng, op, ms, ns, k, code)
    return little, M.instruction_passes(full, big), M.instruction_passes(small, little), big


def cycle_table(log=print) -> list[dict]:
    from flightllm_overlay.config import load_target
    from flightllm_overlay.hw import mpe_model as M
    from flightllm_overlay.hw import mpe_verilator as V
    from flightllm_overlay.sim.timing import TimingModel

    target = load_target("u280")
    tm = TimingModel(target)
    full = M.MPEParams.from_target(target, kb=BENCH["kb"])
    small = M.MPEParams(**BENCH)
    t0 = time.time()
    exe = V.build(small)
    log(f"Verilator build of the 1/16 MPE: {time.time() - t0:.0f} s")
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in SHAPES:
            op, m, n, k, code = shape
            little, p_full, p_small, big = scaled(M, rng, shape, full, small)
            if p_full != p_small:
                raise AssertionError(f"{shape}: scaled shape takes {p_small} passes, full {p_full}")
            prog = M.build_program(small, [little, little])
            got = V.run(exe, prog, Path(tmp))
            errs = V.compare(prog, got)
            if errs:
                raise AssertionError(f"{shape}: RTL differs from the simulator: {errs}")
            per = len(prog.tiles) // 2
            rtl = got.cycles[per - 1] - prog.first_pass[0] + 1
            ii = got.cycles[2 * per - 1] - got.cycles[per - 1]
            kept = None if code is None else int(16 * np.asarray(big.fsb, np.int64).sum())
            timing = tm.mpe_cycles(op, m, n, k, kept)
            rows.append({"op": op, "m": m, "n": n, "k": k, "N": code or 16, "passes": p_full,
                         "timing": timing, "rtl": rtl, "ii": ii, "ratio": rtl / timing})
    return rows


def random_run(count: int, log=print) -> None:
    from flightllm_overlay.hw import mpe_model as M
    from flightllm_overlay.hw import mpe_verilator as V
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_mpe_rtl import SMALL, random_ops

    for prim in (0, 1):
        p = M.MPEParams(**SMALL, dsp_prim=prim)
        t0 = time.time()
        exe = V.build(p)
        t1 = time.time()
        ops = random_ops(np.random.default_rng(77), count, p)
        prog = M.build_program(p, ops, gap=1)
        with tempfile.TemporaryDirectory() as tmp:
            got = V.run(exe, prog, Path(tmp))
        errs = V.compare(prog, got)
        kinds = {}
        for o in ops:
            key = f"{o.op} {'N:16' if o.sparse else 'dense'}"
            kinds[key] = kinds.get(key, 0) + 1
        log(f"DSP_PRIM={prim}: {count} random instructions ({kinds}), {len(prog.cycles)} cycles, "
            f"{len(prog.tiles)} result tiles: {'bit-exact' if not errs else errs}; build {t1 - t0:.0f} s, "
            f"run {time.time() - t1:.0f} s")
        if errs:
            raise SystemExit(1)


def real_run(log=print) -> None:
    """MM/MV instructions of compiled programs, captured from the Python simulator, on the RTL:
    the tiny LLaMA (dense W8A8), the same model compressed (packed N:16 sparse weights) and the
    first 14 MM/MV of SmolLM2-135M's prefill (MM rows cut to one 8-row block to keep the run short)."""
    import tempfile as tf
    from flightllm_overlay.compiler import compile_compressed, compile_model
    from flightllm_overlay.compress import CompressionConfig, compress
    from flightllm_overlay.hw import mpe_model as M
    from flightllm_overlay.hw import mpe_verilator as V
    from flightllm_overlay.testing.mpe_capture import capture
    from flightllm_overlay.model import load_checkpoint
    from flightllm_overlay.model.testing import make_tiny_llama
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.runtime import Session
    from flightllm_overlay.sim.device import SimulatedU280

    overlay = FlightLLMOverlay(device=SimulatedU280())
    with tf.TemporaryDirectory() as tmp:
        tiny = load_checkpoint(make_tiny_llama(Path(tmp) / "tiny", seed=0))
        rng = np.random.default_rng(3)
        cm = compress(tiny, rng.integers(3, 300, 512).tolist(),
                      CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=512), progress=False)
        programs = [("tiny LLaMA, dense W8A8", compile_model(tiny, ctx=256), None),
                    ("tiny LLaMA, compressed (N:16 sparse)", compile_compressed(cm, ctx=256), None),
                    ("SmolLM2-135M, first 14 MM/MV", compile_model(load_checkpoint(None), ctx=256), 14)]
        for prim in (0, 1):
            p = M.MPEParams(**BENCH, dsp_prim=prim)
            exe = V.build(p)
            for name, program, limit in programs:
                with capture(limit) as ops:
                    with Session(overlay, program) as sess:
                        sess.run("prefill", list(range(3, 15)), 0)
                        sess.run("decode", [9], 12)
                ops = [M.MPEOp(o.op, o.a[:p.rows] if o.op == "MM" else o.a, o.n, o.k, w=o.w, values=o.values,
                               fsb=o.fsb, meta=o.meta) for o in ops]
                prog = M.build_program(p, ops)
                got = V.run(exe, prog, Path(tmp) / "run")
                errs = V.compare(prog, got)
                sparse = sum(o.sparse for o in ops)
                log(f"DSP_PRIM={prim} {name}: {len(ops)} MM/MV ({sparse} N:16 sparse), "
                    f"{len(prog.cycles)} cycles: {'bit-exact' if not errs else errs}")
                if errs:
                    raise SystemExit(1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=0, help="also run this many random instructions")
    ap.add_argument("--no-table", action="store_true", help="skip the cycle table")
    ap.add_argument("--real", action="store_true", help="also run the MM/MV of compiled programs")
    args = ap.parse_args(argv)
    if not args.no_table:
        rows = cycle_table()
        print("| op | m | n | k | N:16 | passes | timing model | RTL | RTL / timing | II |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['op']} | {r['m']} | {r['n']} | {r['k']} | {r['N']} | {r['passes']} | "
                  f"{r['timing']} | {r['rtl']} | {r['ratio']:.3f} | {r['ii']} |")
        worst = max(rows, key=lambda r: abs(r["ratio"] - 1))
        print(f"\nworst RTL / timing: {worst['ratio']:.3f} ({worst['op']} {worst['m']}x{worst['n']}x{worst['k']})")
    if args.random:
        random_run(args.random)
    if args.real:
        real_run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
