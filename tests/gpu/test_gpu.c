/* tests/gpu/test_gpu.c — every op of the cuda backend against the cpu backend.
 *
 * 1. Every op. For each small model and job below, the plan is compiled twice (f32 for the
 *    cpu, bf16 for the GPU) with a memory plan that gives every value its own bytes
 *    (MGL_NO_REUSE), both jobs get the same parameters and inputs, run one forward,
 *    backward and optimizer pass, and then every value is compared: the relative L2
 *    error ||gpu - cpu|| / ||cpu||, grouped by the op that made the value (the gradient
 *    norm and AdamW included: the moments, and the update each parameter got). bf16
 *    storage rounds at 2^-8 relative, and errors grow along a two-layer model, most where
 *    a short sum cancels (BERT's two-way head): the tolerance is 5e-2 for activations and
 *    8e-2 for what the backward and optimizer steps make; a bias's gradient is relative to
 *    the larger of its norm and its terms' (terms_norm below: the two-way head's bias
 *    gradient over a batch of 2 is a difference of near-equal probabilities). Under sp the
 *    collectives along the sequence go through a staging buffer, and again under
 *    MGL_SP_GROUPED=1 a row at a time up to 64 rows (runtime/cuda/internal.h:
 *    CUDA_GROUPED_MAX), past that staged: one case has 66 sequences. GPT-2's case runs again with q, k and v's bias gradients
 *    summed by a column sum after attention's backward (MGL_NO_QKV_BIAS_SUMS=1), not by it,
 *    and with q, k and v's forward as three GEMMs, not one batched (MGL_NO_QKV_FWD=1);
 *    the layer norms' backward at the edges of its bands and past its widest row; the
 *    flash cases again with mma.sync's forward (MGL_NO_WG_FWD), with mma.sync's both ways
 *    (MGL_NO_WGMMA), and with the attention's tiles copied and dQ added by each thread
 *    (cp.async, red.global) instead of TMA (MGL_NO_FA_TMA).
 * 2. The real memory plan. The same jobs again with the memory plan training uses (values
 *    share bytes once dead) on the GPU: the loss, the gradients, the moments and the
 *    updates. (The cpu's job keeps every value its own bytes, for terms_norm.) Every
 *    value its own bytes hides a kernel that overwrites its own inputs: that is how the
 *    generated chains raced on the GPU with this test passing (issue 8).
 * 3. Real widths. GPT-2 124M and BERT 336M (two layers each, sequences of 1024 and 512)
 *    with the real memory plan at tp 1, 2 and 4, each twice: against the cpu as in 2, the
 *    loss against tp 1's within 3e-4, and equal to the bit between the two runs (the
 *    forward pass has no atomics: a loss that moves between runs is a race). A tiny model
 *    fits in a few thread blocks, where such races rarely show.
 * Plain C (no Check: the GPU machine does not have it); exits non-zero on a failure.
 *
 * The tp jobs need a GPU a rank, or MGL_SHARE_GPU=1 (docs/gpu.md): then MAX_GPUS is the
 * most ranks a job gets, sharing the GPUs there are, with collectives through the host
 * instead of NCCL (runtime/cuda/host_comm.c): every kernel of tp 2 and 4 on one GPU.
 *
 * usage: [MGL_SHARE_GPU=1] test_gpu [MAX_GPUS [PRESET]]
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

/* Each check draws from its own seed, the case's and the job's: the same parameters and
 * inputs however many GPUs ran the checks before it, so that a case run again under a
 * kernel switch (flash_env below) meets the numbers it met on the default kernels. */
