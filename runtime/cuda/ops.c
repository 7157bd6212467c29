/* runtime/cuda/ops.c — the cuda backend's ops: for each op of a plan, a launch of its
 * kernel of kernels/ops.cu (each the twin of a function in runtime/cpu.c), a cuBLASLt GEMM
 * (bf16 in, fp32 compute; a bias, and a gelu after it, that the plan marks as the GEMM's
 * epilogue applied by cuBLASLt), or an NCCL collective.
 *
 * Collectives run on a stream of their own: the compute stream records an event, the
 * communication stream waits for it, communicates, and records an event the compute
 * stream waits on before the step that reads the result.
 */
#include "internal.h"

#include <cuda.h>   /* CUtensorMap and its enums alone: the driver's entry point comes from the runtime */
#include <cudaTypedefs.h>

#include <stdlib.h>
#include <string.h>

/* The fixed kernels of kernels/ops.cu it launches, each k_NAME: K_NAME numbers them. */
#define KERNELS(X) X(embedding) X(embedding_bwd) X(positions) X(bias_add) X(layernorm) \
	X(layernorm_bwd) X(layernorm_bwd_block) X(parts_finish) X(gelu) X(gelu8) X(gelu_bwd) X(tanh) \
	X(tanh_bwd) X(dropout) X(add) X(colsum) X(colsum_direct) X(norm_colsum) X(attention) \
	X(attention_bwd) X(convert) X(convert_rows) X(select) X(select_bwd) X(vocab_max) X(vocab_max_stats) X(vocab_stats) \
	X(vocab_loss) X(count) X(ce_bwd) X(slice) X(unpack) X(pack) X(sumsq) X(adamw) X(rmsnorm) X(rmsnorm_bwd) X(rope) \
	X(attention_delta) X(flash_fwd_16) X(flash_bwd_16) X(flash_fwd_32) X(flash_bwd_32) X(flash_fwd_64) \
	X(flash_bwd_64) X(flash_fwd_96) X(flash_bwd_96) X(flash_fwd_128) X(flash_bwd_128) X(flash_bwd_wg_64)          \
	X(flash_bwd_wg_96) X(flash_bwd_wg_128) X(flash_bwd_wg_sums_64) X(flash_bwd_wg_sums_96)                         \
	X(flash_bwd_wg_tma_64) X(flash_bwd_wg_tma_96) X(flash_bwd_wg_tma_128) X(flash_bwd_wg_sums_tma_64)                  \
	X(flash_bwd_wg_sums_tma_96) X(flash_fwd_sw_tma_64) X(flash_fwd_sw_tma_qs_96)                                    \
	X(flash_fwd_sw_tma_128) X(flash_fwd_sw_64) X(flash_fwd_sw_96) X(flash_fwd_sw_128) X(convert_rows_sums)          \
	X(layernorm_bwd_pf) X(flash_bwd_wg_abl_1_96) X(flash_bwd_wg_abl_2_96) X(flash_bwd_wg_abl_4_96)               \
	X(flash_bwd_wg_abl_8_96) X(layernorm_bwd_abl_1) X(layernorm_bwd_abl_2) X(layernorm_bwd_abl_4)                \
	X(flash_bwd_wg_abl_16_96) X(flash_bwd_wg_abl_32_96) X(flash_bwd_wg2_tma_96) X(flash_bwd_wg2_sums_tma_96)  \
	X(flash_fwd_sw_tma_qs_pipe_96)

enum {
#define X(k) K_##k,
	KERNELS(X)
#undef X
	NKERNELS
};
const char *const cuda_kernel_names[NKERNELS] = {
#define X(k) "k_" #k,
	KERNELS(X)
#undef X
};
const int cuda_nkernels = NKERNELS;

/* Launches kernel k over n items, per_item threads each: one (the elementwise kernels,
 * whose grid-stride loops take any number), or several (a warp a row: those kernels take one
 * item a group of threads, so all of them must fit the grid). */
static int launch(RtRank *r, int k, int64_t items, int per_item, void **args)
{
	Dev *d = r->mem;
	int64_t threads = items * per_item;
	unsigned block = 256;
	int64_t grid = (threads + block - 1) / block;
	if (grid > 65535 * 16 && per_item > 1)
		return cuda_fail(r, "%lld rows for %s, which takes up to %lld", (long long)items, cuda_kernel_names[k],
				 (long long)65535 * 16 * block / per_item);
	if (grid > 65535 * 16)
		grid = 65535 * 16;   /* the grid-stride loops cover the rest */
	if (grid < 1)
		grid = 1;
	CK(cudaLaunchKernel((const void *)((Dev *)r->mem)->kernels[k], cuda_dim3(grid), cuda_dim3(block), args, 0, d->compute));
	return 0;
}

/* Kernel k a block of 256 threads a row of M (the classifier's: rows past the grid by a
 * stride). */
static int launch_rows(RtRank *r, int k, int64_t M, void **args)
{
	Dev *d = r->mem;
	CK(cudaLaunchKernel((const void *)d->kernels[k], cuda_dim3(M < 65535 * 16 ? M : 65535 * 16), cuda_dim3(256), args, 0,
			    d->compute));
	return 0;
}

/* ---------------------------------------------------------------- GEMMs (cuBLASLt) */

enum { GEMM_CANDIDATES = 8, GEMM_TRIALS = 3 };   /* algorithms timed a GEMM step, runs each */

/* Row-major C[M, N] (+)= op(A) op(B) seen by column-major cuBLASLt as C^T = op(B)^T op(A)^T.
 * The caller gives the column-major problem: m, n, k, A (ta: transposed), lda, B, ldb.
 * accumulate: C += the product; add (not NULL): C = the product + add, a matrix like C
 * (cuBLASLt's C input with beta = 1, D our C); then the bias, or GELU with the bias
 * (gelu_aux: where the pre-activation goes); or dgelu_aux (not NULL): C = the product times
 * GELU's derivative at dgelu_aux, a bf16 matrix like C (cuBLASLt's DGELU). batch > 1 (with
 * the bias alone): that many products, cuBLASLt's strided batch, B the same for each and A,
 * C and the bias each the next's right after the last's (m k, m n and m elements on). */
static int lt_gemm(RtRank *r, int step, int64_t m, int64_t n, int64_t k, const void *A, bool ta, int64_t lda, const void *B,
		   bool tb, int64_t ldb, void *C, int cdt, bool accumulate, const void *add, const void *bias, void *gelu_aux,
		   const void *dgelu_aux, int batch)
{
	Dev *d = r->mem;
	cublasLtMatmulDesc_t op = NULL;
	cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
	cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
	cudaDataType_t ct = cdt == MGL_BF16 ? CUDA_R_16BF : CUDA_R_32F;
	CKB(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
	CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
	CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
	if (bias) {   /* the epilogue adds bias[m] to each column of C^T: to each row of the row-major C;
		       * the bias is of C's type (bf16: the parameter's copy) */
		cublasLtEpilogue_t epi = gelu_aux ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_BIAS;
		CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
		CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
		if (gelu_aux) {   /* the pre-activation, [m, n] column-major like C */
			int64_t ld = m;
			CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &gelu_aux, sizeof gelu_aux));
			CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld));
		}
	} else if (dgelu_aux) {   /* the pre-activation, [m, n] column-major like C */
		cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DGELU;
		int64_t ld = m;
		CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
		CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &dgelu_aux, sizeof dgelu_aux));
		CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld));
	}
	if (cuda_in_flight(d) && d->gemm_sms) {   /* beside a collective: leave it SMs (cuda.c) */
		int32_t sms = d->gemm_sms;
		CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, &sms, sizeof sms));
	}
	CKB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, ta ? k : m, ta ? m : k, lda));
	CKB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, tb ? n : k, tb ? k : n, ldb));
	CKB(cublasLtMatrixLayoutCreate(&lc, ct, m, n, m));
	if (batch > 1) {
		const struct { cublasLtMatrixLayout_t l; int64_t stride; } each[] = {{la, m * k}, {lb, 0}, {lc, m * n}};
		int64_t bias_stride = m;
		for (int i = 0; i < 3; i++) {
			CKB(cublasLtMatrixLayoutSetAttribute(each[i].l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
			CKB(cublasLtMatrixLayoutSetAttribute(each[i].l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &each[i].stride,
							     sizeof each[i].stride));
		}
		CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &bias_stride, sizeof bias_stride));
	}
	float alpha = 1, beta = accumulate || add ? 1.0f : 0.0f;
	if (!d->has_algo[step]) {
		/* the fastest of cuBLASLt's first GEMM_CANDIDATES heuristics, each timed on these
		 * operands (a step's first run is eager: cuda_run); where the GEMM reads C
		 * (beta 1), trials would add into it, so the heuristic's first choice (timing
		 * those on a scratch output saved nothing: perf-notes.md, eleventh sitting). Over
		 * tp, a weight gradient's GEMM keeps the first choice at beta 0 too: where each tp
		 * rank computes a replicated parameter's gradient itself, the ranks must round
		 * alike, which an algorithm timed on each rank does not promise (dp ranks reduce
		 * theirs: any algorithm). Each step times its own: one algorithm a problem, shared
		 * by the steps that ask it, was no quicker (perf-notes.md, twenty-fifth sitting) */
		cublasLtMatmulPreference_t pref;
		CKB(cublasLtMatmulPreferenceCreate(&pref));
		CKB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &d->ws_size,
							 sizeof d->ws_size));
		cublasLtMatmulHeuristicResult_t h[GEMM_CANDIDATES];
		int found = 0;
		const MglPlan *p = r->job->plan;   /* (step nsteps: cuda_gemm_rate's, no step of the plan) */
		bool timed = !beta && (r->job->tp == 1 || step == p->nsteps || p->steps[step].op != MGL_OP_MATMUL_DW);
		CKB(cublasLtMatmulAlgoGetHeuristic(d->lt, op, la, lb, lc, lc, pref, timed ? GEMM_CANDIDATES : 1, h, &found));
		cublasLtMatmulPreferenceDestroy(pref);
		if (!found)
			return cuda_fail(r, "cuBLASLt has no algorithm for a %lld x %lld x %lld GEMM", (long long)m, (long long)n,
				     (long long)k);
		int best = 0;
		float best_ms = INFINITY;
		for (int i = 0; i < found && found > 1; i++) {
			float ms = 0;
			for (int t = 0; t <= GEMM_TRIALS && ms >= 0; t++) {   /* the first run warms up, untimed */
				if (t == 1)
					CK(cudaEventRecord(d->tune[0], d->compute));
				if (cublasLtMatmul(d->lt, op, &alpha, A, la, B, lb, &beta, C, lc, C, lc, &h[i].algo, d->ws,
						   d->ws_size, d->compute) != CUBLAS_STATUS_SUCCESS)
					ms = -1;   /* this one cannot run here: the next */
			}
			if (ms < 0)
				continue;
			CK(cudaEventRecord(d->tune[1], d->compute));
			CK(cudaEventSynchronize(d->tune[1]));
			CK(cudaEventElapsedTime(&ms, d->tune[0], d->tune[1]));
			if (ms < best_ms)
				best_ms = ms, best = i;
		}
		d->algo[step] = h[best].algo;
		d->has_algo[step] = true;
	}
	CKB(cublasLtMatmul(d->lt, op, &alpha, A, la, B, lb, &beta, add ? add : C, lc, C, lc, &d->algo[step], d->ws,
			   d->ws_size, d->compute));
	cublasLtMatrixLayoutDestroy(la);
	cublasLtMatrixLayoutDestroy(lb);
	cublasLtMatrixLayoutDestroy(lc);
	cublasLtMatmulDescDestroy(op);
	return 0;
}

