"""The FlightLLM-style instruction set: a declarative table of formats, encode, decode, disassemble.

Every instruction is a little-endian sequence of 32-bit words.  Its bits form one bit string
(bit i lives in word i // 32, bit i % 32); fields are packed from bit 0 upward in the order the
tables of `isa_fields.py` list them.  The first three fields are common: `opcode` (4 bits),
`wait` and `release` (6 bits each, one bit per unit queue in `config.UNITS` order).  `docs/isa.md` documents
every field and each instruction's semantics; `tests/test_isa.py` holds the two equal.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..config import UNITS
from ..errors import ConfigError, IllegalInstructionError
from . import wformat
from .isa_fields import (HEADER, MATRIX_FIELDS, MISC_FIELDS, MISC_FLAG_CONFLICTS,  # noqa: F401
                         MISC_FLAG_OPS, MOVE_FIELDS, SYS_FENCES, SYS_FIELDS)

# ---------------------------------------------------------------------------------------------
# Enumerations
# ---------------------------------------------------------------------------------------------
BUFFERS = ("wbuf", "abuf", "gbuf", "meta", "fsb", "bias")       # on-chip buffer ids
DYN_MODES = ("static", "at_pos", "history", "step", "last")    # how LD/ST use run-time params
WEIGHT_FORMATS = ("int8", "packed")  # LD's dequantisation unit: HBM format -> INT8 in wbuf
WEIGHT_BITS = wformat.BITS          # LD `wbits`: code widths of packed weights
WEIGHT_GROUPS = wformat.GROUPS      # LD `wgroup`: group sizes of packed weights below 8 bits
SPARSE_BLOCK = wformat.BLOCK        # N:16 blocks of 16 x 16 weights
ACT_GROUPS = (0, 32, 64, 128)        # MISC quant / MM / MV `agroup`: channels per activation
                                     # scale (0: one scale per row)
ATTN_BLOCK = 64                      # block-sparse attention: 64-token query and key blocks


def attention_block_keep(q_pos, k_pos, sink: int, window: int):
    """Block-sparse attention pattern (`blk_sink`, `blk_win`; window 0 = dense): key position
    k_pos is kept for query position q_pos if causal and its 64-token block is one of the first
    `sink` blocks or within `window` blocks of the query's block (the diagonal block included)."""
    causal = k_pos <= q_pos
    if not window:
        return causal
    qb, kb = q_pos // ATTN_BLOCK, k_pos // ATTN_BLOCK
    return causal & ((kb < sink) | (qb - kb < window))
MISC_OPS = ("eadd", "emul", "softmax", "layernorm", "rmsnorm", "silu", "rope", "quant", "relu",
            "amax")
SYS_OPS = ("barrier", "end")


