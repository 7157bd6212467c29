/* tests/fuzz_plan.c — libFuzzer target: the plan reader on arbitrary bytes, then a round trip.
 *
 * The bytes go to mgl_plan_read exactly as given, with no NUL after them, so a read past
 * `len` is an AddressSanitizer report. Whatever the reader accepts is written again
 * (mgl_plan_write), and that text must be read back and write the very same bytes: a
 * plan the reader accepts but whose text it refuses, or that changes between two
 * writes, is a finding (abort), as are a crash, a sanitizer report, a leak or a timeout.
 */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

/* The plan as text, malloc'd; *len its length. */
static char *write_plan(const MglPlan *p, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);
	if (!f)
		abort();
	mgl_plan_write(f, p);
	if (fclose(f))
		abort();
	return buf;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	if (size > 1 << 20)
		return 0;
	MglArena a = {0};
	char err[512];
	MglPlan *p = mgl_plan_read(&a, (const char *)data, size, "fuzz.plan", err, sizeof err);
	if (!p) {
		/* refused: with a message that names the input and a line */
		if (strncmp(err, "fuzz.plan:", 10)) {
			fprintf(stderr, "fuzz_plan: refused without a location: %s\n", err);
			abort();
		}
		mgl_arena_free(&a);
		return 0;
	}
	size_t n1, n2;
	char *t1 = write_plan(p, &n1);
	MglPlan *q = mgl_plan_read(&a, t1, n1, "written.plan", err, sizeof err);
	if (!q) {
		fprintf(stderr, "fuzz_plan: a plan the reader accepted was written as text it refuses: %s\n", err);
		abort();
	}
	char *t2 = write_plan(q, &n2);
	if (n1 != n2 || memcmp(t1, t2, n1)) {
		size_t i = 0;
		while (i < n1 && i < n2 && t1[i] == t2[i])
			i++;
		fprintf(stderr, "fuzz_plan: writing the plan read back gives other bytes (first difference at byte %zu "
			"of %zu and %zu)\n", i, n1, n2);
		abort();
	}
	free(t1);
	free(t2);
	mgl_arena_free(&a);
	return 0;
}
