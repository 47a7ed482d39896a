/*
 * batch.c - batch records, lines and accounting (see batch.h).
 *
 * batch_index key: tenant (16, NUL-padded) | created_ms (be64) | id.
 * batch_lines key: id (30) | line (be32); value: job id (21) | custom_id.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/batch.h"
#include "slowlane/common.h"
#include "slowlane/jscan.h"
#include "slowlane/validate.h"

#define INDEX_KEY_LEN (JOB_TENANT_LEN + 8 + BATCH_ID_LEN)
#define LINE_KEY_LEN (BATCH_ID_LEN + 4)

int
batch_new_id(char out[BATCH_ID_LEN + 1])
{
	memcpy(out, "batch_", 6);
	return sl_random_id(out + 6, 24);
}

int
batch_get(struct store_txn *t, const char *id, json_t **out)
{
	const void *data;
	size_t len;
	int rc;

	if (strlen(id) != BATCH_ID_LEN)
		return SL_ENOTFOUND;
	rc = store_table_get(t, STORE_T_BATCHES, id, BATCH_ID_LEN, &data, &len);
	if (rc)
		return rc;
	*out = json_loadb(data, len, 0, NULL);
	return json_is_object(*out) ? 0 : SL_ECORRUPT;
}

int
batch_put(struct store_txn *t, json_t *b)
{
	const char *id = json_string_value(json_object_get(b, "id"));
	char *s = json_dumps(b, JSON_COMPACT);
	int rc;

	if (!s || !id)
		return -ENOMEM;
	rc = store_table_put(t, STORE_T_BATCHES, id, strlen(id), s, strlen(s));
	free(s);
	return rc;
}

static size_t
index_key(unsigned char *k, const char *tenant, uint64_t created_ms, const char *id)
{
	memset(k, 0, JOB_TENANT_LEN);
	memcpy(k, tenant, strnlen(tenant, JOB_TENANT_LEN));
	sl_put_be64(k + JOB_TENANT_LEN, created_ms);
	memcpy(k + JOB_TENANT_LEN + 8, id, BATCH_ID_LEN);
	return INDEX_KEY_LEN;
}

int
batch_index_put(struct store_txn *t, json_t *b)
{
	unsigned char k[INDEX_KEY_LEN];

	index_key(k, json_string_value(json_object_get(b, "_tenant")),
	    (uint64_t)json_integer_value(json_object_get(b, "_created_ms")),
	    json_string_value(json_object_get(b, "id")));
	return store_table_put(t, STORE_T_BATCH_INDEX, k, sizeof k, "", 0);
}

json_t *
batch_public(json_t *b)
{
	json_t *o = json_object();
	const char *key;
	json_t *v;

	json_object_foreach(b, key, v)
		if (key[0] != '_')
			json_object_set(o, key, v);
	return o;
}

int
batch_set_active(struct store_txn *t, const char *id, bool active)
{
	int rc;

	if (active)
		return store_table_put(t, STORE_T_BATCH_ACTIVE, id, strlen(id), "", 0);
	rc = store_table_del(t, STORE_T_BATCH_ACTIVE, id, strlen(id));
	return rc == SL_ENOTFOUND ? 0 : rc;
}

struct active_ctx {
	int (*cb)(void *arg, const char *id);
	void *arg;
};

static int
active_one(void *arg, const void *key, size_t klen, const void *data, size_t len)
{
	struct active_ctx *c = arg;
	char id[BATCH_ID_LEN + 1];

	if (klen != BATCH_ID_LEN)
		return 0;
	memcpy(id, key, BATCH_ID_LEN);
	id[BATCH_ID_LEN] = '\0';
	return c->cb(c->arg, id);
}

int
batch_active_list(struct store_txn *t, int (*cb)(void *arg, const char *id), void *arg)
{
	struct active_ctx c = { cb, arg };

	return store_table_scan(t, STORE_T_BATCH_ACTIVE, NULL, 0, active_one, &c);
}

struct input_ctx {
	struct store_txn *t;
	const char *file_id;
	char *by;
};

static int
input_one(void *arg, const char *id)
{
	struct input_ctx *c = arg;
	json_t *b;
	int used;

	if (batch_get(c->t, id, &b) != 0)
		return 0;
	used = strcmp(json_string_value(json_object_get(b, "input_file_id")) ?: "",
	    c->file_id) == 0;
	json_decref(b);
	if (used && c->by)
		snprintf(c->by, BATCH_ID_LEN + 1, "%s", id);
	return used;
}

int
batch_input_in_use(struct store_txn *t, const char *file_id, char by[BATCH_ID_LEN + 1])
{
	struct input_ctx c = { t, file_id, by };

	return batch_active_list(t, input_one, &c);
}

struct list_ctx {
	struct store_txn *t;
	unsigned char tenant[JOB_TENANT_LEN];
	size_t limit, n;
	json_t *data;
	bool has_more;
};

static int
list_one(void *arg, const void *key, size_t klen, const void *data, size_t len)
{
	struct list_ctx *l = arg;
	char id[BATCH_ID_LEN + 1];
	json_t *b;

	if (klen != INDEX_KEY_LEN || memcmp(key, l->tenant, JOB_TENANT_LEN) != 0)
		return 1;
	if (l->n == l->limit) {
		l->has_more = true;
		return 1;
	}
	memcpy(id, (const char *)key + JOB_TENANT_LEN + 8, BATCH_ID_LEN);
	id[BATCH_ID_LEN] = '\0';
	if (batch_get(l->t, id, &b) != 0)
		return 0;
	json_array_append_new(l->data, batch_public(b));
	json_decref(b);
	l->n++;
	return 0;
}

int
batch_list(struct store_txn *t, const char *tenant, const char *after, size_t limit,
    json_t *data, bool *has_more)
{
	struct list_ctx l = { .t = t, .limit = limit, .data = data };
	unsigned char from[INDEX_KEY_LEN];
	int rc;

	memset(l.tenant, 0, sizeof l.tenant);
	memcpy(l.tenant, tenant, strnlen(tenant, JOB_TENANT_LEN));
	if (after && *after) {
		json_t *a;
		rc = batch_get(t, after, &a);
		if (rc)
			return rc;
		if (strcmp(json_string_value(json_object_get(a, "_tenant")) ?: "", tenant) != 0) {
			json_decref(a);
			return SL_ENOTFOUND;
		}
		index_key(from, tenant, (uint64_t)json_integer_value(json_object_get(a,
		    "_created_ms")), after);
		json_decref(a);
		/* Exclusive: the greatest key just below `after`'s (ids are of one
		 * length, so decrementing the last byte suffices). */
		from[INDEX_KEY_LEN - 1]--;
	} else {
		memset(from, 0, sizeof from);
		memcpy(from, l.tenant, JOB_TENANT_LEN);
		memset(from + JOB_TENANT_LEN, 0xff, INDEX_KEY_LEN - JOB_TENANT_LEN);
	}
	rc = store_table_scan_dir(t, STORE_T_BATCH_INDEX, from, sizeof from, true, list_one, &l);
	*has_more = l.has_more;
	return rc < 0 ? rc : 0;
}

