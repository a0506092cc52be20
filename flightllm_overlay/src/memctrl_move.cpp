// memctrl_move.cpp: memctrl's LD and ST datapaths: HBM or a remote core -> on-chip buffer (all dyn modes, striped, packed weights through the dequantisation unit or as codes with their group parameters) and buffer -> HBM.
//
// Semantics: docs/isa.md section 5 (LD, ST) and section 4 (dyn modes); reference: the ld/st
// methods of sim/functional.py, whose checks are made here in the same order.  Every HBM access
// names its port k and goes through fllm_hbm_get/put (one m_axi bundle per pseudo-channel).
#include "memctrl.h"

// chunks of a striped row: `stripe` (a channel count; 0 and 1: one), at most the core's channels
static constexpr unsigned MAX_STRIPE = FLLM_CHANNELS_PER_CORE;

// (rows actually moved, HBM byte offset of row 0) after the run-time parameters (isa.md §4)
static unsigned dyn_rows(const MoveFields& f, const CoreRun& ctx, uint64_t& rows, uint64_t& off) {
    rows = f.rows;
    off = f.hbm_addr;
    if (f.dyn == FLLM_DYN_STATIC) return 0;
    if (f.dyn == FLLM_DYN_LAST) {
        if (ctx.len < 1 || f.rows < 1) FLLM_FAIL(FLLM_ERR_PROGRAM, "dyn=last needs len >= 1 and rows >= 1");
        rows = 1;
        off = f.hbm_addr + (uint64_t)(ctx.len - 1) * f.hbm_stride;
        return 0;
    }
    uint64_t eff = (f.dyn == FLLM_DYN_AT_POS || f.dyn == FLLM_DYN_STEP) ? (uint64_t)ctx.len
                                                                       : (uint64_t)ctx.pos + ctx.len;
    if (eff > f.rows)
        FLLM_FAIL(FLLM_ERR_PROGRAM, "run-time length %llu exceeds the %u rows this instruction was "
                  "compiled for (pos=%u, len=%u)", (unsigned long long)eff, f.rows, ctx.pos, ctx.len);
    rows = eff;
    if (f.dyn == FLLM_DYN_AT_POS) off = f.hbm_addr + (uint64_t)ctx.pos * f.hbm_stride;
    return 0;
}

// port index of `channel` on this core (functional.py _channel: every failure is an AddressError)
static unsigned channel_port(unsigned channel, const CoreRun& ctx, unsigned& port) {
    for (unsigned k = 0; k < FLLM_CHANNELS_PER_CORE; k++) {
        if (FLLM_CORE_CHANNELS[ctx.core][k] == channel) {
            port = k;
            return 0;
        }
    }
    FLLM_FAIL(FLLM_ERR_ADDRESS, "core %u has no port to HBM pseudo-channel %u", ctx.core, channel);
}

// HBM port k (rows `src_stride` apart from `off`) -> buffer `buf` (rows `dst_stride` apart from `addr`)
static void copy_in(CoreBuffers& B, unsigned buf, uint64_t addr, uint64_t dst_stride, FLLM_HBM_PARAMS,
                    unsigned k, uint64_t off, uint64_t src_stride, uint64_t rows, uint64_t row_bytes) {
COPY_IN_ROWS:
    for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
    COPY_IN_BYTES:
        for (uint64_t i = 0; i < row_bytes; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 2097152
#pragma HLS PIPELINE II = 1
            fllm_buf_set(B, buf, addr + r * dst_stride + i, fllm_hbm_get(FLLM_HBM_ARGS, k, off + r * src_stride + i));
        }
    }
}

// buffer `buf` -> HBM port k, row by row
static void copy_out(FLLM_HBM_PARAMS, unsigned k, uint64_t off, uint64_t dst_stride, const CoreBuffers& B,
                     unsigned buf, uint64_t addr, uint64_t src_stride, uint64_t rows, uint64_t row_bytes) {
COPY_OUT_ROWS:
    for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
    COPY_OUT_BYTES:
        for (uint64_t i = 0; i < row_bytes; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 2097152
#pragma HLS PIPELINE II = 1
            fllm_hbm_put(FLLM_HBM_ARGS, k, off + r * dst_stride + i, fllm_buf_get(B, buf, addr + r * src_stride + i));
        }
    }
}

