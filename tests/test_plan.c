/* tests/test_plan.c — Check suites for the plan: the collectives the partitioner inserts
 * (Megatron's two all-reduces forward and two backward per layer; none with --sp), the
 * whole-model counts, the memory a layer keeps against Megatron's formula, the plan's
 * text round trip and its refusal of damaged input, and the compile time of the largest
 * preset. */
#include "mgl.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
	MglCtx c;
	MglGraph *g;
	MglPlan *p;
	char *diag;
	size_t diaglen;
	int status;
} Build;

/* Compiles model `path` with `preset` for the target; p is NULL on an error. */
/* the plan of the model at path with preset (and --set text, or NULL) for t */
static void build_set(Build *b, const char *path, const char *preset, const char *set, MglTarget t)
{
	memset(b, 0, sizeof *b);
	b->c.out = open_memstream(&b->diag, &b->diaglen);
	jmp_buf jb;
	b->c.fail = &jb;
	MglOptions opt = {.preset = preset};
	if (!setjmp(jb)) {
		if (set)
			opt.overrides = mgl_source_from_string(&b->c, "--set", set, true);
		b->g = mgl_compile_file(&b->c, path, &opt);
		b->c.fail = &jb;
		if (b->g)
			b->p = mgl_build_plan(&b->c, b->g, &t);
	} else {
		b->status = b->c.status;
	}
	fclose(b->c.out);
}

static void build(Build *b, const char *path, const char *preset, MglTarget t) { build_set(b, path, preset, NULL, t); }

static void build_free(Build *b)
{
	mgl_arena_free(&b->c.arena);
	free(b->diag);
}

static MglTarget target(int tp, bool sp) { return (MglTarget){.tp = tp, .dp = 1, .sp = sp, .batch = 2, .seq = 128, .act_dtype = MGL_BF16}; }

/* A model's tiny preset at tp, sequences of 64 (what most checks below read), or the test
 * fails saying why it did not compile. */
static MglPlan *tiny(Build *b, const char *path, int tp)
{
	MglTarget t = target(tp, false);
	t.seq = 64;
	build(b, path, "tiny", t);
	ck_assert_msg(b->p, "%s", b->diag);
	return b->p;
}

/* ---------------------------------------------------------------- collectives */

static const struct { const char *model, *preset; } models[] = {
	{"models/gpt2.mgl", "355m"}, /* 16 heads: divides 2, 4, 8 */
	{"models/gpt2.mgl", "8.3b"},
	{"models/bert.mgl", "336m"},
	{"models/bert.mgl", "1.3b"},
	{"models/llama.mgl", "1b"},  /* 32 heads, ffn 5632 and the vocabulary of 32,000 divide 2, 4, 8 */
};

START_TEST(two_all_reduces_per_layer)
{
	static const int tps[] = {2, 4, 8};
	for (size_t m = 0; m < sizeof models / sizeof models[0]; m++)
		for (size_t k = 0; k < 3; k++) {
			Build b;
			build(&b, models[m].model, models[m].preset, target(tps[k], false));
			ck_assert_msg(b.p, "%s %s tp %d:\n%s", models[m].model, models[m].preset, tps[k], b.diag);
			MglExplain e;
			mgl_explain(&b.c.arena, b.p, &e);
			ck_assert_int_gt(b.p->nlayers, 0);
			for (int l = 0; l < b.p->nlayers; l++) {
				ck_assert_msg(e.per_layer[l][0][MGL_AR] == 2 && e.per_layer[l][1][MGL_AR] == 2,
					      "%s tp %d layer %d: %d all-reduces forward, %d backward", models[m].preset, tps[k], l,
					      e.per_layer[l][0][MGL_AR], e.per_layer[l][1][MGL_AR]);
				for (int ph = 0; ph < 2; ph++)
					ck_assert(e.per_layer[l][ph][MGL_AG] == 0 && e.per_layer[l][ph][MGL_RS] == 0);
			}
			/* the whole model: + the embedding's and the loss's two (max, sum-exp) forward,
			 * + the one before the final layer norm backward; + the norm for clipping */
			int L = b.p->nlayers;
			ck_assert_int_eq(e.total[MGL_FWD][MGL_AR], 2 * L + 3);
			ck_assert_int_eq(e.total[MGL_BWD][MGL_AR], 2 * L + 1);
			ck_assert_int_eq(e.total[MGL_OPT][MGL_AR], 1);
			ck_assert_int_eq(e.total[MGL_FWD][MGL_AG] + e.total[MGL_BWD][MGL_AG], 0);
			build_free(&b);
		}
}
END_TEST

START_TEST(sequence_parallel_has_no_all_reduce_per_layer)
{
	static const int tps[] = {2, 4, 8};
	for (size_t m = 0; m < sizeof models / sizeof models[0]; m++)
		for (size_t k = 0; k < 3; k++) {
			Build b;
			build(&b, models[m].model, models[m].preset, target(tps[k], true));
			ck_assert_msg(b.p, "%s", b.diag);
			MglExplain e;
			mgl_explain(&b.c.arena, b.p, &e);
			for (int l = 0; l < b.p->nlayers; l++) {
				/* forward: gather before each column-split group, reduce-scatter after each
				 * row-split linear; backward: their conjugates, and the re-gathers of the
				 * layer norms' outputs for the weight gradients */
				ck_assert_int_eq(e.per_layer[l][0][MGL_AR], 0);
				ck_assert_int_eq(e.per_layer[l][1][MGL_AR], 0);
				ck_assert_int_eq(e.per_layer[l][0][MGL_AG], 2);
				ck_assert_int_eq(e.per_layer[l][0][MGL_RS], 2);
				ck_assert_int_eq(e.per_layer[l][1][MGL_AG], 4);
				ck_assert_int_eq(e.per_layer[l][1][MGL_RS], 2);
			}
			build_free(&b);
		}
}
END_TEST

START_TEST(tp1_has_no_collectives)
{
	Build b;
	build(&b, "models/gpt2.mgl", "124m", target(1, false));
	ck_assert_ptr_nonnull(b.p);
	for (int i = 0; i < b.p->nsteps; i++)
		ck_assert(!(mgl_ops[b.p->steps[i].op].flags & MGL_OPF_COLLECTIVE));
	ck_assert_int_eq(b.p->vocab, 50257);
	ck_assert_int_eq(b.p->vocab_padded, 50304);
	build_free(&b);
}
END_TEST

START_TEST(vocabulary_padding_and_shards)
{
	Build b;
	build(&b, "models/gpt2.mgl", "355m", target(4, false));
	ck_assert_ptr_nonnull(b.p);
	ck_assert_int_eq(b.p->vocab_padded, 50688);   /* a multiple of 128 * 4 */
	const MglPlanParam *wte = &b.p->params[0];
	ck_assert_str_eq(wte->name, "wte");
	ck_assert_int_eq(wte->shape[0], 50257);        /* checkpoints keep the true table */
	ck_assert_int_eq(wte->padded, 50688);
	ck_assert_int_eq(b.p->values[wte->value].shape[0], 50688 / 4);
	MglExplain e;
	mgl_explain(&b.c.arena, b.p, &e);
	ck_assert_int_eq(e.params_total, 354823168);
	build_free(&b);
}
END_TEST

START_TEST(data_parallel_buckets)
{
	Build b;
	MglTarget t = target(2, false);
	t.dp = 4;
	build(&b, "models/gpt2.mgl", "124m", t);
	ck_assert_ptr_nonnull(b.p);
	/* every gradient is in exactly one dp all-reduce, and it comes after the gradient's
	 * last writer: reduction overlaps the rest of the backward pass */
	int *seen = calloc((size_t)b.p->nvalues, sizeof *seen);
	int *last_write = calloc((size_t)b.p->nvalues, sizeof *last_write);
	int buckets = 0, first_bucket = -1, last_bwd = 0;
	for (int i = 0; i < b.p->nsteps; i++) {
		const MglStep *s = &b.p->steps[i];
		if (s->phase == MGL_BWD && s->op != MGL_OP_ALL_REDUCE)
			last_bwd = i;
		if (s->op == MGL_OP_ALL_REDUCE && s->attr.group == MGL_GROUP_DP) {
			buckets++;
			if (first_bucket < 0)
				first_bucket = i;
			for (int k = 0; k < s->nin; k++) {
				seen[s->in[k]]++;
				ck_assert_int_lt(last_write[s->in[k]], i);
			}
		} else {
			for (int k = 0; k < s->nout; k++)
				last_write[s->out[k]] = i;
		}
	}
	for (int i = 0; i < b.p->nparams; i++)
		ck_assert_int_eq(seen[b.p->params[i].grad], 1);
	ck_assert_int_gt(buckets, 4);
	ck_assert_int_lt(first_bucket, last_bwd);   /* the first bucket goes out before backward ends */
	free(seen);
	free(last_write);
	build_free(&b);
}
END_TEST

/* ---------------------------------------------------------------- memory */

/* Megatron (Korthikanti et al., 2022), bytes a layer keeps at 16 bits:
 * no parallelism 34 sbh + 5 a s^2 b; tensor parallel sbh (10 + 24/t + 5as/(ht));
 * with sequence parallelism sbh/t (34 + 5as/h). */
