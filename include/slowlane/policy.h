/*
 * policy.h - what to do with the outcome of an upstream call: keep it,
 * retry it later, or give up. Pure: the random jitter and the clock are
 * arguments, so every rule is unit-tested without a network.
 *
 * Retried: connection errors, timeouts, HTTP 408, 409, 429 and 5xx, and a 2xx
 * whose body is not a JSON object. Other 4xx fail at once. Backoff is
 * exponential, base * 2^(attempt-1) capped at max, scaled by a jitter factor
 * in [0.5, 1.0), and never shorter than the upstream's Retry-After.
 */
#ifndef SLOWLANE_POLICY_H
#define SLOWLANE_POLICY_H

#include <stdbool.h>
#include <stdint.h>

struct policy {
	uint32_t max_attempts;    /* calls per job before Failed (>= 1) */
	uint64_t backoff_base_ms; /* delay after the first failed attempt */
	uint64_t backoff_max_ms;  /* cap on any one delay */
};

enum policy_fault {
	POLICY_HTTP = 0,   /* the upstream answered with a status */
	POLICY_CONNECT,    /* could not connect, or the connection broke */
	POLICY_TIMEOUT,    /* no complete answer within the upstream timeout */
	POLICY_TOO_LARGE,  /* the answer passed the response cap: not retried,
	                      the same request would only pay for it again */
};

struct policy_input {
	enum policy_fault fault;
	int http_status;        /* POLICY_HTTP */
	bool body_is_object;    /* the body parsed as a JSON object */
	int64_t retry_after_ms; /* from Retry-After; -1 = absent */
	uint32_t attempts;      /* calls made so far, this one included */
	const char *detail;     /* words for the cause (upstream message, curl
	                           error); may be NULL */
};

enum policy_action { POLICY_SUCCEED, POLICY_RETRY, POLICY_FAIL };

struct policy_decision {
	enum policy_action action;
	uint64_t delay_ms;  /* POLICY_RETRY: wait this long */
	char message[512];  /* the job's new stateMessage */
};

/* Decides. `jitter` is a uniform random 32-bit value. */
void policy_decide(const struct policy *p, const struct policy_input *in, uint32_t jitter,
    struct policy_decision *out);

/* The backoff before attempt `attempts` + 1, without Retry-After. */
uint64_t policy_backoff_ms(const struct policy *p, uint32_t attempts, uint32_t jitter);

/* True for statuses worth retrying: 408, 409, 429, 5xx. */
bool policy_status_retryable(int status);

#endif
