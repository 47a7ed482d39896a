/*
 * api_async.c - submit and poll, for single requests (API.md section 1)
 * and groups of up to 50 (section 2).
 *
 * The path of one submit: libmicrohttpd has collected the body (capped);
 * the handler checks the key, validates the body (pure code), builds the
 * job(s) and hands one insert op to the writer; the connection stays
 * suspended. When every job of the request is durable (the journal append
 * that holds them synced, or the commit), insert_done() answers and tells
 * the scheduler. Nothing is acknowledged before the sync, and a group is
 * journaled and stored whole or not at all.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_impl.h"
#include "slowlane/common.h"
#include "slowlane/generation.h"
#include "slowlane/group.h"
#include "slowlane/idem.h"
#include "slowlane/intake.h"
#include "slowlane/jscan.h"
#include "slowlane/log.h"
#include "slowlane/queue.h"
#include "slowlane/util.h"
#include "slowlane/validate.h"
#include "slowlane/webhook.h"

/* One submit (single or group) waiting for its commit. */
struct insert_op {
	struct wr_op op;
	struct api *api;
	struct http_req *req;
	struct group *group;  /* NULL for a single request */
	size_t n;
	struct job *jobs;
	char **bodies;        /* owned copies for groups; NULL for single */
	const char *body;     /* single: the request's own buffer */
	size_t body_len;
	size_t *lens;
	unsigned char *rec;   /* the journal's record of it (intake.h), or NULL */
	/* Idempotency-Key (API.md section 3): such a submit commits directly,
	 * its first answer kept in the transaction that stores it. */
	char idem[IDEM_KEY_MAX + 1], digest[IDEM_DIGEST_LEN + 1];
	char *replay;         /* out: the first answer for the same key */
	bool replay_same;     /* ... for the same request */
};

static int insert_apply(struct store_txn *t, struct wr_op *op);
static void insert_done(struct wr_op *op);

static void
insert_free(struct insert_op *s)
{
	if (!s)
		return;
	for (size_t i = 0; s->bodies && i < s->n; i++)
		free(s->bodies[i]);
	free(s->bodies);
	free(s->lens);
	free(s->jobs);
	free(s->group);
	free(s->rec);
	free(s->replay);
	free(s);
}

/* The answer to a stored submit, into out[cap]: a JSON object, as the
 * seed's { id, choices: [] } for one request, { groupId, groupSize } for a
 * group. Formatted directly, no JSON tree: this is the hot path. Returns
 * its length, or -1 if it does not fit. */
