/* compiler/parse.c — recursive descent from tokens to the AST (MglFile).
 *
 * Each function parses one rule of grammar/mgl.ebnf, written above it. The parser only
 * checks form; names, arguments and shapes are the elaborator's business, so that every
 * error of meaning is reported in one place, with the whole model in view.
 *
 * Nesting is bounded (MGL_MAX_DEPTH) so a hostile file cannot exhaust the stack.
 */
#include "mgl.h"

#include <string.h>

typedef struct {
	MglCtx *c;
	MglTok *toks;
	int pos, n;
	int depth;
} Parser;

static const MglTok *peek(Parser *P) { return &P->toks[P->pos]; }
static bool at(Parser *P, MglTokKind k) { return P->toks[P->pos].kind == k; }

static const MglTok *next(Parser *P)
{
	const MglTok *t = &P->toks[P->pos];
	if (t->kind != MGL_TK_EOF)
		P->pos++;
	return t;
}

static bool accept(Parser *P, MglTokKind k)
{
	if (!at(P, k))
		return false;
	next(P);
	return true;
}

static _Noreturn void unexpected(Parser *P, const char *what)
{
	const MglTok *t = peek(P);
	if (t->kind == MGL_TK_EOF)
		mgl_error(P->c, t, "expected %s, but %s ends here", what, t->src->cmdline ? t->src->name : "the file");
	mgl_error(P->c, t, "expected %s, found '%.*s'", what, t->len, t->p);
}

/* The file ended inside braces: say where they were opened. */
static _Noreturn void unclosed(Parser *P, const MglTok *open)
{
	mgl_report(P->c, "error", peek(P), "expected '}', but the file ends here");
	mgl_report(P->c, "note", open, "to close this '{'");
	mgl_fail(P->c);
}

static const MglTok *expect(Parser *P, MglTokKind k, const char *what)
{
	if (!at(P, k))
		unexpected(P, what ? what : mgl_tok_desc[k]);
	return next(P);
}

static void enter(Parser *P)
{
	if (++P->depth > MGL_MAX_DEPTH)
		mgl_error(P->c, peek(P), "nested too deeply (more than %d levels)", MGL_MAX_DEPTH);
}

/* An operator chain (a + b + c ..., x @a @b ...) makes a tree as deep as it is long, and
 * every later pass walks it recursively: so its length counts as nesting too. */
static void chain(Parser *P, int n)
{
	if (P->depth + n > MGL_MAX_DEPTH)
		mgl_error(P->c, peek(P), "expression too long (more than %d operators in a row)", MGL_MAX_DEPTH);
}

static MglExpr *new_expr(Parser *P, MglNodeKind kind, const MglTok *tok)
{
	MglExpr *e = mgl_alloc(&P->c->arena, sizeof *e);
	e->kind = kind;
	e->tok = tok;
	return e;
}

static MglExpr *expr(Parser *P);

/* args = [ arg { "," arg } [","] ]      arg = [ IDENT ":" ] expr      (up to the closer) */
static void args(Parser *P, MglExpr *e, MglTokKind closer, bool keywords)
{
	int cap = 0;
	while (!at(P, closer)) {
		MglArg a = {0};
		if (keywords && at(P, MGL_TK_IDENT) && P->toks[P->pos + 1].kind == MGL_TK_COLON) {
			a.key = next(P);
			next(P);
		}
		a.value = expr(P);
		MGL_PUSH(&P->c->arena, e->args, e->nargs, cap, a);
		if (!accept(P, MGL_TK_COMMA))
			break;
	}
	expect(P, closer, closer == MGL_TK_RPAREN ? "',' or ')'" : "',' or ']'");
}

/* primary = INT | REAL | "true" | "false" | IDENT [ "(" args ")" ]
 *         | "(" expr ")" | "[" [ expr { "," expr } ] "]" */
