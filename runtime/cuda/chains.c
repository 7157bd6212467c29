/* runtime/cuda/chains.c — one generated kernel for each chain of elementwise steps the plan
 * fused (compiler/fuse.c): bias_add, dropout, the residual add of Megatron's bias-dropout-
 * add, and their backward twins. The chain's intermediate values never reach memory: one
 * pass reads the chain's outside inputs and writes its last output.
 *
 * The source is CUDA C that NVRTC compiles with kernels/ops.cu (whose ld/st, gelu_f,
 * drop, ... it calls), a kernel a chain, with the plan's sizes and storage types written
 * in as constants: each step becomes one line, `v = EXPR;`, EXPR its op's expression in
 * plan/ops.def, over the step's attributes, also written in as constants.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	char *s;
	size_t n, cap;
} Buf;

static void put(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(Buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (b->n + (size_t)k + 1 > b->cap) {
		b->cap = 2 * (b->n + (size_t)k + 1);
		b->s = realloc(b->s, b->cap);
	}
	va_start(ap, fmt);
	vsnprintf(b->s + b->n, (size_t)k + 1, fmt, ap);
	va_end(ap);
	b->n += (size_t)k;
}

/* Whether a step's expression reads G, the element's index in the whole tensor (a
 * dropout's mask depends on it). */
static bool uses_index(const MglStep *st) { return strchr(mgl_ops[st->op].expr, 'G') != NULL; }

/* Whether the steps [head, last] can be one generated kernel; fills c. */
static bool chain_of(const MglPlan *p, int head, int last, CudaChain *c)
{
	memset(c, 0, sizeof *c);
	c->head = head;
	c->last = last;
	c->out = p->steps[last].out[0];
	c->dropout_value = -1;
	int64_t n = mgl_numel(&p->values[c->out]);
	for (int s = head; s <= last; s++) {
		const MglStep *st = &p->steps[s];
		if (!*mgl_ops[st->op].expr || st->nout != 1 || mgl_numel(&p->values[st->out[0]]) != n)
			return false;
		for (int k = 0; k < st->nin; k++) {
			int v = st->in[k];
			if (s > head && v == p->steps[s - 1].out[0])
				continue;   /* the chain's value */
			if (c->nin == CUDA_CHAIN_MAX_IN)
				return false;
			c->in[c->nin++] = v;
		}
		if (uses_index(st)) {
			/* every step of a chain that reads G (a dropout) takes its element indices the same way */
			int v = st->in[0];
			if (c->dropout_value >= 0 && (p->values[v].layout.kind != p->values[c->dropout_value].layout.kind ||
						      p->values[v].layout.dim != p->values[c->dropout_value].layout.dim))
				return false;
			c->dropout_value = v;
		}
	}
	return last > head;
}

int cuda_chains(const MglPlan *p, CudaChain **out)
{
	CudaChain *v = NULL;
	int n = 0, cap = 0;
	for (int s = 0; s < p->nsteps; s++) {
		const MglStep *st = &p->steps[s];
		if (st->fuse != s || st->op == MGL_OP_MATMUL)
			continue;   /* not the head of a group, or a GEMM with its epilogue */
		int last = s;
		while (last + 1 < p->nsteps && p->steps[last + 1].fuse == s)
			last++;
		CudaChain c;
		if (!chain_of(p, s, last, &c))
			continue;
		if (n == cap)
			v = realloc(v, (size_t)(cap = 2 * cap + 8) * sizeof *v);
		v[n++] = c;
	}
	*out = v;
	return n;
}

/* The operand k of step s: the chain's value, or a load of outside input j. */
static void operand(Buf *b, const MglPlan *p, const CudaChain *c, int s, int k)
{
	int v = p->steps[s].in[k];
	if (s > c->head && v == p->steps[s - 1].out[0]) {
		put(b, "v");
		return;
	}
	for (int j = 0; j < c->nin; j++)
		if (c->in[j] == v) {
			const MglValue *x = &p->values[v];
			put(b, "ld(x%d, %d, i %% %lldLL)", j, cuda_storage(x), (long long)mgl_numel(x));
			return;
		}
}

char *cuda_chain_source(const MglPlan *p, const CudaChain *c, int tp)
{
	Buf b = {0};
	const MglValue *o = &p->values[c->out];
	put(&b, "\n// fused: steps %d-%d\nextern \"C\" __global__ void chain_%d(", c->head, c->last, c->head);
	for (int j = 0; j < c->nin; j++)
		put(&b, "const void *x%d, ", j);
	put(&b, "void *out, const Run *run, i64 start)\n{\n\t(void)start;\n\tFOR_EACH(i, %lldLL) {\n\t\tfloat v;\n",
	    (long long)mgl_numel(o));
	for (int s = c->head; s <= c->last; s++) {
		const MglStep *st = &p->steps[s];
		put(&b, "\t\t{ // %s\n\t\t\ti64 G = i;\n", mgl_ops[st->op].name);
		if (uses_index(st) && tp > 1 &&
		    p->values[st->in[0]].layout.kind == MGL_L_S) {
			/* element (o, k, i) of this rank's [outer, n, inner] part is (o, start + k, i) of the whole */
			const MglValue *x = &p->values[st->in[0]];
			int64_t outer, n, inner;
			rt_around(x, x->layout.dim, &outer, &n, &inner);
			put(&b, "\t\t\tG = ((i / %lldLL) * %lldLL + start + (i / %lldLL) %% %lldLL) * %lldLL + i %% %lldLL;\n",
			    (long long)(n * inner), (long long)(n * tp), (long long)inner, (long long)n, (long long)inner,
			    (long long)inner);
		}
		put(&b, "\t\t\tfloat A = ");
		operand(&b, p, c, s, 0);
		put(&b, ";\n");
		if (st->nin > 1) {
			put(&b, "\t\t\tfloat B = ");
			operand(&b, p, c, s, 1);
			put(&b, ";\n");
		} else {
			put(&b, "\t\t\tfloat B = 0; (void)B;\n");
		}
		put(&b, "\t\t\t(void)G;");
		for (int k = 0; k < MGL_ATTR_COUNT; k++)   /* the attributes the expression may use */
			if (mgl_ops[st->op].attrs & (1u << k)) {
				const MglAttrInfo *a = &mgl_attrs[k];
				double x = mgl_attr_get(&st->attr, k);
				if (a->kind == MGL_AK_REAL)
					put(&b, " const double %s = %.17g;", a->name, x);
				else if (x == MGL_NONE_ATTR)
					put(&b, " const i64 %s = -9223372036854775807LL - 1;", a->name);
				else
					put(&b, " const i64 %s = %lldLL;", a->name, (long long)x);
				put(&b, " (void)%s;", a->name);
			}
		put(&b, "\n\t\t\tv = %s;\n\t\t}\n", mgl_ops[st->op].expr);
	}
	put(&b, "\t\tst(out, %d, i, v);\n\t}\n}\n", cuda_storage(o));
	return b.s;
}
