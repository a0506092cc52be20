"""The simulator's fast path equals its per-instruction reference: every instruction kind, LLaMA and OPT, errors too."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from flightllm_overlay.spec import isa
from flightllm_overlay.compiler import compile_compressed, compile_model
from flightllm_overlay.errors import FlightLLMError
from flightllm_overlay.model import load_checkpoint
from flightllm_overlay.model.testing import make_tiny_opt
from flightllm_overlay.overlay import FlightLLMOverlay
from flightllm_overlay.runtime import Session
from flightllm_overlay.sim import fastpath
from flightllm_overlay.spec import arithmetic as U
from flightllm_overlay.sim.device import SimulatedU280
from flightllm_overlay.sim.functional import FunctionalSimulator


def _overlay(fast: bool):
    return FlightLLMOverlay(device=SimulatedU280(
        simulator_factory=lambda target: FunctionalSimulator(target, fast=fast)))


@pytest.fixture(scope="module")
def overlays():
    """(reference, fast) simulated cards."""
    return _overlay(False), _overlay(True)


@pytest.fixture(scope="module")
def opt_program(tmp_path_factory):
    ckpt = load_checkpoint(make_tiny_opt(tmp_path_factory.mktemp("opt") / "tiny-opt", seed=1))
    return compile_model(ckpt, ctx=128)


@pytest.fixture(scope="module")
def compressed_program(tiny_ckpt):
    from flightllm_overlay.compress import CompressionConfig, compress
    tokens = np.random.default_rng(3).integers(3, 300, 256).tolist()
    cfg = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=256, attn_mass=0.9,
                                            wide_points=("attn_out", "ffn_mid", "head_in"))
    return compile_compressed(compress(tiny_ckpt, tokens, cfg, progress=False), ctx=256)


RUNS = [("prefill", list(range(5, 45)), 0), ("decode", [7], 40), ("decode", [11], 41),
        ("prefill", list(range(60, 80)), 42), ("decode", [3], 62)]


def _record(overlay, program):
    """Logits, device counters of each run, and every HBM byte at the end."""
    with Session(overlay, program) as s:
        out = []
        for step, ids, pos in RUNS:
            before = copy.deepcopy(s.stats)
            logits = s.run(step, ids, pos)
            d = s.stats.since(before)
            out.append((logits, d.instructions, d.macs, d.fixed_chain_macs, d.hbm_bytes,
                        d.device_cycles))
        hbm = {}
        for ch, buf in s.channels.items():
            buf.sync_from_device()
            hbm[ch] = np.array(buf)
    return out, hbm


def _kinds(program):
    """What instruction kinds the program's streams contain."""
    kinds = set()
    for st in program.steps.values():
        words = st.image.view(np.uint32)
        for off, n in isa.image_table(words):
            seg, pos = words[off:off + n].tolist(), 0
            while pos < n:
                insn, size = isa.decode_one(seg, pos)
                f, op = insn.fields, insn.op
                pos += size
                if op in ("LD", "ST"):
                    kinds.add((op, isa.DYN_MODES[f.get("dyn", 0)]))
                    for flag in ("remote", "wfmt", "stripe"):
                        if f.get(flag, 0):
                            kinds.add((op, flag))
                elif op in ("MM", "MV"):
                    kinds.add((op, "sparse" if f.get("sparse", 0) else "dense"))
                    if f.get("dyn_n", 0) or f.get("dyn_k", 0):
                        kinds.add((op, "dyn"))
                elif op == "MISC":
                    kinds.add((op, isa.MISC_OPS[f["op"]]))
                    for flag in ("amax", "given_max", "diffuse", "residual"):
                        if f.get(flag, 0):
                            kinds.add((op, flag))
                else:
                    kinds.add((op, isa.SYS_OPS[f.get("op", 0)]))
    return kinds


@pytest.fixture(scope="module")
def split_program(tiny_ckpt):
    """Every schedule option (the SFU split's row maxima and one-pass quantisations), small
    weight tiles so that the split has tiles to split after."""
    return compile_model(tiny_ckpt, ctx=128, schedule="all", weight_slots=512)


@pytest.mark.parametrize("which", ["llama", "opt", "compressed", "staged", "split"])
def test_fast_path_equals_the_reference_byte_for_byte(which, overlays, tiny_program, opt_program,
                                                      compressed_program, staged_program,
                                                      split_program):
    program = {"llama": tiny_program, "opt": opt_program, "compressed": compressed_program,
               "staged": staged_program, "split": split_program}[which]
    ref, fast = (_record(ol, program) for ol in overlays)
    for (a, *ca), (b, *cb) in zip(ref[0], fast[0]):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
        assert ca == cb
    assert ref[1].keys() == fast[1].keys()
    assert all(np.array_equal(ref[1][ch], fast[1][ch]) for ch in ref[1])
    assert any(ref[1][ch].any() for ch in ref[1])


