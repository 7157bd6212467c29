/* compiler/hfuse.c — horizontal fusion: the backward of attention's q, k and v projections
 * as one GEMM for their input gradient, one for their weights' gradients and one column sum
 * for their biases', where autodiff gives each of the three its own.
 *
 * The three linears read one input x and feed one attention. Autodiff differentiates each
 * on its own: bias_grad(dq), matmul_dx(dq, Wq), matmul_dw(dq, x), the same for k and v, and
 * two accumulates sum the three input gradients. A GEMM of width D runs below the card's
 * rate where one of width 3 D does not (fewer waves of tiles, a partial last wave less
 * often, and the input gradients summed inside one GEMM instead of read back and added):
 * on an H200 at 16,384 tokens and D 768 the input gradient takes 118 us as three GEMMs
 * and 78 us as one (docs/perf-notes.md, eleventh sitting). So here the attention's backward
 * writes dq, dk and dv side by side, [B, S, 3 D] (attention_bwd_qkv), and
 *
 *   bias_grad(dqkv) -> the biases' gradients          matmul_dx(dqkv, W) -> dx
 *   matmul_dw(dqkv, x) -> the weights' gradients
 *
 * where W is a span (plan.h: MglSpan) of Wq, Wk and Wv, [3 D, K], and the gradients are
 * spans of theirs: memplan.c lays each span's members end to end.
 *
 * The pattern, all of it or nothing: each output of an attention_bwd is read by exactly
 * one matmul_dx and one matmul_dw, and by one bias_grad each or by none, as its first input
 * alone; the matmul_dw's read one x; the weights are parameters of one shape [D, K] (the
 * biases of [D]) of a multiple of 32 bytes each, and their gradients are written by no
 * other step; the matmul_dx's outputs are summed by
 * accumulates that nothing else reads, into a value that is no gradient buffer.
 *
 * Not under dp > 1, --sp or ZeRO-1: there collectives reduce or shard the gradients one
 * parameter at a time, and schedule.c orders steps by the values they name, which a span
 * would hide from it. MGL_NO_HFUSE=1, at compile time, turns the pass off (to measure it).
 * Runs after adamw.c (which places those collectives) and before schedule.c and fuse.c
 * (the fused steps are ordinary GEMMs to them).
 */
#include "mgl.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
	int dx, dw, bg;   /* the steps reading one of the gradients, or -1 */
} Readers;

/* A span's member: bytes a multiple of 32, so that memplan.c's span, laying it right after
 * the one before, keeps it and its bf16 copy (the cuda backend's, half the bytes) 16-byte
 * aligned, as the kernels read them */
static bool unpadded(const MglValue *v)
{
	return (mgl_numel(v) * mgl_dtype_size[v->dtype]) % 32 == 0;
}

/* The steps reading value v: one matmul_dx, one matmul_dw and at most one bias_grad, each
 * with v its first input alone. */
static bool readers_of(const MglPlan *p, int v, Readers *r)
{
	*r = (Readers){-1, -1, -1};
	for (int s = 0; s < p->nsteps; s++) {
		const MglStep *st = &p->steps[s];
		for (int k = 0; k < st->nin; k++) {
			if (st->in[k] != v)
				continue;
			int *slot = st->op == MGL_OP_MATMUL_DX ? &r->dx : st->op == MGL_OP_MATMUL_DW ? &r->dw
				    : st->op == MGL_OP_BIAS_GRAD   ? &r->bg : NULL;
			if (k != 0 || !slot || *slot >= 0 || st->phase != MGL_BWD)
				return false;
			*slot = s;
		}
	}
	return r->dx >= 0 && r->dw >= 0;
}

/* How many times steps write (out) or read value v */
static int uses(const MglPlan *p, int v, bool out)
{
	int n = 0;
	for (int s = 0; s < p->nsteps; s++)
		for (int k = 0; k < (out ? p->steps[s].nout : p->steps[s].nin); k++)
			n += (out ? p->steps[s].out : p->steps[s].in)[k] == v;
	return n;
}
static int writers(const MglPlan *p, int v) { return uses(p, v, true); }
static int readers(const MglPlan *p, int v) { return uses(p, v, false); }

/* The accumulates that sum the three values y[] into one that nothing else reads in between:
 * their steps in acc[2], the sum's value returned, or -1. */
