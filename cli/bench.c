/* cli/bench.c — `mgl bench`: the speed of whole training steps, and where a step goes.
 *
 * The runtime runs the steps (rt_bench: the training loop's own step on synthetic tokens)
 * and says what it timed; this file turns that into the figures people compare, counted as
 * the PyTorch baseline (shared/bench/torch_gpt.py) counts them, so the two can be put side
 * by side: FLOPs per token 6 N + 12 L d T with N = 12 L d^2 + V d, TFLOP/s per GPU, MFU
 * against the GEMM rate measured on the same device in the same run. With --profile, the
 * time of each plan step is summed by kind (the registry's, mgl_step_kinds). The output is
 * a table and a `RESULT {json}` line with the baseline's keys, or (--json) one JSON object
 * with everything.
 */
#include "cli.h"
#include "../runtime/backend.h"

#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	const RtBenchResult *r;
	const MglPlan *p;
	const char *backend, *unit;     /* "cuda" or "cpu"; what a rank runs on: "GPU" or "rank" */
	bool gpu;
	int64_t d, L, H, V, params, warmup, steps;
	int64_t accum;                  /* micro-batches a step (of plan->batch sequences each) */
	bool interleave;                /* run two at a time */
	double flops_token;             /* 6 N + 12 L d T */
	double ms, ms_min, ms_max, fwdbwd_ms, tok_s, tflops, tflops_fwdbwd, mfu;
	/* --profile: milliseconds a step, by kind and in all; outside: the host's part */
	double kind_ms[MGL_KIND_COUNT], prof_ms, prof_median_ms, outside_ms;
	/* on more than one rank: the collectives' milliseconds a step when each is waited for
	 * at once (their whole time; kind_ms has what the compute beside them left exposed),
	 * and the bytes a rank sends a step by mgl explain's count, and the milliseconds it
	 * predicts for them over the link (gbs, us: mgl_comm_seconds); alone_ms < 0 otherwise */
	double alone_ms, comm_bytes, predicted_ms, gbs, us;
	/* and by what the steps do: the op, or a fused group's ops joined by '+' ("matmul+bias_add"),
	 * slowest first */
	struct Doing { char what[96]; int count; double ms; } *doing;
	int ndoing;
} Bench;

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The median (the upper one of an even count, as torch_gpt.py takes it), least and most
 * of n > 0 values. */
static double median(const double *v, int64_t n, double *lo, double *hi)
{
	double *s = mgl_xmalloc((size_t)n * sizeof *s, "the sorted times");
	memcpy(s, v, (size_t)n * sizeof *s);
	qsort(s, (size_t)n, sizeof *s, by_value);
	double m = s[n / 2];
	*lo = s[0], *hi = s[n - 1];
	free(s);
	return m;
}

static int slowest_first(const void *a, const void *b)
{
	double x = ((const struct Doing *)a)->ms, y = ((const struct Doing *)b)->ms;
	return x > y ? -1 : x < y;
}

/* The profile by what the steps do: a fused group is one kernel, timed on its first step. */
static void by_what(Bench *b, const MglPlan *p, const RtBenchResult *r)
{
	b->doing = mgl_xcalloc((size_t)p->nsteps + 1, sizeof *b->doing, "the profile by op");
	for (int i = 0, end; i < p->nsteps; i = end + 1) {
		end = mgl_group_end(p, i);
		char what[96] = "";
		for (int k = i; k <= end; k++)
			snprintf(what + strlen(what), sizeof what - strlen(what), "%s%s", k > i ? "+" : "",
				 mgl_ops[p->steps[k].op].name);
		int j = 0;
		while (j < b->ndoing && strcmp(b->doing[j].what, what))
			j++;
		if (j == b->ndoing)
			snprintf(b->doing[b->ndoing++].what, sizeof what, "%s", what);
		b->doing[j].count++;
		for (int k = i; k <= end; k++)
			b->doing[j].ms += r->op_s[k] * 1e3 / (double)b->steps;
	}
	qsort(b->doing, (size_t)b->ndoing, sizeof *b->doing, slowest_first);
}

