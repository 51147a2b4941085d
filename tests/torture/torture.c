/*
 * chan-torture - exact delivery under faults (issue 3).
 *
 * Starts a private chand, runs producer processes and one consumer against
 * one channel, and meanwhile SIGKILLs and SIGSTOPs the consumer, kills
 * producers mid-batch, and opens garbage and connect-then-close
 * connections on the socket. Every process writes what it did to a log,
 * one write(2) per record (a SIGKILL can still tear a write that crosses
 * a page; the reader drops a torn last record, see read_consumer):
 *
 *   producer  p<ID>.log   "K\n" per message whose send returned OK
 *   consumer  c<GEN>.log  "H ID K R\n" when a message is in hand (R: the
 *                         redelivered mark), "A\n" when a call returned,
 *                         which proves the daemon processed the
 *                         confirmation of everything held before it.
 *
 * At the end it checks: every recorded send was received (lost 0); no
 * message was confirmed twice (duplicated 0); a message seen again carries
 * the redelivered mark; per producer, confirmed messages are in send order.
 *
 * usage: chan-torture [--duration S] [--seed N] [--producers P]
 *                     [--chand PATH] [--keep] [--faults LIST]
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chan/chan.h>

#define CHANNEL "torture"
/* Bounded, so producers feel back-pressure (and get killed while parked in
 * a blocked send) and the backlog stays drainable however long the run. */
#define CAPACITY 1000
#define MAX_PRODUCERS 4096

typedef struct {
	int         duration_s;
	unsigned    seed;
	int         producers;
	const char *chand;
	bool        keep;
	unsigned    faults; /* bit per fault kind, see fault_names */
	char        dir[256];
	char        sock[300];
	char        url[320];
} opts;

static volatile sig_atomic_t stop_flag;

/* The fault kinds, in the order of their bits in opts.faults. */
static const char *const fault_names[] = { "kill-consumer", "stop-consumer",
	"kill-producer", "garbage", "connect-close" };
#define NFAULTS 5

static void
on_term(int sig)
{
	(void) sig;
	stop_flag = 1;
}

static int64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

static void
sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stop_flag) {
	}
}

static int
open_log(const opts *o, char kind, int n)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/%c%d.log", o->dir, kind, n);
	return (open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
}

static void
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			_exit(3);
		}
		buf += n;
		len -= (size_t) n;
	}
}

static chan_client *
connect_retry(const char *url)
{
	chan_client *c = NULL;
	for (int i = 0; i < 200; i++) {
		if (chan_connect(url, &c) == CHAN_OK) {
			return (c);
		}
		sleep_ms(25);
	}
	return (NULL);
}

static void
install_term(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
}

/* ---- producer ----------------------------------------------------------- */

static void
producer_main(const opts *o, int id, unsigned seed)
{
	chan_client *c;
	int          fd = open_log(o, 'p', id);
	uint64_t     k = 0;
	char         payload[16][32];
	chan_buf     bufs[16];
	char         rec[16 * 24];

	install_term();
	if (fd < 0 || (c = connect_retry(o->url)) == NULL) {
		_exit(2);
	}
	while (!stop_flag) {
		size_t n = (rand_r(&seed) % 4 == 0) ? 1 + rand_r(&seed) % 16 : 1;
		size_t off = 0;
		for (size_t i = 0; i < n; i++) {
			int len = snprintf(payload[i], sizeof(payload[i]),
			    "%d:%llu", id, (unsigned long long) (k + 1 + i));
			bufs[i].data = payload[i];
			bufs[i].len = (size_t) len;
		}
		chan_status st = (n == 1)
		    ? chan_send(c, CHANNEL, bufs[0].data, bufs[0].len, -1)
		    : chan_send_batch(c, CHANNEL, bufs, n, -1, NULL);
		if (st != CHAN_OK) {
			_exit(4); /* a send that waits forever only ends OK */
		}
		for (size_t i = 0; i < n; i++) {
			off += (size_t) snprintf(rec + off, sizeof(rec) - off,
			    "%llu\n", (unsigned long long) (k + 1 + i));
		}
		write_all(fd, rec, off); /* one record for the whole batch */
		k += n;
	}
	chan_disconnect(c);
	_exit(0);
}

