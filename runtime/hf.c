/* runtime/hf.c — GPT-2 as Hugging Face's transformers keeps it, both ways: the one table
 * that maps models/gpt2.mgl's parameter names to GPT2LMHeadModel's (mgl export reads it one
 * way, mgl import the other), and the readers of what a Hugging Face checkpoint holds
 * besides safetensors files: config.json (GPT2Config) and model.safetensors.index.json
 * (which shard holds which tensor).
 *
 * mgl keeps linear weights as [out, in] and q, k, v apart; GPT-2's Conv1D keeps them as
 * [in, out] and fuses q, k, v into one c_attn ([in, 3 d]: columns 0..d-1 are q's rows).
 * The output layer is tied to the token embedding in both; a file's lm_head.weight, when
 * there is one, must equal transformer.wte.weight. The attention's causal-mask buffers
 * (h.N.attn.bias [1, 1, n, n], h.N.attn.masked_bias), which older transformers saved with
 * the weights, are not weights and are passed over. transformers loads names with or
 * without the "transformer." prefix (the hub's gpt2 has none); so does the reader.
 *
 * Everything read is untrusted: the JSON readers know only the shapes these files have,
 * skip what they do not need with a depth limit, and name the file and key of any error; a
 * shard's name is a file beside the index, never a path; every tensor's rank and shape is
 * checked before its data are touched.
 */
#include "runtime.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* mgl suffix within a layer -> GPT-2 name within transformer.h.N, transposed or not (q, k
 * and v, fused into attn.c_attn, are the code's) */
static const struct { const char *mgl, *hf; bool transpose; } layer_map[] = {
	{"attention.ln.weight", "ln_1.weight", false}, {"attention.ln.bias", "ln_1.bias", false},
	{"attention.o.weight", "attn.c_proj.weight", true}, {"attention.o.bias", "attn.c_proj.bias", false},
	{"mlp.ln.weight", "ln_2.weight", false},       {"mlp.ln.bias", "ln_2.bias", false},
	{"mlp.fc.weight", "mlp.c_fc.weight", true},     {"mlp.fc.bias", "mlp.c_fc.bias", false},
	{"mlp.proj.weight", "mlp.c_proj.weight", true}, {"mlp.proj.bias", "mlp.c_proj.bias", false},
};
static const struct { const char *mgl, *hf; int rank; } top_map[] = {
	{"wte", "transformer.wte.weight", 2}, {"wpe", "transformer.wpe.weight", 2},
	{"ln_f.weight", "transformer.ln_f.weight", 1}, {"ln_f.bias", "transformer.ln_f.bias", 1},
};
enum { NLAYER_MAP = sizeof layer_map / sizeof layer_map[0], NTOP_MAP = sizeof top_map / sizeof top_map[0] };
enum { MAX_LAYERS = 100000, MAX_JSON_DEPTH = 64, MAX_JSON_BYTES = 100000000 };
/* Names are matched by comparing each with the ones before it: bounded, that stays fast on
 * any file (a GPT-2 has 4 tensors and 12 a layer: 580 for GPT-2 XL). */
enum { MAX_TENSORS = 65536 };

/* ---------------------------------------------------------------- tensor lists */

static int64_t numel(const RtTensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->rank; i++)
		n *= t->shape[i];
	return n;
}

/* A new zeroed tensor at the end of o: name, and from (the name it is made of). NULL when
 * out of memory. */
static RtTensor *add(RtTensors *o, const char *name, const char *from, int rank, const int64_t *shape)
{
	if (o->n == o->cap) {
		int cap = 2 * o->cap + 16;
		RtTensor *t = realloc(o->t, (size_t)cap * sizeof *t);
		char **f = t ? realloc(o->from, (size_t)cap * sizeof *f) : NULL;
		if (t)
			o->t = t;
		if (!f)
			return NULL;
		o->from = f;
		o->cap = cap;
	}
	RtTensor *t = &o->t[o->n];
	memset(t, 0, sizeof *t);
	t->rank = rank;
	memcpy(t->shape, shape, (size_t)rank * sizeof *shape);
	t->name = strdup(name);
	o->from[o->n] = strdup(from);
	t->data = calloc((size_t)numel(t) + 1, sizeof *t->data);
	o->n++;
	return t->name && o->from[o->n - 1] && t->data ? t : NULL;
}

