// The small element-wise steps of a decoder layer, each fused into one launch where PyTorch
// took several: at batch 1 a decode step is ~10 such launches per layer beside its GEMMs, each
// a few microseconds of a step that reads ~0.3 GB of weights per millisecond. All arithmetic
// is fp32; tensors are 16-bit (T), moved 8 values (16 bytes) per thread, so rows must be
// multiples of 8 elements on 16-byte boundaries (the wrappers in kernels.py check).
#include "common.cuh"

#define NORM_CHUNKS 2  // 8-value chunks per thread at most: rows up to 16 x blockDim.x values

// Sum over the block, returned to every thread; `scratch` holds one float per warp.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warps = (blockDim.x + 31) / 32;
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  __syncthreads();  // scratch is free for the next sum
  return total;
}

// The residual add that ends one sub-layer fused with the norm that starts the next, one
// block per row (token):
//   x += delta (+ delta_bias), in place, rounded to T      when delta is given (else x as is)
//   out = (x - mean) / std * weight + bias                 RMS = false (LayerNorm, OPT)
//   out = weight * T(x / rms(x))                            RMS = true (RMSNorm, LLaMA, which
//                                                           rounds before the weight, as HF does)
// The sum is rounded to T before it is normalised, as the unfused residual stream was.
template <typename T, bool RMS>
__global__ void __launch_bounds__(1024) add_norm(
    u16* __restrict__ out, u16* __restrict__ x, const u16* __restrict__ delta,
    const u16* __restrict__ delta_bias, const u16* __restrict__ weight, const u16* __restrict__ bias,
    int hidden, float eps) {
  __shared__ float scratch[32];
  const i64 row = (i64)blockIdx.x * hidden;
  // The norm's parameters are loaded with the row, not after the sums: at batch 1 the block
  // is a chain of memory round trips, and this takes one out of it.
  Packed<8> w[NORM_CHUNKS], b[NORM_CHUNKS];
  float v[NORM_CHUNKS][8];
  float sum = 0.f;
#pragma unroll
  for (int c = 0; c < NORM_CHUNKS; ++c) {
    const int i = (c * blockDim.x + threadIdx.x) * 8;
#pragma unroll
    for (int e = 0; e < 8; ++e) v[c][e] = 0.f;
    if (i >= hidden) continue;
    load_packed<8>(weight + i, w[c]);
    if (!RMS) load_packed<8>(bias + i, b[c]);
    load_row<T, 8>(x + row + i, v[c]);
    if (delta != nullptr) {
      float d[8], db[8];
      load_row<T, 8>(delta + row + i, d);
      if (delta_bias != nullptr) load_row<T, 8>(delta_bias + i, db);
#pragma unroll
      for (int e = 0; e < 8; ++e)
        v[c][e] = to_float<T>(from_float<T>(v[c][e] + d[e] + (delta_bias != nullptr ? db[e] : 0.f)));
      store_row<T, 8>(x + row + i, v[c]);
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) sum += RMS ? v[c][e] * v[c][e] : v[c][e];
  }
  sum = block_sum(sum, scratch);
  float mean = 0.f, var;
  if (RMS) {
    var = sum / hidden;
  } else {
    mean = sum / hidden;
    float sq = 0.f;
#pragma unroll
    for (int c = 0; c < NORM_CHUNKS; ++c)
      if ((c * blockDim.x + threadIdx.x) * 8 < hidden)
#pragma unroll
        for (int e = 0; e < 8; ++e) sq += (v[c][e] - mean) * (v[c][e] - mean);
    var = block_sum(sq, scratch) / hidden;
  }
  const float rstd = rsqrtf(var + eps);
#pragma unroll
  for (int c = 0; c < NORM_CHUNKS; ++c) {
    const int i = (c * blockDim.x + threadIdx.x) * 8;
    if (i >= hidden) continue;
    float wf[8], o[8];
    unpack_row<T, 8>(w[c], wf);
    if (RMS) {
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = wf[e] * to_float<T>(from_float<T>(v[c][e] * rstd));
    } else {
      float bf[8];
      unpack_row<T, 8>(b[c], bf);
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = (v[c][e] - mean) * rstd * wf[e] + bf[e];
    }
    store_row<T, 8>(out + row + i, o);
  }
}