static void
line_key(unsigned char *k, const char *id, uint32_t line)
{
	memcpy(k, id, BATCH_ID_LEN);
	sl_put_be32(k + BATCH_ID_LEN, line);
}

int
batch_line_put(struct store_txn *t, const char *id, uint32_t line, const char *job_id,
    const char *custom_id)
{
	unsigned char k[LINE_KEY_LEN];
	char v[SL_ID_LEN + BATCH_CUSTOM_ID_MAX];
	size_t clen = strnlen(custom_id, BATCH_CUSTOM_ID_MAX);

	line_key(k, id, line);
	memcpy(v, job_id, SL_ID_LEN);
	memcpy(v + SL_ID_LEN, custom_id, clen);
	return store_table_put(t, STORE_T_BATCH_LINES, k, sizeof k, v, SL_ID_LEN + clen);
}

struct lines_ctx {
	const char *id;
	size_t max, n;
	int (*cb)(void *arg, uint32_t line, const char *job_id, const char *custom_id);
	void *arg;
};

static int
line_one(void *arg, const void *key, size_t klen, const void *data, size_t len)
{
	struct lines_ctx *c = arg;
	char job[SL_ID_LEN + 1], custom[BATCH_CUSTOM_ID_MAX + 1];

	if (klen != LINE_KEY_LEN || memcmp(key, c->id, BATCH_ID_LEN) != 0 || c->n >= c->max)
		return 1;
	if (!data || len < SL_ID_LEN)
		return 0;
	memcpy(job, data, SL_ID_LEN);
	job[SL_ID_LEN] = '\0';
	snprintf(custom, sizeof custom, "%.*s", (int)(len - SL_ID_LEN),
	    (const char *)data + SL_ID_LEN);
	c->n++;
	return c->cb(c->arg, sl_get_be32((const unsigned char *)key + BATCH_ID_LEN), job, custom);
}

int
batch_lines_scan(struct store_txn *t, const char *id, uint32_t from, size_t max,
    int (*cb)(void *arg, uint32_t line, const char *job_id, const char *custom_id),
    void *arg)
{
	struct lines_ctx c = { .id = id, .max = max, .cb = cb, .arg = arg };
	unsigned char k[LINE_KEY_LEN];
	int rc;

	line_key(k, id, from);
	rc = store_table_scan(t, STORE_T_BATCH_LINES, k, sizeof k, line_one, &c);
	return rc < 0 ? rc : 0;
}

