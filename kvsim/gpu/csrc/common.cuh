// Header-free helpers shared by kvsim's kernels. NVRTC compiles these sources without the
// CUDA toolkit's headers (cupy ships none for bf16), so 16-bit floats are stored as raw
// `unsigned short` and converted with PTX instructions.
#pragma once

typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

#define NEG_INF __int_as_float(0xff800000)  // no math.h under NVRTC

struct Half {};      // tag: IEEE fp16 storage
struct BFloat16 {};  // tag: bfloat16 storage

template <typename T> __device__ __forceinline__ float to_float(u16 x);
template <> __device__ __forceinline__ float to_float<Half>(u16 x) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
  return f;
}
template <> __device__ __forceinline__ float to_float<BFloat16>(u16 x) {
  return __uint_as_float(((u32)x) << 16);
}

template <typename T> __device__ __forceinline__ u16 from_float(float f);
template <> __device__ __forceinline__ u16 from_float<Half>(float f) {
  u16 x;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(x) : "f"(f));
  return x;
}
template <> __device__ __forceinline__ u16 from_float<BFloat16>(float f) {
  u16 x;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(x) : "f"(f));
  return x;
}

template <typename T>
__device__ __forceinline__ void unpack(u32 w, float* out) {
  out[0] = to_float<T>((u16)(w & 0xffffu));
  out[1] = to_float<T>((u16)(w >> 16));
}

// N consecutive 16-bit values kept packed, two per 32-bit word, until they are used: a row
// in flight costs half the registers of its floats.
template <int N> struct Packed {
  static_assert(N % 2 == 0, "rows are split into an even number of elements per thread");
  u32 w[N / 2];
};

// Load N consecutive 16-bit values with the widest aligned vector loads that N allows
// (16 B when N % 8 == 0). The caller guarantees alignment to 2*N bytes' largest
// power-of-two divisor, which holds for rows of head_dim elements split N per thread.
template <int N>
__device__ __forceinline__ void load_packed(const u16* __restrict__ p, Packed<N>& out) {
  if constexpr (N % 8 == 0) {
#pragma unroll
    for (int i = 0; i < N / 8; ++i) {
      const uint4 v = reinterpret_cast<const uint4*>(p)[i];
      out.w[4 * i] = v.x;
      out.w[4 * i + 1] = v.y;
      out.w[4 * i + 2] = v.z;
      out.w[4 * i + 3] = v.w;
    }
  } else if constexpr (N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      const uint2 v = reinterpret_cast<const uint2*>(p)[i];
      out.w[2 * i] = v.x;
      out.w[2 * i + 1] = v.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) out.w[i] = reinterpret_cast<const u32*>(p)[i];
  }
}

// Packed words to floats; unpacked with shifts, not through a pointer, so all stays in registers.
template <typename T, int N>
__device__ __forceinline__ void unpack_row(const Packed<N>& in, float (&out)[N]) {
#pragma unroll
  for (int i = 0; i < N / 2; ++i) unpack<T>(in.w[i], out + 2 * i);
}

template <typename T, int N>
__device__ __forceinline__ void load_row(const u16* __restrict__ p, float (&out)[N]) {
  Packed<N> packed;
  load_packed<N>(p, packed);
  unpack_row<T, N>(packed, out);
}

// N floats rounded to T and stored as consecutive 16-bit values, with the widest aligned
// vector stores that N allows (the caller guarantees the alignment, as for load_packed).
template <typename T, int N>
__device__ __forceinline__ void store_row(u16* __restrict__ p, const float (&in)[N]) {
  Packed<N> packed;
#pragma unroll
  for (int i = 0; i < N / 2; ++i)
    packed.w[i] = (u32)from_float<T>(in[2 * i]) | ((u32)from_float<T>(in[2 * i + 1]) << 16);
  if constexpr (N % 8 == 0) {
#pragma unroll
    for (int i = 0; i < N / 8; ++i) {
      uint4 v;
      v.x = packed.w[4 * i];
      v.y = packed.w[4 * i + 1];
      v.z = packed.w[4 * i + 2];
      v.w = packed.w[4 * i + 3];
      reinterpret_cast<uint4*>(p)[i] = v;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) reinterpret_cast<u32*>(p)[i] = packed.w[i];
  }
}
