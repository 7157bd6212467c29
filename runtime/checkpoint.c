/* runtime/checkpoint.c — checkpoints as safetensors files (Hugging Face's format), so that
 * what mgl trains loads elsewhere and what was exported elsewhere loads here.
 *
 * A file is an 8-byte little-endian header length N, N bytes of JSON, then the data:
 *
 *   {"__metadata__":{"step":"1000"},"wte":{"dtype":"F32","shape":[50257,768],"data_offsets":[0,154389504]},...}
 *
 * The offsets count from the start of the data section. The writer lays the file out as
 * the reference library does (compact JSON, "__metadata__" first, the header padded with
 * spaces to a multiple of 8 bytes, tensors contiguous in the order given, F32 only), and
 * replaces the old file atomically (io.c: path.tmp, fsync, rename, fsync of the directory).
 *
 * The reader treats a file as hostile. The JSON is read (json.c) by a parser that knows
 * only the shapes this format has (no general JSON values), and every tensor is
 * checked before a byte of data is touched: known dtype (F32, BF16 and F16, the last two
 * converted to float), rank at most MGL_PLAN_MAX_RANK, a shape whose size matches its
 * data_offsets (with overflow checks), offsets inside the data section and not
 * overlapping, names non-empty and unique. Every message names the file and the tensor.
 * Data are read straight into the float memory the RtCkpt owns, so loading a checkpoint
 * needs its size in memory once, not twice.
 *
 * The metadata mgl writes (the model's source, the training state) is one table of keys
 * at the end: the writer and the reader both go through it, and the reader refuses a
 * value of the wrong form, naming the key, rather than turn it into some number.
 */
#include "runtime.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor data are copied between files and float arrays as bytes: the format is little-endian. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "checkpoint.c assumes a little-endian host");
_Static_assert(sizeof(float) == 4, "checkpoint.c assumes 32-bit floats");
/* Checkpoints of a few GB are ordinary: file offsets must be 64-bit. */
_Static_assert(sizeof(off_t) == 8, "checkpoint.c needs a 64-bit off_t (_FILE_OFFSET_BITS=64)");

/* The reference library refuses headers over 100 MB; so do we, before allocating them. */
enum { MAX_HEADER = 100000000 };

/* ---------------------------------------------------------------- shared pieces */

typedef enum { DT_F32, DT_BF16, DT_F16, DT_COUNT } Dtype;
static const char *const dtype_name[DT_COUNT] = {"F32", "BF16", "F16"};
static const unsigned dtype_size[DT_COUNT] = {4, 2, 2};

/* Dtypes the format has but mgl does not read: named as such, not as unknown. */
static const char *const other_dtypes[] = {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3",
					   "F6_E3M2", "I16", "U16", "I32", "U32", "F64", "I64", "U64", "C64"};

static bool utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	uint32_t cp;
	for (size_t i = 0, k; i < n; i += k)
		if (!(k = (size_t)rt_utf8_decode(p + i, n - i, &cp)))
			return false;
	return true;
}

/* A name as messages show it: names come from files, so control bytes, C1 controls and
 * invalid UTF-8 are shown as \xNN (they could garble a terminal), and long ones are cut. */
enum { SHOW_MAX = 64 };
typedef struct { char s[4 * SHOW_MAX + 8]; } Shown;

static const char *show(Shown *b, const char *name)
{
	const unsigned char *p = (const unsigned char *)name;
	size_t n = strlen(name), o = 0, i = 0;
	while (i < n && o < 4 * SHOW_MAX) {
		uint32_t cp;
		size_t k = (size_t)rt_utf8_decode(p + i, n - i, &cp);
		bool c1 = k == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0;
		if (k == 1 && p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') {
			b->s[o++] = (char)p[i++];
		} else if (k > 1 && !c1) {
			memcpy(b->s + o, p + i, k);
			o += k;
			i += k;
		} else {
			snprintf(b->s + o, 5, "\\x%02x", p[i++]);
			o += 4;
		}
	}
	if (i < n) {
		memcpy(b->s + o, "...", 3);
		o += 3;
	}
	b->s[o] = 0;
	return b->s;
}

/* "file: message" into err (which may be NULL or empty). */
static void vsay(char *err, size_t errlen, const char *file, const char *fmt, va_list ap)
{
	if (!err || !errlen)
		return;
	int k = snprintf(err, errlen, "%s: ", file);
	if (k >= 0 && (size_t)k < errlen)
		vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
}

static void say(char *err, size_t errlen, const char *file, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void say(char *err, size_t errlen, const char *file, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(err, errlen, file, fmt, ap);
	va_end(ap);
}

/* "[50257, 768]" */
static const char *dims_str(char *buf, size_t cap, int rank, const uint64_t *d)
{
	size_t o = 0;
	buf[o++] = '[';
	for (int i = 0; i < rank && o < cap; i++)
		o += (size_t)snprintf(buf + o, cap - o, "%s%" PRIu64, i ? ", " : "", d[i]);
	if (o < cap - 1) {
		buf[o++] = ']';
		buf[o] = 0;
	}
	buf[cap - 1] = 0;
	return buf;
}

/* ---------------------------------------------------------------- writing */

/* A growable byte buffer for the header; `oom` remembers a failed allocation. */
typedef struct {
	char *p;
	size_t n, cap;
	bool oom;
} Buf;

static void put(Buf *b, const void *s, size_t n)
{
	if (b->oom)
		return;
	if (b->cap - b->n < n) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap - b->n < n)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
}

