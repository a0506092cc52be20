"""Writes the METADATA-ONLY xclbin of the simulated U280 from the block design; it holds no bitstream.

The file is an ordinary axlf container ("xclbin2") with the sections pynq's `XclBin` parser
reads: EMBEDDED_METADATA (kernel XML: arguments, register offsets, ports, instances),
IP_LAYOUT, CONNECTIVITY, MEM_TOPOLOGY and CLOCK_FREQ_TOPOLOGY.  It has NO BITSTREAM section, so
it cannot configure an FPGA; it describes the design for the simulated device only.  It is
marked as such four ways: the file name (`flightllm.<device>.xclbin` with a device name ending
in `_sim`), the header's `m_debug_bin` field (``METADATA_ONLY``), a KEYVALUE_METADATA section
saying so, and a platform VBNV prefixed ``flightllm_sim:`` that no real shell matches.

The bytes are a pure function of the block design (no time stamps; the UUID is derived from the
content), so regenerating gives an identical file; `tests/test_xclbin.py` checks the shipped copy.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import uuid
from pathlib import Path
from xml.etree import ElementTree as ET

from pynq._3rdparty import xclbin as X

from ..errors import BitstreamError
from ..hw.design import CONTROL_PORT, BlockDesign, block_design

BITSTREAMS_DIR = Path(__file__).resolve().parent.parent / "bitstreams"
SIM_DEVICE_SUFFIX = "_sim"
METADATA_ONLY_MARK = b"METADATA_ONLY"
PLATFORM_PREFIX = "flightllm_sim:"
_UUID_NAMESPACE = uuid.UUID("6f1c2a4e-0d3b-5c7e-9a1f-3b5d7e9f1a2c")
_KIND = X.AXLF_SECTION_KIND
_MEM_TYPES = {"HBM": X.MEM_TYPE.MEM_HBM, "DDR4": X.MEM_TYPE.MEM_DDR4}
_CLOCK_TYPES = {"DATA": X.CLOCK_TYPE.CT_DATA, "KERNEL": X.CLOCK_TYPE.CT_KERNEL,
                "SYSTEM": X.CLOCK_TYPE.CT_SYSTEM}
#: Section kinds that carry an FPGA configuration image: BITSTREAM, CLEARING_BITSTREAM, and (in
#: xclbin.h, not in pynq's copy) PDI = 18 and BITSTREAM_PARTIAL_PDI = 19.
_IMAGE_KINDS = {_KIND.BITSTREAM, _KIND.CLEARING_BITSTREAM, 18, 19}
_AP_CTRL_HS = 0                 # ip_data.properties bits 16..23 (IP_CONTROL)


def sim_device_name(design: BlockDesign) -> str:
    """`name` of the simulated device for this design, e.g. ``xilinx_u280_sim``."""
    return f"xilinx_{design.target}{SIM_DEVICE_SUFFIX}"


def sim_xclbin_path(design: BlockDesign | None = None, directory: Path | None = None) -> Path:
    """Where pynq's name resolution finds the metadata-only file for ``flightllm.xclbin``."""
    design = design or block_design()
    directory = Path(directory) if directory else BITSTREAMS_DIR
    return directory / "flightllm.xclbin.d" / f"flightllm.{sim_device_name(design)}.xclbin"


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------
def _hexs(value: int) -> str:
    return f"0x{value:X}"


