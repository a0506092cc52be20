"""A bounded least-recently-used store for the simulator's weight snapshots (memory stays flat as sessions come and go).

The functional simulator keeps an immutable copy of the HBM bytes behind each static weight load
(a snapshot) and FP32 matrices derived from it, keyed by physical address.  Sessions allocate
their weights at new addresses, so without a bound every Session ever made would keep its
snapshots alive.  `SnapshotCache` holds at most `max_bytes` (estimated as `WEIGHT_FACTOR` times
each snapshot's bytes, for its derived matrices), evicting the least recently used; an evicted
snapshot is simply rebuilt from HBM on its next use, so results never change.
"""
from __future__ import annotations

import os
from collections import OrderedDict

#: Bytes a snapshot is charged per byte of its HBM copy: the copy, plus FP32 matrices (4 bytes
#: per INT8 weight) derived from it.
WEIGHT_FACTOR = 5
DEFAULT_MAX_BYTES = 2 << 30


def default_max_bytes() -> int:
    """$FLIGHTLLM_SIM_CACHE_MAX (a size such as 512M or 2G), else 2 GiB."""
    value = os.environ.get("FLIGHTLLM_SIM_CACHE_MAX")
    if not value:
        return DEFAULT_MAX_BYTES
    from ..compiler.cache import cache_max_bytes
    return cache_max_bytes(value)


class SnapshotCache:
    """key -> snapshot, least recently used evicted beyond `max_bytes` (`get`, `[key] = snap`)."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        self._items: OrderedDict = OrderedDict()       # key -> (snapshot, charged bytes)
        self.nbytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items

    def get(self, key, default=None):
        item = self._items.get(key)
        if item is None:
            return default
        self._items.move_to_end(key)
        return item[0]

    def __setitem__(self, key, snap) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        charge = WEIGHT_FACTOR * int(getattr(getattr(snap, "data", None), "nbytes", 0))
        self._items[key] = (snap, charge)
        self.nbytes += charge
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            _, (_, freed) = self._items.popitem(last=False)
            self.nbytes -= freed
            self.evictions += 1

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


def snapshot_key(parts, rows, row_bytes, f):
    """Key of the snapshot a static weight load of these HBM parts uses."""
    return tuple(p[1] for p in parts), rows, row_bytes, f.get("hbm_stride", 0)


def memory_version(memory, addr, nbytes):
    """The version of a device-memory range (a memory that versions whole buffers only: of the
    buffer): what a snapshot derived from those bytes is checked against."""
    try:
        return memory.version(addr, nbytes)
    except TypeError:
        return memory.version(addr)
