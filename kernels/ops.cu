// kernels/ops.cu — the cuda backend's kernels, compiled at run time by NVRTC (one module,
// cached on disk by the hash of this file, prelude.cuh and the versions).
//
// Each kernel is the twin of a function in runtime/cpu.c (the reference they are tested
// against, tests/gpu/): same op, same inputs, same meaning. The types, loads, stores and
// elementwise functions are in prelude.cuh, which the generated chains share.

#include "prelude.cuh"

// A block a row, for the classifier's kernels over logits [M, N]: a value of each thread
// reduced over the block (the max, or the sum when SUM), returned to every thread; part: 32
// floats of shared memory. Every thread of the block must call it.
template <bool SUM>
__device__ __forceinline__ float block_reduce(float v, float *part)
{
	v = SUM ? warp_sum(v) : warp_max(v);
	if (threadIdx.x % 32 == 0)
		part[threadIdx.x / 32] = v;
	__syncthreads();
	v = threadIdx.x % 32 < blockDim.x / 32 ? part[threadIdx.x % 32] : (SUM ? 0.0f : -INF);
	v = SUM ? warp_sum(v) : warp_max(v);
	__syncthreads();   // part may be written again
	return v;
}
// f(j, z[r, j]) for the columns j < valid of row r, this thread's share: eight at a time, a
// 16-byte load each, where the row is bf16 and N a multiple of 8 (GPT-2's padded vocabulary)
template <typename F>
__device__ __forceinline__ void row_each(const void *z, int zdt, i64 r, i64 N, i64 valid, F f)
{
	if (zdt == DT_BF16 && N % 8 == 0) {
		const uint4 *p = (const uint4 *)((const bf16 *)z + r * N);
		for (i64 c = threadIdx.x; c * 8 < valid; c += blockDim.x) {
			uint4 u = p[c];
			unsigned w[4] = {u.x, u.y, u.z, u.w};
			for (int e = 0; e < 8; e++)
				if (c * 8 + e < valid)
					f(c * 8 + e, bf2f((bf16)(w[e / 2] >> (e % 2 * 16))));
		}
	} else {
		for (i64 j = threadIdx.x; j < valid; j += blockDim.x)
			f(j, ld(z, zdt, r * N + j));
	}
}

extern "C" {

// out[n, D] = table[ids - start] (rows of this rank) or 0
__global__ void k_embedding(const float *table, const int *ids, void *out, int odt, i64 n, i64 D, i64 V, i64 start)
{
	FOR_EACH(i, n * D) {
		i64 r = i / D, row = (i64)ids[r] - start;
		st(out, odt, i, row >= 0 && row < V ? table[row * D + i % D] : 0.0f);
	}
}

// dtable[ids - start] += dy (atomic: rows repeat)
__global__ void k_embedding_bwd(const void *dy, int ddt, const int *ids, float *dtable, i64 n, i64 D, i64 V, i64 start)
{
	FOR_EACH(i, n * D) {
		i64 r = i / D, row = (i64)ids[r] - start;
		if (row >= 0 && row < V)
			atomicAdd(&dtable[row * D + i % D], ld(dy, ddt, i));
	}
}

__global__ void k_positions(int *out, i64 n)
{
	FOR_EACH(i, n) out[i] = (int)i;
}

__global__ void k_bias_add(const void *y, int ydt, const float *b, void *out, int odt, i64 M, i64 N)
{
	FOR_EACH(i, M * N) st(out, odt, i, ld(y, ydt, i) + b[i % N]);
}

// a warp a row: mean and 1/std of x[D]
__device__ void row_moments(const void *x, int dt, i64 row, i64 D, float eps, float *mean, float *rstd)
{
	float s = 0, q = 0;
	for (i64 k = threadIdx.x % 32; k < D; k += 32)
		s += ld(x, dt, row * D + k);
	float m = warp_sum(s) / (float)D;
	for (i64 k = threadIdx.x % 32; k < D; k += 32) {
		float d = ld(x, dt, row * D + k) - m;
		q += d * d;
	}
	*mean = m;
	*rstd = rsqrtf(warp_sum(q) / (float)D + eps);
}

}  // extern "C"

// The layer norms' rows eight columns a lane at a time (16-byte loads and stores, w and b as
// float4) where the rows are bf16, D a multiple of 8 and every pointer 16-byte aligned: an
// eighth of the load instructions of the loops below. The ln8 loops read the row from
// memory once per pass (from L1 after the first), holding nothing across passes: the
// two-pass backward's rows and rows past 2,048. The forward and the one-pass backward hold
// the row in registers instead (lnr_*, below).
__device__ __forceinline__ bool ln8_ok(i64 D, int dt1, int dt2, int dt3, const void *a, const void *b, const void *c,
				       const void *d, const void *e)
{
	return dt1 == DT_BF16 && dt2 == DT_BF16 && dt3 == DT_BF16 && D % 8 == 0 &&
	       ((unsigned long long)a | (unsigned long long)b | (unsigned long long)c | (unsigned long long)d |
		(unsigned long long)e) % 16 == 0;
}
// v = the 8 bf16 values in u
__device__ __forceinline__ void ln8_unpack(const uint4 &u, float *v)
{
	unsigned w[4] = {u.x, u.y, u.z, u.w};
	for (int e = 0; e < 8; e++)
		v[e] = bf2f((bf16)(w[e / 2] >> (e % 2 * 16)));
}
// v = the 8 bf16 values at x + at
__device__ __forceinline__ void ln8_load(float *v, const void *x, i64 at) { ln8_unpack(*(const uint4 *)((const bf16 *)x + at), v); }
// the 16 bytes (8 bf16) at x + at if ok, else zeros
__device__ __forceinline__ uint4 ln8_raw(const void *x, i64 at, bool ok)
{
	return ok ? *(const uint4 *)((const bf16 *)x + at) : make_uint4(0, 0, 0, 0);
}
// f(j, v): v the 8 values of columns j .. j + 7 of row `row` of x [., D], this lane's
template <typename F>
__device__ __forceinline__ void ln8_each(const void *x, i64 row, i64 D, F f)
{
	for (i64 j = threadIdx.x % 32 * 8; j < D; j += 256) {
		float v[8];
		ln8_load(v, x, row * D + j);
		f(j, v);
	}
}
__device__ __forceinline__ void ln8_store(void *y, i64 at, const float *o)
{
	*(uint4 *)((bf16 *)y + at) =
	    make_uint4(bf16x2(o[0], o[1]), bf16x2(o[2], o[3]), bf16x2(o[4], o[5]), bf16x2(o[6], o[7]));
}
__device__ __forceinline__ void ln8_get(float *o, const float *p)
{
	float4 a = *(const float4 *)p, b = *(const float4 *)(p + 4);
	o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
}
// p[8] = o (two float4 stores)
__device__ __forceinline__ void ln8_put(float *p, const float *o)
{
	*(float4 *)p = make_float4(o[0], o[1], o[2], o[3]);
	*(float4 *)(p + 4) = make_float4(o[4], o[5], o[6], o[7]);
}
// a layer norm's outputs at y + at of the 8 values v (of columns with weights w[8], biases b[8])
__device__ __forceinline__ void ln8_norm_store(void *y, i64 at, const float *v, const float *w, const float *b, float mean,
					       float rstd)
{
	float ww[8], bb[8], o[8];
	ln8_get(ww, w);
	ln8_get(bb, b);
	for (int e = 0; e < 8; e++)
		o[e] = (v[e] - mean) * rstd * ww[e] + bb[e];
	ln8_store(y, at, o);
}
// the row's mean and 1/std, as row_moments: the mean first, then the squares about it
__device__ __forceinline__ void ln8_moments(const void *x, i64 row, i64 D, float eps, float *mean, float *rstd)
{
	float s = 0, q = 0;
	ln8_each(x, row, D, [&](i64, const float *v) {
		for (int e = 0; e < 8; e++)
			s += v[e];
	});
	float m = warp_sum(s) / (float)D;
	ln8_each(x, row, D, [&](i64, const float *v) {
		for (int e = 0; e < 8; e++)
			q += (v[e] - m) * (v[e] - m);
	});
	*mean = m;
	*rstd = rsqrtf(warp_sum(q) / (float)D + eps);
}

// A layernorm backward's row statistics from four sums over the row about x0 = its first
// element (of x - x0, its square, g w and g w (x - x0); so that E[(x - x0)^2] - E[x - x0]^2
// does not cancel as E[x^2] - E[x]^2 would where the mean is large against the spread):
// the mean, 1/std, and the means of g w and of g w xhat, by sum (g w (x - mean)) =
// sum (g w (x - x0)) - (mean - x0) sum (g w)
__device__ __forceinline__ void ln_bwd_moments(float x0, float s1, float s2, float a, float b, i64 D, float eps,
					       float *mean, float *rstd, float *sg, float *sgx)
{
	s1 /= (float)D, s2 /= (float)D;
	*mean = x0 + s1;
	*rstd = rsqrtf(fmaxf(s2 - s1 * s1, 0.0f) + eps);
	*sgx = (b - s1 * a) * *rstd / (float)D;
	*sg = a / (float)D;
}
// ... those four sums' terms of 8 columns (values v, gradients g, weights ww) added into
// s[4] = {s1, s2, a, b}: every kernel below adds them in this order
__device__ __forceinline__ void ln8_bwd_add(const float *v, const float *g, const float *ww, float x0, float *s)
{
	for (int e = 0; e < 8; e++) {
		float c = v[e] - x0, gw = g[e] * ww[e];
		s[0] += c, s[1] += c * c, s[2] += gw, s[3] += gw * c;
	}
}
// dx of 8 columns into o (a: the residual's gradient added, or zeros), and the column sums'
// terms added into t: of g xhat, of g, of dx (f32, before its rounding)
__device__ __forceinline__ void ln8_bwd_dx(const float *v, const float *g, const float *ww, const float *a, float mean,
					   float rstd, float sg, float sgx, float *o, float (*t)[8])
{
	for (int e = 0; e < 8; e++) {
		float xh = (v[e] - mean) * rstd;
		o[e] = rstd * (g[e] * ww[e] - sg - xh * sgx) + a[e];
		t[0][e] += g[e] * xh, t[1][e] += g[e], t[2][e] += o[e];
	}
}
// ... those four sums taken in one pass, a warp the row (ln8_ok's rows)
__device__ __forceinline__ void ln8_bwd_sums(const void *dy, const void *x, const float *w, i64 row, i64 D, float eps,
					     float *mean, float *rstd, float *sg, float *sgx)
{
	float x0 = bf2f(((const bf16 *)x)[row * D]), s[4] = {0, 0, 0, 0};
	ln8_each(x, row, D, [&](i64 j, const float *v) {
		float g[8], ww[8];
		ln8_load(g, dy, row * D + j);
		ln8_get(ww, w + j);
		ln8_bwd_add(v, g, ww, x0, s);
	});
	ln_bwd_moments(x0, warp_sum(s[0]), warp_sum(s[1]), warp_sum(s[2]), warp_sum(s[3]), D, eps, mean, rstd, sg, sgx);
}

// A row of ln8_ok's rows held in registers, NC chunks of 16 bytes a lane: chunk c of lane l
// is columns 8 l + 256 c .. + 7 (zeros past D, never stored). All of a row's loads are in
// flight at once, and the passes over it (sums, then outputs) read registers, not L1,
// where the loops above issue a row's loads a chunk at a time, each behind the last's use
// (124M: the one-pass backward 1.60 -> 1.35 ms a step, the forward 0.62 -> 0.58;
// docs/perf-notes.md, thirteenth sitting). LNR_MAX chunks: rows of up to 2,048.
#define LNR_MAX 8
template <int NC>
__device__ __forceinline__ void lnr_load(uint4 (&u)[NC], const void *x, i64 row, i64 D)
{
	i64 j0 = threadIdx.x % 32 * 8;
#pragma unroll
	for (int c = 0; c < NC; c++)
		u[c] = ln8_raw(x, row * D + j0 + 256 * c, j0 + 256 * c < D);
}
// f(c, j, v) for each of this lane's chunks c inside the row: columns j .. j + 7, values v
template <int NC, typename F>
__device__ __forceinline__ void lnr_each(const uint4 (&u)[NC], i64 D, F f)
{
	i64 j0 = threadIdx.x % 32 * 8;
#pragma unroll
	for (int c = 0; c < NC; c++)
		if (j0 + 256 * c < D) {
			float v[8];
			ln8_unpack(u[c], v);
			f(c, j0 + 256 * c, v);
		}
}
// k_layernorm's row from registers: the same sums in the same order as ln8_moments (the
// same bits), one read of x
template <int NC>
__device__ __forceinline__ void lnr_layernorm(const void *x, const float *w, const float *b, void *y, i64 row, i64 D,
					      float eps)
{
	uint4 u[NC];
	lnr_load<NC>(u, x, row, D);
	float s = 0, q = 0;
	lnr_each<NC>(u, D, [&](int, i64, const float *v) {
		for (int e = 0; e < 8; e++)
			s += v[e];
	});
	float mean = warp_sum(s) / (float)D;
	lnr_each<NC>(u, D, [&](int, i64, const float *v) {
		for (int e = 0; e < 8; e++)
			q += (v[e] - mean) * (v[e] - mean);
	});
	float rstd = rsqrtf(warp_sum(q) / (float)D + eps);
	lnr_each<NC>(u, D, [&](int, i64 j, const float *v) {
		ln8_norm_store(y, row * D + j, v, w + j, b + j, mean, rstd);
	});
}

