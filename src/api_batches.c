/*
 * api_batches.c - the OpenAI Batch API (API.md section 3): create, get,
 * list, cancel. The work itself is the batch engine's (batchrun.c); these
 * handlers write the batch record and wake it.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_impl.h"
#include "slowlane/batch.h"
#include "slowlane/batchrun.h"
#include "slowlane/common.h"
#include "slowlane/files.h"
#include "slowlane/idem.h"
#include "slowlane/util.h"
#include "slowlane/webhook.h"

struct batch_op {
	struct wr_op op;
	struct api *a;
	struct http_req *req;
	json_t *b;              /* the record (create) */
	char id[BATCH_ID_LEN + 1];
	char tenant[JOB_TENANT_LEN + 1];
	char idem[IDEM_KEY_MAX + 1], digest[IDEM_DIGEST_LEN + 1];
	bool cancel;
	bool new_hook;          /* register `hook` for the batch's webhook_url */
	struct webhook hook;
	char *replay;           /* an earlier answer for the same key */
	bool replay_same;       /* ... for the same request */
};

struct hook_match {
	const char *tenant, *url;
	char id[WEBHOOK_ID_LEN + 1]; /* out: the key's registration for url ("": none) */
	uint64_t created_ms;
};

/* Finds the key's newest registration of the URL that takes batch events:
 * if the URL was registered twice, the secret a client holds is the
 * newer one (webhook_list walks in id order, which is not time order). */
static int
hook_match_one(void *arg, const struct webhook *w)
{
	static const char *const batch_events[] = { "batch.completed", "batch.failed",
		"batch.expired", "batch.cancelled" };
	struct hook_match *m = arg;
	bool wants = false;

	if (strcmp(w->tenant, m->tenant) != 0 || strcmp(w->url, m->url) != 0)
		return 0;
	for (size_t i = 0; i < SL_ARRAY_LEN(batch_events); i++)
		wants |= webhook_wants(w, batch_events[i]);
	if (!wants)
		return 0;
	if (!m->id[0] || w->created_ms >= m->created_ms) {
		snprintf(m->id, sizeof m->id, "%s", w->id);
		m->created_ms = w->created_ms;
	}
	return 0;
}

static void
reply_batch(struct http_req *r, json_t *b)
{
	http_reply_json(r, 200, batch_public(b));
}

static int
create_apply(struct store_txn *t, struct wr_op *op)
{
	struct batch_op *o = SL_CONTAINER_OF(op, struct batch_op, op);
	int rc;

	/* Checked again here, in the writer's transaction: retries that
	 * arrive together were all new when the handler looked. */
	free(o->replay);
	o->replay = NULL;
	if (o->idem[0] && idem_lookup(t, o->tenant, o->idem, o->digest, &o->replay,
	    &o->replay_same) == 0)
		return 0;
	if (o->new_hook) {
		struct hook_match m = { .tenant = o->tenant, .url = o->hook.url };

		/* A create racing this one may have registered the URL since. */
		rc = webhook_list(t, hook_match_one, &m);
		if (rc == 0 && m.id[0])
			rc = json_object_set_new(o->b, "_webhook_id", json_string(m.id)) ? -12 : 0;
		else if (rc == 0)
			rc = webhook_put(t, &o->hook);
		if (rc)
			return rc;
	}
	rc = batch_put(t, o->b);
	if (!rc)
		rc = batch_index_put(t, o->b);
	if (!rc)
		rc = batch_set_active(t, o->id, true);
	if (!rc && o->idem[0]) {
		json_t *pub = batch_public(o->b);
		char *s = pub ? json_dumps(pub, JSON_COMPACT) : NULL;
		json_decref(pub);
		rc = s ? idem_store(t, o->tenant, o->idem, o->digest, s) : -12;
		free(s);
	}
	return rc;
}