static void puts_(Buf *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string as serde_json and Python's json (ensure_ascii=False) write it: '"', '\\' and
 * control characters escaped, everything else (UTF-8 included) as is. */
static void put_json_str(Buf *b, const char *s)
{
	put(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char esc[8];
		switch (*p) {
		case '"': puts_(b, "\\\""); break;
		case '\\': puts_(b, "\\\\"); break;
		case '\b': puts_(b, "\\b"); break;
		case '\f': puts_(b, "\\f"); break;
		case '\n': puts_(b, "\\n"); break;
		case '\r': puts_(b, "\\r"); break;
		case '\t': puts_(b, "\\t"); break;
		default:
			if (*p < 0x20) {
				snprintf(esc, sizeof esc, "\\u%04x", *p);
				puts_(b, esc);
			} else {
				put(b, p, 1);
			}
		}
	}
	put(b, "\"", 1);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The first string that appears twice among n, or NULL. Sorting keeps this O(n log n) for
 * the thousands of tensors of a large model. */
static const char *duplicate(const char *const *s, int n, bool *oom)
{
	*oom = false;
	if (n < 2)
		return NULL;
	const char **v = malloc((size_t)n * sizeof *v);
	if (!v) {
		*oom = true;
		return NULL;
	}
	memcpy(v, s, (size_t)n * sizeof *v);
	qsort(v, (size_t)n, sizeof *v, cmp_str);
	const char *dup = NULL;
	for (int i = 1; i < n && !dup; i++)
		if (!strcmp(v[i - 1], v[i]))
			dup = v[i];
	free(v);
	return dup;
}

/* Checks what the caller asks to write, before any file is touched; *bytes gets the data's size. */
static int check_input(const char *file, const RtTensor *t, int n, const char *const *keys, const char *const *vals,
		       int nmeta, uint64_t *bytes, char *err, size_t errlen)
{
	Shown a;
	char dims[128];
	if (n < 0 || nmeta < 0 || (n && !t) || (nmeta && (!keys || !vals))) {
		say(err, errlen, file, "invalid arguments (%d tensors, %d metadata entries)", n, nmeta);
		return -1;
	}
	*bytes = 0;
	for (int i = 0; i < n; i++) {
		const RtTensor *x = &t[i];
		if (!x->name || !*x->name) {
			say(err, errlen, file, "tensor %d has no name", i);
			return -1;
		}
		if (!utf8_valid(x->name)) {
			say(err, errlen, file, "tensor '%s': the name is not valid UTF-8", show(&a, x->name));
			return -1;
		}
		if (!strcmp(x->name, "__metadata__")) {
			say(err, errlen, file, "'__metadata__' is the metadata's key and cannot name a tensor");
			return -1;
		}
		if (x->rank < 0 || x->rank > MGL_PLAN_MAX_RANK) {
			say(err, errlen, file, "tensor '%s': rank %d is not in 0..%d", show(&a, x->name), x->rank,
			    MGL_PLAN_MAX_RANK);
			return -1;
		}
		uint64_t nel = 1, d[MGL_PLAN_MAX_RANK];
		bool over = false;
		for (int k = 0; k < x->rank; k++) {
			if (x->shape[k] < 0) {
				say(err, errlen, file, "tensor '%s': dimension %d is negative (%" PRId64 ")",
				    show(&a, x->name), k, x->shape[k]);
				return -1;
			}
			d[k] = (uint64_t)x->shape[k];
			over |= __builtin_mul_overflow(nel, d[k], &nel);
		}
		if (over || __builtin_mul_overflow(nel, 4, &nel) || __builtin_add_overflow(*bytes, nel, bytes) ||
		    nel > SIZE_MAX) {
			say(err, errlen, file, "tensor '%s': shape %s is too large", show(&a, x->name),
			    dims_str(dims, sizeof dims, x->rank, d));
			return -1;
		}
		if (nel && !x->data) {
			say(err, errlen, file, "tensor '%s' has no data", show(&a, x->name));
			return -1;
		}
	}
	for (int i = 0; i < nmeta; i++) {
		if (!keys[i] || !vals[i]) {
			say(err, errlen, file, "metadata entry %d has no %s", i, keys[i] ? "value" : "key");
			return -1;
		}
		if (!utf8_valid(keys[i]) || !utf8_valid(vals[i])) {
			say(err, errlen, file, "metadata '%s': not valid UTF-8", show(&a, keys[i]));
			return -1;
		}
	}
	/* Names go through a const char * array so that one sort serves both checks. */
	bool oom = false;
	const char **names = malloc(((size_t)n + 1) * sizeof *names);
	const char *dup = NULL;
	if (names) {
		for (int i = 0; i < n; i++)
			names[i] = t[i].name;
		dup = duplicate(names, n, &oom);
		free(names);
	}
	if (!names || oom) {
		say(err, errlen, file, "out of memory");
		return -1;
	}
	if (dup) {
		say(err, errlen, file, "two tensors are named '%s'", show(&a, dup));
		return -1;
	}
	dup = duplicate(keys, nmeta, &oom);
	if (oom) {
		say(err, errlen, file, "out of memory");
		return -1;
	}
	if (dup) {
		say(err, errlen, file, "metadata key '%s' appears twice", show(&a, dup));
		return -1;
	}
	return 0;
}

/* The header: compact JSON, metadata first, padded with spaces to a multiple of 8 bytes. */
static int build_header(Buf *b, const RtTensor *t, int n, const char *const *keys, const char *const *vals, int nmeta)
{
	char num[64];
	put(b, "{", 1);
	if (nmeta) {
		puts_(b, "\"__metadata__\":{");
		for (int i = 0; i < nmeta; i++) {
			if (i)
				put(b, ",", 1);
			put_json_str(b, keys[i]);
			put(b, ":", 1);
			put_json_str(b, vals[i]);
		}
		put(b, "}", 1);
	}
	uint64_t off = 0;
	for (int i = 0; i < n; i++) {
		if (i || nmeta)
			put(b, ",", 1);
		put_json_str(b, t[i].name);
		puts_(b, ":{\"dtype\":\"F32\",\"shape\":[");
		uint64_t bytes = 4;
		for (int k = 0; k < t[i].rank; k++) {
			snprintf(num, sizeof num, "%s%" PRId64, k ? "," : "", t[i].shape[k]);
			puts_(b, num);
			bytes *= (uint64_t)t[i].shape[k]; /* no overflow: check_input saw it */
		}
		snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + bytes);
		puts_(b, num);
		off += bytes;
	}
	put(b, "}", 1);
	while (b->n % 8 && !b->oom)   /* put adds nothing once memory ran out */
		put(b, " ", 1);
	return b->oom ? -1 : 0;
}

/* "cannot write: cause", with errno's text when the stream left one. Messages name the file
 * the caller asked for, never the temporary one that becomes it. */
static void write_error(int e, const char *file, char *err, size_t errlen)
{
	say(err, errlen, file, "cannot write: %s", e ? strerror(e) : "write error");
}

/* fwrite, checked; large tensors go in pieces so that a failure is seen (and errno read)
 * close to where it happened. */
static int write_all(FILE *f, const void *p, size_t n, const char *file, char *err, size_t errlen)
{
	const char *s = p;
	while (n) {
		size_t k = n < ((size_t)1 << 26) ? n : ((size_t)1 << 26);
		errno = 0;
		if (fwrite(s, 1, k, f) != k) {
			write_error(errno, file, err, errlen);
			return -1;
		}
		s += k;
		n -= k;
	}
	return 0;
}

static int write_stream(FILE *f, const char *file, const RtTensor *t, int n,
			const char *const *keys, const char *const *vals, int nmeta, char *err, size_t errlen)
{
	Buf b = {0};
	if (build_header(&b, t, n, keys, vals, nmeta)) {
		free(b.p);
		say(err, errlen, file, "out of memory building the header");
		return -1;
	}
	unsigned char len[8];
	for (int i = 0; i < 8; i++)
		len[i] = (unsigned char)((uint64_t)b.n >> (8 * i));
	int rc = write_all(f, len, 8, file, err, errlen);
	if (!rc)
		rc = write_all(f, b.p, b.n, file, err, errlen);
	free(b.p);
	for (int i = 0; i < n && !rc; i++) {
		size_t nel = 1;
		for (int k = 0; k < t[i].rank; k++)
			nel *= (size_t)t[i].shape[k];
		rc = write_all(f, t[i].data, nel * 4, file, err, errlen);
	}
	errno = 0;
	if (!rc && fflush(f)) {
		write_error(errno, file, err, errlen);
		rc = -1;
	}
	return rc;
}

int rt_ckpt_write_stream(FILE *f, const char *name, const RtTensor *t, int n, const char *const *keys,
			 const char *const *vals, int nmeta, char *err, size_t errlen)
{
	uint64_t bytes;
	if (check_input(name, t, n, keys, vals, nmeta, &bytes, err, errlen))
		return -1;
	return write_stream(f, name, t, n, keys, vals, nmeta, err, errlen);
}

int rt_ckpt_write(const char *path, const RtTensor *t, int n, const char *const *keys, const char *const *vals,
		  int nmeta, char *err, size_t errlen)
{
	uint64_t bytes;
	if (check_input(path, t, n, keys, vals, nmeta, &bytes, err, errlen))
		return -1;
	FILE *f = rt_atomic_open(path, err, errlen);
	if (!f)
		return -1;
	setvbuf(f, NULL, _IOFBF, 1 << 20);
	if (write_stream(f, path, t, n, keys, vals, nmeta, err, errlen)) {
		rt_atomic_abort(f, path);
		return -1;
	}
	return rt_atomic_commit(f, path, err, errlen);
}

/* ---------------------------------------------------------------- reading */

enum { F_DTYPE = 1, F_SHAPE = 2, F_OFFSETS = 4 };

/* A tensor as the header describes it; strings are offsets into the reader's pool. */
typedef struct {
	size_t name;
	int dtype;  /* -1 until seen */
	int rank;
	unsigned seen; /* F_ bits */
	uint64_t shape[MGL_PLAN_MAX_RANK];
	uint64_t begin, end, nel;
} Entry;

typedef struct {
	size_t key, val;
} Meta;

/* What RtCkpt.buf points to: the allocations behind an RtCkpt. */
typedef struct {
	float *data;
	char *pool;
	void *tail; /* the RtTensor array and the metadata's pointers */
} Mem;

typedef struct {
	const char *file;             /* for messages */
	const unsigned char *mem;     /* the source: bytes in memory, or */
	int fd;                       /* a file */
	uint64_t size;                /* of either */

	unsigned char *hbuf;          /* the header, when read from a file */
	size_t len;                   /* the header's length */
	RtJson j;                     /* the header being parsed */
	uint64_t datalen;             /* bytes after the header */

	char *pool;                   /* decoded strings, NUL-terminated */
	size_t pooln;
	Entry *e;
	int n, cap;
	Meta *m;
	int nm, mcap;
	bool have_meta;

	Mem *out;
	void *scratch;                /* for the checks across tensors */
	jmp_buf *jb;
	char *err;
	size_t errlen;
} Reader;

static _Noreturn void fail(Reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void fail(Reader *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(r->err, r->errlen, r->file, fmt, ap);
	va_end(ap);
	longjmp(*r->jb, 1);
}

/* A syntax error at offset at of the header, placed as an offset into the file (what a hex
 * dump shows). */
static _Noreturn void bad(Reader *r, size_t at, const char *what)
{
	fail(r, "invalid header JSON at byte %zu: %s", (size_t)8 + at, what);
}

/* A JSON reader's result: an error jumps. */
static void ok(Reader *r, int rc)
{
	if (rc < 0)
		bad(r, r->j.e.at, r->j.e.msg);
}

static void *xmalloc(Reader *r, size_t n, const char *what)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		fail(r, "out of memory (%s bytes for %s)", mgl_commas((int64_t)n, (char[32]){0}), what);
	return p;
}

/* n bytes at offset off of the source. */
static void src_read(Reader *r, uint64_t off, void *dst, size_t n)
{
	if (r->mem) {
		memcpy(dst, r->mem + off, n); /* off + n <= size: the caller checked */
		return;
	}
	char *d = dst;
	while (n) {
		/* pread of more than SSIZE_MAX is implementation-defined: ask for 1 GiB at most */
		ssize_t k = pread(r->fd, d, n < ((size_t)1 << 30) ? n : ((size_t)1 << 30), (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			fail(r, "cannot read: %s", strerror(errno));
		if (k == 0)
			fail(r, "the file became shorter while it was read");
		d += k;
		off += (uint64_t)k;
		n -= (size_t)k;
	}
}

/* -------------------------------- the JSON parser: only what the format has */

static int peek(Reader *r) { return rt_json_peek(&r->j); }
static void expect(Reader *r, int c, const char *what) { ok(r, rt_json_expect(&r->j, c, what)); }

/* After an element of an array or object: true if another follows, false at the closing
 * bracket (both read). */
static bool more(Reader *r, int close, const char *what)
{
	int k = rt_json_more(&r->j, close, what);
	ok(r, k);
	return k;
}

/* A character of a string into the pool, as UTF-8. The pool has room for every string of
 * the header: a string's decoded bytes plus its NUL are never more than its encoded bytes
 * with their quotes. */
static int pool_put(RtJson *j, void *ctx, uint32_t cp, size_t at)
{
	Reader *r = ctx;
	if (!cp)
		return rt_json_fail(j, at, "\\u0000 in a string (names and metadata cannot hold NUL)");
	char *o = r->pool + r->pooln;
	if (cp < 0x80) {
		o[0] = (char)cp;
		r->pooln += 1;
	} else if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		r->pooln += 2;
	} else if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		r->pooln += 3;
	} else {
		o[0] = (char)(0xf0 | cp >> 18);
		o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
		o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[3] = (char)(0x80 | (cp & 0x3f));
		r->pooln += 4;
	}
	return 0;
}

/* A string, decoded into the pool (NUL-terminated): its offset there. */
static size_t string(Reader *r, const char *what)
{
	size_t start = r->pooln;
	ok(r, rt_json_string(&r->j, what, pool_put, r));
	r->pool[r->pooln++] = 0;
	return start;
}

/* A non-negative integer of the field `field`: a size or an offset, so at most INT64_MAX. */
static uint64_t number(Reader *r, const char *field)
{
	char what[32];
	int64_t v;
	snprintf(what, sizeof what, "a number in %s", field);
	ok(r, rt_json_uint(&r->j, what, INT64_MAX, &v));
	return (uint64_t)v;
}

/* "__metadata__": an object of strings. */
static void parse_meta(Reader *r)
{
	expect(r, '{', "'__metadata__' must be an object of strings");
	if (peek(r) == '}') {
		r->j.pos++;
		return;
	}
	do {
		Meta m;
		m.key = string(r, "expected a metadata key (a string)");
		expect(r, ':', "expected ':' after a metadata key");
		m.val = string(r, "a metadata value must be a string");
		if (r->nm == r->mcap) {
			int cap = r->mcap ? 2 * r->mcap : 16;
			Meta *nv = realloc(r->m, (size_t)cap * sizeof *nv);
			if (!nv)
				fail(r, "out of memory reading the metadata");
			r->m = nv;
			r->mcap = cap;
		}
		r->m[r->nm++] = m;
	} while (more(r, '}', "expected ',' or '}' after a metadata entry"));
}

/* A tensor's entry: {"dtype": ..., "shape": [...], "data_offsets": [b, e]} in any order. */
static void parse_tensor(Reader *r, Entry *t)
{
	Shown a;
	const char *name = show(&a, r->pool + t->name);
	expect(r, '{', "a tensor's entry must be an object");
	if (peek(r) == '}')
		bad(r, r->j.pos, "a tensor's entry is empty");
	do {
		size_t k = string(r, "expected a field name (a string)");
		const char *key = r->pool + k;
		unsigned f = !strcmp(key, "dtype") ? F_DTYPE : !strcmp(key, "shape") ? F_SHAPE
			   : !strcmp(key, "data_offsets") ? F_OFFSETS : 0;
		if (!f) {
			Shown b;
			fail(r, "tensor '%s': unknown field '%s' (a tensor has dtype, shape and data_offsets)", name,
			     show(&b, key));
		}
		if (t->seen & f)
			fail(r, "tensor '%s': field '%s' appears twice", name, key);
		t->seen |= f;
		r->pooln = k; /* the field's name is not kept */
		expect(r, ':', "expected ':' after a field name");
		if (f == F_DTYPE) {
			size_t s = string(r, "dtype must be a string");
			const char *d = r->pool + s;
			t->dtype = -1;
			for (int i = 0; i < DT_COUNT; i++)
				if (!strcmp(d, dtype_name[i]))
					t->dtype = i;
			if (t->dtype < 0) {
				Shown b;
				for (size_t i = 0; i < sizeof other_dtypes / sizeof *other_dtypes; i++)
					if (!strcmp(d, other_dtypes[i]))
						fail(r, "tensor '%s': dtype %s is not supported (mgl reads F32, BF16 and F16)",
						     name, d);
				fail(r, "tensor '%s': unknown dtype '%s'", name, show(&b, d));
			}
			r->pooln = s;
		} else if (f == F_SHAPE) {
			expect(r, '[', "shape must be an array of integers");
			size_t rank = 0;
			if (peek(r) == ']')
				r->j.pos++;
			else
				do {
					uint64_t d = number(r, "shape");
					if (rank < MGL_PLAN_MAX_RANK)
						t->shape[rank] = d;
					rank++;
				} while (more(r, ']', "expected ',' or ']' in shape"));
			if (rank > MGL_PLAN_MAX_RANK)
				fail(r, "tensor '%s': rank %zu is more than the %d mgl supports", name, rank, MGL_PLAN_MAX_RANK);
			t->rank = (int)rank;
		} else {
			expect(r, '[', "data_offsets must be [begin, end]");
			t->begin = number(r, "data_offsets");
			expect(r, ',', "data_offsets must be [begin, end]");
			t->end = number(r, "data_offsets");
			expect(r, ']', "data_offsets must be [begin, end]");
		}
	} while (more(r, '}', "expected ',' or '}' in a tensor's entry"));
}

/* The checks on one tensor that need all of its entry. */
static void check_tensor(Reader *r, Entry *t)
{
	Shown a;
	char dims[128];
	const char *name = show(&a, r->pool + t->name);
	if (!r->pool[t->name])
		fail(r, "a tensor has an empty name");
	for (unsigned f = F_DTYPE; f <= F_OFFSETS; f <<= 1)
		if (!(t->seen & f))
			fail(r, "tensor '%s' has no %s", name, f == F_DTYPE ? "dtype" : f == F_SHAPE ? "shape" : "data_offsets");
	if (t->end < t->begin)
		fail(r, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin", name, t->begin, t->end);
	uint64_t nel = 1, bytes;
	bool over = false;
	for (int k = 0; k < t->rank; k++)   /* each fits RtTensor's int64_t: number() saw to it */
		over |= __builtin_mul_overflow(nel, t->shape[k], &nel);
	if (over || nel > INT64_MAX || __builtin_mul_overflow(nel, dtype_size[t->dtype], &bytes))
		fail(r, "tensor '%s': shape %s of %s is too large", name, dims_str(dims, sizeof dims, t->rank, t->shape),
		     dtype_name[t->dtype]);
	if (bytes != t->end - t->begin)
		fail(r, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] do not match shape %s of %s (%" PRIu64
			" bytes)", name, t->begin, t->end, dims_str(dims, sizeof dims, t->rank, t->shape),
		     dtype_name[t->dtype], bytes);
	if (t->end > r->datalen)
		fail(r, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] run past the end of the data section (%s "
			"bytes; is the file truncated?)", name, t->begin, t->end, mgl_commas((int64_t)r->datalen, (char[32]){0}));
	t->nel = nel;
}

/* The whole header: one object of tensors and, at most once, "__metadata__". */
static void parse_header(Reader *r)
{
	expect(r, '{', "the header must be a JSON object");
	if (peek(r) == '}')
		r->j.pos++;
	else
		do {
			size_t at = (peek(r), r->j.pos);
			size_t k = string(r, "expected a tensor name (a string)");
			expect(r, ':', "expected ':' after a tensor name");
			if (!strcmp(r->pool + k, "__metadata__")) {
				if (r->have_meta)
					bad(r, at, "'__metadata__' appears twice");
				r->have_meta = true;
				r->pooln = k;
				parse_meta(r);
				continue;
			}
			if (r->n == r->cap) {
				int cap = r->cap ? 2 * r->cap : 64;
				Entry *nv = realloc(r->e, (size_t)cap * sizeof *nv);
				if (!nv)
					fail(r, "out of memory reading the header");
				r->e = nv;
				r->cap = cap;
			}
			Entry *t = &r->e[r->n++];
			memset(t, 0, sizeof *t);
			t->name = k;
			parse_tensor(r, t);
			check_tensor(r, t);
		} while (more(r, '}', "expected ',' or '}' after a tensor"));
	if (peek(r) >= 0)
		bad(r, r->j.pos, "text after the header's object");
}

/* Sorting for the checks across tensors: by name, and by place in the data section. */
typedef struct {
	const char *name;
	uint64_t begin, end;
} Key;

static int cmp_key_name(const void *a, const void *b) { return strcmp(((const Key *)a)->name, ((const Key *)b)->name); }

static int cmp_key_begin(const void *a, const void *b)
{
	const Key *x = a, *y = b;
	return x->begin != y->begin ? (x->begin < y->begin ? -1 : 1) : x->end != y->end ? (x->end < y->end ? -1 : 1) : 0;
}

/* Names unique (tensors, and metadata keys), data not overlapping: O(n log n) for a
 * header of millions of entries. Empty tensors occupy no bytes and overlap nothing. */
static void check_all(Reader *r)
{
	Shown a, b;
	int most = r->n > r->nm ? r->n : r->nm;
	Key *k = xmalloc(r, (size_t)most * sizeof *k, "checking the header");
	r->scratch = k;
	for (int i = 0; i < r->nm; i++)
		k[i].name = r->pool + r->m[i].key;
	qsort(k, (size_t)r->nm, sizeof *k, cmp_key_name);
	for (int i = 1; i < r->nm; i++)
		if (!strcmp(k[i - 1].name, k[i].name))
			fail(r, "metadata key '%s' appears twice", show(&a, k[i].name));
	for (int i = 0; i < r->n; i++)
		k[i] = (Key){r->pool + r->e[i].name, r->e[i].begin, r->e[i].end};
	qsort(k, (size_t)r->n, sizeof *k, cmp_key_name);
	for (int i = 1; i < r->n; i++)
		if (!strcmp(k[i - 1].name, k[i].name))
			fail(r, "tensor '%s' appears twice", show(&a, k[i].name));
	qsort(k, (size_t)r->n, sizeof *k, cmp_key_begin);
	const Key *last = NULL;
	for (int i = 0; i < r->n; i++) {
		if (k[i].begin == k[i].end)
			continue;
		if (last && k[i].begin < last->end)
			fail(r, "tensors '%s' [%" PRIu64 ", %" PRIu64 "] and '%s' [%" PRIu64 ", %" PRIu64 "] overlap",
			     show(&a, last->name), last->begin, last->end, show(&b, k[i].name), k[i].begin, k[i].end);
		if (!last || k[i].end > last->end)
			last = &k[i];
	}
}

static float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = h >> 10 & 0x1f, man = h & 0x3ff, bits;
	if (exp == 0) {
		/* zero or subnormal: man * 2^-24, exact in float */
		float f = (float)man * 0x1p-24f;
		return sign ? -f : f;
	}
	if (exp == 31)
		bits = sign | 0x7f800000u | man << 13; /* inf, or nan keeping its payload */
	else
		bits = sign | (exp + 112) << 23 | man << 13;
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

/* A tensor's data into dst as floats; 16-bit ones through a small buffer. */
static void load(Reader *r, const Entry *t, float *dst)
{
	uint64_t off = 8 + r->len + t->begin;
	if (t->dtype == DT_F32) {
		src_read(r, off, dst, (size_t)t->nel * 4);
		return;
	}
	uint16_t tmp[4096];
	for (uint64_t i = 0; i < t->nel;) {
		size_t k = t->nel - i < 4096 ? (size_t)(t->nel - i) : 4096;
		src_read(r, off + 2 * i, tmp, 2 * k);
		if (t->dtype == DT_BF16)
			rt_bf16_to_f32(dst + i, tmp, k);
		else
			for (size_t j = 0; j < k; j++)
				dst[i + j] = f16_to_f32(tmp[j]);
		i += k;
	}
}

/* Everything from the header's length to the floats; errors jump back to decode. */
static void read_all(Reader *r, RtCkpt *c)
{
	if (r->size == 0)
		fail(r, "the file is empty");
	if (r->size < 8)
		fail(r, "the file is too short for a safetensors file (%s byte%s)", mgl_commas((int64_t)r->size, (char[32]){0}),
		     r->size == 1 ? "" : "s");
	unsigned char lenb[8];
	src_read(r, 0, lenb, 8);
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | lenb[i];
	/* a token shard's magic and version, read as a header's length: far past any file's end */
	if ((uint32_t)n == RT_SHARD_MAGIC)
		fail(r, "a token shard (mgl tokenize writes them), not a checkpoint");
	if (n > r->size - 8)
		fail(r, "the header's length %" PRIu64 " runs past the end of the file (%s bytes; truncated, or not a "
			"safetensors file?)", n, mgl_commas((int64_t)r->size, (char[32]){0}));
	if (n > MAX_HEADER)
		fail(r, "the header's length %" PRIu64 " is more than the format allows (%s)", n,
		     mgl_commas(MAX_HEADER, (char[32]){0}));
	if (n == 0)
		fail(r, "the header is empty");
	r->len = (size_t)n;
	r->datalen = r->size - 8 - n;
	if (r->mem) {
		r->j.s = r->mem + 8;
	} else {
		r->hbuf = xmalloc(r, r->len, "the header");
		src_read(r, 8, r->hbuf, r->len);
		r->j.s = r->hbuf;
	}
	r->j.n = r->len;
	r->j.ends = "the header ends early";
	r->pool = xmalloc(r, r->len + 1, "the header's strings");
	r->out = xmalloc(r, sizeof *r->out, "the checkpoint");
	memset(r->out, 0, sizeof *r->out);
	parse_header(r);
	check_all(r);

	/* The result: tensors and metadata pointers in one block, strings in the pool, floats
	 * in one array (elements <= data bytes / 2, so this cannot overflow a 64-bit size). */
	uint64_t total = 0;
	for (int i = 0; i < r->n; i++)
		total += r->e[i].nel;
	if (total > SIZE_MAX / 4)
		fail(r, "the tensors are too large for memory (%s elements)", mgl_commas((int64_t)total, (char[32]){0}));
	size_t tail = (size_t)r->n * sizeof(RtTensor) + 2 * (size_t)r->nm * sizeof(char *);
	RtTensor *tt = xmalloc(r, tail, "the tensor list");
	r->out->tail = tt;
	char **keys = (char **)(tt + r->n), **vals = keys + r->nm;
	r->out->data = xmalloc(r, (size_t)total * 4, "the tensors' data");
	r->out->pool = r->pool;
	r->pool = NULL;
	float *d = r->out->data;
	for (int i = 0; i < r->n; i++) {
		const Entry *e = &r->e[i];
		RtTensor *t = &tt[i];
		memset(t, 0, sizeof *t);
		t->name = r->out->pool + e->name;
		t->rank = e->rank;
		for (int k = 0; k < e->rank; k++)
			t->shape[k] = (int64_t)e->shape[k];
		t->data = d;
		load(r, e, d);
		d += e->nel;
	}
	for (int i = 0; i < r->nm; i++) {
		keys[i] = r->out->pool + r->m[i].key;
		vals[i] = r->out->pool + r->m[i].val;
	}
	c->t = tt;
	c->n = r->n;
	c->keys = keys;
	c->vals = vals;
	c->nmeta = r->nm;
	c->buf = r->out;
	r->out = NULL;
}

static void mem_free(Mem *m)
{
	if (!m)
		return;
	free(m->data);
	free(m->pool);
	free(m->tail);
	free(m);
}

/* setjmp lives here, away from the Reader it guards (which is the caller's), so nothing
 * the parser changes is a local of the function that called setjmp. */
static int guarded(Reader *r, RtCkpt *c)
{
	jmp_buf jb;
	r->jb = &jb;
	if (setjmp(jb))
		return -1;
	read_all(r, c);
	return 0;
}

static int decode(Reader *r, RtCkpt *c)
{
	memset(c, 0, sizeof *c);
	int rc = guarded(r, c);
	mem_free(r->out);
	free(r->scratch);
	free(r->hbuf);
	free(r->pool);
	free(r->e);
	free(r->m);
	return rc;
}

int rt_ckpt_parse(const void *buf, size_t len, const char *name, RtCkpt *c, char *err, size_t errlen)
{
	static const unsigned char none[1];
	Reader r = {.file = name, .mem = buf ? buf : none, .fd = -1, .size = buf ? len : 0, .err = err, .errlen = errlen};
	return decode(&r, c);
}

int rt_ckpt_read(const char *path, RtCkpt *c, char *err, size_t errlen)
{
	memset(c, 0, sizeof *c);
	/* O_NONBLOCK: a FIFO given by mistake is refused below instead of blocking here (it
	 * changes nothing for a regular file) */
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		say(err, errlen, path, "cannot open: %s", strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st)) {
		say(err, errlen, path, "cannot read: %s", strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		say(err, errlen, path, "%s", S_ISDIR(st.st_mode) ? "is a directory" : "is not a regular file");
		close(fd);
		return -1;
	}
	Reader r = {.file = path, .fd = fd, .size = (uint64_t)st.st_size, .err = err, .errlen = errlen};
	int rc = decode(&r, c);
	close(fd);
	return rc;
}

const RtTensor *rt_ckpt_find(const RtCkpt *c, const char *name)
{
	for (int i = 0; i < c->n; i++)
		if (!strcmp(c->t[i].name, name))
			return &c->t[i];
	return NULL;
}

const char *rt_ckpt_meta(const RtCkpt *c, const char *key)
{
	for (int i = 0; i < c->nmeta; i++)
		if (!strcmp(c->keys[i], key))
			return c->vals[i];
	return NULL;
}

void rt_ckpt_free(RtCkpt *c)
{
	if (c->parts) {   /* rt_ckpt_open's shards: c->t is ours, the rest theirs */
		rt_hf_free(c->parts);
		free(c->parts);
		free(c->t);
	}
	mem_free(c->buf);
	memset(c, 0, sizeof *c);
}

/* ---------------------------------------------------------------- mgl's metadata */

/* Every key mgl writes, the form of its value, and where RtCkptMeta keeps it: one table
 * for the writer and the reader. */
typedef enum { M_FORMAT, M_NAME, M_PRESET, M_TEXT, M_TOKENIZER, M_SHA256, M_COUNT, M_U64, M_STEPS, M_RATE } MetaKind;
static const struct {
	const char *key;
	MetaKind kind;
	size_t at;
} meta_keys[] = {
	{"format", M_FORMAT, offsetof(RtCkptMeta, format)},    {"model", M_NAME, offsetof(RtCkptMeta, model)},
	{"source", M_TEXT, offsetof(RtCkptMeta, source)},      {"preset", M_PRESET, offsetof(RtCkptMeta, preset)},
	{"set", M_TEXT, offsetof(RtCkptMeta, set)},            {"tokenizer", M_TOKENIZER, offsetof(RtCkptMeta, tokenizer)},
	{"step", M_COUNT, offsetof(RtCkptMeta, step)},         {"adam_t", M_COUNT, offsetof(RtCkptMeta, adam_t)},
	{"data_rng", M_U64, offsetof(RtCkptMeta, data_rng)},   {"seed", M_U64, offsetof(RtCkptMeta, seed)},
	{"tokenizer_sha256", M_SHA256, offsetof(RtCkptMeta, tokenizer_sha256)},
	{"steps", M_STEPS, offsetof(RtCkptMeta, steps)},       {"warmup", M_STEPS, offsetof(RtCkptMeta, warmup)},
	{"lr", M_RATE, offsetof(RtCkptMeta, lr)},              {"min_lr", M_RATE, offsetof(RtCkptMeta, min_lr)},
};
/* the training state (M_COUNT, M_U64) and the schedule (M_STEPS, M_RATE): all or nothing */
enum { NMETA = sizeof meta_keys / sizeof meta_keys[0], NSTATE = 4, NSCHEDULE = 4 };

/* What a kind accepts, for messages. (The source and --set text are checked by compiling
 * them, where an error has a line and a column.) */
static const char *const meta_form[] = {
	[M_FORMAT] = "'" RT_CKPT_FORMAT "'",
	[M_NAME] = "a name (letters, digits and '_', not starting with a digit)",
	[M_PRESET] = "a preset's name (letters, digits, '_' and '.') or nothing",
	[M_TEXT] = "text",
	[M_TOKENIZER] = "'bytes', 'gpt2', 'gpt2:DIR', 'bert', 'wordpiece' or 'wordpiece:FILE'",
	[M_SHA256] = "a SHA-256 digest (64 hexadecimal digits), or two separated by a space",
	[M_COUNT] = "a whole number from 0 to 9,223,372,036,854,775,807",
	[M_U64] = "a whole number from 0 to 18,446,744,073,709,551,615",
	[M_STEPS] = "a whole number from 0 to 9,223,372,036,854,775,807",
	[M_RATE] = "a number from 0 to 10",
};

/* 64 lowercase hex digits, and for GPT-2's two files a space and 64 more: rt_tok_digest's
 * form. */
static bool sha256_digests(const char *s)
{
	int i = 0;
	for (; s[i] && i < 129; i++)
		if (i == 64 ? s[i] != ' ' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return (i == 64 || i == 129) && s[i] == 0;
}

/* A learning rate as mgl train takes it: a finite number from 0 to 10, the whole text. */
static bool rate(const char *s, double *r)
{
	char *end;
	*r = strtod(s, &end);
	return end != s && !*end && *r >= 0 && *r <= 10;
}

/* s as decimal digits only (no sign, space, fraction or exponent), at most max. */
static bool whole_number(const char *s, uint64_t max, uint64_t *v)
{
	*v = 0;
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9' || __builtin_mul_overflow(*v, 10, v) ||
		    __builtin_add_overflow(*v, (uint64_t)(*s - '0'), v))
			return false;
	return *v <= max;
}

/* A name of the language ([A-Za-z_][A-Za-z0-9_]*), or a preset's (also '.', may start
 * with a digit: 1.5b; empty: none). */
static bool name_ok(const char *s, bool preset)
{
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
		      (preset && *p == '.')))
			return false;
	return preset || (*s && !(*s >= '0' && *s <= '9'));
}

