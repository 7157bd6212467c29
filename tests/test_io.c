/* tests/test_io.c — Check suites for what every reader and writer of files shares:
 * replacing a file whole or not at all (runtime/io.c), reading a whole file and counts in
 * messages (plan/common.c), bf16 conversion (io.c) and the JSON reader (runtime/json.c).
 *
 * Failures the machine cannot be made to have on demand are injected: the binary is linked
 * with -Wl,--wrap=fsync, so that fsync of a file or of a directory fails with the errno a
 * test asks for, and a write fails past RLIMIT_FSIZE (EFBIG) as it would on a full disk.
 * Scratch files go to a fresh directory under /tmp.
 */
#define _XOPEN_SOURCE 700   /* mknod */
#include "runtime.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

static int fsync_file_errno, fsync_dir_errno;   /* 0: the real fsync */

int __real_fsync(int fd);
int __wrap_fsync(int fd);
int __wrap_fsync(int fd)
{
	struct stat st;
	int e = fstat(fd, &st) ? 0 : S_ISDIR(st.st_mode) ? fsync_dir_errno : fsync_file_errno;
	if (e) {
		errno = e;
		return -1;
	}
	return __real_fsync(fd);
}

static char scratch[64];

static void make_scratch(void)
{
	snprintf(scratch, sizeof scratch, "/tmp/mgl-test-io-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(scratch));
}

static void remove_scratch(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
	ck_assert_int_eq(system(cmd), 0);
	fsync_file_errno = fsync_dir_errno = 0;
}

/* scratch/name, in one of two static buffers */
static const char *at(const char *name)
{
	static char buf[2][256];
	static int k;
	k ^= 1;
	snprintf(buf[k], sizeof buf[k], "%s/%s", scratch, name);
	return buf[k];
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

static bool exists(const char *path)
{
	struct stat st;
	return !lstat(path, &st);
}

/* path holds exactly text */
static void ck_holds(const char *path, const char *text)
{
	char err[512];
	size_t n;
	char *b = mgl_read_whole(path, 1 << 20, "files", &n, err, sizeof err);
	ck_assert_msg(b, "%s", err);
	ck_assert_msg(n == strlen(text) && !memcmp(b, text, n), "%s holds '%s', not '%s'", path, b, text);
	free(b);
}

static void ck_no_tmp(const char *path)
{
	char tmp[512];
	ck_assert_int_eq(rt_tmp_name(path, tmp, sizeof tmp), 0);
	ck_assert_msg(!exists(tmp), "%s remains", tmp);
}

/* err is "PATH: ..." with text in it, and never names the temporary file */
#define ck_message(err, path, text) do {                                                          \
	ck_assert_msg(!strncmp((err), (path), strlen(path)) && (err)[strlen(path)] == ':',          \
		      "the message does not start with '%s:': %s", (path), (err));                 \
	ck_assert_msg(strstr((err), (text)), "expected '%s' in: %s", (text), (err));               \
	ck_assert_msg(!strstr((err), RT_TMP_SUFFIX), "the message names the temporary file: %s", (err)); \
} while (0)

/* Writes text to path through rt_atomic_open and rt_atomic_commit: their result. */
static int atomic_write(const char *path, const char *text, char *err, size_t errlen)
{
	FILE *f = rt_atomic_open(path, err, errlen);
	if (!f)
		return -1;
	fputs(text, f);
	return rt_atomic_commit(f, path, err, errlen);
}

/* ---------------------------------------------------------------- atomic replacement */

START_TEST(atomic_writes_and_replaces)
{
	make_scratch();
	char err[512], tmp[16];
	const char *path = at("out.txt");
	ck_assert_msg(!atomic_write(path, "first", err, sizeof err), "%s", err);
	ck_holds(path, "first");
	ck_no_tmp(path);
	ck_assert_msg(!atomic_write(path, "second", err, sizeof err), "%s", err);
	ck_holds(path, "second");
	/* a stale temporary file from a crash is written over */
	char stale[512];
	rt_tmp_name(path, stale, sizeof stale);
	write_text(stale, "half of something much longer");
	ck_assert_msg(!atomic_write(path, "third", err, sizeof err), "%s", err);
	ck_holds(path, "third");
	ck_no_tmp(path);
	/* until the commit, the old file is what path holds */
	FILE *f = rt_atomic_open(path, err, sizeof err);
	ck_assert_ptr_nonnull(f);
	fputs("fourth", f);
	fflush(f);
	ck_holds(path, "third");
	ck_assert_int_eq(rt_atomic_commit(f, path, err, sizeof err), 0);
	ck_holds(path, "fourth");
	/* a relative path: the directory synced is "." */
	char cwd[4096];
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	ck_assert_int_eq(chdir(scratch), 0);
	int rc = atomic_write("rel.txt", "fifth", err, sizeof err);
	ck_assert_int_eq(chdir(cwd), 0);
	ck_assert_msg(!rc, "%s", err);
	ck_holds(at("rel.txt"), "fifth");
	/* the temporary name, and a buffer too small for it */
	ck_assert_int_eq(rt_tmp_name("a/b", tmp, sizeof tmp), 0);
	ck_assert_str_eq(tmp, "a/b.tmp");
	ck_assert_int_eq(rt_tmp_name("0123456789ab", tmp, sizeof tmp), -1);
	ck_assert_int_eq(rt_tmp_name("0123456789a", tmp, sizeof tmp), 0);   /* 11 + ".tmp" + NUL */
	remove_scratch();
}
END_TEST

/* A directory is refused before anything is written; a device or a pipe is written
 * straight into (`-o /dev/null`), never renamed over: as root that would replace the
 * device node itself. */
START_TEST(atomic_refuses_what_is_not_a_file)
{
	make_scratch();
	char err[512] = "";
	const char *dir = at("dir");
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	write_text(at("dir/keep"), "kept");
	ck_assert_ptr_null(rt_atomic_open(dir, err, sizeof err));
	ck_message(err, dir, "cannot write: it is a directory");
	ck_no_tmp(dir);
	ck_holds(at("dir/keep"), "kept");
	ck_assert_ptr_null(rt_atomic_open(at("dir/"), err, sizeof err));
	ck_assert_msg(strstr(err, "it is a directory"), "%s", err);
	/* a pipe with a reader: the bytes arrive, the pipe stays a pipe */
	const char *fifo = at("fifo");
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	int rd = open(fifo, O_RDONLY | O_NONBLOCK);
	ck_assert_int_ge(rd, 0);
	FILE *f = rt_atomic_open(fifo, err, sizeof err);
	ck_assert_msg(f != NULL, "%s", err);
	fputs("through", f);
	ck_assert_int_eq(rt_atomic_commit(f, fifo, err, sizeof err), 0);
	char got[16] = "";
	ck_assert_int_eq(read(rd, got, sizeof got - 1), 7);
	ck_assert_str_eq(got, "through");
	close(rd);
	struct stat st;
	ck_assert(!stat(fifo, &st) && S_ISFIFO(st.st_mode));
	ck_no_tmp(fifo);
	/* a character device of our own (/dev/null's numbers; making one needs root) */
	const char *dev = at("null");
	if (mknod(dev, S_IFCHR | 0666, makedev(1, 3)) == 0) {
		ck_assert_ptr_nonnull(f = rt_atomic_open(dev, err, sizeof err));
		fputs("gone", f);
		ck_assert_int_eq(rt_atomic_commit(f, dev, err, sizeof err), 0);
		ck_assert(!stat(dev, &st) && S_ISCHR(st.st_mode));
		ck_no_tmp(dev);
	} else {
		printf("SKIP: test_io: writing into a device node (mknod needs root)\n");
	}
	/* a directory that is not there, and a name too long for any file system */
	const char *deep = at("nope/out.txt");
	ck_assert_ptr_null(rt_atomic_open(deep, err, sizeof err));
	ck_message(err, deep, "cannot create: No such file or directory");
	ck_assert(!exists(at("nope")));
	char *longname = malloc(8192), *longerr = malloc(8192);
	snprintf(longname, 8192, "%s/", scratch);
	memset(longname + strlen(longname), 'x', 8000);
	longname[8100] = 0;
	ck_assert_ptr_null(rt_atomic_open(longname, longerr, 8192));
	ck_assert_msg(strstr(longerr, ": cannot create: File name too long"), "%.200s", longerr);
	free(longname);
	free(longerr);
	remove_scratch();
}
END_TEST

/* Every failure before the rename leaves the old file as it was and no temporary file. */
START_TEST(atomic_failures_leave_no_tmp)
{
	make_scratch();
	char err[512] = "";
	const char *path = at("out.txt");
	write_text(path, "old");

	/* the caller gives up */
	FILE *f = rt_atomic_open(path, err, sizeof err);
	ck_assert_ptr_nonnull(f);
	fputs("new", f);
	rt_atomic_abort(f, path);
	ck_holds(path, "old");
	ck_no_tmp(path);

	/* a write fails (past RLIMIT_FSIZE: EFBIG, as a full disk's ENOSPC would) */
	struct rlimit was;
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &was), 0);
	void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
	f = rt_atomic_open(path, err, sizeof err);
	ck_assert_ptr_nonnull(f);
	struct rlimit small = {4096, was.rlim_max};
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
	static char big[1 << 16];
	memset(big, 'x', sizeof big - 1);
	fputs(big, f);
	int rc = rt_atomic_commit(f, path, err, sizeof err);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &was), 0);
	signal(SIGXFSZ, old_handler);
	ck_assert_int_eq(rc, -1);
	ck_message(err, path, "cannot write: File too large");
	ck_holds(path, "old");
	ck_no_tmp(path);

	/* fsync of the file fails: EIO, and EINVAL too (only a directory may not sync) */
	int errnos[] = {EIO, EINVAL};
	for (int i = 0; i < 2; i++) {
		fsync_file_errno = errnos[i];
		ck_assert_int_eq(atomic_write(path, "new", err, sizeof err), -1);
		fsync_file_errno = 0;
		ck_message(err, path, "cannot sync: ");
		ck_assert_msg(strstr(err, strerror(errnos[i])), "%s", err);
		ck_holds(path, "old");
		ck_no_tmp(path);
	}

	/* the rename fails: path became a directory that is not empty */
	f = rt_atomic_open(path, err, sizeof err);
	ck_assert_ptr_nonnull(f);
	fputs("new", f);
	ck_assert_int_eq(remove(path), 0);
	ck_assert_int_eq(mkdir(path, 0700), 0);
	write_text(at("out.txt/keep"), "kept");
	ck_assert_int_eq(rt_atomic_commit(f, path, err, sizeof err), -1);
	ck_message(err, path, "cannot replace: ");
	ck_holds(at("out.txt/keep"), "kept");
	ck_no_tmp(path);
	remove_scratch();
}
END_TEST

