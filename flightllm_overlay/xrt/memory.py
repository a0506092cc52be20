"""Host side of XrtU280's memory: pyxrt bo allocations, the PynqBuffer over their host mapping, banks."""
from __future__ import annotations

import warnings


with warnings.catch_warnings():       # pynq warns about the CPU on x86 at import: only that
    warnings.filterwarnings("ignore", message="Pynq does not support the CPU Architecture",
                            category=ResourceWarning)
    from ..sim.memory import MemoryBank, SlicedBuffer

__all__ = ["XrtBuffer", "XrtMemoryBank"]


class _Allocation:
    """One pyxrt bo with its host mapping: the `bo` attribute of an XrtBuffer."""

    def __init__(self, device, tag, bo, host, address, nbytes):
        self.device, self.tag, self.bo, self.host = device, tag, bo, host
        self.address, self.nbytes, self.freed = address, nbytes, False

    def describe(self) -> str:
        return (f"buffer 0x{self.address:x}..0x{self.address + self.nbytes:x} ({self.nbytes} "
                f"bytes) in {self.tag}")


class XrtBuffer(SlicedBuffer):
    """A PynqBuffer over a pyxrt bo.  Only the array `allocate` returned owns the bo; views share
    it and sync exactly their own bytes.  Freeing is idempotent; do not touch the array after."""


class XrtMemoryBank(MemoryBank):
    """One bank of the card as pynq sees it (what ``ol.HBM4`` returns): `allocate` buffers in it
    (contents undefined until written)."""

    buffer_class = XrtBuffer

    def _allocation(self, nbytes: int):
        return self.device.allocate_bo(self.desc, nbytes)

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
