/* tests/test_tensorboard.c — `--tensorboard`'s event files, read back by a reader written
 * here from the formats' descriptions alone (its own bitwise CRC-32C, TFRecord framing, a
 * protobuf decoder): every record's two checksums, the Event and Summary fields, the tags
 * and steps of a training run and its numbers against the run's JSON log; a flipped byte
 * anywhere is caught; a resumed run adds a file; write errors are reported. */
#include "mgl.h"
#include "backend.h"

#include <check.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[64];

/* the wall clock the writer reads (time() may lag it by a tick) */
static double wall_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---------------------------------------------------------------- the independent reader */

/* CRC-32C a bit at a time (the writer uses a table) */
static uint32_t crc32c_bits(const unsigned char *p, size_t n)
{
	uint32_t c = 0xFFFFFFFFu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
	}
	return ~c;
}

static uint32_t unmask(uint32_t m)
{
	uint32_t r = m - 0xA282EAD8u;
	return (r >> 17) | (r << 15);
}

static uint64_t le_at(const unsigned char *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

enum { MAX_VALUES = 16, MAX_EVENTS = 64 };
typedef struct {
	double wall_time;
	int64_t step;
	char file_version[32];
	int session_status;        /* -1: no session_log */
	int nvalues;
	char tag[MAX_VALUES][64];
	float value[MAX_VALUES];
} Event;

/* A protobuf field at *p (below end): its number, wire type, and the varint, fixed or
 * length-delimited payload. 0, or -1 where the bytes are not a field. */
typedef struct {
	int field, wire;
	uint64_t v;
	const unsigned char *data;
	size_t len;
} Field;

static int get_varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (*p >= end)
			return -1;
		unsigned char b = *(*p)++;
		*v |= (uint64_t)(b & 0x7F) << shift;
		if (!(b & 0x80))
			return 0;
	}
	return -1;
}

static int get_field(const unsigned char **p, const unsigned char *end, Field *f)
{
	uint64_t k;
	if (get_varint(p, end, &k) || k >> 3 == 0)
		return -1;
	f->field = (int)(k >> 3);
	f->wire = (int)(k & 7);
	size_t n = f->wire == 1 ? 8 : f->wire == 5 ? 4 : 0;
	if (f->wire == 0)
		return get_varint(p, end, &f->v);
	if (f->wire == 2) {
		if (get_varint(p, end, &f->v) || f->v > (uint64_t)(end - *p))
			return -1;
		n = (size_t)f->v;
	} else if (!n || (size_t)(end - *p) < n) {
		return -1;
	}
	f->data = *p;
	f->len = n;
	f->v = f->wire == 2 ? f->v : le_at(*p, (int)n);
	*p += n;
	return 0;
}

/* Summary.Value: tag 1, simple_value 2 */
static int decode_value(const unsigned char *p, const unsigned char *end, Event *e)
{
	if (e->nvalues == MAX_VALUES)
		return -1;
	int i = e->nvalues++;
	bool tagged = false, valued = false;
	Field f;
	while (p < end) {
		if (get_field(&p, end, &f))
			return -1;
		if (f.field == 1 && f.wire == 2 && f.len < sizeof e->tag[i]) {
			memcpy(e->tag[i], f.data, f.len);
			e->tag[i][f.len] = 0;
			tagged = true;
		} else if (f.field == 2 && f.wire == 5) {
			uint32_t u = (uint32_t)f.v;
			memcpy(&e->value[i], &u, 4);
			valued = true;
		} else {
			return -1;
		}
	}
	return tagged && valued ? 0 : -1;
}

/* Event: wall_time 1, step 2, file_version 3, summary 5 (values 1), session_log 7 (status 1) */
static int decode_event(const unsigned char *p, size_t n, Event *e)
{
	const unsigned char *end = p + n;
	memset(e, 0, sizeof *e);
	e->session_status = -1;
	Field f, g;
	while (p < end) {
		if (get_field(&p, end, &f))
			return -1;
		if (f.field == 1 && f.wire == 1) {
			memcpy(&e->wall_time, &f.v, 8);
		} else if (f.field == 2 && f.wire == 0) {
			e->step = (int64_t)f.v;
		} else if (f.field == 3 && f.wire == 2 && f.len < sizeof e->file_version) {
			memcpy(e->file_version, f.data, f.len);
		} else if (f.field == 5 && f.wire == 2) {
			for (const unsigned char *q = f.data; q < f.data + f.len;)
				if (get_field(&q, f.data + f.len, &g) || g.field != 1 || g.wire != 2 ||
				    decode_value(g.data, g.data + g.len, e))
					return -1;
		} else if (f.field == 7 && f.wire == 2) {
			const unsigned char *q = f.data;
			if (get_field(&q, f.data + f.len, &g) || g.field != 1 || g.wire != 0 || q != f.data + f.len)
				return -1;
			e->session_status = (int)g.v;
		} else {
			return -1;
		}
	}
	return 0;
}