static MglExpr *primary(Parser *P)
{
	const MglTok *t = peek(P);
	MglExpr *e;
	switch (t->kind) {
	case MGL_TK_INT:
		e = new_expr(P, MGL_N_INT, next(P));
		e->ival = t->ival;
		return e;
	case MGL_TK_REAL:
		e = new_expr(P, MGL_N_REAL, next(P));
		e->rval = t->rval;
		return e;
	case MGL_TK_TRUE:
	case MGL_TK_FALSE:
		e = new_expr(P, MGL_N_BOOL, next(P));
		e->ival = t->kind == MGL_TK_TRUE;
		return e;
	case MGL_TK_IDENT:
		next(P);
		if (accept(P, MGL_TK_LPAREN)) {
			e = new_expr(P, MGL_N_CALL, t);
			e->name = t;
			args(P, e, MGL_TK_RPAREN, true);
			return e;
		}
		e = new_expr(P, MGL_N_NAME, t);
		e->name = t;
		return e;
	case MGL_TK_LPAREN:
		next(P);
		e = expr(P);
		expect(P, MGL_TK_RPAREN, "')'");
		return e;
	case MGL_TK_LBRACKET:
		e = new_expr(P, MGL_N_LIST, next(P));
		args(P, e, MGL_TK_RBRACKET, false);
		return e;
	case MGL_TK_WORD:
		mgl_error(P->c, t, "'%.*s' is not a number or a name", t->len, t->p);
	default:
		unexpected(P, "an expression");
	}
}

/* postfix = primary { "@" IDENT } */
static MglExpr *postfix(Parser *P)
{
	MglExpr *e = primary(P);
	for (int n = 0; at(P, MGL_TK_AT); n++) {
		chain(P, n);
		next(P);
		MglExpr *a = new_expr(P, MGL_N_ANNOT, e->tok);
		a->lhs = e;
		a->name = expect(P, MGL_TK_IDENT, "an annotation (column, row or replicate) after '@'");
		e = a;
	}
	return e;
}

/* unary = "-" unary | postfix */
static MglExpr *unary(Parser *P)
{
	if (at(P, MGL_TK_MINUS)) {
		MglExpr *e = new_expr(P, MGL_N_NEG, next(P));
		enter(P);
		e->lhs = unary(P);
		P->depth--;
		return e;
	}
	return postfix(P);
}

static MglExpr *binop(Parser *P, MglExpr *lhs, MglExpr *(*operand)(Parser *))
{
	const MglTok *t = next(P);
	MglExpr *e = new_expr(P, MGL_N_BINOP, lhs->tok);
	e->name = t;
	e->op = *t->p;
	e->lhs = lhs;
	e->rhs = operand(P);
	return e;
}

/* term = unary { ("*" | "/") unary } */
static MglExpr *term(Parser *P)
{
	MglExpr *e = unary(P);
	for (int n = 0; at(P, MGL_TK_STAR) || at(P, MGL_TK_SLASH); n++) {
		chain(P, n);
		e = binop(P, e, unary);
	}
	return e;
}

/* expr = term { ("+" | "-") term } */
static MglExpr *expr(Parser *P)
{
	enter(P);
	MglExpr *e = term(P);
	for (int n = 0; at(P, MGL_TK_PLUS) || at(P, MGL_TK_MINUS); n++) {
		chain(P, n);
		e = binop(P, e, term);
	}
	P->depth--;
	return e;
}

/* binding = IDENT "=" expr [ "," | ";" ] */
static MglBinding binding(Parser *P)
{
	MglBinding b;
	b.key = expect(P, MGL_TK_IDENT, "a name");
	expect(P, MGL_TK_ASSIGN, "'='");
	b.value = expr(P);
	if (!accept(P, MGL_TK_COMMA))
		accept(P, MGL_TK_SEMI);
	return b;
}

