/* runtime/cuda/cuda.c — the cuda backend: a plan on NVIDIA GPUs.
 *
 * One GPU per rank (rank r on device r), one host thread per rank (exec.c). Storage:
 * activations as the plan says (bf16, with a few f32 values: losses, log-sum-exps), ids
 * int32, parameters fp32 masters with a bf16 copy for the GEMMs (adamw rewrites both),
 * gradients and AdamW moments fp32. GEMMs go through cuBLASLt (bf16 in, fp32 compute);
 * a bias (and a gelu after it) the plan marks as a GEMM epilogue is applied by cuBLASLt; everything else is a
 * kernel of kernels/ops.cu, compiled by NVRTC for the device's
 * architecture the first time and cached on disk by a hash of source, options and
 * versions, then loaded through the runtime API (cudaLibraryLoadData: no libcuda link, so
 * the one mgl binary starts on a machine without a driver and uses the cpu backend).
 *
 * Collectives run on a stream of their own through NCCL (one communicator per tp group and
 * per dp group, made with ncclCommInitAll from the job's first rank): the compute stream
 * records an event, the communication stream waits for it, communicates, and records an
 * event the compute stream waits on before the step that reads the result.
 *
 * Each kind of run (the phases asked, and whether gradients are reduced) runs once as it
 * is, is captured as a CUDA graph the second time, and replayed from then on; what changes from step to step (dropout key, learning
 * rate, Adam's bias corrections) lives in a small device struct the graph reads, written
 * before each replay.
 *
 * Every CUDA, cuBLAS, NCCL and NVRTC call is checked; an error names the plan step, its op
 * and the model's line.
 */
#include "../backend.h"
#include "cuda_backend.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <errno.h>
#include <math.h>
#include <nccl.h>
#include <nvrtc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern const char rt_kernels_src[];   /* kernels/ops.cu, embedded by the Makefile */

typedef uint16_t bf16;

/* The run's parameters as the kernels read them (struct Run in ops.cu). */
typedef struct {
	unsigned long long key;
	int train;
	float lr, beta1, beta2, eps, weight_decay, clip;
	float bc1, bc2;
} DevRun;

#define KERNELS(X) X(embedding) X(embedding_bwd) X(positions) X(bias_add) X(bias_grad) X(layernorm) \
	X(layernorm_bwd) X(gelu) X(gelu_bwd) X(tanh) X(tanh_bwd) X(dropout) X(add) X(sum_to) X(attention) \
	X(attention_bwd) X(convert) X(select) X(select_bwd) X(vocab_max) X(vocab_stats) X(vocab_loss) X(count) \
	X(ce_bwd) X(slice) X(unpack) X(pack) X(sumsq) X(adamw)

enum {
#define X(k) K_##k,
	KERNELS(X)
#undef X
	NKERNELS
};
static const char *const kernel_names[NKERNELS] = {
#define X(k) "k_" #k,
	KERNELS(X)
#undef X
};

/* Modules by the hash of their source (the fixed kernels, and a plan's chains): NVRTC and
 * the loading once for each, whichever rank asks first. */
static pthread_mutex_t module_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { uint64_t key; cudaLibrary_t lib; } modules[16];
static int nmodules;

typedef struct {
	cudaGraphExec_t exec;
	bool eager, made;
} Graph;

typedef struct {
	int device;
	cudaStream_t compute, comm;
	cudaEvent_t to_comm, to_compute;
	cublasLtHandle_t lt;
	void *ws;
	size_t ws_size;
	unsigned char *region[MGL_V_ROLE_COUNT];
	bf16 *shadow;             /* bf16 copies of the parameters, at half their offsets */
	float *scratch;           /* attention_bwd's dk, dv in fp32; the ce count; the norm */
	int64_t scratch_n;
	void *pack;               /* staging for collectives along a non-leading dimension */
	int64_t pack_n;
	DevRun *run;
	ncclComm_t tp, dp;
	Graph graphs[16];
	cudaKernel_t kernels[NKERNELS];
	RtChain *chains;          /* the plan's fused chains, and each one's kernel */
	int nchains;
	cudaKernel_t *chain_kernels;
	int *chain_at;            /* step -> the chain it heads, or -1 */
	cublasLtMatmulAlgo_t *algo;   /* per step, found once */
	bool *has_algo;
	const MglStep *step;      /* the one running: for error messages */
} Dev;

typedef struct {
	ncclComm_t *tp, *dp;      /* per rank */
} JobComms;

/* ---------------------------------------------------------------- errors */

static int failf(RtRank *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(RtRank *r, const char *fmt, ...)
{
	Dev *d = r->mem;
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	const MglStep *s = d ? d->step : NULL;
	if (s)
		snprintf(r->err, sizeof r->err, "rank %d, step %d (%s, model line %d:%d): %s", r->rank,
			 (int)(s - r->job->plan->steps), mgl_ops[s->op].name, s->line, s->col, msg);
	else
		snprintf(r->err, sizeof r->err, "rank %d (GPU %d): %s", r->rank, d ? d->device : r->rank, msg);
	return -1;
}

#define CK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) return failf(r, "%s: %s", #call, cudaGetErrorString(e_)); } while (0)
#define CKB(call) do { cublasStatus_t e_ = (call); if (e_ != CUBLAS_STATUS_SUCCESS) return failf(r, "%s: cuBLAS status %d", #call, (int)e_); } while (0)
#define CKN(call) do { ncclResult_t e_ = (call); if (e_ != ncclSuccess) return failf(r, "%s: %s", #call, ncclGetErrorString(e_)); } while (0)

/* ---------------------------------------------------------------- kernels: NVRTC and the cache */

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
	return h;
}

