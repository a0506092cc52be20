"""The kernels' control protocol in C simulation: units that block on their streams and stop on END, a unit started late, one never started (STALLED), fences that wait for the units."""
from __future__ import annotations

import numpy as np

from flightllm_overlay.spec import isa
from flightllm_overlay.hw.control import ErrorCode
from flightllm_overlay.spec.isa import Instruction
from flightllm_overlay.sim.functional import FunctionalSimulator
from hls_harness import (BARRIER, CORES, END, TARGET, Bench, assert_same, chained, run_csim, run_python,
                         sim_buffers)

I8, F32 = np.int8, np.float32


def small_layer(rng) -> Bench:
    """LD, MM, MISC, ST on every core, chained by tokens."""
    b = Bench(channel_bytes=1 << 16)
    for core in range(CORES):
        b.load(core, "abuf", 0, rng.integers(-127, 128, (3, 32), dtype=np.int64).astype(I8))
        b.load(core, "abuf", 4096, rng.uniform(0.5, 1.5, (1, 3)).astype(F32))
        b.load(core, "wbuf", 0, rng.integers(-127, 128, (16, 32), dtype=np.int64).astype(I8), k=1)
        b.load(core, "wbuf", 8192, rng.uniform(0.01, 0.02, (1, 16)).astype(F32), k=2)
        b.add(core, Instruction("MM", m=3, n=16, k=32, a_addr=0, a_scale=4096, w_addr=0, w_scale=8192,
                                out_addr=0),
              Instruction("MISC", op="silu", rows=3, k=16, a_addr=0, out_addr=1024),
              Instruction("ST", buf="gbuf", channel=b.port(core, 3), hbm_addr=0, buf_addr=1024, rows=3,
                          row_bytes=32, hbm_stride=32, buf_stride=32))
    return b


def both(csim, tmp_path, b, extra=(), schedule="decoupled", what=""):
    streams = [chained(s) + [END] for s in b.streams]
    image = isa.pack_image([isa.encode_stream(s) for s in streams])
    sim = FunctionalSimulator(TARGET)
    before = sim_buffers(sim)
    py = run_python(sim, image, b.chan, 0, 0)
    cc = run_csim(csim, tmp_path / f"run{len(list(tmp_path.iterdir()))}", image, b.chan, 0, 0, before,
                  schedule, extra=extra)
    return py, cc


def test_every_unit_stops_on_end_and_reports_its_counters(csim, tmp_path):
    """One run starts every core's memctrl, mpe and misc and the scheduler; all of them return (END)
    and their own counter registers agree with the work done (hls_harness.check_unit_registers)."""
    py, cc = both(csim, tmp_path, small_layer(np.random.default_rng(1)))
    assert_same(py, cc, "small layer")
    for c in range(CORES):
        assert int(cc.result[f"mpe{c}_insns"]) == 1 and int(cc.result[f"misc{c}_insns"]) == 1
        assert int(cc.result[f"mpe{c}_macs"]) == 3 * 16 * 32
    assert cc.result["stalled_seen"] == "0"


def test_a_memctrl_started_late_only_delays_the_run(csim, tmp_path):
    """The host starts core 1's memctrl after the scheduler: the scheduler waits for its HELLO,
    saying STALLED meanwhile, then runs the program to the same bits."""
    py, cc = both(csim, tmp_path, small_layer(np.random.default_rng(2)),
                  extra=("start_late 1 400", "stall_polls 50"))
    assert_same(py, cc, "late memctrl")
    assert cc.result["stalled_seen"] == "1"


def test_a_memctrl_never_started_is_reported_as_stalled(csim, tmp_path):
    """drivers.py reads status STALLED with error_core while its wait times out."""
    _, cc = both(csim, tmp_path, small_layer(np.random.default_rng(3)),
                 extra=("never_start 2", "stall_polls 50"))
    assert cc.error == ("STALLED", int(ErrorCode.UNIT_NOT_STARTED), 2)


def test_a_barrier_waits_for_the_units_of_its_phase(csim, tmp_path):
    """No token orders the ST after the MM: only the SYS barrier's fence does, which waits until
    every unit of the phase has finished.  Decoupled schedule (the units run as far as their tokens
    let them): the ST still stores the MM's output, as in program order."""
    rng = np.random.default_rng(4)
    b = Bench(channel_bytes=1 << 16)
    for core in range(CORES):
        b.load(core, "abuf", 0, rng.integers(-127, 128, (8, 64), dtype=np.int64).astype(I8))
        b.load(core, "abuf", 4096, rng.uniform(0.5, 1.5, (1, 8)).astype(F32))
        b.load(core, "wbuf", 0, rng.integers(-127, 128, (32, 64), dtype=np.int64).astype(I8), k=1)
        b.load(core, "wbuf", 8192, rng.uniform(0.01, 0.02, (1, 32)).astype(F32), k=2)
    streams = []
    for core in range(CORES):
        mm = Instruction("MM", m=8, n=32, k=64, a_addr=0, a_scale=4096, w_addr=0, w_scale=8192, out_addr=0)
        st = Instruction("ST", buf="gbuf", channel=b.port(core, 4), hbm_addr=0, buf_addr=0, rows=8,
                         row_bytes=64, hbm_stride=64, buf_stride=64)
        streams.append(chained(b.streams[core] + [mm]) + [BARRIER, st, END])
    image = isa.pack_image([isa.encode_stream(s) for s in streams])
    sim = FunctionalSimulator(TARGET)
    before = sim_buffers(sim)
    py = run_python(sim, image, b.chan, 0, 0)
    cc = run_csim(csim, tmp_path / "barrier", image, b.chan, 0, 0, before, "decoupled")
    assert_same(py, cc, "barrier")
    out = cc.channels[b.port(0, 4)][:8 * 64]
    assert out.any()


def test_on_chip_state_survives_between_starts_of_the_units(csim, tmp_path):
    """Two runs in one process (`runs 2`): the units are started again for the second run, and
    the image runs again on the buffers the first run left."""
    b = small_layer(np.random.default_rng(5))
    py1, cc1 = both(csim, tmp_path, b)
    _, cc2 = both(csim, tmp_path, b, extra=("runs 2",))
    assert_same(py1, cc2, "second run")
    assert cc1.result["status"] == cc2.result["status"] == "2"
