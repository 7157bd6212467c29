/* cli/compile.c — the commands that run the compiler: check, compile, explain, dot.
 *
 * Each loads the model the same way (read, parse, elaborate with --preset and --set),
 * then goes as far down the pipeline as it needs; all of a command's allocations live
 * in one MglCtx arena, freed when it returns.
 */
#include "cli.h"

#include <errno.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>


/* Parameter names with the layer index replaced by '*', so a 96-layer model prints one
 * row per kind of parameter: layers.*.attention.q.weight. */
static void pattern_of(const char *name, char *out, size_t n)
{
	size_t o = 0;
	for (const char *p = name; *p && o + 2 < n;) {
		if ((p == name || p[-1] == '.') && *p >= '0' && *p <= '9') {
			const char *q = p;
			while (*q >= '0' && *q <= '9')
				q++;
			if (*q == '.' || !*q) {
				out[o++] = '*';
				p = q;
				continue;
			}
		}
		out[o++] = *p++;
	}
	out[o] = 0;
}

/* A count, or "-" where the model has none (no attention: no heads). */
static const char *count(int64_t v, char *buf)
{
	if (!v)
		return "-";
	snprintf(buf, 16, "%lld", (long long)v);
	return buf;
}

void cli_sizes(const MglGraph *g, int64_t *hidden, int64_t *heads, int64_t *vocab)
{
	*hidden = *heads = *vocab = 0;
	for (int i = 0; i < g->nnodes; i++) {
		const MglNode *nd = &g->nodes[i];
		if (nd->op == MGL_OP_ATTENTION && !*heads) {
			*heads = nd->attr.heads;
			*hidden = nd->shape.d[nd->shape.rank - 1].n;
		}
		if (nd->op == MGL_OP_EMBEDDING && !*vocab && g->nodes[nd->in[1]].op == MGL_OP_INPUT)
			*vocab = g->nodes[nd->in[0]].shape.d[0].n;
	}
}

static void print_summary(const MglGraph *g, const char *file)
{
	char buf[64], sh[160];
	printf("model %s (%s%s%s)\n\n", g->model, file, g->preset ? ", preset " : "", g->preset ? g->preset : "");
	printf("  parameters  %s\n", mgl_commas(mgl_param_count(g), buf));
	int64_t hidden, heads, vocab;
	cli_sizes(g, &hidden, &heads, &vocab);
	const char *rows[][2] = {{"layers", count(g->layers, buf)}, {"hidden", count(hidden, buf + 16)},
				 {"heads", count(heads, buf + 32)}, {"vocabulary", count(vocab, buf + 48)}};
	for (int i = 0; i < 4; i++)
		printf("  %-11s %s\n", rows[i][0], rows[i][1]);
	for (int i = 0; i < g->ninputs; i++) {
		const MglNode *in = &g->nodes[g->inputs[i]];
		printf("  %-11s %s %s%s", i ? "" : "inputs", in->name, in->dtype == MGL_I32 ? "i32" : "f32",
		       mgl_shape_str(g, &in->shape, sh, sizeof sh));
		const char *sep = "  (";
		for (int j = 0; j < in->shape.rank; j++) {
			int s = in->shape.d[j].sym;
			if (s >= 0 && g->syms[s].max) {
				printf("%s%s <= %lld", sep, g->syms[s].name, (long long)g->syms[s].max);
				sep = ", ";
			}
		}
		printf("%s\n", *sep == ',' ? ")" : "");
	}

	/* one row per pattern, shape and split, in order of first appearance */
	printf("\n  %-44s %-16s %-7s %6s %14s\n", "parameter", "shape", "split", "copies", "size");
	MglArena a = {0};
	MglMap groups = {0};
	int *first = mgl_alloc(&a, (size_t)(g->nparams + 1) * sizeof *first);
	int *copies = mgl_alloc(&a, (size_t)(g->nparams + 1) * sizeof *copies);
	const char **pats = mgl_alloc(&a, (size_t)(g->nparams + 1) * sizeof *pats);
	int ngroups = 0;
	for (int i = 0; i < g->nparams; i++) {
		char pat[256];
		pattern_of(g->params[i].name, pat, sizeof pat);
		const char *key = mgl_fmt(&a, "%s|%s|%d", pat, mgl_shape_str(g, &g->params[i].shape, sh, sizeof sh),
					  g->params[i].split);
		int k = mgl_map_get(&groups, key, (int)strlen(key));
		if (k < 0) {
			k = ngroups++;
			mgl_map_put(&a, &groups, key, (int)strlen(key), k);
			first[k] = i;
			pats[k] = mgl_strndup(&a, pat, strlen(pat));
		}
		copies[k]++;
	}
	for (int k = 0; k < ngroups; k++) {
		const MglParam *p = &g->params[first[k]];
		printf("  %-44s %-16s %-7s %6d %14s\n", pats[k], mgl_shape_str(g, &p->shape, sh, sizeof sh),
		       mgl_split_name[p->split], copies[k], mgl_commas(mgl_shape_numel(&p->shape) * copies[k], buf));
	}
	mgl_arena_free(&a);
}


