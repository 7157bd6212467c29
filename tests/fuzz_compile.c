/* tests/fuzz_compile.c — libFuzzer target: lex, parse and elaborate arbitrary bytes.
 *
 * A first line "#set K=V,..." becomes --set overrides and "#preset NAME" picks a preset,
 * so the fuzzer reaches the override paths too. Every input must end in a graph or in a
 * diagnostic: a crash, a sanitizer report, a leak or a timeout is a finding.
 */
#include "mgl.h"

#include <stdlib.h>
#include <string.h>

static FILE *devnull;

static char *line_arg(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);
	if (strncmp(text, prefix, n))
		return NULL;
	size_t len = strcspn(text + n, "\n");
	char *s = malloc(len + 1);
	memcpy(s, text + n, len);
	s[len] = 0;
	return s;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	if (!devnull)
		devnull = fopen("/dev/null", "w");
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = 0;
	char *set = line_arg(text, "#set ");
	char *preset = line_arg(text, "#preset ");

	MglCtx c = {.out = devnull};
	jmp_buf jb;
	c.fail = &jb;
	if (!setjmp(jb)) {
		MglSource *src = mgl_alloc(&c.arena, sizeof *src);
		src->name = "fuzz";
		src->text = text;
		src->len = size;
		MglOptions opt = {.preset = preset};
		if (set && *set)
			opt.overrides = mgl_source_from_string(&c, "--set", set, true);
		MglFile *f = mgl_parse(&c, src);
		MglGraph *g = mgl_elaborate(&c, f, &opt);
		mgl_param_count(g);
		mgl_dump_graph(devnull, g);
	}
	mgl_arena_free(&c.arena);
	free(text);
	free(set);
	free(preset);
	return 0;
}