// HBM side of an LD/ST: the ports and the byte extent each one moves (functional.py _hbm)
static unsigned hbm_parts(const MoveFields& f, const CoreRun& ctx, uint64_t rows, uint64_t off,
                          unsigned ports[MAX_STRIPE], unsigned& parts, uint64_t& part_bytes, uint64_t& part_rows,
                          uint64_t& stride) {
    unsigned stripe = f.stripe ? f.stripe : 1;
    if (stripe > FLLM_CHANNELS_PER_CORE)
        FLLM_FAIL(FLLM_ERR_ADDRESS, "stripe=%u exceeds the %u pseudo-channels of core %u", stripe,
                  (unsigned)FLLM_CHANNELS_PER_CORE, ctx.core);
    part_rows = rows;
    part_bytes = f.row_bytes;
    stride = f.hbm_stride;
    unsigned first;
    unsigned err = channel_port(f.channel, ctx, first);
    if (err) return err;
    if (stripe > 1) {                    // one row in `stripe` equal chunks, consecutive ports
        part_rows = 1;
        part_bytes = f.row_bytes / stripe;
        stride = part_bytes;
    }
    parts = stripe;
    uint64_t extent = part_rows ? (part_rows - 1) * stride + part_bytes : 0;
PORTS:
    for (unsigned i = 0; i < stripe; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 8
        unsigned k = (first + i) % FLLM_CHANNELS_PER_CORE;
        unsigned ch = FLLM_CORE_CHANNELS[ctx.core][k];
        (void)ch;                        // named by the messages of C simulation
#ifndef __SYNTHESIS__
        // a port with no buffer bound in this run (hardware cannot tell: the driver checks it)
        if (!fllm_csim_port_bound[k])
            FLLM_FAIL(FLLM_ERR_ADDRESS, "HBM pseudo-channel %u is not bound to core %u", ch, ctx.core);
#endif
        if (off + extent > FLLM_HBM_CHANNEL_BYTES)
            FLLM_FAIL(FLLM_ERR_ADDRESS, "HBM address 0x%llx+0x%llx is past the end of pseudo-channel %u",
                      (unsigned long long)off, (unsigned long long)extent, ch);
#ifndef __SYNTHESIS__
        if (off + extent > fllm_csim_port_bytes[k])
            FLLM_FAIL(FLLM_ERR_ADDRESS, "HBM address 0x%llx+0x%llx is past the 0x%llx-byte buffer bound "
                      "to pseudo-channel %u", (unsigned long long)off, (unsigned long long)extent,
                      (unsigned long long)fllm_csim_port_bytes[k], ch);
#endif
        ports[i] = k;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// LD through the dequantisation unit (wfmt = packed; spec/wformat.py dequant_tile, functional.py
// ld_packed).  The tile is `row_bytes` of HBM (the concatenation of `stripe` chunks, if striped):
//     [FSB codes: one byte per 16x16 block, block-row major]          (sparse only)
//     [4-bit indices, low nibble first, of the blocks with N < 16]     (sparse only)
//     [codes: a `bits`-wide little-endian bit stream of the kept weights, MPE order]
//     [(M uint16, B int16) per row per group of `group` columns]       (bits < 8 only)
//     [rows FP32 row scales]
// It writes the kept INT8 weights (MPE order) then the row scales to wbuf at buf_addr, and if
// sparse the codes to fsb at fsb_addr and the indices to meta at meta_addr.  MPE order: dense
// tiles row by row; sparse tiles block-row by block-row, block by block, row by row inside a
// block, kept columns ascending.  With wcodes (dense, below 8 bits) the unit converts nothing:
// wbuf gets per row its k codes (one byte each) followed by that row's (M, B) bytes as in the
// blob (k + 4 k / group bytes a row), then the row scales (wformat.dequant_tile codes=True).
// ---------------------------------------------------------------------------------------------
static constexpr unsigned BLK = FLLM_SPARSE_BLOCK;

// Byte j of a (possibly striped) tile: chunk j / part_bytes, at the same offset of its port.
#define TILE_PARAMS FLLM_HBM_PARAMS, const unsigned ports[MAX_STRIPE], uint64_t base, uint64_t part_bytes
#define TILE_ARGS FLLM_HBM_ARGS, ports, base, part_bytes
static uint8_t tile_byte(TILE_PARAMS, uint64_t j) {
#pragma HLS INLINE
    unsigned i = (unsigned)(j / part_bytes);
    return fllm_hbm_get(FLLM_HBM_ARGS, ports[i], base + (j - i * part_bytes));
}
#define TILE(j) tile_byte(TILE_ARGS, (j))

// Code `i` of the bit stream starting at tile byte `at` (bit b of the stream: bit b%8 of byte b/8).
static unsigned read_code(TILE_PARAMS, uint64_t at, uint64_t i, unsigned bits) {
    if (bits == 8) return TILE(at + i);
    uint64_t bit = i * bits;
    unsigned shift = (unsigned)(bit & 7);
    unsigned word = TILE(at + (bit >> 3));
    if (shift + bits > 8) word |= (unsigned)TILE(at + (bit >> 3) + 1) << 8;   // a 3-bit code across bytes
    return (word >> shift) & ((1u << bits) - 1);
}

// The dequantisation unit: w8 = clamp((q*M + B + 2^(SHIFT-1)) >> SHIFT, -WMAX, WMAX); 8-bit codes
// are the INT8 weights themselves.
static int8_t dequant(unsigned q, unsigned bits, uint16_t mult, int16_t offset) {
#pragma HLS INLINE
    if (bits == 8) return (int8_t)(uint8_t)q;
    ap_int<24> acc = (ap_int<24>)((int)q * (int)mult + (int)offset + (1 << (FLLM_DEQ_SHIFT - 1)));
    ap_int<24> w = acc >> FLLM_DEQ_SHIFT;                       // arithmetic: floors
    if (w > FLLM_DEQ_WMAX) w = FLLM_DEQ_WMAX;
    if (w < -FLLM_DEQ_WMAX) w = -FLLM_DEQ_WMAX;
    return (int8_t)w.to_int();
}

// 4-bit index `i` of the index section starting at tile byte `at`
static unsigned read_index(TILE_PARAMS, uint64_t at, uint64_t i) {
    uint8_t byte = TILE(at + i / 2);
    return (i & 1) ? (byte >> 4) : (byte & 0xF);
}

// (M, B) of the group of column c of row r: 4 bytes per row per group at tile byte `at`
static void group_param(TILE_PARAMS, uint64_t at, uint64_t groups, unsigned group, uint64_t r, uint64_t c,
                        uint16_t& mult, int16_t& offset) {
#pragma HLS INLINE
    const uint64_t p = at + 4 * (r * groups + c / group);
    mult = (uint16_t)(TILE(p) | (TILE(p + 1) << 8));
    offset = (int16_t)(uint16_t)(TILE(p + 2) | (TILE(p + 3) << 8));
}

static bool legal_fsb_code(unsigned code) {
    for (unsigned c = 0; c < FLLM_NUM_FSB_CODES; c++)
        if (code == FLLM_FSB_CODES[c]) return true;
    return false;
}

static unsigned ld_packed(const MoveFields& f, CoreRun& ctx, CoreBuffers& core, FLLM_HBM_PARAMS) {
    const uint64_t rows = f.rows, k = f.wk, addr = f.buf_addr;
    if (!rows || !k) return 0;
    const unsigned bits = FLLM_WEIGHT_BITS[f.wbits], group = FLLM_WEIGHT_GROUPS[f.wgroup];
    unsigned ports[MAX_STRIPE], parts;
    uint64_t part_bytes, part_rows, stride;
    unsigned err = hbm_parts(f, ctx, 1, f.hbm_addr, ports, parts, part_bytes, part_rows, stride);
    if (err) return err;
COUNT_PARTS:
    for (unsigned i = 0; i < parts; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 8
        ctx.count.hbm_read[ports[i]] += part_bytes;
    }
    const uint64_t base = f.hbm_addr;
    const uint64_t size = f.row_bytes;

    // sections of the tile (wformat.tile_layout); the FSB codes say how much a sparse tile keeps
    const uint64_t nbc = k / BLK, nb = f.sparse ? (rows / BLK) * nbc : 0;
    uint64_t kept = rows * k, n_idx = 0;
    if (f.sparse) {
        if (nb > size)
            FLLM_FAIL(FLLM_ERR_PROGRAM, "packed tile: FSB codes are not N:16 codes; the blob is corrupt or "
                      "not sparse (%llu blocks, %llu bytes)", (unsigned long long)nb, (unsigned long long)size);
        kept = 0;
        bool legal = true;
        uint64_t bad = 0;
        unsigned bad_code = 0;
    FSB_SCAN:
        for (uint64_t b = 0; b < nb; b++) {      // errors are latched and reported after the loop
#pragma HLS LOOP_TRIPCOUNT max = 4096
#pragma HLS PIPELINE II = 1
            unsigned code = TILE(b);
            if (!legal_fsb_code(code) && legal) {
                legal = false;
                bad = b;
                bad_code = code;
            }
            kept += BLK * code;
            if (code < BLK) n_idx += BLK * code;
        }
        (void)bad;
        (void)bad_code;
        if (!legal)
            FLLM_FAIL(FLLM_ERR_PROGRAM, "packed tile: FSB code %u of block %llu is not an N:16 code; the "
                      "blob is corrupt or not sparse", bad_code, (unsigned long long)bad);
    }
    const uint64_t meta_at = nb, meta_bytes = (n_idx + 1) / 2;
    const uint64_t codes_at = meta_at + meta_bytes, code_bytes = (kept * bits + 7) / 8;
    const uint64_t groups = bits < 8 ? k / group : 0;
    const uint64_t params_at = codes_at + code_bytes, scales_at = params_at + 4 * rows * groups;
    const uint64_t total = scales_at + 4 * rows;
    if (size < total)
        FLLM_FAIL(FLLM_ERR_PROGRAM, "packed tile of %llu x %llu (%u-bit%s) needs %llu bytes; the LD reads %llu",
                  (unsigned long long)rows, (unsigned long long)k, bits, f.sparse ? ", sparse" : "",
                  (unsigned long long)total, (unsigned long long)size);
    if (f.sparse && bits < 8) {      // the group of a kept weight comes from its index: ascending
        uint64_t ip = 0, bad = 0;
        bool increasing = true;
    INDEX_ORDER:
        for (uint64_t b = 0; b < nb; b++) {
#pragma HLS LOOP_TRIPCOUNT max = 4096
            unsigned code = TILE(b);
            if (code == BLK) continue;
        INDEX_ROWS:
            for (unsigned r = 0; r < BLK; r++) {
            INDEX_KEPT:
                for (unsigned t = 1; t < code; t++) {
#pragma HLS LOOP_TRIPCOUNT max = 15
#pragma HLS PIPELINE II = 1
                    bool ok = read_index(TILE_ARGS, meta_at, ip + t) > read_index(TILE_ARGS, meta_at, ip + t - 1);
                    if (!ok && increasing) bad = b;
                    increasing &= ok;
                }
                ip += code;
            }
        }
        (void)bad;
        if (!increasing)
            FLLM_FAIL(FLLM_ERR_PROGRAM, "meta buffer: the indices of block (%llu, %llu) are not "
                      "strictly increasing per row; the tile is corrupt",
                      (unsigned long long)(bad / nbc), (unsigned long long)(bad % nbc));
    }
    if (f.sparse && ((uint64_t)BLK * f.wn != kept || f.wmeta != meta_bytes))
        FLLM_FAIL(FLLM_ERR_PROGRAM, "sparse LD: the tile keeps %llu weights with %llu index bytes, but the "
                  "instruction says wn=%u (x16) and wmeta=%u", (unsigned long long)kept,
                  (unsigned long long)meta_bytes, f.wn, f.wmeta);
    // wbuf bytes before the row scales: the kept INT8 weights, or (wcodes) rows of codes and (M, B)
    const uint64_t code_row = k + 4 * groups, values = f.wcodes ? rows * code_row : kept;
    if ((err = fllm_check_region(FLLM_BUF_WBUF_BYTES, addr, 1, values + 4 * rows, 0, "LD (packed) of wbuf")))
        return err;
    if (f.sparse) {
        if ((err = fllm_check_region(FLLM_BUF_FSB_BYTES, f.fsb_addr, 1, nb, 0, "LD (packed) of fsb"))) return err;
        if ((err = fllm_check_region(FLLM_BUF_META_BYTES, f.meta_addr, 1, meta_bytes, 0, "LD (packed) of meta")))
            return err;
    }

    // kept weights in MPE order through the dequantisation unit
    uint8_t* w = core.wbuf + addr;
    uint16_t mult = 0;
    int16_t offset = 0;
    if (f.wcodes) {              // isa: dense, bits < 8; the codes pass the unit unchanged
    CODE_ROWS:
        for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
        CODE_ROW_BYTES:
            for (uint64_t c = 0; c < code_row; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 81920
#pragma HLS PIPELINE II = 1
                w[r * code_row + c] = c < k ? (uint8_t)read_code(TILE_ARGS, codes_at, r * k + c, bits)
                                            : TILE(params_at + 4 * groups * r + (c - k));
            }
        }
    } else if (!f.sparse) {
    DEQUANT_DENSE:
        for (uint64_t i = 0; i < kept; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 2097152
#pragma HLS PIPELINE II = 1
            if (bits < 8) group_param(TILE_ARGS, params_at, groups, group, i / k, i % k, mult, offset);
            w[i] = (uint8_t)dequant(read_code(TILE_ARGS, codes_at, i, bits), bits, mult, offset);
        }
    } else {
        uint64_t vp = 0, ip = 0;     // next kept weight, next index
    DEQUANT_BLOCKS:
        for (uint64_t b = 0; b < nb; b++) {
#pragma HLS LOOP_TRIPCOUNT max = 4096
            unsigned code = TILE(b);
            uint64_t row0 = (b / nbc) * BLK, col0 = (b % nbc) * BLK;
            for (unsigned r = 0; r < BLK; r++) {
            DEQUANT_KEPT:
                for (unsigned t = 0; t < code; t++) {
#pragma HLS LOOP_TRIPCOUNT max = 16
#pragma HLS PIPELINE II = 1
                    unsigned col = code == BLK ? t : read_index(TILE_ARGS, meta_at, ip + t);
                    if (bits < 8) group_param(TILE_ARGS, params_at, groups, group, row0 + r, col0 + col, mult, offset);
                    w[vp + t] = (uint8_t)dequant(read_code(TILE_ARGS, codes_at, vp + t, bits), bits, mult, offset);
                }
                vp += code;
                if (code < BLK) ip += code;
            }
        }
    }
SCALES:
    for (uint64_t i = 0; i < 4 * rows; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 262140
#pragma HLS PIPELINE II = 1
        w[values + i] = TILE(scales_at + i);
    }
    if (f.sparse) {
    FSB_CODES:
        for (uint64_t b = 0; b < nb; b++) {
#pragma HLS LOOP_TRIPCOUNT max = 4096
            core.fsb[f.fsb_addr + b] = TILE(b);
        }
    META:
        for (uint64_t i = 0; i < meta_bytes; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 65536
            core.meta[f.meta_addr + i] = TILE(meta_at + i);
        }
    }
    return 0;
}

unsigned fllm_exec_ld(const MoveFields& f, CoreRun& ctx, CoreBuffers& B, FLLM_HBM_PARAMS, FLLM_PEER_PARAMS) {
    if (f.wfmt) return ld_packed(f, ctx, B, FLLM_HBM_ARGS);
    uint64_t rows, off;
    unsigned err = dyn_rows(f, ctx, rows, off);
    if (err) return err;
    err = fllm_check_region(FLLM_BUF_BYTES[f.buf], f.buf_addr, rows, f.row_bytes, f.buf_stride, "LD buffer");
    if (err) return err;
    if (!rows || !f.row_bytes) return 0;
    CoreCounters& cc = ctx.count;
    if (f.remote) {     // on-chip copy: from core remote_core's buffer at hbm_addr / hbm_stride
        if (f.remote_core >= FLLM_CORES)
            FLLM_FAIL(FLLM_ERR_ADDRESS, "LD from remote core %u: cores are 0..%u", f.remote_core,
                      FLLM_CORES - 1);
        err = fllm_check_region(FLLM_BUF_BYTES[f.buf], f.hbm_addr, rows, f.row_bytes, f.hbm_stride,
                                "remote LD source");
        if (err) return err;
        if (f.remote_core == ctx.core) {    // a local copy; source and destination must not overlap
            const uint64_t s_end = f.hbm_addr + (rows - 1) * f.hbm_stride + f.row_bytes;
            const uint64_t d_end = f.buf_addr + (rows - 1) * f.buf_stride + f.row_bytes;
            if (f.hbm_addr < d_end && f.buf_addr < s_end)
                FLLM_FAIL(FLLM_ERR_ADDRESS, "local copy: source %#llx..%#llx overlaps destination "
                          "%#llx..%#llx", (unsigned long long)f.hbm_addr, (unsigned long long)s_end,
                          (unsigned long long)f.buf_addr, (unsigned long long)d_end);
        LOCAL_COPY:
            for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 128
                for (uint64_t j = 0; j < f.row_bytes; j++) {
#pragma HLS LOOP_TRIPCOUNT max = 65536
                    fllm_buf_set(B, f.buf, f.buf_addr + r * f.buf_stride + j,
                                 fllm_buf_get(B, f.buf, f.hbm_addr + r * f.hbm_stride + j));
                }
            }
            return 0;
        }
        fllm_remote_read(FLLM_PEER_ARGS, (f.remote_core + FLLM_CORES - ctx.core - 1) % FLLM_CORES, B, f.buf,
                         f.hbm_addr, f.hbm_stride, f.buf_addr, f.buf_stride, rows, f.row_bytes);
        return 0;
    }
    unsigned ports[MAX_STRIPE], parts;
    uint64_t part_bytes, part_rows, stride;
    err = hbm_parts(f, ctx, rows, off, ports, parts, part_bytes, part_rows, stride);
    if (err) return err;
    if (parts == 1) {
        copy_in(B, f.buf, f.buf_addr, f.buf_stride, FLLM_HBM_ARGS, ports[0], off, stride, rows, f.row_bytes);
        cc.hbm_read[ports[0]] += rows * f.row_bytes;
        return 0;
    }
STRIPE:
    for (unsigned i = 0; i < parts; i++) {   // one row, chunk i from the i-th port after `channel`
#pragma HLS LOOP_TRIPCOUNT max = 8
        copy_in(B, f.buf, f.buf_addr + i * part_bytes, part_bytes, FLLM_HBM_ARGS, ports[i], off, part_bytes, 1, part_bytes);
        cc.hbm_read[ports[i]] += part_bytes;
    }
    return 0;
}

unsigned fllm_exec_st(const MoveFields& f, CoreRun& ctx, const CoreBuffers& B, FLLM_HBM_PARAMS) {
    uint64_t rows, off;
    unsigned err = dyn_rows(f, ctx, rows, off);
    if (err) return err;
    err = fllm_check_region(FLLM_BUF_BYTES[f.buf], f.buf_addr, rows, f.row_bytes, f.buf_stride, "ST buffer");
    if (err) return err;
    if (!rows || !f.row_bytes) return 0;
    unsigned ports[MAX_STRIPE], parts;
    uint64_t part_bytes, part_rows, stride;
    err = hbm_parts(f, ctx, rows, off, ports, parts, part_bytes, part_rows, stride);
    if (err) return err;
    copy_out(FLLM_HBM_ARGS, ports[0], off, stride, B, f.buf, f.buf_addr, f.buf_stride, rows, f.row_bytes);
    ctx.count.hbm_written[ports[0]] += rows * f.row_bytes;
    return 0;
}
