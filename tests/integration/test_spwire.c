/*
 * test_spwire.c - nng's SP wire protocol spoken to a real chand from plain
 * sockets (no nng, no libchan on the client side).
 *
 * chand serves ipc:// and tcp:// either through nng's REP socket
 * (--no-sp-direct) or with its own listener; a client cannot tell which,
 * so every case here must hold for both (integration.spwire and
 * integration.spwire_nngd). What the wire looks like (client/libchan/sp.h):
 *   handshake  0x00 'S' 'P' 0x00, protocol (BE16: REQ 0x30, REP 0x31), 0 0
 *   ipc frame  0x01, length (BE64), body
 *   tcp frame  length (BE64), body
 *   body       backtrace words (BE32), the last one with its top bit set
 *              (the request id), then the protobuf chan.v1.Request
 * test_badinput.c already covers garbage, random bytes, bogus handshakes,
 * a huge ipc frame, a short frame, silent peers and churn; these are the
 * framing cases a hand-written server can get wrong: partial reads, many
 * frames in one read, backtraces, protocol checks, a reader that stops
 * reading. After each case a fresh plain-socket client must get a Ping
 * answered (and nng's client too), and chand must exit 0 on SIGTERM.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"

#define ST(x)        CHAN__V1__STATUS__##x
#define SP_PROTO_REQ 0x30
#define SP_PROTO_REP 0x31
#define SP_PROTO_PUB 0x20
#define SP_END       0x80000000u /* top bit: the request id ends the backtrace */

/* One plain connection to chand: unix (ipc framing) or tcp. */
typedef struct sp_conn {
	int  fd;
	bool tcp;
} sp_conn;

static uint64_t test_client = 0x5eed0000deadbe01ULL;
static uint64_t test_id = 1;

/* ---- sockets ------------------------------------------------------------- */

static sp_conn
conn_unix(const char *path)
{
	struct sockaddr_un sa;
	sp_conn            c = { .fd = -1, .tcp = false };

	c.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_msg(c.fd >= 0, "socket: %s", strerror(errno));
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	ck_assert_msg(connect(c.fd, (struct sockaddr *) &sa, sizeof(sa)) == 0,
	    "connect %s: %s", path, strerror(errno));
	return (c);
}

static sp_conn
conn_tcp(int port)
{
	struct sockaddr_in sa;
	sp_conn            c = { .fd = -1, .tcp = true };

	c.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_msg(c.fd >= 0, "socket: %s", strerror(errno));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t) port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_msg(connect(c.fd, (struct sockaddr *) &sa, sizeof(sa)) == 0,
	    "connect 127.0.0.1:%d: %s", port, strerror(errno));
	return (c);
}

/* Writes all of b; false when the daemon hung up (EPIPE, ECONNRESET). */
static bool
write_all(int fd, const void *b, size_t n)
{
	const uint8_t *p = b;

	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR) {
			continue;
		}
		if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
			return (false);
		}
		ck_assert_msg(w > 0, "send: %s", strerror(errno));
		p += w;
		n -= (size_t) w;
	}
	return (true);
}

#define RD_OK      1
#define RD_EOF     0  /* the daemon closed (or reset) the connection */
#define RD_TIMEOUT (-1)

/* Reads exactly n bytes before the deadline (chh_now_ms) or says why not. */
static int
read_full(int fd, void *b, size_t n, int64_t deadline)
{
	uint8_t *p = b;

	while (n > 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int64_t       left = deadline - chh_now_ms();
		ssize_t       r;

		if (left <= 0) {
			return (RD_TIMEOUT);
		}
		if (poll(&pfd, 1, (int) left) == 0) {
			return (RD_TIMEOUT);
		}
		r = recv(fd, p, n, 0);
		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r == 0 || (r < 0 && errno == ECONNRESET)) {
			return (RD_EOF);
		}
		ck_assert_msg(r > 0, "recv: %s", strerror(errno));
		p += r;
		n -= (size_t) r;
	}
	return (RD_OK);
}

/*
 * Reads and throws away whatever comes until the daemon closes the
 * connection; true if it did before the deadline. *got: bytes seen.
 */
