/* tests/fuzz_data.c — libFuzzer target for the runtime's data side: the shard reader, the
 * GPT-2 tokenizer's loader, and its encoder, with BPE checked against encoder.py's own
 * algorithm.
 *
 * The first byte picks what the rest is:
 *   0  a shard file. Refused: the message must name the file. Accepted: its count must be
 *      the file's, and writing the tokens and reading them back must give them again.
 *   1  encoder.json, a NUL, vocab.bpe, a NUL, text: the loader on files as given. Refused:
 *      the message must name the file; accepted: the text is checked as below.
 *   2  text for GPT-2's own tokenizer (tests/data/gpt2, or $MGL_GPT2_DIR).
 *   3  a recipe for a small tokenizer (merges over the bytes, which the fuzzer chooses;
 *      optionally shuffled, so that some orders are not BPE's), then text. A merge list in
 *      BPE's order must load; whatever loads is checked as below.
 * "Checked" means: every pre-token's BPE equals encoder.py's quadratic loop (naive_bpe),
 * the whole text's ids are the pre-tokens' ids in a row, every id is in the vocabulary,
 * and decoding gives back the text's very bytes. The heap BPE matches encoder.py only for
 * merge lists the loader accepts (see runtime/tokenizer.c), which mode 3 tests directly.
 *
 * The statics of runtime/tokenizer.c are needed for that, so it is included, not linked:
 *   clang -fsanitize=fuzzer,address,undefined -Iplan -Iruntime tests/fuzz_data.c runtime/data.c \
 *     runtime/json.c runtime/io.c plan/plan.c plan/common.c
 * Run it from the repository root (or set MGL_GPT2_DIR). Files go to a directory under /tmp.
 */
#include "../runtime/tokenizer.c"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static char dir[64];
static RtTokenizer *gpt2;
static Alphabet abc;

static void cleanup(void)
{
	char path[128];
	const char *names[] = {"shard.bin", "copy.bin", "encoder.json", "vocab.bpe"};
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		unlink(path);
	}
	rmdir(dir);
	rt_tok_free(gpt2);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	snprintf(dir, sizeof dir, "/tmp/mgl-fuzz-data-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	atexit(cleanup);
	alphabet_init(&abc);
	char err[512];
	const char *env = getenv("MGL_GPT2_DIR");
	gpt2 = rt_tok_gpt2(env ? env : "tests/data/gpt2", err, sizeof err);
	if (!gpt2 && !env)
		gpt2 = rt_tok_gpt2("../../tests/data/gpt2", err, sizeof err);   /* from build/fuzz, as make fuzz runs */
	if (!gpt2) {
		fprintf(stderr, "fuzz_data: %s\n  (run from the repository root, or set MGL_GPT2_DIR)\n", err);
		abort();
	}
	return 0;
}

static const char *at(const char *name)
{
	static char path[2][128];
	static int k;
	k ^= 1;
	snprintf(path[k], sizeof path[k], "%s/%s", dir, name);
	return path[k];
}

static void put_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f))
		abort();
}

static void must_name(const char *err, const char *path, const char *what)
{
	size_t n = strlen(path);
	if (strncmp(err, path, n) || err[n] != ':') {
		fprintf(stderr, "fuzz_data: %s refused without naming %s: %s\n", what, path, err);
		abort();
	}
}

/* ---------------------------------------------------------------- 0: shards */

static void shard(const unsigned char *data, size_t size)
{
	char err[512];
	RtShard s;
	const char *path = at("shard.bin");
	put_file(path, data, size);
	if (rt_shard_read(path, &s, err, sizeof err)) {
		must_name(err, path, "a shard");
		return;
	}
	if (size != 1024 + 2 * (size_t)s.ntokens)
		abort();
	RtShard c;
	if (rt_shard_write(at("copy.bin"), s.tokens, s.ntokens, err, sizeof err) ||
	    rt_shard_read(at("copy.bin"), &c, err, sizeof err)) {
		fprintf(stderr, "fuzz_data: a shard's tokens do not round trip: %s\n", err);
		abort();
	}
	if (c.ntokens != s.ntokens || memcmp(c.tokens, s.tokens, (size_t)s.ntokens * 2))
		abort();
	rt_shard_free(&c);
	rt_shard_free(&s);
}

/* ---------------------------------------------------------------- checking a tokenizer on text */

