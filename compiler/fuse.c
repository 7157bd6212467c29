/* compiler/fuse.c — decides, once, what runs as one kernel; a runtime executes what the
 * plan marks without deciding again (the cpu backend ignores the marks: the plan means the
 * same either way).
 *
 * Three patterns, each on steps that are next to each other in the plan's order, each
 * formed only where the plan's rules (plan.h: mgl_epilogue_ok, mgl_chain_ok,
 * mgl_adamw_group_ok) hold for its storage types:
 *   - GEMM epilogues (the table mgl_epilogues in plan/plan.c): a GEMM and the steps after
 *     it that one cuBLASLt call does. Forward, a matmul and the bias_add of its output (and
 *     then a gelu of that): BIAS (GELU_AUX_BIAS, whose auxiliary output is the bias_add's
 *     output, still written: gelu_bwd reads it). Backward, a matmul_dx and the gelu_bwd of
 *     its output (and then the bias_grad of that): DGELU (DGELU_BGRAD), reading that
 *     auxiliary output; a matmul_dw and the bias_grad of the dy it reads: BGRADB, the
 *     column sums of dy beside the weight gradient. bf16 operands only: cuBLASLt's.
 *     Autodiff emits a linear's bias_grad before its matmul_dx and matmul_dw, and the fc2
 *     matmul_dw between the matmul_dx and the gelu_bwd that reads it: for an epilogue that
 *     would hold, its steps are brought next to the GEMM (a step moves past the steps
 *     between only where neither writes what the other reads or writes, in one phase).
 *   - elementwise chains: the longest runs of steps whose ops have a chain expression
 *     (plan/ops.def), each output read only by the next step (bias_add, dropout, residual
 *     add: Megatron's bias-dropout-add). A chain becomes one generated kernel.
 *   - multi-tensor updates: the run of adamw steps of the optimizer is one launch over a
 *     table of all its parameters (Apex's multi_tensor_apply) instead of one a parameter.
 * A fused step's `fuse` is the index of the first step of its group; -1 when alone.
 * Runs after schedule.c and before memplan.c: the order it leaves is the plan's.
 *
 * For debugging, at compile time: MGL_NO_FUSE=1 forms no chains and no multi-tensor
 * updates; MGL_NO_EPILOGUE=1 no epilogues (and moves no step); MGL_NO_GELU_EPILOGUE=1 none
 * with GELU or DGELU, MGL_NO_BGRAD_EPILOGUE=1 none with a bias gradient (docs/gpu.md).
 */
#include "mgl.h"

#include <stdlib.h>
#include <string.h>

/* a and b may run in either order: neither writes what the other reads or writes */
static bool independent(const MglStep *a, const MglStep *b)
{
	for (int i = 0; i < a->nout; i++) {
		for (int k = 0; k < b->nin; k++)
			if (a->out[i] == b->in[k])
				return false;
		for (int k = 0; k < b->nout; k++)
			if (a->out[i] == b->out[k])
				return false;
	}
	for (int i = 0; i < b->nout; i++)
		for (int k = 0; k < a->nin; k++)
			if (b->out[i] == a->in[k])
				return false;
	return true;
}

/* Moves step `from` (in no fused group) to index `to`, the steps between moving one place
 * (a fused group among them moves whole: its steps' `fuse` with it), if it may pass each
 * of them (the same phase, independent of it). */
static bool move(MglPlan *p, int from, int to)
{
	int lo = from < to ? from + 1 : to, hi = from < to ? to : from - 1, by = from < to ? -1 : 1;
	for (int k = lo; k <= hi; k++)
		if (p->steps[k].phase != p->steps[from].phase || !independent(&p->steps[k], &p->steps[from]))
			return false;
	MglStep x = p->steps[from];
	if (from < to)
		memmove(&p->steps[from], &p->steps[from + 1], (size_t)(to - from) * sizeof x);
	else
		memmove(&p->steps[to + 1], &p->steps[to], (size_t)(from - to) * sizeof x);
	p->steps[to] = x;
	for (int k = lo + by; k <= hi + by; k++)
		if (p->steps[k].fuse >= 0)
			p->steps[k].fuse += by;
	return true;
}

