"""Fakes of pyxrt 2.15 / 2.18 and of libxrt_coreutil that bind exactly what those XRT releases bind.

Written from XRT's sources (github.com/Xilinx/XRT), read at the release tags:

- pyxrt: ``src/python/pybind11/src/pyxrt.cpp`` at 202310.2.15.225 (XRT 2.15, Vitis 2023.1) and
  202420.2.18.179 (XRT 2.18, Vitis 2024.2).  Every class, method and overload below is one that
  file binds (x86 build: no ``graph``); pybind11's strictness is kept: an overload is chosen by
  argument types (an enum argument must be the enum, not an int) and anything else raises
  TypeError; an attribute that is not bound raises AttributeError (module-level misses are
  recorded in ``fake.absent``); instances take no new attributes.  `BOUND` lists everything
  each release binds; the fake implements the part of it the host could use (a bound call the
  fake leaves out, such as ``bo.write`` or ``xclbin.get_kernels``, also raises here, so the
  fake is never wider than XRT).
- libxrt_coreutil: ``src/runtime_src/core/include/xrt/xrt_device.h`` and ``xrt/xrt_kernel.h``
  at the same tags (identical for the calls below).  A function must be given the header's
  ``restype``/``argtypes`` before it is called; failures return NULL / -1 and set errno, and
  register access needs a kernel opened with exclusive access to exactly one compute unit.

Behind the fakes, each card is a SimulatedU280 ("engine") that runs what is loaded on it.
"""
from __future__ import annotations

import ctypes
import enum
import errno
import struct
import types
import uuid as _uuid

from pynq._3rdparty import xclbin as X

from flightllm_overlay.hw import control as C
from flightllm_overlay.sim.device import SimulatedU280
from flightllm_overlay.sim.memory import DeviceMemory

VERSIONS = ("2.15", "2.18")
U280 = "xilinx_u280_gen3x16_xdma_base_1"

# What each pyxrt binds (module level, then per class), as read from pyxrt.cpp at the tags.
_COMMON_MODULE = {"XCL_BO_FLAGS_NONE", "xclBOSyncDirection", "ert_cmd_state", "xrt_info_device",
                  "uuid", "device", "run", "kernel", "bo", "xclbin", "xclbinip_vector",
                  "xclbinkernel_vector", "xclbinmem_vector"}
BOUND = {
    "2.15": {"module": _COMMON_MODULE,
             "device": {"load_xclbin", "get_xclbin_uuid", "get_info"},
             "bo": {"write", "read", "sync", "map", "size", "address"},
             "xclbin": {"get_kernels", "get_xsa_name", "get_uuid", "get_mems", "get_ips"},
             "kernel": {"__call__", "group_id"}, "uuid": {"to_string"}},
    "2.18": {"module": _COMMON_MODULE | {"xrt_msg_level", "enumerate_devices", "log_message",
                                         "hw_context"},
             "device": {"load_xclbin", "register_xclbin", "get_xclbin_uuid", "get_info"},
             "uuid": {"to_string"},
             "bo": {"write", "read", "sync", "map", "size", "address"},
             "xclbin": {"get_kernels", "get_xsa_name", "get_uuid", "get_mems", "get_axlf"},
             "kernel": {"__call__", "group_id"}},
}

SyncDir = enum.IntEnum("xclBOSyncDirection", [
    "XCL_BO_SYNC_BO_TO_DEVICE", "XCL_BO_SYNC_BO_FROM_DEVICE", "XCL_BO_SYNC_BO_GMIO_TO_AIE",
    "XCL_BO_SYNC_BO_AIE_TO_GMIO"], start=0)
InfoKey = enum.IntEnum("xrt_info_device", [
    "bdf", "interface_uuid", "kdma", "max_clock_frequency_mhz", "m2m", "name", "nodma", "offline",
    "electrical", "thermal", "mechanical", "memory", "platform", "pcie_info", "host",
    "dynamic_regions", "vmr"], start=0)
CmdState = enum.IntEnum("ert_cmd_state", [
    "ERT_CMD_STATE_NEW", "ERT_CMD_STATE_QUEUED", "ERT_CMD_STATE_COMPLETED", "ERT_CMD_STATE_ERROR",
    "ERT_CMD_STATE_ABORT", "ERT_CMD_STATE_SUBMITTED", "ERT_CMD_STATE_TIMEOUT",
    "ERT_CMD_STATE_NORESPONSE", "ERT_CMD_STATE_SKERROR", "ERT_CMD_STATE_SKCRASHED"], start=1)
