"""Fuzzing every reader of untrusted bytes (program files, GGUF, config.json, compressed
checkpoints, xclbin) and the CLI's argument parser: only documented errors come out, digested files never load with other
contents, and the good input still reads afterwards.  Derandomised and small here;
`benchmarks/fuzz.py` runs >= 10,000 cases per target."""
from __future__ import annotations

import random

import pytest
from fuzz_targets import TARGETS, good_still_works, run_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CASES = {"program_bytes": 60, "program_header": 60, "gguf_metadata": 60, "gguf_bytes": 40,
         "config_json": 80, "compressed_metadata": 60, "xclbin_bytes": 60, "cli_arguments": 60}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_folder):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "tiny-llama").symlink_to(tiny_folder, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def states(folder):
    return {}


@pytest.mark.parametrize("name", sorted(CASES))
def test_only_documented_errors(name, folder, states):
    target = TARGETS[name]
    state = states.setdefault(name, target.setup(folder))
    outcomes = {}

    @settings(max_examples=CASES[name], derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 2**32 - 1))
    def case(seed):
        out = run_case(target, state, random.Random(seed))
        outcomes[out] = outcomes.get(out, 0) + 1
        assert out in ("rejected", "accepted"), out
    case()
    assert outcomes.get("rejected", 0) > CASES[name] // 4      # the mutations do bite
    assert good_still_works(target, state)