START_TEST(activation_memory_within_megatron)
{
	static const int tps[] = {1, 2, 4, 8};
	static const int64_t seqs[] = {128, 1024};
	for (int sp = 0; sp < 2; sp++)
		for (size_t k = 0; k < 4; k++)
			for (size_t q = 0; q < 2; q++) {
				if (sp && tps[k] == 1)
					continue;
				MglTarget t = target(tps[k], sp);
				t.seq = seqs[q];
				t.batch = 4;
				Build b;
				build(&b, "models/gpt2.mgl", "355m", t);
				ck_assert_ptr_nonnull(b.p);
				MglExplain e;
				mgl_explain(&b.c.arena, b.p, &e);
				double s = (double)t.seq, bb = (double)t.batch, h = 1024, a = 16, tt = tps[k];
				double formula = tps[k] == 1 ? 34 * s * bb * h + 5 * a * s * s * bb
					       : sp ? s * bb * h / tt * (34 + 5 * a * s / h)
					       : s * bb * h * (10 + 24 / tt + 5 * a * s / (h * tt));
				for (int l = 0; l < b.p->nlayers; l++)
					ck_assert_msg((double)e.act_per_layer[l] <= formula,
						      "tp %d sp %d seq %lld: a layer keeps %lld bytes, the formula %.0f", tps[k], sp,
						      (long long)t.seq, (long long)e.act_per_layer[l], formula);
				/* and it is not trivially small: at least the 34 sbh / t of the linear parts
				 * that must be kept, minus what flash-style attention recomputes */
				ck_assert((double)e.act_per_layer[0] >= 24 * s * bb * h / tt);
				build_free(&b);
			}
}
END_TEST

/* No two values alive at once share arena bytes. Alive, stated here independently of
 * plan.c: from the step that makes a value to the last step that reads it, where a read by
 * a step of a fused group (one kernel: fuse.c) lasts to the group's last step, since that
 * kernel reads its inputs while it writes its outputs. The rule without the groups passed
 * while generated chain kernels overwrote their own inputs on the GPU (issue 8). */
static void assert_memory_sound(const MglPlan *p, const char *what)
{
	int *first = malloc((size_t)p->nvalues * sizeof *first), *last = malloc((size_t)p->nvalues * sizeof *last);
	for (int v = 0; v < p->nvalues; v++)
		first[v] = p->values[v].role == MGL_V_INPUT ? 0 : -1, last[v] = -1;
	for (int i = 0; i < p->nsteps; i++) {
		int end = i;
		for (int j = i + 1; p->steps[i].fuse >= 0 && j < p->nsteps && p->steps[j].fuse == p->steps[i].fuse; j++)
			end = j;
		for (int k = 0; k < p->steps[i].nout; k++)
			if (first[p->steps[i].out[k]] < 0)
				first[p->steps[i].out[k]] = i;
		for (int k = 0; k < p->steps[i].nin; k++)
			last[p->steps[i].in[k]] = end;
	}
	for (int v = 0; v < p->nvalues; v++) {
		const MglValue *x = &p->values[v];
		if ((x->role != MGL_V_ACT && x->role != MGL_V_INPUT) || first[v] < 0)
			continue;
		ck_assert_int_le(x->offset + x->bytes, p->arena_bytes);
		int xe = last[v] < 0 ? p->nsteps - 1 : last[v] > first[v] ? last[v] : first[v];
		for (int w = v + 1; w < p->nvalues; w++) {
			const MglValue *y = &p->values[w];
			if ((y->role != MGL_V_ACT && y->role != MGL_V_INPUT) || first[w] < 0)
				continue;
			int ye = last[w] < 0 ? p->nsteps - 1 : last[w] > first[w] ? last[w] : first[w];
			bool overlap_time = first[v] <= ye && first[w] <= xe;
			bool overlap_space = x->offset < y->offset + y->bytes && y->offset < x->offset + x->bytes;
			ck_assert_msg(!(overlap_time && overlap_space), "%s: %s and %s share memory while both alive", what,
				      x->name, y->name);
		}
	}
	char err[400];
	ck_assert_msg(mgl_plan_check_memory(p, err, sizeof err) == 0, "%s: %s", what, err);
	free(first);
	free(last);
}

/* What explain reports. ZeRO-1 divides the optimizer's state by dp (each piece rounded up
 * and aligned) and changes nothing else but the gradients' padding. Recomputation lowers
 * the activations: full keeps each layer's output alone (the next layer's input: b s h at
 * 16 bits), selective keeps all but GPT-2's two layer norms' outputs and the gelu's (6 b s h
 * fewer, at tp 1), and the arena's peak falls with them. */
START_TEST(zero_and_recompute_memory)
{
	MglTarget t = {.tp = 1, .dp = 2, .batch = 4, .seq = 1024, .act_dtype = MGL_BF16};
	MglExplain e[2];
	int64_t nparams = 0;
	for (int z = 0; z < 2; z++) {
		Build b;
		t.zero = z;
		build(&b, "models/gpt2.mgl", "124m", t);
		ck_assert_msg(b.p, "%s", b.diag);
		MglArena a = {0};
		mgl_explain(&a, b.p, &e[z]);
		nparams = b.p->nparams;
		mgl_arena_free(&a);
		build_free(&b);
	}
	ck_assert_int_ge(e[1].mem_optimizer, e[0].mem_optimizer / 2);
	ck_assert_int_le(e[1].mem_optimizer, e[0].mem_optimizer / 2 + nparams * 2 * 256);
	ck_assert_int_eq(e[1].mem_weights, e[0].mem_weights);
	ck_assert_int_eq(e[1].mem_activations, e[0].mem_activations);
	ck_assert_int_le(e[1].mem_grads - e[0].mem_grads, nparams * 256);
	ck_assert_int_lt(e[1].mem_peak, e[0].mem_peak);

	int64_t sbh2 = 4 * 1024 * 768 * 2, act[3], peak[3];
	t.zero = 0;
	for (int r = 0; r < 3; r++) {
		Build b;
		t.recompute = (MglRecompute)r;
		build(&b, "models/gpt2.mgl", "124m", t);
		ck_assert_msg(b.p, "%s", b.diag);
		MglArena a = {0};
		MglExplain x;
		mgl_explain(&a, b.p, &x);
		for (int l = 1; l < b.p->nlayers; l++)
			ck_assert_int_eq(x.act_per_layer[l], x.act_per_layer[0]);
		act[r] = x.act_per_layer[0];
		peak[r] = x.mem_activations;
		assert_memory_sound(b.p, mgl_recompute_name[r]);
		mgl_arena_free(&a);
		build_free(&b);
	}
	ck_assert_int_eq(act[MGL_RECOMPUTE_FULL], sbh2);
	ck_assert_int_eq(act[MGL_RECOMPUTE_NONE] - act[MGL_RECOMPUTE_SELECTIVE], 6 * sbh2);
	ck_assert_int_lt(peak[MGL_RECOMPUTE_SELECTIVE], peak[MGL_RECOMPUTE_NONE]);
	ck_assert_int_lt(peak[MGL_RECOMPUTE_FULL], peak[MGL_RECOMPUTE_SELECTIVE]);
}
END_TEST

