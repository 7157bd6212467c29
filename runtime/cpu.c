/* runtime/cpu.c — the cpu backend: every op of the plan in plain C, fp32.
 *
 * It is the reference: the GPU backend is tested against it, and it must give the same
 * losses at every tp. So every kernel is deterministic (a fixed order of summation), a
 * split value's elements are addressed by their index in the whole tensor where that
 * matters (dropout), and collectives sum the members' buffers in rank order.
 *
 * Memory: one arena for activations and inputs, one region for each of parameters,
 * gradients and optimizer state, as the plan's memory plan lays them out. Collectives go
 * through shared memory: each member posts its buffer, a barrier, each computes its
 * result from all of them, a barrier.
 *
 * Shapes in comments: [M, K] means M rows of K contiguous floats; a value's leading
 * dimensions are flattened into M.
 */
#include "backend.h"

#include <tgmath.h>

/* The kernels' arithmetic type. Built again with RT_REAL=double (cpu64.c) it gives a
 * double-precision backend for the tests' finite differences: every value then takes 8
 * bytes, so offsets and sizes of the plan's memory plan (4-byte elements) scale by 2. */
#ifndef RT_REAL
#define RT_REAL float
#define RT_BACKEND rt_cpu_backend
#define RT_BACKEND_NAME "cpu"
#define RT_CPU_FLOAT 1   /* the build that defines what is exported once (rt_cpu_gemm_rate) */
#endif
typedef RT_REAL real;
enum { SCALE = sizeof(real) / 4 };
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <time.h>

typedef struct {
	unsigned char *region[MGL_V_ROLE_COUNT];   /* input and act share the arena: the selected micro-batch's */
	unsigned char *arena[2];                   /* each micro-batch's (job->nmicro of them) */
	int64_t bytes;                             /* the regions' */
	real *scratch;                             /* collectives' private result */
	int64_t scratch_n;
} Mem;

/* ---------------------------------------------------------------- values */

static const MglValue *val(const RtRank *r, int v) { return &r->job->plan->values[v]; }

static void *ptr(const RtRank *r, int v)
{
	const Mem *m = r->mem;
	const MglValue *x = val(r, v);
	int region = x->role == MGL_V_INPUT ? MGL_V_ACT : x->role;
	return m->region[region] + x->offset * SCALE;
}

static real *F(const RtRank *r, int v) { return ptr(r, v); }
static int32_t *IDS(const RtRank *r, int v) { return ptr(r, v); }





/* ---------------------------------------------------------------- OpenBLAS */

/* The float build's GEMMs go to OpenBLAS's cblas_sgemm when the library can be loaded at
 * run time: dlopen, not a link, so the one binary starts where there is none (the GPU
 * machine, a bare CI image) and falls back to gemm() below. MGL_BLAS=0 asks for the
 * fallback. The double build (the tests' oracle) always runs gemm(). CBLAS's enums and
 * signature are declared here, so building needs no header: row-major 101, no transpose
 * 111, transpose 112 (the reference CBLAS's values, which every CBLAS keeps). */
#ifdef RT_CPU_FLOAT
#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

typedef void Sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
		   const float *B, int ldb, float beta, float *C, int ldc);
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
/* attention on OpenBLAS keeps a head's scores, [S, S] floats twice (the backward's): up to
 * 128 MB; longer sequences run the loops, which keep a row */
enum { BLAS_MAX_SEQ = 4096 };

static struct {
	Sgemm *sgemm;
	void (*set_threads)(int);   /* openblas_set_num_threads, where the library has it */
	int threads;                /* what each rank's GEMMs run on, as last set */
	char what[160];             /* "OpenBLAS 0.3.21 ... (libopenblas.so.0)", or why not */
} blas;
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void blas_load(void)
{
	static const char *const names[] = {"libopenblas.so.0", "libopenblas.so", "libcblas.so.3"};
	const char *off = getenv("MGL_BLAS");
	if (off && !strcmp(off, "0")) {
		snprintf(blas.what, sizeof blas.what, "MGL_BLAS=0");
		return;
	}
	snprintf(blas.what, sizeof blas.what, "no libopenblas.so.0, libopenblas.so or libcblas.so.3 could be loaded");
	for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
		void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
		Sgemm *f = h ? (Sgemm *)dlsym(h, "cblas_sgemm") : NULL;
		if (!f) {
			if (h)
				dlclose(h);
			continue;
		}
		/* dlsym's void * to a function pointer: POSIX promises it works */
		char *(*config)(void) = (char *(*)(void))dlsym(h, "openblas_get_config");
		blas.sgemm = f;
		blas.set_threads = (void (*)(int))dlsym(h, "openblas_set_num_threads");
		snprintf(blas.what, sizeof blas.what, "%s (%s)", config ? config() : "cblas_sgemm", names[i]);
		return;   /* kept open for the life of the process */
	}
}

/* Each rank's share of the machine for its GEMMs: MGL_THREADS (the whole job's threads,
 * default the cores online) over the ranks, at least 1. The setting is OpenBLAS's, for
 * the whole process, so it is made when a job opens (ranks open one after another, before
 * any runs). 0, or -1 with err set for an MGL_THREADS that is not a count. */
static int blas_threads(RtRank *r)
{
	pthread_once(&blas_once, blas_load);
	long total = sysconf(_SC_NPROCESSORS_ONLN);
	const char *env = getenv("MGL_THREADS");
	if (env && *env) {
		char *end;
		errno = 0;
		total = strtol(env, &end, 10);
		if (*end || errno || total < 1 || total > 4096) {
			snprintf(r->err, sizeof r->err, "MGL_THREADS=%.40s is not a number of threads from 1 to 4,096", env);
			return -1;
		}
	}
	int n = total / r->job->nranks > 1 ? (int)(total / r->job->nranks) : 1;
	if (blas.sgemm && blas.set_threads && n != blas.threads)
		blas.set_threads(n);
	blas.threads = n;
	return 0;
}

void rt_cpu_gemm(char *buf, size_t n)
{
	pthread_once(&blas_once, blas_load);
	if (blas.sgemm)
		snprintf(buf, n, "OpenBLAS cblas_sgemm on %d thread%s a rank: %s", blas.threads, blas.threads == 1 ? "" : "s",
			 blas.what);
	else
		snprintf(buf, n, "mgl's own GEMM loops, one thread a rank (no OpenBLAS: %s)", blas.what);
}
#endif

/* ---------------------------------------------------------------- GEMM */

/* C[M, N] (+)= A[M, K] . B[K, N], all row-major. The kernel keeps a 4 x 8 tile of C in
 * registers and adds a[i][k] * b[k][j..j+8] for k in order: every element's sum runs
 * over k from 0 to K-1 whatever the tile, so results do not depend on the blocking, and
 * the 8 columns are independent lanes that the compiler vectorizes (-O3) without
 * reassociating any sum. */
enum { TM = 4, TN = 8 };

static void tile_full(int64_t N, int64_t K, const real *A, const real *B, real *C, bool acc)
{
	real c[TM][TN] = {{0}};
	for (int64_t k = 0; k < K; k++) {
		const real *b = B + k * N;
		for (int u = 0; u < TM; u++) {
			real a = A[u * K + k];
			for (int w = 0; w < TN; w++)
				c[u][w] += a * b[w];
		}
	}
	for (int u = 0; u < TM; u++)
		for (int w = 0; w < TN; w++)
			C[u * N + w] = acc ? C[u * N + w] + c[u][w] : c[u][w];
}

static void tile_edge(int64_t N, int64_t K, int tm, int tn, const real *A, const real *B, real *C, bool acc)
{
	real c[TM][TN] = {{0}};
	for (int64_t k = 0; k < K; k++)
		for (int u = 0; u < tm; u++)
			for (int w = 0; w < tn; w++)
				c[u][w] += A[u * K + k] * B[k * N + w];
	for (int u = 0; u < tm; u++)
		for (int w = 0; w < tn; w++)
			C[u * N + w] = acc ? C[u * N + w] + c[u][w] : c[u][w];
}

static void gemm(int64_t M, int64_t N, int64_t K, const real *A, const real *B, real *C, bool accumulate)
{
	for (int64_t i = 0; i < M; i += TM)
		for (int64_t j = 0; j < N; j += TN) {
			int tm = M - i < TM ? (int)(M - i) : TM, tn = N - j < TN ? (int)(N - j) : TN;
			if (tm == TM && tn == TN)
				tile_full(N, K, A + i * K, B + j, C + i * N + j, accumulate);
			else
				tile_edge(N, K, tm, tn, A + i * K, B + j, C + i * N + j, accumulate);
		}
}

/* out[C, R] = in[R, C]^T */
static void transpose(const real *in, int64_t R, int64_t C, real *out)
{
	for (int64_t i0 = 0; i0 < R; i0 += 32)
		for (int64_t j0 = 0; j0 < C; j0 += 32)
			for (int64_t i = i0; i < i0 + 32 && i < R; i++)
				for (int64_t j = j0; j < j0 + 32 && j < C; j++)
					out[j * R + i] = in[i * C + j];
}

