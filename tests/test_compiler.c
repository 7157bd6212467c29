/* tests/test_compiler.c — Check suites for the compiler front end: lexer, parser and
 * elaborator, driven from strings so each test shows its input next to its assertions.
 * The error *texts* are covered by the golden tests (tests/golden/); here we assert
 * structure: token kinds, precedence, shapes, parameter names and counts, the limits. */
#include "mgl.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

/* One compilation of a string; diagnostics collected in diag. */
typedef struct {
	MglCtx c;
	char *diag;
	size_t diaglen;
	MglGraph *g;
	MglTok *toks;
	int ntoks;
	int status;
} Run;

static void run_free(Run *r)
{
	mgl_arena_free(&r->c.arena);
	free(r->diag);
}

enum { LEX, PARSE, ELAB };

static void run(Run *r, int upto, const char *text, const char *preset, const char *set)
{
	memset(r, 0, sizeof *r);
	r->c.out = open_memstream(&r->diag, &r->diaglen);
	jmp_buf jb;
	r->c.fail = &jb;
	if (!setjmp(jb)) {
		MglSource *src = mgl_source_from_string(&r->c, "t.mgl", text, false);
		if (upto == LEX) {
			r->toks = mgl_lex(&r->c, src, &r->ntoks);
		} else {
			MglFile *f = mgl_parse(&r->c, src);
			if (upto == ELAB) {
				MglOptions opt = {.preset = preset};
				if (set)
					opt.overrides = mgl_source_from_string(&r->c, "--set", set, true);
				r->g = mgl_elaborate(&r->c, f, &opt);
			}
		}
	} else {
		r->status = r->c.status;
	}
	fclose(r->c.out);
}

#define ck_error(r, st, text) do {                                                   \
	ck_assert_int_eq((r)->status, (st));                                         \
	ck_assert_msg(strstr((r)->diag, (text)), "expected '%s' in:\n%s", (text), (r)->diag); \
} while (0)

static const MglParam *param(const MglGraph *g, const char *name)
{
	for (int i = 0; i < g->nparams; i++)
		if (!strcmp(g->params[i].name, name))
			return &g->params[i];
	return NULL;
}

static MglGraph *compile_model(Run *r, const char *path, const char *preset, const char *set)
{
	memset(r, 0, sizeof *r);
	r->c.out = open_memstream(&r->diag, &r->diaglen);
	MglOptions opt = {.preset = preset};
	jmp_buf jb;
	r->c.fail = &jb;
	if (set && !setjmp(jb))
		opt.overrides = mgl_source_from_string(&r->c, "--set", set, true);
	r->g = mgl_compile_file(&r->c, path, &opt);
	fclose(r->c.out);
	ck_assert_msg(r->g, "%s --preset %s failed:\n%s", path, preset ? preset : "-", r->diag);
	return r->g;
}

/* ---------------------------------------------------------------- lexer */

START_TEST(lex_kinds)
{
	Run r;
	run(&r, LEX, "config { a = 1.5e3 b = 12 } preset 1.5b { } # comment\n/* x\n y */ @row", NULL, NULL);
	ck_assert_int_eq(r.status, 0);
	MglTokKind want[] = {MGL_TK_CONFIG, MGL_TK_LBRACE, MGL_TK_IDENT, MGL_TK_ASSIGN, MGL_TK_REAL,
			     MGL_TK_IDENT, MGL_TK_ASSIGN, MGL_TK_INT, MGL_TK_RBRACE, MGL_TK_PRESET,
			     MGL_TK_WORD, MGL_TK_LBRACE, MGL_TK_RBRACE, MGL_TK_AT, MGL_TK_IDENT, MGL_TK_EOF};
	ck_assert_int_eq(r.ntoks, (int)(sizeof want / sizeof want[0]));
	for (int i = 0; i < r.ntoks; i++)
		ck_assert_int_eq(r.toks[i].kind, want[i]);
	ck_assert_double_eq(r.toks[4].rval, 1500.0);
	ck_assert_int_eq(r.toks[7].ival, 12);
	/* '@' sits on line 3 after a two-line block comment */
	ck_assert_int_eq(r.toks[13].line, 3);
	ck_assert_int_eq(r.toks[13].col, 7);
	run_free(&r);
}
END_TEST