void rt_tensors_free(RtTensors *o)
{
	for (int i = 0; i < o->n; i++) {
		free((char *)o->t[i].name);
		free(o->t[i].data);
		free(o->from[i]);
	}
	free(o->t);
	free(o->from);
	memset(o, 0, sizeof *o);
}

const char *rt_shape_str(char *buf, size_t cap, int rank, const int64_t *shape)
{
	size_t at = (size_t)snprintf(buf, cap, "[");
	for (int k = 0; k < rank && at < cap; k++)
		at += (size_t)snprintf(buf + at, cap - at, "%s%lld", k ? ", " : "", (long long)shape[k]);
	if (at < cap)
		snprintf(buf + at, cap - at, "]");
	return buf;
}

/* Copies t into o as name (transposed when asked: [R, C] becomes [C, R]). */
static int put(RtTensors *o, const char *name, const RtTensor *t, bool transpose, const char *file, char *err,
	       size_t errlen)
{
	int64_t shape[2] = {t->shape[transpose], t->shape[!transpose]};
	RtTensor *x = add(o, name, t->name, t->rank, transpose ? shape : t->shape);
	if (!x) {
		rt_errf(err, errlen, "%s: out of memory", file);
		return -1;
	}
	if (!transpose) {
		memcpy(x->data, t->data, (size_t)numel(t) * sizeof *x->data);
		return 0;
	}
	int64_t R = t->shape[0], C = t->shape[1];
	for (int64_t r = 0; r < R; r++)
		for (int64_t c = 0; c < C; c++)
			x->data[c * R + r] = t->data[r * C + c];
	return 0;
}

/* ---------------------------------------------------------------- mgl -> GPT-2 (mgl export) */

/* Whether a checkpoint's parameter has a place in GPT-2's layout (of `layers` layers). */
static bool gpt2_name(const char *name, int layers)
{
	for (int k = 0; k < NTOP_MAP; k++)
		if (!strcmp(name, top_map[k].mgl))
			return true;
	int l, at = 0;
	if (sscanf(name, "layers.%d.%n", &l, &at) != 1 || !at || l < 0 || l >= layers)
		return false;
	name += at;
	for (int k = 0; k < NLAYER_MAP; k++)
		if (!strcmp(name, layer_map[k].mgl))
			return true;
	return !strncmp(name, "attention.", 10) && name[10] && strchr("qkv", name[10]) &&
	       (!strcmp(name + 11, ".weight") || !strcmp(name + 11, ".bias"));
}

