"""Program files are checked end to end: header digest and schema, tensor table, tensor digests,
limits on every size; saves are atomic with unique temporary files; programs are bound to their
model's tokenizer."""
from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
from program_files import header_of, split, with_header

from flightllm_overlay.compiler import Program
from flightllm_overlay.errors import ProgramError


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_program):
    path = tiny_program.save(tmp_path_factory.mktemp("prog") / "tiny.fllm")
    return path, path.read_bytes()


def _load(tmp_path, raw: bytes, name="x.fllm"):
    p = tmp_path / name
    p.write_bytes(raw)
    return Program.load(p)


def test_round_trip_is_memory_mapped_and_read_only(saved, tiny_program):
    back = Program.load(saved[0])
    assert back.model == tiny_program.model and back.io == tiny_program.io
    assert set(back.steps) == set(tiny_program.steps)
    for name, st in tiny_program.steps.items():
        np.testing.assert_array_equal(back.steps[name].image, st.image)
    for ch, img in tiny_program.channel_static.items():
        np.testing.assert_array_equal(back.channel_static[ch], img)
    assert not back.embedding.flags.writeable          # a memory map, not a copy
    assert back.meta["identity"]["name"] == tiny_program.model["name"]


def test_identical_streams_are_stored_once(tmp_path, tiny_program):
    """Steps and buckets with the same instruction image share one tensor (the weights are
    stored once per channel whatever the number of steps)."""
    import dataclasses
    prog = copy.copy(tiny_program)
    whole = tiny_program.steps["decode"]
    prog.steps = {**tiny_program.steps, f"decode@{prog.ctx}": dataclasses.replace(
        whole, name=f"decode@{prog.ctx}")}
    table, _ = split(prog.save(tmp_path / "p.fllm").read_bytes())
    streams = [k for k in table if k.startswith("stream/")]
    distinct = {st.image.tobytes() for st in tiny_program.steps.values()}   # (other tests may
    assert len(prog.steps) > len(distinct)                                  # have added buckets)
    assert len(streams) == len(distinct)        # the copy of `decode` costs no tensor of its own
    assert len([k for k in table if k.startswith("hbm/")]) == len(prog.channel_static)
    back = Program.load(tmp_path / "p.fllm")
    np.testing.assert_array_equal(back.steps[f"decode@{prog.ctx}"].image, whole.image)


@pytest.mark.parametrize("field, value", [
    (("io", 1, "vocab_start"), 113), (("io", 0, "logits_offset"), 1077250),
    (("io", 2, "input_offset"), 1048578), (("ctx",), 255), (("rows",), 127),
    (("model", "vocab_size"), 301)])
def test_a_changed_header_digit_is_refused(tmp_path, saved, field, value):
    """Finding 1: one digit changed in the header of a program (or cache entry) used to load and
    run with other results; now the header digest refuses it."""
    raw = saved[1]
    header = header_of(raw)
    node = header
    for k in field[:-1]:
        node = node[k]
    old = node[field[-1]]
    text = split(raw)[0]["__metadata__"]["flightllm"]
    needle = f'"{field[-1]}": {old}'
    assert needle in text
    bad = with_header(raw, None, redigest=False, text=text.replace(needle, f'"{field[-1]}": {value}', 1))
    with pytest.raises(ProgramError, match="SHA-256"):
        _load(tmp_path, bad)


def _mutated(raw, edit):
    h = header_of(raw)
    edit(h)
    return with_header(raw, h)


