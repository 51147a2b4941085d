/*
 * batch_emit.h - laying out and writing a chan.v1.Batch (an answer's) from
 * any sequence of messages: chl_packer's Response.messages (lib/wire.c)
 * and chand's queue itself (daemon/channel.c), which then needs no
 * Message structs in between (for 8,192 small messages those were ~700
 * KiB written and read twice per answer).
 *
 * The caller passes its own `next` function, which these static inline
 * functions call once per message and pass; with a constant function the
 * compiler inlines it, so there is no call per message.
 */
#ifndef CHL_BATCH_EMIT_H
#define CHL_BATCH_EMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "varint.h"
#include "wire.h"

/* One message as a batch sees it. */
typedef struct chl_bitem {
	const uint8_t *data;
	size_t         len;
	uint64_t       seq, time_us;
	bool           redelivered;
} chl_bitem;

/* Fills *m with the next message of it; false: it cannot go in a batch. */
typedef bool (*chl_bnext_fn)(void *it, chl_bitem *m);

/* The Batch's size from its fields' payload sizes (l->data ... l->redel). */
static inline size_t
chl_batch_body_size(chl_batch_layout *l)
{
	l->body = chl_len_field_size(l->data) + chl_len_field_size(l->sizes);
	if (l->answer) {
		l->body += chl_len_field_size(l->seqs) +
		    chl_len_field_size(l->times);
		if (l->redel > 0) {
			l->body += chl_len_field_size(l->redel);
		}
	}
	return (l->body);
}

/* The layout of an answer's Batch of n messages from next(it). */
static inline __attribute__((always_inline)) bool
chl_batch_plan(chl_batch_layout *l, chl_bnext_fn next, void *it, size_t n)
{
	uint64_t  pseq = 0, ptime = 0;
	chl_bitem m = { NULL, 0, 0, 0, false };

	memset(l, 0, sizeof(*l));
	l->answer = true;
	for (size_t i = 0; i < n; i++) {
		if (!next(it, &m) || m.len > UINT32_MAX) {
			return (false);
		}
		l->data += m.len;
		l->sizes += chl_varint_size(m.len);
		l->seqs += chl_varint_size(chl_zigzag((int64_t) (m.seq - pseq)));
		l->times += chl_varint_size(
		    chl_zigzag((int64_t) (m.time_us - ptime)));
		if (m.redelivered) {
			l->redel += chl_varint_size(i);
		}
		pseq = m.seq;
		ptime = m.time_us;
	}
	chl_batch_body_size(l);
	return (n > 0);
}

/* A length-delimited field's tag and length; returns where its bytes go. */
static inline uint8_t *
chl_put_len_head(uint8_t *p, uint32_t field, size_t len)
{
	p = chl_put_tag(p, field, CHL_WT_LEN);
	return (chl_put_varint(p, len));
}

/*
 * Writes the Batch's fields (no tag of its own) laid out by chl_batch_plan
 * from the same n messages, in protobuf-c's field order, each placed from
 * the layout and all filled in one pass. Returns the end.
 */
static inline __attribute__((always_inline)) uint8_t *
chl_batch_emit(uint8_t *p, const chl_batch_layout *l, chl_bnext_fn next,
    void *it, size_t n)
{
	uint8_t  *data, *sizes, *seqs, *times, *redel = NULL;
	uint64_t  pseq = 0, ptime = 0;
	chl_bitem m = { NULL, 0, 0, 0, false };

	data = chl_put_len_head(p, 1, l->data);
	sizes = chl_put_len_head(data + l->data, 2, l->sizes);
	seqs = chl_put_len_head(sizes + l->sizes, 3, l->seqs);
	times = chl_put_len_head(seqs + l->seqs, 4, l->times);
	p = times + l->times;
	if (l->redel > 0) {
		redel = chl_put_len_head(p, 5, l->redel);
		p = redel + l->redel;
	}
	for (size_t i = 0; i < n; i++) {
		(void) next(it, &m); /* the plan saw every one pass */
		if (m.len > 0) {
			memcpy(data, m.data, m.len);
			data += m.len;
		}
		sizes = chl_put_varint(sizes, m.len);
		seqs = chl_put_varint(seqs, chl_zigzag((int64_t) (m.seq - pseq)));
		times = chl_put_varint(
		    times, chl_zigzag((int64_t) (m.time_us - ptime)));
		if (redel != NULL && m.redelivered) {
			redel = chl_put_varint(redel, i);
		}
		pseq = m.seq;
		ptime = m.time_us;
	}
	return (p);
}

#endif
