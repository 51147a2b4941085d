/* info.c - introspection: stat, list, stats. */
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
chan_info_from_wire(const Chan__V1__ChannelInfo *w, chan_stat_info *i)
{
	memset(i, 0, sizeof(*i));
	snprintf(i->name, sizeof(i->name), "%s", w->name != NULL ? w->name : "");
	i->bounded = w->bounded;
	i->capacity = w->capacity;
	i->depth = w->depth;
	i->bytes = w->bytes;
	i->closed = w->closed;
	i->receiver_attached = w->receiver_attached;
	i->receiver_pid = w->receiver_pid;
	i->senders = w->senders;
	i->blocked_senders = w->blocked_senders;
	i->blocked_receivers = w->blocked_receivers;
	i->total_sent = w->total_sent;
	i->total_received = w->total_received;
	i->total_dropped = w->total_dropped;
	i->in_flight = w->in_flight;
	i->total_redelivered = w->total_redelivered;
}

chan_status
chan_stat(chan_client *c, const char *name, chan_stat_info *info)
{
	chan_exchange  x;
	Chan__V1__Stat a = CHAN__V1__STAT__INIT;
	chan_status    s;

	if (c == NULL || info == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "stat: client or output missing"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	a.name = (char *) name;
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_STAT;
	x.req.stat = &a;
	s = chan_exchange_run(c, &x, CHAN__V1__RESPONSE__RESULT_STAT, -1, false);
	if (s == CHAN_OK) {
		chan_info_from_wire(x.resp->stat, info);
	}
	chan_exchange_fini(&x);
	return (s);
}

chan_status
chan_list(chan_client *c, chan_stat_info **infos, size_t *n)
{
	chan_exchange   x;
	Chan__V1__List  a = CHAN__V1__LIST__INIT;
	chan_stat_info *arr;
	chan_status     s;
	size_t          i, cnt;

	if (c == NULL || infos == NULL || n == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "list: client or output missing"));
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_LIST;
	x.req.list = &a;
	s = chan_exchange_run(c, &x, CHAN__V1__RESPONSE__RESULT_LIST, -1, false);
	if (s != CHAN_OK) {
		goto out;
	}
	cnt = x.resp->list->n_channels;
	/* One extra element, so an empty list is still a pointer to free. */
	if ((arr = calloc(cnt + 1, sizeof(*arr))) == NULL) {
		s = chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (i = 0; i < cnt; i++) {
		chan_info_from_wire(x.resp->list->channels[i], &arr[i]);
	}
	*infos = arr;
	*n = cnt;
out:
	chan_exchange_fini(&x);
	return (s);
}

void
chan_list_free(chan_stat_info *infos)
{
	free(infos);
}

chan_status
chan_stats(chan_client *c, chan_stats_info *info)
{
	chan_exchange           x;
	Chan__V1__Stats         a = CHAN__V1__STATS__INIT;
	const Chan__V1__StatsResult *r;
	chan_status             s;

	if (c == NULL || info == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "stats: client or output missing"));
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_STATS;
	x.req.stats = &a;
	s = chan_exchange_run(c, &x, CHAN__V1__RESPONSE__RESULT_STATS, -1, false);
	if (s == CHAN_OK) {
		r = x.resp->stats;
		memset(info, 0, sizeof(*info));
		info->uptime_ms = r->uptime_ms;
		info->connections = r->connections;
		info->channels = r->channels;
		info->counters = r->counters;
		info->messages = r->messages;
		info->bytes = r->bytes;
		info->requests = r->requests;
		info->workers = r->workers;
	}
	chan_exchange_fini(&x);
	return (s);
}
