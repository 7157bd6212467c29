/* runtime/exec.c — a job: tp x dp ranks running one plan, one thread per rank.
 *
 * Rank numbering: rank = dp_rank * tp + tp_rank, so a tensor-parallel group is tp
 * consecutive ranks (on GPUs: neighbours on one host, where NVLink is). The job creates
 * the groups' exchanges, opens every rank on the backend, and for each call of
 * rt_job_run starts a thread per rank that runs the plan's steps of the asked phases;
 * the first rank to fail stops the call with its message.
 *
 * Parameters cross between the host and the ranks whole: rt_param_set cuts a full tensor
 * into each rank's shard (the split dimension divided by tp, vocabulary padding zero),
 * rt_param_get puts the shards of dp rank 0 back together (rt_param_gather: in one process).
 *
 * Launched as processes (launch.c), each process holds the whole job's numbering but opens
 * and runs one rank, [first, last); its groups reach the other processes through the
 * channel's (MPI's) groups where it has them, and what the host reads of another process's
 * rank comes over the channel (rt_param_get, rt_job_share).
 */
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A group of `size` members of which `here` are in this process; net: the group between
 * processes, or NULL. */
static void comm_init(RtComm *c, int size, int here, void *net)
{
	c->size = size;
	pthread_barrier_init(&c->barrier, NULL, (unsigned)here);
	c->slots = mgl_xcalloc((size_t)size, sizeof *c->slots, "a group's exchange");
	c->net = net;
}

/* The processes' checks: one rank a process, and a tp group inside a node (its ranks
 * consecutive, so the node's local ranks must keep step with the job's); not ZeRO-1 yet,
 * whose checkpoints gather the dp ranks' pieces from this process's memory. */
static int check_procs(const RtJob *j, char *err, size_t errlen)
{
	const RtProcs *pr = rt_procs();
	if (j->plan->zero) {
		rt_errf(err, errlen, "--zero 1 runs with the job's ranks in one process for now (threads, or GPUs of one "
			"process): start it without a launcher");
		return -1;
	}
	if (pr->size != j->nranks) {
		rt_errf(err, errlen, "%s started %d processes for a job of %d rank%s (tp %d x dp %d): start one process a rank, "
			"or one process without a launcher (its ranks as threads)", pr->launcher, pr->size, j->nranks,
			j->nranks == 1 ? "" : "s", j->tp, j->dp);
		return -1;
	}
	if (pr->local_rank % j->tp != pr->rank % j->tp) {
		rt_errf(err, errlen, "rank %d is local rank %d of its node: its tp group (ranks %d to %d) would span two nodes; "
			"place a multiple of tp %d consecutive ranks on each node (docs/multinode.md)", pr->rank, pr->local_rank,
			pr->rank / j->tp * j->tp, pr->rank / j->tp * j->tp + j->tp - 1, j->tp);
		return -1;
	}
	return 0;
}

void rt_run_parts(void *(*fn)(void *), void *parts, size_t size, int k)
{
	pthread_t th[RT_PARTS_MAX];
	bool started[RT_PARTS_MAX] = {false};
	char *at = parts;
	k = k < RT_PARTS_MAX ? k : RT_PARTS_MAX;
	for (int i = 1; i < k; i++)
		started[i] = !pthread_create(&th[i], NULL, fn, at + (size_t)i * size);
	fn(at);
	for (int i = 1; i < k; i++)
		if (started[i])
			pthread_join(th[i], NULL);
		else
			fn(at + (size_t)i * size);
}

RtJob *rt_job_open(const MglPlan *p, const RtBackend *be, char *err, size_t errlen)
{
	return rt_job_open_micro(p, be, 1, err, errlen);
}

/* RtJob.grad_first and grad_zero. A step's output of role GRAD is a first write where no
 * earlier step of the plan (the order every backend runs them in, one micro-batch at a
 * time) writes any of its bytes, the step is no collective (those reduce what is there)
 * and does not read it. Zeroing every gradient before each optimizer step cost a memset
 * of them all (4.8 GB at 1.2b) and each weight-gradient GEMM a read of what it added to. */
