/*
 * sched.c - dispatch, completion, retry and expiry of jobs (see sched.h).
 *
 * The path of one dispatch:
 *   1. A submit commit, a due timer or the one-second tick calls dispatch().
 *      It looks at the ready index in a short read transaction; if a job is
 *      due and a slot is free, it sends one claim op to the writer.
 *   2. The claim op (writer thread) moves up to `free slots` due jobs to In
 *      Progress with fresh attempt ids and copies their bodies out.
 *   3. After that commit (loop thread), each claimed job becomes an
 *      `attempt`: its backend call starts if a slot is free, else it waits
 *      in `ahead` for the next slot to free (claim-ahead, below). A crash
 *      before the call leaves the job In Progress on disk: startup puts it
 *      back.
 *   4. The call's outcome goes through policy_decide() and a finish op
 *      stores the result, the failure or the retry. The finish op is fenced
 *      by attempt id: if the job expired or was cancelled meanwhile, the
 *      late result changes nothing.
 *
 * Claim-ahead: a freed slot would otherwise wait a claim's round trip (the
 * commit in progress, then the claim's own) before its next call. So the
 * scheduler keeps jobs claimed beyond --concurrency: twice the slots that
 * free up during one claim round trip (--concurrency × round trip / call
 * time, moving averages of both), at most AHEAD_CAP × --concurrency.
 * Against an upstream that answers in milliseconds the slots never wait;
 * against one that takes seconds, the depth rounds down to nothing, so `In
 * Progress` stays "being called". Upstream calls never exceed --concurrency
 * either way.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/common.h"
#include "slowlane/jscan.h"
#include "slowlane/log.h"
#include "slowlane/queue.h"
#include "slowlane/sched.h"
#include "slowlane/util.h"
#include "slowlane/validate.h"

#define TICK_S 1.0       /* sweep period: external changes act within 1 s */
#define EXPIRE_CHUNK 256 /* jobs ended per expire op */
/* Claim ops in flight at once: a slot freed while one claim commits joins
 * the next commit instead of waiting for that claim to come back first. */
#define MAX_CLAIMS 2
#define READER_CHECK_TICKS 60
/* Claim-ahead depth at most this many times --concurrency. */
#define AHEAD_CAP 4

/* One job in flight: from its claim until its finish op has committed. */
struct attempt {
	struct be_call call;  /* the backend call (embedded) */
	ev_timer again;       /* retries a finish op the store refused (full) */
	struct wr_op op;      /* the finish or release op (embedded) */
	struct sched *s;
	struct attempt *prev, *next; /* in one alist: ahead, active or parked */
	ev_tstamp started;    /* when its call started */
	bool called;          /* its call started: a release counts the attempt */
	char id[SL_ID_LEN + 1];
	uint64_t attempt_id;
	uint32_t attempts;    /* including this one */
	char *body;           /* upstream request body (owned) */
	size_t body_len;
	/* The outcome, filled when the call ends: */
	struct queue_outcome out;
	char *response;       /* owned; what to keep as the result */
	uint64_t now_ms;
	char message[512];
};

/* A list of attempts through prev/next, oldest first. */
struct alist {
	struct attempt *head, *tail;
	unsigned n;
};

struct claim_op {
	struct wr_op op;
	struct sched *s;
	size_t max;
	uint64_t now_ms;
	ev_tstamp sent;
	struct attempt *got, *got_tail; /* claimed, in due order, through ->next */
	size_t n;
	uint64_t next_due_ms;
};

struct expire_op {
	struct wr_op op;
	struct sched *s;
	uint64_t now_ms;
	char ids[EXPIRE_CHUNK][SL_ID_LEN + 1]; /* those that were In Progress */
	size_t n_inflight, n;
	uint64_t next_ms;
};

struct sched {
	struct ev_loop *loop;
	struct store *st;
	struct writer *wr;
	struct backend *be;
	struct sched_opts o;
	ev_timer tick;       /* periodic sweep */
	ev_timer due;        /* next retry becoming due */
	ev_timer grace;      /* shutdown deadline */
	struct alist ahead;  /* claimed, waiting for a free slot */
	struct alist active; /* calls running (at most --concurrency) */
	struct alist parked; /* outcomes waiting for room in a full store */
	ev_tstamp call_s, claim_s; /* moving averages: call time, claim round trip */
	unsigned reserved;   /* slots promised to the claim ops in flight */
	unsigned claiming;   /* claim ops in flight, at most MAX_CLAIMS */
	bool expiring, stopping, paused;
	unsigned ticks;
	unsigned releasing;  /* release ops in flight during shutdown */
	void (*on_stopped)(void *arg);
	void *stopped_arg;
	struct sched_stats stats;
};

