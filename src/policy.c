/*
 * policy.c - retry and failure rules for upstream outcomes (see policy.h).
 */
#include "config.h"

#include <stdio.h>

#include "slowlane/policy.h"

bool
policy_status_retryable(int status)
{
	return status == 408 || status == 409 || status == 429 ||
	    (status >= 500 && status <= 599);
}

uint64_t
policy_backoff_ms(const struct policy *p, uint32_t attempts, uint32_t jitter)
{
	uint64_t d = p->backoff_base_ms;

	for (uint32_t i = 1; i < attempts && d < p->backoff_max_ms; i++)
		d *= 2;
	if (d > p->backoff_max_ms)
		d = p->backoff_max_ms;
	/* Jitter in [0.5, 1.0): spreads a burst of failures over time. */
	return d / 2 + (uint64_t)((d / 2) * (jitter / 4294967296.0));
}

/* Words for the cause of a failed attempt. */
static void
describe(const struct policy_input *in, char *buf, size_t cap)
{
	const char *detail = in->detail && *in->detail ? in->detail : NULL;

	switch (in->fault) {
	case POLICY_CONNECT:
		snprintf(buf, cap, "upstream connection error%s%.300s",
		    detail ? ": " : "", detail ? detail : "");
		break;
	case POLICY_TIMEOUT:
		snprintf(buf, cap, "upstream timed out%s%.300s", detail ? ": " : "",
		    detail ? detail : "");
		break;
	case POLICY_TOO_LARGE:
		snprintf(buf, cap, "upstream answer larger than the response limit "
		    "(--max-response)");
		break;
	case POLICY_HTTP:
		if (in->http_status >= 200 && in->http_status < 300)
			snprintf(buf, cap, "upstream returned HTTP %d with a body that is "
			    "not a JSON object", in->http_status);
		else
			snprintf(buf, cap, "upstream returned HTTP %d%s%.300s",
			    in->http_status, detail ? ": " : "", detail ? detail : "");
		break;
	}
}

void
policy_decide(const struct policy *p, const struct policy_input *in, uint32_t jitter,
    struct policy_decision *out)
{
	char cause[400];
	bool retryable;

	out->delay_ms = 0;
	if (in->fault == POLICY_HTTP && in->http_status >= 200 && in->http_status < 300 &&
	    in->body_is_object) {
		out->action = POLICY_SUCCEED;
		snprintf(out->message, sizeof out->message, "Generation successful");
		return;
	}
	describe(in, cause, sizeof cause);
	if (in->fault == POLICY_TOO_LARGE)
		retryable = false;
	else if (in->fault != POLICY_HTTP)
		retryable = true;
	else if (in->http_status >= 200 && in->http_status < 300)
		retryable = true; /* unparseable success: likely a broken proxy */
	else
		retryable = policy_status_retryable(in->http_status);

	if (!retryable) {
		out->action = POLICY_FAIL;
		snprintf(out->message, sizeof out->message, "Failed: %s", cause);
		return;
	}
	if (in->attempts >= p->max_attempts) {
		out->action = POLICY_FAIL;
		snprintf(out->message, sizeof out->message,
		    "Failed after %u attempt%s: %s", in->attempts,
		    in->attempts == 1 ? "" : "s", cause);
		return;
	}
	out->action = POLICY_RETRY;
	out->delay_ms = policy_backoff_ms(p, in->attempts, jitter);
	if (in->retry_after_ms >= 0 && (uint64_t)in->retry_after_ms > out->delay_ms)
		out->delay_ms = (uint64_t)in->retry_after_ms;
	snprintf(out->message, sizeof out->message,
	    "Queued for retry %u of %u in %llu ms after %s", in->attempts + 1,
	    p->max_attempts, (unsigned long long)out->delay_ms, cause);
}
