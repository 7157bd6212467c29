/* cli/train.c — `mgl train` and `mgl sample`: options and defaults, then the runtime.
 *
 * Training compiles the model for the backend (f32 activations on the cpu, bf16 on cuda)
 * and hands the plan to rt_train.
 * A checkpoint carries the model's source, preset and --set with it, so `mgl sample`
 * needs nothing but the checkpoint: it compiles the same model for one sequence and
 * generates a token at a time from the logits of the last position.
 */
#include "cli.h"
#include "../runtime/backend.h"
#ifdef MGL_CUDA
#include "../runtime/cuda/cuda_backend.h"
#endif

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Why a cpu-only mgl is one: make builds the cuda backend wherever it finds the toolkit. */
#define NO_CUDA "without CUDA (no toolkit at CUDA_HOME when it was built, or make CUDA=0)"

const RtBackend *cli_backend(const Args *a)
{
	bool want_cuda = a->backend && !strcmp(a->backend, "cuda");
	if (a->backend && !want_cuda && strcmp(a->backend, "cpu")) {
		fprintf(stderr, "mgl: error: unknown backend '%s' (cpu or cuda)\n", a->backend);
		return NULL;
	}
#ifdef MGL_CUDA
	if (want_cuda || !a->backend) {
		if (rt_cuda_devices() > 0)
			return &rt_cuda_backend;
		if (want_cuda) {
			fprintf(stderr, "mgl: error: --backend cuda, but no GPU can be used here (no driver or no device)\n");
			return NULL;
		}
	}
#else
	if (want_cuda) {
		fprintf(stderr, "mgl: error: this mgl was built %s; use --backend cpu\n", NO_CUDA);
		return NULL;
	}
#endif
	return &rt_cpu_backend;
}

static double or(double v, double dflt) { return isnan(v) ? dflt : v; }

MglTarget cli_target(const Args *a, const RtBackend *be)
{
	/* the cpu computes in f32; GPUs store activations in bf16 (and accumulate in f32), and
	 * linears' weight gradients in bf16 where a step is one micro-batch (compiler/adamw.c:
	 * not in an f32 plan, nor at dp > 1, nor under MGL_F32_GRADS) */
	bool gpu = be != &rt_cpu_backend;
	return (MglTarget){.tp = a->tp ? (int)a->tp : 1, .dp = a->dp ? (int)a->dp : 1, .sp = a->sp,
			   .zero = a->zero, .recompute = a->recompute, .batch = a->batch ? a->batch : 8, .seq = a->seq,
			   .act_dtype = gpu ? MGL_BF16 : MGL_F32,
			   .bf16_grads = a->accum <= 1};
}

int cli_interleave_check(const Args *a, const char *cmd)
{
	int64_t accum = a->accum ? a->accum : 1;
	if (!a->interleave || accum % 2 == 0)
		return 0;
	char n[32];
	snprintf(n, sizeof n, "%lld", (long long)accum);
	return usage_error(cmd, "--interleave runs two micro-batches at a time: --accum must be even, not %s", n);
}

int cli_link(const Args *a, const char *cmd, double *gbs, double *us)
{
	*gbs = isnan(a->link_gbs) ? MGL_LINK_GBS : a->link_gbs;
	*us = isnan(a->link_us) ? MGL_LINK_US : a->link_us;
	return *gbs > 0 ? 0 : usage_error(cmd, "--link-gbs is the link's rate: more than 0, not %s", "0");
}

void cli_optimizer(const Args *a, RtTrainOpts *o)
{
	o->lr = a->lr;
	o->min_lr = a->min_lr;
	o->accum = a->accum ? a->accum : 1;
	o->interleave = a->interleave;
	o->weight_decay = or(a->weight_decay, 0.1);
	o->beta1 = 0.9;
	o->beta2 = 0.95;
	o->eps = 1e-8;
	o->clip = or(a->clip, 1.0);
	o->seed = a->seed ? (uint64_t)a->seed : 1337;
}

/* (cli.h) The absolute path lets sampling or resuming from anywhere find the files; they
 * are read now, so a tokenizer that cannot be read is refused before training starts. */