#define LINE_ERR(c, p, ...) \
	(*code = (c), *param = (p), snprintf(msg, cap, __VA_ARGS__), -1)

/* Is string value `v` equal to `want`? */
static bool
str_is(const struct jscan_value *v, const char *want)
{
	char buf[64];

	return v->type == JS_STRING && jscan_string(v, buf, sizeof buf) >= 0 &&
	    strcmp(buf, want) == 0;
}

int
batch_check_line(const char *line, size_t len, const char *endpoint, struct batch_line *out,
    const char **code, const char **param, char *msg, size_t cap)
{
	struct jscan_value root, cid, method, url, body;
	struct validate_info vi;
	struct sl_error e;
	char why[120], urlbuf[64];
	bool has_cid, has_method, has_url, has_body;

	memset(out, 0, sizeof *out);
	if (jscan_parse(line, len, VALIDATE_MAX_DEPTH, &root, why, sizeof why) ||
	    root.type != JS_OBJECT)
		return LINE_ERR("invalid_json_line", NULL, "This line is not a valid JSON object.");
	has_cid = jscan_get(&root, "custom_id", &cid);
	has_method = jscan_get(&root, "method", &method);
	has_url = jscan_get(&root, "url", &url);
	has_body = jscan_get(&root, "body", &body);
	if (!has_cid || cid.type != JS_STRING || cid.len <= 2 ||
	    jscan_string(&cid, out->custom_id, sizeof out->custom_id) <= 0)
		return LINE_ERR("missing_custom_id", "custom_id", "Each line needs a string "
		    "'custom_id' of 1 to %d characters.", BATCH_CUSTOM_ID_MAX);
	if (!has_method || method.type != JS_STRING)
		return LINE_ERR("missing_method", "method", "Each line needs 'method': \"POST\".");
	if (!str_is(&method, "POST"))
		return LINE_ERR("invalid_method", "method", "Only the POST method is supported.");
	if (!has_url || url.type != JS_STRING)
		return LINE_ERR("missing_url", "url", "Each line needs a 'url'.");
	if (!str_is(&url, "/v1/chat/completions") && !str_is(&url, "/v1/completions"))
		return LINE_ERR("invalid_url", "url", "'url' must be /v1/chat/completions or "
		    "/v1/completions.");
	if (!str_is(&url, endpoint)) {
		jscan_string(&url, urlbuf, sizeof urlbuf);
		return LINE_ERR("url_mismatch", "url", "The line's url %s differs from the batch's "
		    "endpoint %s.", urlbuf, endpoint);
	}
	if (!has_body || body.type != JS_OBJECT)
		return LINE_ERR("missing_body", "body", "Each line needs a 'body' object.");
	{
		struct jscan_value st;
		if (jscan_get(&body, "stream", &st) && st.type == JS_TRUE)
			return LINE_ERR("stream_unsupported", "body.stream", "'stream': true cannot "
			    "be used in a batch.");
	}
	/* The body must be a request the endpoint accepts: its own text, as is. */
	if (validate_request(strstr(endpoint, "chat") ? JOB_CHAT : JOB_COMPLETION, body.p,
	    body.len, &vi, &e))
		return LINE_ERR("invalid_request", "body", "%s", e.message);
	memcpy(out->model, vi.model, sizeof out->model);
	out->body = body.p;
	out->body_len = body.len;
	out->has_metadata = (vi.flags & JOB_F_METADATA) != 0;
	return 0;
}

static const char *
error_code(const struct job *j)
{
	switch (j->end) {
	case JOB_END_EXPIRED: return "batch_expired";
	case JOB_END_CANCELLED: return "batch_cancelled";
	case JOB_END_TIMEOUT: return "request_timeout";
	case JOB_END_DAMAGED: return "stored_request_damaged";
	default: return "upstream_error";
	}
}

int
batch_output_line(struct store_txn *t, const struct job *j, const char *custom_id,
    struct sl_buf *b, bool *is_error)
{
	const void *res = NULL;
	size_t rlen = 0;
	json_t *cid = json_string(custom_id), *msg;
	char *cs = cid ? json_dumps(cid, JSON_ENCODE_ANY) : NULL, *ms = NULL;
	int rc;

