/* cli/export.c — `mgl export`: a checkpoint of models/gpt2.mgl as Hugging Face's GPT-2, so
 * that transformers' GPT2LMHeadModel.from_pretrained(DIR) loads it.
 *
 * mgl keeps linear weights as [out, in] and q, k, v apart; GPT-2's Conv1D keeps them as
 * [in, out] and fuses q, k, v into one c_attn. runtime/hf.c's table maps one to the other
 * (and back, for mgl import); tensors it does not know (optimizer moments) are left out. A directory gets the tensors
 * as model.safetensors, the GPT2Config that describes them as config.json (the sizes from
 * the tensors, the heads, layer norm epsilon and dropout from the model's source, which the
 * checkpoint carries), and GPT-2's tokenizer files when the model reads GPT-2's tokens. An
 * output ending in .safetensors gets the tensors alone (what tests/gpu_check.sh compares
 * with PyTorch, gradients included).
 */
#include "cli.h"
#include "../runtime/runtime.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- a from_pretrained directory */

/* What config.json says beyond the tensors' sizes: from the model's source, compiled. */
typedef struct {
	int64_t heads;
	double eps, p_drop;
} Hyper;

/* The first attention's heads, layer norm's epsilon and dropout's p of plan p (of the
 * model at path): 0, or 1 after printing why. */
static int hyper_scan(const char *path, const MglPlan *p, Hyper *h)
{
	*h = (Hyper){0, -1, -1};
	for (int i = 0; i < p->nsteps; i++) {
		const MglStep *s = &p->steps[i];
		if (s->op == MGL_OP_ATTENTION && !h->heads)
			h->heads = s->attr.heads;
		if (s->op == MGL_OP_LAYERNORM && h->eps < 0)
			h->eps = s->attr.eps;
		if (s->op == MGL_OP_DROPOUT && h->p_drop < 0)
			h->p_drop = s->attr.p;
	}
	if (h->p_drop < 0)
		h->p_drop = 0;
	if (h->heads && h->eps >= 0)
		return 0;
	fprintf(stderr, "mgl: error: %s: the model has no attention or no layer norm: not models/gpt2.mgl\n", path);
	return 1;
}

static int hyper_of(const char *path, const RtCkpt *c, Hyper *h)
{
	const char *source = rt_ckpt_meta(c, "source");
	if (!source || !*source) {
		fprintf(stderr, "mgl: error: %s holds no model source, so its heads are unknown: was it written by mgl train?\n"
				"  hint: -o FILE.safetensors writes the tensors alone\n", path);
		return 1;
	}
	MglCtx ctx = {0};
	jmp_buf jb;
	ctx.fail = &jb;
	volatile int status = 1;
	if (!setjmp(jb)) {
		MglTarget t = {.tp = 1, .dp = 1, .batch = 1, .act_dtype = MGL_F32};
		MglGraph *g;
		MglPlan *p = cli_plan(&ctx, path, source, rt_ckpt_meta(c, "preset"), rt_ckpt_meta(c, "set"), &t, &g);
		status = hyper_scan(path, p, h);
	}
	mgl_arena_free(&ctx.arena);
	return status;
}

static const int64_t *shape_of(const RtTensors *o, const char *name)
{
	for (int i = 0; i < o->n; i++)
		if (!strcmp(o->t[i].name, name))
			return o->t[i].shape;
	return NULL;
}

/* config.json: GPT2Config's fields (transformers' names and meanings). eot: the
 * tokenizer's <|endoftext|>, or -1 (a byte-level model has none). */
