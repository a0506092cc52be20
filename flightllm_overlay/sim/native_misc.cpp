// native_misc.cpp: the MISC unit's operations on the simulated buffers in one call each, bit for bit the numpy definitions of spec/arithmetic.py.
//
// Built and loaded by sim/native.py; called by sim/misc_unit.py.  Each function computes one
// instruction: `rows` rows of `k` FP16 elements at `a` (row stride in bytes), only the rows listed
// in `live` when it is not null (dyn_rows).  Every output is staged and written only after all
// inputs are read (the ISA's rule, so in-place operation is exact).
//
// The functions return FALLBACK, having written nothing, when an input holds a NaN or an
// infinity or a result is a NaN: the numpy definitions then run (NaN payloads and signs follow
// numpy's rules, which are not worth restating here).  For finite inputs every FP32 operation is
// the one numpy performs, in the same order (-ffp-contract=off: no fused multiply-add), row sums
// are float64 left to right, and FP16 rounding is IEEE round to nearest even (F16C when the CPU
// has it, else flightllm_fp.h), so the results are numpy's on any CPU.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "flightllm_fp.h"
#ifdef __F16C__
#include <immintrin.h>
#endif

#define API extern "C" __attribute__((visibility("default")))

namespace {

constexpr int OK = 0, FALLBACK = 1;

struct F16Table {
    float v[65536];
    F16Table() {
        for (uint32_t h = 0; h < 65536; h++) v[h] = fllm_f16_to_f32((uint16_t)h);
    }
};
const F16Table kF16;

inline float h2f(uint16_t h) { return kF16.v[h]; }
inline bool finite16(uint16_t h) { return (h & 0x7C00u) != 0x7C00u; }
inline bool nan16(uint16_t h) { return (h & 0x7FFFu) > 0x7C00u; }

// FP32 -> FP16 of n finite-or-infinite values (round to nearest even)
inline void to_f16(const float* s, uint16_t* d, int64_t n) {
    int64_t i = 0;
#ifdef __F16C__
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i*)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) d[i] = fllm_f32_to_f16(s[i]);
}

inline void to_f32(const uint16_t* s, float* d, int64_t n) {
    int64_t i = 0;
#ifdef __F16C__
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(s + i))));
#endif
    for (; i < n; i++) d[i] = h2f(s[i]);
}

// exp32 (flightllm_fp.h, units.exp32) of a NaN-free x, in a form the compiler vectorises:
// rint(v) as (v + 1.5*2^52) - 1.5*2^52 (round to nearest even, exact for |v| < 2^51), whose
// low bits also give n; n is in [-159, 128] and p in [0.7, 1.5], so p * 2^n is a normal float64
// and exactly ldexp(p, n)
inline float exp32(float x) {
    constexpr double magic = 6755399441055744.0;               // 1.5 * 2^52
    double t = (double)x;
    t = std::max(t, FLLM_EXP_CLAMP_LO);
    t = std::min(t, FLLM_EXP_CLAMP_HI);
    const double shifted = t * FLLM_EXP_LOG2E + magic;
    const double n = shifted - magic;
    const double r = (t - n * FLLM_EXP_LN2_HI) - n * FLLM_EXP_LN2_LO;
    static_assert(sizeof(FLLM_EXP_COEFFS) == 14 * sizeof(double), "Horner below is degree 13");
    const double* c = FLLM_EXP_COEFFS;            // Horner from the top, written out
    double p = c[13];
    p = p * r + c[12]; p = p * r + c[11]; p = p * r + c[10]; p = p * r + c[9];
    p = p * r + c[8];  p = p * r + c[7];  p = p * r + c[6];  p = p * r + c[5];
    p = p * r + c[4];  p = p * r + c[3];  p = p * r + c[2];  p = p * r + c[1];
    p = p * r + c[0];
    uint64_t bits;
    std::memcpy(&bits, &shifted, 8);
    const uint64_t two_n = (bits - 0x4338000000000000ull + 1023ull) << 52;
    double scale;
    std::memcpy(&scale, &two_n, 8);
    return (float)(p * scale);
}

