/* tests/test_ops.c — Check suites for the op registry (plan/ops.def): every op has an arity
 * its layout signatures agree with, a gradient rule autodiff can follow or a "not
 * differentiable" mark, a chain expression only where it can be fused, and a kernel on
 * every backend (the cuda backend's table is read without a GPU); an op whose rule is
 * missing or wrong is reported by name; and the fused chains a plan generates compile
 * with NVRTC (no GPU needed either). */
#include "mgl.h"
#include "backend.h"
#ifdef MGL_CUDA
#include "cuda/internal.h"
#endif

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Inputs and outputs of each of a layout column's signatures; how many there are. */
static int sig_counts(const char *s, int *nin, int *nout, int max)
{
	int n = 0;
	while (*s && n < max) {
		s += *s == '~';
		int in = 1, out = 0;
		for (; *s && *s != ' '; s++) {
			if (*s == '>')
				out = 1;
			else if (*s == ',' && out)
				out++;
			else if (*s == ',')
				in++;
		}
		nin[n] = in;
		nout[n++] = out;
		while (*s == ' ')
			s++;
	}
	return n;
}

START_TEST(every_op_is_complete)
{
	for (int op = 0; op < MGL_OP_COUNT; op++) {
		const MglOpInfo *o = &mgl_ops[op];
		ck_assert_msg(o->name && *o->name, "op %d has no name", op);
		for (int k = 0; k < op; k++)
			ck_assert_msg(strcmp(o->name, mgl_ops[k].name), "two ops named %s", o->name);
		/* an arity */
		ck_assert_msg(o->in_min >= 0 && (o->in_max < 0 || o->in_max >= o->in_min) && (o->nout >= 1 || o->nout == -1),
			      "%s: a bad arity", o->name);
		/* layout signatures of that arity */
		int nin[8], nout[8], n = sig_counts(o->layouts, nin, nout, 8);
		for (int k = 0; k < n; k++)
			ck_assert_msg((o->in_max < 0 || nin[k] == o->in_max) && (o->nout < 0 || nout[k] == o->nout),
				      "%s: signature %d has %d inputs and %d outputs, the op %d and %d", o->name, k + 1, nin[k],
				      nout[k], o->in_max, o->nout);
		/* a gradient rule that can be followed, or "-" */
		char err[400];
		ck_assert_msg(mgl_grad_check(o, err, sizeof err) == 0, "%s", err);
		/* a chain expression only for an elementwise op of one output over A and B */
		if (*o->expr)
			ck_assert_msg((o->flags & MGL_OPF_ELEMENTWISE) && o->nout == 1 && o->in_max >= 1 && o->in_max <= 2,
				      "%s: a chain expression, but not an elementwise op of 1 or 2 inputs", o->name);
		/* a kind for profiles: collectives are the ops that communicate */
		ck_assert_msg(o->kind < MGL_KIND_COUNT && ((o->kind == MGL_KIND_COLLECTIVE) == !!(o->flags & MGL_OPF_COLLECTIVE)),
			      "%s: kind %d, but %s a collective", o->name, (int)o->kind,
			      o->flags & MGL_OPF_COLLECTIVE ? "it is" : "it is not");
		/* a kernel on every backend, unless the compiler lowers it before a plan */
		if (o->flags & MGL_OPF_GRAPH)
			continue;
		ck_assert_msg(rt_cpu_backend.runs(op), "the cpu backend has no kernel for %s", o->name);
		ck_assert_msg(rt_cpu64_backend.runs(op), "the cpu64 backend has no kernel for %s", o->name);
#ifdef MGL_CUDA
		ck_assert_msg(rt_cuda_backend.runs(op), "the cuda backend has no kernel for %s", o->name);
#endif
	}
#ifndef MGL_CUDA
	printf("SKIP: the cuda backend's kernels (built without CUDA)\n");
#endif
	/* every attribute is one some op carries, with a sane range and default */
	for (int a = 0; a < MGL_ATTR_COUNT; a++) {
		const MglAttrInfo *in = &mgl_attrs[a];
		bool used = false;
		for (int op = 0; op < MGL_OP_COUNT; op++)
			used |= (mgl_ops[op].attrs >> a) & 1;
		ck_assert_msg(used, "no op carries the attribute %s", in->name);
		ck_assert_msg(in->lo <= in->hi && (isnan(in->dflt) || in->dflt == MGL_NONE_ATTR ||
						   (in->dflt >= in->lo && in->dflt <= in->hi)), "%s: a bad range or default", in->name);
	}
}
END_TEST

