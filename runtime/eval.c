/* runtime/eval.c — zero-shot evaluation as Megatron-LM's tasks/zeroshot_gpt does it (the
 * paper's Table 3): WikiText-103 perplexity over overlapping windows and LAMBADA cloze
 * accuracy. docs/eval.md says what each number means and why each choice was made.
 *
 * The data. wiki.test.tokens is word-level text (" @-@ " for a hyphen, " , " for a comma,
 * " \n " between lines); it is detokenized back to ordinary text by Megatron-LM's rules
 * (the table `detok` below, in their order) before the tokenizer sees it, and its
 * "original tokens" are counted as Megatron-LM counts them, for the adjusted perplexity.
 * Python's notions are kept where those rules rely on them: white space (\s, strip(),
 * split()) is str.isspace()'s, Unicode's included. lambada_test.jsonl is JSON lines, one
 * {"text": "..."} a line; the last word of a text is what is predicted.
 *
 * The model. Evaluation runs the plan's forward pass, as training's evaluation does
 * (rt_job_run with the forward phase and dropout off), and reads each position's result
 * from values the plan has already: its cross-entropy computes, the same on every rank
 * after its collectives (so at any tp), each position's log-sum-exp of the logits (the
 * second output of vocab_loss, kept for the backward pass), the largest logit (vocab_max)
 * and the target's logit (the second column of vocab_stats). A position's loss is the
 * log-sum-exp minus the target's logit; its target is the greedy prediction when the
 * target's logit is the largest (a tie counts as the target). Nothing is added to the
 * plan, and no logits cross to the host. Those values are alive until the forward pass
 * ends only if no forward step runs after vocab_loss (a later step could reuse their
 * memory), so a model whose loss is not its cross-entropy itself is refused.
 */
#include "backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- white space, as Python's */

/* The length of the white-space character at s[0..n) (str.isspace()), or 0. */
static size_t space_at(const char *s, size_t n)
{
	unsigned char c = (unsigned char)s[0];
	if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f))
		return 1;
	uint32_t cp;
	int k = c >= 0x80 ? rt_utf8_decode((const unsigned char *)s, n, &cp) : 0;
	if (k <= 1)
		return 0;
	bool sp = cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
		  cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
	return sp ? (size_t)k : 0;
}

/* Past the white space from i on; before the white space that ends s[..end). */
static size_t skip_space(const char *s, size_t i, size_t end)
{
	size_t k;
	while (i < end && (k = space_at(s + i, end - i)))
		i += k;
	return i;
}

static size_t trim_end(const char *s, size_t start, size_t end)
{
	/* UTF-8 is read forwards: find the last non-space character's end */
	size_t last = start;
	for (size_t i = start, k; i < end; i += k ? k : 1)
		if (!(k = space_at(s + i, end - i)))
			last = i + 1;
	return last;
}

/* ---------------------------------------------------------------- WikiText */

int64_t rt_wikitext_words(const char *text, size_t len)
{
	size_t a = skip_space(text, 0, len), b = trim_end(text, a, len);
	int64_t n = 1;   /* "".split(" ") is [""]: one */
	for (size_t i = a; i < b; i++)
		n += text[i] == ' ';
	return n;
}

/* A growing output buffer. */
typedef struct { char *s; size_t n, cap; bool oom; } Buf;

static void put(Buf *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = 2 * b->cap + n + 64;
		char *s2 = realloc(b->s, cap);
		if (!s2) {
			b->oom = true;
			return;
		}
		b->s = s2, b->cap = cap;
	}
	memcpy(b->s + b->n, s, n);
	b->n += n;
	b->s[b->n] = 0;
}

/* Python's str.replace(from, to): every occurrence, left to right, none overlapping. */
static void replace(Buf *out, const char *s, size_t n, const char *from, const char *to)
{
	size_t fl = strlen(from), tl = strlen(to), done = 0;
	for (size_t i = 0; i + fl <= n;) {
		if (s[i] != from[0] || memcmp(s + i, from, fl)) {
			i++;
			continue;
		}
		put(out, s + done, i - done);
		put(out, to, tl);
		done = i += fl;
	}
	put(out, s + done, n - done);
}

/* re.sub(r"O\s*([^C]*?)\s*C", r"O\1C"): from each O to the next C, the white space just
 * inside them removed. */