// (branch-free, so that the loops vectorise) an all-ones exponent carries into bit 15
inline bool all_finite16(const uint16_t* s, int64_t n) {
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= ((uint32_t)(s[i] & 0x7C00u) + 0x400u) & 0x8000u;
    return !bad;
}

// a magnitude above 0x7C00 (NaN) carries into bit 16
inline bool any_nan16(const uint16_t* s, int64_t n) {
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= ((uint32_t)(s[i] & 0x7FFFu) + 0x83FFu) & 0x10000u;
    return bad;
}

// the largest |x| of n NaN-free FP16 values, as FP32: for magnitudes the order of the bit
// patterns is the order of the values
inline float absmax16(const uint16_t* s, int64_t n) {
    uint16_t m = 0;
    for (int64_t i = 0; i < n; i++) m = std::max<uint16_t>(m, (uint16_t)(s[i] & 0x7FFFu));
    return h2f(m);
}

inline bool all_finite32(const float* s, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!std::isfinite(s[i])) return false;
    return true;
}

inline float row_sum(const float* v, int64_t n) {
    double s = 0.0;
    for (int64_t c = 0; c < n; c++) s = s + (double)v[c];
    return (float)s;
}

// the rows an instruction processes
struct Rows {
    int64_t rows;
    const int64_t* live;
    int64_t nlive;
    int64_t count() const { return live ? nlive : rows; }
    int64_t at(int64_t i) const { return live ? live[i] : i; }
};

template <typename T>
inline T* row_ptr(uint8_t* base, int64_t stride, int64_t r) { return (T*)(base + r * stride); }
template <typename T>
inline const T* row_ptr(const uint8_t* base, int64_t stride, int64_t r) { return (const T*)(base + r * stride); }

// per-thread scratch: the staged FP16 outputs and one FP32 row
struct Scratch {
    std::vector<uint16_t> out;
    std::vector<float> x, y, z;
    void size(int64_t n_out, int64_t k) {
        if ((int64_t)out.size() < n_out) out.resize(n_out);
        if ((int64_t)x.size() < k) { x.resize(k); y.resize(k); z.resize(k); }
    }
};
thread_local Scratch S;

// operand b (FP16 or FP32, broadcast when its stride is 0) as FP32 into dst; false if not finite
inline bool load_b(const uint8_t* b, int64_t stride, int b_f32, int64_t r, int64_t k, float* dst) {
    if (b_f32) {
        const float* p = row_ptr<float>(b, stride, r);
        if (!all_finite32(p, k)) return false;
        std::memcpy(dst, p, 4 * k);
        return true;
    }
    const uint16_t* p = row_ptr<uint16_t>(b, stride, r);
    if (!all_finite16(p, k)) return false;
    to_f32(p, dst, k);
    return true;
}

// the staged rows back into `out` after a final NaN check, and with `amax` (may be null) each
// row's largest absolute FP16 result
inline int write_out(const Rows& R, int64_t k, uint8_t* out, int64_t os, float* amax = nullptr) {
    const int64_t n = R.count();
    if (any_nan16(S.out.data(), n * k)) return FALLBACK;
    for (int64_t i = 0; i < n; i++) {
        if (amax) amax[R.at(i)] = absmax16(S.out.data() + i * k, k);
        std::memcpy(row_ptr<uint16_t>(out, os, R.at(i)), S.out.data() + i * k, 2 * k);
    }
    return OK;
}

inline bool attention_keep(int64_t q, int64_t c, int64_t sink, int64_t win) {
    if (c > q) return false;
    if (!win) return true;
    int64_t qb = q / FLLM_ATTN_BLOCK, kb = c / FLLM_ATTN_BLOCK;
    return kb < sink || qb - kb < win;
}

}  // namespace

