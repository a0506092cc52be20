"""The ISA: round trips, field limits, illegal words, disassembly, images, docs/isa.md tables."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flightllm_overlay.spec import isa
from flightllm_overlay.config import UNITS
from flightllm_overlay.errors import FlightLLMError, IllegalInstructionError
from flightllm_overlay.spec.isa import FORMATS, Instruction
from flightllm_overlay.spec.isa_doc import DOCS, ENUM_MEANING, docs_section, render_field_tables


# ---------------------------------------------------------------------------------------------
# Helpers: legal field ranges, and an independent bit packer following the documented convention
# ---------------------------------------------------------------------------------------------
def own_bit(op) -> int:
    return 1 << UNITS.index(FORMATS[op].unit)


def field_max(op, name) -> int:
    """Largest legal value of a field (the encoder must accept it and reject max + 1)."""
    if name in ("wait", "release"):
        return 63 & ~own_bit(op)
    if (op, name) in isa._ENUMS:
        return len(isa._ENUMS[(op, name)]) - 1
    if (op, name) in (("ST", "remote"), ("ST", "stripe"), ("ST", "wfmt"), ("ST", "wcodes")):
        return 0
    if op in ("MM", "MV") and name == "wcodes":
        return len(isa.WEIGHT_GROUPS)
    if (op, name) == ("MV", "m"):
        return isa.MV_MAX_ROWS
    return (1 << dict(FORMATS[op].fields)[name]) - 1


def all_fields():
    return [(op, name) for op, fmt in FORMATS.items()
            for name in ("wait", "release") + tuple(n for n, _ in fmt.fields)]


def raw_words(op, /, **fields) -> list:
    """Pack fields without any check: bit i of the string is bit i % 32 of word i // 32."""
    fmt = FORMATS[op]
    bits = [0] * (32 * fmt.words)
    pos = 0
    for name, width in (("opcode", 4), ("wait", 6), ("release", 6)) + fmt.fields:
        v = fmt.opcode if name == "opcode" else fields.get(name, 0)
        for i in range(width):
            bits[pos + i] = v >> i & 1
        pos += width
    return [sum(bits[32 * w + i] << i for i in range(32)) for w in range(fmt.words)]


def legal_instructions(op):
    strategies = {name: st.integers(0, field_max(op, name)) for name, _ in FORMATS[op].fields}
    for mask in ("wait", "release"):
        strategies[mask] = st.integers(0, 63).map(lambda m, op=op: m & ~own_bit(op))
    return st.fixed_dictionaries(strategies).map(lambda f: Instruction(op, **_legal_stripe(op, f)))


