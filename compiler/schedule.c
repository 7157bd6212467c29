/* compiler/schedule.c — orders the steps for overlap: each collective moves up to just
 * after the last step it depends on, so that the steps it moves past can run while it
 * communicates: a runtime that issues collectives on a stream of their own and makes the
 * compute wait for one only at the first step that needs it (mgl_collective_waits in
 * plan/plan.c) runs the backward all-reduce of a column-parallel layer's input gradient
 * under that layer's weight-gradient GEMM, as Megatron-LM overlaps them (autodiff emits
 * dx, dW, then partition adds the all-reduce of dx after both). The cuda backend on main
 * still waits for each collective at once; its deferred wait is written (branch gpunext,
 * docs/perf-notes.md) and waits for a check on two GPUs.
 *
 * A collective c moves to just after the last earlier step that writes one of its inputs
 * or outputs (gradients are reduced in place, and written by several steps) or reads one
 * of its outputs; never before the first step of its phase, nor before an earlier
 * collective (every rank issues them in the same order, whatever the plan, but keeping
 * theirs is what the comm stream would do anyway). The steps' order changes, not their
 * meaning: each value is still made before it is read. Runs before fuse.c (it moves steps,
 * and the fused groups' indices are positions) and memplan.c (lifetimes follow the order).
 */
#include "mgl.h"

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

void mgl_schedule(MglPlan *p)
{
	int floor = 0;   /* the earliest place for the next collective */
	for (int c = 0; c < p->nsteps; c++) {
		if (mgl_ops[p->steps[c].op].kind != MGL_KIND_COLLECTIVE)
			continue;
		int to = c;
		while (to > floor && p->steps[to - 1].phase == p->steps[c].phase && !depends(&p->steps[c], &p->steps[to - 1]))
			to--;
		if (to < c) {
			MglStep x = p->steps[c];
			memmove(&p->steps[to + 1], &p->steps[to], (size_t)(c - to) * sizeof x);
			p->steps[to] = x;
		}
		floor = to + 1;
	}
}
