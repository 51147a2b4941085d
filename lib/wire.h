/*
 * wire.h - protobuf-c helpers shared by daemon and client.
 *
 * Decoding goes through a capped allocator: one decode may allocate at most
 * `cap` bytes in total, so no input can make either side allocate more than
 * that (protobuf-c itself trusts declared lengths).
 */
#ifndef CHL_WIRE_H
#define CHL_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "chan.pb-c.h"

#define CHL_PROTOCOL_VERSION 1

/*
 * A ProtobufCAllocator that fails once `cap` bytes are in use. It is an
 * arena: one decode allocates from a few growing blocks (a Send of 1,024
 * messages would otherwise cost 1,024+ mallocs and as many frees), and
 * the matching chl_*_free releases them all at once.
 *
 * The struct may be copied by value to move a decoded message to a new
 * owner (fix base.allocator_data to the copy); the old copy must then not
 * be freed with a message.
 */
typedef struct chl_capped_alloc {
	ProtobufCAllocator base; /* pass &ca->base to protobuf-c */
	size_t             cap;
	size_t             used;  /* bytes handed out (the cap's count) */
	void              *blocks; /* the arena's blocks, newest first */
	unsigned char     *cur;   /* free space of the newest block */
	size_t             left;
	/* The input buffer, kept (see chl_capped_alloc_borrow); NULL: none. */
	void             (*input_free)(void *);
	void              *input;
	/* Where the input's bytes are (chl_capped_alloc_input_bytes); NULL: unknown. */
	const uint8_t     *input_bytes;
	size_t             input_len;
} chl_capped_alloc;

void chl_capped_alloc_init(chl_capped_alloc *ca, size_t cap);
/*
 * Hands the input buffer's owner (input, freed with input_free) to ca
 * before a decode: the hand decoders then point bytes fields into the
 * input instead of copying them (one copy of every payload less), and ca
 * frees the input when it gives the decoded message back (or when the
 * decode fails). ca owns input from this call on, whatever happens.
 */
void chl_capped_alloc_borrow(chl_capped_alloc *ca, void *input, void (*input_free)(void *));
/*
 * Tells ca where the borrowed input's bytes are, so that a new owner can
 * tell which decoded fields point into them (chl_capped_alloc_in_input)
 * and keep the input past the decoded message (chl_capped_alloc_take_input).
 */
void chl_capped_alloc_input_bytes(chl_capped_alloc *ca, const void *bytes, size_t len);
/*
 * Whether p[0..len) lies in the borrowed input's bytes (still true after
 * chl_capped_alloc_take_input: the bytes are where they were).
 */
static inline bool
chl_capped_alloc_in_input(const chl_capped_alloc *ca, const void *p, size_t len)
{
	const uint8_t *b = ca->input_bytes, *q = p;

	return (b != NULL && q >= b && len <= ca->input_len &&
	    (size_t) (q - b) <= ca->input_len - len);
}
/*
 * Takes the borrowed input over: ca no longer frees it, and the caller
 * must free it (*input_free)(*input) once nothing points into it any
 * more; the decoded message's bytes fields may still point there. false:
 * ca has no input.
 */
bool chl_capped_alloc_take_input(chl_capped_alloc *ca, void **input, void (**input_free)(void *));
/* Gives an input taken with chl_capped_alloc_take_input back to ca. */
void chl_capped_alloc_return_input(chl_capped_alloc *ca, void *input, void (*input_free)(void *));
/* Gives back everything allocated through ca (after a decode that failed). */
void chl_capped_alloc_release(chl_capped_alloc *ca);

/*
 * Decodes one Request / Response from buf[0..len). NULL when the bytes do
 * not decode or the cap is passed (nothing stays allocated then). Free
 * with the matching free function and the same allocator: that releases
 * the allocator's arena (r NULL: nothing happens).
 */
Chan__V1__Request  *chl_request_decode(chl_capped_alloc *ca, const void *buf, size_t len);
void                chl_request_free(chl_capped_alloc *ca, Chan__V1__Request *r);
Chan__V1__Response *chl_response_decode(chl_capped_alloc *ca, const void *buf, size_t len);
void                chl_response_free(chl_capped_alloc *ca, Chan__V1__Response *r);

/*
 * The hand decoders behind chl_request_decode (a Request carrying a Send)
 * and chl_response_decode (a Response carrying a RecvResult), exposed for
 * the tests: NULL means "not handled here" (any other message, or input
 * they do not expect) and may leave arena allocations behind; the decode
 * functions then release them and use protobuf-c.
 */