static const char *cache_dir(char *buf, size_t n)
{
	const char *m = getenv("MGL_CACHE"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
	if (m)
		snprintf(buf, n, "%s", m);
	else if (x)
		snprintf(buf, n, "%s/mgl", x);
	else
		snprintf(buf, n, "%s/.cache/mgl", h ? h : "/tmp");
	return buf;
}

/* A cache file: "MGLK", the key, the size, a checksum, then the cubin. Untrusted: all of
 * it is checked, and a file that fails is ignored (and rewritten). */
static void *cache_load(const char *path, uint64_t key, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	uint64_t hdr[4];
	void *buf = NULL;
	if (fread(hdr, sizeof hdr, 1, f) == 1 && hdr[0] == 0x4b4c474dull && hdr[1] == key && hdr[2] > 0 &&
	    hdr[2] < (1u << 30) && (buf = malloc(hdr[2])) && fread(buf, 1, hdr[2], f) == hdr[2] &&
	    fnv(buf, hdr[2], 1469598103934665603ull) == hdr[3] && fgetc(f) == EOF) {
		*n = hdr[2];
		fclose(f);
		return buf;
	}
	free(buf);
	fclose(f);
	return NULL;
}

static void cache_store(const char *dir, const char *path, uint64_t key, const void *buf, size_t n)
{
	char tmp[1100];
	mkdir(dir, 0777);
	snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
	FILE *f = fopen(tmp, "wb");
	if (!f)
		return;   /* no cache: compile every time */
	uint64_t hdr[4] = {0x4b4c474dull, key, n, fnv(buf, n, 1469598103934665603ull)};
	bool ok = fwrite(hdr, sizeof hdr, 1, f) == 1 && fwrite(buf, 1, n, f) == n;
	ok &= fclose(f) == 0;
	if (!ok || rename(tmp, path))
		remove(tmp);
}

/* Compiles src (kernels/ops.cu if NULL) for sm_XY with NVRTC: the cubin (malloc'd) or NULL
 * with err. */
void *rt_cuda_compile(const char *src, int major, int minor, size_t *n, char *err, size_t errlen)
{
	char arch[64];
	snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d%d", major, minor);
	const char *opts[] = {arch, "-default-device", "--std=c++17", "-lineinfo"};
	nvrtcProgram prog;
	nvrtcResult rc = nvrtcCreateProgram(&prog, src ? src : rt_kernels_src, "kernels/ops.cu", 0, NULL, NULL);
	if (rc != NVRTC_SUCCESS) {
		snprintf(err, errlen, "NVRTC: %s", nvrtcGetErrorString(rc));
		return NULL;
	}
	rc = nvrtcCompileProgram(prog, (int)(sizeof opts / sizeof opts[0]), opts);
	if (rc != NVRTC_SUCCESS) {
		size_t ln = 0;
		nvrtcGetProgramLogSize(prog, &ln);
		char *log = malloc(ln + 1);
		log[0] = 0;
		nvrtcGetProgramLog(prog, log);
		snprintf(err, errlen, "NVRTC could not compile kernels/ops.cu for sm_%d%d: %s\n%.1500s", major, minor,
			 nvrtcGetErrorString(rc), log);
		free(log);
		nvrtcDestroyProgram(&prog);
		return NULL;
	}
	void *cubin = NULL;
	if (nvrtcGetCUBINSize(prog, n) == NVRTC_SUCCESS && (cubin = malloc(*n)) &&
	    nvrtcGetCUBIN(prog, cubin) != NVRTC_SUCCESS) {
		free(cubin);
		cubin = NULL;
	}
	if (!cubin)
		snprintf(err, errlen, "NVRTC: no cubin for sm_%d%d", major, minor);
	nvrtcDestroyProgram(&prog);
	return cubin;
}

/* The module of src for this GPU (compiled, or from the disk cache, or already loaded). */
static int load_module(RtRank *r, const char *src, int major, int minor, cudaLibrary_t *lib)
{
	pthread_mutex_lock(&module_lock);
	int rc = 0;
	int nv_major = 0, nv_minor = 0, driver = 0;
	nvrtcVersion(&nv_major, &nv_minor);
	cudaDriverGetVersion(&driver);
	uint64_t key = fnv(src, strlen(src), 1469598103934665603ull);
	int facts[5] = {major, minor, nv_major, nv_minor, driver};
	key = fnv(facts, sizeof facts, key);
	for (int i = 0; i < nmodules; i++)
		if (modules[i].key == key) {
			*lib = modules[i].lib;
			goto out;
		}
	if (nmodules == (int)(sizeof modules / sizeof modules[0])) {
		rc = failf(r, "too many kernel modules in one process");
		goto out;
	}
	char dir[900], path[1000];
	cache_dir(dir, sizeof dir);
	snprintf(path, sizeof path, "%s/kernels-%016llx.cubin", dir, (unsigned long long)key);
	size_t n = 0;
	void *cubin = cache_load(path, key, &n);
	if (!cubin) {
		char err[2048];
		if (!(cubin = rt_cuda_compile(src, major, minor, &n, err, sizeof err))) {
			rc = failf(r, "%s", err);
			goto out;
		}
		cache_store(dir, path, key, cubin, n);
	}
	cudaError_t e = cudaLibraryLoadData(lib, cubin, NULL, NULL, 0, NULL, NULL, 0);
	free(cubin);
	if (e != cudaSuccess) {
		rc = failf(r, "loading the kernels: %s", cudaGetErrorString(e));
		goto out;
	}
	modules[nmodules].key = key;
	modules[nmodules++].lib = *lib;
out:
	pthread_mutex_unlock(&module_lock);
	return rc;
}

/* The plan's kernels: the fixed ones of kernels/ops.cu and, after them in one source, a
 * generated kernel for each fused chain (chains.c). */
static int load_kernels(RtRank *r, int major, int minor)
{
	Dev *d = r->mem;
	const MglPlan *p = r->job->plan;
	d->chain_at = malloc((size_t)(p->nsteps + 1) * sizeof *d->chain_at);
	for (int s = 0; s < p->nsteps; s++)
		d->chain_at[s] = -1;
	d->nchains = getenv("MGL_NO_FUSE") ? 0 : rt_cuda_chains(p, &d->chains);
	size_t len = strlen(rt_kernels_src) + 1;
	char *src = malloc(len);
	memcpy(src, rt_kernels_src, len);
	for (int c = 0; c < d->nchains; c++) {
		char *k = rt_cuda_chain_source(p, &d->chains[c], r->job->tp);
		src = realloc(src, len + strlen(k));
		memcpy(src + len - 1, k, strlen(k) + 1);
		len += strlen(k);
		free(k);
		d->chain_at[d->chains[c].head] = c;
	}
	cudaLibrary_t lib;
	int rc = load_module(r, src, major, minor, &lib);
	free(src);
	if (rc)
		return -1;
	for (int k = 0; k < NKERNELS; k++)
		CK(cudaLibraryGetKernel(&d->kernels[k], lib, kernel_names[k]));
	d->chain_kernels = calloc((size_t)d->nchains + 1, sizeof *d->chain_kernels);
	for (int c = 0; c < d->nchains; c++) {
		char name[64];
		snprintf(name, sizeof name, "chain_%d", d->chains[c].head);
		CK(cudaLibraryGetKernel(&d->chain_kernels[c], lib, name));
	}
	return 0;
}

static dim3 dim3_of(int64_t n)
{
	dim3 d = {(unsigned)n, 1, 1};
	return d;
}

/* Launches kernel k over n elements (threads_per a thread each, or warps: 32 per item). */
static int launch(RtRank *r, int k, int64_t items, int per_item, void **args)
{
	Dev *d = r->mem;
	int64_t threads = items * per_item;
	unsigned block = 256;
	int64_t grid = (threads + block - 1) / block;
	if (grid > 65535 * 16)
		grid = 65535 * 16;   /* the grid-stride loops cover the rest */
	if (grid < 1)
		grid = 1;
	CK(cudaLaunchKernel((const void *)((Dev *)r->mem)->kernels[k], dim3_of(grid), dim3_of(block), args, 0, d->compute));
	return 0;
}

/* ---------------------------------------------------------------- values */

static const MglValue *val(const RtRank *r, int v) { return &r->job->plan->values[v]; }

static void *P(const RtRank *r, int v)
{
	const Dev *d = r->mem;
	const MglValue *x = val(r, v);
	return d->region[x->role == MGL_V_INPUT ? MGL_V_ACT : x->role] + x->offset;
}

/* The bf16 copy of a parameter (GEMM operands). */
static void *P16(const RtRank *r, int v)
{
	const Dev *d = r->mem;
	return (unsigned char *)d->shadow + val(r, v)->offset / 2;
}


static int dt(const RtRank *r, int v) { return val(r, v)->role == MGL_V_PARAM || val(r, v)->role == MGL_V_GRAD ? MGL_F32 : (int)val(r, v)->dtype; }



/* ---------------------------------------------------------------- GEMMs (cuBLASLt) */

/* Row-major C[M, N] (+)= op(A) op(B) seen by column-major cuBLASLt as C^T = op(B)^T op(A)^T.
 * The caller gives the column-major problem: m, n, k, A (ta: transposed), lda, B, ldb. */
static int lt_gemm(RtRank *r, int step, int64_t m, int64_t n, int64_t k, const void *A, bool ta, int64_t lda, const void *B,
		   bool tb, int64_t ldb, void *C, int cdt, bool accumulate, const void *bias, void *gelu_aux)
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
	}
	CKB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, ta ? k : m, ta ? m : k, lda));
	CKB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, tb ? n : k, tb ? k : n, ldb));
	CKB(cublasLtMatrixLayoutCreate(&lc, ct, m, n, m));
	if (!d->has_algo[step]) {
		cublasLtMatmulPreference_t pref;
		CKB(cublasLtMatmulPreferenceCreate(&pref));
		CKB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &d->ws_size,
							 sizeof d->ws_size));
		cublasLtMatmulHeuristicResult_t h;
		int found = 0;
		CKB(cublasLtMatmulAlgoGetHeuristic(d->lt, op, la, lb, lc, lc, pref, 1, &h, &found));
		cublasLtMatmulPreferenceDestroy(pref);
		if (!found)
			return failf(r, "cuBLASLt has no algorithm for a %lld x %lld x %lld GEMM", (long long)m, (long long)n,
				     (long long)k);
		d->algo[step] = h.algo;
		d->has_algo[step] = true;
	}
	float alpha = 1, beta = accumulate ? 1.0f : 0.0f;
	CKB(cublasLtMatmul(d->lt, op, &alpha, A, la, B, lb, &beta, C, lc, C, lc, &d->algo[step], d->ws, d->ws_size,
			   d->compute));
	cublasLtMatrixLayoutDestroy(la);
	cublasLtMatrixLayoutDestroy(lb);
	cublasLtMatrixLayoutDestroy(lc);
	cublasLtMatmulDescDestroy(op);
	return 0;
}