/* A directory that cannot be synced at all (EINVAL) is not an error; another failure is,
 * with the new file in place. */
START_TEST(atomic_directory_sync)
{
	make_scratch();
	char err[512] = "";
	const char *path = at("out.txt");
	fsync_dir_errno = EINVAL;
	ck_assert_msg(!atomic_write(path, "einval", err, sizeof err), "%s", err);
	ck_holds(path, "einval");
	fsync_dir_errno = EIO;
	ck_assert_int_eq(atomic_write(path, "eio", err, sizeof err), -1);
	ck_message(err, path, "written, but syncing its directory failed: Input/output error");
	ck_holds(path, "eio");
	ck_no_tmp(path);
	remove_scratch();
}
END_TEST

/* ---------------------------------------------------------------- whole files */

START_TEST(read_whole_limits)
{
	make_scratch();
	char err[512] = "", text[300];
	size_t n = 99;
	/* at the limit: read; one byte past it: refused, the limit said as people read it */
	for (int i = 0; i < 300; i++)
		text[i] = (char)('a' + i % 26);
	text[299] = 0;
	write_text(at("f"), text);
	char *b = mgl_read_whole(at("f"), 299, "files", &n, err, sizeof err);
	ck_assert_msg(b, "%s", err);
	ck_assert_uint_eq(n, 299);
	ck_assert_int_eq(b[299], 0);
	ck_assert(!memcmp(b, text, 299));
	free(b);
	ck_assert_ptr_null(mgl_read_whole(at("f"), 298, "test files", &n, err, sizeof err));
	ck_message(err, at("f"), "too large: mgl reads test files of at most 298 bytes");
	/* limits past the first buffer (64 KiB), and their wording */
	static char big[(1 << 20) + 2];
	memset(big, 'x', (1 << 20) + 1);
	write_text(at("big"), big);
	ck_assert_ptr_null(mgl_read_whole(at("big"), 1 << 20, "model files", &n, err, sizeof err));
	ck_message(err, at("big"), "too large: mgl reads model files of at most 1 MiB");
	ck_assert_ptr_nonnull(b = mgl_read_whole(at("big"), (1 << 20) + 1, "x", &n, err, sizeof err));
	ck_assert_uint_eq(n, (1 << 20) + 1);
	free(b);
	ck_assert_ptr_nonnull(b = mgl_read_whole(at("big"), (size_t)1 << 30, "x", &n, err, sizeof err));
	ck_assert_uint_eq(n, (1 << 20) + 1);
	free(b);
	ck_assert_ptr_null(mgl_read_whole(at("big"), 100000, "x", &n, err, sizeof err));
	ck_assert_msg(strstr(err, "at most 100,000 bytes"), "%s", err);
	/* a file with no end: stat's size (0) is not trusted, and the limit stops the reading */
	ck_assert_ptr_null(mgl_read_whole("/dev/zero", (size_t)3 << 20, "x", &n, err, sizeof err));
	ck_message(err, "/dev/zero", "at most 3 MiB");
	/* empty, NUL bytes inside, missing, a directory */
	write_text(at("empty"), "");
	ck_assert_ptr_nonnull(b = mgl_read_whole(at("empty"), 10, "x", &n, err, sizeof err));
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(b[0], 0);
	free(b);
	FILE *f = fopen(at("nul"), "wb");
	fwrite("a\0b", 1, 3, f);
	fclose(f);
	ck_assert_ptr_nonnull(b = mgl_read_whole(at("nul"), 10, "x", &n, err, sizeof err));
	ck_assert_uint_eq(n, 3);
	ck_assert(!memcmp(b, "a\0b", 4));
	free(b);
	ck_assert_ptr_null(mgl_read_whole(at("missing"), 10, "x", &n, err, sizeof err));
	ck_message(err, at("missing"), "cannot open: No such file or directory");
	ck_assert_ptr_null(mgl_read_whole(scratch, 10, "x", &n, err, sizeof err));
	ck_message(err, scratch, "cannot read: Is a directory");
	remove_scratch();
}
END_TEST

