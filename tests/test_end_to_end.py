"""End to end on a tiny random LLaMA (GQA, odd sizes): counters, predicted rates, program files and
bad-input recovery on the simulated overlay (accuracy against the float reference and transformers,
for every family: test_families_end_to_end.py)."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.spec import isa
from flightllm_overlay.errors import (AddressError, ContextLengthError, FlightLLMError,
                                      IllegalInstructionError, ProgramError)
from flightllm_overlay.runtime import Generator, Session

PROMPT = [5, 17, 42, 3, 99, 120, 7, 8, 9, 10, 200, 31]


@pytest.fixture(scope="module")
def session(sim_overlay, tiny_program):
    with Session(sim_overlay, tiny_program) as s:
        yield s


def test_device_counters_are_reported(session):
    before = session.stats.instructions
    session.run("decode", [7], 3)
    assert session.stats.instructions > before
    assert session.stats.macs > 0 and session.stats.hbm_bytes > 0
    assert session.stats.step_cycles["decode"] > 0          # the timing model's prediction


def test_generator_stats_carry_the_predicted_u280_rate(session, tiny_ckpt):
    from flightllm_overlay.sim.timing import TimingModel
    gen = Generator(session, tiny_ckpt.tokenizer)
    list(gen.generate(PROMPT, 4, stop_ids=()))
    cycles = TimingModel(session.overlay.target).schedule_image(
        session.image("decode", len(PROMPT) + 1)[0].image).cycles
    want = session.overlay.target.clock_hz / cycles
    assert gen.stats.runs["decode"] == 3
    assert gen.stats.predicted_decode_tokens_per_second == pytest.approx(want)
    assert "predicted U280" in gen.stats.summary()


def test_prompt_longer_than_context_is_refused_and_overlay_still_works(session, tiny_ckpt):
    gen = Generator(session, tiny_ckpt.tokenizer)
    with pytest.raises(ContextLengthError, match="context"):
        list(gen.generate(list(range(1, 290)), 4))
    with pytest.raises(ContextLengthError):
        session.run("decode", [1], session.program.ctx)
    assert len(list(gen.generate(PROMPT, 2, stop_ids=()))) >= 2


def _corrupt_and_run(session, word_index, value, exc_type, match):
    img = session.image("decode", 1)[1]              # the bucket a decode at pos 0 uses
    saved = np.array(img)
    try:
        words = img.view(np.uint32)
        words[word_index] = value
        img.sync_to_device()
        with pytest.raises(exc_type, match=match):
            session.run("decode", [3], 0)
    finally:
        img[:] = saved
        img.sync_to_device()
        session.overlay.reset()
    assert np.isfinite(session.run("decode", [3], 0)).all()      # usable again


def test_illegal_instruction_word_gives_clear_error(session):
    table = isa.image_table(session.image("decode", 1)[0].image)
    first = table[0][0]
    _corrupt_and_run(session, first, 0x0000000E, IllegalInstructionError, "opcode")


def test_hbm_address_out_of_range_gives_clear_error(session):
    step, img = session.image("decode", 1)
    image = step.image
    off, n = isa.image_table(image)[0]
    words = image[off:off + n].tolist()
    pos = 0
    while True:                                     # find the first LD from HBM of core 0
        insn, size = isa.decode_one(words, pos)
        if insn.op == "LD" and not insn["remote"]:
            break
        pos += size
    bad = isa.encode(insn.replace(hbm_addr=(1 << 28) - 64, rows=1, row_bytes=4096))
    saved = np.array(img)
    try:
        img.view(np.uint32)[off + pos:off + pos + len(bad)] = bad
        img.sync_to_device()
        with pytest.raises(AddressError, match="channel"):
            session.run("decode", [3], 0)
    finally:
        img[:] = saved
        img.sync_to_device()
        session.overlay.reset()
    assert np.isfinite(session.run("decode", [3], 0)).all()


def test_program_file_round_trip_and_corruption(tmp_path, tiny_program):
    from flightllm_overlay.compiler import Program
    path = tiny_program.save(tmp_path / "tiny.fllm")
    back = Program.load(path)
    assert back.model == tiny_program.model and back.ctx == tiny_program.ctx
    for name in tiny_program.steps:
        np.testing.assert_array_equal(back.steps[name].image, tiny_program.steps[name].image)
    for ch in tiny_program.channel_static:
        np.testing.assert_array_equal(back.channel_static[ch], tiny_program.channel_static[ch])
    assert "MISC" in back.disassemble() and "SYS  end" in back.disassemble()
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    (tmp_path / "bad.fllm").write_bytes(bytes(raw))
    with pytest.raises(ProgramError, match="corrupt"):
        Program.load(tmp_path / "bad.fllm")
    (tmp_path / "junk.fllm").write_bytes(b"hello")
    with pytest.raises(ProgramError, match="not a FlightLLM program"):
        Program.load(tmp_path / "junk.fllm")


def test_program_for_another_target_is_refused(sim_overlay, tiny_program):
    import dataclasses
    other = dataclasses.replace(tiny_program, target="vhk158")
    with pytest.raises(FlightLLMError, match="target"):
        Session(sim_overlay, other)
