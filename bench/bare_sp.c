/*
 * bare_sp.c - a REQ client with no nng threads: the SP wire protocol
 * written and read on the unix socket by the calling thread.
 *
 * Why the bench has one: nng wakes its own threads several times per
 * request in the client, and again in the server. This client takes the
 * client's share away, so the floor rows show what nng's server side
 * alone costs at a given pace (workload 5's floor). It is a measuring
 * tool, not a second libchan: ipc:// only, one request at a time.
 *
 * The protocol, as nng 1.5.2 speaks it over ipc://: each side first
 * sends 8 bytes, 0x00 'S' 'P' 0x00, its protocol number (16 bits, big
 * endian; REQ is 0x30, REP 0x31) and two zero bytes. Every message is
 * then a 0x01 byte, the length (64 bits, big endian), and the message:
 * for REQ/REP a 4-byte request id with the top bit set, then the body.
 * The reply carries the same id.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bare_sp.h"

#define SP_REQ 0x30
#define SP_REP 0x31

/* All of len bytes written (writing) or read, or -1 (EOF, error). */
static int
full_io(int fd, void *buf, size_t len, bool writing)
{
	unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = writing ? write(fd, p, len) : read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return (-1);
		p += n;
		len -= (size_t) n;
	}
	return (0);
}

static int
full_write(int fd, const void *buf, size_t len)
{
	return (full_io(fd, (void *) buf, len, true));
}

static int
full_read(int fd, void *buf, size_t len)
{
	return (full_io(fd, buf, len, false));
}

static void
put_be(unsigned char *p, uint64_t v, int bytes)
{
	for (int i = bytes - 1; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char) v;
}

static uint64_t
get_be(const unsigned char *p, int bytes)
{
	uint64_t v = 0;

	for (int i = 0; i < bytes; i++)
		v = v << 8 | p[i];
	return (v);
}

int
bare_sp_dial(bare_sp *b, const char *url, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	unsigned char hello[8] = { 0, 'S', 'P', 0, 0, SP_REQ, 0, 0 }, peer[8];

	b->fd = -1;
	b->id = 0;
	if (strncmp(url, "ipc://", 6) != 0 ||
	    strlen(url + 6) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "bare SP client: ipc:// only, not %s", url);
		return (-1);
	}
	strcpy(sa.sun_path, url + 6);
	if ((b->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    connect(b->fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
		snprintf(err, errlen, "bare SP client: %s: %s", url,
		    strerror(errno));
		goto fail;
	}
	if (full_write(b->fd, hello, sizeof(hello)) != 0 ||
	    full_read(b->fd, peer, sizeof(peer)) != 0) {
		snprintf(err, errlen, "bare SP client: handshake failed");
		goto fail;
	}
	if (memcmp(peer, hello, 4) != 0 || get_be(peer + 4, 2) != SP_REP) {
		snprintf(err, errlen, "bare SP client: peer is not a REP socket");
		goto fail;
	}
	return (0);
fail:
	bare_sp_close(b);
	return (-1);
}

int
bare_sp_call(bare_sp *b, unsigned char *buf, size_t len, size_t cap,
    size_t *got, char *err, size_t errlen)
{
	unsigned char head[13], rhead[13];
	uint32_t id = (++b->id & 0x7fffffffu) | 0x80000000u;
	uint64_t rlen;

	head[0] = 1;
	put_be(head + 1, len + 4, 8);
	put_be(head + 9, id, 4);
	if (full_write(b->fd, head, sizeof(head)) != 0 ||
	    full_write(b->fd, buf, len) != 0 ||
	    full_read(b->fd, rhead, sizeof(rhead)) != 0) {
		snprintf(err, errlen, "bare SP client: connection lost");
		return (-1);
	}
	rlen = get_be(rhead + 1, 8);
	if (rhead[0] != 1 || rlen < 4 || rlen - 4 > cap ||
	    get_be(rhead + 9, 4) != id) {
		snprintf(err, errlen, "bare SP client: unexpected reply "
		    "(type %u, %llu bytes)", rhead[0], (unsigned long long) rlen);
		return (-1);
	}
	*got = (size_t) (rlen - 4);
	if (full_read(b->fd, buf, *got) != 0) {
		snprintf(err, errlen, "bare SP client: connection lost");
		return (-1);
	}
	return (0);
}

void
bare_sp_close(bare_sp *b)
{
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
}
