/* tests/test_launch.c — Check suites for launch.c's processes without MPI: torchrun's
 * variables, the rendezvous (file:PATH and tcp:HOST:PORT with the job's secret), the
 * channel's collectives between real processes, a rank that never comes, one that dies
 * after the rendezvous while the others wait elsewhere, and one that hangs alive (stopped)
 * while the others wait for it on the channel.
 *
 * Each test forks a process per rank (launch.c keeps its state in statics, fresh in each
 * child), gives it torchrun's variables with setenv, and has it write what it found (the
 * channel's results, or its error) to a file that the parent then reads.
 */
#include "backend.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[64];

/* What rank r of `size` does: meet the others through rdv, then allgather every rank's
 * (rank + 1) * 10, broadcast rank 1's 4,242 and send two numbers from one rank to another;
 * writes "ok" or the error to DIR/rR. */
static void set_env(int r, int size, const char *rdv, const char *secret)
{
	char v[16];
	snprintf(v, sizeof v, "%d", r);
	setenv("RANK", v, 1);
	setenv("LOCAL_RANK", v, 1);
	snprintf(v, sizeof v, "%d", size);
	setenv("WORLD_SIZE", v, 1);
	setenv("MGL_RENDEZVOUS", rdv, 1);
	setenv("MGL_RENDEZVOUS_TIMEOUT", "2", 1);
	if (secret)
		setenv("MGL_JOB_SECRET", secret, 1);
}

static void rank_main(int r, int size, const char *rdv, const char *secret)
{
	char path[128], err[512] = "";
	set_env(r, size, rdv, secret);
	if (!rt_procs_start(err, sizeof err)) {
		RtNet *net = rt_net();
		int mine = (r + 1) * 10, all[8] = {0}, b = r == 1 ? 4242 : 0;
		rt_net_allgather(net, &mine, sizeof mine, all);
		rt_net_bcast(net, &b, sizeof b, 1);
		/* the last rank's 777 to rank 1 (through rank 0 with 3 or more), and rank 1's 555 to 0 */
		int to1 = r == size - 1 ? 777 : 0, to0 = r == 1 ? 555 : 0;
		rt_net_send(net, &to1, sizeof to1, size - 1, 1);
		rt_net_send(net, &to0, sizeof to0, 1, 0);
		snprintf(err, sizeof err, "ok");
		if ((r == 1 && to1 != 777) || (r == 0 && to0 != 555))
			snprintf(err, sizeof err, "wrong: sent %d and %d", to1, to0);
		for (int k = 0; k < size; k++)
			if (all[k] != (k + 1) * 10 || b != 4242)
				snprintf(err, sizeof err, "wrong: all[%d] = %d, bcast %d", k, all[k], b);
		if (strcmp(rt_procs()->launcher, "torchrun") || rt_procs()->rank != r || rt_procs()->size != size)
			snprintf(err, sizeof err, "wrong identity: %s rank %d of %d", rt_procs()->launcher, rt_procs()->rank,
				 rt_procs()->size);
		rt_procs_end();
	}
	snprintf(path, sizeof path, "%s/r%d", dir, r);
	FILE *f = fopen(path, "w");
	fputs(err, f);
	fclose(f);
	_exit(0);
}

/* Starts the ranks in `which` (a bit each) of `size`, waits for them; what rank r wrote in out[r]. */
static void launch(int size, unsigned which, const char *rdv, const char *const *secrets, char out[][512])
{
	pid_t pid[8];
	for (int r = 0; r < size; r++)
		if (which >> r & 1) {
			pid[r] = fork();
			ck_assert_int_ge(pid[r], 0);
			if (!pid[r])
				rank_main(r, size, rdv, secrets ? secrets[r] : NULL);
		}
	for (int r = 0; r < size; r++) {
		out[r][0] = 0;
		if (!(which >> r & 1))
			continue;
		int st;
		waitpid(pid[r], &st, 0);
		char path[128];
		snprintf(path, sizeof path, "%s/r%d", dir, r);
		FILE *f = fopen(path, "r");
		ck_assert_msg(f, "rank %d wrote nothing", r);
		size_t n = fread(out[r], 1, 511, f);
		out[r][n] = 0;
		fclose(f);
		unlink(path);
	}
}