const char *cli_tokenizer_record(MglArena *a, const char *gpt2, const char *vocab, char *sha, bool *failed)
{
	char err[1024];
	const char *kind = gpt2 ? "gpt2" : "wordpiece", *path = gpt2 ? gpt2 : vocab;
	*failed = false;
	if (!path)
		return NULL;
	RtTokenizer *tok = gpt2 ? cli_gpt2(path, NULL) : rt_tok_wordpiece(path, err, sizeof err);
	if (!tok) {
		if (!gpt2)
			fprintf(stderr, "mgl: error: %s\n", err);
		*failed = true;
		return NULL;
	}
	snprintf(sha, 130, "%s", rt_tok_digest(tok));
	rt_tok_free(tok);
	char cwd[4096];
	if (path[0] == '/' || !getcwd(cwd, sizeof cwd))
		return mgl_fmt(a, "%s:%s", kind, path);
	return mgl_fmt(a, "%s:%s/%s", kind, cwd, path);
}

/* The model source, preset and set the checkpoint at dir (or its checkpoint.safetensors)
 * records, into rec[3] (malloc'd; preset and set NULL where empty). */
static int init_model(const char *dir, char **rec)
{
	char *path = NULL, err[1024];
	RtCkpt c;
	RtCkptMeta m;
	int rc = rt_ckpt_open(dir, &c, &path, err, sizeof err) ? -1 : rt_ckpt_meta_read(&c, path, &m, err, sizeof err);
	if (!rc && (!m.source || !*m.source)) {
		snprintf(err, sizeof err, "%.900s holds no model source: give the model file (mgl train FILE --init DIR)", path);
		rc = -1;
	}
	if (rc)
		fprintf(stderr, "mgl: error: %s\n", err);
	else
		for (int k = 0; k < 3 && !rc; k++) {
			const char *v = k == 0 ? m.source : k == 1 ? m.preset : m.set;
			if (v && *v && !(rec[k] = strdup(v))) {
				fprintf(stderr, "mgl: error: out of host memory: the model %s %.900s records (%s bytes)\n",
					k == 0 ? "source" : k == 1 ? "preset" : "set", path,
					mgl_commas((int64_t)strlen(v) + 1, (char[32]){0}));
				rc = -1;
			}
		}
	for (int k = 0; k < 3 && rc; k++)
		free(rec[k]), rec[k] = NULL;
	rt_ckpt_free(&c);
	free(path);
	return rc;
}

