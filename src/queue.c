/*
 * queue.c - job lifecycle operations on the store. Every function reads the
 * job, applies one job.h transition and writes it back through
 * store_job_put(), which moves the index entries in the same transaction.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "slowlane/batch.h"
#include "slowlane/common.h"
#include "slowlane/event.h"
#include "slowlane/log.h"
#include "slowlane/queue.h"

/* Jobs handled per index scan; callers loop for more. */
#define SCAN_CHUNK 256

/* Keeps the end of attempt `j->attempts` for `slowlanectl show`. */
static int
record_attempt(struct store_txn *t, const struct job *j, uint64_t now_ms, uint16_t status,
    const char *message)
{
	struct store_attempt a = { .attempt = j->attempts, .started_ms = j->dispatched_ms,
		.ended_ms = now_ms, .http_status = status };

	if (j->attempts == 0)
		return 0;
	snprintf(a.message, sizeof a.message, "%s", message);
	return store_attempt_put(t, j->id, &a);
}

/* Everything that follows a job's end, in the same transaction: webhook
 * events, group completion, batch accounting. */
static int
job_ended(struct store_txn *t, const struct job *j, uint64_t now_ms)
{
	int rc = event_job_ended(t, j, now_ms);

	return rc ? rc : batch_job_ended(t, j, now_ms);
}

int
queue_insert(struct store_txn *t, const struct job *j, const void *body, size_t len)
{
	if (j->state != JOB_QUEUED)
		return SL_EINVAL;
	if (store_nearly_full(t))
		return SL_EFULL; /* before writing: the headroom is for results */
	return queue_insert_acked(t, j, body, len);
}

int
queue_insert_acked(struct store_txn *t, const struct job *j, const void *body, size_t len)
{
	int rc;

	if (j->state != JOB_QUEUED)
		return SL_EINVAL;
	rc = store_body_put(t, j->id, body, len);
	if (rc)
		return rc;
	return store_job_put(t, NULL, j);
}

static uint64_t
new_attempt_id(void)
{
	uint64_t a = 0;

	/* Random, not a counter: no shared state to persist, and an attempt id
	 * of a previous life of the daemon can never match by accident. */
	while (a == 0)
		if (sl_random_bytes(&a, sizeof a) != 0)
			a = sl_wall_ms() ^ (uint64_t)(uintptr_t)&a;
	return a;
}

/* An index entry that its job's record does not imply (the record is
 * missing, unreadable, or in another state): a damaged store, never the
 * result of a crash (every change of a record moves its entries in the
 * same transaction). The entry is dropped, so that one damaged job cannot
 * stall every job behind it; `slowlanectl check` reports the record.
 * ix < 0: the inflight index. */
static const char *
index_name(int ix)
{
	return ix < 0 ? "inflight" : ix == STORE_READY ? "ready" : "expiry";
}

static int
drop_dangling(struct store_txn *t, int ix, uint64_t ms, const char *id, int why)
{
	log_error("queue: job %s: %s; its %s entry is dropped (run slowlanectl check)", id,
	    why == SL_ENOTFOUND ? "no record" : why == SL_ECORRUPT
	    ? "its record failed its checksum" : "its record is in another state",
	    index_name(ix));
	return ix < 0 ? store_inflight_drop(t, id) : store_index_drop(t, ix, ms, id);
}

/* An entry of a job in the right state at the wrong time (damaged too):
 * moved to the time its record says, so the job is neither lost to the
 * index nor run early. */
static int
move_stray(struct store_txn *t, enum store_index ix, uint64_t ms, uint64_t want_ms,
    const char *id)
{
	int rc;

	log_error("queue: job %s: its %s entry says %llu, its record %llu; moved (run "
	    "slowlanectl check)", id, index_name((int)ix),
	    (unsigned long long)ms, (unsigned long long)want_ms);
	rc = store_index_drop(t, ix, ms, id);
	return rc ? rc : store_index_put(t, ix, want_ms, id);
}

