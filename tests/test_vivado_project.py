"""vivado_project/: generated files fresh, cfg/Tcl/xclbin agree with hw/design.py, Makefile dry runs and `make check`."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pynq.pl_server.xclbin_parser import XclBin

from flightllm_overlay.config import load_target
from flightllm_overlay.hw import vitis
from flightllm_overlay.hw.design import (CONTROL_PORT, KERNEL_VERSION, LIBRARY, VENDOR,
                                         block_design, build_design, kernel_vlnv)
from flightllm_overlay.sim.xclbin import build_xclbin, is_metadata_only

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "vivado_project"
DESIGN = block_design()
TARGET = load_target("u280")
MAKE = shutil.which("make")
TCLSH = shutil.which("tclsh")


@pytest.fixture(scope="module")
def parsed():
    """The simulated device's metadata-only xclbin, read by pynq's own parser."""
    return XclBin(xclbin_data=bytearray(build_xclbin(DESIGN)))


def parse_cfg(text: str) -> dict:
    """The v++ cfg as {"top": {key: [values]}, "connectivity": {...}, ...} (comments dropped)."""
    sections, current = {"top": {}}, "top"
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, {})
            continue
        key, _, value = line.partition("=")
        sections[current].setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def cfg():
    return parse_cfg((PROJECT / "flightllm_u280.cfg").read_text())


# ---------------------------------------------------------------------------------------------
# Generated files
# ---------------------------------------------------------------------------------------------
def test_committed_files_equal_a_fresh_generation():
    assert vitis.stale(PROJECT) == [], \
        f"vivado_project/ is stale: run {vitis.REGEN_COMMAND}"
    assert vitis.generated_files() == vitis.generated_files(DESIGN)      # deterministic
    for name in vitis.generated_files():
        first = (PROJECT / name).read_text().splitlines()[0]
        assert first.startswith(f"# {name}: ") and "GENERATED" in first


def test_write_and_check_entry_point(tmp_path, capsys):
    assert vitis.main(["--check", "--dir", str(tmp_path)]) == 1          # nothing there: stale
    assert vitis.main(["--write", "--dir", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == set(vitis.generated_files())
    assert vitis.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "design.tcl").write_text("# hand edit\n")
    assert vitis.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "stale:" in capsys.readouterr().out


def test_generation_follows_the_design_not_constants():
    """A different target (2 cores, 2 channels each, DDR[1] for programs) changes every file."""
    t = TARGET.with_overrides(cores=2, core_channels=((0, 2), (1, 3)), instruction_bank=1)
    design = build_design(t)
    text = vitis.link_config(design)
    c = parse_cfg(text)["connectivity"]
    assert "mpe:2:mpe_0.mpe_1" in c["nk"]
    assert sorted(c["sp"]) == sorted(["scheduler.m_axi_instr:DDR[1]",
                                      "memctrl_0.m_axi_hbm0:HBM[0]", "memctrl_0.m_axi_hbm1:HBM[2]",
                                      "memctrl_1.m_axi_hbm0:HBM[1]", "memctrl_1.m_axi_hbm1:HBM[3]"])
    assert "variable cores 2" in vitis.design_tcl(design)
    assert "FLIGHTLLM_CUS_misc := misc_0 misc_1" in vitis.kernels_mk(design)
    slow = TARGET.with_overrides(clock_mhz=200.0)
    assert "kernel_frequency=0:200" in vitis.link_config(build_design(slow))
    assert "FLIGHTLLM_CLOCK_HZ := 200000000" in vitis.kernels_mk(build_design(slow))


# ---------------------------------------------------------------------------------------------
# The link configuration against design.py and the metadata-only xclbin
# ---------------------------------------------------------------------------------------------
def test_cfg_nk_names_every_kernel_and_instance(cfg, parsed):
    nk = {}
    for line in cfg["connectivity"]["nk"]:
        kernel, count, names = line.split(":")
        assert int(count) == len(names.split("."))
        nk[kernel] = names.split(".")
    want = {}
    for unit in DESIGN.compute_units:
        want.setdefault(unit.kernel, []).append(unit.instance)
    assert nk == want
    from_xclbin = {}
    for name, ip in parsed.ip_dict.items():
        kernel, instance = ip["cu_name"].split(":")
        assert instance == name
        from_xclbin.setdefault(kernel, set()).add(instance)
    assert {k: set(v) for k, v in nk.items()} == from_xclbin
    assert set(nk) == {"scheduler", "mpe", "misc", "memctrl"}


def test_cfg_slr_puts_core_c_on_slr_c_and_the_scheduler_on_slr0(cfg):
    slr = dict(line.split(":") for line in cfg["connectivity"]["slr"])
    assert len(slr) == len(cfg["connectivity"]["slr"])                    # one line per CU
    assert slr == {u.instance: f"SLR{0 if u.core is None else u.core}"
                   for u in DESIGN.compute_units}
    assert {slr[f"{k}_2"] for k in ("mpe", "misc", "memctrl")} == {"SLR2"}
    assert slr["scheduler"] == "SLR0"
    assert len(set(slr.values())) == TARGET.raw["slrs"] == TARGET.cores


def test_cfg_sp_wires_every_port_to_its_bank(cfg, parsed):
    sp = {}
    for line in cfg["connectivity"]["sp"]:
        where, bank = line.split(":")
        inst, port = where.split(".")
        assert (inst, port) not in sp
        sp[(inst, port)] = bank
    assert sp == {(u.instance, p.name): p.memory for u in DESIGN.compute_units for p in u.ports}
    assert sp[("scheduler", "m_axi_instr")] == f"DDR[{TARGET.instruction_bank}]"
    for c, channels in enumerate(TARGET.core_channels):
        assert [sp[(f"memctrl_{c}", f"m_axi_hbm{k}")] for k in range(len(channels))] == \
            [f"HBM[{ch}]" for ch in channels]
    hbm = [b for b in sp.values() if b.startswith("HBM")]
    assert len(hbm) == len(set(hbm)) == 24                               # one port per channel
    # the same wiring as pynq reads it from the simulated device's xclbin
    pointer_args = 0
    for name, ip in parsed.ip_dict.items():
        unit = DESIGN.cu(name)
        for reg, info in ip["registers"].items():
            if "memory" in info:
                pointer_args += 1
                assert sp[(name, unit.register(reg).port)] == info["memory"]
    assert pointer_args == len(sp)


def test_cfg_clock_and_implementation_options(cfg):
    assert cfg["top"]["kernel_frequency"] == [f"0:{TARGET.clock_mhz:g}"]
    assert TARGET.clock_mhz == 225
    assert any(p.startswith("run.impl_1.") for p in cfg["vivado"]["prop"])


def test_design_and_both_xclbin_views_agree(parsed):
    assert vitis.xclbin_summary(parsed) == vitis.design_summary(DESIGN)
    assert vitis.diff_summaries(vitis.design_summary(DESIGN), vitis.xclbin_summary(parsed)) == []
    for name, ip in parsed.ip_dict.items():
        assert ip["type"] == kernel_vlnv(DESIGN.cu(name).kernel)


def test_compare_reports_a_differently_wired_xclbin(tmp_path, capsys):
    good = tmp_path / "good.xclbin"
    good.write_bytes(build_xclbin(DESIGN))
    assert vitis.main(["--compare", str(good)]) == 0
    swapped = TARGET.with_overrides(core_channels=tuple(reversed(TARGET.core_channels)))
    bad = tmp_path / "bad.xclbin"
    bad.write_bytes(build_xclbin(build_design(swapped)))
    capsys.readouterr()
    assert vitis.main(["--compare", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "memctrl_0.hbm0" in out and "HBM[2]" in out


# ---------------------------------------------------------------------------------------------
# design.tcl and the Tcl hooks, through tclsh
# ---------------------------------------------------------------------------------------------
def tcl(script: str) -> str:
    assert TCLSH, "tclsh (Tcl 8.6) is needed by these tests: apt-get install tcl"
    res = subprocess.run([TCLSH], input=script, text=True, capture_output=True, cwd=PROJECT,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout


DUMP = """
source design.tcl
puts "platform $::flightllm::platform"
puts "instr $::flightllm::instruction_memory"
puts "clock [flightllm::clock_mhz]"
foreach k [flightllm::kernels] { puts "kernel $k [flightllm::vlnv $k] [flightllm::cus $k]" }
foreach cu [flightllm::cus] {
    puts "cu $cu [flightllm::cu_kernel $cu] [flightllm::core $cu] [flightllm::slr $cu]\
          [expr {[flightllm::base_address $cu]}]"
    foreach r [flightllm::registers $cu] {
        puts "reg $cu $r [flightllm::reg_offset $cu $r] [flightllm::reg_field $cu $r bits]\
              [flightllm::reg_field $cu $r access] [flightllm::reg_field $cu $r arg]\
              [flightllm::reg_field $cu $r port]"
    }
    foreach p [flightllm::ports $cu] { puts "port $cu $p [flightllm::port_bank $cu $p]" }
}
"""


def test_tclsh_reads_design_tcl_as_design_py_says(parsed):
    lines = [line.split() for line in tcl(DUMP).splitlines()]
    head = {l[0]: l[1:] for l in lines if l[0] in ("platform", "instr", "clock")}
    assert head == {"platform": [TARGET.platform], "instr": [DESIGN.instruction_memory],
                    "clock": [f"{TARGET.clock_mhz:g}"]}
    kernels = [l[1:] for l in lines if l[0] == "kernel"]
    assert [k[0] for k in kernels] == ["scheduler", "mpe", "misc", "memctrl"]
    for kernel, vlnv, *cus in kernels:
        assert vlnv == kernel_vlnv(kernel)
        assert cus == [u.instance for u in DESIGN.compute_units if u.kernel == kernel]
    cus = [l[1:] for l in lines if l[0] == "cu"]
    assert [c[0] for c in cus] == [u.instance for u in DESIGN.compute_units]
    for inst, kernel, core, slr, base in cus:
        unit = DESIGN.cu(inst)
        assert (kernel, int(core), int(slr), int(base)) == \
            (unit.kernel, -1 if unit.core is None else unit.core,
             0 if unit.core is None else unit.core, unit.base_address)
    regs = {}
    for _, inst, name, offset, bits, access, arg, port in (l for l in lines if l[0] == "reg"):
        regs.setdefault(inst, []).append((name, int(offset), int(bits), access, int(arg), port))
    for unit in DESIGN.compute_units:
        assert regs[unit.instance] == [(r.name, r.offset, r.bits, r.access, r.arg_id,
                                        r.port or CONTROL_PORT) for r in unit.registers]
        xclbin_regs = parsed.ip_dict[unit.instance]["registers"]
        assert {n: o for n, o, *_ in regs[unit.instance]} == \
            {n: v["address_offset"] for n, v in xclbin_regs.items() if n != "CTRL"}
    ports = {(l[1], l[2]): l[3] for l in lines if l[0] == "port"}
    assert ports == {(u.instance, p.name): p.memory for u in DESIGN.compute_units for p in u.ports}


def test_design_tcl_procs_reject_unknown_names():
    out = tcl("source design.tcl\n"
              "foreach cmd {{flightllm::cu nope} {flightllm::vlnv gpu} {flightllm::reg_offset mpe_0 x}"
              " {flightllm::port_bank mpe_0 m_axi_hbm0}} {\n"
              "  if {[catch $cmd msg]} { puts \"ERR $msg\" } else { puts \"OK $msg\" } }\n")
    lines = out.splitlines()
    assert len(lines) == 4 and all(l.startswith("ERR flightllm: ") for l in lines), out
    assert "compute units are scheduler mpe_0" in lines[0]


def test_hls_export_hook_sets_our_vlnv():
    out = tcl('proc config_export {args} { puts "config_export $args" }\nsource hls_export.tcl\n')
    assert out.strip() == f"config_export -vendor {VENDOR} -library {LIBRARY} -version {KERNEL_VERSION}"


POSTLINK_STUBS = """
proc get_bd_cells {args} {
    regexp {NAME == (\\S+)} [lindex $args end] -> name
    if {$name in $::absent} { return {} }
    return "/$name"
}
proc get_property {prop cell} {
    set inst [string trimleft $cell /]
    if {[dict exists $::vlnv_override $inst]} { return [dict get $::vlnv_override $inst] }
    return [flightllm::vlnv [flightllm::cu_kernel $inst]]
}
"""


def test_postlink_hook_checks_cells_and_vlnvs():
    ok = tcl("set absent {}; set vlnv_override {}\n" + POSTLINK_STUBS + "source postlink.tcl\n")
    assert f"post-link check of {len(DESIGN.compute_units)} compute units: 0 warning(s)" in ok
    bad = tcl("set absent {misc_1}; set vlnv_override {mpe_2 xilinx.com:hls:mpe:1.0}\n"
              + POSTLINK_STUBS + "source postlink.tcl\n")
    assert "no block-design cell named misc_1" in bad
    assert "mpe_2 is xilinx.com:hls:mpe:1.0, expected flightllm:hls:mpe:1.0" in bad
    assert "2 warning(s)" in bad


# ---------------------------------------------------------------------------------------------
# Makefile and kernels.mk
# ---------------------------------------------------------------------------------------------
def make_vars() -> dict:
    out = {}
    for line in (PROJECT / "kernels.mk").read_text().splitlines():
        m = re.match(r"^(\w+)\s*(?::=|\?=|=)\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_kernels_mk_names_kernels_sources_and_settings():
    v = make_vars()
    assert v["FLIGHTLLM_KERNELS"].split() == ["scheduler", "mpe", "misc", "memctrl"]
    kernels = v["FLIGHTLLM_KERNELS"].split()
    for kernel in kernels:
        srcs = v[f"FLIGHTLLM_SRC_{kernel}"].split()       # its own file first, then its helpers
        assert srcs[0] == f"$(SRC_DIR)/{kernel}.cpp"
        assert srcs == [f"$(SRC_DIR)/{f}" for f in vitis.KERNEL_FILES[kernel]]
        assert "$(SRC_DIR)/fllm_common.cpp" in srcs
        assert not {f"$(SRC_DIR)/{k}.cpp" for k in kernels if k != kernel} & set(srcs)
        for src in srcs:
            assert (ROOT / "flightllm_overlay" / "src" / src.removeprefix("$(SRC_DIR)/")).is_file()
        assert v[f"FLIGHTLLM_CUS_{kernel}"].split() == \
            [u.instance for u in DESIGN.compute_units if u.kernel == kernel]
    assert (PROJECT / v["SRC_DIR"]).resolve() == ROOT / "flightllm_overlay" / "src"
    assert (PROJECT / v["FLIGHTLLM_XCLBIN"]).resolve() == \
        ROOT / "flightllm_overlay" / "bitstreams" / "flightllm.xclbin"
    assert v["FLIGHTLLM_PLATFORM"] == TARGET.platform == "xilinx_u280_gen3x16_xdma_1_202211_1"
    assert int(v["FLIGHTLLM_CLOCK_HZ"]) == TARGET.clock_mhz * 1e6
    assert (v["FLIGHTLLM_VITIS_VERSION"], v["FLIGHTLLM_XRT_VERSION"]) == ("2023.1", "2.15")
    assert (PROJECT / v["FLIGHTLLM_LINK_CFG"]).is_file()


def run_make(*args, env=None, timeout=30):
    assert MAKE, "GNU make is needed by these tests"
    return subprocess.run([MAKE, "--no-print-directory", "-C", str(PROJECT), *args], text=True,
                          capture_output=True, env=env, timeout=timeout)


@pytest.fixture
def fake_src(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in {f for files in vitis.KERNEL_FILES.values() for f in files} | {"flightllm.h"}:
        (src / name).write_text("// stub\n")
    return src


def test_make_dry_run_checks_then_compiles_each_kernel_then_links(fake_src):
    res = run_make("-n", f"SRC_DIR={fake_src}")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert res.stdout == run_make("-n", "all", f"SRC_DIR={fake_src}").stdout   # default goal
    first_vpp = out.index("v++ ")
    assert out.index("check_tools.sh") < first_vpp                         # check runs first
    compiles = [l for l in out.splitlines() if l.startswith("v++ -c")]
    assert len(compiles) == 4
    for kernel, line in zip(("scheduler", "mpe", "misc", "memctrl"), compiles):
        assert f"-k {kernel} " in line and f"-I{fake_src} " in line
        assert f"-o build/xo/{kernel}.xo {fake_src}/{kernel}.cpp " in line
        assert all(f"{fake_src}/{f}" in line for f in vitis.KERNEL_FILES[kernel])
        assert f"--platform {TARGET.platform} " in line and "-t hw " in line
        assert f"--hls.clock 225000000:{kernel} " in line
        assert "hls_export.tcl" in line
    link = out[out.index("v++ -l"):]
    assert "--config flightllm_u280.cfg" in link
    assert "-o ../flightllm_overlay/bitstreams/flightllm.xclbin" in link
    assert all(f"build/xo/{k}.xo" in link for k in ("scheduler", "mpe", "misc", "memctrl"))
    assert "userPostSysLinkOverlayTcl=" in link and "postlink.tcl" in link


def test_make_dry_runs_of_regen_and_clean():
    regen = run_make("-n", "regen")
    assert regen.returncode == 0 and "-m flightllm_overlay.hw.vitis --write" in regen.stdout
    clean = run_make("-n", "clean")
    assert clean.returncode == 0 and "rm -rf build" in clean.stdout
    assert not any(name in clean.stdout for name in vitis.generated_files())
    assert "flightllm.xclbin" not in clean.stdout                  # only distclean drops it
    assert "flightllm.xclbin" in run_make("-n", "distclean").stdout


def test_make_kernels_without_sources_says_what_is_missing(tmp_path):
    res = run_make("kernels", f"SRC_DIR={tmp_path}")
    assert res.returncode != 0
    assert f"missing kernel source {tmp_path}/scheduler.cpp" in res.stderr


@pytest.fixture
def toolbin(tmp_path):
    """A PATH directory with only the basic tools check_tools.sh needs: no Vitis, no XRT."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "grep", "head", "tr"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    return bin_dir


