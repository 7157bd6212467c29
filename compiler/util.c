/* compiler/util.c — what every pass leans on: the arena, reading sources, and diagnostics.
 *
 * (The arena itself is plan/plan.c's: the runtime shares it.)
 *
 * Diagnostics have one format everywhere, the one people know from C compilers:
 *
 *   models/gpt2.mgl:12:9: error: unknown name 'dd'
 *      12 |   h = linear(x, dd)
 *         |                 ^~
 *     hint: did you mean 'd'?
 *
 * mgl_report is the only function that prints it; errors then call mgl_fail, which jumps
 * back to the entry point that set MglCtx.fail, and the arena takes every allocation with it.
 */
#include "mgl.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- sources */

MglSource *mgl_source_from_string(MglCtx *c, const char *name, const char *text, bool cmdline)
{
	MglSource *s = mgl_alloc(&c->arena, sizeof *s);
	s->name = mgl_strndup(&c->arena, name, strlen(name));
	s->len = strlen(text);
	s->text = mgl_strndup(&c->arena, text, s->len);
	s->cmdline = cmdline;
	return s;
}

MglSource *mgl_read_file(MglCtx *c, const char *path)
{
	char err[1024];
	size_t n;
	char *text = mgl_read_whole(path, MGL_MAX_FILE_BYTES, "model files", &n, err, sizeof err);
	if (!text) {
		mgl_report(c, "error", NULL, "%s", err);
		mgl_fail(c);
	}
	MglSource *s = mgl_alloc(&c->arena, sizeof *s);
	s->name = mgl_strndup(&c->arena, path, strlen(path));
	s->text = mgl_strndup(&c->arena, text, n);
	s->len = n;
	free(text);
	return s;
}

/* ---------------------------------------------------------------- diagnostics */

/* Prints one source line, control bytes shown as '?' so a binary file cannot garble a
 * terminal, then a caret under [col, col+len) that follows tabs and skips UTF-8
 * continuation bytes, so it lines up with what the terminal shows. */
static void show_line(FILE *out, const MglTok *t)
{
	const char *text = t->src->text, *end = text + t->src->len;
	const char *ls = t->p;
	while (ls > text && ls[-1] != '\n')
		ls--;
	const char *le = t->p;
	while (le < end && *le != '\n')
		le++;
	if (le > ls && le[-1] == '\r')   /* a file with CRLF line ends */
		le--;
	if (le - ls > 200)   /* a very long line: show the part around the token */
		ls = t->p - ls > 100 ? t->p - 100 : ls, le = le - t->p > 100 ? t->p + 100 : le;
	fprintf(out, "%5d | ", t->line);
	for (const char *q = ls; q < le; q++) {
		unsigned char ch = (unsigned char)*q;
		fputc(ch == '\t' || ch >= 0x20 ? ch : '?', out);
	}
	fputs("\n      | ", out);
	for (const char *q = ls; q < t->p && q < le; q++) {
		unsigned char ch = (unsigned char)*q;
		if (ch == '\t')
			fputc('\t', out);
		else if ((ch & 0xC0) != 0x80)
			fputc(' ', out);
	}
	fputc('^', out);
	int len = t->len;
	if (t->p + len > le)
		len = (int)(le - t->p);
	for (int i = 1; i < len && i < 80; i++)
		if (((unsigned char)t->p[i] & 0xC0) != 0x80)
			fputc('~', out);
	fputc('\n', out);
}

void mgl_report(MglCtx *c, const char *kind, const MglTok *t, const char *fmt, ...)
{
	FILE *out = c->out ? c->out : stderr;
	if (t)
		fprintf(out, "%s:%d:%d: %s: ", t->src->name, t->line, t->col, kind);
	else
		fprintf(out, "mgl: %s: ", kind);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
	if (t)
		show_line(out, t);
	if (!strcmp(kind, "error")) {
		c->nerrors++;
		c->status = t && t->src->cmdline ? 2 : 1;
	} else if (!strcmp(kind, "warning")) {
		c->nwarnings++;
	}
}

void mgl_hint(MglCtx *c, const char *fmt, ...)
{
	FILE *out = c->out ? c->out : stderr;
	fputs("  hint: ", out);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
}

_Noreturn void mgl_fail(MglCtx *c)
{
	if (!c->status)
		c->status = 1;
	longjmp(*c->fail, 1);
}

/* ---------------------------------------------------------------- "did you mean" */

static int edit_distance(const char *a, int la, const char *b, int lb)
{
	if (la > 64 || lb > 64)
		return 1000;
	int row[65];
	for (int j = 0; j <= lb; j++)
		row[j] = j;
	for (int i = 1; i <= la; i++) {
		int diag = row[0];
		row[0] = i;
		for (int j = 1; j <= lb; j++) {
			int up = row[j];
			int cost = a[i - 1] == b[j - 1] ? 0 : 1;
			int best = diag + cost;
			if (up + 1 < best) best = up + 1;
			if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

const char *mgl_closest(const char *word, int wlen, const char *const *cands, int n)
{
	const char *best = NULL;
	/* the most edits still worth suggesting; a one-letter name resembles every other */
	int bestd = wlen < 2 ? 0 : wlen < 5 ? 1 : wlen / 3 + 1;
	for (int i = 0; i < n; i++) {
		if (!cands[i])
			continue;
		int len = (int)strlen(cands[i]);
		/* an abbreviation (col for column) is as good as one edit */
		int d = wlen >= 3 && wlen < len && !strncmp(word, cands[i], (size_t)wlen) ? 1
			: edit_distance(word, wlen, cands[i], len);
		if (d > 0 && d <= bestd && (!best || d < bestd)) {
			best = cands[i];
			bestd = d;
		}
	}
	return best;
}
