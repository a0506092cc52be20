"""The real Alveo U280 through XRT (pyxrt and its C API); importing this registers `XrtU280` with pynq."""
from .device import PLATFORM, XRT_VERSION, XrtBuffer, XrtMemoryBank, XrtU280

__all__ = ["PLATFORM", "XRT_VERSION", "XrtBuffer", "XrtMemoryBank", "XrtU280"]
