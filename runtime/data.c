/* runtime/data.c — token shards: the .bin files of llm.c and nanoGPT that training reads.
 *
 * A shard is a 256-int32 little-endian header (magic 20240520, version 1, token count;
 * the rest zero) followed by the tokens as little-endian uint16. Shards come from other
 * tools and other machines, so the reader trusts nothing in them: the file must be a
 * regular file whose size is exactly the header plus the count the header states, and
 * every refusal names the file and says what is wrong with it. The writer replaces a
 * file whole (io.c), so a crash never leaves half a shard under the real name.
 */
#include "runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { HEADER_BYTES = RT_SHARD_HEADER_INTS * 4 };

/* The header is little-endian whatever the host is: assemble it byte by byte. */
static int32_t get_i32(const unsigned char *p)
{
	return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static void put_i32(unsigned char *p, int32_t v)
{
	uint32_t u = (uint32_t)v;
	p[0] = (unsigned char)u, p[1] = (unsigned char)(u >> 8), p[2] = (unsigned char)(u >> 16), p[3] = (unsigned char)(u >> 24);
}

/* What the data part holds: "812", or "812 tokens and 1 byte" when its length is odd. */
static const char *describe(int64_t data_bytes, char *buf, size_t n)
{
	char b[32];
	snprintf(buf, n, "%s%s", mgl_commas(data_bytes / 2, b), data_bytes % 2 ? " tokens and 1 byte" : "");
	return buf;
}

/* ---------------------------------------------------------------- reading */

int rt_shard_read(const char *path, RtShard *s, char *err, size_t errlen)
{
	memset(s, 0, sizeof *s);
	FILE *f = fopen(path, "rb");
	if (!f) {
		rt_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	/* The size decides what the header must say; a directory, a pipe or a device has no
	 * size to hold the header to, and no shard is one of those. */
	struct stat st;
	if (fstat(fileno(f), &st)) {
		rt_errf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
		fclose(f);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		rt_errf(err, errlen, "%s: not a regular file%s", path, S_ISDIR(st.st_mode) ? " (a directory)" : "");
		fclose(f);
		return -1;
	}
	int64_t size = (int64_t)st.st_size;
	if (size == 0) {
		rt_errf(err, errlen, "%s: empty file (a token shard starts with a %s-byte header)", path,
		        mgl_commas(HEADER_BYTES, (char[32]){0}));
		fclose(f);
		return -1;
	}
	if (size < HEADER_BYTES) {
		rt_errf(err, errlen, "%s: too short for a token shard: %s byte%s, and the header alone is %s", path,
		        mgl_commas((int64_t)size, (char[32]){0}), size == 1 ? "" : "s", mgl_commas(HEADER_BYTES, (char[32]){0}));
		fclose(f);
		return -1;
	}
	unsigned char h[HEADER_BYTES];
	if (fread(h, 1, sizeof h, f) != sizeof h) {
		rt_errf(err, errlen, "%s: cannot read the header: %s", path, ferror(f) ? strerror(errno) : "the file shrank");
		fclose(f);
		return -1;
	}
	int32_t magic = get_i32(h), version = get_i32(h + 4), count = get_i32(h + 8);
	if (magic != RT_SHARD_MAGIC) {
		rt_errf(err, errlen, "%s: not a token shard: the magic number is %ld, a shard's is %d", path, (long)magic,
		        RT_SHARD_MAGIC);
		fclose(f);
		return -1;
	}
	if (version != RT_SHARD_VERSION) {
		rt_errf(err, errlen, "%s: token shard version %ld, this build reads version %d", path, (long)version,
		        RT_SHARD_VERSION);
		fclose(f);
		return -1;
	}
	if (count < 0) {
		rt_errf(err, errlen, "%s: the header's token count is negative (%s)", path, mgl_commas(count, (char[32]){0}));
		fclose(f);
		return -1;
	}
	int64_t data = size - HEADER_BYTES, want = 2 * (int64_t)count;
	if (data != want) {
		char buf[64];
		rt_errf(err, errlen, "%s: %s: the header says %s tokens but the file holds %s", path,
		        data < want ? "truncated" : "trailing bytes", mgl_commas(count, (char[32]){0}), describe(data, buf, sizeof buf));
		fclose(f);
		return -1;
	}
	/* count is now bounded by the file's real size, so the allocation is too */
	uint16_t *tok = malloc(count ? (size_t)count * sizeof *tok : 1);
	if (!tok) {
		rt_errf(err, errlen, "%s: out of memory for %s tokens", path, mgl_commas(count, (char[32]){0}));
		fclose(f);
		return -1;
	}
	size_t got = fread(tok, 2, (size_t)count, f);
	int rerr = ferror(f) ? errno : 0;
	fclose(f);
	if (got != (size_t)count) {
		/* the file changed size between fstat and here */
		if (rerr)
			rt_errf(err, errlen, "%s: cannot read: %s", path, strerror(rerr));
		else
			rt_errf(err, errlen, "%s: truncated: the header says %s tokens but the file holds %s", path,
			        mgl_commas(count, (char[32]){0}), mgl_commas((int64_t)got, (char[32]){0}));
		free(tok);
		return -1;
	}
	/* little-endian on disk: a no-op on little-endian hosts, which the compiler sees */
	const unsigned char *b = (const unsigned char *)tok;
	for (int64_t i = 0; i < count; i++)
		tok[i] = (uint16_t)(b[2 * i] | b[2 * i + 1] << 8);
	s->path = path;
	s->tokens = tok;
	s->ntokens = count;
	return 0;
}

void rt_shard_free(RtShard *s)
{
	free(s->tokens);
	memset(s, 0, sizeof *s);
}

/* ---------------------------------------------------------------- writing */

int rt_shard_write(const char *path, const uint16_t *tokens, int64_t n, char *err, size_t errlen)
{
	if (n < 0 || n > INT32_MAX) {
		rt_errf(err, errlen, "%s: %s tokens do not fit a shard (at most %s: the header's count is an int32)", path,
		        mgl_commas(n, (char[32]){0}), mgl_commas(INT32_MAX, (char[32]){0}));
		return -1;
	}
	FILE *f = rt_atomic_open(path, err, errlen);
	if (!f)
		return -1;
	unsigned char h[HEADER_BYTES] = {0};
	put_i32(h, RT_SHARD_MAGIC);
	put_i32(h + 4, RT_SHARD_VERSION);
	put_i32(h + 8, (int32_t)n);
	bool ok = fwrite(h, 1, sizeof h, f) == sizeof h;
	/* tokens go out little-endian, through a buffer, whatever the host's order */
	unsigned char buf[1 << 16];
	for (int64_t i = 0; ok && i < n;) {
		size_t k = 0;
		for (; k + 2 <= sizeof buf && i < n; i++, k += 2)
			buf[k] = (unsigned char)tokens[i], buf[k + 1] = (unsigned char)(tokens[i] >> 8);
		ok = fwrite(buf, 1, k, f) == k;
	}
	return rt_atomic_commit(f, path, err, errlen);   /* a failed fwrite leaves the stream's error */
}
