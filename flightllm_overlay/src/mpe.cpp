// mpe.cpp: the matrix processing engine kernel of one core: MM and MV, dense or N:16 sparse (the sparse MUX), INT8 x INT8 with exact INT32 accumulation and the FP32 -> FP16 epilogue.
//
// Semantics: docs/isa.md section 5 (MM and MV); reference: units.mpe_epilogue / int_matmul and
// the mpe and _sparse_weights_t methods of sim/functional.py (same checks, same order).  The
// epilogue is fp16((fp32(acc) * a_scale[i]) * w_scale[j]), each product rounded to FP32.
//
// A sparse operand (spec/wformat.py) is n/16 x k/16 blocks of 16x16 weights; block b keeps N_b
// weights in each of its 16 rows (N_b in FLLM_FSB_CODES, its code in the fsb buffer).  The kept
// INT8 weights lie in wbuf in MPE order (block-row by block-row, block by block, row by row, kept
// columns ascending) and the blocks with N < 16 have one 4-bit column index per kept weight in the
// meta buffer (low nibble first).  The sparse DSP chain multiplies only kept weights: a MUX picks
// the activation of each one by its index, so a row of block b costs N_b MACs instead of 16.
#include "flightllm_kernels.h"

typedef ap_int<8> i8_t;
typedef ap_int<16> prod_t;
typedef ap_int<32> acc_t;    // |acc| <= 65535 * 128 * 128 < 2^31: exact

static constexpr unsigned BLK = FLLM_SPARSE_BLOCK;
static constexpr unsigned MAX_BLOCKS = FLLM_BUF_FSB_BYTES;     // one code byte per block

// Where each block's kept weights and indices start (relative to w_addr and to the first index
// nibble), filled by sparse_operand for the current instruction.
static uint32_t block_values[MAX_BLOCKS], block_indices[MAX_BLOCKS];

static unsigned index_at(const uint8_t* meta, uint64_t at, uint64_t i) {
#pragma HLS INLINE
    uint8_t byte = meta[at + i / 2];
    return (i & 1) ? (byte >> 4) : (byte & 0xF);
}