/* encoder.py's bpe(): the lowest-ranked pair, every occurrence left to right, again. */
static size_t naive_bpe(const RtTokenizer *t, const unsigned char *w, size_t m, int32_t *out)
{
	size_t n = m;
	for (size_t i = 0; i < m; i++)
		out[i] = t->byte_id[w[i]];
	for (;;) {
		int32_t best = -1;
		for (size_t i = 0; i + 1 < n; i++) {
			int32_t r = pair_rank(t, out[i], out[i + 1]);
			if (r >= 0 && (best < 0 || r < best))
				best = r;
		}
		if (best < 0)
			return n;
		const Merge *mg = &t->merges[best];
		size_t o = 0;
		for (size_t i = 0; i < n;) {
			if (i + 1 < n && out[i] == mg->left && out[i + 1] == mg->right)
				out[o++] = mg->result, i += 2;
			else
				out[o++] = out[i++];
		}
		n = o;
	}
}

static void check_text(RtTokenizer *t, const unsigned char *text, size_t len)
{
	int32_t *all = NULL, *one = NULL, *ref = malloc((len ? len : 1) * sizeof *ref);
	size_t nall = 0, capall = 0, none = 0, capone = 0;
	/* pre-token by pre-token, each against the naive loop */
	for (size_t i = 0; i < len;) {
		size_t end = pretoken_end(text, len, i);
		if (end <= i || end > len)
			abort();
		size_t before = none;
		if (bpe_word(t, text + i, end - i, &one, &none, &capone))
			abort();
		size_t k = naive_bpe(t, text + i, end - i, ref);
		if (k != none - before || (k && memcmp(ref, one + before, k * sizeof *ref))) {
			fprintf(stderr, "fuzz_data: BPE of a %zu-byte pre-token differs from encoder.py's loop\n", end - i);
			abort();
		}
		i = end;
	}
	/* the whole text at once, after something else, appends the same ids */
	if (rt_tok_encode(t, "x", 1, &all, &nall, &capall))
		abort();
	size_t skip = nall;
	if (rt_tok_encode(t, (const char *)text, len, &all, &nall, &capall))
		abort();
	if (nall - skip != none || (none && memcmp(all + skip, one, none * sizeof *one)))
		abort();
	size_t blen;
	char *back = rt_tok_decode(t, all + skip, nall - skip, &blen);
	if (!back || blen != len || memcmp(back, text, len)) {
		fprintf(stderr, "fuzz_data: decode(encode(text)) is not the text\n");
		abort();
	}
	free(back);
	free(all);
	free(one);
	free(ref);
}

/* ---------------------------------------------------------------- 1: tokenizer files as given */

static void files(const unsigned char *data, size_t size)
{
	const unsigned char *z1 = memchr(data, 0, size);
	if (!z1)
		return;
	const unsigned char *v = z1 + 1, *z2 = memchr(v, 0, (size_t)(data + size - v));
	if (!z2)
		return;
	put_file(at("encoder.json"), data, (size_t)(z1 - data));
	put_file(at("vocab.bpe"), v, (size_t)(z2 - v));
	char err[512];
	RtTokenizer *t = rt_tok_gpt2(dir, err, sizeof err);
	if (!t) {
		if (strncmp(err, dir, strlen(dir))) {
			fprintf(stderr, "fuzz_data: tokenizer files refused without naming one: %s\n", err);
			abort();
		}
		return;
	}
	check_text(t, z2 + 1, (size_t)(data + size - z2 - 1));
	rt_tok_free(t);
}

/* ---------------------------------------------------------------- 3: a small tokenizer from a recipe */

enum { MAX_TOKENS = 256 + 64, MAX_LEN = 48 };

typedef struct { unsigned char b[MAX_LEN]; int n; } Tok;

/* The bytes of a token as the files spell them, JSON-escaped when json. */
static void spell_to(FILE *f, const Tok *k, bool json)
{
	for (int i = 0; i < k->n; i++) {
		unsigned cp = abc.cp_of_byte[k->b[i]];
		if (json && (cp == '"' || cp == '\\'))
			fputc('\\', f);
		if (cp < 0x80)
			fputc((int)cp, f);
		else
			fputc((int)(0xC0 | cp >> 6), f), fputc((int)(0x80 | (cp & 0x3F)), f);
	}
}

