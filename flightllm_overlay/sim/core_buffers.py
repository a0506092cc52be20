"""A simulated core's on-chip buffers (wbuf, abuf, gbuf, meta, fsb, bias) and unit tokens: storage, lazy weight ranges, typed views."""
from __future__ import annotations

import numpy as np

from ..spec import isa
from ..config import UNITS, Target
from ..errors import AddressError, ProgramError

_F16, _F32, _I8 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.int8)


class Snapshot:
    """Immutable copy of HBM bytes loaded into the weight buffer, with derived FP32 matrices."""

    __slots__ = ("version", "data", "derived")

    def __init__(self, version, data):
        self.version, self.data, self.derived = version, data, {}


class Core:
    def __init__(self, target: Target, index: int):
        self.index = index
        self.bufs = {name: np.zeros(target.buffer(name).bytes, np.uint8) for name in isa.BUFFERS}
        self.wtags = []          # [(start, end, _Snapshot, base)] lazily loaded weight-buffer ranges
        self.tokens = [[0] * len(UNITS) for _ in UNITS]   # tokens[src][dst]

    # -- weight buffer laziness ---------------------------------------------------------------
    # A tag (t0, t1, snap, base) says: wbuf[t0:t1] holds snap.data[t0 - base : t1 - base].
    def materialize(self, start: int, end: int) -> None:
        """Write the bytes of every lazy range overlapping [start, end) into the buffer."""
        keep = []
        for t0, t1, snap, base in self.wtags:
            if t0 < end and start < t1:
                self.bufs["wbuf"][t0:t1] = snap.data[t0 - base:t1 - base]
            else:
                keep.append((t0, t1, snap, base))
        self.wtags = keep

    def replace_tags(self, start: int, end: int, snap) -> None:
        """A new lazy load of [start, end): older ranges keep only what lies outside it."""
        keep = []
        for t0, t1, old, base in self.wtags:
            if t1 <= start or end <= t0:
                keep.append((t0, t1, old, base))
                continue
            if t0 < start:
                keep.append((t0, start, old, base))
            if end < t1:
                keep.append((end, t1, old, base))
        keep.append((start, end, snap, start))
        self.wtags = keep

    def find_tag(self, start: int, end: int):
        """(base, snapshot) of the lazy range holding all of [start, end), or None."""
        for t0, t1, snap, base in self.wtags:
            if t0 <= start and end <= t1:
                return base, snap
        return None


def _region(buf: np.ndarray, addr: int, rows: int, row_bytes: int, stride: int, what: str):
    if rows == 0 or row_bytes == 0:
        return 0
    end = addr + (rows - 1) * stride + row_bytes
    if addr < 0 or end > buf.size:
        raise AddressError(f"{what}: bytes {addr:#x}..{end:#x} fall outside the "
                           f"{buf.size:#x}-byte buffer")
    return end


_VIEWS = {}


def _array(buf, addr, rows, cols, dtype, stride, what):
    """A (rows, cols) view of `dtype` elements at byte `addr` with byte row `stride` (cached:
    the on-chip buffers live as long as the simulator, and programs reuse the same views)."""
    key = (id(buf), addr, rows, cols, dtype.char, stride)
    view = _VIEWS.get(key)
    if view is not None and view.base is buf:
        return view
    if len(_VIEWS) > 200_000:
        _VIEWS.clear()
    view = _VIEWS[key] = _make_array(buf, addr, rows, cols, dtype, stride, what)
    return view


def _strided(buf, addr, rows, row_bytes, stride):
    """(rows, row_bytes) uint8 view of `buf` from byte `addr` with row `stride` (no checks)."""
    return np.ndarray((rows, row_bytes), np.uint8, buffer=buf, offset=addr, strides=(stride, 1))


def _make_array(buf, addr, rows, cols, dtype, stride, what):
    item = dtype.itemsize
    if addr % item or (rows > 1 and stride % item):
        raise ProgramError(f"{what}: address {addr:#x} / stride {stride} not aligned to "
                           f"{item}-byte {dtype} elements")
    _region(buf, addr, rows, cols * item, stride, what)
    return np.ndarray((rows, cols), dtype, buffer=buf, offset=addr, strides=(stride, item))


def _copy_rows(buf, addr, stride, src):
    rows, row_bytes = src.shape
    if stride == row_bytes:
        buf[addr:addr + rows * row_bytes] = src.reshape(-1) if src.flags.c_contiguous \
            else np.ascontiguousarray(src).reshape(-1)
    else:
        _strided(buf, addr, rows, row_bytes, stride)[...] = src
