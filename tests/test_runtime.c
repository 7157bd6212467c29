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
#include <time.h>
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
				if (!strcmp(x->name, "segments") || !strcmp(x->name, "sop_targets"))
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

/* Parameters of a useful size for finite differences: weights N(0, 0.3), gains near 1. */
static void random_params(RtJob *j)
{
	for (int i = 0; i < j->plan->nparams; i++) {
		const MglPlanParam *q = &j->plan->params[i];
		int64_t n = mgl_param_numel(q);
		float *w = malloc((size_t)n * sizeof *w);
		for (int64_t k = 0; k < n; k++)
			w[k] = (float)((q->init == MGL_INIT_ONES ? 1.0 : 0.0) + 0.3 * (uniform() - 0.5) * 2);
		rt_param_set(j, i, RT_PARAM_VALUE, w);
		free(w);
	}
}

/* The model's loss, which the plan names. */
static double loss_of(RtJob *j) { return j->be->peek(&j->ranks[0], j->plan->loss, 0); }

/* ... as an optimizer step's first micro-batch (it writes the gradients it writes first,
 * RtJob.grad_first) or a later one (it adds into them all), and its last or not (the last
 * reduces the gradients) */
static void run_micro(RtJob *j, unsigned phases, bool first, bool last)
{
	fill_inputs(j, false);
	RtRun r = {.train = true, .key = 42, .last_micro = last, .first_micro = first};
	char err[256];
	ck_assert_msg(!rt_job_run(j, phases, &r, err, sizeof err), "%s", err);
}

static void run(RtJob *j, unsigned phases) { run_micro(j, phases, true, true); }

/* Every parameter's gradient at a few elements against central differences, in double. */
static void check_gradients(const char *model, const char *set, int tp, bool sp)
{
	Compiled k;
	MglTarget t = {.tp = tp, .dp = 1, .sp = sp, .batch = 3, .seq = 8, .act_dtype = MGL_F32};
	MglPlan *p = compile(&k, model, "tiny", getenv("FD_SET") ? getenv("FD_SET") : set, t);
	char err[256];
	RtJob *j = rt_job_open(p, &rt_cpu64_backend, err, sizeof err);
	ck_assert_msg(j, "%s", err);
	fill_inputs(j, true);
	random_params(j);
	for (int r = 0; r < j->nranks; r++)
		j->be->zero_grads(&j->ranks[r]);
	run(j, 1u << MGL_FWD | 1u << MGL_BWD);
	/* The error of a probe: relative, but absolute (against 1e-3) for the small gradients
	 * whose relative error says nothing. h^2 truncation and float parameters: 1e-4 is tight
	 * for both (the worst seen is about 2.5e-5). */
	const double tolerance = 1e-4;
	double worst = 0;
	int bad = 0, probes = 0;
	const char *worst_name = "";
	for (int i = 0; i < p->nparams; i++) {
		const MglPlanParam *q = &p->params[i];
		int64_t n = mgl_param_numel(q);
		float *w = malloc((size_t)n * sizeof *w), *g = malloc((size_t)n * sizeof *g);
		rt_param_get(j, i, RT_PARAM_VALUE, w);
		rt_param_get(j, i, RT_PARAM_GRAD, g);
		for (int probe = 0; probe < 3; probe++, probes++) {
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
			double off = fabs(fd - an) / fmax(1e-3, fmax(fabs(fd), fabs(an)));
			if (off > worst) {
				worst = off;
				worst_name = q->name;
			}
			if (!(off <= tolerance)) {
				fprintf(stderr, "%s tp %d sp %d: d loss / d %s[%lld]: finite difference %.9g, backward %.9g\n",
					model, tp, sp, q->name, (long long)e, fd, an);
				bad++;
			}
		}
		free(w);
		free(g);
	}
	printf("%s tp %d sp %d: %d gradients against finite differences, the worst error %.2g (%s)\n", model, tp, sp,
	       probes, worst, worst_name);
	ck_assert_msg(!bad && worst <= tolerance, "%d of %d gradients disagree with finite differences (worst error %.3g)",
		      bad, probes, worst);
	rt_job_close(j);
	compiled_free(&k);
}

/* Small sizes for the finite differences; LLaMA's with a rotary base that turns its second
 * frequency by 0.14 radians a position, not 0.01 */
#define SMALL "vocab=40,d=16,heads=4,layers=2"
#define DROP SMALL ",p_drop=0.2"
#define LLAMA SMALL ",ffn=24,theta=50"

START_TEST(gradients_gpt2) { check_gradients("models/gpt2.mgl", DROP, 1, false); }
END_TEST
START_TEST(gradients_gpt2_tp2) { check_gradients("models/gpt2.mgl", DROP, 2, false); }
END_TEST
START_TEST(gradients_gpt2_tp2_sp) { check_gradients("models/gpt2.mgl", DROP, 2, true); }
END_TEST
START_TEST(gradients_bert) { check_gradients("models/bert.mgl", DROP, 1, false); }
END_TEST
START_TEST(gradients_bert_tp4_sp) { check_gradients("models/bert.mgl", DROP, 4, true); }
END_TEST
START_TEST(gradients_llama) { check_gradients("models/llama.mgl", LLAMA, 1, false); }
END_TEST
START_TEST(gradients_llama_tp2) { check_gradients("models/llama.mgl", LLAMA, 2, false); }
END_TEST
START_TEST(gradients_llama_tp4_sp) { check_gradients("models/llama.mgl", LLAMA, 4, true); }
END_TEST

/* The float backend (its GEMMs and attention on OpenBLAS where the library is here,
 * docs/DESIGN.md) against the double one (always the loops): the loss and every gradient
 * of a forward and backward at tp 2, the matmuls at the widths of the tiny preset (d 64,
 * the gradient of W^T and of dy^T x among them), causal attention (GPT-2, LLaMA) and
 * attention with padding masked (BERT). 1e-4 of the tensor's largest entry (of 1e-3 at
 * least): float's rounding through two layers, where a transposed operand or a wrong
 * leading dimension is off by the whole. */
static void float_agrees_with_double(const char *model)
{
	Compiled k;
	MglTarget t = {.tp = 2, .dp = 1, .batch = 4, .seq = 16, .act_dtype = MGL_F32};
	MglPlan *p = compile(&k, model, "tiny", NULL, t);
	char err[256], gemm[256];
	RtJob *j[2] = {rt_job_open(p, &rt_cpu_backend, err, sizeof err), rt_job_open(p, &rt_cpu64_backend, err, sizeof err)};
	ck_assert_msg(j[0] && j[1], "%s", err);
	fill_inputs(j[0], true);   /* run() writes them to both */
	for (int b = 0; b < 2; b++) {
		rng = 11;
		random_params(j[b]);
		for (int r = 0; r < j[b]->nranks; r++)
			j[b]->be->zero_grads(&j[b]->ranks[r]);
		run(j[b], 1u << MGL_FWD | 1u << MGL_BWD);
	}
	rt_cpu_gemm(gemm, sizeof gemm);
	printf("%s: float against double, the float GEMMs %s\n", model, gemm);
	ck_assert_msg(fabs(loss_of(j[0]) - loss_of(j[1])) <= 1e-5 * fabs(loss_of(j[1])), "loss %.9g, in double %.9g",
		      loss_of(j[0]), loss_of(j[1]));
	for (int i = 0; i < p->nparams; i++) {
		int64_t n = mgl_param_numel(&p->params[i]);
		float *g[2] = {malloc((size_t)n * sizeof(float)), malloc((size_t)n * sizeof(float))};
		rt_param_get(j[0], i, RT_PARAM_GRAD, g[0]);
		rt_param_get(j[1], i, RT_PARAM_GRAD, g[1]);
		double scale = 1e-3;   /* a gradient that is 0 in exact arithmetic (k's bias) is float's noise */
		for (int64_t e = 0; e < n; e++)
			scale = fmax(scale, fabs(g[1][e]));
		for (int64_t e = 0; e < n; e++)
			ck_assert_msg(fabs(g[0][e] - g[1][e]) <= 1e-4 * scale, "d loss / d %s[%lld]: %.9g, in double %.9g",
				      p->params[i].name, (long long)e, g[0][e], g[1][e]);
		free(g[0]);
		free(g[1]);
	}
	rt_job_close(j[0]);
	rt_job_close(j[1]);
	compiled_free(&k);
}

