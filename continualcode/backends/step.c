/* The fused decode step on CPU: a few tokens through a whole llama-, qwen2- or qwen3-shaped decoder in one
   call (continualcode/backends/fused.py builds the plan, loads the KV and calls it; its docstring has the
   design).

   cc_step(model, x, cos, sin, start, R, logits): x [R, d] are the tokens' embeddings (fp32), at positions
   start .. start + R - 1, whose rotary cos/sin rows are cos/sin [R, head_dim]; each layer writes their
   keys and values into its KV buffers [kv_heads, capacity, head_dim] (fp32 or bf16) at those positions;
   row r attends to positions 0 .. start + r; logits [R, vocab] (fp32) come out.  Every activation is
   fp32; the weight products are dot.h's (fp32, bf16 or int8 weights with one scale per output row), each
   with its bias and its LoRA pair where it has them (y += lora_scale * B (A x)).  Each weight product's
   output rows (blocks of them for a drafted run) are split over the OpenMP threads (torch's runtime, as in
   gemv.c); attention splits (rows, KV head) pairs. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "dot.h"

enum { CC_F32 = 0, CC_BF16 = 1, CC_INT8 = 2 };
#define CC_MAX_HEAD_DIM 512 /* fused.py refuses larger heads */

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

typedef struct {
  const float *ln1, *ln2, *q_norm, *k_norm; /* [d], [d], [head_dim] or NULL, [head_dim] or NULL */
  cc_lin q, k, v, o, gate, up, down;
  void *keys, *values;                      /* [kv_heads, capacity, head_dim] */
} cc_layer;

typedef struct {
  int64_t layers, d, heads, kv_heads, head_dim, inter, capacity, vocab, kv_bf16, max_rank;
  double eps, attn_scale;
  const float *norm; /* [d] */
  const cc_layer *layer;
  cc_lin head;
} cc_model;

static inline float row_dot(const cc_lin *L, int64_t n, const float *x) {
  if (L->kind == CC_BF16) return dot_bf16((const uint16_t *)L->w + n * L->k, x, L->k);
  if (L->kind == CC_INT8) return dot_int8((const int8_t *)L->w + n * L->k, x, L->k) * L->scale[n];
  return dot_f32((const float *)L->w + n * L->k, x, L->k);
}

/* A drafted run (several rows of x) against a layer: the rows of x in groups of four, each group's four
   accumulators fed by one load and widening of each group of weights (two per row, so that the FMAs' latency
   does not bind): a run costs the FMAs of its rows and one conversion of the weights per four rows (one dot
   product per row converted them once per row, and widening int8 or bf16 is most of a dot product's work on
   AVX2: 9 rows took 7.7x one row's time that way).  Rows past `rt` repeat row 0 (computed, not stored).

   Blocked: four fp32 rows of x are 16 bytes a weight, so over a long row (the MLP's down product: 8960) they
   do not stay in L1 and every weight row reloads them from L2 — four rows took 2.2x one row's time there,
   against 1.1x where x fits.  So the work item is a block of CC_BLOCK weight rows, done over K in chunks of
   CC_CHUNK weights (four rows of x over a chunk: 16 KB, in L1), each chunk of the block's rows in turn; that
   jumps from row to row in memory, which the hardware prefetchers follow badly (slower than unblocked), so
   while the first group of x rows runs the block, the next block — contiguous — is prefetched line by line
   into L2 (`pf`), one line per line read: down's four rows then took 1.1x one row's time.  The vector names
   (CC_LANES, CC_W_*, CC_FMA, ...) are dot.h's. */
#define CC_BLOCK 8
#define CC_CHUNK 1024
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

/* out[r] += the unscaled dot product of weight row n with row r of x over [k0, k1), r < rt; pf: see above
   (NULL: no prefetch) */
