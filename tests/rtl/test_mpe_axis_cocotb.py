"""cocotb testbench: the MPE kernel (mpe_axis.v) over its AXI4-Stream links and s_axilite block, against the Python simulator's products.

Run through tests/test_mpe_rtl.py (cocotb's Python runner, Icarus).  The parameters come in as
MPE_ROWS / MPE_COLS / MPE_MV_COLS / MPE_MV_TEAM / MPE_KB.  Input beats arrive with random idle cycles and the
result link is throttled at random, so the handshakes and the input hold (TB tiles owed) are used.
"""
from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from flightllm_overlay.hw import mpe_model as M
from flightllm_overlay.hw import mpe_stream as S

P = M.MPEParams(rows=int(os.environ.get("MPE_ROWS", "4")), cols=int(os.environ.get("MPE_COLS", "2")),
                mv_cols=int(os.environ.get("MPE_MV_COLS", "4")), mv_team=int(os.environ.get("MPE_MV_TEAM", "2")),
                kb=int(os.environ.get("MPE_KB", "8")))
REGS = {"ctrl": 0x00, "insns": 0x10, "macs": 0x20, "fixed_macs": 0x30, "status": 0x40}


async def _reset(dut):
    Clock(dut.ap_clk, 10, unit="ns").start()
    for name in ("op_tvalid", "op_tlast", "res_tready", "s_axi_control_awvalid", "s_axi_control_wvalid",
                 "s_axi_control_arvalid", "s_axi_control_bready", "s_axi_control_rready"):
        getattr(dut, name).value = 0
    dut.op_tdata.value = 0
    dut.s_axi_control_wstrb.value = 0xF
    dut.ap_rst_n.value = 0
    for _ in range(4):
        await RisingEdge(dut.ap_clk)
    await FallingEdge(dut.ap_clk)
    dut.ap_rst_n.value = 1


async def _write(dut, addr, data):
    dut.s_axi_control_awaddr.value = addr
    dut.s_axi_control_awvalid.value = 1
    dut.s_axi_control_wdata.value = data
    dut.s_axi_control_wvalid.value = 1
    dut.s_axi_control_bready.value = 1
    aw = w = False
    while not (aw and w):
        await RisingEdge(dut.ap_clk)
        aw = aw or bool(dut.s_axi_control_awready.value)
        w = w or bool(dut.s_axi_control_wready.value)
        await FallingEdge(dut.ap_clk)
        if aw:
            dut.s_axi_control_awvalid.value = 0
        if w:
            dut.s_axi_control_wvalid.value = 0
    while not int(dut.s_axi_control_bvalid.value):
        await FallingEdge(dut.ap_clk)
    await FallingEdge(dut.ap_clk)
    dut.s_axi_control_bready.value = 0


async def _read(dut, addr) -> int:
    dut.s_axi_control_araddr.value = addr
    dut.s_axi_control_arvalid.value = 1
    dut.s_axi_control_rready.value = 1
    while True:
        await RisingEdge(dut.ap_clk)
        if int(dut.s_axi_control_arready.value):
            break
    await FallingEdge(dut.ap_clk)
    dut.s_axi_control_arvalid.value = 0
    while not int(dut.s_axi_control_rvalid.value):
        await FallingEdge(dut.ap_clk)
    val = int(dut.s_axi_control_rdata.value)
    await FallingEdge(dut.ap_clk)
    dut.s_axi_control_rready.value = 0
    return val


async def _read64(dut, name) -> int:
    return await _read(dut, REGS[name]) | (await _read(dut, REGS[name] + 8)) << 32


async def _stream(dut, beats, rng, n_res_beats):
    """Send beats (random gaps), collect n_res_beats result beats (random stalls); returns them."""
    got = []

    async def sender():
        for data, last in beats:
            while rng.random() < 0.15:
                dut.op_tvalid.value = 0
                await FallingEdge(dut.ap_clk)
            dut.op_tdata.value = int.from_bytes(data, "little")
            dut.op_tlast.value = int(last)
            dut.op_tvalid.value = 1
            while True:
                await RisingEdge(dut.ap_clk)
                if int(dut.op_tready.value):
                    break
            await FallingEdge(dut.ap_clk)
        dut.op_tvalid.value = 0

    send = cocotb.start_soon(sender())
    budget = 200 * (len(beats) + n_res_beats) + 2000
    while len(got) < n_res_beats and budget:
        budget -= 1
        ready = int(rng.random() >= 0.3)
        dut.res_tready.value = ready
        await RisingEdge(dut.ap_clk)
        if ready and int(dut.res_tvalid.value):
            got.append((int(dut.res_tdata.value.to_unsigned()).to_bytes(64, "little"),
                        int(dut.res_tlast.value)))
        await FallingEdge(dut.ap_clk)
    dut.res_tready.value = 0
    await send
    assert len(got) == n_res_beats, f"{len(got)} result beats of {n_res_beats} before the time-out"
    return got


