/* cli/eval.c — `mgl eval`: a checkpoint's zero-shot WikiText perplexity or LAMBADA accuracy,
 * as Megatron-LM's paper reports them (its Table 3; docs/eval.md).
 *
 * The checkpoint is read as `mgl sample` reads it (its model's source and its tokenizer
 * travel in it), compiled for the job asked for (--tp, --dp, --batch, --seq, --backend) and
 * loaded; the data file is read and tokenized before the job opens, so a bad file costs
 * nothing; then runtime/eval.c runs the forward passes. The result goes to standard output
 * (a sentence or two, or with --json one object), the progress to standard error.
 */
#include "cli.h"
#include "../runtime/backend.h"

#include <math.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Megatron-LM's --overlapping-eval default: a window advances 32 tokens. A window must
 * advance by at most half its length, so that every token after the first window is
 * predicted from at least half a window of context. */
enum { DEFAULT_STRIDE = 32 };

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The progress line: rewritten after each batch on a terminal, elsewhere one every
 * RT_PROGRESS_SECONDS. */
typedef struct {
	const char *what;     /* "windows", "examples" */
	double start, shown;
	bool tty;
} Progress;

static void progress(void *ctx, int64_t done, int64_t total)
{
	Progress *p = ctx;
	double t = now();
	if (!p->tty && t - p->shown < RT_PROGRESS_SECONDS && done < total)
		return;
	if (!p->tty && done == total && p->shown == p->start)
		return;   /* it took less than one interval: the result says it all */
	char b1[32], b2[32];
	fprintf(stderr, "%smgl: eval: %s of %s %s (%.0f%%), %.1f s%s", p->tty ? "\r" : "", mgl_commas(done, b1),
		mgl_commas(total, b2), p->what, 100.0 * (double)done / (double)total, t - p->start,
		p->tty && done < total ? "" : "\n");
	fflush(stderr);
	p->shown = t;
}

/* ---------------------------------------------------------------- WikiText */

typedef struct {
	int32_t *ids;
	size_t n, cap;
	int64_t words;
} Wiki;

static int read_wikitext(const char *path, RtTokenizer *tok, Wiki *w, char *err, size_t errlen)
{
	size_t len, dlen;
	char *text = mgl_read_whole(path, RT_EVAL_MAX_FILE_BYTES, "evaluation files", &len, err, errlen);
	if (!text)
		return -1;
	bool blank = true;
	for (size_t i = 0; i < len && blank; i++)
		blank = text[i] && strchr(" \t\r\n\v\f", text[i]);
	if (blank) {
		snprintf(err, errlen, "%s: no text: the file is empty or white space", path);
		free(text);
		return -1;
	}
	w->words = rt_wikitext_words(text, len);
	char *detok = rt_wikitext_detok(text, len, &dlen);
	int rc = !detok || rt_tok_encode(tok, detok, dlen, &w->ids, &w->n, &w->cap);
	if (rc)
		snprintf(err, errlen, "out of memory tokenizing %s", path);
	free(detok);
	free(text);
	return rc ? -1 : 0;
}

static void print_wikitext(const Args *a, const char *tokname, const Wiki *w, const RtPpl *r, int64_t T,
			   int64_t stride)
{
	double per_token = r->loss / (double)r->predicted, ppl = exp(per_token);
	/* Megatron-LM's: the loss over the predicted tokens spread over all but one original token */
	double adjusted = exp(r->loss / (double)(w->words > 1 ? w->words - 1 : 1));
	char b1[32], b2[32], b3[32], b4[32], b5[32];
	if (a->json) {
		printf("{\"task\": \"wikitext\", \"file\": ");
		cli_json_str(a->wikitext);
		printf(", \"tokenizer\": \"%s\", \"words\": %lld, \"tokens\": %lld, \"predicted\": %lld, \"seq\": %lld, "
		       "\"stride\": %lld, \"windows\": %lld, \"loss_sum\": %.6f, \"loss\": %.6f, \"perplexity\": %.6g, "
		       "\"adjusted_perplexity\": %.6g}\n",
		       tokname, (long long)w->words, (long long)w->n, (long long)r->predicted, (long long)T, (long long)stride,
		       (long long)r->windows, r->loss, per_token, ppl, adjusted);
		return;
	}
	const char *words = w->words == 1 ? "word" : "words";
	printf("%s: %s %s -> %s token%s (%s), in %s window%s of %s tokens, each %s after the last\n", a->wikitext,
	       mgl_commas(w->words, b1), words, mgl_commas((int64_t)w->n, b2), w->n == 1 ? "" : "s", tokname,
	       mgl_commas(r->windows, b3), r->windows == 1 ? "" : "s", mgl_commas(T, b4), mgl_commas(stride, b5));
	printf("loss %.4f nats a token: perplexity %.2f; adjusted perplexity %.2f (normalised by the %s original %s)\n",
	       per_token, ppl, adjusted, mgl_commas(w->words, b1), words);
}