def kernel_xml(design: BlockDesign) -> bytes:
    """EMBEDDED_METADATA: the kernel XML pynq turns into ip_dict (registers, ports, instances)."""
    project = ET.Element("project", name="flightllm")
    platform = ET.SubElement(project, "platform", vendor="xilinx", boardid=design.target,
                             name=PLATFORM_PREFIX + design.platform, featureRomTime="0")
    ET.SubElement(platform, "version", major="1", minor="0")
    ET.SubElement(platform, "description").text = (
        "FlightLLM accelerator, METADATA ONLY for the simulated device: this file holds no "
        "bitstream and cannot program an FPGA")
    device = ET.SubElement(platform, "device", name="fpga0", fpgaDevice="metadata_only",
                           addrWidth="0")
    core = ET.SubElement(device, "core", name="OCL_REGION_0", target="metadata_only",
                         type="clc_region", clockFreq=f"{design.clocks[0].mhz:g}MHz",
                         numComputeUnits=str(len(design.compute_units)))
    clocks = ET.SubElement(core, "kernelClocks")
    for clk in design.clocks:
        ET.SubElement(clocks, "clock", port=clk.name, frequency=f"{clk.mhz:f}MHz")
    kernels = {}
    for unit in design.compute_units:            # one <kernel> per HLS kernel, one <instance> per CU
        kernels.setdefault(unit.kernel, []).append(unit)
    for name, units in kernels.items():
        first = units[0]
        kernel = ET.SubElement(core, "kernel", name=name, language="c", vlnv=first.vlnv,
                               preferredWorkGroupSizeMultiple="0", workGroupSize="1",
                               interrupt="true", hwControlProtocol=first.control)
        ET.SubElement(kernel, "port", name=CONTROL_PORT, mode="slave",
                      range=_hexs(first.address_range), dataWidth="32",
                      portType="addressable", base="0x0")
        for port in first.ports:
            ET.SubElement(kernel, "port", name=port.name, mode="master",
                          range="0xFFFFFFFFFFFFFFFF", dataWidth=str(port.data_width),
                          portType="addressable", base="0x0")
        for reg in first.registers:
            ET.SubElement(kernel, "arg", name=reg.name,
                          addressQualifier="1" if reg.is_pointer else "0", id=str(reg.arg_id),
                          port=reg.port or CONTROL_PORT, size=_hexs(reg.bits // 8),
                          offset=_hexs(reg.offset), hostOffset="0x0",
                          hostSize=_hexs(reg.bits // 8), type=reg.ctype)
        for unit in units:
            inst = ET.SubElement(kernel, "instance", name=unit.instance)
            ET.SubElement(inst, "addrRemap", base=_hexs(unit.base_address),
                          range=_hexs(unit.address_range), port=CONTROL_PORT)
    ET.indent(project)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(project, "utf-8") + b"\n"


def _array_section(count_type, items, count_field="m_count") -> bytes:
    """A section made of a count followed by an array of ctypes structures (C layout)."""
    item_type = type(items[0])

    class Section(ctypes.Structure):
        _fields_ = [(count_field, count_type), ("items", item_type * len(items))]

    sec = Section()
    setattr(sec, count_field, len(items))
    for i, item in enumerate(items):
        sec.items[i] = item
    return bytes(sec)


def ip_layout(design: BlockDesign) -> bytes:
    items = []
    for unit in design.compute_units:
        ip = X.ip_data(m_type=X.IP_TYPE.IP_KERNEL, properties=_AP_CTRL_HS << 16,
                       m_base_address=unit.base_address)
        name = unit.cu_name.encode()
        ctypes.memmove(ip.m_name, name, len(name))
        items.append(ip)
    return _array_section(ctypes.c_int32, items)


def connectivity(design: BlockDesign) -> bytes:
    tags = [m.tag for m in design.memories]
    items = [X.connection(arg_index=reg.arg_id, m_ip_layout_index=i,
                          mem_data_index=tags.index(unit.port(reg.port).memory))
             for i, unit in enumerate(design.compute_units)
             for reg in unit.registers if reg.is_pointer]
    return _array_section(ctypes.c_int32, items)


def mem_topology(design: BlockDesign) -> bytes:
    items = []
    for mem in design.memories:
        data = X.mem_data(m_type=_MEM_TYPES[mem.kind], m_used=int(mem.used), m_tag=mem.tag.encode())
        data.m_size = mem.size // 1024                   # the format counts KiB
        data.m_base_address = mem.base_address
        items.append(data)
    return _array_section(ctypes.c_int32, items)


def clock_topology(design: BlockDesign) -> bytes:
    items = [X.clock_freq(m_freq_Mhz=int(round(clk.mhz)), m_type=_CLOCK_TYPES[clk.kind],
                          m_name=clk.name.encode()) for clk in design.clocks]
    return _array_section(ctypes.c_uint16, items)


def marker(design: BlockDesign) -> bytes:
    """KEYVALUE_METADATA section that says in words what this file is."""
    text = {"keyvalue_metadata": {"key_values": [
        {"key": "flightllm_metadata_only", "value": "true"},
        {"key": "contents", "value": "block-design metadata for the simulated device; "
                                     "no BITSTREAM section; cannot program an FPGA"},
        {"key": "target", "value": design.target}]}}
    return json.dumps(text, indent=1, sort_keys=True).encode()


# ---------------------------------------------------------------------------------------------
# Container
# ---------------------------------------------------------------------------------------------
def build_xclbin(design: BlockDesign | None = None) -> bytes:
    """Bytes of the metadata-only xclbin of `design` (default: the U280 design)."""
    design = design or block_design()
    sections = [(_KIND.EMBEDDED_METADATA, "metadata", kernel_xml(design)),
                (_KIND.IP_LAYOUT, "ip_layout", ip_layout(design)),
                (_KIND.CONNECTIVITY, "connectivity", connectivity(design)),
                (_KIND.MEM_TOPOLOGY, "mem_topology", mem_topology(design)),
                (_KIND.CLOCK_FREQ_TOPOLOGY, "clock_freq_topo", clock_topology(design)),
                (_KIND.KEYVALUE_METADATA, "metadata_only", marker(design))]
    header_size = ctypes.sizeof(X.axlf) + (len(sections) - 1) * ctypes.sizeof(X.axlf_section_header)
    offset, body, headers = _align8(header_size), bytearray(), []
    for kind, name, data in sections:
        headers.append(X.axlf_section_header(m_sectionKind=kind, m_sectionName=name.encode(),
                                             m_sectionOffset=offset + len(body),
                                             m_sectionSize=len(data)))
        body += data + bytes(_align8(len(data)) - len(data))
    total = offset + len(body)

    head = X.axlf()
    head.m_magic = b"xclbin2"
    ctypes.memset(ctypes.addressof(head.m_cipher), 0xFF, ctypes.sizeof(head.m_cipher))
    ctypes.memset(ctypes.addressof(head.m_keyBlock), 0xFF, ctypes.sizeof(head.m_keyBlock))
    digest = hashlib.sha256(bytes(body)).hexdigest()
    content_uuid = uuid.uuid5(_UUID_NAMESPACE, digest)
    head.m_uniqueId = int(digest[:16], 16)
    h = head.m_header
    h.m_length, h.m_timeStamp, h.m_mode = total, 0, 0           # 0: XCLBIN_FLAT in xclbin.h
    h.m_versionMajor, h.m_versionMinor, h.m_versionPatch = 2, 0, 0
    vbnv = (PLATFORM_PREFIX + design.platform).encode()[:63]
    ctypes.memmove(h.m_platformVBNV, vbnv, len(vbnv))
    ctypes.memmove(h.uuid, content_uuid.bytes, 16)
    h.m_debug_bin = METADATA_ONLY_MARK
    h.m_numSections = len(sections)
    head.m_sections = headers[0]
    out = bytearray(bytes(head))
    for sh in headers[1:]:
        out += bytes(sh)
    out += bytes(offset - len(out)) + body
    assert len(out) == total
    return bytes(out)


def _align8(n: int) -> int:
    return (n + 7) & ~7


def write_xclbin(path: Path | str | None = None, design: BlockDesign | None = None) -> Path:
    """Write the metadata-only xclbin (default: where `flightllm.xclbin` resolves for the sim)."""
    design = design or block_design()
    path = Path(path) if path else sim_xclbin_path(design)
    data = build_xclbin(design)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != data:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def ensure_sim_xclbin(design: BlockDesign | None = None) -> Path:
    """Path of the shipped metadata-only xclbin, regenerating it when missing or out of date."""
    return write_xclbin(None, design)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def section_kinds(data: bytes) -> list:
    """Section kinds (`AXLF_SECTION_KIND` numbers) of an xclbin; raises BitstreamError if not one."""
    if len(data) < ctypes.sizeof(X.axlf) or not data.startswith(b"xclbin2\0"):
        raise BitstreamError("not an xclbin (the file does not start with 'xclbin2'): give the "
                             "simulated U280 an .xclbin file such as flightllm.xclbin")
    head = X.axlf.from_buffer_copy(data[:ctypes.sizeof(X.axlf)])
    n = head.m_header.m_numSections
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


def check_sections(data: bytes, name: str = "xclbin") -> list:
    """The section headers of an xclbin, after checking that the header's length is the file's
    and that every section lies inside the file; BitstreamError otherwise."""
    kinds = section_kinds(data)
    head = X.axlf.from_buffer_copy(data[:ctypes.sizeof(X.axlf)])
    if head.m_header.m_length != len(data):
        raise BitstreamError(f"{name} is truncated or damaged: its header gives "
                             f"{head.m_header.m_length} bytes, the file has {len(data)}; rebuild "
                             f"or re-copy it")
    first, size = X.axlf.m_sections.offset, ctypes.sizeof(X.axlf_section_header)
    sections = [X.axlf_section_header.from_buffer_copy(data, first + i * size)
                for i in range(len(kinds))]
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
        raise BitstreamError(f"{path} is damaged: its metadata does not parse ({type(exc).__name__}: "
                             f"{str(exc)[:160]}); rebuild or re-copy it") from None
