// Private helpers of the CPU backend (kernels/cpu/ only): the cblas dispatch for float and
// double, OpenMP work thresholds, vectorised exp-based row primitives (AVX2 for float, scalar for
// double, the fp64 oracle's build) and the e4m3 rounding of the FP8 emulation. Not an API.
#pragma once

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "core/status.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MARIANA_CPU_AVX2 1
#endif

namespace mariana::cpu::detail {

// Below about this many scalar operations an OpenMP region costs more than it saves.
constexpr int64_t kParallelMinWork = 1 << 15;

inline bool worth_parallel(int64_t work) { return work >= kParallelMinWork; }

// ---- BLAS ------------------------------------------------------------------------------------
// Row-major C[M,N] = alpha·A[M,K]·B[N,K]ᵀ + beta·C for M <= kSkinnyMaxRows: a linear layer applied
// to one token (decode) or two (speculative verification). OpenBLAS's sgemm packs the whole
// weight matrix B on every call, which makes it 1.5-2.5x slower here at M = 1 and 2 (bench/RESULTS.md,
// "Decode GEMMs"; from M = 4 sgemm is faster again); this kernel streams each row of B once for
// both rows of A. Entry (i, j) is computed the same
// way whatever M, N, the row's position and the thread count (one AVX2 accumulator per entry over
// k in order, then a fixed reduction), so a token's result does not depend on what shares the call.
constexpr int64_t kSkinnyMaxRows = 2;
void skinny_gemm_nt(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                    int64_t ldb, float beta, float* C, int64_t ldc);

// Row-major C[M,N] = alpha·A[M,K]·B[K,N] + beta·C for M <= kSkinnyMaxRows (an expert's or a block
// tail's input gradient). Replaces cblas_sgemv, whose threaded split changes the rounding of some
// entries with the thread count: here each entry sums over k in order, in column chunks fixed by N.
void skinny_gemm_nn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                    int64_t ldb, float beta, float* C, int64_t ldc);

// OpenBLAS's threaded sgemm is not bitwise the same as its one-thread sgemm: how it splits the
// work (K remainders halved differently in level3.c and level3_thread.c; M/N partitions that change
// which tail kernel an entry meets) depends on the thread count, and with Haswell kernels (what
// AMD Zen and any CPU pinned with OPENBLAS_CORETYPE=Haswell run) 4-29% of the entries of
// ordinary products differed between 1 and 2 threads in a probe of seven shapes. So blas_gemm never lets OpenBLAS thread: it
// cuts C into a grid of tiles whose size depends only on M and N (about half of each dimension, a
// multiple of kBlasTile, within [kBlasMinTile, kBlasMaxTile]), and runs one single-threaded sgemm
// per tile, the tiles spread over the OpenMP threads (OpenMP OpenBLAS runs single-threaded inside
// a parallel region). Every entry is then computed by the same call on any thread count, with any
// kernel; CpuParity.GemmIndependentOfThreads checks it. OpenBLAS's dgemm (the fp64 oracle, tests
// only) keeps no such guarantee.
constexpr int64_t kBlasTile = 64;
constexpr int64_t kBlasMinTile = 256;
constexpr int64_t kBlasMaxTile = 1024;

// The tile edge for a dimension of n: n / 2 rounded up to kBlasTile, within [kBlasMinTile,
// kBlasMaxTile]. Each tile packs its own panels, so fewer, larger tiles cost less (measured: 2048³
// at 2x2 tiles runs at ~94% of OpenBLAS's own threaded rate, at 4x4 ~87%); the cap keeps enough
// tiles for many cores on large products.
inline int64_t blas_tile_edge(int64_t n) {
  const int64_t half = ((n + 1) / 2 + kBlasTile - 1) / kBlasTile * kBlasTile;
  return std::clamp(half, kBlasMinTile, kBlasMaxTile);
}

