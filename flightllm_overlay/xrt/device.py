"""XrtU280: an Alveo U280 card as a pynq Device over XRT 2.15 to 2.18; never run on a card.

pynq 4 dropped Alveo support (its `XrtDevice` probes nothing), so this is our own device, on the
base it shares with the simulated U280 (`device.base.U280Device`).  Every XRT call it makes
exists in both XRT 2.15 (Vitis/XRT 2023.1) and 2.18 (2024.2), checked against XRT's sources at
the release tags (`xrt.pyxrt_api` lists them):

- probe: ``pyxrt.enumerate_devices()`` where bound (2.17+), else ``pyxrt.device(i)`` for i =
  0, 1, ...; each card's shell name from ``device.get_info(xrt_info_device.name)``;
- `download`: ``pyxrt.xclbin(path)`` then ``device.load_xclbin(xclbin)`` (its uuid), then
  `post_download`;
- registers (capability ``REGISTER_RW``): XRT's C API by ctypes (`xrt.capi`): one
  ``xrtPLKernelOpenExclusive(device, uuid, "kernel:{cu}")`` per compute unit, opened when pynq
  opens its context, then ``xrtKernelReadRegister`` / ``xrtKernelWriteRegister`` at CU-relative
  offsets; the drivers start runs and poll AP_DONE through these registers, as pynq 2.x did;
- memory: ``pyxrt.bo(device, size, bo.flags.normal, <bank index>)``; ``bo.map()`` is the host
  view, ``bo.address()`` the device address, ``bo.sync(XCL_BO_SYNC_BO_TO_DEVICE / _FROM_DEVICE,
  size, offset)`` flushes or invalidates exactly the bytes synced; freeing drops the bo.

Targets: XRT 2.15 and 2.18, the platform of `targets/u280.json`
(``xilinx_u280_gen3x16_xdma_1_202211_1``).  STATUS: this code has NOT met a card.  It is tested
against fakes of pyxrt 2.15 and 2.18 and of libxrt_coreutil that offer exactly what those
releases bind and raise on anything else (`tests/fake_xrt.py`, `tests/test_xrt_device.py`).

Waits: this class does not wait on the hardware; the drivers' AP_DONE polling has a timeout
(`overlay.drivers.HLSKernel.wait`).  XRT calls themselves block inside XRT (DMA, ioctl).
"""
from __future__ import annotations

import numpy as np

from .. import config
from ..device.base import U280Device, requested_device
from ..device.memory import check_sync
from ..device.xclbin import (AP_CTRL_NONE, EMULATION_MODES, SIMULATED_PLATFORM_PREFIX,
                             ip_controls, is_metadata_only, mode, platform_vbnv)
from ..errors import BitstreamError, DeviceError
from .capi import CuRegisters, XrtCApi
from .memory import BoAllocation, XrtBuffer, XrtMemoryBank
from .pyxrt_api import PyxrtFeatures, import_pyxrt, probe_cards

__all__ = ["PLATFORM", "XRT_VERSION", "XrtBuffer", "XrtMemoryBank", "XrtU280"]

XRT_VERSION = "2.15 (Vitis/XRT 2023.1) to 2.18 (2024.2)"

PLATFORM = config.load_target("u280").platform
BUILD_HINT = ("build the bitstream with `make -C vivado_project` (Vitis 2023.1, platform "
              "{platform}); it writes flightllm_overlay/bitstreams/flightllm.xclbin, which "
              "FlightLLMOverlay() then finds by name")