static bool
drained_to_eof(int fd, int64_t deadline, size_t *got)
{
	uint8_t buf[4096];

	*got = 0;
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int64_t       left = deadline - chh_now_ms();
		ssize_t       r;

		if (left <= 0 || poll(&pfd, 1, (int) left) == 0) {
			return (false);
		}
		r = recv(fd, buf, sizeof(buf), 0);
		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r == 0 || (r < 0 && errno == ECONNRESET)) {
			return (true);
		}
		ck_assert_msg(r > 0, "recv: %s", strerror(errno));
		*got += (size_t) r;
	}
}

/* ---- SP framing ------------------------------------------------------------ */

static void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t) (v >> 24);
	p[1] = (uint8_t) (v >> 16);
	p[2] = (uint8_t) (v >> 8);
	p[3] = (uint8_t) v;
}

static uint32_t
get_be32(const uint8_t *p)
{
	return ((uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 |
	    (uint32_t) p[2] << 8 | (uint32_t) p[3]);
}

static void
put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t) v;
		v >>= 8;
	}
}

static uint64_t
get_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++) {
		v = v << 8 | p[i];
	}
	return (v);
}

static void
handshake_bytes(uint8_t h[8], uint16_t proto)
{
	h[0] = 0;
	h[1] = 'S';
	h[2] = 'P';
	h[3] = 0;
	h[4] = (uint8_t) (proto >> 8);
	h[5] = (uint8_t) proto;
	h[6] = 0;
	h[7] = 0;
}

/* Our REQ handshake out, the daemon's in: it must be REP's. */
static void
handshake(sp_conn *c)
{
	uint8_t out[8], in[8], want[8];
	int     rd;

	handshake_bytes(out, SP_PROTO_REQ);
	handshake_bytes(want, SP_PROTO_REP);
	ck_assert_msg(write_all(c->fd, out, 8), "the daemon hung up on our "
	    "handshake");
	rd = read_full(c->fd, in, 8, chh_now_ms() + chh_scaled_ms(5000));
	ck_assert_msg(rd == RD_OK, "no handshake from the daemon (%s)",
	    rd == RD_EOF ? "connection closed" : "timed out");
	ck_assert_msg(memcmp(in, want, 8) == 0, "daemon's handshake %02x %02x "
	    "%02x %02x %02x %02x %02x %02x, expected REP's", in[0], in[1], in[2],
	    in[3], in[4], in[5], in[6], in[7]);
}

/* A packed Ping with a fresh Request.id (*id, may be NULL). Caller frees. */
static uint8_t *
pack_ping(size_t *len, uint64_t *id)
{
	Chan__V1__Request req = CHAN__V1__REQUEST__INIT;
	Chan__V1__Ping    ping = CHAN__V1__PING__INIT;
	uint8_t          *buf;

	req.has_client = 1;
	req.client = test_client;
	req.has_id = 1;
	req.id = test_id++;
	if (id != NULL) {
		*id = req.id;
	}
	req.op_case = CHAN__V1__REQUEST__OP_PING;
	req.ping = &ping;
	*len = chan__v1__request__get_packed_size(&req);
	buf = malloc(*len > 0 ? *len : 1);
	ck_assert_ptr_nonnull(buf);
	chan__v1__request__pack(&req, buf);
	return (buf);
}

/* A growable byte buffer for frames. */
typedef struct bytes {
	uint8_t *b;
	size_t   len, cap;
} bytes;

static void
bytes_put(bytes *o, const void *p, size_t n)
{
	if (o->len + n > o->cap) {
		size_t cap = o->cap > 0 ? o->cap : 256;

		while (cap < o->len + n) {
			cap *= 2;
		}
		o->b = realloc(o->b, cap);
		ck_assert_ptr_nonnull(o->b);
		o->cap = cap;
	}
	memcpy(o->b + o->len, p, n);
	o->len += n;
}

/* The frame header for a body of blen bytes (ipc: type byte 0x01). */
static void
frame_head(bytes *o, bool tcp, uint64_t blen)
{
	uint8_t h[9];

	h[0] = 1;
	put_be64(h + 1, blen);
	bytes_put(o, tcp ? h + 1 : h, tcp ? 8 : 9);
}

/* One frame: the backtrace words hdr[0..nhdr), then body. */
static void
frame(bytes *o, bool tcp, const uint32_t *hdr, size_t nhdr, const void *body,
    size_t blen)
{
	frame_head(o, tcp, 4 * nhdr + blen);
	for (size_t i = 0; i < nhdr; i++) {
		uint8_t w[4];

		put_be32(w, hdr[i]);
		bytes_put(o, w, 4);
	}
	bytes_put(o, body, blen);
}