int cmd_train(Args *a)
{
	const RtBackend *be = cli_backend(a);
	if (!be)
		return 2;
	if (!a->data)
		return usage_error("train", "--data TRAIN.bin is required%s", "");
	if (cli_interleave_check(a, "train"))
		return 2;
	if (a->init && a->resume)
		return usage_error("train", "--init DIR starts afresh from a checkpoint's weights; --resume %s continues its "
				   "run: give one", a->resume);
	/* --init without a model file: the checkpoint's model, preset and set, --set after them */
	char *rec[3] = {0};
	const char *file = a->file ? a->file : a->init, *preset = a->preset, *set = a->set;
	if (!a->file && init_model(a->init, rec))
		return 1;
	preset = preset ? preset : rec[1];
	MglCtx c = {0};
	jmp_buf jb;
	c.fail = &jb;
	volatile int status = 0;
	char *source = NULL;
	if (!setjmp(jb)) {
		MglTarget t = cli_target(a, be);
		if (a->gpus && a->gpus != (int64_t)t.tp * t.dp) {
			fprintf(stderr, "mgl: error: --gpus %lld, but the job is tp %d x dp %d = %d rank%s, one GPU each\n",
				(long long)a->gpus, t.tp, t.dp, t.tp * t.dp, t.tp * t.dp == 1 ? "" : "s");
			status = 2;
			goto done;
		}
		MglGraph *g;
		if (rec[2])
			set = set ? mgl_fmt(&c.arena, "%s,%s", rec[2], set) : rec[2];
		MglPlan *p = cli_plan(&c, file, rec[0], preset, set, &t, &g);
		size_t len;
		char err[1024], sha[130] = "";
		source = a->file ? mgl_read_whole(a->file, MGL_MAX_FILE_BYTES, "model files", &len, err, sizeof err)
				 : strdup(rec[0]);
		if (!source) {   /* read once already (cli_plan): it changed, or memory ran out */
			if (!a->file)
				snprintf(err, sizeof err, "out of host memory: the model's source (%s bytes)",
					 mgl_commas((int64_t)strlen(rec[0]) + 1, (char[32]){0}));
			fprintf(stderr, "mgl: error: %s\n", err);
			status = 1;
			goto done;
		}
		if (a->gpt2 && a->vocab) {
			status = usage_error("train", "--gpt2 (GPT-2's BPE) and --vocab (BERT's WordPiece) exclude each other%s", "");
			goto done;
		}
		bool failed;
		const char *tokenizer = cli_tokenizer_record(&c.arena, a->gpt2, a->vocab, sha, &failed);
		if (failed) {
			status = 1;
			goto done;
		}
		MglExplain cost;
		mgl_explain(&c.arena, p, &cost);
		/* the schedule's options left out (0, NAN) are the checkpoint's when resuming */
		RtTrainOpts o = {
			.data = a->data, .val = a->val, .steps = a->steps, .warmup = a->warmup,
			.eval_every = a->eval_every, .eval_batches = a->eval_batches ? a->eval_batches : 8,
			.save_every = a->save_every, .save_shards = (int)a->save_shards, .save_dir = a->save,
			.resume_dir = a->resume, .init_dir = a->init,
			.log_path = a->log,
			.tensorboard = a->tensorboard,
			.dump_first = a->dump_first, .model_name = g->model, .model_source = source, .preset = preset,
			.set = set, .tokenizer = tokenizer, .tokenizer_sha256 = tokenizer ? sha : NULL, .msgs = stderr,
			.progress = isatty(2), .log_every = a->log_every, .nparams = mgl_param_count(g),
			.flops = cost.flops_fwd + cost.flops_bwd,
		};
		cli_optimizer(a, &o);
		RtTrainResult r;
		/* launched as processes (mpirun, srun, torchrun): meet the others first; each says
		 * its errors, rank 0 all the rest */
		const RtProcs *pr = rt_procs();
		if (rt_procs_start(err, sizeof err) || rt_train(p, be, &o, &r, err, sizeof err)) {
			if (pr->size > 1)
				fprintf(stderr, "mgl: error: rank %d: %s\n", pr->rank, err);
			else
				fprintf(stderr, "mgl: error: %s\n", err);
			status = 1;
		} else if (pr->rank > 0) {
			status = r.interrupted ? 130 : 0;
		} else {
			char b1[32], b2[32], b3[32];
			printf("trained %s step%s", mgl_commas(r.steps_done, b1), r.steps_done == 1 ? "" : "s");
			if (r.last_step != r.steps_done)   /* resumed: which steps */
				printf(" (steps %s to %s)", mgl_commas(r.last_step - r.steps_done + 1, b2), mgl_commas(r.last_step, b3));
			printf(" in %.1f s: loss %.4f -> %.4f", r.seconds, r.first_loss, r.last_loss);
			if (!isnan(r.first_mlm))
				printf(" (mlm %.4f -> %.4f, sop accuracy %.1f%% -> %.1f%%)", r.first_mlm, r.last_mlm,
				       100 * r.first_sop_acc, 100 * r.last_sop_acc);
			if (!isnan(r.val_mlm))
				printf(", validation loss %.4f (mlm %.4f, sop accuracy %.1f%%)", r.val_loss, r.val_mlm, 100 * r.val_sop_acc);
			else if (!isnan(r.val_loss))
				printf(", validation loss %.4f (perplexity %.2f; token frequencies alone: %.4f)", r.val_loss,
				       exp(r.val_loss), r.unigram_loss);
			if (a->save)
				printf("; saved %s", a->save);
			printf("\n");
			if (r.interrupted) {
				fprintf(stderr, "mgl: interrupted after step %s%s\n", mgl_commas(r.last_step, b1),
					a->save ? " (saved)" : "");
				status = 130;
			}
		}
	} else {
		status = c.status ? c.status : 1;
	}
	if (status == 0 || status == 130)
		rt_procs_end();
	else
		rt_procs_abort();   /* not MPI_Finalize: it would wait for processes that wait for this one */
done:
	free(source);
	for (int k = 0; k < 3; k++)
		free(rec[k]);
	mgl_arena_free(&c.arena);
	return status;
}