// FP32 -> FP16 (round to nearest even) of n values; NaN-free input (the caller checks)
API void fllm_f32_to_f16(const float* src, uint16_t* dst, int64_t n) { to_f16(src, dst, n); }

// exp32 of n NaN-free values (for the tests: the kernels' exp32 against units.exp32)
API void fllm_exp32_array(const float* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = exp32(src[i]);
}

// eadd (mul = 0) / emul (mul = 1): fp16(fp32(a) op fp32(b)); b broadcast when bs == 0
API int fllm_misc_eltwise(int mul, const uint8_t* a, int64_t as, const uint8_t* b, int64_t bs, int b_f32,
                          uint8_t* out, int64_t os, int64_t rows, int64_t k, const int64_t* live, int64_t nlive,
                          float* amax) {
    Rows R{rows, live, nlive};
    const int64_t n = R.count();
    S.size(n * k, k);
    float *x = S.x.data(), *y = S.y.data();
    for (int64_t i = 0; i < n; i++) {
        const int64_t r = R.at(i);
        const uint16_t* ar = row_ptr<uint16_t>(a, as, r);
        if (!all_finite16(ar, k) || !load_b(b, bs, b_f32, bs ? r : 0, k, y)) return FALLBACK;
        to_f32(ar, x, k);
        if (mul)
            for (int64_t c = 0; c < k; c++) x[c] = x[c] * y[c];
        else
            for (int64_t c = 0; c < k; c++) x[c] = x[c] + y[c];
        to_f16(x, S.out.data() + i * k, k);
    }
    return write_out(R, k, out, os, amax);
}

// silu (op 0): x / (1 + exp32(-x)); relu (op 1): x <= 0 -> +0
API int fllm_misc_unary(int op, const uint8_t* a, int64_t as, uint8_t* out, int64_t os, int64_t rows, int64_t k,
                        const int64_t* live, int64_t nlive) {
    Rows R{rows, live, nlive};
    const int64_t n = R.count();
    S.size(n * k, k);
    float* x = S.x.data();
    for (int64_t i = 0; i < n; i++) {
        const uint16_t* ar = row_ptr<uint16_t>(a, as, R.at(i));
        if (!all_finite16(ar, k)) return FALLBACK;
        uint16_t* o = S.out.data() + i * k;
        if (op == 1) {
            for (int64_t c = 0; c < k; c++) o[c] = (ar[c] & 0x8000u) || ar[c] == 0 ? 0 : ar[c];
            continue;
        }
        to_f32(ar, x, k);
        for (int64_t c = 0; c < k; c++) x[c] = x[c] / (1.0f + exp32(-x[c]));
        to_f16(x, o, k);
    }
    return write_out(R, k, out, os);
}

// rmsnorm: x * (1 / sqrt(row_sum(x*x) / k + eps)) * gamma; amax (may be null): the output rows' maxima
API int fllm_misc_rmsnorm(const uint8_t* a, int64_t as, const uint8_t* gamma, int g_f32, float eps, uint8_t* out,
                          int64_t os, int64_t rows, int64_t k, const int64_t* live, int64_t nlive, float* amax) {
    Rows R{rows, live, nlive};
    const int64_t n = R.count();
    S.size(n * k, k);
    float *x = S.x.data(), *g = S.y.data(), *sq = S.z.data();
    if (!load_b(gamma, 0, g_f32, 0, k, g)) return FALLBACK;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t* ar = row_ptr<uint16_t>(a, as, R.at(i));
        if (!all_finite16(ar, k)) return FALLBACK;
        to_f32(ar, x, k);
        for (int64_t c = 0; c < k; c++) sq[c] = x[c] * x[c];
        const float ms = row_sum(sq, k) / (float)k;
        const float inv = 1.0f / std::sqrt(ms + eps);
        for (int64_t c = 0; c < k; c++) x[c] = (x[c] * inv) * g[c];
        to_f16(x, S.out.data() + i * k, k);
    }
    return write_out(R, k, out, os, amax);
}

