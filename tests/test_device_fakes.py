"""Shared fakes for the device and overlay tests: a scriptable simulator and small simulated cards."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from flightllm_overlay.config import UNITS, load_target
from flightllm_overlay.sim.device import SimulatedU280
from flightllm_overlay.sim.xclbin import build_xclbin

SMALL_CHANNEL = 1 << 20          # 1 MiB HBM channels keep capacity tests fast


class FakeSimulator:
    """Stands in for FunctionalSimulator: records calls, returns fixed counters, or raises.

    `action(memory, program_addr, params, channel_base)` runs first when set (to move data or
    raise an error); the counters are a pure function of the core index.
    """

    def __init__(self, target, action=None):
        self.target, self.action, self.calls = target, action, []

    def run(self, memory, program_addr, params=None, channel_base=None):
        self.calls.append(SimpleNamespace(program_addr=program_addr, params=dict(params),
                                          channel_base=dict(channel_base)))
        if self.action is not None:
            self.action(memory, program_addr, params, channel_base)
        return fake_counters(self.target)


def fake_counters(target):
    per_core = [SimpleNamespace(instructions={u: 10 * c + i + 1 for i, u in enumerate(UNITS)},
                                macs=(1 << 33) + c, fixed_chain_macs=(3 << 33) + c,
                                misc_elements=1000 + c)
                for c in range(target.cores)]
    read = {ch: 64 * (ch + 1) for chs in target.core_channels for ch in chs}
    written = {ch: 32 for ch in target.core_channels[1]}
    return SimpleNamespace(per_core=per_core, hbm_read=read, hbm_written=written,
                           cycles=(7 << 32) + 5)


def make_device(action=None, small=False):
    """A fresh simulated card whose simulator is a FakeSimulator (reachable as dev.fake)."""
    target = load_target("u280")
    if small:
        target = target.with_overrides(hbm_channel_bytes=SMALL_CHANNEL)
    holder = {}

    def factory(t):
        holder["sim"] = FakeSimulator(t, action)
        return holder["sim"]

    dev = SimulatedU280(target=target, simulator_factory=factory)
    dev.fake = holder
    return dev


@pytest.fixture
def xclbin_file(tmp_path):
    """Metadata-only xclbin of the U280 design, written to a temporary file."""
    path = tmp_path / "flightllm.xilinx_u280_sim.xclbin"
    path.write_bytes(build_xclbin())
    return path
