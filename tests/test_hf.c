/* tests/test_hf.c — Hugging Face's GPT-2 read (runtime/hf.c): a one-layer checkpoint
 * written here by hand (its own safetensors writer, F16, BF16 and F32, one file or two
 * shards under an index) comes out under mgl's names with every value where GPT-2's layout
 * says: c_attn split into q, k, v and every Conv1D transposed. Then each kind of bad input
 * is refused with a message naming what is wrong: config.json, the index, the tensors. */
#include "runtime.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[64];

/* GPT-2 of one layer: d 2, vocabulary 3, 2 positions, MLP 4 */
static const struct { const char *name; int rank; int64_t shape[2]; } gpt2[] = {
	{"transformer.wte.weight", 2, {3, 2}}, {"transformer.wpe.weight", 2, {2, 2}},
	{"transformer.ln_f.weight", 1, {2}}, {"transformer.ln_f.bias", 1, {2}},
	{"transformer.h.0.ln_1.weight", 1, {2}}, {"transformer.h.0.ln_1.bias", 1, {2}},
	{"transformer.h.0.attn.c_attn.weight", 2, {2, 6}}, {"transformer.h.0.attn.c_attn.bias", 1, {6}},
	{"transformer.h.0.attn.c_proj.weight", 2, {2, 2}}, {"transformer.h.0.attn.c_proj.bias", 1, {2}},
	{"transformer.h.0.ln_2.weight", 1, {2}}, {"transformer.h.0.ln_2.bias", 1, {2}},
	{"transformer.h.0.mlp.c_fc.weight", 2, {2, 4}}, {"transformer.h.0.mlp.c_fc.bias", 1, {4}},
	{"transformer.h.0.mlp.c_proj.weight", 2, {4, 2}}, {"transformer.h.0.mlp.c_proj.bias", 1, {2}},
};
enum { NT = sizeof gpt2 / sizeof gpt2[0] };

/* Element i of tensor k: a whole number below 256, exact in F16 and BF16. */
static float value(int k, int64_t i) { return (float)(k * 16 + i); }

/* v (a whole number 0..2048) as F16's bits, by its definition */
static uint16_t f16(float v)
{
	if (v == 0)
		return 0;
	int e = 0;
	while ((float)(1 << (e + 1)) <= v)
		e++;
	return (uint16_t)((e + 15) << 10 | (int)((v / (float)(1 << e) - 1) * 1024));
}

static uint16_t bf16(float v)
{
	uint32_t u;
	memcpy(&u, &v, 4);
	return (uint16_t)(u >> 16);
}

/* The elements of tensor k of gpt2 (k == NT: the extra tensor, [1]). */
static int64_t count(int k) { return k == NT ? 1 : gpt2[k].rank == 1 ? gpt2[k].shape[0] : gpt2[k].shape[0] * gpt2[k].shape[1]; }

/* A safetensors file tmpdir/name of the tensors [from, to) of gpt2, and with extra a tensor
 * of that name and shape [1], in dtype ("F32", "F16", "BF16"). */
static void write_st(const char *name, int from, int to, const char *dtype, const char *extra)
{
	char header[4096], path[256];
	size_t at = 0, off = 0, size = strcmp(dtype, "F32") ? 2 : 4;
	int ks[NT + 1], n = 0;
	for (int k = from; k < to; k++)
		ks[n++] = k;
	if (extra)
		ks[n++] = NT;
	at += (size_t)snprintf(header, sizeof header, "{");
	for (int j = 0; j < n; j++) {
		int k = ks[j];
		char shape[32];
		if (k == NT || gpt2[k].rank == 1)
			snprintf(shape, sizeof shape, "[%lld]", (long long)count(k));
		else
			snprintf(shape, sizeof shape, "[%lld,%lld]", (long long)gpt2[k].shape[0], (long long)gpt2[k].shape[1]);
		at += (size_t)snprintf(header + at, sizeof header - at, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,"
				       "\"data_offsets\":[%zu,%zu]}", j ? "," : "", k == NT ? extra : gpt2[k].name, dtype, shape,
				       off, off + (size_t)count(k) * size);
		off += (size_t)count(k) * size;
	}
	at += (size_t)snprintf(header + at, sizeof header - at, "}");
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	uint64_t len = at;
	fwrite(&len, 8, 1, f);
	fwrite(header, 1, at, f);
	for (int j = 0; j < n; j++)
		for (int64_t i = 0; i < count(ks[j]); i++) {
			float v = ks[j] == NT ? 1 : value(ks[j], i);
			uint16_t h = !strcmp(dtype, "F16") ? f16(v) : bf16(v);
			fwrite(size == 4 ? (const void *)&v : (const void *)&h, size, 1, f);
		}
	ck_assert_int_eq(fclose(f), 0);
}

