/* compiler/autodiff.c — from the typed graph to the training program: lowering, then
 * reverse-mode differentiation. The result is a plan (plan/plan.h) with global shapes and
 * no layouts yet: the forward steps, then the backward steps in reverse order.
 *
 * Lowering binds batch and seq to the sizes being compiled for, pads the vocabulary (a
 * table split by @row) to a multiple of 128 * tp as Megatron does, and rewrites two ops
 * into the forms the runtime executes:
 *   linear(x, W, b)        -> matmul(x, W), then bias_add (separate, because a row-split
 *                             matmul yields partial sums and the bias must be added once)
 *   cross_entropy(z, t)    -> vocab_max(z), vocab_stats(z, t, max), vocab_loss(...), so
 *                             the partitioner can put the two reductions of a vocabulary-
 *                             parallel loss between them
 *
 * Differentiation walks the forward steps backwards, each op's gradient given by one
 * function in the table `grad_of` below. Gradients of activations used twice are summed
 * (accumulate steps); gradients of parameters are written straight into the parameter's
 * gradient buffer, and every step writing one adds into it (so tied weights and gradient
 * accumulation over micro-batches need nothing more here; the reductions of gradient
 * buffers run once, after the last micro-batch). The gradient of the loss is an input,
 * "d_loss", that the runtime fills (1 / (micro-batches x dp): the mean over the step).
 *
 * This pass runs before partitioning on purpose: the partitioner then chooses layouts for
 * forward and backward steps with the same table, so Megatron's conjugate pairs (f and g,
 * all-gather and reduce-scatter) fall out of the layout signatures without a special case.
 */
#include "mgl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	MglCtx *c;
	MglArena *a;
	const MglGraph *g;
	const MglTarget *t;
	MglPlan *p;
	int *val;           /* graph node -> value */
	int *producer;      /* value -> forward step that made it (-1: input or parameter) */
	int *grad;          /* forward value -> its gradient so far, -1 if none */
	bool *needs;        /* forward value -> depends on a parameter (needs a gradient) */
	int64_t *limit;     /* forward value -> true width of its last dimension (vocabulary padding) */
	int64_t *padded;    /* graph parameter -> rows after padding (0: not padded) */
	int nfwd;           /* forward values */
	uint32_t dropouts;  /* counter: each dropout gets its own mask seed */
} Lower;

int mgl_new_value(MglArena *a, MglPlan *p, const char *name, MglRole role, MglDtype dt, int rank,
		  const int64_t *shape)
{
	MglValue v = {.name = name, .role = role, .dtype = dt, .rank = rank, .param = -1};
	memcpy(v.shape, shape, (size_t)rank * sizeof *shape);
	MGL_PUSH(a, p->values, p->nvalues, p->capvalues, v);
	return p->nvalues - 1;
}

int mgl_emit(MglArena *a, MglPlan *p, MglOp op, MglPhase phase, const int *in, int nin, const int *out,
	     int nout, const void *tok, int layer)
{
	const MglTok *t = tok;
	MglStep s = {.op = op, .phase = phase, .nin = nin, .nout = nout, .layer = layer, .tok = tok,
		     .line = t ? t->line : 0, .col = t ? t->col : 0, .fuse = -1, .index = -1};
	s.in = mgl_alloc(a, (size_t)(nin + 1) * sizeof *s.in);
	s.out = mgl_alloc(a, (size_t)(nout + 1) * sizeof *s.out);
	memcpy(s.in, in, (size_t)nin * sizeof *in);
	memcpy(s.out, out, (size_t)nout * sizeof *out);
	MGL_PUSH(a, p->steps, p->nsteps, p->capsteps, s);
	return p->nsteps - 1;
}

/* ---------------------------------------------------------------- lowering */

/* A value stored as the target's activations are (bf16 on GPUs), except scalars: a loss,
 * and a sum of losses (BERT's masked-LM plus sentence-order loss), stay f32 — in bf16 a
 * loss of 11 would be rounded to a multiple of 1/16. */
