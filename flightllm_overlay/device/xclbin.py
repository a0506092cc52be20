"""Reading an xclbin's header: its section kinds, whether it holds an image, its mode and platform."""
from __future__ import annotations

import ctypes

from pynq._3rdparty import xclbin as X

from ..errors import BitstreamError

__all__ = ["AP_CTRL_NONE", "EMULATION_MODES", "IP_CONTROL_SHIFT", "SIMULATED_PLATFORM_PREFIX",
           "check_sections", "ip_controls", "is_metadata_only", "mode", "parse_xclbin",
           "platform_vbnv", "section_kinds"]

#: ip_data.properties of a kernel: bits 8..15 are its IP_CONTROL (xclbin.h: IP_CONTROL_MASK
#: 0xFF00, IP_CONTROL_SHIFT 8; AP_CTRL_HS = 0, AP_CTRL_CHAIN = 1, AP_CTRL_NONE = 2).
IP_CONTROL_SHIFT, AP_CTRL_NONE = 8, 2

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


def _sections(data: bytes):
    section_kinds(data)                                   # checks it is a whole xclbin
    first, size = X.axlf.m_sections.offset, ctypes.sizeof(X.axlf_section_header)
    return [X.axlf_section_header.from_buffer_copy(data, first + i * size)
            for i in range(_header(data).m_numSections)]


def ip_controls(data: bytes) -> dict:
    """IP_CONTROL of each kernel compute unit in IP_LAYOUT, by its name (``kernel:instance``)."""
    controls = {}
    for sh in _sections(data):
        if sh.m_sectionKind != X.AXLF_SECTION_KIND.IP_LAYOUT:
            continue
        body = data[sh.m_sectionOffset:sh.m_sectionOffset + sh.m_sectionSize]
        count = ctypes.c_int32.from_buffer_copy(body).value
        first, size = X.ip_layout.m_ip_data.offset, ctypes.sizeof(X.ip_data)
        if first + count * size > len(body):
            raise BitstreamError("the xclbin's IP_LAYOUT section is truncated: rebuild it")
        for i in range(count):
            ip = X.ip_data.from_buffer_copy(body, first + i * size)
            if ip.m_type == X.IP_TYPE.IP_KERNEL:
                name = bytes(ip.m_name).split(b"\0", 1)[0].decode(errors="replace")
                controls[name] = (ip.properties >> IP_CONTROL_SHIFT) & 0xFF
    return controls


def is_metadata_only(data: bytes) -> bool:
    """True if an xclbin carries no configuration image (like ours, or pynq's default.xclbin)."""
    return not set(section_kinds(data)) & _IMAGE_KINDS


def mode(data: bytes) -> int:
    """The header's m_mode (XCLBIN_MODE: 0 flat, 4 hw_emu, 5 sw_emu, ...)."""
    return int(_header(data).m_mode)


def platform_vbnv(data: bytes) -> str:
    """The platform (shell) name the xclbin was built for."""
    return bytes(_header(data).m_platformVBNV).split(b"\0", 1)[0].decode(errors="replace")


def check_sections(data: bytes, name: str = "xclbin") -> list:
    """The section headers of an xclbin, after checking that the header's length is the file's
    and that every section lies inside the file; BitstreamError otherwise."""
    sections = _sections(data)
    length = _header(data).m_length
    if length != len(data):
        raise BitstreamError(f"{name} is truncated or damaged: its header gives {length} bytes, "
                             f"the file has {len(data)}; rebuild or re-copy it")
    first = X.axlf.m_sections.offset
    for s in sections:
        if s.m_sectionOffset + s.m_sectionSize > len(data) or s.m_sectionOffset < first:
            raise BitstreamError(f"{name} is damaged: section kind {s.m_sectionKind} lies outside "
                                 f"the file; rebuild or re-copy it")
    return sections


def parse_xclbin(path) -> "object":
    """pynq's `XclBin` parser on `path`, with every failure of a damaged file a BitstreamError."""
    from pynq.pl_server.xclbin_parser import XclBin
    path = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise BitstreamError(f"cannot read {path}: {exc}") from exc
    check_sections(data, path)
    try:
        parser = XclBin(path, xclbin_data=bytearray(data))
        parser.xclbin_data = None          # as when pynq reads the file itself
        return parser
    except BitstreamError:
        raise
    except Exception as exc:      # ET.ParseError, UnicodeDecodeError, ctypes/struct errors, ...
        raise BitstreamError(f"{path} is damaged: its metadata does not parse "
                             f"({type(exc).__name__}: {str(exc)[:160]}); rebuild or re-copy "
                             f"it") from None
