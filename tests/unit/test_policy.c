/* test_policy.c - which outcomes are retried, and the backoff. */
#include "config.h"

#include <string.h>

#include "../tap.h"
#include "slowlane/policy.h"

static const struct policy P = { .max_attempts = 5, .backoff_base_ms = 1000,
	.backoff_max_ms = 60000 };

static struct policy_decision
decide(enum policy_fault f, int status, bool obj, int64_t ra, uint32_t attempts)
{
	struct policy_input in = { .fault = f, .http_status = status, .body_is_object = obj,
		.retry_after_ms = ra, .attempts = attempts, .detail = "boom" };
	struct policy_decision d;

	policy_decide(&P, &in, 0x80000000u, &d);
	return d;
}

int
main(void)
{
	struct policy_decision d;
	int retry[] = { 408, 409, 429, 500, 502, 503, 504 };
	int fail[] = { 400, 401, 403, 404, 422 };

	d = decide(POLICY_HTTP, 200, true, -1, 1);
	ok(d.action == POLICY_SUCCEED, "2xx JSON object succeeds");
	is_str(d.message, "Generation successful", "success message as the seed's");
	for (size_t i = 0; i < sizeof retry / sizeof retry[0]; i++) {
		d = decide(POLICY_HTTP, retry[i], true, -1, 1);
		ok(d.action == POLICY_RETRY, "HTTP %d is retried", retry[i]);
	}
	for (size_t i = 0; i < sizeof fail / sizeof fail[0]; i++) {
		d = decide(POLICY_HTTP, fail[i], true, -1, 1);
		ok(d.action == POLICY_FAIL && strstr(d.message, "HTTP"),
		    "HTTP %d fails at once", fail[i]);
	}
	d = decide(POLICY_HTTP, 200, false, -1, 1);
	ok(d.action == POLICY_RETRY && strstr(d.message, "JSON"), "2xx non-JSON is retried");
	d = decide(POLICY_CONNECT, 0, false, -1, 1);
	ok(d.action == POLICY_RETRY && strstr(d.message, "connection"), "connect error retried");
	d = decide(POLICY_TOO_LARGE, 200, false, -1, 1);
	ok(d.action == POLICY_FAIL && strstr(d.message, "--max-response"),
	    "an answer over the cap fails at once: %s", d.message);
	d = decide(POLICY_TIMEOUT, 0, false, -1, 1);
	ok(d.action == POLICY_RETRY && strstr(d.message, "timed out"), "timeout retried");
	d = decide(POLICY_HTTP, 503, true, -1, 5);
	ok(d.action == POLICY_FAIL && strstr(d.message, "5 attempts") && strstr(d.message, "503"),
	    "gives up after max attempts, naming the cause: %s", d.message);

	d = decide(POLICY_HTTP, 429, true, 30000, 1);
	ok(d.action == POLICY_RETRY && d.delay_ms == 30000, "Retry-After is honoured");
	d = decide(POLICY_HTTP, 429, true, 10, 3);
	ok(d.delay_ms >= 2000, "Retry-After never shortens the backoff");

	/* Backoff doubles, with jitter in [0.5, 1.0), capped. */
	for (uint32_t a = 1; a <= 8; a++) {
		uint64_t lo = policy_backoff_ms(&P, a, 0), hi = policy_backoff_ms(&P, a, 0xffffffffu);
		uint64_t full = 1000ull << (a - 1);
		if (full > 60000)
			full = 60000;
		ok(lo == full / 2 && hi < full && hi >= full * 99 / 100,
		    "attempt %u: backoff in [%llu, %llu)", a, (unsigned long long)lo,
		    (unsigned long long)full);
	}
	ok(policy_backoff_ms(&P, 1000, 0) == 30000, "huge attempt counts stay capped");
	return tap_done();
}