/* ---------------------------------------------------------------- the GEMM rate */

enum { GEMM_WARM = 3, GEMM_RUNS = 20 };

/* cuda_gemm_rate's runs: the milliseconds of each timed one into ms, on matrices m[3] and
 * events ev[2] that it creates (the caller frees them, made or not). */
static int gemm_runs(RtRank *r, int64_t n, void **m, cudaEvent_t *ev, float *ms)
{
	Dev *d = r->mem;
	size_t bytes = (size_t)(n * n) * sizeof(bf16);
	for (int i = 0; i < 3; i++)
		CK(cudaMalloc(&m[i], bytes));
	for (int i = 0; i < 2; i++)
		CK(cudaEventCreate(&ev[i]));
	bf16 *h = malloc(bytes);
	if (!h)
		return cuda_fail(r, "out of host memory for the GEMM's matrices");
	uint64_t x = 0x6d676c;
	cudaError_t e = cudaSuccess;
	for (int i = 0; i < 2 && e == cudaSuccess; i++) {   /* uniform in [-1, 1), cut to bf16 */
		for (int64_t k = 0; k < n * n; k++) {
			x += 0x9e3779b97f4a7c15ull;
			float f = (float)((int64_t)(rt_mix64(x) >> 40) - (1 << 23)) * (1.0f / (1 << 23));
			uint32_t u;
			memcpy(&u, &f, sizeof u);
			h[k] = (bf16)(u >> 16);
		}
		e = cudaMemcpy(m[i], h, bytes, cudaMemcpyHostToDevice);
	}
	free(h);
	if (e != cudaSuccess)
		return cuda_fail(r, "copying the GEMM's matrices: %s", cudaGetErrorString(e));
	for (int i = 0; i < GEMM_WARM + GEMM_RUNS; i++) {
		CK(cudaEventRecord(ev[0], d->compute));
		if (lt_gemm(r, r->job->plan->nsteps, n, n, n, m[0], false, n, m[1], false, n, m[2], MGL_BF16, false, NULL, NULL, NULL,
			    NULL, 1))
			return -1;
		CK(cudaEventRecord(ev[1], d->compute));
		CK(cudaEventSynchronize(ev[1]));
		if (i >= GEMM_WARM)
			CK(cudaEventElapsedTime(&ms[i - GEMM_WARM], ev[0], ev[1]));
	}
	return 0;
}

static int by_value(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? -1 : x > y;
}

double cuda_gemm_rate(RtRank *r, int64_t n)
{
	Dev *d = r->mem;
	void *m[3] = {NULL, NULL, NULL};
	cudaEvent_t ev[2] = {NULL, NULL};
	float ms[GEMM_RUNS];
	int rc = gemm_runs(r, n, m, ev, ms);
	cudaStreamSynchronize(d->compute);
	for (int i = 0; i < 3; i++)
		cudaFree(m[i]);
	for (int i = 0; i < 2; i++)
		if (ev[i])
			cudaEventDestroy(ev[i]);
	cudaGetLastError();   /* a failed cudaMalloc leaves its error behind, and the next step must not see it */
	if (rc)
		return 0;
	qsort(ms, GEMM_RUNS, sizeof *ms, by_value);
	double median = ms[GEMM_RUNS / 2] * 1e-3;
	return median > 0 ? 2.0 * (double)n * (double)n * (double)n / median : 0;
}

/* ---------------------------------------------------------------- the ops */

#define IN(k) (c->s->in[k])
#define OUT(k) (c->s->out[k])
#define ACC(k) rt_adds(c->r->job, c->index, k, c->first_micro)
#define ARGS(...) (void *[]){__VA_ARGS__}

/* the operand a GEMM reads: the bf16 copy when the value is a parameter */
static const void *operand(const RtRank *r, int v)
{
	return val(r, v)->role == MGL_V_PARAM ? P16(r, v) : P(r, v);
}

/* The value an MGL_EPI_ADD epilogue's add (or accumulate) step a adds to the GEMM's result,
 * which is its input `mine` */
static const void *added(RtRank *r, const MglStep *a, int mine) { return P(r, a->in[0] == mine ? a->in[1] : a->in[0]); }

static int op_matmul(CudaCtx *c)
{
	const MglValue *x = val(c->r, IN(0)), *w = val(c->r, IN(1));
	int64_t M = rt_rows(x), N = w->shape[0], K = w->shape[1];
	/* with the epilogue the plan marks, the GEMM does the steps after it in its fused group:
	 * it writes the bias_add's output, or (GELU_AUX_BIAS: cuBLASLt's GELU is GPT-2's tanh
	 * form) the gelu's, keeping the bias_add's as its auxiliary output, which gelu_bwd
	 * reads, or the add's, adding its other input */
	unsigned epi = (unsigned)c->s->attr.epi;
	const MglStep *b = epi & MGL_EPI_BIAS ? c->s + 1 : NULL, *g = epi & MGL_EPI_GELU ? c->s + 2 : NULL,
		      *a = epi & MGL_EPI_ADD ? c->s + 2 : NULL;
	int out = g ? g->out[0] : a ? a->out[0] : b ? b->out[0] : OUT(0);
	int batch = ((Dev *)c->r->mem)->qkv_batch[c->index];   /* (qkv_batches) */
	if (batch < 0)
		return 0;   /* done by the batched GEMM of the group two or four steps before */
	/* y^T[N, M] = W[N, K] (col-major K x N, transposed) . x^T (col-major K x M) */
	return lt_gemm(c->r, c->index, N, M, K, operand(c->r, IN(1)), true, K, operand(c->r, IN(0)), false, K,
		       P(c->r, out), dt(c->r, out), false, a ? added(c->r, a, b->out[0]) : NULL,
		       b ? P16(c->r, b->in[1]) : NULL, g ? P(c->r, b->out[0]) : NULL, NULL, batch ? batch : 1);
}

static int op_matmul_dx(CudaCtx *c)
{
	const MglValue *dy = val(c->r, IN(0)), *w = val(c->r, IN(1));
	int64_t M = rt_rows(dy), N = w->shape[0], K = w->shape[1];
	/* dx^T[K, M] = W^T (col-major K x N) . dy^T (col-major N x M); with its epilogue, the
	 * accumulate after it: that step's output, the other gradient added; or the gelu_bwd
	 * after it: that step's output, GELU's derivative at its pre-activation applied */
	const MglStep *a = c->s->attr.epi & MGL_EPI_ADD ? c->s + 1 : NULL, *g = c->s->attr.epi & MGL_EPI_DGELU ? c->s + 1 : NULL;
	int out = a ? a->out[0] : g ? g->out[0] : OUT(0);
	return lt_gemm(c->r, c->index, K, M, N, operand(c->r, IN(1)), false, K, P(c->r, IN(0)), false, N, P(c->r, out),
		       dt(c->r, out), false, a ? added(c->r, a, OUT(0)) : NULL, NULL, NULL, g ? P(c->r, g->in[1]) : NULL, 1);
}

static int op_matmul_dw(CudaCtx *c)
{
	const MglValue *dy = val(c->r, IN(0)), *x = val(c->r, IN(1));
	int64_t M = rt_rows(dy), N = rt_last(dy), K = rt_last(x);
	/* dW^T[K, N] (+)= x^T (col-major K x M) . dy (col-major N x M, transposed) */
	return lt_gemm(c->r, c->index, K, N, M, P(c->r, IN(1)), false, K, P(c->r, IN(0)), true, N, P(c->r, OUT(0)),
		       dt(c->r, OUT(0)), ACC(0), NULL, NULL, NULL, NULL, 1);
}

static int op_embedding(CudaCtx *c)
{
	const MglValue *tab = val(c->r, IN(0)), *ids = val(c->r, IN(1));
	int64_t n = mgl_numel(ids), D = tab->shape[1], V = tab->shape[0], start = rt_shard_start(c->r, tab);
	int odt = dt(c->r, OUT(0));
	void *t = P(c->r, IN(0)), *i = P(c->r, IN(1)), *o = P(c->r, OUT(0));
	return launch(c->r, K_embedding, n * D, 1, ARGS(&t, &i, &o, &odt, &n, &D, &V, &start));
}

static int op_embedding_bwd(CudaCtx *c)
{
	const MglValue *tab = val(c->r, OUT(0)), *ids = val(c->r, IN(1));
	int64_t n = mgl_numel(ids), D = tab->shape[1], V = tab->shape[0], start = rt_shard_start(c->r, tab);
	int ddt = dt(c->r, IN(0));
	void *g = P(c->r, IN(0)), *i = P(c->r, IN(1)), *o = P(c->r, OUT(0));
	RtRank *r = c->r;
	if (!ACC(0))   /* the kernel adds each row's gradient into the table's */
		CK(cudaMemsetAsync(o, 0, (size_t)mgl_numel(tab) * (size_t)mgl_dtype_size[dt(r, OUT(0))],
				   ((Dev *)r->mem)->compute));
	return launch(c->r, K_embedding_bwd, n * D, 1, ARGS(&g, &ddt, &i, &o, &n, &D, &V, &start));
}

static int op_positions(CudaCtx *c)
{
	int64_t n = mgl_numel(val(c->r, OUT(0)));
	void *o = P(c->r, OUT(0));
	return launch(c->r, K_positions, n, 1, ARGS(&o, &n));
}

static int op_bias_add(CudaCtx *c)
{
	const MglValue *y = val(c->r, IN(0));
	int64_t M = rt_rows(y), N = rt_last(y);
	int ydt = dt(c->r, IN(0)), odt = dt(c->r, OUT(0));
	void *a = P(c->r, IN(0)), *b = P(c->r, IN(1)), *o = P(c->r, OUT(0));
	return launch(c->r, K_bias_add, M * N, 1, ARGS(&a, &ydt, &b, &o, &odt, &M, &N));
}

/* The bands of rows k_colsum sums apart: enough blocks for every SM several times
 * over (about 512 in all), bands of at least 64 rows. Its scratch: R * N floats. */
int64_t cuda_colsum_bands(int64_t M, int64_t N)
{
	int64_t cols = (N + 31) / 32, R = (512 + cols - 1) / cols, most = (M + 63) / 64;
	R = R < most ? R : most;
	return R < 1 ? 1 : R;
}

/* The one-pass layernorm backward for rows of D (bf16 and aligned: norm_bwd checks that),
 * k_layernorm_bwd_block, takes rows of up to 4,096 (8 columns a thread, 512 threads);
 * false: two passes */
bool cuda_norm_one_pass(int64_t D)
{
	return D % 8 == 0 && D <= 4096;
}

/* Its bands of rows, for M rows: 32 or more rows each, at most 1,024 (a block of 6 warps
 * at 1,536). Bands of 32 rather than 16 halve the partial sums written and then added by
 * k_parts_finish, and at 1.2b put the 256 bands in one wave (two blocks an SM): layer norm
 * 6.83 -> 6.38 ms a step at 1.2b, 2.09 -> 1.91 at 124M; bands of 64 took 8.1 ms at 1.2b
 * (perf-notes, nineteenth sitting) */
int64_t cuda_norm_bands(int64_t M)
{
	int64_t R = (M + 31) / 32;
	return R < 1 ? 1 : R > 1024 ? 1024 : R;
}

