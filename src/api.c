/*
 * api.c - the route table of the HTTP API (API.md sections 1, 2, 4 and 5),
 * authentication, and the small operational endpoints. The handlers for
 * submits and polls are in api_async.c, for webhooks in api_webhooks.c.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_impl.h"
#include "slowlane/apikey.h"
#include "slowlane/idem.h"
#include "slowlane/intake.h"
#include "slowlane/common.h"
#include "slowlane/deliver.h"
#include "slowlane/log.h"
#include "slowlane/util.h"
#include "slowlane/validate.h"

void
api_key_tenant(const char *key, char out[JOB_TENANT_LEN + 1])
{
	char hash[65];

	apikey_hash(key, hash, out); /* one derivation, or keys stop matching */
}

void
api_reply_err(struct http_req *r, int status, const char *type, const char *param,
    const char *code, const char *msg)
{
	struct sl_error e;

	sl_error_set(&e, status, type, param, code, "%s", msg);
	http_reply_error(r, &e);
}

void
api_reply_store_err(struct http_req *r, int rc)
{
	if (rc == SL_EFULL)
		api_reply_err(r, 507, "server_error", NULL, "store_full",
		    "The job store is full; nothing was stored. Retry later.");
	else
		api_reply_err(r, 503, "server_error", NULL, "store_unavailable",
		    "The store could not take the change; nothing was stored. Retry later.");
}

/* Finds `tenant`'s bucket, adding it if new. NULL if memory is short. */
static struct api_bucket *
bucket_of(struct api *a, const char *tenant)
{
	size_t i;

	if (a->used_buckets * 2 >= a->n_buckets) {
		size_t ncap = a->n_buckets ? a->n_buckets * 2 : 64;
		struct api_bucket *nb = calloc(ncap, sizeof *nb);
		if (!nb)
			return NULL;
		for (size_t k = 0; k < a->n_buckets; k++) {
			if (!a->buckets[k].used)
				continue;
			for (i = (size_t)sl_crc32(0, a->buckets[k].tenant,
			    strlen(a->buckets[k].tenant)) &
			    (ncap - 1); nb[i].used; i = (i + 1) & (ncap - 1))
				;
			nb[i] = a->buckets[k];
		}
		free(a->buckets);
		a->buckets = nb;
		a->n_buckets = ncap;
	}
	for (i = (size_t)sl_crc32(0, tenant, strlen(tenant)) & (a->n_buckets - 1);
	    a->buckets[i].used; i = (i + 1) & (a->n_buckets - 1))
		if (strcmp(a->buckets[i].tenant, tenant) == 0)
			return &a->buckets[i];
	memset(&a->buckets[i], 0, sizeof a->buckets[i]);
	snprintf(a->buckets[i].tenant, sizeof a->buckets[i].tenant, "%s", tenant);
	a->buckets[i].used = true;
	a->buckets[i].tokens = -1; /* full on first use */
	a->used_buckets++;
	return &a->buckets[i];
}

/* Token bucket: `rps` per second, bursts up to `rps`. */
static bool
rate_ok(struct api *a, const char *tenant, uint32_t rps)
{
	struct api_bucket *b;
	uint64_t now;

	if (rps == 0 || !(b = bucket_of(a, tenant)))
		return true;
	now = sl_wall_ms();
	if (b->tokens < 0)
		b->tokens = rps;
	else
		b->tokens += (double)(now - b->last_ms) * rps / 1000.0;
	if (b->tokens > rps)
		b->tokens = rps;
	b->last_ms = now;
	if (b->tokens < 1.0)
		return false;
	b->tokens -= 1.0;
	return true;
}

