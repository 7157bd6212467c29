/* compiler/elaborate.c — from the AST to the typed graph.
 *
 * Elaboration runs the model file as a small program: it evaluates the config (config.c:
 * file, then the chosen preset, then --set), inlines every block call and unrolls every repeat, and
 * emits one graph node per operation with its dtype and shape. Parameters are created by
 * the ops that own them and named by path (layers.3.attention.q.weight): the path is the
 * chain of repeat iterations and block instances, then the name the value is assigned to
 * (or the op's name when the call is nested inside a larger expression).
 *
 * This is where a model is judged: every name, argument, annotation and shape error is
 * found here, reported at the token that caused it, with notes that point at where the
 * other half of the disagreement came from.
 */
#include "elab.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const mgl_split_name[3] = {"-", "column", "row"};

const char **elab_map_keys(MglArena *a, const MglMap *m, int *n)
{
	const char **v = mgl_alloc(a, (size_t)(m->n + 1) * sizeof *v);
	*n = 0;
	for (int i = 0; i < m->cap; i++)
		if (m->keys[i])
			v[(*n)++] = mgl_strndup(a, m->keys[i], (size_t)m->lens[i]);
	return v;
}

static Value v_int(int64_t i) { return (Value){.kind = V_INT, .i = i, .cfg = -1}; }
static Value v_real(double r) { return (Value){.kind = V_REAL, .r = r, .cfg = -1}; }
static Value v_tensor(int node) { return (Value){.kind = V_TENSOR, .node = node, .cfg = -1}; }

const char *elab_tokstr(Elab *E, const MglTok *t) { return mgl_strndup(E->a, t->p, (size_t)t->len); }
static MglNode *node(Elab *E, int id) { return &E->g->nodes[id]; }

const char *mgl_shape_str(const MglGraph *g, const MglShape *s, char *buf, size_t n)
{
	size_t k = 0;
	k += (size_t)snprintf(buf + k, n - k, "[");
	for (int i = 0; i < s->rank && k < n; i++) {
		const char *sep = i ? ", " : "";
		if (s->d[i].sym >= 0)
			k += (size_t)snprintf(buf + k, n - k, "%s%s", sep, g->syms[s->d[i].sym].name);
		else
			k += (size_t)snprintf(buf + k, n - k, "%s%lld", sep, (long long)s->d[i].n);
	}
	if (k < n)
		snprintf(buf + k, n - k, "]");
	return buf;
}

static const char *type_str(Elab *E, int id)
{
	char buf[160];
	const MglNode *nd = node(E, id);
	return mgl_fmt(E->a, "%s%s", nd->dtype == MGL_I32 ? "i32" : "f32",
		       mgl_shape_str(E->g, &nd->shape, buf, sizeof buf));
}

const char *elab_describe(Elab *E, Value v)
{
	switch (v.kind) {
	case V_INT: return mgl_fmt(E->a, "an integer (%lld)", (long long)v.i);
	case V_REAL: return mgl_fmt(E->a, "a number (%g)", v.r);
	case V_BOOL: return v.i ? "true" : "false";
	case V_TENSOR: return mgl_fmt(E->a, "a tensor %s", type_str(E, v.node));
	case V_LIST: return "a list";
	}
	return "?";
}

/* Points at where a value was defined, when that is not where it is used. */
static void note_origin(Elab *E, Value v)
{
	if (v.cfg >= 0)
		mgl_report(E->c, "note", E->cfg[v.cfg].def, "'%.*s' is defined here",
			   E->cfg[v.cfg].key->len, E->cfg[v.cfg].key->p);
	else if (v.kind == V_TENSOR)
		mgl_report(E->c, "note", node(E, v.node)->tok, "%s comes from here", type_str(E, v.node));
}

/* A real that is a whole number as an integer (repeat 2.0 is repeat 2). */
static Value whole(Value v)
{
	if (v.kind == V_REAL && v.r == floor(v.r) && fabs(v.r) < 9e15) {
		v.kind = V_INT;
		v.i = (int64_t)v.r;
	}
	return v;
}

/* A number as itself ("-2", "3.5"), anything else described. */
static const char *plain(Elab *E, Value v)
{
	if (v.kind == V_INT)
		return mgl_fmt(E->a, "%lld", (long long)v.i);
	if (v.kind == V_REAL)
		return mgl_fmt(E->a, "%g", v.r);
	return elab_describe(E, v);
}

static void count_work(Elab *E, const MglTok *t)
{
	if (++E->work > MGL_MAX_WORK)
		mgl_error(E->c, t, "the model is too large to elaborate (more than %s statements run)",
			  mgl_commas(MGL_MAX_WORK, (char[32]){0}));
}


/* ---------------------------------------------------------------- arithmetic */

static Value number(Elab *E, Value v, const MglExpr *e)
{
	if (v.kind != V_INT && v.kind != V_REAL) {
		mgl_report(E->c, "error", e->tok, "expected a number here, found %s", elab_describe(E, v));
		note_origin(E, v);
		if (v.kind == V_TENSOR)
			mgl_hint(E->c, "tensors are combined with '+' and the ops; '-', '*' and '/' are for numbers");
		mgl_fail(E->c);
	}
	return v;
}

static Value arith(Elab *E, const MglExpr *e, Value a, Value b)
{
	a = number(E, a, e->lhs);
	b = number(E, b, e->rhs);
	if (a.kind == V_INT && b.kind == V_INT) {
		int64_t r = 0;
		bool over = false;
		switch (e->op) {
		case '+': over = __builtin_add_overflow(a.i, b.i, &r); break;
		case '-': over = __builtin_sub_overflow(a.i, b.i, &r); break;
		case '*': over = __builtin_mul_overflow(a.i, b.i, &r); break;
		case '/':
			if (b.i == 0)
				mgl_error(E->c, e->name, "division by zero");
			if (a.i == INT64_MIN && b.i == -1)
				over = true;
			else if (a.i % b.i == 0)
				r = a.i / b.i;
			else
				return v_real((double)a.i / (double)b.i);   /* exact division: 7 / 2 = 3.5 */
			break;
		}
		if (over)
			mgl_error(E->c, e->name, "integer overflow: %lld %c %lld", (long long)a.i, e->op, (long long)b.i);
		return v_int(r);
	}
	double x = a.kind == V_INT ? (double)a.i : a.r, y = b.kind == V_INT ? (double)b.i : b.r, r = 0;
	switch (e->op) {
	case '+': r = x + y; break;
	case '-': r = x - y; break;
	case '*': r = x * y; break;
	case '/':
		if (y == 0)
			mgl_error(E->c, e->name, "division by zero");
		r = x / y;
		break;
	}
	if (!isfinite(r))
		mgl_error(E->c, e->name, "the result is too large to be a number");
	return v_real(r);
}

/* ---------------------------------------------------------------- graph building */