/* ---------------------------------------------------------------- loading */

/* The model, elaborated; NULL after an error was printed (c->status says which kind). */
static MglGraph *load(MglCtx *c, Args *a, MglFile **file)
{
	MglOptions opt = {.preset = a->preset};
	if (a->set)
		opt.overrides = mgl_source_from_string(c, "--set", a->set, true);
	MglSource *src = mgl_read_file(c, a->file);
	MglFile *f = mgl_parse(c, src);
	if (file)
		*file = f;
	if (a->dump && !strcmp(a->dump, "ast"))
		return NULL;
	return mgl_elaborate(c, f, &opt);
}

/* The target of a compilation: --tp, --dp, --sp, --batch (default 8), --seq (default the
 * model's longest), --dtype (default bf16, what the GPU runs), --accum (default 1: the
 * linears' weight gradients in bf16, as cli_target has them for mgl train). */
static MglTarget target_of(const Args *a, const MglGraph *g)
{
	MglTarget t = {.tp = a->tp ? (int)a->tp : 1, .dp = a->dp ? (int)a->dp : 1, .sp = a->sp,
		       .zero = a->zero, .recompute = a->recompute, .batch = a->batch ? a->batch : 8, .seq = a->seq, .act_dtype = a->dtype,
		       .bf16_grads = a->accum <= 1};
	for (int i = 0; !t.seq && i < g->nsyms; i++)
		if (!strcmp(g->syms[i].name, "seq"))
			t.seq = g->syms[i].max;
	if (!t.seq)
		t.seq = 1024;
	return t;
}

typedef int Body(MglCtx *c, Args *a, MglGraph *g, MglFile *f);

/* Whether the file at path is a plan, which starts "mgl-plan ": explain and dot read one
 * as it is; the other commands refuse it (refuse_plan) rather than report a plan's text as
 * a model's syntax errors. */
static bool is_plan(const char *path)
{
	char head[9] = {0};
	FILE *f = fopen(path, "rb");
	if (f) {
		size_t n = fread(head, 1, sizeof head, f);
		(void)n;
		fclose(f);
	}
	return !memcmp(head, "mgl-plan ", 9);
}

static int refuse_plan(const char *path)
{
	fprintf(stderr, "mgl: error: %s is a plan (mgl compile writes them), not a model file\n"
			"  hint: give the model file; mgl explain and mgl dot read plans too\n", path);
	return 1;
}

/* Runs body on the loaded model inside one error scope; a plan is refused. */
static int with_model(Args *a, Body *body)
{
	if (is_plan(a->file))
		return refuse_plan(a->file);
	MglCtx c = {0};
	jmp_buf jb;
	c.fail = &jb;
	volatile int status = 0;
	if (!setjmp(jb)) {
		MglFile *f = NULL;
		MglGraph *g = load(&c, a, &f);
		status = body(&c, a, g, f);
	} else {
		status = c.status ? c.status : 1;
	}
	mgl_arena_free(&c.arena);
	return status;
}