static void figures(Bench *b, const MglPlan *p, const RtBenchResult *r, bool profile)
{
	double N = 12.0 * (double)b->L * (double)b->d * (double)b->d + (double)b->V * (double)b->d;
	b->flops_token = 6 * N + 12.0 * (double)b->L * (double)b->d * (double)p->seq;
	double tokens = (double)(b->accum * p->batch * p->seq * p->dp), gpus = p->tp * p->dp, lo, hi;
	double s = median(r->step_s, b->steps, &b->ms_min, &b->ms_max), fb = median(r->fwdbwd_s, b->steps, &lo, &hi);
	b->ms = s * 1e3, b->ms_min *= 1e3, b->ms_max *= 1e3, b->fwdbwd_ms = fb * 1e3;
	b->tok_s = tokens / s;
	b->tflops = b->flops_token * tokens / s / gpus / 1e12;
	b->tflops_fwdbwd = b->flops_token * tokens / fb / gpus / 1e12;
	b->mfu = r->machine.gemm_flops > 0 ? b->tflops * 1e12 / r->machine.gemm_flops : 0;
	if (!profile)
		return;
	double sum = 0;
	for (int64_t i = 0; i < b->steps; i++)
		sum += r->profiled_s[i];
	b->prof_ms = sum * 1e3 / (double)b->steps;
	b->prof_median_ms = median(r->profiled_s, b->steps, &lo, &hi) * 1e3;
	b->outside_ms = b->prof_ms;
	b->alone_ms = -1;
	MglKind *kind = mgl_xmalloc((size_t)(p->nsteps + 1) * sizeof *kind, "the steps' kinds");
	mgl_step_kinds(p, kind);
	b->alone_ms = r->alone_s ? 0 : -1;
	for (int i = 0; i < p->nsteps; i++) {
		b->kind_ms[kind[i]] += r->op_s[i] * 1e3 / (double)b->steps;
		b->outside_ms -= r->op_s[i] * 1e3 / (double)b->steps;
		if (r->alone_s && kind[i] == MGL_KIND_COLLECTIVE)
			b->alone_ms += r->alone_s[i] * 1e3 / (double)b->steps;
	}
	free(kind);
	if (b->alone_ms >= 0) {   /* the bytes of the communication line */
		MglArena a = {0};
		MglExplain e;
		mgl_explain(&a, p, &e);
		b->comm_bytes = mgl_comm_bytes(&e, b->accum);
		b->predicted_ms = mgl_comm_seconds(&e, b->accum, b->gbs, b->us) * 1e3;
		mgl_arena_free(&a);
	}
	by_what(b, p, r);
}

/* The keys of torch_gpt.py's RESULT line in its order (tag "mgl"; four digits where it
 * rounds to one decimal, which a cpu's small figures would lose), then mgl's: the backend,
 * MFU and the GEMM rate it is against. */
static void result_keys(const Bench *b)
{
	const MglPlan *p = b->p;
	const RtMachine *m = &b->r->machine;
	printf("{\"tag\": \"mgl\", \"gpus\": %d, \"d\": %lld, \"L\": %lld, \"H\": %lld, \"B\": %lld, \"T\": %lld, "
	       "\"params_M\": %.4g, \"ms\": %.3f, \"fwdbwd_ms\": %.3f, \"tflops_fwdbwd\": %.4g, \"tok_s\": %.0f, "
	       "\"tflops_per_gpu\": %.4g, \"loss\": %.3f, \"mem_GB\": %.3g, \"backend\": \"%s\", \"mfu\": %.3f, "
	       "\"gemm_tflops\": %.4g", p->tp * p->dp, (long long)b->d, (long long)b->L, (long long)b->H,
	       (long long)(b->accum * p->batch), (long long)p->seq, (double)b->params / 1e6, b->ms, b->fwdbwd_ms, b->tflops_fwdbwd, b->tok_s, b->tflops,
	       b->r->loss, (double)m->allocated / 1e9, b->backend, b->mfu, m->gemm_flops / 1e12);
}

static void print_json(const Bench *b, bool profile)
{
	const MglPlan *p = b->p;
	const RtMachine *m = &b->r->machine;
	result_keys(b);
	printf(", \"model\": \"%s\", \"preset\": %s%s%s, \"tp\": %d, \"dp\": %d, \"sp\": %s, \"V\": %lld, \"params\": %lld, "
	       "\"flops_per_token\": %.0f, \"warmup\": %lld, \"steps\": %lld, \"ms_min\": %.3f, \"ms_max\": %.3f, "
	       "\"accum\": %lld, \"interleave\": %s, \"device\": ",
	       p->model, p->preset ? "\"" : "", p->preset ? p->preset : "null", p->preset ? "\"" : "", p->tp, p->dp,
	       p->sp ? "true" : "false", (long long)b->V, (long long)b->params, b->flops_token, (long long)b->warmup,
	       (long long)b->steps, b->ms_min, b->ms_max, (long long)b->accum, b->interleave ? "true" : "false");
	cli_json_str(m->device);
	printf(", \"gemm_what\": ");
	cli_json_str(m->gemm_what);
	printf(", \"mem_bytes\": %lld, \"device_used_bytes\": ", (long long)m->allocated);
	if (m->device_used >= 0)
		printf("%lld", (long long)m->device_used);
	else
		printf("null");
	if (profile) {
		printf(", \"profile\": {\"steps\": %lld, \"step_ms\": %.4f, \"step_ms_median\": %.4f, \"outside_ms\": %.4f, "
		       "\"kinds_ms\": {", (long long)b->steps, b->prof_ms, b->prof_median_ms, b->outside_ms);
		for (int k = 0; k < MGL_KIND_COUNT; k++)
			printf("%s\"%s\": %.4f", k ? ", " : "", mgl_kind_name[k], b->kind_ms[k]);
		printf("}, \"ops\": [");
		for (int i = 0; i < b->ndoing; i++) {
			printf("%s{\"what\": ", i ? ", " : "");
			cli_json_str(b->doing[i].what);
			printf(", \"steps\": %d, \"ms\": %.4f}", b->doing[i].count, b->doing[i].ms);
		}
		printf("]");
		if (b->alone_ms >= 0)
			printf(", \"collectives_alone_ms\": %.4f, \"comm_bytes\": %.0f, \"comm_predicted_ms\": %.4f, "
			       "\"link_gbs\": %g, \"link_us\": %g",
			       b->alone_ms, b->comm_bytes, b->predicted_ms, b->gbs, b->us);
		printf("}");
	}
	printf("}\n");
}