START_TEST(commas)
{
	static const struct { int64_t v; const char *s; } cases[] = {
		{0, "0"}, {7, "7"}, {999, "999"}, {1000, "1,000"}, {-1000, "-1,000"}, {-999, "-999"},
		{124439808, "124,439,808"}, {INT64_MAX, "9,223,372,036,854,775,807"},
		{INT64_MIN, "-9,223,372,036,854,775,808"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char buf[32];
		ck_assert_str_eq(mgl_commas(cases[i].v, buf), cases[i].s);
	}
}
END_TEST

/* ---------------------------------------------------------------- bf16 */

static uint16_t to_bf16(float f)
{
	uint16_t h;
	rt_f32_to_bf16(&h, &f, 1);
	return h;
}

static uint16_t bits_to_bf16(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return to_bf16(f);
}

static float bf16_value(uint16_t h)
{
	float f;
	rt_bf16_to_f32(&f, &h, 1);
	return f;
}

/* Every bf16 value goes to a float and back unchanged (a NaN stays a NaN of its sign). */
START_TEST(bf16_round_trip)
{
	for (uint32_t h = 0; h < 65536; h++) {
		float f = bf16_value((uint16_t)h);
		uint32_t u;
		memcpy(&u, &f, 4);
		ck_assert_uint_eq(u, h << 16);   /* exact */
		uint16_t back = to_bf16(f);
		if (isnan(f))
			ck_assert_msg((back & 0x7fff) > 0x7f80 && (back & 0x8000) == (h & 0x8000), "NaN %04x came back %04x",
				      (unsigned)h, back);
		else
			ck_assert_msg(back == h, "%04x came back %04x", (unsigned)h, back);
	}
	/* and arrays, in place of the scalar calls */
	float f[4] = {1.0f, -2.5f, INFINITY, 0.1f};
	uint16_t h[4];
	float g[4];
	rt_f32_to_bf16(h, f, 4);
	rt_bf16_to_f32(g, h, 4);
	ck_assert(g[0] == 1.0f && g[1] == -2.5f && g[2] == INFINITY && fabsf(g[3] - 0.1f) < 0.001f);
}
END_TEST

/* The nearest bf16 to the float of bits u (not a NaN), by measuring in double: ties go to
 * the even one, and past the largest finite value the next step up is 2^128, an infinity. */
static uint16_t nearest(uint32_t u)
{
	uint32_t mag = u & 0x7fffffffu;
	float f;
	memcpy(&f, &mag, 4);
	uint16_t lo = (uint16_t)(mag >> 16), hi = (uint16_t)(lo + 1);
	double dlo = bf16_value(lo), dhi = hi == 0x7f80 ? ldexp(1, 128) : bf16_value(hi);
	double below = (double)f - dlo, above = dhi - (double)f;
	uint16_t r = below < above ? lo : above < below ? hi : (lo & 1) ? hi : lo;
	if (mag == 0x7f800000u)
		r = 0x7f80;
	return (uint16_t)(r | (u >> 16 & 0x8000));
}

START_TEST(bf16_rounding)
{
	static const struct { uint32_t f; uint16_t bf; } cases[] = {
		{0x3f800000, 0x3f80},   /* 1 */
		{0x3f807fff, 0x3f80},   /* just under half an ulp: down */
		{0x3f808000, 0x3f80},   /* a tie: to the even 0x3f80 */
		{0x3f808001, 0x3f81},   /* just over: up */
		{0x3f818000, 0x3f82},   /* a tie: to the even 0x3f82 */
		{0xbf818000, 0xbf82},   /* and negative */
		{0x00000001, 0x0000},   /* the smallest subnormal: to zero */
		{0x00008000, 0x0000},   /* a tie at zero: even */
		{0x00018000, 0x0002},   /* a subnormal tie: even */
		{0x807fffff, 0x8080},   /* the largest subnormal rounds up into the normals */
		{0x7f7f7fff, 0x7f7f},   /* under half an ulp past bf16's largest: stays finite */
		{0x7f7f8000, 0x7f80},   /* half an ulp past it: infinity */
		{0x7f7fffff, 0x7f80},   /* FLT_MAX: infinity */
		{0xff7fffff, 0xff80},   /* -FLT_MAX: -infinity */
		{0x7f800000, 0x7f80},   /* infinity */
		{0xff800000, 0xff80},   /* -infinity */
		{0x80000000, 0x8000},   /* -0 */
		{0x7fc00000, 0x7fc0},   /* the quiet NaN */
		{0xffc00000, 0xffc0},   /* a negative one keeps its sign */
		{0x7f800001, 0x7fc0},   /* a NaN whose payload is in the low half: not infinity */
		{0xff80ffff, 0xffc0},
		{0x7fffffff, 0x7fff},   /* the largest payload: rounding must not carry it out */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		ck_assert_msg(bits_to_bf16(cases[i].f) == cases[i].bf, "%08x gave %04x, not %04x", cases[i].f,
			      bits_to_bf16(cases[i].f), cases[i].bf);
	/* and floats across the whole range against the nearest bf16 measured in double */
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < 1000000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint32_t u = (uint32_t)x;
		if ((u & 0x7fffffffu) > 0x7f800000u)
			continue;
		ck_assert_msg(bits_to_bf16(u) == nearest(u), "%08x gave %04x, the nearest is %04x", u, bits_to_bf16(u),
			      nearest(u));
	}
}
END_TEST

/* ---------------------------------------------------------------- JSON */

/* A reader over a copy of text of exactly its length (so AddressSanitizer sees a read past it). */
static RtJson reader(const char *text, size_t n)
{
	unsigned char *s = malloc(n ? n : 1);
	memcpy(s, text, n);
	return (RtJson){.s = s, .n = n};
}

static void done(RtJson *j) { free((void *)j->s); }

/* The code points of a string, as UTF-8, into a fixed buffer. */
typedef struct { char s[256]; size_t n; uint32_t last; } Out;
static int collect(RtJson *j, void *ctx, uint32_t cp, size_t at)
{
	(void)j, (void)at;
	Out *o = ctx;
	o->last = cp;
	if (cp < 0x80 && o->n + 1 < sizeof o->s)
		o->s[o->n++] = (char)cp;
	o->s[o->n] = 0;
	return 0;
}

static int refuse_x(RtJson *j, void *ctx, uint32_t cp, size_t at)
{
	(void)ctx;
	return cp == 'x' ? rt_json_fail(j, at, "no x here") : 0;
}

START_TEST(json_strings)
{
	static const struct { const char *text, *want, *err; size_t at; } cases[] = {
		{"\"abc\"", "abc", NULL, 0},
		{"  \"a\\\"\\\\\\/\\b\\f\\n\\r\\tz\"", "a\"\\/\b\f\n\r\tz", NULL, 0},
		{"\"\\u0041\\u00e9\"", "A", NULL, 0},
		{"\"abc", NULL, "a string that is never closed", 0},
		{"\"", NULL, "a string that is never closed", 0},
		{"\"a\\q\"", NULL, "an invalid escape in a string", 2},
		{"\"a\\", NULL, "an invalid escape in a string", 2},
		{"\"\\u12\"", NULL, "\\u must be followed by four hex digits", 5},
		{"\"\\u12", NULL, "\\u must be followed by four hex digits", 5},
		{"\"\\ud834\"", NULL, "a high surrogate \\uD834 without a low one after it", 1},
		{"\"\\ud834\\u0041\"", NULL, "a high surrogate \\uD834 without a low one after it", 1},
		{"\"\\udd1e\"", NULL, "a lone low surrogate \\uDD1E (no high one before it)", 1},
		{"\"a\tb\"", NULL, "a control character (0x09) in a string: JSON wants it escaped", 2},
		{"\"\xff\"", NULL, "a string is not valid UTF-8", 1},
		{"\"\xc0\xaf\"", NULL, "a string is not valid UTF-8", 1},
		{"\"\xed\xa0\x80\"", NULL, "a string is not valid UTF-8", 1},
		{"\"\xe2\x9c", NULL, "a string is not valid UTF-8", 1},
		{"'a'", NULL, "expected a string", 0},
		{"", NULL, "the text ends early", 0},
		{"   ", NULL, "the text ends early", 3},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		RtJson j = reader(cases[i].text, strlen(cases[i].text));
		Out o = {.n = 0};
		int rc = rt_json_string(&j, "expected a string", collect, &o);
		if (cases[i].want) {
			ck_assert_msg(!rc, "%s: %s", cases[i].text, j.e.msg);
			ck_assert_str_eq(o.s, cases[i].want);
			ck_assert_uint_eq(j.pos, j.n);
		} else {
			ck_assert_msg(rc == -1 && !strcmp(j.e.msg, cases[i].err), "%s: '%s', not '%s'", cases[i].text, j.e.msg,
				      cases[i].err);
			ck_assert_msg(j.e.at == cases[i].at, "%s: at %zu, not %zu", cases[i].text, j.e.at, cases[i].at);
		}
		done(&j);
	}
	/* a surrogate pair is one code point; \u0000 is one too, for the caller to judge */
	RtJson j = reader("\"\\ud834\\udd1e\"", 14);
	Out o = {.n = 0};
	ck_assert_int_eq(rt_json_string(&j, "", collect, &o), 0);
	ck_assert_uint_eq(o.last, 0x1D11E);
	done(&j);
	j = reader("\"a\\u0000\"", 10);
	ck_assert_int_eq(rt_json_string(&j, "", collect, &o), 0);
	ck_assert_uint_eq(o.last, 0);
	done(&j);
	/* put's refusal stops the reading, where put said */
	j = reader("\"abxd\"", 6);
	ck_assert_int_eq(rt_json_string(&j, "", refuse_x, NULL), -1);
	ck_assert_str_eq(j.e.msg, "no x here");
	ck_assert_uint_eq(j.e.at, 3);
	done(&j);
	/* no put: the string is only checked */
	j = reader("\"ab\" x", 6);
	ck_assert_int_eq(rt_json_string(&j, "", NULL, NULL), 0);
	ck_assert_uint_eq(j.pos, 4);
	done(&j);
}
END_TEST

START_TEST(json_numbers)
{
	static const struct { const char *text; int64_t max, want; const char *err; size_t at; } ints[] = {
		{"0", 10, 0, NULL, 0},
		{" 42,", 100, 42, NULL, 0},
		{"9223372036854775807", INT64_MAX, INT64_MAX, NULL, 0},
		{"9223372036854775808", INT64_MAX, 0, "an id is more than 9,223,372,036,854,775,807", 0},
		{"99999999999999999999999", INT64_MAX, 0, "an id is more than 9,223,372,036,854,775,807", 0},
		{"16777216", 16777215, 0, "an id is more than 16,777,215", 0},
		{"01", 10, 0, "a number with a leading zero, which JSON does not allow", 0},
		{"-1", 10, 0, "an id must be a non-negative integer", 0},
		{"-0", 10, 0, "an id must be a non-negative integer", 0},
		{"1.5", 10, 0, "an id must be a non-negative integer", 0},
		{"1e3", 10000, 0, "an id must be a non-negative integer", 0},
		{"1.", 10, 0, "a number ends early", 2},
		{"1e+", 10, 0, "a number ends early", 3},
		{"-", 10, 0, "expected an id", 0},
		{"\"1\"", 10, 0, "expected an id", 0},
		{"+1", 10, 0, "expected an id", 0},
		{"", 10, 0, "the array is not closed", 0},
	};
	for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
		RtJson j = reader(ints[i].text, strlen(ints[i].text));
		j.ends = "the array is not closed";
		int64_t v = -1;
		int rc = rt_json_uint(&j, "an id", ints[i].max, &v);
		if (!ints[i].err) {
			ck_assert_msg(!rc && v == ints[i].want, "%s: %s", ints[i].text, j.e.msg);
		} else {
			ck_assert_msg(rc == -1 && !strcmp(j.e.msg, ints[i].err), "%s: '%s', not '%s'", ints[i].text, j.e.msg,
				      ints[i].err);
			ck_assert_msg(j.e.at == ints[i].at, "%s: at %zu", ints[i].text, j.e.at);
		}
		done(&j);
	}
	static const struct { const char *text; double want; const char *err; } nums[] = {
		{"0", 0, NULL}, {"-0.5", -0.5, NULL}, {"1e3", 1000, NULL}, {"2.5E-1", 0.25, NULL}, {"1e400", INFINITY, NULL},
		{"1.", 0, "a number ends early"}, {".5", 0, "expected a number"}, {"00", 0, "a number with a leading zero"},
		{"NaN", 0, "expected a number"},
		{"0.0000000000000000000000000000000000000000000000000000000000000001", 0, "a number of more than 63 characters"},
	};
	for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
		RtJson j = reader(nums[i].text, strlen(nums[i].text));
		double v = NAN;
		int rc = rt_json_number(&j, "a number", &v);
		if (!nums[i].err)
			ck_assert_msg(!rc && v == nums[i].want, "%s: %g %s", nums[i].text, v, j.e.msg);
		else
			ck_assert_msg(rc == -1 && strstr(j.e.msg, nums[i].err), "%s: '%s'", nums[i].text, j.e.msg);
		done(&j);
	}
}
END_TEST

