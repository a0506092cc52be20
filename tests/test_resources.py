"""Resource estimate (hw/resources.py, benchmarks/resources.py): numbers follow config, the U280 build fits."""
from __future__ import annotations

import runpy
from dataclasses import replace
from pathlib import Path

import pytest

from flightllm_overlay.config import load_target
from flightllm_overlay.hw import resources as R

ROOT = Path(__file__).resolve().parents[1]
TARGET = load_target("u280")


def item(est, kernel, prefix):
    (found,) = [i for i in est.items if i.kernel == kernel and i.what.startswith(prefix)]
    return found


def deeper(t, factor=2):
    return t.with_overrides(buffers={k: replace(b, depth=b.depth * factor)
                                     for k, b in t.buffers.items()})


def test_mpe_dsps_are_mm_macs_over_macs_per_dsp():
    est = R.estimate()
    dsp_macs = TARGET.raw["mpe"]["dsp_macs"]
    assert dsp_macs == 2
    assert item(est, "mpe", "INT8 DSP48E2").count == TARGET.mm_macs_per_cycle // dsp_macs == 2048
    array = item(est, "mpe", "INT8 DSP48E2").cost.dsp * TARGET.cores
    assert array == 6144                              # facts 1.3: 3 x 4096 / 2
    assert est.kernel_cost("mpe").dsp > array          # plus the epilogue


def test_doubling_mm_macs_doubles_mpe_dsps():
    base, wide = R.estimate(), R.estimate(TARGET.with_overrides(mm_macs_per_cycle=8192))
    assert wide.kernel_cost("mpe").dsp == 2 * base.kernel_cost("mpe").dsp
    assert item(wide, "mpe", "INT8").count == 2 * item(base, "mpe", "INT8").count
    assert wide.kernel_cost("misc") == base.kernel_cost("misc")          # nothing else moves
    assert wide.kernel_cost("memctrl") == base.kernel_cost("memctrl")


def test_doubling_misc_width_doubles_misc_lanes():
    base = R.estimate()
    wide = R.estimate(TARGET.with_overrides(misc_elements_per_cycle=32))
    lanes = item(base, "misc", "FP32 lanes")
    assert lanes.count == TARGET.misc_elements_per_cycle == 16
    assert item(wide, "misc", "FP32 lanes").cost.dsp == 2 * lanes.cost.dsp
    assert lanes.unit.dsp == 2 * 3 + 2 * 2 + 7                    # 2 mul, 2 add, exp (PG060)


def test_doubling_buffer_depth_doubles_memory_blocks():
    base, deep = R.estimate(), R.estimate(deeper(TARGET))
    by_name = {b.name: b for b in base.buffers}
    for b in deep.buffers:
        a = by_name[b.name]
        assert b.primitive == a.primitive                      # the rule is per buffer
        if b.primitive == "URAM":                             # depth cascades: exact
            assert b.blocks == 2 * a.blocks
        else:                                                 # a deeper BRAM36 shape may save
            assert 2 * a.blocks * 0.99 <= b.blocks <= 2 * a.blocks      # a block on the width
    assert deep.buffer_blocks["URAM"] == 2 * base.buffer_blocks["URAM"]
    assert deep.buffer_blocks["BRAM36"] == pytest.approx(2 * base.buffer_blocks["BRAM36"], rel=0.01)
    assert deep.kernel_cost("mpe").dsp == base.kernel_cost("mpe").dsp


def test_buffer_mapping_rules():
    est = R.estimate()
    m = {b.name: b for b in est.buffers}
    assert set(m) == set(TARGET.buffers)
    # wbuf: 4096 lines of 512 B = 4096 x 4096 bits -> 57 URAM side by side (72 bits each)
    assert (m["wbuf"].primitive, m["wbuf"].blocks) == ("URAM", 57)
    # gbuf: 1024 lines of 2048 B -> 1Kx36 BRAM36, 16384/36 -> 456 blocks
    assert (m["gbuf"].primitive, m["gbuf"].blocks) == ("BRAM36", 456)
    assert (m["fsb"].primitive, m["fsb"].blocks) == ("BRAM36", 1)
    for b in est.buffers:
        assert b.blocks == R.blocks(b.depth, b.bits, b.primitive)
        assert b.reason
        per_block = 288 * 1024 if b.primitive == "URAM" else 36 * 1024
        assert b.blocks * per_block >= b.depth * b.bits          # it holds the buffer
    unknown = R.map_buffer(replace(TARGET.buffer("bias"), name="scratch"))
    assert unknown.primitive == "URAM" and "no stated rule" in unknown.reason


