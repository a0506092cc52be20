"""XrtU280: an Alveo U280 card as a pynq Device over XRT's pyxrt; written for XRT 2.15, never run on a card.

pynq 4 dropped Alveo support (its `XrtDevice` probes nothing), so this is our own device.  It
gives pynq's Overlay path and our drivers what they use, like `SimulatedU280` does:

- `get_bitfile_metadata`: pynq's own `XclBin` parser on the file (ip_dict, mem_dict, clocks);
- `download`: ``pyxrt.xclbin(path)``, ``dev.register_xclbin(xclbin)``, ``pyxrt.hw_context(dev,
  uuid)``, then `post_download` (pyxrt without hw_context: ``dev.load_xclbin(xclbin)``);
- registers (capability ``REGISTER_RW``): `read_registers` / `write_registers` through one
  ``pyxrt.ip(hw_context, "<kernel>:<cu>")`` per compute unit (``read_register`` /
  ``write_register`` at the CU-relative offset);
- memory: `get_memory` / `allocate` give `PynqBuffer`s backed by ``pyxrt.bo(dev, size,
  pyxrt.bo.flags.normal, <bank index>)``: ``bo.map()`` is the host view, ``bo.address()`` the
  device address, ``bo.sync(XCL_BO_SYNC_BO_TO_DEVICE / _FROM_DEVICE, size, offset)`` flushes or
  invalidates exactly the bytes of the buffer (or view) synced; freeing drops the bo.

Targets: XRT 2.15 (Vitis/XRT 2023.1) and the platform of `targets/u280.json`
(``xilinx_u280_gen3x16_xdma_1_202211_1``).  STATUS: this code has NOT met a card.  It is written
against the pyxrt API and tested only against a recording fake of pyxrt
(`tests/test_xrt_device.py`).  Known gap: the pyxrt shipped with XRT (up to the current upstream
``pyxrt.cpp``, as far as we could check) has no ``ip`` class, i.e. no Python binding of
``xrt::ip``; with such a pyxrt, `download` stops with a DeviceError saying so, unless an
``ip_factory`` is given.

Waits: this class does not wait on the hardware; the drivers' AP_DONE polling has a timeout
(`overlay.drivers.HLSKernel.wait`).  pyxrt calls themselves block inside XRT (DMA, ioctl).
"""
from __future__ import annotations

import ctypes
import os
import struct
import warnings
from pathlib import Path

import numpy as np

with warnings.catch_warnings():       # pynq warns about the CPU on x86 at import: only that
    warnings.filterwarnings("ignore", message="Pynq does not support the CPU Architecture",
                            category=ResourceWarning)
    from pynq._3rdparty import xclbin as X
    from pynq.pl_server.device import Device
    from pynq.pl_server.xclbin_parser import XclBin

from .. import config
from ..errors import BitstreamError, DeviceError
from ..hw.design import BlockDesign, build_design
from ..sim.xclbin import PLATFORM_PREFIX, is_metadata_only, section_kinds
from ..sim.memory import BankAccess
from .memory import XrtBuffer, XrtMemoryBank, _Allocation

__all__ = ["PLATFORM", "XRT_VERSION", "XrtBuffer", "XrtMemoryBank", "XrtU280"]

XRT_VERSION = "2.15 (Vitis/XRT 2023.1)"
PLATFORM = config.load_target("u280").platform
BUILD_HINT = ("build the bitstream with `make -C vivado_project` (Vitis 2023.1, platform "
              "{platform}); it writes flightllm_overlay/bitstreams/flightllm.xclbin, which "
              "FlightLLMOverlay() then finds by name")


def _import_pyxrt():
    """The pyxrt module, or None when it cannot be imported (no XRT installed or sourced)."""
    try:
        import pyxrt
    except Exception:                  # ImportError, or a broken XRT installation
        return None
    return pyxrt


