/* tests/test_checkpoint.c — Check suite for runtime/checkpoint.c: safetensors files.
 *
 * Round trips of tensors of every rank with metadata; compatibility with Hugging Face's
 * layout, through reference files made by scripts/gen_reference_safetensors.py (mgl must
 * read them, F32/BF16/F16, and write the F32 one byte for byte); refusal of every kind of
 * damaged or hostile file, each with its message; and the atomic write: a failure at any
 * step (no directory, a directory that cannot be written, a failed rename, a full disk)
 * leaves the old file as it was and no .tmp behind.
 *
 * Run from the repository root (the reference files are read from tests/data/ckpt/).
 * The tests that need what a machine may lack (root and a tmpfs it can mount, /dev/full)
 * are not run where it is missing: each prints "SKIP:" and the reason, and is not counted.
 */
#include "../runtime/runtime.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REF_DIR "tests/data/ckpt/"

/* ---------------------------------------------------------------- helpers */

/* A fresh directory under /tmp, removed (with what is in it) by rmtree. */
static char *tmpdir(void)
{
	char *d = strdup("/tmp/mgl_ckpt_XXXXXX");
	ck_assert_ptr_nonnull(d);
	ck_assert_ptr_nonnull(mkdtemp(d));
	return d;
}

static void rmtree(const char *path)
{
	struct stat st;
	if (lstat(path, &st))
		return;
	if (S_ISDIR(st.st_mode)) {
		chmod(path, 0700);
		DIR *d = opendir(path);
		if (d) {
			struct dirent *e;
			while ((e = readdir(d))) {
				if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
					continue;
				char sub[4096];
				snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
				rmtree(sub);
			}
			closedir(d);
		}
		rmdir(path);
	} else {
		unlink(path);
	}
}

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *s = malloc(n);
	snprintf(s, n, "%s/%s", dir, name);
	return s;
}

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	ck_assert_msg(f, "cannot create %s: %s", path, strerror(errno));
	ck_assert_uint_eq(fwrite(p, 1, n, f), n);
	ck_assert_int_eq(fclose(f), 0);
}

/* The whole file, malloc'd; NULL if it cannot be read. */
static unsigned char *read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16;
	unsigned char *b = malloc(cap);
	*n = 0;
	size_t k;
	while ((k = fread(b + *n, 1, cap - *n, f)) > 0) {
		*n += k;
		if (*n == cap)
			b = realloc(b, cap *= 2);
	}
	fclose(f);
	return b;
}

static bool exists(const char *path)
{
	struct stat st;
	return !lstat(path, &st);
}

/* A safetensors file from its header text and data (NULL: zeros). */
static unsigned char *make(const char *json, const void *data, size_t datalen, size_t *n)
{
	size_t h = strlen(json);
	*n = 8 + h + datalen;
	unsigned char *b = calloc(1, *n + 1);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)h >> (8 * i));
	memcpy(b + 8, json, h);
	if (data)
		memcpy(b + 8 + h, data, datalen);
	return b;
}

static bool same_bits(float a, float b) { return !memcmp(&a, &b, sizeof a); }

/* ---------------------------------------------------------------- round trip */