/* An op marked differentiable without a rule, or with one that cannot be followed, is
 * named in the error autodiff stops with. */
START_TEST(a_missing_gradient_rule_names_the_op)
{
	MglOpInfo gelu = mgl_ops[MGL_OP_GELU];
	char err[400];
	gelu.grad = "";
	ck_assert_int_eq(mgl_grad_check(&gelu, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "gelu is differentiable but has no gradient rule"), "%s", err);
	gelu.grad = "gelu_bwd(dy)>dx0";
	ck_assert_int_eq(mgl_grad_check(&gelu, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "gelu's gradient rule 'gelu_bwd(dy)>dx0'") && strstr(err, "gelu_bwd takes 2 to 2 inputs"),
		      "%s", err);
	gelu.grad = "gelu_bwd(dy,x1)>dx0";   /* gelu has one input */
	ck_assert_int_eq(mgl_grad_check(&gelu, err, sizeof err), -1);
	gelu.grad = "nope(dy,x0)>dx0";
	ck_assert_int_eq(mgl_grad_check(&gelu, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "must name a backward op"), "%s", err);
	gelu.grad = "gelu_bwd(dy,x0)>";
	ck_assert_int_eq(mgl_grad_check(&gelu, err, sizeof err), -1);
}
END_TEST

#ifdef MGL_CUDA
static MglPlan *plan_of(MglCtx *c, const char *model, int tp, bool sp, bool bf16_grads)
{
	jmp_buf jb;
	c->fail = &jb;
	if (setjmp(jb))
		return NULL;
	MglOptions opt = {.preset = "tiny"};
	MglGraph *g = mgl_compile_file(c, model, &opt);
	c->fail = &jb;
	MglTarget t = {.tp = tp, .dp = 1, .sp = sp, .batch = 2, .seq = 32, .act_dtype = MGL_BF16, .bf16_grads = bf16_grads};
	MglPlan *p = g ? mgl_build_plan(c, g, &t) : NULL;
	c->fail = NULL;
	return p;
}
#endif

/* What the cuda backend stores of each value (cuda_storage: parameters f32, the rest as
 * the plan says) fits the bytes the plan gives it, with and without bf16 weight gradients
 * (bf16 weight gradients: the backend once stored every gradient as f32, twice a bf16 one's bytes). */
START_TEST(cuda_storage_fits_the_plan)
{
#ifdef MGL_CUDA
	static const struct { const char *model; int tp; bool sp; } cases[] = {
		{"models/gpt2.mgl", 1, false}, {"models/gpt2.mgl", 2, false}, {"models/bert.mgl", 2, true}, {"models/llama.mgl", 1, false}};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
		for (int g16 = 0; g16 < 2; g16++) {
			MglCtx ctx = {0};
			MglPlan *p = plan_of(&ctx, cases[c].model, cases[c].tp, cases[c].sp, g16);
			ck_assert_ptr_nonnull(p);
			int bf16_grads = 0;
			for (int v = 0; v < p->nvalues; v++) {
				const MglValue *x = &p->values[v];
				int64_t need = mgl_numel(x) * mgl_dtype_size[cuda_storage(x)];
				ck_assert_msg(!x->bytes || need <= x->bytes, "%s tp %d: %s: %lld bytes stored in %lld", cases[c].model,
					      cases[c].tp, x->name, (long long)need, (long long)x->bytes);
				bf16_grads += x->role == MGL_V_GRAD && cuda_storage(x) == MGL_BF16;
			}
			ck_assert_msg((bf16_grads > 0) == g16, "%s: %d bf16 gradients", cases[c].model, bf16_grads);
			mgl_arena_free(&ctx.arena);
		}
#else
	printf("SKIP: cuda_storage_fits_the_plan (built without CUDA)\n");
#endif
}
END_TEST