/* C[M, N] (+)= op(A) . op(B), row-major: A is [M, K], or [K, M] when ta; B is [K, N], or
 * [N, K] when tb. OpenBLAS where it was loaded, else gemm() on transposed copies. */
static void matmul(int64_t M, int64_t N, int64_t K, const real *A, bool ta, const real *B, bool tb, real *C, bool acc)
{
#ifdef RT_CPU_FLOAT
	if (blas.sgemm && M <= INT_MAX && N <= INT_MAX && K <= INT_MAX) {
		blas.sgemm(CBLAS_ROW_MAJOR, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, tb ? CBLAS_TRANS : CBLAS_NO_TRANS, (int)M,
			   (int)N, (int)K, 1, A, (int)(ta ? M : K), B, (int)(tb ? K : N), acc ? 1 : 0, C, (int)N);
		return;
	}
#endif
	real *at = ta ? mgl_xmalloc((size_t)(M * K) * sizeof *at, "a GEMM's transposed A") : NULL,
	     *bt = tb ? mgl_xmalloc((size_t)(K * N) * sizeof *bt, "a GEMM's transposed B") : NULL;
	if (ta)
		transpose(A, K, M, at);
	if (tb)
		transpose(B, N, K, bt);
	gemm(M, N, K, ta ? at : A, tb ? bt : B, C, acc);
	free(at);
	free(bt);
}