async def _wait_done(dut):
    for _ in range(2000):
        ctrl = await _read(dut, REGS["ctrl"])
        if ctrl & 0x2:
            return ctrl
    raise AssertionError("ap_done never rose after END")


def _ops(rng):
    r = lambda *s: rng.integers(1, 1 + s[0])  # noqa: E731
    return [M.random_op(rng, "MM", int(r(9)), 16 * int(r(2)), 16 * int(r(3)), codes=(2, 4, 8, 16)),
            M.random_op(rng, "MM", int(r(6)), int(r(40)), int(r(60))),
            M.random_op(rng, "MV", int(r(3)), 16 * int(r(3)), 16 * int(r(4)), codes=(2, 4, 8, 16)),
            M.random_op(rng, "MV", 1, int(r(40)), int(r(50))),
            M.random_op(rng, "MM", 3, 16, 32, codes=(8, 16), extreme=True)]


@cocotb.test()
async def parallel_format(dut):
    """ACT + PASS beats: every result tile and the three counters equal the simulator's."""
    rng = np.random.default_rng(11)
    await _reset(dut)
    ops = _ops(rng)
    prog = M.build_program(P, ops)
    beats = S.program_beats(prog)
    tile_beats = [P.rows if m == 0 else P.tmv for m in prog.modes]
    await _write(dut, REGS["ctrl"], 1)
    got = await _stream(dut, beats, rng, sum(tile_beats))
    assert [last for _, last in got] == [int(i == nb - 1) for nb in tile_beats for i in range(nb)]
    tiles = S.result_words(P, [d for d, _ in got], tile_beats)
    for t, (want, have) in enumerate(zip(prog.tiles, tiles)):
        assert np.array_equal(want[:have.size], have), f"tile {t}: RTL {have.tolist()} != {want[:have.size].tolist()}"
    await _wait_done(dut)
    assert await _read64(dut, "insns") == len(ops)
    assert (await _read64(dut, "macs"), await _read64(dut, "fixed_macs")) == (prog.macs, prog.fixed_macs)
    assert await _read(dut, REGS["status"]) == 0


@cocotb.test()
async def one_chain_format(dut):
    """docs/mpe_stream.md's OPERAND beats: two result beats per pass; counters from the INSN beats."""
    rng = np.random.default_rng(5)
    await _reset(dut)
    ops = _ops(rng)[:4]
    beats, results = [], []
    for op in ops:
        b, r = S.operand_beats(op)
        beats += b
        results += r
    beats.append((bytes(63) + bytes([S.KIND_END]), True))
    await _write(dut, REGS["ctrl"], 1)
    got = await _stream(dut, beats, rng, 2 * len(results))
    tiles = S.result_words(P, [d for d, _ in got], [2] * len(results))
    for t, (want, have) in enumerate(zip(results, tiles)):
        assert np.array_equal(want.reshape(-1), have), f"pass {t}: RTL {have.tolist()} != {want.tolist()}"
    await _wait_done(dut)
    macs = sum(op.macs()[0] for op in ops)
    fixed = sum(op.macs()[1] for op in ops)
    assert (await _read64(dut, "insns"), await _read64(dut, "macs"), await _read64(dut, "fixed_macs")) == (
        len(ops), macs, fixed)


@cocotb.test()
async def unknown_kind_is_a_protocol_error(dut):
    """A beat of an unknown KIND stops the run like END and sets status bit 0."""
    await _reset(dut)
    await _write(dut, REGS["ctrl"], 1)
    bad = bytes(63) + bytes([0x7E])
    await _stream(dut, [(bad, True)], np.random.default_rng(0), 0)
    await _wait_done(dut)
    assert await _read(dut, REGS["status"]) == 1
