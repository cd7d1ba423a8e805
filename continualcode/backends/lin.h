/* The fused decode step's weight products (step.c includes this): y [R, n] = x [R, k] times one layer's
   weight, with its bias and its LoRA pair (y += lora_scale * B (A x)), for one row of x (a decode step) or
   several (a drafted run).

   Activations: a product with bf16 or int8 weights takes x rounded to bf16 (round to nearest even), fp32
   accumulation; fp32 weights take x as it is; the LoRA pair always takes fp32 x.  Rounding is what torch's
   own bf16 and int8 kernels do (the unfused decode steps', quant.py), adds far less than int8's rounding of
   the weights, and is what lets a CPU with AVX512-BF16 do the products with `vdpbf16ps` (32 products an
   instruction, each exact in fp32, against an FMA's 16): a drafted run's rows cost the weights' conversion
   once per group of rows plus one such instruction per row, and the 1.5B model's int8 products of nine rows
   took 1.5x one row's time (the fp32 path: 3.2x).  Without AVX512-BF16, x is rounded in an fp32 copy and the
   fp32 path below computes the same products.  One row and a drafted run's rows compute the same sums in the
   same precision; only their order differs.

   One row streams each weight row as dot.h's dot products do (weights prefetched NTA ahead): the blocked loop
   below read the 1.5B model's bf16 weights ~7% slower for one row (85.5 against 80.0 ms a step, int8 42.3
   against 40.5, alternating in one process).

   Blocked (several rows): the work item is a block of CC_BLOCK
   weight rows, done over K in chunks of CC_CHUNK weights (a group's rows of x over a chunk stay in L1: over the
   MLP's down product, 8960 long, four unblocked fp32 rows took 2.2x one row's time, reloaded from L2 for every
   weight row), each chunk of the block's rows in turn; that jumps from row to row in memory, which the hardware
   prefetchers follow badly, so while the first group of rows runs a block, the next block — contiguous — is
   prefetched line by line into L2 (`pf`), one line per line read.  The vector names (CC_LANES, CC_W_*,
   CC_FMA, ...) are dot.h's. */
#ifndef CC_LIN_H
#define CC_LIN_H
#include "dot.h"

enum { CC_F32 = 0, CC_BF16 = 1, CC_INT8 = 2 };
#define CC_BLOCK 8
#define CC_CHUNK 1024
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define CC_DPBF16 1
#define CC_GROUP 10 /* rows of x a group takes at most (rows beyond ~10 spilled accumulators: 1.5x per row) */
#else
#define CC_GROUP 4
#endif

/* Every field 8 bytes wide, so the ctypes mirror in fused.py has no padding to get wrong. */
typedef struct {
  const void *w;        /* [n, k] */
  const float *scale;   /* int8: [n] */
  const float *bias;    /* [n] or NULL */
  const float *lora_a;  /* [rank, k] or NULL */
  const float *lora_b;  /* [n, rank] */
  double lora_scale;
  int64_t kind, rank, n, k;
} cc_lin;

static inline float row_dot(const cc_lin *L, int64_t n, const float *x) {
  if (L->kind == CC_BF16) return dot_bf16((const uint16_t *)L->w + n * L->k, x, L->k);
  if (L->kind == CC_INT8) return dot_int8((const int8_t *)L->w + n * L->k, x, L->k);
  return dot_f32((const float *)L->w + n * L->k, x, L->k);
}

/* A group's kernel: out[r] += the unscaled dot product of weight row n with row r of the group's x over
   [k0, k1), r < rt; pf: the next block's prefetch (NULL: none). */
typedef void (*cc_group_fn)(const cc_lin *L, int64_t n, const void *x, int64_t K, int64_t rt, int64_t k0,
                            int64_t k1, float *out, const char **pf);

/* fp32 x, groups of four rows: four accumulators fed by one load and widening of each group of weights (two
   per row, so that the FMAs' latency does not bind); rows past `rt` repeat row 0 (computed, not stored). */
