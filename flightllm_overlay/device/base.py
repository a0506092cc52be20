"""U280Device: the pynq Device that the simulated U280 and the card over XRT both are.

What the two share lives here: loading an xclbin through pynq's Overlay path
(`get_bitfile_metadata` with pynq's own XclBin parser, `download` -> `post_download`), the check
that the xclbin's compute units carry our registers at our offsets and wiring, register access
(capability ``REGISTER_RW``) as aligned 32-bit words routed to the compute unit whose window
holds the address, per-CU contexts, bank lookups and allocation checks, and buffer syncs.

A subclass says what its compute units are and how bytes move:

- ``_load(data, path, parser)`` programs the device and returns its register windows: objects
  with ``name``, ``base``, ``size``, ``read(offset) -> int`` and ``write(offset, value)``;
- ``_allocate(desc, nbytes)`` makes a buffer, ``free_buffer``, ``_sync(alloc, offset, nbytes,
  to_device)`` and ``bank_usage(tag) -> (buffers, bytes)`` keep it;
- ``_refuse(data, path)`` (optional) refuses an xclbin this device cannot take.

Which device a program gets is the user's choice: `requested_device` reads ``FLIGHTLLM_DEVICE``
(``auto``, ``sim`` or ``card``; the older ``FLIGHTLLM_SIMULATOR=1/0`` still means sim/card).
"""
from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

with warnings.catch_warnings():       # pynq warns about the CPU on x86 at import: only that
    warnings.filterwarnings("ignore", message="Pynq does not support the CPU Architecture",
                            category=ResourceWarning)
    from pynq._3rdparty import xclbin as X
    from pynq.pl_server.device import Device

from .. import config
from ..errors import BitstreamError, DeviceError, FlightLLMError
from ..hw.design import BlockDesign, build_design
from .memory import BankAccess
from .xclbin import parse_xclbin, section_kinds

__all__ = ["DEVICE_CHOICES", "U280Device", "read_file", "requested_device"]

DEVICE_CHOICES = ("auto", "sim", "card")


def requested_device() -> str:
    """The device the environment asks for: ``auto`` (default), ``sim`` or ``card``.

    ``FLIGHTLLM_DEVICE`` wins; ``FLIGHTLLM_SIMULATOR`` (1: sim, 0: card) is its deprecated alias.
    """
    value = os.environ.get("FLIGHTLLM_DEVICE", "").strip().lower()
    if value:
        if value not in DEVICE_CHOICES:
            raise FlightLLMError(f"FLIGHTLLM_DEVICE={value!r} is not a device choice: use one of "
                                 f"{', '.join(DEVICE_CHOICES)}")
        return value
    legacy = os.environ.get("FLIGHTLLM_SIMULATOR")
    if legacy in ("0", "1"):
        warnings.warn("FLIGHTLLM_SIMULATOR is deprecated: use FLIGHTLLM_DEVICE=sim (or =card)",
                      DeprecationWarning, stacklevel=2)
        return "sim" if legacy == "1" else "card"
    return "auto"


