/* msg.c - received messages: one allocation holding header, name and payload. */
#include "client.h"

#include <stdlib.h>
#include <string.h>

struct chan_msg {
	uint64_t seq;
	uint64_t time_us;
	size_t   len;
	bool     redelivered;
	char    *channel; /* points into the same block */
	uint8_t *data;    /* points into the same block */
};

chan_msg *
chan_msg_from_wire(const Chan__V1__Message *w, const char *asked)
{
	/* Plain recv answers leave the name out: the caller named the channel. */
	const char *ch = w->channel != NULL && w->channel[0] != '\0' ? w->channel
	    : asked != NULL ? asked : "";
	size_t      chlen = strlen(ch);
	size_t      len = w->has_data ? w->data.len : 0;
	chan_msg   *m;

	if ((m = malloc(sizeof(*m) + chlen + 1 + len)) == NULL) {
		return (NULL);
	}
	m->seq = w->seq;
	m->time_us = w->time_us;
	m->redelivered = w->has_redelivered && w->redelivered;
	m->len = len;
	m->channel = (char *) (m + 1);
	memcpy(m->channel, ch, chlen + 1);
	m->data = (uint8_t *) m->channel + chlen + 1;
	if (len > 0) {
		memcpy(m->data, w->data.data, len);
	}
	return (m);
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
	free(m);
}
