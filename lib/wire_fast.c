/*
 * wire_fast.c - hand decoders for the two hot messages: a Request carrying
 * a Send (the daemon's side of every batch) and a Response carrying a
 * RecvResult (libchan's). protobuf-c's generic unpacker walks descriptors
 * for every field of every message; for a 1,024-message answer that was
 * about 1,100 instructions per message in libchan.
 *
 * The fast path never judges input: anything it does not expect (another
 * op, an unknown field, a packed or duplicated submessage, an overlong
 * varint, a truncation, the allocator's cap) makes it give up and the
 * caller decodes with protobuf-c, which then accepts or rejects exactly as
 * before. What it does build is what protobuf-c would build: the same
 * structs, initialised by the generated init functions, strings
 * NUL-terminated, empty bytes as NULL, allocated from the same arena.
 */
#include "wire.h"

#include <stdbool.h>
#include <string.h>

#define WT_VARINT  0
#define WT_FIXED64 1
#define WT_LEN     2

typedef struct {
	const uint8_t *p, *end;
} rd;

static bool
rd_varint(rd *r, uint64_t *v)
{
	uint64_t x = 0;

	for (int i = 0; i < 10; i++) {
		uint8_t b;

		if (r->p >= r->end) {
			return (false);
		}
		b = *r->p++;
		if (i == 9 && b > 1) {
			return (false); /* more than 64 bits: let protobuf-c judge */
		}
		x |= (uint64_t) (b & 0x7f) << (7 * i);
		if ((b & 0x80) == 0) {
			*v = x;
			return (true);
		}
	}
	return (false);
}

static bool
rd_tag(rd *r, uint32_t *field, int *wt)
{
	uint64_t t;

	if (!rd_varint(r, &t) || (t >> 3) == 0 || (t >> 3) > UINT32_MAX) {
		return (false);
	}
	*field = (uint32_t) (t >> 3);
	*wt = (int) (t & 7);
	return (true);
}

static bool
rd_len(rd *r, rd *sub)
{
	uint64_t n;

	if (!rd_varint(r, &n) || n > (uint64_t) (r->end - r->p)) {
		return (false);
	}
	sub->p = r->p;
	sub->end = r->p + n;
	r->p += n;
	return (true);
}

static bool
rd_fixed64(rd *r, uint64_t *v)
{
	if (r->end - r->p < 8) {
		return (false);
	}
	memcpy(v, r->p, 8); /* little-endian on every platform chand runs on */
	r->p += 8;
	return (true);
}

static void *
a_alloc(chl_capped_alloc *ca, size_t n)
{
	return (ca->base.alloc(ca->base.allocator_data, n));
}

static char *
a_string(chl_capped_alloc *ca, const rd *s)
{
	size_t n = (size_t) (s->end - s->p);
	char  *str = a_alloc(ca, n + 1);

	if (str != NULL) {
		memcpy(str, s->p, n);
		str[n] = '\0';
	}
	return (str);
}

/*
 * Bytes as protobuf-c keeps them: copied, NULL when empty; or, when the
 * allocator holds the input (chl_capped_alloc_borrow), pointing into it.
 */
static bool
a_bytes(chl_capped_alloc *ca, const rd *s, ProtobufCBinaryData *bd)
{
	size_t n = (size_t) (s->end - s->p);

	bd->len = n;
	bd->data = NULL;
	if (n == 0) {
		return (true);
	}
	if (ca->input_free != NULL) {
		bd->data = (uint8_t *) s->p;
		return (true);
	}
	if ((bd->data = a_alloc(ca, n)) == NULL) {
		return (false);
	}
	memcpy(bd->data, s->p, n);
	return (true);
}

/* ---- Batch { data, sizes*, seq_deltas*, time_deltas*, redelivered* } ---- */

/*
 * A packed varint field into an array from ca: 32-bit unsigned (u32) or
 * zigzag sint64. false: malformed, or a value protobuf-c would truncate.
 */