START_TEST(round_trip_ranks_0_to_4_and_metadata)
{
	char *dir = tmpdir(), *path = join(dir, "model.safetensors");
	float s0[1] = {42.5f}, s1[3] = {1, -2, 3}, s2[6], s3[24], s4[2 * 3 * 1 * 4], special[4] = {NAN, INFINITY, -0.0f, 1e-45f};
	for (int i = 0; i < 6; i++)
		s2[i] = (float)i * 0.5f;
	for (int i = 0; i < 24; i++)
		s3[i] = (float)(i * i) - 7.0f;
	for (int i = 0; i < 24; i++)
		s4[i] = 1.0f / (float)(i + 1);
	RtTensor t[] = {
		{.name = "scalar", .rank = 0, .data = s0},
		{.name = "h.0.ln_1.bias", .rank = 1, .shape = {3}, .data = s1},
		{.name = "wte", .rank = 2, .shape = {2, 3}, .data = s2},
		{.name = "attn.qkv", .rank = 3, .shape = {2, 3, 4}, .data = s3},
		{.name = "conv \"4d\"\\\t", .rank = 4, .shape = {2, 3, 1, 4}, .data = s4},
		{.name = "special", .rank = 1, .shape = {4}, .data = special},
		{.name = "empty", .rank = 2, .shape = {0, 5}, .data = NULL},
		{.name = "caf\xc3\xa9", .rank = 1, .shape = {1}, .data = s0},
	};
	int n = (int)(sizeof t / sizeof *t);
	const char *keys[] = {"step", "model", "quote\"\n"}, *vals[] = {"1000", "gpt2 124m", "caf\xc3\xa9 \xf0\x9d\x84\x9e"};
	char err[512] = "";
	ck_assert_msg(!rt_ckpt_write(path, t, n, keys, vals, 3, err, sizeof err), "%s", err);
	char *tmp = join(dir, "model.safetensors.tmp");
	ck_assert(!exists(tmp));

	/* the layout the reference library expects: padded header, metadata first */
	size_t len;
	unsigned char *b = read_file(path, &len);
	ck_assert_ptr_nonnull(b);
	uint64_t hl = 0;
	for (int i = 7; i >= 0; i--)
		hl = hl << 8 | b[i];
	ck_assert_uint_eq(hl % 8, 0);
	const char *head = "{\"__metadata__\":{\"step\":\"1000\",";
	ck_assert(!memcmp(b + 8, head, strlen(head)));
	size_t data = 0;
	for (int i = 0; i < n; i++) {
		size_t e = 1;
		for (int k = 0; k < t[i].rank; k++)
			e *= (size_t)t[i].shape[k];
		data += 4 * e;
	}
	ck_assert_uint_eq(len, 8 + hl + data);
	free(b);

	RtCkpt c;
	ck_assert_msg(!rt_ckpt_read(path, &c, err, sizeof err), "%s", err);
	ck_assert_int_eq(c.n, n);
	for (int i = 0; i < n; i++) {
		const RtTensor *x = rt_ckpt_find(&c, t[i].name);
		ck_assert_msg(x, "tensor '%s' missing", t[i].name);
		ck_assert_ptr_eq(x, &c.t[i]); /* in the order written */
		ck_assert_int_eq(x->rank, t[i].rank);
		size_t e = 1;
		for (int k = 0; k < x->rank; k++) {
			ck_assert_int_eq(x->shape[k], t[i].shape[k]);
			e *= (size_t)x->shape[k];
		}
		ck_assert_ptr_nonnull(x->data);
		if (e)
			ck_assert_msg(!memcmp(x->data, t[i].data, 4 * e), "tensor '%s' differs", t[i].name);
	}
	ck_assert(same_bits(rt_ckpt_find(&c, "special")->data[2], -0.0f));
	ck_assert(isnan(rt_ckpt_find(&c, "special")->data[0]));
	ck_assert_ptr_null(rt_ckpt_find(&c, "nope"));
	ck_assert_int_eq(c.nmeta, 3);
	for (int i = 0; i < 3; i++)
		ck_assert_str_eq(rt_ckpt_meta(&c, keys[i]), vals[i]);
	ck_assert_ptr_null(rt_ckpt_meta(&c, "nope"));
	rt_ckpt_free(&c);
	ck_assert_ptr_null(c.buf);
	ck_assert_int_eq(c.n, 0);
	rt_ckpt_free(&c); /* twice is harmless */

	/* no tensors, no metadata: "{}" and six spaces, as the library writes it */
	ck_assert_msg(!rt_ckpt_write(path, NULL, 0, NULL, NULL, 0, err, sizeof err), "%s", err);
	b = read_file(path, &len);
	ck_assert_uint_eq(len, 16);
	ck_assert(!memcmp(b, "\x08\0\0\0\0\0\0\0{}      ", 16));
	free(b);
	ck_assert_msg(!rt_ckpt_read(path, &c, err, sizeof err), "%s", err);
	ck_assert_int_eq(c.n, 0);
	ck_assert_int_eq(c.nmeta, 0);
	rt_ckpt_free(&c);

	free(tmp);
	free(path);
	rmtree(dir);
	free(dir);
}
END_TEST

/* What the writer refuses, before it creates anything. */
START_TEST(write_refuses_bad_input)
{
	char *dir = tmpdir(), *path = join(dir, "bad.safetensors");
	static float x[4];
	static const struct {
		RtTensor t[2];
		int n;
		const char *want;
	} cases[] = {
		{{{.name = "a", .rank = 1, .shape = {4}, .data = x}, {.name = "a", .rank = 0, .data = x}}, 2,
		 "two tensors are named 'a'"},
		{{{.name = "a", .rank = 5, .data = x}}, 1, "tensor 'a': rank 5 is not in 0..4"},
		{{{.name = "a", .rank = -1, .data = x}}, 1, "rank -1"},
		{{{.name = "a", .rank = 2, .shape = {2, -2}, .data = x}}, 1, "dimension 1 is negative"},
		{{{.name = "", .rank = 0, .data = x}}, 1, "tensor 0 has no name"},
		{{{.name = NULL, .rank = 0, .data = x}}, 1, "tensor 0 has no name"},
		{{{.name = "__metadata__", .rank = 0, .data = x}}, 1, "cannot name a tensor"},
		{{{.name = "a", .rank = 1, .shape = {3}, .data = NULL}}, 1, "tensor 'a' has no data"},
		{{{.name = "bad\xff", .rank = 0, .data = x}}, 1, "tensor 'bad\\xff': the name is not valid UTF-8"},
		{{{.name = "huge", .rank = 3, .shape = {INT64_MAX, 2, 2}, .data = x}}, 1,
		 "tensor 'huge': shape [9223372036854775807, 2, 2] is too large"},
	};
	char err[512];
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		err[0] = 0;
		ck_assert_int_eq(rt_ckpt_write(path, cases[i].t, cases[i].n, NULL, NULL, 0, err, sizeof err), -1);
		ck_assert_msg(strstr(err, cases[i].want), "case %zu: expected '%s' in '%s'", i, cases[i].want, err);
		ck_assert_msg(!strncmp(err, path, strlen(path)), "case %zu: the message does not name the file: %s", i, err);
		ck_assert(!exists(path));
	}
	const char *k2[] = {"a", "a"}, *v2[] = {"1", "2"}, *k1[] = {"k"}, *v1[] = {"\xc0\x80"}, *vnull[] = {NULL};
	ck_assert_int_eq(rt_ckpt_write(path, NULL, 0, k2, v2, 2, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "metadata key 'a' appears twice"), "%s", err);
	ck_assert_int_eq(rt_ckpt_write(path, NULL, 0, k1, v1, 1, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "metadata 'k': not valid UTF-8"), "%s", err);
	ck_assert_int_eq(rt_ckpt_write(path, NULL, 0, k1, vnull, 1, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "metadata entry 0 has no value"), "%s", err);
	ck_assert_int_eq(rt_ckpt_write(path, NULL, -1, NULL, NULL, 0, err, sizeof err), -1);
	ck_assert(!exists(path));
	/* err may be absent */
	ck_assert_int_eq(rt_ckpt_write(path, NULL, -1, NULL, NULL, 0, NULL, 0), -1);
	free(path);
	rmtree(dir);
	free(dir);
}
END_TEST