static void dot4(const cc_lin *L, int64_t n, const float *x, int64_t K, int64_t rt, int64_t k0, int64_t k1,
                 float *out, const char **pf) {
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
static void dot4(const cc_lin *L, int64_t n, const float *x, int64_t K, int64_t rt, int64_t k0, int64_t k1,
                 float *out, const char **pf) {
  (void)pf;
  for (int64_t r = 0; r < rt; r++) {
    const float *xr = x + r * K;
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

/* y[r, n] = acc plus row n's bias and its LoRA pair on row r of x (t: row r's A x, scaled) */
static inline void put(const cc_lin *L, float *y, int64_t r, int64_t n, float acc, const float *t) {
  const int64_t rk = L->rank;
  if (L->bias) acc += L->bias[n];
  if (L->lora_a) acc += dot_f32(L->lora_b + n * rk, t + r * rk, rk);
  y[r * L->n + n] = acc;
}

/* y [R, n] = x [R, k] times the layer (bias and LoRA included); t: scratch [R, rank].  One row (a decode
   step) takes row_dot over the rows of W in turn; several (a drafted run) take dot4, blocked (above). */
static void lin(const cc_lin *L, const float *x, float *y, int64_t R, float *t) {
  const int64_t N = L->n, K = L->k, rk = L->rank;
  if (L->lora_a)
    for (int64_t r = 0; r < R; r++)
      for (int64_t j = 0; j < rk; j++) t[r * rk + j] = dot_f32(L->lora_a + j * K, x + r * K, K) * (float)L->lora_scale;
  if (R == 1) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) put(L, y, 0, n, row_dot(L, n, x), t);
    return;
  }
  const int64_t width = L->kind == CC_BF16 ? 2 : L->kind == CC_INT8 ? 1 : 4;
#pragma omp parallel for schedule(static)
  for (int64_t n0 = 0; n0 < N; n0 += CC_BLOCK) {
    const int64_t n1 = N - n0 < CC_BLOCK ? N : n0 + CC_BLOCK;
    const char *next = (const char *)L->w + n1 * K * width;
    for (int64_t r0 = 0; r0 < R; r0 += 4) {
      const int64_t rt = R - r0 < 4 ? R - r0 : 4;
      float part[CC_BLOCK][4] = {{0.f}};
      for (int64_t k0 = 0; k0 < K; k0 += CC_CHUNK) {
        const int64_t k1 = K - k0 < 2 * CC_CHUNK ? K : k0 + CC_CHUNK; /* the last chunk takes the tail */
        for (int64_t n = n0; n < n1; n++) dot4(L, n, x + r0 * K, K, rt, k0, k1, part[n - n0], r0 ? NULL : &next);
        if (k1 == K) break;
      }
      for (int64_t n = n0; n < n1; n++) {
        const float s = L->kind == CC_INT8 ? L->scale[n] : 1.f;
        for (int64_t j = 0; j < rt; j++) put(L, y, r0 + j, n, part[n - n0][j] * s, t);
      }
    }
  }
}

/* v[i] = exp(v[i] - shift) for i < n.  A softmax over a long context and the MLP's SiLU take ~1M and ~100k
   exponentials a token; libm's expf one at a time was most of the attention's time after 3k tokens.
   Vectorized with the classic range reduction (x = n ln2 + r, |r| <= ln2/2, ln2 split in two for
   exactness), a degree-6 polynomial for exp(r) and 2^n put into the exponent: within 2 ulp of expf over
   [-87, 88] (arguments are clamped there), which no softmax or SiLU here can tell apart. */
#if defined(__AVX2__) && defined(__FMA__)
static inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}
#endif

static void exp_shifted(float *v, int64_t n, float shift) {
  int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 sh = _mm256_set1_ps(shift);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(v + i, exp8(_mm256_sub_ps(_mm256_loadu_ps(v + i), sh)));
#endif
  for (; i < n; i++) v[i] = expf(v[i] - shift);
}

/* a[i] = silu(a[i]) * b[i] */
static void silu_mul(float *a, const float *b, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(a + i);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_storeu_ps(a + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(b + i)));
  }
#endif
  for (; i < n; i++) a[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}