#define LNB_THREADS 512
// A warp's N values a lane (N a power of 2, at most 32) summed over its lanes by halves: at
// each step a lane keeps the half of its values that its partner (the lane differing in bit
// O) does not, adding the partner's half; once one is left, the partners' are added. Lane l
// ends with the warp's sum of value l / (32 / N): 8 + 4 + 2 + 1 + 1 shuffles for 16
// values, where a warp_sum of each would take 80. Call with O = 16.
template <int N, int O>
__device__ __forceinline__ void lnb_halve(float *s, int lane)
{
	if constexpr (N > 1) {
		bool upper = lane & O;
#pragma unroll
		for (int i = 0; i < N / 2; i++) {
			float keep = upper ? s[i + N / 2] : s[i], send = upper ? s[i] : s[i + N / 2];
			s[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
		}
	} else {
		s[0] += __shfl_xor_sync(0xffffffffu, s[0], O);
	}
	if constexpr (O > 1)
		lnb_halve<(N > 1 ? N / 2 : 1), O / 2>(s, lane);
}
// The layernorm backward in one pass, a block a band of rows and a thread 8 columns of
// every row of it (columns 8 t .. 8 t + 7). bf16 dy, x, dx and add (the residual's gradient
// added, or NULL), D a multiple of 8 up to 8 LNB_THREADS, 16-byte aligned (ln8_ok). dx as
// k_layernorm_bwd writes it, and as it goes the column sums k_norm_colsum takes in a second
// pass: of dy (x - mean) rstd, of dy, and (sums 3) of dx (f32, before its rounding to bf16:
// the bias gradient of the linear whose output gradient that is). They stay in the thread's
// registers for the whole band, 24 of them, where a warp a row holds D / 32 a lane for each
// (at 1,536: 144 registers, or 18 KB of shared memory a warp, which left 8 warps an SM:
// thirteenth sitting). The price is each row's four sums (ln8_bwd_sums's, about the row's
// first element) taken across the block, LNB_ROWS rows at a time: each warp's partial sums
// by lnb_halve, then added over the warps in warp order through shared memory, two
// barriers a LNB_ROWS rows (the teams of warps of the twelfth sitting waited at one a
// row). Those rows' loads are all in flight before the first barrier (128 registers; 2
// rows, 95, ran no faster: fifteenth sitting). The band's sums go to part[k][band][D],
// written by the threads that own the columns; k_parts_finish adds the bands in order (the
// same bits every run). Grid R bands, blockDim 32 ceil(D / 256).
#define LNB_ROWS 4
// LNB_ROWS rows' x, dy and add (zeros past r1 or without add) from g0, and each row's first
// element of x (lnb_layernorm_bwd's; ABL & 4: none loaded, zeros)
template <int ABL = 0>
__device__ __forceinline__ void lnb_load(uint4 *xr, uint4 *gr, uint4 *ar, float *x0, const void *x, const void *dy,
					 const void *add, i64 g0, i64 r1, i64 D, i64 j, bool mine)
{
#pragma unroll
	for (int q = 0; q < LNB_ROWS; q++) {
		i64 row = g0 + q;
		bool ok = mine && row < r1 && !(ABL & 4);
		xr[q] = ln8_raw(x, row * D + j, ok);
		gr[q] = ln8_raw(dy, row * D + j, ok);
		ar[q] = ln8_raw(add, row * D + j, ok && add);
		x0[q] = row < r1 && !(ABL & 4) ? bf2f(((const bf16 *)x)[row * D]) : 0.0f;
	}
}
// PF (k_layernorm_bwd_pf): the next group's loads issued before this group's barriers, so
// that they land while the block waits there and writes this group's dx. ABL
// (k_layernorm_bwd_abl_N, MGL_NORM_BWD_ABL=N: for timing, its results wrong): one part left
// out, to measure what it adds: 1 the row sums across the block (no shared memory, no
// barriers: each row's mean taken as its first element, 1/std as 1), 2 the stores of dx, 4 the loads (zeros instead)
template <bool PF, int ABL = 0>
__device__ __forceinline__ void lnb_layernorm_bwd(const void *dy, const void *x, const float *w, void *dx,
						  const void *add, float *part, int sums, i64 M, i64 D, float eps)
{
	__shared__ float red[LNB_THREADS / 32][4 * LNB_ROWS], tot[4 * LNB_ROWS];   // [warp][value], [value]
	int W = blockDim.x / 32, wp = threadIdx.x / 32, lane = threadIdx.x % 32;
	i64 j = threadIdx.x * 8;
	bool mine = j < D;
	i64 band = (M + gridDim.x - 1) / gridDim.x, r0 = blockIdx.x * band, r1 = min(M, r0 + band);
	float t[3][8] = {{0}}, ww[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	if (mine)
		ln8_get(ww, w + j);
	uint4 xr[LNB_ROWS], gr[LNB_ROWS], ar[LNB_ROWS];
	float x0[LNB_ROWS];
	if (PF)
		lnb_load<ABL>(xr, gr, ar, x0, x, dy, add, r0, r1, D, j, mine);
	for (i64 g0 = r0; g0 < r1; g0 += LNB_ROWS) {
		float s[4 * LNB_ROWS];
		if (!PF)
			lnb_load<ABL>(xr, gr, ar, x0, x, dy, add, g0, r1, D, j, mine);
#pragma unroll
		for (int q = 0; q < LNB_ROWS; q++) {
			float v[8], g[8];
			ln8_unpack(xr[q], v);
			ln8_unpack(gr[q], g);
			s[4 * q] = s[4 * q + 1] = s[4 * q + 2] = s[4 * q + 3] = 0;
			if (mine)
				ln8_bwd_add(v, g, ww, x0[q], s + 4 * q);
		}
		uint4 nx[PF ? LNB_ROWS : 1], ng[PF ? LNB_ROWS : 1], na[PF ? LNB_ROWS : 1];
		float n0[PF ? LNB_ROWS : 1];
		if (PF)
			lnb_load<ABL>(nx, ng, na, n0, x, dy, add, g0 + LNB_ROWS, r1, D, j, mine);
		if (!(ABL & 1)) {
			lnb_halve<4 * LNB_ROWS, 16>(s, lane);
			constexpr int per = 32 / (4 * LNB_ROWS);   // lanes holding each value's sum
			if (lane % per == 0)
				red[wp][lane / per] = s[0];
			__syncthreads();
			if (threadIdx.x < 4 * LNB_ROWS) {
				float a = 0;
				for (int k = 0; k < W; k++)
					a += red[k][threadIdx.x];
				tot[threadIdx.x] = a;
			}
			__syncthreads();
		}
#pragma unroll
		for (int q = 0; q < LNB_ROWS; q++) {
			i64 row = g0 + q;
			float mean, rstd, sg, sgx;
			if (ABL & 1)   // (a finite stand-in: the sums' zeros would give 1 / sqrt(eps))
				mean = x0[q], rstd = 1.0f, sg = sgx = 0.0f;
			else
				ln_bwd_moments(x0[q], tot[4 * q], tot[4 * q + 1], tot[4 * q + 2], tot[4 * q + 3], D, eps, &mean,
					       &rstd, &sg, &sgx);
			if (!mine || row >= r1)
				continue;
			float v[8], g[8], a[8], o[8];
			ln8_unpack(xr[q], v);
			ln8_unpack(gr[q], g);
			ln8_unpack(ar[q], a);   // (zeros without add)
			ln8_bwd_dx(v, g, ww, a, mean, rstd, sg, sgx, o, t);
			if (!(ABL & 2))
				ln8_store(dx, row * D + j, o);
		}
		if (PF)   // (tot is written again only past the next group's first barrier, which every
			  // thread reaches after its reads of it here)
#pragma unroll
			for (int q = 0; q < LNB_ROWS; q++)
				xr[q] = nx[q], gr[q] = ng[q], ar[q] = na[q], x0[q] = n0[q];
	}
	if (mine)
#pragma unroll
		for (int k = 0; k < 3; k++) {
			if (k >= sums)
				break;
			ln8_put(part + (k * gridDim.x + blockIdx.x) * D + j, t[k]);
		}
}

// A generic pointer into shared memory as a shared-state-space address (for PTX operands)
__device__ __forceinline__ unsigned fa_smem(const void *p)
{
	unsigned a;
	asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
	return a;
}
#if __CUDA_ARCH__ >= 900
// (sm_90: the flash kernels' TMA copies complete on these)
// an mbarrier in shared memory: init (count arrivals a phase), the arrival that also expects
// bytes of TMA copies, and the wait for the phase of the given parity to complete
__device__ __forceinline__ void fa_mbar_init(unsigned long long *bar, unsigned count)
{
	asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(fa_smem(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void fa_mbar_expect(unsigned long long *bar, unsigned bytes)
{
	asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(fa_smem(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void fa_mbar_wait(unsigned long long *bar, unsigned parity)
{
	unsigned done;
	do
		asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
			     : "=r"(done)
			     : "r"(fa_smem(bar)), "r"(parity)
			     : "memory");
	while (!done);
}
// the two mbarriers at bars (one arrival a phase: fa_tma_pair's), ready before any thread
// waits on them
__device__ __forceinline__ void fa_mbar_init2(unsigned long long *bars)
{
	if (threadIdx.x == 0) {
		fa_mbar_init(&bars[0], 1);
		fa_mbar_init(&bars[1], 1);
		asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
	}
	__syncthreads();
}
#endif

extern "C" {

__global__ void k_layernorm(const void *x, int xdt, const float *w, const float *b, void *y, int ydt, i64 M, i64 D, float eps)
{
	i64 row = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32;
	if (row >= M)
		return;
	float mean, rstd;
	if (ln8_ok(D, xdt, ydt, ydt, x, y, w, b, x)) {
		if (D <= 256 * LNR_MAX) {
			lnr_layernorm<LNR_MAX>(x, w, b, y, row, D, eps);
			return;
		}
		ln8_moments(x, row, D, eps, &mean, &rstd);
		ln8_each(x, row, D, [&](i64 j, const float *v) {
			ln8_norm_store(y, row * D + j, v, w + j, b + j, mean, rstd);
		});
		return;
	}
	row_moments(x, xdt, row, D, eps, &mean, &rstd);
	for (i64 k = threadIdx.x % 32; k < D; k += 32)
		st(y, ydt, row * D + k, (ld(x, xdt, row * D + k) - mean) * rstd * w[k] + b[k]);
}

// (dy, x, w) -> dx, a warp a row, plus add (like dx; NULL: none: the residual's gradient
// where the plan fuses the accumulate after it); the row's mean and 1/std into stats[2 row],
// for dw and db (k_norm_colsum)
__global__ void k_layernorm_bwd(const void *dy, int gdt, const void *x, int xdt, const float *w, void *dx, int dxdt,
				const void *add, float *stats, i64 M, i64 D, float eps)
{
	i64 row = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32;
	if (row >= M)
		return;
	float mean, rstd;
	if (ln8_ok(D, xdt, gdt, dxdt, x, dy, dx, w, add ? add : w)) {
		float sg, sgx;
		ln8_bwd_sums(dy, x, w, row, D, eps, &mean, &rstd, &sg, &sgx);
		ln8_each(x, row, D, [&](i64 j, const float *v) {
			float g[8], ww[8], o[8], a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
			ln8_load(g, dy, row * D + j);
			ln8_get(ww, w + j);
			if (add)
				ln8_load(a, add, row * D + j);
			for (int e = 0; e < 8; e++)
				o[e] = rstd * (g[e] * ww[e] - sg - (v[e] - mean) * rstd * sgx) + a[e];
			ln8_store(dx, row * D + j, o);
		});
		if (threadIdx.x % 32 == 0)
			stats[2 * row] = mean, stats[2 * row + 1] = rstd;
		return;
	}
	row_moments(x, xdt, row, D, eps, &mean, &rstd);
	float sg = 0, sgx = 0;
	for (i64 k = threadIdx.x % 32; k < D; k += 32) {
		float g = ld(dy, gdt, row * D + k), xh = (ld(x, xdt, row * D + k) - mean) * rstd;
		sg += g * w[k];
		sgx += g * w[k] * xh;
	}
	sg = warp_sum(sg) / (float)D;
	sgx = warp_sum(sgx) / (float)D;
	for (i64 k = threadIdx.x % 32; k < D; k += 32) {
		float g = ld(dy, gdt, row * D + k), xh = (ld(x, xdt, row * D + k) - mean) * rstd;
		st(dx, dxdt, row * D + k, rstd * (g * w[k] - sg - xh * sgx) + (add ? ld(add, dxdt, row * D + k) : 0.0f));
	}
	if (threadIdx.x % 32 == 0)
		stats[2 * row] = mean, stats[2 * row + 1] = rstd;
}

// lnb_layernorm_bwd on bf16 rows of up to 4,096 (the host launches it on no wider rows:
// cuda_norm_one_pass). At 1.2b it took the layer norms' backward from 7.7 to 6.7 ms a step
// against two passes; at 124M it ran as fast as the warp-a-row kernel it replaced, and G = 2
// no faster than 4 (docs/perf-notes.md, fifteenth sitting)
__global__ void __launch_bounds__(LNB_THREADS) k_layernorm_bwd_block(const void *dy, const void *x, const float *w,
								      void *dx, const void *add, float *part, int sums,
								      i64 M, i64 D, float eps)
{
	lnb_layernorm_bwd<false>(dy, x, w, dx, add, part, sums, M, D, eps);
}
// ... with the next rows' loads in flight through each group's barriers, on rows of up to
// 1,536 (192 threads; the default there: runtime/cuda/ops.c, 0.03-0.09 ms a step quicker,
// perf-notes' twentieth sitting): two blocks an SM, as k_layernorm_bwd_block has at 1,536,
// with the registers that holds (170); and (ABL) its ablations, for timing (runtime/cuda/ops.c,
// MGL_NORM_BWD_ABL)
#define LAYERNORM_BWD_PF(NAME, ABL)                                                                                  \
	__global__ void __launch_bounds__(192, 2) NAME(const void *dy, const void *x, const float *w, void *dx,      \
						       const void *add, float *part, int sums, i64 M, i64 D, float eps) \
	{                                                                                                            \
		lnb_layernorm_bwd<true, ABL>(dy, x, w, dx, add, part, sums, M, D, eps);                              \
	}
LAYERNORM_BWD_PF(k_layernorm_bwd_pf, 0)
LAYERNORM_BWD_PF(k_layernorm_bwd_abl_1, 1)
LAYERNORM_BWD_PF(k_layernorm_bwd_abl_2, 2)
LAYERNORM_BWD_PF(k_layernorm_bwd_abl_4, 4)

// a warp a row: 1 / root mean square of x[D]
__device__ float row_rms(const void *x, int dt, i64 row, i64 D, float eps)
{
	float q = 0;
	for (i64 k = threadIdx.x % 32; k < D; k += 32) {
		float v = ld(x, dt, row * D + k);
		q += v * v;
	}
	return rsqrtf(warp_sum(q) / (float)D + eps);
}

__global__ void k_rmsnorm(const void *x, int xdt, const float *w, void *y, int ydt, i64 M, i64 D, float eps)
{
	i64 row = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32;
	if (row >= M)
		return;
	float r = row_rms(x, xdt, row, D, eps);
	for (i64 k = threadIdx.x % 32; k < D; k += 32)
		st(y, ydt, row * D + k, ld(x, xdt, row * D + k) * r * w[k]);
}

// (dy, x, w) -> dx, a warp a row, plus add as k_layernorm_bwd's; 0 and the row's 1/rms into
// stats[2 row], for dw (k_norm_colsum: x times 1/rms is x - 0 times it)
__global__ void k_rmsnorm_bwd(const void *dy, int gdt, const void *x, int xdt, const float *w, void *dx, int dxdt,
			      const void *add, float *stats, i64 M, i64 D, float eps)
{
	i64 row = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32;
	if (row >= M)
		return;
	float r = row_rms(x, xdt, row, D, eps), sgx = 0;
	for (i64 k = threadIdx.x % 32; k < D; k += 32)
		sgx += ld(dy, gdt, row * D + k) * w[k] * ld(x, xdt, row * D + k);
	float m = warp_sum(sgx) / (float)D * r * r * r;
	for (i64 k = threadIdx.x % 32; k < D; k += 32)
		st(dx, dxdt, row * D + k,
		   r * ld(dy, gdt, row * D + k) * w[k] - m * ld(x, xdt, row * D + k) + (add ? ld(add, dxdt, row * D + k) : 0.0f));
	if (threadIdx.x % 32 == 0)
		stats[2 * row] = 0.0f, stats[2 * row + 1] = r;
}

__global__ void k_gelu(const void *x, int xdt, void *y, int ydt, i64 n)
{
	FOR_EACH(i, n) st(y, ydt, i, gelu_f(ld(x, xdt, i)));
}

// ... on bf16 x and y, 16-byte aligned, n a multiple of 8: 8 elements a thread by 16-byte
// loads and stores (the same values): fc's GELU where its GEMM applies only the bias
__global__ void k_gelu8(const void *x, void *y, i64 n)
{
	for (i64 i = (blockIdx.x * (i64)blockDim.x + threadIdx.x) * 8; i < n; i += (i64)gridDim.x * blockDim.x * 8) {
		float v[8];
		ln8_load(v, x, i);
		for (int e = 0; e < 8; e++)
			v[e] = gelu_f(v[e]);
		ln8_store(y, i, v);
	}
}

__global__ void k_gelu_bwd(const void *dy, int gdt, const void *x, int xdt, void *dx, int dxdt, i64 n)
{
	FOR_EACH(i, n) st(dx, dxdt, i, gelu_b(ld(dy, gdt, i), ld(x, xdt, i)));
}

__global__ void k_tanh(const void *x, int xdt, void *y, int ydt, i64 n)
{
	FOR_EACH(i, n) st(y, ydt, i, tanhf(ld(x, xdt, i)));
}

__global__ void k_tanh_bwd(const void *dy, int gdt, const void *y, int ydt, void *dx, int dxdt, i64 n)
{
	FOR_EACH(i, n) st(dx, dxdt, i, tanh_b(ld(dy, gdt, i), ld(y, ydt, i)));
}

// y = x * keep / (1 - p); element (o, k, i) of this rank's [outer, n, inner] part is
// (o, start + k, i) of the whole [outer, whole, inner] tensor
__global__ void k_dropout(const void *x, int xdt, void *y, int ydt, i64 outer, i64 n, i64 inner, i64 whole, i64 start,
			  double p, unsigned seed, const Run *run)
{
	FOR_EACH(l, outer * n * inner) {
		i64 o = l / (n * inner), k = l / inner % n, i = l % inner;
		st(y, ydt, l, drop(ld(x, xdt, l), (o * whole + start + k) * inner + i, seed, p, run));
	}
}

// Rotary embeddings on x [B, S, H * 2 half], a thread a pair: features i and i + half of a
// head turned by s * theta^(-i / half) at position s (angles in double, as the cpu does);
// dir -1 turns them back (rope_bwd)
__global__ void k_rope(const void *x, int xdt, void *y, int ydt, i64 B, i64 S, i64 H, i64 half, double theta, int dir)
{
	FOR_EACH(l, B * S * H * half) {
		i64 i = l % half, h = l / half % H, s = l / (half * H) % S, b = l / (half * H * S);
		double sn, cs;
		sincos((double)s * pow(theta, -(double)i / (double)half), &sn, &cs);
		i64 o = (b * S + s) * H * 2 * half + h * 2 * half + i;
		float x1 = ld(x, xdt, o), x2 = ld(x, xdt, o + half), c = (float)cs, n = (float)(dir * sn);
		st(y, ydt, o, x1 * c - x2 * n);
		st(y, ydt, o + half, x2 * c + x1 * n);
	}
}

// out = a + b, b (or a) broadcast over leading dimensions: index i % size
__global__ void k_add(const void *a, int adt, i64 na, const void *b, int bdt, i64 nb, void *out, int odt, i64 n)
{
	FOR_EACH(i, n) st(out, odt, i, ld(a, adt, i % na) + ld(b, bdt, i % nb));
}

// Column sums out[N] (+)= x[M, N], in a fixed order (the same bits every run), in one
// launch: part[R, N] = the sums of R bands of rows, a block 32 columns of one band (a thread
// a column and every 8th row, then the 8 in order); the last block of each stripe of 32
// columns to finish (count[stripe], 0 between launches) sums the stripe's R parts, again
// 8 threads a column each taking every 8th part, then the 8 in order: which block is last
// changes from run to run, the order of the sums does not (CUDA's threadFenceReduction
// sample counts blocks so). The bias gradients (x = dy) and sum_to (the broadcast's
// leading copies as rows) take them. blockDim (32, 8), grid (ceil(N / 32), R).
__device__ bool colsum_last(unsigned *count)
{
	__shared__ bool last;
	__threadfence();   // this block's part is seen by the block that sums the parts
	__syncthreads();
	if (threadIdx.x == 0 && threadIdx.y == 0) {
		last = atomicAdd(&count[blockIdx.x], 1u) == gridDim.y - 1;
		if (last)
			count[blockIdx.x] = 0;   // for the next launch
	}
	__syncthreads();
	return last;
}

}  // extern "C" (a template)
// out[N] (+)= the sum over R rows of part[R][N], a block 32 columns, its blockDim.y (up to 32)
// rows of threads each adding every blockDim.y-th row in turn, then those partial sums in
// order: the same bits every run for a given blockDim. U > 1 (k_parts_finish's 8): the
// thread's next U rows loaded before any of them is added, in the same order, where one at
// a time each load waits for L2 behind the last add
template <int U = 1>
__device__ void colsum_finish(const float *part, i64 R, i64 N, void *out, int odt, int acc)
{
	__shared__ float s[32][33];
	i64 j = blockIdx.x * 32 + threadIdx.x;
	float a = 0;
	if (j < N) {
		i64 r = threadIdx.y;
		if (U > 1)
			for (; r + (U - 1) * (i64)blockDim.y < R; r += U * (i64)blockDim.y) {
				float v[U];
#pragma unroll
				for (int u = 0; u < U; u++)
					v[u] = __ldcg(part + (r + u * (i64)blockDim.y) * N + j);
#pragma unroll
				for (int u = 0; u < U; u++)
					a += v[u];
			}
		for (; r < R; r += blockDim.y)
			a += __ldcg(part + r * N + j);   // from L2: other SMs wrote them
	}
	s[threadIdx.y][threadIdx.x] = a;
	__syncthreads();
	if (threadIdx.y == 0 && j < N) {
		for (int k = 1; k < (int)blockDim.y; k++)
			a += s[k][threadIdx.x];
		st(out, odt, j, acc ? ld(out, odt, j) + a : a);
	}
	__syncthreads();   // s is free for a second finish
}
extern "C" {

// Whether a column sum may read 8 columns a thread by 16-byte loads (colsum_vec_rows):
// bf16 rows of a multiple of 8, 16-byte aligned
__device__ __forceinline__ bool colsum_vec(const void *x, int xdt, i64 N)
{
	return xdt == DT_BF16 && N % 8 == 0 && (unsigned long long)x % 16 == 0;
}
// The rows a thread takes in colsum_vec's way: its 8 columns j0 .. j0 + 7 of the block's
// 32 (lanes 4 column groups by 8 rows, the 8 warps the next 8 rows: 64 rows at a time), the
// first of its rows rl (0 .. 63); its sums go to t[rl][column], summed down t in order
__device__ __forceinline__ void colsum_vec_rows(i64 *j0, int *rl)
{
	*j0 = blockIdx.x * 32 + threadIdx.x % 4 * 8;
	*rl = threadIdx.x / 4 + 8 * threadIdx.y;
}

// a block's sum of its band of rows of x[M, N], its column j (of threadIdx.y's 8th rows, then the 8)
__global__ void __launch_bounds__(256, 5) k_colsum(const void *x, int xdt, float *part, unsigned *count, void *out, int odt, int acc, i64 M, i64 N)
{
	__shared__ float s[8][33], t[64][33];
	i64 j = blockIdx.x * 32 + threadIdx.x, band = (M + gridDim.y - 1) / gridDim.y;
	i64 r0 = blockIdx.y * band, r1 = min(M, r0 + band);
	if (colsum_vec(x, xdt, N)) {
		i64 j0;
		int rl;
		colsum_vec_rows(&j0, &rl);
		float a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, v[2][8];
		if (j0 < N)   // 2 rows' loads in flight, added in row order as one at a time would
			for (i64 i = r0 + rl; i < r1; i += 2 * 64) {
				for (int u = 0; u < 2; u++)
					if (i + u * 64 < r1)
						ld8(x, DT_BF16, (i + u * 64) * N + j0, v[u]);
				for (int u = 0; u < 2; u++)
					for (int e = 0; e < 8 && i + u * 64 < r1; e++)
						a[e] += v[u][e];
			}
		for (int e = 0; e < 8; e++)
			t[rl][threadIdx.x % 4 * 8 + e] = a[e];
		__syncthreads();
		if (threadIdx.y == 0 && j < N) {
			float sum = 0;
			for (int k = 0; k < 64; k++)
				sum += t[k][threadIdx.x];
			part[blockIdx.y * N + j] = sum;
		}
	} else {
		float a = 0;
		if (j < N)
			for (i64 i = r0 + threadIdx.y; i < r1; i += 8)
				a += ld(x, xdt, i * N + j);
		s[threadIdx.y][threadIdx.x] = a;
		__syncthreads();
		if (threadIdx.y == 0 && j < N) {
			for (int k = 1; k < 8; k++)
				a += s[k][threadIdx.x];
			part[blockIdx.y * N + j] = a;
		}
	}
	if (colsum_last(count))
		colsum_finish(part, gridDim.y, N, out, odt, acc);
}

// Column sums out[N] (+)= x[M, N] over a few rows (M <= 64: column_sums' one band, as
// sum_to's leading copies, a batch of rows over S D columns), a thread a column, the rows in
// order: no partial sums, no counter, no second pass (k_colsum took 0.23 ms for the 50 MB
// of 1.2b's position gradient, its 49,152 blocks each a kilobyte and an atomic; this, under
// 0.06 ms)
__global__ void k_colsum_direct(const void *x, int xdt, void *out, int odt, int acc, i64 M, i64 N)
{
	FOR_EACH(j, N) {
		float a = 0;
#pragma unroll 8
		for (i64 i = 0; i < M; i++)
			a += ld(x, xdt, i * N + j);
		st(out, odt, j, acc ? ld(out, odt, j) + a : a);
	}
}

// The norms' weight and bias gradients as k_colsum's column sums: of dy (x - mean) rstd
// into dw, and of dy into db (if db is not NULL), with mean and rstd of each row from
// stats (k_layernorm_bwd, k_rmsnorm_bwd); and, if dbo is not NULL, of the norm's input
// gradient dxo (as k_layernorm_bwd wrote it, the residual's added) into dbo: the bias
// gradient of the linear whose output gradient that is (plan.h, mgl_norm_add_group_ok).
// part[R, D] for dw, then part[R, D] for db and for dbo. blockDim (32, 8), grid
// (ceil(D / 32), R).
__global__ void k_norm_colsum(const void *dy, int gdt, const void *x, int xdt, const float *stats, float *part,
			      unsigned *count, float *dw, int wacc, float *db, int bacc, const void *dxo, int odt, float *dbo,
			      int oacc, i64 M, i64 D)
{
	__shared__ float s[3][8][33], t[3][64][33];
	i64 j = blockIdx.x * 32 + threadIdx.x, band = (M + gridDim.y - 1) / gridDim.y;
	i64 r0 = blockIdx.y * band, r1 = min(M, r0 + band);
	int sums = dbo ? 3 : 2;
	float *out[3] = {dw, db, dbo};
	int acc[3] = {wacc, bacc, oacc};
	if (colsum_vec(dy, gdt, D) && colsum_vec(x, xdt, D) && (!dbo || colsum_vec(dxo, odt, D))) {
		i64 j0;
		int rl;
		colsum_vec_rows(&j0, &rl);
		float a[3][8] = {{0}}, g[8], v[8], o[8];
		if (j0 < D)
			for (i64 i = r0 + rl; i < r1; i += 64) {
				ld8(dy, DT_BF16, i * D + j0, g);
				ld8(x, DT_BF16, i * D + j0, v);
				if (dbo)
					ld8(dxo, DT_BF16, i * D + j0, o);
				float mean = stats[2 * i], rstd = stats[2 * i + 1];
				for (int e = 0; e < 8; e++)
					a[0][e] += g[e] * (v[e] - mean) * rstd, a[1][e] += g[e], a[2][e] += dbo ? o[e] : 0;
			}
		for (int k = 0; k < sums; k++)
			for (int e = 0; e < 8; e++)
				t[k][rl][threadIdx.x % 4 * 8 + e] = a[k][e];
		__syncthreads();
		if (threadIdx.y == 0 && j < D)
			for (int k = 0; k < sums; k++) {
				float sum = 0;
				for (int r = 0; r < 64; r++)
					sum += t[k][r][threadIdx.x];
				part[(k * gridDim.y + blockIdx.y) * D + j] = sum;
			}
	} else {
		float a[3] = {0, 0, 0};
		if (j < D)
			for (i64 i = r0 + threadIdx.y; i < r1; i += 8) {
				float g = ld(dy, gdt, i * D + j);
				a[0] += g * (ld(x, xdt, i * D + j) - stats[2 * i]) * stats[2 * i + 1];
				a[1] += g;
				a[2] += dbo ? ld(dxo, odt, i * D + j) : 0;
			}
		for (int k = 0; k < 3; k++)
			s[k][threadIdx.y][threadIdx.x] = a[k];
		__syncthreads();
		if (threadIdx.y == 0 && j < D)
			for (int k = 0; k < sums; k++) {
				for (int r = 1; r < 8; r++)
					a[k] += s[k][r][threadIdx.x];
				part[(k * gridDim.y + blockIdx.y) * D + j] = a[k];
			}
	}
	if (colsum_last(count))
		for (int k = 0; k < sums; k++)
			if (out[k])
				colsum_finish(part + k * gridDim.y * D, gridDim.y, D, out[k], DT_F32, acc[k]);
}

// out_k[D] (+)= the sum over the R bands of part[k][R][D] (k_layernorm_bwd_block's), for
// the k of blockIdx.y whose out_k is not NULL: into the weight's, the bias's and the next
// linear's bias gradients (f32, acc_k: added to what they hold). Grid (ceil(D / 32), 3),
// blockDim (32, 32): each thread R / 32 of the loads in turn, which L2's latency paces (32
// rows of threads measured 0.6-1.2 ms a step quicker than 8: perf-notes, seventeenth sitting),
// 8 of them issued together and then added in order (0.03-0.08 ms a step quicker than one
// behind each add, the same sums: twentieth sitting).
__global__ void k_parts_finish(const float *part, i64 R, i64 D, float *o0, int a0, float *o1, int a1, float *o2, int a2)
{
	int k = blockIdx.y;
	float *out = k == 0 ? o0 : k == 1 ? o1 : o2;
	if (out)
		colsum_finish<8>(part + k * R * D, R, D, out, DT_F32, k == 0 ? a0 : k == 1 ? a1 : a2);
}

// Attention, a warp per (batch, head, query): keys in order with an online softmax, the
// output accumulated in registers (dh <= 256: 8 values a lane). lse kept for the backward.
__global__ void k_attention(const bf16 *q, const bf16 *k, const bf16 *v, const int *mask, bf16 *o, float *lse, i64 B,
			    i64 S, i64 H, i64 dh, int causal)
{
	i64 w = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32;
	int lane = threadIdx.x % 32;
	if (w >= B * H * S)
		return;
	i64 i = w % S, h = w / S % H, b = w / (S * H), D = H * dh;
	const bf16 *qi = q + (b * S + i) * D + h * dh;
	float scale = rsqrtf((float)dh), acc[8] = {0}, qv[8];
	for (int t = 0; t < 8; t++)
		qv[t] = lane + 32 * t < dh ? bf2f(qi[lane + 32 * t]) : 0.0f;
	float mx = -INF, sum = 0;
	i64 nk = causal ? i + 1 : S;
	for (i64 j = 0; j < nk; j++) {
		if (mask && !mask[b * S + j])
			continue;
		const bf16 *kj = k + (b * S + j) * D + h * dh, *vj = v + (b * S + j) * D + h * dh;
		float s = 0;
		for (int t = 0; t < 8; t++)
			if (lane + 32 * t < dh)
				s += qv[t] * bf2f(kj[lane + 32 * t]);
		s = warp_sum(s) * scale;
		float nm = fmaxf(mx, s), c = __expf(mx - nm), pj = __expf(s - nm);
		sum = sum * c + pj;
		for (int t = 0; t < 8; t++)
			if (lane + 32 * t < dh)
				acc[t] = acc[t] * c + pj * bf2f(vj[lane + 32 * t]);
		mx = nm;
	}
	bf16 *oi = o + (b * S + i) * D + h * dh;
	for (int t = 0; t < 8; t++)
		if (lane + 32 * t < dh)
			oi[lane + 32 * t] = f2bf(sum > 0 ? acc[t] / sum : 0.0f);
	if (lane == 0)
		lse[(b * H + h) * S + i] = sum > 0 ? mx + logf(sum) : -INF;
}

// Backward: a warp per query row; dq in registers, written in rows of ldo elements
// ([B, S, ldo], columns h dh ..: a column slice of a wider buffer where ldo > H dh), dk and
// dv [B, S, H dh] added atomically into fp32 scratch (converted by k_convert_rows afterwards).
__global__ void k_attention_bwd(const bf16 *dy, const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *o,
				const float *lse, const int *mask, bf16 *dq, float *dk, float *dv, i64 B, i64 S, i64 H,
				i64 dh, i64 ldo, int causal)
{
	i64 w = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32;
	int lane = threadIdx.x % 32;
	if (w >= B * H * S)
		return;
	i64 i = w % S, h = w / S % H, b = w / (S * H), D = H * dh, base = (b * S + i) * D + h * dh;
	float L = lse[(b * H + h) * S + i], scale = rsqrtf((float)dh);
	float qv[8], gv[8], dqv[8] = {0}, Di = 0;
	for (int t = 0; t < 8; t++) {
		bool in = lane + 32 * t < dh;
		qv[t] = in ? bf2f(q[base + lane + 32 * t]) : 0.0f;
		gv[t] = in ? bf2f(dy[base + lane + 32 * t]) : 0.0f;
		Di += in ? gv[t] * bf2f(o[base + lane + 32 * t]) : 0.0f;
	}
	Di = warp_sum(Di);
	if (L != -INF) {
		i64 nk = causal ? i + 1 : S;
		for (i64 j = 0; j < nk; j++) {
			if (mask && !mask[b * S + j])
				continue;
			i64 kb = (b * S + j) * D + h * dh;
			float s = 0, dp = 0;
			for (int t = 0; t < 8; t++)
				if (lane + 32 * t < dh) {
					s += qv[t] * bf2f(k[kb + lane + 32 * t]);
					dp += gv[t] * bf2f(v[kb + lane + 32 * t]);
				}
			s = warp_sum(s);
			dp = warp_sum(dp);
			float pj = __expf(s * scale - L), ds = pj * (dp - Di) * scale;
			for (int t = 0; t < 8; t++)
				if (lane + 32 * t < dh) {
					dqv[t] += ds * bf2f(k[kb + lane + 32 * t]);
					atomicAdd(&dk[kb + lane + 32 * t], ds * qv[t]);
					atomicAdd(&dv[kb + lane + 32 * t], pj * gv[t]);
				}
		}
	}
	bf16 *dqi = dq + (b * S + i) * ldo + h * dh;
	for (int t = 0; t < 8; t++)
		if (lane + 32 * t < dh)
			dqi[lane + 32 * t] = f2bf(dqv[t]);
}

__global__ void k_convert(const void *in, int idt, void *out, int odt, i64 n)
{
	FOR_EACH(i, n) st(out, odt, i, ld(in, idt, i));
}

// out[r * ldo + c] = in[r * cols + c]: dense rows [rows, cols] into a column slice of a
// wider buffer [rows, ldo] (ldo >= cols), converted. A block a row (rows past the grid by
// a stride), so no division an element.
__global__ void k_convert_rows(const void *in, int idt, void *out, int odt, i64 rows, i64 cols, i64 ldo)
{
	for (i64 r = blockIdx.x; r < rows; r += gridDim.x)
		for (i64 c = threadIdx.x; c < cols; c += blockDim.x)
			st(out, odt, r * ldo + c, ld(in, idt, r * cols + c));
}

// k_convert_rows's conversion, f32 in, and the column sums of in as read (f32) into
// part[R][cols], R = gridDim.y bands of rows (for k_parts_finish: dq's share of q's bias
// gradient, flash_bwd_wg's part[0]). Grid (ceil(cols / 128), R), blockDim (32, 8): a thread 4
// columns, every 8th row of the band (a 16-byte load and a 4-element store a row), the 8 then
// added in order. cols and ldo multiples of 4, in 16-byte and out 4-element aligned. (A
// column a thread moved dq's 75 MB a layer at 1.95 TB/s at 1.2b; 4 took 0.46 ms less a
// step, twenty-third sitting.)
__global__ void k_convert_rows_sums(const float *in, void *out, int odt, i64 rows, i64 cols, i64 ldo, float *part)
{
	__shared__ float s[8][32][5];
	i64 j = (blockIdx.x * 32 + threadIdx.x) * 4, band = (rows + gridDim.y - 1) / gridDim.y;
	i64 r0 = blockIdx.y * band, r1 = min(rows, r0 + band);
	float a[4] = {0, 0, 0, 0};
	if (j < cols) {
#pragma unroll 4
		for (i64 r = r0 + threadIdx.y; r < r1; r += 8) {
			float4 f = __ldcs((const float4 *)(in + r * cols + j));   // read once: not kept in L2
			float v[4] = {f.x, f.y, f.z, f.w};
			st4(out, odt, r * ldo + j, v);
			for (int e = 0; e < 4; e++)
				a[e] += v[e];
		}
	}
	for (int e = 0; e < 4; e++)
		s[threadIdx.y][threadIdx.x][e] = a[e];
	__syncthreads();
	if (threadIdx.y == 0 && j < cols)
		for (int e = 0; e < 4; e++) {
			for (int k = 1; k < 8; k++)
				a[e] += s[k][threadIdx.x][e];
			part[blockIdx.y * cols + j + e] = a[e];
		}
}

// out[B, inner] = x[B, index, inner]; backward: zeros but at index
__global__ void k_select(const void *x, int xdt, void *out, int odt, i64 B, i64 S, i64 inner, i64 index)
{
	FOR_EACH(i, B * inner) st(out, odt, i, ld(x, xdt, (i / inner * S + index) * inner + i % inner));
}

__global__ void k_select_bwd(const void *dy, int gdt, void *dx, int dxdt, i64 B, i64 S, i64 inner, i64 index)
{
	FOR_EACH(i, B * S * inner) {
		i64 b = i / (S * inner), s = i / inner % S;
		st(dx, dxdt, i, s == index ? ld(dy, gdt, b * inner + i % inner) : 0.0f);
	}
}

// The vocabulary-parallel loss: columns [0, valid) of this rank's N are real. A block a
// row (rows past the grid by a stride).
__global__ void k_vocab_max(const void *z, int zdt, float *mx, i64 M, i64 N, i64 valid)
{
	__shared__ float part[32];
	for (i64 r = blockIdx.x; r < M; r += gridDim.x) {
		float m = -INF;
		row_each(z, zdt, r, N, valid, [&](i64, float x) { m = fmaxf(m, x); });
		m = block_reduce<false>(m, part);
		if (threadIdx.x == 0)
			mx[r] = m;
	}
}

// stats[M, 2]: the sum of exp(z - max) over the row's real columns, and the target's logit
// (0 when another rank holds it)
__global__ void k_vocab_stats(const void *z, int zdt, const int *t, const float *mx, float *stats, i64 M, i64 N,
			      i64 valid, i64 start)
{
	__shared__ float part[32];
	for (i64 r = blockIdx.x; r < M; r += gridDim.x) {
		float s = 0, m = mx[r];
		row_each(z, zdt, r, N, valid, [&](i64, float x) { s += __expf(x - m); });
		s = block_reduce<true>(s, part);
		if (threadIdx.x == 0) {
			i64 col = (i64)t[r] - start;
			stats[2 * r] = s;
			stats[2 * r + 1] = col >= 0 && col < valid ? ld(z, zdt, r * N + col) : 0.0f;
		}
	}
}

// Row r's maximum over its real columns and the sum of exp(z - max) over them, to every
// thread of the block: each thread an online softmax over its share (a running maximum m
// and the sum of exp(z - m), rescaled when m grows: Milakov and Gimelshein, "Online
// normalizer calculation for softmax", 2018), 8 columns a rescale with two 16-byte loads in
// flight where the row is bf16 and N a multiple of 8; then the row's maximum over the block
// and each thread's sum rescaled to it before the block's sum. part: 32 floats of shared.
__device__ void row_max_sum(const void *z, int zdt, i64 r, i64 N, i64 valid, float *part, float *rm, float *rs)
{
	float m = -INF, s = 0;
	if (zdt == DT_BF16 && N % 8 == 0) {
		const uint4 *p = (const uint4 *)((const bf16 *)z + r * N);
		for (i64 c = threadIdx.x; c * 8 < valid; c += 2 * blockDim.x) {
			i64 c2 = c + blockDim.x;
			uint4 u[2] = {p[c], c2 * 8 < valid ? p[c2] : make_uint4(0, 0, 0, 0)};
			for (int h = 0; h < 2; h++) {
				float x[8], cm = -INF;
				unsigned w[4] = {u[h].x, u[h].y, u[h].z, u[h].w};
				for (int e = 0; e < 8; e++) {   // columns past valid count as -inf: exp gives 0
					i64 j = (h ? c2 : c) * 8 + e;
					x[e] = j < valid ? bf2f((bf16)(w[e / 2] >> (e % 2 * 16))) : -INF;
					cm = fmaxf(cm, x[e]);   // (fmaxf passes over NaN: the sum below keeps it)
				}
				float mn = fmaxf(m, cm);
				if (mn == -INF) {   // nothing but -inf (or NaN) so far: no maximum to subtract
					for (int e = 0; e < 8; e++)
						s += x[e] != x[e] ? x[e] : 0.0f;
					continue;
				}
				s *= __expf(m - mn);   // exp(-inf) = 0 at the first
				for (int e = 0; e < 8; e++)
					s += __expf(x[e] - mn);
				m = mn;
			}
		}
	} else {
		row_each(z, zdt, r, N, valid, [&](i64, float x) {
			if (x > m) {
				s = s * __expf(m - x) + 1.0f;   // exp(-inf) = 0 at the first
				m = x;
			} else if (x != -INF) {   // (-inf - -inf would be NaN while m is still -inf)
				s += __expf(x - m);
			}
		});
	}
	*rm = block_reduce<false>(m, part);
	*rs = block_reduce<true>(m == -INF ? s : s * __expf(m - *rm), part);   // (s is 0 there, or NaN: kept)
}

// k_vocab_max and k_vocab_stats in one pass over the logits (the plan's fused group of the
// two: compiler/fuse.c), a block a row (row_max_sum)
__global__ void k_vocab_max_stats(const void *z, int zdt, const int *t, float *mx, float *stats, i64 M, i64 N, i64 valid,
				  i64 start)
{
	__shared__ float part[32];
	for (i64 r = blockIdx.x; r < M; r += gridDim.x) {
		float rm, s;
		row_max_sum(z, zdt, r, N, valid, part, &rm, &s);
		if (threadIdx.x == 0) {
			i64 col = (i64)t[r] - start;
			mx[r] = rm;
			stats[2 * r] = s;
			stats[2 * r + 1] = col >= 0 && col < valid ? ld(z, zdt, r * N + col) : 0.0f;
		}
	}
}

// One block: loss = mean over kept targets, lse for the backward (in f32). A target is kept
// unless it equals ignore (INT64_MIN when the model ignores none: no id equals it).
__global__ void k_vocab_loss(const float *stats, const float *mx, const int *t, float *loss, float *lse, i64 M, i64 ignore)
{
	__shared__ float part[32];
	__shared__ int cnt[32];
	float s = 0;
	int c = 0;
	for (i64 i = threadIdx.x; i < M; i += blockDim.x) {
		float l = mx[i] + logf(stats[2 * i]);
		lse[i] = l;
		if (t[i] != ignore)
			s += l - stats[2 * i + 1], c++;
	}
	s = warp_sum(s);
	for (int o = 16; o > 0; o >>= 1)
		c += __shfl_xor_sync(0xffffffffu, c, o);
	if (threadIdx.x % 32 == 0)
		part[threadIdx.x / 32] = s, cnt[threadIdx.x / 32] = c;
	__syncthreads();
	if (threadIdx.x == 0) {
		float tot = 0;
		int n = 0;
		for (int k = 0; k < (int)(blockDim.x + 31) / 32; k++)
			tot += part[k], n += cnt[k];
		loss[0] = n ? tot / (float)n : 0.0f;
	}
}

// the number of kept targets, for ce_bwd's scale (one block)
__global__ void k_count(const int *t, i64 M, i64 ignore, float *count)
{
	__shared__ int cnt[32];
	int c = 0;
	for (i64 i = threadIdx.x; i < M; i += blockDim.x)
		c += t[i] != ignore;
	for (int o = 16; o > 0; o >>= 1)
		c += __shfl_xor_sync(0xffffffffu, c, o);
	if (threadIdx.x % 32 == 0)
		cnt[threadIdx.x / 32] = c;
	__syncthreads();
	if (threadIdx.x == 0) {
		int n = 0;
		for (int k = 0; k < (int)(blockDim.x + 31) / 32; k++)
			n += cnt[k];
		count[0] = (float)n;
	}
}

// dz's row r: sc exp(z - l) less sc at the target column, zeros past valid (the padding)
// and in a row not kept (its target ignored). Eight at a time (16-byte loads and stores)
// where z and dz are bf16 and N a multiple of 8.
__device__ void row_ce_grad(const void *z, int zdt, i64 r, i64 N, i64 valid, i64 target, bool kept, float sc, float l,
			    void *dz, int dzdt)
{
	i64 base = r * N;
	auto grad = [&](i64 j, float x) { return kept && j < valid ? sc * __expf(x - l) - (j == target ? sc : 0.0f) : 0.0f; };
	if (zdt == DT_BF16 && dzdt == DT_BF16 && N % 8 == 0) {
		const uint4 *zp = (const uint4 *)((const bf16 *)z + base);
		uint4 *dp = (uint4 *)((bf16 *)dz + base);
		for (i64 c = threadIdx.x; c * 8 < N; c += blockDim.x) {
			uint4 u = kept ? zp[c] : make_uint4(0, 0, 0, 0);
			unsigned w[4] = {u.x, u.y, u.z, u.w}, o[4];
			for (int e = 0; e < 4; e++) {
				i64 j = c * 8 + 2 * e;
				float g0 = grad(j, bf2f((bf16)w[e])), g1 = grad(j + 1, bf2f((bf16)(w[e] >> 16)));
				o[e] = bf16x2(g0, g1);
			}
			dp[c] = make_uint4(o[0], o[1], o[2], o[3]);
		}
	} else {
		for (i64 j = threadIdx.x; j < N; j += blockDim.x)
			st(dz, dzdt, base + j, grad(j, j < valid ? ld(z, zdt, base + j) : 0.0f));
	}
}

// dz[M, N]: a block a row (row_ce_grad), lse from k_vocab_loss
__global__ void k_ce_bwd(const float *dloss, const void *z, int zdt, const int *t, const float *lse, const float *count,
			 void *dz, int dzdt, i64 M, i64 N, i64 valid, i64 start, i64 ignore)
{
	for (i64 r = blockIdx.x; r < M; r += gridDim.x) {
		bool kept = t[r] != ignore && count[0] > 0;
		row_ce_grad(z, zdt, r, N, valid, (i64)t[r] - start, kept, kept ? dloss[0] / count[0] : 0.0f, lse[r], dz, dzdt);
	}
}

// slice: out[outer, n, inner] = x[outer, start .. start + n, inner] of [outer, whole, inner]
__global__ void k_slice(const void *x, void *out, int es, i64 outer, i64 n, i64 inner, i64 whole, i64 start)
{
	FOR_EACH(l, outer * n * inner) {
		i64 o = l / (n * inner), k = l / inner % n, i = l % inner, src = (o * whole + start + k) * inner + i;
		if (es == 2)
			((bf16 *)out)[l] = ((const bf16 *)x)[src];
		else
			((unsigned *)out)[l] = ((const unsigned *)x)[src];
	}
}

// NCCL gathers and scatters contiguous chunks, rank after rank: [tp, outer, n, inner].
// These move between that and the tensor's own [outer, tp * n, inner].
__global__ void k_unpack(const void *chunks, void *out, int es, i64 tp, i64 outer, i64 n, i64 inner)
{
	FOR_EACH(l, tp * outer * n * inner) {
		i64 r = l / (outer * n * inner), o = l / (n * inner) % outer, k = l / inner % n, i = l % inner;
		i64 dst = (o * tp * n + r * n + k) * inner + i;
		if (es == 2)
			((bf16 *)out)[dst] = ((const bf16 *)chunks)[l];
		else
			((unsigned *)out)[dst] = ((const unsigned *)chunks)[l];
	}
}

__global__ void k_pack(const void *in, void *chunks, int es, i64 tp, i64 outer, i64 n, i64 inner)
{
	FOR_EACH(l, tp * outer * n * inner) {
		i64 r = l / (outer * n * inner), o = l / (n * inner) % outer, k = l / inner % n, i = l % inner;
		i64 src = (o * tp * n + r * n + k) * inner + i;
		if (es == 2)
			((bf16 *)chunks)[l] = ((const bf16 *)in)[src];
		else
			((unsigned *)chunks)[l] = ((const unsigned *)in)[src];
	}
}

// Multi-tensor launches (Apex's multi_tensor_apply): a table of chunks, one a block, each
// up to 65,536 elements of one parameter; runtime/cuda/ops.c makes it once (struct MtChunk
// there). sumsq reads g and n; adamw all of it.
struct MtChunk {
	float *w;
	const float *g;     // the gradient, f32; or NULL, and it is g16, bf16 (the plan's dtype)
	float *m, *v;
	bf16 *w16;
	const bf16 *g16;
	int n, decay;
};

// whether chunk c's arrays take 4 elements a thread (float4; w16 and g16 by 8 bytes)
__device__ __forceinline__ bool mt_vec(const MtChunk &c)
{
	return c.n % 4 == 0 &&
	       ((unsigned long long)c.w | (unsigned long long)c.g | (unsigned long long)c.m | (unsigned long long)c.v) % 16 == 0 &&
	       ((unsigned long long)c.w16 | (unsigned long long)c.g16) % 8 == 0;
}
// chunk c's gradient at i, and at i .. i + 3 into g[4] (mt_vec)
__device__ __forceinline__ float mt_g(const MtChunk &c, int i) { return c.g16 ? bf2f(c.g16[i]) : c.g[i]; }
__device__ __forceinline__ void mt_g4(const MtChunk &c, int i, float *g)
{
	ld4(c.g16 ? (const void *)c.g16 : c.g, c.g16 ? DT_BF16 : DT_F32, i, g);
}

// the sum of squares of every chunk's g into *acc (a block's sum added atomically: the
// order of blocks is not fixed)
__global__ void k_sumsq(const MtChunk *chunks, float *acc)
{
	__shared__ float part[32];
	MtChunk c = chunks[blockIdx.x];
	float s = 0;
	if (mt_vec(c)) {
		for (int i = threadIdx.x * 4; i < c.n; i += blockDim.x * 4) {
			float g[4];
			mt_g4(c, i, g);
			s += g[0] * g[0] + g[1] * g[1] + g[2] * g[2] + g[3] * g[3];
		}
	} else {
		for (int i = threadIdx.x; i < c.n; i += blockDim.x)
			s += mt_g(c, i) * mt_g(c, i);
	}
	s = warp_sum(s);
	if (threadIdx.x % 32 == 0)
		part[threadIdx.x / 32] = s;
	__syncthreads();
	if (threadIdx.x < 32) {
		s = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
		s = warp_sum(s);
		if (threadIdx.x == 0)
			atomicAdd(acc, s);
	}
}

// one element's AdamW update: gradient g (clipped), moments m, v; the new weight
__device__ __forceinline__ float adamw1(float w, float g, float *m, float *v, float wd, const Run *run)
{
	*m = run->beta1 * *m + (1 - run->beta1) * g;
	*v = run->beta2 * *v + (1 - run->beta2) * g * g;
	return w - run->lr * ((*m / run->bc1) / (sqrtf(*v / run->bc2) + run->eps) + wd * w);
}

// AdamW on every chunk's parameter shard, after clipping to the global norm; writes the
// bf16 copy GEMMs read. 4 elements a thread by 16-byte loads where mt_vec allows.
__global__ void k_adamw(const MtChunk *chunks, const float *norm2, const Run *run)
{
	MtChunk c = chunks[blockIdx.x];
	float norm = sqrtf(norm2[0]), scale = run->clip > 0 && norm > run->clip ? run->clip / norm : 1.0f;
	float wd = c.decay ? run->weight_decay : 0.0f;
	if (mt_vec(c)) {
		for (int i = threadIdx.x * 4; i < c.n; i += blockDim.x * 4) {
			float4 w = *(const float4 *)(c.w + i);
			float g[4];
			mt_g4(c, i, g);
			float4 m = *(const float4 *)(c.m + i), v = *(const float4 *)(c.v + i);
			w.x = adamw1(w.x, g[0] * scale, &m.x, &v.x, wd, run);
			w.y = adamw1(w.y, g[1] * scale, &m.y, &v.y, wd, run);
			w.z = adamw1(w.z, g[2] * scale, &m.z, &v.z, wd, run);
			w.w = adamw1(w.w, g[3] * scale, &m.w, &v.w, wd, run);
			*(float4 *)(c.m + i) = m;
			*(float4 *)(c.v + i) = v;
			*(float4 *)(c.w + i) = w;
			if (c.w16)
				*(uint2 *)(c.w16 + i) = make_uint2(bf16x2(w.x, w.y), bf16x2(w.z, w.w));
		}
		return;
	}
	for (int i = threadIdx.x; i < c.n; i += blockDim.x) {
		float m = c.m[i], v = c.v[i], w = adamw1(c.w[i], mt_g(c, i) * scale, &m, &v, wd, run);
		c.m[i] = m;
		c.v[i] = v;
		c.w[i] = w;
		if (c.w16)
			c.w16[i] = f2bf(w);
	}
}

}  // extern "C"

// ---------------------------------------------------------------- flash attention
//
// Attention that never writes the S x S scores: FlashAttention-2's tiled online softmax
// and its work split (Dao, "FlashAttention-2: Faster Attention with Better Parallelism and
// Work Partitioning", 2023), on the tensor cores through mma.sync (m16n8k16, bf16 in, f32
// accumulate). One kernel a head size (DH, a multiple of 16 up to 128); the same kernel
// takes the causal mask and the padding mask. q, k, v, o are [B, S, H * DH] bf16; lse
// [B, H, S] f32, natural log. Scores are kept in base 2 (scale * log2 e folded in) so the
// exponentials are exp2. Twin of rt_attention in the cpu backend, like k_attention above,
// which stays for the head sizes these kernels do not take.
//
// Fragments are laid out as the PTX ISA's "Matrix Fragments for mma.m16n8k16" says: with
// g = lane / 4 and t = lane % 4, A (16 x 16, row-major) holds rows g and g + 8, columns
// 2t, 2t + 1 and 2t + 8, 2t + 9; B (16 x 8) holds rows 2t, 2t + 1 (and + 8) of column g; C
// (16 x 8, f32) holds rows g and g + 8, columns 2t and 2t + 1. An accumulator pair of
// n-tiles is therefore an A fragment, which is how P and dS reach the next GEMM without
// shared memory.
//
// Every flash kernel's grid is (B * H, blocks along the sequence): the heads along x, and
// along y a sequence's blocks in order of work, the longest first when causal (the
// forward's last query blocks, the backward's first key blocks). Blocks start in the
// order of their index, x fastest, so every head's longest blocks start first and the
// shortest fill the last wave; with a head's blocks along x instead, long and short ones
// were interleaved to the end and the SMs stood about 9% of a kernel's time idle (ncu,
// 1.2b and 124M, twelfth sitting).

#define FA_LOG2E 1.4426950408889634f
#define FA_LN2 0.6931471805599453f
#define FA_ROWS 64   // forward: queries a block (16 a warp); keys a tile. backward: keys a block
#define FA_BWD_Q 32  // backward: queries a tile
#define FA_SW_Q 128  // queries a block of flash_fwd_sw (two warpgroups)
// 2^x by the MUFU alone: flushes results below 2^-126 to zero (beside the row's largest
// term, 1, such a term changes no sum), where exp2f adds a range check and two scalings
__device__ __forceinline__ float fa_exp2(float x)
{
	float y;
	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
	return y;
}
// blocks an SM flash_fwd_sw is built for: two (128 registers) at head sizes to 96, where
// that spills 32 bytes at 96 but measured faster than one (1.2b: 7.08 -> 6.18 ms a step);
// one at 128 (two would spill 184 bytes)
#define FA_SW_BLOCKS(DH) ((DH) <= 96 ? 2 : 1)

__device__ __forceinline__ unsigned fa_u32(const bf16 *p) { return *(const unsigned *)p; }
// d[16 x 8] += a[16 x 16] b[16 x 8]
__device__ __forceinline__ void fa_mma(float *d, const unsigned *a, unsigned b0, unsigned b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
		     "{%0,%1,%2,%3};"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// The four 8 x 8 matrices of the 16 x 16 tile at p (row-major, ld elements a row) in
// shared memory by one ldmatrix.x4: r[0] rows 0-7 / columns 0-7, r[1] rows 8-15 / 0-7, r[2]
// rows 0-7 / 8-15, r[3] rows 8-15 / 8-15. Plain (fa_ldsm), that is an A fragment, and for a
// tile stored [n][k] (K's rows for Q K^T) the B fragments of n-tile 0 {r[0], r[2]} and
// n-tile 1 {r[1], r[3]}. Transposed (fa_ldsm_t), for a tile stored [k][n], the B fragments
// of two n-tiles: {r[0], r[1]} columns 0-7, {r[2], r[3]} columns 8-15.
template <bool TRANS>
__device__ __forceinline__ void fa_ldsm4(unsigned *r, const bf16 *p, int ld)
{
	int l = threadIdx.x % 32, m = l / 8;
	unsigned a = fa_smem(p + ((m & 1) * 8 + l % 8) * ld + (m >> 1) * 8);
	if (TRANS)
		asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
			     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
			     : "r"(a));
	else
		asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
			     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
			     : "r"(a));
}
__device__ __forceinline__ void fa_ldsm(unsigned *r, const bf16 *p, int ld) { fa_ldsm4<false>(r, p, ld); }
__device__ __forceinline__ void fa_ldsm_t(unsigned *b, const bf16 *p, int ld) { fa_ldsm4<true>(b, p, ld); }
// rows [row0, row0 + n) of x [., ld] (columns [0, DH)) into shared s [n][DH + 8], zeros past
// S, by cp.async (16 bytes a copy) as one group, not waited for (fa_wait)
template <int DH>
__device__ __forceinline__ void fa_tile(bf16 *s, const bf16 *x, i64 ld, i64 row0, int n, i64 S)
{
	for (int e = threadIdx.x; e < n * DH / 8; e += blockDim.x) {
		int r = e / (DH / 8), c = e % (DH / 8) * 8;
		bool in = row0 + r < S;
		const bf16 *src = x + (in ? row0 + r : 0) * ld + c;
		asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(fa_smem(s + r * (DH + 8) + c)), "l"(src),
			     "r"(in ? 16 : 0));
	}
	asm volatile("cp.async.commit_group;");
}
// until at most N of this thread's cp.async groups are in flight
template <int N>
__device__ __forceinline__ void fa_wait()
{
	asm volatile("cp.async.wait_group %0;" ::"n"(N));
}
// p[0] += a, p[1] += b atomically (p 8-byte aligned): one vector reduction on sm_90, where
// it halves the dQ backward's atomics; two scalar ones before
__device__ __forceinline__ void fa_red2(float *p, float a, float b)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" ::"l"(p), "f"(a), "f"(b) : "memory");
#else
	atomicAdd(p, a);
	atomicAdd(p + 1, b);
#endif
}
__device__ __forceinline__ float fa_quad_max(float v)
{
	v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
	return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float fa_quad_sum(float v)
{
	v += __shfl_xor_sync(0xffffffffu, v, 1);
	return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Forward. grid (B * H, ceil(S / 64)), 128 threads, flash_fwd_smem(DH) bytes of dynamic
// shared memory; warp w owns queries 16w .. 16w + 15 of
// the block's 64, their Q fragments in registers, and walks the key tiles (up to the
// diagonal when causal), K and V tiles in shared memory, two of each: the next pair is
// copied (cp.async) while this one is used.
template <int DH>
__device__ void flash_fwd(const bf16 *q, const bf16 *k, const bf16 *v, const int *mask, bf16 *o, float *lse, i64 S,
			  i64 H, int causal)
{
	constexpr int LD = DH + 8, TILE = FA_ROWS * LD;
	extern __shared__ __align__(16) unsigned char fa_shared[];
	bf16 *kv = (bf16 *)fa_shared;   // buffer i: K at kv + 2 i TILE, V a TILE after it
	int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, t = lane % 4;
	i64 ntiles = (S + FA_ROWS - 1) / FA_ROWS, qt = ntiles - 1 - blockIdx.y;   // the longest rows first
	i64 b = blockIdx.x / H, h = blockIdx.x % H, D = H * DH, base = b * S * D + h * DH;
	i64 r0 = qt * FA_ROWS + w * 16 + g, r1 = r0 + 8, nkt = causal ? qt + 1 : ntiles;
	float scale2 = rsqrtf((float)DH) * FA_LOG2E;
	fa_tile<DH>(kv, k + base, D, 0, FA_ROWS, S);
	fa_tile<DH>(kv + TILE, v + base, D, 0, FA_ROWS, S);
	unsigned qf[DH / 16][4];
	for (int kk = 0; kk < DH / 16; kk++) {
		const bf16 *p0 = q + base + r0 * D + kk * 16 + 2 * t, *p1 = p0 + 8 * D;
		qf[kk][0] = r0 < S ? fa_u32(p0) : 0u;
		qf[kk][1] = r1 < S ? fa_u32(p1) : 0u;
		qf[kk][2] = r0 < S ? fa_u32(p0 + 8) : 0u;
		qf[kk][3] = r1 < S ? fa_u32(p1 + 8) : 0u;
	}
	float acc[DH / 8][4], m0 = -INF, m1 = -INF, l0 = 0, l1 = 0;
	for (int d = 0; d < DH / 8; d++)
		acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0;
	for (i64 kt = 0; kt < nkt; kt++) {
		i64 j0 = kt * FA_ROWS;
		const bf16 *K_ = kv + (kt & 1) * 2 * TILE, *V_ = K_ + TILE;
		if (kt + 1 < nkt) {   // the next pair into the other buffers (free since the last step's end)
			bf16 *next = kv + ((kt + 1) & 1) * 2 * TILE;
			fa_tile<DH>(next, k + base, D, j0 + FA_ROWS, FA_ROWS, S);
			fa_tile<DH>(next + TILE, v + base, D, j0 + FA_ROWS, FA_ROWS, S);
			fa_wait<2>();   // this pair's two groups are done
		} else {
			fa_wait<0>();
		}
		__syncthreads();
		float s[8][4];
		for (int n = 0; n < 8; n++)
			s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0;
		for (int kk = 0; kk < DH / 16; kk++)
			for (int n = 0; n < 8; n += 2) {
				unsigned kb[4];
				fa_ldsm(kb, K_ + n * 8 * LD + kk * 16, LD);
				fa_mma(s[n], qf[kk], kb[0], kb[2]);
				fa_mma(s[n + 1], qf[kk], kb[1], kb[3]);
			}
		// masks only in the tiles that have masked keys: the diagonal, padding, the end of S
		if ((causal && kt == qt) || mask || j0 + FA_ROWS > S)
			for (int n = 0; n < 8; n++)
				for (int e = 0; e < 2; e++) {
					i64 j = j0 + n * 8 + 2 * t + e;
					bool in = j < S && (!mask || mask[b * S + j]);
					s[n][e] = in && (!causal || j <= r0) ? s[n][e] : -INF;
					s[n][2 + e] = in && (!causal || j <= r1) ? s[n][2 + e] : -INF;
				}
		for (int n = 0; n < 8; n++)
			for (int e = 0; e < 4; e++)
				s[n][e] *= scale2;   // -inf stays -inf
		float mx0 = m0, mx1 = m1;
		for (int n = 0; n < 8; n++) {
			mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
			mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
		}
		mx0 = fa_quad_max(mx0);
		mx1 = fa_quad_max(mx1);
		// a row that has seen no key yet keeps max -inf: subtract 0 then, for 0 and not NaN
		float b0 = mx0 == -INF ? 0.0f : mx0, b1 = mx1 == -INF ? 0.0f : mx1;
		float c0 = fa_exp2(m0 - b0), c1 = fa_exp2(m1 - b1);
		m0 = mx0;
		m1 = mx1;
		l0 *= c0;
		l1 *= c1;
		for (int d = 0; d < DH / 8; d++) {
			acc[d][0] *= c0, acc[d][1] *= c0;
			acc[d][2] *= c1, acc[d][3] *= c1;
		}
		unsigned pf[4][4];   // P as A fragments, 16 keys each
		for (int n = 0; n < 8; n++) {
			float p00 = fa_exp2(s[n][0] - b0), p01 = fa_exp2(s[n][1] - b0);
			float p10 = fa_exp2(s[n][2] - b1), p11 = fa_exp2(s[n][3] - b1);
			l0 += p00 + p01;
			l1 += p10 + p11;
			pf[n / 2][n % 2 * 2] = bf16x2(p00, p01);
			pf[n / 2][n % 2 * 2 + 1] = bf16x2(p10, p11);
		}
		for (int kc = 0; kc < 4; kc++)
			for (int d = 0; d < DH / 16; d++) {
				unsigned bv[4];
				fa_ldsm_t(bv, V_ + kc * 16 * LD + d * 16, LD);
				fa_mma(acc[2 * d], pf[kc], bv[0], bv[1]);
				fa_mma(acc[2 * d + 1], pf[kc], bv[2], bv[3]);
			}
		__syncthreads();   // this pair's buffers are free for the pair after next
	}
	l0 = fa_quad_sum(l0);
	l1 = fa_quad_sum(l1);
	float i0 = l0 > 0 ? 1.0f / l0 : 0.0f, i1 = l1 > 0 ? 1.0f / l1 : 0.0f;
	for (int d = 0; d < DH / 8; d++) {
		bf16 *op = o + base + r0 * D + d * 8 + 2 * t;
		if (r0 < S)
			*(unsigned *)op = bf16x2(acc[d][0] * i0, acc[d][1] * i0);
		if (r1 < S)
			*(unsigned *)(op + 8 * D) = bf16x2(acc[d][2] * i1, acc[d][3] * i1);
	}
	if (t == 0) {
		if (r0 < S)
			lse[blockIdx.x * S + r0] = l0 > 0 ? (m0 + log2f(l0)) * FA_LN2 : -INF;
		if (r1 < S)
			lse[blockIdx.x * S + r1] = l1 > 0 ? (m1 + log2f(l1)) * FA_LN2 : -INF;
	}
}

// ---- Hopper's warpgroup MMA (wgmma; sm_90a): its helpers, the forward (flash_fwd_sw) and
// the backward (flash_bwd_wg)
//
// The tensor cores read an operand straight from shared memory by a 64-bit descriptor
// (FlashAttention-3's point), where mma.sync needed an ldmatrix into registers for each
// fragment. An operand kept in registers (Q, P, P^T, dS^T as A) has the layout mma.sync
// gives it: wgmma's A fragment a warp is mma.m16n8k16's, and its accumulator a warp is the
// same C fragment for each 8 columns, so the softmax code is flash_fwd's.
//
// Tiles in shared memory take one of two layouts: 8 x 8 "core matrices" (fa_cm: 8 rows of
// 16 bytes, 128 contiguous bytes; PTX ISA, "Matrix Descriptor", no swizzling), or the
// 128-byte swizzled one TMA writes (fa_sw: see flash_fwd_sw). Either serves both readings:
// K-major (the contraction along a row: S = Q K^T's K) and MN-major (the contraction
// across rows: O += P V's V, which wgmma reads transposed, imm-trans-b 1).
// A tensor map for the Tensor Memory Accelerator (the driver's CUtensorMap: 128 bytes,
// 64-byte aligned), made by the host (runtime/cuda/ops.c, fa_tensor_map) and passed by
// value as a __grid_constant__ parameter, whose address the copies name
struct __align__(64) FaTmap {
	unsigned long long opaque[16];
};
#ifdef __CUDA_ARCH_FEAT_SM90_ALL
#define FA_WGMMA 1
template <int DH>
__device__ __forceinline__ int fa_cm(int key, int d)
{
	return ((key >> 3) * (DH / 8) + (d >> 3)) * 64 + (key & 7) * 8 + (d & 7);
}
// A wgmma shared-memory descriptor: start address, the byte distance between core matrices
// along the contraction (lbo) and along M or N (sbo), no swizzling (bits 62-63 zero)
__device__ __forceinline__ unsigned long long fa_desc(const void *p, unsigned lbo, unsigned sbo)
{
	return (unsigned long long)((fa_smem(p) & 0x3FFFF) >> 4) | (unsigned long long)(lbo >> 4) << 16 |
	       (unsigned long long)(sbo >> 4) << 32;
}
// An MN-major operand's descriptor (its contraction runs across the rows of its core
// matrices, which wgmma reads transposed): core matrices k_step bytes apart along the
// contraction, mn_step along M or N. Without swizzling these are LBO and SBO, as for
// K-major ones: the PTX ISA's canonical MN-major interleave layout is ((T,1,m),(8,k)) :
// ((1,T,SBO),(1T,LBO)), and CUTLASS's make_gmma_desc<Major::MN> agrees (swizzled MN-major
// layouts swap the two); a probe of the four wgmma forms on an H200 against the host
// confirmed this reading (sixth sitting) and failed the swapped one.
__device__ __forceinline__ unsigned long long fa_desc_mn(const void *p, unsigned k_step, unsigned mn_step)
{
	return fa_desc(p, k_step, mn_step);
}
__device__ __forceinline__ void fa_wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
// issue the wgmmas above as a group, not waited for
__device__ __forceinline__ void fa_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
// issue the wgmmas above as a group and wait for it and every group before
__device__ __forceinline__ void fa_wg_wait()
{
	asm volatile("wgmma.commit_group.sync.aligned;\n\twgmma.wait_group.sync.aligned 0;" ::: "memory");
}
// the accumulators d[n] pinned where this stands: after fa_wg_wait, no read of them moves
// above it; before fa_wg_fence, no write of them moves below it (CUTLASS's
// warpgroup_fence_operand)
__device__ __forceinline__ void fa_wg_done(float *d, int n)
{
	for (int i = 0; i < n; i++)
		asm volatile("" : "+f"(d[i]));
}
// lse[row0 ..] and delta[row0 ..] (64 each, zeros past S) into s[0 .. 64) and s[64 .. 128) by
// 4-byte cp.async, not committed: they join the next fa_tile_sw's group (or, under TMA, a
// commit of their own)
__device__ __forceinline__ void fa_rows_f32(float *s, const float *lse, const float *delta, i64 row0, i64 S)
{
	if (threadIdx.x < 2 * FA_ROWS) {
		i64 i = row0 + threadIdx.x % FA_ROWS;
		const float *src = (threadIdx.x < FA_ROWS ? lse : delta) + (i < S ? i : 0);
		asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(fa_smem(s + threadIdx.x)), "l"(src),
			     "r"(i < S ? 4 : 0));
	}
}
// p[0 .. 4) += a, b, c, e (16-byte aligned)
__device__ __forceinline__ void fa_red4(float *p, float a, float b, float c, float e)
{
	asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(p), "f"(a), "f"(b), "f"(c), "f"(e) : "memory");
}
// d[32] (+)= a b by wgmma m64n64k16: A (a warp's 16 x 16, laid out as mma.sync's A
// fragment) from registers, B from shared memory by its descriptor (fa_desc)
template <int TRANS_B>
__device__ __forceinline__ void fa_wg64(float *d, const unsigned *a, unsigned long long b, int accumulate)
{
	asm volatile("{ .reg .pred p; setp.ne.b32 p, %37, 0;\n"
		     "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
		     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
		     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
		     "}, {%32, %33, %34, %35}, %36, p, 1, 1, %38; }"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
		       "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
		       "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
		       "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TRANS_B));
}
// d[48] (+)= a b by wgmma m64n96k16: A (a warp's 16 x 16, laid out as mma.sync's A
// fragment) from registers, B from shared memory by its descriptor (fa_desc)
template <int TRANS_B>
__device__ __forceinline__ void fa_wg96(float *d, const unsigned *a, unsigned long long b, int accumulate)
{
	asm volatile("{ .reg .pred p; setp.ne.b32 p, %53, 0;\n"
		     "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 {"
		     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
		     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
		     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47"
		     "}, {%48, %49, %50, %51}, %52, p, 1, 1, %54; }"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
		       "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
		       "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
		       "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
		       "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
		       "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TRANS_B));
}
// d[64] (+)= a b by wgmma m64n128k16: A (a warp's 16 x 16, laid out as mma.sync's A
// fragment) from registers, B from shared memory by its descriptor (fa_desc)
template <int TRANS_B>
__device__ __forceinline__ void fa_wg128(float *d, const unsigned *a, unsigned long long b, int accumulate)
{
	asm volatile("{ .reg .pred p; setp.ne.b32 p, %69, 0;\n"
		     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
		     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
		     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
		     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
		     "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
		     "}, {%64, %65, %66, %67}, %68, p, 1, 1, %70; }"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
		       "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
		       "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
		       "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
		       "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
		       "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
		       "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
		       "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TRANS_B));
}
// d[32] (+)= a b by wgmma m64n64k16, both from shared memory by their descriptors
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void fa_wgss64(float *d, unsigned long long a, unsigned long long b, int accumulate)
{
	asm volatile("{ .reg .pred p; setp.ne.b32 p, %34, 0;\n"
		     "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
		     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
		     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
		     "}, %32, %33, p, 1, 1, %35, %36; }"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
		       "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
		       "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
		       "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
		     : "l"(a), "l"(b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));
}
// d[48] (+)= a b by wgmma m64n96k16, both from shared memory by their descriptors
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void fa_wgss96(float *d, unsigned long long a, unsigned long long b, int accumulate)
{
	asm volatile("{ .reg .pred p; setp.ne.b32 p, %50, 0;\n"
		     "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 {"
		     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
		     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
		     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47"
		     "}, %48, %49, p, 1, 1, %51, %52; }"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
		       "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
		       "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
		       "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
		       "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
		       "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
		     : "l"(a), "l"(b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));
}
// d[64] (+)= a b by wgmma m64n128k16, both from shared memory by their descriptors
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void fa_wgss128(float *d, unsigned long long a, unsigned long long b, int accumulate)
{
	asm volatile("{ .reg .pred p; setp.ne.b32 p, %66, 0;\n"
		     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
		     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
		     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
		     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
		     "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
		     "}, %64, %65, p, 1, 1, %67, %68; }"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
		       "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
		       "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
		       "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
		       "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
		       "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
		       "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
		       "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
		     : "l"(a), "l"(b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));
}
// d (+)= a b with N = DH, both operands transposed (MN-major) in shared memory
template <int DH>
__device__ __forceinline__ void fa_wgss_t(float *d, unsigned long long a, unsigned long long b, int accumulate)
{
	if constexpr (DH == 64)
		fa_wgss64<1, 1>(d, a, b, accumulate);
	else if constexpr (DH == 96)
		fa_wgss96<1, 1>(d, a, b, accumulate);
	else
		fa_wgss128<1, 1>(d, a, b, accumulate);
}
// O (+)= P V for one 16-key step: the wgmma of N = DH
template <int DH>
__device__ __forceinline__ void fa_wg_pv(float *acc, const unsigned *p, unsigned long long v)
{
	if constexpr (DH == 64)
		fa_wg64<1>(acc, p, v, 1);
	else if constexpr (DH == 96)
		fa_wg96<1>(acc, p, v, 1);
	else
		fa_wg128<1>(acc, p, v, 1);
}

// ---- the forward by wgmma on 128-byte swizzled tiles
//
// A block of 256 threads, two warpgroups, 128 queries: warpgroup wg the 64 from 64 wg (its
// warp w the 16 from 16 (w % 4)), both reading each K and V tile [64 keys][DH], so that a
// tile is fetched once for 128 queries (flash_fwd's 64). The tiles are stored as TMA's
// 128-byte swizzle lays them out (the PTX ISA's "Shared Memory Matrix Layout", swizzling
// mode 128B): column blocks of 64 (DH 96 pads its second block to 64), each row of a block
// 128 bytes whose 16-byte chunks are permuted by XOR with the row's index mod 8. They are
// filled by cp.async a whole row at a time, 8 lanes a block's row without bank conflicts
// (at DH 96 a row is 12 chunks, and 8 lanes may span two rows: two-way conflicts): the
// earlier wgmma forward's core-matrix layout (fa_cm) read 64 bytes of each of 8 rows a
// warp, and was bound by L2 (perf-notes, sixth sitting). For S = Q K^T, K is K-major
// (16 keys' k-step 32 bytes along a row); for O += P V, V is MN-major (8 keys 1024 bytes
// apart, column blocks 64 rows x 128 bytes apart), read transposed. Q and P are A
// fragments in registers and the softmax is flash_fwd's, as in the core-matrix version
// (QS: Q a swizzled tile a warpgroup in shared memory instead, K-major as K is). With TMA =
// true (the default: runtime/cuda/ops.c) one thread fills K and V by the Tensor Memory
// Accelerator instead (fa_tile_tma), which writes this layout. Grid (B * H, ceil(S / 128));
// flash_fwd_sw_smem(DH, QS, TMA) bytes of dynamic shared memory: (QS: two Q tiles,) two K and
// two V tiles, two mbarriers and two counters of hand-backs (TMA's), and 1 KiB to align the
// tiles to the swizzle's period.
// element (r, c) of a swizzled [64][DH] tile (c a multiple of 8 or not)
__device__ __forceinline__ int fa_sw(int r, int c)
{
	return (c >> 6) * FA_ROWS * 64 + r * 64 + ((((c >> 3) & 7) ^ (r & 7)) << 3) + (c & 7);
}
// rows [row0, row0 + 64) of x [., ld] (columns [0, DH)) into the swizzled tile s, zeros
// past S, 16 bytes a cp.async, consecutive lanes along a row; one group
template <int DH>
__device__ __forceinline__ void fa_tile_sw(bf16 *s, const bf16 *x, i64 ld, i64 row0, i64 S)
{
	for (int e = threadIdx.x; e < FA_ROWS * DH / 8; e += blockDim.x) {
		int r = e / (DH / 8), c = e % (DH / 8) * 8;
		bool in = row0 + r < S;
		const bf16 *src = x + (in ? row0 + r : 0) * ld + c;
		asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(fa_smem(s + fa_sw(r, c))), "l"(src),
			     "r"(in ? 16 : 0));
	}
	asm volatile("cp.async.commit_group;");
}
// a descriptor of a 128-byte swizzled operand (layout type 1 in bits 62-63): K-major, sbo
// 1,024 (8 rows) and lbo unused (16, as CUTLASS sets it); MN-major, sbo 1,024 (8 rows of the contraction) and lbo
// the distance between column blocks (CUTLASS's make_gmma_desc, Major::MN, B128)
__device__ __forceinline__ unsigned long long fa_desc_sw(const void *p, unsigned lbo)
{
	return fa_desc(p, lbo, 1024) | 1ull << 62;
}
// rows [row0, row0 + 64) of head h of sequence b of x [B, S, H, DH] into the swizzled tile s
// (fa_sw's layout: TMA's 128-byte swizzle, a box of 64 columns by 64 rows a column block),
// zeros past S and past DH, by the map's TMA copies (its dimensions DH, H, S, B), completing
// 2 TILE bytes on bar. One thread issues them.
template <int DH>
__device__ __forceinline__ void fa_tile_tma(bf16 *s, const FaTmap *map, i64 h, i64 row0, i64 b, unsigned long long *bar)
{
#pragma unroll
	for (int kb = 0; kb < (DH + 63) / 64; kb++)
		asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, "
			     "%4, %5}], [%6];" ::"r"(fa_smem(s + kb * FA_ROWS * 64)),
			     "l"(map), "r"(kb * 64), "r"((int)h), "r"((int)row0), "r"((int)b), "r"(fa_smem(bar))
			     : "memory");
}
// by thread 0 (ANY: by the calling thread): two tensors' tiles of those rows (K and V, or
// Q and dO) into s and the tile after it, and (ld not NULL: flash_bwd_wg's TMA) the same
// rows' lse and delta [64] each (f32, as k_attention_delta prepared them: lse in base 2,
// delta times the scale) into ld, by the map tld of [2][B H][Sp] (dimensions S, B H, 2;
// zeros past S); the phase of bar expecting them all
template <int DH, bool ANY = false>
__device__ __forceinline__ void fa_tma_pair(bf16 *s, const FaTmap *m0, const FaTmap *m1, i64 h, i64 row0, i64 b,
					    unsigned long long *bar, float *ld = NULL, const FaTmap *tld = NULL)
{
	constexpr int TILE = FA_ROWS * ((DH + 63) / 64 * 64);
	if (ANY || threadIdx.x == 0) {
		fa_mbar_expect(bar, 4 * TILE + (ld ? 2 * FA_ROWS * 4 : 0));
		fa_tile_tma<DH>(s, m0, h, row0, b, bar);
		fa_tile_tma<DH>(s + TILE, m1, h, row0, b, bar);
		if (ld)
			asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, "
				     "{%2, %3, %4}], [%5];" ::"r"(fa_smem(ld)),
				     "l"(tld), "r"((int)row0), "r"((int)blockIdx.x), "r"(0), "r"(fa_smem(bar))
				     : "memory");
	}
}
// dQ added into dq by TMA (flash_bwd_wg's TMA): this thread's part of a query
// tile's dQ [64][DH] (f32, dqa: rows 16 w + g and 8 after, columns 8 j + 2 t + e % 2) into
// s as TMA reads a box of 32 columns by 64 rows in its 128-byte swizzle: box j / 4 at s +
// 2,048 (j / 4), a row 128 bytes, its 16-byte chunk c at c ^ (row % 8) (row % 8 is g for
// both rows); a warp's stores fill each bank twice, the fewest for 256 bytes. s 1,024-byte
// aligned (a Q and dO buffer, free once the round's wgmmas are done)
template <int DH>
__device__ __forceinline__ void fa_dq_put(float *s, const float *dqa, int w)
{
	int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
	float *r0 = s + (16 * w + g) * 32 + 2 * (t & 1);
#pragma unroll
	for (int j = 0; j < DH / 8; j++) {
		float *p = r0 + j / 4 * FA_ROWS * 32 + ((2 * (j % 4) + t / 2) ^ g) * 4;
		*(float2 *)p = make_float2(dqa[4 * j], dqa[4 * j + 1]);
		*(float2 *)(p + 8 * 32) = make_float2(dqa[4 * j + 2], dqa[4 * j + 3]);
	}
}
// by thread 0: the tile fa_dq_put wrote at s added into dq's rows [row0, row0 + 64) of head
// h of sequence b (the map's dimensions DH, H, S, B, f32; rows past S left alone), one
// bulk group; before s is written again the thread waits for the group's reads
// (cp.async.bulk.wait_group.read). The writes at s must be fenced for the async proxy
// (fence.proxy.async) and past a barrier first.
template <int DH>
__device__ __forceinline__ void fa_dq_reduce(const float *s, const FaTmap *map, i64 h, i64 row0, i64 b)
{
	if (threadIdx.x != 0)
		return;
#pragma unroll
	for (int kb = 0; kb < DH / 32; kb++)
		asm volatile("cp.reduce.async.bulk.tensor.4d.global.shared::cta.add.tile.bulk_group [%0, {%1, %2, %3, %4}], [%5];" ::"l"(
				 map),
			     "r"(kb * 32), "r"((int)h), "r"((int)row0), "r"((int)b), "r"(fa_smem(s + kb * FA_ROWS * 32))
			     : "memory");
	asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}
// flash_fwd_sw's S = Q K^T of a tile (QS: Q's swizzled tile at Qw, K's at K_), issued, not
// committed
template <int DH>
__device__ __forceinline__ void fa_fwd_s(float *s, const bf16 *Qw, const bf16 *K_)
{
	fa_wg_fence();
	for (int kk = 0; kk < DH / 16; kk++) {
		int at = kk / 4 * FA_ROWS * 64 + kk % 4 * 16;   // column block kk / 4, 32 bytes a k-step in it
		fa_wgss64<0, 0>(s, fa_desc_sw(Qw + at, 16), fa_desc_sw(K_ + at, 16), kk > 0);
	}
}
template <int DH, bool TMA = false, bool QS = false, bool PIPE = false>
__device__ void flash_fwd_sw(const bf16 *q, const bf16 *k, const bf16 *v, const int *mask, bf16 *o, float *lse,
			     i64 S, i64 H, int causal, const FaTmap *tk = NULL, const FaTmap *tv = NULL)
{
	static_assert(!QS || TMA, "Q's tiles are waited for once, beside the K and V copies by TMA");
	static_assert(!PIPE || QS, "the pipelined loop is the QS kernel's");
	constexpr int TILE = FA_ROWS * ((DH + 63) / 64 * 64);   // elements of a tile, its column blocks padded
	extern __shared__ __align__(16) unsigned char fa_shared[];
	bf16 *qs = (bf16 *)(fa_shared + ((1024 - (fa_smem(fa_shared) & 1023)) & 1023));   // QS: warpgroup i's Q at qs + i TILE
	bf16 *kv = qs + (QS ? 2 * TILE : 0);   // K of buffer i at kv + 2 i TILE, V after
	int lane = threadIdx.x % 32, w = threadIdx.x / 32 % 4, g = lane / 4, t = lane % 4;
	i64 ntiles = (S + FA_SW_Q - 1) / FA_SW_Q, qt = ntiles - 1 - blockIdx.y;   // the longest rows first
	i64 b = blockIdx.x / H, h = blockIdx.x % H, D = H * DH, base = b * S * D + h * DH;
	i64 first = qt * FA_SW_Q + threadIdx.x / 128 * 64;   // this warpgroup's first query
	i64 r0 = first + w * 16 + g, r1 = r0 + 8, nk = (S + FA_ROWS - 1) / FA_ROWS;
	i64 nkt = causal && 2 * qt + 2 < nk ? 2 * qt + 2 : nk;
	float scale2 = rsqrtf((float)DH) * FA_LOG2E;
	unsigned long long *bars = (unsigned long long *)(kv + 4 * TILE);   // TMA: buffer i's K and V landed
	if (QS) {   // the block's 128 queries, each warpgroup's 64 a swizzled tile, by cp.async (one group)
		fa_tile_sw<DH>(qs, q + base, D, qt * FA_SW_Q, S);
		fa_tile_sw<DH>(qs + TILE, q + base, D, qt * FA_SW_Q + FA_ROWS, S);
	}
	unsigned *freed = (unsigned *)(bars + 2);   // TMA: buffer i's warpgroups done with it, 0 to 2
	if (TMA) {   // K and V by TMA (fa_tile_tma), one thread issuing, every thread waiting on the buffer's mbarrier
		if (threadIdx.x == 0)
			freed[0] = freed[1] = 0;   // (seen by all past fa_mbar_init2's barrier)
		fa_mbar_init2(bars);
		fa_tma_pair<DH>(kv, tk, tv, h, 0, b, &bars[0]);
		if (nkt > 1)   // the first two tiles now, each later one when its buffer is handed back
			fa_tma_pair<DH>(kv + 2 * TILE, tk, tv, h, FA_ROWS, b, &bars[1]);
	} else {
		fa_tile_sw<DH>(kv, k + base, D, 0, S);
		fa_tile_sw<DH>(kv + TILE, v + base, D, 0, S);
	}
	if (QS) {   // Q landed and seen by the wgmmas (the async proxy) before the loop
		fa_wait<0>();
		asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
		__syncthreads();
	}
	const bf16 *Qw = qs + threadIdx.x / 128 * TILE;   // QS: this warpgroup's Q tile
	unsigned qf[QS ? 1 : DH / 16][4];   // else Q as A fragments in registers
	for (int kk = 0; kk < DH / 16 && !QS; kk++) {
		const bf16 *p0 = q + base + r0 * D + kk * 16 + 2 * t, *p1 = p0 + 8 * D;
		qf[kk][0] = r0 < S ? fa_u32(p0) : 0u;
		qf[kk][1] = r1 < S ? fa_u32(p1) : 0u;
		qf[kk][2] = r0 < S ? fa_u32(p0 + 8) : 0u;
		qf[kk][3] = r1 < S ? fa_u32(p1 + 8) : 0u;
	}
	float acc[DH / 2], m0 = -INF, m1 = -INF, l0 = 0, l1 = 0;   // acc[4 j + e]: flash_fwd's acc[j][e]
	for (int d = 0; d < DH / 2; d++)
		acc[d] = 0;
	float s[32];   // s[4 n + e]: flash_fwd's s[n][e]
	// PIPE: the warpgroup's last tile (causal: the last with a key at or before its last
	// query) from a value ptxas sees to be the same across the warp (a wgmma left in flight
	// across a branch it cannot prove so serialises them all: C7520)
	i64 last = PIPE && causal ? min(nkt, (i64)__shfl_sync(0xffffffffu, (int)(first / FA_ROWS), 0) + 1) - 1 : nkt - 1;
	if (PIPE && nkt > 0) {   // the first tile's S issued here, each later one in the tile before's round
		fa_mbar_wait(&bars[0], 0);
		__syncwarp();
		fa_fwd_s<DH>(s, Qw, kv);
		fa_wg_commit();
	}
	for (i64 kt = 0; kt < nkt; kt++) {
		i64 j0 = kt * FA_ROWS;
		const bf16 *K_ = kv + (kt & 1) * 2 * TILE, *V_ = K_ + TILE;
		if (PIPE) {   // waited for where its S was issued; a tile the warpgroup skips, here (the
			      // hand-back below may come only after the tile landed: the other warpgroup
			      // has handed back the tile before in this buffer by then)
			if (kt > last) {
				fa_mbar_wait(&bars[kt & 1], (unsigned)(kt >> 1) & 1);
				__syncwarp();
			}
		} else if (TMA) {   // (the mbarrier's wait orders the copies before this thread's wgmmas: no barrier)
			fa_mbar_wait(&bars[kt & 1], (unsigned)(kt >> 1) & 1);
			__syncwarp();   // the warp whole again for wgmma's .sync.aligned, after thread 0's branch and the spin
		} else {
			if (kt + 1 < nkt) {   // the next pair into the other buffers (free since the last step's end)
				bf16 *next = kv + ((kt + 1) & 1) * 2 * TILE;
				fa_tile_sw<DH>(next, k + base, D, j0 + FA_ROWS, S);
				fa_tile_sw<DH>(next + TILE, v + base, D, j0 + FA_ROWS, S);
				fa_wait<2>();
			} else {
				fa_wait<0>();
			}
			asm volatile("fence.proxy.async.shared::cta;" ::: "memory");   // cp.async's writes, seen by wgmma
			__syncthreads();
		}
		if (PIPE ? kt <= last : !causal || j0 <= first + 63) {   // else every key of the tile is after this warpgroup's queries
			if (QS && !PIPE) {   // (PIPE: issued in the round before)
				fa_fwd_s<DH>(s, Qw, K_);
			} else if (!PIPE) {   // Q's A fragments from registers
				fa_wg_fence();
				for (int kk = 0; kk < DH / 16; kk++) {
					int at = kk / 4 * FA_ROWS * 64 + kk % 4 * 16;   // column block kk / 4, 32 bytes a k-step in it
					fa_wg64<0>(s, qf[kk], fa_desc_sw(K_ + at, 16), kk > 0);
				}
			}
			fa_wg_wait();
			fa_wg_done(s, 32);
			if (PIPE)
				fa_wg_done(acc, DH / 2);
			if ((causal && j0 + FA_ROWS - 1 > first) || mask || j0 + FA_ROWS > S)
				for (int n = 0; n < 8; n++)
					for (int e = 0; e < 2; e++) {
						i64 j = j0 + n * 8 + 2 * t + e;
						bool in = j < S && (!mask || mask[b * S + j]);
						s[4 * n + e] = in && (!causal || j <= r0) ? s[4 * n + e] : -INF;
						s[4 * n + 2 + e] = in && (!causal || j <= r1) ? s[4 * n + 2 + e] : -INF;
					}
			// the maxima of the raw scores, scaled after (scale2 > 0 keeps the order), and
			// each score scaled inside its exponential's fma: one instruction an element less
			float mx0 = -INF, mx1 = -INF;
			for (int n = 0; n < 8; n++) {
				mx0 = fmaxf(mx0, fmaxf(s[4 * n], s[4 * n + 1]));
				mx1 = fmaxf(mx1, fmaxf(s[4 * n + 2], s[4 * n + 3]));
			}
			mx0 = fmaxf(m0, fa_quad_max(mx0) * scale2);   // -inf stays -inf
			mx1 = fmaxf(m1, fa_quad_max(mx1) * scale2);
			float b0 = mx0 == -INF ? 0.0f : mx0, b1 = mx1 == -INF ? 0.0f : mx1;
			float c0 = fa_exp2(m0 - b0), c1 = fa_exp2(m1 - b1);
			m0 = mx0;
			m1 = mx1;
			l0 *= c0;
			l1 *= c1;
			for (int d = 0; d < DH / 8; d++) {
				acc[4 * d] *= c0, acc[4 * d + 1] *= c0;
				acc[4 * d + 2] *= c1, acc[4 * d + 3] *= c1;
			}
			unsigned pf[4][4];
			for (int n = 0; n < 8; n++) {
				float p00 = fa_exp2(fmaf(s[4 * n], scale2, -b0)), p01 = fa_exp2(fmaf(s[4 * n + 1], scale2, -b0));
				float p10 = fa_exp2(fmaf(s[4 * n + 2], scale2, -b1)), p11 = fa_exp2(fmaf(s[4 * n + 3], scale2, -b1));
				l0 += p00 + p01;
				l1 += p10 + p11;
				pf[n / 2][n % 2 * 2] = bf16x2(p00, p01);
				pf[n / 2][n % 2 * 2 + 1] = bf16x2(p10, p11);
			}
			fa_wg_done(acc, DH / 2);   // the rescaled acc written before the fence
			fa_wg_fence();
			for (int kc = 0; kc < 4; kc++)   // keys 16 kc ..
				fa_wg_pv<DH>(acc, pf[kc], fa_desc_sw(V_ + kc * 16 * 64, FA_ROWS * 128));
			if (PIPE && kt < last) {
				// the next tile's S issued behind this P V, then P V waited for alone (groups
				// end in order); acc pinned after the next tile's wait for both
				fa_wg_commit();
				fa_mbar_wait(&bars[(kt + 1) & 1], (unsigned)((kt + 1) >> 1) & 1);
				__syncwarp();
				fa_fwd_s<DH>(s, Qw, kv + ((kt + 1) & 1) * 2 * TILE);
				fa_wg_commit();
				asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory");
			} else {
				fa_wg_wait();
				fa_wg_done(acc, DH / 2);
			}
		}
		if (TMA) {   // this warpgroup's hand-back of the buffer: the second to hand it back loads it again
			asm volatile("bar.sync %0, 128;" ::"r"(1 + (int)(threadIdx.x / 128)) : "memory");   // its 4 warps' wgmmas done
			if (threadIdx.x % 128 == 0) {
				__threadfence_block();
				if (atomicAdd(&freed[kt & 1], 1u) == 1) {
					// the reset before the load's arrive.expect_tx (a release): the next hand-back
					// of this buffer comes after a wait on that phase (an acquire), so it sees 0
					freed[kt & 1] = 0;
					__threadfence_block();
					if (kt + 2 < nkt)
						fa_tma_pair<DH, true>(kv + (kt & 1) * 2 * TILE, tk, tv, h, j0 + 2 * FA_ROWS, b, &bars[kt & 1]);
				}
			}
			__syncwarp();   // the warp whole again for the next wgmma
		} else {
			__syncthreads();   // this pair's buffers are free for the pair after next
		}
	}
	l0 = fa_quad_sum(l0);
	l1 = fa_quad_sum(l1);
	float i0 = l0 > 0 ? 1.0f / l0 : 0.0f, i1 = l1 > 0 ? 1.0f / l1 : 0.0f;
	for (int d = 0; d < DH / 8; d++) {
		bf16 *op = o + base + r0 * D + d * 8 + 2 * t;
		if (r0 < S)
			*(unsigned *)op = bf16x2(acc[4 * d] * i0, acc[4 * d + 1] * i0);
		if (r1 < S)
			*(unsigned *)(op + 8 * D) = bf16x2(acc[4 * d + 2] * i1, acc[4 * d + 3] * i1);
	}
	if (t == 0) {
		if (r0 < S)
			lse[blockIdx.x * S + r0] = l0 > 0 ? (m0 + log2f(l0)) * FA_LN2 : -INF;
		if (r1 < S)
			lse[blockIdx.x * S + r1] = l1 > 0 ? (m1 + log2f(l1)) * FA_LN2 : -INF;
	}
}

// flash_bwd_wg's and flash_bwd_wg2's dK and dV of a thread (dka, dva: rows kr0 for e < 2
// and kr1 = kr0 + 8, columns 8 j + 2 t + e % 2) into dk and dv from element ob (row kr0's
// column 2 t), rows ldo apart, in bf16 pairs; in0, in1: whether the rows are keys
template <int DH>
__device__ __forceinline__ void fa_store_dkv(bf16 *dk, bf16 *dv, const float *dka, const float *dva, i64 ob, i64 ldo,
					     bool in0, bool in1)
{
	for (int d = 0; d < DH / 8; d++) {
		i64 o0 = ob + d * 8;
		if (in0) {
			*(unsigned *)(dk + o0) = bf16x2(dka[4 * d], dka[4 * d + 1]);
			*(unsigned *)(dv + o0) = bf16x2(dva[4 * d], dva[4 * d + 1]);
		}
		if (in1) {
			*(unsigned *)(dk + o0 + 8 * ldo) = bf16x2(dka[4 * d + 2], dka[4 * d + 3]);
			*(unsigned *)(dv + o0 + 8 * ldo) = bf16x2(dva[4 * d + 2], dva[4 * d + 3]);
		}
	}
}

// flash_bwd_wg's bias sums: the column sums over the block's 64 keys of dK and dV (dka, dva:
// a thread's rows kr0 for e < 2 and kr1 for e >= 2, columns 8 j + 2 t + e % 2; in0, in1:
// whether those rows are keys), by the lanes of a column (g: shuffles), then the NW
// warps in order through sm (2 DH x NW floats of shared memory free after the loop), into
// part[1 + kind] (flash_bwd_wg; flash_bwd_wg2's 128 keys, NW 8). The same order every run.
template <int DH, int NW = 4>
__device__ __forceinline__ void fa_bias_sums(const float *dka, const float *dva, bool in0, bool in1, float *sm, float *part,
					     i64 H)
{
	int lane = threadIdx.x % 32, w = threadIdx.x / 32, t = lane % 4;
	__syncthreads();   // every warp is past the loop's last reads of dS^T, whose bytes sm reuses
	for (int d = 0; d < DH / 8; d++)
		for (int e = 0; e < 2; e++) {
			float sk = (in0 ? dka[4 * d + e] : 0.0f) + (in1 ? dka[4 * d + 2 + e] : 0.0f);
			float sv = (in0 ? dva[4 * d + e] : 0.0f) + (in1 ? dva[4 * d + 2 + e] : 0.0f);
			for (int m = 4; m < 32; m *= 2) {
				sk += __shfl_xor_sync(0xffffffffu, sk, m);
				sv += __shfl_xor_sync(0xffffffffu, sv, m);
			}
			if (lane < 4)
				sm[(w * 2 + 0) * DH + 8 * d + 2 * t + e] = sk, sm[(w * 2 + 1) * DH + 8 * d + 2 * t + e] = sv;
		}
	__syncthreads();
	i64 R = gridDim.x / H * gridDim.y, D = H * DH, row = blockIdx.x / H * gridDim.y + blockIdx.y;
	for (int i = threadIdx.x; i < 2 * DH; i += blockDim.x) {
		int kind = i / DH, c = i % DH;
		float a = 0;
		for (int v = 0; v < NW; v++)
			a += sm[(v * 2 + kind) * DH + c];
		part[((1 + kind) * R + row) * D + blockIdx.x % H * DH + c] = a;
	}
}

// Backward by wgmma: flash_bwd's grid and results (a block of 128 threads, one warpgroup,
// 64 keys, warp w the keys 16 w ..), query tiles of 64 (wgmma's M is 64, and dQ's M is the
// queries), DH 64, 96 or 128; flash_bwd_wg_smem(DH) bytes of dynamic shared memory: K, V
// [64][DH], two Q and two dO tiles [64][DH] (128-byte swizzled as flash_fwd_sw's, filled a
// whole row at a time), dS^T [64][64] (core matrices, fa_cm), two lse and two delta [64]
// (the next query tile's copied with its Q and dO, so that no load from global memory
// waits inside the loop), and 1 KiB to align the tiles to the swizzle's period. A query tile:
//   S^T = K Q^T, dP^T = V dO^T      (A, B from shared memory, K-major)
//   P^T = exp(S^T - lse), dS^T = P^T (dP^T - delta) scale   (registers; dS^T to shared)
//   dV += P^T dO, dK += dS^T Q      (A from registers, B MN-major)
//   dQ = dS K                       (A = dS^T and B = K, both MN-major), added into dq (f32)
//                                   four columns a red.global (half the atomics of pairs)
// dk and dv in rows of ldo elements, as flash_bwd's.
// TMA: Q and dO copied by TMA (tq, tdo), one thread issuing, every thread waiting on the
// buffer's mbarrier; dQ added by TMA from shared memory (fa_dq_put, fa_dq_reduce through
// tdq) instead of the red.globals, and lse and delta as k_attention_delta prepared them
// ([2][B H][Sp]: lse in base 2, delta times the scale) copied by TMA with Q and dO (tld), so
// that no barrier waits for their conversion. The next round's Q and dO are loaded once the
// reduction has read the buffer, after the round's first GEMMs.
// SUMS: also the column sums of this block's 64 keys' dK and dV (f32, before their rounding:
// the k and v biases' gradients, summed over the blocks by k_parts_finish), at
// part[1 + kind][b * gridDim.y + blockIdx.y][h DH ..] of [3][B gridDim.y][D] (kind 0 dK,
// 1 dV; part[0] is dq's, k_convert_rows_sums's). A kernel of its own (k_flash_bwd_wg_sums_DH):
// the sums after the loop cost the kernel without them registers too (158 -> 166 at heads
// of 64, 212 -> 228 at 96, spills at 128), even with a null part.
// ABL (k_flash_bwd_wg_abl_N_96, MGL_FA_BWD_ABL=N: for timing, its results wrong):
// one part of each round left out, to measure what it adds to the round's chain: 1 dQ (its
// wgmmas, its put and its TMA reduction), 2 the exponentials (P^T = S^T scale - lse held
// to [0, 1] by the add's saturation, which costs no instruction, so that the gradients stay
// finite), 4 dV's and dK's wgmmas, 8 S^T's and dP^T's wgmmas (both zero); and of dQ's three
// parts, 16 the put and the reduction (its wgmmas kept), 32 the reduction (its wgmmas and
// put kept).
template <int DH, bool SUMS, bool TMA = false, int ABL = 0>
__device__ void flash_bwd_wg(const bf16 *dy, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
			     const float *delta, const int *mask, float *dq, bf16 *dk, bf16 *dv, i64 S, i64 H, i64 ldo,
			     int causal, float *part, const FaTmap *tq = NULL, const FaTmap *tdo = NULL,
			     const FaTmap *tdq = NULL, const FaTmap *tld = NULL)
{
	static_assert(ABL == 0 || TMA, "the ablations are of the TMA kernel");
	constexpr bool DQ_PUT = !(ABL & (1 | 16)), DQ_REDUCE = DQ_PUT && !(ABL & 32);
	constexpr int TILE = FA_ROWS * ((DH + 63) / 64 * 64);   // elements of a tile, its column blocks padded
	constexpr unsigned LBO = FA_ROWS * 128;                  // bytes between a tile's column blocks
	extern __shared__ __align__(16) unsigned char fa_shared[];
	bf16 *Ks = (bf16 *)(fa_shared + ((1024 - (fa_smem(fa_shared) & 1023)) & 1023));
	bf16 *Vs = Ks + TILE, *qg = Vs + TILE;   // buffer i: Q at qg + 2 i TILE, dO after it
	bf16 *dSs = qg + 4 * TILE;                                         // dS^T, fa_cm<64>(key, query)
	float *LDs = (float *)(dSs + FA_ROWS * FA_ROWS);   // buffer i: lse at LDs + 2 i 64, delta 64 after it
	unsigned long long *bars = (unsigned long long *)(LDs + 4 * FA_ROWS);   // TMA: buffer i's Q and dO landed
	int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, t = lane % 4;
	i64 b = blockIdx.x / H, h = blockIdx.x % H, D = H * DH, base = b * S * D + h * DH, j0 = blockIdx.y * FA_ROWS;
	i64 kr0 = j0 + w * 16 + g, kr1 = kr0 + 8;
	bool in0 = kr0 < S && (!mask || mask[b * S + kr0]), in1 = kr1 < S && (!mask || mask[b * S + kr1]);
	float scale = rsqrtf((float)DH), scale2 = scale * FA_LOG2E;
	i64 first = causal ? j0 : 0;
	fa_tile_sw<DH>(Ks, k + base, D, j0, S);
	fa_tile_sw<DH>(Vs, v + base, D, j0, S);
	if (TMA) {   // lse and delta with Q and dO; K and V's copies landed before the loop's first barrier
		fa_mbar_init2(bars);
		fa_tma_pair<DH>(qg, tq, tdo, h, first, b, &bars[0], LDs, tld);
		fa_wait<0>();
		asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
	} else {
		fa_tile_sw<DH>(qg, q + base, D, first, S);
		fa_rows_f32(LDs, lse + blockIdx.x * S, delta + blockIdx.x * S, first, S);
		fa_tile_sw<DH>(qg + TILE, dy + base, D, first, S);
	}
	float dka[DH / 2], dva[DH / 2];   // [4 j + e]: keys 16 w + g (+ 8 for e >= 2), columns 8 j + 2 t + e % 2
	for (int d = 0; d < DH / 2; d++)
		dka[d] = dva[d] = 0;
	const unsigned ds_at = fa_smem(dSs + fa_cm<64>(w * 16 + g, 2 * t));   // this thread's first dS^T element
	for (i64 i0 = first; i0 < S; i0 += FA_ROWS) {
		const bf16 *Qs = qg + (((i0 - first) / FA_ROWS) & 1) * 2 * TILE, *Gs = Qs + TILE;
		const float *Ls = LDs + (((i0 - first) / FA_ROWS) & 1) * 2 * FA_ROWS, *Ds = Ls + FA_ROWS;
		__syncthreads();   // the last tile's readers are done with dS^T, lse, delta and the other buffers
		int it = (int)((i0 - first) / FA_ROWS);   // this tile's round: its buffer it & 1
		if (i0 + FA_ROWS < S && !TMA) {   // (TMA: once the last round's dQ there is read, below)
			bf16 *next = qg + ((it + 1) & 1) * 2 * TILE;
			fa_tile_sw<DH>(next, q + base, D, i0 + FA_ROWS, S);
			fa_rows_f32(LDs + ((it + 1) & 1) * 2 * FA_ROWS, lse + blockIdx.x * S, delta + blockIdx.x * S,
				    i0 + FA_ROWS, S);
			fa_tile_sw<DH>(next + TILE, dy + base, D, i0 + FA_ROWS, S);
		}
		if (TMA && it > 0 && DQ_REDUCE)   // the last round's dQ, in the other buffer since the barrier above
			fa_dq_reduce<DH>((const float *)(qg + ((it - 1) & 1) * 2 * TILE), tdq, h, i0 - FA_ROWS, b);
		if (TMA) {   // Q, dO, lse and delta by the mbarrier's phase (the warp converged again for wgmma's .aligned)
			fa_mbar_wait(&bars[it & 1], (unsigned)(it >> 1) & 1);
			__syncwarp();
		} else if (i0 + FA_ROWS < S) {
			fa_wait<2>();
		} else {
			fa_wait<0>();
		}
		// this tile's lse and delta as the softmax takes them, each by the thread that copied
		// it (fa_rows_f32): lse in base 2 (+inf where a row has no key: P = 0 there), delta
		// times the scale, so that an element of dS^T is p (dp scale - delta scale)
		if (!TMA) {   // (TMA: k_attention_delta did so)
			if (threadIdx.x < 2 * FA_ROWS) {
				float *x = (float *)Ls + threadIdx.x;
				*x = threadIdx.x >= FA_ROWS ? *x * scale : *x == -INF ? INF : *x * FA_LOG2E;
			}
			asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
			__syncthreads();
		}
		float st[32], dp[32];   // [4 j + e]: keys 16 w + g (+ 8), queries i0 + 8 j + 2 t + e % 2
		if (ABL & 8) {
			for (int e = 0; e < 32; e++)
				st[e] = dp[e] = 0;
		} else {
			fa_wg_fence();
			for (int kk = 0; kk < DH / 16; kk++) {
				int at = kk / 4 * FA_ROWS * 64 + kk % 4 * 16;   // column block kk / 4, 32 bytes a k-step in it
				fa_wgss64<0, 0>(st, fa_desc_sw(Ks + at, 16), fa_desc_sw(Qs + at, 16), kk > 0);
				fa_wgss64<0, 0>(dp, fa_desc_sw(Vs + at, 16), fa_desc_sw(Gs + at, 16), kk > 0);
			}
			fa_wg_wait();
			fa_wg_done(st, 32);
			fa_wg_done(dp, 32);
		}
		if (TMA && i0 + FA_ROWS < S) {   // the next rows, where the last round's dQ was (read by now)
			if (threadIdx.x == 0 && DQ_REDUCE)
				asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
			fa_tma_pair<DH>(qg + ((it + 1) & 1) * 2 * TILE, tq, tdo, h, i0 + FA_ROWS, b, &bars[(it + 1) & 1],
					LDs + ((it + 1) & 1) * 2 * FA_ROWS, tld);
			__syncwarp();   // (thread 0's branch: warp 0 whole again before the next wgmma)
		}
		bool edge = mask || (causal && i0 < j0 + FA_ROWS - 1) || j0 + FA_ROWS > S;
		unsigned pa[4][4], sa[4][4];   // P^T and dS^T as A fragments, 16 queries each
		for (int n = 0; n < 8; n++) {
			float2 L = *(const float2 *)(Ls + n * 8 + 2 * t), Dd = *(const float2 *)(Ds + n * 8 + 2 * t);
			for (int e = 0; e < 2; e++) {
				float Lc = e ? L.y : L.x, Dc = e ? Dd.y : Dd.x;
				float p0 = ABL & 2 ? __saturatef(st[4 * n + e] * scale2 - Lc) : fa_exp2(st[4 * n + e] * scale2 - Lc),
				      p1 = ABL & 2 ? __saturatef(st[4 * n + 2 + e] * scale2 - Lc)
						   : fa_exp2(st[4 * n + 2 + e] * scale2 - Lc);
				if (edge) {
					int i = (int)i0 + n * 8 + 2 * t + e;   // S < 2^31 (the grid's y is at most 65,535 blocks)
					p0 = in0 && (!causal || (int)kr0 <= i) ? p0 : 0.0f;
					p1 = in1 && (!causal || (int)kr1 <= i) ? p1 : 0.0f;
				}
				st[4 * n + e] = p0;
				st[4 * n + 2 + e] = p1;
				dp[4 * n + e] = p0 * fmaf(dp[4 * n + e], scale, -Dc);
				dp[4 * n + 2 + e] = p1 * fmaf(dp[4 * n + 2 + e], scale, -Dc);
			}
			pa[n / 2][n % 2 * 2] = bf16x2(st[4 * n], st[4 * n + 1]);
			pa[n / 2][n % 2 * 2 + 1] = bf16x2(st[4 * n + 2], st[4 * n + 3]);
			sa[n / 2][n % 2 * 2] = bf16x2(dp[4 * n], dp[4 * n + 1]);
			sa[n / 2][n % 2 * 2 + 1] = bf16x2(dp[4 * n + 2], dp[4 * n + 3]);
			// dS^T's two queries of each row, side by side in the core matrix: keys 16 w + g
			// and 8 after (a row of core matrices, 1,024 bytes, on), queries 8 n + 2 t (a core
			// matrix, 128 bytes, an n)
			asm volatile("st.shared.b32 [%0], %1;" ::"r"(ds_at + n * 128), "r"(sa[n / 2][n % 2 * 2]) : "memory");
			asm volatile("st.shared.b32 [%0], %1;" ::"r"(ds_at + 1024 + n * 128), "r"(sa[n / 2][n % 2 * 2 + 1]) : "memory");
		}
		// dV += P^T dO, dK += dS^T Q: 16 queries a step, the tiles read transposed
		fa_wg_fence();
		for (int kc = 0; kc < 4 && !(ABL & 4); kc++) {
			fa_wg_pv<DH>(dva, pa[kc], fa_desc_sw(Gs + kc * 16 * 64, LBO));
			fa_wg_pv<DH>(dka, sa[kc], fa_desc_sw(Qs + kc * 16 * 64, LBO));
		}
		fa_wg_commit();   // left running while the block waits for dS^T and issues dQ's
		asm volatile("fence.proxy.async.shared::cta;" ::: "memory");   // dS^T, written by st.shared
		__syncthreads();
		// dQ [64 queries][DH] = dS K: dS is dS^T read transposed (8-query core matrices 128
		// bytes apart, 8-key ones 8 of those), K transposed as V above
		float dqa[DH / 2];   // [4 j + e]: queries i0 + 16 w + g (+ 8), columns 8 j + 2 t + e % 2
		fa_wg_fence();
		for (int kc = 0; kc < 4 && !(ABL & 1); kc++)
			fa_wgss_t<DH>(dqa, fa_desc_mn(dSs + kc * 16 * 64, 1024, 128), fa_desc_sw(Ks + kc * 16 * 64, LBO), kc > 0);
		fa_wg_wait();   // dV's and dK's groups and dQ's
		fa_wg_done(dva, DH / 2);
		fa_wg_done(dka, DH / 2);
		if (ABL & 1)
			continue;
		fa_wg_done(dqa, DH / 2);
		if (!DQ_PUT)
			continue;
		if (TMA) {   // into this round's Q and dO buffer, added into dq by the next round's thread 0
			fa_dq_put<DH>((float *)(qg + (it & 1) * 2 * TILE), dqa, threadIdx.x / 32);
			asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
			continue;
		}
		i64 q0 = i0 + w * 16 + g, q1 = q0 + 8;
		// four columns a red: lanes t and t ^ 1 swap halves, the even one adds row q0's
		// columns 2 t .. 2 t + 3, the odd one row q1's 2 t - 2 .. 2 t + 1
		bool odd = t & 1;
		i64 qr = odd ? q1 : q0;
		for (int d = 0; d < DH / 8; d++) {
			float s0 = __shfl_xor_sync(0xffffffffu, odd ? dqa[4 * d] : dqa[4 * d + 2], 1);
			float s1 = __shfl_xor_sync(0xffffffffu, odd ? dqa[4 * d + 1] : dqa[4 * d + 3], 1);
			float *p = dq + base + qr * D + d * 8 + 2 * (t & 2);
			if (qr < S) {
				if (odd)
					fa_red4(p, s0, s1, dqa[4 * d + 2], dqa[4 * d + 3]);
				else
					fa_red4(p, dqa[4 * d], dqa[4 * d + 1], s0, s1);
			}
		}
	}
	if (TMA && DQ_REDUCE) {   // the last round's dQ, and every reduction done before the block's shared memory goes
		__syncthreads();
		i64 last = first + (S - 1 - first) / FA_ROWS * FA_ROWS;
		fa_dq_reduce<DH>((const float *)(qg + (((last - first) / FA_ROWS) & 1) * 2 * TILE), tdq, h, last, b);
		if (threadIdx.x == 0)
			asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
	}
	// b and h afresh from blockIdx (in 32 bits), rather than kept live through the loop
	i64 ob = ((i64)(blockIdx.x / (unsigned)H) * S + kr0) * ldo + blockIdx.x % (unsigned)H * DH + 2 * t;
	fa_store_dkv<DH>(dk, dv, dka, dva, ob, ldo, kr0 < S, kr1 < S);
	if (SUMS)
		fa_bias_sums<DH>(dka, dva, kr0 < S, kr1 < S, (float *)dSs, part, H);
}

// flash_bwd_wg2's first GEMMs of a round, issued (not committed): S^T = K Q^T into st and
// dP^T = V dO^T into dp, K and V the warpgroup's tiles, Q at qs and dO a tile after it
template <int DH>
__device__ __forceinline__ void fa_bwd_sdp(float *st, float *dp, const bf16 *Kw, const bf16 *Vw, const bf16 *qs)
{
	const bf16 *Gs = qs + FA_ROWS * ((DH + 63) / 64 * 64);
	fa_wg_fence();
	for (int kk = 0; kk < DH / 16; kk++) {
		int at = kk / 4 * FA_ROWS * 64 + kk % 4 * 16;   // column block kk / 4, 32 bytes a k-step in it
		fa_wgss64<0, 0>(st, fa_desc_sw(Kw + at, 16), fa_desc_sw(qs + at, 16), kk > 0);
		fa_wgss64<0, 0>(dp, fa_desc_sw(Vw + at, 16), fa_desc_sw(Gs + at, 16), kk > 0);
	}
}

// Backward by wgmma over 128 keys a block (the default at heads of 96 with TMA; 0.7 ms of
// 15.7 a step quicker than flash_bwd_wg at 1.2b, twenty-second sitting; MGL_NO_FA_BWD_128=1
// for flash_bwd_wg): flash_bwd_wg's rounds in two warpgroups, warpgroup wg the keys 64 wg .. 64 wg + 63
// of the block's 128, both reading each query tile's Q, dO, lse and delta; dQ [64][DH] =
// dS K over all 128 keys, its columns split between the warpgroups at a column block of K's
// swizzled tiles (wg 0 the first 64, wg 1 the other DH - 64: a column block is the finest
// split of an MN-major operand; wg 1's wgmma is N = 64 too, its columns past DH unused), put into a buffer of its own (two, used in turn) and added
// into dq by TMA at the next round's start. Against flash_bwd_wg's 64 keys a block, half the
// dQ reductions and half the Q and dO loads for the same work (the twenty-first sitting's
// ablations: dQ's put and reduction were 4.1 of the backward's 15.8 ms at 1.2b, the
// reduction alone 2.3), and the next round's Q and dO are loaded at the round's start: the
// buffer they go to no longer waits for a reduction to read it. A causal block's first
// query tile is all masked for warpgroup 1 (its P zero). Grid (B * H, ceil(S / 128)), 256
// threads, flash_bwd_wg2_smem(DH) bytes of dynamic shared memory: K and V [128][DH] (two
// tiles each), two Q and two dO tiles, dS^T [128][64] (fa_cm<64>(key, query)), two dQ
// buffers [64][DH] (f32, fa_dq_put's layout), two lse and two delta [64], two mbarriers,
// and 1 KiB to align the tiles. SUMS: part[1 + kind] rows of 128 keys (R = B ceil(S / 128)).
template <int DH, bool SUMS>
__device__ void flash_bwd_wg2(const bf16 *k, const bf16 *v, const int *mask, bf16 *dk, bf16 *dv, i64 S, i64 H, i64 ldo,
			      int causal, float *part, const FaTmap *tq, const FaTmap *tdo, const FaTmap *tdq,
			      const FaTmap *tld)
{
	static_assert(DH > 64 && DH <= 128, "dQ's columns split at the first column block");
	constexpr int TILE = FA_ROWS * ((DH + 63) / 64 * 64);   // elements of a tile, its column blocks padded
	constexpr unsigned LBO = FA_ROWS * 128;                  // bytes between a tile's column blocks
	constexpr int N1 = DH - 64;                              // warpgroup 1's columns of dQ (0's: 64)
	extern __shared__ __align__(16) unsigned char fa_shared[];
	bf16 *Ks = (bf16 *)(fa_shared + ((1024 - (fa_smem(fa_shared) & 1023)) & 1023));   // keys 64 i .. at Ks + i TILE
	bf16 *Vs = Ks + 2 * TILE, *qg = Vs + 2 * TILE;   // buffer i: Q at qg + 2 i TILE, dO after it
	bf16 *dSs = qg + 4 * TILE;                        // dS^T, fa_cm<64>(key, query), 128 keys
	float *dqs = (float *)(dSs + 2 * FA_ROWS * FA_ROWS);   // dQ buffer i at dqs + i FA_ROWS DH (1,024-byte aligned)
	float *LDs = dqs + 2 * FA_ROWS * DH;                    // buffer i: lse at LDs + 2 i 64, delta 64 after it
	unsigned long long *bars = (unsigned long long *)(LDs + 4 * FA_ROWS);   // buffer i's Q, dO, lse and delta landed
	int lane = threadIdx.x % 32, wg = threadIdx.x / 128, w = threadIdx.x / 32 % 4, g = lane / 4, t = lane % 4;
	i64 b = blockIdx.x / H, h = blockIdx.x % H, D = H * DH, base = b * S * D + h * DH, j0 = blockIdx.y * 2 * FA_ROWS;
	i64 kj0 = j0 + wg * FA_ROWS, kr0 = kj0 + w * 16 + g, kr1 = kr0 + 8;   // the warpgroup's first key, the thread's
	bool in0 = kr0 < S && (!mask || mask[b * S + kr0]), in1 = kr1 < S && (!mask || mask[b * S + kr1]);
	float scale = rsqrtf((float)DH), scale2 = scale * FA_LOG2E;
	i64 first = causal ? j0 : 0;
	const bf16 *Kw = Ks + wg * TILE, *Vw = Vs + wg * TILE;
	fa_tile_sw<DH>(Ks, k + base, D, j0, S);
	fa_tile_sw<DH>(Ks + TILE, k + base, D, j0 + FA_ROWS, S);
	fa_tile_sw<DH>(Vs, v + base, D, j0, S);
	fa_tile_sw<DH>(Vs + TILE, v + base, D, j0 + FA_ROWS, S);
	fa_mbar_init2(bars);
	fa_tma_pair<DH>(qg, tq, tdo, h, first, b, &bars[0], LDs, tld);
	fa_wait<0>();
	asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
	float dka[DH / 2], dva[DH / 2];   // [4 j + e]: keys kj0 + 16 w + g (+ 8 for e >= 2), columns 8 j + 2 t + e % 2
	for (int d = 0; d < DH / 2; d++)
		dka[d] = dva[d] = 0;
	const unsigned ds_at = fa_smem(dSs + fa_cm<64>(wg * FA_ROWS + w * 16 + g, 2 * t));   // this thread's first dS^T element
	bool edge_keys = mask || kj0 + FA_ROWS > S;
	float st[32], dp[32];   // [4 j + e]: keys kj0 + 16 w + g (+ 8), queries i0 + 8 j + 2 t + e % 2
	for (i64 i0 = first; i0 < S; i0 += FA_ROWS) {
		int it = (int)((i0 - first) / FA_ROWS);   // this tile's round: its buffers it & 1
		const bf16 *Qs = qg + (it & 1) * 2 * TILE, *Gs = Qs + TILE;
		const float *Ls = LDs + (it & 1) * 2 * FA_ROWS, *Ds = Ls + FA_ROWS;
		__syncthreads();   // the last round done: its reads of dS^T and of its buffers, its dQ put and fenced
		if (threadIdx.x == 0 && i0 + FA_ROWS < S)   // the next round's, into the buffers the last round read
			fa_tma_pair<DH>(qg + ((it + 1) & 1) * 2 * TILE, tq, tdo, h, i0 + FA_ROWS, b, &bars[(it + 1) & 1],
					LDs + ((it + 1) & 1) * 2 * FA_ROWS, tld);
		if (it > 0)   // the last round's dQ (thread 0)
			fa_dq_reduce<DH>(dqs + ((it - 1) & 1) * FA_ROWS * DH, tdq, h, i0 - FA_ROWS, b);
		fa_mbar_wait(&bars[it & 1], (unsigned)(it >> 1) & 1);
		__syncwarp();   // (the warp converged again for wgmma's .aligned)
		fa_bwd_sdp<DH>(st, dp, Kw, Vw, Qs);
		fa_wg_wait();
		fa_wg_done(st, 32);
		fa_wg_done(dp, 32);
		bool edge = edge_keys || (causal && i0 < kj0 + FA_ROWS - 1);
		// (flash_bwd_wg's lines, from here to the wgmmas: a function of both changed
		// flash_bwd_wg's machine code, which heads of 64 and 128 run; twenty-second sitting)
		unsigned pa[4][4], sa[4][4];   // P^T and dS^T as A fragments, 16 queries each
		for (int n = 0; n < 8; n++) {
			float2 L = *(const float2 *)(Ls + n * 8 + 2 * t), Dd = *(const float2 *)(Ds + n * 8 + 2 * t);
			for (int e = 0; e < 2; e++) {
				float Lc = e ? L.y : L.x, Dc = e ? Dd.y : Dd.x;
				float p0 = fa_exp2(st[4 * n + e] * scale2 - Lc), p1 = fa_exp2(st[4 * n + 2 + e] * scale2 - Lc);
				if (edge) {
					int i = (int)i0 + n * 8 + 2 * t + e;   // S < 2^31 (the grid's y is at most 65,535 blocks)
					p0 = in0 && (!causal || (int)kr0 <= i) ? p0 : 0.0f;
					p1 = in1 && (!causal || (int)kr1 <= i) ? p1 : 0.0f;
				}
				st[4 * n + e] = p0;
				st[4 * n + 2 + e] = p1;
				dp[4 * n + e] = p0 * fmaf(dp[4 * n + e], scale, -Dc);
				dp[4 * n + 2 + e] = p1 * fmaf(dp[4 * n + 2 + e], scale, -Dc);
			}
			pa[n / 2][n % 2 * 2] = bf16x2(st[4 * n], st[4 * n + 1]);
			pa[n / 2][n % 2 * 2 + 1] = bf16x2(st[4 * n + 2], st[4 * n + 3]);
			sa[n / 2][n % 2 * 2] = bf16x2(dp[4 * n], dp[4 * n + 1]);
			sa[n / 2][n % 2 * 2 + 1] = bf16x2(dp[4 * n + 2], dp[4 * n + 3]);
			asm volatile("st.shared.b32 [%0], %1;" ::"r"(ds_at + n * 128), "r"(sa[n / 2][n % 2 * 2]) : "memory");
			asm volatile("st.shared.b32 [%0], %1;" ::"r"(ds_at + 1024 + n * 128), "r"(sa[n / 2][n % 2 * 2 + 1]) : "memory");
		}
		// dV += P^T dO, dK += dS^T Q: 16 queries a step, the tiles read transposed
		fa_wg_fence();
		for (int kc = 0; kc < 4; kc++) {
			fa_wg_pv<DH>(dva, pa[kc], fa_desc_sw(Gs + kc * 16 * 64, LBO));
			fa_wg_pv<DH>(dka, sa[kc], fa_desc_sw(Qs + kc * 16 * 64, LBO));
		}
		fa_wg_commit();   // left running while the block waits for dS^T and issues dQ's
		if (threadIdx.x == 0)   // the reduction of two rounds ago has read the dQ buffer this round's goes to
			asm volatile("cp.async.bulk.wait_group.read 1;" ::: "memory");
		__syncwarp();
		asm volatile("fence.proxy.async.shared::cta;" ::: "memory");   // dS^T, written by st.shared
		__syncthreads();
		// dQ [64 queries][64 or N1 columns] = dS K over the 128 keys: dS^T read transposed as
		// in flash_bwd_wg, K's column block wg
		float dqa[32];   // [4 j + e]: queries i0 + 16 w + g (+ 8), columns 64 wg + 8 j + 2 t + e % 2
		fa_wg_fence();
		for (int kc = 0; kc < 8; kc++)   // (both N = 64, wg 1's columns past DH unused, K's padding
						  // there never written: a wgmma in a branch of wg serialises
						  // them all, ptxas's C7520)
			fa_wgss64<1, 1>(dqa, fa_desc_mn(dSs + kc * 16 * 64, 1024, 128),
					fa_desc_sw(Ks + kc / 4 * TILE + kc % 4 * 16 * 64 + wg * FA_ROWS * 64, LBO), kc > 0);
		fa_wg_wait();   // dV's and dK's groups and dQ's
		fa_wg_done(dva, DH / 2);
		fa_wg_done(dka, DH / 2);
		fa_wg_done(dqa, 32);
		float *dqb = dqs + (it & 1) * FA_ROWS * DH;
		if (wg == 0)
			fa_dq_put<64>(dqb, dqa, w);
		else
			fa_dq_put<N1>(dqb + 2 * FA_ROWS * 32, dqa, w);
		asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
	}
	__syncthreads();   // the last round's dQ, and every reduction done before the block's shared memory goes
	i64 last = first + (S - 1 - first) / FA_ROWS * FA_ROWS;
	fa_dq_reduce<DH>(dqs + (((last - first) / FA_ROWS) & 1) * FA_ROWS * DH, tdq, h, last, b);
	if (threadIdx.x == 0)
		asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
	i64 ob = ((i64)(blockIdx.x / (unsigned)H) * S + kr0) * ldo + blockIdx.x % (unsigned)H * DH + 2 * t;
	fa_store_dkv<DH>(dk, dv, dka, dva, ob, ldo, kr0 < S, kr1 < S);
	if (SUMS)
		fa_bias_sums<DH, 8>(dka, dva, kr0 < S, kr1 < S, (float *)dSs, part, H);
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// Backward. grid (B * H, ceil(S / 64)), 128 threads, flash_bwd_smem(DH) bytes of dynamic
// shared memory; warp w owns keys 16w .. 16w + 15 of the block's 64 and accumulates their dK
// and dV in registers over the query tiles of 32 (from the diagonal when causal; Q and dO
// tiles two of each, the next pair copied by cp.async while this one is used): S^T = K Q^T,
// P^T = exp(S^T - lse), dP^T = V dO^T, dS^T = P^T (dP^T - delta) scale, dV += P^T dO,
// dK += dS^T Q; dQ += dS K is shared by the blocks of a head, added atomically into dq (f32,
// zeroed before, converted after). delta [B, H, S] = rowsum(dO o) from k_attention_delta.
// dy, q, k, v and dq [B, S, D = H DH]; dk and dv [B, S, ldo], their columns h DH .. written
// (a column slice of a wider buffer where ldo > D: ldo even and dk, dv 4-byte aligned, as
// the stores are of pairs).
template <int DH>
__device__ void flash_bwd(const bf16 *dy, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
			  const float *delta, const int *mask, float *dq, bf16 *dk, bf16 *dv, i64 S, i64 H, i64 ldo,
			  int causal)
{
	constexpr int LD = DH + 8, LDS = FA_ROWS + 8, DQC = DH % 32 == 0 ? DH / 2 : DH;
	constexpr int QTILE = FA_BWD_Q * LD;
	extern __shared__ __align__(16) unsigned char fa_shared[];
	bf16 *Ks = (bf16 *)fa_shared, *Vs = Ks + FA_ROWS * LD, *qg = Vs + FA_ROWS * LD;   // buffer i: Q at qg + 2 i QTILE, dO after it
	bf16 *dSs = qg + 4 * QTILE;
	float *Ls = (float *)(dSs + FA_BWD_Q * LDS), *Ds = Ls + FA_BWD_Q;
	int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, t = lane % 4;
	i64 b = blockIdx.x / H, h = blockIdx.x % H, D = H * DH, base = b * S * D + h * DH, j0 = blockIdx.y * FA_ROWS;
	i64 kr0 = j0 + w * 16 + g, kr1 = kr0 + 8;
	bool in0 = kr0 < S && (!mask || mask[b * S + kr0]), in1 = kr1 < S && (!mask || mask[b * S + kr1]);
	float scale = rsqrtf((float)DH), scale2 = scale * FA_LOG2E;
	i64 first = causal ? j0 : 0;
	fa_tile<DH>(Ks, k + base, D, j0, FA_ROWS, S);
	fa_tile<DH>(Vs, v + base, D, j0, FA_ROWS, S);
	fa_tile<DH>(qg, q + base, D, first, FA_BWD_Q, S);
	fa_tile<DH>(qg + QTILE, dy + base, D, first, FA_BWD_Q, S);
	float dka[DH / 8][4], dva[DH / 8][4];
	for (int d = 0; d < DH / 8; d++)
		for (int e = 0; e < 4; e++)
			dka[d][e] = dva[d][e] = 0;
	for (i64 i0 = first; i0 < S; i0 += FA_BWD_Q) {
		const bf16 *Qs = qg + (((i0 - first) / FA_BWD_Q) & 1) * 2 * QTILE, *Gs = Qs + QTILE;
		__syncthreads();   // the last tile's readers are done with its dS, lse, delta and the other buffers
		if (i0 + FA_BWD_Q < S) {
			bf16 *next = qg + (((i0 - first) / FA_BWD_Q + 1) & 1) * 2 * QTILE;
			fa_tile<DH>(next, q + base, D, i0 + FA_BWD_Q, FA_BWD_Q, S);
			fa_tile<DH>(next + QTILE, dy + base, D, i0 + FA_BWD_Q, FA_BWD_Q, S);
		}
		if (threadIdx.x < FA_BWD_Q) {
			i64 i = i0 + threadIdx.x;
			float L = i < S ? lse[blockIdx.x * S + i] : -INF;
			Ls[threadIdx.x] = L == -INF ? INF : L * FA_LOG2E;   // +inf: P = 0 for rows with no key
			Ds[threadIdx.x] = i < S ? delta[blockIdx.x * S + i] : 0.0f;
		}
		if (i0 + FA_BWD_Q < S)
			fa_wait<2>();   // all but the next pair's two groups
		else
			fa_wait<0>();
		__syncthreads();
		float st[4][4], dp[4][4];   // [16 keys x 32 queries]: S^T then P^T; dP^T then dS^T
		for (int n = 0; n < 4; n++)
			for (int e = 0; e < 4; e++)
				st[n][e] = dp[n][e] = 0;
		for (int kk = 0; kk < DH / 16; kk++) {
			unsigned ka[4], va[4];
			fa_ldsm(ka, Ks + w * 16 * LD + kk * 16, LD);
			fa_ldsm(va, Vs + w * 16 * LD + kk * 16, LD);
			for (int n = 0; n < 4; n += 2) {
				unsigned qb[4], gb[4];
				fa_ldsm(qb, Qs + n * 8 * LD + kk * 16, LD);
				fa_ldsm(gb, Gs + n * 8 * LD + kk * 16, LD);
				fa_mma(st[n], ka, qb[0], qb[2]);
				fa_mma(st[n + 1], ka, qb[1], qb[3]);
				fa_mma(dp[n], va, gb[0], gb[2]);
				fa_mma(dp[n + 1], va, gb[1], gb[3]);
			}
		}
		// masks only in the tiles that have masked pairs: the diagonal, padding, keys past S
		// (queries past S have lse +inf, so P = 0 without one)
		bool edge = mask || (causal && i0 < j0 + FA_ROWS - 1) || j0 + FA_ROWS > S;
		unsigned pa[2][4], sa[2][4];
		for (int n = 0; n < 4; n++) {
			for (int e = 0; e < 2; e++) {
				int c = n * 8 + 2 * t + e;
				i64 i = i0 + c;
				float p0 = fa_exp2(st[n][e] * scale2 - Ls[c]), p1 = fa_exp2(st[n][2 + e] * scale2 - Ls[c]);
				if (edge) {
					p0 = in0 && (!causal || kr0 <= i) ? p0 : 0.0f;
					p1 = in1 && (!causal || kr1 <= i) ? p1 : 0.0f;
				}
				st[n][e] = p0;
				st[n][2 + e] = p1;
				dp[n][e] = p0 * (dp[n][e] - Ds[c]) * scale;
				dp[n][2 + e] = p1 * (dp[n][2 + e] - Ds[c]) * scale;
				dSs[c * LDS + w * 16 + g] = f2bf(dp[n][e]);
				dSs[c * LDS + w * 16 + g + 8] = f2bf(dp[n][2 + e]);
			}
			pa[n / 2][n % 2 * 2] = bf16x2(st[n][0], st[n][1]);
			pa[n / 2][n % 2 * 2 + 1] = bf16x2(st[n][2], st[n][3]);
			sa[n / 2][n % 2 * 2] = bf16x2(dp[n][0], dp[n][1]);
			sa[n / 2][n % 2 * 2 + 1] = bf16x2(dp[n][2], dp[n][3]);
		}
		for (int kc = 0; kc < 2; kc++)
			for (int d = 0; d < DH / 16; d++) {
				unsigned bg[4], bq[4];
				fa_ldsm_t(bg, Gs + kc * 16 * LD + d * 16, LD);
				fa_ldsm_t(bq, Qs + kc * 16 * LD + d * 16, LD);
				fa_mma(dva[2 * d], pa[kc], bg[0], bg[1]);
				fa_mma(dva[2 * d + 1], pa[kc], bg[2], bg[3]);
				fa_mma(dka[2 * d], sa[kc], bq[0], bq[1]);
				fa_mma(dka[2 * d + 1], sa[kc], bq[2], bq[3]);
			}
		__syncthreads();   // dS complete
		// dQ [32 queries x DH]: warp w the queries 16 (w % 2) .., the columns DQC (w / 2) ..
		int c0 = DQC * (w / 2);
		if (c0 < DH) {
			float dqa[DQC / 8][4];
			for (int d = 0; d < DQC / 8; d++)
				dqa[d][0] = dqa[d][1] = dqa[d][2] = dqa[d][3] = 0;
			for (int kc = 0; kc < FA_ROWS / 16; kc++) {
				unsigned a[4];
				fa_ldsm(a, dSs + (w % 2) * 16 * LDS + kc * 16, LDS);
				for (int d = 0; d < DQC / 16; d++) {
					unsigned bk[4];
					fa_ldsm_t(bk, Ks + kc * 16 * LD + c0 + d * 16, LD);
					fa_mma(dqa[2 * d], a, bk[0], bk[1]);
					fa_mma(dqa[2 * d + 1], a, bk[2], bk[3]);
				}
			}
			i64 q0 = i0 + (w % 2) * 16 + g, q1 = q0 + 8;
			for (int d = 0; d < DQC / 8; d++) {
				float *p = dq + base + q0 * D + c0 + d * 8 + 2 * t;
				if (q0 < S)
					fa_red2(p, dqa[d][0], dqa[d][1]);
				if (q1 < S)
					fa_red2(p + 8 * D, dqa[d][2], dqa[d][3]);
			}
		}
	}
	// b and h afresh from blockIdx (in 32 bits), rather than kept live through the loop
	i64 ob = ((i64)(blockIdx.x / (unsigned)H) * S + kr0) * ldo + blockIdx.x % (unsigned)H * DH + 2 * t;
	for (int d = 0; d < DH / 8; d++) {
		i64 o0 = ob + d * 8;
		if (kr0 < S) {
			*(unsigned *)(dk + o0) = bf16x2(dka[d][0], dka[d][1]);
			*(unsigned *)(dv + o0) = bf16x2(dva[d][0], dva[d][1]);
		}
		if (kr1 < S) {
			*(unsigned *)(dk + o0 + 8 * ldo) = bf16x2(dka[d][2], dka[d][3]);
			*(unsigned *)(dv + o0 + 8 * ldo) = bf16x2(dva[d][2], dva[d][3]);
		}
	}
}

// delta[B, H, S] = rowsum(dy o) a head (flash_bwd's D), G lanes a row (a power of two to
// 32): 8 columns a lane by 16-byte loads where G * 8 >= dh, dh % 8 == 0 and the rows are
// aligned, else a column a lane in turn. With lse [B, H, S] (flash_bwd_wg's TMA): delta
// [2][B, H][Sp] (rows of Sp >= S, for TMA's 16-byte strides): [0] lse in base 2 (+inf for
// -inf: a row with no key), [1] rowsum(dy o) times the scale 1 / sqrt(dh). Also zeros
// written to zero [B, S, H dh] (f32, 16-byte aligned: the flash backward's dq) beside the
// loads, instead of a memset of 4 bytes an element before (0.38 ms of a 1.2b step,
// twenty-third sitting).
extern "C" __global__ void k_attention_delta(const bf16 *dy, const bf16 *o, const float *lse, float *delta, i64 B,
					     i64 S, i64 Sp, i64 H, i64 dh, int G, float *zero)
{
	int l = threadIdx.x % G;
	i64 w = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / G;
	bool vec = dh % 8 == 0 && dh <= 8 * G && ((unsigned long long)dy | (unsigned long long)o) % 16 == 0;
	i64 i = w % S, h = w / S % H, b = w / (S * H), base = (b * S + i) * H * dh + h * dh;
	float s = 0;
	if (w < B * H * S) {
		if (vec && l * 8 < dh) {
			uint4 a = *(const uint4 *)(dy + base + l * 8), c = *(const uint4 *)(o + base + l * 8);
			float4 z = make_float4(0, 0, 0, 0);
			*(float4 *)(zero + base + l * 8) = z;
			*(float4 *)(zero + base + l * 8 + 4) = z;
			unsigned x[4] = {a.x, a.y, a.z, a.w}, y[4] = {c.x, c.y, c.z, c.w};
			for (int e = 0; e < 8; e++)
				s += bf2f((bf16)(x[e / 2] >> (e % 2 * 16))) * bf2f((bf16)(y[e / 2] >> (e % 2 * 16)));
		} else if (!vec) {
			for (i64 c = l; c < dh; c += G) {
				s += bf2f(dy[base + c]) * bf2f(o[base + c]);
				zero[base + c] = 0;
			}
		}
	}
	for (int m = G / 2; m > 0; m /= 2)   // every lane of the warp takes part (rows past the end with 0)
		s += __shfl_xor_sync(0xffffffffu, s, m, G);
	if (l == 0 && w < B * H * S) {
		if (!lse) {
			delta[(b * H + h) * S + i] = s;
		} else {   // prepared for flash_bwd_wg's TMA: [0] lse in base 2 (+inf where -inf), [1] delta times the scale
			float x = lse[(b * H + h) * S + i];
			delta[(b * H + h) * Sp + i] = x == -INF ? INF : x * FA_LOG2E;
			delta[(B * H + b * H + h) * Sp + i] = s * rsqrtf((float)dh);
		}
	}
}

extern "C" {

#if __CUDA_ARCH__ >= 800
#define FA_BODY(x) x
#else
#define FA_BODY(x)   // mma.sync on bf16 needs sm_80; the host picks k_attention there
#endif
// blocks an SM the backward is built for: 3 (168 registers) at head sizes to 64, where that
// spills a few bytes but hides more latency; the registers it wants (up to 255) above
#ifndef FA_BWD_BLOCKS
#define FA_BWD_BLOCKS(DH) ((DH) <= 64 ? 3 : 1)
#endif
#define FLASH(DH)                                                                                                    \
	__global__ void __launch_bounds__(128) k_flash_fwd_##DH(const bf16 *q, const bf16 *k, const bf16 *v,          \
								 const int *mask, bf16 *o, float *lse, i64 S, i64 H,   \
								 int causal)                                            \
	{                                                                                                            \
		FA_BODY(flash_fwd<DH>(q, k, v, mask, o, lse, S, H, causal);)                                          \
	}                                                                                                            \
	__global__ void __launch_bounds__(128, FA_BWD_BLOCKS(DH))                                                     \
	    k_flash_bwd_##DH(const bf16 *dy, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,          \
			     const float *delta, const int *mask, float *dq, bf16 *dk, bf16 *dv, i64 S, i64 H,       \
			     i64 ldo, int causal)                                                                    \
	{                                                                                                            \
		FA_BODY(flash_bwd<DH>(dy, q, k, v, lse, delta, mask, dq, dk, dv, S, H, ldo, causal);)                 \
	}
// the backward by wgmma, on sm_90a; the host picks it on compute capability 9.0 alone
#ifdef FA_WGMMA
#define FA_WG_BODY(x) x
#else
#define FA_WG_BODY(x)
#endif
#define FLASH_BWD_WG(DH)                                                                                             \
	__global__ void __launch_bounds__(128) k_flash_bwd_wg_##DH(                                                   \
	    const bf16 *dy, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse, const float *delta,       \
	    const int *mask, float *dq, bf16 *dk, bf16 *dv, i64 S, i64 H, i64 ldo, int causal)                       \
	{                                                                                                            \
		FA_WG_BODY((flash_bwd_wg<DH, false>(dy, q, k, v, lse, delta, mask, dq, dk, dv, S, H, ldo, causal, NULL));) \
	}
// ... and with the bias sums into part (flash_bwd_wg), at heads of 64 and 96 (at 128 the
// sums would spill: 255 registers)
#define FLASH_BWD_WG_SUMS(DH)                                                                                        \
	__global__ void __launch_bounds__(128) k_flash_bwd_wg_sums_##DH(                                              \
	    const bf16 *dy, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse, const float *delta,       \
	    const int *mask, float *dq, bf16 *dk, bf16 *dv, i64 S, i64 H, i64 ldo, int causal, float *part)          \
	{                                                                                                            \
		FA_WG_BODY((flash_bwd_wg<DH, true>(dy, q, k, v, lse, delta, mask, dq, dk, dv, S, H, ldo, causal, part));) \
	}
// ... and either with Q, dO, lse and delta copied and dQ added by TMA (the default on 9.0:
// runtime/cuda/ops.c)
#define FLASH_BWD_WG_TMA(DH)                                                                                         \
	__global__ void __launch_bounds__(128) k_flash_bwd_wg_tma_##DH(                                               \
	    const bf16 *dy, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse, const float *delta,       \
	    const int *mask, float *dq, bf16 *dk, bf16 *dv, i64 S, i64 H, i64 ldo, int causal,                       \
	    const __grid_constant__ FaTmap tq, const __grid_constant__ FaTmap tdo, const __grid_constant__ FaTmap tdq, \
	    const __grid_constant__ FaTmap tld)                                                                      \
	{                                                                                                            \
		FA_WG_BODY((flash_bwd_wg<DH, false, true>(dy, q, k, v, lse, delta, mask, dq, dk, dv, S, H, ldo, causal,  \
							  NULL, &tq, &tdo, &tdq, &tld));)                             \
	}
// (NAME, ABL: also its ablations, for timing: runtime/cuda/ops.c, MGL_FA_BWD_ABL)
#define FLASH_BWD_WG_SUMS_TMA(DH, NAME, ABL)                                                                         \
	__global__ void __launch_bounds__(128) NAME(                                                                 \
	    const bf16 *dy, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse, const float *delta,       \
	    const int *mask, float *dq, bf16 *dk, bf16 *dv, i64 S, i64 H, i64 ldo, int causal, float *part,          \
	    const __grid_constant__ FaTmap tq, const __grid_constant__ FaTmap tdo, const __grid_constant__ FaTmap tdq, \
	    const __grid_constant__ FaTmap tld)                                                                      \
	{                                                                                                            \
		FA_WG_BODY((flash_bwd_wg<DH, true, true, ABL>(dy, q, k, v, lse, delta, mask, dq, dk, dv, S, H, ldo,      \
							      causal, part, &tq, &tdo, &tdq, &tld));)                 \
	}
// ... over 128 keys a block in two warpgroups (flash_bwd_wg2), with the bias sums or without
#define FLASH_BWD_WG2(DH, NAME, SUMS)                                                                          \
	__global__ void __launch_bounds__(256, 1) NAME(                                                              \
	    const bf16 *dy, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse, const float *delta,       \
	    const int *mask, float *dq, bf16 *dk, bf16 *dv, i64 S, i64 H, i64 ldo, int causal, float *part,          \
	    const __grid_constant__ FaTmap tq, const __grid_constant__ FaTmap tdo, const __grid_constant__ FaTmap tdq, \
	    const __grid_constant__ FaTmap tld)                                                                      \
	{                                                                                                            \
		FA_WG_BODY((flash_bwd_wg2<DH, SUMS>(k, v, mask, dk, dv, S, H, ldo, causal, part, &tq, &tdo, &tdq,   \
							  &tld));)                                                    \
	}
// the forward by wgmma on swizzled tiles, 256 threads (flash_fwd_sw)
#define FLASH_FWD_SW(DH)                                                                                             \
	__global__ void __launch_bounds__(256, FA_SW_BLOCKS(DH)) k_flash_fwd_sw_##DH(                                 \
	    const bf16 *q, const bf16 *k, const bf16 *v, const int *mask, bf16 *o, float *lse, i64 S, i64 H, int causal) \
	{                                                                                                            \
		FA_WG_BODY(flash_fwd_sw<DH>(q, k, v, mask, o, lse, S, H, causal);)                                     \
	}
