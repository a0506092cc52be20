"""One Counters type behind every statistics view: arithmetic, cores, runs, sessions, generations."""
from __future__ import annotations

from dataclasses import FrozenInstanceError, fields

import pytest

from flightllm_overlay.config import UNITS, load_target
from flightllm_overlay.overlay import RunStats
from flightllm_overlay.runtime import Generator, Session, StepStats
from flightllm_overlay.sim.counters import (CoreCounters, RunCounters, per_core_counters,
                                            run_counters)
from flightllm_overlay.sim.timing import TimingModel
from flightllm_overlay.spec.counters import Counters

PROMPT = [5, 17, 42, 3, 99, 120, 7, 8, 9, 10, 200, 31]
NAMES = [f.name for f in fields(Counters)]


def _numbered(start: int) -> Counters:
    return Counters(**{name: start + i for i, name in enumerate(NAMES)})


def test_arithmetic_is_field_by_field():
    a, b = _numbered(10), _numbered(100)
    assert a + b == Counters(**{n: getattr(a, n) + getattr(b, n) for n in NAMES})
    assert (b - a) == Counters(**{n: 90 for n in NAMES})
    assert (a + b) - b == a
    assert sum([a, b, a]) == a + b + a                       # sum() starts from 0
    assert a.hbm_bytes == a.hbm_bytes_read + a.hbm_bytes_written
    assert Counters(macs=3, fixed_chain_macs=4).dsp_utilisation() == 0.75
    assert Counters().dsp_utilisation() == 0.0
    with pytest.raises(TypeError):
        a + 1
    with pytest.raises(FrozenInstanceError):
        a.macs = 5


def test_a_run_is_its_cores_plus_the_schedulers_two():
    per_core = [_numbered(c) for c in range(3)]
    per_core = [Counters(**{**{n: getattr(p, n) for n in NAMES}, "instructions": 0, "cycles": 0})
                for p in per_core]
    run = RunStats.of(per_core, instructions=77, cycles=1234, clock_mhz=225.0)
    assert isinstance(run, Counters) and run.per_core == tuple(per_core)
    for name in NAMES:
        cores = sum(getattr(p, name) for p in per_core)
        want = {"instructions": 77, "cycles": 1234}.get(name, cores)
        assert getattr(run, name) == want, name
    assert run + run == Counters(**{n: 2 * getattr(run, n) for n in NAMES})   # a plain Counters
    assert run.seconds == pytest.approx(1234 / 225e6)


def test_the_simulators_tally_folds_per_core_by_the_channels_each_core_owns():
    target = load_target("u280")
    chans = target.core_channels
    per_core = [CoreCounters({u: 10 * c + i for i, u in enumerate(UNITS)}, macs=5 + c,
                             fixed_chain_macs=9 + c, misc_elements=100 + c) for c in range(3)]
    tally = RunCounters(per_core, hbm_read={chans[0][0]: 64, chans[2][1]: 8},
                        hbm_written={chans[1][0]: 32}, cycles=999)
    cores = per_core_counters(tally, chans)
    assert [c.mpe_instructions for c in cores] == \
        [pc.instructions["MM"] + pc.instructions["MV"] for pc in per_core]
    assert [c.misc_instructions for c in cores] == [pc.instructions["MISC"] for pc in per_core]
    assert [(c.hbm_bytes_read, c.hbm_bytes_written) for c in cores] == [(64, 0), (0, 32), (8, 0)]
    assert all(c.instructions == 0 and c.cycles == 0 for c in cores)   # the scheduler's counts
    run = run_counters(tally, chans)
    assert run.instructions == tally.total_instructions and run.cycles == 999
    assert (run.macs, run.fixed_chain_macs, run.misc_elements, run.hbm_bytes) == \
        (tally.macs, tally.fixed_chain_macs, tally.misc_elements, tally.hbm_bytes)
    assert run - sum(cores) == Counters(instructions=run.instructions, cycles=999)


def test_views_read_their_counters_and_refuse_writes():
    st = StepStats()
    st.add("decode", Counters(instructions=3, macs=4, fixed_chain_macs=8, hbm_bytes_read=5,
                              hbm_bytes_written=6, cycles=7))
    assert (st.instructions, st.macs, st.fixed_chain_macs, st.hbm_bytes, st.device_cycles) == \
        (3, 4, 8, 11, 7)
    with pytest.raises(AttributeError, match="counters"):
        st.macs = 1


@pytest.fixture()
def recorded(sim_overlay, tiny_program, monkeypatch):
    """A fresh Session whose overlay runs are recorded (the RunStats each returns)."""
    runs = []
    real = sim_overlay.run

    def run(*args, **kw):
        stats = real(*args, **kw)
        runs.append(stats)
        return stats
    monkeypatch.setattr(sim_overlay, "run", run)
    with Session(sim_overlay, tiny_program) as session:
        yield session, runs


def test_runs_sessions_and_generations_add_up(recorded, tiny_ckpt):
    session, runs = recorded
    session.run("prefill", PROMPT[:4], 0)
    session.run("decode", [7], 4)
    assert len(runs) == 2
    for stats in runs:      # registers of a real (simulated) run: cores add up to the run
        assert isinstance(stats, RunStats) and len(stats.per_core) == 3
        assert stats - sum(stats.per_core) == \
            Counters(instructions=stats.instructions, cycles=stats.cycles)
        assert stats.instructions > stats.mpe_instructions + stats.misc_instructions > 0
        assert 0 < stats.macs <= stats.fixed_chain_macs and stats.cycles > 0
    assert session.stats.counters == sum(runs)
    assert session.stats.runs == 2 and session.stats.device_cycles == sum(r.cycles for r in runs)

    before = session.stats.counters              # frozen: a snapshot
    gen = Generator(session, tiny_ckpt.tokenizer)
    list(gen.generate(PROMPT, 3, stop_ids=()))
    assert gen.stats.counters == session.stats.counters - before == sum(runs[2:])
    assert gen.stats.counters.instructions > 0
    assert (gen.stats.instructions, gen.stats.macs, gen.stats.hbm_bytes,
            gen.stats.device_cycles) == (gen.stats.counters.instructions, gen.stats.counters.macs,
                                         gen.stats.counters.hbm_bytes, gen.stats.counters.cycles)
    assert sum(gen.stats.runs.values()) == len(runs) - 2


def test_the_timing_model_counts_the_instructions_the_simulator_executes(recorded):
    session, runs = recorded
    session.run("decode", [7], 4)
    tl = TimingModel(session.overlay.target).schedule_image(session.image("decode", 5)[0].image)
    got, want = tl.counters, runs[-1]
    assert (got.instructions, got.mpe_instructions, got.misc_instructions) == \
        (want.instructions, want.mpe_instructions, want.misc_instructions)
    assert got.cycles == tl.cycles == want.cycles                   # the simulator predicts them
    assert got.hbm_bytes == sum(tl.hbm_bytes.values()) and got.macs == tl.macs > 0
    assert got.hbm_bytes_written > 0 and got.misc_elements > 0
    assert got.macs <= got.fixed_chain_macs
