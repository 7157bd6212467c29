/* runtime/cuda/host_comm.c — the plan's collectives through host memory, for ranks that
 * share a GPU.
 *
 * NCCL refuses two ranks of one communicator on one GPU ("Duplicate GPU detected"), so a
 * job of tp 2, 4 or 8 needs that many GPUs. With MGL_SHARE_GPU=1 (and no launcher: the
 * ranks are threads of this process) rank r runs on GPU r mod the GPUs visible, and each
 * collective goes through here instead: every member of the group copies its buffer to the
 * host, meets the others, computes its result from all of them in member order (sums in
 * double, rounded once to the value's type), meets them again and copies the result back.
 * It is what NCCL computes, not how fast: one GPU can then run every kernel of a tp 2, 4 or
 * 8 plan, which is what the GPU suite checks there (tests/gpu_check.sh, test_gpu). Never
 * for speed: each collective synchronises its stream, and the steps are not captured as a
 * CUDA graph.
 *
 * The groups are the job's (tp groups, then dp groups, as exec.c orders its RtComms), with
 * a meeting that a failing rank breaks (cuda_host_break): the others' collectives then fail
 * instead of waiting for it forever.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct CudaHostGroup {
	pthread_mutex_t lock;
	pthread_cond_t met;
	int size, arrived;
	unsigned long round;      /* meetings completed */
	bool broken;              /* a member failed: no meeting completes again */
	const double **slots;     /* [size]: each member's input, posted before the first meeting */
};

/* All the members of g here (0), or -1 once one of them failed. */
static int meet(CudaHostGroup *g)
{
	pthread_mutex_lock(&g->lock);
	unsigned long round = g->round;
	if (!g->broken && ++g->arrived == g->size) {
		g->arrived = 0;
		g->round++;
		pthread_cond_broadcast(&g->met);
	}
	while (!g->broken && g->round == round)
		pthread_cond_wait(&g->met, &g->lock);
	int rc = g->round == round ? -1 : 0;
	pthread_mutex_unlock(&g->lock);
	return rc;
}

CudaHostGroup *cuda_host_groups(const RtJob *j)
{
	int n = j->dp + j->tp;
	CudaHostGroup *g = calloc((size_t)n, sizeof *g);
	for (int i = 0; g && i < n; i++) {
		g[i].size = i < j->dp ? j->tp : j->dp;
		g[i].slots = calloc((size_t)g[i].size, sizeof *g[i].slots);
		pthread_mutex_init(&g[i].lock, NULL);
		pthread_cond_init(&g[i].met, NULL);
		if (!g[i].slots) {
			cuda_host_groups_free(g, j);
			return NULL;
		}
	}
	return g;
}

void cuda_host_groups_free(CudaHostGroup *g, const RtJob *j)
{
	for (int i = 0; g && i < j->dp + j->tp; i++) {
		free(g[i].slots);
		pthread_mutex_destroy(&g[i].lock);
		pthread_cond_destroy(&g[i].met);
	}
	free(g);
}

void cuda_host_join(RtRank *r, CudaHostGroup *g)
{
	Dev *d = r->mem;
	const RtJob *j = r->job;
	if (g && j->tp > 1)
		d->host_tp = &g[r->dp_rank];
	if (g && j->dp > 1)
		d->host_dp = &g[j->dp + r->tp_rank];
}

void cuda_host_break(CudaHostGroup *g, const RtJob *j)
{
	for (int i = 0; g && i < j->dp + j->tp; i++) {
		pthread_mutex_lock(&g[i].lock);
		g[i].broken = true;
		pthread_cond_broadcast(&g[i].met);
		pthread_mutex_unlock(&g[i].lock);
	}
}

/* The rank's host buffer, grown to `bytes`: d->host_buf, or NULL out of memory */
static double *host_buffer(RtRank *r, size_t bytes)
{
	Dev *d = r->mem;
	if (d->host_cap < bytes) {
		void *b = realloc(d->host_buf, bytes);
		if (!b) {
			cuda_fail(r, "out of host memory: a collective's copies through the host (%s bytes)",
				  mgl_commas((int64_t)bytes, (char[32]){0}));
			return NULL;
		}
		d->host_buf = b;
		d->host_cap = bytes;
	}
	return d->host_buf;
}

int cuda_host_collective(RtRank *r, bool dp, CudaColl kind, const void *in, void *out, size_t count, int dtype, bool max)
{
	Dev *d = r->mem;
	CudaHostGroup *g = dp ? d->host_dp : d->host_tp;
	int member = dp ? r->dp_rank : r->tp_rank, size = g->size;
	size_t nin = kind == CUDA_REDUCE_SCATTER ? count * (size_t)size : count;
	size_t nout = kind == CUDA_ALL_GATHER ? count * (size_t)size : count, es = (size_t)mgl_dtype_size[dtype];
	/* the inputs and results in double, and the bytes on the device */
	double *x = host_buffer(r, (nin + nout + (nin > nout ? nin : nout)) * sizeof *x);
	if (!x)
		return -1;
	double *y = x + nin;
	void *raw = y + nout;
	CK(cudaStreamSynchronize(d->comm));   /* the comm stream waited for the compute's writes (comm_begin) */
	CK(cudaMemcpyAsync(raw, in, nin * es, cudaMemcpyDeviceToHost, d->comm));
	CK(cudaStreamSynchronize(d->comm));
	for (size_t i = 0; i < nin; i++) {
		float f = 0;
		if (dtype == MGL_BF16)
			rt_bf16_to_f32(&f, (const uint16_t *)raw + i, 1);
		x[i] = dtype == MGL_F32 ? ((const float *)raw)[i] : dtype == MGL_I32 ? ((const int32_t *)raw)[i] : f;
	}
	g->slots[member] = x;
	if (meet(g))
		return cuda_fail(r, "a collective through the host: another rank of the group failed");
	for (size_t i = 0; i < nout; i++) {
		if (kind == CUDA_ALL_GATHER) {
			y[i] = g->slots[i / count][i % count];
			continue;
		}
		size_t at = kind == CUDA_REDUCE_SCATTER ? (size_t)member * count + i : i;
		double t = g->slots[0][at];
		for (int m = 1; m < size; m++) {
			double s = g->slots[m][at];
			t = !max ? t + s : s > t ? s : t;
		}
		y[i] = t;
	}
	if (meet(g))   /* everyone has read every input */
		return cuda_fail(r, "a collective through the host: another rank of the group failed");
	for (size_t i = 0; i < nout; i++) {
		if (dtype == MGL_I32)
			((int32_t *)raw)[i] = (int32_t)y[i];
		else if (dtype == MGL_F32)
			((float *)raw)[i] = (float)y[i];
		else
			rt_f32_to_bf16((uint16_t *)raw + i, &(float){(float)y[i]}, 1);
	}
	CK(cudaMemcpyAsync(out, raw, nout * es, cudaMemcpyHostToDevice, d->comm));
	CK(cudaStreamSynchronize(d->comm));
	return 0;
}