/* y = x / sqrt(mean(x^2) + eps) * w  (y may be x) */
static void rmsnorm(const float *x, const float *w, float *y, int64_t d, float eps) {
  float ss = 0.f;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < d; i++) ss += x[i] * x[i];
  const float inv = 1.0f / sqrtf(ss / (float)d + eps);
  for (int64_t i = 0; i < d; i++) y[i] = x[i] * inv * w[i];
}

/* transformers' rotate-half rotary embedding of one head's vector, in place */
static void rope(float *v, const float *cos, const float *sin, int64_t hd) {
  const int64_t h2 = hd / 2;
  for (int64_t i = 0; i < h2; i++) {
    const float a = v[i], b = v[i + h2];
    v[i] = a * cos[i] - b * sin[i];
    v[i + h2] = b * cos[i + h2] + a * sin[i + h2];
  }
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, as torch's .to(bfloat16) */
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static void kv_store(void *buf, int64_t bf16, int64_t at, const float *src, int64_t hd) {
  if (bf16)
    for (int64_t i = 0; i < hd; i++) ((uint16_t *)buf)[at + i] = f32_to_bf16(src[i]);
  else
    memcpy((float *)buf + at, src, sizeof(float) * hd);
}

/* Attention's inner loops with AVX2: eight positions' scores at once, the values summed with the output in
   registers.  One 64-wide dot product at a time (dot.h's) spent more on its horizontal sum and its two loads
   per FMA than on the FMAs: `scores8` keeps eight positions' partial sums apart (one query load feeds eight
   FMAs) and adds their lanes together in one tree; `sum_values` keeps 64 output dims of one head in eight
   registers over a block of positions (the block's values stay in L1 for the heads that share them), where
   `o[i] += p * v[i]` loaded and stored the output at every position.  Used when head_dim is a multiple of
   64; otherwise, and without AVX2, the plain loops. */
#if defined(__AVX2__) && defined(__FMA__)
#define CC_ATT_FAST 1
#define CC_VALUE_BLOCK 64 /* positions whose values are summed per pass over the heads of a KV head */

/* lane u = the sum of a_u's lanes */
static inline __m256 lanes8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6, __m256 a7) {
  const __m256 s0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  const __m256 s1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
  return _mm256_add_ps(_mm256_permute2f128_ps(s0, s1, 0x20), _mm256_permute2f128_ps(s0, s1, 0x31));
}

/* q . key[t] for the eight keys at k (rows hd apart), fp32 or bf16 keys; hd a multiple of 8 */
#define CC_SCORES8(NAME, T, LOADK)                                                        \
  static inline __m256 NAME(const T *k, const float *q, int64_t hd) {                     \
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0; \
    for (int64_t i = 0; i < hd; i += 8) {                                                 \
      const __m256 qv = _mm256_loadu_ps(q + i);                                           \
      a0 = _mm256_fmadd_ps(LOADK(k + i), qv, a0);                                         \
      a1 = _mm256_fmadd_ps(LOADK(k + hd + i), qv, a1);                                    \
      a2 = _mm256_fmadd_ps(LOADK(k + 2 * hd + i), qv, a2);                                \
      a3 = _mm256_fmadd_ps(LOADK(k + 3 * hd + i), qv, a3);                                \
      a4 = _mm256_fmadd_ps(LOADK(k + 4 * hd + i), qv, a4);                                \
      a5 = _mm256_fmadd_ps(LOADK(k + 5 * hd + i), qv, a5);                                \
      a6 = _mm256_fmadd_ps(LOADK(k + 6 * hd + i), qv, a6);                                \
      a7 = _mm256_fmadd_ps(LOADK(k + 7 * hd + i), qv, a7);                                \
    }                                                                                     \
    return lanes8(a0, a1, a2, a3, a4, a5, a6, a7);                                        \
  }
CC_SCORES8(scores8_f32, float, _mm256_loadu_ps)
CC_SCORES8(scores8_bf16, uint16_t, load8_bf16)

