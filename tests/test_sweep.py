"""`flightllm sweep`: a small grid predicted on local Ray and serially gives the same table; results
are cached by content hash (a second run predicts nothing); the CLI writes the CSV and the plot."""
from __future__ import annotations

import csv

import pytest

from flightllm_overlay import sweep
from flightllm_overlay.cli import main

POINTS = sweep.grid(["u280", "vhk158"], ["smollm2-135m"], [(16, 8)], ["paper"])


def test_serial_is_cached_by_content_hash(tmp_path):
    logs = []
    first = sweep.run(POINTS, tmp_path, serial=True, log=logs.append)
    again = sweep.run(POINTS, tmp_path, serial=True, log=logs.append)
    assert first == again and "2 cached, 0 to predict" in logs[-1]
    assert len({sweep.point_key(p) for p in POINTS}) == len(POINTS)
    assert first[1]["decode_tok_s"] > first[0]["decode_tok_s"] > 0      # VHK158: faster HBM


def test_ray_and_serial_agree(tmp_path):
    ray = pytest.importorskip("ray", reason="the [sweep] extra (Ray) is not installed")
    serial = sweep.run(POINTS, None, serial=True)
    on_ray = sweep.run(POINTS, None, serial=False)
    assert not ray.is_initialized()                  # the local Ray it started is shut down
    assert on_ray == serial


def test_cli_writes_csv_and_plot(tmp_path, capsys):
    out, png = tmp_path / "s.csv", tmp_path / "s.png"
    assert main(["sweep", "--targets", "u280", "--models", "smollm2-135m", "--workloads", "16x8",
                 "--schedules", "paper", "--serial", "--cache", str(tmp_path / "c"),
                 "--out", str(out), "--plot", str(png)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and float(rows[0]["decode_tok_s"]) > 0 and png.stat().st_size > 1000
    assert "PREDICTED" in capsys.readouterr().out
