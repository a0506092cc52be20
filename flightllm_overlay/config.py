"""Hardware targets: the single source of every hardware number (clock, MPE, buffers, HBM, lengths)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError

TARGETS_DIR = Path(__file__).with_name("targets")

#: Device resources a target states (its FPGA's capacity, for the resource estimate).
CAPACITY = ("DSP", "BRAM36", "URAM", "LUT", "FF")

#: Unit queues of one core, in the order their bits appear in wait/release masks.
UNITS = ("LD", "ST", "MM", "MV", "MISC", "SYS")


@dataclass(frozen=True)
class Buffer:
    """One on-chip buffer of a core: `depth` lines of `width` bytes."""

    name: str
    depth: int
    width: int
    role: str = ""

    @property
    def bytes(self) -> int:
        return self.depth * self.width


@dataclass(frozen=True)
class Timing:
    """The timing model's constants beyond clock, parallelism and HBM bandwidth; the target file
    states a source for each (`timing.sources`)."""

    hbm_latency_cycles: int        # HBM read latency seen by the memory controller
    remote_bytes_per_cycle: int    # remote (cross-SLR) access engine throughput
    remote_latency_cycles: int     # SLR crossing pipeline
    misc_latency_cycles: int       # SFU pipeline depth
    mpe_latency_cycles: int        # DSP cascade depth plus output registers
    barrier_cycles: int            # a cross-SLR barrier through the task scheduler
    ddr_gbps: float                # instruction fetch bandwidth of the DDR bank
    axi_burst_bytes: int           # the largest AXI burst (4 KB boundary rule)


@dataclass(frozen=True)
class Target:
    """A FlightLLM hardware target, loaded from `targets/<name>.json`."""

    name: str
    board: str
    platform: str
    clock_mhz: float
    cores: int
    mm_macs_per_cycle: int       # per core
    mv_macs_per_cycle: int       # per core
    misc_elements_per_cycle: int
    buffers: dict
    mm_parallel: tuple           # (M, N, K) multiply-accumulates per cycle in MM mode
    mv_parallel: tuple           # (M, N, K) in MV mode
    timing: Timing
    slrs: int                    # super logic regions (one core each on the U280)
    dsp_macs: int                # INT8 MACs one DSP48E2 does per cycle (packed pair)
    dsp_group: int               # DSP48s per DSP group of the sparse chain
    hbm_channels: int
    hbm_channel_bytes: int
    hbm_channel_gbps: float
    hbm_same_channel_efficiency: float
    hbm_cross_channel_efficiency: float
    core_channels: tuple
    ddr_banks: int
    ddr_bank_bytes: int
    instruction_bank: int
    prefill_bucket: int
    decode_bucket: int
    max_length: int
    device_capacity: dict        # {"DSP", "BRAM36", "URAM", "LUT", "FF"}: int, or None if unknown
    raw: dict = field(default=None, hash=False, compare=False, repr=False)

    def buffer(self, name: str) -> Buffer:
        try:
            return self.buffers[name]
        except KeyError:
            raise ConfigError(f"target {self.name!r} has no on-chip buffer {name!r}; "
                              f"it has {sorted(self.buffers)}") from None

    @property
    def mm_rows(self) -> int:
        """Token rows one MM instruction pass covers (the M of the MM parallelism)."""
        return self.mm_parallel[0]

    @property
    def clock_hz(self) -> float:
        return self.clock_mhz * 1e6

    @property
    def hbm_bytes_per_cycle(self) -> float:
        """Theoretical bytes one pseudo-channel delivers per kernel clock cycle."""
        return self.hbm_channel_gbps * 1e9 / self.clock_hz

    def channels_of(self, core: int) -> tuple:
        return self.core_channels[core]

    def with_overrides(self, **changes) -> "Target":
        """A copy with some numbers changed (for what-if studies and tests)."""
        from dataclasses import replace
        return replace(self, **changes)


def unsourced(raw: dict, path: str = "") -> list:
    """Dotted paths of the constants in a target description that have no stated source.

    The convention: every JSON object that holds constants (numbers, lists, or objects without
    their own `sources`) has a `sources` object naming a source for each of them; an object
    with its own `sources` is checked the same way, recursively.  Strings (names, roles) are
    descriptions, not constants."""
    sources = raw.get("sources", {})
    if not isinstance(sources, dict):
        return [f"{path}sources (must be an object: constant -> source)"]
    missing = []
    for key, value in raw.items():
        if key == "sources" or isinstance(value, str):
            continue
        if isinstance(value, dict) and "sources" in value:
            missing += unsourced(value, f"{path}{key}.")
        elif not str(sources.get(key, "")).strip():
            missing.append(f"{path}{key}")
    return missing


def _build(raw: dict) -> Target:
    missing = unsourced(raw)
    if missing:
        raise ConfigError(f"target description {raw.get('name', '?')!r} states no source for "
                          f"{missing}; every constant needs one in the `sources` object beside "
                          f"it (compare with targets/u280.json)")
    try:
        mpe, hbm, ddr, lengths = raw["mpe"], raw["hbm"], raw["ddr"], raw["lengths"]
        buffers = {k: Buffer(k, int(v["depth"]), int(v["width"]), v.get("role", ""))
                   for k, v in raw["buffers"].items() if k != "sources"}
        target = Target(
            name=raw["name"], board=raw["board"], platform=raw["platform"],
            clock_mhz=float(raw["clock_mhz"]), cores=int(raw["cores"]),
            mm_macs_per_cycle=int(mpe["mm_macs_per_cycle"]),
            mv_macs_per_cycle=int(mpe["mv_macs_per_cycle"]),
            misc_elements_per_cycle=int(raw["misc"]["elements_per_cycle"]),
            buffers=buffers,
            mm_parallel=tuple(int(mpe["mm_parallel"][k]) for k in "mnk"),
            mv_parallel=tuple(int(mpe["mv_parallel"][k]) for k in "mnk"),
            timing=_timing(raw["timing"]),
            slrs=int(raw["slrs"]), dsp_macs=int(mpe["dsp_macs"]), dsp_group=int(mpe["dsp_group"]),
            hbm_channels=int(hbm["channels"]), hbm_channel_bytes=int(hbm["channel_bytes"]),
            hbm_channel_gbps=float(hbm["channel_gbps"]),
            hbm_same_channel_efficiency=float(hbm["same_channel_efficiency"]),
            hbm_cross_channel_efficiency=float(hbm["cross_channel_efficiency"]),
            core_channels=tuple(tuple(int(c) for c in chs) for chs in hbm["core_channels"]),
            ddr_banks=int(ddr["banks"]), ddr_bank_bytes=int(ddr["bank_bytes"]),
            instruction_bank=int(ddr["instruction_bank"]),
            prefill_bucket=int(lengths["prefill_bucket"]),
            decode_bucket=int(lengths["decode_bucket"]), max_length=int(lengths["max_length"]),
            device_capacity={k: (None if raw["device"][k] is None else int(raw["device"][k]))
                             for k in CAPACITY},
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"target description {raw.get('name', '?')!r} is malformed: {exc!r}; "
                          f"compare it with targets/u280.json") from exc
    _check(target)
    return target


def _timing(raw: dict) -> Timing:
    names = [f.name for f in fields(Timing)]
    missing = [n for n in names if n not in raw]
    unsourced = [n for n in names if n not in raw.get("sources", {})]
    if missing or unsourced:
        raise ConfigError(f"the timing block lacks {missing or unsourced} "
                          f"({'values' if missing else 'sources'}); every timing constant needs "
                          f"a value and a stated source (see targets/u280.json)")
    cast = {"int": int, "float": float}      # the annotations, as strings
    return Timing(**{f.name: cast[f.type](raw[f.name]) for f in fields(Timing)})


def _check(t: Target) -> None:
    for mode, par, macs in (("MM", t.mm_parallel, t.mm_macs_per_cycle),
                            ("MV", t.mv_parallel, t.mv_macs_per_cycle)):
        if par[0] * par[1] * par[2] != macs:
            raise ConfigError(f"target {t.name}: {mode} parallelism {par} gives "
                              f"{par[0] * par[1] * par[2]} MACs/cycle, not {macs}")
    if len(t.core_channels) != t.cores:
        raise ConfigError(f"target {t.name}: {t.cores} cores but {len(t.core_channels)} channel lists")
    seen = [c for chs in t.core_channels for c in chs]
    if len(seen) != len(set(seen)) or any(not 0 <= c < t.hbm_channels for c in seen):
        raise ConfigError(f"target {t.name}: HBM channel ownership must be disjoint and within "
                          f"0..{t.hbm_channels - 1}: {t.core_channels}")
    no_ddr = t.ddr_banks == 0 and t.instruction_bank == -1
    if not (0 <= t.instruction_bank < t.ddr_banks or no_ddr):
        raise ConfigError(f"target {t.name}: instruction_bank {t.instruction_bank} is not one of "
                          f"the {t.ddr_banks} DDR banks (-1 when the board has no DDR)")
    if t.max_length % t.prefill_bucket or t.max_length % t.decode_bucket:
        raise ConfigError(f"target {t.name}: max_length must be a multiple of both buckets")


def target_from_dict(raw: dict) -> Target:
    """A target from the parsed content of a target file (checked as `load_target` does)."""
    return _build(raw)


@lru_cache(maxsize=None)
def load_target(name: str = "u280") -> Target:
    """Load a target by name (`u280`) or by path to a JSON file."""
    path = Path(name)
    if not path.suffix:
        path = TARGETS_DIR / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in TARGETS_DIR.glob("*.json"))
        raise ConfigError(f"no hardware target {name!r}; known targets: {known}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"target file {path} is not valid JSON: {exc}") from exc
    return _build(raw)
