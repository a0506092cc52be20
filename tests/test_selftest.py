"""The self-test passes on the simulated U280 and over the fake pyxrt, pinpoints a flipped byte, survives errors; its CLI."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay import selftest
from flightllm_overlay.spec import isa
from flightllm_overlay.cli import main
from flightllm_overlay.config import load_target
from flightllm_overlay.errors import ProgramError
from flightllm_overlay.overlay import FlightLLMOverlay
from flightllm_overlay.sim.device import SimulatedU280
from flightllm_overlay.sim.functional import FunctionalSimulator
from flightllm_overlay.xrt import XrtU280
from fake_xrt import FakeLibXrt, make_pyxrt
from test_xrt_device import real_looking_xclbin

TARGET = load_target("u280")


class FaultySimulator(FunctionalSimulator):
    """The functional simulator, except that after a run matching `when(counters)` it flips bit 4
    of the byte at `offset` in the buffer of HBM channel `channel` (or raises, with `error`)."""

    def __init__(self, target, when, channel=0, offset=0x123, error=None):
        super().__init__(target)
        self.when, self.channel, self.offset, self.error = when, channel, offset, error

    def run(self, memory, program_addr, params=None, channel_base=None):
        counters = super().run(memory, program_addr, params, channel_base)
        if self.when(counters):
            if self.error:
                raise self.error
            memory.view(channel_base[self.channel] + self.offset, 1)[0] ^= 0x10
        return counters


def faulty_overlay(**kw):
    return FlightLLMOverlay(device=SimulatedU280(simulator_factory=lambda t: FaultySimulator(t, **kw)))


@pytest.fixture(scope="module")
def programs():
    return selftest.build_programs(TARGET, seed=0, model=False)


def test_passes_on_the_simulated_device_with_the_model_step(sim_overlay):
    lines = []
    report = selftest.run_selftest(sim_overlay, seed=1, progress=lambda r: lines.append(r.row()))
    assert report.passed and report.first_mismatch is None, report.table()
    names = [r.name for r in report.results]
    assert names[:3] == ["move", "mm", "mv"] and names[-2:] == ["remote_ld", "decode_step"]
    assert {f"misc_{op}" for op in selftest.MISC_TESTED} <= set(names)
    decode = report.results[-1]
    assert decode.instructions > 100 and decode.bytes_compared > 1 << 20
    assert all(r.bytes_compared > 0 and r.instructions > 0 for r in report.results)
    table = report.table()
    assert "xilinx_u280_sim (simulated, no FPGA)" in table and "15 programs: 15 passed" in table
    assert len(lines) == 15 and all(line.endswith("PASS") for line in lines)


def test_programs_cover_every_unit_buffer_dyn_mode_and_misc_op(programs):
    insns = [i for p in programs for off, n in isa.image_table(p.image)
             for i in isa.decode_stream(p.image[off:off + n])]
    assert {i.op for i in insns} == set(isa.FORMATS)
    for op in ("LD", "ST"):
        assert {isa.BUFFERS[i["buf"]] for i in insns if i.op == op} == set(isa.BUFFERS)
    assert {isa.DYN_MODES[i["dyn"]] for i in insns if i.op in ("LD", "ST")} == set(isa.DYN_MODES)
    assert {isa.MISC_OPS[i["op"]] for i in insns if i.op == "MISC"} == set(isa.MISC_OPS)
    assert any(i["remote"] for i in insns if i.op == "LD")
    assert any(i.op == "SYS" and i["op"] == isa.SYS_OPS.index("barrier") for i in insns)
    assert any(i["wait"] for i in insns) and any(i["release"] for i in insns)
    assert {i["wt"] for i in insns if i.op in ("MM", "MV")} == {0, 1}


def test_every_program_writes_results_different_from_its_inputs(programs, sim_overlay):
    for prog in programs:
        out, count = selftest._reference(sim_overlay, prog)
        assert count > 0 and out.keys() == prog.inputs.keys()
        changed = sum(int((out[ch] != prog.inputs[ch]).sum()) for ch in out)
        assert changed > 64 * TARGET.cores, f"{prog.name} changes only {changed} bytes"


def test_the_same_seed_gives_the_same_programs(programs):
    again = selftest.build_programs(TARGET, seed=0, model=False)
    other = selftest.build_programs(TARGET, seed=1, model=False)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(programs, again))
    for a, b, c in zip(programs, again, other):
        assert a.inputs.keys() == b.inputs.keys()
        assert all(np.array_equal(a.inputs[ch], b.inputs[ch]) for ch in a.inputs)
    assert any(not np.array_equal(a.inputs[ch], c.inputs[ch])
               for a, c in zip(programs, other) for ch in a.inputs)


def test_a_flipped_bit_is_reported_with_program_buffer_offset_and_bytes(programs):
    ol = faulty_overlay(when=lambda counters: counters.instructions["MM"] > 0)
    report = selftest.run_selftest(ol, programs=programs)
    assert not report.passed
    failed = [r for r in report.results if not r.passed]
    assert [r.name for r in failed] == ["mm"] and failed[0].error is None
    m = report.first_mismatch
    want = int(next(p for p in programs if p.name == "mm").inputs[0][0x123])
    assert (m.program, m.buffer, m.offset, m.expected, m.got, m.differing) == \
        ("mm", "HBM[0]", 0x123, want, want ^ 0x10, 1)
    assert str(m) == (f"program mm: HBM[0] byte 0x123: expected 0x{want:02x}, got "
                      f"0x{want ^ 0x10:02x} (1 of {m.size} bytes differ)")
    table = report.table()
    assert "MISMATCH" in table and "1 failed" in table and f"FAILED mm ({failed[0].what}): {m}" in table


def test_a_device_error_is_reported_and_the_next_programs_still_run(programs):
    ol = faulty_overlay(when=lambda counters: counters.instructions["MV"] > 0,
                        error=ProgramError("injected fault"))
    report = selftest.run_selftest(ol, programs=programs[:4])
    assert [r.passed for r in report.results] == [True, True, False, True]
    error = report.results[2].error
    assert "ProgramError" in error and "injected fault" in error and report.first_mismatch is None


def test_passes_through_the_xrt_device_over_the_fake_pyxrt(tmp_path, programs):
    fake = make_pyxrt("2.15")
    ol = FlightLLMOverlay(real_looking_xclbin(tmp_path / "flightllm.xclbin"),
                          device=XrtU280(0, pyxrt=fake, libxrt=FakeLibXrt(fake)))
    report = selftest.run_selftest(ol, programs=programs)
    assert report.passed, report.table()
    assert "(card)" in report.device
    assert len([c for c in fake.log if c[0] == "bo.free"]) == len([c for c in fake.log if c[0] == "bo"])


def test_cli_selftest_prints_the_table_and_sets_the_exit_status(capsys, monkeypatch):
    assert main(["selftest", "--no-model", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "FlightLLM self-test on xilinx_u280_sim (simulated, no FPGA)" in out
    assert "misc_rope" in out and "14 programs: 14 passed, 0 failed" in out
    bad = selftest.SelfTestReport("x", [selftest.ProgramResult("mm", "MM", error="boom")])
    monkeypatch.setattr(selftest, "run_selftest", lambda *a, **k: bad)
    assert main(["selftest", "--no-model"]) == 1
    assert "FAILED mm (MM): boom" in capsys.readouterr().out