static void write_text(const char *name, const char *text)
{
	char path[256];
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

/* The index of the two shards a.safetensors (gpt2's first 7) and b.safetensors. */
static void write_index(void)
{
	char text[4096];
	size_t at = (size_t)snprintf(text, sizeof text, "{\"metadata\": {\"total_size\": 1, \"x\": [1, {\"y\": null}]},\n"
				     " \"weight_map\": {");
	for (int k = 0; k < NT; k++)
		at += (size_t)snprintf(text + at, sizeof text - at, "%s\"%s\": \"%s\"", k ? ", " : "", gpt2[k].name,
				       k < 7 ? "a.safetensors" : "b.safetensors");
	snprintf(text + at, sizeof text - at, "}}\n");
	write_text("model.safetensors.index.json", text);
}

static const RtTensor *find(const RtTensors *o, const char *name)
{
	for (int i = 0; i < o->n; i++)
		if (!strcmp(o->t[i].name, name))
			return &o->t[i];
	ck_abort_msg("no '%s'", name);
	return NULL;
}

/* Every tensor of o where GPT-2's layout puts it. */
static void check_layout(const RtTensors *o)
{
	ck_assert_int_eq(o->n, 4 + 6 + 10);   /* wte, wpe, ln_f; q, k, v; the table's ten */
	ck_assert_int_eq(o->layers, 1);
	const RtTensor *wte = find(o, "wte");
	ck_assert(wte->shape[0] == 3 && wte->shape[1] == 2 && wte->data[5] == value(0, 5));
	for (int p = 0; p < 3; p++) {   /* q, k, v: [d, in], row r is column p d + r of c_attn [in, 3 d] */
		char name[64];
		snprintf(name, sizeof name, "layers.0.attention.%c.weight", "qkv"[p]);
		const RtTensor *w = find(o, name);
		ck_assert(w->rank == 2 && w->shape[0] == 2 && w->shape[1] == 2);
		for (int r = 0; r < 2; r++)
			for (int i = 0; i < 2; i++)
				ck_assert_float_eq(w->data[r * 2 + i], value(6, i * 6 + p * 2 + r));
		snprintf(name, sizeof name, "layers.0.attention.%c.bias", "qkv"[p]);
		const RtTensor *b = find(o, name);
		ck_assert(b->data[0] == value(7, 2 * p) && b->data[1] == value(7, 2 * p + 1));
	}
	const RtTensor *fc = find(o, "layers.0.mlp.fc.weight");   /* [out 4, in 2] from c_fc [in 2, out 4] */
	ck_assert(fc->shape[0] == 4 && fc->shape[1] == 2);
	for (int r = 0; r < 4; r++)
		for (int c = 0; c < 2; c++)
			ck_assert_float_eq(fc->data[r * 2 + c], value(12, c * 4 + r));
	const RtTensor *proj = find(o, "layers.0.mlp.proj.weight");   /* [2, 4] from [4, 2] */
	ck_assert(proj->shape[0] == 2 && proj->shape[1] == 4 && proj->data[1] == value(14, 2));
	ck_assert_float_eq(find(o, "layers.0.mlp.ln.bias")->data[1], value(11, 1));
}

/* rt_hf_read of path, then rt_hf_to_mgl: 0, or -1 with err. */
static int import(const char *path, RtTensors *o, char *err, size_t errlen)
{
	char full[256];
	snprintf(full, sizeof full, "%s%s%s", tmpdir, *path ? "/" : "", path);
	RtHfCkpt h;
	if (rt_hf_read(full, &h, err, errlen))
		return -1;
	int rc = rt_hf_to_mgl(h.t, h.n, full, o, err, errlen);
	rt_hf_free(&h);
	return rc;
}

static void clean(void)
{
	static const char *const files[] = {"model.safetensors", "model.safetensors.index.json", "a.safetensors",
					     "b.safetensors"};
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char path[256];
		snprintf(path, sizeof path, "%s/%s", tmpdir, files[i]);
		unlink(path);
	}
}

