/* Dot products of one weight row with one fp32 row, fp32 accumulation: the inner loops of the decode
   steps' weight products (gemv.c) and of the fused decode step (step.c).  Weights as fp32, bf16 (uint16)
   or int8.  With AVX-512 (16 lanes) or AVX2 with FMA (8 lanes), four vector accumulators per dot
   product: with one, the FMA's latency, not the loads, limits the loop (the compiler's own vectorization
   of the plain loop keeps one: int8 ran at ~11 GB/s on a 2-core AVX2 EPYC, compute-bound, where its
   memory reads ~31 GB/s); otherwise the compiler vectorizes the loops. */
#ifndef CC_DOT_H
#define CC_DOT_H
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

#ifdef __AVX512F__
/* 16 weights as fp32 */
static inline __m512 load_bf16(const uint16_t *w) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)w)), 16));
}

static inline __m512 load_f32(const float *w) { return _mm512_loadu_ps(w); }

static inline __m512 load_int8(const int8_t *w) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)w)));
}
#elif defined(__AVX2__) && defined(__FMA__)
#define CC_AVX2 1
/* 8 weights as fp32 */
static inline __m256 load8_bf16(const uint16_t *w) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)w)), 16));
}

static inline __m256 load8_f32(const float *w) { return _mm256_loadu_ps(w); }

static inline __m256 load8_int8(const int8_t *w) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)w)));
}

static inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

#define CC_DOT8(LOAD)                                                       \
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;               \
  for (; k + 32 <= K; k += 32) {                                            \
    a0 = _mm256_fmadd_ps(LOAD(w + k), _mm256_loadu_ps(x + k), a0);           \
    a1 = _mm256_fmadd_ps(LOAD(w + k + 8), _mm256_loadu_ps(x + k + 8), a1);   \
    a2 = _mm256_fmadd_ps(LOAD(w + k + 16), _mm256_loadu_ps(x + k + 16), a2); \
    a3 = _mm256_fmadd_ps(LOAD(w + k + 24), _mm256_loadu_ps(x + k + 24), a3); \
  }                                                                         \
  acc = sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif

/* The vector part of a dot product: k advanced past what it summed into acc (LOAD16/LOAD8: 16 or 8 weights as
   fp32, for AVX-512 or AVX2); the caller's scalar loop does the tail. */
#ifdef __AVX512F__
#define CC_DOT_VEC(LOAD16, LOAD8)                                                     \
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                         \
  for (; k + 64 <= K; k += 64) {                                                      \
    a0 = _mm512_fmadd_ps(LOAD16(w + k), _mm512_loadu_ps(x + k), a0);                  \
    a1 = _mm512_fmadd_ps(LOAD16(w + k + 16), _mm512_loadu_ps(x + k + 16), a1);        \
    a2 = _mm512_fmadd_ps(LOAD16(w + k + 32), _mm512_loadu_ps(x + k + 32), a2);        \
    a3 = _mm512_fmadd_ps(LOAD16(w + k + 48), _mm512_loadu_ps(x + k + 48), a3);        \
  }                                                                                   \
  acc = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#elif defined(CC_AVX2)
#define CC_DOT_VEC(LOAD16, LOAD8) CC_DOT8(LOAD8)
#else
#define CC_DOT_VEC(LOAD16, LOAD8)
#endif

#define CC_DEFINE_DOT(NAME, T, LOAD16, LOAD8, WIDEN)                    \
  static inline float NAME(const T *w, const float *x, int64_t K) {     \
    int64_t k = 0;                                                      \
    float acc = 0.f;                                                    \
    CC_DOT_VEC(LOAD16, LOAD8)                                           \
    _Pragma("omp simd reduction(+ : acc)")                              \
    for (int64_t j = k; j < K; j++) acc += WIDEN(w[j]) * x[j];          \
    return acc;                                                         \
  }

#define CC_AS_F32(v) ((float)(v))
CC_DEFINE_DOT(dot_bf16, uint16_t, load_bf16, load8_bf16, bf16_to_f32)
CC_DEFINE_DOT(dot_int8, int8_t, load_int8, load8_int8, CC_AS_F32)
CC_DEFINE_DOT(dot_f32, float, load_f32, load8_f32, CC_AS_F32)
#endif
