"""FlightLLMOverlay: the pynq Overlay of the accelerator, with one call to run a program on it.

``FlightLLMOverlay()`` loads ``flightllm.xclbin`` on the device chosen by `choice` (``device=``
or ``FLIGHTLLM_DEVICE``: auto, sim or card; `device_choice` says which).  A bare name is looked up
like pynq does it for overlay packages: in the working directory, then next to this package in
``bitstreams/`` (preferring ``flightllm.xclbin.d/flightllm.<device.name>.xclbin``), then in the
``pynq.overlays`` entry points.  On the simulated U280 it therefore finds the metadata-only file
``flightllm.xilinx_u280_sim.xclbin``; on a real card, the card's bitstream.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from pynq import Overlay

from .. import config
from ..errors import AddressError, ArgumentError, BitstreamError, DeviceTimeoutError
from ..hw.design import build_design
from ..spec.counters import Counters
from .choice import choose_device
from .drivers import DEFAULT_TIMEOUT, check_timeout

DEFAULT_BITFILE = "flightllm.xclbin"
BITSTREAMS_DIR = Path(__file__).resolve().parent.parent / "bitstreams"


#: One core's counters, read from its units' registers (the scheduler's two are 0 per core).
CoreStats = Counters


@dataclass(frozen=True)
class RunStats(Counters):
    """Counters of the last run, read from the compute units' registers: the sum over
    `per_core` (one `Counters` per core) plus the scheduler's instructions and cycles."""

    per_core: tuple = ()
    clock_mhz: float = 0.0

    @classmethod
    def of(cls, per_core, instructions: int, cycles: int, clock_mhz: float) -> "RunStats":
        total = Counters.run(per_core, instructions, cycles)
        return cls(**{f.name: getattr(total, f.name) for f in fields(Counters)},
                   per_core=tuple(per_core), clock_mhz=clock_mhz)

    @property
    def seconds(self) -> float:
        """Device time of the run at the kernel clock (0 when the device does not count cycles)."""
        return self.cycles / (self.clock_mhz * 1e6)


def resolve_bitstream(bitfile_name: str, device) -> str:
    """Absolute path that `bitfile_name` names for `device` (see the module docstring)."""
    name = str(bitfile_name)
    if os.path.isabs(name) or os.path.exists(name) or os.path.dirname(name):
        return name                                   # pynq resolves paths itself
    stem, ext = os.path.splitext(name)
    dev_name = getattr(device, "name", None)
    if name == DEFAULT_BITFILE and getattr(device, "is_simulated", False):
        from ..sim.xclbin import ensure_sim_xclbin
        try:
            ensure_sim_xclbin(device.design)
        except OSError:                               # read-only install: the shipped copy stays
            pass
    candidates = ([BITSTREAMS_DIR / f"{name}.d" / f"{stem}.{dev_name}{ext}"] if dev_name else [])
    candidates.append(BITSTREAMS_DIR / name)
    for path in candidates:
        if path.is_file():
            return str(path)
    return name                                       # pynq: working dir, pynq.overlays entries