#define ANSWER_MAX (2 * JOB_MODEL_MAX + 200)
static int
format_answer(const struct insert_op *s, char *out, size_t cap)
{
	const struct job *j = &s->jobs[0];
	char model[2 * JOB_MODEL_MAX + 8];
	int n;

	if (s->group) {
		n = snprintf(out, cap, "{\"groupId\":\"%s\",\"groupSize\":%zu}", s->group->id,
		    s->n);
	} else {
		sl_json_escape(model, sizeof model, j->model);
		n = snprintf(out, cap, "{\"id\":\"%s\",\"choices\":[],\"created\":%llu,"
		    "\"model\":\"%s\",\"object\":\"%s\"}", j->id,
		    (unsigned long long)j->created_ms, model,
		    j->kind == JOB_CHAT ? "chat.completion" : "text_completion");
	}
	return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* Hands the submit to the writer, with its record when it may be journaled
 * (without one, for lack of memory, it simply commits directly). */
static void
insert_submit(struct insert_op *s)
{
	struct api *a = s->api;

	s->op.apply = insert_apply;
	s->op.done = insert_done;
	if (writer_journaling(a->wr) && !s->idem[0]) {
		const char *one[1] = { s->body };
		size_t one_len[1] = { s->body_len };
		if (intake_encode(s->jobs, s->n, s->bodies ? (const char *const *)s->bodies : one,
		    s->bodies ? s->lens : one_len, s->group, &s->rec, &s->op.rec_len) == 0)
			s->op.rec = s->rec;
	}
	writer_submit(a->wr, &s->op);
}

static int
insert_apply(struct store_txn *t, struct wr_op *op)
{
	struct insert_op *s = SL_CONTAINER_OF(op, struct insert_op, op);
	char answer[ANSWER_MAX];
	int rc = 0;

	if (s->idem[0]) {
		/* Looked up again here: retries sent together were all new when
		 * their handlers looked. apply may run twice (writer.h). */
		free(s->replay);
		s->replay = NULL;
		if (idem_lookup(t, s->jobs[0].tenant, s->idem, s->digest, &s->replay,
		    &s->replay_same) == 0)
			return 0;
	}
	for (size_t i = 0; rc == 0 && i < s->n; i++)
		rc = queue_insert(t, &s->jobs[i], s->bodies ? s->bodies[i] : s->body,
		    s->bodies ? s->lens[i] : s->body_len);
	if (rc == 0 && s->group)
		rc = group_put(t, s->group);
	if (rc == 0 && s->idem[0])
		rc = format_answer(s, answer, sizeof answer) < 0 ? SL_EINVAL :
		    idem_store(t, s->jobs[0].tenant, s->idem, s->digest, answer);
	return rc;
}

static void
insert_done(struct wr_op *op)
{
	struct insert_op *s = SL_CONTAINER_OF(op, struct insert_op, op);
	struct api *a = s->api;

	if (op->rc) {
		api_reply_store_err(s->req, op->rc);
	} else if (s->replay) {
		api_idem_answer(s->req, s->replay, s->replay_same);
		s->replay = NULL;
	} else {
		char *ans = malloc(ANSWER_MAX);
		int n = ans ? format_answer(s, ans, ANSWER_MAX) : -1;

		a->submitted += s->n;
		if (n >= 0)
			http_reply(s->req, 200, "application/json", ans, (size_t)n);
		else {
			free(ans);
			api_reply_err(s->req, 503, "server_error", NULL, NULL, "Out of memory.");
		}
		sched_kick(a->sc);
	}
	insert_free(s);
}

static bool
model_served(const struct api *a, const char *model)
{
	if (!a->o.restrict_models)
		return true;
	for (size_t i = 0; i < a->n_models; i++)
		if (strcmp(a->models[i], model) == 0)
			return true;
	return false;
}

/* 0 if webhook `id` is registered to `tenant` and takes `event`; else -1
 * with `err` set (400 on `param`). */
static int
webhook_check(struct api *a, const char *id, const char *tenant, const char *event,
    const char *param, struct sl_error *err)
{
	struct store_txn *t = NULL;
	struct webhook w;
	int rc = SL_ENOTFOUND;

	if (store_begin(a->st, true, &t) == 0) {
		rc = webhook_get(t, id, &w);
		store_abort(t);
	}
	if (rc || strcmp(w.tenant, tenant) != 0)
		return sl_error_set(err, 400, "invalid_request_error", param, "webhook_not_found",
		    "No webhook with id '%.40s': register it first (POST /v1/webhooks or "
		    "slowlanectl webhook add).", id);
	if (!webhook_wants(&w, event))
		return sl_error_set(err, 400, "invalid_request_error", param,
		    "webhook_not_subscribed", "The webhook '%.40s' takes only '%.200s' events, "
		    "never %s: nothing would be delivered.", id, w.events, event);
	return 0;
}

/* Fills job `j` from a validated body. Returns 0, or -1 with `err` set. */
static int
build_job(struct api *a, const char *tenant, enum job_kind kind, const struct validate_info *v,
    uint64_t now, struct job *j, struct sl_error *err)
{
	if (!model_served(a, v->model))
		return sl_error_set(err, 404, "invalid_request_error", "model", "model_not_found",
		    "The model '%s' does not exist.", v->model);
	if (v->webhook[0] && webhook_check(a, v->webhook, tenant, "generation.completed",
	    "metadata.webhook_id", err))
		return -1;
	memset(j, 0, sizeof *j);
	if (sl_job_id(now, j->id))
		return sl_error_set(err, 503, "server_error", NULL, NULL, "No randomness for an id.");
	j->state = JOB_QUEUED;
	j->kind = (uint8_t)kind;
	j->flags = (uint8_t)v->flags;
	j->created_ms = j->not_before_ms = now;
	j->expires_ms = now + a->o.job_ttl_ms;
	snprintf(j->tenant, sizeof j->tenant, "%s", tenant);
	snprintf(j->model, sizeof j->model, "%s", v->model);
	snprintf(j->message, sizeof j->message, "Queued");
	snprintf(j->webhook, sizeof j->webhook, "%s", v->webhook);
	return 0;
}

/* Idempotency-Key: answers a retry of a stored submit with its first
 * answer (or 409 for another request) and returns true; else notes the key
 * in `s` for insert_apply and returns false. */
static bool
idem_begin(struct api *a, struct http_req *r, const char *endpoint, const char *tenant,
    const char *body, size_t len, struct insert_op *s)
{
	const char *key = http_req_header(r, "Idempotency-Key");

	if (!key || !*key)
		return false;
	api_idem_digest(endpoint, body, len, s->digest);
	if (api_idem_replay(a, r, tenant, key, s->digest))
		return true;
	snprintf(s->idem, sizeof s->idem, "%s", key);
	return false;
}

static void
submit(struct http_req *r, struct api *a, enum job_kind kind)
{
	char tenant[JOB_TENANT_LEN + 1];
	struct validate_info info;
	struct sl_error err;
	struct insert_op *s = NULL;
	bool replied = false; /* answered already (a replay, a 429) */

	if (!api_authenticate(a, r, tenant))
		return;
	s = calloc(1, sizeof *s);
	if (s)
		s->jobs = calloc(1, sizeof *s->jobs);
	if (!s || !s->jobs) {
		sl_error_set(&err, 503, "server_error", NULL, NULL, "Out of memory.");
		goto fail;
	}
	s->body = http_req_body(r, &s->body_len);
	replied = idem_begin(a, r, kind == JOB_CHAT ? "chat.completions" : "completions",
	    tenant, s->body, s->body_len, s);
	if (replied)
		goto fail;
	if (validate_request(kind, s->body, s->body_len, &info, &err) ||
	    build_job(a, tenant, kind, &info, sl_wall_ms(), &s->jobs[0], &err))
		goto fail;
	/* The quota last: a request that can never succeed is told so, not
	 * told to retry (429). */
	replied = api_over_queue_limit(a, r, tenant, 1);
	if (replied)
		goto fail;
	s->n = 1;
	s->api = a;
	s->req = r;
	insert_submit(s);
	return;
fail:
	insert_free(s);
	if (!replied)
		http_reply_error(r, &err);
}

void api_h_chat(struct http_req *r, void *ctx) { submit(r, ctx, JOB_CHAT); }
void api_h_completion(struct http_req *r, void *ctx) { submit(r, ctx, JOB_COMPLETION); }

/* The bytes of each element of a group's `requests`, as the client sent
 * them (jscan), so that a member is stored as submitted: jansson would
 * print 0.7 back as 0.69999999999999996. */
struct member_spans {
	const char *p[GROUP_MAX];
	size_t len[GROUP_MAX];
	bool ok;
};

static int
span_one(void *arg, size_t i, const struct jscan_value *v)
{
	struct member_spans *ms = arg;

	if (i >= GROUP_MAX || v->type != JS_OBJECT)
		return ms->ok = false, 1;
	ms->p[i] = v->p;
	ms->len[i] = v->len;
	return 0;
}

static void
member_spans(const char *body, size_t len, struct member_spans *ms)
{
	struct jscan_value root, reqs;
	char why[120];

	ms->ok = jscan_parse(body, len, VALIDATE_MAX_DEPTH, &root, why, sizeof why) == 0 &&
	    root.type == JS_OBJECT && jscan_get(&root, "requests", &reqs) &&
	    reqs.type == JS_ARRAY;
	if (ms->ok)
		jscan_elements(&reqs, span_one, ms);
}

/* Validates member `i` of a group (its bytes from `ms` when it has them);
 * on error rewrites `err` to name it. A member's fault is the request's:
 * 400, whatever the status of the same fault in a single submit. */
static int
check_member(struct api *a, const char *tenant, enum job_kind kind, json_t *m, size_t i,
    const struct member_spans *ms, uint64_t now, struct insert_op *s, struct sl_error *err)
{
	struct validate_info info;
	char *text = !json_is_object(m) ? NULL : ms->ok ? strndup(ms->p[i], ms->len[i]) :
	    json_dumps(m, JSON_COMPACT);
	struct sl_error inner;
	int rc;

	if (!text) {
		static char param[32];
		snprintf(param, sizeof param, "requests[%zu]", i);
		return sl_error_set(err, json_is_object(m) ? 503 : 400, json_is_object(m) ?
		    "server_error" : "invalid_request_error", param, "invalid_type",
		    "Invalid request at index %zu of 'requests': expected a request object.", i);
	}
	rc = validate_request(kind, text, strlen(text), &info, &inner);
	if (rc == 0)
		rc = build_job(a, tenant, kind, &info, now, &s->jobs[i], &inner);
	if (rc) {
		free(text);
		/* The param names the member: requests[3].messages. */
		static char param[64];
		snprintf(param, sizeof param, "requests[%zu]%s%s", i, inner.param ? "." : "",
		    inner.param ? inner.param : "");
		return sl_error_set(err, inner.status >= 500 ? inner.status : 400, inner.type,
		    param, inner.code, "Invalid request at index %zu of 'requests': %s", i,
		    inner.message);
	}
	s->bodies[i] = text;
	s->lens[i] = strlen(text);
	return 0;
}

static void
submit_group(struct http_req *r, struct api *a, enum job_kind kind)
{
	char tenant[JOB_TENANT_LEN + 1];
	struct insert_op *s = NULL;
	struct member_spans spans;
	struct sl_error err;
	bool replied = false; /* answered already (a replay, a 429) */
	json_t *root, *reqs, *wh;
	const char *body;
	size_t len, n;
	uint64_t now = sl_wall_ms();
	json_error_t jerr;

	if (!api_authenticate(a, r, tenant))
		return;
	body = http_req_body(r, &len);
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	reqs = json_object_get(root, "requests");
	if (!json_is_object(root)) {
		sl_error_set(&err, 400, "invalid_request_error", NULL, "invalid_json",
		    "The body must be a JSON object {\"requests\": [...]}%s%s.",
		    root ? "" : ": ", root ? "" : jerr.text);
		goto fail;
	}
	if (!json_is_array(reqs)) {
		sl_error_set(&err, 400, "invalid_request_error", "requests",
		    reqs ? "invalid_type" : "missing_required_parameter",
		    "'requests' must be an array of 1 to %d request objects.", GROUP_MAX);
		goto fail;
	}
	n = json_array_size(reqs);
	if (n == 0 || n > GROUP_MAX) {
		sl_error_set(&err, 400, "invalid_request_error", "requests",
		    n ? "too_many_requests" : "empty_array",
		    "A group holds 1 to %d requests; this one has %zu.", GROUP_MAX, n);
		goto fail;
	}
	s = calloc(1, sizeof *s);
	if (s) {
		s->jobs = calloc(n, sizeof *s->jobs);
		s->bodies = calloc(n, sizeof *s->bodies);
		s->lens = calloc(n, sizeof *s->lens);
		s->group = calloc(1, sizeof *s->group);
		s->n = n;
	}
	if (!s || !s->jobs || !s->bodies || !s->lens || !s->group) {
		sl_error_set(&err, 503, "server_error", NULL, NULL, "Out of memory.");
		goto fail;
	}
	replied = idem_begin(a, r, kind == JOB_CHAT ? "group.chat.completions" :
	    "group.completions", tenant, body, len, s);
	if (replied)
		goto fail;
	if (sl_job_id(now, s->group->id)) {
		sl_error_set(&err, 503, "server_error", NULL, NULL, "No randomness for an id.");
		goto fail;
	}
	wh = json_object_get(json_object_get(root, "metadata"), "webhook_id");
	if (wh && (!json_is_string(wh) || json_string_length(wh) > JOB_WEBHOOK_MAX)) {
		sl_error_set(&err, 400, "invalid_request_error", "metadata.webhook_id",
		    "webhook_not_found", "No webhook with that 'metadata.webhook_id': register "
		    "it first (POST /v1/webhooks or slowlanectl webhook add).");
		goto fail;
	}
	if (wh && webhook_check(a, json_string_value(wh), tenant, "slow-group.completed",
	    "metadata.webhook_id", &err))
		goto fail;
	member_spans(body, len, &spans);
	for (size_t i = 0; i < n; i++) {
		if (check_member(a, tenant, kind, json_array_get(reqs, i), i, &spans, now, s,
		    &err))
			goto fail;
		snprintf(s->jobs[i].group, sizeof s->jobs[i].group, "%s", s->group->id);
		memcpy(s->group->members[i], s->jobs[i].id, SL_ID_LEN + 1);
	}
	replied = api_over_queue_limit(a, r, tenant, n); /* the quota last, as in submit() */
	if (replied)
		goto fail;
	s->group->kind = (uint8_t)kind;
	s->group->created_ms = now;
	s->group->size = s->group->remaining = (uint16_t)n;
	snprintf(s->group->tenant, sizeof s->group->tenant, "%s", tenant);
	if (wh)
		snprintf(s->group->webhook, sizeof s->group->webhook, "%s", json_string_value(wh));
	json_decref(root);
	s->api = a;
	s->req = r;
	insert_submit(s);
	return;
fail:
	json_decref(root);
	insert_free(s);
	if (!replied)
		http_reply_error(r, &err);
}

void api_h_group_chat(struct http_req *r, void *ctx) { submit_group(r, ctx, JOB_CHAT); }
void api_h_group_completion(struct http_req *r, void *ctx)
{
	submit_group(r, ctx, JOB_COMPLETION);
}

/* ---- poll ---- */

static void
reply_read_err(struct http_req *r, int rc, const char *what, const char *id)
{
	char msg[128];

	if (rc == SL_ENOTFOUND) {
		snprintf(msg, sizeof msg, "No %s with id '%.40s'.", what, id ? id : "");
		api_reply_err(r, 404, "invalid_request_error", "id",
		    strcmp(what, "group") == 0 ? "group_not_found" : "generation_not_found", msg);
		return;
	}
	log_error("api: reading %s %s: %s", what, id, sl_strerror(rc));
	api_reply_err(r, 500, "server_error", NULL, rc == SL_ECORRUPT ? "record_corrupt" : NULL,
	    rc == SL_ECORRUPT ? "The stored record failed its checksum."
	                      : "The record could not be read.");
}

/* Answers the rendered `b`, or the error `rc` of reading `what` `id`. */
static void
reply_rendered(struct http_req *r, int rc, const char *what, const char *id, struct sl_buf *b)
{
	size_t len;
	char *s;

	if (rc) {
		reply_read_err(r, rc, what, id);
	} else {
		s = sl_buf_detach(b, &len);
		http_reply(r, 200, "application/json", s, len);
	}
	sl_buf_release(b);
}

/* A poll: authenticated on the loop thread, read and rendered in the
 * reader pool (reader.h), answered back on the loop thread. */
struct poll {
	struct rd_op op;
	struct http_req *req;
	bool group; /* GET /v1/generation/group/{id}, else /v1/generation/{id} */
	char id[SL_ID_LEN + 1];
	char tenant[JOB_TENANT_LEN + 1];
	struct intake *in; /* journaled submits not yet stored, or NULL */
	struct sl_buf b;
	int rc;
};

/*
 * A submit journaled but not yet stored is answered from the intake
 * overlay, which is checked before the store. A job leaves the overlay only
 * after its commit, so after a store miss a snapshot renewed now must hold
 * it if it was acknowledged (intake.h).
 */
static struct intake_ref *
poll_held(struct poll *p)
{
	return p->in ? intake_find(p->in, p->id) : NULL;
}

static bool
poll_renew(struct store_txn *t, struct poll *p, int rc)
{
	return rc == SL_ENOTFOUND && p->in && store_refresh(t) == 0;
}

static int
render_generation(struct store_txn *t, struct poll *p)
{
	struct intake_ref *held = poll_held(p);
	struct job j;
	int rc;

	if (held) {
		rc = intake_render_job(held, p->id, p->tenant, &p->b);
		intake_release(p->in, held);
		return rc;
	}
	rc = store_job_get(t, p->id, &j);
	if (poll_renew(t, p, rc))
		rc = store_job_get(t, p->id, &j);

	/* Another key's job is indistinguishable from a missing one. */
	if (rc == 0 && strcmp(j.tenant, p->tenant) != 0)
		rc = SL_ENOTFOUND;
	if (rc == 0)
		rc = generation_render(t, &j, &p->b);
	return rc;
}

/* The group object up to its generations array. */
static int
group_head(struct sl_buf *b, const struct group *g)
{
	return sl_buf_printf(b, "{\"groupId\":\"%s\",\"groupSize\":%u,\"generations\":",
	    g->id, g->size);
}

static int
render_group(struct store_txn *t, struct poll *p)
{
	struct intake_ref *held = poll_held(p);
	struct group g;
	int rc;

	if (held) {
		rc = intake_group(held, p->id, p->tenant, &g);
		if (rc == 0)
			rc = group_head(&p->b, &g);
		if (rc == 0)
			rc = intake_render_members(held, &p->b);
		intake_release(p->in, held);
		return rc ? rc : sl_buf_append(&p->b, "}", 1);
	}
	rc = group_get(t, p->id, &g);
	if (poll_renew(t, p, rc))
		rc = group_get(t, p->id, &g);
	if (rc == 0 && strcmp(g.tenant, p->tenant) != 0)
		rc = SL_ENOTFOUND;
	if (rc == 0)
		rc = group_head(&p->b, &g);
	if (rc == 0)
		rc = generation_render_list(t, (const char (*)[SL_ID_LEN + 1])g.members, g.size,
		    false, &p->b);
	if (rc == 0)
		rc = sl_buf_append(&p->b, "}", 1);
	return rc;
}

static void
poll_run(struct store_txn *t, struct rd_op *op)
{
	struct poll *p = SL_CONTAINER_OF(op, struct poll, op);

	p->rc = p->group ? render_group(t, p) : render_generation(t, p);
}

static void
poll_done(struct rd_op *op)
{
	struct poll *p = SL_CONTAINER_OF(op, struct poll, op);

	reply_rendered(p->req, op->rc ? op->rc : p->rc, p->group ? "group" : "generation",
	    p->id, &p->b);
	free(p);
}

static void
poll_start(struct http_req *r, struct api *a, bool group)
{
	const char *id = http_req_capture(r, 0);
	const char *what = group ? "group" : "generation";
	char tenant[JOB_TENANT_LEN + 1];
	struct poll *p;

	if (!api_authenticate(a, r, tenant))
		return;
	if (!sl_id_valid(id, SL_ID_LEN)) {
		reply_read_err(r, SL_ENOTFOUND, what, id);
		return;
	}
	p = calloc(1, sizeof *p);
	if (!p) {
		reply_read_err(r, -ENOMEM, what, id);
		return;
	}
	memcpy(p->tenant, tenant, sizeof tenant);
	p->op.run = poll_run;
	p->op.done = poll_done;
	p->req = r;
	p->group = group;
	p->in = a->o.intake;
	memcpy(p->id, id, SL_ID_LEN + 1);
	sl_buf_init(&p->b, (size_t)1 << 30);
	reader_submit(a->rd, &p->op);
}

void
api_h_generation(struct http_req *r, void *ctx)
{
	poll_start(r, ctx, false);
}

void
api_h_group_generations(struct http_req *r, void *ctx)
{
	poll_start(r, ctx, true);
}