static int grad_writes(RtJob *j, char *err, size_t errlen)
{
	const MglPlan *p = j->plan;
	int64_t nout = 0;
	for (int s = 0; s < p->nsteps; s++)
		nout += p->steps[s].nout;
	j->grad_first = calloc((size_t)p->nsteps + 1, sizeof *j->grad_first);
	j->grad_zero = calloc((size_t)p->nparams + 1, sizeof *j->grad_zero);
	int64_t (*w)[2] = calloc((size_t)nout + 1, sizeof *w);   /* the byte ranges of the gradients' writes so far */
	int64_t nw = 0;
	if (!j->grad_first || !j->grad_zero || !w) {
		free(w);
		rt_errf(err, errlen, "out of host memory: the gradients' first writes (%d steps)", p->nsteps);
		return -1;
	}
	for (int s = 0; s < p->nsteps && j->nmicro == 1; s++) {
		const MglStep *st = &p->steps[s];
		for (int k = 0; k < st->nout; k++) {
			const MglValue *v = &p->values[st->out[k]];
			if (v->role != MGL_V_GRAD)
				continue;
			bool first = k < 32 && !(mgl_ops[st->op].flags & MGL_OPF_COLLECTIVE);
			for (int i = 0; first && i < st->nin; i++)
				first = st->in[i] != st->out[k];
			for (int64_t i = 0; first && i < nw; i++)
				first = v->offset + v->bytes <= w[i][0] || w[i][1] <= v->offset;
			if (first)
				j->grad_first[s] |= 1u << k;
			w[nw][0] = v->offset;
			w[nw++][1] = v->offset + v->bytes;
		}
	}
	for (int i = 0; i < p->nparams; i++) {   /* a gradient inside a first write's bytes is written whole */
		const MglValue *g = &p->values[p->params[i].grad];
		bool covered = false;
		for (int s = 0; s < p->nsteps && !covered; s++)
			for (int k = 0; k < p->steps[s].nout && k < 32 && !covered; k++) {
				const MglValue *v = &p->values[p->steps[s].out[k]];
				covered = j->grad_first[s] >> k & 1 && v->offset <= g->offset && g->offset + g->bytes <= v->offset + v->bytes;
			}
		j->grad_zero[i] = !covered;
	}
	free(w);
	return 0;
}

RtJob *rt_job_open_micro(const MglPlan *p, const RtBackend *be, int nmicro, char *err, size_t errlen)
{
	RtJob *j = calloc(1, sizeof *j);
	if (!j) {
		rt_errf(err, errlen, "out of host memory: the job (%s bytes)", mgl_commas((int64_t)sizeof *j, (char[32]){0}));
		return NULL;
	}
	j->plan = p;
	j->be = be;
	j->nmicro = nmicro;
	j->tp = p->tp;
	j->dp = p->dp;
	j->nranks = p->tp * p->dp;
	j->ranks = calloc((size_t)j->nranks, sizeof *j->ranks);
	j->comms = calloc((size_t)(j->dp + j->tp), sizeof *j->comms);
	if (!j->ranks || !j->comms) {
		size_t bytes = (size_t)j->nranks * sizeof *j->ranks + (size_t)(j->dp + j->tp) * sizeof *j->comms;
		rt_errf(err, errlen, "out of host memory: the job's %d ranks (%s bytes)", j->nranks,
			mgl_commas((int64_t)bytes, (char[32]){0}));
		rt_job_close(j);
		return NULL;
	}
	if (grad_writes(j, err, errlen)) {
		rt_job_close(j);
		return NULL;
	}
	j->net = rt_net();
	j->first = j->net ? rt_procs()->rank : 0;
	j->last = j->net ? j->first + 1 : j->nranks;
	if (j->net && check_procs(j, err, errlen)) {
		j->first = j->last = 0;
		rt_job_close(j);
		return NULL;
	}
	for (int r = 0; r < j->nranks; r++) {
		RtRank *k = &j->ranks[r];
		k->job = j;
		k->rank = r;
		k->tp_rank = r % j->tp;
		k->dp_rank = r / j->tp;
		k->tp = &j->comms[k->dp_rank];
		k->dp = &j->comms[j->dp + k->tp_rank];
	}
	if (!j->net) {
		for (int i = 0; i < j->dp; i++)
			comm_init(&j->comms[i], j->tp, j->tp, NULL);
		for (int i = 0; i < j->tp; i++)
			comm_init(&j->comms[j->dp + i], j->dp, j->dp, NULL);
	} else {   /* this process's two groups; every process splits the world alike */
		RtRank *k = &j->ranks[j->first];
		bool g = rt_net_groups(j->net);
		comm_init(k->tp, j->tp, 1, g ? rt_net_group(j->net, k->dp_rank, k->tp_rank) : NULL);
		comm_init(k->dp, j->dp, 1, g ? rt_net_group(j->net, j->dp + k->tp_rank, k->dp_rank) : NULL);
	}
	for (int r = j->first; r < j->last; r++) {
		RtRank *k = &j->ranks[r];
		if (be->open(k)) {
			snprintf(err, errlen, "%s", k->err);   /* backends name the rank where it matters */
			for (int q = j->first; q < r; q++)
				be->close(&j->ranks[q]);
			j->first = j->last = 0;
			rt_job_close(j);
			return NULL;
		}
	}
	return j;
}