/* o[c .. c+64) += sum over t in [t0, t1) of p[t] * value[t][c .. c+64), values rows hd apart */
#define CC_SUM_VALUES(NAME, T, LOADV)                                                     \
  static inline void NAME(float *o, const float *p, const T *v, int64_t hd, int64_t t0, int64_t t1) { \
    __m256 o0 = _mm256_loadu_ps(o), o1 = _mm256_loadu_ps(o + 8), o2 = _mm256_loadu_ps(o + 16),    \
           o3 = _mm256_loadu_ps(o + 24), o4 = _mm256_loadu_ps(o + 32), o5 = _mm256_loadu_ps(o + 40), \
           o6 = _mm256_loadu_ps(o + 48), o7 = _mm256_loadu_ps(o + 56);                    \
    for (int64_t t = t0; t < t1; t++) {                                                   \
      const __m256 pt = _mm256_broadcast_ss(p + t);                                       \
      const T *vt = v + t * hd;                                                           \
      o0 = _mm256_fmadd_ps(pt, LOADV(vt), o0);                                            \
      o1 = _mm256_fmadd_ps(pt, LOADV(vt + 8), o1);                                        \
      o2 = _mm256_fmadd_ps(pt, LOADV(vt + 16), o2);                                       \
      o3 = _mm256_fmadd_ps(pt, LOADV(vt + 24), o3);                                       \
      o4 = _mm256_fmadd_ps(pt, LOADV(vt + 32), o4);                                       \
      o5 = _mm256_fmadd_ps(pt, LOADV(vt + 40), o5);                                       \
      o6 = _mm256_fmadd_ps(pt, LOADV(vt + 48), o6);                                       \
      o7 = _mm256_fmadd_ps(pt, LOADV(vt + 56), o7);                                       \
    }                                                                                     \
    _mm256_storeu_ps(o, o0), _mm256_storeu_ps(o + 8, o1), _mm256_storeu_ps(o + 16, o2);   \
    _mm256_storeu_ps(o + 24, o3), _mm256_storeu_ps(o + 32, o4), _mm256_storeu_ps(o + 40, o5); \
    _mm256_storeu_ps(o + 48, o6), _mm256_storeu_ps(o + 56, o7);                           \
  }
CC_SUM_VALUES(sum_values_f32, float, _mm256_loadu_ps)
CC_SUM_VALUES(sum_values_bf16, uint16_t, load8_bf16)
#endif

/* Several rows of a drafted run attend to the same keys and values but for the last few positions, so one work
   item takes all of them (`attend`): each block of keys and values is read from memory once for all rows and
   heads, as it is for the heads that share it.  Row i of an item (of `rows`) sees positions t < T - (rows-1-i);
   its queries are q0 + i * qs (`per` heads, head_dim apart), its scores s + i * per * T (`per` rows of T), its
   outputs o0 + i * qs. */

/* s[(i*per + j)*T + t] = scale * q_ij . key[t] for t < T (keys: the KV head's rows; a row's positions past its
   own end are scored too, and left out by `attend`) */
static void scores(const cc_model *M, const void *keys, const float *q0, int64_t qs, int64_t rows, float *s,
                   int64_t T) {
  const int64_t hd = M->head_dim, per = M->heads / M->kv_heads;
  const float scale = (float)M->attn_scale;
  int64_t t = 0;
#ifdef CC_ATT_FAST
  if (hd % 64 == 0) {
    const __m256 sc = _mm256_set1_ps(scale);
    for (; t + 8 <= T; t += 8)
      for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < per; j++) {
          const float *qj = q0 + i * qs + j * hd;
          const __m256 v = M->kv_bf16 ? scores8_bf16((const uint16_t *)keys + t * hd, qj, hd)
                                      : scores8_f32((const float *)keys + t * hd, qj, hd);
          _mm256_storeu_ps(s + (i * per + j) * T + t, _mm256_mul_ps(v, sc));
        }
  }