static bool
packed_decode(chl_capped_alloc *ca, rd r, bool u32, void **arr, size_t *n)
{
	size_t cnt = 0;

	for (const uint8_t *q = r.p; q < r.end; q++) {
		cnt += (*q & 0x80) == 0;
	}
	if (cnt == 0) {
		return (r.p == r.end); /* an empty field: nothing, as protobuf-c */
	}
	if ((*arr = a_alloc(ca, cnt * (u32 ? sizeof(uint32_t) : sizeof(int64_t)))) == NULL) {
		return (false);
	}
	for (size_t i = 0; i < cnt; i++) {
		uint64_t v;

		if (!rd_varint(&r, &v)) {
			return (false);
		}
		if (u32) {
			if (v > UINT32_MAX) {
				return (false);
			}
			((uint32_t *) *arr)[i] = (uint32_t) v;
		} else {
			((int64_t *) *arr)[i] = (int64_t) ((v >> 1) ^ (~(v & 1) + 1));
		}
	}
	*n = cnt;
	return (r.p == r.end);
}

/* Each field at most once, length-delimited; anything else: not ours. */
static Chan__V1__Batch *
batch_decode(chl_capped_alloc *ca, rd r)
{
	Chan__V1__Batch *b;
	unsigned         seen = 0;

	if ((b = a_alloc(ca, sizeof(*b))) == NULL) {
		return (NULL);
	}
	chan__v1__batch__init(b);
	while (r.p < r.end) {
		uint32_t f;
		int      wt;
		rd       s;
		bool     ok;

		if (!rd_tag(&r, &f, &wt) || wt != WT_LEN || f < 1 || f > 5 ||
		    (seen & (1u << f)) != 0 || !rd_len(&r, &s)) {
			return (NULL);
		}
		seen |= 1u << f;
		switch (f) {
		case 1:
			ok = a_bytes(ca, &s, &b->data);
			b->has_data = true;
			break;
		case 2:
			ok = packed_decode(ca, s, true, (void **) &b->sizes, &b->n_sizes);
			break;
		case 3:
			ok = packed_decode(ca, s, false, (void **) &b->seq_deltas, &b->n_seq_deltas);
			break;
		case 4:
			ok = packed_decode(ca, s, false, (void **) &b->time_deltas, &b->n_time_deltas);
			break;
		default:
			ok = packed_decode(ca, s, true, (void **) &b->redelivered, &b->n_redelivered);
			break;
		}
		if (!ok) {
			return (NULL);
		}
	}
	return (b);
}

/* ---- Request { id, client, confirm*, send } ---------------------------- */

#define F_REQ_SEND 15

/* Counts Send.data and checks Send's shape; false: not ours. */
static bool
send_scan(rd r, size_t *ndata)
{
	size_t n = 0;
	bool   batch = false;

	while (r.p < r.end) {
		uint32_t f;
		int      wt;
		uint64_t v;
		rd       s;

		if (!rd_tag(&r, &f, &wt)) {
			return (false);
		}
		if ((f == 1 || f == 2 || (f == 5 && !batch)) && wt == WT_LEN) {
			if (!rd_len(&r, &s)) {
				return (false);
			}
			n += f == 2;
			batch = batch || f == 5;
		} else if ((f == 3 || f == 4) && wt == WT_VARINT) {
			if (!rd_varint(&r, &v)) {
				return (false);
			}
		} else {
			return (false);
		}
	}
	*ndata = n;
	return (true);
}

static Chan__V1__Send *
send_decode(chl_capped_alloc *ca, rd r)
{
	Chan__V1__Send *s;
	size_t          n;

	if (!send_scan(r, &n) || (s = a_alloc(ca, sizeof(*s))) == NULL) {
		return (NULL);
	}
	chan__v1__send__init(s);
	if (n > 0 && (s->data = a_alloc(ca, n * sizeof(*s->data))) == NULL) {
		return (NULL);
	}
	while (r.p < r.end) {
		uint32_t f = 0;
		int      wt = 0;
		uint64_t v = 0;
		rd       b = { NULL, NULL };

		(void) rd_tag(&r, &f, &wt); /* send_scan checked the shape */
		if (wt == WT_LEN) {
			(void) rd_len(&r, &b);
			if (f == 1 && (s->name = a_string(ca, &b)) == NULL) {
				return (NULL);
			}
			if (f == 2 && !a_bytes(ca, &b, &s->data[s->n_data++])) {
				return (NULL);
			}
			if (f == 5 && (s->batch = batch_decode(ca, b)) == NULL) {
				return (NULL);
			}
			continue;
		}
		(void) rd_varint(&r, &v);
		if (f == 3) {
			s->has_timeout_ms = true; /* sint64: zigzag */
			s->timeout_ms = (int64_t) ((v >> 1) ^ (~(v & 1) + 1));
		} else {
			s->has_sender = true;
			s->sender = v;
		}
	}
	return (s);
}

