"""The pynq Device base that the simulated U280 and the card over XRT share (registers, banks, buffers)."""
from .base import DEVICE_CHOICES, U280Device, requested_device
from .memory import BankAccess, MemoryBank, SlicedBuffer

__all__ = ["DEVICE_CHOICES", "BankAccess", "MemoryBank", "SlicedBuffer", "U280Device",
           "requested_device"]
