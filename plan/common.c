/* plan/common.c — what the compiler and the runtime both need besides the plan: reading a
 * whole file, host memory that ends the process when it runs out, and counts and amounts
 * as messages write them. It lives here because plan/ is the one directory both sides see
 * (compiler -> plan <- runtime).
 *
 * A whole file is read to its end, whatever stat says (a pipe, or a file that grows while
 * it is read), and at most one byte past the caller's limit: that byte is how a file too
 * large is recognized, without allocating it. Messages start with the path, as every
 * message about a file does: "models/x.mgl: cannot open: No such file or directory".
 */
#include "plan.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

/* "8 MiB", "1 GiB", or "1,000 bytes": a limit as a message states it. */
static const char *size_text(size_t n, char *buf, size_t cap)
{
	char c[32];
	if (n && n % (1u << 30) == 0)
		snprintf(buf, cap, "%s GiB", mgl_commas((int64_t)(n >> 30), c));
	else if (n && n % (1u << 20) == 0)
		snprintf(buf, cap, "%s MiB", mgl_commas((int64_t)(n >> 20), c));
	else
		snprintf(buf, cap, "%s byte%s", mgl_commas((int64_t)n, c), n == 1 ? "" : "s");
	return buf;
}

char *mgl_read_whole(const char *path, size_t limit, const char *what, size_t *len, char *err, size_t errlen)
{
	if (limit > SIZE_MAX / 4)
		limit = SIZE_MAX / 4;   /* so that limit + 1 and the doubling below cannot overflow */
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	/* room for cap bytes and the NUL; cap grows to limit + 1 at most */
	size_t n = 0, cap = limit < (1 << 16) ? limit + 1 : (1 << 16);
	char *buf = malloc(cap + 1);
	while (buf) {
		n += fread(buf + n, 1, cap - n, f);
		if (n < cap || cap > limit)   /* the end (or an error), or one byte past the limit */
			break;
		size_t next = cap > limit / 2 ? limit + 1 : 2 * cap;
		char *nb = realloc(buf, next + 1);
		if (!nb)
			free(buf);
		buf = nb;
		cap = next;
	}
	int e = ferror(f) ? errno : 0;
	fclose(f);
	char lim[48];
	if (!buf)
		snprintf(err, errlen, "%s: out of host memory reading it (%s bytes)", path, mgl_commas((int64_t)cap + 1, lim));
	else if (e)
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(e));
	else if (n > limit)
		snprintf(err, errlen, "%s: too large: mgl reads %s of at most %s", path, what, size_text(limit, lim, sizeof lim));
	if (!buf || e || n > limit) {
		free(buf);
		return NULL;
	}
	buf[n] = 0;
	*len = n;
	return buf;
}

/* p, the result of asking for count x size bytes, unless it is NULL: then the process ends
 * with the message plan.h promises. By _exit, not exit: the ranks' threads still run, and
 * exit's teardown of the libraries under them (OpenBLAS's threads) made one of them crash
 * (a segfault, not status 1: tests/cli_oom.sh on a build without the cuda backend). A
 * second thread out of memory meanwhile waits for the first to end the process. */
static void *or_exit(void *p, size_t count, size_t size, const char *what)
{
	if (p)
		return p;
	static atomic_flag said = ATOMIC_FLAG_INIT;
	if (atomic_flag_test_and_set(&said))
		for (;;)
			pause();
	char b[32], c[32];
	if (count > INT64_MAX / size)   /* calloc's product would overflow: say both factors */
		fprintf(stderr, "mgl: error: out of host memory: %s (%s x %s bytes)\n", what,
			mgl_commas(count > INT64_MAX ? INT64_MAX : (int64_t)count, b), mgl_commas((int64_t)size, c));
	else
		fprintf(stderr, "mgl: error: out of host memory: %s (%s bytes)\n", what, mgl_commas((int64_t)(count * size), b));
	fflush(NULL);   /* what is printed so far, as exit would have */
	_exit(1);
}

void *mgl_xmalloc(size_t n, const char *what) { return or_exit(malloc(n ? n : 1), n ? n : 1, 1, what); }
void *mgl_xrealloc(void *p, size_t n, const char *what) { return or_exit(realloc(p, n ? n : 1), n ? n : 1, 1, what); }

void *mgl_xcalloc(size_t count, size_t size, const char *what)
{
	if (!count || !size)
		count = size = 1;
	return or_exit(calloc(count, size), count, size, what);
}

const char *mgl_commas(int64_t v, char *buf)
{
	char digits[32];
	int n = snprintf(digits, sizeof digits, "%lld", (long long)v), o = 0;
	for (int i = 0; i < n; i++) {
		buf[o++] = digits[i];
		if (digits[i] != '-' && (n - 1 - i) % 3 == 0 && i != n - 1)
			buf[o++] = ',';
	}
	buf[o] = 0;
	return buf;
}

const char *mgl_si(double v, const char *unit, char *buf)
{
	static const char prefix[] = " kMGTPE";
	int i = 0;
	while (v >= 999.5 && i < 6)   /* 999.5 and up would print as 1e+03 */
		v /= 1000, i++;
	snprintf(buf, 32, "%.3g %.*s%s", v, i > 0, &prefix[i], unit);
	return buf;
}
