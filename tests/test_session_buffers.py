"""A Session's HBM channels start as the program's static bytes followed by zeros, on host and device, whether or not the bank zeroes new buffers."""
from __future__ import annotations

import numpy as np
from flightllm_overlay.runtime import Session
from flightllm_overlay.sim import memory as sim_memory


def _open(program, dirty: bool, monkeypatch):
    """A Session on a fresh simulated card, its flushes recorded (bytes per call); `dirty`: a
    bank that hands out buffers full of 0xAB on both sides and says so (`zeroed` False)."""
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.sim.device import SimulatedU280
    if dirty:
        allocate = sim_memory.Bank.allocate

        def garbage(self, nbytes):
            alloc = allocate(self, nbytes)
            alloc.host[:] = 0xAB
            alloc.device[:] = 0xAB
            return alloc
        monkeypatch.setattr(sim_memory.Bank, "allocate", garbage)
        monkeypatch.setattr(sim_memory.SimMemoryBank, "zeroed", False)
    device = SimulatedU280()
    flushed = []
    flush = device.flush

    def record(bo, offset, ptr, size):
        flushed.append(size)
        flush(bo, offset, ptr, size)
    monkeypatch.setattr(device, "flush", record)
    return Session(FlightLLMOverlay(device=device), program), flushed


def _check(program, dirty, monkeypatch):
    """Check the channels and what travelled; the logits of one decode step."""
    session, flushed = _open(program, dirty, monkeypatch)
    with session:
        static_bytes = 0
        for ch, buf in session.channels.items():
            want = np.zeros(program.channel_size[ch], np.uint8)
            static = program.channel_static.get(ch)
            if static is not None:
                want[:static.size] = static
                static_bytes += static.size
            np.testing.assert_array_equal(np.asarray(buf), want)
            np.testing.assert_array_equal(buf.bo.device, want)
        total = sum(program.channel_size.values())
        # a zeroing bank: only the static bytes travel; otherwise every byte, zeros included
        assert sum(flushed) == (total if dirty else static_bytes) and static_bytes < total
        return session.run("decode", [7], 0)


def test_channels_hold_the_static_bytes_then_zeros(tiny_program, monkeypatch):
    clean = _check(tiny_program, False, monkeypatch)
    dirty = _check(tiny_program, True, monkeypatch)
    np.testing.assert_array_equal(clean, dirty)