static bool meta_ok(MetaKind kind, const char *v, uint64_t *n, double *r)
{
	switch (kind) {
	case M_FORMAT: return !strcmp(v, RT_CKPT_FORMAT);
	case M_NAME: return name_ok(v, false);
	case M_PRESET: return name_ok(v, true);
	case M_TEXT: return true;
	case M_TOKENIZER: return !strcmp(v, "bytes") || !strcmp(v, "gpt2") || (!strncmp(v, "gpt2:", 5) && v[5]) ||
				 !strcmp(v, "bert") || !strcmp(v, "wordpiece") || (!strncmp(v, "wordpiece:", 10) && v[10]);
	case M_SHA256: return sha256_digests(v);
	case M_COUNT: case M_STEPS: return whole_number(v, INT64_MAX, n);
	case M_U64: return whole_number(v, UINT64_MAX, n);
	case M_RATE: return rate(v, r);
	}
	return false;
}

int rt_ckpt_meta_read(const RtCkpt *c, const char *path, RtCkptMeta *m, char *err, size_t errlen)
{
	memset(m, 0, sizeof *m);
	int nstate = 0, nschedule = 0;
	for (int k = 0; k < NMETA; k++) {
		const char *v = rt_ckpt_meta(c, meta_keys[k].key);
		uint64_t n = 0;
		double r = 0;
		if (!v)
			continue;
		if (!meta_ok(meta_keys[k].kind, v, &n, &r)) {
			Shown b;
			say(err, errlen, path, "the metadata's '%s' is '%s', not %s", meta_keys[k].key, show(&b, v),
			    meta_form[meta_keys[k].kind]);
			return -1;
		}
		char *at = (char *)m + meta_keys[k].at;
		MetaKind kind = meta_keys[k].kind;
		if (kind == M_COUNT || kind == M_STEPS)
			*(int64_t *)at = (int64_t)n;
		else if (kind == M_U64)
			*(uint64_t *)at = n;
		else if (kind == M_RATE)
			*(double *)at = r;
		else
			*(const char **)at = v;
		nstate += kind == M_COUNT || kind == M_U64;
		nschedule += kind == M_STEPS || kind == M_RATE;
	}
	m->has_state = nstate == NSTATE;
	m->has_schedule = nschedule == NSCHEDULE;
	if (m->has_state && m->adam_t > m->step) {
		say(err, errlen, path, "the metadata's 'adam_t' is %" PRId64 ", more than 'step' (%" PRId64
		    "): AdamW cannot have taken more steps than the training", m->adam_t, m->step);
		return -1;
	}
	return 0;
}

