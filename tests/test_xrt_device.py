"""XrtU280 against fakes of pyxrt 2.15 and 2.18 and of XRT's C library, backed by the simulated U280."""
from __future__ import annotations

import ctypes
import struct
import sys
import time

import numpy as np
import pynq
import pytest
from pynq._3rdparty import xclbin as X
from pynq.pl_server.device import Device, DeviceMeta

from flightllm_overlay.errors import BitstreamError, DeviceError, DeviceTimeoutError
from flightllm_overlay.hw import control as C
from flightllm_overlay.hw.design import block_design
from flightllm_overlay.overlay import FlightLLMOverlay, SchedulerDriver
from flightllm_overlay.runtime import Session
from flightllm_overlay.sim.device import SimulatedU280
from flightllm_overlay.sim.xclbin import build_xclbin, is_metadata_only, sim_xclbin_path
from flightllm_overlay.xrt import XrtU280
from flightllm_overlay.xrt import device as xrt_device
from fake_xrt import BOUND, HEADER, U280, VERSIONS, FakeLibXrt, make_pyxrt

DESIGN = block_design()
FEATURE_PROBES = {"enumerate_devices", "hw_context"}     # what XrtU280 asks pyxrt whether it binds


# --- Fakes of pyxrt 2.15 / 2.18 and libxrt_coreutil (tests/fake_xrt.py) ---------------------------
def calls(log_owner, *kinds):
    return [c for c in log_owner.log if c[0] in kinds]


def real_looking_xclbin(path, design=DESIGN, image=True, mode=0):
    """Our xclbin with the real platform name and no METADATA_ONLY mark; with `image`, a
    BITSTREAM section; `mode` is the header's XCLBIN_MODE (0 flat, 4 hw_emu, 5 sw_emu)."""
    data = bytearray(build_xclbin(design))
    head = X.axlf.from_buffer(data)
    head.m_header.m_mode = mode
    first, size = X.axlf.m_sections.offset, ctypes.sizeof(X.axlf_section_header)
    for i in range(head.m_header.m_numSections):
        sh = X.axlf_section_header.from_buffer(data, first + i * size)
        if sh.m_sectionKind == X.AXLF_SECTION_KIND.KEYVALUE_METADATA:
            sh.m_sectionKind = (X.AXLF_SECTION_KIND.BITSTREAM if image     # stands in for an image
                                else X.AXLF_SECTION_KIND.USER_METADATA)
    del head, sh
    for name, value in (("m_platformVBNV", design.platform.encode()), ("m_debug_bin", b"")):
        field = getattr(X.axlf_header, name)
        at = X.axlf.m_header.offset + field.offset
        data[at:at + field.size] = value.ljust(field.size, b"\0")
    assert is_metadata_only(bytes(data)) is not image
    path.write_bytes(bytes(data))
    return str(path)


@pytest.fixture(params=VERSIONS)
def fake(request, monkeypatch):
    """The fake pyxrt of each XRT release, installed as `pyxrt` (probe and constructor import it)."""
    mod = make_pyxrt(request.param)
    monkeypatch.setitem(sys.modules, "pyxrt", mod)
    return mod


@pytest.fixture
def lib(fake):
    """The fake libxrt_coreutil over the fake pyxrt's cards."""
    return FakeLibXrt(fake)


@pytest.fixture
def xclbin(tmp_path):
    return real_looking_xclbin(tmp_path / "flightllm.xclbin")


@pytest.fixture
def card(fake, lib, xclbin):
    """(overlay, device, fake pyxrt, fake libxrt) with the xclbin loaded through pynq's Overlay."""
    dev = XrtU280(0, pyxrt=fake, libxrt=lib)
    return FlightLLMOverlay(xclbin, device=dev), dev, fake, lib