/* ---- consumer ----------------------------------------------------------- */

static void
consumer_main(const opts *o, int gen, unsigned seed)
{
	chan_client *c;
	int          fd = open_log(o, 'c', gen);
	chan_msg    *msgs[8];
	char         rec[8 * 48 + 4];

	install_term();
	if (fd < 0 || (c = connect_retry(o->url)) == NULL) {
		_exit(2);
	}
	while (!stop_flag) {
		size_t      max = 1 + rand_r(&seed) % 8, n = 0, off = 0;
		chan_status st = chan_recv_n(c, CHANNEL, max, msgs, &n, 200);

		if (st == CHAN_BUSY) {
			/* The killed consumer's detach may still be on its way. */
			sleep_ms(20);
			continue;
		}
		if (st != CHAN_OK && st != CHAN_TIMEOUT) {
			_exit(5);
		}
		/* The call returned: the confirmations it carried are done. */
		off += (size_t) snprintf(rec, sizeof(rec), "A\n");
		for (size_t i = 0; i < n; i++) {
			off += (size_t) snprintf(rec + off, sizeof(rec) - off,
			    "H %.*s %d\n", (int) chan_msg_len(msgs[i]),
			    (const char *) chan_msg_data(msgs[i]),
			    chan_msg_redelivered(msgs[i]) ? 1 : 0);
			chan_msg_free(msgs[i]);
		}
		write_all(fd, rec, off);
	}
	chan_disconnect(c); /* sends the last confirmation */
	write_all(fd, "A\n", 2);
	_exit(0);
}

/* ---- faults ------------------------------------------------------------- */

static void
raw_connect_close(const opts *o, unsigned *seed, bool garbage)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	size_t             len = strlen(o->sock);

	if (fd < 0 || len >= sizeof(sa.sun_path)) {
		if (fd >= 0) {
			close(fd);
		}
		return;
	}
	memcpy(sa.sun_path, o->sock, len + 1);
	if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0 && garbage) {
		unsigned char junk[256];
		size_t        n = 1 + rand_r(seed) % sizeof(junk);
		for (size_t i = 0; i < n; i++) {
			junk[i] = (unsigned char) rand_r(seed);
		}
		/* Half the time a valid SP header first, then garbage. */
		if (rand_r(seed) % 2 == 0) {
			static const unsigned char sp[8] = { 0, 'S', 'P', 0, 0,
				0x30, 0, 0 };
			(void) !write(fd, sp, sizeof(sp));
		}
		(void) !write(fd, junk, n);
	}
	close(fd);
}

static pid_t
spawn(void (*fn)(const opts *, int, unsigned), const opts *o, int n,
    unsigned seed)
{
	pid_t pid = fork();
	if (pid == 0) {
		fn(o, n, seed);
		_exit(0);
	}
	return (pid);
}

static pid_t
start_chand(const opts *o)
{
	pid_t pid = fork();
	if (pid == 0) {
		char log[400];
		snprintf(log, sizeof(log), "%s/chand.log", o->dir);
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			dup2(fd, 1);
		}
		execl(o->chand, o->chand, "--listen", o->url, "--workers", "2",
		    (char *) NULL);
		_exit(127);
	}
	return (pid);
}

static void
kill_wait(pid_t pid, int sig)
{
	if (pid > 0) {
		kill(pid, sig);
		waitpid(pid, NULL, 0);
	}
}

/* ---- the verdict -------------------------------------------------------- */

enum { SEEN = 1, CONFIRMED = 2, TENTATIVE = 4 };

typedef struct {
	uint8_t *st;   /* per message number k (1-based) */
	size_t   cap;
	uint64_t sent; /* recorded OK sends: 1..sent */
	uint64_t last; /* last confirmed k, for the order check */
} prod_state;

typedef struct {
	prod_state p[MAX_PRODUCERS];
	uint64_t   confirmed, duplicated, redelivered, unmarked, disorder;
	uint64_t   extra; /* received, but the producer died before logging */
} verdict;

