/* tests/fuzz_hf.c — libFuzzer target: what mgl import reads besides safetensors files, on
 * arbitrary bytes. The first byte picks the reader: 0 config.json (rt_hf_config_parse), 1
 * model.safetensors.index.json (rt_hf_index_parse), anything else a safetensors file
 * (rt_ckpt_parse) whose tensors go through rt_hf_to_mgl, GPT-2's layout mapped to mgl's.
 * The rest goes to the reader exactly as given, so a read past it is an AddressSanitizer
 * report. A refusal must name the input; what is accepted must be what the readers promise
 * (sizes of at least 1, file names without '/', mapped tensors of the shapes their
 * sources give). A finding is an abort for any of these, or a crash, a sanitizer report, a
 * leak or a timeout.
 */
#include "../runtime/runtime.h"

#include <stdlib.h>
#include <string.h>

#define NAME "fuzz.json"

static _Noreturn void finding(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_hf: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
	abort();
}

static void refused(const char *err)
{
	if (!strstr(err, NAME))
		finding("a refusal does not name the input", err);
}

static void config(const uint8_t *p, size_t n)
{
	RtHfConfig c;
	char err[512] = "";
	if (rt_hf_config_parse(p, n, NAME, &c, err, sizeof err))
		return refused(err);
	if (c.vocab_size < 1 || c.n_positions < 1 || c.n_embd < 1 || c.n_layer < 1 || c.n_head < 1 || c.n_inner < 0)
		finding("a config.json with a size below 1 was accepted", NULL);
}

static void index_(const uint8_t *p, size_t n)
{
	RtHfIndex x;
	char err[512] = "";
	if (rt_hf_index_parse(p, n, NAME, &x, err, sizeof err))
		return refused(err);
	if (!x.n)
		finding("an index of no tensors was accepted", NULL);
	for (int i = 0; i < x.n; i++)
		if (x.file_of[i] < 0 || x.file_of[i] >= x.nfiles || strchr(x.files[x.file_of[i]], '/'))
			finding("an index names a file that is not beside it", NULL);
	rt_hf_index_free(&x);
}

static void tensors(const uint8_t *p, size_t n)
{
	RtCkpt c;
	char err[512] = "";
	if (rt_ckpt_parse(p, n, NAME, &c, err, sizeof err))
		return refused(err);
	const RtTensor **t = malloc(((size_t)c.n + 1) * sizeof *t);
	for (int i = 0; i < c.n; i++)
		t[i] = &c.t[i];
	RtTensors o;
	if (rt_hf_to_mgl(t, c.n, NAME, &o, err, sizeof err)) {
		refused(err);
	} else {
		for (int i = 0; i < o.n; i++) {
			const RtTensor *src = NULL;
			for (int k = 0; k < c.n && !src; k++)
				src = !strcmp(c.t[k].name, o.from[i]) ? &c.t[k] : NULL;
			if (!src || src->rank != o.t[i].rank)
				finding("a mapped tensor does not come from a tensor of its rank", o.t[i].name);
		}
		rt_tensors_free(&o);
	}
	free(t);
	rt_ckpt_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	(data[0] == 0 ? config : data[0] == 1 ? index_ : tensors)(data + 1, size - 1);
	return 0;
}
