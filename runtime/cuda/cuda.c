/* runtime/cuda/cuda.c — the cuda backend: a plan on NVIDIA GPUs.
 *
 * One GPU per rank (rank r on device r), one host thread per rank (exec.c). Storage:
 * activations as the plan says (bf16, with a few f32 values: losses, log-sum-exps), ids
 * int32, parameters fp32 masters with a bf16 copy for the GEMMs (adamw rewrites both),
 * gradients and AdamW moments fp32. The steps are launched by ops.c, from kernels that
 * nvrtc.c compiles and loads; this file owns each rank's memory, the communicators, the
 * runs and the host's copies.
 *
 * Collectives run through NCCL, one communicator per tp group and per dp group, made
 * with ncclCommInitAll from the job's first rank; launched as processes (a rank each, on
 * its node's GPU local_rank), with ncclCommInitRank from unique ids that each group's
 * first rank makes and the processes' channel (MPI or the TCP rendezvous) hands round.
 * For tests on fewer GPUs than ranks, MGL_SHARE_GPU puts ranks on one GPU and their
 * collectives through the host (host_comm.c).
 *
 * Each kind of run (the phases asked, and whether gradients are reduced) runs once as it
 * is, is captured as a CUDA graph the second time, and replayed from then on; what
 * changes from step to step (dropout key, learning rate, Adam's bias corrections) lives in
 * a small device struct the graph reads, written before each replay.
 *
 * Every CUDA, cuBLAS, NCCL and NVRTC call is checked; an error names the plan step, its op
 * and the model's line.
 */
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	ncclComm_t *tp, *dp;      /* per rank */
	CudaHostGroup *host;      /* MGL_SHARE_GPU: the groups through the host instead */
} JobComms;

/* MGL_SHARE_GPU=1: the ranks (threads of this process) share the GPUs, rank r on GPU r mod
 * their count, and collectives go through the host (host_comm.c says why) */
static bool share_gpu(const RtJob *j) { return !j->net && getenv("MGL_SHARE_GPU"); }

/* ---------------------------------------------------------------- errors */

int cuda_fail(RtRank *r, const char *fmt, ...)
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

/* ---------------------------------------------------------------- the backend */

static bool cuda_runs(MglOp op) { return cuda_ops[op] || *mgl_ops[op].expr; }   /* or a generated kernel */

/* The job's communicators: one ncclCommInitAll per tp group and per dp group, made by the
 * first rank to open (ranks open one after another, on the main thread). */
/* A process's two communicators, between processes: every process takes part in handing
 * round every group's id (in the same order), then joins its own groups. */
static int join_comms(RtRank *r)
{
	RtJob *j = r->job;
	Dev *d = r->mem;
	ncclUniqueId tp_id, dp_id;
	for (int g = 0; g < j->dp + j->tp; g++) {   /* tp groups (first rank g * tp), then dp groups (first rank g - dp) */
		bool tp = g < j->dp;
		int size = tp ? j->tp : j->dp, root = tp ? g * j->tp : g - j->dp;
		if (size == 1)
			continue;
		ncclUniqueId id;
		memset(&id, 0, sizeof id);
		if (r->rank == root)
			CKN(ncclGetUniqueId(&id));
		rt_net_bcast(j->net, &id, sizeof id, root);
		if (tp && g == r->dp_rank)
			tp_id = id;
		if (!tp && g - j->dp == r->tp_rank)
			dp_id = id;
	}
	if (j->tp > 1)
		CKN(ncclCommInitRank(&d->tp, j->tp, tp_id, r->tp_rank));
	if (j->dp > 1)
		CKN(ncclCommInitRank(&d->dp, j->dp, dp_id, r->dp_rank));
	return 0;
}

