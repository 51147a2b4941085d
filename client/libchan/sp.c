/* sp.c - SP over a socket of our own (sp.h says why and what). */
#include "sp.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"

#define SP_REQ 0x30
#define SP_REP 0x31
#define SP_MSG 0x01 /* ipc: an ordinary message */

static const char *const chan_sp_tcp_schemes[] = { "tcp://", "tcp4://", "tcp6://" };

static int
chan_sp_tcp_family(const char *url)
{
	if (strncmp(url, "tcp4://", 7) == 0) {
		return (AF_INET);
	}
	return (strncmp(url, "tcp6://", 7) == 0 ? AF_INET6 : AF_UNSPEC);
}

/* The part after "scheme://" of a tcp URL, or NULL. */
static const char *
chan_sp_tcp_rest(const char *url)
{
	for (size_t i = 0; i < sizeof(chan_sp_tcp_schemes) / sizeof(chan_sp_tcp_schemes[0]); i++) {
		size_t n = strlen(chan_sp_tcp_schemes[i]);

		if (strncmp(url, chan_sp_tcp_schemes[i], n) == 0) {
			return (url + n);
		}
	}
	return (NULL);
}

bool
chan_sp_speaks(const char *url)
{
	return (url != NULL && (strncmp(url, "ipc://", 6) == 0 || chan_sp_tcp_rest(url) != NULL));
}

bool
chan_sp_wanted(const char *url)
{
	const char *v = getenv("CHAN_SP_DIRECT");

	return (chan_sp_speaks(url) && (v == NULL || strcmp(v, "0") != 0));
}

chan_status
chan_sp_init(chan_sp *s, const char *url, size_t recvmax)
{
	memset(s, 0, sizeof(*s));
	s->fd = -1;
	pthread_mutex_init(&s->mtx, NULL);
	if (!chan_sp_speaks(url)) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "%s: not an ipc:// or tcp:// URL", url));
	}
	if ((s->url = strdup(url)) == NULL) {
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
	}
	s->tcp = chan_sp_tcp_rest(url) != NULL;
	s->recvmax = recvmax;
	return (CHAN_OK);
}

bool
chan_sp_up(chan_sp *s, uint64_t *gen)
{
	bool up;

	pthread_mutex_lock(&s->mtx);
	up = s->fd >= 0;
	if (gen != NULL) {
		*gen = s->gen;
	}
	pthread_mutex_unlock(&s->mtx);
	return (up);
}

void
chan_sp_close(chan_sp *s)
{
	pthread_mutex_lock(&s->mtx);
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	pthread_mutex_unlock(&s->mtx);
}

void
chan_sp_fini(chan_sp *s)
{
	chan_sp_close(s);
	free(s->url);
	s->url = NULL;
	pthread_mutex_destroy(&s->mtx);
}

/*
 * Waits for fd to be ready for events until deadline_ms (chl_now_mono_ms;
 * < 0: none), not once wakefd (>= 0) is readable: 1 ready, 0 the
 * deadline passed, -1 woken.
 */
static int
chan_sp_wait(int fd, short events, int64_t deadline_ms, int wakefd)
{
	struct pollfd pf[2] = { { .fd = fd, .events = events }, { .fd = wakefd, .events = POLLIN } };
	int64_t       left;
	int           n;

	for (;;) {
		left = deadline_ms < 0 ? -1 : deadline_ms - chl_now_mono_ms();
		n = poll(pf, wakefd >= 0 ? 2 : 1,
		    left < 0 ? (deadline_ms < 0 ? -1 : 0) : left > INT32_MAX ? INT32_MAX : (int) left);
		if (n < 0 && errno == EINTR) {
			continue; /* a signal: the wait goes on, to the same deadline */
		}
		if (n < 0) {
			return (1); /* the read or write that follows reports the error */
		}
		if (n > 0 && wakefd >= 0 && (pf[1].revents & POLLIN) != 0) {
			return (-1);
		}
		return (n > 0 ? 1 : 0);
	}
}

/*
 * Reads exactly len bytes: 1, or 0 (EOF, error, or nothing more came by
 * deadline_ms, < 0: none), or -1 (wakefd became readable). Each recv is
 * tried first and polled for only when the socket has nothing (one
 * syscall per chunk while the data flows).
 */
static int
chan_sp_read_all(int fd, void *buf, size_t len, int64_t deadline_ms, int wakefd)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = recv(fd, p, len, MSG_DONTWAIT);

		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int w = chan_sp_wait(fd, POLLIN, deadline_ms, wakefd);

			if (w <= 0) {
				return (w);
			}
			continue;
		}
		if (n <= 0) {
			return (0);
		}
		p += n;
		len -= (size_t) n;
	}
	return (1);
}

