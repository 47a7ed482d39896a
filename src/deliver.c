/*
 * deliver.c - webhook deliveries from the outbox (see deliver.h).
 *
 * Each sweep reads the head of the outbox in a read transaction and starts
 * a request for every due event not already in flight. The outcome goes
 * back to the store through the writer: delivered or given up -> moved to
 * `deliveries`; otherwise -> same event, later due time. A crash between
 * the receiver's 200 and our commit sends the event again, with the same
 * webhook-id: receivers dedupe on it.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/common.h"
#include "slowlane/deliver.h"
#include "slowlane/event.h"
#include "slowlane/httpc.h"
#include "slowlane/log.h"
#include "slowlane/util.h"
#include "slowlane/webhook.h"

#define SWEEP_S 1.0
#define MAX_BACKOFF_MS (10ull * 3600 * 1000)
#define RESPONSE_KEEP 4096 /* bytes of a receiver's answer we read */
#define N_HEADERS 9

struct dlv {
	struct httpc_req req;  /* embedded request */
	struct wr_op op;       /* the outcome's store change */
	struct deliver *d;
	struct dlv *next;      /* in d->flying */
	char id[EVENT_ID_LEN + 1];
	uint64_t due_ms, created_ms;
	uint32_t attempts;     /* before this one */
	char *payload;
	size_t payload_len;
	char url[WEBHOOK_URL_MAX + 1];
	char hdr[N_HEADERS][160];
	const char *hdrs[N_HEADERS + 1];
	/* outcome */
	bool finish, delivered;
	uint16_t status;
	uint64_t new_due_ms;
	char error[EVENT_ERROR_MAX + 1];
};

struct deliver {
	struct ev_loop *loop;
	struct store *st;
	struct writer *wr;
	struct httpc *http;
	struct deliver_opts o;
	ev_timer tick, due;
	struct dlv *flying;    /* in flight or waiting for their commit */
	unsigned n_flying;
	bool stopped;
	struct deliver_stats stats;
};

static void sweep(struct deliver *d);

static void
dlv_free(struct dlv *v)
{
	if (!v)
		return;
	free(v->payload);
	free(v);
}

static void
unlink_dlv(struct deliver *d, struct dlv *v)
{
	for (struct dlv **pp = &d->flying; *pp; pp = &(*pp)->next)
		if (*pp == v) {
			*pp = v->next;
			d->n_flying--;
			return;
		}
}

static bool
is_flying(struct deliver *d, const char *id)
{
	for (struct dlv *v = d->flying; v; v = v->next)
		if (strcmp(v->id, id) == 0)
			return true;
	return false;
}

/* ---- recording the outcome ---- */

static int
outcome_apply(struct store_txn *t, struct wr_op *op)
{
	struct dlv *v = SL_CONTAINER_OF(op, struct dlv, op);

	if (v->finish)
		return event_finish(t, v->due_ms, v->id, v->delivered, v->status, v->error,
		    sl_wall_ms());
	return event_retry(t, v->due_ms, v->id, v->new_due_ms, v->status, v->error);
}

static void
outcome_done(struct wr_op *op)
{
	struct dlv *v = SL_CONTAINER_OF(op, struct dlv, op);
	struct deliver *d = v->d;

	if (op->rc && op->rc != SL_ENOTFOUND)
		log_error("deliver: cannot record the delivery of %s: %s", v->id,
		    sl_strerror(op->rc));
	unlink_dlv(d, v);
	dlv_free(v);
	if (!d->stopped)
		sweep(d);
}

static void
record(struct deliver *d, struct dlv *v)
{
	v->op.apply = outcome_apply;
	v->op.done = outcome_done;
	writer_submit(d->wr, &v->op);
}

/* Gives up on `v` at once (no HTTP attempt), e.g. its webhook is gone. */
static void
give_up(struct deliver *d, struct dlv *v, const char *why)
{
	v->finish = true;
	v->delivered = false;
	snprintf(v->error, sizeof v->error, "%s", why);
	d->stats.failed++;
	log_warn("deliver: event %s not delivered: %s", v->id, why);
	record(d, v);
}