static int make_comms(RtRank *r)
{
	RtJob *j = r->job;
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&lock);
	int rc = 0;
	if (!j->be_job) {
		size_t n = (size_t)j->nranks;
		JobComms *jc = calloc(1, sizeof *jc);
		int *devs = calloc(n, sizeof *devs);
		ncclComm_t *comms = calloc(n, sizeof *comms);
		if (jc)
			jc->tp = calloc(n, sizeof *jc->tp), jc->dp = calloc(n, sizeof *jc->dp);
		if (jc && share_gpu(j))
			jc->host = cuda_host_groups(j);
		if (!jc || !jc->tp || !jc->dp || !devs || !comms || (share_gpu(j) && !jc->host))
			rc = cuda_fail(r, "out of host memory: the communicators of %d ranks (%s bytes)", j->nranks,
				       mgl_commas((int64_t)(sizeof *jc + n * (3 * sizeof *comms + sizeof *devs)), (char[32]){0}));
		for (int g = 0; g < j->dp && !rc && j->tp > 1 && !jc->host; g++) {
			for (int t = 0; t < j->tp; t++)
				devs[t] = g * j->tp + t;
			ncclResult_t e = ncclCommInitAll(comms, j->tp, devs);
			if (e != ncclSuccess)
				rc = cuda_fail(r, "ncclCommInitAll (tp group %d): %s", g, ncclGetErrorString(e));
			for (int t = 0; t < j->tp && !rc; t++)
				jc->tp[g * j->tp + t] = comms[t];
		}
		for (int g = 0; g < j->tp && !rc && j->dp > 1 && !jc->host; g++) {
			for (int k = 0; k < j->dp; k++)
				devs[k] = k * j->tp + g;
			ncclResult_t e = ncclCommInitAll(comms, j->dp, devs);
			if (e != ncclSuccess)
				rc = cuda_fail(r, "ncclCommInitAll (dp group %d): %s", g, ncclGetErrorString(e));
			for (int k = 0; k < j->dp && !rc; k++)
				jc->dp[k * j->tp + g] = comms[k];
		}
		free(devs);
		free(comms);
		if (rc && jc) {   /* this rank's open fails, and the job with it */
			cuda_host_groups_free(jc->host, j);
			free(jc->tp);
			free(jc->dp);
			free(jc);
			jc = NULL;
		}
		j->be_job = jc;
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

static int64_t plan_bytes(const Dev *d, const MglPlan *p, int nmicro, int64_t *shadow, int64_t *scratch, int64_t *pack,
			  int64_t *stripes)
{
	*shadow = p->persistent_bytes[MGL_V_PARAM] / 2 + 256;
	*scratch = 64, *pack = 0, *stripes = 1;
	for (int s = 0; s < p->nsteps; s++) {
		const MglStep *st = &p->steps[s];
		int64_t need = 0;
		if (st->op == MGL_OP_ATTENTION_BWD || st->op == MGL_OP_ATTENTION_BWD_QKV) {
			const MglValue *q = &p->values[st->in[1]];   /* [B, S, D] */
			int64_t R = q->shape[0] * ((q->shape[1] + 63) / 64);   /* ops.c, attention_bwd: the bias sums' bands */
			need = 2 * mgl_numel(q) + 64 + (st->fuse == s ? 3 * R * q->shape[2] : 0);
		}
		if (st->op == MGL_OP_LAYERNORM_BWD || st->op == MGL_OP_RMSNORM_BWD) {
			const MglValue *x = &p->values[st->in[1]];
			int64_t D = x->shape[x->rank - 1], M = mgl_numel(x) / D;
			int64_t two = 2 * M + 3 * cuda_colsum_bands(M, D) * D,
				one = st->op == MGL_OP_LAYERNORM_BWD && cuda_norm_one_pass(D) ? 3 * cuda_norm_bands(M) * D : 0;
			need = 64 + (two > one ? two : one);   /* ops.c, norm_bwd: the two passes', or the one's */
			*stripes = *stripes > (D + 31) / 32 ? *stripes : (D + 31) / 32;
		}
		if (st->op == MGL_OP_BIAS_GRAD || st->op == MGL_OP_SUM_TO) {
			int64_t n = mgl_numel(&p->values[st->out[0]]);
			need = cuda_colsum_bands(mgl_numel(&p->values[st->in[0]]) / n, n) * n + 64;
			*stripes = *stripes > (n + 31) / 32 ? *stripes : (n + 31) / 32;
		}
		*scratch = *scratch > need ? *scratch : need;
		/* staging only for the tp collectives that take it (internal.h: cuda_staged); none
		 * where every one runs a row at a time straight between the tensors */
		if ((st->op == MGL_OP_ALL_GATHER || st->op == MGL_OP_REDUCE_SCATTER) && st->attr.group == MGL_GROUP_TP) {
			const MglValue *full = &p->values[st->op == MGL_OP_ALL_GATHER ? st->out[0] : st->in[0]];
			int64_t b = mgl_numel(full) * mgl_dtype_size[full->dtype];
			if (cuda_staged(full, (int)st->attr.dim, d->sp_grouped))
				*pack = *pack > b ? *pack : b;
		}
	}
	int64_t total = p->arena_bytes * nmicro + *shadow + *scratch * 4 + *stripes * 4 + *pack + ((int64_t)64 << 20);
	for (int k = 0; k < MGL_V_ROLE_COUNT; k++)
		total += p->persistent_bytes[k];
	return total;
}

cudaError_t cuda_malloc(Dev *d, void **p, size_t n)
{
	cudaError_t e = cudaMalloc(p, n);
	if (e == cudaSuccess)
		d->allocated += (int64_t)n;
	return e;
}

static int cuda_open(RtRank *r)
{
	const MglPlan *p = r->job->plan;
	Dev *d = calloc(1, sizeof *d);
	if (!d)
		return cuda_fail(r, "out of host memory: the rank's state (%s bytes)", mgl_commas((int64_t)sizeof *d, (char[32]){0}));
	r->mem = d;
	int count = 0;
	CK(cudaGetDeviceCount(&count));
	/* a process a rank: its node's GPU local_rank, or the one it sees (Slurm's
	 * --gpus-per-task gives each its own) */
	d->device = share_gpu(r->job) && count > 0 ? r->rank % count : !r->job->net ? r->rank : count == 1 ? 0 : rt_procs()->local_rank;
	if (r->job->net && d->device >= count)
		return cuda_fail(r, "local rank %d of its node, and %d GPU%s visible", d->device, count,
				 count == 1 ? " is" : "s are");
	if (!r->job->net && r->job->nranks > count && !(share_gpu(r->job) && count > 0))
		return cuda_fail(r, "this job has %d rank%s, one GPU each, but %d GPU%s visible", r->job->nranks,
			     r->job->nranks == 1 ? "" : "s", count,
			     count == 1 ? " is" : "s are");
	CK(cudaSetDevice(d->device));
	struct cudaDeviceProp prop;
	CK(cudaGetDeviceProperties(&prop, d->device));
	d->arch = 10 * prop.major + prop.minor;
	if (cuda_load_kernels(r, prop.major, prop.minor))
		return -1;
	d->sp_grouped = getenv("MGL_SP_GROUPED") != NULL;   /* once: the buffers are sized by it */
	/* the wgmma attention by TMA on 9.0 (its tiles; the backward's dQ, lse and delta), unless
	 * MGL_NO_FA_TMA (each thread's cp.async and red.global instead: the kernels before the
	 * sixteenth sitting, for comparison) */
	d->fa_tma = d->arch == 90 && !getenv("MGL_NO_FA_TMA");
	d->sms = prop.multiProcessorCount;
	int64_t shadow, scratch, pack, stripes,
		need = plan_bytes(d, p, r->job->nmicro, &shadow, &scratch, &pack, &stripes);
	size_t free_b = 0, total_b = 0;
	CK(cudaMemGetInfo(&free_b, &total_b));
	if ((size_t)need > free_b)
		return cuda_fail(r, "the plan needs %.2f GiB on each GPU and %.2f GiB are free on GPU %d (of %.2f): "
			     "use a smaller --batch (activations are %.2f GiB%s) or a larger --tp", (double)need / (1 << 30),
			     (double)free_b / (1 << 30), d->device, (double)total_b / (1 << 30),
			     (double)p->arena_bytes * r->job->nmicro / (1 << 30),
			     r->job->nmicro > 1 ? ", two micro-batches' with --interleave" : "");
	int64_t size[MGL_V_ROLE_COUNT] = {0};
	memcpy(size, p->persistent_bytes, sizeof size);
	size[MGL_V_ACT] = p->arena_bytes;
	for (int k = 0; k < MGL_V_ROLE_COUNT; k++)
		if (k != MGL_V_INPUT) {
			CK(cuda_malloc(d, (void **)&d->region[k], (size_t)size[k] + 256));
			CK(cudaMemset(d->region[k], 0, (size_t)size[k] + 256));
		}
	CK(cuda_malloc(d, (void **)&d->shadow, (size_t)shadow));
	CK(cuda_malloc(d, (void **)&d->scratch, (size_t)scratch * 4));
	d->scratch_n = scratch;
	CK(cuda_malloc(d, (void **)&d->colsum_count, (size_t)stripes * 4));
	CK(cudaMemset(d->colsum_count, 0, (size_t)stripes * 4));
	d->colsum_n = stripes;
	if (pack)
		CK(cuda_malloc(d, &d->pack, (size_t)pack));
	d->pack_n = pack;
	for (int k = 0; k < r->job->nmicro; k++) {
		d->micro[k].arena = d->region[MGL_V_ACT];
		if (k > 0) {   /* another micro-batch's activations */
			CK(cuda_malloc(d, (void **)&d->micro[k].arena, (size_t)p->arena_bytes + 256));
			CK(cudaMemset(d->micro[k].arena, 0, (size_t)p->arena_bytes + 256));
		}
		CK(cuda_malloc(d, (void **)&d->micro[k].run, sizeof(DevRun)));
	}
	d->run = d->micro[0].run;
	d->ws_size = 64u << 20;
	CK(cuda_malloc(d, &d->ws, d->ws_size));
	if (cuda_ops_prepare(r))
		return -1;
	/* The collectives' stream at the highest priority, as Megatron-LM puts NCCL, so that the
	 * block scheduler may start an all-reduce's blocks as SMs free up. Measured alone it hid
	 * nothing at 2.5b tp 2 (the schedule then left no GEMM beside the all-reduces); with the
	 * schedule's sunk weight-gradient GEMMs, 48% (docs/perf-notes.md, fifth sitting). */
	int least, greatest;
	CK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
	CK(cudaStreamCreateWithFlags(&d->compute, cudaStreamNonBlocking));
	CK(cudaStreamCreateWithPriority(&d->comm, cudaStreamNonBlocking, greatest));
	CK(cudaEventCreateWithFlags(&d->to_comm, cudaEventDisableTiming));
	CK(cudaEventCreateWithFlags(&d->to_compute, cudaEventDisableTiming));
	for (int i = 0; i < 2; i++)
		CK(cudaEventCreate(&d->tune[i]));
	/* The GEMMs that run while a collective is in flight are given all but MGL_COMM_SMS of
	 * the SMs (cuBLASLt's SM count target; Transformer Engine's "sm margin"), so that NCCL's
	 * blocks need not wait for a GEMM's to finish. Measured at 2.5b tp 2: 0, 16 and 32
	 * within 1% of each other, 16 the best (docs/perf-notes.md, fifth sitting). */
	int margin = r->job->nranks > 1 ? 16 : 0;
	const char *e = getenv("MGL_COMM_SMS");
	if (e && *e)
		margin = atoi(e);
	d->gemm_sms = margin > 0 && margin < d->sms ? d->sms - margin : 0;
	CKB(cublasLtCreate(&d->lt));
	d->algo = calloc((size_t)p->nsteps + 1, sizeof *d->algo);
	d->has_algo = calloc((size_t)p->nsteps + 1, sizeof *d->has_algo);
	if (!d->algo || !d->has_algo)
		return cuda_fail(r, "out of host memory");
	/* Interleaved micro-batches run NCCL's kernels beside the GEMMs on purpose; at its default
	 * CTA count NCCL takes enough SMs to slow them by more than it hides (2.5b tp 2: 193.2 ms
	 * a step, 183.9 with 8; perf-notes.md, seventh sitting). A user's own setting wins. */
	if (r->job->nmicro > 1)
		setenv("NCCL_MAX_CTAS", "8", 0);
	if (r->job->net) {
		if (join_comms(r))
			return -1;
	} else if (r->job->nranks > 1) {
		if (make_comms(r))
			return -1;
		JobComms *jc = r->job->be_job;
		d->tp = jc->tp[r->rank];
		d->dp = jc->dp[r->rank];
		cuda_host_join(r, jc->host);
	}
	for (int s = 0; s < p->nsteps; s++)
		if (!cuda_runs(p->steps[s].op))
			return cuda_fail(r, "step %d: the cuda backend has no kernel for %s", s, mgl_ops[p->steps[s].op].name);
	return 0;
}

/* The most marks a run records: one before each step, one before the wait for a collective
 * there, and two at the end. */
static int nmarks_max(const RtJob *j) { return 2 * j->nmicro * j->plan->nsteps + 2; }

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
	if (d->micro[0].arena)   /* the first micro-batch's arena is the region's */
		d->region[MGL_V_ACT] = d->micro[0].arena;
	for (int k = 0; k < MGL_V_ROLE_COUNT; k++)
		cudaFree(d->region[k]);
	cudaFree(d->micro[1].arena);
	cudaFree(d->shadow);
	cudaFree(d->scratch);
	cudaFree(d->colsum_count);
	cudaFree(d->pack);
	for (int k = 0; k < 2; k++) {
		cudaFree(d->micro[k].run);
		for (int s = 0; d->micro[k].coll_done && s < r->job->plan->nsteps; s++)
			if (d->micro[k].coll_done[s])
				cudaEventDestroy(d->micro[k].coll_done[s]);
		free(d->micro[k].coll_done);
		free(d->micro[k].inflight);
	}
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
	for (int i = 0; i < 2; i++)
		if (d->tune[i])
			cudaEventDestroy(d->tune[i]);
	for (int k = 0; d->marks && k < nmarks_max(r->job); k++)
		if (d->marks[k])
			cudaEventDestroy(d->marks[k]);
	free(d->marks);
	free(d->mark_step);
	if (d->tp)
		ncclCommDestroy(d->tp);
	if (d->dp)
		ncclCommDestroy(d->dp);
	free(d->algo);
	free(d->has_algo);
	free(d->chains);
	cuda_release_kernels(d);
	free(d->chain_kernels);
	free(d->kernels);
	free(d->chain_at);
	free(d->qkv_batch);
	for (int k = 0; d->mt && k < r->job->plan->nsteps; k++)
		cudaFree(d->mt[k]);
	free(d->mt);
	free(d->mt_n);
	free(d->coll_wait);
	free(d->host_buf);
	free(d);
	r->mem = NULL;
	JobComms *jc = r->job->be_job;
	if (jc && r->rank == r->job->nranks - 1) {   /* the last rank to close frees the job's part */
		cuda_host_groups_free(jc->host, r->job);
		free(jc->tp);
		free(jc->dp);
		free(jc);
		r->job->be_job = NULL;
	}
}

