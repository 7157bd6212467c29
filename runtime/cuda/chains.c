/* runtime/cuda/chains.c — one generated kernel for each chain of elementwise steps the plan
 * fused (compiler/fuse.c decides; this file follows the marks): bias_add, dropout, the
 * residual add of Megatron's bias-dropout-add, and their backward twins. The chain's
 * intermediate values never reach memory: one pass reads the chain's outside inputs and
 * writes its last output. A step alone whose op has no kernel in ops.c but a chain
 * expression runs the same way, as a chain of one.
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
		b->s = mgl_xrealloc(b->s, b->cap, "a chain kernel's source");
	}
	va_start(ap, fmt);
	vsnprintf(b->s + b->n, (size_t)k + 1, fmt, ap);
	va_end(ap);
	b->n += (size_t)k;
}

/* Whether a step's expression reads G, the element's index in the whole tensor (a
 * dropout's mask depends on it). */
static bool uses_index(const MglStep *st) { return strchr(mgl_ops[st->op].expr, 'G') != NULL; }

enum { CHAIN_WIDTH = 8 };   /* the widest: ld8 and st8 in kernels/prelude.cuh (and ld4, st4) */

/* Steps [head, last] as one kernel (a plan holds its chains to mgl_chain_ok): the values
 * it reads from outside, in kernel-argument order, and the one it writes. */
static CudaChain chain_of(const MglPlan *p, int head, int last)
{
	CudaChain c = {.head = head, .last = last, .out = p->steps[last].out[0], .indexed = -1};
	for (int s = head; s <= last; s++) {
		const MglStep *st = &p->steps[s];
		for (int k = 0; k < st->nin; k++)
			if (s == head || st->in[k] != p->steps[s - 1].out[0])   /* else the chain's value */
				c.in[c.nin++] = st->in[k];
		if (uses_index(st))
			c.indexed = st->in[0];
	}
	/* 8 elements a thread (16-byte loads of bf16) when the output and every input (a
	 * broadcast one too: read at i % its size) come in eights, else 4, else 1 */
	c.width = 1;
	for (int w = CHAIN_WIDTH; w >= 4 && c.width == 1; w /= 2) {
		bool all = true;
		for (int j = -1; j < c.nin; j++)
			all &= mgl_numel(&p->values[j < 0 ? c.out : c.in[j]]) % w == 0;
		c.width = all ? w : 1;
	}
	return c;
}

int cuda_chains(const MglPlan *p, CudaChain **out)
{
	CudaChain *v = NULL;
	int n = 0, cap = 0;
	for (int s = 0; s < p->nsteps; s++) {
		const MglStep *st = &p->steps[s];
		/* a step alone with a chain expression runs as a chain of one (vector loads, its
		 * constants written in) where the chain rules allow, else by its kernel in ops.c */
		bool alone = st->fuse < 0, elementwise = *mgl_ops[st->op].expr;
		if (alone && elementwise && !mgl_chain_ok(p, NULL, s, s)) {
			if (cuda_ops[st->op])
				continue;
			free(v);
			*out = NULL;
			return -(s + 1);
		}
		if (!elementwise || (!alone && st->fuse != s))
			continue;   /* not the head of a chain (a GEMM's epilogue or an adamw group is not one) */
		int last = mgl_group_end(p, s);
		if (n == cap)
			v = mgl_xrealloc(v, (size_t)(cap = 2 * cap + 8) * sizeof *v, "the plan's chains");
		v[n++] = chain_of(p, s, last);
	}
	*out = v;
	return n;
}

/* The operand k of step s: the chain's value, or element e of outside input j (loaded
 * before the steps, as in<j>[e]). */
static void operand(Buf *b, const MglPlan *p, const CudaChain *c, int s, int k)
{
	int v = p->steps[s].in[k];
	if (s > c->head && v == p->steps[s - 1].out[0]) {
		put(b, "v");
		return;
	}
	for (int j = 0; j < c->nin; j++)
		if (c->in[j] == v) {
			put(b, "in%d[e]", j);
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
	/* a thread takes W = c->width elements from i0: its inputs' W loaded first (vector
	 * loads when W is 4 or 8), then the steps element by element, then the W stored */
	int W = c->width;
	put(&b, "void *out, const Run *run, i64 start)\n{\n\t(void)start;\n\tFOR_EACH(q, %lldLL) {\n\t\ti64 i0 = q * %d;\n",
	    (long long)(mgl_numel(o) / W), W);
	for (int j = 0; j < c->nin; j++) {
		const MglValue *x = &p->values[c->in[j]];
		if (W == 1)
			put(&b, "\t\tfloat in%d[1] = {ld(x%d, %d, i0 %% %lldLL)};\n", j, j, cuda_storage(x), (long long)mgl_numel(x));
		else
			put(&b, "\t\tfloat in%d[%d];\n\t\tld%d(x%d, %d, i0 %% %lldLL, in%d);\n", j, W, W, j, cuda_storage(x),
			    (long long)mgl_numel(x), j);
	}
	put(&b, "\t\tfloat res[%d];\n#pragma unroll\n\t\tfor (int e = 0; e < %d; e++) {\n\t\ti64 i = i0 + e;\n\t\tfloat v;\n", W, W);
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
	put(&b, "\t\tres[e] = v;\n\t\t}\n");
	if (W == 1)
		put(&b, "\t\tst(out, %d, i0, res[0]);\n\t}\n}\n", cuda_storage(o));
	else
		put(&b, "\t\tst%d(out, %d, i0, res);\n\t}\n}\n", W, cuda_storage(o));
	return b.s;
}
