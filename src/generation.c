/*
 * generation.c - the generation object of API.md section 1, rendered from
 * the store: shared by GET /v1/generation/{id} and slowlanectl.
 */
#include "config.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/common.h"
#include "slowlane/generation.h"

/* Appends `s` as a JSON string, or null. */
int
generation_append_string(struct sl_buf *b, const char *s)
{
	json_t *j;
	char *enc;
	int rc;

	if (!s)
		return sl_buf_append(b, "null", 4);
	j = json_string(s);
	enc = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
	json_decref(j);
	if (!enc)
		return sl_buf_append(b, "null", 4); /* invalid UTF-8: never stored */
	rc = sl_buf_append(b, enc, strlen(enc));
	free(enc);
	return rc;
}

static int
append_time(struct sl_buf *b, const char *name, uint64_t ms)
{
	char ts[32];

	if (!ms)
		return sl_buf_printf(b, ",\"%s\":null", name);
	return sl_buf_printf(b, ",\"%s\":\"%s\"", name, sl_fmt_iso8601(ms, ts, sizeof ts));
}

static int
render(struct store_txn *t, const struct job *j, bool lenient, struct sl_buf *b)
{
	const void *req = NULL, *resp = NULL;
	size_t req_len = 0, resp_len = 0;
	int rc;

	rc = store_body_get(t, j->id, &req, &req_len);
	if (rc == SL_ENOTFOUND || rc == SL_ECORRUPT) {
		if (!lenient)
			return rc;
		req = "null";
		req_len = 4;
	} else if (rc) {
		return rc;
	}
	rc = store_result_get(t, j->id, &resp, &resp_len);
	if (rc == SL_ENOTFOUND && j->state == JOB_SUCCESS && !lenient)
		return SL_ECORRUPT; /* a success always keeps its answer */
	if (rc == SL_ENOTFOUND || (rc == SL_ECORRUPT && lenient))
		resp = NULL;
	else if (rc)
		return rc;
	return generation_render_parts(j, req, req_len, resp, resp_len, b);
}

int
generation_render(struct store_txn *t, const struct job *j, struct sl_buf *b)
{
	return render(t, j, false, b);
}

int
generation_render_event(struct store_txn *t, const struct job *j, struct sl_buf *b)
{
	return render(t, j, true, b);
}

int
generation_render_parts(const struct job *j, const void *req, size_t req_len,
    const void *resp, size_t resp_len, struct sl_buf *b)
{
	int rc;

	/* Stored bodies are JSON texts (validated at submit; results are
	 * upstream JSON or wrapped by the scheduler): embed them raw. */
	rc = sl_buf_printf(b, "{\"id\":\"%s\",\"request\":", j->id);
	if (!rc)
		rc = sl_buf_append(b, req, req_len);
	if (!rc)
		rc = sl_buf_append(b, ",\"response\":", 12);
	if (!rc)
		rc = resp ? sl_buf_append(b, resp, resp_len) : sl_buf_append(b, "null", 4);
	if (!rc)
		rc = sl_buf_printf(b, ",\"state\":\"%s\",\"stateMessage\":",
		    job_state_name(j->state));
	/* A claim keeps the record's length (and its leaf) by not rewriting
	 * the stock "Queued": shown as is it would contradict the state. */
	if (!rc)
		rc = generation_append_string(b, j->state == JOB_IN_PROGRESS &&
		    strcmp(j->message, "Queued") == 0 ? "In progress" : j->message);
	if (!rc)
		rc = append_time(b, "createdAt", j->created_ms);
	if (!rc)
		rc = append_time(b, "dispatchedAt", j->dispatched_ms);
	if (!rc)
		rc = append_time(b, "finishedAt", j->finished_ms);
	if (!rc)
		rc = sl_buf_append(b, "}", 1);
	return rc;
}


int
generation_render_list(struct store_txn *t, const char (*ids)[SL_ID_LEN + 1], size_t n,
    bool lenient, struct sl_buf *b)
{
	bool first = true;
	int rc = sl_buf_append(b, "[", 1);

	for (size_t i = 0; rc == 0 && i < n; i++) {
		struct job j;
		rc = store_job_get(t, ids[i], &j);
		if (rc == SL_ENOTFOUND || (rc == SL_ECORRUPT && lenient)) {
			rc = 0;
			continue;
		}
		if (!rc && !first)
			rc = sl_buf_append(b, ",", 1);
		if (!rc)
			rc = render(t, &j, lenient, b);
		first = false;
	}
	return rc ? rc : sl_buf_append(b, "]", 1);
}