/* ---------------------------------------------------------------- the ops */

typedef struct {
	RtRank *r;
	const MglStep *s;
	int index;             /* the step's number */
	bool last_micro;
} Ctx;

#define IN(k) (c->s->in[k])
#define OUT(k) (c->s->out[k])
#define ACC(k) (val(c->r, OUT(k))->role == MGL_V_GRAD)
#define ARGS(...) (void *[]){__VA_ARGS__}

/* the operand a GEMM reads: the bf16 copy when the value is a parameter */
static const void *operand(const RtRank *r, int v)
{
	return val(r, v)->role == MGL_V_PARAM ? P16(r, v) : P(r, v);
}

/* The bias_add fused into matmul step i as its epilogue (fuse.c marks it), or NULL. */
static const MglStep *epilogue_bias(const RtRank *r, int i)
{
	const MglPlan *p = r->job->plan;
	const MglStep *s = &p->steps[i];
	if (!(s->epilogue & MGL_EPI_BIAS) || i + 1 >= p->nsteps || p->steps[i + 1].op != MGL_OP_BIAS_ADD ||
	    p->steps[i + 1].in[0] != s->out[0] || p->steps[i + 1].fuse != s->fuse || getenv("MGL_NO_EPILOGUE") ||
	    p->values[p->steps[i + 1].out[0]].dtype != MGL_BF16)
		return NULL;
	return &p->steps[i + 1];
}

/* The gelu fused after that bias (GELU_AUX_BIAS: cuBLASLt's GELU is GPT-2's tanh form, and
 * it keeps the pre-activation, which gelu_bwd reads), or NULL. */
static const MglStep *epilogue_gelu(const RtRank *r, int i)
{
	const MglPlan *p = r->job->plan;
	const MglStep *b = epilogue_bias(r, i);
	if (!b || !(p->steps[i].epilogue & MGL_EPI_GELU) || i + 2 >= p->nsteps || p->steps[i + 2].op != MGL_OP_GELU ||
	    p->steps[i + 2].in[0] != b->out[0] || p->steps[i + 2].fuse != p->steps[i].fuse ||
	    p->values[p->steps[i + 2].out[0]].dtype != MGL_BF16 || p->values[b->out[0]].shape[p->values[b->out[0]].rank - 1] % 8 ||
	    getenv("MGL_NO_GELU_EPILOGUE"))
		return NULL;
	return &p->steps[i + 2];
}

static int op_matmul(Ctx *c)
{
	const MglValue *x = val(c->r, IN(0)), *w = val(c->r, IN(1));
	int64_t M = rt_rows(x), N = w->shape[0], K = w->shape[1];
	/* with a bias epilogue the GEMM writes the bias_add's output, and that step is skipped;
	 * with gelu after it, the GEMM writes the gelu's output and keeps the bias_add's */
	const MglStep *b = epilogue_bias(c->r, c->index), *g = epilogue_gelu(c->r, c->index);
	int out = g ? g->out[0] : b ? b->out[0] : OUT(0);
	/* y^T[N, M] = W[N, K] (col-major K x N, transposed) . x^T (col-major K x M) */
	return lt_gemm(c->r, c->index, N, M, K, operand(c->r, IN(1)), true, K, operand(c->r, IN(0)), false, K,
		       P(c->r, out), dt(c->r, out), false, b ? P16(c->r, b->in[1]) : NULL, g ? P(c->r, b->out[0]) : NULL);
}

static int op_matmul_dx(Ctx *c)
{
	const MglValue *dy = val(c->r, IN(0)), *w = val(c->r, IN(1));
	int64_t M = rt_rows(dy), N = w->shape[0], K = w->shape[1];
	/* dx^T[K, M] = W^T (col-major K x N) . dy^T (col-major N x M) */
	return lt_gemm(c->r, c->index, K, M, N, operand(c->r, IN(1)), false, K, P(c->r, IN(0)), false, N,
		       P(c->r, OUT(0)), dt(c->r, OUT(0)), false, NULL, NULL);
}

static int op_matmul_dw(Ctx *c)
{
	const MglValue *dy = val(c->r, IN(0)), *x = val(c->r, IN(1));
	int64_t M = rt_rows(dy), N = rt_last(dy), K = rt_last(x);
	/* dW^T[K, N] (+)= x^T (col-major K x M) . dy (col-major N x M, transposed) */
	return lt_gemm(c->r, c->index, K, N, M, P(c->r, IN(1)), false, K, P(c->r, IN(0)), true, N, P(c->r, OUT(0)),
		       dt(c->r, OUT(0)), ACC(0), NULL, NULL);
}

