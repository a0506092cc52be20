"""Host side of XrtU280's memory: pyxrt bo allocations, the PynqBuffer over their host mapping, banks."""
from __future__ import annotations

import warnings

import numpy as np

with warnings.catch_warnings():       # pynq warns about the CPU on x86 at import: only that
    warnings.filterwarnings("ignore", message="Pynq does not support the CPU Architecture",
                            category=ResourceWarning)
    from pynq.buffer import PynqBuffer

__all__ = ["XrtBuffer", "XrtMemoryBank"]


class _Allocation:
    """One pyxrt bo with its host mapping: the `bo` attribute of an XrtBuffer."""

    def __init__(self, device, tag, bo, host, address, nbytes):
        self.device, self.tag, self.bo, self.host = device, tag, bo, host
        self.address, self.nbytes, self.freed = address, nbytes, False

    def describe(self) -> str:
        return (f"buffer 0x{self.address:x}..0x{self.address + self.nbytes:x} ({self.nbytes} "
                f"bytes) in {self.tag}")


class XrtBuffer(PynqBuffer):
    """A PynqBuffer over a pyxrt bo.  Only the array `allocate` returned owns the bo; views share
    it and sync exactly their own bytes.  Freeing is idempotent; do not touch the array after."""

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


class XrtMemoryBank:
    """One bank of the card as pynq sees it (what ``ol.HBM4`` returns): `allocate` buffers in it."""

    def __init__(self, device, desc: dict):
        self.device, self.desc = device, desc
        self.idx, self.size, self.base_address = desc["idx"], desc["size"], desc["base_address"]
        self.tag = desc["tag"]

    def allocate(self, shape, dtype="u4", cacheable=0, **kwargs):
        """A new PynqBuffer of `shape`/`dtype` in this bank (contents undefined until written)."""
        if kwargs:
            raise TypeError(f"allocate() got unexpected arguments {sorted(kwargs)}")
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        alloc = self.device.allocate_bo(self.desc, nbytes)
        buf = XrtBuffer(shape, dtype, buffer=alloc.host, device=self.device,
                        device_address=alloc.address, bo=alloc, coherent=False)
        buf._owner = True
        buf.memory = self
        return buf

    @property
    def num_buffers(self) -> int:
        return sum(a.tag == self.tag for a in self.device._live.values())

    @property
    def mem_used(self) -> int:
        return sum(a.nbytes for a in self.device._live.values() if a.tag == self.tag)

    def __hash__(self):
        return hash((id(self.device), self.idx))

    def __eq__(self, other):
        return type(other) is XrtMemoryBank and other.device is self.device and other.idx == self.idx

    def __repr__(self):
        return f"XrtMemoryBank({self.tag}, {self.size >> 20} MiB, {self.device.card_name})"