static void recipe(const unsigned char *data, size_t size)
{
	if (size < 3)
		return;
	int want = data[0] % 64, flags = data[1];
	data += 2, size -= 2;
	static Tok tok[MAX_TOKENS];
	static int merges[64][3];   /* left, right, result: token indices */
	static bool used[MAX_TOKENS];
	int ntok = 256, nm = 0;
	memset(used, 0, sizeof used);
	/* the merges join bytes of a small alphabet (so that the text meets them) or any */
	static const unsigned char small[] = "ab c'\n";
	for (int b = 0; b < 256; b++)
		tok[b].b[0] = (unsigned char)b, tok[b].n = 1;
	for (int i = 0; i < want && size >= 2; i++, data += 2, size -= 2) {
		int pick[2];
		for (int s = 0; s < 2; s++) {
			unsigned x = data[s];
			pick[s] = (x & 1) && ntok > 256 ? 256 + (int)(x >> 1) % (ntok - 256)
							 : (flags & 2 ? small[(x >> 1) % 6] : (int)(x >> 1));
		}
		Tok r;
		r.n = tok[pick[0]].n + tok[pick[1]].n;
		if (r.n > MAX_LEN)
			continue;
		memcpy(r.b, tok[pick[0]].b, (size_t)tok[pick[0]].n);
		memcpy(r.b + tok[pick[0]].n, tok[pick[1]].b, (size_t)tok[pick[1]].n);
		int res = -1;
		bool dup = false;
		for (int k = 0; k < ntok; k++)
			if (tok[k].n == r.n && !memcmp(tok[k].b, r.b, (size_t)r.n))
				res = k;
		for (int m = 0; m < nm; m++)
			dup |= merges[m][0] == pick[0] && merges[m][1] == pick[1];
		/* a token made again after a merge used it is not a list BPE learns (the loader
		 * refuses it: see runtime/tokenizer.c) */
		if (dup || (res >= 0 && used[res]))
			continue;
		if (res < 0)
			tok[res = ntok++] = r;
		used[pick[0]] = used[pick[1]] = true;
		merges[nm][0] = pick[0], merges[nm][1] = pick[1], merges[nm][2] = res, nm++;
	}
	/* shuffled: some orders use a token before the merge that makes it */
	bool shuffled = flags & 1;
	if (shuffled)
		for (int i = nm - 1; i > 0 && size; i--, data++, size--) {
			int j = data[0] % (i + 1), tmp[3];
			memcpy(tmp, merges[i], sizeof tmp);
			memcpy(merges[i], merges[j], sizeof tmp);
			memcpy(merges[j], tmp, sizeof tmp);
		}
	FILE *f = fopen(at("encoder.json"), "wb");
	fputc('{', f);
	for (int k = 0; k < ntok; k++) {
		fputs(k ? ", \"" : "\"", f);
		spell_to(f, &tok[k], true);
		fprintf(f, "\": %d", k);
	}
	fputs("}\n", f);
	fclose(f);
	f = fopen(at("vocab.bpe"), "wb");
	fputs("#version: 0.2\n", f);
	for (int m = 0; m < nm; m++) {
		spell_to(f, &tok[merges[m][0]], false);
		fputc(' ', f);
		spell_to(f, &tok[merges[m][1]], false);
		fputc('\n', f);
	}
	fclose(f);
	char err[512];
	RtTokenizer *t = rt_tok_gpt2(dir, err, sizeof err);
	if (!t) {
		if (!shuffled) {
			fprintf(stderr, "fuzz_data: a merge list in BPE's order was refused: %s\n", err);
			abort();
		}
		must_name(err, at("vocab.bpe"), "a shuffled merge list");
		return;
	}
	/* the text, in the small alphabet too when the merges are */
	unsigned char *text = malloc(size ? size : 1);
	for (size_t i = 0; i < size; i++)
		text[i] = flags & 2 ? small[data[i] % 6] : data[i];
	check_text(t, text, size);
	free(text);
	rt_tok_free(t);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	if (size < 1 || size > 1 << 16)
		return 0;
	switch (data[0] % 4) {
	case 0: shard(data + 1, size - 1); break;
	case 1: files(data + 1, size - 1); break;
	case 2: check_text(gpt2, data + 1, size - 1); break;
	case 3: recipe(data + 1, size - 1); break;
	}
	return 0;
}