// layernorm: d = x - row_sum(x)/k; (d * (1 / sqrt(row_sum(d*d)/k + eps))) * gain + bias
API int fllm_misc_layernorm(const uint8_t* a, int64_t as, const uint8_t* gb, int64_t gbs, int g_f32, float eps,
                            uint8_t* out, int64_t os, int64_t rows, int64_t k, const int64_t* live, int64_t nlive) {
    Rows R{rows, live, nlive};
    const int64_t n = R.count();
    S.size(n * k, k);
    std::vector<float> gain(k), bias(k);
    if (!load_b(gb, gbs, g_f32, 0, k, gain.data()) || !load_b(gb, gbs, g_f32, 1, k, bias.data())) return FALLBACK;
    float *x = S.x.data(), *sq = S.z.data();
    const float kf = (float)k;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t* ar = row_ptr<uint16_t>(a, as, R.at(i));
        if (!all_finite16(ar, k)) return FALLBACK;
        to_f32(ar, x, k);
        const float mean = row_sum(x, k) / kf;
        for (int64_t c = 0; c < k; c++) {
            x[c] = x[c] - mean;
            sq[c] = x[c] * x[c];
        }
        const float inv = 1.0f / std::sqrt(row_sum(sq, k) / kf + eps);
        for (int64_t c = 0; c < k; c++) x[c] = ((x[c] * inv) * gain[c]) + bias[c];
        to_f16(x, S.out.data() + i * k, k);
    }
    return write_out(R, k, out, os);
}

// softmax of a * scale per row, keys masked by the causal block-sparse pattern when `causal`
// (query position pos + row % groups)
API int fllm_misc_softmax(const uint8_t* a, int64_t as, uint8_t* out, int64_t os, int64_t rows, int64_t k, float scale,
                          int causal, int64_t pos, int64_t groups, int64_t sink, int64_t win, const int64_t* live,
                          int64_t nlive) {
    Rows R{rows, live, nlive};
    const int64_t n = R.count();
    S.size(n * k, k);
    float *x = S.x.data(), *e = S.y.data();
    for (int64_t i = 0; i < n; i++) {
        const int64_t r = R.at(i);
        const uint16_t* ar = row_ptr<uint16_t>(a, as, r);
        if (!all_finite16(ar, k)) return FALLBACK;
        const int64_t q = pos + r % groups;
        float m = -INFINITY;
        for (int64_t c = 0; c < k; c++) {
            float z = h2f(ar[c]) * scale;
            if (causal && !attention_keep(q, c, sink, win)) z = -INFINITY;
            if (std::isnan(z)) return FALLBACK;
            x[c] = z;
            m = std::max(m, z);
        }
        if (!std::isfinite(m)) m = 0.0f;
        for (int64_t c = 0; c < k; c++) e[c] = exp32(x[c] - m);
        float s = row_sum(e, k);
        if (!(s > 0.0f)) s = 1.0f;
        for (int64_t c = 0; c < k; c++) e[c] = e[c] / s;
        to_f16(e, S.out.data() + i * k, k);
    }
    return write_out(R, k, out, os);
}

