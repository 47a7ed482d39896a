/*
 * test_sched.c - the scheduler on a real store, a real writer thread and a
 * real libev loop, against a fake backend defined here: it records every
 * call it is given and the test decides when and how each one ends (from
 * an ev_timer, or by answering it at once). What is asserted is what ends
 * up on disk, read back through the store: calls in flight never pass
 * --concurrency, retries and failures follow policy.h, a pause gives the
 * jobs claimed ahead back uncounted, a shutdown stores what ends in the
 * grace and requeues (counted) what does not, a job cancelled in the
 * store is not resurrected by its call's late answer, and a job that
 * expires while its call runs ends with the call cancelled.
 *
 * Only lower bounds on time are asserted (a loaded machine makes things
 * later, never earlier), and every loop run has a guard timer, so a bug
 * fails a test instead of hanging it.
 */
#include "config.h"

#include <errno.h>
#include <ev.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "../tap.h"
#include "slowlane/backend.h"
#include "slowlane/common.h"
#include "slowlane/log.h"
#include "slowlane/queue.h"
#include "slowlane/sched.h"
#include "slowlane/store.h"
#include "slowlane/util.h"
#include "slowlane/writer.h"

#define MAX_CALLS 64
#define MAX_JOBS 32
#define HOLD (-1.0) /* a plan's answer: the test ends the call itself */
/* A plan's answer: in the loop iteration the call started in (fed to the
 * loop with ev_feed_event, never inside start). ev_now has not moved, so
 * the scheduler measures the call as taking no time at all. */
#define SAME_ITERATION (-2.0)
/* How long a run waits for what must happen: only a bug (or a machine
 * starved for minutes) reaches it, so it is generous. */
#define GUARD_S 10.0

/* ---- the fake backend ---- */

struct fake;

/* One call the scheduler started; kept (never freed) until the case ends,
 * so the test can look at it after its be_call is gone. */
struct fake_call {
	struct fake *f;
	struct be_call *c;         /* NULL once answered or cancelled */
	ev_timer answer;           /* ends the call when it fires */
	char job[SL_ID_LEN + 1];   /* the job id, read from the request body */
	char path[32];
	int nth;                   /* 1 = the first call for this job */
	bool answered, cancelled;
	uint64_t start_ms, end_ms; /* sl_wall_ms() at start, and just before done */
	/* The answer, set by the plan (or the test) before it is given: */
	enum be_fault fault;
	int status;
	int64_t retry_after_ms;
	char reply[256];
};

struct fake {
	struct backend be;
	struct store *st;
	struct fake_call *calls[MAX_CALLS];
	int n;              /* calls started */
	int inflight;       /* started, neither answered nor cancelled */
	int max_inflight;
	int cancels;
	int bad_cancel;     /* cancel of a call that had ended (contract) */
	int bad_answer;     /* a test bug: answer of a call that had ended */
	int not_in_progress; /* calls whose job was not In Progress on disk */
	int body_differs;   /* calls whose body was not the stored body */
	uint64_t max_on_disk; /* most jobs In Progress on disk at a start */
	/* Decides how a call ends: sets the answer and returns the delay in
	 * seconds, or HOLD. NULL: 200 with the echo, after 0 s. */
	double (*plan)(struct fake *f, struct fake_call *fc);
};

static void
fake_echo(struct fake_call *fc)
{
	fc->fault = BE_OK;
	fc->status = 200;
	fc->retry_after_ms = -1;
	snprintf(fc->reply, sizeof fc->reply,
	    "{\"object\":\"chat.completion\",\"echo\":\"%s\",\"nth\":%d}", fc->job, fc->nth);
}

/* Ends call `fc` with the answer it holds. Loop thread (inside or outside
 * ev_run: backend.h only forbids done inside start). */
static void
fake_answer(struct fake_call *fc)
{
	struct be_call *c = fc->c;
	struct be_result r = { .fault = fc->fault, .http_status = fc->status,
		.body = fc->reply, .body_len = strlen(fc->reply),
		.retry_after_ms = fc->retry_after_ms, .detail = "fake fault" };

	if (!c) {
		fc->f->bad_answer++; /* answered twice, or after its cancel */
		return;
	}
	ev_timer_stop(EV_DEFAULT, &fc->answer);
	fc->end_ms = sl_wall_ms();
	fc->answered = true;
	fc->c = NULL;
	c->impl = NULL;
	fc->f->inflight--;
	c->done(c, &r); /* frees nothing of ours; `c` is the scheduler's */
}

static void
answer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	fake_answer(SL_CONTAINER_OF(w, struct fake_call, answer));
}

/* Arms `fc` to be answered `delay_s` from now. */
static void
answer_in(struct fake_call *fc, double delay_s)
{
	ev_timer_stop(EV_DEFAULT, &fc->answer);
	ev_timer_set(&fc->answer, delay_s, 0.);
	ev_timer_start(EV_DEFAULT, &fc->answer);
}