# --- Probing --------------------------------------------------------------------------------------
@pytest.fixture
def fresh_device_list(monkeypatch):
    """Let pynq enumerate devices again; its cached list comes back (or goes) afterwards."""
    for name in ("_devices", "_active_device"):
        monkeypatch.setattr(Device, name, None, raising=False)
        monkeypatch.delattr(Device, name)


def regs_of(lib, *kinds):
    return [r for r in lib.regs if r[0] in kinds]


def test_probe_finds_only_u280_cards(monkeypatch):
    monkeypatch.delenv("FLIGHTLLM_SIMULATOR", raising=False)
    monkeypatch.delenv("FLIGHTLLM_DEVICE", raising=False)
    for version in VERSIONS:
        mod = make_pyxrt(version, cards=("xilinx_u250_gen3x16_xdma_shell_4_1", U280))
        monkeypatch.setitem(sys.modules, "pyxrt", mod)
        found = XrtU280._probe_()
        assert [d.index for d in found] == [1] and found[0].name == U280
        assert found[0].has_capability("REGISTER_RW") and not found[0].is_simulated
        probed = calls(mod, "device", "enumerate_devices")
        if version == "2.15":          # no enumerate_devices: indices up to the first failure
            assert probed == [("device", 0), ("device", 1), ("device", 2)]
            assert "enumerate_devices" in mod.absent and set(mod.absent) <= FEATURE_PROBES
            assert "no enumerate_devices" in XrtU280.last_probe.explain()
        else:
            assert probed == [("enumerate_devices",), ("device", 0), ("device", 1)]
        assert "not a U280" in XrtU280.last_probe.explain()
    monkeypatch.setenv("FLIGHTLLM_DEVICE", "sim")
    assert XrtU280._probe_() == []


def test_probe_is_empty_without_pyxrt(monkeypatch):
    monkeypatch.delenv("FLIGHTLLM_DEVICE", raising=False)
    monkeypatch.setitem(sys.modules, "pyxrt", None)          # import pyxrt raises ImportError
    assert XrtU280._probe_() == []
    assert "import pyxrt failed" in XrtU280.last_probe.explain()
    with pytest.raises(DeviceError, match="setup.sh"):
        XrtU280(0)


def test_card_is_preferred_over_the_simulator(fake, monkeypatch, fresh_device_list):
    monkeypatch.delenv("FLIGHTLLM_SIMULATOR", raising=False)
    monkeypatch.delenv("FLIGHTLLM_DEVICE", raising=False)
    monkeypatch.delenv("XILINX_XRT", raising=False)
    assert DeviceMeta._subclasses[XrtU280._probe_priority_] is XrtU280
    assert XrtU280._probe_priority_ < SimulatedU280._probe_priority_
    kinds = [type(d) for d in Device.devices]
    assert XrtU280 in kinds and SimulatedU280 in kinds
    assert type(Device.active_device) is XrtU280


def test_a_card_that_is_not_a_u280_is_refused():
    mod = make_pyxrt("2.15", cards=("xilinx_u250_gen3x16_xdma_shell_4_1",))
    with pytest.raises(DeviceError, match="not a U280"):
        XrtU280(0, pyxrt=mod)


# --- The fakes are the real bindings ---------------------------------------------------------------
def test_the_fakes_refuse_what_xrt_does_not_bind():
    old, new = make_pyxrt("2.15"), make_pyxrt("2.18")
    assert not hasattr(old, "enumerate_devices") and not hasattr(old, "hw_context")
    assert hasattr(new, "enumerate_devices") and hasattr(new, "hw_context")
    for mod in (old, new):
        assert not hasattr(mod, "ip") and not hasattr(mod.kernel, "read_register")
        dev = mod.device(0)
        with pytest.raises(TypeError, match="incompatible function arguments"):
            mod.bo(dev, 16, 0, 1)                            # flags must be the enum
        with pytest.raises(AttributeError):
            dev.cards = 3                                     # pybind11 objects take no attributes
    with pytest.raises(TypeError):
        mod.device(0).get_info(5)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_fakes_offer_nothing_beyond_the_real_bindings(version):
    mod, bound = make_pyxrt(version), BOUND[version]
    bookkeeping = {"version", "log", "absent", "cards"}
    public = {n for n in vars(mod) if not n.startswith("_")} - bookkeeping
    assert public <= bound["module"], public - bound["module"]
    for cls in ("device", "bo", "xclbin", "uuid", "kernel"):
        methods = {n for n, v in vars(getattr(mod, cls)).items()
                   if callable(v) and not n.startswith("_") and not isinstance(v, type)}
        assert methods <= bound[cls], (cls, methods - bound[cls])
    assert set(vars(FakeLibXrt(mod))) & set(HEADER) == set(HEADER)


