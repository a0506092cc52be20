"""The metadata-only xclbin: pynq's own XclBin parser must read our block design back exactly."""
from __future__ import annotations

import ctypes
import json
import os

import pytest
from pynq._3rdparty import xclbin as X
from pynq.pl_server.xclbin_parser import XclBin, parse_xclbin_header

from flightllm_overlay.config import load_target
from flightllm_overlay.errors import BitstreamError
from flightllm_overlay.hw.design import block_design, build_design
from flightllm_overlay.sim.xclbin import (build_xclbin, is_metadata_only, section_kinds,
                                          sim_xclbin_path)

DESIGN = block_design()
TARGET = load_target("u280")


@pytest.fixture(scope="module")
def parsed():
    return XclBin(xclbin_data=bytearray(build_xclbin()))


def test_shipped_file_is_regenerated_byte_for_byte():
    path = sim_xclbin_path()
    assert path.name == "flightllm.xilinx_u280_sim.xclbin"
    assert path.parent.name == "flightllm.xclbin.d"
    assert path.read_bytes() == build_xclbin(), \
        "shipped xclbin is stale: run python -c 'from flightllm_overlay.sim.xclbin import " \
        "write_xclbin; write_xclbin()'"
    assert build_xclbin() == build_xclbin()


def test_compute_units_names_vlnvs_addresses(parsed):
    expected = {"scheduler"} | {f"{k}_{c}" for k in ("mpe", "misc", "memctrl")
                                for c in range(TARGET.cores)}
    assert set(parsed.ip_dict) == expected
    for name, ip in parsed.ip_dict.items():
        unit = DESIGN.cu(name)
        assert ip["type"] == f"flightllm:hls:{unit.kernel}:1.0"
        assert ip["phys_addr"] == unit.base_address
        assert ip["addr_range"] == 0x10000
        assert ip["hw_control_protocol"] == "ap_ctrl_hs"
        assert ip["cu_name"] == f"{unit.kernel}:{name}"
    # cu_index follows the address order: scheduler first
    assert parsed.ip_dict["scheduler"]["cu_index"] == 0
    assert sorted(ip["cu_index"] for ip in parsed.ip_dict.values()) == list(range(len(expected)))


def test_register_offsets_follow_vitis_hls_layout(parsed):
    regs = parsed.ip_dict["scheduler"]["registers"]
    assert regs["CTRL"]["address_offset"] == 0
    want = {"program": (0x10, 64), "pos": (0x1C, 32), "len": (0x24, 32), "status": (0x2C, 32),
            "error_code": (0x34, 32), "error_core": (0x3C, 32), "error_pc": (0x44, 32),
            "cycles_lo": (0x4C, 32), "cycles_hi": (0x54, 32), "insns_lo": (0x5C, 32),
            "insns_hi": (0x64, 32), "soft_reset": (0x6C, 32)}
    assert {k: (v["address_offset"], v["size"]) for k, v in regs.items() if k != "CTRL"} == want
    mem = parsed.ip_dict["memctrl_0"]["registers"]
    assert [mem[f"hbm{k}"]["address_offset"] for k in range(8)] == [0x10 + 12 * k for k in range(8)]
    assert mem["bytes_read_lo"]["address_offset"] == 0x70
    assert mem["bytes_written_hi"]["address_offset"] == 0x88
    mpe = parsed.ip_dict["mpe_2"]["registers"]
    assert [mpe[n]["address_offset"] for n in ("insns_lo", "insns_hi", "macs_lo", "macs_hi")] == \
        [0x10, 0x18, 0x20, 0x28]
    misc = parsed.ip_dict["misc_1"]["registers"]
    assert misc["elements_hi"]["address_offset"] == 0x28
    for name, ip in parsed.ip_dict.items():        # every register the design has, and only those
        unit = DESIGN.cu(name)
        assert {k: v["address_offset"] for k, v in ip["registers"].items() if k != "CTRL"} == \
            {r.name: r.offset for r in unit.registers}


