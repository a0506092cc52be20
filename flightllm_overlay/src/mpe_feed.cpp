// mpe_feed.cpp: memctrl's MPE feeder: checks an MM/MV instruction, streams its operands to the mpe kernel as the beats of docs/mpe_stream.md (INT8 weights, N:16 sparse or codes with exact group arithmetic), and applies the FP32 -> FP16 epilogue to the results.
//
// Semantics: docs/isa.md section 5 (MM and MV); reference: units.mpe_epilogue / int_matmul and
// the mpe and _sparse_weights_t methods of sim/functional.py (same checks, same order).  The
// epilogue is fp16((fp32(acc) * a_scale[i]) * w_scale[j]), each product rounded to FP32.
//
// A sparse operand (spec/wformat.py) is n/16 x k/16 blocks of 16x16 weights; block b keeps N_b
// weights in each of its 16 rows (N_b in FLLM_FSB_CODES, its code in the fsb buffer).  The kept
// INT8 weights lie in wbuf in MPE order (block-row by block-row, block by block, row by row, kept
// columns ascending) and the blocks with N < 16 have one 4-bit column index per kept weight in the
// meta buffer (low nibble first).
//
// An operand of codes (wcodes = g > 0; spec/arithmetic.py mpe_codes) is n rows, w_stride apart,
// each k codes q (one unsigned byte; an LD writes 0..15) followed by its (M uint16, B int16) per
// group of G = FLLM_WEIGHT_GROUPS[g - 1] columns.  The codes go through the MPE's INT8 chain as
// dense weights in offset binary (the byte q ^ 0x80 is the INT8 q - 128, exact for any byte), one
// pass per group (per min(G, agroup) columns with agroup), giving P' = sum (q - 128) a exactly;
// the feeder sums the pass's activations (A = sum a), so P = P' + 128 A, and adds M P + B A per
// output into the exact accumulator, which the epilogue scales by 2^-8 (the (M, B) fixed point)
// first.
#include "memctrl.h"

static constexpr unsigned BLK = FLLM_SPARSE_BLOCK;
static constexpr unsigned MAX_BLOCKS = FLLM_BUF_FSB_BYTES;     // one code byte per block
// wcodes: the exact accumulator counts units of 2^-8 weights ((M, B)'s fixed point,
// arithmetic.CODE_SHIFT = the dequantisation unit's shift)
static constexpr float CODE_SCALE = 1.0f / (float)(1u << FLLM_CODE_SHIFT);

// Where each block's kept weights and indices start (relative to w_addr and to the first index
// nibble), filled by sparse_operand for the current instruction.
FLLM_CU_STATIC uint32_t block_values[MAX_BLOCKS], block_indices[MAX_BLOCKS];

static unsigned index_at(const uint8_t* meta, uint64_t at, uint64_t i) {
#pragma HLS INLINE
    uint8_t byte = meta[at + i / 2];
    return (i & 1) ? (byte >> 4) : (byte & 0xF);
}

