/*
 * api.c - handlers for the async inference API (see api.h and API.md).
 *
 * The path of one submit: libmicrohttpd has collected the body (capped);
 * submit() checks the key, validates the body (pure code), builds the job
 * and hands an insert op to the writer; the connection stays suspended.
 * When the commit holding the job has synced, submit_done() answers with
 * the id and tells the scheduler. Nothing is acknowledged before the sync.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "slowlane/api.h"
#include "slowlane/common.h"
#include "slowlane/generation.h"
#include "slowlane/log.h"
#include "slowlane/queue.h"
#include "slowlane/util.h"
#include "slowlane/validate.h"

struct api_key {
	char hash[65];                   /* hex SHA-256 of the key */
	char tenant[JOB_TENANT_LEN + 1];
};

struct api {
	struct store *st;
	struct writer *wr;
	struct sched *sc;
	uint64_t job_ttl_ms;
	struct api_key *keys;
	size_t n_keys;
	char **models;
	size_t n_models;
	bool restrict_models;
	uint64_t submitted;
};

struct submit_op {
	struct wr_op op;
	struct api *api;
	struct http_req *req;
	struct job job;
	const char *body; /* the request's own buffer: lives while suspended */
	size_t body_len;
};

/* ---- helpers ---- */

void
api_key_tenant(const char *key, char out[JOB_TENANT_LEN + 1])
{
	char hex[65];

	sl_sha256_hex(key, strlen(key), hex);
	memcpy(out, hex, JOB_TENANT_LEN);
	out[JOB_TENANT_LEN] = '\0';
}

static void
reply_err(struct http_req *r, int status, const char *type, const char *param,
    const char *code, const char *msg)
{
	struct sl_error e;

	sl_error_set(&e, status, type, param, code, "%s", msg);
	http_reply_error(r, &e);
}

/* Finds the caller's tenant. Returns false after answering 401. */
static bool
authenticate(struct api *a, struct http_req *r, char tenant[JOB_TENANT_LEN + 1])
{
	const char *h = http_req_header(r, "Authorization");
	char hash[65];
	bool ok = false;

	tenant[0] = '\0';
	if (a->n_keys == 0)
		return true;
	if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
		reply_err(r, 401, "authentication_error", NULL, "missing_api_key",
		    "You didn't provide an API key. Provide it in an Authorization "
		    "header: 'Authorization: Bearer YOUR_KEY'.");
		return false;
	}
	h += 7;
	while (*h == ' ')
		h++;
	sl_sha256_hex(h, strlen(h), hash);
	/* Compare against every key, in constant time for each. */
	for (size_t i = 0; i < a->n_keys; i++) {
		if (sl_ct_equal(hash, a->keys[i].hash, 64)) {
			memcpy(tenant, a->keys[i].tenant, JOB_TENANT_LEN + 1);
			ok = true;
		}
	}
	if (!ok)
		reply_err(r, 401, "authentication_error", NULL, "invalid_api_key",
		    "Incorrect API key provided.");
	return ok;
}

/* ---- submit ---- */

static int
submit_apply(struct store_txn *t, struct wr_op *op)
{
	struct submit_op *s = SL_CONTAINER_OF(op, struct submit_op, op);

	return queue_insert(t, &s->job, s->body, s->body_len);
}

static void
submit_done(struct wr_op *op)
{
	struct submit_op *s = SL_CONTAINER_OF(op, struct submit_op, op);
	struct api *a = s->api;
	json_t *ans;

	if (op->rc == SL_EFULL) {
		reply_err(s->req, 507, "server_error", NULL, "store_full",
		    "The job store is full; the request was not stored. Retry later.");
	} else if (op->rc) {
		reply_err(s->req, 503, "server_error", NULL, "store_unavailable",
		    "The request could not be stored; it was not accepted. Retry later.");
	} else {
		a->submitted++;
		ans = json_pack("{s:s, s:[], s:I, s:s, s:s}", "id", s->job.id, "choices",
		    "created", (json_int_t)s->job.created_ms, "model", s->job.model,
		    "object", s->job.kind == JOB_CHAT ? "chat.completion" : "text_completion");
		http_reply_json(s->req, 200, ans);
		sched_kick(a->sc);
	}
	free(s);
}

static bool
model_served(const struct api *a, const char *model)
{
	if (!a->restrict_models)
		return true;
	for (size_t i = 0; i < a->n_models; i++)
		if (strcmp(a->models[i], model) == 0)
			return true;
	return false;
}

static void
submit(struct http_req *r, struct api *a, enum job_kind kind)
{
	struct validate_info info;
	struct sl_error err;
	struct submit_op *s;
	const char *body;
	size_t len;
	uint64_t now;

	s = calloc(1, sizeof *s);
	if (!s) {
		reply_err(r, 503, "server_error", NULL, NULL, "Out of memory.");
		return;
	}
	if (!authenticate(a, r, s->job.tenant))
		goto fail;
	body = http_req_body(r, &len);
	if (validate_request(kind, body, len, &info, &err)) {
		http_reply_error(r, &err);
		goto fail;
	}
	if (!model_served(a, info.model)) {
		char msg[JOB_MODEL_MAX + 64];
		snprintf(msg, sizeof msg, "The model '%s' does not exist.", info.model);
		json_decref(info.root);
		reply_err(r, 404, "invalid_request_error", "model", "model_not_found", msg);
		goto fail;
	}
	now = sl_wall_ms();
	if (sl_job_id(now, s->job.id)) {
		json_decref(info.root);
		reply_err(r, 503, "server_error", NULL, NULL, "No randomness for an id.");
		goto fail;
	}
	s->job.state = JOB_QUEUED;
	s->job.kind = (uint8_t)kind;
	s->job.flags = (uint8_t)info.flags;
	s->job.created_ms = now;
	s->job.not_before_ms = now;
	s->job.expires_ms = now + a->job_ttl_ms;
	snprintf(s->job.model, sizeof s->job.model, "%s", info.model);
	snprintf(s->job.message, sizeof s->job.message, "Queued");
	json_decref(info.root);
	s->api = a;
	s->req = r;
	s->body = body;
	s->body_len = len;
	s->op.apply = submit_apply;
	s->op.done = submit_done;
	writer_submit(a->wr, &s->op);
	return; /* answered by submit_done after the commit */
fail:
	free(s);
}