static int add_node(Elab *E, MglOp op, const MglTok *tok, MglDtype dt, MglShape shape, const char *name)
{
	MglGraph *g = E->g;
	if (g->nnodes >= MGL_MAX_NODES)
		mgl_error(E->c, tok, "the model is too large: more than %s operations", mgl_commas(MGL_MAX_NODES, (char[32]){0}));
	/* Fixed dimensions multiply to at most 2^40 elements, so later passes can multiply
	 * them by batch and sequence sizes in 64 bits without overflow. */
	int64_t numel = 1;
	for (int i = 0; i < shape.rank; i++)
		if (shape.d[i].sym < 0 && (__builtin_mul_overflow(numel, shape.d[i].n, &numel) || numel > MGL_MAX_NUMEL))
			mgl_error(E->c, tok, "this tensor is too large: its fixed dimensions hold more than 2^40 elements");
	MglNode nd = {.op = op, .tok = tok, .dtype = dt, .shape = shape, .name = name, .param = -1, .layer = E->layer};
	for (int i = 0; i < MGL_MAX_IN; i++)
		nd.in[i] = -1;
	MGL_PUSH(E->a, g->nodes, g->nnodes, g->capnodes, nd);
	return g->nnodes - 1;
}

static void add_input(Elab *E, int id, int in)
{
	MglNode *nd = node(E, id);
	nd->in[nd->nin++] = in;
}

/* A name not yet used for an instance: base, then base1, base2, ... */
static const char *unique(Elab *E, const char *base)
{
	const char *name = base;
	for (int k = 1; mgl_map_get(&E->instance_names, name, (int)strlen(name)) >= 0; k++)
		name = mgl_fmt(E->a, "%s%d", base, k);
	mgl_map_put(E->a, &E->instance_names, name, (int)strlen(name), 1);
	return name;
}

/* The path of a value or instance defined in frame fr: the assigned name if there is one,
 * else the op or block name made unique. */
static const char *path_of(Elab *E, Frame *fr, const char *target, const char *opname)
{
	if (target) {
		const char *path = mgl_fmt(E->a, "%s%s", fr->prefix, target);
		mgl_map_put(E->a, &E->instance_names, path, (int)strlen(path), 1);   /* taken for generated names */
		return path;
	}
	return unique(E, mgl_fmt(E->a, "%s%s", fr->prefix, opname));
}

/* A parameter and the PARAM node that holds it. */
static int add_param(Elab *E, const char *name, const MglTok *tok, MglShape shape, MglSplit split, int dim,
		     MglInit init)
{
	MglGraph *g = E->g;
	int prev = mgl_map_get(&E->param_names, name, (int)strlen(name));
	if (prev >= 0) {
		mgl_report(E->c, "error", tok, "a second parameter named '%s'", name);
		mgl_report(E->c, "note", g->params[prev].tok, "the first is created here");
		mgl_hint(E->c, "parameters are named after the value they define; assign this one to another name");
		mgl_fail(E->c);
	}
	int id = add_node(E, MGL_OP_PARAM, tok, MGL_F32, shape, name);
	node(E, id)->param = g->nparams;
	node(E, id)->split = split;
	mgl_map_put(E->a, &E->param_names, name, (int)strlen(name), g->nparams);
	MglParam p = {.name = name, .shape = shape, .split = split, .split_dim = split ? dim : -1,
		      .tok = tok, .node = id, .init = init};
	MGL_PUSH(E->a, g->params, g->nparams, g->capparams, p);
	return id;
}

/* ---------------------------------------------------------------- calls */

/* One call, its arguments evaluated. */
typedef struct {
	const MglExpr *e;
	MglOp op;
	Value pos[MGL_MAX_IN];
	const MglTok *pos_tok[MGL_MAX_IN];
	int npos;
	Value kw[8];
	const MglTok *kw_tok[8];   /* the keyword's name token, NULL if not given */
	const MglTok *kw_vtok[8];  /* where its value is written */
	MglSplit split;            /* from an annotation */
	const MglTok *annot;       /* the annotation's token, or NULL */
	const char *path;          /* where its parameters are named */
	const char *name;          /* for messages: "linear" */
} Call;

static const MglTok *arg_tok(const Call *k, int i) { return k->pos_tok[i]; }

static _Noreturn void bad_arg(Elab *E, const Call *k, int i, Value v, const char *want)
{
	mgl_report(E->c, "error", arg_tok(k, i), "argument %d of %s must be %s, not %s",
		   i + 1, k->name, want, elab_describe(E, v));
	note_origin(E, v);
	mgl_hint(E->c, "%s", mgl_ops[k->op].sig);
	mgl_fail(E->c);
}

static int want_tensor(Elab *E, const Call *k, int i, MglDtype dt, int min_rank)
{
	Value v = k->pos[i];
	if (v.kind != V_TENSOR)
		bad_arg(E, k, i, v, dt == MGL_I32 ? "a tensor of i32 ids" : "a tensor");
	const MglNode *nd = node(E, v.node);
	if (nd->dtype != dt)
		bad_arg(E, k, i, v, dt == MGL_I32 ? "a tensor of i32 ids" : "an f32 tensor");
	if (nd->shape.rank < min_rank)
		bad_arg(E, k, i, v, mgl_fmt(E->a, "a tensor of at least %d dimensions", min_rank));
	return v.node;
}

/* A positive integer dimension from a value. */
static int64_t want_size(Elab *E, const MglTok *t, Value v, const char *what)
{
	if (v.kind == V_INT && v.i > 0 && v.i <= INT32_MAX)
		return v.i;
	if (v.kind == V_REAL && v.r == floor(v.r) && v.r > 0 && v.r <= INT32_MAX)
		return (int64_t)v.r;
	if (v.kind == V_REAL)
		mgl_report(E->c, "error", t, "%s must be an integer, but this is %g", what, v.r);
	else if (v.kind == V_INT)
		mgl_report(E->c, "error", t, "%s must be between 1 and %s, but this is %lld", what,
			   mgl_commas(INT32_MAX, (char[32]){0}), (long long)v.i);
	else
		mgl_report(E->c, "error", t, "%s must be an integer, not %s", what, elab_describe(E, v));
	note_origin(E, v);
	mgl_fail(E->c);
}

/* Where op takes keyword argument kw among its kwargs, or -1. */
static int kw_slot(const MglOpInfo *op, const char *kw)
{
	const char *list = op->kwargs;
	for (int i = 0; *list; i++) {
		size_t len = strcspn(list, " ");
		if (len == strlen(kw) && !memcmp(list, kw, len))
			return i;
		list += len;
		list += *list == ' ';
	}
	return -1;
}

/* The keyword argument named kw, or NULL if the call does not give it. */
static const Value *kwarg(const Call *k, const char *kw)
{
	int i = kw_slot(&mgl_ops[k->op], kw);
	return i >= 0 && k->kw_tok[i] ? &k->kw[i] : NULL;
}

static const MglTok *kwarg_tok(const Call *k, const char *kw)
{
	const Value *v = kwarg(k, kw);
	return v ? k->kw_vtok[v - k->kw] : k->e->name;
}

static bool kw_bool(Elab *E, const Call *k, const char *kw, bool dflt)
{
	const Value *v = kwarg(k, kw);
	if (!v)
		return dflt;
	if (v->kind != V_BOOL)
		mgl_error(E->c, kwarg_tok(k, kw), "%s: '%s' must be true or false, not %s", k->name, kw,
			  elab_describe(E, *v));
	return v->i != 0;
}

static double real_of(Value v) { return v.kind == V_INT ? (double)v.i : v.r; }

static bool same_dim(MglDim a, MglDim b) { return a.sym == b.sym && (a.sym >= 0 || a.n == b.n); }

