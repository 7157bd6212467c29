// kernels/prelude.cuh — what kernels/ops.cu and the generated elementwise chains
// (runtime/cuda/chains.c) share: storage types, loads and stores by dtype code, the
// elementwise functions the chain expressions of plan/ops.def call, dropout's hash, and
// struct Run. NVRTC compiles ops.cu once (a module of its own, cached by its hash) and each
// plan's chains with only this file before them: a new plan costs the chains' compile, not
// the fixed kernels' again.
//
// Storage types follow the plan: activations bf16 or f32 (as the value says: dtype codes
// DT_*), ids int32, parameters fp32 masters (plus a bf16 copy for GEMMs, made by adamw),
// gradients fp32. Values whose dtype a kernel does not fix are read and written through
// ld/st with a dtype code: a branch uniform across the warp, cheap next to the memory access.
//
// No system headers: NVRTC runs on machines with no toolkit headers installed (bf16
// conversion by PTX's cvt from compute capability 8.0, by hand before it: f2bf, bf16x2).

#pragma once

typedef unsigned short bf16;
typedef long long i64;
#define INF __int_as_float(0x7f800000)

enum { DT_F32 = 0, DT_I32 = 1, DT_BF16 = 2 };   // MglDtype

__device__ __forceinline__ float bf2f(bf16 x) { return __uint_as_float(((unsigned)x) << 16); }
// f rounded to bf16, to nearest even. From compute capability 8.0 by the conversion
// instruction (one for a pair: bf16x2), before it by hand; the same values but NaN's
// payload (the instruction gives the canonical NaN). By hand it took about ten
// instructions an element, a fifth of the layer norm backward's, which was bound by its
// instruction issue (perf-notes.md, twenty-fifth sitting).
__device__ __forceinline__ bf16 f2bf(float f)
{
#if __CUDA_ARCH__ >= 800
	unsigned short h;
	asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
	return h;
#else
	unsigned u = __float_as_uint(f);
	if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))   // NaN stays NaN
		return (bf16)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1u);
	return (bf16)(u >> 16);
#endif
}
// lo and hi rounded to bf16, lo in the low half (the lower address)
__device__ __forceinline__ unsigned bf16x2(float lo, float hi)
{
#if __CUDA_ARCH__ >= 800
	unsigned r;
	asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
	return r;
#else
	return (unsigned)f2bf(lo) | (unsigned)f2bf(hi) << 16;
#endif
}
__device__ __forceinline__ float ld(const void *p, int dt, i64 i)
{
	return dt == DT_BF16 ? bf2f(((const bf16 *)p)[i]) : ((const float *)p)[i];
}
__device__ __forceinline__ void st(void *p, int dt, i64 i, float v)
{
	if (dt == DT_BF16)
		((bf16 *)p)[i] = f2bf(v);
	else
		((float *)p)[i] = v;
}

// Four consecutive elements from i, a multiple of 4 (and the value 16-byte aligned, as
// plans place them): one 8-byte load or store of bf16, one 16-byte of f32. The generated
// chains (runtime/cuda/chains.c) take four elements a thread with them.
__device__ __forceinline__ void ld4(const void *p, int dt, i64 i, float *v)
{
	if (dt == DT_BF16) {
		uint2 u = *(const uint2 *)((const bf16 *)p + i);
		v[0] = __uint_as_float(u.x << 16), v[1] = __uint_as_float(u.x & 0xffff0000u);
		v[2] = __uint_as_float(u.y << 16), v[3] = __uint_as_float(u.y & 0xffff0000u);
	} else {
		float4 f = *(const float4 *)((const float *)p + i);
		v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
	}
}
__device__ __forceinline__ void st4(void *p, int dt, i64 i, const float *v)
{
	if (dt == DT_BF16)
		*(uint2 *)((bf16 *)p + i) = make_uint2(bf16x2(v[0], v[1]), bf16x2(v[2], v[3]));
	else
		*(float4 *)((float *)p + i) = make_float4(v[0], v[1], v[2], v[3]);
}