static int
fake_start(struct backend *b, struct be_call *c)
{
	struct fake *f = SL_CONTAINER_OF(b, struct fake, be);
	struct fake_call *fc;
	const char *p = c->body ? strstr(c->body, "\"content\":\"") : NULL;
	struct store_txn *t = NULL;
	double delay;

	if (f->n == MAX_CALLS || !(fc = calloc(1, sizeof *fc)))
		return -ENOMEM;
	fc->f = f;
	fc->c = c;
	fc->start_ms = sl_wall_ms();
	if (p)
		snprintf(fc->job, sizeof fc->job, "%.*s", SL_ID_LEN, p + strlen("\"content\":\""));
	snprintf(fc->path, sizeof fc->path, "%s", c->path ? c->path : "");
	for (int i = 0; i < f->n; i++)
		fc->nth += strcmp(f->calls[i]->job, fc->job) == 0;
	fc->nth++;
	ev_timer_init(&fc->answer, answer_cb, 0., 0.);
	f->calls[f->n++] = fc;
	if (++f->inflight > f->max_inflight)
		f->max_inflight = f->inflight;
	c->impl = fc;

	/* The call starts only once its claim has committed (ARCHITECTURE.md,
	 * "In Progress is recoverable"), and with the body as stored. */
	if (store_begin(f->st, true, &t) == 0) {
		struct job j;
		struct store_counts sc;
		const void *body;
		size_t len;

		if (store_job_get(t, fc->job, &j) != 0 || j.state != JOB_IN_PROGRESS)
			f->not_in_progress++;
		if (store_body_get(t, fc->job, &body, &len) != 0 || len != c->body_len ||
		    memcmp(body, c->body, len) != 0)
			f->body_differs++;
		if (store_counts_get(t, &sc) == 0 && sc.by_state[JOB_IN_PROGRESS] > f->max_on_disk)
			f->max_on_disk = sc.by_state[JOB_IN_PROGRESS];
		store_abort(t);
	}

	fake_echo(fc);
	delay = f->plan ? f->plan(f, fc) : 0.;
	if (delay >= 0)
		answer_in(fc, delay);
	else if (delay == SAME_ITERATION)
		ev_feed_event(EV_DEFAULT, &fc->answer, EV_TIMER);
	return 0;
}

static void
fake_cancel(struct backend *b, struct be_call *c)
{
	struct fake *f = SL_CONTAINER_OF(b, struct fake, be);
	struct fake_call *fc = c->impl;

	if (!fc || fc->c != c) {
		f->bad_cancel++;
		return;
	}
	ev_timer_stop(EV_DEFAULT, &fc->answer);
	fc->cancelled = true;
	fc->c = NULL;
	c->impl = NULL;
	f->inflight--;
	f->cancels++;
}

static void
fake_free(struct backend *b)
{
	(void)b; /* the fixture owns it */
}

static const struct backend_ops fake_ops = {
	.start = fake_start,
	.cancel = fake_cancel,
	.free = fake_free,
	.name = "fake",
};

/* The call for job `id` numbered `nth` (1-based), or NULL. */
static struct fake_call *
fake_find(struct fake *f, const char *id, int nth)
{
	for (int i = 0; i < f->n; i++)
		if (strcmp(f->calls[i]->job, id) == 0 && f->calls[i]->nth == nth)
			return f->calls[i];
	return NULL;
}

static int
fake_calls_for(struct fake *f, const char *id)
{
	int n = 0;

	for (int i = 0; i < f->n; i++)
		n += strcmp(f->calls[i]->job, id) == 0;
	return n;
}

/* ---- a fixture: a store in a fresh directory, a writer, a scheduler ---- */

struct fix {
	struct fake fk;
	char dir[256];
	struct store *st;
	struct writer *wr;
	struct sched *s;
	char ids[MAX_JOBS][SL_ID_LEN + 1];
	int nids;
	bool stopped;
	uint64_t stopped_mono_ms;
};

static void
fix_open(struct fix *x, unsigned concurrency, uint64_t grace_ms, const struct policy *p)
{
	struct store_opts so = { .map_size = 64u << 20, .create = true };
	struct sched_opts o = { .concurrency = concurrency, .upstream_timeout_ms = 30000,
		.shutdown_grace_ms = grace_ms,
		.policy = { .max_attempts = 3, .backoff_base_ms = 20, .backoff_max_ms = 40 } };

	memset(x, 0, sizeof *x);
	if (p)
		o.policy = *p;
	x->fk.be.ops = &fake_ops;
	snprintf(x->dir, sizeof x->dir, "%s/slowlane-test-sched-XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(x->dir) || store_open(x->dir, &so, &x->st) != 0 ||
	    writer_start(&x->wr, x->st, EV_DEFAULT, NULL) != 0 ||
	    sched_new(EV_DEFAULT, x->st, x->wr, &x->fk.be, &o, &x->s) != 0) {
		printf("Bail out! cannot set up a store, writer and scheduler in %s\n", x->dir);
		exit(1);
	}
	x->fk.st = x->st;
}

/* Inserts `n` Queued chat jobs (as a submit's commit would), each body
 * naming its own id, expiring `ttl_ms` from now; returns the index of the
 * first. The writer thread may be running: LMDB serialises the two. */