bool
api_authenticate(struct api *a, struct http_req *r, char tenant[JOB_TENANT_LEN + 1])
{
	const char *h = http_req_header(r, "Authorization");
	struct store_txn *t = NULL;
	struct apikey k;
	char hash[65];
	bool ok = false, keyed = a->n_keys > 0;
	uint32_t rps = a->o.rate_limit;

	tenant[0] = '\0';
	a->caller_max_queued = a->o.max_queued;
	if (store_begin(a->st, true, &t) != 0) {
		api_reply_err(r, 503, "server_error", NULL, "store_unavailable",
		    "The store cannot be read.");
		return false;
	}
	if (h && strncasecmp(h, "Bearer ", 7) == 0) {
		h += 7;
		while (*h == ' ')
			h++;
		sl_sha256_hex(h, strlen(h), hash);
		/* Keys from the command line: constant-time, every one. */
		for (size_t i = 0; i < a->n_keys; i++) {
			if (sl_ct_equal(hash, a->keys[i].hash, 64)) {
				memcpy(tenant, a->keys[i].tenant, JOB_TENANT_LEN + 1);
				ok = true;
			}
		}
		/* Keys in the store: looked up by hash, so nothing secret is
		 * compared byte by byte. */
		if (!ok && apikey_get(t, hash, &k) == 0) {
			keyed = true;
			if (!k.revoked) {
				memcpy(tenant, k.tenant, JOB_TENANT_LEN + 1);
				ok = true;
				if (k.rps)
					rps = k.rps;
				if (k.max_queued)
					a->caller_max_queued = k.max_queued;
			}
		}
	}
	if (!keyed)
		keyed = apikey_any(t);
	store_abort(t);
	if (!keyed) {
		tenant[0] = '\0';
		ok = true; /* no keys anywhere: open gateway */
	} else if (!ok) {
		bool missing = !h || !http_req_header(r, "Authorization") ||
		    strncasecmp(http_req_header(r, "Authorization"), "Bearer ", 7) != 0;
		api_reply_err(r, 401, "authentication_error", NULL,
		    missing ? "missing_api_key" : "invalid_api_key", missing
		    ? "You didn't provide an API key. Provide it in an Authorization header: "
		      "'Authorization: Bearer YOUR_KEY'."
		    : "Incorrect API key provided.");
		return false;
	}
	if (!rate_ok(a, tenant, rps)) {
		http_add_header(r, "Retry-After", "1");
		api_reply_err(r, 429, "rate_limit_error", NULL, "rate_limit_exceeded",
		    "Rate limit reached for this key; retry after 1 second.");
		return false;
	}
	return true;
}

bool
api_over_queue_limit(struct api *a, struct http_req *r, const char *tenant, size_t n)
{
	struct store_txn *t = NULL;
	uint64_t have = 0;
	char msg[160];

	if (!a->caller_max_queued)
		return false;
	/* Journaled submits not yet stored count too. The overlay is read
	 * first: a job leaves it only once committed, so it is counted at
	 * least once (twice only in the instant between its commit and its
	 * leaving). */
	if (a->o.intake)
		have = intake_tenant_jobs(a->o.intake, tenant);
	if (store_begin(a->st, true, &t) != 0)
		return false;
	have += store_tenant_unfinished(t, tenant);
	store_abort(t);
	if (have + n <= a->caller_max_queued)
		return false;
	snprintf(msg, sizeof msg, "This key has %llu unfinished jobs, its limit is %llu; "
	    "retry when some have finished.", (unsigned long long)have,
	    (unsigned long long)a->caller_max_queued);
	http_add_header(r, "Retry-After", "5");
	api_reply_err(r, 429, "rate_limit_error", NULL, "queue_limit_exceeded", msg);
	return true;
}

bool
api_idem_replay(struct api *a, struct http_req *r, const char *tenant, const char *key,
    const char *digest)
{
	struct store_txn *t = NULL;
	char *answer = NULL;
	bool same = false;
	int rc;

	if (!key || !*key || store_begin(a->st, true, &t) != 0)
		return false;
	rc = idem_lookup(t, tenant, key, digest, &answer, &same);
	store_abort(t);
	if (rc)
		return false;
	api_idem_answer(r, answer, same);
	return true;
}

void
api_idem_digest(const char *endpoint, const void *body, size_t len,
    char out[IDEM_DIGEST_LEN + 1])
{
	char both[129]; /* hex digests of the endpoint and of the body (+ NUL) */

	sl_sha256_hex(endpoint, strlen(endpoint), both);
	sl_sha256_hex(body, len, both + 64);
	sl_sha256_hex(both, 128, out);
	memcpy(out + 64, both + 64, 65); /* the body's alone, for older records */
}

void
api_idem_answer(struct http_req *r, char *answer, bool same)
{
	if (same) {
		http_reply(r, 200, "application/json", answer, strlen(answer));
		return;
	}
	free(answer);
	api_reply_err(r, 409, "invalid_request_error", "Idempotency-Key",
	    "idempotency_key_reused", "This Idempotency-Key was used with a different request.");
}

bool
api_query_limit(struct http_req *r, const char *value, size_t max, size_t *out)
{
	char *end, msg[80];
	unsigned long v;

	if (!value)
		return true;
	v = strtoul(value, &end, 10);
	if (*end || *value == '-' || v < 1 || v > max) {
		snprintf(msg, sizeof msg, "'limit' must be between 1 and %zu.", max);
		api_reply_err(r, 400, "invalid_request_error", "limit", "invalid_value", msg);
		return false;
	}
	*out = v;
	return true;
}