// The checks of a sparse operand (sim/mpe_weights.py _sparse_weights_t and wformat.expand_sparse, in
// their order) and the block offsets.  0 or FLLM_ERR_*.
static unsigned sparse_operand(const MatFields& f, const CoreBuffers& core, uint64_t n, uint64_t k) {
    const uint64_t nbc = k / BLK, nb = (n / BLK) * nbc;
    unsigned err;
    if ((err = fllm_check_region(FLLM_BUF_FSB_BYTES, f.fsb_addr, 1, nb, 0, "sparse MPE codes (fsb)"))) return err;
    if ((err = fllm_check_region(FLLM_BUF_META_BYTES, f.meta_addr, 1, f.meta_len, 0, "sparse MPE indices (meta)")))
        return err;
    uint64_t kept = 0, n_idx = 0;
    bool legal = true;
CODES:
    for (uint64_t b = 0; b < nb; b++) {
#pragma HLS LOOP_TRIPCOUNT max = 4096
#pragma HLS PIPELINE II = 1
        unsigned code = core.fsb[f.fsb_addr + b];
        bool ok = false;
        for (unsigned c = 0; c < FLLM_NUM_FSB_CODES; c++) ok |= code == FLLM_FSB_CODES[c];
        legal &= ok;
        block_values[b] = (uint32_t)(BLK * kept);
        block_indices[b] = (uint32_t)n_idx;
        kept += code;
        if (code < BLK) n_idx += BLK * code;
    }
    if (!legal)
        FLLM_FAIL(FLLM_ERR_PROGRAM, "sparse MPE: the N:16 codes at fsb 0x%x keep invalid weights, but nnz=%u "
                  "(x16); the operand does not match the tile the LD brought in", f.fsb_addr, f.nnz);
    if (kept != f.nnz)
        FLLM_FAIL(FLLM_ERR_PROGRAM, "sparse MPE: the N:16 codes at fsb 0x%x keep %llu weights, but nnz=%u (x16); "
                  "the operand does not match the tile the LD brought in", f.fsb_addr,
                  (unsigned long long)(BLK * kept), f.nnz);
    if ((err = fllm_check_region(FLLM_BUF_WBUF_BYTES, f.w_addr, 1, (uint64_t)BLK * f.nnz, 0, "sparse MPE weights")))
        return err;
    if (2 * (uint64_t)f.meta_len < n_idx)
        FLLM_FAIL(FLLM_ERR_PROGRAM, "sparse operands need %llu indices; the meta region holds %llu",
                  (unsigned long long)n_idx, 2 * (unsigned long long)f.meta_len);
    bool increasing = true;
    uint64_t bad = 0;
ORDER:
    for (uint64_t b = 0; b < nb; b++) {
#pragma HLS LOOP_TRIPCOUNT max = 4096
        unsigned code = core.fsb[f.fsb_addr + b];
        if (code == BLK) continue;
    ORDER_ROWS:
        for (unsigned r = 0; r < BLK; r++) {
            uint64_t i0 = block_indices[b] + (uint64_t)r * code;
        ORDER_KEPT:
            for (unsigned t = 1; t < code; t++) {
#pragma HLS LOOP_TRIPCOUNT max = 15
#pragma HLS PIPELINE II = 1
                bool ok = index_at(core.meta, f.meta_addr, i0 + t) > index_at(core.meta, f.meta_addr, i0 + t - 1);
                if (!ok && increasing) bad = b;
                increasing &= ok;
            }
        }
    }
    (void)bad;                               // named by the message of C simulation
    if (!increasing)
        FLLM_FAIL(FLLM_ERR_PROGRAM, "meta buffer: the indices of block (%llu, %llu) are not strictly "
                  "increasing per row; the tile is corrupt", (unsigned long long)(bad / nbc),
                  (unsigned long long)(bad % nbc));
    return 0;
}

// log2(N) - 1 for N in FLLM_FSB_CODES (the beat's CODE byte)
static unsigned code_byte(unsigned n) { return n == 2 ? 0 : n == 4 ? 1 : n == 8 ? 2 : 3; }

struct PassOperands {      // where one pass reads its operands
    const MatFields* f;
    const CoreBuffers* core;
    uint64_t m, n, k, a_stride, w_stride, i, jb;
    uint64_t cb0, cb1;     // the pass's column blocks [cb0, cb1) (agroup: one group's)
    uint8_t wflip;         // XORed into each weight byte: 0x80 for codes (q - 128 in INT8), else 0
};

// The activation bytes of rows i (A) and i+1 (B) for column block cb (zeros past k or past m).
static void put_activations(const PassOperands& p, uint64_t cb, uint8_t by[FLLM_BEAT_BYTES]) {
ACTS:
    for (unsigned c = 0; c < BLK; c++) {
#pragma HLS UNROLL
        uint64_t kk = cb * BLK + c;
        bool in_k = kk < p.k;
        by[24 + c] = in_k ? p.core->abuf[p.f->a_addr + p.i * p.a_stride + kk] : 0;
        by[40 + c] = in_k && p.i + 1 < p.m ? p.core->abuf[p.f->a_addr + (p.i + 1) * p.a_stride + kk] : 0;
    }
}

