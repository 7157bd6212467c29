/* compiler/schedule.c — orders the steps for overlap: each collective moves up to just
 * after the last step it depends on, and the steps before it that it does not depend on
 * (weight-gradient GEMMs, bias gradients) move down past it, so that they run while it
 * communicates: a runtime that issues collectives on a stream of their own and makes the
 * compute wait for one only at the first step that needs it (mgl_collective_waits in
 * plan/plan.c) runs the backward all-reduce of a column-parallel layer's input gradient
 * under that layer's weight-gradient GEMMs, as Megatron-LM overlaps them. For attention's
 * q, k and v, autodiff emits each linear's dx and dW in turn and the all-reduce needs all
 * three dx: moving the collective up alone would leave only q's dW after it.
 *
 * Collective c first moves to just after the last earlier step that writes one of its
 * inputs or outputs (gradients are reduced in place, and written by several steps) or
 * reads one of its outputs; never before the first step of its phase, nor before an
 * earlier collective (every rank issues them in the same order, whatever the plan, but
 * keeping theirs is what the comm stream would do anyway). Then, of the steps between the
 * last collective and c, those c does not depend on, directly or through another of them,
 * go after c, in their order. Dependence (depends) is any shared value one of the two
 * writes, so neither move lets a step see a value before it is made or after it is
 * overwritten.
 *
 * First, each gelu_bwd moves up to just after the matmul_dx that makes its gradient input,
 * past the steps between that it does not depend on (autodiff puts the same layer's
 * matmul_dw there): fuse.c can then make the two one GEMM with cuBLASLt's DGELU epilogue.
 *
 * Last, each bias_grad goes to just after the matmul_dw that reads the same output
 * gradient dy (a linear's db = the column sums of dy, its dW = x^T dy): fuse.c makes the
 * two one GEMM whose epilogue sums the bias gradient (cuBLASLt's BGRADB), reading dy once
 * instead of twice. Autodiff emits a linear's bias_grad before its matmul_dx and matmul_dw;
 * the bias_grad moves only past steps of its phase that it does not depend on, nor they on
 * it (depends, again), so the order stays a correct one; where some step is in the way it
 * stays where it was, and runs apart.
 *
 * Runs before fuse.c (it moves steps, and the fused groups' indices are positions) and
 * memplan.c (lifetimes follow the order).
 */
#include "mgl.h"

#include <stdlib.h>
#include <string.h>

static bool has(const int *v, int n, int x)
{
	for (int i = 0; i < n; i++)
		if (v[i] == x)
			return true;
	return false;
}

/* Whether step c must stay after step s. */
static bool depends(const MglStep *c, const MglStep *s)
{
	for (int k = 0; k < s->nout; k++)
		if (has(c->in, c->nin, s->out[k]) || has(c->out, c->nout, s->out[k]))
			return true;
	for (int k = 0; k < s->nin; k++)
		if (has(c->out, c->nout, s->in[k]))
			return true;
	return false;
}

/* Steps [from, c) of p that collective c does not depend on, through any chain of them,
 * moved after c (order kept within each side); returns c's new index. */
static int sink_independent(MglPlan *p, int from, int c)
{
	int n = c - from + 1, kept = 0, moved = 0;
	bool *need = calloc((size_t)n, sizeof *need);
	MglStep *tmp = malloc((size_t)n * sizeof *tmp);
	if (!need || !tmp) {   /* an order without this overlap is still a correct one */
		free(need);
		free(tmp);
		return c;
	}
	need[n - 1] = true;
	for (int s = c - 1; s >= from; s--)
		for (int u = s + 1; u <= c && !need[s - from]; u++)
			need[s - from] = need[u - from] && depends(&p->steps[u], &p->steps[s]);
	for (int s = from; s <= c; s++)
		if (need[s - from])
			tmp[kept++] = p->steps[s];
	for (int s = from; s <= c; s++)
		if (!need[s - from])
			tmp[kept + moved++] = p->steps[s];
	memcpy(&p->steps[from], tmp, (size_t)n * sizeof *tmp);
	free(need);
	free(tmp);
	return from + kept - 1;
}

/* Step `from` moved to index `to`, the steps between shifting by one, if it may pass each
 * of them (same phase, no dependence either way: depends is symmetric); false, nothing
 * moved, if not. */
static bool move_step(MglPlan *p, int from, int to)
{
	int lo = from < to ? from + 1 : to, hi = from < to ? to : from - 1;
	for (int k = lo; k <= hi; k++)
		if (p->steps[k].phase != p->steps[from].phase || depends(&p->steps[k], &p->steps[from]))
			return false;
	MglStep x = p->steps[from];
	if (from < to)
		memmove(&p->steps[from], &p->steps[from + 1], (size_t)(to - from) * sizeof x);
	else
		memmove(&p->steps[to + 1], &p->steps[to], (size_t)(from - to) * sizeof x);
	p->steps[to] = x;
	return true;
}

/* Each bias_grad to just after the first matmul_dw of its phase reading its dy where it
 * may go there (the file's last paragraph). */
static void bias_grads_after_weight_grads(MglPlan *p)
{
	for (int b = 0; b < p->nsteps; b++) {
		const MglStep *g = &p->steps[b];
		if (g->op != MGL_OP_BIAS_GRAD || g->nin != 1)
			continue;
		for (int m = 0; m < p->nsteps; m++) {
			const MglStep *w = &p->steps[m];
			if (w->op != MGL_OP_MATMUL_DW || w->nin < 1 || w->in[0] != g->in[0] || w->phase != g->phase)
				continue;
			int to = m < b ? m + 1 : m;   /* where the bias_grad lands: right after it */
			if (to == b || move_step(p, b, to)) {
				b -= to > b;   /* moved down: the step now at b is yet to be seen */
				break;
			}
		}
	}
}

/* Each gelu_bwd to just after the matmul_dx making its gradient input, where it may go
 * there (the file's paragraph "First, ..."). */
static void gelu_bwds_to_their_gemms(MglPlan *p)
{
	for (int s = 1; s < p->nsteps; s++) {
		const MglStep *g = &p->steps[s];
		int at = s - 1;
		while (g->op == MGL_OP_GELU_BWD && at >= 0 && !(p->steps[at].nout == 1 && p->steps[at].out[0] == g->in[0]))
			at--;
		if (g->op == MGL_OP_GELU_BWD && at >= 0 && at < s - 1 && p->steps[at].op == MGL_OP_MATMUL_DX)
			move_step(p, s, at + 1);
	}
}

void mgl_schedule(MglPlan *p)
{
	gelu_bwds_to_their_gemms(p);
	int floor = 0;   /* the earliest place for the next collective */
	int sunk = 0;    /* the first step the next collective may sink: the last one's first reader */
	for (int c = 0; c < p->nsteps; c++) {
		if (mgl_ops[p->steps[c].op].kind != MGL_KIND_COLLECTIVE)
			continue;
		int to = c;
		while (to > floor && p->steps[to - 1].phase == p->steps[c].phase && !depends(&p->steps[c], &p->steps[to - 1]))
			to--;
		if (to < c)
			move_step(p, c, to);   /* (it may: the loop above checked each step it passes) */
		int from = to;
		while (from > sunk && p->steps[from - 1].phase == p->steps[to].phase)
			from--;
		floor = sink_independent(p, from, to) + 1;
		for (sunk = floor; sunk < p->nsteps && !depends(&p->steps[sunk], &p->steps[floor - 1]); sunk++)
			;   /* what runs beside this collective stays beside it */
	}
	bias_grads_after_weight_grads(p);
}