/*
 * A Ping request frame with request id rid (the top bit set here);
 * returns its Request.id (what the Response's id must say).
 */
static uint64_t
frame_ping(bytes *o, bool tcp, uint32_t rid)
{
	uint32_t hdr = rid | SP_END;
	size_t   plen;
	uint64_t id;
	uint8_t *ping = pack_ping(&plen, &id);

	frame(o, tcp, &hdr, 1, ping, plen);
	free(ping);
	return (id);
}

/* An answer: its backtrace words and the decoded Response. */
typedef struct answer {
	uint32_t            hdr[16];
	size_t              nhdr;
	Chan__V1__Response *resp; /* NULL when the rest did not decode */
} answer;

/*
 * Reads one answer frame: RD_OK with *a filled (free a->resp), RD_EOF or
 * RD_TIMEOUT. A malformed frame from the daemon fails the test.
 */
static int
read_answer(sp_conn *c, answer *a, int64_t deadline)
{
	uint8_t  h[9], *body;
	uint64_t blen;
	size_t   off = 0;
	int      rd;

	memset(a, 0, sizeof(*a));
	if ((rd = read_full(c->fd, h, c->tcp ? 8 : 9, deadline)) != RD_OK) {
		return (rd);
	}
	if (!c->tcp) {
		ck_assert_msg(h[0] == 1, "ipc frame type %u from the daemon, "
		    "expected 1", h[0]);
	}
	blen = get_be64(c->tcp ? h : h + 1);
	ck_assert_msg(blen >= 4 && blen < 64u * 1024 * 1024, "answer frame of "
	    "%llu bytes", (unsigned long long) blen);
	body = malloc(blen);
	ck_assert_ptr_nonnull(body);
	if ((rd = read_full(c->fd, body, blen, deadline)) != RD_OK) {
		free(body);
		return (rd);
	}
	/* The backtrace: words up to and including the one with the top bit. */
	for (;;) {
		ck_assert_msg(off + 4 <= blen, "answer's backtrace never ends "
		    "(%llu bytes)", (unsigned long long) blen);
		ck_assert_msg(a->nhdr < 16, "answer's backtrace over 16 words");
		a->hdr[a->nhdr] = get_be32(body + off);
		off += 4;
		if (a->hdr[a->nhdr++] & SP_END) {
			break;
		}
	}
	a->resp = chan__v1__response__unpack(NULL, blen - off, body + off);
	free(body);
	return (RD_OK);
}

static void
answer_free(answer *a)
{
	if (a->resp != NULL) {
		chan__v1__response__free_unpacked(a->resp, NULL);
		a->resp = NULL;
	}
}

/*
 * The answer must be an OK answer to request id rid, alone in its
 * backtrace, and answer Request.id id (the body belongs to that request).
 */
static void
expect_ping_answer(answer *a, uint32_t rid, uint64_t id, const char *what)
{
	ck_assert_msg(a->nhdr == 1 && a->hdr[0] == (rid | SP_END), "%s: answer "
	    "to request id 0x%08x (%zu words), expected 0x%08x", what, a->hdr[0],
	    a->nhdr, rid | SP_END);
	ck_assert_msg(a->resp != NULL, "%s: the answer does not decode", what);
	ck_assert_msg(a->resp->status == ST(OK), "%s: Ping answered %d '%s'",
	    what, (int) a->resp->status, a->resp->error ? a->resp->error : "");
	ck_assert_msg(a->resp->has_id && a->resp->id == id, "%s: the answer "
	    "under request id 0x%08x says Request.id %llu, expected %llu", what,
	    rid | SP_END, (unsigned long long) a->resp->id,
	    (unsigned long long) id);
}

/* Sends one Ping as rid and waits (timeout_ms) for its answer. */
static void
ping_on(sp_conn *c, uint32_t rid, int timeout_ms, const char *what)
{
	bytes    o = { 0 };
	answer   a;
	int      rd;
	uint64_t id = frame_ping(&o, c->tcp, rid);

	ck_assert_msg(write_all(c->fd, o.b, o.len), "%s: the daemon hung up",
	    what);
	free(o.b);
	rd = read_answer(c, &a, chh_now_ms() + timeout_ms);
	ck_assert_msg(rd == RD_OK, "%s: no answer to a Ping (%s)", what,
	    rd == RD_EOF ? "connection closed" : "timed out");
	expect_ping_answer(&a, rid, id, what);
	answer_free(&a);
}