static int run_chain(RtRank *r, const CudaChain *c, cudaKernel_t k)
{
	Dev *d = r->mem;
	void *ptrs[MGL_CHAIN_MAX_IN + 1], *args[MGL_CHAIN_MAX_IN + 3];
	int na = 0;
	for (int j = 0; j < c->nin; j++) {
		ptrs[j] = P(r, c->in[j]);
		args[na++] = &ptrs[j];
	}
	void *out = P(r, c->out);
	DevRun *run = d->run;
	int64_t start = c->indexed >= 0 ? rt_shard_start(r, val(r, c->indexed)) : 0;
	args[na++] = &out;
	args[na++] = &run;
	args[na++] = &start;
	int64_t n = mgl_numel(val(r, c->out)) / c->width, grid = (n + 255) / 256;
	if (grid > 65535 * 16)
		grid = 65535 * 16;
	CK(cudaLaunchKernel((const void *)k, cuda_dim3(grid > 0 ? grid : 1), cuda_dim3(256), args, 0, d->compute));
	return 0;
}

/* A timed run's event before step `step` (-1: after the last), on the compute stream,
 * which waits for the communication stream after each collective: the time between two
 * marks is the step's, its collective's included. */
static int mark(RtRank *r, int step)
{
	Dev *d = r->mem;
	if (!r->step_seconds)
		return 0;
	CK(cudaEventRecord(d->marks[d->nmarks], d->compute));
	d->mark_step[d->nmarks++] = step;
	return 0;
}