static void
req_done(struct httpc_req *r, const struct httpc_result *res)
{
	struct dlv *v = SL_CONTAINER_OF(r, struct dlv, req);
	struct deliver *d = v->d;
	uint64_t now = sl_wall_ms(), delay;
	bool ok2xx = res->status >= 200 && res->status < 300 &&
	    (res->fault == HTTPC_OK || res->fault == HTTPC_TOO_LARGE);
	bool permanent;
	uint32_t jitter = 0;

	v->status = (uint16_t)(res->fault == HTTPC_OK ? res->status : 0);
	if (ok2xx) {
		v->finish = v->delivered = true;
		v->status = (uint16_t)res->status;
		d->stats.delivered++;
		record(d, v);
		return;
	}
	if (res->fault == HTTPC_OK)
		snprintf(v->error, sizeof v->error, "receiver answered HTTP %d", res->status);
	else
		snprintf(v->error, sizeof v->error, "%s", res->detail ? res->detail : "failed");
	/* 4xx other than 408/429 means the receiver refuses: do not insist. */
	permanent = res->fault == HTTPC_REFUSED || (res->fault == HTTPC_OK &&
	    res->status >= 400 && res->status < 500 && res->status != 408 && res->status != 429);
	delay = d->o.retry_base_ms;
	for (uint32_t i = 0; i < v->attempts && delay < MAX_BACKOFF_MS; i++)
		delay *= 4;
	if (delay > MAX_BACKOFF_MS)
		delay = MAX_BACKOFF_MS;
	sl_random_bytes(&jitter, sizeof jitter);
	delay = delay / 2 + (uint64_t)((delay / 2) * (jitter / 4294967296.0));
	if (permanent || now + delay > v->created_ms + d->o.max_age_ms) {
		v->finish = true;
		v->delivered = false;
		d->stats.failed++;
		log_warn("deliver: event %s failed for good after %u attempt%s: %s", v->id,
		    v->attempts + 1, v->attempts ? "s" : "", v->error);
	} else {
		v->new_due_ms = now + delay;
		d->stats.retried++;
		log_info("deliver: event %s: %s; retrying in %llu ms", v->id, v->error,
		    (unsigned long long)delay);
	}
	record(d, v);
}

/* ---- starting deliveries ---- */

static const char *
subject_header(const char *type)
{
	if (strncmp(type, "slow-group.", 11) == 0)
		return "X-Inference-Group-ID";
	if (strncmp(type, "batch.", 6) == 0)
		return "X-Inference-Batch-ID";
	return "X-Inference-Generation-ID";
}

/* Builds the request of `v` from its event and the webhook registration.
 * Returns NULL when it can be sent, else why not. */
static const char *
prepare(struct deliver *d, struct store_txn *t, const struct event *e, struct dlv *v,
    char *why, size_t cap)
{
	struct webhook w;
	uint64_t ts = sl_wall_ms() / 1000;
	char sig[128];
	unsigned h = 0;

	memset(&w, 0, sizeof w);
	if (e->webhook[0]) {
		if (webhook_get(t, e->webhook, &w) != 0)
			return "the webhook was deleted";
	} else {
		snprintf(w.url, sizeof w.url, "%s", e->url);
	}
	if (!webhook_url_allowed(w.url, d->o.allow_http, d->o.allow_private, why, cap))
		return why;
	snprintf(v->url, sizeof v->url, "%s", w.url);
	snprintf(v->hdr[h++], sizeof v->hdr[0], "Content-Type: application/json");
	snprintf(v->hdr[h++], sizeof v->hdr[0], "User-Agent: slowlane/%s", PACKAGE_VERSION);
	snprintf(v->hdr[h++], sizeof v->hdr[0], "webhook-id: %s", e->id);
	snprintf(v->hdr[h++], sizeof v->hdr[0], "webhook-timestamp: %llu",
	    (unsigned long long)ts);
	if (w.secret[0]) {
		if (webhook_sign(w.secret, e->id, ts, v->payload, v->payload_len, sig,
		    sizeof sig) != 0)
			return "the webhook's secret is malformed";
		snprintf(v->hdr[h++], sizeof v->hdr[0], "webhook-signature: %s", sig);
	}
	snprintf(v->hdr[h++], sizeof v->hdr[0], "X-Inference-Event: %s", e->type);
	if (e->webhook[0])
		snprintf(v->hdr[h++], sizeof v->hdr[0], "X-Inference-Webhook-ID: %s", e->webhook);
	snprintf(v->hdr[h++], sizeof v->hdr[0], "%s: %s", subject_header(e->type), e->subject);
	for (unsigned i = 0; i < h; i++)
		v->hdrs[i] = v->hdr[i];
	v->hdrs[h] = NULL;
	return NULL;
}

