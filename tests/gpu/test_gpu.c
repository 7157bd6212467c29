/* tests/gpu/test_gpu.c — every op of the cuda backend against the cpu backend.
 *
 * For each model and job below, the plan is compiled twice (f32 for the cpu, bf16 for the
 * GPU) with a memory plan that gives every value its own bytes (MGL_NO_REUSE), both jobs
 * get the same parameters and inputs, run one forward and backward pass, and then every
 * value and every gradient is compared: the relative L2 error ||gpu - cpu|| / ||cpu||,
 * grouped by the op that made the value. bf16 storage rounds at 2^-8 relative, and errors
 * grow along a two-layer model, most where a short sum cancels (BERT's two-way head): the
 * tolerance is 5e-2 for activations and 8e-2 for the gradients the backward ops make.
 * Plain C (no Check: the GPU machine does not have it); exits non-zero on a failure.
 *
 * usage: test_gpu [MAX_GPUS]
 */
#include "mgl.h"
#include "backend.h"
#include "cuda/cuda_backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 11;
static double uniform(void) { return (double)(rt_mix64(rng++) >> 11) * (1.0 / 9007199254740992.0); }

static MglPlan *compile(MglCtx *c, const char *model, const char *preset, const char *set, int tp, bool sp, MglDtype dt)
{
	jmp_buf jb;
	c->fail = &jb;
	if (setjmp(jb))
		return NULL;
	MglOptions opt = {.preset = preset, .overrides = *set ? mgl_source_from_string(c, "--set", set, true) : NULL};
	MglGraph *g = mgl_compile_file(c, model, &opt);
	c->fail = &jb;
	bool big = !strcmp(preset, "124m");
	MglTarget t = {.tp = tp, .dp = 1, .sp = sp, .batch = big ? 1 : 4, .seq = big ? 64 : 32, .act_dtype = dt};
	MglPlan *p = g ? mgl_build_plan(c, g, &t) : NULL;
	c->fail = NULL;
	return p;
}

/* Same parameters and inputs on both jobs. Parameters uniform around their initial value:
 * +-0.2 for the small models (values of a useful size), with GPT-2's own scale (its std)
 * for the large one, whose activations would otherwise grow layer after layer. */
static void setup(RtJob *a, RtJob *b, bool big)
{
	const MglPlan *p = a->plan;
	for (int i = 0; i < p->nparams; i++) {
		const MglPlanParam *q = &p->params[i];
		int64_t n = mgl_param_numel(q);
		double amp = !big ? 0.2 : q->init == MGL_INIT_NORMAL ? q->std * 1.7320508 : 0.02;
		float *w = malloc((size_t)n * sizeof *w);
		for (int64_t k = 0; k < n; k++)
			w[k] = (float)((q->init == MGL_INIT_ONES) + amp * (uniform() - 0.5) * 2);
		rt_param_set(a, i, RT_PARAM_VALUE, w);
		rt_param_set(b, i, RT_PARAM_VALUE, w);
		free(w);
	}
	for (int v = 0; v < p->nvalues; v++) {
		const MglValue *x = &p->values[v];
		if (x->role != MGL_V_INPUT)
			continue;
		int64_t n = mgl_numel(x);
		int32_t *ids = malloc((size_t)n * sizeof *ids);
		float one = 1;
		for (int64_t i = 0; i < n; i++)
			ids[i] = !strcmp(x->name, "mask") ? (i % x->shape[1] < x->shape[1] - 2 || i < x->shape[1])
			       : !strcmp(x->name, "segments") || !strcmp(x->name, "nsp_targets") ? uniform() < 0.5
			       : !strcmp(x->name, "mlm_targets") && uniform() < 0.5 ? -1 : (int32_t)(uniform() * (double)p->vocab);
		for (int r = 0; r < a->nranks; r++) {
			a->be->write(&a->ranks[r], v, x->dtype == MGL_I32 ? (void *)ids : (void *)&one);
			b->be->write(&b->ranks[r], v, x->dtype == MGL_I32 ? (void *)ids : (void *)&one);
		}
		free(ids);
	}
	for (int r = 0; r < a->nranks; r++)
		for (int i = 0; i < p->nparams; i++) {
			a->be->zero(&a->ranks[r], p->params[i].grad);
			b->be->zero(&b->ranks[r], p->params[i].grad);
		}
}

