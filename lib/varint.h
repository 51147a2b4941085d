/*
 * varint.h - protobuf's base-128 varints and zigzag, for the hand-written
 * packers (lib/wire.c, lib/wire_batch.c). Internal to lib/.
 */
#ifndef CHL_VARINT_H
#define CHL_VARINT_H

#include <stddef.h>
#include <stdint.h>

#define CHL_WT_VARINT 0
#define CHL_WT_LEN    2

/* 7 bits per byte: 1 byte for v < 2^7, ..., 10 for v >= 2^63. */
static inline size_t
chl_varint_size(uint64_t v)
{
	int bits = 64 - __builtin_clzll(v | 1);

	return ((size_t)(bits + 6) / 7);
}

static inline uint8_t *
chl_put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return (p);
}

/* Tags of fields 1..15 are one byte; Response.recv (16) is two. */
static inline uint8_t *
chl_put_tag(uint8_t *p, uint32_t field, int wt)
{
	return (chl_put_varint(p, ((uint64_t)field << 3) | (uint64_t)wt));
}

/* sint64 on the wire. */
static inline uint64_t
chl_zigzag(int64_t v)
{
	return (((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static inline int64_t
chl_unzigzag(uint64_t v)
{
	return ((int64_t)((v >> 1) ^ (~(v & 1) + 1)));
}

/* A length-delimited field of n bytes: tag, length, bytes. */
static inline size_t
chl_len_field_size(size_t n)
{
	return (1 + chl_varint_size(n) + n);
}

#endif
