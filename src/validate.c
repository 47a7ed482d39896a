/*
 * validate.c - request validation for the submit endpoints (see validate.h).
 * The rules follow what OpenAI-compatible servers reject, so a bad request
 * fails at submit with a clear error instead of hours later upstream. The
 * body is scanned in place (jscan.c): no tree, no allocation.
 */
#include "config.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/jscan.h"
#include "slowlane/validate.h"

int
sl_error_set(struct sl_error *e, int status, const char *type, const char *param,
    const char *code, const char *fmt, ...)
{
	va_list ap;

	e->status = status;
	e->type = type;
	e->param = param;
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof e->message, fmt, ap);
	va_end(ap);
	return -1;
}

#define BAD(param, code, ...) \
	sl_error_set(err, 400, "invalid_request_error", param, code, __VA_ARGS__)

/* The top-level members we look at, and a duplicate check of all. */
struct top {
	struct jscan_value model, messages, prompt, stream, metadata;
	bool has_model, has_messages, has_prompt, has_stream, has_metadata, duplicate;
	char dup_key[64];
	uint64_t seen[64];
	size_t n_seen;
};

static uint64_t
key_hash(const char *k)
{
	uint64_t h = 1469598103934665603ull;

	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 1099511628211ull;
	return h;
}

static int
top_member(void *arg, const char *key, const struct jscan_value *v, const char *member)
{
	static const struct { const char *name; size_t val, has; } wanted[] = {
		{ "model", offsetof(struct top, model), offsetof(struct top, has_model) },
		{ "messages", offsetof(struct top, messages), offsetof(struct top, has_messages) },
		{ "prompt", offsetof(struct top, prompt), offsetof(struct top, has_prompt) },
		{ "stream", offsetof(struct top, stream), offsetof(struct top, has_stream) },
		{ "metadata", offsetof(struct top, metadata), offsetof(struct top, has_metadata) },
	};
	struct top *t = arg;
	uint64_t h = key_hash(key);

	for (size_t i = 0; i < t->n_seen; i++) {
		if (t->seen[i] == h && !t->duplicate) {
			t->duplicate = true;
			snprintf(t->dup_key, sizeof t->dup_key, "%s", key);
		}
	}
	if (t->n_seen < sizeof t->seen / sizeof t->seen[0])
		t->seen[t->n_seen++] = h;
	for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
		if (strcmp(key, wanted[i].name) == 0) {
			*(struct jscan_value *)((char *)t + wanted[i].val) = *v;
			*(bool *)((char *)t + wanted[i].has) = true;
		}
	}
	return 0;
}

struct msgs_ctx {
	struct sl_error *err;
	size_t n; /* elements seen */
};

static int
check_message(void *arg, size_t i, const struct jscan_value *m)
{
	struct msgs_ctx *c = arg;
	struct sl_error *err = c->err;
	struct jscan_value role;

	c->n++;
	if (m->type != JS_OBJECT)
		return BAD("messages", "invalid_type",
		    "Invalid type for 'messages[%zu]': expected an object.", i);
	if (!jscan_get(m, "role", &role))
		return BAD("messages", "missing_required_parameter",
		    "Missing required parameter: 'messages[%zu].role'.", i);
	if (role.type != JS_STRING)
		return BAD("messages", "invalid_type",
		    "Invalid type for 'messages[%zu].role': expected a string.", i);
	return 0;
}

static int
check_messages(const struct top *t, struct sl_error *err)
{
	struct msgs_ctx c = { err, 0 };

	if (!t->has_messages)
		return BAD("messages", "missing_required_parameter",
		    "Missing required parameter: 'messages'.");
	if (t->messages.type != JS_ARRAY)
		return BAD("messages", "invalid_type",
		    "Invalid type for 'messages': expected an array of message objects.");
	if (jscan_elements(&t->messages, check_message, &c))
		return -1;
	if (c.n == 0)
		return BAD("messages", "empty_array",
		    "Invalid 'messages': empty array. Expected at least one message.");
	return 0;
}

struct md_ctx {
	struct validate_info *info;
	struct sl_error *err;
};

static int
check_metadata_member(void *arg, const char *key, const struct jscan_value *v,
    const char *member)
{
	struct md_ctx *c = arg;
	struct sl_error *err = c->err;
	bool webhook = strcmp(key, "webhook_id") == 0;

	if (!webhook && strcmp(key, "custom_id") != 0)
		return 0;
	if (v->type != JS_STRING)
		return BAD("metadata", "invalid_type",
		    "Invalid type for 'metadata.%s': expected a string.", key);
	if (webhook && jscan_string(v, c->info->webhook, sizeof c->info->webhook) < 0)
		return BAD("metadata.webhook_id", "webhook_not_found",
		    "Invalid 'metadata.webhook_id': no webhook has an id that long.");
	return 0;
}