static double seconds(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* rt_cpu_gemm_rate at this build's precision: the FLOP/s of matmul() on a [m, k] x [k, n]
 * product, the best of two runs after one that warms the caches. The loops are timed on
 * [16, k] x [k, n] (n cut so that B stays under 16 MB: a cache-sized test is too kind);
 * OpenBLAS on its own ground, a large square, 2,048^3. *m, *n, *k: what it timed. */
static double gemm_rate(int64_t *m, int64_t *n, int64_t *k)
{
	enum { MAX_B = 4 << 20, SIDE = 2048 };
	*m = 16;
#ifdef RT_CPU_FLOAT
	if (blas.sgemm)
		*m = *n = *k = SIDE;
#endif
	if (*n < 1 || *k < 1)
		return *n = 0;
	if (*n * *k > MAX_B)
		*n = MAX_B / *k > TN ? MAX_B / *k : TN;
	int64_t M = *m, N = *n, K = *k;
	real *a = calloc((size_t)(M * K), sizeof *a), *b = calloc((size_t)(K * N), sizeof *b),
	     *c = malloc((size_t)(M * N) * sizeof *c);
	double best = 0;
	for (int rep = 0; rep < 3 && a && b && c; rep++) {
		double t0 = seconds();
		matmul(M, N, K, a, false, b, false, c, false);
		double s = seconds() - t0;
		if (rep > 0 && s > 0 && 2.0 * (double)M * (double)N * (double)K / s > best)
			best = 2.0 * (double)M * (double)N * (double)K / s;
	}
	free(a);
	free(b);
	free(c);
	return best;
}

#ifdef RT_CPU_FLOAT
double rt_cpu_gemm_rate(int64_t n, int64_t k)
{
	int64_t m;
	return gemm_rate(&m, &n, &k);
}
#endif

/* ---------------------------------------------------------------- collectives */

/* Every member's buffer of `bytes` in c->slots. Between processes the buffers are gathered
 * whole (MPI_Allgather) and summed here, in member order as between threads: the same
 * sums, bit for bit, whichever way the ranks run. */
static void post(RtComm *c, int member, const void *buf, size_t bytes)
{
	c->slots[member] = buf;
	if (c->net) {
		size_t all = bytes * (size_t)c->size;
		if (c->gathered_cap < all) {
			free(c->gathered);
			c->gathered = mgl_xmalloc(all, "a collective's gathered buffers");
			c->gathered_cap = all;
		}
		rt_net_group_allgather(c->net, c->size, buf, bytes, c->gathered);
		for (int m = 0; m < c->size; m++)
			c->slots[m] = c->gathered + (size_t)m * bytes;
	}
	pthread_barrier_wait(&c->barrier);
}

static real *scratch(RtRank *r, int64_t n)
{
	Mem *m = r->mem;
	if (m->scratch_n < n) {
		free(m->scratch);
		m->scratch = mgl_xmalloc((size_t)n * sizeof *m->scratch, "an all-reduce's sums");
		m->scratch_n = n;
	}
	return m->scratch;
}

/* in, out: n floats on each member (in == out allowed); sum or max in member order. */
static void all_reduce(RtRank *r, RtComm *c, int member, const real *in, real *out, int64_t n, bool max)
{
	post(c, member, in, (size_t)n * sizeof *in);
	real *t = scratch(r, n);
	memcpy(t, c->slots[0], (size_t)n * sizeof *t);
	for (int m = 1; m < c->size; m++) {
		const real *s = c->slots[m];
		if (max)
			for (int64_t i = 0; i < n; i++)
				t[i] = s[i] > t[i] ? s[i] : t[i];
		else
			for (int64_t i = 0; i < n; i++)
				t[i] += s[i];
	}
	pthread_barrier_wait(&c->barrier);   /* everyone has read every input */
	memcpy(out, t, (size_t)n * sizeof *t);
}

/* ---------------------------------------------------------------- the ops */

typedef struct {
	RtRank *r;
	const MglStep *s;
	const RtRun *run;
} Ctx;

#define IN(k) (c->s->in[k])
#define OUT(k) (c->s->out[k])
/* a step writing a gradient buffer adds into it, unless it writes it first (rt_adds) */
#define ACC(k) rt_adds(c->r->job, (int)(c->s - c->r->job->plan->steps), k, c->run->first_micro)

/* The rank's threads for the ops besides the GEMMs: fn(c, from, to) over [0, n) in as many
 * contiguous parts as the rank's GEMMs have threads (1 in the double build, and where
 * OpenBLAS is absent: a rank is then a thread), each part at least `grain` long, so that
 * a small op starts no thread. Every element (or row) is computed as it would be in one
 * part, so the result is the same at any thread count. */
typedef void Part(Ctx *c, int64_t from, int64_t to);
typedef struct {
	Part *fn;
	Ctx *c;
	int64_t from, to;
} Piece;

static void *piece_main(void *arg)
{
	Piece *q = arg;
	q->fn(q->c, q->from, q->to);
	return NULL;
}

static void spread(Ctx *c, Part *fn, int64_t n, int64_t grain)
{
	int64_t k = 1;
#ifdef RT_CPU_FLOAT
	k = blas.sgemm ? blas.threads : 1;
#endif
	k = k < n / (grain > 0 ? grain : 1) ? k : n / (grain > 0 ? grain : 1);
	k = k < RT_PARTS_MAX ? k : RT_PARTS_MAX;
	if (k <= 1) {
		fn(c, 0, n);
		return;
	}
	Piece part[RT_PARTS_MAX];
	for (int64_t i = 0; i < k; i++)
		part[i] = (Piece){fn, c, n * i / k, n * (i + 1) / k};
	rt_run_parts(piece_main, part, sizeof *part, (int)k);
}

/* the grain of an op over elements, and over rows of n elements: some 64K elements a part */
enum { GRAIN = 1 << 16 };
static int64_t row_grain(int64_t n) { return n > 0 && GRAIN / n > 1 ? GRAIN / n : 1; }

/* out[..., D] = table[ids - start, :] for ids in this rank's rows, else 0 (then P) */
static void op_embedding(Ctx *c)
{
	const MglValue *tab = val(c->r, IN(0)), *ids = val(c->r, IN(1));
	int64_t D = tab->shape[1], V = tab->shape[0], start = rt_shard_start(c->r, tab), n = mgl_numel(ids);
	const real *T = F(c->r, IN(0));
	const int32_t *id = IDS(c->r, IN(1));
	real *o = F(c->r, OUT(0));
	for (int64_t i = 0; i < n; i++) {
		int64_t row = (int64_t)id[i] - start;
		if (row >= 0 && row < V)
			memcpy(o + i * D, T + row * D, (size_t)D * sizeof *o);
		else
			memset(o + i * D, 0, (size_t)D * sizeof *o);
	}
}

/* dtable[ids - start, :] += dy */
static void op_embedding_bwd(Ctx *c)
{
	const MglValue *dt = val(c->r, OUT(0)), *ids = val(c->r, IN(1));
	int64_t D = dt->shape[1], V = dt->shape[0], start = rt_shard_start(c->r, dt), n = mgl_numel(ids);
	const real *dy = F(c->r, IN(0));
	const int32_t *id = IDS(c->r, IN(1));
	real *g = F(c->r, OUT(0));
	if (!ACC(0))
		memset(g, 0, (size_t)mgl_numel(dt) * sizeof *g);
	/* a sequence-split dy ([seq/tp, D]) matches ids sliced the same way */
	for (int64_t i = 0; i < n; i++) {
		int64_t row = (int64_t)id[i] - start;
		if (row >= 0 && row < V)
			for (int64_t k = 0; k < D; k++)
				g[row * D + k] += dy[i * D + k];
	}
}

static void op_positions(Ctx *c)
{
	const MglValue *o = val(c->r, OUT(0));
	int32_t *p = IDS(c->r, OUT(0));
	for (int64_t i = 0; i < o->shape[0]; i++)
		p[i] = (int32_t)i;
}

/* y[M, N] = x[M, K] . W[N, K]^T */
static void op_matmul(Ctx *c)
{
	const MglValue *x = val(c->r, IN(0)), *w = val(c->r, IN(1));
	matmul(rt_rows(x), w->shape[0], w->shape[1], F(c->r, IN(0)), false, F(c->r, IN(1)), true, F(c->r, OUT(0)), false);
}

/* dx[M, K] = dy[M, N] . W[N, K] */
static void op_matmul_dx(Ctx *c)
{
	const MglValue *dy = val(c->r, IN(0)), *w = val(c->r, IN(1));
	matmul(rt_rows(dy), w->shape[1], w->shape[0], F(c->r, IN(0)), false, F(c->r, IN(1)), false, F(c->r, OUT(0)), false);
}

/* dW[N, K] += dy[M, N]^T . x[M, K] */
static void op_matmul_dw(Ctx *c)
{
	const MglValue *dy = val(c->r, IN(0)), *x = val(c->r, IN(1));
	matmul(rt_last(dy), rt_last(x), rt_rows(dy), F(c->r, IN(0)), true, F(c->r, IN(1)), false, F(c->r, OUT(0)), ACC(0));
}

/* out[M, N] = y + b[N] */
static void op_bias_add(Ctx *c)
{
	const MglValue *y = val(c->r, IN(0));
	int64_t M = rt_rows(y), N = rt_last(y);
	const real *a = F(c->r, IN(0)), *b = F(c->r, IN(1));
	real *o = F(c->r, OUT(0));
	for (int64_t i = 0; i < M; i++)
		for (int64_t j = 0; j < N; j++)
			o[i * N + j] = a[i * N + j] + b[j];
}

/* db[N] (+)= sum over rows of dy[M, N] */
static void op_bias_grad(Ctx *c)
{
	const MglValue *dy = val(c->r, IN(0));
	int64_t M = rt_rows(dy), N = rt_last(dy);
	const real *g = F(c->r, IN(0));
	real *o = F(c->r, OUT(0)), *s = mgl_xcalloc((size_t)N, sizeof *s, "bias_grad's sums");
	/* row after row, so that the reads are contiguous: each column's sum still runs over
	 * i in order */
	for (int64_t i = 0; i < M; i++)
		for (int64_t j = 0; j < N; j++)
			s[j] += g[i * N + j];
	for (int64_t j = 0; j < N; j++)
		o[j] = ACC(0) ? o[j] + s[j] : s[j];
	free(s);
}

/* mean and 1/std of row x[D] */
static void moments(const real *x, int64_t D, double eps, real *mean, real *rstd)
{
	double m = 0, v = 0;
	for (int64_t k = 0; k < D; k++)
		m += x[k];
	m /= (double)D;
	for (int64_t k = 0; k < D; k++)
		v += (x[k] - m) * (x[k] - m);
	v /= (double)D;
	*mean = (real)m;
	*rstd = (real)(1.0 / sqrt(v + eps));
}

/* y[M, D] = (x - mean) / std * w + b; rows from..to */
static void layernorm_rows(Ctx *c, int64_t from, int64_t to)
{
	int64_t D = rt_last(val(c->r, IN(0)));
	const real *X = F(c->r, IN(0)), *w = F(c->r, IN(1)), *b = F(c->r, IN(2));
	real *Y = F(c->r, OUT(0));
	for (int64_t i = from; i < to; i++) {
		real mean, rstd;
		moments(X + i * D, D, c->s->attr.eps, &mean, &rstd);
		for (int64_t k = 0; k < D; k++)
			Y[i * D + k] = (X[i * D + k] - mean) * rstd * w[k] + b[k];
	}
}

static void op_layernorm(Ctx *c)
{
	const MglValue *x = val(c->r, IN(0));
	spread(c, layernorm_rows, rt_rows(x), row_grain(rt_last(x)));
}

/* (dy, x, w) -> dx, dw (+=), db (+=) */
static void op_layernorm_bwd(Ctx *c)
{
	const MglValue *x = val(c->r, IN(1));
	int64_t M = rt_rows(x), D = rt_last(x);
	const real *dY = F(c->r, IN(0)), *X = F(c->r, IN(1)), *w = F(c->r, IN(2));
	real *dX = F(c->r, OUT(0)), *dw = F(c->r, OUT(1)), *db = F(c->r, OUT(2));
	if (!ACC(1))
		memset(dw, 0, (size_t)D * sizeof *dw);
	if (!ACC(2))
		memset(db, 0, (size_t)D * sizeof *db);
	for (int64_t i = 0; i < M; i++) {
		const real *xi = X + i * D, *gi = dY + i * D;
		real mean, rstd;
		moments(xi, D, c->s->attr.eps, &mean, &rstd);
		double sg = 0, sgx = 0;   /* sums of dy*w and dy*w*xhat */
		for (int64_t k = 0; k < D; k++) {
			double xh = (xi[k] - mean) * rstd, g = gi[k] * w[k];
			sg += g;
			sgx += g * xh;
			dw[k] += gi[k] * (real)xh;
			db[k] += gi[k];
		}
		sg /= (double)D;
		sgx /= (double)D;
		for (int64_t k = 0; k < D; k++) {
			double xh = (xi[k] - mean) * rstd;
			dX[i * D + k] = (real)(rstd * (gi[k] * w[k] - sg - xh * sgx));
		}
	}
}

/* 1 / root mean square of row x[D] */
static real rms_scale(const real *x, int64_t D, double eps)
{
	double ss = 0;
	for (int64_t k = 0; k < D; k++)
		ss += (double)x[k] * x[k];
	return (real)(1.0 / sqrt(ss / (double)D + eps));
}

/* y[M, D] = x / rms(x) * w, as LLaMA (and Hugging Face's LlamaRMSNorm) */
static void op_rmsnorm(Ctx *c)
{
	const MglValue *x = val(c->r, IN(0));
	int64_t M = rt_rows(x), D = rt_last(x);
	const real *X = F(c->r, IN(0)), *w = F(c->r, IN(1));
	real *Y = F(c->r, OUT(0));
	for (int64_t i = 0; i < M; i++) {
		real r = rms_scale(X + i * D, D, c->s->attr.eps);
		for (int64_t k = 0; k < D; k++)
			Y[i * D + k] = X[i * D + k] * r * w[k];
	}
}

/* (dy, x, w) -> dx, dw (+=): dx = r (dy w) - r^3 x mean(dy w x), dw += dy x r */
static void op_rmsnorm_bwd(Ctx *c)
{
	const MglValue *x = val(c->r, IN(1));
	int64_t M = rt_rows(x), D = rt_last(x);
	const real *dY = F(c->r, IN(0)), *X = F(c->r, IN(1)), *w = F(c->r, IN(2));
	real *dX = F(c->r, OUT(0)), *dw = F(c->r, OUT(1));
	if (!ACC(1))
		memset(dw, 0, (size_t)D * sizeof *dw);
	for (int64_t i = 0; i < M; i++) {
		const real *xi = X + i * D, *gi = dY + i * D;
		real r = rms_scale(xi, D, c->s->attr.eps);
		double sgx = 0;   /* the sum of dy*w*x */
		for (int64_t k = 0; k < D; k++) {
			sgx += (double)gi[k] * w[k] * xi[k];
			dw[k] += gi[k] * xi[k] * r;
		}
		real m = (real)(sgx / (double)D) * r * r * r;
		for (int64_t k = 0; k < D; k++)
			dX[i * D + k] = r * gi[k] * w[k] - m * xi[k];
	}
}

/* GPT-2's gelu: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
static const real GELU_C = 0.7978845608028654f;

/* tanh u as 1 - 2 / (e^2u + 1): glibc's expf is some 5 times faster than its tanhf here
 * (4 against 21 ns), and the two differ by 2 ulp at most (1.8e-7 over [-4, 4]); e^2u
 * overflowing gives 1, underflowing -1, as tanh does */
static real gelu_tanh(real u) { return 1.0f - 2.0f / (exp(2.0f * u) + 1.0f); }

static void gelu_part(Ctx *c, int64_t from, int64_t to)
{
	const real *x = F(c->r, IN(0));
	real *y = F(c->r, OUT(0));
	for (int64_t i = from; i < to; i++)
		y[i] = 0.5f * x[i] * (1.0f + gelu_tanh(GELU_C * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
}

static void op_gelu(Ctx *c) { spread(c, gelu_part, mgl_numel(val(c->r, IN(0))), GRAIN); }

static void gelu_bwd_part(Ctx *c, int64_t from, int64_t to)
{
	const real *g = F(c->r, IN(0)), *x = F(c->r, IN(1));
	real *o = F(c->r, OUT(0));
	for (int64_t i = from; i < to; i++) {
		real u = GELU_C * (x[i] + 0.044715f * x[i] * x[i] * x[i]), t = gelu_tanh(u);
		real du = GELU_C * (1.0f + 3.0f * 0.044715f * x[i] * x[i]);
		o[i] = g[i] * (0.5f * (1.0f + t) + 0.5f * x[i] * (1.0f - t * t) * du);
	}
}

static void op_gelu_bwd(Ctx *c) { spread(c, gelu_bwd_part, mgl_numel(val(c->r, IN(0))), GRAIN); }

static void tanh_part(Ctx *c, int64_t from, int64_t to)
{
	const real *x = F(c->r, IN(0));
	real *y = F(c->r, OUT(0));
	for (int64_t i = from; i < to; i++)
		y[i] = tanh(x[i]);
}

static void op_tanh(Ctx *c) { spread(c, tanh_part, mgl_numel(val(c->r, IN(0))), GRAIN); }

static void tanh_bwd_part(Ctx *c, int64_t from, int64_t to)
{
	const real *g = F(c->r, IN(0)), *y = F(c->r, IN(1));
	real *o = F(c->r, OUT(0));
	for (int64_t i = from; i < to; i++)
		o[i] = g[i] * (1.0f - y[i] * y[i]);
}

static void op_tanh_bwd(Ctx *c) { spread(c, tanh_bwd_part, mgl_numel(val(c->r, IN(0))), GRAIN); }

/* silu(x) = x sigmoid(x) (the gate of LLaMA's SwiGLU); silu' = s (1 + x (1 - s)) */
static void silu_part(Ctx *c, int64_t from, int64_t to)
{
	const real *x = F(c->r, IN(0));
	real *y = F(c->r, OUT(0));
	for (int64_t i = from; i < to; i++)
		y[i] = x[i] / (1.0f + exp(-x[i]));
}

static void op_silu(Ctx *c) { spread(c, silu_part, mgl_numel(val(c->r, IN(0))), GRAIN); }

static void silu_bwd_part(Ctx *c, int64_t from, int64_t to)
{
	const real *g = F(c->r, IN(0)), *x = F(c->r, IN(1));
	real *o = F(c->r, OUT(0));
	for (int64_t i = from; i < to; i++) {
		real s = 1.0f / (1.0f + exp(-x[i]));
		o[i] = g[i] * s * (1.0f + x[i] * (1.0f - s));
	}
}

static void op_silu_bwd(Ctx *c) { spread(c, silu_bwd_part, mgl_numel(val(c->r, IN(0))), GRAIN); }

/* out = a * b, of one shape */
static void mul_part(Ctx *c, int64_t from, int64_t to)
{
	const real *a = F(c->r, IN(0)), *b = F(c->r, IN(1));
	real *o = F(c->r, OUT(0));
	for (int64_t i = from; i < to; i++)
		o[i] = a[i] * b[i];
}

static void op_mul(Ctx *c) { spread(c, mul_part, mgl_numel(val(c->r, OUT(0))), GRAIN); }

/* y = x * keep / (1 - p), keep decided by the element's index in the whole tensor, so a
 * split value drops exactly what the unsplit one would. Backward: the same with dy. */
static void op_dropout(Ctx *c)
{
	const MglValue *x = val(c->r, IN(0));
	const real *X = F(c->r, IN(0));
	real *Y = F(c->r, OUT(0));
	double p = c->run->train ? c->s->attr.p : 0;
	if (p == 0) {
		memmove(Y, X, (size_t)mgl_numel(x) * sizeof *Y);
		return;
	}
	real scale = (real)(1.0 / (1.0 - p));
	uint64_t key = rt_dropout_key(c->run->key, c->r->dp_rank);
	int64_t outer = 1, n = mgl_numel(x), inner = 1, whole = n, start = 0;
	if (x->layout.kind == MGL_L_S && c->r->job->tp > 1) {
		rt_around(x, x->layout.dim, &outer, &n, &inner);
		whole = n * c->r->job->tp;
		start = rt_shard_start(c->r, x);
	}
	for (int64_t o = 0; o < outer; o++)
		for (int64_t k = 0; k < n; k++)
			for (int64_t i = 0; i < inner; i++) {
				int64_t local = (o * n + k) * inner + i, global = (o * whole + start + k) * inner + i;
				Y[local] = rt_dropout_keep(key, (uint32_t)c->s->attr.seed, global, p) ? X[local] * scale : 0.0f;
			}
}

/* out = a + b, broadcast from the right ([b, s, d] + [s, d]) */
static void op_add(Ctx *c)
{
	const MglValue *a = val(c->r, IN(0)), *b = val(c->r, IN(1)), *o = val(c->r, OUT(0));
	const real *A = F(c->r, IN(0)), *B = F(c->r, IN(1));
	real *O = F(c->r, OUT(0));
	int64_t n = mgl_numel(o), na = mgl_numel(a), nb = mgl_numel(b);
	if (val(c->r, IN(0))->dtype == MGL_I32) {
		const int32_t *ia = IDS(c->r, IN(0)), *ib = IDS(c->r, IN(1));
		int32_t *io = IDS(c->r, OUT(0));
		for (int64_t i = 0; i < n; i++)
			io[i] = ia[i % na] + ib[i % nb];
		return;
	}
	/* with right-aligned broadcasting of a trailing block, index i maps to i % size when
	 * the smaller operand's shape is a suffix of the output's; a size-1 dimension in the
	 * middle needs the general walk */
	bool suffix = true;
	for (int k = 0; k < a->rank; k++)
		suffix &= a->shape[a->rank - 1 - k] == o->shape[o->rank - 1 - k];
	for (int k = 0; k < b->rank; k++)
		suffix &= b->shape[b->rank - 1 - k] == o->shape[o->rank - 1 - k];
	if (suffix) {
		for (int64_t i = 0; i < n; i++)
			O[i] = A[i % na] + B[i % nb];
		return;
	}
	for (int64_t i = 0; i < n; i++) {
		int64_t rem = i, ia = 0, ib = 0, sa = 1, sb = 1;
		for (int k = o->rank - 1; k >= 0; k--) {
			int64_t d = rem % o->shape[k];
			rem /= o->shape[k];
			int ka = k - (o->rank - a->rank), kb = k - (o->rank - b->rank);
			if (ka >= 0) {
				ia += (a->shape[ka] == 1 ? 0 : d) * sa;
				sa *= a->shape[ka];
			}
			if (kb >= 0) {
				ib += (b->shape[kb] == 1 ? 0 : d) * sb;
				sb *= b->shape[kb];
			}
		}
		O[i] = A[ia] + B[ib];
	}
}

static void accumulate_part(Ctx *c, int64_t from, int64_t to)
{
	const real *a = F(c->r, IN(0)), *b = F(c->r, IN(1));
	real *o = F(c->r, OUT(0));
	for (int64_t i = from; i < to; i++)
		o[i] = a[i] + b[i];
}

static void op_accumulate(Ctx *c) { spread(c, accumulate_part, mgl_numel(val(c->r, OUT(0))), GRAIN); }

/* out (+)= dy summed over the dimensions it was broadcast along */
static void op_sum_to(Ctx *c)
{
	const MglValue *g = val(c->r, IN(0)), *o = val(c->r, OUT(0));
	const real *G = F(c->r, IN(0));
	real *O = F(c->r, OUT(0));
	int64_t n = mgl_numel(g), no = mgl_numel(o);
	real *t = mgl_xcalloc((size_t)no, sizeof *t, "sum_to's sums");
	for (int64_t i = 0; i < n; i++) {
		int64_t rem = i, io = 0, so = 1;
		for (int k = g->rank - 1; k >= 0; k--) {
			int64_t d = rem % g->shape[k];
			rem /= g->shape[k];
			int ko = k - (g->rank - o->rank);
			if (ko >= 0) {
				io += (o->shape[ko] == 1 ? 0 : d) * so;
				so *= o->shape[ko];
			}
		}
		t[io] += G[i];
	}
	for (int64_t i = 0; i < no; i++)
		O[i] = ACC(0) ? O[i] + t[i] : t[i];
	free(t);
}

#ifdef RT_CPU_FLOAT
/* Attention on OpenBLAS: for each batch and head, the scores as one GEMM, the softmax on
 * them in place, and the output as another (the loops below do it a query at a time). The
 * whole s x s square is computed and the causal half above the diagonal zeroed: twice the
 * products of the loops, at the GEMM's rate. A head's q, k, v, o are [S, dh] blocks of
 * rows D apart; scores [S, S] in scratch. */
static void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
		  const float *B, int64_t ldb, float *C, int64_t ldc)
{
	blas.sgemm(CBLAS_ROW_MAJOR, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, tb ? CBLAS_TRANS : CBLAS_NO_TRANS, (int)M, (int)N,
		   (int)K, alpha, A, (int)lda, B, (int)ldb, 0, C, (int)ldc);
}

/* key j of row i takes part (the causal mask, the padding mask) */
static bool attends(const Ctx *c, const int32_t *mask, int64_t b, int64_t S, int64_t i, int64_t j)
{
	return (!c->s->attr.causal || j <= i) && (!mask || mask[b * S + j]);
}

static void attention_blas(Ctx *c, int64_t B, int64_t S, int64_t D, int64_t H)
{
	int64_t dh = D / H;
	const real *Q = F(c->r, IN(0)), *K = F(c->r, IN(1)), *V = F(c->r, IN(2));
	const int32_t *mask = c->s->nin > 3 ? IDS(c->r, IN(3)) : NULL;
	real *O = F(c->r, OUT(0)), *L = F(c->r, OUT(1)), scale = 1.0f / sqrt((real)dh);
	real *P = mgl_xmalloc((size_t)(S * S) * sizeof *P, "attention's probabilities");
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++) {
			int64_t at = b * S * D + h * dh;
			sgemm(false, true, S, S, dh, scale, Q + at, D, K + at, D, P, S);
			for (int64_t i = 0; i < S; i++) {
				real *p = P + i * S, mx = -INFINITY;
				for (int64_t j = 0; j < S; j++)
					if (attends(c, mask, b, S, i, j))
						mx = p[j] > mx ? p[j] : mx;
				double sum = 0;
				for (int64_t j = 0; j < S; j++)
					sum += p[j] = mx > -INFINITY && attends(c, mask, b, S, i, j) ? exp(p[j] - mx) : 0;
				for (int64_t j = 0; j < S && sum > 0; j++)
					p[j] = (real)(p[j] / sum);
				/* every key masked: no attention, output 0 */
				L[(b * H + h) * S + i] = sum > 0 ? mx + (real)log(sum) : -INFINITY;
			}
			sgemm(false, false, S, dh, S, 1, P, S, V + at, D, O + at, D);
		}
	free(P);
}

/* The probabilities P again from lse; dP = dy v^T; dS = P (dP - dy . o) scale; then
 * dv = P^T dy, dq = dS k, dk = dS^T q. */
static void attention_bwd_blas(Ctx *c, int64_t B, int64_t S, int64_t D, int64_t H, real *dQ, real *dK, real *dV)
{
	int64_t dh = D / H;
	const real *dO = F(c->r, IN(0)), *Q = F(c->r, IN(1)), *K = F(c->r, IN(2)), *V = F(c->r, IN(3)),
		   *O = F(c->r, IN(4)), *L = F(c->r, IN(5));
	const int32_t *mask = c->s->nin > 6 ? IDS(c->r, IN(6)) : NULL;
	real scale = 1.0f / sqrt((real)dh);
	real *P = mgl_xmalloc((size_t)(2 * S * S) * sizeof *P, "attention's probabilities and gradients"), *dP = P + S * S;
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++) {
			int64_t at = b * S * D + h * dh;
			sgemm(false, true, S, S, dh, scale, Q + at, D, K + at, D, P, S);
			sgemm(false, true, S, S, dh, 1, dO + at, D, V + at, D, dP, S);
			for (int64_t i = 0; i < S; i++) {
				real lse = L[(b * H + h) * S + i], Di = 0, *p = P + i * S, *dp = dP + i * S;
				const real *gi = dO + at + i * D, *oi = O + at + i * D;
				for (int64_t k = 0; k < dh; k++)
					Di += gi[k] * oi[k];
				for (int64_t j = 0; j < S; j++) {
					p[j] = lse > -INFINITY && attends(c, mask, b, S, i, j) ? exp(p[j] - lse) : 0;
					dp[j] = p[j] * (dp[j] - Di) * scale;
				}
			}
			sgemm(true, false, S, dh, S, 1, P, S, dO + at, D, dV + at, D);
			sgemm(false, false, S, dh, S, 1, dP, S, K + at, D, dQ + at, D);
			sgemm(true, false, S, dh, S, 1, dP, S, Q + at, D, dK + at, D);
		}
	free(P);
}
#endif

