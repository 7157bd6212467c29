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
		status = 0;
		if (!h->heads || h->eps < 0) {
			fprintf(stderr, "mgl: error: %s: the model has no attention or no layer norm: not models/gpt2.mgl\n", path);
			status = 1;
		}
		if (h->p_drop < 0)
			h->p_drop = 0;
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
	char path[4096], err[1024];
	struct stat st;
	snprintf(path, sizeof path, !stat(a->file, &st) && S_ISDIR(st.st_mode) ? "%s/checkpoint.safetensors" : "%s",
		 a->file);
	struct stat out;
	if (!stat(a->out, &out) && !stat(path, &st) && out.st_dev == st.st_dev && out.st_ino == st.st_ino) {
		fprintf(stderr, "mgl: error: -o %s is the checkpoint itself: it would be overwritten\n", a->out);
		return 1;
	}
	RtCkpt c;
	if (rt_ckpt_read(path, &c, err, sizeof err)) {
		fprintf(stderr, "mgl: error: %s\n", err);
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