START_TEST(memory_plan_is_sound)
{
	static const struct { const char *model, *preset; int seq; } cases[] = {
		{"models/gpt2.mgl", "tiny", 64}, {"models/gpt2.mgl", "124m", 256}, {"models/bert.mgl", "tiny", 64},
		{"models/llama.mgl", "tiny", 64},
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
		for (int tp = 1; tp <= 4; tp *= 2)
			for (int sp = 0; sp <= (tp > 1); sp++) {
				Build b;
				MglTarget t = target(tp, sp);
				t.seq = cases[c].seq;
				build(&b, cases[c].model, cases[c].preset, t);
				ck_assert_ptr_nonnull(b.p);
				char what[128];
				snprintf(what, sizeof what, "%s %s tp %d%s", cases[c].model, cases[c].preset, tp, sp ? " sp" : "");
				assert_memory_sound(b.p, what);
				build_free(&b);
			}
}
END_TEST

/* The reader holds a plan to the same rule: a fused group's output moved onto one of the
 * group's inputs (what the memory plan did before issue 8) is refused, naming both. */
START_TEST(memory_plan_check_refuses_overlap)
{
	Build b;
	tiny(&b, "models/gpt2.mgl", 2);
	MglPlan *p = b.p;
	char err[400];
	ck_assert_int_eq(mgl_plan_check_memory(p, err, sizeof err), 0);
	int moved = 0;
	for (int s = 1; s < p->nsteps && !moved; s++) {
		const MglStep *st = &p->steps[s];
		if (st->fuse < 0 || st->fuse == s || p->steps[st->fuse].op == MGL_OP_MATMUL)
			continue;
		const MglStep *head = &p->steps[st->fuse];
		for (int k = 0; k < head->nin && !moved; k++) {
			const MglValue *in = &p->values[head->in[k]];
			if (in->role == MGL_V_ACT && in->bytes == p->values[st->out[0]].bytes) {
				p->values[st->out[0]].offset = in->offset;
				moved = 1;
			}
		}
	}
	ck_assert_int_eq(moved, 1);
	ck_assert_int_eq(mgl_plan_check_memory(p, err, sizeof err), -1);
	ck_assert_ptr_nonnull(strstr(err, "share arena bytes while both are alive"));
	p->steps[3].fuse = 1;   /* a group that is not a run of steps */
	ck_assert_int_eq(mgl_plan_check_memory(p, err, sizeof err), -1);
	build_free(&b);
}
END_TEST

/* ---------------------------------------------------------------- fusion */

typedef struct { int epilogues, gelus, adds, dx_adds, dgelus, chains, adamw_groups, stats_groups, norm_adds, norm_biases, qkv_biases; } Fused;

static Fused fused(const MglPlan *p)
{
	Fused f = {0};
	char err[300];
	ck_assert_msg(mgl_plan_check_fusion(p, err, sizeof err) == 0, "%s", err);
	for (int s = 0; s < p->nsteps; s++) {
		const MglStep *st = &p->steps[s];
		bool gemm = st->op == MGL_OP_MATMUL || st->op == MGL_OP_MATMUL_DX;
		f.epilogues += st->op == MGL_OP_MATMUL && st->attr.epi;
		f.gelus += st->op == MGL_OP_MATMUL && (st->attr.epi & MGL_EPI_GELU);
		f.adds += st->op == MGL_OP_MATMUL && (st->attr.epi & MGL_EPI_ADD);
		f.dx_adds += st->op == MGL_OP_MATMUL_DX && st->attr.epi == MGL_EPI_ADD;
		f.dgelus += st->op == MGL_OP_MATMUL_DX && st->attr.epi == MGL_EPI_DGELU;
		bool norm = st->op == MGL_OP_LAYERNORM_BWD || st->op == MGL_OP_RMSNORM_BWD;
		bool qkv = st->op == MGL_OP_ATTENTION_BWD_QKV;
		f.chains += st->fuse == s && !gemm && st->op != MGL_OP_ADAMW && st->op != MGL_OP_VOCAB_MAX && !norm && !qkv;
		f.qkv_biases += st->fuse == s && qkv;
		f.norm_adds += st->fuse == s && norm;
		f.norm_biases += st->fuse >= 0 && st->fuse < s && st->op == MGL_OP_BIAS_GRAD &&
				 (p->steps[st->fuse].op == MGL_OP_LAYERNORM_BWD || p->steps[st->fuse].op == MGL_OP_RMSNORM_BWD);
		f.adamw_groups += st->fuse == s && st->op == MGL_OP_ADAMW;
		f.stats_groups += st->fuse == s && st->op == MGL_OP_VOCAB_MAX;
	}
	return f;
}

static Fused fused_set(const char *env, MglDtype dt, const char *set)
{
	if (env)
		setenv(env, "1", 1);
	Build b;
	MglTarget t = target(1, false);
	t.seq = 64;
	t.act_dtype = dt;
	build_set(&b, "models/gpt2.mgl", "tiny", set, t);
	if (env)
		unsetenv(env);
	ck_assert_ptr_nonnull(b.p);
	Fused f = fused(b.p);
	build_free(&b);
	return f;
}

static Fused fused_with(const char *env, MglDtype dt) { return fused_set(env, dt, NULL); }

/* The compiler decides fusion once, for the activations' storage: GEMM epilogues need
 * bf16 (cuBLASLt adds the bias's bf16 copy), chains do not; the debugging switches act at
 * compile time. */
START_TEST(fusion_is_decided_for_the_dtype)
{
	Fused bf = fused_with(NULL, MGL_BF16), f32 = fused_with(NULL, MGL_F32);
	/* a layer at tp 1: q, k, v, o, fc (with the gelu) and proj */
	ck_assert_msg(bf.epilogues == 12 && bf.gelus == 2 && bf.chains > 0, "%d %d %d", bf.epilogues, bf.gelus, bf.chains);
	ck_assert_msg(f32.epilogues == 0 && f32.chains >= bf.chains, "%d %d %d", f32.epilogues, f32.chains, bf.chains);
	Fused no_gelu = fused_with("MGL_NO_GELU_EPILOGUE", MGL_BF16), no_epi = fused_with("MGL_NO_EPILOGUE", MGL_BF16),
	      no_fuse = fused_with("MGL_NO_FUSE", MGL_BF16);
	ck_assert(no_gelu.epilogues == bf.epilogues && no_gelu.gelus == 0);
	ck_assert(no_epi.epilogues == 0 && no_epi.chains > 0);
	ck_assert(no_fuse.chains == 0 && no_fuse.epilogues == bf.epilogues);
	ck_assert(bf.adamw_groups == 1 && no_fuse.adamw_groups == 0);
}
END_TEST

/* In GPT-2 tiny at p_drop 0, the first fused group headed by an op `head` and ending in an
 * accumulate: the reader refuses it once the accumulate's other input has another shape,
 * with `why` in the message, and takes it back when the shape is restored. */
static void refuses_another_shape(MglOp head, const char *why)
{
	Build b;
	MglTarget t = target(1, false);
	t.seq = 64;
	setenv("MGL_NO_HFUSE", "1", 1);   /* q, k and v's dx summed by accumulates */
	build_set(&b, "models/gpt2.mgl", "tiny", "p_drop=0", t);
	unsetenv("MGL_NO_HFUSE");
	ck_assert_msg(b.p, "%s", b.diag);
	int s = 0;
	while (s + 1 < b.p->nsteps && !(b.p->steps[s].op == head && b.p->steps[s].fuse == s &&
					b.p->steps[s + 1].fuse == s && b.p->steps[s + 1].op == MGL_OP_ACCUMULATE))
		s++;
	ck_assert_int_lt(s + 1, b.p->nsteps);
	MglStep *acc = &b.p->steps[s + 1];
	int k = acc->in[0] == b.p->steps[s].out[0];   /* the other input */
	int64_t keep = b.p->values[acc->in[k]].shape[0];
	b.p->values[acc->in[k]].shape[0] = keep + 1;
	char err[300];
	ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), -1);
	ck_assert_msg(strstr(err, why), "%s", err);
	b.p->values[acc->in[k]].shape[0] = keep;
	ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), 0);
	build_free(&b);
}

/* The GEMMs that add another value as cuBLASLt's C: the residual adds after o and proj's
 * bias when no dropout stands between (2 a layer), and in the backward pass the sums of
 * the q, k and v input gradients (2 a layer); not in f32, not with MGL_NO_ADD_EPILOGUE;
 * the reader refuses a group whose add reads a value of another shape. */
START_TEST(gemms_add_the_residual_and_the_gradients)
{
	setenv("MGL_NO_HFUSE", "1", 1);   /* which sums the q, k and v input gradients in one GEMM */
	Fused drop = fused_with(NULL, MGL_BF16), plain = fused_set(NULL, MGL_BF16, "p_drop=0"),
	      f32 = fused_set(NULL, MGL_F32, "p_drop=0"), off = fused_set("MGL_NO_ADD_EPILOGUE", MGL_BF16, "p_drop=0");
	unsetenv("MGL_NO_HFUSE");
	Fused one = fused_set(NULL, MGL_BF16, "p_drop=0");
	ck_assert_msg(drop.adds == 0 && drop.dx_adds == 4, "%d %d", drop.adds, drop.dx_adds);
	ck_assert_msg(plain.adds == 4 && plain.dx_adds == 4 && plain.epilogues == 12 && plain.gelus == 2, "%d %d %d %d",
		      plain.adds, plain.dx_adds, plain.epilogues, plain.gelus);
	ck_assert(f32.adds == 0 && f32.dx_adds == 0);
	ck_assert(off.adds == 0 && off.dx_adds == 0 && off.epilogues == 12);
	ck_assert_msg(one.adds == 4 && one.dx_adds == 0, "%d %d", one.adds, one.dx_adds);
	refuses_another_shape(MGL_OP_MATMUL_DX, "cannot run as one GEMM with its epilogue");
}
END_TEST

/* The MLP's input gradient: proj's matmul_dx applies the GELU's derivative (cuBLASLt's
 * DGELU), one a layer, in bf16 and not with MGL_NO_DGELU_EPILOGUE, under each kind of
 * recomputation too; the reader refuses the group when the pre-activation is f32 or the
 * gelu_bwd reads another gradient. */
START_TEST(matmul_dx_applies_the_gelu_derivative)
{
	Fused bf = fused_with(NULL, MGL_BF16), f32 = fused_with(NULL, MGL_F32), off = fused_with("MGL_NO_DGELU_EPILOGUE", MGL_BF16);
	ck_assert_msg(bf.dgelus == 2 && f32.dgelus == 0 && off.dgelus == 0, "%d %d %d", bf.dgelus, f32.dgelus, off.dgelus);
	ck_assert_int_eq(off.dx_adds, bf.dx_adds);
	Build b;
	MglTarget t = target(1, false);
	t.seq = 64;
	for (int r = MGL_RECOMPUTE_SELECTIVE; r <= MGL_RECOMPUTE_FULL; r++) {
		t.recompute = (MglRecompute)r;
		build_set(&b, "models/gpt2.mgl", "tiny", NULL, t);
		ck_assert_msg(b.p, "%s", b.diag);
		ck_assert_msg(fused(b.p).dgelus == 2, "recompute %s: %d", mgl_recompute_name[r], fused(b.p).dgelus);
		build_free(&b);
	}
	t.recompute = MGL_RECOMPUTE_NONE;
	build_set(&b, "models/gpt2.mgl", "tiny", NULL, t);
	ck_assert_msg(b.p, "%s", b.diag);
	int s = 0;
	while (s < b.p->nsteps && b.p->steps[s].attr.epi != MGL_EPI_DGELU)
		s++;
	ck_assert_int_lt(s, b.p->nsteps);
	MglStep *g = &b.p->steps[s + 1];
	ck_assert_int_eq(g->op, MGL_OP_GELU_BWD);
	char err[300];
	MglValue *x = &b.p->values[g->in[1]];
	x->dtype = MGL_F32;
	ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "cannot run as one GEMM with its epilogue"), "%s", err);
	x->dtype = MGL_BF16;
	int dy = g->in[0];
	g->in[0] = g->in[1];
	ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), -1);
	g->in[0] = dy;
	MglStep *next = &b.p->steps[s + 2];   /* a second reader of the GEMM's own output */
	int keep = next->in[0];
	next->in[0] = dy;
	ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), -1);
	next->in[0] = keep;
	ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), 0);
	build_free(&b);
}
END_TEST

/* The residual stream's gradient added by the norms' backward: at p_drop 0 each layer's two
 * layernorm_bwd are followed by the accumulate of their input gradient and the residual's,
 * one group each, in f32 too; and the bias_grad of what they write joins where one follows
 * (not with MGL_NO_NORM_BIAS_GRAD); none with MGL_NO_FUSE; the reader refuses a group whose
 * other gradient is of another shape or not its own, whose bias_grad reads another value,
 * and one of four steps. */