@pytest.mark.parametrize("depth,bits,primitive,want", [
    (4096, 72, "URAM", 1), (4097, 72, "URAM", 2), (4096, 73, "URAM", 2), (8192, 144, "URAM", 4),
    (512, 72, "BRAM36", 1), (1024, 36, "BRAM36", 1), (32768, 1, "BRAM36", 1),
    (1024, 72, "BRAM36", 2), (4096, 8, "BRAM36", 1), (4096, 10, "BRAM36", 2)])
def test_block_counts(depth, bits, primitive, want):
    assert R.blocks(depth, bits, primitive) == want


def test_memctrl_follows_the_hbm_channels_of_a_core():
    base = R.estimate()
    half = R.estimate(TARGET.with_overrides(core_channels=tuple(chs[:4]
                                                                for chs in TARGET.core_channels)))
    assert item(base, "memctrl", "512-bit m_axi").count == len(TARGET.core_channels[0]) == 8
    assert half.kernel_cost("memctrl").bram == base.kernel_cost("memctrl").bram / 2
    assert base.kernel_cost("memctrl").dsp == 0                   # LUT dequantisers
    assert base.dequant_in_dsp_what_if() == 3 * 8 * 64 // 2


def test_the_u280_estimate_fits():
    est = R.estimate()
    total = est.total.as_dict()
    assert est.fits, est.verdict()
    assert est.verdict().startswith("fits the U280")
    for k in R.RESOURCES:
        assert total[k] <= R.U280_CAPACITY[k]
    assert R.U280_CAPACITY["DSP"] == 9024 and R.U280_CAPACITY["BRAM36"] == 2016
    assert R.U280_CAPACITY["URAM"] == 960
    # in the neighbourhood of the paper's build (6,345 DSP): the MPE array dominates (the
    # code-group combine of exact group arithmetic, ISA wcodes, adds 768 the paper has not)
    assert R.PAPER_U280["DSP"] <= total["DSP"] <= 1.3 * R.PAPER_U280["DSP"]
    combine = [i for i in est.items if "code-group combine" in i.what]
    assert len(combine) == 1 and combine[0].count * est.cores == 768
    assert est.slr_utilization()["DSP"] <= 1


def test_a_design_twice_as_wide_does_not_fit():
    est = R.estimate(TARGET.with_overrides(mm_macs_per_cycle=8192))
    assert not est.fits
    assert est.verdict().startswith("DOES NOT FIT") and "DSP" in est.verdict()


def test_report_sets_totals_beside_the_paper_and_the_device():
    text = R.format_report()
    for figure in ("6,345", "1,252", "792", "9,024", "2,016", "960", "574,000"):
        assert figure in text
    for kernel in ("mpe", "misc", "memctrl", "scheduler"):
        assert f"\n{kernel} " in text
    assert "Verdict: fits the U280" in text and "not synthesis" in text


def test_benchmark_script_prints_the_table_and_its_verdict(capsys):
    main = runpy.run_path(str(ROOT / "benchmarks" / "resources.py"))["main"]
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "U280 capacity" in out and "paper (U280)" in out and "Verdict: fits" in out
    assert main(["--set", "mm_macs_per_cycle=8192", "--buffer-depth-scale", "2"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_activation_group_shifters_are_one_per_chain_output():
    """ISA agroup: each 16-DSP chain's partial sum per packed MAC lane is shifted into its
    accumulator; the shifters follow the MAC rate and cost LUTs, no DSP."""
    base = R.estimate()
    shifters = item(base, "mpe", "activation-group shifters")
    assert shifters.count == TARGET.mm_macs_per_cycle // R.CHAIN_LEN == 256
    assert shifters.cost.dsp == 0 and shifters.cost.lut > 0
    wide = R.estimate(TARGET.with_overrides(mm_macs_per_cycle=8192))
    assert item(wide, "mpe", "activation-group shifters").count == 2 * shifters.count
