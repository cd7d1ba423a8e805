/* The decode steps' weight products on CPU (continualcode/backends/native.py compiles and loads this).

   y[r, n] = scale[n] * sum_k W[n, k] * x[r, k]   (no scale for bf16), for a few rows r of x,
   W row-major [N, K] as bf16 (uint16) or int8, x fp32 [R, K], y fp32 [R, N], fp32 accumulation.

   Why C: torch's kernels for one row (torch.mv, F.linear's matrix kernel, _weight_int8pack_mm) read
   weights that do not fit in cache at ~10-15 GB/s on the 2-core machine this was written on; this
   loop reads them at ~25 GB/s.  The rows of W are split over the OpenMP threads (torch's own runtime:
   the library needs libgomp.so.1, which torch has loaded first); each row of W is read once from
   memory and stays in L1 for the R rows of x.  The dot products are dot.h's. */
#include "dot.h"

void cc_gemv_bf16(const uint16_t *W, const float *x, float *y, int64_t R, int64_t N, int64_t K) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++)
    for (int64_t r = 0; r < R; r++) y[r * N + n] = dot_bf16(W + n * K, x + r * K, K);
}

void cc_gemv_int8(const int8_t *W, const float *scale, const float *x, float *y, int64_t R, int64_t N, int64_t K) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++)
    for (int64_t r = 0; r < R; r++) y[r * N + n] = dot_int8(W + n * K, x + r * K, K) * scale[n];
}