START_TEST(lex_errors)
{
	Run r;
	run(&r, LEX, "a = 99999999999999999999", NULL, NULL);
	ck_error(&r, 1, "t.mgl:1:5: error: integer 99999999999999999999 is too large");
	run_free(&r);
	run(&r, LEX, "a = 1\n  /* never closed", NULL, NULL);
	ck_error(&r, 1, "t.mgl:2:3: error: unterminated comment");
	run_free(&r);
	run(&r, LEX, "a = \xc3\x97", NULL, NULL);
	ck_error(&r, 1, "unexpected character '\xc3\x97' (U+00D7)");
	run_free(&r);
	run(&r, LEX, "a = \x01", NULL, NULL);
	ck_error(&r, 1, "unexpected byte 0x01");
	run_free(&r);
}
END_TEST

START_TEST(lex_nul_inside)
{
	/* a NUL before the end is a bad byte, not the end of the file */
	Run r;
	memset(&r, 0, sizeof r);
	r.c.out = open_memstream(&r.diag, &r.diaglen);
	jmp_buf jb;
	r.c.fail = &jb;
	static const char text[] = "a = 1\0 b = 2";
	MglSource src = {.name = "t.mgl", .text = text, .len = sizeof text - 1};
	if (!setjmp(jb))
		mgl_lex(&r.c, &src, &r.ntoks);
	else
		r.status = r.c.status;
	fclose(r.c.out);
	ck_error(&r, 1, "t.mgl:1:6: error: unexpected byte 0x00");
	run_free(&r);
}
END_TEST

/* ---------------------------------------------------------------- parser */

START_TEST(parse_precedence)
{
	Run r;
	memset(&r, 0, sizeof r);
	char *dump = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&dump, &n);
	jmp_buf jb;
	r.c.fail = &jb;
	r.c.out = stderr;
	if (!setjmp(jb)) {
		MglSource *src = mgl_source_from_string(&r.c, "t.mgl",
			"config { a = 1 + 2 * 3 - -4 / (5 - 6) }\n"
			"model m(x: i32[batch]) { y = linear(x, a, bias: false) @column\n return y }", false);
		mgl_dump_ast(f, mgl_parse(&r.c, src));
	}
	fclose(f);
	ck_assert_msg(strstr(dump, "a = (- (+ 1 (* 2 3)) (/ (- 4) (- 5 6)))"), "%s", dump);
	ck_assert_msg(strstr(dump, "y = (@column (linear x a bias: false))"), "%s", dump);
	free(dump);
	mgl_arena_free(&r.c.arena);
}
END_TEST

START_TEST(parse_depth_limit)
{
	/* 10,000 nested parentheses: an error, not a stack overflow */
	size_t n = 10000;
	char *text = malloc(4 * n + 64);
	char *p = text + sprintf(text, "config { a = ");
	for (size_t i = 0; i < n; i++)
		*p++ = '(';
	*p++ = '1';
	for (size_t i = 0; i < n; i++)
		*p++ = ')';
	strcpy(p, " }");
	Run r;
	run(&r, PARSE, text, NULL, NULL);
	ck_error(&r, 1, "nested too deeply");
	run_free(&r);
	free(text);
}
END_TEST

/* ---------------------------------------------------------------- elaboration */