class XrtU280(BankAccess, Device):
    """An Alveo U280 card driven through XRT's pyxrt (untested on hardware, see module docstring).

    Parameters
    ----------
    index : int
        XRT device index (``xbutil examine`` lists them).
    pyxrt : module, optional
        The pyxrt module to use (tests pass a fake); default ``import pyxrt``.
    target : str or config.Target
        Hardware target of the design (``u280``).
    handle : pyxrt.device, optional
        An already opened ``pyxrt.device(index)``.
    ip_factory : callable, optional
        ``ip_factory(device, cu_name)`` returning an object with ``read_register(offset)`` and
        ``write_register(offset, value)``, for a pyxrt without an ``ip`` class.
    """

    bank_class = XrtMemoryBank
    bank_where = "the loaded xclbin"

    _probe_priority_ = 250           # before SimulatedU280 (300): a card is picked when present
    is_simulated = False

    @classmethod
    def _probe_(cls):
        if os.environ.get("FLIGHTLLM_SIMULATOR") == "1":
            return []                # the user asked for the simulated U280
        pyxrt = _import_pyxrt()
        if pyxrt is None:
            return []
        try:
            count = int(pyxrt.enumerate_devices())
        except Exception as exc:
            warnings.warn(f"pyxrt imports but cannot enumerate cards ({exc}); no XRT device is "
                          f"used. Check the XRT installation with `xbutil examine`")
            return []
        found = []
        for index in range(count):
            try:
                handle = pyxrt.device(index)
                name = str(handle.get_info(pyxrt.xrt_info_device.name))
            except Exception as exc:
                warnings.warn(f"XRT lists card {index} but it cannot be opened ({exc}); "
                              f"skipping it. `xbutil examine -d <bdf>` shows its state")
                continue
            if "u280" in name.lower():
                found.append(cls(index, pyxrt=pyxrt, handle=handle))
        return found

    def __init__(self, index: int = 0, pyxrt=None, target="u280", handle=None, ip_factory=None):
        self.pyxrt = pyxrt if pyxrt is not None else _import_pyxrt()
        if self.pyxrt is None:
            raise DeviceError("pyxrt cannot be imported, so no card can be reached: source "
                              "/opt/xilinx/xrt/setup.sh (XRT 2.15) before starting Python, or "
                              "use the simulated U280 (FLIGHTLLM_SIMULATOR=1)")
        self.target = config.load_target(target) if isinstance(target, str) else target
        self.design: BlockDesign = build_design(self.target)
        self.index, self.ip_factory = index, ip_factory
        try:
            self.handle = handle if handle is not None else self.pyxrt.device(index)
            self.card_name = str(self.handle.get_info(self.pyxrt.xrt_info_device.name))
        except Exception as exc:
            raise DeviceError(f"XRT cannot open card {index}: {exc}. `xbutil examine` lists the "
                              f"cards and their state") from exc
        if "u280" not in self.card_name.lower():
            raise DeviceError(f"card {index} is {self.card_name!r}, not a U280: this design "
                              f"targets {self.target.board} ({self.target.platform}); pick the "
                              f"U280's index")
        super().__init__(f"xrt_u280_{index}")
        self.capabilities = {"REGISTER_RW": True}
        self.bitfile_name, self.timestamp = "", ""
        self.ip_dict, self.mem_dict, self.clock_dict, self.contexts = {}, {}, {}, {}
        self.xclbin, self.xclbin_uuid, self.hw_context = None, None, None
        self._cus, self._ips, self._live = [], {}, {}

    @property
    def name(self) -> str:
        """The card's shell name as XRT reports it (used to pick ``flightllm.<name>.xclbin``)."""
        return self.card_name

    def __repr__(self):
        return f"<XrtU280 {self.card_name} (XRT device {self.index}), untested on hardware>"

    @property
    def clocks(self) -> dict:
        return {k: {"frequency": v["frequency"]} for k, v in self.clock_dict.items()}

    # -- bitstream ---------------------------------------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name, partial=False):
        if partial:
            raise BitstreamError("the FlightLLM U280 design has no partial reconfiguration "
                                 "regions: load a full xclbin")
        if X.AXLF_SECTION_KIND.EMBEDDED_METADATA not in section_kinds(_read(bitfile_name)):
            raise BitstreamError(f"{bitfile_name} has no EMBEDDED_METADATA section, so its "
                                 f"kernels cannot be known: use the xclbin v++ produced")
        parser = XclBin(str(bitfile_name))
        self.clock_dict = parser.clock_dict
        return parser

    def gen_cache(self, bitstream, parser=None):
        pass

    def download(self, bitstream, parser=None):
        path = str(bitstream.bitfile_name)
        data = _read(path)
        if is_metadata_only(data) or _platform_vbnv(data).startswith(PLATFORM_PREFIX):
            raise BitstreamError(
                f"{path} is the METADATA-ONLY xclbin of the simulated U280 (no BITSTREAM "
                f"section); it cannot program the card {self.card_name}. To run on the card, "
                + BUILD_HINT.format(platform=self.target.platform)
                + ". To run without the card, use the simulated U280 (FLIGHTLLM_SIMULATOR=1)")
        parser = parser or self.get_bitfile_metadata(path)
        _check_kernels(self.design, parser, path)
        if self.ip_factory is None and not hasattr(self.pyxrt, "ip"):
            raise DeviceError(
                f"this pyxrt ({getattr(self.pyxrt, '__file__', self.pyxrt)}) has no `ip` class "
                f"(no binding of xrt::ip), which the drivers need to reach the compute units' "
                f"registers (the pyxrt shipped with XRT has none, as far as we know). Use a pyxrt "
                f"built with xrt::ip bindings, or pass XrtU280(ip_factory=...)")
        if self._live:
            raise BitstreamError(f"{len(self._live)} buffers are still allocated on "
                                 f"{self.card_name}; free them (or close the Session) before "
                                 f"loading another xclbin")
        self._ips, self.contexts, self.hw_context, self.xclbin_uuid = {}, {}, None, None
        try:
            xclbin = self.pyxrt.xclbin(path)
            if hasattr(self.pyxrt, "hw_context") and hasattr(self.handle, "register_xclbin"):
                uuid = self.handle.register_xclbin(xclbin)
                self.hw_context = self.pyxrt.hw_context(self.handle, uuid)
            else:                                         # older pyxrt: the classic load
                uuid = self.handle.load_xclbin(xclbin)
        except Exception as exc:
            raise BitstreamError(
                f"XRT could not load {path} on {self.card_name}: {exc}. The xclbin must be built "
                f"for platform {self.target.platform} (`xbutil examine` shows the card's shell) "
                f"and no other process may hold the card") from exc
        self.xclbin, self.xclbin_uuid = xclbin, uuid
        self._cus = sorted((d["phys_addr"], d["addr_range"], name, d.get("cu_name") or name)
                           for name, d in parser.ip_dict.items())
        self.post_download(bitstream, parser)

    # -- registers ---------------------------------------------------------------------------------
    def _ip(self, name: str, cu_name: str):
        ip = self._ips.get(name)
        if ip is not None:
            return ip
        try:
            if self.ip_factory is not None:
                ip = self.ip_factory(self, cu_name)
            elif self.hw_context is not None:
                try:
                    ip = self.pyxrt.ip(self.hw_context, cu_name)
                except TypeError:                         # a binding of ip(device, uuid, name)
                    ip = self.pyxrt.ip(self.handle, self.xclbin_uuid, cu_name)
            else:
                ip = self.pyxrt.ip(self.handle, self.xclbin_uuid, cu_name)
        except Exception as exc:
            raise DeviceError(f"XRT cannot open compute unit {cu_name} for register access: "
                              f"{exc}. xrt::ip takes an exclusive context: stop other programs "
                              f"using the card, then reload the overlay") from exc
        self._ips[name] = ip
        return ip

    def _locate(self, address: int, length: int):
        if self.xclbin_uuid is None:
            raise DeviceError(f"no xclbin is loaded on {self.card_name}: create the overlay "
                              f"with download=True, e.g. FlightLLMOverlay(device=dev)")
        if address % 4 or length % 4:
            raise DeviceError(f"register access at 0x{address:x} of {length} bytes is not made "
                              f"of aligned 32-bit words")
        for base, size, name, cu_name in self._cus:
            if base <= address and address + length <= base + size:
                return self._ip(name, cu_name), cu_name, address - base
        raise DeviceError(f"no compute unit answers at 0x{address:x}; CUs: "
                          + ", ".join(f"{c[2]}@0x{c[0]:x}" for c in self._cus))

    def read_registers(self, address, length):
        ip, cu_name, off = self._locate(address, length)
        try:
            words = [int(ip.read_register(off + i)) & 0xFFFFFFFF for i in range(0, length, 4)]
        except Exception as exc:
            raise DeviceError(_io_error("read", cu_name, off, exc)) from exc
        return struct.pack(f"<{len(words)}I", *words)

    def write_registers(self, address, data):
        data = bytes(data)
        ip, cu_name, off = self._locate(address, len(data))
        try:
            for i, (word,) in enumerate(struct.iter_unpack("<I", data)):
                ip.write_register(off + 4 * i, word)
        except Exception as exc:
            raise DeviceError(_io_error("write", cu_name, off, exc)) from exc

    def open_context(self, description, shared=True):
        name = description["fullpath"]
        self._ip(name, description.get("cu_name") or name)
        self.contexts[name] = shared
        return description["cu_index"]

    # -- memory ------------------------------------------------------------------------------------
    def allocate_bo(self, desc: dict, nbytes: int) -> _Allocation:
        """A pyxrt bo of `nbytes` in the bank `desc` (pynq mem_dict entry), mapped on the host."""
        if self.xclbin_uuid is None:
            raise DeviceError(f"no xclbin is loaded on {self.card_name}: load the overlay before "
                              f"allocating buffers")
        if not desc.get("used"):
            raise DeviceError(f"{desc['tag']} is not connected to any compute unit of the loaded "
                              f"design, so it cannot hold buffers; use one of "
                              f"{[t for t, d in self.mem_dict.items() if d.get('used')]}")
        try:
            bo = self.pyxrt.bo(self.handle, max(int(nbytes), 1), self.pyxrt.bo.flags.normal,
                               desc["idx"])
            host = np.frombuffer(bo.map(), np.uint8, count=int(nbytes))
            address = int(bo.address())
        except Exception as exc:
            raise DeviceError(f"XRT cannot allocate {nbytes} bytes in {desc['tag']}: {exc}. "
                              f"Free buffers you no longer need (the bank holds "
                              f"{desc['size'] >> 20} MiB)") from exc
        alloc = _Allocation(self, desc["tag"], bo, host, address, int(nbytes))
        self._live[id(alloc)] = alloc
        return alloc

    def free_buffer(self, alloc: _Allocation) -> None:
        if not alloc.freed:
            alloc.freed = True
            alloc.bo = None                               # the last reference: XRT frees it
            self._live.pop(id(alloc), None)

    def _sync(self, alloc: _Allocation, offset: int, nbytes: int, to_device: bool) -> None:
        if alloc.freed:
            raise DeviceError(f"{alloc.describe()} was freed; allocate a new buffer")
        if offset < 0 or offset + nbytes > alloc.nbytes:
            raise DeviceError(f"sync of bytes {offset}..{offset + nbytes} is outside "
                              f"{alloc.describe()}; sync the buffer or a view of it")
        if nbytes == 0:
            return
        d = self.pyxrt.xclBOSyncDirection
        direction = d.XCL_BO_SYNC_BO_TO_DEVICE if to_device else d.XCL_BO_SYNC_BO_FROM_DEVICE
        try:
            alloc.bo.sync(direction, int(nbytes), int(offset))
        except Exception as exc:
            raise DeviceError(f"XRT sync {'to' if to_device else 'from'} the device failed for "
                              f"{alloc.describe()}: {exc}") from exc

    def flush(self, bo, offset, ptr, size):
        self._sync(bo, offset, size, to_device=True)

    def invalidate(self, bo, offset, ptr, size):
        self._sync(bo, offset, size, to_device=False)