void cuda_use_micro(Dev *d, int k)
{
	d->micro[d->cur].ninflight = d->ninflight;
	d->cur = k;
	d->region[MGL_V_ACT] = d->micro[k].arena;
	d->run = d->micro[k].run;
	d->coll_done = d->micro[k].coll_done;
	d->inflight = d->micro[k].inflight;
	d->ninflight = d->micro[k].ninflight;
}

static void cuda_micro(RtRank *r, int k) { cuda_use_micro(r->mem, k); }

/* The steps [from, to) of the asked phases, in order, onto the streams, for the micro-batch
 * selected; its collectives may be left in flight. */
static int enqueue_steps(RtRank *r, int from, int to, unsigned phases, const RtRun *run)
{
	Dev *d = r->mem;
	const MglPlan *p = r->job->plan;
	for (int i = from; i < to; i++) {
		const MglStep *s = &p->steps[i];
		if (!(phases & (1u << s->phase)))
			continue;
		d->step = s;
		/* the collectives that this step, or a step of its fused group, needs finished
		 * (the wait counts as theirs in the profile) */
		int end = d->chain_at[i] >= 0 ? d->chains[d->chain_at[i]].last : mgl_group_end(p, i);
		int due = cuda_comm_due(r, end);
		if ((due >= 0 && (mark(r, due) || cuda_comm_wait(r, end))) || mark(r, i))
			return -1;
		if (d->chain_at[i] >= 0) {   /* a fused chain: one generated kernel, then past its end */
			if (run_chain(r, &d->chains[d->chain_at[i]], d->chain_kernels[d->chain_at[i]]))
				return -1;
			i = d->chains[d->chain_at[i]].last;
			continue;
		}
		CudaCtx c = {r, s, i, run->last_micro, run->first_micro};
		if (cuda_ops[s->op](&c))
			return -1;
		i = mgl_group_end(p, i);   /* a GEMM did its epilogue's steps, an adamw its group's: past them */
	}
	d->step = NULL;
	return 0;
}