START_TEST(every_dtype_one_file_or_shards)
{
	static const char *const dtypes[] = {"F32", "F16", "BF16"};
	for (int d = 0; d < 3; d++) {
		char err[1024];
		RtTensors o;
		clean();
		write_st("model.safetensors", 0, NT, dtypes[d], NULL);
		ck_assert_msg(!import("", &o, err, sizeof err), "%s: %s", dtypes[d], err);
		check_layout(&o);
		rt_tensors_free(&o);
		/* the same as two shards under an index, the second half in another dtype */
		write_st("a.safetensors", 0, 7, dtypes[d], NULL);
		write_st("b.safetensors", 7, NT, dtypes[(d + 1) % 3], NULL);
		write_index();
		ck_assert_msg(!import("", &o, err, sizeof err), "%s sharded: %s", dtypes[d], err);   /* the index first */
		check_layout(&o);
		rt_tensors_free(&o);
		ck_assert(!import("model.safetensors.index.json", &o, err, sizeof err));
		rt_tensors_free(&o);
	}
}
END_TEST

/* the error of importing what is in tmpdir now has want in it */
static void refused(const char *path, const char *want)
{
	char err[1024] = "";
	RtTensors o;
	ck_assert_msg(import(path, &o, err, sizeof err), "accepted, wanted '%s'", want);
	ck_assert_msg(strstr(err, want), "'%s' lacks '%s'", err, want);
}

START_TEST(bad_checkpoints)
{
	clean();
	write_st("model.safetensors", 0, NT, "F32", "transformer.h.0.attn.extra");
	refused("", "holds a tensor 'transformer.h.0.attn.extra' that GPT-2's layout has no place for");
	write_st("model.safetensors", 0, NT - 1, "F32", NULL);
	refused("", "has no tensor 'transformer.h.0.mlp.c_proj.bias'");
	write_st("model.safetensors", 0, NT, "F32", "wte.weight");   /* both spellings: twice */
	refused("", "holds 'transformer.wte.weight' and 'wte.weight': the same tensor twice");
	write_st("model.safetensors", 0, NT, "F32", "lm_head.weight");   /* [1], not wte */
	refused("", "lm_head.weight is not transformer.wte.weight");
	write_st("model.safetensors", 0, NT, "F32", "transformer.h.0.attn.masked_bias");   /* a buffer: passed over */
	RtTensors o;
	char err[1024];
	ck_assert_msg(!import("", &o, err, sizeof err), "%s", err);
	rt_tensors_free(&o);
	clean();
	write_st("a.safetensors", 0, 7, "F32", NULL);
	write_st("b.safetensors", 7, NT - 1, "F32", NULL);
	write_index();
	refused("", "b.safetensors has no tensor 'transformer.h.0.mlp.c_proj.bias', which the index puts there");
	write_st("b.safetensors", 7, NT, "F32", "stray");
	refused("", "b.safetensors holds 'stray', which the index does not list");
	write_st("b.safetensors", 6, NT, "F32", NULL);
	refused("", "holds 'transformer.h.0.attn.c_attn.weight', which the index puts in another file");
	unlink(strcat(strcpy(err, tmpdir), "/b.safetensors"));
	refused("", "b.safetensors: cannot open");
	write_text("model.safetensors.index.json", "{\"weight_map\": {\"wte.weight\": \"../a.safetensors\"}}");
	refused("", "the file of 'wte.weight' must be a file name beside the index, not '../a.safetensors'");
	clean();
	refused("", "model.safetensors: cannot open");
}
END_TEST