static int need_scratch(RtRank *r, int64_t floats)
{
	Dev *d = r->mem;
	if (d->scratch_n >= floats)
		return 0;
	return cuda_fail(r, "internal error: scratch of %lld floats, %lld needed", (long long)d->scratch_n, (long long)floats);
}

/* k_colsum's counters: a stripe of 32 columns each */
static int need_stripes(RtRank *r, int64_t N)
{
	Dev *d = r->mem;
	if (d->colsum_n >= (N + 31) / 32)
		return 0;
	return cuda_fail(r, "internal error: %lld column-sum counters, %lld needed", (long long)d->colsum_n,
			 (long long)(N + 31) / 32);
}

/* out[N] (+)= the column sums of x[M, N]: k_colsum, one launch; or over a few rows (one
 * band), k_colsum_direct, a thread a column (the position gradient's sum_to at 1.2b: 0.23 ms
 * through k_colsum's 49,152 one-kilobyte blocks, under 0.06 ms so: perf-notes' eighteenth
 * sitting) */
static int column_sums(RtRank *r, const void *x, int xdt, int64_t M, int64_t N, void *out, int odt, int acc)
{
	if (M <= 64)
		return launch(r, K_colsum_direct, N, 1, ARGS(&x, &xdt, &out, &odt, &acc, &M, &N));
	Dev *d = r->mem;
	int64_t R = cuda_colsum_bands(M, N);
	if (need_scratch(r, 64 + R * N) || need_stripes(r, N))
		return -1;
	float *part = d->scratch + 64;
	dim3 grid = {(unsigned)((N + 31) / 32), (unsigned)R, 1}, block = {32, 8, 1};
	CK(cudaLaunchKernel((const void *)d->kernels[K_colsum], grid, block,
			    ARGS(&x, &xdt, &part, &d->colsum_count, &out, &odt, &acc, &M, &N), 0, d->compute));
	return 0;
}

static int op_bias_grad(CudaCtx *c)
{
	const MglValue *dy = val(c->r, IN(0));
	return column_sums(c->r, P(c->r, IN(0)), dt(c->r, IN(0)), rt_rows(dy), rt_last(dy), P(c->r, OUT(0)),
			   dt(c->r, OUT(0)), ACC(0));
}

static int op_layernorm(CudaCtx *c)
{
	const MglValue *x = val(c->r, IN(0));
	int64_t M = rt_rows(x), D = rt_last(x);
	float eps = (float)c->s->attr.eps;
	int xdt = dt(c->r, IN(0)), ydt = dt(c->r, OUT(0));
	void *X = P(c->r, IN(0)), *w = P(c->r, IN(1)), *b = P(c->r, IN(2)), *y = P(c->r, OUT(0));
	return launch(c->r, K_layernorm, M, 32, ARGS(&X, &xdt, &w, &b, &y, &ydt, &M, &D, &eps));
}

/* Ablations, for timing only: a kernel that leaves one part of the default one's work out,
 * chosen by a variable's value N (1, 2, 4, 8, 16 or 32); its gradients are wrong, which mgl says
 * once (docs/gpu.md: MGL_NORM_BWD_ABL, MGL_FA_BWD_ABL; kernels/ops.cu: the kernels' ABL). */
enum { ABLATIONS = 33 };
typedef struct {
	const char *var, *op;
	int kernel[ABLATIONS];          /* by N (0: none; no ablation is kernel 0) */
	const char *what[ABLATIONS];    /* what kernel[N] leaves out */
	bool told;
} Ablation;
static Ablation norm_bwd_ablation = {
	"MGL_NORM_BWD_ABL", "the layer norm backward",
	{[1] = K_layernorm_bwd_abl_1, [2] = K_layernorm_bwd_abl_2, [4] = K_layernorm_bwd_abl_4},
	{[1] = "its row sums across the block", [2] = "its stores of dx", [4] = "its loads"}, false};
static Ablation fa_bwd_ablation = {
	"MGL_FA_BWD_ABL", "the attention backward",
	{[1] = K_flash_bwd_wg_abl_1_96, [2] = K_flash_bwd_wg_abl_2_96, [4] = K_flash_bwd_wg_abl_4_96, [8] = K_flash_bwd_wg_abl_8_96,
	 [16] = K_flash_bwd_wg_abl_16_96, [32] = K_flash_bwd_wg_abl_32_96},
	{[1] = "its dQ", [2] = "its exponentials", [4] = "dV's and dK's GEMMs", [8] = "S's and dP's GEMMs",
	 [16] = "dQ's put and reduction", [32] = "dQ's reduction"}, false};

/* *k: a's kernel where its variable is set (an error where that names none), else as it was */
static int ablation(RtRank *r, Ablation *a, int *k)
{
	const char *v = getenv(a->var);
	if (!v)
		return 0;
	int n = atoi(v);
	if (n < 1 || n >= ABLATIONS || !a->kernel[n])
		return cuda_fail(r, "%s=%s names none of %s's ablations (docs/gpu.md)", a->var, v, a->op);
	if (!a->told)
		fprintf(stderr, "mgl: %s=%d: %s leaves out %s (for timing: the gradients are wrong)\n", a->var, n, a->op,
			a->what[n]);
	a->told = true;
	*k = a->kernel[n];
	return 0;
}

/* k_parts_finish's rows of threads (its blockDim.y): 32 measured 0.6-1.2 ms a step quicker
 * than 8 (perf-notes, seventeenth sitting) */
enum { FINISH_ROWS = 32 };

/* The norms' backward (layernorm: dw and db; rmsnorm: dw): dx a warp a row, keeping each
 * row's mean and 1/std (1/rms) in scratch; then dw and db as column sums over bands of rows
 * (k_norm_colsum): no atomics on the sums, the same bits every run. */
static int norm_bwd(CudaCtx *c, int kernel, bool bias)
{
	Dev *d = c->r->mem;
	RtRank *r = c->r;
	const MglValue *x = val(r, IN(1));
	int64_t M = rt_rows(x), D = rt_last(x), R = cuda_colsum_bands(M, D);
	float eps = (float)c->s->attr.eps;
	int gdt = dt(r, IN(0)), xdt = dt(r, IN(1)), dxdt = dt(r, OUT(0)), acc = ACC(1), bacc = bias && ACC(2);
	/* in a group (plan.h: mgl_norm_add_group_ok): with the accumulate after it, dx is that
	 * step's output, the other gradient added as it is written; with a bias_grad at its
	 * end, the column sums take that of dx too */
	const MglPlan *p = r->job->plan;
	int end = mgl_group_end(p, c->index);
	const MglStep *a = end > c->index && p->steps[c->index + 1].op == MGL_OP_ACCUMULATE ? c->s + 1 : NULL,
		      *bg = end > c->index && p->steps[end].op == MGL_OP_BIAS_GRAD ? &p->steps[end] : NULL;
	void *g = P(r, IN(0)), *X = P(r, IN(1)), *w = P(r, IN(2)), *dx = P(r, a ? a->out[0] : OUT(0)), *dw = P(r, OUT(1));
	void *db = bias ? P(r, OUT(2)) : NULL, *dbo = bg ? P(r, bg->out[0]) : NULL;
	const void *add = a ? added(r, a, OUT(0)) : NULL;
	int oacc = bg && rt_adds(r->job, end, 0, c->first_micro);
	uintptr_t at = (uintptr_t)g | (uintptr_t)X | (uintptr_t)w | (uintptr_t)dx | (uintptr_t)add;
	if (bias && gdt == MGL_BF16 && xdt == MGL_BF16 && dxdt == MGL_BF16 && at % 16 == 0 && cuda_norm_one_pass(D)) {
		/* layernorm on bf16 rows of up to 4,096: one pass, a block a band of rows, each
		 * thread's column sums in its registers, then the bands added. A warp a row left
		 * too few warps an SM past 1,024 columns, and teams of warps a row were slower
		 * still: perf-notes.md, eleventh to fifteenth sittings */
		int sums = dbo ? 3 : 2;
		int64_t B = cuda_norm_bands(M);
		float *bands = d->scratch + 64;   /* [3][B][D] (plan_bytes sizes it) */
		if (need_scratch(r, 64 + 3 * B * D))
			return -1;
		/* up to 1,536 columns, the next rows' loads in flight through each group's barriers
		 * (k_layernorm_bwd_pf: perf-notes, twentieth sitting) */
		int k = D <= 1536 ? K_layernorm_bwd_pf : K_layernorm_bwd_block;
		if (D <= 1536 && ablation(r, &norm_bwd_ablation, &k))
			return -1;
		CK(cudaLaunchKernel((const void *)d->kernels[k], cuda_dim3(B), cuda_dim3(32 * ((D + 255) / 256)),
				    ARGS(&g, &X, &w, &dx, &add, &bands, &sums, &M, &D, &eps), 0, d->compute));
		dim3 grid = {(unsigned)((D + 31) / 32), 3, 1}, block = {32, FINISH_ROWS, 1};
		CK(cudaLaunchKernel((const void *)d->kernels[K_parts_finish], grid, block,
				    ARGS(&bands, &B, &D, &dw, &acc, &db, &bacc, &dbo, &oacc), 0, d->compute));
		return 0;
	}
	/* two passes: dx a warp a row, keeping each row's moments; then the column sums */
	if (need_scratch(r, 64 + 2 * M + 3 * R * D) || need_stripes(r, D))
		return -1;
	float *stats = d->scratch + 64, *part = stats + 2 * M;
	if (launch(r, kernel, M, 32, ARGS(&g, &gdt, &X, &xdt, &w, &dx, &dxdt, &add, &stats, &M, &D, &eps)))
		return -1;
	dim3 grid = {(unsigned)((D + 31) / 32), (unsigned)R, 1}, block = {32, 8, 1};
	CK(cudaLaunchKernel((const void *)d->kernels[K_norm_colsum], grid, block,
			    ARGS(&g, &gdt, &X, &xdt, &stats, &part, &d->colsum_count, &dw, &acc, &db, &bacc, &dx, &dxdt, &dbo,
				 &oacc, &M, &D),
			    0, d->compute));
	return 0;
}

static int op_layernorm_bwd(CudaCtx *c) { return norm_bwd(c, K_layernorm_bwd, true); }

static int op_rmsnorm(CudaCtx *c)
{
	const MglValue *x = val(c->r, IN(0));
	int64_t M = rt_rows(x), D = rt_last(x);
	float eps = (float)c->s->attr.eps;
	int xdt = dt(c->r, IN(0)), ydt = dt(c->r, OUT(0));
	void *X = P(c->r, IN(0)), *w = P(c->r, IN(1)), *y = P(c->r, OUT(0));
	return launch(c->r, K_rmsnorm, M, 32, ARGS(&X, &xdt, &w, &y, &ydt, &M, &D, &eps));
}

static int op_rmsnorm_bwd(CudaCtx *c) { return norm_bwd(c, K_rmsnorm_bwd, false); }

/* rope and rope_bwd (the rotation turned back) */
static int op_rope(CudaCtx *c)
{
	const MglValue *x = val(c->r, IN(0));
	int64_t B = x->shape[0], S = x->shape[1], H = c->s->attr.heads, half = x->shape[2] / H / 2;
	double theta = c->s->attr.theta;
	int dir = c->s->op == MGL_OP_ROPE_BWD ? -1 : 1, xdt = dt(c->r, IN(0)), ydt = dt(c->r, OUT(0));
	void *X = P(c->r, IN(0)), *Y = P(c->r, OUT(0));
	return launch(c->r, K_rope, B * S * H * half, 1, ARGS(&X, &xdt, &Y, &ydt, &B, &S, &H, &half, &theta, &dir));
}

