/*
 * deliver.h - the webhook delivery engine: sends outbox events (event.h)
 * with the HTTP client on the loop, signed per Standard Webhooks, retried
 * with exponential backoff and jitter on timeouts, connection errors, 408,
 * 429 and 5xx until max_age, then recorded as failed. At least once: an
 * event is removed from the outbox only after its delivery is known, and
 * every retry carries the same event id.
 *
 * Threads: loop thread only.
 */
#ifndef SLOWLANE_DELIVER_H
#define SLOWLANE_DELIVER_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "slowlane/store.h"
#include "slowlane/writer.h"

struct deliver_opts {
	bool allow_http;        /* http:// targets (default: https only) */
	bool allow_private;     /* loopback/private/link-local targets */
	uint64_t timeout_ms;    /* per delivery (30 s) */
	uint64_t max_age_ms;    /* give up this long after the event (24 h) */
	uint64_t retry_base_ms; /* first backoff (5 s), x4 each time, max 10 h */
	unsigned concurrency;   /* deliveries in flight at most */
};

/* Since the start: events delivered (a 2xx), given up for good, and
 * attempts that failed and will be retried. */
struct deliver_stats {
	unsigned in_flight;
	uint64_t delivered, failed, retried;
};

struct deliver;

int deliver_new(struct ev_loop *loop, struct store *st, struct writer *wr,
    const struct deliver_opts *o, struct deliver **out);
/* Starts the one-second sweep of the outbox. */
void deliver_start(struct deliver *d);
/* Stops sending; deliveries in flight are abandoned (they stay in the
 * outbox and go out again at the next start). */
void deliver_stop(struct deliver *d);
void deliver_get_stats(const struct deliver *d, struct deliver_stats *out);
/* deliver_free(NULL) is a no-op; call after deliver_stop. */
void deliver_free(struct deliver *d);

#endif
