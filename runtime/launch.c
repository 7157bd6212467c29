/* runtime/launch.c — processes: which rank of a job this process is, and how the job's
 * processes talk beside the backend's collectives.
 *
 * Without a launcher mgl is one process whose ranks are threads (exec.c). Under mpirun,
 * Slurm's srun or torchrun --no-python, each process is one rank: its rank, the world's
 * size and its rank on its node come from the launcher's variables (the table below; the
 * first launcher whose rank and size variables are both set wins).
 *
 * The processes need a channel of their own, for the host's side of a job: the loss of
 * every dp rank, the checkpoint's shards, the NCCL unique ids. It is MPI where it can be
 * loaded and the launcher is MPI's own (mpirun; srun unless MGL_RENDEZVOUS is given):
 * libmpi is opened at run time with dlopen, like OpenBLAS in cpu.c, so that one binary
 * starts where there is none (the GPU machine) and no MPI header is needed to build. Its
 * ABI is Open MPI's (handles are pointers to its predefined objects; MPICH's are ints),
 * the only MPI named in docs/multinode.md. Without MPI the channel is a star of TCP
 * connections to rank 0, met through a rendezvous:
 *   MGL_RENDEZVOUS=file:PATH   rank 0 listens on a port of its choosing and writes its host,
 *                              port and a fresh random secret to PATH (mode 0600, a
 *                              temporary name renamed); the others poll for it
 *   MGL_RENDEZVOUS=tcp:HOST:PORT, or torchrun's MASTER_ADDR and MASTER_PORT + 1 (its agent
 *                              holds MASTER_PORT): rank 0 listens there, the secret is
 *                              MGL_JOB_SECRET, which every rank must be given
 * Rank 0 accepts only peers that present the secret and a rank of the job not seen yet;
 * once all have come it answers each "ok". A rank missing at MGL_RENDEZVOUS_TIMEOUT
 * seconds (60) is named in an error on rank 0 and sent to every rank that came; a rank
 * that cannot reach rank 0 in that time says so. Never an open, unauthenticated listener.
 *
 * Collectives through the channel are in lockstep: every process calls the same ones in
 * the same order, from one thread (one rank a process). Only MPI has groups (the cpu
 * backend's tp and dp collectives): the TCP star carries host traffic only.
 *
 * A process that fails ends (without MPI_Finalize, which would wait for the others), and
 * the others must not wait for it forever, wherever they wait (NCCL's kernels never time
 * out). Under MPI it calls MPI_Abort, which ends the whole job (mpirun does that itself
 * when a process exits with an error; srun may not). On the TCP star its connections close
 * when it ends: a thread of each process watches them (rank 0 every peer, a peer rank 0)
 * and ends its process after a moment (the watch thread, below), so that one failure ends
 * every process within moments, each naming the rank it lost. An orderly end
 * (rt_procs_end) first meets the others once more, after which a closed connection is no
 * news. A process that hangs alive (stopped, deadlocked) keeps its connections open: every
 * wait on the star is a poll with a limit, MGL_EXCHANGE_TIMEOUT seconds (1,800) without a
 * byte from the rank awaited, after which rank 0 names the silent ranks and tells the others
 * why before it ends (the tag that opens each of its messages to a peer: from_root); a peer
 * waits for rank 0 a moment longer, so that rank 0, which hears every rank, is the one to
 * name them.
 */
#define _GNU_SOURCE   /* poll's POLLRDHUP: the peer closed its end */
#include "backend.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the launchers */