typedef int PlanBody(const Args *a, MglArena *ar, const MglPlan *p);

/* Runs body on the plan at a->file as it is, or on the model there compiled (through
 * model_body). A plan is compiled already: the options that compile are refused. */
static int with_plan(const char *cmd, Args *a, Body *model_body, PlanBody *body)
{
	if (!is_plan(a->file))
		return with_model(a, model_body);
	const char *opt = a->preset ? "--preset" : a->set ? "--set" : a->tp ? "--tp" : a->dp ? "--dp" : a->sp ? "--sp"
			: a->zero_s ? "--zero" : a->recompute_s ? "--recompute"
			: a->batch ? "--batch" : a->seq ? "--seq" : a->dtype_given ? "--dtype" : a->accum ? "--accum" : NULL;
	if (opt) {
		fprintf(stderr, "mgl: error: %s compiles a model, but %s is a plan, compiled already\n"
				"  hint: give mgl %s the model file, or compile the plan again with mgl compile\n", opt,
			a->file, cmd);
		return 2;
	}
	MglArena ar = {0};
	char err[512];
	int status = 1;
	MglPlan *p = NULL;
	size_t len = 0;
	char *text = mgl_read_whole(a->file, MGL_PLAN_MAX_BYTES, "plans", &len, err, sizeof err);
	if (text && (p = mgl_plan_read(&ar, text, len, a->file, err, sizeof err)))
		status = body(a, &ar, p);
	else
		fprintf(stderr, "mgl: error: %s\n", err);
	free(text);
	mgl_arena_free(&ar);
	return status;
}

MglPlan *cli_plan(MglCtx *c, const char *path, const char *text, const char *preset, const char *set,
		  const MglTarget *t, MglGraph **g)
{
	MglOptions opt = {.preset = preset && *preset ? preset : NULL};
	if (set && *set)   /* from the command line, or the metadata of a checkpoint (a file's error) */
		opt.overrides = text ? mgl_source_from_string(c, mgl_fmt(&c->arena, "%s (its set)", path), set, false)
				     : mgl_source_from_string(c, "--set", set, true);
	if (!text && is_plan(path)) {
		c->status = refuse_plan(path);
		mgl_fail(c);
	}
	MglSource *src = text ? mgl_source_from_string(c, path, text, false) : mgl_read_file(c, path);
	*g = mgl_elaborate(c, mgl_parse(c, src), &opt);
	MglTarget tt = *t;
	if (!tt.seq)
		tt.seq = target_of(&(Args){0}, *g).seq;
	MglPlan *p = mgl_build_plan(c, *g, &tt);
	p->source = path;
	return p;
}

/* ---------------------------------------------------------------- mgl check */

static int check_body(MglCtx *c, Args *a, MglGraph *g, MglFile *f)
{
	(void)c;
	if (!g)
		mgl_dump_ast(stdout, f);
	else if (a->dump)
		mgl_dump_graph(stdout, g);
	else
		print_summary(g, a->file);
	return 0;
}

int cmd_check(Args *a) { return with_model(a, check_body); }

/* ---------------------------------------------------------------- mgl compile */

/* The pipeline's hook for --dump=PASS: stop after the pass named arg. */
static bool stop_after(const char *pass, const MglPlan *p, void *arg)
{
	(void)p;
	return arg && !strcmp(pass, arg);
}

/* The plan, finished, or as it stands after the pass named dump (a compiler pass's name). */
static MglPlan *build(MglCtx *c, const Args *a, const MglGraph *g, const char *dump)
{
	MglTarget t = target_of(a, g);
	MglPlan *p = mgl_run_passes(c, g, &t, stop_after, (void *)dump);
	p->source = a->file;
	return p;
}

