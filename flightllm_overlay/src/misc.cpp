// misc.cpp: the MISC (special function unit) kernel of one core: eadd, emul, softmax, layernorm, rmsnorm, silu, relu, rope, quant (dyn_k, causal with block-sparse patterns, groups, bcast_b, b_f32).
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
static uint8_t staging[FLLM_BUF_GBUF_BYTES];

static float row_sum_f64(const float* v, uint64_t n) {
    double s = 0.0;
SUM:
    for (uint64_t c = 0; c < n; c++) s = s + (double)v[c];   // left to right, float64
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

unsigned fllm_exec_misc(const MiscFields& f, RunContext& ctx) {
    uint64_t rows = f.rows, k = f.k, groups = f.groups ? f.groups : 1;
    if (f.dyn_k) {
        uint64_t eff = (uint64_t)ctx.pos + ctx.len;
        if (eff > k)
            FLLM_FAIL(FLLM_ERR_PROGRAM, "run-time length %llu exceeds the %llu columns this MISC op %u "
                      "was compiled for", (unsigned long long)eff, (unsigned long long)k, f.op);
        k = eff;
    }
    if (!rows || !k) return 0;
    CoreState& core = ctx.cores[ctx.core];
    uint8_t* g = core.gbuf;
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
    auto a_at = [&](uint64_t r, uint64_t c) { return fllm_ld_f16(g, f.a_addr + r * a_stride + 2 * c); };
    auto b_at = [&](uint64_t r, uint64_t c) {
        uint64_t addr = f.b_addr + r * b_stride + b_item * c;
        return f.b_f32 ? fllm_ld_f32(g, addr) : fllm_ld_f16(g, addr);
    };
    auto put = [&](uint64_t r, uint64_t c, float v) { fllm_st_u16(staging, 2 * (r * k + c), fllm_f32_to_f16(v)); };
    uint64_t elements = rows * k;
    if (elements * 2 + 4 * rows > sizeof(staging))   // only with rows overlapping each other
        FLLM_FAIL(FLLM_ERR_INTERNAL, "MISC operand of %llu x %llu elements exceeds the staging buffer",
                  (unsigned long long)rows, (unsigned long long)k);
    static float x[65536], e[65536];          // one row in FP32 (k < 2^16)
#pragma HLS ARRAY_PARTITION variable = x cyclic factor = FLLM_MISC_LANES
#pragma HLS ARRAY_PARTITION variable = e cyclic factor = FLLM_MISC_LANES

    switch (f.op) {
        case FLLM_MISC_OP_EADD:
        case FLLM_MISC_OP_EMUL: {
            if ((err = check_b())) return err;
            if ((err = check_out())) return err;
        ELTWISE:
            for (uint64_t r = 0; r < rows; r++)
                for (uint64_t c = 0; c < k; c++) {
#pragma HLS PIPELINE II = 1
                    float a = a_at(r, c), b = b_at(r, c);
                    put(r, c, f.op == FLLM_MISC_OP_EADD ? a + b : a * b);
                }
            break;
        }
        case FLLM_MISC_OP_SILU: {
            if ((err = check_out())) return err;
        SILU:
            for (uint64_t r = 0; r < rows; r++)
                for (uint64_t c = 0; c < k; c++) {
#pragma HLS PIPELINE II = 1
                    float a = a_at(r, c);
                    put(r, c, a / (1.0f + fllm_exp32(-a)));
                }
            break;
        }
        case FLLM_MISC_OP_RELU: {
            if ((err = check_out())) return err;
        RELU:
            for (uint64_t r = 0; r < rows; r++)
                for (uint64_t c = 0; c < k; c++) {
#pragma HLS PIPELINE II = 1
                    float a = a_at(r, c);
                    put(r, c, a <= 0.0f ? 0.0f : a);      // +-0 -> +0; NaN stays NaN
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
            auto gb_at = [&](uint64_t r, uint64_t c) {
                uint64_t addr = f.b_addr + r * gb_stride + b_item * c;
                return f.b_f32 ? fllm_ld_f32(g, addr) : fllm_ld_f16(g, addr);
            };
            float eps = fllm_bits_f32(f.imm);
        LN_ROWS:
            for (uint64_t r = 0; r < rows; r++) {
                for (uint64_t c = 0; c < k; c++) x[c] = a_at(r, c);
                float mean = row_sum_f64(x, k) / (float)k;      // phase 1: mean, then variance
                for (uint64_t c = 0; c < k; c++) {
                    x[c] = x[c] - mean;
                    e[c] = x[c] * x[c];
                }
                float var = row_sum_f64(e, k) / (float)k;
                float inv = 1.0f / std::sqrt(var + eps);
                for (uint64_t c = 0; c < k; c++)                 // phase 2: normalise, gain, bias
                    put(r, c, ((x[c] * inv) * gb_at(0, c)) + gb_at(1, c));
            }
            elements *= 2;
            break;
        }
        case FLLM_MISC_OP_RMSNORM: {
            if ((err = check_b())) return err;
            if ((err = check_out())) return err;
            float eps = fllm_bits_f32(f.imm);
        RMS_ROWS:
            for (uint64_t r = 0; r < rows; r++) {
                for (uint64_t c = 0; c < k; c++) {
                    float a = a_at(r, c);
                    x[c] = a;
                    e[c] = a * a;                         // FP32 square (exact for FP16 a)
                }
                float ms = row_sum_f64(e, k) / (float)k;
                float inv = 1.0f / std::sqrt(ms + eps);
                for (uint64_t c = 0; c < k; c++) put(r, c, (x[c] * inv) * b_at(0, c));
            }
            elements *= 2;
            break;
        }
        case FLLM_MISC_OP_SOFTMAX: {
            float scale = fllm_bits_f32(f.imm);
        SOFTMAX_ROWS:
            for (uint64_t r = 0; r < rows; r++) {
                uint64_t q_pos = (uint64_t)ctx.pos + r % groups;
                float m = -INFINITY;
                bool nan = false;
                for (uint64_t c = 0; c < k; c++) {         // phase 1: scale, mask, max
                    float z = a_at(r, c) * scale;
                    if (f.causal && !attention_keep(q_pos, c, f.blk_sink, f.blk_win)) z = -INFINITY;
                    x[c] = z;
                    if (std::isnan(z)) nan = true;
                    else if (z > m) m = z;
                }
                if (nan || !std::isfinite(m)) m = 0.0f;
                for (uint64_t c = 0; c < k; c++) e[c] = fllm_exp32(x[c] - m);
                float s = row_sum_f64(e, k);
                if (!(s > 0.0f)) s = 1.0f;
                for (uint64_t c = 0; c < k; c++) put(r, c, e[c] / s);   // phase 2: normalise
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
                uint64_t t = f.b_addr + (r % tokens) * t_stride;
                for (uint64_t c = 0; c < h; c++) {
#pragma HLS PIPELINE II = 1
                    float x1 = a_at(r, c), x2 = a_at(r, c + h);
                    float cs = fllm_ld_f16(g, t + 2 * c), sn = fllm_ld_f16(g, t + 2 * (c + h));
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
            if ((err = fllm_check_array(FLLM_BUF_ABUF_BYTES, f.out2_addr, 1, rows, 4, 4 * rows, "quant scales")))
                return err;
            // stage q (rows x k bytes) then the scales (rows x 4 bytes) after them
        QUANT_ROWS:
            for (uint64_t r = 0; r < rows; r++) {
                float amax = 0.0f;
                for (uint64_t c = 0; c < k; c++) {       // phase 1: absolute maximum
                    x[c] = a_at(r, c);
                    float v = std::fabs(x[c]);
                    if (v > amax) amax = v;
                }
                float scale = amax / (float)FLLM_QMAX;
                if (amax == 0.0f) scale = 1.0f;
                for (uint64_t c = 0; c < k; c++) {       // phase 2: round half to even, clip
                    float q = std::nearbyint(x[c] / scale);
                    if (q > FLLM_QMAX) q = FLLM_QMAX;
                    if (q < -FLLM_QMAX) q = -FLLM_QMAX;
                    staging[r * k + c] = (uint8_t)(int8_t)q;
                }
                fllm_st_u32(staging, rows * k + 4 * r, fllm_f32_bits(scale));
            }
            uint8_t* ab = core.abuf;
            for (uint64_t r = 0; r < rows; r++)
                for (uint64_t c = 0; c < k; c++) ab[f.out_addr + r * q_stride + c] = staging[r * k + c];
            for (uint64_t i = 0; i < 4 * rows; i++) ab[f.out2_addr + i] = staging[rows * k + i];
            core.count.misc_elements += 2 * elements;
            return 0;
        }
        default:
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "MISC operation %u is not implemented by this target", f.op);
    }
WRITE_OUT:
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c = 0; c < k; c++)
            fllm_st_u16(g, f.out_addr + r * o_stride + 2 * c, fllm_ld_u16(staging, 2 * (r * k + c)));
    core.count.misc_elements += elements;
    return 0;
}

// The MISC kernel: drains the core's MISC queue.
void misc(unsigned* insns_lo, unsigned* insns_hi, unsigned* elements_lo, unsigned* elements_hi,
          RunContext& link) {
#pragma HLS INTERFACE mode = s_axilite port = insns_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = insns_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = elements_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = elements_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control
    fllm_unit_drain(FLLM_UNIT_MISC, link);
    const CoreCounters& cc = link.cores[link.core].count;
    *insns_lo = (unsigned)cc.insns[FLLM_UNIT_MISC];
    *insns_hi = (unsigned)(cc.insns[FLLM_UNIT_MISC] >> 32);
    *elements_lo = (unsigned)cc.misc_elements;
    *elements_hi = (unsigned)(cc.misc_elements >> 32);
}
