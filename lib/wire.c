/* wire.c - capped protobuf-c decoding and the clocks. */
#include "wire.h"

#include "varint.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * Arena blocks: a small first one (most requests are a name and a few
 * numbers), then each at least twice the last, so a decode of n bytes
 * needs O(log n) mallocs. Nothing is freed one by one: protobuf-c's free
 * calls are no-ops, and the whole arena goes at chl_*_free.
 */
#define CHL_ARENA_FIRST 1024

typedef struct chl_ablock {
	struct chl_ablock *next;
	size_t             size;
	_Alignas(16) unsigned char mem[];
} chl_ablock;

static void *
chl_capped_alloc_fn(void *data, size_t size)
{
	chl_capped_alloc *ca = data;
	chl_ablock       *b, *last = ca->blocks;
	size_t            need = (size + 15) & ~(size_t) 15;
	void             *p;

	if (size > ca->cap || ca->used > ca->cap - size || need < size) {
		return (NULL);
	}
	if (need > ca->left) {
		size_t bs = last != NULL ? last->size * 2 : CHL_ARENA_FIRST;

		if (bs < need) {
			bs = need;
		}
		if ((b = malloc(sizeof(*b) + bs)) == NULL) {
			return (NULL);
		}
		b->next = last;
		b->size = bs;
		ca->blocks = b;
		ca->cur = b->mem;
		ca->left = bs;
	}
	p = ca->cur;
	ca->cur += need;
	ca->left -= need;
	ca->used += size;
	return (p);
}

static void
chl_capped_free_fn(void *data, void *ptr)
{
	/* The arena gives everything back at once (chl_capped_alloc_release). */
	(void) data;
	(void) ptr;
}

void
chl_capped_alloc_init(chl_capped_alloc *ca, size_t cap)
{
	ca->base.alloc = chl_capped_alloc_fn;
	ca->base.free = chl_capped_free_fn;
	ca->base.allocator_data = ca;
	ca->cap = cap;
	ca->used = 0;
	ca->blocks = NULL;
	ca->cur = NULL;
	ca->left = 0;
	ca->input_free = NULL;
	ca->input = NULL;
	ca->input_bytes = NULL;
	ca->input_len = 0;
}

void
chl_capped_alloc_borrow(chl_capped_alloc *ca, void *input, void (*input_free)(void *))
{
	ca->input = input;
	ca->input_free = input_free;
}

void
chl_capped_alloc_input_bytes(chl_capped_alloc *ca, const void *bytes, size_t len)
{
	ca->input_bytes = bytes;
	ca->input_len = len;
}

bool
chl_capped_alloc_take_input(chl_capped_alloc *ca, void **input, void (**input_free)(void *))
{
	if (ca->input_free == NULL) {
		return (false);
	}
	*input = ca->input;
	*input_free = ca->input_free;
	ca->input = NULL;
	ca->input_free = NULL;
	return (true);
}

void
chl_capped_alloc_return_input(chl_capped_alloc *ca, void *input, void (*input_free)(void *))
{
	ca->input = input;
	ca->input_free = input_free;
}

