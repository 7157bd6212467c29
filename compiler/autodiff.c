/* compiler/autodiff.c — from the typed graph to the training program: lowering, then
 * reverse-mode differentiation. The result is a plan (plan/plan.h) with global shapes and
 * no layouts yet: the forward steps, then the backward steps in reverse order.
 *
 * Lowering binds batch and seq to the sizes being compiled for, pads the vocabulary (a
 * table split by @row) to a multiple of 128 * tp as Megatron does, and rewrites two ops
 * into the forms the runtime executes:
 *   linear(x, W, b)        -> matmul(x, W), then bias_add (separate, because a row-split
 *                             matmul yields partial sums and the bias must be added once)
 *   cross_entropy(z, t)    -> vocab_max(z), vocab_stats(z, t, max), vocab_loss(..., z), so
 *                             the partitioner can put the two reductions of a vocabulary-
 *                             parallel loss between them
 * Every other node becomes one step of its op, with the node's attributes.
 *
 * Differentiation walks the forward steps backwards, each op's gradient given by the rule
 * in its grad column of plan/ops.def: the backward steps to emit, what they read and which
 * inputs' gradients they make (parsed the first time the op is met). Backward steps carry
 * their forward step's attributes. An op whose rule cannot be followed stops the
 * compilation with an error that names it; so does a gradient reaching an op marked not
 * differentiable. Gradients of activations used twice are summed (accumulate steps);
 * gradients of parameters are written straight into the parameter's gradient buffer by
 * the ops that add into one (+dxN in a rule), and every step writing one adds into it (so
 * tied weights and gradient accumulation over micro-batches need nothing more here; the
 * reductions of gradient buffers run once, after the last micro-batch). The gradient of
 * the loss is an input, "d_loss", that the runtime fills (1 / (micro-batches x dp): the
 * mean over the step).
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
	int *grad;          /* forward value -> its gradient so far, -1 if none */
	bool *needs;        /* forward value -> depends on a parameter (needs a gradient) */
	int64_t *limit;     /* forward value -> true width of its last dimension (vocabulary padding) */
	int64_t *padded;    /* graph parameter -> rows after padding (0: not padded) */
	int nfwd;           /* forward values */
	uint32_t seeds;     /* counter: each step with a seed (a dropout) gets its own mask */
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
		     .line = t ? t->line : 0, .col = t ? t->col : 0, .fuse = -1};
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

/* A forward step for node nd, with the node's attributes that op carries; a step with a
 * seed (a dropout's mask) gets the next one. */
static int step(Lower *L, MglOp op, const MglNode *nd, const int *in, int nin, const int *out, int nout)
{
	int s = mgl_emit(L->a, L->p, op, MGL_FWD, in, nin, out, nout, nd->tok, nd->layer);
	MglStep *st = &L->p->steps[s];
	mgl_attrs_copy(&st->attr, &nd->attr, mgl_ops[op].attrs);
	if (mgl_ops[op].attrs & MGL_A(seed))
		st->attr.seed = ++L->seeds;
	return s;
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
	int out;
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
		step(L, MGL_OP_MATMUL, nd, in, 2, &mm, 1);
		L->limit[mm] = g->params[g->nodes[nd->in[1]].param].shape.d[0].n;
		out = mm;
		if (nd->nin == 3) {
			out = value(L, nd->name, MGL_F32, rank, shape);
			int bin[2] = {mm, in[2]};
			step(L, MGL_OP_BIAS_ADD, nd, bin, 2, &out, 1);
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
		int steps[3];
		steps[0] = step(L, MGL_OP_VOCAB_MAX, nd, &z, 1, &gmax, 1);
		int sin[3] = {z, t, gmax};
		steps[1] = step(L, MGL_OP_VOCAB_STATS, nd, sin, 3, &stats, 1);
		int lin[4] = {stats, gmax, t, z}, lout[2] = {loss, lse};
		steps[2] = step(L, MGL_OP_VOCAB_LOSS, nd, lin, 4, lout, 2);
		for (int i = 0; i < 3; i++)   /* the true vocabulary: the logits' columns past it are padding */
			L->p->steps[steps[i]].attr.limit = L->limit[z] ? L->limit[z] : L->p->values[z].shape[L->p->values[z].rank - 1];
		L->val[id] = loss;
		return;
	}
	case MGL_OP_ATTENTION: {
		out = value(L, nd->name, MGL_F32, rank, shape);
		int64_t ls[3] = {shape[0], nd->attr.heads, shape[1]};
		int lse = mgl_new_value(L->a, L->p, mgl_fmt(L->a, "%s.lse", nd->name), MGL_V_ACT, MGL_F32, 3, ls);
		int outs[2] = {out, lse};
		step(L, MGL_OP_ATTENTION, nd, in, nd->nin, outs, 2);
		L->val[id] = out;
		return;
	}
	default:
		break;
	}
	out = value(L, nd->name, nd->dtype, rank, shape);
	step(L, nd->op, nd, in, nd->nin, &out, 1);
	L->val[id] = out;
	if (mgl_ops[nd->op].flags & MGL_OPF_ELEMENTWISE)   /* the true width passes through */
		L->limit[out] = nd->nin ? L->limit[in[0]] : 0;
}