int rt_ckpt_write_meta(const char *path, const RtTensor *t, int n, const RtCkptMeta *m, char *err, size_t errlen)
{
	const char *keys[NMETA], *vals[NMETA];
	char num[NMETA][32];
	int nmeta = 0;
	for (int k = 0; k < NMETA; k++) {
		MetaKind kind = meta_keys[k].kind;
		const char *at = (const char *)m + meta_keys[k].at;
		const char *v = (kind == M_STEPS || kind == M_RATE ? m->has_schedule : m->has_state) ? num[k] : NULL;
		if (kind == M_COUNT || kind == M_STEPS)
			snprintf(num[k], sizeof num[k], "%" PRId64, *(const int64_t *)at);
		else if (kind == M_U64)
			snprintf(num[k], sizeof num[k], "%" PRIu64, *(const uint64_t *)at);
		else if (kind == M_RATE)
			snprintf(num[k], sizeof num[k], "%.17g", *(const double *)at);
		else
			v = *(const char *const *)at;
		if (v) {
			keys[nmeta] = meta_keys[k].key;
			vals[nmeta++] = v;
		}
	}
	return rt_ckpt_write(path, t, n, keys, vals, nmeta, err, errlen);
}

/* ---------------------------------------------------------------- checkpoint directories */

/* A sharded save is staged whole in DIR/.saving, its index written there last: from then on
 * it is the checkpoint (rt_ckpt_open reads it first). Publishing links each staged file to
 * a temporary name in DIR and renames that over the old file, the index last, and only then
 * removes the staged index and the previous save's other files. A crash at any point leaves
 * either the previous checkpoint or the new one whole in the place a reader looks, never a
 * mix; publishing again (rt_ckpt_shards_begin) finishes the job. */