// Row-major C[M,N] = alpha·op(A)·op(B) + beta·C. Inside an OpenMP parallel region the OpenMP build
// of OpenBLAS runs single-threaded, so callers may use this per (sequence, head) in a parallel for.
// For T = float the result does not depend on the thread count (see kBlasTile).
template <typename T>
void blas_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
               int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // BLAS rejects lda < 1 here; the product is empty, so only C = beta·C remains.
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  MARIANA_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX);
  MARIANA_CHECK(lda <= INT_MAX && ldb <= INT_MAX && ldc <= INT_MAX);
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    if (M <= kSkinnyMaxRows && !trans_a) {  // decode: one or two tokens (see skinny_gemm_nt)
      if (trans_b) {
        skinny_gemm_nt(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      } else {
        skinny_gemm_nn(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      }
      return;
    }
    const int64_t tm = blas_tile_edge(M), tn = blas_tile_edge(N);
    const int64_t gm = (M + tm - 1) / tm, gn = (N + tn - 1) / tn;
    // A parallel region even for one tile: it keeps OpenBLAS on one thread (inside an enclosing
    // parallel region this one is inactive and the tiles run in order on the caller's thread).
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < gm * gn; ++t) {
      const int64_t m0 = t / gn * tm, n0 = t % gn * tn;
      const int64_t m = std::min(tm, M - m0), n = std::min(tn, N - n0);
      const float* a = A + (trans_a ? m0 : m0 * lda);  // rows m0.. of op(A)
      const float* b = B + (trans_b ? n0 * ldb : n0);  // columns n0.. of op(B)
      cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(n), int(K), alpha, a, int(lda), b, int(ldb), beta,
                  C + m0 * ldc + n0, int(ldc));
    }
  } else {
    static_assert(std::is_same_v<T, double>);
    cblas_dgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta,
                C, int(ldc));
  }
}

// ---- Vectorised exp (float, AVX2) ------------------------------------------------------------
#ifdef MARIANA_CPU_AVX2
// exp of 8 floats, Cephes-style: x = n·ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r, scaled
// by 2^n through the exponent bits. Max relative error about 2 ulp. Inputs are clamped to 88
// (no overflow); inputs below -87.33 (where e^x leaves the normal range) give exactly 0.
inline __m256 exp8(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654475f), _CMP_LT_OQ);
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.33654475f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // Cody–Waite: ln2 = C1 + C2
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(underflow, y);
}

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// exp of one element with the same function as the vector path (so a row's tail matches its body).
inline float exp1(float x) {
#ifdef MARIANA_CPU_AVX2
  return _mm_cvtss_f32(_mm256_castps256_ps128(exp8(_mm256_set1_ps(x))));
#else
  return std::exp(x);
#endif
}
inline double exp1(double x) { return std::exp(x); }

// max_j x[j]; -inf for n == 0.
inline double row_max(const double* x, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j]);
  return m;
}
inline float row_max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
#ifdef MARIANA_CPU_AVX2
  if (n >= 8) {
    __m256 m0 = _mm256_loadu_ps(x), m1 = m0;
    for (; j + 16 <= n; j += 16) {
      m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + j));
      m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + j + 8));
    }
    for (; j + 8 <= n; j += 8) m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + j));
    m = hmax8(_mm256_max_ps(m0, m1));
  }
#endif
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// y[j] = exp(x[j] - shift) (y may alias x); returns Σ_j y[j]. y == nullptr: the sum only.
// prefetch (optional): the start of n values to pull into L1 meanwhile (the next chunk of a row).
inline double exp_shift_sum(double* y, const double* x, int64_t n, double shift,
                            const double* prefetch = nullptr) {
  (void)prefetch;
  double s = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double e = std::exp(x[j] - shift);
    if (y) y[j] = e;
    s += e;
  }
  return s;
}
inline float exp_shift_sum(float* y, const float* x, int64_t n, float shift,
                           const float* prefetch = nullptr) {
  int64_t j = 0;
  float s = 0;
#ifdef MARIANA_CPU_AVX2
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; j + 16 <= n; j += 16) {
    if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(prefetch + j), _MM_HINT_T0);  // one line
    const __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), sh));
    const __m256 e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j + 8), sh));
    if (y) {
      _mm256_storeu_ps(y + j, e0);
      _mm256_storeu_ps(y + j + 8, e1);
    }
    acc0 = _mm256_add_ps(acc0, e0);
    acc1 = _mm256_add_ps(acc1, e1);
  }
  for (; j + 8 <= n; j += 8) {
    const __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), sh));
    if (y) _mm256_storeu_ps(y + j, e0);
    acc0 = _mm256_add_ps(acc0, e0);
  }
  s = hsum8(_mm256_add_ps(acc0, acc1));