// ... and with K and V copied by TMA (the default on 9.0), its two warpgroups not held
// together by a block barrier each K and V tile: each hands a buffer back when its wgmmas are
// done with it, and the second to do so loads the tile after next into it (at heads of 64 the
// forward 5-6% quicker than with the barrier, the same at 96: perf-notes, nineteenth and
// twentieth sittings); QS, the _qs_ one (heads of 96:
// runtime/cuda/ops.c's fwd_qs): Q's tiles in shared memory, S by wgmma from shared memory on
// both sides, instead of Q's A fragments held in registers (DH / 2 of them: 48 at 96, where
// ptxas spills and serialises the wgmmas for want of registers at two blocks an SM)
// (PIPE, the _qs_pipe_ one, the default at heads of 96: each tile's S issued behind the tile
// before's P V, 0.17 ms of a 1.2b step quicker, twenty-third sitting; MGL_NO_FA_FWD_PIPE=1
// for the _qs_ one)
#define FLASH_FWD_SW_TMA(DH, NAME, QS, PIPE)                                                                         \
	__global__ void __launch_bounds__(256, FA_SW_BLOCKS(DH)) NAME##DH(                                            \
	    const bf16 *q, const bf16 *k, const bf16 *v, const int *mask, bf16 *o, float *lse, i64 S, i64 H, int causal, \
	    const __grid_constant__ FaTmap tk, const __grid_constant__ FaTmap tv)                                    \
	{                                                                                                            \
		FA_WG_BODY((flash_fwd_sw<DH, true, QS, PIPE>(q, k, v, mask, o, lse, S, H, causal, &tk, &tv));)         \
	}