class FlightLLMOverlay(Overlay):
    """The FlightLLM accelerator as a pynq Overlay: scheduler, and per core mpe, misc, memctrl.

    Parameters
    ----------
    bitfile_name : str
        xclbin to load; default ``flightllm.xclbin`` (resolved per device, see module docstring).
    device : pynq.Device or str, optional
        Device to load it on, or which to choose: ``"auto"`` (a card when XRT finds one, else
        the simulated U280), ``"sim"`` or ``"card"`` (a `DeviceNotFoundError` naming what was
        probed when there is none); default ``$FLIGHTLLM_DEVICE``, else ``"auto"``.  The
        choice made is `device_choice`.
    download : bool
        Program the device (for the simulated U280: build its register files).
    target : str
        Hardware target of the design (``u280``).
    timeout : float
        Default timeout of `run`, seconds.
    """

    def __init__(self, bitfile_name: str = DEFAULT_BITFILE, device=None, download: bool = True,
                 ignore_version: bool = False, target: str = "u280",
                 timeout: float = DEFAULT_TIMEOUT):
        device, self.device_choice = choose_device(device)
        # pynq's Overlay.__getattr__ needs a loaded bitstream, so set ours before super().__init__
        self.target = config.load_target(target)
        self.design = getattr(device, "design", None) or build_design(self.target)
        self.timeout = timeout
        self.run_lock = threading.RLock()   # one run at a time (see `run`)
        path = resolve_bitstream(bitfile_name, device)
        try:
            super().__init__(path, download=download, ignore_version=ignore_version, device=device)
        except OSError as exc:
            raise BitstreamError(
                f"cannot find {bitfile_name!r} for device {getattr(device, 'name', device)!r}: "
                f"looked in the working directory, in {BITSTREAMS_DIR} (and its "
                f"{bitfile_name}.d/ folder) and in the pynq.overlays entry points. Build it "
                f"with vivado_project/Makefile, or pass a path") from exc
        self._check_units()

    def _check_units(self) -> None:
        """Every compute unit of the design is in the xclbin under its kernel's VLNV (else a
        damaged or foreign xclbin would load with generic drivers and fail later)."""
        for unit in self.design.compute_units:
            ip = self.ip_dict.get(unit.instance, {})
            need = max((r.offset for r in unit.registers), default=0) + 8
            span = ip.get("addr_range")
            if ip.get("type") != unit.vlnv or not isinstance(span, int) or span < need:
                raise BitstreamError(
                    f"{self.bitfile_name} does not hold compute unit {unit.instance} as "
                    f"{unit.vlnv} with {need} bytes of registers (found {ip.get('type')!r}, "
                    f"{span!r} bytes): it is damaged or built from another design; rebuild it "
                    f"with vivado_project/Makefile")
            regs = ip.get("registers") or {}
            for reg in unit.registers:       # the drivers write these offsets with these widths
                got = regs.get(reg.name) or {}
                if (got.get("address_offset"), got.get("size")) != (reg.offset, reg.bits):
                    raise BitstreamError(
                        f"{self.bitfile_name}: register {unit.instance}.{reg.name} is at "
                        f"{got.get('address_offset')!r} with {got.get('size')!r} bits, the design "
                        f"has it at 0x{reg.offset:x} with {reg.bits}: the file is damaged or built "
                        f"from another design; rebuild it with vivado_project/Makefile")

    # -- what it is --------------------------------------------------------------------------------
    @property
    def is_simulated(self) -> bool:
        """True on the simulated U280 (no FPGA, metadata-only xclbin)."""
        return bool(getattr(self.device, "is_simulated", False))

    def describe(self) -> str:
        """A few lines saying what is loaded where, and whether any hardware is involved."""
        where = (f"the SIMULATED {self.target.board} ({self.device.name}): no FPGA is involved; "
                 f"the xclbin holds metadata only and the functional simulator executes programs"
                 if self.is_simulated else f"device {getattr(self.device, 'name', self.device)}")
        units = ", ".join(self.ip_dict)
        banks = ", ".join(t for t, d in self.mem_dict.items() if d.get("used"))
        return (f"FlightLLM overlay on {where}\n"
                f"  device:  {self.device_choice}\n"
                f"  xclbin:  {self.bitfile_name}\n"
                f"  cores:   {self.design.cores} at {self.target.clock_mhz:g} MHz\n"
                f"  units:   {units}\n"
                f"  banks:   {banks}")

    def __repr__(self):
        kind = ("simulated " + self.target.board + ", no FPGA") if self.is_simulated else \
            getattr(self.device, "name", "device")
        return f"<FlightLLMOverlay on {kind}: {os.path.basename(self.bitfile_name)}>"

    # -- running -----------------------------------------------------------------------------------
    def units(self, core: int) -> tuple:
        """(mpe, misc, memctrl) drivers of one core."""
        return tuple(getattr(self, u.instance) for u in self.design.units(core))

    def bind_channels(self, channel_buffers: dict) -> None:
        """Point every core's memctrl ports at the buffers given per HBM channel (others: 0)."""
        owned = {ch for chs in self.design.core_channels for ch in chs}
        stray = sorted(set(channel_buffers) - owned)
        if stray:
            raise AddressError(f"HBM channels {stray} belong to no core; the cores own "
                               f"{sorted(owned)} (core c: channels {self.design.core_channels})")
        plan = []
        for c in range(self.design.cores):
            mem = self.units(c)[2]
            for k, ch in enumerate(mem.channels):      # check everything before writing anything
                buf = channel_buffers.get(ch)
                plan.append((mem, k, None if buf is None else mem.check(k, buf)))
        for mem, k, address in plan:
            mem.bind(k, address)

    def run(self, program, pos: int, length: int, channel_buffers: dict,
            timeout: float | None = None) -> RunStats:
        """Run `program` once with run-time parameters P=`pos`, L=`length`.

        Parameters
        ----------
        program : PynqBuffer
            The program image, in the instruction bank (DDR[0]); synced to the device.
        pos, length : int
            Run-time parameters P and L.
        channel_buffers : dict
            HBM channel -> PynqBuffer allocated in that channel's bank (``ol.HBM<ch>``),
            synced to the device.  Channels not given are bound to address 0.
        timeout : float, optional
            Seconds to wait for the scheduler; default `self.timeout`.

        Buffers are not synced here: sync inputs before, outputs after, as on the card.
        Thread safety: runs are serialised by `run_lock` (bind, configure, start, wait and the
        counter reads of one run are never interleaved with another thread's).
        """
        timeout = check_timeout(self.timeout if timeout is None else timeout)
        for name, value in (("pos", pos), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ArgumentError(f"run: {name} must be a non-negative integer, got {value!r:.40}")
        if not isinstance(channel_buffers, dict):
            raise ArgumentError(f"run: channel_buffers must be a dict HBM channel -> buffer, got "
                                f"{type(channel_buffers).__name__}")
        with self.run_lock:
            return self._run_locked(program, int(pos), int(length), channel_buffers, timeout)

    def _run_locked(self, program, pos, length, channel_buffers, timeout) -> RunStats:
        self.bind_channels(channel_buffers)
        self.scheduler.configure(program, pos, length)
        units = [u for c in range(self.design.cores) for u in self.units(c)]
        for unit in units:
            unit.start()
        self.scheduler.start()
        try:
            self.scheduler.wait(timeout)
        except DeviceTimeoutError as exc:
            idle = [u.name for u in units if u.is_idle()]
            raise DeviceTimeoutError(f"{exc}. Units idle while the scheduler waits: "
                                     f"{idle or 'none'}") from None
        for unit in units:
            unit.wait(timeout)
        per_core = []
        for c in range(self.design.cores):
            mpe, misc, mem = (u.counters() for u in self.units(c))
            per_core.append(Counters(
                mpe_instructions=mpe["instructions"], macs=mpe["macs"],
                fixed_chain_macs=mpe["fixed_macs"], misc_instructions=misc["instructions"],
                misc_elements=misc["elements"], hbm_bytes_read=mem["bytes_read"],
                hbm_bytes_written=mem["bytes_written"]))
        top = self.scheduler.counters()
        return RunStats.of(per_core, top["instructions"], top["cycles"], self.target.clock_mhz)

    def reset(self):
        """Soft-reset the accelerator (every CU back to idle), then pynq's Overlay.reset."""
        with self.run_lock:
            self.scheduler.soft_reset()
            super().reset()
