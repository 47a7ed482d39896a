/*
 * http.h - the HTTP server: libmicrohttpd without threads of its own,
 * driven by the libev loop (its epoll fd in an ev_io, its timeout in an
 * ev_timer). Routes are a table; a handler answers at once or later (after
 * a durable commit): a request it has not answered when it returns is
 * suspended, and http_reply() from any later loop callback resumes it.
 * The only module that includes microhttpd.h.
 *
 * Threads: loop thread only.
 */
#ifndef SLOWLANE_HTTP_H
#define SLOWLANE_HTTP_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slowlane/validate.h"

struct http_req;
struct http_server;

typedef void (*http_handler_fn)(struct http_req *r, void *ctx);
/* Receives a multipart/form-data (or urlencoded) body as it arrives, one
 * chunk of one field at a time (`field` never NULL: nameless parts are
 * skipped; `filename` NULL for plain fields; `off` where the chunk lies in
 * its part, 0 for a part's first). Return non-zero to stop receiving (the
 * handler still runs at the end). */
typedef int (*http_part_fn)(struct http_req *r, void *ctx, const char *field,
    const char *filename, const char *data, uint64_t off, size_t len);

#define HTTP_MAX_CAPTURES 4

struct http_route {
	const char *method;  /* "GET", "POST", "DELETE" */
	const char *pattern; /* a star matches and captures one path segment */
	http_handler_fn fn;
	http_part_fn part;   /* set: the body is streamed to it, never held */
};

struct http_opts {
	const char *host;        /* numeric IPv4 or IPv6 address */
	uint16_t port;           /* 0 = ephemeral; see http_port() */
	size_t max_body;         /* larger bodies get 413 */
	size_t max_upload;       /* the same for streamed (part) routes */
	unsigned conn_limit;     /* simultaneous connections */
	unsigned conn_timeout_s; /* idle connections, and those whose request
	                          * header is not complete, are closed after this */
};

/* Starts listening. `routes` must outlive the server; `ctx` is passed to
 * every handler. Returns 0, -EADDRINUSE, -EINVAL (bad host) or SL_ESTORE. */
int http_start(struct ev_loop *loop, const struct http_opts *o,
    const struct http_route *routes, size_t n_routes, void *ctx, struct http_server **out);
/* The bound port (useful with port 0). */
uint16_t http_port(const struct http_server *srv);
/* Stops accepting new connections; open ones are still served. */
void http_quiesce(struct http_server *srv);
/* Closes everything and frees the server. No request may be suspended. */
void http_stop(struct http_server *srv);
/* Requests suspended waiting for a reply. */
unsigned http_suspended(const struct http_server *srv);

/* ---- the request, valid until it is answered ---- */

/* The i-th '*' segment of the matched pattern, or NULL. */
const char *http_req_capture(const struct http_req *r, unsigned i);
/* A request header (case-insensitive), or NULL. */
const char *http_req_header(const struct http_req *r, const char *name);
/* A query argument, or NULL. */
const char *http_req_query(const struct http_req *r, const char *name);
/* True if a streamed body went past max_upload (the handler answers 413). */
bool http_req_too_big(const struct http_req *r);
/* The body (NUL-terminated; "" if none). */
const char *http_req_body(const struct http_req *r, size_t *len);
/* Per-request data for the handler's own use (e.g. its pending op). */
void http_req_set_data(struct http_req *r, void *data);
/* Runs `fn(data)` when the request ends without the handler having taken
 * the data back (client gone mid-upload); pass NULL to cancel. */
void http_req_set_cleanup(struct http_req *r, void (*fn)(void *data));
void *http_req_data(const struct http_req *r);

/* ---- answers: exactly one per request ---- */

/* Answers with `body` (taken: freed by the server) of `len` bytes. */
void http_reply(struct http_req *r, int status, const char *content_type, char *body,
    size_t len);
/* Answers with `size` bytes read from `fd` (taken: closed by the server),
 * streamed, never loaded whole. */
void http_reply_fd(struct http_req *r, int status, const char *content_type, int fd,
    uint64_t size);
/* Answers with the JSON serialization of `obj` (reference stolen). */
void http_reply_json(struct http_req *r, int status, json_t *obj);
/* Answers {"error":{message,type,param,code}} with e->status. */
void http_reply_error(struct http_req *r, const struct sl_error *e);
/* Adds a header to the coming answer (copied). Call before replying. */
void http_add_header(struct http_req *r, const char *name, const char *value);

#endif
