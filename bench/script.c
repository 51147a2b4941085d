/*
 * script.c - workload 7, the shell-pipeline case: N lines piped through
 * `chan send NAME` while `chan recv -n N NAME` consumes, against
 * `redis-cli --pipe` (LPUSH commands) while a `redis-cli RPOP key 1000`
 * loop consumes. Timed from the first spawn to the last line received.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

/* Writes the N lines (payload of size bytes each, then '\n'). */
static int
write_lines(const char *path, size_t size, size_t lines, bool resp,
    const char *key)
{
	FILE *f = fopen(path, "w");
	char *line = malloc(size + 1);

	if (f == NULL || line == NULL) {
		if (f != NULL)
			fclose(f);
		free(line);
		return (-1);
	}
	memset(line, 'x', size);
	for (size_t i = 0; i < lines; i++) {
		char num[32];
		int n = snprintf(num, sizeof(num), "%zu", i);

		memcpy(line, num, (size_t) n < size ? (size_t) n : size);
		if (resp)
			fprintf(f, "*3\r\n$5\r\nLPUSH\r\n$%zu\r\n%s\r\n$%zu\r\n",
			    strlen(key), key, size);
		fwrite(line, 1, size, f);
		fputs(resp ? "\r\n" : "\n", f);
	}
	free(line);
	return (fclose(f) == 0 ? 0 : -1);
}

/* Counts the non-empty lines a child prints (redis-cli prints an empty
 * line for a nil reply). */
static size_t
count_lines(int fd)
{
	char buf[65536];
	size_t lines = 0;
	bool content = false;
	ssize_t n;

	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				if (content)
					lines++;
				content = false;
			} else {
				content = true;
			}
		}
	}
	return (lines);
}

typedef struct reader {
	int       fd;
	size_t    lines;
	uint64_t  t_end;
	pthread_t th;
} reader;

static void *
reader_main(void *arg)
{
	reader *rd = arg;

	rd->lines = count_lines(rd->fd);
	rd->t_end = bench_now_ns();
	return (NULL);
}

int
bench_script_chand(const bench_opts *o, size_t size, size_t lines,
    bench_result *r)
{
	char path[600], name[64], count[32];
	int in = -1, p[2] = { -1, -1 };
	pid_t cons = -1, prod = -1;
	reader rd = { .fd = -1 };
	uint64_t t0;
	int cst, pst;

	snprintf(path, sizeof(path), "%s/lines-%zu.txt", o->dir, size);
	snprintf(name, sizeof(name), "bench.script.%zu.%d", size,
	    (int) getpid());
	snprintf(count, sizeof(count), "%zu", lines);
	bench_track_path(path);
	if (write_lines(path, size, lines, false, NULL) != 0 ||
	    (in = open(path, O_RDONLY)) < 0 || pipe(p) != 0) {
		bench_result_fail(r, "cannot write %s: %s", path,
		    strerror(errno));
		goto out;
	}
	{
		char *cargv[] = { (char *) o->chan, "--url",
			(char *) o->chand_url, "recv", "-n", count, name, NULL };
		char *pargv[] = { (char *) o->chan, "--url",
			(char *) o->chand_url, "send", name, NULL };

		t0 = bench_now_ns();
		cons = bench_spawn(cargv, -1, p[1], NULL);
		close(p[1]);
		p[1] = -1;
		rd.fd = p[0];
		pthread_create(&rd.th, NULL, reader_main, &rd);
		prod = bench_spawn(pargv, in, -1, NULL);
	}
	pst = prod > 0 ? bench_wait(prod) : -1;
	/* A consumer that will never see all lines must not hang the run:
	 * stop it at once when the producer failed, else after 60 s. */
	if (cons > 0 && pst != 0)
		bench_stop(cons, 2000);
	cst = cons > 0 ? (pst != 0 ? -1 : bench_wait_for(cons, 60000)) : -1;
	pthread_join(rd.th, NULL);
	if (pst != 0 || cst != 0 || rd.lines != lines)
		bench_result_fail(r, "chan send exit %d, chan recv exit %d, "
		    "%zu of %zu lines", pst, cst, rd.lines, lines);
	else
		bench_result_fill(r, lines, rd.t_end - t0, NULL);
out:
	if (in >= 0)
		close(in);
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	unlink(path);
	return (r->failed ? -1 : 0);
}

int
bench_script_redis(const bench_opts *o, size_t size, size_t lines,
    bench_result *r)
{
	char path[600], key[64];
	int in = -1;
	pid_t prod = -1;
	size_t got = 0;
	uint64_t t0;
	int pst;

	snprintf(path, sizeof(path), "%s/lines-%zu.resp", o->dir, size);
	snprintf(key, sizeof(key), "bench.script.%zu.%d", size,
	    (int) getpid());
	bench_track_path(path);
	if (write_lines(path, size, lines, true, key) != 0 ||
	    (in = open(path, O_RDONLY)) < 0) {
		bench_result_fail(r, "cannot write %s: %s", path,
		    strerror(errno));
		goto out;
	}
	{
		char *pargv[] = { (char *) o->redis_cli, "-s",
			(char *) o->redis_sock, "--pipe", NULL };
		char *cargv[] = { (char *) o->redis_cli, "-s",
			(char *) o->redis_sock, "RPOP", key, "1000", NULL };

		t0 = bench_now_ns();
		prod = bench_spawn(pargv, in, -1, NULL);
		/* The consumer loop: one redis-cli per 1000, as a shell
		 * `while` loop would run it (minus the shell). */
		while (got < lines) {
			int p[2], st;
			pid_t c;

			if (pipe(p) != 0) {
				bench_result_fail(r, "pipe: %s",
				    strerror(errno));
				break;
			}
			c = bench_spawn(cargv, -1, p[1], NULL);
			close(p[1]);
			got += count_lines(p[0]);
			close(p[0]);
			if (c < 0 || (st = bench_wait(c)) != 0) {
				bench_result_fail(r, "redis-cli RPOP failed");
				break;
			}
		}
	}
	pst = prod > 0 ? bench_wait(prod) : -1;
	if (!r->failed) {
		if (pst != 0 || got != lines)
			bench_result_fail(r, "redis-cli --pipe exit %d, %zu of "
			    "%zu lines", pst, got, lines);
		else
			bench_result_fill(r, lines, bench_now_ns() - t0, NULL);
	}
out:
	if (in >= 0)
		close(in);
	unlink(path);
	return (r->failed ? -1 : 0);
}