static int value(Lower *L, const char *name, MglDtype dt, int rank, const int64_t *shape)
{
	MglDtype storage = dt == MGL_F32 && rank > 0 ? L->t->act_dtype : dt;
	return mgl_new_value(L->a, L->p, name, MGL_V_ACT, storage, rank, shape);
}

/* A graph shape with batch and seq bound. */
static int bind_shape(Lower *L, const MglShape *s, int64_t *out)
{
	for (int i = 0; i < s->rank; i++) {
		if (s->d[i].sym < 0) {
			out[i] = s->d[i].n;
			continue;
		}
		const MglSymbol *y = &L->g->syms[s->d[i].sym];
		out[i] = !strcmp(y->name, "batch") ? L->t->batch : L->t->seq;
	}
	return s->rank;
}

static int step(Lower *L, MglOp op, const MglNode *nd, const int *in, int nin, const int *out, int nout)
{
	return mgl_emit(L->a, L->p, op, MGL_FWD, in, nin, out, nout, nd->tok, nd->layer);
}

/* Tables split by @row and used by an embedding hold a vocabulary: pad their rows, and the
 * bias of a linear tied to one, to a multiple of 128 * tp, so every rank holds an equal
 * share and the GEMMs keep an aligned width. */
static void plan_padding(Lower *L)
{
	const MglGraph *g = L->g;
	int64_t mult = 128 * (int64_t)L->t->tp;
	for (int i = 0; i < g->nnodes; i++) {
		const MglNode *nd = &g->nodes[i];
		if (nd->op != MGL_OP_EMBEDDING)
			continue;
		const MglNode *tab = &g->nodes[nd->in[0]];
		if (tab->split != MGL_SPLIT_ROW)
			continue;
		int64_t rows = tab->shape.d[0].n;
		L->padded[tab->param] = (rows + mult - 1) / mult * mult;
		if (!L->p->vocab) {
			L->p->vocab = rows;
			L->p->vocab_padded = L->padded[tab->param];
		}
	}
	for (int i = 0; i < g->nnodes; i++) {
		const MglNode *nd = &g->nodes[i];
		if (nd->op == MGL_OP_LINEAR && nd->nin == 3 && L->padded[g->nodes[nd->in[1]].param])
			L->padded[g->nodes[nd->in[2]].param] = L->padded[g->nodes[nd->in[1]].param];
	}
}

static void lower_params(Lower *L)
{
	const MglGraph *g = L->g;
	MglPlan *p = L->p;
	p->params = mgl_alloc(L->a, (size_t)(g->nparams + 1) * sizeof *p->params);
	p->nparams = p->capparams = g->nparams;
	for (int i = 0; i < g->nparams; i++) {
		const MglParam *gp = &g->params[i];
		MglPlanParam *pp = &p->params[i];
		int64_t shape[MGL_PLAN_MAX_RANK];
		bind_shape(L, &gp->shape, shape);
		pp->name = gp->name;
		pp->rank = gp->shape.rank;
		memcpy(pp->shape, shape, sizeof shape);
		pp->padded = L->padded[i] ? L->padded[i] : (pp->rank ? shape[0] : 1);
		if (pp->rank)
			shape[0] = pp->padded;
		pp->split_dim = gp->split ? gp->split_dim : -1;
		/* GPT-2's initialization: N(0, 0.02), the projections into the residual stream (the
		 * @row linears) scaled by 1/sqrt(2 layers); biases zero, norms' gains one */
		pp->init = gp->init;
		if (gp->init == MGL_INIT_NORMAL)
			pp->std = gp->split == MGL_SPLIT_ROW && pp->rank == 2 && gp->split_dim == 1 && g->layers > 0
				  ? 0.02 / sqrt(2.0 * (double)g->layers) : 0.02;
		pp->line = gp->tok->line;
		pp->col = gp->tok->col;
		pp->value = mgl_new_value(L->a, p, gp->name, MGL_V_PARAM, MGL_F32, pp->rank, shape);
		pp->grad = mgl_new_value(L->a, p, mgl_fmt(L->a, "grad:%s", gp->name), MGL_V_GRAD, MGL_F32, pp->rank, shape);
		p->values[pp->value].param = p->values[pp->grad].param = i;
		if (pp->split_dim >= 0)
			p->values[pp->value].layout = (MglLayout){MGL_L_S, (uint8_t)(pp->rank - pp->split_dim)};
		L->val[gp->node] = pp->value;
	}
}

