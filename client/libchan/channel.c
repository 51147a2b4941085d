/* channel.c - channel calls: create, close, delete, send, recv, recv_any, ack mode. */
#include "client.h"

#include <stdlib.h>
#include <string.h>

/* Runs a request whose only argument is a channel name and whose answer is empty. */
#define CHAN_NAME_ONLY_(c, name, field, opcase, type, init)                   \
	do {                                                                   \
		chan_exchange x_;                                              \
		type          a_ = init;                                       \
		chan_status   s_;                                              \
		if ((s_ = chan_check_name(name)) != CHAN_OK) {                 \
			return (s_);                                           \
		}                                                              \
		a_.name = (char *) (name);                                     \
		chan_exchange_init(&x_);                                       \
		x_.req.op_case = opcase;                                       \
		x_.req.field = &a_;                                            \
		s_ = chan_exchange_run(c, &x_, 0, -1, false);                  \
		chan_exchange_fini(&x_);                                       \
		return (s_);                                                   \
	} while (0)

chan_status
chan_create(chan_client *c, const char *name, int64_t capacity)
{
	chan_exchange    x;
	Chan__V1__Create a = CHAN__V1__CREATE__INIT;
	chan_status      s;

	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	if (capacity < 0 && capacity != CHAN_UNBOUNDED) {
		return (chan_fail(CHAN_INVALID_ARGUMENT,
		    "capacity %lld: use CHAN_UNBOUNDED, 0 (rendezvous) or N > 0", (long long) capacity));
	}
	a.name = (char *) name;
	if (capacity >= 0) {
		a.has_capacity = 1;
		a.capacity = (uint64_t) capacity;
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_CREATE;
	x.req.create = &a;
	s = chan_exchange_run(c, &x, 0, -1, false);
	chan_exchange_fini(&x);
	return (s);
}

chan_status
chan_close(chan_client *c, const char *name)
{
	CHAN_NAME_ONLY_(c, name, close, CHAN__V1__REQUEST__OP_CLOSE, Chan__V1__Close,
	    CHAN__V1__CLOSE__INIT);
}

chan_status
chan_delete(chan_client *c, const char *name)
{
	CHAN_NAME_ONLY_(c, name, delete_, CHAN__V1__REQUEST__OP_DELETE, Chan__V1__Delete,
	    CHAN__V1__DELETE__INIT);
}

chan_status
chan_send_build(chan_client *c, const char *name, uint64_t sender, const chan_buf *bufs, size_t n,
    int64_t timeout_ms, Chan__V1__Send *a, ProtobufCBinaryData **datap)
{
	ProtobufCBinaryData *data;
	chan_status          s;
	size_t               i;

	if (c == NULL || (n > 0 && bufs == NULL)) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "send: client or buffers missing"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	if (n == 0 || n > c->max_batch) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "a send carries 1 to %u messages, not %zu",
		    c->max_batch, n));
	}
	for (i = 0; i < n; i++) {
		if (bufs[i].len > c->max_message_size) {
			return (chan_fail(CHAN_TOO_LARGE,
			    "message of %zu bytes is over the daemon's maximum of %llu bytes", bufs[i].len,
			    (unsigned long long) c->max_message_size));
		}
		if (bufs[i].len > 0 && bufs[i].data == NULL) {
			return (chan_fail(CHAN_INVALID_ARGUMENT, "message %zu has no data", i));
		}
	}
	if ((data = calloc(n, sizeof(*data))) == NULL) {
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
	}
	for (i = 0; i < n; i++) {
		data[i].data = (uint8_t *) bufs[i].data;
		data[i].len = bufs[i].len;
	}
	chan__v1__send__init(a);
	a->name = (char *) name;
	a->n_data = n;
	a->data = data;
	a->has_timeout_ms = 1;
	a->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
	if (sender != 0) {
		a->has_sender = 1;
		a->sender = sender;
	}
	*datap = data;
	return (CHAN_OK);
}