static int sum_of(const MglPlan *p, const int y[3], int acc[2])
{
	int live[3] = {y[0], y[1], y[2]}, n = 3, made = 0;
	while (n > 1) {
		int found = -1;
		for (int s = 0; s < p->nsteps && found < 0; s++) {
			const MglStep *st = &p->steps[s];
			if (st->op != MGL_OP_ACCUMULATE || st->nin != 2 || st->in[0] == st->in[1])
				continue;
			int a = -1, b = -1;
			for (int i = 0; i < n; i++)
				a = live[i] == st->in[0] ? i : a, b = live[i] == st->in[1] ? i : b;
			if (a >= 0 && b >= 0)
				found = s, live[a < b ? a : b] = st->out[0], live[a < b ? b : a] = live[--n];
		}
		if (found < 0 || made == 2)
			return -1;
		acc[made++] = found;
	}
	for (int i = 0; i < 3; i++)
		if (readers(p, y[i]) != 1)
			return -1;
	if (readers(p, p->steps[acc[0]].out[0]) != 1 || p->values[live[0]].role != MGL_V_ACT || writers(p, live[0]) != 1)
		return -1;
	return live[0];
}

/* A span of the three values m[] (plan.h: MglSpan), [3 D, ...] */
static int span(MglCtx *c, MglPlan *p, const int m[3], const char *name)
{
	MglValue v = p->values[m[0]];   /* (a copy: a new value may move the array) */
	v.shape[0] *= 3;
	int w = mgl_new_value(&c->arena, p, name, v.role, v.dtype, v.rank, v.shape);
	p->values[w].layout = v.layout;
	MglSpan sp = {.value = w, .member = {m[0], m[1], m[2]}, .n = 3};
	MGL_PUSH(&c->arena, p->spans, p->nspans, p->capspans, sp);
	return w;
}

/* The forward's three linears of the weights W[] (a span by now), each a matmul of one x
 * and a bias_add of a parameter (unless MGL_NO_QKV_FWD=1 at compile time): their
 * biases and their outputs (q, k, v) laid end to end too, as layout spans (plan.h), so that
 * the cuda backend runs the three as one batched GEMM (runtime/cuda/ops.c, qkv_batches).
 * Nothing where the pattern is not whole. */
static void qkv_forward_layout(MglCtx *c, MglPlan *p, const int W[3])
{
	int bias[3], y[3], x = -1;
	for (int i = 0; i < 3; i++) {
		int mm = -1, n = 0;
		for (int s = 0; s < p->nsteps; s++)
			if (p->steps[s].op == MGL_OP_MATMUL && p->steps[s].phase == MGL_FWD && p->steps[s].in[1] == W[i])
				mm = s, n++;
		if (n != 1 || (x >= 0 && p->steps[mm].in[0] != x) || readers(p, p->steps[mm].out[0]) != 1)
			return;
		x = p->steps[mm].in[0];
		const MglStep *ba = NULL;
		for (int s = 0; s < p->nsteps && !ba; s++)
			if (p->steps[s].op == MGL_OP_BIAS_ADD && p->steps[s].in[0] == p->steps[mm].out[0])
				ba = &p->steps[s];
		if (!ba)
			return;
		bias[i] = ba->in[1], y[i] = ba->out[0];
		const MglValue *b = &p->values[bias[i]], *v = &p->values[y[i]], *y0 = &p->values[y[0]];
		if (b->role != MGL_V_PARAM || b->param < 0 || b->rank != 1 || !unpadded(b) || v->role != MGL_V_ACT ||
		    writers(p, y[i]) != 1 || !unpadded(v) || v->dtype != y0->dtype || memcmp(v->shape, y0->shape, sizeof v->shape))
			return;
	}
	if (bias[0] == bias[1] || bias[1] == bias[2] || bias[0] == bias[2])
		return;   /* (one bias shared: no span of it) */
	MglSpan b = {.value = -1, .member = {bias[0], bias[1], bias[2]}, .n = 3};
	MglSpan o = {.value = -1, .member = {y[0], y[1], y[2]}, .n = 3};
	MGL_PUSH(&c->arena, p->spans, p->nspans, p->capspans, b);
	MGL_PUSH(&c->arena, p->spans, p->nspans, p->capspans, o);
}