/* The events of a file's bytes: their count, or -1 with why in why. */
static int read_events(const unsigned char *b, size_t n, Event *ev, int max, char *why, size_t whylen)
{
	int k = 0;
	for (size_t at = 0; at < n; k++) {
		if (n - at < 12)
			return snprintf(why, whylen, "record %d: the file ends in its header", k), -1;
		uint64_t len = le_at(b + at, 8);
		if (crc32c_bits(b + at, 8) != unmask((uint32_t)le_at(b + at + 8, 4)))
			return snprintf(why, whylen, "record %d: the length's CRC is wrong", k), -1;
		if (len > n - at - 12 || n - at - 12 - len < 4)
			return snprintf(why, whylen, "record %d: the file ends in its data", k), -1;
		const unsigned char *data = b + at + 12;
		if (crc32c_bits(data, len) != unmask((uint32_t)le_at(data + len, 4)))
			return snprintf(why, whylen, "record %d: the data's CRC is wrong", k), -1;
		if (k == max || decode_event(data, len, &ev[k]))
			return snprintf(why, whylen, "record %d: not an Event this reader knows", k), -1;
		at += 12 + len + 4;
	}
	return k;
}

static unsigned char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	ck_assert_msg(f, "cannot open %s", path);
	unsigned char *b = malloc(1 << 20);
	*n = fread(b, 1, 1 << 20, f);
	fclose(f);
	return b;
}

static int by_name(const void *a, const void *b) { return strcmp(a, b); }

/* The events files in dir, sorted (as TensorBoard takes them): their count. */
static int events_files(const char *dir, char names[][512], int max)
{
	DIR *d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		if (!strncmp(e->d_name, "events.out.tfevents.", 20) && n < max)
			snprintf(names[n++], 512, "%s/%s", dir, e->d_name);
	closedir(d);
	qsort(names, (size_t)n, 512, by_name);
	return n;
}

static const float *find(const Event *e, const char *tag)
{
	for (int i = 0; i < e->nvalues; i++)
		if (!strcmp(e->tag[i], tag))
			return &e->value[i];
	return NULL;
}

/* ---------------------------------------------------------------- a training run */

typedef struct {
	MglCtx c;
	MglPlan *p;
} Compiled;

static MglPlan *compile(Compiled *k, MglTarget t)
{
	memset(k, 0, sizeof *k);
	jmp_buf jb;
	k->c.fail = &jb;
	MglOptions opt = {.preset = "tiny"};
	if (!setjmp(jb)) {
		MglGraph *g = mgl_compile_file(&k->c, "models/gpt2.mgl", &opt);
		if (g)
			k->p = mgl_build_plan(&k->c, g, &t);
	}
	ck_assert_ptr_nonnull(k->p);
	return k->p;
}

static const char *shard(const char *name, int64_t n)
{
	static char path[128];
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	uint16_t *t = malloc((size_t)n * sizeof *t);
	const char *text = "the quick brown fox jumps over the lazy dog; ";
	for (int64_t i = 0; i < n; i++)
		t[i] = (uint16_t)text[i % 45];
	char err[256];
	ck_assert_msg(!rt_shard_write(path, t, n, err, sizeof err), "%s", err);
	free(t);
	return path;
}