BoFlags = enum.IntEnum("flags", {"normal": 0, "cacheable": 1 << 24, "device_only": 1 << 25,
                                 "host_only": 1 << 29, "p2p": 1 << 30, "svm": 1 << 27})
AccessMode = enum.IntEnum("cu_access_mode", ["exclusive", "shared", "none"], start=0)


def _is(value, kind) -> bool:
    if kind is int:                        # pybind11's int caster: an int, not an enum or float
        return isinstance(value, int) and not isinstance(value, (bool, enum.Enum))
    return isinstance(value, kind)


def _overload(name, args, *signatures):
    """Index of the first signature the arguments match, like pybind11's overload resolution."""
    for i, sig in enumerate(signatures):
        if len(sig) == len(args) and all(_is(a, k) for a, k in zip(args, sig)):
            return i
    raise TypeError(f"{name}(): incompatible function arguments. Supported: "
                    f"{[tuple(k.__name__ for k in s) for s in signatures]}; invoked with: "
                    f"{tuple(type(a).__name__ for a in args)}")


def make_pyxrt(version="2.18", cards=(U280,), simulator_factory=None):
    """A module standing in for pyxrt `version`; `fake.log` lists every call made on it."""
    if version not in VERSIONS:
        raise ValueError(f"no fake of pyxrt {version}; have {VERSIONS}")
    bound = BOUND[version]
    fake = _FakeModule("pyxrt", bound["module"])
    fake.__file__ = f"<fake pyxrt {version}>"
    fake.version, fake.log, fake.absent = version, [], []
    fake.cards = [types.SimpleNamespace(name=name, index=i, loaded=None,
                                        engine=SimulatedU280(simulator_factory=simulator_factory))
                  for i, name in enumerate(cards)]
    log = fake.log.append
    serial = iter(range(1, 1 << 30))
    fake.XCL_BO_FLAGS_NONE = 0
    fake.xclBOSyncDirection, fake.xrt_info_device, fake.ert_cmd_state = SyncDir, InfoKey, CmdState

    class uuid:
        __slots__ = ("raw",)

        def __init__(self, *args):                              # py::init<char *>()
            _overload("uuid", args, (str,))
            self.raw = _uuid.UUID(args[0]).bytes

        def to_string(self):                                    # uuid_unparse_lower
            log(("uuid.to_string",))
            return str(_uuid.UUID(bytes=self.raw))

    class xclbin:
        __slots__ = ("path", "uuid")

        def __init__(self, *args):
            _overload("xclbin", args, (str,))                   # (), (str), (axlf*): str used
            log(("xclbin", args[0]))
            with open(args[0], "rb") as f:
                data = f.read()
            if not data.startswith(b"xclbin2"):
                raise RuntimeError("Invalid xclbin")
            head = X.axlf.from_buffer_copy(data[:ctypes.sizeof(X.axlf)])
            self.path, self.uuid = args[0], uuid(str(_uuid.UUID(bytes=bytes(head.m_header.uuid))))

        def get_uuid(self):
            log(("xclbin.get_uuid",))
            return self.uuid

    class device:
        __slots__ = ("card",)

        def __init__(self, *args):
            _overload("device", args, (), (int,), (str,))
            log(("device",) + args)
            index = args[0] if args else None
            if not isinstance(index, int) or not 0 <= index < len(fake.cards):
                raise RuntimeError(f"No such device '{index}'")
            self.card = fake.cards[index]

        def get_info(self, *args):
            _overload("get_info", args, (InfoKey,))
            log(("device.get_info", args[0].name))
            return self.card.name if args[0] == InfoKey.name else "0000:3b:00.1"

        def load_xclbin(self, *args):
            i = _overload("load_xclbin", args, (str,), (xclbin,))
            xb = xclbin(args[0]) if i == 0 else args[0]
            log(("device.load_xclbin", str(_uuid.UUID(bytes=xb.uuid.raw))))
            self.card.engine.download(types.SimpleNamespace(bitfile_name=xb.path, partial=False))
            self.card.loaded = xb
            return xb.uuid

        def get_xclbin_uuid(self):
            log(("device.get_xclbin_uuid",))
            return self.card.loaded.uuid

    class bo:
        __slots__ = ("__weakref__", "alloc", "bank", "id")
        flags = BoFlags

        def __init__(self, *args):
            _overload("bo", args, (device, int, BoFlags, int))  # (bo, size, offset): not used
            dev, size, flags, group = args
            self.id = next(serial)
            log(("bo", self.id, size, flags.name, group))
            if dev.card.loaded is None:
                raise RuntimeError("No xclbin loaded")
            self.bank = next(b for b in dev.card.engine.memory.banks.values() if b.index == group)
            self.alloc = self.bank.allocate(size)

        def map(self):
            log(("bo.map", self.id))
            return memoryview(self.alloc.host)

        def address(self):
            log(("bo.address", self.id))
            return self.alloc.address

        def size(self):
            return self.alloc.nbytes

        def sync(self, *args):
            sigs = [(SyncDir, int, int)] + ([(SyncDir,)] if version == "2.18" else [])
            i = _overload("bo.sync", args, *sigs)
            d, size, offset = args if i == 0 else (args[0], self.alloc.nbytes, 0)
            log(("bo.sync", self.id, d.name, size, offset))
            DeviceMemory.sync(self.alloc, offset, size, d == SyncDir.XCL_BO_SYNC_BO_TO_DEVICE)

        def __del__(self):
            if not hasattr(self, "alloc"):                      # its constructor raised
                return
            log(("bo.free", self.id))
            self.bank.free(self.alloc)

    class kernel:                          # bound in both; the host does not use it
        __slots__ = ()
        cu_access_mode = AccessMode

        def __init__(self, *args):
            log(("kernel",) + tuple(type(a).__name__ for a in args))
            raise AssertionError("the fake does not model xrt::kernel runs")

    for name, cls in (("uuid", uuid), ("xclbin", xclbin), ("device", device), ("bo", bo),
                      ("kernel", kernel)):
        setattr(fake, name, cls)

    if version == "2.18":
        def enumerate_devices():
            log(("enumerate_devices",))
            return len(fake.cards)

        class hw_context:
            __slots__ = ()

            def __init__(self, *args):
                _overload("hw_context", args, (), (device, uuid))
                log(("hw_context",))

        def register_xclbin(self, *args):
            _overload("register_xclbin", args, (xclbin,))
            log(("device.register_xclbin",))
            return args[0].uuid

        device.register_xclbin = register_xclbin
        fake.enumerate_devices, fake.hw_context = enumerate_devices, hw_context
    return fake


