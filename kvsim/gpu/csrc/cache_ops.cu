// KV-cache maintenance: writing new tokens' K/V into their slots, and copying whole blocks.
#include "common.cuh"

// key/value: [num_tokens, num_kv_heads * head_dim], rows key_stride / value_stride apart
// (views into the fused QKV output, or LLaMA's rotated keys); caches: [num_blocks * block_size, num_kv_heads * head_dim] flattened.
// slot_mapping[i] = block * block_size + slot, or -1 for a padding token (skipped).
extern "C" __global__ void reshape_and_cache(
    u16* __restrict__ k_cache, u16* __restrict__ v_cache,
    const u16* __restrict__ key, const u16* __restrict__ value,
    const i64* __restrict__ slot_mapping, int row_elems, i64 key_stride, i64 value_stride) {
  const int token = blockIdx.x;
  const i64 slot = slot_mapping[token];
  if (slot < 0) return;
  const u16* k = key + token * key_stride;
  const u16* v = value + token * value_stride;
  u16* kd = k_cache + slot * row_elems;
  u16* vd = v_cache + slot * row_elems;
  for (int i = threadIdx.x; i < row_elems; i += blockDim.x) {
    kd[i] = k[i];
    vd[i] = v[i];
  }
}

// For every tensor j and pair i: dst_bases[j] block pairs[i][1] = src_bases[j] block pairs[i][0].
// One launch covers all layers' K and V caches. The bases may point to pinned host memory
// (unified addressing makes it directly accessible), which is how blocks swap in and out.
// Blocks are block_bytes long, a multiple of 16.
extern "C" __global__ void copy_blocks(
    const i64* __restrict__ src_bases, const i64* __restrict__ dst_bases,
    const i64* __restrict__ pairs, i64 block_bytes) {
  const int pair = blockIdx.x, tensor = blockIdx.y;
  const i64 n = block_bytes / 16;
  const uint4* src = reinterpret_cast<const uint4*>(src_bases[tensor] + pairs[2 * pair] * block_bytes);
  uint4* dst = reinterpret_cast<uint4*>(dst_bases[tensor] + pairs[2 * pair + 1] * block_bytes);
  for (i64 i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}
