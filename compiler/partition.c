/* compiler/partition.c — layouts on the tensor-parallel group, and the collectives that
 * move values between them.
 *
 * Every value gets a layout (plan.h): R, S(d), P or M. Parameters have theirs from the
 * model's annotations and never move. Steps are visited in order (forward, then
 * backward); each op's legal signatures come from the layouts column of ops.def, and the
 * cheapest is chosen, counting what converting each input to the signature's layout
 * would move:
 *
 *   R -> S(d)   slice              nothing moved
 *   S(d) -> R   all-gather         n (t-1)/t bytes a rank
 *   P -> R      all-reduce         2 n (t-1)/t
 *   P -> S(2)   reduce-scatter     n (t-1)/t          (sequence parallelism only)
 *   M -> R      all-reduce (max)   2 n (t-1)/t
 *
 * Ties go to the signature listed first. So partial sums stay partial through ops that
 * accept them (the reduction is lazy: a P + P add keeps P), a value gathered once serves
 * every consumer in its phase, and the backward pass gathers again what the forward
 * gathered rather than keeping the gathered copy alive (Megatron's sequence parallelism
 * stores the split activation). Megatron's f and g operators are not special cases: the
 * gradient of a column-split linear's input comes out P from matmul_dx, and the layer
 * norm's backward asks for R — that is f's all-reduce; the forward all-reduce's gradient
 * arrives as R and the row-split matmul accepts it as is — that is g's identity.
 *
 * Finally every value's shape becomes this rank's: a split dimension divided by tp.
 */
#include "mgl.h"

#include <stdlib.h>
#include <string.h>

enum { K_FIXED, K_WILD, K_ANY };
enum { SIG_MAX_IN = 8, SIG_MAX_OUT = 4, SIG_MAX = 6 };

typedef struct {
	int nin, nout;
	MglLayout in[SIG_MAX_IN], out[SIG_MAX_OUT];
	uint8_t kin[SIG_MAX_IN], kout[SIG_MAX_OUT];
	bool sp_only;
} Sig;

static Sig sigs[MGL_OP_COUNT][SIG_MAX];
static int nsigs[MGL_OP_COUNT];
static bool parsed;

static int parse_layout(const char *s, MglLayout *l, uint8_t *k)
{
	*k = K_FIXED;
	switch (s[0]) {
	case 'R': *l = (MglLayout){MGL_L_R, 0}; return 1;
	case 'P': *l = (MglLayout){MGL_L_P, 0}; return 1;
	case 'M': *l = (MglLayout){MGL_L_M, 0}; return 1;
	case '*': *k = K_ANY; return 1;
	case 'S':
		if (s[1] >= '1' && s[1] <= '4') {
			*l = (MglLayout){MGL_L_S, (uint8_t)(s[1] - '0')};
			return 2;
		}
		*k = K_WILD;
		return 1;
	}
	fprintf(stderr, "mgl: internal error: bad layout '%s' in ops.def\n", s);
	abort();
}

/* "S1,S2>P R,S1>S1 ~S2,R>S2" into sigs[op] */
static void parse_sigs(void)
{
	for (int op = 0; op < MGL_OP_COUNT; op++) {
		const char *s = mgl_ops[op].layouts;
		while (*s) {
			Sig g = {0};
			if (*s == '~') {
				g.sp_only = true;
				s++;
			}
			bool outs = false;
			while (*s && *s != ' ') {
				if (*s == '>') {
					outs = true;
					s++;
					continue;
				}
				if (*s == ',') {
					s++;
					continue;
				}
				if (outs)
					s += parse_layout(s, &g.out[g.nout], &g.kout[g.nout]), g.nout++;
				else
					s += parse_layout(s, &g.in[g.nin], &g.kin[g.nin]), g.nin++;
			}
			while (*s == ' ')
				s++;
			sigs[op][nsigs[op]++] = g;
		}
	}
	parsed = true;
}

typedef struct {
	MglCtx *c;
	MglArena *a;
	MglPlan *p;
	int tp;
	bool sp;
	bool *laid;        /* value -> its layout has been decided */
	const void **tok;  /* value -> the source of the step that made it, for messages */
	MglMap cache;      /* (value, layout, phase) -> the converted value */
} Part;

static bool same(MglLayout a, MglLayout b) { return a.kind == b.kind && (a.kind != MGL_L_S || a.dim == b.dim); }

#define INF ((int64_t)1 << 62)