chan_status
chan_send_common(chan_client *c, const char *name, uint64_t sender, const chan_buf *bufs, size_t n,
    int64_t timeout_ms, uint64_t *first_seq)
{
	chan_exchange        x;
	Chan__V1__Send       a;
	ProtobufCBinaryData *data = NULL;
	chan_status          s;

	if ((s = chan_send_build(c, name, sender, bufs, n, timeout_ms, &a, &data)) != CHAN_OK) {
		return (s);
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_SEND;
	x.req.send = &a;
	s = chan_exchange_run(c, &x, 0, -1, false);
	if (s == CHAN_OK && first_seq != NULL) {
		*first_seq = x.resp->result_case == CHAN__V1__RESPONSE__RESULT_SEND
		    ? x.resp->send->first_seq : 0;
	}
	chan_exchange_fini(&x);
	free(data);
	return (s);
}

chan_status
chan_send(chan_client *c, const char *name, const void *data, size_t len, int64_t timeout_ms)
{
	chan_buf b = { data, len };

	return (chan_send_common(c, name, 0, &b, 1, timeout_ms, NULL));
}

chan_status
chan_send_batch(chan_client *c, const char *name, const chan_buf *bufs, size_t n, int64_t timeout_ms,
    uint64_t *first_seq)
{
	return (chan_send_common(c, name, 0, bufs, n, timeout_ms, first_seq));
}

chan_status
chan_unpack_msgs(chan_client *c, chan_exchange *x, size_t max, chan_msg **msgs, size_t *n,
    bool confirm)
{
	uint64_t    delivery = x->resp->delivery; /* the messages may take x->resp */
	chan_status s = chan_unpack_msgs_from(c->url, x, max, msgs, n);

	/* The caller holds them now: they may leave the daemon's custody. */
	if (s == CHAN_OK && confirm) {
		chan_confirm_later(c, delivery, x->via);
	}
	return (s);
}

chan_status
chan_unpack_msgs_from(const char *url, chan_exchange *x, size_t max, chan_msg **msgs, size_t *n)
{
	const Chan__V1__RecvResult *r = x->resp->recv;
	const Chan__V1__Batch      *b = r != NULL ? r->batch : NULL;
	const char                 *asked = x->req.op_case == CHAN__V1__REQUEST__OP_RECV
	                    ? x->req.recv->name : NULL;
	size_t                      count = b != NULL ? b->n_sizes : r != NULL ? r->n_messages : 0;
	char                        why[200];
	chan_status                 s;

	if (r == NULL || count == 0 || count > max || (b != NULL && r->n_messages != 0)) {
		return (chan_fail(CHAN_PROTOCOL, "answer from %s carries %zu messages, asked 1 to %zu",
		    url, count, max));
	}
	if (b != NULL) {
		if (asked == NULL || !chl_batch_check(b, true, why, sizeof(why))) {
			return (chan_fail(CHAN_PROTOCOL, "answer from %s: %s", url,
			    asked == NULL ? "a batch answers a plain recv only" : why));
		}
		s = chan_msgs_from_batch(x, asked, msgs);
	} else {
		s = chan_msgs_from_wire(r, asked, msgs);
	}
	if (s != CHAN_OK) {
		/* Not confirmed: the daemon keeps them and gives them back. */
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory for received messages"));
	}
	*n = count;
	return (CHAN_OK);
}

chan_status
chan_recv_build(chan_client *c, const char *name, uint64_t receiver, uint64_t lease_ms, size_t max,
    int64_t timeout_ms, Chan__V1__Recv *a)
{
	chan_status s;

	if (c == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "recv: client missing"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	if (max == 0 || max > c->max_batch) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "a recv takes 1 to %u messages, not %zu",
		    c->max_batch, max));
	}
	chan__v1__recv__init(a);
	a->name = (char *) name;
	a->has_max = 1;
	a->max = (uint32_t) max;
	a->has_timeout_ms = 1;
	a->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
	if (c->batch_form) {
		a->has_batch = a->batch = 1;
	}
	if (lease_ms > 0) {
		a->has_lease_ms = 1;
		a->lease_ms = lease_ms;
	}
	if (receiver != 0) {
		a->has_receiver = 1;
		a->receiver = receiver;
	}
	return (CHAN_OK);
}