static void dispatch(struct sched *s);
static void release(struct sched *s, struct attempt *a);

/* ---- attempts ---- */

/* A moving average over about the last 8 samples; the first sets it. */
static ev_tstamp
ewma(ev_tstamp avg, ev_tstamp sample)
{
	if (sample <= 0)
		sample = 1e-6; /* ended in the iteration it started in */
	return avg <= 0 ? sample : avg + (sample - avg) / 8.0;
}

static void
attempt_free(struct attempt *a)
{
	if (!a)
		return;
	free(a->body);
	free(a->response);
	free(a);
}

static void
alist_push(struct alist *l, struct attempt *a)
{
	a->next = NULL;
	a->prev = l->tail;
	if (l->tail)
		l->tail->next = a;
	else
		l->head = a;
	l->tail = a;
	l->n++;
}

static void
alist_remove(struct alist *l, struct attempt *a)
{
	if (a->prev)
		a->prev->next = a->next;
	else
		l->head = a->next;
	if (a->next)
		a->next->prev = a->prev;
	else
		l->tail = a->prev;
	a->prev = a->next = NULL;
	l->n--;
}

static struct attempt *
alist_find(const struct alist *l, const char *id)
{
	for (struct attempt *a = l->head; a; a = a->next)
		if (strcmp(a->id, id) == 0)
			return a;
	return NULL;
}

/* Starts calls for the jobs claimed ahead while slots are free. */
static void
launch(struct sched *s)
{
	while (s->ahead.head && s->active.n < s->o.concurrency) {
		struct attempt *a = s->ahead.head;
		alist_remove(&s->ahead, a);
		alist_push(&s->active, a);
		a->started = ev_now(s->loop);
		s->stats.started++;
		if (s->be->ops->start(s->be, &a->call) != 0) {
			alist_remove(&s->active, a);
			release(s, a);
		} else {
			a->called = true; /* `done` never runs inside start (backend.h) */
		}
	}
}

/* Gives every job claimed ahead back to the queue (shutdown, pause). */
static void
release_ahead(struct sched *s)
{
	while (s->ahead.head) {
		struct attempt *a = s->ahead.head;
		alist_remove(&s->ahead, a);
		release(s, a);
	}
}

/* Drops an attempt of list `l` (active or ahead) whose job ended or
 * changed elsewhere: its result would be fenced, so its call is not worth
 * making or finishing. */
static void
abandon(struct sched *s, struct alist *l, struct attempt *a)
{
	if (l == &s->active) {
		s->be->ops->cancel(s->be, &a->call);
		s->stats.abandoned++;
	}
	alist_remove(l, a);
	attempt_free(a);
}

static void
abandon_id(struct sched *s, const char *id)
{
	struct attempt *a;

	if ((a = alist_find(&s->active, id)) != NULL)
		abandon(s, &s->active, a);
	else if ((a = alist_find(&s->ahead, id)) != NULL)
		abandon(s, &s->ahead, a);
}

static void
maybe_stopped(struct sched *s)
{
	if (s->stopping && s->active.n == 0 && s->ahead.n == 0 && !s->claiming &&
	    s->releasing == 0 &&
	    s->on_stopped) {
		void (*cb)(void *) = s->on_stopped;
		s->on_stopped = NULL;
		ev_timer_stop(s->loop, &s->grace);
		cb(s->stopped_arg);
	}
}

/* ---- finishing an attempt ---- */

static int
finish_apply(struct store_txn *t, struct wr_op *op)
{
	struct attempt *a = SL_CONTAINER_OF(op, struct attempt, op);

	return queue_complete(t, a->id, a->attempt_id, a->now_ms, &a->out);
}