/* What converting value v to layout `need` costs (INF: not possible). */
static int64_t cost(const Part *P, int v, MglLayout need)
{
	const MglValue *x = &P->p->values[v];
	MglLayout have = x->layout;
	if (same(have, need))
		return 0;
	if (x->role == MGL_V_PARAM || x->role == MGL_V_GRAD)
		return INF;
	if (need.kind == MGL_L_S && need.dim > x->rank)
		return INF;
	int64_t n = mgl_value_bytes(x);
	switch (have.kind) {
	case MGL_L_R: return need.kind == MGL_L_S ? 1 : INF;
	case MGL_L_S: return need.kind == MGL_L_R ? 1000 + n : INF;
	case MGL_L_P:
		if (need.kind == MGL_L_R)
			return 1000 + 2 * n;
		return need.kind == MGL_L_S && P->sp && need.dim == 2 ? 1000 + n : INF;
	case MGL_L_M: return need.kind == MGL_L_R ? 1000 + 2 * n : INF;
	}
	return INF;
}

/* The dimension a signature's wildcard S stands for, given the step's inputs; 0: none. */
static int wild_dim(const Part *P, const Sig *g, const MglStep *s)
{
	for (int i = 0; i < s->nin && i < g->nin; i++)
		if (g->kin[i] == K_WILD && P->p->values[s->in[i]].layout.kind == MGL_L_S)
			return P->p->values[s->in[i]].layout.dim;
	for (int i = 0; i < s->nin && i < g->nin; i++)
		if (g->kin[i] == K_WILD && P->sp && P->p->values[s->in[i]].rank >= 2)
			return 2;
	return 0;
}

static MglLayout need_of(MglLayout l, uint8_t kind, int wild)
{
	return kind == K_WILD ? (MglLayout){MGL_L_S, (uint8_t)wild} : l;
}

/* A parameter's gradient must come out in the parameter's layout, or as partial sums of a
 * replicated one (reduced after the backward pass). */
static bool grad_fits(const Part *P, const MglStep *s, const Sig *g, int w)
{
	for (int k = 0; k < s->nout && k < g->nout; k++) {
		const MglValue *x = &P->p->values[s->out[k]];
		if (x->role != MGL_V_GRAD)
			continue;
		MglLayout want = P->p->values[P->p->params[x->param].value].layout;
		MglLayout l = need_of(g->out[k], g->kout[k], w);
		if (!same(l, want) && !(l.kind == MGL_L_P && want.kind == MGL_L_R) &&
		    !(s->op == MGL_OP_SUM_TO && l.kind == MGL_L_S && l.dim > x->rank && want.kind == MGL_L_R))
			return false;
	}
	return true;
}

static const Sig *choose(const Part *P, const MglStep *s, int *wild)
{
	const Sig *best = NULL;
	int64_t best_cost = INF;
	for (int k = 0; k < nsigs[s->op]; k++) {
		const Sig *g = &sigs[s->op][k];
		if ((g->sp_only && !P->sp) || g->nin < s->nin)
			continue;
		int w = wild_dim(P, g, s);
		if (!grad_fits(P, s, g, w))
			continue;
		int64_t c = 0;
		for (int i = 0; i < s->nin && c < INF; i++) {
			if (g->kin[i] == K_ANY)
				continue;
			if (g->kin[i] == K_WILD && !w) {
				c = INF;
				break;
			}
			int64_t ci = cost(P, s->in[i], need_of(g->in[i], g->kin[i], w));
			c = ci >= INF ? INF : c + ci;
		}
		if (c < best_cost) {
			best = g;
			best_cost = c;
			*wild = w;
		}
	}
	return best;
}

static _Noreturn void no_signature(Part *P, const MglStep *s)
{
	char buf[8];
	mgl_report(P->c, "error", s->tok, "%s cannot run on these layouts with --tp %d%s", mgl_ops[s->op].name,
		   P->tp, P->sp ? " --sp" : "");
	for (int i = 0; i < s->nin; i++) {
		const MglValue *x = &P->p->values[s->in[i]];
		mgl_hint(P->c, "input %d, '%s', is %s", i + 1, x->name, mgl_layout_str(x->layout, buf));
	}
	mgl_hint(P->c, "its signatures: %s", mgl_ops[s->op].layouts);
	mgl_fail(P->c);
}

