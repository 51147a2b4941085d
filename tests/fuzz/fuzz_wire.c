/*
 * fuzz_wire.c - the hand decoders of lib/wire_fast.c against protobuf-c.
 *
 * The first input byte picks Request or Response; the rest is decoded
 * twice: by the fast path and by protobuf-c's generic unpacker. Whatever
 * the fast path accepts, protobuf-c must accept too and decode to the same
 * message (compared by packing both with protobuf-c); and an answer packed
 * by chl_packer must be byte for byte protobuf-c's. An answer whose
 * messages have the engine's shape is also packed in the batch form
 * (chl_packer_init(.., true)): protobuf-c must read that back as a Batch
 * that expands to exactly the same messages. Any difference aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FW_CAP (1u << 22)

static void
fw_die(const char *what)
{
	fprintf(stderr, "fuzz_wire: %s\n", what);
	abort();
}

static void
fw_same(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	if (al != bl || memcmp(a, b, al) != 0) {
		fw_die("fast and protobuf-c decodes differ");
	}
}

static void
fw_request(const uint8_t *buf, size_t len)
{
	chl_capped_alloc   fa, ga;
	Chan__V1__Request *f, *g;
	uint8_t           *fb, *gb;
	size_t             fl, gl;

	chl_capped_alloc_init(&fa, FW_CAP);
	chl_capped_alloc_init(&ga, FW_CAP);
	f = chl_fast_request_decode(&fa, buf, len);
	g = chan__v1__request__unpack(&ga.base, len, buf);
	if (f != NULL) {
		if (g == NULL) {
			fw_die("fast decode accepted a Request protobuf-c refuses");
		}
		fl = chan__v1__request__get_packed_size(f);
		gl = chan__v1__request__get_packed_size(g);
		fb = malloc(fl + 1);
		gb = malloc(gl + 1);
		if (fb == NULL || gb == NULL) {
			fw_die("out of memory");
		}
		chan__v1__request__pack(f, fb);
		chan__v1__request__pack(g, gb);
		fw_same(fb, fl, gb, gl);
		free(fb);
		free(gb);
	}
	chl_capped_alloc_release(&fa);
	chl_capped_alloc_release(&ga);
}

/* b (an answer's batch) expands to exactly ms[0..n). */
static void
fw_batch_is(const Chan__V1__Batch *b, Chan__V1__Message *const *ms, size_t n)
{
	char     why[256];
	uint64_t seq = 0, t = 0;
	size_t   off = 0, ri = 0;

	if (b == NULL || !chl_batch_check(b, true, why, sizeof(why))) {
		fw_die("the batch-form answer carries no valid batch");
	}
	if (b->n_sizes != n || b->n_seq_deltas != n || b->n_time_deltas != n) {
		fw_die("the batch-form answer has another message count");
	}
	for (size_t i = 0; i < n; i++) {
		const Chan__V1__Message *m = ms[i];
		size_t                   len = m->has_data ? m->data.len : 0;
		bool                     redel = ri < b->n_redelivered && b->redelivered[ri] == i;

		if (b->sizes[i] != len ||
		    (len > 0 && memcmp(b->data.data + off, m->data.data, len) != 0)) {
			fw_die("a batch-form payload differs");
		}
		off += len;
		seq += (uint64_t) b->seq_deltas[i];
		t += (uint64_t) b->time_deltas[i];
		if (seq != m->seq || t != m->time_us) {
			fw_die("a batch-form seq or time differs");
		}
		if (redel != (m->has_redelivered && m->redelivered)) {
			fw_die("a batch-form redelivered flag differs");
		}
		ri += redel;
	}
	if (ri != b->n_redelivered) {
		fw_die("the batch-form answer has stray redelivered indices");
	}
}

/*
 * g (decoded by protobuf-c) packed in the batch form reads back the same.
 * fast: the list form took the fast path, so the batch form must too.
 */
