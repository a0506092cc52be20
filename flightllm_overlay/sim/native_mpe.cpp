// native_mpe.cpp: the MPE's exact INT8 x INT8 -> INT32 products, FP32 epilogue and FP16 store on the simulated buffers, bit for bit spec/arithmetic.py.
//
// Built and loaded by sim/native.py; called by sim/functional.py (`mpe_execute`).  An MM/MV
// computes out[i, j] = fp16((fp32(acc[i, j]) * a_scale[i]) * w_scale[j]) for the rows i listed
// in `live` (all `m` rows when it is null), acc the exact INT32 sum over k of the INT8
// activations a[i, k] times the INT8 weights, stored as (n, k) rows or, `wt`, as (k, n).
// The products are integer arithmetic (exact on every CPU, whatever the order of the sums);
// the epilogue is two FP32 multiplies in that order (-ffp-contract=off) and IEEE round to
// nearest even, what numpy does.  A result that is a NaN (a NaN scale, or inf times zero)
// returns FALLBACK: the numpy definition then redoes the whole instruction, NaN payloads and all.
//
// One row (decode's MV) streams the INT8 weight rows as they are, prefetched; more rows widen
// COLS weight columns to INT16 once for all rows (either layout) and take them ROWS rows at a
// time.  Many rows (prefill) go to FP32 BLAS instead, multithreaded, and then to
// fllm_mpe_epilogue (sim/mpe_native.py, BLAS_ROWS).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#define API extern "C" __attribute__((visibility("default")))

extern "C" void fllm_f32_to_f16(const float* src, uint16_t* dst, int64_t n);   // native_misc.cpp

namespace {

constexpr int OK = 0, FALLBACK = 1;
constexpr int64_t COLS = 3;      // output columns of one dot-product block
constexpr int64_t ROWS = 4;      // output rows of one dot-product block of a matrix-matrix product
constexpr int64_t DIRECT_ROWS = 1;   // (n, k) weights of at most this many rows: read directly

struct Mpe {
    const int8_t* a; int64_t as; const float* a_scale;
    const int64_t* live; int64_t rows;
    const int8_t* w; int64_t ws; const uint8_t* w_scale;   // FP32, maybe unaligned
    uint8_t* out; int64_t os;
    int64_t n, k;
    const uint8_t* exps = nullptr; int64_t es = 0; int64_t group = 0;   // agroup: exponent bytes
    int64_t row(int64_t i) const { return live ? live[i] : i; }
};

// per-thread scratch: the activations as INT16, INT32 sums, one FP32 row, the weight scales
struct Scratch {
    std::vector<int16_t> a16, w16;
    std::vector<int32_t> acc;
    std::vector<int64_t> acc64;
    std::vector<float> f, ws;
};
thread_local Scratch S;

// the processed rows' activations as contiguous INT16 (rows x k)
void widen_a(const Mpe& p) {
    S.a16.resize(p.rows * p.k);
    for (int64_t i = 0; i < p.rows; i++) {
        const int8_t* src = p.a + p.row(i) * p.as;
        int16_t* dst = S.a16.data() + i * p.k;
        if (!p.exps) {
            for (int64_t c = 0; c < p.k; c++) dst[c] = src[c];
            continue;
        }
        // agroup: each group's activations shifted left by 7 - e (|a| <= 127 * 2^7: INT16),
        // so that one sum over k is the shifted sum of the groups' sums
        const uint8_t* e = p.exps + p.row(i) * p.es;
        for (int64_t c0 = 0; c0 < p.k; c0 += p.group) {
            const int16_t scale = (int16_t)(1 << (7 - (e[c0 / p.group] & 7)));
            for (int64_t c = c0; c < c0 + p.group; c++) dst[c] = (int16_t)(src[c] * scale);
        }
    }
}

// R x C dot products of length k: rows of `a` (INT16, stride k) times weight rows (W, stride
// ws) into acc[r * ldc + c], c < nc; the k loop vectorizes as multiply-adds of INT16 pairs
template <int R, int C, typename W, typename Acc>
inline void dot_block(const int16_t* a, int64_t k, const W* w, int64_t ws, Acc* acc,
                      int64_t ldc, int64_t nc = C) {
    Acc s[R][C] = {};
    for (int64_t x = 0; x < k; x++)
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++)
                s[r][c] += (Acc)a[r * k + x] * (Acc)(int16_t)w[c * ws + x];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < nc; c++) acc[r * ldc + c] = s[r][c];
}

// asks for (n, k) weight rows [j, j + COLS) ahead of their use (the hardware prefetcher alone
// leaves a streamed matrix-vector product at half the memory bandwidth)
inline void prefetch_rows(const Mpe& p, int64_t j) {
    for (int64_t c = j; c < std::min(j + COLS, p.n); c++)
        for (int64_t x = 0; x < p.k; x += 64) __builtin_prefetch(p.w + c * p.ws + x);
}