int rt_hf_from_mgl(const RtCkpt *c, const char *path, RtTensors *o, char *err, size_t errlen)
{
	memset(o, 0, sizeof *o);
	for (int k = 0; k < NTOP_MAP; k++) {
		const RtTensor *t = rt_ckpt_find(c, top_map[k].mgl);
		if (t && put(o, top_map[k].hf, t, false, path, err, errlen))
			return -1;
	}
	for (int l = 0;; l++, o->layers++) {
		char name[256], hf[256];
		snprintf(name, sizeof name, "layers.%d.attention.q.weight", l);
		const RtTensor *q = rt_ckpt_find(c, name);
		if (!q)
			break;
		const RtTensor *qkv[2][3];
		for (int w = 0; w < 2; w++)
			for (int p = 0; p < 3; p++) {
				snprintf(name, sizeof name, "layers.%d.attention.%c.%s", l, "qkv"[p], w ? "bias" : "weight");
				qkv[w][p] = rt_ckpt_find(c, name);
				if (!qkv[w][p] || qkv[w][p]->rank != 2 - w || qkv[w][p]->shape[0] != q->shape[0] ||
				    (!w && qkv[w][p]->shape[1] != q->shape[1])) {
					rt_errf(err, errlen, "%s: '%s' is missing or misshapen: not models/gpt2.mgl's layout", path, name);
					return -1;
				}
			}
		int64_t d = q->shape[0], in = q->shape[1];
		/* c_attn.weight [in, 3d]: column p*d + r holds row r of q, k or v */
		snprintf(hf, sizeof hf, "transformer.h.%d.attn.c_attn.weight", l);
		RtTensor *cw = add(o, hf, q->name, 2, (int64_t[]){in, 3 * d});
		snprintf(hf, sizeof hf, "transformer.h.%d.attn.c_attn.bias", l);
		RtTensor *cb = cw ? add(o, hf, q->name, 1, (int64_t[]){3 * d}) : NULL;
		if (!cb) {
			rt_errf(err, errlen, "%s: out of memory", path);
			return -1;
		}
		for (int p = 0; p < 3; p++)
			for (int64_t r = 0; r < d; r++) {
				cb->data[p * d + r] = qkv[1][p]->data[r];
				for (int64_t i = 0; i < in; i++)
					cw->data[i * 3 * d + p * d + r] = qkv[0][p]->data[r * in + i];
			}
		for (int k = 0; k < NLAYER_MAP; k++) {
			snprintf(name, sizeof name, "layers.%d.%s", l, layer_map[k].mgl);
			snprintf(hf, sizeof hf, "transformer.h.%d.%s", l, layer_map[k].hf);
			const RtTensor *t = rt_ckpt_find(c, name);
			if (!t || t->rank != (layer_map[k].transpose ? 2 : 1)) {
				rt_errf(err, errlen, "%s: no '%s' of rank %d: not models/gpt2.mgl's layout", path, name,
					layer_map[k].transpose ? 2 : 1);
				return -1;
			}
			if (put(o, hf, t, layer_map[k].transpose, path, err, errlen))
				return -1;
		}
	}
	if (!o->layers || !rt_ckpt_find(c, "wte")) {
		rt_errf(err, errlen, "%s holds no GPT-2 layers (layers.0.attention.q.weight, wte): nothing to export\n"
				     "  hint: mgl export takes a checkpoint of models/gpt2.mgl (any preset or --set), whose "
				     "parameter names it maps to GPT-2's", path);
		return -1;
	}
	/* a parameter GPT-2 has no place for is refused, not left out: BERT's (wse, the heads)
	 * say that its export is not there (docs/export.md) */
	for (int i = 0; i < c->n; i++) {
		const char *name = c->t[i].name;
		if (strncmp(name, "optimizer.", 10) && !gpt2_name(name, o->layers)) {
			bool bert = rt_ckpt_find(c, "wse") || rt_ckpt_find(c, "sop.weight");
			rt_errf(err, errlen, "%s: GPT-2 has no place for '%s': not models/gpt2.mgl's layout%s", path, name,
				bert ? "\n  hint: this is a BERT (models/bert.mgl), which mgl export does not write: its pre-LN "
				       "layers compute otherwise than Hugging Face's post-LN BertForPreTraining (docs/export.md)" : "");
			return -1;
		}
	}
	return 0;
}

/* ---------------------------------------------------------------- GPT-2 -> mgl (mgl import) */

/* A tensor's name as the table has it: "transformer." put before one without it (but
 * lm_head.weight). Into buf; false if it does not fit. */
static bool canonical(const char *name, char *buf, size_t cap)
{
	bool bare = strncmp(name, "transformer.", 12) && strcmp(name, "lm_head.weight");
	return (size_t)snprintf(buf, cap, "%s%s", bare ? "transformer." : "", name) < cap;
}

/* The layer of "transformer.h.N.rest" (N in decimal, no leading zeros), rest in *rest; -1
 * for a name of another form. */
static long layer_of(const char *name, const char **rest)
{
	if (strncmp(name, "transformer.h.", 14))
		return -1;
	const char *s = name + 14;
	long n = 0;
	int digits = 0;
	for (; *s >= '0' && *s <= '9'; s++, digits++)
		if ((n = n * 10 + (*s - '0')) >= MAX_LAYERS)
			return -1;
	if (!digits || *s != '.' || (digits > 1 && s[-digits] == '0'))
		return -1;
	*rest = s + 1;
	return n;
}

typedef struct {
	const RtTensor *const *t;
	int n;
	char (*name)[256];    /* each tensor's canonical name */
	bool *used;
	const char *file;
	char *err;
	size_t errlen;
} In;

/* The tensor of canonical name `want` of rank `rank` (marked used): NULL with err when it is
 * missing or of another rank. */
static const RtTensor *need(In *in, const char *want, int rank)
{
	for (int i = 0; i < in->n; i++)
		if (!strcmp(in->name[i], want)) {
			char s[160];
			in->used[i] = true;
			if (in->t[i]->rank == rank)
				return in->t[i];
			rt_errf(in->err, in->errlen, "%s: '%s' is %s, but GPT-2's has %d dimension%s", in->file, in->t[i]->name,
				rt_shape_str(s, sizeof s, in->t[i]->rank, in->t[i]->shape), rank, rank == 1 ? "" : "s");
			return NULL;
		}
	rt_errf(in->err, in->errlen, "%s has no tensor '%s' (GPT-2's layout)", in->file, want);
	return NULL;
}