static void brackets(Buf *out, const char *s, size_t n, char open, char close)
{
	size_t i = 0;
	while (i < n) {
		const char *o = memchr(s + i, open, n - i);
		const char *c = o ? memchr(o + 1, close, (size_t)(s + n - o - 1)) : NULL;
		if (!c) {
			put(out, s + i, n - i);
			break;
		}
		size_t in = (size_t)(o - s) + 1, end = (size_t)(c - s);
		put(out, s + i, in - i);
		size_t a = skip_space(s, in, end);
		put(out, s + a, trim_end(s, a, end) - a);
		put(out, c, 1);
		i = end + 1;
	}
}

/* Megatron-LM's wikitext_detokenizer, step by step: a replacement, or (from NULL) the
 * brackets pass for the pair in `to`. Its one regular expression for contractions,
 * "/' [0-9]/", matches only that literal text with slashes (never in WikiText) and would
 * write "[0-9]" into it; it is left out. */
static const struct { const char *from, *to; } detok[] = {
	{"s '", "s'"},
	{" @-@ ", "-"}, {" @,@ ", ","}, {" @.@ ", "."},
	{" : ", ": "}, {" ; ", "; "}, {" . ", ". "}, {" ! ", "! "}, {" ? ", "? "}, {" , ", ", "},
	{NULL, "()"}, {NULL, "[]"}, {NULL, "{}"}, {NULL, "\"\""}, {NULL, "''"},
	{"= = = =", "===="}, {"= = =", "==="}, {"= =", "=="},
	{" \xC2\xB0 ", "\xC2\xB0"},   /* the degree sign */
	{" \n", "\n"}, {"\n ", "\n"},
	{" N ", " 1 "}, {" 's", "'s"},
};

char *rt_wikitext_detok(const char *text, size_t len, size_t *outlen)
{
	Buf a = {0}, b = {0};
	put(&a, text, len);
	for (size_t k = 0; k < sizeof detok / sizeof detok[0] && !a.oom; k++) {
		b.n = 0;
		if (detok[k].from)
			replace(&b, a.s, a.n, detok[k].from, detok[k].to);
		else
			brackets(&b, a.s, a.n, detok[k].to[0], detok[k].to[1]);
		put(&b, "", 0);   /* an empty result still has its NUL */
		Buf t = a;
		a = b, b = t;
		a.oom |= b.oom;
	}
	free(b.s);
	if (a.oom) {
		free(a.s);
		return NULL;
	}
	*outlen = a.n;
	return a.s;
}

/* ---------------------------------------------------------------- LAMBADA */

/* The string's UTF-8 into a Buf. */
static int text_put(RtJson *j, void *ctx, uint32_t cp, size_t at)
{
	unsigned char u[4];
	size_t n = rt_utf8_encode(u, cp);
	Buf *b = ctx;
	put(b, (const char *)u, n);
	return b->oom ? rt_json_fail(j, at, "out of memory") : 0;
}

/* One line: an object with a string "text" (other keys passed over) into b. */
static int lambada_line(RtJson *j, Buf *b)
{
	bool have = false;
	if (rt_json_expect(j, '{', "expected '{': a line is a JSON object, {\"text\": \"...\"}"))
		return -1;
	int more = 1;
	if (rt_json_peek(j) == '}')
		j->pos++, more = 0;
	while (more == 1) {
		Buf key = {0};
		size_t at = j->pos;
		int rc = rt_json_string(j, "expected a key in double quotes", text_put, &key) ||
			 rt_json_expect(j, ':', "expected ':' after a key");
		bool text = !rc && key.s && !strcmp(key.s, "text") && key.n == 4;
		free(key.s);
		if (rc)
			return -1;
		if (text) {
			if (have)
				return rt_json_fail(j, at, "\"text\" is given twice");
			have = true;
			if (rt_json_peek(j) != '"')
				return rt_json_fail(j, j->pos, "\"text\" must be a string");
			if (rt_json_string(j, "expected a string", text_put, b))
				return -1;
		} else if (rt_json_skip(j, 16)) {
			return -1;
		}
		more = rt_json_more(j, '}', "expected ',' or '}'");
	}
	if (more < 0)
		return -1;
	if (rt_json_peek(j) >= 0)
		return rt_json_fail(j, j->pos, "text after the object (one object a line)");
	if (!have)
		return rt_json_fail(j, 0, "no \"text\"");
	return 0;
}