void rt_job_close(RtJob *j)
{
	if (!j)
		return;
	for (int r = j->first; r < j->last; r++)
		j->be->close(&j->ranks[r]);
	for (int i = 0; j->comms && i < j->dp + j->tp; i++) {
		if (j->comms[i].slots)
			pthread_barrier_destroy(&j->comms[i].barrier);
		free(j->comms[i].slots);
		free(j->comms[i].gathered);
	}
	free(j->comms);
	free(j->ranks);
	free(j->grad_first);
	free(j->grad_zero);
	free(j);
}

typedef struct {
	RtRank *r;
	unsigned phases;
	const RtRun *run;
	int n;   /* micro-batches */
} Work;

static void *rank_main(void *arg)
{
	Work *w = arg;
	w->r->failed = w->r->job->be->run(w->r, 0, w->r->job->plan->nsteps, w->phases, w->run, w->n) != 0;
	return NULL;
}

static int job_run(RtJob *j, unsigned phases, const RtRun *run, int n, char *err, size_t errlen)
{
	if (j->last - j->first == 1) {
		Work w = {&j->ranks[j->first], phases, run, n};
		rank_main(&w);
	} else {
		pthread_t *th = mgl_xcalloc((size_t)j->nranks, sizeof *th, "the ranks' threads");
		Work *w = mgl_xcalloc((size_t)j->nranks, sizeof *w, "the ranks' work");
		for (int r = j->first; r < j->last; r++) {
			w[r] = (Work){&j->ranks[r], phases, run, n};
			pthread_create(&th[r], NULL, rank_main, &w[r]);
		}
		for (int r = j->first; r < j->last; r++)
			pthread_join(th[r], NULL);
		free(th);
		free(w);
	}
	for (int r = j->first; r < j->last; r++)
		if (j->ranks[r].failed) {
			snprintf(err, errlen, "%s", j->ranks[r].err);
			return -1;
		}
	return 0;
}

int rt_job_run(RtJob *j, unsigned phases, const RtRun *run, char *err, size_t errlen)
{
	return job_run(j, phases, run, 1, err, errlen);
}

int rt_job_run_micro(RtJob *j, unsigned phases, const RtRun *run, char *err, size_t errlen)
{
	return job_run(j, phases, run, j->nmicro, err, errlen);
}

void rt_job_micro(RtJob *j, int k)
{
	for (int r = j->first; r < j->last; r++)
		j->be->micro(&j->ranks[r], k);
}

void rt_job_share(RtJob *j, double *v, int n)
{
	if (!j->net)
		return;
	size_t row = (size_t)n * sizeof *v;
	double *all = mgl_xmalloc(row * (size_t)j->nranks, "the ranks' shared values");
	rt_net_allgather(j->net, v + (size_t)j->first * (size_t)n, row, all);   /* a rank a process: row r is rank r's */
	memcpy(v, all, row * (size_t)j->nranks);
	free(all);
}

int rt_value(const MglPlan *p, const char *name)
{
	for (int v = 0; v < p->nvalues; v++)
		if (!strcmp(p->values[v].name, name))
			return v;
	return -1;
}

/* ---------------------------------------------------------------- parameters */

static int pick(const MglPlanParam *q, int which)
{
	return which == RT_PARAM_M ? q->m : which == RT_PARAM_V ? q->v : which == RT_PARAM_GRAD ? q->grad : q->value;
}

/* The padded tensor as [outer, n, inner] around the split dimension. */
static void split_geometry(const MglPlanParam *q, int64_t *outer, int64_t *n, int64_t *inner)
{
	int sd = q->split_dim >= 0 ? q->split_dim : 0;
	*outer = *inner = 1;
	*n = q->rank ? (sd == 0 ? q->padded : q->shape[sd]) : 1;
	for (int i = 0; i < sd; i++)
		*outer *= i == 0 ? q->padded : q->shape[i];
	for (int i = sd + 1; i < q->rank; i++)
		*inner *= q->shape[i];
}

static int64_t padded_numel(const MglPlanParam *q)
{
	int64_t n = 1;
	for (int i = 0; i < q->rank; i++)
		n *= i == 0 ? q->padded : q->shape[i];
	return n;
}