/* q, k and v of layer l from c_attn ([in, 3 d] and [3 d]). */
static int split_qkv(In *in, long l, RtTensors *o)
{
	char name[256];
	snprintf(name, sizeof name, "transformer.h.%ld.attn.c_attn.weight", l);
	const RtTensor *w = need(in, name, 2);
	snprintf(name, sizeof name, "transformer.h.%ld.attn.c_attn.bias", l);
	const RtTensor *b = w ? need(in, name, 1) : NULL;
	if (!b)
		return -1;
	char s1[160], s2[160];
	if (w->shape[1] % 3 || b->shape[0] != w->shape[1]) {
		rt_errf(in->err, in->errlen, "%s: '%s' is %s and '%s' %s: c_attn must be [in, 3 d] and its bias [3 d]",
			in->file, w->name, rt_shape_str(s1, sizeof s1, w->rank, w->shape), b->name,
			rt_shape_str(s2, sizeof s2, b->rank, b->shape));
		return -1;
	}
	int64_t d = w->shape[1] / 3, rows = w->shape[0];
	for (int p = 0; p < 3; p++) {
		snprintf(name, sizeof name, "layers.%ld.attention.%c.weight", l, "qkv"[p]);
		RtTensor *x = add(o, name, w->name, 2, (int64_t[]){d, rows});
		snprintf(name, sizeof name, "layers.%ld.attention.%c.bias", l, "qkv"[p]);
		RtTensor *y = x ? add(o, name, b->name, 1, (int64_t[]){d}) : NULL;
		if (!y) {
			rt_errf(in->err, in->errlen, "%s: out of memory", in->file);
			return -1;
		}
		for (int64_t r = 0; r < d; r++) {
			y->data[r] = b->data[p * d + r];
			for (int64_t i = 0; i < rows; i++)
				x->data[r * rows + i] = w->data[i * 3 * d + p * d + r];
		}
	}
	return 0;
}

static int to_mgl(In *in, RtTensors *o)
{
	long layers = 0;
	if (in->n > MAX_TENSORS) {
		rt_errf(in->err, in->errlen, "%s holds %d tensors, more than 65,536: not a GPT-2 checkpoint", in->file, in->n);
		return -1;
	}
	for (int i = 0; i < in->n; i++) {
		if (!canonical(in->t[i]->name, in->name[i], sizeof in->name[i])) {
			rt_errf(in->err, in->errlen, "%s: a tensor's name is too long for GPT-2's layout", in->file);
			return -1;
		}
		for (int k = 0; k < i; k++)
			if (!strcmp(in->name[k], in->name[i])) {
				rt_errf(in->err, in->errlen, "%s holds '%s' and '%s': the same tensor twice", in->file, in->t[k]->name,
					in->t[i]->name);
				return -1;
			}
		const char *rest;
		long l = layer_of(in->name[i], &rest);
		if (l >= layers)
			layers = l + 1;
		/* the causal mask, a buffer older transformers saved: not a weight */
		if (l >= 0 && (!strcmp(rest, "attn.bias") || !strcmp(rest, "attn.masked_bias")))
			in->used[i] = true;
	}
	for (int k = 0; k < NTOP_MAP; k++) {
		const RtTensor *t = need(in, top_map[k].hf, top_map[k].rank);
		if (!t || put(o, top_map[k].mgl, t, false, in->file, in->err, in->errlen))
			return -1;
	}
	for (long l = 0; l < layers; l++) {
		if (split_qkv(in, l, o))
			return -1;
		for (int k = 0; k < NLAYER_MAP; k++) {
			char name[256], hf[256];
			snprintf(hf, sizeof hf, "transformer.h.%ld.%s", l, layer_map[k].hf);
			snprintf(name, sizeof name, "layers.%ld.%s", l, layer_map[k].mgl);
			const RtTensor *t = need(in, hf, layer_map[k].transpose ? 2 : 1);
			if (!t || put(o, name, t, layer_map[k].transpose, in->file, in->err, in->errlen))
				return -1;
		}
	}
	o->layers = (int)layers;
	/* the output layer: tied to the embedding, as models/gpt2.mgl ties it */
	for (int i = 0; i < in->n; i++) {
		if (strcmp(in->name[i], "lm_head.weight"))
			continue;
		const RtTensor *h = in->t[i], *e = &o->t[0];   /* wte, the first put */
		bool same = h->rank == 2 && h->shape[0] == e->shape[0] && h->shape[1] == e->shape[1] &&
			    !memcmp(h->data, e->data, (size_t)numel(e) * sizeof *e->data);
		if (!same) {
			rt_errf(in->err, in->errlen, "%s: lm_head.weight is not transformer.wte.weight: models/gpt2.mgl ties its "
						      "output layer to the token embedding, so an untied one cannot be imported", in->file);
			return -1;
		}
		in->used[i] = true;
	}
	for (int i = 0; i < in->n; i++)
		if (!in->used[i]) {
			rt_errf(in->err, in->errlen, "%s holds a tensor '%s' that GPT-2's layout has no place for", in->file,
				in->t[i]->name);
			return -1;
		}
	return 0;
}

