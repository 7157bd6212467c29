/* cli/plot.c — `mgl plot`: the log of `mgl train --log` as a picture, one SVG file that a
 * browser opens with nothing else.
 *
 * The log is JSON lines, one object per optimizer step (docs/train.md §7). Each line is
 * read (by the runtime's JSON reader, runtime/json.c) as a flat JSON object whose values
 * are numbers, strings, true, false, null or the non-finite numbers below; the keys this
 * draws are step, loss, lr and val_loss, others are passed over. The file is untrusted: a
 * line that is not such an object, or lacks step or loss, stops the plot with the file,
 * line and column. A resumed run appends to its log and may repeat steps the first run
 * logged after its last checkpoint: a step at or below one already read starts the series
 * again from there, so the plot shows what the checkpointed run did.
 *
 * The drawing: the training loss (a line through every step) and the validation loss (a
 * marked point per evaluation) against steps in the upper panel; the learning rate under
 * it, on the same steps. Axes have round ticks (1, 2 or 5 times a power of ten).
 */
#include "cli.h"
#include "../runtime/runtime.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { LINE_MAX_BYTES = 4096 };   /* the log's lines are about 150 bytes */

typedef struct {
	double *x, *y;
	int n, cap;
} Series;

enum { TRAIN, VAL, LR, NSERIES };
static const struct { const char *key, *name, *color; } series_info[NSERIES] = {
	{"loss", "training loss", "#1f77b4"},
	{"val_loss", "validation loss", "#ff7f0e"},
	{"lr", "learning rate", "#2ca02c"},
};

/* ---------------------------------------------------------------- reading */

typedef struct {
	const char *file;
	int line;
	RtJson j;             /* the line */
	char err[256];
} Line;

static int bad(Line *l, size_t at, const char *what)
{
	snprintf(l->err, sizeof l->err, "%s:%d:%zu: %s", l->file, l->line, at + 1, what);
	return -1;
}

/* The JSON reader's error. */
static int bad_json(Line *l) { return bad(l, l->j.e.at, l->j.e.msg); }

/* A key's character: its first 31 bytes of ASCII into the Key (others as '?'). */
typedef struct { char s[32]; size_t n; } Key;
static int key_put(RtJson *j, void *ctx, uint32_t cp, size_t at)
{
	(void)j, (void)at;
	Key *k = ctx;
	if (k->n + 1 < sizeof k->s)
		k->s[k->n++] = cp && cp < 0x80 ? (char)cp : '?';
	k->s[k->n] = 0;
	return 0;
}

/* Values that are not numbers to draw: JSON's words, and the non-finite numbers C's printf
 * and Python's json module write (grad_norm may be one). */
static const char *const words[] = {"true", "false", "null", "nan", "-nan", "inf", "-inf", "NaN", "Infinity", "-Infinity"};

/* A value: a number into *v (NAN for anything else). */
static int value(Line *l, double *v)
{
	RtJson *j = &l->j;
	int c = rt_json_peek(j);
	*v = NAN;
	if (c == '"')
		return rt_json_string(j, "", NULL, NULL) ? bad_json(l) : 0;
	if (c == '{' || c == '[')
		return bad(l, j->pos, "a nested object or array: not a line of `mgl train --log`");
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
		size_t k = strlen(words[i]), e = j->pos + k;
		if (j->n >= e && !memcmp(j->s + j->pos, words[i], k) && (e == j->n || (j->s[e] && strchr(",} \t\r", j->s[e])))) {
			j->pos = e;
			return 0;
		}
	}
	return rt_json_number(j, "a number, a string, true, false or null", v) ? bad_json(l) : 0;
}

/* One line: a flat JSON object; the values of the keys in `keys` into vals (NAN if absent
 * or not numbers). 1 for a blank line, 0 for an object, -1 for an error (in l->err). */