static void
finish_done(struct wr_op *op)
{
	struct attempt *a = SL_CONTAINER_OF(op, struct attempt, op);
	struct sched *s = a->s;

	if (op->rc == SL_EFULL) {
		/* The store is full: keep the outcome and try again in a second
		 * rather than leave the job In Progress until a restart. */
		log_warn("sched: the store is full; storing the outcome of %s again in 1 s",
		    a->id);
		alist_push(&s->parked, a);
		/* set again: a one-shot timer that fired keeps ~0 s left */
		ev_timer_set(&a->again, 1.0, 0.);
		ev_timer_start(s->loop, &a->again);
		return;
	}
	if (op->rc == SL_ESTALE) {
		s->stats.stale++;
		log_debug("sched: result of %s dropped: the job moved on meanwhile", a->id);
	} else if (op->rc) {
		/* Not stored: the job stays In Progress on disk and is put back
		 * at the next start (or expires). Loud, because it means the
		 * store refused a write. */
		log_error("sched: cannot store the outcome of %s: %s", a->id,
		    sl_strerror(op->rc));
	} else if (a->out.verdict == QUEUE_SUCCESS) {
		s->stats.succeeded++;
	} else if (a->out.verdict == QUEUE_FAIL) {
		s->stats.failed++;
		log_info("job %s failed: %s", a->id, a->message);
	} else {
		s->stats.retried++;
	}
	attempt_free(a);
	dispatch(s);
}

/* The upstream's error message, from an OpenAI-style error body
 * ({"error":{"message":...}}, {"error":"..."} or {"message":...}), else the
 * start of the body. `root` is the parsed body, or NULL if it is not JSON. */
static void
error_detail(const struct jscan_value *root, const char *body, size_t len, char *out,
    size_t cap)
{
	struct jscan_value err, msg;
	bool found = false;

	if (root && jscan_get(root, "error", &err)) {
		if (err.type == JS_OBJECT && jscan_get(&err, "message", &msg))
			found = jscan_string(&msg, out, cap) >= 0;
		else if (err.type == JS_STRING)
			found = jscan_string(&err, out, cap) >= 0;
	} else if (root && jscan_get(root, "message", &msg)) {
		found = jscan_string(&msg, out, cap) >= 0;
	}
	if (found)
		return;
	if (len)
		snprintf(out, cap, "%.*s", (int)(len < 200 ? len : 200), body);
	else
		out[0] = '\0';
}

/* Keeps a non-JSON error body as an OpenAI error object (its code a
 * string, as OpenAI's are: "upstream_http_<status>"). */
static char *
wrap_error_body(int status, const char *body, size_t len)
{
	char code[32];
	json_t *o;

	snprintf(code, sizeof code, "upstream_http_%d", status);
	o = json_pack("{s:{s:s%, s:s, s:n, s:s}}", "error", "message", body,
	    len < 4096 ? len : 4096, "type", "upstream_error", "param", "code", code);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	return s;
}

static void
again_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct attempt *a = SL_CONTAINER_OF(w, struct attempt, again);
	struct sched *s = a->s;

	alist_remove(&s->parked, a);
	writer_submit(s->wr, &a->op);
}

