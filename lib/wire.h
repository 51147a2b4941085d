/*
 * wire.h - protobuf-c helpers shared by daemon and client.
 *
 * Decoding goes through a capped allocator: one decode may allocate at most
 * `cap` bytes in total, so no input can make either side allocate more than
 * that (protobuf-c itself trusts declared lengths).
 */
#ifndef CHL_WIRE_H
#define CHL_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "chan.pb-c.h"

#define CHL_PROTOCOL_VERSION 1

/* A ProtobufCAllocator that fails once `cap` bytes are in use. */
typedef struct chl_capped_alloc {
	ProtobufCAllocator base; /* pass &ca->base to protobuf-c */
	size_t             cap;
	size_t             used;
} chl_capped_alloc;

void chl_capped_alloc_init(chl_capped_alloc *ca, size_t cap);

/*
 * Decodes one Request / Response from buf[0..len). NULL when the bytes do
 * not decode or the cap is passed. Free with the matching free function and
 * the same allocator.
 */
Chan__V1__Request  *chl_request_decode(chl_capped_alloc *ca, const void *buf, size_t len);
void                chl_request_free(chl_capped_alloc *ca, Chan__V1__Request *r);
Chan__V1__Response *chl_response_decode(chl_capped_alloc *ca, const void *buf, size_t len);
void                chl_response_free(chl_capped_alloc *ca, Chan__V1__Response *r);

/* Wall clock in Unix microseconds, and a monotonic clock in ms. */
uint64_t chl_now_unix_us(void);
int64_t  chl_now_mono_ms(void);

#endif