static bool same_shape(const MglShape *a, const MglShape *b)
{
	if (a->rank != b->rank)
		return false;
	for (int i = 0; i < a->rank; i++)
		if (!same_dim(a->d[i], b->d[i]))
			return false;
	return true;
}

static _Noreturn void shape_mismatch(Elab *E, const MglTok *at, const char *msg, int a, int b)
{
	mgl_report(E->c, "error", at, "%s: %s and %s", msg, type_str(E, a), type_str(E, b));
	mgl_report(E->c, "note", node(E, a)->tok, "%s comes from here", type_str(E, a));
	mgl_report(E->c, "note", node(E, b)->tok, "%s comes from here", type_str(E, b));
	mgl_fail(E->c);
}

static MglDim last_dim(Elab *E, const Call *k, int i)
{
	const MglNode *nd = node(E, k->pos[i].node);
	MglDim d = nd->shape.d[nd->shape.rank - 1];
	if (d.sym >= 0)
		mgl_error(E->c, arg_tok(k, i), "%s needs a fixed number of features, but the last dimension of %s is '%s'",
			  k->name, type_str(E, k->pos[i].node), E->g->syms[d.sym].name);
	return d;
}

static MglShape shape_of(Elab *E, int id) { return node(E, id)->shape; }

static MglShape with_last(MglShape s, int64_t n)
{
	s.d[s.rank - 1] = (MglDim){.n = n, .sym = -1};
	return s;
}

static MglShape vec(int64_t n) { return (MglShape){.rank = 1, .d = {{.n = n, .sym = -1}}}; }

/* heads must divide the features D of the op's input */
static void check_heads(Elab *E, const Call *k, int64_t D, int64_t H)
{
	if (D % H == 0)
		return;
	mgl_report(E->c, "error", kwarg_tok(k, "heads"), "%s features cannot be split into %lld heads",
		   mgl_commas(D, (char[32]){0}), (long long)H);
	note_origin(E, *kwarg(k, "heads"));
	char list[256];
	size_t n = 0;
	for (int64_t d = 1; d <= D && d <= 4096 && n < sizeof list; d++)
		if (D % d == 0 && (d >= H / 2 && d <= 2 * H))
			n += (size_t)snprintf(list + n, sizeof list - n, "%s%lld", n ? ", " : "", (long long)d);
	mgl_hint(E->c, "the number of heads must divide %s%s%s", mgl_commas(D, (char[32]){0}), n ? "; near it: " : "", list);
	mgl_fail(E->c);
}

/* Node id's attributes that the call gives by keyword (the op's kwargs that name one of
 * its attributes), each checked against its range in plan/ops.def, or else their defaults;
 * heads must divide the features of the first argument, a tensor. */
static void kw_attrs(Elab *E, const Call *k, int id)
{
	const MglOpInfo *op = &mgl_ops[k->op];
	MglAttrs *at = &node(E, id)->attr;
	for (int a = 0; a < MGL_ATTR_COUNT; a++) {
		const MglAttrInfo *in = &mgl_attrs[a];
		if (!(op->attrs & (1u << a)) || kw_slot(op, in->name) < 0)
			continue;
		const Value *v = kwarg(k, in->name);
		if (!v) {
			if (isnan(in->dflt)) {
				mgl_report(E->c, "error", k->e->name, "%s needs '%s', %s", op->name, in->name, in->what);
				mgl_hint(E->c, "%s", op->sig);
				mgl_fail(E->c);
			}
			mgl_attr_set(at, a, in->dflt);
			continue;
		}
		Value w = whole(*v);
		bool ok = in->kind == MGL_AK_BOOL ? w.kind == V_BOOL
			: in->kind == MGL_AK_INT ? w.kind == V_INT : w.kind == V_INT || w.kind == V_REAL;
		double x = !ok ? 0 : w.kind == V_REAL ? w.r : (double)w.i;   /* a bool: i */
		if (!ok || !(x >= in->lo && x <= in->hi)) {
			mgl_report(E->c, "error", kwarg_tok(k, in->name), "%s: '%s' must be %s, not %s", op->name, in->name, in->what,
				   elab_describe(E, *v));
			note_origin(E, *v);
			mgl_fail(E->c);
		}
		mgl_attr_set(at, a, x);
	}
	if (op->attrs & MGL_A(heads))
		check_heads(E, k, last_dim(E, k, 0).n, at->heads);
}

/* param([dims...]) */
static int elab_param(Elab *E, Call *k)
{
	Value v = k->pos[0];
	if (v.kind != V_LIST)
		bad_arg(E, k, 0, v, "a list of dimensions such as [vocab, d]");
	MglShape s = {.rank = v.ndims};
	for (int i = 0; i < v.ndims; i++)
		s.d[i] = (MglDim){.n = v.dims[i], .sym = -1};
	if (k->split && s.rank == 0)
		mgl_error(E->c, k->annot, "a scalar parameter cannot be split");
	int dim = k->split == MGL_SPLIT_ROW ? 0 : s.rank - 1;
	return add_param(E, k->path, k->e->name, s, k->split, dim, MGL_INIT_NORMAL);
}

/* embedding(table, ids): rows of table[V, D] picked by ids[...] -> [..., D] */
static int elab_embedding(Elab *E, Call *k)
{
	int table = want_tensor(E, k, 0, MGL_F32, 2);
	if (node(E, table)->op != MGL_OP_PARAM || node(E, table)->shape.rank != 2)
		bad_arg(E, k, 0, k->pos[0], "a parameter of two dimensions (param([rows, dim]))");
	int ids = want_tensor(E, k, 1, MGL_I32, 0);
	MglShape s = shape_of(E, ids);
	if (s.rank == MGL_MAX_RANK)
		bad_arg(E, k, 1, k->pos[1], mgl_fmt(E->a, "ids of fewer than %d dimensions", MGL_MAX_RANK));
	s.d[s.rank++] = node(E, table)->shape.d[1];
	int id = add_node(E, MGL_OP_EMBEDDING, k->e->name, MGL_F32, s, k->path);
	add_input(E, id, table);
	add_input(E, id, ids);
	return id;
}

/* positions(x): 0, 1, ..., n-1 along x's second (sequence) dimension -> i32[n] */
static int elab_positions(Elab *E, Call *k)
{
	int x = k->pos[0].kind == V_TENSOR ? k->pos[0].node : -1;
	if (x < 0 || node(E, x)->shape.rank < 2)
		bad_arg(E, k, 0, k->pos[0], "a tensor of shape [batch, seq, ...]");
	MglShape s = {.rank = 1, .d = {node(E, x)->shape.d[1]}};
	int id = add_node(E, MGL_OP_POSITIONS, k->e->name, MGL_I32, s, k->path);
	add_input(E, id, x);
	return id;
}

