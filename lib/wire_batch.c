/*
 * wire_batch.c - the batch form of many messages (chan.v1.Batch): the
 * payloads back to back in one bytes field, their sizes (and, in answers,
 * seq and time deltas and the redelivered indices) as packed varints.
 *
 * In memory both ends keep the list form (Send.data, RecvResult.messages
 * pointing at each payload); the batch form exists only on the wire: the
 * packers below write it straight from the list, and chl_send_unbatch /
 * the client read it back into a list that points into the received bytes.
 * Per message that is a few varints instead of a tag, a length and a
 * sub-message, and no copy on the reading side.
 */
#include "wire.h"

#include "batch_emit.h"
#include "varint.h"

#include <stdio.h>
#include <string.h>

#define CHL_F_REQ_SEND   15 /* Request.send */
#define CHL_F_SEND_BATCH 5  /* Send.batch */

/* ---- checking what arrived -----------------------------------------------
 */

bool
chl_batch_check(
    const Chan__V1__Batch *b, bool answer, char *why, size_t whylen)
{
	size_t n = b->n_sizes;
	size_t sum = 0;

	if (n == 0) {
		snprintf(why, whylen,
		    "a batch carries at least one message (no sizes)");
		return (false);
	}
	for (size_t i = 0; i < n; i++) {
		sum += b->sizes[i]; /* 32-bit sizes: a size_t sum cannot wrap */
	}
	if (sum != (b->has_data ? b->data.len : 0)) {
		snprintf(why, whylen,
		    "the batch's %zu sizes add up to %zu bytes, its data has "
		    "%zu",
		    n, sum, b->has_data ? b->data.len : (size_t)0);
		return (false);
	}
	if (!answer) {
		if (b->n_seq_deltas != 0 || b->n_time_deltas != 0
		    || b->n_redelivered != 0) {
			snprintf(why, whylen,
			    "a sent batch carries data and sizes only "
			    "(seq, time and redelivered are the daemon's)");
			return (false);
		}
		return (true);
	}
	if ((b->n_seq_deltas != 0 && b->n_seq_deltas != n)
	    || (b->n_time_deltas != 0 && b->n_time_deltas != n)) {
		snprintf(why, whylen,
		    "the batch has %zu sizes but %zu seq and %zu time deltas",
		    n, b->n_seq_deltas, b->n_time_deltas);
		return (false);
	}
	for (size_t i = 0; i < b->n_redelivered; i++) {
		if (b->redelivered[i] >= n
		    || (i > 0 && b->redelivered[i] <= b->redelivered[i - 1])) {
			snprintf(why, whylen,
			    "the batch's redelivered indices are not "
			    "increasing "
			    "indices below %zu",
			    n);
			return (false);
		}
	}
	return (true);
}

bool
chl_send_unbatch(
    chl_capped_alloc *ca, Chan__V1__Send *s, char *why, size_t whylen)
{
	const Chan__V1__Batch *b = s->batch;
	ProtobufCBinaryData   *d;
	size_t                 off = 0;

	if (b == NULL) {
		return (true);
	}
	if (s->n_data != 0) {
		snprintf(why, whylen,
		    "a send carries its messages in data or in batch, not "
		    "both");
		return (false);
	}
	if (!chl_batch_check(b, false, why, whylen)) {
		return (false);
	}
	if ((d = ca->base.alloc(
	         ca->base.allocator_data, b->n_sizes * sizeof(*d)))
	    == NULL) {
		snprintf(why, whylen,
		    "out of memory for a batch of %zu messages", b->n_sizes);
		return (false);
	}
	for (size_t i = 0; i < b->n_sizes; i++) {
		d[i].len = b->sizes[i];
		d[i].data = d[i].len > 0 ? b->data.data + off : NULL;
		off += d[i].len;
	}
	s->data = d;
	s->n_data = b->n_sizes;
	s->batch = NULL; /* the arena still holds it */
	return (true);
}

/* ---- writing: answers (from RecvResult.messages) --------------------------
 */

bool
chl_batch_fits_msgs(Chan__V1__Message *const *ms, size_t n)
{
	chl_batch_layout l;

	return (chl_batch_layout_msgs(&l, ms, n));
}

/* Messages of a RecvResult, one after the other, for batch_emit.h. */
typedef struct chl_msg_it {
	Chan__V1__Message *const *ms;
	size_t                    i;
} chl_msg_it;

/* What chand's engine builds for a plain Recv: no names, seq and time set. */
static bool
chl_msg_next(void *arg, chl_bitem *b)
{
	chl_msg_it              *it = arg;
	const Chan__V1__Message *m = it->ms[it->i++];

	if (m->channel != NULL || !m->has_seq || !m->has_time_us ||
	    m->base.n_unknown_fields != 0) {
		return (false);
	}
	b->len = m->has_data ? m->data.len : 0;
	b->data = m->data.data;
	b->seq = m->seq;
	b->time_us = m->time_us;
	b->redelivered = m->has_redelivered && m->redelivered;
	return (true);
}

bool
chl_batch_layout_msgs(
    chl_batch_layout *l, Chan__V1__Message *const *ms, size_t n)
{
	chl_msg_it it = { ms, 0 };

	return (chl_batch_plan(l, chl_msg_next, &it, n));
}

uint8_t *
chl_batch_write_msgs(uint8_t *p, const chl_batch_layout *l,
    Chan__V1__Message *const *ms, size_t n)
{
	chl_msg_it it = { ms, 0 };

	return (chl_batch_emit(p, l, chl_msg_next, &it, n));
}

