/* grammar/mgl.re — the lexer: a model file's bytes to tokens. re2c generates build/lex.c.
 *
 * The whole file is scanned at once into an array, so the parser can look ahead freely.
 * The source text ends with a NUL byte (mgl_read_file guarantees it) that serves as re2c's
 * sentinel; a NUL before the end is a bad character like any other.
 *
 * Tokens: names, integers, reals, preset names such as 124m or 1.5b (WORD), keywords and
 * punctuation. Comments run from '#' to the end of the line, or between slash-star and
 * star-slash (they do not nest).
 */
#include "mgl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *const mgl_tok_desc[MGL_TK_COUNT] = {
#define X(id, desc) desc,
	MGL_TOKENS(X)
#undef X
};

static const struct { const char *word; MglTokKind kind; } keywords[] = {
	{"config", MGL_TK_CONFIG}, {"preset", MGL_TK_PRESET}, {"block", MGL_TK_BLOCK},
	{"model", MGL_TK_MODEL},   {"repeat", MGL_TK_REPEAT}, {"return", MGL_TK_RETURN},
	{"true", MGL_TK_TRUE},     {"false", MGL_TK_FALSE},
};

typedef struct {
	MglCtx *c;
	const MglSource *src;
	const char *line_start;
	int line;
	MglTok *toks;
	int n, cap;
} Lexer;

static MglTok make(Lexer *L, MglTokKind kind, const char *p, const char *end)
{
	MglTok t = {0};
	t.kind = kind;
	t.src = L->src;
	t.p = p;
	t.len = (int)(end - p);
	t.line = L->line;
	t.col = (int)(p - L->line_start) + 1;
	return t;
}

/* A bad byte, named the way a person would recognize it: printable as itself, a UTF-8
 * character as its code point, anything else in hex. */
static _Noreturn void bad_char(Lexer *L, const char *p)
{
	unsigned char ch = (unsigned char)*p;
	MglTok t = make(L, MGL_TK_EOF, p, p + 1);
	if (ch >= 0x20 && ch < 0x7f)
		mgl_error(L->c, &t, "unexpected character '%c'", ch);
	if (ch >= 0xC2 && ch <= 0xF4) {
		int n = ch >= 0xF0 ? 3 : ch >= 0xE0 ? 2 : 1;
		uint32_t cp = ch & (0x3F >> n);
		const char *q = p + 1;
		for (int i = 0; i < n && ((unsigned char)*q & 0xC0) == 0x80; i++, q++)
			cp = cp << 6 | ((unsigned char)*q & 0x3F);
		if (q == p + 1 + n) {
			t.len = n + 1;
			mgl_error(L->c, &t, "unexpected character '%.*s' (U+%04X)", n + 1, p, (unsigned)cp);
		}
	}
	mgl_error(L->c, &t, "unexpected byte 0x%02x", ch);
}

static void push(Lexer *L, MglTok t)
{
	MGL_PUSH(&L->c->arena, L->toks, L->n, L->cap, t);
}

static void newline(Lexer *L, const char *after)
{
	L->line++;
	L->line_start = after;
}

MglTok *mgl_lex(MglCtx *c, const MglSource *src, int *count)
{
	Lexer L = {.c = c, .src = src, .line_start = src->text, .line = 1};
	const char *cur = src->text, *end = src->text + src->len;
	const char *mar, *tok;
	(void)mar;

	for (;;) {
		tok = cur;
		/*!re2c
		re2c:define:YYCTYPE = "unsigned char";
		re2c:define:YYCURSOR = "cur";
		re2c:define:YYMARKER = "mar";
		re2c:yyfill:enable = 0;

		digits = [0-9]+;
		exp    = [eE] [+-]? digits;
		real   = digits "." [0-9]* exp? | "." digits exp? | digits exp;
		ident  = [a-zA-Z_] [a-zA-Z0-9_]*;
		word   = digits ("." digits)? [a-zA-Z_] [a-zA-Z0-9_]*;

		"\x00" {
			if (tok != end)
				bad_char(&L, tok);
			push(&L, make(&L, MGL_TK_EOF, tok, tok));
			*count = L.n;
			return L.toks;
		}
		[ \t\r\f\v]+ { continue; }
		"\n"         { newline(&L, cur); continue; }
		"#" [^\n\x00]* { continue; }
		"/*" {
			MglTok open = make(&L, MGL_TK_EOF, tok, tok + 2);   /* before the line count moves */
			for (;;) {
				if (cur >= end)
					mgl_error(c, &open, "unterminated comment");
				if (cur[0] == '*' && cur[1] == '/') {
					cur += 2;
					break;
				}
				if (*cur == '\n')
					newline(&L, cur + 1);
				cur++;
			}
			continue;
		}
		digits {
			MglTok t = make(&L, MGL_TK_INT, tok, cur);
			int64_t v = 0;
			for (const char *q = tok; q < cur; q++) {
				if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *q - '0', &v))
					mgl_error(c, &t, "integer %.*s is too large (the largest is 2^63-1)", t.len, tok);
			}
			t.ival = v;
			push(&L, t);
			continue;
		}
		real {
			MglTok t = make(&L, MGL_TK_REAL, tok, cur);
			char buf[64];
			if (t.len >= (int)sizeof buf)
				mgl_error(c, &t, "number has too many digits");
			memcpy(buf, tok, (size_t)t.len);
			buf[t.len] = 0;
			errno = 0;
			t.rval = strtod(buf, NULL);
			if (errno == ERANGE && (t.rval > 1 || t.rval < -1))
				mgl_error(c, &t, "number %s is too large", buf);
			push(&L, t);
			continue;
		}
		word  { push(&L, make(&L, MGL_TK_WORD, tok, cur)); continue; }
		ident {
			MglTok t = make(&L, MGL_TK_IDENT, tok, cur);
			for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++)
				if ((int)strlen(keywords[i].word) == t.len && !memcmp(keywords[i].word, tok, (size_t)t.len))
					t.kind = keywords[i].kind;
			push(&L, t);
			continue;
		}
		"(" { push(&L, make(&L, MGL_TK_LPAREN, tok, cur)); continue; }
		")" { push(&L, make(&L, MGL_TK_RPAREN, tok, cur)); continue; }
		"{" { push(&L, make(&L, MGL_TK_LBRACE, tok, cur)); continue; }
		"}" { push(&L, make(&L, MGL_TK_RBRACE, tok, cur)); continue; }
		"[" { push(&L, make(&L, MGL_TK_LBRACKET, tok, cur)); continue; }
		"]" { push(&L, make(&L, MGL_TK_RBRACKET, tok, cur)); continue; }
		"," { push(&L, make(&L, MGL_TK_COMMA, tok, cur)); continue; }
		":" { push(&L, make(&L, MGL_TK_COLON, tok, cur)); continue; }
		";" { push(&L, make(&L, MGL_TK_SEMI, tok, cur)); continue; }
		"=" { push(&L, make(&L, MGL_TK_ASSIGN, tok, cur)); continue; }
		"+" { push(&L, make(&L, MGL_TK_PLUS, tok, cur)); continue; }
		"-" { push(&L, make(&L, MGL_TK_MINUS, tok, cur)); continue; }
		"*" { push(&L, make(&L, MGL_TK_STAR, tok, cur)); continue; }
		"/" { push(&L, make(&L, MGL_TK_SLASH, tok, cur)); continue; }
		"@" { push(&L, make(&L, MGL_TK_AT, tok, cur)); continue; }
		*   { bad_char(&L, tok); }
		*/
	}
}