static void
fw_batch_answer(const Chan__V1__Response *g, bool fast)
{
	const Chan__V1__RecvResult *rr = g->recv;
	chl_capped_alloc            ga, fa;
	Chan__V1__Response         *h, *f;
	chl_packer                  pk;
	uint8_t                    *pb, *hb, *fb;
	size_t                      pl, hl, fl;

	if (g->result_case != CHAN__V1__RESPONSE__RESULT_RECV || rr == NULL ||
	    !chl_batch_fits_msgs(rr->messages, rr->n_messages)) {
		return;
	}
	pl = chl_packer_init(&pk, g, true);
	if (rr->batch == NULL && rr->base.n_unknown_fields == 0 && g->base.n_unknown_fields == 0 &&
	    !pk.batch) {
		fw_die("engine-shaped messages were not packed in the batch form");
	}
	if ((pb = malloc(pl + 1)) == NULL) {
		fw_die("out of memory");
	}
	if (chl_packer_write(&pk, pb) != pl) {
		fw_die("chl_packer (batch) wrote another size than it said");
	}
	chl_packer_fini(&pk);
	if (!pk.batch) {
		free(pb);
		return;
	}
	chl_capped_alloc_init(&ga, FW_CAP);
	if ((h = chan__v1__response__unpack(&ga.base, pl, pb)) == NULL) {
		fw_die("protobuf-c refuses a batch-form answer chl_packer wrote");
	}
	if (h->recv == NULL || h->recv->n_messages != 0 || h->has_id != g->has_id ||
	    h->id != g->id || h->status != g->status || h->delivery != g->delivery) {
		fw_die("the batch-form answer's head differs");
	}
	fw_batch_is(h->recv->batch, rr->messages, rr->n_messages);
	/* protobuf-c's order: its own packing of it is the same bytes. */
	hl = chan__v1__response__get_packed_size(h);
	if ((hb = malloc(hl + 1)) == NULL) {
		fw_die("out of memory");
	}
	chan__v1__response__pack(h, hb);
	fw_same(hb, hl, pb, pl);
	/* And the hand decoder takes it, reading the same. */
	chl_capped_alloc_init(&fa, FW_CAP);
	if ((f = chl_fast_response_decode(&fa, pb, pl)) == NULL) {
		if (fast) {
			fw_die("a batch-form answer chl_packer wrote missed the fast path");
		}
	} else {
		fl = chan__v1__response__get_packed_size(f);
		if ((fb = malloc(fl + 1)) == NULL) {
			fw_die("out of memory");
		}
		chan__v1__response__pack(f, fb);
		fw_same(fb, fl, pb, pl);
		free(fb);
	}
	free(hb);
	free(pb);
	chl_capped_alloc_release(&fa);
	chl_capped_alloc_release(&ga);
}

static void
fw_response(const uint8_t *buf, size_t len)
{
	chl_capped_alloc    fa, ga;
	Chan__V1__Response *f, *g;
	uint8_t            *fb, *gb, *pb;
	size_t              fl, gl, pl;
	chl_packer          pk;

	chl_capped_alloc_init(&fa, FW_CAP);
	chl_capped_alloc_init(&ga, FW_CAP);
	f = chl_fast_response_decode(&fa, buf, len);
	g = chan__v1__response__unpack(&ga.base, len, buf);
	if (f != NULL && g == NULL) {
		fw_die("fast decode accepted a Response protobuf-c refuses");
	}
	if (g != NULL) {
		/* The hand packer on whatever decoded: protobuf-c's bytes. */
		gl = chan__v1__response__get_packed_size(g);
		pl = chl_packer_init(&pk, g, false);
		gb = malloc(gl + 1);
		pb = malloc(pl + 1);
		if (gb == NULL || pb == NULL) {
			fw_die("out of memory");
		}
		chan__v1__response__pack(g, gb);
		if (chl_packer_write(&pk, pb) != pl) {
			fw_die("chl_packer wrote another size than it said");
		}
		chl_packer_fini(&pk);
		fw_same(pb, pl, gb, gl);
		if (f != NULL) {
			fl = chan__v1__response__get_packed_size(f);
			fb = malloc(fl + 1);
			if (fb == NULL) {
				fw_die("out of memory");
			}
			chan__v1__response__pack(f, fb);
			fw_same(fb, fl, gb, gl);
			free(fb);
		}
		free(gb);
		free(pb);
		fw_batch_answer(g, f != NULL);
	}
	chl_capped_alloc_release(&fa);
	chl_capped_alloc_release(&ga);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1) {
		return (0);
	}
	if (data[0] & 1) {
		fw_response(data + 1, size - 1);
	} else {
		fw_request(data + 1, size - 1);
	}
	return (0);
}
