/*
 * info.c - requests that belong to no single shard: hello and ping are
 * answered on the submitting thread; list, stats and counter list are
 * fanned out to every shard and gathered. Each shard copies what it
 * reports into its own slot (its channels keep changing after its turn);
 * the last shard to finish builds the answer.
 */
#include "engine_int.h"

#include <stdlib.h>
#include <string.h>

typedef struct gather_slot {
	Chan__V1__ChannelInfo *infos;   /* list: names strdup'ed */
	Chan__V1__CounterInfo *ctrs;    /* counter list: names strdup'ed */
	size_t                 n, cap;
	uint64_t               nchans, nctrs, msgs, bytes;
	bool                   oom;
} gather_slot;

typedef struct gather gather;
typedef void (*gather_fn)(chd_shard *sh, gather_slot *slot);
typedef void (*gather_done_fn)(gather *g);

struct gather {
	atomic_int     left;
	chd_engine    *e;
	chd_req       *r;
	gather_fn      each;
	gather_done_fn done;
	gather_slot   *slots;
};

static void
gather_free(gather *g)
{
	for (int i = 0; i < g->e->n; i++) {
		gather_slot *s = &g->slots[i];
		for (size_t j = 0; j < s->n; j++) {
			if (s->infos != NULL) {
				free(s->infos[j].name);
			}
			if (s->ctrs != NULL) {
				free(s->ctrs[j].name);
			}
		}
		free(s->infos);
		free(s->ctrs);
	}
	free(g->slots);
	free(g);
}

static void
gather_job(chd_shard *sh, void *arg)
{
	gather *g = arg;

	g->each(sh, &g->slots[sh->idx]);
	if (atomic_fetch_sub(&g->left, 1) == 1) {
		g->done(g);
		gather_free(g);
	}
}