/* The steps of the asked phases for n micro-batches (the selected one, or each of the
 * job's, a segment at a time: mgl_segment_end), then every stream joined (a captured
 * graph must be). */
static int enqueue(RtRank *r, int from, int to, unsigned phases, const RtRun *run, int n)
{
	Dev *d = r->mem;
	int selected = d->cur;
	for (int k = 0; k < r->job->nmicro; k++)   /* a run that failed may have left some: never wait across runs */
		d->micro[k].ninflight = 0;
	d->ninflight = 0;
	if (n == 1 && enqueue_steps(r, from, to, phases, &run[0]))
		return -1;
	for (int at = from; n > 1 && at < to;) {
		int end = mgl_segment_end(r->job->plan, at, to, phases);
		for (int k = 0; k < n; k++) {
			cuda_use_micro(d, k);
			if (enqueue_steps(r, at, end, phases, &run[k]))
				return -1;
		}
		at = end;
	}
	for (int k = 0; k < n; k++) {
		if (n > 1)
			cuda_use_micro(d, k);
		int due = cuda_comm_due(r, -1);
		if (due >= 0 && (mark(r, due) || cuda_comm_wait(r, -1)))
			return -1;
	}
	cuda_use_micro(d, selected);
	return mark(r, -1);
}

/* The events of timed runs, made at the first. */
static int make_marks(RtRank *r)
{
	Dev *d = r->mem;
	int n = nmarks_max(r->job);
	d->nmarks = 0;
	if (d->marks)
		return 0;
	d->marks = calloc((size_t)n, sizeof *d->marks);
	d->mark_step = calloc((size_t)n, sizeof *d->mark_step);
	if (!d->marks || !d->mark_step)
		return cuda_fail(r, "out of host memory for %d events", n);
	for (int k = 0; k < n; k++)
		CK(cudaEventCreate(&d->marks[k]));
	return 0;
}