/*
 * Writes the iovecs whole (no SIGPIPE), waiting for room until
 * deadline_ms (< 0: none), not once wakefd (>= 0) is readable: 1, or 0
 * (the connection failed), or -1 (stopped by the deadline or a wake-up;
 * *began says whether part of it went).
 */
static int
chan_sp_write_all(int fd, struct iovec *iov, int niov, int64_t deadline_ms, int wakefd,
    bool *began)
{
	struct msghdr mh;

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = (size_t) niov;
	*began = false;
	while (mh.msg_iovlen > 0) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (chan_sp_wait(fd, POLLOUT, deadline_ms, wakefd) <= 0) {
				return (-1);
			}
			continue;
		}
		if (n < 0) {
			return (0);
		}
		*began = true;
		while (mh.msg_iovlen > 0 && (size_t) n >= mh.msg_iov[0].iov_len) {
			n -= (ssize_t) mh.msg_iov[0].iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen > 0) {
			mh.msg_iov[0].iov_base = (uint8_t *) mh.msg_iov[0].iov_base + n;
			mh.msg_iov[0].iov_len -= (size_t) n;
		}
	}
	return (1);
}

static void
chan_sp_put_be(uint8_t *p, uint64_t v, int bytes)
{
	for (int i = bytes - 1; i >= 0; i--, v >>= 8) {
		p[i] = (uint8_t) v;
	}
}

static uint64_t
chan_sp_get_be(const uint8_t *p, int bytes)
{
	uint64_t v = 0;

	for (int i = 0; i < bytes; i++) {
		v = v << 8 | p[i];
	}
	return (v);
}

/* *fd: a connected unix socket for an ipc:// URL. */
static chan_status
chan_sp_connect_ipc(const char *url, int *out)
{
	struct sockaddr_un sa;
	const char        *path = url + 6;
	int                fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "%s: path too long for a unix socket", url));
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "%s: socket: %s", url, strerror(errno)));
	}
	if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
		int err = errno;

		close(fd);
		return (chan_fail(CHAN_UNAVAILABLE, "cannot connect to %s: %s%s", url, strerror(err),
		    err == ENOENT || err == ECONNREFUSED ? " (is chand running?)" : ""));
	}
	*out = fd;
	return (CHAN_OK);
}

/* Splits "host:port" / "[v6]:port" into host and port; false: malformed. */
static bool
chan_sp_host_port(const char *rest, char *host, size_t hostlen, const char **port)
{
	const char *colon;
	size_t      n;

	if (rest[0] == '[') {
		const char *end = strchr(rest, ']');

		if (end == NULL || end[1] != ':') {
			return (false);
		}
		n = (size_t) (end - rest - 1);
		rest++;
		colon = end + 1;
	} else {
		if ((colon = strrchr(rest, ':')) == NULL) {
			return (false);
		}
		n = (size_t) (colon - rest);
	}
	if (n == 0 || n >= hostlen || colon[1] == '\0') {
		return (false);
	}
	memcpy(host, rest, n);
	host[n] = '\0';
	*port = colon + 1;
	return (true);
}

/* Connects fd to ai by deadline_ms (not once wakefd is readable). */
static bool
chan_sp_connect_within(int fd, const struct addrinfo *ai, int64_t deadline_ms, int wakefd)
{
	int       err = 0;
	socklen_t el = sizeof(err);

	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
		return (true);
	}
	if (errno != EINPROGRESS || chan_sp_wait(fd, POLLOUT, deadline_ms, wakefd) != 1 ||
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
		errno = err != 0 ? err : errno == EINPROGRESS ? ETIMEDOUT : errno;
		return (false);
	}
	return (true);
}

/* *fd: a connected TCP socket (blocking, TCP_NODELAY as nng sets it). */
static chan_status
chan_sp_connect_tcp(const char *url, int64_t deadline_ms, int wakefd, int *out)
{
	struct addrinfo  hints, *res = NULL, *ai;
	char             host[256];
	const char      *port;
	int              fd = -1, rv, one = 1, err = ECONNREFUSED;

	if (!chan_sp_host_port(chan_sp_tcp_rest(url), host, sizeof(host), &port)) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "%s: expected tcp://HOST:PORT", url));
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = chan_sp_tcp_family(url);
	hints.ai_socktype = SOCK_STREAM;
	if ((rv = getaddrinfo(host, port, &hints, &res)) != 0) {
		return (chan_fail(CHAN_UNAVAILABLE, "cannot resolve %s: %s", url, gai_strerror(rv)));
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0) {
			err = errno;
			continue;
		}
		if (chan_sp_connect_within(fd, ai, deadline_ms, wakefd)) {
			break;
		}
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		return (chan_fail(CHAN_UNAVAILABLE, "cannot connect to %s: %s%s", url, strerror(err),
		    err == ENOENT || err == ECONNREFUSED ? " (is chand running?)" : ""));
	}
	/* Back to blocking: every wait that needs a bound polls first. */
	(void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*out = fd;
	return (CHAN_OK);
}