#ifdef CC_LANES
#define CC_DOT4_LOOP(T, LOADW, TAIL)                                                    \
  {                                                                                     \
    const T *w = (const T *)L->w + n * K;                                               \
    for (; k + 2 * CC_LANES <= k1; k += 2 * CC_LANES) {                                 \
      if (pf) {                                                                         \
        CC_PREFETCH_SPAN(*pf, 2 * CC_LANES * sizeof(T), _MM_HINT_T1)                    \
        *pf += 2 * CC_LANES * sizeof(T);                                                \
      }                                                                                 \
      const CC_VEC wv = LOADW(w + k), wu = LOADW(w + k + CC_LANES);                     \
      a0 = CC_FMA(wv, CC_LOADX(x0 + k), a0);                                            \
      a1 = CC_FMA(wv, CC_LOADX(x1 + k), a1);                                            \
      a2 = CC_FMA(wv, CC_LOADX(x2 + k), a2);                                            \
      a3 = CC_FMA(wv, CC_LOADX(x3 + k), a3);                                            \
      b0 = CC_FMA(wu, CC_LOADX(x0 + k + CC_LANES), b0);                                 \
      b1 = CC_FMA(wu, CC_LOADX(x1 + k + CC_LANES), b1);                                 \
      b2 = CC_FMA(wu, CC_LOADX(x2 + k + CC_LANES), b2);                                 \
      b3 = CC_FMA(wu, CC_LOADX(x3 + k + CC_LANES), b3);                                 \
    }                                                                                   \
    for (; k < k1; k++) {                                                               \
      const float wk = TAIL(w[k]);                                                      \
      t0 += wk * x0[k], t1 += wk * x1[k], t2 += wk * x2[k], t3 += wk * x3[k];           \
    }                                                                                   \
  }

static void dot4(const cc_lin *L, int64_t n, const void *xv, int64_t K, int64_t rt, int64_t k0, int64_t k1,
                 float *out, const char **pf) {
  const float *x = xv;
  const float *x0 = x, *x1 = rt > 1 ? x + K : x, *x2 = rt > 2 ? x + 2 * K : x, *x3 = rt > 3 ? x + 3 * K : x;
  CC_VEC a0 = CC_ZERO, a1 = CC_ZERO, a2 = CC_ZERO, a3 = CC_ZERO, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  float t0 = 0.f, t1 = 0.f, t2 = 0.f, t3 = 0.f;
  int64_t k = k0;
  if (L->kind == CC_BF16) CC_DOT4_LOOP(uint16_t, CC_W_BF16, bf16_to_f32)
  else if (L->kind == CC_INT8) CC_DOT4_LOOP(int8_t, CC_W_INT8, CC_AS_F32)
  else CC_DOT4_LOOP(float, CC_W_F32, CC_AS_F32)
  const float sums[4] = {CC_SUM(CC_ADD(a0, b0)) + t0, CC_SUM(CC_ADD(a1, b1)) + t1, CC_SUM(CC_ADD(a2, b2)) + t2,
                         CC_SUM(CC_ADD(a3, b3)) + t3};
  for (int64_t r = 0; r < rt; r++) out[r] += sums[r];
}
#else
static void dot4(const cc_lin *L, int64_t n, const void *xv, int64_t K, int64_t rt, int64_t k0, int64_t k1,
                 float *out, const char **pf) {
  (void)pf;
  for (int64_t r = 0; r < rt; r++) {
    const float *xr = (const float *)xv + r * K;
    float acc = 0.f;
    for (int64_t k = k0; k < k1; k++) {
      const int64_t i = n * K + k;
      acc += (L->kind == CC_BF16 ? bf16_to_f32(((const uint16_t *)L->w)[i])
              : L->kind == CC_INT8 ? (float)((const int8_t *)L->w)[i] : ((const float *)L->w)[i]) * xr[k];
    }
    out[r] += acc;
  }
}
#endif

/* bf16 x (AVX512-BF16): NR rows (a compile-time count, so that the accumulators stay in registers), each 32
   weights widened to bf16 once (int8: through fp32, exact) and fed to one `vdpbf16ps` per row; up to four
   rows keep two accumulators each (the instruction's latency would bind one).  x: NR rows of bf16, K apart. */
#ifdef CC_DPBF16
static inline __m512bh w32_bf16(const uint16_t *w) { return (__m512bh)_mm512_loadu_si512(w); }

static inline __m512bh w32_int8(const int8_t *w) {
  const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)w)));
  const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + 16))));
  return _mm512_cvtne2ps_pbh(hi, lo); /* lanes 0-15: w[0..16), 16-31: w[16..32) */
}

