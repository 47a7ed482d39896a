/*
 * api_webhooks.c - keys manage their own webhook endpoints (API.md
 * section 4): POST/GET/DELETE /v1/webhooks[/ID] and rotate-secret. The
 * secret is shown only when it is made (create, rotate), as OpenAI and
 * Standard Webhooks providers do.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_impl.h"
#include "slowlane/common.h"
#include "slowlane/idem.h"
#include "slowlane/util.h"
#include "slowlane/webhook.h"

enum wh_action { WH_CREATE, WH_DELETE, WH_ROTATE };

struct webhook_op {
	struct wr_op op;
	struct http_req *req;
	enum wh_action action;
	struct webhook w;
	char idem[IDEM_KEY_MAX + 1], digest[IDEM_DIGEST_LEN + 1]; /* create: Idempotency-Key */
	char *replay;           /* out: the first answer for the same key */
	bool replay_same;       /* ... for the same request */
};

static json_t *
events_json(const char *events)
{
	json_t *arr = json_array();
	const char *p = events;

	if (!*p)
		p = "generation.completed,slow-group.completed,batch.*";
	while (*p) {
		size_t n = strcspn(p, ",");
		json_array_append_new(arr, json_stringn(p, n));
		p += n;
		while (*p == ',' || *p == ' ')
			p++;
	}
	return arr;
}

static json_t *
webhook_json(const struct webhook *w, bool with_secret)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:I}", "id", w->id, "object", "webhook",
	    "url", w->url, "events", events_json(w->events), "created_at",
	    (json_int_t)(w->created_ms / 1000));

	if (o && with_secret)
		json_object_set_new(o, "secret", json_string(w->secret));
	return o;
}

static int
op_apply(struct store_txn *t, struct wr_op *op)
{
	struct webhook_op *o = SL_CONTAINER_OF(op, struct webhook_op, op);
	struct webhook cur;
	int rc;

	if (o->action == WH_CREATE) {
		json_t *pub;
		char *answer;

		free(o->replay); /* apply may run twice (writer.h) */
		o->replay = NULL;
		if (o->idem[0] && idem_lookup(t, o->w.tenant, o->idem, o->digest, &o->replay,
		    &o->replay_same) == 0)
			return 0;
		rc = webhook_put(t, &o->w);
		if (rc || !o->idem[0])
			return rc;
		/* The answer holds the secret, as the first answer did. */
		pub = webhook_json(&o->w, true);
		answer = pub ? json_dumps(pub, JSON_COMPACT) : NULL;
		json_decref(pub);
		rc = answer ? idem_store(t, o->w.tenant, o->idem, o->digest, answer) : -ENOMEM;
		free(answer);
		return rc;
	}
	rc = webhook_get(t, o->w.id, &cur);
	if (rc)
		return rc;
	if (strcmp(cur.tenant, o->w.tenant) != 0)
		return SL_ENOTFOUND;
	if (o->action == WH_DELETE)
		return webhook_delete(t, o->w.id);
	rc = webhook_rotate_secret(&cur);
	if (rc)
		return SL_EINVAL;
	o->w = cur;
	return webhook_put(t, &cur);
}

static void
op_done(struct wr_op *op)
{
	struct webhook_op *o = SL_CONTAINER_OF(op, struct webhook_op, op);

	if (op->rc == 0 && o->replay) {
		api_idem_answer(o->req, o->replay, o->replay_same);
		o->replay = NULL;
	} else if (op->rc == SL_ENOTFOUND)
		api_reply_err(o->req, 404, "invalid_request_error", "id", "webhook_not_found",
		    "No such webhook.");
	else if (op->rc)
		api_reply_store_err(o->req, op->rc);
	else if (o->action == WH_DELETE)
		http_reply_json(o->req, 200, json_pack("{s:s, s:s, s:b}", "id", o->w.id,
		    "object", "webhook", "deleted", 1));
	else
		http_reply_json(o->req, 200, webhook_json(&o->w, true));
	free(o->replay);
	free(o);
}

static void
submit_op(struct api *a, struct http_req *r, struct webhook_op *o)
{
	o->req = r;
	o->op.apply = op_apply;
	o->op.done = op_done;
	writer_submit(a->wr, &o->op);
}

/* Joins an "events" value (array of strings, or a string) into `out`.
 * Returns 0, or -1 (not strings, too long) or -2 (an unknown name, copied
 * into bad[64]). */
static int
events_arg(json_t *ev, char *out, size_t cap, char bad[64])
{
	size_t i;
	json_t *e;

	out[0] = '\0';
	if (!ev || json_is_null(ev))
		return 0;
	if (json_is_string(ev)) {
		/* "a,b" as well as "a"; "" means all. */
		int n = webhook_events_parse(json_string_value(ev), out, cap, bad);
		return n < 0 ? n : 0;
	}
	if (!json_is_array(ev))
		return -1;
	json_array_foreach(ev, i, e) {
		size_t len = strlen(out);
		if (!json_is_string(e) || strchr(json_string_value(e), ','))
			return -1;
		if (!webhook_event_valid(json_string_value(e))) {
			snprintf(bad, 64, "%s", json_string_value(e));
			return -2;
		}
		if ((size_t)snprintf(out + len, cap - len, "%s%s", len ? "," : "",
		    json_string_value(e)) >= cap - len)
			return -1;
	}
	return 0;
}