static void
gather_start(chd_engine *e, chd_req *r, gather_fn each, gather_done_fn done)
{
	gather *g;

	if ((g = calloc(1, sizeof(*g))) == NULL ||
	    (g->slots = calloc((size_t) e->n, sizeof(*g->slots))) == NULL) {
		free(g);
		chd_reply_err(e, r, CHAN_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	g->e = e;
	g->r = r;
	g->each = each;
	g->done = done;
	atomic_init(&g->left, e->n);
	for (int i = 0; i < e->n; i++) {
		if (chd_shard_post(e->shards[i], gather_job, g) != 0) {
			/* That shard reports nothing, visibly. */
			g->slots[i].oom = true;
			if (atomic_fetch_sub(&g->left, 1) == 1) {
				g->done(g);
				gather_free(g);
			}
		}
	}
}

static bool
gather_oom(gather *g)
{
	for (int i = 0; i < g->e->n; i++) {
		if (g->slots[i].oom) {
			chd_reply_err(g->e, g->r, CHAN_RESOURCE_EXHAUSTED,
			    "out of memory gathering the answer");
			return (true);
		}
	}
	return (false);
}

/* ---- list --------------------------------------------------------------- */

static void
list_visit(void *arg, chd_chan *ch)
{
	void        **a = arg;
	chd_shard    *sh = a[0];
	gather_slot  *s = a[1];
	Chan__V1__ChannelInfo *ci;

	if (s->oom) {
		return;
	}
	if (s->n == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 16;
		void  *p = realloc(s->infos, ncap * sizeof(*s->infos));
		if (p == NULL) {
			s->oom = true;
			return;
		}
		s->infos = p;
		s->cap = ncap;
	}
	ci = &s->infos[s->n];
	chd_chan_info(sh, ch, ci);
	if ((ci->name = strdup(chd_chan_name(ch))) == NULL) {
		s->oom = true;
		return;
	}
	s->n++;
}

static void
list_each(chd_shard *sh, gather_slot *s)
{
	void *arg[2] = { sh, s };

	chd_chan_each(sh, list_visit, arg);
}

static int
info_cmp(const void *a, const void *b)
{
	const Chan__V1__ChannelInfo *const *x = a, *const *y = b;

	return (strcmp((*x)->name, (*y)->name));
}

static void
list_done(gather *g)
{
	chd_resp              a;
	Chan__V1__ChannelList cl = CHAN__V1__CHANNEL_LIST__INIT;
	size_t                n = 0;

	if (gather_oom(g)) {
		return;
	}
	for (int i = 0; i < g->e->n; i++) {
		n += g->slots[i].n;
	}
	chd_resp_init(&a);
	if (n > 0 && (cl.channels = chd_resp_alloc(&a,
	    n * sizeof(*cl.channels))) == NULL) {
		chd_resp_send(g->e, g->r, &a, CHAN_RESOURCE_EXHAUSTED);
		return;
	}
	for (int i = 0; i < g->e->n; i++) {
		for (size_t j = 0; j < g->slots[i].n; j++) {
			cl.channels[cl.n_channels++] = &g->slots[i].infos[j];
		}
	}
	if (n > 0) { /* qsort(NULL, 0) is undefined */
		qsort(cl.channels, n, sizeof(*cl.channels), info_cmp);
	}
	a.r.result_case = CHAN__V1__RESPONSE__RESULT_LIST;
	a.r.list = &cl;
	chd_resp_send(g->e, g->r, &a, CHAN_OK);
}

void
chd_info_list(chd_engine *e, chd_req *r)
{
	gather_start(e, r, list_each, list_done);
}

/* ---- counter list ------------------------------------------------------- */

static void
ctr_visit(void *arg, const char *name, int64_t value)
{
	gather_slot           *s = arg;
	Chan__V1__CounterInfo  init = CHAN__V1__COUNTER_INFO__INIT;

	if (s->oom) {
		return;
	}
	if (s->n == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 16;
		void  *p = realloc(s->ctrs, ncap * sizeof(*s->ctrs));
		if (p == NULL) {
			s->oom = true;
			return;
		}
		s->ctrs = p;
		s->cap = ncap;
	}
	s->ctrs[s->n] = init;
	s->ctrs[s->n].has_value = true;
	s->ctrs[s->n].value = value;
	if ((s->ctrs[s->n].name = strdup(name)) == NULL) {
		s->oom = true;
		return;
	}
	s->n++;
}

static void
ctr_each(chd_shard *sh, gather_slot *s)
{
	chd_counters_each(sh->counters, ctr_visit, s);
}

static int
ctr_cmp(const void *a, const void *b)
{
	const Chan__V1__CounterInfo *const *x = a, *const *y = b;

	return (strcmp((*x)->name, (*y)->name));
}

static void
ctr_done(gather *g)
{
	chd_resp                    a;
	Chan__V1__CounterListResult cl = CHAN__V1__COUNTER_LIST_RESULT__INIT;
	size_t                      n = 0;

	if (gather_oom(g)) {
		return;
	}
	for (int i = 0; i < g->e->n; i++) {
		n += g->slots[i].n;
	}
	chd_resp_init(&a);
	if (n > 0 && (cl.counters = chd_resp_alloc(&a,
	    n * sizeof(*cl.counters))) == NULL) {
		chd_resp_send(g->e, g->r, &a, CHAN_RESOURCE_EXHAUSTED);
		return;
	}
	for (int i = 0; i < g->e->n; i++) {
		for (size_t j = 0; j < g->slots[i].n; j++) {
			cl.counters[cl.n_counters++] = &g->slots[i].ctrs[j];
		}
	}
	if (n > 0) {
		qsort(cl.counters, n, sizeof(*cl.counters), ctr_cmp);
	}
	a.r.result_case = CHAN__V1__RESPONSE__RESULT_COUNTER_LIST;
	a.r.counter_list = &cl;
	chd_resp_send(g->e, g->r, &a, CHAN_OK);
}

void
chd_info_counter_list(chd_engine *e, chd_req *r)
{
	gather_start(e, r, ctr_each, ctr_done);
}

/* ---- stats -------------------------------------------------------------- */

static void
stats_each(chd_shard *sh, gather_slot *s)
{
	s->nchans = sh->nchans;
	s->nctrs = chd_counters_count(sh->counters);
	chd_chan_totals(sh, &s->msgs, &s->bytes);
}

static void
stats_done(gather *g)
{
	chd_resp              a;
	Chan__V1__StatsResult sr = CHAN__V1__STATS_RESULT__INIT;
	chd_engine           *e = g->e;

	if (gather_oom(g)) {
		return;
	}
	for (int i = 0; i < e->n; i++) {
		sr.channels += g->slots[i].nchans;
		sr.counters += g->slots[i].nctrs;
		sr.messages += g->slots[i].msgs;
		sr.bytes += g->slots[i].bytes;
	}
	sr.has_channels = sr.has_counters = sr.has_messages = true;
	sr.has_bytes = sr.has_uptime_ms = sr.has_connections = true;
	sr.has_requests = sr.has_workers = true;
	sr.uptime_ms = (uint64_t) (chl_now_mono_ms() - e->start_ms);
	sr.connections = atomic_load(&e->connections);
	/* This request counts as served too. */
	sr.requests = atomic_load(&e->requests) + 1;
	sr.workers = (uint32_t) e->n;
	chd_resp_init(&a);
	a.r.result_case = CHAN__V1__RESPONSE__RESULT_STATS;
	a.r.stats = &sr;
	chd_resp_send(e, g->r, &a, CHAN_OK);
}

void
chd_info_stats(chd_engine *e, chd_req *r)
{
	gather_start(e, r, stats_each, stats_done);
}

/* ---- no shard ----------------------------------------------------------- */

void
chd_info_hello(chd_engine *e, chd_req *r)
{
	chd_resp              a;
	Chan__V1__HelloResult hr = CHAN__V1__HELLO_RESULT__INIT;

	chd_resp_init(&a);
	hr.has_protocol_version = hr.has_max_message_size = true;
	hr.has_max_batch = true;
	hr.protocol_version = CHL_PROTOCOL_VERSION;
	hr.max_message_size = e->opts.max_message_size;
	hr.max_batch = e->opts.max_batch;
	hr.server_version = (char *) CHAN_VERSION;
	hr.has_batch_form = hr.batch_form = true;
	hr.has_cancel = hr.cancel = true; /* Request.cancel */
	hr.has_confirm_part = hr.confirm_part = true; /* Request.confirm_part */
	hr.has_counter_add_many = hr.counter_add_many = true; /* deltas */
	a.r.result_case = CHAN__V1__RESPONSE__RESULT_HELLO;
	a.r.hello = &hr;
	chd_resp_send(e, r, &a, CHAN_OK);
}

void
chd_info_ping(chd_engine *e, chd_req *r)
{
	chd_reply_empty(e, r);
}