FLASH_BWD_WG(64)
FLASH_BWD_WG(96)
FLASH_BWD_WG(128)
FLASH_BWD_WG_SUMS(64)
FLASH_BWD_WG_SUMS(96)
FLASH_BWD_WG_TMA(64)
FLASH_BWD_WG_TMA(96)
FLASH_BWD_WG_TMA(128)
FLASH_BWD_WG_SUMS_TMA(64, k_flash_bwd_wg_sums_tma_64, 0)
FLASH_BWD_WG_SUMS_TMA(96, k_flash_bwd_wg_sums_tma_96, 0)
FLASH_BWD_WG_SUMS_TMA(96, k_flash_bwd_wg_abl_1_96, 1)
FLASH_BWD_WG_SUMS_TMA(96, k_flash_bwd_wg_abl_2_96, 2)
FLASH_BWD_WG_SUMS_TMA(96, k_flash_bwd_wg_abl_4_96, 4)
FLASH_BWD_WG_SUMS_TMA(96, k_flash_bwd_wg_abl_8_96, 8)
FLASH_BWD_WG_SUMS_TMA(96, k_flash_bwd_wg_abl_16_96, 16)
FLASH_BWD_WG_SUMS_TMA(96, k_flash_bwd_wg_abl_32_96, 32)
FLASH_BWD_WG2(96, k_flash_bwd_wg2_tma_96, false)
FLASH_BWD_WG2(96, k_flash_bwd_wg2_sums_tma_96, true)
FLASH_FWD_SW(64)
FLASH_FWD_SW(96)
FLASH_FWD_SW(128)
FLASH_FWD_SW_TMA(64, k_flash_fwd_sw_tma_, false, false)
FLASH_FWD_SW_TMA(96, k_flash_fwd_sw_tma_qs_, true, false)
FLASH_FWD_SW_TMA(96, k_flash_fwd_sw_tma_qs_pipe_, true, true)
FLASH_FWD_SW_TMA(128, k_flash_fwd_sw_tma_, false, false)
FLASH(16)
FLASH(32)
FLASH(64)
FLASH(96)
FLASH(128)

}  // extern "C"
