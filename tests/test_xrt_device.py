"""XrtU280 against a recording fake of pyxrt backed by the simulated U280 (probe, load, registers, buffers, timeout, Session)."""
from __future__ import annotations

import ctypes
import enum
import struct
import sys
import time
import types
from types import SimpleNamespace

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
from flightllm_overlay.sim.memory import DeviceMemory
from flightllm_overlay.sim.xclbin import build_xclbin, is_metadata_only, sim_xclbin_path
from flightllm_overlay.xrt import XrtU280
from flightllm_overlay.xrt import device as xrt_device

DESIGN = block_design()
U280 = "xilinx_u280_gen3x16_xdma_base_1"


# --- The fake pyxrt: records every call; registers and memory are a SimulatedU280's ---------------
SyncDir = enum.IntEnum("xclBOSyncDirection", ["XCL_BO_SYNC_BO_TO_DEVICE", "XCL_BO_SYNC_BO_FROM_DEVICE"],
                      start=0)
InfoKey = enum.IntEnum("xrt_info_device", ["bdf", "name"], start=0)


def make_fake_pyxrt(cards=(U280,), hang=False, with_ip=True, with_hw_context=True,
                    simulator_factory=None):
    """A module that stands in for pyxrt.  `fake.log` lists every call as a tuple; with `hang`,
    the compute units never finish (CTRL keeps AP_START, AP_DONE never comes).  Without
    `with_hw_context` it is an older pyxrt: load_xclbin, and ip(device, uuid, name) only."""
    fake = types.ModuleType("pyxrt")
    fake.__file__ = "<fake pyxrt>"
    fake.log = []
    fake.cards = [SimpleNamespace(name=name, engine=SimulatedU280(simulator_factory=simulator_factory))
                  for name in cards]                  # a card runs what is loaded on its engine
    fake.xclBOSyncDirection, fake.xrt_info_device = SyncDir, InfoKey
    log = fake.log.append
    serial = iter(range(1, 1 << 30))

    def enumerate_devices():
        log(("enumerate_devices",))
        return len(fake.cards)

    class uuid:
        def __init__(self, raw: bytes):
            self.raw = raw

        def to_string(self):
            return self.raw.hex()

    class xclbin:
        def __init__(self, path):
            log(("xclbin", str(path)))
            self.path, data = str(path), open(path, "rb").read()
            if not data.startswith(b"xclbin2"):
                raise RuntimeError("not a valid xclbin")
            self.uuid = uuid(bytes(X.axlf.from_buffer_copy(data[:ctypes.sizeof(X.axlf)]).m_header.uuid))

        def get_uuid(self):
            return self.uuid

    class device:
        def __init__(self, index):
            log(("device", index))
            if not 0 <= index < len(fake.cards):
                raise RuntimeError(f"No such device {index}")
            self.card, self.loaded = fake.cards[index], None

        def get_info(self, key):
            log(("get_info", InfoKey(key).name))
            return self.card.name if key == InfoKey.name else "0000:3b:00.1"

        def _load(self, what, xb):
            log((what, xb.uuid.to_string()))
            self.card.engine.download(SimpleNamespace(bitfile_name=xb.path, partial=False))
            self.loaded = xb
            return xb.uuid

        def register_xclbin(self, xb):
            return self._load("register_xclbin", xb)

        def load_xclbin(self, xb):
            return self._load("load_xclbin", xb)

    class hw_context:
        def __init__(self, dev, uid):
            log(("hw_context", uid.to_string()))
            self.device, self.uuid = dev, uid

    class ip:
        def __init__(self, *args):
            if len(args) != (2 if with_hw_context else 3):       # pybind11: no such overload
                raise TypeError(f"ip(): incompatible constructor arguments {args!r}")
            dev, name = (args[0].device if with_hw_context else args[0]), args[-1]
            log(("ip", name) if with_hw_context else ("ip", name, args[1].to_string()))
            self.name, self.regs, self.engine = name, {}, dev.card.engine
            d = self.engine.ip_dict.get(name.partition(":")[2])
            if d is None or d.get("cu_name") != name:
                raise RuntimeError(f"No IP matching '{name}'")
            self.base, self.size = d["phys_addr"], d["addr_range"]

        def read_register(self, offset):
            log(("ip.read", self.name, offset))
            if offset + 4 > self.size:
                raise IndexError("Cannot read or write outside kernel register space")
            if hang:
                return self.regs.get(offset, C.AP_IDLE if offset == C.CTRL else 0)
            return struct.unpack("<I", self.engine.read_registers(self.base + offset, 4))[0]

        def write_register(self, offset, value):
            log(("ip.write", self.name, offset, value))
            if hang:
                self.regs[offset] = value
            else:
                self.engine.write_registers(self.base + offset, struct.pack("<I", value))

    class bo:
        flags = enum.IntEnum("flags", {"normal": 0, "cacheable": 1, "device_only": 2})

        def __init__(self, dev, size, flags, group):
            self.id = next(serial)
            log(("bo", self.id, size, flags, group))
            if dev.loaded is None:
                raise RuntimeError("no xclbin loaded")
            self.bank = next(b for b in dev.card.engine.memory.banks.values() if b.index == group)
            self.alloc = self.bank.allocate(size)

        def map(self):
            log(("bo.map", self.id))
            return memoryview(self.alloc.host)

        def address(self):
            log(("bo.address", self.id))
            return self.alloc.address

        def sync(self, direction, size, offset):
            log(("bo.sync", self.id, SyncDir(direction).name, size, offset))
            DeviceMemory.sync(self.alloc, offset, size, direction == SyncDir.XCL_BO_SYNC_BO_TO_DEVICE)

        def __del__(self):
            log(("bo.free", self.id))
            self.bank.free(self.alloc)

    fake.enumerate_devices, fake.uuid, fake.xclbin, fake.device, fake.bo = (
        enumerate_devices, uuid, xclbin, device, bo)
    if with_hw_context:
        fake.hw_context = hw_context
    if with_ip:
        fake.ip = ip
    return fake