START_TEST(norm_backward_adds_the_residual)
{
	Fused plain = fused_set(NULL, MGL_BF16, "p_drop=0"), f32 = fused_set(NULL, MGL_F32, "p_drop=0"),
	      off = fused_set("MGL_NO_FUSE", MGL_BF16, "p_drop=0"), nob = fused_set("MGL_NO_NORM_BIAS_GRAD", MGL_BF16, "p_drop=0");
	/* four norms adding the residual's gradient, and ln_f's summing the last proj's bias
	 * gradient alone; o's bias gradient after each mlp norm, proj's after the second
	 * layer's attention norm and ln_f: four */
	ck_assert_msg(plain.norm_adds == 5 && f32.norm_adds == 5 && off.norm_adds == 0 && nob.norm_adds == 4, "%d %d %d %d",
		      plain.norm_adds, f32.norm_adds, off.norm_adds, nob.norm_adds);
	ck_assert_msg(plain.norm_biases == 4 && f32.norm_biases == 4 && nob.norm_biases == 0, "%d %d %d", plain.norm_biases,
		      f32.norm_biases, nob.norm_biases);
	refuses_another_shape(MGL_OP_LAYERNORM_BWD, "norm's backward adding another gradient");
	Build b;   /* an accumulate of other values, a bias_grad of another, a group of four */
	MglTarget t = target(1, false);
	t.seq = 64;
	build_set(&b, "models/gpt2.mgl", "tiny", "p_drop=0", t);
	ck_assert_msg(b.p, "%s", b.diag);
	MglStep *st = b.p->steps;
	int s = 0;
	while (s + 3 < b.p->nsteps && !(st[s].op == MGL_OP_LAYERNORM_BWD && st[s].fuse == s && st[s + 1].op == MGL_OP_ACCUMULATE &&
					st[s + 2].op == MGL_OP_BIAS_GRAD && st[s + 2].fuse == s))
		s++;
	ck_assert_int_lt(s + 3, b.p->nsteps);
	MglStep *acc = &st[s + 1];
	int k = acc->in[0] == st[s].out[0] ? 0 : 1, mine = acc->in[k];
	acc->in[k] = acc->in[1 - k];
	char err[300];
	ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), -1);
	acc->in[k] = mine;
	int dy = st[s + 2].in[0];
	st[s + 2].in[0] = acc->in[1 - k];   /* the residual's gradient, not the sum */
	ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), -1);
	st[s + 2].in[0] = dy;
	int fuse = st[s + 3].fuse;
	st[s + 3].fuse = s;
	ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), -1);
	st[s + 3].fuse = fuse;
	ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), 0);
	build_free(&b);
}
END_TEST

/* The optimizer's adamw steps are one multi-tensor group (one launch on the GPU), at any
 * tp; the reader refuses a group whose steps clip by different norms. */
START_TEST(optimizer_is_one_group)
{
	for (int tp = 1; tp <= 2; tp++) {
		Build b;
		tiny(&b, "models/gpt2.mgl", tp);
		ck_assert_int_eq(fused(b.p).adamw_groups, 1);
		int head = -1, n = 0;
		for (int s = 0; s < b.p->nsteps; s++)
			if (b.p->steps[s].op == MGL_OP_ADAMW) {
				head = head < 0 ? s : head;
				ck_assert_int_eq(b.p->steps[s].fuse, head);
				n++;
			}
		ck_assert_int_eq(n, b.p->nparams);
		ck_assert_int_eq(mgl_group_end(b.p, head), head + n - 1);
		char err[300];
		b.p->steps[head + 1].in[4] = b.p->steps[head + 1].in[1];   /* another "norm" */
		ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), -1);
		ck_assert_msg(strstr(err, "cannot run as one multi-tensor AdamW"), "%s", err);
		build_free(&b);
	}
}
END_TEST

/* the plan's text form (mgl_plan_write) in memory */
static char *write_plan(const MglPlan *p, size_t *len)
{
	char **s = calloc(1, sizeof *s);   /* on the heap: gcc cannot follow memstream's pointer */
	FILE *f = open_memstream(s, len);
	mgl_plan_write(f, p);
	fclose(f);
	char *text = *s;
	free(s);
	return text;
}

/* Asserts that the plan reader refuses the n bytes of text (a damaged plan, read as the
 * file name) with an error that contains want. */
static void assert_read_refuses(MglArena *a, const char *text, size_t n, const char *name, const char *want)
{
	char err[256];
	ck_assert_msg(!mgl_plan_read(a, text, n, name, err, sizeof err), "%s: read, but expected \"%s\"", name, want);
	ck_assert_msg(strstr(err, want), "expected \"%s\", got \"%s\"", want, err);
}

/* At tp 1 the softmax's maximum and statistics are one pass over the logits (a group of
 * vocab_max and vocab_stats); at tp 2 the all-reduce of the maximum comes between them and
 * they are not; MGL_NO_FUSE forms none; the reader refuses a group whose vocab_stats reads
 * another maximum, takes another vocabulary limit (from a file) or reads its targets from
 * the maximum's bytes. */
START_TEST(softmax_statistics_are_one_pass)
{
	ck_assert_int_eq(fused_with(NULL, MGL_BF16).stats_groups, 1);
	ck_assert_int_eq(fused_with(NULL, MGL_F32).stats_groups, 1);
	ck_assert_int_eq(fused_with("MGL_NO_FUSE", MGL_BF16).stats_groups, 0);
	for (int tp = 1; tp <= 2; tp++) {
		Build b;
		tiny(&b, "models/gpt2.mgl", tp);
		ck_assert_int_eq(fused(b.p).stats_groups, tp == 1);
		int s = 0;
		while (s < b.p->nsteps && b.p->steps[s].op != MGL_OP_VOCAB_MAX)
			s++;
		ck_assert_int_lt(s + 1, b.p->nsteps);
		if (tp == 1) {
			char err[300];
			ck_assert_int_eq(mgl_group_end(b.p, s), s + 1);
			/* from a file: the statistics under another vocabulary limit than the maximum's */
			size_t n;
			char *t = write_plan(b.p, &n), *st = strstr(t, " vocab_stats "), *lim = st ? strstr(st, " limit=") : NULL;
			ck_assert_ptr_nonnull(lim);
			MglArena a = {0};
			ck_assert_msg(mgl_plan_read(&a, t, n, "t.plan", err, sizeof err), "%s", err);
			lim[7] = lim[7] == '1' ? '2' : '1';
			assert_read_refuses(&a, t, n, "t.plan", "cannot run as one pass over the logits");
			free(t);
			mgl_arena_free(&a);
			b.p->steps[s + 1].in[2] = b.p->steps[s + 1].in[0];   /* another "maximum" */
			ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), -1);
			ck_assert_msg(strstr(err, "cannot run as one pass over the logits"), "%s", err);
			b.p->steps[s + 1].in[2] = b.p->steps[s].out[0];
			b.p->steps[s + 1].in[1] = b.p->steps[s].out[0];   /* the targets in the maximum's bytes */
			ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), -1);
		}
		build_free(&b);
	}
}
END_TEST

/* q, k and v's bias gradients summed by attention's backward: schedule.c puts each
 * bias_grad of an attention_bwd_qkv's output right after it and fuse.c makes the two one
 * group, a layer's (tiny has two), at tp 1 and 2; under MGL_NO_QKV_BIAS_SUMS=1 the plan has
 * none. Read back from a file the groups stand; the reader refuses a group whose
 * bias_grad sums another value, or into another width. */
START_TEST(qkv_bias_sums_ride_the_attention_backward)
{
	ck_assert_int_eq(fused_with("MGL_NO_QKV_BIAS_SUMS", MGL_BF16).qkv_biases, 0);
	ck_assert_int_eq(fused_with(NULL, MGL_BF16).qkv_biases, 2);
	ck_assert_int_eq(fused_with(NULL, MGL_F32).qkv_biases, 2);
	for (int tp = 1; tp <= 2; tp++) {
		Build b;
		tiny(&b, "models/gpt2.mgl", tp);
		ck_assert_int_eq(fused(b.p).qkv_biases, 2);
		int s = 0;
		while (s < b.p->nsteps && b.p->steps[s].op != MGL_OP_ATTENTION_BWD_QKV)
			s++;
		ck_assert_int_lt(s + 1, b.p->nsteps);
		ck_assert_int_eq(b.p->steps[s + 1].op, MGL_OP_BIAS_GRAD);
		ck_assert_int_eq(mgl_group_end(b.p, s), s + 1);
		char err[300];
		size_t n;
		char *t = write_plan(b.p, &n);
		MglArena a = {0};
		ck_assert_msg(mgl_plan_read(&a, t, n, "t.plan", err, sizeof err), "%s", err);
		free(t);
		mgl_arena_free(&a);
		MglStep *g = &b.p->steps[s + 1];
		int in = g->in[0];
		g->in[0] = b.p->steps[s].in[0];   /* the column sums of dy instead */
		ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), -1);
		ck_assert_msg(strstr(err, "summing q, k and v's bias gradients"), "%s", err);
		g->in[0] = in;
		b.p->values[g->out[0]].shape[0] /= 3;   /* one bias's width, not the three's */
		ck_assert_int_eq(mgl_plan_check_fusion(b.p, err, sizeof err), -1);
		build_free(&b);
	}
}
END_TEST

/* LLaMA's SwiGLU: the backward's mul(dy, up) and silu_bwd run as one chain in every layer
 * (their chain expressions in the registry); the forward's silu cannot join its mul, whose
 * backward reads the silu's output. */
START_TEST(swiglu_backward_is_one_chain)
{
	for (int tp = 1; tp <= 2; tp++) {
		Build b;
		tiny(&b, "models/llama.mgl", tp);
		fused(b.p);
		int chains = 0;
		for (int s = 1; s < b.p->nsteps; s++) {
			const MglStep *st = &b.p->steps[s], *prev = &b.p->steps[s - 1];
			if (st->op != MGL_OP_SILU_BWD)
				continue;
			ck_assert_int_eq(prev->op, MGL_OP_MUL);
			ck_assert_int_eq(prev->phase, MGL_BWD);
			ck_assert_int_eq(st->fuse, s - 1);
			ck_assert_int_eq(prev->fuse, s - 1);
			chains++;
		}
		ck_assert_int_eq(chains, b.p->nlayers);
		build_free(&b);
	}
}
END_TEST

/* The schedule pass moves each backward all-reduce of a column-parallel layer's input
 * gradient ahead of the weight-gradient GEMMs before it, and a runtime that waits for a
 * collective only where mgl_collective_waits says runs those GEMMs during it: every one
 * of them, the attention's four (q, k, v and the row-parallel o, whose gradient came
 * before) and the mlp's two. The waits hold the plan to what a deferred wait needs: a step
 * that overwrites a collective's bytes waits for it. */