/* Attention over q, k, v [B, S, H*dh] (this rank's heads), scores scaled by 1/sqrt(dh),
 * keys after the query masked when causal, keys whose mask is 0 masked; o [B, S, H*dh]
 * and the log-sum-exp of each row of scores, lse [B, H, S], kept for the backward. */
static void op_attention(Ctx *c)
{
	const MglValue *q = val(c->r, IN(0));
	int64_t B = q->shape[0], S = q->shape[1], D = q->shape[2], H = c->s->attr.heads, dh = D / H;
#ifdef RT_CPU_FLOAT
	if (blas.sgemm && S <= BLAS_MAX_SEQ && D <= INT_MAX) {
		attention_blas(c, B, S, D, H);
		return;
	}
#endif
	const real *Q = F(c->r, IN(0)), *K = F(c->r, IN(1)), *V = F(c->r, IN(2));
	const int32_t *mask = c->s->nin > 3 ? IDS(c->r, IN(3)) : NULL;
	real *O = F(c->r, OUT(0)), *L = F(c->r, OUT(1));
	real scale = 1.0f / sqrt((real)dh), *p = mgl_xmalloc((size_t)S * sizeof *p, "attention's row of scores");
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t i = 0; i < S; i++) {
				const real *qi = Q + (b * S + i) * D + h * dh;
				int64_t n = c->s->attr.causal ? i + 1 : S;
				real mx = -INFINITY;
				for (int64_t j = 0; j < n; j++) {
					real s = -INFINITY;
					if (!mask || mask[b * S + j]) {
						const real *kj = K + (b * S + j) * D + h * dh;
						s = 0;
						for (int64_t k = 0; k < dh; k++)
							s += qi[k] * kj[k];
						s *= scale;
					}
					p[j] = s;
					mx = s > mx ? s : mx;
				}
				real *oi = O + (b * S + i) * D + h * dh;
				memset(oi, 0, (size_t)dh * sizeof *oi);
				if (mx == -INFINITY) {   /* every key masked: no attention, output 0 */
					L[(b * H + h) * S + i] = -INFINITY;
					continue;
				}
				double sum = 0;
				for (int64_t j = 0; j < n; j++)
					sum += p[j] = exp(p[j] - mx);
				for (int64_t j = 0; j < n; j++) {
					real w = (real)(p[j] / sum);
					const real *vj = V + (b * S + j) * D + h * dh;
					for (int64_t k = 0; k < dh; k++)
						oi[k] += w * vj[k];
				}
				L[(b * H + h) * S + i] = mx + (real)log(sum);
			}
	free(p);
}