/* A claimed job whose request body is missing or fails its checksum cannot
 * be sent: it ends Failed, saying so, rather than block the queue. `old`
 * is its record before the claim. */
static int
fail_damaged(struct store_txn *t, const struct job *old, const struct job *claimed,
    uint64_t now_ms, int why)
{
	struct job j = *claimed;
	int rc;

	log_error("queue: job %s: its request body %s; the job fails (run slowlanectl check)",
	    j.id, why == SL_ENOTFOUND ? "is missing" : "failed its checksum");
	if (job_end(&j, now_ms))
		return SL_ECORRUPT;
	j.end = JOB_END_DAMAGED;
	j.attempts = old->attempts; /* no call was made */
	j.dispatched_ms = old->dispatched_ms;
	job_set_message(&j, "The stored request could not be read (the store is damaged); "
	    "submit it again");
	rc = store_job_put(t, claimed, &j);
	return rc ? rc : job_ended(t, &j, now_ms);
}

int
queue_claim(struct store_txn *t, uint64_t now_ms, size_t max, uint64_t lease_ms,
    queue_claim_fn cb, void *arg, size_t *claimed, uint64_t *next_due_ms)
{
	char ids[SCAN_CHUNK][SL_ID_LEN + 1];
	uint64_t due[SCAN_CHUNK];
	size_t n = 0;
	int rc;

	*claimed = 0;
	if (max > SCAN_CHUNK)
		max = SCAN_CHUNK;
	rc = store_ready_due(t, now_ms, max, ids, due, &n, next_due_ms);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		struct job old, j;
		const void *body;
		size_t len;

		rc = store_job_get(t, ids[i], &old);
		if (rc == 0 && old.state == JOB_QUEUED && old.not_before_ms != due[i]) {
			rc = move_stray(t, STORE_READY, due[i], old.not_before_ms, ids[i]);
			if (rc)
				return rc;
			continue;
		}
		if (rc == SL_ENOTFOUND || rc == SL_ECORRUPT || (rc == 0 && old.state != JOB_QUEUED)) {
			rc = drop_dangling(t, STORE_READY, due[i], ids[i], rc);
			if (rc)
				return rc;
			continue;
		}
		if (rc)
			return rc;
		j = old;
		rc = job_claim(&j, now_ms, new_attempt_id(), now_ms + lease_ms);
		if (rc)
			return SL_ECORRUPT;
		rc = store_job_put(t, &old, &j);
		if (rc)
			return rc;
		rc = store_body_get(t, j.id, &body, &len);
		if (rc == SL_ENOTFOUND || rc == SL_ECORRUPT) {
			rc = fail_damaged(t, &old, &j, now_ms, rc);
			if (rc)
				return rc;
			continue;
		}
		if (rc)
			return rc;
		(*claimed)++;
		/* The callback owns the claimed job from here; if it cannot,
		 * the whole op fails rather than leave one claimed by nobody. */
		if (cb && (rc = cb(arg, &j, body, len)) != 0)
			return rc;
	}
	return 0;
}

int
queue_complete(struct store_txn *t, const char *id, uint64_t attempt_id, uint64_t now_ms,
    const struct queue_outcome *o)
{
	struct job old, j;
	int rc;

	rc = store_job_get(t, id, &old);
	if (rc)
		return rc;
	j = old;
	if (o->verdict == QUEUE_RETRY)
		rc = job_retry(&j, attempt_id, o->not_before_ms);
	else
		rc = job_finish(&j, attempt_id, o->verdict == QUEUE_SUCCESS, now_ms);
	if (rc)
		return rc;
	j.http_status = o->http_status;
	if (o->verdict == QUEUE_FAIL)
		j.end = o->end;
	job_set_message(&j, "%s", o->message);
	rc = record_attempt(t, &j, now_ms, o->http_status, o->message);
	if (rc)
		return rc;
	if (o->response) {
		rc = store_result_put(t, id, o->response, o->response_len);
		if (rc)
			return rc;
	}
	rc = store_job_put(t, &old, &j);
	if (!rc && job_is_final(j.state))
		rc = job_ended(t, &j, now_ms);
	return rc;
}