/* A run's first micro-batch writes each gradient that a step writes first (RtJob.grad_first)
 * and zero_grads clears only the others: with every gradient holding garbage before
 * zero_grads, the run's gradients must equal a run's from clean ones, bit for bit. A write
 * taken for first that is not (a tied embedding's second, a span's member) or a gradient
 * left unzeroed that no step writes whole shows as the garbage added in. A second
 * micro-batch of the same batch after it adds: twice the gradients. And most
 * gradients must be written first, or the analysis does nothing. */
static void first_writes_replace(const char *model, const char *set, int tp, bool sp)
{
	Compiled k;
	MglTarget t = {.tp = tp, .dp = 1, .sp = sp, .batch = 3, .seq = 8, .act_dtype = MGL_F32};
	MglPlan *p = compile(&k, model, "tiny", set, t);
	char err[256];
	RtJob *j = rt_job_open(p, &rt_cpu_backend, err, sizeof err);
	ck_assert_msg(j, "%s", err);
	fill_inputs(j, true);
	random_params(j);
	float *g[3][64] = {{0}};
	int zeroed = 0;
	ck_assert(p->nparams <= 64);
	for (int pass = 0; pass < 3; pass++) {
		for (int i = 0; pass >= 1 && i < p->nparams; i++) {   /* garbage in every gradient */
			int64_t n = mgl_param_numel(&p->params[i]);
			float *junk = malloc((size_t)n * sizeof *junk);
			for (int64_t e = 0; e < n; e++)
				junk[e] = 1e3f + (float)e;
			rt_param_set(j, i, RT_PARAM_GRAD, junk);
			free(junk);
		}
		for (int r = 0; r < j->nranks; r++)
			j->be->zero_grads(&j->ranks[r]);
		run_micro(j, 1u << MGL_FWD | 1u << MGL_BWD, true, pass < 2);
		if (pass == 2)
			run_micro(j, 1u << MGL_FWD | 1u << MGL_BWD, false, true);
		for (int i = 0; i < p->nparams; i++) {
			g[pass][i] = malloc((size_t)mgl_param_numel(&p->params[i]) * sizeof(float));
			rt_param_get(j, i, RT_PARAM_GRAD, g[pass][i]);
		}
	}
	for (int i = 0; i < p->nparams; i++) {
		int64_t n = mgl_param_numel(&p->params[i]);
		zeroed += j->grad_zero[i];
		ck_assert_msg(!memcmp(g[0][i], g[1][i], (size_t)n * sizeof(float)),
			      "%s tp %d: %s's gradient over garbage differs from over zeros", model, tp, p->params[i].name);
		float big = 0;   /* the adds round in another order (a tied weight's two, partial sums over tp) */
		for (int64_t e = 0; e < n; e++)
			big = fmaxf(big, fabsf(g[0][i][e]));
		for (int64_t e = 0; e < n; e++)
			ck_assert_msg(fabsf(g[2][i][e] - 2 * g[0][i][e]) <= 1e-5f * big + 1e-9f,
				      "%s tp %d: %s's gradient after two micro-batches: %g, not 2 x %g", model, tp, p->params[i].name,
				      g[2][i][e], g[0][i][e]);
		for (int q = 0; q < 3; q++)
			free(g[q][i]);
	}
	printf("%s tp %d sp %d: %d of %d gradients written first, %d zeroed\n", model, tp, sp, p->nparams - zeroed, p->nparams,
	       zeroed);
	ck_assert_msg(zeroed * 4 < p->nparams, "%s: %d of %d gradients still zeroed", model, zeroed, p->nparams);
	rt_job_close(j);
	compiled_free(&k);
}

START_TEST(first_writes_gpt2) { first_writes_replace("models/gpt2.mgl", DROP, 1, false); }
END_TEST
START_TEST(first_writes_gpt2_tp2_sp) { first_writes_replace("models/gpt2.mgl", DROP, 2, true); }
END_TEST
START_TEST(first_writes_bert_tp2) { first_writes_replace("models/bert.mgl", DROP, 2, false); }
END_TEST
START_TEST(first_writes_llama_tp2) { first_writes_replace("models/llama.mgl", LLAMA, 2, false); }
END_TEST

START_TEST(float_agrees_gpt2) { float_agrees_with_double("models/gpt2.mgl"); }
END_TEST
START_TEST(float_agrees_bert) { float_agrees_with_double("models/bert.mgl"); }
END_TEST
START_TEST(float_agrees_llama) { float_agrees_with_double("models/llama.mgl"); }
END_TEST

/* BERT's MLM loss ignores targets of -1 (`ignore: -1`): with every target -1 it counts none,
 * and is 0 with a zero gradient into the logits. (When the plan wrote "no target ignored"
 * as -1 too, a model's ignore: -1 ignored nothing.) */
START_TEST(ignored_targets_are_left_out)
{
	Compiled k;
	MglTarget t = {.tp = 1, .dp = 1, .batch = 2, .seq = 8, .act_dtype = MGL_F32};
	setenv("MGL_NO_REUSE", "1", 1);   /* every value keeps its bytes, to be read after the run */
	MglPlan *p = compile(&k, "models/bert.mgl", "tiny", "vocab=40,d=16,heads=4,layers=1", t);
	unsetenv("MGL_NO_REUSE");
	char err[256];
	RtJob *j = rt_job_open(p, &rt_cpu_backend, err, sizeof err);
	ck_assert_msg(j, "%s", err);
	fill_inputs(j, true);
	random_params(j);
	int targets = rt_value(p, "mlm_targets"), mlm = rt_value(p, "mlm_loss");
	ck_assert(targets >= 0 && mlm >= 0);
	int n = 0;   /* inputs[] is in the order of the input values */
	for (int v = 0; v < targets; v++)
		n += p->values[v].role == MGL_V_INPUT;
	for (int64_t i = 0; i < mgl_numel(&p->values[targets]); i++)
		inputs[n][i] = -1;
	run(j, 1u << MGL_FWD | 1u << MGL_BWD);
	ck_assert_double_eq(j->be->peek(&j->ranks[0], mlm, 0), 0);
	for (int s = 0; s < p->nsteps; s++)
		if (p->steps[s].op == MGL_OP_CE_BWD && p->steps[s].in[2] == targets)
			for (int64_t i = 0; i < mgl_numel(&p->values[p->steps[s].out[0]]); i++)
				ck_assert_double_eq(j->be->peek(&j->ranks[0], p->steps[s].out[0], i), 0);
	rt_job_close(j);
	compiled_free(&k);
}
END_TEST