@pytest.mark.parametrize("edit, match", [
    (lambda h: h["io"][1].update(vocab_start=113), "cover"),          # a gap: logits unset
    (lambda h: h["io"][0].update(vocab_stop=300), "cover"),           # overlap
    (lambda h: h["io"][0].update(logits_offset=10**9), "io"),
    (lambda h: h["io"][0].update(input_offset=0), "static image"),    # would overwrite weights
    (lambda h: h["io"][0].update(input_channel=1), "core 0"),
    (lambda h: h["io"].pop(), "one entry per core"),
    (lambda h: h.update(rows=10**9), "rows"),
    (lambda h: h.update(ctx=-1), "ctx"),
    (lambda h: h.update(ctx="256"), "ctx"),
    (lambda h: h["model"].update(vocab_size=10**9), "vocab_size"),
    (lambda h: h["model"].update(dim=10**9), "dim"),
    (lambda h: h["model"].update(n_heads=7), "model shape"),
    (lambda h: h["model"].update(rope_theta=0.0), "model shape"),
    (lambda h: h["model"].update(colour="red"), "unknown"),
    (lambda h: h["channel_size"].update({"0": 10**12}), "channel_size"),
    (lambda h: h["channel_size"].update({"99": 64}), "channel"),
    (lambda h: h["steps"]["decode"].update(rows=4), "decode"),
    (lambda h: h["steps"]["prefill"].update(rows=10**9), "rows"),
    (lambda h: h["steps"]["prefill"].update(all_logits="yes"), "all_logits"),
    (lambda h: h["steps"].update({"evil": h["steps"]["decode"]}), "step name"),
    (lambda h: h["steps"].pop("prefill"), "prefill"),
    (lambda h: h["steps"]["decode"].update(image="stream/" + "0" * 32), "image"),
    (lambda h: h.pop("steps"), "steps"),
    (lambda h: h.pop("io"), "io"),
    (lambda h: h.update(target="nonexistent"), "target"),
    (lambda h: h.update(format_version=1), "format"),
    (lambda h: h.update(isa_version=99), "ISA"),
    (lambda h: h["tensors"].update(embedding="00"), "tensors"),
    (lambda h: h["tensors"].pop("embedding"), "tensors"),
    (lambda h: h["meta"].update(identity={"name": 3}), "identity"),
    (lambda h: h.pop("placement"), "placement"),
    (lambda h: h["placement"].update(colour="red"), "placement must hold"),
    (lambda h: h["placement"].update(weight_slots=1), "weight_slots"),
    (lambda h: h["placement"].update(fused="yes"), "fused"),
    (lambda h: h["placement"]["schedule"].update(turbo=True), "schedule"),
    (lambda h: h["placement"]["schedule"].update(stripe_all=1), "stripe_all"),
    (lambda h: h["placement"]["weights"].pop(), "one object per layer"),
    (lambda h: h["placement"]["weights"][0].update(wq="packed/5/32"), "wq"),
    (lambda h: h["placement"]["weights"][0].update({"W Q": "int8"}), "names a weight"),
    (lambda h: h["placement"].update(lm_head="packed/4/32/sparse"), "codes/lm_head"),
    (lambda h: h["placement"].update(attn_pattern=[[[0, 99]]]), "attn_pattern"),
])
def test_a_crafted_header_gives_a_program_error(tmp_path, saved, edit, match):
    """Findings 1 and 6: headers with a valid digest but inconsistent or absurd values (1e9
    sizes, wrong types, missing keys) are refused by the schema with ProgramError, before
    anything is allocated; never KeyError, TypeError, ValueError or MemoryError."""
    with pytest.raises(ProgramError, match=match):
        _load(tmp_path, _mutated(saved[1], edit))
    assert Program.load(saved[0]).ctx == header_of(saved[1])["ctx"]     # the good file still loads


@pytest.mark.parametrize("n", range(0, 17))
def test_short_files_give_a_program_error(tmp_path, n):
    """Finding 6: files of 8 to 15 bytes raised struct.error."""
    with pytest.raises(ProgramError):
        _load(tmp_path, (b"FLLMPROG" + bytes(range(40)))[:n] if n % 2 else b"\x07" * n)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
def test_truncated_and_bit_flipped_files_are_refused(tmp_path, saved, cut):
    raw = saved[1]
    with pytest.raises(ProgramError):
        _load(tmp_path, raw[:int(len(raw) * cut)])
    flipped = bytearray(raw)
    flipped[int(len(raw) * cut)] ^= 0x01
    with pytest.raises(ProgramError):
        _load(tmp_path, bytes(flipped))