static void
call_done(struct be_call *c, const struct be_result *r)
{
	struct attempt *a = SL_CONTAINER_OF(c, struct attempt, call);
	struct sched *s = a->s;
	struct policy_input in = { .retry_after_ms = r->retry_after_ms,
		.attempts = a->attempts };
	struct policy_decision d;
	struct jscan_value root;
	bool is_json = false;
	char detail[320], why[8];
	uint32_t jitter;

	alist_remove(&s->active, a);
	s->call_s = ewma(s->call_s, ev_now(s->loop) - a->started);
	a->now_ms = sl_wall_ms();
	detail[0] = '\0';
	switch (r->fault) {
	case BE_OK:
		in.fault = POLICY_HTTP;
		in.http_status = r->http_status;
		/* Validated in one pass, no tree: the answer is stored as it came. */
		is_json = jscan_parse(r->body, r->body_len, VALIDATE_MAX_DEPTH, &root, why,
		    sizeof why) == 0;
		in.body_is_object = is_json && root.type == JS_OBJECT;
		if (r->http_status < 200 || r->http_status >= 300)
			error_detail(is_json && root.type == JS_OBJECT ? &root : NULL, r->body,
			    r->body_len, detail, sizeof detail);
		break;
	case BE_TIMEOUT:
		in.fault = POLICY_TIMEOUT;
		snprintf(detail, sizeof detail, "no answer within %llu ms",
		    (unsigned long long)s->o.upstream_timeout_ms);
		break;
	case BE_TOO_LARGE:
		in.fault = POLICY_TOO_LARGE;
		break;
	default:
		in.fault = POLICY_CONNECT;
		snprintf(detail, sizeof detail, "%s", r->detail ? r->detail : "");
		break;
	}
	in.detail = detail;
	sl_random_bytes(&jitter, sizeof jitter);
	policy_decide(&s->o.policy, &in, jitter, &d);
	snprintf(a->message, sizeof a->message, "%s", d.message);
	a->out.message = a->message;
	a->out.http_status = (uint16_t)(r->fault == BE_OK ? r->http_status : 0);
	switch (d.action) {
	case POLICY_SUCCEED:
		a->out.verdict = QUEUE_SUCCESS;
		a->response = malloc(r->body_len + 1);
		if (a->response)
			memcpy(a->response, r->body, r->body_len + 1);
		break;
	case POLICY_RETRY:
		a->out.verdict = QUEUE_RETRY;
		a->out.not_before_ms = a->now_ms + d.delay_ms;
		log_info("job %s: %s", a->id, d.message);
		break;
	case POLICY_FAIL:
		a->out.verdict = QUEUE_FAIL;
		a->out.end = r->fault == BE_TIMEOUT ? JOB_END_TIMEOUT
		    : r->fault == BE_CONNECT ? JOB_END_CONNECT
		    : r->fault == BE_OK && (r->http_status < 200 || r->http_status >= 300)
		        ? JOB_END_HTTP : JOB_END_BAD_REPLY;
		/* Keep the upstream's error body so the client sees it. */
		if (r->fault == BE_OK && r->body_len > 0)
			a->response = is_json ? strdup(r->body)
			                      : wrap_error_body(r->http_status, r->body, r->body_len);
		break;
	}
	if (a->response) {
		a->out.response = a->response;
		a->out.response_len = strlen(a->response);
	}
	a->op.apply = finish_apply;
	a->op.done = finish_done;
	a->op.lazy = true;
	a->op.order = a->id;
	ev_timer_init(&a->again, again_cb, 1.0, 0.);
	writer_submit(s->wr, &a->op);
	/* Free slot: start a job claimed ahead, or claim more, now rather than
	 * after the commit. */
	dispatch(s);
	maybe_stopped(s);
}

/* ---- claiming ---- */

static int
claim_one(void *arg, const struct job *j, const void *body, size_t len)
{
	struct claim_op *c = arg;
	struct attempt *a = calloc(1, sizeof *a);

	if (!a)
		return -ENOMEM;
	a->s = c->s;
	memcpy(a->id, j->id, sizeof a->id);
	a->attempt_id = j->attempt_id;
	a->attempts = j->attempts;
	a->call.path = j->kind == JOB_CHAT ? "/chat/completions" : "/completions";
	if (j->flags & JOB_F_METADATA)
		a->body = validate_upstream_body(body, len, &a->body_len);
	if (!a->body) {
		a->body = malloc(len + 1);
		if (a->body) {
			memcpy(a->body, body, len);
			a->body[len] = '\0';
			a->body_len = len;
		}
	}
	/* Even when a copy failed the job is claimed: it goes in the list and
	 * is released below, never forgotten. */
	if (c->got_tail) /* appended: the oldest due is called first */
		c->got_tail->next = a;
	else
		c->got = a;
	c->got_tail = a;
	c->n++;
	return 0;
}

static void
claim_reset(struct claim_op *c)
{
	while (c->got) {
		struct attempt *next = c->got->next;
		attempt_free(c->got);
		c->got = next;
	}
	c->got_tail = NULL;
	c->n = 0;
}

static int
claim_apply(struct store_txn *t, struct wr_op *op)
{
	struct claim_op *c = SL_CONTAINER_OF(op, struct claim_op, op);
	size_t claimed;
	uint64_t lease = c->s->o.upstream_timeout_ms + 60000;
	int rc;

	claim_reset(c); /* apply may run twice (writer.h) */
	rc = queue_claim(t, c->now_ms, c->max, lease, claim_one, c, &claimed, &c->next_due_ms);
	/* Hard, whatever it was: with earlier claims written, a soft error
	 * would commit them, and claim_done frees what it claimed. */
	return writer_is_soft(rc) ? SL_ESTORE : rc;
}

static int
release_apply(struct store_txn *t, struct wr_op *op)
{
	struct attempt *a = SL_CONTAINER_OF(op, struct attempt, op);

	return queue_release(t, a->id, a->attempt_id, sl_wall_ms(), a->called);
}