/* Counts confirm and finds the one Send; false: not ours. */
static bool
request_scan(rd r, size_t *nconfirm, rd *send)
{
	size_t n = 0;
	bool   have = false;

	while (r.p < r.end) {
		uint32_t f;
		int      wt;
		uint64_t v;

		if (!rd_tag(&r, &f, &wt)) {
			return (false);
		}
		if ((f == 1 || f == 3) && wt == WT_VARINT) {
			if (!rd_varint(&r, &v)) {
				return (false);
			}
			n += f == 3;
		} else if (f == 2 && wt == WT_FIXED64) {
			if (!rd_fixed64(&r, &v)) {
				return (false);
			}
		} else if (f == F_REQ_SEND && wt == WT_LEN && !have) {
			if (!rd_len(&r, send)) {
				return (false);
			}
			have = true;
		} else {
			return (false); /* other ops, packed confirm, merges */
		}
	}
	*nconfirm = n;
	return (have);
}

static Chan__V1__Request *
request_fast(chl_capped_alloc *ca, rd r)
{
	Chan__V1__Request *q;
	size_t             n;
	rd                 send = { NULL, NULL };

	if (!request_scan(r, &n, &send) || (q = a_alloc(ca, sizeof(*q))) == NULL) {
		return (NULL);
	}
	chan__v1__request__init(q);
	if (n > 0 && (q->confirm = a_alloc(ca, n * sizeof(*q->confirm))) == NULL) {
		return (NULL);
	}
	while (r.p < r.end) {
		uint32_t f = 0;
		int      wt = 0;
		uint64_t v = 0;
		rd       b = { NULL, NULL };

		(void) rd_tag(&r, &f, &wt);
		if (f == F_REQ_SEND) {
			(void) rd_len(&r, &b);
			continue;
		}
		if (f == 2) {
			(void) rd_fixed64(&r, &v);
			q->has_client = true;
			q->client = v;
			continue;
		}
		(void) rd_varint(&r, &v);
		if (f == 1) {
			q->has_id = true;
			q->id = v;
		} else {
			q->confirm[q->n_confirm++] = v;
		}
	}
	if ((q->send = send_decode(ca, send)) == NULL) {
		return (NULL);
	}
	q->op_case = CHAN__V1__REQUEST__OP_SEND;
	return (q);
}

Chan__V1__Request *
chl_fast_request_decode(chl_capped_alloc *ca, const void *buf, size_t len)
{
	rd r = { buf, (const uint8_t *) buf + len };

	return (request_fast(ca, r));
}

/* ---- Response { id, status, error, delivery, recv } --------------------- */

#define F_RESP_RECV 16

/* One pass: anything unexpected gives up (the caller falls back). */
static Chan__V1__Message *
message_decode(chl_capped_alloc *ca, rd r)
{
	static const Chan__V1__Message init = CHAN__V1__MESSAGE__INIT;
	Chan__V1__Message             *m;

	if ((m = a_alloc(ca, sizeof(*m))) == NULL) {
		return (NULL);
	}
	*m = init;
	while (r.p < r.end) {
		uint32_t f;
		int      wt;
		uint64_t v;
		rd       b;

		if (!rd_tag(&r, &f, &wt)) {
			return (NULL);
		}
		if (wt == WT_LEN && (f == 1 || f == 4)) {
			if (!rd_len(&r, &b)) {
				return (NULL);
			}
			if (f == 1) {
				if ((m->channel = a_string(ca, &b)) == NULL) {
					return (NULL);
				}
			} else {
				if (!a_bytes(ca, &b, &m->data)) {
					return (NULL);
				}
				m->has_data = true;
			}
			continue;
		}
		if (wt != WT_VARINT || f < 2 || f == 4 || f > 5 ||
		    !rd_varint(&r, &v)) {
			return (NULL);
		}
		if (f == 2) {
			m->has_seq = true;
			m->seq = v;
		} else if (f == 3) {
			m->has_time_us = true;
			m->time_us = v;
		} else {
			m->has_redelivered = true;
			m->redelivered = v != 0;
		}
	}
	return (m);
}