/* ---------------------------------------------------------------- LAMBADA */

typedef struct {
	int32_t *ids;         /* every example's, one after another */
	size_t n, cap;
	RtCloze *ex;          /* ids set once all are encoded (the array moves while it grows) */
	size_t *at;           /* where each example's ids start */
	int64_t nex;
} Cloze;

static int read_lambada(const char *path, RtTokenizer *tok, int64_t T, Cloze *c, char *err, size_t errlen)
{
	RtLambada l;
	if (rt_lambada_read(path, &l, err, errlen))
		return -1;
	c->ex = calloc((size_t)l.n, sizeof *c->ex);
	c->at = calloc((size_t)l.n, sizeof *c->at);
	int rc = !c->ex || !c->at ? (snprintf(err, errlen, "out of memory"), -1) : 0;
	char *word = NULL;
	for (int64_t e = 0; e < l.n && !rc; e++) {
		const RtLambadaText *x = &l.ex[e];
		size_t cs, ce, ws, we;
		if (rt_lambada_split(x->text, x->len, &cs, &ce, &ws, &we)) {
			snprintf(err, errlen, "%s:%d: the text is empty or white space: it has no last word to predict", path, x->line);
			rc = -1;
			break;
		}
		if (ce == cs) {
			snprintf(err, errlen, "%s:%d: the text is one word: there is nothing to predict it from", path, x->line);
			rc = -1;
			break;
		}
		/* the context, then the word with a space before it, as it follows the context */
		free(word);
		if (!(word = malloc(we - ws + 1))) {
			snprintf(err, errlen, "out of memory");
			rc = -1;
			break;
		}
		word[0] = ' ';
		memcpy(word + 1, x->text + ws, we - ws);
		c->at[e] = c->n;
		if (rt_tok_encode(tok, x->text + cs, ce - cs, &c->ids, &c->n, &c->cap)) {
			snprintf(err, errlen, "out of memory");
			rc = -1;
			break;
		}
		size_t before = c->n;
		if (rt_tok_encode(tok, word, we - ws + 1, &c->ids, &c->n, &c->cap)) {
			snprintf(err, errlen, "out of memory");
			rc = -1;
			break;
		}
		c->ex[e] = (RtCloze){.n = (int64_t)(c->n - c->at[e]), .word = (int64_t)(c->n - before)};
		if (c->ex[e].word > T) {
			char b1[32], b2[32];
			snprintf(err, errlen, "%s:%d: the last word is %s tokens, more than a sequence of %s can predict", path,
				 x->line, mgl_commas(c->ex[e].word, b1), mgl_commas(T, b2));
			rc = -1;
		}
	}
	free(word);
	c->nex = l.n;
	for (int64_t e = 0; e < c->nex && !rc; e++)
		c->ex[e].ids = c->ids + c->at[e];
	rt_lambada_free(&l);
	return rc;
}

static void print_lambada(const Args *a, const char *tokname, int64_t n, int64_t right)
{
	char b1[32], b2[32];
	double acc = 100.0 * (double)right / (double)n;
	if (a->json) {
		printf("{\"task\": \"lambada\", \"file\": ");
		cli_json_str(a->lambada);
		printf(", \"tokenizer\": \"%s\", \"examples\": %lld, \"correct\": %lld, \"accuracy\": %.6f}\n", tokname,
		       (long long)n, (long long)right, acc / 100);
		return;
	}
	printf("%s: %s of %s last words predicted whole (%s, greedy): accuracy %.2f%%\n", a->lambada, mgl_commas(right, b1),
	       mgl_commas(n, b2), tokname, acc);
}

