/* scripts/gemm_probe.c — what cuBLASLt offers for one GEMM as mgl issues it, on the GPU
 * machine: each of up to 32 heuristic candidates timed (median of 15 runs after 3), with
 * its algorithm id, tile, stages and cluster shape, for each epilogue asked. It answers
 * "is this GEMM's epilogue or layout what costs, and would another algorithm do better",
 * which mgl bench's profile (one time a step kind) cannot. Not part of mgl: built by hand,
 *   cc -O2 -I/usr/local/cuda/include -o gemm_probe scripts/gemm_probe.c \
 *      -L/usr/local/cuda/lib64 -lcublasLt -lcudart
 * usage: gemm_probe NAME m n k ta lda tb ldb EPI [EPI...]
 *   the column-major problem as runtime/cuda/ops.c: lt_gemm takes it (C[m, n] = op(A) op(B),
 *   bf16 operands and output, fp32 accumulation); EPI is one of none, bias, gelu (GELU_AUX_BIAS,
 *   the pre-activation to a bf16 [m, n]), gelu16 (the same with the aux type set to bf16),
 *   dgelu (DGELU, its aux a bf16 [m, n]), dgelu16, add (beta 1: C read), f32 (none, C fp32:
 *   a weight gradient), f32add (the same, beta 1: a gradient accumulated)
 * Prints one line a candidate and a summary line per epilogue: the heuristic's first
 * choice, the best, their TFLOP/s. With PROBE_IDS set, then each cuBLASLt algorithm id
 * that can do the epilogue, limited to itself (CUBLASLT_SEARCH_LIMITED_BY_ALGO_ID).
 * With PROBE_HOT=MS, each candidate instead run back to back for MS milliseconds to bring
 * the card to its power cap, then for MS more, timed as a whole: its mean time and the SM
 * clock at the end (NVML, libnvidia-ml opened at run time), in two rounds over the
 * candidates, the second the one to read: what a GEMM takes inside a step that runs at the
 * cap, which the cool median does not show (docs/perf-notes.md, twenty-fifth sitting; NVML's
 * energy counter moves too coarsely to say the joules of 250 ms). PROBE_N=N: only the
 * heuristic's first N candidates (mgl times 8). */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                                         \
	do {                                                                                          \
		cudaError_t e_ = (x);                                                                 \
		if (e_ != cudaSuccess) {                                                              \
			fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
			exit(1);                                                                      \
		}                                                                                     \
	} while (0)