Chan__V1__Request  *chl_fast_request_decode(chl_capped_alloc *ca, const void *buf, size_t len);
Chan__V1__Response *chl_fast_response_decode(chl_capped_alloc *ca, const void *buf, size_t len);

/* The encoded sizes of a Batch's fields (lib/wire_batch.c). */
typedef struct chl_batch_layout {
	size_t data, sizes, seqs, times, redel; /* each field's payload bytes */
	size_t body;                            /* the whole Batch, encoded */
	bool   answer;                          /* seqs, times, redel written */
} chl_batch_layout;

/*
 * Packs a Response exactly as chan__v1__response__pack would (the same
 * bytes), but answers carrying messages (RecvResult) are written by hand:
 * protobuf-c's generic packer walks every Message twice (size, then
 * bytes) through its descriptors, which was a third of the daemon's
 * instructions for a batch. init returns the packed size (each message
 * sized once), write fills out (that many bytes) and returns it, fini
 * frees the packer's scratch. r must not change in between.
 */
#define CHL_PACKER_SMALL 64
typedef struct chl_packer {
	const Chan__V1__Response *r;
	Chan__V1__Response        head; /* r without its result */
	bool                      fast;
	bool                      batch; /* RecvResult.batch written instead */
	chl_batch_layout          lay;   /* when batch */
	size_t                    body, total;
	uint32_t                 *sizes; /* per message; NULL: out of memory */
	uint32_t                  small[CHL_PACKER_SMALL];
} chl_packer;

/*
 * batch: the asker wants the batch form (Recv.batch): a RecvResult whose
 * messages are all of the shape chand's engine builds for a plain Recv (no
 * channel name, seq and time set) is written as RecvResult.batch instead
 * of RecvResult.messages. Anything else is written as without it.
 */
size_t chl_packer_init(chl_packer *pk, const Chan__V1__Response *r, bool batch);
size_t chl_packer_write(chl_packer *pk, uint8_t *out);
void   chl_packer_fini(chl_packer *pk);

/*
 * The batch form (chan.v1.Batch; lib/wire_batch.c).
 *
 * chl_batch_check: whether b is consistent (at least one size, sizes
 * adding up to the data; for an answer, deltas one per message or none,
 * redelivered indices increasing and in range; for a send, data and sizes
 * only). false: why is said in why[whylen].
 *
 * chl_send_unbatch: a Send that came with `batch` gets its messages in
 * `data` (pointing into the batch's bytes, the array from ca) and batch
 * NULL, as if it had come in the list form; true too when it has no
 * batch. false: the send is not acceptable (both forms, or the check
 * above failed, or out of memory), why says which.
 */
bool   chl_batch_check(const Chan__V1__Batch *b, bool answer, char *why, size_t whylen);
bool   chl_send_unbatch(chl_capped_alloc *ca, Chan__V1__Send *s, char *why, size_t whylen);
/* Whether messages ms[0..n) can go out in the batch form (see above). */
bool     chl_batch_fits_msgs(Chan__V1__Message *const *ms, size_t n);
/*
 * The Batch (its fields, no tag of its own) for ms[0..n): layout (false:
 * they do not fit the batch form, as chl_batch_fits_msgs), then bytes.
 */
bool     chl_batch_layout_msgs(chl_batch_layout *l, Chan__V1__Message *const *ms, size_t n);
uint8_t *chl_batch_write_msgs(uint8_t *p, const chl_batch_layout *l,
    Chan__V1__Message *const *ms, size_t n);
/*
 * A Request packed as chan__v1__request__pack would, except that with
 * batch a Send's messages (Send.data) are written as Send.batch. lay (may
 * be NULL) carries the batch's layout from the size call to the pack
 * call, so the messages are walked once less; q must not change between.
 */
size_t chl_request_packed_size(const Chan__V1__Request *q, bool batch, chl_batch_layout *lay);
size_t chl_request_pack(const Chan__V1__Request *q, bool batch, const chl_batch_layout *lay,
    uint8_t *out);
/*
 * chl_request_pack of a Send in the batch form, less its payloads, for a
 * caller that writes them from where they lie (a producer's arena, with
 * writev): out gets the rest, and *split says where in it the payloads go,
 * back to back (lay->data bytes). Returns what out got: the packed size
 * minus lay->data; 0 when q is not a Send this form can carry (then pack
 * it whole). lay: as chl_request_packed_size(q, true, lay) filled it.
 */
size_t chl_request_pack_gather(const Chan__V1__Request *q, const chl_batch_layout *lay,
    uint8_t *out, size_t *split);

/* Wall clock in Unix microseconds, and a monotonic clock in ms. */
uint64_t chl_now_unix_us(void);
int64_t  chl_now_mono_ms(void);

#endif
