"""pynq-facing memory shared by our devices: the bank (what ``ol.HBM0`` returns) and its buffers."""
from __future__ import annotations

import numpy as np
from pynq.buffer import PynqBuffer

from ..errors import DeviceError

__all__ = ["BankAccess", "MemoryBank", "SlicedBuffer", "check_sync", "size_text"]


def size_text(nbytes: int) -> str:
    """`nbytes` for people: ``1.0 MiB (1048576 bytes)``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit} ({nbytes} bytes)"
    return f"{nbytes} bytes"


def check_sync(alloc, offset: int, nbytes: int) -> None:
    """Refuse a sync of a freed allocation, or of bytes outside it (`alloc` has ``freed``,
    ``nbytes`` and ``describe()``)."""
    if alloc.freed:
        raise DeviceError(f"{alloc.describe()} was freed; allocate a new buffer")
    if offset < 0 or offset + nbytes > alloc.nbytes:
        raise DeviceError(f"sync of bytes {offset}..{offset + nbytes} is outside "
                          f"{alloc.describe()}; sync the buffer or a view of it, not a "
                          f"computed copy")


class SlicedBuffer(PynqBuffer):
    """A `PynqBuffer` whose views sync exactly their own bytes (`bo.host` is the host array).

    Only the array returned by `allocate` owns the allocation; views and slices share it.
    Freeing (explicitly, by `with`, or by garbage collection) is idempotent.
    """

    _owner = False

    def freebuffer(self):
        if self._owner and not getattr(self, "freed", True):
            self.freed = True
            self.device.free_buffer(self.bo)

    def _span(self):
        low, high = np.byte_bounds(np.asarray(self))
        return low - self.bo.host.ctypes.data, high - low

    def flush(self):
        offset, nbytes = self._span()
        self.device.flush(self.bo, offset, self.virtual_address, nbytes)

    def invalidate(self):
        offset, nbytes = self._span()
        self.device.invalidate(self.bo, offset, self.virtual_address, nbytes)


class MemoryBank:
    """One bank as pynq sees it (like pynq's XrtMemory): `allocate` buffers in it.

    The device makes the allocation (``allocate_device(desc, nbytes)``, an object with ``host``
    and ``address``) and counts what a bank holds (``bank_usage(tag)``); a subclass names the
    buffer class that wraps an allocation.
    """

    buffer_class = SlicedBuffer
    #: Whether a new buffer's host and device copies both start as zeros (the simulated card's
    #: do); a card's make no such promise, so their users write and sync the zeros themselves.
    zeroed = False

    def __init__(self, device, desc: dict):
        self.device, self.desc = device, desc
        self.idx, self.size, self.base_address = desc["idx"], desc["size"], desc["base_address"]
        self.tag = desc["tag"]

    def allocate(self, shape, dtype="u4", cacheable=0, **kwargs):
        """A new `PynqBuffer` of `shape`/`dtype` in this bank."""
        if kwargs:
            raise TypeError(f"allocate() got unexpected arguments {sorted(kwargs)}")
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        alloc = self.device.allocate_device(self.desc, nbytes)
        buf = self.buffer_class(shape, dtype, buffer=alloc.host, device=self.device,
                                device_address=alloc.address, bo=alloc, coherent=False)
        buf._owner = True
        buf.memory = self
        return buf

    @property
    def num_buffers(self) -> int:
        return self.device.bank_usage(self.tag)[0]

    @property
    def mem_used(self) -> int:
        return self.device.bank_usage(self.tag)[1]

    def __hash__(self):
        return hash((id(self.device), self.idx))

    def __eq__(self, other):
        return type(other) is type(self) and other.device is self.device and other.idx == self.idx

    def __repr__(self):
        return f"{type(self).__name__}({self.tag}, {size_text(self.size)}, {self.device.bank_owner})"


class BankAccess:
    """pynq Device memory lookups shared by our devices; a subclass names its `bank_class` and
    says in `bank_where` where the banks come from (for error messages)."""

    bank_class = MemoryBank
    bank_where = "the device"

    def get_memory(self, desc):
        if desc.get("streaming"):
            raise DeviceError(f"{desc['tag']} is a stream, not a memory bank")
        return self.bank_class(self, desc)

    def get_memory_by_name(self, name: str):
        for tag, desc in self.mem_dict.items():
            if name in (tag, tag.replace("[", "").replace("]", "")):
                return self.get_memory(desc)
        raise DeviceError(f"{self.bank_where} has no memory bank {name!r}; banks are "
                          f"{list(self.mem_dict)}")

    def get_memory_by_idx(self, idx: int):
        for desc in self.mem_dict.values():
            if desc["idx"] == idx:
                return self.get_memory(desc)
        raise DeviceError(f"{self.bank_where} has no memory bank with index {idx}")

    @property
    def default_memory(self):
        used = [d for d in self.mem_dict.values() if d["used"] and not d.get("streaming")]
        if len(used) != 1:
            raise DeviceError(f"the design uses {len(used)} memory banks, so there is no default: "
                              f"allocate with pynq.allocate(shape, dtype, target=ol.HBM0) or "
                              f"dev.allocate(shape, dtype, bank='HBM[0]')")
        return self.get_memory(used[0])

    def allocate(self, shape, dtype="u4", bank: str | None = None, **kwargs):
        """Allocate a buffer in `bank` (e.g. ``"HBM[4]"`` or ``"HBM4"``)."""
        memory = self.get_memory_by_name(bank) if bank else self.default_memory
        return memory.allocate(shape, dtype, **kwargs)
