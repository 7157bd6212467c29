/* runtime/train.c — the training loop.
 *
 * Each optimizer step: zero the gradients; for each of `accum` micro-batches, give every
 * dp rank its own batch of windows from the training shard (the tp ranks of a dp rank
 * see the same batch) and run the forward and backward steps; then the optimizer steps,
 * with the learning rate of a linear warm-up followed by a cosine decay to min_lr. The
 * loss gradient fed to the plan ("d_loss") is 1 / (accum * dp), so the summed gradients
 * are the mean over every sequence of the step.
 *
 * Everything that decides the numbers is a function of the seed and the step: the
 * batches (a splitmix64 stream whose state the checkpoint keeps), dropout (keyed by seed,
 * step, micro-batch and dp rank — not tp rank: every tp gives the same masks), and the
 * initial parameters (drawn whole and then sharded). A resumed run takes its seed from
 * the checkpoint. So tp 1, 2 and 4 give the same
 * losses, and a resumed run continues exactly where it stopped.
 *
 * A NaN or infinite loss stops the run with the step number; the last checkpoint, written
 * before the loss went bad, is left as it was. SIGINT finishes the step, saves, and stops.
 */
#include "backend.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) { (void)sig; interrupted = 1; }

typedef struct {
	RtJob *job;
	const MglPlan *p;
	const RtTrainOpts *o;
	RtShard train, val;
	int tokens, targets, d_loss, loss, norm;   /* value ids */
	int64_t B, T;
	uint64_t data_rng;          /* the training windows' stream */
	uint64_t seed;              /* --seed, or the checkpoint's */
	int64_t step, adam_t;
	int32_t *x, *y;             /* one dp rank's batch */
	FILE *log;
	char *err;
	size_t errlen;
} Train;

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

static int check_shard(Train *t, const RtShard *s)
{
	int64_t vocab = t->p->vocab ? t->p->vocab : INT64_MAX;
	if (s->ntokens < t->T + 1)
		return fail(t, "%s: %lld tokens are fewer than one sequence of %lld needs", s->path,
			    (long long)s->ntokens, (long long)t->T + 1);
	for (int64_t i = 0; i < s->ntokens; i++)
		if (s->tokens[i] >= vocab)
			return fail(t, "%s: token %d at position %lld is beyond the model's vocabulary (%lld)", s->path,
				    s->tokens[i], (long long)i, (long long)vocab);
	return 0;
}

/* Row b of a batch: tokens [at, at + T) and the next tokens as targets. */
static void window(Train *t, const RtShard *s, int64_t at, int64_t b)
{
	for (int64_t k = 0; k < t->T; k++) {
		t->x[b * t->T + k] = s->tokens[at + k];
		t->y[b * t->T + k] = s->tokens[at + k + 1];
	}
}

/* Gives every rank its batch: random windows for training, consecutive ones for
 * evaluation batch `eval` (>= 0). */
static void feed(Train *t, int64_t eval, float d_loss)
{
	for (int d = 0; d < t->job->dp; d++) {
		for (int64_t b = 0; b < t->B; b++) {
			if (eval >= 0) {
				int64_t n = (t->val.ntokens - 1) / t->T, k = ((eval * t->job->dp + d) * t->B + b) % n;
				window(t, &t->val, k * t->T, b);
			} else {
				window(t, &t->train, (int64_t)(next_rand(&t->data_rng) % (uint64_t)(t->train.ntokens - t->T)), b);
			}
		}
		for (int k = 0; k < t->job->tp; k++) {
			RtRank *r = &t->job->ranks[d * t->job->tp + k];
			t->job->be->write(r, t->tokens, t->x);
			t->job->be->write(r, t->targets, t->y);
			t->job->be->write(r, t->d_loss, &d_loss);
		}
	}
}

/* The mean loss over the dp ranks (tp rank 0 of each). */
static double loss_of(Train *t)
{
	double s = 0;
	for (int d = 0; d < t->job->dp; d++) {
		float l;
		t->job->be->read(&t->job->ranks[d * t->job->tp], t->loss, &l);
		s += l;
	}
	return s / t->job->dp;
}