/* An array of integers, walked as the callers walk their shapes. */
static int read_array(RtJson *j, int64_t *sum)
{
	*sum = 0;
	if (rt_json_expect(j, '[', "expected '['"))
		return -1;
	if (rt_json_peek(j) == ']') {
		j->pos++;
	} else {
		int more;
		do {
			int64_t v;
			if (rt_json_uint(j, "a number", 1000, &v))
				return -1;
			*sum += v;
		} while ((more = rt_json_more(j, ']', "expected ',' or ']'")) == 1);
		if (more < 0)
			return -1;
	}
	return rt_json_peek(j) >= 0 ? rt_json_fail(j, j->pos, "text after the array") : 0;
}

START_TEST(json_structure)
{
	static const struct { const char *text; int64_t sum; const char *err; size_t at; } cases[] = {
		{"[]", 0, NULL, 0},
		{" [ 1 ,\n2,\r\t3 ] ", 6, NULL, 0},
		{"[1,]", 0, "a ',' before the closing bracket", 3},
		{"[1 2]", 0, "expected ',' or ']'", 3},
		{"[1", 0, "the array ends early", 2},
		{"[1,", 0, "the array ends early", 3},
		{"[", 0, "the array ends early", 1},
		{"", 0, "the array ends early", 0},
		{"{}", 0, "expected '['", 0},
		{"[1]]", 0, "text after the array", 3},
		{"[,1]", 0, "expected a number", 1},
		{"[1\v]", 0, "expected ',' or ']'", 2},   /* \v is not JSON's white space */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		RtJson j = reader(cases[i].text, strlen(cases[i].text));
		j.ends = "the array ends early";
		int64_t sum;
		int rc = read_array(&j, &sum);
		if (!cases[i].err) {
			ck_assert_msg(!rc && sum == cases[i].sum, "%s: %s", cases[i].text, j.e.msg);
		} else {
			ck_assert_msg(rc == -1 && !strcmp(j.e.msg, cases[i].err), "%s: '%s', not '%s'", cases[i].text, j.e.msg,
				      cases[i].err);
			ck_assert_msg(j.e.at == cases[i].at, "%s: at %zu, not %zu", cases[i].text, j.e.at, cases[i].at);
		}
		done(&j);
	}
	/* without ends, the reader's own words */
	RtJson j = reader("[1", 2);
	int64_t sum;
	ck_assert_int_eq(read_array(&j, &sum), -1);
	ck_assert_str_eq(j.e.msg, "the text ends early");
	done(&j);
}
END_TEST