class XrtU280(U280Device):
    """An Alveo U280 card driven through XRT (untested on hardware, see module docstring).

    Parameters
    ----------
    index : int
        XRT device index (``xbutil examine`` lists them).
    pyxrt : module, optional
        The pyxrt module to use (tests pass a fake); default ``import pyxrt``.
    libxrt : ctypes library, optional
        XRT's C library (tests pass a fake); default ``libxrt_coreutil.so.2``, loaded on download.
    target : str or config.Target
        Hardware target of the design (``u280``).
    handle : pyxrt.device, optional
        An already opened ``pyxrt.device(index)``.
    """

    bank_class = XrtMemoryBank
    bank_where = "the loaded xclbin"
    requires_every_unit = True

    _probe_priority_ = 250           # before SimulatedU280 (300): a card is picked when present
    is_simulated = False
    last_probe = None                # the CardProbe of the last _probe_ (what was tried)

    @classmethod
    def _probe_(cls):
        if requested_device() == "sim":
            return []                # the user asked for the simulated U280
        return cls.find()

    @classmethod
    def find(cls, pyxrt=None) -> list:
        """Every U280 card XRT reaches (`XrtU280.last_probe` says what was tried)."""
        probe = probe_cards(pyxrt)
        cls.last_probe = probe
        module = pyxrt or import_pyxrt()[0]
        return [cls(index, pyxrt=module, handle=handle) for index, handle, _ in probe.found]

    def __init__(self, index: int = 0, pyxrt=None, libxrt=None, target="u280", handle=None):
        self.pyxrt = pyxrt if pyxrt is not None else import_pyxrt()[0]
        if self.pyxrt is None:
            raise DeviceError("pyxrt cannot be imported, so no card can be reached: source "
                              "/opt/xilinx/xrt/setup.sh (XRT 2.15 or later) before starting "
                              "Python, or use the simulated U280 (FLIGHTLLM_DEVICE=sim)")
        self.features = PyxrtFeatures.of(self.pyxrt)
        self.index, self._libxrt, self.capi, self._c_device = index, libxrt, None, None
        try:
            self.handle = handle if handle is not None else self.pyxrt.device(index)
            self.card_name = str(self.handle.get_info(self.pyxrt.xrt_info_device.name))
        except Exception as exc:
            raise DeviceError(f"XRT cannot open card {index}: {exc}. `xbutil examine` lists the "
                              f"cards and their state") from exc
        target = config.load_target(target) if isinstance(target, str) else target
        if "u280" not in self.card_name.lower():
            raise DeviceError(f"card {index} is {self.card_name!r}, not a U280: this design "
                              f"targets {target.board} ({target.platform}); pick the U280's index")
        super().__init__(f"xrt_u280_{index}", target)
        self.xclbin, self.xclbin_uuid = None, None
        self._live = {}

    @property
    def name(self) -> str:
        """The card's shell name as XRT reports it (used to pick ``flightllm.<name>.xclbin``)."""
        return self.card_name

    def __repr__(self):
        return f"<XrtU280 {self.card_name} (XRT device {self.index}), untested on hardware>"

    # -- bitstream ---------------------------------------------------------------------------------
    def _refuse(self, data, path):
        build = (BUILD_HINT.format(platform=self.target.platform)
                 + ". To run without the card, use the simulated U280 (FLIGHTLLM_DEVICE=sim)")
        if platform_vbnv(data).startswith(SIMULATED_PLATFORM_PREFIX):
            raise BitstreamError(
                f"{path} is the METADATA-ONLY xclbin of the simulated U280 (no BITSTREAM "
                f"section); it cannot program the card {self.card_name}. To run on the card, "
                + build)
        if is_metadata_only(data) and mode(data) not in EMULATION_MODES:
            raise BitstreamError(
                f"{path} has no configuration image (no BITSTREAM section) and is not an "
                f"emulation build (sw_emu/hw_emu), so it cannot program {self.card_name}: "
                + build)

    def _load(self, data, path, parser) -> list:
        if self._live:
            raise BitstreamError(f"{len(self._live)} buffers are still allocated on "
                                 f"{self.card_name}; free them (or close the Session) before "
                                 f"loading another xclbin")
        if self.capi is None:                         # before touching the card: fail early
            self.capi = XrtCApi(self._libxrt)
        self._close_units()
        self.xclbin, self.xclbin_uuid = None, None
        try:
            xclbin = self.pyxrt.xclbin(path)
            uuid = self.handle.load_xclbin(xclbin)
        except Exception as exc:
            raise BitstreamError(
                f"XRT could not load {path} on {self.card_name}: {exc}. The xclbin must be built "
                f"for platform {self.target.platform} (`xbutil examine` shows the card's shell) "
                f"and no other process may hold the card") from exc
        self.xclbin, self.xclbin_uuid = xclbin, str(uuid.to_string())
        if self._c_device is None:
            self._c_device = self.capi.open_device(self.index)
        controls = ip_controls(data)
        units = []
        for name, d in parser.ip_dict.items():
            cu_name = d.get("cu_name") or f"{name}:{name}"
            units.append(CuRegisters(self.capi, self._c_device, self.xclbin_uuid, name, cu_name,
                                     d["phys_addr"], d["addr_range"],
                                     free_running=controls.get(cu_name) == AP_CTRL_NONE))
        return units

    def close(self):
        """Give the card back to other processes: close the compute units' register handles and
        XRT's device handle (buffers stay valid; load the overlay again to use the units)."""
        self._close_units()
        if self._c_device is not None:
            handle, self._c_device = self._c_device, None
            self.capi.close_device(handle)

    def _close_units(self):
        for window in self._windows:
            window.close()
        self._windows = []

    def open_context(self, description, shared=True):
        """Open the compute unit for register access (exclusive: XRT requires it)."""
        name = description["fullpath"]
        window = next((w for w in self._windows if w.name == name), None)
        if window is not None:
            window.open()
        return super().open_context(description, shared)

    # -- memory ------------------------------------------------------------------------------------
    def _allocate(self, desc: dict, nbytes: int) -> BoAllocation:
        """A pyxrt bo of `nbytes` in the bank `desc` (pynq mem_dict entry), mapped on the host."""
        if self.xclbin_uuid is None:
            raise DeviceError(f"no xclbin is loaded on {self.card_name}: load the overlay before "
                              f"allocating buffers")
        try:
            bo = self.pyxrt.bo(self.handle, max(nbytes, 1), self.pyxrt.bo.flags.normal, desc["idx"])
            host = np.frombuffer(bo.map(), np.uint8, count=nbytes)
            address = int(bo.address())
        except Exception as exc:
            raise DeviceError(f"XRT cannot allocate {nbytes} bytes in {desc['tag']}: {exc}. "
                              f"Free buffers you no longer need (the bank holds "
                              f"{desc['size'] >> 20} MiB)") from exc
        alloc = BoAllocation(self, desc["tag"], bo, host, address, nbytes)
        self._live[id(alloc)] = alloc
        return alloc

    def free_buffer(self, alloc: BoAllocation) -> None:
        if not alloc.freed:
            alloc.freed = True
            alloc.bo = None                               # the last reference: XRT frees it
            self._live.pop(id(alloc), None)

    def bank_usage(self, tag: str) -> tuple:
        mine = [a.nbytes for a in self._live.values() if a.tag == tag]
        return len(mine), sum(mine)

    def _sync(self, alloc: BoAllocation, offset: int, nbytes: int, to_device: bool) -> None:
        check_sync(alloc, offset, nbytes)
        if nbytes == 0:
            return
        d = self.pyxrt.xclBOSyncDirection
        direction = d.XCL_BO_SYNC_BO_TO_DEVICE if to_device else d.XCL_BO_SYNC_BO_FROM_DEVICE
        try:
            alloc.bo.sync(direction, int(nbytes), int(offset))
        except Exception as exc:
            raise DeviceError(f"XRT sync {'to' if to_device else 'from'} the device failed for "
                              f"{alloc.describe()}: {exc}") from exc