/* steps of gpt2 tiny at tp 2, evaluated every 3, logged to log and tb; from resume if given */
static void train(const char *log, const char *tb, int64_t steps, const char *save, const char *resume)
{
	char data[128];
	snprintf(data, sizeof data, "%s", shard("t.bin", 20000));
	MglTarget t = {.tp = 2, .dp = 1, .batch = 2, .seq = 32, .act_dtype = MGL_F32};
	Compiled k;
	MglPlan *p = compile(&k, t);
	RtTrainOpts o = {.data = data, .val = data, .steps = steps, .accum = 2, .lr = 3e-3, .min_lr = 3e-4, .warmup = 2,
			 .weight_decay = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .clip = 1.0, .seed = 5,
			 .eval_every = 3, .eval_batches = 2, .model_name = "gpt2", .model_source = "", .tokenizer = "bytes",
			 .log_path = log, .tensorboard = tb, .save_dir = save, .resume_dir = resume, .flops = 3e9};
	RtTrainResult r;
	char err[512];
	ck_assert_msg(!rt_train(p, &rt_cpu_backend, &o, &r, err, sizeof err), "%s", err);
	mgl_arena_free(&k.c.arena);
}

/* A JSON log's numbers, by step (1..): NAN where a line lacks the key. */
typedef struct {
	double loss, lr, grad_norm, tokens_per_s, val_loss;
} LogLine;

static double key_of(const char *line, const char *key)
{
	char k[32];
	snprintf(k, sizeof k, "\"%s\": ", key);
	const char *at = strstr(line, k);
	return at ? strtod(at + strlen(k), NULL) : NAN;
}

static int read_log(const char *path, LogLine *l, int max)
{
	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	char line[512];
	int n = 0;
	while (fgets(line, sizeof line, f)) {
		int s = (int)key_of(line, "step");
		ck_assert_int_eq(s, n + 1);
		ck_assert_int_lt(n, max);
		l[n++] = (LogLine){key_of(line, "loss"), key_of(line, "lr"), key_of(line, "grad_norm"),
				   key_of(line, "tokens_per_s"), key_of(line, "val_loss")};
	}
	fclose(f);
	return n;
}

/* a float32 of x against x printed with 6 decimals (%.6f) or 6 significant digits (%.6g) */
static void same(float tb, double logged, bool decimals, const char *what, int step)
{
	double printed = decimals ? 5e-7 : 5e-6 * fabs(logged);
	ck_assert_msg(fabs(tb - logged) <= printed + 1.2e-7 * fabs(logged), "step %d: %s %.9g in TensorBoard, %.9g in the log",
		      step, what, (double)tb, logged);
}

/* ---------------------------------------------------------------- tests */