static const struct {
	const char *name, *rank, *size, *local;
} launchers[] = {
	{"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
	/* srun's step, not SLURM_NTASKS: an sbatch script's own shell has that one too */
	{"srun", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"},
	{"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
};

enum { SECRET_MAX = 128 };

struct RtNet {
	/* MPI */
	void *mpi_world;
	/* the TCP star: rank 0 holds a socket per peer (fd[r]), a peer one to rank 0 (fd[0]) */
	int *fd;
	int limit;            /* MGL_EXCHANGE_TIMEOUT: seconds a wait may go without a byte */
	bool *named;          /* the ranks an error names (missing) */
	struct pollfd *pf;    /* from_peers': rank 0's polls and counts, a rank each */
	size_t *got;
	char path[4096];   /* the rendezvous file rank 0 wrote, removed at close */
	/* the watch thread (above), and the pipe that stops it */
	pthread_t watch;
	int stop[2];
	bool watching;
};

static RtProcs procs = {.rank = 0, .size = 1, .local_rank = 0, .launcher = "", .channel = ""};
static RtNet net;
static bool started;

/* MPI's few functions, Open MPI's ABI (see above): handles are pointers */
typedef void *MpiHandle;
static struct {
	int (*init)(int *, char ***);
	int (*finalize)(void);
	int (*comm_rank)(MpiHandle, int *);
	int (*comm_size)(MpiHandle, int *);
	int (*comm_split)(MpiHandle, int, int, MpiHandle *);
	int (*allgather)(const void *, int, MpiHandle, void *, int, MpiHandle, MpiHandle);
	int (*bcast)(void *, int, MpiHandle, int, MpiHandle);
	int (*abort)(MpiHandle, int);
	int (*send)(const void *, int, MpiHandle, int, int, MpiHandle);
	int (*recv)(void *, int, MpiHandle, int, int, MpiHandle, void *);
	MpiHandle world, byte;
} mpi;

/* Seconds from the variable `name` (1 to 86,400), def where unset, or -1. */
static int timeout_s(const char *name, int def)
{
	const char *s = getenv(name);
	char *end;
	long v = s ? strtol(s, &end, 10) : def;
	return s && (*end || v < 1 || v > 86400) ? -1 : (int)v;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int env_int(const char *name, int *v)
{
	const char *s = getenv(name);
	char *end;
	errno = 0;
	long x = s ? strtol(s, &end, 10) : -1;
	if (!s || !*s || *end || errno || x < 0 || x > INT_MAX)
		return -1;
	*v = (int)x;
	return 0;
}

/* ---------------------------------------------------------------- MPI */

static int mpi_load(char *err, size_t n)
{
	static const char *const names[] = {"libmpi.so.40", "libmpi.so"};
	void *h = NULL;
	for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++)
		h = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);   /* global: Open MPI's plugins link against it */
	if (!h) {
		rt_errf(err, n, "no libmpi.so.40 could be loaded");
		return -1;
	}
#define SYM(field, name) (*(void **)&mpi.field = dlsym(h, name))
	if (!SYM(init, "MPI_Init") || !SYM(finalize, "MPI_Finalize") || !SYM(comm_rank, "MPI_Comm_rank") ||
	    !SYM(comm_size, "MPI_Comm_size") || !SYM(comm_split, "MPI_Comm_split") || !SYM(allgather, "MPI_Allgather") ||
	    !SYM(bcast, "MPI_Bcast") || !SYM(abort, "MPI_Abort") ||
	    !SYM(send, "MPI_Send") || !SYM(recv, "MPI_Recv") || !(mpi.world = dlsym(h, "ompi_mpi_comm_world")) ||
	    !(mpi.byte = dlsym(h, "ompi_mpi_byte"))) {
		rt_errf(err, n, "libmpi.so.40 is not Open MPI's (no %s)", mpi.init ? "ompi_mpi_comm_world" : "MPI_Init");
		return -1;
	}
#undef SYM
	return 0;
}

static int mpi_open(char *err, size_t n)
{
	int rank = -1, size = -1;
	if (mpi.init(NULL, NULL) || mpi.comm_rank(mpi.world, &rank) || mpi.comm_size(mpi.world, &size)) {
		rt_errf(err, n, "MPI_Init failed");
		return -1;
	}
	if (rank != procs.rank || size != procs.size) {
		rt_errf(err, n, "%s says rank %d of %d, and MPI rank %d of %d: is this Open MPI the launcher's? "
			"(MGL_RENDEZVOUS=file:PATH goes without MPI)", procs.launcher, procs.rank, procs.size, rank, size);
		return -1;
	}
	net.mpi_world = mpi.world;
	return 0;
}

/* MPI counts are ints: big buffers go in pieces of 1 GiB */
enum { PIECE = 1 << 30 };

static void mpi_bcast(MpiHandle comm, void *buf, size_t bytes, int root)
{
	for (size_t at = 0; at < bytes; at += PIECE) {
		size_t k = bytes - at < PIECE ? bytes - at : PIECE;
		mpi.bcast((char *)buf + at, (int)k, mpi.byte, root, comm);
	}
}

/* a gather of more than PIECE bytes goes in chunks of GATHER_PIECE, each member's chunk
 * side by side in a staging buffer of size x GATHER_PIECE */
enum { GATHER_PIECE = 64 << 20 };
static void mpi_allgather(MpiHandle comm, int size, const void *mine, size_t bytes, void *all)
{
	if (bytes <= PIECE) {
		mpi.allgather(mine, (int)bytes, mpi.byte, all, (int)bytes, mpi.byte, comm);
		return;
	}
	char *t = malloc((size_t)size * GATHER_PIECE);
	if (!t) {
		fprintf(stderr, "mgl: error: rank %d: out of host memory for a gather (%d x %d MiB)\n", procs.rank, size,
			GATHER_PIECE >> 20);
		exit(1);
	}
	for (size_t at = 0; at < bytes; at += GATHER_PIECE) {
		size_t k = bytes - at < GATHER_PIECE ? bytes - at : GATHER_PIECE;
		mpi.allgather((const char *)mine + at, (int)k, mpi.byte, t, (int)k, mpi.byte, comm);
		for (int m = 0; m < size; m++)
			memcpy((char *)all + (size_t)m * bytes + at, t + (size_t)m * k, k);
	}
	free(t);
}

/* ---------------------------------------------------------------- the TCP star */

/* What a transfer came to, besides 0: the connection closed (or failed), or no byte moved
 * in the time allowed. */
enum { GONE = -1, SILENT = -2 };

/* Moves n bytes through fd (out: sends them, with flags, else receives them), waiting at
 * most secs for each next byte to move: never a blocking call (MSG_DONTWAIT), a poll with
 * that limit where one would block. 0, GONE or SILENT. */
static int xfer(int fd, void *buf, size_t n, bool out, int flags, double secs)
{
	for (char *p = buf; n;) {
		ssize_t k = out ? send(fd, p, n, flags | MSG_NOSIGNAL | MSG_DONTWAIT) : recv(fd, p, n, MSG_DONTWAIT);
		if (k > 0) {
			p += k, n -= (size_t)k;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			return GONE;
		double by = now() + secs;
		struct pollfd pf = {fd, out ? POLLOUT : POLLIN, 0};
		int ready;
		do {
			int ms = (int)((by - now()) * 1000);
			ready = ms > 0 ? poll(&pf, 1, ms) : 0;
		} while (ready < 0 && errno == EINTR);
		if (ready <= 0)
			return ready ? GONE : SILENT;
	}
	return 0;
}

static int send_all(int fd, const void *buf, size_t n, double secs) { return xfer(fd, (void *)buf, n, true, 0, secs); }

static int recv_all(int fd, void *buf, size_t n, double secs) { return xfer(fd, buf, n, false, 0, secs); }

/* What a peer presents: a magic, the job's secret, its rank and the world's size. */
typedef struct {
	char magic[8];
	char secret[SECRET_MAX];
	int32_t rank, size;
} Hello;

/* Rank 0's answer: "ok", or why the job cannot start. */
typedef struct {
	char what[400];
} Verdict;

static int listen_on(const char *port, int *fd, char *err, size_t n)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
	int e = getaddrinfo(NULL, port, &hints, &ai);
	if (e) {
		rt_errf(err, n, "cannot listen on port %s: %s", port, gai_strerror(e));
		return -1;
	}
	*fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);   /* accept after poll: never blocks */
	int one = 1;
	setsockopt(*fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (*fd < 0 || bind(*fd, ai->ai_addr, ai->ai_addrlen) || listen(*fd, 64)) {
		rt_errf(err, n, "cannot listen on port %s: %s", port, strerror(errno));
		freeaddrinfo(ai);
		if (*fd >= 0)
			close(*fd);
		return -1;
	}
	freeaddrinfo(ai);
	return 0;
}

/* A connection to host:port, made by the deadline (a host that drops the attempt would
 * otherwise hold a blocking connect for minutes), or -1. */
static int connect_to(const char *host, const char *port, double deadline)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai, *a;
	if (getaddrinfo(host, port, &hints, &ai))
		return -1;
	int fd = -1;
	for (a = ai; a && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0 || !connect(fd, a->ai_addr, a->ai_addrlen))
			continue;
		int e = errno, ms = (int)((deadline - now()) * 1000);
		struct pollfd pf = {fd, POLLOUT, 0};
		socklen_t len = sizeof e;
		if (e != EINPROGRESS || ms <= 0 || poll(&pf, 1, ms) <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) || e) {
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(ai);
	int one = 1;
	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

static bool same_secret(const char *a, const char *b)
{
	unsigned char d = 0;   /* every byte compared: the time says nothing of where they differ */
	for (int i = 0; i < SECRET_MAX; i++)
		d |= (unsigned char)(a[i] ^ b[i]);
	return d == 0;
}

/* The ranks r in [1, size) with named[r], as "rank 2" or "ranks 2, 5 and 7" (the first 8). */
static void missing(const bool *named, int size, char *out, size_t n)
{
	int k = 0, count = 0;
	for (int r = 1; r < size; r++)
		count += named[r];
	size_t at = (size_t)snprintf(out, n, "rank%s", count == 1 ? "" : "s");
	for (int r = 1; r < size && at < n; r++)
		if (named[r]) {
			k++;
			if (k <= 8)
				at += (size_t)snprintf(out + at, n - at, "%s %d", k == 1 ? "" : k == count ? " and" : ",", r);
		}
	if (count > 8 && at < n)
		snprintf(out + at, n - at, " (%d in all)", count);
}

/* Rank 0: accepts peers until all came or the deadline passed; answers each. */
static int star_serve(int lfd, const char *secret, const char *where, int limit, char *err, size_t n)
{
	double deadline = now() + limit;
	int came = 1;
	while (came < procs.size) {
		int ms = (int)((deadline - now()) * 1000);
		struct pollfd pf = {lfd, POLLIN, 0};
		if (ms <= 0 || poll(&pf, 1, ms) <= 0)
			break;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		Hello h;
		/* a peer has a moment to present itself, else it is dropped unheard */
		double secs = deadline - now() < 5 ? deadline - now() : 5;
		if (recv_all(fd, &h, sizeof h, secs) || memcmp(h.magic, "mgl-rdv1", 8) || !same_secret(h.secret, secret) ||
		    h.rank < 1 || h.rank >= procs.size || h.size != procs.size || net.fd[h.rank] >= 0) {
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		net.fd[h.rank] = fd;
		came++;
	}
	Verdict v = {"ok"};
	if (came < procs.size) {
		char who[200], b[32];
		for (int r = 1; r < procs.size; r++)
			net.named[r] = net.fd[r] < 0;
		missing(net.named, procs.size, who, sizeof who);
		snprintf(v.what, sizeof v.what, "%.150s of %d did not arrive within %s s (rendezvous %.200s)", who, procs.size,
			 mgl_commas(limit, b), where);
		rt_errf(err, n, "%s", v.what);
	}
	for (int r = 1; r < procs.size; r++)
		if (net.fd[r] >= 0)
			send_all(net.fd[r], &v, sizeof v, 5);
	return came < procs.size ? -1 : 0;
}

static int read_file(const char *path, char *host, char *port, char *secret)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char h[256], p[16], s[SECRET_MAX];
	int ok = fscanf(f, "mgl-rendezvous 1 %255s %15s %127s", h, p, s) == 3;
	fclose(f);
	if (!ok)
		return -1;
	strcpy(host, h), strcpy(port, p);
	memset(secret, 0, SECRET_MAX);
	strcpy(secret, s);
	return 0;
}

/* A peer: connects to host:port with the secret until the deadline, then waits for rank 0's
 * verdict. reread: the rendezvous file, read again before each try (NULL for tcp:). */
static int star_join(const char *reread, char *host, char *port, char *secret, const char *where, int limit, char *err,
		     size_t n)
{
	double deadline = now() + limit;
	int fd = -1;
	while (fd < 0 && now() < deadline) {
		if ((!reread || !read_file(reread, host, port, secret)) && (fd = connect_to(host, port, deadline)) >= 0) {
			Hello h = {.rank = procs.rank, .size = procs.size};
			memcpy(h.magic, "mgl-rdv1", 8);
			memcpy(h.secret, secret, SECRET_MAX);
			if (!send_all(fd, &h, sizeof h, deadline - now()))
				break;
			close(fd);
			fd = -1;
		}
		nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
	}
	if (fd < 0) {
		char b[32];
		rt_errf(err, n, "rank 0 did not arrive within %s s (rendezvous %s)", mgl_commas(limit, b), where);
		return -1;
	}
	net.fd[0] = fd;
	Verdict v;
	/* rank 0 was there when this rank came, so it decides within its limit from now */
	if (recv_all(fd, &v, sizeof v, limit + 5)) {
		rt_errf(err, n, "rank 0 (rendezvous %s) did not let rank %d in: a wrong secret, or this rank came twice?",
			where, procs.rank);
		return -1;
	}
	v.what[sizeof v.what - 1] = 0;
	if (strcmp(v.what, "ok")) {
		rt_errf(err, n, "%s", v.what);
		return -1;
	}
	return 0;
}

static int random_secret(char *s, char *err, size_t n)
{
	unsigned char b[32];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	bool ok = fd >= 0 && read(fd, b, sizeof b) == (ssize_t)sizeof b;
	if (fd >= 0)
		close(fd);
	if (!ok) {
		rt_errf(err, n, "cannot read /dev/urandom for the job's secret");
		return -1;
	}
	memset(s, 0, SECRET_MAX);
	for (size_t i = 0; i < sizeof b; i++)
		sprintf(s + 2 * i, "%02x", b[i]);
	return 0;
}

/* Rank 0 of file:PATH: its host, port and secret, written whole with mode 0600. */
static int write_rendezvous(const char *path, int lfd, const char *secret, char *err, size_t n)
{
	struct sockaddr_storage a;
	socklen_t len = sizeof a;
	char host[256], port[16];
	if (getsockname(lfd, (struct sockaddr *)&a, &len) || gethostname(host, sizeof host) ||
	    getnameinfo((struct sockaddr *)&a, len, NULL, 0, port, sizeof port, NI_NUMERICSERV)) {
		rt_errf(err, n, "cannot name this host's rendezvous port: %s", strerror(errno));
		return -1;
	}
	host[sizeof host - 1] = 0;
	FILE *f = rt_atomic_open(path, err, n);
	if (!f)
		return -1;
	if (fchmod(fileno(f), 0600)) {   /* the secret is for the job's ranks only: before it is written */
		rt_errf(err, n, "%s: cannot make it private: %s", path, strerror(errno));
		rt_atomic_abort(f, path);
		return -1;
	}
	fprintf(f, "mgl-rendezvous 1 %s %s %s\n", host, port, secret);
	if (rt_atomic_commit(f, path, err, n))
		return -1;
	snprintf(net.path, sizeof net.path, "%s", path);
	return 0;
}

/* The star's failures end the job: a process that has lost a peer cannot go on. Said once
 * (the watch thread and the main thread may both see it: the second waits for the first's
 * exit), and _exit: the main thread may be inside the backend, whose exit handlers could
 * wait for it. */
static _Noreturn void star_fail(const char *fmt, ...)
{
	static atomic_flag said = ATOMIC_FLAG_INIT;
	if (atomic_flag_test_and_set(&said))
		for (;;)
			pause();
	char what[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	fprintf(stderr, "mgl: error: rank %d: %s\n", procs.rank, what);
	fflush(stderr);
	_exit(1);
}

static _Noreturn void star_lost(int r)
{
	star_fail("lost rank %d (its connection closed: it ended%s)", r,
		  r == 0 ? ", or ended the job on losing another rank or waiting for one in vain" : "");
}

/* The watch thread (atop): polls the star's connections for a closed end, never reading
 * them (the main thread does), until the stop pipe is written. A closing ends this process
 * only after a moment (GRACE_MS) in which it has not ended on its own: the one that closed
 * may have ended on an error they both know (train.c's agree), and this one would otherwise
 * end before saying its own. */
static atomic_bool ending;   /* rt_procs_end's: a closing is no news */
enum { GRACE_MS = 2000 };

static void *watch(void *arg)
{
	(void)arg;
	int n = procs.rank ? 1 : procs.size - 1;
	struct pollfd *pf = calloc((size_t)n + 1, sizeof *pf);
	if (!pf)
		return NULL;   /* unwatched, as without the pipe (watch_start) */
	for (int i = 0; i < n; i++)
		pf[i] = (struct pollfd){net.fd[procs.rank ? 0 : i + 1], POLLRDHUP, 0};
	pf[n] = (struct pollfd){net.stop[0], POLLIN, 0};
	while (poll(pf, (nfds_t)n + 1, -1) >= 0 || errno == EINTR) {
		if (pf[n].revents)
			break;
		for (int i = 0; i < n; i++)
			if (pf[i].revents) {
				if (!atomic_load(&ending))
					poll(&pf[n], 1, GRACE_MS);   /* the moment (above) */
				if (!atomic_load(&ending))
					star_lost(procs.rank ? 0 : i + 1);
				pf[i].fd = -1;   /* an orderly end's closing: nothing more to see there */
			}
	}
	free(pf);
	return NULL;
}

static void watch_start(void)
{
	if (pipe(net.stop))
		return;   /* unwatched: the collectives still see a closed connection */
	sigset_t all, old;
	sigfillset(&all);   /* signals (Ctrl-C) are for the main thread */
	pthread_sigmask(SIG_BLOCK, &all, &old);
	net.watching = !pthread_create(&net.watch, NULL, watch, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!net.watching)
		close(net.stop[0]), close(net.stop[1]);
}

static int star_open(char *err, size_t n)
{
	const char *rdv = getenv("MGL_RENDEZVOUS");
	int limit = timeout_s("MGL_RENDEZVOUS_TIMEOUT", 60);
	net.limit = timeout_s("MGL_EXCHANGE_TIMEOUT", 1800);
	if (limit < 0 || net.limit < 0) {
		const char *v = limit < 0 ? "MGL_RENDEZVOUS_TIMEOUT" : "MGL_EXCHANGE_TIMEOUT";
		rt_errf(err, n, "%s is '%s': seconds, 1 to 86,400", v, getenv(v));
		return -1;
	}
	char host[256] = "", port[16] = "", secret[SECRET_MAX] = {0}, where[300];
	const char *file = rdv && !strncmp(rdv, "file:", 5) && rdv[5] ? rdv + 5 : NULL;
	if (file) {
		snprintf(where, sizeof where, "file %s", file);
	} else {
		if (rdv && !strncmp(rdv, "tcp:", 4)) {
			const char *colon = strrchr(rdv + 4, ':');
			if (colon && colon > rdv + 4 && (size_t)(colon - rdv - 4) < sizeof host && strlen(colon + 1) < sizeof port)
				snprintf(host, sizeof host, "%.*s", (int)(colon - rdv - 4), rdv + 4), snprintf(port, sizeof port, "%s", colon + 1);
		} else if (!rdv && getenv("MASTER_ADDR") && getenv("MASTER_PORT")) {
			int p;
			if (!env_int("MASTER_PORT", &p) && p < 65535)
				snprintf(port, sizeof port, "%d", p + 1);
			snprintf(host, sizeof host, "%s", getenv("MASTER_ADDR"));
		}
		if (!*host || !*port) {
			rt_errf(err, n, "%s started %d processes, and they have no way to meet: give MGL_RENDEZVOUS=file:PATH "
				"(a path every rank sees) or tcp:HOST:PORT (rank 0's), or launch with mpirun "
				"(docs/multinode.md)%s%s", procs.launcher, procs.size, rdv ? "; MGL_RENDEZVOUS is " : "", rdv ? rdv : "");
			return -1;
		}
		const char *s = getenv("MGL_JOB_SECRET");
		if (!s || strlen(s) < 16 || strlen(s) >= SECRET_MAX || strchr(s, ' ')) {
			rt_errf(err, n, "a TCP rendezvous needs MGL_JOB_SECRET, the same on every rank: 16 to 127 characters, "
				"no spaces (e.g. export MGL_JOB_SECRET=$(openssl rand -hex 16))");
			return -1;
		}
		strcpy(secret, s);
		snprintf(where, sizeof where, "tcp:%s:%s", host, port);
	}
	size_t size = (size_t)procs.size;
	net.fd = malloc(size * sizeof *net.fd);
	net.named = calloc(size, sizeof *net.named);
	net.pf = calloc(size, sizeof *net.pf);
	net.got = calloc(size, sizeof *net.got);
	if (!net.fd || !net.named || !net.pf || !net.got) {
		rt_errf(err, n, "out of host memory: the connections to %d processes (%s bytes)", procs.size,
			mgl_commas((int64_t)(size * (sizeof *net.fd + sizeof *net.named + sizeof *net.pf + sizeof *net.got)),
				   (char[32]){0}));
		return -1;
	}
	for (int r = 0; r < procs.size; r++)
		net.fd[r] = -1;
	int lfd, rc = -1;
	if (procs.rank > 0) {
		if (!(rc = star_join(file, host, port, secret, where, limit, err, n)))
			watch_start();
		return rc;
	}
	if (file ? random_secret(secret, err, n) || listen_on("0", &lfd, err, n) : listen_on(port, &lfd, err, n))
		return -1;
	if (!file || !write_rendezvous(file, lfd, secret, err, n))
		rc = star_serve(lfd, secret, where, limit, err, n);
	close(lfd);
	if (*net.path)
		unlink(net.path);   /* every rank came (or none will now): nobody reads it again */
	if (!rc)
		watch_start();
	return rc;
}

/* ---------------------------------------------------------------- the star's exchanges */

/* How long a wait on the star may go without a byte: MGL_EXCHANGE_TIMEOUT, and for a peer
 * (which waits on rank 0) a moment more, so that rank 0, waiting on the same silent rank,
 * names it first (star_silent). */
static double wait_s(void) { return procs.rank ? net.limit + GRACE_MS / 1000 : net.limit; }

/* The ranks in net.named (a peer: rank 0) did not answer within wait_s: the job ends. Rank
 * 0 first tells the peers that did (tag 1, then a Verdict: from_root), so that every process
 * names the silent ones. */
static _Noreturn void star_silent(void)
{
	Verdict v;
	char who[200] = "rank 0", of[32] = "", b[32];
	if (procs.rank == 0) {
		missing(net.named, procs.size, who, sizeof who);
		snprintf(of, sizeof of, " of %d", procs.size);
	}
	snprintf(v.what, sizeof v.what, "%.150s%s did not answer within %s s (stopped, hung, or busy for longer than "
		 "MGL_EXCHANGE_TIMEOUT)", who, of, mgl_commas((int64_t)wait_s(), b));
	unsigned char tag = 1;
	for (int r = 1; procs.rank == 0 && r < procs.size; r++)
		if (!net.named[r] && !xfer(net.fd[r], &tag, 1, true, MSG_MORE, 1))
			send_all(net.fd[r], &v, sizeof v, 1);
	star_fail("%s", v.what);
}

/* Ends the job where a transfer with rank r came to GONE or SILENT. */
static void star_check(int rc, int r)
{
	if (rc == GONE)
		star_lost(r);
	if (rc == SILENT) {
		memset(net.named, 0, (size_t)procs.size * sizeof *net.named);
		net.named[r] = true;
		star_silent();
	}
}

/* Rank 0: bytes from each peer in [lo, hi] into buf + r * stride, taken as they come, so
 * that a timeout names every peer still awaited. */
static void from_peers(int lo, int hi, void *buf, size_t bytes, size_t stride)
{
	int left = hi - lo + 1;
	for (int r = lo; r <= hi; r++)
		net.pf[r] = (struct pollfd){net.fd[r], POLLIN, 0}, net.got[r] = 0;
	while (left && bytes) {
		int k = poll(net.pf + lo, (nfds_t)(hi - lo + 1), net.limit * 1000);
		if (k < 0 && errno != EINTR)
			star_fail("cannot wait for the other ranks: %s", strerror(errno));
		if (k == 0) {
			for (int r = 0; r < procs.size; r++)
				net.named[r] = r >= lo && r <= hi && net.pf[r].fd >= 0;
			star_silent();
		}
		for (int r = lo; r <= hi && k > 0; r++) {
			if (!net.pf[r].revents)
				continue;
			ssize_t got = recv(net.fd[r], (char *)buf + (size_t)r * stride + net.got[r], bytes - net.got[r], MSG_DONTWAIT);
			if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK))
				star_lost(r);
			if (got > 0 && (net.got[r] += (size_t)got) == bytes)
				net.pf[r].fd = -1, left--;
		}
	}
}

/* Rank 0: bytes to peer r, after the tag 0 that says they follow (from_root); 0, GONE or
 * SILENT. */
static int to_peer(int r, const void *buf, size_t bytes)
{
	unsigned char tag = 0;
	int rc = xfer(net.fd[r], &tag, 1, true, bytes ? MSG_MORE : 0, wait_s());
	return rc ? rc : send_all(net.fd[r], buf, bytes, wait_s());
}

/* A peer: bytes from rank 0, which opens each message with a tag: 0, they follow; else it
 * ends the job, and a Verdict says why (star_silent). */
static void from_root(void *buf, size_t bytes)
{
	unsigned char tag;
	star_check(recv_all(net.fd[0], &tag, 1, wait_s()), 0);
	if (tag) {
		Verdict v;
		if (recv_all(net.fd[0], &v, sizeof v, 5))
			star_lost(0);
		v.what[sizeof v.what - 1] = 0;
		star_fail("%s", v.what);
	}
	star_check(recv_all(net.fd[0], buf, bytes, wait_s()), 0);
}

static void to_root(const void *buf, size_t bytes) { star_check(send_all(net.fd[0], buf, bytes, wait_s()), 0); }

/* A peer's end of a message that goes through rank 0: it sends it, or receives it. */
static void peer_end(bool sends, void *buf, size_t bytes)
{
	if (sends)
		to_root(buf, bytes);
	else
		from_root(buf, bytes);
}

/* ---------------------------------------------------------------- the channel */

int rt_procs_start(char *err, size_t n)
{
	if (started)
		return 0;
	started = true;
	for (size_t i = 0; i < sizeof launchers / sizeof launchers[0]; i++) {
		int rank, size, local = 0;
		if (env_int(launchers[i].rank, &rank) || env_int(launchers[i].size, &size))
			continue;
		if (size < 1 || rank >= size || (getenv(launchers[i].local) && env_int(launchers[i].local, &local))) {
			rt_errf(err, n, "%s's variables make no sense: %s=%s, %s=%s, %s=%s", launchers[i].name, launchers[i].rank,
				getenv(launchers[i].rank), launchers[i].size, getenv(launchers[i].size), launchers[i].local,
				getenv(launchers[i].local) ? getenv(launchers[i].local) : "(unset)");
			return -1;
		}
		procs = (RtProcs){rank, size, local, launchers[i].name, ""};
		break;
	}
	if (procs.size == 1)
		return 0;
	const char *use = getenv("MGL_MPI");
	bool want_mpi = use ? strcmp(use, "0") != 0
			    : !strcmp(procs.launcher, "mpirun") || (!strcmp(procs.launcher, "srun") && !getenv("MGL_RENDEZVOUS"));
	static char channel[200];
	if (want_mpi && !mpi_load(channel, sizeof channel)) {
		procs.channel = "MPI";
		return mpi_open(err, n);
	}
	if (!want_mpi)
		snprintf(channel, sizeof channel, "%s", use ? "MGL_MPI=0" : "torchrun's processes are not MPI's");
	snprintf(channel + strlen(channel), sizeof channel - strlen(channel), ": they meet over TCP");
	procs.channel = channel;
	return star_open(err, n);
}

const RtProcs *rt_procs(void) { return &procs; }

RtNet *rt_net(void) { return procs.size > 1 ? &net : NULL; }

bool rt_net_groups(const RtNet *x) { return x->mpi_world != NULL; }

void *rt_net_group(RtNet *x, int color, int key)
{
	MpiHandle g = NULL;
	if (x->mpi_world)
		mpi.comm_split(x->mpi_world, color, key, &g);
	return g;
}

void rt_net_group_allgather(void *group, int size, const void *mine, size_t bytes, void *all)
{
	mpi_allgather(group, size, mine, bytes, all);
}

void rt_net_allgather(RtNet *x, const void *mine, size_t bytes, void *all)
{
	if (x->mpi_world) {
		mpi_allgather(x->mpi_world, procs.size, mine, bytes, all);
		return;
	}
	memcpy((char *)all + (size_t)procs.rank * bytes, mine, bytes);
	if (procs.rank) {
		to_root(mine, bytes);
		from_root(all, bytes * (size_t)procs.size);
		return;
	}
	from_peers(1, procs.size - 1, all, bytes, bytes);
	for (int r = 1; r < procs.size; r++)
		star_check(to_peer(r, all, bytes * (size_t)procs.size), r);
}

void rt_net_bcast(RtNet *x, void *buf, size_t bytes, int root)
{
	if (x->mpi_world) {
		mpi_bcast(x->mpi_world, buf, bytes, root);
		return;
	}
	if (procs.rank) {   /* the root sends to rank 0, which passes it on */
		peer_end(procs.rank == root, buf, bytes);
		return;
	}
	if (root)
		from_peers(root, root, buf, bytes, 0);
	for (int r = 1; r < procs.size; r++)
		if (r != root)
			star_check(to_peer(r, buf, bytes), r);
}

void rt_net_send(RtNet *x, void *buf, size_t bytes, int from, int to)
{
	int me = procs.rank;
	bool relay = !x->mpi_world && me == 0;   /* the star's rank 0 passes on what its peers send each other */
	if (from == to || (me != from && me != to && !relay))
		return;
	if (x->mpi_world) {
		for (size_t at = 0; at < bytes; at += PIECE) {
			int k = (int)(bytes - at < PIECE ? bytes - at : PIECE);
			if (me == from)
				mpi.send((char *)buf + at, k, mpi.byte, to, 0, x->mpi_world);
			else
				mpi.recv((char *)buf + at, k, mpi.byte, from, 0, x->mpi_world, NULL);   /* NULL: MPI_STATUS_IGNORE */
		}
		return;
	}
	/* the star: through rank 0 (buf its staging) unless it is one end */
	if (me) {
		peer_end(me == from, buf, bytes);
		return;
	}
	if (from)
		from_peers(from, from, buf, bytes, 0);
	if (to)
		star_check(to_peer(to, buf, bytes), to);
}

void rt_procs_end(void)
{
	if (net.mpi_world)
		mpi.finalize();
	if (net.fd && !net.mpi_world) {
		/* every process here (a barrier) before any closes: a peer closes once rank 0 has
		 * answered, rank 0 once it answered every peer, so a closing is no news to rank 0
		 * once all came and to a peer from now (a failure still shows where it waits). Met
		 * by a process that could not start its watch too: the others have theirs. */
		char b = 0;
		if (procs.rank) {
			atomic_store(&ending, true);
			to_root(&b, 1);
			from_root(&b, 0);   /* the tag alone */
		} else {
			from_peers(1, procs.size - 1, &b, 1, 0);
			atomic_store(&ending, true);
			for (int r = 1; r < procs.size; r++)
				to_peer(r, NULL, 0);   /* one gone now came, and ends anyway */
		}
	}
	if (net.watching) {
		char b = 0;
		if (write(net.stop[1], &b, 1) == 1)
			pthread_join(net.watch, NULL);
		close(net.stop[0]);
		close(net.stop[1]);
	}
	for (int r = 0; net.fd && r < procs.size; r++)
		if (net.fd[r] >= 0)
			close(net.fd[r]);
	free(net.fd);
	free(net.named);
	free(net.pf);
	free(net.got);
	net = (RtNet){0};
}

/* mpirun ends the job itself when a process exits with an error, leaving every process the
 * moment to say its own; srun (and others) may not */
void rt_procs_abort(void)
{
	if (net.mpi_world && strcmp(procs.launcher, "mpirun"))
		mpi.abort(net.mpi_world, 1);
}