struct sweep_ctx {
	struct deliver *d;
	struct store_txn *t;
};

static int
start_one(void *arg, const struct event *e)
{
	struct sweep_ctx *c = arg;
	struct deliver *d = c->d;
	struct dlv *v;
	const char *why;
	char whybuf[200];

	if (d->n_flying >= d->o.concurrency)
		return 1;
	if (is_flying(d, e->id))
		return 0;
	v = calloc(1, sizeof *v);
	if (!v)
		return 1;
	v->d = d;
	memcpy(v->id, e->id, sizeof v->id);
	v->due_ms = e->due_ms;
	v->created_ms = e->created_ms;
	v->attempts = e->attempts;
	v->payload = malloc(e->payload_len + 1);
	if (!v->payload) {
		free(v);
		return 1;
	}
	memcpy(v->payload, e->payload, e->payload_len);
	v->payload[e->payload_len] = '\0';
	v->payload_len = e->payload_len;
	v->next = d->flying;
	d->flying = v;
	d->n_flying++;
	why = prepare(d, c->t, e, v, whybuf, sizeof whybuf);
	if (why) {
		give_up(d, v, why);
		return 0;
	}
	v->req.url = v->url;
	v->req.body = v->payload;
	v->req.body_len = v->payload_len;
	v->req.headers = v->hdrs;
	v->req.timeout_ms = d->o.timeout_ms;
	v->req.max_response = RESPONSE_KEEP;
	v->req.refuse_private = !d->o.allow_private;
	v->req.done = req_done;
	if (httpc_start(d->http, &v->req) != 0) {
		unlink_dlv(d, v);
		dlv_free(v);
		return 1;
	}
	return 0;
}

static void
sweep(struct deliver *d)
{
	struct sweep_ctx c = { .d = d };
	uint64_t now = sl_wall_ms(), next = UINT64_MAX;

	if (d->stopped || d->n_flying >= d->o.concurrency)
		return;
	if (store_begin(d->st, true, &c.t) != 0)
		return;
	/* Look a little past the free slots: some due events may be flying. */
	event_due(c.t, now, d->o.concurrency * 2, start_one, &c, &next);
	store_abort(c.t);
	ev_timer_stop(d->loop, &d->due);
	if (next != UINT64_MAX && next > now && next - now < 1000) {
		ev_timer_set(&d->due, (double)(next - now) / 1000.0 + 0.001, 0.);
		ev_timer_start(d->loop, &d->due);
	}
}

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	sweep(SL_CONTAINER_OF(w, struct deliver, tick));
}

static void
due_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	sweep(SL_CONTAINER_OF(w, struct deliver, due));
}

int
deliver_new(struct ev_loop *loop, struct store *st, struct writer *wr,
    const struct deliver_opts *o, struct deliver **out)
{
	struct deliver *d = calloc(1, sizeof *d);
	int rc;

	if (!d)
		return -ENOMEM;
	d->loop = loop;
	d->st = st;
	d->wr = wr;
	d->o = *o;
	if (!d->o.concurrency)
		d->o.concurrency = 16;
	rc = httpc_new(loop, d->o.concurrency, &d->http);
	if (rc) {
		free(d);
		return rc;
	}
	ev_timer_init(&d->tick, tick_cb, SWEEP_S, SWEEP_S);
	ev_timer_init(&d->due, due_cb, 0., 0.);
	*out = d;
	return 0;
}

void
deliver_start(struct deliver *d)
{
	ev_timer_start(d->loop, &d->tick);
	sweep(d);
}

void
deliver_stop(struct deliver *d)
{
	d->stopped = true;
	ev_timer_stop(d->loop, &d->tick);
	ev_timer_stop(d->loop, &d->due);
	/* Requests still on the wire are dropped; their outcome ops (if any)
	 * are already with the writer and free their dlv when done. */
	for (struct dlv *v = d->flying; v; v = v->next)
		if (v->req.impl)
			httpc_cancel(d->http, &v->req);
}

void
deliver_get_stats(const struct deliver *d, struct deliver_stats *out)
{
	*out = d->stats;
	out->in_flight = d->n_flying;
}

void
deliver_free(struct deliver *d)
{
	if (!d)
		return;
	while (d->flying) {
		struct dlv *v = d->flying;
		d->flying = v->next;
		dlv_free(v);
	}
	httpc_free(d->http);
	free(d);
}