/*
 * The assertion after every case: a fresh plain-socket client (on the
 * ipc socket, or on tcp port when > 0) gets its Ping answered, and so
 * does nng's client (chh_assert_alive).
 */
static void
assert_alive_raw(chh_daemon *d, int port)
{
	sp_conn c = port > 0 ? conn_tcp(port) : conn_unix(d->sock);

	handshake(&c);
	ping_on(&c, 0x1234567, chh_scaled_ms(5000), "a fresh raw client");
	close(c.fd);
	chh_assert_alive(d);
}

/* The daemon must close c before long, having answered nothing but its
 * handshake (at most 8 bytes). */
static void
expect_dropped(sp_conn *c, chh_daemon *d, const char *what)
{
	size_t got;
	bool   eof = drained_to_eof(c->fd, chh_now_ms() + chh_scaled_ms(5000),
	    &got);

	if (!eof || got > 8) {
		chh_dump_log(d);
	}
	ck_assert_msg(eof, "%s: the daemon kept the connection open", what);
	ck_assert_msg(got <= 8, "%s: the daemon sent %zu bytes (an answer?) "
	    "before closing", what, got);
}

/* ---- the cases --------------------------------------------------------------- */

/* (a) The handshake and a request, one byte per write. */
START_TEST(one_byte_at_a_time)
{
	chh_daemon d;
	sp_conn    c;
	bytes      o = { 0 };
	uint8_t    hs[8], in[8];
	answer     a;
	uint64_t   id;

	chh_start(&d, NULL);
	c = conn_unix(d.sock);
	handshake_bytes(hs, SP_PROTO_REQ);
	bytes_put(&o, hs, 8);
	id = frame_ping(&o, false, 0x2a);
	for (size_t i = 0; i < o.len; i++) {
		ck_assert_msg(write_all(c.fd, o.b + i, 1), "the daemon hung up "
		    "after %zu bytes", i);
		usleep(2000);
	}
	free(o.b);
	ck_assert_int_eq(read_full(c.fd, in, 8, chh_now_ms() +
	    chh_scaled_ms(5000)), RD_OK);
	ck_assert_int_eq(in[5], SP_PROTO_REP);
	ck_assert_int_eq(read_answer(&c, &a, chh_now_ms() + chh_scaled_ms(5000)),
	    RD_OK);
	expect_ping_answer(&a, 0x2a, id, "a dribbled request");
	answer_free(&a);
	/* The connection goes on working. */
	ping_on(&c, 0x2b, chh_scaled_ms(5000), "after a dribbled request");
	close(c.fd);
	assert_alive_raw(&d, 0);
	chh_stop(&d);
}
END_TEST

/* (b) 50 requests in one write: 50 answers, each id exactly once. */
START_TEST(fifty_in_one_write)
{
	enum { N = 50, BASE = 0x1000 };
	chh_daemon d;
	sp_conn    c;
	bytes      o = { 0 };
	bool       seen[N] = { false };
	uint64_t   ids[N];
	int64_t    deadline;
	uint8_t    extra;

	chh_start(&d, NULL);
	c = conn_unix(d.sock);
	handshake(&c);
	for (int i = 0; i < N; i++) {
		ids[i] = frame_ping(&o, false, BASE + (uint32_t) i);
	}
	ck_assert_int_eq(send(c.fd, o.b, o.len, MSG_NOSIGNAL), (ssize_t) o.len);
	free(o.b);
	deadline = chh_now_ms() + chh_scaled_ms(10000);
	for (int n = 0; n < N; n++) {
		answer   a;
		uint32_t rid;
		int      rd = read_answer(&c, &a, deadline);

		ck_assert_msg(rd == RD_OK, "%d answers of %d, then %s", n, N,
		    rd == RD_EOF ? "the connection closed" : "nothing");
		ck_assert_msg(a.nhdr == 1, "answer %d: %zu backtrace words", n,
		    a.nhdr);
		rid = a.hdr[0] & ~SP_END;
		ck_assert_msg(rid >= BASE && rid < BASE + N, "answer %d to id "
		    "0x%x, never sent", n, rid);
		ck_assert_msg(!seen[rid - BASE], "id 0x%x answered twice", rid);
		seen[rid - BASE] = true;
		expect_ping_answer(&a, rid, ids[rid - BASE],
		    "one of 50 in one write");
		answer_free(&a);
	}
	/* And nothing more. */
	ck_assert_int_eq(read_full(c.fd, &extra, 1, chh_now_ms() + 200),
	    RD_TIMEOUT);
	ping_on(&c, 0x77, chh_scaled_ms(5000), "after 50 in one write");
	close(c.fd);
	assert_alive_raw(&d, 0);
	chh_stop(&d);
}
END_TEST