START_TEST(gpt2_parameter_counts)
{
	/* the published GPT-2 checkpoints (tied embeddings, vocabulary 50257, 1024 positions) */
	static const struct { const char *preset; int64_t count; int64_t layers, d; } want[] = {
		{"124m", 124439808, 12, 768},
		{"355m", 354823168, 24, 1024},
		{"774m", 774030080, 36, 1280},
		{"1.5b", 1557611200, 48, 1600},
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		Run r;
		MglGraph *g = compile_model(&r, "models/gpt2.mgl", want[i].preset, NULL);
		ck_assert_int_eq(mgl_param_count(g), want[i].count);
		ck_assert_int_eq(g->layers, want[i].layers);
		const MglParam *q = param(g, "layers.0.attention.q.weight");
		ck_assert_ptr_nonnull(q);
		ck_assert_int_eq(q->shape.d[0].n, want[i].d);
		run_free(&r);
	}
}
END_TEST

/* LLaMA's counts from its sizes: per layer q, k, v, o (d x d), gate, up, down (d x ffn) and
 * two norms' gains; the embedding and the untied output layer (vocab x d), the last norm.
 * No biases. LLaMA 7B is the paper's 6.7B. */
START_TEST(llama_parameter_counts)
{
	static const struct { const char *preset; int64_t vocab, d, layers, ffn; } want[] = {
		{"1b", 32000, 2048, 16, 5632},
		{"7b", 32000, 4096, 32, 11008},
		{"tiny", 256, 64, 2, 176},
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		int64_t V = want[i].vocab, d = want[i].d, L = want[i].layers, f = want[i].ffn;
		Run r;
		MglGraph *g = compile_model(&r, "models/llama.mgl", want[i].preset, NULL);
		ck_assert_int_eq(mgl_param_count(g), L * (4 * d * d + 3 * d * f + 2 * d) + 2 * V * d + d);
		ck_assert_int_eq(g->layers, L);
		ck_assert_ptr_null(param(g, "layers.0.attention.q.bias"));
		ck_assert_ptr_null(param(g, "layers.0.attention.norm.bias"));
		const MglParam *gate = param(g, "layers.0.mlp.gate.weight"), *down = param(g, "layers.0.mlp.down.weight"),
			       *head = param(g, "logits.weight");
		ck_assert(gate && down && head);
		ck_assert(gate->split == MGL_SPLIT_COLUMN && gate->shape.d[0].n == f);
		ck_assert(down->split == MGL_SPLIT_ROW && down->split_dim == 1);
		ck_assert(head->split == MGL_SPLIT_COLUMN && head->shape.d[0].n == V);   /* untied, by vocabulary */
		run_free(&r);
	}
	Run r;
	ck_assert_int_eq(mgl_param_count(compile_model(&r, "models/llama.mgl", "7b", NULL)), 6738415616);
	run_free(&r);
}
END_TEST

START_TEST(every_preset_checks)
{
	static const struct { const char *model, *preset; } all[] = {
		{"models/gpt2.mgl", "124m"}, {"models/gpt2.mgl", "355m"}, {"models/gpt2.mgl", "774m"},
		{"models/gpt2.mgl", "1.5b"}, {"models/gpt2.mgl", "1.2b"}, {"models/gpt2.mgl", "2.5b"},
		{"models/gpt2.mgl", "4.2b"}, {"models/gpt2.mgl", "8.3b"}, {"models/gpt2.mgl", "tiny"},
		{"models/bert.mgl", "336m"}, {"models/bert.mgl", "1.3b"}, {"models/bert.mgl", "3.9b"},
		{"models/bert.mgl", "tiny"}, {"models/llama.mgl", "7b"}, {"models/llama.mgl", "1b"},
		{"models/llama.mgl", "tiny"},
	};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
		Run r;
		compile_model(&r, all[i].model, all[i].preset, NULL);
		run_free(&r);
	}
	/* the Megatron paper's 8.3B: within 0.5% of its name */
	Run r;
	MglGraph *g = compile_model(&r, "models/gpt2.mgl", "8.3b", NULL);
	ck_assert_int_ge(mgl_param_count(g), 8260000000);
	ck_assert_int_le(mgl_param_count(g), 8340000000);
	run_free(&r);
}
END_TEST

