"""The HLS ap_ctrl_hs control protocol and the scheduler's status/error codes, shared by device and drivers."""
from __future__ import annotations

from enum import IntEnum

# ---------------------------------------------------------------------------------------------
# Control block of every Vitis HLS kernel with an s_axilite control port (ap_ctrl_hs)
# ---------------------------------------------------------------------------------------------
#: Byte offsets of the control block; arguments start at ARGS_BASE.
CTRL, GIE, IER, ISR = 0x00, 0x04, 0x08, 0x0C
ARGS_BASE = 0x10

#: Bits of CTRL. AP_START: written by the host, cleared by the kernel when it accepts the start.
#: AP_DONE: set when the kernel finishes, cleared when CTRL is read (clear on read).
#: AP_IDLE: the kernel is not running.  AP_READY: it can take new inputs (clear on read).
AP_START, AP_DONE, AP_IDLE, AP_READY = 0x01, 0x02, 0x04, 0x08
AUTO_RESTART = 0x80

#: Bits of IER/ISR: interrupt on ap_done (bit 0), on ap_ready (bit 1).  ISR bits toggle on write.
INT_DONE, INT_READY = 0x01, 0x02


def describe_ctrl(value: int) -> str:
    """Readable form of a CTRL value, e.g. ``0x00000001 (AP_START)``."""
    names = [n for n, bit in (("AP_START", AP_START), ("AP_DONE", AP_DONE), ("AP_IDLE", AP_IDLE),
                              ("AP_READY", AP_READY), ("AUTO_RESTART", AUTO_RESTART))
             if value & bit]
    return f"0x{value:08x} ({'|'.join(names) or 'running, not done, not idle'})"


# ---------------------------------------------------------------------------------------------
# The scheduler's own read-only registers
# ---------------------------------------------------------------------------------------------
class SchedulerStatus(IntEnum):
    """Value of the scheduler's `status` register."""

    IDLE = 0          # never started since power-up or soft reset
    RUNNING = 1       # executing the program
    DONE = 2          # finished without error (AP_DONE set)
    ERROR = 3         # stopped on an error (AP_DONE set; error_code/core/pc say why)
    STALLED = 4       # started, but waits for a unit that was never started (never finishes)


class ErrorCode(IntEnum):
    """Value of the scheduler's `error_code` register."""

    NONE = 0
    ILLEGAL_INSTRUCTION = 1   # an instruction word does not decode, or a field is out of range
    ADDRESS = 2               # an access, or a pointer argument, lies outside its memory
    PROGRAM = 3               # the program is malformed (dependency tokens, barriers, ...)
    UNIT_NOT_STARTED = 4      # an MPE/MISC/memory-controller CU was not started (status STALLED)
    INTERNAL = 5              # any other failure inside the accelerator


#: Value of error_core / error_pc when the hardware does not know them.
UNKNOWN = 0xFFFFFFFF

#: Value to write into the scheduler's `soft_reset` register (self-clearing).
SOFT_RESET = 0x1
