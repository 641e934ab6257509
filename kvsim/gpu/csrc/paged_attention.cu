// Paged decode attention: one query token per sequence attends to its context, whose K and V
// sit in a block-paged cache [num_blocks, block_size, num_kv_heads, HEAD] reached through the
// sequence's block table (token t lives in block table[t / block_size], slot t % block_size).
//
// Work split: one thread block per (query head, sequence, partition of part_size <= MAX_PART
// tokens; the caller picks smaller partitions when there are few sequences). A block
// with the whole context in one partition writes the output directly; otherwise it writes
// its unnormalised partial output with the partition's max logit and exp-sum, and
// paged_decode_reduce combines the partitions (split-K, flash-decoding style). Which path a
// sequence takes depends only on its context length, so a fixed grid (CUDA graphs) serves
// every mix of lengths.
//
// Inside a block, groups of TPK threads each own one token at a time; a thread holds HEAD/TPK
// consecutive elements of the query row, loads the same slice of the key (or value) row with
// vector loads and the group reduces the dot product with warp shuffles. UNROLL tokens per
// group are loaded before any is used, to keep enough loads in flight.
#include "common.cuh"

#define NT 128     // threads per block
#define TPK 8      // threads per key/value row
#define MAX_PART 512  // most tokens per partition (shared-memory logits)

template <int HEAD> struct DecodeShape {
  static constexpr int ELEMS = HEAD / TPK;  // elements of a row per thread
  static constexpr int GROUPS = NT / TPK;   // rows in flight per block per unrolled step
  static constexpr int UNROLL = ELEMS <= 10 ? 4 : (ELEMS <= 16 ? 2 : 1);
};

__device__ __forceinline__ float block_reduce(float v, float* scratch, bool is_max) {
  // All NT threads get the max (or sum) of v; scratch holds NT / 32 floats.
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, w) : v + w;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = scratch[0];
#pragma unroll
  for (int w = 1; w < NT / 32; ++w) v = is_max ? fmaxf(v, scratch[w]) : v + scratch[w];
  return v;
}

