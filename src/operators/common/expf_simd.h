/*!
 * \file expf_simd.h
 * \brief expf for 4 floats at once, bit for bit the expf of glibc's libm on x86-64 CPUs with FMA
 *        (CPU only: x86-64 with GCC, whose pragmas its callers use to keep float code unfused;
 *        elsewhere SSDKIT_HAVE_EXPF_SIMD is undefined and callers use expf).
 *
 * Why: MXNet's contrib MultiBoxDetection decodes every candidate box with libm's scalar expf, and
 * ssdkit's output must equal contrib's bit for bit, so a faster approximation (common/fast_exp.h)
 * cannot be used there. glibc (2.28 and later) computes expf in double precision: with N = 32,
 * k = round(x * N / ln 2), r = x * N / ln 2 - k, expf(x) = (float)(2^(k/N) * p(r)) where 2^(k/N) is
 * a table entry for k mod N with k div N added to its exponent bits, and p a cubic. On CPUs with
 * FMA, libm's ifunc picks a build of that code in which the compiler fused the multiply-adds; the
 * steps below are exactly that sequence of double operations (fused where it fuses), so every
 * result is the same double, rounded to float by the same conversion.
 * Constants: the table is 2^(i/32) rounded to double minus i << 47 (derived, and equal to libm's
 * table); the polynomial is the published minimax cubic of that implementation, scaled by
 * N^-3, N^-2, N^-1.
 * Inputs with |x| >= ~88 (and NaN, inf) take libm's own slow path: those lanes call expf.
 * Because "the same as libm" is a property of the libm at hand, callers use Expf4 only after
 * Expf4MatchesLibm() (a check of 2^18 + special inputs against expf, once per process) and only
 * where the CPU has AVX2 and FMA; otherwise they call expf. tests/test_multibox_detection.py checks
 * the operator bit for bit against contrib on dense scores (every candidate decoded).
 */
#ifndef SSDKIT_COMMON_EXPF_SIMD_H_
#define SSDKIT_COMMON_EXPF_SIMD_H_

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define SSDKIT_HAVE_EXPF_SIMD 1
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace ssdkit {
namespace expf_simd {

alignas(32) constexpr uint64_t kTable[32] = {
    0x3ff0000000000000ull, 0x3fefd9b0d3158574ull, 0x3fefb5586cf9890full, 0x3fef9301d0125b51ull,
    0x3fef72b83c7d517bull, 0x3fef54873168b9aaull, 0x3fef387a6e756238ull, 0x3fef1e9df51fdee1ull,
    0x3fef06fe0a31b715ull, 0x3feef1a7373aa9cbull, 0x3feedea64c123422ull, 0x3feece086061892dull,
    0x3feebfdad5362a27ull, 0x3feeb42b569d4f82ull, 0x3feeab07dd485429ull, 0x3feea47eb03a5585ull,
    0x3feea09e667f3bcdull, 0x3fee9f75e8ec5f74ull, 0x3feea11473eb0187ull, 0x3feea589994cce13ull,
    0x3feeace5422aa0dbull, 0x3feeb737b0cdc5e5ull, 0x3feec49182a3f090ull, 0x3feed503b23e255dull,
    0x3feee89f995ad3adull, 0x3feeff76f2fb5e47ull, 0x3fef199bdd85529cull, 0x3fef3720dcef9069ull,
    0x3fef5818dcfba487ull, 0x3fef7c97337b9b5full, 0x3fefa4afa2a490daull, 0x3fefd0765b6e4540ull,
};
constexpr double kInvLn2N = 0x1.71547652b82fep+5;  // 32 / ln 2
constexpr double kShift = 0x1.8p+52;               // adding it rounds to an integer (low bits: k)
constexpr double kC0 = 0x1.c6af84b912394p-20;      // cubic coefficients, scaled
constexpr double kC1 = 0x1.ebfce50fac4f3p-13;
constexpr double kC2 = 0x1.62e42ff0c52d6p-6;
constexpr uint32_t kSlowAbsTop = 0x42a;            // (bits >> 20) & 0x7ff above this: |x| >= 88 or not finite

/*! \brief expf of the 4 lanes of `x` (see file comment; only where Expf4MatchesLibm()). */
__attribute__((target("avx2,fma"))) inline __m128 Expf4(__m128 x) {
  const __m256d xd = _mm256_cvtps_pd(x);
  const __m256d inv = _mm256_set1_pd(kInvLn2N), shift = _mm256_set1_pd(kShift);
  __m256d kd = _mm256_fmadd_pd(inv, xd, shift);
  const __m256i ki = _mm256_castpd_si256(kd);
  kd = _mm256_sub_pd(kd, shift);
  const __m256d r = _mm256_fmsub_pd(inv, xd, kd);
  const __m256i entry = _mm256_i64gather_epi64(reinterpret_cast<const long long*>(kTable),
                                               _mm256_and_si256(ki, _mm256_set1_epi64x(31)), 8);
  const __m256d s = _mm256_castsi256_pd(_mm256_add_epi64(entry, _mm256_slli_epi64(ki, 47)));
  const __m256d z = _mm256_fmadd_pd(r, _mm256_set1_pd(kC0), _mm256_set1_pd(kC1));
  const __m256d r2 = _mm256_mul_pd(r, r);
  __m256d y = _mm256_fmadd_pd(r, _mm256_set1_pd(kC2), _mm256_set1_pd(1.0));
  y = _mm256_fmadd_pd(z, r2, y);
  y = _mm256_mul_pd(y, s);
  __m128 out = _mm256_cvtpd_ps(y);
  // lanes on libm's slow path (rare: |x| >= 88, inf, NaN): libm itself
  const __m128i top = _mm_and_si128(_mm_srli_epi32(_mm_castps_si128(x), 20), _mm_set1_epi32(0x7ff));
  const int slow = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(top, _mm_set1_epi32(kSlowAbsTop))));
  if (slow) {
    alignas(16) float in[4], res[4];
    _mm_store_ps(in, x);
    _mm_store_ps(res, out);
    for (int i = 0; i < 4; ++i) {
      if (slow & (1 << i)) res[i] = expf(in[i]);
    }
    out = _mm_load_ps(res);
  }
  return out;
}

