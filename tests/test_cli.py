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
    assert "Simulator arithmetic: native kernels: " in out      # built with the host's g++


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


# -- every path: a one-line error and a non-zero status, never a traceback -------------------------
def _error(argv, capsys, status=2):
    assert main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" in err
    return err


@pytest.mark.parametrize("argv, says", [
    (["generate", "--temperature", "nan"], "not a finite number"),
    (["generate", "--temperature", "-1"], "out of range"),
    (["generate", "--ctx", "-16"], "must be >= 1"),
    (["generate", "--top-p", "0"], "(0, 1]"),
    (["generate", "--max-new-tokens", "0"], "must be >= 1"),
    (["generate", "caf\udcc3"], "not UTF-8"),                  # undecodable byte from argv
    (["generate", "\ud800"], "lone surrogate"),
    (["compile", "-o", "/no/such/folder/x.fllm"], "does not exist; create it first"),
    (["compile", "-o", "."], "is a folder"),
    (["disasm", "--head", "-3", "x.fllm"], "must be >= 0"),
    (["disasm", "no-such.fllm"], "does not exist"),
    (["bench", "--qk-density", "nan"], "not a finite number"),
    (["ppl", "--window", "1"], "must be >= 2"),
    (["selftest", "--timeout", "0"], "out of range"),
])
def test_bad_arguments_are_refused_while_parsing(argv, says, capsys):
    assert says in _error(argv, capsys)


def test_disasm_checks_step_and_core(tmp_path, tiny_program, capsys):
    prog = tiny_program.save(tmp_path / "p.fllm")
    err = _error(["disasm", str(prog), "--step", "nope"], capsys)
    assert "has no step 'nope'" in err and "prefill" in err and "decode" in err
    assert "runs on cores 0..2" in _error(["disasm", str(prog), "--core", "7"], capsys)


def test_compile_onto_an_unwritable_path_is_an_error(tiny_folder, capsys):
    # root may write anywhere it has permission bits for, but not into /proc
    err = _error(["compile", "--model", str(tiny_folder), "-o", "/proc/flightllm-test.fllm"],
                 capsys)
    assert "/proc" in err


def test_shape_names_get_a_hint(capsys):
    err = _error(["generate", "--model", "smollm2-135m"], capsys)
    assert "shape from the shape table" in err and "bench --shape smollm2-135m" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    from flightllm_overlay import __version__
    assert capsys.readouterr().out.strip() == f"flightllm {__version__}"


def test_generate_ends_with_tokens_per_second(tmp_path, tiny_folder, tiny_program, capsys):
    prog = tiny_program.save(tmp_path / "p.fllm")
    assert main(["generate", "hi", "--model", str(tiny_folder), "--program", str(prog),
                 "--max-new-tokens", "3", "--no-chat"]) == 0
    captured = capsys.readouterr()
    assert captured.out.endswith("\n")                     # the answer ends before the stats
    last = captured.err.strip().splitlines()[-1]
    assert "tok/s on the simulator" in last and "predicted U280 decode" in last


def test_compress_takes_model_by_option_and_refuses_two(tmp_path, tiny_folder, capsys):
    err = _error(["compress", str(tiny_folder), "--model", str(tmp_path), "-o",
                  str(tmp_path / "c.safetensors")], capsys)
    assert "two models given" in err


# -- a fast fuzz of the argument parser ------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

OPTIONS = {
    "generate": ["--temperature", "--top-k", "--top-p", "--seed", "--ctx", "--max-new-tokens",
                 "--model", "--program"],
    "compile": ["--ctx", "-o", "--model", "--target"],
    "disasm": ["--step", "--core", "--head"],
    "bench": ["--qk-density", "--ctx", "--weight-bits", "--shape", "--gantt"],
    "compress": ["--density", "--avg-bits", "--bits", "--groups", "--calib-tokens", "-o"],
    "ppl": ["--tokens", "--window", "--text"],
    "selftest": ["--seed", "--timeout"],
}
NASTY = ["nan", "-nan", "inf", "-inf", "1e309", "-1", "0", "-0", "0x10", "1_000", "", " ", "7",
         "2", "0.5", "\udcff", "\ud800", "/", ".", "/no/such/x", "--", "-3", "3.0", "٣"]
VALUE = st.one_of(st.sampled_from(NASTY), st.integers(-2**70, 2**70).map(str),
                  st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=8))


@st.composite
def argvs(draw):
    cmd = draw(st.sampled_from(sorted(OPTIONS)))
    argv = [cmd]
    if cmd == "disasm":
        argv.append(draw(VALUE))
    for opt in draw(st.lists(st.sampled_from(OPTIONS[cmd]), max_size=4)):
        argv += [opt, draw(VALUE)]
    return argv


PARSER = build_parser()          # argparse keeps no state between parses


@settings(max_examples=200, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(argvs())
def test_fuzzed_arguments_parse_or_exit_two(argv):
    import contextlib
    import io
    import math
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = PARSER.parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 2 and "error:" in err.getvalue()
            args = None
    good = PARSER.parse_args(["generate", "hi", "--temperature", "0.5", "--ctx", "64"])
    assert (good.temperature, good.ctx, good.prompt) == (0.5, 64, "hi")   # a good input still works
    if args is None:
        return
    # what parses is in range: the commands never see a NaN, a negative size or bad text
    for name in ("temperature", "top_p", "qk_density", "timeout"):
        value = getattr(args, name, None)
        assert value is None or (math.isfinite(value) and value >= 0), (name, value)
    for name in ("ctx", "max_new_tokens", "calib_tokens"):
        value = getattr(args, name, None)
        assert value is None or value >= 1, (name, value)
    for name in ("core", "head", "top_k", "seed"):
        value = getattr(args, name, None)
        assert value is None or value >= 0, (name, value)
    for value in vars(args).values():
        if isinstance(value, str):
            value.encode("utf-8")


def test_sampling_params_refuse_nan_temperature():
    from flightllm_overlay.errors import FlightLLMError
    from flightllm_overlay.runtime import SamplingParams
    with pytest.raises(FlightLLMError, match="finite"):
        SamplingParams(temperature=float("nan"))


def test_output_into_a_closed_pipe_ends_quietly(tmp_path, tiny_program):
    import os
    import subprocess
    import sys
    from pathlib import Path
    prog = tiny_program.save(tmp_path / "p.fllm")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    reader = subprocess.Popen(["head", "-1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    out = subprocess.run([sys.executable, "-m", "flightllm_overlay.cli", "disasm", str(prog)],
                         stdout=reader.stdin, stderr=subprocess.PIPE, text=True, env=env,
                         timeout=120)
    reader.stdin.close()
    reader.wait(timeout=30)
    assert out.returncode == 0 and "Traceback" not in out.stderr and "Broken" not in out.stderr
