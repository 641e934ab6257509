// Paged decode attention: one query token per sequence attends to its context, whose K and V
// sit in a block-paged cache [num_blocks, block_size, num_kv_heads, HEAD] reached through the
// sequence's block table (token t lives in block table[t / block_size], slot t % block_size).
//
// Work split: one thread block per (query head, sequence, partition of part_size tokens; the
// caller picks smaller partitions when there are few sequences). A block
// with the whole context in one partition writes the output directly; otherwise it writes
// its unnormalised partial output with the partition's max logit and exp-sum, and
// paged_decode_reduce combines the partitions (split-K, flash-decoding style). Which path a
// sequence takes depends only on its context length, so a fixed grid (CUDA graphs) serves
// every mix of lengths.
//
// Inside a block, groups of TPK threads each own one token at a time; a thread holds
// HEAD/TPK consecutive elements of the query row and loads the same slice of the token's key
// and value rows together, with vector loads, kept packed until used. The group reduces the
// dot product with warp shuffles and folds the token into its own running softmax (max,
// exp-sum, weighted sum of values: one pass, flash-decoding style), so a block never waits
// between a key pass and a value pass. UNROLL tokens per group are loaded before any is
// used, to keep enough bytes in flight; at the end the groups' partial results are merged
// through shared memory.
#include "common.cuh"

#define NT 128  // threads per block

template <typename T, int HEAD, int TPK, int UNROLL>
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
  constexpr int E = HEAD / TPK, G = NT / TPK, U = UNROLL;
  static_assert(HEAD % TPK == 0 && NT % TPK == 0 && 32 % TPK == 0, "bad thread split");
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

  __shared__ float red[G][HEAD];
  __shared__ float group_max[G], group_sum[G];

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

  float m = NEG_INF, sum = 0.f, acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.f;
  // The loop bound is uniform across the block so that every lane reaches the shuffles.
  for (int base = 0; base < n; base += G * U) {
    Packed<E> kp[U], vp[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int t = base + group + u * G;
      if (t < n) {
        const int pos = start + t;
        const i64 row = (i64)table[pos / block_size] * block_stride + (i64)(pos % block_size) * token_stride + row_offset;
        load_packed<E>(k_cache + row, kp[u]);
        load_packed<E>(v_cache + row, vp[u]);
      } else {  // zeros, not garbage: a NaN pattern times a zero weight would still be NaN
#pragma unroll
        for (int i = 0; i < E / 2; ++i) kp[u].w[i] = vp[u].w[i] = 0u;
      }
    }
    float logit[U], new_max = m;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kv[E], dot = 0.f;
      unpack_row<T, E>(kp[u], kv);
#pragma unroll
      for (int e = 0; e < E; ++e) dot += qv[e] * kv[e];
#pragma unroll
      for (int o = TPK / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      logit[u] = base + group + u * G < n ? dot : NEG_INF;
      new_max = fmaxf(new_max, logit[u]);
    }
    if (new_max == NEG_INF) continue;  // this group had no token in this step
    const float rescale = __expf(m - new_max);
    sum *= rescale;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] *= rescale;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const float p = __expf(logit[u] - new_max);
      float vv[E];
      unpack_row<T, E>(vp[u], vv);
      sum += p;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[e] += p * vv[e];
    }
    m = new_max;
  }

  // Merge the groups: rescale each to the partition's max, add up.
#pragma unroll
  for (int e = 0; e < E; ++e) red[group][lane * E + e] = acc[e];
  if (lane == 0) {
    group_max[group] = m;
    group_sum[group] = sum;
  }
  __syncthreads();
  float block_max = NEG_INF;
#pragma unroll
  for (int g = 0; g < G; ++g) block_max = fmaxf(block_max, group_max[g]);
  float weight[G], block_sum = 0.f;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    weight[g] = __expf(group_max[g] - block_max);  // 0 for a group that saw no token
    block_sum += weight[g] * group_sum[g];
  }
  const float inv = num_parts == 1 ? 1.f / block_sum : 1.f;
  const i64 part_row = (out_row / HEAD * max_parts + part);
  for (int d = threadIdx.x; d < HEAD; d += NT) {
    float o = 0.f;
#pragma unroll
    for (int g = 0; g < G; ++g) o += weight[g] * red[g][d];
    if (num_parts == 1) out[out_row + d] = from_float<T>(o * inv);
    else part_out[part_row * HEAD + d] = o;
  }
  if (num_parts > 1 && threadIdx.x == 0) {
    part_stats[part_row * 2] = block_max;
    part_stats[part_row * 2 + 1] = block_sum;
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
