/* cli/export.c — `mgl export`: a checkpoint (or any safetensors file of mgl's parameter
 * names) under Hugging Face's GPT-2 names, so PyTorch and transformers can load it.
 *
 * mgl keeps linear weights as [out, in] and q, k, v apart; GPT-2's Conv1D keeps them as
 * [in, out] and fuses q, k, v into one c_attn. The table below maps one to the other for
 * models/gpt2.mgl; tensors it does not know (optimizer moments) are left out.
 */
#include "cli.h"
#include "../runtime/runtime.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* mgl suffix within a layer -> GPT-2 name within transformer.h.N, transposed or not */
static const struct { const char *mgl, *hf; bool transpose; } layer_map[] = {
	{"attention.ln.weight", "ln_1.weight", false}, {"attention.ln.bias", "ln_1.bias", false},
	{"attention.o.weight", "attn.c_proj.weight", true}, {"attention.o.bias", "attn.c_proj.bias", false},
	{"mlp.ln.weight", "ln_2.weight", false},       {"mlp.ln.bias", "ln_2.bias", false},
	{"mlp.fc.weight", "mlp.c_fc.weight", true},     {"mlp.fc.bias", "mlp.c_fc.bias", false},
	{"mlp.proj.weight", "mlp.c_proj.weight", true}, {"mlp.proj.bias", "mlp.c_proj.bias", false},
};
static const struct { const char *mgl, *hf; } top_map[] = {
	{"wte", "transformer.wte.weight"}, {"wpe", "transformer.wpe.weight"},
	{"ln_f.weight", "transformer.ln_f.weight"}, {"ln_f.bias", "transformer.ln_f.bias"},
};

static RtTensor *add(RtTensor **out, int *n, int *cap, const char *name, int rank, const int64_t *shape)
{
	if (*n == *cap)
		*out = realloc(*out, (size_t)(*cap = 2 * *cap + 16) * sizeof **out);
	RtTensor *t = &(*out)[(*n)++];
	memset(t, 0, sizeof *t);
	t->name = strdup(name);
	t->rank = rank;
	int64_t numel = 1;
	for (int i = 0; i < rank; i++)
		numel *= t->shape[i] = shape[i];
	t->data = calloc((size_t)numel, sizeof *t->data);
	return t;
}

int cmd_export(Args *a)
{
	if (!a->out)
		return usage_error("export", "-o OUT.safetensors is required%s", "");
	char path[4096], err[1024];
	struct stat st;
	snprintf(path, sizeof path, !stat(a->file, &st) && S_ISDIR(st.st_mode) ? "%s/checkpoint.safetensors" : "%s",
		 a->file);
	RtCkpt c;
	if (rt_ckpt_read(path, &c, err, sizeof err)) {
		fprintf(stderr, "mgl: error: %s\n", err);
		return 1;
	}
	RtTensor *out = NULL;
	int n = 0, cap = 0, layers = 0, status = 0;
	for (size_t k = 0; k < sizeof top_map / sizeof top_map[0]; k++) {
		const RtTensor *t = rt_ckpt_find(&c, top_map[k].mgl);
		if (t)
			memcpy(add(&out, &n, &cap, top_map[k].hf, t->rank, t->shape)->data, t->data,
			       (size_t)(t->rank == 2 ? t->shape[0] * t->shape[1] : t->shape[0]) * sizeof(float));
	}
	for (int l = 0;; l++, layers++) {
		char name[256], hf[256];
		snprintf(name, sizeof name, "layers.%d.attention.q.weight", l);
		const RtTensor *q = rt_ckpt_find(&c, name);
		if (!q)
			break;
		const RtTensor *qkv[2][3];
		for (int w = 0; w < 2; w++)
			for (int p = 0; p < 3; p++) {
				snprintf(name, sizeof name, "layers.%d.attention.%c.%s", l, "qkv"[p], w ? "bias" : "weight");
				qkv[w][p] = rt_ckpt_find(&c, name);
				if (!qkv[w][p] || qkv[w][p]->shape[0] != q->shape[0]) {
					fprintf(stderr, "mgl: error: %s: '%s' is missing or misshapen: not models/gpt2.mgl's layout\n",
						path, name);
					status = 1;
					goto out;
				}
			}
		int64_t d = q->shape[0], in = q->shape[1];
		/* c_attn.weight [in, 3d]: column p*d + o holds row o of q, k or v */
		snprintf(hf, sizeof hf, "transformer.h.%d.attn.c_attn.weight", l);
		RtTensor *cw = add(&out, &n, &cap, hf, 2, (int64_t[]){in, 3 * d});
		snprintf(hf, sizeof hf, "transformer.h.%d.attn.c_attn.bias", l);
		RtTensor *cb = add(&out, &n, &cap, hf, 1, (int64_t[]){3 * d});
		for (int p = 0; p < 3; p++)
			for (int64_t o = 0; o < d; o++) {
				cb->data[p * d + o] = qkv[1][p]->data[o];
				for (int64_t i = 0; i < in; i++)
					cw->data[i * 3 * d + p * d + o] = qkv[0][p]->data[o * in + i];
			}
		for (size_t k = 0; k < sizeof layer_map / sizeof layer_map[0]; k++) {
			snprintf(name, sizeof name, "layers.%d.%s", l, layer_map[k].mgl);
			snprintf(hf, sizeof hf, "transformer.h.%d.%s", l, layer_map[k].hf);
			const RtTensor *t = rt_ckpt_find(&c, name);
			if (!t) {
				fprintf(stderr, "mgl: error: %s: no '%s': not models/gpt2.mgl's layout\n", path, name);
				status = 1;
				goto out;
			}
			if (!layer_map[k].transpose) {
				memcpy(add(&out, &n, &cap, hf, t->rank, t->shape)->data, t->data, (size_t)t->shape[0] * sizeof(float));
				continue;
			}
			int64_t R = t->shape[0], C = t->shape[1];
			RtTensor *x = add(&out, &n, &cap, hf, 2, (int64_t[]){C, R});
			for (int64_t r = 0; r < R; r++)
				for (int64_t cc = 0; cc < C; cc++)
					x->data[cc * R + r] = t->data[r * C + cc];
		}
	}
	if (!layers || !rt_ckpt_find(&c, "wte")) {
		fprintf(stderr, "mgl: error: %s holds no GPT-2 layers (layers.0.attention.q.weight, wte): nothing to export\n",
			path);
		status = 1;
		goto out;
	}
	const char *keys[] = {"format"}, *vals[] = {"pt"};
	if (rt_ckpt_write(a->out, out, n, keys, vals, 1, err, sizeof err)) {
		fprintf(stderr, "mgl: error: %s\n", err);
		status = 1;
		goto out;
	}
	printf("%s: %d tensors of %d layers under GPT-2's names (Hugging Face)\n", a->out, n, layers);
out:
	for (int i = 0; i < n; i++) {
		free((char *)out[i].name);
		free(out[i].data);
	}
	free(out);
	rt_ckpt_free(&c);
	return status;
}
