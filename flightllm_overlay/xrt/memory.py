"""Host side of XrtU280's memory: a pyxrt bo with its host mapping, and the buffer and bank over it."""
from __future__ import annotations

from ..device.memory import MemoryBank, SlicedBuffer

__all__ = ["BoAllocation", "XrtBuffer", "XrtMemoryBank"]


class BoAllocation:
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