/* gelu, tanh: y = f(x) */
static int op_unary(CudaCtx *c)
{
	int64_t n = mgl_numel(val(c->r, IN(0)));
	int xdt = dt(c->r, IN(0)), ydt = dt(c->r, OUT(0));
	void *x = P(c->r, IN(0)), *y = P(c->r, OUT(0));
	if (c->s->op == MGL_OP_GELU && xdt == MGL_BF16 && ydt == MGL_BF16 && n % 8 == 0 &&
	    ((uintptr_t)x | (uintptr_t)y) % 16 == 0)   /* 16-byte loads and stores */
		return launch(c->r, K_gelu8, n / 8, 1, ARGS(&x, &y, &n));
	return launch(c->r, c->s->op == MGL_OP_GELU ? K_gelu : K_tanh, n, 1, ARGS(&x, &xdt, &y, &ydt, &n));
}

/* gelu_bwd (dy, x), tanh_bwd (dy, y) */
static int op_unary_bwd(CudaCtx *c)
{
	int64_t n = mgl_numel(val(c->r, IN(0)));
	int gdt = dt(c->r, IN(0)), xdt = dt(c->r, IN(1)), odt = dt(c->r, OUT(0));
	void *g = P(c->r, IN(0)), *x = P(c->r, IN(1)), *o = P(c->r, OUT(0));
	return launch(c->r, c->s->op == MGL_OP_GELU_BWD ? K_gelu_bwd : K_tanh_bwd, n, 1,
		      ARGS(&g, &gdt, &x, &xdt, &o, &odt, &n));
}

static int op_dropout(CudaCtx *c)
{
	Dev *d = c->r->mem;
	const MglValue *x = val(c->r, IN(0));
	int64_t outer = 1, n = mgl_numel(x), inner = 1, whole, start = 0;
	if (x->layout.kind == MGL_L_S && c->r->job->tp > 1) {
		rt_around(x, x->layout.dim, &outer, &n, &inner);
		start = rt_shard_start(c->r, x);
	}
	whole = x->layout.kind == MGL_L_S && c->r->job->tp > 1 ? n * c->r->job->tp : n;
	double p = c->s->attr.p;
	unsigned seed = (unsigned)c->s->attr.seed;
	int xdt = dt(c->r, IN(0)), ydt = dt(c->r, OUT(0));
	void *X = P(c->r, IN(0)), *Y = P(c->r, OUT(0));
	DevRun *run = d->run;
	return launch(c->r, K_dropout, outer * n * inner, 1,
		      ARGS(&X, &xdt, &Y, &ydt, &outer, &n, &inner, &whole, &start, &p, &seed, &run));
}

static int op_add(CudaCtx *c)
{
	const MglValue *a = val(c->r, IN(0)), *b = val(c->r, IN(1)), *o = val(c->r, OUT(0));
	for (int k = 0; k < 2; k++) {   /* suffix broadcasting only (what the models need) */
		const MglValue *x = k ? b : a;
		for (int i = 0; i < x->rank; i++)
			if (x->shape[x->rank - 1 - i] != o->shape[o->rank - 1 - i])
				return cuda_fail(c->r, "the cuda backend adds tensors broadcast along leading dimensions only");
	}
	int64_t na = mgl_numel(a), nb = mgl_numel(b), n = mgl_numel(o);
	int adt = dt(c->r, IN(0)), bdt = dt(c->r, IN(1)), odt = dt(c->r, OUT(0));
	void *A = P(c->r, IN(0)), *B = P(c->r, IN(1)), *O = P(c->r, OUT(0));
	return launch(c->r, K_add, n, 1, ARGS(&A, &adt, &na, &B, &bdt, &nb, &O, &odt, &n));
}

static int op_sum_to(CudaCtx *c)
{
	const MglValue *g = val(c->r, IN(0)), *o = val(c->r, OUT(0));
	for (int i = 0; i < o->rank; i++)
		if (o->shape[o->rank - 1 - i] != g->shape[g->rank - 1 - i])
			return cuda_fail(c->r, "the cuda backend sums over leading dimensions only");
	int64_t no = mgl_numel(o);
	return column_sums(c->r, P(c->r, IN(0)), dt(c->r, IN(0)), mgl_numel(g) / no, no, P(c->r, OUT(0)), dt(c->r, OUT(0)),
			   ACC(0));
}


/* Flash attention (kernels/ops.cu), each head size's kernels: on mma.sync, 64 queries
 * (forward) or keys (backward) a block of 128 threads; and for compute capability 9.0 by
 * wgmma (-1: none), the forward 128 queries a block of 256 threads on 128-byte swizzled
 * tiles (flash_fwd_sw; an earlier wgmma forward on unswizzled tiles was slower than
 * mma.sync's: docs/perf-notes.md, sixth sitting), the backward 64 keys a block of 128.
 * Other head sizes, and GPUs before sm_80, take k_attention: a warp a query, an atomic
 * backward. bwd_wg_sums: the wgmma backward summing q, k and v's bias gradients too
 * (attention_bwd), at heads of 64 and 96. The _tma ones: the same three wgmma kernels with
 * the tiles that each loop round loads (K and V; Q and dO) copied by TMA: the default on
 * 9.0 (0.5-1 ms a step quicker at 1.2b, perf-notes' sixteenth sitting); MGL_NO_FA_TMA=1,
 * or a driver without cuTensorMapEncodeTiled, takes the ones above (each thread's cp.async).
 * The backward's TMA kernels also add dQ into dq by TMA, from shared memory, instead of each
 * thread's red.global, and take lse and delta as k_attention_delta prepares them (1-2 ms a
 * step quicker at 1.2b, 0.7 at 124M: perf-notes' seventeenth sitting). fwd_qs: the forward's TMA
 * kernel (_qs_) keeps Q's tiles in shared memory rather than in registers, at heads of 96,
 * where Q's 48 registers a thread cost spills and serialised wgmmas (0.1 ms a step quicker
 * at 1.2b; at 64 it was 0.1 ms slower at 124M: perf-notes' eighteenth sitting). The forward's
 * TMA kernels have no block barrier each K and V tile: each warpgroup hands the buffers back
 * itself (the forward 5-6% quicker at heads of 64, the same at 96: perf-notes' nineteenth and
 * twentieth sittings). */
static const struct {
	int dh, fwd, bwd, fwd_wg, bwd_wg, bwd_wg_sums, fwd_wg_tma, bwd_wg_tma, bwd_wg_sums_tma;
	bool fwd_qs;
} flash[] = {
	{16, K_flash_fwd_16, K_flash_bwd_16, -1, -1, -1, -1, -1, -1, false},
	{32, K_flash_fwd_32, K_flash_bwd_32, -1, -1, -1, -1, -1, -1, false},
	{64, K_flash_fwd_64, K_flash_bwd_64, K_flash_fwd_sw_64, K_flash_bwd_wg_64, K_flash_bwd_wg_sums_64, K_flash_fwd_sw_tma_64,
	 K_flash_bwd_wg_tma_64, K_flash_bwd_wg_sums_tma_64, false},
	{96, K_flash_fwd_96, K_flash_bwd_96, K_flash_fwd_sw_96, K_flash_bwd_wg_96, K_flash_bwd_wg_sums_96,
	 K_flash_fwd_sw_tma_qs_96, K_flash_bwd_wg_tma_96, K_flash_bwd_wg_sums_tma_96, true},
	{128, K_flash_fwd_128, K_flash_bwd_128, K_flash_fwd_sw_128, K_flash_bwd_wg_128, -1, K_flash_fwd_sw_tma_128,
	 K_flash_bwd_wg_tma_128, -1, false},
};
enum { FLASH_ROWS = 64, FLASH_BWD_Q = 32, FLASH_SW_Q = 128 };   /* FA_ROWS, FA_BWD_Q, FA_SW_Q in kernels/ops.cu */

/* flash_fwd's shared memory: two K and two V tiles [64][dh + 8] (bf16) */
static int flash_fwd_smem(int dh) { return 4 * FLASH_ROWS * (dh + 8) * 2; }

/* Whether this GPU runs flash[f]'s wgmma backward: on 9.0, unless MGL_NO_WGMMA */
static bool flash_wg(const Dev *d, int f) { return d->arch == 90 && flash[f].bwd_wg >= 0 && !getenv("MGL_NO_WGMMA"); }

/* and its wgmma forward: also unless MGL_NO_WG_FWD (mma.sync's forward, for comparison) */
static bool flash_wg_fwd(const Dev *d, int f)
{
	return flash_wg(d, f) && flash[f].fwd_wg >= 0 && !getenv("MGL_NO_WG_FWD");
}

/* flash_fwd_sw's shared memory: two K and two V tiles [64][dh rounded up to 64] (bf16), and
 * with qs (the _qs_ kernel) two Q tiles before them; two mbarriers, with tma (the _tma_
 * kernels) two counters of hand-backs after them, and 1 KiB to align the tiles to the
 * 128-byte swizzle's period */
static int flash_fwd_sw_smem(int dh, bool qs, bool tma)
{
	return (qs ? 6 : 4) * FLASH_ROWS * ((dh + 63) / 64 * 64) * 2 + (tma ? 24 : 16) + 1024;
}

/* flash_bwd_wg's shared memory: K, V, two Q and two dO tiles [64][dh rounded up to 64],
 * dS^T [64][64] (bf16), two lse and two delta [64] (f32), two mbarriers (TMA's), and 1 KiB
 * to align the tiles to the 128-byte swizzle's period */
static int flash_bwd_wg_smem(int dh)
{
	return 6 * FLASH_ROWS * ((dh + 63) / 64 * 64) * 2 + FLASH_ROWS * FLASH_ROWS * 2 + 4 * FLASH_ROWS * 4 + 16 + 1024;
}

/* flash_bwd_wg2's (128 keys a block, heads of 96 and up): K and V [128][dh rounded up to 64]
 * (two tiles each), two Q and two dO tiles [64][..] (bf16), dS^T [128][64] (bf16), two dQ
 * buffers [64][dh] (f32), two lse and two delta [64] (f32), two mbarriers, and 1 KiB to
 * align the tiles (194 KiB at 96: one block an SM) */
static int flash_bwd_wg2_smem(int dh)
{
	return 8 * FLASH_ROWS * ((dh + 63) / 64 * 64) * 2 + 2 * FLASH_ROWS * FLASH_ROWS * 2 + 2 * FLASH_ROWS * dh * 4 +
	       4 * FLASH_ROWS * 4 + 16 + 1024;
}

/* A TMA map of x [B, S, H, dh] (bf16, or f32 where f32; dense, 16-byte aligned: the
 * activations and the scratch are): dimensions dh, H, S, B innermost first, a box of 128
 * bytes of columns (64 bf16: fa_tile_tma's; 32 f32: fa_dq_reduce's) by 64 rows of one head
 * and sequence, TMA's 128-byte swizzle (fa_sw's layout), zeros out of bounds; by the
 * driver's cuTensorMapEncodeTiled (d->tma_encode, cuda_ops_prepare's) */