def test_the_host_makes_no_call_outside_the_real_bindings(card, tiny_program, xclbin):
    """A whole session through each fake: every call made is one the release binds."""
    ol, dev, fake, lib = card
    with Session(ol, tiny_program) as s:
        s.run("prefill", [5, 17, 42, 3], 0)
        s.run("decode", [11], 4)
    bound = BOUND[fake.version]
    for entry in fake.log:
        name = entry[0]
        if name == "bo.free":                                    # the bo's destructor, not a call
            continue
        owner, _, method = name.partition(".")
        assert (method in bound[owner]) if method else (name in bound["module"]), name
    # the only names looked up and not found are the feature probes (absent from 2.15 alone)
    assert set(fake.absent) <= (FEATURE_PROBES if fake.version == "2.15" else set()), fake.absent
    assert {c[0] for c in lib.log} <= set(HEADER)
    assert not calls(fake, "kernel", "hw_context", "device.register_xclbin")


# --- Loading --------------------------------------------------------------------------------------
def test_overlay_loads_the_xclbin_through_xrt_and_binds_our_drivers(card, xclbin):
    ol, dev, fake, lib = card
    assert ol.is_loaded() and not ol.is_simulated and type(ol.scheduler) is SchedulerDriver
    (_, uid), = calls(fake, "device.load_xclbin")
    assert calls(fake, "xclbin", "device.load_xclbin") == [("xclbin", xclbin),
                                                           ("device.load_xclbin", uid)]
    assert calls(lib, "xrtDeviceOpen")[0][1] == 0
    opened = calls(lib, "xrtPLKernelOpenExclusive")
    assert opened[0][2:] == (uid, "scheduler:{scheduler}")
    assert regs_of(lib, "open")[0] == ("open", "scheduler:scheduler", True)
    ol.mpe_2, ol.memctrl_1                                       # noqa: B018  binds, opens
    names = [o[3] for o in calls(lib, "xrtPLKernelOpenExclusive")]
    assert "mpe:{mpe_2}" in names and "memctrl:{memctrl_1}" in names
    assert len(names) == len(set(names))                        # each CU opened once
    assert dev.contexts.keys() >= {"scheduler", "mpe_2", "memctrl_1"}
    assert "untested" in repr(dev) and dev.name in ol.describe()


def test_the_metadata_only_file_is_refused_with_how_to_build_the_bitstream(fake, lib):
    dev = XrtU280(0, pyxrt=fake, libxrt=lib)
    with pytest.raises(BitstreamError) as exc:
        FlightLLMOverlay(str(sim_xclbin_path()), device=dev)
    msg = str(exc.value)
    assert "METADATA-ONLY" in msg and "make -C vivado_project" in msg
    assert "flightllm_overlay/bitstreams/flightllm.xclbin" in msg and dev.target.platform in msg
    assert not calls(fake, "xclbin", "device.load_xclbin")