/* ---------------------------------------------------------------- Python compatibility */

static void check_reference(const char *path)
{
	RtCkpt c;
	char err[512];
	ck_assert_msg(!rt_ckpt_read(path, &c, err, sizeof err), "%s (run scripts/gen_reference_safetensors.py?)", err);
	ck_assert_int_eq(c.n, 8);

	const RtTensor *t = rt_ckpt_find(&c, "wte");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->rank, 2);
	ck_assert_int_eq(t->shape[0], 3);
	ck_assert_int_eq(t->shape[1], 4);
	for (int i = 0; i < 12; i++)
		ck_assert(same_bits(t->data[i], (float)(i - 5) * 0.25f));

	t = rt_ckpt_find(&c, "scalar");
	ck_assert_int_eq(t->rank, 0);
	ck_assert(same_bits(t->data[0], 3.5f));

	t = rt_ckpt_find(&c, "h.0.ln_1.bias");
	ck_assert_int_eq(t->rank, 1);
	ck_assert_int_eq(t->shape[0], 5);
	const float bias[5] = {0.1f, -0.2f, 1e-30f, 3.4028234663852886e38f, -0.0f};
	for (int i = 0; i < 5; i++)
		ck_assert_msg(same_bits(t->data[i], bias[i]), "bias[%d] = %a", i, (double)t->data[i]);

	t = rt_ckpt_find(&c, "h.0.attn.c_attn.weight");
	ck_assert_int_eq(t->rank, 4);
	const int64_t s4[4] = {1, 2, 1, 3};
	for (int k = 0; k < 4; k++)
		ck_assert_int_eq(t->shape[k], s4[k]);
	for (int i = 0; i < 6; i++)
		ck_assert(same_bits(t->data[i], (float)(i + 1)));

	t = rt_ckpt_find(&c, "empty");
	ck_assert_int_eq(t->rank, 2);
	ck_assert_int_eq(t->shape[0], 0);
	ck_assert_int_eq(t->shape[1], 3);

	t = rt_ckpt_find(&c, "\xc3\xa9mb.\xc3\xbc/\xf0\x9d\x84\x9e"); /* "émb.ü/𝄞" */
	ck_assert_ptr_nonnull(t);
	ck_assert(same_bits(t->data[0], 1.0f) && same_bits(t->data[1], 2.0f));

	t = rt_ckpt_find(&c, "h.0.mlp.w_bf16");
	ck_assert_int_eq(t->rank, 2);
	const float bf[6] = {1.5f, -2.0f, 0.15625f, 3.140625f, 196608.0f, -INFINITY};
	for (int i = 0; i < 6; i++)
		ck_assert_msg(same_bits(t->data[i], bf[i]), "bf16[%d] = %a", i, (double)t->data[i]);

	t = rt_ckpt_find(&c, "h.0.mlp.w_f16");
	ck_assert_int_eq(t->rank, 3);
	const float h[8] = {0.5f, -0.0f, 65504.0f, 0x1p-24f, -0x1p-14f, 0.333251953125f, INFINITY, 1.0f};
	for (int i = 0; i < 8; i++)
		ck_assert_msg(same_bits(t->data[i], h[i]), "f16[%d] = %a", i, (double)t->data[i]);

	ck_assert_int_eq(c.nmeta, 3);
	ck_assert_str_eq(rt_ckpt_meta(&c, "format"), "pt");
	ck_assert_str_eq(rt_ckpt_meta(&c, "mgl.step"), "1000");
	ck_assert_str_eq(rt_ckpt_meta(&c, "note"), "caf\xc3\xa9 \xe2\x9c\x93 \"q\" \\ tab\t nl\n \xf0\x9d\x84\x9e");
	rt_ckpt_free(&c);
}

START_TEST(reads_reference_file)
{
	check_reference(REF_DIR "reference.safetensors");
}
END_TEST

/* The same file with \uXXXX escapes and surrogate pairs, as json.dumps writes by default. */
START_TEST(reads_reference_file_with_ascii_escapes)
{
	check_reference(REF_DIR "reference_ascii.safetensors");
}
END_TEST