/* Writes the plan to path through a temporary file and a rename: never half a plan. */
static int write_plan(const MglPlan *p, const char *path)
{
	FILE *f = cli_out_open(path);
	if (!f)
		return 1;
	mgl_plan_write(f, p);
	return cli_out_close(f, path);
}

static int compile_body(MglCtx *c, Args *a, MglGraph *g, MglFile *f)
{
	if (!g || !strcmp(a->dump ? a->dump : "", "graph"))
		return check_body(c, a, g, f);
	MglPlan *p = build(c, a, g, a->dump);
	if (a->dump) {
		mgl_plan_write(stdout, p);
		return 0;
	}
	return write_plan(p, a->out);
}

int cmd_compile(Args *a)
{
	if (a->dump && strcmp(a->dump, "ast") && strcmp(a->dump, "graph")) {
		bool known = false;
		char list[200] = "ast, graph";
		for (int i = 0; i < MGL_NPASSES; i++) {
			known |= !strcmp(a->dump, mgl_passes[i]);
			snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i < MGL_NPASSES - 1 ? ", " : " or ",
				 mgl_passes[i]);
		}
		char msg[300];
		snprintf(msg, sizeof msg, "--dump takes %s, not '%%s'", list);
		if (!known)
			return usage_error("compile", msg, a->dump);
	}
	return with_model(a, compile_body);
}

/* ---------------------------------------------------------------- mgl explain */

static const char *const kind_json[MGL_NKINDS] = {"all_reduce", "all_gather", "reduce_scatter"};

static void json_kinds(const int *k)
{
	printf("{");
	for (int i = 0; i < MGL_NKINDS; i++)
		printf("%s\"%s\": %d", i ? ", " : "", kind_json[i], k[i]);
	printf("}");
}

static bool uniform(const MglExplain *e, int layers)
{
	for (int l = 1; l < layers; l++)
		if (memcmp(e->per_layer[l], e->per_layer[0], sizeof e->per_layer[0]))
			return false;
	return true;
}

static void human(int64_t b, char *buf)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double x = (double)b;
	int i = 0;
	while (x >= 1024 && i < 4)
		x /= 1024, i++;
	snprintf(buf, 32, i ? "%.2f %s" : "%.0f %s", x, u[i]);
}

/* What p costs; base (or NULL) is the same plan without --zero and --recompute, whose
 * memory is shown next to p's. */