// rope: rotate-half with the table row (row % tokens): [cos | sin]; each product rounded to FP16
API int fllm_misc_rope(const uint8_t* a, int64_t as, const uint8_t* table, int64_t ts, int64_t tokens, uint8_t* out,
                       int64_t os, int64_t rows, int64_t k, const int64_t* live, int64_t nlive) {
    Rows R{rows, live, nlive};
    const int64_t n = R.count(), h = k / 2;
    S.size(n * k, k);
    float *p = S.x.data(), *q = S.y.data();
    for (int64_t i = 0; i < n; i++) {
        const int64_t r = R.at(i);
        const uint16_t* ar = row_ptr<uint16_t>(a, as, r);
        const uint16_t* t = row_ptr<uint16_t>(table, ts, r % tokens);
        if (!all_finite16(ar, k) || !all_finite16(t, k)) return FALLBACK;
        for (int64_t c = 0; c < h; c++) {
            const float x1 = h2f(ar[c]), x2 = h2f(ar[c + h]), cs = h2f(t[c]), sn = h2f(t[c + h]);
            p[c] = x1 * cs;                       // [x1 cos | x2 cos] and [-x2 sin | x1 sin]
            p[c + h] = x2 * cs;
            q[c] = -x2 * sn;
            q[c + h] = x1 * sn;
        }
        uint16_t* o = S.out.data() + i * k;
        to_f16(p, o, k);                          // each product rounded to FP16, then the sum
        for (int64_t c = 0; c < k; c++) p[c] = h2f(o[c]);
        to_f16(q, o, k);
        for (int64_t c = 0; c < k; c++) p[c] = p[c] + h2f(o[c]);
        to_f16(p, o, k);
    }
    return write_out(R, k, out, os);
}

// quant: INT8 codes per row at scale = amax / 127 (1 for a zero row), amax the row's absolute
// maximum or the largest of its `n_given` given maxima; `diffuse`: small values' running sum;
// `residual`: fp16(x - q * scale) written over a's row
API int fllm_misc_quant(uint8_t* a, int64_t as, uint8_t* q, int64_t qs, float* scales, const uint8_t* given,
                        int64_t gs, int64_t n_given, int diffuse, int residual, int64_t rows, int64_t k,
                        const int64_t* live, int64_t nlive) {
    Rows R{rows, live, nlive};
    const int64_t n = R.count();
    S.size(n * k + (residual ? n * k : 0), k);
    std::vector<int8_t> codes(n * k);
    std::vector<float> sc(n);
    float *x = S.x.data(), *rest = S.y.data();
    for (int64_t i = 0; i < n; i++) {
        const int64_t r = R.at(i);
        const uint16_t* ar = row_ptr<uint16_t>(a, as, r);
        if (!all_finite16(ar, k)) return FALLBACK;
        to_f32(ar, x, k);
        float amax = 0.0f;
        if (given) {
            const float* gr = row_ptr<float>(given, gs, r);
            if (!all_finite32(gr, n_given)) return FALLBACK;
            amax = gr[0];
            for (int64_t j = 1; j < n_given; j++) amax = std::max(amax, gr[j]);
        } else {
            amax = absmax16(ar, k);
        }
        float scale = amax / (float)FLLM_QMAX;
        if (amax == 0.0f) scale = 1.0f;
        if (!std::isfinite(scale)) return FALLBACK;
        float run = 0.0f, prev = 0.0f;
        int8_t* qr = codes.data() + i * k;
        float* t = S.z.data();
        // rint as (v + 1.5 * 2^23) - 1.5 * 2^23: exact for |v| < 2^22, and a larger |v| stays
        // outside [-128, 127], where numpy's int8 cast would wrap (left to numpy)
        constexpr float magic = 12582912.0f;
        uint32_t wraps = 0;
        for (int64_t c = 0; c < k; c++) {
            t[c] = (x[c] / scale + magic) - magic;
            wraps |= (uint32_t)(t[c] < -128.0f) | (uint32_t)(t[c] > 127.0f);
        }
        if (wraps) return FALLBACK;
        if (diffuse) {                           // values rounding to 0 join the running sum
            for (int64_t c = 0; c < k; c++) {
                if (t[c] != 0.0f) continue;
                run = run + x[c] / scale;
                const float cur = std::nearbyint(run);
                t[c] = cur - prev;
                prev = cur;
            }
        }
        for (int64_t c = 0; c < k; c++) qr[c] = (int8_t)t[c];
        if (residual)
            for (int64_t c = 0; c < k; c++) rest[c] = x[c] - (float)qr[c] * scale;
        sc[i] = scale;
        if (residual) to_f16(rest, S.out.data() + i * k, k);
    }
    if (residual && any_nan16(S.out.data(), n * k)) return FALLBACK;
    for (int64_t i = 0; i < n; i++) {
        const int64_t r = R.at(i);
        std::memcpy(row_ptr<int8_t>(q, qs, r), codes.data() + i * k, k);
        scales[r] = sc[i];
        if (residual) std::memcpy(row_ptr<uint16_t>(a, as, r), S.out.data() + i * k, 2 * k);
    }
    return OK;
}