START_TEST(gpt2_names_splits_shapes)
{
	Run r;
	MglGraph *g = compile_model(&r, "models/gpt2.mgl", "tiny", NULL);
	const MglParam *wte = param(g, "wte"), *fc = param(g, "layers.1.mlp.fc.weight"),
		       *fcb = param(g, "layers.1.mlp.fc.bias"), *proj = param(g, "layers.1.mlp.proj.weight"),
		       *projb = param(g, "layers.1.mlp.proj.bias");
	ck_assert_ptr_nonnull(wte);
	ck_assert_ptr_nonnull(fc);
	ck_assert_ptr_nonnull(fcb);
	ck_assert_ptr_nonnull(proj);
	ck_assert_ptr_nonnull(projb);
	ck_assert_ptr_null(param(g, "layers.2.mlp.fc.weight"));
	ck_assert_int_eq(wte->split, MGL_SPLIT_ROW);
	ck_assert_int_eq(wte->split_dim, 0);
	ck_assert_int_eq(fc->split, MGL_SPLIT_COLUMN);
	ck_assert_int_eq(fc->split_dim, 0);         /* output features of [ffn, d] */
	ck_assert_int_eq(fc->shape.d[0].n, 256);
	ck_assert_int_eq(fcb->split, MGL_SPLIT_COLUMN);
	ck_assert_int_eq(proj->split, MGL_SPLIT_ROW);
	ck_assert_int_eq(proj->split_dim, 1);       /* input features of [d, ffn] */
	ck_assert_int_eq(projb->split, MGL_SPLIT_NONE);
	/* the loss is a scalar fed by logits [batch, seq, vocab] from the tied linear */
	const MglNode *loss = &g->nodes[g->loss];
	ck_assert_int_eq(loss->op, MGL_OP_CROSS_ENTROPY);
	ck_assert_int_eq(loss->shape.rank, 0);
	const MglNode *logits = &g->nodes[loss->in[0]];
	ck_assert_int_eq(logits->op, MGL_OP_LINEAR);
	ck_assert_int_eq(logits->in[1], wte->node);
	ck_assert_int_eq(logits->shape.rank, 3);
	ck_assert_int_eq(logits->shape.d[2].n, 256);
	ck_assert_str_eq(g->syms[logits->shape.d[0].sym].name, "batch");
	ck_assert_str_eq(g->syms[logits->shape.d[1].sym].name, "seq");
	ck_assert_int_eq(g->syms[logits->shape.d[1].sym].max, 64);
	/* 2 layers x (3 q/k/v + o + fc + proj) + the tied logits */
	int linears = 0, attns = 0;
	for (int i = 0; i < g->nnodes; i++) {
		linears += g->nodes[i].op == MGL_OP_LINEAR;
		attns += g->nodes[i].op == MGL_OP_ATTENTION && g->nodes[i].attr.causal && g->nodes[i].attr.heads == 4;
	}
	ck_assert_int_eq(linears, 13);
	ck_assert_int_eq(attns, 2);
	run_free(&r);
}
END_TEST

START_TEST(bert_heads)
{
	Run r;
	MglGraph *g = compile_model(&r, "models/bert.mgl", "tiny", NULL);
	const MglParam *b = param(g, "mlm_logits.bias");
	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(b->split, MGL_SPLIT_ROW);  /* split with the vocabulary */
	ck_assert_int_eq(param(g, "sop.weight")->shape.d[0].n, 2);
	ck_assert_int_eq(g->ninputs, 5);
	int masked = 0;
	for (int i = 0; i < g->nnodes; i++)
		masked += g->nodes[i].op == MGL_OP_ATTENTION && g->nodes[i].nin == 4 && !g->nodes[i].attr.causal;
	ck_assert_int_eq(masked, 2);
	run_free(&r);
}
END_TEST