static int explain_print(const Args *a, MglArena *ar, const MglPlan *p, const MglPlan *base)
{
	MglExplain e, eb;
	double gbs, us;
	if (cli_link(a, "explain", &gbs, &us))
		return 2;
	mgl_explain(ar, p, &e);
	if (base)
		mgl_explain(ar, base, &eb);
	int L = p->nlayers;
	static const int none[2][MGL_NKINDS];
	const int(*layer0)[MGL_NKINDS] = L ? (const int(*)[MGL_NKINDS])e.per_layer[0] : none;
	if (a->json) {
		printf("{\"model\": \"%s\", \"preset\": %s%s%s, \"tp\": %d, \"dp\": %d, \"sp\": %s, \"batch\": %lld, "
		       "\"seq\": %lld, \"dtype\": \"%s\", \"layers\": %d,\n", p->model, p->preset ? "\"" : "",
		       p->preset ? p->preset : "null", p->preset ? "\"" : "", p->tp, p->dp, p->sp ? "true" : "false",
		       (long long)p->batch, (long long)p->seq, mgl_dtype_name[p->act_dtype], L);
		printf(" \"params_total\": %lld, \"params_per_rank\": %lld, \"vocab\": %lld, \"vocab_padded\": %lld,\n",
		       (long long)e.params_total, (long long)e.params_per_rank, (long long)p->vocab, (long long)p->vocab_padded);
		printf(" \"flops_per_step\": {\"forward\": %.0f, \"backward\": %.0f, \"total\": %.0f},\n", e.flops_fwd,
		       e.flops_bwd, e.flops_fwd + e.flops_bwd);
		printf(" \"collectives_per_layer\": {\"forward\": ");
		json_kinds(layer0[0]);
		printf(", \"backward\": ");
		json_kinds(layer0[1]);
		printf("}, \"layers_uniform\": %s,\n \"collectives_total\": {", uniform(&e, L) ? "true" : "false");
		for (int ph = 0; ph < 3; ph++) {
			printf("%s\"%s\": ", ph ? ", " : "", (const char *[]){"forward", "backward", "optimizer"}[ph]);
			json_kinds(e.total[ph]);
		}
		printf("}, \"dp_gradient_buckets\": %d,\n", e.dp_buckets);
		printf(" \"bytes_communicated_per_step\": %lld, \"collectives_per_step\": %d, \"comm_seconds\": %.9g, "
		       "\"link_gbs\": %g, \"link_us\": %g, \"activations_per_layer_bytes\": %lld,\n",
		       (long long)e.comm_bytes, e.ncoll, mgl_comm_seconds(&e, 1, gbs, us), gbs, us,
		       (long long)(L ? e.act_per_layer[0] : 0));
		printf(" \"memory\": {\"weights\": %lld, \"gradients\": %lld, \"optimizer\": %lld, \"activations\": %lld},\n",
		       (long long)e.mem_weights, (long long)e.mem_grads, (long long)e.mem_optimizer, (long long)e.mem_activations);
		printf(" \"zero\": %d, \"recompute\": \"%s\",", p->zero, mgl_recompute_name[p->recompute]);
		if (base)
			printf(" \"without\": {\"optimizer\": %lld, \"activations\": %lld, \"activations_per_layer_bytes\": %lld, "
			       "\"peak_memory_bytes\": %lld},", (long long)eb.mem_optimizer, (long long)eb.mem_activations,
			       (long long)(L ? eb.act_per_layer[0] : 0), (long long)eb.mem_peak);
		printf("\n \"peak_memory_bytes\": %lld}\n", (long long)e.mem_peak);
		return 0;
	}
	char b1[32], b2[32], b3[32], b4[32], b5[32];
	printf("%s%s%s: tp %d, dp %d%s%s%s%s, batch %lld x seq %lld, %s activations (per rank)\n\n", p->model,
	       p->preset ? " " : "", p->preset ? p->preset : "", p->tp, p->dp, p->sp ? ", sequence parallel" : "",
	       p->zero ? ", ZeRO-1" : "", p->recompute ? ", recompute " : "", p->recompute ? mgl_recompute_name[p->recompute] : "",
	       (long long)p->batch, (long long)p->seq, mgl_dtype_name[p->act_dtype]);
	printf("  parameters      %s on this rank (model: %s", mgl_commas(e.params_per_rank, b1),
	       mgl_commas(e.params_total, b2));
	if (p->vocab_padded != p->vocab)
		printf("; vocabulary padded %s -> %s, %s rows added", mgl_commas(p->vocab, b1), mgl_commas(p->vocab_padded, b2),
		       mgl_commas(p->vocab_padded - p->vocab, b3));
	printf(")\n  flops           %s forward + %s backward per micro-batch\n", mgl_si(e.flops_fwd, "FLOP", b1),
	       mgl_si(e.flops_bwd, "FLOP", b2));
	printf("\n  collectives     %-16s %-16s %s\n", "all-reduce", "all-gather", "reduce-scatter");
	printf("  a layer, fwd    %-16d %-16d %d\n", layer0[0][0], layer0[0][1], layer0[0][2]);
	printf("  a layer, bwd    %-16d %-16d %d%s\n", layer0[1][0], layer0[1][1], layer0[1][2],
	       uniform(&e, L) ? "" : "   (layers differ)");
	for (int ph = 0; ph < 3; ph++)
		printf("  model, %-8s %-16d %-16d %d\n", mgl_phase_name[ph], e.total[ph][0], e.total[ph][1], e.total[ph][2]);
	if (p->dp > 1)
		printf("  dp gradients    %d bucketed %s%s, overlapped with the backward pass%s\n", e.dp_buckets,
		       p->zero ? "reduce-scatter" : "all-reduce", e.dp_buckets == 1 ? "" : "s",
		       p->zero ? "; the weights all-gathered after AdamW" : "");
	human(e.comm_bytes, b1);
	printf("  sent            %s per micro-batch", b1);
	if (e.ncoll)
		printf(": %.3f ms at %g GB/s and %g us a collective (%d of them; --link-gbs, --link-us)",
		       mgl_comm_seconds(&e, 1, gbs, us) * 1e3, gbs, us, e.ncoll);
	printf("\n\n");
	human(e.mem_weights, b1), human(e.mem_grads, b2), human(e.mem_optimizer, b3), human(e.mem_activations, b4);
	human(e.mem_peak, b5);
	printf("  memory          weights %s, gradients %s, optimizer %s, activations %s\n", b1, b2, b3, b4);
	human(L ? e.act_per_layer[0] : 0, b1);
	printf("                  peak %s; a layer keeps %s for the backward pass\n", b5, b1);
	if (base && p->zero) {
		human(e.mem_optimizer, b1), human(eb.mem_optimizer, b2);
		printf("  ZeRO-1          optimizer %s a rank, %s without: AdamW's moments sharded over dp %d\n", b1, b2, p->dp);
	}
	if (base && p->recompute) {
		human(e.mem_activations, b1), human(eb.mem_activations, b2);
		human(L ? e.act_per_layer[0] : 0, b3), human(L ? eb.act_per_layer[0] : 0, b4);
		printf("  recompute       activations %s, %s without; a layer keeps %s, %s without\n", b1, b2, b3, b4);
	}
	if (base) {
		human(e.mem_peak, b1), human(eb.mem_peak, b2);
		printf("                  peak %s, %s without %s\n", b1, b2,
		       p->zero && p->recompute ? "either" : p->zero ? "--zero 1" : "recomputation");
	}
	return 0;
}

