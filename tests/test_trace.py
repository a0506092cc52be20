"""Layer-by-layer trace: the device's layer outputs against the float reference, both families, injected errors found."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.runtime import Session
from flightllm_overlay.runtime.trace import POINTS, trace, trace_program

PROMPT = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def traced(tiny_program):
    return trace_program(tiny_program)


def _zero_tiles(session, program, layer: int, name: str) -> None:
    """Overwrite layer `layer`'s `name` weight tiles (every core) in device HBM with zeros."""
    plan = program.builder.plan
    for cp in plan.cores:
        for tile in cp.layers[layer][name]:
            r = tile.region
            chs = plan.target.channels_of(cp.index)[:r.stripe] if r.stripe > 1 else [r.channel]
            for ch in chs:
                buf = session._region(ch, r.offset, r.nbytes // r.stripe)
                buf[:] = 0
                buf.sync_to_device()


def test_w8a8_llama_trace_is_close_at_every_layer(sim_overlay, tiny_ckpt, traced):
    with Session(sim_overlay, traced) as s:
        report = trace(s, tiny_ckpt, PROMPT)
    assert [(r.layer, r.point) for r in report.rows] == \
        [(li, p) for li in range(tiny_ckpt.args.n_layers) for p in POINTS]
    for r in report.rows:                     # W8A8 of a tiny random model: small, not zero
        assert 0 < r.relative < 0.35 and r.cosine > 0.99, r
    assert report.logits.cosine > 0.99
    text = report.table()
    assert "layer" in text and "block_out" in text and "largest relative error" in text


def test_traced_program_computes_what_the_plain_one_does(sim_overlay, tiny_program, traced):
    ids = list(range(5, 40))
    with Session(sim_overlay, tiny_program) as plain, Session(sim_overlay, traced) as t:
        assert np.array_equal(plain.run("prefill", ids, 0), t.run("prefill", ids, 0))


def test_injected_error_is_reported_at_its_layer(sim_overlay, tiny_ckpt, traced):
    with Session(sim_overlay, traced) as s:
        clean = trace(s, tiny_ckpt, PROMPT)
    with Session(sim_overlay, traced) as s:
        _zero_tiles(s, traced, 1, "wo")        # layer 1's output projection now yields zeros
        broken = trace(s, tiny_ckpt, PROMPT)
    by = {(r.layer, r.point): r for r in broken.rows}
    assert [r for r in broken.rows if r.layer == 0] == [r for r in clean.rows if r.layer == 0]
    assert by[(1, "attn_out")].relative == pytest.approx(1.0)      # all zeros: 100% off
    first_bad = next(r for r in broken.rows if r.relative > 0.5)
    assert (first_bad.layer, first_bad.point) == (1, "attn_out")


def test_opt_and_compressed_programs_trace(sim_overlay, tiny_opt_ckpt, tiny_ckpt, traced):
    from flightllm_overlay.compiler import compile_compressed, compile_model
    from flightllm_overlay.compress import CompressionConfig, compress
    opt = trace_program(compile_model(tiny_opt_ckpt, ctx=128))
    with Session(sim_overlay, opt) as s:
        report = trace(s, tiny_opt_ckpt, PROMPT)
    assert len(report.rows) == tiny_opt_ckpt.args.n_layers * len(POINTS)
    assert all(r.cosine > 0.99 for r in report.rows)
    cm = compress(tiny_ckpt, None, CompressionConfig.preset("flightllm").but(calib_tokens=64),
                  progress=False)
    comp = trace_program(compile_compressed(cm, ctx=128))
    with Session(sim_overlay, comp) as s:
        report = trace(s, tiny_ckpt, PROMPT)
    with Session(sim_overlay, traced) as s:
        w8a8 = trace(s, tiny_ckpt, PROMPT)
    assert "compressed" in report.program
    # 4-bit N:16-sparse weights of a random model: far larger error than W8A8, from layer 0 on
    assert all(np.isfinite(r.relative) and r.cosine > 0 for r in report.rows)
    assert report.rows[0].relative > 3 * w8a8.rows[0].relative


def test_plot_and_loaded_programs(tmp_path, tiny_program, sim_overlay, tiny_ckpt, traced):
    from flightllm_overlay.compiler import Program
    loaded = Program.load(tiny_program.save(tmp_path / "p.fllm"))
    with Session(sim_overlay, trace_program(loaded)) as s:       # from its placement recipe
        from_file = trace(s, tiny_ckpt, list(range(3, 20)))
    with Session(sim_overlay, traced) as s:
        report = trace(s, tiny_ckpt, list(range(3, 20)))
    assert from_file.rows == report.rows and len(report.rows) == 4 * tiny_ckpt.args.n_layers
    fig = report.plot(tmp_path / "trace.png")
    assert (tmp_path / "trace.png").stat().st_size > 1000
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == len(POINTS)


def test_session_trace_and_the_command(sim_overlay, tiny_program, tiny_ckpt, tiny_folder,
                                       tmp_path, capsys):
    from flightllm_overlay.cli import main
    with Session(sim_overlay, tiny_program) as s:
        report = s.trace(tiny_ckpt, PROMPT)
    assert len(report.rows) == tiny_ckpt.args.n_layers * len(POINTS)
    assert main(["trace", PROMPT, "--model", str(tiny_folder), "--ctx", "128",
                 "--plot", str(tmp_path / "t.png")]) == 0
    out = capsys.readouterr().out
    assert "block_out" in out and "largest relative error" in out and "wrote" in out
    assert (tmp_path / "t.png").is_file()