def _check_kernels(design: BlockDesign, parser, path) -> None:
    """Every compute unit of the design, with our register offsets and wiring, is in the xclbin."""
    for unit in design.compute_units:
        got = parser.ip_dict.get(unit.instance)
        if got is None or got.get("type") != unit.vlnv:
            raise BitstreamError(f"{path} has no compute unit {unit.instance} of kernel "
                                 f"{unit.vlnv}: it is not the FlightLLM design of target "
                                 f"{design.target}; " + BUILD_HINT.format(platform=design.platform))
        for reg in unit.registers:
            r = got["registers"].get(reg.name, {})
            want_mem = unit.port(reg.port).memory if reg.is_pointer else None
            if r.get("address_offset") != reg.offset or (reg.is_pointer and r.get("memory") != want_mem):
                raise BitstreamError(
                    f"{unit.instance}.{reg.name} is at offset {r.get('address_offset')} wired to "
                    f"{r.get('memory')} in {path} but at 0x{reg.offset:x} wired to {want_mem} in "
                    f"hw/design.py: rebuild the xclbin from this version of the design")


def _platform_vbnv(data: bytes) -> str:
    head = X.axlf.from_buffer_copy(data[:ctypes.sizeof(X.axlf)])
    return bytes(head.m_header.m_platformVBNV).split(b"\0", 1)[0].decode(errors="replace")


def _io_error(what: str, cu_name: str, offset: int, exc: Exception) -> str:
    return (f"XRT register {what} of {cu_name} at offset 0x{offset:x} failed: {exc}. The card may "
            f"have lost its xclbin (`xbutil examine`); reload the overlay")


def _read(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BitstreamError(f"cannot read {path}: {exc.strerror}") from exc