static Chan__V1__RecvResult *
recv_decode(chl_capped_alloc *ca, rd r)
{
	Chan__V1__RecvResult *rr;
	size_t                n = 0;
	rd                    s = r, b = { NULL, NULL }, batch = { NULL, NULL };
	bool                  have = false;

	/* Field 1 (Message), length-prefixed: count them; field 2 once. */
	while (s.p < s.end) {
		uint32_t f;
		int      wt;

		if (!rd_tag(&s, &f, &wt) || (f != 1 && (f != 2 || have)) || wt != WT_LEN ||
		    !rd_len(&s, &b)) {
			return (NULL);
		}
		if (f == 2) {
			have = true;
			batch = b;
		}
		n += f == 1;
	}
	if ((rr = a_alloc(ca, sizeof(*rr))) == NULL) {
		return (NULL);
	}
	chan__v1__recv_result__init(rr);
	if (n > 0 && (rr->messages = a_alloc(ca, n * sizeof(*rr->messages))) == NULL) {
		return (NULL);
	}
	while (r.p < r.end) {
		uint32_t f = 0;
		int      wt = 0;

		(void) rd_tag(&r, &f, &wt);
		(void) rd_len(&r, &b);
		if (f == 2) {
			continue;
		}
		if ((rr->messages[rr->n_messages] = message_decode(ca, b)) == NULL) {
			return (NULL);
		}
		rr->n_messages++;
	}
	if (have && (rr->batch = batch_decode(ca, batch)) == NULL) {
		return (NULL);
	}
	return (rr);
}

static Chan__V1__Response *
response_fast(chl_capped_alloc *ca, rd r)
{
	Chan__V1__Response *a;
	rd                  recv = { NULL, NULL }, b;
	bool                have = false;

	if ((a = a_alloc(ca, sizeof(*a))) == NULL) {
		return (NULL);
	}
	chan__v1__response__init(a);
	while (r.p < r.end) {
		uint32_t f;
		int      wt;
		uint64_t v;

		if (!rd_tag(&r, &f, &wt)) {
			return (NULL);
		}
		if (f == F_RESP_RECV && wt == WT_LEN && !have) {
			if (!rd_len(&r, &recv)) {
				return (NULL);
			}
			have = true;
		} else if (f == 3 && wt == WT_LEN) {
			if (!rd_len(&r, &b) || (a->error = a_string(ca, &b)) == NULL) {
				return (NULL);
			}
		} else if ((f == 1 || f == 2 || f == 4) && wt == WT_VARINT) {
			if (!rd_varint(&r, &v)) {
				return (NULL);
			}
			if (f == 1) {
				a->has_id = true;
				a->id = v;
			} else if (f == 4) {
				a->has_delivery = true;
				a->delivery = v;
			} else if (v <= CHAN__V1__STATUS__PROTOCOL) {
				a->has_status = true;
				a->status = (Chan__V1__Status) v;
			} else {
				return (NULL); /* an unknown status: protobuf-c decides */
			}
		} else {
			return (NULL);
		}
	}
	if (!have || (a->recv = recv_decode(ca, recv)) == NULL) {
		return (NULL);
	}
	a->result_case = CHAN__V1__RESPONSE__RESULT_RECV;
	return (a);
}

Chan__V1__Response *
chl_fast_response_decode(chl_capped_alloc *ca, const void *buf, size_t len)
{
	rd r = { buf, (const uint8_t *) buf + len };

	return (response_fast(ca, r));
}
