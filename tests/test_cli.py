"""The `flightllm` command: help for every subcommand, compile -> disasm -> generate on a tiny model,
and clear errors for bad input."""
from __future__ import annotations

import pytest

from flightllm_overlay.cli import build_parser, main


@pytest.mark.parametrize("cmd", [[], ["generate"], ["info"], ["compile"], ["disasm"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main(cmd + ["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: flightllm" in out


def test_compile_disasm_generate(tmp_path, tiny_folder, capsys):
    prog = tmp_path / "tiny.fllm"
    assert main(["compile", "--model", str(tiny_folder), "-o", str(prog), "--ctx", "128"]) == 0
    assert "wrote" in capsys.readouterr().out and prog.is_file()
    assert main(["disasm", str(prog), "--step", "decode", "--core", "1", "--head", "20"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("; step decode") and "core 1" in out[0] and len(out) == 20
    assert any(" LD " in line or ": LD" in line for line in out)
    assert main(["generate", "hello", "--model", str(tiny_folder), "--program", str(prog),
                 "--max-new-tokens", "4", "--no-chat", "--stats"]) == 0
    captured = capsys.readouterr()
    assert "SIMULATED" in captured.err and "generated tokens" in captured.err


def test_info_names_the_simulated_device_and_vlnvs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "SIMULATED" in out and "flightllm:hls:scheduler:1.0" in out and "SchedulerDriver" in out


def test_bad_input_gives_clear_error(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "missing")]) == 2
    assert "error" in capsys.readouterr().err
    (tmp_path / "junk.fllm").write_bytes(b"junk")
    assert main(["disasm", str(tmp_path / "junk.fllm")]) == 2
    assert "not a FlightLLM program" in capsys.readouterr().err


def test_parser_lists_all_commands():
    text = build_parser().format_help()
    for cmd in ("generate", "info", "compile", "disasm"):
        assert cmd in text