/* A value the cuda backend never writes: made by a step of a fused group (a GEMM with its
 * bias epilogue, a chain of elementwise steps) and read by the next step of the group. The
 * bf16 plan's groups, not the f32 one's: the compiler forms epilogues for bf16 only.
 * (The bias_add before a fused gelu is written: it is the epilogue's auxiliary output.) */
static bool fused_away(const MglPlan *p, int v)
{
	for (int s = 0; s + 1 < p->nsteps; s++)
		if (p->steps[s].nout && p->steps[s].out[0] == v)
			return p->steps[s].fuse >= 0 && p->steps[s + 1].fuse == p->steps[s].fuse &&
			       (p->steps[s + 1].in[0] == v || (p->steps[s + 1].nin > 1 && p->steps[s + 1].in[1] == v));
	return false;
}

static int check(const char *model, const char *preset, const char *set, int tp, bool sp)
{
	MglCtx ca = {0}, cb = {0};
	MglPlan *pa = compile(&ca, model, preset, set, tp, sp, MGL_F32), *pb = compile(&cb, model, preset, set, tp, sp, MGL_BF16);
	if (!pa || !pb || pa->nvalues != pb->nvalues) {
		printf("FAIL %s tp %d: the plans do not compile alike\n", model, tp);
		return 1;
	}
	char err[512];
	RtJob *a = rt_job_open(pa, &rt_cpu_backend, err, sizeof err), *b = a ? rt_job_open(pb, &rt_cuda_backend, err, sizeof err) : NULL;
	if (!a || !b) {
		printf("FAIL %s tp %d: %s\n", model, tp, err);
		rt_job_close(a);
		return 1;
	}
	setup(a, b, !strcmp(preset, "124m"));
	RtRun run = {.train = true, .key = 99, .last_micro = true, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
		     .clip = 1, .adam_t = 1};
	unsigned phases = 1u << MGL_FWD | 1u << MGL_BWD;
	if (rt_job_run(a, phases, &run, err, sizeof err) || rt_job_run(b, phases, &run, err, sizeof err)) {
		printf("FAIL %s tp %d: %s\n", model, tp, err);
		rt_job_close(a);
		rt_job_close(b);
		return 1;
	}
	/* the worst error per op, over every rank's values */
	double worst[MGL_OP_COUNT] = {0};
	const char *where[MGL_OP_COUNT] = {0};
	int *maker = calloc((size_t)pa->nvalues, sizeof *maker), *phase = calloc((size_t)pa->nvalues, sizeof *phase);
	for (int v = 0; v < pa->nvalues; v++)
		maker[v] = -1;
	for (int s = 0; s < pa->nsteps; s++)
		if (pa->steps[s].phase != MGL_OPT)
			for (int k = 0; k < pa->steps[s].nout; k++) {
				maker[pa->steps[s].out[k]] = pa->steps[s].op;
				phase[pa->steps[s].out[k]] = pa->steps[s].phase;
			}
	double tol[MGL_OP_COUNT] = {0};
	int fails = 0;
	for (int v = 0; v < pa->nvalues; v++) {
		const MglValue *x = &pa->values[v];
		if (maker[v] < 0 || (x->role != MGL_V_ACT && x->role != MGL_V_GRAD) || x->dtype == MGL_I32)
			continue;
		if (fused_away(pb, v))
			continue;   /* an intermediate of a fused group of the GPU's plan: never written there */
		int64_t n = mgl_numel(x);
		float *ga = malloc((size_t)n * sizeof *ga), *gb = malloc((size_t)n * sizeof *gb);
		for (int r = 0; r < a->nranks; r++) {
			a->be->read(&a->ranks[r], v, ga);
			b->be->read(&b->ranks[r], v, gb);
			/* the relative L2 error, with a floor of 1e-4 an element for values that are zero
			 * in exact arithmetic (a key bias's gradient) and so only rounding either side;
			 * equal infinities (the max over a rank holding only padding) agree */
			double num = 0, den = 0;
			bool agree = true;
			for (int64_t i = 0; i < n; i++) {
				if (ga[i] == gb[i])
					continue;
				agree &= isfinite(ga[i]) && isfinite(gb[i]);
				num += ((double)gb[i] - ga[i]) * ((double)gb[i] - ga[i]);
				den += (double)ga[i] * ga[i];
			}
			double e = !agree ? INFINITY : sqrt(num) / (sqrt(den) + 1e-4 * sqrt((double)n));
			/* a value zero in exact arithmetic (a key bias's gradient: softmax ignores a shift
			 * of every score) is rounding on both sides: it must stay small, not agree */
			if (agree && sqrt(den / (double)n) < 1e-6)
				e = sqrt(num / (double)n) < 1e-3 ? 0 : INFINITY;
			double t = phase[v] == MGL_BWD ? 8e-2 : 5e-2;
			if (!where[maker[v]] || e / t > worst[maker[v]] / tol[maker[v]]) {
				worst[maker[v]] = e;
				tol[maker[v]] = t;
				where[maker[v]] = x->name;
			}
		}
		free(ga);
		free(gb);
	}
	printf("%s %s (%s) tp %d%s:\n", model, preset, set, tp, sp ? " sp" : "");
	for (int op = 0; op < MGL_OP_COUNT; op++) {
		if (!where[op])
			continue;
		bool bad = !(worst[op] <= tol[op]);
		fails += bad;
		printf("  %-15s %-4s worst %.2e of %.0e  (%s)\n", mgl_ops[op].name, bad ? "FAIL" : "ok", worst[op], tol[op],
		       where[op]);
	}
	free(maker);
	free(phase);
	rt_job_close(a);
	rt_job_close(b);
	mgl_arena_free(&ca.arena);
	mgl_arena_free(&cb.arena);
	return fails;
}