static int
fix_insert(struct fix *x, int n, uint64_t ttl_ms)
{
	struct store_txn *t = NULL;
	uint64_t now = sl_wall_ms();
	int first = x->nids, bad = 0;

	if (x->nids + n > MAX_JOBS || store_begin(x->st, false, &t) != 0)
		abort();
	for (int i = 0; i < n; i++) {
		char *id = x->ids[x->nids++], body[160];
		struct job j = { .state = JOB_QUEUED, .kind = JOB_CHAT, .created_ms = now,
			.not_before_ms = now, .expires_ms = now + ttl_ms };

		bad |= sl_job_id(now, id);
		memcpy(j.id, id, sizeof j.id);
		snprintf(j.model, sizeof j.model, "m");
		job_set_message(&j, "Queued");
		snprintf(body, sizeof body,
		    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}", id);
		bad |= queue_insert(t, &j, body, strlen(body));
	}
	bad |= store_commit(t);
	if (bad) {
		printf("Bail out! cannot insert jobs\n");
		exit(1);
	}
	return first;
}

static void
on_stopped(void *arg)
{
	struct fix *x = arg;

	x->stopped = true;
	x->stopped_mono_ms = sl_mono_ms();
}

static bool run_until(bool (*pred)(struct fix *), struct fix *x, double timeout_s);

static bool
is_stopped(struct fix *x)
{
	return x->stopped;
}

/* Shuts the scheduler down (if the case has not), lets the writer apply
 * what is queued, and frees the scheduler: after this the store holds
 * the final word. */
static void
fix_stop(struct fix *x)
{
	if (!x->s)
		return;
	if (!x->stopped) {
		sched_shutdown(x->s, on_stopped, x);
		run_until(is_stopped, x, GUARD_S);
	}
	writer_stop(x->wr); /* applies what is queued: outcomes, requeues */
	x->wr = NULL;
	sched_free(x->s);
	x->s = NULL;
}

static void
fix_close(struct fix *x)
{
	fix_stop(x);
	ok(x->fk.bad_cancel == 0 && x->fk.bad_answer == 0 && x->fk.inflight == 0,
	    "no call was cancelled after it ended, none answered twice, none left running");
	store_close(x->st);
	tap_rmrf(x->dir);
	for (int i = 0; i < x->fk.n; i++) {
		ev_timer_stop(EV_DEFAULT, &x->fk.calls[i]->answer);
		free(x->fk.calls[i]);
	}
	x->fk.n = 0;
}

static struct sched_stats
stats(struct fix *x)
{
	struct sched_stats ss;

	sched_get_stats(x->s, &ss);
	return ss;
}

/* ---- reading the store back ---- */

static struct job
job_of(struct fix *x, const char *id)
{
	struct store_txn *t = NULL;
	struct job j;

	memset(&j, 0, sizeof j);
	j.state = 0xff;
	if (store_begin(x->st, true, &t) == 0) {
		if (store_job_get(t, id, &j) != 0)
			j.state = 0xff;
		store_abort(t);
	}
	return j;
}

/* The stored result of `id` into buf (NUL-terminated); returns the rc. */
static int
result_of(struct fix *x, const char *id, char *buf, size_t cap)
{
	struct store_txn *t = NULL;
	const void *data;
	size_t len;
	int rc;

	buf[0] = '\0';
	if ((rc = store_begin(x->st, true, &t)) != 0)
		return rc;
	rc = store_result_get(t, id, &data, &len);
	if (rc == 0)
		snprintf(buf, cap, "%.*s", (int)len, (const char *)data);
	store_abort(t);
	return rc;
}

struct hist {
	int n;
	char last[JOB_MESSAGE_MAX + 1];
};

static int
hist_cb(void *arg, const struct store_attempt *a)
{
	struct hist *h = arg;

	h->n++;
	snprintf(h->last, sizeof h->last, "%s", a->message);
	return 0;
}

static struct hist
history_of(struct fix *x, const char *id)
{
	struct store_txn *t = NULL;
	struct hist h = { 0 };

	if (store_begin(x->st, true, &t) == 0) {
		store_attempt_list(t, id, hist_cb, &h);
		store_abort(t);
	}
	return h;
}

static uint64_t
n_in_state(struct fix *x, int state)
{
	struct store_txn *t = NULL;
	struct store_counts sc = { { 0 } };

	if (store_begin(x->st, true, &t) == 0) {
		store_counts_get(t, &sc);
		store_abort(t);
	}
	return sc.by_state[state];
}

/* Every job ended on disk, and every op's `done` has run (the stats move
 * there, a moment after the commit the store shows). */
static bool
all_ended(struct fix *x)
{
	return n_in_state(x, JOB_SUCCESS) + n_in_state(x, JOB_FAILED) == (uint64_t)x->nids &&
	    writer_pending(x->wr) == 0;
}

/* ---- running the loop ---- */

static bool (*run_pred)(struct fix *);
static struct fix *run_fix;

static void
run_check_cb(struct ev_loop *loop, ev_check *w, int revents)
{
	if (run_pred && run_pred(run_fix))
		ev_break(loop, EVBREAK_ALL);
}

static void
run_guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

static void
run_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w; /* only wakes the loop, so the predicate sees the store */
}

/* Runs the loop until pred(x) holds (checked after every iteration, and
 * every 5 ms), or for timeout_s at most. NULL pred: runs for timeout_s.
 * Returns whether pred held. */