static void
release_done(struct wr_op *op)
{
	struct attempt *a = SL_CONTAINER_OF(op, struct attempt, op);
	struct sched *s = a->s;

	if (op->rc && op->rc != SL_ESTALE)
		log_warn("sched: could not requeue %s at shutdown (%s); the next start will",
		    a->id, sl_strerror(op->rc));
	attempt_free(a);
	s->releasing--;
	maybe_stopped(s);
	/* No dispatch() here: after a start that failed, the tick paces the
	 * next try (a backend out of memory is not retried in a loop). */
}

/* Gives a claimed job back to the queue without running it. */
static void
release(struct sched *s, struct attempt *a)
{
	a->op.apply = release_apply;
	a->op.done = release_done;
	s->releasing++;
	writer_submit(s->wr, &a->op);
}

static void
claim_done(struct wr_op *op)
{
	struct claim_op *c = SL_CONTAINER_OF(op, struct claim_op, op);
	struct sched *s = c->s;
	uint64_t now;
	bool failed;

	s->claiming--;
	s->reserved -= c->max;
	s->claim_s = ewma(s->claim_s, ev_now(s->loop) - c->sent);
	if (op->rc) {
		log_error("sched: claim failed: %s%s", sl_strerror(op->rc), op->rc == SL_ECORRUPT
		    ? " (an index disagrees with its job: run slowlanectl check --repair)" : "");
		claim_reset(c);
		c->next_due_ms = sl_wall_ms() + 1000; /* try again on the tick */
	}
	while (c->got) {
		struct attempt *a = c->got;
		c->got = a->next;
		a->call.body = a->body;
		a->call.body_len = a->body_len;
		a->call.done = call_done;
		if (s->stopping || s->paused || !a->body) {
			release(s, a);
			continue;
		}
		alist_push(&s->ahead, a); /* dispatch() below starts them */
	}
	now = sl_wall_ms();
	ev_timer_stop(s->loop, &s->due);
	if (c->next_due_ms != UINT64_MAX && c->next_due_ms > now && !s->stopping) {
		ev_timer_set(&s->due, (double)(c->next_due_ms - now) / 1000.0 + 0.001, 0.);
		ev_timer_start(s->loop, &s->due);
	}
	failed = op->rc != 0;
	free(c);
	if (s->stopping)
		maybe_stopped(s);
	else if (failed)
		launch(s); /* no new claim before the due timer: not a loop */
	else
		dispatch(s);
}

/* How many jobs to keep claimed beyond --concurrency (top of the file);
 * none before a call has ended. */
static unsigned
ahead_depth(const struct sched *s)
{
	double want, cap = (double)AHEAD_CAP * s->o.concurrency;

	if (s->call_s <= 0)
		return 0;
	want = 2.0 * s->o.concurrency * s->claim_s / (s->call_s > 1e-4 ? s->call_s : 1e-4);
	return (unsigned)(want < cap ? want : cap);
}

/* Fills the slots: calls for jobs claimed ahead first, then a claim op if
 * there is room (slots and the claim-ahead depth) and something is due. */
static void
dispatch(struct sched *s)
{
	struct store_txn *t = NULL;
	char id[1][SL_ID_LEN + 1];
	size_t n = 0;
	uint64_t now, next = UINT64_MAX;
	unsigned room, max;
	struct claim_op *c;

	if (s->stopping || s->paused)
		return;
	launch(s); /* slots freed since: jobs claimed ahead go first */
	max = s->o.concurrency + ahead_depth(s);
	if (s->claiming >= MAX_CLAIMS || s->active.n + s->ahead.n + s->reserved >= max)
		return;
	room = max - s->active.n - s->ahead.n - s->reserved;
	now = sl_wall_ms();
	/* A cheap look first, so an idle daemon sends the writer nothing. */
	if (store_begin(s->st, true, &t) == 0) {
		store_ready_due(t, now, 1, id, NULL, &n, &next);
		store_abort(t);
	}
	if (n == 0) {
		ev_timer_stop(s->loop, &s->due);
		if (next != UINT64_MAX) {
			ev_timer_set(&s->due, (double)(next - now) / 1000.0 + 0.001, 0.);
			ev_timer_start(s->loop, &s->due);
		}
		return;
	}
	c = calloc(1, sizeof *c);
	if (!c)
		return; /* the tick tries again */
	c->s = s;
	c->max = room;
	c->now_ms = now;
	c->sent = ev_now(s->loop);
	c->op.apply = claim_apply;
	c->op.done = claim_done;
	s->claiming++;
	s->reserved += room;
	writer_submit(s->wr, &c->op);
}

