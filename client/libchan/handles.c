/* handles.c - sender handles (Rust's Sender) and receiver handles (Receiver). */
#include "client.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

struct chan_sender {
	chan_client *c;
	uint64_t     id;
	char         name[CHAN_NAME_MAX + 1];
};

struct chan_receiver {
	chan_client *c;
	uint64_t     id;
	char         name[CHAN_NAME_MAX + 1];
};

/* SenderOpen / ReceiverOpen: both answer a handle id. */
static chan_status
chan_handle_open(chan_client *c, const char *name, bool receiver, uint64_t *id)
{
	chan_exchange          x;
	Chan__V1__SenderOpen   so = CHAN__V1__SENDER_OPEN__INIT;
	Chan__V1__ReceiverOpen ro = CHAN__V1__RECEIVER_OPEN__INIT;
	chan_status            s;

	if (c == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "client is NULL"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	chan_exchange_init(&x);
	if (receiver) {
		ro.name = (char *) name;
		x.req.op_case = CHAN__V1__REQUEST__OP_RECEIVER_OPEN;
		x.req.receiver_open = &ro;
	} else {
		so.name = (char *) name;
		x.req.op_case = CHAN__V1__REQUEST__OP_SENDER_OPEN;
		x.req.sender_open = &so;
	}
	s = chan_exchange_run(c, &x, CHAN__V1__RESPONSE__RESULT_HANDLE, -1, false);
	if (s == CHAN_OK) {
		if (x.resp->handle->handle == 0) {
			s = chan_fail(CHAN_PROTOCOL, "daemon answered handle 0 for '%s'", name);
		} else {
			*id = x.resp->handle->handle;
		}
	}
	chan_exchange_fini(&x);
	return (s);
}

chan_status
chan_sender_open(chan_client *c, const char *name, chan_sender **out)
{
	chan_sender *h;
	chan_status  s;

	if (out == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "out is NULL"));
	}
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
	}
	if ((s = chan_handle_open(c, name, false, &h->id)) != CHAN_OK) {
		free(h);
		return (s);
	}
	h->c = c;
	snprintf(h->name, sizeof(h->name), "%s", name);
	*out = h;
	return (CHAN_OK);
}

chan_status
chan_sender_clone(const chan_sender *s, chan_sender **out)
{
	if (s == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "sender is NULL"));
	}
	return (chan_sender_open(s->c, s->name, out));
}

chan_status
chan_sender_send(chan_sender *s, const void *data, size_t len, int64_t timeout_ms)
{
	chan_buf b = { data, len };

	if (s == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "sender is NULL"));
	}
	return (chan_send_common(s->c, s->name, s->id, &b, 1, timeout_ms, NULL));
}

chan_status
chan_sender_send_batch(chan_sender *s, const chan_buf *bufs, size_t n, int64_t timeout_ms,
    uint64_t *first_seq)
{
	if (s == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "sender is NULL"));
	}
	return (chan_send_common(s->c, s->name, s->id, bufs, n, timeout_ms, first_seq));
}

chan_status
chan_sender_close(chan_sender *h)
{
	chan_exchange         x;
	Chan__V1__SenderClose a = CHAN__V1__SENDER_CLOSE__INIT;
	chan_status           s;

	if (h == NULL) {
		return (CHAN_OK);
	}
	a.name = h->name;
	a.has_sender = 1;
	a.sender = h->id;
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_SENDER_CLOSE;
	x.req.sender_close = &a;
	s = chan_exchange_run(h->c, &x, 0, -1, false);
	chan_exchange_fini(&x);
	free(h);
	return (s);
}

chan_status
chan_receiver_open(chan_client *c, const char *name, chan_receiver **out)
{
	chan_receiver *h;
	chan_status    s;

	if (out == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "out is NULL"));
	}
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
	}
	if ((s = chan_handle_open(c, name, true, &h->id)) != CHAN_OK) {
		free(h);
		return (s);
	}
	h->c = c;
	snprintf(h->name, sizeof(h->name), "%s", name);
	*out = h;
	return (CHAN_OK);
}

chan_status
chan_receiver_recv(chan_receiver *r, chan_msg **out, int64_t timeout_ms)
{
	size_t n;

	if (r == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "receiver is NULL"));
	}
	return (chan_recv_common(r->c, r->name, r->id, 0, 1, out, &n, timeout_ms));
}

chan_status
chan_receiver_recv_n(chan_receiver *r, size_t max, chan_msg **msgs, size_t *n, int64_t timeout_ms)
{
	if (r == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "receiver is NULL"));
	}
	return (chan_recv_common(r->c, r->name, r->id, 0, max, msgs, n, timeout_ms));
}

static chan_status
chan_receiver_end(chan_receiver *h, bool detach_only)
{
	chan_exchange           x;
	Chan__V1__ReceiverClose a = CHAN__V1__RECEIVER_CLOSE__INIT;
	chan_status             s;

	if (h == NULL) {
		return (CHAN_OK);
	}
	a.name = h->name;
	a.has_receiver = 1;
	a.receiver = h->id;
	a.has_detach_only = 1;
	a.detach_only = detach_only;
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_RECEIVER_CLOSE;
	x.req.receiver_close = &a;
	s = chan_exchange_run(h->c, &x, 0, -1, false);
	chan_exchange_fini(&x);
	free(h);
	return (s);
}

chan_status
chan_receiver_close(chan_receiver *r)
{
	return (chan_receiver_end(r, false));
}

chan_status
chan_receiver_detach(chan_receiver *r)
{
	return (chan_receiver_end(r, true));
}