/* ---------------------------------------------------------------- training */

static char tmpdir[64];

/* A shard of bytes in tmpdir: n tokens of a text with some structure (so it can be learned). */
static const char *shard(const char *name, int64_t n, int64_t period)
{
	static char path[8][128];
	static int k;
	char *p = path[k++ % 8];
	snprintf(p, 128, "%s/%s", tmpdir, name);
	uint16_t *t = malloc((size_t)n * sizeof *t);
	const char *text = "the quick brown fox jumps over the lazy dog; ";
	for (int64_t i = 0; i < n; i++)
		t[i] = (uint16_t)text[(i % period) % 45];
	char err[256];
	ck_assert_msg(!rt_shard_write(p, t, n, err, sizeof err), "%s", err);
	free(t);
	return p;
}

static RtTrainOpts opts(const char *data, int64_t steps)
{
	return (RtTrainOpts){.data = data, .steps = steps, .accum = 1, .lr = 3e-3, .min_lr = 3e-4, .warmup = 2,
			     .weight_decay = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .clip = 1.0, .seed = 5,
			     .eval_batches = 2, .model_name = "gpt2", .model_source = "", .tokenizer = "bytes"};
}

/* A field of each line of a training run's log ("loss", "sop_acc"), read back; NAN where a
 * line lacks it. */
static int read_field(const char *log, const char *key, double *v, int max)
{
	FILE *f = fopen(log, "r");
	ck_assert_ptr_nonnull(f);
	char line[1024], k[64];
	snprintf(k, sizeof k, "\"%s\": ", key);
	int n = 0;
	while (n < max && fgets(line, sizeof line, f)) {
		char *l = strstr(line, k);
		v[n++] = l ? strtod(l + strlen(k), NULL) : NAN;
	}
	fclose(f);
	return n;
}

static int read_losses(const char *log, double *loss, int max)
{
	int n = read_field(log, "loss", loss, max);
	for (int i = 0; i < n; i++)
		ck_assert(isfinite(loss[i]));
	return n;
}

/* A BERT stream in tmpdir (as mgl tokenize --bert makes one, bytes): documents of
 * sentences whose order shows in their words, so that the sentence order can be learned. */
static const char *bert_shard(const char *name, int docs)
{
	static char path[4][128];
	static int k;
	char *p = path[k++ % 4];
	snprintf(p, 128, "%s/%s", tmpdir, name);
	static const char *const first[] = {"First", "Then", "After that", "Later", "Finally"};
	static const char *const what[] = {"the cat sat on the mat", "a dog ran in the park", "the bird sang a song",
					   "it rained all day", "we read a long book", "the sun rose early"};
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	for (int d = 0; d < docs; d++) {
		for (int s = 0; s < 5; s++)
			fprintf(f, "%s, %s. ", first[s], what[(d * 7 + s * 3) % 6]);
		fprintf(f, "\n\n");
	}
	fclose(f);
	RtTokenizer *tok = rt_tok_bert_bytes();
	RtBertVocab v;
	ck_assert(!rt_tok_bert(tok, &v));
	int32_t *ids = NULL;
	size_t n = 0, cap = 0;
	ck_assert(!rt_bert_encode(tok, &v, text, len, &ids, &n, &cap));
	uint16_t *t = malloc(n * sizeof *t);
	for (size_t i = 0; i < n; i++)
		t[i] = (uint16_t)ids[i];
	char err[256];
	ck_assert_msg(!rt_shard_write(p, t, (int64_t)n, err, sizeof err), "%s", err);
	free(t);
	free(ids);
	free(text);
	rt_tok_free(tok);
	return p;
}

/* BERT's heads in a log: each finite, the accuracy a fraction of the batch from 0 to 1,
 * and the loss their sum (to the log's six decimals). n lines, into mlm, sop, acc. */
static void read_heads(const char *log, int n, int64_t batch, double *mlm, double *sop, double *acc)
{
	double loss[64];
	ck_assert_int_eq(read_losses(log, loss, n), n);
	ck_assert_int_eq(read_field(log, "mlm_loss", mlm, n), n);
	ck_assert_int_eq(read_field(log, "sop_loss", sop, n), n);
	ck_assert_int_eq(read_field(log, "sop_acc", acc, n), n);
	for (int i = 0; i < n; i++) {
		ck_assert_msg(isfinite(mlm[i]) && isfinite(sop[i]) && mlm[i] > 0 && sop[i] > 0, "step %d: mlm %g, sop %g", i + 1,
			      mlm[i], sop[i]);
		ck_assert_msg(acc[i] >= 0 && acc[i] <= 1 && fabs(acc[i] * (double)batch - round(acc[i] * (double)batch)) < 1e-4,
			      "step %d: accuracy %g of a batch of %lld", i + 1, acc[i], (long long)batch);
		ck_assert_msg(fabs(loss[i] - (mlm[i] + sop[i])) <= 2e-6, "step %d: loss %.6f, mlm %.6f + sop %.6f", i + 1,
			      loss[i], mlm[i], sop[i]);
	}
}

static void train_model(const char *model, const char *set, MglTarget t, RtTrainOpts *o, RtTrainResult *res)
{
	Compiled k;
	MglPlan *p = compile(&k, model, "tiny", set, t);
	char err[512];
	int rc = rt_train(p, &rt_cpu_backend, o, res, err, sizeof err);
	ck_assert_msg(!rc, "%s", err);
	compiled_free(&k);
}

static void train(const char *set, MglTarget t, RtTrainOpts *o, RtTrainResult *res)
{
	train_model("models/gpt2.mgl", set, t, o, res);
}

/* tp 1, 2 and 4, with and without --sp: the same losses (1e-5 relative) and, after 20
 * AdamW steps, the same parameters (1e-4 of the tensor's largest entry: Adam's update of a
 * gradient near zero amplifies the last bits of summation order; BERT's 2e-4, below). dp 2
 * learns too. BERT's heads (data: its stream, tokenizer "bert") are the same at every tp. */