/* ---------------------------------------------------------------- gradient rules */

/* An op's gradient rule (its grad column in ops.def), parsed: steps of backward ops, or
 * pass-throughs of dy to one input. */
enum { GRAD_MAX_STEPS = 4, GRAD_MAX_IN = 8, GRAD_MAX_OUT = 4 };
typedef struct {
	int op;                    /* the backward op; -1: dy passes to input out[0].n */
	struct { char kind; uint8_t n; bool optional; } in[GRAD_MAX_IN];   /* kind: 'd' dy, 'x', 'y' */
	int nin;
	struct { uint8_t n; bool adds; } out[GRAD_MAX_OUT];                /* the gradient of input n */
	int nout;
} GradStep;

typedef struct {
	bool differentiable;
	GradStep steps[GRAD_MAX_STEPS];
	int n;
} GradRule;

/* An index after a letter: "x12" */
static int index_at(const char **s)
{
	if (**s < '0' || **s > '9')
		return -1;
	int n = 0;
	while (**s >= '0' && **s <= '9' && n < 100)
		n = n * 10 + (*(*s)++ - '0');
	return n;
}

static int bad_rule(char *err, size_t n, const MglOpInfo *op, const char *what)
{
	snprintf(err, n, "%s's gradient rule '%s' in plan/ops.def: %s", op->name, op->grad ? op->grad : "", what);
	return -1;
}