chan_status
chan_recv_common(chan_client *c, const char *name, uint64_t receiver, uint64_t lease_ms, size_t max,
    chan_msg **msgs, size_t *n, int64_t timeout_ms)
{
	chan_exchange  x;
	Chan__V1__Recv a;
	chan_status    s;

	if (c == NULL || msgs == NULL || n == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "recv: client or output missing"));
	}
	if ((s = chan_recv_build(c, name, receiver, lease_ms, max, timeout_ms, &a)) != CHAN_OK) {
		return (s);
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_RECV;
	x.req.recv = &a;
	s = chan_exchange_run(c, &x, CHAN__V1__RESPONSE__RESULT_RECV, -1, false);
	if (s == CHAN_OK) {
		s = chan_unpack_msgs(c, &x, max, msgs, n, true);
	}
	chan_exchange_fini(&x);
	return (s);
}

chan_status
chan_recv(chan_client *c, const char *name, chan_msg **out, int64_t timeout_ms)
{
	size_t n;

	return (chan_recv_common(c, name, 0, 0, 1, out, &n, timeout_ms));
}

chan_status
chan_try_recv(chan_client *c, const char *name, chan_msg **out)
{
	return (chan_recv(c, name, out, 0));
}

chan_status
chan_recv_n(chan_client *c, const char *name, size_t max, chan_msg **msgs, size_t *n,
    int64_t timeout_ms)
{
	return (chan_recv_common(c, name, 0, 0, max, msgs, n, timeout_ms));
}

chan_status
chan_recv_lease(chan_client *c, const char *name, uint64_t lease_ms, chan_msg **out,
    int64_t timeout_ms)
{
	size_t n;

	if (lease_ms == 0) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "a lease lasts at least 1 ms"));
	}
	return (chan_recv_common(c, name, 0, lease_ms, 1, out, &n, timeout_ms));
}

chan_status
chan_recv_any_build(chan_client *c, const char *const *names, size_t n, int64_t timeout_ms,
    Chan__V1__RecvAny *a)
{
	chan_status s;
	size_t      i;

	if (c == NULL || names == NULL || n == 0) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "recv_any needs at least one channel name"));
	}
	for (i = 0; i < n; i++) {
		if ((s = chan_check_name(names[i])) != CHAN_OK) {
			return (s);
		}
	}
	chan__v1__recv_any__init(a);
	a->n_names = n;
	a->names = (char **) names;
	a->has_timeout_ms = 1;
	a->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
	return (CHAN_OK);
}

chan_status
chan_recv_any(chan_client *c, const char *const *names, size_t n, chan_msg **out, int64_t timeout_ms)
{
	chan_exchange     x;
	Chan__V1__RecvAny a;
	chan_status       s;
	size_t            got;

	if (out == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "recv_any: output missing"));
	}
	if ((s = chan_recv_any_build(c, names, n, timeout_ms, &a)) != CHAN_OK) {
		return (s);
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_RECV_ANY;
	x.req.recv_any = &a;
	s = chan_exchange_run(c, &x, CHAN__V1__RESPONSE__RESULT_RECV, -1, false);
	if (s == CHAN_OK) {
		s = chan_unpack_msgs(c, &x, 1, out, &got, true);
	}
	chan_exchange_fini(&x);
	return (s);
}

chan_status
chan_ack(chan_client *c, const char *name, uint64_t seq)
{
	chan_exchange x;
	Chan__V1__Ack a = CHAN__V1__ACK__INIT;
	chan_status   s;

	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	a.name = (char *) name;
	a.has_seq = 1;
	a.seq = seq;
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_ACK;
	x.req.ack = &a;
	s = chan_exchange_run(c, &x, 0, -1, false);
	chan_exchange_fini(&x);
	return (s);
}

chan_status
chan_release(chan_client *c, const char *name, uint64_t seq, uint64_t delay_ms)
{
	chan_exchange     x;
	Chan__V1__Release a = CHAN__V1__RELEASE__INIT;
	chan_status       s;

	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	a.name = (char *) name;
	a.has_seq = 1;
	a.seq = seq;
	if (delay_ms > 0) {
		a.has_delay_ms = 1;
		a.delay_ms = delay_ms;
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_RELEASE;
	x.req.release = &a;
	s = chan_exchange_run(c, &x, 0, -1, false);
	chan_exchange_fini(&x);
	return (s);
}
