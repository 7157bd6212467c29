/* runtime/bert_data.c — BERT's pre-training examples: sentence pairs with masked tokens,
 * made on the fly from a token stream, each a pure function of (seed, example index).
 *
 * The stream (what `mgl tokenize --bert` writes into a shard, rt_bert_encode) keeps the
 * text's structure with [SEP], which text never encodes to: each sentence is its tokens
 * then [SEP], and each document ends with one more, as BERT's own input files end a
 * sentence with a newline and a document with an empty line:
 *
 *   the cat sat . [SEP] it purred . [SEP] [SEP] another document . [SEP] [SEP]
 *
 * An example follows ALBERT's create_pretraining_data.py. It starts at a sentence drawn
 * uniformly from those that have a sentence after them in their document, takes sentences
 * until they fill the sequence (at least two), and cuts them at a random sentence boundary
 * into A and B; a document of one sentence is cut at a random token instead. With
 * probability 1/2, A and B are swapped: the sentence-order label is 1 when they were, 0
 * when in order. The pair is truncated as BERT's truncate_seq_pair does, a token at a time
 * from the longer side, from its front or back by a coin each, to S - 3 tokens, and laid
 * out as [CLS] A [SEP] B [SEP] then [PAD]s. Of the tokens of A and B, round(15%) (at least
 * one) are chosen for the masked-LM loss, uniformly: 80% of them become [MASK], 10% a token
 * drawn uniformly from the vocabulary's other (not special) tokens, 10% stay; their targets
 * are the original ids and every other position's is RT_BERT_IGNORE.
 *
 * Every example draws from its own random stream, seeded by the seed and its index, so a
 * batch is the same whatever the batch size, data parallelism or resumption that asks for
 * it; the stream is checked once, when opened, and nothing after can fail.
 */
#include "runtime.h"
#include "backend.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- the stream */

int rt_bert_open(RtBertData *d, const uint16_t *tokens, int64_t n, const RtBertVocab *v, const char *name, char *err,
		 size_t errlen)
{
	memset(d, 0, sizeof *d);
	char b1[32], b2[32];
	if (n <= 0) {
		rt_errf(err, errlen, "%s: no tokens: a BERT stream holds documents of sentences", name);
		return -1;
	}
	if (v->vocab <= 5) {
		rt_errf(err, errlen, "%s: the vocabulary has %d tokens, no more than the special ones", name, v->vocab);
		return -1;
	}
	int64_t nsent = 0;
	for (int64_t i = 0; i < n; i++) {
		int32_t t = tokens[i];
		if (t >= v->vocab) {
			rt_errf(err, errlen, "%s: token %d at position %s is beyond the vocabulary (%s)", name, t,
				mgl_commas(i, b1), mgl_commas(v->vocab, b2));
			return -1;
		}
		if (t == v->pad || t == v->cls || t == v->mask) {
			rt_errf(err, errlen, "%s: position %s holds %s, which a BERT stream never does (it holds text and "
				"[SEP]s; is this a BERT shard?)", name, mgl_commas(i, b1),
				t == v->pad ? "[PAD]" : t == v->cls ? "[CLS]" : "[MASK]");
			return -1;
		}
		if (t != v->sep)
			continue;
		/* a [SEP] ends a sentence, or after one a document, but never an empty one */
		bool ends_sentence = i > 0 && tokens[i - 1] != v->sep;
		if (!ends_sentence && (i < 2 || tokens[i - 2] == v->sep)) {
			rt_errf(err, errlen, "%s: position %s: an empty document (a BERT stream is sentences each followed by "
				"[SEP], and documents each followed by one more [SEP]; is this a BERT shard?)", name,
				mgl_commas(i, b1));
			return -1;
		}
		nsent += ends_sentence;
	}
	if (tokens[n - 1] != v->sep || n < 2 || tokens[n - 2] != v->sep) {
		rt_errf(err, errlen, "%s: the last document is not closed: a BERT stream ends with [SEP] [SEP] (is this a "
			"BERT shard?)", name);
		return -1;
	}
	d->v = *v;
	d->tokens = tokens;
	d->ntokens = n;
	d->sent = malloc((size_t)nsent * sizeof *d->sent);
	d->starts = malloc((size_t)nsent * sizeof *d->starts);
	if (!d->sent || !d->starts) {
		rt_bert_close(d);
		rt_errf(err, errlen, "%s: out of memory for %s sentences", name, mgl_commas(nsent, b1));
		return -1;
	}
	/* the sentences, and those an example may start at */
	int64_t doc_first = 0, at = 0;
	for (int64_t i = 0; i < n; i++) {
		if (tokens[i] != v->sep)
			continue;
		if (tokens[i - 1] != v->sep) {   /* a sentence ends */
			d->sent[d->nsent++] = (RtBertSentence){.start = at, .len = i - at};
		} else {                         /* a document ends: sentences [doc_first, nsent) */
			for (int64_t s = doc_first; s < d->nsent; s++) {
				d->sent[s].doc_end = d->nsent;
				if (s + 1 < d->nsent || (s == doc_first && d->sent[s].len >= 2))
					d->starts[d->nstarts++] = s;
			}
			doc_first = d->nsent;
		}
		at = i + 1;
	}
	if (!d->nstarts) {
		rt_errf(err, errlen, "%s: no document has two sentences, nor a sentence of two tokens: nothing to make a "
			"sentence pair of", name);
		rt_bert_close(d);
		return -1;
	}
	return 0;
}