/* A timed run's seconds, each two marks' difference, to the step of the first. */
static int read_marks(RtRank *r)
{
	Dev *d = r->mem;
	for (int k = 0; k + 1 < d->nmarks; k++) {
		float ms = 0;
		CK(cudaEventElapsedTime(&ms, d->marks[k], d->marks[k + 1]));
		r->step_seconds[d->mark_step[k]] += ms * 1e-3;
	}
	return 0;
}

/* run's parameters into the device struct the kernels read (dr) */
static int write_run(RtRank *r, DevRun *dr, const RtRun *run)
{
	Dev *d = r->mem;
	DevRun h = {.key = rt_dropout_key(run->key, r->dp_rank), .train = run->train, .lr = (float)run->lr, .beta1 = (float)run->beta1,
		    .beta2 = (float)run->beta2, .eps = (float)run->eps, .weight_decay = (float)run->weight_decay,
		    .clip = (float)run->clip};
	h.bc1 = (float)(1 - pow(run->beta1, (double)run->adam_t));
	h.bc2 = (float)(1 - pow(run->beta2, (double)run->adam_t));
	CK(cudaMemcpyAsync(dr, &h, sizeof h, cudaMemcpyHostToDevice, d->compute));
	return 0;
}

static int run_steps(RtRank *r, int from, int to, unsigned phases, const RtRun *run, int n)
{
	Dev *d = r->mem;
	CK(cudaSetDevice(d->device));
	for (int k = 0; k < n; k++)
		if (write_run(r, n == 1 ? d->run : d->micro[k].run, &run[k]))
			return -1;
	bool graphs = !getenv("MGL_NO_GRAPHS") && !r->step_seconds && from == 0 && to == r->job->plan->nsteps &&
		      !d->host_tp && !d->host_dp;   /* collectives through the host are not captured */
	if (r->step_seconds && make_marks(r))
		return -1;
	if (!graphs) {
		if (enqueue(r, from, to, phases, run, n))
			return -1;
	} else {
		/* a graph holds its pointers: one for each kind of run and micro-batch selected */
		Graph *g = &d->graphs[((phases & 7) << 2 | run[0].first_micro << 1 | run[n - 1].last_micro) << 2 | (n > 1) << 1 | d->cur];
		if (!g->eager) {
			/* the first run of its kind runs as it is: NCCL connects its peers and cuBLASLt
			 * picks its algorithms, neither of which may happen inside a capture */
			g->eager = true;
			if (enqueue(r, from, to, phases, run, n))
				return -1;
		} else if (!g->made) {
			/* the second is captured, and replayed from then on */
			cudaGraph_t graph;
			CK(cudaStreamBeginCapture(d->compute, cudaStreamCaptureModeThreadLocal));
			int rc = enqueue(r, from, to, phases, run, n);
			cudaError_t e = cudaStreamEndCapture(d->compute, &graph);
			if (rc)
				return -1;
			if (e != cudaSuccess)
				return cuda_fail(r, "capturing the step as a CUDA graph: %s", cudaGetErrorString(e));
			/* MGL_GRAPH_PRIORITY=1: replays keep each node's stream priority (the
			 * collectives' above the GEMMs', as in eager runs); by default a graph runs
			 * at the priority of the stream it is launched into. Opt-in until timed at
			 * tp 2 (docs/gpu.md) */
			unsigned long long flags = getenv("MGL_GRAPH_PRIORITY") ? cudaGraphInstantiateFlagUseNodePriority : 0;
			CK(cudaGraphInstantiate(&g->exec, graph, flags));
			cudaGraphDestroy(graph);
			g->made = true;
		}
		if (g->made)
			CK(cudaGraphLaunch(g->exec, d->compute));
	}
	CK(cudaStreamSynchronize(d->compute));
	CK(cudaGetLastError());
	return r->step_seconds ? read_marks(r) : 0;
}

