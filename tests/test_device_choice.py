"""Explicit device choice: FlightLLMOverlay(device="auto"|"sim"|"card"), FLIGHTLLM_DEVICE and `flightllm --device`."""
from __future__ import annotations

import sys

import pytest
from fake_xrt import U280, make_pyxrt
from pynq.pl_server.device import Device

from flightllm_overlay import cli
from flightllm_overlay.errors import DeviceNotFoundError, FlightLLMError
from flightllm_overlay.overlay import FlightLLMOverlay
from flightllm_overlay.overlay.choice import DeviceChoice, choose_device
from flightllm_overlay.sim.device import SimulatedU280
from flightllm_overlay.xrt import XrtU280
from flightllm_overlay.xrt.pyxrt_api import PyxrtFeatures

U250 = "xilinx_u250_gen3x16_xdma_shell_4_1"


@pytest.fixture
def env(monkeypatch):
    """No device asked for, no XRT, no pyxrt, and pynq's device list probed afresh."""
    monkeypatch.setenv("FLIGHTLLM_DEVICE", "auto")           # restored after (main() may set it)
    monkeypatch.delenv("FLIGHTLLM_SIMULATOR", raising=False)
    monkeypatch.delenv("XILINX_XRT", raising=False)
    monkeypatch.delenv("XCL_EMULATION_MODE", raising=False)
    monkeypatch.setitem(sys.modules, "pyxrt", None)          # import pyxrt raises ImportError
    for name in ("_devices", "_active_device"):
        monkeypatch.setattr(Device, name, None, raising=False)
        monkeypatch.delattr(Device, name)
    return monkeypatch


def test_sim_is_the_simulated_u280_and_says_so(env):
    ol = FlightLLMOverlay(device="sim")
    assert ol.is_simulated and isinstance(ol.device, SimulatedU280)
    assert (ol.device_choice.requested, ol.device_choice.chosen) == ("sim", "sim")
    assert "device:  sim -> the simulated U280" in ol.describe()


def test_auto_without_a_card_runs_the_simulator_and_says_what_was_probed(env):
    ol = FlightLLMOverlay()
    assert ol.is_simulated
    choice = ol.device_choice
    assert (choice.requested, choice.chosen) == ("auto", "sim")
    assert "no U280 card found" in choice.reason and "import pyxrt failed" in choice.reason
    assert "auto -> the simulated U280 (no U280 card found" in ol.describe()


def test_card_without_a_card_is_a_clear_error_naming_what_was_probed(env):
    env.setenv("FLIGHTLLM_DEVICE", "card")
    with pytest.raises(DeviceNotFoundError, match=r"none was found\. Probed: import pyxrt failed "
                       r"\(.*Error.*source /opt/xilinx/xrt/setup.sh.*device='sim'"):
        FlightLLMOverlay()
    env.setitem(sys.modules, "pyxrt", make_pyxrt("2.15", cards=(U250,)))
    with pytest.raises(DeviceNotFoundError, match=r"no enumerate_devices.*device 0 is "
                       + U250 + r" \(not a U280\); pyxrt.device\(1\) failed"):
        FlightLLMOverlay(device="card")


def test_card_and_auto_pick_a_u280_that_xrt_finds(env):
    for version in ("2.15", "2.18"):
        env.setitem(sys.modules, "pyxrt", make_pyxrt(version, cards=(U250, U280)))
        dev, choice = choose_device("card")
        assert isinstance(dev, XrtU280) and dev.index == 1
        assert choice == DeviceChoice("card", "card", f"found {U280} as XRT device 1")
    for name in ("_devices", "_active_device"):
        env.delattr(Device, name, raising=False)
    dev, choice = choose_device("auto")
    assert isinstance(dev, XrtU280) and (choice.requested, choice.chosen) == ("auto", "card")


def test_an_emulated_card_is_found_and_said_to_be_emulated(env):
    env.setenv("XCL_EMULATION_MODE", "hw_emu")
    env.setitem(sys.modules, "pyxrt", make_pyxrt("2.15", cards=("xilinx_u280_gen3x16_xdma_1_202211_1",)))
    dev, choice = choose_device("card")
    assert isinstance(dev, XrtU280) and "XCL_EMULATION_MODE=hw_emu" in XrtU280.last_probe.explain()


def test_a_device_object_is_used_as_given(env):
    sim = SimulatedU280()
    dev, choice = choose_device(sim)
    assert dev is sim and (choice.requested, choice.chosen) == ("given", "sim")


def test_unknown_choices_are_refused(env):
    with pytest.raises(FlightLLMError, match="'gpu' is not a device choice"):
        FlightLLMOverlay(device="gpu")
    env.setenv("FLIGHTLLM_DEVICE", "fpga")
    with pytest.raises(FlightLLMError, match="FLIGHTLLM_DEVICE='fpga' is not a device choice"):
        FlightLLMOverlay()


def test_flightllm_simulator_still_works_as_a_deprecated_alias(env):
    env.delenv("FLIGHTLLM_DEVICE")
    env.setenv("FLIGHTLLM_SIMULATOR", "1")
    with pytest.warns(DeprecationWarning, match="FLIGHTLLM_DEVICE=sim"):
        ol = FlightLLMOverlay()
    assert ol.is_simulated and ol.device_choice.requested == "sim"
    env.setenv("FLIGHTLLM_SIMULATOR", "0")
    with pytest.warns(DeprecationWarning), pytest.raises(DeviceNotFoundError):
        FlightLLMOverlay()


def test_cli_device_option(env, capsys):
    assert cli.main(["--device", "card", "info"]) != 0
    err = capsys.readouterr().err
    assert "flightllm: error:" in err and "none was found" in err and "import pyxrt failed" in err
    assert cli.main(["--device", "sim", "info"]) == 0
    assert "device:  sim -> the simulated U280" in capsys.readouterr().out


def test_the_pyxrt_release_is_told_by_what_it_binds():
    assert PyxrtFeatures.of(make_pyxrt("2.15")) == PyxrtFeatures(False, False)
    assert PyxrtFeatures.of(make_pyxrt("2.15")).release == "2.15 or earlier"
    assert PyxrtFeatures.of(make_pyxrt("2.18")) == PyxrtFeatures(True, True)
    assert PyxrtFeatures.of(make_pyxrt("2.18")).release == "2.17 or later"


def test_on_auto_the_simulator_steps_aside_for_a_card_even_with_xrt_2_15(env):
    """2.15 has no enumerate_devices: the card is still found, by opening device(0)."""
    env.setenv("XILINX_XRT", "/opt/xilinx/xrt")
    env.setitem(sys.modules, "pyxrt", make_pyxrt("2.15"))
    assert SimulatedU280._probe_() == []
    env.setitem(sys.modules, "pyxrt", make_pyxrt("2.15", cards=()))
    assert len(SimulatedU280._probe_()) == 1
    env.setenv("FLIGHTLLM_DEVICE", "sim")
    env.setitem(sys.modules, "pyxrt", make_pyxrt("2.15"))
    assert len(SimulatedU280._probe_()) == 1 and XrtU280._probe_() == []
    env.setenv("FLIGHTLLM_DEVICE", "card")
    assert SimulatedU280._probe_() == [] and len(XrtU280._probe_()) == 1