static int op_embedding(Ctx *c)
{
	const MglValue *tab = val(c->r, IN(0)), *ids = val(c->r, IN(1));
	int64_t n = mgl_numel(ids), D = tab->shape[1], V = tab->shape[0], start = rt_shard_start(c->r, tab);
	int odt = dt(c->r, OUT(0));
	void *t = P(c->r, IN(0)), *i = P(c->r, IN(1)), *o = P(c->r, OUT(0));
	return launch(c->r, K_embedding, n * D, 1, ARGS(&t, &i, &o, &odt, &n, &D, &V, &start));
}

static int op_embedding_bwd(Ctx *c)
{
	const MglValue *tab = val(c->r, OUT(0)), *ids = val(c->r, IN(1));
	int64_t n = mgl_numel(ids), D = tab->shape[1], V = tab->shape[0], start = rt_shard_start(c->r, tab);
	int ddt = dt(c->r, IN(0));
	void *g = P(c->r, IN(0)), *i = P(c->r, IN(1)), *o = P(c->r, OUT(0));
	return launch(c->r, K_embedding_bwd, n * D, 1, ARGS(&g, &ddt, &i, &o, &n, &D, &V, &start));
}

static int op_positions(Ctx *c)
{
	int64_t n = mgl_numel(val(c->r, OUT(0)));
	void *o = P(c->r, OUT(0));
	return launch(c->r, K_positions, n, 1, ARGS(&o, &n));
}

static int op_bias_add(Ctx *c)
{
	const MglValue *y = val(c->r, IN(0));
	int64_t M = rt_rows(y), N = rt_last(y);
	int ydt = dt(c->r, IN(0)), odt = dt(c->r, OUT(0));
	void *a = P(c->r, IN(0)), *b = P(c->r, IN(1)), *o = P(c->r, OUT(0));
	return launch(c->r, K_bias_add, M * N, 1, ARGS(&a, &ydt, &b, &o, &odt, &M, &N));
}

static int op_bias_grad(Ctx *c)
{
	const MglValue *dy = val(c->r, IN(0));
	int64_t M = rt_rows(dy), N = rt_last(dy);
	int ddt = dt(c->r, IN(0)), acc = ACC(0);
	void *g = P(c->r, IN(0)), *o = P(c->r, OUT(0));
	return launch(c->r, K_bias_grad, N, 1, ARGS(&g, &ddt, &o, &M, &N, &acc));
}

static int op_layernorm(Ctx *c)
{
	const MglValue *x = val(c->r, IN(0));
	int64_t M = rt_rows(x), D = rt_last(x);
	float eps = (float)c->s->p;
	int xdt = dt(c->r, IN(0)), ydt = dt(c->r, OUT(0));
	void *X = P(c->r, IN(0)), *w = P(c->r, IN(1)), *b = P(c->r, IN(2)), *y = P(c->r, OUT(0));
	return launch(c->r, K_layernorm, M, 32, ARGS(&X, &xdt, &w, &b, &y, &ydt, &M, &D, &eps));
}

static int op_layernorm_bwd(Ctx *c)
{
	Dev *d = c->r->mem;
	const MglValue *x = val(c->r, IN(1));
	RtRank *r = c->r;
	int64_t M = rt_rows(x), D = rt_last(x);
	float eps = (float)c->s->p;
	int gdt = dt(r, IN(0)), xdt = dt(r, IN(1)), dxdt = dt(r, OUT(0));
	void *g = P(r, IN(0)), *X = P(r, IN(1)), *w = P(r, IN(2)), *dx = P(r, OUT(0)), *dw = P(r, OUT(1)), *db = P(r, OUT(2));
	if (!ACC(1))
		CK(cudaMemsetAsync(dw, 0, (size_t)D * 4, d->compute));
	if (!ACC(2))
		CK(cudaMemsetAsync(db, 0, (size_t)D * 4, d->compute));
	return launch(r, K_layernorm_bwd, M, 32, ARGS(&g, &gdt, &X, &xdt, &w, &dx, &dxdt, &dw, &db, &M, &D, &eps));
}

/* gelu, tanh: y = f(x) */
static int op_unary(Ctx *c)
{
	int64_t n = mgl_numel(val(c->r, IN(0)));
	int xdt = dt(c->r, IN(0)), ydt = dt(c->r, OUT(0));
	void *x = P(c->r, IN(0)), *y = P(c->r, OUT(0));
	return launch(c->r, c->s->op == MGL_OP_GELU ? K_gelu : K_tanh, n, 1, ARGS(&x, &xdt, &y, &ydt, &n));
}

/* gelu_bwd (dy, x), tanh_bwd (dy, y) */
static int op_unary_bwd(Ctx *c)
{
	int64_t n = mgl_numel(val(c->r, IN(0)));
	int gdt = dt(c->r, IN(0)), xdt = dt(c->r, IN(1)), odt = dt(c->r, OUT(0));
	void *g = P(c->r, IN(0)), *x = P(c->r, IN(1)), *o = P(c->r, OUT(0));
	return launch(c->r, c->s->op == MGL_OP_GELU_BWD ? K_gelu_bwd : K_tanh_bwd, n, 1,
		      ARGS(&g, &gdt, &x, &xdt, &o, &odt, &n));
}

static int op_dropout(Ctx *c)
{
	Dev *d = c->r->mem;
	const MglValue *x = val(c->r, IN(0));
	int64_t outer = 1, n = mgl_numel(x), inner = 1, whole, start = 0;
	if (x->layout.kind == MGL_L_S && c->r->job->tp > 1) {
		rt_around(x, x->layout.dim, &outer, &n, &inner);
		start = rt_shard_start(c->r, x);
	}
	whole = x->layout.kind == MGL_L_S && c->r->job->tp > 1 ? n * c->r->job->tp : n;
	double p = c->s->p;
	unsigned seed = c->s->seed;
	int xdt = dt(c->r, IN(0)), ydt = dt(c->r, OUT(0));
	void *X = P(c->r, IN(0)), *Y = P(c->r, OUT(0));
	DevRun *run = d->run;
	return launch(c->r, K_dropout, outer * n * inner, 1,
		      ARGS(&X, &xdt, &Y, &ydt, &outer, &n, &inner, &whole, &start, &p, &seed, &run));
}

