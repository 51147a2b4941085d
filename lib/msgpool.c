/* msgpool.c - spare nng messages (msgpool.h says why). */
#include "msgpool.h"

#include <pthread.h>

static pthread_mutex_t chl_pool_mtx = PTHREAD_MUTEX_INITIALIZER;
static nng_msg        *chl_pool[CHL_MSGPOOL_N];
static size_t          chl_pool_n;
static size_t          chl_pool_bytes;

/* The smallest spare of at least len bytes, taken out; NULL: none. */
static nng_msg *
chl_pool_take(size_t len)
{
	size_t   best = CHL_MSGPOOL_N;
	nng_msg *m;

	pthread_mutex_lock(&chl_pool_mtx);
	for (size_t i = 0; i < chl_pool_n; i++) {
		size_t cap = nng_msg_capacity(chl_pool[i]);

		if (cap >= len &&
		    (best == CHL_MSGPOOL_N || cap < nng_msg_capacity(chl_pool[best]))) {
			best = i;
		}
	}
	if (best == CHL_MSGPOOL_N) {
		pthread_mutex_unlock(&chl_pool_mtx);
		return (NULL);
	}
	m = chl_pool[best];
	chl_pool[best] = chl_pool[--chl_pool_n];
	chl_pool_bytes -= nng_msg_capacity(m);
	pthread_mutex_unlock(&chl_pool_mtx);
	return (m);
}

int
chl_msgpool_get(nng_msg **out, size_t len)
{
	nng_msg *m;

	if (len >= CHL_MSGPOOL_MIN && (m = chl_pool_take(len)) != NULL) {
		nng_msg_clear(m);
		if (nng_msg_realloc(m, len) == 0) { /* within capacity: no allocation */
			*out = m;
			return (0);
		}
		nng_msg_free(m);
	}
	return (nng_msg_alloc(out, len));
}

void
chl_msgpool_put(nng_msg *m)
{
	size_t cap;

	if (m == NULL) {
		return;
	}
	cap = nng_msg_capacity(m);
	if (cap >= CHL_MSGPOOL_MIN) {
		pthread_mutex_lock(&chl_pool_mtx);
		if (chl_pool_n < CHL_MSGPOOL_N && chl_pool_bytes + cap <= CHL_MSGPOOL_BYTES) {
			chl_pool[chl_pool_n++] = m;
			chl_pool_bytes += cap;
			m = NULL;
		}
		pthread_mutex_unlock(&chl_pool_mtx);
	}
	nng_msg_free(m);
}
