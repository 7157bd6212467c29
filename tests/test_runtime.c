/* tests/test_runtime.c — the cpu runtime end to end: gradients against finite differences
 * (in double, with the cpu64 backend), the same training at tp 1, 2 and 4 (with and
 * without --sp), a model that memorizes one batch, exact resumption, and the failures a
 * user can cause (bad data, a NaN loss, Ctrl-C). */
#include "mgl.h"
#include "backend.h"

#include <check.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
	MglCtx c;
	MglPlan *p;
	char *diag;
	size_t diaglen;
} Compiled;

static MglPlan *compile(Compiled *k, const char *model, const char *preset, const char *set, MglTarget t)
{
	memset(k, 0, sizeof *k);
	k->c.out = open_memstream(&k->diag, &k->diaglen);
	jmp_buf jb;
	k->c.fail = &jb;
	MglOptions opt = {.preset = preset};
	if (!setjmp(jb)) {
		if (set)
			opt.overrides = mgl_source_from_string(&k->c, "--set", set, true);
		MglGraph *g = mgl_compile_file(&k->c, model, &opt);
		k->c.fail = &jb;
		if (g)
			k->p = mgl_build_plan(&k->c, g, &t);
	}
	fclose(k->c.out);
	ck_assert_msg(k->p, "%s", k->diag);
	return k->p;
}

static void compiled_free(Compiled *k)
{
	mgl_arena_free(&k->c.arena);
	free(k->diag);
}

static uint64_t rng = 7;
static double uniform(void) { return (double)(rt_mix64(rng++) >> 11) * (1.0 / 9007199254740992.0); }

/* Inputs a model of either kind takes, by name, drawn once; written before every run,
 * since the arena reuses an input's bytes after its last reader. */
static int32_t *inputs[64];

static void fill_inputs(RtJob *j, bool draw)
{
	const MglPlan *p = j->plan;
	for (int v = 0, k = 0; v < p->nvalues; v++) {
		const MglValue *x = &p->values[v];
		if (x->role != MGL_V_INPUT)
			continue;
		int64_t n = 1;
		for (int d = 0; d < x->rank; d++)
			n *= x->shape[d];
		int32_t *ids = inputs[k++];
		if (draw) {
			free(ids);
			ids = inputs[k - 1] = malloc((size_t)n * sizeof *ids);
			for (int64_t i = 0; i < n; i++) {
				int64_t vocab = p->vocab;
				if (!strcmp(x->name, "segments") || !strcmp(x->name, "nsp_targets"))
					ids[i] = uniform() < 0.5;
				else if (!strcmp(x->name, "mask"))   /* rows after the first end in padding */
					ids[i] = i % x->shape[1] < x->shape[1] - 3 || i < x->shape[1];
				else if (!strcmp(x->name, "mlm_targets"))
					ids[i] = uniform() < 0.5 ? -1 : (int32_t)(uniform() * (double)vocab);
				else
					ids[i] = (int32_t)(uniform() * (double)vocab);
			}
		}
		float one = 1.0f;
		for (int r = 0; r < j->nranks; r++)
			j->be->write(&j->ranks[r], v, x->dtype == MGL_I32 ? (const void *)ids : (const void *)&one);
	}
}

static int64_t numel_of(const MglPlanParam *q)
{
	int64_t n = 1;
	for (int k = 0; k < q->rank; k++)
		n *= q->shape[k];
	return n;
}

/* Parameters of a useful size for finite differences: weights N(0, 0.3), gains near 1. */
static void random_params(RtJob *j)
{
	for (int i = 0; i < j->plan->nparams; i++) {
		const MglPlanParam *q = &j->plan->params[i];
		int64_t n = numel_of(q);
		float *w = malloc((size_t)n * sizeof *w);
		for (int64_t k = 0; k < n; k++)
			w[k] = (float)((q->init == MGL_INIT_ONES ? 1.0 : 0.0) + 0.3 * (uniform() - 0.5) * 2);
		rt_param_set(j, i, RT_PARAM_VALUE, w);
		free(w);
	}
}

/* The model's loss: the last forward step's output. */
static double loss_of(RtJob *j)
{
	int last = -1;
	for (int s = 0; s < j->plan->nsteps; s++)
		if (j->plan->steps[s].phase == MGL_FWD)
			last = s;
	return j->be->peek(&j->ranks[0], j->plan->steps[last].out[0], 0);
}