def calls(fake, *kinds):
    return [c for c in fake.log if c[0] in kinds]


def real_looking_xclbin(path, design=DESIGN):
    """Our xclbin with a BITSTREAM section, the real platform name and no METADATA_ONLY mark."""
    data = bytearray(build_xclbin(design))
    head = X.axlf.from_buffer(data)
    first, size = X.axlf.m_sections.offset, ctypes.sizeof(X.axlf_section_header)
    for i in range(head.m_header.m_numSections):
        sh = X.axlf_section_header.from_buffer(data, first + i * size)
        if sh.m_sectionKind == X.AXLF_SECTION_KIND.KEYVALUE_METADATA:
            sh.m_sectionKind = X.AXLF_SECTION_KIND.BITSTREAM   # its bytes stand in for an image
    del head, sh
    for name, value in (("m_platformVBNV", design.platform.encode()), ("m_debug_bin", b"")):
        field = getattr(X.axlf_header, name)
        at = X.axlf.m_header.offset + field.offset
        data[at:at + field.size] = value.ljust(field.size, b"\0")
    assert not is_metadata_only(bytes(data))
    path.write_bytes(bytes(data))
    return str(path)


@pytest.fixture
def fake(monkeypatch):
    """The fake installed as `pyxrt` for this test (probe and constructor import it)."""
    mod = make_fake_pyxrt()
    monkeypatch.setitem(sys.modules, "pyxrt", mod)
    return mod


@pytest.fixture
def xclbin(tmp_path):
    return real_looking_xclbin(tmp_path / "flightllm.xclbin")


@pytest.fixture
def card(fake, xclbin):
    """(overlay, device, fake) with the real-looking xclbin loaded through pynq's Overlay path."""
    dev = XrtU280(0, pyxrt=fake)
    return FlightLLMOverlay(xclbin, device=dev), dev, fake


# --- Probing --------------------------------------------------------------------------------------
@pytest.fixture
def fresh_device_list(monkeypatch):
    """Let pynq enumerate devices again; its cached list comes back (or goes) afterwards."""
    for name in ("_devices", "_active_device"):
        monkeypatch.setattr(Device, name, None, raising=False)
        monkeypatch.delattr(Device, name)


def test_probe_finds_only_u280_cards(monkeypatch):
    monkeypatch.delenv("FLIGHTLLM_SIMULATOR", raising=False)
    mod = make_fake_pyxrt(cards=("xilinx_u250_gen3x16_xdma_shell_4_1", U280))
    monkeypatch.setitem(sys.modules, "pyxrt", mod)
    found = XrtU280._probe_()
    assert [d.index for d in found] == [1] and found[0].name == U280
    assert found[0].has_capability("REGISTER_RW") and not found[0].is_simulated
    assert calls(mod, "device") == [("device", 0), ("device", 1)]
    monkeypatch.setenv("FLIGHTLLM_SIMULATOR", "1")
    assert XrtU280._probe_() == []


