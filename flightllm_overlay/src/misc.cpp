// misc.cpp: the MISC (special function unit) kernel of one core: eadd, emul, softmax, layernorm, rmsnorm, silu, relu, rope, quant, amax (dyn_k, dyn_rows, causal with block-sparse patterns, groups, bcast_b, b_f32, row maxima out and in, quant's diffusion and residual).
//
// The kernel holds no buffer of the core: memctrl sends it a job (the instruction, P and L) on
// `op`; misc checks the operands, reads the rows it needs by READ requests on `req` (the bytes come
// back on `op`), computes every output into its staging memory, writes them back by WRITE requests
// and answers DONE (error code, elements).  It stops on END.
//
// Semantics: docs/isa.md section 5 (MISC); reference: the MISC functions of spec/arithmetic.py and the
// misc method of sim/functional.py (same checks in the same order).  FP16 in, FP32 arithmetic with
// one rounding per operation, FP16 (or INT8 + FP32 scales for quant) out.  Row sums are
// accumulated left to right in float64 and rounded once to FP32 (units.row_sum); exp is
// units.exp32.  Every output is computed before any is written, so in-place operation is exact.
#include "flightllm_kernels.h"

// Staging of one instruction's outputs (docs/isa.md: all inputs are read before the output is
// written).  Hardware streams rows through a row buffer; a program whose output rows overlap
// later input rows would need this whole-operand staging, which C simulation models exactly.
FLLM_CU_STATIC uint8_t staging[FLLM_BUF_GBUF_BYTES];
// the rows of the current instruction's operands (a row of k < 2^16 elements, FP32 at most)
FLLM_CU_STATIC uint8_t arow[2 * 65536], brow[4 * 65536], gain_row[4 * 65536], bias_row[4 * 65536];

// `n` bytes of buffer `buf` at `addr` into `dst`, through memctrl
static void fetch(fllm_link_t& op, fllm_link_t& req, unsigned buf, uint64_t addr, uint64_t n, uint8_t* dst) {
    if (!n) return;
    fllm_beat_t h = fllm_header(FLLM_KIND_READ);
    h.data.range(7, 0) = buf;
    fllm_put_u32(h, 4, (uint32_t)addr);
    fllm_put_u32(h, 8, (uint32_t)n);
    req.write(h);
FETCH_BEATS:
    for (uint64_t i = 0; i * FLLM_BEAT_BYTES < n; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 4096
#pragma HLS PIPELINE II = 1
        uint8_t by[FLLM_BEAT_BYTES];
        fllm_beat_bytes(op.read(), by);
        for (unsigned t = 0; t < FLLM_BEAT_BYTES; t++)
            if (i * FLLM_BEAT_BYTES + t < n) dst[i * FLLM_BEAT_BYTES + t] = by[t];
    }
}

// `n` bytes from `src` to buffer `buf` at `addr`, through memctrl
static void store(fllm_link_t& req, unsigned buf, uint64_t addr, uint64_t n, const uint8_t* src) {
    if (!n) return;
    fllm_beat_t h = fllm_header(FLLM_KIND_WRITE);
    h.data.range(7, 0) = buf;
    fllm_put_u32(h, 4, (uint32_t)addr);
    fllm_put_u32(h, 8, (uint32_t)n);
    req.write(h);
    const uint64_t beats = (n + FLLM_BEAT_BYTES - 1) / FLLM_BEAT_BYTES;
STORE_BEATS:
    for (uint64_t i = 0; i < beats; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 4096
#pragma HLS PIPELINE II = 1
        uint8_t by[FLLM_BEAT_BYTES];
        for (unsigned t = 0; t < FLLM_BEAT_BYTES; t++)
            by[t] = i * FLLM_BEAT_BYTES + t < n ? src[i * FLLM_BEAT_BYTES + t] : 0;
        req.write(fllm_beat_of(by, i + 1 == beats));
    }
}

static float row_sum_f64(const float* v, uint64_t n) {
    double s = 0.0;
SUM:
    for (uint64_t c = 0; c < n; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
        s = s + (double)v[c];                                  // left to right, float64
    }
    return (float)s;
}