/* linear(x[..., K], N | weight[N, K], bias: b) -> [..., N]; weight [N, K] and bias [N] */
static int elab_linear(Elab *E, Call *k)
{
	int x = want_tensor(E, k, 0, MGL_F32, 1);
	int64_t K = last_dim(E, k, 0).n;
	Value w = k->pos[1];
	int wid, bid = -1;
	int64_t N;
	bool tied = w.kind == V_TENSOR;
	if (tied) {
		wid = w.node;
		const MglNode *wn = node(E, wid);
		if (wn->op != MGL_OP_PARAM || wn->shape.rank != 2)
			bad_arg(E, k, 1, w, "an output size or a weight parameter of two dimensions");
		if (k->annot) {
			mgl_report(E->c, "error", k->annot, "this linear uses the weight '%s', whose split is set where it is created",
				   wn->name);
			mgl_report(E->c, "note", wn->tok, "'%s' is created here", wn->name);
			mgl_fail(E->c);
		}
		N = wn->shape.d[0].n;
		if (wn->shape.d[1].n != K)
			shape_mismatch(E, k->e->name, "the weight's columns do not match the input's features", wid, x);
	} else {
		N = want_size(E, arg_tok(k, 1), w, "linear's output size");
		MglShape ws = {.rank = 2, .d = {{.n = N, .sym = -1}, {.n = K, .sym = -1}}};
		wid = add_param(E, mgl_fmt(E->a, "%s.weight", k->path), k->e->name, ws, k->split,
				k->split == MGL_SPLIT_ROW ? 1 : 0, MGL_INIT_NORMAL);
	}
	/* The bias is split where the output features are: by a column split, or by a tied
	 * weight whose rows (the vocabulary) are split. */
	MglSplit bsplit = k->split == MGL_SPLIT_COLUMN ? MGL_SPLIT_COLUMN : MGL_SPLIT_NONE;
	if (tied && E->g->params[node(E, wid)->param].split_dim == 0)
		bsplit = E->g->params[node(E, wid)->param].split;
	if (kw_bool(E, k, "bias", !tied))
		bid = add_param(E, mgl_fmt(E->a, "%s.bias", k->path), k->e->name, vec(N), bsplit, 0, MGL_INIT_ZEROS);
	int id = add_node(E, MGL_OP_LINEAR, k->e->name, MGL_F32, with_last(shape_of(E, x), N), k->path);
	node(E, id)->split = k->split;
	add_input(E, id, x);
	add_input(E, id, wid);
	if (bid >= 0)
		add_input(E, id, bid);
	return id;
}

/* A norm over the last dimension, layernorm(x[..., D], eps: e) -> [..., D]: creates
 * PATH.weight [D] (ones) and, when the op's step takes a third input, PATH.bias [D]
 * (zeros), never split; its attributes from keywords. */
static int elab_norm(Elab *E, Call *k)
{
	int x = want_tensor(E, k, 0, MGL_F32, 1);
	int64_t D = last_dim(E, k, 0).n;
	int w = add_param(E, mgl_fmt(E->a, "%s.weight", k->path), k->e->name, vec(D), MGL_SPLIT_NONE, -1, MGL_INIT_ONES);
	int b = mgl_ops[k->op].in_min < 3 ? -1
	      : add_param(E, mgl_fmt(E->a, "%s.bias", k->path), k->e->name, vec(D), MGL_SPLIT_NONE, -1, MGL_INIT_ZEROS);
	int id = add_node(E, k->op, k->e->name, MGL_F32, shape_of(E, x), k->path);
	kw_attrs(E, k, id);
	add_input(E, id, x);
	add_input(E, id, w);
	if (b >= 0)
		add_input(E, id, b);
	return id;
}

/* gelu(x), mul(a, b), ...: f32 tensors of one shape to one of that shape, attributes from
 * keywords */
static int elab_elementwise(Elab *E, Call *k)
{
	int x = want_tensor(E, k, 0, MGL_F32, 0);
	for (int i = 1; i < k->npos; i++) {
		int y = want_tensor(E, k, i, MGL_F32, 0);
		if (!same_shape(&node(E, y)->shape, &node(E, x)->shape))
			shape_mismatch(E, arg_tok(k, i), mgl_fmt(E->a, "%s takes tensors of one shape", k->name), x, y);
	}
	int id = add_node(E, k->op, k->e->name, MGL_F32, shape_of(E, x), k->path);
	kw_attrs(E, k, id);
	for (int i = 0; i < k->npos; i++)
		add_input(E, id, k->pos[i].node);
	return id;
}

/* dropout(x, p): zero each element with probability p, scale the rest by 1/(1-p). With p 0
 * it is the identity and makes no node (a model trained without dropout, as benchmarks
 * and fine-tuning often are, pays nothing for it). */
static int elab_dropout(Elab *E, Call *k)
{
	int x = want_tensor(E, k, 0, MGL_F32, 0);
	Value p = k->pos[1];
	if ((p.kind != V_INT && p.kind != V_REAL) || real_of(p) < 0 || real_of(p) >= 1) {
		mgl_report(E->c, "error", arg_tok(k, 1), "dropout's probability must be at least 0 and below 1, not %s",
			   p.kind == V_REAL ? mgl_fmt(E->a, "%g", p.r) : elab_describe(E, p));
		note_origin(E, p);
		mgl_fail(E->c);
	}
	if (real_of(p) == 0)
		return x;
	int id = add_node(E, MGL_OP_DROPOUT, k->e->name, MGL_F32, shape_of(E, x), k->path);
	node(E, id)->attr.p = real_of(p);
	add_input(E, id, x);
	return id;
}

/* add(a, b): elementwise with broadcasting from the right: [b, s, d] + [s, d] -> [b, s, d] */
static int add_tensors(Elab *E, const MglTok *at, int a, int b, const char *path)
{
	const MglNode *na = node(E, a), *nb = node(E, b);
	if (na->dtype != nb->dtype)
		shape_mismatch(E, at, "cannot add tensors of different types", a, b);
	const MglShape *big = na->shape.rank >= nb->shape.rank ? &na->shape : &nb->shape;
	const MglShape *small = big == &na->shape ? &nb->shape : &na->shape;
	MglShape s = *big;
	for (int i = 0; i < small->rank; i++) {
		MglDim x = small->d[small->rank - 1 - i], *y = &s.d[s.rank - 1 - i];
		if (same_dim(x, *y) || (x.sym < 0 && x.n == 1))
			continue;
		if (y->sym < 0 && y->n == 1)
			*y = x;
		else
			shape_mismatch(E, at, "cannot add tensors of different shapes", a, b);
	}
	int id = add_node(E, MGL_OP_ADD, at, na->dtype, s, path);
	add_input(E, id, a);
	add_input(E, id, b);
	return id;
}

static int elab_add(Elab *E, Call *k)
{
	for (int i = 0; i < 2; i++)
		if (k->pos[i].kind != V_TENSOR)
			bad_arg(E, k, i, k->pos[i], "a tensor");
	return add_tensors(E, k->e->name, k->pos[0].node, k->pos[1].node, k->path);
}