def _legal_stripe(op, f):
    """Striping, packed loads and sparse matrices have preconditions: clear them where unmet."""
    k, bits = f.get("wk", 0), isa.WEIGHT_BITS[f.get("wbits", 0)]
    if f.get("wfmt") and (op == "ST" or f.get("remote") or f.get("buf", 0) or f.get("dyn", 0)
                          or (bits < 8 and k % isa.WEIGHT_GROUPS[f.get("wgroup", 0)])
                          or (f.get("sparse") and (k % 16 or f.get("rows", 0) % 16))):
        f = dict(f, wfmt=0)
    if op in ("MM", "MV") and f.get("sparse") and (
            f.get("wt") or f.get("n", 0) % 16 or f.get("k", 0) % 16 or f.get("dyn_n")
            or f.get("dyn_k") or f.get("w_stride")):
        f = dict(f, sparse=0)
    if op == "MISC":            # flags only with the operations that take them
        mop = isa.MISC_OPS[f.get("op", 0)]
        f = dict(f, **{flag: f.get(flag, 0) if mop in ops else 0
                       for flag, (ops, _) in isa.MISC_FLAG_OPS.items()})
        for one, other in isa.MISC_FLAG_CONFLICTS:     # and never two that exclude each other
            if f.get(one) and f.get(other):
                f = dict(f, **{one: 0})
        if f.get("residual") and f.get("rows", 0) > 1 and \
                0 < f.get("a_stride", 0) < 2 * f.get("k", 0):
            f = dict(f, residual=0)           # the residual's rows must not overlap
    if op in ("LD", "ST") and f.get("wcodes") and (
            not f.get("wfmt") or bits == 8 or f.get("sparse")):
        f = dict(f, wcodes=0)                 # codes of dense low-bit packed tiles only
    if op in ("MM", "MV") and f.get("wcodes") and (
            f["wcodes"] > len(isa.WEIGHT_GROUPS) or f.get("sparse") or f.get("wt")
            or f.get("dyn_n") or f.get("dyn_k")
            or f.get("k", 0) % isa.WEIGHT_GROUPS[min(f["wcodes"], 4) - 1]
            or 0 < f.get("w_stride", 0) < f.get("k", 0) * 5 // 4):
        f = dict(f, wcodes=0)                 # dense rows of whole groups, static shape
    group = isa.ACT_GROUPS[f.get("agroup", 0)] if op in ("MM", "MV", "MISC") else 0
    if group and (f.get("k", 0) % group or f.get("dyn_k") or f.get("dyn_n")):
        f = dict(f, agroup=0)                 # whole groups of a static row length
    stripe = f.get("stripe", 0)
    if stripe and (op == "ST" or f.get("remote") or stripe > 1 and (
            (f.get("rows", 0) > 1 and not f.get("wfmt")) or f.get("row_bytes", 0) % stripe)):
        f = dict(f, stripe=0)
    return f


ANY_INSTRUCTION = st.one_of(*[legal_instructions(op) for op in FORMATS])


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(ANY_INSTRUCTION)
def test_random_legal_instruction_round_trips(insn):
    words = isa.encode(insn)
    fmt = FORMATS[insn.op]
    assert len(words) == fmt.words and all(0 <= w < 2 ** 32 for w in words)
    assert words == raw_words(insn.op, **insn.fields)       # the documented packing convention
    back, n = isa.decode_one(words)
    assert n == fmt.words and back == insn
    assert all(back[name] == insn[name] for name, _, _ in fmt.layout[1:])


@settings(max_examples=100, deadline=None)
@given(st.lists(ANY_INSTRUCTION, max_size=12))
def test_random_stream_round_trips(insns):
    words = isa.encode_stream(insns)
    assert words.dtype == np.uint32
    assert len(words) == sum(FORMATS[i.op].words for i in insns)
    assert isa.decode_stream(words) == insns


# the operation a field is legal with (the others refuse it)
FIELD_CONTEXT = {("MISC", "amax"): dict(op=isa.MISC_OPS.index("rmsnorm")),
                 ("MISC", "given_max"): dict(op=isa.MISC_OPS.index("quant")),
                 ("MISC", "diffuse"): dict(op=isa.MISC_OPS.index("quant")),
                 ("MISC", "residual"): dict(op=isa.MISC_OPS.index("quant")),
                 ("MISC", "agroup"): dict(op=isa.MISC_OPS.index("quant")),
                 ("LD", "wcodes"): dict(wfmt=isa.WEIGHT_FORMATS.index("packed"))}


@pytest.mark.parametrize("op, name", all_fields())
def test_every_field_at_its_limits(op, name):
    hi = field_max(op, name)
    ctx = FIELD_CONTEXT.get((op, name), {})
    for value in (0, hi):
        insn = Instruction(op, **ctx, **{name: value})
        back, _ = isa.decode_one(isa.encode(insn))
        assert back[name] == value and back == insn
    with pytest.raises(IllegalInstructionError):
        isa.encode(Instruction(op, **ctx, **{name: hi + 1}))
    with pytest.raises(IllegalInstructionError, match="does not fit"):
        isa.encode(Instruction(op, **{name: -1}))


@pytest.mark.parametrize("op, name", all_fields())
def test_field_one_past_its_width_overflows(op, name):
    width = 6 if name in ("wait", "release") else dict(FORMATS[op].fields)[name]
    with pytest.raises(IllegalInstructionError, match=rf"{op}\.{name}=.*{width}-bit field"):
        isa.encode(Instruction(op, **{name: 1 << width}))


def test_fields_land_on_their_documented_bits():
    for op, fmt in FORMATS.items():
        for name, off, bits in fmt.layout[1:]:
            hi = field_max(op, name)
            ctx = FIELD_CONTEXT.get((op, name), {})
            for bit in {(hi & -hi).bit_length() - 1, hi.bit_length() - 1} - {-1}:
                words = isa.encode(Instruction(op, **ctx, **{name: 1 << bit}))
                expect = [fmt.opcode] + [0] * (fmt.words - 1)
                expect[(off + bit) // 32] |= 1 << ((off + bit) % 32)
                for cname, cval in ctx.items():     # the operation it is legal with
                    coff = next(o for n, o, _ in fmt.layout if n == cname)
                    for cbit in range(cval.bit_length()):
                        if cval >> cbit & 1:
                            expect[(coff + cbit) // 32] |= 1 << ((coff + cbit) % 32)
                assert words == expect, (op, name, bit)


def test_enum_names_and_unit_lists_are_accepted():
    insn = Instruction("LD", buf="gbuf", dyn="history", wait=["MM", "MISC"], release={"ST"})
    assert insn["buf"] == isa.BUFFERS.index("gbuf")
    assert insn["dyn"] == isa.DYN_MODES.index("history")
    assert isa.mask_units(insn["wait"]) == ("MM", "MISC")
    assert isa.mask_units(insn["release"]) == ("ST",)
    assert Instruction("MISC", op="quant")["op"] == isa.MISC_OPS.index("quant")
    assert Instruction("SYS", op="end")["op"] == 1


@given(st.floats(width=32, allow_nan=False))
def test_f32_bits_round_trip(x):
    assert isa.bits_f32(isa.f32_bits(x)) == x
    assert 0 <= isa.f32_bits(x) < 2 ** 32


# ---------------------------------------------------------------------------------------------
# Illegal words and instructions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opcode", [c for c in range(16) if c not in isa.BY_OPCODE])
def test_unknown_opcode_is_rejected(opcode):
    with pytest.raises(IllegalInstructionError, match=f"opcode {opcode:#x}.*not in the ISA"):
        isa.decode_stream(isa.encode(Instruction("SYS", op="end")) + [0xABCD0 | opcode])


@pytest.mark.parametrize("op", [op for op in FORMATS if FORMATS[op].words > 1])
def test_truncated_stream_is_rejected(op):
    words = isa.encode(Instruction(op))
    with pytest.raises(IllegalInstructionError, match=f"{op} needs {len(words)} words"):
        isa.decode_stream(words[:-1])
    with pytest.raises(IllegalInstructionError, match="ends at word"):
        isa.decode_one(words, len(words))


@pytest.mark.parametrize("op", list(FORMATS))
def test_reserved_bits_must_be_zero(op):
    fmt = FORMATS[op]
    assert fmt.bits < 32 * fmt.words
    for bit in (fmt.bits, 32 * fmt.words - 1):
        words = raw_words(op)
        words[bit // 32] |= 1 << (bit % 32)
        with pytest.raises(IllegalInstructionError, match="non-zero reserved bits"):
            isa.decode_one(words)


@pytest.mark.parametrize("op", list(FORMATS))
@pytest.mark.parametrize("mask", ["wait", "release"])
def test_masks_naming_the_own_queue_are_rejected(op, mask):
    with pytest.raises(IllegalInstructionError, match="own queue"):
        isa.decode_one(raw_words(op, **{mask: own_bit(op)}))
    with pytest.raises(IllegalInstructionError, match="own queue"):
        isa.encode(Instruction(op, **{mask: [FORMATS[op].unit]}))


@pytest.mark.parametrize("op, name, value, match", [
    ("MV", "m", 17, "MV handles at most 16 rows"),
    ("MV", "m", 255, "MV handles at most 16 rows"),
    ("ST", "remote", 1, "ST cannot target a remote core"),
    ("LD", "buf", len(isa.BUFFERS), "LD.buf"),
    ("ST", "dyn", len(isa.DYN_MODES), "ST.dyn"),
    ("MISC", "op", len(isa.MISC_OPS), "MISC.op"),
    ("SYS", "op", len(isa.SYS_OPS), "SYS.op"),
])
def test_semantically_illegal_words_are_rejected(op, name, value, match):
    with pytest.raises(IllegalInstructionError, match=match):
        isa.decode_one(raw_words(op, **{name: value}))
    with pytest.raises(IllegalInstructionError, match=match):
        isa.encode(Instruction(op, **{name: value}))


@pytest.mark.parametrize("op, fields, match", [
    ("LD", dict(wfmt=1, buf=1), "static LDs of weight rows into the weight buffer"),
    ("LD", dict(wfmt=1, dyn=2), "static LDs"),
    ("LD", dict(wfmt=1, remote=1), "static LDs"),
    ("LD", dict(wfmt=1, wbits=2, wgroup=1, wk=48), "not a whole number of groups of 32"),
    ("LD", dict(wfmt=1, wbits=3, sparse=1, rows=8, wk=32), "multiples of 16"),
    ("MV", dict(sparse=1, n=16, k=24, nnz=4), "whole 16x16 blocks"),
    ("MM", dict(sparse=1, n=16, k=16, wt=1, nnz=4), "no wt"),
    ("MV", dict(sparse=1, n=16, k=16, dyn_n=1, nnz=4), "no dynamic"),
    ("MM", dict(agroup=1, k=48), "whole number of groups"),
    ("MV", dict(agroup=2, k=128, dyn_k=1), "static"),
    ("MISC", dict(op=isa.MISC_OPS.index("quant"), out_abuf=1, agroup=3, k=192),
     "whole number of groups"),
    ("MISC", dict(op=isa.MISC_OPS.index("quant"), out_abuf=1, agroup=1, k=64, given_max=1),
     "agroup and given_max"),
    ("MISC", dict(op=isa.MISC_OPS.index("quant"), out_abuf=1, agroup=1, k=64, diffuse=1),
     "agroup and diffuse"),
    ("MISC", dict(op=isa.MISC_OPS.index("quant"), out_abuf=1, agroup=1, k=64, residual=1),
     "agroup and residual"),
])
def test_illegal_packed_loads_and_sparse_matrices_are_rejected(op, fields, match):
    with pytest.raises(IllegalInstructionError, match=match):
        isa.encode(Instruction(op, **fields))
    with pytest.raises(IllegalInstructionError, match=match):
        isa.decode_one(raw_words(op, **fields))


def test_bad_instruction_objects_are_rejected():
    with pytest.raises(IllegalInstructionError, match="unknown instruction 'GEMM'"):
        Instruction("GEMM")
    with pytest.raises(IllegalInstructionError, match="MM has no field 'rows'"):
        Instruction("MM", rows=3)
    with pytest.raises(IllegalInstructionError, match="not a legal value"):
        Instruction("LD", buf="dram")
    with pytest.raises(IllegalInstructionError, match="not a legal value"):
        Instruction("MM", m="eight")
    assert issubclass(IllegalInstructionError, FlightLLMError)


# ---------------------------------------------------------------------------------------------
# Disassembly
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("insn, parts", [
    (Instruction("LD", buf="gbuf", dyn="at_pos", channel=12, hbm_addr=0x100, buf_addr=0x40,
                 rows=4, row_bytes=64, hbm_stride=128, buf_stride=64, wait=["MM"],
                 release=["MISC", "ST"]),
     ["LD", "gbuf[0x40+r*64]", "hbm12[0x100+r*128]", "rows=4x64B", "dyn=at_pos", "wait=MM",
      "rel=ST|MISC"]),
    (Instruction("LD", buf="wbuf", channel=4, stripe=8, rows=32, row_bytes=1024, wfmt="packed",
                 wk=64, wbits=2, wgroup=1, sparse=1, meta_addr=0x10, fsb_addr=0x8, wn=80,
                 wmeta=320),
     ["LD", "hbm4x8ch", "w4g32->int8 k=64", "sparse kept=16*80", "meta[0x10+320]", "fsb[0x8]"]),
    (Instruction("MV", m=1, n=32, k=64, sparse=1, nnz=40, meta_addr=0x20, meta_len=96,
                 fsb_addr=0x4),
     ["MV", "m=1 n=32 k=64", "sparse kept=16*40", "meta[0x20+96]", "fsb[0x4]"]),
    (Instruction("LD", buf="abuf", remote=1, remote_core=2, hbm_addr=0x40, hbm_stride=8,
                 buf_addr=0x80, rows=3, row_bytes=8),
     ["LD", "core2.abuf[0x40+r*8]", "abuf[0x80", "rows=3x8B"]),
    (Instruction("ST", buf="wbuf", channel=5, hbm_addr=0x2000, rows=1, row_bytes=16),
     ["ST", "hbm5[0x2000", "wbuf[0x0", "rows=1x16B"]),
    (Instruction("MM", m=64, n=32, k=4096, a_addr=0x10, a_scale=0x20, w_addr=0x30,
                 w_scale=0x40, out_addr=0x50, wt=1, dyn_k=1),
     ["MM", "gbuf[0x50]", "abuf[0x10]", "s@0x20", "wbuf[0x30]", "s@0x40", "m=64", "n=32",
      "k=4096", "wt", "dyn_k"]),
    (Instruction("MV", m=1, n=7, k=9, no_wscale=1, release=["MISC"]),
     ["MV", "m=1", "n=7", "k=9", "no_wscale", "rel=MISC"]),
    (Instruction("MISC", op="softmax", rows=8, k=48, groups=4, causal=1, dyn_k=1,
                 a_addr=0x100, out_addr=0x200, imm=isa.f32_bits(0.125)),
     ["MISC", "softmax", "out@0x200", "a@0x100", "rows=8", "k=48", "g=4", "imm=0.125",
      "dyn_k", "causal"]),
    (Instruction("MISC", op="quant", out_abuf=1, out2_addr=0x300, rows=2, k=16),
     ["quant", "out2@0x300", "out_abuf"]),
    (Instruction("SYS", op="barrier", wait=["MM", "LD"]), ["SYS", "barrier", "wait=LD|MM"]),
    (Instruction("SYS", op="end"), ["SYS", "end"]),
])
def test_disassembly_names_opcode_and_key_fields(insn, parts):
    text = isa.disassemble_one(insn)
    assert text == str(insn)
    for part in parts:
        assert part in text, (part, text)


def test_listing_prefixes_word_offsets():
    insns = [Instruction("LD", rows=1), Instruction("MM", m=1), Instruction("SYS", op="end")]
    lines = isa.disassemble(isa.encode_stream(insns)).splitlines()
    offsets = [0, FORMATS["LD"].words, FORMATS["LD"].words + FORMATS["MM"].words]
    assert [line.split(":")[0] for line in lines] == [f"{o:08x}" for o in offsets]
    assert [line.split(": ", 1)[1].split()[0] for line in lines] == ["LD", "MM", "SYS"]
    assert isa.disassemble(insns, start_pc=0x10).startswith("00000010: LD")


# ---------------------------------------------------------------------------------------------
# Instruction image
# ---------------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, 2 ** 32 - 1), max_size=20), min_size=1, max_size=4))
def test_image_round_trip(streams):
    image = isa.pack_image(streams)
    assert image.dtype == np.uint32
    head = isa.IMAGE_HEADER_WORDS + 2 * len(streams)
    assert list(image[:4]) == [isa.IMAGE_MAGIC, isa.IMAGE_VERSION, len(streams), len(image)]
    assert len(image) == head + sum(map(len, streams))
    table = isa.image_table(image)
    assert len(table) == len(streams)
    assert table[0][0] == head
    for (off, n), s in zip(table, streams):
        assert n == len(s) and list(image[off:off + n]) == s


def test_image_magic_spells_fllm():
    assert isa.pack_image([[]])[:1].tobytes() == b"FLLM"


@pytest.mark.parametrize("word, value, match", [
    (0, 0x12345678, "no instruction image"),
    (1, isa.IMAGE_VERSION + 1, f"version {isa.IMAGE_VERSION + 1} is not supported"),
    (3, 5, "points past the image end"),
    (2, 40, "table"),
])
def test_bad_image_headers_are_rejected(word, value, match):
    image = isa.pack_image([isa.encode(Instruction("SYS", op="end"))] * 3)
    image[word] = value
    with pytest.raises(IllegalInstructionError, match=match):
        isa.image_table(image)


def test_short_image_is_rejected():
    with pytest.raises(IllegalInstructionError, match="no instruction image"):
        isa.image_table(np.zeros(2, np.uint32))


# ---------------------------------------------------------------------------------------------
# docs/isa.md cannot drift from isa.FORMATS
# ---------------------------------------------------------------------------------------------
def test_every_field_and_enum_value_has_a_meaning():
    for op, fmt in FORMATS.items():
        assert set(fmt.meaning) == {n for n, _, _ in fmt.layout}, op
        assert all(text.strip() for text in fmt.meaning.values()), op
    for name, values in (("UNITS", UNITS), ("BUFFERS", isa.BUFFERS), ("DYN_MODES", isa.DYN_MODES),
                         ("MISC_OPS", isa.MISC_OPS), ("SYS_OPS", isa.SYS_OPS),
                         ("SYS_FENCES", isa.SYS_FENCES),
                         ("WEIGHT_FORMATS", isa.WEIGHT_FORMATS), ("WEIGHT_BITS", isa.WEIGHT_BITS),
                         ("WEIGHT_GROUPS", isa.WEIGHT_GROUPS)):
        assert set(ENUM_MEANING[name]) == set(values), name


def test_docs_contain_exactly_the_generated_tables():
    section = docs_section(DOCS.read_text())
    assert section == render_field_tables(), (
        "docs/isa.md is out of date with isa.FORMATS: "
        "run `python -m flightllm_overlay.spec.isa_doc --write`")


def test_generated_tables_describe_every_bit():
    text = render_field_tables()
    for fmt in FORMATS.values():
        block = text.split(f"#### {fmt.name}:", 1)[1].split("####", 1)[0]
        spans = [(int(a), int(b)) for a, b in re.findall(r"\| (\d+) \| (\d+) \| \[", block)]
        assert spans[0][0] == 0 and sum(w for _, w in spans) == 32 * fmt.words
        assert all(o1 + w1 == o2 for (o1, w1), (o2, _) in zip(spans, spans[1:]))


@pytest.mark.parametrize("field, op", [("amax", "eadd"), ("amax", "quant"), ("given_max", "emul"),
                                       ("diffuse", "softmax"), ("residual", "rmsnorm"),
                                       ("agroup", "eadd")])
def test_quant_and_row_maxima_fields_only_with_their_operations(field, op):
    with pytest.raises(IllegalInstructionError, match=field):
        isa.encode(Instruction("MISC", op=isa.MISC_OPS.index(op), **{field: 1}))


def test_a_quant_residual_needs_rows_that_do_not_overlap():
    """The residual is written over a row by row: overlapping rows would read written ones."""
    quant = dict(op=isa.MISC_OPS.index("quant"), out_abuf=1, residual=1, rows=4, k=64)
    for ok in (dict(a_stride=0), dict(a_stride=128), dict(a_stride=64, rows=1)):
        isa.encode(Instruction("MISC", **{**quant, **ok}))
    with pytest.raises(IllegalInstructionError, match="must not overlap"):
        isa.encode(Instruction("MISC", **quant, a_stride=126))