/* ---------------------------------------------------------------- mgl kernels */

/* Compiles every kernel with NVRTC for an architecture: needs no GPU, so CI catches a
 * kernel that does not build. */
int cmd_kernels(Args *a)
{
#ifdef MGL_CUDA
	const char *arch = a->arch ? a->arch : "sm_90";
	int major = 0, minor = 0;
	if (sscanf(arch, "sm_%1d%1d", &major, &minor) != 2)
		return usage_error("kernels", "--arch takes sm_XY (sm_90 for H100), not '%s'", arch);
	char err[4096];
	size_t n = 0;
	int nchains = 0;
	MglArena ar = {0};
	MglPlan *p = NULL;
	void *cubin = rt_cuda_compile(NULL, major, minor, &n, err, sizeof err);
	if (cubin)
		printf("kernels/ops.cu: compiled for %s by NVRTC (%s bytes of cubin)\n", arch, mgl_commas((int64_t)n, (char[32]){0}));
	if (cubin && a->file) {   /* a plan: its chains too */
		free(cubin);
		cubin = NULL;
		size_t len = 0;
		char *text = mgl_read_whole(a->file, MGL_PLAN_MAX_BYTES, "plans", &len, err, sizeof err);
		if (text && (p = mgl_plan_read(&ar, text, len, a->file, err, sizeof err)))
			cubin = rt_cuda_compile_plan(p, major, minor, &n, &nchains, err, sizeof err);
		free(text);
		if (cubin)
			printf("the %s generated chain%s of %s: compiled for %s by NVRTC (%s bytes of cubin)\n",
			       mgl_commas(nchains, (char[32]){0}), nchains == 1 ? "" : "s", a->file, arch,
			       mgl_commas((int64_t)n, (char[32]){0}));
	}
	mgl_arena_free(&ar);
	if (!cubin) {
		fprintf(stderr, "mgl: error: %s\n", err);
		return 1;
	}
	free(cubin);
	return 0;
#else
	(void)a;
	fprintf(stderr, "mgl: error: this mgl was built %s\n", NO_CUDA);
	return 1;
#endif
}

/* ---------------------------------------------------------------- mgl sample */

/* The next token from logits[V]: softmax at a temperature, over the top k (0: all). */
static int pick(const float *logits, int V, double temperature, int64_t top_k, uint64_t *rng)
{
	if (temperature <= 0) {   /* greedy */
		int best = 0;
		for (int i = 1; i < V; i++)
			best = logits[i] > logits[best] ? i : best;
		return best;
	}
	float cut = -INFINITY;
	if (top_k > 0 && top_k < V) {
		float *s = mgl_xmalloc((size_t)V * sizeof *s, "the top-k logits");
		memcpy(s, logits, (size_t)V * sizeof *s);
		for (int64_t k = 0; k < top_k; k++) {   /* k-th largest by selection: V and k are small */
			int best = -1;
			for (int i = 0; i < V; i++)
				if (s[i] != -INFINITY && (best < 0 || s[i] > s[best]))
					best = i;
			cut = s[best];
			s[best] = -INFINITY;
		}
		free(s);
	}
	double mx = -INFINITY, sum = 0;
	for (int i = 0; i < V; i++)
		mx = logits[i] >= cut && logits[i] > mx ? logits[i] : mx;
	for (int i = 0; i < V; i++)
		sum += logits[i] >= cut ? exp((logits[i] - mx) / temperature) : 0;
	*rng += 0x9e3779b97f4a7c15ull;
	double u = (double)(rt_mix64(*rng) >> 11) * (1.0 / 9007199254740992.0) * sum;
	for (int i = 0; i < V; i++) {
		if (logits[i] < cut)
			continue;
		u -= exp((logits[i] - mx) / temperature);
		if (u <= 0)
			return i;
	}
	return V - 1;
}