class _FakeModule(types.ModuleType):
    """A module whose missing attributes are recorded (in `absent`) before AttributeError."""

    def __init__(self, name, bound):
        super().__init__(name)
        self._bound = bound

    def __getattr__(self, name):
        if not name.startswith("__"):
            self.__dict__.setdefault("absent", []).append(name)
        raise AttributeError(f"module 'pyxrt' has no attribute '{name}'")


# --- libxrt_coreutil --------------------------------------------------------------------------
_H, _U32 = ctypes.c_void_p, ctypes.c_uint32
HEADER = {       # xrt_device.h / xrt_kernel.h: (restype, argtypes); const xuid_t -> unsigned char*
    "xrtDeviceOpen": (_H, (ctypes.c_uint,)),
    "xrtDeviceClose": (ctypes.c_int, (_H,)),
    "xrtPLKernelOpen": (_H, (_H, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_char_p)),
    "xrtPLKernelOpenExclusive": (_H, (_H, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_char_p)),
    "xrtKernelClose": (ctypes.c_int, (_H,)),
    "xrtKernelReadRegister": (ctypes.c_int, (_H, _U32, ctypes.POINTER(_U32))),
    "xrtKernelWriteRegister": (ctypes.c_int, (_H, _U32, _U32)),
}


class _CFunction:
    """A C function of the fake library: typed by the caller as ctypes would be, then called."""

    def __init__(self, lib, name, impl):
        self.lib, self.__name__, self.impl = lib, name, impl
        self.restype, self.argtypes = ctypes.c_int, None

    def __call__(self, *args):
        want = HEADER[self.__name__]
        if (self.restype, tuple(self.argtypes or ())) != want:
            raise AssertionError(f"{self.__name__} called with restype {self.restype} and argtypes "
                                 f"{self.argtypes}; the header says {want}")
        if len(args) != len(want[1]):
            raise TypeError(f"this function takes {len(want[1])} arguments ({len(args)} given)")
        self.lib.log.append((self.__name__,) + tuple(_plain(a) for a in args))
        return self.impl(*args)


def _plain(arg):
    if isinstance(arg, bytes):
        return arg.decode()
    if isinstance(arg, ctypes.Array):
        return str(_uuid.UUID(bytes=bytes(arg)))
    return arg if isinstance(arg, int) else type(arg).__name__


