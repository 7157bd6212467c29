/* tests/oom_shim.c — memory that runs out on demand, for tests/cli_oom.sh.
 *
 * Linked into a copy of mgl (build/tests/mgl_oom) with -Wl,--wrap=malloc and the like, so
 * that mgl's own calls to malloc, calloc, realloc and strdup come here, and the C
 * library's, the sanitizers' and OpenBLAS's do not: the test is about mgl's checks.
 * MGL_OOM_AT=N makes the N-th of those calls (from 1) that asks for at least MGL_OOM_MIN
 * bytes (default 1) return NULL, as a full machine would, and says so on stderr
 * ("oom-shim: allocation N of B bytes fails"), so that the test knows it happened; unset,
 * every call goes through. A link-time wrap rather than LD_PRELOAD: AddressSanitizer must
 * be the first library loaded, and this way the same test runs under it.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t count, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t count, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

/* Whether this call of n bytes is the one to fail. The settings are read on the first
 * call, which mgl makes before it starts any thread; the count is shared by the rank
 * threads, so which call the N-th is may differ from run to run, not how many there are. */
static bool fails(size_t n)
{
	static bool ready;
	static long at, least = 1;
	static atomic_long calls;
	if (!ready) {
		const char *e = getenv("MGL_OOM_AT"), *m = getenv("MGL_OOM_MIN");
		at = e ? atol(e) : 0;
		least = m ? atol(m) : 1;
		ready = true;
	}
	if (at <= 0 || n < (size_t)least || atomic_fetch_add(&calls, 1) + 1 != at)
		return false;
	fprintf(stderr, "oom-shim: allocation %ld of %zu bytes fails\n", at, n);
	return true;
}

void *__wrap_malloc(size_t n) { return fails(n) ? NULL : __real_malloc(n); }
void *__wrap_realloc(void *p, size_t n) { return fails(n) ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return fails(strlen(s) + 1) ? NULL : __real_strdup(s); }

void *__wrap_calloc(size_t count, size_t size)
{
	return fails(size && count > (size_t)-1 / size ? (size_t)-1 : count * size) ? NULL : __real_calloc(count, size);
}