/* Hostile bytes: every call fails or succeeds within the text, never reading past it
 * (the copy is exactly the text's size: AddressSanitizer sees any read beyond), and an
 * error's place is in the text. */
START_TEST(json_random_bytes)
{
	static const char alphabet[] = "[]{},:\"\\u0123456789abcdefABCDEF.eE+- \t\n\xc3\xa9\xed\xa0\xff";
	uint64_t x = 0x9E3779B97F4A7C15ull;
	for (int round = 0; round < 20000; round++) {
		char text[40];
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		size_t n = x % sizeof text;
		for (size_t i = 0; i < n; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			text[i] = alphabet[x % (sizeof alphabet - 1)];
		}
		for (int call = 0; call < 4; call++) {
			RtJson j = reader(text, n);
			Out o = {.n = 0};
			int64_t v;
			double d;
			int rc = call == 0 ? rt_json_string(&j, "s", collect, &o)
			       : call == 1 ? rt_json_uint(&j, "n", INT64_MAX, &v)
			       : call == 2 ? rt_json_number(&j, "n", &d)
				           : read_array(&j, &v);
			ck_assert(rc == 0 || rc == -1);
			ck_assert(j.pos <= n);
			ck_assert(rc == 0 || (j.e.at <= n && j.e.msg[0]));
			done(&j);
		}
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("io");
	TCase *atomic = tcase_create("atomic"), *files = tcase_create("files"), *bf16 = tcase_create("bf16"),
	      *json = tcase_create("json");
	tcase_add_test(atomic, atomic_writes_and_replaces);
	tcase_add_test(atomic, atomic_refuses_what_is_not_a_file);
	tcase_add_test(atomic, atomic_failures_leave_no_tmp);
	tcase_add_test(atomic, atomic_directory_sync);
	tcase_add_test(files, read_whole_limits);
	tcase_add_test(files, commas);
	tcase_add_test(bf16, bf16_round_trip);
	tcase_add_test(bf16, bf16_rounding);
	tcase_add_test(json, json_strings);
	tcase_add_test(json, json_numbers);
	tcase_add_test(json, json_structure);
	tcase_add_test(json, json_random_bytes);
	TCase *all[] = {atomic, files, bf16, json};
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