static bool
run_until(bool (*pred)(struct fix *), struct fix *x, double timeout_s)
{
	ev_check check;
	ev_timer guard, tick;

	run_pred = pred;
	run_fix = x;
	if (pred && pred(x))
		return true;
	ev_check_init(&check, run_check_cb);
	ev_timer_init(&guard, run_guard_cb, timeout_s, 0.);
	ev_timer_init(&tick, run_tick_cb, 0.005, 0.005);
	ev_check_start(EV_DEFAULT, &check);
	ev_timer_start(EV_DEFAULT, &guard);
	ev_timer_start(EV_DEFAULT, &tick);
	ev_run(EV_DEFAULT, 0);
	ev_check_stop(EV_DEFAULT, &check);
	ev_timer_stop(EV_DEFAULT, &guard);
	ev_timer_stop(EV_DEFAULT, &tick);
	run_pred = NULL;
	return pred ? pred(x) : true;
}

static void
run_for(struct fix *x, double s)
{
	run_until(NULL, x, s);
}

/* ---- 1. concurrency ---- */

static double
plan_20ms(struct fake *f, struct fake_call *fc)
{
	return 0.02;
}

static void
case_concurrency(void)
{
	struct fix x;
	struct sched_stats ss;
	int good_jobs = 0, good_results = 0, once = 0, paths = 0;

	fix_open(&x, 3, 2000, NULL);
	x.fk.plan = plan_20ms;
	fix_insert(&x, 12, 600000);
	sched_start(x.s);
	ok(run_until(all_ended, &x, GUARD_S), "concurrency 3, 12 jobs: every job ends");
	ok(x.fk.max_inflight <= 3, "never more than 3 calls in flight (most seen: %d)",
	    x.fk.max_inflight);
	is_int(x.fk.max_inflight, 3, "with 12 jobs due, all 3 slots are used");
	is_int(x.fk.n, 12, "12 calls for 12 jobs");
	is_int(x.fk.not_in_progress, 0, "each call starts with its job In Progress on disk");
	is_int(x.fk.body_differs, 0, "each call is sent the stored request body");
	printf("# claim-ahead: up to %llu jobs In Progress on disk with <= 3 calls\n",
	    (unsigned long long)x.fk.max_on_disk);
	for (int i = 0; i < x.nids; i++) {
		struct job j = job_of(&x, x.ids[i]);
		struct fake_call *fc = fake_find(&x.fk, x.ids[i], 1);
		char res[300];

		once += fake_calls_for(&x.fk, x.ids[i]) == 1;
		paths += fc && strcmp(fc->path, "/chat/completions") == 0;
		good_jobs += j.state == JOB_SUCCESS && j.attempts == 1 && j.http_status == 200 &&
		    strcmp(j.message, "Generation successful") == 0 && j.finished_ms > 0 &&
		    history_of(&x, x.ids[i]).n == 1;
		good_results += fc && result_of(&x, x.ids[i], res, sizeof res) == 0 &&
		    strcmp(res, fc->reply) == 0;
	}
	is_int(once, 12, "each job is called exactly once");
	is_int(paths, 12, "chat jobs are sent to /chat/completions");
	is_int(good_jobs, 12, "each job is Success, 1 attempt, HTTP 200, one history entry");
	is_int(good_results, 12, "each job's result is its own call's answer, as sent");
	is_int(n_in_state(&x, JOB_SUCCESS), 12, "the per-state counts say 12 Success");
	ss = stats(&x);
	ok(ss.succeeded == 12 && ss.failed == 0 && ss.retried == 0 && ss.in_flight == 0,
	    "stats: 12 succeeded, none failed or retried, none in flight");
	fix_close(&x);
}

/* ---- 2. retries and failures ---- */

enum { R_503_THEN_OK, R_ALWAYS_500, R_400, R_429_RETRY_AFTER, R_CONNECT_THEN_OK, R_TOO_LARGE };
#define RETRY_AFTER_MS 300

static struct fix *case2;

static double
plan_retries(struct fake *f, struct fake_call *fc)
{
	int role = -1;

	for (int i = 0; i < case2->nids; i++)
		if (strcmp(case2->ids[i], fc->job) == 0)
			role = i;
	switch (role) {
	case R_503_THEN_OK:
		if (fc->nth == 1) {
			fc->status = 503;
			snprintf(fc->reply, sizeof fc->reply,
			    "{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}");
		}
		break;
	case R_ALWAYS_500:
		fc->status = 500;
		snprintf(fc->reply, sizeof fc->reply, "{\"error\":{\"message\":\"boom %d\"}}",
		    fc->nth);
		break;
	case R_400:
		fc->status = 400;
		snprintf(fc->reply, sizeof fc->reply,
		    "{\"error\":{\"message\":\"unknown model m\",\"type\":\"invalid_request_error\"}}");
		break;
	case R_429_RETRY_AFTER:
		if (fc->nth == 1) {
			fc->status = 429;
			fc->retry_after_ms = RETRY_AFTER_MS;
			snprintf(fc->reply, sizeof fc->reply, "{\"error\":\"slow down\"}");
		}
		break;
	case R_CONNECT_THEN_OK:
		if (fc->nth == 1) {
			fc->fault = BE_CONNECT;
			fc->status = 0;
			fc->reply[0] = '\0';
		}
		break;
	case R_TOO_LARGE:
		fc->fault = BE_TOO_LARGE;
		fc->status = 0;
		fc->reply[0] = '\0';
		break;
	}
	return 0.005;
}