static int cuda_run(RtRank *r, int from, int to, unsigned phases, const RtRun *run, int n)
{
	int rc = run_steps(r, from, to, phases, run, n);
	JobComms *jc = r->job->be_job;
	if (rc && jc)
		cuda_host_break(jc->host, r->job);   /* the ranks waiting for this one's collectives fail too */
	return rc;
}

static int64_t value_numel(const RtRank *r, int v) { return mgl_numel(val(r, v)); }

/* Host floats (or int32 ids) to the rank: bf16 values converted, parameters also to their
 * bf16 copy. Errors here are reported by the next run. */
static void cuda_write(RtRank *r, int v, const void *host)
{
	Dev *d = r->mem;
	cudaSetDevice(d->device);
	int64_t n = value_numel(r, v);
	int ty = dt(r, v);
	if (ty == MGL_BF16) {
		uint16_t *h = mgl_xmalloc((size_t)n * 2, "a value's bf16 copy");
		rt_f32_to_bf16(h, host, (size_t)n);
		cudaMemcpy(P(r, v), h, (size_t)n * 2, cudaMemcpyHostToDevice);
		free(h);
		return;
	}
	cudaMemcpy(P(r, v), host, (size_t)n * 4, cudaMemcpyHostToDevice);
	if (val(r, v)->role == MGL_V_PARAM) {
		uint16_t *h = mgl_xmalloc((size_t)n * 2, "a parameter's bf16 copy");
		rt_f32_to_bf16(h, host, (size_t)n);
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
		uint16_t *h = mgl_xmalloc((size_t)n * 2, "a value's bf16 copy");
		cudaMemcpy(h, P(r, v), (size_t)n * 2, cudaMemcpyDeviceToHost);
		rt_bf16_to_f32(host, h, (size_t)n);
		free(h);
		return;
	}
	cudaMemcpy(host, P(r, v), (size_t)n * 4, cudaMemcpyDeviceToHost);
}