// One pass of a dense operand: per column block, one beat per output row of block-row jb.  asum:
// the sums of the activations the pass sends for rows i and i+1 (the adder tree of wcodes' A).
static void dense_pass(const PassOperands& p, fllm_link_t& op, int32_t asum[2]) {
    const MatFields& f = *p.f;
    const unsigned rows = (unsigned)(p.n - p.jb * BLK < BLK ? p.n - p.jb * BLK : BLK);
DENSE_BLOCKS:
    for (uint64_t cb = p.cb0; cb < p.cb1; cb++) {
#pragma HLS LOOP_TRIPCOUNT max = 4096
        uint8_t by[FLLM_BEAT_BYTES] = {0};
        put_activations(p, cb, by);
    ACT_SUMS:
        for (unsigned c = 0; c < BLK; c++) {
#pragma HLS UNROLL
            asum[0] += (int8_t)by[24 + c];
            asum[1] += (int8_t)by[40 + c];
        }
        by[56] = code_byte(BLK);
        by[FLLM_KIND_BYTE] = FLLM_KIND_MPE_OPERAND;
        for (unsigned t = 0; t < BLK / 2; t++) by[16 + t] = (uint8_t)((2 * t) | ((2 * t + 1) << 4));
    DENSE_ROWS:
        for (unsigned r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 16
#pragma HLS PIPELINE II = 1
            const uint64_t j = p.jb * BLK + r;
            for (unsigned t = 0; t < BLK; t++) {
                uint64_t kk = cb * BLK + t;
                uint64_t wa = f.wt ? f.w_addr + kk * p.w_stride + j : f.w_addr + j * p.w_stride + kk;
                by[t] = kk < p.k ? (uint8_t)(p.core->wbuf[wa] ^ p.wflip) : 0;
            }
            by[57] = (uint8_t)r;
            op.write(fllm_beat_of(by, cb + 1 == p.cb1 && r + 1 == rows));
        }
    }
}

// One pass of a sparse operand: per block (jb, cb) of code N, N beats of 16/N rows each.
static void sparse_pass(const PassOperands& p, fllm_link_t& op) {
    const MatFields& f = *p.f;
    const uint64_t nbc = p.k / BLK;
SPARSE_BLOCKS:
    for (uint64_t cb = p.cb0; cb < p.cb1; cb++) {
#pragma HLS LOOP_TRIPCOUNT max = 4096
        const uint64_t b = p.jb * nbc + cb;
        const unsigned code = p.core->fsb[f.fsb_addr + b], group = BLK / code;
        uint8_t by[FLLM_BEAT_BYTES] = {0};
        put_activations(p, cb, by);
        by[56] = code_byte(code);
        by[FLLM_KIND_BYTE] = FLLM_KIND_MPE_OPERAND;
    SPARSE_BEATS:
        for (unsigned q = 0; q < code; q++) {
#pragma HLS LOOP_TRIPCOUNT max = 16
#pragma HLS PIPELINE II = 1
            const unsigned r0 = q * group;
            for (unsigned t = 0; t < BLK; t++) {
                const unsigned r = r0 + t / code, u = t % code;
                const uint64_t v = f.w_addr + block_values[b] + (uint64_t)r * code + u;
                const unsigned col = code == BLK ? u : index_at(p.core->meta, f.meta_addr,
                                                                block_indices[b] + (uint64_t)r * code + u);
                by[t] = p.core->wbuf[v];
                if (t & 1) by[16 + t / 2] = (uint8_t)((by[16 + t / 2] & 0xF) | (col << 4));
                else by[16 + t / 2] = (uint8_t)col;
            }
            by[57] = (uint8_t)r0;
            op.write(fllm_beat_of(by, cb + 1 == p.cb1 && q + 1 == code));
        }
    }
}

static void read_results(fllm_link_t& res, int32_t acc[2][BLK]) {
RESULTS:
    for (unsigned lane = 0; lane < 2; lane++) {
        uint8_t by[FLLM_BEAT_BYTES];
        fllm_beat_bytes(res.read(), by);
        for (unsigned r = 0; r < BLK; r++) acc[lane][r] = (int32_t)fllm_ld_u32(by, 4 * r);
    }
}

