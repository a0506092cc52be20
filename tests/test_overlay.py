"""FlightLLMOverlay and its drivers on the simulated U280: binding, register sequences, errors, timeouts."""
from __future__ import annotations

import time

import numpy as np
import pynq
import pytest
from pynq.overlay import DefaultIP, _ip_drivers

from flightllm_overlay import overlay as ovl
from flightllm_overlay.errors import (AddressError, BitstreamError, DeviceError,
                                      DeviceTimeoutError, IllegalInstructionError, ProgramError)
from flightllm_overlay.hw import control as C
from flightllm_overlay.hw.design import block_design
from flightllm_overlay.overlay import (FlightLLMOverlay, MemoryControllerDriver, MISCDriver,
                                       MPEDriver, SchedulerDriver)
from flightllm_overlay.sim.xclbin import sim_xclbin_path
from test_device_fakes import fake_counters, make_device

DESIGN = block_design()


@pytest.fixture
def driver_registry():
    """Restore pynq's process-wide driver registry after a test that registers drivers."""
    saved = dict(_ip_drivers)
    yield
    _ip_drivers.clear()
    _ip_drivers.update(saved)


def overlay(action=None):
    dev = make_device(action)
    return FlightLLMOverlay(device=dev), dev


def channel_buffers(ol, channels=(0, 5, 30), n=64):
    return {ch: pynq.allocate((n,), np.uint8, target=getattr(ol, f"HBM{ch}")) for ch in channels}


def program(ol):
    return pynq.allocate((32,), np.uint32, target=ol.DDR0)


# ---------------------------------------------------------------------------------------------
# Loading and binding
# ---------------------------------------------------------------------------------------------
def test_plain_pynq_overlay_binds_our_drivers():
    dev = make_device()
    ol = pynq.Overlay(str(sim_xclbin_path()), device=dev)
    assert ol.is_loaded()
    assert type(ol.scheduler) is SchedulerDriver
    for c in range(DESIGN.cores):
        assert type(getattr(ol, f"mpe_{c}")) is MPEDriver
        assert type(getattr(ol, f"misc_{c}")) is MISCDriver
        assert type(getattr(ol, f"memctrl_{c}")) is MemoryControllerDriver
    assert ol.memctrl_1.channels == DESIGN.core_channels[1] and ol.memctrl_1.core == 1
    assert dev.contexts.keys() >= {"scheduler", "memctrl_1"}          # open_context per CU
    assert {"HBM0", "HBM30", "DDR0"} <= set(dir(ol)) and "HBM3" not in dir(ol)


def test_default_name_resolves_to_the_metadata_only_file_and_says_so():
    ol, dev = overlay()
    assert ol.bitfile_name == str(sim_xclbin_path())
    assert ol.is_simulated and dev.loaded_metadata_only
    assert "simulated" in repr(ol) and "no FPGA" in repr(ol)
    text = ol.describe()
    assert "SIMULATED" in text and "no FPGA is involved" in text and "metadata only" in text


def test_bare_name_prefers_the_device_specific_file(tmp_path, monkeypatch):
    dev = make_device()
    monkeypatch.setattr(ovl.overlay, "BITSTREAMS_DIR", tmp_path)
    monkeypatch.chdir(tmp_path / "..")
    (tmp_path / "flightllm.xclbin").write_bytes(b"generic")
    assert ovl.resolve_bitstream("flightllm.xclbin", dev) == str(tmp_path / "flightllm.xclbin")
    specific = tmp_path / "flightllm.xclbin.d" / "flightllm.xilinx_u280_sim.xclbin"
    specific.parent.mkdir()
    specific.write_bytes(b"for the simulator")
    assert ovl.resolve_bitstream("flightllm.xclbin", dev) == str(specific)


def test_missing_bitstream_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BitstreamError, match="cannot find 'nothing.xclbin' for device "
                                             "'xilinx_u280_sim'"):
        FlightLLMOverlay("nothing.xclbin", device=make_device())


