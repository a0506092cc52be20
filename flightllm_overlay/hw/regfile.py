"""Register file of one HLS compute unit with ap_ctrl_hs semantics, as the simulated device models it.

What it models (Vitis HLS control block): AP_DONE and AP_READY clear when CTRL is read; writing
AP_START to an idle unit starts it (the owner decides what that does); ISR bits toggle on
write; read-only argument registers (kernel outputs) ignore host writes; unmapped offsets read
0.  Every access is reported to a log callback, so tests can check exact transaction sequences.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import control as C
from .design import ComputeUnit


@dataclass(frozen=True)
class RegisterAccess:
    """One register transaction: op is "R" or "W"; name is the register (``x[63:32]``: high word)."""

    op: str
    cu: str
    offset: int
    name: str
    value: int

    def __str__(self):
        return f"{self.op} {self.cu}.{self.name} (0x{self.offset:02x}) = 0x{self.value:x}"


class RegisterFile:
    """Registers and start state of one compute unit.

    Parameters
    ----------
    name, base, size : CU name, base address and address window (from pynq's ip_dict).
    unit : ComputeUnit or None
        Its description in the block design (None: a CU of another design; no arguments known).
    on_start : callable(RegisterFile)
        Called when the host sets AP_START on an idle unit (after `started` is set).
    on_write : callable(RegisterFile, name, value) or None
        Called for writes to argument registers that need an action (e.g. soft_reset).
    log : callable(RegisterAccess)
    """

    def __init__(self, name, base, size, unit: ComputeUnit | None, on_start, log, on_write=None):
        self.name, self.base, self.size, self.unit = name, base, size, unit
        self.core = unit.core if unit else None
        self._on_start, self._on_write, self._log = on_start, on_write, log
        self.names = {C.CTRL: "CTRL", C.GIE: "GIE", C.IER: "IER", C.ISR: "ISR"}
        self.readonly, self.offsets, self.wide = set(), {}, set()
        for reg in unit.registers if unit else ():
            self.offsets[reg.name] = reg.offset
            if reg.words == 2:
                self.wide.add(reg.name)
            for w in range(reg.words):
                self.names[reg.offset + 4 * w] = reg.name if w == 0 else f"{reg.name}[63:32]"
                if reg.access == "ro":
                    self.readonly.add(reg.offset + 4 * w)
        self.regs, self.started = {}, False
        self.reset()

    def reset(self, keep_args: bool = False) -> None:
        """Back to idle with outputs cleared; host-written arguments kept if `keep_args`."""
        args = {o: v for o, v in self.regs.items() if o >= C.ARGS_BASE and o not in self.readonly}
        self.regs = {o: 0 for o in self.names}
        self.regs[C.CTRL], self.started = C.AP_IDLE, False
        if keep_args:
            self.regs.update(args)

    # -- device side -------------------------------------------------------------------------------
    def get(self, name: str) -> int:
        off = self.offsets[name]
        high = self.regs.get(off + 4, 0) << 32 if name in self.wide else 0
        return self.regs[off] | high

    def set(self, name: str, value: int) -> None:
        off, value = self.offsets[name], int(value)
        self.regs[off] = value & 0xFFFFFFFF
        if name in self.wide:
            self.regs[off + 4] = (value >> 32) & 0xFFFFFFFF

    def set_counter(self, name: str, value: int) -> None:
        """Store a 64-bit count in `<name>_lo` / `<name>_hi`."""
        self.set(f"{name}_lo", int(value) & 0xFFFFFFFF)
        self.set(f"{name}_hi", (int(value) >> 32) & 0xFFFFFFFF)

    def start(self) -> None:
        self.started = True
        self.regs[C.CTRL] = (self.regs[C.CTRL] & C.AUTO_RESTART) | C.AP_START

    def finish(self) -> None:
        """The unit completed: AP_DONE|AP_IDLE|AP_READY, and the done interrupt if enabled."""
        self.started = False
        ctrl = self.regs[C.CTRL] & C.AUTO_RESTART
        self.regs[C.CTRL] = ctrl | C.AP_DONE | C.AP_IDLE | C.AP_READY
        if self.regs[C.IER] & C.INT_DONE:
            self.regs[C.ISR] |= C.INT_DONE

    # -- host side ---------------------------------------------------------------------------------
    def read(self, off: int) -> int:
        value = self.regs.get(off, 0)
        if off == C.CTRL:                                    # AP_DONE, AP_READY: clear on read
            self.regs[C.CTRL] = value & ~(C.AP_DONE | C.AP_READY)
        self._log(RegisterAccess("R", self.name, off, self.names.get(off, "?"), value))
        return value

    def write(self, off: int, value: int) -> None:
        name = self.names.get(off, "?")
        self._log(RegisterAccess("W", self.name, off, name, value))
        if off == C.CTRL:
            keep = self.regs[C.CTRL] & ~C.AUTO_RESTART
            self.regs[C.CTRL] = keep | (value & C.AUTO_RESTART)
            if value & C.AP_START and not self.started:
                self.start()
                self._on_start(self)
        elif off == C.ISR:
            self.regs[C.ISR] ^= value & (C.INT_DONE | C.INT_READY)     # toggle on write
        elif off in (C.GIE, C.IER):
            self.regs[off] = value & (0x1 if off == C.GIE else 0x3)
        elif off in self.names and off not in self.readonly:
            if self._on_write is None or not self._on_write(self, name, value):
                self.regs[off] = value & 0xFFFFFFFF