unsigned fllm_exec_mpe(const MatFields& f, bool mv, uint32_t pc, CoreRun& run, CoreBuffers& core,
                       fllm_link_t& mpe_op, fllm_link_t& mpe_res) {
    uint64_t m = f.m, n = f.n, k = f.k;
    if (f.dyn_n || f.dyn_k) {
        uint64_t eff = (uint64_t)run.pos + run.len;
        if (f.dyn_n && eff > n)
            FLLM_FAIL(FLLM_ERR_PROGRAM, "run-time length %llu exceeds the %llu this %s was compiled "
                      "for (dyn_n)", (unsigned long long)eff, (unsigned long long)n, mv ? "MV" : "MM");
        if (f.dyn_k && eff > k)
            FLLM_FAIL(FLLM_ERR_PROGRAM, "run-time length %llu exceeds the %llu this %s was compiled "
                      "for (dyn_k)", (unsigned long long)eff, (unsigned long long)k, mv ? "MV" : "MM");
        if (f.dyn_n) n = eff;
        if (f.dyn_k) k = eff;
    }
    if (mv && m > FLLM_MV_MAX_ROWS)
        FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "MV handles at most %u rows", FLLM_MV_MAX_ROWS);
    fllm_beat_t insn = fllm_header(FLLM_KIND_MPE_INSN);
    insn.last = 0;
    fllm_put_u32(insn, 16, pc);
    insn.data.range(8 * 20 + 7, 8 * 20) = mv ? 1 : 0;
    if (!(m && n && k)) {
        mpe_op.write(insn);
        return 0;
    }
    uint64_t a_stride = f.a_stride ? f.a_stride : k;
    uint64_t rows = f.wt ? k : n, cols = f.wt ? n : k;
    // wcodes: (M, B) per GW columns; a row of codes and parameters is k + 4 k / GW bytes (isa
    // checked: dense, no wt, static n and k, k % GW == 0)
    const uint64_t GW = f.wcodes ? FLLM_WEIGHT_GROUPS[f.wcodes - 1] : 0, code_row = GW ? k + 4 * (k / GW) : 0;
    uint64_t w_stride = f.w_stride ? f.w_stride : GW ? code_row : cols;
    uint64_t o_stride = f.out_stride ? f.out_stride : 2 * n;
    unsigned err;
    if ((err = fllm_check_array(FLLM_BUF_ABUF_BYTES, f.a_addr, m, k, 1, a_stride, "MPE input"))) return err;
    // agroup: shared-exponent groups of G columns (isa checked k % G == 0, static k); per row of A
    // W bytes of scales: the FP32 row scale, then one exponent byte per group
    const uint64_t G = FLLM_ACT_GROUPS[f.agroup], na = G ? k / G : 1, W = G ? 4 + 4 * ((na + 3) / 4) : 4;
    if ((err = G ? fllm_check_array(FLLM_BUF_ABUF_BYTES, f.a_scale, m, W / 4, 4, W, "MPE input scales")
                 : fllm_check_array(FLLM_BUF_ABUF_BYTES, f.a_scale, 1, m, 4, 4 * m, "MPE input scales")))
        return err;
    if (GW) {
        if ((err = fllm_check_region(FLLM_BUF_WBUF_BYTES, f.w_addr, n, code_row, w_stride,
                                     "MPE code rows (codes and group parameters)")))
            return err;
    } else if (f.sparse) {
        if ((err = sparse_operand(f, core, n, k))) return err;
    } else if ((err = fllm_check_region(FLLM_BUF_WBUF_BYTES, f.w_addr, rows, cols, w_stride, "MPE weights"))) {
        return err;
    }
    if (!f.no_wscale &&
        (err = fllm_check_array(FLLM_BUF_WBUF_BYTES, f.w_scale, 1, n, 4, 4 * n, "MPE weight scales")))
        return err;
    if ((err = fllm_check_array(FLLM_BUF_GBUF_BYTES, f.out_addr, m, n, 2, o_stride, "MPE output"))) return err;

    // dyn_m: only the rows whose token (r mod m_group, 0: m) is below len are computed and written
    const uint64_t group = f.m_group ? f.m_group : m;
    auto live = [&](uint64_t r) { return !f.dyn_m || r % group < run.len; };
    uint64_t m_live = m;
    if (f.dyn_m && run.len < group)
        m_live = m / group * run.len + (m % group < run.len ? m % group : run.len);
    const uint64_t macs = f.sparse ? m_live * BLK * f.nnz : m_live * n * k, fixed = m_live * n * k;
    fllm_put_u64(insn, 0, macs);
    fllm_put_u64(insn, 8, fixed);
    mpe_op.write(insn);
    run.count.macs += macs;
    run.count.fixed_macs += fixed;

    // Passes: two rows of A by one 16-row block of outputs; the feeder waits for each pass's
    // results (docs/mpe_stream.md: one pass in flight), then writes them through the epilogue.
    // With agroup one pass per group of columns, each group's exact sums shifted left by 7 - e
    // into an exact accumulator, then scaled by the row scale / 128 (units.mpe_grouped).  With
    // wcodes one pass per S = min(GW, G) columns (a sub-group of one weight group and one
    // activation group): part = (M P + B A) << (7 - e) with P = P' + 128 A (|P'| < 2^21 in the
    // MPE's 32 bits, |P| < 2^22), |M P| < 2^38, |B A| < 2^29, shifted < 2^46, summed over <= 4096
    // passes < 2^58: exact in the 64-bit accumulator.
    const uint64_t S = GW ? (G && G < GW ? G : GW) : G, passes = S ? k / S : 1;
    const uint64_t nbc = (k + BLK - 1) / BLK, group_blocks = S ? S / BLK : nbc;
    PassOperands p = {&f, &core, m, n, k, a_stride, w_stride, 0, 0, 0, nbc, (uint8_t)(GW ? 0x80 : 0)};
