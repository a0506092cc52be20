"""Generates the Vitis build inputs in vivado_project/ (v++ link cfg, block-design Tcl, kernels.mk) from hw/design.py.

The block design of `hw/design.py` (itself derived from `targets/<name>.json`) is the single source:
this module only reformats it.  Three files come out, committed as generated outputs:

    flightllm_u280.cfg   v++ --link configuration: ``nk=`` (kernels and their instance names),
                         ``slr=`` (core c's units on SLR c, the scheduler on SLR0), ``sp=`` (every
                         m_axi port to its HBM pseudo-channel or DDR bank), ``stream_connect=``
                         (``--connectivity.sc``: every AXI4-Stream link), the kernel clock.
    design.tcl           the same block design as Tcl data + procs (namespace ``::flightllm``):
                         kernels, VLNVs, instances, register offsets, port-to-bank map, clocks.
                         Sourced by ``hls_export.tcl`` (v++ -c) and ``postlink.tcl`` (v++ -l),
                         and by the tests through ``tclsh``.
    kernels.mk           Make fragment: kernel names and sources, platform, clock, tool versions.

Regenerate with ``python -m flightllm_overlay.hw.vitis --write`` (or ``make -C vivado_project
regen``); ``--check`` exits 1 when the committed copies are stale, ``--compare X.xclbin`` prints
how a built xclbin differs from the design.  `tests/test_vivado_project.py` holds all of them equal.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import config
from ..errors import ConfigError
from .design import (AXI_DATA_WIDTH, CONTROL_PORT, KERNEL_VERSION, KERNELS, LIBRARY, VENDOR,
                     BlockDesign, ComputeUnit, block_design)

# ---------------------------------------------------------------------------------------------
# Build facts that are not hardware numbers (so they live here, not in the target JSON)
# ---------------------------------------------------------------------------------------------
#: Tool versions the build is written for (FlightLLM's artifact: Vitis 2023.1, XRT 2.15.225).
VITIS_VERSION = "2023.1"
XRT_VERSION = "2.15"
#: SLR of the scheduler (it fetches the program from DDR and talks to every core).
SCHEDULER_SLR = 0
#: Paths as seen from vivado_project/, where the Makefile runs v++.
PROJECT_DIR = Path(__file__).resolve().parents[2] / "vivado_project"
SRC_DIR = "../flightllm_overlay/src"
#: Sources each kernel's v++ -c compiles (its own first; -k picks the top function).  No kernel
#: compiles another kernel's top-level source: the shared helpers are in fllm_common.cpp.
KERNEL_FILES = {"scheduler": ("scheduler.cpp", "fllm_common.cpp"),
                "mpe": ("mpe.cpp", "fllm_common.cpp"),
                "misc": ("misc.cpp", "fllm_common.cpp"),
                "memctrl": ("memctrl.cpp", "memctrl_move.cpp", "mpe_feed.cpp", "fllm_common.cpp")}
XCLBIN_OUT = "../flightllm_overlay/bitstreams/flightllm.xclbin"
REGEN_COMMAND = "python -m flightllm_overlay.hw.vitis --write"


def link_cfg_name(design: BlockDesign) -> str:
    return f"flightllm_{design.target}.cfg"


def _target(design: BlockDesign) -> config.Target:
    return config.load_target(design.target)


def slr_of(unit: ComputeUnit, design: BlockDesign) -> int:
    """SLR a compute unit is placed on: core c's units on SLR c, the scheduler on SLR0."""
    slrs = _target(design).slrs
    slr = SCHEDULER_SLR if unit.core is None else unit.core
    if not 0 <= slr < slrs:
        raise ConfigError(f"target {design.target}: {unit.instance} would go to SLR{slr} but the "
                          f"device has {slrs} SLRs; one core per SLR is the placement rule")
    return slr


def _by_kernel(design: BlockDesign) -> dict:
    """{kernel: [compute units]} in KERNELS order (the order of design.py)."""
    groups = {k: [] for k in KERNELS}
    for unit in design.compute_units:
        groups.setdefault(unit.kernel, []).append(unit)
    return {k: v for k, v in groups.items() if v}


def _mhz(design: BlockDesign) -> float:
    return design.clocks[0].mhz


def _fmt_mhz(mhz: float) -> str:
    return f"{mhz:g}"