void
api_h_webhook_create(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	char tenant[JOB_TENANT_LEN + 1], why[256], events[WEBHOOK_EVENTS_MAX + 1];
	const char *body, *url, *key;
	char bad[64];
	int rc;
	struct webhook_op *o;
	json_t *root;
	size_t len;

	if (!api_authenticate(a, r, tenant))
		return;
	body = http_req_body(r, &len);
	root = json_loadb(body, len, 0, NULL);
	url = json_string_value(json_object_get(root, "url"));
	if (!json_is_object(root) || !url) {
		api_reply_err(r, 400, "invalid_request_error", "url", "missing_required_parameter",
		    "The body must be a JSON object with a string 'url'.");
		goto out;
	}
	if (strlen(url) > WEBHOOK_URL_MAX ||
	    !webhook_url_allowed(url, a->o.webhook_allow_http, a->o.webhook_allow_private, why,
	    sizeof why)) {
		api_reply_err(r, 400, "invalid_request_error", "url", "invalid_url",
		    strlen(url) > WEBHOOK_URL_MAX ? "The URL is too long." : why);
		goto out;
	}
	rc = events_arg(json_object_get(root, "events"), events, sizeof events, bad);
	if (rc == -2) {
		snprintf(why, sizeof why, "Unknown event '%.40s': the events are "
		    WEBHOOK_EVENT_NAMES ", or a prefix such as \"batch.*\".", bad);
		api_reply_err(r, 400, "invalid_request_error", "events", "invalid_value", why);
		goto out;
	}
	if (rc) {
		api_reply_err(r, 400, "invalid_request_error", "events", "invalid_type",
		    "'events' must be an array of event names such as \"generation.completed\".");
		goto out;
	}
	o = calloc(1, sizeof *o);
	if (!o || webhook_init(&o->w, tenant, url, events, sl_wall_ms()) != 0) {
		free(o);
		api_reply_err(r, 503, "server_error", NULL, NULL, "Could not create the webhook.");
		goto out;
	}
	o->action = WH_CREATE;
	key = http_req_header(r, "Idempotency-Key");
	if (key && *key) {
		api_idem_digest("webhooks", body, len, o->digest);
		if (api_idem_replay(a, r, tenant, key, o->digest)) {
			free(o);
			goto out;
		}
		snprintf(o->idem, sizeof o->idem, "%s", key);
	}
	submit_op(a, r, o);
out:
	json_decref(root);
}

struct list_ctx {
	const char *tenant;
	json_t *data;
};

static int
list_one(void *arg, const struct webhook *w)
{
	struct list_ctx *l = arg;

	if (strcmp(w->tenant, l->tenant) == 0)
		json_array_append_new(l->data, webhook_json(w, false));
	return 0;
}

void
api_h_webhook_list(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	char tenant[JOB_TENANT_LEN + 1];
	struct store_txn *t = NULL;
	struct list_ctx l;
	int rc;

	if (!api_authenticate(a, r, tenant))
		return;
	l.tenant = tenant;
	l.data = json_array();
	rc = store_begin(a->st, true, &t);
	if (rc == 0)
		rc = webhook_list(t, list_one, &l);
	store_abort(t);
	if (rc) {
		json_decref(l.data);
		api_reply_store_err(r, rc);
		return;
	}
	http_reply_json(r, 200, json_pack("{s:s, s:o}", "object", "list", "data", l.data));
}

void
api_h_webhook_get(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	char tenant[JOB_TENANT_LEN + 1];
	struct store_txn *t = NULL;
	struct webhook w;
	int rc;

	if (!api_authenticate(a, r, tenant))
		return;
	rc = store_begin(a->st, true, &t);
	if (rc == 0)
		rc = webhook_get(t, http_req_capture(r, 0), &w);
	store_abort(t);
	if (rc == 0 && strcmp(w.tenant, tenant) != 0)
		rc = SL_ENOTFOUND;
	if (rc == SL_ENOTFOUND)
		api_reply_err(r, 404, "invalid_request_error", "id", "webhook_not_found",
		    "No such webhook.");
	else if (rc)
		api_reply_store_err(r, rc);
	else
		http_reply_json(r, 200, webhook_json(&w, false));
}

static void
change(struct http_req *r, struct api *a, enum wh_action action)
{
	char tenant[JOB_TENANT_LEN + 1];
	const char *id = http_req_capture(r, 0);
	struct webhook_op *o;

	if (!api_authenticate(a, r, tenant))
		return;
	if (strlen(id) > WEBHOOK_ID_LEN) {
		api_reply_err(r, 404, "invalid_request_error", "id", "webhook_not_found",
		    "No such webhook.");
		return;
	}
	o = calloc(1, sizeof *o);
	if (!o) {
		api_reply_err(r, 503, "server_error", NULL, NULL, "Out of memory.");
		return;
	}
	o->action = action;
	snprintf(o->w.id, sizeof o->w.id, "%s", id);
	snprintf(o->w.tenant, sizeof o->w.tenant, "%s", tenant);
	submit_op(a, r, o);
}

void api_h_webhook_delete(struct http_req *r, void *ctx) { change(r, ctx, WH_DELETE); }
void api_h_webhook_rotate(struct http_req *r, void *ctx) { change(r, ctx, WH_ROTATE); }