static void run(RtJob *j, unsigned phases)
{
	fill_inputs(j, false);
	RtRun r = {.train = true, .key = 42, .last_micro = true};
	char err[256];
	ck_assert_msg(!rt_job_run(j, phases, &r, err, sizeof err), "%s", err);
}

/* Every parameter's gradient at a few elements against central differences, in double. */
static void check_gradients(const char *model, int tp, bool sp)
{
	Compiled k;
	MglTarget t = {.tp = tp, .dp = 1, .sp = sp, .batch = 3, .seq = 8, .act_dtype = MGL_F32};
	MglPlan *p = compile(&k, model, "tiny", getenv("FD_SET") ? getenv("FD_SET") : "vocab=40,d=16,heads=4,layers=2,p_drop=0.2", t);
	char err[256];
	RtJob *j = rt_job_open(p, &rt_cpu64_backend, err, sizeof err);
	ck_assert_msg(j, "%s", err);
	fill_inputs(j, true);
	random_params(j);
	for (int r = 0; r < j->nranks; r++)
		for (int i = 0; i < p->nparams; i++)
			j->be->zero(&j->ranks[r], p->params[i].grad);
	run(j, 1u << MGL_FWD | 1u << MGL_BWD);
	double worst = 0;
	int bad = 0;
	const char *worst_name = "";
	for (int i = 0; i < p->nparams; i++) {
		const MglPlanParam *q = &p->params[i];
		int64_t n = numel_of(q);
		float *w = malloc((size_t)n * sizeof *w), *g = malloc((size_t)n * sizeof *g);
		rt_param_get(j, i, RT_PARAM_VALUE, w);
		rt_param_get(j, i, RT_PARAM_GRAD, g);
		for (int probe = 0; probe < 3; probe++) {
			int64_t e = (int64_t)(uniform() * (double)n);
			/* the host side is float: perturb by an exactly representable step */
			float w0 = w[e], h = 1.0f / 1024;
			double l[2];
			for (int side = 0; side < 2; side++) {
				w[e] = w0 + (side ? -h : h);
				rt_param_set(j, i, RT_PARAM_VALUE, w);
				run(j, 1u << MGL_FWD);
				l[side] = loss_of(j);
			}
			w[e] = w0;
			rt_param_set(j, i, RT_PARAM_VALUE, w);
			double fd = (l[0] - l[1]) / (2.0 * h), an = g[e];
			/* h^2 truncation and float parameters: 1e-4 relative is tight for both */
			double err_rel = fabs(fd - an) / (fabs(fd) + fabs(an) + 1e-6);
			if (fabs(fd - an) > 1e-5 && err_rel > worst) {
				worst = err_rel;
				worst_name = q->name;
			}
			if (!(fabs(fd - an) <= 1e-5 + 2e-3 * fabs(fd))) {
				fprintf(stderr, "%s tp %d sp %d: d loss / d %s[%lld]: finite difference %.9g, backward %.9g\n",
					model, tp, sp, q->name, (long long)e, fd, an);
				bad++;
			}
		}
		free(w);
		free(g);
	}
	(void)worst_name;
	ck_assert_msg(!bad, "%d gradients disagree with finite differences", bad);
	rt_job_close(j);
	compiled_free(&k);
}

START_TEST(gradients_gpt2) { check_gradients("models/gpt2.mgl", 1, false); }
END_TEST
START_TEST(gradients_gpt2_tp2) { check_gradients("models/gpt2.mgl", 2, false); }
END_TEST
START_TEST(gradients_gpt2_tp2_sp) { check_gradients("models/gpt2.mgl", 2, true); }
END_TEST
START_TEST(gradients_bert) { check_gradients("models/bert.mgl", 1, false); }
END_TEST
START_TEST(gradients_bert_tp4_sp) { check_gradients("models/bert.mgl", 4, true); }
END_TEST

int main(void)
{
	Suite *s = suite_create("runtime");
	TCase *grad = tcase_create("gradients");
	tcase_add_test(grad, gradients_gpt2);
	tcase_add_test(grad, gradients_gpt2_tp2);
	tcase_add_test(grad, gradients_gpt2_tp2_sp);
	tcase_add_test(grad, gradients_bert);
	tcase_add_test(grad, gradients_bert_tp4_sp);
	tcase_set_timeout(grad, 300);
	suite_add_tcase(s, grad);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