static void
case_retries(void)
{
	struct fix x;
	struct policy p = { .max_attempts = 3, .backoff_base_ms = 40, .backoff_max_ms = 80 };
	struct fake_call *c1, *c2;
	struct job j;
	struct sched_stats ss;
	char res[300];
	const char *id;

	fix_open(&x, 2, 2000, &p);
	case2 = &x;
	x.fk.plan = plan_retries;
	fix_insert(&x, 6, 600000);
	sched_start(x.s);
	ok(run_until(all_ended, &x, GUARD_S), "retries: every job ends");

	id = x.ids[R_503_THEN_OK];
	j = job_of(&x, id);
	c1 = fake_find(&x.fk, id, 1);
	c2 = fake_find(&x.fk, id, 2);
	ok(j.state == JOB_SUCCESS && j.attempts == 2 && fake_calls_for(&x.fk, id) == 2,
	    "503 then 200: retried once, Success after 2 attempts (%u)", j.attempts);
	ok(c1 && c2 && c2->start_ms >= c1->end_ms + p.backoff_base_ms / 2,
	    "the retry waits at least half the base backoff (%lld ms)",
	    c1 && c2 ? (long long)(c2->start_ms - c1->end_ms) : -1LL);
	ok(result_of(&x, id, res, sizeof res) == 0 && c2 && strcmp(res, c2->reply) == 0,
	    "its result is the second call's answer");
	is_int(history_of(&x, id).n, 2, "two attempts in its history");

	id = x.ids[R_ALWAYS_500];
	j = job_of(&x, id);
	ok(j.state == JOB_FAILED && j.attempts == 3 && fake_calls_for(&x.fk, id) == 3,
	    "500 every time: Failed after max_attempts = 3 calls (%u attempts)", j.attempts);
	ok(j.http_status == 500 && j.end == JOB_END_HTTP, "its status is 500, its end HTTP");
	ok(strstr(j.message, "after 3 attempts") && strstr(j.message, "HTTP 500") &&
	    strstr(j.message, "boom 3"), "its message says why: %s", j.message);
	ok(result_of(&x, id, res, sizeof res) == 0 &&
	    strcmp(res, "{\"error\":{\"message\":\"boom 3\"}}") == 0,
	    "the last error body is kept as its result");
	is_int(history_of(&x, id).n, 3, "three attempts in its history");

	id = x.ids[R_400];
	j = job_of(&x, id);
	ok(j.state == JOB_FAILED && j.attempts == 1 && fake_calls_for(&x.fk, id) == 1,
	    "400: not retried, Failed after 1 call");
	ok(j.http_status == 400 && j.end == JOB_END_HTTP && strstr(j.message, "unknown model m"),
	    "its message carries the upstream's: %s", j.message);
	ok(result_of(&x, id, res, sizeof res) == 0 && strstr(res, "invalid_request_error"),
	    "the upstream's error body is its result");

	id = x.ids[R_429_RETRY_AFTER];
	j = job_of(&x, id);
	c1 = fake_find(&x.fk, id, 1);
	c2 = fake_find(&x.fk, id, 2);
	ok(j.state == JOB_SUCCESS && j.attempts == 2, "429: retried, then Success");
	ok(c1 && c2 && c2->start_ms >= c1->end_ms + RETRY_AFTER_MS,
	    "the retry waits at least Retry-After (%d ms; waited %lld)", RETRY_AFTER_MS,
	    c1 && c2 ? (long long)(c2->start_ms - c1->end_ms) : -1LL);

	id = x.ids[R_CONNECT_THEN_OK];
	j = job_of(&x, id);
	ok(j.state == JOB_SUCCESS && j.attempts == 2 && fake_calls_for(&x.fk, id) == 2,
	    "a connection error is retried, then Success");

	id = x.ids[R_TOO_LARGE];
	j = job_of(&x, id);
	ok(j.state == JOB_FAILED && j.attempts == 1 && j.end == JOB_END_BAD_REPLY &&
	    fake_calls_for(&x.fk, id) == 1, "an answer over the cap fails at once, end bad-reply");
	ok(result_of(&x, id, res, sizeof res) == SL_ENOTFOUND, "and stores no result");

	ok(x.fk.max_inflight <= 2, "never more than 2 calls in flight (%d)", x.fk.max_inflight);
	ss = stats(&x);
	ok(ss.succeeded == 3 && ss.failed == 3 && ss.retried == 5,
	    "stats: 3 succeeded, 3 failed, 5 retries (%llu, %llu, %llu)",
	    (unsigned long long)ss.succeeded, (unsigned long long)ss.failed,
	    (unsigned long long)ss.retried);
	fix_close(&x);
}

/* ---- 3. pause ---- */

static double
plan_hold(struct fake *f, struct fake_call *fc)
{
	return HOLD;
}

/* Makes the writer's next commit take at least 20 ms, and with it the
 * claim round trip the scheduler measures through it. */
static int
slow_apply(struct store_txn *t, struct wr_op *op)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 };

	nanosleep(&ts, NULL);
	return 0;
}

static int slow_done_n;

static void
slow_done(struct wr_op *op)
{
	slow_done_n++;
}

static double
plan_same_iteration(struct fake *f, struct fake_call *fc)
{
	return SAME_ITERATION;
}

static bool
warm_done(struct fix *x)
{
	return stats(x).succeeded == 1;
}