static void lower_node(Lower *L, int id)
{
	const MglGraph *g = L->g;
	const MglNode *nd = &g->nodes[id];
	int64_t shape[MGL_PLAN_MAX_RANK];
	int rank = bind_shape(L, &nd->shape, shape);
	int in[MGL_MAX_IN];
	for (int i = 0; i < nd->nin; i++)
		in[i] = L->val[nd->in[i]];
	int out, s;
	switch (nd->op) {
	case MGL_OP_INPUT:
		L->val[id] = mgl_new_value(L->a, L->p, nd->name, MGL_V_INPUT, nd->dtype, rank, shape);
		return;
	case MGL_OP_PARAM:
		return;   /* lower_params made it */
	case MGL_OP_LINEAR: {
		/* the output width is the weight's (padded) rows */
		const MglValue *w = &L->p->values[in[1]];
		shape[rank - 1] = w->shape[0];
		int mm = value(L, nd->nin == 3 ? mgl_fmt(L->a, "%s.mm", nd->name) : nd->name, MGL_F32, rank, shape);
		s = step(L, MGL_OP_MATMUL, nd, in, 2, &mm, 1);
		L->producer[mm] = s;
		L->limit[mm] = g->params[g->nodes[nd->in[1]].param].shape.d[0].n;
		out = mm;
		if (nd->nin == 3) {
			out = value(L, nd->name, MGL_F32, rank, shape);
			int bin[2] = {mm, in[2]};
			L->producer[out] = step(L, MGL_OP_BIAS_ADD, nd, bin, 2, &out, 1);
			L->limit[out] = L->limit[mm];
		}
		L->val[id] = out;
		return;
	}
	case MGL_OP_CROSS_ENTROPY: {
		int z = in[0], t = in[1];
		int64_t rows[MGL_PLAN_MAX_RANK + 1];
		memcpy(rows, shape, sizeof shape);
		int r = L->p->values[t].rank;
		memcpy(rows, L->p->values[t].shape, (size_t)r * sizeof *rows);
		int gmax = mgl_new_value(L->a, L->p, mgl_fmt(L->a, "%s.max", nd->name), MGL_V_ACT, MGL_F32, r, rows);
		rows[r] = 2;
		int stats = mgl_new_value(L->a, L->p, mgl_fmt(L->a, "%s.stats", nd->name), MGL_V_ACT, MGL_F32, r + 1, rows);
		int lse = mgl_new_value(L->a, L->p, mgl_fmt(L->a, "%s.lse", nd->name), MGL_V_ACT, MGL_F32, r, rows);
		int loss = mgl_new_value(L->a, L->p, nd->name, MGL_V_ACT, MGL_F32, 0, shape);
		int64_t lim = L->limit[z] ? L->limit[z] : L->p->values[z].shape[L->p->values[z].rank - 1];
		int steps[3];
		steps[0] = step(L, MGL_OP_VOCAB_MAX, nd, &z, 1, &gmax, 1);
		int sin[3] = {z, t, gmax};
		steps[1] = step(L, MGL_OP_VOCAB_STATS, nd, sin, 3, &stats, 1);
		int lin[3] = {stats, gmax, t}, lout[2] = {loss, lse};
		steps[2] = step(L, MGL_OP_VOCAB_LOSS, nd, lin, 3, lout, 2);
		for (int i = 0; i < 3; i++) {
			L->p->steps[steps[i]].limit = lim;
			L->p->steps[steps[i]].index = nd->index == MGL_NO_IGNORE ? -1 : nd->index;
		}
		L->producer[gmax] = steps[0];
		L->producer[stats] = steps[1];
		L->producer[loss] = L->producer[lse] = steps[2];
		L->val[id] = loss;
		return;
	}
	case MGL_OP_ATTENTION: {
		out = value(L, nd->name, MGL_F32, rank, shape);
		int64_t ls[3] = {shape[0], nd->heads, shape[1]};
		int lse = mgl_new_value(L->a, L->p, mgl_fmt(L->a, "%s.lse", nd->name), MGL_V_ACT, MGL_F32, 3, ls);
		int outs[2] = {out, lse};
		s = step(L, MGL_OP_ATTENTION, nd, in, nd->nin, outs, 2);
		L->p->steps[s].heads = nd->heads;
		L->p->steps[s].causal = nd->causal;
		L->producer[out] = L->producer[lse] = s;
		L->val[id] = out;
		return;
	}
	default:
		break;
	}
	out = value(L, nd->name, nd->dtype, rank, shape);
	s = step(L, nd->op, nd, in, nd->nin, &out, 1);
	MglStep *st = &L->p->steps[s];
	L->producer[out] = s;
	L->val[id] = out;
	switch (nd->op) {
	case MGL_OP_EMBEDDING:
		st->limit = g->params[g->nodes[nd->in[0]].param].shape.d[0].n;
		break;
	case MGL_OP_LAYERNORM: st->p = nd->p; break;
	case MGL_OP_DROPOUT:
		st->p = nd->p;
		st->seed = ++L->dropouts;
		break;
	case MGL_OP_SELECT: st->index = nd->index; break;
	case MGL_OP_ADD:
	case MGL_OP_GELU:
	case MGL_OP_TANH:
		L->limit[out] = nd->nin ? L->limit[in[0]] : 0;
		break;
	default: break;
	}
}