def test_the_programs_compared_cover_every_instruction_kind(tiny_program, opt_program,
                                                            compressed_program, split_program):
    kinds = _kinds(tiny_program) | _kinds(opt_program) | _kinds(compressed_program) | \
        _kinds(split_program)
    want = {("MM", "dense"), ("MV", "dense"), ("MV", "sparse"), ("MM", "sparse"), ("MV", "dyn"),
            ("MM", "dyn"), ("LD", "static"), ("LD", "at_pos"), ("LD", "history"),
            ("LD", "remote"), ("LD", "wfmt"), ("LD", "stripe"), ("ST", "at_pos"),
            ("SYS", "barrier"), ("SYS", "end"), ("MISC", "amax"), ("MISC", "given_max"),
            ("MISC", "diffuse"), ("MISC", "residual")} | \
        {("MISC", op) for op in isa.MISC_OPS}
    assert want - kinds == set()


def test_a_step_of_each_kind_is_prepared(tiny_program, overlays):
    """The fast path is not the reference under another name: static loads, dense MPE work,
    KV-cache moves and the attention's MPE and MISC work (bound once for every length) run as
    prepared steps."""
    _, fast = overlays
    with Session(fast, tiny_program) as s:
        s.run("decode", [5], 3)
    sim = fast.device._simulator
    (_, _, plan), = [v for v in sim._plans.values() if v[2] is not None][-1:]
    names = {step.__name__ for rnd in plan.rounds for steps, _, _ in rnd for step in steps}
    assert {"load", "weight_load", "mpe", "move", "misc", "remote_load", "dyn_misc",
            "dyn_mpe"} <= names


def test_errors_are_the_same_on_both_paths(overlays, tiny_program):
    """Faults met at run time give the same error, core and word on both paths (one inside a
    prepared step: a run longer than the decode stream's rows; one left to the reference: an
    HBM address outside the channel's buffer), and both cards keep working."""
    got = []
    for ol in overlays:
        with Session(ol, tiny_program) as s:
            st, buf = s.image("decode", 5)
            with pytest.raises(FlightLLMError) as info:
                ol.run(buf, 4, 2, s.channels)                 # len 2 on a 1-row stream
            got.append((type(info.value), str(info.value)))
            words = np.array(buf).view(np.uint32)
            seg_off = isa.image_table(words)[1][0]            # core 1's stream
            seg = words[seg_off:].tolist()
            pos = 0
            while True:                                       # its first static HBM load
                insn, size = isa.decode_one(seg, pos)
                if insn.op == "LD" and not insn.fields.get("remote", 0) \
                        and not insn.fields.get("dyn", 0) and not insn.fields.get("wfmt", 0):
                    break
                pos += size
            new = isa.encode(isa.Instruction("LD", **{**insn.fields, "hbm_addr": 2 ** 27}))
            words[seg_off + pos:seg_off + pos + len(new)] = new
            buf[:] = words.view(np.uint8)
            buf.sync_to_device()
            with pytest.raises(FlightLLMError) as info:
                s.run("decode", [5], 4)
            got.append((type(info.value), str(info.value)))
            del s.images[st.name]
            s.run("decode", [5], 4)                           # a fresh image runs again
    assert got[:2] == got[2:]
    assert "exceeds the 1 rows" in got[0][1] and "not inside one allocated buffer" in got[1][1]


def test_schedule_check_refuses_what_the_reference_refuses():
    ld = isa.Instruction("LD", buf=0, rows=0, wait=1 << 4)            # waits on MISC: never met
    end, barrier = isa.Instruction("SYS", op="end"), isa.Instruction("SYS", op="barrier")
    as_stream = lambda *insns: [(i.op, i.fields, n) for n, i in enumerate(insns)]
    assert fastpath.schedule_ok([as_stream(end), as_stream(end)])
    assert not fastpath.schedule_ok([as_stream(ld, end)])
    assert not fastpath.schedule_ok([as_stream(barrier, end), as_stream(end)])
    rel = isa.Instruction("LD", buf=0, rows=0, release=1 << 4)         # never consumed
    assert not fastpath.schedule_ok([as_stream(rel, end)])


@pytest.mark.parametrize("scale", [1, 127])
def test_one_fp32_product_only_where_its_bound_proves_it_exact(scale):
    """K > 1024: small activations take one FP32 product, large ones the chunked path; both
    equal the INT64 reference, including a row whose plain FP32 sum would round."""
    rng = np.random.default_rng(scale)
    k, n = 2048, 24
    a = rng.integers(-scale, scale + 1, (3, k)).astype(np.int8)
    a[0] = scale                                      # a row of large equal terms
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    w[0] = 127
    want = (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.float32)
    got = U.mpe_fp32_acc(a, np.ascontiguousarray(w.T.astype(np.float32)))
    assert np.array_equal(got, want)
    assert want.max() > 2 ** 24 or scale == 1