/* Brings the steps of epilogue e of GEMM step *s right after it (autodiff emits a layer's
 * bias_grad before its GEMMs, and a matmul_dw between the matmul_dx and the gelu_bwd that
 * reads it), each found by what it reads, or else the GEMM down to the first of them (a
 * full recompute puts the forward the gelu_bwd reads in between); true if they are there
 * and e's rule holds for them, else the steps are as they were. *s: where the GEMM is
 * then, after the steps it passed if it moved. */
static bool gather(MglPlan *p, const int *uses, int *s, const MglEpilogue *e, MglStep *saved)
{
	int g = *s;
	bool ok = true, moved = false;
	for (int k = 1; k <= e->n && ok; k++) {
		const MglStep *prev = k > 1 ? &p->steps[g + k - 1] : NULL;
		int in = mgl_epilogue_input(&p->steps[g], prev, e->then[k - 1]), at = -1;
		for (int j = 0; j < p->nsteps && at < 0; j++)
			if ((j < g || j > g + k - 1) && p->steps[j].op == e->then[k - 1] && p->steps[j].in[0] == in &&
			    p->steps[j].fuse < 0)
				at = j;
		ok = at >= 0;
		if (!ok || at == g + k)
			continue;   /* none, or in its place already */
		if (!moved)
			memcpy(saved, p->steps, (size_t)p->nsteps * sizeof *saved);
		moved = true;
		ok = move(p, at, at < g ? g + k - 1 : g + k);
		g -= ok && at < g;
		if (!ok && k == 1 && at > g && move(p, g, at - 1))
			ok = true, g = at - 1;   /* the GEMM down to it (past what it needs: a recomputed input) */
	}
	if (ok && mgl_epilogue_ok(p, uses, g, e->epi)) {
		*s = g;
		return true;
	}
	if (moved)
		memcpy(p->steps, saved, (size_t)p->nsteps * sizeof *saved);
	return false;
}

/* steps [s, last] one group */
static void mark(MglPlan *p, int s, int last)
{
	for (int k = s; k <= last; k++)
		p->steps[k].fuse = s;
}

void mgl_fuse(MglPlan *p)
{
	bool chains = !getenv("MGL_NO_FUSE"), epilogues = !getenv("MGL_NO_EPILOGUE");
	unsigned off = (getenv("MGL_NO_GELU_EPILOGUE") ? MGL_EPI_GELU | MGL_EPI_DGELU : 0) |
		       (getenv("MGL_NO_BGRAD_EPILOGUE") ? MGL_EPI_BGRAD : 0);
	MglArena a = {0};
	int *uses = mgl_alloc(&a, (size_t)(p->nvalues + 1) * sizeof *uses);
	MglStep *saved = mgl_alloc(&a, (size_t)p->nsteps * sizeof *saved);
	for (int s = 0; s < p->nsteps; s++)
		for (int k = 0; k < p->steps[s].nin; k++)
			uses[p->steps[s].in[k]]++;
	for (int s = 0; s < p->nsteps; s++) {
		if (p->steps[s].fuse >= 0)
			continue;   /* a GEMM that moved down here, and its epilogue */
		const MglEpilogue *e = NULL;
		int at = s, last = s;
		for (int i = 0; i < mgl_nepilogues && epilogues && !e; i++)
			if (mgl_epilogues[i].gemm == p->steps[s].op && !(mgl_epilogues[i].epi & off) &&
			    gather(p, uses, &at, &mgl_epilogues[i], saved))
				e = &mgl_epilogues[i];
		if (e) {
			if (p->steps[at].op == MGL_OP_MATMUL)
				p->steps[at].attr.epi = e->epi;
			mark(p, at, at + e->n);
			s = at > s ? s - 1 : at + e->n;   /* moved down: on from the step now at s */
			continue;
		}
		if (chains && p->steps[s].op == MGL_OP_ADAMW) {
			while (last + 1 < p->nsteps && mgl_adamw_group_ok(p, s, last + 1))
				last++;
		} else if (chains) {
			while (last + 1 < p->nsteps && mgl_chain_ok(p, uses, s, last + 1))
				last++;
		}
		if (last > s)
			mark(p, s, last);
		s = last;
	}
	mgl_arena_free(&a);
}
