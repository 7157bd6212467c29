/* compiler/recompute.c — activation recomputation: forward steps run again in the backward
 * pass, so that the activations they make need not stay alive from the forward pass to the
 * backward (Chen et al. 2016; Korthikanti et al. 2022, "Reducing Activation Recomputation
 * in Large Transformer Models").
 *
 * For each Transformer layer, the values its forward steps make and backward steps read
 * are the activations it keeps. Some of the steps that make them are copied, as they are
 * (the same op, inputs and attributes: the same values, bit for bit, dropout's masks
 * included), into the backward pass, just before the first backward step that reads one,
 * and the backward steps read the copies instead. The originals then die in the forward
 * pass and the memory plan (memplan.c) reuses their bytes; the copies live from the layer's
 * backward to their last reader. Which steps are copied:
 *
 *   full       every step of the layer that leads to a value its backward reads, back to
 *              the layer's input (what a step of another layer, or of no layer, made),
 *              which alone is kept: Megatron's full recomputation, checkpointing each layer.
 *   selective  the layer's norms, activation functions, gating products, rotations and
 *              dropouts (ops in the table below), whose outputs are large and cost next to
 *              no FLOPs to make again. Korthikanti's selective recomputation recomputes the
 *              attention core (softmax, its dropout, the products with it); here the
 *              attention is flash attention, which keeps only its output (the next GEMM's
 *              input, kept anyway) and its log-sum-exp, and recomputes the softmax in its
 *              backward already; so selective applies the same rule (recompute what is big
 *              and cheap) to what remains: the GEMMs' and attention's outputs are kept,
 *              the steps between them are recomputed.
 *
 * A value that a forward step of another layer reads (the layer's output) is never
 * recomputed: it is the next layer's input. A copy's values are named after the original
 * with a ~ ("layers.3.mlp.act~"). The pass runs after partition (so the tp
 * collectives of a copied stretch are copied with it) and before adamw.
 */
#include "mgl.h"

#include <string.h>

/* the ops selective recomputation copies */
static const bool selective_op[MGL_OP_COUNT] = {
	[MGL_OP_LAYERNORM] = true, [MGL_OP_RMSNORM] = true, [MGL_OP_GELU] = true, [MGL_OP_SILU] = true,
	[MGL_OP_TANH] = true,      [MGL_OP_MUL] = true,     [MGL_OP_ROPE] = true, [MGL_OP_DROPOUT] = true,
};

typedef struct {
	MglPlan *p;
	int *made;         /* value -> the step that makes it, or -1 */
	int *copy;         /* value -> its recomputed copy, or -1 */
	bool *boundary;    /* value -> read by a forward step of another layer (or of none) */
	bool *redo;        /* step -> copied */
} Rc;

/* Whether forward step s of layer L may be copied: its op is one the mode recomputes, and
 * it makes no layer output and writes none of its inputs. */
static bool copyable(const Rc *r, int s, int L)
{
	const MglStep *st = &r->p->steps[s];
	if (st->phase != MGL_FWD || st->layer != L || (r->p->recompute == MGL_RECOMPUTE_SELECTIVE && !selective_op[st->op]))
		return false;
	for (int k = 0; k < st->nout; k++) {
		if (r->boundary[st->out[k]] || r->p->values[st->out[k]].role != MGL_V_ACT)
			return false;
		for (int i = 0; i < st->nin; i++)
			if (st->in[i] == st->out[k])
				return false;
	}
	return true;
}

/* Marks step s copied, and the copyable steps that make its inputs, back to what is kept. */
static void mark(Rc *r, int s, int L)
{
	if (r->redo[s])
		return;
	r->redo[s] = true;
	const MglStep *st = &r->p->steps[s];
	for (int k = 0; k < st->nin; k++) {
		int m = r->made[st->in[k]];
		if (m >= 0 && copyable(r, m, L))
			mark(r, m, L);
	}
}

/* A step's inputs, each its copy where it has one. */
static int *renamed(MglArena *a, const Rc *r, const int *in, int n)
{
	int *out = mgl_alloc(a, (size_t)(n + 1) * sizeof *out);
	for (int k = 0; k < n; k++)
		out[k] = r->copy[in[k]] >= 0 ? r->copy[in[k]] : in[k];
	return out;
}

void mgl_recompute(MglCtx *c, MglPlan *p)
{
	MglArena *a = &c->arena;
	if (p->recompute == MGL_RECOMPUTE_NONE || p->nlayers == 0)
		return;
	MglArena tmp = {0};
	int nv = p->nvalues, ns = p->nsteps, L = p->nlayers;
	Rc r = {.p = p};
	r.made = mgl_alloc(&tmp, (size_t)nv * sizeof *r.made);
	r.copy = mgl_alloc(&tmp, (size_t)nv * sizeof *r.copy);
	r.boundary = mgl_alloc(&tmp, (size_t)nv * sizeof *r.boundary);
	r.redo = mgl_alloc(&tmp, (size_t)ns * sizeof *r.redo);
	int *at = mgl_alloc(&tmp, (size_t)(L + 1) * sizeof *at);   /* layer -> the step its copies go before */
	for (int v = 0; v < nv; v++)
		r.made[v] = r.copy[v] = -1;
	for (int s = 0; s < ns; s++)
		for (int k = 0; k < p->steps[s].nout; k++)
			if (r.made[p->steps[s].out[k]] < 0)
				r.made[p->steps[s].out[k]] = s;
	for (int s = 0; s < ns; s++) {
		const MglStep *st = &p->steps[s];
		for (int k = 0; st->phase == MGL_FWD && k < st->nin; k++) {
			int m = r.made[st->in[k]];
			if (m >= 0 && p->steps[m].layer != st->layer)
				r.boundary[st->in[k]] = true;
		}
	}
	/* what each layer's backward reads: copied where it may be, with what it is made from */
	for (int l = 0; l < L; l++)
		at[l] = -1;
	for (int s = 0; s < ns; s++) {
		const MglStep *st = &p->steps[s];
		for (int k = 0; st->phase != MGL_FWD && k < st->nin; k++) {
			int m = r.made[st->in[k]], l = m >= 0 ? p->steps[m].layer : -1;
			if (l < 0 || l >= L || !copyable(&r, m, l))
				continue;
			mark(&r, m, l);
			if (at[l] < 0)
				at[l] = s;
		}
	}

	/* the steps again, each layer's copies before the first backward step that reads one */
	MglStep *old = p->steps;
	p->steps = NULL;
	p->nsteps = p->capsteps = 0;
	for (int s = 0; s < ns; s++) {
		for (int l = 0; l < L; l++) {
			for (int f = 0; at[l] == s && f < s; f++) {
				if (!r.redo[f] || old[f].layer != l)
					continue;
				MglStep st = old[f];
				st.phase = MGL_BWD;
				st.in = renamed(a, &r, st.in, st.nin);
				st.out = mgl_alloc(a, (size_t)st.nout * sizeof *st.out);
				for (int k = 0; k < st.nout; k++) {
					MglValue v = p->values[old[f].out[k]];
					v.name = mgl_fmt(a, "%s~", v.name);
					MGL_PUSH(a, p->values, p->nvalues, p->capvalues, v);
					st.out[k] = r.copy[old[f].out[k]] = p->nvalues - 1;
				}
				MGL_PUSH(a, p->steps, p->nsteps, p->capsteps, st);
			}
		}
		MglStep st = old[s];
		if (st.phase != MGL_FWD)
			st.in = renamed(a, &r, st.in, st.nin);
		MGL_PUSH(a, p->steps, p->nsteps, p->capsteps, st);
	}
	mgl_arena_free(&tmp);
}