/* Parses op's rule into g; 0, or -1 with what is wrong in err. */
static int parse_rule(const MglOpInfo *op, GradRule *g, char *err, size_t errlen)
{
	memset(g, 0, sizeof *g);
	const char *s = op->grad;
	if (!s || !*s) {
		snprintf(err, errlen, "%s is differentiable but has no gradient rule (its grad column in plan/ops.def is "
			 "empty; write the backward steps, or \"-\" if no gradient flows through it)", op->name);
		return -1;
	}
	if (!strcmp(s, "-"))
		return 0;
	g->differentiable = true;
	int fwd_in = op->in_max < 0 ? 1 << 16 : op->in_max, fwd_out = op->nout < 0 ? 1 << 16 : op->nout;
	while (*s) {
		if (g->n == GRAD_MAX_STEPS)
			return bad_rule(err, errlen, op, "too many steps");
		GradStep *st = &g->steps[g->n++];
		st->op = -1;
		if (!strncmp(s, "dy>", 3)) {   /* a pass-through */
			s += 3;
		} else {
			size_t len = strcspn(s, "(");
			for (int k = 0; k < MGL_OP_COUNT; k++)
				if (strlen(mgl_ops[k].name) == len && !strncmp(mgl_ops[k].name, s, len))
					st->op = k;
			if (st->op < 0 || s[len] != '(')
				return bad_rule(err, errlen, op, "a step must name a backward op and its arguments: OP(dy,x0)>dx0");
			s += len + 1;
			for (;;) {
				if (st->nin == GRAD_MAX_IN)
					return bad_rule(err, errlen, op, "too many arguments");
				char kind = !strncmp(s, "dy", 2) ? 'd' : *s == 'x' || *s == 'y' ? *s : 0;
				s += kind == 'd' ? 2 : kind != 0;
				int n = kind == 'd' ? 0 : index_at(&s);
				bool opt = *s == '?';
				s += opt;
				if (!kind || n < 0 || (kind == 'x' && n >= fwd_in) ||
				    (kind == 'y' && n >= fwd_out) || (opt && kind != 'x'))
					return bad_rule(err, errlen, op, "an argument is dy, xN (xN? if optional) or yN, of an input or output the op has");
				st->in[st->nin].kind = kind;
				st->in[st->nin].n = (uint8_t)n;
				st->in[st->nin++].optional = opt;
				if (*s == ')')
					break;
				if (*s++ != ',')
					return bad_rule(err, errlen, op, "expected ',' or ')'");
			}
			s++;
			if (*s++ != '>')
				return bad_rule(err, errlen, op, "expected '>' and the gradients the step makes");
		}
		for (;;) {
			if (st->nout == GRAD_MAX_OUT)
				return bad_rule(err, errlen, op, "too many outputs");
			bool adds = *s == '+';
			s += adds;
			if (strncmp(s, "dx", 2))
				return bad_rule(err, errlen, op, "an output is dxN or +dxN");
			s += 2;
			int n = index_at(&s);
			if (n < 0 || n >= fwd_in)
				return bad_rule(err, errlen, op, "an output is the gradient of an input the op has");
			st->out[st->nout].n = (uint8_t)n;
			st->out[st->nout++].adds = adds;
			if (*s != ',')
				break;
			s++;
		}
		if (*s && *s++ != ' ')
			return bad_rule(err, errlen, op, "steps are separated by one space");
		if (st->op < 0) {
			if (st->nout != 1 || st->out[0].adds)
				return bad_rule(err, errlen, op, "dy passes to one input: dy>dxN");
			continue;
		}
		const MglOpInfo *b = &mgl_ops[st->op];
		int need = 0;
		for (int k = 0; k < st->nin; k++)
			need += !st->in[k].optional;
		char what[160];
		if (need < b->in_min || (b->in_max >= 0 && st->nin > b->in_max) || st->nout != b->nout) {
			snprintf(what, sizeof what, "%s takes %d to %d inputs and %d outputs", b->name, b->in_min, b->in_max, b->nout);
			return bad_rule(err, errlen, op, what);
		}
	}
	return 0;
}

int mgl_grad_check(const MglOpInfo *op, char *err, size_t errlen)
{
	GradRule g;
	return parse_rule(op, &g, err, errlen);
}

/* ---------------------------------------------------------------- differentiation */

static MglValue *V(Lower *L, int v) { return &L->p->values[v]; }

/* A new activation gradient shaped like forward value v. */
static int grad_value(Lower *L, int v)
{
	const MglValue *x = V(L, v);
	return mgl_new_value(L->a, L->p, mgl_fmt(L->a, "grad:%s", x->name), MGL_V_ACT, x->dtype, x->rank, x->shape);
}

static int pgrad(Lower *L, int v) { return L->p->params[V(L, v)->param].grad; }

/* A backward step of forward step f: its place in the model, and the attributes of f
 * that op carries too (a dropout's mask, a layer norm's eps, the heads). */
static void bwd(Lower *L, MglOp op, const MglStep *f, const int *in, int nin, const int *out, int nout)
{
	int s = mgl_emit(L->a, L->p, op, MGL_BWD, in, nin, out, nout, f->tok, f->layer);
	MglStep *st = &L->p->steps[s];
	st->line = f->line;
	st->col = f->col;
	mgl_attrs_copy(&st->attr, &f->attr, mgl_ops[op].attrs & mgl_ops[f->op].attrs);
}

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