static void same_training(const char *model, const char *name, const char *weight, const char *data, const char *tok)
{
	/* BERT's weights 2e-4: the worst seen is 1.04e-4 (tp 2 with sp), its losses the same to
	 * 1e-7; Adam's m / sqrt(v) of its sparser gradients (masked positions only) magnifies
	 * the summation order's last bits more */
	double wtol = strcmp(tok, "bert") ? 1e-4 : 2e-4;
	static const struct { int tp, dp; bool sp; } jobs[] = {{1, 1, false}, {2, 1, false}, {4, 1, false},
								{2, 1, true},  {4, 1, true},  {2, 2, true}};
	bool bert = !strcmp(tok, "bert");
	double base[20], heads0[3][20];
	float *w0 = NULL;
	int64_t n0 = 0;
	for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
		MglTarget t = {.tp = jobs[i].tp, .dp = jobs[i].dp, .sp = jobs[i].sp, .batch = 4, .seq = 32, .act_dtype = MGL_F32};
		char log[128], dir[128];
		snprintf(log, sizeof log, "%s/%s-tp%zu.jsonl", tmpdir, name, i);
		snprintf(dir, sizeof dir, "%s/%s-ckpt%zu", tmpdir, name, i);
		RtTrainOpts o = opts(data, 20);
		o.log_path = log;
		o.save_dir = dir;
		o.model_name = name;
		o.tokenizer = tok;
		RtTrainResult r;
		train_model(model, NULL, t, &o, &r);
		double loss[20], heads[3][20];
		ck_assert_int_eq(read_losses(log, loss, 20), 20);
		if (bert)
			read_heads(log, 20, t.batch * t.dp, heads[0], heads[1], heads[2]);
		char path[160];
		snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
		RtCkpt c;
		char err[256];
		ck_assert_msg(!rt_ckpt_read(path, &c, err, sizeof err), "%s", err);
		const RtTensor *w = rt_ckpt_find(&c, weight);
		ck_assert_ptr_nonnull(w);
		int64_t n = w->shape[0] * w->shape[1];
		if (i == 0) {
			memcpy(base, loss, sizeof base);
			memcpy(heads0, heads, sizeof heads);
			w0 = malloc((size_t)n * sizeof *w0);
			memcpy(w0, w->data, (size_t)n * sizeof *w0);
			n0 = n;
			ck_assert(loss[19] < loss[0] - 0.5);   /* it learns */
		} else if (jobs[i].dp == 1) {
			for (int k = 0; k < 20; k++)
				ck_assert_msg(fabs(loss[k] - base[k]) <= 1e-5 * fabs(base[k]),
					      "%s tp %d sp %d: step %d loss %.7f, tp 1 %.7f", name, jobs[i].tp, jobs[i].sp, k + 1,
					      loss[k], base[k]);
			for (int h = 0; bert && h < 3; h++)
				for (int k = 0; k < 20; k++)
					ck_assert_msg(fabs(heads[h][k] - heads0[h][k]) <= 1e-5 * fabs(heads0[h][k]) + 1e-6,
						      "%s tp %d sp %d: step %d %s %.7f, tp 1 %.7f", name, jobs[i].tp, jobs[i].sp,
						      k + 1, (const char *[]){"mlm", "sop", "sop accuracy"}[h], heads[h][k],
						      heads0[h][k]);
			ck_assert_int_eq(n, n0);
			double scale = 0;
			for (int64_t e = 0; e < n; e++)
				scale = fmax(scale, fabs(w0[e]));
			for (int64_t e = 0; e < n; e++)
				ck_assert_msg(fabs(w->data[e] - w0[e]) <= wtol * scale, "%s tp %d: %s[%lld] %.7g, tp 1 %.7g", name,
					      jobs[i].tp, weight, (long long)e, w->data[e], w0[e]);
		} else {
			ck_assert(loss[19] < loss[0] - 0.5);
		}
		rt_ckpt_free(&c);
	}
	free(w0);
}

START_TEST(same_training_at_every_tp)
{
	same_training("models/gpt2.mgl", "gpt2", "layers.1.mlp.fc.weight", shard("tp.bin", 20000, 4000), "bytes");
}
END_TEST
START_TEST(same_llama_training_at_every_tp)
{
	same_training("models/llama.mgl", "llama", "layers.1.mlp.gate.weight", shard("tp.bin", 20000, 4000), "bytes");
}
END_TEST
START_TEST(same_bert_training_at_every_tp)
{
	same_training("models/bert.mgl", "bert", "layers.1.mlp.fc.weight", bert_shard("bert-tp.bin", 60), "bert");
}
END_TEST

/* A model can memorize one batch. */
START_TEST(overfits_one_batch)
{
	const char *data = shard("one.bin", 33, 33);   /* exactly one window of 32 + 1 */
	MglTarget t = {.tp = 1, .dp = 1, .batch = 1, .seq = 32, .act_dtype = MGL_F32};
	RtTrainOpts o = opts(data, 150);
	o.lr = 1e-2;
	o.min_lr = 1e-2;
	o.weight_decay = 0;
	RtTrainResult r;
	train("p_drop=0", t, &o, &r);
	ck_assert_msg(r.last_loss < 0.05, "loss after 150 steps on one batch: %.4f", r.last_loss);
}
END_TEST

/* Stopping at step 6 and resuming gives steps 7-12 exactly as an uninterrupted run; the
 * resumed run is given no schedule, nor a tokenizer: it keeps the checkpoint's. shards: as
 * --save-shards (0: one file, this model being small), resumed at tp 4 or with shards at 1. */
static void resume_exact(const char *model, const char *name, const char *data, const char *tok, int shards)
{
	MglTarget t = {.tp = 2, .dp = 1, .batch = 4, .seq = 32, .act_dtype = MGL_F32};
	char log_a[128], log_b[128], dir[128];
	snprintf(log_a, sizeof log_a, "%s/%s-a.jsonl", tmpdir, name);
	snprintf(log_b, sizeof log_b, "%s/%s-b.jsonl", tmpdir, name);
	snprintf(dir, sizeof dir, "%s/%s-resume", tmpdir, name);
	RtTrainOpts o = opts(data, 12);
	o.log_path = log_a;
	o.model_name = name;
	o.tokenizer = tok;
	RtTrainResult r;
	train_model(model, NULL, t, &o, &r);
	o.stop_at = 6;   /* the 12-step schedule, stopped half way */
	o.save_dir = dir;
	o.save_shards = shards;
	o.log_path = log_b;
	train_model(model, NULL, t, &o, &r);
	ck_assert_int_eq(r.steps_done, 6);
	char path[192];
	snprintf(path, sizeof path, "%s/%s", dir, shards > 1 ? "model-00003-of-00003.safetensors" : RT_CKPT_FILE);
	ck_assert_msg(!access(path, F_OK), "%s is missing", path);
	snprintf(path, sizeof path, "%s/%s", dir, shards > 1 ? RT_CKPT_FILE : RT_CKPT_INDEX);
	ck_assert_msg(access(path, F_OK), "%s is left over", path);
	/* the schedule must be the 12-step one, and the checkpoint's: resume without one, at another tp */
	t.tp = shards > 1 ? 1 : 4;
	o.stop_at = 0;
	o.steps = o.warmup = 0;
	o.lr = o.min_lr = NAN;
	o.resume_dir = dir;
	o.save_dir = NULL;
	o.tokenizer = NULL;
	train_model(model, NULL, t, &o, &r);
	ck_assert_int_eq(r.steps_done, 6);
	ck_assert_int_eq(r.last_step, 12);
	for (const char *const *key = (const char *const[]){"loss", "mlm_loss", "sop_acc", NULL}; *key; key++) {
		double a[12], b[12];
		ck_assert_int_eq(read_field(log_a, *key, a, 12), 12);
		ck_assert_int_eq(read_field(log_b, *key, b, 12), 12);
		for (int k = 6; k < 12; k++)
			ck_assert_msg((isnan(a[k]) && isnan(b[k])) || fabs(a[k] - b[k]) <= 1e-5 * a[k],
				      "%s step %d: %s %.7f resumed, %.7f straight", name, k + 1, *key, b[k], a[k]);
	}
}

START_TEST(resume_is_exact) { resume_exact("models/gpt2.mgl", "gpt2", shard("resume.bin", 20000, 3000), "bytes", 0); }
END_TEST
START_TEST(sharded_resume_is_exact)
{
	resume_exact("models/gpt2.mgl", "gpt2_shards", shard("resume.bin", 20000, 3000), "bytes", 3);
}
END_TEST
START_TEST(bert_resume_is_exact) { resume_exact("models/bert.mgl", "bert", bert_shard("bert-resume.bin", 40), "bert", 0); }
END_TEST