/* --interleave's segments (plan.h: mgl_segment_end): the steps of the phases asked cut just
 * after each of their collectives, so that the segments tile [0, nsteps) and each but the
 * last ends in a collective: at tp 2, two forward all-reduces a layer make as many forward
 * segments, the backward's adding their own */
START_TEST(segments_end_after_collectives)
{
	Build b;
	tiny(&b, "models/gpt2.mgl", 2);
	const MglPlan *p = b.p;
	unsigned fwd = 1u << MGL_FWD, both = fwd | 1u << MGL_BWD;
	int count[2] = {0}, colls[2] = {0};
	for (int which = 0; which < 2; which++) {
		unsigned phases = which ? both : fwd;
		for (int s = 0; s < p->nsteps; s++)
			colls[which] += mgl_ops[p->steps[s].op].kind == MGL_KIND_COLLECTIVE && (phases & (1u << p->steps[s].phase));
		for (int at = 0; at < p->nsteps; count[which]++) {
			int end = mgl_segment_end(p, at, p->nsteps, phases);
			ck_assert_int_gt(end, at);
			for (int s = at; s < end - 1; s++)   /* no collective of these phases inside */
				ck_assert(!(mgl_ops[p->steps[s].op].kind == MGL_KIND_COLLECTIVE && (phases & (1u << p->steps[s].phase))));
			if (end < p->nsteps)
				ck_assert_int_eq(mgl_ops[p->steps[end - 1].op].kind, MGL_KIND_COLLECTIVE);
			at = end;
		}
		ck_assert_int_ge(count[which], colls[which]);
		ck_assert_int_le(count[which], colls[which] + 1);
	}
	ck_assert_int_ge(colls[0], 2 * p->nlayers);
	ck_assert_int_gt(count[1], count[0]);
	ck_assert_int_eq(mgl_segment_end(p, 3, 3, both), 3);   /* an empty range ends where it starts */
	build_free(&b);
}
END_TEST

START_TEST(collectives_overlap_the_weight_gradients)
{
	Build b;
	tiny(&b, "models/gpt2.mgl", 2);
	const MglPlan *p = b.p;
	int *wait = malloc((size_t)p->nsteps * sizeof *wait), overlapped = 0;
	mgl_collective_waits(p, wait);
	for (int c = 0; c < p->nsteps; c++) {
		const MglStep *x = &p->steps[c];
		ck_assert_int_eq(wait[c] >= 0, mgl_ops[x->op].kind == MGL_KIND_COLLECTIVE);
		if (wait[c] < 0)
			continue;
		ck_assert_int_gt(wait[c], c);
		/* nothing before the wait reads the result */
		for (int s = c + 1; s < wait[c]; s++)
			for (int k = 0; k < p->steps[s].nin; k++)
				ck_assert_int_ne(p->steps[s].in[k], x->out[0]);
		/* the weight-gradient GEMMs between a backward all-reduce and its wait */
		for (int s = c + 1; s < wait[c]; s++)
			overlapped += x->phase == MGL_BWD && x->op == MGL_OP_ALL_REDUCE && p->steps[s].op == MGL_OP_MATMUL_DW;
	}
	/* each layer's four (q, k and v's are one: hfuse.c), and the vocabulary-parallel
	 * classifier's (the tied table's) */
	ck_assert_int_eq(overlapped, 4 * p->nlayers + 1);
	/* a step made to write over a collective's input waits for it */
	for (int c = 0; c < p->nsteps; c++)
		if (wait[c] > c + 1 && wait[c] < p->nsteps) {
			MglValue *v = &b.p->values[p->steps[c + 1].out[0]], keep = *v;
			const MglValue *in = &p->values[p->steps[c].in[0]];
			v->role = in->role, v->offset = in->offset, v->bytes = in->bytes;
			mgl_collective_waits(p, wait);
			ck_assert_int_eq(wait[c], c + 1);
			*v = keep;
			break;
		}
	free(wait);
	build_free(&b);
}
END_TEST

/* What a profile counts each step as: its op's kind, but a fused group's step its group's
 * (one kernel) and the output layer's three GEMMs the classifier's. */
START_TEST(step_kinds)
{
	static const MglTarget ts[] = {
		{.tp = 1, .dp = 1, .batch = 2, .seq = 64, .act_dtype = MGL_BF16},
		{.tp = 2, .dp = 1, .batch = 2, .seq = 64, .act_dtype = MGL_F32},
		{.tp = 2, .dp = 1, .sp = true, .batch = 2, .seq = 64, .act_dtype = MGL_BF16},
	};
	/* the steps that GEMM epilogues do: at tp 1, each linear's bias_add and the two gelus
	 * and the gelu_bwds (one a layer; dropout keeps the forward's residual adds out); none in
	 * f32; under --sp, not the row-split linears' biases (added after the reduce-scatter),
	 * but the accumulates of the q, k and v input gradients (2 a layer), which elsewhere one
	 * GEMM sums (hfuse.c) */
	static const int epilogue[] = {12 + 2 + 2, 0, 8 + 2 + 4 + 2};
	/* six linears a layer, a GEMM each forward and two each backward, but for q, k and v
	 * two in all (hfuse.c) where not under --sp */
	static const int gemms[] = {2 * (6 + 2 * 4), 2 * (6 + 2 * 4), 2 * 6 * 3};
	for (size_t t = 0; t < sizeof ts / sizeof ts[0]; t++) {
		Build b;
		build(&b, "models/gpt2.mgl", "tiny", ts[t]);
		ck_assert_msg(b.p, "%s", b.diag);
		MglKind *kind = malloc((size_t)b.p->nsteps * sizeof *kind);
		mgl_step_kinds(b.p, kind);
		int count[MGL_KIND_COUNT] = {0}, head_gemms = 0, layer_gemms = 0, epilogue_steps = 0, bias_sums = 0;
		for (int s = 0; s < b.p->nsteps; s++) {
			const MglStep *st = &b.p->steps[s];
			MglKind own = mgl_ops[st->op].kind;
			ck_assert(kind[s] < MGL_KIND_COUNT);
			count[kind[s]]++;
			if (own == MGL_KIND_GEMM) {
				ck_assert_msg(kind[s] == (st->layer < 0 ? MGL_KIND_CLASSIFIER : MGL_KIND_GEMM), "step %d (%s, layer %d)",
					      s, mgl_ops[st->op].name, st->layer);
				head_gemms += st->layer < 0, layer_gemms += st->layer >= 0;
			} else if (st->fuse >= 0 && st->fuse < s) {
				ck_assert_int_eq(kind[s], kind[st->fuse]);
				epilogue_steps += mgl_ops[b.p->steps[st->fuse].op].kind == MGL_KIND_GEMM;
				bias_sums += b.p->steps[st->fuse].op == MGL_OP_ATTENTION_BWD_QKV;
			} else {
				ck_assert_msg(kind[s] == own, "step %d (%s)", s, mgl_ops[st->op].name);
			}
		}
		/* the logits, their gradient through the tied table and to ln_f */
		ck_assert_int_eq(head_gemms, 3);
		ck_assert_int_eq(layer_gemms, gemms[t]);
		/* two layers' attention and its backward, and the bias_grads that join the latter
		 * (q, k and v's, summed by it: where hfuse.c made one attention_bwd_qkv) */
		ck_assert_int_eq(bias_sums, ts[t].sp ? 0 : 2);
		ck_assert(count[MGL_KIND_ATTENTION] == 4 + bias_sums && count[MGL_KIND_OPTIMIZER] > 0 && count[MGL_KIND_LAYERNORM] > 0);
		ck_assert_int_eq(count[MGL_KIND_COLLECTIVE] > 0, ts[t].tp > 1);
		ck_assert_msg(epilogue_steps == epilogue[t], "target %zu: %d steps of epilogues", t, epilogue_steps);
		free(kind);
		build_free(&b);
	}
}
END_TEST

/* ---------------------------------------------------------------- the text form */

/* The reader holds steps to the shapes the runtimes index by: a GEMM whose output is not
 * the product's shape, and a tp all-gather along a dimension its values do not have, are
 * refused with the step's values named (the plan written from memory, damaged there). */
START_TEST(plan_refuses_bad_shapes)
{
	Build b;
	MglTarget tg = target(2, true);
	tg.seq = 64;
	build(&b, "models/gpt2.mgl", "tiny", tg);
	ck_assert_msg(b.p, "%s", b.diag);
	MglArena a = {0};
	size_t n;
	int mm = -1, ag = -1, ln = -1, other = -1;
	for (int s = 0; s < b.p->nsteps; s++) {
		const MglStep *st = &b.p->steps[s];
		mm = mm < 0 && st->op == MGL_OP_MATMUL ? s : mm;
		ag = ag < 0 && st->op == MGL_OP_ALL_GATHER && st->attr.group == MGL_GROUP_TP ? s : ag;
		ln = ln < 0 && st->op == MGL_OP_LAYERNORM_BWD ? s : ln;
	}
	ck_assert(mm >= 0 && ag >= 0 && ln >= 0);
	const MglValue *y = &b.p->values[b.p->steps[mm].out[0]];
	for (int v = 0; v < b.p->nvalues && other < 0; v++)   /* an activation of another width */
		if (b.p->values[v].role == MGL_V_ACT && b.p->values[v].rank == y->rank &&
		    b.p->values[v].shape[y->rank - 1] != y->shape[y->rank - 1])
			other = v;
	ck_assert_int_ge(other, 0);
	int keep = b.p->steps[mm].out[0];
	b.p->steps[mm].out[0] = other;
	char *t = write_plan(b.p, &n);
	assert_read_refuses(&a, t, n, "t.plan", "matmul: the shapes of");
	free(t);
	b.p->steps[mm].out[0] = keep;
	double dim = b.p->steps[ag].attr.dim;
	b.p->steps[ag].attr.dim = MGL_PLAN_MAX_RANK;   /* past the rank of its [batch, seq, d] values */
	t = write_plan(b.p, &n);
	assert_read_refuses(&a, t, n, "t.plan", "are not a tp-th and the whole of one tensor");
	free(t);
	b.p->steps[ag].attr.dim = dim;
	b.p->steps[ln].in[1] = other;   /* x of another width than its dy, dx and weight */
	t = write_plan(b.p, &n);
	assert_read_refuses(&a, t, n, "t.plan", "layernorm_bwd: the values' shapes do not follow");
	free(t);
	mgl_arena_free(&a);
	build_free(&b);
}
END_TEST

