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
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#define API extern "C" __attribute__((visibility("default")))

extern "C" void fllm_f32_to_f16(const float* src, uint16_t* dst, int64_t n);   // native_misc.cpp

namespace {

constexpr int OK = 0, FALLBACK = 1;
constexpr int64_t COLS = 4;      // output columns of one (n, k) dot-product block
constexpr int64_t ROWS = 2;      // output rows of one (n, k) dot-product block
constexpr int64_t WT_COLS = 256; // output columns of one (k, n) block

struct Mpe {
    const int8_t* a; int64_t as; const float* a_scale;
    const int64_t* live; int64_t rows;
    const int8_t* w; int64_t ws; const uint8_t* w_scale;   // FP32, maybe unaligned
    uint8_t* out; int64_t os;
    int64_t n, k;
    int64_t row(int64_t i) const { return live ? live[i] : i; }
};

// per-thread scratch: the activations as INT16, INT32 sums, one FP32 row, the weight scales
struct Scratch {
    std::vector<int16_t> a16;
    std::vector<int32_t> acc;
    std::vector<float> f, ws;
};
thread_local Scratch S;

// the processed rows' activations as contiguous INT16 (rows x k)
void widen_a(const Mpe& p) {
    S.a16.resize(p.rows * p.k);
    for (int64_t i = 0; i < p.rows; i++) {
        const int8_t* src = p.a + p.row(i) * p.as;
        int16_t* dst = S.a16.data() + i * p.k;
        for (int64_t c = 0; c < p.k; c++) dst[c] = src[c];
    }
}

// R x C dot products of length k: rows of `a` (INT16, stride k) times weight rows (INT8, stride
// ws) into acc[r * ldc + c]; the k loop vectorizes as multiply-adds of INT16 pairs into INT32
template <int R, int C>
inline void dot_block(const int16_t* a, int64_t k, const int8_t* w, int64_t ws, int32_t* acc,
                      int64_t ldc) {
    int32_t s[R][C] = {};
    for (int64_t x = 0; x < k; x++)
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++)
                s[r][c] += (int32_t)a[r * k + x] * (int32_t)(int16_t)w[c * ws + x];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r * ldc + c] = s[r][c];
}

template <int R>
inline void dot_rows(const Mpe& p, const int16_t* a, int32_t* acc) {
    int64_t j = 0;
    for (; j + COLS <= p.n; j += COLS)
        dot_block<R, COLS>(a, p.k, p.w + j * p.ws, p.ws, acc + j, p.n);
    for (; j < p.n; j++)
        dot_block<R, 1>(a, p.k, p.w + j * p.ws, p.ws, acc + j, p.n);
}

// acc (rows x n) of (n, k) weights
void products_nk(const Mpe& p) {
    int64_t i = 0;
    for (; i + ROWS <= p.rows; i += ROWS)
        dot_rows<ROWS>(p, S.a16.data() + i * p.k, S.acc.data() + i * p.n);
    for (; i < p.rows; i++)
        dot_rows<1>(p, S.a16.data() + i * p.k, S.acc.data() + i * p.n);
}

// acc (rows x n) of (k, n) weights: per row, columns in blocks, one multiply-add per k
void products_kn(const Mpe& p) {
    int32_t s[WT_COLS];
    for (int64_t i = 0; i < p.rows; i++) {
        const int16_t* a = S.a16.data() + i * p.k;
        for (int64_t j0 = 0; j0 < p.n; j0 += WT_COLS) {
            const int64_t nb = std::min(WT_COLS, p.n - j0);
            std::fill(s, s + nb, 0);
            for (int64_t x = 0; x < p.k; x++) {
                const int32_t ax = a[x];
                const int8_t* w = p.w + x * p.ws + j0;
                for (int64_t c = 0; c < nb; c++) s[c] += ax * (int32_t)w[c];
            }
            std::copy(s, s + nb, S.acc.data() + i * p.n + j0);
        }
    }
}

// out row r = fp16((fp32(acc) * a_scale) * w_scale); false when a result is a NaN
bool epilogue_row(const int32_t* acc, float a_scale, const float* w_scale, int64_t n,
                  uint16_t* out) {
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

int epilogue(const Mpe& p) {
    S.f.resize(p.n);
    const float* w_scale = nullptr;
    if (p.w_scale) {             // copied: a snapshot's bytes need not be 4-byte aligned
        S.ws.resize(p.n);
        std::memcpy(S.ws.data(), p.w_scale, 4 * p.n);
        w_scale = S.ws.data();
    }
    for (int64_t i = 0; i < p.rows; i++) {
        const int64_t r = p.row(i);
        if (!epilogue_row(S.acc.data() + i * p.n, p.a_scale[r], w_scale, p.n,
                          (uint16_t*)(p.out + r * p.os)))
            return FALLBACK;
    }
    return OK;
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
    widen_a(p);
    S.acc.resize(p.rows * n);
    if (wt)
        products_kn(p);
    else
        products_nk(p);
    return epilogue(p);
}

