/* The fused decode step on CPU: a few tokens through a whole llama-, qwen2- or qwen3-shaped decoder in one
   call (continualcode/backends/fused.py builds the plan, loads the KV and calls it; its docstring has the
   design).

   cc_step(model, x, cos, sin, start, R, logits): x [R, d] are the tokens' embeddings (fp32), at positions
   start .. start + R - 1, whose rotary cos/sin rows are cos/sin [R, head_dim]; each layer writes their
   keys and values into its KV buffers [kv_heads, capacity, head_dim] (fp32 or bf16) at those positions;
   row r attends to positions 0 .. start + r; logits [R, vocab] (fp32) come out.  Every activation is
   fp32; the weight products are lin.h's (fp32, bf16 or int8 weights with one scale per output row; the inputs
   of bf16 and int8 products rounded to bf16), each with its bias and its LoRA pair where it has them.  Each
   weight product's blocks of output rows are split over the OpenMP threads (torch's runtime, as in gemv.c);
   attention splits (rows, KV head) pairs. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "lin.h"

#define CC_MAX_HEAD_DIM 512 /* fused.py refuses larger heads */

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

static void kv_store(void *buf, int64_t bf16, int64_t at, const float *src, int64_t hd) {
  if (bf16)
    for (int64_t i = 0; i < hd; i++) ((uint16_t *)buf)[at + i] = f32_to_bf16(src[i]);
  else
    memcpy((float *)buf + at, src, sizeof(float) * hd);
}

/* Attention's inner loops with AVX2 or AVX-512: eight positions' scores at once, the values summed with the
   output in registers.  One 64-wide dot product at a time (dot.h's) spent more on its horizontal sum and its two
   loads per FMA than on the FMAs: `scores8` keeps eight positions' partial sums apart (one query load feeds
   eight FMAs) and adds their lanes together in one tree; `sum_values` keeps 64 output dims of one head in
   registers over a block of positions (the block's values stay in L1 for the heads that share them), where
   `o[i] += p * v[i]` loaded and stored the output at every position.  bf16 keys and values are widened to fp32
   once per block into a per-thread buffer (`widen`), not once per query that reads them: the heads that share a
   KV head (six to seven here) and a drafted run's rows all read the same block.  Used when head_dim is a
   multiple of 64; otherwise, and without AVX2, the plain loops. */
#define CC_VALUE_BLOCK 64 /* positions whose values are summed per pass over the heads of a KV head */
#if defined(__AVX2__) && defined(__FMA__)
#define CC_ATT_FAST 1

/* lane u = the sum of a_u's lanes */
static inline __m256 lanes8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6, __m256 a7) {
  const __m256 s0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  const __m256 s1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
  return _mm256_add_ps(_mm256_permute2f128_ps(s0, s1, 0x20), _mm256_permute2f128_ps(s0, s1, 0x31));
}

/* the vector names are dot.h's (CC_VEC, CC_LANES, CC_FMA, CC_LOADX, CC_ZERO: 16 lanes with AVX-512, else 8);
   these three it has no use for */
#ifdef __AVX512F__
#define CC_BCAST _mm512_set1_ps
#define CC_STORE _mm512_storeu_ps
#define CC_HALF(a) _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1)) /* 16 lanes to 8 */
#else
#define CC_BCAST _mm256_set1_ps
#define CC_STORE _mm256_storeu_ps
#define CC_HALF(a) (a)
#endif