static int
cancel_apply(struct store_txn *t, struct wr_op *op)
{
	struct batch_op *o = SL_CONTAINER_OF(op, struct batch_op, op);
	const char *status, *phase;
	json_t *b;
	int rc = batch_get(t, o->id, &b);

	if (rc)
		return rc;
	if (strcmp(json_string_value(json_object_get(b, "_tenant")) ?: "", o->tenant) != 0) {
		json_decref(b);
		return SL_ENOTFOUND;
	}
	status = json_string_value(json_object_get(b, "status")) ?: "";
	phase = json_string_value(json_object_get(b, "_phase")) ?: "";
	if (strcmp(status, "validating") == 0 || strcmp(status, "in_progress") == 0) {
		batch_set_status(b, "cancelling", "cancelling_at", sl_wall_ms());
		if (strcmp(phase, "run") == 0) {
			json_object_set_new(b, "_phase", json_string("cancel"));
			json_object_set_new(b, "_cancel_line", json_integer(1));
		}
		rc = batch_set_active(t, o->id, true);
		if (!rc)
			rc = batch_put(t, b);
	}
	/* Cancelling an ended batch is not an error: it answers as it is. */
	o->b = b;
	return rc;
}

static void
op_done(struct wr_op *op)
{
	struct batch_op *o = SL_CONTAINER_OF(op, struct batch_op, op);

	if (op->rc == 0 && o->replay) {
		api_idem_answer(o->req, o->replay, o->replay_same);
		o->replay = NULL;
	} else if (op->rc == SL_ENOTFOUND)
		api_reply_err(o->req, 404, "invalid_request_error", "batch_id", "batch_not_found",
		    "No such batch.");
	else if (op->rc)
		api_reply_store_err(o->req, op->rc);
	else
		reply_batch(o->req, o->b);
	if (op->rc == 0 && o->a->br)
		batchrun_kick(o->a->br);
	json_decref(o->b);
	free(o->replay);
	free(o);
}

static int
bad(struct http_req *r, const char *param, const char *code, const char *msg)
{
	api_reply_err(r, 400, "invalid_request_error", param, code, msg);
	return -1;
}

/* Checks the create body; on success fills the new record into *out, and
 * when its webhook_url is not yet a registration of the key, a new one
 * into *newhook (*new_hook = true): its secret signs the deliveries. */
static int
build(struct api *a, struct http_req *r, const char *tenant, json_t *in, json_t **out,
    struct webhook *newhook, bool *new_hook)
{
	json_t *fid = json_object_get(in, "input_file_id"), *ep = json_object_get(in, "endpoint");
	json_t *win = json_object_get(in, "completion_window"), *md = json_object_get(in,
	    "metadata"), *wh = json_object_get(in, "webhook_url");
	json_t *oxa = json_object_get(in, "output_expires_after");
	json_int_t out_ttl = 0;
	struct store_txn *t = NULL;
	struct sl_file f;
	struct hook_match hook = { .tenant = tenant, .url = json_string_value(wh) };
	char id[BATCH_ID_LEN + 1], why[200];
	uint64_t now = sl_wall_ms();
	int rc;