/* rt_hf_index_parse and rt_hf_config_parse of text: the error has want ("" accepted) */
static void index_is(const char *text, const char *want)
{
	char err[512] = "";
	RtHfIndex x;
	int rc = rt_hf_index_parse(text, strlen(text), "i.json", &x, err, sizeof err);
	ck_assert_msg(*want ? rc && strstr(err, want) : !rc, "index %s: '%s', wanted '%s'", text, err, want);
	if (!rc)
		rt_hf_index_free(&x);
}

static void config_is(const char *text, const char *want, RtHfConfig *c)
{
	char err[512] = "";
	int rc = rt_hf_config_parse(text, strlen(text), "config.json", c, err, sizeof err);
	ck_assert_msg(*want ? rc && strstr(err, want) : !rc, "config %s: '%s', wanted '%s'", text, err, want);
}

START_TEST(bad_json)
{
	index_is("{\"weight_map\": {\"a\": \"x.safetensors\", \"b\": \"y.safetensors\"}, \"metadata\": {}}", "");
	index_is("{}", "no weight_map");
	index_is("{\"weight_map\": {}}", "weight_map names no tensors");
	index_is("{\"weight_map\": {\"a\": \"x\", \"a\": \"x\"}}", "'a' is given twice");
	index_is("{\"weight_map\": {\"a\": \"..\"}}", "must be a file name beside the index");
	index_is("{\"weight_map\": {\"a\": 1}}", "a tensor's file must be a string");
	index_is("{\"weight_map\": {\"a\": \"x\"}} x", "at byte 28: something follows the object");
	index_is("{\"weight_map\": {\"a\": \"x\"}", "the text ends early");
	char deep[300];
	memset(deep, '[', sizeof deep);
	memcpy(deep, "{\"m\": ", 6);
	deep[sizeof deep - 1] = 0;
	index_is(deep, "nested more than 64 deep");
	RtHfConfig c;
	config_is("{\"n_embd\": 64, \"n_inner\": null, \"n_layer\": 2, \"architectures\": [\"GPT2LMHeadModel\"], "
		  "\"layer_norm_epsilon\": 1e-06, \"task_specific_params\": {\"a\": {\"b\": [true, false, 1.5e3]}}, "
		  "\"scale_attn_weights\": false}", "", &c);
	ck_assert(c.n_embd == 64 && c.n_inner == 0 && c.n_layer == 2 && c.layer_norm_epsilon == 1e-6);
	ck_assert(c.vocab_size == 50257 && c.n_head == 12 && !strcmp(c.activation_function, "gelu_new"));   /* defaults */
	ck_assert(!c.scale_attn_weights);
	config_is("{\"n_embd\": -1}", "n_embd must be a non-negative integer", &c);
	config_is("{\"n_embd\": 0}", "n_embd is 0", &c);
	config_is("{\"n_embd\": 1, \"n_embd\": 2}", "'n_embd' is given twice", &c);
	config_is("{\"n_head\": 1e3}", "n_head", &c);
	config_is("{\"scale_attn_weights\": 1}", "scale_attn_weights must be true or false", &c);
	config_is("{\"activation_function\": 3}", "activation_function must be a string", &c);
	config_is("[]", "config.json: at byte 1: config.json must be a JSON object", &c);
	config_is("{\"a\": tru}", "expected a value", &c);
}
END_TEST

int main(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/mgl_test_hf_XXXXXX");
	if (!mkdtemp(tmpdir))
		return EXIT_FAILURE;
	Suite *s = suite_create("hf");
	TCase *tc = tcase_create("gpt2");
	tcase_add_test(tc, every_dtype_one_file_or_shards);
	tcase_add_test(tc, bad_checkpoints);
	tcase_add_test(tc, bad_json);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	clean();
	rmdir(tmpdir);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