static int write_config(const char *path, const RtTensors *o, const Hyper *h, int eot)
{
	FILE *f = cli_out_open(path);
	if (!f)
		return 1;
	const int64_t *wte = shape_of(o, "transformer.wte.weight"), *wpe = shape_of(o, "transformer.wpe.weight"),
		      *fc = shape_of(o, "transformer.h.0.mlp.c_fc.weight");
	char eot_s[16] = "null";
	if (eot >= 0)
		snprintf(eot_s, sizeof eot_s, "%d", eot);
	fprintf(f, "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n");
	fprintf(f, "  \"vocab_size\": %lld,\n  \"n_positions\": %lld,\n  \"n_ctx\": %lld,\n  \"n_embd\": %lld,\n",
		(long long)wte[0], (long long)(wpe ? wpe[0] : 0), (long long)(wpe ? wpe[0] : 0), (long long)wte[1]);
	fprintf(f, "  \"n_layer\": %d,\n  \"n_head\": %lld,\n  \"n_inner\": %lld,\n", o->layers, (long long)h->heads,
		(long long)fc[1]);
	fprintf(f, "  \"activation_function\": \"gelu_new\",\n  \"layer_norm_epsilon\": %.9g,\n", h->eps);
	fprintf(f, "  \"resid_pdrop\": %.9g,\n  \"embd_pdrop\": %.9g,\n  \"attn_pdrop\": 0,\n", h->p_drop, h->p_drop);
	fprintf(f, "  \"initializer_range\": 0.02,\n  \"scale_attn_weights\": true,\n  \"tie_word_embeddings\": true,\n");
	fprintf(f, "  \"bos_token_id\": %s,\n  \"eos_token_id\": %s,\n  \"use_cache\": true,\n", eot_s, eot_s);
	fprintf(f, "  \"torch_dtype\": \"float32\"\n}\n");
	return cli_out_close(f, path);
}

/* Copies file src to dst (through dst.tmp and a rename). */
static int copy_file(const char *src, const char *dst)
{
	char err[512];
	size_t len;
	char *text = mgl_read_whole(src, RT_TOK_MAX_FILE_BYTES, "tokenizer files", &len, err, sizeof err);
	if (!text) {
		fprintf(stderr, "mgl: error: %s\n", err);
		return 1;
	}
	FILE *f = cli_out_open(dst);
	int rc = 1;
	if (f) {
		fwrite(text, 1, len, f);
		rc = cli_out_close(f, dst);
	}
	free(text);
	return rc;
}

/* The GPT-2 tokenizer's files as transformers names them: encoder.json is vocab.json,
 * vocab.bpe is merges.txt (the same "#version: 0.2" format), and tokenizer_config.json. */
static int write_tokenizer(MglArena *ar, const char *from, const char *dir, int64_t n_positions)
{
	static const char *const files[][2] = {{"encoder.json", "vocab.json"}, {"vocab.bpe", "merges.txt"}};
	for (int i = 0; i < 2; i++)
		if (copy_file(mgl_fmt(ar, "%s/%s", from, files[i][0]), mgl_fmt(ar, "%s/%s", dir, files[i][1])))
			return 1;
	const char *path = mgl_fmt(ar, "%s/tokenizer_config.json", dir);
	FILE *f = cli_out_open(path);
	if (!f)
		return 1;
	fprintf(f, "{\n  \"tokenizer_class\": \"GPT2Tokenizer\",\n  \"model_max_length\": %lld,\n", (long long)n_positions);
	fprintf(f, "  \"bos_token\": \"<|endoftext|>\",\n  \"eos_token\": \"<|endoftext|>\",\n"
		   "  \"unk_token\": \"<|endoftext|>\",\n  \"add_prefix_space\": false\n}\n");
	return cli_out_close(f, path);
}

/* The GPT-2 tokenizer's directory, from --gpt2 or the checkpoint ("gpt2:DIR"), checked by
 * loading it (and by the files' SHA-256 the checkpoint records); NULL for a byte-level
 * model (*status 0) or after an error (*status 1). */
