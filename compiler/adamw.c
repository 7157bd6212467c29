/* compiler/adamw.c — the optimizer pass, after the backward pass: reduce the gradients,
 * take their norm, and update every parameter with AdamW.
 *
 * Gradients are reduced in buckets of about 25 MiB, in the order the backward pass
 * finishes them, and each bucket's collectives are placed right after the step that
 * completes it, so a runtime with a communication stream overlaps them with the rest of
 * the backward pass. A bucket first all-reduces over tp the gradients that came out as
 * partial sums (parameters kept whole but applied to a split sequence, under --sp), then
 * all-reduces everything over dp. Collectives here work in place on the gradient buffers.
 *
 * The norm for clipping: grad_norm sums the squares of this rank's gradients (a
 * replicated gradient is counted by tp rank 0 only, so the tp all-reduce that follows
 * counts it once), then adamw reads it with the clipping threshold it is run with.
 * Weight decay applies to parameters of two or more dimensions (not biases and norms).
 *
 * bf16 weight gradients (the target's bf16_grads, unless MGL_F32_GRADS is set): a gradient
 * that one matmul_dw writes whole, and that no collective reads, is kept in bf16, as
 * PyTorch's autocast rounds a linear's weight gradient (that of the weight's bf16 copy,
 * then converted to the fp32 .grad): its GEMM writes, and the norm and AdamW read, half
 * its bytes (1.2b's step 2.7-3.1 ms quicker: docs/perf-notes.md). Only for a run of one
 * micro-batch a step, where nothing is added into it after it is written (the runtime
 * checks).
 *
 * ZeRO stage 1 (p->zero, Rajbhandari et al. 2020; Megatron-LM's distributed optimizer):
 * each bucket is reduce-scattered over dp instead of all-reduced, so dp rank d holds the
 * sum of its piece of every gradient (plan.h: mgl_zero_piece); the AdamW moments are that
 * piece's alone; grad_norm sums the squares of the rank's pieces, and an all-reduce over dp
 * makes that the global norm; adamw updates the piece; one all-gather over dp after the
 * updates gives every rank the whole parameters again. The fp32 parameters stay whole on
 * every rank (the cpu backend computes with them, the cuda backend keeps its bf16 copy
 * next to them): what ZeRO-1 saves is the optimizer's state, divided by dp.
 */
#include "mgl.h"

#include <stdlib.h>
#include <string.h>

enum { BUCKET_BYTES = 25 << 20 };


static void collective(MglCtx *c, MglPlan *p, MglOp op, MglGroup group, const int *vals, int n, MglPhase ph)
{
	int s = mgl_emit(&c->arena, p, op, ph, vals, n, vals, n, NULL, -1);
	p->steps[s].attr.group = group;
	p->steps[s].attr.dim = 1;   /* its default: ZeRO's pieces are of the flat buffers */
}

typedef struct { int param, done; } Finish;

static int by_done(const void *a, const void *b)
{
	const Finish *x = a, *y = b;
	return x->done != y->done ? x->done - y->done : x->param - y->param;
}

/* The gradients that take bf16: their one writer a matmul_dw (a collective on them, in
 * place, would be a second; a tied weight's two uses are two) */
static void bf16_grads(MglPlan *p)
{
	for (int i = 0; i < p->nparams; i++) {
		int g = p->params[i].grad, writers = 0, last = -1;
		for (int s = 0; s < p->nsteps; s++)
			for (int k = 0; k < p->steps[s].nout; k++)
				if (p->steps[s].out[k] == g)
					writers++, last = s;
		if (writers == 1 && p->steps[last].op == MGL_OP_MATMUL_DW)
			p->values[g].dtype = MGL_BF16;
	}
}