/* A run of `steps` steps (stopped after stop_at, from resume if not NULL), its losses and
 * gradient norms read back from its log and its checkpoint (saved in tmpdir/name). */
static void logged_run(const char *model, const char *name, MglTarget t, int steps, int stop_at, const char *resume,
		       double *loss, double *norm, RtCkpt *ck)
{
	char log[128], dir[128], path[160];
	snprintf(log, sizeof log, "%s/%s.jsonl", tmpdir, name);
	snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
	RtTrainOpts o = opts(shard("zero.bin", 20000, 4000), steps);
	o.log_path = log;
	o.save_dir = dir;
	o.stop_at = stop_at;
	if (resume) {   /* the checkpoint's schedule and tokenizer */
		o.resume_dir = resume;
		o.steps = o.warmup = 0;
		o.lr = o.min_lr = NAN;
		o.tokenizer = NULL;
	}
	RtTrainResult r;
	train_model(model, NULL, t, &o, &r);
	int n = (int)r.steps_done;
	ck_assert_int_eq(read_losses(log, loss, n), n);
	ck_assert_int_eq(read_field(log, "grad_norm", norm, n), n);
	snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
	char err[256];
	ck_assert_msg(!rt_ckpt_read(path, ck, err, sizeof err), "%s", err);
}

/* The tensors named (all of them if names is NULL) of two checkpoints, weights or AdamW's
 * moments, within tol of the largest entry of each; tol 0: the same bits. */
static void same_tensors(const RtCkpt *a, const RtCkpt *b, const char *const *names, double tol, const char *what)
{
	ck_assert_int_eq(a->n, b->n);
	for (int i = 0; names ? names[i] != NULL : i < a->n; i++) {
		const RtTensor *x = names ? rt_ckpt_find(a, names[i]) : &a->t[i], *y = x ? rt_ckpt_find(b, x->name) : NULL;
		ck_assert_ptr_nonnull(y);
		int64_t n = 1;
		for (int k = 0; k < x->rank; k++)
			n *= x->shape[k];
		double scale = 0;
		for (int64_t e = 0; e < n; e++)
			scale = fmax(scale, fabs(x->data[e]));
		for (int64_t e = 0; e < n; e++)
			ck_assert_msg(fabs(x->data[e] - y->data[e]) <= tol * scale, "%s: %s[%lld] %.9g and %.9g", what, x->name,
				      (long long)e, x->data[e], y->data[e]);
	}
}

/* --zero 1 is plain data parallelism with the optimizer's state sharded: the same losses,
 * gradient norms (the global norm, from each rank's pieces) and, in the checkpoint (the
 * pieces gathered), the same weights and moments (1e-4 of the largest, as at every tp: the
 * norm's summation order differs in its last bits); dp 3 has pieces of unequal length. */
START_TEST(zero_equals_plain_dp)
{
	for (int dp = 2; dp <= 3; dp++) {
		double loss[2][20], norm[2][20];
		RtCkpt ck[2];
		for (int z = 0; z < 2; z++) {
			MglTarget t = {.tp = 1, .dp = dp, .zero = z, .batch = 2, .seq = 32, .act_dtype = MGL_F32};
			logged_run("models/gpt2.mgl", z ? "zero-1" : "zero-0", t, 20, 0, NULL, loss[z], norm[z], &ck[z]);
		}
		for (int k = 0; k < 20; k++)
			ck_assert_msg(fabs(loss[1][k] - loss[0][k]) <= 1e-6 * loss[0][k] &&
					      fabs(norm[1][k] - norm[0][k]) <= 1e-5 * norm[0][k],
				      "dp %d step %d: loss %.7f, grad norm %.6g with --zero 1; %.7f, %.6g without", dp, k + 1,
				      loss[1][k], norm[1][k], loss[0][k], norm[0][k]);
		ck_assert(loss[0][19] < loss[0][0] - 0.5);
		static const char *const names[] = {"wte", "layers.1.mlp.fc.weight", "optimizer.m.layers.1.mlp.fc.weight",
						    "optimizer.v.layers.1.mlp.fc.weight", "optimizer.m.wte", "optimizer.v.ln_f.bias", NULL};
		same_tensors(&ck[0], &ck[1], names, 1e-4, "--zero 1");
		rt_ckpt_free(&ck[0]);
		rt_ckpt_free(&ck[1]);
	}
}
END_TEST

/* A checkpoint of a --zero 1 run holds the whole moments: it resumes with or without
 * --zero 1 into the steps the run would have taken. */
START_TEST(zero_checkpoint_resumes)
{
	MglTarget t = {.tp = 1, .dp = 2, .zero = 1, .batch = 2, .seq = 32, .act_dtype = MGL_F32};
	double straight[12], half[12], norm[12], rest[6];
	RtCkpt ck;
	logged_run("models/gpt2.mgl", "zs", t, 12, 0, NULL, straight, norm, &ck);
	rt_ckpt_free(&ck);
	logged_run("models/gpt2.mgl", "zh", t, 12, 6, NULL, half, norm, &ck);
	rt_ckpt_free(&ck);
	char dir[128];
	snprintf(dir, sizeof dir, "%s/zh", tmpdir);
	for (int z = 0; z < 2; z++) {
		t.zero = z;
		logged_run("models/gpt2.mgl", z ? "zr1" : "zr0", t, 12, 0, dir, rest, norm, &ck);
		rt_ckpt_free(&ck);
		for (int k = 0; k < 6; k++)
			ck_assert_msg(fabs(rest[k] - straight[6 + k]) <= 1e-5 * straight[6 + k],
				      "resumed with --zero %d: step %d loss %.7f, straight %.7f", z, 7 + k, rest[k], straight[6 + k]);
	}
}
END_TEST

/* Recomputation runs the same ops on the same values: the same bits as none, losses,
 * gradient norms, weights and moments, with tp collectives (tp 2, sp) among the copies. */
START_TEST(recomputation_is_exact)
{
	static const char *const models[] = {"models/gpt2.mgl", "models/llama.mgl"};
	for (int m = 0; m < 2; m++)
		for (int tp = 1; tp <= 2; tp++) {
			double loss[3][10], norm[3][10];
			RtCkpt ck[3];
			for (int r = 0; r < 3; r++) {
				MglTarget t = {.tp = tp, .dp = 1, .sp = tp > 1, .recompute = (MglRecompute)r, .batch = 2, .seq = 32,
					       .act_dtype = MGL_F32};
				char name[32];
				snprintf(name, sizeof name, "rc-%d", r);
				logged_run(models[m], name, t, 10, 0, NULL, loss[r], norm[r], &ck[r]);
			}
			for (int r = 1; r < 3; r++) {
				for (int k = 0; k < 10; k++)
					ck_assert_msg(loss[r][k] == loss[0][k] && norm[r][k] == norm[0][k],
						      "%s tp %d --recompute %s: step %d loss %.7f, none %.7f", models[m], tp,
						      mgl_recompute_name[r], k + 1, loss[r][k], loss[0][k]);
				same_tensors(&ck[0], &ck[r], NULL, 0, mgl_recompute_name[r]);
			}
			for (int r = 0; r < 3; r++)
				rt_ckpt_free(&ck[r]);
		}
}
END_TEST

static const char *model_error(const char *model, const char *set, RtTrainOpts *o, MglTarget t)
{
	static char err[512];
	Compiled k;
	MglPlan *p = compile(&k, model, "tiny", set, t);
	RtTrainResult r;
	int rc = rt_train(p, &rt_cpu_backend, o, &r, err, sizeof err);
	compiled_free(&k);
	ck_assert_int_eq(rc, -1);
	return err;
}