static bool
two_called(struct fix *x)
{
	return x->fk.n == 3; /* the warm-up call and two more */
}

static bool
two_in_progress(struct fix *x)
{
	return n_in_state(x, JOB_IN_PROGRESS) == 2;
}

static bool
three_succeeded(struct fix *x)
{
	return stats(x).succeeded == 3;
}

static void
case_pause(void)
{
	struct fix x;
	struct wr_op slow = { .apply = slow_apply, .done = slow_done };
	char ahead[MAX_JOBS][SL_ID_LEN + 1];
	int n_ahead = 0, first, good = 0, once = 0;
	uint64_t on_disk;

	fix_open(&x, 2, 2000, NULL);
	/* Warm-up, so that the scheduler claims ahead: one job whose claim
	 * round trip takes >= 20 ms and whose call takes no time, so the
	 * depth, 2 × 2 × claim / max(call, 0.1 ms), is at its cap of 4 × 2
	 * whatever the machine's load (sched.c, ahead_depth). */
	x.fk.plan = plan_same_iteration;
	fix_insert(&x, 1, 600000);
	writer_submit(x.wr, &slow);
	sched_start(x.s);
	if (!ok(run_until(warm_done, &x, GUARD_S) && slow_done_n == 1,
	    "pause: the warm-up job ends"))
		goto out;

	x.fk.plan = plan_hold;
	first = fix_insert(&x, 10, 600000);
	sched_kick(x.s);
	if (!ok(run_until(two_called, &x, GUARD_S), "concurrency 2: two calls start and are held"))
		goto out;
	ok(strcmp(x.fk.calls[1]->job, x.ids[first]) == 0 &&
	    strcmp(x.fk.calls[2]->job, x.ids[first + 1]) == 0,
	    "the jobs of one claim are called oldest first (%s, %s)", x.fk.calls[1]->job,
	    x.fk.calls[2]->job);
	run_for(&x, 0.05); /* nothing more should happen; let it, if it does */
	on_disk = n_in_state(&x, JOB_IN_PROGRESS);
	for (int i = first; i < x.nids; i++)
		if (job_of(&x, x.ids[i]).state == JOB_IN_PROGRESS && !fake_find(&x.fk, x.ids[i], 1))
			memcpy(ahead[n_ahead++], x.ids[i], SL_ID_LEN + 1);
	is_int(x.fk.n, 3, "no more than the 2 slots are called");
	ok(n_ahead == 8 && on_disk == 10,
	    "8 jobs are claimed ahead of a free slot, In Progress on disk, uncalled (%d of %llu)",
	    n_ahead, (unsigned long long)on_disk);

	sched_set_paused(x.s, true);
	ok(run_until(two_in_progress, &x, GUARD_S),
	    "paused: the jobs claimed ahead leave In Progress, the 2 called stay");
	for (int i = 0; i < n_ahead; i++) {
		struct job j = job_of(&x, ahead[i]);
		good += j.state == JOB_QUEUED && j.attempts == 0 && j.attempt_id == 0 &&
		    strcmp(j.message, "Queued") == 0 && history_of(&x, ahead[i]).n == 0;
	}
	is_int(good, n_ahead, "each is Queued again, its attempt not counted, no history");
	is_int(n_in_state(&x, JOB_QUEUED), 8, "8 jobs Queued");

	/* The held calls go on while paused, and their slots stay empty. */
	for (int i = 1; i < 3; i++)
		answer_in(x.fk.calls[i], 0.);
	ok(run_until(three_succeeded, &x, GUARD_S), "calls in flight at the pause end, Success");
	run_for(&x, 0.2);
	is_int(x.fk.n, 3, "while paused, no call starts in freed slots (200 ms)");
	is_int(n_in_state(&x, JOB_IN_PROGRESS), 0, "and nothing is claimed");

	x.fk.plan = NULL; /* answer at once from now on */
	sched_set_paused(x.s, false);
	ok(run_until(all_ended, &x, GUARD_S), "resumed: every job ends");
	for (int i = first; i < x.nids; i++) {
		struct job j = job_of(&x, x.ids[i]);
		good += j.state == JOB_SUCCESS && j.attempts == 1 && history_of(&x, x.ids[i]).n == 1;
		once += fake_calls_for(&x.fk, x.ids[i]) == 1;
	}
	is_int(good - n_ahead, 10,
	    "all 10 Success with 1 attempt each (the released claims not counted)");
	is_int(once, 10, "each called exactly once");
	{
		int in_order = x.fk.n == 11;
		for (int i = 4; in_order && i < x.fk.n; i++)
			in_order = strcmp(x.fk.calls[i - 1]->job, x.fk.calls[i]->job) < 0;
		ok(in_order, "after the resume, the released jobs are called in due order");
	}
	ok(x.fk.max_inflight <= 2, "never more than 2 calls in flight (%d)", x.fk.max_inflight);
out:
	fix_close(&x);
}

/* ---- 4. shutdown ---- */

static bool
n_called_1(struct fix *x)
{
	return x->fk.n == 1;
}

static bool
n_called_2(struct fix *x)
{
	return x->fk.n == 2;
}

static bool
n_called_3(struct fix *x)
{
	return x->fk.n == 3;
}