/* mgl's writer gives the reference layout byte for byte. */
START_TEST(writes_reference_bytes)
{
	size_t want_n;
	unsigned char *want = read_file(REF_DIR "reference_f32.safetensors", &want_n);
	ck_assert_msg(want, "cannot read " REF_DIR "reference_f32.safetensors");
	float bias[3] = {0.5f, -1.0f, 2.0f}, w[6] = {1, 2, 3, 4, 5, 6}, b[1] = {-7.25f};
	RtTensor t[] = {
		{.name = "a.bias", .rank = 1, .shape = {3}, .data = bias},
		{.name = "a.weight", .rank = 2, .shape = {2, 3}, .data = w},
		{.name = "b", .rank = 0, .data = b},
	};
	const char *keys[] = {"format"}, *vals[] = {"pt"};
	char *got = NULL, err[512];
	size_t got_n = 0;
	FILE *f = open_memstream(&got, &got_n);
	ck_assert_msg(!rt_ckpt_write_stream(f, "memory", t, 3, keys, vals, 1, err, sizeof err), "%s", err);
	fclose(f);
	ck_assert_uint_eq(got_n, want_n);
	ck_assert(!memcmp(got, want, want_n));
	free(got);

	char *dir = tmpdir(), *path = join(dir, "f32.safetensors");
	ck_assert_msg(!rt_ckpt_write(path, t, 3, keys, vals, 1, err, sizeof err), "%s", err);
	size_t n;
	unsigned char *file = read_file(path, &n);
	ck_assert_uint_eq(n, want_n);
	ck_assert(!memcmp(file, want, n));
	free(file);
	free(want);
	free(path);
	rmtree(dir);
	free(dir);
}
END_TEST

/* ---------------------------------------------------------------- damaged and hostile files */

#define T(name, dt, shape, b, e) "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static const struct {
	const char *what, *json;
	size_t datalen;
	const char *want;
} bad_headers[] = {
	/* JSON */
	{"not an object", "[1,2]", 0, "invalid header JSON at byte 8: the header must be a JSON object"},
	{"unclosed", "{" T("a", "F32", "[1]", 0, 4), 4, "the header ends early"},
	{"trailing comma", "{" T("a", "F32", "[1]", 0, 4) ",}", 4, "a ',' before the closing bracket"},
	{"missing colon", "{\"a\" {}}", 0, "expected ':' after a tensor name"},
	{"single quotes", "{'a':1}", 0, "expected a tensor name (a string)"},
	{"text after", "{}x", 0, "text after the header's object"},
	{"two objects", "{}{}", 0, "text after the header's object"},
	{"true for a tensor", "{\"a\":true}", 0, "a tensor's entry must be an object"},
	{"bad escape", "{\"a\\q\":{}}", 0, "an invalid escape in a string"},
	{"short \\u", "{\"a\\u12\":{}}", 0, "\\u must be followed by four hex digits"},
	{"lone high surrogate", "{\"a\\ud834\":{}}", 0, "a high surrogate \\uD834 without a low one after it"},
	{"high + non-low", "{\"a\\ud834\\u0041\":{}}", 0, "a high surrogate \\uD834 without a low one after it"},
	{"lone low surrogate", "{\"a\\udd1e\":{}}", 0, "a lone low surrogate \\uDD1E (no high one before it)"},
	{"\\u0000", "{\"a\\u0000b\":{}}", 0, "\\u0000 in a string"},
	{"raw control byte", "{\"a\tb\":{}}", 0, "a control character (0x09) in a string"},
	{"invalid UTF-8", "{\"a\xff\":{}}", 0, "a string is not valid UTF-8"},
	{"overlong UTF-8", "{\"a\xc0\xaf\":{}}", 0, "a string is not valid UTF-8"},
	{"UTF-8 surrogate", "{\"a\xed\xa0\x80\":{}}", 0, "a string is not valid UTF-8"},
	{"truncated UTF-8", "{\"a\xe2\x9c", 0, "a string is not valid UTF-8"},
	{"unclosed string", "{\"abc", 0, "invalid header JSON at byte 9: a string that is never closed"},
	{"leading zero", "{" T("a", "F32", "[01]", 0, 4) "}", 4, "a number with a leading zero"},
	{"negative", "{" T("a", "F32", "[-1]", 0, 4) "}", 4, "a number in shape must be a non-negative integer"},
	{"fraction", "{" T("a", "F32", "[1.0]", 0, 4) "}", 4, "a number in shape must be a non-negative integer"},
	{"exponent", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4e0]}}", 4,
	 "a number in data_offsets must be a non-negative integer"},
	{"number too large", "{" T("a", "F32", "[99999999999999999999]", 0, 4) "}", 4,
	 "a number in shape is more than 9,223,372,036,854,775,807"},
	{"string for a number", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
	 "expected a number in shape"},
	{"three offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
	 "data_offsets must be [begin, end]"},
	{"one offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets must be [begin, end]"},
	{"nested shape", "{" T("a", "F32", "[[1]]", 0, 4) "}", 4, "expected a number in shape"},
	{"dtype not a string", "{\"a\":{\"dtype\":1,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype must be a string"},
	{"metadata not an object", "{\"__metadata__\":\"x\"}", 0, "'__metadata__' must be an object of strings"},
	{"metadata value not a string", "{\"__metadata__\":{\"k\":1}}", 0, "a metadata value must be a string"},
	{"metadata value an object", "{\"__metadata__\":{\"k\":{}}}", 0, "a metadata value must be a string"},
	{"empty entry", "{\"a\":{}}", 0, "a tensor's entry is empty"},
	/* the format's rules */
	{"unknown dtype", "{" T("a", "F33", "[1]", 0, 4) "}", 4, "tensor 'a': unknown dtype 'F33'"},
	{"unsupported dtype", "{" T("a", "I64", "[1]", 0, 8) "}", 8, "tensor 'a': dtype I64 is not supported"},
	{"rank 5", "{" T("a", "F32", "[1,1,1,1,1]", 0, 4) "}", 4, "tensor 'a': rank 5 is more than the 4 mgl supports"},
	{"offsets mismatch", "{" T("wte", "F32", "[50257,768]", 0, 100) "}", 100,
	 "tensor 'wte': data_offsets [0, 100] do not match shape [50257, 768] of F32"},
	{"offsets mismatch bf16", "{" T("w", "BF16", "[3]", 0, 12) "}", 12,
	 "tensor 'w': data_offsets [0, 12] do not match shape [3] of BF16 (6 bytes)"},
	{"offsets reversed", "{" T("a", "F32", "[1]", 8, 4) "}", 8, "tensor 'a': data_offsets [8, 4] end before they begin"},
	{"offsets out of range", "{" T("a", "F32", "[2]", 0, 8) "}", 4,
	 "tensor 'a': data_offsets [0, 8] run past the end of the data section (4 bytes"},
	{"offsets far out of range", "{" T("a", "F32", "[1]", 9223372036854775804, 9223372036854775807) "}", 4,
	 "do not match shape [1] of F32"},
	{"offsets far out of range 2", "{" T("a", "F32", "[1]", 9223372036854775803, 9223372036854775807) "}", 4,
	 "run past the end of the data section"},
	{"offsets past int64", "{" T("a", "F32", "[1]", 18446744073709551611, 18446744073709551615) "}", 4,
	 "a number in data_offsets is more than 9,223,372,036,854,775,807"},
	{"overlap", "{" T("a", "F32", "[4]", 0, 16) "," T("b", "F32", "[2]", 8, 16) "}", 16,
	 "tensors 'a' [0, 16] and 'b' [8, 16] overlap"},
	{"overlap, out of order", "{" T("b", "F32", "[2]", 12, 20) "," T("a", "F32", "[4]", 0, 16) "}", 20,
	 "tensors 'a' [0, 16] and 'b' [12, 20] overlap"},
	{"overlap with the same range", "{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[1]", 0, 4) "}", 4,
	 "tensors 'a' [0, 4] and 'b' [0, 4] overlap"},
	{"overlap inside", "{" T("a", "F32", "[4]", 0, 16) "," T("c", "F32", "[1]", 4, 8) "," T("b", "F32", "[1]", 12, 16) "}",
	 16, "overlap"},
	{"shape overflow", "{" T("a", "F32", "[4294967296,4294967296,4294967296]", 0, 4) "}", 4,
	 "tensor 'a': shape [4294967296, 4294967296, 4294967296] of F32 is too large"},
	{"dimension past int64", "{" T("a", "F32", "[9223372036854775808,0]", 0, 0) "}", 0,
	 "invalid header JSON at byte 37: a number in shape is more than 9,223,372,036,854,775,807"},
	{"bytes overflow", "{" T("a", "F32", "[4611686018427387904]", 0, 4) "}", 4, "of F32 is too large"},
	{"duplicate names", "{" T("a", "F32", "[1]", 0, 4) "," T("a", "F32", "[1]", 4, 8) "}", 8, "tensor 'a' appears twice"},
	{"duplicate names, escaped", "{" T("a", "F32", "[1]", 0, 4) "," T("\\u0061", "F32", "[1]", 4, 8) "}", 8,
	 "tensor 'a' appears twice"},
	{"duplicate field", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
	 "tensor 'a': field 'dtype' appears twice"},
	{"duplicate metadata", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "'__metadata__' appears twice"},
	{"duplicate metadata key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "metadata key 'k' appears twice"},
	{"empty name", "{" T("", "F32", "[1]", 0, 4) "}", 4, "a tensor has an empty name"},
	{"unknown field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
	 "tensor 'a': unknown field 'x'"},
	{"missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a' has no dtype"},
	{"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'a' has no shape"},
	{"missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'a' has no data_offsets"},
	{"hostile name shown safely", "{" T("\\u001b[31m", "F32", "[1]", 0, 8) "}", 8, "tensor '\\x1b[31m': data_offsets"},
};

