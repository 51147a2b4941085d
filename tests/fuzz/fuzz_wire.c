/*
 * fuzz_wire.c - the hand decoders of lib/wire_fast.c against protobuf-c.
 *
 * The first input byte picks Request or Response; the rest is decoded
 * twice: by the fast path and by protobuf-c's generic unpacker. Whatever
 * the fast path accepts, protobuf-c must accept too and decode to the same
 * message (compared by packing both with protobuf-c); and an answer packed
 * by chl_packer must be byte for byte protobuf-c's. Any difference aborts.
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