int cli_ckpt_open(const Args *a, char *path, size_t pathlen, RtCkpt *ck, RtCkptMeta *m, RtTokenizer **tok)
{
	char err[1024], *used;
	*tok = NULL;
	if (rt_ckpt_open(a->file, ck, &used, err, sizeof err)) {
		fprintf(stderr, "mgl: error: %s\n", err);
		return 1;
	}
	snprintf(path, pathlen, "%s", used);
	free(used);
	if (rt_ckpt_meta_read(ck, path, m, err, sizeof err))
		goto refuse;
	if (!m->source || !*m->source) {
		snprintf(err, sizeof err, "%.900s holds no model source: was it written by mgl train?", path);
		goto refuse;
	}
	if (m->tokenizer && !strncmp(m->tokenizer, "gpt2", 4)) {
		if (!(*tok = cli_ckpt_gpt2(a->gpt2, m->tokenizer, m->tokenizer_sha256, path, NULL))) {   /* it said why */
			rt_ckpt_free(ck);
			return 1;
		}
	} else if (!(*tok = rt_tok_bytes())) {
		snprintf(err, sizeof err, "out of memory");
		goto refuse;
	}
	return 0;
refuse:
	fprintf(stderr, "mgl: error: %s\n", err);
	rt_ckpt_free(ck);
	return 1;
}

int cli_ckpt_params(RtJob *job, const RtCkpt *ck, const char *path, char *err, size_t errlen)
{
	const MglPlan *p = job->plan;
	for (int i = 0; i < p->nparams; i++) {
		const RtTensor *w = rt_ckpt_find(ck, p->params[i].name);
		bool ok = w && w->rank == p->params[i].rank;
		for (int k = 0; ok && k < w->rank; k++)
			ok = w->shape[k] == p->params[i].shape[k];
		if (!ok) {
			snprintf(err, errlen, "%.600s does not match its own model: tensor '%.300s' is missing or misshapen", path,
				 p->params[i].name);
			return -1;
		}
		int64_t n = mgl_param_numel(&p->params[i]);
		for (int64_t e = 0; e < n; e++)
			if (!isfinite(w->data[e])) {
				snprintf(err, errlen, "%.600s holds non-finite values: element %s of '%.300s' is %s", path,
					 mgl_commas(e, (char[32]){0}), p->params[i].name, isnan(w->data[e]) ? "NaN" : "infinite");
				return -1;
			}
		rt_param_set(job, i, RT_PARAM_VALUE, w->data);
	}
	return 0;
}

