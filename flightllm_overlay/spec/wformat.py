"""The memory controller's packed weight format: N:16 block sparsity, 2/3/4/8-bit codes, the dequantisation unit.

A weight matrix (R output rows x K inputs) in the packed format (one tile of it is one HBM blob
that a single LD with ``wfmt=packed`` streams in):

* **Sparsity** (optional): the matrix is cut into 16x16 blocks; block (i, j) has an FSB code
  N in {2, 4, 8, 16} and each of its 16 rows keeps exactly N weights (N = 16: dense, no indices).
  Kept weights of a sparse block carry a 4-bit column index each.
* **Codes**: each kept weight is a ``bits``-bit code q.  For bits = 8 the code is the INT8 weight
  itself (two's complement).  For bits in {2, 3, 4} the row is split into groups of ``group``
  columns; group g of row r has an unsigned 16-bit multiplier M and a signed 16-bit offset B, and
  the **dequantisation unit** turns a code into the INT8 weight the MPE multiplies:

      w8 = clamp((q * M + B + 128) >> 8, -127, 127)        (integer arithmetic, >> floors)

  so low-bit weights become INT8 multiplies and the MPE stays an INT8 engine.  Or, for a dense
  tile (LD ``wcodes``), the unit passes the codes through with their (M, B) and the MPE
  (``wcodes``) computes with the unrounded weights ``(q * M + B) / 256`` exactly, group by group
  (``codes_to_exact``; spec/arithmetic.py ``mpe_codes``): a source grid such as Q4_1 is then held
  to (M, B)'s fixed point instead of INT8's half unit.
* **Row scales**: FP32 per output row, applied in the MPE epilogue (as for INT8 weights).

Blob (little endian, no padding between sections), for a tile of R rows:

    [FSB codes: one byte per block, block-row major]             (sparse only)
    [indices: 4-bit, low nibble first, for blocks with N < 16]    (sparse only)
    [codes: a bits-wide little-endian bit stream of the kept weights]
    [group parameters: (M uint16, B int16) per row per group]     (bits < 8 only)
    [row scales: R float32]

Kept weights (codes, indices, and the INT8 values the LD writes to the weight buffer) are in
*MPE order*: dense tiles row by row; sparse tiles block-row by block-row, block by block, row by
row inside a block, kept columns ascending.  The LD writes to the weight buffer the INT8 kept
values in that order followed by the R row scales; the FSB codes to the FSB buffer; the indices
to the meta buffer.  A sparse MPE instruction walks the same order.  With ``wcodes`` the LD
writes per row its codes (one byte each) followed by its group parameters as in the blob, then
the row scales (``code_row_bytes``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CompileError, ProgramError

BLOCK = 16                       # FSB block: 16 x 16 weights
FSB_CODES = (2, 4, 8, 16)        # N of N:16 (16 = dense)
BITS = (2, 3, 4, 8)              # code widths the dequantisation unit takes
GROUPS = (16, 32, 64, 128)       # group sizes (columns sharing one M, B) for bits < 8
SHIFT = 8                        # fixed-point shift of the multiplier and offset
WMAX = 127                       # INT8 weights stay in [-127, 127]


def check_bits(bits: int, group: int) -> None:
    if bits not in BITS:
        raise CompileError(f"weights of {bits} bits are not supported; the dequantisation unit "
                           f"takes {BITS}")
    if bits < 8 and group not in GROUPS:
        raise CompileError(f"group size {group} is not supported; use one of {GROUPS}")


def check_codes(block_n) -> None:
    bad = sorted(set(np.unique(block_n).tolist()) - set(FSB_CODES))
    if bad:
        raise CompileError(f"N:16 codes {bad} are not supported; the sparse DSP chain takes N in "
                           f"{FSB_CODES} (16 = dense)")


# ---------------------------------------------------------------------------------------------
# The dequantisation unit and the sparse expansion: the hardware's arithmetic
# ---------------------------------------------------------------------------------------------
def codes_to_int8(q, mult, offset, bits: int) -> np.ndarray:
    """INT8 weights from codes (any shape; ``mult``/``offset`` broadcast against ``q``)."""
    q = np.asarray(q)
    if bits == 8:
        return q.astype(np.uint8).view(np.int8)
    acc = (q.astype(np.int32) * np.asarray(mult, np.int32) + np.asarray(offset, np.int32)
           + (1 << (SHIFT - 1))) >> SHIFT
    return np.clip(acc, -WMAX, WMAX).astype(np.int8)


def code_row_bytes(k: int, group: int) -> int:
    """Weight-buffer bytes of one row a `wcodes` LD writes: k codes, then 4 bytes per group."""
    return k + 4 * (k // group)


def codes_to_exact(q, mult, offset) -> np.ndarray:
    """The unrounded weights, in INT8 units, an MPE with `wcodes` computes with: (q M + B) / 256
    (float64, exact; shapes broadcast as for `codes_to_int8`)."""
    acc = np.asarray(q, np.int64) * np.asarray(mult, np.int64) + np.asarray(offset, np.int64)
    return acc.astype(np.float64) / (1 << SHIFT)


def block_order(mask: np.ndarray) -> np.ndarray:
    """Flat indices (into a row-major (R, K) array) of the kept weights, in MPE order."""
    r, k = mask.shape
    idx = np.arange(r * k).reshape(r // BLOCK, BLOCK, k // BLOCK, BLOCK)
    idx = idx.transpose(0, 2, 1, 3).reshape(-1)              # block-row, block, row, column
    return idx[mask.reshape(-1)[idx]]


def expand_sparse(values, fsb, meta, n: int, k: int) -> np.ndarray:
    """The sparse MPE's view of its operands: (n, k) INT8 with zeros where nothing is kept.

    values: kept INT8 weights in MPE order; fsb: (n/16 * k/16) codes; meta: 4-bit indices of the
    blocks with N < 16, low nibble first.  Raises ProgramError on codes or sizes that do not fit.
    """
    nb_r, nb_c = n // BLOCK, k // BLOCK
    fsb = np.asarray(fsb, np.uint8).reshape(nb_r, nb_c)
    if not np.isin(fsb, FSB_CODES).all():
        raise ProgramError(f"FSB buffer holds codes {sorted(set(np.unique(fsb).tolist()) - set(FSB_CODES))}"
                           f" that are not N:16 codes {FSB_CODES}; the LD that filled it read "
                           f"something that is not a packed sparse tile")
    per_block = fsb.astype(np.int64) * BLOCK
    if values.size < per_block.sum():
        raise ProgramError(f"sparse operands need {per_block.sum()} weights; the weight buffer "
                           f"region holds {values.size}")
    sparse = fsb.reshape(-1) < BLOCK
    n_idx = int((per_block.reshape(-1)[sparse]).sum())
    meta = np.asarray(meta, np.uint8)
    if meta.size * 2 < n_idx:
        raise ProgramError(f"sparse operands need {n_idx} indices; the meta region holds "
                           f"{meta.size * 2}")
    nib = np.empty(2 * meta.size, np.uint8)
    nib[0::2], nib[1::2] = meta & 0xF, meta >> 4
    dense = np.zeros((nb_r, nb_c, BLOCK, BLOCK), np.int8)
    vpos = ipos = 0
    for b, code in enumerate(fsb.reshape(-1).tolist()):
        cnt = BLOCK * code
        vals = values[vpos:vpos + cnt].reshape(BLOCK, code)
        vpos += cnt
        i, j = divmod(b, nb_c)
        if code == BLOCK:
            dense[i, j] = vals
            continue
        cols = nib[ipos:ipos + cnt].reshape(BLOCK, code).astype(np.intp)
        ipos += cnt
        if (np.diff(cols, axis=1) <= 0).any():
            raise ProgramError(f"meta buffer: the indices of block ({i}, {j}) are not strictly "
                               f"increasing per row; the tile is corrupt")
        np.put_along_axis(dense[i, j], cols, vals, axis=1)
    return dense.transpose(0, 2, 1, 3).reshape(n, k)


@dataclass
class DeviceTile:
    """What one packed LD writes on chip: INT8 kept values + row scales (weight buffer), FSB
    codes, indices (meta buffer)."""

    values: np.ndarray       # int8, MPE order (wcodes: uint8 rows of codes and (M, B))
    scales: np.ndarray       # float32 (rows,)
    fsb: np.ndarray          # uint8, empty when dense
    meta: np.ndarray         # uint8, empty when dense

    def wbuf_bytes(self) -> np.ndarray:
        return np.concatenate([self.values.view(np.uint8), self.scales.view(np.uint8)])


def _unpack_bits(raw: np.ndarray, count: int, bits: int) -> np.ndarray:
    if bits == 8:
        return raw[:count]
    flat = np.unpackbits(raw, bitorder="little")[:count * bits].reshape(count, bits)
    return (flat @ (1 << np.arange(bits, dtype=np.uint16))).astype(np.uint8)


def _pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    codes = np.asarray(codes, np.uint8).reshape(-1)
    if bits == 8:
        return codes
    flat = ((codes[:, None] >> np.arange(bits, dtype=np.uint8)) & 1).astype(np.uint8)
    return np.packbits(flat.reshape(-1), bitorder="little")


def synthetic_codes(rows: int, k: int, density: float) -> np.ndarray | None:
    """N:16 codes of a given average density, spread evenly over the blocks (for shape-only
    models: the sizes and the chain's work of a sparse layer without its weights).

    Dense blocks mix with 4:16 blocks (2:16 with 4:16 below 25%): a kept 4-bit weight carries a
    4-bit index, so an 8:16 block takes as many HBM bytes as a dense one, and only blocks of
    4:16 or sparser save bandwidth; they also need the fewest index bytes per weight kept."""
    if density >= 1:
        return None
    if rows % BLOCK or k % BLOCK:
        raise CompileError(f"a sparse weight is whole 16x16 blocks; {rows} x {k} is not")
    if density < 2 / BLOCK:
        raise CompileError(f"density {density} is below the sparsest N:16 code (2/16)")
    lo, hi = (4, BLOCK) if density >= 4 / BLOCK else (2, 4)
    frac_lo = (hi / BLOCK - density) / ((hi - lo) / BLOCK)
    n = (rows // BLOCK) * (k // BLOCK)
    i = np.arange(n)
    pick_lo = np.floor((i + 1) * frac_lo) > np.floor(i * frac_lo)
    return np.where(pick_lo, lo, hi).astype(np.uint8).reshape(rows // BLOCK, k // BLOCK)


def block_row_sizes(block_n) -> tuple:
    """(kept weights, index bytes) of each 16-row block-row of a sparse weight's N:16 codes."""
    bn = np.asarray(block_n, np.int64)
    return BLOCK * bn.sum(1), (BLOCK // 2) * np.where(bn < BLOCK, bn, 0).sum(1)


def tile_layout(rows: int, k: int, bits: int, group: int, fsb=None) -> dict:
    """Byte sizes of a packed tile's sections, from its shape, format and FSB codes."""
    check_bits(bits, group)
    if fsb is None:
        kept, n_idx, n_fsb = rows * k, 0, 0
    else:
        fsb = np.asarray(fsb).reshape(-1).astype(np.int64)
        n_fsb = fsb.size
        kept = int((fsb * BLOCK).sum())
        n_idx = int((fsb[fsb < BLOCK] * BLOCK).sum())
    out = {"fsb": n_fsb, "meta": (n_idx + 1) // 2, "codes": -(-kept * bits // 8),
           "groups": 4 * rows * (k // group) if bits < 8 else 0, "scales": 4 * rows}
    out["kept"] = kept
    out["total"] = out["fsb"] + out["meta"] + out["codes"] + out["groups"] + out["scales"]
    return out


def dequant_tile(blob, rows: int, k: int, bits: int, group: int, sparse: bool,
                 codes: bool = False) -> DeviceTile:
    """The memory controller's LD of one packed tile (the dequantisation unit included);
    `codes`: the unit passes a dense low-bit tile's codes and group parameters (LD `wcodes`)."""
    if codes and (bits == 8 or sparse):
        raise ProgramError(f"LD with wcodes passes the codes of a dense tile below 8 bits; this "
                           f"tile is {'sparse' if sparse else '8-bit'}")
    blob = np.frombuffer(blob, np.uint8) if not isinstance(blob, np.ndarray) else blob
    check_bits(bits, group)
    if sparse and (rows % BLOCK or k % BLOCK):
        raise ProgramError(f"a sparse tile is whole 16x16 blocks; got {rows} x {k}")
    if bits < 8 and k % group:
        raise ProgramError(f"a {bits}-bit tile's rows ({k}) are not whole groups of {group}")
    pos = 0
    fsb = meta = np.zeros(0, np.uint8)
    if sparse:
        nb = (rows // BLOCK) * (k // BLOCK)
        fsb = blob[:nb]
        if fsb.size < nb or not np.isin(fsb, FSB_CODES).all():
            raise ProgramError("packed tile: FSB codes are not N:16 codes "
                               f"{FSB_CODES}; the blob is corrupt or not sparse")
    lay = tile_layout(rows, k, bits, group, fsb if sparse else None)
    if blob.size < lay["total"]:
        raise ProgramError(f"packed tile of {rows} x {k} ({bits}-bit{', sparse' if sparse else ''}) "
                           f"needs {lay['total']} bytes; the LD reads {blob.size}")
    pos = lay["fsb"]
    meta = blob[pos:pos + lay["meta"]]
    pos += lay["meta"]
    q = _unpack_bits(blob[pos:pos + lay["codes"]], lay["kept"], bits)
    pos += lay["codes"]
    if codes:                   # per row: its codes, then its groups' (M, B)
        params = blob[pos:pos + lay["groups"]].reshape(rows, -1)
        pos += lay["groups"]
        values = np.concatenate([q.reshape(rows, k), params], axis=1).reshape(-1)
        scales = blob[pos:pos + 4 * rows].copy().view(np.float32)
        return DeviceTile(values, scales, fsb.copy(), meta.copy())
    if bits < 8:
        gp = blob[pos:pos + lay["groups"]].view(np.int16).reshape(rows, k // group, 2)
        pos += lay["groups"]
        mult = gp[..., 0].view(np.uint16).astype(np.int32)
        offset = gp[..., 1].astype(np.int32)
        if sparse:      # each kept weight's group: from its row and column in MPE order
            mask = expand_sparse(np.ones(lay["kept"], np.int8), fsb, meta, rows, k) != 0
            flat = block_order(mask)
            r, c = np.divmod(flat, k)
            values = codes_to_int8(q, mult[r, c // group], offset[r, c // group], bits)
        else:
            values = codes_to_int8(q.reshape(rows, k // group, group), mult[..., None],
                                   offset[..., None], bits).reshape(-1)
    else:
        values = q.view(np.int8)
    scales = blob[pos:pos + 4 * rows].copy().view(np.float32)
    return DeviceTile(np.ascontiguousarray(values), scales, fsb.copy(), meta.copy())


# ---------------------------------------------------------------------------------------------
# A packed weight matrix, as the compressor produces and the compiler places it
# ---------------------------------------------------------------------------------------------
@dataclass
class PackedWeight:
    """A weight matrix in the packed format, held unpacked for the compiler and the compressor.

    q (R, K) uint8 codes (0 where pruned); mult/offset (R, K/group) group parameters (None for
    8 bits); scale (R,) float32 row scales; block_n (R/16, K/16) N:16 codes, or None when dense;
    mask (R, K) bool kept weights (None when dense); exact: the MPE takes the codes and applies
    (M, B) exactly (LD/MPE `wcodes`; dense, below 8 bits) instead of the unit's INT8 rounding.
    """

    bits: int
    group: int
    q: np.ndarray
    mult: np.ndarray | None
    offset: np.ndarray | None
    scale: np.ndarray
    block_n: np.ndarray | None = None
    mask: np.ndarray | None = None
    exact: bool = False

    def __post_init__(self):
        check_bits(self.bits, self.group)
        r, k = self.q.shape
        if self.exact and (self.bits == 8 or self.block_n is not None):
            raise CompileError("exact group arithmetic (wcodes) is for dense weights below 8 "
                               "bits")
        if self.bits < 8 and (k % self.group or self.mult is None
                              or self.mult.shape != (r, k // self.group)):
            raise CompileError(f"{self.bits}-bit weight ({r} x {k}) needs group parameters of "
                               f"shape ({r}, {k // self.group}) and K a multiple of {self.group}")
        if self.block_n is not None:
            if r % BLOCK or k % BLOCK or self.block_n.shape != (r // BLOCK, k // BLOCK):
                raise CompileError(f"a sparse weight is whole 16x16 blocks with one code each; "
                                   f"got {r} x {k} and codes {self.block_n.shape}")
            check_codes(self.block_n)
            kept = self.mask.reshape(r // BLOCK, BLOCK, k // BLOCK, BLOCK).sum(3)
            if (kept != self.block_n[:, None, :]).any():
                raise CompileError("sparse weight: some block row does not keep exactly its "
                                   "block's N weights")

    @property
    def shape(self) -> tuple:
        return self.q.shape

    @property
    def sparse(self) -> bool:
        return self.block_n is not None

    @property
    def density(self) -> float:
        return 1.0 if self.mask is None else float(self.mask.mean())

    def __getitem__(self, rows: slice) -> "PackedWeight":
        r0, r1, _ = rows.indices(self.shape[0])
        if self.sparse and (r0 % BLOCK or (r1 % BLOCK and r1 != self.shape[0])):
            raise CompileError(f"a sparse weight is cut into tiles at multiples of {BLOCK} rows, "
                               f"not [{r0}, {r1})")
        pick = (lambda a: None if a is None else a[rows])
        bn = None if self.block_n is None else self.block_n[r0 // BLOCK:-(-r1 // BLOCK)]
        return PackedWeight(self.bits, self.group, self.q[rows], pick(self.mult),
                            pick(self.offset), self.scale[rows], bn, pick(self.mask), self.exact)

    @property
    def format_key(self) -> tuple:
        """(bits, group, sparse, exact): weights with the same key can share a tile."""
        return (self.bits, self.group if self.bits < 8 else 0, self.sparse, self.exact)

    @staticmethod
    def concat(parts) -> "PackedWeight":
        """Stack row blocks of the same format into one matrix."""
        first = parts[0]
        if any(p.format_key != first.format_key or p.shape[1] != first.shape[1] for p in parts):
            raise CompileError("only weights of one format and width stack into one matrix")
        if first.sparse and any(p.shape[0] % BLOCK for p in parts[:-1]):
            raise CompileError(f"sparse weights stack at multiples of {BLOCK} rows")
        cat = (lambda name: None if getattr(first, name) is None
               else np.concatenate([getattr(p, name) for p in parts]))
        return PackedWeight(first.bits, first.group, cat("q"), cat("mult"), cat("offset"),
                            cat("scale"), cat("block_n"), cat("mask"), first.exact)

    def int8(self) -> np.ndarray:
        """(R, K) INT8 weights the MPE multiplies (zeros where pruned)."""
        if self.bits == 8:
            w = self.q.view(np.int8).copy()
        else:
            r, k = self.shape
            g = self.group
            w = codes_to_int8(self.q.reshape(r, k // g, g), self.mult[..., None],
                              self.offset[..., None], self.bits).reshape(r, k)
        if self.mask is not None:
            w[~self.mask] = 0
        return w

    def float(self, dtype=np.float32) -> np.ndarray:
        """The float weights the device computes with: int8() times the row scales, or with
        `exact` the unrounded (q M + B) / 256 times the row scales (the product is exact in
        float64; `dtype` float64 keeps it so)."""
        if not self.exact:
            return (self.int8().astype(np.float32) * self.scale[:, None]).astype(dtype,
                                                                                 copy=False)
        r, k = self.shape
        g = self.group
        w = codes_to_exact(self.q.reshape(r, k // g, g), self.mult[..., None],
                           self.offset[..., None]).reshape(r, k)
        return (w * self.scale[:, None]).astype(dtype)

    def nbytes_of(self, rows: int | None = None) -> int:
        return self.layout()["total"] if rows is None else self[:rows].layout()["total"]

    def layout(self) -> dict:
        r, k = self.shape
        return tile_layout(r, k, self.bits, self.group, self.block_n)

    def wbuf_bytes(self) -> int:
        """Weight-buffer bytes after the LD: kept INT8 values (or codes and their group
        parameters) + row scales."""
        lay = self.layout()
        return lay["kept"] + (lay["groups"] if self.exact else 0) + lay["scales"]

    @property
    def bits_per_weight(self) -> float:
        """HBM bits per weight of the dense shape, everything included."""
        return 8 * self.layout()["total"] / self.q.size

    def blob(self) -> np.ndarray:
        """This matrix as one packed HBM blob (see the module docstring)."""
        r, k = self.shape
        parts = []
        if self.sparse:
            order = block_order(self.mask)
            fsb = self.block_n.astype(np.uint8).reshape(-1)
            cols = (order % k) % BLOCK
            blk_sparse = np.repeat(fsb < BLOCK, fsb.astype(np.int64) * BLOCK)
            nib = cols[blk_sparse].astype(np.uint8)
            if nib.size % 2:
                nib = np.append(nib, np.uint8(0))
            parts += [fsb, (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)]
            codes = self.q.reshape(-1)[order]
        else:
            codes = self.q.reshape(-1)
        parts.append(_pack_bits(codes, self.bits))
        if self.bits < 8:
            gp = np.stack([self.mult.astype(np.uint16).view(np.int16),
                           self.offset.astype(np.int16)], axis=-1)
            parts.append(gp.reshape(-1).view(np.uint8))
        parts.append(self.scale.astype(np.float32).view(np.uint8))
        return np.concatenate(parts)

    @classmethod
    def from_blob(cls, blob, rows: int, k: int, bits: int, group: int,
                  sparse: bool, exact: bool = False) -> "PackedWeight":
        """Inverse of `blob` (codes, group parameters and mask recovered exactly); `exact` is
        not in the blob (the same bytes serve either datapath)."""
        blob = np.frombuffer(blob, np.uint8) if not isinstance(blob, np.ndarray) else blob
        tile = dequant_tile(blob, rows, k, bits, group, sparse)
        lay = tile_layout(rows, k, bits, group, tile.fsb if sparse else None)
        pos = lay["fsb"] + lay["meta"]
        codes = _unpack_bits(blob[pos:pos + lay["codes"]], lay["kept"], bits)
        pos += lay["codes"]
        mult = offset = None
        if bits < 8:
            gp = blob[pos:pos + lay["groups"]].view(np.int16).reshape(rows, k // group, 2)
            mult, offset = gp[..., 0].view(np.uint16).copy(), gp[..., 1].copy()
        q = np.zeros((rows, k), np.uint8)
        mask = block_n = None
        if sparse:
            mask = expand_sparse(np.ones(lay["kept"], np.int8), tile.fsb, tile.meta, rows, k) != 0
            q.reshape(-1)[block_order(mask)] = codes
            block_n = tile.fsb.reshape(rows // BLOCK, k // BLOCK).copy()
        else:
            q[...] = codes.reshape(rows, k)
        return cls(bits, group, q, mult, offset, tile.scales.copy(), block_n, mask, exact)


def quantize(w, bits: int = 4, group: int = 32, mask=None, block_n=None) -> PackedWeight:
    """Round-to-nearest packing of a float (R, K) weight, pruned to `mask` (N:16 per block).

    Row scale = max |kept weight| / 127.  8 bits: symmetric INT8 codes.  Fewer bits: per group an
    asymmetric range [min, max] of the kept weights mapped onto 0 .. 2**bits - 1, expressed as the
    unit's (M, B); codes are chosen to land nearest to the weight through the unit's rounding.
    """
    check_bits(bits, group)
    w = np.asarray(w, np.float32)
    r, k = w.shape
    if (mask is None) != (block_n is None):
        raise CompileError("pass both mask and block_n for a sparse weight, or neither")
    kept = np.ones_like(w, bool) if mask is None else np.asarray(mask, bool)
    wk = np.where(kept, w, 0.0)
    amax = np.abs(wk).max(1)
    scale = np.where(amax > 0, amax / WMAX, 1.0).astype(np.float32)
    if bits == 8:
        q8 = np.clip(np.rint(wk / scale[:, None]), -WMAX, WMAX).astype(np.int8)
        return PackedWeight(8, group, q8.view(np.uint8), None, None, scale,
                            None if block_n is None else np.asarray(block_n, np.uint8), mask)
    levels = (1 << bits) - 1
    g = wk.reshape(r, k // group, group) / scale[:, None, None]        # in INT8 units
    kg = kept.reshape(r, k // group, group)
    lo = np.where(kg, g, np.inf).min(-1)
    hi = np.where(kg, g, -np.inf).max(-1)
    empty = ~np.isfinite(lo)
    lo, hi = np.where(empty, 0.0, lo), np.where(empty, 0.0, hi)
    step = (hi - lo) / levels
    mult = np.clip(np.rint(step * (1 << SHIFT)), 0, 65535).astype(np.int64)
    offset = np.clip(np.rint(lo * (1 << SHIFT)), -32768, 32767).astype(np.int64)
    # nearest code through the unit's own rounding: try the two codes around the real-valued one
    real = np.where(step[..., None] > 0, (g - lo[..., None]) / np.maximum(step[..., None], 1e-30), 0)
    base = np.clip(np.floor(real), 0, levels)
    best = None
    for cand in (base, np.minimum(base + 1, levels)):
        err = np.abs(codes_to_int8(cand, mult[..., None], offset[..., None], bits) - g)
        best = (cand, err) if best is None else (np.where(err < best[1], cand, best[0]),
                                                 np.minimum(err, best[1]))
    q = np.where(kg, best[0], 0).astype(np.uint8).reshape(r, k)
    return PackedWeight(bits, group, q, mult.astype(np.uint16), offset.astype(np.int16), scale,
                        None if block_n is None else np.asarray(block_n, np.uint8), mask)