#endif
  for (; j < n; ++j) {
    const float e = exp1(x[j] - shift);
    if (y) y[j] = e;
    s += e;
  }
  return s;
}

// d[j] += a · exp(x[j] - shift).
inline void exp_shift_axpy(double* d, const double* x, int64_t n, double shift, double a) {
  for (int64_t j = 0; j < n; ++j) d[j] += a * std::exp(x[j] - shift);
}
inline void exp_shift_axpy(float* d, const float* x, int64_t n, float shift, float a) {
  int64_t j = 0;
#ifdef MARIANA_CPU_AVX2
  const __m256 sh = _mm256_set1_ps(shift), av = _mm256_set1_ps(a);
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), sh));
    _mm256_storeu_ps(d + j, _mm256_fmadd_ps(av, e, _mm256_loadu_ps(d + j)));
  }
#endif
  for (; j < n; ++j) d[j] += a * exp1(x[j] - shift);
}

// y[j] = 1 / (1 + exp(-x[j])) (y may alias x).
inline void sigmoid(double* y, const double* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = 1.0 / (1.0 + std::exp(-x[j]));
}
inline void sigmoid(float* y, const float* x, int64_t n) {
  int64_t j = 0;
#ifdef MARIANA_CPU_AVX2
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(zero, _mm256_loadu_ps(x + j)));
    _mm256_storeu_ps(y + j, _mm256_div_ps(one, _mm256_add_ps(one, e)));
  }
#endif
  for (; j < n; ++j) y[j] = 1.0f / (1.0f + exp1(-x[j]));
}

// ---- e4m3 rounding (FP8 emulation, docs/numerics.md#fp8-emulation) ---------------------------
// The e4m3fn value nearest to v (round to nearest even), saturating at ±448: 3 mantissa bits,
// normal exponents 2^-6..2^8, subnormals spaced 2^-9. Rounds v directly in T (no detour through
// float for doubles, which could round twice). NaN stays NaN.
template <typename T>
T e4m3_round(T v) {
  using U = std::conditional_t<std::is_same_v<T, float>, uint32_t, uint64_t>;
  constexpr int kMant = std::numeric_limits<T>::digits - 1;  // 23 or 52 stored mantissa bits
  constexpr int kDrop = kMant - 3;
  constexpr T kMax = T(448);
  constexpr T kMinNormal = T(1) / T(64);                         // 2^-6
  constexpr T kSubMagic = T(U(1) << (kMant - 9));                // ulp(kSubMagic) = 2^-9
  if (std::isnan(v)) return v;
  const T a = std::fabs(v);
  T r;
  if (a < kMinNormal) {
    // Fixed spacing 2^-9: the hardware's round-to-nearest-even of the addition does the rounding.
    r = (a + kSubMagic) - kSubMagic;
  } else {
    // Keep 3 mantissa bits, round to nearest even on the bit pattern; a carry bumps the exponent.
    U u = std::bit_cast<U>(a);
    const U half = (U(1) << (kDrop - 1)) - 1;
    u = (u + half + ((u >> kDrop) & 1)) & ~((U(1) << kDrop) - 1);
    r = std::bit_cast<T>(u);
  }
  r = std::min(r, kMax);  // also catches +inf
  return std::signbit(v) ? -r : r;
}

// The fine-grained scale of one tile: s = max(amax, 1e-4) / 448, or the next power of two above.
template <typename T>
T fp8_scale(T amax, bool pow2) {
  T s = std::max(amax, T(1e-4)) / T(448);
  if (pow2) {
    int e = 0;
    const T m = std::frexp(s, &e);  // s = m·2^e, m in [0.5, 1): 2^ceil(log2 s) exactly
    s = m == T(0.5) ? s : std::ldexp(T(1), e);
  }
  return s;
}

}  // namespace mariana::cpu::detail