// The checks of a sparse operand (functional.py _sparse_weights_t and wformat.expand_sparse, in
// their order) and the block offsets.  0 or FLLM_ERR_*.
static unsigned sparse_operand(const MatFields& f, const CoreState& core, uint64_t n, uint64_t k) {
    const uint64_t nbc = k / BLK, nb = (n / BLK) * nbc;
    unsigned err;
    if ((err = fllm_check_region(FLLM_BUF_FSB_BYTES, f.fsb_addr, 1, nb, 0, "sparse MPE codes (fsb)"))) return err;
    if ((err = fllm_check_region(FLLM_BUF_META_BYTES, f.meta_addr, 1, f.meta_len, 0, "sparse MPE indices (meta)")))
        return err;
    uint64_t kept = 0, n_idx = 0;
    bool legal = true;
CODES:
    for (uint64_t b = 0; b < nb; b++) {
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
ORDER:
    for (uint64_t b = 0; b < nb; b++) {
        unsigned code = core.fsb[f.fsb_addr + b];
        if (code == BLK) continue;
        for (unsigned r = 0; r < BLK; r++) {
            uint64_t i0 = block_indices[b] + (uint64_t)r * code;
            for (unsigned t = 1; t < code; t++) {
#pragma HLS PIPELINE II = 1
                if (index_at(core.meta, f.meta_addr, i0 + t) <= index_at(core.meta, f.meta_addr, i0 + t - 1))
                    FLLM_FAIL(FLLM_ERR_PROGRAM, "meta buffer: the indices of block (%llu, %llu) are not strictly "
                              "increasing per row; the tile is corrupt", (unsigned long long)(b / nbc),
                              (unsigned long long)(b % nbc));
            }
        }
    }
    return 0;
}

// One output of a sparse operand: row i of A times output row j of the weights.  For each block
// of j's block-row, the MUX feeds the DSPs the N activations the kept weights' indices name.
static acc_t sparse_dot(const MatFields& f, const CoreState& core, uint64_t i, uint64_t j, uint64_t k,
                        uint64_t a_stride) {
    const uint64_t nbc = k / BLK, jb = j / BLK, r = j % BLK;
    const uint8_t* a_row = core.abuf + f.a_addr + i * a_stride;
    acc_t acc = 0;
SPARSE_BLOCKS:
    for (uint64_t cb = 0; cb < nbc; cb++) {       // one 16-column block per cycle
#pragma HLS PIPELINE II = 1
        const uint64_t b = jb * nbc + cb;
        const unsigned code = core.fsb[f.fsb_addr + b];
        const uint64_t v0 = f.w_addr + block_values[b] + r * code, i0 = block_indices[b] + r * code;
    SPARSE_MUX:
        for (unsigned t = 0; t < BLK; t++) {        // the chain's BLK slots side by side; N are used
#pragma HLS UNROLL
            if (t < code) {
                unsigned col = code == BLK ? t : index_at(core.meta, f.meta_addr, i0 + t);
                i8_t a = (i8_t)fllm_ld_i8(a_row, cb * BLK + col);
                i8_t w = (i8_t)fllm_ld_i8(core.wbuf, v0 + t);
                prod_t p = a * w;
                acc += p;
            }
        }
    }
    return acc;
}

unsigned fllm_exec_mpe(const MatFields& f, bool mv, RunContext& ctx) {
    uint64_t m = f.m, n = f.n, k = f.k;
    if (f.dyn_n || f.dyn_k) {
        uint64_t eff = (uint64_t)ctx.pos + ctx.len;
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
    if (!(m && n && k)) return 0;
    CoreState& core = ctx.cores[ctx.core];
    const uint8_t* abuf = core.abuf;
    const uint8_t* wbuf = core.wbuf;
    uint8_t* gbuf = core.gbuf;
    uint64_t a_stride = f.a_stride ? f.a_stride : k;
    uint64_t rows = f.wt ? k : n, cols = f.wt ? n : k;
    uint64_t w_stride = f.w_stride ? f.w_stride : cols;
    uint64_t o_stride = f.out_stride ? f.out_stride : 2 * n;
    unsigned err;
    if ((err = fllm_check_array(FLLM_BUF_ABUF_BYTES, f.a_addr, m, k, 1, a_stride, "MPE input"))) return err;
    if ((err = fllm_check_array(FLLM_BUF_ABUF_BYTES, f.a_scale, 1, m, 4, 4 * m, "MPE input scales"))) return err;
    if (f.sparse) {
        if ((err = sparse_operand(f, core, n, k))) return err;
    } else if ((err = fllm_check_region(FLLM_BUF_WBUF_BYTES, f.w_addr, rows, cols, w_stride, "MPE weights"))) {
        return err;
    }
    if (!f.no_wscale &&
        (err = fllm_check_array(FLLM_BUF_WBUF_BYTES, f.w_scale, 1, n, 4, 4 * n, "MPE weight scales")))
        return err;
    if ((err = fllm_check_array(FLLM_BUF_GBUF_BYTES, f.out_addr, m, n, 2, o_stride, "MPE output"))) return err;

    // Output-stationary: one (i, j) accumulator at a time here; hardware unrolls MM_PAR (MM) or
    // MV_PAR (MV) of them and K by PAR_K per cycle (the loop below, pipelined at II=1 over k).
ROWS:
    for (uint64_t i = 0; i < m; i++) {
        float sa = fllm_ld_f32(abuf, f.a_scale + 4 * i);
    COLS:
        for (uint64_t j = 0; j < n; j++) {
            acc_t acc = 0;
            if (f.sparse) {
                acc = sparse_dot(f, core, i, j, k, a_stride);
            } else {
            DOT:
                for (uint64_t kk = 0; kk < k; kk++) {
#pragma HLS PIPELINE II = 1
                    i8_t a = (i8_t)fllm_ld_i8(abuf, f.a_addr + i * a_stride + kk);
                    uint64_t wa = f.wt ? f.w_addr + kk * w_stride + j : f.w_addr + j * w_stride + kk;
                    i8_t w = (i8_t)fllm_ld_i8(wbuf, wa);
                    prod_t p = a * w;
                    acc += p;
                }
            }
            float y = (float)acc.to_int() * sa;                 // FP32 product, rounded
            if (!f.no_wscale) y = y * fllm_ld_f32(wbuf, f.w_scale + 4 * j);
            fllm_st_u16(gbuf, f.out_addr + i * o_stride + 2 * j, fllm_f32_to_f16(y));
        }
    }
    core.count.macs += f.sparse ? m * BLK * f.nnz : m * n * k;
    core.count.fixed_macs += m * n * k;
    return 0;
}

// The MPE kernel: drains the core's MM and MV queues (two datapath modes of one engine).
void mpe(unsigned* insns_lo, unsigned* insns_hi, unsigned* macs_lo, unsigned* macs_hi,
         unsigned* fixed_macs_lo, unsigned* fixed_macs_hi, RunContext& link) {
#pragma HLS INTERFACE mode = s_axilite port = insns_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = insns_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = macs_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = macs_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = fixed_macs_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = fixed_macs_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control
    fllm_unit_drain(FLLM_UNIT_MM, link);
    fllm_unit_drain(FLLM_UNIT_MV, link);
    const CoreCounters& cc = link.cores[link.core].count;
    uint64_t insns = cc.insns[FLLM_UNIT_MM] + cc.insns[FLLM_UNIT_MV];
    *insns_lo = (unsigned)insns;
    *insns_hi = (unsigned)(insns >> 32);
    *macs_lo = (unsigned)cc.macs;
    *macs_hi = (unsigned)(cc.macs >> 32);
    *fixed_macs_lo = (unsigned)cc.fixed_macs;
    *fixed_macs_hi = (unsigned)(cc.fixed_macs >> 32);
}
