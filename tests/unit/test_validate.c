/* test_validate.c - what a submit accepts and how it refuses. */
#include "config.h"

#include <stdlib.h>

#include "../tap.h"
#include "slowlane/validate.h"

static int
check(enum job_kind k, const char *body, const char *param, const char *code)
{
	struct validate_info info;
	struct sl_error e;
	int rc = validate_request(k, body, strlen(body), &info, &e);

	if (rc == 0)
		return param == NULL && code == NULL;
	return e.status == 400 && strcmp(e.type, "invalid_request_error") == 0 &&
	    e.message[0] && ((!param && !e.param) || (param && e.param &&
	    strcmp(param, e.param) == 0)) && (!code || (e.code && strcmp(code, e.code) == 0));
}

int
main(void)
{
	struct validate_info info;
	struct sl_error e;
	const char *good = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
	    "\"metadata\":{\"custom_id\":\"c1\"}}";
	char *up;
	size_t len;

	ok(check(JOB_CHAT, good, NULL, NULL), "valid chat request");
	ok(check(JOB_COMPLETION, "{\"model\":\"m\",\"prompt\":\"hi\"}", NULL, NULL),
	    "valid completion request");
	ok(check(JOB_COMPLETION, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", NULL, NULL),
	    "prompt may be an array");
	ok(check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	    "\"stream\":false}", NULL, NULL), "stream false is fine");
	ok(check(JOB_CHAT, "{not json", NULL, "invalid_json"), "invalid JSON");
	ok(check(JOB_CHAT, "", NULL, "invalid_json"), "empty body");
	ok(check(JOB_CHAT, "[1,2]", NULL, "invalid_type"), "array body");
	ok(check(JOB_CHAT, "\"str\"", NULL, "invalid_type"), "scalar body is not an object");
	ok(check(JOB_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", "model",
	    "missing_required_parameter"), "missing model");
	ok(check(JOB_CHAT, "{\"model\":5,\"messages\":[{\"role\":\"user\"}]}", "model",
	    "invalid_type"), "model not a string");
	ok(check(JOB_CHAT, "{\"model\":\"\",\"messages\":[{\"role\":\"user\"}]}", "model",
	    "invalid_type"), "empty model");
	ok(check(JOB_CHAT, "{\"model\":\"m\"}", "messages", "missing_required_parameter"),
	    "missing messages");
	ok(check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[]}", "messages", "empty_array"),
	    "empty messages");
	ok(check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[ \n\t ]}", "messages", "empty_array"),
	    "messages with only whitespace inside");
	ok(check(JOB_CHAT, "{\"model\":\"m\",\"messages\":\"hi\"}", "messages", "invalid_type"),
	    "messages not an array");
	ok(check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}", "messages",
	    NULL), "message without role");
	ok(check(JOB_COMPLETION, "{\"model\":\"m\"}", "prompt", "missing_required_parameter"),
	    "missing prompt");
	ok(check(JOB_COMPLETION, "{\"model\":\"m\",\"prompt\":5}", "prompt", "invalid_type"),
	    "prompt not a string");
	ok(check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"stream\":true}",
	    "stream", "unsupported_value"), "stream true refused");
	ok(check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"metadata\":5}",
	    "metadata", "invalid_type"), "metadata not an object");
	ok(check(JOB_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],"
	    "\"metadata\":{\"custom_id\":5}}", "metadata", "invalid_type"), "custom_id not a string");
	ok(check(JOB_CHAT, "{\"model\":\"m\",\"model\":\"n\",\"messages\":[{\"role\":\"user\"}]}",
	    NULL, "invalid_json"), "duplicate keys refused");
	{
		char deep[8192];
		size_t i;
		for (i = 0; i < 4000; i++)
			deep[i] = '[';
		deep[i] = '\0';
		ok(check(JOB_CHAT, deep, NULL, "invalid_json"), "deeply nested input refused");
	}

	ok(validate_request(JOB_CHAT, good, strlen(good), &info, &e) == 0 &&
	    (info.flags & JOB_F_METADATA) && strcmp(info.model, "m") == 0,
	    "metadata flagged, model found");
	up = validate_upstream_body(good, strlen(good), &len);
	ok(up && !strstr(up, "metadata") && strstr(up, "\"messages\"") && len == strlen(up),
	    "metadata stripped for upstream: %s", up ? up : "(null)");
	ok(up && strncmp(up, "{\"model\"", 8) == 0, "field order kept");
	free(up);
	return tap_done();
}