static int fa_tensor_map(RtRank *r, CUtensorMap *m, void *x, int64_t B, int64_t S, int64_t H, int64_t dh, bool f32)
{
	PFN_cuTensorMapEncodeTiled_v12000 encode = (PFN_cuTensorMapEncodeTiled_v12000)((Dev *)r->mem)->tma_encode;
	int64_t e_bytes = f32 ? 4 : 2;
	cuuint64_t dim[4] = {(cuuint64_t)dh, (cuuint64_t)H, (cuuint64_t)S, (cuuint64_t)B},
		   stride[3] = {(cuuint64_t)(dh * e_bytes), (cuuint64_t)(H * dh * e_bytes), (cuuint64_t)(S * H * dh * e_bytes)};
	cuuint32_t box[4] = {(cuuint32_t)(128 / e_bytes), 1, FLASH_ROWS, 1}, step[4] = {1, 1, 1, 1};
	CUresult e = encode(m, f32 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, x, dim, stride, box,
			    step, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
			    CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
	return e == CUDA_SUCCESS ? 0 : cuda_fail(r, "cuTensorMapEncodeTiled: error %d for a [%lld, %lld, %lld, %lld] tensor", (int)e,
						(long long)B, (long long)S, (long long)H, (long long)dh);
}

/* A TMA map of the rows k_attention_delta prepares for the _dq kernels, x [2][BH][Sp] (f32,
 * rows Sp >= S floats apart, Sp % 4 == 0; 16-byte aligned): dimensions S, BH, 2 innermost
 * first, a box of 64 of a row's entries from each of the two, no swizzle, zeros past S */
static int fa_rows_map(RtRank *r, CUtensorMap *m, float *x, int64_t BH, int64_t S, int64_t Sp)
{
	PFN_cuTensorMapEncodeTiled_v12000 encode = (PFN_cuTensorMapEncodeTiled_v12000)((Dev *)r->mem)->tma_encode;
	cuuint64_t dim[3] = {(cuuint64_t)S, (cuuint64_t)BH, 2}, stride[2] = {(cuuint64_t)(Sp * 4), (cuuint64_t)(BH * Sp * 4)};
	cuuint32_t box[3] = {FLASH_ROWS, 1, 2}, step[3] = {1, 1, 1};
	CUresult e = encode(m, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 3, x, dim, stride, box, step, CU_TENSOR_MAP_INTERLEAVE_NONE,
			    CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
	return e == CUDA_SUCCESS ? 0 : cuda_fail(r, "cuTensorMapEncodeTiled: error %d for lse and delta [2, %lld, %lld]", (int)e,
						(long long)BH, (long long)S);
}

/* flash_bwd's shared memory: K and V tiles [64][dh + 8], two Q and two dO tiles [32][dh + 8]
 * (bf16), dS [32][64 + 8] (bf16), lse and delta [32] (f32) */
static int flash_bwd_smem(int dh)
{
	return (2 * FLASH_ROWS + 4 * FLASH_BWD_Q) * (dh + 8) * 2 + FLASH_BWD_Q * (FLASH_ROWS + 8) * 2 + 2 * FLASH_BWD_Q * 4;
}

static int flash_of(const Dev *d, int64_t dh)
{
	for (int i = 0; d->arch >= 80 && i < (int)(sizeof flash / sizeof flash[0]); i++)
		if (flash[i].dh == dh)
			return i;
	return -1;
}

/* kernel k on a grid of gx x gy blocks of threads (a flash kernel's: B * H, then the blocks along
 * a sequence), with smem bytes of dynamic shared memory */
static int launch_blocks(RtRank *r, int k, int64_t gx, int64_t gy, unsigned threads, int smem, void **args)
{
	Dev *d = r->mem;
	if (gx > INT32_MAX || gy > 65535)
		return cuda_fail(r, "attention over %lld sequences of heads (batch x heads) in %lld blocks each: the flash kernels take up to 2^31 - 1 and 65,535",
				 (long long)gx, (long long)gy);
	dim3 grid = {(unsigned)gx, (unsigned)gy, 1}, block = {threads, 1, 1};
	CK(cudaLaunchKernel((const void *)d->kernels[k], grid, block, args, (size_t)smem, d->compute));
	return 0;
}

/* q, k, v [B, S, H * dh] -> o [B, S, H * dh], lse [B, H, S] */
static int op_attention(CudaCtx *c)
{
	const MglValue *q = val(c->r, IN(0));
	int64_t B = q->shape[0], S = q->shape[1], H = c->s->attr.heads, dh = q->shape[2] / H;
	int causal = (int)c->s->attr.causal, f = flash_of(c->r->mem, dh);
	if (f < 0 && dh > 256)
		return cuda_fail(c->r, "attention heads of %lld features: the cuda kernel takes up to 256", (long long)dh);
	void *Q = P(c->r, IN(0)), *K = P(c->r, IN(1)), *V = P(c->r, IN(2)), *M = c->s->nin > 3 ? P(c->r, IN(3)) : NULL;
	void *O = P(c->r, OUT(0)), *L = P(c->r, OUT(1));
	if (f >= 0 && flash_wg_fwd(c->r->mem, f)) {   /* its parameters, and the TMA maps where the kernel takes them */
		CUtensorMap tk, tv;   /* (copied at the launch) */
		void *args[11] = {&Q, &K, &V, &M, &O, &L, &S, &H, &causal, &tk, &tv};
		int k = flash[f].fwd_wg;
		bool tma = ((Dev *)c->r->mem)->fa_tma && flash[f].fwd_wg_tma >= 0;
		if (tma) {
			if (fa_tensor_map(c->r, &tk, K, B, S, H, dh, false) || fa_tensor_map(c->r, &tv, V, B, S, H, dh, false))
				return -1;
			k = flash[f].fwd_wg_tma;
		}
		bool qs = tma && flash[f].fwd_qs;
		if (qs && dh == 96 && !getenv("MGL_NO_FA_FWD_PIPE"))   /* (kernels/ops.cu, PIPE) */
			k = K_flash_fwd_sw_tma_qs_pipe_96;
		return launch_blocks(c->r, k, B * H, (S + FLASH_SW_Q - 1) / FLASH_SW_Q, 256, flash_fwd_sw_smem((int)dh, qs, tma),
				     args);
	}
	if (f >= 0)
		return launch_blocks(c->r, flash[f].fwd, B * H, (S + FLASH_ROWS - 1) / FLASH_ROWS, 128, flash_fwd_smem((int)dh),
				     ARGS(&Q, &K, &V, &M, &O, &L, &S, &H, &causal));
	return launch(c->r, K_attention, B * H * S, 32, ARGS(&Q, &K, &V, &M, &O, &L, &B, &S, &H, &dh, &causal));
}

/* The step's inputs dy, q, k, v, o [B, S, D = H dh], lse [B, H, S][, mask [B, S]] ->
 * DQ (dtype dqdt), DK and DV (kvdt; MGL_BF16 or MGL_F32): each rows of ld elements
 * [B, S, ld], of which columns 0 .. D are written (ld == D: dense; ld > D: column slices of
 * one wider buffer, such as dq, dk, dv side by side in [B, S, 3 D]; flash stores pairs of
 * bf16, so ld even and DK, DV 4-byte aligned). Flash (bf16 dk and dv only): dq added up in
 * f32 scratch [B, S, D] (with delta [B, H, S] after it), converted into DQ's rows at the
 * end; the older kernel does so for dk and dv and writes dq itself (in bf16, whatever dqdt,
 * as before). bias (NULL: none): q, k and v's bias gradients [3 D] (f32, bacc: added to),
 * the column sums of dq, dk and dv (the fused group of mgl_qkv_bias_group_ok): by the
 * wgmma kernel and the conversion as they make them (partial sums over [3][R][D], R = B
 * times the key blocks, added in order by k_parts_finish), else by a column sum after. */
static int attention_bwd(CudaCtx *c, void *DQ, void *DK, void *DV, int dqdt, int kvdt, int64_t ld, float *bias, int bacc)
{
	Dev *d = c->r->mem;
	RtRank *r = c->r;
	const MglValue *q = val(r, IN(1));
	int64_t B = q->shape[0], S = q->shape[1], H = c->s->attr.heads, dh = q->shape[2] / H, n = mgl_numel(q);
	int causal = (int)c->s->attr.causal, f = flash_of(d, dh), f32 = MGL_F32;
	if (kvdt != MGL_BF16)
		f = -1;   /* flash writes dk and dv in bf16 */
	/* at heads of 96 with TMA, 128 keys a block in two warpgroups (flash_bwd_wg2: 0.7 ms of
	 * 15.7 a step quicker at 1.2b, twenty-second sitting), unless MGL_NO_FA_BWD_128=1 or
	 * MGL_FA_BWD_ABL (the ablations are of the 64-key kernel) */
	bool wide = f >= 0 && d->fa_tma && flash_wg(d, f) && dh == 96 && !getenv("MGL_NO_FA_BWD_128") &&
		    !getenv(fa_bwd_ablation.var);
	int64_t keys = wide ? 2 * FLASH_ROWS : FLASH_ROWS;
	int64_t rows = B * S, D = H * dh, gy = (S + keys - 1) / keys, R = B * gy;   /* gy: key blocks */
	bool sums = bias && f >= 0 && flash_wg(d, f) && flash[f].bwd_wg_sums >= 0 &&
		    R <= 65535 &&   /* (R: k_convert_rows_sums's grid's y; its 4 columns a thread:) */
		    D % 4 == 0 && ld % 4 == 0 && (uintptr_t)DQ % (4 * mgl_dtype_size[dqdt]) == 0;
	if (bias && ld != 3 * D)
		return cuda_fail(r, "internal error: attention's bias gradients with dq, dk and dv not side by side");
	if (need_scratch(r, 2 * n + 64 + (sums ? 3 * R * D : 0)))
		return -1;
	float *s1 = d->scratch + 64, *s2 = s1 + n, *part = sums ? s1 + 2 * n : NULL;
	void *G = P(r, IN(0)), *Q = P(r, IN(1)), *K = P(r, IN(2)), *V = P(r, IN(3)), *O = P(r, IN(4)), *L = P(r, IN(5));
	void *M = c->s->nin > 6 ? P(r, IN(6)) : NULL;
	if (f >= 0) {
		int lanes = 1;   /* k_attention_delta's lanes a row: 8 columns each, a power of two */
		while (lanes < 32 && lanes * 8 < dh)
			lanes *= 2;
		bool tma = d->fa_tma && flash_wg(d, f);   /* the TMA kernels */
		int64_t Sp = tma ? (S + 3) / 4 * 4 : S;   /* their lse and delta rows: 16-byte strides for TMA */
		const float *lse = tma ? L : NULL;           /* (s2's n floats hold 2 B H Sp: dh >= 64) */
		if (launch(r, K_attention_delta, B * H * S, lanes,   /* (and dq's zeros, into s1) */
			   ARGS(&G, &O, &lse, &s2, &B, &S, &Sp, &H, &dh, &lanes, &s1)))
			return -1;
		/* the kernel's parameters: the fourteen every backward takes, then the bias sums'
		 * part and the TMA maps (Q's, dO's, dq's, lse and delta's) where the kernel takes
		 * them */
		CUtensorMap tq, tdo, tdq, tld;   /* (copied at the launch) */
		void *args[19] = {&G, &Q, &K, &V, &L, &s2, &M, &s1, &DK, &DV, &S, &H, &ld, &causal};
		int na = 14, k = sums ? (tma ? flash[f].bwd_wg_sums_tma : flash[f].bwd_wg_sums)
				 : tma ? flash[f].bwd_wg_tma : flash_wg(d, f) ? flash[f].bwd_wg : flash[f].bwd;
		if (wide)
			k = sums ? K_flash_bwd_wg2_sums_tma_96 : K_flash_bwd_wg2_tma_96;
		else if (sums && tma && dh == 96 && ablation(r, &fa_bwd_ablation, &k))
			return -1;
		if (sums || wide)   /* (flash_bwd_wg2 takes part either way: NULL without the sums) */
			args[na++] = &part;
		if (tma) {
			if (fa_tensor_map(r, &tq, Q, B, S, H, dh, false) || fa_tensor_map(r, &tdo, G, B, S, H, dh, false) ||
			    fa_tensor_map(r, &tdq, s1, B, S, H, dh, true) || fa_rows_map(r, &tld, s2, B * H, S, Sp))
				return -1;
			args[na++] = &tq, args[na++] = &tdo, args[na++] = &tdq, args[na++] = &tld;
		}
		int smem = wide ? flash_bwd_wg2_smem((int)dh) : flash_wg(d, f) ? flash_bwd_wg_smem((int)dh) : flash_bwd_smem((int)dh);
		if (launch_blocks(r, k, B * H, gy, wide ? 256 : 128, smem, args))
			return -1;
		if (sums) {
			dim3 grid = {(unsigned)((D + 127) / 128), (unsigned)R, 1}, fin = {(unsigned)((D + 31) / 32), 3, 1},
			     block = {32, 8, 1}, fin_block = {32, FINISH_ROWS, 1};
			float *bk = bias + D, *bv = bias + 2 * D;
			CK(cudaLaunchKernel((const void *)d->kernels[K_convert_rows_sums], grid, block, ARGS(&s1, &DQ, &dqdt, &rows, &D, &ld, &part), 0,
					    d->compute));
			CK(cudaLaunchKernel((const void *)d->kernels[K_parts_finish], fin, fin_block,
					    ARGS(&part, &R, &D, &bias, &bacc, &bk, &bacc, &bv, &bacc), 0, d->compute));
			return 0;
		}
		if (launch_rows(r, K_convert_rows, rows, ARGS(&s1, &f32, &DQ, &dqdt, &rows, &D, &ld)))
			return -1;
	} else {
		CK(cudaMemsetAsync(s1, 0, (size_t)(2 * n) * 4, d->compute));
		if (launch(r, K_attention_bwd, B * H * S, 32,
			   ARGS(&G, &Q, &K, &V, &O, &L, &M, &DQ, &s1, &s2, &B, &S, &H, &dh, &ld, &causal)) ||
		    launch_rows(r, K_convert_rows, rows, ARGS(&s1, &f32, &DK, &kvdt, &rows, &D, &ld)) ||
		    launch_rows(r, K_convert_rows, rows, ARGS(&s2, &f32, &DV, &kvdt, &rows, &D, &ld)))
			return -1;
	}
	/* the bias gradients where the kernels above did not sum them: a column sum of the
	 * [B, S, 3 D] that dq, dk and dv are slices of */
	return bias ? column_sums(r, DQ, dqdt, rows, 3 * D, bias, MGL_F32, bacc) : 0;
}

/* (dy, q, k, v, o, lse[, mask]) -> dq, dk, dv [B, S, H dh], dense (dk and dv of one dtype,
 * as the gradients of k and v, made alike, are) */
static int op_attention_bwd(CudaCtx *c)
{
	if (dt(c->r, OUT(1)) != dt(c->r, OUT(2)))
		return cuda_fail(c->r, "attention backward: dk and dv of different types");
	return attention_bwd(c, P(c->r, OUT(0)), P(c->r, OUT(1)), P(c->r, OUT(2)), dt(c->r, OUT(0)), dt(c->r, OUT(1)),
			     val(c->r, IN(1))->shape[2], NULL, 0);
}

/* attention_bwd with dq, dk and dv side by side in one [B, S, 3 D] (compiler/hfuse.c):
 * column slices at 0, D and 2 D of rows of 3 D; heading a group with the bias_grad of
 * that (plan.h: mgl_qkv_bias_group_ok), the bias gradients [3 D] too */
static int op_attention_bwd_qkv(CudaCtx *c)
{
	const MglPlan *p = c->r->job->plan;
	int64_t D = val(c->r, IN(1))->shape[2];
	int odt = dt(c->r, OUT(0)), end = mgl_group_end(p, c->index);
	char *Y = P(c->r, OUT(0));
	size_t col = (size_t)D * mgl_dtype_size[odt];
	float *bias = end > c->index ? P(c->r, p->steps[end].out[0]) : NULL;
	int bacc = bias && rt_adds(c->r->job, end, 0, c->first_micro);
	return attention_bwd(c, Y, Y + col, Y + 2 * col, odt, odt, 3 * D, bias, bacc);
}

static int op_select(CudaCtx *c)
{
	bool bwd = c->s->op == MGL_OP_SELECT_BWD;
	const MglValue *x = val(c->r, bwd ? OUT(0) : IN(0));
	int64_t B = x->shape[0], S = x->shape[1], inner = mgl_numel(x) / (B * S), index = c->s->attr.position;
	int idt = dt(c->r, IN(0)), odt = dt(c->r, OUT(0));
	void *I = P(c->r, IN(0)), *O = P(c->r, OUT(0));
	return launch(c->r, bwd ? K_select_bwd : K_select, bwd ? B * S * inner : B * inner, 1,
		      ARGS(&I, &idt, &O, &odt, &B, &S, &inner, &index));
}

/* alone, or with the vocab_stats after it in one pass (the plan's group: plan.h,
 * mgl_stats_group_ok) */
static int op_vocab_max(CudaCtx *c)
{
	const MglValue *z = val(c->r, IN(0));
	int64_t start, valid = rt_valid_cols(c->r, z, c->s->attr.limit, &start), M = rt_rows(z), N = rt_last(z);
	int zdt = dt(c->r, IN(0));
	void *Z = P(c->r, IN(0)), *m = P(c->r, OUT(0));
	const MglPlan *p = c->r->job->plan;
	if (c->s->fuse == c->index && mgl_group_end(p, c->index) > c->index) {
		const MglStep *st = &p->steps[c->index + 1];
		void *t = P(c->r, st->in[1]), *stats = P(c->r, st->out[0]);
		return launch_rows(c->r, K_vocab_max_stats, M, ARGS(&Z, &zdt, &t, &m, &stats, &M, &N, &valid, &start));
	}
	return launch_rows(c->r, K_vocab_max, M, ARGS(&Z, &zdt, &m, &M, &N, &valid));
}

static int op_vocab_stats(CudaCtx *c)
{
	const MglValue *z = val(c->r, IN(0));
	int64_t start, valid = rt_valid_cols(c->r, z, c->s->attr.limit, &start), M = rt_rows(z), N = rt_last(z);
	int zdt = dt(c->r, IN(0));
	void *Z = P(c->r, IN(0)), *t = P(c->r, IN(1)), *m = P(c->r, IN(2)), *st = P(c->r, OUT(0));
	return launch_rows(c->r, K_vocab_stats, M, ARGS(&Z, &zdt, &t, &m, &st, &M, &N, &valid, &start));
}

static int op_vocab_loss(CudaCtx *c)
{
	Dev *d = c->r->mem;
	RtRank *r = c->r;
	int64_t M = mgl_numel(val(r, IN(2))), ignore = c->s->attr.ignore;
	void *st = P(r, IN(0)), *m = P(r, IN(1)), *t = P(r, IN(2)), *loss = P(r, OUT(0)), *lse = P(r, OUT(1));
	CK(cudaLaunchKernel((const void *)((Dev *)r->mem)->kernels[K_vocab_loss], cuda_dim3(1), cuda_dim3(1024),
			    ARGS(&st, &m, &t, &loss, &lse, &M, &ignore), 0, d->compute));
	return 0;
}

/* ce_bwd step c's count of kept targets (k_count) into *count, the scratch's first float */
static int count_kept(CudaCtx *c, float **count)
{
	Dev *d = c->r->mem;
	RtRank *r = c->r;
	int64_t nt = mgl_numel(val(r, IN(2))), ignore = c->s->attr.ignore;
	void *t = P(r, IN(2));
	*count = d->scratch;
	CK(cudaLaunchKernel((const void *)d->kernels[K_count], cuda_dim3(1), cuda_dim3(1024), ARGS(&t, &nt, &ignore, count), 0,
			    d->compute));
	return 0;
}

static int op_ce_bwd(CudaCtx *c)
{
	RtRank *r = c->r;
	const MglValue *z = val(r, IN(1));
	int64_t start, valid = rt_valid_cols(c->r, z, c->s->attr.limit, &start), M = rt_rows(z), N = rt_last(z), ignore = c->s->attr.ignore;
	float *count;
	if (count_kept(c, &count))
		return -1;
	void *t = P(r, IN(2));
	int zdt = dt(r, IN(1)), odt = dt(r, OUT(0));
	void *g = P(r, IN(0)), *Z = P(r, IN(1)), *L = P(r, IN(3)), *O = P(r, OUT(0));
	return launch_rows(r, K_ce_bwd, M, ARGS(&g, &Z, &zdt, &t, &L, &count, &O, &odt, &M, &N, &valid, &start, &ignore));
}

static int op_slice(CudaCtx *c)
{
	const MglValue *o = val(c->r, OUT(0));
	int64_t outer, n, inner;
	rt_around(o, (int)c->s->attr.dim, &outer, &n, &inner);
	int64_t whole = n * c->r->job->tp, start = (int64_t)c->r->tp_rank * n;
	int es = mgl_dtype_size[o->dtype];
	void *X = P(c->r, IN(0)), *Y = P(c->r, OUT(0));
	return launch(c->r, K_slice, outer * n * inner, 1, ARGS(&X, &Y, &es, &outer, &n, &inner, &whole, &start));
}

/* ---------------------------------------------------------------- collectives (NCCL) */

static ncclDataType_t nccl_type(int dtype) { return dtype == MGL_BF16 ? ncclBfloat16 : dtype == MGL_I32 ? ncclInt32 : ncclFloat32; }

/* The communication stream waits for the compute stream's work so far... */
static int comm_begin(RtRank *r)
{
	Dev *d = r->mem;
	CK(cudaEventRecord(d->to_comm, d->compute));
	CK(cudaStreamWaitEvent(d->comm, d->to_comm, 0));
	return 0;
}

/* ... and marks it done: the compute stream waits for it at the first step that needs it
 * (cuda_comm_wait), running the steps before that beside it, or at once (now) when this op
 * reads its result itself or it went through the staging buffer, which the next staged
 * collective reuses (only tp collectives of more than CUDA_GROUPED_MAX rows do: internal.h). */
static int comm_end(CudaCtx *c, bool now)
{
	RtRank *r = c->r;
	Dev *d = r->mem;
	if (now || r->collectives_at_once || d->coll_wait[c->index] < 0) {
		CK(cudaEventRecord(d->to_compute, d->comm));
		CK(cudaStreamWaitEvent(d->compute, d->to_compute, 0));
		return 0;
	}
	CK(cudaEventRecord(d->coll_done[c->index], d->comm));
	d->inflight[d->ninflight++] = c->index;
	return 0;
}

int cuda_comm_due(RtRank *r, int step)
{
	Dev *d = r->mem;
	int due = -1;
	for (int k = 0; k < d->ninflight; k++)
		if (step < 0 || d->coll_wait[d->inflight[k]] <= step)
			due = d->inflight[k];
	return due;
}

int cuda_comm_wait(RtRank *r, int step)
{
	Dev *d = r->mem;
	int kept = 0;
	for (int k = 0; k < d->ninflight; k++) {
		int c = d->inflight[k];
		if (step < 0 || d->coll_wait[c] <= step)
			CK(cudaStreamWaitEvent(d->compute, d->coll_done[c], 0));
		else
			d->inflight[kept++] = c;
	}
	d->ninflight = kept;
	return 0;
}

/* One of NCCL's collectives on the comm stream, of the rank's tp or dp group (count and
 * the rest as cuda_host_collective has them), or the same through the host where the ranks
 * share a GPU. Inside a group (group_begin, group_end): NCCL runs its calls as one
 * operation at group_end; through the host each runs here, one after another. */
static int collective(RtRank *r, bool dp, CudaColl kind, const void *in, void *out, size_t count, int dtype, bool max)
{
	Dev *d = r->mem;
	if (dp ? d->host_dp : d->host_tp)
		return cuda_host_collective(r, dp, kind, in, out, count, dtype, max);
	ncclComm_t comm = dp ? d->dp : d->tp;
	ncclDataType_t ty = nccl_type(dtype);
	if (kind == CUDA_ALL_REDUCE)
		CKN(ncclAllReduce(in, out, count, ty, max ? ncclMax : ncclSum, comm, d->comm));
	else if (kind == CUDA_REDUCE_SCATTER)
		CKN(ncclReduceScatter(in, out, count, ty, ncclSum, comm, d->comm));
	else
		CKN(ncclAllGather(in, out, count, ty, comm, d->comm));
	return 0;
}

static int group_begin(RtRank *r)
{
	CKN(ncclGroupStart());
	return 0;
}

/* ... and its end, which a failed call (rc) still reaches before its error is reported */
static int group_end(RtRank *r, int rc)
{
	ncclResult_t e = ncclGroupEnd();
	if (rc)
		return -1;
	if (e != ncclSuccess)
		return cuda_fail(r, "ncclGroupEnd: %s", ncclGetErrorString(e));
	return 0;
}

static int op_all_reduce(CudaCtx *c)
{
	RtRank *r = c->r;
	if (ACC(0) && !c->last_micro)
		return 0;   /* gradient buffers are reduced once, after the last micro-batch */
	if (comm_begin(r) || group_begin(r))
		return -1;
	int rc = 0;
	for (int k = 0; k < c->s->nin && !rc; k++)
		rc = collective(r, c->s->attr.group == MGL_GROUP_DP, CUDA_ALL_REDUCE, P(r, IN(k)), P(r, OUT(k)),
				(size_t)mgl_numel(val(r, IN(k))), dt(r, IN(k)), c->s->attr.max);
	return group_end(r, rc) || comm_end(c, false) ? -1 : 0;
}

/* ZeRO-1 over dp (plan.h: mgl_zero_piece), in place on each buffer, whose bytes hold dp
 * pieces of c elements: NCCL's in-place forms, this rank's piece at rank * c. Gradients
 * (fp32) are reduce-scattered after the last micro-batch; parameters are gathered with
 * their bf16 copies, which adamw updated for the piece alone. */
static int zero_collective(CudaCtx *c)
{
	RtRank *r = c->r;
	bool rs = c->s->op == MGL_OP_REDUCE_SCATTER;
	if (rs && !c->last_micro)
		return 0;
	if (comm_begin(r) || group_begin(r))
		return -1;
	int rc = 0;
	for (int k = 0; k < c->s->nin && !rc; k++) {
		size_t n = (size_t)mgl_zero_chunk(mgl_numel(val(r, IN(k))), r->job->dp), at = n * (size_t)r->dp_rank;
		float *x = P(r, IN(k));
		bf16 *h = P16(r, IN(k));
		rc = rs ? collective(r, true, CUDA_REDUCE_SCATTER, x, x + at, n, MGL_F32, false)
			: collective(r, true, CUDA_ALL_GATHER, x + at, x, n, MGL_F32, false) ||
				  collective(r, true, CUDA_ALL_GATHER, h + at, h, n, MGL_BF16, false);
	}
	return group_end(r, rc) || comm_end(c, true) ? -1 : 0;   /* it writes the bf16 copies too, which the plan's waits do not see */
}

/* A tp all_gather (gather) or reduce_scatter of part[outer, n, inner] and whole[outer, tp *
 * n, inner] as one NCCL operation a row o, grouped (internal.h: CUDA_GROUPED_MAX says why
 * and when): NCCL's all-gather puts rank r's count elements at r * count of its receive
 * buffer, and its reduce-scatter gives rank r the sum of the elements at r * count of the
 * send buffers, so with count = n * inner the receive (send) buffer is the whole's row o
 * and this rank's part of it is the part's row o. The rows are disjoint: the operations
 * may run in any order, and the result is waited for where the plan says (comm_end). A
 * failing call still ends the group before the error is reported. */
static int tp_rows(CudaCtx *c, bool gather, int64_t outer, int64_t n, int64_t inner, int dtype)
{
	RtRank *r = c->r;
	size_t es = (size_t)mgl_dtype_size[dtype], count = (size_t)(n * inner), row = count * es;
	size_t whole = row * (size_t)r->job->tp;
	char *part = P(r, gather ? IN(0) : OUT(0)), *all = P(r, gather ? OUT(0) : IN(0));
	if (comm_begin(r) || group_begin(r))
		return -1;
	int rc = 0;
	for (int64_t o = 0; o < outer && !rc; o++)
		rc = gather ? collective(r, false, CUDA_ALL_GATHER, part + o * row, all + o * whole, count, dtype, false)
			    : collective(r, false, CUDA_REDUCE_SCATTER, all + o * whole, part + o * row, count, dtype, false);
	return group_end(r, rc) || comm_end(c, false) ? -1 : 0;
}

/* tp: a row at a time (tp_rows), or past CUDA_GROUPED_MAX rows one NCCL call into the
 * staging buffer, rank r's part at r * count, and k_unpack puts each part's rows in place
 * on the compute stream */
static int op_all_gather(CudaCtx *c)
{
	RtRank *r = c->r;
	Dev *d = r->mem;
	if (c->s->attr.group == MGL_GROUP_DP)
		return zero_collective(c);
	const MglValue *x = val(r, IN(0));
	int64_t outer, n, inner, tp = r->job->tp;
	rt_around(x, (int)c->s->attr.dim, &outer, &n, &inner);
	if (!cuda_staged(x, (int)c->s->attr.dim, d->sp_grouped))
		return tp_rows(c, true, outer, n, inner, x->dtype);
	int es = mgl_dtype_size[x->dtype];
	size_t count = (size_t)(outer * n * inner);
	void *dst = d->pack;
	if ((int64_t)count * tp * es > d->pack_n)
		return cuda_fail(r, "internal error: the collective staging buffer is too small");
	if (comm_begin(r))
		return -1;
	if (collective(r, false, CUDA_ALL_GATHER, P(r, IN(0)), dst, count, x->dtype, false) || comm_end(c, true))
		return -1;
	void *o = P(r, OUT(0));
	return launch(r, K_unpack, tp * (int64_t)count, 1, ARGS(&dst, &o, &es, &tp, &outer, &n, &inner));
}

/* tp: a row at a time (tp_rows), or past CUDA_GROUPED_MAX rows k_pack puts rank r's rows
 * at r * count of the staging buffer, for one NCCL call */
static int op_reduce_scatter(CudaCtx *c)
{
	RtRank *r = c->r;
	Dev *d = r->mem;
	if (c->s->attr.group == MGL_GROUP_DP)
		return zero_collective(c);
	const MglValue *o = val(r, OUT(0));
	int64_t outer, n, inner, tp = r->job->tp;
	rt_around(o, (int)c->s->attr.dim, &outer, &n, &inner);
	if (!cuda_staged(o, (int)c->s->attr.dim, d->sp_grouped))
		return tp_rows(c, false, outer, n, inner, o->dtype);
	int es = mgl_dtype_size[o->dtype];
	size_t count = (size_t)(outer * n * inner);
	void *src = P(r, IN(0));
	if ((int64_t)count * tp * es > d->pack_n)
		return cuda_fail(r, "internal error: the collective staging buffer is too small");
	if (launch(r, K_pack, tp * (int64_t)count, 1, ARGS(&src, &d->pack, &es, &tp, &outer, &n, &inner)))
		return -1;
	if (comm_begin(r))
		return -1;
	if (collective(r, false, CUDA_REDUCE_SCATTER, d->pack, P(r, OUT(0)), count, o->dtype, false))
		return -1;
	return comm_end(c, true);
}

/* ---------------------------------------------------------------- the optimizer */

/* Multi-tensor launches (Apex's multi_tensor_apply): one kernel over all the optimizer's
 * tensors, not one a tensor (196 for GPT-2 124M: their launches and tails cost more than
 * the work). Each step that launches one has a table of chunks (struct MtChunk in
 * kernels/ops.cu), one a block, made once by cuda_ops_prepare: the arena's addresses are
 * fixed for the rank's life. */
#define MT_CHUNK 65536   /* elements a block */
#define MT_BLOCK 512     /* threads a block */
typedef struct {
	void *w, *g, *m, *v, *w16, *g16;   /* g16: the gradient where it is bf16 (g NULL) */
	int n, decay;
} MtChunk;

/* The table of step s into d->mt[s]: grad_norm's gradients (a replicated one counts once
 * over the tp group: on its rank 0 only), or the parameters of the adamw group s heads;
 * under ZeRO-1, this rank's piece of each (plan.h: mgl_zero_piece; the moments hold the
 * piece alone, from their start). */
static int mt_table(RtRank *r, int s)
{
	Dev *d = r->mem;
	const MglPlan *p = r->job->plan;
	bool adamw = p->steps[s].op == MGL_OP_ADAMW;
	int last = adamw ? mgl_group_end(p, s) : s, n = 0, cap = 0;
	MtChunk *t = NULL;
	for (int k = s; k <= last; k++)
		for (int j = 0; j < (adamw ? 1 : p->steps[s].nin); j++) {
			const MglStep *x = &p->steps[k];
			int g = adamw ? x->in[1] : x->in[j];
			if (!adamw && val(r, g)->layout.kind == MGL_L_R && r->tp_rank != 0)
				continue;
			int64_t at = 0, numel = mgl_numel(val(r, g));
			if (p->zero)
				numel = mgl_zero_piece(numel, r->job->dp, r->dp_rank, &at);
			for (int64_t o = 0; o < numel; o += MT_CHUNK) {
				if (n == cap) {
					MtChunk *bigger = realloc(t, (size_t)(cap = 2 * cap + 64) * sizeof *t);
					if (!bigger) {
						free(t);
						return cuda_fail(r, "out of host memory for the optimizer's table");
					}
					t = bigger;
				}
				MtChunk c = {.n = (int)(numel - o < MT_CHUNK ? numel - o : MT_CHUNK)};
				if (dt(r, g) == MGL_BF16)
					c.g16 = (bf16 *)P(r, g) + at + o;
				else
					c.g = (float *)P(r, g) + at + o;
				if (adamw) {
					c.w = (float *)P(r, x->in[0]) + at + o;
					c.m = (float *)P(r, x->in[2]) + o;
					c.v = (float *)P(r, x->in[3]) + o;
					c.w16 = (bf16 *)P16(r, x->in[0]) + at + o;
					c.decay = (int)x->attr.decay;
				}
				t[n++] = c;
			}
		}
	d->mt_n[s] = n;
	cudaError_t e = n ? cuda_malloc(d, &d->mt[s], (size_t)n * sizeof *t) : cudaSuccess;
	if (e == cudaSuccess && n)
		e = cudaMemcpy(d->mt[s], t, (size_t)n * sizeof *t, cudaMemcpyHostToDevice);
	free(t);
	CK(e);
	return 0;
}

static int mt_launch(CudaCtx *c, int k, void **args)
{
	Dev *d = c->r->mem;
	RtRank *r = c->r;
	if (d->mt_n[c->index])
		CK(cudaLaunchKernel((const void *)d->kernels[k], cuda_dim3(d->mt_n[c->index]), cuda_dim3(MT_BLOCK), args, 0,
				    d->compute));
	return 0;
}

static int op_grad_norm(CudaCtx *c)
{
	RtRank *r = c->r;
	Dev *d = r->mem;
	float *acc = P(r, OUT(0));
	CK(cudaMemsetAsync(acc, 0, 4, d->compute));
	return mt_launch(c, K_sumsq, ARGS(&d->mt[c->index], &acc));
}

/* the adamw group this step heads, or this step alone */
static int op_adamw(CudaCtx *c)
{
	Dev *d = c->r->mem;
	void *norm = P(c->r, IN(4));
	return mt_launch(c, K_adamw, ARGS(&d->mt[c->index], &norm, &d->run));
}

/* Value v is the i-th of a run of values like u laid end to end from u's offset: of its
 * role, type and shape, i of its sizes on */
static bool follows(const MglPlan *p, int u, int v, int i)
{
	const MglValue *a = &p->values[u], *b = &p->values[v];
	return a->role == b->role && a->dtype == b->dtype && a->rank == b->rank && !memcmp(a->shape, b->shape, sizeof a->shape) &&
	       b->offset == a->offset + i * mgl_value_bytes(a);
}

/* q, k and v's forward as one batched GEMM (unless MGL_NO_QKV_FWD=1; the compiler lays
 * them out for it: compiler/hfuse.c; 0.6 ms a step of 127 quicker at 1.2b, twenty-second
 * sitting): where three fused groups in a row
 * at step s are each [matmul x W_i with the bias epilogue, bias_add b_i] -> y_i, of one x,
 * with the W_i, the b_i and the y_i each laid end to end (checked here on the offsets: a
 * plan read from disk says nothing of spans), qkv_batch[s] = 3 and the other two -1; how
 * many. Not where a collective in flight is due inside the other two groups (coll_wait:
 * mgl_collective_waits): the batched GEMM writes their outputs at s, before the runtime
 * waits there (a recompute's copies, laid end to end by chance, can take bytes an
 * all-reduce still reads) */
static int qkv_batches(const MglPlan *p, const int *coll_wait, int *qkv_batch)
{
	int n = 0;
	for (int s = 0; s + 5 < p->nsteps; s++) {
		bool ok = true;
		for (int i = 0; i < 3 && ok; i++) {
			const MglStep *m0 = &p->steps[s], *b0 = m0 + 1, *m = m0 + 2 * i, *b = m + 1;
			ok = m->op == MGL_OP_MATMUL && m->attr.epi == MGL_EPI_BIAS && mgl_group_end(p, s + 2 * i) == s + 2 * i + 1 &&
			     b->op == MGL_OP_BIAS_ADD && m->in[0] == m0->in[0] && qkv_batch[s + 2 * i] == 0 &&
			     follows(p, m0->in[1], m->in[1], i) && follows(p, b0->in[1], b->in[1], i) &&
			     follows(p, b0->out[0], b->out[0], i);
		}
		for (int c = 0; c < p->nsteps && ok; c++)   /* (only where the groups are there) */
			ok = coll_wait[c] < s + 2 || coll_wait[c] > s + 5;
		if (ok)
			qkv_batch[s] = 3, qkv_batch[s + 2] = qkv_batch[s + 4] = -1, n++;
	}
	return n;
}

int cuda_ops_prepare(RtRank *r)
{
	Dev *d = r->mem;
	const MglPlan *p = r->job->plan;
	for (int i = 0; d->arch >= 80 && i < (int)(sizeof flash / sizeof flash[0]); i++) {
		/* each kernel's shared memory; the wgmma kernels' too, whatever MGL_NO_WGMMA,
		 * MGL_NO_WG_FWD and MGL_NO_FA_TMA say now: they are read at each launch */
		int dh = flash[i].dh, h = d->arch == 90;
		const struct { int k, smem; } set[] = {
			{flash[i].fwd, flash_fwd_smem(dh)},
			{flash[i].bwd, flash_bwd_smem(dh)},
			{h ? flash[i].fwd_wg : -1, flash_fwd_sw_smem(dh, false, false)},
			{h ? flash[i].fwd_wg_tma : -1, flash_fwd_sw_smem(dh, flash[i].fwd_qs, true)},
			{h ? flash[i].bwd_wg : -1, flash_bwd_wg_smem(dh)},
			{h ? flash[i].bwd_wg_sums : -1, flash_bwd_wg_smem(dh)},
			{h ? flash[i].bwd_wg_tma : -1, flash_bwd_wg_smem(dh)},
			{h ? flash[i].bwd_wg_sums_tma : -1, flash_bwd_wg_smem(dh)},
		};
		for (size_t j = 0; j < sizeof set / sizeof set[0]; j++)
			if (set[j].k >= 0)
				CK(cudaKernelSetAttributeForDevice(d->kernels[set[j].k], cudaFuncAttributeMaxDynamicSharedMemorySize,
								   set[j].smem, d->device));
		const int wg2[] = {K_flash_bwd_wg2_tma_96, K_flash_bwd_wg2_sums_tma_96};
		for (int j = 0; h && dh == 96 && j < 2; j++)
			CK(cudaKernelSetAttributeForDevice(d->kernels[wg2[j]], cudaFuncAttributeMaxDynamicSharedMemorySize,
							   flash_bwd_wg2_smem(dh), d->device));
		if (h && dh == 96)   /* (the pipelined forward) */
			CK(cudaKernelSetAttributeForDevice(d->kernels[K_flash_fwd_sw_tma_qs_pipe_96],
							   cudaFuncAttributeMaxDynamicSharedMemorySize,
							   flash_fwd_sw_smem(dh, true, true), d->device));
		for (int n = 1; h && dh == 96 && n < ABLATIONS; n++) {   /* its ablations (MGL_FA_BWD_ABL) */
			int k = fa_bwd_ablation.kernel[n];
			if (k)
				CK(cudaKernelSetAttributeForDevice(d->kernels[k], cudaFuncAttributeMaxDynamicSharedMemorySize,
								   flash_bwd_wg_smem(dh), d->device));
		}
	}
	if (d->fa_tma) {   /* the driver's cuTensorMapEncodeTiled, through the runtime (no -lcuda: CI has no driver) */
		enum cudaDriverEntryPointQueryResult q;
		CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &d->tma_encode, 12000, cudaEnableDefault, &q));
		if (q != cudaDriverEntryPointSuccess || !d->tma_encode)
			d->fa_tma = false;   /* a driver without it: each thread's cp.async, as MGL_NO_FA_TMA */
	}
	d->coll_wait = malloc((size_t)p->nsteps * sizeof *d->coll_wait);
	if (!d->coll_wait)
		return cuda_fail(r, "out of host memory");
	mgl_collective_waits(p, d->coll_wait);
	d->qkv_batch = calloc((size_t)p->nsteps, sizeof *d->qkv_batch);
	if (!d->qkv_batch)
		return cuda_fail(r, "out of host memory");
	if (!getenv("MGL_NO_QKV_FWD"))
		qkv_batches(p, d->coll_wait, d->qkv_batch);
	for (int k = 0; k < r->job->nmicro; k++) {
		d->micro[k].coll_done = calloc((size_t)p->nsteps, sizeof *d->micro[k].coll_done);
		d->micro[k].inflight = malloc((size_t)p->nsteps * sizeof *d->micro[k].inflight);
		if (!d->micro[k].coll_done || !d->micro[k].inflight)
			return cuda_fail(r, "out of host memory");
		for (int s = 0; s < p->nsteps; s++)
			if (d->coll_wait[s] >= 0)
				CK(cudaEventCreateWithFlags(&d->micro[k].coll_done[s], cudaEventDisableTiming));
	}
	cuda_use_micro(d, 0);
	d->mt = calloc((size_t)p->nsteps, sizeof *d->mt);
	d->mt_n = calloc((size_t)p->nsteps, sizeof *d->mt_n);
	if (!d->mt || !d->mt_n)
		return cuda_fail(r, "out of host memory");
	for (int s = 0; s < p->nsteps; s++) {
		const MglStep *st = &p->steps[s];
		bool leads = st->fuse < 0 || st->fuse == s;
		if ((st->op == MGL_OP_GRAD_NORM || (st->op == MGL_OP_ADAMW && leads)) && mt_table(r, s))
			return -1;
	}
	return 0;
}