static void h_chat(struct http_req *r, void *ctx) { submit(r, ctx, JOB_CHAT); }
static void h_completion(struct http_req *r, void *ctx) { submit(r, ctx, JOB_COMPLETION); }

/* ---- poll ---- */

static void
h_generation(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	const char *id = http_req_capture(r, 0);
	char tenant[JOB_TENANT_LEN + 1];
	struct store_txn *t = NULL;
	struct sl_buf b;
	struct job j;
	int rc;

	if (!authenticate(a, r, tenant))
		return;
	sl_buf_init(&b, (size_t)1 << 30);
	rc = store_begin(a->st, true, &t);
	if (rc)
		goto out;
	if (!sl_id_valid(id, SL_ID_LEN)) {
		rc = SL_ENOTFOUND;
		goto out;
	}
	rc = store_job_get(t, id, &j);
	/* Another key's job is indistinguishable from a missing one. */
	if (rc == 0 && strcmp(j.tenant, tenant) != 0)
		rc = SL_ENOTFOUND;
	if (rc == 0)
		rc = generation_render(t, &j, &b);
out:
	store_abort(t);
	if (rc == SL_ENOTFOUND) {
		char msg[96];
		snprintf(msg, sizeof msg, "No generation with id '%.40s'.", id ? id : "");
		reply_err(r, 404, "invalid_request_error", "id", "generation_not_found", msg);
	} else if (rc) {
		log_error("api: reading generation %s: %s", id, sl_strerror(rc));
		reply_err(r, 500, "server_error", NULL, rc == SL_ECORRUPT ? "record_corrupt" : NULL,
		    rc == SL_ECORRUPT ? "The stored generation failed its checksum."
		                      : "The generation could not be read.");
	} else {
		size_t len;
		char *s = sl_buf_detach(&b, &len);
		http_reply(r, 200, "application/json", s, len);
	}
	sl_buf_release(&b);
}

/* ---- operations ---- */

static void
h_healthz(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	struct store_txn *t = NULL;
	struct store_counts c;
	int rc = store_begin(a->st, true, &t);

	if (rc == 0)
		rc = store_counts_get(t, &c);
	store_abort(t);
	if (rc) {
		reply_err(r, 503, "server_error", NULL, "store_unavailable",
		    "The store cannot be read.");
		return;
	}
	http_reply_json(r, 200, json_pack("{s:s, s:{s:I, s:I, s:I, s:I}}", "status", "ok",
	    "jobs", "queued", (json_int_t)c.by_state[JOB_QUEUED], "in_progress",
	    (json_int_t)c.by_state[JOB_IN_PROGRESS], "success",
	    (json_int_t)c.by_state[JOB_SUCCESS], "failed", (json_int_t)c.by_state[JOB_FAILED]));
}

static void
h_models(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	char tenant[JOB_TENANT_LEN + 1];
	json_t *data = json_array();

	if (!authenticate(a, r, tenant)) {
		json_decref(data);
		return;
	}
	for (size_t i = 0; i < a->n_models; i++)
		json_array_append_new(data, json_pack("{s:s, s:s, s:i, s:s}", "id",
		    a->models[i], "object", "model", "created", 0, "owned_by", "slowlane"));
	http_reply_json(r, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static const struct http_route routes[] = {
	{ .method = "POST", .pattern = "/v1/slow/chat/completions", .fn = h_chat },
	{ .method = "POST", .pattern = "/v1/slow/completions", .fn = h_completion },
	{ .method = "POST", .pattern = "/v1/async/chat/completions", .fn = h_chat },
	{ .method = "POST", .pattern = "/v1/async/completions", .fn = h_completion },
	{ .method = "GET", .pattern = "/v1/generation/*", .fn = h_generation },
	{ .method = "GET", .pattern = "/v1/models", .fn = h_models },
	{ .method = "GET", .pattern = "/v1/slow/models", .fn = h_models },
	{ .method = "GET", .pattern = "/healthz", .fn = h_healthz },
	{ .method = "GET", .pattern = "/readyz", .fn = h_healthz },
};

const struct http_route *
api_routes(size_t *n)
{
	*n = SL_ARRAY_LEN(routes);
	return routes;
}

int
api_new(struct store *st, struct writer *wr, struct sched *sc, const struct api_opts *o,
    struct api **out)
{
	struct api *a = calloc(1, sizeof *a);
	size_t nk = 0, nm = 0;

	if (!a)
		return -ENOMEM;
	a->st = st;
	a->wr = wr;
	a->sc = sc;
	a->job_ttl_ms = o->job_ttl_ms;
	a->restrict_models = o->restrict_models;
	while (o->keys && o->keys[nk])
		nk++;
	while (o->models && o->models[nm])
		nm++;
	a->keys = calloc(nk ? nk : 1, sizeof *a->keys);
	a->models = calloc(nm ? nm : 1, sizeof *a->models);
	if (!a->keys || !a->models) {
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
	free(a);
}