/* (dy, q, k, v, o, lse[, mask]) -> dQ, dK, dV [B, S, D]: the probabilities recomputed from lse */
static void attention_bwd(Ctx *c, real *dQ, real *dK, real *dV)
{
	const MglValue *q = val(c->r, IN(1));
	int64_t B = q->shape[0], S = q->shape[1], D = q->shape[2], H = c->s->attr.heads, dh = D / H;
#ifdef RT_CPU_FLOAT
	if (blas.sgemm && S <= BLAS_MAX_SEQ && D <= INT_MAX) {
		attention_bwd_blas(c, B, S, D, H, dQ, dK, dV);
		return;
	}
#endif
	const real *dO = F(c->r, IN(0)), *Q = F(c->r, IN(1)), *K = F(c->r, IN(2)), *V = F(c->r, IN(3)),
		    *O = F(c->r, IN(4)), *L = F(c->r, IN(5));
	const int32_t *mask = c->s->nin > 6 ? IDS(c->r, IN(6)) : NULL;
	int64_t n = mgl_numel(q);
	memset(dQ, 0, (size_t)n * sizeof *dQ);
	memset(dK, 0, (size_t)n * sizeof *dK);
	memset(dV, 0, (size_t)n * sizeof *dV);
	real scale = 1.0f / sqrt((real)dh);
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t i = 0; i < S; i++) {
				real lse = L[(b * H + h) * S + i];
				if (lse == -INFINITY)
					continue;
				const real *qi = Q + (b * S + i) * D + h * dh, *gi = dO + (b * S + i) * D + h * dh,
					    *oi = O + (b * S + i) * D + h * dh;
				real Di = 0;   /* sum_j p_j (dy . v_j) = dy . o */
				for (int64_t k = 0; k < dh; k++)
					Di += gi[k] * oi[k];
				real *dqi = dQ + (b * S + i) * D + h * dh;
				int64_t nk = c->s->attr.causal ? i + 1 : S;
				for (int64_t j = 0; j < nk; j++) {
					if (mask && !mask[b * S + j])
						continue;
					const real *kj = K + (b * S + j) * D + h * dh, *vj = V + (b * S + j) * D + h * dh;
					real s = 0, dp = 0;
					for (int64_t k = 0; k < dh; k++)
						s += qi[k] * kj[k], dp += gi[k] * vj[k];
					real pj = exp(s * scale - lse), ds = pj * (dp - Di) * scale;
					real *dkj = dK + (b * S + j) * D + h * dh, *dvj = dV + (b * S + j) * D + h * dh;
					for (int64_t k = 0; k < dh; k++) {
						dqi[k] += ds * kj[k];
						dkj[k] += ds * qi[k];
						dvj[k] += pj * gi[k];
					}
				}
			}
}