START_TEST(crc32c_vector)
{
	ck_assert_uint_eq(rt_crc32c("123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(crc32c_bits((const unsigned char *)"123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(rt_crc32c("", 0), 0);
	unsigned char b[1000];
	for (size_t i = 0; i < sizeof b; i++)
		b[i] = (unsigned char)rt_mix64(i);
	for (size_t n = 0; n <= sizeof b; n += 37)
		ck_assert_uint_eq(rt_crc32c(b, n), crc32c_bits(b, n));
}
END_TEST

/* 7 steps evaluated at 3, 6 and 7 (the last): the file version, a SessionLog START at step 1,
 * then an event a step with every tag, the validation where the log has it, and the log's
 * numbers. */
START_TEST(training_writes_what_the_log_has)
{
	char log[128], tb[128], names[4][512];
	snprintf(log, sizeof log, "%s/one.jsonl", tmpdir);
	snprintf(tb, sizeof tb, "%s/runs/one", tmpdir);   /* runs/ is created too */
	double t0 = wall_now();
	train(log, tb, 7, NULL, NULL);
	LogLine l[8];
	ck_assert_int_eq(read_log(log, l, 8), 7);
	ck_assert_int_eq(events_files(tb, names, 4), 1);
	char host[256] = "";
	gethostname(host, sizeof host - 1);
	char *base = strrchr(names[0], '/') + 1, want[400];
	snprintf(want, sizeof want, ".%s.%ld", host, (long)getpid());
	ck_assert_msg(strstr(base, want) && strtod(base + 20, NULL) >= floor(t0), "%s", base);
	size_t n;
	unsigned char *b = slurp(names[0], &n);
	Event ev[MAX_EVENTS];
	char why[128] = "";
	int ne = read_events(b, n, ev, MAX_EVENTS, why, sizeof why);
	ck_assert_msg(ne == 9, "%d events: %s", ne, why);
	ck_assert_str_eq(ev[0].file_version, "brain.Event:2");
	ck_assert(ev[0].step == 0 && ev[0].nvalues == 0 && ev[0].session_status == -1);
	ck_assert(ev[1].step == 1 && ev[1].session_status == 1 && ev[1].nvalues == 0);   /* START */
	static const char *const every[] = {"lm loss", "learning-rate", "grad-norm", "iteration-time", "tokens-per-sec",
					    "throughput", "mem-allocated-bytes"};
	for (int k = 1; k < 8; k++) {
		const Event *e = &ev[k + 1];
		ck_assert_int_eq(e->step, k);   /* one event a step, in order */
		ck_assert_msg(e->wall_time >= t0 && e->wall_time <= wall_now() &&
				      e->wall_time >= ev[k].wall_time, "step %d: wall time %.3f, the event before %.3f, started %.3f", k,
			      e->wall_time, ev[k].wall_time, t0);
		for (size_t i = 0; i < sizeof every / sizeof every[0]; i++)
			ck_assert_msg(find(e, every[i]), "step %d has no '%s'", k, every[i]);
		ck_assert_ptr_null(find(e, "mem-device-used-bytes"));   /* the cpu cannot say */
		same(*find(e, "lm loss"), l[k - 1].loss, true, "loss", k);
		same(*find(e, "learning-rate"), l[k - 1].lr, false, "lr", k);
		same(*find(e, "grad-norm"), l[k - 1].grad_norm, false, "grad_norm", k);
		ck_assert(fabs(*find(e, "tokens-per-sec") - l[k - 1].tokens_per_s) <= 0.05 + 1e-6 * l[k - 1].tokens_per_s);
		/* a rank's FLOPs (3e9 a micro-batch, 2 of them) over the step's time; tokens over it */
		double secs = *find(e, "iteration-time");
		ck_assert_double_eq_tol(*find(e, "throughput"), 6e9 / secs / 1e12, 1e-5 * 6e9 / secs / 1e12);
		ck_assert_double_eq_tol(*find(e, "tokens-per-sec"), 2 * 32 * 2 / secs, 1e-5 * 128 / secs);
		ck_assert(*find(e, "mem-allocated-bytes") > 1e5);   /* 120,000 parameters, 3 copies */
		bool evaluated = k % 3 == 0 || k == 7;
		ck_assert_int_eq(!isnan(l[k - 1].val_loss), evaluated);
		ck_assert_int_eq(find(e, "lm loss validation") != NULL, evaluated);
		ck_assert_int_eq(find(e, "lm loss validation ppl") != NULL, evaluated);
		if (evaluated) {
			same(*find(e, "lm loss validation"), l[k - 1].val_loss, true, "val_loss", k);
			same(*find(e, "lm loss validation ppl"), exp(l[k - 1].val_loss), false, "val_ppl", k);
		}
	}
	ck_assert(*find(&ev[8], "lm loss") < *find(&ev[2], "lm loss"));   /* it learns: real numbers */

	/* every byte of the file flipped in turn: the reader says what is wrong, never reads on */
	for (size_t i = 0; i < n; i++) {
		b[i] ^= 0x20;
		ck_assert_msg(read_events(b, n, ev, MAX_EVENTS, why, sizeof why) < 0, "byte %zu flipped was not noticed", i);
		b[i] ^= 0x20;
	}
	ck_assert_int_eq(read_events(b, n, ev, MAX_EVENTS, why, sizeof why), 9);
	ck_assert_int_lt(read_events(b, n - 1, ev, MAX_EVENTS, why, sizeof why), 0);   /* cut short */
	ck_assert_str_eq(why, "record 8: the file ends in its data");
	free(b);
}
END_TEST

/* A resumed run adds a file beside the first, which stays as it was: its file version,
 * a SessionLog START at the step it resumes with, and its steps. */
START_TEST(resume_adds_a_file)
{
	char log[128], tb[128], ck[128], names[4][512];
	snprintf(log, sizeof log, "%s/two.jsonl", tmpdir);
	snprintf(tb, sizeof tb, "%s/two", tmpdir);
	snprintf(ck, sizeof ck, "%s/two_ck", tmpdir);
	train(log, tb, 4, ck, NULL);
	ck_assert_int_eq(events_files(tb, names, 4), 1);
	size_t n1, n2;
	unsigned char *before = slurp(names[0], &n1);
	train(log, tb, 6, NULL, ck);
	ck_assert_int_eq(events_files(tb, names, 4), 2);
	unsigned char *after = slurp(names[0], &n2);
	ck_assert(n1 == n2 && !memcmp(before, after, n1));
	free(before);
	free(after);
	/* the resumed run's file is the second in TensorBoard's order only if its name sorts
	 * after: the same second and process would give it ".1", and a later second sorts so */
	unsigned char *b = slurp(names[1], &n1);
	Event ev[MAX_EVENTS];
	char why[128] = "";
	int ne = read_events(b, n1, ev, MAX_EVENTS, why, sizeof why);
	ck_assert_msg(ne == 4, "%d events: %s", ne, why);
	ck_assert_str_eq(ev[0].file_version, "brain.Event:2");
	ck_assert(ev[1].step == 5 && ev[1].session_status == 1 && ev[1].nvalues == 0);
	ck_assert(ev[2].step == 5 && ev[3].step == 6 && find(&ev[3], "lm loss"));
	LogLine l[8];
	ck_assert_int_eq(read_log(log, l, 8), 6);   /* the log appended to: the same steps */
	same(*find(&ev[3], "lm loss"), l[5].loss, true, "loss", 6);
	free(b);
}
END_TEST

/* Two files of one second and process get two names; a failed write is an error naming
 * the file and why; a directory that cannot be one is refused. */
START_TEST(errors_are_reported)
{
	char dir[128], err[512];
	snprintf(dir, sizeof dir, "%s/errs", tmpdir);
	RtEvents *a = rt_events_open(dir, 1, err, sizeof err), *b = rt_events_open(dir, 1, err, sizeof err);
	ck_assert(a && b && strcmp(rt_events_path(a), rt_events_path(b)));
	ck_assert_int_eq(rt_events_close(b, err, sizeof err), 0);
	/* a file size limit: the write fails with EFBIG (SIGXFSZ ignored) */
	struct rlimit old, lim;
	getrlimit(RLIMIT_FSIZE, &old);
	struct stat st;
	stat(rt_events_path(a), &st);
	lim = old;
	lim.rlim_cur = (rlim_t)st.st_size + 200;
	void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	RtScalar v[] = {{"lm loss", 5.5}, {"learning-rate", 3e-4}, {"grad-norm", 1.5}};
	int rc = 0, k;
	for (k = 1; k < 20 && !rc; k++)
		rc = rt_events_write(a, k, v, 3, err, sizeof err);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, was);
	ck_assert_int_eq(rc, -1);
	ck_assert_int_gt(k, 2);   /* the first events fitted */
	char want[512];
	snprintf(want, sizeof want, "cannot write the TensorBoard events file '%s': File too large", rt_events_path(a));
	ck_assert_str_eq(err, want);
	rt_events_close(a, NULL, 0);
	/* a file where the directory should be, and below it */
	char file[160], below[192];
	snprintf(file, sizeof file, "%s", shard("afile.bin", 100));
	ck_assert_ptr_null(rt_events_open(file, 1, err, sizeof err));
	snprintf(want, sizeof want, "cannot write TensorBoard events in '%s': it is not a directory", file);
	ck_assert_str_eq(err, want);
	snprintf(below, sizeof below, "%s/runs", file);
	ck_assert_ptr_null(rt_events_open(below, 1, err, sizeof err));
	snprintf(want, sizeof want, "cannot create the TensorBoard directory '%s': Not a directory", below);
	ck_assert_str_eq(err, want);
	/* too many scalars for an event */
	RtScalar many[200];
	for (int i = 0; i < 200; i++)
		many[i] = (RtScalar){"a tag of some length to fill the event up", i};
	ck_assert_ptr_nonnull(a = rt_events_open(dir, 1, err, sizeof err));
	ck_assert_int_eq(rt_events_write(a, 1, many, 200, err, sizeof err), -1);
	ck_assert_str_eq(err, "200 TensorBoard scalars do not fit in an event of 8192 bytes");
	rt_events_close(a, NULL, 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tensorboard");
	TCase *tc = tcase_create("events");
	tcase_add_test(tc, crc32c_vector);
	tcase_add_test(tc, training_writes_what_the_log_has);
	tcase_add_test(tc, resume_adds_a_file);
	tcase_add_test(tc, errors_are_reported);
	tcase_set_timeout(tc, 300);
	suite_add_tcase(s, tc);
	snprintf(tmpdir, sizeof tmpdir, "/tmp/mgl-test-XXXXXX");
	if (!mkdtemp(tmpdir))
		return EXIT_FAILURE;
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