/* The pattern of the file's comment at attention_bwd step a, made one; whether it was */
static bool fuse_qkv(MglCtx *c, MglPlan *p, int a)
{
	MglStep *at = &p->steps[a];
	Readers r[3];
	int W[3], G[3], Y[3], gb[3], acc[2];
	for (int i = 0; i < 3; i++) {
		if (!readers_of(p, at->out[i], &r[i]) || (r[i].bg >= 0) != (r[0].bg >= 0))
			return false;
		const MglStep *dx = &p->steps[r[i].dx], *dw = &p->steps[r[i].dw];
		W[i] = dx->in[1], G[i] = dw->out[0], Y[i] = dx->out[0], gb[i] = r[i].bg >= 0 ? p->steps[r[i].bg].out[0] : -1;
		const MglValue *w = &p->values[W[i]], *g = &p->values[G[i]];
		if (w->role != MGL_V_PARAM || w->param < 0 || p->params[w->param].grad != G[i] || g->role != MGL_V_GRAD ||
		    w->rank != 2 || !unpadded(w) || w->dtype != p->values[W[0]].dtype ||
		    memcmp(w->shape, p->values[W[0]].shape, sizeof w->shape) || dw->in[1] != p->steps[r[0].dw].in[1] ||
		    writers(p, G[i]) != 1 || g->dtype != p->values[G[0]].dtype)
			return false;
		if (gb[i] >= 0) {
			const MglValue *b = &p->values[gb[i]];
			if (b->role != MGL_V_GRAD || b->param < 0 || b->rank != 1 || b->shape[0] != w->shape[0] || !unpadded(b) ||
			    writers(p, gb[i]) != 1)
				return false;
		}
	}
	int dx = sum_of(p, Y, acc);
	if (dx < 0)
		return false;
	/* the steps replaced, and the first of them, where the new ones go: after x is made */
	bool *gone = mgl_alloc(&c->arena, (size_t)p->nsteps * sizeof *gone);
	int first = p->nsteps, x = p->steps[r[0].dw].in[1];
	for (int i = 0; i < 3; i++) {
		int s3[3] = {r[i].dx, r[i].dw, r[i].bg};
		for (int k = 0; k < 3; k++)
			if (s3[k] >= 0)
				gone[s3[k]] = true, first = s3[k] < first ? s3[k] : first;
	}
	gone[acc[0]] = gone[acc[1]] = true;
	for (int s = first; s < p->nsteps; s++)
		for (int k = 0; k < p->steps[s].nout; k++)
			if (p->steps[s].out[k] == x)
				return false;

	MglValue q = p->values[at->out[0]];   /* (a copy: new values may move the array) */
	q.shape[q.rank - 1] *= 3;
	/* named after the linears: layers.3.attention.q+k+v.weight of q.weight, k.weight, v.weight */
	const char *nm = "", *sep = "";
	int len = 0;
	for (int i = 0; i < 3; i++) {
		const char *name = p->values[W[i]].name, *dot = strrchr(name, '.'), *pre = dot ? dot : name;
		while (pre > name && pre[-1] != '.')
			pre--;
		len = (int)(pre - name);
		nm = mgl_fmt(&c->arena, "%s%s%.*s", nm, sep, (int)((dot ? dot : pre) - pre), pre), sep = "+";
	}
	const char *lin = mgl_fmt(&c->arena, "%.*s%s", len, p->values[W[0]].name, nm);
	int dqkv = mgl_new_value(&c->arena, p, mgl_fmt(&c->arena, "grad:%s", lin), MGL_V_ACT, q.dtype, q.rank, q.shape);
	p->values[dqkv].layout = q.layout;
	int w = span(c, p, W, mgl_fmt(&c->arena, "%s.weight", lin));
	int g = span(c, p, G, mgl_fmt(&c->arena, "grad:%s.weight", lin));
	int b = gb[0] >= 0 ? span(c, p, gb, mgl_fmt(&c->arena, "grad:%s.bias", lin)) : -1;

	/* attention_bwd_qkv where attention_bwd was; the three GEMMs and the column sum where the
	 * first step they replace was, the rest of those steps gone */
	at = &p->steps[a];
	at->op = MGL_OP_ATTENTION_BWD_QKV, at->out[0] = dqkv, at->nout = 1;
	/* q's three steps, made over the spans (their in and out arrays are theirs alone) */
	MglStep made[3] = {p->steps[r[0].dx], p->steps[r[0].dw], b >= 0 ? p->steps[r[0].bg] : p->steps[r[0].dx]};
	int nmade = b >= 0 ? 3 : 2;
	made[0].in[0] = made[1].in[0] = dqkv, made[0].in[1] = w, made[0].out[0] = dx, made[1].out[0] = g;
	if (b >= 0)
		made[2].in[0] = dqkv, made[2].out[0] = b;
	int n = 0;
	for (int s = 0; s < p->nsteps; s++) {
		if (s == first)
			for (int k = 0; k < nmade; k++)
				p->steps[n++] = made[k];
		if (!gone[s])
			p->steps[n++] = p->steps[s];
	}
	p->nsteps = n;
	if (!getenv("MGL_NO_QKV_FWD"))
		qkv_forward_layout(c, p, W);
	return true;
}

void mgl_hfuse(MglCtx *c, MglPlan *p)
{
	if (getenv("MGL_NO_HFUSE") || p->dp > 1 || p->sp || p->zero)
		return;
	for (int s = 0; s < p->nsteps; s++)
		if (p->steps[s].op == MGL_OP_ATTENTION_BWD && p->steps[s].nout == 3 && p->steps[s].phase == MGL_BWD)
			fuse_qkv(c, p, s);
}