@dataclass(frozen=True)
class Format:
    """One instruction format: its opcode, executing unit and ordered bit fields."""

    name: str
    opcode: int
    unit: str
    table: tuple           # ((name, bits, meaning), ...) after the common header
    summary: str

    @cached_property
    def fields(self) -> tuple:
        """((name, bits), ...) after the common header, in bit order."""
        return tuple((name, bits) for name, bits, _ in self.table)

    @cached_property
    def meaning(self) -> dict:
        """What each field (header included) means; docs/isa.md's tables are generated from it."""
        return {name: text for name, _, text in HEADER + self.table}

    @cached_property
    def layout(self) -> tuple:
        """((name, bit offset, bits), ...) for every field, header included."""
        out, pos = [], 0
        for fname, bits, _ in HEADER + self.table:
            out.append((fname, pos, bits))
            pos += bits
        return tuple(out)

    @cached_property
    def bits(self) -> int:
        return sum(b for _, b, _ in HEADER + self.table)

    @cached_property
    def words(self) -> int:
        return -(-self.bits // 32)


FORMATS = {f.name: f for f in (
    Format("LD", 0x1, "LD", MOVE_FIELDS,
           "copy rows from an HBM pseudo-channel (or a remote core's buffer) into an on-chip buffer"),
    Format("ST", 0x2, "ST", MOVE_FIELDS,
           "copy rows from an on-chip buffer to an HBM pseudo-channel"),
    Format("MM", 0x3, "MM", MATRIX_FIELDS,
           "INT8 x INT8 matrix-matrix product with FP16 epilogue"),
    Format("MV", 0x4, "MV", MATRIX_FIELDS,
           "INT8 x INT8 matrix-vector product (M <= 16) with FP16 epilogue"),
    Format("MISC", 0x5, "MISC", MISC_FIELDS,
           "special-function unit: FP16 element-wise and two-phase row operations"),
    Format("SYS", 0xF, "SYS", SYS_FIELDS, "barrier across cores, or end of stream"),
)}
BY_OPCODE = {f.opcode: f for f in FORMATS.values()}
MV_MAX_ROWS = 16

_ENUMS = {("LD", "buf"): BUFFERS, ("ST", "buf"): BUFFERS, ("LD", "dyn"): DYN_MODES,
          ("LD", "wfmt"): WEIGHT_FORMATS,
          ("ST", "dyn"): DYN_MODES, ("MISC", "op"): MISC_OPS, ("SYS", "op"): SYS_OPS,
          ("SYS", "fence"): SYS_FENCES}


#: per opcode: the names its fields may have, and its enumerated fields with their values
_FIELD_NAMES = {op: frozenset(n for n, _ in fmt.fields) | {"wait", "release"}
                for op, fmt in FORMATS.items()}
_ENUM_FIELDS = {op: [(n, e) for (o, n), e in _ENUMS.items() if o == op] for op in FORMATS}
#: per opcode: (name, bit offset, mask) of each field of its layout, the opcode left out
_FIELD_MASKS = {op: [(n, off, (1 << bits) - 1) for n, off, bits in fmt.layout if n != "opcode"]
                for op, fmt in FORMATS.items()}


def check_target(t) -> None:
    """Refuse a target with more cores or pseudo-channels than the LD/ST fields can address."""
    ld = dict(FORMATS["LD"].fields)
    if t.cores > 1 << ld["remote_core"] or t.hbm_channels > 1 << ld["channel"]:
        raise ConfigError(f"target {t.name}: {t.cores} cores and {t.hbm_channels} pseudo-channels; "
                          f"the ISA addresses at most {1 << ld['remote_core']} cores (remote_core) "
                          f"and {1 << ld['channel']} channels (channel field): widen them in "
                          f"spec/isa.py, the simulator and the HLS header first")


def unit_mask(units) -> int:
    """Bit mask of unit queue names, e.g. unit_mask(["LD", "MISC"])."""
    mask = 0
    for u in units:
        mask |= 1 << UNITS.index(u)
    return mask


def mask_units(mask: int) -> tuple:
    return tuple(u for i, u in enumerate(UNITS) if mask >> i & 1)


def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


def bits_f32(b: int) -> float:
    return struct.unpack("<f", struct.pack("<I", b))[0]


# ---------------------------------------------------------------------------------------------
# Instruction objects
# ---------------------------------------------------------------------------------------------
class Instruction:
    """One instruction: an opcode name and its integer fields (missing fields are 0).

    Enumerated fields (`buf`, `dyn`, MISC/SYS `op`) may be given by name.
    """

    __slots__ = ("op", "fields")

    def __init__(self, op: str, /, **fields):
        names = _FIELD_NAMES.get(op)
        if names is None:
            raise IllegalInstructionError(f"unknown instruction {op!r}; the ISA has {list(FORMATS)}")
        clean = {}
        for name, value in fields.items():
            if name not in names:
                raise IllegalInstructionError(f"{op} has no field {name!r}; its fields are "
                                              f"{sorted(names)}")
            if isinstance(value, str):
                enum = _ENUMS.get((op, name))
                if enum is None or value not in enum:
                    raise IllegalInstructionError(f"{op}.{name}={value!r} is not a legal value"
                                                  + (f"; use one of {enum}" if enum else ""))
                value = enum.index(value)
            elif isinstance(value, (list, tuple, set, frozenset)) and name in ("wait", "release"):
                value = unit_mask(value)
            clean[name] = int(value)
        self.op = op
        self.fields = clean

    @property
    def unit(self) -> str:
        return FORMATS[self.op].unit

    def __getitem__(self, name):
        return self.fields.get(name, 0)

    def replace(self, **changes) -> "Instruction":
        merged = dict(self.fields)
        merged.update(changes)
        new = Instruction.__new__(Instruction)
        new.op, new.fields = self.op, {k: int(v) for k, v in merged.items()}
        return new

    def __eq__(self, other):
        return (isinstance(other, Instruction) and self.op == other.op
                and {k: v for k, v in self.fields.items() if v}
                == {k: v for k, v in other.fields.items() if v})

    def __hash__(self):
        return hash((self.op, tuple(sorted((k, v) for k, v in self.fields.items() if v))))

    def __repr__(self):
        return f"Instruction({self.op!r}, " + ", ".join(
            f"{k}={v}" for k, v in self.fields.items() if v) + ")"

    def __str__(self):
        return disassemble_one(self)


# ---------------------------------------------------------------------------------------------
# Encode / decode
# ---------------------------------------------------------------------------------------------
def encode(insn: Instruction) -> list:
    """The instruction's words (list of int). Raises IllegalInstructionError on a field overflow."""
    fmt = FORMATS[insn.op]
    value = 0
    for name, offset, bits in fmt.layout:
        v = fmt.opcode if name == "opcode" else insn.fields.get(name, 0)
        if not 0 <= v < (1 << bits):
            raise IllegalInstructionError(
                f"{insn.op}.{name}={v} does not fit its {bits}-bit field (0..{(1 << bits) - 1})")
        value |= v << offset
    _check_semantics(insn.op, {n: insn.fields.get(n, 0) for n, _, _ in fmt.layout})
    return [(value >> (32 * i)) & 0xFFFFFFFF for i in range(fmt.words)]


def encode_stream(insns) -> np.ndarray:
    """Encode a sequence of instructions into one uint32 array."""
    words = []
    for insn in insns:
        words.extend(encode(insn))
    return np.asarray(words, dtype=np.uint32)


def _check_semantics(op: str, f: dict) -> None:
    own = 1 << UNITS.index(FORMATS[op].unit)
    if f.get("wait", 0) & own or f.get("release", 0) & own:
        raise IllegalInstructionError(f"{op} waits on or releases to its own queue "
                                      f"({FORMATS[op].unit}); masks name other units only")
    for name, enum in _ENUM_FIELDS[op]:
        if f.get(name, 0) >= len(enum):
            raise IllegalInstructionError(f"{op}.{name}={f[name]} is not a legal value; "
                                          f"legal: {list(enumerate(enum))}")
    if op == "ST" and f.get("remote"):
        raise IllegalInstructionError("ST cannot target a remote core; remote access is LD only")
    if op in ("LD", "ST"):
        _check_packed_move(op, f)
    if op in ("MM", "MV"):
        _check_sparse_matrix(op, f)
        _check_act_group(op, f, f.get("k", 0))
        _check_code_operand(op, f)
    stripe = f.get("stripe", 0)
    if stripe and (op == "ST" or f.get("remote") or stripe > 1 and (
            (f.get("rows", 0) > 1 and not f.get("wfmt")) or f.get("row_bytes", 0) % stripe)):
        raise IllegalInstructionError(
            f"{op} with stripe={f['stripe']}: striping is for LD of one contiguous row whose "
            f"length divides into `stripe` equal chunks (got rows={f.get('rows', 0)}, "
            f"row_bytes={f.get('row_bytes', 0)})")
    if op == "MISC":
        mop = MISC_OPS[f.get("op", 0)]
        for flag, (ops, why) in MISC_FLAG_OPS.items():
            if f.get(flag) and mop not in ops:
                raise IllegalInstructionError(f"MISC {mop} with {flag}=1: {why}")
        for (one, other), why in MISC_FLAG_CONFLICTS.items():
            if f.get(one) and f.get(other):
                raise IllegalInstructionError(f"MISC {mop} with {one} and {other}: {why}")
        k, stride = f.get("k", 0), f.get("a_stride", 0)
        _check_act_group(op, f, k)
        if f.get("residual") and f.get("rows", 0) > 1 and stride and stride < 2 * k:
            raise IllegalInstructionError(
                f"MISC quant with residual=1 writes each row of a in place: a's rows must not "
                f"overlap (a_stride {stride} < 2 * k = {2 * k}); use a_stride 0 or >= 2 * k")
    if op == "MV" and f.get("m", 0) > MV_MAX_ROWS:
        raise IllegalInstructionError(f"MV handles at most {MV_MAX_ROWS} rows, got m={f['m']}; "
                                      f"use MM")


def _check_packed_move(op: str, f: dict) -> None:
    """A packed weight load (wfmt=packed) and its format fields; unused otherwise."""
    if not f.get("wfmt"):
        if f.get("wcodes"):
            raise IllegalInstructionError(f"{op} with wcodes=1 but no wfmt=packed: only a "
                                          f"dequantising LD can pass codes to the MPE")
        return
    bits, group = WEIGHT_BITS[f.get("wbits", 0)], WEIGHT_GROUPS[f.get("wgroup", 0)]
    k = f.get("wk", 0)
    if op == "ST" or f.get("remote") or f.get("buf", 0) != 0 or f.get("dyn", 0):
        raise IllegalInstructionError(f"{op} with wfmt=packed: dequantising loads are static LDs "
                                      f"of weight rows into the weight buffer")
    if bits < 8 and k % group:
        raise IllegalInstructionError(f"LD of {bits}-bit weights: wk={k} is not a whole number of "
                                      f"groups of {group}")
    if f.get("sparse") and (f.get("rows", 0) % SPARSE_BLOCK or k % SPARSE_BLOCK):
        raise IllegalInstructionError(f"sparse LD: rows={f.get('rows', 0)} and wk={k} must be "
                                      f"multiples of {SPARSE_BLOCK} (whole N:16 blocks)")
    if f.get("wcodes") and (bits == 8 or f.get("sparse")):
        raise IllegalInstructionError(f"LD with wcodes=1 passes the codes of a dense tile below "
                                      f"8 bits to the MPE; this tile is "
                                      f"{'sparse' if f.get('sparse') else '8-bit'}")


def code_group(wcodes: int) -> int:
    """Columns per (M, B) group of an MPE's code operand (MM/MV `wcodes`; 0: INT8 weights)."""
    if not wcodes:
        return 0
    if wcodes > len(WEIGHT_GROUPS):
        raise IllegalInstructionError(f"wcodes={wcodes} is not a legal value; legal: 0 (INT8 "
                                      f"weights) or 1..{len(WEIGHT_GROUPS)} (codes in groups of "
                                      f"{WEIGHT_GROUPS})")
    return WEIGHT_GROUPS[wcodes - 1]


def _check_code_operand(op: str, f: dict) -> None:
    """An MPE on codes with exact group arithmetic (`wcodes`): dense (N, K) rows of whole
    groups, static shape."""
    if not f.get("wcodes"):
        return
    group = code_group(f["wcodes"])
    k, stride = f.get("k", 0), f.get("w_stride", 0)
    if (f.get("sparse") or f.get("wt") or f.get("dyn_n") or f.get("dyn_k") or k % group
            or 0 < stride < k + 4 * k // group):
        raise IllegalInstructionError(
            f"{op} with wcodes (groups of {group}): the codes are dense (N, K) rows of whole "
            f"groups, each followed by its group parameters (no sparse, no wt, no dynamic n/k, "
            f"k={k} a multiple of {group}, w_stride={stride} 0 or at least k + 4 k / {group})")


def _check_act_group(op: str, f: dict, k: int) -> None:
    """Activation scales per group of `ACT_GROUPS[agroup]` channels: whole groups of a static
    row length."""
    group = ACT_GROUPS[f.get("agroup", 0)]
    if group and (k % group or f.get("dyn_k") or f.get("dyn_n")):
        raise IllegalInstructionError(
            f"{op} with agroup={f['agroup']} ({group} channels per activation scale): k={k} must "
            f"be a whole number of groups and static (no dyn_k or dyn_n)")


def _check_sparse_matrix(op: str, f: dict) -> None:
    """A sparse MM/MV walks packed 16x16 blocks; its sparse fields are unused otherwise."""
    if f.get("sparse") and (f.get("wt") or f.get("n", 0) % SPARSE_BLOCK
                            or f.get("k", 0) % SPARSE_BLOCK or f.get("dyn_n") or f.get("dyn_k")
                            or f.get("w_stride")):
        raise IllegalInstructionError(
            f"sparse {op}: weights are whole 16x16 blocks in the packed order (n and k multiples "
            f"of {SPARSE_BLOCK}, no wt, no dynamic n/k, w_stride 0)")


def decode_one(words, offset: int = 0):
    """Decode the instruction starting at `words[offset]`. Returns (Instruction, n_words)."""
    if offset >= len(words):
        raise IllegalInstructionError(f"instruction stream ends at word {offset}")
    opcode = int(words[offset]) & 0xF
    fmt = BY_OPCODE.get(opcode)
    if fmt is None:
        raise IllegalInstructionError(
            f"word {offset}: 0x{int(words[offset]):08x} has opcode {opcode:#x}, which is not in "
            f"the ISA (legal opcodes: {', '.join(f'{f.name}={f.opcode:#x}' for f in FORMATS.values())})")
    n = fmt.words
    if offset + n > len(words):
        raise IllegalInstructionError(f"word {offset}: {fmt.name} needs {n} words but the stream "
                                      f"has only {len(words) - offset} left")
    value = 0
    for i in range(n):
        value |= int(words[offset + i]) << (32 * i)
    if value >> fmt.bits:
        raise IllegalInstructionError(f"word {offset}: {fmt.name} has non-zero reserved bits")
    fields = {name: (value >> off) & mask for name, off, mask in _FIELD_MASKS[fmt.name]}
    _check_semantics(fmt.name, fields)
    insn = Instruction.__new__(Instruction)        # fields of the layout, ints: nothing to check
    insn.op, insn.fields = fmt.name, fields
    return insn, n


def decode_stream(words) -> list:
    """Decode a whole uint32 stream into a list of Instructions."""
    words = np.asarray(words, dtype=np.uint32).tolist()
    out, pos = [], 0
    while pos < len(words):
        insn, n = decode_one(words, pos)
        out.append(insn)
        pos += n
    return out


# ---------------------------------------------------------------------------------------------
# Disassembly
# ---------------------------------------------------------------------------------------------
def _deps(insn) -> str:
    w, r = mask_units(insn["wait"]), mask_units(insn["release"])
    s = ""
    if w:
        s += " wait=" + "|".join(w)
    if r:
        s += " rel=" + "|".join(r)
    return s


def disassemble_one(insn: Instruction) -> str:
    f = insn.fields.get
    op = insn.op
    if op in ("LD", "ST"):
        buf = BUFFERS[f("buf", 0)]
        dyn = DYN_MODES[f("dyn", 0)]
        stripe = f"x{f('stripe', 0)}ch" if f("stripe", 0) > 1 else ""
        src = (f"core{f('remote_core', 0)}.{buf}[{f('hbm_addr', 0):#x}+r*{f('hbm_stride', 0)}]"
               if f("remote", 0)
               else f"hbm{f('channel', 0)}{stripe}[{f('hbm_addr', 0):#x}+r*{f('hbm_stride', 0)}]")
        dst = f"{buf}[{f('buf_addr', 0):#x}+r*{f('buf_stride', 0)}]"
        a, b = (dst, src) if op == "LD" else (src, dst)
        text = f"{op:4s} {a} <- {b} rows={f('rows', 0)}x{f('row_bytes', 0)}B"
        if f("wfmt", 0):
            bits = WEIGHT_BITS[f("wbits", 0)]
            text += f" w{bits}" + (f"g{WEIGHT_GROUPS[f('wgroup', 0)]}" if bits < 8 else "")
            text += f"->{'codes' if f('wcodes', 0) else 'int8'} k={f('wk', 0)}"
            if f("sparse", 0):
                text += (f" sparse kept=16*{f('wn', 0)} meta[{f('meta_addr', 0):#x}+"
                         f"{f('wmeta', 0)}] fsb[{f('fsb_addr', 0):#x}]")
        if dyn != "static":
            text += f" dyn={dyn}"
    elif op in ("MM", "MV"):
        flags = [n for n in ("wt", "dyn_n", "dyn_k", "dyn_m", "no_wscale") if f(n, 0)]
        text = (f"{op:4s} gbuf[{f('out_addr', 0):#x}] <- abuf[{f('a_addr', 0):#x}]"
                f"(s@{f('a_scale', 0):#x}) x wbuf[{f('w_addr', 0):#x}](s@{f('w_scale', 0):#x}) "
                f"m={f('m', 0)} n={f('n', 0)} k={f('k', 0)} strides="
                f"{f('a_stride', 0)}/{f('w_stride', 0)}/{f('out_stride', 0)}")
        if flags:
            text += " " + ",".join(flags)
        if f("dyn_m", 0):
            text += f" m_group={f('m_group', 0)}"
        if f("agroup", 0):
            text += f" agroup={ACT_GROUPS[f('agroup', 0)]}"
        if f("wcodes", 0):
            text += f" wcodes=g{code_group(f('wcodes', 0))}"
        if f("sparse", 0):
            text += (f" sparse kept=16*{f('nnz', 0)} meta[{f('meta_addr', 0):#x}+"
                     f"{f('meta_len', 0)}] fsb[{f('fsb_addr', 0):#x}]")
    elif op == "MISC":
        mop = MISC_OPS[f("op", 0)] if f("op", 0) < len(MISC_OPS) else f"op{f('op', 0)}"
        flags = [n for n in ("dyn_k", "dyn_rows", "causal", "out_abuf", "bcast_b", "b_f32",
                             "amax", "given_max", "diffuse", "residual") if f(n, 0)]
        text = (f"MISC {mop:8s} out@{f('out_addr', 0):#x} a@{f('a_addr', 0):#x} "
                f"b@{f('b_addr', 0):#x} rows={f('rows', 0)} k={f('k', 0)} g={f('groups', 0)}")
        if f("out2_addr", 0):
            text += f" out2@{f('out2_addr', 0):#x}"
        if f("imm", 0):
            text += f" imm={bits_f32(f('imm', 0)):.6g}"
        if flags:
            text += " " + ",".join(flags)
        if f("agroup", 0):
            text += f" agroup={ACT_GROUPS[f('agroup', 0)]}"
    else:
        text = f"SYS  {SYS_OPS[f('op', 0)] if f('op', 0) < len(SYS_OPS) else f('op', 0)}"
        if f("fence", 0):
            text += " fence=compute"
    return text + _deps(insn)


def disassemble(words_or_insns, start_pc: int = 0) -> str:
    """Human-readable listing, one instruction per line, prefixed by its word offset."""
    if len(words_or_insns) and isinstance(words_or_insns[0], Instruction):
        insns = list(words_or_insns)
    else:
        insns = decode_stream(words_or_insns)
    lines, pc = [], start_pc
    for insn in insns:
        lines.append(f"{pc:08x}: {disassemble_one(insn)}")
        pc += FORMATS[insn.op].words
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Instruction image: what the scheduler fetches from DDR
# ---------------------------------------------------------------------------------------------
IMAGE_MAGIC = 0x4D4C4C46          # b"FLLM" read as a little-endian word
IMAGE_VERSION = 1
IMAGE_HEADER_WORDS = 4            # magic, version, cores, total words; then (offset, words) per core


def pack_image(streams) -> np.ndarray:
    """One uint32 image holding a header and each core's encoded stream."""
    streams = [np.asarray(s, dtype=np.uint32) for s in streams]
    head = IMAGE_HEADER_WORDS + 2 * len(streams)
    table, pos = [], head
    for s in streams:
        table += [pos, len(s)]
        pos += len(s)
    header = [IMAGE_MAGIC, IMAGE_VERSION, len(streams), pos] + table
    return np.concatenate([np.asarray(header, dtype=np.uint32)] + streams)


def image_table(head_words) -> list:
    """[(offset_words, n_words), ...] per core from an image's first words; validates the header."""
    w = [int(x) for x in head_words[:IMAGE_HEADER_WORDS]]
    if len(w) < IMAGE_HEADER_WORDS or w[0] != IMAGE_MAGIC:
        raise IllegalInstructionError(
            f"no instruction image at this address (magic {w[0] if w else None!r:} != "
            f"{IMAGE_MAGIC:#x}); load a program compiled by flightllm_overlay.compiler")
    if w[1] != IMAGE_VERSION:
        raise IllegalInstructionError(f"instruction image version {w[1]} is not supported "
                                      f"(this simulator runs version {IMAGE_VERSION}); recompile")
    n = w[2]
    if len(head_words) < IMAGE_HEADER_WORDS + 2 * n:
        raise IllegalInstructionError(f"instruction image header announces {n} cores but its "
                                      f"table is cut short at {len(head_words)} words; recompile")
    table = [(int(head_words[IMAGE_HEADER_WORDS + 2 * i]),
              int(head_words[IMAGE_HEADER_WORDS + 2 * i + 1])) for i in range(n)]
    for off, cnt in table:
        if off + cnt > w[3]:
            raise IllegalInstructionError("instruction image table points past the image end")
    return table