chan_status
chan_sp_dial(chan_sp *s, int64_t timeout_ms, int wakefd)
{
	uint8_t      hello[8] = { 0, 'S', 'P', 0, 0, SP_REQ, 0, 0 }, peer[8];
	struct iovec iov = { hello, sizeof(hello) };
	int64_t      deadline = chl_now_mono_ms() + timeout_ms;
	chan_status  st;
	int          fd = -1;
	bool         began;

	chan_sp_close(s);
	st = s->tcp ? chan_sp_connect_tcp(s->url, deadline, wakefd, &fd)
	            : chan_sp_connect_ipc(s->url, &fd);
	if (st != CHAN_OK) {
		return (st);
	}
	/* The whole handshake by the deadline: a peer that sends half of it cannot hold us. */
	if (chan_sp_write_all(fd, &iov, 1, deadline, wakefd, &began) != 1 ||
	    chan_sp_read_all(fd, peer, sizeof(peer), deadline, wakefd) != 1) {
		close(fd);
		return (chan_fail(CHAN_UNAVAILABLE, "%s: no SP handshake from the daemon", s->url));
	}
	if (memcmp(peer, hello, 4) != 0 || chan_sp_get_be(peer + 4, 2) != SP_REP) {
		close(fd);
		return (chan_fail(CHAN_PROTOCOL, "%s: the peer is not chand (not an SP REP socket)",
		    s->url));
	}
	pthread_mutex_lock(&s->mtx);
	s->fd = fd;
	s->gen++;
	pthread_mutex_unlock(&s->mtx);
	return (CHAN_OK);
}

chan_sp_put_result
chan_sp_putv(chan_sp *s, uint32_t rid, const struct iovec *parts, int nparts,
    int64_t deadline_ms, int wakefd)
{
	uint8_t            head[13];
	size_t             hl = s->tcp ? 8 : 9, len = 0;
	struct iovec       iov[1 + CHAN_SP_PARTS];
	int                n = 1, w;
	chan_sp_put_result r = CHAN_SP_NOCONN;
	bool               began;

	for (int i = 0; i < nparts && i < CHAN_SP_PARTS; i++) {
		len += parts[i].iov_len;
		if (parts[i].iov_len > 0) {
			iov[n++] = parts[i];
		}
	}
	head[0] = SP_MSG;
	chan_sp_put_be(head + hl - 8, len + 4, 8);
	chan_sp_put_be(head + hl, rid | 0x80000000u, 4);
	iov[0] = (struct iovec) { head, hl + 4 };
	pthread_mutex_lock(&s->mtx);
	if (s->fd >= 0) {
		w = chan_sp_write_all(s->fd, iov, n, deadline_ms, wakefd, &began);
		r = w == 1 ? CHAN_SP_SENT : w < 0 && !began ? CHAN_SP_UNSENT : CHAN_SP_BROKEN;
		if (r == CHAN_SP_BROKEN) {
			/*
			 * Not close: another thread may be blocked reading
			 * it (and the number could be reused under it).
			 * Shut down, it reads the end and closes.
			 */
			(void) shutdown(s->fd, SHUT_RDWR);
		}
	}
	pthread_mutex_unlock(&s->mtx);
	return (r);
}

chan_sp_put_result
chan_sp_put(chan_sp *s, uint32_t rid, const void *body, size_t len, int64_t deadline_ms,
    int wakefd)
{
	struct iovec part = { (void *) body, len };

	return (chan_sp_putv(s, rid, &part, 1, deadline_ms, wakefd));
}

chan_status
chan_sp_sendv(chan_sp *s, uint32_t rid, const struct iovec *parts, int nparts)
{
	chan_sp_put_result r = chan_sp_putv(s, rid, parts, nparts, -1, -1);

	if (r == CHAN_SP_NOCONN) {
		return (chan_fail(CHAN_UNAVAILABLE, "not connected to %s", s->url));
	}
	if (r != CHAN_SP_SENT) {
		chan_sp_close(s);
		return (chan_fail(CHAN_UNAVAILABLE, "lost the connection to %s", s->url));
	}
	return (CHAN_OK);
}