def test_test_drivers_can_take_over_and_are_unregistered(driver_registry):
    class CountingMPE(MPEDriver):
        bindto = [DESIGN.cu("mpe_0").vlnv]

    try:
        ol, _ = overlay()
        assert type(ol.mpe_0) is CountingMPE
    finally:
        CountingMPE.unregister()
    assert DESIGN.cu("mpe_0").vlnv not in _ip_drivers or \
        _ip_drivers[DESIGN.cu("mpe_0").vlnv] is not CountingMPE


def test_overlay_classes_are_default_ip_drivers():
    for cls in (SchedulerDriver, MPEDriver, MISCDriver, MemoryControllerDriver):
        assert issubclass(cls, DefaultIP) and _ip_drivers[cls.bindto[0]] is cls


# ---------------------------------------------------------------------------------------------
# A run
# ---------------------------------------------------------------------------------------------
def test_exact_register_sequence_of_a_run():
    ol, dev = overlay()
    prog, bufs = program(ol), channel_buffers(ol)
    dev.register_log.clear()
    stats = ol.run(prog, 5, 16, bufs)

    done = C.AP_DONE | C.AP_IDLE | C.AP_READY
    want = []
    for c in range(3):
        for k, ch in enumerate(DESIGN.core_channels[c]):
            addr = bufs[ch].device_address if ch in bufs else 0
            want += [("W", f"memctrl_{c}", f"hbm{k}", addr & 0xFFFFFFFF),
                     ("W", f"memctrl_{c}", f"hbm{k}[63:32]", addr >> 32)]
    want += [("W", "scheduler", "program", 0), ("W", "scheduler", "program[63:32]", 0x40),
             ("W", "scheduler", "pos", 5), ("W", "scheduler", "len", 16)]
    units = [f"{k}_{c}" for c in range(3) for k in ("mpe", "misc", "memctrl")]
    want += [("W", u, "CTRL", C.AP_START) for u in units]
    want += [("W", "scheduler", "CTRL", C.AP_START), ("R", "scheduler", "CTRL", done),
             ("R", "scheduler", "status", C.SchedulerStatus.DONE)]
    want += [("R", u, "CTRL", done) for u in units]
    counters = fake_counters(dev.target)
    for c in range(3):
        pc = counters.per_core[c]
        mm = pc.instructions["MM"] + pc.instructions["MV"]
        read = sum(counters.hbm_read[ch] for ch in DESIGN.core_channels[c])
        written = sum(counters.hbm_written.get(ch, 0) for ch in DESIGN.core_channels[c])
        for unit, pairs in ((f"mpe_{c}", [("insns", mm), ("macs", pc.macs),
                                           ("fixed_macs", pc.fixed_chain_macs)]),
                            (f"misc_{c}", [("insns", pc.instructions["MISC"]),
                                           ("elements", pc.misc_elements)]),
                            (f"memctrl_{c}", [("bytes_read", read), ("bytes_written", written)])):
            for name, value in pairs:
                want += [("R", unit, f"{name}_lo", value & 0xFFFFFFFF),
                         ("R", unit, f"{name}_hi", value >> 32)]
    want += [("R", "scheduler", "cycles_lo", 5), ("R", "scheduler", "cycles_hi", 7),
             ("R", "scheduler", "insns_lo", stats.instructions),
             ("R", "scheduler", "insns_hi", 0)]
    got = [(a.op, a.cu, a.name, a.value) for a in dev.register_log]
    assert got == want

    assert stats.cycles == (7 << 32) + 5
    assert stats.per_core[2].fixed_chain_macs == (3 << 33) + 2
    assert stats.per_core[2].macs == (1 << 33) + 2
    assert stats.per_core[1].hbm_bytes_written == 32 * 8
    assert stats.seconds == pytest.approx(stats.cycles / 225e6)
    call = dev.fake["sim"].calls[0]
    assert call.params == {"pos": 5, "len": 16} and call.program_addr == prog.device_address
    assert call.channel_base == {ch: b.device_address for ch, b in bufs.items()}