/* the gradients that the first micro-batch does not write whole (RtJob.grad_zero), on the
 * compute stream (the runs' order) */
static void cuda_zero_grads(RtRank *r)
{
	Dev *d = r->mem;
	cudaSetDevice(d->device);
	const MglPlan *p = r->job->plan;
	if (r->job->nmicro > 1) {   /* interleaved: every gradient, in one memset */
		cudaMemsetAsync(d->region[MGL_V_GRAD], 0, (size_t)p->persistent_bytes[MGL_V_GRAD], d->compute);
		return;
	}
	for (int i = 0; i < p->nparams; i++)
		if (r->job->grad_zero[i])
			cudaMemsetAsync(P(r, p->params[i].grad), 0, (size_t)p->values[p->params[i].grad].bytes, d->compute);
}

static double cuda_peek(RtRank *r, int v, int64_t i)
{
	Dev *d = r->mem;
	cudaSetDevice(d->device);
	if (dt(r, v) == MGL_BF16) {
		uint16_t h = 0;
		float f;
		cudaMemcpy(&h, (uint16_t *)P(r, v) + i, 2, cudaMemcpyDeviceToHost);
		rt_bf16_to_f32(&f, &h, 1);
		return f;
	}
	float f = 0;
	cudaMemcpy(&f, (float *)P(r, v) + i, 4, cudaMemcpyDeviceToHost);
	return f;
}

/* What mgl allocated on the rank's device, and what is in use there by everything
 * (cudaMemGetInfo; -1 if it cannot say). */
static void cuda_memory(RtRank *r, int64_t *allocated, int64_t *device_used)
{
	Dev *d = r->mem;
	size_t free_b = 0, total_b = 0;
	*allocated = d->allocated;
	*device_used = cudaSetDevice(d->device) == cudaSuccess && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess
			       ? (int64_t)(total_b - free_b)
			       : -1;
}

/* The memory in use is read before the GEMM's test, which allocates its matrices for a
 * moment. */
static void cuda_machine(RtRank *r, RtMachine *m)
{
	enum { N = 8192 };   /* as PyTorch's benchmarks of the card measure it */
	Dev *d = r->mem;
	memset(m, 0, sizeof *m);
	struct cudaDeviceProp prop;
	snprintf(m->device, sizeof m->device, "GPU %d", d->device);
	if (cudaSetDevice(d->device) == cudaSuccess && cudaGetDeviceProperties(&prop, d->device) == cudaSuccess)
		snprintf(m->device, sizeof m->device, "%.127s", prop.name);
	cuda_memory(r, &m->allocated, &m->device_used);
	m->gemm_flops = cuda_gemm_rate(r, N);
	if (m->gemm_flops > 0)
		snprintf(m->gemm_what, sizeof m->gemm_what, "cuBLASLt bf16 GEMM %d^3, fp32 accumulation, median of 20", N);
	else
		snprintf(m->gemm_what, sizeof m->gemm_what, "not measured: %.150s", r->err);
}

const RtBackend rt_cuda_backend = {"cuda", cuda_open, cuda_close, cuda_run, cuda_micro, cuda_write, cuda_read, cuda_zero_grads, cuda_peek,
				   cuda_runs, cuda_machine, cuda_memory};

int rt_cuda_devices(void)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess)
		return 0;
	return n;
}
