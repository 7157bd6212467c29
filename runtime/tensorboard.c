/* runtime/tensorboard.c — TensorBoard event files, written by hand (no protobuf, no
 * TensorFlow): what `mgl train --tensorboard DIR` writes.
 *
 * An events file is a sequence of TFRecords: a little-endian uint64 length, the masked
 * CRC-32C of those 8 bytes, the data, the masked CRC-32C of the data. Each record's data
 * is a serialized tensorflow.Event protobuf; the first says file_version "brain.Event:2",
 * each later one holds a step's scalars as a Summary of (tag, simple_value) Values. The
 * few fields written are encoded here with a small protobuf encoder (varints, fixed
 * 32/64-bit numbers, length-delimited fields):
 *
 *   Event      wall_time 1 (double), step 2 (int64), file_version 3 (string),
 *              summary 5 (Summary), session_log 7 (SessionLog)
 *   Summary    value 1 (repeated Value)
 *   Value      tag 1 (string), simple_value 2 (float)
 *   SessionLog status 1 (enum: START = 1)
 *
 * Every run writes a new file, whose second record is a SessionLog START at the first step
 * it will log (as TensorFlow's Supervisor wrote one at each start): TensorBoard then drops
 * what older files in the directory logged from that step on, so a resumed run replaces the
 * steps logged after its checkpoint (as `mgl plot` reads a log --resume appended to), and
 * a fresh one replaces the earlier run (as the fresh JSON log does).
 * Every record is flushed as it is written, so a crash loses at most the record at hand.
 */
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- CRC-32C */

/* Castagnoli's polynomial, reflected: the table of each byte's remainder. */
static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t b = 0; b < 256; b++) {
		uint32_t c = b;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[b] = c;
	}
}

uint32_t rt_crc32c(const void *p, size_t n)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, crc_init);
	const unsigned char *s = p;
	uint32_t c = 0xFFFFFFFFu;
	for (size_t i = 0; i < n; i++)
		c = crc_table[(c ^ s[i]) & 0xFF] ^ (c >> 8);
	return c ^ 0xFFFFFFFFu;
}

/* TFRecord's masked CRC: a CRC of data that holds CRCs is itself a poor check, so the
 * stored one is rotated and offset. */
static uint32_t masked_crc(const void *p, size_t n)
{
	uint32_t c = rt_crc32c(p, n);
	return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

/* ---------------------------------------------------------------- protobuf */

/* An encoded message: at most RT_EVENT_BYTES, beyond which `over` is set and nothing more
 * is written. */
enum { RT_EVENT_BYTES = 8192 };
typedef struct {
	unsigned char b[RT_EVENT_BYTES];
	size_t n;
	bool over;
} Buf;

enum { WIRE_VARINT = 0, WIRE_64 = 1, WIRE_LEN = 2, WIRE_32 = 5 };

static void put(Buf *o, const void *p, size_t n)
{
	if (o->over || n > sizeof o->b - o->n) {
		o->over = true;
		return;
	}
	memcpy(o->b + o->n, p, n);
	o->n += n;
}

static void varint(Buf *o, uint64_t v)
{
	unsigned char b[10];
	size_t n = 0;
	do {
		b[n++] = (unsigned char)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
		v >>= 7;
	} while (v);
	put(o, b, n);
}

static void key(Buf *o, int field, int wire) { varint(o, (uint64_t)field << 3 | (uint64_t)wire); }

/* little-endian, whatever the host's order */
static void le(unsigned char *b, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		b[i] = (unsigned char)(v >> 8 * i);
}

/* a fixed-width field: n bytes (8: WIRE_64, 4: WIRE_32) of bits, little-endian */
static void field_fixed(Buf *o, int field, int wire, uint64_t bits, int n)
{
	unsigned char b[8];
	le(b, bits, n);
	key(o, field, wire);
	put(o, b, (size_t)n);
}

static void field_double(Buf *o, int field, double v)
{
	uint64_t u;
	memcpy(&u, &v, 8);
	field_fixed(o, field, WIRE_64, u, 8);
}

static void field_float(Buf *o, int field, float v)
{
	uint32_t u;
	memcpy(&u, &v, 4);
	field_fixed(o, field, WIRE_32, u, 4);
}

static void field_varint(Buf *o, int field, uint64_t v)
{
	key(o, field, WIRE_VARINT);
	varint(o, v);
}

/* a string, bytes, or an embedded message encoded before */
static void field_bytes(Buf *o, int field, const void *p, size_t n)
{
	key(o, field, WIRE_LEN);
	varint(o, n);
	put(o, p, n);
}

/* ---------------------------------------------------------------- the file */

struct RtEvents {
	FILE *f;
	char *path;
};

enum { EVENT_WALL_TIME = 1, EVENT_STEP = 2, EVENT_FILE_VERSION = 3, EVENT_SUMMARY = 5, EVENT_SESSION_LOG = 7 };
enum { SUMMARY_VALUE = 1, VALUE_TAG = 1, VALUE_SIMPLE = 2, SESSION_STATUS = 1, SESSION_START = 1 };

static double wall_time(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* An Event's common fields: the time now, and the step (proto3 leaves out a 0). */
static void event_head(Buf *o, int64_t step)
{
	field_double(o, EVENT_WALL_TIME, wall_time());
	if (step)
		field_varint(o, EVENT_STEP, (uint64_t)step);
}

/* One TFRecord of the event in ev, flushed. */
static int write_record(RtEvents *e, const Buf *ev, char *err, size_t errlen)
{
	unsigned char head[12], tail[4];
	le(head, ev->n, 8);
	le(head + 8, masked_crc(head, 8), 4);
	le(tail, masked_crc(ev->b, ev->n), 4);
	errno = 0;
	if (fwrite(head, 1, 12, e->f) != 12 || fwrite(ev->b, 1, ev->n, e->f) != ev->n || fwrite(tail, 1, 4, e->f) != 4 ||
	    fflush(e->f)) {
		rt_errf(err, errlen, "cannot write the TensorBoard events file '%s': %s", e->path,
			errno ? strerror(errno) : "write failed");
		return -1;
	}
	return 0;
}

/* dir and its missing parents, as TensorBoard's own writers create them */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
	char *p = strdup(dir);
	struct stat st;
	int rc = 0;
	if (!p)
		return rt_errf(err, errlen, "out of memory"), -1;
	for (char *s = p + 1; *s && !rc; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, 0777) && errno != EEXIST)
			rc = -1;
		*s = '/';
	}
	if (rc || (mkdir(p, 0777) && errno != EEXIST))
		rt_errf(err, errlen, "cannot create the TensorBoard directory '%s': %s", dir, strerror(errno)), rc = -1;
	else if (stat(p, &st) || !S_ISDIR(st.st_mode))
		rt_errf(err, errlen, "cannot write TensorBoard events in '%s': it is not a directory", dir), rc = -1;
	free(p);
	return rc;
}