def fake_tool(bin_dir: Path, name: str, output: str, rc: int = 0):
    path = bin_dir / name               # shell builtins only: PATH holds nothing else
    assert "'" not in output
    lines = "".join(f"echo '{line}'\n" for line in output.splitlines())
    path.write_text(f"#!/bin/sh\n{lines}exit {rc}\n")
    path.chmod(0o755)


def env_with(bin_dir: Path, platforms: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XILINX_XRT", "XILINX_VITIS")}
    env["PATH"] = str(bin_dir)
    env["PLATFORM_REPO_PATHS"] = str(platforms or bin_dir)
    return env


def test_make_check_fails_clearly_without_vitis(toolbin, fake_src):
    assert shutil.which("v++", path=str(toolbin)) is None
    res = run_make("check", env=env_with(toolbin))
    assert res.returncode != 0
    err = res.stderr
    assert "MISSING  v++ (Vitis 2023.1): not found on PATH" in err
    assert "settings64.sh" in err and "vivado" in err
    assert "xbutil (XRT 2.15)" in err and "/opt/xilinx/xrt/setup.sh" in err
    assert f"platform {TARGET.platform}" in err and "PLATFORM_REPO_PATHS" in err
    assert "4 prerequisite(s) missing" in err
    # the default goal stops at the check: no v++ is attempted
    res = run_make(f"SRC_DIR={fake_src}", env=env_with(toolbin))
    assert res.returncode != 0 and "prerequisite(s) missing" in res.stderr
    assert "v++ -c" not in res.stdout + res.stderr


@pytest.fixture
def platform_repo(tmp_path):
    repo = tmp_path / "platforms"
    (repo / TARGET.platform).mkdir(parents=True)
    (repo / TARGET.platform / f"{TARGET.platform}.xpfm").write_text("<platform/>\n")
    return repo


def test_make_check_passes_with_the_right_tools(toolbin, platform_repo):
    fake_tool(toolbin, "v++", "****** v++ v2023.1 (64-bit)\n  **** SW Build 3860322")
    fake_tool(toolbin, "vivado", "Vivado v2023.1 (64-bit)\nSW Build 3865809")
    fake_tool(toolbin, "xbutil", "Version              : 2.15.225\nBranch               : 2023.1")
    res = run_make("check", env=env_with(toolbin, platform_repo))
    assert res.returncode == 0, res.stderr
    assert "all prerequisites present" in res.stdout
    assert f"platform {TARGET.platform}: {platform_repo}" in res.stdout


def test_make_check_names_wrong_versions_and_uses_platforminfo(toolbin, tmp_path):
    fake_tool(toolbin, "v++", "****** v++ v2022.2 (64-bit)")
    fake_tool(toolbin, "vivado", "Vivado v2023.1 (64-bit)")
    fake_tool(toolbin, "xbutil", "Version              : 2.14.354")
    fake_tool(toolbin, "platforminfo", "Platform: xilinx_u280")            # finds the platform
    res = run_make("check", env=env_with(toolbin, tmp_path / "nowhere"))
    assert res.returncode != 0
    assert "v++ 2023.1: found version '2022.2'" in res.stderr
    assert "XRT 2.15: xbutil reports version '2.14.354'" in res.stderr
    assert "ok       vivado 2023.1" in res.stdout
    assert f"(platforminfo -p {TARGET.platform})" in res.stdout
    assert "2 prerequisite(s) missing" in res.stderr


def test_make_emulation_builds_dry_run(fake_src):
    """make sw_emu / hw_emu: the same kernels and link, -t <mode>, their own folder, emconfig.json."""
    for mode in ("sw_emu", "hw_emu"):
        res = run_make("-n", mode, f"SRC_DIR={fake_src}")
        assert res.returncode == 0, res.stderr
        out = re.sub(r"\\\n\s*", " ", res.stdout)           # join continued lines
        compiles = [ln for ln in out.splitlines() if ln.startswith("v++ -c")]
        assert len(compiles) == 4 and all(f"-t {mode} " in ln for ln in compiles)
        assert all(f"-o build_{mode}/xo/" in ln for ln in compiles)
        link = next(ln for ln in out.splitlines() if ln.startswith("v++ -l"))
        assert f"-t {mode} " in link and f"-o build_{mode}/flightllm.xclbin" in link
        assert f"emconfigutil --platform {TARGET.platform} --od build_{mode}" in out
    assert "-t hw " in run_make("-n", "hw", f"SRC_DIR={fake_src}").stdout


def test_make_emulation_fails_clearly_without_vitis(toolbin, platform_repo):
    res = run_make("emconfig", env=env_with(toolbin))
    assert res.returncode != 0 and "prerequisite(s) missing" in res.stderr
    # the tools check passes, but emconfigutil (part of Vitis) is not there
    fake_tool(toolbin, "v++", "****** v++ v2023.1 (64-bit)")
    fake_tool(toolbin, "vivado", "Vivado v2023.1 (64-bit)")
    fake_tool(toolbin, "xbutil", "Version              : 2.15.225")
    res = run_make("emconfig", env=env_with(toolbin, platform_repo))
    assert res.returncode != 0 and "emconfigutil (Vitis 2023.1) not found on PATH" in res.stderr


def test_make_emu_selftest_needs_an_emulation_build():
    res = run_make("emu_selftest", "EMU=hw")
    assert res.returncode != 0 and "EMU must be sw_emu or hw_emu" in res.stderr
    res = run_make("emu_selftest", "EMU=hw_emu")
    assert res.returncode != 0 and "run make hw_emu first" in res.stderr
    dry = run_make("-n", "emu_selftest", "EMU=sw_emu").stdout
    assert "XCL_EMULATION_MODE=sw_emu" in dry and "flightllm --device card selftest --no-model" in dry


# ---------------------------------------------------------------------------------------------
# A real build, when one is at hand
# ---------------------------------------------------------------------------------------------
def test_real_xclbin_matches_the_simulated_one(parsed):
    path = os.environ.get("FLIGHTLLM_REAL_XCLBIN")
    if not path:
        reason = ("FLIGHTLLM_REAL_XCLBIN is not set: no xclbin built by vivado_project/ to compare "
                  "(set it to the path of flightllm.xclbin from `make -C vivado_project`)")
        print(reason)
        pytest.skip(reason)
    data = Path(path).read_bytes()
    assert not is_metadata_only(data), f"{path} holds no bitstream: it is not a real build"
    real = XclBin(str(path))
    diffs = vitis.diff_summaries(vitis.xclbin_summary(parsed), vitis.xclbin_summary(real))
    assert diffs == [], "the built xclbin differs from the simulated device:\n" + "\n".join(diffs)
    data_clocks = [c["frequency"] for c in real.clock_dict.values() if c["type"] == "DATA"]
    assert data_clocks and data_clocks[0] == TARGET.clock_mhz, \
        f"kernel clock {data_clocks} MHz; the timing model assumes {TARGET.clock_mhz:g} MHz"


# ---------------------------------------------------------------------------------------------
# The kernels' real ports (their #pragma HLS INTERFACE lines) against the design and the cfg
# ---------------------------------------------------------------------------------------------
SRC = ROOT / "flightllm_overlay" / "src"


def kernel_interfaces() -> dict:
    """{kernel: {"args": [...], "s_axilite": [...], "m_axi": {port: bundle}, "axis": [...]}} read
    from each top-level function's signature and INTERFACE pragmas (hw/hls_lint's parser)."""
    from flightllm_overlay.hw import hls_lint
    out = {}
    for kernel, files in vitis.KERNEL_FILES.items():
        text = hls_lint.clean((SRC / files[0]).read_text())
        fn = next(f for f in hls_lint.functions(text) if f.name == kernel)
        pragmas = re.findall(r"#pragma\s+HLS\s+INTERFACE\s+mode\s*=\s*(\w+)\s+port\s*=\s*(\w+)"
                             r"(?:\s+bundle\s*=\s*(\w+))?", fn.body)
        args = [hls_lint._arg_type(a)[-1] for a in hls_lint._split_args(fn.args)]
        out[kernel] = {
            "args": args,
            "s_axilite": [p for mode, p, _ in pragmas if mode == "s_axilite" and p != "return"],
            "m_axi": {p: b for mode, p, b in pragmas if mode == "m_axi"},
            "axis": [p for mode, p, _ in pragmas if mode == "axis"],
            "return": any(mode == "s_axilite" and p == "return" for mode, p, _ in pragmas)}
    return out


def test_kernel_pragmas_are_the_designs_ports():
    """Registers = s_axilite ports in order, m_axi bundles = the design's m_axi ports, axis
    ports = the design's stream ports in order; the arguments are exactly registers then streams."""
    found = kernel_interfaces()
    for kernel, units in ((k, [u for u in DESIGN.compute_units if u.kernel == k]) for k in found):
        unit, got = units[0], found[kernel]
        regs = [r.name for r in unit.registers]
        streams = [p.name for p in unit.streams]
        assert got["s_axilite"] == regs, kernel
        assert got["axis"] == streams, kernel
        assert got["args"] == regs + streams, kernel
        assert got["return"], f"{kernel}: no s_axilite return (ap_ctrl_hs control port)"
        want_bundles = {r.name: r.port.removeprefix("m_axi_") for r in unit.registers if r.is_pointer}
        assert got["m_axi"] == want_bundles, kernel
        assert {f"m_axi_{b}" for b in got["m_axi"].values()} >= {p.name for p in unit.ports}
        assert len(set(got["m_axi"].values())) == len(got["m_axi"]), "one bundle per pseudo-channel"


def test_cfg_stream_connect_joins_every_axis_port_once(cfg):
    lines = cfg["connectivity"]["stream_connect"]
    assert lines == [s.vpp for s in DESIGN.streams]
    found = kernel_interfaces()
    used = []
    for line in lines:
        src, dst = line.split(":")
        (si, sp), (di, dp) = src.split("."), dst.split(".")
        assert sp in found[DESIGN.cu(si).kernel]["axis"] and dp in found[DESIGN.cu(di).kernel]["axis"]
        assert DESIGN.cu(si).stream(sp).direction == "out" and DESIGN.cu(di).stream(dp).direction == "in"
        assert si != di, "v++ rejects a stream from a compute unit to itself"
        used += [(si, sp), (di, dp)]
    every = [(u.instance, p.name) for u in DESIGN.compute_units for p in u.streams]
    assert sorted(used) == sorted(every)           # every port once, none left open


def test_cfg_sp_and_slr_cover_every_port_and_unit(cfg):
    found = kernel_interfaces()
    for line in cfg["connectivity"]["sp"]:
        port, bank = line.split(":")
        inst, name = port.split(".")
        assert name.removeprefix("m_axi_") in found[DESIGN.cu(inst).kernel]["m_axi"].values(), line
        assert DESIGN.cu(inst).port(name).memory == bank
    assert len(cfg["connectivity"]["sp"]) == sum(len(u.ports) for u in DESIGN.compute_units)
    placed = [line.split(":")[0] for line in cfg["connectivity"]["slr"]]
    assert placed == [u.instance for u in DESIGN.compute_units]


def test_tclsh_reads_the_stream_connections():
    got = tcl("source design.tcl\nputs [join [flightllm::stream_connects] \"\\n\"]\n"
              "puts [flightllm::axis mpe_0]").splitlines()
    assert got[:-1] == [s.vpp for s in DESIGN.streams]
    assert got[-1].split() == ["op", "in", "res", "out"]