static void
case_shutdown_in_grace(void)
{
	struct fix x;
	struct fake_call *ok_call, *retry_call;
	struct job j;
	char res[300];
	int untouched = 0;

	fix_open(&x, 2, 3000, NULL);
	x.fk.plan = plan_hold;
	fix_insert(&x, 4, 600000);
	sched_start(x.s);
	if (!ok(run_until(n_called_2, &x, GUARD_S), "shutdown: two calls in flight"))
		goto out;
	ok_call = x.fk.calls[0];
	retry_call = x.fk.calls[1];
	retry_call->status = 503;
	snprintf(retry_call->reply, sizeof retry_call->reply, "{\"error\":\"busy\"}");
	answer_in(ok_call, 0.1);
	answer_in(retry_call, 0.1);
	sched_shutdown(x.s, on_stopped, &x);
	ok(!x.stopped, "shutdown waits while calls are in flight");
	ok(run_until(is_stopped, &x, GUARD_S), "the on-stopped callback runs");
	ok(ok_call->answered && retry_call->answered, "after both calls ended in the grace");
	is_int(x.fk.cancels, 0, "nothing is cancelled");
	is_int(x.fk.n, 2, "no call starts after shutdown");
	fix_stop(&x);

	j = job_of(&x, ok_call->job);
	ok(j.state == JOB_SUCCESS && j.attempts == 1, "the answered job is stored Success");
	ok(result_of(&x, ok_call->job, res, sizeof res) == 0 && strcmp(res, ok_call->reply) == 0,
	    "with its result");
	j = job_of(&x, retry_call->job);
	ok(j.state == JOB_QUEUED && j.attempts == 1 && j.http_status == 503 &&
	    strstr(j.message, "retry"), "the 503 is stored as a retry: Queued, 1 attempt (%s)",
	    j.message);
	for (int i = 0; i < x.nids; i++) {
		if (strcmp(x.ids[i], ok_call->job) == 0 || strcmp(x.ids[i], retry_call->job) == 0)
			continue;
		j = job_of(&x, x.ids[i]);
		untouched += j.state == JOB_QUEUED && j.attempts == 0;
	}
	is_int(untouched, 2, "the 2 jobs never called stay Queued, no attempt");
out:
	fix_close(&x);
}

#define GRACE_MS 150

static void
case_shutdown_grace_over(void)
{
	struct fix x;
	struct fake_call *fast, *held[2];
	struct job j;
	uint64_t t0;
	int good = 0;

	fix_open(&x, 3, GRACE_MS, NULL);
	x.fk.plan = plan_hold;
	fix_insert(&x, 3, 600000);
	sched_start(x.s);
	if (!ok(run_until(n_called_3, &x, GUARD_S), "grace: three calls in flight"))
		goto out;
	fast = x.fk.calls[0];
	held[0] = x.fk.calls[1];
	held[1] = x.fk.calls[2];
	ev_now_update(EV_DEFAULT); /* the grace timer counts from now, not the last loop */
	t0 = sl_mono_ms();
	answer_in(fast, 0.03);
	sched_shutdown(x.s, on_stopped, &x);
	ok(run_until(is_stopped, &x, GUARD_S), "the on-stopped callback runs");
	ok(x.stopped_mono_ms - t0 >= GRACE_MS - 1,
	    "not before the grace (%d ms) is over (%llu ms)", GRACE_MS,
	    (unsigned long long)(x.stopped_mono_ms - t0));
	ok(fast->answered && !fast->cancelled, "the call answered in the grace is not cancelled");
	ok(held[0]->cancelled && held[1]->cancelled && x.fk.cancels == 2,
	    "the 2 calls still running are cancelled through the backend");
	is_int(x.fk.bad_cancel, 0, "no call is cancelled after it ended");
	is_int(x.fk.inflight, 0, "nothing is left in flight at the backend");
	fix_stop(&x);

	j = job_of(&x, fast->job);
	ok(j.state == JOB_SUCCESS, "the answered job is stored Success");
	for (int i = 0; i < 2; i++) {
		struct hist h = history_of(&x, held[i]->job);
		j = job_of(&x, held[i]->job);
		good += j.state == JOB_QUEUED && j.attempts == 1 && j.attempt_id == 0 &&
		    strcmp(j.message, "Requeued at shutdown") == 0 && h.n == 1 &&
		    strstr(h.last, "requeued at shutdown") != NULL;
	}
	is_int(good, 2, "the cancelled jobs are Queued on disk, their attempt counted, in history");
	is_int(n_in_state(&x, JOB_IN_PROGRESS), 0, "nothing is left In Progress on disk");
out:
	fix_close(&x);
}

/* ---- 5. a job cancelled in the store while its call runs ---- */

#define CANCEL_MESSAGE "cancelled by operator"

/* As slowlanectl cancel does: its own write transaction, beside the daemon. */
static int
cancel_in_store(struct fix *x, const char *id)
{
	struct store_txn *t = NULL;
	int rc = store_begin(x->st, false, &t);

	if (rc)
		return rc;
	rc = queue_cancel(t, id, sl_wall_ms(), CANCEL_MESSAGE);
	if (rc) {
		store_abort(t);
		return rc;
	}
	return store_commit(t);
}

static struct fix *case5;

static double
plan_hold_first(struct fake *f, struct fake_call *fc)
{
	/* Holds the calls of jobs 0 and 2; answers the others after 10 ms. */
	return strcmp(fc->job, case5->ids[0]) == 0 || strcmp(fc->job, case5->ids[2]) == 0
	    ? HOLD : 0.01;
}