CudaOpFn *const cuda_ops[MGL_OP_COUNT] = {
	[MGL_OP_EMBEDDING] = op_embedding,       [MGL_OP_POSITIONS] = op_positions,
	[MGL_OP_LAYERNORM] = op_layernorm,       [MGL_OP_GELU] = op_unary,
	[MGL_OP_TANH] = op_unary,                [MGL_OP_DROPOUT] = op_dropout,
	[MGL_OP_ADD] = op_add,                   [MGL_OP_ATTENTION] = op_attention,
	[MGL_OP_SELECT] = op_select,             [MGL_OP_MATMUL] = op_matmul,
	[MGL_OP_BIAS_ADD] = op_bias_add,         [MGL_OP_VOCAB_MAX] = op_vocab_max,
	[MGL_OP_VOCAB_STATS] = op_vocab_stats,   [MGL_OP_VOCAB_LOSS] = op_vocab_loss,
	[MGL_OP_MATMUL_DX] = op_matmul_dx,       [MGL_OP_MATMUL_DW] = op_matmul_dw,
	[MGL_OP_BIAS_GRAD] = op_bias_grad,       [MGL_OP_LAYERNORM_BWD] = op_layernorm_bwd,
	[MGL_OP_GELU_BWD] = op_unary_bwd,        [MGL_OP_TANH_BWD] = op_unary_bwd,
	[MGL_OP_DROPOUT_BWD] = op_dropout,       [MGL_OP_ATTENTION_BWD] = op_attention_bwd,
	[MGL_OP_SELECT_BWD] = op_select,         [MGL_OP_EMBEDDING_BWD] = op_embedding_bwd,
	[MGL_OP_SUM_TO] = op_sum_to,             [MGL_OP_ACCUMULATE] = op_add,
	[MGL_OP_CE_BWD] = op_ce_bwd,             [MGL_OP_ALL_REDUCE] = op_all_reduce,
	[MGL_OP_ALL_GATHER] = op_all_gather,     [MGL_OP_REDUCE_SCATTER] = op_reduce_scatter,
	[MGL_OP_SLICE] = op_slice,               [MGL_OP_GRAD_NORM] = op_grad_norm,
	[MGL_OP_ADAMW] = op_adamw,               [MGL_OP_RMSNORM] = op_rmsnorm,
	[MGL_OP_RMSNORM_BWD] = op_rmsnorm_bwd,   [MGL_OP_ROPE] = op_rope,
	[MGL_OP_ROPE_BWD] = op_rope,
	[MGL_OP_ATTENTION_BWD_QKV] = op_attention_bwd_qkv,
};
