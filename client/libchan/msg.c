/*
 * msg.c - received messages. The messages of one answer share one
 * allocation (header, name, payloads), freed when the last of them is:
 * one malloc and one free per answer instead of per message.
 */
#include "client.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct chan_msgblk {
	atomic_size_t       refs; /* messages of the block not freed yet */
	/* Batch form: the answer the payloads point into, and its arena
	 * (which holds the received nng message). NULL: payloads copied. */
	Chan__V1__Response *resp;
	chl_capped_alloc    alloc;
} chan_msgblk;

struct chan_msg {
	chan_msgblk *blk;
	uint64_t     seq;
	uint64_t     time_us;
	size_t       len;
	bool         redelivered;
	const char  *channel; /* points into the block */
	uint8_t     *data;    /* points into the block */
};

#define CHAN_ALIGN(n) (((n) + 15) & ~(size_t) 15)

/* Plain recv answers leave the name out: the caller named the channel. */
static const char *
chan_wire_name(const Chan__V1__Message *w, const char *asked)
{
	if (w->channel != NULL && w->channel[0] != '\0') {
		return (w->channel);
	}
	return (asked != NULL ? asked : "");
}

/* Whether a message needs its own copy of the name (not the answer's). */
static bool
chan_own_name(const char *ch, const char *asked)
{
	return (ch != asked && ch[0] != '\0');
}

chan_status
chan_msgs_from_wire(const Chan__V1__RecvResult *r, const char *asked, chan_msg **msgs)
{
	const char    *shared = asked != NULL ? asked : "";
	size_t         shlen = strlen(shared), size = CHAN_ALIGN(sizeof(chan_msgblk) + shlen + 1);
	chan_msgblk   *b;
	unsigned char *p;

	for (size_t i = 0; i < r->n_messages; i++) {
		const Chan__V1__Message *w = r->messages[i];
		const char              *ch = chan_wire_name(w, asked);
		size_t                   len = w->has_data ? w->data.len : 0;

		size += CHAN_ALIGN(sizeof(chan_msg) + len + (chan_own_name(ch, asked) ? strlen(ch) + 1 : 0));
	}
	if ((b = malloc(size)) == NULL) {
		return (CHAN_RESOURCE_EXHAUSTED);
	}
	atomic_init(&b->refs, r->n_messages);
	b->resp = NULL;
	p = (unsigned char *) (b + 1);
	memcpy(p, shared, shlen + 1);
	shared = (const char *) p;
	p = (unsigned char *) b + CHAN_ALIGN(sizeof(chan_msgblk) + shlen + 1);
	for (size_t i = 0; i < r->n_messages; i++) {
		const Chan__V1__Message *w = r->messages[i];
		const char              *ch = chan_wire_name(w, asked);
		size_t                   len = w->has_data ? w->data.len : 0;
		chan_msg                *m = (chan_msg *) p;

		m->blk = b;
		m->seq = w->seq;
		m->time_us = w->time_us;
		m->redelivered = w->has_redelivered && w->redelivered;
		m->len = len;
		m->data = (uint8_t *) (m + 1);
		if (len > 0) {
			memcpy(m->data, w->data.data, len);
		}
		if (!chan_own_name(ch, asked)) {
			m->channel = shared;
			p += CHAN_ALIGN(sizeof(*m) + len);
		} else {
			size_t chlen = strlen(ch);

			memcpy(m->data + len, ch, chlen + 1);
			m->channel = (const char *) m->data + len;
			p += CHAN_ALIGN(sizeof(*m) + len + chlen + 1);
		}
		msgs[i] = m;
	}
	return (CHAN_OK);
}

chan_status
chan_msgs_from_batch(chan_exchange *x, const char *asked, chan_msg **msgs)
{
	const Chan__V1__Batch *w = x->resp->recv->batch;
	size_t                 n = w->n_sizes, nlen = strlen(asked);
	size_t                 head = CHAN_ALIGN(sizeof(chan_msgblk) + nlen + 1);
	chan_msgblk           *b;
	chan_msg              *m;
	char                  *name;
	uint64_t               seq = 0, t = 0;
	size_t                 off = 0, ri = 0;

	if ((b = malloc(head + n * sizeof(*m))) == NULL) {
		return (CHAN_RESOURCE_EXHAUSTED);
	}
	atomic_init(&b->refs, n);
	name = (char *) (b + 1);
	memcpy(name, asked, nlen + 1);
	m = (chan_msg *) ((unsigned char *) b + head);
	for (size_t i = 0; i < n; i++, m++) {
		m->blk = b;
		m->len = w->sizes[i];
		/* chl_batch_check: within the data (NULL when all are empty). */
		m->data = w->data.data != NULL ? w->data.data + off : (uint8_t *) name + nlen;
		off += m->len;
		seq += w->n_seq_deltas > 0 ? (uint64_t) w->seq_deltas[i] : 0;
		t += w->n_time_deltas > 0 ? (uint64_t) w->time_deltas[i] : 0;
		m->seq = seq;
		m->time_us = t;
		m->redelivered = ri < w->n_redelivered && w->redelivered[ri] == i;
		ri += m->redelivered;
		m->channel = name;
		msgs[i] = m;
	}
	/* The payloads point into the answer: the block keeps it. */
	b->resp = x->resp;
	b->alloc = x->alloc;
	b->alloc.base.allocator_data = &b->alloc;
	x->resp = NULL;
	chl_capped_alloc_init(&x->alloc, 0);
	return (CHAN_OK);
}

const void *
chan_msg_data(const chan_msg *m)
{
	return (m->data);
}

size_t
chan_msg_len(const chan_msg *m)
{
	return (m->len);
}

uint64_t
chan_msg_seq(const chan_msg *m)
{
	return (m->seq);
}

uint64_t
chan_msg_time_us(const chan_msg *m)
{
	return (m->time_us);
}

const char *
chan_msg_channel(const chan_msg *m)
{
	return (m->channel);
}

bool
chan_msg_redelivered(const chan_msg *m)
{
	return (m->redelivered);
}

void
chan_msg_free(chan_msg *m)
{
	if (m != NULL && atomic_fetch_sub(&m->blk->refs, 1) == 1) {
		chl_response_free(&m->blk->alloc, m->blk->resp);
		free(m->blk);
	}
}