// acc (rows x n) of (n, k) weights read as they are: one row at a time (matrix-vector)
template <typename Acc>
void products_direct(const Mpe& p, Acc* acc0) {
    for (int64_t i = 0; i < p.rows; i++) {
        const int16_t* a = S.a16.data() + i * p.k;
        Acc* acc = acc0 + i * p.n;
        int64_t j = 0;
        for (; j + COLS <= p.n; j += COLS) {
            prefetch_rows(p, j + 2 * COLS);
            dot_block<1, COLS>(a, p.k, p.w + j * p.ws, p.ws, acc + j, p.n);
        }
        for (; j < p.n; j++)
            dot_block<1, 1>(a, p.k, p.w + j * p.ws, p.ws, acc + j, p.n);
    }
}

// weight columns [j, j + nc) as INT16 rows of k into w16 (COLS rows, zeros past nc)
void widen_w(const Mpe& p, int wt, int64_t j, int64_t nc, int16_t* w16) {
    for (int64_t c = 0; c < COLS; c++) {
        int16_t* dst = w16 + c * p.k;
        if (c >= nc) {
            std::fill(dst, dst + p.k, 0);
        } else if (wt) {
            const int8_t* src = p.w + j + c;
            for (int64_t x = 0; x < p.k; x++) dst[x] = src[x * p.ws];
        } else {
            const int8_t* src = p.w + (j + c) * p.ws;
            for (int64_t x = 0; x < p.k; x++) dst[x] = src[x];
        }
    }
}

// acc (rows x n), COLS weight columns at a time widened once for all rows (matrix-matrix)
template <typename Acc>
void products_blocked(const Mpe& p, int wt, Acc* acc) {
    S.w16.resize(COLS * p.k);
    int16_t* w16 = S.w16.data();
    for (int64_t j = 0; j < p.n; j += COLS) {
        const int64_t nc = std::min(COLS, p.n - j);
        widen_w(p, wt, j, nc, w16);
        int64_t i = 0;
        for (; i + ROWS <= p.rows; i += ROWS)
            dot_block<ROWS, COLS>(S.a16.data() + i * p.k, p.k, w16, p.k, acc + i * p.n + j, p.n, nc);
        for (; i < p.rows; i++)
            dot_block<1, COLS>(S.a16.data() + i * p.k, p.k, w16, p.k, acc + i * p.n + j, p.n, nc);
    }
}

// an out row = fp16((fp32(acc) * a_scale) * w_scale); false when a result is a NaN
template <typename T>
bool epilogue_row(const T* acc, float a_scale, const float* w_scale, int64_t n, uint16_t* out) {
    float* f = S.f.data();
    if (w_scale)
        for (int64_t j = 0; j < n; j++) f[j] = ((float)acc[j] * a_scale) * w_scale[j];
    else
        for (int64_t j = 0; j < n; j++) f[j] = (float)acc[j] * a_scale;
    uint32_t nan = 0;
    for (int64_t j = 0; j < n; j++) {
        uint32_t bits;
        std::memcpy(&bits, f + j, 4);
        nan |= (bits & 0x7FFFFFFFu) > 0x7F800000u;
    }
    if (nan) return false;
    fllm_f32_to_f16(f, out, n);
    return true;
}

// the epilogue of every processed row: acc holds the rows' sums (rows x n, contiguous)
template <typename T>
int epilogue(const Mpe& p, const T* acc) {
    S.f.resize(p.n);
    const float* w_scale = nullptr;
    if (p.w_scale) {             // copied: a snapshot's bytes need not be 4-byte aligned
        S.ws.resize(p.n);
        std::memcpy(S.ws.data(), p.w_scale, 4 * p.n);
        w_scale = S.ws.data();
    }
    for (int64_t i = 0; i < p.rows; i++) {
        const int64_t r = p.row(i);
        if (!epilogue_row(acc + i * p.n, p.a_scale[r], w_scale, p.n,
                          (uint16_t*)(p.out + r * p.os)))
            return FALLBACK;
    }
    return OK;
}

// widen, multiply (direct or blocked), epilogue: one MM/MV with Acc sums
template <typename Acc>
int run(const Mpe& p, int wt, std::vector<Acc>& acc) {
    widen_a(p);
    acc.resize(p.rows * p.n);
    if (!wt && p.rows <= DIRECT_ROWS)
        products_direct(p, acc.data());
    else
        products_blocked(p, wt, acc.data());
    return epilogue(p, acc.data());
}

}  // namespace

