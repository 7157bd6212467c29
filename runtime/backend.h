/* runtime/backend.h — what a backend implements, and the job it runs in.
 *
 * A job is tp x dp ranks executing one plan. exec.c owns the job: it starts one thread
 * per rank for each stretch of steps and gives the backend the run's parameters (which
 * micro-batch, the learning rate, the seeds). A backend owns each rank's memory and runs
 * steps on it, collectives included; the cpu backend (cpu.c) is the reference that every
 * other backend is tested against, and the cuda backend meets it only here.
 *
 * Conventions every backend keeps (docs/plan.md says why):
 *   - a step whose output is a gradient buffer (role grad) adds into it;
 *   - collectives on gradient buffers (the optimizer pass's buckets, tp or dp) run only on
 *     the last micro-batch of an optimizer step;
 *   - dropout's keep-mask for element i (its index in the whole, unsplit tensor) is
 *     rt_dropout_keep(key, step seed, i), the same on every backend and for every tp;
 *   - an input value's contents are written by the host before the steps that read it.
 */
#ifndef MGL_BACKEND_H
#define MGL_BACKEND_H

#include <pthread.h>

#include "runtime.h"

typedef struct RtJob RtJob;
typedef struct RtRank RtRank;
typedef struct RtNet RtNet;

/* The run's parameters, the same for every rank. */
typedef struct {
	uint64_t key;          /* dropout: the training seed mixed with the iteration and micro-batch */
	bool last_micro;       /* the last micro-batch of this optimizer step: gradients are reduced */
	bool first_micro;      /* the first: a step that writes a gradient first writes it rather
				  than adding into it (RtJob.grad_first) */
	bool train;            /* false (evaluation, sampling): dropout is the identity */
	double lr, beta1, beta2, eps, weight_decay, clip;
	int64_t adam_t;        /* AdamW's step count, from 1 */
} RtRun;

/* A group's exchange for the cpu backend (and the bootstrap of others): shared memory
 * between threads; between processes (one member each) an MPI group, through which each
 * member's buffer is gathered into `gathered` and the slots point there. */
typedef struct {
	int size;
	pthread_barrier_t barrier;
	const void **slots;    /* each member's buffer, posted before the first barrier */
	void *net;             /* between processes: the group (rt_net_group), or NULL */
	char *gathered;        /* [size][bytes] of the last exchange */
	size_t gathered_cap;
} RtComm;

struct RtRank {
	RtJob *job;
	int rank, tp_rank, dp_rank;
	RtComm *tp, *dp;       /* the groups this rank is in */
	void *mem;             /* the backend's */
	char err[512];         /* a step's error: the step, the op and the model's line */
	int failed;
	/* Per-step timing (mgl bench --profile): when not NULL, [plan->nsteps] seconds to which
	 * run adds the time each step it runs takes, a fused group's (one kernel) at its first
	 * step. The cpu backend reads the host clock around each step; the cuda backend runs
	 * the steps one by one (never as a CUDA graph) with a CUDA event between each two. */
	double *step_seconds;
	/* mgl bench --profile's last pass: every collective waited for as soon as it is
	 * issued, none beside compute (the cpu backend's always are), for its time alone */
	bool collectives_at_once;
};

typedef struct RtBackend {
	const char *name;
	/* allocate a rank's memory for job->plan; 0 or an error in r->err */
	int (*open)(RtRank *r);
	void (*close)(RtRank *r);
	/* run steps [from, to) of the plan whose phase is in the mask (1 << MglPhase) for n
	 * micro-batches: n = 1, the one selected (micro) with run[0]; n = job->nmicro (2),
	 * micro-batch k with run[k], interleaved a segment at a time (mgl_segment_end: k's
	 * segment, then k + 1's beside k's collective); a micro-batch's gradient adds come
	 * before the next one's at every step, as when they run one after the other */
	int (*run)(RtRank *r, int from, int to, unsigned phases, const RtRun *run, int n);
	/* micro-batch k's activations and inputs (k < job->nmicro) are those that write, read,
	 * peek and a run of one micro-batch see from now on; 0 at open */
	void (*micro)(RtRank *r, int k);
	/* copy a value between the host (float for f32/bf16 values, int32 for i32) and the rank */
	void (*write)(RtRank *r, int value, const void *host);
	void (*read)(RtRank *r, int value, void *host);
	/* the gradients of the rank that its first micro-batch does not write whole
	 * (RtJob.grad_zero) set to 0 before an optimizer step, ordered before the next run */
	void (*zero_grads)(RtRank *r);
	/* element i of an f32 value at the backend's own precision (the tests' oracle) */
	double (*peek)(RtRank *r, int value, int64_t i);
	/* whether it has a kernel for op: a plan with a step it has none for is refused at
	 * open; the registry's test asks it for every op (no device needed) */
	bool (*runs)(MglOp op);
	/* rank r's machine (runtime.h): its name, memory, and its GEMM rate, timed now (which
	 * takes a moment: a second or two on a GPU, a tenth on the cpu) */
	void (*machine)(RtRank *r, RtMachine *m);
	/* rank r's memory now, as RtMachine has it (allocated, device_used), at once: the
	 * training loop reads it every step for --tensorboard */
	void (*memory)(RtRank *r, int64_t *allocated, int64_t *device_used);
} RtBackend;