/* The message begins with the file's name and holds `want`; the RtCkpt is left empty. */
static void expect_refused(const char *what, const unsigned char *b, size_t n, const char *path, const char *want)
{
	char err[512] = "";
	RtCkpt c = {.n = 99};
	write_file(path, b, n);
	ck_assert_msg(rt_ckpt_read(path, &c, err, sizeof err) == -1, "%s: accepted", what);
	ck_assert_msg(strstr(err, want), "%s: expected '%s' in '%s'", what, want, err);
	ck_assert_msg(!strncmp(err, path, strlen(path)) && !strncmp(err + strlen(path), ": ", 2),
		      "%s: the message does not begin with the file: %s", what, err);
	ck_assert(!c.n && !c.t && !c.buf && !c.nmeta);
	/* the same from memory, with the name given */
	err[0] = 0;
	ck_assert_msg(rt_ckpt_parse(b, n, "mem.safetensors", &c, err, sizeof err) == -1, "%s: accepted from memory", what);
	ck_assert_msg(strstr(err, want) && !strncmp(err, "mem.safetensors: ", 17), "%s: from memory: %s", what, err);
	ck_assert(!c.n && !c.t && !c.buf && !c.nmeta);
}

START_TEST(refuses_damaged_headers)
{
	char *dir = tmpdir(), *path = join(dir, "model.safetensors");
	for (size_t i = 0; i < sizeof bad_headers / sizeof *bad_headers; i++) {
		size_t n;
		unsigned char *b = make(bad_headers[i].json, NULL, bad_headers[i].datalen, &n);
		expect_refused(bad_headers[i].what, b, n, path, bad_headers[i].want);
		free(b);
	}
	/* NUL bytes as padding (the table's strlen cannot hold them) */
	unsigned char nul[8 + 8] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, 0, 0, 0, 0, 0};
	expect_refused("NUL padding", nul, sizeof nul, path, "invalid header JSON at byte 10: text after the header's object");
	free(path);
	rmtree(dir);
	free(dir);
}
END_TEST