	if (!fid || json_is_null(fid))
		return bad(r, "input_file_id", "missing_required_parameter",
		    "Missing required parameter: 'input_file_id'.");
	if (!json_is_string(fid))
		return bad(r, "input_file_id", "invalid_type",
		    "Invalid type for 'input_file_id': expected a string.");
	if (!json_is_string(ep) || (strcmp(json_string_value(ep), "/v1/chat/completions") != 0 &&
	    strcmp(json_string_value(ep), "/v1/completions") != 0))
		return bad(r, "endpoint", "invalid_value",
		    "'endpoint' must be \"/v1/chat/completions\" or \"/v1/completions\".");
	if (!json_is_string(win) || strcmp(json_string_value(win), "24h") != 0)
		return bad(r, "completion_window", "invalid_value",
		    "'completion_window' must be \"24h\".");
	if (md && !json_is_null(md)) {
		const char *k;
		json_t *v;
		if (!json_is_object(md) || json_object_size(md) > 16)
			return bad(r, "metadata", "invalid_value",
			    "'metadata' must be an object of at most 16 string pairs.");
		json_object_foreach(md, k, v)
			if (!json_is_string(v) || strlen(k) > 64 || json_string_length(v) > 512)
				return bad(r, "metadata", "invalid_value", "'metadata' values must "
				    "be strings (keys up to 64, values up to 512 characters).");
	}
	if (oxa && !json_is_null(oxa)) {
		/* As the upload's expires_after (OpenAI: the output and error
		 * files expire that long after they are made). */
		json_t *an = json_object_get(oxa, "anchor"), *sec = json_object_get(oxa, "seconds");
		out_ttl = json_is_integer(sec) ? json_integer_value(sec) : 0;
		if (!json_is_object(oxa) || !json_is_string(an) ||
		    strcmp(json_string_value(an), "created_at") != 0 || out_ttl < 3600 ||
		    out_ttl > 30 * 86400)
			return bad(r, "output_expires_after", "invalid_value",
			    "'output_expires_after' needs anchor \"created_at\" and seconds "
			    "between 3600 and 2592000.");
	}
	if (wh && !json_is_null(wh) && (!json_is_string(wh) ||
	    json_string_length(wh) > WEBHOOK_URL_MAX ||
	    !webhook_url_allowed(json_string_value(wh), a->o.webhook_allow_http,
	    a->o.webhook_allow_private, why, sizeof why)))
		return bad(r, "webhook_url", "invalid_url",
		    json_is_string(wh) ? why : "'webhook_url' must be a string.");
	rc = store_begin(a->st, true, &t);
	if (rc == 0)
		rc = files_get_live(t, json_string_value(fid), tenant, now, &f);
	if (rc == 0 && hook.url)
		rc = webhook_list(t, hook_match_one, &hook);
	store_abort(t);
	if (rc == SL_ENOTFOUND)
		return bad(r, "input_file_id", "file_not_found", "No such input file.");
	if (rc) {
		api_reply_store_err(r, rc);
		return -1;
	}
	if (strcmp(f.purpose, "batch") != 0)
		return bad(r, "input_file_id", "invalid_file",
		    "The input file must have been uploaded with purpose \"batch\".");
	/* Every delivery is signed: with the secret of the key's registration
	 * for this URL, as OpenAI signs with the endpoint's secret. A URL not
	 * yet registered is registered now, for batch events (the seed asks
	 * for no step before); its secret is read with rotate-secret. */
	*new_hook = false;
	if (hook.url && !hook.id[0]) {
		if (webhook_init(newhook, tenant, hook.url, "batch.*", now) != 0) {
			api_reply_err(r, 503, "server_error", NULL, NULL, "No randomness for an id.");
			return -1;
		}
		snprintf(hook.id, sizeof hook.id, "%s", newhook->id);
		*new_hook = true;
	}
	if (batch_new_id(id) != 0) {
		api_reply_err(r, 503, "server_error", NULL, NULL, "No randomness for an id.");
		return -1;
	}
	*out = json_pack("{s:s, s:s, s:s, s:n, s:s, s:s, s:s, s:n, s:n, s:I, s:n, s:I, s:n, "
	    "s:n, s:n, s:n, s:n, s:n, s:{s:i, s:i, s:i}, s:O, s:n, "
	    "s:{s:i, s:i, s:i, s:{s:i}, s:{s:i}}, s:s, s:I, s:s, s:s, s:s}",
	    "id", id, "object", "batch", "endpoint", json_string_value(ep), "errors",
	    "input_file_id", f.id, "completion_window", "24h", "status", "validating",
	    "output_file_id", "error_file_id", "created_at", (json_int_t)(now / 1000),
	    "in_progress_at", "expires_at", (json_int_t)(now / 1000 + 24 * 3600),
	    "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at",
	    "cancelled_at", "request_counts", "total", 0, "completed", 0, "failed", 0,
	    "metadata", md && json_is_object(md) ? md : json_null(), "model",
	    "usage", "input_tokens", 0, "output_tokens", 0, "total_tokens", 0,
	    "input_tokens_details", "cached_tokens", 0, "output_tokens_details",
	    "reasoning_tokens", 0, "_tenant", tenant, "_created_ms", (json_int_t)now,
	    "_phase", "validate", "_webhook_url", json_is_string(wh) ? json_string_value(wh) : "",
	    "_webhook_id", hook.id);
	if (*out && out_ttl)
		json_object_set_new(*out, "_output_ttl_s", json_integer(out_ttl));
	if (!*out) {
		api_reply_err(r, 503, "server_error", NULL, NULL, "Out of memory.");
		return -1;
	}
	return 0;
}

