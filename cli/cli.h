/* cli/cli.h — the command line's contract between main.c (parsing, dispatch, help) and
 * the files that implement commands. */
#ifndef MGL_CLI_H
#define MGL_CLI_H

#include "../compiler/mgl.h"
#include "../runtime/runtime.h"

typedef struct {
	const char *file;       /* the one positional argument: a model file, a plan, a checkpoint */
	const char *preset;
	char *set;              /* every --set joined with ',' (malloc'd) */
	const char *dump;
	const char *out;        /* -o */
	int64_t tp, dp;         /* 0 (not given): the default */
	bool sp, json, backward, help, bytes;
	int64_t batch, seq;
	int64_t layers;         /* mgl dot --layers N (0: all) */
	MglDtype dtype;
	bool dtype_given;
	/* mgl train */
	const char *data, *val, *save, *resume, *log, *backend, *gpt2;
	int64_t steps, accum, warmup, seed, eval_every, eval_batches, save_every, log_every;
	double lr, min_lr, weight_decay, clip;     /* NAN: not given */
	/* mgl sample, mgl tokenize */
	const char *prompt;
	int64_t tokens, top_k;
	double temperature, val_fraction;
	int nfiles;             /* tokenize: every positional argument */
	int64_t gpus;           /* train: must equal tp x dp */
	const char *arch;       /* kernels: sm_90 */
	bool hf;                /* export: Hugging Face's names (the only format) */
	const char *dump_first; /* train: the first step's weights and gradients, for comparisons */
	char **files;
} Args;

int usage_error(const char *cmd, const char *fmt, const char *arg);
/* "unknown option", with the closest of options (space-separated) as a hint; returns 2 */
int cli_unknown_option(const char *cmd, const char *name, const char *options);

/* compile.c */
int cmd_check(Args *a);
int cmd_compile(Args *a);
int cmd_explain(Args *a);
int cmd_dot(Args *a);
/* A model compiled to a plan for the target, from the file at path or (text != NULL) from
 * its source text; errors jump to c->fail. For train and sample. */
MglPlan *cli_plan(MglCtx *c, const char *path, const char *text, const char *preset, const char *set,
		  const MglTarget *t, MglGraph **g);

/* tokenize.c: parses its own arguments (argv[0] is "tokenize") */
int cmd_tokenize(int argc, char **argv);
/* GPT-2's tokenizer from DIR; NULL after printing the error and a hint (hint, or else how
 * to fetch the files). */
RtTokenizer *cli_gpt2(const char *dir, const char *hint);

/* train.c */
int cmd_train(Args *a);
int cmd_sample(Args *a);
int cmd_kernels(Args *a);
/* export.c */
int cmd_export(Args *a);

#endif