/* ---------------------------------------------------------------- differentiation */

static MglValue *V(Lower *L, int v) { return &L->p->values[v]; }

/* A new activation gradient shaped like forward value v. */
static int grad_value(Lower *L, int v)
{
	const MglValue *x = V(L, v);
	return mgl_new_value(L->a, L->p, mgl_fmt(L->a, "grad:%s", x->name), MGL_V_ACT, x->dtype, x->rank, x->shape);
}

static int bwd(Lower *L, MglOp op, const MglStep *f, const int *in, int nin, const int *out, int nout)
{
	int s = mgl_emit(L->a, L->p, op, MGL_BWD, in, nin, out, nout, f->tok, f->layer);
	MglStep *st = &L->p->steps[s];
	st->line = f->line;
	st->col = f->col;
	return s;
}

static int pgrad(Lower *L, int v) { return L->p->params[V(L, v)->param].grad; }

/* Adds gradient g to forward value v's. */
static void acc(Lower *L, const MglStep *f, int v, int g)
{
	if (!L->needs[v])
		return;
	const MglValue *x = V(L, v), *gv = V(L, g);
	bool same = x->rank == gv->rank && !memcmp(x->shape, gv->shape, (size_t)x->rank * sizeof *x->shape);
	if (x->role == MGL_V_PARAM || !same) {
		/* broadcast in the forward (x + bias[d]), or a parameter used directly: sum into shape */
		int out = x->role == MGL_V_PARAM ? pgrad(L, v) : grad_value(L, v);
		bwd(L, MGL_OP_SUM_TO, f, &g, 1, &out, 1);
		if (x->role == MGL_V_PARAM)
			return;
		g = out;
	}
	if (L->grad[v] < 0) {
		L->grad[v] = g;
		return;
	}
	int sum = grad_value(L, v);
	int in[2] = {L->grad[v], g};
	bwd(L, MGL_OP_ACCUMULATE, f, in, 2, &sum, 1);
	L->grad[v] = sum;
}

typedef void GradFn(Lower *L, const MglStep *f, int g);

static void grad_matmul(Lower *L, const MglStep *f, int g)
{
	int x = f->in[0], w = f->in[1];
	if (L->needs[x]) {
		int dx = grad_value(L, x), in[2] = {g, w};
		bwd(L, MGL_OP_MATMUL_DX, f, in, 2, &dx, 1);
		acc(L, f, x, dx);
	}
	int dw = pgrad(L, w), in[2] = {g, x};
	bwd(L, MGL_OP_MATMUL_DW, f, in, 2, &dw, 1);
}