void
api_h_batch_create(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	char tenant[JOB_TENANT_LEN + 1], digest[IDEM_DIGEST_LEN + 1];
	const char *key = http_req_header(r, "Idempotency-Key"), *body;
	struct batch_op *o;
	json_t *in, *rec = NULL;
	size_t len;

	if (!api_authenticate(a, r, tenant))
		return;
	body = http_req_body(r, &len);
	in = json_loadb(body, len, 0, NULL);
	if (!json_is_object(in)) {
		json_decref(in);
		bad(r, NULL, "invalid_json", "The body must be a JSON object.");
		return;
	}
	api_idem_digest("batches", body, len, digest);
	if (api_idem_replay(a, r, tenant, key, digest)) {
		json_decref(in);
		return;
	}
	o = calloc(1, sizeof *o);
	if (!o) {
		json_decref(in);
		api_reply_err(r, 503, "server_error", NULL, NULL, "Out of memory.");
		return;
	}
	if (build(a, r, tenant, in, &rec, &o->hook, &o->new_hook)) {
		json_decref(in);
		free(o);
		return;
	}
	json_decref(in);
	o->a = a;
	o->req = r;
	o->b = rec;
	snprintf(o->id, sizeof o->id, "%s", json_string_value(json_object_get(rec, "id")));
	snprintf(o->tenant, sizeof o->tenant, "%s", tenant);
	if (key)
		snprintf(o->idem, sizeof o->idem, "%s", key);
	memcpy(o->digest, digest, sizeof o->digest);
	o->op.apply = create_apply;
	o->op.done = op_done;
	writer_submit(a->wr, &o->op);
}

void
api_h_batch_get(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	char tenant[JOB_TENANT_LEN + 1];
	struct store_txn *t = NULL;
	json_t *b = NULL;
	int rc;

	if (!api_authenticate(a, r, tenant))
		return;
	rc = store_begin(a->st, true, &t);
	if (rc == 0)
		rc = batch_get(t, http_req_capture(r, 0), &b);
	store_abort(t);
	if (rc == 0 && strcmp(json_string_value(json_object_get(b, "_tenant")) ?: "", tenant))
		rc = SL_ENOTFOUND;
	if (rc == SL_ENOTFOUND)
		api_reply_err(r, 404, "invalid_request_error", "batch_id", "batch_not_found",
		    "No such batch.");
	else if (rc)
		api_reply_store_err(r, rc);
	else
		reply_batch(r, b);
	json_decref(b);
}

void
api_h_batch_cancel(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	char tenant[JOB_TENANT_LEN + 1];
	struct batch_op *o;

	if (!api_authenticate(a, r, tenant))
		return;
	o = calloc(1, sizeof *o);
	if (!o) {
		api_reply_err(r, 503, "server_error", NULL, NULL, "Out of memory.");
		return;
	}
	o->a = a;
	o->req = r;
	o->cancel = true;
	snprintf(o->id, sizeof o->id, "%.*s", BATCH_ID_LEN, http_req_capture(r, 0));
	snprintf(o->tenant, sizeof o->tenant, "%s", tenant);
	o->op.apply = cancel_apply;
	o->op.done = op_done;
	writer_submit(a->wr, &o->op);
}

void
api_h_batch_list(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	char tenant[JOB_TENANT_LEN + 1];
	const char *lim = http_req_query(r, "limit"), *after = http_req_query(r, "after");
	struct store_txn *t = NULL;
	size_t limit = 20, n;
	bool more = false;
	json_t *data;
	int rc;

	if (!api_authenticate(a, r, tenant))
		return;
	if (!api_query_limit(r, lim, 100, &limit))
		return;
	data = json_array();
	rc = store_begin(a->st, true, &t);
	if (rc == 0)
		rc = batch_list(t, tenant, after, limit, data, &more);
	store_abort(t);
	if (rc == SL_ENOTFOUND) {
		json_decref(data);
		bad(r, "after", "invalid_value", "'after' names no batch of yours.");
		return;
	}
	if (rc) {
		json_decref(data);
		api_reply_store_err(r, rc);
		return;
	}
	n = json_array_size(data);
	http_reply_json(r, 200, json_pack("{s:s, s:o, s:O?, s:O?, s:b}", "object", "list", "data",
	    data, "first_id", n ? json_object_get(json_array_get(data, 0), "id") : NULL,
	    "last_id", n ? json_object_get(json_array_get(data, n - 1), "id") : NULL,
	    "has_more", more));
}