/* The generated chain kernels of real plans (their expressions from the registry, the
 * steps' attributes as constants), and every op's chain expression on its own, compile
 * with NVRTC, with kernels/ops.cu. */
START_TEST(fused_chains_compile)
{
#ifdef MGL_CUDA
	static const struct { const char *model; int tp; bool sp; } cases[] = {
		{"models/gpt2.mgl", 2, false}, {"models/bert.mgl", 2, true}, {"models/llama.mgl", 2, false}};
	/* as nvrtc.c compiles a plan's chains: after kernels/prelude.cuh alone */
	static const char head[] = "#include \"prelude.cuh\"\n";
	size_t len = strlen(head);
	char *src = malloc(len + 1);
	memcpy(src, head, len + 1);
	int total = 0;
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		MglCtx ctx = {0};
		MglPlan *p = plan_of(&ctx, cases[c].model, cases[c].tp, cases[c].sp, false);
		ck_assert_ptr_nonnull(p);
		CudaChain *chains;
		int n = cuda_chains(p, &chains);
		for (int k = 0; k < n; k++) {
			char *s = cuda_chain_source(p, &chains[k], p->tp), *name = strstr(s, "void chain_");
			ck_assert_ptr_nonnull(name);
			/* named after the plan too: two plans may have a chain at the same step */
			size_t pre = (size_t)(name - s) + 5, room = strlen(s) + 16;
			src = realloc(src, len + room);
			len += (size_t)snprintf(src + len, room, "%.*splan%zu_%s", (int)pre, s, c, s + pre);
			free(s);
		}
		total += n;
		free(chains);
		mgl_arena_free(&ctx.arena);
	}
	ck_assert_int_gt(total, 4);
	/* and every op's expression, alone, over its attributes, as chains.c declares them */
	for (int op = 0; op < MGL_OP_COUNT; op++) {
		if (!*mgl_ops[op].expr)
			continue;
		char k[1024];
		int m = snprintf(k, sizeof k, "\nextern \"C\" __global__ void expr_%s(float *o, const Run *run)\n{\n"
				 "\tfloat A = 1, B = 2; i64 G = 0; (void)A; (void)B; (void)G;", mgl_ops[op].name);
		for (int a = 0; a < MGL_ATTR_COUNT; a++)
			if (mgl_ops[op].attrs & (1u << a))
				m += snprintf(k + m, sizeof k - (size_t)m, " const %s %s = 0; (void)%s;",
					      mgl_attrs[a].kind == MGL_AK_REAL ? "double" : "i64", mgl_attrs[a].name, mgl_attrs[a].name);
		snprintf(k + m, sizeof k - (size_t)m, "\n\to[0] = %s;\n}\n", mgl_ops[op].expr);
		src = realloc(src, len + strlen(k) + 1);
		memcpy(src + len, k, strlen(k) + 1);
		len += strlen(k);
	}
	char err[2048];
	size_t n;
	void *cubin = rt_cuda_compile(src, 9, 0, &n, err, sizeof err);
	ck_assert_msg(cubin, "%s", err);
	free(cubin);
	free(src);
#else
	printf("SKIP: fused_chains_compile (built without CUDA)\n");
#endif
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ops");
	TCase *reg = tcase_create("registry");
	tcase_add_test(reg, every_op_is_complete);
	tcase_add_test(reg, a_missing_gradient_rule_names_the_op);
	tcase_add_test(reg, fused_chains_compile);
	tcase_add_test(reg, cuda_storage_fits_the_plan);
	tcase_set_timeout(reg, 300);
	suite_add_tcase(s, reg);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
