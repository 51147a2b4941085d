/*
 * procs.c - the processes chan-bench starts (chand, redis-server, chan,
 * redis-cli), stopped by pid on every way out: normal end, error exit and
 * SIGINT/SIGTERM. Also the /proc readings (RSS, CPU time).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "bench.h"

#define MAX_CHILDREN 64
#define MAX_PATHS    64

/* Plain arrays of sig_atomic-sized values: the signal handler reads them. */
static volatile pid_t children[MAX_CHILDREN];
static char           paths[MAX_PATHS][1024];
static volatile int   npaths;
static char           tmpdir[512];
static volatile sig_atomic_t cleaned;

static void
remember(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++) {
		if (children[i] == 0) {
			children[i] = pid;
			return;
		}
	}
}

static void
forget(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == pid)
			children[i] = 0;
}

void
bench_track_path(const char *path)
{
	if (npaths < MAX_PATHS) {
		snprintf(paths[npaths], sizeof(paths[0]), "%s", path);
		npaths++;
	}
}

/* Async-signal-safe: kill, waitpid, nanosleep, unlink, rmdir only. */
static void
cleanup_safe(void)
{
	struct timespec tick = { 0, 20 * 1000 * 1000 };
	int alive;

	if (cleaned)
		return;
	cleaned = 1;
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] > 0)
			kill(children[i], SIGTERM);
	/* chand answers its waiters and exits within a few seconds. */
	for (int t = 0; t < 250; t++) {
		alive = 0;
		for (int i = 0; i < MAX_CHILDREN; i++) {
			if (children[i] <= 0)
				continue;
			if (waitpid(children[i], NULL, WNOHANG) == children[i])
				children[i] = 0;
			else
				alive++;
		}
		if (alive == 0)
			break;
		nanosleep(&tick, NULL);
	}
	for (int i = 0; i < MAX_CHILDREN; i++) {
		if (children[i] > 0) {
			kill(children[i], SIGKILL);
			waitpid(children[i], NULL, 0);
			children[i] = 0;
		}
	}
	for (int i = 0; i < npaths; i++)
		unlink(paths[i]);
	if (tmpdir[0] != '\0')
		rmdir(tmpdir);
}

void
bench_cleanup_run(void)
{
	cleanup_safe();
}

static void
on_signal(int sig)
{
	static const char msg[] = "\nchan-bench: interrupted (signal ";
	static const char tail[] = "), stopping chand and redis-server\n";
	char num[4] = { (char) ('0' + sig / 10), (char) ('0' + sig % 10) };

	(void) !write(2, msg, sizeof(msg) - 1);
	(void) !write(2, num, 2);
	(void) !write(2, tail, sizeof(tail) - 1);
	cleanup_safe();
	_exit(128 + sig);
}

void
bench_cleanup_install(const char *dir)
{
	struct sigaction sa;

	snprintf(tmpdir, sizeof(tmpdir), "%s", dir);
	atexit(bench_cleanup_run);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	/* A dead peer must be an error return, not a silent death. */
	signal(SIGPIPE, SIG_IGN);
}

pid_t
bench_spawn(char *const argv[], int in_fd, int out_fd, const char *errpath)
{
	sigset_t block, old;
	pid_t pid;

	/* No signal between fork and remember(): the child would leak. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigprocmask(SIG_BLOCK, &block, &old);
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		int err = errpath != NULL ?
		    open(errpath, O_WRONLY | O_CREAT | O_APPEND, 0600) : null;

		dup2(in_fd >= 0 ? in_fd : null, 0);
		dup2(out_fd >= 0 ? out_fd : null, 1);
		dup2(err >= 0 ? err : null, 2);
		/* Our own process group: a ^C reaches us, and we stop the
		 * children in order (chand must answer its waiters). */
		setpgid(0, 0);
		signal(SIGPIPE, SIG_DFL);
		sigprocmask(SIG_SETMASK, &old, NULL);
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		execvp(argv[0], argv);
		dprintf(2, "chan-bench: exec %s: %s\n", argv[0],
		    strerror(errno));
		_exit(127);
	}
	if (pid > 0)
		remember(pid);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid < 0)
		fprintf(stderr, "chan-bench: fork: %s\n", strerror(errno));
	return (pid);
}

int
bench_wait(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR)
			return (-1);
	}
	forget(pid);
	if (WIFEXITED(st))
		return (WEXITSTATUS(st));
	return (128 + WTERMSIG(st));
}

int
bench_wait_for(pid_t pid, int timeout_ms)
{
	int st;

	for (int t = 0; t <= timeout_ms / 10; t++) {
		pid_t w = waitpid(pid, &st, WNOHANG);

		if (w == pid) {
			forget(pid);
			if (WIFEXITED(st))
				return (WEXITSTATUS(st));
			return (128 + WTERMSIG(st));
		}
		if (w < 0 && errno != EINTR)
			return (-1);
		bench_sleep_ns(10 * 1000 * 1000);
	}
	bench_stop(pid, 2000);
	return (-2);
}

