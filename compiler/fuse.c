/* compiler/fuse.c — marks what the cuda backend runs as one kernel.
 *
 * Two patterns, both on steps that are next to each other in the plan's order:
 *   - GEMM epilogues: a matmul followed by the bias_add of its output (and then a gelu
 *     of that) is one cuBLASLt call with a BIAS (BIAS|GELU) epilogue; the bias_add's
 *     output is still written when the backward pass needs it (GELU_AUX in cuBLASLt).
 *   - elementwise chains: consecutive elementwise steps of one phase where each output
 *     has exactly one reader, the next step (bias_add, dropout, residual add: Megatron's
 *     bias-dropout-add). The chain becomes one generated kernel.
 * A fused step's `fuse` is the index of the first step of its group; -1 when alone. The
 * cpu backend ignores the marks: the plan means the same either way.
 */
#include "mgl.h"

void mgl_fuse(MglPlan *p)
{
	MglArena a = {0};
	int *uses = mgl_alloc(&a, (size_t)p->nvalues * sizeof *uses);
	for (int s = 0; s < p->nsteps; s++)
		for (int k = 0; k < p->steps[s].nin; k++)
			uses[p->steps[s].in[k]]++;
	for (int s = 0; s + 1 < p->nsteps; s++) {
		MglStep *x = &p->steps[s], *y = &p->steps[s + 1];
		int head = x->fuse >= 0 ? x->fuse : s;
		if (x->op == MGL_OP_MATMUL && y->op == MGL_OP_BIAS_ADD && y->in[0] == x->out[0] && uses[x->out[0]] == 1) {
			x->attr.epi |= MGL_EPI_BIAS;
			x->fuse = y->fuse = head;
			if (s + 2 < p->nsteps && p->steps[s + 2].op == MGL_OP_GELU && p->steps[s + 2].in[0] == y->out[0]) {
				x->attr.epi |= MGL_EPI_GELU;
				p->steps[s + 2].fuse = head;
				s += 1;
			}
			s += 1;
			continue;
		}
		unsigned ew = MGL_OPF_ELEMENTWISE;
		bool chain = (mgl_ops[x->op].flags & ew) && (mgl_ops[y->op].flags & ew) && x->phase == y->phase &&
			     x->nout == 1 && uses[x->out[0]] == 1 && p->values[x->out[0]].role == MGL_V_ACT;
		for (int k = 0; chain && k < y->nin; k++)
			if (y->in[k] == x->out[0])
				break;
			else if (k == y->nin - 1)
				chain = false;
		if (chain && x->attr.epi == 0)
			x->fuse = y->fuse = head;
	}
	mgl_arena_free(&a);
}