static void op_attention_bwd(Ctx *c) { attention_bwd(c, F(c->r, OUT(0)), F(c->r, OUT(1)), F(c->r, OUT(2))); }

/* attention_bwd with dq, dk and dv side by side in one [B, S, 3 D] (compiler/hfuse.c) */
static void op_attention_bwd_qkv(Ctx *c)
{
	int64_t n = mgl_numel(val(c->r, IN(1))), D = rt_last(val(c->r, IN(1)));
	real *t = mgl_xmalloc((size_t)(3 * n) * sizeof *t, "attention's input gradients"), *out = F(c->r, OUT(0));
	attention_bwd(c, t, t + n, t + 2 * n);
	for (int64_t r = 0; r < n / D; r++)
		for (int i = 0; i < 3; i++)
			memcpy(out + (3 * r + i) * D, t + i * n + r * D, (size_t)D * sizeof *t);
	free(t);
}

/* Rotary position embeddings on x [B, S, H*dh] (this rank's heads), Hugging Face LLaMA's
 * rotate_half form: in each head, feature i < dh/2 and feature i + dh/2 are a pair turned
 * by the angle s * theta^(-2i/dh) at position s. rope_bwd turns them back (the rotation's
 * transpose). The angles are computed in double: a float angle near 4,096 radians is off
 * by up to 2.4e-4. */
static void op_rope(Ctx *c)
{
	const MglValue *x = val(c->r, IN(0));
	int64_t B = x->shape[0], S = x->shape[1], D = x->shape[2], H = c->s->attr.heads, half = D / H / 2;
	double sign = c->s->op == MGL_OP_ROPE_BWD ? -1 : 1;
	const real *X = F(c->r, IN(0));
	real *Y = F(c->r, OUT(0));
	for (int64_t s = 0; s < S; s++)
		for (int64_t i = 0; i < half; i++) {
			double a = (double)s * pow(c->s->attr.theta, -(double)i / (double)half);
			real cs = (real)cos(a), sn = (real)(sign * sin(a));
			for (int64_t b = 0; b < B; b++)
				for (int64_t h = 0; h < H; h++) {
					int64_t o = (b * S + s) * D + h * 2 * half + i;
					real x1 = X[o], x2 = X[o + half];
					Y[o] = x1 * cs - x2 * sn;
					Y[o + half] = x2 * cs + x1 * sn;
				}
		}
}

/* out[B, ...] = x[B, index, ...] */
static void op_select(Ctx *c)
{
	const MglValue *x = val(c->r, IN(0));
	int64_t B = x->shape[0], S = x->shape[1], inner = mgl_numel(x) / (B * S);
	for (int64_t b = 0; b < B; b++)
		memcpy(F(c->r, OUT(0)) + b * inner, F(c->r, IN(0)) + (b * S + c->s->attr.position) * inner,
		       (size_t)inner * sizeof(real));
}

static void op_select_bwd(Ctx *c)
{
	const MglValue *x = val(c->r, OUT(0));
	int64_t B = x->shape[0], S = x->shape[1], inner = mgl_numel(x) / (B * S);
	real *o = F(c->r, OUT(0));
	memset(o, 0, (size_t)mgl_numel(x) * sizeof *o);
	for (int64_t b = 0; b < B; b++)
		memcpy(o + (b * S + c->s->attr.position) * inner, F(c->r, IN(0)) + b * inner, (size_t)inner * sizeof(real));
}

static void vocab_max_rows(Ctx *c, int64_t from, int64_t to)
{
	const MglValue *z = val(c->r, IN(0));
	int64_t start, V = rt_valid_cols(c->r, z, c->s->attr.limit, &start), N = rt_last(z);
	const real *Z = F(c->r, IN(0));
	real *m = F(c->r, OUT(0));
	for (int64_t i = from; i < to; i++) {
		real mx = -INFINITY;
		for (int64_t j = 0; j < V; j++)
			mx = Z[i * N + j] > mx ? Z[i * N + j] : mx;
		m[i] = mx;
	}
}

/* the logits z [M, N] split in rows over the rank's threads (the vocabulary ops) */
static void vocab_rows(Ctx *c, Part *fn, int z)
{
	const MglValue *v = val(c->r, z);
	spread(c, fn, rt_rows(v), row_grain(rt_last(v)));
}

static void op_vocab_max(Ctx *c) { vocab_rows(c, vocab_max_rows, IN(0)); }

/* stats[M, 2] = (sum of exp(z - max) here, the target's logit if it is here, else 0) */
static void vocab_stats_rows(Ctx *c, int64_t from, int64_t to)
{
	const MglValue *z = val(c->r, IN(0));
	int64_t start, V = rt_valid_cols(c->r, z, c->s->attr.limit, &start), N = rt_last(z);
	const real *Z = F(c->r, IN(0)), *mx = F(c->r, IN(2));
	const int32_t *t = IDS(c->r, IN(1));
	real *st = F(c->r, OUT(0));
	for (int64_t i = from; i < to; i++) {
		double s = 0;
		for (int64_t j = 0; j < V; j++)
			s += exp((double)Z[i * N + j] - mx[i]);
		int64_t col = (int64_t)t[i] - start;
		st[2 * i] = (real)s;
		st[2 * i + 1] = col >= 0 && col < V ? Z[i * N + col] : 0.0f;
	}
}

static void op_vocab_stats(Ctx *c) { vocab_rows(c, vocab_stats_rows, IN(0)); }

/* a target the loss counts: not the one it ignores (MGL_NONE: none, which no int32 equals) */
static bool kept(const Ctx *c, int32_t target) { return target != c->s->attr.ignore; }

/* loss = mean over kept targets of log(sum exp) + max - z[target]; lse for the backward */
static void op_vocab_loss(Ctx *c)
{
	const MglValue *t = val(c->r, IN(2));
	int64_t M = mgl_numel(t);
	const real *st = F(c->r, IN(0)), *mx = F(c->r, IN(1));
	const int32_t *T = IDS(c->r, IN(2));
	real *lse = F(c->r, OUT(1));
	double sum = 0;
	int64_t count = 0;
	for (int64_t i = 0; i < M; i++) {
		lse[i] = mx[i] + log(st[2 * i]);
		if (kept(c, T[i]))
			sum += (double)lse[i] - st[2 * i + 1], count++;
	}
	F(c->r, OUT(0))[0] = count ? (real)(sum / (double)count) : 0.0f;
}

/* dz = dloss / count * (softmax(z) - onehot(target)); padding and ignored rows 0 */
static void ce_bwd_rows(Ctx *c, int64_t from, int64_t to)
{
	const MglValue *z = val(c->r, IN(1)), *t = val(c->r, IN(2));
	int64_t start, V = rt_valid_cols(c->r, z, c->s->attr.limit, &start), N = rt_last(z);
	const real *Z = F(c->r, IN(1)), *lse = F(c->r, IN(3));
	const int32_t *T = IDS(c->r, IN(2));
	real *dZ = F(c->r, OUT(0));
	int64_t count = 0;
	for (int64_t i = 0; i < mgl_numel(t); i++)
		count += kept(c, T[i]);
	real g = count ? F(c->r, IN(0))[0] / (real)count : 0.0f;
	for (int64_t i = from; i < to; i++) {
		real *d = dZ + i * N;
		memset(d, 0, (size_t)N * sizeof *d);
		if (!kept(c, T[i]))
			continue;
		for (int64_t j = 0; j < V; j++)
			d[j] = g * exp(Z[i * N + j] - lse[i]);
		int64_t col = (int64_t)T[i] - start;
		if (col >= 0 && col < V)
			d[col] -= g;
	}
}

static void op_ce_bwd(Ctx *c) { vocab_rows(c, ce_bwd_rows, IN(1)); }

/* ---------------------------------------------------------------- layout changes */

static RtComm *group(const Ctx *c, int *member)
{
	bool dp = c->s->attr.group == MGL_GROUP_DP;
	*member = dp ? c->r->dp_rank : c->r->tp_rank;
	return dp ? c->r->dp : c->r->tp;
}

/* in R -> out S(dim): keep this rank's part (of reals or of int32 ids) */
static void op_slice(Ctx *c)
{
	const MglValue *o = val(c->r, OUT(0));
	int64_t outer, n, inner;
	rt_around(o, (int)c->s->attr.dim, &outer, &n, &inner);
	int64_t whole = n * c->r->job->tp, start = (int64_t)c->r->tp_rank * n;
	size_t es = o->dtype == MGL_I32 ? 4 : sizeof(real);
	const char *X = ptr(c->r, IN(0));
	char *Y = ptr(c->r, OUT(0));
	for (int64_t i = 0; i < outer; i++)
		memcpy(Y + (size_t)(i * n * inner) * es, X + (size_t)((i * whole + start) * inner) * es, (size_t)(n * inner) * es);
}

/* ZeRO-1 over dp, in place on each buffer: this rank's piece (plan.h: mgl_zero_piece) of
 * the gradients summed in member order, as all_reduce sums them; the rest is left as it is.
 * Each member writes its own piece and reads the others' at that piece only. */