static const char *tokenizer_dir(const Args *a, const char *path, const RtCkpt *c, int64_t vocab, int *eot, int *status)
{
	const char *tok = rt_ckpt_meta(c, "tokenizer"), *dir = NULL;
	*eot = -1;
	*status = 0;
	if (!a->gpt2 && (!tok || strncmp(tok, "gpt2", 4)))
		return NULL;
	RtTokenizer *t = cli_ckpt_gpt2(a->gpt2, tok, rt_ckpt_meta(c, "tokenizer_sha256"), path, &dir);
	if (!t) {
		*status = 1;
		return NULL;
	}
	if (rt_tok_vocab(t) != vocab) {
		fprintf(stderr, "mgl: error: GPT-2's tokenizer in '%s' has %s tokens and the model %s\n", dir,
			mgl_commas(rt_tok_vocab(t), (char[32]){0}), mgl_commas(vocab, (char[32]){0}));
		rt_tok_free(t);
		*status = 1;
		return NULL;
	}
	*eot = rt_tok_eot(t);
	rt_tok_free(t);
	return dir;
}

/* The tensors as one safetensors file at path: 0, or 1 after printing why. */
static int write_model(const char *path, const RtTensors *o)
{
	const char *keys[] = {"format"}, *vals[] = {"pt"};   /* what transformers' loader asks of a file */
	char err[1024];
	if (!rt_ckpt_write(path, o->t, o->n, keys, vals, 1, err, sizeof err))
		return 0;
	fprintf(stderr, "mgl: error: %s\n", err);
	return 1;
}

static int export_dir(const Args *a, const char *path, const RtCkpt *c, const RtTensors *o)
{
	const char *dir = a->out;
	Hyper h;
	int eot, status;
	const int64_t *wte = shape_of(o, "transformer.wte.weight"), *wpe = shape_of(o, "transformer.wpe.weight");
	if (!wpe) {
		fprintf(stderr, "mgl: error: %s has no 'wpe': not models/gpt2.mgl's layout\n", path);
		return 1;
	}
	const char *tok = tokenizer_dir(a, path, c, wte[0], &eot, &status);
	if (status || hyper_of(path, c, &h))
		return 1;
	struct stat st;
	if (mkdir(dir, 0777) && (errno != EEXIST || stat(dir, &st) || !S_ISDIR(st.st_mode))) {
		fprintf(stderr, "mgl: error: cannot create the directory '%s': %s\n", dir,
			errno == EEXIST ? "a file of that name exists" : strerror(errno));
		return 1;
	}
	MglArena ar = {0};
	status = write_model(mgl_fmt(&ar, "%s/model.safetensors", dir), o) ||
		 write_config(mgl_fmt(&ar, "%s/config.json", dir), o, &h, eot) ||
		 (tok && write_tokenizer(&ar, tok, dir, wpe[0]));
	mgl_arena_free(&ar);
	if (status)
		return 1;
	printf("%s: model.safetensors (%d tensors of %d layer%s under GPT-2's names), config.json%s\n", dir, o->n, o->layers,
	       o->layers == 1 ? "" : "s",
	       tok ? ", vocab.json, merges.txt, tokenizer_config.json" : "; no tokenizer files: the model reads bytes");
	printf("  load it with: GPT2LMHeadModel.from_pretrained(\"%s\")\n", dir);
	return 0;
}