int
queue_expire(struct store_txn *t, uint64_t now_ms, size_t max,
    void (*cb)(void *arg, const char *id, bool was_in_progress), void *arg,
    size_t *n, uint64_t *next_ms)
{
	char ids[SCAN_CHUNK][SL_ID_LEN + 1];
	uint64_t due[SCAN_CHUNK];
	size_t got = 0;
	int rc;

	*n = 0;
	if (max > SCAN_CHUNK)
		max = SCAN_CHUNK;
	rc = store_expiry_due(t, now_ms, max, ids, due, &got, next_ms);
	if (rc)
		return rc;
	for (size_t i = 0; i < got; i++) {
		struct job old, j;
		bool was_in_progress;

		rc = store_job_get(t, ids[i], &old);
		if (rc == 0 && !job_is_final(old.state) && old.expires_ms != due[i]) {
			rc = move_stray(t, STORE_EXPIRY, due[i], old.expires_ms, ids[i]);
			if (rc)
				return rc;
			continue;
		}
		if (rc == SL_ENOTFOUND || rc == SL_ECORRUPT || (rc == 0 && job_is_final(old.state))) {
			rc = drop_dangling(t, STORE_EXPIRY, due[i], ids[i], rc);
			if (rc)
				return rc;
			continue;
		}
		if (rc)
			return rc;
		j = old;
		was_in_progress = old.state == JOB_IN_PROGRESS;
		if (job_end(&j, now_ms))
			return SL_ECORRUPT;
		j.end = JOB_END_EXPIRED;
		if (was_in_progress)
			job_set_message(&j, "Expired: not finished within its time to live "
			    "(abandoned while in progress after %u attempt%s)",
			    j.attempts, j.attempts == 1 ? "" : "s");
		else if (j.attempts > 0)
			job_set_message(&j, "Expired: not finished within its time to live "
			    "(last error: %.400s)", old.message);
		else
			job_set_message(&j, "Expired: not finished within its time to live");
		if (was_in_progress)
			rc = record_attempt(t, &j, now_ms, 0, "abandoned: the job expired");
		if (!rc)
			rc = store_job_put(t, &old, &j);
		if (!rc)
			rc = job_ended(t, &j, now_ms);
		if (rc)
			return rc;
		(*n)++;
		if (cb)
			cb(arg, j.id, was_in_progress);
	}
	return 0;
}

int
queue_recover(struct store_txn *t, uint64_t now_ms, size_t max, size_t *n, size_t *dropped)
{
	char ids[SCAN_CHUNK][SL_ID_LEN + 1];
	size_t got = 0;
	int rc;

	*n = *dropped = 0;
	if (max > SCAN_CHUNK)
		max = SCAN_CHUNK;
	rc = store_inflight_list(t, max, ids, &got);
	if (rc)
		return rc;
	for (size_t i = 0; i < got; i++) {
		struct job old, j;

		rc = store_job_get(t, ids[i], &old);
		if (rc == SL_ENOTFOUND || rc == SL_ECORRUPT ||
		    (rc == 0 && old.state != JOB_IN_PROGRESS)) {
			rc = drop_dangling(t, -1, 0, ids[i], rc);
			if (rc)
				return rc;
			(*dropped)++;
			continue;
		}
		if (rc)
			return rc;
		j = old;
		/* Back to the front of the queue: it was ahead of what came
		 * after it. */
		rc = job_release(&j, old.created_ms < now_ms ? old.created_ms : now_ms);
		if (rc)
			return SL_ECORRUPT;
		job_set_message(&j, "Requeued after a restart interrupted attempt %u", j.attempts);
		rc = record_attempt(t, &old, now_ms, 0, "interrupted: the daemon stopped");
		if (!rc)
			rc = store_job_put(t, &old, &j);
		if (rc)
			return rc;
		(*n)++;
	}
	return 0;
}