static int object(Line *l, const char *const *keys, int nkeys, double *vals)
{
	RtJson *j = &l->j;
	for (int k = 0; k < nkeys; k++)
		vals[k] = NAN;
	int c = rt_json_peek(j), more = 1;
	if (c < 0)
		return 1;
	if (c != '{')
		return bad(l, j->pos, "expected '{': not a line of `mgl train --log`");
	j->pos++;
	if (rt_json_peek(j) == '}')
		j->pos++, more = 0;
	while (more == 1) {
		Key key = {.n = 0};
		double v;
		if (rt_json_string(j, "expected a key in double quotes", key_put, &key) ||
		    rt_json_expect(j, ':', "expected ':' after a key"))
			return bad_json(l);
		if (value(l, &v))
			return -1;
		for (int k = 0; k < nkeys; k++)
			if (!strcmp(key.s, keys[k]))
				vals[k] = v;
		if ((more = rt_json_more(j, '}', "expected ',' or '}'")) < 0)
			return bad_json(l);
	}
	return rt_json_peek(j) >= 0 ? bad(l, j->pos, "text after the object") : 0;
}

/* Forgets the points at steps >= x (a resumed run repeating them), then adds (x, y). */
static void push(Series *s, double x, double y)
{
	if (s->n == s->cap) {
		s->cap = 2 * s->cap + 256;
		s->x = mgl_xrealloc(s->x, (size_t)s->cap * sizeof *s->x, "a plot's points");
		s->y = mgl_xrealloc(s->y, (size_t)s->cap * sizeof *s->y, "a plot's points");
	}
	s->x[s->n] = x;
	s->y[s->n++] = y;
}

static void truncate_at(Series *s, double x)
{
	while (s->n && s->x[s->n - 1] >= x)
		s->n--;
}

/* The next line of f into buf (without its newline): its length, -1 at the end of the
 * file, -2 when it is longer than LINE_MAX_BYTES (the rest of it read and dropped). */
static long next_line(FILE *f, unsigned char *buf)
{
	long n = 0;
	int c;
	while ((c = getc(f)) != EOF && c != '\n') {
		if (n < LINE_MAX_BYTES)
			buf[n] = (unsigned char)c;
		n += n <= LINE_MAX_BYTES;
	}
	if (c == EOF && n == 0)
		return -1;
	return n > LINE_MAX_BYTES ? -2 : n;
}

/* What is wrong with a line's step, loss, val_loss and lr (NAN: absent), or NULL. */
static const char *wrong_field(const double *v)
{
	if (!(v[0] >= 1 && v[0] <= 1e15 && v[0] == floor(v[0])))
		return "no \"step\" that is a whole number from 1";
	if (!isfinite(v[1]))
		return "no \"loss\" that is a finite number";
	if (!isnan(v[2]) && !isfinite(v[2]))
		return "a \"val_loss\" that is not finite";
	if (!isnan(v[3]) && !isfinite(v[3]))
		return "an \"lr\" that is not finite";
	return NULL;
}

/* The log into s[TRAIN], s[VAL], s[LR]; 0, or 1 after printing an error. */
static int read_log(const char *path, Series *s)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "mgl: error: %s: cannot open: %s\n", path, strerror(errno));
		return 1;
	}
	static const char *const keys[] = {"step", "loss", "val_loss", "lr"};
	unsigned char buf[LINE_MAX_BYTES + 1];
	Line l = {.file = path};
	int status = 0;
	long n;
	char cbuf[32];
	while (!status && (n = next_line(f, buf)) != -1) {
		l.line++;
		double v[4];
		if (n == -2) {
			fprintf(stderr, "mgl: error: %s:%d: a line longer than %s bytes: not a line of `mgl train --log`\n",
				path, l.line, mgl_commas(LINE_MAX_BYTES, cbuf));
			status = 1;
			break;
		}
		l.j = (RtJson){.s = buf, .n = (size_t)n, .ends = "the object is not closed: a line cut short?"};
		int r = object(&l, keys, 4, v);
		if (r == 1)
			continue;
		const char *wrong = r ? NULL : wrong_field(v);
		if (r || wrong) {
			if (wrong)
				snprintf(l.err, sizeof l.err, "%s:%d: %s", path, l.line, wrong);
			fprintf(stderr, "mgl: error: %s\n", l.err);
			status = 1;
			break;
		}
		for (int k = 0; k < NSERIES; k++)
			truncate_at(&s[k], v[0]);
		push(&s[TRAIN], v[0], v[1]);
		if (!isnan(v[2]))
			push(&s[VAL], v[0], v[2]);
		if (!isnan(v[3]))
			push(&s[LR], v[0], v[3]);
	}
	if (!status && ferror(f)) {
		fprintf(stderr, "mgl: error: %s: cannot read: %s\n", path, strerror(errno));
		status = 1;
	}
	if (!status && !s[TRAIN].n) {
		fprintf(stderr, "mgl: error: %s has no steps: `mgl train --log FILE` writes a line per step\n", path);
		status = 1;
	}
	fclose(f);
	return status;
}