void mgl_adamw(MglCtx *c, MglPlan *p, bool bf16)
{
	MglArena *a = &c->arena;
	int np = p->nparams;
	Finish *fin = mgl_alloc(a, (size_t)(np + 1) * sizeof *fin);
	int *grad_param = mgl_alloc(a, (size_t)p->nvalues * sizeof *grad_param);
	for (int v = 0; v < p->nvalues; v++)
		grad_param[v] = -1;
	for (int i = 0; i < np; i++) {
		fin[i] = (Finish){i, -1};
		grad_param[p->params[i].grad] = i;
	}
	for (int s = 0; s < p->nsteps; s++)
		for (int k = 0; k < p->steps[s].nout; k++)
			if (grad_param[p->steps[s].out[k]] >= 0)
				fin[grad_param[p->steps[s].out[k]]].done = s;
	qsort(fin, (size_t)np, sizeof *fin, by_done);

	/* buckets: [first, last) in fin, placed after step fin[last-1].done */
	int *bucket_end = mgl_alloc(a, (size_t)(np + 1) * sizeof *bucket_end);
	int nb = 0;
	int64_t bytes = 0;
	for (int i = 0; i < np; i++) {
		bytes += mgl_value_bytes(&p->values[p->params[fin[i].param].grad]);
		if (bytes >= BUCKET_BYTES || i == np - 1) {
			bucket_end[nb++] = i + 1;
			bytes = 0;
		}
	}

	MglStep *old = p->steps;
	int nold = p->nsteps;
	p->steps = NULL;
	p->nsteps = p->capsteps = 0;
	int *vals = mgl_alloc(a, (size_t)(np + 1) * sizeof *vals);
	int b = 0, first = 0;
	for (int s = -1; s < nold; s++) {
		if (s >= 0)
			MGL_PUSH(a, p->steps, p->nsteps, p->capsteps, old[s]);
		/* buckets complete at step s (a parameter that gets no gradient: at the start) */
		while (b < nb && fin[bucket_end[b] - 1].done <= s) {
			int n = 0;
			for (int i = first; i < bucket_end[b]; i++) {
				MglValue *g = &p->values[p->params[fin[i].param].grad];
				if (g->layout.kind == MGL_L_P && p->tp > 1)
					vals[n++] = p->params[fin[i].param].grad;
			}
			if (n)
				collective(c, p, MGL_OP_ALL_REDUCE, MGL_GROUP_TP, vals, n, MGL_BWD);
			for (int i = 0; i < n; i++)
				p->values[vals[i]].layout = (MglLayout){MGL_L_R, 0};
			if (p->dp > 1) {
				n = 0;
				for (int i = first; i < bucket_end[b]; i++)
					vals[n++] = p->params[fin[i].param].grad;
				collective(c, p, p->zero ? MGL_OP_REDUCE_SCATTER : MGL_OP_ALL_REDUCE, MGL_GROUP_DP, vals, n, MGL_BWD);
			}
			first = bucket_end[b++];
		}
	}
	for (int i = 0; i < np; i++) {   /* a P gradient with tp 1 is simply whole */
		MglValue *g = &p->values[p->params[i].grad];
		if (g->layout.kind == MGL_L_P)
			g->layout = (MglLayout){MGL_L_R, 0};
	}

	if (bf16 && p->dp == 1 && p->act_dtype == MGL_BF16 && !getenv("MGL_F32_GRADS"))   /* (docs/gpu.md) */
		bf16_grads(p);

	/* the global norm */
	for (int i = 0; i < np; i++)
		vals[i] = p->params[i].grad;
	int64_t scalar[1] = {0};
	int norm = mgl_new_value(a, p, "grad_norm", MGL_V_ACT, MGL_F32, 0, scalar);
	p->values[norm].layout = (MglLayout){p->tp > 1 ? MGL_L_P : MGL_L_R, 0};
	mgl_emit(a, p, MGL_OP_GRAD_NORM, MGL_OPT, vals, np, &norm, 1, NULL, -1);
	for (int g = MGL_GROUP_TP; g <= MGL_GROUP_DP; g++) {   /* summed over tp, then (ZeRO's pieces) dp */
		if ((g == MGL_GROUP_TP ? p->tp : p->zero ? p->dp : 1) == 1)
			continue;
		int r = mgl_new_value(a, p, g == MGL_GROUP_TP ? "grad_norm@R" : "grad_norm@dp", MGL_V_ACT, MGL_F32, 0, scalar);
		int s = mgl_emit(a, p, MGL_OP_ALL_REDUCE, MGL_OPT, &norm, 1, &r, 1, NULL, -1);
		p->steps[s].attr.group = (MglGroup)g;
		norm = r;
	}

	/* AdamW, one step per parameter shard (ZeRO-1: per piece of one) */
	for (int i = 0; i < np; i++) {
		MglPlanParam *pp = &p->params[i];
		const MglValue *w = &p->values[pp->value];
		int64_t piece[1] = {mgl_zero_chunk(mgl_numel(w), p->dp)};
		int rank = p->zero ? 1 : w->rank;
		const int64_t *shape = p->zero ? piece : w->shape;
		pp->m = mgl_new_value(a, p, mgl_fmt(a, "m:%s", pp->name), MGL_V_STATE, MGL_F32, rank, shape);
		pp->v = mgl_new_value(a, p, mgl_fmt(a, "v:%s", pp->name), MGL_V_STATE, MGL_F32, rank, shape);
		w = &p->values[pp->value];
		/* a piece is flat: no tp layout of its own (the parameter's split says whose it is) */
		p->values[pp->m].layout = p->values[pp->v].layout = p->zero ? (MglLayout){MGL_L_R, 0} : w->layout;
		p->values[pp->m].param = p->values[pp->v].param = i;
		int in[5] = {pp->value, pp->grad, pp->m, pp->v, norm}, out[3] = {pp->value, pp->m, pp->v};
		int s = mgl_emit(a, p, MGL_OP_ADAMW, MGL_OPT, in, 5, out, 3, NULL, -1);
		p->steps[s].attr.decay = pp->rank >= 2;
		p->steps[s].line = pp->line;
		p->steps[s].col = pp->col;
	}
	if (p->zero) {   /* every rank's updated pieces to every rank */
		for (int i = 0; i < np; i++)
			vals[i] = p->params[i].value;
		collective(c, p, MGL_OP_ALL_GATHER, MGL_GROUP_DP, vals, np, MGL_OPT);
	}
}