template <typename T, int HEAD>
__global__ void __launch_bounds__(NT) paged_decode(
    u16* __restrict__ out,              // [num_seqs, num_heads, HEAD]
    float* __restrict__ part_out,       // [num_seqs, num_heads, max_parts, HEAD]
    float* __restrict__ part_stats,     // [num_seqs, num_heads, max_parts, 2] (max, sum)
    const u16* __restrict__ q,          // [num_seqs, num_heads, HEAD], rows q_stride apart
    const u16* __restrict__ k_cache,    // [num_blocks, block_size, num_kv_heads, HEAD]
    const u16* __restrict__ v_cache,
    const int* __restrict__ block_tables,  // [num_seqs, table_stride]
    const int* __restrict__ context_lens,  // [num_seqs]
    float scale, int block_size, int num_kv_heads, int table_stride, i64 q_stride, int part_size) {
  using S = DecodeShape<HEAD>;
  constexpr int E = S::ELEMS, G = S::GROUPS, U = S::UNROLL;
  const int head = blockIdx.x, num_heads = gridDim.x, seq = blockIdx.y, part = blockIdx.z;
  const int max_parts = gridDim.z;
  const int ctx = context_lens[seq];
  const int start = part * part_size;
  const i64 out_row = ((i64)seq * num_heads + head) * HEAD;
  if (ctx <= 0) {  // padding row of a captured batch: write zeros, never garbage
    if (part == 0)
      for (int d = threadIdx.x; d < HEAD; d += NT) out[out_row + d] = from_float<T>(0.f);
    return;
  }
  if (start >= ctx) return;
  const int n = min(part_size, ctx - start);
  const int num_parts = (ctx + part_size - 1) / part_size;

  __shared__ float logits[MAX_PART];
  __shared__ float scratch[NT / 32];
  __shared__ float red[G][HEAD];

  const int group = threadIdx.x / TPK, lane = threadIdx.x % TPK;
  const int kv_head = head / (num_heads / num_kv_heads);
  const i64 token_stride = (i64)num_kv_heads * HEAD;  // elements between slots
  const i64 block_stride = token_stride * block_size;
  const i64 row_offset = (i64)kv_head * HEAD + lane * E;
  const int* table = block_tables + (i64)seq * table_stride;

  float qv[E];
  load_row<T, E>(q + seq * q_stride + (i64)head * HEAD + lane * E, qv);
#pragma unroll
  for (int e = 0; e < E; ++e) qv[e] *= scale;

  auto row_ptr = [&](const u16* cache, int t) {
    const int pos = start + t;
    return cache + (i64)table[pos / block_size] * block_stride +
           (i64)(pos % block_size) * token_stride + row_offset;
  };

  // 1. logits = scale * q.k for every token of the partition.
  float local_max = NEG_INF;
  // The loop bound is uniform across the block so that every lane reaches the shuffles.
  for (int base = 0; base < n; base += G * U) {
    float kv[U][E] = {};
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int t = base + group + u * G;
      if (t < n) load_row<T, E>(row_ptr(k_cache, t), kv[u]);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int t = base + group + u * G;
      float dot = 0.f;
#pragma unroll
      for (int e = 0; e < E; ++e) dot += qv[e] * kv[u][e];
#pragma unroll
      for (int o = TPK / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      if (t < n) {
        if (lane == 0) logits[t] = dot;
        local_max = fmaxf(local_max, dot);
      }
    }
  }
  const float m = block_reduce(local_max, scratch, true);  // its barrier publishes logits

  // 2. p = exp(logit - max) and their sum.
  float local_sum = 0.f;
  for (int t = threadIdx.x; t < n; t += NT) {
    const float p = __expf(logits[t] - m);
    logits[t] = p;
    local_sum += p;
  }
  const float sum = block_reduce(local_sum, scratch, false);

  // 3. acc = sum_t p_t * v_t, each group over its tokens, then across groups.
  float acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.f;
  for (int base = 0; base < n; base += G * U) {
    float vv[U][E];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int t = base + group + u * G;
      if (t < n) load_row<T, E>(row_ptr(v_cache, t), vv[u]);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int t = base + group + u * G;
      if (t < n) {
        const float p = logits[t];
#pragma unroll
        for (int e = 0; e < E; ++e) acc[e] += p * vv[u][e];
      }
    }
  }
#pragma unroll
  for (int e = 0; e < E; ++e) red[group][lane * E + e] = acc[e];
  __syncthreads();
  const float inv = num_parts == 1 ? 1.f / sum : 1.f;
  const i64 part_row = (out_row / HEAD * max_parts + part);
  for (int d = threadIdx.x; d < HEAD; d += NT) {
    float o = 0.f;
#pragma unroll
    for (int g = 0; g < G; ++g) o += red[g][d];
    if (num_parts == 1) out[out_row + d] = from_float<T>(o * inv);
    else part_out[part_row * HEAD + d] = o;
  }
  if (num_parts > 1 && threadIdx.x == 0) {
    part_stats[part_row * 2] = m;
    part_stats[part_row * 2 + 1] = sum;
  }
}

// Combine the partitions of sequences whose context spans more than one (split-K).
template <typename T>
__global__ void __launch_bounds__(NT) paged_decode_reduce(
    u16* __restrict__ out, const float* __restrict__ part_out,
    const float* __restrict__ part_stats, const int* __restrict__ context_lens,
    int head_dim, int max_parts, int part_size) {
  const int head = blockIdx.x, num_heads = gridDim.x, seq = blockIdx.y;
  const int num_parts = (context_lens[seq] + part_size - 1) / part_size;
  if (num_parts <= 1) return;
  const i64 row = (i64)seq * num_heads + head;
  const float* stats = part_stats + row * max_parts * 2;
  float m = NEG_INF;
  for (int p = 0; p < num_parts; ++p) m = fmaxf(m, stats[2 * p]);
  float denom = 0.f;
  for (int p = 0; p < num_parts; ++p) denom += __expf(stats[2 * p] - m) * stats[2 * p + 1];
  const float* po = part_out + row * max_parts * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += NT) {
    float o = 0.f;
    for (int p = 0; p < num_parts; ++p) o += __expf(stats[2 * p] - m) * po[(i64)p * head_dim + d];
    out[row * head_dim + d] = from_float<T>(o / denom);
  }
}
