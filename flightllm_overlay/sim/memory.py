"""Device memory of the simulated card: banks, buffers with separate host and device copies, versions.

Every buffer has two numpy byte arrays, like a buffer on a PCIe card: the host copy (what the
`PynqBuffer` shows) and the device copy (what the accelerator reads and writes).  Only
`sync_to_device` / `sync_from_device` move bytes between them, so a forgotten sync gives stale
data exactly as on the card.  Device addresses are allocated per bank (first fit, 4 KiB aligned)
inside the bank's address range, and bank capacity is enforced.

The functional simulator uses `DeviceMemory` through three calls:

- ``view(address, nbytes)``: a writable, zero-copy uint8 view of the device copy;
- ``version(address[, nbytes])``: a number that changes whenever a byte of that range's 1 MiB
  pages of the device copy is written by the host (sync_to_device) or by the simulator;
- ``touch(address[, nbytes])``: the simulator reports that it wrote the buffer.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from ..device.memory import MemoryBank, SlicedBuffer, check_sync, size_text as _size
from ..errors import AddressError, DeviceError

ALIGNMENT = 4096
PAGE = 1 << 20                          # versions are kept per 1 MiB page of a buffer
_versions = itertools.count(1)          # process-wide, so a version is never reused


@dataclass(eq=False)
class Allocation:
    """One device buffer: its address range and both copies (the `bo` of its PynqBuffer)."""

    bank: "Bank"
    address: int                 # device address of byte 0
    nbytes: int                  # bytes the buffer holds
    span: int                    # bytes of address space it reserves (aligned)
    host: np.ndarray = field(repr=False)     # uint8 host copy (the PynqBuffer's memory)
    device: np.ndarray = field(repr=False)   # uint8 device copy
    version: int = 0
    freed: bool = False
    pages: np.ndarray = field(default=None, repr=False)   # version of each PAGE of the buffer

    def __post_init__(self):
        if self.pages is None:
            self.pages = np.full(max(1, -(-self.nbytes // PAGE)), self.version, np.int64)

    def page_range(self, offset: int, nbytes: int) -> slice:
        return slice(offset // PAGE, (offset + max(nbytes, 1) - 1) // PAGE + 1)

    def stamp(self, offset: int, nbytes: int) -> None:
        """Mark bytes [offset, offset + nbytes) as written: their pages get a fresh version."""
        self.version = next(_versions)
        self.pages[self.page_range(offset, nbytes)] = self.version

    @property
    def end(self) -> int:
        return self.address + self.nbytes

    def describe(self) -> str:
        return f"buffer 0x{self.address:x}..0x{self.end:x} ({self.nbytes} bytes) in {self.bank.tag}"


class Bank:
    """A memory bank: an address range and the buffers allocated in it."""

    def __init__(self, tag: str, index: int, base_address: int, size: int, used: bool):
        self.tag, self.index, self.base, self.size, self.used = tag, index, base_address, size, used
        self.allocations: list = []      # sorted by address

    @property
    def end(self) -> int:
        return self.base + self.size

    @property
    def bytes_used(self) -> int:
        return sum(a.span for a in self.allocations)

    def contains(self, address: int) -> bool:
        return self.base <= address < self.end

    def allocate(self, nbytes: int) -> Allocation:
        span = max(ALIGNMENT, -(-nbytes // ALIGNMENT) * ALIGNMENT)
        cursor, index = self.base, 0
        for index, alloc in enumerate(self.allocations):
            if alloc.address - cursor >= span:
                break
            cursor = alloc.address + alloc.span
        else:
            index = len(self.allocations)
        if self.end - cursor < span:
            raise DeviceError(
                f"cannot allocate {_size(nbytes)} in {self.tag}: the bank holds {_size(self.size)}, "
                f"{_size(self.bytes_used)} are allocated in {len(self.allocations)} buffers and no "
                f"free block is large enough. Free buffers you no longer need, or split the data "
                f"across several banks")
        alloc = Allocation(self, cursor, nbytes, span, np.zeros(nbytes, np.uint8),
                           np.zeros(nbytes, np.uint8), next(_versions))
        self.allocations.insert(index, alloc)
        return alloc

    def free(self, alloc: Allocation) -> None:
        if not alloc.freed:
            alloc.freed = True
            self.allocations.remove(alloc)


class DeviceMemory:
    """All banks of the simulated card, addressed by device address."""

    def __init__(self, banks):
        self.banks = {b.tag: b for b in banks}
        self._recent = {}                  # address >> 28 -> allocation last found there

    @classmethod
    def from_mem_dict(cls, mem_dict: dict) -> "DeviceMemory":
        """Banks from pynq's mem_dict (streaming entries are not memories)."""
        return cls(Bank(tag, d["idx"], d["base_address"], d["size"], bool(d["used"]))
                   for tag, d in mem_dict.items() if not d.get("streaming"))

    def layout(self) -> tuple:
        return tuple(sorted((b.tag, b.base, b.size, b.used) for b in self.banks.values()))

    def bank(self, tag: str) -> Bank:
        try:
            return self.banks[tag]
        except KeyError:
            raise DeviceError(f"the loaded design has no memory bank {tag!r}; its banks are "
                              f"{sorted(self.banks, key=_bank_order)}") from None

    def bank_at(self, address: int) -> Bank | None:
        for b in self.banks.values():
            if b.contains(address):
                return b
        return None

    def free_all(self) -> None:
        for b in self.banks.values():
            for alloc in list(b.allocations):
                b.free(alloc)

    # -- the simulator's interface -------------------------------------------------------------
    def find(self, address: int, nbytes: int = 1) -> Allocation:
        """The allocated buffer holding [address, address + nbytes); AddressError otherwise."""
        address, nbytes = int(address), int(nbytes)
        recent = self._recent.get(address >> 28)       # the simulator asks for the same few
        if (recent is not None and not recent.freed and recent.address <= address
                and address + nbytes <= recent.end):
            return recent
        bank = self.bank_at(address)
        for alloc in bank.allocations if bank else ():
            if alloc.address <= address and address + nbytes <= alloc.end:
                self._recent[address >> 28] = alloc
                return alloc
        raise AddressError(self._explain(address, nbytes, bank))

    def view(self, address: int, nbytes: int) -> np.ndarray:
        """Writable uint8 view of the device copy of [address, address + nbytes)."""
        alloc = self.find(address, nbytes)
        start = int(address) - alloc.address
        return alloc.device[start:start + int(nbytes)]

    def version(self, address: int, nbytes: int = 1) -> int:
        """Changes whenever the device copy of [address, address + nbytes) may have been written.

        Kept per 1 MiB page, so that writes to a buffer's KV cache do not invalidate what the
        simulator derived from the weights held in the same buffer."""
        nbytes = max(int(nbytes), 1)
        alloc = self.find(address, nbytes)
        off = int(address) - alloc.address
        first, last = off // PAGE, (off + nbytes - 1) // PAGE
        if first == last:                                 # the common case, without numpy
            return int(alloc.pages[first])
        return int(alloc.pages[first:last + 1].max())

    def touch(self, address: int, nbytes: int = 1) -> None:
        """Record that the device side wrote [address, address + nbytes)."""
        nbytes = max(int(nbytes), 1)
        alloc = self.find(address, nbytes)
        alloc.stamp(int(address) - alloc.address, nbytes)

    def read(self, address: int, nbytes: int) -> bytes:
        return self.view(address, nbytes).tobytes()

    def _explain(self, address: int, nbytes: int, bank: Bank | None) -> str:
        what = f"device address range 0x{address:x}..0x{address + nbytes:x} ({nbytes} bytes)"
        if bank is None:
            banks = ", ".join(f"{b.tag} 0x{b.base:x}..0x{b.end:x}"
                              for b in sorted(self.banks.values(), key=lambda b: b.base))
            return f"{what} is in no memory bank; the banks are {banks}"
        if not bank.allocations:
            return f"{what} lies in {bank.tag}, where no buffer is allocated: allocate one there"
        near = min(bank.allocations, key=lambda a: 0 if a.address <= address < a.end else
                   min(abs(address - a.address), abs(address - a.end)))
        if near.address <= address < near.end:
            return (f"{what} runs {address + nbytes - near.end} bytes past the end of "
                    f"{near.describe()}")
        return (f"{what} is not inside one allocated buffer of {bank.tag}; the nearest is "
                f"{near.describe()}")

    # -- host side (called by the device for PynqBuffer.flush / invalidate) ---------------------
    @staticmethod
    def sync(alloc: Allocation, offset: int, nbytes: int, to_device: bool) -> None:
        check_sync(alloc, offset, nbytes)
        if to_device:
            alloc.device[offset:offset + nbytes] = alloc.host[offset:offset + nbytes]
            alloc.stamp(offset, nbytes)
        else:
            alloc.host[offset:offset + nbytes] = alloc.device[offset:offset + nbytes]


def _bank_order(tag: str):
    kind, _, number = tag.partition("[")
    number = number.rstrip("]")
    return kind, int(number) if number.isdigit() else 0


# ---------------------------------------------------------------------------------------------
# The simulated card's bank and buffer (pynq-facing; the shared parts are in device/memory.py)
# ---------------------------------------------------------------------------------------------
class SimBuffer(SlicedBuffer):
    """A buffer of the simulated card: host memory is a numpy array, the device copy apart."""


class SimMemoryBank(MemoryBank):
    """A bank of the simulated card (host and device copies zeroed on allocation)."""

    buffer_class = SimBuffer
    zeroed = True
