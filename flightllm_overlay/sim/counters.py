"""What a run of the functional simulator did: instructions, MACs of both DSP chains, MISC elements, HBM bytes."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import UNITS


@dataclass
class CoreCounters:
    """What one core did in one run."""

    instructions: dict = field(default_factory=lambda: {u: 0 for u in UNITS})
    macs: int = 0                # MACs the configurable chain performs (kept weights only)
    fixed_chain_macs: int = 0    # MAC slots a fixed dense chain spends on the same work
    misc_elements: int = 0


@dataclass
class RunCounters:
    """What a run did: per core, and bytes per HBM pseudo-channel."""

    per_core: list
    hbm_read: dict = field(default_factory=dict)
    hbm_written: dict = field(default_factory=dict)
    cycles: int = 0

    @property
    def instructions(self) -> dict:
        return {u: sum(c.instructions[u] for c in self.per_core) for u in UNITS}

    @property
    def total_instructions(self) -> int:
        return sum(self.instructions.values())

    @property
    def macs(self) -> int:
        return sum(c.macs for c in self.per_core)

    @property
    def fixed_chain_macs(self) -> int:
        return sum(c.fixed_chain_macs for c in self.per_core)

    @property
    def misc_elements(self) -> int:
        return sum(c.misc_elements for c in self.per_core)

    @property
    def hbm_bytes(self) -> int:
        return sum(self.hbm_read.values()) + sum(self.hbm_written.values())