static bool exists(const char *p)
{
	struct stat st;
	return !stat(p, &st);
}

static char *join(const char *dir, const char *a, const char *b)
{
	size_t n = strlen(dir) + strlen(a) + strlen(b) + 3;
	char *p = malloc(n);
	if (p)
		snprintf(p, n, "%s/%s%s%s", dir, a, *b ? "/" : "", b);
	return p;
}

static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), m = strlen(tail);
	return n >= m && !strcmp(s + n - m, tail);
}

/* The shards' tensors as one RtCkpt: every shard must carry the same metadata (one save's). */
static int read_shards(const char *index, RtCkpt *c, char *err, size_t errlen)
{
	RtHfCkpt *h = calloc(1, sizeof *h);
	if (!h || rt_hf_read(index, h, err, errlen)) {
		if (!h)
			rt_errf(err, errlen, "%s: out of memory", index);
		free(h);
		return -1;
	}
	const RtCkpt *a = &h->shards[0];
	for (int f = 1; f < h->nshards; f++) {
		const RtCkpt *b = &h->shards[f];
		for (int i = 0; i < a->nmeta || i < b->nmeta; i++) {
			const char *k = i < a->nmeta ? a->keys[i] : b->keys[i];
			const char *va = rt_ckpt_meta(a, k), *vb = rt_ckpt_meta(b, k);
			if (!va || !vb || strcmp(va, vb)) {
				rt_errf(err, errlen, "%s: its shards disagree: metadata '%s' differs between the first shard "
					"and shard %d of %d (files of different saves?)", index, k, f + 1, h->nshards);
				rt_hf_free(h);
				free(h);
				return -1;
			}
		}
	}
	if (!(c->t = malloc((size_t)h->n * sizeof *c->t + 1))) {
		rt_errf(err, errlen, "%s: out of memory", index);
		rt_hf_free(h);
		free(h);
		return -1;
	}
	for (int i = 0; i < h->n; i++)
		c->t[i] = *h->t[i];
	c->n = h->n;
	c->keys = a->keys, c->vals = a->vals, c->nmeta = a->nmeta;
	c->parts = h;
	return 0;
}