void
bench_stop(pid_t pid, int timeout_ms)
{
	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	for (int t = 0; t < timeout_ms / 10; t++) {
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			forget(pid);
			return;
		}
		bench_sleep_ns(10 * 1000 * 1000);
	}
	fprintf(stderr, "chan-bench: pid %d ignored SIGTERM for %d ms, "
	    "killing it\n", (int) pid, timeout_ms);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	forget(pid);
}

static bool
exited(pid_t pid)
{
	if (waitpid(pid, NULL, WNOHANG) == pid) {
		forget(pid);
		return (true);
	}
	return (false);
}

static void
show_log(const char *path)
{
	char line[512];
	FILE *f = fopen(path, "r");

	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL)
		fprintf(stderr, "  | %s", line);
	fclose(f);
}

pid_t
bench_start_chand(const bench_opts *o, const char *url, const char *logname)
{
	char log[600], workers[32];
	char *argv[8 + 16];
	int argc = 0;
	pid_t pid;

	snprintf(log, sizeof(log), "%s/%s", o->dir, logname);
	bench_track_path(log);
	/* url is "ipc://PATH": the socket file is ours to remove. */
	if (strncmp(url, "ipc://", 6) == 0)
		bench_track_path(url + 6);
	argv[argc++] = (char *) o->chand;
	argv[argc++] = "--listen";
	argv[argc++] = (char *) url;
	if (o->workers > 0) {
		snprintf(workers, sizeof(workers), "%d", o->workers);
		argv[argc++] = "--workers";
		argv[argc++] = workers;
	}
	for (int i = 0; i < o->nchand_args; i++)
		argv[argc++] = o->chand_args[i];
	argv[argc] = NULL;
	pid = bench_spawn(argv, -1, -1, log);
	if (pid < 0)
		return (-1);
	/* Ready once an nng REQ socket can dial it. */
	for (int t = 0; t < 500; t++) {
		nng_socket s;
		int rv;

		if (exited(pid)) {
			fprintf(stderr, "chan-bench: chand exited at start; "
			    "its log:\n");
			show_log(log);
			return (-1);
		}
		if (nng_req0_open(&s) != 0)
			break;
		rv = nng_dial(s, url, NULL, 0);
		nng_close(s);
		if (rv == 0)
			return (pid);
		bench_sleep_ns(10 * 1000 * 1000);
	}
	fprintf(stderr, "chan-bench: chand did not listen on %s in 5 s; "
	    "its log:\n", url);
	show_log(log);
	bench_stop(pid, 3000);
	return (-1);
}

pid_t
bench_start_redis(const bench_opts *o, const char *sock, const char *logname)
{
	char log[600];
	char *argv[] = { (char *) o->redis, "--port", "0", "--unixsocket",
		(char *) sock, "--unixsocketperm", "700", "--save", "",
		"--appendonly", "no", "--daemonize", "no", "--maxclients",
		"15000", "--dir",
		(char *) o->dir, "--logfile", log, NULL };
	pid_t pid;

	snprintf(log, sizeof(log), "%s/%s", o->dir, logname);
	bench_track_path(log);
	bench_track_path(sock);
	pid = bench_spawn(argv, -1, -1, NULL);
	if (pid < 0)
		return (-1);
	for (int t = 0; t < 500; t++) {
		redisContext *c;
		redisReply *rep;

		if (exited(pid)) {
			fprintf(stderr, "chan-bench: redis-server exited at "
			    "start; its log:\n");
			show_log(log);
			return (-1);
		}
		c = redisConnectUnix(sock);
		if (c != NULL && c->err == 0) {
			rep = redisCommand(c, "PING");
			if (rep != NULL && rep->type == REDIS_REPLY_STATUS) {
				freeReplyObject(rep);
				redisFree(c);
				return (pid);
			}
			if (rep != NULL)
				freeReplyObject(rep);
		}
		if (c != NULL)
			redisFree(c);
		bench_sleep_ns(10 * 1000 * 1000);
	}
	fprintf(stderr, "chan-bench: redis-server did not answer on %s in "
	    "5 s; its log:\n", sock);
	show_log(log);
	bench_stop(pid, 3000);
	return (-1);
}

long
bench_rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
	if ((f = fopen(path, "r")) == NULL)
		return (-1);
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return (kb);
}

double
bench_cpu_seconds(pid_t pid)
{
	char path[64], buf[2048], *p;
	unsigned long utime, stime;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
	if ((f = fopen(path, "r")) == NULL)
		return (-1);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* comm may hold spaces: fields resume after the last ')'. Then
	 * state is field 3, utime 14, stime 15. */
	if ((p = strrchr(buf, ')')) == NULL)
		return (-1);
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
	    "%lu %lu", &utime, &stime) != 2)
		return (-1);
	return ((double) (utime + stime) / (double) sysconf(_SC_CLK_TCK));
}