#define CC_DPG_LOOP(T, LOADW, WIDEN, NR, U)                                                    \
  {                                                                                            \
    const T *w = (const T *)L->w + n * K;                                                      \
    __m512 a[U][NR];                                                                           \
    float t[NR];                                                                               \
    for (int r = 0; r < NR; r++) {                                                             \
      t[r] = 0.f;                                                                              \
      for (int u = 0; u < U; u++) a[u][r] = _mm512_setzero_ps();                               \
    }                                                                                          \
    int64_t k = k0;                                                                            \
    for (; k + 32 * U <= k1; k += 32 * U) {                                                    \
      if (pf) {                                                                                \
        CC_PREFETCH_SPAN(*pf, 32 * U * sizeof(T), _MM_HINT_T1)                                 \
        *pf += 32 * U * sizeof(T);                                                             \
      }                                                                                        \
      for (int u = 0; u < U; u++) {                                                            \
        const __m512bh wb = LOADW(w + k + 32 * u);                                             \
        for (int r = 0; r < NR; r++)                                                           \
          a[u][r] = _mm512_dpbf16_ps(a[u][r], wb, (__m512bh)_mm512_loadu_si512(x + r * K + k + 32 * u)); \
      }                                                                                        \
    }                                                                                          \
    for (; k < k1; k++)                                                                        \
      for (int r = 0; r < NR; r++) t[r] += WIDEN(w[k]) * bf16_to_f32(x[r * K + k]);            \
    for (int r = 0; r < NR; r++) {                                                             \
      __m512 s = a[0][r];                                                                      \
      for (int u = 1; u < U; u++) s = _mm512_add_ps(s, a[u][r]);                               \
      out[r] += _mm512_reduce_add_ps(s) + t[r];                                                \
    }                                                                                          \
  }

#define CC_DPG(NR, U)                                                                                  \
  static void dpg##NR(const cc_lin *L, int64_t n, const void *xv, int64_t K, int64_t rt, int64_t k0,     \
                      int64_t k1, float *out, const char **pf) {                                         \
    const uint16_t *x = xv;                                                                            \
    (void)rt;                                                                                          \
    if (L->kind == CC_INT8) CC_DPG_LOOP(int8_t, w32_int8, CC_AS_F32, NR, U)                            \
    else CC_DPG_LOOP(uint16_t, w32_bf16, bf16_to_f32, NR, U)                                           \
  }
CC_DPG(2, 2) CC_DPG(3, 2) CC_DPG(4, 2) CC_DPG(5, 1)
CC_DPG(6, 1) CC_DPG(7, 1) CC_DPG(8, 1) CC_DPG(9, 1) CC_DPG(10, 1)
/* no group of one: one row streams (dprow_*), and runs of two or more split into groups of two or more */
static const cc_group_fn DPG[CC_GROUP + 1] = {NULL, NULL, dpg2, dpg3, dpg4, dpg5, dpg6, dpg7, dpg8, dpg9, dpg10};

/* One row of bf16 x against weight row n, streamed as dot.h's dot products are (weights prefetched NTA ahead,
   four accumulators): the one-row step's product (see the top). */
#define CC_DPROW(NAME, T, LOADW, WIDEN)                                                        \
  static inline float NAME(const T *w, const uint16_t *x, int64_t K) {                         \
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                \
    int64_t k = 0;                                                                             \
    for (; k + 128 <= K; k += 128) {                                                           \
      CC_PREFETCH_LINES(w + k, 128 * sizeof(T))                                                \
      a0 = _mm512_dpbf16_ps(a0, LOADW(w + k), (__m512bh)_mm512_loadu_si512(x + k));            \
      a1 = _mm512_dpbf16_ps(a1, LOADW(w + k + 32), (__m512bh)_mm512_loadu_si512(x + k + 32));  \
      a2 = _mm512_dpbf16_ps(a2, LOADW(w + k + 64), (__m512bh)_mm512_loadu_si512(x + k + 64));  \
      a3 = _mm512_dpbf16_ps(a3, LOADW(w + k + 96), (__m512bh)_mm512_loadu_si512(x + k + 96));  \
    }                                                                                          \
    float t = 0.f;                                                                             \
    for (; k < K; k++) t += WIDEN(w[k]) * bf16_to_f32(x[k]);                                   \
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))) + t; \
  }