/* dropout with probability 0 is the identity: no node, and nothing in the backward */
START_TEST(dropout_zero_is_gone)
{
	for (int zero = 0; zero < 2; zero++) {
		Run r;
		MglGraph *g = compile_model(&r, "models/gpt2.mgl", "tiny", zero ? "p_drop = 0" : NULL);
		int dropouts = 0;
		for (int i = 0; i < g->nnodes; i++)
			dropouts += g->nodes[i].op == MGL_OP_DROPOUT;
		if (zero)
			ck_assert_int_eq(dropouts, 0);
		else
			ck_assert_int_gt(dropouts, 0);
		run_free(&r);
	}
}
END_TEST

static const char *tiny_model =
	"config { v = 16  d = 8  n = 2  heads = 2 }\n"
	"preset big { d = 16  n = 3 }\n"
	"block layer(x) { h = linear(x, d * 2) @column\n return x + linear(gelu(h), d) @row }\n"
	"model m(tokens: i32[batch, seq]) {\n"
	"  w = param([v, d]) @row\n"
	"  x = embedding(w, tokens)\n"
	"  repeat n { x = layer(x) }\n"
	"  return cross_entropy(linear(x, w), tokens)\n"
	"}\n";

START_TEST(config_overrides)
{
	Run r;
	run(&r, ELAB, tiny_model, NULL, NULL);
	ck_assert_ptr_nonnull(r.g);
	int64_t base = mgl_param_count(r.g);
	ck_assert_int_eq(base, 16 * 8 + 2 * (8 * 16 + 16 + 16 * 8 + 8));
	ck_assert_ptr_nonnull(param(r.g, "n.1.layer.h.weight"));
	ck_assert_ptr_nonnull(param(r.g, "n.1.layer.linear.weight"));  /* nested: named after the op */
	run_free(&r);
	/* preset, then --set on top; --set may use other keys */
	run(&r, ELAB, tiny_model, "big", "n=1,v=d*4");
	ck_assert_msg(r.g, "%s", r.diag);
	ck_assert_int_eq(r.g->layers, 1);
	ck_assert_int_eq(param(r.g, "w")->shape.d[0].n, 64);
	ck_assert_int_eq(param(r.g, "w")->shape.d[1].n, 16);
	run_free(&r);
	run(&r, ELAB, tiny_model, NULL, "nn=3");
	ck_error(&r, 2, "--set:1:1: error: --set sets 'nn', which is not in the config");
	ck_assert_ptr_nonnull(strstr(r.diag, "did you mean 'n'?"));
	run_free(&r);
	run(&r, ELAB, tiny_model, "bigg", NULL);
	ck_error(&r, 2, "has no preset 'bigg'");
	run_free(&r);
}
END_TEST

START_TEST(config_arithmetic)
{
	Run r;
	run(&r, ELAB,
	    "config { a = 7 / 2  b = 8 / 2  c = b * 3 - 1  e = 1e-5  f = c }\n"
	    "model m(x: i32[batch]) { return cross_entropy(linear(embedding(param([4, 4]), x), f), x) }", NULL, NULL);
	ck_assert_msg(r.g, "%s", r.diag);
	ck_assert(!r.g->config[0].is_int);
	ck_assert_double_eq(r.g->config[0].r, 3.5);
	ck_assert(r.g->config[1].is_int);
	ck_assert_int_eq(r.g->config[1].i, 4);
	ck_assert_int_eq(r.g->config[2].i, 11);
	ck_assert_double_eq_tol(r.g->config[3].r, 1e-5, 1e-12);
	run_free(&r);
	run(&r, ELAB, "config { a = b  b = c  c = a }\nmodel m(x: i32[batch]) { return x }", NULL, NULL);
	ck_error(&r, 1, "config 'a' depends on itself: a -> b -> c -> a");
	run_free(&r);
	run(&r, ELAB, "config { a = 9223372036854775807 + 1 }\nmodel m(x: i32[batch]) { return x }", NULL, NULL);
	ck_error(&r, 1, "integer overflow");
	run_free(&r);
}
END_TEST

