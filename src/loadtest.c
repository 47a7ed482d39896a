/*
 * loadtest.c - the built-in `load-test` model: answers every call after a
 * small delay with an echo of the last user message (chat) or of the prompt
 * (completions), with plausible `usage`. It lets a fresh install show the
 * whole submit -> poll flow with no inference server, and gives benchmarks
 * an upstream that costs nothing.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/backend.h"
#include "slowlane/common.h"
#include "slowlane/util.h"

struct loadtest {
	struct backend base;
	struct ev_loop *loop;
	double delay_s;
};

struct lt_call {
	ev_timer timer;
	struct loadtest *lt;
	struct be_call *call;
};

/* Rough token count: whitespace-separated words, at least 1. */
static json_int_t
count_words(const char *s)
{
	json_int_t n = 0;
	int in_word = 0;

	for (; s && *s; s++) {
		int space = *s == ' ' || *s == '\n' || *s == '\t' || *s == '\r';
		if (!space && !in_word)
			n++;
		in_word = !space;
	}
	return n ? n : 1;
}

/* The text of a message's content: a string, or the "text" parts joined. */
static char *
content_text(json_t *content)
{
	struct sl_buf b;
	size_t i;
	json_t *part;

	if (json_is_string(content))
		return strdup(json_string_value(content));
	sl_buf_init(&b, 1 << 24);
	sl_buf_append(&b, "", 0);
	json_array_foreach(content, i, part) {
		json_t *text = json_object_get(part, "text");
		if (json_is_string(text))
			sl_buf_append(&b, json_string_value(text), json_string_length(text));
	}
	return sl_buf_detach(&b, NULL);
}

char *
loadtest_answer(const char *path, const char *body, size_t len, uint64_t now_ms, int *status)
{
	json_t *req = json_loadb(body, len, 0, NULL), *ans = NULL, *choice;
	bool chat = strstr(path, "chat") != NULL;
	const char *model;
	char *echo = NULL, *out = NULL;
	char id[32] = "chatcmpl-";
	json_int_t prompt_tokens = 0, completion_tokens;

	*status = 200;
	if (!json_is_object(req)) {
		json_decref(req);
		return NULL;
	}
	model = json_string_value(json_object_get(req, "model"));
	if (chat) {
		json_t *msgs = json_object_get(req, "messages"), *m;
		size_t i;
		json_array_foreach(msgs, i, m) {
			const char *role = json_string_value(json_object_get(m, "role"));
			char *t = content_text(json_object_get(m, "content"));
			prompt_tokens += count_words(t);
			if (role && strcmp(role, "user") == 0) {
				free(echo);
				echo = t;
			} else {
				free(t);
			}
		}
	} else {
		json_t *p = json_object_get(req, "prompt");
		if (json_is_array(p))
			p = json_array_get(p, 0);
		echo = strdup(json_is_string(p) ? json_string_value(p) : "");
		prompt_tokens = count_words(echo);
	}
	if (!echo)
		echo = strdup("");
	completion_tokens = count_words(echo);
	sl_random_id(id + strlen(id), 20);
	if (chat) {
		choice = json_pack("{s:i, s:{s:s, s:s}, s:s, s:n}", "index", 0, "message",
		    "role", "assistant", "content", echo, "finish_reason", "stop", "logprobs");
	} else {
		memcpy(id, "cmpl-", 6);
		sl_random_id(id + 5, 20);
		choice = json_pack("{s:i, s:s, s:s, s:n}", "index", 0, "text", echo,
		    "finish_reason", "stop", "logprobs");
	}
	ans = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:{s:I, s:I, s:I}, s:s}", "id", id,
	    "object", chat ? "chat.completion" : "text_completion",
	    "created", (json_int_t)(now_ms / 1000), "model", model ? model : "load-test",
	    "choices", choice, "usage", "prompt_tokens", prompt_tokens,
	    "completion_tokens", completion_tokens, "total_tokens",
	    prompt_tokens + completion_tokens, "system_fingerprint", "slowlane-load-test");
	if (ans)
		out = json_dumps(ans, JSON_COMPACT);
	json_decref(ans);
	json_decref(req);
	free(echo);
	return out;
}

static void
fire_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct lt_call *lc = SL_CONTAINER_OF(w, struct lt_call, timer);
	struct be_call *call = lc->call;
	struct be_result r = { .fault = BE_OK, .retry_after_ms = -1 };
	int status = 200;
	char *body = loadtest_answer(call->path, call->body, call->body_len, sl_wall_ms(),
	    &status);

	if (!body) {
		r.http_status = 400;
		r.body = "{\"error\":{\"message\":\"load-test: request body is not a JSON "
		    "object\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}";
	} else {
		r.http_status = status;
		r.body = body;
	}
	r.body_len = strlen(r.body);
	r.detail = "";
	call->impl = NULL;
	free(lc);
	call->done(call, &r);
	free(body);
}

static int
lt_start(struct backend *b, struct be_call *c)
{
	struct loadtest *lt = (struct loadtest *)b;
	struct lt_call *lc = calloc(1, sizeof *lc);

	if (!lc)
		return -ENOMEM;
	lc->lt = lt;
	lc->call = c;
	ev_timer_init(&lc->timer, fire_cb, lt->delay_s, 0.);
	ev_timer_start(lt->loop, &lc->timer);
	c->impl = lc;
	return 0;
}

static void
lt_cancel(struct backend *b, struct be_call *c)
{
	struct lt_call *lc = c->impl;

	if (!lc)
		return;
	ev_timer_stop(lc->lt->loop, &lc->timer);
	free(lc);
	c->impl = NULL;
}

static void
lt_free(struct backend *b)
{
	free(b);
}

static const struct backend_ops loadtest_ops = {
	.start = lt_start,
	.cancel = lt_cancel,
	.free = lt_free,
	.name = "load-test",
};

int
loadtest_new(struct ev_loop *loop, uint64_t delay_ms, struct backend **out)
{
	struct loadtest *lt = calloc(1, sizeof *lt);

	if (!lt)
		return -ENOMEM;
	lt->base.ops = &loadtest_ops;
	lt->loop = loop;
	lt->delay_s = (double)delay_ms / 1000.0;
	*out = &lt->base;
	return 0;
}