START_TEST(refuses_damaged_files)
{
	char *dir = tmpdir(), *path = join(dir, "model.safetensors");
	char err[512];
	RtCkpt c;
	size_t n;
	expect_refused("empty file", (const unsigned char *)"", 0, path, "the file is empty");
	expect_refused("5 bytes", (const unsigned char *)"\x08\0\0\0\0", 5, path,
		       "the file is too short for a safetensors file (5 bytes)");
	unsigned char *b = make("{" T("a", "F32", "[2]", 0, 8) "}", NULL, 8, &n);
	/* the header's length past the end, and huge */
	b[0] = 0xe8, b[1] = 0x03;
	expect_refused("header length past the end", b, n, path, "the header's length 1000 runs past the end of the file");
	memset(b, 0xff, 8);
	expect_refused("header length 2^64-1", b, n, path, "the header's length 18446744073709551615 runs past the end");
	free(b);
	/* a file cut in the data */
	b = make("{" T("a", "F32", "[2]", 0, 8) "}", NULL, 8, &n);
	expect_refused("truncated data", b, n - 1, path, "tensor 'a': data_offsets [0, 8] run past the end of the data section (7 bytes");
	/* cut in the header */
	expect_refused("truncated header", b, 20, path, "runs past the end of the file (20 bytes");
	expect_refused("empty header", (const unsigned char *)"\0\0\0\0\0\0\0\0", 8, path, "the header is empty");
	free(b);
	/* a header longer than the format allows (100 MB), in a file that has it */
	{
		size_t big = 100000008;
		unsigned char *h = malloc(8 + big);
		ck_assert_ptr_nonnull(h);
		memset(h + 8, ' ', big);
		h[8] = '{', h[9] = '}';
		for (int i = 0; i < 8; i++)
			h[i] = (unsigned char)((uint64_t)big >> (8 * i));
		ck_assert_int_eq(rt_ckpt_parse(h, 8 + big, "big", &c, err, sizeof err), -1);
		ck_assert_msg(strstr(err, "big: the header's length 100000008 is more than the format allows"), "%s", err);
		free(h);
	}
	/* not a file */
	ck_assert_int_eq(rt_ckpt_read(dir, &c, err, sizeof err), -1);
	ck_assert_msg(strstr(err, ": is a directory"), "%s", err);
	char *none = join(dir, "none.safetensors");
	ck_assert_int_eq(rt_ckpt_read(none, &c, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "none.safetensors: cannot open: No such file or directory"), "%s", err);
	char *fifo = join(dir, "fifo");
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	ck_assert_int_eq(rt_ckpt_read(fifo, &c, err, sizeof err), -1); /* without blocking */
	ck_assert_msg(strstr(err, "fifo: is not a regular file"), "%s", err);
	free(fifo);
	ck_assert_int_eq(rt_ckpt_parse(NULL, 0, "null", &c, err, sizeof err), -1);
	ck_assert_str_eq(err, "null: the file is empty");
	free(none);
	free(path);
	rmtree(dir);
	free(dir);
}
END_TEST

/* What the format allows and some readers trip on: whitespace, fields in any order, empty
 * tensors anywhere, gaps between tensors, \/ escapes, an empty metadata object. */
START_TEST(accepts_unusual_but_valid_files)
{
	const float v[3] = {1.0f, 2.0f, 3.0f};
	unsigned char data[16] = {0};
	memcpy(data + 4, v, sizeof v);
	const char *json = " \r\n\t{ \"__metadata__\" : { } , \"b\\/c\" : { \"data_offsets\" : [ 4 , 16 ] , \"shape\" : [ 3 ] ,"
			   " \"dtype\" : \"F32\" } , \"z\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[16,16]},"
			   "\"e\":{\"dtype\":\"F16\",\"shape\":[2,0,1],\"data_offsets\":[8,8]} }\n ";
	size_t n;
	unsigned char *b = make(json, data, sizeof data, &n);
	RtCkpt c;
	char err[512];
	ck_assert_msg(!rt_ckpt_parse(b, n, "ok", &c, err, sizeof err), "%s", err);
	ck_assert_int_eq(c.n, 3);
	ck_assert_int_eq(c.nmeta, 0);
	const RtTensor *t = rt_ckpt_find(&c, "b/c");
	ck_assert_ptr_nonnull(t);
	ck_assert(!memcmp(t->data, v, sizeof v));
	ck_assert_int_eq(rt_ckpt_find(&c, "e")->rank, 3);
	rt_ckpt_free(&c);
	free(b);
}
END_TEST

/* ---------------------------------------------------------------- atomic writes */

static const unsigned char OLD[] = "the old checkpoint";

/* path holds OLD, and nothing else is beside it but what was there before. */
static void expect_old_kept(const char *path)
{
	size_t n;
	unsigned char *b = read_file(path, &n);
	ck_assert_msg(b, "%s is gone", path);
	ck_assert_msg(n == sizeof OLD && !memcmp(b, OLD, n), "%s was changed", path);
	free(b);
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	ck_assert_msg(!exists(tmp), "%s remains", tmp);
}

static float big[1 << 16]; /* 256 KiB: more than the small tmpfs holds */

