/* tests/fuzz_checkpoint.c — libFuzzer target: the safetensors reader on arbitrary bytes,
 * then a round trip through the writer.
 *
 * The bytes go to rt_ckpt_parse exactly as given, so a read past `len` is an
 * AddressSanitizer report. A refusal must name the input. Whatever the reader accepts is
 * written again (rt_ckpt_write_stream, F32) and must be read back with the same names,
 * shapes, float bits and metadata, and written again as the very same bytes; mgl's own
 * metadata keys are read, or refused with a message naming the input. A finding is
 * an abort for any of these, or a crash, a sanitizer report, a leak or a timeout.
 */
#include "../runtime/runtime.h"

#include <stdlib.h>
#include <string.h>

#define NAME "fuzz.safetensors"

static _Noreturn void finding(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_checkpoint: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
	abort();
}

/* The checkpoint as safetensors bytes, malloc'd; *len its length. */
static char *write_ckpt(const RtCkpt *c, size_t *len)
{
	char *buf = NULL, err[512];
	FILE *f = open_memstream(&buf, len);
	if (!f)
		abort();
	if (rt_ckpt_write_stream(f, "rewrite", c->t, c->n, (const char *const *)c->keys, (const char *const *)c->vals,
				 c->nmeta, err, sizeof err))
		finding("a checkpoint the reader accepted cannot be written", err);
	if (fclose(f))
		abort();
	return buf;
}

static void same(const RtCkpt *a, const RtCkpt *b)
{
	if (a->n != b->n || a->nmeta != b->nmeta)
		finding("the checkpoint read back has other counts", NULL);
	for (int i = 0; i < a->n; i++) {
		const RtTensor *x = &a->t[i], *y = &b->t[i];
		if (strcmp(x->name, y->name) || x->rank != y->rank || !x->data || !y->data)
			finding("a tensor read back differs", x->name);
		size_t n = 1;
		for (int k = 0; k < x->rank; k++) {
			if (x->shape[k] != y->shape[k] || x->shape[k] < 0)
				finding("a shape read back differs", x->name);
			n *= (size_t)x->shape[k];
		}
		if (memcmp(x->data, y->data, 4 * n))
			finding("data read back differ", x->name);
		if (rt_ckpt_find(a, x->name) != x)
			finding("rt_ckpt_find does not find a tensor", x->name);
	}
	for (int i = 0; i < a->nmeta; i++)
		if (strcmp(a->keys[i], b->keys[i]) || strcmp(a->vals[i], b->vals[i]))
			finding("metadata read back differ", a->keys[i]);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	if (size > 1 << 20)
		return 0;
	RtCkpt c, d;
	char err[512];
	if (rt_ckpt_parse(data, size, NAME, &c, err, sizeof err)) {
		if (strncmp(err, NAME ": ", sizeof NAME + 1))
			finding("refused without naming the input", err);
		if (c.n || c.t || c.buf || c.nmeta)
			finding("a refusal left the RtCkpt filled", err);
		return 0;
	}
	RtCkptMeta m;   /* mgl's keys in the metadata: read, or refused naming the input */
	if (rt_ckpt_meta_read(&c, NAME, &m, err, sizeof err) && strncmp(err, NAME ": ", sizeof NAME + 1))
		finding("metadata refused without naming the input", err);
	size_t n1, n2;
	char *t1 = write_ckpt(&c, &n1);
	if (rt_ckpt_parse(t1, n1, "rewritten", &d, err, sizeof err))
		finding("a checkpoint the reader accepted was written as bytes it refuses", err);
	same(&c, &d);
	char *t2 = write_ckpt(&d, &n2);
	if (n1 != n2 || memcmp(t1, t2, n1))
		finding("writing the checkpoint read back gives other bytes", NULL);
	free(t1);
	free(t2);
	rt_ckpt_free(&c);
	rt_ckpt_free(&d);
	return 0;
}