/* q . key[t] for the eight fp32 keys at k (rows hd apart); hd a multiple of 16 */
static inline __m256 scores8(const float *k, const float *q, int64_t hd) {
  CC_VEC a0 = CC_ZERO, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (int64_t i = 0; i < hd; i += CC_LANES) {
    const CC_VEC qv = CC_LOADX(q + i);
    a0 = CC_FMA(CC_LOADX(k + i), qv, a0);
    a1 = CC_FMA(CC_LOADX(k + hd + i), qv, a1);
    a2 = CC_FMA(CC_LOADX(k + 2 * hd + i), qv, a2);
    a3 = CC_FMA(CC_LOADX(k + 3 * hd + i), qv, a3);
    a4 = CC_FMA(CC_LOADX(k + 4 * hd + i), qv, a4);
    a5 = CC_FMA(CC_LOADX(k + 5 * hd + i), qv, a5);
    a6 = CC_FMA(CC_LOADX(k + 6 * hd + i), qv, a6);
    a7 = CC_FMA(CC_LOADX(k + 7 * hd + i), qv, a7);
  }
  return lanes8(CC_HALF(a0), CC_HALF(a1), CC_HALF(a2), CC_HALF(a3), CC_HALF(a4), CC_HALF(a5), CC_HALF(a6),
                CC_HALF(a7));
}

/* o[0 .. 64) += sum over t < n of p[t] * v[t * hd + 0 .. 64) (fp32 values) */
static inline void sum_values(float *o, const float *p, const float *v, int64_t hd, int64_t n) {
  enum { U = 64 / CC_LANES };
  CC_VEC acc[U];
  for (int u = 0; u < U; u++) acc[u] = CC_LOADX(o + u * CC_LANES);
  for (int64_t t = 0; t < n; t++) {
    const CC_VEC pt = CC_BCAST(p[t]);
    for (int u = 0; u < U; u++) acc[u] = CC_FMA(pt, CC_LOADX(v + t * hd + u * CC_LANES), acc[u]);
  }
  for (int u = 0; u < U; u++) CC_STORE(o + u * CC_LANES, acc[u]);
}

/* the n fp32 values at src (bf16: widened into buf, which is returned; fp32: src itself) */
static inline const float *widen(const void *src, int64_t bf16, float *buf, int64_t n) {
  if (!bf16) return src;
  const uint16_t *h = src;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(buf + i, load8_bf16(h + i));
  for (; i < n; i++) buf[i] = bf16_to_f32(h[i]);
  return buf;
}
#endif

/* Several rows of a drafted run attend to the same keys and values but for the last few positions, so one work
   item takes all of them (`attend`): each block of keys and values is read from memory once for all rows and
   heads, as it is for the heads that share it.  Row i of an item (of `rows`) sees positions t < T - (rows-1-i);
   its queries are q0 + i * qs (`per` heads, head_dim apart), its scores s + i * per * T (`per` rows of T), its
   outputs o0 + i * qs. */

/* s[(i*per + j)*T + t] = scale * q_ij . key[t] for t < T (keys: the KV head's rows; a row's positions past its
   own end are scored too, and left out by `attend`); buf: scratch of CC_VALUE_BLOCK * hd floats */
static void scores(const cc_model *M, const void *keys, const float *q0, int64_t qs, int64_t rows, float *s,
                   int64_t T, float *buf) {
  const int64_t hd = M->head_dim, per = M->heads / M->kv_heads;
  const float scale = (float)M->attn_scale;
  int64_t t = 0;
#ifdef CC_ATT_FAST
  if (hd % 64 == 0) {
    const __m256 sc = _mm256_set1_ps(scale);
    const size_t width = M->kv_bf16 ? sizeof(uint16_t) : sizeof(float);
    for (; t + 8 <= T; t += 8) {
      const float *k = widen((const char *)keys + t * hd * width, M->kv_bf16, buf, 8 * hd);
      for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < per; j++)
          _mm256_storeu_ps(s + (i * per + j) * T + t, _mm256_mul_ps(scores8(k, q0 + i * qs + j * hd, hd), sc));
    }
  }
