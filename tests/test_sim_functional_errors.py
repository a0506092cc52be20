"""The functional simulator's errors: run-time faults and illegal images name the problem, the core and the pc."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.spec import isa
from flightllm_overlay.errors import (AddressError, FlightLLMError, IllegalInstructionError,
                                      ProgramError)
from flightllm_overlay.spec.isa import FORMATS, Instruction
from flightllm_overlay.sim.functional import FunctionalSimulator
from test_sim_functional import (BARRIER, CH_BASE, END, LDW, PROGRAM, TARGET, Memory, ld,
                                 raises, st)

# ---------------------------------------------------------------------------------------------
# Errors carry the core and the word offset (pc) of the failing instruction
# ---------------------------------------------------------------------------------------------
OK = ld("gbuf", 2, 0, 0, 1, 8)                      # a harmless first instruction on core 2
OK1 = ld("gbuf", 1, 0, 0, 1, 8)                     # ... on core 1
LIMIT = TARGET.hbm_channel_bytes
GBUF = TARGET.buffer("gbuf").bytes


@pytest.mark.parametrize("bad, exc, match, params", [
    (ld("gbuf", 2, LIMIT - 8, 0, 2, 8), AddressError, "past the end of pseudo-channel 2", {}),
    (st("gbuf", 2, LIMIT - 4, 0, 1, 8), AddressError, "past the end of pseudo-channel 2", {}),
    (ld("gbuf", 2, LIMIT - 64, 0, 4, 8, hbm_stride=16, dyn="at_pos"), AddressError,
     "past the end", dict(pos=4, length=1)),
    (ld("gbuf", 0, 0, 0, 1, 8), AddressError, "core 2 has no port to HBM pseudo-channel 0", {}),
    (st("abuf", 5, 0, 0, 1, 8), AddressError, "no port to HBM pseudo-channel 5", {}),
    (ld("gbuf", 2, 0, GBUF - 4, 1, 8), AddressError, "outside the", {}),
    (st("wbuf", 2, 0, 0, 2, 8, buf_stride=TARGET.buffer("wbuf").bytes), AddressError,
     "outside the", {}),
    (Instruction("MM", m=1, n=4, k=4, out_addr=GBUF - 4, no_wscale=1), AddressError,
     "MPE output", {}),
    (Instruction("MISC", op="silu", rows=2, k=4, a_addr=GBUF - 8), AddressError, "MISC a", {}),
    (Instruction("MISC", op="silu", rows=1, k=4, a_addr=1), ProgramError, "not aligned", {}),
    (Instruction("MM", m=1, n=1, k=1, a_scale=2), ProgramError, "not aligned", {}),
    (ld("gbuf", 2, 0, 0, 2, 8, dyn="at_pos"), ProgramError, "run-time length 3 exceeds the 2",
     dict(length=3)),
    (ld("gbuf", 2, 0, 0, 4, 8, dyn="history"), ProgramError, "run-time length 5 exceeds the 4",
     dict(pos=2, length=3)),
    (st("gbuf", 2, 0, 0, 4, 8, dyn="step"), ProgramError, "run-time length 5 exceeds",
     dict(length=5)),
    (ld("gbuf", 2, 0, 0, 1, 8, dyn="last"), ProgramError, "dyn=last needs len >= 1", {}),
    (Instruction("MM", m=1, n=4, k=8, dyn_n=1), ProgramError, "exceeds the 4", dict(length=5)),
    (Instruction("MV", m=1, n=8, k=4, dyn_n=1, dyn_k=1), ProgramError, r"exceeds the 4 .*dyn_k",
     dict(length=5)),
    (Instruction("MISC", op="softmax", rows=1, k=4, dyn_k=1), ProgramError, "exceeds the 4",
     dict(pos=4, length=1)),
    (Instruction("MISC", op="quant", rows=1, k=4), ProgramError, "set out_abuf", {}),
    (Instruction("MISC", op="eadd", rows=1, k=4, out_abuf=1), ProgramError,
     "only quant writes", {}),
    (Instruction("MISC", op="rope", rows=1, k=5), ProgramError, "even row length", {}),
    (Instruction("MISC", op="layernorm", rows=1, k=4, b_addr=(2 << 20) - 12), AddressError,
     "layernorm gain and bias", {}),
])
def test_run_time_errors_name_core_and_pc(bad, exc, match, params):
    err = raises({2: [OK, bad, END]}, exc, match, 2, LDW, **params)
    assert isinstance(err, FlightLLMError)
    assert str(err).startswith(f"core 2, word {LDW} ({bad.op})")


def test_unbound_channel_is_an_address_error():
    base = {ch: b for ch, b in CH_BASE.items() if ch != 2}
    raises({2: [OK, END]}, AddressError, "pseudo-channel 2 is not bound", 2, 0, base=base)


def test_missing_sys_end_is_a_program_error():
    raises({2: [OK]}, ProgramError, "does not end with SYS end", 2, LDW)
    raises({1: [OK1, BARRIER]}, ProgramError, "does not end with SYS end", 1, LDW + 1)
    raises({0: []}, ProgramError, "does not end with SYS end", 0, 0)


def test_cores_disagreeing_at_a_barrier_is_a_program_error():
    raises({1: [BARRIER, END]}, ProgramError, "cores disagree", 1, 0)
    raises({0: [BARRIER, END], 1: [BARRIER, END], 2: [OK, END]}, ProgramError,
           "cores disagree", 2, LDW)


@pytest.mark.parametrize("word, match", [
    ([0x0], "opcode 0x0"),
    (isa.encode(Instruction("MV"))[:-1] + [1 << 31], "non-zero reserved bits"),
    (isa.encode(Instruction("ST"))[:-1], f"ST needs {isa.FORMATS['ST'].words} words"),
])
def test_illegal_words_in_the_image_name_core_and_pc(word, match):
    tail = isa.encode(END) if len(word) != FORMATS["ST"].words - 1 else []
    raises({1: isa.encode(OK1) + word + tail}, IllegalInstructionError, match, 1, LDW)


def test_mv_with_more_than_16_rows_is_illegal_in_an_image():
    mv = [int(w) for w in isa.encode(Instruction("MV", m=16))]
    mv[0] += 1 << 20                                          # m = 17 (m starts at bit 20)
    raises({2: isa.encode(OK) + mv + isa.encode(END)}, IllegalInstructionError,
           "at most 16 rows", 2, LDW)


def test_image_errors():
    mem = Memory()
    sim = FunctionalSimulator(TARGET)
    mem.write(PROGRAM, isa.pack_image([isa.encode(END)] * 2))
    with pytest.raises(ProgramError, match="compiled for 2 cores"):
        sim.run(mem, PROGRAM, {}, CH_BASE)
    mem.write(PROGRAM, np.zeros(16, np.uint32))
    with pytest.raises(IllegalInstructionError, match="no instruction image"):
        sim.run(mem, PROGRAM, {}, CH_BASE)
