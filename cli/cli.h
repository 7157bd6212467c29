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
	const char *zero_s, *recompute_s;   /* --zero, --recompute as given */
	int zero;               /* --zero: 0 or 1 (needs dp 2 or more) */
	MglRecompute recompute; /* --recompute none|selective|full */
	int64_t batch, seq;
	const char *layers;     /* mgl dot --layers N|all */
	MglDtype dtype;
	bool dtype_given;
	/* mgl train */
	const char *data, *val, *save, *resume, *log, *tensorboard, *backend, *gpt2;
	const char *vocab;      /* train: BERT's WordPiece vocab.txt */
	int64_t steps, accum, warmup, seed, eval_every, eval_batches, save_every, save_shards, log_every;
	bool interleave;        /* --interleave: micro-batches two at a time */
	double lr, min_lr, weight_decay, clip;     /* NAN: not given */
	/* mgl sample, mgl tokenize */
	const char *prompt;
	int64_t tokens, top_k;
	double temperature, val_fraction;
	int64_t gpus;           /* train: must equal tp x dp */
	const char *arch;       /* kernels: sm_90 */
	bool hf;                /* export: Hugging Face's names (the only format) */
	const char *hf_path;    /* import --hf FILE_OR_DIR */
	const char *init;       /* train --init DIR: the weights to start from */
	const char *dump_first; /* train: the first step's weights and gradients, for comparisons */
	bool profile;           /* bench: the time by kind of op */
	double link_gbs, link_us;   /* explain, bench: the link of the communication model (NAN: the default) */
	/* mgl eval */
	const char *wikitext, *lambada;
	int64_t stride;
} Args;

int usage_error(const char *cmd, const char *fmt, const char *arg);
/* "unknown option", with the closest of options (space-separated) as a hint; returns 2 */
int cli_unknown_option(const char *cmd, const char *name, const char *options);
/* Where a command writes: path replaced whole or not at all (rt_atomic_open), so a failed
 * command leaves no half file; standard output when path is NULL. NULL after printing why. */
FILE *cli_out_open(const char *path);
/* Closes f and puts it in place: 0, or 1 after printing why (and removing it). */
int cli_out_close(FILE *f, const char *path);
/* s as a JSON string on standard output: quotes, backslashes and control characters escaped. */
void cli_json_str(const char *s);

/* compile.c */
/* What mgl check prints of a model: the hidden size and heads of its first attention, the
 * rows of the first embedding table that an input indexes; 0 where it has none. */
void cli_sizes(const MglGraph *g, int64_t *hidden, int64_t *heads, int64_t *vocab);
int cmd_check(Args *a);
int cmd_compile(Args *a);
int cmd_explain(Args *a);
int cmd_dot(Args *a);
/* A model compiled to a plan for the target, from the file at path or (text != NULL) from
 * the source text and set of the checkpoint at path, errors in which are the file's (exit
 * status 1), not usage errors; errors jump to c->fail (a plan at path is one: it names
 * what reads plans). For train, sample, export and bench. */
MglPlan *cli_plan(MglCtx *c, const char *path, const char *text, const char *preset, const char *set,
		  const MglTarget *t, MglGraph **g);

/* tokenize.c: parses its own arguments (argv[0] is "tokenize") */
int cmd_tokenize(int argc, char **argv);
/* GPT-2's tokenizer from DIR; NULL after printing the error and a hint (hint, or else how
 * to fetch the files). */
RtTokenizer *cli_gpt2(const char *dir, const char *hint);
/* The GPT-2 tokenizer the checkpoint at path was trained with (its metadata's tokenizer and
 * tokenizer_sha256: tok, sha): from gpt2 (--gpt2 DIR) if given, else the directory the
 * checkpoint records, and the same files (by their SHA-256, when recorded) wherever they
 * are now; *dir_out (if not NULL) the directory. NULL after printing why, with a hint. */
RtTokenizer *cli_ckpt_gpt2(const char *gpt2, const char *tok, const char *sha, const char *path, const char **dir_out);

/* train.c */
struct RtBackend;
/* --backend, or the GPUs when there are any (and this mgl was built with CUDA), else the
 * cpu; NULL after printing why (a usage error). */
const struct RtBackend *cli_backend(const Args *a);
/* The target of --tp, --dp, --sp, --batch (default 8) and --seq, with the backend's
 * activations: f32 on the cpu, bf16 on GPUs. */
MglTarget cli_target(const Args *a, const struct RtBackend *be);
/* The optimizer's options as mgl train takes them, with its defaults: the peak and final
 * learning rates (NAN when not given: the schedule's defaults), accum, weight decay,
 * betas, eps, clip and the seed. */
void cli_optimizer(const Args *a, RtTrainOpts *o);
/* --interleave without an even --accum: the usage error (2, said on stderr), else 0 */
int cli_interleave_check(const Args *a, const char *cmd);
/* --link-gbs and --link-us, or their defaults (mgl.h: MGL_LINK_GBS, MGL_LINK_US), for
 * mgl_comm_seconds; a rate of 0: the usage error (2, said on stderr), else 0 */
int cli_link(const Args *a, const char *cmd, double *gbs, double *us);
int cmd_train(Args *a);
int cmd_sample(Args *a);
int cmd_kernels(Args *a);
/* The checkpoint a->file names (a directory in either form, rt_ckpt_open; the file read,
 * the index for shards, into path[pathlen]) as mgl sample and mgl eval read it: the file, its metadata (which must
 * hold the model's source) and the tokenizer it was trained with (--gpt2 DIR, a->gpt2, for
 * GPT-2's files elsewhere). 0, or 1 after printing why (nothing left to free). */
int cli_ckpt_open(const Args *a, char *path, size_t pathlen, RtCkpt *ck, RtCkptMeta *m, RtTokenizer **tok);
/* Every parameter of the job's plan from ck, checked (there, of its shape, finite): 0, or
 * -1 with err naming path. */
struct RtJob;
int cli_ckpt_params(struct RtJob *job, const RtCkpt *ck, const char *path, char *err, size_t errlen);
/* eval.c */
int cmd_eval(Args *a);
/* The tokenizer record of a checkpoint (train.c): --gpt2 DIR or --vocab FILE as
 * "gpt2:ABS_DIR" or "wordpiece:ABS_FILE", the files' SHA-256 into sha (130 bytes); NULL
 * after printing why (*failed true: the files cannot be read) or for neither. */
const char *cli_tokenizer_record(MglArena *a, const char *gpt2, const char *vocab, char *sha, bool *failed);
/* export.c: mgl export and mgl import */
int cmd_export(Args *a);
int cmd_import(Args *a);
/* plot.c */
int cmd_plot(Args *a);
/* bench.c */
int cmd_bench(Args *a);

#endif