#define CKB(x)                                                                      \
	do {                                                                        \
		cublasStatus_t s_ = (x);                                            \
		if (s_ != CUBLAS_STATUS_SUCCESS) {                                  \
			fprintf(stderr, "%s:%d: %s: status %d\n", __FILE__, __LINE__, #x, (int)s_); \
			exit(1);                                                    \
		}                                                                   \
	} while (0)

enum { CANDIDATES = 32, WARM = 3, RUNS = 15 };

static void *random_bf16(size_t n)
{
	uint16_t *h = malloc(n * 2);
	uint64_t x = 0x9e3779b97f4a7c15ull * (n + 1);
	for (size_t i = 0; i < n; i++) {   /* uniform in [-1, 1), cut to bf16 */
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		float f = (float)((int64_t)(x >> 40) - (1 << 23)) * (1.0f / (1 << 23));
		uint32_t u;
		memcpy(&u, &f, 4);
		h[i] = (uint16_t)(u >> 16);
	}
	void *d;
	CK(cudaMalloc(&d, n * 2));
	CK(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
	free(h);
	return d;
}

/* NVML by dlopen (no nvml.h in the toolkit): the SM clock (MHz) of device 0, or 0 where
 * NVML is missing */
static struct {
	void *dev;
	int (*clock)(void *dev, int type, unsigned *mhz);
} nvml;

static void nvml_open(void)
{
	void *so = dlopen("libnvidia-ml.so.1", RTLD_NOW);
	int (*init)(void) = so ? (int (*)(void))dlsym(so, "nvmlInit_v2") : NULL;
	int (*handle)(unsigned, void **) = so ? (int (*)(unsigned, void **))dlsym(so, "nvmlDeviceGetHandleByIndex_v2") : NULL;
	nvml.clock = so ? (int (*)(void *, int, unsigned *))dlsym(so, "nvmlDeviceGetClockInfo") : NULL;
	if (!init || !handle || !nvml.clock || init() || handle(0, &nvml.dev))
		nvml.dev = NULL, fprintf(stderr, "gemm_probe: no NVML: the clock not read\n");
}

static unsigned sm_mhz(void)
{
	unsigned mhz = 0;
	if (nvml.dev)
		nvml.clock(nvml.dev, 1 /* NVML_CLOCK_SM */, &mhz);
	return mhz;
}

static int by_value(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? -1 : x > y;
}

static int cfg(const cublasLtMatmulAlgo_t *a, cublasLtMatmulAlgoConfigAttributes_t what)
{
	uint32_t v = 0;
	size_t got = 0;
	cublasLtMatmulAlgoConfigGetAttribute(a, what, &v, sizeof v, &got);
	return (int)v;
}

/* the problem's operands and what the timing needs */
typedef struct {
	const char *name;
	cublasLtHandle_t lt;
	cudaStream_t st;
	cudaEvent_t ev[2];
	void *A, *B, *C, *ws;
	size_t ws_size;
	double flops;
} Probe;

/* PROBE_HOT: each candidate run back to back for ms milliseconds, then for as many runs
 * again timed as a whole (one event pair); two rounds */
static void time_hot(Probe *g, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
		     cublasLtMatrixLayout_t lc, float beta, const cublasLtMatmulHeuristicResult_t *h, int found, const char *epi,
		     double ms)
{
	float alpha = 1;
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < found; i++) {
			float one = 0;   /* a run's time, cool, to size the run counts */
			CK(cudaEventRecord(g->ev[0], g->st));
			if (cublasLtMatmul(g->lt, op, &alpha, g->A, la, g->B, lb, &beta, g->C, lc, g->C, lc, &h[i].algo, g->ws,
					   g->ws_size, g->st) != CUBLAS_STATUS_SUCCESS) {
				printf("%s %s #%d: cannot run\n", g->name, epi, i);
				continue;
			}
			CK(cudaEventRecord(g->ev[1], g->st));
			CK(cudaEventSynchronize(g->ev[1]));
			CK(cudaEventElapsedTime(&one, g->ev[0], g->ev[1]));
			int n = (int)(ms / (one > 0.01f ? one : 0.01f)) + 1;
			float whole = 0;
			for (int phase = 0; phase < 2; phase++) {   /* 0 heats, 1 is timed */
				if (phase)
					CK(cudaEventRecord(g->ev[0], g->st));
				for (int r = 0; r < n; r++)
					cublasLtMatmul(g->lt, op, &alpha, g->A, la, g->B, lb, &beta, g->C, lc, g->C, lc, &h[i].algo, g->ws,
						       g->ws_size, g->st);
			}
			CK(cudaEventRecord(g->ev[1], g->st));
			CK(cudaEventSynchronize(g->ev[1]));
			unsigned mhz = sm_mhz();
			CK(cudaEventElapsedTime(&whole, g->ev[0], g->ev[1]));
			double us = whole * 1e3 / n;
			printf("%s %s hot round %d #%d: %.1f us, %.0f TFLOP/s, SM %u MHz, %d runs (algo %d tile %d cluster %d)\n", g->name,
			       epi, round, i, us, g->flops / (us * 1e-6) / 1e12, mhz, n,
			       cfg(&h[i].algo, CUBLASLT_ALGO_CONFIG_ID), cfg(&h[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID),
			       cfg(&h[i].algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID));
		}
}

/* Candidates h[0 .. found) timed, one line each, and a summary line (id: the algorithm id
 * they were limited to, or -1) */
static void time_all(Probe *g, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
		     cublasLtMatrixLayout_t lc, float beta, const cublasLtMatmulHeuristicResult_t *h, int found, const char *epi, int id)
{
	float alpha = 1, first = 0, best = 1e30f;
	int best_i = -1;
	const char *hot = getenv("PROBE_HOT");
	if (hot && atof(hot) > 0) {
		time_hot(g, op, la, lb, lc, beta, h, found, epi, atof(hot));
		return;
	}
	for (int i = 0; i < found; i++) {
		float ms[RUNS];
		int ok = 1;
		for (int t = 0; t < WARM + RUNS && ok; t++) {
			CK(cudaEventRecord(g->ev[0], g->st));
			ok = cublasLtMatmul(g->lt, op, &alpha, g->A, la, g->B, lb, &beta, g->C, lc, g->C, lc, &h[i].algo, g->ws, g->ws_size,
					    g->st) == CUBLAS_STATUS_SUCCESS;
			CK(cudaEventRecord(g->ev[1], g->st));
			CK(cudaEventSynchronize(g->ev[1]));
			if (t >= WARM)
				CK(cudaEventElapsedTime(&ms[t - WARM], g->ev[0], g->ev[1]));
		}
		if (!ok) {
			printf("%s %s #%d: cannot run\n", g->name, epi, i);
			continue;
		}
		qsort(ms, RUNS, sizeof *ms, by_value);
		float med = ms[RUNS / 2];
		printf("%s %s #%d: %.1f us, %.0f TFLOP/s (algo %d tile %d stages %d inner %d cluster %d, waves %.2f)\n", g->name, epi, i,
		       med * 1e3, g->flops / (med * 1e-3) / 1e12, cfg(&h[i].algo, CUBLASLT_ALGO_CONFIG_ID),
		       cfg(&h[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID), cfg(&h[i].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID),
		       cfg(&h[i].algo, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID), cfg(&h[i].algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID),
		       h[i].wavesCount);
		if (i == 0)
			first = med;
		if (med < best)
			best = med, best_i = i;
	}
	if (best_i >= 0)
		printf("== %s %s%s%.0d: %d candidates; first %.1f us (%.0f TFLOP/s), best #%d %.1f us (%.0f TFLOP/s)\n", g->name, epi,
		       id >= 0 ? " algo " : "", id >= 0 ? id : 0, found, first * 1e3, g->flops / (first * 1e-3) / 1e12, best_i, best * 1e3,
		       g->flops / (best * 1e-3) / 1e12);
}

int main(int argc, char **argv)
{
	if (argc < 10) {
		fprintf(stderr, "usage: gemm_probe NAME m n k ta lda tb ldb EPI [EPI...]\n");
		return 2;
	}
	static const char *const epis[] = {"none", "bias", "gelu", "gelu16", "dgelu", "dgelu16", "add", "f32", "f32add"};
	for (int e = 9; e < argc; e++) {   /* every epilogue known before the GPU is touched */
		size_t i = 0;
		while (i < sizeof epis / sizeof epis[0] && strcmp(argv[e], epis[i]))
			i++;
		if (i == sizeof epis / sizeof epis[0]) {
			fprintf(stderr, "gemm_probe: no epilogue %s\n", argv[e]);
			return 2;
		}
	}
	Probe g = {.name = argv[1], .ws_size = 64u << 20};
	if (getenv("PROBE_HOT"))
		nvml_open();
	int64_t m = atoll(argv[2]), n = atoll(argv[3]), k = atoll(argv[4]), lda = atoll(argv[6]), ldb = atoll(argv[8]);
	int ta = atoi(argv[5]), tb = atoi(argv[7]);
	cublasLtHandle_t lt;
	CKB(cublasLtCreate(&lt));
	g.lt = lt;
	CK(cudaStreamCreate(&g.st));
	g.A = random_bf16((size_t)(lda * (ta ? m : k)));
	g.B = random_bf16((size_t)(ldb * (tb ? k : n)));
	g.C = random_bf16((size_t)(2 * m * n));   /* room for fp32 */
	void *aux = random_bf16((size_t)(m * n)), *bias = random_bf16((size_t)m);
	CK(cudaMalloc(&g.ws, g.ws_size));
	CK(cudaEventCreate(&g.ev[0]));
	CK(cudaEventCreate(&g.ev[1]));
	g.flops = 2.0 * (double)m * (double)n * (double)k;
	for (int e = 9; e < argc; e++) {
		const char *epi = argv[e];
		cublasLtMatmulDesc_t op;
		cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
		CKB(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
		CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
		CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
		cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_DEFAULT;
		bool gelu = !strncmp(epi, "gelu", 4), dgelu = !strncmp(epi, "dgelu", 5);
		if (!strcmp(epi, "bias"))
			ep = CUBLASLT_EPILOGUE_BIAS;
		else if (gelu)
			ep = CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
		else if (dgelu)
			ep = CUBLASLT_EPILOGUE_DGELU;
		CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
		if (ep == CUBLASLT_EPILOGUE_BIAS || gelu)
			CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
		if (gelu || dgelu) {
			int64_t ld = m;
			CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
			CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld));
			if (strstr(epi, "16")) {
				int32_t t = CUDA_R_16BF;
				CKB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, &t, sizeof t));
			}
		}
		cublasLtMatrixLayout_t la, lb, lc;
		CKB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, ta ? k : m, ta ? m : k, lda));
		CKB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, tb ? n : k, tb ? k : n, ldb));
		cudaDataType_t ct = strncmp(epi, "f32", 3) ? CUDA_R_16BF : CUDA_R_32F;
		CKB(cublasLtMatrixLayoutCreate(&lc, ct, m, n, m));
		cublasLtMatmulPreference_t pref;
		CKB(cublasLtMatmulPreferenceCreate(&pref));
		CKB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g.ws_size, sizeof g.ws_size));
		cublasLtMatmulHeuristicResult_t h[CANDIDATES];
		int found = 0;
		int want = getenv("PROBE_N") ? atoi(getenv("PROBE_N")) : CANDIDATES;   /* the heuristic's first PROBE_N */
		want = want < 1 || want > CANDIDATES ? CANDIDATES : want;
		CKB(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, want, h, &found));
		float beta = strstr(epi, "add") ? 1.0f : 0.0f;
		time_all(&g, op, la, lb, lc, beta, h, found, epi, -1);
		/* then, with PROBE_IDS set, each algorithm id of these types by itself: what the
		 * heuristic's first 8 leave out (a kernel family that can do the epilogue) */
		int ids[128], nids = 0;
		if (getenv("PROBE_IDS"))
			CKB(cublasLtMatmulAlgoGetIds(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, ct, ct, 128, ids, &nids));
		for (int a = 0; a < nids; a++) {
			cublasLtMatmulAlgo_t algo;
			if (cublasLtMatmulAlgoInit(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, ct, ct, ids[a], &algo))
				continue;
			uint32_t mask = 0;
			size_t got = 0;
			cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_EPILOGUE_MASK, &mask, sizeof mask, &got);
			if ((mask & (uint32_t)ep) != (uint32_t)ep)
				continue;
			cublasLtMatmulPreference_t p1;
			uint32_t mode = CUBLASLT_SEARCH_LIMITED_BY_ALGO_ID;
			CKB(cublasLtMatmulPreferenceCreate(&p1));
			CKB(cublasLtMatmulPreferenceSetAttribute(p1, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g.ws_size, sizeof g.ws_size));
			CKB(cublasLtMatmulPreferenceSetAttribute(p1, CUBLASLT_MATMUL_PREF_SEARCH_MODE, &mode, sizeof mode));
			for (int i = 0; i < CANDIDATES; i++)
				h[i].algo = algo;
			int n1 = 0;
			if (cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, p1, 8, h, &n1) == CUBLAS_STATUS_SUCCESS && n1 > 0)
				time_all(&g, op, la, lb, lc, beta, h, n1, epi, ids[a]);
			else
				printf("%s %s: algo %d takes the epilogue, no configuration for this problem\n", g.name, epi, ids[a]);
			cublasLtMatmulPreferenceDestroy(p1);
		}
		cublasLtMatmulPreferenceDestroy(pref);
		cublasLtMatrixLayoutDestroy(la);
		cublasLtMatrixLayoutDestroy(lb);
		cublasLtMatrixLayoutDestroy(lc);
		cublasLtMatmulDescDestroy(op);
	}
	return 0;
}
