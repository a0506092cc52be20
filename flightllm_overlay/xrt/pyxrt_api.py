"""pyxrt as installed: importing it, what its XRT release binds, and probing it for U280 cards.

pyxrt carries no version number, so the release is told by what it binds (XRT's
``src/python/pybind11/src/pyxrt.cpp`` at the release tags 202310.2.15.225 and 202420.2.18.179):

- in both, and used here: ``device(int)``, ``device.get_info(xrt_info_device.name)``,
  ``device.load_xclbin(xclbin)``, ``xclbin(str)``, ``uuid.to_string()``, ``bo(device, size,
  bo.flags, group)``, ``bo.map()``, ``bo.address()``, ``bo.sync(direction, size, offset)``;
- 2.18 only (2.17+): ``enumerate_devices()``, used to count cards when it is bound (else
  ``device(i)`` is opened for i = 0, 1, ... up to the first that fails);
- 2.18 only (2.16+): ``device.register_xclbin`` and ``hw_context``; not used (``load_xclbin`` is
  in both);
- in both, not used: ``kernel``/``run`` (no register reads; ``run.set_arg`` takes only a 32-bit
  int or a bo, and a CU opened for runs cannot also be opened for exclusive register access);
- in neither: ``ip`` (``xrt::ip`` was never bound) and ``kernel.read_register`` /
  ``write_register`` (bound only in 2.8-2.11).

Register access therefore goes through XRT's C API (`xrt.capi`), as pynq 2.x did.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["MAX_CARDS", "CardProbe", "PyxrtFeatures", "import_pyxrt", "probe_cards"]

MAX_CARDS = 16          # without enumerate_devices, indices are tried up to the first that fails


def import_pyxrt():
    """(pyxrt module, None) or (None, why it cannot be imported)."""
    try:
        import pyxrt
    except Exception as exc:                  # ImportError, or a broken XRT installation
        return None, f"{type(exc).__name__}: {exc}"
    if pyxrt is None:                         # sys.modules["pyxrt"] = None blocks the import
        return None, "ImportError: pyxrt is blocked in sys.modules"
    return pyxrt, None


@dataclass(frozen=True)
class PyxrtFeatures:
    """What an installed pyxrt binds beyond the calls that 2.15 and 2.18 share."""

    enumerate_devices: bool      # pyxrt.enumerate_devices (2.17 and later)
    hw_context: bool             # pyxrt.hw_context and device.register_xclbin (2.16 and later)

    @classmethod
    def of(cls, pyxrt) -> "PyxrtFeatures":
        device = getattr(pyxrt, "device", None)
        return cls(enumerate_devices=hasattr(pyxrt, "enumerate_devices"),
                   hw_context=hasattr(pyxrt, "hw_context") and hasattr(device, "register_xclbin"))

    @property
    def release(self) -> str:
        """The XRT releases whose pyxrt binds exactly these features."""
        if self.enumerate_devices:
            return "2.17 or later"
        return "2.16" if self.hw_context else "2.15 or earlier"


@dataclass
class CardProbe:
    """Result of looking for U280 cards: (index, pyxrt device, shell name) found, and what was tried."""

    found: list = field(default_factory=list)
    tried: list = field(default_factory=list)

    def explain(self) -> str:
        return "; ".join(self.tried) or "nothing was probed"


def probe_cards(pyxrt=None) -> CardProbe:
    """Open every card pyxrt can reach and keep the U280s (`tried` says what was done)."""
    probe = CardProbe()
    if pyxrt is None:
        pyxrt, why = import_pyxrt()
        if pyxrt is None:
            probe.tried.append(f"import pyxrt failed ({why}): XRT is not installed, or "
                               f"/opt/xilinx/xrt/setup.sh was not sourced")
            return probe
    features = PyxrtFeatures.of(pyxrt)
    emulation = os.environ.get("XCL_EMULATION_MODE")
    if emulation:
        probe.tried.append(f"XCL_EMULATION_MODE={emulation}: XRT lists the emulated devices of "
                           f"emconfig.json, not cards")
    if features.enumerate_devices:
        try:
            count = int(pyxrt.enumerate_devices())
        except Exception as exc:
            probe.tried.append(f"pyxrt.enumerate_devices() failed ({exc})")
            return probe
        probe.tried.append(f"pyxrt.enumerate_devices() = {count}")
        indices, stop_at_failure = range(count), False
    else:
        probe.tried.append(f"pyxrt of XRT {features.release} has no enumerate_devices: opened "
                           f"pyxrt.device(i) for i = 0, 1, ... up to the first that fails")
        indices, stop_at_failure = range(MAX_CARDS), True
    for index in indices:
        try:
            handle = pyxrt.device(index)
            name = str(handle.get_info(pyxrt.xrt_info_device.name))
        except Exception as exc:
            probe.tried.append(f"pyxrt.device({index}) failed ({exc})")
            if stop_at_failure:
                break
            continue
        is_u280 = "u280" in name.lower()
        probe.tried.append(f"device {index} is {name}" + ("" if is_u280 else " (not a U280)"))
        if is_u280:
            probe.found.append((index, handle, name))
    return probe