void rt_bert_close(RtBertData *d)
{
	free(d->sent);
	free(d->starts);
	memset(d, 0, sizeof *d);
}

/* ---------------------------------------------------------------- one example */

static uint64_t next(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	return rt_mix64(*s);
}

static int64_t below(uint64_t *s, int64_t n) { return (int64_t)(next(s) % (uint64_t)n); }
static double uniform(uint64_t *s) { return (double)(next(s) >> 11) * 0x1p-53; }

/* How many of t coins come up heads: Binomial(t, 1/2), 64 coins a draw. */
static int64_t heads(uint64_t *s, int64_t t)
{
	int64_t h = 0;
	for (; t >= 64; t -= 64)
		h += __builtin_popcountll(next(s));
	return t ? h + __builtin_popcountll(next(s) & ((1ull << t) - 1)) : h;
}

/* n tokens of a document, from sentence `sent`'s first token on, skipping `skip`; the
 * [SEP]s between sentences are not among them. */
typedef struct { int64_t sent, skip, n; } Span;

static void copy_span(const RtBertData *d, Span sp, int32_t *out)
{
	int64_t s = sp.sent, skip = sp.skip;
	while (skip >= d->sent[s].len)
		skip -= d->sent[s++].len;
	for (int64_t k = 0; k < sp.n;) {
		const RtBertSentence *x = &d->sent[s++];
		for (int64_t i = x->start + skip; i < x->start + x->len && k < sp.n; i++)
			out[k++] = d->tokens[i];
		skip = 0;
	}
}

/* A token other than the special ones, uniformly. */
static int32_t random_token(const RtBertData *d, uint64_t *s)
{
	int32_t sp[5] = {d->v.pad, d->v.unk, d->v.cls, d->v.sep, d->v.mask};
	for (int i = 1; i < 5; i++)   /* sorted, so that skipping each in turn counts right */
		for (int j = i; j > 0 && sp[j - 1] > sp[j]; j--) {
			int32_t x = sp[j];
			sp[j] = sp[j - 1], sp[j - 1] = x;
		}
	int32_t id = (int32_t)below(s, d->v.vocab - 5);
	for (int i = 0; i < 5; i++)
		id += id >= sp[i];
	return id;
}

/* Example `index` into row b of out (sequences of S). */
static void example(const RtBertData *d, uint64_t seed, int64_t index, int64_t S, const RtBertBatch *out, int64_t b)
{
	uint64_t rng = rt_mix64(seed ^ rt_mix64((uint64_t)index));
	int64_t max = S - 3;
	/* the sentences, and A and B among them */
	int64_t s0 = d->starts[below(&rng, d->nstarts)], end = d->sent[s0].doc_end;
	Span a = {s0, 0, 0}, bb;
	if (s0 + 1 == end) {   /* a document of one sentence: cut it at a token */
		a.n = 1 + below(&rng, d->sent[s0].len - 1);
		bb = (Span){s0, a.n, d->sent[s0].len - a.n};
	} else {
		int64_t e = s0 + 1, total = d->sent[s0].len;
		while (e < end && (e - s0 < 2 || total < max))
			total += d->sent[e++].len;
		int64_t cut = s0 + 1 + below(&rng, e - s0 - 1);
		for (int64_t s = s0; s < cut; s++)
			a.n += d->sent[s].len;
		bb = (Span){cut, 0, total - a.n};
	}
	/* truncate_seq_pair: a token at a time from the longer (B when they tie) */
	int64_t over = a.n + bb.n - max, ta = 0, tb = 0;
	if (over > 0) {
		int64_t gap = a.n > bb.n ? a.n - bb.n : bb.n - a.n, dd = gap < over ? gap : over;
		*(a.n > bb.n ? &ta : &tb) += dd;
		over -= dd;
		tb += (over + 1) / 2;
		ta += over / 2;
		int64_t fa = heads(&rng, ta), fb = heads(&rng, tb);
		a.skip += fa, a.n -= ta;
		bb.skip += fb, bb.n -= tb;
	}
	bool swap = next(&rng) & 1;
	if (swap) {
		Span x = a;
		a = bb, bb = x;
	}
	/* [CLS] A [SEP] B [SEP] [PAD]... */
	int32_t *tok = out->tokens + b * S, *seg = out->segments + b * S, *mask = out->mask + b * S;
	int32_t *tgt = out->mlm_targets + b * S;
	int64_t len = a.n + bb.n + 3;
	tok[0] = d->v.cls;
	copy_span(d, a, tok + 1);
	tok[1 + a.n] = d->v.sep;
	copy_span(d, bb, tok + 2 + a.n);
	tok[len - 1] = d->v.sep;
	for (int64_t i = 0; i < S; i++) {
		seg[i] = i >= 2 + a.n && i < len;
		mask[i] = i < len;
		tgt[i] = RT_BERT_IGNORE;
		if (i >= len)
			tok[i] = d->v.pad;
	}
	out->sop_targets[b] = swap;
	/* the masked positions: k of the n text tokens, by selection sampling (Knuth's S) */
	int64_t n = a.n + bb.n, k = (n * 15 + 50) / 100, seen = 0;
	if (k < 1)
		k = 1;
	for (int64_t i = 1; i < len - 1 && k > 0; i++) {
		if (i == 1 + a.n)
			continue;   /* the middle [SEP] */
		if (below(&rng, n - seen++) >= k)
			continue;
		k--;
		tgt[i] = tok[i];
		double u = uniform(&rng);
		if (u < 0.8)
			tok[i] = d->v.mask;
		else if (u < 0.9)
			tok[i] = random_token(d, &rng);
	}
}