/* ---- writing: requests (a Send's data as Send.batch) ----------------------
 */

static size_t
chl_batch_layout_data(
    chl_batch_layout *l, const ProtobufCBinaryData *d, size_t n)
{
	memset(l, 0, sizeof(*l));
	for (size_t i = 0; i < n; i++) {
		l->data += d[i].len;
		l->sizes += chl_varint_size(d[i].len);
	}
	return (chl_batch_body_size(l));
}

/*
 * The Batch's data and sizes. at != NULL: the payloads are left out, and
 * *at is where they would go (the caller writes them from where they lie).
 */
static uint8_t *
chl_batch_write_data(uint8_t *p, const chl_batch_layout *l,
    const ProtobufCBinaryData *d, size_t n, uint8_t **at)
{
	p = chl_put_len_head(p, 1, l->data);
	if (at != NULL) {
		*at = p;
	}
	for (size_t i = 0; at == NULL && i < n; i++) {
		if (d[i].len > 0) {
			memcpy(p, d[i].data, d[i].len);
			p += d[i].len;
		}
	}
	p = chl_put_len_head(p, 2, l->sizes);
	for (size_t i = 0; i < n; i++) {
		p = chl_put_varint(p, d[i].len);
	}
	return (p);
}

/* Whether q is a Send this packer writes in the batch form. */
static bool
chl_send_batchable(const Chan__V1__Request *q)
{
	const Chan__V1__Send *s = q->send;

	return (q->op_case == CHAN__V1__REQUEST__OP_SEND && s != NULL
	    && s->n_data > 0 && s->batch == NULL
	    && s->base.n_unknown_fields == 0 && q->base.n_unknown_fields == 0);
}

/*
 * Send's fields but data, in field order. *blay is the batch's layout:
 * computed here unless laid (the size pass already did it).
 */
static size_t
chl_send_body(const Chan__V1__Send *s, chl_batch_layout *blay, bool laid)
{
	size_t n = 0;

	if (s->name != NULL) {
		n += chl_len_field_size(strlen(s->name));
	}
	if (s->has_timeout_ms) {
		n += 1 + chl_varint_size(chl_zigzag(s->timeout_ms));
	}
	if (s->has_sender) {
		n += 1 + chl_varint_size(s->sender);
	}
	return (n
	    + chl_len_field_size(laid ? blay->body
	                              : chl_batch_layout_data(
	                                  blay, s->data, s->n_data)));
}

/* The Request without its op: what protobuf-c packs before field 15. */
static Chan__V1__Request
chl_req_head(const Chan__V1__Request *q)
{
	Chan__V1__Request h = *q;

	h.op_case = CHAN__V1__REQUEST__OP__NOT_SET;
	return (h);
}

size_t
chl_request_packed_size(
    const Chan__V1__Request *q, bool batch, chl_batch_layout *lay)
{
	Chan__V1__Request h;
	chl_batch_layout  l;

	if (!batch || !chl_send_batchable(q)) {
		return (chan__v1__request__get_packed_size(q));
	}
	h = chl_req_head(q);
	return (chan__v1__request__get_packed_size(&h)
	    + chl_len_field_size(
	        chl_send_body(q->send, lay != NULL ? lay : &l, false)));
}

/* A batchable Send in the batch form (chl_request_pack, _gather). */
static size_t
chl_request_pack_batch(const Chan__V1__Request *q, const chl_batch_layout *lay,
    uint8_t *out, uint8_t **at)
{
	const Chan__V1__Send *s = q->send;
	Chan__V1__Request     h;
	chl_batch_layout      l;
	uint8_t              *p;

	if (lay != NULL) {
		l = *lay;
	}
	h = chl_req_head(q);
	p = out + chan__v1__request__pack(&h, out);
	p = chl_put_len_head(p, CHL_F_REQ_SEND, chl_send_body(s, &l, lay != NULL));
	if (s->name != NULL) {
		size_t len = strlen(s->name);

		p = chl_put_len_head(p, 1, len);
		memcpy(p, s->name, len);
		p += len;
	}
	if (s->has_timeout_ms) {
		p = chl_put_tag(p, 3, CHL_WT_VARINT);
		p = chl_put_varint(p, chl_zigzag(s->timeout_ms));
	}
	if (s->has_sender) {
		p = chl_put_tag(p, 4, CHL_WT_VARINT);
		p = chl_put_varint(p, s->sender);
	}
	p = chl_put_len_head(p, CHL_F_SEND_BATCH, l.body);
	p = chl_batch_write_data(p, &l, s->data, s->n_data, at);
	return ((size_t)(p - out));
}

size_t
chl_request_pack(const Chan__V1__Request *q, bool batch,
    const chl_batch_layout *lay, uint8_t *out)
{
	if (!batch || !chl_send_batchable(q)) {
		return (chan__v1__request__pack(q, out));
	}
	return (chl_request_pack_batch(q, lay, out, NULL));
}

size_t
chl_request_pack_gather(const Chan__V1__Request *q, const chl_batch_layout *lay,
    uint8_t *out, size_t *split)
{
	uint8_t *at;
	size_t   n;

	if (!chl_send_batchable(q)) {
		return (0);
	}
	n = chl_request_pack_batch(q, lay, out, &at);
	*split = (size_t)(at - out);
	return (n);
}