def test_an_emulation_build_loads_and_an_imageless_flat_build_is_refused(fake, lib, tmp_path):
    for mode in (4, 5):                                           # hw_emu, sw_emu: no BITSTREAM
        emu = real_looking_xclbin(tmp_path / f"emu{mode}.xclbin", image=False, mode=mode)
        ol = FlightLLMOverlay(emu, device=XrtU280(0, pyxrt=fake, libxrt=lib))
        ol.scheduler.write_arg("pos", 5)
        assert ol.scheduler.read_reg("pos") == 5
        ol.device.close()
    flat = real_looking_xclbin(tmp_path / "flat.xclbin", image=False, mode=0)
    with pytest.raises(BitstreamError, match="no configuration image.*not an emulation build"):
        FlightLLMOverlay(flat, device=XrtU280(0, pyxrt=fake, libxrt=lib))


def with_free_running(path, cu_name):
    """Rewrite an xclbin so that `cu_name` is ap_ctrl_none in its IP_LAYOUT (xclbin.h)."""
    data = bytearray(open(path, "rb").read())
    head = X.axlf.from_buffer_copy(data)
    first, size = X.axlf.m_sections.offset, ctypes.sizeof(X.axlf_section_header)
    for i in range(head.m_header.m_numSections):
        sh = X.axlf_section_header.from_buffer_copy(data, first + i * size)
        if sh.m_sectionKind == X.AXLF_SECTION_KIND.IP_LAYOUT:
            at = sh.m_sectionOffset + X.ip_layout.m_ip_data.offset
            for k in range(ctypes.c_int32.from_buffer_copy(data, sh.m_sectionOffset).value):
                ip = X.ip_data.from_buffer(data, at + k * ctypes.sizeof(X.ip_data))
                if bytes(ip.m_name).rstrip(b"\0") == cu_name.encode():
                    ip.properties = 2 << 8                       # AP_CTRL_NONE << IP_CONTROL_SHIFT
                del ip
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path


def test_a_free_running_unit_is_named_before_xrt_is_asked(fake, lib, xclbin):
    ol = FlightLLMOverlay(with_free_running(xclbin, "mpe:mpe_0"), device=XrtU280(0, pyxrt=fake,
                                                                                 libxrt=lib))
    ol.scheduler.write_arg("pos", 1)                             # the others are unaffected
    with pytest.raises(DeviceError, match="mpe:mpe_0 is ap_ctrl_none.*xrt::ip"):
        ol.mpe_0.mmio.read(C.CTRL)
    assert "mpe:{mpe_0}" not in [c[3] for c in calls(lib, "xrtPLKernelOpenExclusive")]


def test_a_missing_c_library_is_a_clear_error_before_the_card_is_touched(fake, xclbin):
    class NoSymbols:
        _name = "libxrt_coreutil.so.2"
    with pytest.raises(DeviceError, match="has no xrtDeviceOpen"):
        FlightLLMOverlay(xclbin, device=XrtU280(0, pyxrt=fake, libxrt=NoSymbols()))
    assert not calls(fake, "xclbin", "device.load_xclbin")


def test_a_compute_unit_held_by_another_process_is_a_clear_error(fake, lib, xclbin):
    first = FlightLLMOverlay(xclbin, device=XrtU280(0, pyxrt=fake, libxrt=lib))
    first.scheduler.mmio.read(C.CTRL)                         # opens the scheduler, exclusively
    second = FlightLLMOverlay(xclbin, device=XrtU280(0, pyxrt=fake, libxrt=lib))
    with pytest.raises(DeviceError, match=r"xrtPLKernelOpenExclusive\('scheduler:\{scheduler\}'\)"
                       r" failed \(errno 16.*stop other programs using the card"):
        second.scheduler.mmio.read(C.CTRL)


def test_xrt_errors_on_load_become_bitstream_errors(fake, lib, xclbin):
    def broken(self, xb):
        raise RuntimeError("Operation not supported (-95): Shell does not match")
    fake.device.load_xclbin = broken
    with pytest.raises(BitstreamError, match="Shell does not match.*platform "
                       "xilinx_u280_gen3x16_xdma_1_202211_1"):
        FlightLLMOverlay(xclbin, device=XrtU280(0, pyxrt=fake, libxrt=lib))


