/* compiler/fuse.c — decides, once, what runs as one kernel; a runtime executes what the
 * plan marks without deciding again (the cpu backend ignores the marks: the plan means the
 * same either way).
 *
 * Six patterns, all on steps that are next to each other in the plan's order, each
 * formed only where the plan's rules (plan.h: mgl_epilogue_ok, mgl_chain_ok) hold for its
 * storage types:
 *   - GEMM epilogues: a matmul followed by the bias_add of its output (and then a gelu
 *     of that) is one cuBLASLt call with a BIAS (GELU_AUX_BIAS) epilogue; the bias_add's
 *     output is still written when a gelu follows (cuBLASLt's auxiliary output, which
 *     gelu_bwd reads). bf16 activations only: the bias added is the parameter's bf16 copy.
 *     Where no gelu follows but an add of the result and another value does (the
 *     residual, when dropout is off), the GEMM adds that too, as its C input (beta = 1);
 *     likewise a matmul_dx followed by the accumulate of its output into another gradient
 *     (the q, k and v input gradients summed; the residual's). A matmul_dx followed by the
 *     gelu_bwd of its output is one call with cuBLASLt's DGELU epilogue, the pre-activation
 *     (the forward's auxiliary output) its auxiliary input: the MLP's input gradient never
 *     goes to memory before the GELU's derivative is applied.
 *   - elementwise chains: the longest runs of steps whose ops have a chain expression
 *     (plan/ops.def), each output read only by the next step (bias_add, dropout, residual
 *     add: Megatron's bias-dropout-add). A chain becomes one generated kernel.
 *   - multi-tensor updates: the run of adamw steps of the optimizer is one launch over a
 *     table of all its parameters (Apex's multi_tensor_apply) instead of one a parameter.
 *   - the softmax's statistics: a vocab_max and the vocab_stats right after it (tp 1: no
 *     all-reduce of the maximum between them) are one pass over the logits, an online
 *     softmax's (Milakov and Gimelshein, "Online normalizer calculation for softmax", 2018).
 *   - a norm's backward and the accumulate after it of its input gradient and the residual
 *     stream's: the norm's kernel adds the other gradient as it writes (one pass over the
 *     [tokens, d] gradients fewer, a layer's two norms each); and the bias_grad after that
 *     of the gradient it wrote (the row-parallel o's and proj's: that gradient is their
 *     output's), a third column sum beside the norm's own two (one launch and, mostly from
 *     L2, one read of [tokens, d] instead of a pass over it from memory).
 *   - attention's backward with q, k and v's gradients side by side (compiler/hfuse.c) and
 *     the bias_grad right after it of those (schedule.c puts it there): the attention's
 *     kernels sum the columns as they make them, so [tokens, 3 d] is not read again for
 *     them (measured: docs/perf-notes.md, fourteenth sitting).
 * A fused step's `fuse` is the index of the first step of its group; -1 when alone.
 *
 * For debugging, at compile time: MGL_NO_FUSE=1 forms no chains, no multi-tensor updates,
 * no softmax statistics' pass and no norm adding the residual, MGL_NO_EPILOGUE=1 no
 * epilogues, MGL_NO_GELU_EPILOGUE=1 no gelu in them, MGL_NO_ADD_EPILOGUE=1 no add,
 * MGL_NO_DGELU_EPILOGUE=1 no gelu_bwd, MGL_NO_NORM_BIAS_GRAD=1 no bias_grad in a norm's
 * group, MGL_NO_QKV_BIAS_SUMS=1 none in attention's (docs/gpu.md).
 */
#include "mgl.h"

#include <stdlib.h>

void mgl_fuse(MglPlan *p)
{
	bool chains = !getenv("MGL_NO_FUSE"), epilogues = !getenv("MGL_NO_EPILOGUE"),
	     gelu = !getenv("MGL_NO_GELU_EPILOGUE"), add = !getenv("MGL_NO_ADD_EPILOGUE"),
	     dgelu = !getenv("MGL_NO_DGELU_EPILOGUE"), norm_bias = !getenv("MGL_NO_NORM_BIAS_GRAD"),
	     qkv_bias = !getenv("MGL_NO_QKV_BIAS_SUMS");
	MglArena a = {0};
	int *uses = mgl_alloc(&a, (size_t)(p->nvalues + 1) * sizeof *uses);
	for (int s = 0; s < p->nsteps; s++)
		for (int k = 0; k < p->steps[s].nin; k++)
			uses[p->steps[s].in[k]]++;
	for (int s = 0; s < p->nsteps; s++) {
		MglStep *x = &p->steps[s];
		int last = s;
		if (x->op == MGL_OP_MATMUL && epilogues && mgl_epilogue_ok(p, uses, s, MGL_EPI_BIAS)) {
			x->attr.epi = MGL_EPI_BIAS;
			if (gelu && mgl_epilogue_ok(p, uses, s, MGL_EPI_BIAS | MGL_EPI_GELU))
				x->attr.epi |= MGL_EPI_GELU;
			else if (add && mgl_epilogue_ok(p, uses, s, MGL_EPI_BIAS | MGL_EPI_ADD))
				x->attr.epi |= MGL_EPI_ADD;
			last = s + mgl_epilogue_steps((unsigned)x->attr.epi);
		} else if (x->op == MGL_OP_MATMUL_DX && epilogues && dgelu && mgl_epilogue_ok(p, uses, s, MGL_EPI_DGELU)) {
			x->attr.epi = MGL_EPI_DGELU;
			last = s + 1;
		} else if (x->op == MGL_OP_MATMUL_DX && epilogues && add && mgl_epilogue_ok(p, uses, s, MGL_EPI_ADD)) {
			x->attr.epi = MGL_EPI_ADD;
			last = s + 1;
		} else if (chains && x->op == MGL_OP_VOCAB_MAX && mgl_stats_group_ok(p, s, s + 1)) {
			last = s + 1;
		} else if (chains && (x->op == MGL_OP_LAYERNORM_BWD || x->op == MGL_OP_RMSNORM_BWD)) {
			for (int l = s + (norm_bias ? 2 : 1); l > s && last == s; l--)
				if (mgl_norm_add_group_ok(p, uses, s, l) && (norm_bias || p->steps[l].op != MGL_OP_BIAS_GRAD))
					last = l;
		} else if (chains && qkv_bias && x->op == MGL_OP_ATTENTION_BWD_QKV && mgl_qkv_bias_group_ok(p, s, s + 1)) {
			last = s + 1;
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