// Causal attention mask with the block-sparse pattern (isa.attention_block_keep): key c is kept
// for query position q if c <= q and, when `win` > 0, its ATTN_BLOCK-token block is one of the
// first `sink` blocks or within `win` blocks of the query's (the diagonal block included).
static bool attention_keep(uint64_t q, uint64_t c, unsigned sink, unsigned win) {
#pragma HLS INLINE
    if (c > q) return false;
    if (!win) return true;
    uint64_t qb = q / FLLM_ATTN_BLOCK, kb = c / FLLM_ATTN_BLOCK;
    return kb < sink || qb - kb < win;
}

// One FP32 value (a row maximum) to the global buffer.
static void store_f32(fllm_link_t& req, uint64_t addr, float v) {
    uint8_t w[4];
    fllm_st_u32(w, 0, fllm_f32_bits(v));
    store(req, FLLM_BUF_GBUF, addr, 4, w);
}

static unsigned misc_job(const MiscFields& f, uint32_t pos, uint32_t len, fllm_link_t& op, fllm_link_t& req,
                         uint64_t& elements_out) {
    uint64_t rows = f.rows, k = f.k, groups = f.groups ? f.groups : 1;
    if (f.dyn_k) {
        uint64_t eff = (uint64_t)pos + len;
        if (eff > k)
            FLLM_FAIL(FLLM_ERR_PROGRAM, "run-time length %llu exceeds the %llu columns this MISC op %u "
                      "was compiled for", (unsigned long long)eff, (unsigned long long)k, f.op);
        k = eff;
    }
    if (!rows || !k) return 0;
    uint64_t a_stride = f.a_stride ? f.a_stride : 2 * k;
    uint64_t o_stride = f.out_stride ? f.out_stride : 2 * k;
    unsigned err;
    if ((err = fllm_check_array(FLLM_BUF_GBUF_BYTES, f.a_addr, rows, k, 2, a_stride, "MISC a"))) return err;

    // operand b: one row (bcast_b, or rmsnorm's gamma) or `rows` rows; FP32 when b_f32
    const unsigned b_item = f.b_f32 ? 4 : 2;
    bool b_one_row = f.bcast_b || f.op == FLLM_MISC_OP_RMSNORM;
    uint64_t b_stride = b_one_row ? 0 : (f.b_stride ? f.b_stride : b_item * k);
    auto check_b = [&]() -> unsigned {
        return b_one_row ? fllm_check_array(FLLM_BUF_GBUF_BYTES, f.b_addr, 1, k, b_item, b_item * k, "MISC b")
                         : fllm_check_array(FLLM_BUF_GBUF_BYTES, f.b_addr, rows, k, b_item, b_stride, "MISC b");
    };
    auto check_out = [&]() -> unsigned {
        if (f.out_abuf)
            FLLM_FAIL(FLLM_ERR_PROGRAM, "MISC op %u writes FP16 to the global buffer; only quant writes "
                      "the activation buffer", f.op);
        return fllm_check_array(FLLM_BUF_GBUF_BYTES, f.out_addr, rows, k, 2, o_stride, "MISC out");
    };
    // row r of a / of b into arow / brow; then a_at(c), b_at(c) read them
    auto get_a = [&](uint64_t r) { fetch(op, req, FLLM_BUF_GBUF, f.a_addr + r * a_stride, 2 * k, arow); };
    auto get_b = [&](uint64_t r) { fetch(op, req, FLLM_BUF_GBUF, f.b_addr + r * b_stride, b_item * k, brow); };
    auto a_at = [&](uint64_t c) { return fllm_ld_f16(arow, 2 * c); };
    auto b_at = [&](uint64_t c) { return f.b_f32 ? fllm_ld_f32(brow, b_item * c) : fllm_ld_f16(brow, b_item * c); };
    auto put = [&](uint64_t r, uint64_t c, float v) { fllm_st_u16(staging, 2 * (r * k + c), fllm_f32_to_f16(v)); };
    // dyn_rows: only the rows whose token (r mod groups) is below len; the others are neither
    // read nor written
    auto live = [&](uint64_t r) { return !f.dyn_rows || r % groups < len; };
    uint64_t live_rows = rows;
    if (f.dyn_rows && len < groups)
        live_rows = rows / groups * len + (rows % groups < len ? rows % groups : len);
    uint64_t elements = live_rows * k;
    if (rows * k * 2 + 4 * rows > sizeof(staging))   // only with rows overlapping each other
        FLLM_FAIL(FLLM_ERR_INTERNAL, "MISC operand of %llu x %llu elements exceeds the staging buffer",
                  (unsigned long long)rows, (unsigned long long)k);
    FLLM_CU_STATIC float x[65536], e[65536];  // one row in FP32 (k < 2^16)
#pragma HLS ARRAY_PARTITION variable = x cyclic factor = FLLM_MISC_LANES
#pragma HLS ARRAY_PARTITION variable = e cyclic factor = FLLM_MISC_LANES

    switch (f.op) {
        case FLLM_MISC_OP_EADD:
        case FLLM_MISC_OP_EMUL: {
            if ((err = check_b())) return err;
            if ((err = check_out())) return err;
            if (b_one_row) get_b(0);
        ELTWISE:
            for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                if (!live(r)) continue;                  // dyn_rows: past the prompt
                get_a(r);
                if (!b_one_row) get_b(r);
            ELTWISE_COLS:
                for (uint64_t c = 0; c < k; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
#pragma HLS PIPELINE II = 1
                    float a = a_at(c), b = b_at(c);
                    put(r, c, f.op == FLLM_MISC_OP_EADD ? a + b : a * b);
                }
            }
            break;
        }
        case FLLM_MISC_OP_SILU: {
            if ((err = check_out())) return err;
        SILU:
            for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                if (!live(r)) continue;                  // dyn_rows: past the prompt
                get_a(r);
            SILU_COLS:
                for (uint64_t c = 0; c < k; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
#pragma HLS PIPELINE II = 1
                    float a = a_at(c);
                    put(r, c, a / (1.0f + fllm_exp32(-a)));
                }
            }
            break;
        }
        case FLLM_MISC_OP_RELU: {
            if ((err = check_out())) return err;
        RELU:
            for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                if (!live(r)) continue;                  // dyn_rows: past the prompt
                get_a(r);
            RELU_COLS:
                for (uint64_t c = 0; c < k; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
#pragma HLS PIPELINE II = 1
                    float a = a_at(c);
                    put(r, c, a <= 0.0f ? 0.0f : a);      // +-0 -> +0; NaN stays NaN
                }
            }
            break;
        }
        case FLLM_MISC_OP_LAYERNORM: {
            // b: the gain row, then the bias row one b_stride further (bcast_b does not apply)
            uint64_t gb_stride = f.b_stride ? f.b_stride : b_item * k;
            if ((err = fllm_check_array(FLLM_BUF_GBUF_BYTES, f.b_addr, 2, k, b_item, gb_stride,
                                        "layernorm gain and bias")))
                return err;
            if ((err = check_out())) return err;
            fetch(op, req, FLLM_BUF_GBUF, f.b_addr, b_item * k, gain_row);
            fetch(op, req, FLLM_BUF_GBUF, f.b_addr + gb_stride, b_item * k, bias_row);
            auto gb_at = [&](const uint8_t* row, uint64_t c) {
                return f.b_f32 ? fllm_ld_f32(row, b_item * c) : fllm_ld_f16(row, b_item * c);
            };
            float eps = fllm_bits_f32(f.imm);
        LN_ROWS:
            for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                if (!live(r)) continue;                  // dyn_rows: past the prompt
                get_a(r);
            LN_LOAD:
                for (uint64_t c = 0; c < k; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                    x[c] = a_at(c);
                }
                float mean = row_sum_f64(x, k) / (float)k;      // phase 1: mean, then variance
            LN_CENTRE:
                for (uint64_t c = 0; c < k; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                    x[c] = x[c] - mean;
                    e[c] = x[c] * x[c];
                }
                float var = row_sum_f64(e, k) / (float)k;
                float inv = 1.0f / std::sqrt(var + eps);
            LN_OUT:
                for (uint64_t c = 0; c < k; c++) {               // phase 2: normalise, gain, bias
#pragma HLS LOOP_TRIPCOUNT max = 65535
                    put(r, c, ((x[c] * inv) * gb_at(gain_row, c)) + gb_at(bias_row, c));
                }
            }
            elements *= 2;
            break;
        }
        case FLLM_MISC_OP_RMSNORM: {
            if ((err = check_b())) return err;
            if ((err = check_out())) return err;
            get_b(0);
            float eps = fllm_bits_f32(f.imm);
        RMS_ROWS:
            for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                if (!live(r)) continue;                  // dyn_rows: past the prompt
                get_a(r);
            RMS_LOAD:
                for (uint64_t c = 0; c < k; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                    float a = a_at(c);
                    x[c] = a;
                    e[c] = a * a;                         // FP32 square (exact for FP16 a)
                }
                float ms = row_sum_f64(e, k) / (float)k;
                float inv = 1.0f / std::sqrt(ms + eps);
            RMS_OUT:
                for (uint64_t c = 0; c < k; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                    put(r, c, (x[c] * inv) * b_at(c));
                }
            }
            elements *= 2;
            break;
        }
        case FLLM_MISC_OP_SOFTMAX: {
            float scale = fllm_bits_f32(f.imm);
        SOFTMAX_ROWS:
            for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                if (!live(r)) continue;                  // dyn_rows: past the prompt
                get_a(r);
                uint64_t q_pos = (uint64_t)pos + r % groups;
                float m = -INFINITY;
                bool nan = false;
            SOFTMAX_MAX:
                for (uint64_t c = 0; c < k; c++) {         // phase 1: scale, mask, max
#pragma HLS LOOP_TRIPCOUNT max = 65535
                    float z = a_at(c) * scale;
                    if (f.causal && !attention_keep(q_pos, c, f.blk_sink, f.blk_win)) z = -INFINITY;
                    x[c] = z;
                    if (std::isnan(z)) nan = true;
                    else if (z > m) m = z;
                }
                if (nan || !std::isfinite(m)) m = 0.0f;
            SOFTMAX_EXP:
                for (uint64_t c = 0; c < k; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                    e[c] = fllm_exp32(x[c] - m);
                }
                float s = row_sum_f64(e, k);
                if (!(s > 0.0f)) s = 1.0f;
            SOFTMAX_OUT:
                for (uint64_t c = 0; c < k; c++) {         // phase 2: normalise
#pragma HLS LOOP_TRIPCOUNT max = 65535
                    put(r, c, e[c] / s);
                }
            }
            if ((err = check_out())) return err;
            elements *= 2;
            break;
        }
        case FLLM_MISC_OP_ROPE: {
            if (k % 2) FLLM_FAIL(FLLM_ERR_PROGRAM, "rope needs an even row length (head dimension)");
            uint64_t tokens = rows < groups ? rows : groups;
            uint64_t t_stride = f.b_stride ? f.b_stride : 2 * k;
            if ((err = fllm_check_array(FLLM_BUF_GBUF_BYTES, f.b_addr, tokens, k, 2, t_stride, "rope table")))
                return err;
            if ((err = check_out())) return err;
            uint64_t h = k / 2;
        ROPE:
            for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                if (!live(r)) continue;                  // dyn_rows: past the prompt
                get_a(r);
                fetch(op, req, FLLM_BUF_GBUF, f.b_addr + (r % tokens) * t_stride, 2 * k, brow);
            ROPE_COLS:
                for (uint64_t c = 0; c < h; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 32768
#pragma HLS PIPELINE II = 1
                    float x1 = a_at(c), x2 = a_at(c + h);
                    float cs = fllm_ld_f16(brow, 2 * c), sn = fllm_ld_f16(brow, 2 * (c + h));
                    float c1 = fllm_f16_to_f32(fllm_f32_to_f16(x1 * cs));
                    float c2 = fllm_f16_to_f32(fllm_f32_to_f16(x2 * cs));
                    float s1 = fllm_f16_to_f32(fllm_f32_to_f16(-x2 * sn));
                    float s2 = fllm_f16_to_f32(fllm_f32_to_f16(x1 * sn));
                    put(r, c, c1 + s1);
                    put(r, c + h, c2 + s2);
                }
            }
            break;
        }
        case FLLM_MISC_OP_QUANT: {
            if (!f.out_abuf) FLLM_FAIL(FLLM_ERR_PROGRAM, "quant writes INT8 to the activation buffer: set out_abuf");
            uint64_t q_stride = f.out_stride ? f.out_stride : k;
            if ((err = fllm_check_array(FLLM_BUF_ABUF_BYTES, f.out_addr, rows, k, 1, q_stride, "quant out")))
                return err;
            // agroup: shared-exponent groups of G elements (isa checked k % G == 0, no given_max,
            // diffuse or residual); per row W bytes: the FP32 scale, one exponent byte per group
            const uint64_t G = FLLM_ACT_GROUPS[f.agroup], ns = G ? k / G : 0;
            const uint64_t W = G ? 4 + 4 * ((ns + 3) / 4) : 4;
            if ((err = G ? fllm_check_array(FLLM_BUF_ABUF_BYTES, f.out2_addr, rows, W / 4, 4, W, "quant scales")
                         : fllm_check_array(FLLM_BUF_ABUF_BYTES, f.out2_addr, 1, rows, 4, 4 * rows, "quant scales")))
                return err;
            const uint64_t n_given = groups, g_stride = f.b_stride ? f.b_stride : 4 * n_given;
            if (f.given_max &&
                (err = fllm_check_array(FLLM_BUF_GBUF_BYTES, f.b_addr, rows, n_given, 4, g_stride, "quant row maxima")))
                return err;
            // stage q (rows x k bytes) then the scales (rows x 4 bytes) after them
        QUANT_ROWS:
            for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                if (!live(r)) continue;                  // dyn_rows: past the prompt
                get_a(r);
                float amax = 0.0f;
                if (f.given_max) {                       // one pass: the row maxima are given
                    fetch(op, req, FLLM_BUF_GBUF, f.b_addr + r * g_stride, 4 * n_given, brow);
                QUANT_GIVEN:
                    for (uint64_t j = 0; j < n_given; j++) {
#pragma HLS LOOP_TRIPCOUNT max = 255
                        float v = fllm_ld_f32(brow, 4 * j);
                        if (v > amax) amax = v;
                    }
                }
            QUANT_MAX:
                for (uint64_t c = 0; c < k; c++) {       // phase 1: absolute maximum
#pragma HLS LOOP_TRIPCOUNT max = 65535
                    x[c] = a_at(c);
                    float v = std::fabs(x[c]);
                    if (!f.given_max && v > amax) amax = v;
                }
                float scale = amax / (float)FLLM_QMAX;
                if (amax == 0.0f) scale = 1.0f;
                if (G) {                                 // shared-exponent groups: step = scale / 2^e
                    uint8_t* out2 = staging + rows * k + r * W;
                    fllm_st_u32(out2, 0, fllm_f32_bits(scale));
                    for (uint64_t b = 4; b < W; b++) out2[b] = 0;
                QUANT_GROUPS:
                    for (uint64_t g = 0; g < ns; g++) {
#pragma HLS LOOP_TRIPCOUNT max = 2048
                        float gmax = 0.0f;
                    QUANT_GROUP_MAX:
                        for (uint64_t c = g * G; c < (g + 1) * G; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 128
                            float v = std::fabs(x[c]);
                            if (v > gmax) gmax = v;
                        }
                        unsigned e = 0;                  // the largest e <= 7 with gmax * 2^e <= amax
                        for (unsigned j = 1; j <= FLLM_GROUP_EXP_MAX; j++)
                            if (gmax * (float)(1u << j) <= amax) e = j;
                        const float step = scale / (float)(1u << e);     // exact: a power of two
                        out2[4 + g] = (uint8_t)e;
                    QUANT_GROUP_ROUND:
                        for (uint64_t c = g * G; c < (g + 1) * G; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 128
                            float q = std::nearbyint(x[c] / step);
                            if (q > FLLM_QMAX) q = FLLM_QMAX;
                            if (q < -FLLM_QMAX) q = -FLLM_QMAX;
                            staging[r * k + c] = (uint8_t)(int8_t)q;
                        }
                    }
                    continue;
                }
                float run = 0.0f, prev = 0.0f;           // diffuse: small values' running sum, its last rounding
            QUANT_ROUND:
                for (uint64_t c = 0; c < k; c++) {       // phase 2: round half to even, clip
#pragma HLS LOOP_TRIPCOUNT max = 65535
                    float t = x[c] / scale;
                    float q = std::nearbyint(t);
                    if (f.diffuse && q == 0.0f) {        // a value that rounds to 0 joins the running sum
                        run = run + t;
                        float cur = std::nearbyint(run);
                        q = cur - prev;
                        prev = cur;
                    }
                    if (q > FLLM_QMAX) q = FLLM_QMAX;
                    if (q < -FLLM_QMAX) q = -FLLM_QMAX;
                    staging[r * k + c] = (uint8_t)(int8_t)q;
                    if (f.residual) {                    // x - q * scale: one FP32 rounding each, then FP16
                        float back = (float)(int)q * scale;  // the code as an integer: no -0
                        float rest = x[c] - back;
                        fllm_st_u16(brow, 2 * c, fllm_f32_to_f16(rest));
                    }
                }
                fllm_st_u32(staging, rows * k + 4 * r, fllm_f32_bits(scale));
                // the residual over a's row r, which is read: a's rows do not overlap (isa.check)
                if (f.residual) store(req, FLLM_BUF_GBUF, f.a_addr + r * a_stride, 2 * k, brow);
            }
        QUANT_WRITE:
            for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                if (!live(r)) continue;                  // dyn_rows: past the prompt
                store(req, FLLM_BUF_ABUF, f.out_addr + r * q_stride, k, staging + r * k);
            }
            if (f.dyn_rows) {
            QUANT_SCALES:
                for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                    if (live(r)) store(req, FLLM_BUF_ABUF, f.out2_addr + W * r, W, staging + rows * k + W * r);
                }
            } else {
                store(req, FLLM_BUF_ABUF, f.out2_addr, W * rows, staging + rows * k);
            }
            elements_out = f.given_max ? elements : 2 * elements;
            return 0;
        }
        case FLLM_MISC_OP_AMAX: {                        // each row's absolute maximum, FP32
            if ((err = fllm_check_array(FLLM_BUF_GBUF_BYTES, f.out2_addr, 1, rows, 4, 4 * rows, "MISC row maxima")))
                return err;
        AMAX_ROWS:
            for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                if (!live(r)) continue;                  // dyn_rows: past the prompt
                get_a(r);
                float m = 0.0f;
            AMAX_COLS:
                for (uint64_t c = 0; c < k; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                    float v = std::fabs(a_at(c));
                    if (v > m) m = v;
                }
                store_f32(req, f.out2_addr + 4 * r, m);
            }
            elements_out = elements;
            return 0;
        }
        default:
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "MISC operation %u is not implemented by this target", f.op);
    }