/* bindings = "{" { binding } "}" */
static void bindings(Parser *P, MglBinding **v, int *n)
{
	int cap = 0;
	const MglTok *open = expect(P, MGL_TK_LBRACE, "'{'");
	while (!accept(P, MGL_TK_RBRACE)) {
		if (at(P, MGL_TK_EOF))
			unclosed(P, open);
		MGL_PUSH(&P->c->arena, *v, *n, cap, binding(P));
	}
}

static void stmts(Parser *P, MglStmt **v, int *n, const MglTok **end, bool in_repeat);

/* stmt = IDENT "=" expr | "repeat" expr "{" { stmt } "}" | "return" expr */
static MglStmt stmt(Parser *P, bool in_repeat)
{
	MglStmt s = {0};
	s.tok = peek(P);
	if (accept(P, MGL_TK_REPEAT)) {
		s.kind = MGL_S_REPEAT;
		s.value = expr(P);
		enter(P);
		stmts(P, &s.body, &s.nbody, NULL, true);
		P->depth--;
	} else if (at(P, MGL_TK_RETURN)) {
		if (in_repeat)
			mgl_error(P->c, s.tok, "return inside a repeat");
		next(P);
		s.kind = MGL_S_RETURN;
		s.value = expr(P);
	} else if (at(P, MGL_TK_IDENT)) {
		s.kind = MGL_S_ASSIGN;
		next(P);
		if (!at(P, MGL_TK_ASSIGN))
			mgl_error(P->c, peek(P), "expected '=' after '%.*s': a statement is `name = value`, "
				  "`repeat N { ... }` or `return value`", s.tok->len, s.tok->p);
		next(P);
		s.value = expr(P);
	} else {
		unexpected(P, "a statement (name = value, repeat or return)");
	}
	if (!accept(P, MGL_TK_SEMI))
		accept(P, MGL_TK_COMMA);
	return s;
}

/* body = "{" { stmt } "}"      (return is last, and not inside a repeat) */
static void stmts(Parser *P, MglStmt **v, int *n, const MglTok **end, bool in_repeat)
{
	int cap = 0;
	const MglTok *open = expect(P, MGL_TK_LBRACE, "'{'");
	while (!at(P, MGL_TK_RBRACE)) {
		if (at(P, MGL_TK_EOF))
			unclosed(P, open);
		if (*n && (*v)[*n - 1].kind == MGL_S_RETURN)
			mgl_error(P->c, peek(P), "a statement after return is never run");
		MGL_PUSH(&P->c->arena, *v, *n, cap, stmt(P, in_repeat));
	}
	const MglTok *close = next(P);
	if (end)
		*end = close;
}

/* input = IDENT ":" IDENT "[" [ dim { "," dim } ] "]"      dim = IDENT | INT */
static MglInput input(Parser *P)
{
	MglInput in = {0};
	in.name = expect(P, MGL_TK_IDENT, "an input name");
	expect(P, MGL_TK_COLON, "':' and a type such as i32[batch, seq]");
	in.dtype = expect(P, MGL_TK_IDENT, "a type such as i32[batch, seq]");
	expect(P, MGL_TK_LBRACKET, "'[' and the input's dimensions");
	while (!at(P, MGL_TK_RBRACKET)) {
		if (!at(P, MGL_TK_IDENT) && !at(P, MGL_TK_INT))
			unexpected(P, "a dimension (a name or an integer)");
		if (in.rank == MGL_MAX_RANK)
			mgl_error(P->c, peek(P), "an input has at most %d dimensions", MGL_MAX_RANK);
		in.dims[in.rank++] = next(P);
		if (!accept(P, MGL_TK_COMMA))
			break;
	}
	expect(P, MGL_TK_RBRACKET, "',' or ']'");
	return in;
}

/* block = "block" IDENT "(" [ IDENT { "," IDENT } ] ")" body
 * model = "model" IDENT "(" [ input { "," input } ] ")" body */