// One dense MM/MV: a (m rows of k INT8, row stride as bytes) with a_scale (m FP32), the rows
// listed in live[0:nlive] (all m when live is null); weights INT8, (n, k) rows or wt (k, n),
// row stride ws; w_scale (n FP32) or null; out FP16 rows of n, row stride os bytes.  OK, or
// FALLBACK when a result is a NaN (the output's rows are then partly written).
API int fllm_mpe(const int8_t* a, int64_t as, const float* a_scale, int64_t m, const int64_t* live,
                 int64_t nlive, const int8_t* w, int64_t ws, int wt, const uint8_t* w_scale,
                 uint8_t* out, int64_t os, int64_t n, int64_t k) {
    const Mpe p{a, as, a_scale, live, live ? nlive : m, w, ws, w_scale, out, os, n, k};
    return run(p, wt, S.acc);
}

// The same with shared-exponent activation groups (agroup; spec/arithmetic.py mpe_grouped):
// exps (per processed row's index r, exps[r * es + g] the exponent byte of group g of `group`
// columns); acc = sum_g P_g * 2^(7 - e_g) exact in INT64, then the epilogue with a_scale the
// rows' scales / 128 (exact: the caller divides).
API int fllm_mpe_grouped(const int8_t* a, int64_t as, const float* a_scale, int64_t m,
                         const int64_t* live, int64_t nlive, const uint8_t* exps, int64_t es,
                         int64_t group, const int8_t* w, int64_t ws, int wt,
                         const uint8_t* w_scale, uint8_t* out, int64_t os, int64_t n, int64_t k) {
    Mpe p{a, as, a_scale, live, live ? nlive : m, w, ws, w_scale, out, os, n, k};
    p.exps = exps;
    p.es = es;
    p.group = group;
    return run(p, wt, S.acc64);
}

// An operand of codes (wcodes; spec/arithmetic.py mpe_codes): n rows, row stride ws, each k code
// bytes followed by its k / group (M uint16, B int16) pairs (little endian, maybe unaligned);
// exps/es/agroup as for fllm_mpe_grouped (exps null: one scale per row).  Per processed row,
// A_g = sum of the (shifted) activations of weight group g, once; per output, acc = sum_g
// M_g P_g + B_g A_g with P_g = sum q a (|P_g| < 2^31) exact in INT64, then fp32(acc) * 2^-8 and
// the epilogue with a_scale (the caller divides by 128 with agroup).
API int fllm_mpe_codes(const int8_t* a, int64_t as, const float* a_scale, int64_t m,
                       const int64_t* live, int64_t nlive, const uint8_t* exps, int64_t es,
                       int64_t agroup, const uint8_t* w, int64_t ws, int64_t group,
                       const uint8_t* w_scale, uint8_t* out, int64_t os, int64_t n, int64_t k) {
    Mpe p{a, as, a_scale, live, live ? nlive : m, nullptr, 0, w_scale, out, os, n, k};
    p.exps = exps;
    p.es = es;
    p.group = agroup;
    widen_a(p);
    const int64_t groups = k / group;
    std::vector<int64_t> asum(groups);
    std::vector<float> acc(p.rows * n);
    for (int64_t i = 0; i < p.rows; i++) {
        const int16_t* x = S.a16.data() + i * k;
        for (int64_t g = 0; g < groups; g++) {
            int64_t t = 0;
            for (int64_t c = g * group; c < (g + 1) * group; c++) t += x[c];
            asum[g] = t;
        }
        for (int64_t j = 0; j < n; j++) {
            const uint8_t* q = w + j * ws;
            const uint8_t* par = q + k;
            __builtin_prefetch(q + 2 * ws);
            int64_t sum = 0;
            for (int64_t g = 0; g < groups; g++) {
                int32_t pg = 0;
                for (int64_t c = g * group; c < (g + 1) * group; c++) pg += (int32_t)x[c] * q[c];
                uint16_t mu;
                int16_t b;
                std::memcpy(&mu, par + 4 * g, 2);
                std::memcpy(&b, par + 4 * g + 2, 2);
                sum += (int64_t)mu * pg + (int64_t)b * asum[g];
            }
            acc[i * n + j] = (float)sum * 0x1p-8f;
        }
    }
    return epilogue(p, acc.data());
}

// The epilogue of products made elsewhere: acc (the processed rows' sums as FP32, exact
// integers, rows x n contiguous); the other operands and the result as for fllm_mpe.
API int fllm_mpe_epilogue(const float* acc, const float* a_scale, int64_t m, const int64_t* live,
                          int64_t nlive, const uint8_t* w_scale, uint8_t* out, int64_t os,
                          int64_t n) {
    const Mpe p{nullptr, 0, a_scale, live, live ? nlive : m, nullptr, 0, w_scale, out, os, n, 0};
    return epilogue(p, acc);
}

