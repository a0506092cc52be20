"""cocotb testbench: csd_chain.v beat by beat against flightllm_overlay.hw.sparse_dsp_chain (all N:16, random + extreme data).

Run through tests/test_csd_rtl.py (cocotb's Python runner, Icarus).  Environment set by the runner:
CSD_L (the chain's L parameter) and CSD_MODEL_OAU_MIN (the model's OAU threshold; it equals the
RTL's OAU_MIN except in the runner's negative test).
"""
from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from flightllm_overlay.hw import sparse_dsp_chain as C

L = int(os.environ.get("CSD_L", "16"))
MODEL_OAU_MIN = float(os.environ.get("CSD_MODEL_OAU_MIN", str(C.DEFAULT_OAU_THRESHOLD)))
LATENCY = L + 3
CODE = {2: 0, 4: 1, 8: 2, 16: 3}


def _pack(values, bits):
    """Little-endian bit-field packing of a vector of (signed) ints."""
    out = 0
    for i, v in enumerate(values):
        out |= (int(v) & ((1 << bits) - 1)) << (bits * i)
    return out


def _unpack32(word, count):
    vals = [(word >> (32 * i)) & 0xFFFFFFFF for i in range(count)]
    return [v - (1 << 32) if v >> 31 else v for v in vals]


def _beat(rng, n, kind):
    """One beat (n, weights (L,), indices (L,), acts (2, 16)) of the given kind."""
    w = rng.integers(-128, 128, L)
    idx = rng.integers(0, 16, L)
    acts = rng.integers(-128, 128, (2, 16))
    if kind == "min":                                  # (-128)(-128): the lane-overflow case
        w[:], acts[:] = -128, -128
    elif kind == "mixed_extreme":                      # only -128/127, random signs
        w = rng.choice([-128, 127], L)
        acts = rng.choice([-128, 127], (2, 16))
    elif kind == "lane_b_neg":                         # lane B large negative: exercises P[17] borrow
        w[:], acts[0], acts[1] = -128, -128, 127
    elif kind == "dense_identity":
        idx = np.arange(L) % 16
    return n, w, idx, acts


def _expected(beat):
    n, w, idx, acts = beat
    model = C.CSDChain(L, oau_threshold=MODEL_OAU_MIN)
    res = model.run(w[None], idx[None], acts[None], n)[0]        # (2, L/n)
    slots = L // 2
    out = np.zeros((2, slots), np.int64)
    out[:, :L // n] = res
    return out


async def _run_stream(dut, beats, gaps):
    """Drive beats back to back (an idle cycle after beat i if gaps[i]); check every output and its latency."""
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.in_valid.value = 0
    dut.in_code.value = 0
    dut.in_w.value = 0
    dut.in_idx.value = 0
    dut.in_act_a.value = 0
    dut.in_act_b.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    schedule = []                                      # per driven cycle: beat or None
    for beat, gap in zip(beats, gaps):
        schedule.append(beat)
        if gap:
            schedule.append(None)
    schedule += [None] * (LATENCY + 2)

    checked = 0
    for cycle, beat in enumerate(schedule):
        # Outputs after the last rising edge: the beat driven LATENCY + 1 iterations ago.
        src = cycle - LATENCY - 1
        want = schedule[src] if src >= 0 else None
        got_valid = int(dut.out_valid.value)
        assert got_valid == (want is not None), f"cycle {cycle}: out_valid={got_valid}, expected {want is not None}"
        if want is not None:
            exp = _expected(want)
            got_a = _unpack32(dut.out_a.value.to_unsigned(), L // 2)
            got_b = _unpack32(dut.out_b.value.to_unsigned(), L // 2)
            assert int(dut.out_code.value) == CODE[want[0]]
            assert got_a == exp[0].tolist() and got_b == exp[1].tolist(), (
                f"beat N={want[0]}: RTL A={got_a} B={got_b}, model A={exp[0].tolist()} B={exp[1].tolist()}")
            checked += 1
        # Drive the next beat (sampled at the coming rising edge).
        if beat is None:
            dut.in_valid.value = 0
        else:
            n, w, idx, acts = beat
            dut.in_valid.value = 1
            dut.in_code.value = CODE[n]
            dut.in_w.value = _pack(w, 8)
            dut.in_idx.value = _pack(idx, 4)
            dut.in_act_a.value = _pack(acts[0], 8)
            dut.in_act_b.value = _pack(acts[1], 8)
        await FallingEdge(dut.clk)
    assert checked == len(beats)
    dut._log.info("checked %d beats against the numpy model (L=%d)", checked, L)


@cocotb.test()
async def every_code_random_and_extreme(dut):
    """Each N:16 code in turn: random beats, then every extreme pattern, streamed back to back."""
    rng = np.random.default_rng(2024)
    beats = []
    for n in C.FSB_CODES:
        beats += [_beat(rng, n, "random") for _ in range(24)]
        beats += [_beat(rng, n, k) for k in ("min", "mixed_extreme", "lane_b_neg", "dense_identity")
                  for _ in range(2)]
    await _run_stream(dut, beats, [False] * len(beats))


@cocotb.test()
async def mixed_codes_with_gaps(dut):
    """Codes change beat by beat (they travel with the data) and the stream has idle cycles."""
    rng = np.random.default_rng(7)
    kinds = ["random", "random", "min", "mixed_extreme", "lane_b_neg"]
    beats = [_beat(rng, int(rng.choice(C.FSB_CODES)), kinds[i % len(kinds)]) for i in range(120)]
    gaps = [bool(g) for g in rng.random(len(beats)) < 0.2]
    await _run_stream(dut, beats, gaps)
