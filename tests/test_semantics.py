"""spec.semantics: the one definition of footprints, dynamic modes and stripe channels."""
from __future__ import annotations

import pytest

from flightllm_overlay.errors import ProgramError
from flightllm_overlay.spec import isa, semantics as S
from flightllm_overlay.spec.isa import Instruction


def test_dyn_enum_names_the_isa_modes_in_order():
    assert [m.name.lower() for m in S.Dyn] == list(isa.DYN_MODES)


@pytest.mark.parametrize("mode,pos,length,rows,off", [
    ("static", 5, 3, 64, 1000),
    ("at_pos", 5, 3, 3, 1000 + 5 * 32),
    ("history", 5, 3, 8, 1000),
    ("step", 5, 3, 3, 1000),
    ("last", 5, 3, 1, 1000 + 2 * 32),
])
def test_dyn_rows_follow_the_documented_modes(mode, pos, length, rows, off):
    f = Instruction("LD", dyn=mode, rows=64, hbm_addr=1000, hbm_stride=32, row_bytes=32).fields
    assert S.dyn_rows(f, pos, length) == (rows, off)


def test_dyn_rows_past_the_compiled_capacity_is_a_program_error():
    f = Instruction("LD", dyn="history", rows=8, row_bytes=32, hbm_stride=32).fields
    with pytest.raises(ProgramError, match="exceeds the 8 rows"):
        S.dyn_rows(f, 6, 3)
    with pytest.raises(ProgramError, match="dyn=last"):
        S.dyn_rows(Instruction("LD", dyn="last", rows=4).fields, 0, 0)


def test_rows_at_capacity():
    assert S.rows_at_capacity(Instruction("LD", rows=7, row_bytes=4).fields) == 7
    assert S.rows_at_capacity(Instruction("LD", dyn="last", rows=7, row_bytes=4).fields) == 1
    assert S.rows_at_capacity(Instruction("LD", wfmt="packed", wbits=3, rows=32, wk=64,
                                          row_bytes=4096).fields) == 1


def test_stripe_channels_go_round_the_ports_from_channel():
    ports = (0, 4, 8, 12, 16, 20, 24, 28)
    f = Instruction("LD", channel=24, stripe=4, rows=1, row_bytes=4096).fields
    assert S.stripe_count(f) == 4
    assert S.stripe_channels(f, ports) == [24, 28, 0, 4]
    assert S.stripe_channels(Instruction("LD", channel=8, rows=1).fields, ports) == [8]
    assert S.stripe_channels(f, (1, 5)) == [24]          # not a port: reported as is


def test_footprint_of_a_matrix_instruction_reads_operands_and_writes_its_output():
    insn = Instruction("MM", m=4, n=32, k=64, a_addr=0, a_scale=4096, w_addr=0, w_scale=8192,
                       out_addr=256)
    fp = S.footprint(insn, 16)
    assert ("gbuf", 256, 256 + 3 * 64 + 64, True) in fp
    assert ("abuf", 0, 4 * 64, False) in fp
    assert ("wbuf", 0, 32 * 64, False) in fp
    assert [w for *_, w in fp].count(True) == 1


def test_footprint_writes_are_exactly_the_outputs():
    quant = Instruction("MISC", op="quant", rows=3, k=64, a_addr=0, out_addr=128, out2_addr=4096,
                        out_abuf=1)
    writes = [(r, a, b) for r, a, b, w in S.footprint(quant, 16) if w]
    assert writes == [("abuf", 128, 128 + 2 * 64 + 64), ("abuf", 4096, 4096 + 12)]
    assert [o[0] for o in S.outputs("MISC", quant.fields)] == ["abuf", "abuf"]


def test_footprint_of_a_dynamic_load_spans_the_capacity():
    ld = Instruction("LD", buf="gbuf", dyn="at_pos", rows=4, row_bytes=8, hbm_stride=8,
                     buf_stride=8, channel=3)
    hbm = [x for x in S.footprint(ld, 100) if x[0] == ("hbm", 3)]
    assert hbm == [(("hbm", 3), 0, 99 * 8 + 8, False)]


def test_kept_keys_of_a_dense_pattern_is_the_causal_average():
    # window 0 would be dense; a window covering everything keeps every causal key
    assert S.kept_keys(1, 128, 0, 64) == 128
    assert S.kept_keys(1, 1024, 1, 1) < 128 + 64 + 1