/* ---------------------------------------------------------------- drawing */

/* Where a panel is on the page and the values it spans. */
typedef struct {
	double left, top, width, height;
	double x0, x1, y0, y1;   /* the values at the edges */
	double xstep, ystep;     /* between ticks */
} Panel;

/* A round step between about n ticks over [lo, hi]: 1, 2 or 5 times a power of ten. */
static double tick_step(double lo, double hi, int n)
{
	double raw = (hi - lo) / n, p = pow(10, floor(log10(raw))), f = raw / p;
	return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

/* The range of the series' y (or x) values, widened to whole ticks. */
static void span(const Series *const *s, int ns, bool x, int nticks, double *lo, double *hi, double *step)
{
	*lo = INFINITY, *hi = -INFINITY;
	for (int k = 0; k < ns; k++)
		for (int i = 0; i < s[k]->n; i++) {
			double v = x ? s[k]->x[i] : s[k]->y[i];
			*lo = fmin(*lo, v), *hi = fmax(*hi, v);
		}
	if (*hi == *lo) {   /* one value: a band around it */
		double d = *lo ? fabs(*lo) / 10 : 1;
		*lo -= d, *hi += d;
	}
	*step = tick_step(*lo, *hi, nticks);
	if (x && *step < 1)
		*step = 1;   /* steps are whole */
	*lo = floor(*lo / *step) * *step;
	*hi = ceil(*hi / *step) * *step;
}

static double px(const Panel *p, double x) { return p->left + (x - p->x0) / (p->x1 - p->x0) * p->width; }
static double py(const Panel *p, double y) { return p->top + (p->y1 - y) / (p->y1 - p->y0) * p->height; }

/* Text for SVG: markup escaped, bytes that are not UTF-8 (a file name may hold any) as '?'. */
static void put_text(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		int k = rt_utf8_decode(p + i, n - i, &cp);
		if (!k || cp < 0x20) {
			fputc('?', f);
			i += k ? (size_t)k : 1;
		} else if (cp == '<' || cp == '>' || cp == '&') {
			fputs(cp == '<' ? "&lt;" : cp == '>' ? "&gt;" : "&amp;", f);
			i++;
		} else {
			fwrite(p + i, 1, (size_t)k, f);
			i += (size_t)k;
		}
	}
}

static void tick_label(char *buf, double v, bool steps)
{
	if (steps)
		mgl_commas((int64_t)llround(v), buf);
	else
		snprintf(buf, 32, "%g", fabs(v) < 1e-15 ? 0 : v);
}

/* The frame, grid and tick labels of a panel; ylabel beside it. */
static void axes(FILE *f, const Panel *p, const char *ylabel, bool xlabels)
{
	char buf[32];
	fprintf(f, "<g font-size=\"11\" fill=\"#333\" stroke=\"none\">\n");
	for (int k = 0; p->y0 + k * p->ystep <= p->y1 + p->ystep / 1000; k++) {
		double v = p->y0 + k * p->ystep, y = py(p, v);
		tick_label(buf, v, false);
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", p->left, y,
			p->left + p->width, y);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", p->left - 6, y + 4, buf);
	}
	for (int k = 0; p->x0 + k * p->xstep <= p->x1 + p->xstep / 1000; k++) {
		double v = p->x0 + k * p->xstep, x = px(p, v);
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", x, p->top, x,
			p->top + p->height);
		if (xlabels) {
			tick_label(buf, v, true);
			fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x, p->top + p->height + 16,
				buf);
		}
	}
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#888\"/>\n",
		p->left, p->top, p->width, p->height);
	fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">%s</text>\n",
		p->left - 56, p->top + p->height / 2, ylabel);
	fprintf(f, "</g>\n");
}