def test_every_memctrl_port_is_wired_to_its_hbm_channel(parsed):
    for c, channels in enumerate(TARGET.core_channels):
        regs = parsed.ip_dict[f"memctrl_{c}"]["registers"]
        assert [regs[f"hbm{k}"]["memory"] for k in range(len(channels))] == \
            [f"HBM[{ch}]" for ch in channels]
    assert parsed.ip_dict["scheduler"]["registers"]["program"]["memory"] == "DDR[0]"
    for kernel in ("mpe", "misc"):
        assert not any("memory" in r for r in parsed.ip_dict[f"{kernel}_0"]["registers"].values())


def test_memory_banks_sizes_and_use(parsed):
    mem = parsed.mem_dict
    assert len(mem) == TARGET.hbm_channels + TARGET.ddr_banks
    owned = {ch for chs in TARGET.core_channels for ch in chs}
    for k in range(TARGET.hbm_channels):
        bank = mem[f"HBM[{k}]"]
        assert (bank["type"], bank["size"], bank["base_address"]) == \
            ("HBM", 256 << 20, k * (256 << 20))
        assert bank["used"] == (k in owned)
    assert not mem["HBM[3]"]["used"] and not mem["HBM[31]"]["used"]
    assert mem["DDR[0]"]["type"] == "DDR4" and mem["DDR[0]"]["size"] == 16 << 30
    assert mem["DDR[0]"]["base_address"] == 0x40_0000_0000 and mem["DDR[0]"]["used"]
    assert mem["DDR[1]"]["base_address"] == 0x50_0000_0000 and not mem["DDR[1]"]["used"]


def test_clock_is_the_kernel_clock_of_the_target(parsed):
    assert parsed.clock_dict == {"clock0": {"name": "DATA_CLK", "frequency": 225, "type": "DATA"}}


def test_numbers_come_from_the_target():
    t = TARGET.with_overrides(clock_mhz=300.0, hbm_channel_bytes=128 << 20)
    parsed = XclBin(xclbin_data=bytearray(build_xclbin(build_design(t))))
    assert parsed.clock_dict["clock0"]["frequency"] == 300
    assert parsed.mem_dict["HBM[5]"]["size"] == 128 << 20
    assert parsed.mem_dict["HBM[5]"]["base_address"] == 5 * (128 << 20)


def test_marked_metadata_only_in_every_way():
    data = build_xclbin()
    kinds = section_kinds(data)
    assert X.AXLF_SECTION_KIND.BITSTREAM not in kinds
    assert is_metadata_only(data)
    head = X.axlf.from_buffer_copy(data[:ctypes.sizeof(X.axlf)])
    assert head.m_header.m_debug_bin == b"METADATA_ONLY"
    assert bytes(head.m_header.m_platformVBNV).startswith(b"flightllm_sim:")
    assert head.m_header.m_length == len(data)
    sections, uuid = parse_xclbin_header(data)
    marker = json.loads(bytes(sections[X.AXLF_SECTION_KIND.KEYVALUE_METADATA]))
    pairs = {kv["key"]: kv["value"] for kv in marker["keyvalue_metadata"]["key_values"]}
    assert pairs["flightllm_metadata_only"] == "true"
    assert b"METADATA ONLY" in bytes(sections[X.AXLF_SECTION_KIND.EMBEDDED_METADATA])
    assert len(uuid) == 32 and uuid != "0" * 32


def test_a_bitstream_section_is_detected():
    data = bytearray(build_xclbin())
    first = X.axlf.m_sections.offset              # turn the first section into a BITSTREAM
    ctypes.c_uint32.from_buffer(data, first).value = X.AXLF_SECTION_KIND.BITSTREAM
    assert not is_metadata_only(bytes(data))


def test_pynq_default_xclbin_is_metadata_only_too():
    import pynq
    path = os.path.join(os.path.dirname(pynq.__file__), "pl_server", "default.xclbin")
    with open(path, "rb") as f:
        assert is_metadata_only(f.read())


@pytest.mark.parametrize("data", [b"", b"not an xclbin at all" * 40, b"xclbin2\0" + bytes(16)])
def test_garbage_is_refused_clearly(data):
    with pytest.raises(BitstreamError, match="xclbin"):
        section_kinds(data)