def read_file(path) -> bytes:
    """The bytes of an xclbin, or a BitstreamError saying why not."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BitstreamError(f"cannot read {path}: {exc.strerror}") from exc


class U280Device(BankAccess, Device):
    """The FlightLLM design on a U280, simulated or real, as a pynq Device (see module docstring).

    Parameters
    ----------
    tag : str
        pynq's device tag; ``{name}`` in it becomes the device's name.
    target : str or config.Target
        Hardware target whose block design the device carries (``u280``).
    """

    is_simulated = False
    requires_every_unit = False      # True: an xclbin must hold every compute unit of the design

    def __init__(self, tag: str, target="u280"):
        self.target = config.load_target(target) if isinstance(target, str) else target
        self.design: BlockDesign = build_design(self.target)
        super().__init__(tag.format(name=self.name))
        self.capabilities = {"REGISTER_RW": True}
        self.bitfile_name, self.timestamp = "", ""
        self.ip_dict, self.mem_dict, self.clock_dict, self.contexts = {}, {}, {}, {}
        self._windows = []

    @property
    def clocks(self) -> dict:
        return {k: {"frequency": v["frequency"]} for k, v in self.clock_dict.items()}

    @property
    def bank_owner(self) -> str:
        """Who holds the banks, for their repr."""
        return self.name

    def _not_loaded(self) -> str:
        return (f"no xclbin is loaded on {self.name}: create the overlay with download=True, "
                f"e.g. FlightLLMOverlay(device=dev)")

    # -- bitstream ---------------------------------------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name, partial=False):
        if partial:
            raise BitstreamError(f"the FlightLLM design on {self.name} has no partial "
                                 f"reconfiguration regions: load a full xclbin")
        if X.AXLF_SECTION_KIND.EMBEDDED_METADATA not in section_kinds(read_file(bitfile_name)):
            raise BitstreamError(f"{bitfile_name} has no EMBEDDED_METADATA section, so its "
                                 f"kernels cannot be known: use an xclbin produced by v++ or by "
                                 f"flightllm_overlay.sim.xclbin")
        parser = parse_xclbin(bitfile_name)      # a damaged file: BitstreamError
        self.clock_dict = parser.clock_dict
        return parser

    def gen_cache(self, bitstream, parser=None):
        pass

    def download(self, bitstream, parser=None):
        path = str(bitstream.bitfile_name)
        data = read_file(path)
        self._refuse(data, path)
        parser = parser or self.get_bitfile_metadata(path)
        check_compute_units(self.design, parser, path, self.requires_every_unit)
        self._windows = sorted(self._load(data, path, parser), key=lambda w: w.base)
        self.post_download(bitstream, parser)

    def _refuse(self, data: bytes, path: str) -> None:
        """Raise a BitstreamError if this device cannot take the xclbin at all."""

    def _load(self, data: bytes, path: str, parser) -> list:
        raise NotImplementedError

    # -- registers ---------------------------------------------------------------------------------
    def _locate(self, address: int, length: int):
        if not self._windows:
            raise DeviceError(self._not_loaded())
        if address % 4 or length % 4:
            raise DeviceError(f"register access at 0x{address:x} of {length} bytes is not made "
                              f"of aligned 32-bit words")
        for window in self._windows:
            if window.base <= address and address + length <= window.base + window.size:
                return window, address - window.base
        raise DeviceError(f"no compute unit answers at 0x{address:x}; CUs: "
                          + ", ".join(f"{w.name}@0x{w.base:x}" for w in self._windows))

    def read_registers(self, address, length):
        window, off = self._locate(address, length)
        return struct.pack(f"<{length // 4}I",
                           *(window.read(off + i) & 0xFFFFFFFF for i in range(0, length, 4)))

    def write_registers(self, address, data):
        data = bytes(data)
        window, off = self._locate(address, len(data))
        for i, (word,) in enumerate(struct.iter_unpack("<I", data)):
            window.write(off + 4 * i, word)

    def open_context(self, description, shared=True):
        self.contexts[description["fullpath"]] = shared
        return description["cu_index"]

    # -- memory ------------------------------------------------------------------------------------
    def allocate_device(self, desc: dict, nbytes: int):
        """A buffer of `nbytes` in the bank `desc` (a pynq mem_dict entry)."""
        if not desc.get("used"):
            used = [t for t, d in self.mem_dict.items() if d.get("used")]
            raise DeviceError(f"{desc['tag']} is not connected to any compute unit of the loaded "
                              f"design (used=0 in its MEM_TOPOLOGY), so it cannot hold buffers; "
                              f"use one of {used}")
        return self._allocate(desc, int(nbytes))

    def _allocate(self, desc: dict, nbytes: int):
        raise NotImplementedError

    def bank_usage(self, tag: str) -> tuple:
        raise NotImplementedError

    def flush(self, bo, offset, ptr, size):
        self._sync(bo, offset, size, to_device=True)

    def invalidate(self, bo, offset, ptr, size):
        self._sync(bo, offset, size, to_device=False)

    def _sync(self, alloc, offset: int, nbytes: int, to_device: bool) -> None:
        raise NotImplementedError


def check_compute_units(design: BlockDesign, parser, path: str, require_every_unit: bool) -> None:
    """The xclbin's compute units of our kernels have our registers at our offsets and wiring
    (with `require_every_unit`, every compute unit of the design must be there)."""
    ours = {unit.vlnv for unit in design.compute_units}
    if require_every_unit:
        for unit in design.compute_units:
            got = parser.ip_dict.get(unit.instance)
            if got is None or got.get("type") != unit.vlnv:
                raise BitstreamError(
                    f"{path} has no compute unit {unit.instance} of kernel {unit.vlnv}: it is not "
                    f"the FlightLLM design of target {design.target}; build it with `make -C "
                    f"vivado_project` (platform {design.platform})")
    instances = {unit.instance for unit in design.compute_units}
    for name, got in parser.ip_dict.items():
        if got.get("type") not in ours:
            continue
        if name not in instances:
            raise BitstreamError(f"{name} ({got.get('type')}) in {path} is not a compute unit of "
                                 f"the design: the file is damaged or from another design")
        unit = design.cu(name)
        for reg in unit.registers:
            r = got["registers"].get(reg.name, {})
            want_mem = unit.port(reg.port).memory if reg.is_pointer else None
            if r.get("address_offset") != reg.offset or r.get("memory") != want_mem:
                raise BitstreamError(
                    f"{name}.{reg.name} is at offset {r.get('address_offset')} wired to "
                    f"{r.get('memory')} in {path} but at 0x{reg.offset:x} wired to {want_mem} in "
                    f"hw/design.py: rebuild the xclbin from the same design")