int rt_lambada_parse(const char *buf, size_t len, const char *name, RtLambada *l, char *err, size_t errlen)
{
	memset(l, 0, sizeof *l);
	int64_t cap = 0;
	int line = 0;
	for (size_t i = 0; i < len; line++) {
		const char *nl = memchr(buf + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - buf) : len;
		RtJson j = {.s = (const unsigned char *)buf + i, .n = end - i, .ends = "the line ends early"};
		i = end + 1;
		if (rt_json_peek(&j) < 0)
			continue;   /* a blank line: nothing */
		Buf b = {0};
		if (lambada_line(&j, &b)) {
			free(b.s);
			rt_errf(err, errlen, "%s:%d:%zu: %s", name, line + 1, j.e.at + 1, j.e.msg);
			rt_lambada_free(l);
			return -1;
		}
		if (!b.s)
			put(&b, "", 0);
		RtLambadaText *ex = l->n < cap ? l->ex : realloc(l->ex, (size_t)(cap = 2 * cap + 64) * sizeof *ex);
		if (b.oom || !ex) {
			free(b.s);
			rt_errf(err, errlen, "%s: out of memory", name);
			rt_lambada_free(l);
			return -1;
		}
		l->ex = ex;
		l->ex[l->n++] = (RtLambadaText){.text = b.s, .len = b.n, .line = line + 1};
	}
	if (!l->n) {
		rt_errf(err, errlen, "%s: no examples: the file is empty or blank (it should hold one {\"text\": ...} a line)", name);
		return -1;
	}
	return 0;
}

int rt_lambada_read(const char *path, RtLambada *l, char *err, size_t errlen)
{
	size_t len;
	char *buf = mgl_read_whole(path, RT_EVAL_MAX_FILE_BYTES, "evaluation files", &len, err, errlen);
	if (!buf) {
		memset(l, 0, sizeof *l);
		return -1;
	}
	int rc = rt_lambada_parse(buf, len, path, l, err, errlen);
	free(buf);
	return rc;
}

void rt_lambada_free(RtLambada *l)
{
	for (int64_t i = 0; i < l->n; i++)
		free(l->ex[i].text);
	free(l->ex);
	memset(l, 0, sizeof *l);
}

int rt_lambada_split(const char *text, size_t len, size_t *ctx_start, size_t *ctx_end, size_t *word, size_t *word_end)
{
	size_t end = trim_end(text, 0, len), w = 0;
	if (!end)
		return -1;
	/* the last word starts after the last white space before the end */
	for (size_t i = 0, k; i < end; i += k ? k : 1)
		if ((k = space_at(text + i, end - i)))
			w = i + k;
	*word = w;
	*word_end = end;
	*ctx_start = skip_space(text, 0, w);
	*ctx_end = trim_end(text, *ctx_start, w);
	return 0;
}

/* ---------------------------------------------------------------- the forward pass, per position */

/* The model as evaluation runs it, with every buffer a run needs (lm_open allocates them
 * all, lm_close frees them): lm_score's input x, y and output loss, hit, [rows, T] each. */
typedef struct {
	RtJob *j;
	int tokens, targets, stats, max, lse;   /* value ids */
	int64_t B, T, rows, vocab;              /* rows = dp x B sequences a run */
	int32_t *x, *y;                         /* the tokens and targets of a run */
	double *loss;                           /* each position's loss in nats */
	bool *hit;                              /* whether its target is the greedy prediction */
	float *st, *mx, *ls;                    /* one dp rank's [B, T, 2], [B, T], [B, T] */
} Lm;

