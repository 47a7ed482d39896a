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
#include "slowlane/common.h"
#include "slowlane/log.h"
#include "slowlane/util.h"
#include "slowlane/validate.h"

void
api_key_tenant(const char *key, char out[JOB_TENANT_LEN + 1])
{
	char hex[65];

	sl_sha256_hex(key, strlen(key), hex);
	memcpy(out, hex, JOB_TENANT_LEN);
	out[JOB_TENANT_LEN] = '\0';
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

bool
api_authenticate(struct api *a, struct http_req *r, char tenant[JOB_TENANT_LEN + 1])
{
	const char *h = http_req_header(r, "Authorization");
	char hash[65];
	bool ok = false;

	tenant[0] = '\0';
	if (a->n_keys == 0)
		return true;
	if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
		api_reply_err(r, 401, "authentication_error", NULL, "missing_api_key",
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
		api_reply_err(r, 401, "authentication_error", NULL, "invalid_api_key",
		    "Incorrect API key provided.");
	return ok;
}

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
		api_reply_err(r, 503, "server_error", NULL, "store_unavailable",
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
	free(a);
}