/* ---- expiry ---- */

static void
expired_one(void *arg, const char *id, bool was_in_progress)
{
	struct expire_op *e = arg;

	if (was_in_progress && e->n_inflight < EXPIRE_CHUNK)
		memcpy(e->ids[e->n_inflight++], id, SL_ID_LEN + 1);
}

static int
expire_apply(struct store_txn *t, struct wr_op *op)
{
	struct expire_op *e = SL_CONTAINER_OF(op, struct expire_op, op);
	int rc;

	e->n_inflight = 0;
	rc = queue_expire(t, e->now_ms, EXPIRE_CHUNK, expired_one, e, &e->n, &e->next_ms);
	return writer_is_soft(rc) ? SL_ESTORE : rc; /* as claim_apply */
}

static void sweep(struct sched *s);

static void
expire_done(struct wr_op *op)
{
	struct expire_op *e = SL_CONTAINER_OF(op, struct expire_op, op);
	struct sched *s = e->s;
	bool more = e->op.rc == 0 && e->n == EXPIRE_CHUNK;

	s->expiring = false;
	if (op->rc) {
		log_error("sched: expiry sweep failed: %s", sl_strerror(op->rc));
	} else {
		s->stats.expired += e->n;
		if (e->n)
			log_info("sched: %zu job%s expired", e->n, e->n == 1 ? "" : "s");
	}
	/* Abandon calls of jobs that just expired: their slots are free. Not
	 * if the op failed: its writes were dropped, the jobs still run. */
	for (size_t i = 0; op->rc == 0 && i < e->n_inflight; i++)
		abandon_id(s, e->ids[i]);
	free(e);
	if (more)
		sweep(s);
	dispatch(s);
	maybe_stopped(s);
}

/* Ends expired jobs if any are due. */
static void
sweep(struct sched *s)
{
	struct store_txn *t = NULL;
	char id[1][SL_ID_LEN + 1];
	size_t n = 0;
	uint64_t now = sl_wall_ms(), next;
	struct expire_op *e;

	if (s->expiring || s->stopping)
		return;
	if (store_begin(s->st, true, &t) == 0) {
		store_expiry_due(t, now, 1, id, NULL, &n, &next);
		store_abort(t);
	}
	if (n == 0)
		return;
	e = calloc(1, sizeof *e);
	if (!e)
		return;
	e->s = s;
	e->now_ms = now;
	e->op.apply = expire_apply;
	e->op.done = expire_done;
	s->expiring = true;
	writer_submit(s->wr, &e->op);
}

/* ---- changes made by others (slowlanectl) ---- */

/* Abandons attempts whose job is no longer on them: cancelled or requeued
 * by slowlanectl, which writes the store directly. Their results would be
 * fenced anyway; this frees the slot within a tick. */
static void
audit_list(struct sched *s, struct store_txn *t, struct alist *l)
{
	struct attempt *a, *next;

	for (a = l->head; a; a = next) {
		struct job j;
		int rc = store_job_get(t, a->id, &j);
		next = a->next;
		if (rc == SL_ECORRUPT || (rc == 0 && j.state == JOB_IN_PROGRESS &&
		    j.attempt_id == a->attempt_id))
			continue;
		log_info("sched: abandoning the call for %s: the job was %s elsewhere", a->id,
		    rc ? "deleted" : "changed");
		abandon(s, l, a);
	}
}

static void
audit_active(struct sched *s)
{
	struct store_txn *t = NULL;

	if ((!s->active.n && !s->ahead.n) || store_begin(s->st, true, &t) != 0)
		return;
	audit_list(s, t, &s->active);
	audit_list(s, t, &s->ahead);
	store_abort(t);
}

/* ---- timers and lifecycle ---- */

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sched *s = SL_CONTAINER_OF(w, struct sched, tick);

	audit_active(s);
	store_measure_free(s->st);
	sweep(s);
	dispatch(s);
	/* Reader slots of crashed slowlanectl runs would pin old pages. */
	if (++s->ticks % READER_CHECK_TICKS == 0 && store_reader_check(s->st) > 0)
		log_info("sched: cleared stale LMDB reader slots");
	/* Last, so that the pages this tick read go too: RSS stays what is in
	 * flight, not what was written (store.h). */
	store_release_map(s->st);
}