static bool
stale_and_b_done(struct fix *x)
{
	return stats(x).stale == 1 && job_of(x, x->ids[1]).state == JOB_SUCCESS &&
	    writer_pending(x->wr) == 0;
}

static bool
c_abandoned_d_done(struct fix *x)
{
	struct fake_call *c = fake_find(&x->fk, x->ids[2], 1);

	return c && c->cancelled && job_of(x, x->ids[3]).state == JOB_SUCCESS &&
	    writer_pending(x->wr) == 0;
}

static void
case_cancel(void)
{
	struct fix x;
	struct fake_call *a, *c;
	struct job j;
	struct hist h;
	struct sched_stats ss;
	char res[300];

	fix_open(&x, 1, 2000, NULL);
	case5 = &x;
	x.fk.plan = plan_hold_first;
	fix_insert(&x, 2, 600000); /* A (held), B behind it */
	sched_start(x.s);
	ok(run_until(n_called_1, &x, GUARD_S), "cancel: A's call runs");
	run_for(&x, 0.3);
	is_int(x.fk.n, 1, "concurrency 1: B waits (300 ms)");
	a = fake_find(&x.fk, x.ids[0], 1);
	ok(a && !a->answered, "A is the one called");
	ok(cancel_in_store(&x, x.ids[0]) == 0, "A is cancelled in the store (queue_cancel)");
	if (a)
		fake_answer(a); /* the late answer, a Success */
	ok(run_until(stale_and_b_done, &x, GUARD_S), "A's late answer is fenced; B then runs");
	j = job_of(&x, x.ids[0]);
	ok(j.state == JOB_FAILED && strcmp(j.message, CANCEL_MESSAGE) == 0 &&
	    j.end == JOB_END_CANCELLED, "A stays Failed with the cancel message (%s)", j.message);
	ok(result_of(&x, x.ids[0], res, sizeof res) == SL_ENOTFOUND, "A has no result stored");
	h = history_of(&x, x.ids[0]);
	ok(h.n == 1 && strstr(h.last, "cancelled"), "A's one attempt is recorded as abandoned");
	ss = stats(&x);
	ok(ss.succeeded == 1 && ss.stale == 1, "stats: 1 succeeded (B), 1 stale (A)");

	/* Cancelled and never answered: within a tick the scheduler notices,
	 * cancels the call through the backend and frees the slot. */
	fix_insert(&x, 1, 600000); /* C (held) */
	sched_kick(x.s);
	ok(run_until(n_called_3, &x, GUARD_S), "C's call runs");
	fix_insert(&x, 1, 600000); /* D, behind it */
	sched_kick(x.s);
	ok(cancel_in_store(&x, x.ids[2]) == 0, "C is cancelled in the store");
	ok(run_until(c_abandoned_d_done, &x, GUARD_S),
	    "C's call is cancelled through the backend, and D runs in its slot");
	j = job_of(&x, x.ids[2]);
	c = fake_find(&x.fk, x.ids[2], 1);
	ok(j.state == JOB_FAILED && strcmp(j.message, CANCEL_MESSAGE) == 0 && c && !c->answered,
	    "C stays Failed with the cancel message, its call never answered");
	ss = stats(&x);
	ok(ss.abandoned == 1 && ss.succeeded == 2, "stats: 1 abandoned (C), 2 succeeded");
	fix_close(&x);
}

/* ---- 6. a job that expires while its call runs ---- */

#define TTL_MS 300

static bool
expired_and_cancelled(struct fix *x)
{
	return x->fk.n == 1 && x->fk.calls[0]->cancelled &&
	    job_of(x, x->ids[0]).state == JOB_FAILED;
}

static void
case_expiry(void)
{
	struct fix x;
	struct job j;
	struct hist h;
	char res[300];

	fix_open(&x, 1, 2000, NULL);
	x.fk.plan = plan_hold;
	fix_insert(&x, 1, TTL_MS);
	sched_start(x.s);
	ok(run_until(expired_and_cancelled, &x, GUARD_S),
	    "expiry: a job past its time to live ends, and its call is cancelled");
	j = job_of(&x, x.ids[0]);
	ok(j.end == JOB_END_EXPIRED && strstr(j.message, "Expired") &&
	    strstr(j.message, "in progress"), "Failed as expired in progress (%s)", j.message);
	ok(j.finished_ms >= j.expires_ms, "not before its expiry time");
	ok(result_of(&x, x.ids[0], res, sizeof res) == SL_ENOTFOUND, "no result stored");
	h = history_of(&x, x.ids[0]);
	ok(h.n == 1 && strstr(h.last, "expired"), "its one attempt is recorded as abandoned");
	ok(stats(&x).expired == 1 && stats(&x).in_flight == 0, "stats: 1 expired, none in flight");
	fix_close(&x);
}

int
main(void)
{
	uint64_t t0 = sl_mono_ms();

	log_set_level(LOG_ERROR);
	case_concurrency();
	case_retries();
	case_pause();
	case_shutdown_in_grace();
	case_shutdown_grace_over();
	case_cancel();
	case_expiry();
	printf("# %llu ms\n", (unsigned long long)(sl_mono_ms() - t0));
	return tap_done();
}
