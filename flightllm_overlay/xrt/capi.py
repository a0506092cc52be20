"""Compute-unit registers through XRT's C API (libxrt_coreutil, by ctypes), as pynq 2.x reached them.

pyxrt 2.15 and 2.18 bind no register access (see `xrt.pyxrt_api`), so each compute unit is
opened with the C API that both releases export from ``libxrt_coreutil.so.2`` (prototypes from
``src/runtime_src/core/include/xrt/xrt_device.h`` and ``xrt/xrt_kernel.h``, identical at the tags
202310.2.15.225 and 202420.2.18.179):

- ``xrtDeviceHandle xrtDeviceOpen(unsigned int index)`` / ``int xrtDeviceClose(xrtDeviceHandle)``;
- ``xrtKernelHandle xrtPLKernelOpenExclusive(xrtDeviceHandle, const xuid_t xclbinId, const char*
  name)`` with ``name = "kernel:{instance}"``: one compute unit, exclusive access, which
  ``xrtKernelReadRegister`` / ``xrtKernelWriteRegister`` require; ``int xrtKernelClose(...)``;
- ``int xrtKernelReadRegister(xrtKernelHandle, uint32_t offset, uint32_t* datap)`` and
  ``int xrtKernelWriteRegister(xrtKernelHandle, uint32_t offset, uint32_t data)``: 0 on success.

Failures come back as a NULL handle or -1, with errno set when XRT raised an ``xrt_core::error``
(sometimes negated) and left alone for other exceptions (an offset outside the CU, a CU not
opened exclusively); each becomes a DeviceError naming the call.  XRT opens one shared device per index, so the C handle and
pyxrt's ``device(index)`` reach the same card and the xclbin pyxrt loaded.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import uuid as _uuid

from ..errors import DeviceError

__all__ = ["PROTOTYPES", "CuRegisters", "XrtCApi", "load_libxrt"]

_handle, _u32 = ctypes.c_void_p, ctypes.c_uint32
PROTOTYPES = {                                  # name: (restype, argtypes)
    "xrtDeviceOpen": (_handle, (ctypes.c_uint,)),
    "xrtDeviceClose": (ctypes.c_int, (_handle,)),
    "xrtPLKernelOpenExclusive": (_handle, (_handle, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_char_p)),
    "xrtKernelClose": (ctypes.c_int, (_handle,)),
    "xrtKernelReadRegister": (ctypes.c_int, (_handle, _u32, ctypes.POINTER(_u32))),
    "xrtKernelWriteRegister": (ctypes.c_int, (_handle, _u32, _u32)),
}
LIBRARY = "libxrt_coreutil.so.2"


def load_libxrt():
    """libxrt_coreutil as a ctypes library (errno kept), or a DeviceError naming where it looked."""
    places = []
    if os.environ.get("XILINX_XRT"):
        places.append(os.path.join(os.environ["XILINX_XRT"], "lib", LIBRARY))
    places.append(LIBRARY)                      # by soname: already loaded when pyxrt is
    found = ctypes.util.find_library("xrt_coreutil")
    if found:
        places.append(found)
    errors = []
    for place in places:
        try:
            return ctypes.CDLL(place, use_errno=True)
        except OSError as exc:
            errors.append(f"{place}: {exc}")
    raise DeviceError("XRT's C library cannot be loaded, and the compute units' registers are "
                      "reached through it (pyxrt binds no register access): tried "
                      + "; ".join(errors) + ". Source /opt/xilinx/xrt/setup.sh (XRT 2.15 or later)")


class XrtCApi:
    """The six C calls above, typed; `lib` is a ctypes library (tests give a fake)."""

    def __init__(self, lib=None):
        self.lib = lib if lib is not None else load_libxrt()
        for name, (restype, argtypes) in PROTOTYPES.items():
            try:
                fn = getattr(self.lib, name)
            except AttributeError as exc:
                raise DeviceError(f"{getattr(self.lib, '_name', self.lib)} has no {name}: this XRT "
                                  f"is too old for the FlightLLM host (use 2.15 or later)") from exc
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)

    def _fail(self, call: str, hint: str) -> DeviceError:
        code = abs(ctypes.get_errno())          # XRT stores some codes negated (-EINVAL)
        why = f"errno {code}: {os.strerror(code)}" if code else "no errno"
        return DeviceError(f"XRT {call} failed ({why}). {hint}")

    def open_device(self, index: int):
        handle = self.xrtDeviceOpen(index)
        if not handle:
            raise self._fail(f"xrtDeviceOpen({index})", "`xbutil examine` lists the cards")
        return handle

    def close_device(self, handle) -> None:
        self.xrtDeviceClose(handle)

    def open_cu(self, device, xclbin_uuid: str, kernel: str, instance: str):
        """An exclusive kernel handle on the one compute unit `instance` of `kernel`."""
        raw = (ctypes.c_ubyte * 16).from_buffer_copy(_uuid.UUID(xclbin_uuid).bytes)
        name = f"{kernel}:{{{instance}}}"
        handle = self.xrtPLKernelOpenExclusive(device, raw, name.encode())
        if not handle:
            raise self._fail(
                f"xrtPLKernelOpenExclusive({name!r})",
                "Register access needs the compute unit for this process alone: stop other "
                "programs using the card, then reload the overlay (a kernel without ap_ctrl "
                "registers, ap_ctrl_none, cannot be opened this way)")
        return handle

    def close_cu(self, handle) -> None:
        self.xrtKernelClose(handle)

    def read(self, handle, offset: int) -> int:
        value = _u32()
        if self.xrtKernelReadRegister(handle, offset, ctypes.byref(value)) != 0:
            raise self._fail(f"xrtKernelReadRegister(offset 0x{offset:x})", _LOST)
        return value.value

    def write(self, handle, offset: int, value: int) -> None:
        if self.xrtKernelWriteRegister(handle, offset, value & 0xFFFFFFFF) != 0:
            raise self._fail(f"xrtKernelWriteRegister(offset 0x{offset:x})", _LOST)


_LOST = "The card may have lost its xclbin (`xbutil examine`); reload the overlay"


class CuRegisters:
    """One compute unit's register window on the card, opened on first use (exclusively)."""

    def __init__(self, capi: XrtCApi, device, xclbin_uuid: str, name: str, cu_name: str,
                 base: int, size: int, free_running: bool = False):
        self.capi, self.device, self.xclbin_uuid = capi, device, xclbin_uuid
        self.name, self.cu_name, self.base, self.size = name, cu_name, base, size
        self.free_running, self.handle = free_running, None

    def open(self):
        if self.free_running:
            raise DeviceError(
                f"compute unit {self.cu_name} is ap_ctrl_none (free-running): XRT opens such "
                f"units only through the C++ xrt::ip, which pyxrt does not bind, and the C API "
                f"refuses them (ENOTSUP), so its registers cannot be reached from Python. Give "
                f"the kernel an ap_ctrl_hs or ap_ctrl_chain control port to read its registers")
        if self.handle is None:
            kernel, _, instance = self.cu_name.partition(":")
            self.handle = self.capi.open_cu(self.device, self.xclbin_uuid, kernel,
                                            instance or kernel)
        return self.handle

    def read(self, offset: int) -> int:
        return self._do(self.capi.read, offset)

    def write(self, offset: int, value: int) -> None:
        self._do(self.capi.write, offset, value)

    def _do(self, call, offset, *value):
        try:
            return call(self.open(), offset, *value)
        except DeviceError as exc:
            raise DeviceError(f"{self.cu_name}: {exc}") from exc

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            self.capi.close_cu(handle)
