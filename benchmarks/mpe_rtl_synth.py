"""Yosys synthesis of the RTL MPE (synth_xilinx -family xcup): cell counts beside hw/resources.py's estimate for the same number of DSP48s.

    python benchmarks/mpe_rtl_synth.py            # one 16-DSP chain and the MPE at 1/64 size

Two sizes: one configurable sparse DSP chain (16 DSP48s, `csd_chain`), and `mpe_core` at 1/64 of
the U280 array (2 activation rows x 2 chains, MV on the same 2 chains: 32 DSP48s, with the
activation buffers, accumulator banks, team sums and counters), both with the instantiated DSP48E2
(DSP_PRIM=1) and, for the chain, inferred (DSP_PRIM=0).  1/16 (8 chains) took over 200 s of Yosys
CPU time and did not finish in 25 minutes on the shared 2-core machine; per-chain figures scale
linearly (every chain has its own MUXes, skew, banks).  Expected: one DSP48E2
per packed MAC pair (chains x 16), the cascade on PCOUT->PCIN.  Yosys 0.23 is not Vivado: LUT/FF
counts are indicative (SRL16E are shift registers in LUTs; Yosys maps carries to CARRY4 here).
Runs for minutes on 2 cores; `nice` it.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

CHAIN = ("csd_chain", {"L": 16, "DSP_PRIM": 1}, 16)
CHAIN_INFERRED = ("csd_chain", {"L": 16, "DSP_PRIM": 0}, 16)
MPE_SMALL = ("mpe_core", {"ROWS": 2, "COLS": 2, "MV_COLS": 2, "MV_TEAM": 2, "KB": 4, "DSP_PRIM": 1}, 32)


def run(cases, log=print) -> list[dict]:
    from flightllm_overlay.hw import resources as R
    from flightllm_overlay.hw.yosys import synth
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (top, params, dsps) in enumerate(cases):
            t0 = time.time()
            rep = synth(top, params, Path(tmp) / str(i))
            est = (R.RTL_MPE_DSP if top == "mpe_core" else R.CHAIN_DSP) * dsps
            rows.append({"top": top, "params": params, "expected_dsp": dsps, "seconds": time.time() - t0,
                         **rep.summary(), "est_lut": est.lut, "est_ff": est.ff})
            log(f"{top} {params}: {rep.summary()} in {time.time() - t0:.0f} s")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chain-only", action="store_true", help="only the one-chain runs")
    args = ap.parse_args(argv)
    cases = [CHAIN, CHAIN_INFERRED] + ([] if args.chain_only else [MPE_SMALL])
    rows = run(cases)
    print("| design | DSP48E2 (expected) | LUT (+SRL) | FF | CARRY4 | estimate LUT | estimate FF | LUT+SRL / est | FF / est |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = f"{r['top']} DSP_PRIM={r['params']['DSP_PRIM']}"
        lut = r["LUT"] + r["SRL"] + r["LUTRAM"]
        print(f"| {name} | {r['DSP48E2']} ({r['expected_dsp']}) | {r['LUT']} (+{r['SRL']}) | {r['FF']} | "
              f"{r['CARRY']} | {r['est_lut']:.0f} | {r['est_ff']:.0f} | {lut / r['est_lut']:.2f} | "
              f"{r['FF'] / r['est_ff']:.2f} |")
    return 0 if all(r["DSP48E2"] == r["expected_dsp"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