// amax: each row's absolute maximum as FP32
API int fllm_misc_amax(const uint8_t* a, int64_t as, float* out2, int64_t rows, int64_t k, const int64_t* live,
                       int64_t nlive) {
    Rows R{rows, live, nlive};
    const int64_t n = R.count();
    std::vector<float> m(n);
    for (int64_t i = 0; i < n; i++) {
        const uint16_t* ar = row_ptr<uint16_t>(a, as, R.at(i));
        if (!all_finite16(ar, k)) return FALLBACK;
        m[i] = absmax16(ar, k);
    }
    for (int64_t i = 0; i < n; i++) out2[R.at(i)] = m[i];
    return OK;
}

// The quant with shared-exponent groups (`agroup`; spec/arithmetic.py quantize_groups): per row
// the FP32 scale absmax / 127, per group of `group` elements the largest e <= GROUP_EXP_MAX with
// max * 2^e <= absmax and codes rint(x / (scale / 2^e)); q rows of k INT8 (stride qs), then
// out2 rows of os2 bytes (the scale, the exponent bytes, zero padding).  FALLBACK on a
// non-finite input or scale.
API int fllm_misc_quant_groups(const uint8_t* a, int64_t as, uint8_t* q, int64_t qs, uint8_t* out2,
                               int64_t os2, int64_t group, int64_t rows, int64_t k,
                               const int64_t* live, int64_t nlive) {
    Rows R{rows, live, nlive};
    const int64_t n = R.count(), ng = k / group;
    S.size(0, k);
    std::vector<int8_t> codes(n * k);
    std::vector<uint8_t> scales(n * os2, 0);
    float* x = S.x.data();
    constexpr float magic = 12582912.0f;       // rint, exact for |v| < 2^22 (|v| <= 127 here)
    for (int64_t i = 0; i < n; i++) {
        const uint16_t* ar = row_ptr<uint16_t>(a, as, R.at(i));
        if (!all_finite16(ar, k)) return FALLBACK;
        to_f32(ar, x, k);
        const float amax = absmax16(ar, k);
        const float scale = amax == 0.0f ? 1.0f : amax / (float)FLLM_QMAX;
        if (!std::isfinite(scale)) return FALLBACK;
        uint8_t* o = scales.data() + i * os2;
        std::memcpy(o, &scale, 4);
        for (int64_t g = 0; g < ng; g++) {
            const float* xg = x + g * group;
            float gmax = 0.0f;
            for (int64_t c = 0; c < group; c++) gmax = std::max(gmax, std::fabs(xg[c]));
            unsigned e = 0;
            for (unsigned j = 1; j <= FLLM_GROUP_EXP_MAX; j++)
                if (gmax * (float)(1u << j) <= amax) e = j;
            o[4 + g] = (uint8_t)e;
            const float step = scale / (float)(1u << e);            // exact: a power of two
            int8_t* qr = codes.data() + i * k + g * group;
            for (int64_t c = 0; c < group; c++) {
                float t = (xg[c] / step + magic) - magic;
                qr[c] = (int8_t)std::min(127.0f, std::max(-127.0f, t));
            }
        }
    }
    for (int64_t i = 0; i < n; i++) std::memcpy(q + R.at(i) * qs, codes.data() + i * k, k);
    for (int64_t i = 0; i < n; i++) std::memcpy(out2 + R.at(i) * os2, scales.data() + i * os2, os2);
    return OK;
}