static const RtTensor small_t[] = {{.name = "x", .rank = 1, .shape = {4}, .data = big}};
static const RtTensor big_t[] = {{.name = "x", .rank = 1, .shape = {1 << 16}, .data = big}};

START_TEST(write_to_missing_directory)
{
	char *dir = tmpdir(), *path = join(dir, "nope/model.safetensors"), err[512];
	ck_assert_int_eq(rt_ckpt_write(path, small_t, 1, NULL, NULL, 0, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "nope/model.safetensors: cannot create: No such file or directory") && !strstr(err, ".tmp"),
		      "%s", err);
	char *sub = join(dir, "nope");
	ck_assert(!exists(sub));
	free(sub);
	free(path);
	rmtree(dir);
	free(dir);
}
END_TEST

/* A directory where the file should be is refused before anything is written (io.c's tests
 * cover a rename that fails). */
START_TEST(write_to_directory)
{
	char *dir = tmpdir(), *path = join(dir, "model.safetensors"), err[512];
	ck_assert_int_eq(mkdir(path, 0700), 0);
	char *inside = join(path, "keep");
	write_file(inside, OLD, sizeof OLD);
	ck_assert_int_eq(rt_ckpt_write(path, small_t, 1, NULL, NULL, 0, err, sizeof err), -1);
	/* the message names the file asked for, not the temporary one */
	ck_assert_msg(strstr(err, "model.safetensors: cannot write: it is a directory") && !strstr(err, ".tmp"), "%s", err);
	expect_old_kept(inside);
	char *tmp = join(dir, "model.safetensors.tmp");
	ck_assert_msg(!exists(tmp), "%s remains", tmp);
	free(tmp);
	free(inside);
	free(path);
	rmtree(dir);
	free(dir);
}
END_TEST

/* Runs `cmd` with DIR replaced by dir; true if it exited 0. */
static bool sh(const char *fmt, const char *dir)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, fmt, dir);
	return system(cmd) == 0;
}

/* A directory that cannot be written: by permissions when not root; as root (whom
 * permissions do not stop) a tmpfs remounted read-only, if mounting works here. */
START_TEST(write_to_readonly_directory)
{
	char *dir = tmpdir(), *path = join(dir, "model.safetensors"), err[512] = "";
	bool mounted = geteuid() == 0;   /* main registers this test only where root can mount */
	if (mounted)
		ck_assert_msg(sh("mount -t tmpfs -o size=64k tmpfs %s", dir), "cannot mount a tmpfs on %s", dir);
	write_file(path, OLD, sizeof OLD);
	bool ro = mounted ? sh("mount -o remount,ro %s 2>/dev/null", dir) : !chmod(dir, 0555);
	int rc = ro ? rt_ckpt_write(path, small_t, 1, NULL, NULL, 0, err, sizeof err) : 0;
	/* look at the result before unmounting, assert after it: a failed assertion must not
	 * leave a mount behind */
	size_t n = 0;
	unsigned char *b = read_file(path, &n);
	bool kept = b && n == sizeof OLD && !memcmp(b, OLD, n);
	free(b);
	char *tmp = join(dir, "model.safetensors.tmp");
	bool tmp_left = exists(tmp);
	free(tmp);
	if (mounted)
		sh("umount %s", dir);
	rmtree(dir);
	ck_assert_msg(ro, "could not make %s read-only", dir);
	ck_assert_int_eq(rc, -1);
	ck_assert_msg(strstr(err, "model.safetensors: cannot create: ") && !strstr(err, ".tmp") &&
		      (strstr(err, "Read-only file system") || strstr(err, "Permission denied")), "%s", err);
	ck_assert_msg(kept, "the old file was changed");
	ck_assert_msg(!tmp_left, "the .tmp remains");
	free(path);
	free(dir);
}
END_TEST

/* A full disk, without root: /dev/full fails every write with ENOSPC. */
START_TEST(stream_to_full_device)
{
	char err[512] = "";
	FILE *f = fopen("/dev/full", "wb");
	ck_assert_ptr_nonnull(f);
	/* small enough to sit in stdio's buffer: the failure shows at fflush */
	ck_assert_int_eq(rt_ckpt_write_stream(f, "full", small_t, 1, NULL, NULL, 0, err, sizeof err), -1);
	ck_assert_str_eq(err, "full: cannot write: No space left on device");
	fclose(f);
	/* large: the failure shows at fwrite */
	f = fopen("/dev/full", "wb");
	ck_assert_int_eq(rt_ckpt_write_stream(f, "full", big_t, 1, NULL, NULL, 0, err, sizeof err), -1);
	ck_assert_str_eq(err, "full: cannot write: No space left on device");
	fclose(f);
}
END_TEST

/* A stream that refuses writes for another reason. */
START_TEST(stream_not_writable)
{
	char *dir = tmpdir(), *path = join(dir, "ro"), err[512] = "";
	write_file(path, OLD, sizeof OLD);
	FILE *f = fopen(path, "rb");
	ck_assert_int_eq(rt_ckpt_write_stream(f, "ro", small_t, 1, NULL, NULL, 0, err, sizeof err), -1);
	ck_assert_str_eq(err, "ro: cannot write: Bad file descriptor");
	fclose(f);
	expect_old_kept(path);
	free(path);
	rmtree(dir);
	free(dir);
}
END_TEST