static int op_add(Ctx *c)
{
	const MglValue *a = val(c->r, IN(0)), *b = val(c->r, IN(1)), *o = val(c->r, OUT(0));
	for (int k = 0; k < 2; k++) {   /* suffix broadcasting only (what the models need) */
		const MglValue *x = k ? b : a;
		for (int i = 0; i < x->rank; i++)
			if (x->shape[x->rank - 1 - i] != o->shape[o->rank - 1 - i])
				return failf(c->r, "the cuda backend adds tensors broadcast along leading dimensions only");
	}
	int64_t na = mgl_numel(a), nb = mgl_numel(b), n = mgl_numel(o);
	int adt = dt(c->r, IN(0)), bdt = dt(c->r, IN(1)), odt = dt(c->r, OUT(0));
	void *A = P(c->r, IN(0)), *B = P(c->r, IN(1)), *O = P(c->r, OUT(0));
	return launch(c->r, K_add, n, 1, ARGS(&A, &adt, &na, &B, &bdt, &nb, &O, &odt, &n));
}

static int op_sum_to(Ctx *c)
{
	const MglValue *g = val(c->r, IN(0)), *o = val(c->r, OUT(0));
	for (int i = 0; i < o->rank; i++)
		if (o->shape[o->rank - 1 - i] != g->shape[g->rank - 1 - i])
			return failf(c->r, "the cuda backend sums over leading dimensions only");
	int64_t n = mgl_numel(g), no = mgl_numel(o);
	int gdt = dt(c->r, IN(0)), odt = dt(c->r, OUT(0)), acc = ACC(0);
	void *G = P(c->r, IN(0)), *O = P(c->r, OUT(0));
	return launch(c->r, K_sum_to, no, 1, ARGS(&G, &gdt, &n, &O, &odt, &no, &acc));
}

static int need_scratch(RtRank *r, int64_t floats)
{
	Dev *d = r->mem;
	if (d->scratch_n >= floats)
		return 0;
	return failf(r, "internal error: scratch of %lld floats, %lld needed", (long long)d->scratch_n, (long long)floats);
}

static int op_attention(Ctx *c)
{
	const MglValue *q = val(c->r, IN(0));
	int64_t B = q->shape[0], S = q->shape[1], H = c->s->heads, dh = q->shape[2] / H;
	int causal = c->s->causal;
	if (dh > 256)
		return failf(c->r, "attention heads of %lld features: the cuda kernel takes up to 256", (long long)dh);
	void *Q = P(c->r, IN(0)), *K = P(c->r, IN(1)), *V = P(c->r, IN(2)), *M = c->s->nin > 3 ? P(c->r, IN(3)) : NULL;
	void *O = P(c->r, OUT(0)), *L = P(c->r, OUT(1));
	return launch(c->r, K_attention, B * H * S, 32, ARGS(&Q, &K, &V, &M, &O, &L, &B, &S, &H, &dh, &causal));
}

static int op_attention_bwd(Ctx *c)
{
	Dev *d = c->r->mem;
	RtRank *r = c->r;
	const MglValue *q = val(r, IN(1));
	int64_t B = q->shape[0], S = q->shape[1], H = c->s->heads, dh = q->shape[2] / H, n = mgl_numel(q);
	int causal = c->s->causal;
	if (need_scratch(r, 2 * n + 64))
		return -1;
	float *dk = d->scratch + 64, *dv = dk + n;
	CK(cudaMemsetAsync(dk, 0, (size_t)(2 * n) * 4, d->compute));
	void *G = P(r, IN(0)), *Q = P(r, IN(1)), *K = P(r, IN(2)), *V = P(r, IN(3)), *O = P(r, IN(4)), *L = P(r, IN(5));
	void *M = c->s->nin > 6 ? P(r, IN(6)) : NULL, *dq = P(r, OUT(0));
	if (launch(r, K_attention_bwd, B * H * S, 32, ARGS(&G, &Q, &K, &V, &O, &L, &M, &dq, &dk, &dv, &B, &S, &H, &dh, &causal)))
		return -1;
	int f = MGL_F32, odt = dt(r, OUT(1));
	void *DK = P(r, OUT(1)), *DV = P(r, OUT(2));
	if (launch(r, K_convert, n, 1, ARGS(&dk, &f, &DK, &odt, &n)))
		return -1;
	return launch(r, K_convert, n, 1, ARGS(&dv, &f, &DV, &odt, &n));
}

static int op_select(Ctx *c)
{
	bool bwd = c->s->op == MGL_OP_SELECT_BWD;
	const MglValue *x = val(c->r, bwd ? OUT(0) : IN(0));
	int64_t B = x->shape[0], S = x->shape[1], inner = mgl_numel(x) / (B * S), index = c->s->index;
	int idt = dt(c->r, IN(0)), odt = dt(c->r, OUT(0));
	void *I = P(c->r, IN(0)), *O = P(c->r, OUT(0));
	return launch(c->r, bwd ? K_select_bwd : K_select, bwd ? B * S * inner : B * inner, 1,
		      ARGS(&I, &idt, &O, &odt, &B, &S, &inner, &index));
}

static int64_t valid_cols(const Ctx *c, const MglValue *z, int64_t *start)
{
	*start = rt_shard_start(c->r, z);
	int64_t v = c->s->limit - *start;
	return v < 0 ? 0 : v > rt_last(z) ? rt_last(z) : v;
}

static int op_vocab_max(Ctx *c)
{
	const MglValue *z = val(c->r, IN(0));
	int64_t start, valid = valid_cols(c, z, &start), M = rt_rows(z), N = rt_last(z);
	int zdt = dt(c->r, IN(0));
	void *Z = P(c->r, IN(0)), *m = P(c->r, OUT(0));
	return launch(c->r, K_vocab_max, M, 32, ARGS(&Z, &zdt, &m, &M, &N, &valid));
}

static int op_vocab_stats(Ctx *c)
{
	const MglValue *z = val(c->r, IN(0));
	int64_t start, valid = valid_cols(c, z, &start), M = rt_rows(z), N = rt_last(z);
	int zdt = dt(c->r, IN(0));
	void *Z = P(c->r, IN(0)), *t = P(c->r, IN(1)), *m = P(c->r, IN(2)), *st = P(c->r, OUT(0));
	return launch(c->r, K_vocab_stats, M, 32, ARGS(&Z, &zdt, &t, &m, &st, &M, &N, &valid, &start));
}

static int op_vocab_loss(Ctx *c)
{
	Dev *d = c->r->mem;
	RtRank *r = c->r;
	int64_t M = mgl_numel(val(r, IN(2))), ignore = c->s->index;
	void *st = P(r, IN(0)), *m = P(r, IN(1)), *t = P(r, IN(2)), *loss = P(r, OUT(0)), *lse = P(r, OUT(1));
	CK(cudaLaunchKernel((const void *)((Dev *)r->mem)->kernels[K_vocab_loss], dim3_of(1), dim3_of(1024),
			    ARGS(&st, &m, &t, &loss, &lse, &M, &ignore), 0, d->compute));
	return 0;
}