/*
 * (c) Bodies whose backtrace never ends (no word with the top bit): no
 * answer for them. The daemon may drop the connection or ignore the frame;
 * a valid request after it then gets its answer (and nothing else comes).
 */
START_TEST(backtrace_never_ends)
{
	static const uint8_t three[] = { 0x80, 0, 0 };
	static const uint8_t zero4[] = { 0, 0, 0, 0 };
	static const uint8_t hops[] = { 0, 0, 0, 1, 0, 0, 0, 2, 0xab, 0xcd };
	static const struct {
		const uint8_t *b;
		size_t         len;
		const char    *what;
	} cases[] = {
		{ three, sizeof(three), "a 3-byte body" },
		{ zero4, sizeof(zero4), "4 zero bytes" },
		{ hops, sizeof(hops), "two hops and 2 bytes" },
	};
	chh_daemon d;

	chh_start(&d, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sp_conn c = conn_unix(d.sock);
		bytes   o = { 0 };
		answer   a;
		int      rd;
		uint64_t id;

		handshake(&c);
		frame(&o, false, NULL, 0, cases[i].b, cases[i].len);
		id = frame_ping(&o, false, 0x55);
		if (write_all(c.fd, o.b, o.len)) {
			rd = read_answer(&c, &a, chh_now_ms() +
			    chh_scaled_ms(5000));
			if (rd == RD_TIMEOUT) {
				chh_dump_log(&d);
			}
			ck_assert_msg(rd != RD_TIMEOUT, "%s: the daemon neither "
			    "dropped the connection nor answered the next "
			    "request", cases[i].what);
			if (rd == RD_OK) {
				expect_ping_answer(&a, 0x55, id,
				    cases[i].what);
				answer_free(&a);
				ck_assert_int_ne(read_full(c.fd, o.b, 1,
				    chh_now_ms() + 200), RD_OK);
			}
		}
		free(o.b);
		close(c.fd);
		assert_alive_raw(&d, 0);
	}
	chh_stop(&d);
}
END_TEST

/* (d) A peer that says it is REP, or PUB: closed, never answered. */
START_TEST(handshake_wrong_protocol)
{
	static const uint16_t protos[] = { SP_PROTO_REP, SP_PROTO_PUB };
	chh_daemon d;

	chh_start(&d, NULL);
	for (size_t i = 0; i < 2; i++) {
		sp_conn c = conn_unix(d.sock);
		bytes   o = { 0 };
		uint8_t hs[8];
		char    what[64];

		handshake_bytes(hs, protos[i]);
		bytes_put(&o, hs, 8);
		frame_ping(&o, false, 0x66);
		(void) write_all(c.fd, o.b, o.len);
		free(o.b);
		snprintf(what, sizeof(what), "handshake as protocol 0x%02x",
		    protos[i]);
		expect_dropped(&c, &d, what);
		close(c.fd);
		assert_alive_raw(&d, 0);
	}
	chh_stop(&d);
}
END_TEST

/* (e) An ipc frame whose type byte is not 1: dropped. */
START_TEST(ipc_frame_type_not_one)
{
	static const uint8_t types[] = { 0, 2, 0x81, 0xff };
	chh_daemon d;

	chh_start(&d, NULL);
	for (size_t i = 0; i < sizeof(types); i++) {
		sp_conn c = conn_unix(d.sock);
		bytes   o = { 0 };
		char    what[64];

		handshake(&c);
		frame_ping(&o, false, 0x88);
		o.b[0] = types[i];
		(void) write_all(c.fd, o.b, o.len);
		free(o.b);
		snprintf(what, sizeof(what), "ipc frame type 0x%02x", types[i]);
		expect_dropped(&c, &d, what);
		close(c.fd);
		assert_alive_raw(&d, 0);
	}
	chh_stop(&d);
}
END_TEST