/* Value v in layout `need`, converting it (with a collective step) if it is not. */
static int convert(Part *P, const MglStep *consumer, int v, MglLayout need)
{
	MglPlan *p = P->p;
	MglLayout have = p->values[v].layout;
	if (same(have, need))
		return v;
	/* one conversion serves every consumer; a gather is done again in the backward pass
	 * instead of keeping the forward's gathered copy alive through it */
	int64_t key = (int64_t)v << 8 | need.kind << 5 | need.dim << 1 | (have.kind == MGL_L_S && consumer->phase);
	int hit = mgl_map_get(&P->cache, (const char *)&key, (int)sizeof key);
	if (hit >= 0)
		return hit;
	char buf[8];
	MglValue nv = p->values[v];
	nv.name = mgl_fmt(P->a, "%s@%s", nv.name, mgl_layout_str(need, buf));
	nv.role = MGL_V_ACT;
	nv.layout = need;
	MGL_PUSH(P->a, p->values, p->nvalues, p->capvalues, nv);
	int out = p->nvalues - 1;
	MglOp op = have.kind == MGL_L_R ? MGL_OP_SLICE
		 : have.kind == MGL_L_S ? MGL_OP_ALL_GATHER
		 : need.kind == MGL_L_S ? MGL_OP_REDUCE_SCATTER : MGL_OP_ALL_REDUCE;
	int s = mgl_emit(P->a, p, op, consumer->phase, &v, 1, &out, 1, consumer->tok, consumer->layer);
	MglStep *st = &p->steps[s];
	st->line = consumer->line;
	st->col = consumer->col;
	st->attr.group = MGL_GROUP_TP;
	st->attr.dim = need.kind == MGL_L_S ? need.dim : have.kind == MGL_L_S ? have.dim : 0;
	st->attr.max = have.kind == MGL_L_M;
	if (op == MGL_OP_ALL_GATHER && consumer->phase == MGL_FWD && have.dim == 1) {
		/* a feature split undone: not Megatron's pattern, so say what it costs */
		mgl_report(P->c, "warning", consumer->tok, "%s needs all of '%s', which is split by features: "
			   "an all-gather of %s bytes per step", mgl_ops[consumer->op].name, p->values[v].name,
			   mgl_commas(mgl_value_bytes(&p->values[v]), (char[32]){0}));
		mgl_hint(P->c, "a @column output is meant for an attention or a @row linear; gelu and dropout keep the split");
	}
	P->laid[out] = true;
	P->tok[out] = consumer->tok;
	mgl_map_put(P->a, &P->cache, mgl_strndup(P->a, (const char *)&key, sizeof key), (int)sizeof key, out);
	return out;
}

/* This rank's shape of a value in layout l; the error names the dimension that does not
 * divide and the step or parameter it came from. */
static void localize(Part *P, MglValue *x, const void *tok)
{
	if (x->layout.kind != MGL_L_S || P->tp == 1)
		return;
	int d = x->rank - x->layout.dim;
	if (d < 0)
		mgl_error(P->c, tok, "internal error: '%s' is split along a dimension it does not have", x->name);
	if (x->shape[d] % P->tp) {
		mgl_report(P->c, "error", tok, "'%s' is split over --tp %d along a dimension of %s, which %d does not divide",
			   x->name, P->tp, mgl_commas(x->shape[d], (char[32]){0}), P->tp);
		char list[256];
		size_t n = 0;
		for (int t = 1; t <= 64 && n < sizeof list; t *= 2)
			if (x->shape[d] % t == 0)
				n += (size_t)snprintf(list + n, sizeof list - n, "%s%d", n ? ", " : "", t);
		mgl_hint(P->c, "--tp %s would divide it; or make the size a multiple of %d", list, P->tp);
		mgl_fail(P->c);
	}
	x->shape[d] /= P->tp;
}

/* A step with heads whose input is split along its features holds heads / tp of them:
 * whole heads, or an error. */