int cmd_export(Args *a)
{
	if (!a->out)
		return usage_error("export", "-o DIR (or -o FILE.safetensors) is required%s", "");
	size_t n = strlen(a->out);
	bool file = n >= 12 && !strcmp(a->out + n - 12, ".safetensors");
	if (file && a->gpt2)
		return usage_error("export", "--gpt2 DIR gives the tokenizer's files to -o DIR; -o %s gets the tensors alone",
				   a->out);
	char path[4096], err[1024], *used;
	RtCkpt c;
	if (rt_ckpt_open(a->file, &c, &used, err, sizeof err)) {
		fprintf(stderr, "mgl: error: %s\n", err);
		return 1;
	}
	snprintf(path, sizeof path, "%s", used);
	free(used);
	struct stat out, st;
	if (!stat(a->out, &out) && !stat(path, &st) && out.st_dev == st.st_dev && out.st_ino == st.st_ino) {
		fprintf(stderr, "mgl: error: -o %s is the checkpoint itself: it would be overwritten\n", a->out);
		rt_ckpt_free(&c);
		return 1;
	}
	RtTensors o;
	int status = rt_hf_from_mgl(&c, path, &o, err, sizeof err) ? fprintf(stderr, "mgl: error: %s\n", err), 1 : 0;
	if (!status)
		status = file ? write_model(a->out, &o) : export_dir(a, path, &c, &o);
	if (!status && file)
		printf("%s: %d tensors of %d layer%s under GPT-2's names (Hugging Face)\n", a->out, o.n, o.layers,
		       o.layers == 1 ? "" : "s");
	rt_tensors_free(&o);
	rt_ckpt_free(&c);
	return status;
}

/* ---------------------------------------------------------------- mgl import */

/* config.json's sizes, and the model's config values they set (models/gpt2.mgl's names) */
static const struct { const char *hf, *key; size_t at; } sizes[] = {
	{"vocab_size", "vocab", offsetof(RtHfConfig, vocab_size)}, {"n_positions", "seq", offsetof(RtHfConfig, n_positions)},
	{"n_embd", "d", offsetof(RtHfConfig, n_embd)},             {"n_head", "heads", offsetof(RtHfConfig, n_head)},
	{"n_layer", "layers", offsetof(RtHfConfig, n_layer)},      {"n_inner", "ffn", offsetof(RtHfConfig, n_inner)},
};
enum { NSIZES = sizeof sizes / sizeof sizes[0] };

static int64_t size_of(const RtHfConfig *c, int k)
{
	int64_t v = *(const int64_t *)((const char *)c + sizes[k].at);
	return !v && !strcmp(sizes[k].hf, "n_inner") ? 4 * c->n_embd : v;   /* null: 4 n_embd */
}

/* What GPT2Config can say that models/gpt2.mgl cannot do: NULL if c is within it. */
static const char *unsupported(const RtHfConfig *c)
{
	static const char *const gelu_tanh[] = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"};
	bool tanh = false;
	for (size_t i = 0; i < sizeof gelu_tanh / sizeof gelu_tanh[0]; i++)
		tanh |= !strcmp(c->activation_function, gelu_tanh[i]);
	if (*c->model_type && strcmp(c->model_type, "gpt2"))
		return "model_type is not \"gpt2\"";
	if (!tanh)
		return "activation_function is not gelu_new (mgl's gelu is GPT-2's tanh approximation)";
	if (!c->scale_attn_weights)
		return "scale_attn_weights is false (mgl's attention divides by the square root of the head size)";
	if (c->scale_attn_by_inverse_layer_idx)
		return "scale_attn_by_inverse_layer_idx is true (mgl's attention scales every layer alike)";
	if (c->add_cross_attention)
		return "add_cross_attention is true (models/gpt2.mgl is a decoder only)";
	return NULL;
}

/* The model's config value key, or NULL. */
static const MglConfigValue *config_value(const MglGraph *g, const char *key)
{
	for (int i = 0; i < g->nconfig; i++)
		if (!strcmp(g->config[i].key, key))
			return &g->config[i];
	return NULL;
}

/* The model as given (preset, --set) has config.json's sizes, heads and epsilon: 0, or 1
 * after naming the first difference. */
