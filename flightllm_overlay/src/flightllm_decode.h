// flightllm_decode.h: instruction field decoding of the FlightLLM HLS kernels (bit string -> the LD/ST, MM/MV and MISC field structs).
//
// Field offsets and widths come from the generated flightllm_hw.h (isa.FORMATS); included by
// flightllm_kernels.h after the field structs, so that every kernel source decodes on its own.
#ifndef FLIGHTLLM_DECODE_H
#define FLIGHTLLM_DECODE_H

static inline MoveFields fllm_decode_move(const insn_bits_t& b) {
    MoveFields f;
    f.wait = FLLM_GET(b, LD, WAIT);
    f.release = FLLM_GET(b, LD, RELEASE);
    f.buf = FLLM_GET(b, LD, BUF);
    f.dyn = FLLM_GET(b, LD, DYN);
    f.remote = FLLM_GET(b, LD, REMOTE);
    f.remote_core = FLLM_GET(b, LD, REMOTE_CORE);
    f.channel = FLLM_GET(b, LD, CHANNEL);
    f.stripe = FLLM_GET(b, LD, STRIPE);
    f.hbm_addr = FLLM_GET(b, LD, HBM_ADDR);
    f.buf_addr = FLLM_GET(b, LD, BUF_ADDR);
    f.rows = FLLM_GET(b, LD, ROWS);
    f.row_bytes = FLLM_GET(b, LD, ROW_BYTES);
    f.hbm_stride = FLLM_GET(b, LD, HBM_STRIDE);
    f.buf_stride = FLLM_GET(b, LD, BUF_STRIDE);
    f.wfmt = FLLM_GET(b, LD, WFMT);
    f.wk = FLLM_GET(b, LD, WK);
    f.wbits = FLLM_GET(b, LD, WBITS);
    f.wgroup = FLLM_GET(b, LD, WGROUP);
    f.sparse = FLLM_GET(b, LD, SPARSE);
    f.meta_addr = FLLM_GET(b, LD, META_ADDR);
    f.fsb_addr = FLLM_GET(b, LD, FSB_ADDR);
    f.wn = FLLM_GET(b, LD, WN);
    f.wmeta = FLLM_GET(b, LD, WMETA);
    f.wcodes = FLLM_GET(b, LD, WCODES);
    return f;
}

static inline MatFields fllm_decode_mat(const insn_bits_t& b) {
    MatFields f;
    f.wait = FLLM_GET(b, MM, WAIT);
    f.release = FLLM_GET(b, MM, RELEASE);
    f.wt = FLLM_GET(b, MM, WT);
    f.dyn_n = FLLM_GET(b, MM, DYN_N);
    f.dyn_k = FLLM_GET(b, MM, DYN_K);
    f.no_wscale = FLLM_GET(b, MM, NO_WSCALE);
    f.m = FLLM_GET(b, MM, M);
    f.n = FLLM_GET(b, MM, N);
    f.k = FLLM_GET(b, MM, K);
    f.a_addr = FLLM_GET(b, MM, A_ADDR);
    f.a_scale = FLLM_GET(b, MM, A_SCALE);
    f.w_addr = FLLM_GET(b, MM, W_ADDR);
    f.w_scale = FLLM_GET(b, MM, W_SCALE);
    f.out_addr = FLLM_GET(b, MM, OUT_ADDR);
    f.a_stride = FLLM_GET(b, MM, A_STRIDE);
    f.w_stride = FLLM_GET(b, MM, W_STRIDE);
    f.out_stride = FLLM_GET(b, MM, OUT_STRIDE);
    f.sparse = FLLM_GET(b, MM, SPARSE);
    f.meta_addr = FLLM_GET(b, MM, META_ADDR);
    f.fsb_addr = FLLM_GET(b, MM, FSB_ADDR);
    f.nnz = FLLM_GET(b, MM, NNZ);
    f.meta_len = FLLM_GET(b, MM, META_LEN);
    f.blk_sink = FLLM_GET(b, MM, BLK_SINK);
    f.blk_win = FLLM_GET(b, MM, BLK_WIN);
    f.dyn_m = FLLM_GET(b, MM, DYN_M);
    f.m_group = FLLM_GET(b, MM, M_GROUP);
    f.agroup = FLLM_GET(b, MM, AGROUP);
    f.wcodes = FLLM_GET(b, MM, WCODES);
    return f;
}

static inline MiscFields fllm_decode_misc(const insn_bits_t& b) {
    MiscFields f;
    f.wait = FLLM_GET(b, MISC, WAIT);
    f.release = FLLM_GET(b, MISC, RELEASE);
    f.op = FLLM_GET(b, MISC, OP);
    f.dyn_k = FLLM_GET(b, MISC, DYN_K);
    f.causal = FLLM_GET(b, MISC, CAUSAL);
    f.out_abuf = FLLM_GET(b, MISC, OUT_ABUF);
    f.bcast_b = FLLM_GET(b, MISC, BCAST_B);
    f.b_f32 = FLLM_GET(b, MISC, B_F32);
    f.rows = FLLM_GET(b, MISC, ROWS);
    f.k = FLLM_GET(b, MISC, K);
    f.groups = FLLM_GET(b, MISC, GROUPS);
    f.a_addr = FLLM_GET(b, MISC, A_ADDR);
    f.b_addr = FLLM_GET(b, MISC, B_ADDR);
    f.out_addr = FLLM_GET(b, MISC, OUT_ADDR);
    f.out2_addr = FLLM_GET(b, MISC, OUT2_ADDR);
    f.a_stride = FLLM_GET(b, MISC, A_STRIDE);
    f.b_stride = FLLM_GET(b, MISC, B_STRIDE);
    f.out_stride = FLLM_GET(b, MISC, OUT_STRIDE);
    f.imm = (uint32_t)FLLM_GET(b, MISC, IMM);
    f.blk_sink = FLLM_GET(b, MISC, BLK_SINK);
    f.blk_win = FLLM_GET(b, MISC, BLK_WIN);
    f.amax = FLLM_GET(b, MISC, AMAX);
    f.given_max = FLLM_GET(b, MISC, GIVEN_MAX);
    f.diffuse = FLLM_GET(b, MISC, DIFFUSE);
    f.dyn_rows = FLLM_GET(b, MISC, DYN_ROWS);
    f.residual = FLLM_GET(b, MISC, RESIDUAL);
    f.agroup = FLLM_GET(b, MISC, AGROUP);
    return f;
}

#endif  // FLIGHTLLM_DECODE_H