static int explain_plan(const Args *a, MglArena *ar, const MglPlan *p) { return explain_print(a, ar, p, NULL); }

static int explain_body(MglCtx *c, Args *a, MglGraph *g, MglFile *f)
{
	(void)f;
	MglPlan *p = build(c, a, g, NULL), *base = NULL;
	if (p->zero || p->recompute) {   /* the same without them, its warnings said already */
		Args b = *a;
		b.zero = 0;
		b.recompute = MGL_RECOMPUTE_NONE;
		FILE *out = c->out, *null = fopen("/dev/null", "w");
		c->out = null ? null : out;
		base = build(c, &b, g, NULL);
		c->out = out;
		if (null)
			fclose(null);
	}
	return explain_print(a, &c->arena, p, base);
}

int cmd_explain(Args *a) { return with_plan("explain", a, explain_body, explain_plan); }

/* ---------------------------------------------------------------- mgl dot */

/* --layers: N (1 by default), 0 for "all", -1 for anything else */
static int dot_layers(const char *s)
{
	if (!s)
		return 1;
	if (!strcmp(s, "all"))
		return 0;
	char *end;
	errno = 0;
	long n = strtol(s, &end, 10);
	return *s >= '0' && *s <= '9' && !*end && !errno && n >= 1 && n <= 1 << 20 ? (int)n : -1;
}

static int dot_emit(const Args *a, MglArena *ar, const MglPlan *p)
{
	(void)ar;
	FILE *f = cli_out_open(a->out);
	if (!f)
		return 1;
	mgl_dot(f, p, dot_layers(a->layers), a->backward);
	return cli_out_close(f, a->out);
}

static int dot_body(MglCtx *c, Args *a, MglGraph *g, MglFile *f)
{
	(void)f;
	return dot_emit(a, &c->arena, build(c, a, g, NULL));
}

int cmd_dot(Args *a)
{
	if (dot_layers(a->layers) < 0)
		return usage_error("dot", "--layers takes a whole number from 1 to 1,048,576 or 'all', not '%s'", a->layers);
	return with_plan("dot", a, dot_body, dot_emit);
}