/* The whole rt_ckpt_write on a full file system: a 64 KiB tmpfs (root only). */
START_TEST(write_to_full_disk)
{
	char *dir = tmpdir(), *path = join(dir, "model.safetensors"), err[512] = "";
	ck_assert_msg(sh("mount -t tmpfs -o size=64k tmpfs %s", dir), "cannot mount a tmpfs on %s", dir);
	write_file(path, OLD, sizeof OLD);
	int rc = rt_ckpt_write(path, big_t, 1, NULL, NULL, 0, err, sizeof err);
	size_t n = 0;
	unsigned char *b = read_file(path, &n);
	bool kept = b && n == sizeof OLD && !memcmp(b, OLD, n);
	free(b);
	char *tmp = join(dir, "model.safetensors.tmp");
	bool tmp_left = exists(tmp);
	free(tmp);
	/* and a write that fits still works after the failure */
	char err2[512] = "";
	int rc2 = rt_ckpt_write(path, small_t, 1, NULL, NULL, 0, err2, sizeof err2);
	RtCkpt c = {0};
	int rc3 = rc2 ? -1 : rt_ckpt_read(path, &c, err2, sizeof err2);
	int ok3 = !rc3 && c.n == 1 && c.t[0].shape[0] == 4;
	rt_ckpt_free(&c);
	sh("umount %s", dir);
	rmtree(dir);
	ck_assert_int_eq(rc, -1);
	ck_assert_msg(strstr(err, "model.safetensors: cannot write: No space left on device") && !strstr(err, ".tmp"), "%s", err);
	ck_assert_msg(kept, "the old file was changed");
	ck_assert_msg(!tmp_left, "the .tmp remains");
	ck_assert_msg(!rc2 && ok3, "writing a small file after the failure: %s", err2);
	free(path);
	free(dir);
}
END_TEST

/* A stale .tmp from a crash does not stop the next write. */
START_TEST(write_replaces_stale_tmp)
{
	char *dir = tmpdir(), *path = join(dir, "model.safetensors"), *tmp = join(dir, "model.safetensors.tmp"), err[512];
	write_file(path, OLD, sizeof OLD);
	write_file(tmp, "half", 4);
	ck_assert_msg(!rt_ckpt_write(path, small_t, 1, NULL, NULL, 0, err, sizeof err), "%s", err);
	ck_assert(!exists(tmp));
	RtCkpt c;
	ck_assert_msg(!rt_ckpt_read(path, &c, err, sizeof err), "%s", err);
	ck_assert_int_eq(c.n, 1);
	rt_ckpt_free(&c);
	/* a relative path in the working directory: the directory synced is "." */
	char cwd[4096];
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	ck_assert_int_eq(chdir(dir), 0);
	int rc = rt_ckpt_write("rel.safetensors", small_t, 1, NULL, NULL, 0, err, sizeof err);
	ck_assert_int_eq(chdir(cwd), 0);
	ck_assert_msg(!rc, "%s", err);
	free(tmp);
	free(path);
	rmtree(dir);
	free(dir);
}
END_TEST

/* Why a small tmpfs cannot be mounted here (NULL: it can): the full-disk and, as root, the
 * read-only tests need one. */
static const char *no_tmpfs(void)
{
	if (geteuid() != 0)
		return "mounting a tmpfs needs root";
	char dir[] = "/tmp/mgl_ckpt_XXXXXX";
	if (!mkdtemp(dir))
		return "cannot make a directory in /tmp";
	bool ok = sh("mount -t tmpfs -o size=64k tmpfs %s 2>/dev/null", dir);
	if (ok)
		sh("umount %s", dir);
	rmdir(dir);
	return ok ? NULL : "this system does not let root mount a tmpfs";
}

/* Registers a test, or says why it cannot run here: a skipped test is never a pass. */
#define ADD_UNLESS(tc, test, why) \
	do { \
		const char *why_ = (why); \
		if (why_) \
			printf("SKIP: test_checkpoint: %s: %s\n", #test, why_); \
		else \
			tcase_add_test(tc, test); \
	} while (0)

int main(void)
{
	const char *tmpfs = no_tmpfs();
	Suite *s = suite_create("checkpoint");
	TCase *rt = tcase_create("round trip"), *py = tcase_create("python"), *bad = tcase_create("damaged"),
	      *atomic = tcase_create("atomic");
	tcase_add_test(rt, round_trip_ranks_0_to_4_and_metadata);
	tcase_add_test(rt, write_refuses_bad_input);
	tcase_add_test(py, reads_reference_file);
	tcase_add_test(py, reads_reference_file_with_ascii_escapes);
	tcase_add_test(py, writes_reference_bytes);
	tcase_add_test(bad, refuses_damaged_headers);
	tcase_add_test(bad, refuses_damaged_files);
	tcase_add_test(bad, accepts_unusual_but_valid_files);
	tcase_add_test(atomic, write_to_missing_directory);
	tcase_add_test(atomic, write_to_directory);
	ADD_UNLESS(atomic, write_to_readonly_directory, geteuid() == 0 ? tmpfs : NULL);   /* not root: by permissions */
	ADD_UNLESS(atomic, stream_to_full_device, access("/dev/full", W_OK) ? "there is no writable /dev/full" : NULL);
	tcase_add_test(atomic, stream_not_writable);
	ADD_UNLESS(atomic, write_to_full_disk, tmpfs);
	tcase_add_test(atomic, write_replaces_stale_tmp);
	TCase *all[] = {rt, py, bad, atomic};
	for (int i = 0; i < 4; i++) {
		tcase_set_timeout(all[i], 120);
		suite_add_tcase(s, all[i]);
	}
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
