"""DefaultIP drivers of the compute units, bound by VLNV; they run the HLS ap_ctrl_hs handshake themselves.

pynq 4 dropped `DefaultIP.call/start`, so `HLSKernel` does it: write the arguments, set
AP_START, poll CTRL until AP_DONE (or AP_IDLE) with a timeout.  Every wait has a timeout; a
`DeviceTimeoutError` names the CU and the CTRL value and says to call ``ol.reset()``.  The same
drivers run on the simulated U280 and on a real card.
"""
from __future__ import annotations

import time

import numpy as np
from pynq.overlay import DefaultIP

from ..errors import (AddressError, ArgumentError, DeviceError, DeviceTimeoutError,
                      IllegalInstructionError, ProgramError)
from ..hw import control as C
from ..hw.design import block_design, kernel_vlnv

DEFAULT_TIMEOUT = 10.0           # seconds; a decode step on the simulator takes far less
_MAX_POLL_SLEEP = 1e-3


def _address_of(obj) -> int:
    """Device address of a PynqBuffer, or an int taken as a device address."""
    address = getattr(obj, "device_address", obj)
    if not isinstance(address, int) or isinstance(address, bool) or address < 0:
        raise ArgumentError(f"expected a PynqBuffer or a non-negative device address, got "
                            f"{type(obj).__name__} {obj!r:.40}")
    return address