static uint8_t *
msg_state(verdict *v, int id, uint64_t k)
{
	prod_state *p = &v->p[id];
	if (k >= p->cap) {
		size_t ncap = p->cap ? p->cap : 1024;
		while (ncap <= k) {
			ncap *= 2;
		}
		p->st = realloc(p->st, ncap);
		memset(p->st + p->cap, 0, ncap - p->cap);
		p->cap = ncap;
	}
	return (&p->st[k]);
}

static void
confirm(verdict *v, int id, uint64_t k)
{
	uint8_t *s = msg_state(v, id, k);
	if (*s & CONFIRMED) {
		v->duplicated++;
		fprintf(stderr, "duplicate: %d:%llu confirmed twice\n", id,
		    (unsigned long long) k);
		return;
	}
	*s = (uint8_t) ((*s | CONFIRMED) & ~TENTATIVE);
	v->confirmed++;
	if (k <= v->p[id].last) {
		v->disorder++;
		fprintf(stderr, "order: %d:%llu confirmed after %llu\n", id,
		    (unsigned long long) k, (unsigned long long) v->p[id].last);
	}
	v->p[id].last = k;
}

static void
read_producers(const opts *o, verdict *v, int nprod)
{
	char path[400], line[64];
	for (int id = 0; id < nprod; id++) {
		snprintf(path, sizeof(path), "%s/p%d.log", o->dir, id);
		FILE *f = fopen(path, "r");
		while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
			v->p[id].sent++;
		}
		if (f != NULL) {
			fclose(f);
		}
	}
}

static void
read_consumer(const opts *o, verdict *v, int gen)
{
	char     path[400], line[128];
	int      pend_id[64];
	uint64_t pend_k[64];
	int      npend = 0;

	snprintf(path, sizeof(path), "%s/c%d.log", o->dir, gen);
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		return;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		int                id, r;
		unsigned long long k;
		/*
		 * A SIGKILL can tear a write(2) to a file where it crosses a
		 * page (the kernel checks for fatal signals between pages):
		 * the last record may end early. Dropping it is sound: its
		 * messages were never confirmed (that takes the next call),
		 * so they come back, and a torn "A" only makes the held
		 * messages tentative.
		 */
		if (strchr(line, '\n') == NULL && feof(f)) {
			fprintf(stderr, "c%d.log: torn last record dropped: %s\n", gen, line);
			break;
		}
		if (line[0] == 'A') {
			for (int i = 0; i < npend; i++) {
				confirm(v, pend_id[i], pend_k[i]);
			}
			npend = 0;
			continue;
		}
		if (sscanf(line, "H %d:%llu %d", &id, &k, &r) != 3 || id < 0 ||
		    id >= MAX_PRODUCERS || npend == 64) {
			fprintf(stderr, "bad consumer record: %s", line);
			v->unmarked++;
			continue;
		}
		uint8_t *s = msg_state(v, id, k);
		if ((*s & SEEN) && !r) {
			v->unmarked++;
			fprintf(stderr, "%d:%llu handed out again unmarked\n",
			    id, k);
		}
		v->redelivered += (uint64_t) r;
		*s = (uint8_t) ((*s | SEEN) & ~TENTATIVE);
		pend_id[npend] = id;
		pend_k[npend++] = k;
	}
	/* Killed holding these: the daemon may or may not have had the
	 * confirmation. Seen again later: it had not (fine). Never seen
	 * again: it had. */
	for (int i = 0; i < npend; i++) {
		*msg_state(v, pend_id[i], pend_k[i]) |= TENTATIVE;
	}
	fclose(f);
}