static void split_heads(Part *P, MglStep *s)
{
	bool split = false;
	for (int k = 0; k < s->nin; k++)
		split |= P->p->values[s->in[k]].layout.kind == MGL_L_S && P->p->values[s->in[k]].layout.dim == 1;
	if (!(mgl_ops[s->op].attrs & MGL_A(heads)) || !split)
		return;
	if (s->attr.heads % P->tp == 0) {
		s->attr.heads /= P->tp;
		return;
	}
	mgl_report(P->c, "error", s->tok, "%lld heads cannot be split over --tp %d: each rank must hold whole heads",
		   (long long)s->attr.heads, P->tp);
	const MglStep *q = NULL;
	for (int i = 0; i < P->p->nsteps && !q; i++)
		for (int j = 0; j < P->p->steps[i].nout; j++)
			if (P->p->steps[i].out[j] == s->in[0] && P->p->steps[i].tok)
				q = &P->p->steps[i];
	if (q)
		mgl_report(P->c, "note", q->tok, "the heads are split here, by the annotation on this linear");
	char list[256];
	size_t n = 0;
	for (int64_t t = 1; t <= s->attr.heads && n < sizeof list; t++)
		if (s->attr.heads % t == 0)
			n += (size_t)snprintf(list + n, sizeof list - n, "%s%lld", n ? ", " : "", (long long)t);
	mgl_hint(P->c, "--tp must divide %lld: %s", (long long)s->attr.heads, list);
	mgl_fail(P->c);
}

void mgl_partition(MglCtx *c, MglPlan *p)
{
	if (!parsed)
		parse_sigs();
	Part P = {.c = c, .a = &c->arena, .p = p, .tp = p->tp, .sp = p->sp && p->tp > 1};
	int cap = p->nvalues + 8 * p->nsteps + 64;
	P.laid = mgl_alloc(P.a, (size_t)cap * sizeof *P.laid);
	P.tok = mgl_alloc(P.a, (size_t)cap * sizeof *P.tok);
	for (int v = 0; v < p->nvalues; v++)
		P.laid[v] = p->values[v].role == MGL_V_PARAM || p->values[v].role == MGL_V_INPUT;

	MglStep *old = p->steps;
	int nold = p->nsteps;
	p->steps = NULL;
	p->nsteps = p->capsteps = 0;
	for (int i = 0; i < nold; i++) {
		MglStep st = old[i];
		int wild = 0;
		const Sig *g = choose(&P, &st, &wild);
		if (!g)
			no_signature(&P, &st);
		if (P.tp > 1) {
			for (int k = 0; k < st.nin; k++)
				if (g->kin[k] != K_ANY)
					st.in[k] = convert(&P, &st, st.in[k], need_of(g->in[k], g->kin[k], wild));
		}
		split_heads(&P, &st);
		for (int k = 0; k < st.nout; k++) {
			MglValue *x = &p->values[st.out[k]];
			MglLayout l = need_of(g->out[k], g->kout[k], wild);
			if (st.op == MGL_OP_SUM_TO && l.kind == MGL_L_S && l.dim > x->rank)
				l = (MglLayout){MGL_L_P, 0};   /* the split dimension is summed away */
			if (P.laid[st.out[k]]) {   /* a parameter's gradient, written by several steps */
				char b1[8], b2[8];
				if (!same(x->layout, l))
					mgl_error(c, st.tok, "internal error: the gradient '%s' comes out %s here and %s elsewhere",
						  x->name, mgl_layout_str(l, b1), mgl_layout_str(x->layout, b2));
				continue;
			}
			x->layout = l;
			P.laid[st.out[k]] = true;
			P.tok[st.out[k]] = st.tok;
		}
		MGL_PUSH(P.a, p->steps, p->nsteps, p->capsteps, st);
	}
	/* parameters (and their gradients, moments) keep the annotation's split; a gradient
	 * that came out P is reduced after the backward pass (adamw.c) */
	for (int i = 0; i < p->nparams; i++) {
		MglPlanParam *pp = &p->params[i];
		MglValue *w = &p->values[pp->value], *gr = &p->values[pp->grad];
		const MglTok *tok = NULL;
		for (int s = 0; s < p->nsteps && !tok; s++)
			for (int k = 0; k < p->steps[s].nin; k++)
				if (p->steps[s].in[k] == pp->value)
					tok = p->steps[s].tok;
		if (P.laid[pp->grad] && gr->layout.kind != MGL_L_P && !same(gr->layout, w->layout)) {
			char b1[8], b2[8];
			mgl_error(c, tok, "internal error: the gradient of '%s' comes out %s, the parameter is %s", pp->name,
				  mgl_layout_str(gr->layout, b1), mgl_layout_str(w->layout, b2));
		}
		P.tok[pp->value] = P.tok[pp->grad] = tok;
		if (gr->layout.kind != MGL_L_P)
			gr->layout = w->layout;
	}
	/* shapes until now were global: make them this rank's */
	for (int v = 0; v < p->nvalues; v++)
		localize(&P, &p->values[v], P.tok[v]);
}
