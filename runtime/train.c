/* runtime/train.c — the training loop.
 *
 * A model's family (a language model, or BERT) is told by its plan's inputs; the family
 * says how its batches are made (families[]) and what is reported besides the loss (BERT's
 * masked-LM and sentence-order losses and accuracy). One loop trains both.
 *
 * Each optimizer step: zero the gradients; for each of `accum` micro-batches, give every
 * dp rank its own batch (windows of the training shard, or BERT's examples; the tp ranks
 * of a dp rank see the same batch) and run the forward and backward steps; then the optimizer steps,
 * with the learning rate of a linear warm-up followed by a cosine decay to min_lr. The
 * loss gradient fed to the plan ("d_loss") is 1 / (accum * dp), so the summed gradients
 * are the mean over every sequence of the step.
 *
 * Everything that decides the numbers is a function of the seed and the step: the
 * batches (a splitmix64 stream whose state the checkpoint keeps; BERT's examples by their
 * index), dropout (keyed by seed,
 * step, micro-batch and dp rank — not tp rank: every tp gives the same masks), and the
 * initial parameters (drawn whole and then sharded). A resumed run takes its seed, and
 * unless told otherwise its schedule, from the checkpoint. So tp 1, 2 and 4 give the same
 * losses, and a resumed run continues exactly where it stopped.
 *
 * Nothing is said before everything that can be refused was checked (the shards, the job,
 * the checkpoint, the log, the TensorBoard directory, the save directory): then the start
 * line, and the training. The JSON log and the TensorBoard events get the same numbers.
 * A NaN or infinite loss stops the run with the step number; the last checkpoint, written
 * before the loss went bad, is left as it was. SIGINT finishes the step, saves, and stops;
 * a second SIGINT stops at once (runtime.h).
 */
#include "backend.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- Ctrl-C */

/* The handler may only touch these: the flag, write(2) and unlink(2). */
static volatile sig_atomic_t interrupted;
static int sig_fd = -1;                   /* where it says what it does (msgs), or -1 */
static const char *sig_first, *sig_second;  /* what it says */
static char saving[4096];                 /* the temporary file of a checkpoint being written */
static volatile sig_atomic_t saving_now;

static void say_now(const char *s)
{
	if (sig_fd >= 0 && s) {
		ssize_t n = write(sig_fd, s, strlen(s));
		(void)n;
	}
}

static void on_sigint(int sig)
{
	(void)sig;
	if (interrupted) {   /* the second: stop now; the checkpoint on disk is the last whole one */
		if (saving_now)
			unlink(saving);
		say_now(sig_second);
		_exit(130);
	}
	interrupted = 1;
	say_now(sig_first);
}

/* ---------------------------------------------------------------- the run */

/* The learning-rate schedule, as a checkpoint records it. */
typedef struct {
	int64_t steps, warmup;
	double lr, min_lr;
	bool known;           /* the checkpoint recorded it (those before it did not) */
} Schedule;

/* A model's family, told by its plan's inputs (families[] below): how its batches are made
 * and what is reported besides the loss. */
typedef enum { LM, BERT } Family;
enum { MAX_INPUTS = 5, VAL_SEED = 0x76616c };   /* BERT's validation examples: the same for every --seed */

/* What a step or an evaluation measured: the model's loss and, for BERT, its heads' (the
 * masked-LM and sentence-order losses, the sentence-order accuracy from 0 to 1; NAN for a
 * language model). */
typedef struct {
	double loss, mlm, sop, acc;
} Measured;

typedef struct {
	RtJob *job;
	const MglPlan *p;
	const RtTrainOpts *o;       /* the options with the schedule filled in */
	Family fam;
	RtShard train, val;
	RtBertVocab bv;             /* BERT's: the tokenizer's vocabulary, and the shards' streams */
	RtBertData btrain, bval;
	int in[MAX_INPUTS];         /* the family's inputs' value ids */
	int d_loss, loss, norm;     /* value ids */
	int mlm_loss, sop_loss, sop;   /* BERT's heads: the two losses and the sentence-order logits [B, 2] */
	int64_t B, T;
	uint64_t data_rng;          /* the training windows' stream */
	uint64_t seed;              /* --seed, or the checkpoint's */
	int64_t step, adam_t;
	int32_t *batch[MAX_INPUTS]; /* each input's batch for every dp rank: [dp][B x T] */
	int32_t *sop_y[2];          /* --interleave, BERT: each micro-batch's sentence-order targets (as batch[4]) */
	FILE *log;
	RtEvents *tb;               /* --tensorboard */
	char *tokenizer, *tok_sha;  /* what checkpoints record: the options', or the resumed one's */
	char *resumed;              /* the checkpoint resumed from, or NULL */
	char *init_from;            /* the checkpoint whose weights it starts from (--init), or NULL */
	Schedule was;               /* the resumed checkpoint's schedule */
	double shown;               /* when a line was last printed */
	char *err;
	size_t errlen;
} Train;