/* attention(q, k, v [batch, seq, D], heads: H, causal: c, mask: m [batch, seq]) -> [batch, seq, D] */
static int elab_attention(Elab *E, Call *k)
{
	int q = want_tensor(E, k, 0, MGL_F32, 3);
	for (int i = 1; i < 3; i++) {
		int t = want_tensor(E, k, i, MGL_F32, 3);
		if (!same_shape(&node(E, t)->shape, &node(E, q)->shape))
			shape_mismatch(E, arg_tok(k, i), "attention's q, k and v must have one shape", q, t);
	}
	if (node(E, q)->shape.rank != 3)
		bad_arg(E, k, 0, k->pos[0], "a tensor of shape [batch, seq, features]");
	int id = add_node(E, MGL_OP_ATTENTION, k->e->name, MGL_F32, shape_of(E, q), k->path);
	kw_attrs(E, k, id);
	for (int i = 0; i < 3; i++)
		add_input(E, id, k->pos[i].node);
	const Value *m = kwarg(k, "mask");
	if (m) {
		const MglShape *qs = &node(E, q)->shape;
		MglShape want = {.rank = 2, .d = {qs->d[0], qs->d[1]}};
		if (m->kind != V_TENSOR || node(E, m->node)->dtype != MGL_I32 ||
		    !same_shape(&node(E, m->node)->shape, &want)) {
			char buf[128];
			mgl_report(E->c, "error", kwarg_tok(k, "mask"), "attention's mask must be i32%s (1 keeps a position, 0 masks it), not %s",
				   mgl_shape_str(E->g, &want, buf, sizeof buf), elab_describe(E, *m));
			note_origin(E, *m);
			mgl_fail(E->c);
		}
		add_input(E, id, m->node);
	}
	return id;
}

/* rope(x [batch, seq, D], heads: H, theta: base) -> [batch, seq, D]: each head's D / H
 * features rotated in pairs, which takes an even number of them */
static int elab_rope(Elab *E, Call *k)
{
	int x = want_tensor(E, k, 0, MGL_F32, 0);
	if (node(E, x)->shape.rank != 3)
		bad_arg(E, k, 0, k->pos[0], "a tensor of shape [batch, seq, features]");
	int id = add_node(E, MGL_OP_ROPE, k->e->name, MGL_F32, shape_of(E, x), k->path);
	kw_attrs(E, k, id);
	int64_t D = last_dim(E, k, 0).n, H = node(E, id)->attr.heads;
	if (D / H % 2) {
		mgl_report(E->c, "error", kwarg_tok(k, "heads"), "rope rotates pairs of features, but %lld heads of %s "
			   "features have %lld each", (long long)H, mgl_commas(D, (char[32]){0}), (long long)(D / H));
		note_origin(E, *kwarg(k, "heads"));
		mgl_hint(E->c, "each head needs an even number of features");
		mgl_fail(E->c);
	}
	add_input(E, id, x);
	return id;
}

/* select(x [batch, seq, ...], i): position i of the sequence -> [batch, ...] */
static int elab_select(Elab *E, Call *k)
{
	int x = want_tensor(E, k, 0, MGL_F32, 2);
	Value i = whole(k->pos[1]);
	const MglShape *xs = &node(E, x)->shape;
	int64_t bound = xs->d[1].sym >= 0 ? E->g->syms[xs->d[1].sym].max : xs->d[1].n;
	if (i.kind != V_INT || i.i < 0 || (bound > 0 && i.i >= bound))
		bad_arg(E, k, 1, i, bound > 0 ? mgl_fmt(E->a, "a position from 0 to %s", mgl_commas(bound - 1, (char[32]){0}))
					      : "a position (an integer from 0)");
	MglShape s = {.rank = xs->rank - 1};
	for (int j = 0, o = 0; j < xs->rank; j++)
		if (j != 1)
			s.d[o++] = xs->d[j];
	int id = add_node(E, MGL_OP_SELECT, k->e->name, MGL_F32, s, k->path);
	node(E, id)->attr.position = i.i;
	add_input(E, id, x);
	return id;
}

/* cross_entropy(logits [..., V], targets [...], ignore: id) -> f32[] mean over the targets kept */
static int elab_cross_entropy(Elab *E, Call *k)
{
	int logits = want_tensor(E, k, 0, MGL_F32, 1);
	int targets = want_tensor(E, k, 1, MGL_I32, 0);
	MglShape want = shape_of(E, logits);
	want.rank--;
	if (!same_shape(&want, &node(E, targets)->shape))
		shape_mismatch(E, arg_tok(k, 1), "the targets must have the logits' shape without its last dimension",
			       logits, targets);
	int id = add_node(E, MGL_OP_CROSS_ENTROPY, k->e->name, MGL_F32, (MglShape){0}, k->path);
	kw_attrs(E, k, id);
	add_input(E, id, logits);
	add_input(E, id, targets);
	return id;
}

