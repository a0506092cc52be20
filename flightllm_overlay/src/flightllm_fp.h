// flightllm_fp.h: FP16/FP32 conversions and the MISC exp32 of the FlightLLM HLS kernels, bit-exact with spec/arithmetic.py.
//
// Every rounding is IEEE round to nearest, ties to even.  FP32 arithmetic is plain C++ float
// arithmetic (one rounding per operation: build with -ffp-contract=off so that no multiply-add is
// fused); exp32 is the float64 evaluation that spec/arithmetic.py defines, with its constants taken
// from the generated header.
#ifndef FLIGHTLLM_FP_H
#define FLIGHTLLM_FP_H

#include <cmath>
#include <cstdint>
#include <cstring>

#include "flightllm_hw.h"

static inline float fllm_bits_f32(uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

static inline uint32_t fllm_f32_bits(float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
}

// binary16 -> binary32 (exact; a NaN keeps its payload)
static inline float fllm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    if (exp == 0) {
        if (man == 0) return fllm_bits_f32(sign);
        float v = (float)man * fllm_bits_f32(0x33800000u);       // man * 2^-24, exact
        return sign ? -v : v;
    }
    if (exp == 31) return fllm_bits_f32(sign | 0x7F800000u | (man << 13));
    return fllm_bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

// binary32 -> binary16, round to nearest even, overflow to +-inf (numpy's astype(float16))
static inline uint16_t fllm_f32_to_f16(float f) {
    uint32_t x = fllm_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) {                                  // inf or NaN
        if (ax == 0x7F800000u) return (uint16_t)(sign | 0x7C00u);
        uint32_t h = 0x7C00u + ((ax & 0x7FFFFFu) >> 13);
        if (h == 0x7C00u) h++;
        return (uint16_t)(sign | h);
    }
    if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);  // >= 65520: rounds to inf
    if (ax < 0x38800000u) {                                   // below 2^-14: subnormal or zero
        if (ax <= 0x33000000u) return (uint16_t)sign;         // <= 2^-25: rounds to 0
        uint32_t e = ax >> 23, m = (ax & 0x7FFFFFu) | 0x800000u;
        uint32_t shift = 126 - e;                              // 14..24
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = (((ax >> 23) - 112) << 10) | ((ax & 0x7FFFFFu) >> 13);
    uint32_t rem = ax & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

// the MISC exponential (units.exp32): clip, reduce by ln 2, degree-13 Horner in float64, round once
static inline float fllm_exp32(float x) {
    if (std::isnan(x)) return x;
    double t = (double)x;
    if (t < FLLM_EXP_CLAMP_LO) t = FLLM_EXP_CLAMP_LO;
    if (t > FLLM_EXP_CLAMP_HI) t = FLLM_EXP_CLAMP_HI;
    double n = std::nearbyint(t * FLLM_EXP_LOG2E);
    double r = (t - n * FLLM_EXP_LN2_HI) - n * FLLM_EXP_LN2_LO;
    const int top = (int)(sizeof(FLLM_EXP_COEFFS) / sizeof(FLLM_EXP_COEFFS[0])) - 1;
    double p = FLLM_EXP_COEFFS[top];
EXP_HORNER:
    for (int k = top - 1; k >= 0; --k) {
#pragma HLS LOOP_TRIPCOUNT max = 13
        p = p * r;
        p = p + FLLM_EXP_COEFFS[k];
    }
    return (float)std::ldexp(p, (int)n);
}

#endif  // FLIGHTLLM_FP_H