static void grad_bias_add(Lower *L, const MglStep *f, int g)
{
	acc(L, f, f->in[0], g);
	int db = pgrad(L, f->in[1]);
	bwd(L, MGL_OP_BIAS_GRAD, f, &g, 1, &db, 1);
}

static void grad_embedding(Lower *L, const MglStep *f, int g)
{
	int dt = pgrad(L, f->in[0]), in[3] = {g, f->in[1], f->in[0]};
	int s = bwd(L, MGL_OP_EMBEDDING_BWD, f, in, 3, &dt, 1);
	L->p->steps[s].limit = f->limit;
}

static void grad_layernorm(Lower *L, const MglStep *f, int g)
{
	int x = f->in[0];
	int out[3] = {grad_value(L, x), pgrad(L, f->in[1]), pgrad(L, f->in[2])};
	int in[3] = {g, x, f->in[1]};
	int s = bwd(L, MGL_OP_LAYERNORM_BWD, f, in, 3, out, 3);
	L->p->steps[s].p = f->p;
	acc(L, f, x, out[0]);
}

/* gelu, tanh, dropout: dx from dy and (for gelu) the input, (for tanh) the output */
static void grad_pointwise(Lower *L, const MglStep *f, int g)
{
	static const MglOp back[MGL_OP_COUNT] = {[MGL_OP_GELU] = MGL_OP_GELU_BWD, [MGL_OP_TANH] = MGL_OP_TANH_BWD,
						 [MGL_OP_DROPOUT] = MGL_OP_DROPOUT_BWD};
	int x = f->in[0], dx = grad_value(L, x);
	int in[2] = {g, f->op == MGL_OP_TANH ? f->out[0] : x};
	int s = bwd(L, back[f->op], f, in, f->op == MGL_OP_DROPOUT ? 1 : 2, &dx, 1);
	L->p->steps[s].p = f->p;
	L->p->steps[s].seed = f->seed;
	acc(L, f, x, dx);
}

static void grad_add(Lower *L, const MglStep *f, int g)
{
	acc(L, f, f->in[0], g);
	acc(L, f, f->in[1], g);
}

static void grad_attention(Lower *L, const MglStep *f, int g)
{
	int in[7] = {g, f->in[0], f->in[1], f->in[2], f->out[0], f->out[1], f->nin > 3 ? f->in[3] : -1};
	int out[3] = {grad_value(L, f->in[0]), grad_value(L, f->in[1]), grad_value(L, f->in[2])};
	int s = bwd(L, MGL_OP_ATTENTION_BWD, f, in, f->nin > 3 ? 7 : 6, out, 3);
	L->p->steps[s].heads = f->heads;
	L->p->steps[s].causal = f->causal;
	for (int i = 0; i < 3; i++)
		acc(L, f, f->in[i], out[i]);
}

static void grad_select(Lower *L, const MglStep *f, int g)
{
	int x = f->in[0], dx = grad_value(L, x);
	int s = bwd(L, MGL_OP_SELECT_BWD, f, &g, 1, &dx, 1);
	L->p->steps[s].index = f->index;
	acc(L, f, x, dx);
}

/* The loss: the whole softmax cross-entropy at once, from the log-sum-exp the forward kept. */
static void grad_vocab_loss(Lower *L, const MglStep *f, int g)
{
	const MglStep *stats = &L->p->steps[L->producer[f->in[0]]];
	int z = stats->in[0], dz = grad_value(L, z);
	int in[4] = {g, z, f->in[2], f->out[1]};
	int s = bwd(L, MGL_OP_CE_BWD, f, in, 4, &dz, 1);
	L->p->steps[s].limit = f->limit;
	L->p->steps[s].index = f->index;
	acc(L, f, z, dz);
}

