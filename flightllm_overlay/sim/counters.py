"""The functional simulator's tally of a run, per core and per HBM channel, folded into `Counters`.

The simulator counts finer than the registers (instructions per queue, bytes per pseudo-channel);
`per_core_counters` folds a run's tally into the `spec.counters.Counters` each core's units
report, and `run_counters` adds the scheduler's two, as `sim/device.py` writes the registers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import UNITS
from ..spec.counters import Counters

MPE_QUEUES, MISC_QUEUES = ("MM", "MV"), ("MISC",)


@dataclass
class CoreCounters:
    """What one core did in one run (the simulator adds into it as it executes)."""

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


def per_core_counters(run, core_channels) -> list:
    """The `Counters` each core's units report for `run` (a RunCounters, or anything with its
    attributes); `core_channels[c]` are the HBM channels core c's memory controller owns."""
    out = []
    for pc, channels in zip(run.per_core, core_channels):
        ins = pc.instructions
        out.append(Counters(
            mpe_instructions=sum(ins.get(u, 0) for u in MPE_QUEUES),
            misc_instructions=sum(ins.get(u, 0) for u in MISC_QUEUES),
            macs=pc.macs, fixed_chain_macs=pc.fixed_chain_macs, misc_elements=pc.misc_elements,
            hbm_bytes_read=sum(run.hbm_read.get(ch, 0) for ch in channels),
            hbm_bytes_written=sum(run.hbm_written.get(ch, 0) for ch in channels)))
    return out


def run_counters(run, core_channels) -> Counters:
    """`run` as the registers count it: its cores' counters plus instructions and cycles."""
    instructions = sum(sum(pc.instructions.values()) for pc in run.per_core)
    return Counters.run(per_core_counters(run, core_channels), instructions,
                        getattr(run, "cycles", 0) or 0)
