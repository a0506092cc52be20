"""The target file is the only source of hardware numbers: typed fields, no fallbacks, a source for each timing constant."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from flightllm_overlay.config import TARGETS_DIR, Target, Timing, _build, load_target
from flightllm_overlay.errors import ConfigError
from flightllm_overlay.sim.timing import TimingModel


def _raw():
    return json.loads((TARGETS_DIR / "u280.json").read_text())


def test_every_target_field_comes_from_the_file():
    """No field of Target has a fallback default (only the raw description does)."""
    defaults = [f.name for f in dataclasses.fields(Target)
                if f.name != "raw" and (f.default is not dataclasses.MISSING
                                        or f.default_factory is not dataclasses.MISSING)]
    assert defaults == []
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(Timing))


def test_typed_fields_carry_the_file_values():
    raw, t = _raw(), load_target("u280")
    assert t.slrs == raw["slrs"] and t.dsp_macs == raw["mpe"]["dsp_macs"]
    assert t.dsp_group == raw["mpe"]["dsp_group"]
    assert t.mm_rows == raw["mpe"]["mm_parallel"]["m"]
    for f in dataclasses.fields(Timing):
        assert getattr(t.timing, f.name) == raw["timing"][f.name]
        assert isinstance(getattr(t.timing, f.name), (int, float))


@pytest.mark.parametrize("what", ["value", "source"])
def test_a_timing_constant_without_value_or_source_is_refused(what):
    raw = copy.deepcopy(_raw())
    if what == "value":
        del raw["timing"]["barrier_cycles"]
    else:
        del raw["timing"]["sources"]["barrier_cycles"]
    with pytest.raises(ConfigError, match="barrier_cycles"):
        _build(raw)


def test_the_timing_model_reads_the_target_not_its_own_numbers():
    t = load_target("u280")
    slow = t.with_overrides(timing=dataclasses.replace(t.timing, mpe_latency_cycles=1000))
    assert TimingModel(slow).mpe_cycles("MV", 1, 64, 64) == \
        TimingModel(t).mpe_cycles("MV", 1, 64, 64) + 1000 - t.timing.mpe_latency_cycles


def test_missing_section_names_the_file_to_compare_with():
    raw = _raw()
    del raw["slrs"]
    with pytest.raises(ConfigError, match="u280.json"):
        _build(raw)