static GradFn *const grad_of[MGL_OP_COUNT] = {
	[MGL_OP_MATMUL] = grad_matmul,       [MGL_OP_BIAS_ADD] = grad_bias_add,
	[MGL_OP_EMBEDDING] = grad_embedding, [MGL_OP_LAYERNORM] = grad_layernorm,
	[MGL_OP_GELU] = grad_pointwise,      [MGL_OP_TANH] = grad_pointwise,
	[MGL_OP_DROPOUT] = grad_pointwise,   [MGL_OP_ADD] = grad_add,
	[MGL_OP_ATTENTION] = grad_attention, [MGL_OP_SELECT] = grad_select,
	[MGL_OP_VOCAB_LOSS] = grad_vocab_loss,
	/* no gradient: positions (ids), vocab_max and vocab_stats (inside the loss's) */
};

MglPlan *mgl_lower(MglCtx *c, const MglGraph *g, const MglTarget *t)
{
	Lower L = {.c = c, .a = &c->arena, .g = g, .t = t};
	MglPlan *p = L.p = mgl_alloc(L.a, sizeof *p);
	p->version = MGL_PLAN_VERSION;
	p->model = g->model;
	p->preset = g->preset;
	p->tp = t->tp;
	p->dp = t->dp;
	p->sp = t->sp && t->tp > 1;   /* nothing to split the sequence over with one rank */
	p->batch = t->batch;
	p->seq = t->seq;
	p->act_dtype = t->act_dtype;
	p->nlayers = (int)g->layers;
	for (int i = 0; i < g->nsyms; i++)
		if (!strcmp(g->syms[i].name, "seq") && g->syms[i].max && t->seq > g->syms[i].max) {
			mgl_report(c, "error", NULL, "--seq %lld is longer than the model's sequence (seq = %lld)",
				   (long long)t->seq, (long long)g->syms[i].max);
			c->status = 2;
			mgl_fail(c);
		}

	int cap = 8 * g->nnodes + 64;   /* forward values: at most a few per node */
	L.val = mgl_alloc(L.a, (size_t)g->nnodes * sizeof *L.val);
	L.producer = mgl_alloc(L.a, (size_t)cap * sizeof *L.producer);
	L.limit = mgl_alloc(L.a, (size_t)cap * sizeof *L.limit);
	L.padded = mgl_alloc(L.a, (size_t)(g->nparams + 1) * sizeof *L.padded);
	for (int i = 0; i < cap; i++)
		L.producer[i] = -1;
	plan_padding(&L);
	lower_params(&L);
	for (int i = 0; i < g->nnodes; i++)
		lower_node(&L, i);

	/* which forward values need a gradient: those computed from a parameter */
	L.nfwd = p->nvalues;
	int nf = p->nsteps;
	L.grad = mgl_alloc(L.a, (size_t)L.nfwd * sizeof *L.grad);
	L.needs = mgl_alloc(L.a, (size_t)L.nfwd * sizeof *L.needs);
	for (int v = 0; v < L.nfwd; v++) {
		L.grad[v] = -1;
		L.needs[v] = p->values[v].role == MGL_V_PARAM;
	}
	for (int s = 0; s < nf; s++) {
		bool any = false;
		for (int i = 0; i < p->steps[s].nin; i++)
			any |= L.needs[p->steps[s].in[i]];
		for (int i = 0; i < p->steps[s].nout; i++)
			L.needs[p->steps[s].out[i]] = any && p->values[p->steps[s].out[i]].dtype != MGL_I32;
	}

	int loss = L.val[g->loss];
	int64_t none[1] = {0};
	L.grad[loss] = mgl_new_value(L.a, p, "d_loss", MGL_V_INPUT, MGL_F32, 0, none);
	for (int s = nf - 1; s >= 0; s--) {
		MglStep f = p->steps[s];   /* a copy: emitting steps may move the array */
		GradFn *fn = grad_of[f.op];
		if (!fn || L.grad[f.out[0]] < 0)
			continue;
		fn(&L, &f, L.grad[f.out[0]]);
	}
	return p;
}