int main(int argc, char **argv)
{
	int gpus = rt_cuda_devices(), limit = argc > 1 ? atoi(argv[1]) : gpus;
	const char *only = argc > 2 ? argv[2] : NULL;   /* a preset, to run just its checks */
	if (gpus < 1) {
		printf("test_gpu: no GPU\n");
		return 1;
	}
	setenv("MGL_NO_REUSE", "1", 1);   /* every value its own bytes: all can be compared after the run */
	static const struct { const char *model, *preset, *set; } models[] = {
		{"models/gpt2.mgl", "tiny", "vocab=200,d=64,heads=4,layers=2"},
		{"models/gpt2.mgl", "tiny", "vocab=96,d=256,heads=4,layers=1"},   /* heads of 64 */
		{"models/bert.mgl", "tiny", "vocab=120,d=64,heads=4,layers=2"},
		{"models/gpt2.mgl", "124m", ""},                                   /* GPT-2 small, one sequence of 64 */
	};
	int fails = 0, runs = 0;
	for (size_t m = 0; m < sizeof models / sizeof models[0]; m++)
		for (int tp = 1; tp <= 4 && tp <= limit && (!only || !strcmp(only, models[m].preset)); tp *= 2)
			for (int sp = 0; sp < (tp > 1 ? 2 : 1); sp++) {
				fails += check(models[m].model, models[m].preset, models[m].set, tp, sp) != 0;
				runs++;
			}
	printf("test_gpu: %d passed, %d failed\n", runs - fails, fails);
	return fails != 0;
}
