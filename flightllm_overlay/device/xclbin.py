"""Reading an xclbin's header: its section kinds, whether it holds an image, its mode and platform."""
from __future__ import annotations

import ctypes

from pynq._3rdparty import xclbin as X

from ..errors import BitstreamError

__all__ = ["EMULATION_MODES", "SIMULATED_PLATFORM_PREFIX", "is_metadata_only", "mode",
           "platform_vbnv", "section_kinds"]

#: Platform names of the simulated U280's metadata-only xclbins start with this.
SIMULATED_PLATFORM_PREFIX = "flightllm_sim:"

#: Section kinds that carry an FPGA configuration image: BITSTREAM, CLEARING_BITSTREAM, and (in
#: xclbin.h, not in pynq's copy) PDI = 18 and BITSTREAM_PARTIAL_PDI = 19.
_IMAGE_KINDS = {X.AXLF_SECTION_KIND.BITSTREAM, X.AXLF_SECTION_KIND.CLEARING_BITSTREAM, 18, 19}
#: XCLBIN_MODE values of emulation builds (XRT's core/include/xclbin.h: HW_EMU = 4, SW_EMU = 5,
#: HW_EMU_PR = 6; pynq's copy of the enum numbers from 1, so it is not used here).
EMULATION_MODES = {4, 5, 6}


def _header(data: bytes):
    return X.axlf.from_buffer_copy(data[:ctypes.sizeof(X.axlf)]).m_header


def section_kinds(data: bytes) -> list:
    """Section kinds (`AXLF_SECTION_KIND` numbers) of an xclbin; raises BitstreamError if not one."""
    if len(data) < ctypes.sizeof(X.axlf) or not data.startswith(b"xclbin2\0"):
        raise BitstreamError("not an xclbin (the file does not start with 'xclbin2'): give the "
                             "simulated U280 an .xclbin file such as flightllm.xclbin")
    n = _header(data).m_numSections
    first = X.axlf.m_sections.offset
    size = ctypes.sizeof(X.axlf_section_header)
    if first + n * size > len(data):
        raise BitstreamError("xclbin is truncated (its section table runs past the end of the "
                             "file): rebuild or re-copy it")
    return [X.axlf_section_header.from_buffer_copy(data, first + i * size).m_sectionKind
            for i in range(n)]


def is_metadata_only(data: bytes) -> bool:
    """True if an xclbin carries no configuration image (like ours, or pynq's default.xclbin)."""
    return not set(section_kinds(data)) & _IMAGE_KINDS


def mode(data: bytes) -> int:
    """The header's m_mode (XCLBIN_MODE: 0 flat, 4 hw_emu, 5 sw_emu, ...)."""
    return int(_header(data).m_mode)


def platform_vbnv(data: bytes) -> str:
    """The platform (shell) name the xclbin was built for."""
    return bytes(_header(data).m_platformVBNV).split(b"\0", 1)[0].decode(errors="replace")