struct RtJob {
	const MglPlan *plan;
	const RtBackend *be;
	int tp, dp, nranks;
	int nmicro;            /* micro-batches whose activations are held at once: 1, or 2 to interleave them */
	RtRank *ranks;         /* every rank of the job; this process opens and runs [first, last) */
	int first, last;       /* all of them, or one (launch.c: a process a rank) */
	RtNet *net;            /* between the processes, or NULL (all ranks here) */
	RtComm *comms;         /* dp tp-groups, then tp dp-groups */
	void *be_job;          /* the backend's, for the whole job (communicators) */
	/* Gradients written rather than added into by a run's first micro-batch (exec.c): of
	 * step s, a mask of its outputs k that are the first write of their bytes in the plan;
	 * of parameter i, whether its gradient is still zeroed before that micro-batch (no
	 * such write covers it). None, and every gradient zeroed, when micro-batches are
	 * interleaved (nmicro 2: their writes are not in plan order). */
	uint32_t *grad_first;  /* [plan->nsteps] */
	bool *grad_zero;       /* [plan->nparams] */
};

/* Whether step s's output k adds into what it holds: a gradient does, unless the step
 * writes it first and this is the optimizer step's first micro-batch. */
static inline bool rt_adds(const RtJob *j, int s, int k, bool first_micro)
{
	return j->plan->values[j->plan->steps[s].out[k]].role == MGL_V_GRAD &&
	       !(first_micro && k < 32 && j->grad_first[s] >> k & 1);
}

/* fn(parts + i * size) for each part i < k (at most RT_PARTS_MAX): part 0 on the calling
 * thread, each other on a thread of its own, or here after the rest where its thread cannot
 * start; returns when every part is done (exec.c). */
enum { RT_PARTS_MAX = 64 };
void rt_run_parts(void *(*fn)(void *), void *parts, size_t size, int k);

extern const RtBackend rt_cpu_backend;
extern const RtBackend rt_cpu64_backend;   /* double precision, for tests */
/* FLOP/s of the cpu backend's GEMM for a rank, with the threads a rank has (after a job
 * opened): OpenBLAS's cblas_sgemm on a 2,048^3 product where the library was loaded, else
 * the backend's own loops on one thread, on a [16, k] x [k, n] product (n cut so that the
 * [k, n] operand stays under 16 MB), about a tenth of a second. What the training loop
 * estimates a step's time by; 0 if it could not be timed. */
double rt_cpu_gemm_rate(int64_t n, int64_t k);
/* Which GEMM the cpu backend's matmuls run, in a line: OpenBLAS (its version, library and
 * the threads a rank has, as the last job opened set them) or the backend's own loops, and
 * why (no library found, or MGL_BLAS=0). docs/DESIGN.md says how the library is found. */
void rt_cpu_gemm(char *buf, size_t n);

/* A value's geometry, as every backend needs it: its last dimension, the rows before it,
 * the tensor seen as [outer, n, inner] around dimension `dim` counted from the end, and
 * where this rank's part of a split value starts in the whole, along the split dimension. */
static inline int64_t rt_last(const MglValue *x) { return mgl_last_dim(x); }   /* (plan.h's, for short) */
static inline int64_t rt_rows(const MglValue *x) { return mgl_rows(x); }
static inline void rt_around(const MglValue *x, int dim, int64_t *outer, int64_t *n, int64_t *inner)
{
	int d = x->rank - dim;
	*outer = *inner = 1;
	*n = x->shape[d];
	for (int i = 0; i < d; i++)
		*outer *= x->shape[i];
	for (int i = d + 1; i < x->rank; i++)
		*inner *= x->shape[i];
}