/*
 * (f) A client that sends 20,000 Pings and reads nothing for 3 s must not
 * stall another client: each of its Pings is answered (loosely, within
 * 2 s: a stall is what this catches, not a slow daemon).
 */
START_TEST(slow_reader_does_not_stall_others)
{
	enum { N = 20000 };
	chh_daemon d;
	sp_conn    slow, other;
	bytes      o = { 0 };
	size_t     off = 0;
	int64_t    end;
	int        pings = 0;
	uint32_t   rid = 1;

	chh_start(&d, NULL);
	slow = conn_unix(d.sock);
	handshake(&slow);
	other = conn_unix(d.sock);
	handshake(&other);
	for (int i = 0; i < N; i++) {
		frame_ping(&o, false, (uint32_t) i + 1);
	}
	end = chh_now_ms() + 3000;
	while (chh_now_ms() < end) {
		/* Push what the socket takes now; the rest later (or never,
		 * once the daemon stops reading us). */
		while (off < o.len) {
			ssize_t w = send(slow.fd, o.b + off, o.len - off,
			    MSG_NOSIGNAL | MSG_DONTWAIT);

			if (w <= 0) {
				ck_assert_msg(w < 0 && (errno == EAGAIN ||
				    errno == EWOULDBLOCK || errno == EINTR),
				    "the daemon dropped the slow reader "
				    "(send: %s)", w < 0 ? strerror(errno) :
				    "0");
				break;
			}
			off += (size_t) w;
		}
		ping_on(&other, rid++, chh_scaled_ms(2000),
		    "a client beside a slow reader");
		pings++;
		usleep(20 * 1000);
	}
	ck_assert_int_gt(pings, 0);
	free(o.b);
	close(slow.fd);
	ping_on(&other, rid, chh_scaled_ms(5000), "after the slow reader left");
	close(other.fd);
	assert_alive_raw(&d, 0);
	chh_stop(&d);
}
END_TEST

/* (g) tcp framing (no type byte): a Ping, then a length of 2^62. */
START_TEST(tcp_framing)
{
	static const uint8_t huge[8] = { 0x40, 0, 0, 0, 0, 0, 0, 0 };
	chh_daemon  d;
	char        url[64];
	const char *args[] = { "--listen", url, NULL };
	int         port = chh_free_tcp_port();
	sp_conn     c;

	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
	chh_start(&d, args);
	c = conn_tcp(port);
	handshake(&c);
	ping_on(&c, 0x99, chh_scaled_ms(5000), "a Ping over tcp");
	ping_on(&c, 0x9a, chh_scaled_ms(5000), "a second Ping over tcp");
	close(c.fd);
	assert_alive_raw(&d, port);

	c = conn_tcp(port);
	handshake(&c);
	(void) write_all(c.fd, huge, sizeof(huge));
	expect_dropped(&c, &d, "a tcp frame of 2^62 bytes");
	close(c.fd);
	assert_alive_raw(&d, port);
	assert_alive_raw(&d, 0);
	chh_stop(&d);
}
END_TEST