/* What /healthz and /metrics read from the store, in one read
 * transaction. */
struct figures {
	struct store_counts c;
	struct store_info info;     /* the map's use */
	uint64_t outbox, batches;   /* webhook events not yet sent; batches worked on */
};

/* Reads the per-state counts, and with `all` the rest of `f`; false after
 * answering 503 if the store cannot be read. */
static bool
read_figures(struct api *a, struct http_req *r, bool all, struct figures *f)
{
	struct store_txn *t = NULL;
	int rc = store_begin(a->st, true, &t);

	memset(f, 0, sizeof *f);
	if (rc == 0)
		rc = store_counts_get(t, &f->c);
	if (rc == 0 && all)
		rc = store_get_info(a->st, t, &f->info);
	if (rc == 0 && all)
		rc = store_table_count(t, STORE_T_OUTBOX, &f->outbox);
	if (rc == 0 && all)
		rc = store_table_count(t, STORE_T_BATCH_ACTIVE, &f->batches);
	store_abort(t);
	if (rc)
		api_reply_err(r, 503, "server_error", NULL, "store_unavailable",
		    "The store cannot be read.");
	return rc == 0;
}

static void
h_healthz(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	struct figures f;
	struct sched_stats ss = { 0 };

	if (!read_figures(a, r, false, &f))
		return;
	/* In Progress counts jobs claimed ahead too; calls_in_flight is what
	 * the upstream sees (at most --concurrency). */
	if (a->sc)
		sched_get_stats(a->sc, &ss);
	http_reply_json(r, 200, json_pack("{s:s, s:{s:I, s:I, s:I, s:I}, s:I}", "status", "ok",
	    "jobs", "queued", (json_int_t)f.c.by_state[JOB_QUEUED], "in_progress",
	    (json_int_t)f.c.by_state[JOB_IN_PROGRESS], "success",
	    (json_int_t)f.c.by_state[JOB_SUCCESS], "failed", (json_int_t)f.c.by_state[JOB_FAILED],
	    "calls_in_flight", (json_int_t)ss.in_flight));
}

#define METRICS_MAX 16384 /* bytes of a /metrics answer, at most */

/* One metric in the Prometheus text format: its HELP and TYPE, then
 * `n` samples, each "name{labels} value" (labels may be ""). */
static int
metric(struct sl_buf *b, const char *name, const char *type, const char *help, size_t n,
    const char *const *labels, const uint64_t *values)
{
	int rc = sl_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);

	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = sl_buf_printf(b, "%s%s%s%s %llu\n", name, labels[i][0] ? "{" : "", labels[i],
		    labels[i][0] ? "}" : "", (unsigned long long)values[i]);
	return rc;
}

/* A metric of one sample, without labels. */
static int
metric1(struct sl_buf *b, const char *name, const char *type, const char *help, uint64_t value)
{
	static const char *const none[] = { "" };

	return metric(b, name, type, help, 1, none, &value);
}

/* GET /metrics: the daemon's figures for a Prometheus scrape. Like
 * /healthz, it needs no key and names no tenant; the counters count from
 * the daemon's start. */
