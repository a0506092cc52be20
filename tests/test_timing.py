"""Timing model: dependencies honoured, never below the roofline, and it responds to bandwidth
the way a memory-bound decode and a compute-bound prefill should."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flightllm_overlay.compiler.deps import insert_tokens
from flightllm_overlay.config import UNITS, load_target
from flightllm_overlay.spec.isa import Instruction
from flightllm_overlay.sim.timing import TimingModel, roofline_cycles

TARGET = load_target("u280")


def _random_insn(draw, core):
    kind = draw(st.sampled_from(["LD", "ST", "MM", "MV", "MISC"]))
    a = draw(st.integers(0, 15)) * 4096
    if kind in ("LD", "ST"):
        ch = draw(st.sampled_from(TARGET.channels_of(core)))
        return Instruction(kind, buf=draw(st.sampled_from(["wbuf", "abuf", "gbuf"])) if kind == "LD"
                           else "gbuf", channel=ch, hbm_addr=draw(st.integers(0, 7)) * 4096,
                           buf_addr=a, rows=1, row_bytes=draw(st.integers(1, 8)) * 512)
    if kind in ("MM", "MV"):
        return Instruction(kind, m=1 if kind == "MV" else 64, n=64, k=64, a_addr=a,
                           a_scale=a + 8192, w_addr=draw(st.integers(0, 15)) * 4096,
                           w_scale=0, out_addr=draw(st.integers(0, 15)) * 4096)
    return Instruction("MISC", op=draw(st.sampled_from(["eadd", "silu", "quant"])), rows=4,
                       k=256, a_addr=a, b_addr=a, out_addr=draw(st.integers(0, 15)) * 4096,
                       out_abuf=0, out2_addr=0)


@st.composite
def streams(draw):
    out = []
    for core in range(TARGET.cores):
        s = []
        for _ in range(draw(st.integers(1, 25))):
            insn = _random_insn(draw, core)
            if insn.op == "MISC" and insn["op"] == 7:       # quant writes the activation buffer
                insn = insn.replace(out_abuf=1)
            s.append(insn)
            if draw(st.integers(0, 9)) == 0:
                s.append(Instruction("SYS", op="barrier"))
        out.append(s)
    n_bar = [sum(1 for i in s if i.op == "SYS") for s in out]
    for s, n in zip(out, n_bar):                          # same number of barriers everywhere
        s.extend(Instruction("SYS", op="barrier") for _ in range(max(n_bar) - n))
        s.append(Instruction("SYS", op="end"))
    return [insert_tokens(s, 64) for s in out]


@settings(max_examples=60, deadline=None)
@given(streams())
def test_schedule_honours_every_wait_release_and_unit_order(progs):
    tm = TimingModel(TARGET)
    tl = tm.schedule([[(i.op, i.fields) for i in s] for s in progs])
    for core, prog in enumerate(progs):
        body = [i for i in prog if i.op != "SYS"]
        ev = [e for e in tl.events if e.core == core]
        assert len(ev) == len(body)
        produced = {}                                  # (src, dst) -> [end times], FIFO
        consumed = {}
        for insn, e in zip(body, ev):
            for p, src in enumerate(UNITS):
                if insn["wait"] >> p & 1:
                    k = consumed.get((src, insn.unit), 0)
                    assert e.start >= produced[(src, insn.unit)][k]
                    consumed[(src, insn.unit)] = k + 1
            for p, dst in enumerate(UNITS):
                if insn["release"] >> p & 1:
                    produced.setdefault((insn.unit, dst), []).append(e.end)
        for unit in ("MM", "MISC"):                    # in-order compute queues; the MPE
            times = [(e.start, e.end) for e in ev if (e.unit in ("MM", "MV")) == (unit == "MM")
                     and (unit == "MM" or e.unit == "MISC")]   # overlaps only its result latency
            overlap = tm.mpe_latency if unit == "MM" else 0
            assert all(b[0] >= a[1] - overlap and b[0] >= a[0] for a, b in zip(times, times[1:]))


@pytest.fixture(scope="module")
def smollm2_program():
    from flightllm_overlay.compiler import compile_model
    from flightllm_overlay.model import load_checkpoint
    return compile_model(load_checkpoint(None), ctx=256)


def test_prediction_is_never_below_the_roofline(smollm2_program, tiny_program):
    tm = TimingModel(TARGET)
    for prog in (smollm2_program, tiny_program):
        for step in prog.steps.values():
            tl = tm.schedule_image(step.image)
            mem, comp = roofline_cycles(TARGET, sum(tl.hbm_bytes.values()), tl.macs)
            assert tl.cycles >= max(mem, comp) > 0


def test_doubling_hbm_bandwidth_speeds_up_decode_not_prefill(smollm2_program):
    fast = TARGET.with_overrides(hbm_channel_gbps=2 * TARGET.hbm_channel_gbps)
    base, quick = TimingModel(TARGET), TimingModel(fast)
    dec = smollm2_program.steps["decode"].image
    pre = smollm2_program.steps["prefill"].image
    d0, d1 = base.schedule_image(dec).cycles, quick.schedule_image(dec).cycles
    p0, p1 = base.schedule_image(pre).cycles, quick.schedule_image(pre).cycles
    assert d1 < 0.8 * d0, (d0, d1)            # memory bound: weights dominate
    assert p1 > 0.9 * p0, (p0, p1)            # compute bound: MPE and MISC dominate


def test_more_misc_throughput_speeds_up_prefill(smollm2_program):
    wide = TARGET.with_overrides(misc_elements_per_cycle=4 * TARGET.misc_elements_per_cycle)
    pre = smollm2_program.steps["prefill"].image
    assert TimingModel(wide).schedule_image(pre).cycles < TimingModel(TARGET).schedule_image(pre).cycles