class FakeLibXrt:
    """libxrt_coreutil over the cards of a fake pyxrt: device and exclusive kernel handles,
    register reads and writes at CU-relative offsets.  With `hang`, the compute units never
    finish (AP_DONE never comes)."""

    def __init__(self, pyxrt, hang=False):
        self._name = "<fake libxrt_coreutil.so.2>"
        self.pyxrt, self.hang, self.log = pyxrt, hang, []
        self.regs = []               # ("open", cu, exclusive) / ("read", cu, offset) / ("write", cu, offset, value)
        self.devices, self.kernels, self.exclusive = {}, {}, set()
        self._next = iter(range(0x1000, 1 << 40, 0x10))
        impl = {"xrtDeviceOpen": self._device_open, "xrtDeviceClose": self._device_close,
                "xrtPLKernelOpen": lambda d, u, n: self._kernel_open(d, u, n, False),
                "xrtPLKernelOpenExclusive": lambda d, u, n: self._kernel_open(d, u, n, True),
                "xrtKernelClose": self._kernel_close, "xrtKernelReadRegister": self._read,
                "xrtKernelWriteRegister": self._write}
        for name in HEADER:
            setattr(self, name, _CFunction(self, name, impl[name]))

    def __getattr__(self, name):                  # like ctypes.CDLL: no such symbol
        raise AttributeError(f"{self._name}: undefined symbol: {name}")

    @staticmethod
    def _fail(code, value):
        ctypes.set_errno(code)
        return value

    def _device_open(self, index):
        if not 0 <= index < len(self.pyxrt.cards):
            return self._fail(errno.ENODEV, None)
        handle = next(self._next)
        self.devices[handle] = self.pyxrt.cards[index]
        return handle

    def _device_close(self, handle):
        return 0 if self.devices.pop(handle, None) is not None else self._fail(errno.EINVAL, -1)

    def _kernel_open(self, dev, raw_uuid, name, exclusive):
        card = self.devices.get(dev)
        if card is None or card.loaded is None or bytes(raw_uuid[:16]) != card.loaded.uuid.raw:
            return self._fail(errno.EINVAL, None)             # no such xclbin on the device
        kernel, _, rest = name.decode().partition(":")
        if not (rest.startswith("{") and rest.endswith("}")) or "," in rest:
            return self._fail(errno.EINVAL, None)             # one CU, named "kernel:{cu}"
        cu = rest[1:-1]
        d = card.engine.ip_dict.get(cu)
        if d is None or d.get("cu_name") != f"{kernel}:{cu}":
            return self._fail(errno.ENOENT, None)
        key = (id(card), cu)
        if key in self.exclusive:
            return self._fail(errno.EBUSY, None)
        if exclusive:
            self.exclusive.add(key)
        handle = next(self._next)
        self.regs.append(("open", f"{kernel}:{cu}", exclusive))
        self.kernels[handle] = types.SimpleNamespace(card=card, key=key, exclusive=exclusive,
                                                     cu_name=f"{kernel}:{cu}",
                                                     base=d["phys_addr"], size=d["addr_range"],
                                                     regs={})
        return handle

    def _kernel_close(self, handle):
        k = self.kernels.pop(handle, None)
        if k is None:
            return self._fail(errno.EINVAL, -1)
        self.exclusive.discard(k.key)
        return 0

    def _register(self, handle, offset):
        """The kernel, or None with errno as XRT leaves it: -EINVAL for an unknown handle
        (xrt_core::error), untouched (0 here) for a shared CU or an offset outside it."""
        k = self.kernels.get(handle)
        if k is None:
            ctypes.set_errno(-errno.EINVAL)
            return None
        if not k.exclusive or offset + 4 > k.size:
            ctypes.set_errno(0)
            return None
        return k

    def _read(self, handle, offset, datap):
        k = self._register(handle, offset)
        if k is None:
            return -1
        self.regs.append(("read", k.cu_name, offset))
        if self.hang:
            value = k.regs.get(offset, C.AP_IDLE if offset == C.CTRL else 0)
        else:
            value = struct.unpack("<I", k.card.engine.read_registers(k.base + offset, 4))[0]
        datap._obj.value = value
        return 0

    def _write(self, handle, offset, value):
        k = self._register(handle, offset)
        if k is None:
            return -1
        self.regs.append(("write", k.cu_name, offset, value))
        if self.hang:
            k.regs[offset] = value
        else:
            k.card.engine.write_registers(k.base + offset, struct.pack("<I", value))
        return 0