static void
h_metrics(struct http_req *r, void *ctx)
{
	static const char *const states[] = { "state=\"queued\"", "state=\"in_progress\"",
		"state=\"success\"", "state=\"failed\"" };
	static const char *const outcomes[] = { "outcome=\"success\"", "outcome=\"failed\"",
		"outcome=\"retried\"", "outcome=\"stale\"", "outcome=\"abandoned\"" };
	static const char *const deliveries[] = { "outcome=\"delivered\"",
		"outcome=\"failed\"", "outcome=\"retried\"" };
	struct api *a = ctx;
	struct figures f;
	struct sched_stats ss = { 0 };
	struct writer_stats ws = { 0 };
	struct deliver_stats ds = { 0 };
	struct sl_buf b;
	char *body;
	size_t len;
	int rc = 0;

	if (!read_figures(a, r, true, &f))
		return;
	if (a->sc)
		sched_get_stats(a->sc, &ss);
	if (a->wr)
		writer_get_stats(a->wr, &ws);
	if (a->dl)
		deliver_get_stats(a->dl, &ds);
	sl_buf_init(&b, METRICS_MAX);
	rc |= metric(&b, "slowlane_jobs", "gauge", "Stored jobs by state (In Progress includes "
	    "jobs claimed ahead of a free slot).", 4, states, (const uint64_t[]){
	    f.c.by_state[JOB_QUEUED], f.c.by_state[JOB_IN_PROGRESS], f.c.by_state[JOB_SUCCESS],
	    f.c.by_state[JOB_FAILED] });
	rc |= metric1(&b, "slowlane_journal_held", "gauge", "Submit records acknowledged from "
	    "the journal and not yet in the store.", a->o.intake ? intake_count(a->o.intake) : 0);
	rc |= metric1(&b, "slowlane_calls_in_flight", "gauge", "Upstream calls running now (at "
	    "most --concurrency).", ss.in_flight);
	rc |= metric1(&b, "slowlane_jobs_submitted_total", "counter", "Jobs acknowledged to a "
	    "submit (each member of a group counts).", a->submitted);
	rc |= metric1(&b, "slowlane_calls_started_total", "counter", "Upstream calls started.",
	    ss.started);
	rc |= metric(&b, "slowlane_calls_ended_total", "counter", "Upstream calls ended, by what "
	    "became of their job (stale: its answer came after the job had moved on; "
	    "abandoned: dropped while running, the job cancelled, changed or expired).", 5,
	    outcomes, (const uint64_t[]){ ss.succeeded, ss.failed, ss.retried, ss.stale,
	    ss.abandoned });
	rc |= metric1(&b, "slowlane_jobs_expired_total", "counter", "Jobs ended by their time to "
	    "live.", ss.expired);
	rc |= metric1(&b, "slowlane_batches_active", "gauge", "Batches the batch engine has work "
	    "for (validating, in progress, finalizing or cancelling).", f.batches);
	rc |= metric1(&b, "slowlane_webhook_outbox", "gauge", "Webhook events stored and not yet "
	    "delivered or given up (due now or waiting for a retry).", f.outbox);
	rc |= metric1(&b, "slowlane_webhook_deliveries_in_flight", "gauge", "Webhook deliveries "
	    "being sent now.", ds.in_flight);
	rc |= metric(&b, "slowlane_webhook_deliveries_total", "counter", "Webhook events, by "
	    "outcome (delivered: a 2xx; failed: given up for good; retried: an attempt "
	    "failed and is tried again later, so an event may count here more than once).", 3,
	    deliveries, (const uint64_t[]){ ds.delivered, ds.failed, ds.retried });
	rc |= metric1(&b, "slowlane_store_commits_total", "counter", "Synced store transactions.",
	    ws.commits);
	rc |= metric1(&b, "slowlane_store_ops_total", "counter", "Operations applied by the "
	    "writer.", ws.ops);
	rc |= metric1(&b, "slowlane_journal_appends_total", "counter", "Synced journal appends.",
	    ws.appends);
	rc |= metric1(&b, "slowlane_store_used_bytes", "gauge", "Bytes of the store's map in use.",
	    f.info.used_bytes);
	rc |= metric1(&b, "slowlane_store_map_bytes", "gauge", "Bytes reserved for the store's map "
	    "(--map-size).", f.info.map_size);
	body = rc ? NULL : sl_buf_detach(&b, &len);
	if (!body) {
		sl_buf_release(&b);
		api_reply_err(r, 503, "server_error", NULL, "out_of_memory",
		    "Out of memory.");
		return;
	}
	http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", body, len);
}