int rt_bert_batch(const RtBertData *d, uint64_t seed, int64_t first, int64_t B, int64_t S, const RtBertBatch *out,
		  char *err, size_t errlen)
{
	if (S < 5 || B < 1) {
		rt_errf(err, errlen, "%s", S < 5 ? "a BERT sequence needs at least 5 positions: [CLS] A [SEP] B [SEP]" :
			"a batch needs at least one sequence");
		return -1;
	}
	for (int64_t b = 0; b < B; b++)
		example(d, seed, first + b, S, out, b);
	return 0;
}

/* ---------------------------------------------------------------- text to a stream */

static bool blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }
static bool space(char c) { return blank(c) || c == '\n'; }

static int put_sep(int32_t **ids, size_t *n, size_t *cap, int32_t sep)
{
	if (*n == *cap) {
		size_t ncap = *cap ? 2 * *cap : 1024;
		int32_t *p = realloc(*ids, ncap * sizeof *p);
		if (!p)
			return -1;
		*ids = p;
		*cap = ncap;
	}
	(*ids)[(*n)++] = sep;
	return 0;
}

/* Encodes the sentence text[a, b), trimmed, and its [SEP] if it has ids: 1 if it had. */
static int sentence(RtTokenizer *t, int32_t sep, const char *text, size_t a, size_t b, int32_t **ids, size_t *n,
		    size_t *cap)
{
	while (a < b && space(text[a]))
		a++;
	while (b > a && space(text[b - 1]))
		b--;
	size_t n0 = *n;
	if (a == b)
		return 0;
	if (rt_tok_encode(t, text + a, b - a, ids, n, cap))
		return -1;
	return *n == n0 ? 0 : put_sep(ids, n, cap, sep) ? -1 : 1;
}

int rt_bert_encode(RtTokenizer *t, const RtBertVocab *v, const char *text, size_t len, int32_t **ids, size_t *n,
		   size_t *cap)
{
	size_t n0 = *n, start = 0;   /* the sentence being read starts at text[start] */
	bool any = false;            /* the document has a sentence */
	for (size_t i = 0; i < len;) {
		/* at a line's start: a blank line, or the end of the text, ends the document */
		size_t e = i;
		while (e < len && blank(text[e]))
			e++;
		bool doc_end = e == len || text[e] == '\n';
		size_t eol = e;
		while (eol < len && text[eol] != '\n')
			eol++;
		if (!doc_end) {
			for (size_t j = e; j < eol; j++) {
				if (text[j] != '.' && text[j] != '!' && text[j] != '?')
					continue;
				size_t k = j + 1;
				while (k < eol && strchr("\"')]}", text[k]))
					k++;
				if (k < len && !space(text[k]))
					continue;
				int r = sentence(t, v->sep, text, start, k, ids, n, cap);
				if (r < 0)
					goto oom;
				any |= r;
				start = j = k;
			}
		} else {
			int r = sentence(t, v->sep, text, start, i, ids, n, cap);
			if (r < 0 || ((any |= r) && put_sep(ids, n, cap, v->sep)))
				goto oom;
			any = false;
			start = eol;
		}
		i = eol + 1;
	}
	int r = sentence(t, v->sep, text, start, len, ids, n, cap);   /* the last document */
	if (r >= 0 && !((any |= r) && put_sep(ids, n, cap, v->sep)))
		return 0;
oom:
	*n = n0;
	return -1;
}