def check_timeout(timeout) -> float:
    """A wait's timeout: a positive, finite number of seconds."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
            not 0 < timeout < float("inf"):
        raise ArgumentError(f"timeout must be a positive number of seconds, got {timeout!r:.40}")
    return float(timeout)


class HLSKernel(DefaultIP):
    """A compute unit with an ap_ctrl_hs control port (binds to nothing itself)."""

    def __init__(self, description):
        super().__init__(description)
        self.name = description["fullpath"]
        self._regs = description["registers"]
        design = getattr(self.device, "design", None) or block_design()
        self.design = design
        self.unit = design.cu(self.name)
        self.core = self.unit.core

    # -- registers ---------------------------------------------------------------------------------
    def offset(self, name: str) -> int:
        try:
            return self._regs[name]["address_offset"]
        except KeyError:
            raise DeviceError(f"{self.name} has no register {name!r}; it has "
                              f"{sorted(self._regs)}") from None

    def write_arg(self, name: str, value: int) -> None:
        """Write an argument register (64-bit ones low word first, as the HLS map lays them out)."""
        off, bits = self.offset(name), self._regs[name]["size"]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ArgumentError(f"{self.name}.{name} takes an integer, got {value!r:.40}")
        value = int(value)
        if not 0 <= value < 1 << bits:
            raise ArgumentError(f"{self.name}.{name} holds {bits} bits (0..{(1 << bits) - 1}); "
                                f"{value} does not fit")
        self.mmio.write(off, value & 0xFFFFFFFF)
        if bits == 64:
            self.mmio.write(off + 4, value >> 32)

    def read_reg(self, name: str) -> int:
        off, bits = self.offset(name), self._regs[name]["size"]
        low = self.mmio.read(off)
        return low | (self.mmio.read(off + 4) << 32) if bits == 64 else low

    def read_counter(self, name: str) -> int:
        """A 64-bit counter kept as `<name>_lo` / `<name>_hi`."""
        return self.read_reg(f"{name}_lo") | (self.read_reg(f"{name}_hi") << 32)

    def _mmio_offset(self, offset) -> int:
        span = int(getattr(self.mmio, "length", 0) or 1 << 16)
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or \
                not 0 <= offset <= span - 4 or offset % 4:
            raise ArgumentError(f"{self.name}: register offset {offset!r:.40} must be a multiple "
                                f"of 4 in 0..{span - 4}; the registers are {sorted(self._regs)}")
        return int(offset)

    def read(self, offset=0):
        """Read the 32-bit register at byte `offset` (checked: aligned, inside the CU's range)."""
        return self.mmio.read(self._mmio_offset(offset))

    def write(self, offset, value):
        """Write a 32-bit register at byte `offset` (checked like `read`; value 0..2**32-1)."""
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
                not 0 <= value < 1 << 32:
            raise ArgumentError(f"{self.name}: a register holds 32 bits; {value!r:.40} does not fit")
        self.mmio.write(self._mmio_offset(offset), int(value))

    # -- handshake ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Set AP_START."""
        self.mmio.write(C.CTRL, C.AP_START)

    def is_idle(self) -> bool:
        """True when CTRL shows AP_IDLE without AP_START (reading CTRL clears AP_DONE)."""
        ctrl = self.mmio.read(C.CTRL)
        return bool(ctrl & C.AP_IDLE) and not ctrl & C.AP_START

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Poll CTRL until AP_DONE, or AP_IDLE without AP_START; returns the CTRL value read."""
        check_timeout(timeout)
        deadline, pause = time.monotonic() + timeout, 0.0
        while True:
            ctrl = self.mmio.read(C.CTRL)
            if ctrl & C.AP_DONE or (ctrl & C.AP_IDLE and not ctrl & C.AP_START):
                return ctrl
            if time.monotonic() >= deadline:
                raise DeviceTimeoutError(
                    f"{self.name} did not finish within {timeout:g} s: CTRL = "
                    f"{C.describe_ctrl(ctrl)}.{self._why_not_done()} Call ol.reset() (soft "
                    f"reset) before the next run")
            time.sleep(pause)
            pause = min(max(2 * pause, 1e-5), _MAX_POLL_SLEEP)

    def _why_not_done(self) -> str:
        return ""


class SchedulerDriver(HLSKernel):
    """The scheduler: fetches the program from DDR and drives every core's units."""

    bindto = [kernel_vlnv("scheduler")]

    def configure(self, program, pos: int, length: int) -> None:
        """Write the program address (a buffer in the instruction bank, or an address), P and L."""
        address = _address_of(program)
        tag = self._regs["program"].get("memory")
        bank = self.device.mem_dict.get(tag) if tag else None
        nbytes = getattr(program, "nbytes", 1)
        if bank and not bank["base_address"] <= address <= address + nbytes <= (
                bank["base_address"] + bank["size"]):
            raise AddressError(f"the program at 0x{address:x} is not in {tag}, the only bank the "
                               f"scheduler reads programs from: allocate it with "
                               f"pynq.allocate(n, 'u4', target=ol.{tag.replace('[', '').replace(']', '')})")
        self.write_arg("program", address)
        self.write_arg("pos", pos)
        self.write_arg("len", length)

    @property
    def status(self) -> C.SchedulerStatus:
        return C.SchedulerStatus(self.read_reg("status"))

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for the end of the run; raise the decoded error if the program failed."""
        ctrl = super().wait(timeout)
        self.check()
        return ctrl

    def check(self) -> None:
        """Raise IllegalInstructionError / AddressError / ProgramError / DeviceError on ERROR."""
        if self.read_reg("status") != C.SchedulerStatus.ERROR:
            return
        raw = self.read_reg("error_code")
        code = C.ErrorCode(raw) if raw in C.ErrorCode._value2member_map_ else C.ErrorCode.INTERNAL
        core, pc = self.read_reg("error_core"), self.read_reg("error_pc")
        core, pc = (None if v == C.UNKNOWN else v for v in (core, pc))
        detail = self.device.last_error(self.name) if hasattr(self.device, "last_error") else None
        where = (f" on core {core}" if core is not None else "") + (
            f" at instruction {pc}" if pc is not None else "")
        cls = {C.ErrorCode.ILLEGAL_INSTRUCTION: IllegalInstructionError,
               C.ErrorCode.ADDRESS: AddressError, C.ErrorCode.PROGRAM: ProgramError}.get(code,
                                                                                           DeviceError)
        exc = cls(f"the accelerator stopped with {code.name} (error_code {raw}){where}"
                  f"{': ' + detail if detail else ''}. {_ADVICE.get(code, _ADVICE[None])}")
        exc.core, exc.pc, exc.error_code = core, pc, code
        raise exc

    def _why_not_done(self) -> str:
        status = self.read_reg("status")
        if status == C.SchedulerStatus.STALLED:
            core = self.read_reg("error_core")
            which = f"core {core}" if core != C.UNKNOWN else "a core"
            return (f" status = STALLED: it waits for a unit of {which} that was never started "
                    f"(start every mpe_<c>, misc_<c> and memctrl_<c> before the scheduler).")
        name = C.SchedulerStatus(status).name if status in C.SchedulerStatus._value2member_map_ \
            else str(status)
        return f" status = {name}."

    def soft_reset(self) -> None:
        """Abort whatever runs and return every CU to idle (arguments are kept)."""
        self.write_arg("soft_reset", C.SOFT_RESET)

    def counters(self) -> dict:
        return {"cycles": self.read_counter("cycles"), "instructions": self.read_counter("insns")}


_ADVICE = {
    C.ErrorCode.ILLEGAL_INSTRUCTION: "The program image is corrupt or from another ISA version: "
    "recompile it, and sync its buffer to the device before the run.",
    C.ErrorCode.ADDRESS: "An access or a pointer argument leaves its buffer: check the channel "
    "buffers given to ol.run (one per HBM channel, each large enough) and the program's layout.",
    C.ErrorCode.PROGRAM: "The program breaks a rule of the hardware: recompile it; the compiler "
    "should never emit this.",
    None: "The device stays usable; call ol.reset() if later runs misbehave.",
}


class MPEDriver(HLSKernel):
    """Matrix processing engine of one core."""

    bindto = [kernel_vlnv("mpe")]

    def counters(self) -> dict:
        return {"instructions": self.read_counter("insns"), "macs": self.read_counter("macs"),
                "fixed_macs": self.read_counter("fixed_macs")}


class MISCDriver(HLSKernel):
    """MISC (special function) unit of one core."""

    bindto = [kernel_vlnv("misc")]

    def counters(self) -> dict:
        return {"instructions": self.read_counter("insns"),
                "elements": self.read_counter("elements")}


class MemoryControllerDriver(HLSKernel):
    """Memory controller of one core: one pointer argument per HBM pseudo-channel it owns."""

    bindto = [kernel_vlnv("memctrl")]

    @property
    def channels(self) -> tuple:
        """HBM pseudo-channels of this core, in port order (port k serves channels[k])."""
        return tuple(self.design.core_channels[self.core])

    def port_memory(self, k: int) -> str:
        """Tag of the bank that port k is wired to in the loaded xclbin (e.g. ``HBM[4]``)."""
        return self._regs[f"hbm{k}"]["memory"]

    def check(self, k: int, buffer) -> int:
        """Device address of `buffer` if port k can reach all of it; AddressError otherwise."""
        address, nbytes = _address_of(buffer), max(int(getattr(buffer, "nbytes", 1)), 1)
        tag = self.port_memory(k)
        bank = self.device.mem_dict[tag]
        if bank["base_address"] <= address and address + nbytes <= bank["base_address"] + bank["size"]:
            return address
        actual = next((t for t, d in self.device.mem_dict.items() if not d.get("streaming") and
                       d["base_address"] <= address < d["base_address"] + d["size"]), "no bank")
        raise AddressError(
            f"the buffer at 0x{address:x} ({nbytes} bytes, in {actual}) cannot serve HBM channel "
            f"{self.channels[k]}: {self.name}.hbm{k} reaches only {tag}. Allocate it with "
            f"pynq.allocate(shape, dtype, target=ol.{tag.replace('[', '').replace(']', '')})")

    def bind(self, k: int, buffer) -> None:
        """Point port k at `buffer` (a PynqBuffer in the port's bank); None writes 0 (unbound)."""
        self.write_arg(f"hbm{k}", 0 if buffer is None else self.check(k, buffer))

    def counters(self) -> dict:
        return {"bytes_read": self.read_counter("bytes_read"),
                "bytes_written": self.read_counter("bytes_written")}


DRIVERS = (SchedulerDriver, MPEDriver, MISCDriver, MemoryControllerDriver)
