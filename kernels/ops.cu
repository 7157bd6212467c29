// kernels/ops.cu — the cuda backend's kernels, compiled at run time by NVRTC.
//
// Each kernel is the twin of a function in runtime/cpu.c (the reference they are tested
// against, tests/gpu/): same op, same inputs, same meaning. Storage types follow the
// plan: activations bf16 or f32 (as the value says: dtype codes DT_*), ids int32,
// parameters fp32 masters (plus a bf16 copy for GEMMs, made by adamw), gradients fp32.
// Values whose dtype a kernel does not fix are read and written through ld/st with a dtype
// code: a branch uniform across the warp, cheap next to the memory access.
//
// No headers: NVRTC runs on machines with no toolkit headers installed (bf16 conversion is
// done by hand, round to nearest even, as __float2bfloat16 does).

typedef unsigned short bf16;
typedef long long i64;
#define INF __int_as_float(0x7f800000)

enum { DT_F32 = 0, DT_I32 = 1, DT_BF16 = 2 };   // MglDtype

__device__ __forceinline__ float bf2f(bf16 x) { return __uint_as_float(((unsigned)x) << 16); }
__device__ __forceinline__ bf16 f2bf(float f)
{
	unsigned u = __float_as_uint(f);
	if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))   // NaN stays NaN
		return (bf16)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1u);
	return (bf16)(u >> 16);
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
#define GELU_C 0.7978845608028654f
__device__ __forceinline__ float gelu_f(float v) { return 0.5f * v * (1.0f + tanhf(GELU_C * (v + 0.044715f * v * v * v))); }
__device__ __forceinline__ float gelu_b(float g, float v)
{
	float t = tanhf(GELU_C * (v + 0.044715f * v * v * v)), du = GELU_C * (1.0f + 3.0f * 0.044715f * v * v);
	return g * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
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

// db[N] (+)= column sums of dy[M, N]: a thread a column, rows in order
__global__ void k_bias_grad(const void *dy, int ddt, float *db, i64 M, i64 N, int acc)
{
	FOR_EACH(j, N) {
		float s = 0;
		for (i64 i = 0; i < M; i++)
			s += ld(dy, ddt, i * N + j);
		db[j] = acc ? db[j] + s : s;
	}
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

__global__ void k_layernorm(const void *x, int xdt, const float *w, const float *b, void *y, int ydt, i64 M, i64 D, float eps)
{
	i64 row = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32;
	if (row >= M)
		return;
	float mean, rstd;
	row_moments(x, xdt, row, D, eps, &mean, &rstd);
	for (i64 k = threadIdx.x % 32; k < D; k += 32)
		st(y, ydt, row * D + k, (ld(x, xdt, row * D + k) - mean) * rstd * w[k] + b[k]);
}

// (dy, x, w) -> dx; dw, db added atomically (they are gradient buffers)
__global__ void k_layernorm_bwd(const void *dy, int gdt, const void *x, int xdt, const float *w, void *dx, int dxdt,
				float *dw, float *db, i64 M, i64 D, float eps)
{
	i64 row = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32;
	if (row >= M)
		return;
	float mean, rstd;
	row_moments(x, xdt, row, D, eps, &mean, &rstd);
	float sg = 0, sgx = 0;
	for (i64 k = threadIdx.x % 32; k < D; k += 32) {
		float g = ld(dy, gdt, row * D + k), xh = (ld(x, xdt, row * D + k) - mean) * rstd;
		sg += g * w[k];
		sgx += g * w[k] * xh;
		atomicAdd(&dw[k], g * xh);
		atomicAdd(&db[k], g);
	}
	sg = warp_sum(sg) / (float)D;
	sgx = warp_sum(sgx) / (float)D;
	for (i64 k = threadIdx.x % 32; k < D; k += 32) {
		float g = ld(dy, gdt, row * D + k), xh = (ld(x, xdt, row * D + k) - mean) * rstd;
		st(dx, dxdt, row * D + k, rstd * (g * w[k] - sg - xh * sgx));
	}
}

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

// (dy, x, w) -> dx; dw added atomically (a gradient buffer)
__global__ void k_rmsnorm_bwd(const void *dy, int gdt, const void *x, int xdt, const float *w, void *dx, int dxdt,
			      float *dw, i64 M, i64 D, float eps)
{
	i64 row = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32;
	if (row >= M)
		return;
	float r = row_rms(x, xdt, row, D, eps), sgx = 0;
	for (i64 k = threadIdx.x % 32; k < D; k += 32) {
		float g = ld(dy, gdt, row * D + k), v = ld(x, xdt, row * D + k);
		sgx += g * w[k] * v;
		atomicAdd(&dw[k], g * v * r);
	}
	float m = warp_sum(sgx) / (float)D * r * r * r;
	for (i64 k = threadIdx.x % 32; k < D; k += 32)
		st(dx, dxdt, row * D + k, r * ld(dy, gdt, row * D + k) * w[k] - m * ld(x, xdt, row * D + k));
}

__global__ void k_gelu(const void *x, int xdt, void *y, int ydt, i64 n)
{
	FOR_EACH(i, n) st(y, ydt, i, gelu_f(ld(x, xdt, i)));
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

// out[no] (+)= sum over the leading copies of dy[n] (a suffix broadcast)
__global__ void k_sum_to(const void *dy, int gdt, i64 n, void *out, int odt, i64 no, int acc)
{
	FOR_EACH(j, no) {
		float s = 0;
		for (i64 i = j; i < n; i += no)
			s += ld(dy, gdt, i);
		st(out, odt, j, acc ? ld(out, odt, j) + s : s);
	}
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

// Backward: a warp per query row; dq in registers, dk and dv added atomically into fp32
// scratch (converted by k_convert afterwards).
__global__ void k_attention_bwd(const bf16 *dy, const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *o,
				const float *lse, const int *mask, bf16 *dq, float *dk, float *dv, i64 B, i64 S, i64 H,
				i64 dh, int causal)
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
	for (int t = 0; t < 8; t++)
		if (lane + 32 * t < dh)
			dq[base + lane + 32 * t] = f2bf(dqv[t]);
}

__global__ void k_convert(const void *in, int idt, void *out, int odt, i64 n)
{
	FOR_EACH(i, n) st(out, odt, i, ld(in, idt, i));
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

// The vocabulary-parallel loss: columns [0, valid) of this rank's N are real.
__global__ void k_vocab_max(const void *z, int zdt, float *mx, i64 M, i64 N, i64 valid)
{
	i64 row = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32;
	if (row >= M)
		return;
	float m = -INF;
	for (i64 j = threadIdx.x % 32; j < valid; j += 32)
		m = fmaxf(m, ld(z, zdt, row * N + j));
	m = warp_max(m);
	if (threadIdx.x % 32 == 0)
		mx[row] = m;
}

__global__ void k_vocab_stats(const void *z, int zdt, const int *t, const float *mx, float *stats, i64 M, i64 N,
			      i64 valid, i64 start)
{
	i64 row = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32;
	if (row >= M)
		return;
	float s = 0;
	for (i64 j = threadIdx.x % 32; j < valid; j += 32)
		s += __expf(ld(z, zdt, row * N + j) - mx[row]);
	s = warp_sum(s);
	if (threadIdx.x % 32 == 0) {
		i64 col = (i64)t[row] - start;
		stats[2 * row] = s;
		stats[2 * row + 1] = col >= 0 && col < valid ? ld(z, zdt, row * N + col) : 0.0f;
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

__global__ void k_ce_bwd(const float *dloss, const void *z, int zdt, const int *t, const float *lse, const float *count,
			 void *dz, int dzdt, i64 M, i64 N, i64 valid, i64 start, i64 ignore)
{
	FOR_EACH(i, M * N) {
		i64 r = i / N, j = i % N;
		float g = 0;
		bool kept = t[r] != ignore;
		if (kept && j < valid && count[0] > 0) {
			float sc = dloss[0] / count[0];
			g = sc * __expf(ld(z, zdt, i) - lse[r]);
			if (j == (i64)t[r] - start)
				g -= sc;
		}
		st(dz, dzdt, i, g);
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

// sum of squares of g[n] into *acc (atomic; the order of blocks is not fixed)
__global__ void k_sumsq(const float *g, i64 n, float *acc)
{
	float s = 0;
	FOR_EACH(i, n) s += g[i] * g[i];
	s = warp_sum(s);
	if (threadIdx.x % 32 == 0)
		atomicAdd(acc, s);
}

// AdamW on a shard, after clipping to the global norm; writes the bf16 copy GEMMs read
__global__ void k_adamw(float *w, const float *g, float *m, float *v, bf16 *w16, const float *norm2, const Run *run,
			int decay, i64 n)
{
	float norm = sqrtf(norm2[0]), scale = run->clip > 0 && norm > run->clip ? run->clip / norm : 1.0f;
	float wd = decay ? run->weight_decay : 0.0f;
	FOR_EACH(i, n) {
		float gi = g[i] * scale;
		float mi = run->beta1 * m[i] + (1 - run->beta1) * gi, vi = run->beta2 * v[i] + (1 - run->beta2) * gi * gi;
		m[i] = mi;
		v[i] = vi;
		float wi = w[i] - run->lr * ((mi / run->bc1) / (sqrtf(vi / run->bc2) + run->eps) + wd * w[i]);
		w[i] = wi;
		if (w16)
			w16[i] = f2bf(wi);
	}
}

}  // extern "C"