/* The backward steps of forward step f, by its op's rule, given dy = g. */
static void differentiate(Lower *L, const GradRule *rule, const MglStep *f, int g)
{
	for (int i = 0; i < rule->n; i++) {
		const GradStep *gs = &rule->steps[i];
		if (gs->op < 0) {
			acc(L, f, f->in[gs->out[0].n], g);
			continue;
		}
		int in[GRAD_MAX_IN], nin = 0, out[GRAD_MAX_OUT];
		bool direct[GRAD_MAX_OUT];
		for (int k = 0; k < gs->nin; k++) {
			int n = gs->in[k].n;
			if (gs->in[k].kind == 'x' && n >= f->nin)
				continue;   /* an optional input the step does not have */
			in[nin++] = gs->in[k].kind == 'd' ? g : gs->in[k].kind == 'x' ? f->in[n] : f->out[n];
		}
		/* a gradient buffer is written directly by an op that adds into it; any other
		 * gradient is a new value, summed into what its input has */
		bool needed = false;
		for (int k = 0; k < gs->nout; k++) {
			int x = f->in[gs->out[k].n];
			direct[k] = gs->out[k].adds && V(L, x)->role == MGL_V_PARAM;
			out[k] = direct[k] ? pgrad(L, x) : grad_value(L, x);
			needed |= direct[k] || L->needs[x];
		}
		if (!needed)
			continue;   /* nothing it makes is wanted (matmul_dx of an input no parameter feeds) */
		bwd(L, (MglOp)gs->op, f, in, nin, out, gs->nout);
		for (int k = 0; k < gs->nout; k++)
			if (!direct[k])
				acc(L, f, f->in[gs->out[k].n], out[k]);
	}
}

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
	p->zero = t->dp > 1 ? t->zero : 0;   /* the command line refuses --zero 1 with dp 1 */
	p->recompute = t->recompute;
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
	L.limit = mgl_alloc(L.a, (size_t)cap * sizeof *L.limit);
	L.padded = mgl_alloc(L.a, (size_t)(g->nparams + 1) * sizeof *L.padded);
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

	int loss = p->loss = L.val[g->loss];
	p->logits = -1;   /* the logits of the loss's cross-entropy, else of the model's first */
	for (int i = 0; i < g->nnodes; i++)
		if (g->nodes[i].op == MGL_OP_CROSS_ENTROPY && (p->logits < 0 || i == g->loss))
			p->logits = L.val[g->nodes[i].in[0]];
	int64_t none[1] = {0};
	L.grad[loss] = mgl_new_value(L.a, p, "d_loss", MGL_V_INPUT, MGL_F32, 0, none);
	GradRule *rules = mgl_alloc(L.a, MGL_OP_COUNT * sizeof *rules);
	char (*why)[300] = mgl_alloc(L.a, MGL_OP_COUNT * sizeof *why);
	int *parsed = mgl_alloc(L.a, MGL_OP_COUNT * sizeof *parsed);   /* 0 not yet, 1 ok, -1 bad */
	for (int s = nf - 1; s >= 0; s--) {
		MglStep f = p->steps[s];   /* a copy: emitting steps may move the array */
		if (L.grad[f.out[0]] < 0)
			continue;   /* no gradient reaches it */
		if (!parsed[f.op])
			parsed[f.op] = parse_rule(&mgl_ops[f.op], &rules[f.op], why[f.op], sizeof why[f.op]) ? -1 : 1;
		if (parsed[f.op] < 0)
			mgl_error(c, f.tok, "internal error: %s", why[f.op]);
		if (!rules[f.op].differentiable)
			mgl_error(c, f.tok, "internal error: a gradient reaches %s, which plan/ops.def marks not differentiable",
				  mgl_ops[f.op].name);
		differentiate(&L, &rules[f.op], &f, L.grad[f.out[0]]);
	}
	return p;
}
