/*
 * backend.h - where jobs are executed: an OpenAI-compatible upstream over
 * HTTP (upstream.c, libcurl multi on the libev loop) or the built-in
 * load-test model (loadtest.c). The scheduler sees only this interface,
 * which is also the seam tests use.
 *
 * Threads: loop thread only.
 */
#ifndef SLOWLANE_BACKEND_H
#define SLOWLANE_BACKEND_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

enum be_fault {
	BE_OK = 0,      /* an HTTP answer arrived (any status) */
	BE_CONNECT,     /* connection failed or broke, or the answer was cut */
	BE_TIMEOUT,     /* no complete answer in time */
	BE_TOO_LARGE,   /* the answer exceeded the response cap */
};

struct be_result {
	enum be_fault fault;
	int http_status;         /* BE_OK */
	const char *body;        /* NUL-terminated; valid during done() only */
	size_t body_len;
	int64_t retry_after_ms;  /* from Retry-After; -1 = absent */
	const char *detail;      /* words on the fault; valid during done() */
};

struct be_call {
	/* Filled by the caller before start: */
	const char *path;   /* "/chat/completions" or "/completions" */
	const char *body;   /* request JSON; must stay valid until done/cancel */
	size_t body_len;
	void (*done)(struct be_call *c, const struct be_result *r);
	/* Backend-private: */
	void *impl;
};

struct backend;

struct backend_ops {
	/* Starts a call; `done` runs later on the loop (never inside start).
	 * Returns 0 or -ENOMEM. */
	int (*start)(struct backend *b, struct be_call *c);
	/* Abandons a started call; its `done` will not run. */
	void (*cancel)(struct backend *b, struct be_call *c);
	/* Frees the backend; no call may be outstanding. */
	void (*free)(struct backend *b);
	const char *name;
};

struct backend {
	const struct backend_ops *ops;
};

struct upstream_opts {
	const char *base_url;     /* ends in /v1; path is appended */
	const char *api_key;      /* sent as Bearer, or NULL */
	uint64_t timeout_ms;      /* whole call */
	unsigned max_connections; /* keep-alive pool size, = concurrency */
	size_t max_response;      /* bytes; larger answers fail BE_TOO_LARGE */
};

/* Creates the libcurl backend on `loop`. Returns 0 or -ENOMEM/SL_ESTORE. */
int upstream_new(struct ev_loop *loop, const struct upstream_opts *o, struct backend **out);

/* Creates the built-in load-test backend: answers every call after
 * `delay_ms` with an echo of the last user message (or the prompt). */
int loadtest_new(struct ev_loop *loop, uint64_t delay_ms, struct backend **out);

/* The load-test model's answer for a request body, as a malloc'd JSON
 * string (pure; exposed for tests). Returns NULL if body is not JSON. */
char *loadtest_answer(const char *path, const char *body, size_t len, uint64_t now_ms,
    int *status);

#endif