static const char *train_error(const char *set, RtTrainOpts *o, MglTarget t)
{
	return model_error("models/gpt2.mgl", set, o, t);
}

START_TEST(bad_data)
{
	MglTarget t = {.tp = 1, .dp = 1, .batch = 2, .seq = 32, .act_dtype = MGL_F32};
	RtTrainOpts o = opts("/nonexistent/x.bin", 2);
	ck_assert_ptr_nonnull(strstr(train_error(NULL, &o, t), "/nonexistent/x.bin"));
	/* a token beyond the vocabulary of a 64-token model */
	o.data = shard("wide.bin", 1000, 1000);
	const char *e = train_error("vocab=64", &o, t);
	ck_assert_msg(strstr(e, "wide.bin: token 116 at position 0 is beyond the model's vocabulary (64)"), "%s", e);
	/* too short for one sequence */
	o.data = shard("short.bin", 20, 20);
	e = train_error(NULL, &o, t);
	ck_assert_msg(strstr(e, "short.bin: 20 tokens are fewer than one sequence of 33 needs"), "%s", e);
}
END_TEST

/* BERT's data refused, each with what is wrong: a vocabulary smaller than the data's, a
 * shard that is not a BERT stream, a tokenizer of the other family (either way), and a
 * resume with another tokenizer than the checkpoint's. */
START_TEST(bert_bad_data)
{
	MglTarget t = {.tp = 1, .dp = 1, .batch = 2, .seq = 32, .act_dtype = MGL_F32};
	RtTrainOpts o = opts(bert_shard("bert-bad.bin", 10), 2);
	o.model_name = "bert";
	o.tokenizer = "bert";
	const char *e = model_error("models/bert.mgl", "vocab=256", &o, t);
	ck_assert_msg(strstr(e, "the model's vocabulary (256) is smaller than the data's (261 tokens: its BERT byte "
				"vocabulary with BERT's five special tokens): give --set vocab=261 or more"), "%s", e);
	o.data = shard("bert-bytes.bin", 5000, 500);
	e = model_error("models/bert.mgl", NULL, &o, t);
	ck_assert_msg(strstr(e, "bert-bytes.bin: the last document is not closed") && strstr(e, "is this a BERT shard?"), "%s", e);
	o.tokenizer = "gpt2:/nowhere";
	e = model_error("models/bert.mgl", NULL, &o, t);
	ck_assert_msg(strstr(e, "this model is a BERT: it trains on BERT streams (mgl tokenize --bert, and --vocab FILE for "
				"WordPiece), not on GPT-2 tokens"), "%s", e);
	RtTrainOpts g = opts(shard("lm.bin", 5000, 500), 2);
	g.tokenizer = "wordpiece:/nowhere/vocab.txt";
	e = train_error(NULL, &g, t);
	ck_assert_msg(strstr(e, "this model is a language model: it trains on bytes or GPT-2 tokens (--gpt2 DIR), not on "
				"WordPiece tokens"), "%s", e);
	/* a checkpoint of byte BERT, resumed with a WordPiece vocabulary */
	char dir[128];
	snprintf(dir, sizeof dir, "%s/bert-tok", tmpdir);
	o.data = bert_shard("bert-tok.bin", 10);
	o.tokenizer = "bert";
	o.save_dir = dir;
	RtTrainResult r;
	train_model("models/bert.mgl", NULL, t, &o, &r);
	o.save_dir = NULL;
	o.resume_dir = dir;
	o.steps = 4;
	o.tokenizer = "wordpiece:tests/data/bert/vocab.txt";
	e = model_error("models/bert.mgl", NULL, &o, t);
	ck_assert_msg(strstr(e, "was trained on BERT byte tokens, not WordPiece ones"), "%s", e);
}
END_TEST

START_TEST(nan_loss_stops_and_keeps_checkpoint)
{
	MglTarget t = {.tp = 1, .dp = 1, .batch = 2, .seq = 32, .act_dtype = MGL_F32};
	char dir[128];
	snprintf(dir, sizeof dir, "%s/nan", tmpdir);
	RtTrainOpts o = opts(shard("nan.bin", 5000, 500), 40);
	o.save_dir = dir;
	o.save_every = 1;
	o.lr = 1e30;      /* a learning rate that must blow up */
	o.min_lr = 1e30;
	o.clip = 0;
	o.warmup = 0;
	const char *e = train_error(NULL, &o, t);
	ck_assert_msg(strstr(e, "the loss is") && strstr(e, "at step"), "%s", e);
	/* the checkpoint left behind is from a step whose loss was finite: its weights are */
	char path[160];
	snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
	RtCkpt c;
	char err[256];
	ck_assert_msg(!rt_ckpt_read(path, &c, err, sizeof err), "%s", err);
	for (int i = 0; i < c.n; i++) {
		int64_t n = 1;
		for (int k = 0; k < c.t[i].rank; k++)
			n *= c.t[i].shape[k];
		for (int64_t k = 0; k < n; k++)
			ck_assert(isfinite(c.t[i].data[k]));
	}
	rt_ckpt_free(&c);
}
END_TEST

static void *interrupt_soon(void *arg)
{
	(void)arg;
	nanosleep(&(struct timespec){0, 300000000}, NULL);
	kill(getpid(), SIGINT);
	return NULL;
}

START_TEST(sigint_saves_and_stops)
{
	MglTarget t = {.tp = 2, .dp = 1, .batch = 4, .seq = 32, .act_dtype = MGL_F32};
	char dir[128];
	snprintf(dir, sizeof dir, "%s/int", tmpdir);
	RtTrainOpts o = opts(shard("int.bin", 5000, 500), 100000);
	o.save_dir = dir;
	pthread_t th;
	pthread_create(&th, NULL, interrupt_soon, NULL);
	RtTrainResult r;
	train(NULL, t, &o, &r);
	pthread_join(th, NULL);
	ck_assert(r.interrupted);
	ck_assert_int_lt(r.steps_done, 100000);
	char path[160];
	snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
	RtCkpt c;
	char err[256];
	ck_assert_msg(!rt_ckpt_read(path, &c, err, sizeof err), "%s", err);
	ck_assert_int_eq(strtoll(rt_ckpt_meta(&c, "step"), NULL, 10), r.steps_done);
	rt_ckpt_free(&c);
}
END_TEST

START_TEST(checkpoint_of_another_model_is_refused)
{
	MglTarget t = {.tp = 1, .dp = 1, .batch = 2, .seq = 32, .act_dtype = MGL_F32};
	char dir[128];
	snprintf(dir, sizeof dir, "%s/other", tmpdir);
	RtTrainOpts o = opts(shard("other.bin", 5000, 500), 2);
	o.save_dir = dir;
	RtTrainResult r;
	train(NULL, t, &o, &r);
	o.save_dir = NULL;
	o.resume_dir = dir;
	o.steps = 4;
	const char *e = train_error("d=32", &o, t);
	ck_assert_msg(strstr(e, "does not match the model: tensor 'wte' is [256, 64] in the checkpoint and [256, 32] in the model"),
		      "%s", e);
}
END_TEST

/* Every key of a checkpoint's metadata with values of the wrong form: resuming refuses
 * each, naming the file and the key, where it used to turn them into numbers and train on
 * (a negative step, a fractional seed). The copy with nothing changed resumes. */