/* The loss to beat: validation tokens predicted by the training tokens' frequencies
 * (add-one smoothed), in nats per token. */
static double unigram_loss(const Train *t)
{
	int64_t V = t->p->vocab ? t->p->vocab : 65536;
	double *count = calloc((size_t)V, sizeof *count), loss = 0;
	for (int64_t i = 0; i < t->train.ntokens; i++)
		count[t->train.tokens[i]] += 1;
	double total = (double)t->train.ntokens + (double)V;
	for (int64_t i = 0; i < t->val.ntokens; i++)
		loss -= log((count[t->val.tokens[i]] + 1) / total);
	free(count);
	return loss / (double)t->val.ntokens;
}

/* ---------------------------------------------------------------- parameters */

/* Parameter i drawn whole from the seed (so every tp starts alike), then sharded. */
static void init_param(Train *t, int i)
{
	const MglPlanParam *q = &t->p->params[i];
	int64_t n = mgl_param_numel(q);
	float *w = malloc((size_t)n * sizeof *w);
	uint64_t s = rt_mix64(t->seed ^ rt_mix64((uint64_t)i + 1));
	for (int64_t k = 0; k < n; k++) {
		if (q->init != MGL_INIT_NORMAL) {
			w[k] = q->init == MGL_INIT_ONES ? 1.0f : 0.0f;
			continue;
		}
		/* Box-Muller on two 53-bit uniforms */
		double u1 = ((double)(next_rand(&s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
		double u2 = (double)(next_rand(&s) >> 11) * (1.0 / 9007199254740992.0);
		w[k] = (float)(q->std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
	}
	rt_param_set(t->job, i, RT_PARAM_VALUE, w);
	memset(w, 0, (size_t)n * sizeof *w);
	rt_param_set(t->job, i, RT_PARAM_M, w);
	rt_param_set(t->job, i, RT_PARAM_V, w);
	free(w);
}

/* ---------------------------------------------------------------- checkpoints */

/* Writes path: for each of `which` (RT_PARAM_*), every parameter under prefix + its name. */
static int write_tensors(Train *t, const char *path, const int *which, const char *const *prefix, int nw)
{
	const MglPlan *p = t->p;
	int n = nw * p->nparams;
	RtTensor *ts = calloc((size_t)n, sizeof *ts);
	char **names = calloc((size_t)n, sizeof *names);
	for (int w = 0; w < nw; w++)
		for (int i = 0; i < p->nparams; i++) {
			const MglPlanParam *q = &p->params[i];
			RtTensor *x = &ts[w * p->nparams + i];
			size_t len = strlen(q->name) + strlen(prefix[w]) + 1;
			names[w * p->nparams + i] = malloc(len);
			snprintf(names[w * p->nparams + i], len, "%s%s", prefix[w], q->name);
			x->name = names[w * p->nparams + i];
			x->rank = q->rank;
			memcpy(x->shape, q->shape, sizeof x->shape);
			x->data = malloc((size_t)mgl_param_numel(q) * sizeof *x->data);
			rt_param_get(t->job, i, which[w], x->data);
		}
	const RtTrainOpts *o = t->o;
	RtCkptMeta m = {.format = RT_CKPT_FORMAT, .model = o->model_name, .source = o->model_source ? o->model_source : "",
			.preset = o->preset ? o->preset : "", .set = o->set ? o->set : "",
			.tokenizer = o->tokenizer ? o->tokenizer : "bytes", .has_state = true, .step = t->step,
			.adam_t = t->adam_t, .data_rng = t->data_rng, .seed = t->seed};
	char e[512];
	int rc = rt_ckpt_write_meta(path, ts, n, &m, e, sizeof e);
	for (int i = 0; i < n; i++) {
		free(ts[i].data);
		free(names[i]);
	}
	free(ts);
	free(names);
	return rc ? fail(t, "%s", e) : 0;
}

/* DIR/checkpoint.safetensors (malloc'd), once DIR is a directory (made if missing, not its
 * parent) where that file can be written; NULL with the error. Checked before the first
 * step too, so that a bad --save fails at once, not after the whole run. */
static char *prepare_dir(Train *t, const char *dir)
{
	struct stat st;
	char *path = malloc(strlen(dir) + 32);
	sprintf(path, "%s/checkpoint.safetensors.tmp", dir);
	int fd;
	if (mkdir(dir, 0777) && errno != EEXIST) {
		fail(t, "cannot create '%s': %s", dir, strerror(errno));
	} else if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
		fail(t, "cannot save in '%s': it is not a directory", dir);
	} else if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666)) < 0) {   /* the writer's temporary file */
		fail(t, "cannot write in '%s': %s", dir, strerror(errno));
	} else {
		close(fd);
		unlink(path);
		path[strlen(path) - 4] = 0;
		if (stat(path, &st) || S_ISREG(st.st_mode))
			return path;
		fail(t, "cannot save to '%s': it is not a regular file", path);
	}
	free(path);
	return NULL;
}