/* The arena's blocks only: the input stays for a second decode attempt. */
static void
chl_arena_reset(chl_capped_alloc *ca)
{
	chl_ablock *b, *next;

	for (b = ca->blocks; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	ca->blocks = NULL;
	ca->cur = NULL;
	ca->left = 0;
	ca->used = 0;
}

void
chl_capped_alloc_release(chl_capped_alloc *ca)
{
	chl_arena_reset(ca);
	if (ca->input_free != NULL) {
		ca->input_free(ca->input);
	}
	ca->input_free = NULL;
	ca->input = NULL;
	ca->input_bytes = NULL;
	ca->input_len = 0;
}

Chan__V1__Request *
chl_request_decode(chl_capped_alloc *ca, const void *buf, size_t len)
{
	Chan__V1__Request *r;

	if ((r = chl_fast_request_decode(ca, buf, len)) != NULL) {
		return (r);
	}
	chl_arena_reset(ca); /* whatever the fast path allocated */
	if ((r = chan__v1__request__unpack(&ca->base, len, buf)) == NULL) {
		chl_capped_alloc_release(ca);
	}
	return (r);
}

void
chl_request_free(chl_capped_alloc *ca, Chan__V1__Request *r)
{
	if (r != NULL) {
		chl_capped_alloc_release(ca);
	}
}

Chan__V1__Response *
chl_response_decode(chl_capped_alloc *ca, const void *buf, size_t len)
{
	Chan__V1__Response *r;

	if ((r = chl_fast_response_decode(ca, buf, len)) != NULL) {
		return (r);
	}
	chl_arena_reset(ca);
	if ((r = chan__v1__response__unpack(&ca->base, len, buf)) == NULL) {
		chl_capped_alloc_release(ca);
	}
	return (r);
}

void
chl_response_free(chl_capped_alloc *ca, Chan__V1__Response *r)
{
	if (r != NULL) {
		chl_capped_alloc_release(ca);
	}
}

/* ---- fast packing of answers that carry messages ------------------------ */

#define CHL_F_RECV    16 /* Response.recv */

static size_t
chl_msg_body_size(const Chan__V1__Message *m)
{
	size_t n = 0;

	if (m->channel != NULL) {
		size_t l = strlen(m->channel);
		n += 1 + chl_varint_size(l) + l;
	}
	if (m->has_seq) {
		n += 1 + chl_varint_size(m->seq);
	}
	if (m->has_time_us) {
		n += 1 + chl_varint_size(m->time_us);
	}
	if (m->has_data) {
		n += 1 + chl_varint_size(m->data.len) + m->data.len;
	}
	if (m->has_redelivered) {
		n += 2;
	}
	return (n);
}

static uint8_t *
chl_put_msg(uint8_t *p, const Chan__V1__Message *m, size_t body)
{
	p = chl_put_tag(p, 1, CHL_WT_LEN);
	p = chl_put_varint(p, body);
	if (m->channel != NULL) {
		size_t l = strlen(m->channel);
		p = chl_put_tag(p, 1, CHL_WT_LEN);
		p = chl_put_varint(p, l);
		memcpy(p, m->channel, l);
		p += l;
	}
	if (m->has_seq) {
		*p++ = (2 << 3) | CHL_WT_VARINT;
		p = chl_put_varint(p, m->seq);
	}
	if (m->has_time_us) {
		*p++ = (3 << 3) | CHL_WT_VARINT;
		p = chl_put_varint(p, m->time_us);
	}
	if (m->has_data) {
		*p++ = (4 << 3) | CHL_WT_LEN;
		p = chl_put_varint(p, m->data.len);
		if (m->data.len > 0) {
			memcpy(p, m->data.data, m->data.len);
		}
		p += m->data.len;
	}
	if (m->has_redelivered) {
		*p++ = (5 << 3) | CHL_WT_VARINT;
		*p++ = m->redelivered ? 1 : 0;
	}
	return (p);
}

/* The Response without its result: what protobuf-c packs before field 16. */
static Chan__V1__Response
chl_head_of(const Chan__V1__Response *r)
{
	Chan__V1__Response h = *r;

	h.result_case = CHAN__V1__RESPONSE__RESULT__NOT_SET;
	return (h);
}

static bool
chl_fast(const Chan__V1__Response *r)
{
	/* Unknown fields would go after the result: leave those to protobuf-c. */
	return (r->result_case == CHAN__V1__RESPONSE__RESULT_RECV &&
	    r->recv != NULL && r->recv->base.n_unknown_fields == 0 &&
	    r->recv->batch == NULL && r->base.n_unknown_fields == 0);
}

/* RecvResult { batch = 2 } around the Batch of pk->lay (laid out). */
static size_t
chl_packer_init_batch(chl_packer *pk, const Chan__V1__Response *r)
{
	size_t b = pk->lay.body;

	pk->batch = true;
	pk->head = chl_head_of(r);
	pk->body = 1 + chl_varint_size(b) + b;
	pk->total = chan__v1__response__get_packed_size(&pk->head) +
	    chl_varint_size((uint64_t) CHL_F_RECV << 3) + chl_varint_size(pk->body) + pk->body;
	return (pk->total);
}

size_t
chl_packer_init(chl_packer *pk, const Chan__V1__Response *r, bool batch)
{
	size_t n, body = 0;

	pk->r = r;
	pk->sizes = NULL;
	pk->batch = false;
	if (!(pk->fast = chl_fast(r))) {
		return (pk->total = chan__v1__response__get_packed_size(r));
	}
	if (batch && chl_batch_layout_msgs(&pk->lay, r->recv->messages, r->recv->n_messages)) {
		return (chl_packer_init_batch(pk, r));
	}
	/* Each message's size once: the write pass needs it for its prefix. */
	n = r->recv->n_messages;
	pk->sizes = n <= CHL_PACKER_SMALL ? pk->small : malloc(n * sizeof(*pk->sizes));
	for (size_t i = 0; i < n; i++) {
		size_t b;

		if (r->recv->messages[i]->base.n_unknown_fields != 0) {
			/* Not from chand's engine (a decoded answer): generic. */
			chl_packer_fini(pk);
			pk->fast = false;
			return (pk->total = chan__v1__response__get_packed_size(r));
		}
		b = chl_msg_body_size(r->recv->messages[i]);
		if (pk->sizes != NULL) {
			pk->sizes[i] = (uint32_t) b; /* a message is far below 4 GiB */
		}
		body += 1 + chl_varint_size(b) + b;
	}
	pk->head = chl_head_of(r);
	pk->body = body;
	pk->total = chan__v1__response__get_packed_size(&pk->head) +
	    chl_varint_size((uint64_t) CHL_F_RECV << 3) + chl_varint_size(body) + body;
	return (pk->total);
}

size_t
chl_packer_write(chl_packer *pk, uint8_t *out)
{
	const Chan__V1__RecvResult *rr;
	uint8_t                    *p;

	if (!pk->fast) {
		return (chan__v1__response__pack(pk->r, out));
	}
	rr = pk->r->recv;
	p = out + chan__v1__response__pack(&pk->head, out);
	p = chl_put_tag(p, CHL_F_RECV, CHL_WT_LEN);
	p = chl_put_varint(p, pk->body);
	if (pk->batch) {
		p = chl_put_tag(p, 2, CHL_WT_LEN);
		p = chl_put_varint(p, pk->lay.body);
		p = chl_batch_write_msgs(p, &pk->lay, rr->messages, rr->n_messages);
		return ((size_t) (p - out));
	}
	for (size_t i = 0; i < rr->n_messages; i++) {
		const Chan__V1__Message *m = rr->messages[i];

		/* Sizes are recomputed only if the array could not be had. */
		p = chl_put_msg(p, m, pk->sizes != NULL ? pk->sizes[i] : chl_msg_body_size(m));
	}
	return ((size_t) (p - out));
}

void
chl_packer_fini(chl_packer *pk)
{
	if (pk->sizes != NULL && pk->sizes != pk->small) {
		free(pk->sizes);
	}
	pk->sizes = NULL;
}

uint64_t
chl_now_unix_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u);
}

int64_t
chl_now_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}
