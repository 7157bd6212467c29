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
 * overwritten. Runs before fuse.c (it moves steps, and the fused groups' indices are
 * positions) and memplan.c (lifetimes follow the order).
 *
 * First, each gelu_bwd moves up to just after the matmul_dx that makes its gradient input,
 * past the steps between that it does not depend on (autodiff puts the same layer's
 * matmul_dw there), or where one of them makes its pre-activation (full recomputation) the
 * matmul_dx moves down to just before it: fuse.c can then make the two one GEMM with
 * cuBLASLt's DGELU epilogue. Last (not under MGL_NO_QKV_BIAS_SUMS=1), each bias_grad of an
 * attention_bwd_qkv's output moves up to just after it, for fuse.c's group of the two: the
 * attention's kernels then make the sums, so nothing is left to run under a collective.
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

/* Step `from` moved to index `to`, the steps between one place toward where it was. */
static void move(MglPlan *p, int from, int to)
{
	MglStep x = p->steps[from];
	if (to < from)
		memmove(&p->steps[to + 1], &p->steps[to], (size_t)(from - to) * sizeof x);
	else
		memmove(&p->steps[from], &p->steps[from + 1], (size_t)(to - from) * sizeof x);
	p->steps[to] = x;
}

/* The file's paragraph "First, ...": gelu_bwd s up to the matmul_dx making its gradient
 * input; or, where a step between must stay before s (full recomputation remakes the
 * pre-activation there), that matmul_dx down to just before s, if no step between must
 * stay after it. */
static void gelu_bwd_to_its_gemm(MglPlan *p)
{
	for (int s = 1; s < p->nsteps; s++) {
		const MglStep *g = &p->steps[s];
		if (g->op != MGL_OP_GELU_BWD || g->nin < 1)
			continue;
		int at = s - 1, mk = s - 1;
		while (at >= 0 && !depends(g, &p->steps[at]))
			at--;   /* the last step before it that it must follow */
		while (mk >= 0 && !(p->steps[mk].nout == 1 && p->steps[mk].out[0] == g->in[0]))
			mk--;   /* the step making its gradient input */
		if (mk < 0 || mk == s - 1 || p->steps[mk].op != MGL_OP_MATMUL_DX || p->steps[mk].phase != g->phase)
			continue;
		bool may = true;   /* whether the matmul_dx may pass every step up to s */
		for (int k = mk + 1; k < s && may; k++)
			may = !depends(&p->steps[k], &p->steps[mk]) && p->steps[k].phase == g->phase;
		if (at == mk)
			move(p, s, mk + 1);
		else if (may)
			move(p, mk, s - 1);
	}
}

/* Each bias_grad of an attention_bwd_qkv's output up to just after it, past the steps
 * between that it does not depend on (autodiff and hfuse.c put the input gradient's and
 * the weights' GEMMs there). */
static void bias_grad_to_its_attention(MglPlan *p)
{
	for (int s = 1; s < p->nsteps; s++) {
		const MglStep *g = &p->steps[s];
		if (g->op != MGL_OP_BIAS_GRAD || g->nin != 1)
			continue;
		int mk = s - 1;
		while (mk >= 0 && !depends(g, &p->steps[mk]))
			mk--;   /* the last step before it that it must follow */
		const MglStep *a = mk >= 0 ? &p->steps[mk] : NULL;
		if (a && mk < s - 1 && a->op == MGL_OP_ATTENTION_BWD_QKV && a->nout >= 1 && a->out[0] == g->in[0] &&
		    a->phase == g->phase)
			move(p, s, mk + 1);
	}
}

void mgl_schedule(MglPlan *p)
{
	gelu_bwd_to_its_gemm(p);
	int floor = 0;   /* the earliest place for the next collective */
	int sunk = 0;    /* the first step the next collective may sink: the last one's first reader */
	for (int c = 0; c < p->nsteps; c++) {
		if (mgl_ops[p->steps[c].op].kind != MGL_KIND_COLLECTIVE)
			continue;
		int to = c;
		while (to > floor && p->steps[to - 1].phase == p->steps[c].phase && !depends(&p->steps[c], &p->steps[to - 1]))
			to--;
		if (to < c)
			move(p, c, to);
		int from = to;
		while (from > sunk && p->steps[from - 1].phase == p->steps[to].phase)
			from--;
		floor = sink_independent(p, from, to) + 1;
		for (sunk = floor; sunk < p->nsteps && !depends(&p->steps[sunk], &p->steps[floor - 1]); sunk++)
			;   /* what runs beside this collective stays beside it */
	}
	if (!getenv("MGL_NO_QKV_BIAS_SUMS"))
		bias_grad_to_its_attention(p);   /* (after the collectives: they would sink it again) */
}