int cmd_sample(Args *a)
{
	char err[1024], path[4096];
	RtCkpt ck;
	RtCkptMeta m;
	RtTokenizer *tok0;
	if (cli_ckpt_open(a, path, sizeof path, &ck, &m, &tok0))
		return 1;
	RtTokenizer *volatile tok = tok0;
	MglCtx c = {0};
	jmp_buf jb;
	c.fail = &jb;
	volatile int status = 0;
	RtJob *job = NULL;
	int32_t *ids = NULL, *x = NULL;
	float *logits = NULL;
	if (!setjmp(jb)) {
		MglTarget t = {.tp = 1, .dp = 1, .batch = 1, .seq = a->seq, .act_dtype = MGL_F32};
		MglGraph *g;
		MglPlan *p = cli_plan(&c, path, m.source, m.preset, m.set, &t, &g);
		if (!(job = rt_job_open(p, &rt_cpu_backend, err, sizeof err)) || cli_ckpt_params(job, &ck, path, err, sizeof err))
			goto fail;
		int logit = p->logits, tokens = rt_value(p, "tokens"), targets = rt_value(p, "targets");
		if (logit < 0 || tokens < 0 || targets < 0) {
			snprintf(err, sizeof err, "mgl sample generates from language models with inputs tokens and targets");
			goto fail;
		}
		/* V columns of logits, the first `vocab` of them the model's true vocabulary; only
		 * ids the tokenizer has are drawn (a padded vocabulary has more) */
		int64_t T = p->seq, V = p->values[logit].shape[p->values[logit].rank - 1], vocab = p->vocab ? p->vocab : V;
		int64_t drawn = vocab < rt_tok_vocab(tok) ? vocab : rt_tok_vocab(tok);
		size_t n = 0, cap = 0;
		const char *prompt = a->prompt ? a->prompt : "";
		if (rt_tok_encode(tok, prompt, strlen(prompt), &ids, &n, &cap)) {
			snprintf(err, sizeof err, "out of memory encoding the prompt");
			goto fail;
		}
		if (!n) {   /* nothing to continue: start a document */
			int eot = rt_tok_eot(tok);
			if (cap < 1 && !(ids = realloc(ids, (cap = 16) * sizeof *ids))) {
				snprintf(err, sizeof err, "out of host memory: the prompt's tokens (%s bytes)",
					 mgl_commas((int64_t)(cap * sizeof *ids), (char[32]){0}));
				goto fail;
			}
			ids[n++] = eot >= 0 ? eot : '\n';
		}
		for (size_t i = 0; i < n; i++)
			if (ids[i] >= drawn) {
				snprintf(err, sizeof err, "the prompt's token %s (id %d) is beyond the model's vocabulary of %s",
					 mgl_commas((int64_t)i + 1, (char[32]){0}), ids[i], mgl_commas(drawn, (char[32]){0}));
				goto fail;
			}
		x = calloc((size_t)T, sizeof *x);
		logits = malloc((size_t)(T * V) * sizeof *logits);
		if (!x || !logits) {
			snprintf(err, sizeof err, "out of host memory: the model's tokens and logits (%s bytes)",
				 mgl_commas(T * (int64_t)sizeof *x + T * V * (int64_t)sizeof *logits, (char[32]){0}));
			goto fail;
		}
		uint64_t rng = a->seed ? (uint64_t)a->seed : 1337;
		int64_t want = a->tokens ? a->tokens : 200;
		fputs(prompt, stdout);
		RtRun run = {.train = false};   /* the forward alone: it writes no gradient (RtRun.first_micro) */
		for (int64_t k = 0; k < want; k++) {
			int64_t have = (int64_t)n < T ? (int64_t)n : T, from = (int64_t)n - have;
			memset(x, 0, (size_t)T * sizeof *x);
			for (int64_t i = 0; i < have; i++)
				x[i] = ids[from + i];
			job->be->write(&job->ranks[0], tokens, x);
			job->be->write(&job->ranks[0], targets, x);
			if (rt_job_run(job, 1u << MGL_FWD, &run, err, sizeof err))
				goto fail;
			job->be->read(&job->ranks[0], logit, logits);
			const float *last = logits + (have - 1) * V;
			for (int64_t v = 0; v < vocab; v++)
				if (!isfinite(last[v])) {
					snprintf(err, sizeof err, "%.900s holds non-finite values: the model's logits are %s "
						 "(its weights overflow)", path, isnan(last[v]) ? "NaN" : "infinite");
					goto fail;
				}
			int next = pick(last, (int)drawn, or(a->temperature, 1.0), a->top_k ? a->top_k : 0, &rng);
			int32_t *more = n < cap ? ids : realloc(ids, (cap = 2 * cap + 16) * sizeof *ids);
			if (!more) {
				snprintf(err, sizeof err, "out of host memory: the sample's tokens (%s bytes)",
					 mgl_commas((int64_t)(cap * sizeof *ids), (char[32]){0}));
				goto fail;
			}
			ids = more;
			ids[n++] = next;
			size_t len;
			char *text = rt_tok_decode(tok, &ids[n - 1], 1, &len);
			if (!text) {   /* next < drawn: only out of memory */
				snprintf(err, sizeof err, "cannot decode token %d: out of memory", next);
				goto fail;
			}
			fwrite(text, 1, len, stdout);
			fflush(stdout);
			free(text);
		}
		printf("\n");
	} else {
		status = c.status ? c.status : 1;
	}
	goto done;
fail:
	fprintf(stderr, "mgl: error: %s\n", err);
	status = 1;
done:
	rt_job_close(job);
	free(ids);
	free(x);
	free(logits);
	rt_tok_free(tok);
	rt_ckpt_free(&ck);
	mgl_arena_free(&c.arena);
	return status;
}
