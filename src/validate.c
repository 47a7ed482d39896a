/*
 * validate.c - request validation for the submit endpoints (see validate.h).
 * The rules follow what OpenAI-compatible servers reject, so a bad request
 * fails at submit with a clear error instead of hours later upstream.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

static int
check_messages(json_t *messages, struct sl_error *err)
{
	size_t i;
	json_t *m;

	if (!messages)
		return BAD("messages", "missing_required_parameter",
		    "Missing required parameter: 'messages'.");
	if (!json_is_array(messages))
		return BAD("messages", "invalid_type",
		    "Invalid type for 'messages': expected an array of message objects.");
	if (json_array_size(messages) == 0)
		return BAD("messages", "empty_array",
		    "Invalid 'messages': empty array. Expected at least one message.");
	json_array_foreach(messages, i, m) {
		json_t *role = json_object_get(m, "role");
		if (!json_is_object(m))
			return BAD("messages", "invalid_type",
			    "Invalid type for 'messages[%zu]': expected an object.", i);
		if (!json_is_string(role))
			return BAD("messages", "missing_required_parameter",
			    "Missing required parameter: 'messages[%zu].role'.", i);
	}
	return 0;
}

static int
check_metadata(json_t *md, struct sl_error *err)
{
	const char *keys[] = { "custom_id", "webhook_id" };

	if (!json_is_object(md))
		return BAD("metadata", "invalid_type",
		    "Invalid type for 'metadata': expected an object.");
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		json_t *v = json_object_get(md, keys[i]);
		if (v && !json_is_string(v))
			return BAD("metadata", "invalid_type",
			    "Invalid type for 'metadata.%s': expected a string.", keys[i]);
	}
	return 0;
}

int
validate_request(enum job_kind kind, const char *body, size_t len,
    struct validate_info *info, struct sl_error *err)
{
	json_error_t jerr;
	json_t *root, *model, *stream, *md, *prompt;
	int rc = -1;

	memset(info, 0, sizeof *info);
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return BAD(NULL, "invalid_json",
		    "We could not parse the JSON body of your request: %s (line %d, "
		    "column %d).", jerr.text, jerr.line, jerr.column);
	if (!json_is_object(root)) {
		BAD(NULL, "invalid_type", "The request body must be a JSON object.");
		goto out;
	}
	model = json_object_get(root, "model");
	if (!model) {
		BAD("model", "missing_required_parameter", "Missing required parameter: 'model'.");
		goto out;
	}
	if (!json_is_string(model) || json_string_length(model) == 0) {
		BAD("model", "invalid_type", "Invalid 'model': expected a non-empty string.");
		goto out;
	}
	if (json_string_length(model) > JOB_MODEL_MAX || strlen(json_string_value(model)) !=
	    json_string_length(model)) {
		BAD("model", "invalid_value", "Invalid 'model': longer than %d bytes or "
		    "containing a NUL.", JOB_MODEL_MAX);
		goto out;
	}
	if (kind == JOB_CHAT) {
		if (check_messages(json_object_get(root, "messages"), err))
			goto out;
	} else {
		prompt = json_object_get(root, "prompt");
		if (!prompt) {
			BAD("prompt", "missing_required_parameter",
			    "Missing required parameter: 'prompt'.");
			goto out;
		}
		if (!json_is_string(prompt) && !json_is_array(prompt)) {
			BAD("prompt", "invalid_type",
			    "Invalid type for 'prompt': expected a string or an array.");
			goto out;
		}
	}
	stream = json_object_get(root, "stream");
	if (json_is_true(stream)) {
		BAD("stream", "unsupported_value", "Streaming is not supported by asynchronous "
		    "requests: remove 'stream' or set it to false, and poll "
		    "GET /v1/generation/{id} for the result.");
		goto out;
	}
	if (stream && !json_is_boolean(stream) && !json_is_null(stream)) {
		BAD("stream", "invalid_type", "Invalid type for 'stream': expected a boolean.");
		goto out;
	}
	md = json_object_get(root, "metadata");
	if (md && !json_is_null(md) && check_metadata(md, err))
		goto out;
	info->root = root;
	info->model = json_string_value(model);
	info->flags = md ? JOB_F_METADATA : 0;
	rc = 0;
out:
	if (rc)
		json_decref(root);
	return rc;
}

char *
validate_upstream_body(const char *body, size_t len, size_t *out_len)
{
	json_t *root = json_loadb(body, len, 0, NULL);
	char *s;

	if (!root)
		return NULL;
	json_object_del(root, "metadata");
	/* JSON_PRESERVE_ORDER keeps the client's field order, which some
	 * engines' prompt caches key on. */
	s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (s && out_len)
		*out_len = strlen(s);
	return s;
}
