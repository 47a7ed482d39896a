/*
 * sched.h - the scheduler: moves jobs through their states on the loop
 * thread. It claims due jobs from the store's ready index (through the
 * writer), runs them on the backend with at most `concurrency` calls in
 * flight, turns each outcome into a store change (policy.h decides), and
 * ends expired jobs. It holds in memory only what is in flight, plus the
 * jobs claimed ahead of a free slot (at most 4 × concurrency, none against
 * a slow upstream; sched.c's header says how many).
 *
 * Threads: loop thread only.
 */
#ifndef SLOWLANE_SCHED_H
#define SLOWLANE_SCHED_H

#include <ev.h>
#include <stdint.h>

#include "slowlane/backend.h"
#include "slowlane/policy.h"
#include "slowlane/store.h"
#include "slowlane/writer.h"

struct sched_opts {
	unsigned concurrency;         /* upstream calls in flight at most */
	uint64_t upstream_timeout_ms; /* per call; also sizes the lease */
	uint64_t shutdown_grace_ms;   /* how long shutdown waits for calls */
	struct policy policy;         /* retries and backoff */
};

struct sched_stats {
	unsigned in_flight;
	uint64_t started, succeeded, failed, retried, expired, stale;
	uint64_t abandoned; /* calls dropped while running: their job was
	                     * cancelled or changed elsewhere, or expired */
};

struct sched;

/* Creates the scheduler. Nothing runs until sched_start(). */
int sched_new(struct ev_loop *loop, struct store *st, struct writer *wr,
    struct backend *be, const struct sched_opts *o, struct sched **out);

/* Crash recovery, before the writer thread starts: every job left In
 * Progress goes back to Queued (O(jobs in flight)). *n gets the count.
 * Returns 0 or a store error. */
int sched_recover(struct store *st, uint64_t now_ms, size_t *n);

/* Starts dispatching and the expiry sweep. */
void sched_start(struct sched *s);
/* Pauses or resumes dispatching (calls in flight go on). Benchmarks and
 * operators use it through SIGUSR2 / SIGUSR1. */
void sched_set_paused(struct sched *s, bool paused);
/* Tells the scheduler that jobs may have become due (after a submit). */
void sched_kick(struct sched *s);
/* Stops claiming; lets calls in flight finish for up to the grace period,
 * then abandons the rest and puts their jobs back to Queued (through the
 * writer). `done(arg)` runs on the loop once nothing is in flight. */
void sched_shutdown(struct sched *s, void (*done)(void *arg), void *arg);
void sched_get_stats(const struct sched *s, struct sched_stats *out);
/* Frees the scheduler; call after shutdown completed and the writer
 * stopped. sched_free(NULL) is a no-op. */
void sched_free(struct sched *s);

#endif
