"""Hardware description: the block design (CUs, registers, wiring, memories) and the HLS control protocol."""
from .control import AP_DONE, AP_IDLE, AP_READY, AP_START, ErrorCode, SchedulerStatus
from .design import BlockDesign, ComputeUnit, Memory, Register, block_design, build_design, kernel_vlnv

__all__ = ["AP_DONE", "AP_IDLE", "AP_READY", "AP_START", "ErrorCode", "SchedulerStatus",
           "BlockDesign", "ComputeUnit", "Memory", "Register", "block_design", "build_design",
           "kernel_vlnv"]
