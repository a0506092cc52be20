"""Which device an overlay runs on: ``auto``, ``sim`` or ``card``, chosen explicitly and reported.

``FlightLLMOverlay(device=...)`` takes a pynq Device, or one of the names below; without one,
``FLIGHTLLM_DEVICE`` decides (``FLIGHTLLM_SIMULATOR=1/0`` is its deprecated alias for sim/card):

- ``sim``: the simulated U280, never a card;
- ``card``: a U280 card through XRT, or a `DeviceNotFoundError` saying what was probed;
- ``auto`` (default): pynq's active device, which is a card when XRT finds one, else the
  simulated U280; the `DeviceChoice` says which and why.
"""
from __future__ import annotations

from dataclasses import dataclass

from pynq.pl_server.device import Device

from ..device.base import DEVICE_CHOICES, requested_device
from ..errors import DeviceNotFoundError, FlightLLMError

__all__ = ["DeviceChoice", "choose_device", "default_device"]


@dataclass(frozen=True)
class DeviceChoice:
    """What was asked for (``auto``/``sim``/``card``, or ``given`` for a Device passed in), what
    it gave (``sim`` or ``card``) and why."""

    requested: str
    chosen: str
    reason: str

    def __str__(self):
        what = "the simulated U280" if self.chosen == "sim" else "a U280 card"
        return f"{self.requested} -> {what} ({self.reason})"


def default_device():
    """pynq's active device: a card when XRT finds one, else the simulated U280.

    pynq caches its device list on first use; if that happened before our devices registered
    (an empty list), the simulated device is made directly.
    """
    try:
        return Device.active_device
    except RuntimeError:
        return _simulated()


def choose_device(device=None):
    """(pynq Device, DeviceChoice) for `device`: a Device, ``auto``/``sim``/``card`` or None."""
    from ..sim.device import SimulatedU280
    from ..xrt.device import XrtU280
    if device is not None and not isinstance(device, str):
        chosen = "sim" if getattr(device, "is_simulated", False) else "card"
        return device, DeviceChoice("given", chosen, f"{getattr(device, 'name', device)} passed in")
    requested = requested_device() if device is None else device.strip().lower()
    if requested not in DEVICE_CHOICES:
        raise FlightLLMError(f"device={device!r} is not a device choice: use one of "
                             f"{', '.join(DEVICE_CHOICES)}, or pass a pynq Device")
    if requested == "sim":
        return _simulated(), DeviceChoice("sim", "sim", "asked for the simulated U280")
    if requested == "card":
        cards = [d for d in _pynq_devices() if isinstance(d, XrtU280)] or XrtU280.find()
        if not cards:
            raise DeviceNotFoundError(
                f"a U280 card was asked for (device='card' or FLIGHTLLM_DEVICE=card) but none "
                f"was found. Probed: {_probed(XrtU280)}. Install XRT 2.15 or later and source "
                f"/opt/xilinx/xrt/setup.sh, check the card with `xbutil examine`, or run on the "
                f"simulated U280 (device='sim', FLIGHTLLM_DEVICE=sim)")
        return cards[0], DeviceChoice("card", "card", _card_reason(cards[0]))
    dev = default_device()
    if isinstance(dev, SimulatedU280) or getattr(dev, "is_simulated", False):
        return dev, DeviceChoice("auto", "sim", f"no U280 card found; probed: {_probed(XrtU280)}")
    return dev, DeviceChoice("auto", "card", _card_reason(dev))


def _simulated():
    from ..sim.device import SimulatedU280
    for dev in _pynq_devices(probe=False):
        if isinstance(dev, SimulatedU280):
            return dev
    return SimulatedU280()


def _pynq_devices(probe: bool = True) -> list:
    """pynq's device list (probing only when `probe`; an empty list when pynq finds none)."""
    if not probe:
        return list(getattr(Device, "_devices", None) or ())
    try:
        return list(Device.devices)
    except RuntimeError:
        return []


def _probed(cls) -> str:
    probe = cls.last_probe
    return probe.explain() if probe is not None else "XRT was not probed"


def _card_reason(dev) -> str:
    return f"found {getattr(dev, 'name', dev)} as XRT device {getattr(dev, 'index', '?')}"