/* Inputs built to take forever or exhaust memory end in an error, quickly. */
/* Inputs that ask for unbounded work are stopped by a limit on the work itself (statements
 * run, operations made, elements of a tensor), whatever the machine's speed or load: each
 * must fail with the message of the limit that bounds it, the limit's value in it. The
 * limits are small enough that reaching one costs well under a second and 200 MB. */
START_TEST(hostile_sizes)
{
	char work[64], nodes[64];
	snprintf(work, sizeof work, "more than %s statements run", mgl_commas(MGL_MAX_WORK, (char[32]){0}));
	snprintf(nodes, sizeof nodes, "more than %s operations", mgl_commas(MGL_MAX_NODES, (char[32]){0}));
	static const char *cases[] = {
		/* 2^40 statements through nested repeats */
		"model m(x: f32[batch]) { repeat 1048576 { repeat 1048576 { y = x } } return x }",
		/* a block doubling its work 40 times */
		"block b0(x) { return x + x }\n"
		"block b1(x) { return b0(x) + b0(x) }\nblock b2(x) { return b1(x) + b1(x) }\n"
		"block b3(x) { return b2(x) + b2(x) }\nblock b4(x) { return b3(x) + b3(x) }\n"
		"block b5(x) { return b4(x) + b4(x) }\nblock b6(x) { return b5(x) + b5(x) }\n"
		"model m(x: f32[batch]) { repeat 1000000 { x = b6(x) } return x }",
		/* a parameter of 2^93 elements */
		"model m(x: f32[batch]) { w = param([2147483647, 2147483647, 2147483647]) return x }",
	};
	const char *limit[] = {work, nodes, "more than 2^40 elements"};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		Run r;
		run(&r, ELAB, cases[i], NULL, NULL);
		/* look, free, then assert: a failed assertion leaves the test at once */
		int status = r.status;
		bool stopped = strstr(r.diag, limit[i]) != NULL;
		char diag[512];
		snprintf(diag, sizeof diag, "%s", r.diag);
		run_free(&r);
		ck_assert_msg(status == 1 && stopped, "case %zu: wanted status 1 and '%s', got %d:\n%s", i, limit[i],
			      status, diag);
	}
}
END_TEST

START_TEST(closest_names)
{
	const char *cands[] = {"layernorm", "linear", "gelu", "dropout"};
	ck_assert_str_eq(mgl_closest("lnear", 5, cands, 4), "linear");
	ck_assert_str_eq(mgl_closest("layer_norm", 10, cands, 4), "layernorm");
	ck_assert_ptr_null(mgl_closest("softmax", 7, cands, 4));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("compiler");
	TCase *lex = tcase_create("lex"), *parse = tcase_create("parse"), *elab = tcase_create("elaborate");
	tcase_add_test(lex, lex_kinds);
	tcase_add_test(lex, lex_errors);
	tcase_add_test(lex, lex_nul_inside);
	tcase_add_test(parse, parse_precedence);
	tcase_add_test(parse, parse_depth_limit);
	tcase_add_test(elab, gpt2_parameter_counts);
	tcase_add_test(elab, llama_parameter_counts);
	tcase_add_test(elab, every_preset_checks);
	tcase_add_test(elab, gpt2_names_splits_shapes);
	tcase_add_test(elab, bert_heads);
	tcase_add_test(elab, dropout_zero_is_gone);
	tcase_add_test(elab, config_overrides);
	tcase_add_test(elab, config_arithmetic);
	tcase_add_test(elab, hostile_sizes);
	tcase_add_test(elab, closest_names);
	tcase_set_timeout(elab, 120);
	suite_add_tcase(s, lex);
	suite_add_tcase(s, parse);
	suite_add_tcase(s, elab);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
