"""HBM layout: where each weight tile, table, KV cache and I/O region lives, per pseudo-channel.

Each core owns its pseudo-channels (config `core_channels`) and reads only them, so a core's
weights are partitioned over its own channels (round robin, tile by tile).  Every channel image
has a static part (weights, tables: written once by the host) followed, on a fresh page, by a
mutable part (KV cache, I/O, scratch: written while running) so that the two never share a page.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CompileError

ALIGN = 64                  # bytes: one HBM burst beat group
PAGE = 1 << 20              # the mutable part starts on a fresh 1 MiB page
MAX_STRIPE = 8              # the paper's stripe: at most the 8 channels of a core (isa.md)


@dataclass
class Region:
    """A placed array: pseudo-channel, byte offset inside the channel, size."""

    channel: int
    offset: int
    nbytes: int
    stripe: int = 1          # >1: nbytes split in equal chunks over that many channels


class SizeOnly:
    """Stands in for a channel's static bytes when compiling from shapes alone: it counts bytes
    and stores none (timing and storage studies of models whose weights are not at hand)."""

    def __init__(self):
        self.n = 0

    def __len__(self):
        return self.n

    def extend(self, data):
        self.n += data if isinstance(data, int) else len(data)


@dataclass
class ChannelImage:
    """What one pseudo-channel holds: static bytes, then a reserved mutable tail."""

    channel: int
    static: bytearray = field(default_factory=bytearray)
    mutable_bytes: int = 0
    frozen: bool = False

    @property
    def mutable_offset(self) -> int:
        return -(-len(self.static) // PAGE) * PAGE

    @property
    def size(self) -> int:
        return self.mutable_offset + self.mutable_bytes


class HBMLayout:
    """Allocates static and mutable regions on the pseudo-channels of each core."""

    def __init__(self, target, shape_only: bool = False, stripe_all: bool = False):
        self.target, self.shape_only, self.stripe_all = target, shape_only, stripe_all
        self.images = {ch: ChannelImage(ch, SizeOnly() if shape_only else bytearray())
                       for chs in target.core_channels for ch in chs}

    def put(self, channel: int, data) -> Region:
        """Append static bytes (numpy array or bytes) to a channel image."""
        img = self.images[channel]
        if img.frozen:
            raise CompileError("static data placed after the mutable part was fixed")
        raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1) if isinstance(
            data, np.ndarray) else np.frombuffer(bytes(data), np.uint8)
        pad = -len(img.static) % ALIGN
        img.static.extend(b"\0" * pad)
        region = Region(channel, len(img.static), raw.size)
        img.static.extend(raw.size if self.shape_only else raw.tobytes())
        self._check(img)
        return region

    def stripe_width(self, core: int) -> int:
        """Channels one striped tile spans: every channel of the core with `stripe_all` (the
        LD's `stripe` is a channel count), else the paper's layout: the largest power of two up
        to MAX_STRIPE and the core's channel count.  A core with more channels (e.g. 11 when all
        32 are dealt over 3 cores) then keeps its weights on the first `stripe_width` of them;
        the others hold KV caches and tables."""
        n, w = len(self.target.channels_of(core)), 1
        if self.stripe_all:
            return n
        while w * 2 <= min(MAX_STRIPE, n):
            w *= 2
        return w

    def put_striped(self, core: int, data: np.ndarray) -> Region:
        """Split `data` into equal chunks over the first `stripe_width` pseudo-channels of
        `core`, all at the same offset, so that one LD streams it from those channels at once
        (the paper's partitioning of HBM data into channels)."""
        chs = self.target.channels_of(core)[:self.stripe_width(core)]
        size = data if isinstance(data, int) else data.nbytes
        chunk = -(-size // (len(chs) * ALIGN)) * ALIGN
        imgs = [self.images[ch] for ch in chs]
        if any(img.frozen for img in imgs):
            raise CompileError("static data placed after the mutable part was fixed")
        top = max(-(-len(img.static) // ALIGN) * ALIGN for img in imgs)
        for i, img in enumerate(imgs):
            img.static.extend(b"\0" * (top - len(img.static)))
            if self.shape_only:
                img.static.extend(chunk)
            else:
                raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
                part = raw[i * chunk:(i + 1) * chunk]
                img.static.extend(part.tobytes() + b"\0" * (chunk - part.size))
            self._check(img)
        return Region(chs[0], top, chunk * len(chs), stripe=len(chs))

    def reserve(self, channel: int, nbytes: int) -> Region:
        """Reserve mutable (zero-initialised, device-written) bytes on a channel."""
        img = self.images[channel]
        img.frozen = True
        img.mutable_bytes += -img.mutable_bytes % ALIGN
        region = Region(channel, img.mutable_offset + img.mutable_bytes, nbytes)
        img.mutable_bytes += nbytes
        self._check(img)
        return region

    def _check(self, img: ChannelImage) -> None:
        if img.size > self.target.hbm_channel_bytes:
            raise CompileError(
                f"HBM pseudo-channel {img.channel} would need {img.size / 2**20:.1f} MiB but holds "
                f"{self.target.hbm_channel_bytes / 2**20:.0f} MiB; use a smaller context length "
                f"or a smaller/compressed model, or spread the weights over more channels "
                f"(schedule='stripe_all+balance_channels' on a target whose cores own all "
                f"{self.target.hbm_channels} pseudo-channels)")

    def used_channels(self) -> list:
        return sorted(ch for ch, img in self.images.items() if img.size)


def split_even(total: int, parts: int, multiple: int = 1) -> list:
    """Split `total` into `parts` contiguous (start, stop) ranges, sizes multiples of `multiple`."""
    units = -(-total // multiple)
    base, extra = divmod(units, parts)
    out, pos = [], 0
    for p in range(parts):
        n = (base + (p < extra)) * multiple
        out.append((min(pos, total), min(pos + n, total)))
        pos += n
    return out


def split_weighted(total: int, weights, multiple: int = 1) -> list:
    """Split `total` into contiguous (start, stop) ranges with sizes (multiples of `multiple`)
    proportional to `weights`, largest remainders first; equal weights give `split_even`."""
    weights = list(weights)
    if len(set(weights)) == 1:
        return split_even(total, len(weights), multiple)
    units = -(-total // multiple)
    share = [units * w / sum(weights) for w in weights]
    counts = [int(x) for x in share]
    for i in sorted(range(len(weights)), key=lambda i: counts[i] - share[i])[:units - sum(counts)]:
        counts[i] += 1
    out, pos = [], 0
    for n in counts:
        out.append((min(pos, total), min(pos + n * multiple, total)))
        pos += n * multiple
    return out