/* Counter-based dropout mask: the same bits for the same (key, seed, index) anywhere. */
static inline uint64_t rt_mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}
/* Each dp rank sees other sequences and draws its own masks; tp ranks share them. */
static inline uint64_t rt_dropout_key(uint64_t key, int dp_rank)
{
	return dp_rank ? rt_mix64(key ^ (uint64_t)dp_rank) : key;
}
static inline bool rt_dropout_keep(uint64_t key, uint32_t seed, int64_t i, double p)
{
	uint64_t h = rt_mix64(rt_mix64(key ^ ((uint64_t)seed << 40)) ^ (uint64_t)i);
	return (double)(h >> 40) * (1.0 / 16777216.0) >= p;
}

static inline int64_t rt_shard_start(const RtRank *r, const MglValue *x)
{
	if (x->layout.kind != MGL_L_S || r->job->tp == 1)
		return 0;
	return (int64_t)r->tp_rank * x->shape[x->rank - x->layout.dim];
}

/* The vocabulary-parallel classifier: this rank holds columns [start, start + last) of the
 * logits z; those at or past the true vocabulary (limit) are padding and take no part.
 * Returns how many of this rank's columns are real, and sets *start. */
static inline int64_t rt_valid_cols(const RtRank *r, const MglValue *z, int64_t limit, int64_t *start)
{
	*start = rt_shard_start(r, z);
	int64_t v = limit - *start;
	return v < 0 ? 0 : v > rt_last(z) ? rt_last(z) : v;
}

/* ---------------------------------------------------------------- launch.c */

/* The channel between the job's processes (runtime.h's RtProcs): NULL with one process.
 * Every process calls the same collectives in the same order. all: [size][bytes]. A lost
 * peer ends the process with an error. */
RtNet *rt_net(void);
void rt_net_allgather(RtNet *x, const void *mine, size_t bytes, void *all);
void rt_net_bcast(RtNet *x, void *buf, size_t bytes, int root);
/* bytes of buf from process `from` to process `to`, the others untouched (rank 0 may stage
 * them in its buf). Every process calls it alike. */
void rt_net_send(RtNet *x, void *buf, size_t bytes, int from, int to);
/* Whether it has groups (MPI; the TCP star has not), and one: the processes of the same
 * color, numbered by key (MPI_Comm_split; every process calls it), and its allgather. */
bool rt_net_groups(const RtNet *x);
void *rt_net_group(RtNet *x, int color, int key);
void rt_net_group_allgather(void *group, int size, const void *mine, size_t bytes, void *all);

/* ---------------------------------------------------------------- exec.c */

RtJob *rt_job_open(const MglPlan *p, const RtBackend *be, char *err, size_t errlen);
/* The same, holding the activations of nmicro micro-batches (1 or 2) at once, for
 * rt_job_run_micro: nmicro times the plan's arena on each rank. */
RtJob *rt_job_open_micro(const MglPlan *p, const RtBackend *be, int nmicro, char *err, size_t errlen);
void rt_job_close(RtJob *j);
/* Every rank runs steps of the given phases, in parallel threads, on the micro-batch
 * selected (rt_job_micro); 0 or -1 with err. */
int rt_job_run(RtJob *j, unsigned phases, const RtRun *run, char *err, size_t errlen);
/* Every rank runs steps of the given phases on its job->nmicro micro-batches, k with
 * run[k], interleaved at the collectives (RtBackend.run). */
int rt_job_run_micro(RtJob *j, unsigned phases, const RtRun *run, char *err, size_t errlen);
/* Micro-batch k's activations and inputs are what the host writes and reads from now on. */
void rt_job_micro(RtJob *j, int k);
/* v: [nranks][n] of which this process filled its ranks' rows; after it, every row is its
 * rank's (from the other processes, over the channel). Every process calls it alike. */
void rt_job_share(RtJob *j, double *v, int n);
/* The value id of a plan input or value by name, or -1. */
int rt_value(const MglPlan *p, const char *name);
/* Full (unsharded, unpadded) parameter tensor i, gathered from the tp ranks of dp rank 0,
 * into out (shape: plan->params[i].shape); which: RT_PARAM_VALUE, _M, _V or _GRAD. Between
 * processes, every process calls it and every one gets the tensor; with rt_param_gather
 * only process `to` does (the others' out may be NULL), or every one with to -1. */
void rt_param_get(RtJob *j, int i, int which, float *out);
void rt_param_gather(RtJob *j, int i, int which, float *out, int to);
/* Scatters a full parameter tensor to every rank's shard (padding rows zero), of the ranks
 * this process runs. */
void rt_param_set(RtJob *j, int i, int which, const float *full);
enum { RT_PARAM_VALUE, RT_PARAM_M, RT_PARAM_V, RT_PARAM_GRAD };

#endif
