/* plan/plan.c — the plan's shared pieces: the arena, the op table, names of enums, and
 * the plan's text form (writer and reader; the format is docs/plan.md).
 *
 * The reader treats its input as hostile: every count, shape, offset and id is checked
 * before use, and a plan that is truncated, from another version, or inconsistent is
 * refused with the line that is wrong.
 */
#include "plan.h"

#include <stdarg.h>
#include <stdlib.h>

/* every attribute is 8 bytes: mgl_attrs_copy copies them so */
_Static_assert(sizeof(MglAttrs) == 8 * MGL_ATTR_COUNT, "an MglAttrs field is not 8 bytes");

const MglAttrInfo mgl_attrs[MGL_ATTR_COUNT] = {
#define ATTR(name, kind, lo, hi, dflt, what) {#name, MGL_AK_##kind, lo, hi, dflt, what, offsetof(MglAttrs, name)},
#include "ops.def"
#undef ATTR
};

const MglOpInfo mgl_ops[MGL_OP_COUNT] = {
#define OP(id, name, flags, kind, in_min, in_max, nout, attrs, layouts, grad, expr, npos_min, npos_max, kwargs, elab, sig) \
	{#name, flags, MGL_KIND_##kind, in_min, in_max, nout, attrs, layouts, grad, expr, npos_min, npos_max, kwargs, sig},
#include "ops.def"
#undef OP
};

double mgl_attr_get(const MglAttrs *a, int k)
{
	const char *at = (const char *)a + mgl_attrs[k].offset;
	if (mgl_attrs[k].kind == MGL_AK_REAL) {
		double d;
		memcpy(&d, at, sizeof d);
		return d;
	}
	int64_t i;
	memcpy(&i, at, sizeof i);
	return i == MGL_NONE ? MGL_NONE_ATTR : (double)i;
}

void mgl_attr_set(MglAttrs *a, int k, double v)
{
	char *at = (char *)a + mgl_attrs[k].offset;
	if (mgl_attrs[k].kind == MGL_AK_REAL) {
		memcpy(at, &v, sizeof v);
		return;
	}
	int64_t i = v == MGL_NONE_ATTR ? MGL_NONE : (int64_t)v;
	memcpy(at, &i, sizeof i);
}

void mgl_attrs_copy(MglAttrs *dst, const MglAttrs *src, uint32_t mask)
{
	for (int k = 0; k < MGL_ATTR_COUNT; k++)
		if (mask & (1u << k))
			memcpy((char *)dst + mgl_attrs[k].offset, (const char *)src + mgl_attrs[k].offset, 8);
}

const char *const mgl_dtype_name[3] = {"f32", "i32", "bf16"};
const int mgl_dtype_size[3] = {4, 4, 2};
const char *const mgl_role_name[MGL_V_ROLE_COUNT] = {"input", "param", "act", "grad", "state"};
const char *const mgl_phase_name[3] = {"fwd", "bwd", "opt"};
const char *const mgl_init_name[3] = {"normal", "zeros", "ones"};
const char *const mgl_recompute_name[3] = {"none", "selective", "full"};

const char *mgl_layout_str(MglLayout l, char buf[8])
{
	switch (l.kind) {
	case MGL_L_R: return "R";
	case MGL_L_P: return "P";
	case MGL_L_M: return "M";
	default: snprintf(buf, 8, "S%d", l.dim); return buf;
	}
}

/* ---------------------------------------------------------------- arena */

struct MglChunk { MglChunk *next; size_t size; _Alignas(16) unsigned char data[]; };

void *mgl_alloc(MglArena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (!a->head || a->cap - a->used < n) {
		size_t size = n > (64u << 10) ? n : (64u << 10);
		MglChunk *ch = mgl_xmalloc(sizeof *ch + size, "a block of the compiler's and the plan's arena");
		ch->next = a->head;
		ch->size = size;
		a->head = ch;
		a->used = 0;
		a->cap = size;
	}
	void *p = a->head->data + a->used;
	a->used += n;
	memset(p, 0, n);
	return p;
}

char *mgl_strndup(MglArena *a, const char *s, size_t n)
{
	char *d = mgl_alloc(a, n + 1);
	memcpy(d, s, n);
	return d;
}

char *mgl_fmt(MglArena *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	char *s = mgl_alloc(a, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

void mgl_arena_free(MglArena *a)
{
	for (MglChunk *ch = a->head, *next; ch; ch = next) {
		next = ch->next;
		free(ch);
	}
	a->head = NULL;
	a->used = a->cap = 0;
}


/* ---------------------------------------------------------------- a string -> int map */

static uint32_t hash(const char *s, int len)
{
	uint32_t h = 2166136261u;
	for (int i = 0; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

static int map_slot(const MglMap *m, const char *k, int len)
{
	uint32_t i = hash(k, len) & (uint32_t)(m->cap - 1);
	while (m->keys[i] && (m->lens[i] != len || memcmp(m->keys[i], k, (size_t)len)))
		i = (i + 1) & (uint32_t)(m->cap - 1);
	return (int)i;
}

int mgl_map_get(const MglMap *m, const char *k, int len)
{
	if (!m->cap)
		return -1;
	int i = map_slot(m, k, len);
	return m->keys[i] ? m->vals[i] : -1;
}

void mgl_map_put(MglArena *a, MglMap *m, const char *k, int len, int v)
{
	if (2 * (m->n + 1) > m->cap) {
		MglMap old = *m;
		m->cap = old.cap ? 2 * old.cap : 16;
		m->keys = mgl_alloc(a, (size_t)m->cap * sizeof *m->keys);
		m->lens = mgl_alloc(a, (size_t)m->cap * sizeof *m->lens);
		m->vals = mgl_alloc(a, (size_t)m->cap * sizeof *m->vals);
		m->n = 0;
		for (int i = 0; i < old.cap; i++)
			if (old.keys[i])
				mgl_map_put(a, m, old.keys[i], old.lens[i], old.vals[i]);
	}
	int i = map_slot(m, k, len);
	if (!m->keys[i])
		m->n++;
	m->keys[i] = k;
	m->lens[i] = len;
	m->vals[i] = v;
}


int64_t mgl_numel(const MglValue *v)
{
	int64_t n = 1;
	for (int i = 0; i < v->rank; i++)
		n *= v->shape[i];
	return n;
}

int64_t mgl_value_bytes(const MglValue *v) { return mgl_numel(v) * mgl_dtype_size[v->dtype]; }

int64_t mgl_param_numel(const MglPlanParam *q)
{
	int64_t n = 1;
	for (int i = 0; i < q->rank; i++)
		n *= q->shape[i];
	return n;
}

/* ---------------------------------------------------------------- lifetimes */

static bool in_arena(const MglValue *v) { return v->role == MGL_V_ACT || v->role == MGL_V_INPUT; }

/* whether two values share a byte: the same region (inputs live in the arena) and ranges that meet */
static bool share_bytes(const MglValue *a, const MglValue *b)
{
	MglRole ra = a->role == MGL_V_INPUT ? MGL_V_ACT : a->role, rb = b->role == MGL_V_INPUT ? MGL_V_ACT : b->role;
	return ra == rb && a->bytes > 0 && b->bytes > 0 && a->offset < b->offset + b->bytes && b->offset < a->offset + a->bytes;
}

void mgl_collective_waits(const MglPlan *p, int *wait)
{
	for (int c = 0; c < p->nsteps; c++) {
		const MglStep *x = &p->steps[c];
		wait[c] = -1;
		if (mgl_ops[x->op].kind != MGL_KIND_COLLECTIVE)
			continue;
		wait[c] = p->nsteps;
		for (int s = c + 1; s < p->nsteps && wait[c] == p->nsteps; s++) {
			const MglStep *y = &p->steps[s];
			for (int k = 0; k < y->nin; k++)
				for (int o = 0; o < x->nout; o++)
					if (y->in[k] == x->out[o])
						wait[c] = s;
			for (int k = 0; k < y->nout; k++)
				for (int i = 0; i < x->nin + x->nout; i++)
					if (share_bytes(&p->values[y->out[k]], &p->values[i < x->nin ? x->in[i] : x->out[i - x->nin]]))
						wait[c] = s;
		}
	}
}

int mgl_segment_end(const MglPlan *p, int from, int to, unsigned phases)
{
	for (int s = from; s < to; s++)
		if (mgl_ops[p->steps[s].op].kind == MGL_KIND_COLLECTIVE && (phases & (1u << p->steps[s].phase)))
			return s + 1;
	return to;
}

int mgl_group_end(const MglPlan *p, int s)
{
	int f = p->steps[s].fuse, end = s;
	while (f >= 0 && end + 1 < p->nsteps && p->steps[end + 1].fuse == f)
		end++;
	return end;
}

void mgl_plan_lifetimes(const MglPlan *p, int *first, int *last)
{
	for (int v = 0; v < p->nvalues; v++) {
		first[v] = p->values[v].role == MGL_V_INPUT ? 0 : -1;
		last[v] = -1;
	}
	for (int s = 0; s < p->nsteps; s++) {
		const MglStep *st = &p->steps[s];
		for (int k = 0; k < st->nout; k++)
			if (first[st->out[k]] < 0)
				first[st->out[k]] = s;
		int end = mgl_group_end(p, s);   /* a fused kernel reads its inputs until then */
		for (int k = 0; k < st->nin; k++)
			if (last[st->in[k]] < end)
				last[st->in[k]] = end;
	}
	for (int v = 0; v < p->nvalues; v++)
		if (first[v] >= 0 && last[v] < first[v])
			last[v] = last[v] < 0 ? p->nsteps - 1 : first[v];
}

/* ---------------------------------------------------------------- kinds */

const char *const mgl_kind_name[MGL_KIND_COUNT] = {"attention", "gemm", "layernorm", "classifier", "optimizer",
						   "collectives", "other"};

void mgl_step_kinds(const MglPlan *p, MglKind *kind)
{
	enum { MADE = 1, READ = 2 };   /* by a classifier step */
	unsigned char *by = mgl_xcalloc((size_t)p->nvalues + 1, 1, "the classifier's values");
	for (int s = 0; s < p->nsteps; s++) {
		const MglStep *st = &p->steps[s];
		if (mgl_ops[st->op].kind != MGL_KIND_CLASSIFIER)
			continue;
		for (int k = 0; k < st->nin; k++)
			by[st->in[k]] |= READ;
		for (int k = 0; k < st->nout; k++)
			by[st->out[k]] |= MADE;
	}
	for (int s = 0; s < p->nsteps; s++) {
		const MglStep *st = &p->steps[s];
		MglKind k = mgl_ops[st->op].kind;
		for (int i = 0; k == MGL_KIND_GEMM && i < st->nin; i++)
			k = by[st->in[i]] & MADE ? MGL_KIND_CLASSIFIER : k;
		for (int i = 0; k == MGL_KIND_GEMM && i < st->nout; i++)
			k = by[st->out[i]] & READ ? MGL_KIND_CLASSIFIER : k;
		kind[s] = st->fuse >= 0 && st->fuse < s ? kind[st->fuse] : k;
	}
	free(by);
}

typedef struct { int64_t offset; int v; } Placed;
static int by_offset(const void *a, const void *b)
{
	int64_t x = ((const Placed *)a)->offset, y = ((const Placed *)b)->offset;
	return x < y ? -1 : x > y;
}

int mgl_plan_check_memory(const MglPlan *p, char *err, size_t errlen)
{
	for (int s = 0; s < p->nsteps; s++) {
		int f = p->steps[s].fuse;
		if (f >= 0 && (f > s || p->steps[f].fuse != f || (s > f && p->steps[s - 1].fuse != f))) {
			snprintf(err, errlen, "step %d is fused with step %d, but steps %d to %d are not a fused group led by %d", s, f,
				 f, s, f);
			return -1;
		}
	}
	/* out of memory is no error of the plan's (the compiler takes one for its own bug) */
	int n = p->nvalues, *first = mgl_xmalloc(((size_t)n + 1) * sizeof *first, "the values' lifetimes"),
	    *last = mgl_xmalloc(((size_t)n + 1) * sizeof *last, "the values' lifetimes");
	Placed *order = mgl_xmalloc(((size_t)n + 1) * sizeof *order, "the values by offset");
	int m = 0, rc = 0;
	mgl_plan_lifetimes(p, first, last);
	for (int v = 0; v < n; v++)
		if (in_arena(&p->values[v]) && first[v] >= 0 && p->values[v].bytes > 0)
			order[m++] = (Placed){p->values[v].offset, v};
	qsort(order, (size_t)m, sizeof *order, by_offset);
	/* each value against the ones that start inside its bytes: alive at one step too? */
	for (int i = 0; i < m && !rc; i++) {
		const MglValue *a = &p->values[order[i].v];
		for (int j = i + 1; j < m && order[j].offset < a->offset + a->bytes; j++) {
			int x = order[i].v, y = order[j].v;
			if (first[x] <= last[y] && first[y] <= last[x]) {
				snprintf(err, errlen, "values %%%d (%s) and %%%d (%s) share arena bytes while both are alive (steps %d-%d and %d-%d)",
					 x, a->name, y, p->values[y].name, first[x], last[x], first[y], last[y]);
				rc = -1;
				break;
			}
		}
	}
	free(first);
	free(last);
	free(order);
	return rc;
}

/* ---------------------------------------------------------------- fused groups */

/* x's shape is a suffix of o's: x broadcasts to o from the right */
static bool suffix_of(const MglValue *x, const MglValue *o)
{
	if (x->rank > o->rank)
		return false;
	for (int k = 1; k <= x->rank; k++)
		if (x->shape[x->rank - k] != o->shape[o->rank - k])
			return false;
	return true;
}

static bool reads_index(const MglStep *st) { return strchr(mgl_ops[st->op].expr, 'G') != NULL; }

bool mgl_chain_ok(const MglPlan *p, const int *uses, int head, int last)
{
	if (head < 0 || last >= p->nsteps || head > last)
		return false;
	const MglValue *o = &p->values[p->steps[last].out[0]];
	int nin = 0, indexed = -1;
	for (int s = head; s <= last; s++) {
		const MglStep *st = &p->steps[s];
		if (!*mgl_ops[st->op].expr || st->nout != 1 || st->phase != p->steps[head].phase)
			return false;
		const MglValue *y = &p->values[st->out[0]];
		if (y->role != MGL_V_ACT || y->dtype == MGL_I32 || mgl_numel(y) != mgl_numel(o))
			return false;
		int chained = s > head ? p->steps[s - 1].out[0] : -1;
		bool reads_chain = s == head;
		for (int k = 0; k < st->nin; k++) {
			const MglValue *x = &p->values[st->in[k]];
			if (st->in[k] == chained) {
				reads_chain = true;
				continue;
			}
			if (++nin > MGL_CHAIN_MAX_IN || x->dtype == MGL_I32 || !suffix_of(x, o))
				return false;
		}
		if (!reads_chain || (s > head && uses[chained] != 1))
			return false;
		if (reads_index(st)) {
			if (indexed >= 0 && (p->values[st->in[0]].layout.kind != p->values[indexed].layout.kind ||
					     p->values[st->in[0]].layout.dim != p->values[indexed].layout.dim))
				return false;
			indexed = st->in[0];
		}
	}
	return true;
}

int mgl_epilogue_steps(unsigned epi)
{
	return !!(epi & MGL_EPI_BIAS) + !!(epi & MGL_EPI_GELU) + !!(epi & MGL_EPI_ADD) + !!(epi & MGL_EPI_DGELU);
}

static bool same_shape(const MglValue *a, const MglValue *b)
{
	return a->rank == b->rank && !memcmp(a->shape, b->shape, (size_t)a->rank * sizeof *a->shape);
}

static bool alike(const MglValue *a, const MglValue *b)
{
	return a->dtype == b->dtype && a->layout.kind == b->layout.kind && a->layout.dim == b->layout.dim && same_shape(a, b);
}

/* Step `at` adds v, made in phase ph and read by no other step, to another value: an add or
 * accumulate of v and an activation like it into an activation like it (a GEMM's
 * MGL_EPI_ADD, for bf16 v; a norm's backward adding the residual's gradient). */
static bool adds_to(const MglPlan *p, const int *uses, int at, int v, MglPhase ph)
{
	if (at >= p->nsteps || uses[v] != 1)
		return false;
	const MglStep *a = &p->steps[at];
	if ((a->op != MGL_OP_ADD && a->op != MGL_OP_ACCUMULATE) || a->nin != 2 || a->phase != ph)
		return false;
	int other = a->in[0] == v ? a->in[1] : a->in[1] == v ? a->in[0] : -1;
	const MglValue *x = &p->values[v];
	return other >= 0 && other != v && alike(&p->values[other], x) && alike(&p->values[a->out[0]], x) &&
	       p->values[other].role == MGL_V_ACT && p->values[a->out[0]].role == MGL_V_ACT;
}

bool mgl_epilogue_ok(const MglPlan *p, const int *uses, int s, unsigned epi)
{
	const MglStep *m = &p->steps[s];
	if (m->op == MGL_OP_MATMUL_DX && epi == MGL_EPI_DGELU) {
		if (s + 1 >= p->nsteps || uses[m->out[0]] != 1)
			return false;
		const MglStep *g = &p->steps[s + 1];
		if (g->op != MGL_OP_GELU_BWD || g->nin != 2 || g->in[0] != m->out[0] || g->phase != m->phase ||
		    g->out[0] == g->in[1] || g->out[0] == m->in[0] || g->out[0] == m->in[1])
			return false;   /* (the GEMM would write over what it reads) */
		const MglValue *x = &p->values[g->in[1]], *dx = &p->values[g->out[0]], *dy = &p->values[m->out[0]];
		return alike(x, dx) && alike(dy, dx) && x->dtype == MGL_BF16 && dx->role == MGL_V_ACT && dx->rank > 0 &&
		       dx->shape[dx->rank - 1] % 8 == 0;   /* (the auxiliary input's leading dimension) */
	}
	if (m->op == MGL_OP_MATMUL_DX)
		return epi == MGL_EPI_ADD && adds_to(p, uses, s + 1, m->out[0], m->phase) && p->values[m->out[0]].dtype == MGL_BF16;
	if (m->op != MGL_OP_MATMUL || !(epi & MGL_EPI_BIAS) || (epi & ~(unsigned)(MGL_EPI_BIAS | MGL_EPI_GELU | MGL_EPI_ADD)) ||
	    (epi & MGL_EPI_GELU && epi & MGL_EPI_ADD) || s + 1 >= p->nsteps)
		return false;
	const MglStep *b = &p->steps[s + 1];
	const MglValue *y = &p->values[b->out[0]];
	if (b->op != MGL_OP_BIAS_ADD || b->in[0] != m->out[0] || uses[m->out[0]] != 1 || b->phase != m->phase ||
	    p->values[b->in[1]].role != MGL_V_PARAM || y->role != MGL_V_ACT || y->dtype != MGL_BF16)
		return false;
	if (epi & MGL_EPI_ADD)
		return adds_to(p, uses, s + 2, b->out[0], m->phase);
	if (!(epi & MGL_EPI_GELU))
		return true;
	if (s + 2 >= p->nsteps)
		return false;
	const MglStep *g = &p->steps[s + 2];
	const MglValue *z = &p->values[g->out[0]];
	return g->op == MGL_OP_GELU && g->in[0] == b->out[0] && g->phase == m->phase && z->role == MGL_V_ACT &&
	       z->dtype == MGL_BF16 && y->rank > 0 && y->shape[y->rank - 1] % 8 == 0;
}

bool mgl_adamw_group_ok(const MglPlan *p, int head, int last)
{
	if (head < 0 || last >= p->nsteps || head > last)
		return false;
	for (int s = head; s <= last; s++) {
		const MglStep *st = &p->steps[s];
		if (st->op != MGL_OP_ADAMW || st->nin != 5 || st->phase != p->steps[head].phase ||
		    st->in[4] != p->steps[head].in[4])
			return false;
	}
	return true;
}

bool mgl_stats_group_ok(const MglPlan *p, int head, int last)
{
	if (head < 0 || last != head + 1 || last >= p->nsteps)
		return false;
	const MglStep *a = &p->steps[head], *b = &p->steps[last];
	return a->op == MGL_OP_VOCAB_MAX && b->op == MGL_OP_VOCAB_STATS && a->phase == b->phase && a->nin >= 1 && a->nout >= 1 &&
	       b->nin >= 3 && b->in[0] == a->in[0] && b->in[2] == a->out[0] && b->in[1] != a->out[0] &&
	       a->attr.limit == b->attr.limit;   /* (targets in the maximum's bytes: read after it is written) */
}

bool mgl_norm_add_group_ok(const MglPlan *p, const int *uses, int head, int last)
{
	if (head < 0 || last <= head || last > head + 2 || last >= p->nsteps)
		return false;
	const MglStep *n = &p->steps[head], *a = &p->steps[head + 1], *b = &p->steps[last];
	bool add = a->op == MGL_OP_ACCUMULATE, bias = b->op == MGL_OP_BIAS_GRAD;
	if ((n->op != MGL_OP_LAYERNORM_BWD && n->op != MGL_OP_RMSNORM_BWD) || n->nout < 1 || last - head != add + bias ||
	    p->values[n->out[0]].role != MGL_V_ACT)
		return false;
	if (add && (a->nout != 1 || !adds_to(p, uses, head + 1, n->out[0], n->phase)))
		return false;
	for (int k = 0; add && k < n->nin; k++)
		if (a->out[0] == n->in[k])
			return false;   /* (the kernel would write over what the column sums read after it) */
	int dx = add ? a->out[0] : n->out[0];
	const MglValue *g = bias ? &p->values[b->out[0]] : NULL;
	return !bias || (b->nin == 1 && b->nout == 1 && b->in[0] == dx && b->phase == n->phase && g->dtype == MGL_F32 &&
			 g->rank == 1 && g->shape[0] == mgl_last_dim(&p->values[dx]) && p->values[dx].role == MGL_V_ACT);
}

bool mgl_qkv_bias_group_ok(const MglPlan *p, int head, int last)
{
	if (head < 0 || last != head + 1 || last >= p->nsteps)
		return false;
	const MglStep *a = &p->steps[head], *b = &p->steps[last];
	if (a->op != MGL_OP_ATTENTION_BWD_QKV || a->nout < 1 || b->op != MGL_OP_BIAS_GRAD || b->nin != 1 || b->nout != 1 ||
	    b->in[0] != a->out[0] || b->phase != a->phase)
		return false;
	const MglValue *dy = &p->values[a->out[0]], *g = &p->values[b->out[0]];
	return dy->role == MGL_V_ACT && g->dtype == MGL_F32 && g->rank == 1 && g->shape[0] == mgl_last_dim(dy);
}

int mgl_plan_check_fusion(const MglPlan *p, char *err, size_t errlen)
{
	int *uses = mgl_xcalloc((size_t)p->nvalues + 1, sizeof *uses, "the values' readers"), rc = 0;
	for (int s = 0; s < p->nsteps; s++)
		for (int k = 0; k < p->steps[s].nin; k++)
			uses[p->steps[s].in[k]]++;
	for (int s = 0; s < p->nsteps && !rc; s++) {
		const MglStep *st = &p->steps[s];
		bool gemm = st->op == MGL_OP_MATMUL || st->op == MGL_OP_MATMUL_DX;
		if (gemm && st->attr.epi && st->fuse != s) {
			snprintf(err, errlen, "step %d has an epilogue but heads no fused group", s);
			rc = -1;
		}
		if (st->fuse != s)
			continue;   /* the groups' runs are checked by mgl_plan_check_memory */
		int last = mgl_group_end(p, s);
		unsigned epi = gemm ? (unsigned)st->attr.epi : 0;
		bool adamw = st->op == MGL_OP_ADAMW, stats = st->op == MGL_OP_VOCAB_MAX,
		     norm = st->op == MGL_OP_LAYERNORM_BWD || st->op == MGL_OP_RMSNORM_BWD,
		     qkv = st->op == MGL_OP_ATTENTION_BWD_QKV;
		bool ok = epi     ? mgl_epilogue_ok(p, uses, s, epi) && last - s == mgl_epilogue_steps(epi)
			  : adamw ? last > s && mgl_adamw_group_ok(p, s, last)
			  : stats ? mgl_stats_group_ok(p, s, last)
			  : norm  ? mgl_norm_add_group_ok(p, uses, s, last)
			  : qkv   ? mgl_qkv_bias_group_ok(p, s, last)
				  : last > s && mgl_chain_ok(p, uses, s, last);
		if (!ok) {
			snprintf(err, errlen, "steps %d to %d are fused, but cannot run as one %s", s, last,
				 epi     ? "GEMM with its epilogue"
				 : adamw ? "multi-tensor AdamW"
				 : stats ? "pass over the logits (vocab_max, vocab_stats)"
				 : norm  ? "norm's backward adding another gradient (accumulate) or summing a bias gradient"
				 : qkv   ? "attention backward summing q, k and v's bias gradients"
					 : "elementwise kernel");
			rc = -1;
		}
	}
	free(uses);
	return rc;
}

/* ---------------------------------------------------------------- writing */

void mgl_attrs_write(FILE *f, MglOp op, const MglAttrs *a, bool all)
{
	for (int k = 0; k < MGL_ATTR_COUNT; k++) {
		if (!(mgl_ops[op].attrs & (1u << k)))
			continue;
		double v = mgl_attr_get(a, k);
		if (!all && v == mgl_attrs[k].dflt)
			continue;
		char buf[32];
		snprintf(buf, sizeof buf, "%.15g", v);   /* the shortest of 15 and 17 digits that reads back */
		if (strtod(buf, NULL) != v)
			snprintf(buf, sizeof buf, "%.17g", v);
		if (v == MGL_NONE_ATTR)
			fprintf(f, " %s=none", mgl_attrs[k].name);
		else if (mgl_attrs[k].kind == MGL_AK_REAL)
			fprintf(f, " %s=%s", mgl_attrs[k].name, buf);
		else
			fprintf(f, " %s=%lld", mgl_attrs[k].name, (long long)v);
	}
}

static void write_dims(FILE *f, int rank, const int64_t *d)
{
	fputc('[', f);
	for (int i = 0; i < rank; i++)
		fprintf(f, "%s%lld", i ? "," : "", (long long)d[i]);
	fputc(']', f);
}

static void write_ids(FILE *f, const int *v, int n)
{
	if (!n)
		fputc('-', f);
	for (int i = 0; i < n; i++)
		fprintf(f, "%s%d", i ? "," : "", v[i]);
}

void mgl_plan_write(FILE *f, const MglPlan *p)
{
	char buf[8];
	fprintf(f, "mgl-plan %d\n", p->version);
	fprintf(f, "model %s\npreset %s\nsource %s\n", p->model, p->preset ? p->preset : "-", p->source ? p->source : "-");
	fprintf(f, "tp %d\ndp %d\nsp %d\n", p->tp, p->dp, p->sp);
	if (p->zero)   /* these two lines only when not the default: plans without them read as before */
		fprintf(f, "zero %d\n", p->zero);
	if (p->recompute)
		fprintf(f, "recompute %s\n", mgl_recompute_name[p->recompute]);
	fprintf(f, "batch %lld\nseq %lld\nact %s\n", (long long)p->batch, (long long)p->seq, mgl_dtype_name[p->act_dtype]);
	fprintf(f, "vocab %lld %lld\nlayers %d\narena %lld\nloss %d\n", (long long)p->vocab, (long long)p->vocab_padded,
		p->nlayers, (long long)p->arena_bytes, p->loss);
	if (p->logits >= 0)
		fprintf(f, "logits %d\n", p->logits);
	else
		fprintf(f, "logits -\n");
	fprintf(f, "values %d\n", p->nvalues);
	for (int i = 0; i < p->nvalues; i++) {
		const MglValue *v = &p->values[i];
		fprintf(f, "v %d %s %s %s ", i, mgl_role_name[v->role], v->name, mgl_dtype_name[v->dtype]);
		write_dims(f, v->rank, v->shape);
		fprintf(f, " %s %lld %lld %d\n", mgl_layout_str(v->layout, buf), (long long)v->offset,
			(long long)v->bytes, v->param);
	}
	fprintf(f, "params %d\n", p->nparams);
	for (int i = 0; i < p->nparams; i++) {
		const MglPlanParam *q = &p->params[i];
		fprintf(f, "p %d %s ", i, q->name);
		write_dims(f, q->rank, q->shape);
		fprintf(f, " %lld %d %s %.17g %d %d %d %d %d:%d\n", (long long)q->padded, q->split_dim,
			mgl_init_name[q->init], q->std, q->value, q->grad, q->m, q->v, q->line, q->col);
	}
	fprintf(f, "steps %d\n", p->nsteps);
	for (int i = 0; i < p->nsteps; i++) {
		const MglStep *s = &p->steps[i];
		fprintf(f, "s %d %s %s ", i, mgl_phase_name[s->phase], mgl_ops[s->op].name);
		write_ids(f, s->in, s->nin);
		fputc(' ', f);
		write_ids(f, s->out, s->nout);
		fprintf(f, " %d %d:%d fuse=%d", s->layer, s->line, s->col, s->fuse);
		mgl_attrs_write(f, s->op, &s->attr, true);
		fputc('\n', f);
	}
	fprintf(f, "end\n");
}

/* ---------------------------------------------------------------- reading */

#include <setjmp.h>

typedef struct {
	const char *p, *end, *name;
	int line;
	char *err;
	size_t errlen;
	jmp_buf jb;
	MglArena *a;
} Reader;

static _Noreturn void bad(Reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void bad(Reader *r, const char *fmt, ...)
{
	int n = snprintf(r->err, r->errlen, "%s:%d: ", r->name, r->line);
	va_list ap;
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < r->errlen)
		vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	longjmp(r->jb, 1);
}

/* A token: up to the next space or end of line, never empty. */
static const char *tok(Reader *r, int *len)
{
	const char *s = r->p;
	while (r->p < r->end && *r->p != ' ' && *r->p != '\n')
		r->p++;
	*len = (int)(r->p - s);
	if (!*len)
		bad(r, r->p >= r->end ? "the plan ends early (truncated?)" : "a field is missing");
	if (memchr(s, 0, (size_t)*len))
		bad(r, "a NUL byte in a field");
	return s;
}

static void space(Reader *r)
{
	if (r->p >= r->end || *r->p != ' ')
		bad(r, r->p >= r->end ? "the plan ends early (truncated?)" : "expected a space");
	r->p++;
}

static void eol(Reader *r)
{
	if (r->p >= r->end)
		bad(r, "the plan ends early (truncated?)");
	if (*r->p != '\n')
		bad(r, "unexpected text at the end of the line");
	r->p++;
	r->line++;
}

static void word(Reader *r, const char *w)
{
	int n;
	const char *s = tok(r, &n);
	if ((size_t)n != strlen(w) || memcmp(s, w, (size_t)n))
		bad(r, "expected '%s', found '%.*s'", w, n > 40 ? 40 : n, s);
}

/* Whether the line starts with the word w (then read), for a header line that may be absent. */
static bool optional(Reader *r, const char *w)
{
	size_t n = strlen(w);
	if ((size_t)(r->end - r->p) <= n || memcmp(r->p, w, n) || r->p[n] != ' ')
		return false;
	r->p += n;
	return true;
}

static char *str(Reader *r)
{
	int n;
	const char *s = tok(r, &n);
	return mgl_strndup(r->a, s, (size_t)n);
}

static int64_t num(Reader *r, int64_t lo, int64_t hi)
{
	int n;
	const char *s = tok(r, &n);
	int64_t v = 0;
	int i = s[0] == '-';
	if (i == n)
		bad(r, "expected a number");
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || __builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s[i] - '0', &v))
			bad(r, "'%.*s' is not a number", n > 40 ? 40 : n, s);
	}
	v = s[0] == '-' ? -v : v;
	if (v < lo || v > hi)
		bad(r, "%lld is out of range [%lld, %lld]", (long long)v, (long long)lo, (long long)hi);
	return v;
}

/* A real number in [lo, hi]; the message says it is name and must be must. */
static double real(Reader *r, double lo, double hi, const char *name, const char *must)
{
	int n;
	const char *s = tok(r, &n);
	char buf[64];
	if (n >= (int)sizeof buf)
		bad(r, "%s: a bad number", name);
	memcpy(buf, s, (size_t)n);
	buf[n] = 0;
	char *e;
	double v = strtod(buf, &e);
	if (*e || !(v >= lo && v <= hi))
		bad(r, "%s must be %s, not '%s'", name, must, buf);
	return v;
}

/* "key=" */
static void key(Reader *r, const char *k)
{
	size_t n = strlen(k);
	if ((size_t)(r->end - r->p) <= n || memcmp(r->p, k, n) || r->p[n] != '=')
		bad(r, "expected '%s='", k);
	r->p += n + 1;
}

/* Attribute k of the registry, "name=value": a number in its range, or none where allowed. */
static void attribute(Reader *r, MglAttrs *a, int k)
{
	const MglAttrInfo *in = &mgl_attrs[k];
	key(r, in->name);
	if (in->kind == MGL_AK_REAL) {
		mgl_attr_set(a, k, real(r, in->lo, in->hi, in->name, in->what));
		return;
	}
	if (in->dflt == MGL_NONE_ATTR && (size_t)(r->end - r->p) >= 4 && !memcmp(r->p, "none", 4)) {
		r->p += 4;
		mgl_attr_set(a, k, MGL_NONE_ATTR);
		return;
	}
	mgl_attr_set(a, k, (double)num(r, (int64_t)in->lo, (int64_t)in->hi));
}

static int lookup(Reader *r, const char *const *names, int n, const char *what)
{
	int len;
	const char *s = tok(r, &len);
	for (int i = 0; i < n; i++)
		if ((size_t)len == strlen(names[i]) && !memcmp(names[i], s, (size_t)len))
			return i;
	bad(r, "unknown %s '%.*s'", what, len > 40 ? 40 : len, s);
}

static int dims(Reader *r, int64_t *d)
{
	if (r->p >= r->end || *r->p++ != '[')
		bad(r, "expected '['");
	int rank = 0;
	while (r->p < r->end && *r->p != ']') {
		if (rank == MGL_PLAN_MAX_RANK)
			bad(r, "more than %d dimensions", MGL_PLAN_MAX_RANK);
		const char *s = r->p;
		while (r->p < r->end && *r->p != ',' && *r->p != ']')
			r->p++;
		int64_t v = 0;
		if (r->p == s)
			bad(r, "an empty dimension");
		for (const char *q = s; q < r->p; q++)
			if (*q < '0' || *q > '9' || __builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *q - '0', &v) ||
			    v > ((int64_t)1 << 40))
				bad(r, "a bad dimension");
		d[rank++] = v;
		if (r->p < r->end && *r->p == ',')
			r->p++;
	}
	if (r->p >= r->end)
		bad(r, "the plan ends early (truncated?)");
	r->p++;
	return rank;
}

static int *ids(Reader *r, int *n, int nvalues)
{
	int len;
	const char *s = tok(r, &len);
	*n = 0;
	if (len == 1 && *s == '-')
		return mgl_alloc(r->a, sizeof(int));
	int cnt = 1;
	for (int i = 0; i < len; i++)
		cnt += s[i] == ',';
	int *v = mgl_alloc(r->a, (size_t)cnt * sizeof *v);
	const char *q = s, *e = s + len;
	while (q < e) {
		int64_t x = 0;
		const char *b = q;
		while (q < e && *q >= '0' && *q <= '9') {
			x = x * 10 + (*q++ - '0');
			if (x >= nvalues)
				bad(r, "value %%%lld does not exist (the plan has %d)", (long long)x, nvalues);
		}
		if (q == b || (q < e && *q != ','))
			bad(r, "a bad list of values");
		v[(*n)++] = (int)x;
		if (q < e)
			q++;
	}
	return v;
}

/* "LINE:COL", each an int (the writer's "%d:%d"), within the token. */
static void linecol(Reader *r, int *line, int *col)
{
	int n;
	const char *s = tok(r, &n), *e = s + n;
	int *out[2] = {line, col};
	for (int k = 0; k < 2; k++) {
		bool neg = s < e && *s == '-';
		s += neg;
		const char *b = s;
		int64_t v = 0;
		while (s < e && *s >= '0' && *s <= '9' && v <= INT32_MAX)
			v = v * 10 + (*s++ - '0');
		if (s == b || v > INT32_MAX || (k ? s != e : s == e || *s++ != ':'))
			bad(r, "expected LINE:COL");
		*out[k] = (int)(neg ? -v : v);
	}
}

static MglLayout layout(Reader *r)
{
	int n;
	const char *s = tok(r, &n);
	if (n == 1 && (*s == 'R' || *s == 'P' || *s == 'M'))
		return (MglLayout){(uint8_t)(*s == 'R' ? MGL_L_R : *s == 'P' ? MGL_L_P : MGL_L_M), 0};
	if (n == 2 && s[0] == 'S' && s[1] >= '1' && s[1] <= '4')
		return (MglLayout){MGL_L_S, (uint8_t)(s[1] - '0')};
	bad(r, "unknown layout '%.*s'", n > 8 ? 8 : n, s);
}

/* Each op's inputs and outputs (ops.def): a runtime reads in[k] without asking. */
static void check_arity(Reader *r, const MglPlan *p, const MglStep *s)
{
	const MglOpInfo *op = &mgl_ops[s->op];
	if (op->flags & MGL_OPF_GRAPH)
		bad(r, "%s is not a step of a plan (the compiler lowers it)", op->name);
	int in_max = op->in_max < 0 ? p->nvalues : op->in_max, out = op->nout < 0 ? s->nin : op->nout;
	if (s->nin < op->in_min || s->nin > in_max || s->nout != out)
		bad(r, "%s takes %d to %d inputs and %d output%s, not %d and %d", op->name, op->in_min, in_max, out,
		    out == 1 ? "" : "s", s->nin, s->nout);
	for (int k = 0; k < s->nin; k++)
		if (p->values[s->in[k]].layout.kind == MGL_L_S && p->values[s->in[k]].layout.dim > p->values[s->in[k]].rank)
			bad(r, "value %%%d is split along a dimension it does not have", s->in[k]);
}

/* The shapes the runtimes index by, so that no hand-written plan sends a kernel, a GEMM or
 * NCCL past a buffer: a dimension attribute (counted from the end) within its values'
 * ranks; a tp all_gather's output its input with that dimension tp times as long, a
 * reduce_scatter's or slice's the other way round, of one type; the GEMMs' operands
 * agreeing: matmul x[..., K] . W[N, K] -> [..., N], matmul_dx dy[..., N] . W[N, K] ->
 * [..., K], matmul_dw dy[..., N]^T . x[..., K] -> [N, K] over rows as many. */
static void check_shapes(Reader *r, const MglPlan *p, const MglStep *s)
{
	bool tp_coll = (s->op == MGL_OP_ALL_GATHER || s->op == MGL_OP_REDUCE_SCATTER) && s->attr.group == MGL_GROUP_TP;
	if (tp_coll || s->op == MGL_OP_SLICE) {
		const MglValue *a = &p->values[s->in[0]], *b = &p->values[s->out[0]];
		const MglValue *part = s->op == MGL_OP_ALL_GATHER ? a : b, *whole = s->op == MGL_OP_ALL_GATHER ? b : a;
		int64_t dim = s->attr.dim;
		bool ok = s->nin == 1 && a->rank == b->rank && a->dtype == b->dtype && dim <= a->rank;
		for (int i = 0; ok && i < a->rank; i++)
			ok = whole->shape[i] == part->shape[i] * (i == a->rank - dim ? p->tp : 1);
		if (!ok)
			bad(r, "%s along dimension %lld from the end: %%%d and %%%d are not a tp-th and the whole of one tensor",
			    mgl_ops[s->op].name, (long long)dim, s->in[0], s->out[0]);
	}
	bool norm_bwd = s->op == MGL_OP_LAYERNORM_BWD || s->op == MGL_OP_RMSNORM_BWD;
	if (norm_bwd || s->op == MGL_OP_LAYERNORM || s->op == MGL_OP_RMSNORM) {
		/* the kernels take rows and width from x and index every other value by them: dy, y
		 * and dx like x, the weight, bias and their gradients of its width */
		const MglValue *x = &p->values[s->in[norm_bwd]], *y = &p->values[s->out[0]];
		bool ok = y->rank == x->rank && mgl_numel(y) == mgl_numel(x) && mgl_last_dim(y) == mgl_last_dim(x) &&
			  (!norm_bwd || (p->values[s->in[0]].rank == x->rank && mgl_numel(&p->values[s->in[0]]) == mgl_numel(x)));
		for (int k = norm_bwd ? 2 : 1; k < s->nin; k++)
			ok = ok && mgl_numel(&p->values[s->in[k]]) == mgl_last_dim(x);
		for (int k = 1; norm_bwd && k < s->nout; k++)
			ok = ok && mgl_numel(&p->values[s->out[k]]) == mgl_last_dim(x);
		if (!ok)
			bad(r, "%s: the values' shapes do not follow its input %%%d's rows of %lld", mgl_ops[s->op].name,
			    s->in[norm_bwd], (long long)mgl_last_dim(x));
		return;
	}
	bool fwd = s->op == MGL_OP_ATTENTION;
	if (fwd || s->op == MGL_OP_ATTENTION_BWD || s->op == MGL_OP_ATTENTION_BWD_QKV) {
		/* the kernels take B, S and D from q [B, S, D] and index the others by them: k, v,
		 * the output, dy and dq, dk, dv like q (the last three side by side in attention_bwd_qkv's
		 * [B, S, 3 D]), the log-sum-exp [B, heads, S], the mask [B, S] */
		const MglValue *q = &p->values[s->in[!fwd]];
		int64_t H = s->attr.heads, B = q->shape[0], S = q->shape[1];
		int in_lse = fwd ? -1 : 5, in_mask = fwd ? 3 : 6;
		bool ok = q->rank == 3 && H > 0 && q->shape[2] % H == 0;
		for (int k = 0; ok && k < (fwd ? 3 : 5); k++)
			ok = same_shape(&p->values[s->in[k]], q);
		for (int k = 0; ok && k < s->nout; k++) {
			const MglValue *o = &p->values[s->out[k]];
			ok = fwd && k == 1 ? true   /* lse, below */
			     : s->op != MGL_OP_ATTENTION_BWD_QKV ? same_shape(o, q)
			     : o->rank == 3 && o->shape[0] == B && o->shape[1] == S && o->shape[2] == 3 * q->shape[2];
		}
		const MglValue *lse = &p->values[fwd ? s->out[1] : s->in[in_lse]];
		ok = ok && lse->dtype == MGL_F32 && mgl_numel(lse) == B * H * S &&
		     (s->nin <= in_mask || (p->values[s->in[in_mask]].dtype == MGL_I32 && mgl_numel(&p->values[s->in[in_mask]]) == B * S));
		if (!ok)
			bad(r, "%s: the values' shapes do not follow q's, %%%d: [batch, seq, d] of %lld heads (lse f32, the mask i32)",
			    mgl_ops[s->op].name, s->in[!fwd], (long long)H);
		return;
	}
	if (s->op != MGL_OP_MATMUL && s->op != MGL_OP_MATMUL_DX && s->op != MGL_OP_MATMUL_DW)
		return;
	const MglValue *a = &p->values[s->in[0]], *w = &p->values[s->in[1]], *y = &p->values[s->out[0]];
	bool ok;
	if (s->op == MGL_OP_MATMUL_DW)   /* dy [.., N], x [.., K] -> dW [N, K] */
		ok = y->rank == 2 && y->shape[0] == mgl_last_dim(a) && y->shape[1] == mgl_last_dim(w) && mgl_rows(a) == mgl_rows(w);
	else   /* x or dy [.., K or N], W [N, K] -> [.., N or K] */
		ok = w->rank == 2 && mgl_last_dim(a) == w->shape[s->op == MGL_OP_MATMUL ? 1 : 0] &&
		     mgl_last_dim(y) == w->shape[s->op == MGL_OP_MATMUL ? 0 : 1] && mgl_rows(a) == mgl_rows(y);
	if (!ok)
		bad(r, "%s: the shapes of %%%d, %%%d and %%%d do not make a product", mgl_ops[s->op].name, s->in[0], s->in[1],
		    s->out[0]);
}

/* A span (plan.h: MglSpan) is tiled by whole parameters' values of its role, from its
 * first byte: at most MGL_SPAN_MAX, each of its type, rank and trailing shape, their rows
 * adding up to its. Only where no collective acts on gradients or parameters one at a time
 * (dp 1, no --sp, no ZeRO): the runtimes order a collective's waits by the values a step
 * names, which a span would hide (compiler/hfuse.c forms none there). `owned`: the PARAM
 * and GRAD values of a parameter by (role, offset), n of them. */
typedef struct { int64_t role, offset; int v; } Owned;

static int by_role_offset(const void *a, const void *b)
{
	const Owned *x = a, *y = b;
	return x->role != y->role ? (x->role > y->role) - (x->role < y->role) : (x->offset > y->offset) - (x->offset < y->offset);
}

static void check_span(Reader *r, const MglPlan *p, int span, const Owned *owned, int n)
{
	const MglValue *w = &p->values[span];
	if (p->dp > 1 || p->sp || p->zero)
		bad(r, "value %%%d is a span (of no parameter), which a plan at dp > 1, with sp or ZeRO may not have", span);
	int64_t at = w->offset, rows = 0, need = mgl_numel(w) * mgl_dtype_size[w->dtype];
	int members = 0;
	while (at < w->offset + need && members <= MGL_SPAN_MAX) {
		int lo = 0, hi = n;   /* the first of `owned` at or after (role, at) */
		while (lo < hi) {
			int mid = (lo + hi) / 2;
			if (owned[mid].role < w->role || (owned[mid].role == w->role && owned[mid].offset < at))
				lo = mid + 1;
			else
				hi = mid;
		}
		const MglValue *m = lo < n && owned[lo].role == w->role && owned[lo].offset == at ? &p->values[owned[lo].v] : NULL;
		bool ok = m && m->dtype == w->dtype && m->rank == w->rank && w->rank >= 1 && mgl_numel(m) > 0;
		for (int k = 1; ok && k < w->rank; k++)
			ok = m->shape[k] == w->shape[k];
		if (!ok)
			bad(r, "value %%%d spans no parameter's %s of its type and shape at byte %lld", span,
			    mgl_role_name[w->role], (long long)(at - w->offset));
		at += mgl_numel(m) * mgl_dtype_size[m->dtype], rows += m->shape[0], members++;
	}
	if (at != w->offset + need || rows != w->shape[0] || members < 2 || members > MGL_SPAN_MAX)
		bad(r, "value %%%d is a span (of no parameter) but not 2 to %d whole parameters' %ss", span, MGL_SPAN_MAX,
		    mgl_role_name[w->role]);
}

/* A bf16 gradient has one writer, a matmul_dw (compiler/adamw.c): nothing adds into it in
 * bf16, and no collective reads it. Its writer writes it, or a span of gradients that
 * starts at or before it and takes in its bytes (check_span: q, k and v's, compiler/hfuse.c);
 * spans looked up by offset, so that the check stays linear in the plan's size. */
typedef struct { int64_t offset; int v; } SpanAt;

static int by_span_offset(const void *x, const void *y)
{
	const SpanAt *a = x, *b = y;
	return (a->offset > b->offset) - (a->offset < b->offset);
}

static void check_bf16_grads(Reader *r, MglArena *a, const MglPlan *p)
{
	size_t nv = (size_t)p->nvalues + 1;
	int *writers = mgl_alloc(a, nv * sizeof *writers), *last = mgl_alloc(a, nv * sizeof *last);
	SpanAt *spans = mgl_alloc(a, nv * sizeof *spans);
	int nspans = 0;
	for (int s = 0; s < p->nsteps; s++)
		for (int k = 0; k < p->steps[s].nout; k++)
			writers[p->steps[s].out[k]]++, last[p->steps[s].out[k]] = s;
	for (int v = 0; v < p->nvalues; v++)
		if (p->values[v].role == MGL_V_GRAD && p->values[v].param < 0 && writers[v])
			spans[nspans++] = (SpanAt){p->values[v].offset, v};
	qsort(spans, (size_t)nspans, sizeof *spans, by_span_offset);
	for (int i = 0; i < p->nparams; i++) {
		const MglValue *x = &p->values[p->params[i].grad];
		if (x->dtype != MGL_BF16)
			continue;
		int n = writers[p->params[i].grad], s = n ? last[p->params[i].grad] : -1, lo = 0, hi = nspans;
		while (lo < hi) {   /* the last span starting at or before it */
			int mid = (lo + hi) / 2;
			if (spans[mid].offset <= x->offset)
				lo = mid + 1;
			else
				hi = mid;
		}
		const MglValue *o = lo ? &p->values[spans[lo - 1].v] : NULL;
		if (o && x->offset < o->offset + mgl_value_bytes(o))
			n += writers[spans[lo - 1].v], s = last[spans[lo - 1].v];
		if (n != 1 || p->steps[s].op != MGL_OP_MATMUL_DW)
			bad(r, "the gradient of parameter '%s' is bf16, which only one matmul_dw writing it may make it",
			    p->params[i].name);
	}
}

/* A parameter's values have their roles, its gradient its shape, and its moments this
 * rank's part of it: the whole (zero 0) or its ZeRO piece of c elements, with the
 * parameter's and gradient's buffers padded to dp c (plan.h). The runtimes index them so.
 * The gradient is f32, or bf16 in a plan of bf16 activations at dp 1 (the cpu backend
 * takes f32 plans only), where check_bf16_grads says who writes it. */
static void check_param(Reader *r, const MglPlan *p, const MglPlanParam *q)
{
	const MglValue *w = &p->values[q->value], *g = &p->values[q->grad], *m = &p->values[q->m], *v = &p->values[q->v];
	if (w->role != MGL_V_PARAM || g->role != MGL_V_GRAD || m->role != MGL_V_STATE || v->role != MGL_V_STATE)
		bad(r, "the values of parameter '%s' are not a param, a grad and two state values", q->name);
	int64_t n = mgl_numel(w), c = p->zero ? mgl_zero_chunk(n, p->dp) : n, es = mgl_dtype_size[w->dtype];
	if (mgl_numel(g) != n || w->dtype != MGL_F32 || (g->dtype != MGL_F32 && g->dtype != MGL_BF16) || m->dtype != MGL_F32 ||
	    v->dtype != MGL_F32)
		bad(r, "the gradient of parameter '%s' is not f32 (or bf16) and of its shape", q->name);
	if (g->dtype == MGL_BF16 && (p->dp != 1 || p->act_dtype != MGL_BF16))
		bad(r, "the gradient of parameter '%s' is bf16, which only a plan of bf16 activations at dp 1 may have", q->name);
	if (mgl_numel(m) != c || mgl_numel(v) != c)
		bad(r, "the AdamW moments of parameter '%s' hold %s elements, not %s (zero %d, dp %d)", q->name,
		    mgl_commas(mgl_numel(m), (char[32]){0}), mgl_commas(c, (char[32]){0}), p->zero, p->dp);
	if (p->zero && (w->bytes < c * p->dp * es || g->bytes < c * p->dp * es))
		bad(r, "parameter '%s' is sharded over dp %d: its buffers need %s bytes", q->name, p->dp,
		    mgl_commas(c * p->dp * es, (char[32]){0}));
}

/* The optimizer's steps read what their kernels assume: dp collectives are ZeRO's, in place
 * on gradients (reduce_scatter) or parameters (all_gather); tp ones take one value; AdamW
 * updates a parameter with its own gradient and moments. */
static void check_optimizer(Reader *r, const MglPlan *p, const MglStep *s)
{
	const MglValue *v = p->values;
	if (s->op == MGL_OP_REDUCE_SCATTER || s->op == MGL_OP_ALL_GATHER) {
		if (s->attr.group == MGL_GROUP_TP) {
			if (s->nin != 1)
				bad(r, "%s over tp takes one value", mgl_ops[s->op].name);
			return;
		}
		if (!p->zero)
			bad(r, "%s over dp is ZeRO's, and this plan has no 'zero 1'", mgl_ops[s->op].name);
		MglRole want = s->op == MGL_OP_REDUCE_SCATTER ? MGL_V_GRAD : MGL_V_PARAM;
		for (int k = 0; k < s->nin; k++)
			if (s->out[k] != s->in[k] || v[s->in[k]].role != want || v[s->in[k]].param < 0)
				bad(r, "%s over dp works in place on %s values", mgl_ops[s->op].name, mgl_role_name[want]);
	}
	if (s->op == MGL_OP_ADAMW) {
		int i = v[s->in[0]].param;
		const MglPlanParam *q = i >= 0 && i < p->nparams ? &p->params[i] : NULL;
		if (!q || s->in[0] != q->value || s->in[1] != q->grad || s->in[2] != q->m || s->in[3] != q->v ||
		    s->out[0] != q->value || s->out[1] != q->m || s->out[2] != q->v || v[s->in[4]].role != MGL_V_ACT ||
		    v[s->in[4]].rank != 0)
			bad(r, "adamw must read a parameter, its gradient, its moments and the norm, and update the three");
	}
	if (s->op == MGL_OP_GRAD_NORM)
		for (int k = 0; k < s->nin; k++)
			if (v[s->in[k]].role != MGL_V_GRAD)
				bad(r, "grad_norm reads gradients");
}

/* ZeRO-1's optimizer, whole (compiler/adamw.c): each parameter's gradient reduce-scattered
 * over dp before adamw reads it, the norm adamw reads summed over dp, and the updated
 * parameter all-gathered over dp after. Without the first a rank's piece sums its own batch
 * alone; without the last every rank keeps the others' pieces of its weights stale: either
 * trains on, silently wrong. Called after the steps (the reader's line is 'end'). */
static void check_zero(Reader *r, const MglPlan *p)
{
	enum { SCATTERED = 1, UPDATED = 2, GATHERED = 4 };
	uint8_t *has = mgl_alloc(r->a, (size_t)p->nparams + 1), *dp_sum = mgl_alloc(r->a, (size_t)p->nvalues + 1);
	for (int i = 0; i < p->nsteps; i++) {
		const MglStep *s = &p->steps[i];
		bool dp = s->attr.group == MGL_GROUP_DP;
		for (int k = 0; k < s->nin; k++) {
			int q = p->values[s->in[k]].param;
			if (q < 0)   /* not a parameter's: ZeRO's collectives are checked on theirs (check_optimizer) */
				continue;
			if (s->op == MGL_OP_REDUCE_SCATTER && dp)
				has[q] |= SCATTERED;
			if (s->op == MGL_OP_ALL_GATHER && dp && !(has[q] & UPDATED))
				bad(r, "step %d gathers parameter '%s' over dp before adamw updates it (zero 1)", i, p->params[q].name);
			if (s->op == MGL_OP_ALL_GATHER && dp)
				has[q] |= GATHERED;
		}
		if (s->op == MGL_OP_ALL_REDUCE && dp && !s->attr.max)
			dp_sum[s->out[0]] = 1;
		if (s->op == MGL_OP_ADAMW) {
			const char *name = p->params[p->values[s->in[0]].param].name;
			if (!(has[p->values[s->in[0]].param] & SCATTERED))
				bad(r, "step %d: adamw updates parameter '%s' whose gradient was not reduce-scattered over dp "
				    "before (zero 1)", i, name);
			if (!dp_sum[s->in[4]])
				bad(r, "step %d: adamw clips parameter '%s' with a gradient norm not summed over dp (zero 1: "
				    "each rank's is of its pieces)", i, name);
			has[p->values[s->in[0]].param] |= UPDATED;
		}
	}
	for (int q = 0; q < p->nparams; q++)
		if (has[q] != (SCATTERED | UPDATED | GATHERED))
			bad(r, "parameter '%s' is %s (zero 1: its optimizer must reduce-scatter its gradient over dp, update "
			    "its piece with adamw, and all-gather it over dp)", p->params[q].name,
			    !(has[q] & UPDATED) ? "never updated by adamw" : "never all-gathered over dp after adamw");
}

MglPlan *mgl_plan_read(MglArena *a, const char *text, size_t len, const char *name, char *err, size_t errlen)
{
	Reader r = {.p = text, .end = text + len, .name = name, .line = 1, .err = err, .errlen = errlen, .a = a};
	if (setjmp(r.jb))
		return NULL;
	MglPlan *p = mgl_alloc(a, sizeof *p);
	const char *opnames[MGL_OP_COUNT];
	for (int i = 0; i < MGL_OP_COUNT; i++)
		opnames[i] = mgl_ops[i].name;
	/* no count can exceed the bytes it takes to write it */
	int64_t most = (int64_t)(len / 8 + 1) < INT32_MAX ? (int64_t)(len / 8 + 1) : INT32_MAX;

	word(&r, "mgl-plan");
	space(&r);
	p->version = (int)num(&r, 0, INT32_MAX);
	if (p->version != MGL_PLAN_VERSION)
		bad(&r, "this plan is version %d; this mgl reads version %d (compile it again with this mgl)",
		    p->version, MGL_PLAN_VERSION);
	eol(&r);
	word(&r, "model"), space(&r), p->model = str(&r), eol(&r);
	word(&r, "preset"), space(&r), p->preset = str(&r), eol(&r);
	if (!strcmp(p->preset, "-"))
		p->preset = NULL;
	word(&r, "source"), space(&r);
	{   /* the rest of the line: a path may hold spaces */
		const char *s = r.p;
		while (r.p < r.end && *r.p != '\n')
			r.p++;
		if (r.p == s)
			bad(&r, "a field is missing");
		if (memchr(s, 0, (size_t)(r.p - s)))
			bad(&r, "a NUL byte in a field");
		p->source = mgl_strndup(a, s, (size_t)(r.p - s));
		eol(&r);
	}
	word(&r, "tp"), space(&r), p->tp = (int)num(&r, 1, 4096), eol(&r);
	word(&r, "dp"), space(&r), p->dp = (int)num(&r, 1, 1 << 20), eol(&r);
	word(&r, "sp"), space(&r), p->sp = num(&r, 0, 1), eol(&r);
	if (optional(&r, "zero")) {
		space(&r), p->zero = (int)num(&r, 1, 1);
		if (p->dp < 2)
			bad(&r, "zero 1 shards the optimizer over dp, and this plan has dp %d", p->dp);
		eol(&r);
	}
	if (optional(&r, "recompute"))
		space(&r), p->recompute = (MglRecompute)lookup(&r, mgl_recompute_name + 1, 2, "recomputation") + 1, eol(&r);
	word(&r, "batch"), space(&r), p->batch = num(&r, 1, 1 << 30), eol(&r);
	word(&r, "seq"), space(&r), p->seq = num(&r, 1, 1 << 30), eol(&r);
	word(&r, "act"), space(&r), p->act_dtype = (MglDtype)lookup(&r, mgl_dtype_name, 3, "dtype"), eol(&r);
	word(&r, "vocab"), space(&r), p->vocab = num(&r, 0, (int64_t)1 << 40), space(&r);
	p->vocab_padded = num(&r, 0, (int64_t)1 << 40), eol(&r);
	word(&r, "layers"), space(&r), p->nlayers = (int)num(&r, 0, 1 << 20), eol(&r);
	word(&r, "arena"), space(&r), p->arena_bytes = num(&r, 0, (int64_t)1 << 50), eol(&r);
	word(&r, "loss"), space(&r), p->loss = (int)num(&r, 0, INT32_MAX), eol(&r);
	word(&r, "logits"), space(&r);
	if (r.p < r.end && *r.p == '-')
		r.p++, p->logits = -1;
	else
		p->logits = (int)num(&r, 0, INT32_MAX);
	eol(&r);
	int header = r.line - 2;   /* the loss's line, for messages about it */

	word(&r, "values"), space(&r), p->nvalues = p->capvalues = (int)num(&r, 0, most), eol(&r);
	p->values = mgl_alloc(a, (size_t)(p->nvalues + 1) * sizeof *p->values);
	for (int i = 0; i < p->nvalues; i++) {
		MglValue *v = &p->values[i];
		word(&r, "v"), space(&r);
		if (num(&r, i, i) != i)
			bad(&r, "values out of order");
		space(&r), v->role = (MglRole)lookup(&r, mgl_role_name, MGL_V_ROLE_COUNT, "role");
		space(&r), v->name = str(&r);
		space(&r), v->dtype = (MglDtype)lookup(&r, mgl_dtype_name, 3, "dtype");
		space(&r), v->rank = dims(&r, v->shape);
		space(&r), v->layout = layout(&r);
		space(&r), v->offset = num(&r, 0, (int64_t)1 << 50);
		space(&r), v->bytes = num(&r, 0, (int64_t)1 << 50);
		space(&r), v->param = (int)num(&r, -1, INT32_MAX);
		eol(&r);
		int64_t need = mgl_dtype_size[v->dtype];
		for (int k = 0; k < v->rank; k++)
			if (__builtin_mul_overflow(need, v->shape[k], &need))
				bad(&r, "value %%%d is too large", i);
		if (v->bytes < need)
			bad(&r, "value %%%d needs %s bytes but is given %s", i, mgl_commas(need, (char[32]){0}),
			    mgl_commas(v->bytes, (char[32]){0}));
		if ((v->role == MGL_V_ACT || v->role == MGL_V_INPUT) && v->offset + v->bytes > p->arena_bytes)
			bad(&r, "value %%%d lies outside the arena", i);
		if (v->offset % 16)   /* the cuda kernels read and write 16 bytes at a time */
			bad(&r, "value %%%d is at offset %s, not a multiple of 16", i, mgl_commas(v->offset, (char[32]){0}));
		/* the other roles' buffers are not written in the plan: each ends after its last value */
		int64_t *end = &p->persistent_bytes[v->role];
		if (v->role != MGL_V_ACT && v->role != MGL_V_INPUT && v->offset + v->bytes > *end)
			*end = v->offset + v->bytes;
	}
	{   /* the loss and the logits the header names: activations, a scalar and a matrix */
		int line = r.line;
		r.line = header;
		if (p->loss >= p->nvalues || p->values[p->loss].role != MGL_V_ACT || p->values[p->loss].rank != 0 ||
		    p->values[p->loss].dtype == MGL_I32)
			bad(&r, "the loss, value %%%d, is not a scalar activation", p->loss);
		r.line++;
		if (p->logits >= p->nvalues || (p->logits >= 0 && (p->values[p->logits].role != MGL_V_ACT ||
								    p->values[p->logits].rank < 1)))
			bad(&r, "the logits, value %%%d, are not an activation of one or more dimensions", p->logits);
		r.line = line;
	}
	word(&r, "params"), space(&r), p->nparams = p->capparams = (int)num(&r, 0, most), eol(&r);
	p->params = mgl_alloc(a, (size_t)(p->nparams + 1) * sizeof *p->params);
	for (int i = 0; i < p->nparams; i++) {
		MglPlanParam *q = &p->params[i];
		word(&r, "p"), space(&r);
		if (num(&r, i, i) != i)
			bad(&r, "parameters out of order");
		space(&r), q->name = str(&r);
		space(&r), q->rank = dims(&r, q->shape);
		space(&r), q->padded = num(&r, 0, (int64_t)1 << 40);
		space(&r), q->split_dim = (int)num(&r, -1, q->rank - 1);
		space(&r), q->init = (MglInit)lookup(&r, mgl_init_name, 3, "initialization");
		space(&r), q->std = real(&r, 0, 1, "a standard deviation", "a number in [0, 1]");
		int *f[4] = {&q->value, &q->grad, &q->m, &q->v};
		for (int k = 0; k < 4; k++) {
			space(&r);
			*f[k] = (int)num(&r, 0, p->nvalues - 1);
			if (p->values[*f[k]].param != i)
				bad(&r, "value %%%d does not belong to parameter %d", *f[k], i);
		}
		space(&r), linecol(&r, &q->line, &q->col);
		eol(&r);
		check_param(&r, p, q);
	}
	Owned *owned = mgl_alloc(a, (size_t)(p->nvalues + 1) * sizeof *owned);
	int nowned = 0;
	for (int i = 0; i < p->nvalues; i++) {
		const MglValue *v = &p->values[i];
		if (v->param >= p->nparams)
			bad(&r, "value %%%d names parameter %d, which does not exist", i, v->param);
		if (v->param >= 0 && (v->role == MGL_V_PARAM || v->role == MGL_V_GRAD))
			owned[nowned++] = (Owned){v->role, v->offset, i};
	}
	qsort(owned, (size_t)nowned, sizeof *owned, by_role_offset);
	for (int i = 0; i < p->nvalues; i++)
		if (p->values[i].param < 0 && (p->values[i].role == MGL_V_PARAM || p->values[i].role == MGL_V_GRAD))
			check_span(&r, p, i, owned, nowned);
	word(&r, "steps"), space(&r), p->nsteps = p->capsteps = (int)num(&r, 0, most), eol(&r);
	p->steps = mgl_alloc(a, (size_t)(p->nsteps + 1) * sizeof *p->steps);
	for (int i = 0; i < p->nsteps; i++) {
		MglStep *s = &p->steps[i];
		word(&r, "s"), space(&r);
		if (num(&r, i, i) != i)
			bad(&r, "steps out of order");
		space(&r), s->phase = (MglPhase)lookup(&r, mgl_phase_name, 3, "phase");
		space(&r), s->op = (MglOp)lookup(&r, opnames, MGL_OP_COUNT, "op");
		space(&r), s->in = ids(&r, &s->nin, p->nvalues);
		space(&r), s->out = ids(&r, &s->nout, p->nvalues);
		space(&r), s->layer = (int)num(&r, -1, p->nlayers - 1);
		space(&r), linecol(&r, &s->line, &s->col);
		space(&r), key(&r, "fuse"), s->fuse = (int)num(&r, -1, i);
		for (int k = 0; k < MGL_ATTR_COUNT; k++)
			if (mgl_ops[s->op].attrs & (1u << k))
				space(&r), attribute(&r, &s->attr, k);
		eol(&r);
		check_arity(&r, p, s);
		check_shapes(&r, p, s);
		check_optimizer(&r, p, s);
	}
	word(&r, "end");
	eol(&r);
	if (r.p != r.end)
		bad(&r, "text after 'end'");
	if (p->zero)
		check_zero(&r, p);
	check_bf16_grads(&r, a, p);
	char why[300];
	if (mgl_plan_check_memory(p, why, sizeof why))
		bad(&r, "the memory plan is wrong: %s", why);
	if (mgl_plan_check_fusion(p, why, sizeof why))
		bad(&r, "the fused groups are wrong: %s", why);
	return p;
}
