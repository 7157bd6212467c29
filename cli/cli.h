/* cli/cli.h — the command line's contract between main.c (parsing, dispatch, help) and
 * the files that implement commands. */
#ifndef MGL_CLI_H
#define MGL_CLI_H

#include "../compiler/mgl.h"

typedef struct {
	const char *file;       /* the one positional argument: a model file (or a plan) */
	const char *preset;
	char *set;              /* every --set joined with ',' (malloc'd) */
	const char *dump;
	const char *out;        /* -o */
	int tp, dp;
	bool sp, json, backward, help;
	int64_t batch, seq;     /* 0: the default */
	int layers;             /* mgl dot --layers N (0: all) */
	MglDtype dtype;
} Args;

int usage_error(const char *cmd, const char *fmt, const char *arg);

/* compile.c */
int cmd_check(Args *a);
int cmd_compile(Args *a);
int cmd_explain(Args *a);
int cmd_dot(Args *a);

#endif