static void zero_reduce_scatter(Ctx *c, RtComm *g, int member)
{
	if (!c->run->last_micro)
		return;   /* gradient buffers are reduced once, after the last micro-batch */
	for (int k = 0; k < c->s->nin; k++) {
		int64_t numel = mgl_numel(val(c->r, IN(k))), start, n = mgl_zero_piece(numel, g->size, member, &start);
		real *Y = F(c->r, IN(k));
		post(g, member, Y, (size_t)numel * sizeof *Y);
		for (int64_t i = start; i < start + n; i++) {
			real s = ((const real *)g->slots[0])[i];
			for (int m = 1; m < g->size; m++)
				s += ((const real *)g->slots[m])[i];
			Y[i] = s;
		}
		pthread_barrier_wait(&g->barrier);   /* everyone has read every piece */
	}
}

/* ZeRO-1 over dp, in place: every member's piece of each parameter to every member */
static void zero_all_gather(Ctx *c, RtComm *g, int member)
{
	for (int k = 0; k < c->s->nin; k++) {
		int64_t numel = mgl_numel(val(c->r, IN(k)));
		real *Y = F(c->r, IN(k));
		post(g, member, Y, (size_t)numel * sizeof *Y);
		for (int m = 0; m < g->size; m++) {
			int64_t start, n = mgl_zero_piece(numel, g->size, m, &start);
			if (m != member)
				memcpy(Y + start, (const real *)g->slots[m] + start, (size_t)n * sizeof *Y);
		}
		pthread_barrier_wait(&g->barrier);
	}
}

static void op_all_gather(Ctx *c)
{
	int member;
	RtComm *g = group(c, &member);
	if (c->s->attr.group == MGL_GROUP_DP) {
		zero_all_gather(c, g, member);
		return;
	}
	const MglValue *x = val(c->r, IN(0));
	int64_t outer, n, inner;
	rt_around(x, (int)c->s->attr.dim, &outer, &n, &inner);
	real *Y = F(c->r, OUT(0));
	post(g, member, F(c->r, IN(0)), (size_t)mgl_numel(x) * sizeof *Y);
	for (int m = 0; m < g->size; m++) {
		const real *X = g->slots[m];
		for (int64_t i = 0; i < outer; i++)
			memcpy(Y + (i * n * g->size + m * n) * inner, X + i * n * inner, (size_t)(n * inner) * sizeof *Y);
	}
	pthread_barrier_wait(&g->barrier);
}

static void op_reduce_scatter(Ctx *c)
{
	int member;
	RtComm *g = group(c, &member);
	if (c->s->attr.group == MGL_GROUP_DP) {
		zero_reduce_scatter(c, g, member);
		return;
	}
	const MglValue *o = val(c->r, OUT(0));
	int64_t outer, n, inner;
	rt_around(o, (int)c->s->attr.dim, &outer, &n, &inner);
	int64_t whole = n * g->size, start = (int64_t)member * n;
	real *Y = F(c->r, OUT(0));
	post(g, member, F(c->r, IN(0)), (size_t)mgl_numel(val(c->r, IN(0))) * sizeof *Y);
	for (int64_t i = 0; i < outer; i++)
		for (int64_t k = 0; k < n * inner; k++) {
			real s = 0;
			for (int m = 0; m < g->size; m++)
				s += ((const real *)g->slots[m])[(i * whole + start) * inner + k];
			Y[i * n * inner + k] = s;
		}
	pthread_barrier_wait(&g->barrier);
}

static void op_all_reduce(Ctx *c)
{
	int member;
	RtComm *g = group(c, &member);
	if (val(c->r, OUT(0))->role == MGL_V_GRAD && !c->run->last_micro)
		return;   /* gradient buffers are reduced once, after the last micro-batch */
	for (int k = 0; k < c->s->nin; k++)
		all_reduce(c->r, g, member, F(c->r, IN(k)), F(c->r, OUT(k)), mgl_numel(val(c->r, IN(k))), c->s->attr.max);
}

/* ---------------------------------------------------------------- the optimizer */

/* The part of a parameter's n elements this rank updates: all of them, or its ZeRO piece. */
static int64_t piece(const Ctx *c, int64_t n, int64_t *start)
{
	*start = 0;
	return c->r->job->plan->zero ? mgl_zero_piece(n, c->r->job->dp, c->r->dp_rank, start) : n;
}

/* sum of squares of this rank's gradients (ZeRO-1: of its pieces); a replicated one
 * counts on tp rank 0 only */
static void op_grad_norm(Ctx *c)
{
	double s = 0;
	for (int k = 0; k < c->s->nin; k++) {
		const MglValue *g = val(c->r, IN(k));
		if (g->layout.kind == MGL_L_R && c->r->tp_rank != 0)
			continue;
		int64_t start, n = piece(c, mgl_numel(g), &start);
		const real *G = F(c->r, IN(k)) + start;
		for (int64_t i = 0; i < n; i++)
			s += (double)G[i] * G[i];
	}
	F(c->r, OUT(0))[0] = (real)s;
}

/* AdamW (Loshchilov & Hutter), after clipping the gradient to a global norm of `clip`;
 * elements [from, to) of the piece this rank updates (the moments hold that piece alone) */
static void adamw_part(Ctx *c, int64_t from, int64_t to)
{
	const RtRun *u = c->run;
	int64_t start;
	piece(c, mgl_numel(val(c->r, IN(0))), &start);
	real *w = F(c->r, IN(0)) + start, *m = F(c->r, IN(2)), *v = F(c->r, IN(3));
	const real *g = F(c->r, IN(1)) + start;
	double norm = sqrt((double)F(c->r, IN(4))[0]);
	double scale = u->clip > 0 && norm > u->clip ? u->clip / norm : 1.0;
	double b1c = 1 - pow(u->beta1, (double)u->adam_t), b2c = 1 - pow(u->beta2, (double)u->adam_t);
	double wd = c->s->attr.decay ? u->weight_decay : 0;
	for (int64_t i = from; i < to; i++) {
		double gi = g[i] * scale;
		m[i] = (real)(u->beta1 * m[i] + (1 - u->beta1) * gi);
		v[i] = (real)(u->beta2 * v[i] + (1 - u->beta2) * gi * gi);
		double mh = m[i] / b1c, vh = v[i] / b2c;
		w[i] = (real)(w[i] - u->lr * (mh / (sqrt(vh) + u->eps) + wd * w[i]));
	}
}

static void op_adamw(Ctx *c)
{
	int64_t start;
	spread(c, adamw_part, piece(c, mgl_numel(val(c->r, IN(0))), &start), GRAIN);
}

typedef void OpFn(Ctx *c);

static OpFn *const ops[MGL_OP_COUNT] = {
	[MGL_OP_EMBEDDING] = op_embedding,       [MGL_OP_POSITIONS] = op_positions,
	[MGL_OP_LAYERNORM] = op_layernorm,       [MGL_OP_GELU] = op_gelu,
	[MGL_OP_TANH] = op_tanh,                 [MGL_OP_DROPOUT] = op_dropout,
	[MGL_OP_ADD] = op_add,                   [MGL_OP_ATTENTION] = op_attention,
	[MGL_OP_SELECT] = op_select,             [MGL_OP_MATMUL] = op_matmul,
	[MGL_OP_BIAS_ADD] = op_bias_add,         [MGL_OP_VOCAB_MAX] = op_vocab_max,
	[MGL_OP_VOCAB_STATS] = op_vocab_stats,   [MGL_OP_VOCAB_LOSS] = op_vocab_loss,
	[MGL_OP_MATMUL_DX] = op_matmul_dx,       [MGL_OP_MATMUL_DW] = op_matmul_dw,
	[MGL_OP_BIAS_GRAD] = op_bias_grad,       [MGL_OP_LAYERNORM_BWD] = op_layernorm_bwd,
	[MGL_OP_GELU_BWD] = op_gelu_bwd,         [MGL_OP_TANH_BWD] = op_tanh_bwd,
	[MGL_OP_DROPOUT_BWD] = op_dropout,       [MGL_OP_ATTENTION_BWD] = op_attention_bwd,
	[MGL_OP_SELECT_BWD] = op_select_bwd,     [MGL_OP_EMBEDDING_BWD] = op_embedding_bwd,
	[MGL_OP_SUM_TO] = op_sum_to,             [MGL_OP_ACCUMULATE] = op_accumulate,
	[MGL_OP_CE_BWD] = op_ce_bwd,             [MGL_OP_ALL_REDUCE] = op_all_reduce,
	[MGL_OP_ALL_GATHER] = op_all_gather,     [MGL_OP_REDUCE_SCATTER] = op_reduce_scatter,
	[MGL_OP_SLICE] = op_slice,               [MGL_OP_GRAD_NORM] = op_grad_norm,
	[MGL_OP_ADAMW] = op_adamw,               [MGL_OP_RMSNORM] = op_rmsnorm,
	[MGL_OP_RMSNORM_BWD] = op_rmsnorm_bwd,   [MGL_OP_SILU] = op_silu,
	[MGL_OP_SILU_BWD] = op_silu_bwd,         [MGL_OP_MUL] = op_mul,
	[MGL_OP_ROPE] = op_rope,                 [MGL_OP_ROPE_BWD] = op_rope,
	[MGL_OP_ATTENTION_BWD_QKV] = op_attention_bwd_qkv,
};

