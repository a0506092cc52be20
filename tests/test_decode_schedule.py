"""The decode schedule passes: weight prefetch keeps every conflicting pair in order, striped tiles
use a power-of-two channel group, KV histories spread over channels and slots, and the LD/ST queue
and HBM channel occupancy of the timing model."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flightllm_overlay.compiler import codegen
from flightllm_overlay.spec.semantics import footprint as accesses
from flightllm_overlay.compiler.layout import HBMLayout
from flightllm_overlay.compiler.prefetch import hoist_weight_loads, is_weight_load
from flightllm_overlay.config import load_target
from flightllm_overlay.spec.isa import Instruction
from flightllm_overlay.sim.timing import TimingModel

TARGET = load_target("u280")


def _conflict(a, b):
    return any(ra == rb and (wa or wb) and sa < eb and sb < ea
               for ra, sa, ea, wa in a for rb, sb, eb, wb in b)


def _check_hoisted(before, after, cap):
    """Same instructions; weight LDs keep their order; no conflicting pair swapped."""
    assert sorted(map(repr, before)) == sorted(map(repr, after))
    pos = {}
    for i, insn in enumerate(after):
        pos.setdefault(repr(insn), []).append(i)
    where = [pos[repr(insn)].pop(0) for insn in before]      # new index of each old instruction
    weights = [where[i] for i, insn in enumerate(before) if is_weight_load(insn)]
    assert weights == sorted(weights)
    acc = [accesses(insn, cap) for insn in before]
    for i in range(len(before)):
        for j in range(i + 1, len(before)):
            if _conflict(acc[i], acc[j]) or "SYS" in (before[i].op, before[j].op) and not (
                    is_weight_load(before[j]) and before[i].op == "SYS"):
                assert where[i] < where[j], (before[i], before[j])
    return where


@st.composite
def _streams(draw):
    out = []
    for _ in range(draw(st.integers(2, 30))):
        kind = draw(st.sampled_from(["W", "MV", "MISC", "SYS", "KV"]))
        half = draw(st.integers(0, 1)) * 65536
        if kind == "W":
            out.append(Instruction("LD", buf="wbuf", channel=0, stripe=8, hbm_addr=
                                   draw(st.integers(0, 9)) * 4096, buf_addr=half, rows=1,
                                   row_bytes=4096))
        elif kind == "KV":
            out.append(Instruction("LD", buf="wbuf", dyn="history", channel=4, hbm_addr=0,
                                   buf_addr=131072, rows=16, row_bytes=64))
        elif kind == "MV":
            out.append(Instruction("MV", m=1, n=64, k=64, a_addr=0, a_scale=4096,
                                   w_addr=draw(st.sampled_from([half, 131072])), w_scale=half + 4096,
                                   out_addr=draw(st.integers(0, 3)) * 4096))
        elif kind == "MISC":
            out.append(Instruction("MISC", op="eadd", rows=1, k=256, a_addr=0, b_addr=0,
                                   out_addr=draw(st.integers(0, 3)) * 4096))
        else:
            out.append(Instruction("SYS", op="barrier"))
    return out


@settings(max_examples=80, deadline=None)
@given(_streams())
def test_prefetch_never_swaps_conflicting_instructions(stream):
    after, acc = hoist_weight_loads(stream, 16)
    assert acc == [accesses(insn, 16) for insn in after]
    where = _check_hoisted(stream, after, 16)
    # a weight LD never passes another weight LD or a KV-history LD
    for i, insn in enumerate(stream):
        if is_weight_load(insn):
            for k in range(i):
                if is_weight_load(stream[k]) or stream[k]["dyn"]:
                    assert where[k] < where[i]


def test_prefetch_moves_next_layer_tiles_above_the_barrier(tiny_program, monkeypatch):
    """In a real decode stream, some weight tiles load before the SYS barrier that precedes
    their MPE: the prefetch crosses layer boundaries."""
    plain = {}

    def keep(s, cap):
        plain["s"] = list(s)
        return hoist_weight_loads(s, cap)

    monkeypatch.setattr(codegen, "hoist_weight_loads", keep)
    gen = codegen.StepCodegen(tiny_program.builder.plan, 1, 64, False)
    gen.core_stream(tiny_program.builder.plan.cores[0])
    before = plain["s"]
    after, _ = hoist_weight_loads(before, 64)
    where = _check_hoisted(before, after, 64)
    crossed = 0
    for i, insn in enumerate(before):
        if is_weight_load(insn):
            bars = [k for k in range(i) if before[k].op == "SYS" and where[k] > where[i]]
            crossed += bool(bars)
    assert crossed > 0


def test_striped_tiles_span_a_power_of_two_of_the_cores_channels():
    chans = tuple(tuple(range(c, 32, 3)) for c in range(3))          # all 32: 11/11/10 per core
    target = TARGET.with_overrides(core_channels=chans)
    layout = HBMLayout(target)
    data = np.arange(8 * 4096, dtype=np.uint8)
    region = layout.put_striped(0, data)
    assert region.stripe == 8 and region.channel == chans[0][0]
    for i, ch in enumerate(chans[0]):                 # 8 chunks at one offset, the rest untouched
        img = bytes(layout.images[ch].static)
        if i < 8:
            assert img[region.offset:region.offset + 4096] == data[i * 4096:(i + 1) * 4096].tobytes()
        else:
            assert len(img) == 0
    assert HBMLayout(TARGET).stripe_width(0) == 8


def test_kv_histories_of_consecutive_heads_use_different_channels(tiny_program):
    plan = tiny_program.builder.plan
    for cp in plan.cores:
        heads = [kv for layer in cp.kv for kv in layer]
        for kv in heads:                               # a head's four loads on four channels
            chans = {kv.k.channel, kv.k_scale.channel, kv.v.channel, kv.v_scale.channel}
            assert len(chans) == min(4, len(TARGET.channels_of(cp.index)))
        for a, b in zip(heads, heads[1:]):
            assert {a.k.channel, a.v.channel}.isdisjoint({b.k.channel, b.v.channel})


def test_small_buckets_hold_several_kv_histories(tiny_program):
    plan = tiny_program.builder.plan
    full = codegen.StepCodegen(plan, 1, plan.ctx, False)
    small = codegen.StepCodegen(plan, 1, 16, False)
    nk = max(len(c.kv_heads) for c in plan.cores)
    assert full.kv_slots == 1
    assert small.kv_slots == min(nk, plan.ctx // 16 if nk > 1 else 1)


@pytest.mark.parametrize("rows, stride, want", [(384, 128, 12), (384, 256, 384), (1, 65536, 16)])
def test_ld_holds_its_queue_one_cycle_per_burst(rows, stride, want):
    tm = TimingModel(TARGET)
    f = Instruction("LD", buf="wbuf", channel=0, hbm_addr=0, buf_addr=0, rows=rows,
                    row_bytes=128 if rows > 1 else 65536, hbm_stride=stride).fields
    assert tm.issue_cycles(f) == want


def test_hbm_latency_overlaps_the_previous_transfer_on_a_channel():
    tm = TimingModel(TARGET)
    ld = Instruction("LD", buf="gbuf", channel=0, hbm_addr=0, buf_addr=0, rows=1,
                     row_bytes=1 << 16)
    end = Instruction("SYS", op="end")

    def run(*insns):
        return tm.schedule([[(i.op, i.fields) for i in s] for s in ([*insns, end], [end], [end])])

    one, two = run(ld), run(ld, ld.replace(buf_addr=1 << 16))
    transfer = tm.hbm_cycles(1 << 16, True) - tm.hbm_latency
    assert two.cycles - one.cycles == transfer        # the second waits for data, not latency