def _banner(comment: str, what: str, design: BlockDesign) -> list:
    return [f"{comment} {what} (GENERATED from flightllm_overlay/hw/design.py, target "
            f"{design.target}; do not edit)",
            f"{comment} Regenerate: {REGEN_COMMAND}   (or: make -C vivado_project regen)"]


# ---------------------------------------------------------------------------------------------
# v++ link configuration
# ---------------------------------------------------------------------------------------------
def link_config(design: BlockDesign | None = None) -> str:
    """Text of the v++ --link configuration file of `design` (default: the U280 design)."""
    design = design or block_design()
    groups = _by_kernel(design)
    out = _banner("#", f"{link_cfg_name(design)}: v++ link configuration of the FlightLLM "
                  f"accelerator", design)
    out += [f"# Platform (given by the Makefile as --platform): {design.platform}",
            "",
            "# Kernel clock.  The shell's kernel clock 0 is scalable: v++ sets it with",
            "# kernel_frequency (the [clock] section's options apply to fixed platform clocks).",
            "# v++ lowers it and warns if timing fails; the simulator's timing model assumes",
            f"# {_fmt_mhz(_mhz(design))} MHz.",
            f"kernel_frequency=0:{_fmt_mhz(_mhz(design))}",
            "",
            "[connectivity]",
            "# Compute units: <kernel>:<count>:<instance>.<instance>... (one per core, one "
            "scheduler)"]
    for kernel, units in groups.items():
        out.append(f"nk={kernel}:{len(units)}:{'.'.join(u.instance for u in units)}")
    out += ["", "# Placement: core c's units on SLR c, the scheduler on "
            f"SLR{SCHEDULER_SLR}"]
    for unit in design.compute_units:
        out.append(f"slr={unit.instance}:SLR{slr_of(unit, design)}")
    out += ["", "# Memory: every m_axi port to its bank.  Core c owns HBM pseudo-channels "
            + "; ".join(f"core {c}: {','.join(map(str, chs))}"
                        for c, chs in enumerate(design.core_channels)),
            f"# Programs live in {design.instruction_memory}."]
    for unit in design.compute_units:
        for port in unit.ports:
            out.append(f"sp={unit.instance}.{port.name}:{port.memory}")
    out += ["", "# AXI4-Stream links (--connectivity.sc): <producer>.<port>:<consumer>.<port>.",
            "# Scheduler <-> each core (cmd, done); each core's MPE (docs/mpe_stream.md) and MISC;",
            "# each pair of cores (remote reads: peer p of core c is core (c + 1 + p) % cores)."]
    for stream in design.streams:
        out.append(f"stream_connect={stream.vpp}")
    out += ["",
            "[vivado]",
            "# Three SLRs and long DSP cascades (see benchmarks/resources.py for the estimate):",
            "# spend implementation effort on timing closure.",
            "prop=run.impl_1.STRATEGY=Performance_Explore"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Block design as Tcl
# ---------------------------------------------------------------------------------------------
def _tcl_word(value) -> str:
    """A Tcl word for a value: integers in hex where they are addresses, strings braced."""
    text = str(value)
    if any(c in text for c in "{}\\"):
        raise ConfigError(f"cannot quote {text!r} for design.tcl (braces or backslashes)")
    plain = text and all(c.isalnum() or c in "_.:-" for c in text)
    return text if plain else "{" + text + "}"


def _tcl_list(items) -> str:
    return " ".join(_tcl_word(i) for i in items)


def design_tcl(design: BlockDesign | None = None) -> str:
    """Text of design.tcl: the block design as Tcl data (dicts) and the procs that read it."""
    design = design or block_design()
    groups = _by_kernel(design)
    w = _tcl_word
    out = _banner("#", "design.tcl: the FlightLLM block design as Tcl data and procs", design)
    out += ["# Pure Tcl 8.5+ (no Vivado commands).  Sourced by hls_export.tcl (v++ -c),",
            "# postlink.tcl (v++ -l) and the tests (tclsh).",
            "",
            "namespace eval ::flightllm {",
            f"    variable target {w(design.target)}",
            f"    variable platform {w(design.platform)}",
            f"    variable vendor {w(VENDOR)}",
            f"    variable library {w(LIBRARY)}",
            f"    variable kernel_version {w(KERNEL_VERSION)}",
            f"    variable control_port {w(CONTROL_PORT)}",
            f"    variable axi_data_width {AXI_DATA_WIDTH}",
            f"    variable cores {design.cores}",
            f"    variable instruction_memory {w(design.instruction_memory)}",
            f"    variable kernels {{{_tcl_list(groups)}}}",
            "",
            "    # clocks: name -> {mhz <MHz> kind <DATA|KERNEL|SYSTEM>}",
            "    variable clocks [dict create]"]
    for clk in design.clocks:
        out.append(f"    dict set clocks {w(clk.name)} {{mhz {_fmt_mhz(clk.mhz)} kind "
                   f"{w(clk.kind)}}}")
    out += ["",
            "    # kernel registers, in argument order: name -> {offset bits access arg port}",
            "    # (offsets from the CU base; port is the m_axi port of a pointer argument, or",
            "    # the control port)",
            "    variable registers [dict create]"]
    for kernel, units in groups.items():
        out.append(f"    dict set registers {w(kernel)} {{")
        for reg in units[0].registers:
            out.append(f"        {w(reg.name)} {{offset 0x{reg.offset:02X} bits {reg.bits} "
                       f"access {reg.access} arg {reg.arg_id} port "
                       f"{w(reg.port or CONTROL_PORT)}}}")
        out.append("    }")
    out += ["",
            "    # compute units, in address order: instance -> {kernel core slr base range",
            "    # control ports {<m_axi port> <bank> ...}}; core -1 is the scheduler (no core)",
            "    variable cus [dict create]"]
    for unit in design.compute_units:
        ports = _tcl_list(x for p in unit.ports for x in (p.name, p.memory))
        axis = _tcl_list(x for p in unit.streams for x in (p.name, p.direction))
        core = -1 if unit.core is None else unit.core
        out.append(f"    dict set cus {w(unit.instance)} {{kernel {w(unit.kernel)} core {core} "
                   f"slr {slr_of(unit, design)} base 0x{unit.base_address:08X} "
                   f"range 0x{unit.address_range:X} control {w(unit.control)} "
                   f"ports {{{ports}}} axis {{{axis}}}}}")
    out += ["",
            "    # AXI4-Stream connections: {<producer> <port> <consumer> <port>} ...",
            "    variable streams {"]
    for st in design.streams:
        out.append(f"        {{{_tcl_list((st.src, st.src_port, st.dst, st.dst_port))}}}")
    out += ["    }", "}"]
    out.append(_TCL_PROCS)
    return "\n".join(out) + "\n"


_TCL_PROCS = r"""
# --- procs: read the data above ---------------------------------------------------------------
proc ::flightllm::kernels {} { variable kernels; return $kernels }

proc ::flightllm::vlnv {kernel} {
    variable vendor; variable library; variable kernel_version
    ::flightllm::_known_kernel $kernel
    return "$vendor:$library:$kernel:$kernel_version"
}

# Compute units (instances) in address order; only those of `kernel` when given.
proc ::flightllm::cus {{kernel ""}} {
    variable cus
    if {$kernel eq ""} { return [dict keys $cus] }
    ::flightllm::_known_kernel $kernel
    set out {}
    dict for {name cu} $cus { if {[dict get $cu kernel] eq $kernel} { lappend out $name } }
    return $out
}

proc ::flightllm::cu {inst} {
    variable cus
    if {![dict exists $cus $inst]} {
        error "flightllm: no compute unit '$inst'; compute units are [dict keys $cus]"
    }
    return [dict get $cus $inst]
}

proc ::flightllm::cu_kernel {inst} { return [dict get [::flightllm::cu $inst] kernel] }
proc ::flightllm::core {inst} { return [dict get [::flightllm::cu $inst] core] }
proc ::flightllm::slr {inst} { return [dict get [::flightllm::cu $inst] slr] }
proc ::flightllm::base_address {inst} { return [dict get [::flightllm::cu $inst] base] }

# Argument registers of a compute unit (or a kernel), in argument order.
proc ::flightllm::registers {inst_or_kernel} {
    return [dict keys [::flightllm::_regs $inst_or_kernel]]
}

proc ::flightllm::reg_offset {inst_or_kernel reg} {
    return [expr {[dict get [::flightllm::_reg $inst_or_kernel $reg] offset]}]
}

proc ::flightllm::reg_field {inst_or_kernel reg field} {
    return [dict get [::flightllm::_reg $inst_or_kernel $reg] $field]
}

# m_axi ports of a compute unit, and the memory bank each one is wired to (e.g. HBM[4]).
proc ::flightllm::ports {inst} { return [dict keys [dict get [::flightllm::cu $inst] ports]] }

proc ::flightllm::port_bank {inst port} {
    set ports [dict get [::flightllm::cu $inst] ports]
    if {![dict exists $ports $port]} {
        error "flightllm: $inst has no m_axi port '$port'; it has [dict keys $ports]"
    }
    return [dict get $ports $port]
}

# AXI4-Stream ports of a compute unit: {<name> <in|out> ...}
proc ::flightllm::axis {inst} { return [dict get [::flightllm::cu $inst] axis] }

# Stream connections, as v++ writes them: <producer>.<port>:<consumer>.<port>
proc ::flightllm::stream_connects {} {
    variable streams
    set out {}
    foreach s $streams {
        lassign $s src sport dst dport
        lappend out "$src.$sport:$dst.$dport"
    }
    return $out
}

proc ::flightllm::clock_mhz {{name DATA_CLK}} {
    variable clocks
    return [dict get $clocks $name mhz]
}

proc ::flightllm::_known_kernel {kernel} {
    variable kernels
    if {$kernel ni $kernels} { error "flightllm: no kernel '$kernel'; kernels are $kernels" }
}

proc ::flightllm::_regs {inst_or_kernel} {
    variable registers; variable cus
    set kernel $inst_or_kernel
    if {[dict exists $cus $inst_or_kernel]} { set kernel [::flightllm::cu_kernel $inst_or_kernel] }
    ::flightllm::_known_kernel $kernel
    return [dict get $registers $kernel]
}

proc ::flightllm::_reg {inst_or_kernel reg} {
    set regs [::flightllm::_regs $inst_or_kernel]
    if {![dict exists $regs $reg]} {
        error "flightllm: $inst_or_kernel has no register '$reg'; it has [dict keys $regs]"
    }
    return [dict get $regs $reg]
}"""


# ---------------------------------------------------------------------------------------------
# Make fragment
# ---------------------------------------------------------------------------------------------
def kernels_mk(design: BlockDesign | None = None) -> str:
    """Text of kernels.mk: what the Makefile builds, from which sources, for which platform."""
    design = design or block_design()
    groups = _by_kernel(design)
    mhz = _mhz(design)
    out = _banner("#", "kernels.mk: kernel names, sources and build settings for "
                  "vivado_project/Makefile", design)
    out += ["",
            f"FLIGHTLLM_TARGET := {design.target}",
            f"FLIGHTLLM_PLATFORM := {design.platform}",
            f"FLIGHTLLM_VITIS_VERSION := {VITIS_VERSION}",
            f"FLIGHTLLM_XRT_VERSION := {XRT_VERSION}",
            f"FLIGHTLLM_CLOCK_MHZ := {_fmt_mhz(mhz)}",
            f"FLIGHTLLM_CLOCK_HZ := {int(round(mhz * 1e6))}",
            f"FLIGHTLLM_LINK_CFG := {link_cfg_name(design)}",
            f"FLIGHTLLM_XCLBIN := {XCLBIN_OUT}",
            "",
            "# HLS sources in SRC_DIR, which also holds the generated header.  Each kernel's",
            "# v++ -c compiles its own top-level source first, then its helpers (-k picks the",
            "# top function); the helpers every kernel shares are in fllm_common.cpp.",
            f"SRC_DIR ?= {SRC_DIR}",
            f"FLIGHTLLM_KERNELS := {' '.join(groups)}"]
    for kernel in groups:
        files = KERNEL_FILES[kernel]
        out.append(f"FLIGHTLLM_SRC_{kernel} = " + " ".join(f"$(SRC_DIR)/{f}" for f in files))
    out += ["", "# Compute units (instances) of each kernel, as in the link configuration"]
    for kernel, units in groups.items():
        out.append(f"FLIGHTLLM_CUS_{kernel} := {' '.join(u.instance for u in units)}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Writing, checking
# ---------------------------------------------------------------------------------------------
def generated_files(design: BlockDesign | None = None) -> dict:
    """{file name in vivado_project/: text} of every generated file."""
    design = design or block_design()
    return {link_cfg_name(design): link_config(design),
            "design.tcl": design_tcl(design),
            "kernels.mk": kernels_mk(design)}


def write(directory: Path | str | None = None, design: BlockDesign | None = None) -> list:
    """Write the generated files (only those whose text changed); returns the paths written."""
    directory = Path(directory) if directory else PROJECT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generated_files(design).items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


def stale(directory: Path | str | None = None, design: BlockDesign | None = None) -> list:
    """Names of generated files that are missing or differ from a fresh generation."""
    directory = Path(directory) if directory else PROJECT_DIR
    return [name for name, text in generated_files(design).items()
            if not (directory / name).is_file() or (directory / name).read_text() != text]


# ---------------------------------------------------------------------------------------------
# Comparing an xclbin with the design (through pynq's own parser)
# ---------------------------------------------------------------------------------------------
def xclbin_summary(xclbin) -> dict:
    """What must agree between the simulated and a real xclbin, as parsed by pynq's `XclBin`.

    `xclbin` is a path, bytes, or an already parsed `XclBin`.  Per compute unit: kernel, VLNV,
    control protocol, and per argument register (offset, bits, bank of a pointer argument).  Base
    addresses are left out: the linker assigns them and the drivers read them from the xclbin.
    """
    if isinstance(xclbin, (bytes, bytearray)):
        from pynq.pl_server.xclbin_parser import XclBin
        xclbin = XclBin(xclbin_data=bytearray(xclbin))
    elif isinstance(xclbin, (str, Path)):
        from pynq.pl_server.xclbin_parser import XclBin
        xclbin = XclBin(str(xclbin))
    units = {}
    for name, ip in xclbin.ip_dict.items():
        regs = {r: (v["address_offset"], v["size"], v.get("memory"))
                for r, v in ip.get("registers", {}).items() if r != "CTRL"}
        units[name] = {"kernel": str(ip.get("cu_name", name)).split(":")[0],
                       "vlnv": ip.get("type"), "control": ip.get("hw_control_protocol"),
                       "registers": regs}
    return units


def design_summary(design: BlockDesign | None = None) -> dict:
    """`xclbin_summary` of what `design` says, built without any xclbin (for a 3-way check)."""
    design = design or block_design()
    return {u.instance: {"kernel": u.kernel, "vlnv": u.vlnv, "control": u.control,
                         "registers": {r.name: (r.offset, r.bits,
                                                u.port(r.port).memory if r.port else None)
                                       for r in u.registers}}
            for u in design.compute_units}


def diff_summaries(want: dict, got: dict) -> list:
    """Readable differences between two `xclbin_summary` results (empty when equal)."""
    lines = []
    for name in sorted(set(want) | set(got)):
        if name not in got:
            lines.append(f"{name}: missing from the xclbin")
            continue
        if name not in want:
            lines.append(f"{name}: in the xclbin but not in the design")
            continue
        a, b = want[name], got[name]
        for key in ("kernel", "vlnv", "control"):
            if a[key] != b[key]:
                lines.append(f"{name}: {key} {b[key]!r}, design says {a[key]!r}")
        for reg in sorted(set(a["registers"]) | set(b["registers"])):
            ra, rb = a["registers"].get(reg), b["registers"].get(reg)
            if ra != rb:
                lines.append(f"{name}.{reg}: (offset, bits, bank) {rb}, design says {ra}")
    return lines


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flightllm_overlay.hw.vitis",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="regenerate the files in --dir")
    ap.add_argument("--check", action="store_true", help="exit 1 if the files in --dir are stale")
    ap.add_argument("--compare", metavar="XCLBIN", help="compare a built xclbin with the design")
    ap.add_argument("--dir", type=Path, default=PROJECT_DIR, help=f"default: {PROJECT_DIR}")
    ap.add_argument("--target", default="u280", help="hardware target (default: u280)")
    args = ap.parse_args(argv)
    if not (args.write or args.check or args.compare):
        ap.error("nothing to do: give --write, --check or --compare XCLBIN")
    design = block_design(args.target)
    status = 0
    if args.write:
        written = write(args.dir, design)
        for name in generated_files(design):
            path = args.dir / name
            print(f"{'wrote    ' if path in written else 'unchanged'} {path}")
    if args.check:
        old = stale(args.dir, design)
        for name in old:
            print(f"stale: {args.dir / name} (run: {REGEN_COMMAND})")
        status |= bool(old)
    if args.compare:
        diffs = diff_summaries(design_summary(design), xclbin_summary(args.compare))
        print("\n".join(diffs) if diffs else f"{args.compare}: kernels, VLNVs, registers and "
                                              f"bank wiring match the design")
        status |= bool(diffs)
    return status


if __name__ == "__main__":
    sys.exit(main())