static int
judge(const opts *o, int nprod, int ngen)
{
	static verdict v;
	uint64_t       sent = 0, lost = 0;

	read_producers(o, &v, nprod);
	for (int g = 0; g < ngen; g++) {
		read_consumer(o, &v, g);
	}
	for (int id = 0; id < nprod; id++) {
		prod_state *p = &v.p[id];
		sent += p->sent;
		for (uint64_t k = 1; k < p->cap || k <= p->sent; k++) {
			uint8_t s = (k < p->cap) ? p->st[k] : 0;
			if (k <= p->sent && !(s & SEEN)) {
				lost++;
				if (lost <= 10) {
					fprintf(stderr, "lost: %d:%llu\n", id,
					    (unsigned long long) k);
				}
			}
			if (s & TENTATIVE) {
				v.confirmed++;
			}
			if (k > p->sent && (s & SEEN)) {
				v.extra++;
			}
		}
		free(p->st);
	}
	printf("sent %llu, confirmed %llu, lost %llu, duplicated %llu, "
	       "redelivered %llu\n",
	    (unsigned long long) sent, (unsigned long long) (v.confirmed - v.extra),
	    (unsigned long long) lost, (unsigned long long) v.duplicated,
	    (unsigned long long) v.redelivered);
	printf("(also: %llu received whose producer died before logging the "
	       "send, %llu unmarked re-deliveries, %llu order violations)\n",
	    (unsigned long long) v.extra, (unsigned long long) v.unmarked,
	    (unsigned long long) v.disorder);
	return (lost == 0 && v.duplicated == 0 && v.unmarked == 0 &&
	           v.disorder == 0 && sent > 0
	        ? 0
	        : 1);
}

/* ---- orchestration ------------------------------------------------------ */

/*
 * nng refuses to run in a child forked after it started in the parent, so
 * the orchestrator never touches libchan itself: its few client calls run
 * in a short-lived child, and the answer is the child's exit status.
 */
static bool
in_child(bool (*fn)(const char *), const char *url)
{
	int   st;
	pid_t pid = fork();

	if (pid == 0) {
		_exit(fn(url) ? 0 : 1);
	}
	return (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	    WEXITSTATUS(st) == 0);
}

static bool
create_channel(const char *url)
{
	chan_client *c = connect_retry(url);
	bool         ok = c != NULL &&
	    chan_create(c, CHANNEL, CAPACITY) == CHAN_OK;

	if (c != NULL) {
		chan_disconnect(c);
	}
	return (ok);
}

/* Waits until the consumer has taken and confirmed everything: depth and
 * in-flight 0 three polls in a row. Gives up only when nothing moves for
 * 30 s, however large the backlog was. */
static bool
drained(const char *url)
{
	chan_client   *c = connect_retry(url);
	chan_stat_info si;
	uint64_t       last = UINT64_MAX;
	int            quiet = 0, still = 0;

	if (c == NULL) {
		return (false);
	}
	while (quiet < 3 && still < 300) {
		if (chan_stat(c, CHANNEL, &si) != CHAN_OK) {
			break;
		}
		uint64_t left = si.depth + si.in_flight;
		quiet = (left == 0) ? quiet + 1 : 0;
		still = (left < last || left == 0) ? 0 : still + 1;
		last = left;
		sleep_ms(100);
	}
	chan_disconnect(c);
	return (quiet >= 3);
}

static void
usage(void)
{
	fprintf(stderr, "usage: chan-torture [--duration S] [--seed N] "
	                "[--producers P] [--chand PATH] [--keep]\n"
	                "       [--faults kill-consumer,stop-consumer,"
	                "kill-producer,garbage,connect-close|none]\n");
	exit(64);
}

/* "kill-consumer,garbage" -> bits; "none" -> 0. */
static unsigned
parse_faults(const char *list)
{
	unsigned bits = 0;
	char     buf[256], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", list);
	for (char *t = strtok_r(buf, ",", &save); t != NULL;
	     t = strtok_r(NULL, ",", &save)) {
		size_t i = 0;
		while (i < NFAULTS && strcmp(t, fault_names[i]) != 0) {
			i++;
		}
		if (i < NFAULTS) {
			bits |= 1u << i;
		} else if (strcmp(t, "none") != 0) {
			fprintf(stderr, "unknown fault '%s'\n", t);
			usage();
		}
	}
	return (bits);
}

