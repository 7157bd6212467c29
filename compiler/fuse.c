/* compiler/fuse.c — decides, once, what runs as one kernel; a runtime executes what the
 * plan marks without deciding again (the cpu backend ignores the marks: the plan means the
 * same either way).
 *
 * Two patterns, both on steps that are next to each other in the plan's order, each
 * formed only where the plan's rules (plan.h: mgl_epilogue_ok, mgl_chain_ok) hold for its
 * storage types:
 *   - GEMM epilogues: a matmul followed by the bias_add of its output (and then a gelu
 *     of that) is one cuBLASLt call with a BIAS (GELU_AUX_BIAS) epilogue; the bias_add's
 *     output is still written when a gelu follows (cuBLASLt's auxiliary output, which
 *     gelu_bwd reads). bf16 activations only: the bias added is the parameter's bf16 copy.
 *   - elementwise chains: the longest runs of steps whose ops have a chain expression
 *     (plan/ops.def), each output read only by the next step (bias_add, dropout, residual
 *     add: Megatron's bias-dropout-add). A chain becomes one generated kernel.
 *   - multi-tensor updates: the run of adamw steps of the optimizer is one launch over a
 *     table of all its parameters (Apex's multi_tensor_apply) instead of one a parameter.
 * A fused step's `fuse` is the index of the first step of its group; -1 when alone.
 *
 * For debugging, at compile time: MGL_NO_FUSE=1 forms no chains and no multi-tensor
 * updates, MGL_NO_EPILOGUE=1 no
 * epilogues, MGL_NO_GELU_EPILOGUE=1 bias epilogues only (docs/gpu.md).
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
 * (whole groups: fused ones, before the step being fused, keep their first's index), if
 * it may pass each of them (the same phase, independent of it). */
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
 * reads it), each found by what it reads; true if they are there and e's rule holds for
 * them, else the steps are as they were. *s: where the GEMM is then. */
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
	}
	if (ok && mgl_epilogue_ok(p, uses, g, e->epi)) {
		*s = g;
		return true;
	}
	if (moved)
		memcpy(p->steps, saved, (size_t)p->nsteps * sizeof *saved);
	return false;
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
		const MglEpilogue *e = NULL;
		for (int i = 0; i < mgl_nepilogues && epilogues && !e; i++)
			if (mgl_epilogues[i].gemm == p->steps[s].op && !(mgl_epilogues[i].epi & off) &&
			    gather(p, uses, &s, &mgl_epilogues[i], saved))
				e = &mgl_epilogues[i];
		MglStep *x = &p->steps[s];
		int last = s;
		if (e) {
			if (x->op == MGL_OP_MATMUL)
				x->attr.epi = e->epi;
			last = s + e->n;
		} else if (chains && x->op == MGL_OP_ADAMW) {
			while (last + 1 < p->nsteps && mgl_adamw_group_ok(p, s, last + 1))
				last++;
		} else if (chains) {
			while (last + 1 < p->nsteps && mgl_chain_ok(p, uses, s, last + 1))
				last++;
		}
		for (int k = s; k <= last && last > s; k++)
			p->steps[k].fuse = s;
		s = last;
	}
	mgl_arena_free(&a);
}