START_TEST(bad_metadata_is_refused)
{
	MglTarget t = {.tp = 1, .dp = 1, .batch = 2, .seq = 32, .act_dtype = MGL_F32};
	char dir[128], path[160], copy[160], err[512];
	snprintf(dir, sizeof dir, "%s/meta", tmpdir);
	snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
	snprintf(copy, sizeof copy, "%s/changed.safetensors", dir);
	RtTrainOpts o = opts(shard("meta.bin", 5000, 500), 2);
	o.save_dir = dir;
	o.tokenizer = "gpt2:/nowhere";   /* recorded, not read: training reads token ids */
	o.tokenizer_sha256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783 "
			     "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5";
	RtTrainResult r;
	train(NULL, t, &o, &r);   /* step 2, adam_t 2 */
	RtCkpt c;
	ck_assert_msg(!rt_ckpt_read(path, &c, err, sizeof err), "%s", err);
	static const struct {
		const char *key, *value, *says;   /* value NULL: the key left out; says NULL: it resumes */
	} cases[] = {
		{"format", "mgl-checkpoint 2", "not 'mgl-checkpoint 1'"},  {"format", "", "not 'mgl-checkpoint 1'"},
		{"model", "", "not a name"},                                {"model", "2gpt", "not a name"},
		{"model", "gpt-2", "not a name"},                           {"model", "gpt\x1b[2J", "is 'gpt\\x1b[2J'"},
		{"preset", "tiny medium", "not a preset's name"},           {"preset", "../tiny", "not a preset's name"},
		{"tokenizer", "sentencepiece", "not 'bytes', 'gpt2'"},      {"tokenizer", "gpt2:", "not 'bytes', 'gpt2'"},
		{"tokenizer", "", "not 'bytes', 'gpt2'"},                   {"tokenizer", "Bytes", "not 'bytes', 'gpt2'"},
		{"step", "-1", "not a whole number"},                       {"step", "1.5", "not a whole number"},
		{"step", "2e3", "not a whole number"},                      {"step", "", "not a whole number"},
		{"step", " 2", "not a whole number"},                       {"step", "+2", "not a whole number"},
		{"step", "0x10", "not a whole number"},                     {"step", "9223372036854775808", "to 9,223,372,036,854,775,807"},
		{"adam_t", "-2", "not a whole number"},                     {"adam_t", "2.0", "not a whole number"},
		{"adam_t", "two", "not a whole number"},                    {"adam_t", "3", "'adam_t' is 3, more than 'step' (2)"},
		{"data_rng", "-1", "not a whole number"},                   {"data_rng", "1e5", "not a whole number"},
		{"data_rng", "12 ", "not a whole number"},                  {"data_rng", "18446744073709551616", "to 18,446,744,073,709,551,615"},
		{"seed", "-5", "not a whole number"},                       {"seed", "0.5", "not a whole number"},
		{"seed", "NaN", "not a whole number"},                      {"seed", "18446744073709551616", "to 18,446,744,073,709,551,615"},
		{"step", NULL, "has no training state"},                    {"adam_t", NULL, "has no training state"},
		{"data_rng", NULL, "has no training state"},                {"seed", NULL, "has no training state"},
		/* the schedule, and the tokenizer's files, as mgl train records them */
		{"steps", "-3", "not a whole number"},                      {"warmup", "0.5", "not a whole number"},
		{"lr", "-1e-3", "not a number from 0 to 10"},               {"lr", "nan", "not a number from 0 to 10"},
		{"min_lr", "1e3", "not a number from 0 to 10"},             {"min_lr", "", "not a number from 0 to 10"},
		{"tokenizer_sha256", "00", "not a SHA-256 digest"},         {"tokenizer_sha256", "", "not a SHA-256 digest"},
		{"format", "mgl-checkpoint 1", NULL},                       /* the control: resumes */
	};
	Compiled k;
	MglPlan *p = compile(&k, "models/gpt2.mgl", "tiny", NULL, t);
	o.save_dir = NULL;
	o.resume_dir = copy;
	o.steps = 3;
	const char *keys[64], *vals[64];
	ck_assert_int_le(c.nmeta, 64);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int n = 0;
		bool found = false;
		for (int m = 0; m < c.nmeta; m++) {
			bool hit = !strcmp(c.keys[m], cases[i].key);
			found |= hit;
			if (hit && !cases[i].value)
				continue;
			keys[n] = c.keys[m];
			vals[n++] = hit ? cases[i].value : c.vals[m];
		}
		ck_assert_msg(found, "the checkpoint has no '%s'", cases[i].key);
		ck_assert_msg(!rt_ckpt_write(copy, c.t, c.n, keys, vals, n, err, sizeof err), "%s", err);
		int rc = rt_train(p, &rt_cpu_backend, &o, &r, err, sizeof err);
		if (!cases[i].says) {
			ck_assert_msg(!rc && r.steps_done == 1 && r.last_step == 3, "the unchanged copy: %s", rc ? err : "");
			continue;
		}
		const char *shown = cases[i].value ? cases[i].value : "(left out)";
		ck_assert_msg(rc == -1, "%s = '%s' was accepted", cases[i].key, shown);
		char key[32];
		snprintf(key, sizeof key, "'%s'", cases[i].key);
		ck_assert_msg(strstr(err, copy) && (strstr(err, key) || !cases[i].value) && strstr(err, cases[i].says),
			      "%s = '%s': %s", cases[i].key, shown, err);
	}
	compiled_free(&k);
	rt_ckpt_free(&c);
}
END_TEST

/* A plan with bf16 weight gradients (compiled for one micro-batch a step: compiler/adamw.c)
 * is refused with more, before any backend opens: a second micro-batch would add into the
 * gradients in bf16. */
START_TEST(bf16_gradients_take_one_micro_batch)
{
	MglTarget t = {.tp = 1, .dp = 1, .batch = 2, .seq = 32, .act_dtype = MGL_BF16, .bf16_grads = true};
	Compiled k;
	MglPlan *p = compile(&k, "models/gpt2.mgl", "tiny", NULL, t);
	RtTrainOpts o = opts(NULL, 3);
	o.accum = 2;
	RtBenchOpts b = {.warmup = 1, .steps = 1};
	RtBenchResult r;
	char err[512];
	ck_assert_int_eq(rt_bench(p, &rt_cpu_backend, &o, &b, &r, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "weight gradients in bf16") && strstr(err, "--accum 1, not 2") &&
			      strstr(err, "compile it with --accum 2"),
		      "%s", err);
	compiled_free(&k);
}
END_TEST

/* rt_bench runs the training loop's own step: on the same tokens its last timed step's loss
 * is rt_train's at that step. Profiled, rank 0's time in the plan's steps is most of the
 * profiled steps' (the host's part is small), every step that runs has its time (a fused
 * group's at its first), and the machine it reports holds the plan. */