#endif
  for (; t < T; t++)
    for (int64_t i = 0; i < rows; i++)
      for (int64_t j = 0; j < per; j++) {
        const float *qj = q0 + i * qs + j * hd;
        s[(i * per + j) * T + t] = (M->kv_bf16 ? dot_bf16((const uint16_t *)keys + t * hd, qj, hd)
                                               : dot_f32((const float *)keys + t * hd, qj, hd)) * scale;
      }
}

/* o_ij = sum over t < T_i of s[(i*per + j)*T + t] * value[t], T_i = T - (rows-1-i) */
static void values(const cc_model *M, const void *vals, const float *s, float *o0, int64_t qs, int64_t rows,
                   int64_t T) {
  const int64_t hd = M->head_dim, per = M->heads / M->kv_heads;
  for (int64_t i = 0; i < rows; i++) memset(o0 + i * qs, 0, sizeof(float) * per * hd);
#ifdef CC_ATT_FAST
  if (hd % 64 == 0) {
    for (int64_t t0 = 0; t0 < T; t0 += CC_VALUE_BLOCK)
      for (int64_t i = 0; i < rows; i++) {
        const int64_t Ti = T - (rows - 1 - i), t1 = Ti - t0 < CC_VALUE_BLOCK ? Ti : t0 + CC_VALUE_BLOCK;
        for (int64_t j = 0; t0 < t1 && j < per; j++)
          for (int64_t c = 0; c < hd; c += 64) {
            float *o = o0 + i * qs + j * hd + c;
            const float *p = s + (i * per + j) * T;
            if (M->kv_bf16)
              sum_values_bf16(o, p, (const uint16_t *)vals + c, hd, t0, t1);
            else
              sum_values_f32(o, p, (const float *)vals + c, hd, t0, t1);
          }
      }
    return;
  }
#endif
  float v32[CC_MAX_HEAD_DIM];
  for (int64_t t = 0; t < T; t++) {
    const float *vv = (const float *)vals + t * hd;
    if (M->kv_bf16) {
      const uint16_t *v16 = (const uint16_t *)vals + t * hd;
      for (int64_t c = 0; c < hd; c++) v32[c] = bf16_to_f32(v16[c]);
      vv = v32;
    }
    for (int64_t i = 0; i < rows; i++) {
      if (t >= T - (rows - 1 - i)) continue;
      for (int64_t j = 0; j < per; j++) {
        const float p = s[(i * per + j) * T + t];
        float *o = o0 + i * qs + j * hd;
#pragma omp simd
        for (int64_t c = 0; c < hd; c++) o[c] += p * vv[c];
      }
    }
  }
}

/* out [R, heads*hd]: each row's heads attend to positions 0 .. start + r of their KV head.  The heads that
   share a KV head are done together, so that each key and value row is read once for all of them (a
   step's KV after 3k tokens is ~70 MB for the 0.5B model, read 7 times head by head), and so are the rows of
   a drafted run where there are at least as many KV heads as threads (otherwise each row is its own item, so
   that every thread has work): a run of four rows took 3x one row's attention one row at a time.  Work: (row
   group, KV head) pairs over the threads.  Returns -1 when a thread's score buffer could not be allocated. */
static int attend(const cc_model *M, const cc_layer *L, const float *q, float *out, int64_t start, int64_t R) {
  const int64_t H = M->heads, G = M->kv_heads, hd = M->head_dim, cap = M->capacity, per = M->heads / M->kv_heads;
  const int64_t rows = G >= omp_get_max_threads() ? R : 1, groups = R / rows;
  const size_t width = M->kv_bf16 ? sizeof(uint16_t) : sizeof(float);
  int failed = 0;
#pragma omp parallel
  {
    float *s = malloc(sizeof(float) * (size_t)(rows * per * (start + R)));
    if (!s) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(static) collapse(2)
    for (int64_t i = 0; i < groups; i++)
      for (int64_t g = 0; g < G; g++) {
        if (!s) continue;
        const int64_t r0 = i * rows, T = start + r0 + rows, h0 = r0 * H + g * per;
        const size_t at = (size_t)(g * cap * hd) * width;
        scores(M, (const char *)L->keys + at, q + h0 * hd, H * hd, rows, s, T);
        for (int64_t r = 0; r < rows * per; r++) {
          const int64_t Tr = T - (rows - 1 - r / per);
          float *sj = s + r * T, mx = -INFINITY, sum = 0.f;
          for (int64_t t = 0; t < Tr; t++) mx = sj[t] > mx ? sj[t] : mx;
          exp_shifted(sj, Tr, mx);
          for (int64_t t = 0; t < Tr; t++) sum += sj[t];
          const float inv = 1.0f / sum;
          for (int64_t t = 0; t < Tr; t++) sj[t] *= inv;
        }
        values(M, (const char *)L->values + at, s, out + h0 * hd, H * hd, rows, T);
      }
    free(s);
  }
  return failed ? -1 : 0;
}

