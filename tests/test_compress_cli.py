"""`flightllm compress` and `flightllm ppl` on the tiny model: report, file, perplexities, clear errors."""
from __future__ import annotations

import re

import pytest

from flightllm_overlay.cli import main


@pytest.mark.parametrize("cmd", [["compress"], ["ppl"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main(cmd + ["--help"])
    assert exc.value.code == 0
    assert "usage: flightllm" in capsys.readouterr().out


def test_compress_then_ppl(tiny_folder, tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    assert main(["compress", str(tiny_folder), "-o", str(out), "--avg-bits", "5.5",
                 "--density-qk", "0.5", "--calib-tokens", "128", "--sequential", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "wrote" in text
    assert "calibration: 128 tokens; error feedback layer by layer" in text
    assert "group parameters re-fitted by least squares" in text      # the default
    assert "formats allocated by predicted loss" in text         # the default allocation
    assert re.search(r"^\s+0\s+4b/32 50%", text, re.M) or "50%" in text   # q at half density
    assert "HBM bits per weight" in text and "density" in text
    text_file = tmp_path / "t.txt"
    text_file.write_text("The capital of France is Paris. " * 40)
    assert main(["ppl", "--model", str(tiny_folder), "--text", str(text_file), "--tokens", "200",
                 "--window", "100", "--compressed", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "200 tokens" in lines[0]
    vals = [float(line.split()[0]) for line in lines[1:]]
    assert len(vals) == 2 and all(v > 1 for v in vals) and "float emulation" in lines[2]


def test_allocation_option(tiny_folder, tmp_path, capsys):
    out = tmp_path / "rel.safetensors"
    assert main(["compress", str(tiny_folder), "-o", str(out), "--avg-bits", "5.5",
                 "--calib-tokens", "64", "--allocation", "relative", "--quiet"]) == 0
    assert "formats allocated by each linear's relative output error" in capsys.readouterr().out
    assert main(["compress", str(tiny_folder), "-o", str(out), "--allocation", "hessian"]) == 2
    assert "invalid choice: 'hessian'" in capsys.readouterr().err


def test_act_group_option(tiny_folder, tmp_path, capsys):
    from flightllm_overlay.compress import CompressedModel
    out = tmp_path / "g.safetensors"
    assert main(["compress", str(tiny_folder), "-o", str(out), "--avg-bits", "5.5",
                 "--calib-tokens", "64", "--act-group", "64", "--quiet"]) == 0
    # the tiny model's FFN (200) is not whole groups: it runs one scale per row, and says so
    assert "groups of 64 asked for, but" in capsys.readouterr().out
    assert CompressedModel.load(out).config.act_group == 64
    assert main(["compress", str(tiny_folder), "-o", str(out), "--avg-bits", "5.5",
                 "--calib-tokens", "64", "--act-group", "0", "--quiet"]) == 0
    assert CompressedModel.load(out).config.act_group is None        # 0: one scale per row
    assert main(["compress", str(tiny_folder), "-o", str(out), "--act-group", "48"]) == 2
    assert "invalid choice: 48" in capsys.readouterr().err


def test_errors_are_clear(tiny_folder, tmp_path, capsys):
    assert main(["compress", str(tiny_folder), "-o", str(tmp_path / "x"), "--density-qk", "0.05",
                 "--quiet"]) == 2
    assert "cannot be met" in capsys.readouterr().err
    assert main(["compress", str(tiny_folder), "-o", str(tmp_path / "x"), "--avg-bits", "3",
                 "--calib-tokens", "64", "--quiet"]) == 2
    assert "average weight bits 3 cannot be met" in capsys.readouterr().err
    (tmp_path / "junk.safetensors").write_bytes(b"junk" * 10)
    assert main(["ppl", "--model", str(tiny_folder), "--tokens", "64"]) == 2
    assert "--window 512 exceeds the model's context 256" in capsys.readouterr().err
    assert main(["ppl", "--model", str(tiny_folder), "--tokens", "64", "--window", "64",
                 "--compressed", str(tmp_path / "junk.safetensors")]) == 2
    assert "not a readable compressed checkpoint" in capsys.readouterr().err
    assert main(["ppl", "--model", str(tiny_folder), "--text", str(tmp_path / "none.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_compressed_checkpoint_on_the_overlay(tiny_folder, tmp_path, capsys):
    """ppl --overlay runs the compiled compressed program beside its float emulation, and
    generate --compressed streams from it."""
    out = tmp_path / "tiny.safetensors"
    assert main(["compress", str(tiny_folder), "-o", str(out), "--avg-bits", "5.5",
                 "--density-qk", "0.5", "--calib-tokens", "128", "--quiet"]) == 0
    capsys.readouterr()
    text_file = tmp_path / "t.txt"
    text_file.write_text("The capital of France is Paris. " * 40)
    assert main(["ppl", "--model", str(tiny_folder), "--text", str(text_file), "--tokens", "150",
                 "--window", "100", "--compressed", str(out), "--overlay"]) == 0
    lines = capsys.readouterr().out.splitlines()
    vals = {line.split("%", 1)[1].strip(): float(line.split()[0]) for line in lines[1:]}
    emu = next(v for k, v in vals.items() if "float emulation" in k)
    dev = next(v for k, v in vals.items() if "on the overlay (simulated U280)" in k)
    assert abs(dev / emu - 1) < 0.03                  # the program computes what it emulates
    assert main(["generate", "hello", "--model", str(tiny_folder), "--compressed", str(out),
                 "--max-new-tokens", "5", "--no-chat"]) == 0
    assert capsys.readouterr().out.strip()


def test_compress_with_block_sparse_attention(tiny_folder, tmp_path, capsys):
    out = tmp_path / "attn.safetensors"
    assert main(["compress", str(tiny_folder), "-o", str(out), "--preset", "w8a8",
                 "--calib-tokens", "512", "--attn-mass", "0.5", "--quiet"]) == 0
    text = capsys.readouterr().out
    density = float(re.search(r"attention: .* ([\d.]+) of the causal blocks", text).group(1))
    assert 0 < density < 1
    assert main(["compress", str(tiny_folder), "-o", str(out), "--attn-mass", "1.5",
                 "--quiet"]) == 2
    assert "attn_mass" in capsys.readouterr().err


def test_every_preset_is_offered_and_a_wrong_one_named(tiny_folder, tmp_path, capsys):
    from flightllm_overlay.compress.config import PRESETS, CompressionConfig
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in PRESETS)
    assert CompressionConfig.preset("flightllm-wide").wide_points == ("ffn_mid", "head_in")
    assert main(["compress", str(tiny_folder), "-o", str(tmp_path / "x.safetensors"),
                 "--preset", "fastest", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "unknown compression preset 'fastest'" in err and "flightllm-wide" in err


def test_no_refit_option(tiny_folder, tmp_path, capsys):
    from flightllm_overlay.compress import CompressedModel
    out = tmp_path / "plain.safetensors"
    assert main(["compress", str(tiny_folder), "-o", str(out), "--avg-bits", "5.5",
                 "--calib-tokens", "64", "--no-refit", "--quiet"]) == 0
    assert "re-fitted" not in capsys.readouterr().out
    assert CompressedModel.load(out).config.refit is False


def test_exact_groups_option(tiny_folder, tmp_path, capsys):
    from flightllm_overlay.compress import CompressedModel
    out = tmp_path / "exact.safetensors"
    assert main(["compress", str(tiny_folder), "-o", str(out), "--avg-bits", "5.5",
                 "--calib-tokens", "64", "--exact-groups", "--quiet"]) == 0
    assert "exact group arithmetic (wcodes)" in capsys.readouterr().out
    cm = CompressedModel.load(out)
    assert cm.config.exact_groups is True
    assert all(pw.exact == (pw.bits < 8 and not pw.sparse) for _, _, pw in cm.linears())
    assert any(pw.exact for _, _, pw in cm.linears())
    assert main(["compress", str(tiny_folder), "-o", str(out), "--avg-bits", "5.5",
                 "--calib-tokens", "64", "--no-exact-groups", "--quiet"]) == 0
    assert "exact group arithmetic" not in capsys.readouterr().out
    cm = CompressedModel.load(out)
    assert cm.config.exact_groups is False and not any(pw.exact for _, _, pw in cm.linears())
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    assert "--no-exact-groups" in capsys.readouterr().out


def test_wide_option(tiny_folder, tmp_path, capsys):
    """--wide names the two-plane points (all, none, or names; the preset's by default, dense4:
    every point); the report says where; an unknown name is refused with the choices."""
    from flightllm_overlay.compress import CompressedModel
    from flightllm_overlay.compress.config import WIDE_POINTS
    out = tmp_path / "wide.safetensors"
    common = ["compress", str(tiny_folder), "-o", str(out), "--calib-tokens", "64", "--quiet",
              "--avg-bits", "5.5", "--bits", "4", "8"]     # (the tiny model's widths need 8)
    assert main(common + ["--preset", "dense4"]) == 0
    text = capsys.readouterr().out
    assert "two INT8 planes" in text and "groups of 32" not in text   # every input wide
    assert CompressedModel.load(out).config.wide_points == WIDE_POINTS
    assert main(common + ["--preset", "dense4", "--wide", "none"]) == 0
    text = capsys.readouterr().out
    assert "two INT8 planes" not in text and "groups of 32" in text
    assert CompressedModel.load(out).config.wide_points == ()
    assert main(common + ["--wide", "k", "ffn_mid"]) == 0
    assert "at k, ffn_mid" in capsys.readouterr().out
    assert CompressedModel.load(out).config.wide_points == ("k", "ffn_mid")
    assert main(common + ["--wide", "v"]) == 2
    assert "wide_points must be distinct names of" in capsys.readouterr().err