/* Something said on msgs (printf), if anything is. */
static void say(const Train *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const Train *t, const char *fmt, ...)
{
	if (!t->o->msgs)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(t->o->msgs, fmt, ap);
	va_end(ap);
	fflush(t->o->msgs);
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t next_rand(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	return rt_mix64(*s);
}

static int fail(Train *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(Train *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->err, t->errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---------------------------------------------------------------- data */

/* A language model's shard: a sequence and its next token at least, every id below the
 * model's vocabulary. */
static int check_shard(Train *t, const RtShard *s)
{
	int64_t vocab = t->p->vocab ? t->p->vocab : INT64_MAX;
	char b1[32], b2[32];
	if (s->ntokens < t->T + 1)
		return fail(t, "%s: %s tokens are fewer than one sequence of %s needs", s->path, mgl_commas(s->ntokens, b1),
			    mgl_commas(t->T + 1, b2));
	for (int64_t i = 0; i < s->ntokens; i++)
		if (s->tokens[i] >= vocab)
			return fail(t, "%s: token %d at position %s is beyond the model's vocabulary (%s)", s->path,
				    s->tokens[i], mgl_commas(i, b1), mgl_commas(vocab, b2));
	return 0;
}

static int open_lm(Train *t, RtShard *s, RtBertData *b)
{
	(void)b;
	return check_shard(t, s);
}

/* A language model's batch of dp rank d: random windows of the training shard, each its
 * tokens [at, at + T) and the next tokens as targets; or consecutive ones of the
 * validation shard for evaluation batch `eval` (>= 0). */
static void fill_lm(Train *t, int d, int64_t eval, int64_t micro)
{
	(void)micro;
	int32_t *x = t->batch[0] + d * t->B * t->T, *y = t->batch[1] + d * t->B * t->T;
	for (int64_t b = 0; b < t->B; b++) {
		const RtShard *s = eval >= 0 ? &t->val : &t->train;
		int64_t at;
		if (eval >= 0)
			at = ((eval * t->job->dp + d) * t->B + b) % ((s->ntokens - 1) / t->T) * t->T;
		else
			at = (int64_t)(next_rand(&t->data_rng) % (uint64_t)(s->ntokens - t->T));
		for (int64_t k = 0; k < t->T; k++) {
			x[b * t->T + k] = s->tokens[at + k];
			y[b * t->T + k] = s->tokens[at + k + 1];
		}
	}
}

/* Tokens drawn uniformly below the vocabulary from the seed, for rt_bench: a batch of every
 * dp rank for each of the run's steps, so that the model cannot learn its batches by heart
 * and the loss stays near ln V as on real text (with two batches, 124M's fell to 9.8 in 8
 * steps). */
static int synthetic_lm(Train *t, int64_t steps)
{
	RtShard *s = &t->train;
	s->path = "synthetic tokens";
	s->ntokens = steps * t->B * t->T * t->p->dp + t->T + 1;
	if (!(s->tokens = malloc((size_t)s->ntokens * sizeof *s->tokens)))
		return fail(t, "out of memory for %s synthetic tokens", mgl_commas(s->ntokens, (char[32]){0}));
	uint64_t x = rt_mix64(t->seed ^ 0x62656e6368ull);
	for (int64_t i = 0; i < s->ntokens; i++)
		s->tokens[i] = (uint16_t)(next_rand(&x) % (uint64_t)t->p->vocab);
	return 0;
}

/* A BERT shard: a stream of its tokenizer's vocabulary (rt_bert_open checks it). */
static int open_bert(Train *t, RtShard *s, RtBertData *b)
{
	char e[512];
	if (rt_bert_open(b, s->tokens, s->ntokens, &t->bv, s->path, e, sizeof e))
		return fail(t, "%s", e);
	return 0;
}

/* BERT's batch of dp rank d: examples made from the stream (bert_data.c), each a function of
 * the seed and its index, so every split of a step over micro-batches and ranks, and a
 * resumed run, sees the same ones. Evaluation batch `eval` (>= 0): the validation stream's
 * examples from index eval x dp x B on, under a seed of their own, so the validation set is
 * the same for every --seed and every evaluation. */
static void fill_bert(Train *t, int d, int64_t eval, int64_t micro)
{
	int64_t n = t->B * t->T, dp = t->job->dp;
	RtBertBatch out = {t->batch[0] + d * n, t->batch[1] + d * n, t->batch[2] + d * n, t->batch[3] + d * n,
			   t->batch[4] + d * n};
	int64_t first = (eval >= 0 ? eval * dp + d : (t->step * t->o->accum + micro) * dp + d) * t->B;
	/* B >= 1 and T >= 5 were checked when the data was opened: it cannot fail */
	rt_bert_batch(eval >= 0 ? &t->bval : &t->btrain, eval >= 0 ? VAL_SEED : t->seed, first, t->B, t->T, &out, NULL, 0);
}

/* rt_bench's BERT stream: documents of 2 to 9 sentences of 4 to T / 2 random ids, with the
 * model's vocabulary as ids 0 .. V - 6 of text and its top five as the special tokens; a
 * step's examples are fresh (drawn from anywhere in it, masked anew). */
static int synthetic_bert(Train *t, int64_t steps)
{
	int64_t V = t->p->vocab;
	t->bv = (RtBertVocab){.vocab = (int32_t)V, .pad = (int32_t)V - 5, .unk = (int32_t)V - 4, .cls = (int32_t)V - 3,
			      .sep = (int32_t)V - 2, .mask = (int32_t)V - 1};
	RtShard *s = &t->train;
	s->path = "synthetic BERT stream";
	int64_t want = steps * t->B * t->T * t->p->dp + 4 * t->T, cap = want + 10 * t->T;
	if (!(s->tokens = malloc((size_t)cap * sizeof *s->tokens)))
		return fail(t, "out of memory for %s synthetic tokens", mgl_commas(cap, (char[32]){0}));
	uint64_t x = rt_mix64(t->seed ^ 0x62657274ull);
	int64_t n = 0, longest = t->T / 2 > 4 ? t->T / 2 : 4;
	while (n < want) {
		for (int64_t k = 2 + (int64_t)(next_rand(&x) % 8); k > 0; k--) {
			for (int64_t len = 4 + (int64_t)(next_rand(&x) % (uint64_t)(longest - 3)); len > 0; len--)
				s->tokens[n++] = (uint16_t)(next_rand(&x) % (uint64_t)(V - 5));
			s->tokens[n++] = (uint16_t)t->bv.sep;
		}
		s->tokens[n++] = (uint16_t)t->bv.sep;
	}
	s->ntokens = n;
	return open_bert(t, s, &t->btrain);
}

/* The families: a model is one whose inputs are exactly a family's (and d_loss, the loss's
 * gradient), by name; mgl train refuses any other (docs/train.md, "What a model needs"). */
static const struct {
	const char *what;                     /* for messages */
	const char *inputs[MAX_INPUTS + 1];   /* NULL-terminated, in the order of Train.in */
	const char *tokenizer;                /* the data's when none is given */
	int (*open)(Train *t, RtShard *s, RtBertData *b);   /* checks a shard read */
	void (*fill)(Train *t, int d, int64_t eval, int64_t micro);
	int (*synthetic)(Train *t, int64_t steps);            /* rt_bench's training data */
} families[] = {
	[LM] = {"language models (models/gpt2.mgl, models/llama.mgl)", {"tokens", "targets"}, "bytes", open_lm, fill_lm,
		synthetic_lm},
	[BERT] = {"BERT (models/bert.mgl)", {"tokens", "segments", "mask", "mlm_targets", "sop_targets"}, "bert", open_bert,
		  fill_bert, synthetic_bert},
};
enum { NFAMILIES = sizeof families / sizeof families[0] };

/* Gives every rank its batch (the tp ranks of a dp rank the same) and the loss gradient:
 * training micro-batch `micro` of this step, or evaluation batch `eval` (>= 0). */
static void feed(Train *t, int64_t eval, int64_t micro, float d_loss)
{
	RtJob *j = t->job;
	for (int d = 0; d < j->dp; d++) {
		families[t->fam].fill(t, d, eval, micro);   /* every dp rank's, here too: one stream draws them in turn */
		for (int k = 0; k < j->tp; k++) {
			RtRank *r = &j->ranks[d * j->tp + k];
			if (r->rank < j->first || r->rank >= j->last)
				continue;   /* another process's */
			for (int i = 0; families[t->fam].inputs[i]; i++)
				t->job->be->write(r, t->in[i], t->batch[i] + d * t->B * t->T);
			t->job->be->write(r, t->d_loss, &d_loss);
		}
	}
}

/* After a forward pass: the loss and the heads, each the mean over the dp ranks (tp rank 0
 * of each, whichever process runs it), summed in dp order; the sentence-order accuracy from
 * the logits against the targets fed for that micro-batch (sop_y: [dp][B x T], batch[4]'s
 * layout). */
static void measure(Train *t, Measured *m, const int32_t *sop_y)
{
	RtJob *j = t->job;
	float *z = t->fam == BERT ? mgl_xmalloc((size_t)t->B * 2 * sizeof *z, "the sentence-order logits") : NULL;
	/* loss, mlm, sop, acc of each rank */
	double (*each)[4] = mgl_xcalloc((size_t)j->nranks, sizeof *each, "the ranks' losses");
	for (int r = j->first; r < j->last; r++) {
		if (j->ranks[r].tp_rank)
			continue;
		float l;
		j->be->read(&j->ranks[r], t->loss, &l);
		each[r][0] = l;
		if (!z)
			continue;
		j->be->read(&j->ranks[r], t->mlm_loss, &l);
		each[r][1] = l;
		j->be->read(&j->ranks[r], t->sop_loss, &l);
		each[r][2] = l;
		j->be->read(&j->ranks[r], t->sop, z);
		const int32_t *y = sop_y + j->ranks[r].dp_rank * t->B * t->T;
		int64_t right = 0;
		for (int64_t b = 0; b < t->B; b++)
			right += (z[2 * b + 1] > z[2 * b]) == (y[b] == 1);
		each[r][3] = (double)right / (double)t->B;
	}
	rt_job_share(j, &each[0][0], 4);
	double sum[4] = {0};
	for (int d = 0; d < j->dp; d++)
		for (int k = 0; k < 4; k++)
			sum[k] += each[d * j->tp][k];
	double dp = j->dp;
	*m = (Measured){sum[0] / dp, z ? sum[1] / dp : NAN, z ? sum[2] / dp : NAN, z ? sum[3] / dp : NAN};
	free(z);
	free(each);
}

/* sum += x * w, head by head */
static void add(Measured *sum, const Measured *x, double w)
{
	sum->loss += x->loss * w;
	sum->mlm += x->mlm * w;
	sum->sop += x->sop * w;
	sum->acc += x->acc * w;
}

/* The loss to beat: validation tokens predicted by the training tokens' frequencies
 * (add-one smoothed), in nats per token. */
static double unigram_loss(const Train *t)
{
	int64_t V = t->p->vocab ? t->p->vocab : 65536;
	double *count = mgl_xcalloc((size_t)V, sizeof *count, "the unigram counts"), loss = 0;
	for (int64_t i = 0; i < t->train.ntokens; i++)
		count[t->train.tokens[i]] += 1;
	double total = (double)t->train.ntokens + (double)V;
	for (int64_t i = 0; i < t->val.ntokens; i++)
		loss -= log((count[t->val.tokens[i]] + 1) / total);
	free(count);
	return loss / (double)t->val.ntokens;
}

/* ---------------------------------------------------------------- the job */

/* The model's family by its plan's inputs, and the values rt_train and rt_bench feed and
 * read (who: the command, for the message). */
static int inputs(Train *t, const char *who)
{
	const MglPlan *p = t->p;
	t->d_loss = rt_value(p, "d_loss");
	t->norm = -1;   /* the global squared norm: what AdamW reads (after the tp and, under ZeRO-1, dp sums) */
	for (int s = 0; s < p->nsteps && t->norm < 0; s++)
		if (p->steps[s].op == MGL_OP_ADAMW)
			t->norm = p->steps[s].in[4];
	t->loss = p->loss;
	int ninputs = 0;
	for (int v = 0; v < p->nvalues; v++)
		ninputs += p->values[v].role == MGL_V_INPUT;
	for (int f = 0; f < NFAMILIES; f++) {
		int n = 1;   /* d_loss */
		for (int i = 0; families[f].inputs[i] && (t->in[i] = rt_value(p, families[f].inputs[i])) >= 0; i++)
			n += p->values[t->in[i]].role == MGL_V_INPUT;
		if (t->d_loss < 0 || n != ninputs || families[f].inputs[n - 1])
			continue;
		t->fam = (Family)f;
		if (f != BERT)
			return 0;
		t->mlm_loss = rt_value(p, "mlm_loss");
		t->sop_loss = rt_value(p, "sop_loss");
		t->sop = rt_value(p, "sop");
		const MglValue *z = t->sop >= 0 ? &p->values[t->sop] : NULL;
		if (t->mlm_loss < 0 || t->sop_loss < 0 || !z || z->rank != 2 || z->shape[0] != t->B || z->shape[1] != 2 ||
		    z->layout.kind == MGL_L_S)
			return fail(t, "%s takes this model for a BERT by its inputs, but it lacks BERT's heads: the values "
				    "mlm_loss, sop_loss and sop (the sentence-order logits, [batch, 2]) of models/bert.mgl", who);
		return 0;
	}
	return fail(t, "%s feeds %s, whose inputs are tokens and targets, and %s, whose inputs are tokens, segments, "
		    "mask, mlm_targets and sop_targets; this model's inputs are neither", who, families[LM].what,
		    families[BERT].what);
}

/* The tokenizers a checkpoint may record ("gpt2:DIR", "wordpiece:FILE"), and which family
 * each one's data feeds. */
static const struct {
	const char *name, *what, *flag;
	Family fam;
} tokenizers[] = {
	{"bytes", "byte", "", LM}, {"gpt2", "GPT-2", "--gpt2", LM},
	{"bert", "BERT byte", "", BERT}, {"wordpiece", "WordPiece", "--vocab", BERT},
};

static int tokenizer_kind(const char *name)
{
	for (int k = 0; k < (int)(sizeof tokenizers / sizeof tokenizers[0]); k++) {
		size_t n = strlen(tokenizers[k].name);
		if (!strncmp(name, tokenizers[k].name, n) && (name[n] == 0 || name[n] == ':'))
			return k;
	}
	return 0;   /* rt_ckpt_meta_read accepts no other */
}

/* BERT's vocabulary from the tokenizer the data was made with (t->tokenizer: the options'
 * or the resumed checkpoint's), the same file the checkpoint records (by its SHA-256), and
 * no larger than the model's. */
static int bert_vocab(Train *t)
{
	RtTokenizer *tok = NULL;
	char e[512];
	if (!strcmp(t->tokenizer, "bert"))
		tok = rt_tok_bert_bytes();
	else if (strncmp(t->tokenizer, "wordpiece:", 10))
		return fail(t, "the checkpoint's data was WordPiece, but it does not say from which vocab.txt: give --vocab FILE");
	else if (!(tok = rt_tok_wordpiece(t->tokenizer + 10, e, sizeof e)))
		return fail(t, "%s", e);
	const char *sha = rt_tok_digest(tok);
	int rc = 0;
	if (sha && t->tok_sha && strcmp(sha, t->tok_sha))
		rc = fail(t, "%s is not the vocabulary %s was trained with (its SHA-256 is %s; the checkpoint's, %s): give "
			  "--vocab FILE with the one it was trained with", t->tokenizer + 10, t->resumed ? t->resumed : "the run",
			  sha, t->tok_sha);
	else if (sha && !t->tok_sha && !(t->tok_sha = strdup(sha)))
		rc = fail(t, "out of host memory: the vocabulary's SHA-256 (%s bytes)",
			  mgl_commas((int64_t)strlen(sha) + 1, (char[32]){0}));
	rt_tok_bert(tok, &t->bv);
	rt_tok_free(tok);
	char b1[32], b2[32];
	if (!rc && t->p->vocab < t->bv.vocab)
		rc = fail(t, "the model's vocabulary (%s) is smaller than the data's (%s tokens: its %s vocabulary with BERT's "
			  "five special tokens): give --set vocab=%s or more", mgl_commas(t->p->vocab, b1),
			  mgl_commas(t->bv.vocab, b2), tokenizers[tokenizer_kind(t->tokenizer)].what, b2);
	return rc;
}

/* The training and validation shards, checked as the family feeds them: after resume(),
 * which may give the tokenizer. */
static int open_data(Train *t)
{
	const RtTrainOpts *o = t->o;
	int k = tokenizer_kind(t->tokenizer);
	if (tokenizers[k].fam != t->fam)
		return fail(t, "this model is %s, not on %s tokens", t->fam == BERT ? "a BERT: it trains on BERT streams (mgl tokenize "
			    "--bert, and --vocab FILE for WordPiece)" : "a language model: it trains on bytes or GPT-2 tokens (--gpt2 DIR)",
			    tokenizers[k].what);
	if (t->fam == BERT && bert_vocab(t))
		return -1;
	if (t->fam == BERT && (t->T < 5 || t->B < 1))
		return fail(t, "BERT's examples need sequences of 5 tokens or more ([CLS] A [SEP] B [SEP]), not %lld",
			    (long long)t->T);
	if (rt_shard_read(o->data, &t->train, t->err, t->errlen) || families[t->fam].open(t, &t->train, &t->btrain))
		return -1;
	if (o->val && (rt_shard_read(o->val, &t->val, t->err, t->errlen) || families[t->fam].open(t, &t->val, &t->bval)))
		return -1;
	return 0;
}

/* The job, every dp rank's batch, and the training windows' stream. */
static int open_job(Train *t, const RtBackend *be)
{
	if (t->o->interleave && t->o->accum % 2)
		return fail(t, "--interleave runs two micro-batches at a time: --accum must be even, not %lld",
			    (long long)t->o->accum);
	for (int i = 0; i < t->p->nparams && t->o->accum > 1; i++)   /* (compiler/adamw.c: bf16 weight gradients) */
		if (t->p->values[t->p->params[i].grad].dtype == MGL_BF16)
			return fail(t, "this plan keeps weight gradients in bf16 (%s's among them), which one micro-batch "
				       "writes whole: it trains with --accum 1, not %lld (compile it with --accum %lld)",
				    t->p->params[i].name, (long long)t->o->accum, (long long)t->o->accum);
	if (!(t->job = rt_job_open_micro(t->p, be, t->o->interleave ? 2 : 1, t->err, t->errlen)))
		return -1;
	for (int i = 0; families[t->fam].inputs[i]; i++)
		if (!(t->batch[i] = malloc((size_t)(t->B * t->T * t->p->dp) * sizeof *t->batch[i])))
			return fail(t, "out of memory for a batch of %lld x %lld tokens", (long long)t->B, (long long)t->T);
	for (int k = 0; k < 2 && t->fam == BERT && t->job->nmicro > 1; k++)
		if (!(t->sop_y[k] = malloc((size_t)(t->B * t->T * t->p->dp) * sizeof *t->sop_y[k])))
			return fail(t, "out of memory for a batch of %lld x %lld tokens", (long long)t->B, (long long)t->T);
	t->data_rng = rt_mix64(t->seed ^ 0x64617461ull);
	return 0;
}

static void close_run(Train *t)
{
	if (t->log)
		fclose(t->log);
	rt_events_close(t->tb, NULL, 0);   /* every record was flushed when written */
	rt_job_close(t->job);
	rt_bert_close(&t->btrain);
	rt_bert_close(&t->bval);
	rt_shard_free(&t->train);
	rt_shard_free(&t->val);
	for (int i = 0; i < MAX_INPUTS; i++)
		free(t->batch[i]);
	free(t->sop_y[0]);
	free(t->sop_y[1]);
	free(t->tokenizer);
	free(t->tok_sha);
	free(t->resumed);
	free(t->init_from);
}

/* ---------------------------------------------------------------- parameters */

/* Values [from, to) of a parameter of normal init (std), the stream started at s0:
 * next_rand is a counter (splitmix64), so value k's two uniforms are its draws 2 k + 1 and
 * 2 k + 2 wherever a thread starts. */
typedef struct {
	float *w;
	int64_t from, to;
	uint64_t s0;
	double std;
} Draw;

static void *draw_normal(void *arg)
{
	Draw *d = arg;
	uint64_t s = d->s0 + 2 * (uint64_t)d->from * 0x9e3779b97f4a7c15ull;
	for (int64_t k = d->from; k < d->to; k++) {
		/* Box-Muller on two 53-bit uniforms */
		double u1 = ((double)(next_rand(&s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
		double u2 = (double)(next_rand(&s) >> 11) * (1.0 / 9007199254740992.0);
		d->w[k] = (float)(d->std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
	}
	return NULL;
}

/* Parameter i drawn whole from the seed (so every tp starts alike), then sharded. A large
 * one is drawn by the machine's cores (1.2b's 1.2 billion values took over a minute on one):
 * the same values whatever their number. */
static void init_param(Train *t, int i)
{
	enum { GRAIN = 1 << 20 };
	const MglPlanParam *q = &t->p->params[i];
	int64_t n = mgl_param_numel(q);
	float *w = mgl_xmalloc((size_t)n * sizeof *w, "a parameter's first values");
	if (q->init == MGL_INIT_NORMAL) {
		long cores = sysconf(_SC_NPROCESSORS_ONLN);
		int64_t k = cores < 1 ? 1 : cores < RT_PARTS_MAX ? cores : RT_PARTS_MAX;
		k = k < n / GRAIN ? k : n / GRAIN > 0 ? n / GRAIN : 1;
		Draw part[RT_PARTS_MAX];
		uint64_t s0 = rt_mix64(t->seed ^ rt_mix64((uint64_t)i + 1));
		for (int64_t j = 0; j < k; j++)
			part[j] = (Draw){w, n * j / k, n * (j + 1) / k, s0, q->std};
		rt_run_parts(draw_normal, part, sizeof *part, (int)k);
	} else {
		for (int64_t k = 0; k < n; k++)
			w[k] = q->init == MGL_INIT_ONES ? 1.0f : 0.0f;
	}
	rt_param_set(t->job, i, RT_PARAM_VALUE, w);
	memset(w, 0, (size_t)n * sizeof *w);
	rt_param_set(t->job, i, RT_PARAM_M, w);
	rt_param_set(t->job, i, RT_PARAM_V, w);
	free(w);
}

/* ---------------------------------------------------------------- checkpoints */

/* Whether every process's rc is 0 (a barrier too): 0, or -1 where any is not. */
static int agree(Train *t, int rc)
{
	if (!t->job->net)
		return rc;
	/* out of memory, the others could not be told: this process ends, and they see its exit */
	int *all = mgl_xmalloc((size_t)t->job->nranks * sizeof *all, "the ranks' replies");
	rt_net_allgather(t->job->net, &rc, sizeof rc, all);
	for (int r = 0; r < t->job->nranks; r++)
		rc |= all[r];
	free(all);
	return rc ? -1 : 0;
}

/* A checkpoint in dir as shards (checkpoint.c, "checkpoint directories"): rank 0 finishes
 * any save a crash interrupted, then (all waiting) the processes write shard s by process
 * s mod their number, then (all waiting) rank 0 writes the index and publishes. */
static int write_shards(Train *t, const char *dir, const RtTensor *ts, int n, const int *of, int nshards,
			const RtCkptMeta *m, char *e, size_t elen)
{
	int procs = t->job->net ? t->job->nranks : 1, me = t->job->first;
	int rc = me == 0 ? rt_ckpt_shards_begin(dir, e, elen) : 0;
	if (agree(t, rc) && !rc)
		rc = -1, snprintf(e, elen, "%s: rank 0 could not prepare the checkpoint", dir);
	for (int s = me; s < nshards && !rc; s += procs)
		rc = rt_ckpt_write_shard(dir, ts, n, of, nshards, s, m, e, elen);
	if (agree(t, rc) && !rc)   /* the others wait for it (a failed begin agreed already) */
		rc = -1, snprintf(e, elen, "%s: another process could not write its shard of the checkpoint", dir);
	else if (!rc && me == 0)
		rc = rt_ckpt_shards_commit(dir, ts, n, of, nshards, e, elen);
	return rc;
}

/* Writes path: for each of `which` (RT_PARAM_*), every parameter under prefix + its name.
 * With dir (a save), as shards there when they are asked for or the checkpoint is large or
 * the job runs across processes (rt_ckpt_nshards). Between processes each gathers only the
 * tensors of the shards it writes (of process s mod their number), or with one file
 * rank 0 all of them; the others' path is NULL. */
static int write_tensors(Train *t, const char *path, const char *dir, const int *which, const char *const *prefix,
			 int nw)
{
	const MglPlan *p = t->p;
	int n = nw * p->nparams, rc = 0;
	RtTensor *ts = calloc((size_t)n, sizeof *ts);
	char **names = calloc((size_t)n, sizeof *names);
	int *of = malloc((size_t)n * sizeof *of);
	int64_t bytes = 0;   /* what this process holds of the tensors */
	bool oom = !ts || !names || !of;
	for (int w = 0; w < nw && !oom; w++)
		for (int i = 0; i < p->nparams && !oom; i++) {
			const MglPlanParam *q = &p->params[i];
			RtTensor *x = &ts[w * p->nparams + i];
			size_t len = strlen(q->name) + strlen(prefix[w]) + 1;
			if (!(names[w * p->nparams + i] = malloc(len))) {
				oom = true;
				break;
			}
			snprintf(names[w * p->nparams + i], len, "%s%s", prefix[w], q->name);
			x->name = names[w * p->nparams + i];
			x->rank = q->rank;
			memcpy(x->shape, q->shape, sizeof x->shape);
		}
	const RtTrainOpts *o = t->o;
	int procs = t->job->net ? t->job->nranks : 1;
	int nshards = dir && !oom ? rt_ckpt_nshards(ts, n, procs, o->save_shards) : 1;
	if (!oom)
		rt_ckpt_deal(ts, n, nshards, of);   /* shapes are enough */
	for (int k = 0; k < n && !oom; k++) {
		int to = t->job->net ? of[k] % procs : -1;   /* the process that writes it (one file: rank 0) */
		int64_t numel = mgl_param_numel(&p->params[k % p->nparams]);
		if (to < 0 || to == t->job->first) {
			oom = !(ts[k].data = malloc((size_t)numel * sizeof *ts[k].data));
			bytes += numel * (int64_t)sizeof *ts[k].data;
		}
	}
	char e[512];
	/* every process gathers, or none: the gathers are collectives */
	if (agree(t, oom)) {
		snprintf(e, sizeof e, "out of host memory: the checkpoint's tensors (%s bytes on this process%s)",
			 mgl_commas(bytes, (char[32]){0}), oom ? "" : "; another process ran out");
		rc = -1;
	}
	for (int k = 0; k < n && !rc; k++) {
		int to = t->job->net ? of[k] % procs : -1;
		rt_param_gather(t->job, k % p->nparams, which[k / p->nparams], ts[k].data, to);
	}
	RtCkptMeta m = {.format = RT_CKPT_FORMAT, .model = o->model_name, .source = o->model_source ? o->model_source : "",
			.preset = o->preset ? o->preset : "", .set = o->set ? o->set : "", .tokenizer = t->tokenizer,
			.tokenizer_sha256 = t->tok_sha, .has_state = true, .step = t->step, .adam_t = t->adam_t,
			.data_rng = t->data_rng, .seed = t->seed, .has_schedule = true, .steps = o->steps,
			.warmup = o->warmup, .lr = o->lr, .min_lr = o->min_lr};
	if (!rc && nshards > 1)
		rc = write_shards(t, dir, ts, n, of, nshards, &m, e, sizeof e);
	else if (!rc && !(rc = path ? rt_ckpt_write_meta(path, ts, n, &m, e, sizeof e) : 0) && path && dir)
		rc = rt_ckpt_single_commit(dir, e, sizeof e);   /* NULL: another process writes */
	for (int i = 0; i < n; i++) {
		if (ts)
			free(ts[i].data);
		if (names)
			free(names[i]);
	}
	free(ts);
	free(names);
	free(of);
	return rc ? fail(t, "%s", e) : 0;
}

/* DIR/checkpoint.safetensors (malloc'd), once DIR is a directory (made if missing, not its
 * parent) where that file can be written; NULL with the error. Checked before the first
 * step too, so that a bad --save fails at once, not after the whole run. */
static char *prepare_dir(Train *t, const char *dir)
{
	struct stat st;
	char *path = malloc(strlen(dir) + 32), tmp[sizeof saving];
	int fd = -1;
	if (!path) {
		fail(t, "out of host memory: the checkpoint's path (%s bytes)", mgl_commas((int64_t)strlen(dir) + 32, (char[32]){0}));
		return NULL;
	}
	sprintf(path, "%s/checkpoint.safetensors", dir);
	if (mkdir(dir, 0777) && errno != EEXIST) {
		fail(t, "cannot create '%s': %s", dir, strerror(errno));
	} else if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
		fail(t, "cannot save in '%s': it is not a directory", dir);
	} else if ((errno = ENAMETOOLONG, rt_tmp_name(path, tmp, sizeof tmp)) ||
		   (fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666)) < 0) {   /* the writer's temporary file */
		fail(t, "cannot write in '%s': %s", dir, strerror(errno));
	} else {
		close(fd);
		unlink(tmp);
		if (stat(path, &st) || S_ISREG(st.st_mode))
			return path;
		fail(t, "cannot save to '%s': it is not a regular file", path);
	}
	free(path);
	return NULL;
}

/* Whether this process writes files: rank 0's, or the only one. */
static bool writer(const Train *t) { return t->job->first == 0; }

static int save(Train *t)
{
	char *path = writer(t) ? prepare_dir(t, t->o->save_dir) : NULL;
	if (writer(t) && !path)
		return -1;
	static const int which[] = {RT_PARAM_VALUE, RT_PARAM_M, RT_PARAM_V};
	static const char *const prefix[] = {"", "optimizer.m.", "optimizer.v."};
	/* rt_ckpt_write's temporary file, for a second Ctrl-C to remove */
	int too_long = !path || rt_tmp_name(path, saving, sizeof saving);
	atomic_thread_fence(memory_order_seq_cst);   /* the name is whole before the handler may read it */
	saving_now = !too_long;
	int rc = write_tensors(t, path, t->o->save_dir, which, prefix, 3);
	saving_now = 0;
	free(path);
	return rc;
}

/* path: the batch fed last, each input under its name with every dp rank's rows ([dp x B,
 * T], or [dp x B] for sop_targets), the ids as F32 (exact: they are below 2^24). */
static int write_batch(Train *t, const char *path)
{
	RtTensor ts[MAX_INPUTS];
	int n = 0;
	for (; families[t->fam].inputs[n]; n++) {
		const MglValue *v = &t->p->values[t->in[n]];
		int64_t per = mgl_numel(v), dp = t->job->dp;
		ts[n] = (RtTensor){.name = families[t->fam].inputs[n], .rank = v->rank};
		memcpy(ts[n].shape, v->shape, sizeof ts[n].shape);
		ts[n].shape[0] *= dp;
		if (!(ts[n].data = malloc((size_t)(per * dp) * sizeof *ts[n].data))) {
			fail(t, "out of host memory: the batch's %s (%s bytes)", families[t->fam].inputs[n],
			     mgl_commas(per * dp * (int64_t)sizeof *ts[n].data, (char[32]){0}));
			while (n--)
				free(ts[n].data);
			return -1;
		}
		for (int64_t d = 0; d < dp; d++)
			for (int64_t k = 0; k < per; k++)
				ts[n].data[d * per + k] = (float)t->batch[n][d * t->B * t->T + k];
	}
	char e[512];
	int rc = rt_ckpt_write(path, ts, n, NULL, NULL, 0, e, sizeof e);
	for (int i = 0; i < n; i++)
		free(ts[i].data);
	return rc ? fail(t, "%s", e) : 0;
}

/* --dump-first: the weights the first step starts from and the gradients it computes
 * (before the optimizer changes anything), for comparing with another implementation; and
 * the batch they come from, where the step has one (not with --accum above 1). */
static int dump_first(Train *t)
{
	const char *dir = t->o->dump_first;
	char *path = writer(t) ? prepare_dir(t, dir) : NULL;
	if (writer(t) && !path)
		return -1;
	static const char *const none[] = {""};
	int rc = write_tensors(t, path, NULL, (const int[]){RT_PARAM_VALUE}, none, 1);
	if (path)
		sprintf(path, "%s/grads.safetensors", dir);
	if (!rc)
		rc = write_tensors(t, path, NULL, (const int[]){RT_PARAM_GRAD}, none, 1);
	if (path)
		sprintf(path, "%s/batch.safetensors", dir);
	if (!rc && path && t->o->accum == 1)
		rc = write_batch(t, path);
	else if (!rc && path)
		unlink(path);   /* an earlier run's, which would pass for this step's */
	free(path);
	return rc;
}

/* The tokenizer of a resumed checkpoint: the options' must be the same (by its files'
 * hashes, wherever they are now), and where the options name none, it carries over. */
static int same_tokenizer(Train *t, const char *path, const char *tok, const char *sha)
{
	if (!tok)
		return 0;
	if (!t->o->tokenizer) {
		free(t->tokenizer);
		t->tokenizer = strdup(tok);
		free(t->tok_sha);
		t->tok_sha = sha ? strdup(sha) : NULL;
		if (!t->tokenizer || (sha && !t->tok_sha))
			return fail(t, "out of host memory: the checkpoint's tokenizer (%s bytes)",
				    mgl_commas((int64_t)(strlen(tok) + (sha ? strlen(sha) : 0) + 2), (char[32]){0}));
		return 0;
	}
	int was = tokenizer_kind(tok), now = tokenizer_kind(t->tokenizer);
	if (was != now)
		return fail(t, "%s was trained on %s tokens, not %s ones", path, tokenizers[was].what, tokenizers[now].what);
	if (sha && t->tok_sha && strcmp(sha, t->tok_sha))
		return fail(t, "%s was trained with other %s tokenizer files (SHA-256 %s) than %s gives (%s)", path,
			    tokenizers[now].what, sha, tokenizers[now].flag, t->tok_sha);
	return 0;
}

/* --resume DIR: the weights, AdamW's moments, the step, the data stream and the seed; or
 * with init (--init DIR), the weights alone (the moments zeroed: a fresh optimizer at step
 * 0, the options' seed). */
static int load(Train *t, const char *dir, bool init)
{
	char *path;
	RtCkpt c;
	char e[512];
	int rc = rt_ckpt_open(dir, &c, &path, e, sizeof e);
	if (rc)
		return fail(t, "%s", e);
	const MglPlan *p = t->p;
	RtCkptMeta m;
	if (rt_ckpt_meta_read(&c, path, &m, e, sizeof e)) {
		rc = fail(t, "%s", e);
		goto out;
	}
	if (!m.has_state && !init) {
		rc = fail(t, "%s has no training state (step, adam_t, data_rng, seed): not an mgl checkpoint?\n"
			  "  hint: --init DIR starts from its weights with a fresh optimizer (an imported checkpoint has "
			  "no state)", path);
		goto out;
	}
	if (m.model && t->o->model_name && strcmp(m.model, t->o->model_name)) {
		rc = fail(t, "%s is a checkpoint of model '%s', not '%s'", path, m.model, t->o->model_name);
		goto out;
	}
	for (int i = 0; i < p->nparams && !rc; i++)
		for (int w = 0; w < (init ? 1 : 3) && !rc; w++) {
			const MglPlanParam *q = &p->params[i];
			char name[512];
			snprintf(name, sizeof name, "%s%s", w == 0 ? "" : w == 1 ? "optimizer.m." : "optimizer.v.", q->name);
			const RtTensor *x = rt_ckpt_find(&c, name);
			if (!x) {
				rc = fail(t, "%s does not match the model: it has no tensor '%s'", path, name);
				break;
			}
			bool same = x->rank == q->rank;
			for (int k = 0; same && k < q->rank; k++)
				same = x->shape[k] == q->shape[k];
			if (!same) {
				char a[96] = "", b[96] = "";
				for (int k = 0; k < x->rank; k++)
					snprintf(a + strlen(a), sizeof a - strlen(a), "%s%lld", k ? ", " : "", (long long)x->shape[k]);
				for (int k = 0; k < q->rank; k++)
					snprintf(b + strlen(b), sizeof b - strlen(b), "%s%lld", k ? ", " : "", (long long)q->shape[k]);
				rc = fail(t, "%s does not match the model: tensor '%s' is [%s] in the checkpoint and [%s] in the model",
					  path, name, a, b);
				break;
			}
			rt_param_set(t->job, i, w, x->data);
			if (init) {   /* AdamW's moments start at zero */
				float *z = calloc((size_t)mgl_param_numel(q) + 1, sizeof *z);
				if (!z) {
					rc = fail(t, "out of host memory: the zeroed moments of '%s' (%s bytes)", q->name,
						  mgl_commas((mgl_param_numel(q) + 1) * (int64_t)sizeof *z, (char[32]){0}));
					break;
				}
				rt_param_set(t->job, i, RT_PARAM_M, z);
				rt_param_set(t->job, i, RT_PARAM_V, z);
				free(z);
			}
		}
	if (!rc && init) {
		rc = same_tokenizer(t, path, m.tokenizer, m.tokenizer_sha256);
	} else if (!rc) {
		t->step = m.step;
		t->adam_t = m.adam_t;
		t->data_rng = m.data_rng;
		t->seed = m.seed;
		t->was = (Schedule){.steps = m.steps, .warmup = m.warmup, .lr = m.lr, .min_lr = m.min_lr,
				    .known = m.has_schedule};
		rc = same_tokenizer(t, path, m.tokenizer, m.tokenizer_sha256);
	}
	/* a checkpoint of a larger model holds tensors this one lacks: not the same model */
	if (!rc && c.n != (init && !m.has_state ? 1 : 3) * p->nparams) {
		for (int i = 0; i < c.n && !rc; i++) {
			const char *name = c.t[i].name;
			if (!strncmp(name, "optimizer.m.", 12) || !strncmp(name, "optimizer.v.", 12))
				name += 12;
			bool known = false;
			for (int k = 0; k < p->nparams && !known; k++)
				known = !strcmp(p->params[k].name, name);
			if (!known)
				rc = fail(t, "%s does not match the model: the checkpoint has a tensor '%s' the model lacks", path,
					  c.t[i].name);
		}
	}
out:
	rt_ckpt_free(&c);
	if (rc)
		free(path);
	else if (init)
		t->init_from = path;
	else
		t->resumed = path;
	return rc;
}

/* ---------------------------------------------------------------- the loop */

static double lr_at(int64_t step, int64_t steps, int64_t warmup, double lr, double min_lr)
{
	if (step < warmup)
		return lr * (double)(step + 1) / (double)warmup;
	double span = (double)(steps - warmup);
	double f = span > 0 ? (double)(step - warmup) / span : 1.0;
	if (f > 1)
		f = 1;
	return min_lr + 0.5 * (lr - min_lr) * (1 + cos(3.141592653589793 * f));
}

static RtRun run_params(const Train *t, int64_t micro, bool train)
{
	const RtTrainOpts *o = t->o;
	RtRun r = {.train = train, .lr = lr_at(t->step, o->steps, o->warmup, o->lr, o->min_lr), .beta1 = o->beta1,
		   .beta2 = o->beta2, .eps = o->eps, .weight_decay = o->weight_decay, .clip = o->clip, .adam_t = t->adam_t};
	r.key = rt_mix64(t->seed ^ rt_mix64((uint64_t)t->step * 4096 + (uint64_t)micro));
	r.last_micro = micro == o->accum - 1;
	r.first_micro = micro == 0;
	return r;
}

/* Runs the forward pass, and with backward the backward one, on the batches fed, and reads
 * what it measured into *m. A model with heads to report (BERT) runs the two apart and
 * reads its heads between them: the backward pass reuses their bytes (the memory plan keeps
 * only the loss to the end). */
static int run_phases(Train *t, unsigned phases, const RtRun *r, int n)
{
	return n > 1 ? rt_job_run_micro(t->job, phases, r, t->err, t->errlen) : rt_job_run(t->job, phases, r, t->err, t->errlen);
}

/* ... for n micro-batches (1, or the job's nmicro: run[k] micro-batch k's, interleaved),
 * adding w times each one's measures into *m */
static int run(Train *t, const RtRun *r, int n, bool backward, Measured *m, double w)
{
	bool heads = t->fam == BERT;
	unsigned fwd = 1u << MGL_FWD, bwd = backward ? 1u << MGL_BWD : 0;
	if (run_phases(t, heads ? fwd : fwd | bwd, r, n))
		return -1;
	for (int k = 0; k < n; k++) {
		Measured x;
		if (n > 1)
			rt_job_micro(t->job, k);
		measure(t, &x, n > 1 && t->sop_y[k] ? t->sop_y[k] : t->batch[4]);
		add(m, &x, w);
	}
	if (n > 1)
		rt_job_micro(t->job, 0);
	return heads && bwd ? run_phases(t, bwd, r, n) : 0;
}

static int evaluate(Train *t, Measured *out)
{
	int64_t n = t->o->eval_batches > 0 ? t->o->eval_batches : 8;
	*out = (Measured){0};
	for (int64_t k = 0; k < n; k++) {
		feed(t, k, 0, 0.0f);
		RtRun r = run_params(t, 0, false);
		if (run(t, &r, 1, false, out, 1.0 / (double)n))
			return -1;
	}
	return 0;
}

static void zero_grads(Train *t)
{
	for (int r = t->job->first; r < t->job->last; r++)
		t->job->be->zero_grads(&t->job->ranks[r]);
}

/* An optimizer step is these two (with, between them, what rt_train checks): the gradients
 * zeroed, then forward and backward over each micro-batch, the mean of whose measures is
 * *m... */
static int forward_backward(Train *t, Measured *m)
{
	const RtTrainOpts *o = t->o;
	zero_grads(t);
	*m = (Measured){0};
	int n = t->job->nmicro;   /* micro-batches a run interleaves (--interleave: 2) */
	for (int64_t k = 0; k < o->accum; k += n) {
		RtRun r[2];
		for (int i = 0; i < n; i++) {
			if (n > 1)
				rt_job_micro(t->job, i);
			feed(t, -1, k + i, (float)(1.0 / (double)(o->accum * t->p->dp)));
			if (n > 1 && t->sop_y[i])   /* the next feed overwrites batch[4] before measure reads it */
				memcpy(t->sop_y[i], t->batch[4], (size_t)(t->B * t->T * t->p->dp) * sizeof *t->sop_y[i]);
			r[i] = run_params(t, k + i, true);
		}
		if (n > 1)
			rt_job_micro(t->job, 0);
		if (run(t, r, n, true, m, 1.0 / (double)o->accum))
			return -1;
	}
	return 0;
}

/* ... then the optimizer (its run's parameters in *r, the squared gradient norm in *norm),
 * and the step is done. */
static int optimize(Train *t, RtRun *r, float *norm)
{
	t->adam_t++;
	*r = run_params(t, t->o->accum - 1, true);
	if (rt_job_run(t->job, 1u << MGL_OPT, r, t->err, t->errlen))
		return -1;
	*norm = 0;
	if (t->norm >= 0)
		t->job->be->read(&t->job->ranks[t->job->first], t->norm, norm);   /* rank 0's process logs rank 0's */
	t->step++;
	return 0;
}

/* Whether to stop after this step: Ctrl-C here, or between processes in any of them (each
 * says, every step), so that all stop after the same step and rank 0 saves it. */
static bool stopping(Train *t)
{
	if (!t->job->net)
		return interrupted;
	double *v = mgl_xcalloc((size_t)t->job->nranks, sizeof *v, "the ranks' interruptions");
	v[t->job->first] = interrupted;
	rt_job_share(t->job, v, 1);
	bool any = false;
	for (int r = 0; r < t->job->nranks; r++)
		any |= v[r] != 0;
	free(v);
	return any;
}

/* A NaN or infinite loss stops the run (before the optimizer applies it). */
static int bad_loss(Train *t, double loss)
{
	if (isfinite(loss))
		return 0;
	const char *dir = t->o->save_dir;
	return fail(t, "the loss is %s at step %s; stopping%s%s%s", isnan(loss) ? "NaN" : "infinite",
		    mgl_commas(t->step + 1, (char[32]){0}), dir ? " (the last checkpoint in " : "", dir ? dir : "",
		    dir ? " is from before it)" : "");
}

/* "0:07", "12:34", "1:02:03" */
static const char *clock_str(double s, char *buf)
{
	long n = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
	if (n >= 3600)
		snprintf(buf, 32, "%ld:%02ld:%02ld", n / 3600, n / 60 % 60, n % 60);
	else
		snprintf(buf, 32, "%ld:%02ld", n / 60, n % 60);
	return buf;
}

/* After a step: on a terminal, the progress line rewritten; a line of its own every
 * --log-every steps, or off a terminal when nothing was said for RT_PROGRESS_SECONDS (so a
 * pipe or a log file sees the run move); an evaluation's line whenever there is one (val:
 * NULL if none). BERT's heads follow the loss. */
static void progress(Train *t, const Measured *m, double tok_s, double left, const Measured *val, int64_t end)
{
	const RtTrainOpts *o = t->o;
	char b1[32], b2[32], b3[32], b4[32], heads[96] = "", line[256];
	const char *step = mgl_commas(t->step, b3), *of = mgl_commas(end, b4);
	if (!isnan(m->mlm))
		snprintf(heads, sizeof heads, " | mlm %.4f | sop %.4f | sop acc %.1f%%", m->mlm, m->sop, 100 * m->acc);
	snprintf(line, sizeof line, "step %s/%s | loss %.4f%s | %s tok/s | %s left", step, of, m->loss, heads,
		 mgl_commas((int64_t)(tok_s + 0.5), b1), clock_str(left, b2));
	bool own = o->log_every ? t->step % o->log_every == 0 : !o->progress && now() - t->shown >= RT_PROGRESS_SECONDS;
	const char *cr = o->progress ? "\r" : "", *pad = o->progress ? "          " : "";
	if (val && isnan(val->mlm))   /* on a terminal or not: the loss falling is the news */
		say(t, "%sstep %s/%s: loss %.4f, validation loss %.4f (perplexity %.2f)%s\n", cr, step, of, m->loss,
		    val->loss, exp(val->loss), pad);
	else if (val)
		say(t, "%sstep %s/%s: loss %.4f, validation loss %.4f (mlm %.4f, perplexity %.2f; sop %.4f, accuracy "
		    "%.1f%%)%s\n", cr, step, of, m->loss, val->loss, val->mlm, exp(val->mlm), val->sop, 100 * val->acc, pad);
	else if (own)
		say(t, "%s%s%s\n", cr, line, pad);
	if (val || own)
		t->shown = now();
	if (o->progress)
		say(t, "\r%s   ", line);
}

/* --log: a step's line of JSON (val: NULL if not evaluated). */
static void log_step(Train *t, const Measured *m, double lr, double grad_norm, double tok_s, const Measured *val)
{
	fprintf(t->log, "{\"step\": %lld, \"loss\": %.6f", (long long)t->step, m->loss);
	if (!isnan(m->mlm))
		fprintf(t->log, ", \"mlm_loss\": %.6f, \"sop_loss\": %.6f, \"sop_acc\": %.6f", m->mlm, m->sop, m->acc);
	fprintf(t->log, ", \"lr\": %.6g, \"grad_norm\": %.6g, \"tokens_per_s\": %.1f", lr, grad_norm, tok_s);
	if (val && isnan(val->mlm))
		fprintf(t->log, ", \"val_loss\": %.6f, \"val_ppl\": %.4f", val->loss, exp(val->loss));
	else if (val)
		fprintf(t->log, ", \"val_loss\": %.6f, \"val_mlm_loss\": %.6f, \"val_mlm_ppl\": %.4f, \"val_sop_loss\": %.6f, "
			"\"val_sop_acc\": %.6f", val->loss, val->mlm, exp(val->mlm), val->sop, val->acc);
	fprintf(t->log, "}\n");
	fflush(t->log);
}

/* --tensorboard: a step's scalars under the names Megatron-LM gives them (docs/train.md),
 * and those it has none for in its style. For BERT, as Megatron-LM's BERT: "lm loss" is the
 * masked-LM loss, beside "sop loss". */
static int tensorboard(Train *t, const Measured *m, double lr, double grad_norm, double dt, double tok_s,
		       const Measured *val)
{
	const RtTrainOpts *o = t->o;
	RtScalar v[20];
	int n = 0;
	bool bert = !isnan(m->mlm);
	v[n++] = (RtScalar){"lm loss", bert ? m->mlm : m->loss};
	if (bert) {
		v[n++] = (RtScalar){"sop loss", m->sop};
		v[n++] = (RtScalar){"sop accuracy", m->acc};
	}
	if (val) {
		v[n++] = (RtScalar){"lm loss validation", bert ? val->mlm : val->loss};
		v[n++] = (RtScalar){"lm loss validation ppl", exp(bert ? val->mlm : val->loss)};
	}
	if (val && bert) {
		v[n++] = (RtScalar){"sop loss validation", val->sop};
		v[n++] = (RtScalar){"sop accuracy validation", val->acc};
	}
	v[n++] = (RtScalar){"learning-rate", lr};
	v[n++] = (RtScalar){"grad-norm", grad_norm};
	v[n++] = (RtScalar){"iteration-time", dt};
	v[n++] = (RtScalar){"tokens-per-sec", tok_s};
	if (o->flops > 0)   /* TFLOP/s a rank (a GPU), as Megatron-LM's throughput */
		v[n++] = (RtScalar){"throughput", o->flops * (double)o->accum / dt / 1e12};
	int64_t allocated, device_used;
	t->job->be->memory(&t->job->ranks[t->job->first], &allocated, &device_used);
	v[n++] = (RtScalar){"mem-allocated-bytes", (double)allocated};
	if (device_used >= 0)
		v[n++] = (RtScalar){"mem-device-used-bytes", (double)device_used};
	return rt_events_write(t->tb, t->step, v, n, t->err, t->errlen);
}

/* The schedule: as given, else the resumed checkpoint's, else the defaults (runtime.h);
 * into note, what a resumed run changes of its checkpoint's ("" if nothing). */
static void schedule(Train *t, RtTrainOpts *o, char *note, size_t cap)
{
	note[0] = 0;
	const Schedule *was = t->was.known ? &t->was : NULL;
	bool given_steps = o->steps > 0, given_warmup = o->warmup > 0, given_lr = !isnan(o->lr),
	     given_min = !isnan(o->min_lr);
	if (!o->steps)
		o->steps = was ? was->steps : RT_STEPS;
	if (isnan(o->lr))
		o->lr = was ? was->lr : RT_LR;
	if (isnan(o->min_lr))
		o->min_lr = was ? was->min_lr : o->lr / 10;
	if (!o->warmup)
		o->warmup = was ? was->warmup : o->steps / 10 < 100 ? o->steps / 10 : 100;
	if (!o->eval_every && o->val)
		o->eval_every = o->steps / 10 ? o->steps / 10 : 1;
	if (!was || (o->steps == was->steps && o->warmup == was->warmup && o->lr == was->lr && o->min_lr == was->min_lr))
		return;
	char what[256] = "";
	size_t n = 0;
#define DIFF(cond, ...) if (cond) n += (size_t)snprintf(what + n, sizeof what - n, __VA_ARGS__)
	DIFF(o->steps != was->steps, "%s--steps %lld (it had %lld)", n ? ", " : "", (long long)o->steps, (long long)was->steps);
	DIFF(o->warmup != was->warmup, "%s--warmup %lld (it had %lld)", n ? ", " : "", (long long)o->warmup,
	     (long long)was->warmup);
	DIFF(o->lr != was->lr, "%s--lr %g (it had %g)", n ? ", " : "", o->lr, was->lr);
	DIFF(o->min_lr != was->min_lr, "%s--min-lr %g (it had %g)", n ? ", " : "", o->min_lr, was->min_lr);
#undef DIFF
	double now_lr = lr_at(t->step, o->steps, o->warmup, o->lr, o->min_lr),
	       was_lr = lr_at(t->step, was->steps, was->warmup, was->lr, was->min_lr);
	n = (size_t)snprintf(note, cap, "mgl: note: the learning-rate schedule is not the checkpoint's: %s; step %s runs at "
			     "lr %.3g instead of %.3g\n", what, mgl_commas(t->step + 1, (char[32]){0}), now_lr, was_lr);
	if (t->step < was->steps && n < cap)   /* a finished schedule has no step left to keep */
		snprintf(note + n, cap - n, "  hint: leave out %s%s%s%sto keep the checkpoint's schedule\n",
			 given_steps ? "--steps " : "", given_warmup ? "--warmup " : "", given_lr ? "--lr " : "",
			 given_min ? "--min-lr " : "");
}

/* On the cpu, before a first step of more than a few seconds: how long one should take,
 * from the plan's FLOPs and this machine's measured GEMM rate. */
static void estimate(Train *t, const RtBackend *be)
{
	const RtTrainOpts *o = t->o;
	if (be != &rt_cpu_backend || o->flops <= 0 || !o->msgs)
		return;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	double share = (double)t->job->nranks / (double)(cores > 0 ? cores : 1);   /* ranks per core */
	double flops = o->flops * (double)o->accum * (share > 1 ? share : 1);
	if (flops < 1e9)   /* a GFLOP: under a second at any rate this backend reaches; say nothing */
		return;
	int64_t n = 0, k = 0;   /* the largest matrix: the GEMM most of a step's time goes to */
	for (int i = 0; i < t->p->nparams; i++) {
		const MglPlanParam *q = &t->p->params[i];
		if (q->rank == 2 && q->shape[0] * q->shape[1] > n * k)
			n = q->shape[0], k = q->shape[1];
	}
	double rate = rt_cpu_gemm_rate(n, k), secs = rate > 0 ? flops / rate : 0;
	if (secs < 5)
		return;
	char when[32], ranks[64] = "";
	if (secs < 60)
		snprintf(when, sizeof when, "%.0f s", secs);
	else if (secs < 3600)
		snprintf(when, sizeof when, "%.0f min", secs / 60);
	else
		snprintf(when, sizeof when, "%.1f h", secs / 3600);
	if (t->job->nranks > 1)
		snprintf(ranks, sizeof ranks, " on each of %d ranks, %ld core%s,", t->job->nranks, cores, cores == 1 ? "" : "s");
	char amount[32], speed[32];
	say(t, "mgl: a step will take about %s on this cpu (%s%s at about %s a rank)\n", when,
	    mgl_si(o->flops * (double)o->accum, "FLOP", amount), ranks, mgl_si(rate, "FLOP/s", speed));
}

/* What the handler will say, and where; the handler is installed. */
static void catch_sigint(const Train *t, struct sigaction *old)
{
	/* on a terminal the progress line is open: end it first (elsewhere there is none) */
	static char first[256], second[128];
	const char *nl = t->o->progress ? "\n" : "";
	snprintf(first, sizeof first, "%smgl: Ctrl-C: stopping after this step%s; Ctrl-C again to stop now%s\n", nl,
		 t->o->save_dir ? " and saving" : "", t->o->save_dir ? " without saving" : "");
	snprintf(second, sizeof second, "%smgl: stopped now%s\n", nl,
		 t->o->save_dir ? ", without saving (a checkpoint saved before is as it was)" : "");
	sig_first = first;
	sig_second = second;
	sig_fd = t->o->msgs ? fileno(t->o->msgs) : -1;
	interrupted = 0;
	struct sigaction sa = {0};
	sa.sa_handler = on_sigint;
	sigaction(SIGINT, &sa, old);
}

int rt_train(const MglPlan *plan, const RtBackend *be, const RtTrainOpts *opts, RtTrainResult *res, char *err,
	     size_t errlen)
{
	RtTrainOpts oo = *opts, *o = &oo;
	Train t = {.p = plan, .o = o, .err = err, .errlen = errlen, .B = plan->batch, .T = plan->seq, .seed = o->seed};
	memset(res, 0, sizeof *res);
	res->val_loss = res->unigram_loss = NAN;
	res->first_mlm = res->last_mlm = res->first_sop_acc = res->last_sop_acc = res->val_mlm = res->val_sop_acc = NAN;
	int rc = -1;
	double t0 = now();
	if (inputs(&t, "mgl train"))
		goto out;
	const char *tok = o->tokenizer ? o->tokenizer : families[t.fam].tokenizer;
	t.tokenizer = strdup(tok);
	t.tok_sha = o->tokenizer && o->tokenizer_sha256 ? strdup(o->tokenizer_sha256) : NULL;
	if (!t.tokenizer || (o->tokenizer && o->tokenizer_sha256 && !t.tok_sha)) {
		fail(&t, "out of host memory: the tokenizer's name (%s bytes)", mgl_commas((int64_t)strlen(tok) + 1, (char[32]){0}));
		goto out;
	}
	if (open_job(&t, be))
		goto out;
	if (!writer(&t)) {   /* between processes rank 0's speaks, logs and saves; the others train */
		o->msgs = NULL;
		o->progress = false;
		o->log_path = o->tensorboard = NULL;
	}
	if ((o->resume_dir && load(&t, o->resume_dir, false)) || (o->init_dir && load(&t, o->init_dir, true)))
		goto out;
	if (open_data(&t))
		goto out;
	if (t.val.tokens && t.fam == LM)
		res->unigram_loss = unigram_loss(&t);
	char note[512];
	schedule(&t, o, note, sizeof note);
	if (t.step >= o->steps) {
		fail(&t, "the checkpoint is at step %s already: give --steps beyond it to train more",
		     mgl_commas(t.step, (char[32]){0}));
		goto out;
	}
	if (o->log_path && !(t.log = fopen(o->log_path, t.step ? "a" : "w"))) {
		fail(&t, "cannot write the log '%s': %s", o->log_path, strerror(errno));
		goto out;
	}
	if (o->tensorboard && !(t.tb = rt_events_open(o->tensorboard, t.step + 1, err, errlen)))
		goto out;
	for (int k = 0; k < 2; k++) {   /* now, not after the training */
		const char *dir = !writer(&t) ? NULL : k ? o->dump_first : o->save_dir;
		char *path = dir ? prepare_dir(&t, dir) : NULL;
		free(path);
		if (dir && !path)
			goto out;
	}

	/* everything checked: say what runs; from now on Ctrl-C stops after a step (the first
	 * one too, if it comes before it) */
	struct sigaction old;
	catch_sigint(&t, &old);
	char b1[32], b2[32];
	say(&t, "mgl: training %s%s%s (%s parameters) on %s: tp %d, dp %d%s, batch %lld x %lld, %s step%s\n",
	    o->model_name ? o->model_name : plan->model, o->preset ? " " : "", o->preset ? o->preset : "",
	    mgl_commas(o->nparams, b1), be->name, plan->tp, plan->dp, plan->sp ? ", sequence parallel" : "",
	    (long long)plan->batch, (long long)plan->seq, mgl_commas(o->steps, b2), o->steps == 1 ? "" : "s");
	if (be == &rt_cpu_backend) {
		char gemm[256];
		rt_cpu_gemm(gemm, sizeof gemm);
		say(&t, "mgl: GEMMs: %s\n", gemm);
	}
	if (t.resumed)
		say(&t, "mgl: resuming from step %s (%s)\n%s", mgl_commas(t.step, b1), t.resumed, note);
	else if (t.init_from)
		say(&t, "mgl: starting from the weights of %s (a fresh optimizer, step 0)\n", t.init_from);
	else
		for (int i = 0; i < plan->nparams; i++)
			init_param(&t, i);
	if (t.tb)
		say(&t, "mgl: TensorBoard events to %s\n", rt_events_path(t.tb));
	estimate(&t, be);

	double tstart = now();
	t.shown = tstart;
	int64_t first = t.step;
	int64_t end = o->stop_at > 0 && o->stop_at < o->steps ? o->stop_at : o->steps;
	while (t.step < end) {
		double ts = now();
		Measured m;
		if (forward_backward(&t, &m))
			goto restore;
		if (o->dump_first && t.step == first && dump_first(&t))
			goto restore;
		if (bad_loss(&t, m.loss))
			goto restore;
		RtRun r;
		float norm;
		if (optimize(&t, &r, &norm))
			goto restore;
		if (t.step == first + 1) {
			res->first_loss = m.loss;
			res->first_mlm = m.mlm;
			res->first_sop_acc = m.acc;
		}
		res->last_loss = m.loss;
		res->last_mlm = m.mlm;
		res->last_sop_acc = m.acc;
		double dt = now() - ts, tok_s = (double)(t.B * t.T * o->accum * plan->dp) / dt, grad_norm = sqrt((double)norm);
		Measured val, *evaluated = NULL;
		bool stop = stopping(&t), last = t.step == end || stop;
		if (t.val.tokens && ((o->eval_every > 0 && t.step % o->eval_every == 0) || last)) {
			if (evaluate(&t, &val))
				goto restore;
			evaluated = &val;
			res->val_loss = val.loss;
			res->val_mlm = val.mlm;
			res->val_sop_acc = val.acc;
		}
		if (t.log)
			log_step(&t, &m, r.lr, grad_norm, tok_s, evaluated);
		if (t.tb && tensorboard(&t, &m, r.lr, grad_norm, dt, tok_s, evaluated))
			goto restore;
		double left = (now() - tstart) / (double)(t.step - first) * (double)(end - t.step);
		progress(&t, &m, tok_s, left, evaluated, end);
		if (o->save_dir && ((o->save_every > 0 && t.step % o->save_every == 0) || last))
			if (save(&t))
				goto restore;
		if (stop) {
			res->interrupted = true;
			break;
		}
	}
	if (o->progress)
		say(&t, "\n");
	res->steps_done = t.step - first;
	res->last_step = t.step;
	res->seconds = now() - t0;
	rc = 0;
restore:
	sigaction(SIGINT, &old, NULL);
	sig_fd = -1;
out:
	close_run(&t);
	return rc;
}

/* ---------------------------------------------------------------- benchmarks */

/* rt_bench's training data: the family's synthetic kind, drawn from the seed. */
static int synthetic(Train *t, int64_t steps)
{
	int64_t V = t->p->vocab;
	if (V < 1 || V > 65536)
		return fail(t, "mgl bench draws tokens below the model's vocabulary, and this model has %s",
			    V < 1 ? "none (no embedding table split by @row)" : "more than 65,536 (the token shards' limit)");
	if (t->fam == BERT && (V <= 5 || t->T < 5))
		return fail(t, "mgl bench makes BERT's examples of [CLS] A [SEP] B [SEP] and five special tokens: this model "
			    "has %s %s", mgl_commas(V <= 5 ? V : t->T, (char[32]){0}), V <= 5 ? "tokens" : "positions");
	return families[t->fam].synthetic(t, steps);
}

void rt_bench_free(RtBenchResult *res)
{
	free(res->step_s);
	free(res->fwdbwd_s);
	free(res->profiled_s);
	free(res->op_s);
	free(res->alone_s);
	res->step_s = res->fwdbwd_s = res->profiled_s = res->op_s = res->alone_s = NULL;
}

int rt_bench(const MglPlan *plan, const RtBackend *be, const RtTrainOpts *opts, const RtBenchOpts *b,
	     RtBenchResult *res, char *err, size_t errlen)
{
	RtTrainOpts oo = *opts, *o = &oo;
	Train t = {.p = plan, .o = o, .err = err, .errlen = errlen, .B = plan->batch, .T = plan->seq, .seed = o->seed};
	int nsteps = plan->nsteps, passes = !b->profile ? 1 : plan->tp * plan->dp > 1 ? 3 : 2;
	int64_t n = b->steps, total = b->warmup + n * passes;
	double *each = NULL;   /* every rank's step_seconds while profiling */
	int rc = -1;
	memset(res, 0, sizeof *res);
	res->step_s = calloc((size_t)n, sizeof *res->step_s);
	res->fwdbwd_s = calloc((size_t)n, sizeof *res->fwdbwd_s);
	if (b->profile) {
		res->profiled_s = calloc((size_t)n, sizeof *res->profiled_s);
		res->op_s = calloc((size_t)nsteps + 1, sizeof *res->op_s);
		each = calloc((size_t)(plan->tp * plan->dp) * ((size_t)nsteps + 1), sizeof *each);
		if (passes == 3)
			res->alone_s = calloc((size_t)nsteps + 1, sizeof *res->alone_s);
	}
	if (n < 1 || !res->step_s || !res->fwdbwd_s ||
	    (b->profile && (!res->profiled_s || !res->op_s || !each || (passes == 3 && !res->alone_s)))) {
		fail(&t, n < 1 ? "no steps to time" : "out of memory");
		goto out;
	}
	if (inputs(&t, "mgl bench"))
		goto out;
	const char *tok = o->tokenizer ? o->tokenizer : families[t.fam].tokenizer;
	if (!(t.tokenizer = strdup(tok))) {
		fail(&t, "out of host memory: the tokenizer's name (%s bytes)", mgl_commas((int64_t)strlen(tok) + 1, (char[32]){0}));
		goto out;
	}
	if (o->data ? open_data(&t) : synthetic(&t, total * o->accum))
		goto out;
	if (open_job(&t, be))
		goto out;
	if (!o->steps)
		o->steps = total;
	char note[8];
	schedule(&t, o, note, sizeof note);
	for (int i = 0; i < plan->nparams; i++)
		init_param(&t, i);
	for (int64_t i = 0; i < total; i++) {
		int64_t k = i - b->warmup;   /* below 0 warming up, below n timed, then profiled, then alone */
		if (k == 2 * n) {   /* the profile's steps are in; the collectives-alone pass starts afresh */
			memcpy(res->op_s, each, (size_t)nsteps * sizeof *each);
			memset(each, 0, (size_t)(plan->tp * plan->dp) * ((size_t)nsteps + 1) * sizeof *each);
		}
		for (int r = 0; r < t.job->nranks; r++) {
			t.job->ranks[r].step_seconds = k >= n ? each + (size_t)r * ((size_t)nsteps + 1) : NULL;
			t.job->ranks[r].collectives_at_once = k >= 2 * n;
		}
		double ts = now();
		Measured m;
		if (forward_backward(&t, &m))
			goto out;
		double fb = now() - ts;
		RtRun r;
		float norm;
		if (bad_loss(&t, m.loss) || optimize(&t, &r, &norm))
			goto out;
		double dt = now() - ts;
		if (k >= 0 && k < n) {
			res->step_s[k] = dt;
			res->fwdbwd_s[k] = fb;
			res->loss = m.loss;
		} else if (k >= n && k < 2 * n) {
			res->profiled_s[k - n] = dt;
		}
	}
	if (b->profile)
		memcpy(passes == 3 ? res->alone_s : res->op_s, each, (size_t)nsteps * sizeof *each);
	if (be->machine)
		be->machine(&t.job->ranks[t.job->first], &res->machine);
	rc = 0;
out:
	for (int r = 0; t.job && r < t.job->nranks; r++)
		t.job->ranks[r].step_seconds = NULL, t.job->ranks[r].collectives_at_once = false;
	free(each);
	close_run(&t);
	if (rc)
		rt_bench_free(res);
	return rc;
}