WRITE_OUT:
    for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
        if (!live(r)) continue;                  // dyn_rows: past the prompt
        store(req, FLLM_BUF_GBUF, f.out_addr + r * o_stride, 2 * k, staging + 2 * r * k);
    }
    if (f.amax) {                                        // rmsnorm, emul: the rows' maxima too
        if ((err = fllm_check_array(FLLM_BUF_GBUF_BYTES, f.out2_addr, 1, rows, 4, 4 * rows, "MISC row maxima")))
            return err;
    ROW_MAX:
        for (uint64_t r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
            if (!live(r)) continue;                  // dyn_rows: past the prompt
            float m = 0.0f;
        ROW_MAX_COLS:
            for (uint64_t c = 0; c < k; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 65535
                float v = std::fabs(fllm_ld_f16(staging, 2 * (r * k + c)));
                if (v > m) m = v;
            }
            store_f32(req, f.out2_addr + 4 * r, m);
        }
    }
    elements_out = elements;
    return 0;
}

// The MISC kernel: one job per MISC instruction, until END.
void misc(unsigned* insns_lo, unsigned* insns_hi, unsigned* elements_lo, unsigned* elements_hi,
          fllm_link_t& op, fllm_link_t& req) {
#pragma HLS INTERFACE mode = s_axilite port = insns_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = insns_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = elements_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = elements_hi bundle = control
#pragma HLS INTERFACE mode = axis port = op
#pragma HLS INTERFACE mode = axis port = req
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control
    uint64_t insns = 0, elements = 0;
JOBS:
    while (true) {
#pragma HLS LOOP_TRIPCOUNT max = 1048576
        fllm_beat_t job = op.read();
        if (fllm_kind(job) != FLLM_KIND_MISC_JOB) break;     // END (or a protocol error): stop
        insns++;
        uint64_t el = 0;
        const unsigned err = misc_job(fllm_decode_misc(fllm_insn_of(job)), fllm_u32_at(job, 40),
                                      fllm_u32_at(job, 44), op, req, el);
#ifndef __SYNTHESIS__
        if (err) std::snprintf(fllm_csim_cores[fllm_csim_core].misc_message, 512, "%s", fllm_error_message);
#endif
        elements += el;
        fllm_beat_t d = fllm_header(FLLM_KIND_MISC_DONE);
        d.data.range(7, 0) = err;
        fllm_put_u64(d, 8, el);
        req.write(d);
    }
    *insns_lo = (unsigned)insns;
    *insns_hi = (unsigned)(insns >> 32);
    *elements_lo = (unsigned)elements;
    *elements_hi = (unsigned)(elements >> 32);
}