static void
h_models(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	char tenant[JOB_TENANT_LEN + 1];
	json_t *data;

	if (!api_authenticate(a, r, tenant))
		return;
	data = json_array();
	for (size_t i = 0; i < a->n_models; i++)
		json_array_append_new(data, json_pack("{s:s, s:s, s:i, s:s}", "id",
		    a->models[i], "object", "model", "created", 0, "owned_by", "slowlane"));
	http_reply_json(r, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

/* Adding an endpoint is a row here plus a handler. Order matters only for
 * patterns that could both match; none do. */
static const struct http_route routes[] = {
	{ .method = "POST", .pattern = "/v1/slow/chat/completions", .fn = api_h_chat },
	{ .method = "POST", .pattern = "/v1/slow/completions", .fn = api_h_completion },
	{ .method = "POST", .pattern = "/v1/async/chat/completions", .fn = api_h_chat },
	{ .method = "POST", .pattern = "/v1/async/completions", .fn = api_h_completion },
	{ .method = "GET", .pattern = "/v1/generation/*", .fn = api_h_generation },
	{ .method = "POST", .pattern = "/v1/async/group/chat/completions",
	  .fn = api_h_group_chat },
	{ .method = "POST", .pattern = "/v1/async/group/completions",
	  .fn = api_h_group_completion },
	{ .method = "POST", .pattern = "/v1/slow/group/chat/completions",
	  .fn = api_h_group_chat },
	{ .method = "POST", .pattern = "/v1/slow/group/completions",
	  .fn = api_h_group_completion },
	{ .method = "GET", .pattern = "/v1/async/group/*/generations",
	  .fn = api_h_group_generations },
	{ .method = "GET", .pattern = "/v1/slow/group/*/generations",
	  .fn = api_h_group_generations },
	{ .method = "POST", .pattern = "/v1/files", .fn = api_h_file_upload,
	  .part = api_p_file_upload },
	{ .method = "GET", .pattern = "/v1/files", .fn = api_h_file_list },
	{ .method = "GET", .pattern = "/v1/files/*", .fn = api_h_file_get },
	{ .method = "DELETE", .pattern = "/v1/files/*", .fn = api_h_file_delete },
	{ .method = "GET", .pattern = "/v1/files/*/content", .fn = api_h_file_content },
	{ .method = "POST", .pattern = "/v1/batches", .fn = api_h_batch_create },
	{ .method = "GET", .pattern = "/v1/batches", .fn = api_h_batch_list },
	{ .method = "GET", .pattern = "/v1/batches/*", .fn = api_h_batch_get },
	{ .method = "POST", .pattern = "/v1/batches/*/cancel", .fn = api_h_batch_cancel },
	{ .method = "POST", .pattern = "/v1/webhooks", .fn = api_h_webhook_create },
	{ .method = "GET", .pattern = "/v1/webhooks", .fn = api_h_webhook_list },
	{ .method = "GET", .pattern = "/v1/webhooks/*", .fn = api_h_webhook_get },
	{ .method = "DELETE", .pattern = "/v1/webhooks/*", .fn = api_h_webhook_delete },
	{ .method = "POST", .pattern = "/v1/webhooks/*/rotate-secret",
	  .fn = api_h_webhook_rotate },
	{ .method = "GET", .pattern = "/v1/models", .fn = h_models },
	{ .method = "GET", .pattern = "/v1/slow/models", .fn = h_models },
	{ .method = "GET", .pattern = "/v1/async/models", .fn = h_models },
	{ .method = "GET", .pattern = "/healthz", .fn = h_healthz },
	{ .method = "GET", .pattern = "/readyz", .fn = h_healthz },
	{ .method = "GET", .pattern = "/metrics", .fn = h_metrics },
};

const struct http_route *
api_routes(size_t *n)
{
	*n = SL_ARRAY_LEN(routes);
	return routes;
}

int
api_new(struct store *st, struct writer *wr, struct reader *rd, struct sched *sc,
    const struct api_opts *o, struct api **out)
{
	struct api *a = calloc(1, sizeof *a);
	size_t nk = 0, nm = 0;

	if (!a)
		return -ENOMEM;
	a->st = st;
	a->wr = wr;
	a->rd = rd;
	a->sc = sc;
	a->o = *o;
	a->o.keys = a->o.models = NULL;
	a->data_dir = strdup(o->data_dir ? o->data_dir : ".");
	a->o.data_dir = a->data_dir;
	while (o->keys && o->keys[nk])
		nk++;
	while (o->models && o->models[nm])
		nm++;
	a->keys = calloc(nk ? nk : 1, sizeof *a->keys);
	a->models = calloc(nm ? nm : 1, sizeof *a->models);
	if (!a->keys || !a->models || !a->data_dir) {
		api_free(a);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nk; i++) {
		sl_sha256_hex(o->keys[i], strlen(o->keys[i]), a->keys[i].hash);
		memcpy(a->keys[i].tenant, a->keys[i].hash, JOB_TENANT_LEN);
	}
	a->n_keys = nk;
	for (size_t i = 0; i < nm; i++) {
		a->models[i] = strdup(o->models[i]);
		if (!a->models[i]) {
			api_free(a);
			return -ENOMEM;
		}
		a->n_models++;
	}
	*out = a;
	return 0;
}

void
api_set_batchrun(struct api *a, struct batchrun *br)
{
	a->br = br;
}

void
api_set_deliver(struct api *a, struct deliver *dl)
{
	a->dl = dl;
}

uint64_t
api_submitted(const struct api *a)
{
	return a->submitted;
}

void
api_free(struct api *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->n_models; i++)
		free(a->models[i]);
	free(a->models);
	free(a->keys);
	free(a->data_dir);
	free(a->buckets);
	free(a);
}