def test_tensor_table_must_match_the_header(tmp_path, saved):
    import json
    import struct
    table, data = split(saved[1])
    name = next(k for k in table if k.startswith("hbm/"))
    table[name]["dtype"] = "I8"
    head = json.dumps(table).encode()
    with pytest.raises(ProgramError, match="must be U8"):
        _load(tmp_path, struct.pack("<Q", len(head)) + head + data)
    huge = struct.pack("<Q", 10**9) + b"{}"
    with pytest.raises(ProgramError, match="header length"):
        _load(tmp_path, huge)


def test_an_old_format_file_says_recompile(tmp_path, saved):
    with pytest.raises(ProgramError, match="format 1"):
        _load(tmp_path, b"FLLMPROG" + b"\x01\x00\x00\x00" + b"\x02\x00\x00\x00{}")
    # format 2 had no placement recipe: its loaded programs could not compile their buckets
    old = _mutated(saved[1], lambda h: (h.pop("placement"), h.update(format_version=2)))
    with pytest.raises(ProgramError, match="program format 2; this version reads 3: recompile"):
        _load(tmp_path, old)


def test_concurrent_saves_of_one_path_all_succeed(tmp_path, tiny_program):
    """Finding 7: every save wrote `<name>.tmp`, so two writers raced (FileNotFoundError)."""
    path, errors = tmp_path / "same.fllm", []

    def save():
        try:
            for _ in range(3):
                tiny_program.save(path)
        except Exception as exc:        # noqa: BLE001  every failure is what we count
            errors.append(exc)
    threads = [threading.Thread(target=save) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Program.load(path).ctx == tiny_program.ctx
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.fllm"]


def test_a_failed_save_leaves_no_temporary_file(tmp_path, tiny_program, monkeypatch):
    import os
    def broken_replace(*a):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ProgramError, match="disk full"):
        tiny_program.save(tmp_path / "p.fllm")
    assert list(tmp_path.iterdir()) == []


def test_saving_onto_a_folder_or_an_unwritable_place(tmp_path, tiny_program):
    import os
    with pytest.raises(ProgramError, match="is a folder"):
        tiny_program.save(tmp_path)
    path = tiny_program.save(tmp_path / "new" / "dir" / "p.fllm")    # folders are created
    assert Program.load(path).ctx == tiny_program.ctx
    if os.geteuid() != 0:                  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ProgramError, match="cannot write"):
            tiny_program.save(locked / "p.fllm")
    with pytest.raises(ProgramError, match="cannot write"):
        tiny_program.save(path / "below-a-file.fllm")


def test_another_models_tokenizer_is_refused(tiny_program, tiny_ckpt, sim_overlay):
    """Finding 4: a program ran silently with another model's tokenizer."""
    from tokenizers import Tokenizer as Backend
    from tokenizers.models import WordLevel

    from flightllm_overlay.model.tokenizer import Tokenizer
    from flightllm_overlay.runtime import Generator, Session
    other = Tokenizer(Backend(WordLevel({f"w{i}": i for i in range(50)}, unk_token="w0")))
    other.name = "some-other-model"
    with Session(sim_overlay, tiny_program) as session:
        with pytest.raises(ProgramError, match="some-other-model") as err:
            Generator(session, other)
        assert repr(tiny_program.model["name"]) in str(err.value)
        Generator(session, tiny_ckpt.tokenizer)      # its own tokenizer is fine


def test_logits_are_never_uninitialised(sim_overlay, tiny_program):
    """Session fills logits with zeros before the cores' ranges are copied in (with np.empty a
    range no core covers would be garbage)."""
    from flightllm_overlay.runtime import Session
    prog = copy.copy(tiny_program)
    prog.io = tiny_program.io[:1] + tiny_program.io[1:]
    with Session(sim_overlay, prog) as s:
        s.program.io = tiny_program.io[:2]          # the last core's range is left out
        logits = s.run("decode", [3], 0)
    assert np.all(logits[:, tiny_program.io[2].vocab_start:] == 0)