chan_status
chan_sp_send(chan_sp *s, uint32_t rid, const void *body, size_t len)
{
	struct iovec part = { (void *) body, len };

	return (chan_sp_sendv(s, rid, &part, 1));
}

void
chan_sp_send_aside(chan_sp *s, uint32_t rid, const void *body, size_t len)
{
	(void) chan_sp_put(s, rid, body, len, -1, -1);
}

void
chan_sp_cancel_aside(chan_sp *s, uint64_t client, uint64_t rid, uint64_t id)
{
	Chan__V1__Request q = CHAN__V1__REQUEST__INIT;
	Chan__V1__Cancel  cx = CHAN__V1__CANCEL__INIT;
	uint8_t           buf[64];

	cx.n_ids = 1;
	cx.ids = &id;
	q.has_id = q.has_client = 1;
	q.id = rid;
	q.client = client;
	q.op_case = CHAN__V1__REQUEST__OP_CANCEL;
	q.cancel = &cx;
	if (chan__v1__request__get_packed_size(&q) <= sizeof(buf)) { /* always: three varints */
		chan_sp_send_aside(s, (uint32_t) (rid & 0x7fffffffu), buf,
		    chan__v1__request__pack(&q, buf));
	}
}

/* A frame read in part (w: chan_sp_read_all's result): the stream is torn, it closes. */
static chan_status
chan_sp_torn(chan_sp *s, int w)
{
	chan_sp_close(s);
	return (w < 0 ? chan_fail(CHAN_UNAVAILABLE, "cancelled")
	              : chan_fail(CHAN_UNAVAILABLE, "lost the connection to %s", s->url));
}

chan_status
chan_sp_recv(chan_sp *s, uint32_t *rid, void **body, size_t *len, int64_t deadline_ms, int wakefd)
{
	uint8_t  head[13];
	size_t   hl = s->tcp ? 8 : 9;
	uint64_t n;
	uint8_t *b = NULL;
	int      w;

	*body = NULL;
	*len = 0;
	if (s->fd < 0) {
		return (chan_fail(CHAN_UNAVAILABLE, "not connected to %s", s->url));
	}
	if ((w = chan_sp_wait(s->fd, POLLIN, deadline_ms, wakefd)) <= 0) {
		return (w < 0 ? chan_fail(CHAN_UNAVAILABLE, "cancelled")
		              : chan_fail(CHAN_TIMEOUT, "no answer from %s in time", s->url));
	}
	/*
	 * Once a frame has begun, the rest is waited for without a bound (as
	 * nng does) but not past a wake-up: a peer stalled mid-frame cannot
	 * hold a cancelled call. Either way the stream is torn: it closes.
	 */
	if ((w = chan_sp_read_all(s->fd, head, hl + 4, -1, wakefd)) != 1) {
		return (chan_sp_torn(s, w));
	}
	n = chan_sp_get_be(head + hl - 8, 8);
	if ((!s->tcp && head[0] != SP_MSG) || n < 4 || (s->recvmax != 0 && n - 4 > s->recvmax) ||
	    (head[hl] & 0x80) == 0) {
		chan_sp_close(s);
		return (chan_fail(CHAN_PROTOCOL, "malformed answer (%llu bytes) from %s",
		    (unsigned long long) n, s->url));
	}
	n -= 4;
	if (n > 0 && (b = malloc((size_t) n)) == NULL) {
		chan_sp_close(s);
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory for an answer"));
	}
	if (n > 0 && (w = chan_sp_read_all(s->fd, b, (size_t) n, -1, wakefd)) != 1) {
		free(b);
		return (chan_sp_torn(s, w));
	}
	*rid = (uint32_t) chan_sp_get_be(head + hl, 4) & 0x7fffffffu;
	*body = b;
	*len = (size_t) n;
	return (CHAN_OK);
}

bool
chan_sp_pause(int wakefd, int64_t ms)
{
	struct pollfd pf = { .fd = wakefd, .events = POLLIN };

	return (poll(&pf, 1, (int) ms) > 0 && (pf.revents & POLLIN) != 0);
}

chan_status
chan_sp_wake_open(int wake[2])
{
	if (pipe(wake) != 0) {
		wake[0] = wake[1] = -1;
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "no pipe for a wake-up: %s",
		    strerror(errno)));
	}
	for (int i = 0; i < 2; i++) {
		(void) fcntl(wake[i], F_SETFD, FD_CLOEXEC);
		(void) fcntl(wake[i], F_SETFL, O_NONBLOCK);
	}
	return (CHAN_OK);
}

void
chan_sp_wake_close(int wake[2])
{
	for (int i = 0; i < 2; i++) {
		if (wake[i] >= 0) {
			close(wake[i]);
			wake[i] = -1;
		}
	}
}