int rt_hf_to_mgl(const RtTensor *const *t, int n, const char *file, RtTensors *o, char *err, size_t errlen)
{
	memset(o, 0, sizeof *o);
	In in = {.t = t, .n = n, .name = calloc((size_t)n + 1, sizeof *in.name), .used = calloc((size_t)n + 1, 1),
		 .file = file, .err = err, .errlen = errlen};
	int rc = -1;
	if (!in.name || !in.used)
		rt_errf(err, errlen, "%s: out of memory", file);
	else
		rc = to_mgl(&in, o);
	free(in.name);
	free(in.used);
	if (rc)
		rt_tensors_free(o);
	return rc;
}

/* ---------------------------------------------------------------- JSON: config.json and the index */

typedef struct {
	char s[1024];
	size_t n;
	bool long_;
} Str;

static int str_put(RtJson *j, void *ctx, uint32_t cp, size_t at)
{
	Str *b = ctx;
	if (!cp)
		return rt_json_fail(j, at, "\\u0000 in a string");
	unsigned char u[4];
	size_t k = rt_utf8_encode(u, cp);
	if (b->n + k >= sizeof b->s) {
		b->long_ = true;
		return 0;
	}
	memcpy(b->s + b->n, u, k);
	b->s[b->n += k] = 0;
	return 0;
}

/* A string into b (NUL-terminated; long_ when cut at 1,023 bytes). */
static int str(RtJson *j, Str *b, const char *what)
{
	b->n = 0;
	b->s[0] = 0;
	b->long_ = false;
	return rt_json_string(j, what, str_put, b);
}

/* true, false or null at pos: 1, 0, or -1 (null); -2 with e for anything else. */
static int literal(RtJson *j, const char *what)
{
	static const char *const word[] = {"null", "false", "true"};
	rt_json_peek(j);
	for (int k = 0; k < 3; k++) {
		size_t n = strlen(word[k]);
		if (j->n - j->pos >= n && !memcmp(j->s + j->pos, word[k], n)) {
			j->pos += n;
			return k - 1;
		}
	}
	rt_json_fail(j, j->pos, "%s", what);
	return -2;
}

/* The error of a JSON text: "FILE: at byte N: MSG" (the text counted from 1). */
static int json_error(const RtJson *j, const char *file, char *err, size_t errlen)
{
	rt_errf(err, errlen, "%s: at byte %s: %s", file, mgl_commas((int64_t)j->e.at + 1, (char[32]){0}), j->e.msg);
	return -1;
}

/* An object: for each member, value(j, key, where the key is, ctx) reads the value. With
 * whole, the object must be all the text. 0, or -1 with j->e. */
typedef int Member(RtJson *j, const Str *key, size_t at, void *ctx);
static int object(RtJson *j, const char *what, Member *value, void *ctx, bool whole)
{
	int k = 0;
	if (rt_json_expect(j, '{', what))
		return -1;
	if (rt_json_peek(j) == '}')
		j->pos++;
	else
		do {
			Str key;
			size_t at = j->pos;
			if (str(j, &key, "expected a key (a string)") || rt_json_expect(j, ':', "expected ':' after a key") ||
			    value(j, &key, at, ctx))
				return -1;
		} while ((k = rt_json_more(j, '}', "expected ',' or '}' after a value")) == 1);
	if (k < 0)
		return -1;
	return whole && rt_json_peek(j) >= 0 ? rt_json_fail(j, j->pos, "something follows the object") : 0;
}

/* GPT2Config's fields mgl reads, with where they go. Absent ones keep GPT2Config's defaults
 * (what transformers does: a config.json that save_pretrained wrote leaves out only what
 * equals them). */