static int same_architecture(const Args *a, const char *cfg, const RtHfConfig *c, const MglGraph *g, const MglPlan *p)
{
	char what[512];
	snprintf(what, sizeof what, "%s%s%s%s%s", a->file, a->preset ? " preset " : "", a->preset ? a->preset : "",
		 a->set ? " with --set " : "", a->set ? a->set : "");
	for (int k = 0; k < NSIZES; k++) {
		const MglConfigValue *v = config_value(g, sizes[k].key);
		char b1[32], b2[32];
		if (!v || !v->is_int) {
			fprintf(stderr, "mgl: error: %s has no whole-number config value '%s' for %s's %s\n"
					"  hint: mgl import sets models/gpt2.mgl's vocab, seq, d, heads, layers and ffn\n",
				a->file, sizes[k].key, cfg, sizes[k].hf);
			return 1;
		}
		if (v->i != size_of(c, k)) {
			fprintf(stderr, "mgl: error: %s %s %s but %s has %s %s\n", cfg, sizes[k].hf, mgl_commas(size_of(c, k), b1),
				what, sizes[k].key, mgl_commas(v->i, b2));
			return 1;
		}
	}
	Hyper h;
	if (hyper_scan(a->file, p, &h))
		return 1;
	if (h.heads != c->n_head || fabs(h.eps - c->layer_norm_epsilon) > 1e-6 * fabs(c->layer_norm_epsilon)) {
		fprintf(stderr, "mgl: error: %s %s %.9g but %s's %s %.9g\n", cfg,
			h.heads != c->n_head ? "n_head" : "layer_norm_epsilon",
			h.heads != c->n_head ? (double)c->n_head : c->layer_norm_epsilon, what,
			h.heads != c->n_head ? "attention has heads" : "layer norms have epsilon",
			h.heads != c->n_head ? (double)h.heads : h.eps);
		return 1;
	}
	return 0;
}

/* The imported tensors in the plan's order of parameters into w (p->nparams): 0, or 1
 * after naming the first parameter that has none, one of another shape, or a tensor the
 * model has no parameter for. */
static int match_params(const Args *a, const MglPlan *p, const RtTensors *o, RtTensor *w)
{
	char s1[160], s2[160];
	for (int i = 0; i < p->nparams; i++) {
		const MglPlanParam *q = &p->params[i];
		int k = 0;
		while (k < o->n && strcmp(o->t[k].name, q->name))
			k++;
		if (k == o->n) {
			fprintf(stderr, "mgl: error: %s has a parameter '%s' that GPT-2's checkpoint has no tensor for\n", a->file,
				q->name);
			return 1;
		}
		const RtTensor *t = &o->t[k];
		bool same = t->rank == q->rank;
		for (int d = 0; same && d < q->rank; d++)
			same = t->shape[d] == q->shape[d];
		if (!same) {
			fprintf(stderr, "mgl: error: '%s' (from %s's '%s') is %s, but %s has %s\n", q->name, a->hf_path, o->from[k],
				rt_shape_str(s1, sizeof s1, t->rank, t->shape), a->file, rt_shape_str(s2, sizeof s2, q->rank, q->shape));
			return 1;
		}
		for (int64_t e = 0; e < mgl_param_numel(q); e++)
			if (!isfinite(t->data[e])) {
				fprintf(stderr, "mgl: error: %s's '%s' holds non-finite values: element %s is %s\n", a->hf_path,
					o->from[k], mgl_commas(e, s1), isnan(t->data[e]) ? "NaN" : "infinite");
				return 1;
			}
		w[i] = *t;
	}
	if (o->n != p->nparams)
		for (int k = 0; k < o->n; k++) {
			int i = 0;
			while (i < p->nparams && strcmp(o->t[k].name, p->params[i].name))
				i++;
			if (i == p->nparams) {
				fprintf(stderr, "mgl: error: %s's '%s' (mgl's '%s') has no parameter in %s\n", a->hf_path, o->from[k],
					o->t[k].name, a->file);
				return 1;
			}
		}
	return 0;
}

/* path's directory, in ar. */
static const char *dir_of(MglArena *ar, const char *path)
{
	struct stat st;
	if (!stat(path, &st) && S_ISDIR(st.st_mode))
		return path;
	const char *slash = strrchr(path, '/');
	return !slash ? "." : slash == path ? "/" : mgl_fmt(ar, "%.*s", (int)(slash - path), path);
}