/* A series as one polyline, a point per step (and a dot per point when marked). */
static void curve(FILE *f, const Panel *p, const Series *s, int k, bool marked)
{
	fprintf(f, "<polyline class=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", series_info[k].key,
		series_info[k].color);
	for (int i = 0; i < s->n; i++)
		fprintf(f, "%s%.2f,%.2f", i ? " " : "", px(p, s->x[i]), py(p, s->y[i]));
	fprintf(f, "\"/>\n");
	if (marked || s->n == 1)
		for (int i = 0; i < s->n; i++)
			fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>\n", px(p, s->x[i]), py(p, s->y[i]),
				series_info[k].color);
}

static void legend(FILE *f, const Panel *p, const int *ks, int n)
{
	double x = p->left + p->width - 150, y = p->top + 10;
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"142\" height=\"%d\" fill=\"white\" fill-opacity=\"0.85\" "
		   "stroke=\"#ccc\"/>\n", x - 6, y - 4, 18 * n + 6);
	for (int i = 0; i < n; i++, y += 18)
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>"
			   "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">%s</text>\n", x, y + 7, x + 22, y + 7,
			series_info[ks[i]].color, x + 28, y + 11, series_info[ks[i]].name);
}

enum { WIDTH = 820, LEFT = 80, RIGHT = 24, TOP = 44, LOSS_H = 320, GAP = 44, LR_H = 120, BOTTOM = 48 };

static void draw(FILE *f, const char *title, Series *s)
{
	bool lr = s[LR].n > 0;
	int height = TOP + LOSS_H + (lr ? GAP + LR_H : 0) + BOTTOM;
	const Series *all[] = {&s[TRAIN], &s[VAL], &s[LR]}, *loss[] = {&s[TRAIN], &s[VAL]};
	Panel top = {LEFT, TOP, WIDTH - LEFT - RIGHT, LOSS_H, 0, 0, 0, 0, 0, 0};
	span(all, NSERIES, true, 8, &top.x0, &top.x1, &top.xstep);
	span(loss, 2, false, 6, &top.y0, &top.y1, &top.ystep);
	Panel low = top;
	low.top = TOP + LOSS_H + GAP, low.height = LR_H;
	if (lr)
		span(&all[LR], 1, false, 3, &low.y0, &low.y1, &low.ystep);

	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
		   "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"Helvetica, Arial, sans-serif\">\n", WIDTH, height, WIDTH,
		height);
	fprintf(f, "<title>");
	put_text(f, title);
	fprintf(f, "</title>\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
	fprintf(f, "<text x=\"%d\" y=\"26\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">", WIDTH / 2);
	put_text(f, title);
	fprintf(f, "</text>\n");
	axes(f, &top, "loss (nats per token)", !lr);
	curve(f, &top, &s[TRAIN], TRAIN, false);
	if (s[VAL].n)
		curve(f, &top, &s[VAL], VAL, true);
	const Panel *last = &top;
	if (lr) {
		axes(f, &low, "learning rate", true);
		curve(f, &low, &s[LR], LR, false);
		last = &low;
	}
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\" fill=\"#333\">step</text>\n",
		last->left + last->width / 2, last->top + last->height + 36);
	int ks[NSERIES], nk = 0;
	for (int k = 0; k < NSERIES; k++)
		if (s[k].n)
			ks[nk++] = k;
	legend(f, &top, ks, nk);
	fprintf(f, "</svg>\n");
}

int cmd_plot(Args *a)
{
	Series s[NSERIES] = {{0}};
	int status = read_log(a->file, s);
	if (!status) {
		char title[512];
		snprintf(title, sizeof title, "mgl train: %s", a->file);
		FILE *f = cli_out_open(a->out);
		status = 1;
		if (f) {
			draw(f, title, s);
			status = cli_out_close(f, a->out);
		}
	}
	if (!status && a->out) {
		char b1[32], b2[32];
		printf("%s: the loss at %s step%s", a->out, mgl_commas(s[TRAIN].n, b1), s[TRAIN].n == 1 ? "" : "s");
		if (s[VAL].n)
			printf(", the validation loss at %s", mgl_commas(s[VAL].n, b2));
		printf("%s\n", s[LR].n ? ", the learning rate" : "");
	}
	for (int k = 0; k < NSERIES; k++)
		free(s[k].x), free(s[k].y);
	return status;
}