static int lm_open(RtJob *j, Lm *lm, char *err, size_t errlen)
{
	const MglPlan *p = j->plan;
	memset(lm, 0, sizeof *lm);
	lm->j = j;
	lm->tokens = rt_value(p, "tokens");
	lm->targets = rt_value(p, "targets");
	int others = 0, loss = -1, last_fwd = -1;
	for (int v = 0; v < p->nvalues; v++)
		others += p->values[v].role == MGL_V_INPUT && v != lm->tokens && v != lm->targets &&
			  strcmp(p->values[v].name, "d_loss");
	for (int s = 0; s < p->nsteps; s++) {
		const MglStep *st = &p->steps[s];
		if (st->phase == MGL_FWD)
			last_fwd = s;
		if (st->op == MGL_OP_VOCAB_LOSS && st->in[3] == p->logits && loss < 0)
			loss = s;
	}
	if (lm->tokens < 0 || lm->targets < 0 || others || p->logits < 0) {
		rt_errf(err, errlen, "mgl eval evaluates language models whose inputs are tokens and targets and whose loss is "
			"a cross_entropy (as models/gpt2.mgl's); this model's differ");
		return -1;
	}
	if (loss < 0 || loss != last_fwd || p->steps[loss].out[0] != p->loss) {
		rt_errf(err, errlen, "mgl eval reads each position's loss from the model's cross_entropy, which must be what "
			"the model returns (this model computes more after it)");
		return -1;
	}
	const MglStep *s = &p->steps[loss];
	lm->stats = s->in[0], lm->max = s->in[1], lm->lse = s->out[1];
	lm->T = p->seq;
	lm->B = p->batch;
	lm->rows = lm->B * j->dp;
	lm->vocab = p->vocab ? p->vocab : rt_last(&p->values[p->logits]);
	lm->st = malloc((size_t)(lm->B * lm->T) * 2 * sizeof *lm->st);
	lm->mx = malloc((size_t)(lm->B * lm->T) * sizeof *lm->mx);
	lm->ls = malloc((size_t)(lm->B * lm->T) * sizeof *lm->ls);
	size_t all = (size_t)(lm->rows * lm->T);
	lm->x = malloc(all * sizeof *lm->x);
	lm->y = malloc(all * sizeof *lm->y);
	lm->loss = malloc(all * sizeof *lm->loss);
	lm->hit = malloc(all * sizeof *lm->hit);
	if (!lm->st || !lm->mx || !lm->ls || !lm->x || !lm->y || !lm->loss || !lm->hit) {
		rt_errf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static void lm_close(Lm *lm)
{
	free(lm->x);
	free(lm->y);
	free(lm->loss);
	free(lm->hit);
	free(lm->st);
	free(lm->mx);
	free(lm->ls);
}

/* The forward pass on lm->x and lm->y (every id below the vocabulary): each position's
 * loss and hit into lm->loss and lm->hit. */
static int lm_score(Lm *lm, char *err, size_t errlen)
{
	const int32_t *x = lm->x, *y = lm->y;
	RtJob *j = lm->j;
	int64_t n = lm->B * lm->T;
	for (int d = 0; d < j->dp; d++)
		for (int k = 0; k < j->tp; k++) {
			RtRank *r = &j->ranks[d * j->tp + k];
			j->be->write(r, lm->tokens, x + d * n);
			j->be->write(r, lm->targets, y + d * n);
		}
	RtRun run = {.train = false};   /* the forward alone: it writes no gradient (RtRun.first_micro) */
	if (rt_job_run(j, 1u << MGL_FWD, &run, err, errlen))
		return -1;
	for (int d = 0; d < j->dp; d++) {
		RtRank *r = &j->ranks[d * j->tp];
		j->be->read(r, lm->stats, lm->st);
		j->be->read(r, lm->max, lm->mx);
		j->be->read(r, lm->lse, lm->ls);
		for (int64_t i = 0; i < n; i++) {
			float target = lm->st[2 * i + 1];
			lm->loss[d * n + i] = (double)lm->ls[i] - (double)target;
			lm->hit[d * n + i] = target >= lm->mx[i];
		}
	}
	return 0;
}

static int beyond_vocab(const Lm *lm, const int32_t *ids, int64_t n, const char *what, char *err, size_t errlen)
{
	for (int64_t i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= lm->vocab) {
			char b1[32], b2[32];
			rt_errf(err, errlen, "%s token %s (id %d) is beyond the model's vocabulary of %s", what,
				mgl_commas(i + 1, b1), ids[i], mgl_commas(lm->vocab, b2));
			return -1;
		}
	return 0;
}

/* ---------------------------------------------------------------- perplexity over overlapping windows */

int rt_eval_ppl(RtJob *j, const int32_t *ids, int64_t n, int64_t stride, RtEvalProgress *progress, void *ctx,
		RtPpl *out, char *err, size_t errlen)
{
	Lm lm;
	memset(out, 0, sizeof *out);
	if (lm_open(j, &lm, err, errlen))
		goto fail;
	int64_t T = lm.T, R = lm.rows;
	if (stride < 1 || stride > T) {
		rt_errf(err, errlen, "the stride must be from 1 to the sequence of %lld tokens", (long long)T);
		goto fail;
	}
	if (n < 2) {
		rt_errf(err, errlen, "%lld token%s: there is nothing to predict (it takes two)", (long long)n, n == 1 ? "" : "s");
		goto fail;
	}
	if (beyond_vocab(&lm, ids, n, "the text's", err, errlen))
		goto fail;
	/* window w reads tokens [w stride, w stride + T) and counts the targets of its last
	 * `stride` positions (all T of the first): each target exactly once, the first T
	 * with what context there is, every later one with at least T - stride tokens */
	int64_t nw = 1 + (n - 1 > T ? (n - 1 - T + stride - 1) / stride : 0);
	int32_t *x = lm.x, *y = lm.y;
	int rc = 0;
	for (int64_t w0 = 0; w0 < nw && !rc; w0 += R) {
		for (int64_t r = 0; r < R; r++)
			for (int64_t k = 0, at = (w0 + r) * stride; k < T; k++, at++) {
				x[r * T + k] = w0 + r < nw && at < n ? ids[at] : 0;   /* past the end: padding, not counted */
				y[r * T + k] = w0 + r < nw && at + 1 < n ? ids[at + 1] : 0;
			}
		if ((rc = lm_score(&lm, err, errlen)))
			break;
		for (int64_t r = 0; r < R && w0 + r < nw; r++) {
			int64_t start = (w0 + r) * stride;
			for (int64_t k = w0 + r ? T - stride : 0; k < T && start + k + 1 < n; k++)
				out->loss += lm.loss[r * T + k], out->predicted++;
		}
		out->windows = w0 + R < nw ? w0 + R : nw;
		if (progress)
			progress(ctx, out->windows, nw);
	}
	lm_close(&lm);
	return rc;
fail:
	lm_close(&lm);
	return -1;
}

/* ---------------------------------------------------------------- cloze accuracy */

int rt_eval_cloze(RtJob *j, const RtCloze *ex, int64_t n, RtEvalProgress *progress, void *ctx, bool *right,
		  char *err, size_t errlen)
{
	Lm lm;
	int rc = lm_open(j, &lm, err, errlen);
	int64_t T = lm.T, R = lm.rows;
	for (int64_t e = 0; e < n && !rc; e++) {
		char what[64];
		snprintf(what, sizeof what, "example %lld's", (long long)e + 1);
		if (ex[e].word < 1 || ex[e].word > T || ex[e].n <= ex[e].word) {
			rt_errf(err, errlen, "example %lld: a word of %lld tokens after %lld of context cannot be predicted in "
				"sequences of %lld", (long long)e + 1, (long long)ex[e].word, (long long)(ex[e].n - ex[e].word),
				(long long)T);
			rc = -1;
		} else {
			rc = beyond_vocab(&lm, ex[e].ids, ex[e].n, what, err, errlen);
		}
	}
	int32_t *x = lm.x, *y = lm.y;
	for (int64_t e0 = 0; e0 < n && !rc; e0 += R) {
		/* each example's last T + 1 tokens (so a long context loses its start), padded */
		memset(x, 0, (size_t)(R * T) * sizeof *x);
		memset(y, 0, (size_t)(R * T) * sizeof *y);
		for (int64_t r = 0; r < R && e0 + r < n; r++) {
			const RtCloze *c = &ex[e0 + r];
			int64_t L = c->n < T + 1 ? c->n : T + 1, from = c->n - L;
			for (int64_t k = 0; k + 1 < L; k++) {
				x[r * T + k] = c->ids[from + k];
				y[r * T + k] = c->ids[from + k + 1];
			}
		}
		if ((rc = lm_score(&lm, err, errlen)))
			break;
		for (int64_t r = 0; r < R && e0 + r < n; r++) {
			const RtCloze *c = &ex[e0 + r];
			int64_t L = c->n < T + 1 ? c->n : T + 1;
			bool ok = true;
			for (int64_t k = L - 1 - c->word; k < L - 1; k++)
				ok &= lm.hit[r * T + k];
			right[e0 + r] = ok;
		}
		if (progress)
			progress(ctx, e0 + R < n ? e0 + R : n, n);
	}
	lm_close(&lm);
	return rc;
}
