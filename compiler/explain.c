/* compiler/explain.c — what a plan costs, per rank: parameters, FLOPs, collectives (per
 * Transformer layer and for the whole model), bytes communicated, and memory. `mgl
 * explain` prints it; the tests assert it (two all-reduces forward and two backward a
 * layer; the activations a layer keeps against Megatron's formula).
 *
 * FLOPs count the matrix products, as papers do: 2 M N K for each GEMM (forward, and the
 * two of the backward), 4 b s^2 d for attention's two products forward (the causal mask
 * is not discounted) and twice that backward. Communication counts what one rank sends
 * with ring algorithms: 2 n (t-1)/t for an all-reduce of n bytes, n (t-1)/t for an
 * all-gather or reduce-scatter of a tensor of n bytes (gathered size).
 */
#include "mgl.h"

#include <string.h>


static int coll_kind(MglOp op)
{
	return op == MGL_OP_ALL_REDUCE ? MGL_AR : op == MGL_OP_ALL_GATHER ? MGL_AG : op == MGL_OP_REDUCE_SCATTER ? MGL_RS : -1;
}

static double step_flops(const MglPlan *p, const MglStep *s)
{
	const MglValue *v = p->values;
	switch (s->op) {
	case MGL_OP_MATMUL: {
		const MglValue *x = &v[s->in[0]];
		return 2.0 * (double)mgl_numel(&v[s->out[0]]) * (double)x->shape[x->rank - 1];
	}
	case MGL_OP_MATMUL_DX: {
		const MglValue *dy = &v[s->in[0]];
		return 2.0 * (double)mgl_numel(&v[s->out[0]]) * (double)dy->shape[dy->rank - 1];
	}
	case MGL_OP_MATMUL_DW: {
		const MglValue *dy = &v[s->in[0]];
		return 2.0 * (double)mgl_numel(&v[s->out[0]]) * (double)(mgl_numel(dy) / dy->shape[dy->rank - 1]);
	}
	case MGL_OP_ATTENTION:
	case MGL_OP_ATTENTION_BWD:
	case MGL_OP_ATTENTION_BWD_QKV: {
		const MglValue *q = &v[s->in[s->op == MGL_OP_ATTENTION ? 0 : 1]];
		double f = 4.0 * (double)q->shape[0] * (double)q->shape[1] * (double)q->shape[1] * (double)q->shape[2];
		return s->op == MGL_OP_ATTENTION ? f : 2 * f;
	}
	default:
		return 0;
	}
}

void mgl_explain(MglArena *a, const MglPlan *p, MglExplain *e)
{
	memset(e, 0, sizeof *e);
	int L = p->nlayers;
	e->per_layer = mgl_alloc(a, (size_t)(L + 1) * sizeof *e->per_layer);
	e->act_per_layer = mgl_alloc(a, (size_t)(L + 1) * sizeof *e->act_per_layer);
	for (int i = 0; i < p->nparams; i++) {
		int64_t n = 1;
		for (int k = 0; k < p->params[i].rank; k++)
			n *= p->params[i].shape[k];
		e->params_total += n;
		e->params_per_rank += mgl_numel(&p->values[p->params[i].value]);
	}
	int *last_phase = mgl_alloc(a, (size_t)p->nvalues * sizeof *last_phase);
	int *made_by = mgl_alloc(a, (size_t)p->nvalues * sizeof *made_by);
	for (int i = 0; i < p->nvalues; i++)
		last_phase[i] = made_by[i] = -1;
	for (int i = 0; i < p->nsteps; i++) {
		const MglStep *s = &p->steps[i];
		for (int k = 0; k < s->nin; k++)
			last_phase[s->in[k]] = s->phase;
		for (int k = 0; k < s->nout; k++)
			if (made_by[s->out[k]] < 0)
				made_by[s->out[k]] = i;
		double f = step_flops(p, s);
		if (s->phase == MGL_FWD)
			e->flops_fwd += f;
		else
			e->flops_bwd += f;
		int kind = coll_kind(s->op);
		if (kind < 0)
			continue;
		int64_t bytes = 0;
		for (int k = 0; k < s->nout; k++)
			bytes += mgl_numel(&p->values[s->out[k]]) * mgl_dtype_size[p->values[s->out[k]].dtype];
		int t = s->attr.group == MGL_GROUP_TP ? p->tp : p->dp;
		if (kind == MGL_RS && s->attr.group == MGL_GROUP_TP)
			bytes *= t;   /* the tensor reduced is tp times this rank's shard (ZeRO's, over dp, is in place) */
		int64_t sent = (int64_t)((kind == MGL_AR ? 2.0 : 1.0) * (double)bytes * (t - 1) / t);
		bool once = s->phase == MGL_OPT;   /* or a reduction of a gradient buffer (backend.h's convention) */
		for (int k = 0; k < s->nout; k++)
			once |= p->values[s->out[k]].role == MGL_V_GRAD;
		e->comm_bytes += sent;
		e->comm_bytes_once += once ? sent : 0;
		e->ncoll++;
		e->ncoll_once += once;
		int ph = s->phase;
		if (s->attr.group == MGL_GROUP_DP) {
			e->dp_buckets += s->phase == MGL_BWD;   /* the gradients' (ZeRO-1 adds the norm's, the weights') */
			continue;
		}
		e->total[ph][kind]++;
		if (s->layer >= 0 && s->layer < L)
			e->per_layer[s->layer][ph == MGL_FWD ? 0 : 1][kind]++;
	}
	/* activations a layer keeps for the backward pass: made forward, read backward */
	for (int v = 0; v < p->nvalues; v++) {
		const MglValue *x = &p->values[v];
		if (x->role != MGL_V_ACT || made_by[v] < 0 || last_phase[v] != MGL_BWD)
			continue;
		const MglStep *s = &p->steps[made_by[v]];
		if (s->phase == MGL_FWD && s->layer >= 0 && s->layer < L)
			e->act_per_layer[s->layer] += mgl_numel(x) * mgl_dtype_size[x->dtype];
	}
	int64_t n = e->params_per_rank;
	e->mem_weights = n * 4 + (p->act_dtype == MGL_BF16 ? n * 2 : 0);   /* fp32 master (+ bf16 copy) */
	e->mem_grads = p->persistent_bytes[MGL_V_GRAD];
	e->mem_optimizer = p->persistent_bytes[MGL_V_STATE];
	e->mem_activations = p->arena_bytes;
	e->mem_peak = e->mem_weights + e->mem_grads + e->mem_optimizer + e->mem_activations;
}

/* the micro-batches past the first run their collectives again, the once-a-step ones not */
double mgl_comm_bytes(const MglExplain *e, int64_t accum)
{
	return (double)e->comm_bytes + (double)(e->comm_bytes - e->comm_bytes_once) * (double)(accum - 1);
}

double mgl_comm_seconds(const MglExplain *e, int64_t accum, double gbs, double us)
{
	double n = e->ncoll + (e->ncoll - e->ncoll_once) * (double)(accum - 1);
	return n * us * 1e-6 + mgl_comm_bytes(e, accum) / (gbs * 1e9);
}