int rt_ckpt_open(const char *path, RtCkpt *c, char **used, char *err, size_t errlen)
{
	memset(c, 0, sizeof *c);
	*used = NULL;
	struct stat st;
	char *p;
	if (!stat(path, &st) && S_ISDIR(st.st_mode)) {
		p = join(path, RT_CKPT_STAGE, RT_CKPT_INDEX);   /* a save published halfway */
		if (p && !exists(p))
			free(p), p = join(path, RT_CKPT_INDEX, "");
		if (p && !exists(p))
			free(p), p = join(path, RT_CKPT_FILE, "");
	} else {
		p = strdup(path);
	}
	if (!p) {
		rt_errf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	int rc = ends_with(p, ".json") ? read_shards(p, c, err, errlen) : rt_ckpt_read(p, c, err, errlen);
	if (rc)
		free(p);
	else
		*used = p;
	return rc;
}

static uint64_t bytes_of(const RtTensor *t)
{
	uint64_t b = 4;
	for (int k = 0; k < t->rank; k++)
		b *= (uint64_t)t->shape[k];
	return b;
}

int rt_ckpt_nshards(const RtTensor *t, int n, int procs, int asked)
{
	uint64_t total = 0;
	for (int i = 0; i < n; i++)
		total += bytes_of(&t[i]);
	int64_t k = asked > 0 ? asked : (int64_t)((total + RT_CKPT_SHARD_BYTES - 1) / RT_CKPT_SHARD_BYTES);
	if (asked <= 0 && k < procs)
		k = procs;
	k = k > n ? n : k;
	return k < 1 ? 1 : (int)k;
}

void rt_ckpt_deal(const RtTensor *t, int n, int nshards, int *shard_of)
{
	uint64_t *load = calloc((size_t)(nshards > 0 ? nshards : 1), sizeof *load);
	if (!load)
		nshards = 1;   /* out of memory: every tensor to shard 0 */
	for (int i = 0; i < n; i++)
		shard_of[i] = -1;
	for (int done = 0; done < n; done++) {
		int big = -1;   /* the largest not yet dealt, the first of equals */
		for (int i = 0; i < n; i++)
			if (shard_of[i] < 0 && (big < 0 || bytes_of(&t[i]) > bytes_of(&t[big])))
				big = i;
		int s = 0;
		for (int k = 1; k < nshards; k++)
			if (load[k] < load[s])
				s = k;
		shard_of[big] = s;
		if (load)
			load[s] += bytes_of(&t[big]);
	}
	free(load);
}

static char *shard_name(int s, int nshards)
{
	char *p = malloc(64);
	if (p)
		snprintf(p, 64, "model-%05d-of-%05d.safetensors", s + 1, nshards);
	return p;
}

/* Whether name is a shard file of mgl's naming (model-NNNNN-of-NNNNN.safetensors). */
static bool is_shard_name(const char *name)
{
	int a, b, end = 0;
	return sscanf(name, "model-%5d-of-%5d.safetensors%n", &a, &b, &end) == 2 && end && !name[end] &&
	       strlen(name) == strlen("model-00001-of-00001.safetensors");
}

int rt_ckpt_write_shard(const char *dir, const RtTensor *t, int n, const int *shard_of, int nshards, int s,
			const RtCkptMeta *m, char *err, size_t errlen)
{
	RtTensor *mine = malloc((size_t)n * sizeof *mine + 1);
	char *stage = join(dir, RT_CKPT_STAGE, ""), *name = shard_name(s, nshards);
	char *path = stage && name ? join(stage, name, "") : NULL;
	int k = 0, rc = -1;
	if (!mine || !path)
		rt_errf(err, errlen, "%s: out of memory", dir);
	else if (mkdir(stage, 0777) && errno != EEXIST)
		rt_errf(err, errlen, "cannot create '%s': %s", stage, strerror(errno));
	else {
		for (int i = 0; i < n; i++)
			if (shard_of[i] == s)
				mine[k++] = t[i];
		rc = rt_ckpt_write_meta(path, mine, k, m, err, errlen);
	}
	free(mine);
	free(stage);
	free(name);
	free(path);
	return rc;
}

/* Links DIR/.saving/name to DIR/name.tmp and renames that over DIR/name. */
static int publish_file(const char *dir, const char *name, char *err, size_t errlen)
{
	char *from = join(dir, RT_CKPT_STAGE, name), *to = join(dir, name, ""), tmp[4096];
	int rc = -1;
	if (!from || !to || rt_tmp_name(to, tmp, sizeof tmp))
		rt_errf(err, errlen, "%s/%s: out of memory or too long a name", dir, name);
	else if ((unlink(tmp), link(from, tmp)) || rename(tmp, to))
		rt_errf(err, errlen, "%s: cannot put it in place: %s", to, strerror(errno));
	else
		rc = 0;
	free(from);
	free(to);
	return rc;
}

static int sync_path(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return -1;
	int rc = fsync(fd) && errno != EINVAL ? -1 : 0;
	close(fd);
	return rc;
}

/* Removes DIR's files of an earlier save that the checkpoint now in place does not use:
 * checkpoint.safetensors and shards when keep (the index) names others, the index and
 * every shard when keep is NULL. */
static void remove_old(const char *dir, const RtHfIndex *keep)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		bool old = is_shard_name(e->d_name);
		for (int f = 0; old && keep && f < keep->nfiles; f++)
			old = strcmp(keep->files[f], e->d_name);
		if (old || (keep && !strcmp(e->d_name, RT_CKPT_FILE)) || (!keep && !strcmp(e->d_name, RT_CKPT_INDEX))) {
			char *p = join(dir, e->d_name, "");
			if (p)
				unlink(p);
			free(p);
		}
	}
	if (d)
		closedir(d);
}