/* FLOP/s as "316.3 TFLOP/s", or on a cpu "4.825 GFLOP/s" */
static const char *rate(double flops, char *buf)
{
	bool tera = flops >= 1e12;
	snprintf(buf, 32, "%.4g %sFLOP/s", flops / (tera ? 1e12 : 1e9), tera ? "T" : "G");
	return buf;
}

/* Bytes as "9.87 GB", or below a GB "7.7 MB" (SI units, as PyTorch's mem_GB) */
static const char *size(int64_t bytes, char *buf)
{
	bool giga = bytes >= 1000000000;
	snprintf(buf, 32, "%.*f %sB", giga ? 2 : 1, (double)bytes / (giga ? 1e9 : 1e6), giga ? "G" : "M");
	return buf;
}

static void print_table(const Bench *b, bool profile)
{
	const MglPlan *p = b->p;
	const RtMachine *m = &b->r->machine;
	char b1[32], b2[32], b3[32];
	printf("  step        %.2f ms median (min %.2f, max %.2f); forward and backward %.2f ms\n", b->ms, b->ms_min, b->ms_max,
	       b->fwdbwd_ms);
	printf("  tokens/s    %s\n", mgl_commas((int64_t)(b->tok_s + 0.5), b1));
	printf("  FLOP/s      %s a %s, %s forward and backward (%s FLOPs a token: 6 N + 12 L d T,\n"
	       "              N = 12 L d^2 + V d, L %lld, d %lld, V %lld, T %lld)\n", rate(b->tflops * 1e12, b1), b->unit,
	       rate(b->tflops_fwdbwd * 1e12, b2), mgl_commas((int64_t)(b->flops_token + 0.5), b3), (long long)b->L,
	       (long long)b->d, (long long)b->V, (long long)p->seq);
	if (m->gemm_flops > 0)
		printf("  MFU         %.1f%% of %s: %s\n", 100 * b->mfu, rate(m->gemm_flops, b1), m->gemm_what);
	else
		printf("  MFU         - (the GEMM rate was %s)\n", m->gemm_what[0] ? m->gemm_what : "not measured");
	printf("  memory      %s a %s: what mgl allocated, for the plan (activations, weights, gradients,\n"
	       "              optimizer state) and the backend's workspaces", size(m->allocated, b1), b->unit);
	if (m->device_used >= 0)
		printf("; %s in use on the GPU (cudaMemGetInfo)", size(m->device_used, b2));
	printf("\n  loss        %.4f (the last step's)\n", b->r->loss);
	if (profile) {
		printf("\n  profile: %s more step%s, %s\n", mgl_commas(b->steps, b1), b->steps == 1 ? "" : "s",
		       b->gpu ? "eager (no CUDA graph), a CUDA event between each two steps of the plan"
			   : "the host clock around each step of the plan");
		printf("  %-12s %10s %7s\n", "kind", "ms a step", "%");
		for (int k = 0; k < MGL_KIND_COUNT; k++)
			printf("  %-12s %10.3f %7.1f\n", mgl_kind_name[k], b->kind_ms[k], 100 * b->kind_ms[k] / b->prof_ms);
		printf("  %-12s %10.3f %7.1f   (the host: batches, zeroing gradients, reading the loss)\n", "outside",
		       b->outside_ms, 100 * b->outside_ms / b->prof_ms);
		printf("  %-12s %10.3f %7.1f   (median %.3f)\n", "step (mean)", b->prof_ms, 100.0, b->prof_median_ms);
		if (b->alone_ms >= 0) {
			char b4[32];
			double exposed = b->kind_ms[MGL_KIND_COLLECTIVE], gbs = b->comm_bytes / (b->alone_ms * 1e-3) / 1e9;
			printf("  communication: %s a %s a step (mgl explain's count, ring algorithms), %.3f ms when each\n"
			       "  collective is waited for at once (%s more step%s: %.3g GB/s a %s); exposed in the step\n"
			       "  above %.3f ms", size((int64_t)b->comm_bytes, b4), b->unit, b->alone_ms, mgl_commas(b->steps, b1),
			       b->steps == 1 ? "" : "s", b->alone_ms > 0 ? gbs : 0.0, b->unit, exposed);
			if (exposed < b->alone_ms)
				printf(": %.0f%% of it ran beside the compute", 100 * (1 - exposed / b->alone_ms));
			printf("\n  mgl explain predicts %.3f ms for them (%g us a collective, %g GB/s: --link-us,\n"
			       "  --link-gbs)\n", b->predicted_ms, b->us, b->gbs);
		}
		printf("\n  the slowest ops (a fused group's ops joined by +), ms a step:\n");
		for (int i = 0; i < b->ndoing && i < 20; i++)
			printf("  %10.3f %5.1f%%  %s x %d\n", b->doing[i].ms, 100 * b->doing[i].ms / b->prof_ms, b->doing[i].what,
			       b->doing[i].count);
	}
	printf("RESULT ");
	result_keys(b);
	printf("}\n");
}