# --- Registers and buffers ------------------------------------------------------------------------
def test_register_reads_and_writes_reach_the_cu_at_their_offsets(card):
    ol, dev, fake, lib = card
    regs = {r.name: r.offset for r in DESIGN.scheduler.registers}
    del lib.regs[:]
    ol.scheduler.write_arg("pos", 7)
    ol.scheduler.write_arg("program", 0x40_0000_1000)
    assert regs_of(lib, "write") == [
        ("write", "scheduler:scheduler", regs["pos"], 7),
        ("write", "scheduler:scheduler", regs["program"], 0x1000),
        ("write", "scheduler:scheduler", regs["program"] + 4, 0x40)]
    assert ol.scheduler.read_reg("program") == 0x40_0000_1000
    assert regs_of(lib, "read")[-2:] == [("read", "scheduler:scheduler", regs["program"]),
                                         ("read", "scheduler:scheduler", regs["program"] + 4)]
    assert ol.memctrl_2.mmio.read(C.CTRL) == C.AP_IDLE
    assert lib.regs[-1] == ("read", "memctrl:memctrl_2", C.CTRL)
    base, hbm1 = DESIGN.cu("memctrl_0").base_address, DESIGN.cu("memctrl_0").register("hbm1").offset
    dev.write_registers(base + hbm1, struct.pack("<2I", 0x1000, 0x2))        # several words
    assert regs_of(lib, "write")[-2:] == [("write", "memctrl:memctrl_0", hbm1, 0x1000),
                                          ("write", "memctrl:memctrl_0", hbm1 + 4, 0x2)]
    assert dev.read_registers(base + hbm1, 8) == struct.pack("<2I", 0x1000, 0x2)
    with pytest.raises(DeviceError, match="no compute unit answers"):
        dev.read_registers(0x10, 4)


def test_a_failing_register_read_names_the_cu_and_errno(card):
    ol, dev, fake, lib = card
    assert ol.scheduler.mmio.read(C.CTRL) == C.AP_IDLE
    lib.kernels.clear()                                      # XRT lost every kernel handle
    with pytest.raises(DeviceError, match=r"scheduler:scheduler: XRT xrtKernelReadRegister"
                       r"\(offset 0x0\) failed \(errno 22.*reload the overlay"):
        ol.scheduler.mmio.read(C.CTRL)


def test_buffers_map_to_bo_calls_with_exact_sizes_and_offsets(card):
    ol, dev, fake, lib = card
    del fake.log[:]
    buf = pynq.allocate((100,), np.uint16, target=ol.HBM4)
    (_, bid, size, flags, group), = calls(fake, "bo")
    assert (size, flags, group) == (200, "normal", ol.mem_dict["HBM[4]"]["idx"])
    assert calls(fake, "bo.map", "bo.address") == [("bo.map", bid), ("bo.address", bid)]
    assert buf.device_address == DESIGN.memory("HBM[4]").base_address
    buf[:] = np.arange(100)
    buf[10:20].sync_to_device()
    buf.sync_to_device()
    buf[5:7].sync_from_device()
    assert calls(fake, "bo.sync") == [("bo.sync", bid, "XCL_BO_SYNC_BO_TO_DEVICE", 20, 20),
                                      ("bo.sync", bid, "XCL_BO_SYNC_BO_TO_DEVICE", 200, 0),
                                      ("bo.sync", bid, "XCL_BO_SYNC_BO_FROM_DEVICE", 4, 10)]
    assert ol.HBM4.num_buffers == 1 and ol.HBM4.mem_used == 200
    buf.freebuffer()
    buf.freebuffer()                                             # twice: harmless
    assert calls(fake, "bo.free") == [("bo.free", bid)] and ol.HBM4.num_buffers == 0
    with pytest.raises(DeviceError, match="was freed"):
        buf.sync_to_device()