static void block(Parser *P, MglBlock *b, bool is_model)
{
	int cap = 0;
	b->name = expect(P, MGL_TK_IDENT, is_model ? "the model's name" : "the block's name");
	expect(P, MGL_TK_LPAREN, "'('");
	while (!at(P, MGL_TK_RPAREN)) {
		if (is_model) {
			MGL_PUSH(&P->c->arena, b->inputs, b->ninputs, cap, input(P));
		} else {
			const MglTok *t = expect(P, MGL_TK_IDENT, "a parameter name");
			MGL_PUSH(&P->c->arena, b->params, b->nparams, cap, t);
		}
		if (!accept(P, MGL_TK_COMMA))
			break;
	}
	expect(P, MGL_TK_RPAREN, "',' or ')'");
	stmts(P, &b->body, &b->nbody, &b->end, false);
}

/* file = { "config" bindings | "preset" (IDENT | WORD | INT) bindings | block | model } EOF */
MglFile *mgl_parse(MglCtx *c, const MglSource *src)
{
	Parser P = {.c = c};
	P.toks = mgl_lex(c, src, &P.n);
	MglFile *f = mgl_alloc(&c->arena, sizeof *f);
	f->src = src;
	int cap_presets = 0, cap_blocks = 0;
	const MglTok *config_tok = NULL;
	while (!at(&P, MGL_TK_EOF)) {
		const MglTok *t = next(&P);
		switch (t->kind) {
		case MGL_TK_CONFIG:
			if (config_tok) {
				mgl_report(c, "error", t, "a second 'config' section");
				mgl_report(c, "note", config_tok, "the first is here");
				mgl_hint(c, "put every setting in one config section; presets change them");
				mgl_fail(c);
			}
			config_tok = t;
			bindings(&P, &f->config, &f->nconfig);
			break;
		case MGL_TK_PRESET: {
			MglPreset pr = {0};
			if (!at(&P, MGL_TK_IDENT) && !at(&P, MGL_TK_WORD) && !at(&P, MGL_TK_INT))
				unexpected(&P, "a preset name such as tiny or 124m");
			pr.name = next(&P);
			bindings(&P, &pr.set, &pr.nset);
			MGL_PUSH(&c->arena, f->presets, f->npresets, cap_presets, pr);
			break;
		}
		case MGL_TK_BLOCK: {
			MglBlock b = {0};
			block(&P, &b, false);
			MGL_PUSH(&c->arena, f->blocks, f->nblocks, cap_blocks, b);
			break;
		}
		case MGL_TK_MODEL:
			if (f->model) {
				mgl_report(c, "error", t, "a second model in one file");
				mgl_report(c, "note", f->model->name, "the first is here");
				mgl_fail(c);
			}
			f->model = mgl_alloc(&c->arena, sizeof *f->model);
			block(&P, f->model, true);
			break;
		default:
			P.pos--;
			unexpected(&P, "'config', 'preset', 'block' or 'model'");
		}
	}
	if (!f->model) {
		const MglTok *eof = peek(&P);
		if (src->len == 0)
			mgl_error(c, eof, "the file is empty");
		mgl_report(c, "error", eof, "no model in this file");
		mgl_hint(c, "a model file needs `model NAME(inputs) { ... return loss }`");
		mgl_fail(c);
	}
	return f;
}

/* overrides = binding { binding }      (the text of --set, commas between) */
MglBinding *mgl_parse_overrides(MglCtx *c, const MglSource *src, int *n)
{
	Parser P = {.c = c};
	P.toks = mgl_lex(c, src, &P.n);
	MglBinding *v = NULL;
	int cap = 0;
	*n = 0;
	do
		MGL_PUSH(&c->arena, v, *n, cap, binding(&P));
	while (!at(&P, MGL_TK_EOF));
	return v;
}

/* ---------------------------------------------------------------- dump (--dump=ast) */