START_TEST(bench_runs_the_training_step)
{
	const char *data = shard("bench.bin", 20000, 3000);
	MglTarget t = {.tp = 2, .dp = 1, .batch = 4, .seq = 32, .act_dtype = MGL_F32};
	Compiled k;
	MglPlan *p = compile(&k, "models/gpt2.mgl", "tiny", NULL, t);
	RtBenchOpts b = {.warmup = 2, .steps = 3, .profile = true};
	RtTrainOpts o = opts(data, 2 + 3 + 3);
	char log[128], err[512];
	snprintf(log, sizeof log, "%s/bench.jsonl", tmpdir);
	o.log_path = log;
	RtTrainResult tr;
	ck_assert_msg(!rt_train(p, &rt_cpu_backend, &o, &tr, err, sizeof err), "%s", err);
	double loss[8];
	ck_assert_int_eq(read_losses(log, loss, 8), 8);
	o.log_path = NULL;
	RtBenchResult r;
	ck_assert_msg(!rt_bench(p, &rt_cpu_backend, &o, &b, &r, err, sizeof err), "%s", err);
	ck_assert_msg(fabs(r.loss - loss[4]) < 1e-6, "bench: step 5's loss %.7f; train: %.7f", r.loss, loss[4]);
	double profiled = 0, ops = 0;
	for (int i = 0; i < 3; i++) {
		ck_assert(r.fwdbwd_s[i] > 0 && r.fwdbwd_s[i] < r.step_s[i]);
		profiled += r.profiled_s[i];
	}
	for (int s = 0; s < p->nsteps; s++) {
		int f = p->steps[s].fuse;
		ck_assert_msg(f < 0 || f == s ? r.op_s[s] > 0 : r.op_s[s] == 0, "step %d (%s, fused with %d): %g s", s,
			      mgl_ops[p->steps[s].op].name, f, r.op_s[s]);
		ops += r.op_s[s];
	}
	ck_assert_msg(ops < profiled && ops > 0.5 * profiled, "the steps' %.6f s of the profiled steps' %.6f", ops, profiled);
	int64_t plan_bytes = p->arena_bytes;
	for (int role = 0; role < MGL_V_ROLE_COUNT; role++)
		plan_bytes += p->persistent_bytes[role];
	ck_assert(r.machine.allocated >= plan_bytes && r.machine.device_used == -1 && r.machine.gemm_flops > 0);
	char gemm[256];   /* OpenBLAS on a large square, or the loops on this rank's half of wte */
	rt_cpu_gemm(gemm, sizeof gemm);
	const char *timed = strncmp(gemm, "OpenBLAS", 8) ? "[16, 64] x [64, 128] on one thread" : "[2048, 2048] x [2048, 2048], OpenBLAS";
	ck_assert_msg(strstr(r.machine.gemm_what, timed), "%s; want %s", r.machine.gemm_what, timed);
	rt_bench_free(&r);
	/* on synthetic tokens */
	o.data = NULL;
	b.steps = 1;
	ck_assert_int_eq(rt_bench(p, &rt_cpu_backend, &o, &b, &r, err, sizeof err), 0);
	rt_bench_free(&r);
	compiled_free(&k);
}
END_TEST

/* BERT's: on a BERT stream, the bench's step 5 is rt_train's; on its synthetic stream, a
 * finite loss near a fresh model's (ln 261 + ln 2 = 6.2556: the masked LM and the order). */
START_TEST(bench_runs_bert)
{
	MglTarget t = {.tp = 2, .dp = 1, .batch = 4, .seq = 32, .act_dtype = MGL_F32};
	Compiled k;
	MglPlan *p = compile(&k, "models/bert.mgl", "tiny", NULL, t);
	RtBenchOpts b = {.warmup = 2, .steps = 3};
	RtTrainOpts o = opts(bert_shard("bert-bench.bin", 20), 2 + 3);
	o.model_name = "bert";
	o.tokenizer = "bert";
	char log[128], err[512];
	snprintf(log, sizeof log, "%s/bert-bench.jsonl", tmpdir);
	o.log_path = log;
	RtTrainResult tr;
	ck_assert_msg(!rt_train(p, &rt_cpu_backend, &o, &tr, err, sizeof err), "%s", err);
	double loss[5];
	ck_assert_int_eq(read_losses(log, loss, 5), 5);
	o.log_path = NULL;
	RtBenchResult r;
	ck_assert_msg(!rt_bench(p, &rt_cpu_backend, &o, &b, &r, err, sizeof err), "%s", err);
	ck_assert_msg(fabs(r.loss - loss[4]) < 1e-6, "bench: step 5's loss %.7f; train: %.7f", r.loss, loss[4]);
	rt_bench_free(&r);
	o.data = NULL;
	o.lr = o.min_lr = 1e-9;   /* so the loss stays a fresh model's */
	ck_assert_msg(!rt_bench(p, &rt_cpu_backend, &o, &b, &r, err, sizeof err), "%s", err);
	ck_assert_msg(fabs(r.loss - 6.2556) < 0.3, "synthetic: loss %.4f", r.loss);
	rt_bench_free(&r);
	compiled_free(&k);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("runtime");
	TCase *grad = tcase_create("gradients");
	tcase_add_test(grad, gradients_gpt2);
	tcase_add_test(grad, first_writes_gpt2);
	tcase_add_test(grad, first_writes_gpt2_tp2_sp);
	tcase_add_test(grad, first_writes_bert_tp2);
	tcase_add_test(grad, first_writes_llama_tp2);
	tcase_add_test(grad, float_agrees_gpt2);
	tcase_add_test(grad, float_agrees_bert);
	tcase_add_test(grad, float_agrees_llama);
	tcase_add_test(grad, gradients_gpt2_tp2);
	tcase_add_test(grad, gradients_gpt2_tp2_sp);
	tcase_add_test(grad, gradients_bert);
	tcase_add_test(grad, gradients_bert_tp4_sp);
	tcase_add_test(grad, gradients_llama);
	tcase_add_test(grad, gradients_llama_tp2);
	tcase_add_test(grad, gradients_llama_tp4_sp);
	tcase_add_test(grad, ignored_targets_are_left_out);
	tcase_set_timeout(grad, 300);
	suite_add_tcase(s, grad);
	TCase *tr = tcase_create("training");
	tcase_add_test(tr, same_training_at_every_tp);
	tcase_add_test(tr, same_llama_training_at_every_tp);
	tcase_add_test(tr, same_bert_training_at_every_tp);
	tcase_add_test(tr, overfits_one_batch);
	tcase_add_test(tr, resume_is_exact);
	tcase_add_test(tr, sharded_resume_is_exact);
	tcase_add_test(tr, bert_resume_is_exact);
	tcase_add_test(tr, bad_data);
	tcase_add_test(tr, bert_bad_data);
	tcase_add_test(tr, nan_loss_stops_and_keeps_checkpoint);
	tcase_add_test(tr, sigint_saves_and_stops);
	tcase_add_test(tr, checkpoint_of_another_model_is_refused);
	tcase_add_test(tr, bad_metadata_is_refused);
	tcase_add_test(tr, bench_runs_the_training_step);
	tcase_add_test(tr, bf16_gradients_take_one_micro_batch);
	tcase_add_test(tr, bench_runs_bert);
	tcase_set_timeout(tr, 600);
	suite_add_tcase(s, tr);
	TCase *mem = tcase_create("memory");   /* ZeRO-1 and recomputation */
	tcase_add_test(mem, zero_equals_plain_dp);
	tcase_add_test(mem, zero_checkpoint_resumes);
	tcase_add_test(mem, recomputation_is_exact);
	tcase_set_timeout(mem, 600);
	suite_add_tcase(s, mem);
	snprintf(tmpdir, sizeof tmpdir, "/tmp/mgl-test-XXXXXX");
	if (!mkdtemp(tmpdir))
		return EXIT_FAILURE;
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
