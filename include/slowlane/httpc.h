/*
 * httpc.h - an HTTP client on the libev loop: libcurl's multi interface,
 * one connection pool per httpc, many requests in flight. The only module
 * that includes curl.h; the upstream backend and the webhook sender use it.
 *
 * Threads: loop thread only.
 */
#ifndef SLOWLANE_HTTPC_H
#define SLOWLANE_HTTPC_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum httpc_fault {
	HTTPC_OK = 0,      /* an HTTP answer arrived (any status) */
	HTTPC_CONNECT,     /* could not connect, the connection broke, or no memory for the answer */
	HTTPC_TIMEOUT,     /* no complete answer in time */
	HTTPC_TOO_LARGE,   /* the answer exceeded max_response */
	HTTPC_REFUSED,     /* the target address is not allowed (guard) */
};

struct httpc_result {
	enum httpc_fault fault;
	int status;              /* HTTPC_OK: the HTTP status */
	const char *body;        /* NUL-terminated; valid during done() only */
	size_t body_len;
	int64_t retry_after_ms;  /* from Retry-After (seconds or date); -1 = none */
	const char *detail;      /* words on the fault; valid during done() */
};

struct httpc_req {
	/* Set by the caller; must stay valid until done() or cancel: */
	const char *url;
	const char *body;        /* POST body (always POST) */
	size_t body_len;
	const char *const *headers; /* "Name: value" strings, NULL-terminated */
	uint64_t timeout_ms;     /* whole request */
	size_t max_response;     /* bytes kept; more fails HTTPC_TOO_LARGE */
	bool refuse_private;     /* refuse loopback/private/link-local/multicast */
	void (*done)(struct httpc_req *r, const struct httpc_result *res);
	void *impl;              /* httpc's own */
};

struct httpc;

/* Creates a client keeping up to `max_connections` connections alive.
 * Returns 0 or -ENOMEM. */
int httpc_new(struct ev_loop *loop, unsigned max_connections, struct httpc **out);
/* Starts a request; `done` runs later on the loop, never inside this call.
 * Returns 0 or -ENOMEM. */
int httpc_start(struct httpc *c, struct httpc_req *r);
/* Abandons a started request; its `done` will not run. */
void httpc_cancel(struct httpc *c, struct httpc_req *r);
/* Frees the client; no request may be in flight. httpc_free(NULL) is a
 * no-op. */
void httpc_free(struct httpc *c);

/* True if `sa` is loopback, private (RFC 1918, ULA), link-local, CGNAT,
 * multicast, unspecified or otherwise not a public unicast address. */
struct sockaddr;
bool httpc_addr_is_private(const struct sockaddr *sa);

#endif
