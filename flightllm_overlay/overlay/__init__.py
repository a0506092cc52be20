"""Drivers layer: FlightLLMOverlay (a pynq Overlay) and the DefaultIP drivers of its compute units."""
import warnings

with warnings.catch_warnings():       # pynq warns about the CPU on x86 at import: only that
    warnings.filterwarnings("ignore", message="Pynq does not support the CPU Architecture",
                            category=ResourceWarning)
    import pynq  # noqa: F401

from ..sim import device as _sim_device  # noqa: F401  registers SimulatedU280 with pynq
from ..xrt import device as _xrt_device  # noqa: F401  registers XrtU280 (a U280 card through pyxrt)
from .choice import DeviceChoice, choose_device
from .drivers import (DEFAULT_TIMEOUT, DRIVERS, HLSKernel, MemoryControllerDriver, MISCDriver,
                      MPEDriver, SchedulerDriver)
from .overlay import DEFAULT_BITFILE, CoreStats, FlightLLMOverlay, RunStats, resolve_bitstream

__all__ = ["DEFAULT_BITFILE", "DEFAULT_TIMEOUT", "DRIVERS", "CoreStats", "DeviceChoice",
           "FlightLLMOverlay", "HLSKernel", "MemoryControllerDriver", "MISCDriver", "MPEDriver", "RunStats",
           "SchedulerDriver", "choose_device", "resolve_bitstream"]