RtEvents *rt_events_open(const char *dir, int64_t first_step, char *err, size_t errlen)
{
	if (make_dirs(dir, err, errlen))
		return NULL;
	char host[256] = "";
	if (gethostname(host, sizeof host - 1) || !host[0])
		snprintf(host, sizeof host, "localhost");
	for (char *s = host; *s; s++)   /* a file name, whatever the host is called */
		if (*s == '/')
			*s = '_';
	RtEvents *e = calloc(1, sizeof *e);
	size_t cap = strlen(dir) + strlen(host) + 96;
	if (!e || !(e->path = malloc(cap))) {
		free(e);
		rt_errf(err, errlen, "out of memory");
		return NULL;
	}
	/* TensorFlow's name with the pid, as PyTorch's SummaryWriter adds it; another file of
	 * the same second and process (a second run in one process) gets a number too */
	long long secs = (long long)wall_time();
	int fd = -1;
	for (int k = 0; fd < 0 && k < 1000; k++) {
		int n = snprintf(e->path, cap, "%s/events.out.tfevents.%lld.%s.%ld", dir, secs, host, (long)getpid());
		if (k)
			snprintf(e->path + n, cap - (size_t)n, ".%d", k);
		fd = open(e->path, O_WRONLY | O_CREAT | O_EXCL, 0666);
		if (fd < 0 && errno != EEXIST)
			break;
	}
	if (fd < 0 || !(e->f = fdopen(fd, "wb"))) {
		rt_errf(err, errlen, "cannot create the TensorBoard events file '%s': %s", e->path, strerror(errno));
		if (fd >= 0)
			close(fd), unlink(e->path);
		free(e->path);
		free(e);
		return NULL;
	}
	Buf ev = {0};
	event_head(&ev, 0);
	field_bytes(&ev, EVENT_FILE_VERSION, "brain.Event:2", 13);
	Buf start = {0}, log = {0};   /* what was logged from first_step on is gone */
	field_varint(&log, SESSION_STATUS, SESSION_START);
	event_head(&start, first_step);
	field_bytes(&start, EVENT_SESSION_LOG, log.b, log.n);
	if (write_record(e, &ev, err, errlen) || write_record(e, &start, err, errlen)) {
		rt_events_close(e, NULL, 0);
		return NULL;
	}
	return e;
}

const char *rt_events_path(const RtEvents *e) { return e->path; }

int rt_events_write(RtEvents *e, int64_t step, const RtScalar *v, int n, char *err, size_t errlen)
{
	Buf value, summary = {0}, ev = {0};
	for (int i = 0; i < n; i++) {
		value.n = 0;
		value.over = false;
		field_bytes(&value, VALUE_TAG, v[i].tag, strlen(v[i].tag));
		field_float(&value, VALUE_SIMPLE, (float)v[i].value);
		field_bytes(&summary, SUMMARY_VALUE, value.b, value.n);
	}
	event_head(&ev, step);
	field_bytes(&ev, EVENT_SUMMARY, summary.b, summary.n);
	if (summary.over || ev.over) {
		rt_errf(err, errlen, "%d TensorBoard scalars do not fit in an event of %d bytes", n, RT_EVENT_BYTES);
		return -1;
	}
	return write_record(e, &ev, err, errlen);
}

int rt_events_close(RtEvents *e, char *err, size_t errlen)
{
	if (!e)
		return 0;
	int rc = 0;
	if (fclose(e->f)) {
		rt_errf(err, errlen, "cannot write the TensorBoard events file '%s': %s", e->path, strerror(errno));
		rc = -1;
	}
	free(e->path);
	free(e);
	return rc;
}