int cmd_bench(Args *a)
{
	const RtBackend *be = cli_backend(a);
	double gbs, us;
	if (!be || cli_interleave_check(a, "bench") || cli_link(a, "bench", &gbs, &us))
		return 2;
	MglCtx c = {0};
	jmp_buf jb;
	c.fail = &jb;
	volatile int status = 0;
	RtBenchResult r = {0};
	if (!setjmp(jb)) {
		MglTarget t = cli_target(a, be);
		MglGraph *g;
		MglPlan *p = cli_plan(&c, a->file, NULL, a->preset, a->set, &t, &g);
		bool gpu = strcmp(be->name, "cpu") != 0;
		Bench b = {.r = &r, .p = p, .backend = be->name, .gpu = gpu, .unit = gpu ? "GPU" : "rank",
			   .L = g->layers, .params = mgl_param_count(g), .warmup = a->warmup ? a->warmup : 3,
			   .steps = a->steps ? a->steps : 10, .gbs = gbs, .us = us};
		cli_sizes(g, &b.d, &b.H, &b.V);
		RtTrainOpts o = {0};   /* the default schedule over the steps it runs */
		cli_optimizer(a, &o);
		b.accum = o.accum, b.interleave = o.interleave;
		char micro[64] = "";
		if (o.accum > 1)
			snprintf(micro, sizeof micro, " (%lld micro-batches%s)", (long long)o.accum, o.interleave ? ", interleaved" : "");
		RtBenchOpts bo = {.warmup = b.warmup, .steps = b.steps, .profile = a->profile};
		char err[1024], b1[32], b2[32];
		fprintf(stderr, "mgl: benchmarking %s%s%s (%s parameters) on %s: tp %d, dp %d%s, batch %s x %s%s; %s warm-up "
			"step%s, %s timed%s\n", g->model, a->preset ? " " : "", a->preset ? a->preset : "",
			mgl_commas(b.params, b1), be->name, p->tp, p->dp, p->sp ? ", sequence parallel" : "",
			mgl_commas(p->batch, b2), mgl_commas(p->seq, (char[32]){0}), micro, mgl_commas(b.warmup, (char[32]){0}),
			b.warmup == 1 ? "" : "s", mgl_commas(b.steps, (char[32]){0}), a->profile ? ", as many profiled" : "");
		if (rt_bench(p, be, &o, &bo, &r, err, sizeof err)) {
			fprintf(stderr, "mgl: error: %s\n", err);
			status = 1;
		} else {
			figures(&b, p, &r, a->profile);
			if (a->json) {
				print_json(&b, a->profile);
			} else {
				printf("%s%s%s on %s (%s): tp %d, dp %d%s, batch %s x %s%s; %s warm-up, %s timed step%s\n\n",
				       g->model, a->preset ? " " : "", a->preset ? a->preset : "", be->name,
				       r.machine.device[0] ? r.machine.device : "?", p->tp, p->dp, p->sp ? ", sp" : "",
				       mgl_commas(p->batch, b1), mgl_commas(p->seq, b2), micro, mgl_commas(b.warmup, (char[32]){0}),
				       mgl_commas(b.steps, (char[32]){0}), b.steps == 1 ? "" : "s");
				print_table(&b, a->profile);
			}
			free(b.doing);
		}
	} else {
		status = c.status ? c.status : 1;
	}
	rt_bench_free(&r);
	mgl_arena_free(&c.arena);
	return status;
}