/* Publishes the save staged in DIR/.saving (whose index is there), then removes the stage. */
static int publish(const char *dir, char *err, size_t errlen)
{
	char *stage = join(dir, RT_CKPT_STAGE, ""), *index = join(dir, RT_CKPT_STAGE, RT_CKPT_INDEX);
	size_t len = 0;
	if (!stage || !index)
		rt_errf(err, errlen, "%s: out of memory", dir);
	char *text = stage && index ? mgl_read_whole(index, MAX_HEADER, "indexes", &len, err, errlen) : NULL;
	RtHfIndex x = {0};
	int rc = text ? rt_hf_index_parse(text, len, index, &x, err, errlen) : -1;
	free(text);
	for (int f = 0; f < x.nfiles && !rc; f++)
		rc = publish_file(dir, x.files[f], err, errlen);
	if (!rc && (sync_path(dir) || (rc = publish_file(dir, RT_CKPT_INDEX, err, errlen)) || sync_path(dir)))
		rc = rc ? rc : (rt_errf(err, errlen, "%s: cannot sync: %s", dir, strerror(errno)), -1);
	if (!rc) {
		unlink(index);   /* DIR's index is the checkpoint from here */
		remove_old(dir, &x);
		remove_old(stage, NULL);
		rmdir(stage);
	}
	rt_hf_index_free(&x);
	free(stage);
	free(index);
	return rc;
}