def test_probe_is_empty_without_pyxrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyxrt", None)          # import pyxrt raises ImportError
    assert XrtU280._probe_() == []
    with pytest.raises(DeviceError, match="setup.sh"):
        XrtU280(0)


def test_card_is_preferred_over_the_simulator(fake, monkeypatch, fresh_device_list):
    monkeypatch.delenv("FLIGHTLLM_SIMULATOR", raising=False)
    monkeypatch.delenv("XILINX_XRT", raising=False)
    assert DeviceMeta._subclasses[XrtU280._probe_priority_] is XrtU280
    assert XrtU280._probe_priority_ < SimulatedU280._probe_priority_
    kinds = [type(d) for d in Device.devices]
    assert XrtU280 in kinds and SimulatedU280 in kinds
    assert type(Device.active_device) is XrtU280


def test_a_card_that_is_not_a_u280_is_refused(monkeypatch):
    mod = make_fake_pyxrt(cards=("xilinx_u250_gen3x16_xdma_shell_4_1",))
    with pytest.raises(DeviceError, match="not a U280"):
        XrtU280(0, pyxrt=mod)


# --- Loading --------------------------------------------------------------------------------------
def test_overlay_loads_the_xclbin_through_xrt_and_binds_our_drivers(card, xclbin):
    ol, dev, fake = card
    assert ol.is_loaded() and not ol.is_simulated and type(ol.scheduler) is SchedulerDriver
    uid = calls(fake, "register_xclbin")[0][1]
    assert calls(fake, "xclbin", "register_xclbin", "hw_context") == [
        ("xclbin", xclbin), ("register_xclbin", uid), ("hw_context", uid)]
    assert calls(fake, "ip") == [("ip", "scheduler:scheduler")]     # opened on first use
    ol.mpe_2, ol.memctrl_1                                       # noqa: B018  binds, opens
    assert ("ip", "mpe:mpe_2") in fake.log and ("ip", "memctrl:memctrl_1") in fake.log
    assert dev.contexts.keys() >= {"scheduler", "mpe_2", "memctrl_1"}
    assert "untested" in repr(dev) and dev.name in ol.describe()


def test_the_metadata_only_file_is_refused_with_how_to_build_the_bitstream(fake):
    dev = XrtU280(0, pyxrt=fake)
    with pytest.raises(BitstreamError) as exc:
        FlightLLMOverlay(str(sim_xclbin_path()), device=dev)
    msg = str(exc.value)
    assert "METADATA-ONLY" in msg and "make -C vivado_project" in msg
    assert "flightllm_overlay/bitstreams/flightllm.xclbin" in msg and dev.target.platform in msg
    assert not calls(fake, "xclbin", "register_xclbin", "load_xclbin", "hw_context")


def test_a_pyxrt_without_ip_bindings_is_a_clear_error(monkeypatch, xclbin):
    mod = make_fake_pyxrt(with_ip=False)
    with pytest.raises(DeviceError, match="no `ip` class"):
        FlightLLMOverlay(xclbin, device=XrtU280(0, pyxrt=mod))
    assert not calls(mod, "xclbin")


def test_older_pyxrt_loads_with_load_xclbin_and_opens_ips_by_uuid(xclbin):
    mod = make_fake_pyxrt(with_hw_context=False)
    ol = FlightLLMOverlay(xclbin, device=XrtU280(0, pyxrt=mod))
    (_, uid), = calls(mod, "load_xclbin")
    assert not calls(mod, "register_xclbin", "hw_context")
    ol.scheduler.write_arg("pos", 3)
    assert calls(mod, "ip") == [("ip", "scheduler:scheduler", uid)]
    assert ol.scheduler.read_reg("pos") == 3


def test_xrt_errors_on_load_become_bitstream_errors(fake, xclbin):
    def broken(dev, uid):
        raise RuntimeError("Operation not supported (-95): Shell does not match")
    fake.hw_context = broken
    with pytest.raises(BitstreamError, match="Shell does not match.*platform "
                       "xilinx_u280_gen3x16_xdma_1_202211_1"):
        FlightLLMOverlay(xclbin, device=XrtU280(0, pyxrt=fake))