/*! \brief Expf4 over n floats (any n; the tail by expf). */
__attribute__((target("avx2,fma"))) inline void ExpfArray(const float* x, float* y, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(y + i, Expf4(_mm_loadu_ps(x + i)));
  for (; i < n; ++i) y[i] = expf(x[i]);
}

/*! \brief Does Expf4 equal this process's libm expf, and has the CPU AVX2 and FMA? Checked once
 *  (2^18 inputs spread over every exponent of both signs, plus 0, denormals, +-inf, NaN, and the
 *  edges of libm's fast path); the answer is cached. */
inline bool Expf4MatchesLibm() {
  static const bool ok = []() {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return false;
    constexpr int kCount = 1 << 18;
    std::vector<float> in_buf(kCount + 16), got_buf(kCount + 16);
    float* in = in_buf.data();
    float* got = got_buf.data();
    uint32_t state = 0x9e3779b9u;
    for (int i = 0; i < kCount; ++i) {
      state = state * 1664525u + 1013904223u;  // every sign, exponent and mantissa pattern
      uint32_t bits = state;
      if (i & 1) bits = (bits & 0x807fffffu) | ((0x70u + ((bits >> 23) & 0x1fu)) << 23);  // |x| in [2^-15, 2^16]
      std::memcpy(&in[i], &bits, sizeof(bits));
    }
    const float special[16] = {0.f, -0.f, 1e-45f, -1e-45f, INFINITY, -INFINITY, NAN, 88.f, -88.f,
                               88.72283f, 88.72284f, -103.97207f, -103.97208f, 1.f, -1.f, 0.5f};
    std::memcpy(in + kCount, special, sizeof(special));
    ExpfArray(in, got, kCount + 16);
    for (int i = 0; i < kCount + 16; ++i) {
      const float want = expf(in[i]);
      if (std::memcmp(&want, &got[i], sizeof(float)) != 0 && !(want != want && got[i] != got[i])) return false;
    }
    return true;
  }();
  return ok;
}

}  // namespace expf_simd
}  // namespace ssdkit
#endif  // x86-64 GCC

#endif  // SSDKIT_COMMON_EXPF_SIMD_H_
