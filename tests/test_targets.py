"""Every board in targets/ states a source for every constant, loads, compiles and predicts with the same code."""
from __future__ import annotations

import copy
import json

import pytest

from flightllm_overlay.bench import bench
from flightllm_overlay.compiler import compile_shapes
from flightllm_overlay.config import TARGETS_DIR, _build, load_target, unsourced
from flightllm_overlay.errors import ConfigError
from flightllm_overlay.model.testing import TINY_ARGS

TARGET_FILES = sorted(TARGETS_DIR.glob("*.json"))
NAMES = [p.stem for p in TARGET_FILES]


def _raw(name):
    return json.loads((TARGETS_DIR / f"{name}.json").read_text())


def test_the_three_boards_are_there():
    assert {"u280", "u55c", "vhk158"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_constant_has_a_source(name):
    raw = _raw(name)
    assert unsourced(raw) == []
    # the walk reaches every numeric leaf: count them against the sources it accepted
    def leaves(d):
        n = 0
        for k, v in d.items():
            if k == "sources" or isinstance(v, str):
                continue
            n += leaves(v) if isinstance(v, dict) and "sources" in v else 1
        return n
    assert leaves(raw) >= 40
    assert load_target(name).name == name


@pytest.mark.parametrize("path", [("clock_mhz",), ("hbm", "channel_gbps"),
                                  ("buffers", "gbuf"), ("mpe", "mm_parallel"),
                                  ("device", "DSP"), ("timing", "barrier_cycles")])
def test_a_constant_without_a_source_is_refused_by_name(path):
    raw = copy.deepcopy(_raw("u55c"))
    holder = raw
    for key in path[:-1]:
        holder = holder[key]
    del holder["sources"][path[-1]]
    with pytest.raises(ConfigError, match=r"\.".join(path)):
        _build(raw)


def test_a_blank_source_does_not_count():
    raw = copy.deepcopy(_raw("vhk158"))
    raw["hbm"]["sources"]["channel_bytes"] = "  "
    assert unsourced(raw) == ["hbm.channel_bytes"]


def test_the_boards_differ_where_their_documents_say():
    u280, u55c, vhk = (load_target(n) for n in ("u280", "u55c", "vhk158"))
    gib = 1 << 30
    assert u280.hbm_channels * u280.hbm_channel_bytes == 8 * gib
    assert u55c.hbm_channels * u55c.hbm_channel_bytes == 16 * gib
    assert vhk.hbm_channels * vhk.hbm_channel_bytes == 32 * gib
    assert u55c.hbm_channel_gbps * u55c.hbm_channels == pytest.approx(460, rel=1e-3)
    assert vhk.hbm_channel_gbps * vhk.hbm_channels == pytest.approx(819.2)
    assert (u280.cores, u55c.cores, vhk.cores) == (3, 3, 4)
    assert sum(map(len, vhk.core_channels)) == 32          # the artifact: 8 PCs x 4 SLRs
    assert u55c.ddr_banks == vhk.ddr_banks == 0 and u55c.instruction_bank == -1


@pytest.fixture(scope="module")
def predictions():
    out = {}
    for name in ("u280", "u55c", "vhk158"):
        target = load_target(name)
        program = compile_shapes(TINY_ARGS, target, ctx=64)
        out[name] = bench(program, target, 16, 16, "tiny")
    return out


def test_the_three_targets_predict_with_the_same_code(predictions):
    for name, r in predictions.items():
        assert r.prefill_seconds > 0 and r.decode_tokens_per_second > 0, name
    # the U55C differs from the U280 only in HBM capacity and instruction memory: a tiny model
    # fetches few instructions, so its decode lies within 10% of the U280's
    u280, u55c, vhk = (predictions[n] for n in ("u280", "u55c", "vhk158"))
    assert u55c.decode_tokens_per_second == pytest.approx(u280.decode_tokens_per_second, rel=0.1)
    # the VHK158 has a fourth core and 1.8x the bandwidth per channel: never slower
    assert vhk.decode_tokens_per_second > u280.decode_tokens_per_second


def test_a_fourth_core_gets_matrix_work():
    """The VHK158's four cores each run MV instructions and stream from their own channels."""
    target = load_target("vhk158")
    program = compile_shapes(TINY_ARGS, target, ctx=64)
    from flightllm_overlay.spec import isa
    streams = program.steps["decode"].streams()
    assert len(streams) == 4
    for core, words in enumerate(streams):
        insns = list(isa.decode_stream(words))
        assert any(i.op == "MV" for i in insns), core
        channels = {i.fields["channel"] for i in insns
                    if i.op == "LD" and not i.fields.get("remote")}
        assert channels and channels <= set(target.core_channels[core]), core


@pytest.mark.parametrize("name, verdict, rc", [("u55c", "Verdict: fits the U55C", 0),
                                               ("vhk158", "Verdict: no fit verdict", 0)])
def test_the_resource_estimate_runs_on_each_board(name, verdict, rc, capsys):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).parents[1] / "benchmarks" / "resources.py"
    spec = importlib.util.spec_from_file_location("resources_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--target", name]) == rc
    out = capsys.readouterr().out
    assert verdict in out and f"{name.upper()} capacity" in out
    assert f"target {name} ({load_target(name).cores} cores" in out


@pytest.mark.parametrize("change, field", [({"cores": 5}, "remote_core"),
                                           ({"hbm_channels": 64}, "channel field")])
def test_a_board_beyond_the_isa_is_refused_before_compiling(change, field):
    """The ISA's field widths are the spec's (config imports nothing above it): a board with more
    cores or channels than LD/ST can address loads, and the compiler refuses it by name."""
    from flightllm_overlay.compiler import compile_shapes
    from flightllm_overlay.model.args import MODEL_TABLE
    from flightllm_overlay.spec import isa
    raw = copy.deepcopy(_raw("vhk158"))
    if "cores" in change:
        raw["cores"] = 5
        raw["hbm"]["core_channels"].append([])
    else:
        raw["hbm"]["channels"] = 64
    target = _build(raw)
    with pytest.raises(ConfigError, match=field):
        isa.check_target(target)
    with pytest.raises(ConfigError, match=field):
        compile_shapes(MODEL_TABLE["smollm2-135m"], target, ctx=64)