/* (h) A device hop before the request id: both words come back. */
START_TEST(backtrace_echoed_whole)
{
	chh_daemon d;
	sp_conn    c;
	bytes      o = { 0 };
	uint32_t   hdr[2] = { 0x00000007, 0x80abcdefu };
	size_t     plen;
	uint8_t   *ping;
	answer     a;
	int        rd;
	uint64_t   id;

	chh_start(&d, NULL);
	c = conn_unix(d.sock);
	handshake(&c);
	ping = pack_ping(&plen, &id);
	frame(&o, false, hdr, 2, ping, plen);
	free(ping);
	ck_assert(write_all(c.fd, o.b, o.len));
	free(o.b);
	rd = read_answer(&c, &a, chh_now_ms() + chh_scaled_ms(5000));
	if (rd != RD_OK) {
		chh_dump_log(&d);
	}
	ck_assert_msg(rd == RD_OK, "no answer to a request with a hop (%s)",
	    rd == RD_EOF ? "connection closed" : "timed out");
	ck_assert_msg(a.nhdr == 2 && a.hdr[0] == hdr[0] && a.hdr[1] == hdr[1],
	    "backtrace answered %zu words (0x%08x 0x%08x), expected 0x%08x "
	    "0x%08x", a.nhdr, a.hdr[0], a.nhdr > 1 ? a.hdr[1] : 0, hdr[0],
	    hdr[1]);
	ck_assert_ptr_nonnull(a.resp);
	ck_assert_int_eq(a.resp->status, ST(OK));
	ck_assert_msg(a.resp->has_id && a.resp->id == id, "the answer says "
	    "Request.id %llu, expected %llu", (unsigned long long) a.resp->id,
	    (unsigned long long) id);
	answer_free(&a);
	/* Plain requests on the same connection still work. */
	ping_on(&c, 0x3, chh_scaled_ms(5000), "after a request with a hop");
	close(c.fd);
	assert_alive_raw(&d, 0);
	chh_stop(&d);
}
END_TEST

/*
 * (i) The daemon runs out of descriptors: a connection it already has
 * keeps being served, the ones it cannot take wait, and once clients go
 * away new connections are served again (chand pauses accepting instead
 * of spinning or giving up its listener).
 */
#define FD_LIMIT 96
#define FD_EXTRA 150
START_TEST(descriptors_run_out)
{
	struct rlimit old, low;
	chh_daemon    d;
	sp_conn       held, extra[FD_EXTRA];

	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = FD_LIMIT;
	/* Inherited by the chand chh_start forks, then ours again. */
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	chh_start(&d, NULL);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	held = conn_unix(d.sock);
	handshake(&held);
	for (int i = 0; i < FD_EXTRA; i++) {
		extra[i] = conn_unix(d.sock);
	}
	usleep(300 * 1000);
	ping_on(&held, 0x501, chh_scaled_ms(5000),
	    "a connection made before the descriptors ran out");
	for (int i = 0; i < FD_EXTRA; i++) {
		close(extra[i].fd);
	}
	ping_on(&held, 0x502, chh_scaled_ms(5000),
	    "the same connection after the others left");
	close(held.fd);
	assert_alive_raw(&d, 0);
	chh_stop(&d);
}
END_TEST

/*
 * (j) A peer that never finishes its handshake is dropped after nng's
 * 10 s (loosely: not before 5 s, within 20 s), having been sent nothing
 * but the daemon's own 8 bytes; others are served meanwhile.
 */
START_TEST(unfinished_handshake_dropped)
{
	static const uint8_t half[3] = { 0, 'S', 'P' };
	chh_daemon d;
	sp_conn    c;
	int64_t    t0;
	size_t     got;
	bool       eof;

	chh_start(&d, NULL);
	c = conn_unix(d.sock);
	ck_assert(write_all(c.fd, half, sizeof(half)));
	t0 = chh_now_ms();
	assert_alive_raw(&d, 0);
	eof = drained_to_eof(c.fd, t0 + chh_scaled_ms(20000), &got);
	ck_assert_msg(eof, "a half handshake was kept over 20 s");
	ck_assert_msg(chh_now_ms() - t0 >= 5000,
	    "a half handshake was dropped after only %lld ms",
	    (long long) (chh_now_ms() - t0));
	ck_assert_msg(got <= 8, "the daemon sent %zu bytes to a peer that never "
	    "shook hands", got);
	close(c.fd);
	assert_alive_raw(&d, 0);
	chh_stop(&d);
}
END_TEST



static Suite *
spwire_suite(void)
{
	Suite *s = suite_create("spwire");
	TCase *tc = tcase_create("spwire");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, one_byte_at_a_time);
	tcase_add_test(tc, fifty_in_one_write);
	tcase_add_test(tc, backtrace_never_ends);
	tcase_add_test(tc, handshake_wrong_protocol);
	tcase_add_test(tc, ipc_frame_type_not_one);
	tcase_add_test(tc, slow_reader_does_not_stall_others);
	tcase_add_test(tc, tcp_framing);
	tcase_add_test(tc, backtrace_echoed_whole);
	tcase_add_test(tc, descriptors_run_out);
	tcase_add_test(tc, unfinished_handshake_dropped);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	int failed;

	failed = chh_run_suite(spwire_suite());
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