static int op_ce_bwd(Ctx *c)
{
	Dev *d = c->r->mem;
	RtRank *r = c->r;
	const MglValue *z = val(r, IN(1));
	int64_t start, valid = valid_cols(c, z, &start), M = rt_rows(z), N = rt_last(z), ignore = c->s->index;
	int64_t nt = mgl_numel(val(r, IN(2)));
	float *count = d->scratch;
	void *t = P(r, IN(2));
	CK(cudaLaunchKernel((const void *)((Dev *)r->mem)->kernels[K_count], dim3_of(1), dim3_of(1024), ARGS(&t, &nt, &ignore, &count), 0,
			    d->compute));
	int zdt = dt(r, IN(1)), odt = dt(r, OUT(0));
	void *g = P(r, IN(0)), *Z = P(r, IN(1)), *L = P(r, IN(3)), *O = P(r, OUT(0));
	return launch(r, K_ce_bwd, M * N, 1, ARGS(&g, &Z, &zdt, &t, &L, &count, &O, &odt, &M, &N, &valid, &start, &ignore));
}

static int op_slice(Ctx *c)
{
	const MglValue *o = val(c->r, OUT(0));
	int64_t outer, n, inner;
	rt_around(o, c->s->dim, &outer, &n, &inner);
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

/* ... and the compute stream for the communication's result. */
static int comm_end(RtRank *r)
{
	Dev *d = r->mem;
	CK(cudaEventRecord(d->to_compute, d->comm));
	CK(cudaStreamWaitEvent(d->compute, d->to_compute, 0));
	return 0;
}

static int op_all_reduce(Ctx *c)
{
	RtRank *r = c->r;
	Dev *d = r->mem;
	if (ACC(0) && !c->last_micro)
		return 0;   /* gradient buffers are reduced once, after the last micro-batch */
	ncclComm_t comm = c->s->group == MGL_GROUP_DP ? d->dp : d->tp;
	if (comm_begin(r))
		return -1;
	CKN(ncclGroupStart());
	for (int k = 0; k < c->s->nin; k++) {
		int ty = dt(r, IN(k));
		CKN(ncclAllReduce(P(r, IN(k)), P(r, OUT(k)), (size_t)mgl_numel(val(r, IN(k))), nccl_type(ty),
				  c->s->reduce_max ? ncclMax : ncclSum, comm, d->comm));
	}
	CKN(ncclGroupEnd());
	return comm_end(r);
}

static int op_all_gather(Ctx *c)
{
	RtRank *r = c->r;
	Dev *d = r->mem;
	const MglValue *x = val(r, IN(0));
	int64_t outer, n, inner, tp = r->job->tp;
	rt_around(x, c->s->dim, &outer, &n, &inner);
	int es = mgl_dtype_size[x->dtype];
	size_t count = (size_t)(outer * n * inner);
	void *dst = outer == 1 ? P(r, OUT(0)) : d->pack;
	if (outer > 1 && (int64_t)count * tp * es > d->pack_n)
		return failf(r, "internal error: the collective staging buffer is too small");
	if (comm_begin(r))
		return -1;
	CKN(ncclAllGather(P(r, IN(0)), dst, count, nccl_type(x->dtype), d->tp, d->comm));
	if (comm_end(r))
		return -1;
	if (outer == 1)
		return 0;
	void *o = P(r, OUT(0));
	return launch(r, K_unpack, tp * (int64_t)count, 1, ARGS(&dst, &o, &es, &tp, &outer, &n, &inner));
}

static int op_reduce_scatter(Ctx *c)
{
	RtRank *r = c->r;
	Dev *d = r->mem;
	const MglValue *o = val(r, OUT(0));
	int64_t outer, n, inner, tp = r->job->tp;
	rt_around(o, c->s->dim, &outer, &n, &inner);
	int es = mgl_dtype_size[o->dtype];
	size_t count = (size_t)(outer * n * inner);
	void *src = P(r, IN(0));
	if (outer > 1) {
		if ((int64_t)count * tp * es > d->pack_n)
			return failf(r, "internal error: the collective staging buffer is too small");
		if (launch(r, K_pack, tp * (int64_t)count, 1, ARGS(&src, &d->pack, &es, &tp, &outer, &n, &inner)))
			return -1;
		src = d->pack;
	}
	if (comm_begin(r))
		return -1;
	CKN(ncclReduceScatter(src, P(r, OUT(0)), count, nccl_type(o->dtype), ncclSum, d->tp, d->comm));
	return comm_end(r);
}

/* ---------------------------------------------------------------- the optimizer */

static int op_grad_norm(Ctx *c)
{
	RtRank *r = c->r;
	Dev *d = r->mem;
	float *acc = P(r, OUT(0));
	CK(cudaMemsetAsync(acc, 0, 4, d->compute));
	for (int k = 0; k < c->s->nin; k++) {
		const MglValue *g = val(r, IN(k));
		if (g->layout.kind == MGL_L_R && r->tp_rank != 0)
			continue;   /* a replicated gradient counts once over the tp group */
		int64_t n = mgl_numel(g);
		void *G = P(r, IN(k));
		if (launch(r, K_sumsq, n < 65536 ? n : 65536, 1, ARGS(&G, &n, &acc)))
			return -1;
	}
	return 0;
}

static int op_adamw(Ctx *c)
{
	RtRank *r = c->r;
	Dev *d = r->mem;
	int64_t n = mgl_numel(val(r, IN(0)));
	int decay = c->s->index == 1;
	void *w = P(r, IN(0)), *g = P(r, IN(1)), *m = P(r, IN(2)), *v = P(r, IN(3)), *w16 = P16(r, IN(0)), *norm = P(r, IN(4));
	DevRun *run = d->run;
	return launch(r, K_adamw, n, 1, ARGS(&w, &g, &m, &v, &w16, &norm, &run, &decay, &n));
}

typedef int OpFn(Ctx *c);

static OpFn *const ops[MGL_OP_COUNT] = {
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
	[MGL_OP_ADAMW] = op_adamw,
};

/* ---------------------------------------------------------------- the backend */

/* The job's communicators: one ncclCommInitAll per tp group and per dp group, made by the
 * first rank to open (ranks open one after another, on the main thread). */
static int make_comms(RtRank *r)
{
	RtJob *j = r->job;
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&lock);
	int rc = 0;
	if (!j->be_job) {
		JobComms *jc = calloc(1, sizeof *jc);
		jc->tp = calloc((size_t)j->nranks, sizeof *jc->tp);
		jc->dp = calloc((size_t)j->nranks, sizeof *jc->dp);
		int *devs = calloc((size_t)j->nranks, sizeof *devs);
		ncclComm_t *comms = calloc((size_t)j->nranks, sizeof *comms);
		for (int g = 0; g < j->dp && !rc && j->tp > 1; g++) {
			for (int t = 0; t < j->tp; t++)
				devs[t] = g * j->tp + t;
			ncclResult_t e = ncclCommInitAll(comms, j->tp, devs);
			if (e != ncclSuccess)
				rc = failf(r, "ncclCommInitAll (tp group %d): %s", g, ncclGetErrorString(e));
			for (int t = 0; t < j->tp && !rc; t++)
				jc->tp[g * j->tp + t] = comms[t];
		}
		for (int g = 0; g < j->tp && !rc && j->dp > 1; g++) {
			for (int k = 0; k < j->dp; k++)
				devs[k] = k * j->tp + g;
			ncclResult_t e = ncclCommInitAll(comms, j->dp, devs);
			if (e != ncclSuccess)
				rc = failf(r, "ncclCommInitAll (dp group %d): %s", g, ncclGetErrorString(e));
			for (int k = 0; k < j->dp && !rc; k++)
				jc->dp[k * j->tp + g] = comms[k];
		}
		free(devs);
		free(comms);
		j->be_job = jc;
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

static int64_t plan_bytes(const MglPlan *p, int64_t *shadow, int64_t *scratch, int64_t *pack)
{
	*shadow = p->persistent_bytes[MGL_V_PARAM] / 2 + 256;
	*scratch = 64, *pack = 256;
	for (int s = 0; s < p->nsteps; s++) {
		const MglStep *st = &p->steps[s];
		if (st->op == MGL_OP_ATTENTION_BWD) {
			int64_t n = mgl_numel(&p->values[st->in[1]]);
			*scratch = *scratch > 2 * n + 64 ? *scratch : 2 * n + 64;
		}
		if (st->op == MGL_OP_ALL_GATHER || st->op == MGL_OP_REDUCE_SCATTER) {
			const MglValue *full = &p->values[st->op == MGL_OP_ALL_GATHER ? st->out[0] : st->in[0]];
			int64_t b = mgl_numel(full) * mgl_dtype_size[full->dtype];
			*pack = *pack > b ? *pack : b;
		}
	}
	int64_t total = p->arena_bytes + *shadow + *scratch * 4 + *pack + ((int64_t)64 << 20);
	for (int k = 0; k < MGL_V_ROLE_COUNT; k++)
		total += p->persistent_bytes[k];
	return total;
}

static int cuda_open(RtRank *r)
{
	const MglPlan *p = r->job->plan;
	Dev *d = calloc(1, sizeof *d);
	r->mem = d;
	d->device = r->rank;
	int count = 0;
	CK(cudaGetDeviceCount(&count));
	if (r->job->nranks > count)
		return failf(r, "this job has %d ranks, one GPU each, but %d GPU%s visible", r->job->nranks, count,
			     count == 1 ? " is" : "s are");
	CK(cudaSetDevice(d->device));
	struct cudaDeviceProp prop;
	CK(cudaGetDeviceProperties(&prop, d->device));
	if (load_kernels(r, prop.major, prop.minor))
		return -1;
	int64_t shadow, scratch, pack, need = plan_bytes(p, &shadow, &scratch, &pack);
	size_t free_b = 0, total_b = 0;
	CK(cudaMemGetInfo(&free_b, &total_b));
	if ((size_t)need > free_b)
		return failf(r, "the plan needs %.2f GiB on each GPU and %.2f GiB are free on GPU %d (of %.2f): "
			     "use a smaller --batch (activations are %.2f GiB) or a larger --tp", (double)need / (1 << 30),
			     (double)free_b / (1 << 30), d->device, (double)total_b / (1 << 30),
			     (double)p->arena_bytes / (1 << 30));
	int64_t size[MGL_V_ROLE_COUNT] = {0};
	memcpy(size, p->persistent_bytes, sizeof size);
	size[MGL_V_ACT] = p->arena_bytes;
	for (int k = 0; k < MGL_V_ROLE_COUNT; k++)
		if (k != MGL_V_INPUT) {
			CK(cudaMalloc((void **)&d->region[k], (size_t)size[k] + 256));
			CK(cudaMemset(d->region[k], 0, (size_t)size[k] + 256));
		}
	CK(cudaMalloc((void **)&d->shadow, (size_t)shadow));
	CK(cudaMalloc((void **)&d->scratch, (size_t)scratch * 4));
	d->scratch_n = scratch;
	CK(cudaMalloc(&d->pack, (size_t)pack));
	d->pack_n = pack;
	CK(cudaMalloc((void **)&d->run, sizeof(DevRun)));
	d->ws_size = 64u << 20;
	CK(cudaMalloc(&d->ws, d->ws_size));
	CK(cudaStreamCreateWithFlags(&d->compute, cudaStreamNonBlocking));
	CK(cudaStreamCreateWithFlags(&d->comm, cudaStreamNonBlocking));
	CK(cudaEventCreateWithFlags(&d->to_comm, cudaEventDisableTiming));
	CK(cudaEventCreateWithFlags(&d->to_compute, cudaEventDisableTiming));
	CKB(cublasLtCreate(&d->lt));
	d->algo = calloc((size_t)p->nsteps + 1, sizeof *d->algo);
	d->has_algo = calloc((size_t)p->nsteps + 1, sizeof *d->has_algo);
	if (r->job->nranks > 1) {
		if (make_comms(r))
			return -1;
		JobComms *jc = r->job->be_job;
		d->tp = jc->tp[r->rank];
		d->dp = jc->dp[r->rank];
	}
	for (int s = 0; s < p->nsteps; s++)
		if (!ops[p->steps[s].op])
			return failf(r, "step %d: the cuda backend has no kernel for %s", s, mgl_ops[p->steps[s].op].name);
	return 0;
}

static void cuda_close(RtRank *r)
{
	Dev *d = r->mem;
	if (!d)
		return;
	cudaSetDevice(d->device);
	cudaDeviceSynchronize();
	for (size_t g = 0; g < sizeof d->graphs / sizeof d->graphs[0]; g++)
		if (d->graphs[g].made)
			cudaGraphExecDestroy(d->graphs[g].exec);
	for (int k = 0; k < MGL_V_ROLE_COUNT; k++)
		cudaFree(d->region[k]);
	cudaFree(d->shadow);
	cudaFree(d->scratch);
	cudaFree(d->pack);
	cudaFree(d->run);
	cudaFree(d->ws);
	if (d->lt)
		cublasLtDestroy(d->lt);
	if (d->compute)
		cudaStreamDestroy(d->compute);
	if (d->comm)
		cudaStreamDestroy(d->comm);
	if (d->to_comm)
		cudaEventDestroy(d->to_comm);
	if (d->to_compute)
		cudaEventDestroy(d->to_compute);
	if (d->tp)
		ncclCommDestroy(d->tp);
	if (d->dp)
		ncclCommDestroy(d->dp);
	free(d->algo);
	free(d->has_algo);
	free(d->chains);
	free(d->chain_kernels);
	free(d->chain_at);
	free(d);
	r->mem = NULL;
	JobComms *jc = r->job->be_job;
	if (jc && r->rank == r->job->nranks - 1) {   /* the last rank to close frees the job's part */
		free(jc->tp);
		free(jc->dp);
		free(jc);
		r->job->be_job = NULL;
	}
}

static int run_chain(RtRank *r, const RtChain *c, cudaKernel_t k)
{
	Dev *d = r->mem;
	void *ptrs[RT_CHAIN_MAX_IN + 1], *args[RT_CHAIN_MAX_IN + 3];
	int na = 0;
	for (int j = 0; j < c->nin; j++) {
		ptrs[j] = P(r, c->in[j]);
		args[na++] = &ptrs[j];
	}
	void *out = P(r, c->out);
	DevRun *run = d->run;
	int64_t start = c->dropout_value >= 0 ? rt_shard_start(r, val(r, c->dropout_value)) : 0;
	args[na++] = &out;
	args[na++] = &run;
	args[na++] = &start;
	int64_t n = mgl_numel(val(r, c->out)), grid = (n + 255) / 256;
	if (grid > 65535 * 16)
		grid = 65535 * 16;
	CK(cudaLaunchKernel((const void *)k, dim3_of(grid > 0 ? grid : 1), dim3_of(256), args, 0, d->compute));
	return 0;
}

/* The steps of the asked phases, in order, onto the streams. */
static int enqueue(RtRank *r, int from, int to, unsigned phases, bool last_micro)
{
	Dev *d = r->mem;
	const MglPlan *p = r->job->plan;
	for (int i = from; i < to; i++) {
		const MglStep *s = &p->steps[i];
		if (!(phases & (1u << s->phase)))
			continue;
		if ((s->op == MGL_OP_BIAS_ADD && i > 0 && epilogue_bias(r, i - 1) == s) ||
		    (s->op == MGL_OP_GELU && i > 1 && epilogue_gelu(r, i - 2) == s))
			continue;   /* done by the GEMM before it */
		d->step = s;
		if (d->chain_at[i] >= 0) {   /* a fused chain: one generated kernel, then past its end */
			if (run_chain(r, &d->chains[d->chain_at[i]], d->chain_kernels[d->chain_at[i]]))
				return -1;
			i = d->chains[d->chain_at[i]].last;
			continue;
		}
		Ctx c = {r, s, i, last_micro};
		if (ops[s->op](&c))
			return -1;
	}
	d->step = NULL;
	return 0;
}

static int cuda_run(RtRank *r, int from, int to, unsigned phases, const RtRun *run)
{
	Dev *d = r->mem;
	CK(cudaSetDevice(d->device));
	DevRun dr = {.key = rt_dropout_key(run->key, r->dp_rank), .train = run->train, .lr = (float)run->lr, .beta1 = (float)run->beta1,
		     .beta2 = (float)run->beta2, .eps = (float)run->eps, .weight_decay = (float)run->weight_decay,
		     .clip = (float)run->clip};
	dr.bc1 = (float)(1 - pow(run->beta1, (double)run->adam_t));
	dr.bc2 = (float)(1 - pow(run->beta2, (double)run->adam_t));
	CK(cudaMemcpyAsync(d->run, &dr, sizeof dr, cudaMemcpyHostToDevice, d->compute));
	bool graphs = !getenv("MGL_NO_GRAPHS") && from == 0 && to == r->job->plan->nsteps;
	if (!graphs) {
		if (enqueue(r, from, to, phases, run->last_micro))
			return -1;
	} else {
		Graph *g = &d->graphs[(phases & 7) << 1 | run->last_micro];
		if (!g->eager) {
			/* the first run of its kind runs as it is: NCCL connects its peers and cuBLASLt
			 * picks its algorithms, neither of which may happen inside a capture */
			g->eager = true;
			if (enqueue(r, from, to, phases, run->last_micro))
				return -1;
		} else if (!g->made) {
			/* the second is captured, and replayed from then on */
			cudaGraph_t graph;
			CK(cudaStreamBeginCapture(d->compute, cudaStreamCaptureModeThreadLocal));
			int rc = enqueue(r, from, to, phases, run->last_micro);
			cudaError_t e = cudaStreamEndCapture(d->compute, &graph);
			if (rc)
				return -1;
			if (e != cudaSuccess)
				return failf(r, "capturing the step as a CUDA graph: %s", cudaGetErrorString(e));
			CK(cudaGraphInstantiate(&g->exec, graph, 0));
			cudaGraphDestroy(graph);
			g->made = true;
		}
		if (g->made)
			CK(cudaGraphLaunch(g->exec, d->compute));
	}
	CK(cudaStreamSynchronize(d->compute));
	CK(cudaGetLastError());
	return 0;
}

static int64_t value_numel(const RtRank *r, int v) { return mgl_numel(val(r, v)); }

/* Host floats (or int32 ids) to the rank: bf16 values converted, parameters also to their
 * bf16 copy. Errors here are reported by the next run. */
static uint16_t to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static void cuda_write(RtRank *r, int v, const void *host)
{
	Dev *d = r->mem;
	cudaSetDevice(d->device);
	int64_t n = value_numel(r, v);
	int ty = dt(r, v);
	if (ty == MGL_BF16) {
		uint16_t *h = malloc((size_t)n * 2);
		for (int64_t i = 0; i < n; i++)
			h[i] = to_bf16(((const float *)host)[i]);
		cudaMemcpy(P(r, v), h, (size_t)n * 2, cudaMemcpyHostToDevice);
		free(h);
		return;
	}
	cudaMemcpy(P(r, v), host, (size_t)n * 4, cudaMemcpyHostToDevice);
	if (val(r, v)->role == MGL_V_PARAM) {
		uint16_t *h = malloc((size_t)n * 2);
		for (int64_t i = 0; i < n; i++)
			h[i] = to_bf16(((const float *)host)[i]);
		cudaMemcpy(P16(r, v), h, (size_t)n * 2, cudaMemcpyHostToDevice);
		free(h);
	}
}

static void cuda_read(RtRank *r, int v, void *host)
{
	Dev *d = r->mem;
	cudaSetDevice(d->device);
	int64_t n = value_numel(r, v);
	if (dt(r, v) == MGL_BF16) {
		uint16_t *h = malloc((size_t)n * 2);
		cudaMemcpy(h, P(r, v), (size_t)n * 2, cudaMemcpyDeviceToHost);
		for (int64_t i = 0; i < n; i++)
			((float *)host)[i] = from_bf16(h[i]);
		free(h);
		return;
	}
	cudaMemcpy(host, P(r, v), (size_t)n * 4, cudaMemcpyDeviceToHost);
}

static void cuda_zero(RtRank *r, int v)
{
	Dev *d = r->mem;
	cudaSetDevice(d->device);
	cudaMemset(P(r, v), 0, (size_t)(value_numel(r, v) * (dt(r, v) == MGL_BF16 ? 2 : 4)));
}

static double cuda_peek(RtRank *r, int v, int64_t i)
{
	Dev *d = r->mem;
	cudaSetDevice(d->device);
	if (dt(r, v) == MGL_BF16) {
		uint16_t h = 0;
		cudaMemcpy(&h, (uint16_t *)P(r, v) + i, 2, cudaMemcpyDeviceToHost);
		return from_bf16(h);
	}
	float f = 0;
	cudaMemcpy(&f, (float *)P(r, v) + i, 4, cudaMemcpyDeviceToHost);
	return f;
}

const RtBackend rt_cuda_backend = {"cuda", cuda_open, cuda_close, cuda_run, cuda_write, cuda_read, cuda_zero, cuda_peek};

int rt_cuda_devices(void)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess)
		return 0;
	return n;
}