int
validate_request(enum job_kind kind, const char *body, size_t len,
    struct validate_info *info, struct sl_error *err)
{
	struct jscan_value root;
	struct top t;
	char why[160];

	memset(info, 0, sizeof *info);
	memset(&t, 0, sizeof t);
	if (jscan_parse(body, len, VALIDATE_MAX_DEPTH, &root, why, sizeof why))
		return BAD(NULL, "invalid_json",
		    "We could not parse the JSON body of your request: %s.", why);
	if (root.type != JS_OBJECT)
		return BAD(NULL, "invalid_type", "The request body must be a JSON object.");
	jscan_members(&root, top_member, &t);
	if (t.duplicate)
		return BAD(NULL, "invalid_json",
		    "The JSON body names '%s' more than once.", t.dup_key);
	if (!t.has_model)
		return BAD("model", "missing_required_parameter",
		    "Missing required parameter: 'model'.");
	if (t.model.type != JS_STRING || t.model.len <= 2)
		return BAD("model", "invalid_type", "Invalid 'model': expected a non-empty string.");
	if (jscan_string(&t.model, info->model, sizeof info->model) <= 0)
		return BAD("model", "invalid_value", "Invalid 'model': longer than %d bytes or "
		    "containing a NUL.", JOB_MODEL_MAX);
	if (kind == JOB_CHAT) {
		if (check_messages(&t, err))
			return -1;
	} else if (!t.has_prompt) {
		return BAD("prompt", "missing_required_parameter",
		    "Missing required parameter: 'prompt'.");
	} else if (t.prompt.type != JS_STRING && t.prompt.type != JS_ARRAY) {
		return BAD("prompt", "invalid_type",
		    "Invalid type for 'prompt': expected a string or an array.");
	}
	if (t.has_stream && t.stream.type == JS_TRUE)
		return BAD("stream", "unsupported_value", "Streaming is not supported by "
		    "asynchronous requests: remove 'stream' or set it to false, and poll "
		    "GET /v1/generation/{id} for the result.");
	if (t.has_stream && t.stream.type != JS_FALSE && t.stream.type != JS_NULL)
		return BAD("stream", "invalid_type", "Invalid type for 'stream': expected a boolean.");
	if (t.has_metadata && t.metadata.type != JS_NULL) {
		struct md_ctx c = { info, err };
		if (t.metadata.type != JS_OBJECT)
			return BAD("metadata", "invalid_type",
			    "Invalid type for 'metadata': expected an object.");
		if (jscan_members(&t.metadata, check_metadata_member, &c))
			return -1;
	}
	info->flags = t.has_metadata ? JOB_F_METADATA : 0;
	return 0;
}

struct cut {
	const char *from, *to;
};

static int
find_metadata(void *arg, const char *key, const struct jscan_value *v, const char *member)
{
	struct cut *c = arg;

	if (strcmp(key, "metadata") != 0)
		return 0;
	c->from = member;
	c->to = v->p + v->len;
	return 1;
}

char *
validate_upstream_body(const char *body, size_t len, size_t *out_len)
{
	struct jscan_value root;
	struct cut c = { NULL, NULL };
	const char *end = body + len, *p;
	char why[8], *out;
	size_t n;

	if (jscan_parse(body, len, VALIDATE_MAX_DEPTH, &root, why, sizeof why) ||
	    root.type != JS_OBJECT)
		return NULL;
	jscan_members(&root, find_metadata, &c);
	if (c.from) {
		/* Take one comma with it: the one after, else the one before. */
		for (p = c.to; p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r');)
			p++;
		if (p < end && *p == ',') {
			c.to = p + 1;
		} else {
			for (p = c.from; p > body && p[-1] != ',' && p[-1] != '{';)
				p--;
			if (p > body && p[-1] == ',')
				c.from = p - 1;
		}
	}
	n = c.from ? len - (size_t)(c.to - c.from) : len;
	out = malloc(n + 1);
	if (!out)
		return NULL;
	if (c.from) {
		memcpy(out, body, (size_t)(c.from - body));
		memcpy(out + (c.from - body), c.to, (size_t)(end - c.to));
	} else {
		memcpy(out, body, len);
	}
	out[n] = '\0';
	if (out_len)
		*out_len = n;
	return out;
}