static void seed(const char *a, const char *b, int tp, bool sp)
{
	uint64_t h = 1469598103934665603ull;   /* FNV-1a */
	for (const char *s = a; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	for (const char *s = b; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	rng = rt_mix64(h ^ (uint64_t)tp << 8 ^ (uint64_t)sp);
}

typedef struct {
	const char *model, *preset, *set;
	int64_t batch, seq;
	bool big;              /* parameters at GPT-2's own scale, not +-0.2 */
	int64_t valid;         /* BERT's mask: sequence b's first valid + 45 b positions real, the
				* rest padding (whole tiles of keys and queries, as a real batch's
				* short examples); 0: every sequence but the first ends in 2 pads */
} Case;

static MglPlan *compile(MglCtx *c, const Case *k, int tp, bool sp, MglDtype dt, bool reuse)
{
	jmp_buf jb;
	c->fail = &jb;
	if (setjmp(jb))
		return NULL;
	if (reuse)
		unsetenv("MGL_NO_REUSE");
	else
		setenv("MGL_NO_REUSE", "1", 1);   /* every value its own bytes: all can be compared after the run */
	MglOptions opt = {.preset = k->preset, .overrides = *k->set ? mgl_source_from_string(c, "--set", k->set, true) : NULL};
	MglGraph *g = mgl_compile_file(c, k->model, &opt);
	c->fail = &jb;
	MglTarget t = {.tp = tp, .dp = 1, .sp = sp, .batch = k->batch, .seq = k->seq, .act_dtype = dt,
		       .bf16_grads = true};
	MglPlan *p = g ? mgl_build_plan(c, g, &t) : NULL;
	c->fail = NULL;
	return p;
}

/* What every job of a case is given: the full parameters and the inputs, drawn once.
 * Parameters uniform around their initial value: +-0.2 for the small models (values of a
 * useful size), with GPT-2's own scale (its std) for the large ones, whose activations
 * would otherwise grow layer after layer. */
typedef struct {
	int nparams, ninputs;
	float **w;
	const char **input;    /* names */
	int32_t **ids;
} Given;

static Given draw(const MglPlan *p, const Case *c)
{
	bool big = c->big;
	Given g = {.nparams = p->nparams, .w = calloc((size_t)p->nparams, sizeof *g.w)};
	for (int i = 0; i < p->nparams; i++) {
		const MglPlanParam *q = &p->params[i];
		int64_t n = mgl_param_numel(q);
		double amp = !big ? 0.2 : q->init == MGL_INIT_NORMAL ? q->std * 1.7320508 : 0.02;
		g.w[i] = malloc((size_t)n * sizeof *g.w[i]);
		for (int64_t k = 0; k < n; k++)
			g.w[i][k] = (float)((q->init == MGL_INIT_ONES) + amp * (uniform() - 0.5) * 2);
	}
	g.input = calloc((size_t)p->nvalues, sizeof *g.input);
	g.ids = calloc((size_t)p->nvalues, sizeof *g.ids);
	for (int v = 0; v < p->nvalues; v++) {
		const MglValue *x = &p->values[v];
		if (x->role != MGL_V_INPUT || x->dtype != MGL_I32)
			continue;
		int64_t n = mgl_numel(x);
		int32_t *ids = malloc((size_t)n * sizeof *ids);
		for (int64_t i = 0; i < n; i++)
			ids[i] = !strcmp(x->name, "mask") && c->valid ? i % x->shape[1] < c->valid + 45 * (i / x->shape[1])
			       : !strcmp(x->name, "mask") ? (i % x->shape[1] < x->shape[1] - 2 || i < x->shape[1])
			       : !strcmp(x->name, "segments") || !strcmp(x->name, "sop_targets") ? uniform() < 0.5
			       : !strcmp(x->name, "mlm_targets") && uniform() < 0.5 ? -1 : (int32_t)(uniform() * (double)p->vocab);
		g.input[g.ninputs] = x->name;
		g.ids[g.ninputs++] = ids;
	}
	return g;
}

static void given_free(Given *g)
{
	for (int i = 0; i < g->nparams; i++)
		free(g->w[i]);
	for (int i = 0; i < g->ninputs; i++)
		free(g->ids[i]);
	free(g->w);
	free(g->input);
	free(g->ids);
}

/* The parameters and inputs into a job, and its gradients zeroed. */
static void give(RtJob *j, const Given *g)
{
	const MglPlan *p = j->plan;
	for (int i = 0; i < p->nparams; i++)
		rt_param_set(j, i, RT_PARAM_VALUE, g->w[i]);
	for (int v = 0; v < p->nvalues; v++) {
		const MglValue *x = &p->values[v];
		if (x->role != MGL_V_INPUT)
			continue;
		float one = 1;
		const void *data = &one;
		for (int i = 0; i < g->ninputs; i++)
			if (x->dtype == MGL_I32 && !strcmp(g->input[i], x->name))
				data = g->ids[i];
		for (int r = 0; r < j->nranks; r++)
			j->be->write(&j->ranks[r], v, data);
	}
	for (int r = 0; r < j->nranks; r++)
		j->be->zero_grads(&j->ranks[r]);
}

/* The relative L2 error of b against a, with a floor of 1e-4 an element for values that
 * are zero in exact arithmetic and so only rounding either side; equal infinities (the max
 * over a rank holding only padding) agree. A value zero in exact arithmetic (a key bias's
 * gradient: softmax ignores a shift of every score) must stay small, not agree. `scale`:
 * the L2 norm of the terms a is a sum of, where they can cancel (terms_norm below), or 0:
 * the error is relative to the larger of the two. */
static double error_scaled(const float *a, const float *b, int64_t n, double scale)
{
	double num = 0, den = 0;
	bool agree = true;
	for (int64_t i = 0; i < n; i++) {
		if (a[i] == b[i])
			continue;
		agree &= isfinite(a[i]) && isfinite(b[i]);
		num += ((double)b[i] - a[i]) * ((double)b[i] - a[i]);
		den += (double)a[i] * a[i];
	}
	if (!agree)
		return INFINITY;
	if (sqrt(den / (double)n) < 1e-6)
		return sqrt(num / (double)n) < 1e-3 ? 0 : INFINITY;
	return sqrt(num) / (fmax(sqrt(den), scale) + 1e-4 * sqrt((double)n));
}

static double error_of(const float *a, const float *b, int64_t n) { return error_scaled(a, b, n, 0); }

/* The worst error of one kind of result (an op's values, the gradients, ...), and where. */
typedef struct {
	const char *what;
	double worst, tol;
	const char *where;
} Tally;

enum { T_GRAD = MGL_OP_COUNT, T_LOSS, T_NORM, T_M, T_V, T_UPDATE, T_COUNT };

static void tally(Tally *t, double e, double tol, const char *where)
{
	if (!t->where || e / tol > t->worst / t->tol || isnan(e)) {
		t->worst = e;
		t->tol = tol;
		t->where = where;
	}
}

static int report(const Tally *t)
{
	int fails = 0;
	for (int k = 0; k < T_COUNT; k++) {
		if (!t[k].where)
			continue;
		bool bad = !(t[k].worst <= t[k].tol);
		fails += bad;
		printf("  %-15s %-4s worst %.2e of %.0e  (%s)\n", t[k].what, bad ? "FAIL" : "ok", t[k].worst, t[k].tol, t[k].where);
	}
	return fails;
}

static double loss_of(RtJob *j)
{
	float l = NAN;
	j->be->read(&j->ranks[0], j->plan->loss, &l);
	return l;
}

/* The L2 norm of the terms that parameter i's gradient sums, on job a (the cpu's, every
 * value its own bytes), where the plan sums them in one step (a bias's: bias_grad or
 * sum_to of its output's gradient, [rows, n] to [n]); 0 where it does not. Each term
 * carries bf16's rounding on the GPU, so the sum's error scales with the terms, not with
 * the sum: a sum that cancels (BERT's two-way head over a batch of 2: its bias gradient
 * (s, -s), where s is the difference of two probabilities near 0.5) is good only to the
 * terms' error. Replicated terms are the same on every rank; split ones (along the
 * features, or along the sequence under sp) a shard a rank. */
static double terms_norm(RtJob *a, int i)
{
	const MglPlan *p = a->plan;
	for (int s = 0; s < p->nsteps; s++) {
		const MglStep *st = &p->steps[s];
		if ((st->op != MGL_OP_BIAS_GRAD && st->op != MGL_OP_SUM_TO) || st->out[0] != p->params[i].grad)
			continue;
		int64_t n = mgl_numel(&p->values[st->in[0]]);
		float *x = malloc((size_t)n * sizeof *x);
		double ss = 0;
		for (int r = 0; r < a->nranks; r++) {
			a->be->read(&a->ranks[r], st->in[0], x);
			for (int64_t k = 0; k < n; k++)
				ss += (double)x[k] * x[k];
		}
		free(x);
		return sqrt(p->values[st->in[0]].layout.kind == MGL_L_R ? ss / a->nranks : ss);
	}
	return 0;
}

/* A's and B's full parameter tensors of one kind (RT_PARAM_*), compared; `minus`: each
 * relative to the parameters given (what the optimizer step changed). A gradient's error
 * is relative to its terms where they are known (terms_norm). */
static void compare_params(RtJob *a, RtJob *b, int which, const Given *minus, Tally *t, double tol)
{
	const MglPlan *p = a->plan;
	for (int i = 0; i < p->nparams; i++) {
		int64_t n = mgl_param_numel(&p->params[i]);
		float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
		rt_param_get(a, i, which, x);
		rt_param_get(b, i, which, y);
		for (int64_t k = 0; minus && k < n; k++)
			x[k] -= minus->w[i][k], y[k] -= minus->w[i][k];
		double scale = which == RT_PARAM_GRAD ? terms_norm(a, i) : 0, e = error_scaled(x, y, n, scale);
		if (!(e <= tol)) {   /* what the failure is relative to */
			double nx = 0, nd = 0;
			for (int64_t k = 0; k < n; k++)
				nx += (double)x[k] * x[k], nd += ((double)y[k] - x[k]) * ((double)y[k] - x[k]);
			printf("  %s: |cpu| %.3e, |gpu - cpu| %.3e, |terms| %.3e\n", p->params[i].name, sqrt(nx), sqrt(nd), scale);
		}
		tally(t, e, tol, p->params[i].name);
		free(x);
		free(y);
	}
}

/* The optimizer step on its own: the cpu job (a) takes the GPU job's (b) gradients, both
 * run the optimizer phase (the gradient norm, clipping, AdamW), and what it made must
 * agree to fp32 rounding (both keep fp32 masters and moments, and have the same gradients:
 * the GPU's bf16 ones where its plan has them). The update is the new parameters less the
 * given ones. */
static int optimizer_step(RtJob *a, RtJob *b, const Given *g, const RtRun *run, Tally *t, char *err, size_t errlen)
{
	const MglPlan *p = a->plan;
	for (int i = 0; i < p->nparams; i++) {
		float *x = malloc((size_t)mgl_param_numel(&p->params[i]) * sizeof *x);
		rt_param_get(b, i, RT_PARAM_GRAD, x);
		rt_param_set(a, i, RT_PARAM_GRAD, x);
		free(x);
	}
	unsigned opt = 1u << MGL_OPT;
	if (rt_job_run(a, opt, run, err, errlen) || rt_job_run(b, opt, run, err, errlen))
		return -1;
	/* fp32 both sides; the clipping factor comes from a norm summed in another order. The
	 * grad_norm step's own output too, on each rank (the rank's partial sum of squares, a
	 * replicated parameter's on tp rank 0 only, before the all-reduce), also where the
	 * update does not clip */
	for (int s = 0; s < p->nsteps; s++)
		for (int r = 0; r < a->nranks && p->steps[s].op == MGL_OP_GRAD_NORM; r++) {
			float na = 0, nb = 0;
			a->be->read(&a->ranks[r], p->steps[s].out[0], &na);
			b->be->read(&b->ranks[r], p->steps[s].out[0], &nb);
			tally(&t[T_NORM], error_of(&na, &nb, 1), 2e-4, "the gradient norm");
		}
	compare_params(a, b, RT_PARAM_M, NULL, &t[T_M], 2e-4);
	compare_params(a, b, RT_PARAM_V, NULL, &t[T_V], 2e-4);
	compare_params(a, b, RT_PARAM_VALUE, g, &t[T_UPDATE], 2e-4);
	return 0;
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

static const RtRun the_run = {.train = true, .key = 99, .last_micro = true, .first_micro = true, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95,
			      .eps = 1e-8, .weight_decay = 0.1, .clip = 1, .adam_t = 1};

static void tally_names(Tally *t)
{
	memset(t, 0, T_COUNT * sizeof *t);
	for (int op = 0; op < MGL_OP_COUNT; op++)
		t[op].what = mgl_ops[op].name;
	t[T_GRAD].what = "gradients", t[T_LOSS].what = "loss", t[T_M].what = "adam m", t[T_V].what = "adam v";
	t[T_UPDATE].what = "update", t[T_NORM].what = "gradient norm";
}

/* 1 and 2: one small case at one tp, with every value its own bytes (reuse false: every
 * value compared) or with the real memory plan (the loss and what persists). */
static int check(const Case *k, int tp, bool sp, bool reuse)
{
	MglCtx ca = {0}, cb = {0};
	MglPlan *pa = compile(&ca, k, tp, sp, MGL_F32, false), *pb = compile(&cb, k, tp, sp, MGL_BF16, reuse);
	if (!pa || !pb || pa->nvalues != pb->nvalues) {
		printf("FAIL %s tp %d: the plans do not compile alike\n", k->model, tp);
		return 1;
	}
	char err[512];
	RtJob *a = rt_job_open(pa, &rt_cpu_backend, err, sizeof err), *b = a ? rt_job_open(pb, &rt_cuda_backend, err, sizeof err) : NULL;
	if (!a || !b) {
		printf("FAIL %s tp %d: %s\n", k->model, tp, err);
		rt_job_close(a);
		return 1;
	}
	seed(k->model, k->set, tp, sp);
	Given g = draw(pa, k);
	give(a, &g);
	give(b, &g);
	unsigned phases = 1u << MGL_FWD | 1u << MGL_BWD;
	Tally t[T_COUNT];
	tally_names(t);
	int fails = 0;
	/* the GPU's run three times over the same inputs: the first of its kind runs as it is
	 * (and chooses the GEMMs' algorithms), the second is captured as a CUDA graph, the third
	 * replays it; the loss of the first and the third, and all the third made, compared.
	 * Parameters of +-0.2 make large logits: the small models' loss is good to bf16's 2e-3.
	 * At GPT-2's scale, 3e-4 at tp 1 and 6e-4 past it, where each row-parallel output is
	 * tp partial sums rounded to bf16 each, and their sum rounded again (as NCCL's bf16
	 * all-reduce does): over 124 tokens, measured up to 1.8e-4 at tp 1, and 2.8e-4 and 4.2e-4
	 * at tp 4 and 2 (gpt2 d 1536 to 2304, thirty-second sitting) */
	int rc = rt_job_run(a, phases, &the_run, err, sizeof err);
	float la = rc ? 0 : (float)loss_of(a), lb = 0, tol = !k->big ? 2e-3f : tp > 1 ? 6e-4f : 3e-4f;
	for (int rep = 0; rep < 3 && !rc; rep++) {
		if (rep)
			give(b, &g);
		rc = rt_job_run(b, phases, &the_run, err, sizeof err);
		lb = rc ? 0 : (float)loss_of(b);
		if (!rc && rep == 0)
			tally(&t[T_LOSS], error_of(&la, &lb, 1), tol, "the loss, eager");
	}
	if (rc) {
		printf("FAIL %s tp %d: %s\n", k->model, tp, err);
		fails = 1;
		goto out;
	}
	tally(&t[T_LOSS], error_of(&la, &lb, 1), tol, "the loss");
	compare_params(a, b, RT_PARAM_GRAD, NULL, &t[T_GRAD], 8e-2);
	if (optimizer_step(a, b, &g, &the_run, t, err, sizeof err)) {
		printf("FAIL %s tp %d: %s\n", k->model, tp, err);
		fails = 1;
		goto out;
	}
	for (int v = 0; v < pa->nvalues && !reuse; v++) {
		/* every value, on every rank, by the op that made it */
		const MglValue *x = &pa->values[v];
		int maker = -1;
		MglPhase phase = MGL_FWD;
		for (int s = 0; s < pa->nsteps && maker < 0; s++)
			for (int o = 0; o < pa->steps[s].nout; o++)
				if (pa->steps[s].out[o] == v)
					maker = pa->steps[s].op, phase = pa->steps[s].phase;
		if (maker < 0 || x->role != MGL_V_ACT || x->dtype == MGL_I32 || fused_away(pb, v))
			continue;   /* not made by a step, persistent (compared above), ids, or never written on the GPU */
		int64_t n = mgl_numel(x);
		float *ga = malloc((size_t)n * sizeof *ga), *gb = malloc((size_t)n * sizeof *gb);
		for (int r = 0; r < a->nranks; r++) {
			a->be->read(&a->ranks[r], v, ga);
			b->be->read(&b->ranks[r], v, gb);
			/* the optimizer's values (the gradient norm) come from the same gradients */
			tally(&t[maker], error_of(ga, gb, n), phase == MGL_OPT ? 2e-4 : phase == MGL_BWD ? 8e-2 : 5e-2, x->name);
		}
		free(ga);
		free(gb);
	}
	printf("%s %s (%s) tp %d%s, %s:\n", k->model, k->preset, k->set, tp, sp ? " sp" : "",
	       reuse ? "the real memory plan" : "every value its own bytes");
	fails += report(t);
out:
	given_free(&g);
	rt_job_close(a);
	rt_job_close(b);
	mgl_arena_free(&ca.arena);
	mgl_arena_free(&cb.arena);
	return fails;
}

/* 3: one case at real width: the cpu once (at the largest tp, for its threads), then the
 * GPU at tp 1, 2, 4, each job run twice (the second run is captured as a CUDA graph). */
static int real_width(const Case *k, int gpus)
{
	int fails = 0, cpu_tp = 4;
	MglCtx ca = {0};
	MglPlan *pa = compile(&ca, k, cpu_tp, false, MGL_F32, false);
	char err[512];
	RtJob *a = pa ? rt_job_open(pa, &rt_cpu_backend, err, sizeof err) : NULL;
	if (!a) {
		printf("FAIL %s %s: %s\n", k->model, k->preset, pa ? err : "does not compile");
		return 1;
	}
	seed(k->model, k->set, 0, false);
	Given g = draw(pa, k);
	give(a, &g);
	unsigned phases = 1u << MGL_FWD | 1u << MGL_BWD;
	if (rt_job_run(a, phases, &the_run, err, sizeof err)) {
		printf("FAIL %s: %s\n", k->model, err);
		fails = 1;
		goto out;
	}
	float la = (float)loss_of(a), tp1 = NAN;
	for (int tp = 1; tp <= 4 && tp <= gpus; tp *= 2) {
		MglCtx cb = {0};
		MglPlan *pb = compile(&cb, k, tp, false, MGL_BF16, true);
		RtJob *b = pb ? rt_job_open(pb, &rt_cuda_backend, err, sizeof err) : NULL;
		Tally t[T_COUNT];
		tally_names(t);
		float first = NAN;
		for (int run = 1; run <= 2 && b; run++) {
			give(b, &g);
			if (rt_job_run(b, phases, &the_run, err, sizeof err)) {
				rt_job_close(b);
				b = NULL;
				break;
			}
			float lb = (float)loss_of(b);
			tally(&t[T_LOSS], error_of(&la, &lb, 1), 3e-4, run == 1 ? "against the cpu, run 1" : "against the cpu, run 2");
			if (run == 1)
				first = lb;
			else
				tally(&t[T_LOSS], lb == first ? 0 : INFINITY, 3e-4, "run 2 against run 1: must be equal");
			if (tp == 1 && run == 1)
				tp1 = lb;
			tally(&t[T_LOSS], error_of(&tp1, &lb, 1), 3e-4, "against tp 1");
			compare_params(a, b, RT_PARAM_GRAD, NULL, &t[T_GRAD], 8e-2);
		}
		if (!b) {
			printf("FAIL %s %s tp %d: %s\n", k->model, k->preset, tp, pb ? err : "does not compile");
			fails++;
			mgl_arena_free(&cb.arena);
			continue;
		}
		printf("%s %s (%s), batch %lld x %lld, tp %d against the cpu, twice (losses %.6f, %.6f):\n", k->model,
		       k->preset, k->set, (long long)k->batch, (long long)k->seq, tp, la, first);
		fails += report(t);
		rt_job_close(b);
		mgl_arena_free(&cb.arena);
	}
out:
	given_free(&g);
	rt_job_close(a);
	mgl_arena_free(&ca.arena);
	return fails;
}

int main(int argc, char **argv)
{
	int gpus = rt_cuda_devices(), limit = argc > 1 ? atoi(argv[1]) : gpus;
	const char *only = argc > 2 ? argv[2] : NULL;   /* a preset, or "real" for the real widths: run just those checks */
	if (gpus < 1) {
		printf("test_gpu: no GPU\n");
		return 1;
	}
	if (getenv("MGL_SHARE_GPU")) {   /* jobs of up to MAX_GPUS ranks on the GPUs there are */
		printf("test_gpu: MGL_SHARE_GPU: jobs of up to %d ranks on %d GPU%s, collectives through the host\n", limit, gpus,
		       gpus == 1 ? "" : "s");
		gpus = limit;
	} else if (limit < gpus) {
		gpus = limit;
	}
	static const Case small[] = {
		{"models/gpt2.mgl", "tiny", "vocab=200,d=64,heads=4,layers=2", 4, 32, false, 0},
		{"models/gpt2.mgl", "tiny", "vocab=96,d=256,heads=4,layers=1", 4, 32, false, 0},   /* heads of 64 */
		{"models/bert.mgl", "tiny", "vocab=120,d=64,heads=4,layers=2", 4, 32, false, 0},
		{"models/llama.mgl", "tiny", "vocab=200,d=64,heads=4,layers=2,theta=100", 4, 32, false, 0},
		/* the flash-attention kernels of the other head sizes, over two tiles of 64 and a part */
		{"models/gpt2.mgl", "tiny", "vocab=96,d=384,heads=4,layers=1,seq=80", 2, 80, false, 0},   /* heads of 96 */
		{"models/llama.mgl", "tiny", "vocab=96,d=512,heads=4,layers=1,seq=160", 2, 160, false, 0},  /* 128 */
		{"models/bert.mgl", "tiny", "vocab=120,d=128,heads=4,layers=1,seq=96", 2, 96, false, 0},     /* 32, masked */
		/* rows enough for column sums in bands of several rows (4,096), and query tiles
		 * enough (4) for the attention backward to refill its double buffers, at heads of
		 * 64 and of 96 */
		{"models/gpt2.mgl", "tiny", "vocab=96,d=256,heads=4,layers=1,seq=256", 16, 256, false, 0},
		{"models/gpt2.mgl", "tiny", "vocab=96,d=384,heads=4,layers=1,seq=200", 2, 200, false, 0},
		/* BERT at widths of 256 and up with parameters at its own scale: at +-0.2 its logits
		 * saturate, and the loss and the two-way head's gradient are good only to about 5e-3
		 * and 0.3 in bf16 (measured, tenth sitting) */
		{"models/bert.mgl", "tiny", "vocab=120,d=256,heads=4,layers=1,seq=96", 2, 96, true, 0},     /* 64, masked */
		/* no causal mask, padding, at heads of 96 and 128; fewer keys than a tile (40) */
		{"models/bert.mgl", "tiny", "vocab=120,d=384,heads=4,layers=1,seq=96", 2, 96, true, 0},
		{"models/bert.mgl", "tiny", "vocab=120,d=512,heads=4,layers=1,seq=72", 2, 72, true, 0},
		{"models/bert.mgl", "tiny", "vocab=120,d=256,heads=4,layers=1,seq=40", 2, 40, true, 0},
		{"models/gpt2.mgl", "124m", "", 1, 64, true, 0},                                   /* GPT-2 small, one sequence of 64 */
		/* rows wider than 1,024: the layernorm backward a block of 6 warps at 1,536, and at
		 * 1,920 (20 heads of 96: the last of the forward's chunks of a row in registers half
		 * full), and past 2,048 (2,304: 24 heads of 96), where the forward reads a row a
		 * chunk at a time */
		{"models/gpt2.mgl", "tiny", "vocab=96,d=1536,heads=12,layers=1,seq=62", 2, 62, true, 0},
		{"models/gpt2.mgl", "tiny", "vocab=96,d=1920,heads=20,layers=1,seq=62", 2, 62, true, 0},
		{"models/gpt2.mgl", "tiny", "vocab=96,d=2304,heads=24,layers=1,seq=62", 2, 62, true, 0},
		/* 66 sequences: under sp with MGL_SP_GROUPED=1, the all-gathers and reduce-scatters
		 * along the sequence have 66 rows, past CUDA_GROUPED_MAX (64), and go through the
		 * staging buffer with the pack and unpack kernels; the cases above a row at a time */
		{"models/gpt2.mgl", "tiny", "vocab=96,d=64,heads=4,layers=1,seq=32", 66, 32, false, 0},
		/* no causal mask at heads of 96 over 5 K tiles: the forward's hand-backs of its K
		 * and V buffers in their steady state, with no tile skipped; the 128-key backward's
		 * three blocks */
		{"models/bert.mgl", "tiny", "vocab=120,d=384,heads=4,layers=1,seq=300", 2, 300, true, 0},
		/* BERT's short examples: 130 and 175 positions of 512 real, the rest padding (a
		 * batch of gpu-check section 9's, whose gradients went wrong at heads of 64 in the
		 * twenty-eighth sitting), at heads of 64 and 96 */
		{"models/bert.mgl", "tiny", "vocab=120,d=256,heads=4,layers=1,seq=512", 2, 512, true, 130},
		{"models/bert.mgl", "tiny", "vocab=120,d=384,heads=4,layers=1,seq=512", 2, 512, true, 130},
		/* fc's bias gradient over 800 columns (25 stripes of 32) and 2,000 rows (21 bands
		 * of 96, the last 80) */
		{"models/gpt2.mgl", "tiny", "vocab=96,d=200,heads=4,layers=1,seq=50", 40, 50, false, 0},
	};
	/* The mma.sync flash kernels, which compute capability 9.0 takes only when told to
	 * (docs/gpu.md): these cases again with the forward on mma.sync, then both, at tp 1 */
	static const Case flash_cases[] = {
		{"models/gpt2.mgl", "tiny", "vocab=96,d=256,heads=4,layers=1,seq=200", 2, 200, false, 0},   /* heads of 64 */
		{"models/gpt2.mgl", "tiny", "vocab=96,d=256,heads=4,layers=1,seq=300", 2, 300, false, 0},   /* 64, 5 tiles */
		{"models/llama.mgl", "tiny", "vocab=96,d=256,heads=4,layers=1,seq=300", 2, 300, false, 0},  /* 64, no biases */
		{"models/bert.mgl", "tiny", "vocab=120,d=256,heads=4,layers=1,seq=300", 2, 300, true, 0},   /* 64, masked, 5 tiles */
		{"models/gpt2.mgl", "tiny", "vocab=96,d=384,heads=4,layers=1,seq=300", 2, 300, false, 0},   /* 96, 5 tiles */
		{"models/llama.mgl", "tiny", "vocab=96,d=512,heads=4,layers=1,seq=330", 2, 330, false, 0},  /* 128, 6 tiles */
		{"models/gpt2.mgl", "tiny", "vocab=96,d=384,heads=4,layers=1,seq=80", 2, 80, false, 0},     /* 96 */
		{"models/gpt2.mgl", "tiny", "vocab=96,d=384,heads=4,layers=1,seq=200", 2, 200, false, 0},   /* 96, 4 tiles */
		{"models/gpt2.mgl", "tiny", "vocab=96,d=384,heads=4,layers=1,seq=130", 2, 130, false, 0},   /* 96, S % 4 = 2 */
		{"models/gpt2.mgl", "tiny", "vocab=96,d=384,heads=4,layers=1,seq=37", 2, 37, false, 0},     /* 96, one short tile */
		{"models/llama.mgl", "tiny", "vocab=96,d=384,heads=4,layers=1,seq=200", 2, 200, false, 0},  /* 96, no biases */
		{"models/llama.mgl", "tiny", "vocab=96,d=512,heads=4,layers=1,seq=160", 2, 160, false, 0},  /* 128 */
		{"models/bert.mgl", "tiny", "vocab=120,d=256,heads=4,layers=1,seq=96", 2, 96, true, 0},     /* 64, masked */
		{"models/bert.mgl", "tiny", "vocab=120,d=512,heads=4,layers=1,seq=72", 2, 72, true, 0},     /* 128, masked */
	};
	static const char *flash_env[] = {"MGL_NO_WG_FWD", "MGL_NO_WGMMA", "MGL_NO_FA_TMA"};
	static const Case real[] = {
		{"models/gpt2.mgl", "124m", "p_drop=0,layers=2", 1, 1024, true, 0},
		{"models/bert.mgl", "336m", "p_drop=0,layers=2", 2, 512, true, 130},
	};
	int fails = 0, runs = 0;
	for (size_t m = 0; m < sizeof small / sizeof small[0]; m++)
		for (int tp = 1; tp <= 4 && tp <= gpus && (!only || !strcmp(only, small[m].preset)); tp *= 2)
			for (int sp = 0; sp < (tp > 1 && small[m].seq % tp == 0 ? 2 : 1); sp++)   /* sp splits the sequence */
				for (int reuse = 0; reuse < 2; reuse++) {
					fails += check(&small[m], tp, sp, reuse) != 0;
					runs++;
				}
	for (size_t e = 0; e < sizeof flash_env / sizeof flash_env[0] && (!only || !strcmp(only, "tiny")); e++) {
		setenv(flash_env[e], "1", 1);
		printf("with %s=1:\n", flash_env[e]);
		for (size_t m = 0; m < sizeof flash_cases / sizeof flash_cases[0]; m++) {
			fails += check(&flash_cases[m], 1, false, true) != 0;
			runs++;
		}
		unsetenv(flash_env[e]);
	}
	/* GPT-2 124M's width, 16 tiles of queries a head, by cp.async and red.global */
	if (!only || !strcmp(only, "real")) {
		setenv("MGL_NO_FA_TMA", "1", 1);
		printf("with MGL_NO_FA_TMA=1:\n");
		fails += real_width(&real[0], gpus) != 0;
		runs++;
		unsetenv("MGL_NO_FA_TMA");
	}
	/* The small cases again under a switch each, on the real memory plan:
	 *  - MGL_NO_QKV_BIAS_SUMS: q, k and v's bias gradients a column sum of their own after
	 *    attention's backward, not summed by it (compiler/fuse.c; the mma.sync runs above
	 *    take such a sum too);
	 *  - MGL_NO_QKV_FWD: q, k and v's forward three GEMMs, not one batched (laid out for it
	 *    by compiler/hfuse.c, batched by runtime/cuda/ops.c), at tp 1, 2;
	 *  - MGL_NO_FA_BWD_128: the backward at heads of 96 over 64 keys a block
	 *    (flash_bwd_wg), not 128 (flash_bwd_wg2, the default, which the cases run above:
	 *    80 keys, its second warpgroup's in part past S; 200, two blocks and four query
	 *    tiles; 96 unmasked with padding; 62, the second warpgroup's keys all past S);
	 *  - MGL_NO_FA_FWD_PIPE: the forward at heads of 96 with each tile's S issued after the
	 *    tile before's P V is done, not behind it (the default, which the cases run above;
	 *    causal: 80 and 200 keys; unmasked with padding: 96 and 300);
	 *  - MGL_NO_GELU_EPILOGUE, MGL_NO_DGELU_EPILOGUE: the MLP's GELU and its derivative
	 *    passes of their own (k_gelu8, 16-byte loads, and the fused chains' gelu_b: GELU
	 *    as v / (1 + e^-2u), kernels/prelude.cuh), not cuBLASLt's epilogues, at tp 1 and 2;
	 *  - MGL_F32_GRADS: the GPU's plan with every gradient in f32, not the linears' weight
	 *    gradients in bf16 (compiler/adamw.c; the default, which the cases run above, where
	 *    the cpu's stay f32: its gradients within the tolerance, and the optimizer step on
	 *    the same, bf16, gradients both sides), at tp 1 and 2 */
	static const struct {
		const char *var;
		int cases[4], n, tps;   /* small[cases[i]], i < n, each at tp 1 .. tps */
	} switched[] = {{"MGL_NO_QKV_BIAS_SUMS", {0}, 1, 1}, {"MGL_NO_QKV_FWD", {0, 4}, 2, 2},
			{"MGL_NO_FA_BWD_128", {4, 8, 10, 15}, 4, 1}, {"MGL_NO_FA_FWD_PIPE", {4, 8, 10, 18}, 4, 1},
			{"MGL_NO_GELU_EPILOGUE", {0, 2, 13, 14}, 4, 2}, {"MGL_NO_DGELU_EPILOGUE", {0, 2, 14}, 3, 2},
			{"MGL_F32_GRADS", {0, 2, 4, 14}, 4, 2}};
	for (size_t v = 0; v < sizeof switched / sizeof switched[0] && (!only || !strcmp(only, "tiny")); v++) {
		setenv(switched[v].var, "1", 1);
		printf("with %s=1:\n", switched[v].var);
		for (int i = 0; i < switched[v].n; i++)
			for (int tp = 1; tp <= switched[v].tps && tp <= gpus; tp++, runs++)
				fails += check(&small[switched[v].cases[i]], tp, false, true) != 0;
		unsetenv(switched[v].var);
	}
	/* the layer norms' backward in one pass, a block a band of rows (runtime/cuda/ops.c,
	 * norm_bwd), at the edges of its bands: 99 rows (4 bands of 25, the last 24: groups of
	 * 4 rows cut short), 16,416 rows (513 bands: k_parts_finish's rounds of 8 x 32 bands
	 * and a part) and 33,280 rows (bands of 33 under the cap of 1,024, the last 15 blocks
	 * with none); and in two passes, on rows wider than its 4,096 (4,160). Up to 1,536
	 * columns these take k_layernorm_bwd_pf; 99 rows of 2,048 take k_layernorm_bwd_block
	 * at its band edges (as do 1,920 and 2,304 above) */
	static const Case norm_cases[] = {
		{"models/gpt2.mgl", "tiny", "vocab=96,d=1536,heads=12,layers=1,seq=33", 3, 33, true, 0},
		{"models/gpt2.mgl", "tiny", "vocab=96,d=64,heads=4,layers=1,seq=32", 513, 32, false, 0},
		{"models/gpt2.mgl", "tiny", "vocab=96,d=64,heads=4,layers=1,seq=32", 1040, 32, false, 0},
		{"models/gpt2.mgl", "tiny", "vocab=96,d=2048,heads=16,layers=1,seq=33", 3, 33, true, 0},
		{"models/gpt2.mgl", "tiny", "vocab=96,d=4160,heads=65,layers=1,seq=8", 2, 8, true, 0},
	};
	for (size_t m = 0; m < sizeof norm_cases / sizeof norm_cases[0] && (!only || !strcmp(only, "tiny")); m++) {
		fails += check(&norm_cases[m], 1, false, true) != 0;
		runs++;
	}
	setenv("MGL_SP_GROUPED", "1", 1);   /* the small cases under sp again, a row at a time */
	for (size_t m = 0; m < sizeof small / sizeof small[0] && gpus > 1; m++)
		for (int tp = 2; tp <= 4 && tp <= gpus && (!only || !strcmp(only, small[m].preset)); tp *= 2) {
			if (small[m].seq % tp)
				continue;
			if (m == 0 && tp == 2)
				printf("with MGL_SP_GROUPED=1:\n");
			for (int reuse = 0; reuse < 2; reuse++) {
				fails += check(&small[m], tp, true, reuse) != 0;
				runs++;
			}
		}
	unsetenv("MGL_SP_GROUPED");
	for (size_t m = 0; m < sizeof real / sizeof real[0]; m++)
		if (!only || !strcmp(only, "real")) {
			fails += real_width(&real[m], gpus) != 0;
			runs++;
		}
	printf("test_gpu: %d passed, %d failed\n", runs - fails, fails);
	return fails != 0;
}
