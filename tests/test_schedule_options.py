"""Schedule options change how a program moves data, never what it computes: the simulated overlay
gives bit-identical logits and tokens with every option on, over 30 pseudo-channels (10 per core:
a stripe that is not a power of two; the block design serves the same port count on every core)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from flightllm_overlay.spec import isa
from flightllm_overlay.compiler import compile_model
from flightllm_overlay.compiler.schedule import ALL, PAPER, ScheduleOptions
from flightllm_overlay.config import load_target
from flightllm_overlay.errors import CompileError
from flightllm_overlay.runtime import Generator, Session

PROMPT = [5, 17, 42, 3, 99, 120, 7, 8, 11, 64, 2]


def all_channel_target(tmp_path) -> str:
    """A u280 target file with 30 pseudo-channels dealt over the 3 cores (10 each)."""
    raw = copy.deepcopy(load_target("u280").raw)
    raw["name"] = "u280-30pc"
    raw["hbm"]["core_channels"] = [list(range(c, 30, 3)) for c in range(3)]
    path = tmp_path / "u280-30pc.json"
    path.write_text(json.dumps(raw))
    return str(path)


@pytest.fixture(scope="module")
def sessions(tiny_ckpt, tmp_path_factory):
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.sim.device import SimulatedU280
    from flightllm_overlay.sim.xclbin import sim_xclbin_path
    target = all_channel_target(tmp_path_factory.mktemp("target"))
    device = SimulatedU280(target=target)
    xclbin = sim_xclbin_path(device.design)      # the overlay writes one for this design
    existed = xclbin.exists()
    overlay = FlightLLMOverlay(device=device, target=target)
    out = {}
    for name, sched in (("paper", PAPER), ("all", ALL)):
        out[name] = Session(overlay, compile_model(tiny_ckpt, target, ctx=64, schedule=sched))
    # small weight tiles (many slots), so that sfu_split has several tiles to split after
    out["split"] = Session(overlay, compile_model(tiny_ckpt, target, ctx=64, schedule=ALL,
                                                  weight_slots=512))
    yield out
    for s in out.values():
        s.close()
    if not existed:                              # leave the package directory as it was
        xclbin.unlink(missing_ok=True)


def test_every_option_gives_identical_logits_and_tokens(sessions, tiny_ckpt):
    paper, every = sessions["paper"], sessions["all"]
    # the options are really on: non-power-of-two stripes and compute-only barriers
    image = every.image("decode", 20)[0].image
    table = isa.image_table(image)
    insns = [i for off, n in table for i in isa.decode_stream(image[off:off + n])]
    assert 10 in {i.fields.get("stripe", 0) for i in insns if i.op == "LD"}
    assert all(i.fields.get("fence", 0) for i in insns if i.op == "SYS" and not i.fields.get("op"))
    np.testing.assert_array_equal(paper.run("prefill", PROMPT, 0), every.run("prefill", PROMPT, 0))
    a = Generator(paper, tiny_ckpt.tokenizer)
    b = Generator(every, tiny_ckpt.tokenizer)
    assert [t.id for t in a.generate(PROMPT, 5, stop_ids=())] == \
        [t.id for t in b.generate(PROMPT, 5, stop_ids=())]


def test_parse_names_and_reject_unknown():
    assert ScheduleOptions.parse("paper") == PAPER and ScheduleOptions.parse("all") == ALL
    assert ScheduleOptions.parse("stripe_all+compute_fence") == ScheduleOptions(
        stripe_all=True, compute_fence=True)
    assert ScheduleOptions.parse(ALL.as_dict()) == ALL
    with pytest.raises(CompileError, match="unknown schedule options"):
        ScheduleOptions.parse("stripe_all+warp_speed")


def test_sfu_split_runs_misc_sub_vectors_under_the_mv_with_the_same_results(sessions, tiny_ckpt):
    """Decode with sfu_split: SiLU, the gate x up product and the q/k/v epilogue are emitted per
    weight tile between the MVs (not once after the last one); the tokens do not change."""
    image = sessions["split"].image("decode", 20)[0].image
    off, n = isa.image_table(image)[0]
    insns = list(isa.decode_stream(image[off:off + n]))
    layers = tiny_ckpt.args.n_layers
    silu = [k for k, i in enumerate(insns) if i.op == "MISC" and isa.MISC_OPS[i["op"]] == "silu"]
    assert len(silu) > layers                                   # sub-vectors
    mv = [k for k, i in enumerate(insns) if i.op == "MV"]
    assert any(a < m < b for a, b in zip(silu, silu[1:]) for m in mv)   # MVs between them
    a = Generator(sessions["paper"], tiny_ckpt.tokenizer)
    b = Generator(sessions["split"], tiny_ckpt.tokenizer)
    assert [t.id for t in a.generate(PROMPT, 5, stop_ids=())] == \
        [t.id for t in b.generate(PROMPT, 5, stop_ids=())]