static void
parse(int argc, char **argv, opts *o)
{
	static const struct option lo[] = { { "duration", 1, NULL, 'd' },
		{ "seed", 1, NULL, 's' }, { "producers", 1, NULL, 'p' },
		{ "chand", 1, NULL, 'c' }, { "keep", 0, NULL, 'k' },
		{ "faults", 1, NULL, 'f' }, { "help", 0, NULL, 'h' },
		{ NULL, 0, NULL, 0 } };
	int ch;

	o->duration_s = 20;
	o->seed = (unsigned) time(NULL);
	o->producers = 3;
	o->faults = (1u << NFAULTS) - 1;
#ifdef CHAND_PATH
	o->chand = CHAND_PATH;
#endif
	while ((ch = getopt_long(argc, argv, "d:s:p:c:kh", lo, NULL)) != -1) {
		switch (ch) {
		case 'd': o->duration_s = atoi(optarg); break;
		case 's': o->seed = (unsigned) strtoul(optarg, NULL, 10); break;
		case 'p': o->producers = atoi(optarg); break;
		case 'c': o->chand = optarg; break;
		case 'k': o->keep = true; break;
		case 'f': o->faults = parse_faults(optarg); break;
		default: usage();
		}
	}
	if (o->duration_s < 1 || o->producers < 1 || o->producers > 64 ||
	    o->chand == NULL) {
		usage();
	}
}

int
main(int argc, char **argv)
{
	opts     o = { 0 };
	pid_t    prod[64], cons, chand;
	int      nprod = 0, ngen = 0, rc;
	unsigned seed;

	parse(argc, argv, &o);
	seed = o.seed;
	snprintf(o.dir, sizeof(o.dir), "/tmp/chan-torture.XXXXXX");
	if (mkdtemp(o.dir) == NULL) {
		perror("mkdtemp");
		return (1);
	}
	snprintf(o.sock, sizeof(o.sock), "%s/s.sock", o.dir);
	snprintf(o.url, sizeof(o.url), "ipc://%s", o.sock);
	signal(SIGPIPE, SIG_IGN);
	printf("chan-torture: seed %u, %d s, %d producers, logs in %s\n",
	    o.seed, o.duration_s, o.producers, o.dir);
	fflush(stdout);

	chand = start_chand(&o);
	if (!in_child(create_channel, o.url)) {
		fprintf(stderr, "chand did not come up (see %s/chand.log)\n", o.dir);
		kill_wait(chand, SIGKILL);
		return (1);
	}
	for (int i = 0; i < o.producers; i++) {
		prod[i] = spawn(producer_main, &o, nprod++, rand_r(&seed));
	}
	cons = spawn(consumer_main, &o, ngen++, rand_r(&seed));

	int64_t end = now_ms() + (int64_t) o.duration_s * 1000;
	while (now_ms() < end) {
		static const unsigned weight[NFAULTS] = { 25, 10, 20, 20, 25 };
		unsigned              r = rand_r(&seed) % 100, f = 0;
		while (f + 1 < NFAULTS && r >= weight[f]) {
			r -= weight[f++];
		}
		if (!(o.faults & (1u << f))) {
			/* not chosen on the command line: just wait */
		} else if (f == 0) {
			kill_wait(cons, SIGKILL);
			cons = spawn(consumer_main, &o, ngen++, rand_r(&seed));
		} else if (f == 1) {
			kill(cons, SIGSTOP);
			sleep_ms(300 + (int) (rand_r(&seed) % 500));
			kill(cons, SIGCONT);
		} else if (f == 2 && nprod < MAX_PRODUCERS) {
			int i = (int) (rand_r(&seed) % (unsigned) o.producers);
			kill_wait(prod[i], SIGKILL);
			prod[i] = spawn(producer_main, &o, nprod++, rand_r(&seed));
		} else if (f == 3) {
			raw_connect_close(&o, &seed, true);
		} else if (f == 4) {
			raw_connect_close(&o, &seed, false);
		}
		sleep_ms(50 + (int) (rand_r(&seed) % 200));
	}

	for (int i = 0; i < o.producers; i++) {
		kill_wait(prod[i], SIGTERM);
	}
	bool ok_drain = in_child(drained, o.url);
	kill_wait(cons, SIGTERM);
	kill(chand, SIGTERM);
	waitpid(chand, &rc, 0);
	if (!ok_drain) {
		fprintf(stderr, "the channel did not drain\n");
	}
	rc = judge(&o, nprod, ngen) || !ok_drain;
	printf("%s\n", rc == 0 ? "PASS" : "FAIL");
	if (rc == 0 && !o.keep) {
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", o.dir);
		(void) !system(cmd);
	}
	return (rc);
}