typedef enum { F_INT, F_INT_OR_NULL, F_NUM, F_STR, F_BOOL } FieldKind;
static const struct {
	const char *key;
	FieldKind kind;
	size_t at;
} fields[] = {
	{"vocab_size", F_INT, offsetof(RtHfConfig, vocab_size)},
	{"n_positions", F_INT, offsetof(RtHfConfig, n_positions)},
	{"n_embd", F_INT, offsetof(RtHfConfig, n_embd)},
	{"n_layer", F_INT, offsetof(RtHfConfig, n_layer)},
	{"n_head", F_INT, offsetof(RtHfConfig, n_head)},
	{"n_inner", F_INT_OR_NULL, offsetof(RtHfConfig, n_inner)},
	{"layer_norm_epsilon", F_NUM, offsetof(RtHfConfig, layer_norm_epsilon)},
	{"activation_function", F_STR, offsetof(RtHfConfig, activation_function)},
	{"model_type", F_STR, offsetof(RtHfConfig, model_type)},
	{"scale_attn_weights", F_BOOL, offsetof(RtHfConfig, scale_attn_weights)},
	{"scale_attn_by_inverse_layer_idx", F_BOOL, offsetof(RtHfConfig, scale_attn_by_inverse_layer_idx)},
	{"add_cross_attention", F_BOOL, offsetof(RtHfConfig, add_cross_attention)},
};
enum { NFIELDS = sizeof fields / sizeof fields[0], MAX_SIZE = 1 << 30 };

static int field(RtJson *j, int f, RtHfConfig *c)
{
	char *at = (char *)c + fields[f].at;
	char what[96];
	snprintf(what, sizeof what, "%s must be %s", fields[f].key,
		 fields[f].kind == F_BOOL ? "true or false" : fields[f].kind == F_STR ? "a string" : "a number");
	switch (fields[f].kind) {
	case F_INT_OR_NULL:
		if (rt_json_peek(j) == 'n') {   /* null: 4 n_embd */
			*(int64_t *)at = 0;
			return literal(j, what) == -1 ? 0 : rt_json_fail(j, j->pos, "%s", what);
		}
		/* fall through */
	case F_INT:
		snprintf(what, sizeof what, "%s", fields[f].key);
		return rt_json_uint(j, what, MAX_SIZE, (int64_t *)at);
	case F_NUM:
		return rt_json_number(j, fields[f].key, (double *)at);
	case F_BOOL: {
		int v = literal(j, what);
		if (v < 0)
			return v == -1 ? rt_json_fail(j, j->pos, "%s", what) : -1;
		*(bool *)at = v;
		return 0;
	}
	case F_STR: {
		Str s;
		size_t from = j->pos;
		if (str(j, &s, what))
			return -1;
		if (s.n >= sizeof c->model_type)   /* no value mgl accepts is that long */
			return rt_json_fail(j, from, "%s is not a value mgl knows ('%.40s...')", fields[f].key, s.s);
		memcpy(at, s.s, s.n + 1);
		return 0;
	}
	}
	return -1;
}

typedef struct {
	RtHfConfig *c;
	bool seen[NFIELDS];
} ConfigRead;

static int config_member(RtJson *j, const Str *key, size_t at, void *ctx)
{
	ConfigRead *r = ctx;
	int f = 0;
	while (f < NFIELDS && strcmp(fields[f].key, key->s))
		f++;
	if (f == NFIELDS)
		return rt_json_skip(j, MAX_JSON_DEPTH);
	if (r->seen[f])
		return rt_json_fail(j, at, "'%s' is given twice", key->s);
	r->seen[f] = true;
	return field(j, f, r->c);
}

int rt_hf_config_parse(const void *buf, size_t len, const char *file, RtHfConfig *c, char *err, size_t errlen)
{
	*c = (RtHfConfig){.vocab_size = 50257, .n_positions = 1024, .n_embd = 768, .n_layer = 12, .n_head = 12,
			  .layer_norm_epsilon = 1e-5, .activation_function = "gelu_new", .scale_attn_weights = true};
	RtJson j = {.s = buf, .n = buf ? len : 0, .ends = "the text ends early"};
	ConfigRead r = {.c = c};
	if (object(&j, "config.json must be a JSON object", config_member, &r, true))
		return json_error(&j, file, err, errlen);
	const char *zero = !c->vocab_size ? "vocab_size" : !c->n_positions ? "n_positions" : !c->n_embd ? "n_embd"
			 : !c->n_layer ? "n_layer" : !c->n_head ? "n_head" : NULL;
	if (zero) {
		rt_errf(err, errlen, "%s: %s is 0", file, zero);
		return -1;
	}
	return 0;
}

