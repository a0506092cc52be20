"""The FlightLLM-style instruction set: a declarative table of formats, encode, decode, disassemble.

Every instruction is a little-endian sequence of 32-bit words.  Its bits form one bit string
(bit i lives in word i // 32, bit i % 32); fields are packed from bit 0 upward in the order the
table below lists them.  The first three fields are common: `opcode` (4 bits), `wait` and
`release` (6 bits each, one bit per unit queue in `config.UNITS` order).  `docs/isa.md` documents
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

# ---------------------------------------------------------------------------------------------
# Enumerations
# ---------------------------------------------------------------------------------------------
BUFFERS = ("wbuf", "abuf", "gbuf", "meta", "fsb", "bias")       # on-chip buffer ids
DYN_MODES = ("static", "at_pos", "history", "step", "last")    # how LD/ST use run-time params
WEIGHT_FORMATS = ("int8", "packed")  # LD's dequantisation unit: HBM format -> INT8 in wbuf
WEIGHT_BITS = wformat.BITS          # LD `wbits`: code widths of packed weights
WEIGHT_GROUPS = wformat.GROUPS      # LD `wgroup`: group sizes of packed weights below 8 bits
SPARSE_BLOCK = wformat.BLOCK        # N:16 blocks of 16 x 16 weights
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

HEADER = (
    ("opcode", 4, "format selector (the opcode in the heading); decoding reads it first"),
    ("wait", 6, "bit i set: before executing, pop one token that unit `UNITS[i]` released to this"
                " unit; the own unit's bit must be 0"),
    ("release", 6, "bit i set: after executing, push one token to unit `UNITS[i]`; the own unit's"
                   " bit must be 0 (SYS: must be 0 entirely)"),
)

_MOVE = (
    ("buf", 3, "on-chip buffer (index into `BUFFERS`)"),
    ("dyn", 3, "dynamic mode (index into `DYN_MODES`): how `pos`/`len` change the rows and HBM "
               "address"),
    ("remote", 1, "LD only: 1 = an on-chip copy from core `remote_core`'s buffer `buf` instead "
                  "of HBM, its rows read at `hbm_addr` with stride `hbm_stride` there; ST: must "
                  "be 0"),
    ("remote_core", 2, "source core of a remote LD (must exist; the executing core itself makes "
                       "a local copy, whose source and destination must not overlap)"),
    ("channel", 5, "HBM pseudo-channel; the executing core must own it (`core_channels` of the "
                   "target)"),
    ("stripe", 5, "LD only: the number of channels one contiguous row is split over (0 and 1: "
                  "one), in equal chunks, starting at `channel` and going round the core's ports "
                  "at the same `hbm_addr`; needs rows <= 1 and no remote; ST: must be 0"),
    ("hbm_addr", 30, "byte offset of row 0 inside the pseudo-channel, before the dyn adjustment "
                     "(remote LD: byte address of row 0 in the source core's buffer)"),
    ("buf_addr", 22, "byte address of row 0 in the on-chip buffer"),
    ("rows", 16, "rows to copy; for dynamic modes, the compiled maximum"),
    ("row_bytes", 20, "bytes per row"),
    ("hbm_stride", 28, "bytes between consecutive rows in HBM (remote LD: in the source core's "
                       "buffer)"),
    ("buf_stride", 22, "bytes between consecutive rows in the on-chip buffer"),
    ("wfmt", 2, "LD only: weight format (index into `WEIGHT_FORMATS`); packed: `row_bytes` of a "
                "packed tile (spec/wformat.py) pass the dequantisation unit: `rows` rows of `wk` "
                "columns become INT8 kept weights plus FP32 row scales in wbuf (and, if sparse, "
                "FSB codes and indices in the fsb and meta buffers); static LD into wbuf only; "
                "ST: must be 0"),
    ("wk", 16, "packed: columns (K) of the weight rows (whole groups; whole 16-blocks if sparse);"
               " otherwise unused"),
    ("wbits", 2, "packed: code width, index into `WEIGHT_BITS`; otherwise unused"),
    ("wgroup", 2, "packed below 8 bits: columns per (M, B) group, index into `WEIGHT_GROUPS`; "
                  "otherwise unused"),
    ("sparse", 1, "packed: 1 = N:16 block-sparse tile (rows and wk multiples of 16); otherwise "
                  "unused"),
    ("meta_addr", 16, "packed sparse: meta-buffer byte address the 4-bit indices go to"),
    ("fsb_addr", 12, "packed sparse: fsb-buffer byte address the per-block N codes go to"),
    ("wn", 20, "packed sparse: kept weights / 16 (the sum of the tile's N codes); the INT8 values"
               " take 16 * wn bytes of wbuf, followed by the row scales"),
    ("wmeta", 16, "packed sparse: bytes of indices written to the meta buffer"),
)
_MATRIX = (
    ("wt", 1, "0: weights stored (N, K) row-major; 1: stored (K, N) row-major (already "
              "transposed)"),
    ("dyn_n", 1, "1: N = pos + len at run time (`n` is the compiled maximum)"),
    ("dyn_k", 1, "1: K = pos + len at run time (`k` is the compiled maximum)"),
    ("no_wscale", 1, "1: no weight scale (the epilogue multiplies by the row scale only; "
                     "`w_scale` ignored)"),
    ("m", 8, "rows of A (tokens); MV: at most 16"),
    ("n", 16, "output columns"),
    ("k", 16, "reduction length"),
    ("a_addr", 22, "abuf byte address of the INT8 A matrix (M, K)"),
    ("a_scale", 22, "abuf byte address of M FP32 row scales (4-byte aligned)"),
    ("w_addr", 22, "wbuf byte address of the INT8 weight matrix"),
    ("w_scale", 22, "wbuf byte address of N FP32 column scales (4-byte aligned)"),
    ("out_addr", 22, "gbuf byte address of the FP16 output (M, N) (2-byte aligned)"),
    ("a_stride", 16, "bytes between rows of A; 0 = K (packed, run-time K)"),
    ("w_stride", 16, "bytes between stored weight rows; 0 = K (wt=0) or N (wt=1)"),
    ("out_stride", 16, "bytes between output rows; 0 = 2N"),
    ("sparse", 1, "1: the weights at `w_addr` are packed N:16 blocks (block-row by block-row, "
                  "block by block, row by row, kept columns ascending) read through the sparse "
                  "MUX with the codes at `fsb_addr` and indices at `meta_addr`; n, k multiples of"
                  " 16, wt = 0, w_stride = 0, no dynamic n/k"),
    ("meta_addr", 16, "sparse: meta-buffer byte address of the first block's indices"),
    ("fsb_addr", 12, "sparse: fsb-buffer byte address of the first block's N code"),
    ("nnz", 20, "sparse: kept weights / 16 over the n x k operand (the sum of its N codes)"),
    ("meta_len", 16, "sparse: bytes of indices the operand reads from the meta buffer"),
    ("blk_sink", 6, "with dyn_n or dyn_k (attention): sink blocks of the block-sparse pattern "
                    "(`isa.attention_block_keep`); the MPE skips masked key blocks, results "
                    "unchanged"),
    ("blk_win", 6, "with dyn_n or dyn_k: local window in 64-token blocks (0: dense attention)"),
    ("dyn_m", 1, "1: only the rows of A whose token (r mod `m_group`) is below `len` are "
                 "computed; the other output rows are not written (prefill rows past the "
                 "prompt)"),
    ("m_group", 8, "with dyn_m: tokens per group of A's rows (head-major blocks of tokens); "
                   "0 means `m`"),
)
_MISC = (
    ("op", 4, "operation (index into `MISC_OPS`)"),
    ("dyn_k", 1, "1: K = pos + len at run time (`k` is the compiled maximum)"),
    ("causal", 1, "softmax: key j of row r is valid only if j <= pos + (r mod groups)"),
    ("out_abuf", 1, "1: write the activation buffer; required by quant, illegal for every other "
                    "op"),
    ("bcast_b", 1, "eadd/emul: b is one row used for every row (b_stride ignored)"),
    ("b_f32", 1, "b elements are FP32 instead of FP16 (eadd, emul, rmsnorm gamma, layernorm "
                 "gamma/beta)"),
    ("rows", 16, "rows to process"),
    ("k", 16, "elements per row"),
    ("groups", 8, "tokens per group: row r belongs to token r mod groups (rope, causal softmax); "
                  "0 means 1"),
    ("a_addr", 22, "gbuf byte address of the FP16 input a (rows, K)"),
    ("b_addr", 22, "gbuf byte address of operand b: eadd/emul b, rmsnorm gamma, layernorm gamma "
                   "(beta one b_stride after it), rope table"),
    ("out_addr", 22, "byte address of the output: gbuf FP16, or abuf INT8 for quant"),
    ("out2_addr", 22, "quant: abuf byte address of the `rows` FP32 scales; amax (op or flag): "
                      "gbuf byte address of the `rows` FP32 row maxima"),
    ("a_stride", 16, "bytes between rows of a; 0 = 2K"),
    ("b_stride", 16, "bytes between rows of b; 0 = K elements packed"),
    ("out_stride", 16, "bytes between output rows; 0 = 2K (quant: K)"),
    ("imm", 32, "FP32 bit pattern: softmax scale, rmsnorm/layernorm epsilon; ignored by the other"
                " ops"),
    ("blk_sink", 6, "causal softmax: sink blocks of the block-sparse pattern; otherwise unused"),
    ("blk_win", 6, "causal softmax: local window in 64-token blocks; keys outside the pattern are"
                   " masked like future keys (0: dense causal)"),
    ("amax", 1, "rmsnorm, emul: also write each row's largest absolute FP16 result, as FP32, at "
                "`out2_addr` in gbuf (the amax op writes only that); must be 0 otherwise"),
    ("given_max", 1, "quant: a row's largest absolute value is the largest of `groups` FP32 "
                     "values at `b_addr` in gbuf (rows `b_stride` bytes apart; partial maxima "
                     "from amax) instead of a first pass over a: one pass; must be 0 otherwise"),
    ("diffuse", 1, "quant: an element that rounds to 0 is added to the row's FP32 running sum "
                   "of such elements and takes the step of that sum's rounding (-1, 0 or 1) as "
                   "its code (error diffusion of small values: they keep their total to half a "
                   "step; softmax probabilities before the PV product); must be 0 otherwise"),
    ("dyn_rows", 1, "1: only the rows whose token (r mod `groups`) is below `len` are processed; "
                    "the other rows of every output (scales and maxima included) are not "
                    "written (prefill rows past the prompt); not with given_max"),
    ("residual", 1, "quant: also overwrite a in gbuf (in place, rows `a_stride` apart) with the "
                    "FP16 residual fp16(x - fp32(q * scale)) of each element, which a second quant"
                    " makes the low plane of a two-plane activation; must be 0 otherwise"),
)
_SYS = (
    ("op", 4, "operation (index into `SYS_OPS`)"),
    ("fence", 1, "barrier only (index into `SYS_FENCES`): `all` drains every queue; `compute` "
                 "drains MM, MV, MISC, ST, remote LDs and the HBM LDs issued before the previous "
                 "barrier (an HBM LD may run across one barrier)"),
)
SYS_FENCES = ("all", "compute")    # barrier `fence`: what it drains (docs/isa.md)
#: MISC flags legal with some operations only: flag -> (those operations, the refusal's reason)
MISC_FLAG_OPS = {
    "amax": (("rmsnorm", "emul"),
             "only rmsnorm and emul write their row maxima (the amax op does by itself)"),
    "given_max": (("quant",), "only quant takes given row maxima"),
    "diffuse": (("quant",), "only quant rounds with error diffusion"),
    "residual": (("quant",), "only quant writes the residual of its rounding"),
}
#: MISC flags that exclude each other: (flag, flag) -> the refusal's reason
MISC_FLAG_CONFLICTS = {
    ("dyn_rows", "given_max"): "`groups` counts the given maxima there, not tokens per group",
}


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
    Format("LD", 0x1, "LD", _MOVE, "copy rows from an HBM pseudo-channel (or a remote core's "
                                   "buffer) into an on-chip buffer"),
    Format("ST", 0x2, "ST", _MOVE, "copy rows from an on-chip buffer to an HBM pseudo-channel"),
    Format("MM", 0x3, "MM", _MATRIX, "INT8 x INT8 matrix-matrix product with FP16 epilogue"),
    Format("MV", 0x4, "MV", _MATRIX, "INT8 x INT8 matrix-vector product (M <= 16) with FP16 "
                                     "epilogue"),
    Format("MISC", 0x5, "MISC", _MISC, "special-function unit: FP16 element-wise and "
                                       "two-phase row operations"),
    Format("SYS", 0xF, "SYS", _SYS, "barrier across cores, or end of stream"),
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
            text += f"->int8 k={f('wk', 0)}"
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