static void setup(void)
{
	snprintf(dir, sizeof dir, "/tmp/mgl_launch_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

START_TEST(file_rendezvous)
{
	char rdv[128], out[4][512];
	snprintf(rdv, sizeof rdv, "file:%s/rdv", dir);
	launch(4, 0xf, rdv, NULL, out);
	for (int r = 0; r < 4; r++)
		ck_assert_msg(!strcmp(out[r], "ok"), "rank %d: %s", r, out[r]);
	ck_assert_msg(access(rdv + 5, F_OK) != 0, "rank 0 left the rendezvous file");
}
END_TEST

START_TEST(tcp_rendezvous_with_the_secret)
{
	static const char *const same[] = {"0123456789abcdef0", "0123456789abcdef0", "0123456789abcdef0"};
	char rdv[64], out[3][512];
	int port = 20000 + getpid() % 20000;
	snprintf(rdv, sizeof rdv, "tcp:127.0.0.1:%d", port);
	launch(3, 0x7, rdv, same, out);
	for (int r = 0; r < 3; r++)
		ck_assert_msg(!strcmp(out[r], "ok"), "rank %d: %s", r, out[r]);
	/* a peer with another secret is not let in: rank 0 names it missing */
	static const char *const other[] = {"0123456789abcdef0", "0123456789abcdef0", "not-the-secret-at-all"};
	snprintf(rdv, sizeof rdv, "tcp:127.0.0.1:%d", port + 1);
	launch(3, 0x7, rdv, other, out);
	ck_assert_msg(strstr(out[0], "rank 2 of 3 did not arrive within 2 s"), "rank 0: %s", out[0]);
	ck_assert_msg(strstr(out[1], "rank 2 of 3 did not arrive within 2 s"), "rank 1: %s", out[1]);
	ck_assert_msg(strstr(out[2], "did not let rank 2 in"), "rank 2: %s", out[2]);
	/* no secret, no listener */
	launch(2, 0x1, rdv, NULL, out);
	ck_assert_msg(strstr(out[0], "needs MGL_JOB_SECRET"), "rank 0: %s", out[0]);
}
END_TEST

START_TEST(a_rank_that_never_comes)
{
	char rdv[128], out[4][512];
	snprintf(rdv, sizeof rdv, "file:%s/rdv", dir);
	launch(4, 0xb, rdv, NULL, out);   /* rank 2 never starts: every other rank names it */
	for (int r = 0; r < 4; r++)
		if (r != 2)
			ck_assert_msg(strstr(out[r], "rank 2 of 4 did not arrive within 2 s"), "rank %d: %s", r, out[r]);
	launch(3, 0x6, rdv, NULL, out);   /* nor rank 0 */
	for (int r = 1; r < 3; r++)
		ck_assert_msg(strstr(out[r], "rank 0 did not arrive within 2 s"), "rank %d: %s", r, out[r]);
}
END_TEST

/* Rank r of `size` meets the others through rdv, its stderr in DIR/eR; then rank `dies`
 * ends at once (as on an error) and the others wait as in a backend's collective that
 * never times out (NCCL's), to outlive it, or with own end on their own 300 ms later with
 * an error of their own (one they agreed on with it, said after their cleanup); dies -1:
 * every rank ends in order, rank r r / 5 s after rank 0. Exits 2 if the rendezvous failed,
 * 3 (rank `dies`), 4 if it outlived the wait, 1 with own, and what the channel's watch
 * gives. */
static void die_main(int r, int size, const char *rdv, int dies, int own)
{
	char path[128], err[512];
	set_env(r, size, rdv, NULL);
	snprintf(path, sizeof path, "%s/e%d", dir, r);
	if (!freopen(path, "w", stderr))
		_exit(5);
	if (dies == -2 && r == 1) {   /* one descriptor left, the connection's: no pipe, no watch thread */
		int fd = dup(0);
		struct rlimit lim;
		getrlimit(RLIMIT_NOFILE, &lim);
		lim.rlim_cur = (rlim_t)fd + 1;
		close(fd);
		setrlimit(RLIMIT_NOFILE, &lim);
	}
	if (rt_procs_start(err, sizeof err))
		_exit(2);
	if (r == dies)
		_exit(3);
	if (own) {
		nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
		fprintf(stderr, "mgl: error: rank %d: its own error\n", r);
		fflush(stderr);
		_exit(1);
	}
	if (dies < 0) {   /* -1, or -2: rank 1 cannot watch (no descriptor for its stop pipe) */
		nanosleep(&(struct timespec){0, r * 200 * 1000 * 1000}, NULL);
		rt_procs_end();
		_exit(0);
	}
	sleep(20);
	_exit(4);
}

/* Rank r of `size` meets the others through rdv (MGL_EXCHANGE_TIMEOUT 1 s), its stderr in
 * DIR/eR; then the ranks in `hangs` (a bit each) stop (SIGSTOP: alive, their connections
 * open, silent) and the others broadcast `bytes` from rank 1 and end in order (a barrier),
 * which must end them with the channel's error. Exits 2 if the rendezvous failed, 0 if the
 * exchanges returned. */
static void hang_main(int r, int size, const char *rdv, int hangs, int bytes)
{
	char path[128], err[512];
	set_env(r, size, rdv, NULL);
	setenv("MGL_EXCHANGE_TIMEOUT", "1", 1);
	snprintf(path, sizeof path, "%s/e%d", dir, r);
	if (!freopen(path, "w", stderr))
		_exit(5);
	signal(SIGALRM, SIG_DFL);   /* check's own handler otherwise: never left behind, however the channel fails */
	alarm(20);
	if (rt_procs_start(err, sizeof err))
		_exit(2);
	if (hangs >> r & 1)
		raise(SIGSTOP);
	char *buf = calloc((size_t)bytes, 1);
	rt_net_bcast(rt_net(), buf, (size_t)bytes, 1);
	free(buf);
	rt_procs_end();
	_exit(0);
}

/* Runs `size` ranks of body (die_main or hang_main, given a and b); their exit statuses
 * in st (-1: stopped, then killed once the others ended), their stderr in out, the seconds
 * taken until all but the stopped ones ended. */
static double run_ranks(int size, void (*body)(int, int, const char *, int, int), int a, int b, int *st,
			char out[][512])
{
	char rdv[128];
	snprintf(rdv, sizeof rdv, "file:%s/rdv", dir);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid_t pid[8];
	for (int r = 0; r < size; r++)
		if (!(pid[r] = fork()))
			body(r, size, rdv, a, b);
	for (int r = 0; r < size; r++) {
		int w;
		waitpid(pid[r], &w, WUNTRACED);
		st[r] = WIFSTOPPED(w) ? -1 : WIFEXITED(w) ? WEXITSTATUS(w) : 128 + WTERMSIG(w);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	for (int r = 0; r < size; r++) {
		if (st[r] == -1) {
			kill(pid[r], SIGKILL);
			waitpid(pid[r], NULL, 0);
		}
		char path[128];
		snprintf(path, sizeof path, "%s/e%d", dir, r);
		FILE *f = fopen(path, "r");
		size_t n = f ? fread(out[r], 1, 511, f) : 0;
		out[r][n] = 0;
		if (f)
			fclose(f);
	}
	return (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
}

static double run_dying(int size, int dies, bool own, int *st, char out[][512])
{
	return run_ranks(size, die_main, dies, own, st, out);
}

START_TEST(a_rank_that_dies_ends_the_others)
{
	int st[4];
	char out[4][512];
	/* a peer dies: rank 0 sees its connection close, names it and ends, which ends the rest */
	double s = run_dying(4, 2, false, st, out);
	ck_assert_msg(s < 10, "the others waited %.1f s for the dead rank", s);
	ck_assert_int_eq(st[2], 3);
	ck_assert_msg(st[0] == 1 && strstr(out[0], "mgl: error: rank 0: lost rank 2 (its connection closed"),
		      "rank 0: exit %d, %s", st[0], out[0]);
	for (int r = 1; r < 4; r++)
		if (r != 2)
			ck_assert_msg(st[r] == 1 && strstr(out[r], "lost rank 0 (its connection closed"), "rank %d: exit %d, %s", r,
				      st[r], out[r]);
	/* rank 0 dies: every peer says so */
	s = run_dying(3, 0, false, st, out);
	ck_assert_msg(s < 10, "the others waited %.1f s for the dead rank 0", s);
	for (int r = 1; r < 3; r++)
		ck_assert_msg(st[r] == 1 && strstr(out[r], "lost rank 0 (its connection closed"), "rank %d: exit %d, %s", r,
			      st[r], out[r]);
	/* an orderly end, rank 0 first: a closing after it is no news */
	run_dying(4, -1, false, st, out);
	for (int r = 0; r < 4; r++)
		ck_assert_msg(st[r] == 0 && !*out[r], "rank %d: exit %d, %s", r, st[r], out[r]);
	/* an orderly end where one process could not start its watch: still no news */
	run_dying(3, -2, false, st, out);
	for (int r = 0; r < 3; r++)
		ck_assert_msg(st[r] == 0 && !*out[r], "rank %d: exit %d, %s", r, st[r], out[r]);
	/* a rank ends with an error the others share (agree in train.c) while they are still on
	 * their way out: each still says its own, rather than that it lost the one gone first */
	for (int dies = 0; dies < 2; dies++) {
		run_dying(2, dies, true, st, out);
		ck_assert_msg(st[1 - dies] == 1 && strstr(out[1 - dies], "its own error") && !strstr(out[1 - dies], "lost rank"),
			      "rank %d: exit %d, %s", 1 - dies, st[1 - dies], out[1 - dies]);
	}
}
END_TEST

/* A rank that hangs alive (stopped) keeps its connections open, so only a timeout can tell:
 * rank 0 names it after MGL_EXCHANGE_TIMEOUT (1 s) and tells the others, which name it too;
 * a stopped rank 0 the peers name themselves, a moment later. Whether the silent rank is
 * awaited (its part of an exchange) or does not take what it is sent (64 MiB, more than a
 * socket holds). */
START_TEST(a_rank_that_hangs_ends_the_others)
{
	static const struct {
		int size, hangs, bytes;
		const char *says;   /* what every other rank says */
	} cases[] = {
		{4, 1 << 2, 4, "rank 2 of 4 did not answer within 1 s (stopped, hung, or busy for longer than MGL_EXCHANGE_TIMEOUT)"},
		{4, 1 << 2, 64 << 20, "rank 2 of 4 did not answer within 1 s"},
		{5, 1 << 2 | 1 << 3, 4, "ranks 2 and 3 of 5 did not answer within 1 s"},
		{3, 1 << 0, 4, "rank 0 did not answer within 3 s (stopped, hung, or busy for longer than MGL_EXCHANGE_TIMEOUT)"},
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		int st[8];
		char out[8][512];
		double s = run_ranks(cases[c].size, hang_main, cases[c].hangs, cases[c].bytes, st, out);
		ck_assert_msg(s < 8, "case %zu: the others took %.1f s to end", c, s);
		for (int r = 0; r < cases[c].size; r++) {
			if (cases[c].hangs >> r & 1) {
				ck_assert_msg(st[r] == -1, "case %zu: rank %d did not stop: exit %d, %s", c, r, st[r], out[r]);
				continue;
			}
			char want[300];
			snprintf(want, sizeof want, "mgl: error: rank %d: %s", r, cases[c].says);
			ck_assert_msg(st[r] == 1 && strstr(out[r], want), "case %zu: rank %d: exit %d, %s", c, r, st[r], out[r]);
		}
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("launch");
	TCase *c = tcase_create("rendezvous");
	tcase_add_checked_fixture(c, setup, teardown);
	tcase_set_timeout(c, 30);
	tcase_add_test(c, file_rendezvous);
	tcase_add_test(c, tcp_rendezvous_with_the_secret);
	tcase_add_test(c, a_rank_that_never_comes);
	tcase_add_test(c, a_rank_that_dies_ends_the_others);
	tcase_add_test(c, a_rank_that_hangs_ends_the_others);
	suite_add_tcase(s, c);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