/* The backward of attention's q, k and v (compiler/hfuse.c): an attention_bwd_qkv a layer
 * whose [B, S, 3 D] output one matmul_dx, one matmul_dw and one bias_grad read, over spans
 * whose members lie end to end in their order; at tp 1 and 2 and in BERT, not under dp 2,
 * --sp, ZeRO-1 or MGL_NO_HFUSE, nor in LLaMA (rope stands between attention and its
 * linears). The reader refuses a span that does not end at a member's end, one of one
 * member, one of another width or not starting at a member, one in a plan with sp, an
 * attention_bwd_qkv output of another width and a log-sum-exp that is not f32. */
START_TEST(attention_projections_backward_as_one_gemm)
{
	static const struct {
		const char *model, *env;
		int tp, dp, zero;
		bool sp, formed;
	} cases[] = {
		{"models/gpt2.mgl", NULL, 1, 1, 0, false, true},  {"models/gpt2.mgl", NULL, 2, 1, 0, false, true},
		{"models/bert.mgl", NULL, 1, 1, 0, false, true},  {"models/gpt2.mgl", NULL, 2, 1, 0, true, false},
		{"models/gpt2.mgl", NULL, 1, 2, 0, false, false}, {"models/gpt2.mgl", NULL, 1, 2, 1, false, false},
		{"models/llama.mgl", NULL, 1, 1, 0, false, false}, {"models/gpt2.mgl", "MGL_NO_HFUSE", 1, 1, 0, false, false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		MglTarget t = {.tp = cases[i].tp, .dp = cases[i].dp, .zero = cases[i].zero, .sp = cases[i].sp, .batch = 2,
			       .seq = 64, .act_dtype = MGL_BF16};
		Build b;
		if (cases[i].env)
			setenv(cases[i].env, "1", 1);
		build(&b, cases[i].model, "tiny", t);
		if (cases[i].env)
			unsetenv(cases[i].env);
		ck_assert_msg(b.p, "%s", b.diag);
		const MglPlan *p = b.p;
		int qkv = 0;
		for (int s = 0; s < p->nsteps; s++) {
			if (p->steps[s].op != MGL_OP_ATTENTION_BWD_QKV)
				continue;
			qkv++;
			int readers[MGL_OP_COUNT] = {0}, y = p->steps[s].out[0];
			for (int u = 0; u < p->nsteps; u++)
				for (int k = 0; k < p->steps[u].nin; k++)
					readers[p->steps[u].op] += p->steps[u].in[k] == y;
			ck_assert(readers[MGL_OP_MATMUL_DX] == 1 && readers[MGL_OP_MATMUL_DW] == 1 && readers[MGL_OP_BIAS_GRAD] == 1);
			ck_assert_int_eq(p->values[y].shape[2], 3 * p->values[p->steps[s].in[1]].shape[2]);
		}
		ck_assert_msg(qkv == (cases[i].formed ? p->nlayers : 0), "case %zu: %d", i, qkv);
		int spans = 0, first = -1;   /* (not counting the forward's layout spans, value -1: the test below) */
		for (int k = 0; k < p->nspans; k++) {
			const MglSpan *sp = &p->spans[k];
			if (sp->value < 0)
				continue;
			spans++;
			first = first < 0 ? k : first;
			const MglValue *w = &p->values[sp->value];
			int64_t at = w->offset;
			ck_assert(sp->n == 3 && w->param < 0);
			for (int m = 0; m < sp->n; m++) {
				const MglValue *x = &p->values[sp->member[m]];
				ck_assert(x->offset == at && x->role == w->role && x->param >= 0);
				at += mgl_value_bytes(x);
			}
			ck_assert_int_eq(at, w->offset + mgl_value_bytes(w));
		}
		ck_assert_int_eq(spans, 3 * qkv);
		if (i == 0) {   /* damage: the reader's checks */
			MglArena a = {0};
			size_t n;
			MglValue *w = &b.p->values[b.p->spans[first].value];
			int y = -1;
			for (int s = 0; s < p->nsteps && y < 0; s++)
				y = p->steps[s].op == MGL_OP_ATTENTION_BWD_QKV ? p->steps[s].out[0] : -1;
			struct { int64_t *field, by; const char *want; } damage[] = {
				{&w->shape[0], -1, "is a span (of no parameter) but not 2 to 4 whole"},
				{&w->shape[0], -w->shape[0] / 3 * 2, "is a span (of no parameter) but not 2 to 4 whole"},
				{&w->shape[w->rank - 1], -1, "spans no parameter's"},
				{&w->offset, 16, "spans no parameter's"},
				{&b.p->values[y].shape[2], -16, "attention_bwd_qkv: the values' shapes do not follow q's"},
			};
			for (size_t d = 0; d < sizeof damage / sizeof damage[0]; d++) {
				*damage[d].field += damage[d].by;
				char *text = write_plan(b.p, &n);
				assert_read_refuses(&a, text, n, "t.plan", damage[d].want);
				free(text);
				*damage[d].field -= damage[d].by;
			}
			int qkv_step = 0;
			while (p->steps[qkv_step].op != MGL_OP_ATTENTION_BWD_QKV)
				qkv_step++;
			MglValue *lse = &b.p->values[p->steps[qkv_step].in[5]];
			lse->dtype = MGL_BF16;   /* the kernels write and read it as f32 */
			char *text = write_plan(b.p, &n), err[256];
			assert_read_refuses(&a, text, n, "t.plan", "(lse f32, the mask i32)");
			free(text);
			lse->dtype = MGL_F32;
			b.p->sp = true;   /* a span where collectives act one parameter at a time */
			text = write_plan(b.p, &n);
			assert_read_refuses(&a, text, n, "t.plan", "which a plan at dp > 1, with sp or ZeRO may not have");
			free(text);
			b.p->sp = false;
			text = write_plan(b.p, &n);
			ck_assert_msg(mgl_plan_read(&a, text, n, "t.plan", err, sizeof err), "%s", err);
			free(text);
			mgl_arena_free(&a);
		}
		build_free(&b);
	}
}
END_TEST

/* The forward of attention's q, k and v (compiler/hfuse.c): with the
 * backward's spans, two layout spans a layer (value -1): the three biases (parameters) and
 * the three outputs (activations), each member right after the one before at its exact
 * size, from steps that run as three groups in a row of [matmul of one x, bias_add], as the
 * cuda backend finds them to batch (runtime/cuda/ops.c, qkv_batches); the plan still reads
 * back. Under MGL_NO_QKV_FWD=1, none. */
START_TEST(attention_projections_forward_laid_end_to_end)
{
	for (int tp = 1; tp <= 2; tp++)
		for (int on = 0; on < 2; on++) {
			MglTarget t = {.tp = tp, .dp = 1, .batch = 2, .seq = 64, .act_dtype = MGL_BF16};
			Build b;
			if (!on)
				setenv("MGL_NO_QKV_FWD", "1", 1);
			build(&b, "models/gpt2.mgl", "tiny", t);
			unsetenv("MGL_NO_QKV_FWD");
			ck_assert_msg(b.p, "%s", b.diag);
			const MglPlan *p = b.p;
			int layout = 0;
			for (int k = 0; k < p->nspans; k++) {
				const MglSpan *sp = &p->spans[k];
				if (sp->value >= 0)
					continue;
				layout++;
				const MglValue *m0 = &p->values[sp->member[0]];
				ck_assert(sp->n == 3 && (m0->role == MGL_V_PARAM || m0->role == MGL_V_ACT));
				for (int m = 1; m < sp->n; m++) {
					const MglValue *x = &p->values[sp->member[m]], *before = &p->values[sp->member[m - 1]];
					ck_assert_msg(x->offset == before->offset + mgl_value_bytes(before), "span %d member %d", k, m);
					ck_assert(x->role == m0->role && x->dtype == m0->dtype && mgl_value_bytes(x) == mgl_value_bytes(m0));
				}
				if (m0->role != MGL_V_ACT)
					continue;
				int s = 0;   /* the outputs' bias_adds: three groups in a row from s */
				while (s < p->nsteps && !(p->steps[s].op == MGL_OP_BIAS_ADD && p->steps[s].out[0] == sp->member[0]))
					s++;
				ck_assert(s >= 1 && s + 4 < p->nsteps);
				for (int i = 0; i < 3; i++) {
					const MglStep *mm = &p->steps[s - 1 + 2 * i], *ba = mm + 1;
					ck_assert(mm->op == MGL_OP_MATMUL && ba->op == MGL_OP_BIAS_ADD && ba->in[0] == mm->out[0]);
					ck_assert(ba->out[0] == sp->member[i] && mm->in[0] == p->steps[s - 1].in[0]);
					ck_assert(mgl_group_end(p, s - 1 + 2 * i) == s + 2 * i);
				}
			}
			ck_assert_msg(layout == (on ? 2 * p->nlayers : 0), "tp %d: %d layout spans", tp, layout);
			MglArena a = {0};
			size_t n;
			char *text = write_plan(b.p, &n), err[256];
			ck_assert_msg(mgl_plan_read(&a, text, n, "t.plan", err, sizeof err), "%s", err);
			free(text);
			mgl_arena_free(&a);
			build_free(&b);
		}
}
END_TEST

/* bf16 weight gradients (the target's bf16_grads, compiler/adamw.c): in GPT-2 tiny at tp 1
 * and 2, each linear's weight gradient, which one matmul_dw writes, is bf16; the biases',
 * the norms', wpe's (embedding_bwd's) and the tied wte's (two writers) stay f32, as does
 * every gradient at dp 2, in an f32 plan, and without the flag. q, k and v's weight
 * gradients still form one GEMM's span (hfuse.c), in bf16. Read back from a file the plan
 * stands; the reader refuses a bf16 gradient that a column sum writes, and one in a plan of
 * f32 activations. */
START_TEST(bf16_weight_gradients)
{
	for (int tp = 1; tp <= 2; tp++)
		for (int k = 0; k < 4; k++) {   /* the flag; dp 2; f32; no flag */
			MglTarget t = target(tp, false);
			t.seq = 64, t.bf16_grads = k < 3, t.dp = k == 1 ? 2 : 1, t.act_dtype = k == 2 ? MGL_F32 : MGL_BF16;
			Build b;
			build(&b, "models/gpt2.mgl", "tiny", t);
			ck_assert_msg(b.p, "%s", b.diag);
			int n16 = 0;
			for (int i = 0; i < b.p->nparams; i++) {
				const MglPlanParam *q = &b.p->params[i];
				bool linear = q->rank == 2 && strcmp(q->name, "wte") && strcmp(q->name, "wpe");
				ck_assert_msg((b.p->values[q->grad].dtype == MGL_BF16) == (linear && k == 0), "tp %d case %d: %s's gradient %s",
					      tp, k, q->name, mgl_dtype_name[b.p->values[q->grad].dtype]);
				n16 += linear && k == 0;
			}
			ck_assert_int_eq(n16, k == 0 ? 2 * 6 : 0);   /* two layers of q, k, v, o, fc, proj */
			for (int v = 0; tp == 1 && k == 0 && v < b.p->nvalues; v++)   /* the spans of hfuse.c */
				if (b.p->values[v].role == MGL_V_GRAD && b.p->values[v].param < 0 && b.p->values[v].rank == 2) {
					ck_assert_int_eq(b.p->values[v].dtype, MGL_BF16);
					n16 = -1;
				}
			ck_assert(tp != 1 || k != 0 || n16 == -1);
			if (k == 0 || k == 2) {
				size_t n;
				char err[300], *text = write_plan(b.p, &n);
				MglArena a = {0};
				ck_assert_msg(mgl_plan_read(&a, text, n, "t.plan", err, sizeof err), "%s", err);
				/* the first bias's gradient (k 0), or a linear's (k 2), in bf16 (its byte
				 * count stays: room for either) */
				char *line = strstr(text, k == 0 ? "grad:layers.0.mlp.fc.bias f32 " : "grad:layers.0.mlp.fc.weight f32 ");
				ck_assert_ptr_nonnull(line);
				char *at = strstr(line, " f32 "), *bad = malloc(n + 2);
				size_t head = (size_t)(at - text);
				memcpy(bad, text, head);
				memcpy(bad + head, " bf16 ", 6);
				memcpy(bad + head + 6, at + 5, n - head - 5 + 1);
				assert_read_refuses(&a, bad, n + 1, "t.plan",
						    k == 0 ? "bf16, which only one matmul_dw writing it may make it"
							   : "bf16, which only a plan of bf16 activations at dp 1 may have");
				free(bad);
				free(text);
				mgl_arena_free(&a);
			}
			build_free(&b);
		}
}
END_TEST

START_TEST(plan_round_trip)
{
	static const MglTarget ts[] = {
		{.tp = 1, .dp = 1, .batch = 2, .seq = 64, .act_dtype = MGL_F32},
		{.tp = 4, .dp = 2, .sp = true, .batch = 2, .seq = 64, .act_dtype = MGL_BF16},
	};
	for (int m = 0; m < 2; m++)
		for (int k = 0; k < 2; k++) {
			Build b;
			build(&b, m ? "models/bert.mgl" : "models/gpt2.mgl", "tiny", ts[k]);
			ck_assert_msg(b.p, "%s", b.diag);
			size_t n1, n2;
			char *t1 = write_plan(b.p, &n1);
			MglArena a = {0};
			char err[256];
			MglPlan *q = mgl_plan_read(&a, t1, n1, "t.plan", err, sizeof err);
			ck_assert_msg(q, "%s", err);
			char *t2 = write_plan(q, &n2);
			ck_assert_int_eq(n1, n2);
			ck_assert(!memcmp(t1, t2, n1));
			ck_assert_int_eq(q->nsteps, b.p->nsteps);
			ck_assert_int_eq(q->tp, ts[k].tp);
			/* what the runtime allocates for parameters, gradients and optimizer state */
			for (int role = 0; role < MGL_V_ROLE_COUNT; role++)
				ck_assert_int_eq(q->persistent_bytes[role], b.p->persistent_bytes[role]);
			/* the plan names its loss (what the model returns) and the logits of its loss */
			ck_assert_int_eq(q->loss, b.p->loss);
			ck_assert_str_eq(q->values[q->loss].name, m ? "add1" : "cross_entropy");
			ck_assert_str_eq(q->values[q->logits].name, m ? "mlm_logits" : "logits");
			free(t1);
			free(t2);
			mgl_arena_free(&a);
			build_free(&b);
		}
}
END_TEST

START_TEST(plan_refuses_damage)
{
	Build b;
	MglTarget t0 = target(2, false);
	t0.seq = 64;
	build(&b, "models/gpt2.mgl", "tiny", t0);
	ck_assert_ptr_nonnull(b.p);
	size_t n;
	char *t = write_plan(b.p, &n);
	MglArena a = {0};
	char err[256];
	/* truncated anywhere: refused, never a crash */
	for (size_t cut = 0; cut < n; cut += n / 97 + 1)
		ck_assert_ptr_null(mgl_plan_read(&a, t, cut, "t.plan", err, sizeof err));
	ck_assert_ptr_null(mgl_plan_read(&a, t, n - 4, "t.plan", err, sizeof err));
	ck_assert_msg(strstr(err, "t.plan:") && (strstr(err, "truncated") || strstr(err, "expected")), "%s", err);
	/* another version */
	char *v2 = strdup(t);
	v2[9] = '7';
	assert_read_refuses(&a, v2, n, "t.plan", "t.plan:1: this plan is version 7; this mgl reads version 2");
	free(v2);
	/* a step that reads a value that does not exist */
	char *bad = malloc(n + 16);
	char *s0 = strstr(t, "\ns 0 ");
	ck_assert_ptr_nonnull(s0);
	char *in = strchr(s0 + 5, ' ') + 1;   /* after the phase */
	in = strchr(in, ' ') + 1;             /* after the op: the inputs */
	size_t pre = (size_t)(in - t);
	memcpy(bad, t, pre);
	size_t k = pre + (size_t)sprintf(bad + pre, "99999999");
	const char *rest = strchr(in, ' ');
	memcpy(bad + k, rest, n - (size_t)(rest - t));
	k += n - (size_t)(rest - t);
	assert_read_refuses(&a, bad, k, "t.plan", "does not exist");
	/* a step with the wrong number of inputs for its op: the runtime would read past them */
	char *mm = strstr(t, " matmul ");
	ck_assert_ptr_nonnull(mm);
	char *ins = mm + 8, *comma = strchr(ins, ','), *sp = strchr(ins, ' ');
	ck_assert(comma && comma < sp);
	size_t keep = (size_t)(comma - t);
	memcpy(bad, t, keep);
	memcpy(bad + keep, sp, n - (size_t)(sp - t));   /* "matmul A,B OUT" -> "matmul A OUT" */
	k = keep + n - (size_t)(sp - t);
	assert_read_refuses(&a, bad, k, "t.plan", "matmul takes 2 to 2 inputs and 1 output, not 1 and 1");
	/* fused groups the cuda backend could not run as marked: a gelu epilogue with no gelu */
	char *epi = strstr(t, " epi=1\n");
	ck_assert_ptr_nonnull(epi);
	memcpy(bad, t, n);
	bad[epi - t + 5] = '3';
	assert_read_refuses(&a, bad, n, "t.plan",
			    "the fused groups are wrong: steps 7 to 8 are fused, but cannot run as one GEMM");
	/* the loss must be a scalar activation */
	char *loss = strstr(t, "\nloss ");
	ck_assert_ptr_nonnull(loss);
	memcpy(bad, t, n);
	memcpy(bad + (loss - t), "\nloss 0", 7);   /* wte */
	for (char *q = bad + (loss - t) + 7; *q != '\n'; q++)
		*q = '0';
	assert_read_refuses(&a, bad, n, "t.plan", "t.plan:14: the loss, value %0, is not a scalar activation");
	/* attributes by name: a layer norm's epsilon is eps, in (0, 1) */
	char *eps = strstr(t, " eps=");
	ck_assert_ptr_nonnull(eps);
	memcpy(bad, t, n);
	memcpy(bad + (eps - t), " p=  ", 5);
	assert_read_refuses(&a, bad, n, "t.plan", "expected 'eps='");
	memcpy(bad + (eps - t), " eps=1e+05", 10);   /* was 1e-05 */
	assert_read_refuses(&a, bad, n, "t.plan", "eps must be a small positive number, not '1e+05'");
	/* values where the cuda kernels' 16-byte loads can reach them: wpe at 32768 + 8 */
	char *wpe = strstr(t, " wpe f32 [64,64] R 32768 ");
	ck_assert_ptr_nonnull(wpe);
	memcpy(bad, t, n);
	memcpy(bad + (wpe - t) + 19, "32776", 5);
	assert_read_refuses(&a, bad, n, "t.plan", "value %2 is at offset 32,776, not a multiple of 16");
	free(bad);
	free(t);
	mgl_arena_free(&a);
	build_free(&b);
}
END_TEST

/* ZeRO-1 and recomputation round-trip; the reader refuses moments that are not the dp
 * piece, ZeRO's collectives in a plan without zero 1, zero 1 with one dp rank, a ZeRO
 * optimizer without its final all-gather or its norm summed over dp, and an unknown
 * recomputation. */
START_TEST(zero_and_recompute_plans)
{
	MglTarget t = {.tp = 2, .dp = 3, .zero = 1, .recompute = MGL_RECOMPUTE_FULL, .batch = 2, .seq = 64,
		       .act_dtype = MGL_BF16};
	Build b;
	build(&b, "models/gpt2.mgl", "tiny", t);
	ck_assert_msg(b.p, "%s", b.diag);
	ck_assert_int_eq(b.p->zero, 1);
	size_t n, n2;
	char *text = write_plan(b.p, &n);
	ck_assert_ptr_nonnull(strstr(text, "\nsp 0\nzero 1\nrecompute full\nbatch 2\n"));
	MglArena a = {0};
	char err[256];
	MglPlan *q = mgl_plan_read(&a, text, n, "z.plan", err, sizeof err);
	ck_assert_msg(q, "%s", err);
	ck_assert_int_eq(q->zero, 1);
	ck_assert_int_eq(q->recompute, MGL_RECOMPUTE_FULL);
	char *t2 = write_plan(q, &n2);
	ck_assert_int_eq(n, n2);
	ck_assert(!memcmp(text, t2, n));
	free(t2);
	/* the moments of wte (its tp shard: [V/2, 64]) are a third of it, rounded up */
	const MglPlanParam *wte = &q->params[0];
	int64_t shard = mgl_numel(&q->values[wte->value]);
	ck_assert_int_eq(mgl_numel(&q->values[wte->m]), (shard + 2) / 3);
	char *bad = malloc(n + 64);
	/* damage: moments of another size */
	char line[128];
	snprintf(line, sizeof line, " m:%s f32 [%lld] ", wte->name, (long long)((shard + 2) / 3));
	char *m = strstr(text, line);
	ck_assert_ptr_nonnull(m);
	size_t at = (size_t)(m - text) + strlen(line) - 3;   /* the last digit of the size */
	memcpy(bad, text, n);
	bad[at] = bad[at] == '9' ? '8' : (char)(bad[at] + 1);
	assert_read_refuses(&a, bad, n, "z.plan", "the AdamW moments of parameter 'wte' hold");
	/* zero 1 with one dp rank */
	char *dp = strstr(text, "\ndp 3\n");
	memcpy(bad, text, n);
	bad[dp - text + 4] = '1';
	assert_read_refuses(&a, bad, n, "z.plan", "z.plan:8: zero 1 shards the optimizer over dp, and this plan has dp 1");
	/* an unknown recomputation */
	char *rc = strstr(text, "recompute full");
	memcpy(bad, text, n);
	memcpy(bad + (rc - text) + 10, "most", 4);
	assert_read_refuses(&a, bad, n, "z.plan", "unknown recomputation 'most'");
	/* the line zero 1 dropped: the moments are pieces of what the plan now says is whole */
	char *z = strstr(text, "zero 1\n");
	memcpy(bad, text, (size_t)(z - text));
	memcpy(bad + (z - text), z + 7, n - (size_t)(z - text) - 7);
	assert_read_refuses(&a, bad, n - 7, "z.plan",
			    "the AdamW moments of parameter 'wte' hold 2,731 elements, not 8,192 (zero 0, dp 3)");
	/* the last step, the all-gather of the updated parameters, dropped (and the count of
	 * steps made one less): each rank would keep the others' pieces stale */
	char *ag = strstr(text, " opt all_gather "), *eend = strstr(text, "\nend\n");
	ck_assert_ptr_nonnull(ag);
	while (ag[-1] != '\n')
		ag--;
	ck_assert_ptr_eq(strchr(ag, '\n'), eend);   /* the last step */
	char was[32], now[32];
	snprintf(was, sizeof was, "\nsteps %d\n", q->nsteps);
	snprintf(now, sizeof now, "\nsteps %d\n", q->nsteps - 1);
	char *st = strstr(text, was);
	ck_assert_ptr_nonnull(st);
	ck_assert_uint_eq(strlen(was), strlen(now));
	size_t head = (size_t)(ag - text), tail = n - (size_t)(eend + 1 - text);
	memcpy(bad, text, head);
	memcpy(bad + (st - text), now, strlen(now));
	memcpy(bad + head, eend + 1, tail);
	assert_read_refuses(&a, bad, head + tail, "z.plan",
			    "parameter 'wte' is never all-gathered over dp after adamw (zero 1: its optimizer must "
			    "reduce-scatter its gradient over dp, update its piece with adamw, and all-gather it over dp)");
	/* the norm summed over tp only (its dp all-reduce made a tp one): each rank would clip by its pieces' */
	char *dpsum = strstr(text, " opt all_reduce ");
	ck_assert_ptr_nonnull(dpsum);
	dpsum = strstr(dpsum + 1, " opt all_reduce ");   /* tp's, then dp's */
	ck_assert_ptr_nonnull(dpsum);
	char *g = strstr(dpsum, "group=1");
	ck_assert_ptr_nonnull(g);
	memcpy(bad, text, n);
	bad[g - text + 6] = '0';
	assert_read_refuses(&a, bad, n, "z.plan", "adamw clips parameter 'wte' with a gradient norm not summed over dp");
	/* the norm's dp all-reduce a max, not a sum */
	ck_assert(!strncmp(g, "group=1 max=0", 13));
	memcpy(bad, text, n);
	bad[g - text + 12] = '1';
	assert_read_refuses(&a, bad, n, "z.plan", "adamw clips parameter 'wte' with a gradient norm not summed over dp");
	free(bad);
	free(text);
	mgl_arena_free(&a);
	build_free(&b);
}
END_TEST

/* A plan of version 1 (step attributes index and p, each with two meanings) is refused
 * with the file, the line and what to do. */
START_TEST(old_plan_is_refused)
{
	const char *v1 = "mgl-plan 1\nmodel gpt2\npreset tiny\nsource models/gpt2.mgl\ntp 1\n";
	MglArena a = {0};
	char err[256];
	ck_assert_ptr_null(mgl_plan_read(&a, v1, strlen(v1), "old.plan", err, sizeof err));
	ck_assert_str_eq(err, "old.plan:1: this plan is version 1; this mgl reads version 2 (compile it again with this mgl)");
	mgl_arena_free(&a);
}
END_TEST

/* ---------------------------------------------------------------- errors and speed */

START_TEST(heads_must_divide_tp)
{
	Build b;
	build(&b, "models/gpt2.mgl", "124m", target(8, false));
	ck_assert_ptr_null(b.p);
	ck_assert_int_eq(b.status, 1);
	ck_assert_msg(strstr(b.diag, "gpt2.mgl:38:7: error: 12 heads cannot be split over --tp 8"), "%s", b.diag);
	ck_assert_msg(strstr(b.diag, "hint: --tp must divide 12: 1, 2, 3, 4, 6, 12"), "%s", b.diag);
	build_free(&b);
}
END_TEST

START_TEST(compile_8_3b_at_tp8_is_fast)
{
	MglTarget t = {.tp = 8, .dp = 1, .batch = 8, .seq = 1024, .act_dtype = MGL_BF16};
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	Build b;
	build(&b, "models/gpt2.mgl", "8.3b", t);
	size_t n;
	char *text = write_plan(b.p, &n);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
	ck_assert_ptr_nonnull(b.p);
	/* 0.5 s on CI's two cores; sanitizers slow everything ~5x, hence the env override */
	const char *lim = getenv("MGL_COMPILE_LIMIT");
	double limit = lim ? atof(lim) : 0.5;
	ck_assert_msg(secs < limit, "compiling 8.3b at tp 8 took %.3f s", secs);
	free(text);
	build_free(&b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("plan");
	TCase *coll = tcase_create("collectives"), *mem = tcase_create("memory"), *text = tcase_create("text"),
	      *misc = tcase_create("misc");
	tcase_add_test(coll, two_all_reduces_per_layer);
	tcase_add_test(coll, sequence_parallel_has_no_all_reduce_per_layer);
	tcase_add_test(coll, tp1_has_no_collectives);
	tcase_add_test(coll, vocabulary_padding_and_shards);
	tcase_add_test(coll, data_parallel_buckets);
	tcase_add_test(mem, activation_memory_within_megatron);
	tcase_add_test(mem, memory_plan_is_sound);
	tcase_add_test(mem, memory_plan_check_refuses_overlap);
	tcase_add_test(mem, fusion_is_decided_for_the_dtype);
	tcase_add_test(mem, gemms_add_the_residual_and_the_gradients);
	tcase_add_test(mem, matmul_dx_applies_the_gelu_derivative);
	tcase_add_test(mem, norm_backward_adds_the_residual);
	tcase_add_test(mem, optimizer_is_one_group);
	tcase_add_test(mem, softmax_statistics_are_one_pass);
	tcase_add_test(mem, qkv_bias_sums_ride_the_attention_backward);
	tcase_add_test(mem, bf16_weight_gradients);
	tcase_add_test(mem, collectives_overlap_the_weight_gradients);
	tcase_add_test(mem, segments_end_after_collectives);
	tcase_add_test(mem, swiglu_backward_is_one_chain);
	tcase_add_test(mem, step_kinds);
	tcase_add_test(text, plan_round_trip);
	tcase_add_test(text, attention_projections_backward_as_one_gemm);
	tcase_add_test(text, attention_projections_forward_laid_end_to_end);
	tcase_add_test(text, plan_refuses_damage);
	tcase_add_test(text, plan_refuses_bad_shapes);
	tcase_add_test(text, old_plan_is_refused);
	tcase_add_test(text, zero_and_recompute_plans);
	tcase_add_test(text, zero_and_recompute_memory);
	tcase_add_test(misc, heads_must_divide_tp);
	tcase_add_test(misc, compile_8_3b_at_tp8_is_fast);
	TCase *all[] = {coll, mem, text, misc};
	for (int i = 0; i < 4; i++) {
		tcase_set_timeout(all[i], 300);
		suite_add_tcase(s, all[i]);
	}
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
