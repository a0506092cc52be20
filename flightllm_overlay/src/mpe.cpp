// mpe.cpp: the matrix processing engine kernel of one core: MM and MV, INT8 x INT8 with exact INT32 accumulation and the FP32 -> FP16 epilogue.
//
// Semantics: docs/isa.md section 5 (MM and MV); reference: units.mpe_epilogue / int_matmul and
// the mpe method of sim/functional.py (same checks, same order).  The epilogue is
// fp16((fp32(acc) * a_scale[i]) * w_scale[j]), each product rounded to FP32.
#include "flightllm_kernels.h"

typedef ap_int<8> i8_t;
typedef ap_int<16> prod_t;
typedef ap_int<32> acc_t;    // |acc| <= 65535 * 128 * 128 < 2^31: exact

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
    if ((err = fllm_check_region(FLLM_BUF_WBUF_BYTES, f.w_addr, rows, cols, w_stride, "MPE weights"))) return err;
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
        DOT:
            for (uint64_t kk = 0; kk < k; kk++) {
#pragma HLS PIPELINE II = 1
                i8_t a = (i8_t)fllm_ld_i8(abuf, f.a_addr + i * a_stride + kk);
                uint64_t wa = f.wt ? f.w_addr + kk * w_stride + j : f.w_addr + j * w_stride + kk;
                i8_t w = (i8_t)fllm_ld_i8(wbuf, wa);
                prod_t p = a * w;
                acc += p;
            }
            float y = (float)acc.to_int() * sa;                 // FP32 product, rounded
            if (!f.no_wscale) y = y * fllm_ld_f32(wbuf, f.w_scale + 4 * j);
            fllm_st_u16(gbuf, f.out_addr + i * o_stride + 2 * j, fllm_f32_to_f16(y));
        }
    }
    core.count.macs += m * n * k;
    return 0;
}

// The MPE kernel: drains the core's MM and MV queues (two datapath modes of one engine).
void mpe(unsigned* insns_lo, unsigned* insns_hi, unsigned* macs_lo, unsigned* macs_hi,
         RunContext& link) {
#pragma HLS INTERFACE mode = s_axilite port = insns_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = insns_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = macs_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = macs_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control
    fllm_unit_drain(FLLM_UNIT_MM, link);
    fllm_unit_drain(FLLM_UNIT_MV, link);
    const CoreCounters& cc = link.cores[link.core].count;
    uint64_t insns = cc.insns[FLLM_UNIT_MM] + cc.insns[FLLM_UNIT_MV];
    *insns_lo = (unsigned)insns;
    *insns_hi = (unsigned)(insns >> 32);
    *macs_lo = (unsigned)cc.macs;
    *macs_hi = (unsigned)(cc.macs >> 32);
}
