/*
 * counter.h - named i64 counters of one shard (SPEC "Counters"):
 * Arc<Mutex<i64>> + Condvar, without the mutex: a table belongs to one
 * executor shard and only that shard's thread touches it.
 *
 * Waiting is a registration: the caller (the shard) owns the waiter's
 * memory, its timer and its reply; the table only decides *when* the
 * condition holds and calls the table's wake function for it.
 */
#ifndef CHD_COUNTER_H
#define CHD_COUNTER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <chan/status.h>

typedef enum chd_wait_op {
	CHD_WAIT_EQ, /* values equal chan.v1.WaitOp */
	CHD_WAIT_NE,
	CHD_WAIT_LT,
	CHD_WAIT_LE,
	CHD_WAIT_GT,
	CHD_WAIT_GE,
} chd_wait_op;

typedef struct chd_counters chd_counters;
typedef struct chd_counter  chd_counter;

/* A parked `wait`; embedded in the caller's task. Opaque links inside. */
typedef struct chd_counter_waiter {
	chd_wait_op                op;
	int64_t                    value;
	void                      *arg;  /* the caller's, handed to wake */
	chd_counter               *ctr_; /* private: where it is parked */
	struct chd_counter_waiter *prev_, *next_;
} chd_counter_waiter;

/*
 * Called once per parked waiter when it leaves the table by itself: st OK
 * with the value that satisfied it, or NOT_FOUND when its counter was
 * deleted. The waiter is unlinked before the call, so the callee may free
 * it. Not called for chd_counter_waiter_cancel.
 */
typedef void (*chd_counter_wake_fn)(chd_counter_waiter *w, chan_status st,
    int64_t value);

chd_counters *chd_counters_new(chd_counter_wake_fn wake);
/*
 * Shares a daemon-wide count of counters among tables: creating one when
 * *global has reached max (0: no limit) fails with RESOURCE_EXHAUSTED and
 * chd_counters_full says so. Without it a table has no limit.
 */
void chd_counters_limit(chd_counters *t, atomic_uint_least64_t *global,
    uint64_t max);
bool chd_counters_full(const chd_counters *t);
/* Frees the table; waiters still parked are woken SHUTTING_DOWN first. */
void chd_counters_free(chd_counters *t);

/* Names are validated by the caller. Missing counters are created at 0 by
 * add, set, cas and wait; get and delete answer NOT_FOUND. */
chan_status chd_counter_add(chd_counters *t, const char *name, int64_t delta,
    int64_t *new_value);
/*
 * n adds in order, as one step no other request sees half of: values[i]
 * is the value after deltas[i], and waiters are checked after each add,
 * as chd_counter_add does, so one waiting for an intermediate value wakes.
 * All or nothing: when add *bad (0-based) would overflow, nothing is
 * applied and OUT_OF_RANGE is returned.
 */
chan_status chd_counter_add_many(chd_counters *t, const char *name,
    const int64_t *deltas, size_t n, int64_t *values, size_t *bad);
chan_status chd_counter_get(chd_counters *t, const char *name, int64_t *value);
chan_status chd_counter_set(chd_counters *t, const char *name, int64_t value,
    int64_t *old_value);
chan_status chd_counter_cas(chd_counters *t, const char *name,
    int64_t expected, int64_t new_value, bool *swapped, int64_t *current);
/* Removes the counter; its waiters are woken NOT_FOUND. */
chan_status chd_counter_delete(chd_counters *t, const char *name);

/*
 * If the condition already holds: OK, *value set, w untouched. Otherwise
 * parks w (EMPTY is returned to say "parked"; *value has the current value)
 * and wakes it later through the table's wake function.
 */
chan_status chd_counter_wait(chd_counters *t, const char *name,
    chd_counter_waiter *w, int64_t *value);
/* Unparks w without waking it (timeout, connection gone). Idempotent. */
void chd_counter_waiter_cancel(chd_counter_waiter *w);

/* True when op holds between a and b (a OP b). */
bool chd_wait_op_holds(chd_wait_op op, int64_t a, int64_t b);

/* Iteration for `counter list` (name order is unspecified). */
typedef void (*chd_counter_visit_fn)(void *arg, const char *name,
    int64_t value);
void   chd_counters_each(chd_counters *t, chd_counter_visit_fn fn, void *arg);
size_t chd_counters_count(const chd_counters *t);

#endif