PASS_ROWS:
    for (uint64_t i = 0; i < m; i += 2) {
#pragma HLS LOOP_TRIPCOUNT max = 128
        if (!live(i) && !(i + 1 < m && live(i + 1))) continue;     // dyn_m: both past the prompt
    PASS_BLOCKS:
        for (uint64_t jb = 0; jb * BLK < n; jb++) {
#pragma HLS LOOP_TRIPCOUNT max = 4096
            p.i = i;
            p.jb = jb;
            int64_t t[2][BLK];
        GROUPS:
            for (uint64_t g = 0; g < passes; g++) {
#pragma HLS LOOP_TRIPCOUNT max = 4096
                p.cb0 = g * group_blocks;
                p.cb1 = S ? p.cb0 + group_blocks : nbc;
                int32_t asum[2] = {0, 0};
                if (f.sparse) sparse_pass(p, mpe_op);
                else dense_pass(p, mpe_op, asum);
                int32_t acc[2][BLK];
                read_results(mpe_res, acc);
                const uint64_t ag = G ? g * S / G : 0;                      // the pass's activation group
                const uint64_t par = f.w_addr + k + 4 * (GW ? g * S / GW : 0);   // its (M, B) in code row 0
                for (unsigned lane = 0; lane < 2 && i + lane < m; lane++) {
                    const uint64_t row = i + lane;
                    const unsigned e = G ? core.abuf[f.a_scale + row * W + 4 + ag] & FLLM_GROUP_EXP_MAX : 0;
                    const unsigned shift = G ? FLLM_GROUP_EXP_MAX - e : 0;
                    for (unsigned r = 0; r < BLK; r++) {
#pragma HLS PIPELINE II = 1
                        const uint64_t j = jb * BLK + r;
                        int64_t sum = acc[lane][r];                          // INT8 weights: P
                        if (GW && j < n) {                                   // codes: M P + B A
                            const int64_t mult = fllm_ld_u16(core.wbuf, par + j * w_stride);
                            const int64_t offset = (int16_t)fllm_ld_u16(core.wbuf, par + j * w_stride + 2);
                            const int64_t prod = sum + (int64_t)asum[lane] * 128;     // P = P' + 128 A
                            sum = mult * prod + asum[lane] * offset;
                        }
                        const int64_t part = sum * ((int64_t)1 << shift);   // exact
                        t[lane][r] = g ? t[lane][r] + part : part;
                    }
                }
            }
        EPILOGUE:
            for (unsigned lane = 0; lane < 2 && i + lane < m; lane++) {
                const uint64_t row = i + lane;
                if (!live(row)) continue;
                const float sa = fllm_ld_f32(core.abuf, f.a_scale + (G ? row * W : 4 * row));
                const float sd = G ? sa / 128.0f : sa;               // exact: a power of two
                for (unsigned r = 0; r < BLK && jb * BLK + r < n; r++) {
#pragma HLS PIPELINE II = 1
                    const uint64_t j = jb * BLK + r;
                    float y = (float)t[lane][r];                     // FP32, rounded to nearest even
                    if (GW) y = y * CODE_SCALE;                      // exact: a power of two
                    y = y * sd;                                      // FP32 product, rounded
                    if (!f.no_wscale) y = y * fllm_ld_f32(core.wbuf, f.w_scale + 4 * j);
                    fllm_st_u16(core.gbuf, f.out_addr + row * o_stride + 2 * j, fllm_f32_to_f16(y));
                }
            }
        }
    }
    return 0;
}