/* Each op's elaborator, as its row in plan/ops.def names it (none: internal ops) */
#define elab_none NULL
static int (*const elab_op[MGL_OP_COUNT])(Elab *, Call *) = {
#define OP(id, name, flags, kind, in_min, in_max, nout, attrs, layouts, grad, expr, npos_min, npos_max, kwargs, elab, sig) \
	[MGL_OP_##id] = elab_##elab,
#include "ops.def"
#undef OP
};
#undef elab_none

/* ---------------------------------------------------------------- blocks and statements */

static void bind(Elab *E, Frame *fr, const MglTok *name, Value v)
{
	int i = mgl_map_get(&fr->names, name->p, name->len);
	if (i >= 0) {       /* rebinding, as in `x = mlp(x)`: the newest value wins */
		fr->vals[i] = v;
		fr->defs[i] = name;
		return;
	}
	int n = fr->n;
	MGL_PUSH(E->a, fr->vals, fr->n, fr->cap, v);
	MGL_PUSH(E->a, fr->defs, n, fr->capdefs, name);
	mgl_map_put(E->a, &fr->names, name->p, name->len, fr->n - 1);
}

static Value run_block(Elab *E, Frame *fr, const MglBlock *b, const MglStmt *body, int n, bool top);

/* The block whose body is running (repeats push NULL on the same stack). */
static const MglBlock *current_block(const Elab *E)
{
	for (int i = E->nblocks - 1; i >= 0; i--)
		if (E->blocks[i])
			return E->blocks[i];
	return NULL;
}

static Value instantiate(Elab *E, Frame *caller, const MglBlock *b, const MglExpr *e, Value *args, int nargs)
{
	for (int i = 0; i < E->nblocks; i++)
		if (E->blocks[i] == b) {
			mgl_report(E->c, "error", e->name, "block '%.*s' calls itself", b->name->len, b->name->p);
			for (int j = i; j < E->nblocks; j++)
				mgl_report(E->c, "note", E->block_calls[j], "through this call");
			mgl_hint(E->c, "blocks cannot be recursive; use repeat for a stack of layers");
			mgl_fail(E->c);
		}
	if (E->nblocks == MGL_MAX_DEPTH)
		mgl_error(E->c, e->name, "blocks are nested too deeply (more than %d)", MGL_MAX_DEPTH);
	if (nargs != b->nparams) {
		mgl_report(E->c, "error", e->name, "block '%.*s' takes %d argument%s, but %d %s given",
			   b->name->len, b->name->p, b->nparams, b->nparams == 1 ? "" : "s", nargs,
			   nargs == 1 ? "is" : "are");
		mgl_report(E->c, "note", b->name, "'%.*s' is defined here", b->name->len, b->name->p);
		mgl_fail(E->c);
	}
	Frame fr = {.prefix = mgl_fmt(E->a, "%s.", path_of(E, caller, NULL, elab_tokstr(E, b->name)))};
	for (int i = 0; i < nargs; i++)
		bind(E, &fr, b->params[i], args[i]);
	E->block_calls[E->nblocks] = e->name;
	E->blocks[E->nblocks++] = b;
	Value v = run_block(E, &fr, b, b->body, b->nbody, true);
	E->nblocks--;
	return v;
}

static Value call(Elab *E, Frame *fr, const MglExpr *e, MglSplit split, const MglTok *annot, const char *target)
{
	const MglTok *name = e->name;
	int op = mgl_map_get(&E->op_names, name->p, name->len);
	int blk = mgl_map_get(&E->block_names, name->p, name->len);
	/* A block may take an op's name (block attention calls the attention op): it shadows
	 * the op everywhere but inside its own body, where it could not call itself anyway. */
	if (op >= 0 && blk >= 0 && current_block(E) == &E->f->blocks[blk])
		blk = -1;
	if (blk >= 0 && !fr)
		mgl_error(E->c, name, "config values are numbers; '%.*s' is a block, used in a model or block",
			  name->len, name->p);
	if (blk >= 0) {
		const MglBlock *b = &E->f->blocks[blk];
		if (annot) {
			mgl_report(E->c, "error", annot, "a block cannot be annotated");
			mgl_hint(E->c, "annotate the linear layers inside block '%.*s'", b->name->len, b->name->p);
			mgl_fail(E->c);
		}
		Value *args = mgl_alloc(E->a, (size_t)(e->nargs + 1) * sizeof *args);
		for (int i = 0; i < e->nargs; i++) {
			if (e->args[i].key)
				mgl_error(E->c, e->args[i].key, "blocks take positional arguments only");
			args[i] = elab_eval(E, fr, e->args[i].value, NULL);
		}
		return instantiate(E, fr, b, e, args, e->nargs);
	}
	if (op < 0) {
		const char *what = fr && mgl_map_get(&fr->names, name->p, name->len) >= 0 ? "a value"
				 : mgl_map_get(&E->cfg_names, name->p, name->len) >= 0 ? "a config value" : NULL;
		if (what)
			mgl_error(E->c, name, "'%.*s' is %s, not an op or a block", name->len, name->p, what);
		mgl_report(E->c, "error", name, "unknown op or block '%.*s'", name->len, name->p);
		const char **cands = mgl_alloc(E->a, (size_t)(MGL_OP_COUNT + E->f->nblocks) * sizeof *cands);
		int n = 0;
		for (int i = 0; i < MGL_OP_COUNT; i++)
			if (!(mgl_ops[i].flags & MGL_OPF_INTERNAL))
				cands[n++] = mgl_ops[i].name;
		for (int i = 0; i < E->f->nblocks; i++)
			cands[n++] = elab_tokstr(E, E->f->blocks[i].name);
		const char *best = mgl_closest(name->p, name->len, cands, n);
		if (best)
			mgl_hint(E->c, "did you mean '%s'?", best);
		mgl_fail(E->c);
	}
	if (!fr)
		mgl_error(E->c, name, "config values are numbers; '%.*s' is an op, used in a model or block",
			  name->len, name->p);
	const MglOpInfo *info = &mgl_ops[op];
	Call k = {.e = e, .op = (MglOp)op, .split = split, .annot = annot, .name = info->name};
	if (annot && !(info->flags & MGL_OPF_SPLIT)) {
		mgl_report(E->c, "error", annot, "%s cannot be split: only linear layers and parameters take @column or @row",
			   info->name);
		if (info->flags & MGL_OPF_PARAMS)
			mgl_hint(E->c, "%s's parameters are small and kept whole on every rank", info->name);
		else if (op == MGL_OP_EMBEDDING)
			mgl_hint(E->c, "annotate the table where it is created: wte = param([vocab, d]) @row");
		else
			mgl_hint(E->c, "%s has no weights; the compiler lays out its input and output for you", info->name);
		mgl_fail(E->c);
	}
	bool seen_kw = false;
	for (int i = 0; i < e->nargs; i++) {
		const MglArg *a = &e->args[i];
		if (!a->key) {
			if (seen_kw)
				mgl_error(E->c, a->value->tok, "a positional argument after a keyword argument");
			if (k.npos == info->npos_max) {
				mgl_report(E->c, "error", a->value->tok, "too many arguments to %s: it takes %d",
					   info->name, info->npos_max);
				mgl_hint(E->c, "%s", info->sig);
				mgl_fail(E->c);
			}
			k.pos_tok[k.npos] = a->value->tok;
			k.pos[k.npos++] = elab_eval(E, fr, a->value, NULL);
			continue;
		}
		seen_kw = true;
		const char *list = info->kwargs;
		int slot = -1;
		const char *names[8];
		int nn = 0;
		for (int j = 0; *list; j++) {
			size_t len = strcspn(list, " ");
			names[nn++] = mgl_strndup(E->a, list, len);
			if ((int)len == a->key->len && !memcmp(list, a->key->p, len))
				slot = j;
			list += len;
			list += *list == ' ';
		}
		if (slot < 0) {
			mgl_report(E->c, "error", a->key, "%s has no argument '%.*s'", info->name, a->key->len, a->key->p);
			const char *best = mgl_closest(a->key->p, a->key->len, names, nn);
			if (best)
				mgl_hint(E->c, "did you mean '%s'?", best);
			else
				mgl_hint(E->c, "%s", info->sig);
			mgl_fail(E->c);
		}
		if (k.kw_tok[slot]) {
			mgl_report(E->c, "error", a->key, "'%.*s' is given twice", a->key->len, a->key->p);
			mgl_report(E->c, "note", k.kw_tok[slot], "the first is here");
			mgl_fail(E->c);
		}
		k.kw_tok[slot] = a->key;
		k.kw_vtok[slot] = a->value->tok;
		k.kw[slot] = elab_eval(E, fr, a->value, NULL);
	}
	if (k.npos < info->npos_min) {
		mgl_report(E->c, "error", name, "%s takes %d argument%s, but %d %s given", info->name, info->npos_min,
			   info->npos_min == 1 ? "" : "s", k.npos, k.npos == 1 ? "is" : "are");
		mgl_hint(E->c, "%s", info->sig);
		mgl_fail(E->c);
	}
	k.path = path_of(E, fr, target, info->name);
	return v_tensor(elab_op[op](E, &k));
}

static const char *split_names[] = {"replicate", "column", "row"};

Value elab_eval(Elab *E, Frame *fr, const MglExpr *e, const char *target)
{
	switch (e->kind) {
	case MGL_N_INT: return v_int(e->ival);
	case MGL_N_REAL: return v_real(e->rval);
	case MGL_N_BOOL: return (Value){.kind = V_BOOL, .i = e->ival, .cfg = -1};
	case MGL_N_NAME: {
		const MglTok *t = e->name;
		int i = fr ? mgl_map_get(&fr->names, t->p, t->len) : -1;
		if (i >= 0)
			return fr->vals[i];
		int k = mgl_map_get(&E->cfg_names, t->p, t->len);
		if (k >= 0)
			return elab_config_value(E, k);
		mgl_report(E->c, "error", t, "unknown name '%.*s'", t->len, t->p);
		int nv = 0, nc = 0;
		const char **vars = fr ? elab_map_keys(E->a, &fr->names, &nv) : NULL;
		const char **cfgs = elab_map_keys(E->a, &E->cfg_names, &nc);
		const char **all = mgl_alloc(E->a, (size_t)(nv + nc + 1) * sizeof *all);
		for (int j = 0; j < nv + nc; j++)
			all[j] = j < nv ? vars[j] : cfgs[j - nv];
		const char *best = mgl_closest(t->p, t->len, all, nv + nc);
		if (best)
			mgl_hint(E->c, "did you mean '%s'?", best);
		else if (mgl_map_get(&E->op_names, t->p, t->len) >= 0 || mgl_map_get(&E->block_names, t->p, t->len) >= 0)
			mgl_hint(E->c, "'%.*s' is %s: call it with arguments", t->len, t->p,
				 mgl_map_get(&E->block_names, t->p, t->len) >= 0 ? "a block" : "an op");
		mgl_fail(E->c);
	}
	case MGL_N_NEG: {
		Value v = number(E, elab_eval(E, fr, e->lhs, NULL), e->lhs);
		if (v.kind == V_INT) {
			if (v.i == INT64_MIN)
				mgl_error(E->c, e->tok, "integer overflow");
			return v_int(-v.i);
		}
		return v_real(-v.r);
	}
	case MGL_N_BINOP: {
		Value a = elab_eval(E, fr, e->lhs, NULL), b = elab_eval(E, fr, e->rhs, NULL);
		if (e->op == '+' && (a.kind == V_TENSOR || b.kind == V_TENSOR)) {
			if (a.kind != V_TENSOR || b.kind != V_TENSOR) {
				Value n = a.kind == V_TENSOR ? b : a;
				mgl_report(E->c, "error", e->name, "cannot add %s to a tensor", elab_describe(E, n));
				note_origin(E, n);
				mgl_fail(E->c);
			}
			return v_tensor(add_tensors(E, e->name, a.node, b.node, path_of(E, fr, target, "add")));
		}
		return arith(E, e, a, b);
	}
	case MGL_N_LIST: {
		Value v = {.kind = V_LIST, .cfg = -1};
		if (e->nargs > MGL_MAX_RANK)
			mgl_error(E->c, e->args[MGL_MAX_RANK].value->tok, "a shape has at most %d dimensions", MGL_MAX_RANK);
		for (int i = 0; i < e->nargs; i++)
			v.dims[v.ndims++] = want_size(E, e->args[i].value->tok, elab_eval(E, fr, e->args[i].value, NULL),
						      "a dimension");
		return v;
	}
	case MGL_N_CALL:
		return call(E, fr, e, MGL_SPLIT_NONE, NULL, target);
	case MGL_N_ANNOT: {
		const MglTok *a = e->name;
		int split = -1;
		for (int i = 0; i < 3; i++)
			if ((int)strlen(split_names[i]) == a->len && !memcmp(split_names[i], a->p, (size_t)a->len))
				split = i;
		if (split < 0) {
			mgl_report(E->c, "error", a, "unknown annotation '@%.*s'", a->len, a->p);
			const char *best = mgl_closest(a->p, a->len, split_names, 3);
			mgl_hint(E->c, best ? "did you mean '@%s'?" : "the annotations are @column, @row and @replicate",
				 best);
			mgl_fail(E->c);
		}
		const MglExpr *in = e->lhs;
		if (in->kind == MGL_N_ANNOT)
			mgl_error(E->c, a, "a second annotation on one value");
		if (in->kind != MGL_N_CALL) {
			mgl_report(E->c, "error", a, "@%s must be written on the linear or param call that creates the weight",
				   split_names[split]);
			if (in->kind == MGL_N_NAME)
				mgl_hint(E->c, "annotate the call where '%.*s' is defined", in->name->len, in->name->p);
			mgl_fail(E->c);
		}
		if (!fr)
			mgl_error(E->c, a, "annotations belong in a model or block, not in the config");
		return call(E, fr, in, (MglSplit)split, a, target);
	}
	}
	mgl_fail(E->c);
}

/* Runs statements in frame fr. For a block (top = true) the last statement returns. */
static Value run_block(Elab *E, Frame *fr, const MglBlock *b, const MglStmt *body, int n, bool top)
{
	for (int i = 0; i < n; i++) {
		const MglStmt *s = &body[i];
		count_work(E, s->tok);
		switch (s->kind) {
		case MGL_S_ASSIGN: {
			const MglExpr *v = s->value;
			bool direct = v->kind == MGL_N_CALL || (v->kind == MGL_N_ANNOT && v->lhs->kind == MGL_N_CALL) ||
				      (v->kind == MGL_N_BINOP && v->op == '+');
			bind(E, fr, s->tok, elab_eval(E, fr, v, direct ? elab_tokstr(E, s->tok) : NULL));
			break;
		}
		case MGL_S_REPEAT: {
			Value cnt = whole(elab_eval(E, fr, s->value, NULL));
			if (cnt.kind != V_INT || cnt.i < 0 || cnt.i > MGL_MAX_REPEAT) {
				mgl_report(E->c, "error", s->value->tok, "repeat needs a count from 0 to %s, not %s",
					   mgl_commas(MGL_MAX_REPEAT, (char[32]){0}), plain(E, cnt));
				note_origin(E, cnt);
				mgl_fail(E->c);
			}
			const char *base = s->value->kind == MGL_N_NAME ? elab_tokstr(E, s->value->name) : "repeat";
			const char *outer = fr->prefix;
			const char *group = path_of(E, fr, NULL, base);
			bool layers = top && fr->prefix[0] == 0 && E->g->layers == 0 && b == E->f->model;
			if (layers)
				E->g->layers = cnt.i;
			for (int64_t it = 0; it < cnt.i; it++) {
				count_work(E, s->tok);
				if (layers)
					E->layer = (int)it;
				fr->prefix = mgl_fmt(E->a, "%s.%lld.", group, (long long)it);
				if (++E->nblocks > MGL_MAX_DEPTH)
					mgl_error(E->c, s->tok, "repeats are nested too deeply (more than %d)", MGL_MAX_DEPTH);
				E->blocks[E->nblocks - 1] = NULL;
				E->block_calls[E->nblocks - 1] = s->tok;
				Value r = run_block(E, fr, b, s->body, s->nbody, false);
				(void)r;
				E->nblocks--;
			}
			fr->prefix = outer;
			if (layers)
				E->layer = -1;
			break;
		}
		case MGL_S_RETURN:
			if (!top)
				mgl_error(E->c, s->tok, "return inside a repeat");
			if (i + 1 < n)
				mgl_error(E->c, body[i + 1].tok, "a statement after return is never run");
			return elab_eval(E, fr, s->value, NULL);
		}
	}
	if (top) {
		mgl_report(E->c, "error", b->end, "%s '%.*s' ends without a return", b == E->f->model ? "model" : "block",
			   b->name->len, b->name->p);
		mgl_hint(E->c, b == E->f->model ? "a model returns its loss: `return cross_entropy(logits, targets)`"
						 : "a block returns its output: `return x + h`");
		mgl_fail(E->c);
	}
	return (Value){0};
}

/* ---------------------------------------------------------------- the model */

static void setup_names(Elab *E)
{
	for (int i = 0; i < MGL_OP_COUNT; i++)
		if (!(mgl_ops[i].flags & MGL_OPF_INTERNAL))
			mgl_map_put(E->a, &E->op_names, mgl_ops[i].name, (int)strlen(mgl_ops[i].name), i);
	for (int i = 0; i < E->f->nblocks; i++) {
		const MglBlock *b = &E->f->blocks[i];
		int prev = mgl_map_get(&E->block_names, b->name->p, b->name->len);
		if (prev >= 0) {
			mgl_report(E->c, "error", b->name, "a second block named '%.*s'", b->name->len, b->name->p);
			mgl_report(E->c, "note", E->f->blocks[prev].name, "the first is here");
			mgl_fail(E->c);
		}
		mgl_map_put(E->a, &E->block_names, b->name->p, b->name->len, i);
		for (int j = 0; j < b->nparams; j++)
			for (int k = 0; k < j; k++)
				if (b->params[j]->len == b->params[k]->len &&
				    !memcmp(b->params[j]->p, b->params[k]->p, (size_t)b->params[j]->len))
					mgl_error(E->c, b->params[j], "two parameters named '%.*s'", b->params[j]->len,
						  b->params[j]->p);
	}
}

static void setup_inputs(Elab *E, Frame *fr)
{
	const MglBlock *m = E->f->model;
	MglGraph *g = E->g;
	g->inputs = mgl_alloc(E->a, (size_t)(m->ninputs + 1) * sizeof *g->inputs);
	g->syms = mgl_alloc(E->a, (size_t)(m->ninputs * MGL_MAX_RANK + 1) * sizeof *g->syms);
	for (int i = 0; i < m->ninputs; i++) {
		const MglInput *in = &m->inputs[i];
		if (mgl_map_get(&fr->names, in->name->p, in->name->len) >= 0)
			mgl_error(E->c, in->name, "two inputs named '%.*s'", in->name->len, in->name->p);
		MglDtype dt;
		if (in->dtype->len == 3 && !memcmp(in->dtype->p, "i32", 3))
			dt = MGL_I32;
		else if (in->dtype->len == 3 && !memcmp(in->dtype->p, "f32", 3))
			dt = MGL_F32;
		else
			mgl_error(E->c, in->dtype, "unknown type '%.*s': inputs are i32 (ids) or f32", in->dtype->len,
				  in->dtype->p);
		MglShape s = {.rank = in->rank};
		for (int j = 0; j < in->rank; j++) {
			const MglTok *d = in->dims[j];
			if (d->kind == MGL_TK_INT) {
				if (d->ival < 1 || d->ival > INT32_MAX)
					mgl_error(E->c, d, "a dimension must be between 1 and %s", mgl_commas(INT32_MAX, (char[32]){0}));
				s.d[j] = (MglDim){.n = d->ival, .sym = -1};
				continue;
			}
			bool symbolic = (d->len == 5 && !memcmp(d->p, "batch", 5)) || (d->len == 3 && !memcmp(d->p, "seq", 3));
			int k = mgl_map_get(&E->cfg_names, d->p, d->len);
			if (!symbolic) {   /* any other name is a config value */
				if (k < 0) {
					mgl_report(E->c, "error", d, "unknown dimension '%.*s'", d->len, d->p);
					mgl_hint(E->c, "an input's dimensions are batch, seq, integers and config values");
					mgl_fail(E->c);
				}
				s.d[j] = (MglDim){.n = want_size(E, d, elab_config_value(E, k), "a dimension"), .sym = -1};
				continue;
			}
			int sym = mgl_map_get(&E->sym_names, d->p, d->len);
			if (sym < 0) {
				sym = g->nsyms++;
				MglSymbol *y = &g->syms[sym];
				y->name = elab_tokstr(E, d);
				y->tok = d;
				if (k >= 0)   /* seq in the config: the longest sequence the model takes */
					y->max = want_size(E, d, elab_config_value(E, k),
							   mgl_fmt(E->a, "config '%s', the longest %s,", y->name, y->name));
				mgl_map_put(E->a, &E->sym_names, d->p, d->len, sym);
			}
			s.d[j] = (MglDim){.n = 0, .sym = sym};
		}
		int id = add_node(E, MGL_OP_INPUT, in->name, dt, s, elab_tokstr(E, in->name));
		node(E, id)->input = i;
		g->inputs[g->ninputs++] = id;
		bind(E, fr, in->name, v_tensor(id));
	}
}

MglGraph *mgl_elaborate(MglCtx *c, const MglFile *f, const MglOptions *opt)
{
	Elab E = {.c = c, .a = &c->arena, .f = f, .layer = -1};
	E.g = mgl_alloc(&c->arena, sizeof *E.g);
	E.g->model = elab_tokstr(&E, f->model->name);
	setup_names(&E);
	elab_setup_config(&E, opt);
	Frame fr = {.prefix = ""};
	setup_inputs(&E, &fr);
	Value loss = run_block(&E, &fr, f->model, f->model->body, f->model->nbody, true);
	const MglStmt *ret = &f->model->body[f->model->nbody - 1];
	if (loss.kind != V_TENSOR || node(&E, loss.node)->dtype != MGL_F32 || node(&E, loss.node)->shape.rank != 0) {
		mgl_report(c, "error", ret->value->tok, "the model must return its loss, a single f32 number; this is %s",
			   elab_describe(&E, loss));
		mgl_hint(c, "return cross_entropy(logits, targets)");
		mgl_fail(c);
	}
	E.g->loss = loss.node;
	return E.g;
}

MglGraph *mgl_compile_file(MglCtx *c, const char *path, const MglOptions *opt)
{
	jmp_buf jb, *saved = c->fail;
	c->fail = &jb;
	MglGraph *g = NULL;
	if (!setjmp(jb)) {
		MglSource *src = mgl_read_file(c, path);
		MglFile *f = mgl_parse(c, src);
		g = mgl_elaborate(c, f, opt);
	}
	c->fail = saved;
	return g;
}

/* ---------------------------------------------------------------- queries and dump */

int64_t mgl_shape_numel(const MglShape *s)
{
	int64_t n = 1;
	for (int i = 0; i < s->rank; i++)
		n *= s->d[i].n;
	return n;
}

int64_t mgl_param_count(const MglGraph *g)
{
	int64_t n = 0;
	for (int i = 0; i < g->nparams; i++)
		n += mgl_shape_numel(&g->params[i].shape);
	return n;
}

void mgl_dump_graph(FILE *f, const MglGraph *g)
{
	char buf[160];
	for (int i = 0; i < g->nnodes; i++) {
		const MglNode *nd = &g->nodes[i];
		fprintf(f, "%%%d = %s", i, mgl_ops[nd->op].name);
		for (int j = 0; j < nd->nin; j++)
			fprintf(f, "%s%%%d", j ? ", " : " ", nd->in[j]);
		fprintf(f, " : %s%s", nd->dtype == MGL_I32 ? "i32" : "f32", mgl_shape_str(g, &nd->shape, buf, sizeof buf));
		if (nd->split)
			fprintf(f, " @%s", mgl_split_name[nd->split]);
		mgl_attrs_write(f, nd->op, &nd->attr, false);
		fprintf(f, "  # %s (line %d)\n", nd->name, nd->tok->line);
	}
	fprintf(f, "loss = %%%d\n", g->loss);
}