static void
due_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	dispatch(SL_CONTAINER_OF(w, struct sched, due));
}

static void
grace_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sched *s = SL_CONTAINER_OF(w, struct sched, grace);

	log_warn("sched: grace period over; requeueing %u call%s still in flight",
	    s->active.n, s->active.n == 1 ? "" : "s");
	while (s->active.head) {
		struct attempt *a = s->active.head;
		s->be->ops->cancel(s->be, &a->call);
		alist_remove(&s->active, a);
		release(s, a);
	}
	maybe_stopped(s);
}

int
sched_new(struct ev_loop *loop, struct store *st, struct writer *wr, struct backend *be,
    const struct sched_opts *o, struct sched **out)
{
	struct sched *s = calloc(1, sizeof *s);

	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->st = st;
	s->wr = wr;
	s->be = be;
	s->o = *o;
	if (s->o.concurrency == 0)
		s->o.concurrency = 1;
	ev_timer_init(&s->tick, tick_cb, TICK_S, TICK_S);
	ev_timer_init(&s->due, due_cb, 0., 0.);
	ev_timer_init(&s->grace, grace_cb, 0., 0.);
	*out = s;
	return 0;
}

int
sched_recover(struct store *st, uint64_t now_ms, size_t *total)
{
	struct store_txn *t = NULL;
	size_t n, dropped;
	int rc;

	*total = 0;
	do {
		rc = store_begin(st, false, &t);
		if (rc)
			return rc;
		rc = queue_recover(t, now_ms, 256, &n, &dropped);
		if (rc) {
			store_abort(t);
			return rc;
		}
		rc = store_commit(t);
		if (rc)
			return rc;
		*total += n;
	} while (n + dropped > 0);
	return 0;
}

void
sched_start(struct sched *s)
{
	ev_timer_start(s->loop, &s->tick);
	sweep(s);
	dispatch(s);
}

void
sched_set_paused(struct sched *s, bool paused)
{
	s->paused = paused;
	log_info("sched: dispatch %s", paused ? "paused" : "resumed");
	if (paused)
		release_ahead(s); /* paused: no call starts, running ones end */
	else
		dispatch(s);
}

void
sched_kick(struct sched *s)
{
	dispatch(s);
}

void
sched_shutdown(struct sched *s, void (*done)(void *arg), void *arg)
{
	s->stopping = true;
	s->on_stopped = done;
	s->stopped_arg = arg;
	ev_timer_stop(s->loop, &s->tick);
	ev_timer_stop(s->loop, &s->due);
	release_ahead(s);
	if (s->active.n > 0) {
		log_info("sched: waiting up to %llu ms for %u call%s in flight",
		    (unsigned long long)s->o.shutdown_grace_ms, s->active.n,
		    s->active.n == 1 ? "" : "s");
		ev_timer_set(&s->grace, (double)s->o.shutdown_grace_ms / 1000.0, 0.);
		ev_timer_start(s->loop, &s->grace);
	}
	maybe_stopped(s);
}

void
sched_get_stats(const struct sched *s, struct sched_stats *out)
{
	*out = s->stats;
	out->in_flight = s->active.n;
}

void
sched_free(struct sched *s)
{
	if (!s)
		return;
	ev_timer_stop(s->loop, &s->tick);
	ev_timer_stop(s->loop, &s->due);
	ev_timer_stop(s->loop, &s->grace);
	while (s->active.head) {
		struct attempt *a = s->active.head;
		s->be->ops->cancel(s->be, &a->call);
		alist_remove(&s->active, a);
		attempt_free(a);
	}
	/* Claimed ahead, or outcomes never stored: their jobs are still In
	 * Progress on disk and are put back at the next start. */
	while (s->ahead.head) {
		struct attempt *a = s->ahead.head;
		alist_remove(&s->ahead, a);
		attempt_free(a);
	}
	while (s->parked.head) {
		struct attempt *a = s->parked.head;
		alist_remove(&s->parked, a);
		ev_timer_stop(s->loop, &a->again);
		attempt_free(a);
	}
	free(s);
}