static int save(Train *t)
{
	char *path = prepare_dir(t, t->o->save_dir);
	if (!path)
		return -1;
	static const int which[] = {RT_PARAM_VALUE, RT_PARAM_M, RT_PARAM_V};
	static const char *const prefix[] = {"", "optimizer.m.", "optimizer.v."};
	int rc = write_tensors(t, path, which, prefix, 3);
	free(path);
	return rc;
}

/* --dump-first: the weights the first step starts from and the gradients it computes
 * (before the optimizer changes anything), for comparing with another implementation. */
static int dump_first(Train *t)
{
	const char *dir = t->o->dump_first;
	char *path = prepare_dir(t, dir);
	if (!path)
		return -1;
	static const char *const none[] = {""};
	int rc = write_tensors(t, path, (const int[]){RT_PARAM_VALUE}, none, 1);
	sprintf(path, "%s/grads.safetensors", dir);
	if (!rc)
		rc = write_tensors(t, path, (const int[]){RT_PARAM_GRAD}, none, 1);
	free(path);
	return rc;
}

static int resume(Train *t, const char *dir)
{
	char *path = malloc(strlen(dir) + 32);
	struct stat st;
	if (!stat(dir, &st) && S_ISDIR(st.st_mode))
		sprintf(path, "%s/checkpoint.safetensors", dir);
	else
		strcpy(path, dir);
	RtCkpt c;
	char e[512];
	int rc = rt_ckpt_read(path, &c, e, sizeof e);
	if (rc) {
		free(path);
		return fail(t, "%s", e);
	}
	const MglPlan *p = t->p;
	RtCkptMeta m;
	if (rt_ckpt_meta_read(&c, path, &m, e, sizeof e)) {
		rc = fail(t, "%s", e);
		goto out;
	}
	if (!m.has_state) {
		rc = fail(t, "%s has no training state (step, adam_t, data_rng, seed): not an mgl checkpoint?", path);
		goto out;
	}
	if (m.model && t->o->model_name && strcmp(m.model, t->o->model_name)) {
		rc = fail(t, "%s is a checkpoint of model '%s', not '%s'", path, m.model, t->o->model_name);
		goto out;
	}
	for (int i = 0; i < p->nparams && !rc; i++)
		for (int w = 0; w < 3 && !rc; w++) {
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
		}
	if (!rc) {
		t->step = m.step;
		t->adam_t = m.adam_t;
		t->data_rng = m.data_rng;
		t->seed = m.seed;
	}
	/* a checkpoint of a larger model holds tensors this one lacks: not the same model */
	if (!rc && c.n != 3 * p->nparams) {
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
	free(path);
	return rc;
}

/* ---------------------------------------------------------------- the loop */

static double lr_at(const RtTrainOpts *o, int64_t step)
{
	if (step < o->warmup)
		return o->lr * (double)(step + 1) / (double)o->warmup;
	double span = (double)(o->steps - o->warmup);
	double f = span > 0 ? (double)(step - o->warmup) / span : 1.0;
	if (f > 1)
		f = 1;
	return o->min_lr + 0.5 * (o->lr - o->min_lr) * (1 + cos(3.141592653589793 * f));
}

static RtRun run_params(const Train *t, int64_t micro, bool train)
{
	const RtTrainOpts *o = t->o;
	RtRun r = {.train = train, .lr = lr_at(o, t->step), .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps,
		   .weight_decay = o->weight_decay, .clip = o->clip, .adam_t = t->adam_t};
	r.key = rt_mix64(t->seed ^ rt_mix64((uint64_t)t->step * 4096 + (uint64_t)micro));
	r.last_micro = micro == o->accum - 1;
	return r;
}

static int evaluate(Train *t, double *out)
{
	double sum = 0;
	int64_t n = t->o->eval_batches > 0 ? t->o->eval_batches : 8;
	for (int64_t k = 0; k < n; k++) {
		feed(t, k, 0.0f);
		RtRun r = run_params(t, 0, false);
		if (rt_job_run(t->job, 1u << MGL_FWD, &r, t->err, t->errlen))
			return -1;
		sum += loss_of(t);
	}
	*out = sum / (double)n;
	return 0;
}

static void zero_grads(Train *t)
{
	for (int r = 0; r < t->job->nranks; r++)
		for (int i = 0; i < t->p->nparams; i++)
			t->job->be->zero(&t->job->ranks[r], t->p->params[i].grad);
}

static void progress(const Train *t, double loss, double tok_s, double left)
{
	if (!t->o->progress)
		return;
	fprintf(stderr, "\rstep %lld/%lld | loss %.4f | %.0f tok/s | %d:%02d left   ", (long long)t->step,
		(long long)t->o->steps, loss, tok_s, (int)(left / 60), (int)left % 60);
	fflush(stderr);
}

int rt_train(const MglPlan *plan, const RtBackend *be, const RtTrainOpts *o, RtTrainResult *res, char *err,
	     size_t errlen)
{
	Train t = {.p = plan, .o = o, .err = err, .errlen = errlen, .B = plan->batch, .T = plan->seq, .seed = o->seed};
	memset(res, 0, sizeof *res);
	res->val_loss = res->unigram_loss = NAN;
	t.tokens = rt_value(plan, "tokens");
	t.targets = rt_value(plan, "targets");
	t.d_loss = rt_value(plan, "d_loss");
	t.norm = rt_value(plan, plan->tp > 1 ? "grad_norm@R" : "grad_norm");
	int ninputs = 0;
	for (int v = 0; v < plan->nvalues; v++)
		ninputs += plan->values[v].role == MGL_V_INPUT;
	if (t.tokens < 0 || t.targets < 0 || t.d_loss < 0 || ninputs != 3)
		return fail(&t, "mgl train feeds language models whose inputs are tokens and targets (as "
			    "models/gpt2.mgl's); this model's inputs differ");
	t.loss = plan->loss;
	int rc = -1;
	double t0 = now();
	if (rt_shard_read(o->data, &t.train, err, errlen) || check_shard(&t, &t.train))
		goto out;
	if (o->val && (rt_shard_read(o->val, &t.val, err, errlen) || check_shard(&t, &t.val)))
		goto out;
	if (t.val.tokens)
		res->unigram_loss = unigram_loss(&t);
	if (!(t.job = rt_job_open(plan, be, err, errlen)))
		goto out;
	t.x = malloc((size_t)(t.B * t.T) * sizeof *t.x);
	t.y = malloc((size_t)(t.B * t.T) * sizeof *t.y);
	t.data_rng = rt_mix64(t.seed ^ 0x64617461ull);
	if (o->resume_dir) {
		if (resume(&t, o->resume_dir))
			goto out;
	} else {
		for (int i = 0; i < plan->nparams; i++)
			init_param(&t, i);
	}
	if (o->log_path && !(t.log = fopen(o->log_path, t.step ? "a" : "w"))) {
		fail(&t, "cannot write the log '%s': %s", o->log_path, strerror(errno));
		goto out;
	}
	if (t.step >= o->steps) {
		fail(&t, "the checkpoint is at step %lld already: give --steps beyond it to train more", (long long)t.step);
		goto out;
	}
	for (int k = 0; k < 2; k++) {   /* now, not after the training */
		const char *dir = k ? o->dump_first : o->save_dir;
		char *path = dir ? prepare_dir(&t, dir) : NULL;
		free(path);
		if (dir && !path)
			goto out;
	}
	interrupted = 0;
	struct sigaction sa = {0}, old;
	sa.sa_handler = on_sigint;
	sigaction(SIGINT, &sa, &old);

	double tstart = now();
	int64_t first = t.step;
	int64_t end = o->stop_at > 0 && o->stop_at < o->steps ? o->stop_at : o->steps;
	while (t.step < end) {
		double ts = now();
		zero_grads(&t);
		double loss = 0;
		for (int64_t m = 0; m < o->accum; m++) {
			feed(&t, -1, (float)(1.0 / (double)(o->accum * plan->dp)));
			RtRun r = run_params(&t, m, true);
			if (rt_job_run(t.job, 1u << MGL_FWD | 1u << MGL_BWD, &r, err, errlen))
				goto restore;
			loss += loss_of(&t) / (double)o->accum;
		}
		if (o->dump_first && t.step == first && dump_first(&t))
			goto restore;
		if (!isfinite(loss)) {
			fail(&t, "the loss is %s at step %lld; stopping%s%s", isnan(loss) ? "NaN" : "infinite",
			     (long long)t.step + 1, o->save_dir ? " (the last checkpoint in " : "",
			     o->save_dir ? o->save_dir : "");
			if (o->save_dir)
				strncat(err, " is from before it)", errlen - strlen(err) - 1);
			goto restore;
		}
		t.adam_t++;
		RtRun r = run_params(&t, o->accum - 1, true);
		if (rt_job_run(t.job, 1u << MGL_OPT, &r, err, errlen))
			goto restore;
		float norm = 0;
		if (t.norm >= 0)
			be->read(&t.job->ranks[0], t.norm, &norm);
		t.step++;
		if (t.step == first + 1)
			res->first_loss = loss;
		res->last_loss = loss;
		double dt = now() - ts, tok_s = (double)(t.B * t.T * o->accum * plan->dp) / dt;
		double val = NAN;
		bool last = t.step == end || interrupted;
		if (t.val.tokens && ((o->eval_every > 0 && t.step % o->eval_every == 0) || last)) {
			if (evaluate(&t, &val))
				goto restore;
			res->val_loss = val;
		}
		if (t.log) {
			fprintf(t.log, "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6g, \"grad_norm\": %.6g, \"tokens_per_s\": %.1f",
				(long long)t.step, loss, r.lr, sqrt((double)norm), tok_s);
			if (!isnan(val))
				fprintf(t.log, ", \"val_loss\": %.6f, \"val_ppl\": %.4f", val, exp(val));
			fprintf(t.log, "}\n");
			fflush(t.log);
		}
		double left = (now() - tstart) / (double)(t.step - first) * (double)(end - t.step);
		progress(&t, loss, tok_s, left);
		if (!isnan(val))   /* on a terminal or not: the loss falling is the news */
			fprintf(stderr, "%sstep %lld/%lld: loss %.4f, validation loss %.4f (perplexity %.2f)%s\n",
				o->progress ? "\r" : "", (long long)t.step, (long long)end, loss, val, exp(val),
				o->progress ? "          " : "");
		if (o->save_dir && ((o->save_every > 0 && t.step % o->save_every == 0) || last))
			if (save(&t))
				goto restore;
		if (interrupted) {
			res->interrupted = true;
			break;
		}
	}
	if (o->progress)
		fprintf(stderr, "\n");
	res->steps_done = t.step;
	res->seconds = now() - t0;
	rc = 0;
restore:
	sigaction(SIGINT, &old, NULL);
out:
	if (t.log)
		fclose(t.log);
	rt_job_close(t.job);
	rt_shard_free(&t.train);
	rt_shard_free(&t.val);
	free(t.x);
	free(t.y);
	return rc;
}
