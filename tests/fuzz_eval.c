/* tests/fuzz_eval.c — libFuzzer target for the data readers of zero-shot evaluation
 * (runtime/eval.c): LAMBADA's JSON lines, WikiText's detokenizer and word count, and the
 * strict split of a text into its context and last word.
 *
 * The first byte picks what the rest is:
 *   0  a lambada_test.jsonl. Refused: the message must name the file. Accepted: at least
 *      one text, each of valid UTF-8, on lines that increase; and each text splits (below).
 *   1  a wiki.test.tokens. The detokenized text is never longer (every rule removes or
 *      keeps bytes), and the count of original tokens is at least 1 and at most the
 *      spaces plus one.
 *   2  a text to split: the word is not empty and holds no white space; the context ends
 *      before it and neither starts nor ends with white space.
 *   clang -fsanitize=fuzzer,address,undefined -Iplan -Iruntime tests/fuzz_eval.c runtime/eval.c \
 *     runtime/exec.c runtime/json.c runtime/io.c plan/plan.c plan/common.c
 */
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static bool utf8(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		int k = rt_utf8_decode((const unsigned char *)s + i, n - i, &cp);
		if (!k)
			return false;
		i += (size_t)k;
	}
	return true;
}

static bool space(char c) { return c && strchr(" \t\n\v\f\r", c); }

static bool white(const char *s, size_t n)   /* ASCII white space, or a multi-byte character */
{
	return n && (space(s[0]) || (s[0] >= 0x1c && s[0] <= 0x1f) || (unsigned char)s[0] >= 0x80);
}

static void split(const char *t, size_t n)
{
	size_t cs, ce, ws, we;
	if (rt_lambada_split(t, n, &cs, &ce, &ws, &we)) {
		for (size_t i = 0; i < n; i++)
			if (!white(t + i, n - i))
				abort();   /* refused a text with something in it that is not white space */
		return;
	}
	if (!(cs <= ce && ce <= ws && ws < we && we <= n))
		abort();
	for (size_t i = ws; i < we; i++)
		if (space(t[i]))
			abort();
	if (ce > cs && (space(t[cs]) || space(t[ce - 1])))
		abort();
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	if (size < 1 || size > 1 << 16)
		return 0;
	const char *s = (const char *)data + 1;
	size_t n = size - 1;
	char err[512];
	switch (data[0] % 3) {
	case 0: {
		RtLambada l;
		if (rt_lambada_parse(s, n, "l.jsonl", &l, err, sizeof err)) {
			if (strncmp(err, "l.jsonl:", 8)) {
				fprintf(stderr, "fuzz_eval: refused without naming the file: %s\n", err);
				abort();
			}
			return 0;
		}
		if (l.n < 1)
			abort();
		for (int64_t i = 0; i < l.n; i++) {
			if (!utf8(l.ex[i].text, l.ex[i].len) || (i && l.ex[i].line <= l.ex[i - 1].line))
				abort();
			split(l.ex[i].text, l.ex[i].len);
		}
		rt_lambada_free(&l);
		break;
	}
	case 1: {
		size_t dn, spaces = 0;
		char *d = rt_wikitext_detok(s, n, &dn);
		if (!d || dn > n || d[dn])
			abort();
		free(d);
		for (size_t i = 0; i < n; i++)
			spaces += s[i] == ' ';
		int64_t w = rt_wikitext_words(s, n);
		if (w < 1 || w > (int64_t)spaces + 1)
			abort();
		break;
	}
	case 2:
		split(s, n);
		break;
	}
	return 0;
}