	json_decref(cid);
	if (!cs)
		return -ENOMEM;
	rc = store_result_get(t, j->id, &res, &rlen);
	if (rc == SL_ENOTFOUND)
		res = NULL;
	else if (rc)
		goto out;
	*is_error = j->state != JOB_SUCCESS;
	if (res && (j->state == JOB_SUCCESS || j->end == JOB_END_HTTP)) {
		rc = sl_buf_printf(b, "{\"id\":\"batch_req_%s\",\"custom_id\":%s,\"response\":"
		    "{\"status_code\":%u,\"request_id\":\"req_%s\",\"body\":", j->id, cs,
		    j->state == JOB_SUCCESS ? (j->http_status ? j->http_status : 200)
		                            : j->http_status, j->id);
		if (!rc)
			rc = sl_buf_append(b, res, rlen);
		if (!rc)
			rc = sl_buf_append(b, "},\"error\":null}\n", 16);
		goto out;
	}
	msg = json_string(j->message);
	ms = msg ? json_dumps(msg, JSON_ENCODE_ANY) : NULL;
	json_decref(msg);
	rc = sl_buf_printf(b, "{\"id\":\"batch_req_%s\",\"custom_id\":%s,\"response\":null,"
	    "\"error\":{\"code\":\"%s\",\"message\":%s}}\n", j->id, cs, error_code(j),
	    ms ? ms : "\"\"");
out:
	free(cs);
	free(ms);
	return rc;
}

void
batch_set_status(json_t *b, const char *status, const char *stamp, uint64_t now_ms)
{
	json_object_set_new(b, "status", json_string(status));
	if (stamp)
		json_object_set_new(b, stamp, json_integer((json_int_t)(now_ms / 1000)));
}

static void
add_int(json_t *o, const char *key, json_int_t d)
{
	json_object_set_new(o, key, json_integer(json_integer_value(json_object_get(o, key)) + d));
}

/* usage.<obj>.<key> += the upstream's <from>.<key> (chat.completion's
 * prompt_tokens_details / completion_tokens_details), when it reports it. */
static void
add_detail(json_t *usage, const char *obj, const char *key, json_t *from)
{
	json_t *o = json_object_get(usage, obj);
	json_t *v = json_object_get(from, key);

	if (json_is_object(o) && json_is_integer(v))
		add_int(o, key, json_integer_value(v));
}

int
batch_job_ended(struct store_txn *t, const struct job *j, uint64_t now_ms)
{
	json_t *b, *counts, *usage;
	json_int_t remaining;
	int rc;

	if (!j->batch[0])
		return 0;
	rc = batch_get(t, j->batch, &b);
	if (rc)
		return rc == SL_ENOTFOUND ? 0 : rc;
	/* The counts cover what really ran (API.md): a line cancelled or
	 * expired before its first call gets its error line, but is neither
	 * completed nor failed. */
	counts = json_object_get(b, "request_counts");
	if (j->state == JOB_SUCCESS)
		add_int(counts, "completed", 1);
	else if (j->attempts > 0 || (j->end != JOB_END_CANCELLED && j->end != JOB_END_EXPIRED))
		add_int(counts, "failed", 1);
	if (j->end == JOB_END_EXPIRED)
		add_int(b, "_expired", 1);
	usage = json_object_get(b, "usage");
	if (j->state == JOB_SUCCESS && usage) {
		const void *res;
		size_t rlen;
		if (store_result_get(t, j->id, &res, &rlen) == 0) {
			json_t *r = json_loadb(res, rlen, 0, NULL);
			json_t *u = json_object_get(r, "usage");
			json_int_t in = json_integer_value(json_object_get(u, "prompt_tokens"));
			json_int_t outt = json_integer_value(json_object_get(u, "completion_tokens"));
			add_int(usage, "input_tokens", in);
			add_int(usage, "output_tokens", outt);
			add_int(usage, "total_tokens", in + outt);
			add_detail(usage, "input_tokens_details", "cached_tokens",
			    json_object_get(u, "prompt_tokens_details"));
			add_detail(usage, "output_tokens_details", "reasoning_tokens",
			    json_object_get(u, "completion_tokens_details"));
			json_decref(r);
		}
	}
	remaining = json_integer_value(json_object_get(b, "_remaining")) - 1;
	json_object_set_new(b, "_remaining", json_integer(remaining));
	if (remaining <= 0 && strcmp(json_string_value(json_object_get(b, "_phase")) ?: "",
	    "run") == 0) {
		json_object_set_new(b, "_phase", json_string("finalize"));
		if (strcmp(json_string_value(json_object_get(b, "status")) ?: "", "cancelling") != 0)
			batch_set_status(b, "finalizing", "finalizing_at", now_ms);
		rc = batch_set_active(t, j->batch, true);
	}
	if (!rc)
		rc = batch_put(t, b);
	json_decref(b);
	return rc;
}