CC_DPROW(dprow_bf16, uint16_t, w32_bf16, bf16_to_f32)
CC_DPROW(dprow_int8, int8_t, w32_int8, CC_AS_F32)

/* xb[i] = x[i] rounded to bf16, i < n */
static void to_bf16(const float *x, uint16_t *xb, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    _mm512_storeu_si512(xb + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
  for (; i < n; i++) xb[i] = f32_to_bf16(x[i]);
}
#endif

/* y[r, n] = acc times row n's scale (int8), plus its bias and its LoRA pair on row r of x (t: row r's A x,
   scaled) */
static inline void put(const cc_lin *L, float *y, int64_t r, int64_t n, float acc, const float *t) {
  const int64_t rk = L->rank;
  if (L->kind == CC_INT8) acc *= L->scale[n];
  if (L->bias) acc += L->bias[n];
  if (L->lora_a) acc += dot_f32(L->lora_b + n * rk, t + r * rk, rk);
  y[r * L->n + n] = acc;
}

/* The blocked products (see the top): groups of at most `most` rows, as even as they come (nine rows: five and
   four), each a `fn` call per weight row and chunk; x: the rows, K apart, in `width`-byte elements. */
static void blocked(const cc_lin *L, const void *x, int64_t width, float *y, int64_t R, const float *t,
                    int64_t most, const cc_group_fn *fn) {
  const int64_t N = L->n, K = L->k, wbytes = L->kind == CC_BF16 ? 2 : L->kind == CC_INT8 ? 1 : 4;
  const int64_t groups = (R + most - 1) / most;
#pragma omp parallel for schedule(static)
  for (int64_t n0 = 0; n0 < N; n0 += CC_BLOCK) {
    const int64_t n1 = N - n0 < CC_BLOCK ? N : n0 + CC_BLOCK;
    const char *next = (const char *)L->w + n1 * K * wbytes;
    for (int64_t g = 0, r0 = 0; g < groups; g++) {
      const int64_t rt = (R - r0) / (groups - g);
      const void *xg = (const char *)x + r0 * K * width;
      float part[CC_BLOCK][CC_GROUP] = {{0.f}};
      for (int64_t k0 = 0; k0 < K; k0 += CC_CHUNK) {
        const int64_t k1 = K - k0 < 2 * CC_CHUNK ? K : k0 + CC_CHUNK; /* the last chunk takes the tail */
        for (int64_t n = n0; n < n1; n++) fn[rt](L, n, xg, K, rt, k0, k1, part[n - n0], r0 ? NULL : &next);
        if (k1 == K) break;
      }
      for (int64_t n = n0; n < n1; n++)
        for (int64_t j = 0; j < rt; j++) put(L, y, r0 + j, n, part[n - n0][j], t);
      r0 += rt;
    }
  }
}

static const cc_group_fn DOT4[5] = {NULL, dot4, dot4, dot4, dot4};

/* y [R, n] = x [R, k] times the layer (bias and LoRA included); t: scratch [R, rank]; xs: scratch for x
   rounded to bf16, [R, k] floats */
static void lin(const cc_lin *L, const float *x, float *y, int64_t R, float *t, void *xs) {
  const int64_t N = L->n, K = L->k, rk = L->rank;
  if (L->lora_a)
    for (int64_t r = 0; r < R; r++)
      for (int64_t j = 0; j < rk; j++) t[r * rk + j] = dot_f32(L->lora_a + j * K, x + r * K, K) * (float)L->lora_scale;
  if (L->kind != CC_F32) {
#ifdef CC_DPBF16
    uint16_t *xb = xs;
    to_bf16(x, xb, R * K);
    if (R > 1) {
      blocked(L, xb, 2, y, R, t, CC_GROUP, DPG);
      return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++)
      put(L, y, 0, n, L->kind == CC_INT8 ? dprow_int8((const int8_t *)L->w + n * K, xb, K)
                                         : dprow_bf16((const uint16_t *)L->w + n * K, xb, K), t);
    return;
#else
    float *xr = xs;
    for (int64_t i = 0; i < R * K; i++) xr[i] = bf16_to_f32(f32_to_bf16(x[i]));
    x = xr;
#endif
  }
  if (R > 1) {
    blocked(L, x, 4, y, R, t, 4, DOT4);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) put(L, y, 0, n, row_dot(L, n, x), t);
}
#endif
