/* runtime/io.c — what the runtime's files share: messages, files written whole or not at
 * all (checkpoints and token shards, and the command line's plans, exports and plots), and
 * bf16 (checkpoints and the cuda backend).
 *
 * A file is replaced atomically. Its bytes go to PATH.tmp, which is flushed and synced,
 * then renamed over PATH, and PATH's directory is synced so that the rename survives a
 * crash too: a crash leaves the old file or the new one, never half of one, and a failure
 * before the rename removes PATH.tmp and leaves PATH as it was. The temporary name is
 * fixed rather than unique, so that a stale one from a crash is simply written over and
 * `mgl train`'s second Ctrl-C knows what to remove (two processes writing one path at once
 * is not supported). A target that is a character device or a pipe (`-o /dev/null`,
 * `-o /dev/stdout`) is written straight into, as a user who names one means: renaming over
 * it would replace the device's directory entry (as root, /dev/null itself), not write to
 * it. Any other target that exists and is not a regular file (a directory) is refused
 * before anything is written. A target that is a symbolic link is followed: the file it
 * names is replaced, and the link stays.
 *
 * Syncing the directory: POSIX leaves fsync of a directory to the implementation, and on
 * Linux a file system that cannot sync directories (some FUSE file systems, for one)
 * refuses with EINVAL. The rename is done by then and nothing more can be done, so EINVAL
 * there is not an error; any other failure is, though the new file is in place.
 */
#define _XOPEN_SOURCE 700   /* realpath */
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

void rt_errf(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------- atomic replacement */

int rt_tmp_name(const char *path, char *buf, size_t n)
{
	size_t k = strlen(path);
	if (k + sizeof RT_TMP_SUFFIX > n)
		return -1;
	memcpy(buf, path, k);
	memcpy(buf + k, RT_TMP_SUFFIX, sizeof RT_TMP_SUFFIX);
	return 0;
}

/* A device or a pipe: written in place, never renamed over. */
static bool streamed(const char *path)
{
	struct stat st;
	return !stat(path, &st) && (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode));
}

/* The file a path names: a symbolic link's target (so that the rename replaces the file,
 * not the link: `-o /dev/stdout` with standard output sent to a file is a link into /proc),
 * else the path itself. buf: PATH_MAX bytes. */
static const char *resolved(const char *path, char *buf)
{
	struct stat st;
	return !lstat(path, &st) && S_ISLNK(st.st_mode) && realpath(path, buf) ? buf : path;
}

/* A new file at tmp, never through what is there already: a file left by a write that
 * crashed is removed first, and a link put there by someone else is removed, not followed
 * (the rendezvous file holds a secret). */
static FILE *create_new(const char *tmp)
{
	int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
	int fd = open(tmp, flags, 0666);
	if (fd < 0 && errno == EEXIST && !unlink(tmp))
		fd = open(tmp, flags, 0666);
	FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
	if (fd >= 0 && !f)
		close(fd);
	return f;
}

FILE *rt_atomic_open(const char *user_path, char *err, size_t errlen)
{
	struct stat st;
	char buf[PATH_MAX];
	const char *path = resolved(user_path, buf);
	if (streamed(path)) {
		FILE *f = fopen(path, "wb");
		if (!f)
			rt_errf(err, errlen, "%s: cannot write: %s", user_path, strerror(errno));
		return f;
	}
	if (!stat(path, &st) && !S_ISREG(st.st_mode)) {
		rt_errf(err, errlen, "%s: cannot write: it is %s", user_path, S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
		return NULL;
	}
	char tmp[PATH_MAX + sizeof RT_TMP_SUFFIX];
	FILE *f = NULL;
	if (rt_tmp_name(path, tmp, sizeof tmp))
		errno = ENAMETOOLONG;
	else
		f = create_new(tmp);
	if (!f)
		rt_errf(err, errlen, "%s: cannot create: %s", user_path, strerror(errno));
	return f;
}

void rt_atomic_abort(FILE *f, const char *user_path)
{
	char tmp[PATH_MAX + sizeof RT_TMP_SUFFIX], buf[PATH_MAX];
	const char *path = resolved(user_path, buf);
	fclose(f);
	if (!streamed(path) && !rt_tmp_name(path, tmp, sizeof tmp))
		remove(tmp);
}

/* Syncs the directory that holds path, so that a rename in it survives a crash: 0 or an errno. */
static int sync_dir(const char *path)
{
	char dir[PATH_MAX] = ".";
	const char *slash = strrchr(path, '/');
	if (slash)
		snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return errno;
	int e = fsync(fd) && errno != EINVAL ? errno : 0;   /* EINVAL: see the top of the file */
	close(fd);
	return e;
}

int rt_atomic_commit(FILE *f, const char *user_path, char *err, size_t errlen)
{
	char tmp[PATH_MAX + sizeof RT_TMP_SUFFIX], buf[PATH_MAX];
	const char *path = resolved(user_path, buf);
	rt_tmp_name(path, tmp, sizeof tmp);   /* fits: rt_atomic_open made it */
	if (streamed(path)) {
		bool bad = ferror(f) | (fclose(f) != 0);
		if (bad)
			rt_errf(err, errlen, "%s: cannot write: %s", user_path, strerror(errno));
		return bad ? -1 : 0;
	}
	/* Every step is checked: a full disk shows at fflush, fsync or fclose, depending on
	 * buffering and the file system, and any of them means the temporary file is not the
	 * file. e is an errno, or -1 for a stream error that left none. */
	const char *stage = "write";
	int e = 0;
	if (ferror(f))   /* a write failed: errno still says why, unless a call since cleared it */
		e = errno ? errno : -1;
	else if ((errno = 0, fflush(f)))
		e = errno ? errno : -1;
	else if (fsync(fileno(f)))
		e = errno, stage = "sync";
	errno = 0;
	if (fclose(f) && !e)
		e = errno ? errno : -1;
	if (!e && rename(tmp, path))
		e = errno, stage = "replace";
	if (e) {
		remove(tmp);
		rt_errf(err, errlen, "%s: cannot %s: %s", user_path, stage, e > 0 ? strerror(e) : "write error");
		return -1;
	}
	if ((e = sync_dir(path))) {
		/* the new file is in place; only its surviving a crash is in doubt */
		rt_errf(err, errlen, "%s: written, but syncing its directory failed: %s", user_path, strerror(e));
		return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------- bf16 */

void rt_f32_to_bf16(uint16_t *dst, const float *src, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t u;
		memcpy(&u, &src[i], 4);
		if ((u & 0x7fffffffu) > 0x7f800000u)   /* NaN: rounding could carry it into Inf */
			dst[i] = (uint16_t)(u >> 16 | 0x40);
		else                                   /* to nearest, ties to the even half */
			dst[i] = (uint16_t)((u + 0x7fffu + (u >> 16 & 1u)) >> 16);
	}
}

void rt_bf16_to_f32(float *dst, const uint16_t *src, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t u = (uint32_t)src[i] << 16;
		memcpy(&dst[i], &u, 4);
	}
}
