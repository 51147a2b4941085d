/* wire.c - capped protobuf-c decoding and the clocks. */
#include "wire.h"

#include <stdlib.h>
#include <time.h>

/*
 * Each block carries its size in front, so free can give the bytes back to
 * the budget (ProtobufCAllocator.free is not told the size).
 */
typedef struct {
	size_t size;
	size_t pad_; /* keeps the payload 16-byte aligned */
} chl_block;

static void *
chl_capped_alloc_fn(void *data, size_t size)
{
	chl_capped_alloc *ca = data;
	chl_block        *b;

	if (size > ca->cap || ca->used > ca->cap - size) {
		return (NULL);
	}
	if ((b = malloc(sizeof(*b) + size)) == NULL) {
		return (NULL);
	}
	b->size = size;
	ca->used += size;
	return (b + 1);
}

static void
chl_capped_free_fn(void *data, void *ptr)
{
	chl_capped_alloc *ca = data;
	chl_block        *b;

	if (ptr == NULL) {
		return;
	}
	b = (chl_block *) ptr - 1;
	ca->used -= b->size;
	free(b);
}

void
chl_capped_alloc_init(chl_capped_alloc *ca, size_t cap)
{
	ca->base.alloc = chl_capped_alloc_fn;
	ca->base.free = chl_capped_free_fn;
	ca->base.allocator_data = ca;
	ca->cap = cap;
	ca->used = 0;
}

Chan__V1__Request *
chl_request_decode(chl_capped_alloc *ca, const void *buf, size_t len)
{
	return (chan__v1__request__unpack(&ca->base, len, buf));
}

void
chl_request_free(chl_capped_alloc *ca, Chan__V1__Request *r)
{
	if (r != NULL) {
		chan__v1__request__free_unpacked(r, &ca->base);
	}
}

Chan__V1__Response *
chl_response_decode(chl_capped_alloc *ca, const void *buf, size_t len)
{
	return (chan__v1__response__unpack(&ca->base, len, buf));
}

void
chl_response_free(chl_capped_alloc *ca, Chan__V1__Response *r)
{
	if (r != NULL) {
		chan__v1__response__free_unpacked(r, &ca->base);
	}
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