static void dump_expr(FILE *f, const MglExpr *e)
{
	switch (e->kind) {
	case MGL_N_INT:  fprintf(f, "%lld", (long long)e->ival); break;
	case MGL_N_REAL: fprintf(f, "%g", e->rval); break;
	case MGL_N_BOOL: fputs(e->ival ? "true" : "false", f); break;
	case MGL_N_NAME: fprintf(f, "%.*s", e->name->len, e->name->p); break;
	case MGL_N_NEG:  fputs("(- ", f); dump_expr(f, e->lhs); fputc(')', f); break;
	case MGL_N_BINOP:
		fprintf(f, "(%c ", e->op);
		dump_expr(f, e->lhs);
		fputc(' ', f);
		dump_expr(f, e->rhs);
		fputc(')', f);
		break;
	case MGL_N_ANNOT:
		fprintf(f, "(@%.*s ", e->name->len, e->name->p);
		dump_expr(f, e->lhs);
		fputc(')', f);
		break;
	case MGL_N_CALL:
	case MGL_N_LIST:
		if (e->kind == MGL_N_CALL)
			fprintf(f, "(%.*s", e->name->len, e->name->p);
		else
			fputs("[", f);
		for (int i = 0; i < e->nargs; i++) {
			fputs(e->kind == MGL_N_CALL || i ? " " : "", f);
			if (e->args[i].key)
				fprintf(f, "%.*s: ", e->args[i].key->len, e->args[i].key->p);
			dump_expr(f, e->args[i].value);
		}
		fputs(e->kind == MGL_N_CALL ? ")" : "]", f);
		break;
	}
}

static void dump_stmts(FILE *f, const MglStmt *s, int n, int indent)
{
	for (int i = 0; i < n; i++) {
		fprintf(f, "%*s", indent, "");
		switch (s[i].kind) {
		case MGL_S_ASSIGN: fprintf(f, "%.*s = ", s[i].tok->len, s[i].tok->p); break;
		case MGL_S_RETURN: fputs("return ", f); break;
		case MGL_S_REPEAT: fputs("repeat ", f); break;
		}
		dump_expr(f, s[i].value);
		fputc('\n', f);
		if (s[i].kind == MGL_S_REPEAT)
			dump_stmts(f, s[i].body, s[i].nbody, indent + 2);
	}
}

static void dump_bindings(FILE *f, const MglBinding *b, int n)
{
	for (int i = 0; i < n; i++) {
		fprintf(f, "  %.*s = ", b[i].key->len, b[i].key->p);
		dump_expr(f, b[i].value);
		fputc('\n', f);
	}
}

void mgl_dump_ast(FILE *f, const MglFile *file)
{
	fputs("config\n", f);
	dump_bindings(f, file->config, file->nconfig);
	for (int i = 0; i < file->npresets; i++) {
		const MglPreset *p = &file->presets[i];
		fprintf(f, "preset %.*s\n", p->name->len, p->name->p);
		dump_bindings(f, p->set, p->nset);
	}
	for (int i = 0; i <= file->nblocks; i++) {
		const MglBlock *b = i < file->nblocks ? &file->blocks[i] : file->model;
		fprintf(f, "%s %.*s(", i < file->nblocks ? "block" : "model", b->name->len, b->name->p);
		for (int j = 0; j < b->nparams; j++)
			fprintf(f, "%s%.*s", j ? ", " : "", b->params[j]->len, b->params[j]->p);
		for (int j = 0; j < b->ninputs; j++) {
			const MglInput *in = &b->inputs[j];
			fprintf(f, "%s%.*s: %.*s[", j ? ", " : "", in->name->len, in->name->p,
				in->dtype->len, in->dtype->p);
			for (int k = 0; k < in->rank; k++)
				fprintf(f, "%s%.*s", k ? ", " : "", in->dims[k]->len, in->dims[k]->p);
			fputc(']', f);
		}
		fputs(")\n", f);
		dump_stmts(f, b->body, b->nbody, 2);
	}
}
