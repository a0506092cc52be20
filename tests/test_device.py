"""The simulated U280 as a pynq Device: probing, memory semantics, register files, runs and errors."""
from __future__ import annotations

import ctypes
import gc

import numpy as np
import pytest
from pynq import MMIO, Overlay
from pynq._3rdparty import xclbin as X
from pynq.pl_server.device import Device, DeviceMeta

from flightllm_overlay.errors import (AddressError, BitstreamError, DeviceError,
                                      IllegalInstructionError, ProgramError)
from flightllm_overlay.hw import control as C
from flightllm_overlay.hw.design import block_design
from flightllm_overlay.sim import device as sim_device
from flightllm_overlay.sim.device import SimulatedU280
from flightllm_overlay.sim.xclbin import section_kinds, write_xclbin
from test_device_fakes import SMALL_CHANNEL, make_device, xclbin_file  # noqa: F401

DESIGN = block_design()


@pytest.fixture
def load(tmp_path):
    """Factory: a fake-simulator device with its design loaded through pynq's Overlay path.

    With `program`, a program buffer is allocated in DDR[0] and the scheduler points at it.
    """
    def _load(action=None, small=False, program=True):
        dev = make_device(action, small)
        Overlay(str(write_xclbin(tmp_path / f"{dev.name}_{small}.xclbin", dev.design)), device=dev)
        if program:
            buf = dev.allocate((16,), np.uint32, bank="DDR[0]")
            off = regs(dev, "scheduler")["program"]
            mmio(dev, "scheduler").write(off, buf.device_address & 0xFFFFFFFF)
            mmio(dev, "scheduler").write(off + 4, buf.device_address >> 32)
            dev.program_buffer = buf
        return dev
    return _load


def mmio(dev, cu):
    return MMIO(DESIGN.cu(cu).base_address, 0x10000, device=dev)


def regs(dev, cu):
    return {r.name: r.offset for r in DESIGN.cu(cu).registers}


def start_units(dev, skip=()):
    for c in range(DESIGN.cores):
        for unit in DESIGN.units(c):
            if unit.instance not in skip:
                mmio(dev, unit.instance).write(C.CTRL, C.AP_START)


# ---------------------------------------------------------------------------------------------
# Device model
# ---------------------------------------------------------------------------------------------
def test_registered_with_pynq_and_probed(monkeypatch):
    assert DeviceMeta._subclasses[SimulatedU280._probe_priority_] is SimulatedU280
    monkeypatch.delenv("FLIGHTLLM_SIMULATOR", raising=False)
    monkeypatch.delenv("XILINX_XRT", raising=False)
    found = SimulatedU280._probe_()
    assert len(found) == 1 and isinstance(found[0], Device)
    assert found[0].name == "xilinx_u280_sim" and found[0].has_capability("REGISTER_RW")
    monkeypatch.setenv("FLIGHTLLM_SIMULATOR", "0")
    assert SimulatedU280._probe_() == []


def test_probe_steps_aside_for_a_real_card(monkeypatch):
    monkeypatch.delenv("FLIGHTLLM_SIMULATOR", raising=False)
    monkeypatch.setattr(sim_device, "_real_card_present", lambda: True)
    assert SimulatedU280._probe_() == []
    monkeypatch.setenv("FLIGHTLLM_SIMULATOR", "1")
    assert len(SimulatedU280._probe_()) == 1


def test_default_simulator_is_the_functional_one():
    assert SimulatedU280().simulator_factory is sim_device._default_simulator_factory


def test_registers_need_a_loaded_design():
    with pytest.raises(DeviceError, match="no design is loaded"):
        SimulatedU280().read_registers(DESIGN.scheduler.base_address, 4)


def test_refuses_files_that_are_not_xclbins(tmp_path):
    bit = tmp_path / "design.bit"
    bit.write_bytes(b"\x00\x09\x0f\xf0" * 64)
    with pytest.raises(BitstreamError, match="xclbin"):
        Overlay(str(bit), device=SimulatedU280())


