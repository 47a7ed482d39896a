/*
 * queue.h - the job lifecycle as store transactions: insert, claim, complete,
 * expire, recover, cancel, requeue. Each function works inside a write
 * transaction the caller owns (the daemon's writer thread, or slowlanectl),
 * reads the job, applies a job.h transition and writes it back with its
 * indexes. Pure of I/O other than the store; "now" is an argument.
 */
#ifndef SLOWLANE_QUEUE_H
#define SLOWLANE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slowlane/job.h"
#include "slowlane/store.h"

/* Stores a new job (state must be Queued) and its request body.
 * Returns 0, SL_EINVAL (not Queued), SL_EFULL (also when what is left of
 * the map would not hold the reserve and the results of every unfinished
 * job: store_nearly_full) or SL_ESTORE. */
int queue_insert(struct store_txn *t, const struct job *j, const void *body, size_t len);
/* The same for a job already acknowledged (applied from the journal): no
 * nearly-full refusal, the headroom is there for it. */
int queue_insert_acked(struct store_txn *t, const struct job *j, const void *body, size_t len);

/* Called for each claimed job; `body` is valid only during the call. It
 * takes charge of the job; a non-zero return (it cannot: out of memory)
 * makes queue_claim fail with that value, and the op's transaction must
 * then be dropped (the writer does). */
typedef int (*queue_claim_fn)(void *arg, const struct job *j, const void *body, size_t len);

/* Moves up to `max` due Queued jobs to In Progress, each with a fresh random
 * attempt id and a lease ending at now + lease_ms. *claimed gets the count,
 * *next_due_ms the due time of the next Queued job (UINT64_MAX if none).
 * A damaged store does not stall the queue: a ready entry that its record
 * does not imply (no record, one failing its checksum, one in another
 * state) is dropped, one of a Queued job at another time is moved to the
 * record's, and a job whose request body is missing or fails its checksum
 * ends Failed (JOB_END_DAMAGED, attempts unchanged), each logged with "run
 * slowlanectl check". Returns 0, the callback's error or a store error
 * (soft ones too, after writing: the caller makes them hard). */
int queue_claim(struct store_txn *t, uint64_t now_ms, size_t max, uint64_t lease_ms,
    queue_claim_fn cb, void *arg, size_t *claimed, uint64_t *next_due_ms);

enum queue_verdict { QUEUE_SUCCESS, QUEUE_FAIL, QUEUE_RETRY };

struct queue_outcome {
	enum queue_verdict verdict;
	uint64_t not_before_ms; /* QUEUE_RETRY: due time */
	uint16_t http_status;   /* upstream's, 0 if none */
	const char *message;    /* the new stateMessage */
	uint8_t end;            /* QUEUE_FAIL: enum job_end */
	const void *response;   /* JSON to keep as the result, or NULL */
	size_t response_len;
};

/* Applies the outcome of attempt `attempt_id` of job `id`. Returns 0;
 * SL_ESTALE if the job is no longer on that attempt (expired, cancelled,
 * recovered: the result is dropped); SL_ENOTFOUND; store errors. */
int queue_complete(struct store_txn *t, const char *id, uint64_t attempt_id, uint64_t now_ms,
    const struct queue_outcome *o);

/* Ends every unfinished job whose expiry is due (up to `max`), Failed with
 * an "expired" message. For each, `cb` (may be NULL) learns the id and
 * whether it was In Progress. *n gets the count, *next_ms the next expiry.
 * An expiry entry its record does not imply is dropped or moved, as in
 * queue_claim. */
int queue_expire(struct store_txn *t, uint64_t now_ms, size_t max,
    void (*cb)(void *arg, const char *id, bool was_in_progress), void *arg,
    size_t *n, uint64_t *next_ms);

/* Puts up to `max` In Progress jobs back to Queued (crash recovery at
 * startup: O(in flight), never a scan of all jobs). *n gets the count of
 * jobs put back, *dropped that of inflight entries no In Progress record
 * implies (dropped, as in queue_claim); call again until both are 0. */
int queue_recover(struct store_txn *t, uint64_t now_ms, size_t max, size_t *n,
    size_t *dropped);

/* Puts job `id` back to Queued if it is still on attempt `attempt_id`:
 * a shutdown or a pause gives back what it claimed. `called`: its call had
 * started (a shutdown's grace ran out), so the attempt counts and goes in
 * its history; otherwise the claim is undone, the attempt not counted.
 * Either way the job keeps its place in the queue (its not_before_ms, if
 * earlier than now): ahead of what was queued since.
 * Returns 0, SL_ESTALE (the job moved on), SL_ENOTFOUND or a store error. */
int queue_release(struct store_txn *t, const char *id, uint64_t attempt_id, uint64_t now_ms,
    bool called);

/* Ends a Queued or In Progress job as Failed with `message`. Returns 0,
 * SL_ENOTFOUND, or SL_ESTALE if it had already ended. */
int queue_cancel(struct store_txn *t, const char *id, uint64_t now_ms, const char *message);

/* Puts an ended job back to Queued with a fresh expiry (now + ttl_ms) and
 * zero attempts; its old result is dropped. A Success job needs `force`.
 * Returns 0, SL_ENOTFOUND, SL_ESTALE (not ended, or Success without force). */
int queue_requeue(struct store_txn *t, const char *id, uint64_t now_ms, uint64_t ttl_ms,
    bool force);

/* Deletes up to `max` ended jobs that finished before `before_ms`, with
 * their bodies, results, history and index entries. *n gets the count;
 * call again (in a new transaction) until it is below `max`. */
int queue_purge(struct store_txn *t, uint64_t before_ms, size_t max, size_t *n);

#endif