# --- Registers and buffers ------------------------------------------------------------------------
def test_register_reads_and_writes_reach_the_ip_at_their_offsets(card):
    ol, dev, fake = card
    regs = {r.name: r.offset for r in DESIGN.scheduler.registers}
    del fake.log[:]
    ol.scheduler.write_arg("pos", 7)
    ol.scheduler.write_arg("program", 0x40_0000_1000)
    assert calls(fake, "ip.write") == [
        ("ip.write", "scheduler:scheduler", regs["pos"], 7),
        ("ip.write", "scheduler:scheduler", regs["program"], 0x1000),
        ("ip.write", "scheduler:scheduler", regs["program"] + 4, 0x40)]
    assert ol.scheduler.read_reg("program") == 0x40_0000_1000
    assert calls(fake, "ip.read")[-2:] == [("ip.read", "scheduler:scheduler", regs["program"]),
                                          ("ip.read", "scheduler:scheduler", regs["program"] + 4)]
    assert ol.memctrl_2.mmio.read(C.CTRL) == C.AP_IDLE
    assert fake.log[-1] == ("ip.read", "memctrl:memctrl_2", C.CTRL)
    base, hbm1 = DESIGN.cu("memctrl_0").base_address, DESIGN.cu("memctrl_0").register("hbm1").offset
    dev.write_registers(base + hbm1, struct.pack("<2I", 0x1000, 0x2))        # several words
    assert calls(fake, "ip.write")[-2:] == [("ip.write", "memctrl:memctrl_0", hbm1, 0x1000),
                                           ("ip.write", "memctrl:memctrl_0", hbm1 + 4, 0x2)]
    assert dev.read_registers(base + hbm1, 8) == struct.pack("<2I", 0x1000, 0x2)
    with pytest.raises(DeviceError, match="no compute unit answers"):
        dev.read_registers(0x10, 4)


def test_buffers_map_to_bo_calls_with_exact_sizes_and_offsets(card):
    ol, dev, fake = card
    del fake.log[:]
    buf = pynq.allocate((100,), np.uint16, target=ol.HBM4)
    (_, bid, size, flags, group), = calls(fake, "bo")
    assert (size, flags, group) == (200, fake.bo.flags.normal, ol.mem_dict["HBM[4]"]["idx"])
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


def test_allocation_needs_a_used_bank_and_a_loaded_xclbin(card, fake):
    ol, dev, _ = card
    with pytest.raises(DeviceError, match="HBM\\[3\\] is not connected"):
        dev.allocate((4,), np.uint8, bank="HBM3")
    with pytest.raises(DeviceError, match="no xclbin is loaded"):
        XrtU280(0, pyxrt=fake).allocate_bo(ol.mem_dict["HBM[0]"], 4)


def test_reloading_with_live_buffers_is_refused(card, xclbin):
    ol, dev, fake = card
    buf = pynq.allocate((4,), np.uint8, target=ol.HBM0)
    with pytest.raises(BitstreamError, match="1 buffers are still allocated"):
        FlightLLMOverlay(xclbin, device=dev)
    buf.freebuffer()
    FlightLLMOverlay(xclbin, device=dev)


# --- Runs -----------------------------------------------------------------------------------------
def test_a_unit_that_never_sets_ap_done_times_out(monkeypatch, xclbin):
    mod = make_fake_pyxrt(hang=True)
    ol = FlightLLMOverlay(xclbin, device=XrtU280(0, pyxrt=mod))
    program = pynq.allocate((64,), np.uint32, target=ol.DDR0)
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeoutError, match="scheduler did not finish within 0.05 s"):
        ol.run(program, 0, 1, {}, timeout=0.05)
    assert time.monotonic() - t0 < 2
    assert ("ip.write", "scheduler:scheduler", C.CTRL, C.AP_START) in mod.log


def test_session_end_to_end_through_the_fake_matches_the_simulated_overlay(
        fake, xclbin, tiny_program, sim_overlay):
    ol = FlightLLMOverlay(xclbin, device=XrtU280(0, pyxrt=fake))
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
    assert "2.15" in doc and "2023.1" in doc and "xilinx_u280_gen3x16_xdma_1_202211_1" in doc
    assert "NOT met a card" in doc and xrt_device.PLATFORM == DESIGN.platform