int
queue_release(struct store_txn *t, const char *id, uint64_t attempt_id, uint64_t now_ms,
    bool called)
{
	struct job old, j;
	int rc;

	rc = store_job_get(t, id, &old);
	if (rc)
		return rc;
	if (old.state != JOB_IN_PROGRESS || old.attempt_id != attempt_id)
		return SL_ESTALE;
	j = old;
	/* Back in its place in the queue (a claim leaves not_before_ms as it
	 * was): ahead of what was queued since. */
	job_release(&j, old.not_before_ms < now_ms ? old.not_before_ms : now_ms);
	if (!called) {
		/* Claimed ahead, never called: as if it had not been claimed, so
		 * pauses and restarts do not use up --max-attempts. */
		if (j.attempts > 0)
			j.attempts--;
		if (j.attempts == 0) /* else it keeps the reason of the retry it waits for */
			job_set_message(&j, "Queued");
		return store_job_put(t, &old, &j);
	}
	job_set_message(&j, "Requeued at shutdown");
	rc = record_attempt(t, &old, now_ms, 0, "interrupted: requeued at shutdown");
	return rc ? rc : store_job_put(t, &old, &j);
}

int
queue_cancel(struct store_txn *t, const char *id, uint64_t now_ms, const char *message)
{
	struct job old, j;
	int rc;

	rc = store_job_get(t, id, &old);
	if (rc)
		return rc;
	j = old;
	rc = job_end(&j, now_ms);
	if (rc)
		return rc;
	j.end = JOB_END_CANCELLED;
	job_set_message(&j, "%s", message);
	if (old.state == JOB_IN_PROGRESS) {
		rc = record_attempt(t, &old, now_ms, 0, "abandoned: the job was cancelled");
		if (rc)
			return rc;
	}
	rc = store_job_put(t, &old, &j);
	return rc ? rc : job_ended(t, &j, now_ms);
}

int
queue_requeue(struct store_txn *t, const char *id, uint64_t now_ms, uint64_t ttl_ms, bool force)
{
	struct job old, j;
	int rc;

	rc = store_job_get(t, id, &old);
	if (rc)
		return rc;
	if (!job_is_final(old.state) || (old.state == JOB_SUCCESS && !force))
		return SL_ESTALE;
	j = old;
	rc = job_requeue(&j, now_ms, now_ms + ttl_ms);
	if (rc)
		return rc;
	job_set_message(&j, "Requeued by operator");
	rc = store_job_put(t, &old, &j);
	if (!rc)
		rc = store_result_delete(t, id);
	return rc ? rc : event_job_reopened(t, &j);
}

struct purge_scan {
	uint64_t before_ms;
	size_t max, n;
	char (*ids)[SL_ID_LEN + 1];
};

static int
purge_collect(void *arg, uint64_t ms, const char *id)
{
	struct purge_scan *p = arg;

	if (ms >= p->before_ms || p->n >= p->max)
		return 1;
	memcpy(p->ids[p->n++], id, SL_ID_LEN + 1);
	return 0;
}

int
queue_purge(struct store_txn *t, uint64_t before_ms, size_t max, size_t *n)
{
	char ids[SCAN_CHUNK][SL_ID_LEN + 1];
	struct purge_scan p = { .before_ms = before_ms, .ids = ids };
	int rc;

	*n = 0;
	p.max = max < SCAN_CHUNK ? max : SCAN_CHUNK;
	rc = store_scan_time(t, STORE_FINISHED, 0, false, purge_collect, &p);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < p.n; i++) {
		struct job j;
		rc = store_job_get(t, ids[i], &j);
		if (rc == SL_ENOTFOUND)
			continue; /* dangling entry: `check --repair` removes it */
		if (rc)
			return rc;
		if (!job_is_final(j.state))
			continue;
		rc = store_job_delete(t, &j);
		if (rc)
			return rc;
		(*n)++;
	}
	return 0;
}
