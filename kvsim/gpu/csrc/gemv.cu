// y = x w^T (+ bias) (then ReLU) for the few rows x of a small decode batch: each weight row is
// read once for all M rows of x, so the product is bound by reading w, as a decode step's
// projections are at batch sizes up to a few.
//
// One warp per R output rows. Each lane streams 16-byte pieces of its rows of w, U pieces of
// each row issued before any is used (R x U x 512 bytes in flight per warp; kernels.py's
// GEMV_SHAPE, chosen by benchmarks/bench_kernels.py's GEMV variant table),
// with loads that bypass L1 so that x, re-read by every warp, stays there. Products and sums
// are fp32; the warp's lanes are reduced with shuffles. K must be a multiple of 8 and rows 16-byte
// aligned (the wrapper in kernels.py checks).
#include "common.cuh"

#define GEMV_WARPS 8  // warps per block

__device__ __forceinline__ uint4 load_streaming(const u16* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

template <typename T, int M, int R, int U>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv(
    u16* __restrict__ y, const u16* __restrict__ x, const u16* __restrict__ w, const u16* __restrict__ bias,
    int n_out, int k_in, i64 x_stride, i64 y_stride, int relu) {
  constexpr int STEP = 32 * 8;
  const int lane = threadIdx.x % 32;
  const int first = (blockIdx.x * GEMV_WARPS + threadIdx.x / 32) * R;
  if (first >= n_out) return;
  const u16* rows[R];
#pragma unroll
  for (int r = 0; r < R; ++r) rows[r] = w + (i64)min(first + r, n_out - 1) * k_in;  // past the end: re-read, never written
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.f;

  for (int base = lane * 8; base < k_in; base += STEP * U) {
    Packed<8> wp[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int k = base + u * STEP;
        const uint4 v = k < k_in ? load_streaming(rows[r] + k) : uint4{0u, 0u, 0u, 0u};
        wp[u][r].w[0] = v.x;
        wp[u][r].w[1] = v.y;
        wp[u][r].w[2] = v.z;
        wp[u][r].w[3] = v.w;
      }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = base + u * STEP;
      if (k >= k_in) break;
      float xv[M][8];
#pragma unroll
      for (int m = 0; m < M; ++m) load_row<T, 8>(x + m * x_stride + k, xv[m]);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float wv[8];
        unpack_row<T, 8>(wp[u][r], wv);
#pragma unroll
        for (int m = 0; m < M; ++m)
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r][m] += xv[m][e] * wv[e];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[r][m] += __shfl_xor_sync(0xffffffffu, acc[r][m], o);
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int n = first + r;
    if (n >= n_out) break;
    const float b = bias != nullptr ? to_float<T>(bias[n]) : 0.f;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float o = acc[r][m] + b;
      y[m * y_stride + n] = from_float<T>(relu && o < 0.f ? 0.f : o);
    }
  }
}