/* ---------------------------------------------------------------- the command */

int cmd_eval(Args *a)
{
	if (!a->wikitext == !a->lambada)
		return usage_error("eval", "give one of --wikitext FILE and --lambada FILE.jsonl%s", "");
	if (a->stride && !a->wikitext)
		return usage_error("eval", "--stride goes with --wikitext%s", "");
	const RtBackend *be = cli_backend(a);
	if (!be)
		return 2;
	char err[1024], path[4096];
	RtCkpt ck;
	RtCkptMeta m;
	RtTokenizer *tok0;
	if (cli_ckpt_open(a, path, sizeof path, &ck, &m, &tok0))
		return 1;
	RtTokenizer *volatile tok = tok0;
	const char *tokname = m.tokenizer && !strncmp(m.tokenizer, "gpt2", 4) ? "gpt2" : "bytes";
	MglCtx c = {0};
	jmp_buf jb;
	c.fail = &jb;
	volatile int status = 0;
	RtJob *volatile job = NULL;
	Wiki w = {0};
	Cloze cz = {0};
	bool *right = NULL;
	if (!setjmp(jb)) {
		MglTarget t = cli_target(a, be);
		MglGraph *g;
		MglPlan *p = cli_plan(&c, path, m.source, m.preset, m.set, &t, &g);
		int64_t T = p->seq, half = T > 1 ? T / 2 : 1;
		int64_t stride = a->stride ? a->stride : half < DEFAULT_STRIDE ? half : DEFAULT_STRIDE;
		if (a->stride > T) {
			char b[32];
			fprintf(stderr, "mgl: error: --stride %lld is more than the window of %s tokens (--seq)\n",
				(long long)a->stride, mgl_commas(T, b));
			status = 2;
			goto done;
		}
		if (a->wikitext ? read_wikitext(a->wikitext, tok, &w, err, sizeof err)
				: read_lambada(a->lambada, tok, T, &cz, err, sizeof err))
			goto fail;
		if (!(job = rt_job_open(p, be, err, sizeof err)) || cli_ckpt_params(job, &ck, path, err, sizeof err))
			goto fail;
		char b1[32], b2[32], b3[32];
		fprintf(stderr, "mgl: evaluating %s (%s parameters) on %s: tp %d, dp %d, batch %s x %s\n", g->model,
			mgl_commas(mgl_param_count(g), b1), be->name, p->tp, p->dp, mgl_commas(p->batch, b2), mgl_commas(T, b3));
		Progress pr = {.what = a->wikitext ? "windows" : "examples", .start = now(), .tty = isatty(2)};
		pr.shown = pr.start;
		if (a->wikitext) {
			RtPpl r;
			if (rt_eval_ppl(job, w.ids, (int64_t)w.n, stride, progress, &pr, &r, err, sizeof err))
				goto fail;
			print_wikitext(a, tokname, &w, &r, T, stride);
		} else {
			if (!(right = calloc((size_t)cz.nex, sizeof *right))) {
				snprintf(err, sizeof err, "out of memory");
				goto fail;
			}
			if (rt_eval_cloze(job, cz.ex, cz.nex, progress, &pr, right, err, sizeof err))
				goto fail;
			int64_t n = 0;
			for (int64_t e = 0; e < cz.nex; e++)
				n += right[e];
			print_lambada(a, tokname, cz.nex, n);
		}
	} else {
		status = c.status ? c.status : 1;
	}
	goto done;
fail:
	fprintf(stderr, "mgl: error: %s\n", err);
	status = 1;
done:
	rt_job_close(job);
	free(w.ids);
	free(cz.ids);
	free(cz.ex);
	free(cz.at);
	free(right);
	rt_tok_free(tok);
	rt_ckpt_free(&ck);
	mgl_arena_free(&c.arena);
	return status;
}
