/* tests/fuzz_bert.c — libFuzzer target for BERT's data: the vocab.txt reader, WordPiece and
 * rt_bert_encode on what it loads, and the examples made from a token stream.
 *
 * The first byte picks what the rest is:
 *   0  vocab.txt, a NUL, then text. Refused: the message must name the file. Accepted:
 *      every line is a token (the vocabulary is the line count), the special ids are
 *      distinct and in range, the text's ids are all in the vocabulary, and its BERT
 *      stream opens as a stream (unless it holds nothing to pair, or the vocabulary is only
 *      the special tokens), with no special token but [SEP] and [UNK].
 *   1  a stream: uint16 tokens (mod 262, so 261 is beyond the byte-level vocabulary), then
 *      a seed; rt_bert_open must accept or refuse with a message naming it, and what it
 *      accepts must give batches of every length from 5 that are laid out as BERT's.
 *
 *   clang -fsanitize=fuzzer,address,undefined -Iplan -Iruntime tests/fuzz_bert.c \
 *     runtime/tokenizer.c runtime/bert_data.c runtime/json.c runtime/io.c plan/plan.c plan/common.c
 */
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static char dir[64], path[128];

static void cleanup(void)
{
	unlink(path);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	snprintf(dir, sizeof dir, "/tmp/mgl-fuzz-bert-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(path, sizeof path, "%s/vocab.txt", dir);
	atexit(cleanup);
	return 0;
}

#define require(c) do { if (!(c)) { fprintf(stderr, "fuzz_bert: %s\n", #c); abort(); } } while (0)

/* Every row of out laid out as [CLS] A [SEP] B [SEP] [PAD]... with segments, mask and targets. */
static void check_batch(const RtBertVocab *v, const RtBertBatch *out, int64_t B, int64_t S)
{
	for (int64_t r = 0; r < B; r++) {
		const int32_t *tok = out->tokens + r * S, *seg = out->segments + r * S, *mask = out->mask + r * S;
		const int32_t *tgt = out->mlm_targets + r * S;
		require(tok[0] == v->cls && (out->sop_targets[r] == 0 || out->sop_targets[r] == 1));
		int64_t sep[2] = {-1, -1}, ns = 0, chosen = 0;
		for (int64_t i = 1; i < S; i++)
			if (tok[i] == v->sep) {
				require(ns < 2);
				sep[ns++] = i;
			}
		require(ns == 2 && sep[0] > 1 && sep[1] > sep[0] + 1);
		for (int64_t i = 0; i < S; i++) {
			bool special = i == 0 || i == sep[0] || i == sep[1], pad = i > sep[1];
			require(seg[i] == (i > sep[0] && i <= sep[1]) && mask[i] == !pad && (tok[i] == v->pad) == pad);
			require(tok[i] >= 0 && tok[i] < v->vocab && (tok[i] != v->cls || i == 0));
			require(tgt[i] == RT_BERT_IGNORE || (!special && !pad && tgt[i] != v->sep && tgt[i] < v->vocab));
			chosen += tgt[i] != RT_BERT_IGNORE;
		}
		int64_t n = sep[1] - 2, k = (n * 15 + 50) / 100;
		require(chosen == (k < 1 ? 1 : k));
	}
}

static void stream(const unsigned char *p, size_t n)
{
	RtBertVocab v;
	RtTokenizer *t = rt_tok_bert_bytes();
	rt_tok_bert(t, &v);
	rt_tok_free(t);
	if (n < 8)
		return;
	uint64_t seed;
	memcpy(&seed, p + n - 8, 8);
	n -= 8;
	int64_t m = (int64_t)(n / 2);
	uint16_t *tok = malloc((size_t)m * sizeof *tok + 1);
	for (int64_t i = 0; i < m; i++)
		tok[i] = (uint16_t)((p[2 * i] | p[2 * i + 1] << 8) % 262);
	RtBertData d;
	char err[512];
	if (rt_bert_open(&d, tok, m, &v, "fuzz.bin", err, sizeof err)) {
		require(!strncmp(err, "fuzz.bin: ", 10) && !d.sent);
		free(tok);
		return;
	}
	enum { B = 3, S_MAX = 40 };
	int32_t a[5][B * S_MAX], sop[B];
	RtBertBatch out = {a[0], a[1], a[2], a[3], sop};
	for (int64_t S = 5; S <= S_MAX; S += 7) {
		require(!rt_bert_batch(&d, seed, (int64_t)(seed % 1000), B, S, &out, err, sizeof err));
		check_batch(&v, &out, B, S);
	}
	rt_bert_close(&d);
	free(tok);
}

static void vocab(const unsigned char *p, size_t n)
{
	const unsigned char *nul = memchr(p, 0, n);
	size_t vlen = nul ? (size_t)(nul - p) : n;
	FILE *f = fopen(path, "wb");
	require(f && fwrite(p, 1, vlen, f) == vlen && !fclose(f));
	char err[512];
	RtTokenizer *t = rt_tok_wordpiece(path, err, sizeof err);
	if (!t) {
		require(!strncmp(err, path, strlen(path)) && err[strlen(path)] == ':');
		return;
	}
	RtBertVocab v;
	require(!rt_tok_bert(t, &v) && v.vocab == rt_tok_vocab(t));
	size_t lines = 0, start = vlen >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3) ? 3 : 0;
	for (size_t i = start; i < vlen; i++)
		lines += p[i] == '\n';
	lines += vlen > start && p[vlen - 1] != '\n';
	require((size_t)v.vocab == lines);
	int32_t sp[5] = {v.pad, v.unk, v.cls, v.sep, v.mask};
	for (int i = 0; i < 5; i++) {
		require(sp[i] >= 0 && sp[i] < v.vocab);
		for (int j = 0; j < i; j++)
			require(sp[i] != sp[j]);
	}
	const char *text = nul ? (const char *)nul + 1 : "";
	size_t tlen = nul ? n - vlen - 1 : 0, nids = 0, cap = 0;
	int32_t *ids = NULL;
	require(!rt_tok_encode(t, text, tlen, &ids, &nids, &cap));
	for (size_t i = 0; i < nids; i++)
		require(ids[i] >= 0 && ids[i] < v.vocab);
	size_t dlen;
	free(rt_tok_decode(t, ids, nids, &dlen));
	nids = 0;
	require(!rt_bert_encode(t, &v, text, tlen, &ids, &nids, &cap));
	uint16_t *u = malloc(nids * sizeof *u + 1);
	for (size_t i = 0; i < nids; i++) {
		require(ids[i] != v.pad && ids[i] != v.cls && ids[i] != v.mask);
		u[i] = (uint16_t)ids[i];
	}
	RtBertData d;
	if (nids && rt_bert_open(&d, u, (int64_t)nids, &v, "s", err, sizeof err))
		require(strstr(err, "nothing to make a sentence pair of") || strstr(err, "no more than the special ones"));
	else if (nids)
		rt_bert_close(&d);
	free(u);
	free(ids);
	rt_tok_free(t);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	if (size < 1 || size > 1 << 16)
		return 0;
	if (data[0] % 2)
		stream(data + 1, size - 1);
	else
		vocab(data + 1, size - 1);
	return 0;
}