// LLaMA's MLP activation on the merged gate/up projection: out[m, j] = silu(g) * u with
// g = gate_up[m, j], u = gate_up[m, width + j]. Grid: (width / 8 / blockDim.x, rows).
template <typename T>
__global__ void silu_mul(u16* __restrict__ out, const u16* __restrict__ gate_up, int width, i64 in_stride) {
  const int j = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (j >= width) return;
  const i64 m = blockIdx.y;
  float g[8], u[8], o[8];
  load_row<T, 8>(gate_up + m * in_stride + j, g);
  load_row<T, 8>(gate_up + m * in_stride + width + j, u);
#pragma unroll
  for (int e = 0; e < 8; ++e) o[e] = g[e] / (1.f + __expf(-g[e])) * u[e];
  store_row<T, 8>(out + m * width + j, o);
}

// LLaMA's rotary embedding of new tokens' queries and keys, in place, then their keys and
// values stored at their cache slots (-1: a padding token, not stored): one launch for the
// rotation of q and k (a dozen PyTorch launches) and reshape_and_cache's copy.
// A head's halves rotate together: x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin, with cos/sin
// rows [max_len, head_dim] (angles repeated over the halves) at the token's position.
// Work items per token: 8-value pieces of each q and k head's first half (rotations), then of
// each v head (copies). Grid: (items / blockDim.x, tokens).
template <typename T>
__global__ void rotary_and_cache(
    u16* __restrict__ q, u16* __restrict__ k, const u16* __restrict__ v, u16* __restrict__ k_cache,
    u16* __restrict__ v_cache, const i64* __restrict__ positions, const i64* __restrict__ slots,
    const u16* __restrict__ cos, const u16* __restrict__ sin, int num_heads, int num_kv_heads,
    int head_dim, i64 q_stride, i64 k_stride, i64 v_stride) {
  const i64 token = blockIdx.y;
  const int item = blockIdx.x * blockDim.x + threadIdx.x;
  const int half = head_dim / 2, pieces = half / 8;
  const int rotations = (num_heads + num_kv_heads) * pieces;
  const i64 slot = slots[token];
  const i64 cache_row = slot * num_kv_heads * head_dim;
  if (item < rotations) {
    const int h = item / pieces, j = (item % pieces) * 8;
    const bool is_key = h >= num_heads;
    const int kv_head = h - num_heads;
    u16* row = is_key ? k + token * k_stride + (i64)kv_head * head_dim : q + token * q_stride + (i64)h * head_dim;
    const i64 angle = positions[token] * head_dim + j;
    float x1[8], x2[8], c[8], s[8], o1[8], o2[8];
    load_row<T, 8>(row + j, x1);
    load_row<T, 8>(row + half + j, x2);
    load_row<T, 8>(cos + angle, c);
    load_row<T, 8>(sin + angle, s);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      o1[e] = x1[e] * c[e] - x2[e] * s[e];
      o2[e] = x2[e] * c[e] + x1[e] * s[e];
    }
    store_row<T, 8>(row + j, o1);
    store_row<T, 8>(row + half + j, o2);
    if (is_key && slot >= 0) {
      u16* dst = k_cache + cache_row + (i64)kv_head * head_dim;
      store_row<T, 8>(dst + j, o1);
      store_row<T, 8>(dst + half + j, o2);
    }
  } else if (slot >= 0 && item < rotations + num_kv_heads * head_dim / 8) {
    const int i = (item - rotations) * 8;
    *reinterpret_cast<uint4*>(v_cache + cache_row + i) = *reinterpret_cast<const uint4*>(v + token * v_stride + i);
  }
}
