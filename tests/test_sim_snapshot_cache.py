"""The simulator's snapshot cache stays bounded as Sessions come and go, and eviction never
changes a result."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.runtime import Session
from flightllm_overlay.sim.snapshots import SnapshotCache


class _Snap:
    def __init__(self, n):
        self.data = np.zeros(n, np.uint8)


def test_lru_order_and_byte_bound():
    cache = SnapshotCache(max_bytes=5 * 300)
    for k in "abc":
        cache[k] = _Snap(100)
    assert cache.get("a") is not None              # a is now the most recently used
    cache["d"] = _Snap(100)
    assert "b" not in cache and all(k in cache for k in "acd")
    assert cache.nbytes == 5 * 300 and cache.evictions == 1


def test_sessions_coming_and_going_keep_the_cache_bounded(tiny_program):
    """Finding 13: 40 Sessions made 543 snapshots, memory growing linearly."""
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.sim.device import SimulatedU280
    ol = FlightLLMOverlay(device=SimulatedU280())
    with Session(ol, tiny_program) as s:
        first = s.run("decode", [7], 0)
    sim = ol.device._simulator
    per_session = sim._snapshots.nbytes
    assert per_session > 0
    sim._snapshots.max_bytes = 3 * per_session
    alive = []
    for i in range(12):
        s = Session(ol, tiny_program)          # sessions left open for a while: new addresses
        np.testing.assert_array_equal(s.run("decode", [7], 0), first)
        alive.append(s)
        if len(alive) > 4:
            alive.pop(0).close()
        assert sim._snapshots.nbytes <= 3 * per_session
    for s in alive:
        s.close()
    assert sim._snapshots.evictions > 0


def _fp32_matrices(sim):
    """(FP32 weight matrices kept, weight ranges used once so far) over every snapshot."""
    kept = once = 0
    for snap, _ in sim._snapshots._items.values():
        for key, w in snap.derived.items():
            if key == "tile":
                continue
            if isinstance(w, np.ndarray):
                kept += 1
            else:
                once += 1
    return kept, once


@pytest.fixture(params=["numpy", "native"])
def mpe_path(request, monkeypatch):
    """The MPE on numpy alone (FLIGHTLLM_NATIVE=0) or on the native kernels."""
    from flightllm_overlay.sim import native
    if request.param == "numpy":
        monkeypatch.setenv("FLIGHTLLM_NATIVE", "0")
    native.reset()
    if request.param == "native" and native.library() is None:
        pytest.skip(f"no native kernels here: {native.status()}")
    yield request.param
    monkeypatch.undo()
    native.reset()


def test_fp32_weights_are_kept_from_their_second_use_on(tiny_program, mpe_path):
    """On numpy, the first run converts each weight range into a scratch array (no FP32 copy
    kept, so a first token allocates no 4-bytes-per-weight copies); the second keeps them.  On
    the native kernels the products read the INT8 bytes: no FP32 copy is ever kept.  Every
    run gives the same logits as the reference executor."""
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.sim.device import SimulatedU280
    from flightllm_overlay.sim.functional import FunctionalSimulator
    runs = {}
    for fast in (True, False):
        sims = []
        ol = FlightLLMOverlay(device=SimulatedU280(
            simulator_factory=lambda t: sims.append(FunctionalSimulator(t, fast)) or sims[0]))
        with Session(ol, tiny_program) as s:
            out = [s.run("decode", [7], 0)]
            sim, = sims
            if fast:
                kept, once = _fp32_matrices(sim)
                assert kept == 0 and (once > 0) == (mpe_path == "numpy")
            out += [s.run("decode", [9], 1), s.run("decode", [3], 2)]
            if fast:
                assert _fp32_matrices(sim) == (once, 0)
        runs[fast] = out
    for fast_logits, ref_logits in zip(runs[True], runs[False]):
        np.testing.assert_array_equal(fast_logits, ref_logits)


def test_snapshots_are_copies_not_views_of_device_memory(tiny_program, monkeypatch):
    """A snapshot holds the bytes as loaded: it shares no memory with the device's HBM (the
    striped loads' parts are gathered into one new array, not copied twice)."""
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.sim import functional
    from flightllm_overlay.sim.device import SimulatedU280
    parts_seen = []
    snapshot = functional._RunContext.wbuf_snapshot

    def record(self, parts, *args):
        parts_seen.append(len(parts))
        return snapshot(self, parts, *args)
    monkeypatch.setattr(functional._RunContext, "wbuf_snapshot", record)
    device = SimulatedU280()
    with Session(FlightLLMOverlay(device=device), tiny_program) as s:
        s.run("decode", [7], 0)
        sim = device._simulator
        snaps = [snap for snap, _ in sim._snapshots._items.values()]
        assert snaps
        allocations = [a for bank in device.memory.banks.values() for a in bank.allocations]
        for snap in snaps:
            assert snap.data.flags.c_contiguous and snap.data.ndim == 1
            assert not any(np.shares_memory(snap.data, a.device) for a in allocations)
    assert max(parts_seen) > 1                  # striped loads were among them
