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

/* Eight weights widened to fp32, and a vector's lanes summed: AVX2's, also where AVX-512 sets the width
   (step.c's attention loops are eight lanes wide on both). */
#if defined(__AVX2__) && defined(__FMA__)
static inline __m256 load8_bf16(const uint16_t *w) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)w)), 16));
}

static inline __m256 load8_int8(const int8_t *w) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)w)));
}

static inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

/* The vector width, as names both dot.h and step.c use: CC_LANES weights a vector; CC_W_BF16/INT8/F32 load that
   many weights widened to fp32; CC_LOADX loads activations; CC_FMA, CC_ADD, CC_ZERO; CC_SUM adds a vector's
   lanes.  AVX-512: 16 lanes; AVX2 with FMA: 8; otherwise CC_LANES is not defined. */
#ifdef __AVX512F__
static inline __m512 load_bf16(const uint16_t *w) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)w)), 16));
}

static inline __m512 load_int8(const int8_t *w) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)w)));
}

#define CC_LANES 16
#define CC_VEC __m512
#define CC_ZERO _mm512_setzero_ps()
#define CC_FMA _mm512_fmadd_ps
#define CC_ADD _mm512_add_ps
#define CC_LOADX _mm512_loadu_ps
#define CC_SUM _mm512_reduce_add_ps
#define CC_W_BF16(p) load_bf16(p)
#define CC_W_INT8(p) load_int8(p)
#define CC_W_F32(p) _mm512_loadu_ps(p)
#elif defined(__AVX2__) && defined(__FMA__)
#define CC_LANES 8
#define CC_VEC __m256
#define CC_ZERO _mm256_setzero_ps()
#define CC_FMA _mm256_fmadd_ps
#define CC_ADD _mm256_add_ps
#define CC_LOADX _mm256_loadu_ps
#define CC_SUM sum8
#define CC_W_BF16(p) load8_bf16(p)
#define CC_W_INT8(p) load8_int8(p)
#define CC_W_F32(p) _mm256_loadu_ps(p)
#endif

/* Software prefetch of the weights CC_PREFETCH bytes ahead of the loads, one cache line at a time, into
   the nearest cache without displacing what stays there (NTA): the hardware prefetchers alone left a
   2-core EPYC's weight stream at 40-46 GB/s, 2 KB ahead took it to 48-51 (the MLP's down product, whose
   fp32 row of x does not fit in L1 beside the stream, gained most: 40 -> 48).  A row's stream runs on
   into the next row, which follows it in memory; a prefetch past the last row faults nothing. */
#if defined(__AVX2__) || defined(__AVX512F__)
#define CC_PREFETCH 2048
/* each cache line of `bytes` from address p, with the given hint (step.c's drafted runs use it too) */
#define CC_PREFETCH_SPAN(p, bytes, hint)                                                     \
  for (int64_t _b = 0; _b < (int64_t)(bytes); _b += 64) _mm_prefetch((const char *)(p) + _b, hint);
#define CC_PREFETCH_LINES(p, bytes) CC_PREFETCH_SPAN((const char *)(p) + CC_PREFETCH, bytes, _MM_HINT_NTA)
#else
#define CC_PREFETCH_LINES(p, bytes)
#endif

/* The vector part of a dot product: four accumulators, k advanced past what it summed into acc; the
   caller's scalar loop does the tail (without vectors, all of it). */
#ifdef CC_LANES
#define CC_DOT_VEC(LOADW)                                                                    \
  CC_VEC a0 = CC_ZERO, a1 = a0, a2 = a0, a3 = a0;                                            \
  for (; k + 4 * CC_LANES <= K; k += 4 * CC_LANES) {                                         \
    CC_PREFETCH_LINES(w + k, 4 * CC_LANES * sizeof(*w))                                      \
    a0 = CC_FMA(LOADW(w + k), CC_LOADX(x + k), a0);                                          \
    a1 = CC_FMA(LOADW(w + k + CC_LANES), CC_LOADX(x + k + CC_LANES), a1);                    \
    a2 = CC_FMA(LOADW(w + k + 2 * CC_LANES), CC_LOADX(x + k + 2 * CC_LANES), a2);            \
    a3 = CC_FMA(LOADW(w + k + 3 * CC_LANES), CC_LOADX(x + k + 3 * CC_LANES), a3);            \
  }                                                                                          \
  acc = CC_SUM(CC_ADD(CC_ADD(a0, a1), CC_ADD(a2, a3)));
#else
#define CC_DOT_VEC(LOADW)
#endif

#define CC_DEFINE_DOT(NAME, T, LOADW, WIDEN)                            \
  static inline float NAME(const T *w, const float *x, int64_t K) {     \
    int64_t k = 0;                                                      \
    float acc = 0.f;                                                    \
    CC_DOT_VEC(LOADW)                                                   \
    _Pragma("omp simd reduction(+ : acc)")                              \
    for (int64_t j = k; j < K; j++) acc += WIDEN(w[j]) * x[j];          \
    return acc;                                                         \
  }

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, as torch's .to(bfloat16) */
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

#define CC_AS_F32(v) ((float)(v))
CC_DEFINE_DOT(dot_bf16, uint16_t, CC_W_BF16, bf16_to_f32)
CC_DEFINE_DOT(dot_int8, int8_t, CC_W_INT8, CC_AS_F32)
CC_DEFINE_DOT(dot_f32, float, CC_W_F32, CC_AS_F32)
#endif