def test_forgotten_syncs_give_stale_data_like_a_card():
    def add_one(memory, program_addr, params, channel_base):      # HBM0 + 1 -> HBM5
        src = memory.view(channel_base[0], 8)
        memory.view(channel_base[5], 8)[:] = src + 1
        memory.touch(channel_base[5])

    ol, _ = overlay(add_one)
    prog, bufs = program(ol), channel_buffers(ol, (0, 5), 8)
    bufs[0][:] = 41
    ol.run(prog, 0, 1, bufs)                         # input not synced: device saw zeros
    bufs[5].sync_from_device()
    assert (bufs[5] == 1).all()
    bufs[0].sync_to_device()
    ol.run(prog, 0, 1, bufs)
    assert (bufs[5] == 1).all()                      # output not synced back yet: stale
    bufs[5].sync_from_device()
    assert (bufs[5] == 42).all()


def test_buffer_in_the_wrong_bank_is_refused_before_any_register_write():
    ol, dev = overlay()
    prog = program(ol)
    wrong = pynq.allocate((64,), np.uint8, target=ol.HBM4)
    dev.register_log.clear()
    with pytest.raises(AddressError, match=r"in HBM\[4\]\) cannot serve HBM channel 5: "
                                           r"memctrl_1\.hbm1 reaches only HBM\[5\].*target=ol\.HBM5"):
        ol.run(prog, 0, 1, {5: wrong})
    assert not dev.register_log
    with pytest.raises(AddressError, match=r"HBM channels \[3\] belong to no core"):
        ol.run(prog, 0, 1, {3: wrong})
    with pytest.raises(AddressError, match=r"program .* is not in DDR\[0\]"):
        ol.run(wrong, 0, 1, {4: wrong})


# ---------------------------------------------------------------------------------------------
# Timeouts, reset and errors
# ---------------------------------------------------------------------------------------------
def test_timeout_when_a_unit_was_not_started_then_reset_recovers():
    ol, dev = overlay()
    prog, bufs = program(ol), channel_buffers(ol)
    ol.bind_channels(bufs)
    ol.scheduler.configure(prog, 0, 16)
    for c in range(3):
        for unit in ol.units(c):
            if unit.name != "misc_2":
                unit.start()
    ol.scheduler.start()
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeoutError) as info:
        ol.scheduler.wait(timeout=0.05)
    assert 0.05 <= time.monotonic() - t0 < 1.0
    msg = str(info.value)
    assert "scheduler did not finish within 0.05 s" in msg and "CTRL = 0x00000001" in msg
    assert "STALLED" in msg and "core 2" in msg and "ol.reset()" in msg
    assert ol.scheduler.status == C.SchedulerStatus.STALLED
    ol.reset()
    assert ol.scheduler.status == C.SchedulerStatus.IDLE and ol.misc_0.is_idle()
    stats = ol.run(prog, 0, 16, bufs, timeout=1.0)
    assert stats.cycles == (7 << 32) + 5 and len(dev.fake["sim"].calls) == 1


@pytest.mark.parametrize("error, cls", [(IllegalInstructionError("opcode 0x3f"),
                                         IllegalInstructionError),
                                        (AddressError("LD beyond channel 9"), AddressError),
                                        (ProgramError("unconsumed token"), ProgramError),
                                        (DeviceError("other"), DeviceError)])
def test_error_status_is_decoded_with_core_and_pc(error, cls):
    error.core, error.pc = 1, 23
    state = {"fail": True}

    def action(*_):
        if state.pop("fail", False):
            raise error

    ol, _ = overlay(action)
    prog, bufs = program(ol), channel_buffers(ol)
    with pytest.raises(cls) as info:
        ol.run(prog, 0, 16, bufs)
    assert type(info.value) is cls
    assert (info.value.core, info.value.pc) == (1, 23)
    assert "on core 1 at instruction 23" in str(info.value) and str(error) in str(info.value)
    assert ol.run(prog, 0, 16, bufs).cycles == (7 << 32) + 5    # usable without a reset


def test_unknown_core_and_pc_are_reported_as_unknown():
    def action(*_):
        raise ProgramError("no place")

    ol, _ = overlay(action)
    with pytest.raises(ProgramError) as info:
        ol.run(program(ol), 0, 1, {})
    assert info.value.core is None and info.value.pc is None
    assert "on core" not in str(info.value)