def test_allocation_needs_a_used_bank_and_a_loaded_xclbin(card):
    ol, dev, fake, lib = card
    with pytest.raises(DeviceError, match="HBM\\[3\\] is not connected"):
        dev.allocate((4,), np.uint8, bank="HBM3")
    with pytest.raises(DeviceError, match="no xclbin is loaded"):
        XrtU280(0, pyxrt=fake, libxrt=lib).allocate_device(ol.mem_dict["HBM[0]"], 4)


def test_reloading_with_live_buffers_is_refused(card, xclbin):
    ol, dev, fake, lib = card
    ol.scheduler.write_arg("pos", 1)                             # opens the scheduler
    buf = pynq.allocate((4,), np.uint8, target=ol.HBM0)
    with pytest.raises(BitstreamError, match="1 buffers are still allocated"):
        FlightLLMOverlay(xclbin, device=dev)
    buf.freebuffer()
    again = FlightLLMOverlay(xclbin, device=dev)                  # closes and reopens its CUs
    assert len(calls(lib, "xrtKernelClose")) == 1 and not lib.kernels
    assert again.scheduler.read_reg("pos") == 0                  # reopened; the load reset it


def test_close_gives_the_compute_units_back(card, xclbin):
    ol, dev, fake, lib = card
    ol.scheduler.write_arg("pos", 2)
    dev.close()
    assert not lib.kernels and not lib.exclusive and not lib.devices
    with pytest.raises(DeviceError, match="no xclbin is loaded"):
        dev.read_registers(DESIGN.scheduler.base_address, 4)
    other = FlightLLMOverlay(xclbin, device=XrtU280(0, pyxrt=fake, libxrt=lib))
    assert other.scheduler.read_reg("pos") == 0                  # another user can open them


# --- Runs -----------------------------------------------------------------------------------------
def test_a_unit_that_never_sets_ap_done_times_out(fake, xclbin):
    lib = FakeLibXrt(fake, hang=True)
    ol = FlightLLMOverlay(xclbin, device=XrtU280(0, pyxrt=fake, libxrt=lib))
    program = pynq.allocate((64,), np.uint32, target=ol.DDR0)
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeoutError, match="scheduler did not finish within 0.05 s"):
        ol.run(program, 0, 1, {}, timeout=0.05)
    assert time.monotonic() - t0 < 2
    assert ("write", "scheduler:scheduler", C.CTRL, C.AP_START) in lib.regs


def test_session_end_to_end_through_the_fake_matches_the_simulated_overlay(
        fake, lib, xclbin, tiny_program, sim_overlay):
    ol = FlightLLMOverlay(xclbin, device=XrtU280(0, pyxrt=fake, libxrt=lib))
    prompt = [5, 17, 42, 3]
    with Session(ol, tiny_program) as card_s, Session(sim_overlay, tiny_program) as sim_s:
        assert np.array_equal(card_s.run("prefill", prompt, 0), sim_s.run("prefill", prompt, 0))
        assert np.array_equal(card_s.run("decode", [11], 4), sim_s.run("decode", [11], 4))
        assert card_s.stats.instructions == sim_s.stats.instructions > 0
    syncs = calls(fake, "bo.sync")
    assert any(s[2] == "XCL_BO_SYNC_BO_FROM_DEVICE" and s[4] > 0 for s in syncs), \
        "logits are read back as a partial range"
    assert len(calls(fake, "bo.free")) == len(calls(fake, "bo"))


def test_device_module_names_the_targets_and_its_status():
    doc = xrt_device.__doc__
    assert "2.15" in doc and "2023.1" in doc and "2.18" in doc
    assert "xilinx_u280_gen3x16_xdma_1_202211_1" in doc
    assert "NOT met a card" in doc and xrt_device.PLATFORM == DESIGN.platform
