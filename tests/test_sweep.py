"""`flightllm sweep`: a small grid runs serially and on a local Ray with the same table, and its points are cached by content hash."""
from __future__ import annotations

import csv
import json

import pytest

from flightllm_overlay import sweep as S
from flightllm_overlay.config import TARGETS_DIR
from flightllm_overlay.errors import CheckpointError, ConfigError

TINY = "opt-125m@n_layers=1,vocab_size=512"          # compiles in about a second per target
GRID = S.Grid(targets=("u280", "vhk158"), models=(TINY,), workloads=((16, 16), (16, 32)),
              options=({"weight_bits": 4}, {"weight_bits": 8}))


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    cache = tmp_path_factory.mktemp("sweep-cache")
    return S.run_sweep(GRID, cache_dir=cache, serial=True), cache


def test_the_serial_run_fills_the_table_and_the_cache(serial):
    result, cache = serial
    assert result.backend == "serial" and result.computed == 8 and result.hits == 0
    assert [(r["target"], r["decode"], r["options"]) for r in result.rows][:4] == [
        ("u280", 16, "weight_bits=4"), ("u280", 16, "weight_bits=8"),
        ("u280", 32, "weight_bits=4"), ("u280", 32, "weight_bits=8")]
    assert len(list(cache.glob("*.json"))) == 8
    by = {(r["target"], r["decode"], r["options"]): r for r in result.rows}
    for t in ("u280", "vhk158"):
        # 8-bit weights stream twice the bytes of 4-bit ones: decode is slower
        assert by[t, 16, "weight_bits=8"]["decode_ms_per_token"] > \
            by[t, 16, "weight_bits=4"]["decode_ms_per_token"]
    assert by["vhk158", 16, "weight_bits=4"]["cores"] == 4


def test_a_second_run_reads_every_point_from_the_cache(serial):
    first, cache = serial
    again = S.run_sweep(GRID, cache_dir=cache, serial=True)
    assert (again.hits, again.computed, again.backend) == (8, 0, "cache")
    assert again.rows == first.rows


def test_the_key_is_the_content_not_the_name(tmp_path):
    raw = json.loads((TARGETS_DIR / "u280.json").read_text())
    same = tmp_path / "copy.json"
    same.write_text(json.dumps(raw))
    raw["hbm"]["channel_gbps"] = 20.0
    faster = tmp_path / "faster.json"
    faster.write_text(json.dumps(raw))
    point = S.Point("u280", TINY, 16, 16, (("weight_bits", 4),))
    assert S.point_key(point) == S.point_key(S.Point(str(same), TINY, 16, 16, point.options))
    assert S.point_key(point) != S.point_key(S.Point(str(faster), TINY, 16, 16, point.options))
    assert S.point_key(point) != S.point_key(S.Point("u280", TINY, 16, 17, point.options))
    assert S.point_key(point) != S.point_key(
        S.Point("u280", TINY.replace("n_layers=1", "n_layers=2"), 16, 16, point.options))


def test_a_torn_cache_file_is_recomputed(tmp_path):
    grid = S.Grid(("u280",), (TINY,), ((16, 16),), ({"weight_bits": 4},))
    first = S.run_sweep(grid, cache_dir=tmp_path, serial=True)
    (path,) = tmp_path.glob("*.json")
    path.write_text(path.read_text()[:20])
    again = S.run_sweep(grid, cache_dir=tmp_path, serial=True)
    assert again.computed == 1 and again.rows == first.rows


def test_local_ray_gives_the_serial_table(serial, tmp_path):
    """One small local Ray (1 CPU): the only test that pays Ray's start-up."""
    on_ray = S.run_sweep(GRID, cache_dir=tmp_path, num_cpus=1, timeout_s=600)
    assert on_ray.backend == "ray" and on_ray.computed == 8
    assert on_ray.rows == serial[0].rows
    import ray
    assert not ray.is_initialized()          # the Ray it started is shut down again


def test_without_ray_it_runs_serially_and_says_how_to_install(monkeypatch):
    monkeypatch.setattr(S, "ray_available", lambda: False)
    grid = S.Grid(("u280",), (TINY,), ((16, 16),), ({"weight_bits": 4},))
    result = S.run_sweep(grid)
    assert result.backend == "serial" and "[sweep]" in result.notes[0]
    with pytest.raises(S.SweepError, match=r"\[sweep\]"):
        S.run_sweep(grid, address="auto")


def test_bad_names_fail_before_any_work():
    with pytest.raises(ConfigError, match="known targets"):
        S.run_sweep(S.Grid(("u281",), (TINY,), ((16, 16),)), serial=True)
    with pytest.raises(CheckpointError, match="llama2-7b"):
        S.run_sweep(S.Grid(("u280",), ("llama-7b",), ((16, 16),)), serial=True)
    with pytest.raises(ConfigError, match="NUMERIC_FIELD"):
        S.model_args("opt-125m@arch=llama")
    with pytest.raises(S.SweepError, match="empty"):
        S.run_sweep(S.Grid((), (TINY,), ((16, 16),)))


def test_the_cli_writes_the_table_and_the_plot(serial, tmp_path, capsys):
    from flightllm_overlay.cli import main
    out = tmp_path / "grid.csv"
    rc = main(["sweep", "--targets", "u280", "vhk158", "--models", TINY, "--workloads", "16,16",
               "16,32", "--weight-bits", "4", "8", "--serial", "--cache", str(serial[1]),
               "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "8 from the cache" in printed and "PREDICTED" in printed
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(S.INPUT_COLUMNS + S.FIGURE_COLUMNS)
    assert [float(r["decode_tokens_per_s"]) for r in rows] == pytest.approx(
        [r["decode_tokens_per_s"] for r in serial[0].rows])
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_a_malformed_workload_is_a_usage_error(capsys):
    from flightllm_overlay.cli import main
    assert main(["sweep", "--workloads", "128x512", "--serial"]) == 2     # argparse's usage status
    assert "PREFILL,DECODE" in capsys.readouterr().err


def test_a_failing_point_names_itself(monkeypatch):
    """The prediction's own error comes back as a SweepError naming the grid point."""
    grid = S.Grid(("u280",), ("llama2-7b",), ((16, 16),), ({"weight_bits": 8},))
    with pytest.raises(S.SweepError, match="llama2-7b") as exc:
        S.run_sweep(grid, serial=True)
    assert "pseudo-channel" in str(exc.value)