def test_refuses_an_xclbin_whose_registers_differ_from_the_design(tmp_path, xclbin_file):
    data = xclbin_file.read_bytes()
    bad = data.replace(b'name="pos" addressQualifier="0" id="1" port="s_axi_control" size="0x4" '
                       b'offset="0x1C"', b'name="pos" addressQualifier="0" id="1" '
                       b'port="s_axi_control" size="0x4" offset="0x20"')
    assert bad != data and len(bad) == len(data)
    path = tmp_path / "other.xclbin"
    path.write_bytes(bad)
    with pytest.raises(BitstreamError, match="scheduler.pos"):
        Overlay(str(path), device=make_device())


def test_an_xclbin_with_a_bitstream_is_read_for_its_metadata(tmp_path, xclbin_file):
    data = bytearray(xclbin_file.read_bytes())
    kinds = section_kinds(bytes(data))
    index = kinds.index(X.AXLF_SECTION_KIND.KEYVALUE_METADATA)      # stand-in for a real image
    at = X.axlf.m_sections.offset + index * ctypes.sizeof(X.axlf_section_header)
    ctypes.c_uint32.from_buffer(data, at).value = X.AXLF_SECTION_KIND.BITSTREAM
    path = tmp_path / "real.xclbin"
    path.write_bytes(bytes(data))
    dev = make_device()
    ol = Overlay(str(path), device=dev)
    assert dev.loaded_metadata_only is False and "scheduler" in ol.ip_dict
    assert mmio(dev, "scheduler").read(C.CTRL) == C.AP_IDLE


def test_refuses_an_xclbin_with_another_memory_map(xclbin_file):
    with pytest.raises(BitstreamError, match=r"HBM\[0\] .* 268435456 bytes in this xclbin"):
        Overlay(str(xclbin_file), device=make_device(small=True))


# ---------------------------------------------------------------------------------------------
# Memory: host and device copies, versions, views, capacity, freeing
# ---------------------------------------------------------------------------------------------
def test_host_and_device_copies_are_separate(load):
    dev = load()
    buf = dev.allocate((8,), np.int32, bank="HBM4")
    assert buf.device_address == DESIGN.memory("HBM[4]").base_address
    view = dev.memory.view(buf.device_address, buf.nbytes)
    buf[:] = np.arange(8)
    assert not view.any(), "host writes must not reach the device before sync_to_device"
    v0 = dev.memory.version(buf.device_address)
    buf.sync_to_device()
    assert (view.view(np.int32) == np.arange(8)).all()
    v1 = dev.memory.version(buf.device_address + 4)
    assert v1 != v0
    view.view(np.int32)[:] = 100                     # the accelerator writes the device copy
    dev.memory.touch(buf.device_address)
    assert dev.memory.version(buf.device_address) not in (v0, v1)
    assert (buf == np.arange(8)).all(), "device writes must not reach the host before a sync"
    buf.sync_from_device()
    assert (buf == 100).all()


def test_partial_sync_of_a_slice(load):
    dev = load()
    buf = dev.allocate((16,), np.uint8, bank="HBM[0]")
    buf[:] = 1
    buf[4:8].sync_to_device()
    assert list(dev.memory.view(buf.device_address, 16)) == [0] * 4 + [1] * 4 + [0] * 8
    with pytest.raises(DeviceError, match="not a computed copy|outside"):
        (buf + 1).sync_to_device()


def test_view_is_zero_copy_and_writable(load):
    dev = load()
    buf = dev.allocate((64,), np.uint8, bank="HBM[1]")
    dev.memory.view(buf.device_address + 8, 4)[:] = 9
    assert list(dev.memory.view(buf.device_address + 6, 6)) == [0, 0, 9, 9, 9, 9]
    assert dev.memory.view(buf.device_address, 1).flags.writeable


