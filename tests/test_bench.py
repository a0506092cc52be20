"""`flightllm bench` and the predicted staircase: decode latency steps 16 tokens wide, prefill
128 wide; every figure is labelled a prediction."""
from __future__ import annotations

from flightllm_overlay.bench import bench, gantt
from flightllm_overlay.cli import main
from flightllm_overlay.config import load_target
from flightllm_overlay.sim.timing import TimingModel

U280 = load_target("u280")


def test_decode_latency_is_a_staircase_16_tokens_wide(tiny_program):
    res = bench(tiny_program, U280, 20, 4, curve=True)
    cycles = dict(res.decode_curve)
    ctx = tiny_program.ctx
    for b0 in range(0, ctx, 16):
        step = {cycles[e] for e in range(b0 + 1, min(b0 + 16, ctx) + 1)}
        assert len(step) == 1                       # flat inside a bucket
    assert cycles[17] > cycles[16] and cycles[33] > cycles[32]   # a step at each boundary


def test_prefill_latency_steps_128_wide(tiny_ckpt):
    from flightllm_overlay.compiler import compile_model
    prog = compile_model(tiny_ckpt, ctx=256, smooth=False)
    t = [bench(prog, U280, n, 0).prefill.cycles for n in (1, 64, 128, 129, 200, 256)]
    assert t[0] == t[1] == t[2]                     # bucket 128, one launch
    assert t[3] > t[2] and t[3] == t[4] == t[5]     # bucket 256, two launches


def test_report_and_cli(tiny_folder, tiny_program, tmp_path, capsys):
    res = bench(tiny_program, U280, 16, 8)
    text = res.report()
    assert text.startswith("PREDICTED") and res.decode_tokens_per_second > 0
    assert 0 < res.bandwidth_utilisation(res.decode) < 1
    png = tmp_path / "g.png"
    assert main(["bench", "--model", str(tiny_folder), "--workload", "16", "8", "--ctx", "64",
                 "--unfused", "--gantt", str(png)]) == 0
    out = capsys.readouterr().out
    assert "unfused ablation" in out and "tokens/s" in out and png.stat().st_size > 1000


def test_gantt_writes_a_png(tiny_program, tmp_path):
    tl = TimingModel(U280).schedule_image(tiny_program.steps["decode"].image)
    assert gantt(tl, tmp_path / "x.png").endswith("x.png")