int cc_step(const cc_model *M, const float *x_in, const float *cos, const float *sin, int64_t start, int64_t R,
            float *logits) {
  const int64_t d = M->d, H = M->heads, G = M->kv_heads, hd = M->head_dim, I = M->inter;
  const float eps = (float)M->eps;
  const int64_t wide = I > d ? I : d;
  float *x = malloc(sizeof(float) * R * d), *h = malloc(sizeof(float) * R * d);
  float *q = malloc(sizeof(float) * R * H * hd), *att = malloc(sizeof(float) * R * H * hd);
  float *k = malloc(sizeof(float) * R * G * hd), *v = malloc(sizeof(float) * R * G * hd);
  float *a = malloc(sizeof(float) * R * wide), *b = malloc(sizeof(float) * R * wide);
  float *t = malloc(sizeof(float) * R * (M->max_rank > 0 ? M->max_rank : 1));
  int ok = x && h && q && att && k && v && a && b && t;
  if (ok) {
    memcpy(x, x_in, sizeof(float) * R * d);
    for (int64_t l = 0; l < M->layers; l++) {
      const cc_layer *L = M->layer + l;
      /* attention */
      for (int64_t r = 0; r < R; r++) rmsnorm(x + r * d, L->ln1, h + r * d, d, eps);
      lin(&L->q, h, q, R, t);
      lin(&L->k, h, k, R, t);
      lin(&L->v, h, v, R, t);
      for (int64_t r = 0; r < R; r++) {
        for (int64_t j = 0; j < H; j++) {
          float *qv = q + (r * H + j) * hd;
          if (L->q_norm) rmsnorm(qv, L->q_norm, qv, hd, eps);
          rope(qv, cos + r * hd, sin + r * hd, hd);
        }
        for (int64_t g = 0; g < G; g++) {
          float *kv = k + (r * G + g) * hd;
          if (L->k_norm) rmsnorm(kv, L->k_norm, kv, hd, eps);
          rope(kv, cos + r * hd, sin + r * hd, hd);
          const int64_t at = (g * M->capacity + start + r) * hd;
          kv_store(L->keys, M->kv_bf16, at, kv, hd);
          kv_store(L->values, M->kv_bf16, at, v + (r * G + g) * hd, hd);
        }
      }
      if (attend(M, L, q, att, start, R) != 0) {
        ok = 0;
        break;
      }
      lin(&L->o, att, a, R, t);
      for (int64_t i = 0; i < R * d; i++) x[i] += a[i];
      /* MLP: down(silu(gate(h)) * up(h)) */
      for (int64_t r = 0; r < R; r++) rmsnorm(x + r * d, L->ln2, h + r * d, d, eps);
      lin(&L->gate, h, a, R, t);
      lin(&L->up, h, b, R, t);
      silu_mul(a, b, R * I);
      lin(&L->down, a, b, R, t);
      for (int64_t i = 0; i < R * d; i++) x[i] += b[i];
    }
    if (ok) {
      for (int64_t r = 0; r < R; r++) rmsnorm(x + r * d, M->norm, h + r * d, d, eps);
      lin(&M->head, h, logits, R, t);
    }
  }
  free(x), free(h), free(q), free(att), free(k), free(v), free(a), free(b), free(t);
  return ok ? 0 : -1;
}