def test_address_errors_name_address_and_nearest_buffer(load):
    dev = load()
    buf = dev.allocate((100,), np.uint8, bank="HBM[5]")
    with pytest.raises(AddressError, match=r"0x50000060.*past the end of buffer 0x50000000"):
        dev.memory.view(buf.device_address + 96, 8)
    with pytest.raises(AddressError, match=r"nearest is buffer 0x50000000.*HBM\[5\]"):
        dev.memory.view(buf.device_address + 8192, 4)
    with pytest.raises(AddressError, match=r"HBM\[6\], where no buffer is allocated"):
        dev.memory.version(DESIGN.memory("HBM[6]").base_address)
    with pytest.raises(AddressError, match="in no memory bank"):
        dev.memory.view(0x30_0000_0000, 4)


def test_bank_capacity_is_enforced_and_freeing_is_safe(load):
    dev = load(small=True)
    bank = dev.get_memory_by_name("HBM[8]")
    with pytest.raises(DeviceError, match=r"cannot allocate 2\.0 MiB .* in HBM\[8\]: the bank "
                                          r"holds 1\.0 MiB"):
        bank.allocate((2 << 20,), np.uint8)
    a = bank.allocate((SMALL_CHANNEL // 2,), np.uint8)
    b = bank.allocate((SMALL_CHANNEL // 2,), np.uint8)
    with pytest.raises(DeviceError, match=r"HBM\[8\].*1\.0 MiB .* are allocated in 2 buffers"):
        bank.allocate((1,), np.uint8)
    a.freebuffer()
    a.freebuffer()                                  # twice: harmless
    with bank.allocate((SMALL_CHANNEL // 2,), np.uint8) as c:
        assert c.device_address == dev.design.memory("HBM[8]").base_address == 8 * SMALL_CHANNEL
    assert bank.num_buffers == 1
    view_of_b = b[10:20]
    del b
    gc.collect()
    assert bank.num_buffers == 1, "a live view keeps its buffer allocated"
    del view_of_b
    gc.collect()
    assert bank.num_buffers == 0 and bank.mem_used == 0


def test_missing_and_unused_banks(load):
    dev = load()
    with pytest.raises(DeviceError, match=r"no memory bank 'HBM\[40\]'"):
        dev.allocate(16, bank="HBM[40]")
    with pytest.raises(DeviceError, match=r"HBM\[3\] is not connected to any compute unit"):
        dev.allocate(16, bank="HBM[3]")
    with pytest.raises(DeviceError, match="target=ol.HBM0"):
        dev.allocate(16)


# ---------------------------------------------------------------------------------------------
# Register files and the run
# ---------------------------------------------------------------------------------------------
def test_ctrl_semantics(load):
    dev = load()
    mpe = mmio(dev, "mpe_0")
    assert mpe.read(C.CTRL) == C.AP_IDLE
    mpe.write(C.CTRL, C.AP_START)
    assert mpe.read(C.CTRL) == C.AP_START            # running: waits for the scheduler
    mpe.write(regs(dev, "mpe_0")["macs_lo"], 5)       # read-only: ignored
    assert mpe.read(regs(dev, "mpe_0")["macs_lo"]) == 0
    mpe.write(C.IER, 1)
    mpe.write(C.ISR, 1)
    assert mpe.read(C.ISR) == 1
    mpe.write(C.ISR, 1)                                # toggle on write
    assert mpe.read(C.ISR) == 0


def test_run_passes_pointers_and_parameters_and_sets_counters(load):
    dev = load(program=False)
    prog = dev.allocate((16,), np.uint32, bank="DDR[0]")
    ch13 = dev.allocate((16,), np.uint8, bank="HBM[13]")
    sched, mem1 = mmio(dev, "scheduler"), mmio(dev, "memctrl_1")
    sregs = regs(dev, "scheduler")
    mem1.write(regs(dev, "memctrl_1")["hbm3"], ch13.device_address & 0xFFFFFFFF)
    mem1.write(regs(dev, "memctrl_1")["hbm3"] + 4, ch13.device_address >> 32)
    sched.write(sregs["program"], prog.device_address & 0xFFFFFFFF)
    sched.write(sregs["program"] + 4, prog.device_address >> 32)
    sched.write(sregs["pos"], 17)
    sched.write(sregs["len"], 16)
    start_units(dev)
    sched.write(C.CTRL, C.AP_START)
    call = dev.fake["sim"].calls[0]
    assert call.program_addr == prog.device_address == 0x40_0000_0000
    assert call.params == {"pos": 17, "len": 16}
    assert call.channel_base == {0: 0, 13: ch13.device_address}   # 0 is inside HBM[0] only
    assert sched.read(C.CTRL) == C.AP_DONE | C.AP_IDLE | C.AP_READY
    assert sched.read(C.CTRL) == C.AP_IDLE                        # done clears on read
    assert sched.read(sregs["status"]) == C.SchedulerStatus.DONE
    assert sched.read(sregs["cycles_lo"]) == 5 and sched.read(sregs["cycles_hi"]) == 7
    assert sched.read(sregs["insns_lo"]) == sum(10 * c + i + 1 for c in range(3) for i in range(6))
    mpe2 = mmio(dev, "mpe_2")
    assert mpe2.read(regs(dev, "mpe_2")["insns_lo"]) == (20 + 3) + (20 + 4)   # MM + MV
    assert mpe2.read(regs(dev, "mpe_2")["macs_hi"]) == 2
    assert mpe2.read(regs(dev, "mpe_2")["macs_lo"]) == 2
    assert mpe2.read(regs(dev, "mpe_2")["fixed_macs_hi"]) == 6
    assert mmio(dev, "misc_1").read(regs(dev, "misc_1")["elements_lo"]) == 1001
    m1 = regs(dev, "memctrl_1")
    assert mem1.read(m1["bytes_read_lo"]) == sum(64 * (ch + 1) for ch in DESIGN.core_channels[1])
    assert mem1.read(m1["bytes_written_lo"]) == 32 * 8


def test_scheduler_stalls_until_every_unit_started_and_soft_reset_clears(load):
    dev = load()
    sched, sregs = mmio(dev, "scheduler"), regs(dev, "scheduler")
    start_units(dev, skip=("misc_1",))
    sched.write(C.CTRL, C.AP_START)
    for _ in range(3):
        assert sched.read(C.CTRL) == C.AP_START
    assert sched.read(sregs["status"]) == C.SchedulerStatus.STALLED
    assert sched.read(sregs["error_code"]) == C.ErrorCode.UNIT_NOT_STARTED
    assert sched.read(sregs["error_core"]) == 1
    assert "sim" not in dev.fake
    sched.write(sregs["soft_reset"], 1)
    assert sched.read(C.CTRL) == C.AP_IDLE and sched.read(sregs["status"]) == C.SchedulerStatus.IDLE
    assert mmio(dev, "mpe_0").read(C.CTRL) == C.AP_IDLE
    assert sched.read(sregs["soft_reset"]) == 0
    start_units(dev, skip=("mpe_0",))                 # hardware-like: the run starts as soon
    sched.write(C.CTRL, C.AP_START)                   # as the last unit is started
    assert sched.read(C.CTRL) == C.AP_START
    mmio(dev, "mpe_0").write(C.CTRL, C.AP_START)
    assert sched.read(C.CTRL) & C.AP_DONE
    assert len(dev.fake["sim"].calls) == 1


@pytest.mark.parametrize("exc, code", [(IllegalInstructionError("bad opcode 0x3f"), 1),
                                       (AddressError("LD beyond buffer"), 2),
                                       (ProgramError("unconsumed token"), 3)])
def test_simulator_errors_become_status_and_the_device_stays_usable(load, exc, code):
    exc.core, exc.pc = 2, 41
    state = {"fail": True}

    def action(*_):
        if state.pop("fail", False):
            raise exc

    dev = load(action)
    sched, sregs = mmio(dev, "scheduler"), regs(dev, "scheduler")
    start_units(dev)
    sched.write(C.CTRL, C.AP_START)
    assert sched.read(C.CTRL) & C.AP_DONE
    assert sched.read(sregs["status"]) == C.SchedulerStatus.ERROR
    assert [sched.read(sregs[n]) for n in ("error_code", "error_core", "error_pc")] == [code, 2, 41]
    assert str(exc) in dev.last_error("scheduler")
    assert mmio(dev, "memctrl_0").read(C.CTRL) & C.AP_DONE
    start_units(dev)                                   # next run, no reset needed
    sched.write(C.CTRL, C.AP_START)
    assert sched.read(sregs["status"]) == C.SchedulerStatus.DONE
    assert sched.read(sregs["error_code"]) == 0 and dev.last_error() is None


def test_simulator_bugs_are_reraised_but_recorded(load):
    def action(*_):
        raise ZeroDivisionError("bug")

    dev = load(action)
    sched, sregs = mmio(dev, "scheduler"), regs(dev, "scheduler")
    start_units(dev)
    with pytest.raises(ZeroDivisionError):
        sched.write(C.CTRL, C.AP_START)
    assert sched.read(sregs["status"]) == C.SchedulerStatus.ERROR
    assert sched.read(sregs["error_code"]) == C.ErrorCode.INTERNAL
    assert sched.read(sregs["error_core"]) == C.UNKNOWN


def test_pointer_in_the_wrong_bank_is_an_address_error(load):
    dev = load()
    wrong = dev.allocate((16,), np.uint8, bank="HBM[5]")        # core 1's channel
    m0 = regs(dev, "memctrl_0")
    mmio(dev, "memctrl_0").write(m0["hbm1"], wrong.device_address)  # port 1 of core 0: HBM[4]
    start_units(dev)
    sched = mmio(dev, "scheduler")
    sched.write(C.CTRL, C.AP_START)
    assert sched.read(regs(dev, "scheduler")["error_code"]) == C.ErrorCode.ADDRESS
    assert sched.read(regs(dev, "scheduler")["error_core"]) == 0
    msg = dev.last_error()
    assert "memctrl_0.hbm1 = 0x50000000 lies in HBM[5]" in msg and "wired to HBM[4]" in msg
    assert "sim" not in dev.fake or not dev.fake["sim"].calls


def test_register_log_records_every_transaction(load):
    dev = load()
    dev.register_log.clear()
    m = mmio(dev, "misc_0")
    m.write(C.IER, 3)
    m.read(C.CTRL)
    assert [(a.op, a.cu, a.name, a.value) for a in dev.register_log] == \
        [("W", "misc_0", "IER", 3), ("R", "misc_0", "CTRL", C.AP_IDLE)]


def test_versions_are_per_page_so_kv_writes_keep_weight_caches(load):
    """The simulator caches what it derives from weights by version; writes to another page of
    the same buffer (the KV cache) must not change the weights' version, writes to it must."""
    from flightllm_overlay.sim.memory import PAGE
    dev = load(program=False)
    buf = dev.allocate((3 * PAGE,), np.uint8, bank="HBM[0]")
    base, mem = buf.device_address, dev.memory
    weights = mem.version(base, PAGE)
    mem.touch(base + 2 * PAGE + 10, 64)                  # the simulator writes the KV page
    buf[2 * PAGE:2 * PAGE + 8] = 1
    buf[2 * PAGE:2 * PAGE + 8].sync_to_device()          # the host syncs an I/O slice there
    assert mem.version(base, PAGE) == weights
    assert mem.version(base, 3 * PAGE) != weights        # a range spanning the page sees it
    buf[5] = 7
    buf[0:16].sync_to_device()
    assert mem.version(base, PAGE) != weights