/* GPT-2's tokenizer files of the Hugging Face directory, copied into out as mgl names them
 * and recorded as mgl train --gpt2 records them: tok and sha (130 bytes); tok NULL when the
 * directory has none. 0, or 1 after printing why. */
static int import_tokenizer(MglArena *ar, const char *hf, const char *out, int64_t vocab, const char **tok, char *sha)
{
	const char *vj = mgl_fmt(ar, "%s/vocab.json", hf), *mt = mgl_fmt(ar, "%s/merges.txt", hf);
	struct stat st;
	*tok = NULL;
	if (stat(vj, &st) || stat(mt, &st))
		return 0;
	char err[1024];
	RtTokenizer *t = rt_tok_gpt2_files(vj, mt, err, sizeof err);
	if (!t) {
		fprintf(stderr, "mgl: error: %s\n", err);
		return 1;
	}
	int have = rt_tok_vocab(t);
	rt_tok_free(t);
	if (have != vocab) {
		fprintf(stderr, "mgl: error: %s and merges.txt make %s tokens, but the model has %s\n", vj,
			mgl_commas(have, (char[32]){0}), mgl_commas(vocab, (char[32]){0}));
		return 1;
	}
	if (copy_file(vj, mgl_fmt(ar, "%s/encoder.json", out)) || copy_file(mt, mgl_fmt(ar, "%s/vocab.bpe", out)))
		return 1;
	bool failed;
	return !(*tok = cli_tokenizer_record(ar, out, NULL, sha, &failed));
}

