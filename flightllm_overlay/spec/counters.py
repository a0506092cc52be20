"""Counters: what the device's counter registers count, the one type behind every statistics view.

The hardware counts in two places (`hw/design.py`'s register map): the scheduler counts the
instructions it dispatches and the cycles of a run, for the whole run; each core's units count
their own work (MPE: MM/MV instructions, MACs of the configurable chain, MAC slots a fixed dense
chain would spend; MISC: instructions and elements; memory controller: HBM bytes read and
written).  A `Counters` holds all of these.  One core's counters leave the scheduler's two at 0
(the registers do not count them per core); a run's counters are the sum over its cores plus
the scheduler's (`Counters.run`).  Views built on it: the functional simulator's per-core tally
(`sim/counters.py`), the overlay's `RunStats` (registers of the last run), the runtime's
`StepStats` (accumulated over runs) and `GenerationStats` (a difference of those), the timing
model's `Timeline` totals and `bench.StepFigures` (predicted, not counted on a card).
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Counters:
    """Counter values of one core or one run, or summed over runs; `+` and `-` field by field."""

    instructions: int = 0           # instructions dispatched, every unit (the scheduler's count)
    mpe_instructions: int = 0       # MM and MV instructions (the MPE's count)
    misc_instructions: int = 0      # MISC instructions
    macs: int = 0                   # MACs the configurable chain performs (kept weights only)
    fixed_chain_macs: int = 0       # MAC slots a fixed dense chain would spend on the same work
    misc_elements: int = 0          # elements the MISC unit processed (two-pass ops count twice)
    hbm_bytes_read: int = 0
    hbm_bytes_written: int = 0
    cycles: int = 0                 # device cycles (the scheduler's count; predicted on the sim)

    @classmethod
    def run(cls, per_core, instructions: int = 0, cycles: int = 0) -> "Counters":
        """A run's counters: the sum of its cores' plus the scheduler's two."""
        return sum(per_core, cls()) + cls(instructions=instructions, cycles=cycles)

    @property
    def hbm_bytes(self) -> int:
        """HBM traffic, both directions."""
        return self.hbm_bytes_read + self.hbm_bytes_written

    def dsp_utilisation(self) -> float:
        """Useful MACs per MAC slot a fixed dense chain would spend: the share of its DSPs
        that multiply a kept weight (1.0 for dense weights; 0.0 when no MPE work ran)."""
        return self.macs / self.fixed_chain_macs if self.fixed_chain_macs else 0.0

    def _combine(self, other, sign: int) -> "Counters":
        if not isinstance(other, Counters):
            return NotImplemented
        return Counters(**{f.name: getattr(self, f.name) + sign * getattr(other, f.name)
                           for f in fields(Counters)})

    def __add__(self, other) -> "Counters":
        return self._combine(other, 1)

    def __radd__(self, other) -> "Counters":
        if other == 0:                  # sum() starts from 0
            return self._combine(Counters(), 1)
        return NotImplemented

    def __sub__(self, other) -> "Counters":
        return self._combine(other, -1)


class CounterField:
    """An attribute of a statistics view that reads one attribute of the `Counters` the view
    holds in ``.counters`` (``CounterField("cycles")`` renames it); read-only."""

    def __init__(self, name: str | None = None):
        self.name = name

    def __set_name__(self, owner, attr: str) -> None:
        self.name = self.name or attr
        self.attr = attr

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return getattr(obj.counters, self.name)

    def __set__(self, obj, value) -> None:
        raise AttributeError(f"{type(obj).__name__}.{self.attr} reads .counters.{self.name}; "
                             f"replace .counters (a Counters) to change it")