void rt_hf_index_free(RtHfIndex *x)
{
	for (int i = 0; i < x->n; i++)
		free(x->names[i]);
	for (int i = 0; i < x->nfiles; i++)
		free(x->files[i]);
	free(x->names);
	free(x->file_of);
	free(x->files);
	memset(x, 0, sizeof *x);
}

/* The index of shard file s in x (added if new): -1 when out of memory. */
static int file_index(RtHfIndex *x, const char *s)
{
	for (int i = 0; i < x->nfiles; i++)
		if (!strcmp(x->files[i], s))
			return i;
	char **f = realloc(x->files, (size_t)(x->nfiles + 1) * sizeof *f);
	if (!f)
		return -1;
	x->files = f;
	return (f[x->nfiles] = strdup(s)) ? x->nfiles++ : -1;
}

/* A member of "weight_map": {tensor: shard file, ...} */
static int weight(RtJson *j, const Str *name, size_t at, void *ctx)
{
	RtHfIndex *x = ctx;
	Str file;
	size_t fat = j->pos;
	if (str(j, &file, "a tensor's file must be a string"))
		return -1;
	if (name->long_ || file.long_ || !name->n)
		return rt_json_fail(j, at, "%s", !name->n ? "a tensor's name is empty" : "a name of more than 1,023 bytes");
	/* a file beside the index, never a path elsewhere */
	if (!file.n || strchr(file.s, '/') || !strcmp(file.s, ".") || !strcmp(file.s, ".."))
		return rt_json_fail(j, fat, "the file of '%s' must be a file name beside the index, not '%s'", name->s, file.s);
	if (x->n == MAX_TENSORS)
		return rt_json_fail(j, at, "more than 65,536 tensors: not a GPT-2 checkpoint's index");
	for (int i = 0; i < x->n; i++)
		if (!strcmp(x->names[i], name->s))
			return rt_json_fail(j, at, "'%s' is given twice", name->s);
	if (x->n == x->cap) {
		int cap = 2 * x->cap + 64;
		char **nn = realloc(x->names, (size_t)cap * sizeof *nn);
		int *nf = nn ? realloc(x->file_of, (size_t)cap * sizeof *nf) : NULL;
		if (nn)
			x->names = nn;
		if (!nf)
			return rt_json_fail(j, at, "out of memory");
		x->file_of = nf;
		x->cap = cap;
	}
	int f = file_index(x, file.s);
	if (f < 0 || !(x->names[x->n] = strdup(name->s)))
		return rt_json_fail(j, at, "out of memory");
	x->file_of[x->n++] = f;
	return 0;
}

typedef struct {
	RtHfIndex *x;
	bool seen;
} IndexRead;

static int index_member(RtJson *j, const Str *key, size_t at, void *ctx)
{
	IndexRead *r = ctx;
	if (strcmp(key->s, "weight_map"))
		return rt_json_skip(j, MAX_JSON_DEPTH);
	if (r->seen)
		return rt_json_fail(j, at, "'weight_map' is given twice");
	r->seen = true;
	return object(j, "weight_map must be an object of tensor names to files", weight, r->x, false);
}

int rt_hf_index_parse(const void *buf, size_t len, const char *file, RtHfIndex *x, char *err, size_t errlen)
{
	memset(x, 0, sizeof *x);
	RtJson j = {.s = buf, .n = buf ? len : 0, .ends = "the text ends early"};
	IndexRead r = {.x = x};
	int rc = object(&j, "the index must be a JSON object", index_member, &r, true);
	if (rc)
		json_error(&j, file, err, errlen);
	else if (!x->n)
		rc = -1, rt_errf(err, errlen, "%s: %s", file, r.seen ? "weight_map names no tensors"
								: "no weight_map (which file holds each tensor)");
	if (rc)
		rt_hf_index_free(x);
	return rc;
}

/* ---------------------------------------------------------------- reading a checkpoint */

void rt_hf_free(RtHfCkpt *h)
{
	for (int i = 0; i < h->nshards; i++)
		rt_ckpt_free(&h->shards[i]);
	free(h->shards);
	free(h->t);
	memset(h, 0, sizeof *h);
}