int rt_ckpt_shards_begin(const char *dir, char *err, size_t errlen)
{
	char *index = join(dir, RT_CKPT_STAGE, RT_CKPT_INDEX);
	int rc = 0;
	if (!index) {
		rt_errf(err, errlen, "%s: out of memory", dir);
		rc = -1;
	} else if (mkdir(dir, 0777) && errno != EEXIST) {
		rt_errf(err, errlen, "cannot create '%s': %s", dir, strerror(errno));
		rc = -1;
	} else if (exists(index)) {
		rc = publish(dir, err, errlen);
	}
	free(index);
	return rc;
}

int rt_ckpt_shards_commit(const char *dir, const RtTensor *t, int n, const int *shard_of, int nshards,
			  char *err, size_t errlen)
{
	uint64_t total = 0;
	for (int i = 0; i < n; i++)
		total += bytes_of(&t[i]);
	char *index = join(dir, RT_CKPT_STAGE, RT_CKPT_INDEX);
	FILE *f = index ? rt_atomic_open(index, err, errlen) : NULL;
	if (!f) {
		if (!index)
			rt_errf(err, errlen, "%s: out of memory", dir);
		free(index);
		return -1;
	}
	Buf b = {0};
	char num[32];
	snprintf(num, sizeof num, "%" PRIu64, total);
	puts_(&b, "{\n  \"metadata\": {\n    \"total_size\": ");
	puts_(&b, num);
	puts_(&b, ",\n    \"format\": ");
	put_json_str(&b, RT_CKPT_FORMAT);
	puts_(&b, "\n  },\n  \"weight_map\": {");
	for (int i = 0; i < n; i++) {
		char *name = shard_name(shard_of[i], nshards);
		puts_(&b, i ? ",\n    " : "\n    ");
		put_json_str(&b, t[i].name);
		puts_(&b, ": ");
		put_json_str(&b, name ? name : "");
		b.oom |= !name;
		free(name);
	}
	puts_(&b, "\n  }\n}\n");
	int rc = -1;
	if (b.oom || fwrite(b.p, 1, b.n, f) != b.n) {
		rt_errf(err, errlen, "%s: cannot write: %s", index, b.oom ? "out of memory" : strerror(errno));
		rt_atomic_abort(f, index);
	} else if (!(rc = rt_atomic_commit(f, index, err, errlen))) {
		rc = publish(dir, err, errlen);
	}
	free(b.p);
	free(index);
	return rc;
}

int rt_ckpt_single_commit(const char *dir, char *err, size_t errlen)
{
	char *stage = join(dir, RT_CKPT_STAGE, "");
	if (!stage) {
		rt_errf(err, errlen, "%s: out of memory", dir);
		return -1;
	}
	/* each index before its shards: a reader takes an index first */
	char *index = join(stage, RT_CKPT_INDEX, "");
	if (index)
		unlink(index);
	remove_old(stage, NULL);
	rmdir(stage);
	free(index);
	index = join(dir, RT_CKPT_INDEX, "");
	if (index)
		unlink(index);
	remove_old(dir, NULL);
	free(index);
	free(stage);
	return 0;
}