#else
  (void)buf;
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
                   int64_t T, float *buf) {
  const int64_t hd = M->head_dim, per = M->heads / M->kv_heads;
  for (int64_t i = 0; i < rows; i++) memset(o0 + i * qs, 0, sizeof(float) * per * hd);
#ifdef CC_ATT_FAST
  if (hd % 64 == 0) {
    const size_t width = M->kv_bf16 ? sizeof(uint16_t) : sizeof(float);
    for (int64_t t0 = 0; t0 < T; t0 += CC_VALUE_BLOCK) {
      const int64_t n = T - t0 < CC_VALUE_BLOCK ? T - t0 : CC_VALUE_BLOCK;
      const float *v = widen((const char *)vals + t0 * hd * width, M->kv_bf16, buf, n * hd);
      for (int64_t i = 0; i < rows; i++) {
        const int64_t Ti = T - (rows - 1 - i), ni = Ti - t0 < n ? Ti - t0 : n;
        for (int64_t j = 0; ni > 0 && j < per; j++)
          for (int64_t c = 0; c < hd; c += 64)
            sum_values(o0 + i * qs + j * hd + c, s + (i * per + j) * T + t0, v + c, hd, ni);
      }
    }
    return;
  }
#endif
  (void)buf;
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
    float *s = malloc(sizeof(float) * (size_t)(rows * per * (start + R) + CC_VALUE_BLOCK * hd));
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
        float *buf = s + rows * per * (start + R); /* the widened keys' and values' block */
        scores(M, (const char *)L->keys + at, q + h0 * hd, H * hd, rows, s, T, buf);
        for (int64_t r = 0; r < rows * per; r++) {
          const int64_t Tr = T - (rows - 1 - r / per);
          float *sj = s + r * T, mx = -INFINITY, sum = 0.f;
          for (int64_t t = 0; t < Tr; t++) mx = sj[t] > mx ? sj[t] : mx;
          exp_shifted(sj, Tr, mx);
          for (int64_t t = 0; t < Tr; t++) sum += sj[t];
          const float inv = 1.0f / sum;
          for (int64_t t = 0; t < Tr; t++) sj[t] *= inv;
        }
        values(M, (const char *)L->values + at, s, out + h0 * hd, H * hd, rows, T, buf);
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
  void *xs = malloc(sizeof(float) * R * (wide > H * hd ? wide : H * hd)); /* lin's rounded x */
  int ok = x && h && q && att && k && v && a && b && t && xs;
  if (ok) {
    memcpy(x, x_in, sizeof(float) * R * d);
    for (int64_t l = 0; l < M->layers; l++) {
      const cc_layer *L = M->layer + l;
      /* attention */
      for (int64_t r = 0; r < R; r++) rmsnorm(x + r * d, L->ln1, h + r * d, d, eps);
      lin(&L->q, h, q, R, t, xs);
      lin(&L->k, h, k, R, t, xs);
      lin(&L->v, h, v, R, t, xs);
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
      lin(&L->o, att, a, R, t, xs);
      for (int64_t i = 0; i < R * d; i++) x[i] += a[i];
      /* MLP: down(silu(gate(h)) * up(h)) */
      for (int64_t r = 0; r < R; r++) rmsnorm(x + r * d, L->ln2, h + r * d, d, eps);
      lin(&L->gate, h, a, R, t, xs);
      lin(&L->up, h, b, R, t, xs);
      silu_mul(a, b, R * I);
      lin(&L->down, a, b, R, t, xs);
      for (int64_t i = 0; i < R * d; i++) x[i] += b[i];
    }
    if (ok) {
      for (int64_t r = 0; r < R; r++) rmsnorm(x + r * d, M->norm, h + r * d, d, eps);
      lin(&M->head, h, logits, R, t, xs);
    }
  }
  free(x), free(h), free(q), free(att), free(k), free(v), free(a), free(b), free(t), free(xs);
  return ok ? 0 : -1;
}

/* One layer's product as the step computes it (lin), for the tests: y [R, n] = x [R, k] times L.  0, or -1
   where its scratch could not be allocated. */
int cc_linear(const cc_lin *L, const float *x, float *y, int64_t R) {
  float *t = malloc(sizeof(float) * R * (L->rank > 0 ? L->rank : 1));
  void *xs = malloc(sizeof(float) * R * L->k);
  if (t && xs) lin(L, x, y, R, t, xs);
  const int ok = t && xs;
  free(t), free(xs);
  return ok ? 0 : -1;
}