static int import_body(MglCtx *ctx, const Args *a, const RtHfConfig *c, const char *cfg, const char *hf_dir)
{
	MglTarget t = {.tp = 1, .dp = 1, .batch = 1, .act_dtype = MGL_F32};
	MglGraph *g;
	MglPlan *p = cli_plan(ctx, a->file, NULL, a->preset, a->set, &t, &g);
	for (int k = 0; k < NSIZES && !a->preset; k++)   /* the model can take the sizes */
		if (!config_value(g, sizes[k].key))
			return same_architecture(a, cfg, c, g, p);
	/* without a preset, the sizes are config.json's (then --set's) */
	const char *set = a->set ? a->set : "";
	if (!a->preset) {
		char b[512];
		size_t at = 0;
		for (int k = 0; k < NSIZES; k++)
			at += (size_t)snprintf(b + at, sizeof b - at, "%s%s=%lld", k ? "," : "", sizes[k].key,
					       (long long)size_of(c, k));
		set = mgl_fmt(&ctx->arena, "%s%s%s", b, *set ? "," : "", set);
		p = cli_plan(ctx, a->file, NULL, NULL, set, &t, &g);
	}
	if (same_architecture(a, cfg, c, g, p))
		return 1;
	char err[1024];
	RtHfCkpt h;
	if (rt_hf_read(a->hf_path, &h, err, sizeof err)) {
		fprintf(stderr, "mgl: error: %s\n", err);
		return 1;
	}
	RtTensors o = {0};
	RtTensor *w = mgl_alloc(&ctx->arena, ((size_t)p->nparams + 1) * sizeof *w);
	int status = 1;
	if (rt_hf_to_mgl(h.t, h.n, a->hf_path, &o, err, sizeof err))
		fprintf(stderr, "mgl: error: %s\n", err);
	else
		status = match_params(a, p, &o, w);
	int ntensors = h.n, nfiles = h.nshards;
	rt_hf_free(&h);   /* o holds copies */
	struct stat st;
	if (!status && mkdir(a->out, 0777) && (errno != EEXIST || stat(a->out, &st) || !S_ISDIR(st.st_mode))) {
		fprintf(stderr, "mgl: error: cannot create the directory '%s': %s\n", a->out,
			errno == EEXIST ? "a file of that name exists" : strerror(errno));
		status = 1;
	}
	const char *tok = NULL;
	char sha[130] = "";
	size_t len;
	char *source = NULL;
	if (!status)
		status = import_tokenizer(&ctx->arena, hf_dir, a->out, c->vocab_size, &tok, sha);
	if (!status && !(source = mgl_read_whole(a->file, MGL_MAX_FILE_BYTES, "model files", &len, err, sizeof err))) {
		fprintf(stderr, "mgl: error: %s\n", err);
		status = 1;
	}
	if (!status) {
		/* without tokenizer files: bytes for a vocabulary of 256, else GPT-2's from --gpt2 DIR */
		const char *recorded = tok ? tok : c->vocab_size == 256 ? "bytes" : "gpt2";
		RtCkptMeta m = {.format = RT_CKPT_FORMAT, .model = g->model, .source = source, .preset = a->preset ? a->preset : "",
				.set = set, .tokenizer = recorded, .tokenizer_sha256 = tok ? sha : NULL};
		const char *path = mgl_fmt(&ctx->arena, "%s/checkpoint.safetensors", a->out);
		if (rt_ckpt_write_meta(path, w, p->nparams, &m, err, sizeof err) ||
		    rt_ckpt_single_commit(a->out, err, sizeof err)) {   /* a sharded checkpoint there before goes */
			fprintf(stderr, "mgl: error: %s\n", err);
			status = 1;
		} else {
			char b1[32], b2[32];
			printf("%s: %s (%s parameters, %d layer%s) from %s tensor%s in %d file%s of %s\n", path, g->model,
			       mgl_commas(mgl_param_count(g), b1), o.layers, o.layers == 1 ? "" : "s", mgl_commas(ntensors, b2),
			       ntensors == 1 ? "" : "s", nfiles, nfiles == 1 ? "" : "s", a->hf_path);
			printf(tok ? "  tokenizer: GPT-2's, vocab.json and merges.txt copied as %s/encoder.json and vocab.bpe\n"
			       : !strcmp(recorded, "bytes") ? "  tokenizer: bytes (a vocabulary of 256)\n"
			       : "  tokenizer: GPT-2's, but no vocab.json and merges.txt were beside it: give mgl sample --gpt2 DIR\n",
			       a->out);
		}
	}
	free(source);
	rt_tensors_free(&o);
	return status;
}

int cmd_import(Args *a)
{
	if (!a->hf_path)
		return usage_error("import", "--hf FILE_OR_DIR (a Hugging Face GPT-2 checkpoint) is required%s", "");
	if (!a->out)
		return usage_error("import", "-o DIR is required%s", "");
	struct stat st;
	if (stat(a->hf_path, &st)) {
		fprintf(stderr, "mgl: error: %s: cannot open: %s\n", a->hf_path, strerror(errno));
		return 1;
	}
	MglCtx ctx = {0};
	jmp_buf jb;
	ctx.fail = &jb;
	volatile int status = 1;
	if (!setjmp(jb)) {
		const char *dir = dir_of(&ctx.arena, a->hf_path), *cfg = mgl_fmt(&ctx.arena, "%s/config.json", dir);
		char err[1024];
		size_t len;
		char *text = mgl_read_whole(cfg, 64 << 20, "config files", &len, err, sizeof err);
		RtHfConfig c;
		const char *why = NULL;
		if (!text || rt_hf_config_parse(text, len, cfg, &c, err, sizeof err))
			fprintf(stderr, "mgl: error: %s\n", err);
		else if ((why = unsupported(&c)))
			fprintf(stderr, "mgl: error: %s: %s\n", cfg, why);
		else
			status = import_body(&ctx, a, &c, cfg, dir);
		free(text);
	} else {
		status = ctx.status ? ctx.status : 1;
	}
	mgl_arena_free(&ctx.arena);
	return status;
}