/* Copies between a full padded tensor and tp rank t's shard (to_shard: full -> shard). */
static void shard_copy(const MglPlanParam *q, int tp, int t, float *full, float *shard, bool to_shard)
{
	int64_t outer, n, inner;
	split_geometry(q, &outer, &n, &inner);
	bool split = q->split_dim >= 0 && tp > 1;
	int64_t local = split ? n / tp : n, start = split ? (int64_t)t * local : 0;
	for (int64_t o = 0; o < outer; o++) {
		float *f = full + (o * n + start) * inner, *s = shard + o * local * inner;
		if (to_shard)
			memcpy(s, f, (size_t)(local * inner) * sizeof *s);
		else
			memcpy(f, s, (size_t)(local * inner) * sizeof *s);
	}
}

/* n zeroed floats for a parameter's copy in host memory, or the process ends with the
 * error: the gathers and scatters below are collectives between processes, which a rank
 * cannot leave half way, and whose peers see its exit (launch.c). */
static float *floats_or_exit(int64_t n)
{
	return mgl_xcalloc((size_t)(n > 0 ? n : 1), sizeof(float), "a parameter's values");
}

/* Under ZeRO-1 the moments (and the summed gradient) of tp rank t's shard of n elements
 * are in pieces over its dp group (plan.h: mgl_zero_piece): shard gets them all, from the
 * moments (each rank's piece from their start) or the gradients (at the piece's place). */
static void zero_gather(RtJob *j, const MglPlanParam *q, int which, int t, float *shard)
{
	int v = pick(q, which);
	int64_t n = mgl_numel(&j->plan->values[q->value]);
	float *buf = floats_or_exit(mgl_numel(&j->plan->values[v]));
	for (int d = 0; d < j->dp; d++) {
		int64_t start, len = mgl_zero_piece(n, j->dp, d, &start);
		j->be->read(&j->ranks[d * j->tp + t], v, buf);
		memcpy(shard + start, buf + (which == RT_PARAM_GRAD ? start : 0), (size_t)len * sizeof *buf);
	}
	free(buf);
}

static bool zero_pieces(const RtJob *j, int which) { return j->plan->zero && which != RT_PARAM_VALUE; }

void rt_param_get(RtJob *j, int i, int which, float *out) { rt_param_gather(j, i, which, out, -1); }

void rt_param_gather(RtJob *j, int i, int which, float *out, int to)
{
	bool here = !j->net || to < 0 || to == j->first;   /* whether this process gets it */
	const MglPlanParam *q = &j->plan->params[i];
	int64_t local = mgl_numel(&j->plan->values[q->value]);   /* the tp shard: the moments may be a piece of it */
	float *full = here ? floats_or_exit(padded_numel(q)) : NULL;
	float *shard = floats_or_exit(local);   /* a sender's, and rank 0's to pass on */
	for (int t = 0; t < (q->split_dim >= 0 ? j->tp : 1); t++) {
		if (zero_pieces(j, which))   /* every dp rank's piece: all in this process (rt_job_open) */
			zero_gather(j, q, which, t, shard);
		else if (t >= j->first && t < j->last)
			j->be->read(&j->ranks[t], pick(q, which), shard);
		if (j->net && to < 0)   /* from the process of rank t to every process, or to one */
			rt_net_bcast(j->net, shard, (size_t)local * sizeof *shard, t);
		else if (j->net)
			rt_net_send(j->net, shard, (size_t)local * sizeof *shard, t, to);
		if (here)
			shard_copy(q, j->tp, t, full, shard, false);
	}
	if (here)
		memcpy(out, full, (size_t)mgl_param_numel(q) * sizeof *out);   /* padding rows are the last ones */
	free(full);
	free(shard);
}

void rt_param_set(RtJob *j, int i, int which, const float *in)
{
	const MglPlanParam *q = &j->plan->params[i];
	int64_t local = mgl_numel(&j->plan->values[q->value]), room = mgl_zero_chunk(local, j->dp) * j->dp;
	float *full = floats_or_exit(padded_numel(q)), *shard = floats_or_exit(room);
	memcpy(full, in, (size_t)mgl_param_numel(q) * sizeof *full);
	for (int r = j->first; r < j->last; r++) {
		shard_copy(q, j->tp, j->ranks[r].tp_rank, full, shard, true);
		int64_t start = 0;   /* ZeRO-1's moments: the rank's piece */
		if (j->plan->zero && (which == RT_PARAM_M || which == RT_PARAM_V))
			mgl_zero_piece(local, j->dp, j->ranks[r].dp_rank, &start);
		j->be->write(&j->ranks[r], pick(q, which), shard + start);
	}
	free(full);
	free(shard);
}