// 8 elements from p + i (16 bytes of bf16, two float4 of f32): the chains' loads and
// stores where every size is a multiple of 8
__device__ __forceinline__ void ld8(const void *p, int dt, i64 i, float *v)
{
	if (dt == DT_BF16) {
		uint4 u = *(const uint4 *)((const bf16 *)p + i);
		unsigned w[4] = {u.x, u.y, u.z, u.w};
		for (int e = 0; e < 4; e++)
			v[2 * e] = __uint_as_float(w[e] << 16), v[2 * e + 1] = __uint_as_float(w[e] & 0xffff0000u);
	} else {
		ld4(p, dt, i, v);
		ld4(p, dt, i + 4, v + 4);
	}
}
__device__ __forceinline__ void st8(void *p, int dt, i64 i, const float *v)
{
	if (dt == DT_BF16) {
		unsigned w[4];
		for (int e = 0; e < 4; e++)
			w[e] = bf16x2(v[2 * e], v[2 * e + 1]);
		*(uint4 *)((bf16 *)p + i) = make_uint4(w[0], w[1], w[2], w[3]);
	} else {
		st4(p, dt, i, v);
		st4(p, dt, i + 4, v + 4);
	}
}

#define FOR_EACH(i, n) for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}
__device__ __forceinline__ float warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

// The dropout mask: the same bits as rt_dropout_keep in runtime/backend.h.
__device__ __forceinline__ unsigned long long mix64(unsigned long long x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}
__device__ __forceinline__ bool keep(unsigned long long key, unsigned seed, i64 i, double p)
{
	unsigned long long h = mix64(mix64(key ^ ((unsigned long long)seed << 40)) ^ (unsigned long long)i);
	return (double)(h >> 40) * (1.0 / 16777216.0) >= p;
}

// The run's parameters, in device memory so a captured graph reads this step's values.
struct Run {
	unsigned long long key;
	int train;
	float lr, beta1, beta2, eps, weight_decay, clip;
	float bc1, bc2;   // 1 - beta^t
};

// The elementwise ops as functions, for the kernels below and for the fused chains the
// cuda backend generates from the plan (runtime/cuda/chains.c): one expression a step.
// GELU (GPT-2's tanh form, the cpu's with tanhf: 0.5 v (1 + tanh(u)), u = GELU_C (v +
// 0.044715 v^3)) as v s with s = 0.5 (1 + tanh(u)) = 1 / (1 + e), e = exp(-2 u): the same
// function, by two MUFU operations (ex2, rcp) and a few FMAs where tanhf takes about 20
// instructions (a GELU pass over 1.2b's 50 M elements was bound by them, not by memory:
// perf-notes.md, twenty-first sitting), and without 1 + tanh(u)'s cancellation where u is
// very negative. Its derivative: s (1 + 2 v u' (1 - s)) (1 - s's rounding is fp32's ulp of
// 1, next to the 1 it is added to). e overflows to inf for v below about -9.5: s = 0
// (__fdividef gives 0 past 2^126), and GELU and its derivative are 0 there, as they round to.
#define GELU_C 0.7978845608028654f
__device__ __forceinline__ float gelu_exp(float v)   // e = 2^(-2 log2(e) u)
{
	float e;
	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(-2.0f * 1.4426950408889634f * GELU_C * v * fmaf(0.044715f, v * v, 1.0f)));
	return e;
}
__device__ __forceinline__ float gelu_f(float v) { return __fdividef(v, 1.0f + gelu_exp(v)); }
__device__ __forceinline__ float gelu_b(float g, float v)
{
	float e = gelu_exp(v), s = __fdividef(1.0f, 1.0f + e), du = GELU_C * fmaf(3.0f * 0.044715f, v * v, 1.0f);
	return g * s * fmaf(2.0f * v * du, 1.0f - s, 1.0f);
}
__device__ __forceinline__ float tanh_b(float g, float y) { return g * (1.0f - y * y); }
__device__ __forceinline__ float silu_f(float v) { return v / (1.0f + __expf(-v)); }
__device__ __forceinline__ float silu_b(float g, float v)
{
	float s = 1.0f / (1.0f + __expf(-v));
	return g * s * (1.0f + v * (1.0f - s));
}
__device__ __forceinline__ float drop(float v, i64 global, unsigned seed, double p, const struct Run *run)
{
	if (!run->train || p <= 0)
		return v;
	return keep(run->key, seed, global, p) ? v * (float)(1.0 / (1.0 - p)) : 0.0f;
}