static bool cpu_runs(MglOp op) { return ops[op] != NULL; }

/* ---------------------------------------------------------------- the backend */

static void cpu_close(RtRank *r);

static int cpu_open(RtRank *r)
{
	const MglPlan *p = r->job->plan;
#ifdef RT_CPU_FLOAT
	if (r == &r->job->ranks[r->job->first] && blas_threads(r))   /* once a job, at its first rank */
		return -1;
#endif
	if ((r->tp->size > 1 && !r->tp->net && r->job->net) || (r->dp->size > 1 && !r->dp->net && r->job->net)) {
		snprintf(r->err, sizeof r->err, "the cpu backend's collectives between processes go through MPI, and these "
			 "processes have none (%s): launch with mpirun, or run the ranks as threads of one process (no launcher)",
			 rt_procs()->channel);
		return -1;
	}
	if (p->act_dtype != MGL_F32) {
		snprintf(r->err, sizeof r->err, "the cpu backend runs f32 plans, this one stores %s activations "
			 "(compile with --dtype f32)", mgl_dtype_name[p->act_dtype]);
		return -1;
	}
	for (int s = 0; s < p->nsteps; s++)
		if (!cpu_runs(p->steps[s].op)) {
			snprintf(r->err, sizeof r->err, "step %d: the cpu backend has no kernel for %s", s,
				 mgl_ops[p->steps[s].op].name);
			return -1;
		}
	Mem *m = calloc(1, sizeof *m);
	if (!m) {
		snprintf(r->err, sizeof r->err, "out of host memory: the backend's memory (%s bytes)",
			 mgl_commas((int64_t)sizeof *m, (char[32]){0}));
		return -1;
	}
	int64_t size[MGL_V_ROLE_COUNT] = {0};
	memcpy(size, p->persistent_bytes, sizeof size);
	size[MGL_V_ACT] = p->arena_bytes;
	for (int k = 0; k < MGL_V_ROLE_COUNT; k++) {
		if (k == MGL_V_INPUT)
			continue;
		m->region[k] = calloc(1, (size_t)size[k] * SCALE + 64);
		m->bytes += size[k] * SCALE + 64;
		if (!m->region[k]) {
			snprintf(r->err, sizeof r->err, "out of memory: the plan needs %s bytes for %s values",
				 mgl_commas(size[k], (char[32]){0}), mgl_role_name[k]);
			for (int q = 0; q < k; q++)
				free(m->region[q]);
			free(m);
			return -1;
		}
	}
	m->arena[0] = m->region[MGL_V_ACT];
	if (r->job->nmicro > 1) {   /* the second micro-batch's activations */
		m->arena[1] = calloc(1, (size_t)size[MGL_V_ACT] * SCALE + 64);
		m->bytes += size[MGL_V_ACT] * SCALE + 64;
		if (!m->arena[1]) {
			snprintf(r->err, sizeof r->err, "out of memory: a second micro-batch's activations need %s bytes",
				 mgl_commas(size[MGL_V_ACT], (char[32]){0}));
			r->mem = m;
			cpu_close(r);
			return -1;
		}
	}
	r->mem = m;
	return 0;
}

static void cpu_close(RtRank *r)
{
	Mem *m = r->mem;
	if (!m)
		return;
	m->region[MGL_V_ACT] = m->arena[0];
	for (int k = 0; k < MGL_V_ROLE_COUNT; k++)
		free(m->region[k]);
	free(m->arena[1]);
	free(m->scratch);
	free(m);
	r->mem = NULL;
}

static void cpu_micro(RtRank *r, int k)
{
	Mem *m = r->mem;
	m->region[MGL_V_ACT] = m->arena[k];
}

static void run_steps(RtRank *r, int from, int to, unsigned phases, const RtRun *run)
{
	const MglPlan *p = r->job->plan;
	for (int i = from; i < to; i++) {
		const MglStep *s = &p->steps[i];
		if (!(phases & (1u << s->phase)))
			continue;
		Ctx c = {r, s, run};
		double t0 = r->step_seconds ? seconds() : 0;
		ops[s->op](&c);
		if (r->step_seconds)
			r->step_seconds[s->fuse >= 0 ? s->fuse : i] += seconds() - t0;
	}
}

/* Micro-batches interleaved as the cuda backend runs them (each collective waited for at
 * once here, so only the order is the same: what the tests compare) */
static int cpu_run(RtRank *r, int from, int to, unsigned phases, const RtRun *run, int n)
{
	Mem *m = r->mem;
	if (n == 1) {
		run_steps(r, from, to, phases, run);
		return 0;
	}
	unsigned char *selected = m->region[MGL_V_ACT];
	for (int at = from; at < to;) {
		int end = mgl_segment_end(r->job->plan, at, to, phases);
		for (int k = 0; k < n; k++) {
			cpu_micro(r, k);
			run_steps(r, at, end, phases, &run[k]);
		}
		at = end;
	}
	m->region[MGL_V_ACT] = selected;
	return 0;
}

/* The host side is float for f32 values, int32 for i32 ones. */
static void cpu_write(RtRank *r, int v, const void *host)
{
	int64_t n = mgl_numel(val(r, v));
	if (val(r, v)->dtype == MGL_I32)
		memcpy(ptr(r, v), host, (size_t)n * 4);
	else
		for (int64_t i = 0; i < n; i++)
			F(r, v)[i] = ((const float *)host)[i];
}

static void cpu_read(RtRank *r, int v, void *host)
{
	int64_t n = mgl_numel(val(r, v));
	if (val(r, v)->dtype == MGL_I32)
		memcpy(host, ptr(r, v), (size_t)n * 4);
	else
		for (int64_t i = 0; i < n; i++)
			((float *)host)[i] = (float)F(r, v)[i];
}

static void cpu_zero_grads(RtRank *r)
{
	const MglPlan *p = r->job->plan;
	for (int i = 0; i < p->nparams; i++)
		if (r->job->grad_zero[i])
			memset(ptr(r, p->params[i].grad), 0, (size_t)mgl_numel(val(r, p->params[i].grad)) * sizeof(real));
}

static double cpu_peek(RtRank *r, int v, int64_t i) { return (double)F(r, v)[i]; }

/* The first "model name" of /proc/cpuinfo (Linux on x86; elsewhere "cpu"). */
static void cpu_name(char *buf, size_t n)
{
	snprintf(buf, n, "cpu");
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];
	while (f && fgets(line, sizeof line, f)) {
		char *colon = strchr(line, ':');
		if (strncmp(line, "model name", 10) || !colon)
			continue;
		colon += 1 + (colon[1] == ' ');
		colon[strcspn(colon, "\n")] = 0;
		if (*colon)
			snprintf(buf, n, "%s", colon);
		break;
	}
	if (f)
		fclose(f);
}

static void cpu_memory(RtRank *r, int64_t *allocated, int64_t *device_used)
{
	const Mem *mem = r->mem;
	*allocated = mem->bytes + mem->scratch_n * (int64_t)sizeof(real);
	*device_used = -1;
}

/* The rate of this rank's GEMM (gemm_rate): OpenBLAS's on a large square, with the
 * threads a rank has, or the loops' on the rank's largest weight (the GEMM most of a
 * step's time goes to), on one thread: a rank is a thread. */
static void cpu_machine(RtRank *r, RtMachine *m)
{
	const MglPlan *p = r->job->plan;
	memset(m, 0, sizeof *m);
	cpu_name(m->device, sizeof m->device);
	cpu_memory(r, &m->allocated, &m->device_used);
	int64_t M, n = 0, k = 0;
	for (int i = 0; i < p->nparams; i++) {
		const MglValue *w = val(r, p->params[i].value);
		if (w->rank == 2 && w->shape[0] * w->shape[1] > n * k)
			n = w->shape[0], k = w->shape[1];
	}
	m->gemm_flops = gemm_rate(&M, &n, &k);
	char what[160] = "";
#ifdef RT_CPU_FLOAT
	if (blas.sgemm)
		snprintf(what, sizeof what, ", OpenBLAS on %d thread%s: %.100s", blas.threads, blas.threads == 1 ? "" : "s",
			 blas.what);
	else
#endif
		snprintf(what, sizeof what, " on one thread (the largest weight's)");
	snprintf(m->gemm_what, sizeof m->gemm_what, "the cpu backend's GEMM, [%lld, %lld] x [%lld, %lld]%.120s", (long long)M,
		 (long long)k, (long long)k, (long long)n, what);
}

const RtBackend RT_BACKEND = {RT_BACKEND_NAME, cpu_open,  cpu_close, cpu_run,     cpu_micro, cpu_write,
			      cpu_read,        cpu_zero_grads, cpu_peek, cpu_runs, cpu_machine, cpu_memory};