static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), m = strlen(tail);
	return n >= m && !strcmp(s + n - m, tail);
}

/* Every tensor of the shards, each where the index puts it. */
static int gather(RtHfCkpt *h, const RtHfIndex *x, const char *dir, char *err, size_t errlen)
{
	if (!(h->t = calloc((size_t)x->n + 1, sizeof *h->t))) {
		rt_errf(err, errlen, "%s: out of memory", dir);
		return -1;
	}
	for (int f = 0; f < h->nshards; f++) {
		const RtCkpt *c = &h->shards[f];
		for (int i = 0; i < c->n; i++) {
			int k = 0;
			while (k < x->n && strcmp(x->names[k], c->t[i].name))
				k++;
			if (k == x->n || x->file_of[k] != f) {
				rt_errf(err, errlen, "%s/%s holds '%s', which the index %s", dir, x->files[f], c->t[i].name,
					k == x->n ? "does not list" : "puts in another file");
				return -1;
			}
			h->t[k] = &c->t[i];
		}
	}
	for (int k = 0; k < x->n; k++)
		if (!h->t[k]) {
			rt_errf(err, errlen, "%s/%s has no tensor '%s', which the index puts there", dir, x->files[x->file_of[k]],
				x->names[k]);
			return -1;
		}
	h->n = x->n;
	return 0;
}

static int read_sharded(const char *index, const char *dir, RtHfCkpt *h, char *err, size_t errlen)
{
	size_t len;
	char *text = mgl_read_whole(index, MAX_JSON_BYTES, "indexes", &len, err, errlen);
	if (!text)
		return -1;
	RtHfIndex x;
	int rc = rt_hf_index_parse(text, len, index, &x, err, errlen);
	free(text);
	if (rc)
		return -1;
	if (!(h->shards = calloc((size_t)x.nfiles, sizeof *h->shards))) {
		rt_errf(err, errlen, "%s: out of memory", index);
		rc = -1;
	}
	for (int f = 0; f < x.nfiles && !rc; f++) {
		char *path = malloc(strlen(dir) + strlen(x.files[f]) + 2);
		if (!path) {
			rt_errf(err, errlen, "%s: out of memory", index);
			rc = -1;
			break;
		}
		sprintf(path, "%s/%s", dir, x.files[f]);
		rc = rt_ckpt_read(path, &h->shards[f], err, errlen);
		free(path);
		if (!rc)
			h->nshards++;
	}
	if (!rc)
		rc = gather(h, &x, dir, err, errlen);
	rt_hf_index_free(&x);
	return rc;
}

int rt_hf_read(const char *path, RtHfCkpt *h, char *err, size_t errlen)
{
	memset(h, 0, sizeof *h);
	struct stat st;
	if (stat(path, &st)) {
		rt_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	bool isdir = S_ISDIR(st.st_mode);
	size_t n = strlen(path);
	char *dir = malloc(n + 40), *file = malloc(n + 40);
	int rc = -1;
	if (!dir || !file) {
		rt_errf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	/* the directory, and the file in it: the index where there is one */
	if (isdir) {
		snprintf(dir, n + 40, "%s", path);
		snprintf(file, n + 40, "%s/model.safetensors.index.json", path);
		if (stat(file, &st))
			snprintf(file, n + 40, "%s/model.safetensors", path);
	} else {
		const char *slash = strrchr(path, '/');
		snprintf(dir, n + 40, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
		if (slash == path)
			snprintf(dir, n + 40, "/");
		snprintf(file, n + 40, "%s", path);
	}
	if (ends_with(file, ".json")) {
		rc = read_sharded(file, dir, h, err, errlen);
	} else if ((h->shards = calloc(1, sizeof *h->shards)) && !(rc = rt_ckpt_read(file, h->shards, err, errlen))) {
		h->nshards = 1;
		if (!(h->t = calloc((size_t)h->shards->n + 1, sizeof *h->t))) {
			rt_errf(err, errlen, "%s: out of memory", file);
			rc = -1;
		}
		for (int i = 0; !rc && i < h->shards->n; i++)
			h->t[h->n++] = &h->shards->t[i];
	} else if (!h->shards) {
		rt_errf(err, errlen, "%s: out of memory", path);
	}
	if (rc)
		rt_hf_free(h);
out:
	free(dir);
	free(file);
	return rc;
}
